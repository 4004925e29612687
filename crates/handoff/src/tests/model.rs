//! Model-based property test: random appends, reads, acks, reopens and crashes against an
//! in-memory model of the queue.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Write {
        db: u8,
        rp: u8,
        len: usize,
        newline: bool,
    },
    Schema {
        db: u8,
    },
    Next {
        limit: usize,
        ack: bool,
    },
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..2, 0u8..2, 0usize..60, any::<bool>()).prop_map(|(db, rp, len, newline)| Op::Write { db, rp, len, newline }),
        1 => (0u8..2).prop_map(|db| Op::Schema { db }),
        4 => (1usize..200, prop::bool::weighted(0.8)).prop_map(|(limit, ack)| Op::Next { limit, ack }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

#[derive(Debug, Clone)]
struct MRec {
    kind: BatchKind,
    /// Encoded frame size.
    frame: u64,
}

/// The merge rule, stated independently of the implementation.
fn expected_batch(model: &VecDeque<MRec>, limit: usize) -> Option<(BatchKind, usize)> {
    let first = model.front()?;
    let BatchKind::Write {
        db,
        rp,
        precision,
        payload,
    } = &first.kind
    else {
        return Some((first.kind.clone(), 1));
    };
    let mut out = payload.clone();
    let mut n = 1;
    for r in model.iter().skip(1) {
        if out.len() >= limit {
            break;
        }
        match &r.kind {
            BatchKind::Write {
                db: d,
                rp: p,
                precision: c,
                payload: more,
            } if d == db && p == rp && c == precision && out.len() + more.len() <= limit => {
                out.extend_from_slice(more);
                n += 1;
            }
            _ => break,
        }
    }
    Some((
        BatchKind::Write {
            db: db.clone(),
            rp: rp.clone(),
            precision: precision.clone(),
            payload: out,
        },
        n,
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn queue_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        let mut fs = SimFs::new();
        let opts = Options { segment_bytes: 256, max_record_bytes: 200, ..small_opts() };
        let mut q = Some(open_sim(&fs, opts.clone()));
        let mut model: VecDeque<MRec> = VecDeque::new();
        let mut seq = 0u64;
        for op in ops {
            let queue = q.as_ref().unwrap();
            match op {
                Op::Write { db, rp, len, newline } => {
                    seq += 1;
                    let mut payload = format!("m{seq} v=").into_bytes();
                    payload.resize(payload.len() + len, b'7');
                    if newline { payload.push(b'\n'); }
                    let (db, rp) = (format!("db{db}"), format!("rp{rp}"));
                    if len % 2 == 0 {
                        queue.append(&Record::Write { db: &db, rp: &rp, precision: "ms", payload: &payload }).wait().unwrap();
                    } else {
                        queue.append_write(&db, &rp, "ms", crate::Bytes::from(payload.clone())).wait().unwrap();
                    }
                    let frame = (12 + 14 + db.len() + rp.len() + 2 + payload.len()) as u64;
                    let mut norm = payload.clone();
                    if !norm.ends_with(b"\n") { norm.push(b'\n'); }
                    model.push_back(MRec { kind: BatchKind::Write { db, rp, precision: "ms".into(), payload: norm }, frame });
                }
                Op::Schema { db: n } => {
                    let db = format!("db{n}");
                    let statement = format!("CREATE DATABASE {db}");
                    // Both encodings: without parameters, and with them (length-prefixed).
                    let params = if n == 0 { String::new() } else { format!("rp=r{n}&params=%7B%7D") };
                    queue.append(&Record::Schema { db: &db, statement: &statement, params: &params }).wait().unwrap();
                    let prefix = if params.is_empty() { 0 } else { 4 };
                    let frame = (12 + 14 + db.len() + prefix + statement.len() + params.len()) as u64;
                    model.push_back(MRec { kind: BatchKind::Schema { db, statement, params }, frame });
                }
                Op::Next { limit, ack } => {
                    let got = queue.next_batch(limit).unwrap();
                    let want = expected_batch(&model, limit);
                    match (got, want) {
                        (None, None) => {}
                        (Some(b), Some((kind, n))) => {
                            prop_assert_eq!(&b.kind, &kind);
                            prop_assert_eq!(b.records, n as u64);
                            if ack {
                                queue.ack(&b).unwrap();
                                model.drain(..n);
                            }
                        }
                        (g, w) => prop_assert!(false, "got {:?}, want {:?}", g, w),
                    }
                }
                Op::Reopen => {
                    q.take().unwrap().close().unwrap();
                    q = Some(open_sim(&fs, opts.clone()));
                }
                Op::Crash => {
                    // Take the durable state first: the old queue's close must not help.
                    let after = fs.crash();
                    drop(q.take());
                    fs = after;
                    q = Some(open_sim(&fs, opts.clone()));
                }
            }
            let s = q.as_ref().unwrap().stats();
            prop_assert_eq!(s.depth_records, model.len() as u64);
            prop_assert_eq!(s.depth_bytes, model.iter().map(|r| r.frame).sum::<u64>());
            prop_assert_eq!(s.corrupt_regions, 0);
        }
    }
}
