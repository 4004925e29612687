//! The read path end to end: `/query` through influx-ha in front of real InfluxDB processes —
//! routing to fresh backends, failover, statement fan-out and queueing, peers, streaming, and
//! real clients.

use testkit::Influxd;
use testkit::http::{Response, form};

use crate::proxy::{FaultProxy, Mode};
use crate::relay::Relay;
use crate::support::{CONVERGE, count, points, serial, wait_until};

/// Fast health checks, so that tests see state changes quickly.
const FAST_HEALTH: &str = "[health]\ninterval = \"200ms\"\ntimeout = \"1s\"\nrise = 2\nfall = 2\n";

/// `POST /query` through the relay with form parameters.
fn query(relay: &mut Relay, params: &[(&str, &str)]) -> Response {
    relay.request(
        "POST",
        "/query",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form(params).as_bytes(),
    )
}

/// `SELECT count(v) FROM m` in `db` through the relay: the status, the count (0 when none) and
/// the backend that answered.
fn relay_count(relay: &mut Relay, db: &str) -> (u16, u64, String) {
    let r = query(relay, &[("db", db), ("q", "SELECT count(v) FROM m")]);
    let text = r.text();
    let n = text
        .split("\"values\":[[")
        .nth(1)
        .and_then(|row| row.split(']').next())
        .and_then(|row| row.split(',').nth(1))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let backend = r
        .header("x-influx-ha-backend")
        .unwrap_or_default()
        .to_owned();
    (r.status, n, if r.status == 200 { backend } else { text })
}

/// Waits until the relay serves fresh reads (its first health checks are done).
fn wait_ready(relay: &mut Relay) {
    wait_until("reads served", CONVERGE, || {
        query(relay, &[("q", "SHOW DATABASES")]).status == 200
    });
}

#[test]
fn show_create_write_select_through_influx_ha() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);

    let r = query(&mut relay, &[("q", "CREATE DATABASE db")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "{\"results\":[{\"statement_id\":0}]}\n");
    for i in [&a, &b] {
        assert!(
            i.query("", "SHOW DATABASES").contains("\"db\""),
            "created on every backend"
        );
    }
    let w = relay.write("db=db", &points(0..500));
    assert_eq!(w.status, 204, "{}", w.text());

    let r = query(&mut relay, &[("q", "SHOW DATABASES")]);
    assert!(r.text().contains("[\"db\"]"), "{}", r.text());
    assert_eq!(r.header("x-influxdb-version"), Some("1.6.7~rc0"));
    assert!(r.header("request-id").is_some());
    let r = query(&mut relay, &[("db", "db"), ("q", "SHOW MEASUREMENTS")]);
    assert!(r.text().contains("[\"m\"]"), "{}", r.text());
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (status, n, backend) = relay_count(&mut relay, "db");
        assert_eq!((status, n), (200, 500), "{backend}");
        served.insert(backend);
    }
    assert_eq!(
        served.len(),
        2,
        "reads are spread over both backends: {served:?}"
    );
    // GET works too, and the client's credentials are not what the backend sees.
    let r = relay.request(
        "GET",
        "/query?db=db&u=someone&p=secret&epoch=s&q=SELECT+v+FROM+m+WHERE+host%3D%27h1%27+LIMIT+1",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("[1700000000,1]"), "{}", r.text());
}

#[test]
fn a_backend_killed_during_reads_is_invisible_to_clients() {
    let _serial = serial();
    let (mut a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
        assert_eq!(i.write("db", "", points(0..300)).0, 204);
    }
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    for round in 0..300 {
        if round == 50 {
            a.kill();
        }
        if round == 200 {
            a.restart();
        }
        let (status, n, detail) = relay_count(&mut relay, "db");
        assert_eq!(
            (status, n),
            (200, 300),
            "read {round}: {detail}\n{}",
            relay.log()
        );
    }
}

/// `SHOW …` on one backend directly.
fn show(i: &Influxd, q: &str) -> String {
    i.query("", q)
}

#[test]
fn statements_while_a_backend_is_down_reach_it_before_the_writes_that_follow() {
    let _serial = serial();
    let (a, mut b) = (Influxd::start(), Influxd::start());
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    b.kill();

    for q in [
        "CREATE DATABASE newdb",
        "CREATE RETENTION POLICY short ON newdb DURATION INF REPLICATION 1 SHARD DURATION 1d",
        "CREATE DATABASE lonely",
    ] {
        let r = query(&mut relay, &[("q", q)]);
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(r.text(), "{\"results\":[{\"statement_id\":0}]}\n", "{q}");
        assert_eq!(r.header("x-influx-ha-backend"), Some("influx-0"));
    }
    let w = relay.write("db=newdb&rp=short", &points(0..200));
    assert_eq!(w.status, 204, "{}", w.text());
    assert_eq!(count(&a, "newdb", "v", "\"short\".\"m\""), 200);

    b.restart();
    wait_until("the writes reach the returning backend", CONVERGE, || {
        b.ping() && count(&b, "newdb", "v", "\"short\".\"m\"") == 200
    });
    assert!(show(&b, "SHOW DATABASES").contains("[\"lonely\"]"));
    let rps = show(&b, "SHOW RETENTION POLICIES ON newdb");
    assert!(
        rps.contains("[\"short\",\"0s\",\"24h0m0s\",1,false]"),
        "{rps}"
    );
    // The statements were replayed before the writes: the write replay never found the
    // database or the retention policy missing, and nothing diverged.
    let log = relay.log();
    assert!(!log.contains("was missing"), "{log}");
    assert!(!log.contains("diverged"), "{log}");
}

