//! Process-kill crash tests: the test binary re-executes itself as a child with
//! `HANDOFF_FAILPOINT=<point>:<n>`; the child runs a workload on the real filesystem and
//! `abort()`s at the n-th pass through that point. The parent then reopens the queue and checks
//! the contract. (A killed process keeps the page cache, so these prove the step ordering, not
//! fsync; `faults.rs` covers lost unsynced writes with the simulated filesystem.)

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use super::*;

const DIR_VAR: &str = "HANDOFF_CRASH_DIR";
const RECORDS: u64 = 24;

fn opts() -> Options {
    Options {
        segment_bytes: 200,
        max_record_bytes: 180,
        ..small_opts()
    }
}

/// The child's workload: append, consume one record after every second append; log what was
/// acknowledged (`A id`) and what was delivered (`D ids`).
fn child(dir: &Path) {
    let q = Queue::open(dir.join("q"), opts()).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    for i in 0..RECORDS {
        append_id(&q, "a", i).unwrap();
        writeln!(log, "A {i}").unwrap();
        if i % 2 == 1
            && let Some(b) = q.next_batch(15).unwrap()
        {
            // Logged as delivered before the ack, as a sender would have sent it by then.
            let ids: Vec<String> = ids_of(&b.kind).iter().map(|i| i.to_string()).collect();
            writeln!(log, "D {}", ids.join(" ")).unwrap();
            q.ack(&b).unwrap();
        }
    }
    q.close().unwrap();
}

#[test]
fn killed_between_every_pair_of_steps() {
    if let Ok(dir) = std::env::var(DIR_VAR) {
        child(Path::new(&dir));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let points = [
        ("segment.after_create", 1),
        ("segment.after_create", 3),
        ("writer.after_write", 1),
        ("writer.after_write", 7),
        ("writer.after_fsync", 2),
        ("writer.after_fsync", 11),
        ("cursor.after_tmp_write", 2),
        ("cursor.before_rename", 3),
        ("cursor.after_rename", 4),
        ("gc.before_delete", 1),
        ("gc.before_delete", 2),
        ("gc.after_delete", 1),
    ];
    for (point, n) in points {
        let tmp = tempfile::tempdir().unwrap();
        let out = Command::new(&exe)
            .args([
                "--exact",
                "tests::crash::killed_between_every_pair_of_steps",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(DIR_VAR, tmp.path())
            .env("HANDOFF_FAILPOINT", format!("{point}:{n}"))
            .output()
            .unwrap();
        // The child must really have died at the point (SIGABRT), or the case proves nothing.
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{point}:{n} not reached: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::read_to_string(tmp.path().join("log")).unwrap_or_default();
        let mut acked = Vec::new();
        let mut consumed: Vec<Vec<u64>> = Vec::new();
        for l in log.lines() {
            let mut f = l.split(' ');
            match f.next() {
                Some("A") => acked.push(f.next().unwrap().parse::<u64>().unwrap()),
                Some("D") => consumed.push(f.map(|x| x.parse().unwrap()).collect()),
                _ => {}
            }
        }
        let q = Queue::open(tmp.path().join("q"), opts()).unwrap();
        let delivered = drain_ids(&q, 1 << 20);
        let ctx = format!("{point}:{n}");
        let done: BTreeSet<u64> = consumed.iter().flatten().copied().collect();
        let got: BTreeSet<u64> = delivered.iter().copied().collect();
        for id in &acked {
            assert!(
                got.contains(id) || done.contains(id),
                "{ctx}: acknowledged append {id} lost"
            );
        }
        assert!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "{ctx}: order: {delivered:?}"
        );
        assert!(
            delivered.iter().all(|i| *i < RECORDS),
            "{ctx}: unknown record"
        );
        let last: BTreeSet<u64> = consumed
            .last()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        // Only the last delivered batch (being acknowledged, or acknowledged last) may come again.
        for id in got.intersection(&done) {
            assert!(
                last.contains(id),
                "{ctx}: {id} from an older acknowledged batch redelivered"
            );
        }
        assert_eq!(q.stats().corrupt_regions, 0, "{ctx}");
        assert!(
            crate::verify(&crate::StdFs, &tmp.path().join("q"))
                .unwrap()
                .is_clean(),
            "{ctx}"
        );
    }
}
