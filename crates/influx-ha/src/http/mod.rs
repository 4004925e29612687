//! The InfluxDB 1.6-compatible HTTP surface: routing, headers, errors, bodies.
//!
//! Endpoints of the main listener:
//!
//! | path | methods | answer |
//! |---|---|---|
//! | `/ping` | GET, HEAD | 204 with InfluxDB's headers |
//! | `/health` | GET, HEAD | 200 `{"status":"pass",…}` while writes can be taken; 503 with the reason (draining, …) |
//! | `/write` | POST (OPTIONS: 200) | parameters and body checked as 1.6 does, then the [`WriteHandler`] |
//! | `/api/v2/write` | POST (OPTIONS: 200) | as InfluxDB 1.8: `bucket=db[/rp]`, `org` ignored, precision `ns`, `us`, `ms`, `s`; then the same [`WriteHandler`] |
//! | `/api/v1/prom/write` | POST | Prometheus remote write (snappy protobuf), converted as 1.6.7 does ([`crate::ingest::promwrite`]), then the same [`WriteHandler`] with `db`, `rp`, `consistency` |
//! | `/query` | GET, POST (OPTIONS: 200) | the query [`Handler`] (501 without one) |
//! | `/api/v2/query`, `/api/v1/prom/read` | any | the query [`Handler`] (404 without one) |
//! | `/`, `/status`, `/metrics`, `/admin/…` | any | the admin [`Handler`] when `[admin]` is not configured (the admin surface lives here then); 501 without one |
//! | anything else | | 404 `404 page not found`, as 1.6.7 |
//!
//! The admin listener (`[admin] bind`) answers `/ping` and `/health` itself and gives every
//! other path to the admin [`Handler`]. Wrong methods get 405 with `Allow`, as Go's router
//! answers.
//!
//! With `[auth]` on, every endpoint that does work asks for credentials first ([`guard`]);
//! `/ping`, `/health` and the router's own 404/405/OPTIONS answers do not, as in 1.6.
//!
//! Modules: [`guard`] (authentication, credential stripping), [`compat`] (headers, request ids), [`error`] (every failure → status and text, in
//! one place), [`body`] (caps, gzip, in-flight bytes), [`gzip`] (Go-compatible inflation),
//! [`query`] (Go's query-string rules).

pub mod body;
pub mod compat;
pub mod error;
pub mod guard;
pub mod gzip;
pub mod limit;
pub mod query;

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Body;
use tokio::time::Instant;

use self::body::{InflightBytes, RequestBody, SharedLimits, read_body};
use self::compat::{RequestId, add_common_headers};
use self::error::{ALLOW_PING, ALLOW_QUERY, ALLOW_WRITE, ALLOW_WRITE_V2, RequestError};

/// `Allow` of `/api/v1/prom/write` (POST only in 1.6).
const ALLOW_PROM_WRITE: &str = "POST";
use self::query::QueryParams;
use crate::health::Health;
use crate::params::Consistency;

/// Errors a response body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response (boxed so the read path can stream backend answers).
pub type ResponseBody = BoxBody<Bytes, BoxError>;

/// A complete in-memory response body.
pub fn full(data: impl Into<Bytes>) -> ResponseBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty response body.
pub fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

// === Write seam ===

/// A `/write` request whose parameters and body passed the checks 1.6 makes before parsing.
#[derive(Debug)]
pub struct WriteRequest {
    /// The id in this request's `Request-Id` header.
    pub request_id: RequestId,
    /// `db`, never empty.
    pub db: String,
    /// `rp`, when given and not empty.
    pub rp: Option<String>,
    /// `precision` as a 1.6 `/write` value, exactly as given there (`""` when absent): 1.6
    /// reads `u` as µs, `ms`, `s`, `m`, `h`, and anything else (`n`, `ns`, `us`, unknown,
    /// empty) as nanoseconds. `/api/v2/write` precisions arrive mapped to these (`ns` → `n`,
    /// `us` → `u`).
    pub precision: String,
    /// `consistency` as given, when not empty. 1.6 checks it *after* parsing the points, so a
    /// body with no valid line answers `unable to parse` even with a bad level: call
    /// [`WriteRequest::consistency`] after parsing.
    pub consistency: Option<String>,
    /// The body, inflated, with its in-flight permit.
    pub body: RequestBody,
}

