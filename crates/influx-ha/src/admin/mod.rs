//! The operator's surface: status page, `/status`, `/metrics` and the admin API, served by
//! one [`AdminHandler`] on the `[admin]` listener (or on the main one when there is none).
//!
//! | path | method | answer |
//! |---|---|---|
//! | `/` | GET, HEAD | the status page ([`page`]) |
//! | `/status` | GET, HEAD | the same as JSON ([`status::NodeStatus`], schema in `docs/OPERATIONS.md`) |
//! | `/metrics` | GET, HEAD | Prometheus exposition ([`metrics`]) |
//! | `/admin/v1/queues` | GET, HEAD | this relay's queue report for its peers ([`crate::peers`]) |
//! | `/admin/v1/queues/changed` | POST | a peer's queues changed: its report (the body) counts now |
//! | `/admin/v1/queue` | GET | every backend's queue and dead letters |
//! | `/admin/v1/queue/NAME` | GET | one queue: depth, counters, segment files |
//! | `/admin/v1/queue/NAME/records` | GET | its records as text (`?max_bytes=`, default 16 MiB) |
//! | `/admin/v1/queue/NAME/verify` | POST | CRC check of every frame |
//! | `/admin/v1/queue/NAME/drain` | POST | deliver now, wait up to `?wait=` seconds (default 60) |
//! | `/admin/v1/queue/NAME/purge` | POST | drop the queue; the backend is marked diverged |
//! | `/admin/v1/deadletter` | GET | every backend's dead letters |
//! | `/admin/v1/deadletter/NAME` | GET | one dead-letter store |
//! | `/admin/v1/deadletter/NAME/records` | GET | the dead letters as text |
//! | `/admin/v1/deadletter/NAME/replay` | POST | move them back into the queue |
//! | `/admin/v1/deadletter/NAME/purge` | POST | drop them |
//! | `/admin/v1/backend/NAME/maintenance` | POST | queue everything for it, serve no reads |
//! | `/admin/v1/backend/NAME/resume` | POST | end maintenance: its queue drains |
//! | `/admin/v1/backend/NAME/divergence` | GET | why it diverged, and marks that change whenever data is dropped for it (and say whether other backends had writes queued) |
//! | `/admin/v1/backend/NAME/clear-diverged` | POST | `?marks=` (read before a verify) or `?verified_from=` Unix ms: a verify begun then found it identical (409 if data was dropped since, or other backends had writes queued then) |
//!
//! `/ping` and `/health` are answered by the HTTP service itself, on both listeners.
//! Errors are JSON `{"error": "…"}` with 400, 403, 404, 405, 409, 500 or 503 (shutting down);
//! the guard in front answers 401 without good credentials when `[auth]` is on.
//!
//! Modules: [`status`] (the model, built from the live sources), [`rates`] (per-second rates
//! from sampled counters), [`page`], [`metrics`], [`ops`] (the operations, shared with the CLI
//! on a stopped node), [`cli`] (the `queue`/`deadletter`/`backend` commands).

pub mod cli;
pub mod metrics;
pub mod ops;
pub mod page;
pub mod rates;
pub mod reload;
pub mod status;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;

use self::metrics::RequestMetrics;
use self::rates::Rates;
use self::status::Sources;
use crate::http::compat::{RequestId, add_common_headers};
use crate::http::query::QueryParams;
use crate::http::{Handler, HandlerBody, HandlerFuture, ResponseBody, full};
use crate::ingest::ListenerStats;
use crate::state::{ClusterState, Reachability};
use crate::write::replica::Replica;

/// Where the admin API lives.
pub const API_PREFIX: &str = "/admin/v1/";

/// How often the rate sampler runs.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// Default cap of a records dump.
const DEFAULT_DUMP_BYTES: usize = 16 << 20;

/// Default time `queue drain` waits.
const DEFAULT_DRAIN_WAIT: Duration = Duration::from_secs(60);
/// The longest `?wait=` of a drain.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(3600);
/// The most `?max_bytes=` of records printed at once (they are held in memory).
const MAX_DUMP_BYTES: u64 = 256 << 20;

/// Runs `op` on backend `name`'s replica on a blocking thread: queue operations read and sync
/// files (a verify reads the whole queue), which must not hold up an async worker.
async fn off_workers<T: Send + 'static>(
    replicas: &[Arc<Replica>],
    name: &str,
    op: impl FnOnce(&Replica) -> Result<T, ops::OpError> + Send + 'static,
) -> Result<T, ops::OpError> {
    let r = ops::find(replicas, name)?.clone();
    tokio::task::spawn_blocking(move || op(&r))
        .await
        .unwrap_or_else(|e| {
            Err(ops::OpError {
                status: 500,
                message: format!("the operation failed: {e}"),
            })
        })
}

