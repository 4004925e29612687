//! The one task that keeps the [`StateBoard`] current (DESIGN.md §6): every
//! `[health] interval` it
//!
//! - checks every backend (`GET /ping` with the backend's service credentials, answered 204
//!   within `[health] timeout`), counting as failures too the errors the read path reported
//!   ([`PassiveMarks`]) and the failed direct writes and replays the write path counted since
//!   the last round; a backend turns down after `fall` consecutive failed rounds and up again
//!   after `rise` good ones ([`Hysteresis`]); the first round after start decides at once;
//! - copies each backend's queue depth, dead letters, divergence flag, maintenance flag and
//!   last error from the write path's [`Replica`];
//! - asks every peer relay for its queue report ([`crate::peers`]) and records, per backend,
//!   what each peer last said (an unreachable peer's last report stands); it also asks at once
//!   when a peer says its queues changed ([`Monitor::peers_changed`]).
//!
//! Readers never wait for this task: they load the board's snapshot. The read path also looks
//! at this node's queues directly (not only at the last snapshot), so that a write queued a
//! moment ago already keeps reads away from that backend.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;

use crate::backend::BackendClient;
use crate::config::HealthConfig;
use crate::peers::{QueueReport, fetch_report};
use crate::shutdown::Shutdown;
use crate::state::{
    BackendState, ClusterState, PeerContact, PeerReport, QueueDepth, Reachability, StateBoard,
};
use crate::write::replica::Replica;

// === impl PassiveMarks ===

/// Failures the read path saw on each backend (connection errors, 5xx), for the monitor to
/// count at its next round. Cheap to clone; indexed by backend, in config order.
#[derive(Debug, Clone)]
pub struct PassiveMarks {
    slots: Arc<Vec<Slot>>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Failures since the monitor last looked.
    failures: AtomicU64,
    /// The latest one, for operators.
    reason: Mutex<Option<String>>,
}

impl PassiveMarks {
    /// Marks for `n` backends.
    pub fn new(n: usize) -> Self {
        Self {
            slots: Arc::new((0..n).map(|_| Slot::default()).collect()),
        }
    }

    /// Records a failure of backend `index` (config order).
    pub fn failure(&self, index: usize, reason: String) {
        if let Some(slot) = self.slots.get(index) {
            slot.failures.fetch_add(1, Ordering::Relaxed);
            *slot.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        }
    }

    /// Failures of backend `index` since the last call, and the latest reason.
    fn take(&self, index: usize) -> (u64, Option<String>) {
        match self.slots.get(index) {
            Some(slot) => (
                slot.failures.swap(0, Ordering::Relaxed),
                slot.reason
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            ),
            None => (0, None),
        }
    }
}

// === impl Hysteresis ===

/// Up/down with rise and fall thresholds, so that a flapping backend does not flap routing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hysteresis {
    /// The current verdict; `None` before the first observation.
    up: Option<bool>,
    /// Consecutive good rounds while down.
    good: u32,
    /// Consecutive failed rounds while up.
    bad: u32,
}

impl Hysteresis {
    /// Starts from a verdict already reached (by the monitor a config reload replaced): the
    /// next round does not decide alone, `rise`/`fall` rounds do.
    pub fn from_verdict(up: bool) -> Self {
        Hysteresis {
            up: Some(up),
            ..Hysteresis::default()
        }
    }

    /// Feeds one round's result; returns whether the backend counts as up now.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        match self.up {
            None => {
                self.up = Some(ok);
            }
            Some(true) if ok => self.bad = 0,
            Some(true) => {
                self.bad += 1;
                if self.bad >= fall {
                    self.up = Some(false);
                    self.bad = 0;
                    self.good = 0;
                }
            }
            Some(false) if !ok => self.good = 0,
            Some(false) => {
                self.good += 1;
                if self.good >= rise {
                    self.up = Some(true);
                    self.bad = 0;
                    self.good = 0;
                }
            }
        }
        self.up == Some(true)
    }
}

// === impl Monitor ===

/// A peer relay and the client its reports are fetched with.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its configured name.
    pub name: String,
    /// A client for its admin address.
    pub client: BackendClient,
}

/// What the monitor remembers between rounds.
#[derive(Debug, Default)]
struct Memory {
    /// Per backend: its up/down verdict.
    verdicts: Vec<Hysteresis>,
    /// Per backend: failed direct writes plus failed replays, as last counted.
    write_failures: Vec<u64>,
    /// Per backend: its pings that failed in a row, as of the last round.
    ping_failures: Vec<u32>,
    /// Per peer name: its last report, when it came, and whether the peer was last heard from
    /// (its last poll answered, or a notice came since).
    reports: HashMap<String, (QueueReport, SystemTime, bool)>,
    /// Per peer name: why its last poll failed (absent once it answers).
    peer_errors: HashMap<String, String>,
    /// Per peer name: when the question whose answer was last recorded was asked.
    asked: HashMap<String, tokio::time::Instant>,
}

