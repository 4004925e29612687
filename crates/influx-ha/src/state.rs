//! What this node knows about every backend, as one immutable snapshot that readers take
//! without locking: the read path picks a fresh backend from it, the admin surface shows it,
//! peers fetch its queue part.
//!
//! One task owns the board and publishes a new [`ClusterState`] whenever something changes
//! (health checks, queue depth, divergence, peer reports); readers call [`StateBoard::load`]
//! and keep the `Arc` for as long as they need a consistent view.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

/// Whether a backend answers, as the health checks and passive marking see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    /// Not checked yet (just started).
    Unknown,
    /// Answering; `since` when it last turned up.
    Up {
        /// When it turned up.
        since: SystemTime,
    },
    /// Not answering, and why.
    Down {
        /// When it turned down.
        since: SystemTime,
        /// The last failure, for operators (never contains credentials).
        reason: String,
    },
}

/// Depth of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Records waiting.
    pub records: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Age of the oldest waiting record.
    pub oldest_age: Option<Duration>,
}

impl QueueDepth {
    /// Whether anything is waiting.
    pub fn is_pending(&self) -> bool {
        self.records > 0
    }
}

/// A peer relay's report about one backend: its queue for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// The peer's name (or URL when it has none).
    pub peer: String,
    /// The peer's queue for this backend, as last reported.
    pub queue: QueueDepth,
    /// Whether the peer marks this backend diverged.
    pub diverged: bool,
    /// When the report was received; an unreachable peer's last report stands.
    pub received: SystemTime,
    /// Whether the peer answered the last poll.
    pub reachable: bool,
}

/// A configured peer relay as this node last reached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerContact {
    /// Its name in `[[peer]]`.
    pub name: String,
    /// When its last report arrived (kept across restarts); `None`: never.
    pub last_report: Option<SystemTime>,
    /// Whether it answered the last poll.
    pub reachable: bool,
    /// Why the last poll failed, if it did.
    pub error: Option<String>,
}

/// One backend as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendState {
    /// The configured name.
    pub name: String,
    /// The URL, without credentials.
    pub url: String,
    /// Up, down or not checked yet.
    pub reachability: Reachability,
    /// Operator maintenance: everything is queued for it, no reads are served from it.
    pub maintenance: bool,
    /// Why it may miss data (the persisted flag), `None` when it should hold everything.
    pub diverged: Option<String>,
    /// This node's hinted-handoff queue for it.
    pub queue: QueueDepth,
    /// This node's dead letters for it.
    pub dead_letters: QueueDepth,
    /// What the peers last reported about it.
    pub peers: Vec<PeerReport>,
    /// Peers whose last report does not name it: they do not write to it, so it misses the
    /// writes they take.
    pub absent_on_peers: Vec<String>,
    /// The last problem seen with it (health check, read, write or replay), for operators;
    /// never contains credentials.
    pub last_error: Option<String>,
}

impl BackendState {
    /// A backend just configured: nothing known yet.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            reachability: Reachability::Unknown,
            maintenance: false,
            diverged: None,
            queue: QueueDepth::default(),
            dead_letters: QueueDepth::default(),
            peers: Vec::new(),
            absent_on_peers: Vec::new(),
            last_error: None,
        }
    }

    /// Whether reads may be served from it: up, not in maintenance, not diverged, and no queue
    /// for it on this node or on any peer. `Err` says why not, for the 503 and the status page.
    pub fn freshness(&self) -> Result<(), String> {
        match &self.reachability {
            Reachability::Up { .. } => {}
            Reachability::Unknown => return Err(format!("{}: not checked yet", self.name)),
            Reachability::Down { reason, .. } => {
                return Err(format!("{}: down ({reason})", self.name));
            }
        }
        if self.maintenance {
            return Err(format!("{}: in maintenance", self.name));
        }
        if let Some(why) = &self.diverged {
            return Err(format!("{}: diverged ({why})", self.name));
        }
        if self.queue.is_pending() {
            return Err(format!(
                "{}: catching up ({} queued writes)",
                self.name, self.queue.records
            ));
        }
        if let Some(p) = self
            .peers
            .iter()
            .find(|p| p.queue.is_pending() || p.diverged)
        {
            return Err(format!(
                "{}: peer {} reports {}",
                self.name,
                p.peer,
                if p.diverged {
                    "it diverged".to_owned()
                } else {
                    format!("{} queued writes for it", p.queue.records)
                }
            ));
        }
        if let Some(peer) = self.absent_on_peers.first() {
            return Err(format!(
                "{}: peer {peer} does not write to it (no backend of this name in its config)",
                self.name
            ));
        }
        Ok(())
    }

    /// Whether reads may be served from it.
    pub fn is_fresh(&self) -> bool {
        self.freshness().is_ok()
    }
}

