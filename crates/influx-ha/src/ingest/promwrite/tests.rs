use prost::Message;

use super::*;

fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(value, timestamp)| Sample { value, timestamp })
            .collect(),
    }
}

/// Limits of `n` bytes for both the decoded request and its line protocol.
fn limits(n: usize) -> Limits {
    Limits {
        max_decoded: n,
        max_lines: n,
    }
}

fn body(req: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("compress")
}

#[test]
fn series_become_points_as_1_6_7_writes_them() {
    let req = WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "up"), ("job", "node"), ("instance", "a:9100")],
                &[
                    (1.0, 1_700_000_000_123),
                    (f64::NAN, 1_700_000_001_000),
                    (0.5, 1),
                ],
            ),
            series(&[("zone", "x y"), ("empty", "")], &[(-2.0, 5)]),
        ],
    };
    let decoded = decode(&body(&req), limits(1 << 20)).expect("decodes");
    // NaN is not equal to itself: compare the encodings.
    assert_eq!(decoded.encode_to_vec(), req.encode_to_vec());
    let c = convert(&decoded);
    assert_eq!(
        String::from_utf8(c.lines).expect("utf-8"),
        "up,__name__=up,instance=a:9100,job=node value=1.0 1700000000123000000\n\
         up,__name__=up,instance=a:9100,job=node value=0.5 1000000\n\
         prom_metric_not_specified,zone=x\\ y value=-2.0 5000000\n"
    );
    assert_eq!((c.points, c.nan, c.refused), (3, 1, 0));
}

#[test]
fn refused_samples_leave_the_others() {
    let req = WriteRequest {
        timeseries: vec![
            series(&[("__name__", "a")], &[(f64::INFINITY, 1), (1.0, 2)]),
            series(&[("__name__", "b"), ("t", "x\ny")], &[(1.0, 3)]),
            series(&[("__name__", "c")], &[(1.0, i64::MAX)]),
        ],
    };
    let c = convert(&req);
    assert_eq!(
        String::from_utf8(c.lines).expect("utf-8"),
        "a,__name__=a value=1.0 2000000\n"
    );
    assert_eq!((c.points, c.refused), (1, 3));
    assert_eq!(
        c.first_error.as_deref(),
        Some("+/-Inf is an unsupported value for field value")
    );
}

#[test]
fn a_label_that_is_not_utf8_refuses_its_series_alone() {
    let mut bad = series(
        &[("__name__", "temp")],
        &[(1.0, 1), (f64::NAN, 2), (2.0, 3)],
    );
    bad.labels.push(Label {
        name: b"room".to_vec(),
        value: b"k\xfcche".to_vec(),
    });
    let req = WriteRequest {
        timeseries: vec![bad, series(&[("__name__", "up")], &[(1.0, 4)])],
    };
    // Decoded, not refused as a whole.
    let decoded = decode(&body(&req), limits(1 << 20)).expect("decodes");
    let c = convert(&decoded);
    assert_eq!(
        String::from_utf8(c.lines).expect("utf-8"),
        "up,__name__=up value=1.0 4000000\n"
    );
    assert_eq!((c.points, c.refused, c.nan), (1, 2, 1));
    assert_eq!(
        c.first_error.as_deref(),
        Some("label \"room\"=\"k\u{fffd}che\" is not UTF-8")
    );
}

#[test]
fn bad_bodies_are_named() {
    assert_eq!(
        decode(b"not snappy at all", limits(1 << 20)),
        Err(DecodeError::Snappy)
    );
    let big = WriteRequest {
        timeseries: vec![series(&[("__name__", &"x".repeat(5000))], &[(1.0, 1)])],
    };
    assert_eq!(
        decode(&body(&big), limits(1000)),
        Err(DecodeError::TooLarge)
    );
    let garbage = snap::raw::Encoder::new()
        .compress_vec(b"\xff\xff\xff")
        .expect("compress");
    assert!(matches!(
        decode(&garbage, limits(1 << 20)),
        Err(DecodeError::Proto(_))
    ));
    assert_eq!(
        decode(&body(&WriteRequest::default()), limits(10)),
        Ok(WriteRequest::default())
    );
}

