//! Durable per-backend hinted-handoff queue.
//!
//! Each backend gets one [`Queue`] in its own directory holding every write the backend has not
//! yet acknowledged. With [`FsyncPolicy::Always`] (the default) an append completes only after
//! its bytes are on disk, which is what lets the write service answer a client 2xx meaning
//! "durable". This crate knows nothing about HTTP or backends, and its API takes no credentials:
//! records hold a database, a retention policy, a precision and line-protocol bytes (or a schema
//! statement), never an `Authorization` header, a token or a password.
//!
//! # Design
//!
//! ## Files
//!
//! ```text
//! <dir>/0000000000000001.hseg    segment files, append-only, ids increase, never reused
//! <dir>/0000000000000002.hseg
//! <dir>/cursor                   the persisted read cursor (segment id + byte offset)
//! <dir>/cursor.tmp               transient: the next cursor before its rename
//! <dir>/<name>.corrupt           a segment whose header was unreadable, set aside for an operator
//! <dir>/<name>.unreadable        a segment that could not be read at open (EIO), set aside too
//! <dir>/dropped                  records were dropped and the caller has not recorded it yet
//! <dir>/lock                     locked (`flock`) by the process that has the queue open
//! ```
//!
//! ## Segment format (version 1)
//!
//! A segment starts with a 16-byte header: magic `IHAHOFF\0`, format version (u32 LE, = 1),
//! 4 reserved zero bytes. A reader refuses any other magic or version (the segment is renamed
//! to `.corrupt` and counted, never silently reinterpreted). Records follow back to back, each
//! in a frame:
//!
//! ```text
//! marker   4 bytes  FE 48 51 01   sync marker; 0xFE never occurs in UTF-8 text
//! len      u32 LE                 body length, 14 ..= 1 GiB
//! crc      u32 LE                 CRC-32 (IEEE, crc32fast) over the 4 len bytes + body
//! body:
//!   kind      u8                  1 = write, 2 = schema statement
//!   ts_ms     u64 LE              append time, Unix milliseconds (for max_age and age gauges)
//!   db_len    u16 LE, rp_len u16 LE, precision_len u8
//!   db, rp, precision             UTF-8; precision is the InfluxDB v1 `precision` parameter
//!                                 ("n","u","ms","s","m","h" or empty); schema records leave rp
//!                                 and precision empty
//!   payload                       the rest: line-protocol bytes, or the statement text
//! ```
//!
//! A segment is closed ("sealed") once the next frame would take it past `segment_bytes`
//! (default 64 MiB), and at every open: a reopened queue never appends to an old segment, so a
//! torn tail is only ever at the end of a sealed file.
//!
//! The cursor file is 32 bytes: magic `IHACURS\0`, version u32, segment id u64, offset u64,
//! CRC-32 of the preceding 28 bytes. It names the first record not yet acknowledged.
//!
//! ## Invariants
//!
//! 1. Published data is durable (policy `always`): the reader only sees bytes up to a segment's
//!    *published end*, and the writer publishes a group only after its fsync succeeded. So no
//!    record is ever delivered that a crash could take back, and none is acknowledged to an
//!    appender before it is on disk.
//! 2. The persisted cursor only moves forward and only to a frame boundary the reader returned
//!    (the end of an acknowledged batch, or past records dropped as corrupt or expired).
//! 3. A segment is unlinked only after a cursor naming a *later* segment is durable (file
//!    fsync, rename, directory fsync). Start-up deletes every segment older than the cursor's,
//!    so an interrupted deletion is simply finished.
//! 4. Sizes, depth and the oldest timestamp are recomputed from the files at open; nothing is
//!    trusted from a counter. Gauges are differences of logical positions (saturating), so they
//!    cannot go negative.
//! 5. Every loop over file contents is bounded by a file length or a segment count known before
//!    the loop starts, and advances by at least one byte or one segment per step; no length
//!    field read from disk can make a loop run longer or allocate past the file.
//!
//! ## Write flow (group commit)
//!
//! [`Queue::append`] encodes and CRCs the frame on the caller's thread (no I/O), pushes it on a
//! submission list and returns an [`Appending`] future ([`Queue::append_write`] does the same
//! with a shared [`Bytes`] payload that is written without being copied). One writer thread
//! per queue takes *everything* submitted so far as a group, checks the limits (`max_bytes`,
//! free-disk floor), writes the frames (rotating segments as needed), calls `fdatasync` once
//! for the whole group, publishes the new ends (under the state lock), wakes the reader
//! (condvar and `watch`, after publishing, so no wake-up is lost) and completes every
//! appender. While it is in `fsync`, new appends pile up and form the next group, so N
//! concurrent appenders share one fsync.
//!
//! Why a thread and a future: the writer blocks in `write`/`fsync`, which must never happen on
//! a tokio worker; appenders only wait on a `tokio::sync::oneshot`, which works from async code
//! (`.await`) and from blocking code ([`Appending::wait`]) alike, and needs no runtime inside
//! this crate. Group commit then needs no cooperation from the callers.
//!
//! * `always`: complete after fsync. New segments are fsynced and the directory is fsynced
//!   before any record in them is published.
//! * `interval(d)`: complete after `write`; the writer fsyncs at most `d` after the first
//!   unsynced write. A crash may lose up to `d` of acknowledged appends.
//! * `never`: complete after `write`; the OS decides. For benchmarks and tests.
//!
//! A failed write (including `ENOSPC`) fails the whole group with a typed error, seals the
//! segment at its last published end (truncating best effort) and starts a new segment on the
//! next append. A failed fsync does the same and additionally marks the queue *degraded*:
//! after a failed fsync the kernel may have dropped the dirty pages, so nothing in that file can
//! be trusted to be durable; every later append fails with [`Error::Degraded`] until reopen.
//!
//! ## Read flow
//!
//! [`Queue::next_batch`] starts at the acknowledged cursor. It first skips, counts and logs
//! what cannot be delivered (corrupt frames — resynchronising to the next marker whose frame
//! has a valid CRC —, records older than `max_age`, and the rest of a sealed segment that fails
//! with an I/O error), then reads the first good record and merges following *write* records
//! with the same db/rp/precision while the batch stays within the byte limit (payloads are
//! newline-terminated line protocol; a missing final `\n` is added). A schema record is always
//! a batch on its own, so statements reach the backend in order with the writes. Without an
//! [`Queue::ack`], the next call returns the same batch again. `ack` moves the cursor to the
//! batch end and persists it (temp file, fsync, rename, directory fsync under `always`; without
//! fsyncs otherwise), then deletes segments entirely behind it. [`Queue::ack_first`] moves it
//! past the batch's first record only, for a consumer that delivered that record by other
//! means: an append completes with the record's [`RecordId`], which [`Batch::first_record`]
//! names.
//!
//! [`Queue::next_batch_after`] reads the batch that follows a pending one without touching the
//! cursor, so that a consumer can read batch N+1 while batch N is in flight. It never skips:
//! if the record right after N is corrupt or expired it returns `None`, and the cursor reader
//! skips and counts it once N is acknowledged. A batch read ahead is acknowledged after N like
//! any other ([`Queue::is_next`] tells whether it still starts at the cursor, e.g. after a
//! purge); `ack` refuses it otherwise.
//!
//! ## Delete flow
//!
//! After an ack moves the cursor past the end of a sealed segment, the cursor is normalised to
//! the next segment, persisted durably, and only then are older segments unlinked (then the
//! directory is fsynced). A crash anywhere in between leaves either the old cursor (the batch
//! is delivered again) or the new cursor plus files that start-up removes.
//!
//! ## Crash reasoning
//!
//! * Crash before a group's fsync returns: its appenders were not completed; whatever reached
//!   the disk is a valid prefix of frames plus possibly a torn frame. At open the last segment
//!   is scanned with CRC checks and truncated after its last valid frame. Records that made it
//!   are delivered even though their appenders saw no success (at-least-once, never less).
//! * Crash after fsync, before completion: the records are durable and will be delivered.
//! * Crash while writing the cursor: `cursor.tmp` is ignored and removed at open; the old
//!   cursor stands, so at most the batch being acknowledged is delivered again.
//! * Crash after the cursor rename but before the directory fsync: either cursor may survive;
//!   both are valid, the older one redelivers one batch.
//! * Crash during segment deletion: the durable cursor already points past it; open deletes it.
//!   Except with the disk full, where consumed segments are deleted before the cursor can be
//!   saved (nothing else frees room for it): open then finds the cursor's segment gone and
//!   resumes at the first segment kept, so what was acknowledged in it is delivered again.
//! * A corrupt cursor file (bad CRC) restarts from the oldest segment: duplicates, no loss.
//! * Older segments are walked by their frame headers only; a walk that meets an implausible
//!   header (a length field gone bad can make it jump over good frames) rescans that segment
//!   with CRC checks, and nothing is truncated on the walk's word. The writer syncs a segment
//!   (unless the policy is `never`) before it creates the next one, so only the newest segment
//!   can end in a torn write, which open truncates; the end of an older one that no CRC vouches
//!   for is corruption: counted, the `dropped` flag raised, left in place. (In the newest
//!   segment, records corrupted at its very end cannot be told from a torn write.)
//!
//! ## I/O errors
//!
//! A read error that may pass (out of file descriptors or memory, permissions) is returned
//! to the caller, which retries: at open it fails [`Queue::open`] with the file named, while
//! reading it fails that read. Only an error that says the data is damaged or gone (EIO, a
//! file removed or cut short) skips it: the rest of that segment, counted, with the `dropped`
//! flag raised; at open the segment is set aside as `.unreadable`, never deleted.
//!
//! ## Limits and drops
//!
//! `max_bytes` bounds pending (unacknowledged) record bytes: an append that would exceed it
//! fails with [`Error::Full`]. Disk usage can exceed it by at most one segment, the consumed
//! prefix of the segment being read. `min_free_bytes` refuses appends that would leave less
//! free space on the filesystem ([`Error::DiskFloor`]); a real `ENOSPC` is [`Error::DiskFull`].
//! `max_age` drops records older than it when the reader passes them (or
//! [`Queue::purge_expired`] runs). Every drop — refused overflow, expiry, corrupt region,
//! unreadable segment, operator purge — increments a counter in [`Stats`] and raises the
//! `dropped` flag ([`Queue::take_dropped`]) so the caller can mark the backend diverged. Before
//! a drop is made durable (the cursor saved past it, a segment set aside) a `dropped` file is
//! written and synced, and a queue opened with it present raises the flag again: a crash before
//! the caller recorded the drop does not lose it. The caller removes the file with
//! [`Queue::dropped_recorded`] once its own record is durable. A cursor file that exists but
//! cannot be read counts as a drop too: everything retained is delivered again, statements
//! included.
//!
//! # Known limits
//!
//! * One open queue per directory: [`Queue::open`] takes the directory's lock (`flock` on
//!   `lock`), and a second open fails with [`Error::Locked`] until the first is closed or its
//!   process is gone.
//! * Resynchronisation after corruption verifies every marker candidate it meets; data built
//!   to contain many markers with large lengths can make it slow (quadratic in the segment
//!   size, still finite). UTF-8 payloads cannot contain the marker (0xFE is not UTF-8); the
//!   crate does not check that payloads are UTF-8.
//! * Depth in records is exact except across a corrupt region inside a segment, where it may
//!   be off until the reader leaves that segment (depth in bytes is always exact).
//! * If [`Queue::ack`] returns an error (the cursor could not be written), the in-memory cursor
//!   has still moved; after a crash, every batch since the last successful ack is delivered
//!   again.
//!
//! # Layout
//!
//! * `format` — byte layout, pure encode/decode.
//! * `segment` — reading a segment: window, frames, resync, scan.
//! * `queue` — [`Queue`]: open/recovery, the writer thread, the reader, stats.
//! * `ops` — operator functions: [`inspect`], [`verify`] (read-only, queue closed),
//!   [`Queue::drain_to`], [`Queue::purge`].
//! * [`fs`] — the [`Filesystem`] seam; [`simfs`] — the fault-injecting simulation used by tests.
#![forbid(unsafe_code)]

