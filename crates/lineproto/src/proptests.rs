//! Property tests: the fast path never disagrees with the ported parser, nothing panics, and
//! what is forwarded validates again to the same points.

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_700_000_000_123_456_789;

/// A name or tag value: mostly plain characters, sometimes an escape.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(vec!["a", "b", "cpu", "host", "x", "time", "Z", "0", "-", "_", "."]),
            1 => prop::sample::select(vec!["\\ ", "\\,", "\\=", "\\\\", "\\\"", "\t"]),
        ],
        1..4,
    )
    .prop_map(|parts| parts.concat())
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| format!("{v}i")),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| format!("{v}")),
        (-1000i64..1000, 0u32..10000).prop_map(|(a, b)| format!("{a}.{b}")),
        prop::sample::select(vec![
            "t",
            "T",
            "true",
            "True",
            "TRUE",
            "f",
            "F",
            "false",
            "False",
            "FALSE",
            "1",
            "-1",
            ".5",
            "1.",
            "0i",
            "1e5",
            "1E-5",
            "\"s\"",
            "\"a,b c=d\"",
            "\"q\\\"q\"",
            "\"x\ny\"",
        ])
        .prop_map(str::to_owned),
    ]
}

fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<i64>().prop_map(|v| format!(" {v}")),
        (0i64..2_000_000_000_000_000_000).prop_map(|v| format!(" {v}")),
        prop::sample::select(vec![
            " 9223372036854775806",
            " 9223372036854775807",
            " -9223372036854775806",
            " -9223372036854775807",
            " 9223372036",
            " 9223372037",
            " 153722867",
            " 153722868",
            " 2562047",
            " 2562048",
            " 0",
            " 007",
            " -0",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A line that is usually valid.
fn line() -> impl Strategy<Value = String> {
    (
        name(),
        prop::collection::vec((name(), name()), 0..4),
        prop::collection::vec((name(), field_value()), 1..4),
        timestamp(),
    )
        .prop_map(|(m, tags, fields, ts)| {
            let mut s = m;
            for (k, v) in tags {
                s.push(',');
                s.push_str(&k);
                s.push('=');
                s.push_str(&v);
            }
            s.push(' ');
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&fields.join(","));
            s.push_str(&ts);
            s
        })
}

/// A usually valid line with a few bytes changed to the ones the parser cares about.
fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    (
        line(),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                0u8..3,
                prop::sample::select(b" ,=\"\\\n\t#-.eiu0t\r".to_vec()),
            ),
            0..3,
        ),
    )
        .prop_map(|(line, edits)| {
            let mut bytes = line.into_bytes();
            for (at, op, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => bytes.push(byte),
                }
            }
            bytes
        })
}

/// A usually valid line with an ending that is hard to stamp or to split.
fn awkward_line() -> impl Strategy<Value = Vec<u8>> {
    (
        line(),
        prop::sample::select(vec!["\\", "\"", " \\", "\\\\", "\t", " "]),
    )
        .prop_map(|(line, end)| {
            let mut bytes = line.into_bytes();
            bytes.extend_from_slice(end.as_bytes());
            bytes
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => mutated_line(),
            2 => awkward_line(),
            1 => Just(b"# comment".to_vec()),
            1 => Just(b"   ".to_vec()),
        ],
        0..8,
    )
    .prop_map(|lines| lines.join(&b'\n'))
}

fn precision() -> impl Strategy<Value = Precision> {
    prop::sample::select(vec![
        Precision::Nanoseconds,
        Precision::Microseconds,
        Precision::Milliseconds,
        Precision::Seconds,
        Precision::Minutes,
        Precision::Hours,
    ])
}

fn same_outcome(a: &Validated<'_>, b: &Validated<'_>) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.points(), b.points());
    prop_assert_eq!(a.rejected(), b.rejected());
    prop_assert_eq!(a.output(), b.output());
    prop_assert_eq!(a.influx_error(), b.influx_error());
    Ok(())
}

/// 4,000 cases per property, or `PROPTEST_CASES` for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_agrees_with_the_ported_parser(body in body(), p in precision()) {
        let fast = validate_with(&body, p, NOW, true);
        let exact = validate_with(&body, p, NOW, false);
        same_outcome(&fast, &exact)?;
    }

    #[test]
    fn forwarded_output_validates_to_the_same_points(body in body(), p in precision()) {
        let v = validate(&body, p, NOW);
        let again = validate(v.output(), p, NOW + 1);
        prop_assert!(again.rejected().iter().all(|r| r.reason().is_drop()));
        prop_assert_eq!(again.points(), v.points());
        prop_assert!(again.is_unchanged(), "every forwarded line has a timestamp");
    }

    #[test]
    fn a_last_line_round_trips(
        lines in prop::collection::vec(mutated_line(), 0..3),
        last in prop_oneof![awkward_line(), mutated_line()],
        p in precision(),
    ) {
        // The last line of a body is where a trailing backslash cannot join the next line.
        let mut body = lines.join(&b'\n');
        if !body.is_empty() {
            body.push(b'\n');
        }
        body.extend_from_slice(&last);
        let v = validate(&body, p, NOW);
        let again = validate(v.output(), p, NOW + 1);
        prop_assert_eq!(again.points(), v.points());
        prop_assert!(again.is_unchanged(), "{:?} forwarded as {:?}", String::from_utf8_lossy(&body), String::from_utf8_lossy(v.output()));
    }

    #[test]
    fn any_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300), p in precision()) {
        let v = validate(&body, p, NOW);
        let exact = validate_with(&body, p, NOW, false);
        same_outcome(&v, &exact)?;
        for r in v.rejected() {
            prop_assert!(body.windows(r.line().len().max(1)).any(|w| w == r.line()) || r.line().is_empty());
        }
    }
}
