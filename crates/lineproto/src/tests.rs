//! Unit tests: every rule and message, with the texts InfluxDB 1.6.7 answers.

use super::*;

const NOW: i64 = 1_700_000_000_123_456_789;

fn error_of(body: &str) -> Option<String> {
    validate(body.as_bytes(), Precision::Nanoseconds, NOW)
        .influx_error()
        .map(|e| String::from_utf8(e).expect("test bodies are UTF-8"))
}

fn line_error(line: &str) -> String {
    let v = validate(line.as_bytes(), Precision::Nanoseconds, NOW);
    assert_eq!(v.points(), 0, "{line:?} should be refused");
    let rejected = v.rejected();
    assert_eq!(rejected.len(), 1, "{line:?}");
    rejected[0].reason().to_string()
}

fn accepted(line: &str) -> bool {
    validate(line.as_bytes(), Precision::Nanoseconds, NOW).points() == 1
}

#[test]
fn reference_examples() {
    assert_eq!(
        error_of("cpu,host=a usage=").as_deref(),
        Some("unable to parse 'cpu,host=a usage=': missing field value")
    );
    assert_eq!(
        error_of("pa,host=x v=1 1700000000000000001\npb,host=y v= 1700000000000000002\npc,host=z v=3 1700000000000000003\n")
            .as_deref(),
        Some("partial write: unable to parse 'pb,host=y v= 1700000000000000002': missing field value dropped=0")
    );
    assert_eq!(
        error_of("cpu time=1").as_deref(),
        Some(
            "partial write: invalid field name: input field \"time\" on measurement \"cpu\" is invalid dropped=1"
        )
    );
    assert_eq!(
        error_of("cpu,time=x v=1").as_deref(),
        Some(
            "partial write: invalid tag key: input tag \"time\" on measurement \"cpu\" is invalid dropped=1"
        )
    );
    assert_eq!(
        error_of("cpu v=1 1\r\n").as_deref(),
        Some("unable to parse 'cpu v=1 1\r': bad timestamp")
    );
    assert_eq!(
        error_of("cpu v=1u").as_deref(),
        Some("unable to parse 'cpu v=1u': invalid number")
    );
    assert_eq!(error_of(""), None);
}

#[test]
fn several_errors_are_joined_with_newlines() {
    assert_eq!(
        error_of("a v=\nb\n").as_deref(),
        Some("unable to parse 'a v=': missing field value\nunable to parse 'b': missing fields")
    );
}

#[test]
fn time_tag_reason_wins_over_time_field_and_parse_errors() {
    assert_eq!(
        error_of("a time=1 1\nbad\nb,time=x v=1 1\nc v=1 1").as_deref(),
        Some(
            "partial write: invalid tag key: input tag \"time\" on measurement \"b\" is invalid dropped=2"
        )
    );
}

#[test]
fn time_field_beside_other_fields_is_forwarded() {
    let v = validate(b"cpu time=1,v=2 5", Precision::Nanoseconds, NOW);
    assert_eq!(v.points(), 1);
    assert!(v.is_unchanged());
    assert_eq!(v.influx_error(), None);
}

#[test]
fn measurement_in_drop_reason_is_unescaped() {
    assert_eq!(
        error_of("c\\ p\\,u,time=x v=1").as_deref(),
        Some(
            "partial write: invalid tag key: input tag \"time\" on measurement \"c p,u\" is invalid dropped=1"
        )
    );
}

