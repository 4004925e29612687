//! Writes through influx-ha reach every InfluxDB backend exactly, through backend and relay
//! failures.

use testkit::Influxd;

use crate::relay::Relay;
use crate::support::{
    CONVERGE, TS, assert_converged, count, dump, points, serial, sum, wait_until, write_batches,
};

fn two_backends(db: &str) -> (Influxd, Influxd) {
    let (a, b) = (Influxd::start(), Influxd::start());
    a.create_database(db);
    b.create_database(db);
    (a, b)
}

#[test]
fn every_batch_reaches_both_backends() {
    let _serial = serial();
    let (a, b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "");
    write_batches(&mut relay, 0, 50, "db=db", 204);
    assert_converged(&a, &b, 5000);
}

#[test]
fn points_without_timestamps_are_stamped_once_for_every_replica() {
    let _serial = serial();
    let (a, b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "");
    for n in 0..10 {
        let body: String = (0..10)
            .map(|i| format!("m,host=h{i} v={}i\n", n * 10 + i))
            .collect();
        let r = relay.write("db=db&precision=ms", body.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    assert_converged(&a, &b, 100);
}

#[test]
fn a_backend_killed_and_restarted_receives_everything_it_missed() {
    let _serial = serial();
    let (a, mut b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "");
    write_batches(&mut relay, 0, 10, "db=db", 204);
    b.kill();
    write_batches(&mut relay, 10, 30, "db=db", 204);
    assert!(
        relay.log().contains("direct write failed: queued"),
        "{}",
        relay.log()
    );
    b.restart();
    write_batches(&mut relay, 30, 40, "db=db", 204);
    assert_converged(&a, &b, 4000);
}

#[test]
fn a_replay_in_measurement_lanes_keeps_every_overwrite_in_order() {
    let _serial = serial();
    let (a, mut b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "");
    b.kill();
    // Queued for b: every point of three measurements, then each overwritten. The queue merges
    // them into batches far over the size the replay splits into lanes; each measurement's
    // overwrites must still reach b after its first writes.
    let n = 3000u64;
    for value in [1u64, 2] {
        let mut body = String::new();
        for i in 0..n {
            for m in ["cpu", "mem", "disk"] {
                body.push_str(&format!("{m},host=h{} v={value}i {}\n", i % 50, TS + i));
            }
        }
        let r = relay.write("db=db", body.as_bytes());
        assert_eq!(r.status, 204, "{}\n{}", r.text(), relay.log());
    }
    b.restart();
    for m in ["cpu", "mem", "disk"] {
        wait_until(&format!("{m} on b"), CONVERGE, || {
            count(&b, "db", "v", m) == n
        });
        wait_until(&format!("{m} queue drained"), CONVERGE, || {
            sum(&b, "db", "v", m) == (2 * n) as f64
        });
        assert_eq!(sum(&a, "db", "v", m), (2 * n) as f64, "{m} on a");
    }
    assert_eq!(dump(&a, "db"), dump(&b, "db"));
}

#[test]
fn a_stopped_backend_does_not_hold_up_consistency_one() {
    let _serial = serial();
    let (a, b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "[write]\nbackend_timeout = \"60s\"\n");
    write_batches(&mut relay, 0, 5, "db=db", 204);
    b.stop();
    // Every answer is a 204 although b never answers: its copies are queued.
    write_batches(&mut relay, 5, 25, "db=db&consistency=one", 204);
    b.cont();
    assert_converged(&a, &b, 2500);
}

#[test]
fn the_relay_killed_while_a_backend_is_down_loses_nothing_acknowledged() {
    let _serial = serial();
    let (a, mut b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "");
    b.kill();
    write_batches(&mut relay, 0, 20, "db=db", 204);
    relay.kill();
    relay.restart();
    b.restart();
    assert_converged(&a, &b, 2000);
}

#[test]
fn every_backend_down_answers_by_consistency_level() {
    let _serial = serial();
    let (mut a, mut b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "");
    a.kill();
    b.kill();
    write_batches(&mut relay, 0, 1, "db=db&consistency=any", 204);
    for level in ["one", "quorum", "all"] {
        let r = relay.write(&format!("db=db&consistency={level}"), &points(100..200));
        assert_eq!(r.status, 500, "{level}");
        assert_eq!(
            r.text(),
            "{\"error\":\"write failed: hinted handoff queue not empty\"}\n",
            "{level}"
        );
    }
    a.restart();
    b.restart();
    // The queued batches are delivered: the first once, the second written three times.
    assert_converged(&a, &b, 200);
}

#[test]
fn consistency_all_with_one_backend_down_is_a_partial_write() {
    let _serial = serial();
    let (a, mut b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "");
    b.kill();
    let r = relay.write("db=db&consistency=all", &points(0..100));
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "{\"error\":\"partial write\"}\n");
    b.restart();
    assert_converged(&a, &b, 100);
}

#[test]
fn sigterm_exits_cleanly_and_the_queue_resumes_at_the_next_start() {
    let _serial = serial();
    let (a, mut b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "");
    b.kill();
    write_batches(&mut relay, 0, 10, "db=db", 204);
    let status = relay.terminate().expect("relay was running");
    assert!(status.success(), "exit status {status}\n{}", relay.log());
    b.restart();
    relay.restart();
    assert_converged(&a, &b, 1000);
}

#[test]
fn a_stalled_backend_does_not_hold_up_shutdown() {
    let _serial = serial();
    let (a, b) = two_backends("db");
    // Longer than `Relay::terminate` waits before it kills: a shutdown waiting for the stalled
    // backend would end in SIGKILL, not in exit status 0.
    let mut relay = Relay::start(&[&a, &b], "[write]\nbackend_timeout = \"300s\"\n");
    write_batches(&mut relay, 0, 3, "db=db", 204);
    b.stop();
    // b's copies are queued and its replay hangs on the stalled backend.
    write_batches(&mut relay, 3, 6, "db=db", 204);
    let status = relay.terminate().expect("relay was running");
    assert!(status.success(), "exit status {status}\n{}", relay.log());
    b.cont();
    relay.restart();
    assert_converged(&a, &b, 600);
}

#[test]
fn a_backend_missing_the_database_gets_it_created_and_the_data_replayed() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    a.create_database("db");
    let mut relay = Relay::start(&[&a, &b], "");
    write_batches(&mut relay, 0, 5, "db=db", 204);
    assert_converged(&a, &b, 500);
}

