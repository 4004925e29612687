//! `influx-ha queue|deadletter|backend …`: the operator's commands, on a running node through
//! its admin API, or on a stopped node's data directory.
//!
//! Which one: with `--admin URL` the node at that URL; with `--config FILE` the node of that
//! config is asked first (its `[admin] bind`, else its `[http] bind`); when nothing answers
//! there and the main port is free, the node is taken to be stopped and the data directory is
//! worked on directly. A data directory is never touched while something listens on the
//! node's port: two processes on one queue would corrupt it.
//!
//! When the node asks for credentials (`[auth]`), they come from the environment, never from
//! the command line (where `ps` shows them): `INFLUX_HA_TOKEN`, or `INFLUX_HA_USERNAME` and
//! `INFLUX_HA_PASSWORD`.
//!
//! A node whose admin surface is served over TLS (`tls_cert` on `[admin]`, or on `[http]`
//! without `[admin]`) is reached over `https://`, trusting the system's CAs, or only the PEM
//! certificates of `INFLUX_HA_CA_FILE` when it is set.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use super::ops::{self, Done, Inspection, QueueEntry, Verification};
use super::page::{human_duration, human_size};
use crate::config::Config;
use crate::write::Replicator;
use crate::write::replica::Replica;

/// How long the CLI waits for a node's admin API to answer.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Which node (or data directory) a command works on.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The node's config file: its admin API when the node runs, else its data directory.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// A running node's admin URL (e.g. http://127.0.0.1:8093); default: from --config.
    #[arg(long, value_name = "URL", global = true)]
    pub admin: Option<String>,
}

/// `influx-ha queue …`.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// The node.
    #[command(flatten)]
    pub target: Target,
    /// What to do.
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// Queue subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum QueueCommand {
    /// Every backend's queue and dead letters, with divergence and maintenance.
    List,
    /// One backend's queue: depth, counters, segment files; --records prints the records.
    Inspect {
        /// The backend.
        backend: String,
        /// Print the queued records (line protocol with `# handoff` comment lines).
        #[arg(long)]
        records: bool,
    },
    /// Check the CRC of every record of one backend's queue; exits 1 when not clean.
    Verify {
        /// The backend.
        backend: String,
    },
    /// Deliver one backend's queue now and wait until it is empty; exits 1 if it is not
    /// empty in time.
    Drain {
        /// The backend.
        backend: String,
        /// How long to wait, in seconds (at most 3600 on a running node).
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
    /// Drop one backend's queue; the backend is marked diverged (the data is gone from here).
    Purge {
        /// The backend.
        backend: String,
        /// Confirm: the queued writes are lost for that backend.
        #[arg(long)]
        yes: bool,
    },
}

/// `influx-ha deadletter …`.
#[derive(Debug, Clone, Args)]
pub struct DeadletterArgs {
    /// The node.
    #[command(flatten)]
    pub target: Target,
    /// What to do.
    #[command(subcommand)]
    pub command: DeadletterCommand,
}

/// Dead-letter subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadletterCommand {
    /// Every backend's dead letters (batches a backend refused for good).
    List {
        /// Print the dead letters of this backend.
        #[arg(long, value_name = "BACKEND")]
        records: Option<String>,
    },
    /// Queue one backend's dead letters for delivery again.
    Replay {
        /// The backend.
        backend: String,
    },
    /// Drop one backend's dead letters.
    Purge {
        /// The backend.
        backend: String,
        /// Confirm: the dead letters are lost.
        #[arg(long)]
        yes: bool,
    },
}

/// `influx-ha backend …`.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// The node.
    #[command(flatten)]
    pub target: Target,
    /// What to do.
    #[command(subcommand)]
    pub command: BackendCommand,
}

/// Backend subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BackendCommand {
    /// Queue every write for the backend and serve no reads from it (persisted).
    Maintenance {
        /// The backend.
        backend: String,
    },
    /// End maintenance: the backend's queue is delivered, then it is in sync.
    Resume {
        /// The backend.
        backend: String,
    },
}