#[test]
fn structure_errors() {
    for (line, reason) in [
        ("cpu", "missing fields"),
        ("cpu ", "invalid field format"),
        (",t=a v=1", "missing measurement"),
        ("cpu,", "missing tag key"),
        ("cpu,=a v=1", "missing tag key"),
        ("cpu,t v=1", "missing tag value"),
        ("cpu,t= v=1", "missing tag value"),
        ("cpu,t=a", "missing fields"),
        ("cpu,t=a=b v=1", "invalid tag format"),
        ("cpu,t=a,t=b v=1", "duplicate tags"),
        ("cpu,t=a,u=1,t=b v=1", "duplicate tags"),
        ("cpu =1", "missing field key"),
        ("cpu v=1,=2", "missing field key"),
        ("cpu v=", "missing field value"),
        ("cpu v=,w=1", "missing field value"),
        ("cpu v=1,", "invalid field format"),
        ("cpu v", "invalid field format"),
        ("cpu v=\"abc", "unbalanced quotes"),
        ("cpu v=1 abc", "bad timestamp"),
        ("cpu v=1 12 x", "point is invalid"),
        (
            "cpu v=1 -",
            "strconv.ParseInt: parsing \"-\": invalid syntax",
        ),
        (
            "cpu v=1 99999999999999999999",
            "strconv.ParseInt: parsing \"99999999999999999999\": value out of range",
        ),
        (
            "cpu v=1 9223372036854775807",
            "time outside range -9223372036854775806 - 9223372036854775806",
        ),
    ] {
        assert_eq!(line_error(line), reason, "{line:?}");
    }
}

#[test]
fn numbers() {
    for ok in [
        "1",
        "-1",
        "1.5",
        ".5",
        "1.",
        "-.5",
        "1e5",
        "1E-5",
        "-1e-3",
        "1i",
        "-1i",
        "0i",
        "9223372036854775807i",
        "-9223372036854775808i",
        "1234567890123456789012.0",
    ] {
        assert!(accepted(&format!("m v={ok} 1")), "{ok}");
    }
    for (bad, reason) in [
        ("1u", "invalid number"),
        ("1.5i", "invalid number"),
        ("1e5i", "invalid number"),
        ("9i10", "invalid number"),
        ("1.1.1", "invalid number"),
        ("-", "invalid number"),
        (".", "invalid number"),
        ("-.", "invalid number"),
        ("NaN", "invalid number"),
        ("nan", "invalid number"),
        ("-Inf", "invalid number"),
        ("1e", "invalid float"),
        ("1e400", "invalid float"),
        ("Inf", "invalid boolean"),
        (
            "9223372036854775808i",
            "unable to parse integer 9223372036854775808: strconv.ParseInt: parsing \"9223372036854775808\": value out of range",
        ),
    ] {
        assert_eq!(line_error(&format!("m v={bad} 1")), reason, "{bad}");
    }
}

#[test]
fn booleans() {
    for ok in [
        "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE",
    ] {
        assert!(accepted(&format!("m v={ok}")), "{ok}");
    }
    for bad in ["tRUE", "tru", "truee", "yes", "fals", "FALSe"] {
        assert_eq!(
            line_error(&format!("m v={bad}")),
            "invalid boolean",
            "{bad}"
        );
    }
}

#[test]
fn strings_may_hold_newlines_and_escaped_quotes() {
    let body = b"m s=\"a\nb\\\"c\" 1\nm v=2 2\n";
    let v = validate(body, Precision::Nanoseconds, NOW);
    assert_eq!(v.points(), 2);
    assert!(v.rejected().is_empty());
    assert!(v.is_unchanged());
}

#[test]
fn comments_blank_and_whitespace_lines_are_skipped() {
    let v = validate(
        b"# hello\n\n   \n\t# indented\n m v=1 1\n",
        Precision::Nanoseconds,
        NOW,
    );
    assert_eq!(v.points(), 1);
    assert!(v.rejected().is_empty());
}

#[test]
fn missing_timestamps_are_stamped_in_the_request_precision() {
    let v = validate(b"a v=1\nb v=2 7\nc v=3", Precision::Milliseconds, NOW);
    assert_eq!(
        v.output(),
        b"a v=1 1700000000123\nb v=2 7\nc v=3 1700000000123\n"
    );
    let v = validate(b"a v=1", Precision::Nanoseconds, NOW);
    assert_eq!(v.output(), b"a v=1 1700000000123456789\n");
}

