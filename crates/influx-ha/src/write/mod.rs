//! The write path's core: one validated batch fanned out to every backend, the consistency
//! level, and the answer (DESIGN.md §3).
//!
//! A request is validated by `lineproto` (lines without timestamp stamped now, so every replica
//! and every replay stores the same point), then one task per backend delivers the same shared
//! payload: behind the backend's queue while the queue holds data, otherwise directly, falling
//! back to the queue on a retryable failure. A backend queues only once the write is known not
//! to be refused by the others (or after a short wait). Once the level is met, backends still
//! in flight after a grace (as long again as the level took, at least 50 ms) get the batch
//! appended to their queue while their direct send goes on, and go behind it; the answer goes
//! out when every backend has acknowledged, queued, refused or failed. The fan-out runs in
//! its own task, so a client that hangs up does not cut a replication short.
//!
//! - [`answer`]: the answer table as a pure function.
//! - [`replica`]: one backend with its queue, direct delivery, and the replay task.
//! - [`lanes`]: a queued batch split by measurement into lanes the replay sends concurrently.

pub mod answer;
pub mod backoff;
pub(crate) mod flags;
pub mod lanes;
pub mod replica;
pub mod schema;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::answer::{Outcome, Refusals, decide, level_met};
use self::replica::{Batch, Delivery, QueueSlot, Replica, Settled};
use crate::backend::BackendClient;
use crate::config::{Config, FsyncPolicy, QueueConfig};
use crate::http::body::InflightPermit;
use crate::http::error::RequestError;
use crate::http::{WriteHandler, WriteRequest};
use crate::params::Consistency;
use crate::shutdown::Shutdown;

/// Once the consistency level is met, the least time direct sends still running are waited
/// for before their backends get the batch queued as well: long enough for a healthy second
/// backend on the same network, short enough that a stalled one does not show.
pub const SLOW_BACKEND_GRACE: Duration = Duration::from_millis(50);

/// With `consistency = "any"`, the longest a backend that cannot take a write directly waits
/// for the others' answers before queueing it: long enough for a refusal from a backend on the
/// same network, short since a stalled backend delays the answer by about this much. (With the
/// other levels only an acknowledgement meets the level, so it waits for the answers.)
pub const QUEUE_WAIT: Duration = Duration::from_millis(200);

/// The longest a write that no backend can take directly waits for one catching up on its
/// queue to drain, so that it goes there directly instead of into every queue (see
/// [`wait_for_a_direct_backend`]).
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// How often a write waiting for a backend to catch up looks again.
const CATCH_UP_POLL: Duration = Duration::from_millis(5);

/// Size cap of each backend's dead-letter store.
pub const DEAD_LETTER_MAX_BYTES: u64 = 1 << 30;

/// A backend's queue could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("backend {backend}: cannot open its queue in {dir}: {error}")]
pub struct OpenError {
    pub backend: String,
    pub dir: String,
    pub error: handoff::Error,
}

/// The queue options of `[queue]`.
pub fn queue_options(q: &QueueConfig) -> handoff::Options {
    handoff::Options {
        // A record never spans segments: small segments cap the record size (a longer write
        // is queued as several records, cut at line ends).
        max_record_bytes: handoff::Options::default()
            .max_record_bytes
            .min(q.segment_bytes.saturating_sub(16)),
        segment_bytes: q.segment_bytes,
        max_bytes: q.max_bytes,
        max_age: Some(q.max_age),
        min_free_bytes: q.min_free_disk,
        fsync: match q.fsync {
            FsyncPolicy::Always => handoff::FsyncPolicy::Always,
            FsyncPolicy::Interval(d) => handoff::FsyncPolicy::Interval(d),
            FsyncPolicy::Never => handoff::FsyncPolicy::Never,
        },
    }
}

/// Opens one backend's queues under `data_dir/<backend>/`; `all` are every configured
/// backend (the others are where missing retention policies are copied from).
pub fn open_replica(
    config: &Config,
    client: &BackendClient,
    all: &[BackendClient],
) -> Result<Arc<Replica>, OpenError> {
    let dir = config.data_dir.join(client.name());
    let peers = all
        .iter()
        .filter(|c| c.name() != client.name())
        .cloned()
        .collect();
    let replica = Replica::open(
        &dir,
        client.clone(),
        peers,
        queue_options(&config.queue),
        DEAD_LETTER_MAX_BYTES,
    )
    .map_err(|error| OpenError {
        backend: client.name().to_owned(),
        dir: dir.display().to_string(),
        error,
    })?;
    replica.set_replay_lanes(config.queue.replay_lanes);
    if replica.queue().has_pending() {
        let stats = replica.queue().stats();
        tracing::info!(
            backend = client.name(),
            records = stats.depth_records,
            bytes = stats.depth_bytes,
            "queue holds data from before: replaying it"
        );
    }
    if let Some(why) = replica.diverged() {
        tracing::warn!(
            backend = client.name(),
            reason = why,
            "backend is marked diverged"
        );
    }
    Ok(Arc::new(replica))
}

