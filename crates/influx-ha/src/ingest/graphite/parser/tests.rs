use super::*;

const NOW: i64 = 1_700_000_000_000_000_000;

fn parser(templates: &[&str], separator: &str, tags: &[&str]) -> GraphiteParser {
    let templates: Vec<String> = templates.iter().map(|s| (*s).to_owned()).collect();
    let tags: Vec<String> = tags.iter().map(|s| (*s).to_owned()).collect();
    GraphiteParser::new(
        &templates,
        separator,
        parse_default_tags(&tags).expect("tags"),
    )
    .expect("valid templates")
}

fn one(p: &GraphiteParser, line: &str) -> Result<String, LineError> {
    let mut out = Vec::new();
    match p.parse(line, NOW, &mut out)? {
        Parsed::Point => Ok(String::from_utf8(out).expect("utf-8").trim_end().to_owned()),
        Parsed::NaN => Ok("NaN".to_owned()),
    }
}

#[test]
fn without_templates_the_path_is_the_measurement() {
    let p = parser(&[], ".", &[]);
    assert_eq!(
        one(&p, "servers.localhost.cpu.load 1.5 1700000000"),
        Ok("servers.localhost.cpu.load value=1.5 1700000000000000000".into())
    );
    // The default template joins with "." whatever the separator.
    let p = parser(&[], "_", &[]);
    assert_eq!(one(&p, "a.b 2 10"), Ok("a.b value=2.0 10000000000".into()));
    assert_eq!(one(&p, "a.b 2"), Ok(format!("a.b value=2.0 {NOW}")));
    assert_eq!(one(&p, "a.b 2 -1"), Ok(format!("a.b value=2.0 {NOW}")));
}

#[test]
fn templates_give_measurement_tags_and_field() {
    let p = parser(
        &[
            "servers.* .host.measurement.field",
            "stats.* .host.measurement* region=eu",
            "app.*.* .service.resource.measurement.measurement env=prod,dc=1",
            "joined.* .host.host.measurement",
            "wild.* .measurement.field*",
        ],
        "_",
        &["dc=9", "zone=a"],
    );
    assert_eq!(
        one(&p, "servers.web01.cpu.idle 98 1700000000"),
        Ok("cpu,dc=9,host=web01,zone=a idle=98.0 1700000000000000000".into())
    );
    assert_eq!(
        one(&p, "stats.web02.mem.free.bytes 7 1700000000"),
        Ok("mem_free_bytes,dc=9,host=web02,region=eu,zone=a value=7.0 1700000000000000000".into())
    );
    assert_eq!(
        one(&p, "app.api.db.query.time 3 1700000000"),
        Ok(
            "query_time,dc=1,env=prod,resource=db,service=api,zone=a value=3.0 1700000000000000000"
                .into()
        )
    );
    assert_eq!(
        one(&p, "joined.a.b.m 1 1"),
        Ok("m,dc=9,host=a_b,zone=a value=1.0 1000000000".into())
    );
    assert_eq!(
        one(&p, "wild.net.rx.bytes 1 1"),
        Ok("net,dc=9,zone=a rx_bytes=1.0 1000000000".into())
    );
    // A path shorter than the template leaves the rest unset.
    assert_eq!(
        one(&p, "servers.web01 5 1"),
        Ok("servers.web01,dc=9,host=web01,zone=a value=5.0 1000000000".into())
    );
}

#[test]
fn the_most_specific_filter_wins() {
    let p = parser(
        &[
            "*.* measurement.a",
            "servers.* measurement.b",
            "servers.localhost measurement.c",
            "*.localhost measurement.d",
            "measurement.e",
        ],
        ".",
        &[],
    );
    assert_eq!(
        one(&p, "servers.localhost 1 1"),
        Ok("servers,c=localhost value=1.0 1000000000".into())
    );
    assert_eq!(
        one(&p, "servers.other 1 1"),
        Ok("servers,b=other value=1.0 1000000000".into())
    );
    assert_eq!(
        one(&p, "x.localhost 1 1"),
        Ok("x,d=localhost value=1.0 1000000000".into())
    );
    assert_eq!(one(&p, "x.y 1 1"), Ok("x,a=y value=1.0 1000000000".into()));
    // Deeper than any filter: the default template (no filter).
    assert_eq!(one(&p, "x 1 1"), Ok("x value=1.0 1000000000".into()));
}

#[test]
fn values_and_timestamps_as_1_6_reads_them() {
    let p = parser(&[], ".", &[]);
    assert_eq!(one(&p, "a nan 1"), Ok("NaN".into()));
    assert!(matches!(
        one(&p, "a +Inf 1"),
        Err(LineError::Unsupported { .. })
    ));
    assert!(matches!(one(&p, "a x 1"), Err(LineError::Value { .. })));
    assert!(matches!(one(&p, "a 1 x"), Err(LineError::Time { .. })));
    assert!(matches!(one(&p, "a 1 2 3"), Err(LineError::Fields(_))));
    assert!(matches!(one(&p, "a"), Err(LineError::Fields(_))));
    assert_eq!(one(&p, "a 1 9999999999"), Err(LineError::TimeRange));
    assert_eq!(one(&p, "a 1 -2200000000"), Err(LineError::TimeRange));
    assert_eq!(one(&p, "a 1 1.25"), Ok("a value=1.0 1250000000".into()));
    assert_eq!(
        one(&p, "a 1e3 -1.5"),
        Ok("a value=1000.0 -500000000".into())
    );
}

#[test]
fn bad_templates_are_refused_with_the_reason() {
    let bad = |t: &[&str]| {
        let t: Vec<String> = t.iter().map(|s| (*s).to_owned()).collect();
        GraphiteParser::new(&t, ".", Vec::new())
            .expect_err("invalid")
            .0
    };
    assert!(bad(&["host.cpu"]).contains("no measurement"));
    assert!(bad(&["a.* measurement", "a.* measurement.x"]).contains("duplicate filter"));
    assert!(bad(&["a..b measurement"]).contains("blank section"));
    assert!(bad(&["a.b* measurement"]).contains("wildcard"));
    assert!(bad(&["measurement x=1=2"]).contains("invalid template tags"));
    assert!(bad(&["a b c d"]).contains("invalid template format"));
    assert!(parse_default_tags(&["novalue".into()]).is_err());
}

#[test]
fn a_template_tag_given_twice_takes_its_last_value() {
    let p = parser(&["servers.* .host.measurement dc=a,dc=b"], ".", &[]);
    assert_eq!(
        one(&p, "servers.web01.cpu 1 1700000000"),
        Ok("cpu,dc=b,host=web01 value=1.0 1700000000000000000".into())
    );
}
