//! One running node: listeners, backends, readiness, and the SIGTERM drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::{BackendClient, SetupError, Timeouts};
use crate::config::Config;
use crate::health::Health;
use crate::http::body::{BodyLimits, InflightBytes, SharedLimits};
use crate::http::guard::{AuthSettings, Guard};
use crate::http::{Handler, HttpService, NotReplicating, RequestObserver, Surface, WriteHandler};
use crate::server::{self, DrainReport, ServerOptions};
use crate::tls::ServerTls;
use crate::write::Replicator;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A backend client could not be built.
    #[error(transparent)]
    Backend(#[from] SetupError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {error}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error (part of the message).
        error: std::io::Error,
    },
    /// A backend's queue could not be opened.
    #[error(transparent)]
    Queue(#[from] crate::write::OpenError),
    /// A listener's certificate or key cannot be used.
    #[error("{what} listener TLS: {error}")]
    Tls {
        /// Which listener.
        what: &'static str,
        /// Why.
        error: crate::tls::TlsError,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// A node with its listeners bound, ready to [`Node::run`].
pub struct Node<W> {
    /// The main (InfluxDB API) listener.
    main: TcpListener,
    /// The separate admin listener, when configured.
    admin: Option<TcpListener>,
    /// Body caps of both listeners (and of the read path's form bodies); reloadable.
    limits: SharedLimits,
    /// In-flight body bytes, shared by both listeners.
    inflight: InflightBytes,
    /// Where checked writes go.
    writer: W,
    /// What answers `/query` (see [`Node::with_query`]).
    query: Option<Arc<dyn Handler>>,
    /// What answers the admin paths (see [`Node::with_admin`]).
    admin_handler: Option<Arc<dyn Handler>>,
    /// What every answered request is reported to (see [`Node::with_observer`]).
    observer: Option<Arc<dyn RequestObserver>>,
    /// Connection settings of both listeners.
    options: ServerOptions,
    /// Readiness shared with `/health`.
    health: Health,
    /// One client per backend, in config order.
    backends: Vec<BackendClient>,
    /// Authentication of both listeners (swappable on reload).
    guard: Guard,
    /// The listeners' TLS certificates (reloadable).
    tls: ListenerTls,
}

/// The TLS side of the listeners; [`ListenerTls::reload`] is what a config reload calls.
#[derive(Debug, Clone, Default)]
pub struct ListenerTls {
    /// The main listener's, when `[http] tls_cert` is set.
    pub main: Option<Arc<ServerTls>>,
    /// The admin listener's, when `[admin] tls_cert` is set.
    pub admin: Option<Arc<ServerTls>>,
}

impl ListenerTls {
    /// Loads the certificates `config` names.
    pub fn load(config: &Config) -> Result<Self, NodeError> {
        let load = |what, files: Option<&crate::tls::TlsFiles>| {
            files
                .map(|f| ServerTls::new(f.clone()).map(Arc::new))
                .transpose()
                .map_err(|error| NodeError::Tls { what, error })
        };
        Ok(Self {
            main: load("http", config.http.tls.as_ref())?,
            admin: load("admin", config.admin.as_ref().and_then(|a| a.tls.as_ref()))?,
        })
    }

    /// Reads the certificate and key files again (those `config` names) for new connections.
    /// A listener started without TLS stays without (that needs a restart). On error nothing
    /// changes, and the message says which file is wrong.
    pub fn reload(&self, config: &Config) -> Result<(), String> {
        let pairs = [
            (&self.main, config.http.tls.as_ref(), "http"),
            (
                &self.admin,
                config.admin.as_ref().and_then(|a| a.tls.as_ref()),
                "admin",
            ),
        ];
        // Every certificate is read and checked once, before any is used: a bad one (or files
        // rewritten meanwhile) changes nothing at all.
        let mut loaded = Vec::with_capacity(pairs.len());
        for (tls, files, what) in pairs {
            if let Some(tls) = tls {
                let new = tls
                    .load(files)
                    .map_err(|e| format!("{what} listener: {e}"))?;
                loaded.push((tls, new));
            }
        }
        for (tls, new) in loaded {
            tls.install(new);
        }
        Ok(())
    }
}

/// Whether a change of `[http]` needs a restart: anything but the rate limit, the body limits
/// ([`SharedLimits`], applied by a reload hook of `serve`) and the
/// certificate files of a listener that already has TLS ([`reload_security`] applies those).
pub fn http_needs_restart(
    old: &crate::config::HttpConfig,
    new: &crate::config::HttpConfig,
) -> bool {
    let mut applied = new.clone();
    applied.rate_limit = old.rate_limit;
    applied.max_body_bytes = old.max_body_bytes;
    applied.body_read_timeout = old.body_read_timeout;
    applied.inflight_wait = old.inflight_wait;
    if old.tls.is_some() && new.tls.is_some() {
        applied.tls = old.tls.clone();
    }
    applied != *old
}

/// [`http_needs_restart`] for `[admin]`.
pub fn admin_needs_restart(
    old: Option<&crate::config::AdminConfig>,
    new: Option<&crate::config::AdminConfig>,
) -> bool {
    match (old, new) {
        (Some(old), Some(new)) => old.bind != new.bind || old.tls.is_some() != new.tls.is_some(),
        (None, None) => false,
        _ => true,
    }
}

/// What a config reload (SIGHUP) applies of the security settings: the listeners'
/// certificates, then the users and tokens of `[auth]` and `[http] rate_limit`. Returns why not when a certificate
/// cannot be used (then nothing changed).
pub fn reload_security(tls: &ListenerTls, guard: &Guard, config: &Config) -> Result<(), String> {
    tls.reload(config)?;
    guard.set_auth(auth_settings(config));
    guard.set_rate_limit(config.http.rate_limit);
    Ok(())
}

/// The backend clients of a config, in config order.
pub fn backend_clients(config: &Config) -> Result<Vec<BackendClient>, SetupError> {
    let timeouts = Timeouts {
        connect: config.write.connect_timeout,
        request: config.write.backend_timeout,
    };
    config
        .backends
        .iter()
        .map(|b| BackendClient::new(b, timeouts))
        .collect()
}

/// The authentication `config` asks for; `None` when `[auth]` is off.
pub fn auth_settings(config: &Config) -> Option<AuthSettings> {
    let auth = &config.auth;
    auth.enabled.then(|| AuthSettings {
        authenticator: crate::auth::Authenticator::new(&auth.users, &auth.tokens),
        admin_listener: auth.admin_listener,
        admins: auth.admins.as_ref().map(|a| a.iter().cloned().collect()),
    })
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| NodeError::Bind { what, addr, error })
}

impl Node<NotReplicating> {
    /// Binds the listeners of `config` with the write handler of this build.
    pub async fn bind(config: &Config) -> Result<Self, NodeError> {
        Self::bind_with(config, |_, _| NotReplicating).await
    }
}

impl<W: WriteHandler + Clone> Node<W> {
    /// Binds the listeners of `config`; writes go to the handler `make_writer` builds from the
    /// backend clients (config order) and the node's readiness (which the write path turns to
    /// 503 with [`Health::set_unavailable`] when it cannot store data durably).
    pub async fn bind_with<F>(config: &Config, make_writer: F) -> Result<Self, NodeError>
    where
        F: FnOnce(&[BackendClient], &Health) -> W,
    {
        let backends = backend_clients(config)?;
        let tls = ListenerTls::load(config)?;
        let main = bind("http", config.http.bind).await?;
        let admin = match &config.admin {
            Some(a) => Some(bind("admin", a.bind).await?),
            None => None,
        };
        let health = Health::new();
        let writer = make_writer(&backends, &health);
        let limits = SharedLimits::new(BodyLimits::of(&config.http));
        let inflight = InflightBytes::new(
            usize::try_from(config.http.max_inflight_bytes).unwrap_or(usize::MAX),
        );
        Ok(Self {
            main,
            limits,
            inflight,
            writer,
            query: None,
            admin_handler: None,
            observer: None,
            admin,
            options: ServerOptions {
                max_connections: config.http.max_connections,
                header_read_timeout: config.http.header_read_timeout,
                drain_timeout: config.http.drain_timeout,
            },
            health,
            backends,
            guard: {
                let guard = Guard::new(auth_settings(config));
                guard.set_rate_limit(config.http.rate_limit);
                guard
            },
            tls,
        })
    }

    /// The listeners' TLS certificates (for [`reload_security`]).
    pub fn listener_tls(&self) -> &ListenerTls {
        &self.tls
    }

    /// Body limits shared with others who read request bodies (the read path), so that a
    /// reload changes them everywhere at once.
    pub fn with_limits(mut self, limits: SharedLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Answers `/query` and `/api/v2/query` with `handler` (501 without one).
    pub fn with_query(mut self, handler: Arc<dyn Handler>) -> Self {
        self.query = Some(handler);
        self
    }

    /// Answers the admin paths with `handler` (501 without one).
    pub fn with_admin(mut self, handler: Arc<dyn Handler>) -> Self {
        self.admin_handler = Some(handler);
        self
    }

    /// Reports every answered request to `observer` (latency metrics).
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn service(&self, surface: Surface) -> Arc<HttpService<W>> {
        Arc::new(HttpService {
            surface,
            limits: self.limits.clone(),
            inflight: self.inflight.clone(),
            health: self.health.clone(),
            writer: self.writer.clone(),
            query: self.query.clone(),
            admin: self.admin_handler.clone(),
            observer: self.observer.clone(),
            guard: self.guard.clone(),
        })
    }

    /// Authentication of both listeners; [`Guard::set_auth`] with [`auth_settings`] of a new
    /// config replaces the users and tokens in place (config reload).
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The address the main listener got (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.main.local_addr()
    }

    /// The address the admin listener got, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The cap on request-body bytes in flight, with its counters.
    pub fn inflight(&self) -> &InflightBytes {
        &self.inflight
    }

    /// Readiness, shared with `/health`.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The backend clients, in config order.
    pub fn backends(&self) -> &[BackendClient] {
        &self.backends
    }

    /// Serves until `shutdown` completes: then `/health` turns 503, the listeners close and
    /// in-flight requests get the drain period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> DrainReport {
        let (stop_tx, stop_rx) = watch::channel(false);
        let admin_stop = async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let shutdown = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let (drained, _) = tokio::sync::oneshot::channel();
        self.run_until(shutdown, drained, admin_stop).await
    }

    /// [`Node::run`], with the admin listener (when it has its own) closing only when
    /// `admin_stop` completes: `main_drained` is sent once the main listener has drained, and
    /// the node's queue report stays served meanwhile, for the peers to learn of what the
    /// drain queued. Returns once both listeners are done.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
        main_drained: tokio::sync::oneshot::Sender<()>,
        admin_stop: impl Future<Output = ()>,
    ) -> DrainReport {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let main_service = self.service(Surface::Main {
            with_admin: self.admin.is_none(),
        });
        let admin_service = self.service(Surface::Admin);
        let main = async {
            let report = server::run_with_tls(
                self.main,
                main_service,
                self.options,
                self.tls.main.clone(),
                stopped(stop_rx.clone()),
            )
            .await;
            let _ = main_drained.send(());
            report
        };
        let admin_tls = self.tls.admin.clone();
        let admin = async {
            match self.admin {
                Some(l) => Some(
                    server::run_with_tls(l, admin_service, self.options, admin_tls, admin_stop)
                        .await,
                ),
                None => None,
            }
        };
        let health = self.health.clone();
        let trigger = async move {
            shutdown.await;
            health.set_draining();
            tracing::info!("draining: /health answers 503, listeners are closing");
            let _ = stop_tx.send(true);
        };
        let ((), main_report, admin_report) = tokio::join!(trigger, main, admin);
        DrainReport {
            abandoned_connections: main_report.abandoned_connections
                + admin_report.map_or(0, |r| r.abandoned_connections),
        }
    }
}

