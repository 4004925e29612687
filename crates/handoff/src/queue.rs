//! [`Queue`]: open and recovery, the group-commit writer thread, the reader and the gauges.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::failpoint;
use crate::format::{self, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::fs::{DirLock, Filesystem, FsFile, StdFs, read_exact_at};
use crate::segment::{self, FrameRead, SegReader};
use crate::{
    Batch, BatchKind, Clock, Error, FsyncPolicy, Limits, Options, Record, RecordId, Stats,
    SystemClock,
};

pub(crate) const CURSOR_FILE: &str = "cursor";
pub(crate) const CURSOR_TMP: &str = "cursor.tmp";
/// Present while something dropped has not been recorded by the caller
/// ([`Queue::dropped_recorded`]): written before a drop is made durable, so that a crash in
/// between does not lose the news.
pub(crate) const DROPPED_FILE: &str = "dropped";
const SEGMENT_EXT: &str = ".hseg";
/// The most a record (frame header and body) can hold whatever the options say.
const MAX_BODY_LEN_AS_RECORD: u64 = format::MAX_BODY_LEN + FRAME_HEADER_LEN;
/// Small frames are coalesced into one `write` up to this size.
const STAGING: usize = 256 * 1024;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave these structures half-updated in a way that
    // matters more than stopping would; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn segment_name(id: u64) -> String {
    format!("{id:016x}{SEGMENT_EXT}")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SEGMENT_EXT)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// A position in the queue: a frame boundary plus the logical record index and byte offset
/// (counted from the oldest data present at open) used to derive the gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub seg: u64,
    pub off: u64,
    pub index: u64,
    pub bytes: u64,
}

/// Published facts about one segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegMeta {
    /// Published (or, after open, scanned) valid length: readers never look past it.
    pub end: u64,
    /// No more appends will go to it.
    pub sealed: bool,
    /// Logical index of its first record.
    pub first_index: u64,
    /// Records in it (as counted by the writer or the open scan).
    pub records: u64,
    /// Logical byte position of its first record.
    pub base_bytes: u64,
    pub min_ts: u64,
    pub max_ts: u64,
}

impl SegMeta {
    fn end_pos(&self, id: u64) -> Pos {
        Pos {
            seg: id,
            off: self.end,
            index: self.first_index + self.records,
            bytes: self.base_bytes + self.end.saturating_sub(SEGMENT_HEADER_LEN),
        }
    }
    fn start_pos(&self, id: u64) -> Pos {
        Pos {
            seg: id,
            off: SEGMENT_HEADER_LEN,
            index: self.first_index,
            bytes: self.base_bytes,
        }
    }
}

/// State shared by writer, reader and stats (short critical sections only, no I/O inside).
#[derive(Debug, Default)]
pub(crate) struct State {
    pub segs: BTreeMap<u64, SegMeta>,
    pub next_seg_id: u64,
    /// Logical record index after the last published record.
    pub write_index: u64,
    /// Logical byte position after the last published record.
    pub write_bytes: u64,
    /// The acknowledged cursor as last published by the reader.
    pub ack: Pos,
}

impl State {
    /// Moves `pos` over ends of sealed segments (and over segments that no longer exist).
    /// Returns the meta of the segment `pos` ends in if it has readable data at `pos`.
    /// Bounded by the number of segments.
    fn settle(&self, pos: &mut Pos) -> Option<SegMeta> {
        let mut cur = self.segs.get(&pos.seg).copied();
        let mut later = self.segs.range(pos.seg.saturating_add(1)..);
        loop {
            match cur {
                Some(m) if pos.off < m.end => return Some(m),
                Some(m) if !m.sealed => return None,
                _ => {}
            }
            let (id, m) = later.next()?;
            *pos = m.start_pos(*id);
            cur = Some(*m);
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    appended_records: AtomicU64,
    fills: AtomicU64,
    appended_bytes: AtomicU64,
    append_groups: AtomicU64,
    fsyncs: AtomicU64,
    acked_records: AtomicU64,
    acked_batches: AtomicU64,
    corrupt_regions: AtomicU64,
    corrupt_bytes: AtomicU64,
    expired_records: AtomicU64,
    purged_records: AtomicU64,
    refused_full: AtomicU64,
    refused_disk_floor: AtomicU64,
    torn_tail_bytes: AtomicU64,
    io_errors: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One pending append: `head` then `payload` form the frame.
struct Req {
    /// The whole frame, or (zero-copy path) everything but the payload.
    head: Vec<u8>,
    /// The payload when it is shared rather than copied into `head`.
    payload: Option<Bytes>,
    ts: u64,
    /// Completion; always `Some` once submitted.
    tx: Option<oneshot::Sender<Result<RecordId, Error>>>,
}

impl Req {
    fn complete(self, res: Result<RecordId, Error>) {
        if let Some(tx) = self.tx {
            // The appender may have stopped waiting; the outcome stands either way.
            let _ = tx.send(res);
        }
    }

    fn len(&self) -> u64 {
        (self.head.len() + self.payload.as_ref().map_or(0, |p| p.len())) as u64
    }
}

#[derive(Default)]
struct Submit {
    reqs: Vec<Req>,
    shutdown: bool,
}

/// Reader-side state (one consumer at a time, serialised by its mutex).
struct ReadState {
    /// First record not yet acknowledged.
    cursor: Pos,
    /// Open reader on the segment last read.
    seg: Option<SegReader>,
    /// Last cursor written to the cursor file, and whether it was fsynced.
    persisted: Option<(u64, u64)>,
    persisted_durable: bool,
}

pub(crate) struct Inner {
    pub fs: Arc<dyn Filesystem>,
    pub clock: Arc<dyn Clock>,
    pub dir: PathBuf,
    pub opts: Options,
    /// The limits an operator may change on a running queue ([`Queue::set_limits`]); they
    /// override the ones in `opts`.
    limits: Mutex<Limits>,
    pub state: Mutex<State>,
    /// Signalled after the writer publishes (blocking waiters).
    data_cv: Condvar,
    /// Carries the published write position (async waiters).
    watch: watch::Sender<u64>,
    submit: Mutex<Submit>,
    submit_cv: Condvar,
    read: Mutex<ReadState>,
    c: Counters,
    degraded: AtomicBool,
    dropped: AtomicBool,
    /// Whether [`DROPPED_FILE`] is on disk; held while it is written or removed.
    dropped_on_disk: Mutex<bool>,
    closed: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The directory's lock: one open queue per directory, across processes. Released by
    /// [`Queue::close`] (or when the queue is dropped).
    dir_lock: Mutex<Option<DirLock>>,
}

impl Inner {
    pub fn seg_path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }
    /// Notes a refused append: in memory only. Nothing stored is lost (the appender is told,
    /// and records the refusal itself), so no marker is written: while the queue is full that
    /// would cost the writer thread two fsyncs per refusal.
    fn note_refused(&self) {
        self.dropped.store(true, Ordering::SeqCst);
    }

    /// Notes that records are gone (or will be once the cursor is saved): in memory, and on
    /// disk before the caller makes the drop durable.
    fn mark_dropped(&self) {
        let mut on_disk = lock(&self.dropped_on_disk);
        self.dropped.store(true, Ordering::SeqCst);
        if !*on_disk {
            match write_drop_marker(self.fs.as_ref(), &self.dir) {
                Ok(()) => *on_disk = true,
                Err(e) => {
                    bump(&self.c.io_errors, 1);
                    warn!(dir = %self.dir.display(), error = %e, "handoff: cannot write the dropped marker");
                }
            }
        }
    }
}

/// A durable queue for one backend. Share it as `Arc<Queue>`; dropping the last handle closes
/// it (prefer calling [`Queue::close`] explicitly).
///
/// Appending never blocks the caller on I/O ([`Queue::append`] returns a future). Reading
/// ([`Queue::next_batch`], [`Queue::ack`], operator functions) does blocking file I/O — mostly
/// page-cache reads, plus the cursor fsync on ack — so from async code call them through
/// `tokio::task::spawn_blocking` (or `block_in_place`).
pub struct Queue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// A record encoded for [`Queue::submit_prepared`] (or why it cannot be appended).
pub struct PreparedAppend(Result<Req, Error>);

impl std::fmt::Debug for PreparedAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(req) => f
                .debug_struct("PreparedAppend")
                .field("len", &req.len())
                .finish(),
            Err(e) => f.debug_tuple("PreparedAppend").field(e).finish(),
        }
    }
}

// === impl Appending ===

