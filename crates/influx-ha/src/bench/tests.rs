use super::series::{Shape, Workload};
use super::verify;
use super::*;

fn shape() -> Shape {
    Shape {
        hosts: 3,
        measurements: 12,
        fields: None,
        instances: 2,
        start_ns: DEFAULT_START_NS,
        interval_ns: 10_000_000_000,
    }
}

#[test]
fn the_stream_is_valid_line_protocol_and_deterministic() {
    let w = Workload::new(shape()).expect("valid shape");
    // cpu, disk, diskio, net and cpu_2 have 2 instances, the 7 others 1: 17 series per host.
    assert_eq!(w.cardinality(), 3 * 17);
    let mut a = Vec::new();
    w.write_points(0..500, &mut a);
    let mut b = Vec::new();
    w.write_points(0..500, &mut b);
    assert_eq!(a, b);
    let v = lineproto::validate(&a, lineproto::Precision::Nanoseconds, 0);
    assert!(v.rejected().is_empty(), "{:?}", v.rejected().first());
    assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 500);
    let text = String::from_utf8(a).expect("utf-8");
    let first = text.lines().next().expect("a line");
    assert!(
        first.starts_with(
            "cpu,cpu=cpu0,dc=dc0,env=prod,host=host-00000,rack=r00,region=eu-west-1 usage_user="
        ),
        "{first}"
    );
    assert!(first.ends_with(" 1767225600000000000"), "{first}");
    // Past ten inputs the names repeat with a suffix; point 51 is tick 1.
    assert!(text.contains("\ncpu_2,"), "{text}");
    assert!(
        text.lines()
            .nth(51)
            .expect("line")
            .ends_with(" 1767225610000000000")
    );
}

#[test]
fn fields_can_be_cut_or_extended() {
    let mut s = shape();
    s.fields = Some(12);
    let w = Workload::new(s).expect("valid");
    let mut buf = Vec::new();
    w.write_point(0, &mut buf);
    let line = String::from_utf8(buf).expect("utf-8");
    assert!(line.contains(",usage_nice="), "{line}");
    assert!(
        line.contains(",field_10=") && line.contains(",field_11="),
        "{line}"
    );
    let mut s = shape();
    s.fields = Some(1);
    let w = Workload::new(s).expect("valid");
    let mut buf = Vec::new();
    w.write_point(0, &mut buf);
    let line = String::from_utf8(buf).expect("utf-8");
    assert_eq!(line.matches('=').count(), 7, "6 tags and one field: {line}");
}

#[test]
fn bad_shapes_are_refused_with_the_flag_named() {
    let mut s = shape();
    s.hosts = 0;
    assert_eq!(
        Workload::new(s).expect_err("zero").to_string(),
        "--hosts must be at least 1"
    );
    let mut s = shape();
    s.start_ns = lineproto::MAX_NANO_TIME - 5;
    let w = Workload::new(s).expect("shape");
    assert!(w.check_range(1_000_000).is_err());
}

#[test]
fn expected_totals_match_the_points_written() {
    let w = Workload::new(shape()).expect("valid");
    let n = w.cardinality();
    let range = 2 * n..5 * n;
    let want = verify::expected(&w, range.clone());
    assert_eq!(want.len() as u64, n);
    // Sum the values back out of the generated text.
    let mut body = Vec::new();
    w.write_points(range, &mut body);
    let text = String::from_utf8(body).expect("utf-8");
    let line = text
        .lines()
        .find(|l| l.starts_with("mem,"))
        .expect("a mem line");
    let key = line.split(' ').next().expect("key");
    let mut used_sum = 0i128;
    let mut pct_sum = 0f64;
    let mut count = 0;
    for l in text.lines().filter(|l| l.split(' ').next() == Some(key)) {
        count += 1;
        for kv in l.split(' ').nth(1).expect("fields").split(',') {
            let (k, v) = kv.split_once('=').expect("k=v");
            match k {
                "used" => used_sum += v.trim_end_matches('i').parse::<i128>().expect("int"),
                "used_percent" => pct_sum += v.parse::<f64>().expect("float"),
                _ => {}
            }
        }
    }
    assert_eq!(count, 3);
    let t = &want[key];
    assert_eq!(t["used"].count, 3);
    assert_eq!(t["used"].int_sum, used_sum);
    assert_eq!(t["used_percent"].float_sum, pct_sum);
}

