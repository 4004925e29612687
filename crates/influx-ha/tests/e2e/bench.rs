//! `influx-ha bench` against a real InfluxDB: the points it writes are the points `--verify`
//! expects, and a backend that differs by one value, one point or one series is caught.

use std::process::{Command, Output};

use testkit::Influxd;

use crate::relay::Relay;
use crate::support::{CONVERGE, serial};

/// Runs `influx-ha bench ARGS`.
pub fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run influx-ha bench")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// 2 hosts × (cpu, mem, disk) with 2 instances: 10 series.
const SHAPE: &[&str] = &[
    "--hosts",
    "2",
    "--measurements",
    "3",
    "--instances",
    "2",
    "--batch",
    "70",
    "-c",
    "3",
];

#[test]
fn bench_writes_exactly_what_verify_expects_and_catches_differences() {
    let _serial = serial();
    let influxd = Influxd::start();
    let url = influxd.url();
    let mut args = vec![url.as_str(), "--points", "1000", "--json", "--verify", &url];
    args.extend_from_slice(SHAPE);
    let out = bench(&args);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["points_acked"], 1000, "{report}");
    assert_eq!(report["series"], 10, "{report}");
    assert_eq!(report["requests_ok"], 15, "{report}");
    assert_eq!(report["verify"][0]["exact"], true, "{report}");
    assert_eq!(report["verify"][0]["points_found"], 1000, "{report}");
    assert_eq!(report["verify"][0]["rows_read"], 1000, "{report}");
    assert!(report["latency_ms"]["p99"].as_f64().expect("p99") > 0.0);
    assert_eq!(
        influxd
            .query("bench", "SELECT count(usage_user) FROM cpu")
            .trim_end(),
        r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["time","count"],"values":[[0,400]]}]}]}"#,
        "4 of the 10 series are cpu ones"
    );

    // --points writes each point once: a pool too small to hold them all is refused, not
    // cycled over.
    let mut small = vec![url.as_str(), "--points", "1000000", "--pool-mib", "1"];
    small.extend_from_slice(SHAPE);
    let out = bench(&small);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("raise --pool-mib"), "{}", text(&out));

    // A second run extends the set; together they verify as one range.
    let mut more = vec![url.as_str(), "--points", "500", "--offset", "1000"];
    more.extend_from_slice(SHAPE);
    let out = bench(&more);
    assert!(out.status.success(), "{}", text(&out));
    let verify_all = |extra: &[&str]| {
        let mut a = vec![
            url.as_str(),
            "--points",
            "1500",
            "--verify",
            &url,
            "--verify-only",
            "--verify-timeout",
            "1s",
        ];
        a.extend_from_slice(SHAPE);
        a.extend_from_slice(extra);
        bench(&a)
    };
    let out = verify_all(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exact, 1,500 points in 10 series"),
        "{}",
        text(&out)
    );

    // Two values of a series swapped between its first two points: counts and sums still
    // match, the points read back do not.
    let mem = "mem,dc=dc0,env=prod,host=host-00000,rack=r00,region=eu-west-1";
    let answer = influxd
        .query_params(&[
            ("db", "bench"),
            ("epoch", "ns"),
            (
                "q",
                "SELECT used FROM mem WHERE host = 'host-00000' ORDER BY time LIMIT 2",
            ),
        ])
        .expect("query");
    let answer: serde_json::Value = serde_json::from_str(&answer.text()).expect("JSON");
    let rows = &answer["results"][0]["series"][0]["values"];
    let (t0, v0) = (&rows[0][0], &rows[0][1]);
    let (t1, v1) = (&rows[1][0], &rows[1][1]);
    assert_ne!(v0, v1, "{answer}");
    let swap = format!("{mem} used={v1}i {t0}\n{mem} used={v0}i {t1}\n");
    let (status, body) = influxd.write("bench", "n", &swap);
    assert_eq!(status, 204, "{body}");
    let out = verify_all(&["--json"]);
    assert!(!out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let differences = report["verify"][0]["differences"].to_string();
    assert!(
        differences.contains(&format!("{mem} at {t0}: used={v1}, expected {v0}")),
        "{report}"
    );
    assert_eq!(report["verify"][0]["rows_read"], 1500, "{report}");
    let restore = format!("{mem} used={v0}i {t0}\n{mem} used={v1}i {t1}\n");
    let (status, body) = influxd.write("bench", "n", &restore);
    assert_eq!(status, 204, "{body}");
    assert!(verify_all(&[]).status.success());

    // One value changed.
    let (status, body) = influxd.write(
        "bench",
        "n",
        "mem,dc=dc0,env=prod,host=host-00000,rack=r00,region=eu-west-1 used=1i 1767225600000000000\n",
    );
    assert_eq!(status, 204, "{body}");
    let out = verify_all(&[]);
    assert!(!out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "mem,dc=dc0,env=prod,host=host-00000,rack=r00,region=eu-west-1 field used: sum "
        ),
        "{}",
        text(&out)
    );

    // One series too many inside the time range.
    let (status, body) = influxd.write("bench", "n", "other v=1 1767225600000000000\n");
    assert_eq!(status, 204, "{body}");
    let out = verify_all(&["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let differences = report["verify"][0]["differences"].to_string();
    assert!(differences.contains("unexpected series other"), "{report}");
    assert_eq!(report["verify"][0]["series_found"], 11, "{report}");
}

#[test]
fn bench_through_the_relay_reaches_both_backends() {
    let _serial = serial();
    let a = Influxd::start();
    let b = Influxd::start();
    let relay = Relay::start(&[&a, &b], "");
    let relay_url = relay.url();
    let (ua, ub) = (a.url(), b.url());
    let mut args = vec![
        relay_url.as_str(),
        "--points",
        "2000",
        "--api",
        "v2",
        "--gzip",
        "--verify",
        &ua,
        "--verify",
        &ub,
    ];
    args.extend_from_slice(SHAPE);
    let out = bench(&args);
    assert!(out.status.success(), "{}\n{}", text(&out), relay.log());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("exact, 2,000 points in 10 series").count(),
        2,
        "{}",
        text(&out)
    );
}

