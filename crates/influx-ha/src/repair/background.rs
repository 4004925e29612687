//! The anti-entropy check (`[anti_entropy]`): at intervals, the recent past is compared on
//! every backend and what differs is copied back, so that replicas converge even where no
//! queue kept the difference (a write made straight to one InfluxDB, a restored disk).
//!
//! A check runs only while every backend is up, out of maintenance, not diverged and has
//! nothing queued on this node or on a peer: data still on its way is not a difference, and a
//! diverged backend may hold what the others deleted (a queued DELETE that failed on it), which
//! copying "the most complete" backend would bring back everywhere: its repair is the
//! operator's (`influx-ha repair`, which clears the flag). It verifies
//! `[now - window, now - settle)` of every database as `influx-ha verify --since --until`
//! does and, with `auto_repair`, copies what differs as `influx-ha repair` does (idempotent,
//! paced). It never clears a diverged flag: only a verify of all time can.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::conn::{Conn, Pacer, Traffic};
use super::progress::Progress;
use super::timespec::{format_span, now_ns};
use super::{RepairOptions, Report, Scope, repair, verify};
use crate::config::AntiEntropyConfig;
use crate::shutdown::Shutdown;
use crate::state::{ClusterState, Reachability, StateBoard};
use crate::write::Replicator;

/// Deadline of one request of a check (as `influx-ha verify --timeout`'s default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Counters and the last result, for `/status` and `/metrics`.
#[derive(Debug)]
pub struct AntiEntropyStats {
    config: AntiEntropyConfig,
    checks: AtomicU64,
    skipped: AtomicU64,
    differed: AtomicU64,
    failed: AtomicU64,
    points_copied: AtomicU64,
    last: Mutex<Option<LastCheck>>,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    /// The backends matched.
    InSync,
    /// They differed, and the repair made them match.
    Repaired,
    /// They differ (reported only, or the repair left differences).
    Differs,
    /// Not run: a backend was not in sync as far as the relays know.
    Skipped,
    /// It could not finish.
    Failed,
}

impl CheckResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::InSync => "in_sync",
            CheckResult::Repaired => "repaired",
            CheckResult::Differs => "differs",
            CheckResult::Skipped => "skipped",
            CheckResult::Failed => "failed",
        }
    }
}

/// What the last check (or skipped check) found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastCheck {
    /// When it ended, Unix seconds.
    pub at: u64,
    pub result: CheckResult,
    /// For people: what was compared, what differed and what was done, or why not.
    pub detail: String,
}

/// `[anti_entropy]` in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct AntiEntropyStatus {
    pub check_interval_seconds: u64,
    pub window_seconds: u64,
    pub settle_seconds: u64,
    pub auto_repair: bool,
    /// Checks that compared the backends.
    pub checks: u64,
    /// Of those, checks that found a difference.
    pub differed: u64,
    /// Checks not run because a backend was not in sync as far as the relays know.
    pub skipped: u64,
    /// Checks that could not finish (a backend stopped answering, say).
    pub failed: u64,
    /// Points written by repairs, counted once per backend written to.
    pub points_copied: u64,
    pub last: Option<LastCheck>,
}