#[test]
fn a_database_missing_everywhere_is_a_404_and_nothing_is_queued() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    let mut relay = Relay::start(&[&a, &b], "");
    let r = relay.write("db=nosuchdb", &points(0..10));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text(),
        "{\"error\":\"database not found: \\\"nosuchdb\\\"\"}\n"
    );
    // Nothing was queued, so nothing creates the database behind the client's back.
    a.create_database("other");
    assert!(!a.query("", "SHOW DATABASES").contains("nosuchdb"));
    assert!(!b.query("", "SHOW DATABASES").contains("nosuchdb"));
}

#[test]
fn a_write_refused_everywhere_while_a_backend_is_down_neither_succeeds_nor_holds_its_queue() {
    let _serial = serial();
    let (a, mut b) = two_backends("db");
    let mut relay = Relay::start(&[&a, &b], "");
    b.kill();
    write_batches(&mut relay, 0, 3, "db=db", 204);
    // a refuses, b could only queue: the client hears what one InfluxDB would answer.
    let r = relay.write("db=nosuchdb", &points(0..10));
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        r.text(),
        "{\"error\":\"database not found: \\\"nosuchdb\\\"\"}\n"
    );
    let r = relay.write("db=db&rp=nosuchrp", &points(0..10));
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().contains("retention policy not found"),
        "{}",
        r.text()
    );
    write_batches(&mut relay, 3, 6, "db=db", 204);

    // The refused writes were never queued for b: what came before and after them is
    // delivered, and nothing is created that a lacks.
    b.restart();
    assert_converged(&a, &b, 600);
    assert!(!b.query("", "SHOW DATABASES").contains("nosuchdb"));
    assert!(
        !b.query("", "SHOW RETENTION POLICIES ON \"db\"")
            .contains("nosuchrp")
    );
    let status = relay.status_json();
    let entry = &status["backends"][1];
    assert_eq!(entry["dead_letters"]["records"], 0, "{entry}");
    // Nothing is missing from b that another backend has: it stays fresh.
    assert_eq!(entry["diverged_reason"], serde_json::Value::Null, "{entry}");
}

#[test]
fn a_backend_that_stores_fewer_points_of_a_write_than_another_is_marked_diverged() {
    let _serial = serial();
    let (a, b) = two_backends("db");
    // Only b has m.v as an integer: a float value is a field type conflict there alone.
    assert_eq!(b.write("db", "", b"m v=1i 1\n").0, 204);
    let mut relay = Relay::start(&[&a, &b], "");
    let r = relay.write("db=db", b"m v=1.5 2\nn v=1 2\n");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("field type conflict"), "{}", r.text());
    assert_eq!(count(&a, "db", "v", "m"), 1);
    let status = relay.status_json();
    let why = status["backends"][1]["diverged_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("stored fewer points"), "{status}");
    assert_eq!(
        status["backends"][0]["diverged_reason"],
        serde_json::Value::Null
    );
}

