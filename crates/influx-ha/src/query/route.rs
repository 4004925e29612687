//! Where a query goes, and its answer back to the client (see the [module docs](super)).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use handoff::RecordId;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::task::JoinSet;

use super::classify::{Route, StatementKind, classify};
use super::params::{Params, strip_credentials};
use super::stream::{Outstanding, PeekError, Peeked, Relayed, peek};
use crate::backend::{BackendClient, SendError};
use crate::config::QueryConfig;
use crate::go_json;
use crate::http::body::{InflightBytes, RequestBody, SharedLimits, read_raw_body};
use crate::http::compat::{RequestId, X_INFLUXDB_ERROR, X_REQUEST_ID, add_common_headers};
use crate::http::error::RequestError;
use crate::http::{Handler, HandlerBody, HandlerFuture, ResponseBody, full};
use crate::monitor::PassiveMarks;
use crate::state::{BackendState, ClusterState, Reachability, StateBoard};
use crate::write::answer::Outcome;
use crate::write::replica::{Refusal, Replica};

/// Names the backend that answered (for `SHOW QUERIES` / `KILL QUERY`, and for operators).
pub static X_INFLUX_HA_BACKEND: HeaderName = HeaderName::from_static("x-influx-ha-backend");
/// `true` on an answer from a backend that may miss acknowledged writes (`stale_reads`).
pub static X_INFLUX_HA_STALE: HeaderName = HeaderName::from_static("x-influx-ha-stale");

/// How often a query waiting for a backend's answer looks whether the backend was marked down.
const DOWN_POLL: Duration = Duration::from_millis(100);

/// Why a backend's answer was given up before its first byte.
enum Unbegun {
    /// `[query] timeout` passed.
    TimedOut,
    /// The health checks marked the backend down.
    MarkedDown,
}

/// When a request waiting for a backend's answer stops waiting, before its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GiveUp {
    /// Once the health checks mark the backend down: a read goes to the next backend.
    MarkedDown,
    /// Only once they mark it down with its pings failing too. A backend busy with a long
    /// statement may fail other requests, and be marked down for them, while it runs this
    /// one; given up on, the statement would be queued to run again and the backend marked
    /// diverged.
    PingsFail,
}

/// Longest answer held in memory where one must be (5xx bodies, fan-out answers).
const MAX_HELD_ANSWER: usize = 4 << 20;

/// One backend as the read path sees it.
#[derive(Debug)]
struct Target {
    /// Its client (service credentials, pool).
    client: BackendClient,
    /// Its write-path replica: live queue state, and where statements are queued.
    replica: Option<Arc<Replica>>,
    /// Requests in flight to it, answers being streamed included.
    outstanding: Arc<AtomicUsize>,
}

/// A request as a backend gets it.
#[derive(Debug, Clone)]
struct Forward {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A state-changing request as a backend's queue keeps it when the backend cannot take it now.
#[derive(Debug)]
struct QueuedStatement {
    /// The default database (`db`).
    db: String,
    /// The statement text (`q`).
    q: String,
    /// Every other parameter but the client's credentials (`rp`, bound `params`, …),
    /// form-encoded: replayed as they came.
    others: String,
}

impl QueuedStatement {
    /// Why `replica`'s queue could not hold this statement, if it could not: checked before
    /// anything runs, so that a backend that cannot take it now never misses it for good.
    fn unqueueable(&self, replica: &Replica) -> Option<String> {
        if self.db.len() > usize::from(u16::MAX) {
            return Some(format!(
                "database name too long: {} bytes (at most {})",
                self.db.len(),
                u16::MAX
            ));
        }
        // A queued statement keeps its text, and with other parameters a 4-byte length too.
        let size = if self.others.is_empty() {
            self.q.len()
        } else {
            4 + self.q.len() + self.others.len()
        };
        let max = replica.queue().max_write_payload(&self.db, "", "");
        (size > max).then(|| {
            format!(
                "statement too long to be queued for a backend that cannot take it now: {size} \
                 bytes with its parameters, at most {max} (raise [queue] segment_bytes)"
            )
        })
    }

    /// Queues it for `replica`'s backend: the outcome, and where it was queued.
    async fn enqueue(&self, replica: &Replica) -> (Outcome, Option<RecordId>) {
        replica
            .enqueue_statement_at(&self.db, &self.q, &self.others)
            .await
    }
}

/// A complete answer of a backend.
#[derive(Debug)]
struct Held {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// The read path: a [`Handler`] for `/query`, `/api/v2/query` and `/api/v1/prom/read`.
#[derive(Debug, Clone)]
pub struct QueryService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Every backend, config order.
    targets: Vec<Target>,
    /// Reachability, divergence, peer reports.
    board: StateBoard,
    /// Where failures seen here are reported to the monitor.
    marks: PassiveMarks,
    /// `[query]`.
    config: QueryConfig,
    /// Request body caps (size, time), as a config reload leaves them.
    limits: SharedLimits,
    /// The node's budget of request bytes in memory, which query bodies count in too.
    inflight: InflightBytes,
    /// Rotates the starting point among equally loaded backends.
    rotation: AtomicUsize,
}

impl QueryService {
    /// The read path over `clients` (config order) and, when there is a write path, their
    /// replicas (same order).
    pub fn new(
        clients: Vec<BackendClient>,
        replicas: Vec<Arc<Replica>>,
        board: StateBoard,
        marks: PassiveMarks,
        config: QueryConfig,
        limits: SharedLimits,
        inflight: InflightBytes,
    ) -> Self {
        let mut replicas = replicas.into_iter();
        let targets = clients
            .into_iter()
            .map(|client| Target {
                client,
                replica: replicas.next(),
                outstanding: Arc::new(AtomicUsize::new(0)),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                targets,
                board,
                marks,
                config,
                limits,
                inflight,
                rotation: AtomicUsize::new(0),
            }),
        }
    }
}

impl Handler for QueryService {
    fn call(&self, id: RequestId, req: Request<HandlerBody>) -> HandlerFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            match inner.answer(&id, req).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(&id),
            }
        })
    }
}

/// The answer to statements queued everywhere: each one's result with `text` as a warning, in
/// the format `accept` asks for as influxd 1.6 reads it (the exact value): MessagePack with
/// influxd's keys, CSV (where influxd writes nothing for a result without series), else JSON.
fn queued_answer(
    accept: Option<&HeaderValue>,
    statements: usize,
    text: &str,
) -> (&'static str, Vec<u8>) {
    match accept.map(HeaderValue::as_bytes) {
        Some(b"application/csv" | b"text/csv") => ("text/csv", Vec::new()),
        Some(b"application/x-msgpack") => {
            use rmpv::Value;
            let warning = Value::Map(vec![
                ("level".into(), "warning".into()),
                ("text".into(), text.into()),
            ]);
            let results = (0..statements)
                .map(|s| {
                    Value::Map(vec![
                        ("statement_id".into(), Value::from(s as u64)),
                        ("messages".into(), Value::Array(vec![warning.clone()])),
                        ("series".into(), Value::Array(Vec::new())),
                    ])
                })
                .collect();
            let answer = Value::Map(vec![("results".into(), Value::Array(results))]);
            let mut body = Vec::new();
            // Writing into a `Vec` cannot fail.
            let _ = rmpv::encode::write_value(&mut body, &answer);
            ("application/x-msgpack", body)
        }
        _ => {
            let mut body = b"{\"results\":[".to_vec();
            for s in 0..statements {
                if s > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(
                    format!(
                        "{{\"statement_id\":{s},\"messages\":[{{\"level\":\"warning\",\"text\":"
                    )
                    .as_bytes(),
                );
                go_json::write_string(&mut body, text.as_bytes());
                body.extend_from_slice(b"}]}");
            }
            body.extend_from_slice(b"]}\n");
            ("application/json", body)
        }
    }
}

