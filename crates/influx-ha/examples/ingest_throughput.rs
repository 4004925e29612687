//! Throughput of the collector-protocol listeners, each feeding a sink that only counts lines
//! (no backend): how fast a listener turns its protocol into validated line protocol.
//!
//! `cargo run --release -p influx-ha --example ingest_throughput [points]`
//!
//! Measured over loopback, client and listener on the same machine:
//! - `tcp` (line protocol, the baseline), `graphite-tcp` (with templates) and `opentsdb`
//!   telnet: 4 connections, each sending its share of `points` lines as fast as it can;
//! - `graphite-udp`: one sender, 60 KB datagrams, at most two in flight (the kernel's
//!   default receive buffer holds about three), with the loss;
//! - `opentsdb /api/put`: one keep-alive connection, 1,000-point JSON arrays;
//! - Prometheus remote write: decoding and conversion only (snappy + protobuf → line
//!   protocol, one core), 1,000-series requests of 1 sample each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use influx_ha::config::Config;
use influx_ha::http::error::RequestError;
use influx_ha::ingest::promwrite::{self, Label, Sample, TimeSeries, WriteRequest};
use influx_ha::ingest::{Listeners, Sink};
use lineproto::Precision;
use prost::Message;

/// Counts the lines it is given.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicU64>);

impl Sink for Counting {
    async fn write(&self, _db: &str, _p: Precision, data: Bytes) -> Result<(), RequestError> {
        let n = data.iter().filter(|&&b| b == b'\n').count();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }
}

const CONNECTIONS: usize = 4;

fn lines(kind: &str, n: usize, offset: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 64);
    for i in offset..offset + n {
        let host = i % 100;
        let ts = 1_700_000_000 + (i / 100) as u64;
        let line = match kind {
            "tcp" => format!("cpu,host=h{host} user={}.5 {ts}000000000\n", i % 97),
            "graphite-tcp" | "graphite-udp" => {
                format!("servers.h{host}.cpu.user {}.5 {ts}\n", i % 97)
            }
            _ => format!("put cpu.user {ts} {}.5 host=h{host}\n", i % 97),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

fn wait_for(counter: &AtomicU64, target: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    while counter.load(Ordering::Relaxed) < target && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

fn report(what: &str, points: u64, bytes: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{what:<34} {points:>9} points  {:>10.0} points/s  {:>7.1} MB/s",
        points as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}

fn tcp_run(kind: &str, addr: SocketAddr, counter: &AtomicU64, points: usize) {
    let per = points / CONNECTIONS;
    let bodies: Vec<Vec<u8>> = (0..CONNECTIONS)
        .map(|c| lines(kind, per, c * per))
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let before = counter.load(Ordering::Relaxed);
    let start = Instant::now();
    let senders: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(&body).expect("send");
                s.shutdown(std::net::Shutdown::Write).expect("close");
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let target = before + (per * CONNECTIONS) as u64;
    wait_for(counter, target, Duration::from_secs(120));
    let elapsed = start.elapsed();
    report(
        kind,
        counter.load(Ordering::Relaxed) - before,
        bytes,
        elapsed,
    );
}

fn udp_run(addr: SocketAddr, counter: &AtomicU64, points: usize) {
    let body = lines("graphite-udp", points, 0);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut datagrams = Vec::new();
    let mut start_of = 0;
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' && i + 1 - start_of > 60_000 {
            datagrams.push(&body[start_of..=i]);
            start_of = i + 1;
        }
    }
    datagrams.push(&body[start_of..]);
    let before = counter.load(Ordering::Relaxed);
    let start = Instant::now();
    // At most two datagrams in flight (the kernel's default receive buffer holds about
    // three): this measures what the listener processes, not how fast the kernel drops.
    let mut sent_lines = 0u64;
    let mut in_flight: std::collections::VecDeque<u64> = Default::default();
    for d in &datagrams {
        while in_flight.len() >= 2 {
            let need = in_flight[0];
            let wait = Instant::now();
            while counter.load(Ordering::Relaxed) - before < need
                && wait.elapsed() < Duration::from_millis(200)
            {
                std::hint::spin_loop();
            }
            in_flight.pop_front();
        }
        let _ = socket.send_to(d, addr);
        sent_lines += d.iter().filter(|&&b| b == b'\n').count() as u64;
        in_flight.push_back(sent_lines);
    }
    let target = before + points as u64;
    // Lost datagrams never arrive: wait until nothing more comes.
    let mut last = counter.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let now = counter.load(Ordering::Relaxed);
        if now >= target {
            break;
        }
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(300) {
            break;
        }
    }
    let received = counter.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed();
    report("graphite-udp", received, body.len(), elapsed);
    println!(
        "{:<34} {:.1} % of the points lost (kernel buffer overflows)",
        "",
        100.0 * (points as u64 - received) as f64 / points as f64
    );
}