/// An append in flight. `.await` it from async code, or [`Appending::wait`] from a thread that
/// is not a tokio worker. Dropping it does not cancel the append.
#[derive(Debug)]
pub struct Appending {
    state: AppendingState,
}

#[derive(Debug)]
enum AppendingState {
    Failed(Option<Error>),
    Waiting(oneshot::Receiver<Result<RecordId, Error>>),
}

impl From<Result<oneshot::Receiver<Result<RecordId, Error>>, Error>> for Appending {
    fn from(r: Result<oneshot::Receiver<Result<RecordId, Error>>, Error>) -> Self {
        match r {
            Ok(rx) => Appending {
                state: AppendingState::Waiting(rx),
            },
            Err(e) => Appending {
                state: AppendingState::Failed(Some(e)),
            },
        }
    }
}

impl Appending {
    /// Blocks until the append completes, with where the record lies. Panics if called on a
    /// tokio runtime thread (use `.await` there).
    pub fn wait(self) -> Result<RecordId, Error> {
        match self.state {
            AppendingState::Failed(e) => Err(e.unwrap_or(Error::Closed)),
            AppendingState::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(Error::Closed)),
        }
    }
}

impl Future for Appending {
    type Output = Result<RecordId, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            AppendingState::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(Error::Closed))),
            AppendingState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.unwrap_or(Err(Error::Closed))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

// === impl Queue ===