/// Every backend, in config order, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    /// The backends, in config order.
    pub backends: Vec<BackendState>,
    /// The peer relays, in config order.
    pub peers: Vec<PeerContact>,
    /// When this snapshot was taken.
    pub taken: SystemTime,
}

impl ClusterState {
    /// The backend called `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendState> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// The published snapshot; cheap to clone, lock-free to read.
#[derive(Debug, Clone)]
pub struct StateBoard {
    current: Arc<ArcSwap<ClusterState>>,
    /// Held while a snapshot is built and published: the monitor, the admin API and a reload
    /// all update the board, and none may publish over a change it did not see.
    writing: Arc<std::sync::Mutex<()>>,
}

impl StateBoard {
    /// A board showing `backends`.
    pub fn new(backends: Vec<BackendState>) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(ClusterState {
                backends,
                peers: Vec::new(),
                taken: SystemTime::now(),
            })),
            writing: Arc::new(std::sync::Mutex::new(())),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<ClusterState> {
        self.current.load_full()
    }

    /// Publishes a new snapshot built from the current one by `change`, one writer at a time.
    /// Readers never wait.
    pub fn update(&self, change: impl FnOnce(&mut ClusterState)) {
        let _one_writer = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = ClusterState::clone(&self.current.load());
        change(&mut next);
        next.taken = SystemTime::now();
        self.current.store(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str) -> BackendState {
        BackendState {
            reachability: Reachability::Up {
                since: SystemTime::UNIX_EPOCH,
            },
            ..BackendState::new(name, "http://127.0.0.1:1")
        }
    }

    #[test]
    fn fresh_only_when_up_in_sync_everywhere() {
        let b = up("a");
        assert_eq!(b.freshness(), Ok(()));
        assert!(!BackendState::new("a", "u").is_fresh());
        let mut queued = up("a");
        queued.queue.records = 3;
        assert!(
            queued
                .freshness()
                .expect_err("not fresh")
                .contains("catching up")
        );
        let mut diverged = up("a");
        diverged.diverged = Some("queue overflowed".into());
        assert!(
            diverged
                .freshness()
                .expect_err("not fresh")
                .contains("queue overflowed")
        );
        let mut maintenance = up("a");
        maintenance.maintenance = true;
        assert!(!maintenance.is_fresh());
        // A peer's queue counts even when the peer is unreachable now: its last report stands.
        let mut peer = up("a");
        peer.peers.push(PeerReport {
            peer: "relay-2".into(),
            queue: QueueDepth {
                records: 1,
                ..QueueDepth::default()
            },
            diverged: false,
            received: SystemTime::UNIX_EPOCH,
            reachable: false,
        });
        assert!(peer.freshness().expect_err("not fresh").contains("relay-2"));
        // A peer that does not write to it: it misses what that peer takes.
        let mut unknown = up("a");
        unknown.absent_on_peers.push("relay-3".into());
        assert!(
            unknown
                .freshness()
                .expect_err("not fresh")
                .contains("peer relay-3 does not write to it")
        );
    }

    #[test]
    fn readers_keep_their_snapshot() {
        let board = StateBoard::new(vec![up("a"), up("b")]);
        let before = board.load();
        board.update(|s| s.backends[1].maintenance = true);
        assert!(!before.backends[1].maintenance);
        assert!(board.load().backend("b").is_some_and(|b| b.maintenance));
    }

    #[test]
    fn concurrent_writers_lose_no_update() {
        let board = StateBoard::new(vec![up("a")]);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let board = board.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        board.update(|s| s.backends[0].queue.records += 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer");
        }
        assert_eq!(board.load().backends[0].queue.records, 4000);
    }
}
