//! Config reload on SIGHUP, without dropping in-flight writes.
//!
//! The new file is read and validated completely first; an invalid one is refused with the
//! reason logged, and the running config stays. What is applied at once:
//!
//! - backends added: their queues are opened under `data_dir/<name>/`, their replay starts,
//!   and they are marked diverged ("newly added") until a backfill (verify/repair) clears it,
//!   since they miss everything written before;
//! - backends removed: their replay stops, they get no new writes; writes already fanning out
//!   finish against the set they started with; their queue stays on disk (replayed if the
//!   backend is configured again);
//! - `[write] consistency` (the default level of HTTP writes and of the UDP, TCP, Graphite
//!   and OpenTSDB listeners);
//! - `[queue] max_bytes`, `max_age` and `min_free_disk`, on every backend's queue (a smaller
//!   `max_bytes` drops nothing already queued: later appends are refused until it drains);
//! - whatever the [`ReloadHook`]s registered with [`Reloader::on_reload`] apply (TLS
//!   certificates, for example).
//!
//! - `[auth]` users and tokens (a hook registered by `serve`).
//!
//! - `[http] max_body_bytes`, `body_read_timeout` and `inflight_wait` (a hook registered by
//!   `serve`).
//! - `[queue] replay_lanes`, for the batches each replay reads from then on.
//!
//! Everything else (listen addresses and listeners, the other `[http]` keys, `[queue]` fsync
//! and segment size, backend
//! URLs and credentials, `data_dir`, backend timeouts, `node_name`, `[health]`, `[query]`,
//! `[[peer]]`, `[anti_entropy]`) needs a restart: the reload logs which keys changed and keeps the running
//! values. When backends change, the read path and the health checks are rebuilt over the new
//! set ([`Reloader::on_backends_changed`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::{BackendClient, Timeouts};
use crate::config::Config;
use crate::http::compat::RequestId;
use crate::http::{Handler, HandlerBody, HandlerFuture};
use crate::state::{BackendState, StateBoard};
use crate::write::replica::Replica;
use crate::write::{Replicator, open_replica};

/// A step of a reload contributed from elsewhere (e.g. reloading TLS certificates): it gets
/// the new, validated config and applies its part, or says why it cannot (then the whole
/// reload is refused and the running config stays). A hook must leave its part unchanged
/// when it fails.
pub type ReloadHook = Box<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// What runs after a reload changed the backends, with the new replica set in config order
/// (e.g. the read path and the health checks, which are built over a fixed set).
pub type AppliedHook = Box<dyn Fn(&Config, &[Arc<Replica>]) + Send + Sync>;

/// A [`Handler`] whose implementation a reload replaces; requests already running finish on
/// the one they started with.
pub struct SwappableHandler {
    current: arc_swap::ArcSwap<Arc<dyn Handler>>,
}

impl SwappableHandler {
    /// Starts with `handler`.
    pub fn new(handler: Arc<dyn Handler>) -> Self {
        Self {
            current: arc_swap::ArcSwap::from_pointee(handler),
        }
    }

    /// Answers later requests with `handler`.
    pub fn set(&self, handler: Arc<dyn Handler>) {
        self.current.store(Arc::new(handler));
    }
}

impl Handler for SwappableHandler {
    fn call(&self, id: RequestId, req: http::Request<HandlerBody>) -> HandlerFuture {
        self.current.load().call(id, req)
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is not a valid config.
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigError),
    /// An added backend could not be set up.
    #[error("{0}")]
    Backend(#[from] crate::backend::SetupError),
    /// An added backend's queue could not be opened.
    #[error("{0}")]
    Queue(#[from] crate::write::OpenError),
    /// The new body limit does not fit the in-flight cap that runs until a restart: no
    /// request that large could ever be read.
    #[error(
        "[http] max_body_bytes = {body} is above the running max_inflight_bytes = {inflight}, which changes only at a restart: restart to apply both"
    )]
    BodyOverInflight { body: u64, inflight: u64 },
    /// A backend removed moments ago is added again while its queue is still closing.
    #[error(
        "backend {0} was removed moments ago and its queue is still in use: reload again shortly"
    )]
    StillClosing(String),
    /// A hook refused the new config.
    #[error("{hook}: {reason}")]
    Hook {
        /// The hook's name.
        hook: String,
        /// Its reason.
        reason: String,
    },
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Backends added (marked diverged until backfilled).
    pub added: Vec<String>,
    /// Backends removed.
    pub removed: Vec<String>,
    /// Keys that changed but need a restart (their running values stay).
    pub restart_needed: Vec<String>,
}