#[test]
fn verify_reads_with_the_credentials_and_in_the_retention_policy_written_to() {
    let _serial = serial();
    let influxd = Influxd::start_with_options(testkit::Options {
        admin: Some(("admin".to_owned(), "pw".to_owned())),
        ..testkit::Options::default()
    });
    influxd.create_database("bench");
    influxd.query(
        "bench",
        "CREATE RETENTION POLICY r1 ON bench DURATION INF REPLICATION 1",
    );
    let url = influxd.url();
    let mut args = vec![
        url.as_str(),
        "--points",
        "1000",
        "--rp",
        "r1",
        "--auth",
        "admin:pw",
        "--json",
        "--verify",
        &url,
    ];
    args.extend_from_slice(SHAPE);
    let out = bench(&args);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["verify"][0]["exact"], true, "{report}");
    assert_eq!(report["verify"][0]["points_found"], 1000, "{report}");
    // Nothing went to the default retention policy, which verify does not read.
    assert!(
        !influxd
            .query("bench", "SELECT count(*) FROM autogen./.*/")
            .contains("values"),
        "{}",
        influxd.query("bench", "SELECT count(*) FROM autogen./.*/")
    );
}

#[test]
fn a_paced_bench_stopped_by_ctrl_c_reports_what_it_wrote_and_exits_130() {
    let _serial = serial();
    let a = Influxd::start();
    let url = a.url();
    // Paced far below what the machine can do, for far longer than the test: only the
    // interrupt ends it.
    let mut args = vec![
        url.as_str(),
        "--duration",
        "1h",
        "--rate",
        "700",
        "--json",
        "--no-progress",
        "--verify",
        url.as_str(),
    ];
    args.extend_from_slice(SHAPE);
    let mut child = Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .arg("bench")
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run influx-ha bench");
    let wrote = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::support::wait_until("the bench wrote a few batches", CONVERGE, || {
            crate::support::count(&a, "bench", "usage_user", "cpu") >= 100
        });
    }));
    if let Err(panic) = wrote {
        // Not left running for the hour it was given.
        let _ = child.kill();
        let _ = child.wait();
        std::panic::resume_unwind(panic);
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("bench ends");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["cancelled"], true, "{report}");
    let acked = report["points_acked"].as_u64().unwrap_or_default();
    assert!(acked >= 100, "{report}");
    assert!(report["latency_ms"]["p50"].as_f64().is_some(), "{report}");
    // The verification is left out: what was written in a cut run is not a known set.
    assert_eq!(report["verify"], serde_json::json!([]), "{report}");
}
