//! One backend as the write path sees it: its client, its hinted-handoff queue, whether new
//! writes go to it directly or behind its queue, and the replay task that drains the queue.
//!
//! Queueing mode is entered by whoever appends (a failed or slow direct send, or a write that
//! found the mode on) and left only by the replay task, when the queue is empty and no append
//! is in flight: so a write never overtakes older data queued for the same backend.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use handoff::{BatchKind, Queue, Record, RecordId};
use http::StatusCode;
use tokio::sync::{Notify, watch};

use super::answer::Outcome;
use super::backoff::Backoff;
use super::lanes;
use super::schema::{self, quote_ident};
use crate::backend::{BackendClient, SendError, WriteOutcome, classify};
use crate::shutdown::Shutdown;

/// Largest batch the replay sends at once (bytes of line protocol).
const MAX_REPLAY_BATCH: usize = 4 << 20;

/// Insured records whose own send succeeded kept for the replay to skip; past this the oldest
/// is forgotten (and simply replayed: a duplicate, harmless).
const MAX_DELIVERED_INSURED: usize = 8;

/// Statements refused everywhere they ran, remembered per backend that has them queued
/// ([`Replica::note_refused_elsewhere`]); the oldest are forgotten past this.
const MAX_REFUSED_ELSEWHERE: usize = 1024;

/// How a backend refused a state-changing statement: the status of the answer and the errors
/// it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The answer's status (InfluxQL reports most failed statements inside a 200).
    pub status: StatusCode,
    /// The first error the answer reports, for messages.
    pub error: Option<String>,
    /// Every error it reports with its statement's index (InfluxDB runs none after the first
    /// that fails); `None` when the answer could not be read whole.
    errors: Option<Vec<(Option<u64>, String)>>,
}

impl Refusal {
    /// The refusal an answer says, if it is one.
    pub fn of(status: StatusCode, body: &[u8]) -> Option<Refusal> {
        // The answer is read once; one not read whole is searched for its first error.
        let errors = schema::statement_errors(body);
        let error = match &errors {
            Some(errors) => errors.first().map(|(_, e)| e.clone()),
            None => schema::statement_error(body),
        };
        (!status.is_success() || error.is_some()).then_some(Refusal {
            status,
            error,
            errors,
        })
    }

    /// Whether the two answers refused the same statements the same way: then the backends
    /// that gave them are left alike. An answer not read whole is like no other.
    pub fn is_like(&self, other: &Refusal) -> bool {
        self.status == other.status && self.errors.is_some() && self.errors == other.errors
    }
}

/// What [`Replica::deliver`] made of a write.
pub enum Delivery {
    /// Acknowledged, refused, or (insured while its send goes on) queued.
    Settled(Outcome),
    /// Not taken directly: to be queued in this slot, once the fan-out knows the write is not
    /// refused.
    ToQueue(QueueSlot),
}

/// A place taken in a backend's queue for a write not yet appended. While it is held the
/// backend is in queueing mode with one append counted in flight, so its replay cannot leave
/// that mode and let a later write go direct before this one: the write is appended with
/// [`QueueSlot::enqueue`], or the slot dropped (the write withheld) and the mode left if the
/// queue is empty.
pub struct QueueSlot {
    replica: Arc<Replica>,
    /// Still counted in flight by this slot.
    held: bool,
}

impl QueueSlot {
    /// Appends `batch` in this slot; its outcome.
    pub async fn enqueue(mut self, batch: &Batch) -> Outcome {
        let outcome = self
            .replica
            .submit_counted(self.replica.write_pieces(batch))
            .await
            .0;
        // `submit_counted` ended the count.
        self.held = false;
        outcome
    }
}

/// An insured send still running, counted in `late_sends` until dropped (by a panic too).
/// Then the replay is woken: queueing mode may have waited for this send alone, and only the
/// replay leaves it while it may hold a batch (a purged one included).
struct LateSend(Arc<Replica>);

impl LateSend {
    fn start(replica: &Arc<Replica>) -> Self {
        replica.late_sends.send_modify(|n| *n += 1);
        LateSend(replica.clone())
    }
}

impl Drop for LateSend {
    fn drop(&mut self) {
        self.0.late_sends.send_modify(|n| *n -= 1);
        self.0.kick();
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        if self.held {
            lock(&self.replica.mode).appends_in_flight -= 1;
            self.replica.leave_queueing_if_drained();
        }
    }
}

/// How long a replayed statement may run (a `SELECT … INTO` backfill takes a while; InfluxDB
/// stops a statement whose client hangs up, so a short deadline would retry it for ever).
pub(crate) const STATEMENT_REPLAY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Bytes of a replayed statement's answer read: its error, if any, comes first; rows are not
/// needed.
const STATEMENT_ANSWER_KEPT: usize = 64 * 1024;

/// How deep a batch refused as too large is split before it is dead-lettered.
const MAX_SPLIT_DEPTH: u32 = 16;
/// A validated write, shared by every backend's delivery.
#[derive(Debug)]
pub struct Batch {
    pub db: String,
    /// Empty for the database's default retention policy.
    pub rp: String,
    /// The v1 `precision` spelling of the payload's timestamps.
    pub precision: &'static str,
    /// Valid lines, every one with a timestamp.
    pub payload: Bytes,
}

/// What the fan-out of a batch found once every backend's delivery had returned: the fewest
/// points a backend that took the batch dropped (`None`: none took it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub fewest_dropped: Option<usize>,
}

/// Whether a slow backend's own send, answered `message` (a partial write), stored as much as
/// the backend that stored most of the batch: replayed, it would only be refused the same way
/// and the backend marked diverged for nothing. Waits for the fan-out to settle (it does not
/// wait for this send); false when it ended without settling, or when no other backend took
/// the batch (nothing to compare with: the copy is replayed, as any other).
async fn stored_no_less(mut settled: watch::Receiver<Option<Settled>>, message: &[u8]) -> bool {
    let Some(dropped) = crate::write::answer::dropped_count(message) else {
        return false;
    };
    match settled.wait_for(Option::is_some).await {
        // Fewer dropped here: another backend lacks points this one has, which the replay's
        // dead letter and the backend's mark at least make visible.
        Ok(s) => s.is_some_and(|s| s.fewest_dropped == Some(dropped)),
        Err(_) => false,
    }
}

#[derive(Debug, Default)]
struct Mode {
    /// New writes go behind the queue.
    queueing: bool,
    /// Appends submitted and not yet complete.
    appends_in_flight: usize,
    /// The replay is sending a batch, which may have been purged meanwhile: a write sent
    /// directly now could land before it.
    sending: bool,
}

/// Marks the replay as sending a batch ([`Mode::sending`]) until dropped.
struct Sending<'a>(&'a Replica);

impl<'a> Sending<'a> {
    fn start(replica: &'a Replica) -> Self {
        lock(&replica.mode).sending = true;
        Sending(replica)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        lock(&self.0.mode).sending = false;
    }
}

/// Counters for the status page and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub direct_ok: AtomicU64,
    pub direct_failed: AtomicU64,
    pub queued: AtomicU64,
    pub replayed_batches: AtomicU64,
    /// Batches appended because the direct send was slower than the consistency level needed.
    pub insured: AtomicU64,
    /// Of those, acknowledged in the queue without a replay because their direct send succeeded (or stored as much as the others).
    pub insured_skipped: AtomicU64,
    pub replay_errors: AtomicU64,
    /// Replayed batches that had been read from disk while the one before was being sent.
    pub read_ahead: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Writes that found every backend behind its queue and waited for this one's replay to
    /// catch up.
    pub catch_up_waits: AtomicU64,
}