/// A peer's name, when it was asked, and its report or why there is none.
type PeerAnswer = (String, tokio::time::Instant, Result<QueueReport, String>);

/// The peer polls out: at most one per peer, plus whether it is to be asked again once that
/// one is answered.
#[derive(Default)]
struct PeerPolls {
    polls: JoinSet<PeerAnswer>,
    /// Per poll out: its peer and when it was asked (a poll that panicked still answers).
    out: HashMap<tokio::task::Id, (Peer, tokio::time::Instant)>,
    /// Peers to ask again when their poll out is answered.
    again: HashMap<String, Duration>,
}

impl PeerPolls {
    fn is_empty(&self) -> bool {
        self.polls.is_empty()
    }

    fn ask(&mut self, peer: &Peer, timeout: Duration) {
        if self.out.values().any(|(p, _)| p.name == peer.name) {
            self.again.insert(peer.name.clone(), timeout);
            return;
        }
        let asked = tokio::time::Instant::now();
        let client = peer.client.clone();
        let name = peer.name.clone();
        let handle = self.polls.spawn(async move {
            let r = fetch_report(&client, timeout).await;
            (name, asked, r)
        });
        self.out.insert(handle.id(), (peer.clone(), asked));
    }

    /// The next answer; pending until there is one (never call it while empty).
    async fn next(&mut self) -> PeerAnswer {
        loop {
            let (id, answer) = match self.polls.join_next_with_id().await {
                Some(Ok((id, answer))) => (id, Some(answer)),
                Some(Err(e)) => (e.id(), None),
                None => return std::future::pending().await,
            };
            let Some((peer, asked)) = self.out.remove(&id) else {
                continue;
            };
            if let Some(timeout) = self.again.remove(&peer.name) {
                self.ask(&peer, timeout);
            }
            return answer.unwrap_or_else(|| (peer.name, asked, Err("the poll failed".to_owned())));
        }
    }
}

/// The task that keeps the board current.
#[derive(Debug)]
pub struct Monitor {
    /// Where the state is published.
    pub board: StateBoard,
    /// One client per backend, config order.
    pub clients: Vec<BackendClient>,
    /// The write path's replica of each backend, config order (empty without a write path).
    pub replicas: Vec<Arc<Replica>>,
    /// Peer relays.
    pub peers: Vec<Peer>,
    /// Failures reported by the read path.
    pub marks: PassiveMarks,
    /// Interval, timeout, thresholds.
    pub health: HealthConfig,
    /// Where the peers' last reports are kept across restarts (`None`: not kept).
    pub reports_file: Option<PathBuf>,
    /// Notices of peers whose queues changed (`POST /admin/v1/queues/changed`): the report a
    /// notice carries counts at once; without one, the peers are asked for theirs at once
    /// instead of at the next round.
    pub peers_changed: Arc<crate::peers::PeerNews>,
}

/// Name of the file under `data_dir` that keeps the peers' last reports.
pub const PEER_REPORTS_FILE: &str = "peer-reports.json";

/// A peer's last report as kept on disk.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedReport {
    /// The report.
    report: QueueReport,
    /// When it was received, Unix milliseconds.
    received_unix_ms: u64,
}

/// The kept reports of the peers still configured, as unreachable until polled again.
fn load_reports(path: &Path, peers: &[Peer]) -> HashMap<String, (QueueReport, SystemTime, bool)> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the peers' last reports");
            return HashMap::new();
        }
    };
    let saved: HashMap<String, SavedReport> = match serde_json::from_slice(&text) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "unreadable peer reports: ignored");
            return HashMap::new();
        }
    };
    saved
        .into_iter()
        .filter(|(name, _)| peers.iter().any(|p| &p.name == name))
        .map(|(name, s)| {
            let received = UNIX_EPOCH + Duration::from_millis(s.received_unix_ms);
            (name, (s.report, received, false))
        })
        .collect()
}

/// The configured peer that sent `report` with its notice: the one whose last report came
/// from the same process. The node name alone does not tell (relays on one host share the
/// default), nor the address a notice came from; a relay not yet polled since it started is
/// asked instead.
fn sender(memory: &Memory, report: &QueueReport) -> Option<String> {
    let instance = report.instance.as_deref()?;
    let mut from = memory
        .reports
        .iter()
        .filter(|(_, (r, _, _))| r.node == report.node && r.instance.as_deref() == Some(instance))
        .map(|(peer, _)| peer);
    match (from.next(), from.next()) {
        (Some(peer), None) => Some(peer.clone()),
        _ => None,
    }
}

