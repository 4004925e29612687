//! Graceful shutdown, in the style of mini-redis.
//!
//! The server holds a `broadcast::Sender<()>`; every connection task gets a [`Shutdown`] made
//! from a receiver of it and an `mpsc::Sender<()>` it drops when it ends. On SIGTERM the server
//! stops accepting, broadcasts, and waits until the last `mpsc::Sender` is gone (every
//! connection finished) or the drain period is over.

use tokio::sync::broadcast;

/// Listens for the shutdown broadcast.
#[derive(Debug)]
pub struct Shutdown {
    /// Set once the broadcast was received, so later calls to `recv` return at once.
    is_shutdown: bool,
    /// Receives the broadcast (or sees the sender dropped, which means the same).
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    /// Wraps a receiver of the server's shutdown broadcast.
    pub fn new(notify: broadcast::Receiver<()>) -> Self {
        Self {
            is_shutdown: false,
            notify,
        }
    }

    /// Whether shutdown was already received.
    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Waits for shutdown; returns at once if it was already received.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // Lagged cannot happen with one message; Closed means the sender is gone: shut down.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C) and says which one came.
#[cfg(unix)]
pub async fn termination_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
    }
}

/// Waits for Ctrl-C.
#[cfg(not(unix))]
pub async fn termination_signal() -> std::io::Result<&'static str> {
    tokio::signal::ctrl_c().await?;
    Ok("Ctrl-C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receives_once_and_stays_shut_down() {
        let (tx, rx) = broadcast::channel(1);
        let mut s = Shutdown::new(rx);
        assert!(!s.is_shutdown());
        tx.send(()).expect("a receiver exists");
        s.recv().await;
        assert!(s.is_shutdown());
        s.recv().await; // returns at once
    }

    #[tokio::test]
    async fn a_dropped_sender_means_shutdown() {
        let (tx, rx) = broadcast::channel::<()>(1);
        let mut s = Shutdown::new(rx);
        drop(tx);
        s.recv().await;
        assert!(s.is_shutdown());
    }
}