/// One backend with its queue.
#[derive(Debug)]
pub struct Replica {
    client: BackendClient,
    /// The other backends: where a missing database's retention policies are copied from.
    peers: Mutex<Vec<BackendClient>>,
    queue: Queue,
    dead_letters: Queue,
    dir: PathBuf,
    mode: Mutex<Mode>,
    /// Why this backend may miss data (persisted in `dir/diverged`); `None` when in sync.
    diverged: Mutex<Option<String>>,
    /// When data was last dropped for this backend (Unix ms; 0: not since the start): a
    /// verify that began before it cannot clear the flag.
    diverged_marked_ms: AtomicU64,
    /// How many times data was dropped for this backend since start, and a number that tells
    /// this process from others: together they change whenever data is dropped, on any clock
    /// ([`Replica::divergence_marks`]).
    diverge_count: AtomicU64,
    epoch: u64,
    /// Held while the `diverged` file is written or removed, so that every caller of
    /// [`Replica::mark_diverged`] returns only once the flag is on disk, and a clear and a
    /// mark never leave the file saying the opposite of memory.
    flag_io: Mutex<()>,
    /// Whether the `diverged` file says what `diverged` holds.
    diverged_on_disk: AtomicBool,
    /// A [`Replica::persist_diverged_later`] is running.
    persisting: AtomicBool,
    /// The last delivery problem, for operators.
    last_error: Mutex<Option<String>>,
    /// Operator maintenance (persisted in `dir/maintenance`): every write is queued and the
    /// replay pauses until [`Replica::resume`].
    maintenance: AtomicBool,
    /// Wakes the replay out of a backoff or maintenance pause (resume, `queue drain`, retire).
    kick: Notify,
    /// Whether the health checks find the backend down and not answering its pings: a
    /// replayed statement is not sent to it then, and one waiting for its answer stops waiting
    /// (a stopped backend keeps its connections open and never answers).
    down: watch::Sender<bool>,
    /// Removed from the config: the replay stops; what is queued stays on disk.
    retired: AtomicBool,
    /// Whether the backend answered its last request ([`Link`] as a number): passive marking,
    /// for the status page until active health checks report.
    link: AtomicU8,
    /// When `link` last changed, Unix milliseconds.
    link_since_ms: AtomicU64,
    /// `[queue] replay_lanes`: concurrent requests per replayed batch (changed by a reload).
    replay_lanes: AtomicUsize,
    /// Insured direct sends still running: the replay waits for none to be, so that what was
    /// queued after an insured write never reaches the backend before that write's own send.
    late_sends: watch::Sender<usize>,
    /// Insured records that were the first in the queue and whose direct send then succeeded
    /// (or stored as much as the others): the replay acknowledges such a record without
    /// sending it again.
    delivered_insured: Mutex<VecDeque<RecordId>>,
    /// Queued statements that every backend which ran them refused, with that refusal
    /// ([`Replica::note_refused_elsewhere`]).
    refused_elsewhere: Mutex<VecDeque<(RecordId, Refusal)>>,
    /// Held while dead letters are moved back into the queue: one move at a time.
    requeueing: tokio::sync::Mutex<()>,
    pub counters: Counters,
}

/// What the other backends know of a database a backend lacks (or of its retention policy).
enum PeerSchema {
    /// `from` has it, with these retention policies.
    Has {
        from: String,
        policies: Vec<schema::RetentionPolicy>,
    },
    /// Every other backend answered that it lacks it too (or there is none).
    NoneHas,
    /// None has it, and some could not be asked: why.
    Unknown(String),
}

/// Whether a backend answered the last request sent to it (passive reachability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Nothing sent yet.
    Unknown,
    /// It answered (whatever the status).
    Answered,
    /// The last request failed: connection error, timeout, 5xx.
    Failed,
}

/// Name of the file whose presence puts a backend in maintenance (under `data_dir/<backend>/`).
pub const MAINTENANCE_FILE: &str = "maintenance";
/// Name of the file holding why a backend diverged (under `data_dir/<backend>/`).
pub const DIVERGED_FILE: &str = "diverged";

/// A failed send in words, for the status page.
fn describe(outcome: &WriteOutcome) -> String {
    match outcome {
        WriteOutcome::Retryable { reason } => reason.clone(),
        WriteOutcome::AuthFailed { status, .. } => {
            format!("refused the service credentials ({status})")
        }
        WriteOutcome::TooLarge => "refused the batch as too large (413)".to_owned(),
        other => format!("{other:?}"),
    }
}

/// `payload` in pieces of at most `max` bytes, each of whole lines (a `\n` inside a quoted
/// string does not end one). A line longer than `max` is a piece of its own (the queue
/// refuses it), and the lines after it are cut as before.
pub(super) fn split_at_lines(payload: &Bytes, max: usize) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut rest = payload.clone();
    while rest.len() > max {
        let mut whole = lineproto::complete_lines(&rest[..max]);
        if whole == 0 {
            // The first line alone is longer than `max`: up to its end.
            whole = lineproto::lines(&rest)
                .next()
                .map_or(rest.len(), <[u8]>::len);
        }
        pieces.push(rest.split_to(whole));
    }
    pieces.push(rest);
    pieces.retain(|p| !p.is_empty());
    pieces
}

