//! Talking to one InfluxDB backend: a pooled HTTP client with timeouts and service credentials.
//!
//! - One [`BackendClient`] per configured backend, each with its own hyper-util connection
//!   pool (keep-alive, idle connections closed after 30 s; hyper-util retries a request that
//!   failed on a reused connection before anything was sent, the stale-keep-alive case).
//! - Deadlines: a connect timeout, and one deadline for the whole exchange (send, answer,
//!   answer body). Past it the send counts as failed ([`SendError::Timeout`]).
//! - Credentials: the backend's configured service user, sent as HTTP Basic auth (InfluxDB 1.x
//!   accepts it; it keeps passwords out of URLs and so out of any log of URLs). A client's own
//!   credentials are never forwarded: nothing from the client's request reaches this module
//!   except db, rp, precision and the body.
//! - Answers are classified in one place, [`classify`] (see [`classify`] for the table).
//!
//! - TLS: `https://` backends are reached over rustls (ring), verified against the system's
//!   trust store or the backend's `ca_file` ([`crate::tls::client_config`]); HTTP/1.1 only.

mod classify;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use self::classify::{WriteOutcome, classify};
use crate::config::{BackendConfig, BackendUrl, Scheme};
use crate::go_json;
use crate::http::compat::X_INFLUXDB_ERROR;
use crate::http::query::encode_component;

/// Longest answer body read from a backend; error texts quote input lines and can be long.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Idle pooled connections are closed after this long.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeouts of a backend client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect timeout.
    pub connect: Duration,
    /// Deadline of one whole request (connect, send, answer and its body).
    pub request: Duration,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The backend URL needs something not built yet.
    #[error("backend {name}: {message}")]
    Unsupported {
        /// The backend.
        name: String,
        /// What is missing.
        message: &'static str,
    },
    /// TLS to an `https://` backend cannot be set up (unreadable `ca_file`, no system roots).
    #[error("backend {name}: {error}")]
    Tls {
        /// The backend.
        name: String,
        /// Why.
        error: crate::tls::TlsError,
    },
}

/// Why a request got no answer. All of these are retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The deadline passed before the whole answer arrived.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection could be made (refused, unreachable, connect timeout, DNS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection failed while sending or receiving (reset, closed early, bad HTTP).
    #[error("request failed: {0}")]
    Transport(String),
    /// The answer body was longer than [`MAX_ANSWER_BYTES`] or could not be read.
    #[error("cannot read the answer: {0}")]
    Answer(String),
    /// The request could not be built (a bug; the inputs are checked before).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// A backend's answer, whatever its status.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendAnswer {
    /// HTTP status.
    pub status: StatusCode,
    /// The body (at most [`MAX_ANSWER_BYTES`]).
    pub body: Bytes,
    /// The `X-Influxdb-Error` header, if any.
    pub error_header: Option<Bytes>,
}

impl BackendAnswer {
    /// The error text: the `"error"` member of the JSON body, else the `X-Influxdb-Error`
    /// header, else the body as it is (trimmed); `None` for an empty one.
    pub fn message(&self) -> Option<Vec<u8>> {
        if let Some(m) = go_json::decode_error_body(&self.body) {
            return Some(m);
        }
        if let Some(h) = &self.error_header {
            return Some(h.to_vec());
        }
        let trimmed = self.body.trim_ascii();
        (!trimmed.is_empty()).then(|| trimmed.to_vec())
    }
}

impl fmt::Debug for BackendAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendAnswer")
            .field("status", &self.status)
            .field(
                "body",
                &String::from_utf8_lossy(&self.body[..self.body.len().min(256)]),
            )
            .finish()
    }
}

