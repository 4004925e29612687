//! Clearing a backend's diverged flag once verify found it identical: through the admin API
//! of the node when it runs (`POST /admin/v1/backend/NAME/clear-diverged`, which refuses if
//! data was dropped after the verify began), or by removing `data_dir/NAME/diverged` when the
//! node is stopped; then on every `[[peer]]` relay, which keeps its own flag. A node with `[auth]` gets the credentials of `INFLUX_HA_TOKEN` or
//! `INFLUX_HA_USERNAME`/`INFLUX_HA_PASSWORD`, as the other operator commands.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};

use super::RepairError;
use crate::backend::{BackendClient, Timeouts};
use crate::config::{BackendConfig, Config, PeerConfig};
use crate::http::query::encode_component;
use crate::write::replica::DIVERGED_FILE;

/// How long the node gets to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// When a verify began, as each node can check it: the start time (this host's clock), and
/// each node's divergence marks for each backend read just before, which a node compares with
/// its own (clocks of different hosts may disagree). A node that did not answer is absent: its
/// flag is then judged by the time alone.
#[derive(Debug, Clone, Default)]
pub struct VerifyStart {
    /// Unix milliseconds on this host.
    pub unix_ms: u64,
    /// `(node, backend)` → marks; the node is `""` for this config's own node, else the peer's
    /// name.
    marks: std::collections::HashMap<(String, String), String>,
}

impl VerifyStart {
    /// Reads the marks of every backend on this node and on every peer, then the time.
    pub async fn now(config: &Config) -> Self {
        let mut marks = std::collections::HashMap::new();
        let base = crate::admin::cli::admin_url(config);
        let local = crate::admin::cli::admin_client(&base).ok();
        let peers: Vec<(String, Option<BackendClient>)> = config
            .peers
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    peer_client(p, config.write.connect_timeout).ok(),
                )
            })
            .collect();
        for b in &config.backends {
            let path = divergence_path(&b.name);
            if let Some(client) = &local
                && let Some(m) = local_marks(client, &format!("{base}{path}")).await
            {
                marks.insert((String::new(), b.name.clone()), m);
            }
            for (peer, client) in &peers {
                if let Some(client) = client
                    && let Some(m) = peer_marks(client, &path).await
                {
                    marks.insert((peer.clone(), b.name.clone()), m);
                }
            }
        }
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self { unix_ms, marks }
    }

    fn marks(&self, node: &str, backend: &str) -> Option<&str> {
        self.marks
            .get(&(node.to_owned(), backend.to_owned()))
            .map(String::as_str)
    }
}

fn divergence_path(backend: &str) -> String {
    let mut path = String::from("/admin/v1/backend/");
    encode_component(backend, &mut path);
    path.push_str("/divergence");
    path
}

/// The `marks` of a divergence answer.
fn marks_of(status: http::StatusCode, body: &[u8]) -> Option<String> {
    if !status.is_success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json["marks"].as_str().map(str::to_owned)
}

async fn local_marks(
    client: &hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    uri: &str,
) -> Option<String> {
    let mut req = Request::builder().method(Method::GET).uri(uri);
    if let Some(auth) = crate::admin::cli::authorization_from_env() {
        req = req.header(http::header::AUTHORIZATION, auth);
    }
    let req = req.body(Full::new(Bytes::new())).ok()?;
    let exchange = async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        marks_of(status, &body)
    };
    tokio::time::timeout(TIMEOUT, exchange).await.ok().flatten()
}

async fn peer_marks(client: &BackendClient, path: &str) -> Option<String> {
    let exchange = async {
        let resp = client
            .forward(
                Method::GET,
                path,
                http::HeaderMap::new(),
                Bytes::new(),
                TIMEOUT,
            )
            .await
            .ok()?;
        let status = resp.status();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        marks_of(status, &body)
    };
    tokio::time::timeout(TIMEOUT, exchange).await.ok().flatten()
}

