//! The load: pre-generated payloads, the workers that send them, and what they measured.
//!
//! Bodies are generated before the clock starts (and gzipped when asked) and shared by
//! reference count, so a request costs the generator no formatting and no copy: the sender is
//! never the bottleneck it measures. Each worker owns one request in flight (HTTP keep-alive
//! through a pooled hyper client, or one UDP socket), its own latency histogram and error
//! counts; only the progress counters are shared.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::HttpClient;
use super::series::Workload;

/// Latencies above this are recorded as this (µs).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One batch, ready to send.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The HTTP body (gzipped when asked), or empty for UDP.
    pub body: Bytes,
    /// The datagrams for UDP, each a whole number of lines.
    pub datagrams: Vec<Bytes>,
    /// Points in the batch.
    pub points: u64,
    /// Uncompressed bytes of line protocol.
    pub raw_bytes: u64,
}

/// What the payloads are generated from.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpec {
    /// First point of the stream.
    pub offset: u64,
    /// Points per batch.
    pub batch: u64,
    /// Batches to generate.
    pub batches: u64,
    /// Points to stop at (the last batch may be short); `None` in duration mode.
    pub end: Option<u64>,
    /// Gzip the bodies.
    pub gzip: bool,
    /// Split into datagrams of at most this many bytes (UDP); 0 for HTTP.
    pub datagram_bytes: usize,
}

/// Generates the payloads of `spec`.
pub fn generate(workload: &Workload, spec: PoolSpec) -> Vec<Payload> {
    let mut out = Vec::with_capacity(spec.batches as usize);
    let mut buf = Vec::new();
    for b in 0..spec.batches {
        let first = spec.offset + b * spec.batch;
        let mut last = first + spec.batch;
        if let Some(end) = spec.end {
            last = last.min(end);
        }
        if last <= first {
            break;
        }
        buf.clear();
        workload.write_points(first..last, &mut buf);
        let raw_bytes = buf.len() as u64;
        let (body, datagrams) = if spec.datagram_bytes > 0 {
            (Bytes::new(), split_datagrams(&buf, spec.datagram_bytes))
        } else if spec.gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(buf.len() / 4),
                flate2::Compression::fast(),
            );
            // Writing into a Vec cannot fail.
            let _ = enc.write_all(&buf);
            (Bytes::from(enc.finish().unwrap_or_default()), Vec::new())
        } else {
            (Bytes::copy_from_slice(&buf), Vec::new())
        };
        out.push(Payload {
            body,
            datagrams,
            points: last - first,
            raw_bytes,
        });
    }
    out
}

/// Splits `lines` into datagrams of at most `max` bytes, at line ends (a longer line goes
/// alone).
fn split_datagrams(lines: &[u8], max: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    while end < lines.len() {
        let line_end = memchr_nl(&lines[end..]).map_or(lines.len(), |i| end + i + 1);
        if line_end - start > max && end > start {
            out.push(Bytes::copy_from_slice(&lines[start..end]));
            start = end;
        }
        end = line_end;
    }
    if end > start {
        out.push(Bytes::copy_from_slice(&lines[start..end]));
    }
    out
}

fn memchr_nl(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

/// Where and how the load goes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// HTTP POSTs.
    Http(Box<HttpSink>),
    /// UDP datagrams to `addr`.
    Udp {
        /// The listener.
        addr: SocketAddr,
    },
}

/// An HTTP write endpoint.
#[derive(Debug, Clone)]
pub struct HttpSink {
    /// The pooled keep-alive client.
    pub client: HttpClient,
    /// Full write URI with its query string.
    pub uri: Uri,
    /// `Authorization` header, if any.
    pub authorization: Option<HeaderValue>,
    /// Whether bodies are gzipped.
    pub gzip: bool,
    /// Deadline of one request.
    pub timeout: Duration,
}

/// When the load stops.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many batches (count mode).
    Batches(u64),
    /// At this instant (duration mode).
    At(Instant),
}

