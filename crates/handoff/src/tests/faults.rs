//! Fault injection on the simulated filesystem: crashes at every operation, short writes,
//! fsync failure, ENOSPC, and on-disk corruption.

use std::collections::BTreeSet;

use super::*;
use crate::Error;
use crate::simfs::Faults;

/// What the workload observed before the crash.
#[derive(Debug, Default)]
struct Observed {
    /// Ids whose append returned Ok (acknowledged to the client).
    acked: Vec<u64>,
    /// Batches handed to the "backend" (before `ack`), with whether `ack` then returned Ok.
    delivered: Vec<(Vec<u64>, bool)>,
}

/// Appends 24 records, consuming one record after every third append (a backlog builds up).
fn workload(q: &Queue) -> Observed {
    let mut o = Observed::default();
    for i in 0..24u64 {
        if append_id(q, "a", i).is_ok() {
            o.acked.push(i);
        }
        if i % 3 == 2
            && let Ok(Some(b)) = q.next_batch(15)
        {
            let ok = q.ack(&b).is_ok();
            o.delivered.push((ids_of(&b.kind), ok));
        }
    }
    o
}

/// The crash-safety contract after a restart: every acknowledged append is delivered (now or
/// before the crash), order is kept, nothing unknown appears, and what is delivered again is
/// at most the last batch whose ack succeeded, plus batches whose ack failed after it (an ack
/// that returns an error has not made its cursor durable).
fn check_after_crash(o: &Observed, redelivered: &[u64], attempted: u64, ctx: &str) {
    let before: BTreeSet<u64> = o
        .delivered
        .iter()
        .flat_map(|(b, _)| b.iter().copied())
        .collect();
    let got: BTreeSet<u64> = redelivered.iter().copied().collect();
    for id in &o.acked {
        assert!(
            got.contains(id) || before.contains(id),
            "{ctx}: acknowledged append {id} lost"
        );
    }
    assert!(
        redelivered.windows(2).all(|w| w[0] < w[1]),
        "{ctx}: order or duplicates: {redelivered:?}"
    );
    assert!(
        redelivered.iter().all(|i| *i < attempted),
        "{ctx}: unknown record"
    );
    let last_ok = o.delivered.iter().rposition(|(_, ok)| *ok).unwrap_or(0);
    let allowed: BTreeSet<u64> = o.delivered[last_ok.min(o.delivered.len())..]
        .iter()
        .flat_map(|(b, _)| b.iter().copied())
        .collect();
    for id in got.intersection(&before) {
        assert!(
            allowed.contains(id),
            "{ctx}: {id} from an older acknowledged batch delivered again"
        );
    }
}

#[test]
fn crash_at_every_filesystem_operation_loses_no_acknowledged_append() {
    // Count the operations of a full run, then crash after each prefix of them.
    let total = {
        let fs = SimFs::new();
        let q = open_sim(&fs, small_opts());
        let o = workload(&q);
        assert_eq!(o.acked.len(), 24);
        q.close().unwrap();
        fs.ops()
    };
    assert!(total > 60, "workload too small: {total} ops");
    for n in 0..=total {
        let fs = SimFs::new();
        fs.set_faults(Faults {
            freeze_after_ops: Some(n),
            ..Faults::default()
        });
        let o = match Queue::open_with(
            qdir(),
            small_opts(),
            Arc::new(fs.clone()),
            Arc::new(ManualClock::new(1)),
        ) {
            Ok(q) => {
                let o = workload(&q);
                drop(q);
                o
            }
            Err(_) => Observed::default(),
        };
        let after = fs.crash();
        let q = open_sim(&after, small_opts());
        let delivered = drain_ids(&q, 1 << 20);
        check_after_crash(&o, &delivered, 24, &format!("crash after op {n}"));
        assert_eq!(
            q.stats().corrupt_regions,
            0,
            "crash after op {n}: torn data must be truncated, not skipped"
        );
    }
}