/// Any operator command.
#[derive(Debug, Clone)]
pub enum Operation {
    /// `queue …`
    Queue(QueueCommand),
    /// `deadletter …`
    Deadletter(DeadletterCommand),
    /// `backend …`
    Backend(BackendCommand),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Neither --config nor --admin.
    #[error("say which node: --config FILE (running or stopped) or --admin URL (running)")]
    NoTarget,
    /// The config could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The admin API did not answer.
    #[error("no influx-ha node answers at {url}: {error}")]
    Unreachable {
        /// The admin URL.
        url: String,
        /// Why.
        error: String,
    },
    /// Something else listens on the node's port, so the data directory is not touched.
    #[error(
        "{addr} is in use but no influx-ha admin API answers at {url}: refusing to touch the data directory of what may be a running node (give --admin URL)"
    )]
    PortInUse {
        /// The node's main address.
        addr: SocketAddr,
        /// Where the admin API was asked.
        url: String,
    },
    /// The node answered with an error.
    #[error("{0}")]
    Api(String),
    /// An operation failed on the data directory.
    #[error(transparent)]
    Op(#[from] ops::OpError),
    /// The queues could not be opened.
    #[error(transparent)]
    Open(#[from] crate::write::OpenError),
    /// A backend client could not be built.
    #[error(transparent)]
    Setup(#[from] crate::backend::SetupError),
    /// The runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// A purge without --yes.
    #[error("{0}: add --yes to confirm")]
    NotConfirmed(String),
}

/// What a command printed, and whether it reached its goal (exit code 0 or 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for stdout.
    pub output: String,
    /// False: verify not clean, drain not complete.
    pub success: bool,
}

/// Runs `op` on the node or data directory `target` names.
pub fn run(target: &Target, op: Operation) -> Result<Outcome, CliError> {
    match &op {
        Operation::Queue(QueueCommand::Purge {
            backend,
            yes: false,
        }) => {
            return Err(CliError::NotConfirmed(format!(
                "queue purge drops every write queued for {backend} and marks it diverged"
            )));
        }
        Operation::Deadletter(DeadletterCommand::Purge {
            backend,
            yes: false,
        }) => {
            return Err(CliError::NotConfirmed(format!(
                "deadletter purge drops the dead letters of {backend}"
            )));
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let config = match &target.config {
            Some(path) => Some(Config::load(path)?),
            None => None,
        };
        let url = match (&target.admin, &config) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(c)) => admin_url(c),
            (None, None) => return Err(CliError::NoTarget),
        };
        let api = Api::new(url.clone())?;
        match api.probe().await {
            Ok(Ok(())) => online(&api, op).await,
            // Something answers there: a running node, never to be worked around.
            Ok(Err(e)) => Err(e),
            Err(error) => {
                let Some(config) = config.filter(|_| target.admin.is_none()) else {
                    return Err(CliError::Unreachable { url, error });
                };
                if std::net::TcpListener::bind(config.http.bind).is_err() {
                    return Err(CliError::PortInUse {
                        addr: config.http.bind,
                        url,
                    });
                }
                offline(&config, op).await
            }
        }
    })
}

/// Where the admin API of the node `config` describes answers: `[admin] bind`, else the main
/// listener (a wildcard address reached on loopback), over `https://` when that listener has
/// TLS.
pub(crate) fn admin_url(config: &Config) -> String {
    let tls = match &config.admin {
        Some(a) => a.tls.is_some(),
        None => config.http.tls.is_some(),
    };
    format!(
        "{}://{}",
        if tls { "https" } else { "http" },
        reachable(config.admin.as_ref().map_or(config.http.bind, |a| a.bind))
    )
}

/// A client for the admin API at `base`: TLS for `https://`, trusting the system's CAs or only
/// those of `INFLUX_HA_CA_FILE` when it is set.
pub(crate) fn admin_client(
    base: &str,
) -> Result<Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(API_TIMEOUT));
    http.enforce_http(false);
    let ca_file = std::env::var_os("INFLUX_HA_CA_FILE").map(PathBuf::from);
    let tls = if base.starts_with("https://") {
        crate::tls::client_config(ca_file.as_deref())
    } else {
        crate::tls::no_tls_client_config()
    }
    .map_err(|e| format!("TLS to the admin API: {e}"))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// An error with its sources, `a: b: c` (hyper's client errors say little on their own).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    msg
}

