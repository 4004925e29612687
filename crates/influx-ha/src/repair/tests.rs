use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::influxql::{parse_answer, quote_string, series_condition};
use super::rebuild::{FieldType, RebuildError, SeriesWriter};
use super::timespec::{format_span, format_time, parse_time};
use super::verify::series_key;

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn types(pairs: &[(&str, FieldType)]) -> BTreeMap<String, FieldType> {
    pairs.iter().map(|(k, t)| ((*k).to_owned(), *t)).collect()
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn rebuild(
    measurement: &str,
    tags: &BTreeMap<String, String>,
    cols: &[&str],
    types: &BTreeMap<String, FieldType>,
    row: serde_json::Value,
) -> Result<String, RebuildError> {
    let w = SeriesWriter::new(measurement, tags, &columns(cols), types)?;
    let mut out = String::new();
    let row = row.as_array().expect("row is an array").clone();
    w.push_row(&row, &mut out)?;
    Ok(out)
}

/// The line is accepted by the 1.6 parser as exactly one point, unchanged.
fn assert_valid(line: &str) {
    let v = lineproto::validate(line.as_bytes(), lineproto::Precision::Nanoseconds, 0);
    assert_eq!(v.points(), 1, "{line:?}: {:?}", v.influx_error());
    assert!(v.rejected().is_empty(), "{line:?}");
    assert!(v.is_unchanged(), "{line:?}");
}

#[test]
fn field_types_survive_the_json_round_trip() {
    let line = rebuild(
        "cpu",
        &tags(&[("host", "a"), ("region", "")]),
        &["time", "b", "f", "i", "s", "whole"],
        &types(&[
            ("b", FieldType::Boolean),
            ("f", FieldType::Float),
            ("i", FieldType::Integer),
            ("s", FieldType::String),
            ("whole", FieldType::Float),
        ]),
        json!([
            1_700_000_000_000_000_123_i64,
            true,
            1.5,
            -9_223_372_036_854_775_807_i64,
            "x",
            2
        ]),
    )
    .expect("rebuilds");
    // The float 2.0 comes back from JSON as `2`: it must not become an integer field.
    assert_eq!(
        line,
        "cpu,host=a b=true,f=1.5,i=-9223372036854775807i,s=\"x\",whole=2.0 1700000000000000123\n"
    );
    assert_valid(&line);
}

#[test]
fn names_and_strings_are_escaped_as_influxdb_does() {
    let line = rebuild(
        "disk use,x",
        &tags(&[("mount point", "/a,b=c"), ("k=v", "x y")]),
        &["time", "free bytes", "note"],
        &types(&[
            ("free bytes", FieldType::Integer),
            ("note", FieldType::String),
        ]),
        json!([-5, 7, "say \"hi\" \\ bye\nnext"]),
    )
    .expect("rebuilds");
    assert_eq!(
        line,
        "disk\\ use\\,x,k\\=v=x\\ y,mount\\ point=/a\\,b\\=c free\\ bytes=7i,note=\"say \\\"hi\\\" \\\\ bye\nnext\" -5\n"
    );
    assert_valid(&line);
}

#[test]
fn rows_without_fields_are_skipped_and_bad_values_named() {
    let t = types(&[("v", FieldType::Integer)]);
    let w = SeriesWriter::new("m", &tags(&[]), &columns(&["time", "v"]), &t).expect("writer");
    let mut out = String::new();
    assert_eq!(w.push_row(&[json!(1), json!(null)], &mut out), Ok(false));
    assert!(out.is_empty());
    assert!(matches!(
        w.push_row(&[json!(1), json!(1.5)], &mut out),
        Err(RebuildError::Value { .. })
    ));
    assert_eq!(
        w.push_row(&[json!("x"), json!(1)], &mut out),
        Err(RebuildError::Time)
    );
    assert_eq!(
        SeriesWriter::new("m", &tags(&[]), &columns(&["time", "w"]), &t).err(),
        Some(RebuildError::UnknownField("w".to_owned()))
    );
}

#[test]
fn extreme_floats_round_trip() {
    for f in [
        1e300,
        -2.5e-300,
        1e21,
        0.1,
        f64::MAX,
        f64::MIN_POSITIVE,
        0.0,
    ] {
        let line = rebuild(
            "m",
            &tags(&[]),
            &["time", "f"],
            &types(&[("f", FieldType::Float)]),
            json!([0, f]),
        )
        .expect("rebuilds");
        assert_valid(&line);
        let text = line["m f=".len()..line.rfind(' ').expect("time")].to_owned();
        assert_eq!(text.parse::<f64>().expect("a float"), f, "{line}");
    }
}

fn name() -> impl Strategy<Value = String> {
    // Printable text with the characters line protocol escapes; no backslash (1.6 cannot
    // round-trip a name ending in one) and no leading `#` (a comment line).
    "[a-zA-Z0-9_ ,=\"'.:/é-]{1,12}".prop_filter("not a comment", |s| !s.starts_with('#'))
}

proptest! {
    #[test]
    fn rebuilt_lines_are_valid_line_protocol(
        measurement in name(),
        tag_pairs in proptest::collection::btree_map(name(), name(), 0..4),
        int in any::<i64>(),
        float in any::<f64>().prop_filter("finite", |f| f.is_finite()),
        text in "\\PC{0,20}",
        flag in any::<bool>(),
        time in any::<i64>().prop_map(|t| t.clamp(i64::MIN + 2, i64::MAX - 1)),
    ) {
        let t = types(&[
            ("i", FieldType::Integer),
            ("f", FieldType::Float),
            ("s", FieldType::String),
            ("b", FieldType::Boolean),
        ]);
        let tag_pairs: BTreeMap<String, String> = tag_pairs
            .into_iter()
            .filter(|(k, _)| k != "time" && !k.starts_with(' '))
            .collect();
        let line = rebuild(
            &measurement.replace(' ', "_"),
            &tag_pairs,
            &["time", "i", "f", "s", "b"],
            &t,
            json!([time, int, float, text, flag]),
        )
        .expect("rebuilds");
        let v = lineproto::validate(line.as_bytes(), lineproto::Precision::Nanoseconds, 0);
        prop_assert_eq!(v.points(), 1, "{:?}: {:?}", line, v.influx_error());
        prop_assert!(v.rejected().is_empty());
    }
}

#[test]
fn an_answer_cut_at_the_row_limit_is_an_error() {
    // InfluxDB marks the series it cut (and, past its own first chunk, the result).
    for cut in [
        &br#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","count"],"values":[[0,1]],"partial":true}]}]}"#[..],
        &br#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","count"],"values":[[0,1]]}],"partial":true}]}"#[..],
    ] {
        let err = parse_answer(cut).expect_err("cut short");
        assert!(err.contains("max-row-limit"), "{err}");
    }
    let whole = br#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","count"],"values":[[0,1]]}]}]}"#;
    assert_eq!(parse_answer(whole).expect("whole").len(), 1);
}

#[test]
fn a_chunked_answer_is_put_back_together() {
    // What influxd 1.6.7 (max-row-limit = 3, which chunked answers ignore) sent for
    // `SELECT * FROM m GROUP BY *` with chunk_size=2: a piece per series or part of one, the
    // series marked partial where it goes on, the result in all pieces but the last.
    let pieces = concat!(
        r#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"k":""},"columns":["time","v"],"values":[[1,1]]}],"partial":true}]}"#,
        "\n",
        r#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"k":"a"},"columns":["time","v"],"values":[[1,1],[2,2]],"partial":true}],"partial":true}]}"#,
        "\n",
        r#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"k":"a"},"columns":["time","v"],"values":[[3,3]]}],"partial":true}]}"#,
        "\n",
        r#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"k":"b"},"columns":["time","v"],"values":[[1,4],[2,5]]}],"partial":true}]}"#,
        "\n",
        r#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"k":"c"},"columns":["time","v"],"values":[[1,6]]}]}]}"#,
        "\n",
    );
    let series = parse_answer(pieces.as_bytes()).expect("whole");
    let rows: Vec<(&str, usize)> = series
        .iter()
        .map(|s| (s.tags["k"].as_str(), s.values.len()))
        .collect();
    assert_eq!(rows, [("", 1), ("a", 3), ("b", 2), ("c", 1)]);
    assert!(series.iter().all(|s| !s.partial));

    // An empty body is no answer at all.
    for empty in ["", " \n"] {
        assert!(parse_answer(empty.as_bytes()).is_err(), "{empty:?}");
    }

    // Ending where InfluxDB said more was to come: an error, not a shorter answer.
    let cut = pieces.rsplit_once(r#"{"results""#).expect("pieces").0;
    let err = parse_answer(cut.as_bytes()).expect_err("cut");
    assert!(err.contains("more was to come"), "{err}");

    // An error in a later piece (a limit InfluxDB hit while streaming) is the answer's error.
    let failed = format!(
        "{}\n{}\n",
        pieces.lines().next().expect("a piece"),
        r#"{"results":[{"statement_id":0,"error":"max-select-point limit exceeded: (10/5)"}]}"#
    );
    let err = parse_answer(failed.as_bytes()).expect_err("error");
    assert!(err.contains("max-select-point"), "{err}");
}

#[test]
fn series_conditions_pin_one_series() {
    assert_eq!(
        series_condition(&tags(&[("host", "a'b\\"), ("region", "")])),
        Some("\"host\"::tag = 'a\\'b\\\\' AND \"region\"::tag = ''".to_owned())
    );
    assert_eq!(series_condition(&tags(&[])), None);
    assert_eq!(quote_string("it's"), "'it\\'s'");
    // A line feed, which line protocol takes in a tag value, escaped as InfluxQL reads it.
    assert_eq!(quote_string("x\\\nz"), "'x\\\\\\nz'");
    assert_eq!(
        crate::write::schema::quote_ident("a\nb\"c"),
        "\"a\\nb\\\"c\""
    );
    assert_eq!(
        series_key("m", &tags(&[("b", "2"), ("a", "1"), ("c", "")])),
        "m,a=1,b=2"
    );
    assert_ne!(
        series_key("m", &tags(&[("a", "1,b=2")])),
        series_key("m", &tags(&[("a", "1"), ("b", "2")]))
    );
    assert_eq!(series_key("m x", &tags(&[("k", "v w")])), "m\\ x,k=v\\ w");
}

#[test]
fn answers_and_their_errors() {
    let ok = br#"{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"host":""},"columns":["time","count_v"],"values":[[0,3]]}]}]}"#;
    let series = parse_answer(ok).expect("parses");
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].tags, tags(&[("host", "")]));
    assert_eq!(series[0].values[0][1], json!(3));
    let empty = br#"{"results":[{"statement_id":0}]}"#;
    assert_eq!(parse_answer(empty), Ok(Vec::new()));
    let bad = br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#;
    assert_eq!(parse_answer(bad), Err("database not found: x".to_owned()));
    let top = br#"{"error":"error parsing query: found EOF"}"#;
    assert_eq!(
        parse_answer(top),
        Err("error parsing query: found EOF".to_owned())
    );
    assert!(parse_answer(b"<html>").is_err());
}

