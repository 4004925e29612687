//! The listeners besides HTTP: UDP and TCP line protocol (`[[udp]]`, `[[tcp]]`), Graphite and
//! OpenTSDB; they feed the same write path as `POST /write`, for the listener's database.
//!
//! - [`udp`]: each datagram is a batch of lines, as InfluxDB 1.x's UDP service reads it.
//!   Datagrams that arrive while a batch is being replicated are gathered into the next one.
//! - [`tcp`]: newline-delimited line protocol per connection; complete lines (quote-aware, per
//!   [`lineproto::complete_lines`]) are replicated as soon as a read returns.
//!
//! Both validate what they receive as it arrives, so that lines without a timestamp get the
//! time they were received (per datagram, as InfluxDB's UDP service stamps them) and refused
//! lines are counted and logged here: the write path then gets whole, valid, stamped lines only.
//! There is nobody to answer: refused lines and failed writes are counted in [`Counters`] and
//! logged at most once per [`LOG_INTERVAL`] per kind, with a short sample, never a whole payload.
//! Writes use the configured default consistency (`[write] consistency`).
//!
//! Collector protocols, converted to line protocol exactly as InfluxDB 1.6's own services
//! convert them and then fed through the same listeners and checks ([`TextProtocol`] is the
//! seam; [`points`] writes converted points as lines 1.6 reads back identically):
//!
//! - [`graphite`]: `[[graphite]]`, plaintext over TCP or UDP with InfluxDB 1.x's templates;
//! - [`opentsdb`]: `[[opentsdb]]`, telnet `put` and HTTP `/api/put` on one port;
//! - [`promwrite`]: Prometheus remote write, served on the main HTTP listener
//!   (`/api/v1/prom/write`); its counters show with the listeners' ([`Listeners::stats`]).

pub mod graphite;
pub mod opentsdb;
pub mod points;
pub mod promwrite;
pub mod tcp;
pub mod udp;

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use lineproto::Precision;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::{Config, GraphiteProtocol};
use crate::http::body::InflightBytes;
use crate::http::error::RequestError;
use crate::shutdown::Shutdown;
use crate::write::Replicator;

/// Each kind of complaint is logged at most once per this period (with how many were not).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Bytes of a payload or an error text shown in a log line.
pub const SAMPLE_BYTES: usize = 200;

/// Where the listeners deliver batches: whole, valid lines with timestamps in `precision`.
pub trait Sink: Send + Sync + 'static {
    /// Stores (replicates) one batch for `db`, or says why not.
    fn write(
        &self,
        db: &str,
        precision: Precision,
        data: Bytes,
    ) -> impl Future<Output = Result<(), RequestError>> + Send;
}

/// A text protocol a TCP or UDP listener speaks instead of line protocol (Graphite,
/// OpenTSDB telnet): whole lines in, line protocol out.
pub trait TextProtocol: Send + Sync + 'static {
    /// Converts whole lines (each ended by `\n`, the last one perhaps not) received at
    /// `now_nanos` into lines of line protocol with nanosecond timestamps, appended to `out`;
    /// what the protocol answers goes to `reply` (TCP only). Lines it refuses are reported
    /// through `refused`.
    fn convert(
        &self,
        lines: &[u8],
        now_nanos: i64,
        out: &mut Vec<u8>,
        reply: &mut Vec<u8>,
        refused: &mut dyn FnMut(&[u8], &dyn std::fmt::Display),
    );

    /// Called for each new TCP connection before it is read as lines: a protocol that also
    /// speaks something else on the same port (OpenTSDB's HTTP API) takes the connection and
    /// answers `None`, or hands it back.
    fn sniff(
        &self,
        stream: tokio::net::TcpStream,
        _shutdown: Shutdown,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<tokio::net::TcpStream>> + Send>> {
        Box::pin(async move { Some(stream) })
    }
}

/// The write path at the configured default consistency (as a reload last set it).
#[derive(Debug, Clone)]
pub struct ReplicatorSink {
    replicator: Arc<Replicator>,
}