/// A wildcard listen address as a client reaches it.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// A small client of the admin API.
struct Api {
    base: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `Authorization` value from the environment, if any.
    authorization: Option<http::HeaderValue>,
}

/// Credentials for a node with `[auth]` on, from the environment (see the module docs).
pub(crate) fn authorization_from_env() -> Option<http::HeaderValue> {
    authorization(
        std::env::var("INFLUX_HA_TOKEN").ok(),
        std::env::var("INFLUX_HA_USERNAME").ok(),
        std::env::var("INFLUX_HA_PASSWORD").ok(),
    )
}

/// The `Authorization` value for a token, or else a user and password. A password goes as
/// Basic, which carries any character: in `Token user:password` a space would split it.
pub(super) fn authorization(
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
) -> Option<http::HeaderValue> {
    match (token.filter(|t| !t.is_empty()), user, password) {
        (Some(token), _, _) => {
            let mut header = http::HeaderValue::from_str(&format!("Token {token}")).ok()?;
            header.set_sensitive(true);
            Some(header)
        }
        (None, Some(user), Some(password)) => Some(crate::backend::basic_auth(&user, &password)),
        _ => None,
    }
}

impl Api {
    fn new(base: String) -> Result<Self, CliError> {
        Ok(Self {
            client: admin_client(&base).map_err(CliError::Api)?,
            base,
            authorization: authorization_from_env(),
        })
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), String> {
        self.request_marked(method, path, timeout)
            .await
            .map(|(status, body, _)| (status, body))
    }

    /// [`Self::request`], also telling whether the node cut a records dump short
    /// (`X-Influx-Ha-Truncated`).
    async fn request_marked(
        &self,
        method: Method,
        path: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes, bool), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::USER_AGENT, "influx-ha-cli");
        if let Some(auth) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("invalid URL {}{path}: {e}", self.base))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = resp.status();
            let truncated = resp.headers().contains_key("x-influx-ha-truncated");
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body, truncated))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }

    /// Whether an influx-ha admin API answers (`/status` with our JSON). `Ok(Err)`: something
    /// answers there, but not as it should (credentials needed, not influx-ha).
    async fn probe(&self) -> Result<Result<(), CliError>, String> {
        let (status, body) = self.request(Method::GET, "/status", API_TIMEOUT).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let why = if self.authorization.is_some() {
                "refused the credentials of INFLUX_HA_TOKEN or INFLUX_HA_USERNAME/INFLUX_HA_PASSWORD"
            } else {
                "asks for credentials: set INFLUX_HA_TOKEN, or INFLUX_HA_USERNAME and INFLUX_HA_PASSWORD"
            };
            return Ok(Err(CliError::Api(format!(
                "the node at {} {why} ({status})",
                self.base
            ))));
        }
        let looks_right = status.is_success()
            && serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v.get("backends").is_some());
        if looks_right {
            Ok(Ok(()))
        } else {
            Ok(Err(CliError::Api(format!(
                "{}/status answered {status}, not an influx-ha status",
                self.base
            ))))
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        timeout: Duration,
    ) -> Result<T, CliError> {
        let body = self.raw(method, path, timeout).await?;
        serde_json::from_slice(&body)
            .map_err(|e| CliError::Api(format!("unexpected answer to {path}: {e}")))
    }

    async fn raw(&self, method: Method, path: &str, timeout: Duration) -> Result<Bytes, CliError> {
        self.raw_marked(method, path, timeout)
            .await
            .map(|(body, _)| body)
    }

    /// A records dump as line protocol; when the node cut it short, a last comment line says
    /// so (the command's output is otherwise indistinguishable from a short queue).
    async fn records(&self, path: &str) -> Result<String, CliError> {
        let (body, truncated) = self
            .raw_marked(Method::GET, path, Duration::from_secs(300))
            .await?;
        let mut out = String::from_utf8_lossy(&body).into_owned();
        if truncated {
            // The cut may fall inside a line.
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(RECORDS_CUT);
        }
        Ok(out)
    }

    async fn raw_marked(
        &self,
        method: Method,
        path: &str,
        timeout: Duration,
    ) -> Result<(Bytes, bool), CliError> {
        let (status, body, truncated) =
            self.request_marked(method, path, timeout)
                .await
                .map_err(|error| CliError::Unreachable {
                    url: self.base.clone(),
                    error,
                })?;
        if status.is_success() {
            return Ok((body, truncated));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(CliError::Api(format!("{status}: {message}")))
    }
}