/// The `'static` spelling of a v1 precision read back from a queue.
fn static_precision(p: &str) -> &'static str {
    match p {
        "u" => "u",
        "ms" => "ms",
        "s" => "s",
        "m" => "m",
        "h" => "h",
        "n" => "n",
        _ => "",
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one delivery attempt of a queued batch came to.
enum Step {
    Delivered,
    Retry(String),
    /// Not sent: the backend cannot take it now (down). Waited out without counting an error:
    /// the health checks would count it against the backend and keep it down.
    Wait(String),
    /// The start of the payload was delivered (a 413 split it): only `rest` is to be sent
    /// again, so that what the backend refused of the start is not dead-lettered twice.
    Rest {
        why: String,
        rest: Bytes,
    },
}

/// A batch read from the queue, its write payload split into lanes.
struct Head {
    /// For [`Queue::ack`]; a write's payload is moved out into `lanes`.
    batch: handoff::Batch,
    /// The write lanes not yet delivered; empty for a statement.
    lanes: Vec<Bytes>,
}

impl Head {
    fn of(mut batch: handoff::Batch, lanes: usize) -> Head {
        let lanes = match &mut batch.kind {
            BatchKind::Write { payload, .. } => {
                let payload = Bytes::from(std::mem::take(payload));
                lanes::split(&payload, lanes)
            }
            BatchKind::Schema { .. } => Vec::new(),
        };
        Head { batch, lanes }
    }
}

impl Replica {
    /// Opens the queues under `dir` (`queue/`, `deadletter/`) and the persisted divergence flag.
    pub fn open(
        dir: &Path,
        client: BackendClient,
        peers: Vec<BackendClient>,
        options: handoff::Options,
        dead_letter_max_bytes: u64,
    ) -> Result<Self, handoff::Error> {
        let queue = Queue::open(dir.join("queue"), options.clone())?;
        let dead_letters = Queue::open(
            dir.join("deadletter"),
            handoff::Options {
                max_bytes: dead_letter_max_bytes,
                max_age: None,
                ..options
            },
        )?;
        let diverged = std::fs::read_to_string(dir.join(DIVERGED_FILE))
            .ok()
            .map(|s| s.trim().to_owned());
        let maintenance = dir.join(MAINTENANCE_FILE).exists();
        let queueing = queue.has_pending() || maintenance;
        let replica = Replica {
            client,
            peers: Mutex::new(peers),
            queue,
            dead_letters,
            dir: dir.to_owned(),
            mode: Mutex::new(Mode {
                queueing,
                ..Mode::default()
            }),
            diverged_on_disk: AtomicBool::new(diverged.is_some()),
            persisting: AtomicBool::new(false),
            diverged: Mutex::new(diverged),
            diverged_marked_ms: AtomicU64::new(0),
            flag_io: Mutex::new(()),
            diverge_count: AtomicU64::new(0),
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ (u64::from(std::process::id()) << 32),
            last_error: Mutex::new(None),
            maintenance: AtomicBool::new(maintenance),
            kick: Notify::new(),
            down: watch::Sender::new(false),
            retired: AtomicBool::new(false),
            link: AtomicU8::new(0),
            link_since_ms: AtomicU64::new(now_ms()),
            replay_lanes: AtomicUsize::new(crate::config::DEFAULT_REPLAY_LANES),
            late_sends: watch::Sender::new(0),
            delivered_insured: Mutex::new(VecDeque::new()),
            refused_elsewhere: Mutex::new(VecDeque::new()),
            requeueing: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
        };
        // Records found corrupt or expired while opening are gone: the replay would notice
        // only once new data arrives.
        if replica.queue.take_dropped() {
            replica.diverged_by_drops("its queue dropped records at start (corrupt or expired)");
        }
        if replica.dead_letters.take_dropped() {
            replica.mark_diverged("its dead letters lost records (corrupt or unreadable)");
            if replica.diverged_on_disk.load(Ordering::SeqCst) {
                replica.dead_letters.dropped_recorded();
            }
        }
        Ok(replica)
    }

    /// Replaces the other backends (a config reload changed the set).
    pub fn set_peers(&self, peers: Vec<BackendClient>) {
        *lock(&self.peers) = peers;
    }

    /// The other backends' names, in config order.
    pub fn peer_names(&self) -> Vec<String> {
        lock(&self.peers)
            .iter()
            .map(|c| c.name().to_owned())
            .collect()
    }

    pub fn name(&self) -> &str {
        self.client.name()
    }

    pub fn client(&self) -> &BackendClient {
        &self.client
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn dead_letters(&self) -> &Queue {
        &self.dead_letters
    }

    /// Whether new writes go behind the queue.
    pub fn is_queueing(&self) -> bool {
        lock(&self.mode).queueing
    }

    /// Whether it is behind a short queue only to catch up: up (its last request answered, the
    /// health checks do not have it down), not in maintenance, and holding no more than its
    /// replay sends in a couple of batches, so that it can drain within a moment.
    pub fn catching_up(&self) -> bool {
        self.is_queueing()
            && !self.in_maintenance()
            && !*self.down.borrow()
            && self.link().0 == Link::Answered
            && self.queue.stats().depth_bytes <= 2 * MAX_REPLAY_BATCH as u64
    }

    /// Why the backend may miss data, if it may.
    pub fn diverged(&self) -> Option<String> {
        lock(&self.diverged).clone()
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Records (and persists) that this backend may miss data. Never cleared here: verify and
    /// repair clear it.
    pub fn mark_diverged(&self, reason: &str) {
        {
            // Set first, so that reads stop at once. Every look at the flag takes this lock:
            // the file, with its fsyncs, is written after it is released.
            let mut d = lock(&self.diverged);
            self.diverged_marked_ms.store(now_ms(), Ordering::SeqCst);
            self.diverge_count.fetch_add(1, Ordering::SeqCst);
            if d.is_none() {
                tracing::error!(
                    backend = self.name(),
                    reason,
                    "backend diverged: it may miss data"
                );
                *d = Some(reason.to_owned());
            }
        }
        // Every caller waits until the flag is on disk (written by it or by the one before),
        // so that nothing is acknowledged past dropped data before the flag is durable.
        self.persist_diverged();
    }

    /// Writes the diverged flag to disk when it is set in memory and not there yet. A write
    /// that failed (a full or failing disk) is tried again by the health checks each round
    /// ([`Self::persist_diverged_later`]): until it lands, a restart would forget the flag.
    pub fn persist_diverged(&self) {
        let _io = lock(&self.flag_io);
        let Some(text) = lock(&self.diverged).clone() else {
            return; // cleared meanwhile, by a verify that covered this drop
        };
        if self.diverged_on_disk.load(Ordering::SeqCst) {
            return;
        }
        match super::flags::write(&self.dir, DIVERGED_FILE, &format!("{text}\n")) {
            Ok(()) => {
                self.diverged_on_disk.store(true, Ordering::SeqCst);
                tracing::info!(backend = self.name(), "diverged flag persisted");
            }
            Err(e) => {
                tracing::error!(backend = self.name(), error = %e, "cannot persist the diverged flag: tried again at the next health check");
            }
        }
    }

    /// Whether the diverged flag is set in memory only.
    pub fn diverged_unpersisted(&self) -> bool {
        lock(&self.diverged).is_some() && !self.diverged_on_disk.load(Ordering::SeqCst)
    }

    /// [`Self::persist_diverged`] on a blocking thread, unless an attempt is running already.
    pub fn persist_diverged_later(self: &Arc<Self>) {
        if !self.diverged_unpersisted() || self.persisting.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.persist_diverged();
            me.persisting.store(false, Ordering::SeqCst);
        });
    }

    /// Clears the diverged flag (and its file) after a verify that began at `verified_from_ms`
    /// (Unix ms) found this backend identical to the others. Refused when data was dropped
    /// for it since then, which that verify could not see. Returns the reason it had.
    pub fn clear_diverged(&self, verified_from_ms: u64) -> Result<Option<String>, String> {
        self.clear_diverged_when(|| {
            self.diverged_marked_ms.load(Ordering::SeqCst) <= verified_from_ms
        })
    }

    /// What [`Replica::clear_diverged_since`] compares: it changes whenever data is dropped for
    /// this backend (and across restarts), whatever the clocks say.
    pub fn divergence_marks(&self) -> String {
        format!(
            "{:x}-{}",
            self.epoch,
            self.diverge_count.load(Ordering::SeqCst)
        )
    }

    /// [`Replica::clear_diverged`] for a verify that began when [`Replica::divergence_marks`]
    /// answered `marks`: refused when data was dropped since. Unlike a time, this holds
    /// whatever the clocks of the verifying host and this node say.
    pub fn clear_diverged_since(&self, marks: &str) -> Result<Option<String>, String> {
        self.clear_diverged_when(|| self.divergence_marks() == marks)
    }

    fn clear_diverged_when(
        &self,
        nothing_dropped_since: impl Fn() -> bool,
    ) -> Result<Option<String>, String> {
        let _io = lock(&self.flag_io);
        let was = {
            let mut d = lock(&self.diverged);
            if !nothing_dropped_since() {
                return Err(format!(
                    "data was dropped for {} after the verify began; verify again",
                    self.name()
                ));
            }
            d.take()
        };
        // The file goes after memory, outside the lock every read takes; a drop meanwhile
        // waits for `flag_io`, then writes the file again.
        if let Err(e) = super::flags::remove(&self.dir, DIVERGED_FILE) {
            let mut d = lock(&self.diverged);
            if d.is_none() {
                d.clone_from(&was);
            }
            return Err(format!("cannot remove the diverged flag: {e}"));
        }
        self.diverged_on_disk.store(false, Ordering::SeqCst);
        if let Some(why) = &was {
            tracing::info!(
                backend = self.name(),
                was = %why,
                "verified identical to the other backends: no longer diverged"
            );
        }
        Ok(was)
    }

    fn note_error(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }

    /// The directory holding this backend's queues and flags.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the backend answered the last request, and since when (Unix milliseconds).
    pub fn link(&self) -> (Link, u64) {
        let link = match self.link.load(Ordering::Relaxed) {
            1 => Link::Answered,
            2 => Link::Failed,
            _ => Link::Unknown,
        };
        (link, self.link_since_ms.load(Ordering::Relaxed))
    }

    /// Records whether the backend answered; cheap when nothing changes (one relaxed load).
    fn note_link(&self, answered: bool) {
        let value = if answered { 1 } else { 2 };
        if self.link.load(Ordering::Relaxed) != value {
            self.link.store(value, Ordering::Relaxed);
            self.link_since_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Whether an operator put the backend in maintenance.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance.load(Ordering::Relaxed)
    }

    /// Puts the backend in maintenance (persisted): from now on every write is queued for it
    /// and the replay pauses. Idempotent.
    pub fn enter_maintenance(&self) -> std::io::Result<()> {
        super::flags::write(
            &self.dir,
            MAINTENANCE_FILE,
            "set by an operator: writes are queued, no reads are served\n",
        )?;
        {
            // Both under the mode lock, maintenance first: a replay leaving queueing mode in
            // between would otherwise find neither and let writes go direct past the queue.
            let mut m = lock(&self.mode);
            self.maintenance.store(true, Ordering::SeqCst);
            m.queueing = true;
        }
        tracing::warn!(
            backend = self.name(),
            "maintenance: writes are queued for it"
        );
        Ok(())
    }

    /// Ends maintenance: the replay delivers the queue, then writes go direct again.
    pub fn resume(&self) -> std::io::Result<()> {
        super::flags::remove(&self.dir, MAINTENANCE_FILE)?;
        self.maintenance.store(false, Ordering::SeqCst);
        self.kick.notify_one();
        tracing::info!(
            backend = self.name(),
            "maintenance ended: replaying its queue"
        );
        Ok(())
    }

    /// Pings the backend and records whether it answered: on an idle node (nothing sent)
    /// this is what tells up from down until health checks report.
    pub async fn probe(&self) {
        let answered = matches!(self.client.ping().await, Ok(a) if a.status.is_success());
        if !answered && self.link().0 != Link::Failed {
            self.note_error("does not answer /ping".to_owned());
        }
        self.note_link(answered);
    }

    /// Closes its queue and dead letters (fsynced, cursor persisted); idempotent.
    pub fn close(&self) {
        for (what, q) in [("queue", &self.queue), ("dead letters", &self.dead_letters)] {
            if let Err(e) = q.close() {
                tracing::error!(backend = self.name(), what, error = %e, "closing failed");
            }
        }
    }

    /// Stops the replay task (the backend was removed from the config); its queue stays on
    /// disk and is replayed if the backend is configured again.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.kick.notify_one();
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Wakes the replay now (out of its backoff), e.g. for `queue drain`.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Whether the health checks last had it down with its pings failing ([`Self::set_down`]).
    pub fn is_marked_down(&self) -> bool {
        *self.down.borrow()
    }

    /// What the health checks found: the backend down and not answering its pings, or not.
    pub fn set_down(&self, down: bool) {
        self.down
            .send_if_modified(|d| std::mem::replace(d, down) != down);
    }

    /// Drops everything queued for this backend (an operator's `queue purge`) and marks it
    /// diverged: the data is gone from this node. Returns the number of records dropped.
    pub fn purge_queue(&self) -> Result<u64, handoff::Error> {
        // Marked first: between the purge and the mark it would look in sync to reads.
        let pending = self.queue.stats().depth_records;
        if pending > 0 {
            self.mark_diverged(&format!(
                "an operator purged its queue ({pending} records dropped)"
            ));
        }
        let n = self.queue.purge()?;
        self.queue.take_dropped();
        self.diverged_by_drops(&format!(
            "an operator purged its queue ({n} records dropped)"
        ));
        // Queueing mode is left by the replay (woken here), once no send of a purged batch is
        // in flight: new writes sent directly meanwhile would land before it.
        self.kick.notify_one();
        Ok(n)
    }

    /// Moves every dead letter back into the queue for delivery (the replay sends them again;
    /// what the backend still refuses returns to the dead letters). The backend stays marked
    /// diverged until verify/repair clears it. Returns the number of records moved.
    ///
    /// Moves at most the records there were when it started: the replay, running meanwhile,
    /// may file refused ones again, and chasing those would never end.
    pub async fn requeue_dead_letters(self: &Arc<Self>) -> Result<u64, String> {
        let _one_at_a_time = self.requeueing.lock().await;
        let there = self.dead_letters.stats().depth_records;
        let mut moved = 0;
        while moved < there {
            // Reading and acknowledging do file I/O (an fsync per ack): on a blocking thread.
            let me = self.clone();
            let next =
                tokio::task::spawn_blocking(move || me.dead_letters.next_batch(MAX_REPLAY_BATCH))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(|e| format!("cannot read the dead letters: {e}"))?;
            let Some(batch) = next else {
                break;
            };
            let outcome = match &batch.kind {
                BatchKind::Write {
                    db,
                    rp,
                    precision,
                    payload,
                } => {
                    let b = Batch {
                        db: db.clone(),
                        rp: rp.clone(),
                        precision: static_precision(precision),
                        payload: Bytes::copy_from_slice(payload),
                    };
                    self.enqueue(&b).await
                }
                BatchKind::Schema {
                    db,
                    statement,
                    params,
                } => self.enqueue_statement(db, statement, params).await,
            };
            if let Outcome::Failed(why) = outcome {
                return Err(format!("cannot queue a dead letter: {why}"));
            }
            let (me, records) = (self.clone(), batch.records);
            tokio::task::spawn_blocking(move || me.dead_letters.ack(&batch))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| format!("cannot remove a requeued dead letter: {e}"))?;
            moved += records;
        }
        self.kick.notify_one();
        Ok(moved)
    }

    /// Delivers one write directly, or answers that it is to be queued: the backend is behind
    /// its queue, in maintenance, or failed the send in a way worth retrying. The caller
    /// queues it with [`Self::enqueue`] unless the write turns out refused (DESIGN.md §3:
    /// a write every answering backend refused is queued nowhere). When `force`
    /// turns true (the consistency level is met and this backend is slower) the batch is
    /// queued so that the client can be answered, while the direct send goes on in the
    /// background. The backend then goes behind its queue: a client that writes the same point
    /// again once answered must not have that write reach this backend first, so later writes
    /// line up behind the insured one, and the replay starts only once the direct send is over
    /// (replaying the insured copy after it is a duplicate with the same values, in order).
    pub async fn deliver(
        self: &Arc<Self>,
        batch: &Arc<Batch>,
        mut force: watch::Receiver<bool>,
        settled: watch::Receiver<Option<Settled>>,
    ) -> Delivery {
        if self.is_queueing() || self.in_maintenance() {
            return Delivery::ToQueue(self.take_slot());
        }
        let (me, b) = (self.clone(), batch.clone());
        let mut send = Box::pin(async move {
            let rp = (!b.rp.is_empty()).then_some(b.rp.as_str());
            me.client
                .write(&b.db, rp, b.precision, b.payload.clone())
                .await
        });
        let forced = async {
            if force.wait_for(|f| *f).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            r = &mut send => r,
            () = forced => {
                self.counters.insured.fetch_add(1, Ordering::Relaxed);
                // Counted before the record is appended: a replay that reads the record
                // also sees that its send is still running.
                let late = LateSend::start(self);
                let (outcome, first) = self.enqueue_insured(batch).await;
                let me = self.clone();
                tokio::spawn(async move {
                    let outcome = classify(&send.await);
                    let delivered = match &outcome {
                        WriteOutcome::Ok => true,
                        WriteOutcome::PartialWrite { message } => {
                            stored_no_less(settled, message).await
                        }
                        _ => false,
                    };
                    if let (true, Some(id)) = (delivered, first) {
                        // Before the count drops: the replay looks once no send is running.
                        me.note_delivered_insured(id);
                    }
                    drop(late);
                    me.note_link(!matches!(outcome, WriteOutcome::Retryable { .. }));
                    if !outcome.is_ok() && !matches!(outcome, WriteOutcome::PartialWrite { .. }) {
                        me.counters.direct_failed.fetch_add(1, Ordering::Relaxed);
                        me.note_error(describe(&outcome));
                        tracing::warn!(backend = me.name(), outcome = ?outcome, "slow direct write failed: the replay delivers it");
                    }
                });
                return Delivery::Settled(outcome);
            }
        };
        let outcome = classify(&result);
        self.note_link(!matches!(outcome, WriteOutcome::Retryable { .. }));
        Delivery::Settled(match outcome {
            WriteOutcome::Ok => {
                self.counters.direct_ok.fetch_add(1, Ordering::Relaxed);
                Outcome::Acked
            }
            WriteOutcome::PartialWrite { message } => {
                self.counters.direct_ok.fetch_add(1, Ordering::Relaxed);
                Outcome::AckedPartial(message)
            }
            WriteOutcome::DatabaseNotFound { message } => Outcome::Refused {
                status: StatusCode::NOT_FOUND,
                message,
            },
            WriteOutcome::RetentionPolicyNotFound { message } => Outcome::Refused {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message,
            },
            WriteOutcome::BadRequest { status, message } => Outcome::Refused { status, message },
            other => {
                self.counters.direct_failed.fetch_add(1, Ordering::Relaxed);
                self.note_error(describe(&other));
                tracing::warn!(backend = self.name(), outcome = ?other, "direct write failed: queued");
                return Delivery::ToQueue(self.take_slot());
            }
        })
    }

    /// Concurrent requests per replayed batch.
    pub fn replay_lanes(&self) -> usize {
        self.replay_lanes.load(Ordering::Relaxed)
    }

    /// Sets `[queue] replay_lanes` (at least 1) for the batches read from now on.
    pub fn set_replay_lanes(&self, lanes: usize) {
        self.replay_lanes.store(lanes.max(1), Ordering::Relaxed);
    }

    /// Insured direct sends still running.
    pub fn late_sends(&self) -> usize {
        *self.late_sends.borrow()
    }

    /// Replays waiting in [`Self::wait_for_late_sends`].
    #[cfg(test)]
    pub(super) fn late_send_waiters(&self) -> usize {
        self.late_sends.receiver_count()
    }

    /// Remembers an insured record that was the first in the queue and whose direct send
    /// succeeded (or stored as much as the others), for the replay to skip.
    fn note_delivered_insured(&self, id: RecordId) {
        let mut delivered = lock(&self.delivered_insured);
        if delivered.len() == MAX_DELIVERED_INSURED {
            delivered.pop_front();
        }
        delivered.push_back(id);
    }

    /// Whether the record `id` was noted by [`Self::note_delivered_insured`] (forgotten now).
    fn take_delivered_insured(&self, id: RecordId) -> bool {
        let mut delivered = lock(&self.delivered_insured);
        let found = delivered.iter().position(|d| *d == id);
        found.and_then(|i| delivered.remove(i)).is_some()
    }

    /// Until no insured direct send is running: a record queued after an insured one must not
    /// reach the backend before that one's direct send, which may still land.
    async fn wait_for_late_sends(&self) {
        let mut late = self.late_sends.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = late.wait_for(|n| *n == 0).await;
    }

    /// Enters queueing mode and counts an append as in flight while it completes, under one
    /// lock: the replay, which leaves queueing mode only when no append is in flight and the
    /// queue is empty, cannot leave it between the two and let a later write go direct past
    /// this record. Turns the append's result into the backend's outcome.
    async fn queue_behind(
        &self,
        submit: impl FnOnce(&Queue) -> Vec<handoff::Appending>,
    ) -> (Outcome, Option<RecordId>) {
        self.count_append();
        self.submit_counted(submit).await
    }

    /// Enters queueing mode with one more append counted in flight (see [`Self::queue_behind`]).
    fn count_append(&self) {
        let mut m = lock(&self.mode);
        m.queueing = true;
        m.appends_in_flight += 1;
    }

    /// A [`QueueSlot`]: [`Self::count_append`], ended by the slot.
    pub(super) fn take_slot(self: &Arc<Self>) -> QueueSlot {
        self.count_append();
        QueueSlot {
            replica: self.clone(),
            held: true,
        }
    }

    /// The appends of `submit`, counted in flight beforehand by [`Self::count_append`]; ends
    /// that count. Returns the outcome and the first record appended.
    async fn submit_counted(
        &self,
        submit: impl FnOnce(&Queue) -> Vec<handoff::Appending>,
    ) -> (Outcome, Option<RecordId>) {
        let mut appended = Ok(None);
        // Every append is awaited, also after one failed: none is left in flight uncounted.
        for appending in submit(&self.queue) {
            match (appending.await, &appended) {
                (Ok(id), Ok(None)) => appended = Ok(Some(id)),
                (Err(e), Ok(_)) => appended = Err(e),
                _ => {}
            }
        }
        self.appended(appended)
    }

    /// Appends an insured batch like [`Self::enqueue`], submitted under the mode lock: when
    /// nothing was queued or being queued, it is then the queue's first record and nothing
    /// appended later goes before it. Only then is its id returned: should its direct send
    /// succeed, the replay may skip it, as nothing can reach the backend before it. (A record
    /// behind others must be replayed after them even though it already arrived.)
    async fn enqueue_insured(&self, batch: &Batch) -> (Outcome, Option<RecordId>) {
        if batch.payload.len() > self.max_record_payload(batch) {
            return (self.enqueue(batch).await, None);
        }
        // Encoded (and its CRC computed) before the lock: under it, only handed over.
        let prepared =
            self.queue
                .prepare_write(&batch.db, &batch.rp, batch.precision, batch.payload.clone());
        let (appending, is_first) = {
            let mut m = lock(&self.mode);
            let first = !m.queueing && m.appends_in_flight == 0;
            m.queueing = true;
            m.appends_in_flight += 1;
            (self.queue.submit_prepared(prepared), first)
        };
        let appended = appending.await;
        let (outcome, id) = self.appended(appended.map(Some));
        (outcome, id.filter(|_| is_first))
    }

    /// Ends the appends counted by [`Self::queue_behind`] or [`Self::enqueue_insured`]: the
    /// backend's outcome, and the (first) record's id when appended.
    fn appended(
        &self,
        appended: Result<Option<RecordId>, handoff::Error>,
    ) -> (Outcome, Option<RecordId>) {
        lock(&self.mode).appends_in_flight -= 1;
        match appended {
            Ok(id) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                (Outcome::Queued, id)
            }
            Err(e) => {
                self.mark_diverged(&format!("its queue refused a record: {e}"));
                // With nothing queued the replay never wakes to leave queueing mode: leave it
                // here, or the backend would stay out of reads and off direct writes for good.
                self.leave_queueing_if_drained();
                (
                    Outcome::Failed(format!("{}: queue: {e}", self.name())),
                    None,
                )
            }
        }
    }

    /// Appends the batch to the queue, entering queueing mode first so that later writes line up
    /// behind it. A payload longer than a record holds (ingest stamps can make a body's lines
    /// several times longer) goes as several records, cut at line ends.
    pub async fn enqueue(&self, batch: &Batch) -> Outcome {
        self.queue_behind(self.write_pieces(batch)).await.0
    }

    /// The appends of `batch`'s payload, in records of whole lines.
    fn write_pieces<'b>(
        &self,
        batch: &'b Batch,
    ) -> impl FnOnce(&Queue) -> Vec<handoff::Appending> + 'b {
        let pieces = split_at_lines(&batch.payload, self.max_record_payload(batch));
        // The payload is shared with the queue's writer thread, not copied.
        move |q| {
            pieces
                .into_iter()
                .map(|piece| q.append_write(&batch.db, &batch.rp, batch.precision, piece))
                .collect()
        }
    }

    /// The longest payload one queue record holds for `batch`'s database, policy and precision.
    fn max_record_payload(&self, batch: &Batch) -> usize {
        self.queue
            .max_write_payload(&batch.db, &batch.rp, batch.precision)
    }

    /// Leaves queueing mode when nothing is queued, being queued, or still being sent by an
    /// insured send.
    pub(crate) fn leave_queueing_if_drained(&self) {
        let mut m = lock(&self.mode);
        // An insured send still running may land after a write sent directly now: its own
        // record, if its append failed, is not in the queue to hold such writes back.
        if m.queueing
            && m.appends_in_flight == 0
            && !m.sending
            && *self.late_sends.borrow() == 0
            && !self.in_maintenance()
            && !self.queue.has_pending()
        {
            m.queueing = false;
            tracing::info!(
                backend = self.name(),
                "queue drained: writes go direct again"
            );
        }
    }

    /// Drains the queue into the backend until shutdown, in order, retrying with backoff.
    ///
    /// Batches go strictly one after the other: the next is sent only once the backend
    /// accepted every lane of this one and it is acknowledged in the queue. Within a batch the
    /// lanes (measurements, see [`lanes`]) are sent concurrently, and only the lanes not yet
    /// delivered are sent again after a failure. While a batch is sent, the next one is read
    /// from disk (and split), and used only if it still follows the cursor once this one is
    /// acknowledged: after a purge, a failed ack or a failed read it is read again from the
    /// cursor.
    pub async fn replay(self: Arc<Self>, mut shutdown: Shutdown) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30), seed);
        // The batch read while the previous one was sent.
        let mut ahead: Option<Head> = None;
        loop {
            if self.is_retired() {
                return;
            }
            if self.in_maintenance() {
                tokio::select! {
                    () = shutdown.recv() => return,
                    () = self.kick.notified() => {}
                }
                continue;
            }
            let mut head = match ahead.take() {
                Some(head) if self.queue.is_next(&head.batch) => {
                    self.counters.read_ahead.fetch_add(1, Ordering::Relaxed);
                    head
                }
                _ => {
                    // Nothing in flight: a queue emptied by a purge lets writes go direct.
                    self.leave_queueing_if_drained();
                    tokio::select! {
                        () = shutdown.recv() => return,
                        () = self.queue.wait_for_data() => {}
                        () = self.kick.notified() => continue,
                    }
                    if self.in_maintenance() {
                        continue;
                    }
                    let (me, lanes) = (self.clone(), self.replay_lanes());
                    let next = tokio::task::spawn_blocking(move || {
                        me.queue
                            .next_batch(MAX_REPLAY_BATCH)
                            .map(|b| b.map(|b| Head::of(b, lanes)))
                    })
                    .await;
                    self.note_dropped();
                    match next {
                        Ok(Ok(Some(head))) => head,
                        Ok(Ok(None)) => {
                            self.leave_queueing_if_drained();
                            continue;
                        }
                        Ok(Err(e)) => {
                            tracing::error!(backend = self.name(), error = %e, "cannot read the queue");
                            self.note_error(format!("queue read: {e}"));
                            if self.pause(&mut shutdown, backoff.next_delay()).await {
                                return;
                            }
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(backend = self.name(), error = %e, "queue reader task failed");
                            continue;
                        }
                    }
                }
            };

            // Whatever else dropped records meanwhile (a refused append) is seen per batch too.
            self.note_dropped();
            // After the read: every insured record in the batch counted its send before it was
            // appended, so none of them is still being sent once this returns.
            tokio::select! {
                () = shutdown.recv() => return,
                () = self.wait_for_late_sends() => {}
            }
            if self.take_delivered_insured(head.batch.first_record()) {
                // Its own send got it there first, before anything queued after it: only
                // the record itself is acknowledged, the rest of the batch is read again.
                let (me, b) = (self.clone(), head.batch.clone());
                match tokio::task::spawn_blocking(move || me.queue.ack_first(&b)).await {
                    Ok(Ok(())) => {
                        self.counters
                            .insured_skipped
                            .fetch_add(1, Ordering::Relaxed);
                        self.leave_queueing_if_drained();
                    }
                    // Replayed instead, like any other record.
                    failed => {
                        tracing::debug!(backend = self.name(), outcome = ?failed, "cannot skip a delivered insured record");
                    }
                }
                continue;
            }
            // The payload was moved into the lanes: this copy is small.
            let (me, current, lanes) = (self.clone(), head.batch.clone(), self.replay_lanes());
            let mut reading = Some(tokio::task::spawn_blocking(move || {
                me.queue
                    .next_batch_after(&current, MAX_REPLAY_BATCH)
                    .map(|b| b.map(|b| Head::of(b, lanes)))
            }));
            loop {
                // At shutdown the batch stays unacknowledged: it is sent again at the next
                // start, and a stalled backend does not hold the shutdown up.
                let step = {
                    let _sending = Sending::start(&self);
                    tokio::select! {
                        () = shutdown.recv() => return,
                        step = self.send_head(&mut head) => step,
                    }
                };
                match step {
                    Step::Delivered => {
                        let me = self.clone();
                        let b = head.batch.clone();
                        let acked =
                            match tokio::task::spawn_blocking(move || me.queue.ack(&b)).await {
                                Ok(Err(handoff::Error::StaleBatch)) => {
                                    // Purged by an operator while it was sent: nothing to
                                    // acknowledge; read on from the cursor.
                                    tracing::info!(
                                        backend = self.name(),
                                        "a batch purged while it was sent"
                                    );
                                    break;
                                }
                                Ok(acked) => acked.map_err(|e| e.to_string()),
                                Err(e) => Err(e.to_string()),
                            };
                        match acked {
                            // The queue may be empty now: only this task leaves queueing mode.
                            Ok(()) => self.leave_queueing_if_drained(),
                            Err(why) => {
                                // What follows is read again from the cursor (what was read
                                // ahead is dropped); back off so that a failing disk does not
                                // turn into a busy loop.
                                tracing::error!(backend = self.name(), error = %why, "cannot acknowledge in the queue");
                                self.note_error(format!("queue ack: {why}"));
                                if self.pause(&mut shutdown, backoff.next_delay()).await {
                                    return;
                                }
                                break;
                            }
                        }
                        self.counters
                            .replayed_batches
                            .fetch_add(1, Ordering::Relaxed);
                        backoff.reset();
                        if let Some(read) = reading.take() {
                            ahead = tokio::select! {
                                () = shutdown.recv() => return,
                                read = read => match read {
                                    Ok(Ok(next)) => next,
                                    // Read again from the cursor, which reports the error.
                                    Ok(Err(e)) => {
                                        tracing::debug!(backend = self.name(), error = %e, "reading ahead failed");
                                        None
                                    }
                                    Err(_) => None,
                                },
                            };
                        }
                        break;
                    }
                    Step::Wait(why) => {
                        tracing::debug!(backend = self.name(), reason = %why, "replay waits");
                        // Woken early by the kick when the backend is found up again.
                        if self.pause(&mut shutdown, backoff.next_delay()).await {
                            return;
                        }
                        // Purged by an operator meanwhile: read again from the cursor.
                        if self.in_maintenance()
                            || self.is_retired()
                            || !self.queue.is_next(&head.batch)
                            || self.expire_while_retrying(&head.batch).await
                        {
                            break;
                        }
                    }
                    // `send_head` keeps what is left of a lane itself: no `Rest` reaches here.
                    Step::Retry(why) | Step::Rest { why, .. } => {
                        self.counters.replay_errors.fetch_add(1, Ordering::Relaxed);
                        let delay = backoff.next_delay();
                        tracing::warn!(backend = self.name(), reason = %why, retry_in_ms = delay.as_millis() as u64, "replay failed");
                        self.note_error(why);
                        if self.pause(&mut shutdown, delay).await {
                            return;
                        }
                        if self.in_maintenance() || self.is_retired() {
                            // Sent again after resume (or at the next start): the batch was
                            // not acknowledged.
                            break;
                        }
                        // Purged by an operator meanwhile: sent again, it would land after
                        // writes that went direct since, older values over newer ones.
                        if !self.queue.is_next(&head.batch) {
                            break;
                        }
                        if self.expire_while_retrying(&head.batch).await {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Drops what passed `max_age` at the head of the queue while a batch is retried (the
    /// reader drops it only when it reads, and a backend that stays down would keep week-old
    /// data until the queue is full). True when `batch` itself was dropped: the replay then
    /// reads again from the cursor.
    async fn expire_while_retrying(self: &Arc<Self>, batch: &handoff::Batch) -> bool {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.queue.purge_expired()).await {
            Ok(Ok(0)) => false,
            Ok(Ok(expired)) => {
                tracing::warn!(
                    backend = self.name(),
                    records = expired,
                    "queued writes older than max_age dropped"
                );
                self.note_dropped();
                // Nothing may be left: only the replay leaves queueing mode.
                self.leave_queueing_if_drained();
                !self.queue.is_next(batch)
            }
            Ok(Err(e)) => {
                tracing::warn!(backend = self.name(), error = %e, "cannot drop expired records");
                false
            }
            Err(_) => false,
        }
    }

    /// Marks the backend diverged if its queue dropped records since the last look.
    fn note_dropped(&self) {
        if self.queue.take_dropped() {
            self.diverged_by_drops("its queue dropped records (expired, corrupt or unreadable)");
        }
    }

    /// Marks the backend diverged for drops taken from its queue; once that is on disk, the
    /// queue's own note of them (kept across a crash until then) can go.
    fn diverged_by_drops(&self, reason: &str) {
        self.mark_diverged(reason);
        if self.diverged_on_disk.load(Ordering::SeqCst) {
            self.queue.dropped_recorded();
        }
    }

    /// Sleeps (or until kicked), or returns true at shutdown.
    async fn pause(&self, shutdown: &mut Shutdown, delay: Duration) -> bool {
        tokio::select! {
            () = shutdown.recv() => true,
            () = tokio::time::sleep(delay) => false,
            () = self.kick.notified() => false,
        }
    }

    /// One delivery attempt of the batch at the head of the queue, with DESIGN.md §3's
    /// handling of each answer: a statement, or the write lanes not yet delivered.
    async fn send_head(self: &Arc<Self>, head: &mut Head) -> Step {
        match &head.batch.kind {
            BatchKind::Write {
                db, rp, precision, ..
            } => self.send_lanes(db, rp, precision, &mut head.lanes).await,
            BatchKind::Schema {
                db,
                statement,
                params,
            } => {
                let mut down = self.down.subscribe();
                if *down.borrow_and_update() {
                    return Step::Wait("its backend is down: the statement waits".to_owned());
                }
                let db = (!db.is_empty()).then_some(db.as_str());
                let run = self.client.run_statement(
                    statement,
                    db,
                    params,
                    STATEMENT_REPLAY_TIMEOUT,
                    STATEMENT_ANSWER_KEPT,
                );
                let marked_down = async {
                    if down.wait_for(|d| *d).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                let answer = tokio::select! {
                    answer = run => match answer {
                        Err(e @ SendError::Connect(_)) => Err((false, e.to_string())),
                        Err(e) => Err((true, e.to_string())),
                        Ok(answer) => Ok(answer),
                    },
                    () = marked_down => Err((true, "marked down while the statement ran".to_owned())),
                };
                let answer = match answer {
                    Err((sent, why)) => {
                        // Sent and not answered, it may have run: it runs again, which only
                        // some statements bear without leaving other data than elsewhere.
                        if sent && !crate::query::classify::all_repeatable(statement) {
                            self.mark_diverged(&format!(
                                "a queued statement may have run before it failed ({why}); it runs again: {statement}"
                            ));
                        }
                        return Step::Retry(format!("statement: {why}"));
                    }
                    Ok(answer) => answer,
                };
                let id = head.batch.first_record();
                match answer {
                    // Wrong service credentials are fixed by an operator: the statement waits,
                    // as writes do, rather than being dropped.
                    (status, _)
                        if status == StatusCode::UNAUTHORIZED
                            || status == StatusCode::FORBIDDEN =>
                    {
                        Step::Retry(format!(
                            "backend refused the service credentials ({status}); check username/password"
                        ))
                    }
                    // A proxy in front of the backend, busy: the statement did not run.
                    (status, _)
                        if status == StatusCode::REQUEST_TIMEOUT
                            || status == StatusCode::TOO_MANY_REQUESTS =>
                    {
                        Step::Retry(format!("statement answered {status}"))
                    }
                    // InfluxQL reports a failed statement inside a 200.
                    (status, body) if status.is_success() || status.is_client_error() => {
                        let elsewhere = self.take_refused_elsewhere(id);
                        if let Some(refusal) = Refusal::of(status, &body) {
                            self.statement_refused(statement, refusal, elsewhere);
                        }
                        Step::Delivered
                    }
                    (status, _) => Step::Retry(format!("statement answered {status}")),
                }
            }
        }
    }

    /// Sends the lanes concurrently, each with the full answer handling of [`Self::send_write`];
    /// removes the delivered ones from `lanes`. Delivered when none is left.
    async fn send_lanes(
        self: &Arc<Self>,
        db: &str,
        rp: &str,
        precision: &str,
        lanes: &mut Vec<Bytes>,
    ) -> Step {
        if let [only] = lanes.as_slice() {
            return match self.send_write(db, rp, precision, only.clone(), 0).await {
                Step::Delivered => {
                    lanes.clear();
                    Step::Delivered
                }
                Step::Rest { why, rest } => {
                    lanes[0] = rest;
                    Step::Retry(why)
                }
                retry => retry,
            };
        }
        let total = lanes.len();
        let mut sends = tokio::task::JoinSet::new();
        for (i, lane) in lanes.iter().enumerate() {
            let (me, lane) = (self.clone(), lane.clone());
            let (db, rp, precision) = (db.to_owned(), rp.to_owned(), precision.to_owned());
            sends.spawn(async move { (i, me.send_write(&db, &rp, &precision, lane, 0).await) });
        }
        let mut delivered = vec![false; total];
        let mut failed = Vec::new();
        while let Some(joined) = sends.join_next().await {
            match joined {
                Ok((i, Step::Delivered)) => delivered[i] = true,
                Ok((_, Step::Retry(why) | Step::Wait(why))) => failed.push(why),
                Ok((i, Step::Rest { why, rest })) => {
                    if let Some(lane) = lanes.get_mut(i) {
                        *lane = rest;
                    }
                    failed.push(why);
                }
                Err(e) => failed.push(format!("replay lane task failed: {e}")),
            }
        }
        let mut i = 0;
        lanes.retain(|_| {
            i += 1;
            !delivered[i - 1]
        });
        match failed.first() {
            _ if lanes.is_empty() => Step::Delivered,
            Some(why) => Step::Retry(format!(
                "{why} ({} of {total} lanes to send again)",
                lanes.len()
            )),
            None => Step::Retry(format!("{} of {total} lanes not delivered", lanes.len())),
        }
    }

    fn send_write<'a>(
        &'a self,
        db: &'a str,
        rp: &'a str,
        precision: &'a str,
        payload: Bytes,
        depth: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Step> + Send + 'a>> {
        Box::pin(async move {
            let rp_param = (!rp.is_empty()).then_some(rp);
            let result = self
                .client
                .write(db, rp_param, precision, payload.clone())
                .await;
            let outcome = classify(&result);
            self.note_link(!matches!(outcome, WriteOutcome::Retryable { .. }));
            match outcome {
                WriteOutcome::Ok => Step::Delivered,
                WriteOutcome::PartialWrite { message }
                | WriteOutcome::BadRequest { message, .. } => {
                    self.dead_letter(db, rp, precision, &payload, &message)
                        .await;
                    Step::Delivered
                }
                WriteOutcome::DatabaseNotFound { message } => {
                    let message = String::from_utf8_lossy(&message);
                    self.create_missing_schema(db, rp, precision, &payload, &message, true)
                        .await
                }
                WriteOutcome::RetentionPolicyNotFound { message } => {
                    let message = String::from_utf8_lossy(&message);
                    self.create_missing_schema(db, rp, precision, &payload, &message, false)
                        .await
                }
                WriteOutcome::AuthFailed { status, .. } => Step::Retry(format!(
                    "backend refused the service credentials ({status}); check username/password"
                )),
                WriteOutcome::TooLarge if depth < MAX_SPLIT_DEPTH => {
                    let Some(mid) = lineproto::split_point(&payload) else {
                        self.dead_letter(
                            db,
                            rp,
                            precision,
                            &payload,
                            b"one line larger than the backend takes",
                        )
                        .await;
                        return Step::Delivered;
                    };
                    let (first, second) = (payload.slice(..mid), payload.slice(mid..));
                    match self.send_write(db, rp, precision, first, depth + 1).await {
                        Step::Delivered => {
                            match self
                                .send_write(db, rp, precision, second.clone(), depth + 1)
                                .await
                            {
                                Step::Retry(why) => Step::Rest { why, rest: second },
                                step => step,
                            }
                        }
                        Step::Rest { why, rest } => {
                            let mut left =
                                bytes::BytesMut::with_capacity(rest.len() + second.len());
                            left.extend_from_slice(&rest);
                            left.extend_from_slice(&second);
                            Step::Rest {
                                why,
                                rest: left.freeze(),
                            }
                        }
                        retry => retry,
                    }
                }
                WriteOutcome::TooLarge => {
                    self.dead_letter(db, rp, precision, &payload, b"too large")
                        .await;
                    Step::Delivered
                }
                WriteOutcome::Retryable { reason } => Step::Retry(reason),
            }
        })
    }

    /// The replay's answer to a backend lacking the database (`missing_db`) or the retention
    /// policy of a batch: created from another backend that has it, then the batch sent again;
    /// kept as a dead letter when every other backend lacks it too (it was refused everywhere,
    /// as the client was told: nothing is missing, so the backend is not diverged); retried
    /// while no other backend can tell.
    async fn create_missing_schema(
        &self,
        db: &str,
        rp: &str,
        precision: &str,
        payload: &[u8],
        message: &str,
        missing_db: bool,
    ) -> Step {
        match self.schema_on_peers(db, rp).await {
            PeerSchema::Has { from, policies } => {
                if missing_db && let Err(e) = self.create_database(db).await {
                    return Step::Retry(format!("{message}: not created: {e}"));
                }
                let created = self.create_retention_policies(db, &policies, &from).await;
                Step::Retry(format!("{message}: created from {from} ({created})"))
            }
            PeerSchema::NoneHas => {
                let why = format!("{message} (and on every other backend)");
                tracing::warn!(backend = self.name(), reason = %why, bytes = payload.len(), "batch refused everywhere: dead-lettered");
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.keep_dead_letter(db, rp, precision, payload).await {
                    tracing::error!(backend = self.name(), error = %e, "the dead-letter store could not keep a batch refused everywhere");
                }
                Step::Delivered
            }
            PeerSchema::Unknown(why) => Step::Retry(format!(
                "{message}: no other backend could tell whether it should exist ({why})"
            )),
        }
    }

    /// Whether another backend has `db` (and the retention policy `rp`, or a default one when
    /// `rp` is empty), with that backend's retention policies of `db`.
    async fn schema_on_peers(&self, db: &str, rp: &str) -> PeerSchema {
        let mut unknown = Vec::new();
        let peers = lock(&self.peers).clone();
        for peer in &peers {
            match schema::retention_policies(peer, db).await {
                Ok(policies)
                    if policies.iter().any(|p| {
                        if rp.is_empty() {
                            p.default
                        } else {
                            p.name == rp
                        }
                    }) =>
                {
                    return PeerSchema::Has {
                        from: peer.name().to_owned(),
                        policies,
                    };
                }
                Ok(_) => {}
                Err(e) if e.starts_with("database not found") => {}
                Err(e) => unknown.push(format!("{}: {e}", peer.name())),
            }
        }
        if unknown.is_empty() {
            PeerSchema::NoneHas
        } else {
            PeerSchema::Unknown(unknown.join("; "))
        }
    }

    /// Keeps a batch the backend refused, for operators, and marks the backend diverged.
    async fn dead_letter(&self, db: &str, rp: &str, precision: &str, payload: &[u8], why: &[u8]) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let why = String::from_utf8_lossy(why);
        tracing::error!(backend = self.name(), reason = %why, bytes = payload.len(), "batch refused by the backend: dead-lettered");
        match self.keep_dead_letter(db, rp, precision, payload).await {
            Ok(_) => self.mark_diverged(&format!("dead letters: the backend refused a batch: {why}")),
            Err(e) => self.mark_diverged(&format!(
                "the backend refused a batch ({why}) and the dead-letter store could not keep it: {e}"
            )),
        }
    }

    /// Appends a refused batch to the dead-letter store, in records of whole lines when it is
    /// larger than one record holds (a replayed batch may be, with small segments).
    async fn keep_dead_letter(
        &self,
        db: &str,
        rp: &str,
        precision: &str,
        payload: &[u8],
    ) -> Result<(), handoff::Error> {
        let max = self.dead_letters.max_write_payload(db, rp, precision);
        let append = |payload: &[u8]| {
            self.dead_letters.append(&Record::Write {
                db,
                rp,
                precision,
                payload,
            })
        };
        if payload.len() <= max {
            append(payload).await?;
            return Ok(());
        }
        for piece in split_at_lines(&Bytes::copy_from_slice(payload), max.max(1)) {
            append(&piece).await?;
        }
        Ok(())
    }

    /// Creates on this backend the retention policies `policies` of `db` (read from the
    /// backend `from`), with their real durations. Says what happened, for the replay's log.
    async fn create_retention_policies(
        &self,
        db: &str,
        policies: &[schema::RetentionPolicy],
        from: &str,
    ) -> String {
        let mut failed = Vec::new();
        for rp in policies {
            let mut statement = schema::create_statement(db, rp);
            let mut altered = false;
            loop {
                match self.client.query(&statement, None).await {
                    Ok(a)
                        if a.status.is_success() && schema::statement_error(&a.body).is_none() => {}
                    // A database just created has a default `autogen`: given the copied settings.
                    Ok(a)
                        if !altered
                            && schema::statement_error(&a.body)
                                .is_some_and(|e| e.contains("retention policy already exists")) =>
                    {
                        statement = schema::alter_statement(db, rp);
                        altered = true;
                        continue;
                    }
                    Ok(a) => {
                        failed.push(format!("{}: {}", rp.name, String::from_utf8_lossy(&a.body)))
                    }
                    Err(e) => failed.push(format!("{}: {e}", rp.name)),
                }
                break;
            }
        }
        tracing::info!(
            backend = self.name(),
            db,
            from,
            policies = policies.len(),
            failed = failed.len(),
            "copied retention policies"
        );
        if failed.is_empty() {
            "retention policies copied".to_owned()
        } else {
            format!("retention policies not all created: {}", failed.join("; "))
        }
    }

    async fn create_database(&self, db: &str) -> Result<(), String> {
        let statement = format!("CREATE DATABASE {}", quote_ident(db));
        match self.client.query(&statement, None).await {
            Ok(answer) if answer.status.is_success() => {
                tracing::info!(backend = self.name(), db, "created the missing database");
                Ok(())
            }
            Ok(answer) => Err(format!("answered {}", answer.status)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Creates a database on this backend now, or queues the statement in order with the
    /// writes when the backend cannot take it.
    pub async fn ensure_database(&self, db: &str) -> Outcome {
        if !self.is_queueing() && self.create_database(db).await.is_ok() {
            return Outcome::Acked;
        }
        let statement = format!("CREATE DATABASE {}", quote_ident(db));
        self.enqueue_statement("", &statement, "").await
    }

    /// Queues a state-changing statement (run with `db` as its default database and the
    /// request's other parameters `params`, form-encoded) in order with the writes, entering
    /// queueing mode first: the replay executes it before any write accepted after it.
    pub async fn enqueue_statement(&self, db: &str, statement: &str, params: &str) -> Outcome {
        self.enqueue_statement_at(db, statement, params).await.0
    }

    /// [`Self::enqueue_statement`], also returning where the statement was queued.
    pub async fn enqueue_statement_at(
        &self,
        db: &str,
        statement: &str,
        params: &str,
    ) -> (Outcome, Option<RecordId>) {
        self.queue_behind(|q| {
            vec![q.append(&Record::Schema {
                db,
                statement,
                params,
            })]
        })
        .await
    }

    /// Notes that every backend which ran the statement queued here at `id` refused it, and
    /// how: the same refusal on replay leaves this backend as the others are, not diverged.
    pub fn note_refused_elsewhere(&self, id: RecordId, refusal: Refusal) {
        let mut refused = lock(&self.refused_elsewhere);
        if refused.len() == MAX_REFUSED_ELSEWHERE {
            // Forgotten, it is marked diverged if it fails on replay: loud, not silent.
            refused.pop_front();
        }
        refused.push_back((id, refusal));
    }

    /// A queued statement was refused here: this backend now differs from those that ran it,
    /// unless each of them refused it the same way (`elsewhere`).
    fn statement_refused(&self, statement: &str, refusal: Refusal, elsewhere: Option<Refusal>) {
        let error = refusal.error.as_deref().unwrap_or("");
        if elsewhere.as_ref().is_some_and(|e| e.is_like(&refusal)) {
            tracing::info!(backend = self.name(), statement, status = %refusal.status, error, "a queued statement was refused as on every backend that ran it");
            return;
        }
        self.mark_diverged(&if refusal.status.is_success() {
            format!("a queued statement failed: {statement}: {error}")
        } else {
            format!(
                "a queued statement was refused ({}): {statement}: {error}",
                refusal.status
            )
        });
    }

    /// The refusal noted for the statement queued at `id`, if any (forgotten now).
    fn take_refused_elsewhere(&self, id: RecordId) -> Option<Refusal> {
        let mut refused = lock(&self.refused_elsewhere);
        let found = refused.iter().position(|(r, _)| *r == id);
        found
            .and_then(|i| refused.remove(i))
            .map(|(_, refusal)| refusal)
    }
}