impl WriteRequest {
    /// The requested consistency level, or `default` when none was given; 400 `invalid
    /// consistency level` for anything else.
    pub fn consistency(&self, default: Consistency) -> Result<Consistency, RequestError> {
        match self.consistency.as_deref() {
            None => Ok(default),
            Some(level) => Consistency::from_param(level).ok_or(RequestError::InvalidConsistency),
        }
    }
}

/// What accepts checked writes: the fan-out implements this. `Ok` is answered 204.
pub trait WriteHandler: Send + Sync + 'static {
    /// Stores (replicates) one write, or says why not.
    fn write(&self, request: WriteRequest)
    -> impl Future<Output = Result<(), RequestError>> + Send;
}

impl<T: WriteHandler> WriteHandler for Arc<T> {
    fn write(
        &self,
        request: WriteRequest,
    ) -> impl Future<Output = Result<(), RequestError>> + Send {
        T::write(self, request)
    }
}

// === Handler seam (read path, admin surface) ===

/// A request body as handlers receive it (boxed so tests and the server share one type).
pub type HandlerBody = BoxBody<Bytes, BoxError>;

/// A future a [`Handler`] answers with.
pub type HandlerFuture = std::pin::Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// What answers a whole family of paths (the read path, the admin surface): it gets the
/// request with its id and answers it completely, errors included. Object-safe so the node can
/// plug in whatever a config asks for.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. The `Request-Id` header and InfluxDB's common headers are the
    /// handler's to set (see [`compat::add_common_headers`]).
    fn call(&self, id: RequestId, req: Request<HandlerBody>) -> HandlerFuture;
}

/// What is told about every answered request: the admin surface's latency histograms.
/// Called once the response head is ready (a streamed body may still be flowing).
pub trait RequestObserver: Send + Sync + std::fmt::Debug + 'static {
    /// One request was answered: on which listener, what, with which status, how fast.
    fn observe(
        &self,
        surface: Surface,
        method: &Method,
        path: &str,
        status: StatusCode,
        elapsed: std::time::Duration,
    );
}

/// Where the admin API's paths start (used by the CLI against a running node).
pub const ADMIN_API_PREFIX: &str = "/admin/";

/// The write handler until the fan-out exists: validates, stores nothing, and says so with 501.
///
/// An empty body is answered 204 as 1.6 does (there is nothing to store).
#[derive(Debug, Clone, Copy, Default)]
pub struct NotReplicating;

impl WriteHandler for NotReplicating {
    async fn write(&self, request: WriteRequest) -> Result<(), RequestError> {
        request.consistency(Consistency::One)?;
        if request.body.data.is_empty() {
            return Ok(());
        }
        Err(RequestError::NotImplemented(
            "influx-ha cannot replicate writes yet: nothing was written",
        ))
    }
}

// === Service ===

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The InfluxDB API; `with_admin` when there is no separate admin listener.
    Main {
        /// Whether `/`, `/status` and `/metrics` are served here.
        with_admin: bool,
    },
    /// The separate admin listener.
    Admin,
}

