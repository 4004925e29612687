//! `influx-ha verify` and `influx-ha repair` against real InfluxDB: a backend that lost data
//! (its queue overflowed while it was down) is marked diverged, found, repaired to exactly the
//! same points (field types included) and cleared; a repair killed midway and run again ends
//! identical; verify of identical backends sends few queries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use testkit::Influxd;

use crate::relay::Relay;
use crate::support::{CONVERGE, ContinuousWriter, TS, count, dump, points, serial, wait_until};

/// Points `range` of measurement `disk use` with every field type and names that need
/// escaping: integers, floats that are whole numbers, strings with quotes and backslashes,
/// booleans; 10 series.
fn typed_points(range: std::ops::Range<u64>) -> Vec<u8> {
    let mut body = String::new();
    for i in range {
        body.push_str(&format!(
            "disk\\ use,host=h{},mount=/a\\,b\\=c free={i}i,ratio={},label=\"say \\\"{i}\\\" \\\\ ok\",ok={} {}\n",
            i % 10,
            i % 7,
            i % 2 == 0,
            TS + i * 1000
        ));
    }
    body.into_bytes()
}

/// `count(free)` of the typed points.
fn typed_count(influxd: &Influxd) -> u64 {
    count(influxd, "db", "free", "\"disk use\"")
}

fn field_keys(influxd: &Influxd) -> String {
    influxd.query("db", "SHOW FIELD KEYS")
}

/// Runs `influx-ha <args>` to completion.
fn influx_ha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run influx-ha")
}