/// Whether two reports come from one process, both numbered.
fn same_process(a: &QueueReport, b: &QueueReport) -> bool {
    a.instance.is_some() && a.instance == b.instance && a.seq.is_some() && b.seq.is_some()
}

/// What in a peer's report counts for reads here: per backend, whether anything is queued for
/// it, whether it diverged, whether it is in maintenance.
fn what_counts(report: &QueueReport) -> Vec<(&str, bool, bool, bool)> {
    report
        .backends
        .iter()
        .map(|b| {
            (
                b.name.as_str(),
                b.queue_records > 0,
                b.diverged,
                b.maintenance,
            )
        })
        .collect()
}

/// Keeps the peers' last reports (written aside, then renamed over the old file).
fn save_reports(path: &Path, reports: &HashMap<String, (QueueReport, SystemTime, bool)>) {
    let saved: HashMap<&str, SavedReport> = reports
        .iter()
        .map(|(name, (report, received, _))| {
            let ms = received
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            (
                name.as_str(),
                SavedReport {
                    report: report.clone(),
                    received_unix_ms: ms,
                },
            )
        })
        .collect();
    // Synced, file and directory: after a power loss the last reports must still be there,
    // since they are what stands for a peer that cannot be reached at the next start.
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let written = serde_json::to_string(&saved)
        .map_err(std::io::Error::other)
        .and_then(|text| crate::write::flags::write(dir, name, &text));
    if let Err(e) = written {
        tracing::warn!(file = %path.display(), error = %e, "cannot keep the peers' last reports");
    }
}

/// The board's initial state for `clients`: nothing checked yet.
pub fn initial_states(clients: &[BackendClient]) -> Vec<BackendState> {
    clients
        .iter()
        .map(|c| BackendState::new(c.name(), c.url().to_string()))
        .collect()
}

/// What the write path knows of a backend, copied onto its state: divergence, maintenance,
/// queue and dead letters.
pub(crate) fn copy_replica_state(b: &mut BackendState, r: &Replica) {
    b.diverged = r.diverged();
    b.maintenance = r.in_maintenance();
    b.queue = queue_depth(&r.queue().stats());
    b.dead_letters = queue_depth(&r.dead_letters().stats());
}

pub(crate) fn queue_depth(stats: &handoff::Stats) -> QueueDepth {
    QueueDepth {
        records: stats.depth_records,
        bytes: stats.depth_bytes,
        oldest_age: stats.oldest_age,
    }
}