impl ReplicatorSink {
    pub fn new(replicator: Arc<Replicator>) -> Self {
        Self { replicator }
    }
}

impl Sink for ReplicatorSink {
    fn write(
        &self,
        db: &str,
        precision: Precision,
        data: Bytes,
    ) -> impl Future<Output = Result<(), RequestError>> + Send {
        self.replicator.replicate(
            db.to_owned(),
            None,
            precision.v1_param(),
            self.replicator.default_consistency(),
            data,
        )
    }
}

/// What one listener has seen since it started, for the status page.
#[derive(Debug, Default)]
pub struct Counters {
    datagrams: AtomicU64,
    oversize_datagrams: AtomicU64,
    dropped_datagrams: AtomicU64,
    connections: AtomicU64,
    open_connections: AtomicU64,
    closed_for_long_lines: AtomicU64,
    closed_for_memory: AtomicU64,
    bytes: AtomicU64,
    lines: AtomicU64,
    bad_lines: AtomicU64,
    batches_written: AtomicU64,
    batches_partly_refused: AtomicU64,
    batches_below_level: AtomicU64,
    write_failures: AtomicU64,
    write_retries: AtomicU64,
    requests: AtomicU64,
    bad_requests: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// UDP: datagrams received (oversize and dropped ones included).
    pub datagrams: u64,
    /// UDP: datagrams larger than the read buffer (truncated by the kernel), dropped.
    pub oversize_datagrams: u64,
    /// UDP: datagrams dropped because too much was waiting to be written already.
    pub dropped_datagrams: u64,
    /// TCP: connections accepted.
    pub connections: u64,
    /// TCP: connections open now.
    pub open_connections: u64,
    /// TCP: connections closed because a line grew past `max_body_bytes`.
    pub closed_for_long_lines: u64,
    /// TCP: connections closed because their incomplete line found no room under
    /// `max_inflight_bytes` within `inflight_wait`.
    pub closed_for_memory: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Lines received (points and refused lines; blank lines and comments are not counted).
    pub lines: u64,
    /// Lines refused by validation (not written), and partial lines discarded at a
    /// connection's end.
    pub bad_lines: u64,
    /// Batches written at the configured consistency level.
    pub batches_written: u64,
    /// Of those, batches the backends stored only in part (`partial write`, e.g. a field type
    /// conflict).
    pub batches_partly_refused: u64,
    /// Batches stored on some backend or queued, but short of the consistency level (they
    /// reach every backend through the queues).
    pub batches_below_level: u64,
    /// Batches that could not be stored anywhere (lost for UDP; for TCP, after shutdown
    /// interrupted the retries, or refused by the backends).
    pub write_failures: u64,
    /// TCP: writes retried because the write path was overloaded or unavailable (503).
    pub write_retries: u64,
    /// HTTP (Prometheus remote write, OpenTSDB `/api/put`): requests received.
    pub requests: u64,
    /// HTTP: requests refused as a whole (undecodable body, wrong method or path, …).
    pub bad_requests: u64,
}

pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Counters {
    /// The current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            datagrams: get(&self.datagrams),
            oversize_datagrams: get(&self.oversize_datagrams),
            dropped_datagrams: get(&self.dropped_datagrams),
            connections: get(&self.connections),
            open_connections: get(&self.open_connections),
            closed_for_long_lines: get(&self.closed_for_long_lines),
            closed_for_memory: get(&self.closed_for_memory),
            bytes: get(&self.bytes),
            lines: get(&self.lines),
            bad_lines: get(&self.bad_lines),
            batches_written: get(&self.batches_written),
            batches_partly_refused: get(&self.batches_partly_refused),
            batches_below_level: get(&self.batches_below_level),
            write_failures: get(&self.write_failures),
            write_retries: get(&self.write_retries),
            requests: get(&self.requests),
            bad_requests: get(&self.bad_requests),
        }
    }
}

