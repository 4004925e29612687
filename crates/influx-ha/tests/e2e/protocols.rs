//! Graphite, OpenTSDB and Prometheus remote write: the same input sent to a real influxd's own
//! listeners (the reference) and through influx-ha to two other influxd; the points stored
//! must be identical, byte for byte in `SELECT * … GROUP BY *` dumps.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use influx_ha::ingest::promwrite::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;
use testkit::{Influxd, Response};

use crate::relay::Relay;
use crate::support::{dump, serial};

const CONVERGE: Duration = Duration::from_secs(120);

/// Graphite templates used by both sides (InfluxDB 1.x syntax).
const TEMPLATES: &str = r#"[
    "servers.* .host.measurement.field",
    "app.* .service.measurement* env=prod",
    "joined.* .host.host.measurement",
    "wild.* measurement.field*",
    "stats.*.* measurement.region.measurement region=none,kind=stat",
  ]"#;

/// What both sides receive over Graphite: templates, separator, default tags, escaping, bad
/// lines (too many fields, not a number, out of range, infinite), NaN, fractions, `\r\n`.
const GRAPHITE_LINES: &str = "servers.web01.cpu.idle 98.5 1700000000\n\
    servers.web02.cpu.idle 97 1700000001.25\n\
    app.api.req.count 12 1700000002\r\n\
    app.api.req.latency.p99 0.25 1700000003\n\
    joined.a.b.mem 1 1700000004\n\
    wild.net.rx.bytes 10 1700000005\n\
    stats.eu.cpu 4 1700000006\n\
    plain.metric.path 3 1700000007\n\
    plain.metric.path NaN 1700000008\n\
    bad line with too many fields\n\
    plain.metric.path notanumber 1700000009\n\
    plain.metric.path 1 9999999999\n\
    plain.metric.path +Inf 1700000010\n\
    \n\
    servers.web03.disk.used 1e3 1700000011\n\
    weird,name=x 5 1700000012\n\
    servers.web01.cpu.idle -0.5 1700000013\n\
    sentinel.done 1 1700000099\n";

/// Polls until `reference`'s dump of `db` contains `marker` and equals every replica's;
/// panics with all dumps and the relay's log otherwise.
fn wait_same(relay: &Relay, reference: &Influxd, db: &str, replicas: &[&Influxd], marker: &str) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let want = dump(reference, db);
        let got: Vec<String> = replicas.iter().map(|r| dump(r, db)).collect();
        if want.contains(marker) && got.iter().all(|g| *g == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stored points differ in {db}:\ninfluxd's own listener:\n{want}\nthrough influx-ha:\n{}\nrelay log:\n{}\nreference log:\n{}",
            got.join("\n"),
            relay.log(),
            reference.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connects to a listener, waiting for it to be bound: a node binds its protocol listeners
/// after its HTTP listener answers, once it has created their databases.
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "connecting to port {port}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_tcp(port: u16, data: &[u8]) {
    let mut s = connect(port);
    s.write_all(data).expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("close");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn graphite_tcp_and_udp_store_what_influxd_s_own_listener_stores() {
    let _serial = serial();
    let reference = Influxd::start_with(&format!(
        r#"
[[graphite]]
  enabled = true
  bind-address = "127.0.0.1:{{port0}}"
  database = "graphite"
  protocol = "tcp"
  batch-timeout = "100ms"
  separator = "_"
  tags = ["dc=eu", "host=unknown"]
  templates = {TEMPLATES}
[[graphite]]
  enabled = true
  bind-address = "127.0.0.1:{{port1}}"
  database = "graphite_udp"
  protocol = "udp"
  batch-timeout = "100ms"
"#
    ));
    let (a, b) = (Influxd::start(), Influxd::start());
    let [tcp_port, udp_port] = [free(), free()];
    let relay = Relay::start(
        &[&a, &b],
        &format!(
            r#"
[[graphite]]
bind = "127.0.0.1:{tcp_port}"
separator = "_"
tags = ["dc=eu", "host=unknown"]
templates = {TEMPLATES}

[[graphite]]
bind = "127.0.0.1:{udp_port}"
protocol = "udp"
database = "graphite_udp"
"#
        ),
    );
    // Both create their databases themselves (as influxd's service does).
    send_tcp(reference.extra_port(0), GRAPHITE_LINES.as_bytes());
    send_tcp(tcp_port, GRAPHITE_LINES.as_bytes());
    wait_same(&relay, &reference, "graphite", &[&a, &b], "sentinel.done");

    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let udp_lines =
        "udp.one 1 1700000000\nudp.two 2 1700000001\nbroken\nudp.sentinel 3 1700000002\n";
    // Datagrams can be lost on a busy machine: resend until both have them (idempotent).
    let deadline = Instant::now() + CONVERGE;
    loop {
        udp.send_to(udp_lines.as_bytes(), ("127.0.0.1", reference.extra_port(1)))
            .expect("send");
        udp.send_to(udp_lines.as_bytes(), ("127.0.0.1", udp_port))
            .expect("send");
        std::thread::sleep(Duration::from_millis(500));
        let done = [&reference, &a, &b]
            .iter()
            .all(|i| dump(i, "graphite_udp").contains("udp.sentinel"));
        if done || Instant::now() > deadline {
            break;
        }
    }
    wait_same(
        &relay,
        &reference,
        "graphite_udp",
        &[&a, &b],
        "udp.sentinel",
    );
}

fn free() -> u16 {
    testkit::free_port().expect("free port")
}

fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(value, timestamp)| Sample { value, timestamp })
            .collect(),
    }
}