impl Monitor {
    /// Runs rounds until `shutdown`.
    pub async fn run(self, mut shutdown: Shutdown) {
        // A backend the board already has a verdict for (this monitor replaces one after a
        // config reload) keeps it: one failed check right after a reload does not take a
        // healthy backend down, nor one good check bring a flapping one back.
        let board = self.board.load();
        let verdicts = self
            .clients
            .iter()
            .map(|c| match board.backend(c.name()).map(|b| &b.reachability) {
                Some(Reachability::Up { .. }) => Hysteresis::from_verdict(true),
                Some(Reachability::Down { .. }) => Hysteresis::from_verdict(false),
                _ => Hysteresis::default(),
            })
            .collect();
        drop(board);
        let mut memory = Memory {
            verdicts,
            write_failures: self.replicas.iter().map(|r| write_failures(r)).collect(),
            ping_failures: vec![0; self.clients.len()],
            reports: self
                .reports_file
                .as_deref()
                .map(|f| load_reports(f, &self.peers))
                .unwrap_or_default(),
            peer_errors: HashMap::new(),
            asked: HashMap::new(),
        };
        let mut ticker = tokio::time::interval(self.health.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls = PeerPolls::default();
        loop {
            tokio::select! {
                // First: a monitor told to stop takes no more news (the one that replaces it
                // after a reload would not have them).
                biased;
                () = shutdown.recv() => return,
                _ = ticker.tick() => self.round(&mut memory, &mut polls, &mut shutdown).await,
                () = self.peers_changed.notified() => self.news(&mut memory, &mut polls).await,
                answer = polls.next(), if !polls.is_empty() => self.heard(&mut memory, answer).await,
            }
        }
    }

    /// Asks every peer for its report, unless a poll of it is already out; then it is asked
    /// again once that one is answered (the change that prompted this may have come after
    /// the running poll was answered).
    fn ask_peers(&self, polls: &mut PeerPolls) {
        let timeout = self.health.timeout.max(Duration::from_secs(1));
        for peer in &self.peers {
            polls.ask(peer, timeout);
        }
    }

    /// Takes what peers told: each report sent with a notice counts as an answer that came
    /// then, for the peer it came from; the peers are asked when a notice came without one,
    /// or with one that cannot be told apart as a peer's.
    async fn news(&self, memory: &mut Memory, polls: &mut PeerPolls) {
        let (reports, mut ask) = self.peers_changed.take();
        for (report, received) in reports {
            match sender(memory, &report) {
                Some(peer) => self.heard(memory, (peer, received, Ok(report))).await,
                None => ask = true,
            }
        }
        if ask {
            self.ask_peers(polls);
        }
    }

    /// Records a peer's answer and publishes it at once: a peer that does not answer holds
    /// up no other. Then, when what it says changed in a way that counts for reads, keeps the
    /// reports on disk.
    async fn heard(&self, memory: &mut Memory, answer: PeerAnswer) {
        let changed = self.record_peer(memory, answer);
        self.board.update(|state| self.publish_peers(state, memory));
        if let (true, Some(file)) = (changed, &self.reports_file) {
            let (file, reports) = (file.clone(), memory.reports.clone());
            let _ = tokio::task::spawn_blocking(move || save_reports(&file, &reports)).await;
        }
    }

    /// Records what a peer answered; returns whether its report changed in what counts for
    /// reads (which backends it names, and for each whether anything is queued, whether it
    /// diverged, whether it is in maintenance). An answer to a question asked before the one
    /// already recorded is older news: it is left out.
    fn record_peer(&self, memory: &mut Memory, (name, asked, r): PeerAnswer) -> bool {
        let asked_before = memory.asked.get(&name).is_some_and(|last| *last > asked);
        let newer = match (&r, memory.reports.get(&name)) {
            // Two reports of one process: their numbers say which read the queues later (a
            // report sent with a notice is built before it arrives, a poll's answer after
            // it was asked).
            (Ok(new), Some((old, _, _))) if same_process(new, old) => new.seq > old.seq,
            _ => !asked_before,
        };
        if !newer {
            return false;
        }
        if !asked_before {
            memory.asked.insert(name.clone(), asked);
        }
        match r {
            Ok(report) => {
                if memory.peer_errors.remove(&name).is_some() {
                    tracing::info!(peer = %name, "peer reached");
                }
                let changed = memory
                    .reports
                    .get(&name)
                    .is_none_or(|old| what_counts(&old.0) != what_counts(&report));
                memory
                    .reports
                    .insert(name, (report, SystemTime::now(), true));
                changed
            }
            Err(e) => {
                let first = memory.peer_errors.insert(name.clone(), e.clone()).is_none();
                if let Some(entry) = memory.reports.get_mut(&name) {
                    if entry.2 {
                        tracing::warn!(peer = %name, error = %e, "peer unreachable: its last queue report stands");
                    }
                    entry.2 = false;
                } else if first {
                    // Nothing it reports can keep reads from a backend it queues for: say so.
                    tracing::warn!(peer = %name, error = %e, "peer never reached: its queues are unknown");
                }
                false
            }
        }
    }

    /// One round: checks and peer polls, then one new snapshot.
    async fn round(&self, memory: &mut Memory, polls: &mut PeerPolls, shutdown: &mut Shutdown) {
        for r in &self.replicas {
            r.persist_diverged_later();
        }
        let timeout = self.health.timeout;
        let mut pings = JoinSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let client = client.clone();
            pings.spawn(async move {
                let result = match tokio::time::timeout(timeout, client.ping()).await {
                    Ok(Ok(a)) if a.status.as_u16() == 204 => Ok(()),
                    Ok(Ok(a)) => Err(format!("/ping answered {}", a.status)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("/ping not answered within {timeout:?}")),
                };
                (i, result)
            });
        }
        // The peers are asked while the pings are out, and the round waits for both. Each
        // peer's answer counts as it comes, and a peer that says its queues changed meanwhile
        // is asked again at once: neither a ping nor another peer that takes up to the
        // timeout holds up what keeps reads fresh.
        let mut checks: Vec<Result<(), String>> =
            vec![Err("health check failed".to_owned()); self.clients.len()];
        let round_asked = tokio::time::Instant::now();
        self.ask_peers(polls);
        let mut waiting: Vec<&str> = self.peers.iter().map(|p| p.name.as_str()).collect();
        let mut pinging = true;
        while !waiting.is_empty() || pinging {
            tokio::select! {
                biased;
                // A round cut short publishes nothing: the monitor is stopping.
                () = shutdown.recv() => return,
                answer = polls.next(), if !polls.is_empty() => {
                    if answer.1 >= round_asked {
                        waiting.retain(|name| *name != answer.0);
                    }
                    self.heard(memory, answer).await;
                }
                ping = pings.join_next(), if pinging => match ping {
                    Some(Ok((i, r))) => checks[i] = r,
                    Some(Err(_)) => {}
                    None => pinging = false,
                },
                () = self.peers_changed.notified() => self.news(memory, polls).await,
            }
        }

        let mut rounds = Vec::with_capacity(self.clients.len());
        for (i, check) in checks.into_iter().enumerate() {
            let (passive, passive_reason) = self.marks.take(i);
            // As many failed pings in a row as take a backend down: one slow ping of a backend
            // that is down for failed requests (busy, say) does not count.
            let pings_failing = match memory.ping_failures.get_mut(i) {
                Some(n) if check.is_err() => {
                    *n = n.saturating_add(1);
                    *n >= self.health.fall
                }
                Some(n) => {
                    *n = 0;
                    false
                }
                None => check.is_err(),
            };
            let mut problem = check.err();
            if problem.is_none() && passive > 0 {
                problem = Some(passive_reason.unwrap_or_else(|| "request failed".to_owned()));
            }
            if let (Some(r), Some(last)) = (self.replicas.get(i), memory.write_failures.get_mut(i))
            {
                let now = write_failures(r);
                if now > *last && problem.is_none() {
                    problem = Some(
                        r.last_error()
                            .unwrap_or_else(|| "writes to it failed".to_owned()),
                    );
                }
                *last = now;
            }
            let (rise, fall) = (self.health.rise, self.health.fall);
            let up = memory.verdicts[i].observe(problem.is_none(), rise, fall);
            // A replayed statement stops waiting only for a backend that does not answer its
            // pings: one that is down for failed requests may just be busy running it.
            if let Some(r) = self.replicas.get(i) {
                r.set_down(!up && pings_failing);
            }
            rounds.push((up, problem));
        }

        let now = SystemTime::now();
        self.board.update(|state| {
            for b in state.backends.iter_mut() {
                // By name: a config reload may have changed the board's backends while this
                // round ran (a new monitor takes over for the new set).
                let Some(i) = self.clients.iter().position(|c| c.name() == b.name) else {
                    continue;
                };
                let Some((up, problem)) = rounds.get(i) else {
                    continue;
                };
                b.reachability = match (&b.reachability, up) {
                    (Reachability::Up { since }, true) => Reachability::Up { since: *since },
                    (_, true) => {
                        tracing::info!(backend = %b.name, "backend is up");
                        // Its replay may sit in a backoff of up to 30 s from the outage:
                        // start catching up now.
                        if let Some(r) = self.replicas.get(i) {
                            r.kick();
                        }
                        Reachability::Up { since: now }
                    }
                    (Reachability::Down { since, .. }, false) => Reachability::Down {
                        since: *since,
                        reason: problem.clone().unwrap_or_else(|| "recovering".to_owned()),
                    },
                    (_, false) => {
                        let reason = problem.clone().unwrap_or_else(|| "recovering".to_owned());
                        tracing::warn!(backend = %b.name, %reason, "backend is down");
                        Reachability::Down { since: now, reason }
                    }
                };
                if let Some(p) = problem {
                    b.last_error = Some(p.clone());
                }
                if let Some(r) = self.replicas.get(i) {
                    copy_replica_state(b, r);
                    if problem.is_none() && b.last_error.is_none() {
                        b.last_error = r.last_error();
                    }
                }
            }
            self.publish_peers(state, memory);
        });
    }