/// Everything a listener needs to answer requests.
pub struct HttpService<W> {
    /// Which endpoints this listener serves.
    pub surface: Surface,
    /// Body size and time limits (a config reload may change them).
    pub limits: SharedLimits,
    /// Cap on request-body bytes held at once (shared by all listeners).
    pub inflight: InflightBytes,
    /// Readiness reported by `/health`.
    pub health: Health,
    /// Where checked writes go.
    pub writer: W,
    /// What answers `/query` and `/api/v2/query` (main surface); `None`: 501.
    pub query: Option<Arc<dyn Handler>>,
    /// What answers the admin paths; `None`: 501.
    pub admin: Option<Arc<dyn Handler>>,
    /// What every answered request is reported to (latency metrics); `None`: nothing.
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Authentication before every endpoint that does work (see [`guard`]).
    pub guard: guard::Guard,
}

impl<W: std::fmt::Debug> std::fmt::Debug for HttpService<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("surface", &self.surface)
            .field("limits", &self.limits)
            .field("writer", &self.writer)
            .field("query", &self.query.is_some())
            .field("admin", &self.admin.is_some())
            .finish_non_exhaustive()
    }
}

const NOT_YET_QUERY: &str = "influx-ha cannot route queries yet";
const NOT_YET_ADMIN: &str = "the influx-ha admin surface is not built yet";

/// Whether `path` belongs to the admin surface when it shares the main listener.
fn is_admin_path(path: &str) -> bool {
    matches!(path, "/" | "/status" | "/metrics") || path.starts_with(ADMIN_API_PREFIX)
}

/// Hands `req` to `handler` with its body boxed.
fn delegate<B>(handler: &Arc<dyn Handler>, id: &RequestId, req: Request<B>) -> HandlerFuture
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Display,
{
    let req = req.map(|b| b.map_err(|e| BoxError::from(e.to_string())).boxed());
    handler.call(id.clone(), req)
}

