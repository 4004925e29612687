//! Reading the next batch while the previous one is being delivered
//! ([`Queue::next_batch_after`]).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::Error;

/// Two records of [`line`] per batch (ids below 100).
const TWO_RECORDS: usize = 30;

/// Delivers the whole queue the way the replay does with read-ahead: while batch N is "sent",
/// N+1 is read after it; after N's ack, N+1 is used only if it starts at the cursor. Returns
/// the ids in delivery order and how many read-ahead batches were used.
fn drain_reading_ahead(q: &Queue, limit: usize) -> (Vec<u64>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    let mut current = q.next_batch(limit).unwrap();
    // Bounded by the queue content; the cap catches a reader that never ends.
    for _ in 0..100_000 {
        let Some(batch) = current.take() else {
            return (out, used);
        };
        let ahead = q.next_batch_after(&batch, limit).unwrap();
        out.extend(ids_of(&batch.kind));
        q.ack(&batch).unwrap();
        current = match ahead {
            Some(next) if q.is_next(&next) => {
                used += 1;
                Some(next)
            }
            _ => q.next_batch(limit).unwrap(),
        };
    }
    panic!("reader did not terminate");
}

#[test]
fn reads_the_following_batch_without_moving_the_cursor() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    for i in 0..6 {
        append_id(&q, "a", i).unwrap();
    }
    let first = q.next_batch(TWO_RECORDS).unwrap().unwrap();
    assert_eq!(ids_of(&first.kind), vec![0, 1]);
    let second = q.next_batch_after(&first, TWO_RECORDS).unwrap().unwrap();
    assert_eq!(ids_of(&second.kind), vec![2, 3]);
    let third = q.next_batch_after(&second, TWO_RECORDS).unwrap().unwrap();
    assert_eq!(ids_of(&third.kind), vec![4, 5]);
    assert!(q.next_batch_after(&third, TWO_RECORDS).unwrap().is_none());
    // Nothing moved: the cursor still names the first batch, acks go in order only.
    assert_eq!(q.next_batch(TWO_RECORDS).unwrap().unwrap(), first);
    assert_eq!(q.stats().depth_records, 6);
    assert!(q.is_next(&first) && !q.is_next(&second));
    assert!(matches!(q.ack(&second), Err(Error::StaleBatch)));
    q.ack(&first).unwrap();
    assert!(q.is_next(&second));
    q.ack(&second).unwrap();
    q.ack(&third).unwrap();
    assert!(matches!(q.ack(&third), Err(Error::StaleBatch)));
    let s = q.stats();
    assert_eq!(
        (s.depth_records, s.acked_records, s.acked_batches),
        (0, 6, 3)
    );
    // Once acknowledged, a batch has nothing after it to read ahead.
    assert!(q.next_batch_after(&first, TWO_RECORDS).unwrap().is_none());
}

#[test]
fn data_published_later_is_read_ahead_and_schema_stays_a_batch_of_its_own() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    append_id(&q, "a", 0).unwrap();
    let first = q.next_batch(1 << 20).unwrap().unwrap();
    assert!(q.next_batch_after(&first, 1 << 20).unwrap().is_none());
    q.append(&Record::Schema {
        db: "a",
        statement: "CREATE DATABASE a",
        params: "",
    })
    .wait()
    .unwrap();
    append_id(&q, "a", 1).unwrap();
    append_id(&q, "a", 2).unwrap();
    let schema = q.next_batch_after(&first, 1 << 20).unwrap().unwrap();
    assert!(matches!(schema.kind, BatchKind::Schema { .. }));
    let writes = q.next_batch_after(&schema, 1 << 20).unwrap().unwrap();
    assert_eq!(ids_of(&writes.kind), vec![1, 2]);
    for b in [&first, &schema, &writes] {
        q.ack(b).unwrap();
    }
    assert_eq!(q.stats().depth_records, 0);
}

#[test]
fn read_ahead_across_segments_delivers_every_record_once() {
    let fs = SimFs::new();
    // 300-byte segments: 40 records rotate through several, deleted as they are consumed.
    let q = open_sim(&fs, small_opts());
    for i in 0..40 {
        append_id(&q, "a", i).unwrap();
    }
    let (ids, used) = drain_reading_ahead(&q, TWO_RECORDS);
    assert_eq!(ids, (0..40).collect::<Vec<_>>());
    assert_eq!(used, 19, "every batch but the first was read ahead");
    assert_eq!(q.stats().depth_records, 0);
    assert_eq!(
        seg_files(&fs, &qdir()).len(),
        1,
        "consumed segments deleted"
    );
}

