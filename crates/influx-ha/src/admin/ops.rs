//! The operator's queue, dead-letter and maintenance operations on one [`Replica`], shared by
//! the admin API (running node) and the CLI on a stopped node's data directory (which opens
//! the replicas itself). Each returns a serialisable report: the API answers it as JSON, the
//! CLI prints it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::write::replica::Replica;

/// Why an operation failed; `status` is what the admin API answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    /// HTTP status for the API (404 unknown backend, 409 conflicting state, 500 I/O).
    pub status: u16,
    /// What went wrong, for people.
    pub message: String,
}

impl OpError {
    fn io(what: &str, e: impl std::fmt::Display) -> Self {
        Self {
            status: 500,
            message: format!("{what}: {e}"),
        }
    }
}

/// One queue's depth.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Depth {
    /// Records waiting.
    pub records: u64,
    /// Bytes waiting.
    pub bytes: u64,
    /// Age of the oldest record, seconds.
    pub oldest_age_seconds: Option<f64>,
}

fn depth(q: &handoff::Queue) -> Depth {
    let s = q.stats();
    Depth {
        records: s.depth_records,
        bytes: s.depth_bytes,
        oldest_age_seconds: s.oldest_age.map(|d| d.as_secs_f64()),
    }
}

/// One backend's queues and flags (`queue list`, `deadletter list`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct QueueEntry {
    /// The backend.
    pub backend: String,
    /// Its hinted-handoff queue.
    pub queue: Depth,
    /// Its dead letters.
    pub dead_letters: Depth,
    /// Why it may miss data.
    pub diverged: Option<String>,
    /// Operator maintenance.
    pub maintenance: bool,
    /// Where the queue lives.
    pub dir: String,
}

/// `queue list` / `deadletter list`.
pub fn list(replicas: &[Arc<Replica>]) -> Vec<QueueEntry> {
    replicas
        .iter()
        .map(|r| QueueEntry {
            backend: r.name().to_owned(),
            queue: depth(r.queue()),
            dead_letters: depth(r.dead_letters()),
            diverged: r.diverged(),
            maintenance: r.in_maintenance(),
            dir: r.dir().display().to_string(),
        })
        .collect()
}

/// The backend called `name`.
pub fn find<'a>(replicas: &'a [Arc<Replica>], name: &str) -> Result<&'a Arc<Replica>, OpError> {
    replicas.iter().find(|r| r.name() == name).ok_or_else(|| {
        let known: Vec<&str> = replicas.iter().map(|r| r.name()).collect();
        OpError {
            status: 404,
            message: format!(
                "no backend named {name:?} (configured: {})",
                known.join(", ")
            ),
        }
    })
}

/// `queue inspect`: depth, counters and segment files.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Inspection {
    /// The backend.
    pub backend: String,
    /// Which store: `queue` or `deadletter`.
    pub store: String,
    /// Depth.
    pub depth: Depth,
    /// Segment files: (id, bytes).
    pub segments: Vec<(u64, u64)>,
    /// Records appended since the node started.
    pub appended_records: u64,
    /// Records acknowledged since the node started.
    pub acked_records: u64,
    /// Records dropped since start (expired, purged, refused while full), corrupt regions.
    pub expired_records: u64,
    /// See `expired_records`.
    pub purged_records: u64,
    /// Appends refused because the queue was full or the disk floor reached.
    pub refused_records: u64,
    /// Corrupt regions skipped.
    pub corrupt_regions: u64,
    /// A failed fsync made it refuse appends.
    pub degraded: bool,
}

fn store(r: &Replica, dead: bool) -> (&handoff::Queue, &'static str) {
    if dead {
        (r.dead_letters(), "deadletter")
    } else {
        (r.queue(), "queue")
    }
}

/// `queue inspect NAME` (or the dead letters of NAME).
pub fn inspect(r: &Replica, dead: bool) -> Result<Inspection, OpError> {
    let (q, name) = store(r, dead);
    let s = q.stats();
    let files = handoff::inspect(&handoff::StdFs, q.dir())
        .map_err(|e| OpError::io("cannot list the segment files", e))?;
    Ok(Inspection {
        backend: r.name().to_owned(),
        store: name.to_owned(),
        depth: depth(q),
        segments: files
            .segments
            .iter()
            .map(|seg| (seg.id, seg.file_bytes))
            .collect(),
        appended_records: s.appended_records,
        acked_records: s.acked_records,
        expired_records: s.expired_records,
        purged_records: s.purged_records,
        refused_records: s.refused_full + s.refused_disk_floor,
        corrupt_regions: s.corrupt_regions,
        degraded: s.degraded,
    })
}