/// Replicates writes to every backend.
///
/// Clones share one replica set, which a config reload swaps ([`Replicator::set_replicas`]):
/// a write takes the set once (one atomic load) and fans out to exactly that set, so a write in
/// flight during a reload completes against the backends it started with.
#[derive(Debug, Clone)]
pub struct Replicator {
    replicas: Arc<ArcSwap<Vec<Arc<Replica>>>>,
    /// The `[write] consistency` used when a request gives none (reloadable).
    default_consistency: Arc<ArcSwap<Consistency>>,
    /// Once the level is met, how long still-running direct sends are waited for before their
    /// backends get the batch queued instead.
    grace: Duration,
    /// How long a write no backend can take directly waits for one to catch up.
    catch_up_wait: Duration,
    /// Fan-outs running (also those whose client is gone): shutdown waits for them before it
    /// closes the queues they may still append to.
    deliveries: Arc<watch::Sender<usize>>,
    /// Set once the queues are closed at shutdown.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Set when shutdown starts waiting for the fan-outs before it closes the queues: a write
    /// counted after that is refused, so none starts on queues about to close.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

/// One running fan-out, counted in [`Replicator::deliveries`] while it lives.
pub struct Delivering(Arc<watch::Sender<usize>>);

impl Delivering {
    fn start(count: &Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Delivering(count.clone())
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Replicator {
    pub fn new(
        replicas: Vec<Arc<Replica>>,
        default_consistency: Consistency,
        grace: Duration,
    ) -> Self {
        Replicator {
            replicas: Arc::new(ArcSwap::from_pointee(replicas)),
            default_consistency: Arc::new(ArcSwap::from_pointee(default_consistency)),
            grace,
            catch_up_wait: CATCH_UP_WAIT,
            deliveries: Arc::new(watch::Sender::new(0)),
            closed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            closing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Changes how long a write waits for a backend to catch up (tests on a busy machine).
    #[cfg(test)]
    pub(crate) fn set_catch_up_wait(&mut self, wait: Duration) {
        self.catch_up_wait = wait;
    }

    /// The current replica set, in config order.
    pub fn replicas(&self) -> Arc<Vec<Arc<Replica>>> {
        self.replicas.load_full()
    }

    /// Replaces the replica set (config reload); writes already fanning out keep the set they
    /// started with.
    pub fn set_replicas(&self, replicas: Vec<Arc<Replica>>) {
        self.replicas.store(Arc::new(replicas));
    }

    /// The consistency level of requests that give none.
    pub fn default_consistency(&self) -> Consistency {
        **self.default_consistency.load()
    }

    /// Changes the default consistency level (config reload).
    pub fn set_default_consistency(&self, level: Consistency) {
        self.default_consistency.store(Arc::new(level));
    }

    /// Opens every backend's queue under `data_dir/<backend>/` (clients in config order).
    pub fn open(config: &Config, clients: &[BackendClient]) -> Result<Self, OpenError> {
        let mut replicas = Vec::with_capacity(clients.len());
        for client in clients {
            replicas.push(open_replica(config, client, clients)?);
        }
        Ok(Self::new(
            replicas,
            config.write.consistency,
            SLOW_BACKEND_GRACE,
        ))
    }

    /// Starts one replay task per backend; they end on `shutdown`.
    pub fn spawn_replays(
        &self,
        shutdown: &tokio::sync::broadcast::Sender<()>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.replicas
            .load()
            .iter()
            .map(|r| tokio::spawn(r.clone().replay(Shutdown::new(shutdown.subscribe()))))
            .collect()
    }

    /// Refuses new writes (503), then waits until no fan-out is running, for at most `limit`;
    /// returns how many still are. For shutdown, before the queues close.
    pub async fn wait_for_deliveries(&self, limit: Duration) -> usize {
        self.closing.store(true, Ordering::SeqCst);
        // Paired with the fence in `replicate_checked`: a write counted before this either
        // sees the mark or is counted in what is waited for here.
        std::sync::atomic::fence(Ordering::SeqCst);
        let mut running = self.deliveries.subscribe();
        let _ = tokio::time::timeout(limit, running.wait_for(|n| *n == 0)).await;
        *self.deliveries.borrow()
    }

    /// Counts an operation that appends to the queues (an operator's dead-letter replay) as a
    /// delivery, which shutdown waits for before the queues close; `None` once shutdown began.
    pub fn start_queue_work(&self) -> Option<Delivering> {
        let running = Delivering::start(&self.deliveries);
        std::sync::atomic::fence(Ordering::SeqCst);
        (!self.closing.load(Ordering::SeqCst) && !self.is_closed()).then_some(running)
    }

    /// Makes every queue durable and closes it (after the replay tasks ended).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for r in self.replicas.load().iter() {
            r.close();
        }
    }

    /// Whether [`Self::close`] ran: the node is stopping and its queues take nothing more.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Creates `db` on every backend, queueing the statement for those that cannot take it now
    /// (as InfluxDB's UDP service creates its database at start).
    pub async fn ensure_database(&self, db: &str) -> Vec<Outcome> {
        let mut set = JoinSet::new();
        let replicas = self.replicas.load_full();
        for (i, r) in replicas.iter().enumerate() {
            let (r, db) = (r.clone(), db.to_owned());
            set.spawn(async move { (i, r.ensure_database(&db).await) });
        }
        collect(set, replicas.len()).await
    }

    /// Validates and replicates one write; the outcome is the client's answer.
    pub async fn replicate(
        &self,
        db: String,
        rp: Option<String>,
        precision: &str,
        consistency: Consistency,
        data: Bytes,
    ) -> Result<(), RequestError> {
        let uncounted = InflightPermit::default();
        // The listeners' writes do not wait for a backend to catch up: a UDP listener cannot
        // slow its senders down and would drop datagrams instead.
        self.replicate_checked(db, rp, precision, Ok(consistency), data, uncounted, false)
            .await
    }

    /// [`Self::replicate`] with the request's consistency level as parsed: an invalid one is
    /// answered where 1.6 checks it, after a body without a single point was refused. `permit`
    /// keeps the body counted against the in-flight cap until every backend has its copy,
    /// also when the client is gone before (the delivery goes on without it). `may_wait`: the
    /// write may wait for a backend to catch up ([`wait_for_a_direct_backend`]).
    #[allow(clippy::too_many_arguments)]
    async fn replicate_checked(
        &self,
        db: String,
        rp: Option<String>,
        precision: &str,
        consistency: Result<Consistency, RequestError>,
        data: Bytes,
        permit: InflightPermit,
        may_wait: bool,
    ) -> Result<(), RequestError> {
        let precision = lineproto::Precision::from_v1_param(precision);
        let v = lineproto::validate(&data, precision, unix_nanos());
        if v.points() == 0
            && v.dropped() == 0
            && let Some(m) = v.influx_error()
        {
            return Err(RequestError::Unparsable(m));
        }
        let consistency = consistency?;
        if v.points() == 0 {
            // Nothing to store (an empty body), or only points the storage layer drops.
            return v
                .influx_error()
                .map_or(Ok(()), |m| Err(RequestError::PartialWrite(m)));
        }
        // Counted before the shutdown mark is looked at (see `wait_for_deliveries`): a body that
        // finished arriving after the drain began is refused, since its copies might no longer
        // be queued (and a backend would lose its copy of a write others acknowledged).
        let running = Delivering::start(&self.deliveries);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.closing.load(Ordering::SeqCst) || self.is_closed() {
            return Err(RequestError::Unavailable(
                "the node is shutting down: its queues are closed; retry".to_owned(),
            ));
        }
        let refusals = Refusals::of(&v);
        let payload = if v.is_unchanged() {
            data.clone()
        } else {
            Bytes::from(v.into_output().into_owned())
        };
        let batch = Arc::new(Batch {
            db,
            rp: rp.unwrap_or_default(),
            precision: precision.v1_param(),
            payload,
        });
        let replicas = self.replicas.load_full();
        // Only where the client can be slowed down, and where a queued copy does not already
        // meet the level.
        if may_wait && consistency != Consistency::Any {
            wait_for_a_direct_backend(&replicas, self.catch_up_wait).await;
        }
        let delivery = fan_out(replicas, batch, consistency, self.grace);
        let fan_out = tokio::spawn(async move {
            let outcomes = delivery.await;
            drop((permit, running));
            outcomes
        });
        let outcomes = fan_out
            .await
            .map_err(|e| RequestError::Internal(format!("replication task failed: {e}")))?;
        decide(consistency, &outcomes, &refusals)
    }
}

impl WriteHandler for Replicator {
    async fn write(&self, request: WriteRequest) -> Result<(), RequestError> {
        let consistency = request.consistency(self.default_consistency());
        let body = request.body;
        self.replicate_checked(
            request.db,
            request.rp,
            &request.precision,
            consistency,
            body.data,
            body.permit,
            true,
        )
        .await
    }
}

/// When every backend is behind its queue and some are up and only catching up, waits (at most
/// `wait`, [`CATCH_UP_WAIT`]) until one of them drained and takes writes directly again.
///
/// Under a load above what the backends take, two backends in turn fall behind their queues
/// (a slow one is insured), and once both are, every write would be appended to every queue and
/// answered at the disk's pace: clients would no longer be slowed down to the backends' pace,
/// and the queues would grow for as long as the load lasts. Waiting here gives the replays the
/// time to catch up. A backend that is down or failing is not waited for.
async fn wait_for_a_direct_backend(replicas: &[Arc<Replica>], wait: Duration) {
    if replicas.iter().any(|r| !r.is_queueing()) {
        return;
    }
    let catching_up: Vec<&Arc<Replica>> = replicas.iter().filter(|r| r.catching_up()).collect();
    if catching_up.is_empty() {
        return;
    }
    for r in &catching_up {
        r.counters.catch_up_waits.fetch_add(1, Ordering::Relaxed);
    }
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline
        && replicas.iter().all(|r| r.is_queueing())
        && replicas.iter().any(|r| r.catching_up())
    {
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

/// Whether the backends that could not take a write directly may queue it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Not known yet: no backend stored the write, and some direct send is still running.
    Shut,
    /// Queue it: a backend stored it, no direct send is left, or the wait is over.
    Open,
    /// Every backend that answered refused the write: queue it nowhere.
    Refused,
}

impl Gate {
    /// The gate once `outcomes` are known, `all_returned` when every delivery has returned.
    fn after(outcomes: &[Option<Outcome>], all_returned: bool) -> Gate {
        let known = || outcomes.iter().flatten();
        if known().any(Outcome::is_acked) {
            Gate::Open
        } else if !all_returned {
            Gate::Shut
        } else if known().any(|o| matches!(o, Outcome::Refused { .. })) {
            Gate::Refused
        } else {
            Gate::Open
        }
    }
}

/// Delivers `batch` to every replica; returns each one's outcome, in replica order.
///
/// A backend that cannot take the batch directly queues it only once another backend stored
/// it or every direct send is over without a refusal (with `any`, after [`QUEUE_WAIT`] at
/// most): a write the answering backends refused is then queued nowhere, as DESIGN.md §3 has
/// it. Queued, it would reach that backend alone once its database exists.
async fn fan_out(
    replicas: Arc<Vec<Arc<Replica>>>,
    batch: Arc<Batch>,
    consistency: Consistency,
    grace: Duration,
) -> Vec<Outcome> {
    let n = replicas.len();
    let started = tokio::time::Instant::now();
    let (force, forced) = watch::channel(false);
    // Told to slow backends' own sends, which go on after their copy was queued.
    let (settle, settled) = watch::channel(None);
    let mut set = JoinSet::new();
    for (i, replica) in replicas.iter().enumerate() {
        let (replica, batch) = (replica.clone(), batch.clone());
        let (forced, settled) = (forced.clone(), settled.clone());
        set.spawn(async move { (i, replica.deliver(&batch, forced, settled).await) });
    }

    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    // Deliveries returned while the gate was shut: until it opens, every task is one.
    let mut returned = 0;
    let mut to_queue: Vec<(usize, QueueSlot)> = Vec::new();
    let mut gate = Gate::Shut;
    // Only `any` can be met by a queued copy: for the other levels opening the gate early
    // would not answer sooner, and would queue writes that then turn out refused.
    let timed = consistency == Consistency::Any;
    let gate_timer = tokio::time::sleep(QUEUE_WAIT);
    tokio::pin!(gate_timer);
    // How long the gate kept the level from being met: not counted in the slow backends' grace.
    let mut gate_wait = Duration::ZERO;
    let grace_timer = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(grace_timer);
    let mut grace_started = false;
    loop {
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                if gate == Gate::Shut {
                    returned += 1;
                }
                match joined {
                    Ok((i, Delivery::Settled(outcome))) => outcomes[i] = Some(outcome),
                    Ok((i, Delivery::ToQueue(slot))) => to_queue.push((i, slot)),
                    Err(e) => tracing::error!(error = %e, "delivery task failed"),
                }
                if gate == Gate::Shut {
                    gate = Gate::after(&outcomes, returned == n);
                }
            }
            () = &mut gate_timer, if timed && gate == Gate::Shut => {
                gate = Gate::Open;
                gate_wait = QUEUE_WAIT;
            }
            () = &mut grace_timer, if grace_started && !*force.borrow() => {
                let _ = force.send(true);
            }
        }
        match gate {
            Gate::Shut => {}
            Gate::Open => {
                for (i, slot) in to_queue.drain(..) {
                    let batch = batch.clone();
                    set.spawn(async move { (i, Delivery::Settled(slot.enqueue(&batch).await)) });
                }
            }
            Gate::Refused => {
                // Dropping a slot gives its place in the queue back.
                for (i, _slot) in to_queue.drain(..) {
                    outcomes[i] = Some(Outcome::Withheld);
                }
            }
        }
        let known: Vec<&Outcome> = outcomes.iter().flatten().collect();
        if !grace_started && level_met(consistency, n, &known) {
            // The others get as long again as the level took (at least `grace`): under load
            // every backend is slower, and only a stalled one is insured.
            grace_started = true;
            let waited = started.elapsed().saturating_sub(gate_wait);
            grace_timer
                .as_mut()
                .reset(tokio::time::Instant::now() + grace.max(waited));
        }
    }
    let mut outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .zip(replicas.iter())
        .map(|(o, replica)| {
            o.unwrap_or_else(|| {
                // Its task panicked: the copy is neither delivered nor queued.
                replica.mark_diverged("a write's delivery to it failed (an internal error)");
                Outcome::Failed("delivery task failed".to_owned())
            })
        })
        .collect();
    settle_refusals(&replicas, &batch, &mut outcomes).await;
    let _ = settle.send(Some(Settled {
        fewest_dropped: outcomes.iter().filter_map(Outcome::dropped).min(),
    }));
    outcomes
}

/// A backend that refused what another stored must not silently miss it. A missing database
/// or retention policy is queued (the replay creates the database, then delivers); any other
/// refusal marks the backend diverged, as does storing fewer of the points than another
/// backend did (a partial write where another wrote more: a field type only it has, say).
/// When every backend refused, the client gets the refusal and nothing is queued, as with
/// InfluxDB itself.
async fn settle_refusals(replicas: &[Arc<Replica>], batch: &Batch, outcomes: &mut [Outcome]) {
    let fewest_dropped = outcomes.iter().filter_map(Outcome::dropped).min();
    for (replica, outcome) in replicas.iter().zip(outcomes.iter()) {
        if let Outcome::AckedPartial(message) = outcome
            && outcome.dropped() > fewest_dropped
        {
            replica.mark_diverged(&format!(
                "stored fewer points of a write than another backend: {}",
                String::from_utf8_lossy(message)
            ));
        }
    }
    if !outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Acked | Outcome::AckedPartial(_)))
    {
        // Refused (with `any`) only after `QUEUE_WAIT`, when the others had queued it: their
        // replay would store it on them alone. A missing database or retention policy is
        // left to the replay, which keeps the batch as a dead letter when no other backend
        // has the schema either.
        let refusal = outcomes.iter().find_map(|o| match o {
            Outcome::Refused { status, message } if !lacks_schema(message) => {
                Some((*status, message))
            }
            _ => None,
        });
        if let Some((status, message)) = refusal {
            for (replica, outcome) in replicas.iter().zip(outcomes.iter()) {
                if matches!(outcome, Outcome::Queued) {
                    replica.mark_diverged(&format!(
                        "queued a write that another backend refused ({status}) too late to withhold it: {}",
                        String::from_utf8_lossy(message)
                    ));
                }
            }
        }
        return;
    }
    for (replica, outcome) in replicas.iter().zip(outcomes.iter_mut()) {
        let Outcome::Refused { status, message } = outcome else {
            continue;
        };
        let text = String::from_utf8_lossy(message).into_owned();
        if lacks_schema(message) {
            tracing::warn!(backend = replica.name(), reason = %text, "refused what another backend stored: queued");
            *outcome = replica.enqueue(batch).await;
        } else {
            replica.mark_diverged(&format!(
                "refused ({status}) a write another backend stored: {text}"
            ));
        }
    }
}

/// Whether a refusal says the backend lacks the database or retention policy written to.
fn lacks_schema(message: &[u8]) -> bool {
    message.starts_with(b"database not found") || message.starts_with(b"retention policy not found")
}

async fn collect(mut set: JoinSet<(usize, Outcome)>, n: usize) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, o)) = joined {
            outcomes[i] = Some(o);
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed("task failed".to_owned())))
        .collect()
}

#[cfg(test)]
mod tests;
