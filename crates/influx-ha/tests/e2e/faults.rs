//! Network faults a kill cannot make, between the relay and one backend: connections reset,
//! requests accepted and never answered, connections closed right after accept, and faults
//! switching while writes are in flight. Backend B is reached through a [`FaultProxy`]; the
//! relay's deadline for one direct send is short (5 s) so the tests stay quick. Also: a gzip
//! bomb sent to the relay.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use testkit::Influxd;
use testkit::http::HttpClient;

use crate::proxy::{FaultProxy, Mode};
use crate::relay::Relay;
use crate::support::{
    CONVERGE, assert_converged, count, points, serial, wait_until, write_batches,
};

const SHORT_DEADLINE: &str = "[write]\nbackend_timeout = \"5s\"\n";

/// Batch `n` of `size` points.
fn batch(n: u64, size: u64) -> Vec<u8> {
    points(n * size..(n + 1) * size)
}

/// A and B (B behind a fault proxy) with database `db`, and a relay in front of A and the proxy.
fn setup() -> (Influxd, Influxd, FaultProxy, Relay) {
    let (a, b) = (Influxd::start(), Influxd::start());
    a.create_database("db");
    b.create_database("db");
    let proxy = FaultProxy::start(b.addr());
    let relay = Relay::start_urls(&[a.url(), proxy.url()], SHORT_DEADLINE);
    (a, b, proxy, relay)
}

/// Once B has caught up, writes need no queue again: consistency=all is met (B acknowledges
/// directly). The batch written is one both backends already hold, so the data do not change.
fn assert_direct_again(relay: &mut Relay) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let r = relay.write("db=db&consistency=all", &batch(0, 100));
        if r.status == 204 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "consistency=all still not met after b caught up: {} {}\n{}",
            r.status,
            r.text(),
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_fault_proxy_does_what_each_mode_says() {
    let _serial = serial();
    let b = Influxd::start();
    let proxy = FaultProxy::start(b.addr());
    let ping = |timeout: Duration| {
        let mut client = HttpClient::new(proxy.addr());
        client.set_timeout(timeout);
        client.request("GET", "/ping", &[], b"").map(|r| r.status)
    };
    assert_eq!(ping(Duration::from_secs(30)).ok(), Some(204));
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    for mode in [Mode::Reset, Mode::Refuse, Mode::Stall, Mode::Blackhole] {
        proxy.set_mode(mode);
        let discarded = proxy.discarded();
        match mode {
            // Closed, not merely slow: the error comes long before the client's timeout.
            Mode::Reset | Mode::Refuse => match ping(Duration::from_secs(30)) {
                Err(e) => assert!(!timed_out(&e), "{mode:?}: {e}"),
                Ok(status) => panic!("{mode:?}: answered {status}"),
            },
            _ => match ping(Duration::from_millis(500)) {
                Err(e) => assert!(timed_out(&e), "{mode:?}: {e}"),
                Ok(status) => panic!("{mode:?}: answered {status}"),
            },
        }
        if mode == Mode::Blackhole {
            assert!(proxy.discarded() > discarded, "the request was thrown away");
        }
        proxy.set_mode(Mode::Pass);
        assert_eq!(
            ping(Duration::from_secs(30)).ok(),
            Some(204),
            "after {mode:?}"
        );
    }
    assert!(proxy.connections() >= 9, "{}", proxy.connections());
}

/// Writes while B is behind `mode`: every answer is a 204 (A acknowledges, B's copy is queued);
/// once the fault is gone B receives everything.
fn a_fault_loses_nothing(mode: Mode) {
    let (a, b, proxy, mut relay) = setup();
    write_batches(&mut relay, 0, 5, "db=db", 204);
    proxy.set_mode(mode);
    write_batches(&mut relay, 5, 25, "db=db&consistency=one", 204);
    // The replay met the fault too, at least once.
    wait_until(
        &format!("a failed replay to b behind {mode:?}"),
        CONVERGE,
        || relay.log().contains("replay failed"),
    );
    write_batches(&mut relay, 25, 30, "db=db&consistency=one", 204);
    proxy.set_mode(Mode::Pass);
    write_batches(&mut relay, 30, 35, "db=db&consistency=one", 204);
    assert_converged(&a, &b, 3500);
    assert!(proxy.connections() > 0);
}

#[test]
fn connections_reset_by_a_backend_lose_nothing() {
    let _serial = serial();
    a_fault_loses_nothing(Mode::Reset);
}

#[test]
fn a_backend_that_accepts_and_never_reads_loses_nothing() {
    let _serial = serial();
    a_fault_loses_nothing(Mode::Stall);
}

#[test]
fn a_backend_that_reads_and_never_answers_loses_nothing() {
    let _serial = serial();
    a_fault_loses_nothing(Mode::Blackhole);
}

#[test]
fn a_backend_that_closes_every_connection_loses_nothing() {
    let _serial = serial();
    a_fault_loses_nothing(Mode::Refuse);
}