impl<W: WriteHandler> HttpService<W> {
    /// Answers one request; never fails (errors are answers).
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Display,
    {
        let id = RequestId::from_headers(req.headers());
        let started = Instant::now();
        let method = req.method().clone();
        // Only the path is logged: query strings may carry credentials (`u`, `p`).
        let path = req.uri().path().to_owned();
        let response = match self.route(&id, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(&id),
        };
        tracing::debug!(
            request_id = %id,
            %method,
            path,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        if let Some(observer) = &self.observer {
            observer.observe(
                self.surface,
                &method,
                &path,
                response.status(),
                started.elapsed(),
            );
        }
        response
    }

    async fn route<B>(
        &self,
        id: &RequestId,
        req: Request<B>,
    ) -> Result<Response<ResponseBody>, RequestError>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Display,
    {
        let method = req.method();
        let get_or_head = method == Method::GET || method == Method::HEAD;
        let admin_here = matches!(
            self.surface,
            Surface::Admin | Surface::Main { with_admin: true }
        );
        let main = matches!(self.surface, Surface::Main { .. });
        let entry = if main {
            guard::Entry::Main
        } else {
            guard::Entry::AdminListener
        };
        // Every arm that does work passes the guard first; the router's own answers (404,
        // 405, OPTIONS), /ping and /health need no credentials, as in influxd 1.6.
        match req.uri().path() {
            "/ping" if get_or_head => Ok(no_content(id)),
            "/ping" => Err(RequestError::MethodNotAllowed { allow: ALLOW_PING }),
            "/health" if get_or_head => Ok(self.health_response(id)),
            "/health" => Err(RequestError::MethodNotAllowed { allow: ALLOW_PING }),
            "/write" if main && method == Method::POST => {
                let req = self.guard.admit(entry, req).await?;
                self.write(id, req).await
            }
            "/write" | "/query" if main && method == Method::OPTIONS => Ok(options(id)),
            "/write" if main => Err(RequestError::MethodNotAllowed { allow: ALLOW_WRITE }),
            "/api/v2/write" if main && method == Method::POST => {
                let req = self.guard.admit(entry, req).await?;
                self.write_v2(id, req).await
            }
            "/api/v2/write" if main && method == Method::OPTIONS => Ok(options(id)),
            "/api/v2/write" if main => Err(RequestError::MethodNotAllowed {
                allow: ALLOW_WRITE_V2,
            }),
            "/api/v1/prom/write" if main && method == Method::POST => {
                let req = self.guard.admit(entry, req).await?;
                self.prom_write(id, req).await
            }
            "/api/v1/prom/write" if main => Err(RequestError::MethodNotAllowed {
                allow: ALLOW_PROM_WRITE,
            }),
            "/query" if main && (method == Method::GET || method == Method::POST) => {
                let req = self.guard.admit(entry, req).await?;
                match &self.query {
                    Some(h) => Ok(delegate(h, id, req).await),
                    None => Err(RequestError::NotImplemented(NOT_YET_QUERY)),
                }
            }
            "/query" if main => Err(RequestError::MethodNotAllowed { allow: ALLOW_QUERY }),
            // 1.6.7 answers these itself (404 for the v2 query, its own for prom read): the
            // backend that serves the read gives the answer.
            "/api/v2/query" | "/api/v1/prom/read" if main => match &self.query {
                Some(h) => Ok(delegate(h, id, self.guard.admit(entry, req).await?).await),
                None => Err(RequestError::NotFound),
            },
            path if self.surface == Surface::Admin || (admin_here && is_admin_path(path)) => {
                let not_yet = get_or_head && is_admin_path(path);
                if self.admin.is_none() && !not_yet {
                    return Err(RequestError::NotFound);
                }
                let req = self.guard.admit_admin(entry, req).await?;
                match &self.admin {
                    Some(h) => Ok(delegate(h, id, req).await),
                    None => Err(RequestError::NotImplemented(NOT_YET_ADMIN)),
                }
            }
            _ => Err(RequestError::NotFound),
        }
    }

    async fn write<B>(
        &self,
        id: &RequestId,
        req: Request<B>,
    ) -> Result<Response<ResponseBody>, RequestError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Display,
    {
        let params = QueryParams::parse(req.uri().query());
        let fields = (
            params.get("db").to_owned(),
            params.non_empty("rp").map(str::to_owned),
            params.get("precision").to_owned(),
            params.non_empty("consistency").map(str::to_owned),
        );
        self.write_checked(id, req, fields).await
    }

    /// `/api/v2/write` as InfluxDB 1.8 maps it onto `/write`.
    async fn write_v2<B>(
        &self,
        id: &RequestId,
        req: Request<B>,
    ) -> Result<Response<ResponseBody>, RequestError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Display,
    {
        let params = QueryParams::parse(req.uri().query());
        let precision = match params.get("precision") {
            "ns" => "n",
            "us" => "u",
            p @ ("ms" | "s" | "") => p,
            other => {
                let mut msg = "invalid precision ".to_owned();
                crate::go_json::quote(&mut msg, other.as_bytes());
                msg.push_str(" (use ns, us, ms or s)");
                return Err(RequestError::InvalidPrecisionV2(msg));
            }
        };
        let (db, rp) = bucket_to_db_rp(params.get("bucket"))?;
        let fields = (
            db.to_owned(),
            Some(rp).filter(|rp| !rp.is_empty()).map(str::to_owned),
            precision.to_owned(),
            params.non_empty("consistency").map(str::to_owned),
        );
        self.write_checked(id, req, fields).await
    }

    /// The part of a write after its parameters were read: `db` check, body, handler.
    async fn write_checked<B>(
        &self,
        id: &RequestId,
        req: Request<B>,
        request_fields: (String, Option<String>, String, Option<String>),
    ) -> Result<Response<ResponseBody>, RequestError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Display,
    {
        if request_fields.0.is_empty() {
            return Err(RequestError::DatabaseRequired);
        }
        let (parts, body) = req.into_parts();
        let body = read_body(body, &parts.headers, &self.limits.get(), &self.inflight).await?;
        let (db, rp, precision, consistency) = request_fields;
        self.writer
            .write(WriteRequest {
                request_id: id.clone(),
                db,
                rp,
                precision,
                consistency,
                body,
            })
            .await?;
        Ok(no_content(id))
    }

    /// Prometheus remote write: `db` check, body, conversion, then the write handler.
    async fn prom_write<B>(
        &self,
        id: &RequestId,
        req: Request<B>,
    ) -> Result<Response<ResponseBody>, RequestError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Display,
    {
        let params = QueryParams::parse(req.uri().query());
        let db = params.get("db").to_owned();
        if db.is_empty() {
            return Err(RequestError::DatabaseRequired);
        }
        let (parts, body) = req.into_parts();
        let limits = self.limits.get();
        let RequestBody { data, mut permit } =
            read_body(body, &parts.headers, &limits, &self.inflight).await?;
        let expand = crate::ingest::promwrite::Limits::of(limits.max_body_bytes);
        // What decoding builds counts in the bytes in flight until the lines are made, as far
        // as the cap goes: a request the body limits take is never refused for ever, only
        // while others hold the room (503, which Prometheus retries).
        let inflight = &self.inflight;
        let mut converted = crate::ingest::promwrite::receive(&db, &data, expand, &mut |n| {
            let room = inflight.capacity().saturating_sub(permit.bytes());
            inflight.try_reserve(&mut permit, n.min(room))
        })?;
        drop(data);
        let lines = Bytes::from(std::mem::take(&mut converted.lines));
        permit.shrink_to(lines.len());
        let written = self
            .writer
            .write(WriteRequest {
                request_id: id.clone(),
                db,
                rp: params.non_empty("rp").map(str::to_owned),
                precision: String::new(),
                consistency: params.non_empty("consistency").map(str::to_owned),
                body: RequestBody {
                    data: lines,
                    permit,
                },
            })
            .await;
        crate::ingest::promwrite::finish(written, &converted)?;
        Ok(no_content(id))
    }

    fn health_response(&self, id: &RequestId) -> Response<ResponseBody> {
        let (status, state, message) = match self.health.status() {
            Ok(()) => (StatusCode::OK, "pass", "ready for writes".to_owned()),
            Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, "fail", reason),
        };
        let mut body = Vec::with_capacity(64 + message.len());
        body.extend_from_slice(b"{\"status\":");
        crate::go_json::write_string(&mut body, state.as_bytes());
        body.extend_from_slice(b",\"message\":");
        crate::go_json::write_string(&mut body, message.as_bytes());
        body.extend_from_slice(b"}\n");
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        add_common_headers(resp.headers_mut(), Some(id));
        resp
    }
}

