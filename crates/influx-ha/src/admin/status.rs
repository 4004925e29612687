//! What `/status` answers and the page shows: one [`NodeStatus`] built from the replicator,
//! the state board, the listeners and the rate sampler.
//!
//! Sources, in order of trust: queue depth, divergence and maintenance come live from each
//! [`Replica`] (they change with every write); reachability and peer reports come from the
//! [`StateBoard`] once its health checks have reported, otherwise from passive marking (did
//! the backend answer the last request sent to it).
//!
//! The JSON schema is documented in `docs/OPERATIONS.md`; fields are only ever added.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::metrics::RequestMetrics;
use super::page::{human_duration, human_size};
use super::rates::{Rates, Sample};
use crate::health::Health;
use crate::ingest::ListenerStats;
use crate::state::{Reachability, StateBoard};
use crate::write::Replicator;
use crate::write::replica::{Link, Replica};

/// Everything the admin surface reads; cheap to share.
#[derive(Debug)]
pub struct Sources {
    /// The write path: replicas, queues, counters.
    pub replicator: Replicator,
    /// Health checks and peer reports, when a task keeps the board current.
    pub board: Option<StateBoard>,
    /// This relay's `node_name`, in the queue report peers fetch.
    pub node_name: String,
    /// Readiness behind `/health`.
    pub health: Health,
    /// Where the queues live (free disk is measured there).
    pub data_dir: PathBuf,
    /// When the process started.
    pub started: SystemTime,
    /// The HTTP listeners: (`http` or `admin`, address).
    pub http_listeners: Vec<(&'static str, String)>,
    /// The cap on request bodies in memory (`[http] max_inflight_bytes`).
    pub inflight: Option<crate::http::body::InflightBytes>,
    /// The background comparison of the backends, when `[anti_entropy]` is on.
    pub anti_entropy: Option<std::sync::Arc<crate::repair::background::AntiEntropyStats>>,
    /// Where a peer's notice that its queues changed goes (with the read path's monitor).
    pub peers_changed: Option<std::sync::Arc<crate::peers::PeerNews>>,
    /// The listeners' authentication, for its counts.
    pub guard: Option<crate::http::guard::Guard>,
}

/// The whole node, as `/status` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Version of influx-ha.
    pub version: &'static str,
    /// This relay's name (`node_name`).
    pub node_name: String,
    /// When the process started, Unix seconds.
    pub started_at: u64,
    /// Seconds since then.
    pub uptime_seconds: u64,
    /// When this status was taken, Unix seconds.
    pub generated_at: u64,
    /// The one-line verdict and its reasons.
    pub summary: Summary,
    /// What `/health` answers.
    pub health: HealthStatus,
    /// The data directory and its free space.
    pub data_dir: DataDir,
    /// Every backend, in config order.
    pub backends: Vec<BackendStatus>,
    /// Every listener (HTTP, UDP, TCP).
    pub listeners: Vec<ListenerStatus>,
    /// Peer relays, as last heard of.
    pub peers: Vec<PeerStatus>,
    /// Request bodies held in memory against `[http] max_inflight_bytes`.
    pub request_bodies: Option<BodiesStatus>,
    /// The background comparison of the backends (`[anti_entropy]`), when on.
    pub anti_entropy: Option<crate::repair::background::AntiEntropyStatus>,
    /// Authentication (`[auth]`).
    pub auth: AuthStatus,
}

/// Authentication of requests.
#[derive(Debug, Clone, Serialize)]
pub struct AuthStatus {
    /// Whether `[auth]` is on.
    pub enabled: bool,
    /// Requests refused for their credentials since start (what they sent is never logged).
    pub refused_requests: u64,
}

/// Request bodies in memory against their cap.
#[derive(Debug, Clone, Serialize)]
pub struct BodiesStatus {
    /// Bytes held (or reserved by requests waiting for room) now.
    pub in_flight_bytes: u64,
    /// `[http] max_inflight_bytes`.
    pub max_inflight_bytes: u64,
    /// Requests that waited for room since start: the cap was reached.
    pub waited: u64,
    /// Requests answered 503 after `inflight_wait` without room since start.
    pub refused: u64,
}