#[test]
fn verification_finds_every_kind_of_difference() {
    let mut s = shape();
    s.hosts = 1;
    s.measurements = 2;
    s.instances = 1;
    s.fields = Some(2);
    let w = Workload::new(s).expect("valid");
    let want = verify::expected(&w, 0..4);
    let cpu = "cpu,cpu=cpu0,dc=dc0,env=prod,host=host-00000,rack=r00,region=eu-west-1";
    let row = |name: &str, f: [&str; 2], t: &verify::Totals, key: &str, skew: i128| {
        let tot = &t[key];
        let sum = |f: &str| {
            let x = &tot[f];
            if x.integer {
                (x.int_sum + skew).to_string()
            } else {
                (x.float_sum + skew as f64).to_string()
            }
        };
        format!(
            r#"{{"name":"{name}","tags":{{"cpu":"{}","dc":"dc0","env":"prod","host":"host-00000","rack":"r00","region":"eu-west-1"}},"columns":["time","count_{a}","count_{b}","sum_{a}","sum_{b}"],"values":[[0,{},{},{},{}]]}}"#,
            if name == "cpu" { "cpu0" } else { "" },
            tot[f[0]].count,
            tot[f[1]].count,
            sum(f[0]),
            sum(f[1]),
            a = f[0],
            b = f[1],
        )
    };
    let mem = "mem,dc=dc0,env=prod,host=host-00000,rack=r00,region=eu-west-1";
    let good = format!(
        r#"{{"results":[{{"statement_id":0,"series":[{},{}]}}]}}"#,
        row("cpu", ["usage_user", "usage_system"], &want, cpu, 0),
        row("mem", ["total", "used"], &want, mem, 0)
    );
    let c = verify::parse_and_compare("u", &want, &good).expect("parses");
    assert!(c.exact, "{c:?}");
    assert_eq!(
        (c.points_expected, c.points_found, c.series_found),
        (4, 4, 2)
    );

    let off = format!(
        r#"{{"results":[{{"statement_id":0,"series":[{},{}]}}]}}"#,
        row("cpu", ["usage_user", "usage_system"], &want, cpu, 0),
        row("mem", ["total", "used"], &want, mem, 1)
    );
    let c = verify::parse_and_compare("u", &want, &off).expect("parses");
    assert!(!c.exact);
    assert!(c.differences[0].contains("field total: sum"), "{c:?}");

    let missing = format!(
        r#"{{"results":[{{"statement_id":0,"series":[{}]}}]}}"#,
        row("cpu", ["usage_user", "usage_system"], &want, cpu, 0)
    );
    let c = verify::parse_and_compare("u", &want, &missing).expect("parses");
    assert_eq!(c.differences, vec![format!("missing series {mem}")]);

    // A whole float sum comes back as a JSON integer.
    let mut whole = verify::Totals::new();
    whole.entry("m".to_owned()).or_default().insert(
        "f".to_owned(),
        verify::FieldTotal {
            count: 2,
            int_sum: 0,
            float_sum: 692.0,
            integer: false,
        },
    );
    let body = r#"{"results":[{"series":[{"name":"m","columns":["time","count_f","sum_f"],"values":[[0,2,692]]}]}]}"#;
    assert!(
        verify::parse_and_compare("u", &whole, body)
            .expect("parses")
            .exact
    );

    let empty = r#"{"results":[{"statement_id":0}]}"#;
    let c = verify::parse_and_compare("u", &want, empty).expect("parses");
    assert_eq!((c.exact, c.series_found), (false, 0));

    let err = r#"{"results":[{"statement_id":0,"error":"database not found: bench"}]}"#;
    assert_eq!(
        verify::parse_and_compare("u", &want, err).expect_err("error"),
        "database not found: bench"
    );
}

#[test]
fn datagrams_split_at_line_ends() {
    let w = Workload::new(shape()).expect("valid");
    let spec = load::PoolSpec {
        offset: 0,
        batch: 100,
        batches: 2,
        end: Some(150),
        gzip: false,
        datagram_bytes: 1000,
    };
    let pool = load::generate(&w, spec);
    assert_eq!(pool.len(), 2);
    assert_eq!(pool[1].points, 50);
    let mut joined = Vec::new();
    for d in &pool[0].datagrams {
        assert!(d.len() <= 1000 && d.ends_with(b"\n"), "{}", d.len());
        joined.extend_from_slice(d);
    }
    let mut direct = Vec::new();
    w.write_points(0..100, &mut direct);
    assert_eq!(joined, direct);
}