/// The whole number `key` of `params`, `default` when absent; 400 when it is not a number or
/// above `max`.
fn number_param(
    params: &QueryParams,
    key: &str,
    default: u64,
    max: u64,
) -> Result<u64, ops::OpError> {
    let Some(text) = params.non_empty(key) else {
        return Ok(default);
    };
    match text.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(ops::OpError {
            status: 400,
            message: format!("{key} must be a whole number from 0 to {max}, not {text:?}"),
        }),
    }
}

/// The admin surface; cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminHandler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sources: Sources,
    /// UDP/TCP listeners, known once they are bound (after the HTTP listeners).
    listeners: Mutex<Vec<ListenerStats>>,
    rates: Rates,
    requests: Arc<RequestMetrics>,
}

impl AdminHandler {
    /// The admin surface over `sources`.
    pub fn new(sources: Sources) -> Self {
        Self {
            inner: Arc::new(Inner {
                sources,
                listeners: Mutex::new(Vec::new()),
                rates: Rates::default(),
                requests: Arc::new(RequestMetrics::default()),
            }),
        }
    }

    /// What the HTTP service reports every request to (for the latency histograms).
    pub fn request_metrics(&self) -> Arc<RequestMetrics> {
        self.inner.requests.clone()
    }

    /// Shows these UDP/TCP listeners from now on.
    pub fn set_listeners(&self, listeners: Vec<ListenerStats>) {
        *self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = listeners;
    }

    fn listeners(&self) -> Vec<ListenerStats> {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The status now.
    pub fn status(&self) -> status::NodeStatus {
        status::collect(
            &self.inner.sources,
            &self.listeners(),
            &self.inner.rates,
            &self.inner.requests,
        )
    }

    /// Records one sample of the counters the rates come from; [`AdminHandler::run_sampler`]
    /// calls it every [`SAMPLE_PERIOD`].
    pub fn sample(&self) {
        let s = status::sample(&self.inner.sources, &self.listeners(), &self.inner.requests);
        self.inner.rates.record(SystemTime::now(), s);
    }

    /// Samples the counters every [`SAMPLE_PERIOD`] until `shutdown`. Without health checks
    /// on the state board, it also pings the backends nothing was sent to lately, so the page
    /// shows up/down on an idle node.
    pub async fn run_sampler(self, mut shutdown: crate::shutdown::Shutdown) {
        let mut tick = tokio::time::interval(SAMPLE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.recv() => return,
                _ = tick.tick() => {}
            }
            self.sample();
            if !self.board_has_health_checks() {
                for r in self.inner.sources.replicator.replicas().iter() {
                    let r = r.clone();
                    tokio::spawn(async move { r.probe().await });
                }
            }
        }
    }

    fn board_has_health_checks(&self) -> bool {
        self.inner.sources.board.as_ref().is_some_and(|b| {
            b.load()
                .backends
                .iter()
                .any(|s| s.reachability != Reachability::Unknown)
        })
    }

    fn replicas(&self) -> Arc<Vec<Arc<Replica>>> {
        self.inner.sources.replicator.replicas()
    }

    /// Copies a replica's maintenance flag to the state board at once, so the read path stops
    /// (or resumes) serving from it without waiting for the state keeper's next round.
    fn publish_maintenance(&self, r: &Replica) {
        if let Some(board) = &self.inner.sources.board {
            let (name, on) = (r.name().to_owned(), r.in_maintenance());
            board.update(|s| {
                if let Some(b) = s.backends.iter_mut().find(|b| b.name == name) {
                    b.maintenance = on;
                }
            });
        }
    }

    /// Copies a replica's diverged flag to the state board at once, so the read path serves
    /// from it again as soon as verify found it identical.
    fn publish_diverged(&self, r: &Replica) {
        if let Some(board) = &self.inner.sources.board {
            let (name, why) = (r.name().to_owned(), r.diverged());
            board.update(|s| {
                if let Some(b) = s.backends.iter_mut().find(|b| b.name == name) {
                    b.diverged = why.clone();
                }
            });
        }
    }