#[test]
fn refused_lines_are_left_out_of_the_output() {
    let v = validate(
        b"a v=1 1\nbad\nc v=3 3\nd,time=1 v=1 4\n",
        Precision::Nanoseconds,
        NOW,
    );
    assert_eq!(v.output(), b"a v=1 1\nc v=3 3\n");
    assert_eq!(v.points(), 2);
    assert_eq!(v.dropped(), 1);
}

#[test]
fn timestamp_range_depends_on_precision() {
    let v = validate(b"m v=1 9223372036", Precision::Seconds, NOW);
    assert_eq!(v.points(), 1);
    let v = validate(b"m v=1 9223372037", Precision::Seconds, NOW);
    assert_eq!(
        v.rejected()[0].reason().to_string(),
        "time outside range -9223372036854775806 - 9223372036854775806"
    );
    assert!(accepted("m v=1 -9223372036854775806"));
    assert!(!accepted("m v=1 -9223372036854775807"));
}

#[test]
fn max_key_length() {
    let long = "k".repeat(65_530);
    assert_eq!(
        line_error(&format!("m{long} value=1")),
        "max key length exceeded: 65540 > 65535"
    );
}

#[test]
fn unsorted_tags_are_valid() {
    assert!(accepted("cpu,z=1,a=2 v=1 1"));
    assert!(accepted("cpu,b=1,a=2,c=3 v=1 1"));
}

#[test]
fn lines_that_crash_influxdb_are_refused_and_never_forwarded() {
    let tags = |n: usize| (0..n).map(|i| format!(",t{i:03}=v")).collect::<String>();
    for n in [100, 200, 400] {
        let body = format!("cpu{} v=1 1\ncpu v=2 2", tags(n));
        let v = validate(body.as_bytes(), Precision::Nanoseconds, NOW);
        assert_eq!(v.points(), 1, "{n} tags");
        assert_eq!(v.output(), b"cpu v=2 2\n");
        assert!(
            matches!(v.rejected()[0].reason(), Reason::Parse(ParseError::CrashingTagCount(m)) if *m == n)
        );
    }
    for n in [99, 101, 199, 300] {
        assert!(accepted(&format!("cpu{} v=1 1", tags(n))), "{n} tags");
    }
    // Found by the oracle: influxd 1.6.7 dies on this line.
    assert_eq!(
        line_error("cpu a\"-,z=\"\\==\",t=\""),
        "a string field value of a single '\"' crashes InfluxDB 1.6; write \"\\\"\""
    );
}

#[test]
fn a_line_running_past_a_line_break_is_stamped_only_where_the_stamp_is_read() {
    // A leading space makes InfluxDB's line splitter take the quote in the measurement for an
    // open string, so the line runs on past the `\n`: appended digits would not be read as the
    // timestamp, and every backend would stamp the point with its own clock.
    let body = b" /=m=\"cpwe u\xf1erce=332 \n\n";
    let v = validate(body, Precision::Microseconds, NOW);
    assert_eq!(v.points(), 0);
    assert_eq!(
        v.rejected()[0].reason(),
        &Reason::Parse(ParseError::UnstampableAcrossLines)
    );
    assert!(
        v.output().is_empty(),
        "{:?}",
        String::from_utf8_lossy(v.output())
    );
    // A string value holding a line break is stamped after it, and the stamp is read back.
    let v = validate(b"m s=\"a\nb\"\n", Precision::Nanoseconds, NOW);
    assert_eq!(v.points(), 1);
    assert_eq!(v.output(), b"m s=\"a\nb\" 1700000000123456789\n");
    let again = validate(v.output(), Precision::Nanoseconds, NOW + 1);
    assert!(again.is_unchanged());
    assert_eq!(again.points(), 1);
}