mod failpoint;
mod format;
pub mod fs;
mod ops;
mod queue;
mod segment;
pub mod simfs;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use bytes::Bytes;
pub use fs::{DirLock, Filesystem, FsFile, LOCK_FILE, StdFs};
pub use ops::{DrainReport, Inspection, SegmentInfo, SegmentVerify, VerifyReport, inspect, verify};
pub use queue::{Appending, PreparedAppend, Queue};

/// One record to append. Borrowed: the frame is encoded (copied) during [`Queue::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A line-protocol write for `db`/`rp` at `precision` (the InfluxDB v1 `precision`
    /// parameter: `"n"`, `"u"`, `"ms"`, `"s"`, `"m"`, `"h"`, or empty for the default).
    Write {
        db: &'a str,
        rp: &'a str,
        precision: &'a str,
        payload: &'a [u8],
    },
    /// A schema statement (e.g. `CREATE DATABASE x`) that must reach the backend in order,
    /// with the request's other parameters (`rp`, bound `params`, …) form-encoded, or empty.
    Schema {
        db: &'a str,
        statement: &'a str,
        params: &'a str,
    },
}

/// When appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// An append completes after its group's fsync (default; "2xx means durable").
    #[default]
    Always,
    /// An append completes after `write`; fsync at most this long after the first unsynced write.
    Interval(Duration),
    /// Never fsync (benchmarks, tests, or a deliberately volatile queue).
    Never,
}