/// What an answer to a statement says, for comparing backends: its status and the first error
/// it reports.
struct Verdict {
    status: StatusCode,
    /// How it refused the statements, if it did.
    refusal: Option<Refusal>,
}

impl Verdict {
    fn of(held: &Held) -> Self {
        Verdict {
            status: held.status,
            refusal: Refusal::of(held.status, &held.body),
        }
    }

    /// The first error it reports.
    fn error(&self) -> Option<&str> {
        self.refusal.as_ref()?.error.as_deref()
    }

    fn is_clean(&self) -> bool {
        self.refusal.is_none()
    }
}

/// How every backend that ran a statement refused it, when each answered and they all refused
/// it alike, one of them `fresh` (in sync with the data: a reference): a backend that has it
/// queued is expected to refuse it so too.
fn refused_alike(verdicts: &[(usize, Verdict)], fresh: impl Fn(usize) -> bool) -> Option<Refusal> {
    let (_, first) = verdicts.first()?;
    let first = first.refusal.as_ref()?;
    let alike = verdicts
        .iter()
        .all(|(_, v)| v.refusal.as_ref().is_some_and(|r| r.is_like(first)));
    (alike && verdicts.iter().any(|(i, _)| fresh(*i))).then(|| first.clone())
}

/// How long a state-changing statement sent directly may take to answer: as long as a queued
/// one may. A `SELECT … INTO` backfill or a `DROP` of much data takes a while, and one given up
/// on would be queued and run a second time.
const STATEMENT_TIMEOUT: Duration = crate::write::replica::STATEMENT_REPLAY_TIMEOUT;

/// Why a request has no answer from a backend.
enum NoAnswer {
    /// No connection could be made: the request never reached it.
    NotSent(String),
    /// It may have reached the backend, which did not answer (in time, or before the
    /// connection broke or it was marked down).
    Unanswered(String),
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoAnswer::NotSent(why) | NoAnswer::Unanswered(why) => f.write_str(why),
        }
    }
}

/// Why a statement sent to a backend has no held answer.
enum Unheld {
    /// It did not run there (no connection, a 5xx): queued for the replay.
    NotRun(String),
    /// Sent, never answered: it may have run.
    MayHaveRun(String),
    /// The backend answered (the statement ran) but the answer could not be read whole.
    RanUnread { status: StatusCode, why: String },
}

impl std::fmt::Display for Unheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unheld::NotRun(why) | Unheld::MayHaveRun(why) => f.write_str(why),
            Unheld::RanUnread { status, why } => write!(f, "answered {status}, then {why}"),
        }
    }
}