/// The verdict at the top of the page.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// True when every backend is up and in sync and the node takes writes.
    pub ok: bool,
    /// `"all backends in sync"`, or the problems joined with `"; "`.
    pub text: String,
    /// One line per problem.
    pub problems: Vec<String>,
}

/// `/health`'s verdict.
#[derive(Debug, Clone, Serialize)]
pub struct HealthStatus {
    /// Whether the node takes writes durably.
    pub ok: bool,
    /// Why not.
    pub reason: Option<String>,
}

/// The data directory.
#[derive(Debug, Clone, Serialize)]
pub struct DataDir {
    /// Its path.
    pub path: String,
    /// Bytes free for the relay's user; `None` when it cannot be measured.
    pub free_bytes: Option<u64>,
}

/// Synchronisation state of a backend, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// An operator put it in maintenance: writes are queued, no reads served.
    Maintenance,
    /// It may miss data (see `diverged_reason`) until verify/repair.
    Diverged,
    /// It has writes queued on this node.
    CatchingUp,
    /// Nothing queued, nothing missing.
    InSync,
}

impl SyncState {
    /// The words the page shows.
    pub fn label(self) -> &'static str {
        match self {
            Self::Maintenance => "maintenance",
            Self::Diverged => "diverged",
            Self::CatchingUp => "catching up",
            Self::InSync => "in sync",
        }
    }
}

/// One backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// The configured name.
    pub name: String,
    /// Its URL (never with credentials).
    pub url: String,
    /// `"up"`, `"down"` or `"unknown"` (nothing sent or checked yet).
    pub reachability: &'static str,
    /// Since when, Unix seconds.
    pub reachability_since: Option<u64>,
    /// Why it is down.
    pub down_reason: Option<String>,
    /// Where reachability comes from: `"health_check"` or `"passive"` (last request).
    pub reachability_source: &'static str,
    /// In sync, catching up, diverged or maintenance.
    pub sync: SyncState,
    /// Why it may miss data.
    pub diverged_reason: Option<String>,
    /// Operator maintenance.
    pub maintenance: bool,
    /// New writes go behind its queue.
    pub queueing: bool,
    /// Whether reads may be served from it, and why not.
    pub fresh: bool,
    /// Why reads are not served from it.
    pub not_fresh_reason: Option<String>,
    /// This node's hinted-handoff queue for it.
    pub queue: QueueStatus,
    /// This node's dead letters for it.
    pub dead_letters: QueueStatus,
    /// Estimated seconds until the queue is empty at the current replay rate; `None` when it
    /// is empty, or not shrinking.
    pub catch_up_seconds: Option<f64>,
    /// Rates over the last minute; `None` until two samples exist.
    pub rates: Option<BackendRates>,
    /// Counters since start.
    pub totals: BackendTotals,
    /// The last delivery problem.
    pub last_error: Option<String>,
    /// What the peers last reported about it.
    pub peers: Vec<PeerReportStatus>,
}

/// Depth of one queue.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStatus {
    /// Records waiting.
    pub records: u64,
    /// Bytes waiting.
    pub bytes: u64,
    /// Age of the oldest waiting record, seconds.
    pub oldest_age_seconds: Option<f64>,
    /// A failed fsync made it refuse appends until restart.
    pub degraded: bool,
}

/// Per-second rates of one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendRates {
    /// Batches handed to it (sent directly or queued).
    pub writes_per_second: f64,
    /// Failed direct sends, failed replays and dead-lettered batches.
    pub errors_per_second: f64,
    /// Queued records delivered by the replay.
    pub replayed_records_per_second: f64,
    /// Records appended to its queue.
    pub queued_records_per_second: f64,
}