/// Points with timestamps of the last hour, for retention policies shorter than `TS` is old.
fn recent_points(n: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (0..n)
        .map(|i| {
            format!(
                "m,host=h{} v={i}i {}\n",
                i % 10,
                now - 3_600_000_000_000 + i
            )
        })
        .collect::<String>()
        .into_bytes()
}

fn rp_short(influxd: &Influxd) {
    influxd.query(
        "",
        "CREATE RETENTION POLICY \"short\" ON \"db\" DURATION 2d REPLICATION 1 SHARD DURATION 1d",
    );
}

fn assert_short_converged(a: &Influxd, b: &Influxd, n: u64) {
    for (name, i) in [("a", a), ("b", b)] {
        crate::support::wait_until(
            &format!("{n} points in db.short on {name}"),
            crate::support::CONVERGE,
            || crate::support::count(i, "db", "v", "\"short\".\"m\"") == n,
        );
    }
    let policies = |i: &Influxd| i.query("", "SHOW RETENTION POLICIES ON \"db\"");
    assert_eq!(policies(a), policies(b));
    assert!(
        policies(b).contains("[\"short\",\"48h0m0s\",\"24h0m0s\",1,false]"),
        "{}",
        policies(b)
    );
}

#[test]
fn a_missing_database_is_created_with_the_retention_policies_of_a_healthy_backend() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    a.create_database("db");
    rp_short(&a);
    let mut relay = Relay::start(&[&a, &b], "");
    let r = relay.write("db=db&rp=short", &recent_points(100));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_short_converged(&a, &b, 100);
}

#[test]
fn a_missing_retention_policy_is_copied_from_a_healthy_backend() {
    let _serial = serial();
    let (a, b) = two_backends("db");
    rp_short(&a);
    let mut relay = Relay::start(&[&a, &b], "");
    let r = relay.write("db=db&rp=short", &recent_points(100));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_short_converged(&a, &b, 100);
}

#[test]
fn writers_past_the_inflight_cap_wait_their_turn_and_nothing_is_lost() {
    let _serial = serial();
    let (a, b) = two_backends("db");
    // Room for about two bodies of 2,000 points (75-80 KB each) at a time; eight writers.
    let extra = "max_body_bytes = 160000\nmax_inflight_bytes = 160000\ninflight_wait = \"300s\"\n";
    let mut relay = Relay::start(&[&a, &b], extra);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], relay.port()));
    let (writers, per_writer, batch) = (8u64, 5u64, 2000u64);
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            std::thread::spawn(move || {
                let mut client = testkit::HttpClient::new(addr);
                client.set_timeout(std::time::Duration::from_secs(300));
                for k in 0..per_writer {
                    let n = w * per_writer + k;
                    let body = points(n * batch..(n + 1) * batch);
                    let r = client
                        .request("POST", "/write?db=db", &[], &body)
                        .expect("write");
                    assert_eq!(r.status, 204, "writer {w}, batch {k}: {}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    assert_converged(&a, &b, writers * per_writer * batch);

    let status = relay.status_json();
    let bodies = &status["request_bodies"];
    assert_eq!(bodies["max_inflight_bytes"], 160000, "{bodies}");
    assert!(bodies["waited"].as_u64().expect("waited") > 0, "{bodies}");
    assert_eq!(bodies["refused"], 0, "{bodies}");
    assert_eq!(bodies["in_flight_bytes"], 0, "{bodies}");
    let metrics = relay.get("/metrics").expect("metrics").text();
    assert!(
        metrics.contains("influx_ha_http_inflight_limit_bytes 160000"),
        "{metrics}"
    );
    let page = relay.get("/").expect("status page").text();
    assert!(
        page.contains("requests waited for room · none refused"),
        "{page}"
    );
}

#[test]
fn a_missing_database_gets_the_altered_settings_of_its_default_policy() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    crate::support::create_with_altered_autogen(&a, "db");
    let mut relay = Relay::start(&[&a, &b], "");
    let r = relay.write("db=db", &recent_points(100));
    assert_eq!(r.status, 204, "{}", r.text());
    // Created on b, the database first has a default autogen: it gets a's settings.
    wait_until("b holds the points", CONVERGE, || {
        count(&b, "db", "v", "m") == 100
    });
    crate::support::assert_altered_autogen(&b, "db");
}
