//! Whether this node can take writes right now, as `/health` reports it to load balancers.
//!
//! Two independent reasons make it unavailable: draining (SIGTERM received; final) and a
//! condition the write path reports and clears (for example: no queue can take data). Draining
//! wins, so a node going down never looks healthy again.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::write::Replicator;

/// Shared readiness of the node; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Set once on SIGTERM; never cleared.
    draining: AtomicBool,
    /// Why writes cannot be taken durably, as reported by the write path.
    unavailable: Mutex<Option<String>>,
}

impl Health {
    /// A healthy node.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the node as shutting down; `/health` answers 503 from now on.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`Health::set_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Reports that writes cannot be taken, and why.
    pub fn set_unavailable(&self, reason: impl Into<String>) {
        *self.lock() = Some(reason.into());
    }

    /// Clears a reason given to [`Health::set_unavailable`].
    pub fn set_available(&self) {
        *self.lock() = None;
    }

    /// `Ok` when writes can be taken, otherwise the reason.
    pub fn status(&self) -> Result<(), String> {
        if self.is_draining() {
            return Err("shutting down".to_owned());
        }
        match &*self.lock() {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.inner
            .unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// How often [`watch_storage`] looks at the disk and the queues.
pub const STORAGE_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// Why the queues cannot take data, if they cannot: the data directory's filesystem has less
/// than `floor` bytes free (`free` unknown counts as enough), or every one of `queues` queues
/// is degraded (an fsync failed). Such a node may still store a write on the backends that
/// answer, but any backend that fails would miss it, so load balancers should send writes to
/// another node.
pub fn storage_problem(
    free: Option<u64>,
    floor: u64,
    queues: usize,
    degraded: usize,
) -> Option<String> {
    if let Some(free) = free
        && floor > 0
        && free < floor
    {
        return Some(format!(
            "the data directory has {} free, below [queue] min_free_disk = {}: writes for a backend that fails cannot be queued",
            crate::admin::page::human_size(free),
            crate::units::format_size(floor)
        ));
    }
    if queues > 0 && degraded == queues {
        return Some(
            "every backend's queue is degraded (an fsync failed): writes for a backend that fails cannot be queued; restart once the disk is fine"
                .to_owned(),
        );
    }
    None
}

/// Keeps `health` in step with [`storage_problem`] for the queues of `replicator` under
/// `data_dir`, every [`STORAGE_CHECK_PERIOD`] until `shutdown`. The floor is read from the
/// queues, so a reloaded `min_free_disk` counts from the next check.
pub async fn watch_storage(
    health: Health,
    replicator: Replicator,
    data_dir: std::path::PathBuf,
    mut shutdown: crate::shutdown::Shutdown,
) {
    let mut tick = tokio::time::interval(STORAGE_CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        let problem = check_storage(&replicator, &data_dir);
        if problem == reported {
            continue;
        }
        match &problem {
            Some(reason) => {
                tracing::error!(reason = %reason, "/health answers 503");
                health.set_unavailable(reason.clone());
            }
            None => {
                tracing::info!("queues can take data again: /health answers 200");
                health.set_available();
            }
        }
        reported = problem;
    }
}

fn check_storage(replicator: &Replicator, data_dir: &Path) -> Option<String> {
    use handoff::Filesystem;
    let replicas = replicator.replicas();
    let floor = replicas
        .iter()
        .map(|r| r.queue().limits().min_free_bytes)
        .max()
        .unwrap_or(0);
    let degraded = replicas.iter().filter(|r| r.queue().is_degraded()).count();
    let free = if floor > 0 {
        handoff::StdFs.available_space(data_dir).ok()
    } else {
        None
    };
    storage_problem(free, floor, replicas.len(), degraded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_wins_and_is_final() {
        let h = Health::new();
        assert_eq!(h.status(), Ok(()));
        h.set_unavailable("no queue can take data");
        assert_eq!(h.status(), Err("no queue can take data".to_owned()));
        h.clone().set_draining();
        assert_eq!(h.status(), Err("shutting down".to_owned()));
        h.set_available();
        assert_eq!(h.status(), Err("shutting down".to_owned()));
    }

    #[test]
    fn storage_problems_are_named() {
        assert_eq!(storage_problem(Some(10), 0, 2, 0), None);
        assert_eq!(storage_problem(Some(10), 10, 2, 0), None);
        assert_eq!(storage_problem(None, 10, 2, 0), None);
        assert_eq!(storage_problem(Some(10), 10, 2, 1), None);
        assert_eq!(storage_problem(Some(10), 10, 0, 0), None);
        let low = storage_problem(Some(9), 10, 2, 0).unwrap_or_default();
        assert!(
            low.contains("below [queue] min_free_disk = 10 bytes"),
            "{low}"
        );
        let degraded = storage_problem(Some(10), 10, 2, 2).unwrap_or_default();
        assert!(
            degraded.starts_with("every backend's queue is degraded"),
            "{degraded}"
        );
    }

    #[test]
    fn unavailable_can_be_cleared() {
        let h = Health::new();
        h.set_unavailable("x");
        h.set_available();
        assert_eq!(h.status(), Ok(()));
    }
}
