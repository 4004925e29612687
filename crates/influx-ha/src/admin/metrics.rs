//! `/metrics`: Prometheus (OpenMetrics text) exposition through `prometheus-client`.
//!
//! Values live where they are counted (replica counters, queue stats, listener counters), so
//! each scrape builds a fresh registry from a [`NodeStatus`] and the live counters; only the
//! request latency histograms persist here ([`RequestMetrics`], fed by the HTTP service's
//! [`RequestObserver`] hook). Names follow Prometheus conventions: `influx_ha_` prefix,
//! `_total` for counters (added by the encoder), base units (`_bytes`, `_seconds`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::status::{NodeStatus, SyncState};
use crate::http::{RequestObserver, Surface};
use crate::ingest::ListenerStats;
use crate::write::Replicator;

/// Label pairs.
type Labels = Vec<(&'static str, String)>;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s: a loopback write is around a millisecond, a stalled backend times out
    // after seconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Request latency histograms, per listener, endpoint, method and status code.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    /// Requests answered by the main and the admin listener (for the page's rates).
    counts: Arc<[AtomicU64; 2]>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            durations: Family::new_with_constructor(latency_histogram),
            counts: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
        }
    }
}

impl RequestMetrics {
    /// Requests answered so far by the listener of `kind` (`http` or `admin`).
    pub fn requests(&self, kind: &str) -> u64 {
        let i = usize::from(kind == "admin");
        self.counts[i].load(Ordering::Relaxed)
    }
}

/// The endpoint label of a path: a fixed set, so a client cannot grow the label space.
fn endpoint(path: &str) -> &'static str {
    match path {
        "/write" => "write",
        "/api/v2/write" => "write_v2",
        "/query" => "query",
        "/api/v2/query" => "query_v2",
        "/api/v1/prom/read" => "prom_read",
        "/ping" => "ping",
        "/health" => "health",
        "/status" => "status",
        "/metrics" => "metrics",
        "/" => "page",
        p if p.starts_with(crate::http::ADMIN_API_PREFIX) => "admin_api",
        _ => "other",
    }
}

impl RequestObserver for RequestMetrics {
    fn observe(
        &self,
        surface: Surface,
        method: &Method,
        path: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let (listener, i) = match surface {
            Surface::Main { .. } => ("http", 0),
            Surface::Admin => ("admin", 1),
        };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let labels = vec![
            ("listener", listener.to_owned()),
            ("endpoint", endpoint(path).to_owned()),
            ("method", method.to_owned()),
            ("code", status.as_u16().to_string()),
        ];
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

fn gauge_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, f.clone()),
        None => registry.register(name, help, f.clone()),
    }
    f
}

fn counter_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, f.clone()),
        None => registry.register(name, help, f.clone()),
    }
    f
}

fn backend(name: &str) -> Labels {
    vec![("backend", name.to_owned())]
}