/// The Basic `Authorization` value of a user and password.
pub(crate) fn basic_auth(user: &str, password: &str) -> HeaderValue {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(6 + bytes.len().div_ceil(3) * 4);
    out.push_str("Basic ");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    let mut value =
        HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// Walks an error's sources into one line: `outer: inner: innermost`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

// === impl BackendClient ===

/// A pooled HTTP client for one backend.
#[derive(Clone)]
pub struct BackendClient {
    /// The configured name (logs, queue folder).
    name: String,
    /// Base URL.
    url: BackendUrl,
    /// Basic auth of the service user, marked sensitive; `None` without credentials.
    authorization: Option<HeaderValue>,
    /// The connection pool (TLS for `https://` backends).
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Deadlines.
    timeouts: Timeouts,
}

impl fmt::Debug for BackendClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendClient")
            .field("name", &self.name)
            .field("url", &self.url.to_string())
            .field("credentials", &self.authorization.is_some())
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl BackendClient {
    /// Builds the client of one configured backend.
    pub fn new(config: &BackendConfig, timeouts: Timeouts) -> Result<Self, SetupError> {
        let tls = match config.url.scheme {
            Scheme::Https => crate::tls::client_config(config.ca_file.as_deref()),
            Scheme::Http => crate::tls::no_tls_client_config(),
        }
        .map_err(|error| SetupError::Tls {
            name: config.name.clone(),
            error,
        })?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        // A connection whose peer vanished without a reset (a partition, a host gone) fails
        // within about two minutes instead of the system's default of over two hours (or,
        // with the idle time alone, twelve minutes): a replayed statement may wait on one for
        // up to an hour otherwise.
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(4));
        // The TLS layer takes https:// URLs; plain ones pass through it untouched.
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            name: config.name.clone(),
            url: config.url.clone(),
            authorization: config
                .credentials
                .as_ref()
                .map(|c| basic_auth(&c.username, c.password.expose())),
            client,
            timeouts,
        })
    }

    /// The backend's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This client with another deadline per request, sharing the connection pool.
    pub fn with_request_timeout(&self, request: Duration) -> Self {
        let mut c = self.clone();
        c.timeouts.request = request;
        c
    }

    /// The backend's base URL.
    pub fn url(&self) -> &BackendUrl {
        &self.url
    }

    /// `POST /write?db=…&rp=…&precision=…` with `body` as it is (line protocol, uncompressed).
    ///
    /// `precision` is passed on exactly as the client gave it (1.6 semantics, see
    /// [`crate::http::WriteRequest::precision`]); empty values of `rp` and `precision` are left
    /// out. Use [`classify`] on the result.
    pub async fn write(
        &self,
        db: &str,
        rp: Option<&str>,
        precision: &str,
        body: Bytes,
    ) -> Result<BackendAnswer, SendError> {
        let mut path = String::with_capacity(64);
        path.push_str("/write?db=");
        encode_component(db, &mut path);
        if let Some(rp) = rp.filter(|rp| !rp.is_empty()) {
            path.push_str("&rp=");
            encode_component(rp, &mut path);
        }
        if !precision.is_empty() {
            path.push_str("&precision=");
            encode_component(precision, &mut path);
        }
        self.send(Method::POST, &path, Some("text/plain; charset=utf-8"), body)
            .await
    }

    /// `POST /query` with `q` (and `db` when given) form-encoded: for statements such as
    /// `CREATE DATABASE` that the write path sends to every backend.
    pub async fn query(&self, q: &str, db: Option<&str>) -> Result<BackendAnswer, SendError> {
        self.post_query("/query", q, db, "").await
    }

    /// [`Self::query`] with a client request's other parameters (`rp`, bound `params`, …),
    /// already form-encoded, as a queued statement carries them.
    pub async fn query_with(
        &self,
        q: &str,
        db: Option<&str>,
        params: &str,
    ) -> Result<BackendAnswer, SendError> {
        self.post_query("/query", q, db, params).await
    }

    /// Runs one statement queued earlier (`POST /query`, form-encoded `q`, `db` and the
    /// request's other parameters) and returns its status with the first `keep` bytes of its
    /// answer: enough to read an error, without holding a large result (the rest is not read).
    /// `timeout` bounds the exchange up to those bytes: a statement may take long (a
    /// `SELECT … INTO` backfill), and InfluxDB stops one whose client hangs up.
    pub async fn run_statement(
        &self,
        q: &str,
        db: Option<&str>,
        params: &str,
        timeout: Duration,
        keep: usize,
    ) -> Result<(StatusCode, Bytes), SendError> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let exchange = async {
            let resp = self
                .forward(
                    Method::POST,
                    "/query",
                    headers,
                    query_form(q, db, params),
                    timeout,
                )
                .await?;
            let (parts, body) = resp.into_parts();
            let mut body = std::pin::pin!(body);
            let mut first = Vec::new();
            while first.len() < keep {
                match body.frame().await {
                    None => break,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            first.extend_from_slice(&data[..data.len().min(keep - first.len())]);
                        }
                    }
                    Some(Err(e)) => return Err(SendError::Answer(chain(&e))),
                }
            }
            Ok((parts.status, Bytes::from(first)))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }

    /// `POST /query?epoch=ns&chunked=true` with `q` (and `db` when given) form-encoded: for
    /// reads whose timestamps must come back exactly, as integers of nanoseconds, and whole
    /// (verify and repair). The answer is one JSON object per piece of 10,000 rows at most.
    pub async fn select(&self, q: &str, db: Option<&str>) -> Result<BackendAnswer, SendError> {
        // InfluxDB's `max-row-limit` cuts unchunked answers only, and marks the cut only where
        // it falls inside a series.
        self.post_query("/query?epoch=ns&chunked=true&chunk_size=10000", q, db, "")
            .await
    }

    async fn post_query(
        &self,
        path: &str,
        q: &str,
        db: Option<&str>,
        params: &str,
    ) -> Result<BackendAnswer, SendError> {
        self.send(
            Method::POST,
            path,
            Some("application/x-www-form-urlencoded"),
            query_form(q, db, params),
        )
        .await
    }

    /// `GET /ping`: 204 when the backend is up.
    pub async fn ping(&self) -> Result<BackendAnswer, SendError> {
        self.send(Method::GET, "/ping", None, Bytes::new()).await
    }

    /// Sends a request of the read path (`path_and_query` as given, `headers` added after the
    /// service credentials) and returns as soon as the answer's head arrived: the body streams
    /// from the backend to whoever reads it, without a deadline. `timeout` bounds the wait for
    /// the head (connect, send, and the backend's work before it answers).
    pub async fn forward(
        &self,
        method: Method,
        path_and_query: &str,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        let uri: Uri = self
            .url
            .endpoint(path_and_query)
            .parse()
            .map_err(|e: http::uri::InvalidUri| SendError::InvalidRequest(e.to_string()))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(USER_AGENT, concat!("influx-ha/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|e| SendError::InvalidRequest(e.to_string()))?;
        req.headers_mut().extend(headers);
        req.headers_mut().remove(AUTHORIZATION);
        if let Some(auth) = &self.authorization {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect(chain(&e))),
            Ok(Err(e)) => Err(SendError::Transport(chain(&e))),
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<BackendAnswer, SendError> {
        let uri: Uri = self
            .url
            .endpoint(path_and_query)
            .parse()
            .map_err(|e: http::uri::InvalidUri| SendError::InvalidRequest(e.to_string()))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(USER_AGENT, concat!("influx-ha/", env!("CARGO_PKG_VERSION")));
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| SendError::InvalidRequest(e.to_string()))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    SendError::Connect(chain(&e))
                } else {
                    SendError::Transport(chain(&e))
                }
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| SendError::Answer(chain(&*e)))?
                .to_bytes();
            Ok(BackendAnswer {
                status: parts.status,
                body,
                error_header: parts
                    .headers
                    .get(&X_INFLUXDB_ERROR)
                    .map(|v| Bytes::copy_from_slice(v.as_bytes())),
            })
        };
        match tokio::time::timeout(self.timeouts.request, exchange).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout(self.timeouts.request)),
        }
    }
}

/// The form of a `/query` request: `q`, `db` when given, then `params` (already encoded).
fn query_form(q: &str, db: Option<&str>, params: &str) -> Bytes {
    let mut form = String::with_capacity(q.len() + params.len() + 16);
    form.push_str("q=");
    encode_component(q, &mut form);
    if let Some(db) = db {
        form.push_str("&db=");
        encode_component(db, &mut form);
    }
    if !params.is_empty() {
        form.push('&');
        form.push_str(params);
    }
    Bytes::from(form)
}

#[cfg(test)]
mod tests;
