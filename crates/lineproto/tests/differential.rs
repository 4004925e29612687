//! Differential test against the `influxdb-line-protocol` crate (InfluxDB's own Rust parser) on
//! generated input inside the grammar both implement the same way. It checks that both accept
//! the same valid lines and see the same measurement, tags, fields and timestamp, and that both
//! refuse the same broken ones. (Where 1.6 differs from that crate — unsigned integers, some
//! escapes — the oracle test against a real influxd is the judge.)

use influxdb_line_protocol::{FieldValue, parse_lines};
use lineproto::{Precision, validate};
use proptest::prelude::*;

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_.-]{0,12}".prop_filter("not the time key", |s| s != "time")
}

fn escaped_ident() -> impl Strategy<Value = (String, String)> {
    (
        ident(),
        prop::option::of(prop::sample::select(vec![(" ", "\\ "), (",", "\\,")])),
        ident(),
    )
        .prop_map(|(a, sep, b)| match sep {
            Some((raw, esc)) => (format!("{a}{raw}{b}"), format!("{a}{esc}{b}")),
            None => (a.clone(), a),
        })
}

#[derive(Debug, Clone)]
enum Value {
    Int(i64),
    Float(f64),
    Bool(bool, &'static str),
    Str(String),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        (-1e12f64..1e12).prop_map(Value::Float),
        prop::sample::select(vec![
            (true, "t"),
            (true, "T"),
            (true, "true"),
            (true, "True"),
            (true, "TRUE"),
            (false, "f"),
            (false, "F"),
            (false, "false"),
            (false, "False"),
            (false, "FALSE"),
        ])
        .prop_map(|(b, s)| Value::Bool(b, s)),
        "[a-zA-Z0-9 ,=]{0,12}".prop_map(Value::Str),
    ]
}

fn render(v: &Value) -> String {
    match v {
        Value::Int(i) => format!("{i}i"),
        Value::Float(f) => format!("{f:?}"),
        Value::Bool(_, s) => (*s).to_owned(),
        Value::Str(s) => format!("\"{s}\""),
    }
}

#[derive(Debug, Clone)]
struct Line {
    measurement: (String, String),
    tags: Vec<(String, String)>,
    fields: Vec<(String, Value)>,
    timestamp: Option<i64>,
}

fn line() -> impl Strategy<Value = Line> {
    (
        escaped_ident(),
        prop::collection::btree_map(ident(), escaped_ident(), 0..5),
        prop::collection::btree_map(ident(), value(), 1..6),
        prop::option::of(-9_000_000_000_000_000_000i64..9_000_000_000_000_000_000),
    )
        .prop_map(|(measurement, tags, fields, timestamp)| Line {
            measurement,
            tags: tags.into_iter().map(|(k, (_, v))| (k, v)).collect(),
            fields: fields.into_iter().collect(),
            timestamp,
        })
}

fn text(l: &Line) -> String {
    let mut s = l.measurement.1.clone();
    for (k, v) in &l.tags {
        s += &format!(",{k}={v}");
    }
    let fields: Vec<String> = l
        .fields
        .iter()
        .map(|(k, v)| format!("{k}={}", render(v)))
        .collect();
    s += " ";
    s += &fields.join(",");
    if let Some(ts) = l.timestamp {
        s += &format!(" {ts}");
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn both_accept_valid_lines_and_agree_on_their_parts(l in line()) {
        let text = text(&l);
        let ours = validate(text.as_bytes(), Precision::Nanoseconds, 0);
        prop_assert_eq!(ours.points(), 1, "{:?}: {:?}", text, ours.rejected());

        let theirs: Vec<_> = parse_lines(&text).collect();
        prop_assert_eq!(theirs.len(), 1);
        let parsed = match &theirs[0] {
            Ok(p) => p,
            Err(e) => return Err(TestCaseError::fail(format!("{text:?}: crate refused: {e}"))),
        };
        prop_assert_eq!(parsed.series.measurement.to_string(), l.measurement.0.clone());
        prop_assert_eq!(parsed.series.tag_set.as_ref().map_or(0, |t| t.len()), l.tags.len());
        prop_assert_eq!(parsed.field_set.len(), l.fields.len());
        prop_assert_eq!(parsed.timestamp, l.timestamp);
        for ((_, theirs), (_, ours)) in parsed.field_set.iter().zip(&l.fields) {
            let same = match (theirs, ours) {
                (FieldValue::I64(a), Value::Int(b)) => a == b,
                (FieldValue::F64(a), Value::Float(b)) => a == b,
                (FieldValue::Boolean(a), Value::Bool(b, _)) => a == b,
                (FieldValue::String(a), Value::Str(b)) => *a == b.as_str(),
                _ => false,
            };
            prop_assert!(same, "{:?}: {:?} vs {:?}", text, theirs, ours);
        }
    }

    #[test]
    fn both_refuse_broken_lines(l in line(), cut in 0usize..4) {
        // Each breakage is one that 1.6 and the crate both refuse.
        let mut key = l.measurement.1.clone();
        for (k, v) in &l.tags {
            key += &format!(",{k}={v}");
        }
        let (k, v) = &l.fields[0];
        let broken = match cut {
            0 => format!("{key} {k}="),                  // missing field value
            1 => format!("{key} ={}", render(v)),        // missing field key
            2 => format!("{key} "),                      // no fields at all
            _ => format!("{key} {k}{}", render(v)),      // a field without '='
        };
        let ours = validate(broken.as_bytes(), Precision::Nanoseconds, 0);
        let theirs_ok = parse_lines(&broken).all(|r| r.is_ok());
        if ours.points() == 1 {
            prop_assert!(theirs_ok, "{:?}: we accept, the crate refuses", broken);
        } else {
            prop_assert!(!theirs_ok, "{:?}: we refuse ({:?}), the crate accepts", broken, ours.rejected());
        }
    }
}
