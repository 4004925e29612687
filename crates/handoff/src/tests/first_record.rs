//! Where appends say their records lie ([`crate::RecordId`]) and acknowledging a batch's first
//! record alone ([`Queue::ack_first`]).

use super::*;
use crate::Error;

/// Two records of [`line`] per batch (ids below 100).
const TWO_RECORDS: usize = 30;

#[test]
fn every_batch_starts_with_the_record_its_append_named_across_segments() {
    let fs = SimFs::new();
    // 300-byte segments: 40 records rotate through several.
    let q = open_sim(&fs, small_opts());
    let ids: Vec<_> = (0..40).map(|i| append_id(&q, "a", i).unwrap()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    let mut at = 0;
    while let Some(batch) = q.next_batch(TWO_RECORDS).unwrap() {
        assert_eq!(
            batch.first_record(),
            ids[at],
            "batch starting at record {at}"
        );
        at += usize::try_from(batch.records).unwrap();
        q.ack(&batch).unwrap();
    }
    assert_eq!(at, 40);
}

#[test]
fn ack_first_leaves_the_rest_of_the_batch_for_the_next_read() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    let ids: Vec<_> = (0..3).map(|i| append_id(&q, "a", i).unwrap()).collect();
    let batch = q.next_batch(TWO_RECORDS).unwrap().unwrap();
    assert_eq!(ids_of(&batch.kind), vec![0, 1]);
    let ahead = q.next_batch_after(&batch, TWO_RECORDS).unwrap().unwrap();
    q.ack_first(&batch).unwrap();
    // Once moved, the cursor takes neither the batch nor what was read after it.
    assert!(matches!(q.ack_first(&batch), Err(Error::StaleBatch)));
    assert!(matches!(q.ack(&batch), Err(Error::StaleBatch)));
    assert!(!q.is_next(&ahead));
    let s = q.stats();
    assert_eq!((s.depth_records, s.acked_records), (2, 1));

    let rest = q.next_batch(TWO_RECORDS).unwrap().unwrap();
    assert_eq!(ids_of(&rest.kind), vec![1, 2]);
    assert_eq!(rest.first_record(), ids[1]);
    q.ack(&rest).unwrap();
    assert_eq!(q.stats().depth_records, 0);

    // The cursor persisted by `ack_first` holds across a restart.
    drop(q);
    let q = open_sim(&fs, small_opts());
    assert!(q.next_batch(TWO_RECORDS).unwrap().is_none());
}

#[test]
fn ack_first_of_a_single_record_batch_acknowledges_it_whole() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    let id = append_id(&q, "a", 7).unwrap();
    let batch = q.next_batch(TWO_RECORDS).unwrap().unwrap();
    assert_eq!((batch.records, batch.first_record()), (1, id));
    q.ack_first(&batch).unwrap();
    drop(q);
    let q = open_sim(&fs, small_opts());
    assert!(q.next_batch(TWO_RECORDS).unwrap().is_none());
}

#[test]
fn the_longest_write_payload_fills_a_record_exactly() {
    let fs = SimFs::new();
    let q = open_sim(&fs, small_opts());
    let max = q.max_write_payload("a", "autogen", "ns");
    assert!(max > 0 && max < 280, "{max}");
    let fits = vec![b'x'; max];
    let longer = vec![b'x'; max + 1];
    for (payload, ok) in [(fits, true), (longer, false)] {
        let appended = q
            .append(&Record::Write {
                db: "a",
                rp: "autogen",
                precision: "ns",
                payload: &payload,
            })
            .wait();
        assert_eq!(
            appended.is_ok(),
            ok,
            "{} bytes: {appended:?}",
            payload.len()
        );
    }
}
