//! Throughput benchmark for the handoff queue, with a plain sequential-write baseline measured
//! in the same run on the same directory.
//!
//! ```text
//! cargo run --release -p handoff --example handoff_bench -- [DIR] [MIB]
//! ```
//!
//! DIR defaults to `target/handoff-bench`, MIB (data per throughput phase) to 512. Phases:
//!
//! 1. baseline: `write(2)` of 1.35 MB buffers into one file ("dd"), page cache only, then the
//!    same with a final fsync included in the time;
//! 2. append with `fsync = never` (4 appending threads, zero-copy `append_write`), page cache
//!    only, then with a final fsync of the segment files included; once more with the copying
//!    `append(&Record)`;
//! 3. `fsync = always` and `interval(50ms)`, 32 concurrent async appenders (tokio tasks) of
//!    1.35 MB records;
//! 4. replay from the page cache: reopen, then `next_batch(4 MiB)` + `ack` until empty (cursor
//!    written without fsync), and again with `fsync = always` (cursor fsynced on every ack);
//! 5. 1 KiB records with `never` (4 threads) and `always` (32 async appenders).
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handoff::{BatchKind, Bytes, FsyncPolicy, Options, Queue, Record};

const RECORD: usize = 1_350_000;

fn opts(fsync: FsyncPolicy) -> Options {
    Options {
        max_bytes: 64 << 30,
        min_free_bytes: 1 << 30,
        max_age: None,
        fsync,
        ..Options::default()
    }
}

/// A line-protocol-looking payload of `RECORD` bytes.
fn payload() -> Vec<u8> {
    let mut p = Vec::with_capacity(RECORD);
    let mut i = 0u64;
    while p.len() + 80 < RECORD {
        writeln!(
            p,
            "cpu,host=server{:03},region=eu usage_user={}.5,usage_system=3i {}",
            i % 997,
            i % 100,
            1_700_000_000_000_000_000u64 + i
        )
        .unwrap();
        i += 1;
    }
    p.resize(RECORD - 1, b' ');
    p.push(b'\n');
    p
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn sync_dir_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            File::open(&p).unwrap().sync_all().unwrap();
        }
    }
}