/// A writer that keeps at most `limit` bytes and then says so.
struct Capped {
    out: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            self.truncated = true;
            return Err(std::io::Error::other("output limit reached"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The pending records as text (`# handoff write db=… rp=…` comment lines, then line
/// protocol), at most `limit` bytes; the flag says whether it was cut.
pub fn dump(r: &Replica, dead: bool, limit: usize) -> Result<(Vec<u8>, bool), OpError> {
    let (q, _) = store(r, dead);
    let mut w = Capped {
        out: Vec::new(),
        limit,
        truncated: false,
    };
    match q.drain_to(&mut w) {
        Ok(_) => Ok((w.out, false)),
        Err(_) if w.truncated => Ok((w.out, true)),
        Err(e) => Err(OpError::io("cannot read the records", e)),
    }
}

/// `queue verify`: the CRC of every frame.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Verification {
    /// The backend.
    pub backend: String,
    /// Every frame of every segment has a valid CRC (an in-progress tail of the newest
    /// segment of a running node excepted).
    pub clean: bool,
    /// Segments checked.
    pub segments: u64,
    /// Valid records found.
    pub valid_records: u64,
    /// Corrupt regions (segment id, offset, length).
    pub corrupt: Vec<(u64, u64, u64)>,
    /// Segments that could not be checked, and why.
    pub errors: Vec<String>,
    /// Bytes after the last valid frame of a sealed segment.
    pub torn_tail_bytes: u64,
    /// Whether the cursor file is valid.
    pub cursor_ok: bool,
}

/// `queue verify NAME`; `running`: the newest segment may be being written (its tail is not
/// counted as torn).
pub fn verify(r: &Replica, running: bool) -> Result<Verification, OpError> {
    verify_dir(r.name(), r.queue().dir(), running)
}

/// [`verify`] of the queue in `dir` (closed, or being written when `running`).
pub fn verify_dir(
    backend: &str,
    dir: &std::path::Path,
    running: bool,
) -> Result<Verification, OpError> {
    let report = handoff::verify(&handoff::StdFs, dir)
        .map_err(|e| OpError::io("cannot verify the queue", e))?;
    let newest = report.segments.iter().map(|s| s.id).max();
    let mut v = Verification {
        backend: backend.to_owned(),
        clean: true,
        segments: report.segments.len() as u64,
        valid_records: 0,
        corrupt: Vec::new(),
        errors: Vec::new(),
        torn_tail_bytes: 0,
        cursor_ok: report.cursor_ok || report.segments.is_empty(),
    };
    for s in &report.segments {
        v.valid_records += s.valid_records;
        v.corrupt
            .extend(s.corrupt.iter().map(|&(off, len)| (s.id, off, len)));
        if let Some(e) = &s.error {
            v.errors.push(format!("segment {}: {e}", s.id));
        }
        if !(running && Some(s.id) == newest) {
            v.torn_tail_bytes += s.torn_tail_bytes;
        }
    }
    v.clean = v.corrupt.is_empty() && v.errors.is_empty() && v.torn_tail_bytes == 0;
    Ok(v)
}

/// What `drain`, `purge`, `replay`, `maintenance` and `resume` did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Done {
    /// The backend.
    pub backend: String,
    /// What happened, for people.
    pub message: String,
    /// Records affected (dropped, moved), when it applies.
    pub records: Option<u64>,
    /// The queue afterwards.
    pub queue: Depth,
    /// Whether the operation completed (a drain that timed out did not).
    pub complete: bool,
}

fn done(r: &Replica, message: String, records: Option<u64>, complete: bool) -> Done {
    Done {
        backend: r.name().to_owned(),
        message,
        records,
        queue: depth(r.queue()),
        complete,
    }
}

/// `queue drain NAME`: wakes the replay now and waits up to `wait` for the queue to empty.
pub async fn drain(r: &Replica, wait: Duration) -> Result<Done, OpError> {
    if r.in_maintenance() {
        return Err(OpError {
            status: 409,
            message: format!(
                "{} is in maintenance: its queue is held; `backend resume {}` delivers it",
                r.name(),
                r.name()
            ),
        });
    }
    let start = Instant::now();
    r.kick();
    while r.queue().has_pending() && start.elapsed() < wait {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = !r.queue().has_pending();
    let message = if drained {
        format!("queue of {} delivered", r.name())
    } else {
        format!(
            "queue of {} not empty after {:?}: {}",
            r.name(),
            wait,
            r.last_error()
                .unwrap_or_else(|| "the replay is still delivering".to_owned())
        )
    };
    Ok(done(r, message, None, drained))
}

/// `queue purge NAME`: drops the queue and marks the backend diverged.
pub fn purge(r: &Replica) -> Result<Done, OpError> {
    let n = r
        .purge_queue()
        .map_err(|e| OpError::io("cannot purge the queue", e))?;
    Ok(done(
        r,
        format!(
            "dropped {n} queued records of {}; it is marked diverged until verify/repair",
            r.name()
        ),
        Some(n),
        true,
    ))
}

/// `deadletter replay NAME`: moves the dead letters back into the queue.
pub async fn replay_dead_letters(r: &Arc<Replica>) -> Result<Done, OpError> {
    let n = r
        .requeue_dead_letters()
        .await
        .map_err(|e| OpError::io("cannot requeue the dead letters", e))?;
    Ok(done(
        r,
        format!(
            "queued {n} dead-lettered records of {} for delivery; it stays marked diverged until verify/repair",
            r.name()
        ),
        Some(n),
        true,
    ))
}

/// `deadletter purge NAME`: drops the dead letters (the backend stays diverged).
pub fn purge_dead_letters(r: &Replica) -> Result<Done, OpError> {
    let n = r
        .dead_letters()
        .purge()
        .map_err(|e| OpError::io("cannot purge the dead letters", e))?;
    r.dead_letters().take_dropped();
    r.dead_letters().dropped_recorded();
    Ok(done(
        r,
        format!("dropped {n} dead-lettered records of {}", r.name()),
        Some(n),
        true,
    ))
}

/// `backend maintenance NAME`.
pub fn maintenance(r: &Replica) -> Result<Done, OpError> {
    r.enter_maintenance()
        .map_err(|e| OpError::io("cannot persist the maintenance flag", e))?;
    Ok(done(
        r,
        format!(
            "{} is in maintenance: every write is queued for it and no reads are served from it",
            r.name()
        ),
        None,
        true,
    ))
}

/// `backend resume NAME`.
pub fn resume(r: &Replica) -> Result<Done, OpError> {
    r.resume()
        .map_err(|e| OpError::io("cannot remove the maintenance flag", e))?;
    Ok(done(
        r,
        format!(
            "{} resumed: its queue is being delivered, then it is in sync",
            r.name()
        ),
        None,
        true,
    ))
}

/// When the verify that found a backend identical began: the node's divergence marks then
/// (`?marks=`, from `GET …/divergence`), or a Unix time in ms (`?verified_from=`, which trusts
/// the verifying host's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedSince {
    /// [`Replica::divergence_marks`] read before the verify.
    Marks(String),
    /// Unix milliseconds.
    Time(u64),
}

/// `GET /admin/v1/backend/NAME/divergence`: what a verify reads before it starts.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Divergence {
    /// The backend.
    pub backend: String,
    /// Why it is diverged, if it is.
    pub diverged: Option<String>,
    /// [`Replica::divergence_marks`].
    pub marks: String,
}

/// Added to the marks when another backend had writes queued on this node as they were read.
const OTHERS_QUEUED: &str = "-others-queued";

/// The other backends of `all` that have writes queued here (or are being queued).
fn others_queued(r: &Replica, all: &[Arc<Replica>]) -> Vec<String> {
    all.iter()
        .filter(|o| o.name() != r.name() && (o.queue().has_pending() || o.is_queueing()))
        .map(|o| o.name().to_owned())
        .collect()
}

/// The backend's divergence and its marks (`all`: every backend, for their queues).
///
/// A verify compares what the backends hold. Writes still queued here for another backend are
/// on none yet: a verify that begins then would find this backend like the others although,
/// once that queue is delivered, it lacks what it lost. The marks say so, and the clear that
/// brings them back is refused.
pub fn divergence(r: &Replica, all: &[Arc<Replica>]) -> Divergence {
    let mut marks = r.divergence_marks();
    if !others_queued(r, all).is_empty() {
        marks.push_str(OTHERS_QUEUED);
    }
    Divergence {
        backend: r.name().to_owned(),
        diverged: r.diverged(),
        marks,
    }
}

/// `backend clear-diverged NAME`: a verify that began at `verified_from_ms` (Unix ms) found
/// the backend identical to the others; refused (409) if data was dropped for it since, or
/// if another backend had writes queued here when it began (with a time, when one has now).
pub fn clear_diverged(
    r: &Replica,
    all: &[Arc<Replica>],
    since: &VerifiedSince,
) -> Result<Done, OpError> {
    let queued_then = match since {
        VerifiedSince::Marks(marks) => marks.ends_with(OTHERS_QUEUED),
        VerifiedSince::Time(_) => !others_queued(r, all).is_empty(),
    };
    if queued_then && r.diverged().is_some() {
        return Err(OpError {
            status: 409,
            message: format!(
                "{} stays diverged: writes were queued here for other backends ({}) when the verify began, and it may lack them too; verify again once their queues are empty",
                r.name(),
                match others_queued(r, all) {
                    now if now.is_empty() => "delivered since".to_owned(),
                    now => now.join(", "),
                }
            ),
        });
    }
    let cleared = match since {
        // The backend's own marks, without what was said of the others' queues.
        VerifiedSince::Marks(marks) => {
            r.clear_diverged_since(marks.strip_suffix(OTHERS_QUEUED).unwrap_or(marks))
        }
        VerifiedSince::Time(ms) => r.clear_diverged(*ms),
    };
    let was = cleared.map_err(|message| OpError {
        status: 409,
        message,
    })?;
    let message = match was {
        Some(why) => format!("{} is no longer diverged (it was: {why})", r.name()),
        None => format!("{} was not diverged", r.name()),
    };
    Ok(done(r, message, None, true))
}