#[test]
fn a_crash_while_a_group_spans_a_rotation_leaves_no_older_segment_torn() {
    // Bursts of appends submitted together are written as groups that fill a segment and go
    // on in the next one: a crash at any operation may tear only the newest segment.
    let burst = |q: &Queue, from: u64| -> Vec<u64> {
        let lines: Vec<Vec<u8>> = (from..from + 8).map(line).collect();
        let pending: Vec<_> = lines
            .iter()
            .map(|p| {
                q.append(&Record::Write {
                    db: "a",
                    rp: "autogen",
                    precision: "ns",
                    payload: p,
                })
            })
            .collect();
        (from..from + 8)
            .zip(pending)
            .filter_map(|(i, a)| a.wait().is_ok().then_some(i))
            .collect()
    };
    let total = {
        let fs = SimFs::new();
        let q = open_sim(&fs, small_opts());
        for b in 0..3 {
            burst(&q, b * 8);
        }
        q.close().unwrap();
        fs.ops()
    };
    for n in 0..=total {
        let fs = SimFs::new();
        fs.set_faults(Faults {
            freeze_after_ops: Some(n),
            crash_keeps_length: true,
            ..Faults::default()
        });
        let mut acked = Vec::new();
        if let Ok(q) = Queue::open_with(
            qdir(),
            small_opts(),
            Arc::new(fs.clone()),
            Arc::new(ManualClock::new(1)),
        ) {
            for b in 0..3 {
                acked.extend(burst(&q, b * 8));
            }
        }
        let q = open_sim(&fs.crash(), small_opts());
        let delivered = drain_ids(&q, 1 << 20);
        for id in &acked {
            assert!(delivered.contains(id), "crash after op {n}: {id} lost");
        }
        let s = q.stats();
        assert!(
            s.corrupt_regions == 0 && !s.dropped,
            "crash after op {n}: a torn write taken for corruption: {s:?}"
        );
    }
}

#[test]
fn fsync_failure_seals_and_degrades() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    for i in 0..7 {
        append_id(&q, "a", i).unwrap();
    }
    fs.set_faults(Faults {
        fail_fsync_once: true,
        ..Faults::default()
    });
    assert!(matches!(append_id(&q, "a", 7), Err(Error::FsyncFailed(_))));
    assert!(matches!(append_id(&q, "a", 8), Err(Error::Degraded)));
    let s = q.stats();
    assert!(s.degraded && q.is_degraded());
    // What was durable before stays readable; the failed record was never published.
    assert_eq!(drain_ids(&q, 1 << 20), (0..7).collect::<Vec<_>>());
    drop(q);
    let q = open_sim(&fs.crash(), small_opts());
    assert!(!q.is_degraded());
    append_id(&q, "a", 9).unwrap();
    assert_eq!(drain_ids(&q, 1 << 20), vec![9]);
}

#[test]
fn fsync_failure_on_new_segment_degrades() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    fs.set_faults(Faults {
        fail_fsync_always: true,
        ..Faults::default()
    });
    assert!(matches!(append_id(&q, "a", 0), Err(Error::FsyncFailed(_))));
    assert!(q.is_degraded());
}

/// Fills the simulated disk but for `room` bytes beyond what its files hold now.
fn leave_room(fs: &SimFs, room: u64) {
    let used: u64 = fs
        .paths()
        .iter()
        .map(|p| fs.read(p).unwrap().len() as u64)
        .sum();
    fs.set_faults(Faults {
        space_limit: Some(used + room),
        ..Faults::default()
    });
}

#[test]
fn enospc_is_typed_and_recoverable() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    for i in 0..3 {
        append_id(&q, "a", i).unwrap();
    }
    leave_room(&fs, 20);
    assert!(matches!(append_id(&q, "a", 3), Err(Error::DiskFull(_))));
    assert!(!q.is_degraded());
    fs.set_faults(Faults::default());
    append_id(&q, "a", 4).unwrap();
    assert_eq!(drain_ids(&q, 1 << 20), vec![0, 1, 2, 4]);
    assert_eq!(
        q.stats().corrupt_regions,
        0,
        "the partial frame must not be read"
    );
    drop(q);
    let q = open_sim(&fs.crash(), small_opts());
    assert!(drain_ids(&q, 1 << 20).is_empty());
}

#[test]
fn a_full_disk_still_frees_consumed_segments() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    for i in 0..40 {
        append_id(&q, "a", i).unwrap();
    }
    assert!(seg_files(&fs, &qdir()).len() > 5);
    // Something else fills the disk: not even the cursor's 32 bytes fit.
    leave_room(&fs, 0);
    // Every acknowledgement deletes what it consumed and then saves the cursor in the room
    // freed.
    assert_eq!(drain_ids(&q, 100), (0..40).collect::<Vec<_>>());
    assert_eq!(seg_files(&fs, &qdir()).len(), 1);
    assert!(!q.stats().dropped);
    let q = open_sim(&fs.crash(), small_opts());
    assert!(drain_ids(&q, 1 << 20).is_empty());
}