impl Queue {
    /// Opens (or creates) the queue in `dir` on the real filesystem.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Queue, Error> {
        Self::open_with(dir, opts, Arc::new(StdFs), Arc::new(SystemClock))
    }

    /// Opens with an explicit filesystem and clock (tests, simulation).
    pub fn open_with(
        dir: impl AsRef<Path>,
        opts: Options,
        fs: Arc<dyn Filesystem>,
        clock: Arc<dyn Clock>,
    ) -> Result<Queue, Error> {
        validate(&opts)?;
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // Two writers of one queue would interleave appends and acknowledgements.
        let dir_lock = fs.lock_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked(dir.clone()),
            _ => Error::io(&dir, e),
        })?;
        let rec = recover(fs.as_ref(), &dir)?;
        let (watch, _) = watch::channel(rec.state.write_bytes);
        let inner = Arc::new(Inner {
            fs,
            clock,
            dir,
            limits: Mutex::new(Limits::of(&opts)),
            opts,
            state: Mutex::new(rec.state),
            data_cv: Condvar::new(),
            watch,
            submit: Mutex::new(Submit::default()),
            submit_cv: Condvar::new(),
            read: Mutex::new(ReadState {
                cursor: rec.cursor,
                seg: None,
                persisted: rec.persisted,
                persisted_durable: true,
            }),
            c: Counters {
                torn_tail_bytes: AtomicU64::new(rec.torn_tail_bytes),
                corrupt_regions: AtomicU64::new(rec.corrupt_ends),
                ..Counters::default()
            },
            degraded: AtomicBool::new(false),
            dropped: AtomicBool::new(rec.dropped),
            dropped_on_disk: Mutex::new(rec.dropped_on_disk),
            closed: AtomicBool::new(false),
            writer: Mutex::new(None),
            dir_lock: Mutex::new(Some(dir_lock)),
        });
        let q = Queue {
            inner: inner.clone(),
        };
        q.publish_ack(rec.cursor);
        {
            let mut rs = lock(&q.inner.read);
            if let Err(e) = q.gc(&mut rs) {
                warn!(dir = %q.inner.dir.display(), error = %e, "handoff: segment cleanup at open failed");
            }
        }
        let handle = std::thread::Builder::new()
            .name("handoff-writer".into())
            .spawn(move || writer_main(inner))
            .map_err(|e| Error::io(&q.inner.dir, e))?;
        *lock(&q.inner.writer) = Some(handle);
        Ok(q)
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends a record. Encoding and CRC happen now, on the caller's thread; the returned
    /// future completes once the record is durable (per [`FsyncPolicy`]) or failed.
    pub fn append(&self, rec: &Record<'_>) -> Appending {
        let payload_len = match rec {
            Record::Write { payload, .. } => payload.len(),
            Record::Schema {
                statement, params, ..
            } => statement.len() + params.len(),
        };
        let res = self.check(payload_len).and_then(|ts| {
            let head = format::encode_frame(rec, ts)?;
            self.submit(Req {
                head,
                payload: None,
                ts,
                tx: None,
            })
        });
        Appending::from(res)
    }

    /// Appends a write without copying its payload: the `Bytes` is shared with the writer
    /// thread (the CRC is still computed now, on the caller's thread). Otherwise the same as
    /// [`Queue::append`] with [`Record::Write`].
    pub fn append_write(&self, db: &str, rp: &str, precision: &str, payload: Bytes) -> Appending {
        self.submit_prepared(self.prepare_write(db, rp, precision, payload))
    }

    /// The first half of [`Queue::append_write`]: the record encoded and its CRC computed, not
    /// yet handed to the writer. Records are appended in the order they are submitted with
    /// [`Queue::submit_prepared`], which is quick enough to call under a caller's lock.
    pub fn prepare_write(
        &self,
        db: &str,
        rp: &str,
        precision: &str,
        payload: Bytes,
    ) -> PreparedAppend {
        let req = self.check(payload.len()).and_then(|ts| {
            let head = format::encode_head(format::KIND_WRITE, ts, db, rp, precision, &payload, 0)?;
            Ok(Req {
                head,
                payload: Some(payload),
                ts,
                tx: None,
            })
        });
        PreparedAppend(req)
    }

    /// Hands a record from [`Queue::prepare_write`] to the writer.
    pub fn submit_prepared(&self, prepared: PreparedAppend) -> Appending {
        Appending::from(prepared.0.and_then(|req| self.submit(req)))
    }

    /// The longest payload one write record with these `db`, `rp` and `precision` can hold
    /// ([`Options::max_record_bytes`] less the record's own fields): a longer one must be
    /// appended as several records.
    pub fn max_write_payload(&self, db: &str, rp: &str, precision: &str) -> usize {
        let fields = format::BODY_FIXED_LEN + db.len() + rp.len() + precision.len();
        let max = self
            .inner
            .opts
            .max_record_bytes
            .min(MAX_BODY_LEN_AS_RECORD)
            .saturating_sub(FRAME_HEADER_LEN + fields as u64);
        usize::try_from(max).unwrap_or(usize::MAX)
    }

    /// Checks that an append may proceed and returns its timestamp.
    fn check(&self, payload_len: usize) -> Result<u64, Error> {
        let inner = &self.inner;
        if inner.degraded.load(Ordering::SeqCst) {
            return Err(Error::Degraded);
        }
        let max = inner.opts.max_record_bytes;
        if payload_len as u64 > max {
            return Err(Error::RecordTooLarge {
                size: payload_len as u64,
                max,
            });
        }
        Ok(inner.clock.now_ms())
    }

    fn submit(&self, mut req: Req) -> Result<oneshot::Receiver<Result<RecordId, Error>>, Error> {
        let inner = &self.inner;
        let max = inner.opts.max_record_bytes;
        if req.len() > max {
            return Err(Error::RecordTooLarge {
                size: req.len(),
                max,
            });
        }
        let (tx, rx) = oneshot::channel();
        req.tx = Some(tx);
        {
            let mut s = lock(&inner.submit);
            if s.shutdown {
                return Err(Error::Closed);
            }
            s.reqs.push(req);
        }
        inner.submit_cv.notify_one();
        Ok(rx)
    }

    /// Times an append found nothing pending: the queue started holding records again. A
    /// queue that drained and filled up between two looks at [`Queue::has_pending`] shows
    /// here.
    pub fn fills(&self) -> u64 {
        self.inner.c.fills.load(Ordering::Relaxed)
    }

    /// Whether records are pending (published and not acknowledged).
    pub fn has_pending(&self) -> bool {
        let st = lock(&self.inner.state);
        st.write_bytes > st.ack.bytes
    }

    /// Waits until records are pending or the queue is closed. Cancel-safe. The check happens
    /// after subscribing, and the writer publishes before it signals, so no wake-up is lost.
    pub async fn wait_for_data(&self) {
        let mut rx = self.inner.watch.subscribe();
        loop {
            if self.has_pending() || self.inner.closed.load(Ordering::SeqCst) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Blocking variant of [`Queue::wait_for_data`]: `true` if records are pending.
    pub fn wait_for_data_timeout(&self, timeout: Duration) -> bool {
        let st = lock(&self.inner.state);
        let closed = &self.inner.closed;
        let (st, _) = self
            .inner
            .data_cv
            .wait_timeout_while(st, timeout, |st| {
                st.write_bytes <= st.ack.bytes && !closed.load(Ordering::SeqCst)
            })
            .unwrap_or_else(|p| p.into_inner());
        st.write_bytes > st.ack.bytes
    }

    /// Returns the next batch to deliver, starting at the acknowledged cursor, or `None` when
    /// nothing is pending. Adjacent write records with equal db/rp/precision are merged while the
    /// payload stays within `max_batch_bytes` (a single larger record is returned alone).
    /// Undeliverable records met first (corrupt, expired, unreadable) are skipped and counted.
    pub fn next_batch(&self, max_batch_bytes: usize) -> Result<Option<Batch>, Error> {
        let mut rs = lock(&self.inner.read);
        let cutoff = self.cutoff();
        let Some((first, next)) = self.skip_to_deliverable(&mut rs, cutoff, false)? else {
            return Ok(None);
        };
        let start = rs.cursor;
        let mut batch = Batch {
            kind: first,
            records: 1,
            first_ts_ms: 0,
            start,
            first_end: next.0,
            end: next.0,
        };
        batch.first_ts_ms = next.1;
        self.merge_following(&mut rs, cutoff, &mut batch, max_batch_bytes);
        Ok(Some(batch))
    }

    /// Reads the batch that follows `after` (a batch from [`Queue::next_batch`] or from this
    /// function, not yet acknowledged) without moving the cursor: so that it can be read
    /// while `after` is being delivered. Acknowledge it with [`Queue::ack`] after `after`.
    ///
    /// Returns `None` when nothing deliverable starts right after `after`: nothing published
    /// there yet, `after` is no longer pending (acknowledged, or the queue was purged), or
    /// the record there cannot be delivered (corrupt, expired). Such records are skipped and
    /// counted only by [`Queue::next_batch`], from the cursor, once `after` is acknowledged;
    /// so a batch read ahead never makes a record be skipped or acknowledged twice.
    pub fn next_batch_after(
        &self,
        after: &Batch,
        max_batch_bytes: usize,
    ) -> Result<Option<Batch>, Error> {
        let mut rs = lock(&self.inner.read);
        if after.end.bytes <= rs.cursor.bytes {
            return Ok(None);
        }
        let cutoff = self.cutoff();
        let mut start = after.end;
        let Some(m) = lock(&self.inner.state).settle(&mut start) else {
            return Ok(None);
        };
        let frame = match self.reader_for(&mut rs, start.seg) {
            Ok(r) => r.read_frame(start.off, m.end).map(|f| match f {
                FrameRead::Valid { body, next } => format::decode_body(body)
                    .filter(|d| cutoff.is_none_or(|c| d.ts_ms >= c))
                    .map(|d| (owned(&d), d.ts_ms, next)),
                FrameRead::Corrupt | FrameRead::End => None,
            }),
            Err(e) => Err(e),
        };
        let (kind, first_ts_ms, next) = match frame {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(None),
            Err(e) => {
                rs.seg = None;
                return Err(Error::io(self.inner.seg_path(start.seg), e));
            }
        };
        let first_end = advance(start, next, &m);
        let mut batch = Batch {
            kind,
            records: 1,
            first_ts_ms,
            start,
            first_end,
            end: first_end,
        };
        self.merge_following(&mut rs, cutoff, &mut batch, max_batch_bytes);
        Ok(Some(batch))
    }

    /// Whether `batch` starts at the cursor: what [`Queue::ack`] accepts now. False for a
    /// batch read ahead whose predecessor was not acknowledged, or after a purge.
    pub fn is_next(&self, batch: &Batch) -> bool {
        lock(&self.inner.read).cursor == batch.start
    }

    /// Acknowledges a batch from [`Queue::next_batch`]: the cursor moves past it and is persisted
    /// (fsynced under [`FsyncPolicy::Always`]); fully consumed segments are deleted.
    pub fn ack(&self, batch: &Batch) -> Result<(), Error> {
        self.ack_to(batch.start, batch.end, batch.records)
    }

    /// Acknowledges only the first record of a batch from [`Queue::next_batch`], delivered by
    /// other means; the rest is read again by the next [`Queue::next_batch`].
    pub fn ack_first(&self, batch: &Batch) -> Result<(), Error> {
        self.ack_to(batch.start, batch.first_end, 1)
    }

    /// Moves the cursor from `start` (where it must be) to `end`, past `records` records.
    fn ack_to(&self, start: Pos, end: Pos, records: u64) -> Result<(), Error> {
        let mut rs = lock(&self.inner.read);
        self.still_open()?;
        if rs.cursor != start {
            return Err(Error::StaleBatch);
        }
        rs.cursor = end;
        self.publish_ack(end);
        bump(&self.inner.c.acked_records, records);
        bump(&self.inner.c.acked_batches, 1);
        let durable = self.inner.opts.fsync == FsyncPolicy::Always;
        let saved = self.persist_cursor(&mut rs, durable);
        let full = matches!(saved, Err(Error::DiskFull(_)));
        if !full {
            saved?;
        }
        if let Err(e) = self.gc(&mut rs) {
            warn!(dir = %self.inner.dir.display(), error = %e, "handoff: segment cleanup failed; will retry");
        }
        if full {
            // Saved once the cleanup freed room, or the disk is still full: the caller retries.
            self.persist_cursor(&mut rs, durable)?;
        }
        Ok(())
    }

    /// Drops pending records older than `max_age` at the head of the queue now (the reader also
    /// does this as it goes). Returns how many were dropped.
    pub fn purge_expired(&self) -> Result<u64, Error> {
        let Some(cutoff) = self.cutoff() else {
            return Ok(0);
        };
        let before = self.inner.c.expired_records.load(Ordering::SeqCst);
        let mut rs = lock(&self.inner.read);
        self.still_open()?;
        self.skip_to_deliverable(&mut rs, Some(cutoff), true)?;
        self.persist_cursor(&mut rs, self.inner.opts.fsync == FsyncPolicy::Always)?;
        if let Err(e) = self.gc(&mut rs) {
            warn!(error = %e, "handoff: segment cleanup failed; will retry");
        }
        Ok(self
            .inner
            .c
            .expired_records
            .load(Ordering::SeqCst)
            .saturating_sub(before))
    }

    /// Snapshot of gauges and counters.
    /// The limits in force: those of the [`Options`] it was opened with, or the last
    /// [`Queue::set_limits`].
    pub fn limits(&self) -> Limits {
        *lock(&self.inner.limits)
    }

    /// Changes `max_bytes`, `max_age` and `min_free_bytes` of a running queue (a config
    /// reload). Takes effect from the next append group and the next read; nothing already
    /// queued is dropped by a smaller `max_bytes`, only later appends are refused.
    pub fn set_limits(&self, limits: Limits) {
        *lock(&self.inner.limits) = limits;
    }

    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let (depth_records, depth_bytes, segments, disk_bytes, oldest) = {
            let st = lock(&inner.state);
            let mut p = st.ack;
            let oldest = if st.write_bytes > st.ack.bytes {
                st.settle(&mut p).map(|m| (p, m))
            } else {
                None
            };
            (
                st.write_index.saturating_sub(st.ack.index),
                st.write_bytes.saturating_sub(st.ack.bytes),
                st.segs.len() as u64,
                st.segs.values().map(|m| m.end).sum(),
                oldest,
            )
        };
        let oldest_age = oldest.map(|(p, m)| {
            let ts = self.ts_at(p).unwrap_or(m.min_ts);
            Duration::from_millis(inner.clock.now_ms().saturating_sub(ts))
        });
        let c = &inner.c;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            depth_records,
            depth_bytes,
            oldest_age,
            segments,
            disk_bytes,
            appended_records: l(&c.appended_records),
            fills: l(&c.fills),
            appended_bytes: l(&c.appended_bytes),
            append_groups: l(&c.append_groups),
            fsyncs: l(&c.fsyncs),
            acked_records: l(&c.acked_records),
            acked_batches: l(&c.acked_batches),
            corrupt_regions: l(&c.corrupt_regions),
            corrupt_bytes: l(&c.corrupt_bytes),
            expired_records: l(&c.expired_records),
            purged_records: l(&c.purged_records),
            refused_full: l(&c.refused_full),
            refused_disk_floor: l(&c.refused_disk_floor),
            torn_tail_bytes: l(&c.torn_tail_bytes),
            io_errors: l(&c.io_errors),
            degraded: inner.degraded.load(Ordering::SeqCst),
            dropped: inner.dropped.load(Ordering::SeqCst),
        }
    }

    /// Returns and clears the "something was dropped" flag (set at open too when a drop was
    /// never recorded). Once the caller has recorded it durably, it calls
    /// [`Queue::dropped_recorded`].
    pub fn take_dropped(&self) -> bool {
        self.inner.dropped.swap(false, Ordering::SeqCst)
    }

    /// The caller has durably recorded the drops it took: the marker that keeps them across a
    /// crash goes, unless another drop came since.
    pub fn dropped_recorded(&self) {
        let inner = &self.inner;
        let mut on_disk = lock(&inner.dropped_on_disk);
        if !*on_disk || inner.dropped.load(Ordering::SeqCst) {
            return;
        }
        let removed = inner
            .fs
            .remove_file(&inner.dir.join(DROPPED_FILE))
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .and_then(|()| inner.fs.sync_dir(&inner.dir));
        match removed {
            Ok(()) => *on_disk = false,
            Err(e) => {
                bump(&inner.c.io_errors, 1);
                warn!(dir = %inner.dir.display(), error = %e, "handoff: cannot remove the dropped marker");
            }
        }
    }

    /// Whether a failed fsync has made the queue refuse appends.
    pub fn is_degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::SeqCst)
    }

    /// Stops accepting appends, completes those already submitted, syncs (unless the policy is
    /// `never`), persists the cursor and stops the writer thread. Idempotent; waiters wake up.
    pub fn close(&self) -> Result<(), Error> {
        let inner = &self.inner;
        {
            let mut s = lock(&inner.submit);
            s.shutdown = true;
        }
        inner.closed.store(true, Ordering::SeqCst);
        inner.submit_cv.notify_all();
        let handle = lock(&inner.writer).take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            error!(dir = %inner.dir.display(), "handoff: writer thread panicked");
        }
        let res = {
            let mut rs = lock(&inner.read);
            self.persist_cursor(&mut rs, inner.opts.fsync != FsyncPolicy::Never)
        };
        inner.data_cv.notify_all();
        inner.watch.send_modify(|_| {});
        drop(lock(&inner.dir_lock).take());
        res
    }

    // --- reader internals ---

    /// [`Error::Closed`] once [`Queue::close`] ran (checked under the read lock, which `close`
    /// takes to save the cursor): after it the folder lock is released, and another process may
    /// own the folder, so nothing here may save a cursor or delete a segment any more.
    fn still_open(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn cutoff(&self) -> Option<u64> {
        let age = lock(&self.inner.limits).max_age?;
        let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        Some(self.inner.clock.now_ms().saturating_sub(ms))
    }

    /// Merges into a write batch the following write records with the same db/rp/precision
    /// while its payload stays within `max_batch_bytes`; stops at anything else (a schema
    /// record, another key, an expired, corrupt or unreadable record, unpublished data).
    fn merge_following(
        &self,
        rs: &mut ReadState,
        cutoff: Option<u64>,
        batch: &mut Batch,
        max_batch_bytes: usize,
    ) {
        if let BatchKind::Write {
            db,
            rp,
            precision,
            payload,
        } = &mut batch.kind
        {
            // Bounded: each iteration consumes one frame within published data, or stops.
            while payload.len() < max_batch_bytes {
                let mut p = batch.end;
                let Some(m) = lock(&self.inner.state).settle(&mut p) else {
                    break;
                };
                let Ok(reader) = self.reader_for(rs, p.seg) else {
                    break;
                };
                // Stop before reading (and CRC-ing) a record that cannot fit anyway: with the
                // same key its payload length follows from the frame length.
                if let Ok(Some(len)) = reader.peek_body_len(p.off, m.end) {
                    let key = format::BODY_FIXED_LEN + db.len() + rp.len() + precision.len();
                    if payload.len() + (len as usize).saturating_sub(key) > max_batch_bytes {
                        break;
                    }
                }
                let Ok(FrameRead::Valid { body, next }) = reader.read_frame(p.off, m.end) else {
                    break;
                };
                let Some(d) = format::decode_body(body) else {
                    break;
                };
                let added = d.payload.len()
                    + usize::from(!d.payload.is_empty() && !d.payload.ends_with(b"\n"));
                let fits = payload.len() + added <= max_batch_bytes;
                let expired = cutoff.is_some_and(|c| d.ts_ms < c);
                if format::is_schema(d.kind)
                    || d.db != db.as_str()
                    || d.rp != rp.as_str()
                    || d.precision != precision.as_str()
                    || !fits
                    || expired
                {
                    break;
                }
                push_payload(payload, d.payload);
                batch.records += 1;
                batch.end = advance(p, next, &m);
            }
        }
    }

    pub(crate) fn publish_ack(&self, p: Pos) {
        lock(&self.inner.state).ack = p;
    }

    fn reader_for<'a>(&self, rs: &'a mut ReadState, seg: u64) -> io::Result<&'a mut SegReader> {
        if rs.seg.as_ref().map(|r| r.id) != Some(seg) {
            rs.seg = None;
            let f = self.inner.fs.open_read(&self.inner.seg_path(seg))?;
            rs.seg = Some(SegReader::new(seg, f));
        }
        rs.seg
            .as_mut()
            .ok_or_else(|| io::Error::other("segment reader missing"))
    }

    /// Moves the cursor over records that cannot be delivered (counting and logging them) and
    /// returns the first deliverable record with its end position and timestamp. With
    /// `expired_only`, stops at the first record that is not expired (no decoding kept).
    /// Bounded: every iteration advances the position by at least one byte within published
    /// data, or by one segment.
    #[allow(clippy::type_complexity)]
    fn skip_to_deliverable(
        &self,
        rs: &mut ReadState,
        cutoff: Option<u64>,
        expired_only: bool,
    ) -> Result<Option<(BatchKind, (Pos, u64))>, Error> {
        let inner = &self.inner;
        let mut pos = rs.cursor;
        let result = loop {
            let Some(m) = lock(&inner.state).settle(&mut pos) else {
                break None;
            };
            // A whole sealed segment past max_age goes without reading it.
            if let Some(c) = cutoff
                && m.sealed
                && m.records > 0
                && m.max_ts < c
                && pos.off == SEGMENT_HEADER_LEN
            {
                let end = m.end_pos(pos.seg);
                let n = end.index.saturating_sub(pos.index);
                bump(&inner.c.expired_records, n);
                inner.mark_dropped();
                info!(
                    segment = pos.seg,
                    records = n,
                    "handoff: dropped expired segment"
                );
                pos = end;
                continue;
            }
            let read = match self.reader_for(rs, pos.seg) {
                Ok(r) => r.read_frame(pos.off, m.end).map(|f| match f {
                    FrameRead::Valid { body, next } => match format::decode_body(body) {
                        Some(d) => Some(Some((d.ts_ms, next, owned(&d)))),
                        None => Some(None),
                    },
                    FrameRead::Corrupt => Some(None),
                    FrameRead::End => None,
                }),
                Err(e) => Err(e),
            };
            match read {
                Err(e) => {
                    bump(&inner.c.io_errors, 1);
                    rs.seg = None;
                    if !m.sealed || !lasting(&e) {
                        // The segment being written (nothing to skip to), or an error that may
                        // pass (out of file descriptors, permissions): let the caller retry.
                        break_out(rs, pos, self);
                        return Err(Error::io(inner.seg_path(pos.seg), e));
                    }
                    let end = m.end_pos(pos.seg);
                    error!(segment = pos.seg, offset = pos.off, error = %e,
                        records = end.index.saturating_sub(pos.index),
                        "handoff: unreadable segment, skipping the rest of it");
                    inner.mark_dropped();
                    pos = end;
                }
                Ok(None) => break None,
                Ok(Some(None)) => {
                    // Corrupt frame: resynchronise to the next valid frame (or segment end).
                    let next = match self
                        .reader_for(rs, pos.seg)
                        .and_then(|r| r.resync(pos.off, m.end))
                    {
                        Ok(n) => n.unwrap_or(m.end),
                        Err(e) => {
                            bump(&inner.c.io_errors, 1);
                            rs.seg = None;
                            // As for a read above: the rest of a segment is given up only when
                            // it is sealed and the error lasting.
                            if !m.sealed || !lasting(&e) {
                                break_out(rs, pos, self);
                                return Err(Error::io(inner.seg_path(pos.seg), e));
                            }
                            warn!(segment = pos.seg, error = %e, "handoff: read error while resynchronising");
                            m.end
                        }
                    };
                    bump(&inner.c.corrupt_regions, 1);
                    bump(&inner.c.corrupt_bytes, next - pos.off);
                    inner.mark_dropped();
                    warn!(
                        segment = pos.seg,
                        offset = pos.off,
                        bytes = next - pos.off,
                        "handoff: skipped corrupt region"
                    );
                    pos = advance(pos, next, &m);
                }
                Ok(Some(Some((ts, next, kind)))) => {
                    if cutoff.is_some_and(|c| ts < c) {
                        bump(&inner.c.expired_records, 1);
                        inner.mark_dropped();
                        debug!(
                            segment = pos.seg,
                            offset = pos.off,
                            "handoff: dropped expired record"
                        );
                        pos = advance(pos, next, &m);
                        continue;
                    }
                    if expired_only {
                        break None;
                    }
                    break Some((kind, (advance(pos, next, &m), ts)));
                }
            }
        };
        break_out(rs, pos, self);
        Ok(result)
    }

    /// Timestamp of the record at `p` (one small read).
    fn ts_at(&self, p: Pos) -> Option<u64> {
        let f = self.inner.fs.open_read(&self.inner.seg_path(p.seg)).ok()?;
        let mut b = [0u8; FRAME_HEADER_LEN as usize + 9];
        read_exact_at(f.as_ref(), &mut b, p.off).ok()?;
        format::parse_frame_header(&b)?;
        format::body_ts(&b[FRAME_HEADER_LEN as usize..])
    }

    /// Writes the cursor file: temp file, (fsync), rename, (directory fsync).
    fn persist_cursor(&self, rs: &mut ReadState, durable: bool) -> Result<(), Error> {
        let (seg, off) = (rs.cursor.seg, rs.cursor.off);
        if rs.persisted == Some((seg, off)) && (rs.persisted_durable || !durable) {
            return Ok(());
        }
        let inner = &self.inner;
        let tmp = inner.dir.join(CURSOR_TMP);
        let dst = inner.dir.join(CURSOR_FILE);
        let res = (|| -> Result<(), Error> {
            let mut f = inner
                .fs
                .create_truncate(&tmp)
                .map_err(|e| Error::io(&tmp, e))?;
            f.append(&format::encode_cursor(seg, off))
                .map_err(|e| Error::io(&tmp, e))?;
            failpoint::hit("cursor.after_tmp_write");
            // Its data before its name, even when the acknowledgement need not be durable:
            // a later folder sync (a new segment) makes the name durable, and a name whose
            // data a crash lost is an unreadable cursor, which replays the whole queue and
            // reports a drop. (`never` promises no fsync at all.)
            if durable || inner.opts.fsync != FsyncPolicy::Never {
                f.sync_data().map_err(|e| Error::io(&tmp, e))?;
            }
            drop(f);
            failpoint::hit("cursor.before_rename");
            inner
                .fs
                .rename(&tmp, &dst)
                .map_err(|e| Error::io(&dst, e))?;
            failpoint::hit("cursor.after_rename");
            if durable {
                inner
                    .fs
                    .sync_dir(&inner.dir)
                    .map_err(|e| Error::io(&inner.dir, e))?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => {
                rs.persisted = Some((seg, off));
                rs.persisted_durable = durable;
                Ok(())
            }
            Err(e) => {
                bump(&inner.c.io_errors, 1);
                rs.persisted = None;
                warn!(error = %e, "handoff: persisting the cursor failed");
                Err(e)
            }
        }
    }

    /// Normalises the cursor over sealed segment ends, then deletes segments entirely behind
    /// it — only after the cursor naming the later segment is durable.
    fn gc(&self, rs: &mut ReadState) -> Result<(), Error> {
        let inner = &self.inner;
        let mut c = rs.cursor;
        let victims: Vec<u64> = {
            let st = lock(&inner.state);
            st.settle(&mut c);
            st.segs.range(..c.seg).map(|(id, _)| *id).collect()
        };
        if c != rs.cursor {
            rs.cursor = c;
            self.publish_ack(c);
        }
        if victims.is_empty() {
            return Ok(());
        }
        match self.persist_cursor(rs, true) {
            Ok(()) => {}
            // A full disk takes no new cursor until room is freed, and only deleting what was
            // consumed frees it here: the segments go first. A crash before the cursor is
            // saved resumes at the first segment kept, delivering again what was acknowledged
            // in it, and losing nothing that was not.
            Err(Error::DiskFull(e)) => {
                warn!(dir = %inner.dir.display(), error = %e, "handoff: disk full; deleting consumed segments before saving the cursor");
            }
            Err(e) => return Err(e),
        }
        failpoint::hit("gc.before_delete");
        for id in &victims {
            let path = inner.seg_path(*id);
            match inner.fs.remove_file(&path) {
                Ok(()) => debug!(segment = id, "handoff: deleted consumed segment"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    bump(&inner.c.io_errors, 1);
                    warn!(segment = id, error = %e, "handoff: could not delete consumed segment");
                    continue;
                }
            }
            lock(&inner.state).segs.remove(id);
            failpoint::hit("gc.after_delete");
        }
        if rs.seg.as_ref().is_some_and(|r| r.id < c.seg) {
            rs.seg = None;
        }
        if let Err(e) = inner.fs.sync_dir(&inner.dir) {
            warn!(error = %e, "handoff: directory fsync after deletion failed");
        }
        Ok(())
    }

    pub(crate) fn count_purged(&self, n: u64) {
        bump(&self.inner.c.purged_records, n);
        if n > 0 {
            self.inner.mark_dropped();
        }
    }

    /// Operator purge: moves the cursor to the end of published data.
    pub(crate) fn purge_all(&self) -> Result<u64, Error> {
        let mut rs = lock(&self.inner.read);
        self.still_open()?;
        let (end, n) = {
            let st = lock(&self.inner.state);
            let end = match st.segs.iter().next_back() {
                Some((id, m)) => m.end_pos(*id),
                None => rs.cursor,
            };
            (end, st.write_index.saturating_sub(rs.cursor.index))
        };
        rs.cursor = end;
        self.publish_ack(end);
        self.count_purged(n);
        warn!(dir = %self.inner.dir.display(), records = n, "handoff: purged by operator");
        self.persist_cursor(&mut rs, true)?;
        self.gc(&mut rs)?;
        Ok(n)
    }

    /// Runs `f` on every pending record from the cursor without consuming anything.
    pub(crate) fn for_each_pending(
        &self,
        mut f: impl FnMut(&format::Decoded<'_>) -> io::Result<()>,
        mut on_skip: impl FnMut(u64, u64, Option<&io::Error>),
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let mut pos = lock(&inner.read).cursor;
        let mut reader: Option<SegReader> = None;
        loop {
            let Some(m) = lock(&inner.state).settle(&mut pos) else {
                return Ok(());
            };
            if reader.as_ref().map(|r| r.id) != Some(pos.seg) {
                match inner.fs.open_read(&inner.seg_path(pos.seg)) {
                    Ok(fh) => reader = Some(SegReader::new(pos.seg, fh)),
                    Err(e) => {
                        on_skip(pos.seg, pos.off, Some(&e));
                        pos = m.end_pos(pos.seg);
                        continue;
                    }
                }
            }
            let Some(r) = reader.as_mut() else {
                return Ok(());
            };
            match r.read_frame(pos.off, m.end) {
                Ok(FrameRead::Valid { body, next }) => {
                    if let Some(d) = format::decode_body(body) {
                        f(&d).map_err(|e| Error::io("<drain output>", e))?;
                    } else {
                        on_skip(pos.seg, pos.off, None);
                    }
                    pos = advance(pos, next, &m);
                }
                Ok(FrameRead::End) => return Ok(()),
                Ok(FrameRead::Corrupt) => {
                    on_skip(pos.seg, pos.off, None);
                    let next = r.resync(pos.off, m.end).ok().flatten().unwrap_or(m.end);
                    pos = advance(pos, next, &m);
                }
                Err(e) => {
                    on_skip(pos.seg, pos.off, Some(&e));
                    reader = None;
                    pos = m.end_pos(pos.seg);
                }
            }
        }
    }
}

/// Records the skipped-to position as the in-memory cursor (persisted with the next ack).
fn break_out(rs: &mut ReadState, pos: Pos, q: &Queue) {
    if pos != rs.cursor {
        rs.cursor = pos;
        q.publish_ack(pos);
    }
}

fn owned(d: &format::Decoded<'_>) -> BatchKind {
    if let Some((statement, params)) = d.statement() {
        BatchKind::Schema {
            db: d.db.to_owned(),
            statement: statement.to_owned(),
            params: params.to_owned(),
        }
    } else {
        let mut payload = Vec::with_capacity(d.payload.len() + 1);
        push_payload(&mut payload, d.payload);
        BatchKind::Write {
            db: d.db.to_owned(),
            rp: d.rp.to_owned(),
            precision: d.precision.to_owned(),
            payload,
        }
    }
}

/// Appends a line-protocol payload, keeping the batch newline-terminated.
pub(crate) fn push_payload(out: &mut Vec<u8>, p: &[u8]) {
    out.extend_from_slice(p);
    if !p.is_empty() && !p.ends_with(b"\n") {
        out.push(b'\n');
    }
}

/// The position after the frame at `p` that ends at `next`.
fn advance(p: Pos, next: u64, m: &SegMeta) -> Pos {
    let seg_end_index = m.first_index + m.records;
    Pos {
        seg: p.seg,
        off: next,
        index: (p.index + 1).min(seg_end_index).max(p.index),
        bytes: p.bytes + next.saturating_sub(p.off),
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            warn!(error = %e, "handoff: close on drop failed");
        }
    }
}

fn validate(o: &Options) -> Result<(), Error> {
    let min_frame = FRAME_HEADER_LEN + format::BODY_FIXED_LEN as u64 + 1;
    if o.segment_bytes < SEGMENT_HEADER_LEN + min_frame {
        return Err(Error::InvalidOptions(format!(
            "segment_bytes {} is too small",
            o.segment_bytes
        )));
    }
    if o.max_record_bytes < min_frame || o.max_record_bytes > o.segment_bytes - SEGMENT_HEADER_LEN {
        return Err(Error::InvalidOptions(format!(
            "max_record_bytes {} must be between {min_frame} and segment_bytes - {SEGMENT_HEADER_LEN}",
            o.max_record_bytes
        )));
    }
    if o.max_record_bytes > format::MAX_BODY_LEN {
        return Err(Error::InvalidOptions(
            "max_record_bytes exceeds the format limit of 1 GiB".into(),
        ));
    }
    if o.fsync == FsyncPolicy::Interval(Duration::ZERO) {
        return Err(Error::InvalidOptions(
            "fsync interval must be positive (use always)".into(),
        ));
    }
    Ok(())
}

// === recovery ===

struct Recovered {
    state: State,
    cursor: Pos,
    persisted: Option<(u64, u64)>,
    dropped: bool,
    /// Whether [`DROPPED_FILE`] is on disk.
    dropped_on_disk: bool,
    torn_tail_bytes: u64,
    /// Segment ends of records that failed their CRC (not torn writes).
    corrupt_ends: u64,
}

/// Whether a read error says the data is damaged or gone, so that skipping it is the only way
/// on: EIO, the filesystem's own corruption reports (XFS and ext4 with metadata checksums
/// answer EUCLEAN for a damaged structure and EBADMSG for a failed checksum), a stale NFS
/// handle, a file shorter than its index or removed. Anything else may pass (out of file
/// descriptors or memory, permissions) and is retried: skipping would lose data that is still
/// there.
fn lasting(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::NotFound)
        || [Errno::IO, Errno::UCLEAN, Errno::BADMSG, Errno::STALE]
            .iter()
            .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

/// Rebuilds the in-memory state from the directory. See "Crash reasoning" in the crate docs.
fn recover(fs: &dyn Filesystem, dir: &Path) -> Result<Recovered, Error> {
    fs.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let names = fs.list_dir(dir).map_err(|e| Error::io(dir, e))?;
    // A drop from before that was never recorded counts again.
    let marker = std::cell::Cell::new(names.iter().any(|n| n == DROPPED_FILE));
    let mut dropped = marker.get();
    // Before a segment is set aside: the marker, so that a crash after the rename (which
    // later opens no longer see) still tells of the drop.
    let mark = || {
        if !marker.get() {
            match write_drop_marker(fs, dir) {
                Ok(()) => marker.set(true),
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "handoff: cannot write the dropped marker")
                }
            }
        }
    };
    let mut torn_tail_bytes = 0u64;
    let mut corrupt_ends = 0u64;
    if names.iter().any(|n| n == CURSOR_TMP) {
        let p = dir.join(CURSOR_TMP);
        if let Err(e) = fs.remove_file(&p) {
            warn!(error = %e, "handoff: could not remove stale cursor.tmp");
        }
    }
    let mut ids: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    ids.sort_unstable();
    let max_seen = names
        .iter()
        .filter_map(|n| n.get(..16).and_then(|h| u64::from_str_radix(h, 16).ok()))
        .max()
        .unwrap_or(0);
    let cursor_file = read_cursor(fs, dir)?;
    if names.iter().any(|n| n == CURSOR_FILE) && cursor_file.is_none() {
        // Delivered again, its statements run again: a `DROP` or `DELETE` among them may
        // remove what was written since. Counted as a drop, so the backend is checked.
        warn!(dir = %dir.display(), "handoff: cursor file unreadable or corrupt; replaying from the oldest segment");
        dropped = true;
    }
    let (cur_seg, cur_off) = cursor_file.unwrap_or((0, SEGMENT_HEADER_LEN));
    // Idempotent cleanup of segments the durable cursor is already past.
    let mut removed = false;
    for id in ids.iter().filter(|id| **id < cur_seg) {
        match fs.remove_file(&dir.join(segment_name(*id))) {
            Ok(()) => {
                removed = true;
                info!(segment = id, "handoff: removed segment behind the cursor");
            }
            Err(e) => warn!(segment = id, error = %e, "handoff: could not remove consumed segment"),
        }
    }
    ids.retain(|id| *id >= cur_seg);
    if removed && let Err(e) = fs.sync_dir(dir) {
        warn!(error = %e, "handoff: directory fsync failed");
    }
    let last = ids.last().copied();
    let mut st = State {
        // Past the cursor's segment too, when its files are gone (set aside, or deleted by
        // hand): a segment numbered below the saved cursor would be deleted as consumed at
        // the next start, with the records in it.
        next_seg_id: max_seen.max(cur_seg) + 1,
        ..State::default()
    };
    let mut cursor: Option<Pos> = None;
    let (mut index, mut bytes) = (0u64, 0u64);
    for id in ids {
        let path = dir.join(segment_name(id));
        // A segment that cannot be read now is never skipped for an error that may pass: the
        // cursor would move past it and the next start would delete it. Damaged, it is set
        // aside (kept for the operator); otherwise the open fails and names it.
        let unreadable = |e: std::io::Error, what: &str| -> Result<(), Error> {
            if !lasting(&e) {
                return Err(Error::io(&path, e));
            }
            error!(segment = id, error = %e, "handoff: cannot {what} segment; setting it aside as .unreadable");
            mark();
            let aside = dir.join(format!("{}.unreadable", segment_name(id)));
            if let Err(e) = fs.rename(&path, &aside)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::io(&path, e));
            }
            Ok(())
        };
        let mut r = match fs.open_read(&path) {
            Ok(f) => SegReader::new(id, f),
            Err(e) => {
                unreadable(e, "open")?;
                dropped = true;
                continue;
            }
        };
        let len = match r.file_len() {
            Ok(l) => l,
            Err(e) => {
                unreadable(e, "stat")?;
                dropped = true;
                continue;
            }
        };
        if len < SEGMENT_HEADER_LEN {
            // Creation was interrupted before the header was durable: it never held records.
            info!(segment = id, "handoff: removing segment with a torn header");
            if let Err(e) = fs.remove_file(&path) {
                warn!(segment = id, error = %e, "handoff: could not remove torn segment");
            }
            continue;
        }
        let header_ok = match r.header() {
            Ok(h) => format::check_segment_header(&h).map_err(|e| format!("{e:?}")),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = header_ok {
            error!(segment = id, reason = %why, "handoff: bad segment header; setting the file aside as .corrupt");
            dropped = true;
            mark();
            let aside = dir.join(format!("{}.corrupt", segment_name(id)));
            if let Err(e) = fs.rename(&path, &aside) {
                warn!(segment = id, error = %e, "handoff: could not rename corrupt segment");
            }
            continue;
        }
        let probe = (id == cur_seg).then_some(cur_off);
        let scan = match segment::scan(&mut r, len, Some(id) == last, probe) {
            Ok(s) => s,
            Err(e) => {
                drop(r);
                unreadable(e, "scan")?;
                dropped = true;
                continue;
            }
        };
        for (off, n) in &scan.corrupt {
            warn!(
                segment = id,
                offset = off,
                bytes = n,
                "handoff: corrupt region found at open (the reader will skip it)"
            );
        }
        if scan.valid_end < len && Some(id) != last {
            // The writer syncs a segment before it creates the next one, so only the newest
            // can end in a torn write: an older one's end that no CRC vouches for is corrupt
            // records. Left in place (the reader stops before them) and counted.
            error!(
                segment = id,
                valid = scan.valid_end,
                len,
                "handoff: corrupt records at the end of a segment; skipping them"
            );
            corrupt_ends += 1;
            dropped = true;
        } else if scan.valid_end < len {
            torn_tail_bytes += len - scan.valid_end;
            warn!(
                segment = id,
                valid = scan.valid_end,
                len,
                "handoff: truncating torn tail"
            );
            let res = fs.open_append(&path).and_then(|mut f| {
                f.set_len(scan.valid_end)?;
                f.sync_data()
            });
            if let Err(e) = res {
                warn!(segment = id, error = %e, "handoff: could not truncate torn tail (reads stop before it anyway)");
            }
        }
        let meta = SegMeta {
            end: scan.valid_end,
            sealed: true,
            first_index: index,
            records: scan.records,
            base_bytes: bytes,
            min_ts: scan.min_ts.unwrap_or(0),
            max_ts: scan.max_ts.unwrap_or(0),
        };
        if id == cur_seg {
            if cur_off > scan.valid_end {
                warn!(
                    segment = id,
                    cursor = cur_off,
                    valid = scan.valid_end,
                    "handoff: cursor past valid data; clamping"
                );
            } else if scan.probe_aligned != cur_off {
                // Checked with CRCs (see `segment::scan`): corrupt bytes cover the cursor, and
                // records not yet delivered may be among them. Counted, so the backend is
                // checked.
                warn!(
                    segment = id,
                    cursor = cur_off,
                    "handoff: cursor not on a frame boundary; moving to the next one"
                );
                dropped = true;
            }
            let off = scan.probe_aligned.min(scan.valid_end);
            cursor = Some(Pos {
                seg: id,
                off,
                index: index + scan.records_before_probe,
                bytes: bytes + off - SEGMENT_HEADER_LEN,
            });
        }
        index += scan.records;
        bytes += scan.valid_end - SEGMENT_HEADER_LEN;
        st.segs.insert(id, meta);
    }
    st.write_index = index;
    st.write_bytes = bytes;
    let cursor = match cursor {
        Some(c) => c,
        None => {
            if cursor_file
                .is_some_and(|(s, _)| st.segs.keys().next().is_some_and(|first| *first > s))
            {
                warn!(
                    segment = cur_seg,
                    "handoff: the cursor's segment is missing; continuing with the next one"
                );
            }
            match st.segs.iter().next() {
                Some((id, m)) => m.start_pos(*id),
                None => Pos {
                    seg: st.next_seg_id,
                    off: SEGMENT_HEADER_LEN,
                    index,
                    bytes,
                },
            }
        }
    };
    st.ack = cursor;
    if dropped {
        mark();
    }
    info!(dir = %dir.display(), segments = st.segs.len(), pending_records = index.saturating_sub(cursor.index),
        pending_bytes = bytes.saturating_sub(cursor.bytes), "handoff: queue opened");
    Ok(Recovered {
        state: st,
        cursor,
        persisted: cursor_file,
        dropped,
        dropped_on_disk: marker.get(),
        torn_tail_bytes,
        corrupt_ends,
    })
}