#[test]
fn report_text_names_figures_and_errors() {
    let mut tally = load::Tally::new();
    tally.requests = 10;
    tally.requests_ok = 9;
    tally.points_acked = 45_000;
    tally.raw_bytes = 12_000_000;
    tally.batches_failed = 1;
    tally.points_failed = 5000;
    tally.errors.insert("status 503".to_owned(), 1);
    tally
        .samples
        .insert("status 503".to_owned(), "{\"error\":\"busy\"}".to_owned());
    for us in [1000, 2000, 3000] {
        tally.latency.record(us).expect("in range");
    }
    let setup = report::Setup {
        target: "http://x/write?db=bench&precision=ns".to_owned(),
        protocol: "v1".to_owned(),
        concurrency: 4,
        batch_points: 5000,
        series: 2000,
        rate_limit: None,
        distinct_batches: 10,
    };
    let r = report::Report::new(setup, tally, 2.0, false);
    assert_eq!(r.points_per_s, 22_500.0);
    let text = r.text();
    for want in [
        "written    45,000 points in 2.00 s: 22,500 points/s, 5.0 requests/s, 6.0 MB/s",
        "p50 2.00 ms",
        "errors     status 503: 1 (0 retried; 1 batches, 5,000 points failed for good)",
        "status 503: {\"error\":\"busy\"}",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["errors"]["status 503"], 1);
    assert_eq!(json["latency_ms"]["p50"], 2.0);
}

#[test]
fn arguments_are_checked() {
    use clap::Parser;
    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        a: BenchArgs,
    }
    let t = T::try_parse_from([
        "t",
        "http://127.0.0.1:1",
        "-n",
        "10",
        "--verify",
        "http://a",
    ])
    .expect("valid");
    assert_eq!(t.a.points, Some(10));
    assert!(
        T::try_parse_from(["t", "http://x", "--verify", "http://a"]).is_err(),
        "needs --points"
    );
    assert!(T::try_parse_from(["t", "http://x", "-n", "1", "--duration", "1s"]).is_err());
    assert!(T::try_parse_from(["t", "http://x", "--interval", "10"]).is_err());
    assert!(parse_target("ftp://x").is_err());
    assert!(matches!(
        parse_target("udp://127.0.0.1:8089"),
        Ok(Target::Udp { .. })
    ));
    let args = T::try_parse_from(["t", "http://h:1/", "--api", "v2", "--rp", "week"])
        .expect("valid")
        .a;
    let Target::Http { base } = parse_target(&args.url).expect("http") else {
        panic!("http target");
    };
    assert_eq!(
        write_uri(&args, &base).expect("uri").to_string(),
        "http://h:1/api/v2/write?bucket=bench%2Fweek&precision=ns"
    );
}

fn bench_args(argv: &[&str]) -> BenchArgs {
    use clap::Parser;
    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        a: BenchArgs,
    }
    let mut all = vec!["t"];
    all.extend_from_slice(argv);
    T::try_parse_from(all).expect("valid arguments").a
}

#[tokio::test]
async fn verify_only_writes_nothing_to_the_backends() {
    let (addr, seen) = crate::test_http::answering_204().await;
    let url = format!("http://{addr}");
    let args = bench_args(&[
        "http://127.0.0.1:1",
        "-n",
        "1700",
        "--verify-only",
        "--verify",
        &url,
        "--verify-timeout",
        "1s",
    ]);
    // The stand-in answers the checks' queries with nothing: not exact, but asked.
    let report = run(args).await.expect("a report");
    assert!(!report.verified());
    let requests = seen.lock().expect("not poisoned").clone();
    assert!(!requests.is_empty(), "the backend was checked");
    for (line, body) in &requests {
        let text = format!("{line} {}", String::from_utf8_lossy(body));
        assert!(!text.contains("CREATE"), "{text}");
    }
}