/// Ends a records dump the running node cut at its size limit.
const RECORDS_CUT: &str = "# influx-ha: output cut at the running node's limit (16 MiB); stop the node and run the command again for every record\n";

fn encode(name: &str) -> String {
    let mut s = String::new();
    crate::http::query::encode_component(name, &mut s);
    s
}

async fn online(api: &Api, op: Operation) -> Result<Outcome, CliError> {
    let t = API_TIMEOUT;
    Ok(match op {
        Operation::Queue(QueueCommand::List)
        | Operation::Deadletter(DeadletterCommand::List { records: None }) => print_list(
            &api.call::<Vec<QueueEntry>>(Method::GET, "/admin/v1/queue", t)
                .await?,
        ),
        Operation::Queue(QueueCommand::Inspect { backend, records }) => {
            let b = encode(&backend);
            let i: Inspection = api
                .call(Method::GET, &format!("/admin/v1/queue/{b}"), t)
                .await?;
            let mut out = print_inspection(&i).output;
            if records {
                out.push_str(&api.records(&format!("/admin/v1/queue/{b}/records")).await?);
            }
            ok(out)
        }
        Operation::Queue(QueueCommand::Verify { backend }) => print_verification(
            &api.call(
                Method::POST,
                &format!("/admin/v1/queue/{}/verify", encode(&backend)),
                Duration::from_secs(300),
            )
            .await?,
        ),
        Operation::Queue(QueueCommand::Drain { backend, wait }) => print_done(
            &api.call(
                Method::POST,
                &format!("/admin/v1/queue/{}/drain?wait={wait}", encode(&backend)),
                Duration::from_secs(wait) + API_TIMEOUT,
            )
            .await?,
        ),
        Operation::Queue(QueueCommand::Purge { backend, .. }) => print_done(
            &api.call(
                Method::POST,
                &format!("/admin/v1/queue/{}/purge", encode(&backend)),
                t,
            )
            .await?,
        ),
        Operation::Deadletter(DeadletterCommand::List {
            records: Some(backend),
        }) => ok(api
            .records(&format!(
                "/admin/v1/deadletter/{}/records",
                encode(&backend)
            ))
            .await?),
        Operation::Deadletter(DeadletterCommand::Replay { backend }) => print_done(
            &api.call(
                Method::POST,
                &format!("/admin/v1/deadletter/{}/replay", encode(&backend)),
                Duration::from_secs(300),
            )
            .await?,
        ),
        Operation::Deadletter(DeadletterCommand::Purge { backend, .. }) => print_done(
            &api.call(
                Method::POST,
                &format!("/admin/v1/deadletter/{}/purge", encode(&backend)),
                t,
            )
            .await?,
        ),
        Operation::Backend(BackendCommand::Maintenance { backend }) => print_done(
            &api.call(
                Method::POST,
                &format!("/admin/v1/backend/{}/maintenance", encode(&backend)),
                t,
            )
            .await?,
        ),
        Operation::Backend(BackendCommand::Resume { backend }) => print_done(
            &api.call(
                Method::POST,
                &format!("/admin/v1/backend/{}/resume", encode(&backend)),
                t,
            )
            .await?,
        ),
    })
}

/// The same operations on a stopped node's data directory: the replicas are opened here (and
/// closed durably at the end), exactly as `serve` opens them.
async fn offline(config: &Config, op: Operation) -> Result<Outcome, CliError> {
    // Verify reads the files without opening the queue (opening repairs a torn tail).
    if let Operation::Queue(QueueCommand::Verify { backend }) = &op {
        return verify_closed(config, backend);
    }
    let clients = crate::node::backend_clients(config)?;
    let replicator = Replicator::open(config, &clients)?;
    let replicas = replicator.replicas();
    let result = offline_op(config, &replicas, op).await;
    replicator.close();
    result
}