#[test]
fn user_management_needs_every_backend_and_is_never_queued() {
    let _serial = serial();
    let (a, mut b) = (Influxd::start(), Influxd::start());
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);

    let r = query(
        &mut relay,
        &[("q", "CREATE USER alice WITH PASSWORD 'pw;alice'")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for i in [&a, &b] {
        assert!(show(i, "SHOW USERS").contains("[\"alice\",false]"));
    }

    b.kill();
    // Once the relay knows influx-1 is down, user management is refused before anything is
    // sent (re-setting alice's password to the same value is harmless meanwhile).
    let mut refusal = String::new();
    wait_until("user management refused", CONVERGE, || {
        let r = query(&mut relay, &[("q", "SET PASSWORD FOR alice = 'pw;alice'")]);
        refusal = r.text();
        r.status == 503 && refusal.contains("cannot take it now")
    });
    assert!(refusal.contains("influx-1 (down"), "{refusal}");
    let r = query(
        &mut relay,
        &[("q", "CREATE USER bob WITH PASSWORD 'pw;bob'")],
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("nothing was changed"), "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(
        !show(&a, "SHOW USERS").contains("bob"),
        "not applied anywhere"
    );

    b.restart();
    wait_until("user management accepted again", CONVERGE, || {
        query(
            &mut relay,
            &[("q", "CREATE USER bob WITH PASSWORD 'pw;bob'")],
        )
        .status
            == 200
    });
    for i in [&a, &b] {
        assert!(show(i, "SHOW USERS").contains("[\"bob\",false]"));
    }
    // Nothing was queued, and no password reached the log.
    let queues = relay.get("/admin/v1/queues").expect("queue report").text();
    assert!(!queues.contains("\"queue_records\":1"), "{queues}");
    let log = relay.log();
    assert!(!log.contains("pw;"), "{log}");
}

#[test]
fn a_peer_relays_queue_keeps_reads_away_until_it_drained() {
    let _serial = serial();
    let (mut a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    // relay-2 reaches influx-1 through a proxy that refuses connections: it queues for it,
    // while relay-1 and relay-3 see influx-1 up and have nothing queued themselves.
    let proxy = FaultProxy::start(b.addr());
    proxy.set_mode(Mode::Refuse);
    let port = |_| testkit::free_port().expect("free port");
    let (p1, p2, p3): (u16, u16, u16) = (port(1), port(2), port(3));
    let peer2 = format!("[[peer]]\nname = \"relay-2\"\nurl = \"http://127.0.0.1:{p2}\"\n");
    let mut relay2 = Relay::start_urls_on(p2, &[a.url(), proxy.url()], FAST_HEALTH);
    let mut relay1 =
        Relay::start_urls_on(p1, &[a.url(), b.url()], &format!("{FAST_HEALTH}{peer2}"));
    let mut relay3 = Relay::start_urls_on(
        p3,
        &[a.url(), b.url()],
        &format!("{FAST_HEALTH}[query]\nstale_reads = true\n{peer2}"),
    );
    wait_ready(&mut relay1);

    let w = relay2.write("db=db", &points(0..300));
    assert_eq!(w.status, 204, "{}", w.text());
    wait_until("relay-1 sees relay-2's queue", CONVERGE, || {
        relay1
            .get("/status")
            .is_ok_and(|r| r.text().contains("relay-2 reports"))
    });
    for _ in 0..20 {
        let (status, n, backend) = relay_count(&mut relay1, "db");
        assert_eq!((status, n, backend.as_str()), (200, 300, "influx-0"));
    }

    a.kill();
    let mut refusal = String::new();
    wait_until("no fresh backend", CONVERGE, || {
        let r = query(
            &mut relay1,
            &[("db", "db"), ("q", "SELECT count(v) FROM m")],
        );
        refusal = r.text();
        r.status == 503 && refusal.contains("relay-2")
    });
    assert!(
        refusal.contains("influx-1: peer relay-2 reports"),
        "{refusal}"
    );
    // With stale reads on, the catching-up backend answers, and says so.
    wait_until("a stale answer", CONVERGE, || {
        let r = query(
            &mut relay3,
            &[("db", "db"), ("q", "SELECT count(v) FROM m")],
        );
        r.status == 200 && r.header("x-influx-ha-stale") == Some("true")
    });

    proxy.set_mode(Mode::Pass);
    wait_until(
        "influx-1 serves fresh reads once relay-2 drained",
        CONVERGE,
        || relay_count(&mut relay1, "db") == (200, 300, "influx-1".to_owned()),
    );
    wait_until("relay-3 sees influx-1 fresh again", CONVERGE, || {
        let r = query(
            &mut relay3,
            &[("db", "db"), ("q", "SELECT count(v) FROM m")],
        );
        r.status == 200 && r.header("x-influx-ha-stale").is_none()
    });
}