#[test]
fn a_purge_discards_what_was_read_ahead() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    for i in 0..6 {
        append_id(&q, "a", i).unwrap();
    }
    let first = q.next_batch(TWO_RECORDS).unwrap().unwrap();
    let second = q.next_batch_after(&first, TWO_RECORDS).unwrap().unwrap();
    assert_eq!(q.purge().unwrap(), 6);
    assert!(!q.is_next(&second));
    assert!(matches!(q.ack(&first), Err(Error::StaleBatch)));
    assert!(matches!(q.ack(&second), Err(Error::StaleBatch)));
    assert!(q.next_batch_after(&first, TWO_RECORDS).unwrap().is_none());
    append_id(&q, "a", 6).unwrap();
    assert!(!q.is_next(&second));
    let (ids, _) = drain_reading_ahead(&q, TWO_RECORDS);
    assert_eq!(ids, vec![6]);
    assert_eq!(q.stats().purged_records, 6);
}

/// Records 0..15 in closed 5-record segments, record `bad` with a flipped payload byte.
fn corrupted(bad: usize) -> SimFs {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    for i in 0..15 {
        append_id(&q, "a", i).unwrap();
    }
    q.close().unwrap();
    let mut segs = seg_files(&fs, &qdir());
    segs.sort();
    let per_seg = 5;
    let seg = &segs[bad / per_seg];
    let mut data = fs.read(seg).unwrap();
    let rec = (data.len() - 16) / per_seg;
    data[16 + rec * (bad % per_seg) + rec / 2] ^= 0x55;
    fs.write_durable(seg, data);
    fs
}

#[test]
fn a_corrupt_record_after_the_batch_is_left_to_the_cursor_reader() {
    for bad in [1, 2, 5, 7, 13] {
        let q = open_sim(&corrupted(bad), small_opts());
        let (ids, _) = drain_reading_ahead(&q, TWO_RECORDS);
        let reference = drain_ids(&open_sim(&corrupted(bad), small_opts()), TWO_RECORDS);
        let expected: Vec<u64> = (0..15).filter(|i| *i != bad as u64).collect();
        assert_eq!(ids, expected, "corrupt record {bad}");
        assert_eq!(reference, expected, "corrupt record {bad}");
        let s = q.stats();
        assert_eq!((s.corrupt_regions, s.depth_records), (1, 0), "record {bad}");
        assert!(s.dropped);
    }
    // Right after a batch: nothing is read ahead, nothing is skipped or counted yet.
    let q = open_sim(&corrupted(2), small_opts());
    let first = q.next_batch(TWO_RECORDS).unwrap().unwrap();
    assert_eq!(ids_of(&first.kind), vec![0, 1]);
    assert!(q.next_batch_after(&first, TWO_RECORDS).unwrap().is_none());
    assert_eq!(q.stats().corrupt_regions, 0);
    q.ack(&first).unwrap();
    let next = q.next_batch(TWO_RECORDS).unwrap().unwrap();
    assert_eq!(ids_of(&next.kind), vec![3, 4]);
    assert_eq!(q.stats().corrupt_regions, 1);
}

#[test]
fn expired_records_after_the_batch_are_dropped_and_counted_once() {
    let fs = SimFs::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = Options {
        max_age: Some(Duration::from_secs(60)),
        ..small_opts()
    };
    let q = open_sim_clock(&fs, opts, clock.clone());
    for i in 0..4 {
        append_id(&q, "a", i).unwrap();
    }
    let first = q.next_batch(TWO_RECORDS).unwrap().unwrap();
    clock.advance(Duration::from_secs(30));
    for i in 4..6 {
        append_id(&q, "a", i).unwrap();
    }
    clock.advance(Duration::from_secs(45));
    // 2 and 3 are 75 s old now: not read ahead, dropped by the cursor reader.
    assert!(q.next_batch_after(&first, TWO_RECORDS).unwrap().is_none());
    assert_eq!(q.stats().expired_records, 0);
    q.ack(&first).unwrap();
    let (ids, _) = drain_reading_ahead(&q, TWO_RECORDS);
    assert_eq!(ids, vec![4, 5]);
    let s = q.stats();
    assert_eq!((s.expired_records, s.depth_records), (2, 0));
}