    /// Copies what the peers last reported onto `state`: every configured peer's contact, and
    /// per backend the peers' queues for it and the peers that do not write to it.
    fn publish_peers(&self, state: &mut ClusterState, memory: &Memory) {
        state.peers = self
            .peers
            .iter()
            .map(|p| {
                let report = memory.reports.get(&p.name);
                PeerContact {
                    name: p.name.clone(),
                    last_report: report.map(|r| r.1),
                    reachable: report.is_some_and(|r| r.2),
                    error: memory.peer_errors.get(&p.name).cloned(),
                }
            })
            .collect();
        for b in state.backends.iter_mut() {
            b.peers = peer_states(&memory.reports, &b.name);
            b.absent_on_peers = absent_on_peers(&memory.reports, &b.name);
        }
    }
}

/// The peers whose last report does not name `backend`, sorted.
fn absent_on_peers(
    reports: &HashMap<String, (QueueReport, SystemTime, bool)>,
    backend: &str,
) -> Vec<String> {
    let mut peers: Vec<String> = reports
        .iter()
        .filter(|(_, (report, _, _))| !report.backends.iter().any(|rb| rb.name == backend))
        .map(|(peer, _)| peer.clone())
        .collect();
    peers.sort();
    peers
}

/// What every peer last said about `backend`, by peer name.
fn peer_states(
    reports: &HashMap<String, (QueueReport, SystemTime, bool)>,
    backend: &str,
) -> Vec<PeerReport> {
    let mut peers: Vec<PeerReport> = reports
        .iter()
        .filter_map(|(peer, (report, received, reachable))| {
            let rb = report.backends.iter().find(|rb| rb.name == backend)?;
            Some(PeerReport {
                peer: peer.clone(),
                queue: QueueDepth {
                    records: rb.queue_records,
                    bytes: rb.queue_bytes,
                    // A peer's figure is input: one out of range (negative, NaN, past
                    // `Duration::MAX`) is left out rather than panicking the monitor.
                    oldest_age: rb
                        .oldest_age_seconds
                        .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                },
                diverged: rb.diverged,
                received: *received,
                reachable: *reachable,
            })
        })
        .collect();
    peers.sort_by(|x, y| x.peer.cmp(&y.peer));
    peers
}