#[test]
fn short_write_fails_the_group_and_leaves_no_garbage() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    append_id(&q, "a", 0).unwrap();
    fs.set_faults(Faults {
        short_write_once: true,
        ..Faults::default()
    });
    assert!(matches!(append_id(&q, "a", 1), Err(Error::Io { .. })));
    append_id(&q, "a", 2).unwrap();
    assert_eq!(drain_ids(&q, 1 << 20), vec![0, 2]);
    assert_eq!(q.stats().corrupt_regions, 0);
    assert!(crate::verify(&fs, &qdir()).unwrap().is_clean());
}

/// Writes records 0..n into closed segments and returns the segment paths.
fn filled(fs: &SimFs, n: u64) -> Vec<PathBuf> {
    let q = open_sim(fs, small_opts());
    for i in 0..n {
        append_id(&q, "a", i).unwrap();
    }
    q.close().unwrap();
    let mut segs = seg_files(fs, &qdir());
    segs.sort();
    segs
}

#[test]
fn corrupt_record_in_the_middle_is_skipped_and_counted() {
    let fs = SimFs::new();
    let segs = filled(&fs, 15);
    // Flip a payload byte of the second record of the second segment.
    let mut data = fs.read(&segs[1]).unwrap();
    let per_seg = 5;
    let rec = (data.len() - 16) / per_seg;
    data[16 + rec + rec / 2] ^= 0x55;
    fs.write_durable(&segs[1], data);
    assert!(!crate::verify(&fs, &qdir()).unwrap().is_clean());
    let q = open_sim(&fs, small_opts());
    let got = drain_ids(&q, 1 << 20);
    let expected: Vec<u64> = (0..15).filter(|i| *i != per_seg as u64 + 1).collect();
    assert_eq!(got, expected);
    let s = q.stats();
    assert_eq!(s.corrupt_regions, 1);
    assert!(s.dropped);
}

#[test]
fn corrupt_frame_header_resyncs_to_next_frame() {
    let fs = SimFs::new();
    let segs = filled(&fs, 10);
    let mut data = fs.read(&segs[0]).unwrap();
    // Destroy the length field of the first record: the walk must resync on the next marker.
    data[16 + 4..16 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    fs.write_durable(&segs[0], data);
    let q = open_sim(&fs, small_opts());
    assert_eq!(drain_ids(&q, 1 << 20), (1..10).collect::<Vec<_>>());
    assert_eq!(q.stats().corrupt_regions, 1);
}

#[test]
fn torn_tail_is_truncated_at_open() {
    let fs = SimFs::new();
    let segs = filled(&fs, 12);
    let last = segs.last().unwrap();
    let mut data = fs.read(last).unwrap();
    let full = data.len();
    data.truncate(full - 7);
    data.extend_from_slice(&[0xFE, b'H']); // a torn marker, for good measure
    fs.write_durable(last, data);
    let q = open_sim(&fs, small_opts());
    let got = drain_ids(&q, 1 << 20);
    assert_eq!(got, (0..11).collect::<Vec<_>>());
    assert_eq!(q.stats().corrupt_regions, 0);
    // Truncated: appends after it are not behind garbage, and verify is clean.
    append_id(&q, "a", 100).unwrap();
    assert_eq!(drain_ids(&q, 1 << 20), vec![100]);
    drop(q);
    assert!(crate::verify(&fs, &qdir()).unwrap().is_clean());
}

#[test]
fn bad_segment_header_is_set_aside_not_fatal() {
    let fs = SimFs::new();
    let segs = filled(&fs, 15);
    let mut data = fs.read(&segs[1]).unwrap();
    data[0] = b'X';
    fs.write_durable(&segs[1], data);
    let q = open_sim(&fs, small_opts());
    let got = drain_ids(&q, 1 << 20);
    assert_eq!(got, (0..5).chain(10..15).collect::<Vec<_>>());
    assert!(q.stats().dropped);
    assert!(
        fs.paths()
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".corrupt"))
    );
}

