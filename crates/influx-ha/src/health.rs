//! Whether this node can take writes right now, as `/health` reports it to load balancers.
//!
//! Two independent reasons make it unavailable: draining (SIGTERM received; final) and a
//! condition the write path reports and clears (for example: no queue can take data). Draining
//! wins, so a node going down never looks healthy again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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
    fn unavailable_can_be_cleared() {
        let h = Health::new();
        h.set_unavailable("x");
        h.set_available();
        assert_eq!(h.status(), Ok(()));
    }
}