#[test]
fn requests_that_expand_past_the_limits_are_refused_before_decoding() {
    // One long label repeated for every one of many samples: small on the wire, huge as lines.
    let many_samples: Vec<(f64, i64)> = (0..20_000).map(|i| (0.0, i)).collect();
    let long_label = "x".repeat(2000);
    let wide = WriteRequest {
        timeseries: vec![series(
            &[("__name__", "m"), ("a", &long_label)],
            &many_samples,
        )],
    };
    let wire = wide.encode_to_vec().len();
    assert!(wire < 1 << 20, "{wire}");
    assert_eq!(
        decode(&body(&wide), Limits::of(1 << 20)),
        Err(DecodeError::Expands)
    );
    // Empty labels: two bytes each on the wire, a struct of 48 decoded.
    let empty_labels: Vec<(&str, &str)> = vec![("", ""); 200_000];
    let many = WriteRequest {
        timeseries: vec![series(&empty_labels, &[])],
    };
    let limit = Limits {
        max_decoded: 1 << 20,
        max_lines: 1 << 20,
    };
    assert_eq!(decode(&body(&many), limit), Err(DecodeError::Expands));
    // Through the endpoint's entry: 413.
    assert_eq!(
        receive("db", &body(&wide), Limits::of(1 << 20), &mut |_| true).map(|_| ()),
        Err(RequestError::BodyTooLarge)
    );
}

#[test]
fn what_decoding_builds_is_charged_before_it_is_built() {
    let req = WriteRequest {
        timeseries: vec![series(&[("__name__", "cpu"), ("host", "a")], &[(1.5, 1)])],
    };
    let body = body(&req);
    let mut charged = Vec::new();
    let converted = receive("db", &body, Limits::of(1 << 20), &mut |n| {
        charged.push(n);
        true
    })
    .expect("converted");
    // The decoded bytes, then the structs and the lines.
    assert_eq!(charged.len(), 2);
    assert_eq!(
        charged[0],
        snap::raw::decompress_len(&body).expect("snappy")
    );
    assert!(charged[1] >= converted.lines.len());
    // No room: 503, and nothing more is built.
    let mut asked = 0;
    let refused = receive("db", &body, Limits::of(1 << 20), &mut |_| {
        asked += 1;
        false
    });
    assert!(matches!(refused, Err(RequestError::Overloaded(_))));
    assert_eq!(asked, 1);
}

#[test]
fn the_expansion_bounds_what_decoding_and_converting_build() {
    let req = WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "cpu"), ("host", "a"), ("q", "x y,z=\\\"")],
                &[(1.5, 1), (-2.0, 2)],
            ),
            series(&[("__name__", "mem")], &[(f64::MAX, 3)]),
            series(&[], &[(0.1, 4)]),
        ],
    };
    let e = expansion(&req.encode_to_vec()).expect("well formed");
    let c = convert(&req);
    assert!(e.lines >= c.lines.len(), "{e:?} < {}", c.lines.len());
    assert!(e.structs > 0);
    // A name of commas: escaped, and written as the measurement and as a tag.
    let commas = ",".repeat(3000);
    let samples: Vec<(f64, i64)> = (0..10).map(|i| (1.0, i)).collect();
    let req = WriteRequest {
        timeseries: vec![series(&[("__name__", commas.as_str())], &samples)],
    };
    let e = expansion(&req.encode_to_vec()).expect("well formed");
    let c = convert(&req);
    assert_eq!(c.points, 10);
    assert!(e.lines >= c.lines.len(), "{e:?} < {}", c.lines.len());
    assert_eq!(expansion(b"\x0a\x05ab"), None, "a length past the end");
    // Many empty labels, then a field prost cannot read: refused before prost builds them.
    let mut series = Vec::new();
    for _ in 0..100_000 {
        series.extend_from_slice(b"\x0a\x00");
    }
    let mut raw = vec![0x0a];
    let mut len = series.len();
    while len >= 0x80 {
        raw.push((len as u8) | 0x80);
        len >>= 7;
    }
    raw.push(len as u8);
    raw.extend_from_slice(&series);
    raw.push(0x0f);
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("compress");
    assert!(matches!(
        decode(&compressed, Limits::of(1 << 20)),
        Err(DecodeError::Proto(_))
    ));
    assert_eq!(decode(&body(&req), Limits::of(1 << 20)).map(|_| ()), Ok(()));
}