/// Lets a complaint through at most once per [`LOG_INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimit {
    /// `Some(n)` when this one may be logged (`n` were not since the last one logged).
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(t) if now.duration_since(t) < LOG_INTERVAL => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// The first [`SAMPLE_BYTES`] of `bytes`, for a log line.
pub(crate) fn sample(bytes: &[u8]) -> String {
    let cut = bytes.len().min(SAMPLE_BYTES);
    let mut s = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if cut < bytes.len() {
        s.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    s
}

pub(crate) fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// What a listener needs to turn received lines into writes: the sink, its database and
/// precision, counters and log limits.
#[derive(Debug)]
pub(crate) struct Feed<S> {
    pub(crate) sink: S,
    pub(crate) database: String,
    pub(crate) precision: Precision,
    pub(crate) kind: &'static str,
    pub(crate) listener: SocketAddr,
    pub(crate) counters: Arc<Counters>,
    /// Lines without a timestamp are stamped one unit apart (a stream's lines are events of
    /// their own), instead of all with the time they were read.
    spaced_stamps: bool,
    bad_lines_log: LogLimit,
    failures_log: LogLimit,
    pub(crate) other_log: LogLimit,
}

/// What became of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Written at the consistency level (perhaps refused in part by the backends).
    Written,
    /// Stored somewhere or queued, short of the level.
    BelowLevel,
    /// Not stored.
    Failed,
}

impl<S: Sink> Feed<S> {
    pub(crate) fn new(
        sink: S,
        database: String,
        precision: Precision,
        kind: &'static str,
        listener: SocketAddr,
    ) -> Self {
        Self {
            sink,
            database,
            precision,
            kind,
            listener,
            counters: Arc::new(Counters::default()),
            spaced_stamps: false,
            bad_lines_log: LogLimit::default(),
            failures_log: LogLimit::default(),
            other_log: LogLimit::default(),
        }
    }

    /// This feed with [`Feed::spaced_stamps`] set: for a stream, where the lines read
    /// together may have been sent apart (and, while the write path is slow, seconds apart),
    /// and one stamp for all would keep only the last point of each series.
    pub(crate) fn with_spaced_stamps(mut self) -> Self {
        self.spaced_stamps = true;
        self
    }