/// Counters of one backend since start.
#[derive(Debug, Clone, Serialize)]
pub struct BackendTotals {
    /// Batches it acknowledged directly.
    pub direct_ok: u64,
    /// Direct sends that failed (then queued).
    pub direct_failed: u64,
    /// Batches appended to its queue.
    pub queued: u64,
    /// Of those, appended because the direct send was slower than the level needed.
    pub insured: u64,
    /// Of those, acknowledged without a replay because their direct send succeeded first.
    pub insured_skipped: u64,
    /// Writes that found every backend behind its queue and waited for this one to catch up.
    pub catch_up_waits: u64,
    /// Queued batches it acknowledged.
    pub replayed_batches: u64,
    /// Of those, read from disk while the batch before was being sent.
    pub read_ahead: u64,
    /// Replay attempts that failed (retried).
    pub replay_errors: u64,
    /// Batches it refused for good, kept as dead letters.
    pub dead_lettered: u64,
}

/// A peer's report about one backend.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReportStatus {
    /// The peer.
    pub peer: String,
    /// Records it has queued for the backend.
    pub queued_records: u64,
    /// Whether it marks the backend diverged.
    pub diverged: bool,
    /// Whether it answered the last poll.
    pub reachable: bool,
}

/// One listener.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerStatus {
    /// `http`, `admin`, `udp` or `tcp`.
    pub kind: &'static str,
    /// Its address.
    pub addr: String,
    /// HTTP requests per second over the last minute (HTTP listeners).
    pub requests_per_second: Option<f64>,
    /// HTTP requests answered since start (HTTP listeners).
    pub requests: Option<u64>,
    /// Database its lines go to (UDP/TCP).
    pub database: Option<String>,
    /// Lines per second (UDP/TCP) over the last minute.
    pub lines_per_second: Option<f64>,
    /// Bytes per second (UDP/TCP) over the last minute.
    pub bytes_per_second: Option<f64>,
    /// Lines received since start (UDP/TCP).
    pub lines: Option<u64>,
    /// Lines refused since start (UDP/TCP).
    pub bad_lines: Option<u64>,
    /// Batches lost or refused since start (UDP/TCP).
    pub write_failures: Option<u64>,
    /// UDP datagrams dropped (overload or oversize) since start.
    pub dropped_datagrams: Option<u64>,
    /// TCP connections open now.
    pub open_connections: Option<u64>,
    /// TCP connections closed since start for a line longer than allowed, or for no room under
    /// `max_inflight_bytes` for their incomplete line.
    pub closed_connections: Option<u64>,
}

/// A peer relay.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Its name.
    pub name: String,
    /// Whether it answered the last poll.
    pub reachable: bool,
    /// When its last report arrived, Unix seconds; `None`: never.
    pub last_report: Option<u64>,
    /// Why its last poll failed, if it did.
    pub error: Option<String>,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Takes the counters the rates are computed from.
pub fn sample(sources: &Sources, listeners: &[ListenerStats], requests: &RequestMetrics) -> Sample {
    let mut s = Sample::default();
    for (kind, _) in &sources.http_listeners {
        s.insert(format!("h/{kind}/requests"), requests.requests(kind));
    }
    for r in sources.replicator.replicas().iter() {
        let c = totals(r);
        let q = r.queue().stats();
        let name = r.name();
        s.insert(format!("b/{name}/writes"), c.direct_ok + c.queued);
        s.insert(
            format!("b/{name}/errors"),
            c.direct_failed + c.replay_errors + c.dead_lettered,
        );
        s.insert(format!("b/{name}/acked"), q.acked_records);
        s.insert(format!("b/{name}/appended"), q.appended_records);
    }
    for l in listeners {
        let c = l.counters.snapshot();
        s.insert(format!("l/{}/{}/lines", l.kind, l.addr), c.lines);
        s.insert(format!("l/{}/{}/bytes", l.kind, l.addr), c.bytes);
    }
    s
}

fn totals(r: &Replica) -> BackendTotals {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &r.counters;
    BackendTotals {
        direct_ok: c.direct_ok.load(Relaxed),
        direct_failed: c.direct_failed.load(Relaxed),
        queued: c.queued.load(Relaxed),
        insured: c.insured.load(Relaxed),
        insured_skipped: c.insured_skipped.load(Relaxed),
        catch_up_waits: c.catch_up_waits.load(Relaxed),
        replayed_batches: c.replayed_batches.load(Relaxed),
        read_ahead: c.read_ahead.load(Relaxed),
        replay_errors: c.replay_errors.load(Relaxed),
        dead_lettered: c.dead_lettered.load(Relaxed),
    }
}