#[test]
fn times_on_the_command_line_and_in_reports() {
    let now = 1_700_000_000_000_000_000;
    assert_eq!(parse_time("2023-11-14T22:13:20Z", 0), Ok(now));
    assert_eq!(
        parse_time("2023-11-14T22:13:20.5Z", 0),
        Ok(now + 500_000_000)
    );
    assert_eq!(parse_time("1970-01-02", 0), Ok(86_400_000_000_000));
    assert_eq!(parse_time("1h", now), Ok(now - 3_600_000_000_000));
    assert_eq!(parse_time("-5", now), Ok(-5));
    assert!(parse_time("yesterday", now).is_err());
    assert!(parse_time("2023-13-01", now).is_err());
    assert_eq!(format_time(now), "2023-11-14T22:13:20Z");
    assert_eq!(format_time(-1), "1969-12-31T23:59:59.999999999Z");
    assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_span(604_800_000_000_000), "7d");
    assert_eq!(format_span(37_800_000_000_000), "630m");
    assert_eq!(format_span(1_500_000_000), "1500ms");
}

#[tokio::test]
async fn a_stopped_nodes_flag_stays_while_it_holds_writes_queued_for_another_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = testkit::free_port().expect("free port");
    let text = format!(
        "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:{port}\"\n[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[backend]]\nname = \"b\"\nurl = \"http://127.0.0.1:2\"\n",
        dir.path().display().to_string()
    );
    let config = crate::config::Config::from_toml(&text, "test").expect("valid config");
    let b = &config.backends[1];
    let flag = config
        .queue_dir(b)
        .join(crate::write::replica::DIVERGED_FILE);
    std::fs::create_dir_all(config.queue_dir(b)).expect("dir");
    std::fs::write(&flag, "its queue overflowed\n").expect("flag");
    // The stopped node still holds a write for a, which neither backend has yet.
    let queue_a = config.queue_dir(&config.backends[0]).join("queue");
    let queue = handoff::Queue::open(&queue_a, handoff::Options::default()).expect("queue");
    let record = handoff::Record::Write {
        db: "db",
        rp: "",
        precision: "n",
        payload: b"m v=1 1\n",
    };
    queue.append(&record).await.expect("appended");
    queue.close().expect("closed");

    let since = super::flag::VerifyStart::now(&config).await;
    let refused = super::flag::clear(&config, b, &since).await;
    let why = refused.expect_err("writes are queued for a").to_string();
    assert!(why.contains("1 records queued for a"), "{why}");
    assert!(flag.exists());

    // Once they are delivered (here: gone), the verify's word holds and the flag goes.
    let queue = handoff::Queue::open(&queue_a, handoff::Options::default()).expect("queue");
    queue.purge().expect("purged");
    queue.close().expect("closed");
    let done = super::flag::clear(&config, b, &since)
        .await
        .expect("cleared");
    assert!(done.contains("removed"), "{done}");
    assert!(!flag.exists());
}
