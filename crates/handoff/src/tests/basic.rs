//! Behaviour on a healthy filesystem.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::{Error, Limits, Stats};

#[test]
fn append_read_ack_in_order_and_merge() {
    let fs = SimFs::new();
    let q = open_sim(
        &fs,
        Options {
            segment_bytes: 1 << 16,
            max_record_bytes: 1 << 15,
            ..small_opts()
        },
    );
    for i in 0..5 {
        append_id(&q, "a", i).unwrap();
    }
    q.append(&Record::Schema {
        db: "b",
        statement: "CREATE DATABASE b",
        params: "",
    })
    .wait()
    .unwrap();
    append_id(&q, "b", 5).unwrap();
    // No trailing newline: the merge must insert one.
    q.append(&Record::Write {
        db: "b",
        rp: "autogen",
        precision: "ns",
        payload: b"m,id=6 v=1i",
    })
    .wait()
    .unwrap();
    append_id(&q, "b", 7).unwrap();

    let b1 = q.next_batch(1 << 20).unwrap().unwrap();
    assert_eq!(ids_of(&b1.kind), vec![0, 1, 2, 3, 4]);
    assert_eq!(b1.records, 5);
    // Not acknowledged: delivered again.
    assert_eq!(q.next_batch(1 << 20).unwrap().unwrap(), b1);
    q.ack(&b1).unwrap();
    assert!(matches!(q.ack(&b1), Err(Error::StaleBatch)));
    let b2 = q.next_batch(1 << 20).unwrap().unwrap();
    assert_eq!(
        b2.kind,
        BatchKind::Schema {
            db: "b".into(),
            statement: "CREATE DATABASE b".into(),
            params: String::new(),
        }
    );
    q.ack(&b2).unwrap();
    let b3 = q.next_batch(1 << 20).unwrap().unwrap();
    match &b3.kind {
        BatchKind::Write {
            db,
            rp,
            precision,
            payload,
        } => {
            assert_eq!(
                (db.as_str(), rp.as_str(), precision.as_str()),
                ("b", "autogen", "ns")
            );
            assert_eq!(payload, b"m,id=5 v=1i\nm,id=6 v=1i\nm,id=7 v=1i\n");
        }
        other => panic!("unexpected {other:?}"),
    }
    q.ack(&b3).unwrap();
    assert!(q.next_batch(1 << 20).unwrap().is_none());
    let s = q.stats();
    assert_eq!(
        (
            s.depth_records,
            s.depth_bytes,
            s.acked_records,
            s.appended_records
        ),
        (0, 0, 9, 9)
    );
}

#[test]
fn batch_byte_limit_and_key_changes_split_batches() {
    let fs = SimFs::new();
    let q = open_sim(
        &fs,
        Options {
            segment_bytes: 1 << 16,
            max_record_bytes: 1 << 15,
            ..small_opts()
        },
    );
    for i in 0..6 {
        append_id(&q, "a", i).unwrap();
    }
    q.append(&Record::Write {
        db: "a",
        rp: "other",
        precision: "ns",
        payload: &line(6),
    })
    .wait()
    .unwrap();
    q.append(&Record::Write {
        db: "a",
        rp: "other",
        precision: "s",
        payload: &line(7),
    })
    .wait()
    .unwrap();
    let each = line(0).len();
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    while let Some(b) = q.next_batch(each * 4).unwrap() {
        sizes.push(b.records);
        ids.extend(ids_of(&b.kind));
        if let BatchKind::Write { payload, .. } = &b.kind {
            assert!(payload.len() <= each * 4);
        }
        q.ack(&b).unwrap();
    }
    // 4 fit, then the remaining 2 of the same key, then the rp change, then the precision change.
    assert_eq!(sizes, vec![4, 2, 1, 1]);
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    // A single record larger than the limit is delivered alone.
    append_id(&q, "a", 8).unwrap();
    let b = q.next_batch(1).unwrap().unwrap();
    assert_eq!(ids_of(&b.kind), vec![8]);
}