#[test]
fn corrupt_cursor_replays_from_oldest_without_loss() {
    let fs = SimFs::new();
    {
        let q = open_sim(&fs, small_opts());
        for i in 0..12 {
            append_id(&q, "a", i).unwrap();
        }
        let b = q.next_batch(30).unwrap().unwrap();
        q.ack(&b).unwrap();
        q.close().unwrap();
    }
    let cursor = qdir().join("cursor");
    let mut c = fs.read(&cursor).unwrap();
    c[15] ^= 1;
    fs.write_durable(&cursor, c);
    let q = open_sim(&fs, small_opts());
    let got = drain_ids(&q, 1 << 20);
    assert_eq!(got, (0..12).collect::<Vec<_>>());
}

#[test]
fn missing_segment_while_open_is_logged_and_skipped() {
    let fs = SimFs::new();
    let segs = filled(&fs, 15);
    let q = open_sim(&fs, small_opts());
    crate::fs::Filesystem::remove_file(&fs, &segs[1]).unwrap();
    let got = drain_ids(&q, 1 << 20);
    assert_eq!(got, (0..5).chain(10..15).collect::<Vec<_>>());
    let s = q.stats();
    assert!(s.io_errors >= 1 && s.dropped);
}

#[test]
fn adversarial_segment_full_of_markers_terminates() {
    let fs = SimFs::new();
    let segs = filled(&fs, 15);
    // Fill a closed segment with plausible-looking frame headers whose CRCs never match.
    let mut data = fs.read(&segs[0]).unwrap();
    let body = data.len() - 16;
    let mut junk = Vec::new();
    while junk.len() < body + 4000 {
        junk.extend_from_slice(&crate::format::FRAME_MARKER);
        junk.extend_from_slice(&20u32.to_le_bytes());
    }
    data.truncate(16);
    data.extend_from_slice(&junk);
    fs.write_durable(&segs[0], data);
    assert!(!crate::verify(&fs, &qdir()).unwrap().is_clean());
    let q = open_sim(&fs, small_opts());
    assert_eq!(drain_ids(&q, 1 << 20), (5..15).collect::<Vec<_>>());
    let s = q.stats();
    assert!(s.corrupt_regions >= 1 && s.dropped);
}