    async fn answer(self, req: Request<HandlerBody>) -> Response<ResponseBody> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let params = QueryParams::parse(req.uri().query());
        let get = method == Method::GET || method == Method::HEAD;
        if !get && from_a_web_page(req.headers()) {
            return error(
                StatusCode::FORBIDDEN,
                "the admin API takes no requests from web pages (this one carries Origin or \
                 Sec-Fetch-Site): use influx-ha's commands or an HTTP client"
                    .to_owned(),
            );
        }
        match path.as_str() {
            "/" if get => {
                let s = self.status();
                let mut resp = text(StatusCode::OK, page::render(&s));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                resp
            }
            "/status" if get => json(StatusCode::OK, &self.status()),
            "/metrics" if get => {
                let s = self.status();
                let body = metrics::render(
                    &s,
                    &self.inner.sources.replicator,
                    &self.listeners(),
                    &self.inner.requests,
                );
                let mut resp = text(StatusCode::OK, body);
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                resp
            }
            "/" | "/status" | "/metrics" => method_not_allowed("GET, HEAD"),
            // The queue report peer relays fetch for read freshness (DESIGN.md §5).
            crate::peers::QUEUES_PATH if get => match &self.inner.sources.board {
                Some(board) => {
                    // The queues as they are now, not as of the board's last round: a peer
                    // learns of a write queued here one round sooner.
                    let read = || {
                        let mut state = ClusterState::clone(&board.load());
                        let replicas = self.inner.sources.replicator.replicas();
                        for b in &mut state.backends {
                            if let Some(r) = replicas.iter().find(|r| r.name() == b.name) {
                                crate::monitor::copy_replica_state(b, r);
                                b.queue = crate::peers::reported_depth(r);
                            }
                        }
                        state
                    };
                    let report = crate::peers::queue_report(&self.inner.sources.node_name, read);
                    let mut resp = text(StatusCode::OK, report);
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    resp
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "no backend state is kept here: queue reports come with the read path"
                        .to_owned(),
                ),
            },
            crate::peers::QUEUES_PATH => method_not_allowed("GET, HEAD"),
            // A peer's queues changed: its report counts now, not at the next poll.
            crate::peers::CHANGED_PATH if method == Method::POST => {
                let Some(news) = self.inner.sources.peers_changed.clone() else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "no peers are followed here: queue reports come with the read path"
                            .to_owned(),
                    );
                };
                if req
                    .extensions()
                    .get::<crate::peers::UntrustedNotice>()
                    .is_some()
                {
                    // Polling the configured peers tells what the notice would have.
                    news.notice(None);
                    return text(StatusCode::NO_CONTENT, Bytes::new());
                }
                match crate::peers::read_notice(req.into_body()).await {
                    Ok(report) => {
                        news.notice(report);
                        text(StatusCode::NO_CONTENT, Bytes::new())
                    }
                    Err(why) => {
                        // The notice still says something changed: the peers are polled.
                        news.notice(None);
                        error(StatusCode::BAD_REQUEST, why)
                    }
                }
            }
            crate::peers::CHANGED_PATH => method_not_allowed("POST"),
            p if p.starts_with(API_PREFIX) => {
                let rest = p[API_PREFIX.len()..].to_owned();
                self.api(&method, &rest, &params).await
            }
            _ => error(StatusCode::NOT_FOUND, "404 page not found".to_owned()),
        }
    }

    /// `deadletter replay`, in a task of its own: a client that hangs up mid-way (the CLI's
    /// timeout, Ctrl-C) would otherwise drop the requeue between an append and the end of its
    /// count, and leave the backend behind its queue for good. Counted as a delivery, so that
    /// shutdown waits for it before the queues close.
    async fn replay_dead_letters(
        &self,
        r: Arc<Replica>,
    ) -> Result<Response<ResponseBody>, ops::OpError> {
        let Some(running) = self.inner.sources.replicator.start_queue_work() else {
            return Err(ops::OpError {
                status: 503,
                message: "the node is shutting down: its queues are closing".to_owned(),
            });
        };
        tokio::spawn(async move {
            let _running = running;
            ops::replay_dead_letters(&r).await
        })
        .await
        .unwrap_or_else(|e| {
            Err(ops::OpError {
                status: 500,
                message: format!("the operation failed: {e}"),
            })
        })
        .map(|d| json(StatusCode::OK, &d))
    }

    async fn api(
        &self,
        method: &Method,
        rest: &str,
        params: &QueryParams,
    ) -> Response<ResponseBody> {
        let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let replicas = self.replicas();
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        // The listener outlives the queues at shutdown (for the peers' report): an operation
        // now would reach closed queues.
        if post && self.inner.sources.replicator.is_closed() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node is shutting down: its queues are closed".to_owned(),
            );
        }
        let result: Result<Response<ResponseBody>, ops::OpError> = match parts.as_slice() {
            ["queue"] | ["deadletter"] if get => Ok(json(StatusCode::OK, &ops::list(&replicas))),
            [store @ ("queue" | "deadletter"), name] if get => {
                let dead = *store == "deadletter";
                off_workers(&replicas, name, move |r| ops::inspect(r, dead))
                    .await
                    .map(|i| json(StatusCode::OK, &i))
            }
            [store @ ("queue" | "deadletter"), name, "records"] if get => {
                let dead = *store == "deadletter";
                match number_param(
                    params,
                    "max_bytes",
                    DEFAULT_DUMP_BYTES as u64,
                    MAX_DUMP_BYTES,
                ) {
                    Ok(limit) => {
                        off_workers(&replicas, name, move |r| ops::dump(r, dead, limit as usize))
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            .map(|(body, truncated)| {
                let mut resp = text(StatusCode::OK, body);
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                if truncated {
                    resp.headers_mut()
                        .insert("X-Influx-Ha-Truncated", HeaderValue::from_static("true"));
                }
                resp
            }),
            ["queue", name, "verify"] if post => {
                off_workers(&replicas, name, |r| ops::verify(r, true))
                    .await
                    .map(|v| json(StatusCode::OK, &v))
            }
            ["queue", name, "drain"] if post => {
                let wait = number_param(
                    params,
                    "wait",
                    DEFAULT_DRAIN_WAIT.as_secs(),
                    MAX_DRAIN_WAIT.as_secs(),
                );
                match wait.and_then(|w| Ok((w, ops::find(&replicas, name)?))) {
                    Ok((wait, r)) => ops::drain(r, Duration::from_secs(wait))
                        .await
                        .map(|d| json(StatusCode::OK, &d)),
                    Err(e) => Err(e),
                }
            }
            ["queue", name, "purge"] if post => off_workers(&replicas, name, ops::purge)
                .await
                .map(|d| json(StatusCode::OK, &d)),
            ["deadletter", name, "replay"] if post => match ops::find(&replicas, name) {
                Ok(r) => self.replay_dead_letters(r.clone()).await,
                Err(e) => Err(e),
            },
            ["deadletter", name, "purge"] if post => {
                off_workers(&replicas, name, ops::purge_dead_letters)
                    .await
                    .map(|d| json(StatusCode::OK, &d))
            }
            ["backend", name, action @ ("maintenance" | "resume")] if post => {
                ops::find(&replicas, name).and_then(|r| {
                    let d = if *action == "maintenance" {
                        ops::maintenance(r)
                    } else {
                        ops::resume(r)
                    }?;
                    self.publish_maintenance(r);
                    Ok(json(StatusCode::OK, &d))
                })
            }
            ["backend", name, "divergence"] if get => ops::find(&replicas, name)
                .map(|r| json(StatusCode::OK, &ops::divergence(r, &replicas))),
            ["backend", name, "clear-diverged"] if post => {
                let since = match (
                    params.non_empty("marks"),
                    params.non_empty("verified_from").map(|v| v.parse::<u64>()),
                ) {
                    (Some(marks), _) => Some(ops::VerifiedSince::Marks(marks.to_owned())),
                    (None, Some(Ok(ms))) => Some(ops::VerifiedSince::Time(ms)),
                    _ => None,
                };
                match since {
                    Some(since) => ops::find(&replicas, name).and_then(|r| {
                        let d = ops::clear_diverged(r, &replicas, &since)?;
                        self.publish_diverged(r);
                        Ok(json(StatusCode::OK, &d))
                    }),
                    None => Err(ops::OpError {
                        status: 400,
                        message: "marks (from GET …/divergence before the verify) or \
                                  verified_from (Unix milliseconds when the verify began) is required"
                            .to_owned(),
                    }),
                }
            }
            ["queue" | "deadletter"] | ["queue" | "deadletter", _] | [_, _, "records"] => {
                Ok(method_not_allowed("GET, HEAD"))
            }
            ["queue" | "deadletter" | "backend", _, _] => Ok(method_not_allowed("POST")),
            _ => Err(ops::OpError {
                status: 404,
                message: format!("unknown admin API path {API_PREFIX}{rest}"),
            }),
        };
        result.unwrap_or_else(|e| {
            error(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                e.message,
            )
        })
    }
}

impl Handler for AdminHandler {
    fn call(&self, id: RequestId, req: Request<HandlerBody>) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move {
            let mut resp = this.answer(req).await;
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            add_common_headers(resp.headers_mut(), Some(&id));
            resp
        })
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<ResponseBody> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"cannot encode the answer: {e}\"}}").into_bytes()
    });
    body.push(b'\n');
    let mut resp = text(status, body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error(status: StatusCode, message: String) -> Response<ResponseBody> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Whether a browser sent the request: every browser in use adds `Origin` to a POST and
/// `Sec-Fetch-Site` to every request, and no tool of ours (the commands, peers) nor curl does.
/// An operation such as a purge must not run because a page the operator opened, on another
/// site or on a name rebound to this address, posted to it with the browser's remembered
/// credentials.
fn from_a_web_page(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::ORIGIN) || headers.contains_key("sec-fetch-site")
}

fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed".to_owned(),
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

#[cfg(test)]
mod tests;