#[test]
fn segments_rotate_and_consumed_ones_are_deleted_after_cursor() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    for i in 0..40 {
        append_id(&q, "a", i).unwrap();
    }
    let segs = seg_files(&fs, &qdir()).len();
    assert!(segs > 5, "expected rotation, got {segs} segments");
    assert_eq!(q.stats().segments as usize, segs);
    assert_eq!(drain_ids(&q, 100), (0..40).collect::<Vec<_>>());
    // Only the segment being written remains.
    assert_eq!(seg_files(&fs, &qdir()).len(), 1);
    let s = q.stats();
    assert_eq!((s.depth_records, s.depth_bytes, s.segments), (0, 0, 1));
}

#[test]
fn reopen_recomputes_depth_and_resumes_at_cursor() {
    let fs = SimFs::new();
    {
        let q = open_sim(&fs, small_opts());
        for i in 0..30 {
            append_id(&q, "a", i).unwrap();
        }
        let b = q.next_batch(60).unwrap().unwrap();
        q.ack(&b).unwrap();
        let done = ids_of(&b.kind).len() as u64;
        assert_eq!(q.stats().depth_records, 30 - done);
        q.close().unwrap();
    }
    let q = open_sim(&fs, small_opts());
    let s = q.stats();
    let rest = drain_ids(&q, 1 << 20);
    assert_eq!(s.depth_records as usize, rest.len());
    assert_eq!(rest.last(), Some(&29));
    assert_eq!(rest.windows(2).filter(|w| w[1] != w[0] + 1).count(), 0);
    assert!(rest[0] > 0);
    // Appends after reopen go to a new segment and are read after the old ones.
    append_id(&q, "a", 30).unwrap();
    assert_eq!(drain_ids(&q, 1 << 20), vec![30]);
}