/// Reads a whole answer (at most [`MAX_HELD_ANSWER`]) within `timeout`.
async fn hold(resp: Response<hyper::body::Incoming>, timeout: Duration) -> Result<Held, String> {
    let (parts, body) = resp.into_parts();
    let body =
        match tokio::time::timeout(timeout, Limited::new(body, MAX_HELD_ANSWER).collect()).await {
            Err(_) => return Err(format!("answer not complete within {timeout:?}")),
            Ok(Err(e)) => return Err(format!("cannot read the answer: {e}")),
            Ok(Ok(c)) => c.to_bytes(),
        };
    Ok(Held {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

impl Inner {
    async fn answer(
        self: &Arc<Self>,
        id: &RequestId,
        req: Request<HandlerBody>,
    ) -> Result<Response<ResponseBody>, RequestError> {
        let (parts, body) = req.into_parts();
        let limits = self.limits.get();
        let RequestBody {
            data: body,
            mut permit,
        } = read_raw_body(body, &parts.headers, &limits, &self.inflight).await?;
        // On `/query`, the parameters parsed from a form body and the copy forwarded (escaped,
        // up to three bytes for one) are held while the request runs: counted too, before they
        // are made, as far as the cap goes (a body `max_body_bytes` allows is never refused
        // for them), and without waiting while holding the body's share.
        if parts.uri.path() == "/query" {
            let copies = body
                .len()
                .saturating_mul(4)
                .min(self.inflight.capacity().saturating_sub(body.len()));
            self.inflight.try_grow(&mut permit, copies)?;
        }
        let mut headers = HeaderMap::new();
        for name in [ACCEPT, ACCEPT_ENCODING] {
            for v in parts.headers.get_all(&name) {
                headers.append(name.clone(), v.clone());
            }
        }
        headers.insert(X_REQUEST_ID.clone(), id.header_value());
        let path = parts.uri.path();

        if path != "/query" {
            // `/api/v2/query` and `/api/v1/prom/read`: a read, passed on as it is.
            for name in [CONTENT_TYPE, CONTENT_ENCODING] {
                if let Some(v) = parts.headers.get(&name) {
                    headers.insert(name, v.clone());
                }
            }
            let query = strip_credentials(parts.uri.query());
            let path_and_query = if query.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{query}")
            };
            let fwd = Forward {
                method: parts.method,
                path_and_query,
                headers,
                body,
            };
            return self.read(id, &fwd, None).await;
        }

        let is_post = parts.method == Method::POST;
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let params = Params::parse(is_post, parts.uri.query(), content_type, &body);
        let encoded = params.encode_for_backend();
        let fwd = if is_post {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            Forward {
                method: Method::POST,
                path_and_query: "/query".to_owned(),
                headers,
                body: Bytes::from(encoded),
            }
        } else {
            Forward {
                method: Method::GET,
                path_and_query: format!("/query?{encoded}"),
                headers,
                body: Bytes::new(),
            }
        };
        if params.q.trim().is_empty() {
            // Answered here as InfluxDB answers it, also when no backend could take a read.
            return Err(RequestError::MissingQuery);
        }
        let classified = classify(&params.q);
        match classified.route {
            Route::Read => self.read(id, &fwd, None).await,
            Route::Kill { on } => {
                let target = self.kill_target(on.as_deref())?;
                // Reads sent with the KILL run on its backend: only if it could serve them.
                let reads_too = classified
                    .statements
                    .iter()
                    .any(|s| !matches!(s.kind, StatementKind::KillQuery { .. }));
                if reads_too
                    && let Some(Err(why)) = self
                        .live_state(&self.board.load(), target)
                        .map(|b| b.freshness())
                {
                    return Err(RequestError::Unavailable(format!(
                        "the reads sent with KILL QUERY would run on {}, which cannot serve fresh reads: {why}; send them apart",
                        self.name(target)
                    )));
                }
                self.read(id, &fwd, Some(target)).await
            }
            Route::Everywhere => {
                // Every backend's answer is read for refusals: not compressed. (The client gets
                // it uncompressed, which `Accept-Encoding` allows.)
                let mut fwd = fwd;
                fwd.headers.remove(ACCEPT_ENCODING);
                let statements = classified.statements.len().max(1);
                let queued = QueuedStatement {
                    db: params.get("db").to_owned(),
                    others: params.encode_others(),
                    q: params.q,
                };
                if let Some(why) = self
                    .targets
                    .iter()
                    .filter_map(|t| t.replica.as_deref())
                    .find_map(|r| queued.unqueueable(r))
                {
                    return Err(RequestError::CannotQueue(why));
                }
                let repeatable = classified.repeatable();
                if classified.order_sensitive() {
                    self.no_peer_holds_writes()?;
                }
                self.reads_sent_along_can_be_served(&classified.statements)?;
                self.everywhere(id, fwd, queued, statements, repeatable)
                    .await
            }
            Route::UserAdmin => {
                let reads = self.reads_sent_along_can_be_served(&classified.statements)?;
                self.user_admin(id, fwd, reads).await
            }
            Route::Refused(why) => Err(RequestError::PerBackend(why.to_owned())),
        }
    }

    fn name(&self, i: usize) -> &str {
        self.targets[i].client.name()
    }

    // === reads ===

    /// Backend `i` as the board shows it, with this node's own queue, divergence and
    /// maintenance as they are now, not as of the last snapshot: a write queued a moment ago
    /// already keeps reads away.
    fn live_state(&self, state: &ClusterState, i: usize) -> Option<BackendState> {
        let mut b = state.backend(self.name(i))?.clone();
        if let Some(r) = &self.targets[i].replica {
            let pending = r.is_queueing() || r.queue().has_pending();
            b.queue.records = if pending { b.queue.records.max(1) } else { 0 };
            b.diverged = r.diverged();
            b.maintenance = r.in_maintenance();
        }
        Some(b)
    }

    /// Before statements that run on every backend: reads sent with them are answered by one
    /// backend's answer, so they run only when a backend could serve them as a read alone
    /// (fresh, or reachable with `stale_reads`). Checked before anything runs.
    /// Returns whether there are such reads.
    fn reads_sent_along_can_be_served(
        &self,
        statements: &[super::classify::Statement],
    ) -> Result<bool, RequestError> {
        let reads = statements
            .iter()
            .any(|s| matches!(s.kind, StatementKind::Read | StatementKind::ShowQueries));
        if !reads {
            return Ok(false);
        }
        self.candidates().map(|_| true).map_err(|e| {
            RequestError::Unavailable(format!(
                "the reads sent with statements for every backend need a backend that serves reads ({}); nothing was run: send them apart",
                String::from_utf8_lossy(&e.message())
            ))
        })
    }

    /// Whether backend `i` serves fresh reads now: the board, with this node's own queues.
    fn fresh_now(&self, state: &ClusterState, i: usize) -> bool {
        self.live_state(state, i)
            .is_some_and(|b| b.freshness().is_ok())
    }

    /// The backends a read may go to, best first, and whether they may be stale; or why none
    /// may.
    fn candidates(&self) -> Result<(Vec<usize>, bool), RequestError> {
        let state = self.board.load();
        let mut fresh = Vec::new();
        let mut reachable = Vec::new();
        let mut reasons = Vec::new();
        for i in 0..self.targets.len() {
            let Some(b) = self.live_state(&state, i) else {
                continue;
            };
            match b.freshness() {
                Ok(()) => fresh.push(i),
                Err(why) => {
                    if matches!(b.reachability, Reachability::Up { .. }) && !b.maintenance {
                        reachable.push(i);
                    }
                    reasons.push(why);
                }
            }
        }
        let (mut order, stale) = if !fresh.is_empty() {
            (fresh, false)
        } else if self.config.stale_reads && !reachable.is_empty() {
            (reachable, true)
        } else {
            return Err(RequestError::Unavailable(format!(
                "no backend can serve fresh reads: {}",
                reasons.join("; ")
            )));
        };
        let n = self.targets.len();
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % n.max(1);
        order.sort_by_key(|&i| {
            (
                self.targets[i].outstanding.load(Ordering::Relaxed),
                (i + n - start) % n,
            )
        });
        Ok((order, stale))
    }

    /// Sends a read to the first candidate that answers; `pinned` skips the choice.
    async fn read(
        &self,
        id: &RequestId,
        fwd: &Forward,
        pinned: Option<usize>,
    ) -> Result<Response<ResponseBody>, RequestError> {
        let (order, stale) = match pinned {
            Some(i) => (vec![i], false),
            None => self.candidates()?,
        };
        let mut failures = Vec::new();
        let mut last_5xx = None;
        for i in order {
            let target = &self.targets[i];
            let outstanding = Outstanding::new(&target.outstanding);
            let resp = match self
                .send(i, fwd, self.config.timeout, GiveUp::MarkedDown)
                .await
            {
                Ok(resp) => resp,
                Err(e) => {
                    self.fail(i, &mut failures, e.to_string());
                    continue;
                }
            };
            if resp.status().is_server_error() {
                let status = resp.status();
                match hold(resp, self.config.timeout).await {
                    Ok(held) => last_5xx = Some((held, i)),
                    Err(e) => tracing::debug!(error = %e, "unreadable 5xx answer"),
                }
                self.fail(i, &mut failures, format!("answered {status}"));
                continue;
            }
            let (parts, body) = resp.into_parts();
            // The answer proper may come long after the headers (see `peek`): as long as it is
            // awaited there as the headers are in `send`.
            let timeout = self.config.timeout;
            let give_up = async {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => Unbegun::TimedOut,
                    () = self.marked_down(i, GiveUp::MarkedDown) => Unbegun::MarkedDown,
                }
            };
            let body = match peek(body, give_up).await {
                Ok(Peeked::Complete(data)) => full(data),
                Ok(Peeked::Partial(held, rest)) => {
                    let marks = (self.marks.clone(), i);
                    Relayed::new(held, rest, outstanding, marks, self.config.timeout).boxed()
                }
                Err(PeekError::Body(e)) => {
                    self.fail(i, &mut failures, format!("answer cut off: {e}"));
                    continue;
                }
                Err(PeekError::GaveUp(Unbegun::MarkedDown)) => {
                    let why = "marked down while the query waited for its answer";
                    tracing::warn!(
                        backend = self.name(i),
                        reason = why,
                        "query unanswered on a backend: trying the next"
                    );
                    failures.push(format!("{}: {why}", self.name(i)));
                    continue;
                }
                Err(PeekError::GaveUp(Unbegun::TimedOut)) => {
                    // Slow is not failed: the health checks judge the backend, and the next
                    // backend would take as long (the query is not run on every one in turn).
                    if let Some((held, j)) = last_5xx {
                        return Ok(self.respond(
                            id,
                            held.status,
                            &held.headers,
                            full(held.body),
                            j,
                            stale,
                        ));
                    }
                    return Err(RequestError::Unavailable(format!(
                        "{} sent no byte of its answer within the query timeout ({timeout:?}); the query was not sent elsewhere",
                        self.name(i)
                    )));
                }
            };
            return Ok(self.respond(id, parts.status, &parts.headers, body, i, stale));
        }
        if let Some((held, i)) = last_5xx {
            return Ok(self.respond(id, held.status, &held.headers, full(held.body), i, stale));
        }
        Err(RequestError::Unavailable(format!(
            "no backend answered the query: {}",
            failures.join("; ")
        )))
    }

    /// Sends `fwd` to backend `i` and waits for the answer's head: at most `timeout`, and no
    /// longer than the backend stays up as `gives_up` says (a stopped backend accepts
    /// connections and never answers; once the health checks mark it down, the next one is
    /// tried).
    async fn send(
        &self,
        i: usize,
        fwd: &Forward,
        timeout: Duration,
        gives_up: GiveUp,
    ) -> Result<Response<hyper::body::Incoming>, NoAnswer> {
        let sent = self.targets[i].client.forward(
            fwd.method.clone(),
            &fwd.path_and_query,
            fwd.headers.clone(),
            fwd.body.clone(),
            timeout,
        );
        tokio::select! {
            sent = sent => sent.map_err(|e| match e {
                SendError::Connect(_) => NoAnswer::NotSent(e.to_string()),
                _ => NoAnswer::Unanswered(e.to_string()),
            }),
            () = self.marked_down(i, gives_up) => Err(NoAnswer::Unanswered(
                "marked down while the query waited for its answer".to_owned(),
            )),
        }
    }

    /// Refuses (503) a statement that removes or derives data while a peer reports writes
    /// queued for a backend: its replay could deliver them after the statement ran there (a
    /// deleted point written back), and this relay cannot queue the statement behind another
    /// relay's queue.
    fn no_peer_holds_writes(&self) -> Result<(), RequestError> {
        let board = self.board.load();
        for t in &self.targets {
            let Some(state) = board.backend(t.client.name()) else {
                continue;
            };
            if let Some(p) = state.peers.iter().find(|p| p.queue.is_pending()) {
                let then = if p.reachable {
                    "retry once they are delivered"
                } else {
                    "it does not answer now, so that is its last word: retry once it has delivered them, or remove its [[peer]] entry if it is gone for good"
                };
                return Err(RequestError::Unavailable(format!(
                    "peer {} still holds {} writes queued for {}, which could reach it after this statement: {then}",
                    p.peer, p.queue.records, state.name
                )));
            }
        }
        Ok(())
    }

    /// Ends once backend `i` is marked down as `gives_up` says; never, when it already was as
    /// this began (a query is sent to a backend marked down only when no other is left).
    async fn marked_down(&self, i: usize, gives_up: GiveUp) {
        // By name: the board lists backends in the config's order, which a reload may change.
        let is_down = || match (gives_up, &self.targets[i].replica) {
            (GiveUp::PingsFail, Some(r)) => r.is_marked_down(),
            _ => self
                .board
                .load()
                .backend(self.name(i))
                .is_some_and(|b| matches!(b.reachability, Reachability::Down { .. })),
        };
        if is_down() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(DOWN_POLL).await;
            if is_down() {
                return;
            }
        }
    }

    fn fail(&self, i: usize, failures: &mut Vec<String>, why: String) {
        tracing::warn!(backend = self.name(i), reason = %why, "query failed on a backend: trying the next");
        failures.push(format!("{}: {why}", self.name(i)));
        self.marks.failure(i, why);
    }

    /// The client's answer: the backend's status, content headers and body, InfluxDB's common
    /// headers with this request's id, and which backend answered.
    fn respond(
        &self,
        id: &RequestId,
        status: StatusCode,
        from: &HeaderMap,
        body: ResponseBody,
        i: usize,
        stale: bool,
    ) -> Response<ResponseBody> {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        for name in [&CONTENT_TYPE, &CONTENT_ENCODING, &X_INFLUXDB_ERROR] {
            if let Some(v) = from.get(name) {
                h.insert(name.clone(), v.clone());
            }
        }
        add_common_headers(h, Some(id));
        if let Ok(v) = HeaderValue::from_str(self.name(i)) {
            h.insert(X_INFLUX_HA_BACKEND.clone(), v);
        }
        if stale {
            h.insert(X_INFLUX_HA_STALE.clone(), HeaderValue::from_static("true"));
        }
        resp
    }

    /// The backend a `KILL QUERY` is meant for.
    fn kill_target(&self, on: Option<&str>) -> Result<usize, RequestError> {
        if let Some(i) = on.and_then(|on| self.targets.iter().position(|t| t.client.name() == on)) {
            return Ok(i);
        }
        if self.targets.len() == 1 {
            return Ok(0);
        }
        let names: Vec<&str> = self.targets.iter().map(|t| t.client.name()).collect();
        let unknown = on.map_or(String::new(), |on| format!("there is no backend {on:?}; "));
        Err(RequestError::Backend {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "KILL QUERY: {unknown}query ids are per backend: write KILL QUERY <id> ON \"<backend>\" with one of {} (SHOW QUERIES lists the queries of the backend named in its X-Influx-Ha-Backend header)",
                names.join(", ")
            )
            .into_bytes(),
        })
    }

    // === state-changing statements ===

    /// Sends `fwd` to backend `i` and holds its whole answer, waiting up to `timeout`, or until
    /// the backend is marked down with its pings failing; `Err` for no answer or a 5xx.
    async fn send_held(&self, i: usize, fwd: &Forward, timeout: Duration) -> Result<Held, Unheld> {
        let target = &self.targets[i];
        let _outstanding = Outstanding::new(&target.outstanding);
        let resp = self
            .send(i, fwd, timeout, GiveUp::PingsFail)
            .await
            .map_err(|e| match e {
                NoAnswer::NotSent(why) => Unheld::NotRun(why),
                NoAnswer::Unanswered(why) => Unheld::MayHaveRun(why),
            })?;
        let status = resp.status();
        // A proxy in front of the backend answers 408 or 429 when busy: it did not run either.
        let busy = status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
        if status.is_server_error() || busy {
            // Whatever its body says, it did not run: queued for the replay.
            let held = hold(resp, timeout).await;
            let text = held.map_or_else(
                |why| why,
                |h| {
                    String::from_utf8_lossy(&h.body[..h.body.len().min(256)])
                        .trim()
                        .to_owned()
                },
            );
            return Err(Unheld::NotRun(format!("answered {status}: {text}")));
        }
        let held = hold(resp, timeout)
            .await
            .map_err(|why| Unheld::RanUnread { status, why })?;
        Ok(held)
    }

    /// Executes a state-changing query on every backend, queueing it for those that cannot take
    /// it now (down, in maintenance, or with writes queued: the statement goes behind them).
    async fn everywhere(
        self: &Arc<Self>,
        id: &RequestId,
        fwd: Forward,
        queued: QueuedStatement,
        statements: usize,
        repeatable: bool,
    ) -> Result<Response<ResponseBody>, RequestError> {
        let state = self.board.load();
        let fwd = Arc::new(fwd);
        let queued = Arc::new(queued);
        let mut set = JoinSet::new();
        for i in 0..self.targets.len() {
            let available = state.backend(self.name(i)).is_some_and(|b| {
                !b.maintenance && !matches!(b.reachability, Reachability::Down { .. })
            });
            let (me, fwd, queued) = (self.clone(), fwd.clone(), queued.clone());
            set.spawn(async move {
                let replica = me.targets[i].replica.clone();
                // Down with its pings failing: the board may not say so yet, and once sent the
                // statement would wait for it.
                let queue_now = replica
                    .as_ref()
                    .filter(|r| !available || r.is_queueing() || r.is_marked_down());
                let enqueue = |r: &Arc<Replica>| {
                    let (queued, r) = (queued.clone(), r.clone());
                    async move {
                        let (outcome, at) = queued.enqueue(&r).await;
                        (i, Err(outcome), at.map(|id| (r, id)))
                    }
                };
                if let Some(r) = queue_now {
                    return enqueue(r).await;
                }
                match me.send_held(i, &fwd, STATEMENT_TIMEOUT).await {
                    Ok(held) => (i, Ok(held), None),
                    // It ran there: queueing it would run it again.
                    Err(Unheld::RanUnread { status, why }) => {
                        tracing::warn!(backend = me.name(i), %status, reason = %why, "statement executed, its answer not held");
                        (i, Err(Outcome::Acked), None)
                    }
                    // Queued, it runs again when the backend is back: harmless for creating a
                    // database or a retention policy; a `DROP`, a `DELETE` relative to `now()`
                    // or a `SELECT … INTO` run twice may leave it with other data than the
                    // others have.
                    Err(Unheld::MayHaveRun(why)) => {
                        me.marks.failure(i, why.clone());
                        tracing::warn!(backend = me.name(i), reason = %why, "statement sent, no answer: queued to run again");
                        let Some(r) = &replica else {
                            return (i, Err(Outcome::Failed(why)), None);
                        };
                        if !repeatable {
                            r.mark_diverged(&format!(
                                "state-changing statements may have run before it failed ({why}); they are queued and run again"
                            ));
                        }
                        enqueue(r).await
                    }
                    Err(Unheld::NotRun(why)) => {
                        me.marks.failure(i, why.clone());
                        tracing::warn!(backend = me.name(i), reason = %why, "statement not executed: queued");
                        match &replica {
                            Some(r) => enqueue(r).await,
                            None => (i, Err(Outcome::Failed(why)), None),
                        }
                    }
                }
            });
        }
        // In its own task: a client that hangs up does not stop the statement half-way.
        let (outcomes, queued_at) = tokio::spawn(async move {
            let mut out: Vec<Option<Result<Held, Outcome>>> = Vec::new();
            let mut queued_at = Vec::new();
            while let Some(joined) = set.join_next().await {
                if let Ok((i, r, at)) = joined {
                    if out.len() <= i {
                        out.resize_with(i + 1, || None);
                    }
                    out[i] = Some(r);
                    queued_at.extend(at);
                }
            }
            (out, queued_at)
        })
        .await
        .map_err(|e| RequestError::Internal(format!("statement fan-out failed: {e}")))?;

        let mut queued = Vec::new();
        let mut failed = Vec::new();
        let mut ran_unread = Vec::new();
        let mut verdicts = Vec::new();
        // The answer given: a fresh backend's (a query may mix reads in), else the first.
        let mut first: Option<(usize, Held)> = None;
        // The board as the statements started, and what this node's queues know since.
        let fresh = |i: usize| {
            let live = self.targets[i]
                .replica
                .as_ref()
                .is_none_or(|r| r.diverged().is_none() && !r.is_queueing());
            live && state.backend(self.name(i)).is_some_and(|b| b.is_fresh())
        };
        for (i, o) in outcomes.into_iter().enumerate() {
            match o {
                Some(Ok(held)) => {
                    verdicts.push((i, Verdict::of(&held)));
                    if first.as_ref().is_none_or(|(j, _)| !fresh(*j) && fresh(i)) {
                        first = Some((i, held));
                    }
                }
                Some(Err(Outcome::Queued)) => queued.push(self.name(i).to_owned()),
                Some(Err(Outcome::Acked)) => ran_unread.push(self.name(i).to_owned()),
                Some(Err(other)) => failed.push(format!("{}: {other:?}", self.name(i))),
                None => failed.push(format!("{}: task failed", self.name(i))),
            }
        }
        self.flag_refusals(&verdicts);
        // A backend that ran them unanswered may have done otherwise: then nothing is known.
        let refused = ran_unread
            .is_empty()
            .then(|| refused_alike(&verdicts, fresh));
        if let Some(refusal) = refused.flatten() {
            for (r, id) in queued_at {
                r.note_refused_elsewhere(id, refusal.clone());
            }
        }
        if !queued.is_empty() {
            tracing::info!(backends = ?queued, "state-changing statement queued");
        }
        if !failed.is_empty() {
            tracing::error!(failed = ?failed, "state-changing statement neither executed nor queued");
        }
        if let Some((i, held)) = first {
            let stale = !fresh(i);
            return Ok(self.respond(id, held.status, &held.headers, full(held.body), i, stale));
        }
        if !ran_unread.is_empty() {
            // Not 503: a client that retried would run the statements again.
            return Err(RequestError::Internal(format!(
                "the statements ran on {} but no answer could be held (longer than {} bytes or slower than an hour); split reads from state-changing statements",
                ran_unread.join(", "),
                MAX_HELD_ANSWER
            )));
        }
        if queued.is_empty() {
            return Err(RequestError::Unavailable(format!(
                "the statement could not be executed or queued on any backend: {}",
                failed.join("; ")
            )));
        }
        // Every backend has it queued: it runs when they return.
        let text = format!(
            "no backend could execute this now: queued for {}; it runs, in order with the writes, when they return",
            queued.join(", ")
        );
        let (content_type, body) = queued_answer(fwd.headers.get(ACCEPT), statements, &text);
        let mut resp = Response::new(full(body));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        add_common_headers(resp.headers_mut(), Some(id));
        Ok(resp)
    }

    /// Where one backend ran state-changing statements cleanly (2xx, no error) and another
    /// refused them for lacking what they name (a database, a retention policy, a
    /// measurement: `… not found`), the other differs: it is marked diverged (out of reads
    /// until a repair). Other refusals (a policy that already exists with other settings) do
    /// not say which backend holds the data, and are only logged.
    fn flag_refusals(&self, verdicts: &[(usize, Verdict)]) {
        let Some((ran, _)) = verdicts.iter().find(|(_, v)| v.is_clean()) else {
            return;
        };
        for (i, v) in verdicts.iter().filter(|(_, v)| !v.is_clean()) {
            let why = v.error().unwrap_or("");
            let lacks = why.contains("not found");
            tracing::error!(
                backend = self.name(*i),
                other = self.name(*ran),
                status = %v.status,
                error = why,
                diverged = lacks,
                "a backend refused state-changing statements another ran"
            );
            if lacks && let Some(replica) = &self.targets[*i].replica {
                replica.mark_diverged(&format!(
                    "it refused state-changing statements {} ran: {why}",
                    self.name(*ran)
                ));
            }
        }
    }

    /// Sends user management to every backend directly; refused while one cannot take it.
    async fn user_admin(
        self: &Arc<Self>,
        id: &RequestId,
        fwd: Forward,
        reads: bool,
    ) -> Result<Response<ResponseBody>, RequestError> {
        let state = self.board.load();
        let unavailable: Vec<String> = (0..self.targets.len())
            .filter_map(|i| {
                let b = state.backend(self.name(i))?;
                match &b.reachability {
                    Reachability::Up { .. } if !b.maintenance => None,
                    Reachability::Up { .. } => Some(format!("{} (in maintenance)", b.name)),
                    Reachability::Down { reason, .. } => {
                        Some(format!("{} (down: {reason})", b.name))
                    }
                    Reachability::Unknown => Some(format!("{} (not checked yet)", b.name)),
                }
            })
            .collect();
        if !unavailable.is_empty() {
            return Err(RequestError::Unavailable(format!(
                "user management must reach every backend and is never queued: {} cannot take it now; nothing was changed",
                unavailable.join(", ")
            )));
        }
        let fwd = Arc::new(fwd);
        let mut set = JoinSet::new();
        for i in 0..self.targets.len() {
            let (me, fwd) = (self.clone(), fwd.clone());
            set.spawn(async move { (i, me.send_held(i, &fwd, me.config.timeout).await) });
        }
        let outcomes = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(Ok(r)) = set.join_next().await {
                out.push(r);
            }
            out.sort_by_key(|(i, _)| *i);
            out
        })
        .await
        .map_err(|e| RequestError::Internal(format!("user management fan-out failed: {e}")))?;
        let mut applied = Vec::new();
        let mut failed = Vec::new();
        // Sent and never answered: it may have been applied there.
        let mut unknown = false;
        // The answer given: a fresh backend's (reads may be sent along), else the first.
        let state = self.board.load();
        let fresh = |i: usize| self.fresh_now(&state, i);
        let mut first: Option<(usize, Held)> = None;
        for (i, r) in outcomes {
            match r {
                Ok(held) => {
                    applied.push(self.name(i).to_owned());
                    if first.as_ref().is_none_or(|(j, _)| !fresh(*j) && fresh(i)) {
                        first = Some((i, held));
                    }
                }
                Err(unheld) => {
                    unknown |= matches!(unheld, Unheld::MayHaveRun(_) | Unheld::RanUnread { .. });
                    let why = unheld.to_string();
                    self.marks.failure(i, why.clone());
                    failed.push(format!("{}: {why}", self.name(i)));
                }
            }
        }
        if unknown {
            return Err(RequestError::Unavailable(format!(
                "user management may or may not have been applied where it was not answered ({}){}; the backends may now differ: check with SHOW USERS and send it again",
                failed.join("; "),
                if applied.is_empty() {
                    String::new()
                } else {
                    format!("; applied on {}", applied.join(", "))
                }
            )));
        }
        match first {
            Some((i, held)) if failed.is_empty() => {
                let stale = reads && !fresh(i);
                Ok(self.respond(id, held.status, &held.headers, full(held.body), i, stale))
            }
            Some(_) => Err(RequestError::Unavailable(format!(
                "user management was applied on {} but failed on {}; the backends now differ: send it again once they answer",
                applied.join(", "),
                failed.join("; ")
            ))),
            None => Err(RequestError::Unavailable(format!(
                "user management failed on every backend ({}); nothing was changed",
                failed.join("; ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crate::http::body::BodyLimits;

    #[test]
    fn a_queued_copy_is_expected_to_fail_only_as_every_backend_that_ran_it_did() {
        let verdict = |status: u16, body: &str| {
            Verdict::of(&Held {
                status: StatusCode::from_u16(status).expect("status"),
                headers: HeaderMap::new(),
                body: Bytes::from(body.to_owned()),
            })
        };
        let nf = || {
            verdict(
                200,
                r#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#,
            )
        };
        let all_fresh = |_: usize| true;
        let expected = refused_alike(&[(0, nf()), (2, nf())], all_fresh).expect("refused alike");
        assert_eq!(expected.status, StatusCode::OK);
        assert_eq!(expected.error.as_deref(), Some("database not found: x"));
        let unparsable = r#"{"error":"error parsing query: x"}"#;
        let refused = refused_alike(&[(0, verdict(400, unparsable))], all_fresh).expect("refused");
        assert!(refused.is_like(
            &Refusal::of(StatusCode::BAD_REQUEST, unparsable.as_bytes()).expect("refusal")
        ));
        // Ran cleanly somewhere, refused otherwise elsewhere, or ran nowhere: no expectation.
        let clean = || verdict(200, r#"{"results":[{"statement_id":0}]}"#);
        assert!(refused_alike(&[(0, nf()), (1, clean())], all_fresh).is_none());
        assert!(refused_alike(&[(0, clean())], all_fresh).is_none());
        let other = verdict(200, r#"{"results":[{"statement_id":0,"error":"other"}]}"#);
        assert!(refused_alike(&[(0, nf()), (1, other)], all_fresh).is_none());
        assert!(refused_alike(&[], all_fresh).is_none());
        // The same first error, from another statement: the others before it ran.
        let later = verdict(
            200,
            r#"{"results":[{"statement_id":0},{"statement_id":1,"error":"database not found: x"}]}"#,
        );
        assert!(refused_alike(&[(0, nf()), (1, later)], all_fresh).is_none());
        // Refused alike only by backends that are no reference (diverged, catching up).
        assert!(refused_alike(&[(0, nf()), (1, nf())], |_| false).is_none());
        assert!(refused_alike(&[(0, nf()), (1, nf())], |i| i == 1).is_some());
    }

    use super::*;
    use crate::backend::Timeouts;
    use crate::config::{BackendConfig, BackendUrl, Scheme};
    use crate::state::{BackendState, PeerReport, QueueDepth};

    fn service(states: Vec<BackendState>, stale_reads: bool) -> QueryService {
        service_with(states, stale_reads, InflightBytes::new(1 << 24))
    }

    fn service_with(
        states: Vec<BackendState>,
        stale_reads: bool,
        inflight: InflightBytes,
    ) -> QueryService {
        service_timing_out(states, stale_reads, inflight, Duration::from_secs(1))
    }

    /// [`service_with`] whose backends get `timeout` for the first byte of an answer.
    fn service_timing_out(
        states: Vec<BackendState>,
        stale_reads: bool,
        inflight: InflightBytes,
        timeout: Duration,
    ) -> QueryService {
        let clients = states
            .iter()
            .map(|s| {
                let config = BackendConfig {
                    name: s.name.clone(),
                    url: BackendUrl {
                        scheme: Scheme::Http,
                        host: "127.0.0.1".into(),
                        // The state's URL names the port (1, where nothing listens, by default).
                        port: s
                            .url
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(1),
                        base_path: String::new(),
                    },
                    credentials: None,
                    ca_file: None,
                };
                // Never reached on a loaded machine: the tests' deadline is the query's.
                let timeouts = Timeouts {
                    connect: Duration::from_secs(60),
                    request: Duration::from_secs(60),
                };
                BackendClient::new(&config, timeouts).expect("client")
            })
            .collect();
        let n = states.len();
        QueryService::new(
            clients,
            Vec::new(),
            StateBoard::new(states),
            PassiveMarks::new(n),
            QueryConfig {
                stale_reads,
                timeout,
            },
            SharedLimits::new(BodyLimits {
                max_body_bytes: 1 << 20,
                read_timeout: Duration::from_secs(1),
                inflight_wait: Duration::from_secs(1),
            }),
            inflight,
        )
    }

    /// A backend that answers `/ping` at once and holds each `/query` until `open` is set,
    /// then answers it as a statement that ran; returns its address and the `/query` count.
    async fn holding_statements(
        open: Arc<std::sync::atomic::AtomicBool>,
    ) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let queries = Arc::new(AtomicUsize::new(0));
        let seen = queries.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (open, seen) = (open.clone(), seen.clone());
            async move {
                let mut resp = Response::new(http_body_util::Full::new(Bytes::new()));
                if req.uri().path() == "/query" {
                    seen.fetch_add(1, Ordering::SeqCst);
                    while !open.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    *resp.body_mut() = http_body_util::Full::new(Bytes::from_static(
                        b"{\"results\":[{\"statement_id\":0}]}\n",
                    ));
                } else {
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        (crate::test_http::serve(svc).await, queries)
    }

    #[tokio::test]
    async fn a_statement_waits_for_a_backend_marked_down_while_its_pings_are_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (addr, queries) = holding_statements(open.clone()).await;
        let (clients, replica) = crate::test_http::one_backend_at(dir.path(), addr);
        let board = StateBoard::new(crate::monitor::initial_states(&clients));
        let service = QueryService::new(
            clients,
            vec![replica.clone()],
            board.clone(),
            PassiveMarks::new(1),
            QueryConfig {
                stale_reads: false,
                timeout: Duration::from_secs(1),
            },
            SharedLimits::new(BodyLimits {
                max_body_bytes: 1 << 20,
                read_timeout: Duration::from_secs(1),
                inflight_wait: Duration::from_secs(1),
            }),
            crate::http::body::InflightBytes::new(1 << 24),
        );
        let run = || {
            let service = service.clone();
            let req = Request::builder()
                .method(Method::POST)
                .uri("/query?db=x&q=DROP%20MEASUREMENT%20m")
                .body(crate::http::empty())
                .expect("request");
            tokio::spawn(async move { service.call(RequestId::new(), req).await })
        };
        let sent = |n: usize| {
            let queries = queries.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while queries.load(Ordering::SeqCst) < n {
                    assert!(tokio::time::Instant::now() < deadline, "never sent");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let set_down = |down: bool| {
            board.update(|s| {
                s.backends[0].reachability = if down {
                    Reachability::Down {
                        since: SystemTime::now(),
                        reason: "requests to it failed".into(),
                    }
                } else {
                    Reachability::Up {
                        since: SystemTime::now(),
                    }
                };
            });
        };

        // Marked down for failed requests while it answers its pings: the statement may still
        // be running there, and its answer is waited for.
        let answer = run();
        sent(1).await;
        set_down(true);
        tokio::time::sleep(DOWN_POLL * 5).await;
        assert!(!answer.is_finished(), "the statement was given up");
        open.store(true, Ordering::SeqCst);
        let resp = answer.await.expect("answered");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(replica.diverged(), None);
        assert!(!replica.queue().has_pending());

        // Down with its pings failing: given up, queued to run again, and since a DROP run
        // twice may differ, the backend is marked diverged.
        open.store(false, Ordering::SeqCst);
        set_down(false);
        let answer = run();
        sent(2).await;
        replica.set_down(true);
        let resp = answer.await.expect("answered");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(replica.queue().has_pending());
        let why = replica.diverged().unwrap_or_default();
        assert!(why.contains("may have run"), "{why}");
        open.store(true, Ordering::SeqCst);
    }

    /// `/query?q=Q` sent to `s` with `method`: the status and the body as text.
    async fn answer_of(s: &QueryService, method: Method, q: &str) -> (StatusCode, String) {
        let mut uri = "/query?q=".to_owned();
        crate::http::query::encode_component(q, &mut uri);
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(crate::http::empty())
            .expect("request");
        let resp = s.call(RequestId::new(), req).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn up(name: &str) -> BackendState {
        BackendState {
            reachability: Reachability::Up {
                since: SystemTime::UNIX_EPOCH,
            },
            ..BackendState::new(name, "http://127.0.0.1:1")
        }
    }

    #[test]
    fn reads_go_to_fresh_backends_least_outstanding_first() {
        let mut down = BackendState::new("c", "u");
        down.reachability = Reachability::Down {
            since: SystemTime::UNIX_EPOCH,
            reason: "refused".into(),
        };
        let s = service(vec![up("a"), up("b"), down], false);
        let (order, stale) = s.inner.candidates().expect("fresh backends");
        assert!(!stale);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1], "the down backend is not a candidate");
        s.inner.targets[0].outstanding.store(3, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(s.inner.candidates().expect("fresh").0, vec![1, 0]);
        }
        // Equally loaded backends take turns being first.
        s.inner.targets[0].outstanding.store(0, Ordering::Relaxed);
        let firsts: std::collections::BTreeSet<usize> = (0..4)
            .map(|_| s.inner.candidates().expect("fresh").0[0])
            .collect();
        assert_eq!(firsts.len(), 2);
    }

    #[test]
    fn no_fresh_backend_is_a_503_with_reasons_unless_stale_reads() {
        let mut queued = up("a");
        queued.queue = QueueDepth {
            records: 4,
            ..QueueDepth::default()
        };
        let peer_queued = with_peer_queue(up("b"), "relay-2", 2, false);
        let unknown = BackendState::new("c", "u");
        let strict = service(
            vec![queued.clone(), peer_queued.clone(), unknown.clone()],
            false,
        );
        let err = strict.inner.candidates().expect_err("none fresh");
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = err.to_string();
        for reason in [
            "a: catching up (4 queued writes)",
            "b: peer relay-2 reports 2 queued writes for it",
            "c: not checked yet",
        ] {
            assert!(text.contains(reason), "{text}");
        }
        let lenient = service(vec![queued, peer_queued, unknown], true);
        let (mut order, stale) = lenient.inner.candidates().expect("stale reads");
        order.sort_unstable();
        assert_eq!((order, stale), (vec![0, 1], true));
    }

    #[tokio::test]
    async fn reads_sent_with_statements_for_every_backend_need_one_that_serves_reads() {
        let catching_up = |name: &str| {
            let mut b = up(name);
            b.queue = QueueDepth {
                records: 4,
                ..QueueDepth::default()
            };
            b
        };
        let answer =
            |s: QueryService, q: &'static str| async move { answer_of(&s, Method::POST, q).await };
        for q in [
            "CREATE DATABASE x; SELECT * FROM m",
            "CREATE USER u WITH PASSWORD 'p'; SHOW MEASUREMENTS",
        ] {
            let s = service(vec![catching_up("a"), catching_up("b")], false);
            let (status, body) = answer(s, q).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{q}: {body}");
            assert!(body.contains("send them apart"), "{q}: {body}");
            assert!(body.contains("catching up"), "{q}: {body}");
        }
        // Alone, the statements for every backend are not held to it.
        let s = service(vec![catching_up("a"), catching_up("b")], false);
        let (_, body) = answer(s, "CREATE DATABASE x").await;
        assert!(!body.contains("send them apart"), "{body}");
    }

    #[test]
    fn a_queued_answer_comes_in_the_format_asked_for() {
        let (ct, json) = queued_answer(None, 2, "queued");
        assert_eq!(ct, "application/json");
        assert_eq!(
            String::from_utf8(json).expect("utf-8"),
            "{\"results\":[{\"statement_id\":0,\"messages\":[{\"level\":\"warning\",\"text\":\"queued\"}]},{\"statement_id\":1,\"messages\":[{\"level\":\"warning\",\"text\":\"queued\"}]}]}\n"
        );
        for accept in ["application/csv", "text/csv"] {
            let (ct, csv) = queued_answer(Some(&HeaderValue::from_static(accept)), 1, "queued");
            assert_eq!((ct, csv.len()), ("text/csv", 0));
        }
        let (ct, packed) = queued_answer(
            Some(&HeaderValue::from_static("application/x-msgpack")),
            1,
            "queued",
        );
        assert_eq!(ct, "application/x-msgpack");
        // The shape influxd 1.6.7 gives a result with a warning (captured), no series here.
        let value = rmpv::decode::read_value(&mut packed.as_slice()).expect("msgpack");
        let result = &value["results"][0];
        assert_eq!(result["statement_id"].as_u64(), Some(0));
        assert_eq!(result["messages"][0]["level"].as_str(), Some("warning"));
        assert_eq!(result["messages"][0]["text"].as_str(), Some("queued"));
        // What the answers of backends are read with finds no error in it.
        assert_eq!(
            crate::write::schema::statement_errors(&packed),
            Some(Vec::new())
        );
    }

    #[tokio::test]
    async fn a_statement_that_cannot_run_twice_waits_for_the_peers_queues() {
        let peer_queued = with_peer_queue(up("b"), "relay-2", 2, true);
        let s = service(vec![up("a"), peer_queued], false);
        let run = |q: &str| {
            let req = Request::builder()
                .method(Method::POST)
                .uri(format!("/query?db=x&q={}", q.replace(' ', "%20")))
                .body(crate::http::empty())
                .expect("request");
            s.call(RequestId::new(), req)
        };
        for q in [
            "DELETE FROM m",
            "DROP MEASUREMENT m",
            "DROP SERIES FROM m",
            "DROP DATABASE x",
            "SELECT * INTO n FROM m",
        ] {
            let resp = run(q).await;
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{q}");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.contains("peer relay-2 still holds 2 writes queued for b"),
                "{q}: {text}"
            );
        }
        // Others go on, to the fan-out (whose backends this test cannot reach).
        for q in [
            "CREATE DATABASE x",
            "CREATE CONTINUOUS QUERY c ON x BEGIN SELECT mean(v) INTO n FROM m GROUP BY time(1m) END",
            "DROP CONTINUOUS QUERY c ON x",
        ] {
            let resp = run(q).await;
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let text = String::from_utf8_lossy(&body);
            assert!(
                text.contains("could not be executed or queued on any backend"),
                "{q}: {text}"
            );
        }
        // A peer that does not answer: its last report stands, and the answer says so.
        let silent = with_peer_queue(up("b"), "relay-3", 1, false);
        let s = service(vec![up("a"), silent], false);
        let req = Request::builder()
            .method(Method::POST)
            .uri("/query?db=x&q=DELETE%20FROM%20m")
            .body(crate::http::empty())
            .expect("request");
        let resp = s.call(RequestId::new(), req).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("remove its [[peer]] entry"),
            "{body:?}"
        );
    }

    /// `state` with a peer's report of `records` writes queued for it.
    fn with_peer_queue(
        mut state: BackendState,
        peer: &str,
        records: u64,
        reachable: bool,
    ) -> BackendState {
        state.peers.push(PeerReport {
            peer: peer.into(),
            queue: QueueDepth {
                records,
                ..QueueDepth::default()
            },
            diverged: false,
            received: SystemTime::UNIX_EPOCH,
            reachable,
        });
        state
    }

    #[test]
    fn kill_query_needs_a_backend_name_when_there_are_several() {
        let s = service(vec![up("a"), up("b")], false);
        assert_eq!(s.inner.kill_target(Some("b")).expect("named"), 1);
        let err = s.inner.kill_target(None).expect_err("ambiguous");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("KILL QUERY <id> ON"), "{err}");
        assert!(
            s.inner
                .kill_target(Some("zz"))
                .expect_err("unknown")
                .to_string()
                .contains("there is no backend \"zz\"")
        );
        let single = service(vec![up("only")], false);
        assert_eq!(single.inner.kill_target(None).expect("the only one"), 0);
    }

    /// A body whose headers went out and whose first byte never comes.
    struct Silent;

    impl hyper::body::Body for Silent {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    /// A backend answering every request with `answer`'s status and body, or, for `None`,
    /// with 200 headers and a body that never comes.
    async fn backend_answering(answer: Option<(u16, &'static str)>) -> std::net::SocketAddr {
        let svc =
            hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                let body = match answer {
                    Some((_, text)) => http_body_util::Either::Left(http_body_util::Full::new(
                        Bytes::from_static(text.as_bytes()),
                    )),
                    None => http_body_util::Either::Right(Silent),
                };
                let mut resp = Response::new(body);
                if let Some((status, _)) = answer {
                    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
                }
                Ok::<_, std::convert::Infallible>(resp)
            });
        crate::test_http::serve(svc).await
    }

    #[tokio::test]
    async fn a_read_unanswered_in_time_is_not_run_elsewhere_and_a_held_5xx_answers_it() {
        let failing = backend_answering(Some((500, "{\"error\":\"boom\"}\n"))).await;
        let silent = backend_answering(None).await;
        let at = |name: &str, addr: std::net::SocketAddr| BackendState {
            url: format!("http://127.0.0.1:{}", addr.port()),
            ..up(name)
        };
        let read =
            |s: QueryService| async move { answer_of(&s, Method::GET, "SELECT * FROM m").await };
        // Long enough for the failing backend's 500 to arrive on a loaded machine.
        let timing_out = |states| {
            service_timing_out(
                states,
                false,
                InflightBytes::new(1 << 24),
                Duration::from_secs(5),
            )
        };
        // The first backend tried answers 500, the next sends headers and then nothing.
        let s = timing_out(vec![at("a", failing), at("b", silent)]);
        let (status, body) = read(s).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(body.contains("boom"), "{body}");
        // Alone, the silent one gets the client a 503 naming the timeout.
        let s = timing_out(vec![at("b", silent)]);
        let (status, body) = read(s).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("sent no byte of its answer"), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn query_bodies_count_in_the_bytes_in_flight() {
        let inflight = InflightBytes::new(1000);
        let s = service_with(vec![up("a")], false, inflight.clone());
        let post = |q: String| {
            let s = s.clone();
            async move {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri("/query")
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(crate::http::full(Bytes::from(format!("q={q}"))))
                    .expect("request");
                let resp = s.call(RequestId::new(), req).await;
                let status = resp.status();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        // Others hold the room: with 10 bytes free the body (16 bytes) waits for it, then is
        // refused; with 50 free, its copies find none and it is refused at once.
        for others in [990, 950] {
            let mut held = crate::http::body::InflightPermit::default();
            inflight.try_grow(&mut held, others).expect("room");
            let (status, body) = post("SHOW DATABASES".to_owned()).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{others}");
            assert!(body.contains("too many request bytes in flight"), "{body}");
        }
        // With room, it goes on to the read path (whose backend cannot be reached here),
        // also when its copies would pass the cap: they are counted as far as it goes.
        for q in [
            "SHOW DATABASES".to_owned(),
            format!("SHOW DATABASES{}", " ".repeat(300)),
        ] {
            let (status, body) = post(q).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(body.contains("no backend answered the query"), "{body}");
        }
    }
}