fn verify_closed(config: &Config, backend: &str) -> Result<Outcome, CliError> {
    let Some(b) = config.backends.iter().find(|b| b.name == backend) else {
        let known: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
        return Err(CliError::Op(ops::OpError {
            status: 404,
            message: format!(
                "no backend named {backend:?} (configured: {})",
                known.join(", ")
            ),
        }));
    };
    let dir = config.data_dir.join(&b.name).join("queue");
    Ok(print_verification(&ops::verify_dir(&b.name, &dir, false)?))
}

async fn offline_op(
    config: &Config,
    replicas: &[Arc<Replica>],
    op: Operation,
) -> Result<Outcome, CliError> {
    let find =
        |name: &str| -> Result<Arc<Replica>, ops::OpError> { ops::find(replicas, name).cloned() };
    Ok(match op {
        Operation::Queue(QueueCommand::List)
        | Operation::Deadletter(DeadletterCommand::List { records: None }) => {
            print_list(&ops::list(replicas))
        }
        Operation::Queue(QueueCommand::Inspect { backend, records }) => {
            let r = find(&backend)?;
            let mut out = print_inspection(&ops::inspect(&r, false)?).output;
            if records {
                let (dump, _) = ops::dump(&r, false, usize::MAX)?;
                out.push_str(&String::from_utf8_lossy(&dump));
            }
            ok(out)
        }
        Operation::Queue(QueueCommand::Verify { backend }) => verify_closed(config, &backend)?,
        Operation::Queue(QueueCommand::Drain { backend, wait }) => {
            let r = find(&backend)?;
            // Deliver as the node would: its replay task, for this backend only.
            let (stop, _) = tokio::sync::broadcast::channel(1);
            let task = tokio::spawn(
                r.clone()
                    .replay(crate::shutdown::Shutdown::new(stop.subscribe())),
            );
            let done = ops::drain(&r, Duration::from_secs(wait)).await;
            let _ = stop.send(());
            let _ = task.await;
            print_done(&done?)
        }
        Operation::Queue(QueueCommand::Purge { backend, .. }) => {
            print_done(&ops::purge(&*find(&backend)?)?)
        }
        Operation::Deadletter(DeadletterCommand::List {
            records: Some(backend),
        }) => {
            let (dump, _) = ops::dump(&*find(&backend)?, true, usize::MAX)?;
            ok(String::from_utf8_lossy(&dump).into_owned())
        }
        Operation::Deadletter(DeadletterCommand::Replay { backend }) => {
            print_done(&ops::replay_dead_letters(&find(&backend)?).await?)
        }
        Operation::Deadletter(DeadletterCommand::Purge { backend, .. }) => {
            print_done(&ops::purge_dead_letters(&*find(&backend)?)?)
        }
        Operation::Backend(BackendCommand::Maintenance { backend }) => {
            print_done(&ops::maintenance(&*find(&backend)?)?)
        }
        Operation::Backend(BackendCommand::Resume { backend }) => {
            print_done(&ops::resume(&*find(&backend)?)?)
        }
    })
}

fn ok(output: String) -> Outcome {
    Outcome {
        output,
        success: true,
    }
}

fn depth_text(d: &ops::Depth) -> String {
    if d.records == 0 {
        "empty".to_owned()
    } else {
        format!("{} records, {}", d.records, human_size(d.bytes))
    }
}