fn baseline(dir: &Path, total: u64, buf: &[u8], fsync: bool) -> f64 {
    let path = dir.join(format!("baseline-{fsync}"));
    let t = Instant::now();
    let mut f = File::create(&path).unwrap();
    let mut n = 0;
    while n < total {
        f.write_all(buf).unwrap();
        n += buf.len() as u64;
    }
    if fsync {
        f.sync_all().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    f.sync_all().unwrap();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    mbps(n, secs)
}

/// Appends `total` bytes of records from `threads` threads with `fsync = never`.
fn append_never(
    dir: &Path,
    total: u64,
    buf: &Arc<Vec<u8>>,
    fsync_at_end: bool,
    keep: bool,
    zero_copy: bool,
) -> (f64, u64) {
    let _ = std::fs::remove_dir_all(dir);
    let q = Arc::new(Queue::open(dir, opts(FsyncPolicy::Never)).unwrap());
    let per_thread = total / buf.len() as u64 / 4;
    let shared = Bytes::from(buf.as_ref().clone());
    let t = Instant::now();
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (q, buf, shared) = (q.clone(), buf.clone(), shared.clone());
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let a = if zero_copy {
                        q.append_write("bench", "autogen", "n", shared.clone())
                    } else {
                        q.append(&Record::Write {
                            db: "bench",
                            rp: "autogen",
                            precision: "n",
                            payload: &buf,
                        })
                    };
                    a.wait().unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    if fsync_at_end {
        sync_dir_files(dir);
    }
    let secs = t.elapsed().as_secs_f64();
    let bytes = q.stats().appended_bytes;
    q.close().unwrap();
    sync_dir_files(dir);
    if !keep {
        std::fs::remove_dir_all(dir).unwrap();
    }
    (mbps(bytes, secs), bytes)
}

/// `tasks` async appenders (tokio, 2 worker threads) each appending `per_task` records.
fn concurrent(dir: &Path, policy: FsyncPolicy, rec: &[u8], tasks: usize, per_task: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let q = Arc::new(Queue::open(dir, opts(policy)).unwrap());
    let rec = Bytes::from(rec.to_vec());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let t = Instant::now();
    rt.block_on(async {
        let mut hs = Vec::new();
        for _ in 0..tasks {
            let (q, rec) = (q.clone(), rec.clone());
            hs.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    q.append_write("bench", "autogen", "n", rec.clone())
                        .await
                        .unwrap();
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
    });
    let secs = t.elapsed().as_secs_f64();
    let s = q.stats();
    println!(
        "{policy:?}, {tasks} async appenders x {per_task} x {} B: {:.0} appends/s, {:.0} MB/s, {:.1} fsyncs/s, {:.1} appends per group ({} appends, {} groups, {} fsyncs incl. segment creation, {secs:.2} s)",
        rec.len(),
        s.appended_records as f64 / secs,
        mbps(s.appended_bytes, secs),
        s.fsyncs as f64 / secs,
        s.appended_records as f64 / s.append_groups as f64,
        s.appended_records,
        s.append_groups,
        s.fsyncs,
    );
    q.close().unwrap();
    drop(q);
    std::fs::remove_dir_all(dir).unwrap();
}

/// 1 KiB records: `never` from 4 threads, then `always` from 32 async appenders.
fn small_records(dir: &Path, rec: &[u8]) {
    let _ = std::fs::remove_dir_all(dir);
    let q = Arc::new(Queue::open(dir, opts(FsyncPolicy::Never)).unwrap());
    let n = 50_000u64;
    let t = Instant::now();
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (q, rec) = (q.clone(), rec.to_vec());
            std::thread::spawn(move || {
                for _ in 0..n {
                    let r = Record::Write {
                        db: "bench",
                        rp: "autogen",
                        precision: "n",
                        payload: &rec,
                    };
                    q.append(&r).wait().unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let s = q.stats();
    println!(
        "1 KiB records, Never, 4 threads: {:.0} appends/s ({:.1} appends per group)",
        s.appended_records as f64 / secs,
        s.appended_records as f64 / s.append_groups as f64
    );
    q.close().unwrap();
    drop(q);
    std::fs::remove_dir_all(dir).unwrap();
    concurrent(dir, FsyncPolicy::Always, rec, 32, 200);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base: PathBuf = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/handoff-bench"));
    let mib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let total = mib << 20;
    std::fs::create_dir_all(&base).unwrap();
    let buf = Arc::new(payload());
    println!(
        "dir {} | {} MiB per phase | record {} bytes",
        base.display(),
        mib,
        RECORD
    );

    // 1 + 2, interleaved over several rounds so both see similar disk and page-cache
    // conditions; the medians of the per-round ratios are reported.
    let qdir = base.join("q-never");
    let (mut pc, mut fs) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let b_pc = baseline(&base, total, &buf, false);
        let (q_pc, _) = append_never(&qdir, total, &buf, false, false, true);
        let b_fs = baseline(&base, total, &buf, true);
        let (q_fs, _) = append_never(&qdir, total, &buf, true, false, true);
        println!(
            "round {round}: page cache: dd {b_pc:.0} MB/s, queue(never) {q_pc:.0} MB/s ({:.0}%) | incl. final fsync: dd {b_fs:.0} MB/s, queue(never) {q_fs:.0} MB/s ({:.0}%)",
            100.0 * q_pc / b_pc,
            100.0 * q_fs / b_fs
        );
        pc.push(q_pc / b_pc);
        fs.push(q_fs / b_fs);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "median of per-round ratios: page cache {:.0}% of dd, incl. final fsync {:.0}% of dd",
        100.0 * median(&mut pc),
        100.0 * median(&mut fs)
    );

    // 2b: the copying `append(&Record)` path, once, for comparison with the rounds above.
    let b_pc = baseline(&base, total, &buf, false);
    let (q_pc, _) = append_never(&qdir, total, &buf, false, false, false);
    println!(
        "copying append(&Record), page cache: dd {b_pc:.0} MB/s, queue(never) {q_pc:.0} MB/s ({:.0}%)",
        100.0 * q_pc / b_pc
    );

    // 3: 32 concurrent async appenders of 1.35 MB records.
    concurrent(&base.join("q-conc"), FsyncPolicy::Always, &buf, 32, 8);
    concurrent(
        &base.join("q-conc"),
        FsyncPolicy::Interval(Duration::from_millis(50)),
        &buf,
        32,
        8,
    );

    // 4: replay from the page cache.
    let (_, written) = append_never(&qdir, total, &buf, false, true, true);
    let t = Instant::now();
    let q = Queue::open(&qdir, opts(FsyncPolicy::Never)).unwrap();
    let open_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut payload_bytes = 0u64;
    let mut batches = 0u64;
    let mut ack_secs = 0.0;
    while let Some(b) = q.next_batch(4 << 20).unwrap() {
        if let BatchKind::Write { payload, .. } = &b.kind {
            payload_bytes += payload.len() as u64;
        }
        let ta = Instant::now();
        q.ack(&b).unwrap();
        ack_secs += ta.elapsed().as_secs_f64();
        batches += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "replay: open (recovery scan of {} MB) {:.3} s; read+ack {:.0} MB/s payload ({batches} batches, {:.2} s, of which ack incl. segment deletion {:.2} s)",
        written / 1_000_000,
        open_secs,
        mbps(payload_bytes, secs),
        secs,
        ack_secs
    );
    q.close().unwrap();
    drop(q);
    std::fs::remove_dir_all(&qdir).unwrap();

    // 4b: replay with fsync = always: every ack fsyncs the cursor (file + directory).
    let (_, written) = append_never(&qdir, total / 4, &buf, false, true, true);
    let q = Queue::open(&qdir, opts(FsyncPolicy::Always)).unwrap();
    let t = Instant::now();
    let mut payload_bytes = 0u64;
    let mut batches = 0u64;
    while let Some(b) = q.next_batch(4 << 20).unwrap() {
        if let BatchKind::Write { payload, .. } = &b.kind {
            payload_bytes += payload.len() as u64;
        }
        q.ack(&b).unwrap();
        batches += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "replay with fsync=always (cursor fsynced per ack), {} MB: {:.0} MB/s payload ({batches} batches, {:.1} acks/s)",
        written / 1_000_000,
        mbps(payload_bytes, secs),
        batches as f64 / secs
    );
    q.close().unwrap();
    drop(q);
    std::fs::remove_dir_all(&qdir).unwrap();

    // 5: small records (1 KiB): per-record overhead.
    small_records(&base.join("q-small"), &buf[..1024]);
}