/// Queue configuration, validated by [`Queue::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Segment file size at which the writer starts a new segment. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest encoded record (frame) accepted; larger appends fail with
    /// [`Error::RecordTooLarge`]. Must fit a segment. Default 32 MiB.
    pub max_record_bytes: u64,
    /// Cap on pending (unacknowledged) bytes; appends past it fail with [`Error::Full`].
    /// Default 10 GiB.
    pub max_bytes: u64,
    /// Records older than this are dropped (and counted). `None`: kept until acknowledged.
    /// Default 7 days.
    pub max_age: Option<Duration>,
    /// Appends are refused while they would leave less free space than this on the filesystem.
    /// Default 1 GiB. 0 disables the check.
    pub min_free_bytes: u64,
    /// Durability policy. Default [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
}

/// The part of [`Options`] that can change on a running queue ([`Queue::set_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`Options::max_bytes`].
    pub max_bytes: u64,
    /// See [`Options::max_age`].
    pub max_age: Option<Duration>,
    /// See [`Options::min_free_bytes`].
    pub min_free_bytes: u64,
}

impl Limits {
    /// The limits `options` set.
    pub fn of(options: &Options) -> Self {
        Self {
            max_bytes: options.max_bytes,
            max_age: options.max_age,
            min_free_bytes: options.min_free_bytes,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_record_bytes: 32 << 20,
            max_bytes: 10 << 30,
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            min_free_bytes: 1 << 30,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// Wall-clock source for append timestamps and `max_age` (injectable for tests).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        Self(AtomicU64::new(ms))
    }
    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What went wrong. Each variant is one thing the caller may react to differently.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Pending bytes would exceed `max_bytes`.
    #[error("queue full: {pending} pending bytes + {record} > max_bytes {max}")]
    Full { pending: u64, record: u64, max: u64 },
    /// Free disk space would fall below `min_free_bytes`.
    #[error("free disk space {available} bytes would fall below the floor of {floor} bytes")]
    DiskFloor { available: u64, floor: u64 },
    /// The disk is full (`ENOSPC`) while writing.
    #[error("disk full: {0}")]
    DiskFull(#[source] io::Error),
    /// An fsync failed earlier; the queue refuses appends until it is reopened.
    #[error("queue degraded after a failed fsync; appends refused until reopen")]
    Degraded,
    /// This group's fsync failed; the segment is sealed and the queue is now degraded.
    #[error("fsync failed; segment sealed and queue degraded: {0}")]
    FsyncFailed(#[source] io::Error),
    /// The encoded record is larger than `max_record_bytes`.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: u64, max: u64 },
    /// A db / rp / precision string is longer than the format allows.
    #[error("{field} is {len} bytes, longer than the format allows")]
    FieldTooLong { field: &'static str, len: usize },
    /// The queue was closed.
    #[error("queue closed")]
    Closed,
    /// Another process (or another open queue of this one) has the queue's directory open.
    #[error("{0} is in use by another process (a running node, or a queue command)")]
    Locked(PathBuf),
    /// `ack` was given a batch that does not start at the current cursor.
    #[error("batch does not start at the current cursor (already acknowledged, or purged)")]
    StaleBatch,
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// Any other I/O error, with the file it happened on.
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        // ENOSPC is its own variant whatever operation hit it.
        if source.kind() == io::ErrorKind::StorageFull {
            return Error::DiskFull(source);
        }
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A copy for the next appender of a failed group (`io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> Error {
        fn dup(e: &io::Error) -> io::Error {
            io::Error::new(e.kind(), e.to_string())
        }
        match self {
            Error::Full {
                pending,
                record,
                max,
            } => Error::Full {
                pending: *pending,
                record: *record,
                max: *max,
            },
            Error::DiskFloor { available, floor } => Error::DiskFloor {
                available: *available,
                floor: *floor,
            },
            Error::DiskFull(e) => Error::DiskFull(dup(e)),
            Error::Degraded => Error::Degraded,
            Error::FsyncFailed(e) => Error::FsyncFailed(dup(e)),
            Error::RecordTooLarge { size, max } => Error::RecordTooLarge {
                size: *size,
                max: *max,
            },
            Error::FieldTooLong { field, len } => Error::FieldTooLong { field, len: *len },
            Error::Closed => Error::Closed,
            Error::Locked(p) => Error::Locked(p.clone()),
            Error::StaleBatch => Error::StaleBatch,
            Error::InvalidOptions(s) => Error::InvalidOptions(s.clone()),
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: dup(source),
            },
        }
    }
}

/// A batch returned by [`Queue::next_batch`]; pass it back to [`Queue::ack`] once the backend
/// has accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// What to send.
    pub kind: BatchKind,
    /// How many records were merged into it.
    pub records: u64,
    /// Append time of its first record (Unix ms).
    pub first_ts_ms: u64,
    pub(crate) start: queue::Pos,
    /// Where its first record ends (`end` when it holds one record).
    pub(crate) first_end: queue::Pos,
    pub(crate) end: queue::Pos,
}

impl Batch {
    /// The record it starts with.
    pub fn first_record(&self) -> RecordId {
        RecordId::new(self.start.seg, self.start.off)
    }
}

/// Where a record lies in its queue, as [`Appending`] reports it once appended: compare it
/// with [`Batch::first_record`]. No two records appended while a [`Queue`] is open share one
/// (segment ids only grow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordId {
    seg: u64,
    off: u64,
}

impl RecordId {
    pub(crate) fn new(seg: u64, off: u64) -> Self {
        Self { seg, off }
    }
}

/// The content of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchKind {
    /// Merged line protocol, newline-terminated.
    Write {
        db: String,
        rp: String,
        precision: String,
        payload: Vec<u8>,
    },
    /// One schema statement, with its request's other parameters (form-encoded, or empty).
    Schema {
        db: String,
        statement: String,
        params: String,
    },
}

/// A point-in-time snapshot of the queue's gauges and counters (counters since open).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records appended and not yet acknowledged (or dropped).
    pub depth_records: u64,
    /// Encoded bytes of those records.
    pub depth_bytes: u64,
    /// Age of the oldest pending record, if any.
    pub oldest_age: Option<Duration>,
    /// Segment files in use.
    pub segments: u64,
    /// Bytes of those files up to their valid ends.
    pub disk_bytes: u64,
    /// Records appended (completed successfully).
    pub appended_records: u64,
    /// Appends that found nothing pending (the queue started holding records again).
    pub fills: u64,
    /// Encoded bytes appended.
    pub appended_bytes: u64,
    /// Groups written (one write + at most one fsync pass each).
    pub append_groups: u64,
    /// fsync calls on segment files.
    pub fsyncs: u64,
    /// Records acknowledged through [`Queue::ack`].
    pub acked_records: u64,
    /// Batches acknowledged.
    pub acked_batches: u64,
    /// Corrupt regions skipped by the reader.
    pub corrupt_regions: u64,
    /// Bytes in those regions.
    pub corrupt_bytes: u64,
    /// Records dropped because they were older than `max_age`.
    pub expired_records: u64,
    /// Records dropped by [`Queue::purge`].
    pub purged_records: u64,
    /// Appends refused by `max_bytes`.
    pub refused_full: u64,
    /// Appends refused by the free-disk floor.
    pub refused_disk_floor: u64,
    /// Bytes cut from segment tails at open (torn writes of appends that never completed).
    pub torn_tail_bytes: u64,
    /// I/O errors seen (write, read, cursor, unlink), including skipped unreadable segments.
    pub io_errors: u64,
    /// An fsync failed: appends are refused until reopen.
    pub degraded: bool,
    /// Something was dropped since the flag was last taken ([`Queue::take_dropped`]).
    pub dropped: bool,
}
