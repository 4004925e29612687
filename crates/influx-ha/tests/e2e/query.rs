//! The read path end to end: `/query` through influx-ha in front of real InfluxDB processes —
//! routing to fresh backends, failover, statement fan-out and queueing, peers, streaming, and
//! real clients.

use testkit::Influxd;
use testkit::http::{Response, form};

use crate::proxy::{FaultProxy, Mode};
use crate::relay::Relay;
use crate::support::{CONVERGE, count, points, serial, wait_until};

/// Frequent health checks, so that tests see state changes quickly; a ping may take a few
/// seconds on a loaded machine without marking a healthy backend down.
const FAST_HEALTH: &str = "[health]\ninterval = \"200ms\"\ntimeout = \"3s\"\nrise = 2\nfall = 2\n";

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

/// Waits until reads of `db` are answered by both backends, each with all `points`.
fn wait_reads_spread(relay: &mut Relay, points: u64) {
    let mut served = std::collections::BTreeSet::new();
    wait_until("reads are spread over both backends", CONVERGE, || {
        let (status, n, backend) = relay_count(relay, "db");
        assert_eq!((status, n), (200, points), "{backend}");
        served.insert(backend);
        served.len() == 2
    });
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
    // Every read is complete. Both backends serve reads once both are fresh: a write that
    // was slow to one of them on a loaded machine is insured in its queue, and that backend
    // serves no reads until the queue drained, so spreading is waited for, not assumed.
    wait_reads_spread(&mut relay, 500);
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

/// Two backends holding the same 300 points, the first behind a fault proxy, and a relay in
/// front of them (with `extra` config) that serves reads.
fn reads_through_a_proxy(extra: &str) -> (Relay, FaultProxy, [Influxd; 2]) {
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
        assert_eq!(i.write("db", "", points(0..300)).0, 204);
    }
    let proxy = FaultProxy::start(a.addr());
    let mut relay = Relay::start_urls(&[proxy.url(), b.url()], &format!("{FAST_HEALTH}{extra}"));
    // Both serve reads, so that reads in a row reach both.
    wait_reads_spread(&mut relay, 300);
    (relay, proxy, [a, b])
}

/// Sends `n` reads one after the other on a client of its own (reads rotate over the
/// backends, so two in a row reach both) and gives back what each answered.
fn reads_in_background(relay: &Relay, n: usize) -> std::thread::JoinHandle<Vec<Response>> {
    let addr = format!("127.0.0.1:{}", relay.port())
        .parse()
        .expect("relay address");
    std::thread::spawn(move || {
        let mut client = testkit::http::HttpClient::new(addr);
        let body = form(&[("db", "db"), ("q", "SELECT count(v) FROM m")]);
        let headers = [("Content-Type", "application/x-www-form-urlencoded")];
        (0..n)
            .map(|_| {
                client
                    .request("POST", "/query", &headers, body.as_bytes())
                    .expect("an answer")
            })
            .collect()
    })
}

#[test]
fn a_backend_that_stops_after_its_answers_headers_fails_the_read_over() {
    let _serial = serial();
    let (relay, proxy, _influxd) = reads_through_a_proxy("");

    // influx-0 takes the read and sends its answer's headers, then nothing: InfluxDB sends
    // its headers as soon as it takes a query and the result only once it has it.
    proxy.set_mode(Mode::HeadersOnly);
    let reads = reads_in_background(&relay, 4);
    wait_until(
        "a read reached influx-0 and got only headers",
        CONVERGE,
        || proxy.cut_answers() >= 1,
    );
    // Then it stops answering altogether (its pings too): the health checks mark it down,
    // and the read still waiting for its first byte goes to influx-1.
    proxy.set_mode(Mode::Stall);
    let answers = reads.join().expect("the reads' thread");
    proxy.set_mode(Mode::Pass);
    for r in &answers {
        assert_eq!(r.status, 200, "{}\n{}", r.text(), relay.log());
        assert!(
            r.text().contains("[\"1970-01-01T00:00:00Z\",300]"),
            "a whole answer: {}",
            r.text()
        );
    }
    assert!(
        relay
            .log()
            .contains("marked down while the query waited for its answer")
    );
}

#[test]
fn a_backend_silent_after_its_answers_headers_times_the_read_out_without_rerunning_it() {
    let _serial = serial();
    let (mut relay, proxy, _influxd) = reads_through_a_proxy("[query]\ntimeout = \"3s\"\n");

    // influx-0 answers its pings but sends nothing of the read's result: slow is not failed,
    // so the read is not run again on influx-1 and the client gets 503 at the timeout.
    proxy.set_mode(Mode::HeadersOnly);
    let answers = reads_in_background(&relay, 2)
        .join()
        .expect("the reads' thread");
    proxy.set_mode(Mode::Pass);
    assert_eq!(
        proxy.cut_answers(),
        1,
        "one of two reads in a row reaches influx-0"
    );
    let (timed_out, served): (Vec<_>, Vec<_>) = answers.iter().partition(|r| r.status == 503);
    assert_eq!((timed_out.len(), served.len()), (1, 1), "{}", relay.log());
    let text = timed_out[0].text();
    assert!(
        text.contains("influx-0 sent no byte of its answer within the query timeout"),
        "{text}"
    );
    assert_eq!(served[0].status, 200, "{}", served[0].text());
    assert_eq!(served[0].header("x-influx-ha-backend"), Some("influx-1"));
    let influx_0 = relay.status_json()["backends"][0].clone();
    assert_eq!(influx_0["reachability"], "up", "{influx_0}");
}