#[test]
fn a_line_ending_in_a_backslash_cannot_be_stamped() {
    // (A backslash before a newline would join the lines, so the line is last.)
    let v = validate(b"c v=1\nb b=\"x\"\\", Precision::Nanoseconds, NOW);
    assert_eq!(v.points(), 1);
    assert_eq!(v.output(), b"c v=1 1700000000123456789\n");
    assert_eq!(
        v.rejected()[0].reason(),
        &Reason::Parse(ParseError::Unstampable)
    );
    // With a timestamp the same value is fine: the backslash is no longer last.
    assert!(accepted("b b=\"x\"\\ 5"));
}

#[test]
fn split_point_keeps_lines_whole() {
    assert_eq!(split_point(b"a v=1 1\n"), None);
    assert_eq!(split_point(b"a v=1 1\nb v=2 2\n"), Some(8));
    // The newline inside the string does not end the line.
    let body = b"a s=\"x\ny\" 1\nb v=2 2\nc v=3 3\n";
    assert_eq!(split_point(body), Some(20));
    // Here the middle falls inside the string: the split is at the end of its line.
    let body = b"a s=\"xxxxxxxxxx\nyyyyyyyyyy\" 1\nb v=2 2\n";
    assert_eq!(split_point(body), Some(30));
}

#[test]
fn lines_split_as_the_scanner_does_and_give_the_body_back() {
    let body: &[u8] = b"a s=\"x\ny\" 1\n\n# c\nb\\ c,t=\\, v=2 2\nc v=3 3";
    let got: Vec<&[u8]> = lines(body).collect();
    assert_eq!(
        got,
        vec![
            &b"a s=\"x\ny\" 1\n"[..],
            b"\n",
            b"# c\n",
            b"b\\ c,t=\\, v=2 2\n",
            b"c v=3 3"
        ]
    );
    assert_eq!(got.concat(), body);
    assert_eq!(lines(b"").count(), 0);
    // Lines longer than the index window and many short ones.
    let long = format!("m s=\"{}\" 1\n", "x".repeat(200_000));
    let mut body = long.clone().into_bytes();
    for i in 0..10_000 {
        body.extend_from_slice(format!("n v={i} {i}\n").as_bytes());
    }
    body.extend_from_slice(long.as_bytes());
    let got: Vec<&[u8]> = lines(&body).collect();
    assert_eq!(got.len(), 10_002);
    assert_eq!(got[0], long.as_bytes());
    assert_eq!(got[10_001], long.as_bytes());
    assert_eq!(got.concat(), body);
    // The same ends as the reference scanner.
    let ends: Vec<usize> = lines(&body)
        .scan(0, |at, l| {
            *at += l.len();
            Some(*at - 1)
        })
        .collect();
    assert_eq!(ends, scanned_line_ends(&body));
}

#[test]
fn values_the_storage_engine_cannot_read_are_refused() {
    // Found by the oracle: influxd 1.6.7 parses these, then its engine answers 500 for the whole
    // request. The field walker reads the key as `\\="` and the value as `t"` (or `1"`).
    for (line, value) in [("a \\\\=\"=t\"", "t\""), ("a \\\\=\"=1\"", "1\"")] {
        assert_eq!(
            line_error(line),
            format!(
                "InfluxDB 1.6 parses this line but its storage engine cannot read the field value \
                 '{value}' and fails the whole request; check the escaping"
            ),
            "{line}"
        );
    }
    // A `time` tag drops the point before the engine reads any value, as in InfluxDB.
    assert_eq!(
        error_of("t,time=k \\\\=\"=\"").as_deref(),
        Some(
            "partial write: invalid tag key: input tag \"time\" on measurement \"t\" is invalid dropped=1"
        )
    );
}