/// Writes [`DROPPED_FILE`] durably.
fn write_drop_marker(fs: &dyn Filesystem, dir: &Path) -> std::io::Result<()> {
    let mut f = fs.create_truncate(&dir.join(DROPPED_FILE))?;
    f.append(b"records were dropped; the caller has not recorded it yet\n")?;
    f.sync_data()?;
    drop(f);
    fs.sync_dir(dir)
}

/// The persisted cursor; `Ok(None)` when there is none or it is damaged. An error that may
/// pass fails: replaying from the oldest segment instead would deliver again what was
/// acknowledged, statements included.
fn read_cursor(fs: &dyn Filesystem, dir: &Path) -> Result<Option<(u64, u64)>, Error> {
    let path = dir.join(CURSOR_FILE);
    let passing = |e: std::io::Error| {
        if lasting(&e) {
            Ok(None)
        } else {
            Err(Error::io(&path, e))
        }
    };
    let f = match fs.open_read(&path) {
        Ok(f) => f,
        Err(e) => return passing(e),
    };
    let mut b = [0u8; format::CURSOR_LEN];
    if let Err(e) = read_exact_at(f.as_ref(), &mut b, 0) {
        return passing(e);
    }
    match f.size() {
        Ok(n) if n == format::CURSOR_LEN as u64 => Ok(format::decode_cursor(&b)),
        Ok(_) => Ok(None),
        Err(e) => passing(e),
    }
}