fn text_of(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A config for verify/repair over `backends` (no node runs with it).
fn config_for(dir: &Path, backends: &[&Influxd]) -> PathBuf {
    let port = testkit::free_port().expect("free port");
    let mut text = format!(
        "data_dir = {:?}\n\n[http]\nbind = \"127.0.0.1:{port}\"\n\n",
        dir.join("data")
    );
    for (i, b) in backends.iter().enumerate() {
        text.push_str(&format!(
            "[[backend]]\nname = \"influx-{i}\"\nurl = \"{}\"\n\n",
            b.url()
        ));
    }
    let path = dir.join("influx-ha.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The relay's `/status` entry of one backend.
fn status_of(relay: &mut Relay, backend: &str) -> serde_json::Value {
    let r = relay.get("/status").expect("status answers");
    assert_eq!(r.status, 200, "{}", r.text());
    let status: serde_json::Value = serde_json::from_str(&r.text()).expect("JSON");
    status["backends"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == backend).cloned())
        .unwrap_or_else(|| panic!("no backend {backend} in {status}"))
}

/// A read through the relay: its status and the backend that answered it.
fn read(relay: &mut Relay) -> (u16, String) {
    let r = relay
        .get("/query?db=db&q=SELECT%20count(free)%20FROM%20%22disk%20use%22")
        .expect("query answers");
    let backend = r
        .header("X-Influx-Ha-Backend")
        .unwrap_or_default()
        .to_owned();
    (r.status, backend)
}

/// The relay's admin view of one backend's queue entry.
fn queue_entry(relay: &mut Relay, backend: &str) -> serde_json::Value {
    let r = relay.get("/admin/v1/queue").expect("admin API answers");
    assert_eq!(r.status, 200, "{}", r.text());
    let list: serde_json::Value = serde_json::from_str(&r.text()).expect("JSON");
    list.as_array()
        .and_then(|l| l.iter().find(|e| e["backend"] == backend).cloned())
        .unwrap_or_else(|| panic!("no queue entry for {backend} in {list}"))
}

#[test]
fn an_overflowed_queue_marks_the_backend_diverged_and_repair_makes_it_identical() {
    let _serial = serial();
    let (a, mut b) = (Influxd::start(), Influxd::start());
    a.create_database("db");
    b.create_database("db");
    // A queue that holds a few batches only.
    let mut relay = Relay::start(
        &[&a, &b],
        "[queue]\nmax_bytes = \"16KiB\"\nsegment_bytes = \"16KiB\"\n",
    );
    let flag = relay.data_dir().join("influx-1").join("diverged");
    let write = |relay: &mut Relay, from: u64, to: u64| {
        for n in from..to {
            let r = relay.write("db=db", &typed_points(n * 50..(n + 1) * 50));
            assert_eq!(r.status, 204, "batch {n}: {}\n{}", r.text(), relay.log());
        }
    };
    write(&mut relay, 0, 4);
    b.kill();
    write(&mut relay, 4, 24);
    b.restart();
    write(&mut relay, 24, 28);
    let total = 28 * 50;

    // What fitted in the queue is delivered; the rest is gone and the flag says so.
    wait_until("the queue of influx-1 drained", CONVERGE, || {
        queue_entry(&mut relay, "influx-1")["queue"]["records"] == 0
    });
    let entry = queue_entry(&mut relay, "influx-1");
    // Some batches were queued and delivered, the rest refused by the full queue.
    let totals = status_of(&mut relay, "influx-1")["totals"].clone();
    assert!(totals["queued"].as_u64() > Some(0), "{totals}");
    assert!(totals["replayed_batches"].as_u64() > Some(0), "{totals}");
    let why = entry["diverged"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("queue full"), "{entry}");
    // What a verify reads before it starts, to clear the flag only if nothing is dropped since.
    let d = relay
        .get("/admin/v1/backend/influx-1/divergence")
        .expect("divergence");
    assert_eq!(d.status, 200, "{}", d.text());
    let d: serde_json::Value = serde_json::from_str(&d.text()).expect("json");
    assert_eq!(d["diverged"], entry["diverged"], "{d}");
    assert!(d["marks"].as_str().is_some_and(|m| !m.is_empty()), "{d}");
    assert!(flag.exists(), "{}", flag.display());
    assert_eq!(
        queue_entry(&mut relay, "influx-0")["diverged"],
        serde_json::Value::Null
    );
    assert_eq!(typed_count(&a), total);
    let before = typed_count(&b);
    assert!(before < total, "influx-1 holds {before} of {total}");

    // A diverged backend serves no reads.
    let status = status_of(&mut relay, "influx-1");
    assert_eq!(status["fresh"], false, "{status}");
    let reason = status["not_fresh_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("diverged"), "{status}");
    // With influx-0 unavailable too, no read is served rather than one from influx-1.
    a.stop();
    wait_until("influx-0 seen down", CONVERGE, || {
        status_of(&mut relay, "influx-0")["reachability"] == "down"
    });
    let (status, backend) = read(&mut relay);
    assert_eq!(status, 503, "answered by {backend:?}");
    a.cont();
    wait_until("influx-0 seen up", CONVERGE, || {
        status_of(&mut relay, "influx-0")["reachability"] == "up"
    });

    let config = relay.config_path().to_str().expect("utf-8 path").to_owned();
    let out = influx_ha(&["verify", "--config", &config, "--rate", "0"]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("backends differ"), "{report}");
    assert!(report.contains("disk use"), "{report}");
    assert!(
        flag.exists(),
        "verify alone leaves a differing backend diverged"
    );

    let out = influx_ha(&[
        "repair", "--config", &config, "--rate", "0", "--chunk", "64",
    ]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("backends match"), "{report}");
    assert!(report.contains("no longer diverged"), "{report}");

    assert_eq!(typed_count(&b), total);
    assert_eq!(dump(&a, "db"), dump(&b, "db"));
    // Integers stay integers, whole floats stay floats.
    let keys = field_keys(&b);
    assert_eq!(field_keys(&a), keys);
    for expected in [
        r#"["free","integer"]"#,
        r#"["ratio","float"]"#,
        r#"["label","string"]"#,
        r#"["ok","boolean"]"#,
    ] {
        assert!(keys.contains(expected), "{expected} in {keys}");
    }
    // Cleared through the running node's admin API: state and file.
    assert!(!flag.exists(), "{}", flag.display());
    assert_eq!(
        queue_entry(&mut relay, "influx-1")["diverged"],
        serde_json::Value::Null
    );
    assert!(
        relay.log().contains("no longer diverged"),
        "{}",
        relay.log()
    );
    // And it serves reads again.
    wait_until("influx-1 fresh again", CONVERGE, || {
        status_of(&mut relay, "influx-1")["fresh"] == true
    });
    a.stop();
    let mut last = (0, String::new());
    let deadline = std::time::Instant::now() + CONVERGE;
    while last != (200, "influx-1".to_owned()) {
        assert!(
            std::time::Instant::now() < deadline,
            "reads never reached influx-1: last {last:?}, {}\n{}",
            status_of(&mut relay, "influx-1"),
            status_of(&mut relay, "influx-0")
        );
        last = read(&mut relay);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    a.cont();
}

#[test]
fn a_repair_killed_midway_and_run_again_ends_identical() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    // A backend with an empty disk: the database, its data and a retention policy are missing.
    a.create_database("db");
    let created = a.query(
        "db",
        "CREATE RETENTION POLICY \"short\" ON \"db\" DURATION 30000d REPLICATION 1 SHARD DURATION 2h",
    );
    assert!(!created.contains("error"), "{created}");
    let total = 4000;
    for n in 0..total / 500 {
        let (status, body) = a.write("db", "n", typed_points(n * 500..(n + 1) * 500));
        assert_eq!(status, 204, "{body}");
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config_for(dir.path(), &[&a, &b]);
    let config = config.to_str().expect("utf-8 path");

    // Slow on purpose (4 requests a second, 100 points each) so that it is killed midway.
    let mut repair: Child = Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .args([
            "repair", "--config", config, "--rate", "4", "--chunk", "100",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start repair");
    wait_until("the first copied points on influx-1", CONVERGE, || {
        b.query("", "SHOW DATABASES").contains("\"db\"") && typed_count(&b) > 0
    });
    repair.kill().expect("kill -9 the repair");
    let status = repair.wait().expect("reap the repair");
    assert!(!status.success(), "the repair was killed, not finished");
    let partial = typed_count(&b);
    assert!(
        partial < total,
        "{partial} of {total} copied before the kill"
    );

    let out = influx_ha(&["repair", "--config", config, "--rate", "0"]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(typed_count(&b), total);
    assert_eq!(dump(&a, "db"), dump(&b, "db"));
    assert_eq!(field_keys(&a), field_keys(&b));
    let rps = b.query("db", "SHOW RETENTION POLICIES ON \"db\"");
    assert!(
        rps.contains(r#"["short","720000h0m0s","2h0m0s",1,false]"#),
        "{rps}"
    );

    let out = influx_ha(&["verify", "--config", config]);
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
}

#[test]
fn verify_of_identical_backends_reports_no_difference_and_reads_little() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for db in ["db", "other"] {
        a.create_database(db);
        b.create_database(db);
    }
    for n in 0..10 {
        let body = typed_points(n * 500..(n + 1) * 500);
        for i in [&a, &b] {
            assert_eq!(i.write("db", "n", &body).0, 204);
            assert_eq!(i.write("other", "n", points(n * 500..(n + 1) * 500)).0, 204);
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config_for(dir.path(), &[&a, &b]);
    let out = influx_ha(&["verify", "--config", config.to_str().expect("utf-8 path")]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("backends match"), "{report}");
    assert!(
        report.contains(" 0 differ, 0 schema differences"),
        "{report}"
    );
    // Per backend: SHOW DATABASES, SHOW CONTINUOUS QUERIES, and per database its retention
    // policies and one count per retention policy; 10,000 points are not read.
    let queries: u64 = report
        .split(" queries in ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no query count in {report}"));
    assert!(queries <= 2 * (2 + 2 * 2), "{queries} queries:\n{report}");

    // One point missing on one backend is found, in the right window and series.
    let (status, _) = a.write(
        "db",
        "n",
        b"disk\\ use,host=h1 free=1i 1700000000000000001\n",
    );
    assert_eq!(status, 204);
    let out = influx_ha(&["verify", "--config", config.to_str().expect("utf-8 path")]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("1 differ"), "{report}");
    assert!(report.contains("2023-11-09T00:00:00Z"), "{report}");
}

#[test]
fn a_backend_added_by_reload_is_backfilled_under_writes_and_then_serves_reads() {
    let _serial = serial();
    let (a, b, c) = (Influxd::start(), Influxd::start(), Influxd::start());
    a.create_database("db");
    b.create_database("db");
    let mut relay = Relay::start(&[&a, &b], "");
    let port = relay.port();
    let writer = ContinuousWriter::start(port, 3000);
    writer.wait_batches(30);

    // influx-2 joins with an empty disk: diverged, no reads, new writes flow to it.
    let config = relay.config_path().to_owned();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!(
            "{text}\n[[backend]]\nname = \"influx-2\"\nurl = \"{}\"\n",
            c.url()
        ),
    )
    .expect("write config");
    relay.signal("HUP");
    wait_until("influx-2 added", CONVERGE, || {
        relay
            .get("/status")
            .is_ok_and(|r| r.text().contains("\"name\": \"influx-2\""))
    });
    let status = status_of(&mut relay, "influx-2");
    assert!(
        status["diverged_reason"]
            .as_str()
            .is_some_and(|r| r.contains("newly added")),
        "{status}"
    );
    assert_eq!(status["fresh"], false, "{status}");
    wait_until("influx-2 gets new writes", CONVERGE, || {
        count(&c, "db", "v", "m") > 0
    });

    // Backfilled while the writes go on.
    let config = config.to_str().expect("utf-8 path").to_owned();
    let before = writer.written();
    let out = influx_ha(&["repair", "--config", &config, "--rate", "0"]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        text_of(&out)
    );
    assert!(
        count(&c, "db", "v", "m") >= before * 10,
        "influx-2 holds what was written before the repair began\n{}",
        text_of(&out)
    );
    writer.wait_batches(10);
    let total = writer.stop() * 10;

    // Once the writes stop, a last repair finds at most what was in flight and clears the
    // flag if the first could not.
    for (name, i) in [("influx-0", &a), ("influx-1", &b)] {
        wait_until(&format!("{name} holds every point"), CONVERGE, || {
            count(i, "db", "v", "m") == total
        });
    }
    let out = influx_ha(&["repair", "--config", &config, "--rate", "0"]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    // Cleared by this repair, or by the first one if it already found everything identical.
    assert!(
        relay.log().contains("no longer diverged"),
        "{report}\n{}",
        relay.log()
    );
    assert_eq!(
        status_of(&mut relay, "influx-2")["diverged_reason"],
        serde_json::Value::Null
    );
    assert_eq!(count(&c, "db", "v", "m"), total);
    assert_eq!(dump(&a, "db"), dump(&c, "db"));
    assert_eq!(dump(&b, "db"), dump(&c, "db"));
    wait_until("influx-2 fresh", CONVERGE, || {
        status_of(&mut relay, "influx-2")["fresh"] == true
    });
}

#[test]
fn repair_clears_the_flag_on_the_peer_relays_too() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    a.create_database("db");
    b.create_database("db");
    let mut other = Relay::start(&[&a, &b], "");
    let mut relay = Relay::start(
        &[&a, &b],
        &format!("[[peer]]\nname = \"other\"\nurl = \"{}\"\n", other.url()),
    );
    for n in 0..5 {
        let r = relay.write("db=db", &typed_points(n * 50..(n + 1) * 50));
        assert_eq!(r.status, 204, "{}", r.text());
    }
    // The other relay dropped its queue for influx-1: it marks it diverged and says so to
    // its peers, whose reads then avoid influx-1 too.
    let r = other.request("POST", "/admin/v1/queue/influx-1/purge", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until("the peer's report reaches the relay", CONVERGE, || {
        status_of(&mut relay, "influx-1")["fresh"] == false
    });
    let reason = status_of(&mut relay, "influx-1")["not_fresh_reason"].clone();
    assert!(
        reason.as_str().is_some_and(|r| r.contains("other")),
        "{reason}"
    );

    let config = relay.config_path().to_str().expect("utf-8 path").to_owned();
    let out = influx_ha(&["repair", "--config", &config, "--rate", "0"]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("peer other: influx-1 is no longer diverged"),
        "{report}"
    );
    assert_eq!(
        status_of(&mut other, "influx-1")["diverged_reason"],
        serde_json::Value::Null
    );
    wait_until("influx-1 fresh again on the relay", CONVERGE, || {
        status_of(&mut relay, "influx-1")["fresh"] == true
    });
}

/// The node's `/status` `anti_entropy` object.
fn anti_entropy(relay: &mut Relay) -> serde_json::Value {
    let r = relay.get("/status").expect("status");
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON status");
    json["anti_entropy"].clone()
}

/// A and B with database `db`, and a relay checking them every second over the last hour.
fn anti_entropy_setup(auto_repair: bool) -> (Influxd, Influxd, Relay) {
    let (a, b) = (Influxd::start(), Influxd::start());
    a.create_database("db");
    b.create_database("db");
    let relay = Relay::start(
        &[&a, &b],
        &format!(
            "[health]\ninterval = \"200ms\"\n\n[anti_entropy]\ncheck_interval = \"1s\"\nwindow = \"1h\"\nsettle = \"0s\"\nauto_repair = {auto_repair}\nrate = 0\n"
        ),
    );
    (a, b, relay)
}

/// Nanoseconds since the epoch, now.
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// Ten minutes ago, in nanoseconds: inside the checks' window.
fn ten_minutes_ago_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        - 600 * 1_000_000_000
}

#[test]
fn the_anti_entropy_check_copies_back_what_a_backend_lacks() {
    let _serial = serial();
    let (a, b, mut relay) = anti_entropy_setup(true);
    let ts = ten_minutes_ago_ns();
    let lines = |range: std::ops::Range<u64>| {
        range
            .map(|i| format!("m,host=h{} v={i}i {}\n", i % 10, ts + i * 1_000_000))
            .collect::<String>()
    };
    let r = relay.write("db=db", lines(0..100).as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    wait_until("a check finds both backends in sync", CONVERGE, || {
        anti_entropy(&mut relay)["last"]["result"] == "in_sync"
    });
    // Written to one InfluxDB behind the relay's back: no queue knows of it.
    let (status, text) = a.write("db", "", lines(100..130));
    assert_eq!(status, 204, "{text}");
    wait_until(
        "the check copied the points to the other backend",
        CONVERGE,
        || count(&b, "db", "v", "m") == 130,
    );
    assert_eq!(count(&a, "db", "v", "m"), 130);
    assert_eq!(dump(&a, "db"), dump(&b, "db"));
    // The check records what it did once its copy is over: wait for that, not just the points.
    let mut ae = serde_json::Value::Null;
    wait_until("the check recorded its repair", CONVERGE, || {
        ae = anti_entropy(&mut relay);
        ae["differed"].as_u64() >= Some(1)
    });
    assert!(ae["points_copied"].as_u64() >= Some(30), "{ae}");
    let metrics = relay.get("/metrics").expect("metrics").text();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("influx_ha_anti_entropy_copied_points_total ") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    // With a backend down nothing is compared.
    drop(b);
    wait_until(
        "checks are skipped while a backend is down",
        CONVERGE,
        || {
            let last = &anti_entropy(&mut relay)["last"];
            last["result"] == "skipped"
                && last["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("influx-1"))
        },
    );
}

#[test]
fn without_auto_repair_the_anti_entropy_check_only_reports() {
    let _serial = serial();
    let (a, b, mut relay) = anti_entropy_setup(false);
    let ts = ten_minutes_ago_ns();
    let (status, text) = a.write("db", "", format!("m,host=h1 v=1i {ts}\n"));
    assert_eq!(status, 204, "{text}");
    wait_until("a check reports the difference", CONVERGE, || {
        anti_entropy(&mut relay)["last"]["result"] == "differs"
    });
    let ae = anti_entropy(&mut relay);
    let detail = ae["last"]["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        detail.contains("0 schema differences and 1 window differing (1 value missing)"),
        "{ae}"
    );
    assert_eq!(ae["points_copied"], 0, "{ae}");
    // A later check still finds the difference: nothing was copied in between either.
    let differed = ae["differed"].as_u64().unwrap_or_default();
    wait_until("a later check finds the difference", CONVERGE, || {
        anti_entropy(&mut relay)["differed"]
            .as_u64()
            .unwrap_or_default()
            > differed
    });
    let ae = anti_entropy(&mut relay);
    assert_eq!(ae["points_copied"], 0, "{ae}");
    let on_b = b.query("db", "SELECT count(v) FROM m");
    assert!(
        on_b.contains("\"statement_id\":0") && !on_b.contains("error"),
        "{on_b}"
    );
    assert!(!on_b.contains("series"), "nothing was copied: {on_b}");
}

#[test]
fn repair_copies_a_database_whose_default_policy_was_altered() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    crate::support::create_with_altered_autogen(&a, "db");
    let now_ns = now_ns();
    let (status, _) = a.write("db", "n", format!("m v=1i {now_ns}\n").as_bytes());
    assert_eq!(status, 204);

    // b lacks the database: created there, it gets a default autogen first, which the copy
    // must change rather than fail on.
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config_for(dir.path(), &[&a, &b]);
    let out = influx_ha(&["repair", "--config", config.to_str().expect("utf-8 path")]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    crate::support::assert_altered_autogen(&b, "db");
    assert_eq!(count(&b, "db", "v", "m"), 1);
}

#[test]
fn repair_copies_series_whose_tag_is_also_a_field_or_holds_a_line_feed() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    let now_ns = now_ns();
    // `host` is a tag and, in one series, a field too; another tag value holds a backslash
    // and a line feed, which line protocol keeps. b has only the plain series.
    let shared = format!("m,host=b v=2 {now_ns}\n");
    let only_a = format!("m,host=a host=1i,v=1 {now_ns}\nm,host=x\\\nz v=3 {now_ns}\n");
    assert_eq!(a.write("db", "n", format!("{shared}{only_a}")).0, 204);
    assert_eq!(b.write("db", "n", &shared).0, 204);
    assert_eq!(count(&a, "db", "v", "m"), 3);

    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config_for(dir.path(), &[&a, &b]);
    let out = influx_ha(&["repair", "--config", config.to_str().expect("utf-8 path")]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(count(&b, "db", "v", "m"), 3, "{report}");
    assert_eq!(
        crate::support::dump(&a, "db"),
        crate::support::dump(&b, "db")
    );
}

#[test]
fn repair_does_not_guess_the_type_of_a_field_with_several() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    let now_ns = now_ns();
    let month_ago_ns = now_ns - 30 * 24 * 3600 * 1_000_000_000;
    // A float in one shard group and an integer in another, as after an agent's upgrade.
    let (status, text) = a.write("db", "n", format!("m f=1.5 {month_ago_ns}\n"));
    assert_eq!(status, 204, "{text}");
    let (status, text) = a.write("db", "n", format!("m f=2i {now_ns}\n"));
    assert_eq!(status, 204, "{text}");
    // A series of the same measurement without the field is copied all the same.
    let (status, text) = a.write("db", "n", format!("m,host=h g=1 {now_ns}\n"));
    assert_eq!(status, 204, "{text}");

    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config_for(dir.path(), &[&a, &b]);
    let out = influx_ha(&["repair", "--config", config.to_str().expect("utf-8 path")]);
    let report = text_of(&out);
    assert_ne!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("field \"f\" has several types in different shards"),
        "{report}"
    );
    // Nothing written under a guessed type.
    assert_eq!(count(&b, "db", "f", "m"), 0, "{report}");
    assert_eq!(count(&b, "db", "g", "m"), 1, "{report}");
}

#[test]
fn verify_sees_another_default_policy_and_another_continuous_query() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
        i.query(
            "db",
            "CREATE RETENTION POLICY week ON db DURATION 7d REPLICATION 1",
        );
    }
    // On a alone, `week` became the default: writes without `rp` land elsewhere on each.
    a.query("db", "ALTER RETENTION POLICY week ON db DEFAULT");
    for (i, f) in [(&a, "mean"), (&b, "max")] {
        let cq = format!(
            "CREATE CONTINUOUS QUERY cq ON db BEGIN SELECT {f}(v) INTO m_1h FROM m GROUP BY time(1h) END"
        );
        assert!(!i.query("db", &cq).contains("error"), "{cq}");
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config_for(dir.path(), &[&a, &b]);
    let out = influx_ha(&["verify", "--config", config.to_str().expect("utf-8 path")]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("retention policy \"week\" on \"db\" differs")
            && report.contains("the default"),
        "{report}"
    );
    assert!(
        report.contains("continuous query \"cq\" on \"db\" differs"),
        "{report}"
    );
}

#[test]
fn verify_and_repair_read_whole_answers_past_the_row_limit() {
    let _serial = serial();
    // Each backend answers unchunked queries with 2 rows at most: counts of 10 series, and the
    // points of a series, are longer than that.
    let limited = || {
        Influxd::start_with_options(testkit::Options {
            max_row_limit: 2,
            ..testkit::Options::default()
        })
    };
    let (a, b) = (limited(), limited());
    for i in [&a, &b] {
        i.create_database("db");
    }
    assert_eq!(a.write("db", "n", points(0..50)).0, 204);
    // b lacks the last 5 points of series h5..h9 and holds the rest.
    assert_eq!(b.write("db", "n", points(0..45)).0, 204);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config_for(dir.path(), &[&a, &b]);
    let config = config.to_str().expect("utf-8 path");

    let out = influx_ha(&["verify", "--config", config]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(!report.contains("max-row-limit"), "{report}");
    let out = influx_ha(&["repair", "--config", config]);
    let report = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(count(&b, "db", "v", "m"), 50, "{report}");
    let out = influx_ha(&["verify", "--config", config]);
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
}
