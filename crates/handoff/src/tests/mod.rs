//! Tests. They live inside the crate (not in `tests/`) so the `cfg(test)` crash points in
//! `failpoint` are compiled in.
#![allow(clippy::unwrap_used)]

mod basic;
mod crash;
mod faults;
mod first_record;
mod model;
mod read_ahead;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::simfs::SimFs;
use crate::{BatchKind, Clock, FsyncPolicy, ManualClock, Options, Queue, Record};

/// Small segments so a handful of records rotate and delete segments.
pub(crate) fn small_opts() -> Options {
    Options {
        segment_bytes: 300,
        max_record_bytes: 280,
        max_bytes: 1 << 20,
        max_age: None,
        min_free_bytes: 0,
        fsync: FsyncPolicy::Always,
    }
}

pub(crate) fn qdir() -> PathBuf {
    PathBuf::from("/sim/q")
}

pub(crate) fn open_sim(fs: &SimFs, opts: Options) -> Queue {
    open_sim_clock(fs, opts, Arc::new(ManualClock::new(1_700_000_000_000)))
}

pub(crate) fn open_sim_clock(fs: &SimFs, opts: Options, clock: Arc<dyn Clock>) -> Queue {
    Queue::open_with(qdir(), opts, Arc::new(fs.clone()), clock).unwrap()
}

/// Payload for record `i`: one line naming it.
pub(crate) fn line(i: u64) -> Vec<u8> {
    format!("m,id={i} v=1i\n").into_bytes()
}

pub(crate) fn append_id(q: &Queue, db: &str, i: u64) -> Result<crate::RecordId, crate::Error> {
    let p = line(i);
    q.append(&Record::Write {
        db,
        rp: "autogen",
        precision: "ns",
        payload: &p,
    })
    .wait()
}

/// Ids named by the lines of a merged payload.
pub(crate) fn ids_of(kind: &BatchKind) -> Vec<u64> {
    match kind {
        BatchKind::Write { payload, .. } => std::str::from_utf8(payload)
            .unwrap()
            .lines()
            .map(|l| {
                l.trim_start_matches("m,id=")
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect(),
        BatchKind::Schema { .. } => Vec::new(),
    }
}

/// Reads and acknowledges everything; returns the ids in delivery order.
pub(crate) fn drain_ids(q: &Queue, limit: usize) -> Vec<u64> {
    let mut out = Vec::new();
    // Bounded by the queue content; the cap catches a reader that never ends.
    for _ in 0..100_000 {
        match q.next_batch(limit).unwrap() {
            Some(b) => {
                out.extend(ids_of(&b.kind));
                q.ack(&b).unwrap();
            }
            None => return out,
        }
    }
    panic!("reader did not terminate");
}

pub(crate) fn seg_files(fs: &SimFs, dir: &Path) -> Vec<PathBuf> {
    fs.paths()
        .into_iter()
        .filter(|p| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "hseg"))
        .collect()
}