// === the writer thread ===

/// The segment the writer appends to.
struct WSeg {
    id: u64,
    file: Box<dyn FsFile>,
    /// Bytes written (including not yet published).
    len: u64,
    /// Length as of the last publish.
    published_len: u64,
    first_index: u64,
    records: u64,
    base_bytes: u64,
    min_ts: u64,
    max_ts: u64,
    /// Written since the last fsync.
    dirty: bool,
}

impl WSeg {
    fn meta(&self, sealed: bool) -> SegMeta {
        SegMeta {
            end: self.len,
            sealed,
            first_index: self.first_index,
            records: self.records,
            base_bytes: self.base_bytes,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        }
    }
}

struct Writer {
    cur: Option<WSeg>,
    /// When the oldest unsynced write happened (interval policy).
    unsynced_since: Option<Instant>,
}

fn writer_main(inner: Arc<Inner>) {
    let mut w = Writer {
        cur: None,
        unsynced_since: None,
    };
    loop {
        let (reqs, shutdown) = {
            let mut s = lock(&inner.submit);
            loop {
                if !s.reqs.is_empty() || s.shutdown {
                    break;
                }
                match (inner.opts.fsync, w.unsynced_since) {
                    (FsyncPolicy::Interval(d), Some(t0)) => {
                        let waited = t0.elapsed();
                        if waited >= d {
                            break;
                        }
                        s = inner
                            .submit_cv
                            .wait_timeout(s, d - waited)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    _ => s = inner.submit_cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                }
            }
            (std::mem::take(&mut s.reqs), s.shutdown)
        };
        if !reqs.is_empty() {
            w.process(&inner, reqs);
        }
        let due = match (inner.opts.fsync, w.unsynced_since) {
            (FsyncPolicy::Interval(d), Some(t0)) => shutdown || t0.elapsed() >= d,
            _ => false,
        };
        if due {
            w.interval_sync(&inner);
        }
        if shutdown {
            // `submit` refuses new requests once `shutdown` is set, and we drained the rest.
            if inner.opts.fsync != FsyncPolicy::Never {
                w.interval_sync(&inner);
            }
            return;
        }
    }
}

impl Writer {
    fn process(&mut self, inner: &Inner, reqs: Vec<Req>) {
        if inner.degraded.load(Ordering::SeqCst) {
            for r in reqs {
                r.complete(Err(Error::Degraded));
            }
            return;
        }
        let o = *lock(&inner.limits);
        let pending_before = {
            let st = lock(&inner.state);
            st.write_bytes.saturating_sub(st.ack.bytes)
        };
        let avail = if o.min_free_bytes > 0 {
            match inner.fs.available_space(&inner.dir) {
                Ok(a) => Some(a),
                Err(e) => {
                    warn!(error = %e, "handoff: statvfs failed; not enforcing the free-disk floor for this group");
                    None
                }
            }
        } else {
            None
        };
        let mut accepted = Vec::with_capacity(reqs.len());
        let mut group = 0u64;
        for r in reqs {
            let len = r.len();
            if pending_before + group + len > o.max_bytes {
                bump(&inner.c.refused_full, 1);
                inner.note_refused();
                r.complete(Err(Error::Full {
                    pending: pending_before + group,
                    record: len,
                    max: o.max_bytes,
                }));
                continue;
            }
            if let Some(a) = avail
                && a.saturating_sub(group + len) < o.min_free_bytes
            {
                bump(&inner.c.refused_disk_floor, 1);
                inner.note_refused();
                r.complete(Err(Error::DiskFloor {
                    available: a.saturating_sub(group),
                    floor: o.min_free_bytes,
                }));
                continue;
            }
            group += len;
            accepted.push(r);
        }
        if accepted.is_empty() {
            return;
        }
        match self.write_group(inner, &accepted) {
            Ok(ids) => {
                for (r, id) in accepted.into_iter().zip(ids) {
                    r.complete(Ok(id));
                }
            }
            Err(e) => {
                warn!(dir = %inner.dir.display(), error = %e, records = accepted.len(), "handoff: append group failed");
                for r in accepted {
                    r.complete(Err(e.duplicate()));
                }
            }
        }
    }

    /// Writes `reqs` as one group; returns where each record lies, in order.
    fn write_group(&mut self, inner: &Inner, reqs: &[Req]) -> Result<Vec<RecordId>, Error> {
        let (mut w_index, mut w_bytes) = {
            let st = lock(&inner.state);
            (st.write_index, st.write_bytes)
        };
        let mut rotated: Vec<WSeg> = Vec::new();
        let mut staging: Vec<u8> = Vec::new();
        let mut ids = Vec::with_capacity(reqs.len());
        let res = (|| -> Result<(), Error> {
            for r in reqs {
                let flen = r.len();
                let rotate = match &self.cur {
                    None => true,
                    Some(c) => c.records > 0 && c.len + flen > inner.opts.segment_bytes,
                };
                if rotate {
                    if let Some(mut old) = self.cur.take() {
                        flush(inner, &mut old, &mut staging)?;
                        // Durable before the next segment exists: then only the newest
                        // segment can have a torn tail, and open tells corruption from it.
                        if inner.opts.fsync != FsyncPolicy::Never {
                            sync(inner, &mut old)?;
                        }
                        rotated.push(old);
                    }
                    self.cur = Some(create_segment(inner, w_index, w_bytes)?);
                }
                let Some(c) = self.cur.as_mut() else {
                    return Err(Error::Closed);
                };
                ids.push(RecordId::new(c.id, c.len));
                if flen >= STAGING as u64 {
                    flush(inner, c, &mut staging)?;
                    let path = inner.seg_path(c.id);
                    c.file.append(&r.head).map_err(|e| Error::io(&path, e))?;
                    if let Some(p) = &r.payload {
                        c.file.append(p).map_err(|e| Error::io(&path, e))?;
                    }
                } else {
                    staging.extend_from_slice(&r.head);
                    if let Some(p) = &r.payload {
                        staging.extend_from_slice(p);
                    }
                    if staging.len() >= STAGING {
                        flush(inner, c, &mut staging)?;
                    }
                }
                c.len += flen;
                c.records += 1;
                c.dirty = true;
                c.min_ts = if c.records == 1 {
                    r.ts
                } else {
                    c.min_ts.min(r.ts)
                };
                c.max_ts = c.max_ts.max(r.ts);
                w_index += 1;
                w_bytes += flen;
            }
            if let Some(c) = self.cur.as_mut() {
                flush(inner, c, &mut staging)?;
            }
            failpoint::hit("writer.after_write");
            match inner.opts.fsync {
                FsyncPolicy::Always => {
                    for s in rotated.iter_mut().chain(self.cur.as_mut()) {
                        sync(inner, s)?;
                    }
                    failpoint::hit("writer.after_fsync");
                }
                FsyncPolicy::Interval(_) => {
                    for s in rotated.iter_mut() {
                        sync(inner, s)?;
                    }
                }
                FsyncPolicy::Never => {}
            }
            Ok(())
        })();
        if let Err(e) = res {
            self.fail(inner, rotated, &e);
            return Err(e);
        }
        // Publish, then notify: a waiter that checks after subscribing cannot miss this.
        {
            let mut st = lock(&inner.state);
            for s in &mut rotated {
                s.published_len = s.len;
                st.segs.insert(s.id, s.meta(true));
            }
            if let Some(c) = self.cur.as_mut() {
                c.published_len = c.len;
                st.segs.insert(c.id, c.meta(false));
            }
            if st.write_bytes <= st.ack.bytes && w_bytes > st.ack.bytes {
                bump(&inner.c.fills, 1);
            }
            st.write_index = w_index;
            st.write_bytes = w_bytes;
        }
        let n = reqs.len() as u64;
        bump(&inner.c.appended_records, n);
        bump(&inner.c.appended_bytes, reqs.iter().map(|r| r.len()).sum());
        bump(&inner.c.append_groups, 1);
        if matches!(inner.opts.fsync, FsyncPolicy::Interval(_)) && self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        inner.data_cv.notify_all();
        inner.watch.send_replace(w_bytes);
        Ok(ids)
    }

    /// After a failed write or fsync: seal every segment this group touched at its last
    /// published length; the next append starts a new segment.
    fn fail(&mut self, inner: &Inner, rotated: Vec<WSeg>, e: &Error) {
        if matches!(e, Error::FsyncFailed(_)) {
            inner.degraded.store(true, Ordering::SeqCst);
            error!(dir = %inner.dir.display(), error = %e, "handoff: fsync failed; queue degraded");
        }
        bump(&inner.c.io_errors, 1);
        // Under the interval policy, published records may not be synced yet; sealed now, no
        // interval sync will reach them. A failed fsync is not tried again (see above).
        let sync = !matches!(e, Error::FsyncFailed(_)) && inner.opts.fsync != FsyncPolicy::Never;
        let mut sealed: Vec<WSeg> = rotated.into_iter().chain(self.cur.take()).collect();
        // File I/O first: readers take the state lock for every look at the queue.
        for s in &mut sealed {
            if s.len != s.published_len
                && let Err(te) = s.file.set_len(s.published_len)
            {
                warn!(segment = s.id, error = %te, "handoff: could not truncate unpublished bytes");
            }
            if sync && let Err(se) = s.file.sync_data() {
                inner.degraded.store(true, Ordering::SeqCst);
                error!(segment = s.id, error = %se, "handoff: fsync after a failed write failed; queue degraded");
            }
            s.len = s.published_len;
        }
        let mut st = lock(&inner.state);
        for s in sealed {
            match st.segs.get_mut(&s.id) {
                Some(m) => m.sealed = true,
                None => {
                    // Created in this group, never published: an empty, sealed segment.
                    let (wi, wb) = (st.write_index, st.write_bytes);
                    st.segs.insert(
                        s.id,
                        SegMeta {
                            end: SEGMENT_HEADER_LEN,
                            sealed: true,
                            first_index: wi,
                            records: 0,
                            base_bytes: wb,
                            min_ts: 0,
                            max_ts: 0,
                        },
                    );
                }
            }
        }
        self.unsynced_since = None;
    }

    /// The interval policy's periodic fsync.
    fn interval_sync(&mut self, inner: &Inner) {
        self.unsynced_since = None;
        let Some(c) = self.cur.as_mut() else { return };
        if !c.dirty {
            return;
        }
        if let Err(e) = sync(inner, c) {
            self.fail(inner, Vec::new(), &e);
        }
    }
}

fn flush(inner: &Inner, c: &mut WSeg, staging: &mut Vec<u8>) -> Result<(), Error> {
    if staging.is_empty() {
        return Ok(());
    }
    let res = c.file.append(staging);
    staging.clear();
    res.map_err(|e| Error::io(inner.seg_path(c.id), e))
}

fn sync(inner: &Inner, s: &mut WSeg) -> Result<(), Error> {
    if !s.dirty {
        return Ok(());
    }
    s.file.sync_data().map_err(Error::FsyncFailed)?;
    s.dirty = false;
    bump(&inner.c.fsyncs, 1);
    Ok(())
}

/// Creates the next segment: header written and, unless the policy is `never`, the file and the
/// directory fsynced before any record in it can be published.
fn create_segment(inner: &Inner, first_index: u64, base_bytes: u64) -> Result<WSeg, Error> {
    let id = {
        let mut st = lock(&inner.state);
        let id = st.next_seg_id;
        st.next_seg_id += 1;
        id
    };
    let path = inner.seg_path(id);
    let mut file = inner
        .fs
        .create_new(&path)
        .map_err(|e| Error::io(&path, e))?;
    let res = (|| -> Result<(), Error> {
        file.append(&format::segment_header())
            .map_err(|e| Error::io(&path, e))?;
        failpoint::hit("segment.after_create");
        if inner.opts.fsync != FsyncPolicy::Never {
            file.sync_data().map_err(Error::FsyncFailed)?;
            bump(&inner.c.fsyncs, 1);
            inner.fs.sync_dir(&inner.dir).map_err(Error::FsyncFailed)?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        // Not published, nothing references it: remove it (best effort; open also copes).
        drop(file);
        if let Err(re) = inner.fs.remove_file(&path) {
            debug!(segment = id, error = %re, "handoff: could not remove failed new segment");
        }
        return Err(e);
    }
    Ok(WSeg {
        id,
        file,
        len: SEGMENT_HEADER_LEN,
        published_len: SEGMENT_HEADER_LEN,
        first_index,
        records: 0,
        base_bytes,
        min_ts: 0,
        max_ts: 0,
        dirty: false,
    })
}