/// The shared plan every worker follows.
#[derive(Debug)]
pub struct Plan {
    /// The payloads; batch `k` sends `pool[k % len]`.
    pub pool: Vec<Payload>,
    /// Where to.
    pub sink: Sink,
    /// When to stop.
    pub stop: Stop,
    /// Time between two batches when rate-limited.
    pub pace: Option<Duration>,
    /// How long a failed batch is retried (0: never).
    pub retry_for: Duration,
    /// The instant batch 0 is scheduled at.
    pub start: Instant,
    /// Progress shared with the display.
    pub progress: Progress,
}

/// Counters read by the progress display while the load runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// The next batch to take.
    pub next_batch: AtomicU64,
    /// Points sent (acknowledged or not).
    pub points_done: AtomicU64,
    /// Points acknowledged with a 2xx (UDP: sent).
    pub points_acked: AtomicU64,
    /// Failed attempts.
    pub errors: AtomicU64,
    /// Set to stop the workers early (Ctrl-C), by [`Progress::stop`].
    pub cancel: AtomicBool,
    /// Wakes the workers waiting for a batch's turn when `cancel` is set.
    pub cancelled: tokio::sync::Notify,
}

impl Progress {
    /// Stops the workers: those sending finish their batch, those waiting stop waiting.
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        self.cancelled.notify_waiters();
    }
}

/// What one worker measured.
#[derive(Debug)]
pub struct Tally {
    /// Latency of each request that got an answer, µs.
    pub latency: Histogram<u64>,
    /// Requests sent (each attempt).
    pub requests: u64,
    /// Requests answered 2xx.
    pub requests_ok: u64,
    /// Points acknowledged.
    pub points_acked: u64,
    /// Points whose batch finally failed.
    pub points_failed: u64,
    /// Batches that finally failed.
    pub batches_failed: u64,
    /// Bytes put on the wire (bodies or datagrams).
    pub bytes: u64,
    /// Uncompressed line protocol sent.
    pub raw_bytes: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Failed attempts by kind (`status 503`, `connect`, `timeout`, …).
    pub errors: BTreeMap<String, u64>,
    /// The first answer text seen for each kind of error.
    pub samples: BTreeMap<String, String>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("static histogram bounds are valid"),
            requests: 0,
            requests_ok: 0,
            points_acked: 0,
            points_failed: 0,
            batches_failed: 0,
            bytes: 0,
            raw_bytes: 0,
            retries: 0,
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
        }
    }

    /// Adds another worker's tally.
    pub fn merge(&mut self, other: Tally) {
        // Both histograms have the same bounds: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.requests_ok += other.requests_ok;
        self.points_acked += other.points_acked;
        self.points_failed += other.points_failed;
        self.batches_failed += other.batches_failed;
        self.bytes += other.bytes;
        self.raw_bytes += other.raw_bytes;
        self.retries += other.retries;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.samples {
            self.samples.entry(k).or_insert(v);
        }
    }

    fn error(&mut self, kind: String, sample: String) {
        *self.errors.entry(kind.clone()).or_default() += 1;
        self.samples.entry(kind).or_insert(sample);
    }
}

/// Outcome of one attempt.
enum Attempt {
    Ok,
    /// Failed; retrying may help (5xx, connection errors, timeouts).
    Retryable,
    /// Failed for good (4xx).
    Final,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs one worker until the plan says stop.
pub async fn worker(plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::new();
    let udp = match &plan.sink {
        Sink::Udp { addr } => match udp_socket(*addr).await {
            Ok(s) => Some(s),
            Err(e) => {
                tally.error("udp socket".to_owned(), e.to_string());
                return tally;
            }
        },
        Sink::Http(_) => None,
    };
    loop {
        if plan.progress.cancel.load(Ordering::Relaxed) {
            break;
        }
        let k = plan.progress.next_batch.fetch_add(1, Ordering::Relaxed);
        if let Stop::Batches(n) = plan.stop
            && k >= n
        {
            break;
        }
        let mut scheduled = None;
        if let Some(pace) = plan.pace {
            let at = plan.start + pace.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX));
            if let Stop::At(end) = plan.stop
                && at >= end
            {
                break;
            }
            // Listening before looking, so that a stop in between is not missed.
            let stopped = plan.progress.cancelled.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            if plan.progress.cancel.load(Ordering::SeqCst) {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = stopped => break,
            }
            scheduled = Some(at);
        }
        if let Stop::At(end) = plan.stop
            && Instant::now() >= end
        {
            break;
        }
        let payload = &plan.pool[(k % plan.pool.len() as u64) as usize];
        let acked = match (&plan.sink, &udp) {
            (_, Some(socket)) => send_udp(socket, payload, &mut tally).await,
            (Sink::Http(sink), None) => {
                send_http(&plan, sink, payload, scheduled, &mut tally).await
            }
            (Sink::Udp { .. }, None) => false,
        };
        plan.progress
            .points_done
            .fetch_add(payload.points, Ordering::Relaxed);
        if acked {
            tally.points_acked += payload.points;
            plan.progress
                .points_acked
                .fetch_add(payload.points, Ordering::Relaxed);
        } else {
            tally.points_failed += payload.points;
            tally.batches_failed += 1;
        }
    }
    tally
}

async fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    Ok(socket)
}

async fn send_udp(socket: &UdpSocket, payload: &Payload, tally: &mut Tally) -> bool {
    for d in &payload.datagrams {
        tally.requests += 1;
        match socket.send(d).await {
            Ok(n) => {
                tally.requests_ok += 1;
                tally.bytes += n as u64;
            }
            // A refused datagram (ICMP port unreachable) shows as an error on the next send.
            Err(e) => {
                tally.error(format!("udp {:?}", e.kind()), e.to_string());
                return false;
            }
        }
    }
    tally.raw_bytes += payload.raw_bytes;
    true
}

/// Sends one batch, retrying as the plan says. The latency recorded is that of the answer
/// that acknowledged it, from when it was due (`scheduled`, at a set rate: a late start is
/// part of it) or else from when that attempt was sent.
async fn send_http(
    plan: &Plan,
    sink: &HttpSink,
    payload: &Payload,
    scheduled: Option<Instant>,
    tally: &mut Tally,
) -> bool {
    let HttpSink {
        client,
        uri,
        authorization,
        gzip,
        timeout,
    } = sink;
    let first = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if *gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(auth) = authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = match req.body(Full::new(payload.body.clone())) {
            Ok(r) => r,
            Err(e) => {
                tally.error("invalid request".to_owned(), e.to_string());
                return false;
            }
        };
        tally.requests += 1;
        let sent = Instant::now();
        let exchange = async {
            let resp = client.request(req).await?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), 64 << 10)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, body))
        };
        let attempt = match tokio::time::timeout(*timeout, exchange).await {
            Ok(Ok((status, body))) => {
                if status.is_success() {
                    let from = scheduled.unwrap_or(sent);
                    let us = from.elapsed().as_micros() as u64;
                    let _ = tally.latency.record(us.clamp(1, MAX_LATENCY_US));
                    tally.requests_ok += 1;
                    Attempt::Ok
                } else {
                    let text = String::from_utf8_lossy(&body[..body.len().min(300)])
                        .trim()
                        .to_owned();
                    tally.error(format!("status {}", status.as_u16()), text);
                    if status.is_server_error() {
                        Attempt::Retryable
                    } else {
                        Attempt::Final
                    }
                }
            }
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                tally.error(kind.to_owned(), error_chain(&e));
                Attempt::Retryable
            }
            Err(_) => {
                tally.error(
                    "timeout".to_owned(),
                    format!("no answer within {timeout:?}"),
                );
                Attempt::Retryable
            }
        };
        if !matches!(attempt, Attempt::Ok) {
            plan.progress.errors.fetch_add(1, Ordering::Relaxed);
        }
        match attempt {
            Attempt::Ok => {
                tally.bytes += payload.body.len() as u64;
                tally.raw_bytes += payload.raw_bytes;
                return true;
            }
            Attempt::Final => return false,
            Attempt::Retryable => {
                if first.elapsed() + backoff > plan.retry_for
                    || plan.progress.cancel.load(Ordering::Relaxed)
                {
                    return false;
                }
                tally.retries += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
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