fn queue_status(stats: &handoff::Stats) -> QueueStatus {
    QueueStatus {
        records: stats.depth_records,
        bytes: stats.depth_bytes,
        oldest_age_seconds: stats.oldest_age.map(|d| d.as_secs_f64()),
        degraded: stats.degraded,
    }
}

/// Builds the status now; `rates` gives the per-second rates since its oldest sample.
pub fn collect(
    sources: &Sources,
    listeners: &[ListenerStats],
    rates: &Rates,
    requests: &RequestMetrics,
) -> NodeStatus {
    let now = SystemTime::now();
    let current = sample(sources, listeners, requests);
    let rate = |key: String| rates.rate(&key, &current, now);
    let board = sources.board.as_ref().map(StateBoard::load);
    let mut backends = Vec::new();
    for r in sources.replicator.replicas().iter() {
        let name = r.name().to_owned();
        let known = board.as_ref().and_then(|b| b.backend(&name)).cloned();
        let q = r.queue().stats();
        let dl = r.dead_letters().stats();
        let maintenance = r.in_maintenance();
        let diverged = r.diverged();
        let (reachability, since, down_reason, source) =
            match known.as_ref().map(|k| &k.reachability) {
                Some(Reachability::Up { since }) => {
                    ("up", Some(unix_secs(*since)), None, "health_check")
                }
                Some(Reachability::Down { since, reason }) => (
                    "down",
                    Some(unix_secs(*since)),
                    Some(reason.clone()),
                    "health_check",
                ),
                Some(Reachability::Unknown) | None => match r.link() {
                    (Link::Answered, ms) => ("up", Some(ms / 1000), None, "passive"),
                    (Link::Failed, ms) => ("down", Some(ms / 1000), r.last_error(), "passive"),
                    (Link::Unknown, _) => ("unknown", None, None, "passive"),
                },
            };
        let sync = if maintenance {
            SyncState::Maintenance
        } else if diverged.is_some() {
            SyncState::Diverged
        } else if q.depth_records > 0 {
            SyncState::CatchingUp
        } else {
            SyncState::InSync
        };
        let rates_now = match (
            rate(format!("b/{name}/writes")),
            rate(format!("b/{name}/errors")),
            rate(format!("b/{name}/acked")),
            rate(format!("b/{name}/appended")),
        ) {
            (Some(w), Some(e), Some(a), Some(p)) => Some(BackendRates {
                writes_per_second: w,
                errors_per_second: e,
                replayed_records_per_second: a,
                queued_records_per_second: p,
            }),
            _ => None,
        };
        // Only a backend that answers and is not held in maintenance catches up.
        let catching_up = reachability != "down" && !maintenance;
        let catch_up_seconds = match &rates_now {
            Some(r) if q.depth_records > 0 && catching_up => {
                let net = r.replayed_records_per_second - r.queued_records_per_second;
                (net > 0.0).then(|| q.depth_records as f64 / net)
            }
            _ => None,
        };
        // Freshness as the read path judges it: the board's reachability (a backend its health
        // checks have not reached yet serves no reads, whatever a write saw) and this node's
        // live queue, divergence and maintenance.
        let mut view = known.unwrap_or_else(|| {
            let mut v = crate::state::BackendState::new(name.clone(), r.client().url().to_string());
            v.reachability = match reachability {
                "up" => Reachability::Up {
                    since: UNIX_EPOCH + Duration::from_secs(since.unwrap_or(0)),
                },
                "down" => Reachability::Down {
                    since: UNIX_EPOCH + Duration::from_secs(since.unwrap_or(0)),
                    reason: down_reason.clone().unwrap_or_default(),
                },
                _ => Reachability::Unknown,
            };
            v
        });
        view.maintenance = maintenance;
        view.diverged.clone_from(&diverged);
        let pending = r.is_queueing() || q.depth_records > 0;
        view.queue.records = if pending { q.depth_records.max(1) } else { 0 };
        let freshness = view.freshness();
        backends.push(BackendStatus {
            url: r.client().url().to_string(),
            reachability,
            reachability_since: since,
            down_reason,
            reachability_source: source,
            sync,
            diverged_reason: diverged,
            maintenance,
            queueing: r.is_queueing(),
            fresh: freshness.is_ok(),
            not_fresh_reason: freshness.err(),
            queue: queue_status(&q),
            dead_letters: queue_status(&dl),
            catch_up_seconds,
            rates: rates_now,
            totals: totals(r),
            last_error: r.last_error(),
            peers: view
                .peers
                .iter()
                .map(|p| PeerReportStatus {
                    peer: p.peer.clone(),
                    queued_records: p.queue.records,
                    diverged: p.diverged,
                    reachable: p.reachable,
                })
                .collect(),
            name,
        });
    }

    let mut listener_list: Vec<ListenerStatus> = sources
        .http_listeners
        .iter()
        .map(|(kind, addr)| ListenerStatus {
            kind,
            addr: addr.clone(),
            requests_per_second: rate(format!("h/{kind}/requests")),
            requests: Some(requests.requests(kind)),
            database: None,
            lines_per_second: None,
            bytes_per_second: None,
            lines: None,
            bad_lines: None,
            write_failures: None,
            dropped_datagrams: None,
            open_connections: None,
            closed_connections: None,
        })
        .collect();
    for l in listeners {
        let c = l.counters.snapshot();
        // `udp` and `graphite-udp` receive datagrams; the others are connection-based.
        let udp = l.kind.ends_with("udp");
        // Prometheus remote write and OpenTSDB's /api/put are HTTP requests.
        let http = matches!(l.kind, "prometheus" | "opentsdb");
        listener_list.push(ListenerStatus {
            kind: l.kind,
            addr: l.addr.to_string(),
            requests_per_second: None,
            requests: http.then_some(c.requests),
            database: Some(l.database.clone()),
            lines_per_second: rate(format!("l/{}/{}/lines", l.kind, l.addr)),
            bytes_per_second: rate(format!("l/{}/{}/bytes", l.kind, l.addr)),
            lines: Some(c.lines),
            bad_lines: Some(c.bad_lines),
            write_failures: Some(c.write_failures),
            dropped_datagrams: udp.then_some(c.dropped_datagrams + c.oversize_datagrams),
            open_connections: (!udp && l.kind != "prometheus").then_some(c.open_connections),
            closed_connections: (!udp && l.kind != "prometheus")
                .then_some(c.closed_for_long_lines + c.closed_for_memory),
        });
    }

    let peers: Vec<PeerStatus> = board
        .as_ref()
        .map(|board| {
            board
                .peers
                .iter()
                .map(|p| PeerStatus {
                    name: p.name.clone(),
                    reachable: p.reachable,
                    last_report: p.last_report.map(unix_secs),
                    error: p.error.clone(),
                })
                .collect()
        })
        .unwrap_or_default();

    let health = match sources.health.status() {
        Ok(()) => HealthStatus {
            ok: true,
            reason: None,
        },
        Err(reason) => HealthStatus {
            ok: false,
            reason: Some(reason),
        },
    };
    let free_bytes = {
        use handoff::Filesystem;
        handoff::StdFs.available_space(&sources.data_dir).ok()
    };
    let summary = summarize(&backends, &health, &listener_list, &peers);
    NodeStatus {
        version: env!("CARGO_PKG_VERSION"),
        node_name: sources.node_name.clone(),
        started_at: unix_secs(sources.started),
        uptime_seconds: now
            .duration_since(sources.started)
            .map_or(0, |d| d.as_secs()),
        generated_at: unix_secs(now),
        summary,
        health,
        data_dir: DataDir {
            path: sources.data_dir.display().to_string(),
            free_bytes,
        },
        backends,
        listeners: listener_list,
        peers,
        request_bodies: sources.inflight.as_ref().map(|i| BodiesStatus {
            in_flight_bytes: i.in_use() as u64,
            max_inflight_bytes: i.capacity() as u64,
            waited: i.waited(),
            refused: i.refused(),
        }),
        anti_entropy: sources.anti_entropy.as_ref().map(|a| a.status()),
        auth: AuthStatus {
            enabled: sources.guard.as_ref().is_some_and(|g| g.auth_enabled()),
            refused_requests: sources.guard.as_ref().map_or(0, |g| g.auth_failures()),
        },
    }
}