#[test]
fn faults_switching_while_writes_are_in_flight_lose_nothing() {
    let _serial = serial();
    let (a, b, proxy, mut relay) = setup();
    const BATCHES: u64 = 60;
    const SIZE: u64 = 1000;
    let written = AtomicU64::new(0);
    let schedule = [
        Mode::Reset,
        Mode::Pass,
        Mode::Reset,
        Mode::Stall,
        Mode::Pass,
        Mode::Blackhole,
        Mode::Reset,
        Mode::Pass,
        Mode::Refuse,
        Mode::Pass,
        Mode::Reset,
        Mode::Pass,
    ];
    std::thread::scope(|s| {
        let (proxy, written) = (&proxy, &written);
        let flipper = s.spawn(move || {
            // Switches every few batches, while the next batch (and the replay) is under way.
            for (k, mode) in (1u64..).zip(schedule) {
                wait_until("the writer to go on", CONVERGE, || {
                    written.load(Ordering::SeqCst) >= k * 4
                });
                proxy.set_mode(mode);
            }
        });
        for n in 0..BATCHES {
            let r = relay.write("db=db&consistency=one", &batch(n, SIZE));
            assert_eq!(r.status, 204, "batch {n}: {}\n{}", r.text(), relay.log());
            written.store(n + 1, Ordering::SeqCst);
        }
        flipper.join().expect("flipper thread");
    });
    assert_eq!(proxy.mode(), Mode::Pass);
    assert_converged(&a, &b, BATCHES * SIZE);
}

#[test]
fn consistency_all_during_a_stall_is_a_partial_write_then_converges() {
    let _serial = serial();
    let (a, b, proxy, mut relay) = setup();
    write_batches(&mut relay, 0, 2, "db=db&consistency=all", 204);
    proxy.set_mode(Mode::Stall);
    for n in 2..6 {
        let r = relay.write("db=db&consistency=all", &batch(n, 100));
        assert_eq!(r.status, 500, "batch {n}\n{}", relay.log());
        assert_eq!(r.text(), "{\"error\":\"partial write\"}\n", "batch {n}");
    }
    // A holds them already: the partial write was acknowledged there.
    assert_eq!(count(&a, "db", "v", "m"), 600);
    proxy.set_mode(Mode::Pass);
    assert_converged(&a, &b, 600);
}

#[test]
fn a_backend_that_caught_up_takes_direct_writes_again() {
    let _serial = serial();
    let (a, b, proxy, mut relay) = setup();
    write_batches(&mut relay, 0, 2, "db=db&consistency=all", 204);
    proxy.set_mode(Mode::Reset);
    write_batches(&mut relay, 2, 4, "db=db&consistency=one", 204);
    wait_until("a failed replay to b", CONVERGE, || {
        relay.log().contains("replay failed")
    });
    proxy.set_mode(Mode::Pass);
    assert_converged(&a, &b, 400);
    // B holds everything and answers: its queue is empty, so consistency=all is met again.
    assert_direct_again(&mut relay);
    write_batches(&mut relay, 4, 6, "db=db&consistency=all", 204);
    assert_converged(&a, &b, 600);
}

#[test]
fn a_gzip_bomb_is_refused_and_the_relay_keeps_serving() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    a.create_database("db");
    b.create_database("db");
    let mut relay = Relay::start(&[&a, &b], "");
    // 50 MB of zeros inflate past the default max_body_bytes (25 MB); compressed ~50 kB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..50 {
        gz.write_all(&zeros).expect("gzip");
    }
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    for _ in 0..2 {
        let r = relay.request(
            "POST",
            "/write?db=db",
            &[("Content-Encoding", "gzip")],
            &bomb,
        );
        assert_eq!(r.status, 413, "{}\n{}", r.text(), relay.log());
    }
    assert_eq!(relay.get("/ping").map(|r| r.status).ok(), Some(204));
    write_batches(&mut relay, 0, 5, "db=db", 204);
    assert_converged(&a, &b, 500);
}

/// The value of field `v` of the one point of `m` in `db`, as `influxd` stores it.
fn stored_v(influxd: &Influxd) -> Option<f64> {
    let json: serde_json::Value =
        serde_json::from_str(&influxd.query("db", "SELECT v FROM m")).ok()?;
    let values = json["results"][0]["series"][0]["values"].as_array()?;
    match values.as_slice() {
        [only] => only[1].as_f64(),
        _ => None,
    }
}

#[test]
fn a_point_rewritten_while_its_first_write_is_stalled_on_one_backend_ends_rewritten_on_both() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    a.create_database("db");
    b.create_database("db");
    let proxy = FaultProxy::start(b.addr());
    // A direct send to B may take as long as the stall: it must still be running when the
    // rewrite arrives, and land after it has been answered.
    let mut relay = Relay::start_urls(
        &[a.url(), proxy.url()],
        "[write]\nbackend_timeout = \"60s\"\n",
    );
    let r = relay.write("db=db", b"warm v=0 1\n");
    assert_eq!(r.status, 204, "{}", r.text());

    proxy.set_mode(Mode::Stall);
    // consistency=one: A's answer is enough, B's copy is insured in its queue while its
    // direct send hangs in the proxy.
    let r = relay.write("db=db", b"m v=1 1700000000000000000\n");
    assert_eq!(r.status, 204, "{}", r.text());
    let r = relay.write("db=db", b"m v=2 1700000000000000000\n");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(stored_v(&a), Some(2.0));

    // The stalled send lands first, then the queue: the rewrite (the insured copy, which its own
    // send delivered before anything queued after it, is skipped).
    proxy.set_mode(Mode::Pass);
    wait_until("b holds the rewritten value", CONVERGE, || {
        stored_v(&b) == Some(2.0)
    });
    wait_until("b's queue is drained", CONVERGE, || {
        let status = relay.get("/status").expect("status").text();
        !status.contains("catching_up")
    });
    assert_eq!(stored_v(&b), Some(2.0));
    assert_eq!(stored_v(&a), Some(2.0));
    // The case this is about did happen: B's first copy was insured, then not replayed.
    let status = relay.status_json();
    let totals = &status["backends"][1]["totals"];
    assert!(totals["insured"].as_u64() >= Some(1), "{status}");
    assert!(totals["insured_skipped"].as_u64() >= Some(1), "{status}");
}