/// The records a relay's queue report (`/admin/v1/queues`) shows for `backend`.
fn queued_records(relay: &mut Relay, backend: &str) -> u64 {
    let report = relay.get("/admin/v1/queues").expect("queue report");
    let json: serde_json::Value = serde_json::from_slice(&report.body).expect("JSON report");
    json["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == backend))
        .and_then(|b| b["queue_records"].as_u64())
        .unwrap_or_else(|| panic!("no {backend} in {}", report.text()))
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
    // A statement with bound parameters is queued with them: 20 of the 200 points go.
    let r = query(
        &mut relay,
        &[
            ("db", "newdb"),
            ("q", "DELETE FROM m WHERE host = $h"),
            ("params", "{\"h\":\"h3\"}"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(count(&a, "newdb", "v", "\"short\".\"m\""), 180);

    b.restart();
    wait_until(
        "the writes and the delete reach the returning backend",
        CONVERGE,
        || b.ping() && count(&b, "newdb", "v", "\"short\".\"m\"") == 180,
    );
    assert!(show(&b, "SHOW DATABASES").contains("[\"lonely\"]"));
    let rps = show(&b, "SHOW RETENTION POLICIES ON newdb");
    assert!(
        rps.contains("[\"short\",\"0s\",\"24h0m0s\",1,false]"),
        "{rps}"
    );
    // The statements were replayed before the writes: the write replay never found the
    // database or the retention policy missing, and nothing diverged.
    let log = relay.log();
    assert!(!log.contains("created from"), "{log}");
    assert!(!log.contains("diverged"), "{log}");
}

#[test]
fn a_statement_whose_answer_is_too_long_to_hold_ran_and_is_not_queued_to_run_again() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    // An answer of more than 4 MiB on both.
    let body: Vec<u8> = (0..60_000u64)
        .flat_map(|i| {
            let pad = "x".repeat(100);
            format!(
                "big,host=h{} v={i}i,s=\"{pad}\" {}\n",
                i % 50,
                1_700_000_000_000_000_000 + i
            )
            .into_bytes()
        })
        .collect();
    for i in [&a, &b] {
        i.create_database("db");
        assert_eq!(i.write("db", "", &body).0, 204);
    }
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    let r = query(
        &mut relay,
        &[
            ("db", "db"),
            ("q", "CREATE DATABASE made; SELECT * FROM big"),
        ],
    );
    let text = r.text();
    let start = &text[..text.len().min(300)];
    assert_eq!(r.status, 500, "{start}");
    assert!(text.contains("ran on"), "{start}");
    for i in [&a, &b] {
        assert!(show(i, "SHOW DATABASES").contains("[\"made\"]"));
    }
    // Nothing waits to run it again, and both backends stay fresh.
    assert_eq!(queued_records(&mut relay, "influx-0"), 0);
    assert_eq!(queued_records(&mut relay, "influx-1"), 0);
    let status = relay.status_json();
    for backend in status["backends"].as_array().expect("backends") {
        assert_eq!(backend["queue"]["records"], 0, "{backend}");
    }
}

/// Two backends, only the second with the database `only`, and a `DELETE` in it through the
/// relay, sent with `headers`: it runs on the second and fails on the first, which is marked
/// diverged. The backends run as long as what is returned is kept.
fn delete_where_only_influx_1_has_the_database(headers: &[(&str, &str)]) -> (Relay, [Influxd; 2]) {
    let (a, b) = (Influxd::start(), Influxd::start());
    b.create_database("only");
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    let body = form(&[("db", "only"), ("q", "DELETE FROM m")]);
    let r = relay.request("POST", "/query", &all, body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let status = relay.status_json();
    let why = status["backends"][0]["diverged_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("refused state-changing statements"),
        "{status}"
    );
    assert_eq!(
        status["backends"][1]["diverged_reason"],
        serde_json::Value::Null
    );
    (relay, [a, b])
}

#[test]
fn a_backend_that_refuses_a_statement_another_ran_is_marked_diverged() {
    let _serial = serial();
    let (mut relay, _backends) = delete_where_only_influx_1_has_the_database(&[]);
    // A query that mixes a read in is answered by the backend that is still fresh, though
    // both run it and a comes first.
    let r = query(&mut relay, &[("q", "CREATE DATABASE more; SHOW DATABASES")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-influx-ha-backend"),
        Some("influx-1"),
        "{}",
        relay.log()
    );
    assert!(r.text().contains("[\"only\"]"), "{}", r.text());
}

#[test]
fn a_refusal_is_seen_when_the_client_accepts_gzip() {
    let _serial = serial();
    // Asked for gzip, the backends would compress the answers the refusal is read from.
    delete_where_only_influx_1_has_the_database(&[("Accept-Encoding", "gzip")]);
}

#[test]
fn a_refusal_is_seen_when_the_client_asks_for_msgpack() {
    let _serial = serial();
    // The Python client's default: the backends answer in MessagePack.
    delete_where_only_influx_1_has_the_database(&[("Accept", "application/x-msgpack")]);
}

#[test]
fn a_queued_statement_that_fails_on_its_backend_marks_it_diverged() {
    let _serial = serial();
    let (a, mut b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    // b has the policy already, with another duration: the statement cannot apply there.
    show(
        &b,
        "CREATE RETENTION POLICY r ON db DURATION 2d REPLICATION 1",
    );
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    b.kill();
    let q = "CREATE RETENTION POLICY r ON db DURATION 1d REPLICATION 1";
    let r = query(&mut relay, &[("q", q)]);
    assert_eq!(r.text(), "{\"results\":[{\"statement_id\":0}]}\n");
    b.restart();
    // influxd answers the replayed statement 200 with the error inside.
    wait_until("b is marked diverged", CONVERGE, || {
        let status = relay.get("/status").expect("status").text();
        let json: serde_json::Value = serde_json::from_str(&status).expect("JSON");
        json["backends"][1]["diverged_reason"]
            .as_str()
            .is_some_and(|why| {
                why.contains("a queued statement failed") && why.contains("already exists")
            })
    });
    // The report counts a record while the backend is behind its queue, which the replay
    // leaves just after the statement's acknowledgement.
    wait_until("influx-1's queue is reported empty", CONVERGE, || {
        queued_records(&mut relay, "influx-1") == 0
    });
}

#[test]
fn a_queued_statement_refused_alike_where_it_ran_leaves_its_backend_in_sync() {
    let _serial = serial();
    let (a, mut b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    b.kill();
    // influx-0 refuses it (the database is missing there, as everywhere); influx-1 has it
    // queued, and refuses it the same way on replay: nothing differs.
    let q = "CREATE RETENTION POLICY r ON nodb DURATION 1d REPLICATION 1";
    let r = query(&mut relay, &[("q", q)]);
    assert!(
        r.text().contains("database not found: nodb"),
        "{}",
        r.text()
    );
    assert_eq!(queued_records(&mut relay, "influx-1"), 1);
    b.restart();
    wait_until("the statement was replayed", CONVERGE, || {
        queued_records(&mut relay, "influx-1") == 0
    });
    let status = relay.get("/status").expect("status").text();
    let json: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(
        json["backends"][1]["diverged_reason"],
        serde_json::Value::Null,
        "{status}"
    );
    assert!(
        relay
            .log()
            .contains("refused as on every backend that ran it")
    );
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
    let queued = relay
        .get("/admin/v1/queue/influx-1/records")
        .expect("queue dump");
    assert_eq!(queued.status, 200, "{}", queued.text());
    assert!(
        !queued.text().contains("USER"),
        "never queued: {}",
        queued.text()
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
    // No password reached the log.
    let log = relay.log();
    assert!(!log.contains("pw;"), "{log}");
}

/// Writes 300 points through relay-2, which queues them for influx-1, and waits until relay-1
/// knows: its reads then all go to influx-0.
fn write_through_relay_2_and_see_relay_1_avoid_influx_1(relay1: &mut Relay, relay2: &mut Relay) {
    let w = relay2.write("db=db", &points(0..300));
    assert_eq!(w.status, 204, "{}", w.text());
    see_relay_1_avoid_influx_1(relay1);
}

/// Waits until relay-1 knows of relay-2's queue; its reads then all go to influx-0.
fn see_relay_1_avoid_influx_1(relay1: &mut Relay) {
    wait_until("relay-1 knows of relay-2's queue", CONVERGE, || {
        relay1
            .get("/status")
            .is_ok_and(|r| r.text().contains("relay-2 reports"))
    });
    for _ in 0..20 {
        let (status, n, backend) = relay_count(relay1, "db");
        assert_eq!((status, n, backend.as_str()), (200, 300, "influx-0"));
    }
}

/// A `[[peer]]` table of the config: `name` at `url`.
fn peer_toml(name: &str, url: &str) -> String {
    format!("[[peer]]\nname = \"{name}\"\nurl = \"{url}\"\n")
}

/// relay-2 in front of `urls2` and relay-1 in front of `urls1`, each the other's `[[peer]]`,
/// with `extra2` / `extra1` config; returns them once relay-1 serves reads from influx-1.
fn peered_relays(urls2: &[String], extra2: &str, urls1: &[String], extra1: &str) -> (Relay, Relay) {
    let port = |_| testkit::free_port().expect("free port");
    let (p1, p2): (u16, u16) = (port(1), port(2));
    let peer = |name: &str, port: u16| peer_toml(name, &format!("http://127.0.0.1:{port}"));
    let mut relay2 = Relay::start_urls_on(p2, urls2, &format!("{extra2}{}", peer("relay-1", p1)));
    wait_ready(&mut relay2);
    let mut relay1 = Relay::start_urls_on(p1, urls1, &format!("{extra1}{}", peer("relay-2", p2)));
    wait_ready(&mut relay1);
    wait_until("reads on relay-1 reach influx-1", CONVERGE, || {
        relay_count(&mut relay1, "db").2 == "influx-1"
    });
    (relay1, relay2)
}

#[test]
fn a_statement_sent_and_never_answered_runs_again_and_only_a_repeatable_one_keeps_sync() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    let proxy = FaultProxy::start(b.addr());
    let mut relay = Relay::start_urls(&[a.url(), proxy.url()], FAST_HEALTH);
    wait_ready(&mut relay);
    let influx_1 = |relay: &mut Relay| relay.status_json()["backends"][1].clone();

    // influx-1 takes what it is sent and never answers, until it is marked down: the
    // statement may have run there. Run again from the queue, creating a database is harmless.
    proxy.set_mode(Mode::Stall);
    let r = query(&mut relay, &[("q", "CREATE DATABASE made")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(influx_1(&mut relay)["queue"]["records"], 1);
    proxy.set_mode(Mode::Pass);
    wait_until("the queued statement ran", CONVERGE, || {
        b.query("", "SHOW DATABASES").contains("made")
            && influx_1(&mut relay)["queue"]["records"] == 0
    });
    assert_eq!(
        influx_1(&mut relay)["diverged_reason"],
        serde_json::Value::Null
    );

    // A DROP run twice may remove what was written between the two runs there alone.
    wait_until("influx-1 is up again", CONVERGE, || {
        influx_1(&mut relay)["reachability"] == "up"
    });
    proxy.set_mode(Mode::Stall);
    let r = query(&mut relay, &[("db", "db"), ("q", "DROP MEASUREMENT m")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let entry = influx_1(&mut relay);
    let why = entry["diverged_reason"].as_str().unwrap_or_default();
    assert!(why.contains("may have run"), "{entry}");
    assert_eq!(entry["queue"]["records"], 1, "{entry}");
}

#[test]
fn a_peer_tells_of_its_queue_at_once_and_of_its_drain() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    // relay-2 reaches influx-1 through a proxy that refuses connections. relay-1 checks its
    // backends and polls relay-2 once at start and then only every hour: what it learns of
    // relay-2's queue after that, relay-2 told it.
    let proxy = FaultProxy::start(b.addr());
    proxy.set_mode(Mode::Refuse);
    let (mut relay1, mut relay2) = peered_relays(
        &[a.url(), proxy.url()],
        FAST_HEALTH,
        &[a.url(), b.url()],
        "[health]\ninterval = \"1h\"\nrise = 1\nfall = 1\n",
    );

    write_through_relay_2_and_see_relay_1_avoid_influx_1(&mut relay1, &mut relay2);

    proxy.set_mode(Mode::Pass);
    wait_until("relay-1 was told that relay-2 drained", CONVERGE, || {
        relay_count(&mut relay1, "db") == (200, 300, "influx-1".to_owned())
    });
}

#[test]
fn a_peer_that_cannot_be_polled_still_tells_of_its_queue_and_of_its_drain() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    // relay-2 reaches influx-1 through a proxy that refuses connections: it queues for it.
    let refuse_b = FaultProxy::start(b.addr());
    refuse_b.set_mode(Mode::Refuse);
    let port = |_| testkit::free_port().expect("free port");
    let (p1, p2): (u16, u16) = (port(1), port(2));
    let mut relay2 = Relay::start_urls_on(
        p2,
        &[a.url(), refuse_b.url()],
        &format!(
            "{FAST_HEALTH}{}",
            peer_toml("relay-1", &format!("http://127.0.0.1:{p1}"))
        ),
    );
    wait_ready(&mut relay2);
    // relay-1 polls relay-2 through a proxy, at start and then every hour.
    let to_relay2 = FaultProxy::start(format!("127.0.0.1:{p2}").parse().expect("address"));
    let mut relay1 = Relay::start_urls_on(
        p1,
        &[a.url(), b.url()],
        &format!(
            "[health]\ninterval = \"1h\"\nrise = 1\nfall = 1\n{}",
            peer_toml("relay-2", &to_relay2.url())
        ),
    );
    wait_ready(&mut relay1);
    wait_until("relay-1 polled relay-2", CONVERGE, || {
        relay1.get("/status").is_ok_and(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap_or_default();
            v["peers"][0]["reachable"] == true
        })
    });
    // From now on relay-1 cannot reach relay-2: what it learns, relay-2's notices carry.
    to_relay2.set_mode(Mode::Refuse);

    write_through_relay_2_and_see_relay_1_avoid_influx_1(&mut relay1, &mut relay2);

    refuse_b.set_mode(Mode::Pass);
    wait_until("relay-1 was told that relay-2 drained", CONVERGE, || {
        relay_count(&mut relay1, "db") == (200, 300, "influx-1".to_owned())
    });
}

#[test]
fn a_peers_notice_is_heard_while_a_health_check_hangs() {
    let _serial = serial();
    let (a, b, c) = (Influxd::start(), Influxd::start(), Influxd::start());
    for i in [&a, &b, &c] {
        i.create_database("db");
    }
    // relay-2 reaches influx-1 through a proxy that refuses connections: it queues for it.
    // relay-1 reaches influx-2 through a proxy that will swallow its health checks whole, with
    // a health timeout of an hour: from then on each of its rounds hangs.
    let refuse_b = FaultProxy::start(b.addr());
    refuse_b.set_mode(Mode::Refuse);
    let hang_c = FaultProxy::start(c.addr());
    let (mut relay1, mut relay2) = peered_relays(
        &[a.url(), refuse_b.url(), c.url()],
        FAST_HEALTH,
        &[a.url(), b.url(), hang_c.url()],
        "[health]\ninterval = \"200ms\"\ntimeout = \"1h\"\nrise = 1\nfall = 1\n[write]\nbackend_timeout = \"1h\"\n",
    );
    // influx-2 serves no reads on relay-1 (so none waits on it), then its checks hang.
    let r = relay1.request("POST", "/admin/v1/backend/influx-2/maintenance", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    hang_c.set_mode(Mode::Blackhole);
    wait_until(
        "a health check of relay-1 hangs on influx-2",
        CONVERGE,
        || hang_c.discarded() > 0,
    );

    write_through_relay_2_and_see_relay_1_avoid_influx_1(&mut relay1, &mut relay2);
}

#[test]
fn a_peers_notice_is_heard_while_another_peer_hangs() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    // relay-2 reaches influx-1 through a proxy that refuses connections: it queues for it. It
    // cannot tell relay-1 itself (the address it has for it is closed): relay-1 gets a notice
    // without a report, as a relay of an older version sends, and must poll for the report.
    // relay-1 has a third peer behind a proxy that will swallow its polls whole, with a health
    // timeout of an hour: from then on every poll of that peer hangs.
    let refuse_b = FaultProxy::start(b.addr());
    refuse_b.set_mode(Mode::Refuse);
    let hang_peer = FaultProxy::start(a.addr());
    let port = |_| testkit::free_port().expect("free port");
    let (p1, p2, closed): (u16, u16, u16) = (port(1), port(2), port(3));
    let mut relay2 = Relay::start_urls_on(
        p2,
        &[a.url(), refuse_b.url()],
        &format!(
            "{FAST_HEALTH}{}",
            peer_toml("relay-1", &format!("http://127.0.0.1:{closed}"))
        ),
    );
    wait_ready(&mut relay2);
    let mut relay1 = Relay::start_urls_on(
        p1,
        &[a.url(), b.url()],
        &format!(
            "[health]\ninterval = \"1h\"\ntimeout = \"1h\"\nrise = 1\nfall = 1\n{}{}",
            peer_toml("relay-2", &format!("http://127.0.0.1:{p2}")),
            peer_toml("relay-3", &hang_peer.url())
        ),
    );
    wait_ready(&mut relay1);
    hang_peer.set_mode(Mode::Blackhole);

    let w = relay2.write("db=db", &points(0..300));
    assert_eq!(w.status, 204, "{}", w.text());
    let r = relay1.request("POST", "/admin/v1/queues/changed", &[], b"");
    assert_eq!(r.status, 204, "{}", r.text());
    // The notice has relay-1 poll both peers: what relay-2 says counts as it comes.
    see_relay_1_avoid_influx_1(&mut relay1);
    assert!(hang_peer.discarded() > 0, "relay-3 was polled and hangs");
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

    write_through_relay_2_and_see_relay_1_avoid_influx_1(&mut relay1, &mut relay2);

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

    // relay-2 goes away with its queue, and relay-1 restarts: relay-2's last report, kept on
    // disk, still keeps reads away from influx-1.
    relay2.kill();
    relay1.restart();
    wait_until(
        "relay-1 restarted remembers relay-2's queue",
        CONVERGE,
        || {
            let r = query(
                &mut relay1,
                &[("db", "db"), ("q", "SELECT count(v) FROM m")],
            );
            assert_ne!(r.status, 200, "served from influx-1: {}", r.text());
            r.text().contains("influx-1: peer relay-2 reports")
        },
    );
    relay2.restart();

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

#[test]
fn a_backend_a_peer_does_not_write_to_serves_no_reads() {
    let _serial = serial();
    let (mut a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    // relay-2 knows influx-0 only (say its config was not reloaded after influx-1 was
    // added): influx-1 misses what relay-2 takes. relay-9 is configured but never answers.
    let port = |_| testkit::free_port().expect("free port");
    let (p1, p2, p9): (u16, u16, u16) = (port(1), port(2), port(9));
    let _relay2 = Relay::start_urls_on(p2, &[a.url()], FAST_HEALTH);
    let mut relay1 = Relay::start_urls_on(
        p1,
        &[a.url(), b.url()],
        &format!(
            "{FAST_HEALTH}[[peer]]\nname = \"relay-2\"\nurl = \"http://127.0.0.1:{p2}\"\n[[peer]]\nname = \"relay-9\"\nurl = \"http://127.0.0.1:{p9}\"\n"
        ),
    );
    wait_ready(&mut relay1);
    let mut status = serde_json::Value::Null;
    wait_until("relay-1 heard from relay-2", CONVERGE, || {
        status = relay1.status_json();
        status["peers"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["name"] == "relay-2" && p["reachable"] == true)
        })
    });
    let backend = |status: &serde_json::Value, name: &str| {
        status["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no backend {name} in {status}"))
    };
    assert_eq!(backend(&status, "influx-0")["fresh"], true, "{status}");
    let influx1 = backend(&status, "influx-1");
    assert_eq!(influx1["fresh"], false, "{status}");
    assert!(
        influx1["not_fresh_reason"]
            .as_str()
            .is_some_and(|r| r.contains("peer relay-2 does not write to it")),
        "{status}"
    );
    // The peer never reached is listed, with why, and named in the summary.
    let relay9 = status["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "relay-9").cloned())
        .unwrap_or_else(|| panic!("relay-9 not listed: {status}"));
    assert_eq!(relay9["reachable"], false, "{status}");
    assert!(relay9["last_report"].is_null(), "{status}");
    assert!(relay9["error"].is_string(), "{status}");
    assert!(
        status["summary"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("peer relay-9: never reached")),
        "{status}"
    );
    assert!(
        relay1.log().contains("peer never reached"),
        "{}",
        relay1.log()
    );

    // Reads go to influx-0 only; without it there is no fresh backend.
    assert_eq!(relay_count(&mut relay1, "db").2, "influx-0");
    a.kill();
    wait_until("no fresh backend", CONVERGE, || {
        let r = query(
            &mut relay1,
            &[("db", "db"), ("q", "SELECT count(v) FROM m")],
        );
        assert_ne!(r.status, 200, "served from influx-1: {}", r.text());
        r.status == 503
            && r.text()
                .contains("influx-1: peer relay-2 does not write to it")
    });
}

#[test]
fn a_statement_no_queue_could_hold_is_refused_before_it_runs() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    // Records of at most 1 KiB: a longer statement could not wait for a backend that is down.
    let mut relay = Relay::start(
        &[&a, &b],
        &format!("{FAST_HEALTH}[queue]\nsegment_bytes = \"1KiB\"\n"),
    );
    wait_ready(&mut relay);
    let long_name = "x".repeat(1100);
    let create = format!("CREATE DATABASE \"{long_name}\"");
    let r = query(&mut relay, &[("q", &create)]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("statement too long to be queued"),
        "{}",
        r.text()
    );
    for i in [&a, &b] {
        assert!(
            !i.query("", "SHOW DATABASES").contains(&long_name),
            "ran anyway"
        );
    }
    // A `db` longer than a queue record's field can name: refused, not run.
    let db = "d".repeat(70_000);
    let r = query(&mut relay, &[("db", &db), ("q", "DROP MEASUREMENT m")]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("database name too long"), "{}", r.text());
    // What fits still runs everywhere.
    let r = query(&mut relay, &[("q", "CREATE DATABASE fits")]);
    assert_eq!(r.status, 200, "{}", r.text());
    for i in [&a, &b] {
        assert!(i.query("", "SHOW DATABASES").contains("fits"));
    }
}

#[test]
fn reads_sent_with_a_kill_query_run_only_on_a_fresh_backend() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    // influx-1 in maintenance: it serves no reads.
    let r = relay.request("POST", "/admin/v1/backend/influx-1/maintenance", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let mixed = |on: &str| format!("KILL QUERY 999 ON \"{on}\"; SHOW DATABASES");
    let r = query(&mut relay, &[("q", &mixed("influx-1"))]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("cannot serve fresh reads"),
        "{}",
        r.text()
    );
    // To a fresh backend, or a KILL alone, it goes as before.
    let r = query(&mut relay, &[("q", &mixed("influx-0"))]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-influx-ha-backend"), Some("influx-0"));
    let r = query(&mut relay, &[("q", "KILL QUERY 999 ON \"influx-1\"")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-influx-ha-backend"), Some("influx-1"));
}

/// A multipart body with the query as the file part `q` (as `curl -F q=@file` sends it).
fn multipart_q(boundary: &str, q: &str) -> Vec<u8> {
    format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"db\"\r\n\r\ndb\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"q\"; filename=\"q.iql\"\r\nContent-Type: application/octet-stream\r\n\r\n{q}\r\n--{boundary}--\r\n"
    )
    .into_bytes()
}

#[test]
fn query_answers_match_influxd() {
    let _serial = serial();
    let bare = Influxd::start();
    let (a, b) = (Influxd::start(), Influxd::start());
    let data = format!(
        "{}s,host=x text=\"hello, \\\"world\\\"\" 1700000000000000000\n",
        String::from_utf8_lossy(&points(0..40))
    );
    for i in [&bare, &a, &b] {
        i.create_database("db");
        assert_eq!(i.write("db", "", &data).0, 204);
    }
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    let mut direct = bare.client();

    let form_ct = ("Content-Type", "application/x-www-form-urlencoded");
    let get = |q: &str| format!("/query?{}", form(&[("db", "db"), ("q", q)]));
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Vec<u8>);
    let cases: Vec<Case<'_>> = vec![
        ("GET", "/query?q=SHOW+DATABASES".into(), vec![], vec![]),
        ("GET", get("SHOW MEASUREMENTS"), vec![], vec![]),
        ("GET", get("SHOW TAG KEYS; SHOW FIELD KEYS"), vec![], vec![]),
        ("GET", get("SELECT * FROM m LIMIT 3"), vec![], vec![]),
        ("GET", format!("{}&epoch=ms", get("SELECT * FROM m LIMIT 3")), vec![], vec![]),
        ("GET", format!("{}&epoch=s", get("SELECT * FROM m LIMIT 3")), vec![], vec![]),
        ("GET", format!("{}&epoch=h", get("SELECT * FROM m LIMIT 3")), vec![], vec![]),
        ("GET", format!("{}&chunked=true&chunk_size=7", get("SELECT * FROM m")), vec![], vec![]),
        ("GET", format!("{}&chunked=true", get("SELECT * FROM m GROUP BY host")), vec![], vec![]),
        ("GET", format!("{}&pretty=true", get("SELECT count(v) FROM m")), vec![], vec![]),
        ("GET", get("SELECT * FROM s"), vec![], vec![]),
        ("GET", get("SELECT mean(v) FROM m WHERE time >= 1700000000000000000 GROUP BY time(10ns) fill(none)"), vec![], vec![]),
        ("GET", get("EXPLAIN SELECT count(v) FROM m"), vec![], vec![]),
        ("GET", get("SELECT count(v) FROM m"), vec![("Accept", "application/csv")], vec![]),
        ("GET", get("SELECT count(v) FROM m"), vec![("Accept", "application/x-msgpack")], vec![]),
        ("GET", get("SELECT * FROM m"), vec![("Accept-Encoding", "gzip")], vec![]),
        ("GET", format!("{}&params=%7B%22h%22%3A%22h1%22%7D", get("SELECT v FROM m WHERE host = $h")), vec![], vec![]),
        ("GET", get("SELEC"), vec![], vec![]),
        ("GET", get("SELECT * FROM m WHERE"), vec![], vec![]),
        ("GET", "/query?db=db".into(), vec![], vec![]),
        ("GET", "/query?db=nosuchdb&q=SELECT+*+FROM+m".into(), vec![], vec![]),
        ("GET", "/query?q=SELECT+*+FROM+m".into(), vec![], vec![]),
        ("GET", format!("{}&u=nobody&p=secret", get("SELECT count(v) FROM m")), vec![], vec![]),
        ("GET", get("KILL QUERY 999 ON \"influx-0\""), vec![], vec![]),
        ("POST", "/query".into(), vec![form_ct], form(&[("db", "db"), ("q", "SELECT count(v) FROM m")]).into_bytes()),
        ("POST", "/query?db=db&epoch=s".into(), vec![form_ct], form(&[("q", "SELECT v FROM m LIMIT 2")]).into_bytes()),
        ("POST", "/query".into(), vec![("Content-Type", "multipart/form-data; boundary=XyZ")], multipart_q("XyZ", "SELECT count(v) FROM m;\nSHOW SERIES")),
        ("POST", "/query".into(), vec![form_ct], vec![]),
        // State-changing statements: executed on every backend, answered as influxd answers.
        ("GET", "/query?q=CREATE+DATABASE+viaget".into(), vec![], vec![]),
        ("POST", "/query".into(), vec![form_ct], form(&[("q", "CREATE DATABASE other; CREATE RETENTION POLICY week ON other DURATION 7d REPLICATION 1")]).into_bytes()),
        ("POST", "/query".into(), vec![form_ct], form(&[("db", "db"), ("q", "SELECT v INTO m2 FROM m WHERE host = 'h3'")]).into_bytes()),
        ("POST", "/query".into(), vec![form_ct], form(&[("db", "db"), ("q", "DELETE FROM m WHERE host = 'h9'")]).into_bytes()),
        ("POST", "/query".into(), vec![form_ct], form(&[("q", "DROP DATABASE viaget")]).into_bytes()),
        ("POST", "/query".into(), vec![form_ct], form(&[("q", "CREATE RETENTION POLICY bad ON nosuchdb DURATION 1d REPLICATION 1")]).into_bytes()),
        ("GET", get("SELECT count(v) FROM m; SELECT count(v) FROM m2"), vec![], vec![]),
        ("GET", "/api/v2/query".into(), vec![], vec![]),
        ("POST", "/api/v2/query".into(), vec![("Content-Type", "application/json")], b"{}".to_vec()),
        ("POST", "/api/v1/prom/read?db=db&u=x&p=y".into(), vec![("Content-Type", "application/x-protobuf"), ("Content-Encoding", "snappy")], b"not snappy".to_vec()),
        ("POST", "/api/v1/prom/read".into(), vec![("Content-Encoding", "snappy")], vec![]),
        ("PUT", "/query".into(), vec![], vec![]),
    ];

    let mut mismatches = Vec::new();
    for (method, target, headers, body) in &cases {
        let want = direct
            .request(method, target, headers, body)
            .expect("influxd answers");
        let got = relay.request(method, target, headers, body);
        let fields = |r: &Response| {
            (
                r.status,
                r.body.clone(),
                ["X-Influxdb-Error", "Content-Type", "Content-Encoding"]
                    .map(|h| r.header(h).map(str::to_owned)),
            )
        };
        if fields(&want) != fields(&got) {
            mismatches.push(format!(
                "{method} {target} {:?}\n  influxd:   {} {:?} {:?}\n  influx-ha: {} {:?} {:?}",
                String::from_utf8_lossy(body),
                want.status,
                want.text(),
                fields(&want).2,
                got.status,
                got.text(),
                fields(&got).2,
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // The state-changing statements reached both backends.
    for i in [&a, &b] {
        assert_eq!(count(i, "db", "v", "m2"), 4);
        let dbs = show(i, "SHOW DATABASES");
        assert!(
            dbs.contains("[\"other\"]") && !dbs.contains("viaget"),
            "{dbs}"
        );
    }
}

/// A `/proc/<pid>/status` value in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

#[test]
fn a_large_chunked_answer_streams_with_flat_memory() {
    let _serial = serial();
    let a = Influxd::start();
    a.create_database("db");
    // 20,000 points of 2 KiB each: an answer of over 40 MB.
    let filler = "x".repeat(2048);
    for batch in 0..20u64 {
        let mut body = String::new();
        for i in batch * 1000..(batch + 1) * 1000 {
            body.push_str(&format!(
                "big,host=h{} s=\"{filler}\",v={i}i {}\n",
                i % 10,
                1_700_000_000_000_000_000u64 + i
            ));
        }
        assert_eq!(a.write("db", "", body).0, 204);
    }
    let mut relay = Relay::start(&[&a], FAST_HEALTH);
    wait_ready(&mut relay);
    let pid = relay.pid().expect("running");
    // Warm up: pools, buffers and allocator arenas exist before the peak is taken.
    let small = relay.request(
        "GET",
        "/query?db=db&chunked=true&chunk_size=100&q=SELECT+*+FROM+big+LIMIT+500",
        &[],
        b"",
    );
    assert_eq!(small.status, 200);
    let peak_before = proc_kib(pid, "VmHWM");

    let r = relay.request(
        "GET",
        "/query?db=db&chunked=true&chunk_size=500&q=SELECT+*+FROM+big",
        &[],
        b"",
    );
    assert_eq!(
        r.status,
        200,
        "{}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
    );
    assert!(r.body.len() > 40_000_000, "{} bytes", r.body.len());
    let chunks = r.text().matches("\"statement_id\":0").count();
    assert!(chunks >= 40, "answered in {chunks} chunks");
    let growth_kib = proc_kib(pid, "VmHWM").saturating_sub(peak_before);
    assert!(
        growth_kib < 16 * 1024,
        "the relay's peak memory grew by {growth_kib} KiB for a {} byte answer",
        r.body.len()
    );
}

/// Runs a program to completion and returns its stdout; panics with its output on failure.
fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn the_python_client_and_the_influx_cli_work_against_influx_ha() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    let port = relay.port().to_string();

    // The Python `influxdb` client (Debian python3-influxdb).
    let script = format!(
        r#"
import sys
from influxdb import InfluxDBClient
c = InfluxDBClient(host="127.0.0.1", port={port}, username="someone", password="secret", database="pydb", timeout=60)
print("version", c.ping())
c.create_database("pydb")
c.create_retention_policy("hourly", "1h", 1, database="pydb")
points = [{{"measurement": "cpu", "tags": {{"host": "h%d" % (i % 3)}}, "time": 1700000000000000000 + i, "fields": {{"v": float(i)}}}} for i in range(30)]
assert c.write_points(points, time_precision="n")
print("databases", sorted(d["name"] for d in c.get_list_database()))
print("measurements", [m["name"] for m in c.get_list_measurements()])
rs = c.query("SELECT count(v) FROM cpu")
print("count", list(rs.get_points())[0]["count"])
rs = c.query("SELECT v FROM cpu WHERE host = $h", bind_params={{"h": "h1"}}, epoch="ns")
print("h1", len(list(rs.get_points())))
# Chunked answers in msgpack (this client's default) are more than it decodes, also from
# influxd itself: ask for JSON, where it reads each chunk.
j = InfluxDBClient(host="127.0.0.1", port={port}, database="pydb", headers={{"Accept": "application/json"}}, timeout=60)
chunks = list(j.query("SELECT * FROM cpu", chunked=True, chunk_size=7))
print("chunked", len(chunks), sum(len(list(r.get_points())) for r in chunks))
print("rps", sorted(r["name"] for r in c.get_list_retention_policies("pydb")))
try:
    c.query("SELEC")
except Exception as e:
    print("error", e)
"#
    );
    let out = run("/usr/bin/python3", &["-c", &script]);
    for expected in [
        "version 1.6.7~rc0",
        "databases ['pydb']",
        "measurements ['cpu']",
        "count 30",
        "h1 10",
        "chunked 5 30",
        "rps ['autogen', 'hourly']",
        "error 400: {\"error\":\"error parsing query: found SELEC",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    for i in [&a, &b] {
        assert_eq!(count(i, "pydb", "v", "cpu"), 30);
    }

    // The influx CLI (Debian influxdb-client).
    let cli = |args: &[&str]| {
        let mut all = vec![
            "-host",
            "127.0.0.1",
            "-port",
            port.as_str(),
            "-format",
            "csv",
        ];
        all.extend_from_slice(args);
        run("influx", &all)
    };
    cli(&["-execute", "CREATE DATABASE clidb"]);
    cli(&[
        "-database",
        "clidb",
        "-execute",
        "INSERT mem,host=a used=42i 1700000000000000000",
    ]);
    assert!(cli(&["-execute", "SHOW DATABASES"]).contains("databases,clidb"));
    assert!(
        cli(&["-database", "clidb", "-execute", "SHOW MEASUREMENTS"]).contains("measurements,mem")
    );
    let select = cli(&["-database", "clidb", "-execute", "SELECT * FROM mem"]);
    assert!(select.contains("mem,1700000000000000000,a,42"), "{select}");
    for i in [&a, &b] {
        assert_eq!(count(i, "clidb", "used", "mem"), 1);
    }
}

#[test]
fn a_backend_catching_up_serves_no_reads_until_in_sync() {
    let _serial = serial();
    let (mut a, mut b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    let mut relay = Relay::start(&[&a, &b], FAST_HEALTH);
    wait_ready(&mut relay);
    b.kill();
    // 60 batches while influx-1 is down: acknowledged by influx-0, queued for influx-1.
    for n in 0..60 {
        let w = relay.write("db=db", &points(n * 100..(n + 1) * 100));
        assert_eq!(w.status, 204, "batch {n}: {}", w.text());
    }
    wait_until("the queue report shows influx-1's queue", CONVERGE, || {
        queued_records(&mut relay, "influx-1") > 0
    });
    a.kill();
    let (status, _, detail) = relay_count(&mut relay, "db");
    assert_eq!(status, 503, "no backend left: {detail}");
    b.restart();
    // Only influx-1 is left, and it catches up from the queue: every read is either refused
    // (it is catching up, or not known up yet) or sees every acknowledged point.
    wait_until("influx-1 serves reads once in sync", CONVERGE, || {
        let (status, n, detail) = relay_count(&mut relay, "db");
        match status {
            200 => {
                assert_eq!(
                    n, 6000,
                    "a read saw a backend that was not in sync: {detail}"
                );
                true
            }
            503 => false,
            other => panic!("unexpected {other}: {detail}"),
        }
    });
    let (_, _, backend) = relay_count(&mut relay, "db");
    assert_eq!(backend, "influx-1");
}

#[test]
fn a_stopped_backend_is_left_for_the_next_once_marked_down() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
        assert_eq!(i.write("db", "", points(0..100)).0, 204);
    }
    // A query timeout far beyond the client's 60 s: a read stuck on the stopped backend can
    // only end in time by being moved to the other one when the health checks mark it down.
    let mut relay = Relay::start(
        &[&a, &b],
        &format!("{FAST_HEALTH}[query]\ntimeout = \"1h\"\n"),
    );
    wait_ready(&mut relay);
    a.stop();
    for round in 0..40 {
        let (status, n, detail) = relay_count(&mut relay, "db");
        assert_eq!((status, n), (200, 100), "read {round}: {detail}");
    }
    a.cont();
}

/// A small deterministic generator (xorshift), so that the differential test below sends the
/// same queries on every run.
struct Rng(u64);

impl Rng {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        from[(self.0 % from.len() as u64) as usize]
    }
}

/// Statements of reads only (safe to run), built from the pieces the statement splitter must
/// get right: comments with slashes and quotes, regexes with quotes, escapes and semicolons,
/// divisions, strings and identifiers holding what would end a statement.
fn tricky_read(rng: &mut Rng) -> String {
    let field = [
        "v",
        "\"v\"",
        "v / 2",
        "v/2",
        "*",
        "/v/",
        "/v'/",
        "v /* c/ ' */ + 1",
        "max(v)",
        "\"we/ird;\"",
        "v -- c'\n",
        "v -- c'\r",
        "1./2",
        "v * 2 / 3",
    ];
    let source = [
        "m",
        "/m/",
        "/m'/",
        "/a;b/",
        "\"m;x\"",
        "/a\\/b/",
        "/a\\\\/",
        "db.autogen.m",
        "db.autogen./m'/",
        "m, /x'/",
        "(SELECT v FROM m WHERE t = ';')",
    ];
    let cond = [
        "",
        " WHERE time > 0",
        " WHERE t =~ /a'/",
        " WHERE t = 'x;y'",
        " WHERE t = 'a\\'b'",
        " WHERE /* c/ */ time > 0",
        " WHERE t !~ /a\\\\/ AND v > 1",
        " WHERE v / 2 > 1 OR t =~ /;/",
        " WHERE \"t/\" = 'x'",
        " WHERE time > 0 -- '\n",
    ];
    let group = [
        "",
        " GROUP BY t",
        " GROUP BY /x'/",
        " GROUP BY t fill(none)",
    ];
    match rng.pick(&["select", "select", "select", "show"]) {
        "select" => format!(
            "SELECT {} FROM {}{}{}",
            rng.pick(&field),
            rng.pick(&source),
            rng.pick(&cond),
            rng.pick(&group)
        ),
        _ => rng
            .pick(&[
                "SHOW DATABASES",
                "SHOW MEASUREMENTS WITH MEASUREMENT =~ /x'/",
                "SHOW MEASUREMENTS WITH MEASUREMENT =~ db.autogen./x'/",
                "SHOW TAG KEYS FROM /m;/",
                "SHOW FIELD KEYS -- x'\n",
            ])
            .to_owned(),
    }
}

#[test]
fn statements_are_split_as_influxdb_parses_them() {
    let _serial = serial();
    let influxd = Influxd::start();
    influxd.create_database("db");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut compared, mut refused) = (0, 0);
    for _ in 0..400 {
        let n = 1
            + (rng
                .pick(&["0", "1", "2", "3"])
                .parse::<usize>()
                .unwrap_or(0));
        let statements: Vec<String> = (0..n).map(|_| tricky_read(&mut rng)).collect();
        let q = statements.join(rng.pick(&["; ", ";\n", " ;", ";"]));
        let r = influxd
            .query_params(&[("db", "db"), ("q", &q)])
            .expect("influxd answers");
        let answer: serde_json::Value = serde_json::from_str(&r.text()).expect("JSON");
        let Some(results) = answer["results"].as_array() else {
            // InfluxDB could not parse it: nothing ran, wherever it was sent.
            assert!(answer["error"].is_string(), "{q:?}: {answer}");
            refused += 1;
            continue;
        };
        if results.iter().any(|r| r["error"].is_string()) {
            // A statement failed, and InfluxDB lists no result for those after it.
            refused += 1;
            continue;
        }
        let ours = influx_ha::query::classify::classify(&q);
        assert_eq!(
            ours.statements.len(),
            results.len(),
            "{q:?}: influxd ran {} statements: {answer}",
            results.len()
        );
        assert_eq!(ours.route, influx_ha::query::classify::Route::Read, "{q:?}");
        compared += 1;
    }
    // Most of them run: the comparison is not an empty one.
    assert!(compared > 150, "compared {compared}, refused {refused}");
}