/// The whole exposition.
pub fn render(
    status: &NodeStatus,
    replicator: &Replicator,
    listeners: &[ListenerStats],
    requests: &RequestMetrics,
) -> String {
    let mut r = Registry::with_prefix("influx_ha");

    let info = gauge_family(
        &mut r,
        "build_info",
        "Version of influx-ha (always 1)",
        None,
    );
    info.get_or_create(&vec![("version", status.version.to_owned())])
        .set(1.0);
    let uptime = gauge_family(
        &mut r,
        "uptime",
        "Seconds since the process started",
        Some(Unit::Seconds),
    );
    uptime
        .get_or_create(&vec![])
        .set(status.uptime_seconds as f64);
    let healthy = gauge_family(
        &mut r,
        "healthy",
        "1 when the node takes writes durably (/health answers 200)",
        None,
    );
    healthy
        .get_or_create(&vec![])
        .set(if status.health.ok { 1.0 } else { 0.0 });
    if let Some(free) = status.data_dir.free_bytes {
        let g = gauge_family(
            &mut r,
            "data_dir_free",
            "Free space of the data directory",
            Some(Unit::Bytes),
        );
        g.get_or_create(&vec![]).set(free as f64);
    }

    let refused = counter_family(
        &mut r,
        "auth_refused_requests",
        "Requests refused for their credentials ([auth])",
        None,
    );
    refused
        .get_or_create(&vec![])
        .inc_by(status.auth.refused_requests);

    if let Some(b) = &status.request_bodies {
        let held = gauge_family(
            &mut r,
            "http_inflight",
            "Request-body bytes held in memory (or reserved by requests waiting for room)",
            Some(Unit::Bytes),
        );
        held.get_or_create(&vec![]).set(b.in_flight_bytes as f64);
        let cap = gauge_family(
            &mut r,
            "http_inflight_limit",
            "[http] max_inflight_bytes",
            Some(Unit::Bytes),
        );
        cap.get_or_create(&vec![]).set(b.max_inflight_bytes as f64);
        let waits = counter_family(
            &mut r,
            "http_inflight_waits",
            "Requests that waited for room under max_inflight_bytes",
            None,
        );
        waits.get_or_create(&vec![]).inc_by(b.waited);
        let refusals = counter_family(
            &mut r,
            "http_inflight_refusals",
            "Requests answered 503 after inflight_wait without room",
            None,
        );
        refusals.get_or_create(&vec![]).inc_by(b.refused);
    }

    if let Some(a) = &status.anti_entropy {
        for (name, help, value) in [
            (
                "anti_entropy_checks",
                "Anti-entropy checks that compared the backends",
                a.checks,
            ),
            (
                "anti_entropy_differences",
                "Of those, checks that found the backends differing",
                a.differed,
            ),
            (
                "anti_entropy_skipped",
                "Checks not run because a backend was down, in maintenance or had writes queued",
                a.skipped,
            ),
            (
                "anti_entropy_failures",
                "Checks that could not finish",
                a.failed,
            ),
            (
                "anti_entropy_copied_points",
                "Points the anti-entropy repairs wrote, once per backend written to",
                a.points_copied,
            ),
        ] {
            counter_family(&mut r, name, help, None)
                .get_or_create(&vec![])
                .inc_by(value);
        }
    }

    let up = gauge_family(
        &mut r,
        "backend_up",
        "1 when the backend answers, 0 when down or not known yet",
        None,
    );
    let sync = gauge_family(
        &mut r,
        "backend_state",
        "1 for the backend's current synchronisation state (in_sync, catching_up, diverged, maintenance)",
        None,
    );
    let fresh = gauge_family(
        &mut r,
        "backend_fresh",
        "1 when reads may be served from the backend",
        None,
    );
    let q_records = gauge_family(
        &mut r,
        "queue_records",
        "Records waiting in the backend's hinted-handoff queue",
        None,
    );
    let q_bytes = gauge_family(
        &mut r,
        "queue",
        "Bytes waiting in the backend's hinted-handoff queue",
        Some(Unit::Bytes),
    );
    let q_age = gauge_family(
        &mut r,
        "queue_oldest_age",
        "Age of the oldest queued record (0 when empty)",
        Some(Unit::Seconds),
    );
    let q_degraded = gauge_family(
        &mut r,
        "queue_degraded",
        "1 when a failed fsync made the queue refuse appends",
        None,
    );
    let dl_records = gauge_family(
        &mut r,
        "dead_letter_records",
        "Batches the backend refused for good, kept for operators",
        None,
    );
    let dl_bytes = gauge_family(
        &mut r,
        "dead_letter",
        "Bytes of dead letters",
        Some(Unit::Bytes),
    );
    let direct = counter_family(
        &mut r,
        "backend_direct_writes",
        "Direct sends to the backend by result",
        None,
    );
    let queued = counter_family(
        &mut r,
        "backend_queued_batches",
        "Batches appended to the backend's queue",
        None,
    );
    let insured = counter_family(
        &mut r,
        "backend_insured_batches",
        "Batches queued because the direct send was slower than the consistency level needed",
        None,
    );
    let insured_skipped = counter_family(
        &mut r,
        "backend_insured_skipped_batches",
        "Insured batches acknowledged in the queue without a replay: their direct send got there first",
        None,
    );
    let catch_up_waits = counter_family(
        &mut r,
        "backend_catch_up_waits",
        "Writes that found every backend behind its queue and waited for this one to catch up",
        None,
    );
    let replayed = counter_family(
        &mut r,
        "backend_replayed_batches",
        "Queued batches the backend acknowledged",
        None,
    );
    let read_ahead = counter_family(
        &mut r,
        "backend_replay_read_ahead_batches",
        "Replayed batches read from disk while the batch before was being sent",
        None,
    );
    let replay_errors = counter_family(
        &mut r,
        "backend_replay_errors",
        "Replay attempts that failed (retried with backoff)",
        None,
    );
    let dead = counter_family(
        &mut r,
        "backend_dead_lettered_batches",
        "Batches the backend refused for good",
        None,
    );
    let q_appended = counter_family(
        &mut r,
        "queue_appended_records",
        "Records appended to the queue",
        None,
    );
    let q_acked = counter_family(
        &mut r,
        "queue_acked_records",
        "Queued records the backend acknowledged",
        None,
    );
    let q_fsyncs = counter_family(
        &mut r,
        "queue_fsyncs",
        "fsync calls of the queue (group commit)",
        None,
    );
    let q_dropped = counter_family(
        &mut r,
        "queue_dropped_records",
        "Records the queue dropped, by reason",
        None,
    );

    for b in &status.backends {
        let l = backend(&b.name);
        up.get_or_create(&l)
            .set(if b.reachability == "up" { 1.0 } else { 0.0 });
        for state in [
            SyncState::InSync,
            SyncState::CatchingUp,
            SyncState::Diverged,
            SyncState::Maintenance,
        ] {
            let mut sl = l.clone();
            sl.push(("state", state.label().replace(' ', "_")));
            sync.get_or_create(&sl)
                .set(if b.sync == state { 1.0 } else { 0.0 });
        }
        fresh.get_or_create(&l).set(if b.fresh { 1.0 } else { 0.0 });
        q_records.get_or_create(&l).set(b.queue.records as f64);
        q_bytes.get_or_create(&l).set(b.queue.bytes as f64);
        q_age
            .get_or_create(&l)
            .set(b.queue.oldest_age_seconds.unwrap_or(0.0));
        q_degraded
            .get_or_create(&l)
            .set(if b.queue.degraded { 1.0 } else { 0.0 });
        dl_records
            .get_or_create(&l)
            .set(b.dead_letters.records as f64);
        dl_bytes.get_or_create(&l).set(b.dead_letters.bytes as f64);
        let t = &b.totals;
        for (result, n) in [("ok", t.direct_ok), ("failed", t.direct_failed)] {
            let mut rl = l.clone();
            rl.push(("result", result.to_owned()));
            direct.get_or_create(&rl).inc_by(n);
        }
        queued.get_or_create(&l).inc_by(t.queued);
        insured.get_or_create(&l).inc_by(t.insured);
        insured_skipped.get_or_create(&l).inc_by(t.insured_skipped);
        catch_up_waits.get_or_create(&l).inc_by(t.catch_up_waits);
        replayed.get_or_create(&l).inc_by(t.replayed_batches);
        read_ahead.get_or_create(&l).inc_by(t.read_ahead);
        replay_errors.get_or_create(&l).inc_by(t.replay_errors);
        dead.get_or_create(&l).inc_by(t.dead_lettered);
    }
    for rep in replicator.replicas().iter() {
        let l = backend(rep.name());
        let s = rep.queue().stats();
        q_appended.get_or_create(&l).inc_by(s.appended_records);
        q_acked.get_or_create(&l).inc_by(s.acked_records);
        q_fsyncs.get_or_create(&l).inc_by(s.fsyncs);
        for (reason, n) in [
            ("expired", s.expired_records),
            ("purged", s.purged_records),
            ("refused_full", s.refused_full),
            ("refused_disk_floor", s.refused_disk_floor),
        ] {
            let mut rl = l.clone();
            rl.push(("reason", reason.to_owned()));
            q_dropped.get_or_create(&rl).inc_by(n);
        }
    }

    let lines = counter_family(
        &mut r,
        "listener_lines",
        "Lines (or points) received by a listener (UDP, TCP, Graphite, OpenTSDB, Prometheus remote write)",
        None,
    );
    let bad = counter_family(
        &mut r,
        "listener_bad_lines",
        "Lines (or points) a listener refused",
        None,
    );
    let bytes = counter_family(
        &mut r,
        "listener_received",
        "Bytes received by a listener",
        Some(Unit::Bytes),
    );
    let failures = counter_family(
        &mut r,
        "listener_write_failures",
        "Batches of a listener that could not be stored",
        None,
    );
    let dropped = counter_family(
        &mut r,
        "listener_dropped_datagrams",
        "UDP datagrams dropped (overload or oversize)",
        None,
    );
    for l in listeners {
        let c = l.counters.snapshot();
        let labels = vec![
            ("kind", l.kind.to_owned()),
            ("addr", l.addr.to_string()),
            ("database", l.database.clone()),
        ];
        lines.get_or_create(&labels).inc_by(c.lines);
        bad.get_or_create(&labels).inc_by(c.bad_lines);
        bytes.get_or_create(&labels).inc_by(c.bytes);
        failures.get_or_create(&labels).inc_by(c.write_failures);
        if l.kind.ends_with("udp") {
            dropped
                .get_or_create(&labels)
                .inc_by(c.dropped_datagrams + c.oversize_datagrams);
        }
    }

    r.register_with_unit(
        "http_request_duration",
        "Time from request to response headers, per listener, endpoint, method and status",
        Unit::Seconds,
        requests.durations.clone(),
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// Shared, for the handler and the HTTP service.
pub type SharedRequestMetrics = Arc<RequestMetrics>;