fn print_list(entries: &[QueueEntry]) -> Outcome {
    let width = entries
        .iter()
        .map(|e| e.backend.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:width$}  {:28}  {:10}  {:28}  state",
        "backend", "queue", "oldest", "dead letters"
    );
    for e in entries {
        let oldest = e.queue.oldest_age_seconds.map_or_else(
            || "-".to_owned(),
            |s| human_duration(Duration::from_secs_f64(s)),
        );
        let mut state = Vec::new();
        if e.maintenance {
            state.push("maintenance".to_owned());
        }
        if let Some(why) = &e.diverged {
            state.push(format!("diverged: {why}"));
        }
        if state.is_empty() {
            state.push(
                if e.queue.records == 0 {
                    "in sync"
                } else {
                    "catching up"
                }
                .to_owned(),
            );
        }
        let _ = writeln!(
            out,
            "{:width$}  {:28}  {:10}  {:28}  {}",
            e.backend,
            depth_text(&e.queue),
            oldest,
            depth_text(&e.dead_letters),
            state.join("; ")
        );
    }
    ok(out)
}

fn print_inspection(i: &Inspection) -> Outcome {
    let mut out = String::new();
    let _ = writeln!(out, "backend        {}", i.backend);
    let _ = writeln!(out, "pending        {}", depth_text(&i.depth));
    if let Some(age) = i.depth.oldest_age_seconds {
        let _ = writeln!(
            out,
            "oldest         {} ago",
            human_duration(Duration::from_secs_f64(age))
        );
    }
    let _ = writeln!(
        out,
        "segments       {}",
        i.segments
            .iter()
            .map(|(id, bytes)| format!("{id:016} ({})", human_size(*bytes)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "since start    {} appended, {} delivered, {} expired, {} purged, {} refused (full or disk floor), {} corrupt regions",
        i.appended_records,
        i.acked_records,
        i.expired_records,
        i.purged_records,
        i.refused_records,
        i.corrupt_regions
    );
    if i.degraded {
        let _ = writeln!(
            out,
            "DEGRADED       a failed fsync: appends are refused until restart"
        );
    }
    ok(out)
}

fn print_verification(v: &Verification) -> Outcome {
    let mut out = String::new();
    let verdict = if v.clean { "clean" } else { "NOT CLEAN" };
    let _ = writeln!(
        out,
        "{}: {verdict}: {} segments, {} valid records, cursor {}",
        v.backend,
        v.segments,
        v.valid_records,
        if v.cursor_ok {
            "ok"
        } else {
            "invalid (replay restarts at the oldest segment)"
        }
    );
    for (seg, off, len) in &v.corrupt {
        let _ = writeln!(
            out,
            "  corrupt: segment {seg} offset {off}, {len} bytes (skipped at replay)"
        );
    }
    for e in &v.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    if v.torn_tail_bytes > 0 {
        let _ = writeln!(
            out,
            "  torn tail: {} bytes (cut at the next start)",
            v.torn_tail_bytes
        );
    }
    Outcome {
        output: out,
        success: v.clean,
    }
}

fn print_done(d: &Done) -> Outcome {
    let mut out = format!("{}\n", d.message);
    let _ = writeln!(out, "queue of {} now: {}", d.backend, depth_text(&d.queue));
    Outcome {
        output: out,
        success: d.complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node answering every records dump with `body`, cut short when `truncated`.
    async fn node(body: &'static str, truncated: bool) -> Api {
        let service = hyper::service::service_fn(move |_req| async move {
            let mut resp = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            if truncated {
                resp.headers_mut().insert(
                    "X-Influx-Ha-Truncated",
                    http::HeaderValue::from_static("true"),
                );
            }
            Ok::<_, std::convert::Infallible>(resp)
        });
        let addr = crate::test_http::serve(service).await;
        Api::new(format!("http://{addr}")).expect("client")
    }

    #[tokio::test]
    async fn a_records_dump_the_node_cut_short_says_so() {
        let path = "/admin/v1/queue/a/records";
        let whole = node("m v=1 1\n", false).await.records(path).await;
        assert_eq!(whole.expect("dump"), "m v=1 1\n");
        let cut = node("m v=1 1\n", true).await.records(path).await;
        assert_eq!(cut.expect("dump"), format!("m v=1 1\n{RECORDS_CUT}"));
        let mid_line = node("m v=1 1\n# handoff write db=", true).await;
        let cut = mid_line.records(path).await.expect("dump");
        assert_eq!(cut, format!("m v=1 1\n# handoff write db=\n{RECORDS_CUT}"));
    }
}