/// `1 write`, `3 writes` (queue records are batches of writes).
fn writes(n: u64) -> String {
    if n == 1 {
        "1 write".to_owned()
    } else {
        format!("{n} writes")
    }
}

/// The verdict: what is wrong, most urgent first, in words an operator acts on.
fn summarize(
    backends: &[BackendStatus],
    health: &HealthStatus,
    listeners: &[ListenerStatus],
    peers: &[PeerStatus],
) -> Summary {
    let mut problems = Vec::new();
    if let Some(reason) = &health.reason {
        problems.push(format!("node does not take writes: {reason}"));
    }
    for b in backends {
        if b.reachability == "down" {
            problems.push(format!(
                "{}: down ({})",
                b.name,
                b.down_reason.as_deref().unwrap_or("no answer")
            ));
        }
        match b.sync {
            SyncState::Maintenance => problems.push(format!(
                "{}: in maintenance ({} queued)",
                b.name,
                writes(b.queue.records)
            )),
            SyncState::Diverged => {
                problems.push(format!(
                    "{}: diverged ({})",
                    b.name,
                    b.diverged_reason.as_deref().unwrap_or("")
                ));
                if b.queue.records > 0 {
                    problems.push(format!(
                        "{}: {} queued ({})",
                        b.name,
                        writes(b.queue.records),
                        human_size(b.queue.bytes)
                    ));
                }
            }
            SyncState::CatchingUp => {
                let eta = match b.catch_up_seconds {
                    Some(s) => format!(
                        ", done in about {}",
                        human_duration(Duration::from_secs(s.ceil() as u64))
                    ),
                    None => String::new(),
                };
                problems.push(format!(
                    "{}: catching up ({}, {} queued{})",
                    b.name,
                    writes(b.queue.records),
                    human_size(b.queue.bytes),
                    eta
                ));
            }
            // In sync here, yet not fresh: a peer has a queue for it, marks it diverged or
            // does not write to it.
            SyncState::InSync if b.reachability == "up" && !b.fresh => {
                problems.push(b.not_fresh_reason.clone().unwrap_or_default());
            }
            SyncState::InSync => {}
        }
        if b.queue.degraded {
            problems.push(format!(
                "{}: its queue is degraded (a failed fsync): restart the node",
                b.name
            ));
        }
        if b.dead_letters.records > 0 {
            problems.push(format!(
                "{}: {} dead letters (batches it refused)",
                b.name, b.dead_letters.records
            ));
        }
    }
    for p in peers.iter().filter(|p| !p.reachable) {
        let error = p.error.as_deref().unwrap_or("no answer");
        problems.push(match p.last_report {
            Some(_) => format!(
                "peer {}: unreachable ({error}); its last report stands",
                p.name
            ),
            None => format!(
                "peer {}: never reached ({error}); its queues are unknown",
                p.name
            ),
        });
    }
    for l in listeners {
        if l.write_failures.is_some_and(|n| n > 0) {
            problems.push(format!(
                "{} listener {}: {} batches could not be written",
                l.kind,
                l.addr,
                l.write_failures.unwrap_or(0)
            ));
        }
    }
    let ok = problems.is_empty() && backends.iter().all(|b| b.reachability != "unknown");
    let text = if problems.is_empty() {
        if ok {
            "all backends in sync".to_owned()
        } else {
            "all backends in sync (reachability not known yet for some)".to_owned()
        }
    } else {
        problems.join("; ")
    };
    Summary { ok, text, problems }
}

/// Shared, for the handler.
pub type SharedSources = Arc<Sources>;