    fn validate<'a>(&self, lines: &'a [u8], now: i64) -> lineproto::Validated<'a> {
        if self.spaced_stamps {
            lineproto::validate_spaced(lines, self.precision, now)
        } else {
            lineproto::validate(lines, self.precision, now)
        }
    }

    /// Validates `lines` (received now, whole lines) and counts them; the valid lines with
    /// timestamps stamped, or `None` when there is none. Refused lines are logged.
    pub(crate) fn prepare<'a>(&self, lines: &'a [u8]) -> Option<Cow<'a, [u8]>> {
        let v = self.validate(lines, unix_nanos());
        if v.rejected().iter().any(|r| r.line().contains(&b'\n')) {
            return self.prepare_apart(lines).map(Cow::Owned);
        }
        let bad = v.rejected().len();
        self.count_refused(v.points(), bad, || v.influx_error().unwrap_or_default());
        (v.points() > 0).then(|| v.into_output())
    }

    /// [`Self::prepare`] for a block where a refused line runs over newlines: a stray `"`
    /// makes the quote-aware line splitter run a line on to the next quote, and in a stream
    /// every good line up to there would be lost with it. Each line is validated on its own
    /// here, and a refused one that runs over newlines is taken apart at them, so that only
    /// the line with the stray quote is refused. (A string value holding newlines that is
    /// valid stays whole.)
    fn prepare_apart(&self, block: &[u8]) -> Option<Vec<u8>> {
        let now = unix_nanos();
        let mut out = Vec::with_capacity(block.len());
        let (mut points, mut bad) = (0, 0);
        let mut first_error = None;
        let mut keep = |v: &lineproto::Validated<'_>, out: &mut Vec<u8>| {
            points += v.points();
            bad += v.rejected().len();
            if first_error.is_none() {
                first_error = v.influx_error();
            }
            if v.points() > 0 {
                out.extend_from_slice(v.output());
                if out.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
            }
        };
        // Each line validated alone is stamped on from where the last one left off.
        let mut next_stamp = now;
        let step = self.precision.nanos();
        for line in lineproto::lines(block) {
            let v = self.validate(line, next_stamp);
            if v.rejected().iter().any(|r| r.line().contains(&b'\n')) {
                for piece in line.split_inclusive(|&b| b == b'\n') {
                    let v = self.validate(piece, next_stamp);
                    if self.spaced_stamps && v.points() > 0 && !v.is_unchanged() {
                        next_stamp = next_stamp.saturating_add(step);
                    }
                    keep(&v, &mut out);
                }
            } else {
                if self.spaced_stamps && v.points() > 0 && !v.is_unchanged() {
                    next_stamp = next_stamp.saturating_add(step);
                }
                keep(&v, &mut out);
            }
        }
        self.count_refused(points, bad, || first_error.unwrap_or_default());
        (points > 0).then_some(out)
    }

    /// Counts `points` and `bad` refused lines, logging (rate limited) the error `error`
    /// gives when there are refused ones.
    fn count_refused(&self, points: usize, bad: usize, error: impl FnOnce() -> Vec<u8>) {
        add(&self.counters.lines, points + bad);
        if bad > 0 {
            add(&self.counters.bad_lines, bad);
            if let Some(suppressed) = self.bad_lines_log.allow() {
                let error = error();
                tracing::warn!(
                    listener = %self.listener,
                    kind = self.kind,
                    database = %self.database,
                    refused = bad,
                    error = %sample(&error),
                    suppressed,
                    "refused lines were not written"
                );
            }
        }
    }

    /// Converts `lines` of a text protocol into line protocol, counting and logging (rate
    /// limited, with a sample) the lines the conversion refuses.
    pub(crate) fn convert(
        &self,
        text: &dyn TextProtocol,
        lines: &[u8],
        reply: &mut Vec<u8>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(lines.len() + lines.len() / 2);
        text.convert(lines, unix_nanos(), &mut out, reply, &mut |line, why| {
            self.refused(1, line, why);
        });
        out
    }

    /// Counts `n` lines or points refused before validation (by a conversion) and logs one
    /// of them (rate limited).
    pub(crate) fn refused(&self, n: usize, line: &[u8], why: &dyn std::fmt::Display) {
        add(&self.counters.lines, n);
        add(&self.counters.bad_lines, n);
        if let Some(suppressed) = self.bad_lines_log.allow() {
            tracing::warn!(
                listener = %self.listener,
                kind = self.kind,
                database = %self.database,
                refused = n,
                line = %sample(line),
                error = %why,
                suppressed,
                "refused by the conversion; the other points are written"
            );
        }
    }

    /// Writes one batch once, for a client that is answered (HTTP): counted as
    /// [`Feed::deliver`] counts; the write path's error when it was not stored as asked (a
    /// partial write counts as written, and one stored short of the level as such, and both
    /// are returned too).
    pub(crate) async fn deliver_once(&self, data: Bytes) -> Result<(), RequestError> {
        let error = match self.sink.write(&self.database, self.precision, data).await {
            Ok(()) => {
                add(&self.counters.batches_written, 1);
                return Ok(());
            }
            Err(e) => e,
        };
        match &error {
            RequestError::PartialWrite(message) => {
                add(&self.counters.batches_written, 1);
                add(&self.counters.batches_partly_refused, 1);
                self.log_failure(&error, "the backends refused part of a batch", message);
            }
            RequestError::LevelNotMet | RequestError::QueuedOnly => {
                add(&self.counters.batches_below_level, 1);
                self.log_failure(
                    &error,
                    "batch stored short of the consistency level (queued for the rest)",
                    b"",
                );
            }
            _ => {
                add(&self.counters.write_failures, 1);
                self.log_failure(&error, "batch not written", b"");
            }
        }
        Err(error)
    }

    /// Counts lines lost without being validated (a partial line at a connection's end).
    pub(crate) fn discard(&self, tail: &[u8], why: &'static str) {
        add(&self.counters.bad_lines, 1);
        if let Some(suppressed) = self.bad_lines_log.allow() {
            tracing::warn!(
                listener = %self.listener,
                kind = self.kind,
                database = %self.database,
                bytes = tail.len(),
                sample = %sample(tail),
                suppressed,
                "{why}: an incomplete line was discarded"
            );
        }
    }

    /// Writes one batch. With `retry`, a 503 (overloaded, nothing could be stored) is retried
    /// with backoff until it succeeds or shutdown comes; without, it is counted as failed.
    pub(crate) async fn deliver(&self, data: Bytes, mut retry: Option<&mut Shutdown>) -> Delivered {
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match self
                .sink
                .write(&self.database, self.precision, data.clone())
                .await
            {
                Ok(()) => {
                    add(&self.counters.batches_written, 1);
                    return Delivered::Written;
                }
                Err(e) => e,
            };
            match &error {
                RequestError::PartialWrite(message) => {
                    add(&self.counters.batches_written, 1);
                    add(&self.counters.batches_partly_refused, 1);
                    self.log_failure(&error, "the backends refused part of a batch", message);
                    return Delivered::Written;
                }
                RequestError::LevelNotMet | RequestError::QueuedOnly => {
                    add(&self.counters.batches_below_level, 1);
                    self.log_failure(
                        &error,
                        "batch stored short of the consistency level (queued for the rest)",
                        b"",
                    );
                    return Delivered::BelowLevel;
                }
                _ => {}
            }
            if error.status() == StatusCode::SERVICE_UNAVAILABLE
                && let Some(shutdown) = retry.as_deref_mut()
            {
                add(&self.counters.write_retries, 1);
                self.log_failure(&error, "write path unavailable; retrying the batch", b"");
                tokio::select! {
                    () = shutdown.recv() => {}
                    () = tokio::time::sleep(backoff) => {
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            add(&self.counters.write_failures, 1);
            self.log_failure(&error, "batch not written", b"");
            return Delivered::Failed;
        }
    }

    fn log_failure(&self, error: &RequestError, what: &'static str, detail: &[u8]) {
        let Some(suppressed) = self.failures_log.allow() else {
            return;
        };
        let message = if detail.is_empty() {
            sample(error.to_string().as_bytes())
        } else {
            sample(detail)
        };
        tracing::warn!(
            listener = %self.listener,
            kind = self.kind,
            database = %self.database,
            status = error.status().as_u16(),
            error = %message,
            suppressed,
            "{what}"
        );
    }
}

/// A listener could not bind.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {error}")]
pub struct BindError {
    /// `udp` or `tcp`.
    pub what: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    pub error: std::io::Error,
}

/// One listener's identity and counters, for the status page.
#[derive(Debug, Clone)]
pub struct ListenerStats {
    /// `udp` or `tcp`.
    pub kind: &'static str,
    /// The address it got.
    pub addr: SocketAddr,
    /// The database its lines are written to.
    pub database: String,
    pub counters: Arc<Counters>,
}

/// Every `[[udp]]` and `[[tcp]]` listener of a config, bound.
pub struct Listeners<S> {
    udp: Vec<udp::UdpListener<S>>,
    tcp: Vec<tcp::TcpLineListener<S>>,
    /// The main HTTP listener's address, where Prometheus remote write is served.
    http: SocketAddr,
}

/// The longest Graphite or OpenTSDB line taken: far more than one metric needs.
const TEXT_LINE_MAX: usize = 64 * 1024;

impl<S: Sink + Clone> Listeners<S> {
    /// Binds every listener of `config`, writing through `sink`; the TCP listeners' buffers
    /// count against `budget` (`max_inflight_bytes`).
    pub async fn bind(config: &Config, sink: S, budget: &InflightBytes) -> Result<Self, BindError> {
        // Batches stay within what a backend takes in one request, like a client's would.
        let max_body = usize::try_from(config.http.max_body_bytes).unwrap_or(usize::MAX);
        let mut udp = Vec::with_capacity(config.udp.len());
        for u in &config.udp {
            let defaults = udp::UdpOptions::default();
            let options = udp::UdpOptions {
                max_batch_bytes: defaults.max_batch_bytes.min(max_body),
                ..defaults
            };
            udp.push(
                udp::UdpListener::bind(u, sink.clone(), options)
                    .await
                    .map_err(|error| BindError {
                        what: "udp",
                        addr: u.bind,
                        error,
                    })?,
            );
        }
        let mut tcp = Vec::with_capacity(config.tcp.len());
        for t in &config.tcp {
            let defaults = tcp::TcpOptions::default();
            let options = tcp::TcpOptions {
                max_connections: t.max_connections,
                idle_timeout: t.idle_timeout,
                max_line_bytes: max_body,
                max_batch_bytes: defaults.max_batch_bytes.min(max_body),
                drain_timeout: config.http.drain_timeout,
                memory_wait: config.http.inflight_wait,
                ..defaults
            };
            tcp.push(
                tcp::TcpLineListener::bind(t, sink.clone(), options)
                    .await
                    .map_err(|error| BindError {
                        what: "tcp",
                        addr: t.bind,
                        error,
                    })?,
            );
        }
        let tcp_options = tcp::TcpOptions {
            // Graphite and OpenTSDB lines are a metric each.
            max_line_bytes: max_body.min(TEXT_LINE_MAX),
            max_batch_bytes: tcp::TcpOptions::default().max_batch_bytes.min(max_body),
            drain_timeout: config.http.drain_timeout,
            memory_wait: config.http.inflight_wait,
            ..tcp::TcpOptions::default()
        };
        let udp_options = udp::UdpOptions {
            max_batch_bytes: udp::UdpOptions::default().max_batch_bytes.min(max_body),
            ..udp::UdpOptions::default()
        };
        for g in &config.graphite {
            let text: Arc<dyn TextProtocol> = Arc::new(g.parser.clone());
            let what = match g.protocol {
                GraphiteProtocol::Tcp => "graphite (tcp)",
                GraphiteProtocol::Udp => "graphite (udp)",
            };
            let bind_error = |error| BindError {
                what,
                addr: g.bind,
                error,
            };
            match g.protocol {
                GraphiteProtocol::Tcp => tcp.push(
                    tcp::TcpLineListener::bind_text(
                        g.bind,
                        &g.database,
                        "graphite-tcp",
                        sink.clone(),
                        tcp_options,
                        Some(text),
                    )
                    .await
                    .map_err(bind_error)?,
                ),
                GraphiteProtocol::Udp => udp.push(
                    udp::UdpListener::bind_text(
                        g.bind,
                        &g.database,
                        Precision::Nanoseconds,
                        "graphite-udp",
                        sink.clone(),
                        udp_options,
                        Some(text),
                    )
                    .await
                    .map_err(bind_error)?,
                ),
            }
        }
        for o in &config.opentsdb {
            let limits = crate::http::body::BodyLimits {
                max_body_bytes: max_body,
                read_timeout: config.http.body_read_timeout,
                inflight_wait: config.http.inflight_wait,
            };
            tcp.push(
                opentsdb::bind(
                    o.bind,
                    &o.database,
                    sink.clone(),
                    tcp_options,
                    limits,
                    budget.clone(),
                )
                .await
                .map_err(|error| BindError {
                    what: "opentsdb",
                    addr: o.bind,
                    error,
                })?,
            );
        }
        for t in &mut tcp {
            t.set_budget(budget.clone());
        }
        Ok(Self {
            udp,
            tcp,
            http: config.http.bind,
        })
    }

    /// Every listener's identity and counters.
    pub fn stats(&self) -> Vec<ListenerStats> {
        let udp = self.udp.iter().map(|l| l.stats());
        let mut all: Vec<ListenerStats> = udp.chain(self.tcp.iter().map(|l| l.stats())).collect();
        all.push(promwrite::stats(self.http));
        all
    }

    /// Runs every listener in its own task until `shutdown` is broadcast; each task ends once
    /// its listener has closed and handed its last batch to the write path.
    pub fn spawn(self, shutdown: &broadcast::Sender<()>) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::with_capacity(self.udp.len() + self.tcp.len());
        for l in self.udp {
            tasks.push(tokio::spawn(l.run(Shutdown::new(shutdown.subscribe()))));
        }
        for l in self.tcp {
            tasks.push(tokio::spawn(l.run(Shutdown::new(shutdown.subscribe()))));
        }
        tasks
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A sink that records batches and can be told to fail.

    use std::collections::VecDeque;

    use super::*;

    #[derive(Debug, Clone, Default)]
    pub(crate) struct Recorder {
        pub(crate) batches: Arc<Mutex<Vec<(String, Precision, Bytes)>>>,
        /// Answers to give before accepting (front first).
        pub(crate) answers: Arc<Mutex<VecDeque<RequestError>>>,
        pub(crate) calls: Arc<AtomicU64>,
    }

    impl Recorder {
        pub(crate) fn lines(&self) -> Vec<String> {
            let batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
            let mut out = Vec::new();
            for (_, _, b) in batches.iter() {
                let text = String::from_utf8_lossy(b).into_owned();
                out.extend(text.lines().map(str::to_owned));
            }
            out
        }

        pub(crate) fn fail_next(&self, e: RequestError) {
            self.answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(e);
        }
    }

    impl Sink for Recorder {
        async fn write(
            &self,
            db: &str,
            precision: Precision,
            data: Bytes,
        ) -> Result<(), RequestError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let answer = self
                .answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            if let Some(e) = answer {
                return Err(e);
            }
            self.batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((db.to_owned(), precision, data));
            Ok(())
        }
    }

    /// Polls `condition` every 10 ms, up to 20 s.
    pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Recorder;
    use super::*;

    fn feed() -> (Feed<Recorder>, Recorder) {
        let r = Recorder::default();
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        (
            Feed::new(r.clone(), "db".into(), Precision::Seconds, "tcp", addr),
            r,
        )
    }

    #[test]
    fn prepare_stamps_counts_and_drops_refused_lines() {
        let (f, _) = feed();
        let out = f
            .prepare(b"a v=1 5\nbad\n\n# comment\nb v=2\n")
            .expect("valid lines");
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("a v=1 5\n"), "{text}");
        assert!(!text.contains("bad"), "{text}");
        let b = text.lines().find(|l| l.starts_with("b v=2 ")).expect("b");
        let stamp: i64 = b["b v=2 ".len()..].parse().expect("a timestamp in seconds");
        assert!((stamp - unix_nanos() / 1_000_000_000).abs() < 60);
        let c = f.counters.snapshot();
        assert_eq!((c.lines, c.bad_lines), (3, 1));
        assert!(f.prepare(b"garbage\n").is_none());
        assert_eq!(f.counters.snapshot().bad_lines, 2);
    }

    #[tokio::test]
    async fn deliver_counts_each_outcome_and_retries_503_only_when_asked() {
        let (f, r) = feed();
        let data = Bytes::from_static(b"a v=1 1\n");
        assert_eq!(f.deliver(data.clone(), None).await, Delivered::Written);
        r.fail_next(RequestError::QueuedOnly);
        assert_eq!(f.deliver(data.clone(), None).await, Delivered::BelowLevel);
        r.fail_next(RequestError::Unavailable("queues full".into()));
        assert_eq!(f.deliver(data.clone(), None).await, Delivered::Failed);
        r.fail_next(RequestError::PartialWrite(
            b"partial write: x dropped=1".to_vec(),
        ));
        assert_eq!(f.deliver(data.clone(), None).await, Delivered::Written);

        let (_tx, rx) = broadcast::channel(1);
        let mut shutdown = Shutdown::new(rx);
        r.fail_next(RequestError::Unavailable("queues full".into()));
        r.fail_next(RequestError::Overloaded("busy".into()));
        assert_eq!(
            f.deliver(data.clone(), Some(&mut shutdown)).await,
            Delivered::Written
        );
        let c = f.counters.snapshot();
        assert_eq!(c.batches_written, 3);
        assert_eq!(c.batches_partly_refused, 1);
        assert_eq!(c.batches_below_level, 1);
        assert_eq!(c.write_failures, 1);
        assert_eq!(c.write_retries, 2);
        assert_eq!(r.batches.lock().expect("lock").len(), 2);
    }

    #[tokio::test]
    async fn shutdown_ends_the_retries() {
        let (f, r) = feed();
        for _ in 0..1000 {
            r.fail_next(RequestError::Unavailable("queues full".into()));
        }
        let (tx, rx) = broadcast::channel(1);
        let mut shutdown = Shutdown::new(rx);
        let stop = async {
            testing::eventually("a retry", || r.calls.load(Ordering::Relaxed) >= 2).await;
            tx.send(()).expect("receiver");
        };
        let (delivered, ()) = tokio::join!(
            f.deliver(Bytes::from_static(b"a v=1 1\n"), Some(&mut shutdown)),
            stop
        );
        assert_eq!(delivered, Delivered::Failed);
        assert_eq!(f.counters.snapshot().write_failures, 1);
    }

    #[tokio::test]
    async fn a_busy_port_is_a_clear_error() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let text = format!(
            "data_dir = \"/tmp/unused\"\n[http]\nbind = \"127.0.0.1:0\"\n\
             [[udp]]\nbind = \"127.0.0.1:0\"\ndatabase = \"u\"\n\
             [[tcp]]\nbind = \"127.0.0.1:{port}\"\ndatabase = \"t\"\n\
             [[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n"
        );
        let config = Config::from_toml(&text, "test").expect("valid");
        let err = Listeners::bind(&config, Recorder::default(), &InflightBytes::new(1 << 20))
            .await
            .err()
            .expect("port taken");
        assert_eq!((err.what, err.addr.port()), ("tcp", port));
        assert!(err.to_string().contains("cannot listen on"), "{err}");

        let text = text.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
        let config = Config::from_toml(&text, "test").expect("valid");
        let listeners = Listeners::bind(&config, Recorder::default(), &InflightBytes::new(1 << 20))
            .await
            .expect("free ports");
        let stats = listeners.stats();
        assert_eq!(stats.len(), 3);
        assert_eq!(stats[2].kind, "prometheus");
        assert_eq!((stats[0].kind, stats[0].database.as_str()), ("udp", "u"));
        assert_eq!((stats[1].kind, stats[1].database.as_str()), ("tcp", "t"));
        assert_ne!(stats[1].addr.port(), 0);
        let (tx, _) = broadcast::channel(1);
        let tasks = listeners.spawn(&tx);
        tx.send(()).expect("listeners run");
        for t in tasks {
            t.await.expect("stops");
        }
    }

    #[test]
    fn log_limit_lets_one_through_per_interval() {
        let l = LogLimit::default();
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        *l.last.lock().expect("lock") = Instant::now().checked_sub(LOG_INTERVAL);
        assert_eq!(l.allow(), Some(2));
    }

    #[test]
    fn samples_are_short() {
        assert_eq!(sample(b"abc"), "abc");
        let long = vec![b'x'; 10 * SAMPLE_BYTES];
        let s = sample(&long);
        assert!(s.len() < SAMPLE_BYTES + 40, "{s}");
        assert!(s.ends_with("(2000 bytes)"), "{s}");
    }
}