/// Failed direct writes plus failed replays of a replica so far.
fn write_failures(r: &Replica) -> u64 {
    r.counters.direct_failed.load(Ordering::Relaxed)
        + r.counters.replay_errors.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut h = Hysteresis::default();
        assert!(h.observe(true, 2, 3), "the first round decides");
        assert!(h.observe(false, 2, 3));
        assert!(h.observe(false, 2, 3));
        assert!(h.observe(true, 2, 3), "a good round resets the failures");
        assert!(h.observe(false, 2, 3));
        assert!(h.observe(false, 2, 3));
        assert!(!h.observe(false, 2, 3), "third failure in a row: down");
        assert!(!h.observe(true, 2, 3));
        assert!(!h.observe(false, 2, 3), "a failure resets the good rounds");
        assert!(!h.observe(true, 2, 3));
        assert!(h.observe(true, 2, 3), "second good round in a row: up");
        let mut first_bad = Hysteresis::default();
        assert!(!first_bad.observe(false, 2, 2));
    }

    /// A client named `name` for a port nothing listens on.
    fn unreachable(name: &str) -> BackendClient {
        let config = crate::config::BackendConfig {
            name: name.into(),
            url: crate::config::BackendUrl {
                scheme: crate::config::Scheme::Http,
                host: "127.0.0.1".into(),
                port: 1,
                base_path: String::new(),
            },
            credentials: None,
            ca_file: None,
        };
        let timeouts = crate::backend::Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
        };
        BackendClient::new(&config, timeouts).expect("client")
    }

    /// A monitor of `clients` (and their `replicas`, if any) checking every hour with rise and
    /// fall 1, a board of its own and nothing else: tests change what they need.
    fn monitor_of(clients: Vec<BackendClient>, replicas: Vec<Arc<Replica>>) -> Monitor {
        Monitor {
            board: StateBoard::new(initial_states(&clients)),
            marks: PassiveMarks::new(clients.len()),
            clients,
            replicas,
            peers: Vec::new(),
            health: HealthConfig {
                interval: Duration::from_secs(3600),
                timeout: Duration::from_secs(10),
                rise: 1,
                fall: 1,
            },
            reports_file: None,
            peers_changed: Arc::new(crate::peers::PeerNews::default()),
        }
    }

    #[tokio::test]
    async fn a_monitor_taking_over_keeps_the_verdicts_it_finds_on_the_board() {
        // Nothing listens there: every check fails.
        let client = unreachable("a");
        let board = StateBoard::new(initial_states(std::slice::from_ref(&client)));
        let since = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        board.update(|s| s.backends[0].reachability = Reachability::Up { since });
        let mut monitor = monitor_of(vec![client], Vec::new());
        monitor.board = board.clone();
        (monitor.health.rise, monitor.health.fall) = (2, 3);
        let (stop, _) = tokio::sync::broadcast::channel(1);
        let running = tokio::spawn(monitor.run(Shutdown::new(stop.subscribe())));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while board.load().backends[0].last_error.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no round ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One failed round of three: still up, since when it was.
        assert_eq!(
            board.load().backends[0].reachability,
            Reachability::Up { since }
        );
        let _ = stop.send(());
        running.await.expect("monitor ends");
    }

    #[tokio::test]
    async fn a_backend_down_for_failed_requests_but_answering_pings_keeps_its_replay_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, _) = crate::test_http::answering_204().await;
        let (clients, replica) = crate::test_http::one_backend_at(dir.path(), addr);
        let monitor = monitor_of(clients, vec![replica.clone()]);
        let (board, marks) = (monitor.board.clone(), monitor.marks.clone());
        // Requests to it failed (a long statement, say) while its pings are answered.
        marks.failure(0, "answered 500".into());
        let (stop, _) = tokio::sync::broadcast::channel(1);
        let running = tokio::spawn(monitor.run(Shutdown::new(stop.subscribe())));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !matches!(
            board.load().backends[0].reachability,
            Reachability::Down { .. }
        ) {
            assert!(tokio::time::Instant::now() < deadline, "not marked down");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Down for reads and writes, but a replayed statement keeps waiting for its answer.
        assert!(!replica.is_marked_down());
        let _ = stop.send(());
        running.await.expect("monitor ends");
    }

    #[tokio::test]
    async fn a_backend_down_for_failed_requests_counts_as_not_pinging_after_fall_failed_pings() {
        // A backend whose pings answer 500 while `fail` is set.
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failing = fail.clone();
        let svc = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
            let status = if failing.load(Ordering::SeqCst) {
                http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                http::StatusCode::NO_CONTENT
            };
            let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *resp.status_mut() = status;
            async move { Ok::<_, std::convert::Infallible>(resp) }
        });
        let addr = crate::test_http::serve(svc).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (clients, replica) = crate::test_http::one_backend_at(dir.path(), addr);
        let mut monitor = monitor_of(clients, vec![replica.clone()]);
        monitor.health.fall = 2;
        let marks = monitor.marks.clone();
        let mut memory = Memory {
            verdicts: vec![Hysteresis::default()],
            write_failures: vec![0],
            ping_failures: vec![0],
            ..Memory::default()
        };
        let mut polls = PeerPolls::default();
        let (_stop, stopped) = tokio::sync::broadcast::channel(1);
        let mut shutdown = Shutdown::new(stopped);
        macro_rules! round {
            ($ping_fails:expr) => {
                fail.store($ping_fails, Ordering::SeqCst);
                // Requests to it keep failing (a long statement holds it, say).
                marks.failure(0, "answered 500".into());
                monitor.round(&mut memory, &mut polls, &mut shutdown).await;
            };
        }
        round!(false);
        assert!(matches!(
            monitor.board.load().backends[0].reachability,
            Reachability::Down { .. }
        ));
        assert!(!replica.is_marked_down());
        // One slow or failed ping while it is down: still only busy.
        round!(true);
        assert!(!replica.is_marked_down(), "one failed ping counted");
        // As many in a row as take a backend down: not answering.
        round!(true);
        assert!(replica.is_marked_down());
        // A ping answered again: busy, not gone.
        round!(false);
        assert!(!replica.is_marked_down());
    }

    #[test]
    fn peer_reports_survive_a_restart_as_unreachable() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join(PEER_REPORTS_FILE);
        let report = crate::peers::parse_report(
            br#"{"node":"r2","backends":[{"name":"a","queue_records":5,"queue_bytes":9,"oldest_age_seconds":2.5,"diverged":false,"maintenance":false}]}"#,
        )
        .expect("report");
        let received = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut reports = HashMap::new();
        reports.insert("relay-2".to_owned(), (report.clone(), received, true));
        reports.insert("gone".to_owned(), (report.clone(), received, true));
        save_reports(&file, &reports);
        let peer = Peer {
            name: "relay-2".into(),
            client: unreachable("relay-2"),
        };
        let loaded = load_reports(&file, std::slice::from_ref(&peer));
        assert_eq!(loaded.len(), 1, "only configured peers");
        assert_eq!(loaded["relay-2"], (report, received, false));
        std::fs::write(&file, b"{broken").expect("write");
        assert!(load_reports(&file, &[peer]).is_empty());
    }

    /// A report as relay `node`'s process `instance` sends it, with `records` queued for `a`.
    fn sent_report(node: &str, instance: &str, records: u64) -> QueueReport {
        crate::peers::parse_report(
            format!(r#"{{"node":"{node}","instance":"{instance}","backends":[{{"name":"a","queue_records":{records},"queue_bytes":9,"oldest_age_seconds":null,"diverged":false}}]}}"#)
                .as_bytes(),
        )
        .expect("report")
    }

    #[tokio::test]
    async fn of_two_reports_of_one_process_the_later_numbered_stands_whichever_arrives_last() {
        let monitor = monitor_of(vec![unreachable("a")], Vec::new());
        let mut memory = Memory::default();
        let numbered = |seq: Option<u64>, records: u64| {
            let mut r = sent_report("host", "p2", records);
            r.seq = seq;
            r
        };
        let t0 = tokio::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut hear = |asked, report: QueueReport| {
            monitor.record_peer(&mut memory, ("relay-2".to_owned(), asked, Ok(report)));
            memory.reports["relay-2"].0.backends[0].queue_records
        };
        // A notice arrives at 20 ms with a report numbered 5.
        assert_eq!(hear(at(20), numbered(Some(5), 1)), 1);
        // The answer to a poll asked at 10 ms read the queues later (7): it stands.
        assert_eq!(hear(at(10), numbered(Some(7), 0)), 0);
        // A notice numbered 6 that took long on the way is older news, though it came last.
        assert_eq!(hear(at(30), numbered(Some(6), 3)), 0);
        // A report of an older version, unnumbered, goes by when it was asked.
        assert_eq!(hear(at(5), numbered(None, 4)), 0);
        assert_eq!(hear(at(40), numbered(None, 4)), 4);
    }

    #[test]
    fn a_sent_report_counts_only_for_the_one_peer_whose_process_sent_the_last() {
        let mut memory = Memory::default();
        let now = SystemTime::now();
        // Relays on one host share their default node name; their processes differ.
        for (peer, instance) in [
            ("relay-2", "p2"),
            ("relay-3", "p3"),
            ("twin", "p4"),
            ("twin-again", "p4"),
        ] {
            memory.reports.insert(
                peer.to_owned(),
                (sent_report("host", instance, 0), now, true),
            );
        }
        let from = |instance: &str| sender(&memory, &sent_report("host", instance, 1));
        assert_eq!(from("p2").as_deref(), Some("relay-2"));
        assert_eq!(from("p3").as_deref(), Some("relay-3"));
        // A restarted relay, or one never polled: the peers are asked instead.
        assert_eq!(from("p9"), None);
        // Two peers configured for one relay: which one it was cannot be told.
        assert_eq!(from("p4"), None);
        // Another node name, or a report of an older version, without its process.
        assert_eq!(sender(&memory, &sent_report("other", "p2", 1)), None);
        let mut older = sent_report("host", "p2", 1);
        older.instance = None;
        assert_eq!(sender(&memory, &older), None);
    }

    #[tokio::test]
    async fn a_report_sent_with_a_notice_counts_without_a_poll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(PEER_REPORTS_FILE);
        // The peers' last reports, kept from before; neither peer can be polled now.
        let mut kept = HashMap::new();
        for (peer, instance) in [("relay-2", "p2"), ("relay-3", "p3")] {
            let report = sent_report("host", instance, 0);
            kept.insert(peer.to_owned(), (report, SystemTime::now(), true));
        }
        save_reports(&file, &kept);
        let mut monitor = monitor_of(vec![unreachable("a")], Vec::new());
        monitor.peers = ["relay-2", "relay-3"]
            .map(|name| Peer {
                name: name.to_owned(),
                client: unreachable(name),
            })
            .to_vec();
        monitor.reports_file = Some(file.clone());
        let (board, news) = (monitor.board.clone(), monitor.peers_changed.clone());
        let (stop, _) = tokio::sync::broadcast::channel(1);
        let running = tokio::spawn(monitor.run(Shutdown::new(stop.subscribe())));
        news.notice(Some(sent_report("host", "p3", 5)));
        let queued = |peer: &str| {
            board.load().backends[0]
                .peers
                .iter()
                .find(|p| p.peer == peer)
                .map(|p| p.queue.records)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while queued("relay-3") != Some(5) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sent report never counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(queued("relay-2"), Some(0));
        // Kept for the next start, as a fetched one is.
        let _ = stop.send(());
        running.await.expect("monitor ends");
        let loaded = load_reports(
            &file,
            &[Peer {
                name: "relay-3".into(),
                client: unreachable("relay-3"),
            }],
        );
        assert_eq!(loaded["relay-3"].0.backends[0].queue_records, 5);
    }

    #[test]
    fn an_out_of_range_age_in_a_peer_report_is_left_out() {
        let mut reports = HashMap::new();
        for (peer, age) in [("huge", "1e300"), ("negative", "-1"), ("fine", "2.5")] {
            let report = crate::peers::parse_report(
                format!(r#"{{"node":"{peer}","backends":[{{"name":"a","queue_records":1,"queue_bytes":9,"oldest_age_seconds":{age},"diverged":false,"maintenance":false}}]}}"#)
                    .as_bytes(),
            )
            .expect("report");
            reports.insert(peer.to_owned(), (report, UNIX_EPOCH, true));
        }
        let ages: Vec<_> = peer_states(&reports, "a")
            .into_iter()
            .map(|p| (p.peer, p.queue.oldest_age))
            .collect();
        assert_eq!(
            ages,
            [
                ("fine".to_owned(), Some(Duration::from_millis(2500))),
                ("huge".to_owned(), None),
                ("negative".to_owned(), None),
            ]
        );
    }

    #[test]
    fn passive_marks_are_taken_once() {
        let m = PassiveMarks::new(2);
        m.failure(1, "500 Internal Server Error".into());
        m.failure(1, "connection refused".into());
        m.failure(7, "ignored".into());
        assert_eq!(m.take(0), (0, None));
        assert_eq!(m.take(1), (2, Some("connection refused".into())));
        assert_eq!(m.take(1), (0, None));
    }
}