impl AntiEntropyStats {
    pub fn new(config: AntiEntropyConfig) -> Self {
        Self {
            config,
            checks: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            differed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            points_copied: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    pub fn status(&self) -> AntiEntropyStatus {
        AntiEntropyStatus {
            check_interval_seconds: self.config.check_interval.as_secs(),
            window_seconds: self.config.window.as_secs(),
            settle_seconds: self.config.settle.as_secs(),
            auto_repair: self.config.auto_repair,
            checks: self.checks.load(Ordering::Relaxed),
            differed: self.differed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            points_copied: self.points_copied.load(Ordering::Relaxed),
            last: self
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn finish(&self, result: CheckResult, detail: String) {
        let counter = match result {
            CheckResult::Skipped => &self.skipped,
            CheckResult::Failed => &self.failed,
            CheckResult::InSync | CheckResult::Repaired | CheckResult::Differs => &self.checks,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if matches!(result, CheckResult::Repaired | CheckResult::Differs) {
            self.differed.fetch_add(1, Ordering::Relaxed);
        }
        let name = result.as_str();
        match result {
            CheckResult::InSync | CheckResult::Skipped => {
                tracing::debug!(result = name, %detail, "anti-entropy check");
            }
            CheckResult::Repaired => tracing::info!(result = name, %detail, "anti-entropy check"),
            CheckResult::Differs | CheckResult::Failed => {
                tracing::warn!(result = name, %detail, "anti-entropy check");
            }
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(LastCheck { at, result, detail });
    }
}

/// Why no check may run now, if so: a backend down, in maintenance, diverged (here or on a
/// peer), or with writes queued for it here or on a peer.
fn not_in_sync(state: &ClusterState) -> Option<String> {
    state.backends.iter().find_map(|b| {
        let why = match &b.reachability {
            Reachability::Up { .. } if b.maintenance => "in maintenance".to_owned(),
            Reachability::Up { .. }
                if b.diverged.is_some() || b.peers.iter().any(|p| p.diverged) =>
            {
                "diverged: run influx-ha repair".to_owned()
            }
            Reachability::Up { .. } if b.queue.is_pending() => {
                format!("{} queued writes", b.queue.records)
            }
            Reachability::Up { .. } => {
                let p = b.peers.iter().find(|p| p.queue.is_pending())?;
                format!(
                    "peer {} has {} queued writes for it",
                    p.peer, p.queue.records
                )
            }
            Reachability::Unknown => "not checked yet".to_owned(),
            Reachability::Down { reason, .. } => format!("down ({reason})"),
        };
        Some(format!("{}: {why}", b.name))
    })
}

/// The check's task: runs until `shutdown`.
pub async fn run(
    stats: Arc<AntiEntropyStats>,
    replicator: Replicator,
    board: StateBoard,
    mut shutdown: Shutdown,
) {
    let config = stats.config.clone();
    let mut seed = now_ns().unsigned_abs() | 1;
    loop {
        // Up to a tenth more, so that relays started together do not check together.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let jitter = config
            .check_interval
            .mul_f64((seed % 1000) as f64 / 10_000.0);
        tokio::select! {
            () = shutdown.recv() => return,
            () = tokio::time::sleep(config.check_interval + jitter) => {}
        }
        tokio::select! {
            () = shutdown.recv() => return,
            () = check(&stats, &replicator, &board) => {}
        }
    }
}

/// One check, recorded in `stats`.
pub async fn check(stats: &AntiEntropyStats, replicator: &Replicator, board: &StateBoard) {
    let replicas = replicator.replicas();
    // This node's own state as it is now, not as of the board's last round: a backend marked
    // diverged a moment ago (a purge) may hold what the others deleted.
    let local_queue = replicas.iter().find_map(|r| {
        if r.diverged().is_some() {
            Some(format!("{}: diverged: run influx-ha repair", r.name()))
        } else if r.is_queueing() || r.queue().has_pending() {
            Some(format!("{}: writes queued", r.name()))
        } else {
            None
        }
    });
    if let Some(why) = local_queue.or_else(|| not_in_sync(&board.load())) {
        stats.finish(CheckResult::Skipped, why);
        return;
    }
    if replicas.len() < 2 {
        stats.finish(CheckResult::Skipped, "fewer than two backends".to_owned());
        return;
    }
    let config = &stats.config;
    let pacer = Arc::new(Pacer::new(config.rate));
    let traffic = Arc::new(Traffic::default());
    let conns: Vec<Conn> = replicas
        .iter()
        .map(|r| {
            Conn::new(
                r.client().with_request_timeout(REQUEST_TIMEOUT),
                pacer.clone(),
                traffic.clone(),
            )
        })
        .collect();
    let now = now_ns();
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let scope = Scope {
        db: None,
        since: now.saturating_sub(nanos(config.window)),
        until: now.saturating_sub(nanos(config.settle)),
    };
    let span = if config.settle.is_zero() {
        format!("the last {}", format_span(nanos(config.window)))
    } else {
        format!(
            "from {} to {} ago",
            format_span(nanos(config.window)),
            format_span(nanos(config.settle))
        )
    };
    if !config.auto_repair {
        match verify(&conns, &traffic, &scope).await {
            Ok(r) if r.matches() => stats.finish(CheckResult::InSync, compared(&r, &span)),
            Ok(r) => stats.finish(
                CheckResult::Differs,
                format!("{}; {}", compared(&r, &span), found(&r)),
            ),
            Err(e) => stats.finish(CheckResult::Failed, e.to_string()),
        }
        return;
    }
    let progress = Progress::new(false);
    match repair(
        &conns,
        &traffic,
        &scope,
        &RepairOptions::default(),
        &progress,
    )
    .await
    {
        Ok(o) if o.before.matches() => {
            stats.finish(CheckResult::InSync, compared(&o.before, &span))
        }
        Ok(o) => {
            stats.points_copied.fetch_add(o.points, Ordering::Relaxed);
            let mut detail = format!(
                "{}; {}; copied {} points and {} schema statements in {} passes",
                compared(&o.before, &span),
                found(&o.before),
                o.points,
                o.statements,
                o.passes
            );
            for f in &o.failures {
                detail.push_str(&format!("; not copied: {f}"));
            }
            if o.after.matches() {
                stats.finish(CheckResult::Repaired, detail);
            } else {
                detail.push_str(&format!("; still differing: {}", found(&o.after)));
                stats.finish(CheckResult::Differs, detail);
            }
        }
        Err(e) => stats.finish(CheckResult::Failed, e.to_string()),
    }
}

fn compared(r: &Report, span: &str) -> String {
    format!("compared {}, {span}", count(r.windows_compared, "window"))
}

fn found(r: &Report) -> String {
    format!(
        "{} and {} differing ({} missing)",
        count(r.schema.len() as u64, "schema difference"),
        count(r.windows.len() as u64, "window"),
        count(r.missing_values(), "value")
    )
}

/// `1 window`, `3 windows`.
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::state::{BackendState, PeerReport, QueueDepth};

    fn up(name: &str) -> BackendState {
        let mut b = BackendState::new(name, "http://127.0.0.1:1");
        b.reachability = Reachability::Up {
            since: SystemTime::now(),
        };
        b
    }

    fn cluster(backends: Vec<BackendState>) -> ClusterState {
        ClusterState {
            backends,
            peers: Vec::new(),
            taken: SystemTime::now(),
        }
    }

    #[test]
    fn checks_run_only_while_every_backend_is_up_and_has_nothing_queued() {
        let queued = QueueDepth {
            records: 3,
            ..QueueDepth::default()
        };
        assert_eq!(not_in_sync(&cluster(vec![up("a"), up("b")])), None);
        let mut diverged = up("b");
        diverged.diverged = Some("a queued statement failed".to_owned());
        let mut diverged_on_peer = up("b");
        diverged_on_peer.peers.push(PeerReport {
            peer: "relay-2".to_owned(),
            queue: QueueDepth::default(),
            diverged: true,
            received: SystemTime::now(),
            reachable: true,
        });

        let mut down = up("b");
        down.reachability = Reachability::Down {
            since: SystemTime::now(),
            reason: "connection refused".to_owned(),
        };
        let mut maintenance = up("b");
        maintenance.maintenance = true;
        let mut catching_up = up("b");
        catching_up.queue = queued;
        let mut peer_queue = up("b");
        peer_queue.peers.push(PeerReport {
            peer: "relay-2".to_owned(),
            queue: queued,
            diverged: false,
            received: SystemTime::now(),
            reachable: true,
        });
        for (b, why) in [
            (
                BackendState::new("b", "http://127.0.0.1:1"),
                "b: not checked yet",
            ),
            (down, "b: down (connection refused)"),
            (maintenance, "b: in maintenance"),
            (diverged, "b: diverged: run influx-ha repair"),
            (diverged_on_peer, "b: diverged: run influx-ha repair"),
            (catching_up, "b: 3 queued writes"),
            (peer_queue, "b: peer relay-2 has 3 queued writes for it"),
        ] {
            assert_eq!(
                not_in_sync(&cluster(vec![up("a"), b])).as_deref(),
                Some(why)
            );
        }
    }
}