#[test]
fn complete_lines_stops_before_a_line_still_arriving() {
    assert_eq!(complete_lines(b""), 0);
    assert_eq!(complete_lines(b"a v=1 1"), 0);
    assert_eq!(complete_lines(b"a v=1 1\n"), 8);
    assert_eq!(complete_lines(b"a v=1 1\nb v=2"), 8);
    assert_eq!(complete_lines(b"a v=1 1\nb v=2 2\n"), 16);
    assert_eq!(complete_lines(b"\n\n"), 2);
    // A newline inside a string value does not end the line.
    assert_eq!(complete_lines(b"a s=\"x\ny"), 0);
    assert_eq!(complete_lines(b"a v=1 1\nb s=\"x\ny"), 8);
    assert_eq!(complete_lines(b"a s=\"x\ny\" 1\n"), 12);
    // A final newline after an escaping backslash may still become an escaped character.
    assert_eq!(complete_lines(b"a v=1 1\nb,t=x\\\n"), 8);
    assert_eq!(complete_lines(b"a v=1 1\nb,t=x\\\nc v=1\n"), 21);
    // After an escaped backslash, it ends the line whatever follows.
    assert_eq!(complete_lines(b"b,t=x\\\\\n"), 8);
    assert_eq!(complete_lines(b"b,t=x\\\\\\\n"), 0);
}

/// Line ends as the scanner finds them in `buf`.
fn scanned_line_ends(buf: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let end = exact::scan_line(buf, pos);
        if end < buf.len() {
            ends.push(end);
        }
        pos = end + 1;
    }
    ends
}

#[test]
fn complete_lines_are_lines_whatever_follows() {
    // Every body of up to 5 bytes over an alphabet of the bytes that matter, and extensions:
    // the complete prefix keeps the same line ends once more data arrives, and a body the
    // extensions cannot change is complete up to its last line end.
    const ALPHABET: &[u8] = b"a =,\"\\\n";
    let extensions: [&[u8]; 6] = [b"x", b"\n", b"\"", b"\\", b"\"\n", b" b=\"\nc\n"];
    let mut body = Vec::new();
    for len in 0..=5u32 {
        for mut code in 0..ALPHABET.len().pow(len) {
            body.clear();
            for _ in 0..len {
                body.push(ALPHABET[code % ALPHABET.len()]);
                code /= ALPHABET.len();
            }
            let n = complete_lines(&body);
            assert!(n == 0 || body[n - 1] == b'\n', "{body:?}");
            let prefix_ends: Vec<usize> = scanned_line_ends(&body)
                .into_iter()
                .filter(|&e| e < n)
                .collect();
            if n > 0 {
                assert_eq!(prefix_ends.last(), Some(&(n - 1)), "{body:?}");
            }
            let mut stable = true;
            for ext in extensions {
                let mut longer = body.clone();
                longer.extend_from_slice(ext);
                let ends = scanned_line_ends(&longer);
                let within: Vec<usize> = ends.iter().copied().filter(|&e| e < n).collect();
                assert_eq!(within, prefix_ends, "{body:?} + {ext:?}");
                assert!(complete_lines(&longer) >= n, "{body:?} + {ext:?}");
                let all: Vec<usize> = ends.into_iter().filter(|&e| e < body.len()).collect();
                stable &= all == scanned_line_ends(&body);
            }
            if stable && let Some(&last) = scanned_line_ends(&body).last() {
                assert_eq!(n, last + 1, "{body:?}: every extension keeps its line ends");
            }
        }
    }
}

#[test]
fn a_stream_stamps_its_lines_one_unit_apart_in_order() {
    let body = b"m v=1\nm v=2 5\n# note\nm v=3\nm v=\nm v=4\n";
    let v = crate::validate_spaced(body, Precision::Nanoseconds, 1_000);
    assert_eq!(v.points(), 4);
    assert_eq!(
        v.output(),
        b"m v=1 1000\nm v=2 5\n# note\nm v=3 1001\nm v=4 1002\n"
    );
    // Coarser precisions step by their own unit; a request's lines all get the same time.
    let v = crate::validate_spaced(b"m v=1\nm v=2\n", Precision::Seconds, 7_000_000_000);
    assert_eq!(v.output(), b"m v=1 7\nm v=2 8\n");
    let v = crate::validate(b"m v=1\nm v=2\n", Precision::Seconds, 7_000_000_000);
    assert_eq!(v.output(), b"m v=1 7\nm v=2 7\n");
}