/// The read path and the task keeping `board` current, over `replicas` (config order).
/// A client for every `[[peer]]`'s admin address.
pub(crate) fn peer_clients(config: &Config) -> Result<Vec<crate::monitor::Peer>, SetupError> {
    let mut peers = Vec::with_capacity(config.peers.len());
    for p in &config.peers {
        let peer = crate::config::BackendConfig {
            name: p.name.clone(),
            url: p.url.clone(),
            credentials: p.credentials.clone(),
            ca_file: p.ca_file.clone(),
        };
        let timeouts = Timeouts {
            connect: config.write.connect_timeout,
            request: config.health.timeout,
        };
        peers.push(crate::monitor::Peer {
            name: p.name.clone(),
            client: BackendClient::new(&peer, timeouts)?,
        });
    }
    Ok(peers)
}

/// The read path and the monitor over `replicas`. Nothing here can fail: the peers' clients
/// are made once at start (`[[peer]]` changes need a restart), so that a reload that changed
/// the backends always rebuilds both over the new set.
fn read_path(
    config: &Config,
    replicas: &[Arc<crate::write::replica::Replica>],
    board: &crate::state::StateBoard,
    limits: &SharedLimits,
    inflight: &InflightBytes,
    peers: &[crate::monitor::Peer],
    peers_changed: &Arc<crate::peers::PeerNews>,
) -> (crate::query::QueryService, crate::monitor::Monitor) {
    let clients: Vec<BackendClient> = replicas.iter().map(|r| r.client().clone()).collect();
    let marks = crate::monitor::PassiveMarks::new(clients.len());
    let peers = peers.to_vec();
    let query = crate::query::QueryService::new(
        clients.clone(),
        replicas.to_vec(),
        board.clone(),
        marks.clone(),
        config.query.clone(),
        limits.clone(),
        inflight.clone(),
    );
    let monitor = crate::monitor::Monitor {
        board: board.clone(),
        clients,
        replicas: replicas.to_vec(),
        peers,
        marks,
        health: config.health.clone(),
        reports_file: Some(config.data_dir.join(crate::monitor::PEER_REPORTS_FILE)),
        peers_changed: peers_changed.clone(),
    };
    (query, monitor)
}