fn snappy(req: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("compress")
}

/// Headers Prometheus sends with a remote write.
const PROM_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

fn prom_write(client: &mut testkit::HttpClient, query: &str, body: &[u8]) -> Response {
    client
        .request(
            "POST",
            &format!("/api/v1/prom/write?{query}"),
            PROM_HEADERS,
            body,
        )
        .expect("remote write to influxd")
}

fn prom_write_relay(relay: &mut Relay, query: &str, body: &[u8]) -> Response {
    relay.request(
        "POST",
        &format!("/api/v1/prom/write?{query}"),
        PROM_HEADERS,
        body,
    )
}

#[test]
fn prometheus_remote_write_stores_what_influxd_stores() {
    let _serial = serial();
    let reference = Influxd::start();
    let (a, b) = (Influxd::start(), Influxd::start());
    let mut relay = Relay::start(&[&a, &b], "");
    for i in [&reference, &a, &b] {
        i.create_database("prom");
    }
    let ms = 1_700_000_000_000i64;
    let req = WriteRequest {
        timeseries: vec![
            series(
                &[
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", "0"),
                    ("mode", "idle"),
                    ("instance", "host a:9100"),
                    ("job", "node,exporter"),
                ],
                &[
                    (1234.5, ms),
                    (1235.25, ms + 15_000),
                    (f64::NAN, ms + 30_000),
                ],
            ),
            series(
                &[("__name__", "up"), ("job", "x=y"), ("empty", "")],
                &[(1.0, ms + 1), (0.0, ms + 2)],
            ),
            series(&[("job", "nameless")], &[(-3.5e-7, ms + 3)]),
            series(&[("__name__", "big")], &[(1.7976931348623157e308, ms + 4)]),
        ],
    };
    let body = snappy(&req);
    let mut reference_client = reference.client();
    let want = prom_write(&mut reference_client, "db=prom", &body);
    let got = prom_write_relay(&mut relay, "db=prom", &body);
    assert_eq!((got.status, got.text()), (want.status, want.text()));
    assert_eq!(want.status, 204, "{}", want.text());
    wait_same(
        &relay,
        &reference,
        "prom",
        &[&a, &b],
        "node_cpu_seconds_total",
    );

    // Refused as a whole, with influxd's answers.
    for (query, body) in [
        ("db=prom", b"definitely not snappy".to_vec()),
        ("", body.clone()),
        ("db=prom&consistency=bogus", body.clone()),
        ("db=nosuchdb", body.clone()),
    ] {
        let want = prom_write(&mut reference_client, query, &body);
        let got = prom_write_relay(&mut relay, query, &body);
        assert_eq!(
            (got.status, got.text()),
            (want.status, want.text()),
            "{query}"
        );
    }
    let inf = snappy(&WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "with_inf")],
                &[(f64::INFINITY, ms), (2.0, ms + 1)],
            ),
            series(&[("__name__", "after_inf")], &[(3.0, ms)]),
        ],
    });
    let want = prom_write(&mut reference_client, "db=prom", &inf);
    let got = prom_write_relay(&mut relay, "db=prom", &inf);
    // influxd refuses the whole request for one infinite sample; influx-ha gives the same
    // answer (so Prometheus does not resend) but keeps the other samples.
    assert_eq!((got.status, got.text()), (want.status, want.text()));
    assert_eq!(
        want.text(),
        "{\"error\":\"+/-Inf is an unsupported value for field value\"}\n"
    );
    for (name, i) in [("a", &a), ("b", &b)] {
        let deadline = Instant::now() + CONVERGE;
        while !dump(i, "prom").contains("after_inf") {
            assert!(
                Instant::now() < deadline,
                "after_inf never reached backend {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let stored = i.query("prom", "SELECT * FROM with_inf");
        assert!(
            stored.contains("[1700000000001000000,\"with_inf\",2]"),
            "{stored}"
        );
    }
    assert!(!dump(&reference, "prom").contains("after_inf"));
    let get = relay.request("GET", "/api/v1/prom/write?db=prom", &[], b"");
    let want = reference_client
        .request("GET", "/api/v1/prom/write?db=prom", &[], b"")
        .expect("GET");
    assert_eq!(
        (get.status, get.header("Allow")),
        (want.status, want.header("Allow"))
    );
}

/// Telnet lines both sides receive: seconds, milliseconds, bad tags (dropped, point kept),
/// `version`, and bad lines (time length, value, NaN, too short) among good ones.
const TELNET_LINES: &str = "put sys.cpu.user 1356998400 42.5 host=web01 cpu=0\n\
    put sys.cpu.user 1356998401123 43 host=web01 cpu=0\r\n\
    put sys.mem 1356998402 1e3 host=web02 bad= =x novalue dc=a=b\n\
    version\n\
    put bad.time 135699840 1\n\
    put bad.value 1356998403 x\n\
    put sys.nan 1356998404 NaN\n\
    put short\n\
    put sys.epoch 13569984xx 7\n\
    put sentinel.telnet 1356998499 1\n";

/// `/api/put` bodies both sides receive, one request each.
const PUT_BODIES: &[&str] = &[
    r#"{"metric":"http.one","timestamp":1356998410,"value":1.5,"tags":{"host":"a b","dc":"x,y"}}"#,
    r#"[{"metric":"http.many","timestamp":1356998411000,"value":2,"tags":{"k":"v"}},{"metric":"http.many","timestamp":1356998412345,"value":3}]"#,
    r#"[{"metric":"http.far","timestamp":9223372036854775807,"value":4},{"metric":"http.after","timestamp":1356998414,"value":5}]"#,
    r#"[]"#,
    r#"not json"#,
    r#"[{"metric":1}]"#,
    r#"{"metric":"x","value":"1"}"#,
    r#"{"metric":"sentinel.http","timestamp":1356998499,"value":1}"#,
];

fn telnet(port: u16, data: &[u8]) -> Vec<u8> {
    let mut s = connect(port);
    s.write_all(data).expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("close");
    let mut answer = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let _ = s.read_to_end(&mut answer);
    answer
}

#[test]
fn opentsdb_telnet_and_http_store_what_influxd_s_own_listener_stores() {
    let _serial = serial();
    let reference = Influxd::start_with(
        r#"
[[opentsdb]]
  enabled = true
  bind-address = "127.0.0.1:{port0}"
  database = "opentsdb"
  batch-timeout = "100ms"
"#,
    );
    let (a, b) = (Influxd::start(), Influxd::start());
    let port = free();
    let relay = Relay::start(
        &[&a, &b],
        &format!("[[opentsdb]]\nbind = \"127.0.0.1:{port}\"\n"),
    );
    let want = telnet(reference.extra_port(0), TELNET_LINES.as_bytes());
    let got = telnet(port, TELNET_LINES.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(want, b"InfluxDB TSDB proxy");
    wait_same(&relay, &reference, "opentsdb", &[&a, &b], "sentinel.telnet");

    let mut reference_http =
        testkit::HttpClient::new(([127, 0, 0, 1], reference.extra_port(0)).into());
    let mut relay_http = testkit::HttpClient::new(([127, 0, 0, 1], port).into());
    for body in PUT_BODIES {
        let want = reference_http
            .request(
                "POST",
                "/api/put",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
            .expect("influxd /api/put");
        let got = relay_http
            .request(
                "POST",
                "/api/put",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
            .expect("influx-ha /api/put");
        assert_eq!(
            (got.status, got.text()),
            (want.status, want.text()),
            "{body}"
        );
    }
    for target in ["/api/metadata/put", "/nothing"] {
        let want = reference_http
            .request("POST", target, &[], b"")
            .expect("influxd");
        let got = relay_http
            .request("POST", target, &[], b"")
            .expect("influx-ha");
        assert_eq!(
            (got.status, got.text()),
            (want.status, want.text()),
            "{target}"
        );
    }
    wait_same(&relay, &reference, "opentsdb", &[&a, &b], "sentinel.http");

    // OpenTSDB's own reporting, which InfluxDB does not offer (it answers 204). A point
    // without a metric is refused: InfluxDB would store it under an empty measurement name,
    // which line protocol cannot carry and no query can name.
    let details = relay_http
        .request(
            "POST",
            "/api/put?details",
            &[],
            br#"[{"timestamp":1356998413,"value":4},{"metric":"http.detailed","timestamp":1356998414,"value":5}]"#,
        )
        .expect("details");
    assert_eq!(details.status, 200);
    assert_eq!(
        details.text(),
        r#"{"errors":[{"datapoint":{"metric":"","timestamp":1356998413,"value":4.0},"error":"missing measurement"}],"failed":1,"success":1}"#
    );
    for i in [&a, &b] {
        let deadline = Instant::now() + CONVERGE;
        while !dump(i, "opentsdb").contains("http.detailed") {
            assert!(Instant::now() < deadline, "http.detailed not stored");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