/// Clears `backend`'s diverged flag on the node of `config`, after a verify that began at
/// `since` found the backends identical. Returns what was done, in words.
pub async fn clear(
    config: &Config,
    backend: &BackendConfig,
    since: &VerifyStart,
) -> Result<String, RepairError> {
    let addr = crate::admin::cli::admin_url(config);
    let uri = format!(
        "{addr}{}",
        clear_path(&backend.name, since.unix_ms, since.marks("", &backend.name))
    );
    let failed = |message: String| RepairError::Flag {
        backend: backend.name.clone(),
        message,
    };
    let mut req = Request::builder().method(Method::POST).uri(&uri);
    // A node with [auth] asks for an admin's credentials, taken from the environment as the
    // other operator commands take them (INFLUX_HA_TOKEN, or INFLUX_HA_USERNAME/PASSWORD).
    if let Some(auth) = crate::admin::cli::authorization_from_env() {
        req = req.header(http::header::AUTHORIZATION, auth);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| failed(e.to_string()))?;
    let client = crate::admin::cli::admin_client(&addr).map_err(failed)?;
    let sent = tokio::time::timeout(TIMEOUT, client.request(req)).await;
    match sent {
        Err(_) => Err(failed(format!(
            "the node at {addr} did not answer within {TIMEOUT:?}"
        ))),
        // A TLS handshake that failed is a connect error too: the file is removed only when
        // the node's main port is free, as the other operator commands decide.
        Ok(Err(e)) if e.is_connect() && std::net::TcpListener::bind(config.http.bind).is_ok() => {
            // No node running with this config: the flag file is ours to remove.
            let dir = config.queue_dir(backend);
            let file = dir.join(DIVERGED_FILE);
            if !file.exists() {
                // Said where it looked: run on another host than the node's, this is no
                // news of the node's flag.
                return Ok(format!(
                    "{}: no node answers at {addr} and no flag in {} on this host: nothing to clear here",
                    backend.name,
                    dir.display()
                ));
            }
            if since.marks("", &backend.name).is_some() {
                // It ran when the verify began: it may have dropped data since, then stopped.
                return Err(failed(format!(
                    "the node at {addr} stopped during the verify: start it and verify again"
                )));
            }
            // As the running node refuses (409): writes still queued here for another backend
            // are in neither, so the verify could not see that this one will miss them.
            if let Some(queued) = queued_for_others(config, &backend.name) {
                return Err(failed(format!(
                    "{queued} on this host, which the verify could not compare: start the node, let the queues drain, and verify again"
                )));
            }
            match crate::write::flags::remove(&dir, DIVERGED_FILE) {
                Ok(()) => Ok(format!(
                    "{}: no node answers at {addr}; removed {}",
                    backend.name,
                    file.display()
                )),
                Err(e) => Err(failed(format!("cannot remove {}: {e}", file.display()))),
            }
        }
        Ok(Err(e)) => Err(failed(format!(
            "admin API at {addr}: {}",
            crate::admin::cli::error_chain(&e)
        ))),
        Ok(Ok(resp)) => read_answer(resp, &format!("node at {addr}"), failed).await,
    }
}

/// What is queued in `config`'s data directory for a backend other than `name` (read from the
/// files, without opening the queues), if anything or if a queue cannot be read.
fn queued_for_others(config: &Config, name: &str) -> Option<String> {
    let mut found = Vec::new();
    for other in config.backends.iter().filter(|b| b.name != name) {
        let dir = config.queue_dir(other).join("queue");
        if !dir.exists() {
            continue;
        }
        match handoff::inspect(&handoff::StdFs, &dir) {
            Ok(i) if i.depth_records == 0 => {}
            Ok(i) => found.push(format!(
                "{} records queued for {}",
                i.depth_records, other.name
            )),
            Err(e) => found.push(format!("the queue of {} cannot be read ({e})", other.name)),
        }
    }
    (!found.is_empty()).then(|| found.join(", "))
}

/// The clear-diverged path of `backend` on an admin API: with the node's marks when they were
/// read (the node then judges by them), and the start time (for a node that predates marks).
fn clear_path(backend: &str, verified_from_ms: u64, marks: Option<&str>) -> String {
    let mut path = String::from("/admin/v1/backend/");
    encode_component(backend, &mut path);
    path.push_str(&format!("/clear-diverged?verified_from={verified_from_ms}"));
    if let Some(marks) = marks {
        path.push_str("&marks=");
        encode_component(marks, &mut path);
    }
    path
}

/// Reads a clear-diverged answer: the `message` of a 2xx, else the error.
async fn read_answer(
    resp: http::Response<hyper::body::Incoming>,
    who: &str,
    failed: impl Fn(String) -> RepairError,
) -> Result<String, RepairError> {
    let status = resp.status();
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| failed("the answer did not arrive".to_owned()))?
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status.is_success() {
        let message = json["message"].as_str().unwrap_or("cleared");
        Ok(format!("{who}: {message}"))
    } else {
        let message = json["error"].as_str().map_or_else(
            || String::from_utf8_lossy(&body).into_owned(),
            str::to_owned,
        );
        Err(failed(format!("{who} answered {status}: {message}")))
    }
}

/// Clears `backend`'s diverged flag on a peer relay (`[[peer]]`, with its credentials): each
/// relay keeps its own flag and reports it to the others, whose reads avoid the backend while
/// any peer says it diverged.
pub async fn clear_on_peer(
    peer: &PeerConfig,
    backend: &str,
    since: &VerifyStart,
    connect_timeout: Duration,
) -> Result<String, RepairError> {
    let failed = |message: String| RepairError::Flag {
        backend: backend.to_owned(),
        message: format!("peer {}: {message}", peer.name),
    };
    let client = peer_client(peer, connect_timeout)?;
    let resp = client
        .forward(
            Method::POST,
            &clear_path(backend, since.unix_ms, since.marks(&peer.name, backend)),
            http::HeaderMap::new(),
            Bytes::new(),
            TIMEOUT,
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
    read_answer(resp, &format!("peer {}", peer.name), failed).await
}

/// A client of a peer relay's admin API, with its `[[peer]]` credentials.
fn peer_client(peer: &PeerConfig, connect_timeout: Duration) -> Result<BackendClient, RepairError> {
    Ok(BackendClient::new(
        &BackendConfig {
            name: peer.name.clone(),
            url: peer.url.clone(),
            credentials: peer.credentials.clone(),
            ca_file: peer.ca_file.clone(),
        },
        Timeouts {
            connect: connect_timeout,
            request: TIMEOUT,
        },
    )?)
}