/// Runs `monitor` until the node stops, stopping the one it replaces (a reload changed the
/// backends: the monitor publishes the board by config position).
fn spawn_monitor(
    monitor: crate::monitor::Monitor,
    stop_all: &tokio::sync::broadcast::Sender<()>,
    current: &std::sync::Mutex<Option<RunningMonitor>>,
) -> tokio::task::JoinHandle<()> {
    let (stop_this, _) = tokio::sync::broadcast::channel(1);
    let mut all = crate::shutdown::Shutdown::new(stop_all.subscribe());
    let this = crate::shutdown::Shutdown::new(stop_this.subscribe());
    let (ended, this_ended) = tokio::sync::oneshot::channel::<()>();
    let previous = current
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .replace((stop_this, this_ended));
    let previous_ended = previous.map(|(stop, ended)| {
        let _ = stop.send(());
        ended
    });
    tokio::spawn(async move {
        // Dropped when this task ends, which tells the monitor that replaces this one.
        let _ended = ended;
        // The one replaced ends first: a peer's report it took is on the board and on disk
        // before this one reads them, not taken by one and lost to the other.
        let run = async move {
            if let Some(previous) = previous_ended {
                let _ = previous.await;
            }
            monitor.run(this).await;
        };
        tokio::select! {
            () = run => {}
            () = all.recv() => {}
        }
    })
}

