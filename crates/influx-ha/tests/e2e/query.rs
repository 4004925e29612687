//! The read path end to end: `/query` through influx-ha in front of real InfluxDB processes —
//! routing to fresh backends, failover, statement fan-out and queueing, peers, streaming, and
//! real clients.

use testkit::Influxd;
use testkit::http::{Response, form};

use crate::relay::Relay;
use crate::support::{CONVERGE, points, serial, wait_until};

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