#[test]
fn sizes_come_from_files_not_counters() {
    let fs = SimFs::new();
    let segs = filled(&fs, 15);
    // Remove a whole segment behind the queue's back: depth shrinks accordingly at open.
    crate::fs::Filesystem::remove_file(&fs, &segs[2]).unwrap();
    let q = open_sim(&fs, small_opts());
    assert_eq!(q.stats().depth_records, 10);
    assert_eq!(drain_ids(&q, 1 << 20), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_bad_length_before_the_cursor_loses_nothing_after_it() {
    // The length of record 5 (acknowledged, before the cursor at record 7) made to reach into
    // record 8, and made to end its frame exactly where record 8 begins: a walk of the headers
    // alone finds nothing wrong with the second, and passes the cursor.
    for (records, half) in [(3, true), (3, false)] {
        let fs = SimFs::new();
        let segs = filled(&fs, 15);
        // Acknowledge records 0..7: the cursor lies inside the second segment (records 5..10).
        {
            let q = open_sim(&fs, small_opts());
            for _ in 0..7 {
                let b = q.next_batch(1).unwrap().unwrap();
                q.ack(&b).unwrap();
            }
            q.close().unwrap();
        }
        let mut data = fs.read(&segs[1]).unwrap();
        let rec = (data.len() - 16) / 5;
        let bad = u32::try_from(records * rec + if half { rec / 2 } else { 0 } - 12).unwrap();
        data[16 + 4..16 + 8].copy_from_slice(&bad.to_le_bytes());
        fs.write_durable(&segs[1], data);
        let q = open_sim(&fs, small_opts());
        assert_eq!(
            drain_ids(&q, 1 << 20),
            (7..15).collect::<Vec<_>>(),
            "{half}"
        );
        assert!(
            !q.stats().dropped,
            "nothing after the cursor was dropped ({half})"
        );
    }
}

#[test]
fn out_of_file_descriptors_is_retried_not_skipped() {
    let fs = SimFs::new();
    filled(&fs, 15);
    // While reading: the batch fails, the next read gets every record.
    let q = open_sim(&fs, small_opts());
    fs.set_faults(crate::simfs::Faults {
        fail_read_opens: 1,
        ..Default::default()
    });
    assert!(matches!(q.next_batch(1 << 20), Err(Error::Io { .. })));
    assert_eq!(drain_ids(&q, 1 << 20), (0..15).collect::<Vec<_>>());
    assert!(!q.stats().dropped);
    q.close().unwrap();

    // While opening: the open fails and names the cursor, or the segment when there is no
    // cursor; the next open has everything.
    for (without_cursor, file) in [(false, "cursor"), (true, ".hseg")] {
        let fs = SimFs::new();
        filled(&fs, 15);
        if without_cursor {
            crate::fs::Filesystem::remove_file(&fs, &qdir().join("cursor")).unwrap();
        }
        fs.set_faults(crate::simfs::Faults {
            fail_read_opens: 1,
            ..Default::default()
        });
        let opened = Queue::open_with(
            qdir(),
            small_opts(),
            Arc::new(fs.clone()),
            Arc::new(crate::ManualClock::new(0)),
        );
        assert!(
            matches!(&opened, Err(Error::Io { path, .. }) if path.to_string_lossy().ends_with(file)),
            "{opened:?}"
        );
        drop(opened);
        let q = open_sim(&fs, small_opts());
        assert_eq!(drain_ids(&q, 1 << 20), (0..15).collect::<Vec<_>>());
        assert!(!q.stats().dropped);
    }
}

#[test]
fn a_segment_the_filesystem_reports_damaged_is_set_aside_and_the_queue_opens() {
    // EIO, and the filesystem's own corruption reports: EUCLEAN (XFS, ext4 with checksums),
    // EBADMSG, and ESTALE (a stale NFS handle). None passes by retrying.
    for errno in [5, 117, 74, 116] {
        let fs = SimFs::new();
        filled(&fs, 15);
        // Without a cursor, the first file read at the start is a segment.
        crate::fs::Filesystem::remove_file(&fs, &qdir().join("cursor")).unwrap();
        fs.set_faults(crate::simfs::Faults {
            fail_read_opens: 1,
            read_open_errno: Some(errno),
            ..Default::default()
        });
        let q = open_sim(&fs, small_opts());
        assert!(q.stats().dropped, "errno {errno}: the drop is told");
        let aside = fs
            .paths()
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".unreadable"))
            .count();
        assert_eq!(aside, 1, "errno {errno}");
        q.close().unwrap();
    }
}

#[test]
fn a_failed_write_under_the_interval_policy_still_syncs_what_was_acknowledged() {
    let fs = SimFs::new();
    let opts = Options {
        segment_bytes: 4096,
        max_record_bytes: 1000,
        fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
        ..small_opts()
    };
    let q = open_sim(&fs, opts.clone());
    for i in 0..3 {
        append_id(&q, "a", i).unwrap();
    }
    // The next append fails half-written: the segment is sealed, and the three acknowledged
    // records must not wait for an interval sync that will never come.
    fs.set_faults(Faults {
        short_write_once: true,
        ..Faults::default()
    });
    assert!(append_id(&q, "a", 3).is_err());
    let after_crash = fs.crash();
    drop(q);
    let q = open_sim(&after_crash, opts);
    assert_eq!(drain_ids(&q, 1 << 20), vec![0, 1, 2]);
}

#[test]
fn garbage_after_the_last_record_of_an_older_segment_is_corruption() {
    // The writer syncs a segment before the next exists (the crash test above checks that no
    // crash leaves it torn), so bytes no CRC vouches for at an older segment's end are damage.
    let fs = SimFs::new();
    let segs = filled(&fs, 15);
    let mut data = fs.read(&segs[0]).unwrap();
    let with_garbage = data.len() + 40;
    let torn: Vec<u8> = data[16..16 + 40].to_vec();
    data.extend_from_slice(&torn);
    fs.write_durable(&segs[0], data);
    let q = open_sim(&fs, small_opts());
    assert_eq!(
        fs.read(&segs[0]).unwrap().len(),
        with_garbage,
        "left in place"
    );
    assert_eq!(drain_ids(&q, 1 << 20), (0..15).collect::<Vec<_>>());
    let s = q.stats();
    assert!(s.dropped && s.corrupt_regions == 1, "{s:?}");
    assert_eq!(s.torn_tail_bytes, 0);
}