/// The monitor running: how to stop it, and what tells that it ended.
type RunningMonitor = (
    tokio::sync::broadcast::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
);

/// `influx-ha serve`: opens the queues, binds, replicates and replays until SIGTERM/SIGINT,
/// drains, then closes the queues durably.
pub async fn serve(config: Config) -> Result<DrainReport, NodeError> {
    serve_with_reload(config, None).await
}

/// [`serve`], reloading the config from `config_path` on SIGHUP (see [`crate::admin::reload`]).
pub async fn serve_with_reload(
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> Result<DrainReport, NodeError> {
    let started = std::time::SystemTime::now();
    // SIGHUP's default action ends the process: `systemctl reload` while the queues open or
    // the listener databases are created must not stop a relay that systemd then leaves down.
    // Heard from here on, it is acted on once the node runs. (Without a config file to read
    // again, SIGHUP keeps its default.)
    #[cfg(unix)]
    let hup = match &config_path {
        Some(_) => {
            use tokio::signal::unix::{SignalKind, signal};
            Some(signal(SignalKind::hangup()).map_err(NodeError::Signals)?)
        }
        None => None,
    };
    let clients = backend_clients(&config)?;
    let replicator = Arc::new(crate::write::Replicator::open(&config, &clients)?);
    // The read path and the task that keeps the backends' state current.
    let board = crate::state::StateBoard::new(crate::monitor::initial_states(&clients));
    let limits = SharedLimits::new(BodyLimits::of(&config.http));
    // A peer's notice that its queues changed, with its report: it counts at once.
    let peers_changed = Arc::new(crate::peers::PeerNews::default());
    let node = Node::bind_with(&config, |_, _| replicator.clone())
        .await?
        .with_limits(limits.clone());
    let inflight = node.inflight().clone();
    let peers = peer_clients(&config)?;
    let (query, monitor) = read_path(
        &config,
        &replicator.replicas(),
        &board,
        &limits,
        &inflight,
        &peers,
        &peers_changed,
    );
    // A reload that changes the backends rebuilds both over the new set (see below).
    let query_slot = Arc::new(crate::admin::reload::SwappableHandler::new(Arc::new(query)));
    let node = node.with_query(query_slot.clone());
    let (stop_monitor, _) = tokio::sync::broadcast::channel(1);
    let current_monitor = Arc::new(std::sync::Mutex::new(None));
    let monitor_task = spawn_monitor(monitor, &stop_monitor, &current_monitor);
    let last_monitor = current_monitor.clone();
    let addr = node.local_addr().unwrap_or(config.http.bind);
    tracing::info!(%addr, "listening (InfluxDB 1.6 API)");
    if let Some(admin) = node.admin_addr() {
        tracing::info!(%admin, "listening (admin)");
    }
    let mut http_listeners = vec![("http", addr.to_string())];
    if let Some(a) = node.admin_addr() {
        http_listeners.push(("admin", a.to_string()));
    }
    let anti_entropy = config
        .anti_entropy
        .clone()
        .map(|c| Arc::new(crate::repair::background::AntiEntropyStats::new(c)));
    let admin = crate::admin::AdminHandler::new(crate::admin::status::Sources {
        replicator: Replicator::clone(&replicator),
        board: Some(board.clone()),
        node_name: config.node_name.clone(),
        health: node.health().clone(),
        data_dir: config.data_dir.clone(),
        started,
        http_listeners,
        inflight: Some(node.inflight().clone()),
        anti_entropy: anti_entropy.clone(),
        peers_changed: Some(peers_changed.clone()),
        guard: Some(node.guard().clone()),
    });
    let node = node
        .with_admin(Arc::new(admin.clone()))
        .with_observer(admin.request_metrics());
    let node_has_admin = node.admin_addr().is_some();
    // As InfluxDB's UDP, Graphite and OpenTSDB services do: the listeners' databases exist
    // before lines arrive (queued, in order, for a backend that cannot take the statement now).
    let mut databases: Vec<&str> = config.udp.iter().map(|u| u.database.as_str()).collect();
    databases.extend(config.tcp.iter().map(|t| t.database.as_str()));
    databases.extend(config.graphite.iter().map(|g| g.database.as_str()));
    databases.extend(config.opentsdb.iter().map(|o| o.database.as_str()));
    databases.sort_unstable();
    databases.dedup();
    for db in databases {
        let outcomes = replicator.ensure_database(db).await;
        for (b, outcome) in node.backends().iter().zip(outcomes) {
            match outcome {
                crate::write::answer::Outcome::Acked => {
                    tracing::debug!(backend = b.name(), database = db, "database exists");
                }
                crate::write::answer::Outcome::Queued => {
                    tracing::warn!(
                        backend = b.name(),
                        database = db,
                        "cannot create the database now: queued"
                    );
                }
                other => {
                    tracing::error!(backend = b.name(), database = db, outcome = ?other, "cannot create the database");
                }
            }
        }
    }
    let sink = crate::ingest::ReplicatorSink::new(replicator.clone());
    let listeners = match crate::ingest::Listeners::bind(&config, sink, node.inflight()).await {
        Ok(l) => l,
        Err(e) => {
            replicator.close();
            return Err(NodeError::Bind {
                what: e.what,
                addr: e.addr,
                error: e.error,
            });
        }
    };
    let listener_stats = listeners.stats();
    admin.set_listeners(listener_stats.clone());
    let (stop_listeners, _) = tokio::sync::broadcast::channel(1);
    let listener_tasks = listeners.spawn(&stop_listeners);
    let (stop_replays, _) = tokio::sync::broadcast::channel(1);
    let replays = replicator.spawn_replays(&stop_replays);
    // SIGHUP reloads the config. Parts that reload something of their own (e.g. TLS
    // certificates) register with `reloader.on_reload(name, hook)` here.
    let reloader = config_path.map(|path| {
        Arc::new(crate::admin::reload::Reloader::new(
            path,
            config.clone(),
            Replicator::clone(&replicator),
            Some(board.clone()),
            stop_replays.clone(),
        ))
    });
    if let Some(r) = &reloader {
        // Certificates, users and tokens (`[auth]`) and the rate limit change in place; a
        // certificate that cannot be used refuses the whole reload.
        let (guard, tls) = (node.guard().clone(), node.listener_tls().clone());
        r.on_reload(
            "TLS certificates, [auth], rate_limit",
            Box::new(move |config| reload_security(&tls, &guard, config)),
        );
        let body_limits = limits.clone();
        r.on_reload(
            "[http] max_body_bytes, body_read_timeout",
            Box::new(move |config| {
                body_limits.set(BodyLimits::of(&config.http));
                Ok(())
            }),
        );
        let body_limits = limits.clone();
        let (board, stop_monitor) = (board.clone(), stop_monitor.clone());
        let peers_changed_hook = peers_changed.clone();
        r.on_backends_changed(Box::new(move |config, replicas| {
            let (query, monitor) = read_path(
                config,
                replicas,
                &board,
                &body_limits,
                &inflight,
                &peers,
                &peers_changed_hook,
            );
            query_slot.set(Arc::new(query));
            spawn_monitor(monitor, &stop_monitor, &current_monitor);
        }));
    }
    #[cfg(unix)]
    let reloading = reloader.as_ref().zip(hup).map(|(r, hup)| {
        tokio::spawn(r.clone().run_on_sighup(
            hup,
            crate::shutdown::Shutdown::new(stop_replays.subscribe()),
        ))
    });
    // Peers learn at once when this node's queues change, rather than at their next poll;
    // also of what the drain queued, after the last write (stopped last, see below).
    let (stop_telling, _) = tokio::sync::broadcast::channel(1);
    let tell_peers = if config.peers.is_empty() {
        None
    } else {
        Some(tokio::spawn(crate::peers::tell_changes(
            config.node_name.clone(),
            Replicator::clone(&replicator),
            peer_clients(&config)?,
            crate::shutdown::Shutdown::new(stop_telling.subscribe()),
        )))
    };
    let anti_entropy_task = anti_entropy.map(|stats| {
        tokio::spawn(crate::repair::background::run(
            stats,
            Replicator::clone(&replicator),
            board.clone(),
            crate::shutdown::Shutdown::new(stop_replays.subscribe()),
        ))
    });
    // `/health` turns 503 while no queue could keep a write for a backend that fails.
    let storage_watch = tokio::spawn(crate::health::watch_storage(
        node.health().clone(),
        Replicator::clone(&replicator),
        config.data_dir.clone(),
        crate::shutdown::Shutdown::new(stop_replays.subscribe()),
    ));
    let sampler = tokio::spawn(
        admin
            .clone()
            .run_sampler(crate::shutdown::Shutdown::new(stop_replays.subscribe())),
    );
    for b in node.backends() {
        let b = b.clone();
        tokio::spawn(async move {
            match b.ping().await {
                Ok(a) if a.status.as_u16() == 204 => {
                    tracing::info!(backend = b.name(), url = %b.url(), "backend answers /ping");
                }
                Ok(a) => {
                    tracing::warn!(backend = b.name(), url = %b.url(), status = a.status.as_u16(), "backend answers /ping unexpectedly")
                }
                Err(e) => {
                    tracing::warn!(backend = b.name(), url = %b.url(), error = %e, "backend unreachable")
                }
            }
        });
    }
    #[cfg(unix)]
    let signal = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
        async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutting down");
        }
    };
    #[cfg(not(unix))]
    let signal = async {
        let _ = crate::shutdown::termination_signal().await;
    };
    let stop_on_signal = stop_listeners.clone();
    let signal = async move {
        signal.await;
        let _ = stop_on_signal.send(());
    };
    // The admin listener (with the queue report peers read) outlives the main one: it closes
    // once the last write is queued and the peers were told.
    let (main_drained, drained) = tokio::sync::oneshot::channel();
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(node.run_until(signal, main_drained, async move {
        let _ = admin_stopped.await;
    }));
    let _ = drained.await;
    let _ = stop_listeners.send(());
    for task in listener_tasks {
        let _ = task.await;
    }
    for l in &listener_stats {
        tracing::info!(kind = l.kind, listener = %l.addr, database = %l.database, counters = ?l.counters.snapshot(), "listener counters");
    }
    let _ = stop_monitor.send(());
    let _ = monitor_task.await;
    let _ = stop_replays.send(());
    for replay in replays {
        let _ = replay.await;
    }
    let _ = sampler.await;
    let _ = storage_watch.await;
    if let Some(task) = anti_entropy_task {
        let _ = task.await;
    }
    #[cfg(unix)]
    if let Some(task) = reloading {
        let _ = task.await;
    }
    // A monitor that a reload started after the stop was sent never heard it: with the
    // reloads over, the one running now is stopped, and waited for.
    let running_monitor = last_monitor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some((stop, ended)) = running_monitor {
        let _ = stop.send(());
        let _ = ended.await;
    }
    // Replays of backends added by reloads; one spawned by a reload that finished after the
    // stop was sent never heard it: a few seconds, then it is stopped where it is (its batch
    // stays queued, as at any shutdown).
    if let Some(r) = &reloader {
        for mut replay in r.take_replays() {
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut replay)
                .await
                .is_err()
            {
                replay.abort();
                let _ = replay.await;
            }
        }
    }
    // A client that hung up leaves its write's fan-out running: it may still append to the
    // queues, which must stay open until it is over (it ends within the backend timeout).
    let abandoned_writes = replicator
        .wait_for_deliveries(config.http.drain_timeout)
        .await;
    if abandoned_writes > 0 {
        tracing::warn!(
            writes = abandoned_writes,
            "writes still being delivered at shutdown: their queue appends fail"
        );
    }
    replicator.close();
    if let Some(r) = &reloader {
        r.close_retired();
    }
    // What the drain queued is told to the peers, with the report; the admin listener stays a
    // moment for peers of an older version, which fetch the report instead.
    let _ = stop_telling.send(());
    if let Some(task) = tell_peers
        && task.await.unwrap_or(false)
        && node_has_admin
    {
        tokio::time::sleep(crate::peers::PEER_FETCH_GRACE).await;
    }
    let _ = admin_stop.send(());
    let report = match running.await {
        Ok(report) => report,
        // Not a clean stop: exit as the panic would have.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => DrainReport {
            abandoned_connections: 0,
        },
    };
    tracing::info!(
        abandoned_connections = report.abandoned_connections,
        "stopped"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        String::from_utf8_lossy(&out).into_owned()
    }

    fn config(admin: bool) -> Config {
        let admin = if admin {
            "[admin]\nbind = \"127.0.0.1:0\"\n"
        } else {
            ""
        };
        let text = format!(
            "data_dir = \"/tmp/unused\"\n[http]\nbind = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n{admin}[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n"
        );
        Config::from_toml(&text, "test").expect("valid")
    }

    #[tokio::test]
    async fn node_serves_both_listeners_and_drains_on_signal() {
        let node = Node::bind(&config(true)).await.expect("bind");
        let main = node.local_addr().expect("addr");
        let admin = node.admin_addr().expect("admin");
        let health = node.health().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let running = tokio::spawn(node.run(async move {
            let _ = rx.await;
        }));
        assert!(get(main, "/ping").await.starts_with("HTTP/1.1 204"));
        assert!(get(admin, "/health").await.starts_with("HTTP/1.1 200"));
        assert!(get(admin, "/status").await.starts_with("HTTP/1.1 501"));
        assert!(get(main, "/status").await.starts_with("HTTP/1.1 404"));
        tx.send(()).expect("running");
        let report = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("drains in time")
            .expect("no panic");
        assert_eq!(report.abandoned_connections, 0);
        assert!(health.is_draining());
        assert!(tokio::net::TcpStream::connect(main).await.is_err());
        assert!(tokio::net::TcpStream::connect(admin).await.is_err());
    }

    #[tokio::test]
    async fn the_admin_listener_outlives_the_main_one_until_told() {
        let node = Node::bind(&config(true)).await.expect("bind");
        let main = node.local_addr().expect("addr");
        let admin = node.admin_addr().expect("admin");
        let (tx, rx) = oneshot::channel::<()>();
        let (drained_tx, drained) = oneshot::channel();
        let (admin_tx, admin_rx) = oneshot::channel::<()>();
        let running = tokio::spawn(node.run_until(
            async move {
                let _ = rx.await;
            },
            drained_tx,
            async move {
                let _ = admin_rx.await;
            },
        ));
        tx.send(()).expect("running");
        tokio::time::timeout(Duration::from_secs(10), drained)
            .await
            .expect("drains in time")
            .expect("told");
        assert!(tokio::net::TcpStream::connect(main).await.is_err());
        // Still serving (the peers' queue report is there), and saying it is draining.
        assert!(get(admin, "/health").await.starts_with("HTTP/1.1 503"));
        admin_tx.send(()).expect("running");
        let report = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("stops in time")
            .expect("no panic");
        assert_eq!(report.abandoned_connections, 0);
        assert!(tokio::net::TcpStream::connect(admin).await.is_err());
    }

    #[tokio::test]
    async fn admin_paths_are_on_the_main_listener_without_admin() {
        let node = Node::bind(&config(false)).await.expect("bind");
        let main = node.local_addr().expect("addr");
        assert_eq!(node.admin_addr(), None);
        let (tx, rx) = oneshot::channel::<()>();
        let running = tokio::spawn(node.run(async move {
            let _ = rx.await;
        }));
        assert!(get(main, "/status").await.starts_with("HTTP/1.1 501"));
        tx.send(()).expect("running");
        running.await.expect("no panic");
    }

    #[tokio::test]
    async fn a_busy_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut c = config(false);
        c.http.bind = taken.local_addr().expect("addr");
        let err = Node::bind(&c).await.err().expect("port taken");
        assert!(err.to_string().contains("cannot listen on"), "{err}");
    }
}