fn http_run(addr: SocketAddr, counter: &AtomicU64, points: usize) {
    let per_request = 1000;
    let mut s = BufReader::new(TcpStream::connect(addr).expect("connect"));
    let before = counter.load(Ordering::Relaxed);
    let mut bytes = 0;
    let start = Instant::now();
    for r in 0..points / per_request {
        let mut body = String::from("[");
        for i in 0..per_request {
            let n = r * per_request + i;
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"metric":"cpu.user","timestamp":{},"value":{}.5,"tags":{{"host":"h{}"}}}}"#,
                1_700_000_000 + n / 100,
                n % 97,
                n % 100
            ));
        }
        body.push(']');
        bytes += body.len();
        let request = format!(
            "POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.get_mut().write_all(request.as_bytes()).expect("send");
        let mut status = String::new();
        s.read_line(&mut status).expect("status");
        assert!(status.contains(" 204 "), "{status}");
        loop {
            let mut header = String::new();
            s.read_line(&mut header).expect("header");
            if header == "\r\n" {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    report(
        "opentsdb /api/put (1,000 per request)",
        counter.load(Ordering::Relaxed) - before,
        bytes,
        elapsed,
    );
}

fn prom_run(points: usize) {
    let series_per_request = 1000;
    let requests: Vec<Vec<u8>> = (0..points / series_per_request)
        .map(|r| {
            let req = WriteRequest {
                timeseries: (0..series_per_request)
                    .map(|i| TimeSeries {
                        labels: vec![
                            Label {
                                name: "__name__".into(),
                                value: "node_cpu_seconds_total".into(),
                            },
                            Label {
                                name: "cpu".into(),
                                value: (i % 8).to_string().into(),
                            },
                            Label {
                                name: "instance".into(),
                                value: format!("h{}:9100", i % 100).into(),
                            },
                            Label {
                                name: "mode".into(),
                                value: "idle".into(),
                            },
                        ],
                        samples: vec![Sample {
                            value: (r * i) as f64 + 0.5,
                            timestamp: 1_700_000_000_000 + r as i64,
                        }],
                    })
                    .collect(),
            };
            snap::raw::Encoder::new()
                .compress_vec(&req.encode_to_vec())
                .expect("compress")
        })
        .collect();
    let bytes: usize = requests.iter().map(Vec::len).sum();
    let start = Instant::now();
    let mut converted = 0;
    for body in &requests {
        let req = promwrite::decode(body, promwrite::Limits::of(64 << 20)).expect("decodes");
        let c = promwrite::convert(&req);
        let v = lineproto::validate(&c.lines, Precision::Nanoseconds, 0);
        converted += v.points();
    }
    report(
        "prometheus remote write (convert)",
        converted as u64,
        bytes,
        start.elapsed(),
    );
}

fn main() {
    let points: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let text = "data_dir = \"/tmp/unused\"\n[http]\nbind = \"127.0.0.1:0\"\n\
        [[tcp]]\nbind = \"127.0.0.1:0\"\ndatabase = \"t\"\n\
        [[graphite]]\nbind = \"127.0.0.1:0\"\n\
        templates = [\"servers.* .host.measurement.field\"]\n\
        [[graphite]]\nbind = \"127.0.0.1:0\"\nprotocol = \"udp\"\n\
        [[opentsdb]]\nbind = \"127.0.0.1:0\"\n\
        [[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n";
    let config = Config::from_toml(text, "example").expect("valid config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let counter = Counting::default();
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let stats = runtime.block_on(async {
        // The node's default budget (`max_inflight_bytes`).
        let budget = influx_ha::http::body::InflightBytes::new(32 << 20);
        let listeners = Listeners::bind(&config, counter.clone(), &budget)
            .await
            .expect("listeners bind");
        let stats = listeners.stats();
        let _tasks = listeners.spawn(&stop);
        stats
    });
    let addr = |kind: &str| {
        stats
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.addr)
            .expect("listener")
    };
    println!("{points} points per listener; sink counts lines (no backend)");
    let c = &counter.0;
    tcp_run("tcp", addr("tcp"), c, points);
    tcp_run("graphite-tcp", addr("graphite-tcp"), c, points);
    tcp_run("opentsdb", addr("opentsdb"), c, points);
    udp_run(addr("graphite-udp"), c, points);
    http_run(addr("opentsdb"), c, points / 4);
    prom_run(points);
    let _ = stop.send(());
}