#[tokio::test]
async fn a_rate_too_low_to_pace_is_refused() {
    let args = bench_args(&["http://127.0.0.1:1", "--rate", "1e-300", "--duration", "1s"]);
    match run(args).await {
        Err(BenchError::Usage(why)) => assert!(why.contains("--rate is too low"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// The chunked answer a backend holding exactly points `range` of `w` gives, as influxd 1.6
/// does for `SELECT * FROM /.*/ … GROUP BY *`: a piece per series, split in two where it has
/// more than one row (marked partial), every field name and tag key of the database in each
/// (null and "" where the series lacks them), whole floats written as integers. Each row's
/// cells come from `cell(series, index, field)`.
fn pieces(
    w: &Workload,
    range: std::ops::Range<u64>,
    cell: impl Fn(usize, u64, usize) -> serde_json::Value,
) -> Vec<String> {
    use std::collections::BTreeSet;
    let n = w.cardinality();
    let names: BTreeSet<&str> = w
        .series
        .iter()
        .flat_map(|s| s.fields.iter().map(|(f, _)| f.as_str()))
        .collect();
    let keys: BTreeSet<&str> = w
        .series
        .iter()
        .flat_map(|s| s.tags.iter().map(|(k, _)| k.as_str()))
        .collect();
    let mut columns = vec!["time"];
    columns.extend(names.iter());
    let mut out = Vec::new();
    for (s, series) in w.series.iter().enumerate() {
        let tags: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| {
                let v = series
                    .tags
                    .iter()
                    .find(|(t, _)| t == k)
                    .map_or("", |(_, v)| v);
                ((*k).to_owned(), serde_json::json!(v))
            })
            .collect();
        let rows: Vec<serde_json::Value> = range
            .clone()
            .filter(|i| i % n == s as u64)
            .map(|i| {
                let mut row = vec![serde_json::json!(w.timestamp(i))];
                row.extend(names.iter().map(|name| {
                    match series.fields.iter().position(|(f, _)| f == name) {
                        Some(f) => match cell(s, i, f) {
                            // Go writes 25.0 as 25.
                            v if v.as_f64().is_some_and(|x| x.fract() == 0.0) => {
                                serde_json::json!(v.as_f64().map_or(0, |x| x as i64))
                            }
                            v => v,
                        },
                        None => serde_json::Value::Null,
                    }
                }));
                serde_json::Value::Array(row)
            })
            .collect();
        let split = rows.len().div_ceil(2);
        for (part, last) in [(&rows[..split], false), (&rows[split..], true)] {
            if part.is_empty() {
                continue;
            }
            let mut series_json = serde_json::json!({
                "name": series.measurement, "tags": tags, "columns": columns, "values": part,
            });
            if !last {
                series_json["partial"] = serde_json::json!(true);
            }
            out.push(
                serde_json::json!({"results":[{"statement_id":0,"series":[series_json],"partial":true}]})
                    .to_string(),
            );
        }
    }
    out
}

fn truth(w: &Workload, s: usize, i: u64, f: usize) -> serde_json::Value {
    match series::value(
        s as u64,
        i / w.cardinality(),
        f as u64,
        w.series[s].fields[f].1,
    ) {
        series::Value::Int(v) => serde_json::json!(v),
        q @ series::Value::Quarter(_) => serde_json::json!(q.as_f64()),
    }
}

fn read_back(w: &Workload, range: std::ops::Range<u64>, lines: &[String]) -> readback::Readback {
    let mut check = readback::RowCheck::new(w, range);
    for line in lines {
        check.take_piece(line.as_bytes()).expect("readable");
    }
    check.finish().expect("an answer")
}

/// `lines[at]` with `change` applied to its rows.
fn edit_rows(
    lines: &[String],
    at: usize,
    change: impl FnOnce(&mut Vec<serde_json::Value>),
) -> Vec<String> {
    let mut piece: serde_json::Value = serde_json::from_str(&lines[at]).expect("json");
    change(
        piece["results"][0]["series"][0]["values"]
            .as_array_mut()
            .expect("rows"),
    );
    let mut out = lines.to_vec();
    out[at] = piece.to_string();
    out
}

#[test]
fn reading_back_finds_what_totals_cannot() {
    let mut s = shape();
    s.hosts = 2;
    s.measurements = 2;
    let w = Workload::new(s).expect("valid");
    let n = w.cardinality();
    let range = n..4 * n;
    let good = pieces(&w, range.clone(), |s, i, f| truth(&w, s, i, f));
    assert!(good.len() > w.series.len(), "series come in two pieces");
    assert!(good.iter().any(|p| p.contains(",null")), "{}", good[0]);
    let c = read_back(&w, range.clone(), &good);
    assert_eq!((c.rows, c.mismatched), (3 * n, 0), "{c:?}");

    // Two values swapped between two points of a series: counts and sums still match.
    let (i0, i1) = (n, 2 * n);
    let swapped = pieces(&w, range.clone(), |s, i, f| {
        let i = match (s, i, f) {
            (0, i, 0) if i == i0 => i1,
            (0, i, 0) if i == i1 => i0,
            _ => i,
        };
        truth(&w, s, i, f)
    });
    assert_ne!(
        truth(&w, 0, i0, 0),
        truth(&w, 0, i1, 0),
        "the test needs two values"
    );
    let c = read_back(&w, range.clone(), &swapped);
    assert_eq!(c.mismatched, 2, "{c:?}");
    assert!(c.differences[0].contains("expected"), "{c:?}");

    // A point moved by one nanosecond (pieces 0 and 1 hold series 0's first two rows and its
    // third).
    let moved = edit_rows(&good, 1, |rows| {
        let t = &mut rows[0][0];
        *t = serde_json::json!(t.as_i64().expect("time") + 1);
    });
    let c = read_back(&w, range.clone(), &moved);
    // The moved row is not a point written, and its series is one point short.
    assert_eq!(c.mismatched, 2, "{c:?}");
    assert!(c.differences[0].contains("was not written"), "{c:?}");
    assert!(
        c.differences[1].contains("2 points read back, expected 3"),
        "{c:?}"
    );

    // A row repeated in place of another: as many rows, each a point written.
    let repeated = edit_rows(&good, 0, |rows| {
        let first = rows[0].clone();
        rows[1] = first;
    });
    let c = read_back(&w, range.clone(), &repeated);
    assert!(
        c.differences[0].contains("out of order or repeated"),
        "{c:?}"
    );
    assert!(c.mismatched >= 1, "{c:?}");

    // A row shorter than the columns.
    let short = edit_rows(&good, 0, |rows| {
        rows[0].as_array_mut().expect("row").truncate(1);
    });
    let c = read_back(&w, range.clone(), &short);
    assert!(c.differences[0].contains("cells for"), "{c:?}");

    // A series missing, one unexpected, a field that should not be there.
    // Each series has 3 rows, in two pieces: the last two are the last series'.
    let mut lines = good.clone();
    lines.truncate(lines.len() - 2);
    lines.push(
        r#"{"results":[{"series":[{"name":"ghost","columns":["time","x"],"values":[[1,1]]}]}]}"#
            .to_owned(),
    );
    let lines = edit_rows(&lines, 0, |rows| {
        let cells = rows[0].as_array_mut().expect("row");
        // The first null column holds a value.
        let at = cells
            .iter()
            .position(serde_json::Value::is_null)
            .expect("a null cell");
        cells[at] = serde_json::json!(7);
    });
    let c = read_back(&w, range.clone(), &lines);
    let all = c.differences.join("\n");
    assert!(all.contains("unexpected field"), "{all}");
    assert!(all.contains("unexpected series ghost"), "{all}");
    assert!(all.contains("0 points read back, expected 3"), "{all}");

    // An answer InfluxDB gave instead of rows is an error, not a difference; so are an answer
    // that is not InfluxDB's and an empty one.
    let mut check = readback::RowCheck::new(&w, range.clone());
    let err = check
        .take_piece(
            br#"{"results":[{"statement_id":0,"error":"max-select-point limit exceeded"}]}"#,
        )
        .expect_err("an error");
    assert!(err.contains("max-select-point"), "{err}");
    let mut check = readback::RowCheck::new(&w, range.clone());
    let err = check
        .take_piece(br#"{"code":"unauthorized","message":"no"}"#)
        .expect_err("not InfluxDB's");
    assert!(err.contains("not InfluxDB's"), "{err}");
    let check = readback::RowCheck::new(&w, range);
    assert!(check.finish().is_err());
}