#[test]
fn max_bytes_refuses_with_typed_error_and_counts() {
    let fs = SimFs::new();
    let q = open_sim(
        &fs,
        Options {
            max_bytes: 200,
            ..small_opts()
        },
    );
    let mut ok = 0;
    let mut full = 0;
    for i in 0..10 {
        match append_id(&q, "a", i) {
            Ok(_) => ok += 1,
            Err(Error::Full { max, .. }) => {
                assert_eq!(max, 200);
                full += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(ok > 0 && full > 0);
    let s = q.stats();
    assert!(s.depth_bytes <= 200);
    assert_eq!(s.refused_full, full);
    assert!(s.dropped);
    assert!(q.take_dropped());
    assert!(!q.take_dropped());
    // Consuming makes room again.
    drain_ids(&q, 1 << 20);
    append_id(&q, "a", 99).unwrap();
}

#[test]
fn limits_change_on_a_running_queue() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    assert_eq!(q.limits(), Limits::of(&small_opts()));
    append_id(&q, "a", 0).unwrap();
    // A smaller max_bytes keeps what is queued and refuses what would go past it.
    let pending = q.stats().depth_bytes;
    q.set_limits(Limits {
        max_bytes: pending,
        ..q.limits()
    });
    match append_id(&q, "a", 1) {
        Err(Error::Full { max, .. }) => assert_eq!(max, pending),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(q.stats().depth_bytes, pending);
    // A larger one takes appends again.
    q.set_limits(Limits {
        max_bytes: 1 << 20,
        ..q.limits()
    });
    append_id(&q, "a", 2).unwrap();
    assert_eq!(drain_ids(&q, 1 << 20).len(), 2);
}

#[test]
fn disk_floor_refuses_before_the_disk_is_full() {
    let fs = SimFs::new();
    fs.set_faults(crate::simfs::Faults {
        available_override: Some(10_000),
        ..Default::default()
    });
    let q = open_sim(
        &fs,
        Options {
            min_free_bytes: 9_990,
            ..small_opts()
        },
    );
    assert!(matches!(
        append_id(&q, "a", 1),
        Err(Error::DiskFloor {
            available: 10_000,
            floor: 9_990
        })
    ));
    let s = q.stats();
    assert_eq!((s.refused_disk_floor, s.dropped), (1, true));
    fs.set_faults(crate::simfs::Faults {
        available_override: Some(1 << 30),
        ..Default::default()
    });
    append_id(&q, "a", 2).unwrap();
}

#[test]
fn oversized_and_overlong_records_are_refused_at_ingress() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    let big = vec![b'x'; 1000];
    let r = q
        .append(&Record::Write {
            db: "a",
            rp: "",
            precision: "",
            payload: &big,
        })
        .wait();
    assert!(matches!(r, Err(Error::RecordTooLarge { .. })));
    let long = "p".repeat(300);
    let r = q
        .append(&Record::Write {
            db: "a",
            rp: "",
            precision: &long,
            payload: b"x\n",
        })
        .wait();
    assert!(matches!(
        r,
        Err(Error::FieldTooLong {
            field: "precision",
            ..
        })
    ));
    assert_eq!(q.stats().appended_records, 0);
}

#[test]
fn max_age_purges_and_counts_expired_records() {
    let fs = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = Options {
        max_age: Some(Duration::from_secs(60)),
        ..small_opts()
    };
    let q = open_sim_clock(&fs, opts.clone(), clock.clone());
    for i in 0..20 {
        append_id(&q, "a", i).unwrap();
    }
    clock.advance(Duration::from_secs(30));
    for i in 20..25 {
        append_id(&q, "a", i).unwrap();
    }
    let age = q.stats().oldest_age.unwrap();
    assert_eq!(age, Duration::from_secs(30));
    clock.advance(Duration::from_secs(45));
    // The first 20 are 75 s old now, the last 5 are 45 s old.
    assert_eq!(q.purge_expired().unwrap(), 20);
    let s = q.stats();
    assert_eq!(
        (s.expired_records, s.depth_records, s.dropped),
        (20, 5, true)
    );
    assert_eq!(s.oldest_age, Some(Duration::from_secs(45)));
    clock.advance(Duration::from_secs(20));
    // The reader drops the rest as it meets them.
    assert!(q.next_batch(1 << 20).unwrap().is_none());
    assert_eq!(q.stats().expired_records, 25);
    assert_eq!(q.stats().depth_records, 0);
}

#[test]
fn drain_and_purge_operator_functions() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    append_id(&q, "a", 1).unwrap();
    q.append(&Record::Schema {
        db: "a",
        statement: "CREATE RETENTION POLICY x\nON a",
        params: "",
    })
    .wait()
    .unwrap();
    q.append(&Record::Write {
        db: "a",
        rp: "r",
        precision: "s",
        payload: b"m v=2",
    })
    .wait()
    .unwrap();
    let mut out = Vec::new();
    let rep = q.drain_to(&mut out).unwrap();
    assert_eq!((rep.writes, rep.statements, rep.skipped), (2, 1, 0));
    let text = String::from_utf8(out).unwrap();
    let ts = 1_700_000_000_000u64;
    assert_eq!(
        text,
        format!(
            "# handoff write db=a rp=autogen precision=ns ts_ms={ts}\nm,id=1 v=1i\n\
             # handoff schema db=a ts_ms={ts}: CREATE RETENTION POLICY x ON a\n\
             # handoff write db=a rp=r precision=s ts_ms={ts}\nm v=2\n"
        )
    );
    // Drain consumed nothing.
    assert_eq!(q.stats().depth_records, 3);
    assert_eq!(q.purge().unwrap(), 3);
    let s = q.stats();
    assert_eq!((s.depth_records, s.purged_records, s.dropped), (0, 3, true));
    assert!(q.next_batch(100).unwrap().is_none());
    drop(q);
    let q = open_sim(&fs, small_opts());
    assert_eq!(q.stats().depth_records, 0, "purge is persistent");
}

#[test]
fn inspect_and_verify_report_without_modifying() {
    let fs = SimFs::new();
    {
        let q = open_sim(&fs, small_opts());
        for i in 0..12 {
            append_id(&q, "a", i).unwrap();
        }
        let b = q.next_batch(1).unwrap().unwrap();
        q.ack(&b).unwrap();
        q.close().unwrap();
    }
    let before = fs.paths();
    let ins = crate::inspect(&fs, &qdir()).unwrap();
    assert_eq!(ins.depth_records, 11);
    assert!(ins.cursor.is_some());
    assert_eq!(ins.oldest_ts_ms, Some(1_700_000_000_000));
    assert_eq!(ins.segments.iter().map(|s| s.records).sum::<u64>(), 12);
    let rep = crate::verify(&fs, &qdir()).unwrap();
    assert!(rep.is_clean() && rep.cursor_ok);
    assert_eq!(
        rep.segments.iter().map(|s| s.valid_records).sum::<u64>(),
        12
    );
    assert_eq!(fs.paths(), before);
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_appenders() {
    let fs = SimFs::new();
    let q = Arc::new(open_sim(
        &fs,
        Options {
            segment_bytes: 1 << 20,
            max_record_bytes: 1 << 16,
            ..small_opts()
        },
    ));
    fs.hold_fsyncs(true);
    let submitted = Arc::new(std::sync::Barrier::new(33));
    let handles: Vec<_> = (0..32u64)
        .map(|i| {
            let (q, b) = (q.clone(), submitted.clone());
            std::thread::spawn(move || {
                let p = line(i);
                let fut = q.append(&Record::Write {
                    db: "a",
                    rp: "",
                    precision: "",
                    payload: &p,
                });
                b.wait();
                fut.wait()
            })
        })
        .collect();
    submitted.wait(); // every append is submitted; the writer is stuck in (at most) one fsync
    fs.hold_fsyncs(false);
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let s: Stats = q.stats();
    assert_eq!(s.appended_records, 32);
    assert!(
        s.append_groups <= 2,
        "{} groups for 32 appends",
        s.append_groups
    );
    // One header fsync for the new segment plus one per group.
    assert!(s.fsyncs <= 3, "{} fsyncs", s.fsyncs);
    let mut ids = drain_ids(&q, 1 << 20);
    ids.sort_unstable();
    assert_eq!(ids, (0..32).collect::<Vec<_>>());
}

#[test]
fn async_appends_and_wakeups() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let fs = SimFs::new();
    let q = Arc::new(open_sim(
        &fs,
        Options {
            segment_bytes: 1 << 20,
            max_record_bytes: 1 << 16,
            ..small_opts()
        },
    ));
    rt.block_on(async {
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.wait_for_data().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                let p = line(i);
                q.append(&Record::Write {
                    db: "a",
                    rp: "",
                    precision: "",
                    payload: &p,
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        waiter.await.unwrap();
    });
    assert!(q.has_pending());
    assert!(q.wait_for_data_timeout(Duration::ZERO));
    let mut ids = drain_ids(&q, 1 << 20);
    ids.sort_unstable();
    assert_eq!(ids, (0..64).collect::<Vec<_>>());
    assert!(!q.wait_for_data_timeout(Duration::from_millis(1)));
}

#[test]
fn blocking_waiter_is_woken_by_append() {
    let fs = SimFs::new();
    let q = Arc::new(open_sim(&fs, small_opts()));
    let q2 = q.clone();
    let t = std::thread::spawn(move || q2.wait_for_data_timeout(Duration::from_secs(600)));
    append_id(&q, "a", 1).unwrap();
    assert!(t.join().unwrap());
}

#[test]
fn close_refuses_appends_and_wakes_waiters() {
    let fs = SimFs::new();
    let q = Arc::new(open_sim(&fs, small_opts()));
    let q2 = q.clone();
    let t = std::thread::spawn(move || q2.wait_for_data_timeout(Duration::from_secs(600)));
    q.close().unwrap();
    assert!(!t.join().unwrap());
    assert!(matches!(append_id(&q, "a", 1), Err(Error::Closed)));
    q.close().unwrap();
}

#[test]
fn interval_and_never_policies_complete_and_persist_on_close() {
    for policy in [
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Never,
    ] {
        let fs = SimFs::new();
        {
            let q = open_sim(
                &fs,
                Options {
                    fsync: policy,
                    ..small_opts()
                },
            );
            for i in 0..10 {
                append_id(&q, "a", i).unwrap();
            }
            q.close().unwrap();
        }
        // A clean close keeps everything (page cache) for both.
        let q = open_sim(&fs, small_opts());
        assert_eq!(
            drain_ids(&q, 1 << 20),
            (0..10).collect::<Vec<_>>(),
            "{policy:?}"
        );
    }
    // With `interval`, a crash right after close loses nothing either (close syncs)...
    let fs = SimFs::new();
    {
        let q = open_sim(
            &fs,
            Options {
                fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
                ..small_opts()
            },
        );
        for i in 0..10 {
            append_id(&q, "a", i).unwrap();
        }
        q.close().unwrap();
    }
    let q = open_sim(&fs.crash(), small_opts());
    assert_eq!(drain_ids(&q, 1 << 20), (0..10).collect::<Vec<_>>());
    // ...while `never` may lose unsynced appends at a crash (documented).
    let fs = SimFs::new();
    {
        let q = open_sim(
            &fs,
            Options {
                fsync: FsyncPolicy::Never,
                ..small_opts()
            },
        );
        for i in 0..10 {
            append_id(&q, "a", i).unwrap();
        }
        q.close().unwrap();
    }
    let q = open_sim(&fs.crash(), small_opts());
    assert!(drain_ids(&q, 1 << 20).is_empty());
}

#[test]
fn invalid_options_are_rejected() {
    let fs = SimFs::new();
    let bad = [
        Options {
            segment_bytes: 10,
            ..small_opts()
        },
        Options {
            max_record_bytes: 10_000,
            ..small_opts()
        },
        Options {
            fsync: FsyncPolicy::Interval(Duration::ZERO),
            ..small_opts()
        },
    ];
    for o in bad {
        let r = Queue::open_with(
            qdir(),
            o,
            Arc::new(fs.clone()),
            Arc::new(crate::SystemClock),
        );
        assert!(matches!(r, Err(Error::InvalidOptions(_))));
    }
}

#[test]
fn real_filesystem_roundtrip() {
    let root = tempfile::tempdir().unwrap();
    // Folders that do not exist yet are made (their durability no test here can see).
    let dir = root.path().join("node/backend/queue");
    let opts = Options {
        min_free_bytes: 1,
        ..small_opts()
    };
    {
        let q = Queue::open(&dir, opts.clone()).unwrap();
        for i in 0..20 {
            append_id(&q, "a", i).unwrap();
        }
        let b = q.next_batch(1).unwrap().unwrap();
        q.ack(&b).unwrap();
        q.close().unwrap();
    }
    let q = Queue::open(&dir, opts).unwrap();
    assert_eq!(drain_ids(&q, 1 << 20), (1..20).collect::<Vec<_>>());
    assert!(crate::verify(&crate::StdFs, &dir).unwrap().is_clean());
}

#[test]
fn interval_policy_syncs_without_further_appends() {
    let fs = SimFs::new();
    let q = open_sim(
        &fs,
        Options {
            fsync: FsyncPolicy::Interval(Duration::from_millis(1)),
            ..small_opts()
        },
    );
    append_id(&q, "a", 1).unwrap();
    // One fsync for the new segment's header, then the writer's timer-driven one. Wait
    // (bounded) for it; no duration is asserted.
    let mut synced = false;
    for _ in 0..10_000 {
        if q.stats().fsyncs >= 2 {
            synced = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(synced, "the interval fsync never happened");
    // Durable now, without close: survives a crash.
    let q2 = open_sim(&fs.crash(), small_opts());
    assert_eq!(drain_ids(&q2, 1 << 20), vec![1]);
}

#[test]
fn zero_copy_append_matches_copying_append() {
    let fs = SimFs::new();
    let q = open_sim(
        &fs,
        Options {
            segment_bytes: 1 << 20,
            max_record_bytes: 1 << 19,
            ..small_opts()
        },
    );
    let big = crate::Bytes::from(vec![b'y'; 300_000]); // above the staging size: written directly
    q.append_write("a", "r", "s", crate::Bytes::from_static(b"m,id=1 v=1i\n"))
        .wait()
        .unwrap();
    q.append(&Record::Write {
        db: "a",
        rp: "r",
        precision: "s",
        payload: b"m,id=2 v=1i\n",
    })
    .wait()
    .unwrap();
    q.append_write("a", "r", "s", big.clone()).wait().unwrap();
    assert!(matches!(
        q.append_write("a", "r", "s", crate::Bytes::from(vec![0u8; 1 << 20]))
            .wait(),
        Err(Error::RecordTooLarge { .. })
    ));
    let b = q.next_batch(1 << 10).unwrap().unwrap();
    assert_eq!(ids_of(&b.kind), vec![1, 2]);
    q.ack(&b).unwrap();
    let b = q.next_batch(1 << 10).unwrap().unwrap();
    match &b.kind {
        BatchKind::Write { payload, .. } => assert_eq!(&payload[..300_000], &big[..]),
        other => panic!("{other:?}"),
    }
    drop(q);
    assert!(crate::verify(&fs, &qdir()).unwrap().is_clean());
}

#[test]
fn a_queue_directory_is_open_in_one_queue_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), small_opts()).unwrap();
    // Another open of the same directory (as another process would make) is refused.
    let second = Queue::open(dir.path(), small_opts());
    assert!(
        matches!(second, Err(crate::Error::Locked(ref d)) if d == dir.path()),
        "{second:?}"
    );
    q.close().unwrap();
    // Closed, the directory is free; dropped without a close (a crash), too.
    let q = Queue::open(dir.path(), small_opts()).unwrap();
    drop(q);
    Queue::open(dir.path(), small_opts())
        .unwrap()
        .close()
        .unwrap();

    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    let second = Queue::open_with(
        qdir(),
        small_opts(),
        Arc::new(fs.clone()),
        Arc::new(ManualClock::new(0)),
    );
    assert!(matches!(second, Err(crate::Error::Locked(_))), "{second:?}");
    // A crash releases it.
    let after_crash = fs.crash();
    open_sim(&after_crash, small_opts()).close().unwrap();
    q.close().unwrap();
    open_sim(&fs, small_opts()).close().unwrap();
}

#[test]
fn fills_count_the_times_the_queue_started_holding_records() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    assert_eq!(q.fills(), 0);
    append_id(&q, "a", 0).unwrap();
    append_id(&q, "a", 1).unwrap();
    assert_eq!(q.fills(), 1, "the second append found records pending");
    let b = q.next_batch(1 << 20).unwrap().unwrap();
    q.ack(&b).unwrap();
    assert!(!q.has_pending());
    append_id(&q, "a", 2).unwrap();
    // Drained and filled again: pending before and after, but not the same records.
    assert!(q.has_pending());
    assert_eq!(q.fills(), 2);
    assert_eq!(q.stats().fills, 2);
}

#[test]
fn a_drop_not_yet_recorded_is_told_again_after_a_restart() {
    let fs = SimFs::new();
    {
        let q = open_sim(&fs, small_opts());
        for i in 0..3 {
            append_id(&q, "a", i).unwrap();
        }
        assert_eq!(q.purge().unwrap(), 3);
        // The process dies before the caller recorded the drop.
    }
    {
        let q = open_sim(&fs, small_opts());
        assert!(q.take_dropped(), "the drop is told again");
        // Recorded now: the next start has nothing to tell.
        q.dropped_recorded();
        q.close().unwrap();
    }
    let q = open_sim(&fs, small_opts());
    assert!(!q.take_dropped());
    // A drop that comes after the take is kept until it is taken and recorded in turn.
    append_id(&q, "a", 3).unwrap();
    assert_eq!(q.purge().unwrap(), 1);
    q.dropped_recorded();
    drop(q);
    let q = open_sim(&fs, small_opts());
    assert!(q.take_dropped());
}

#[test]
fn segments_made_after_their_files_were_deleted_are_numbered_past_the_cursor() {
    use crate::fs::Filesystem as _;
    let fs = SimFs::new();
    {
        let q = open_sim(&fs, small_opts());
        for i in 0..40 {
            append_id(&q, "a", i).unwrap();
        }
        assert_eq!(drain_ids(&q, 100).len(), 40);
        q.close().unwrap();
    }
    // An operator throws the queue's segments away (`rm *.hseg`); the cursor stays.
    for p in seg_files(&fs, &qdir()) {
        fs.remove_file(&p).unwrap();
    }
    let crashed = {
        let q = open_sim(&fs, small_opts());
        for i in 100..103 {
            append_id(&q, "a", i).unwrap();
        }
        // Killed before anything was acknowledged: nothing of the queue runs any more.
        let crashed = fs.crash();
        std::mem::forget(q);
        crashed
    };
    let q = open_sim(&crashed, small_opts());
    assert_eq!(drain_ids(&q, 100), vec![100, 101, 102]);
    assert!(!q.stats().dropped);
}

#[test]
fn under_interval_a_crash_after_an_acknowledgement_leaves_a_readable_cursor() {
    let fs = SimFs::new();
    {
        // Written durably, then taken by a queue syncing on an interval.
        let q = open_sim(&fs, small_opts());
        for i in 0..10 {
            append_id(&q, "a", i).unwrap();
        }
        q.close().unwrap();
    }
    let opts = Options {
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        ..small_opts()
    };
    let crashed = {
        let q = open_sim(&fs, opts.clone());
        let b = q.next_batch(3).unwrap().unwrap();
        q.ack(&b).unwrap();
        // Later work syncs the folder (a new segment), and so the cursor's new name.
        for i in 10..30 {
            append_id(&q, "a", i).unwrap();
        }
        let crashed = fs.crash();
        std::mem::forget(q);
        crashed
    };
    let q = open_sim(&crashed, opts);
    // The cursor is the old one or the new one, never a torn one that replays everything and
    // reports a drop.
    assert!(!q.stats().dropped);
    let rest = drain_ids(&q, 1 << 20);
    assert!(rest.first().is_some_and(|&first| first <= 3), "{rest:?}");
}

#[test]
fn a_closed_queue_neither_saves_a_cursor_nor_deletes_a_segment() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    for i in 0..40 {
        append_id(&q, "a", i).unwrap();
    }
    let b = q.next_batch(1 << 20).unwrap().unwrap();
    let segments = seg_files(&fs, &qdir()).len();
    q.close().unwrap();
    let cursor = fs.read(&qdir().join("cursor"));
    // A late acknowledgement (a replay task not yet stopped), an expiry or a purge: the folder
    // may belong to another process by now.
    assert!(matches!(q.ack(&b), Err(crate::Error::Closed)));
    assert!(matches!(
        q.purge_expired(),
        Ok(0) | Err(crate::Error::Closed)
    ));
    assert!(matches!(q.purge(), Err(crate::Error::Closed)));
    assert_eq!(fs.read(&qdir().join("cursor")), cursor);
    assert_eq!(seg_files(&fs, &qdir()).len(), segments);
    let q = open_sim(&fs, small_opts());
    assert_eq!(drain_ids(&q, 1 << 20), (0..40).collect::<Vec<_>>());
}