/// InfluxDB 1.8's `bucket2dbrp`: `db` or `db/rp`; errors are 404 with 1.8's texts.
fn bucket_to_db_rp(bucket: &str) -> Result<(&str, &str), RequestError> {
    let quoted = || {
        let mut q = String::new();
        crate::go_json::quote(&mut q, bucket.as_bytes());
        q
    };
    match bucket.split_once('/') {
        None if bucket.is_empty() => Err(RequestError::InvalidBucket(format!(
            "bucket name {} is missing a slash; not in \"database/retention-policy\" format",
            quoted()
        ))),
        None => Ok((bucket, "")),
        Some(("", _)) => Err(RequestError::InvalidBucket(format!(
            "bucket name {} is in db/rp form but has an empty database",
            quoted()
        ))),
        Some((db, rp)) => Ok((db, rp)),
    }
}

/// 204 as `/ping` and `/write` answer it: JSON content type, no body.
fn no_content(id: &RequestId) -> Response<ResponseBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_common_headers(resp.headers_mut(), Some(id));
    resp
}

/// 200 with an empty body, as 1.6 answers OPTIONS (CORS preflight).
fn options(id: &RequestId) -> Response<ResponseBody> {
    let mut resp = Response::new(empty());
    add_common_headers(resp.headers_mut(), Some(id));
    resp
}

#[cfg(test)]
mod tests;