/// Applies new configs to a running node.
pub struct Reloader {
    path: PathBuf,
    current: Mutex<Config>,
    replicator: Replicator,
    board: Option<StateBoard>,
    stop_replays: tokio::sync::broadcast::Sender<()>,
    hooks: Mutex<Vec<(String, ReloadHook)>>,
    applied: Mutex<Vec<AppliedHook>>,
    /// Backends removed by earlier reloads, until their queues are closed.
    retired: Mutex<Vec<std::sync::Weak<Replica>>>,
    /// The replay tasks of backends added by reloads, joined at shutdown.
    replays: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// One reload at a time.
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// The replay tasks of backends added by reloads (to be joined after `stop_replays`, before
    /// the queues are closed).
    pub fn take_replays(&self) -> Vec<tokio::task::JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.replays))
    }

    /// Closes the queues of backends removed by reloads that something still holds (at
    /// shutdown, once no write is in flight).
    pub fn close_retired(&self) {
        for r in lock(&self.retired).drain(..).filter_map(|w| w.upgrade()) {
            r.close();
        }
    }
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reloader {
    /// Reloads `path` into a node running `config`; new replay tasks stop with
    /// `stop_replays`.
    pub fn new(
        path: PathBuf,
        config: Config,
        replicator: Replicator,
        board: Option<StateBoard>,
        stop_replays: tokio::sync::broadcast::Sender<()>,
    ) -> Self {
        Self {
            path,
            current: Mutex::new(config),
            replicator,
            board,
            stop_replays,
            hooks: Mutex::new(Vec::new()),
            applied: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
            replays: Mutex::new(Vec::new()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs `hook` with every valid new config, before the backend changes are applied.
    pub fn on_reload(&self, name: impl Into<String>, hook: ReloadHook) {
        lock(&self.hooks).push((name.into(), hook));
    }

    /// Runs `hook` after every reload that added or removed backends.
    pub fn on_backends_changed(&self, hook: AppliedHook) {
        lock(&self.applied).push(hook);
    }

    /// The config in force.
    pub fn current(&self) -> Config {
        lock(&self.current).clone()
    }

    /// Reads the file again and applies it; `Err`: nothing changed.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        let new = Config::load(&self.path)?;
        let old = self.current();
        if new.http.max_body_bytes > old.http.max_inflight_bytes {
            return Err(ReloadError::BodyOverInflight {
                body: new.http.max_body_bytes,
                inflight: old.http.max_inflight_bytes,
            });
        }
        let mut report = ReloadReport::default();

        for (key, changed) in [
            ("data_dir", new.data_dir != old.data_dir),
            // Certificates and the rate limit are applied in place (node::reload_security).
            (
                "[http]",
                crate::node::http_needs_restart(&old.http, &new.http),
            ),
            (
                "[admin]",
                crate::node::admin_needs_restart(old.admin.as_ref(), new.admin.as_ref()),
            ),
            ("[[udp]]", new.udp != old.udp),
            ("[[tcp]]", new.tcp != old.tcp),
            (
                "[write] backend_timeout/connect_timeout",
                new.write.backend_timeout != old.write.backend_timeout
                    || new.write.connect_timeout != old.write.connect_timeout,
            ),
            // max_bytes, max_age and min_free_disk are applied to the running queues.
            (
                "[queue] fsync/segment_bytes",
                new.queue.fsync != old.queue.fsync
                    || new.queue.segment_bytes != old.queue.segment_bytes,
            ),
            ("[[opentsdb]]", new.opentsdb != old.opentsdb),
            ("[[graphite]]", new.graphite != old.graphite),
            ("node_name", new.node_name != old.node_name),
            ("[health]", new.health != old.health),
            ("[query]", new.query != old.query),
            ("[[peer]]", new.peers != old.peers),
            ("[anti_entropy]", new.anti_entropy != old.anti_entropy),
        ] {
            if changed {
                report.restart_needed.push(key.to_owned());
            }
        }
        for b in &new.backends {
            if let Some(o) = old.backends.iter().find(|o| o.name == b.name)
                && o != b
            {
                report
                    .restart_needed
                    .push(format!("backend {} (url or credentials)", b.name));
            }
        }

        // Set up the added backends before anything changes: a failure refuses the reload.
        let timeouts = Timeouts {
            connect: old.write.connect_timeout,
            request: old.write.backend_timeout,
        };
        let running = self.replicator.replicas();
        let mut clients: Vec<BackendClient> = running.iter().map(|r| r.client().clone()).collect();
        let mut added_configs = Vec::new();
        {
            let mut retired = lock(&self.retired);
            retired.retain(|w| w.strong_count() > 0);
            for b in &new.backends {
                if retired
                    .iter()
                    .filter_map(std::sync::Weak::upgrade)
                    .any(|r| r.name() == b.name)
                {
                    return Err(ReloadError::StillClosing(b.name.clone()));
                }
            }
        }
        for b in &new.backends {
            if !running.iter().any(|r| r.name() == b.name) {
                clients.push(BackendClient::new(b, timeouts)?);
                added_configs.push(b.clone());
            }
        }
        // Queues open where the running config keeps them.
        let mut open_config = new.clone();
        open_config.data_dir.clone_from(&old.data_dir);
        open_config.queue = old.queue.clone();
        let mut added: Vec<Arc<Replica>> = Vec::new();
        for b in &added_configs {
            let client = clients
                .iter()
                .find(|c| c.name() == b.name)
                .cloned()
                .ok_or_else(|| crate::backend::SetupError::Unsupported {
                    name: b.name.clone(),
                    message: "client missing",
                })?;
            // A backend removed a moment ago may still be closing its queue (its last handle
            // was dropped, the close has not released the directory's lock yet): wait a little.
            let mut tries = 0;
            let replica = loop {
                match open_replica(&open_config, &client, &clients) {
                    Err(e) if matches!(e.error, handoff::Error::Locked(_)) && tries < 50 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    opened => break opened?,
                }
            };
            added.push(replica);
        }

        for (name, hook) in lock(&self.hooks).iter() {
            hook(&new).map_err(|reason| ReloadError::Hook {
                hook: name.clone(),
                reason,
            })?;
        }

        // Apply: the new set in the new config's order.
        let mut next = Vec::with_capacity(new.backends.len());
        for b in &new.backends {
            if let Some(r) = running.iter().find(|r| r.name() == b.name) {
                next.push(r.clone());
            } else if let Some(r) = added.iter().find(|r| r.name() == b.name) {
                r.mark_diverged("newly added: it misses what was written before; backfill it");
                next.push(r.clone());
                report.added.push(b.name.clone());
            }
        }
        let removed: Vec<Arc<Replica>> = running
            .iter()
            .filter(|r| !new.backends.iter().any(|b| b.name == r.name()))
            .cloned()
            .collect();
        let limits = handoff::Limits::of(&crate::write::queue_options(&new.queue));
        for r in &next {
            r.queue().set_limits(limits);
            r.set_replay_lanes(new.queue.replay_lanes);
            // Where a missing database is copied from: the backends of the new set.
            r.set_peers(
                next.iter()
                    .filter(|o| o.name() != r.name())
                    .map(|o| o.client().clone())
                    .collect(),
            );
        }
        self.replicator.set_replicas(next);
        self.replicator
            .set_default_consistency(new.write.consistency);
        for r in &added {
            let replay = tokio::spawn(r.clone().replay(crate::shutdown::Shutdown::new(
                self.stop_replays.subscribe(),
            )));
            let mut replays = lock(&self.replays);
            replays.retain(|t| !t.is_finished());
            replays.push(replay);
        }
        for r in &removed {
            let stats = r.queue().stats();
            if stats.depth_records > 0 {
                // Kept on disk, not delivered: adding the backend back (same name) resumes it.
                tracing::warn!(
                    backend = r.name(),
                    queued_records = stats.depth_records,
                    queued_bytes = stats.depth_bytes,
                    dir = %r.queue().dir().display(),
                    "backend removed with writes still queued for it: they stay on disk, undelivered"
                );
            }
            // The queue closes once the last write in flight to it is done (on drop).
            r.retire();
            lock(&self.retired).push(Arc::downgrade(r));
            report.removed.push(r.name().to_owned());
        }
        if let Some(board) = &self.board {
            let names: Vec<(String, String)> = new
                .backends
                .iter()
                .map(|b| (b.name.clone(), b.url.to_string()))
                .collect();
            board.update(|s| {
                s.backends
                    .retain(|b| names.iter().any(|(n, _)| *n == b.name));
                for (name, url) in &names {
                    if s.backend(name).is_none() {
                        s.backends.push(BackendState::new(name, url));
                    }
                }
                s.backends
                    .sort_by_key(|b| names.iter().position(|(n, _)| *n == b.name));
            });
        }

        // What stays as it runs until a restart.
        let mut effective = new;
        effective.data_dir = old.data_dir.clone();
        // Applied by a hook of `serve`: the body limits; the rest of [http] needs a restart.
        let (max_body_bytes, body_read_timeout, inflight_wait) = (
            effective.http.max_body_bytes,
            effective.http.body_read_timeout,
            effective.http.inflight_wait,
        );
        effective.http = old.http.clone();
        effective.http.max_body_bytes = max_body_bytes;
        effective.http.body_read_timeout = body_read_timeout;
        effective.http.inflight_wait = inflight_wait;
        effective.admin = old.admin.clone();
        effective.udp = old.udp.clone();
        effective.tcp = old.tcp.clone();
        effective.graphite = old.graphite.clone();
        effective.opentsdb = old.opentsdb.clone();
        effective.write.backend_timeout = old.write.backend_timeout;
        effective.write.connect_timeout = old.write.connect_timeout;
        effective.queue.fsync = old.queue.fsync;
        effective.queue.segment_bytes = old.queue.segment_bytes;
        effective.node_name.clone_from(&old.node_name);
        effective.health = old.health.clone();
        effective.query = old.query.clone();
        effective.peers.clone_from(&old.peers);
        effective.anti_entropy = old.anti_entropy.clone();
        for b in &mut effective.backends {
            if let Some(o) = old.backends.iter().find(|o| o.name == b.name) {
                *b = o.clone();
            }
        }
        if !report.added.is_empty() || !report.removed.is_empty() {
            let replicas = self.replicator.replicas();
            for hook in lock(&self.applied).iter() {
                hook(&effective, &replicas);
            }
        }
        *lock(&self.current) = effective;
        Ok(report)
    }

    /// Reloads on every SIGHUP until `shutdown`, logging what changed or why not.
    #[cfg(unix)]
    /// `hup` is installed by the caller before the node answers, so that an early SIGHUP is
    /// not the default action (termination).
    pub async fn run_on_sighup(
        self: Arc<Self>,
        mut hup: tokio::signal::unix::Signal,
        mut shutdown: crate::shutdown::Shutdown,
    ) {
        loop {
            tokio::select! {
                () = shutdown.recv() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            tracing::info!(config = %self.path.display(), "SIGHUP: reloading the config");
            match self.reload().await {
                Ok(r) => {
                    tracing::info!(
                        added = ?r.added,
                        removed = ?r.removed,
                        "config reloaded"
                    );
                    if !r.restart_needed.is_empty() {
                        tracing::warn!(
                            changed = ?r.restart_needed,
                            "these changes take effect only after a restart; the running values stay"
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "config reload refused: the running config stays");
                }
            }
        }
    }
}
