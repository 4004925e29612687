//! The `[[udp]]` and `[[tcp]]` line-protocol listeners: what they receive reaches every backend,
//! in a database influx-ha creates itself.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use testkit::Influxd;

use crate::relay::Relay;
use crate::support::{count, dump, serial, sum};

const CONVERGE: Duration = Duration::from_secs(120);
const TS_S: u64 = 1_700_000_000;
const TS_NS: u64 = 1_700_000_000_000_000_000;

/// Polls `condition` every 50 ms; on timeout, panics with the relay's log.
fn wait_for(relay: &Relay, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; relay log:\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_database(influxd: &Influxd, db: &str) -> bool {
    influxd
        .query("", "SHOW DATABASES")
        .contains(&format!("[\"{db}\"]"))
}

fn assert_same_on_both(relay: &Relay, a: &Influxd, b: &Influxd, db: &str, points: u64, total: f64) {
    for (name, i) in [("a", a), ("b", b)] {
        wait_for(relay, &format!("{points} points on backend {name}"), || {
            count(i, db, "v", "m") == points
        });
        assert_eq!(sum(i, db, "v", "m"), total, "backend {name}");
    }
    assert_eq!(dump(a, db), dump(b, db));
}

#[test]
fn udp_datagrams_reach_both_backends_in_a_database_influx_ha_created() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    let port = testkit::free_port().expect("free port");
    let relay = Relay::start(
        &[&a, &b],
        &format!("[[udp]]\nbind = \"127.0.0.1:{port}\"\ndatabase = \"udpdb\"\nprecision = \"s\"\n"),
    );
    for (name, i) in [("a", &a), ("b", &b)] {
        wait_for(&relay, &format!("udpdb created on backend {name}"), || {
            has_database(i, "udpdb")
        });
    }

    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(("127.0.0.1", port)).expect("connect");
    // 100 datagrams of 10 points, one series per point; every other datagram without
    // timestamps (influx-ha stamps them once, in seconds, for both backends). Sent in groups,
    // each group once the previous one arrived, so that the kernel's buffer never overflows.
    let mut sent = 0;
    for group in 0..5u64 {
        for d in group * 20..(group + 1) * 20 {
            let mut datagram = String::new();
            for l in 0..10 {
                let i = d * 10 + l;
                if d % 2 == 0 {
                    datagram.push_str(&format!("m,d={d},l={l} v={i}i {}\n", TS_S + i));
                } else {
                    datagram.push_str(&format!("m,d={d},l={l} v={i}i\n"));
                }
            }
            socket.send(datagram.as_bytes()).expect("send");
            sent += 10;
        }
        wait_for(&relay, &format!("{sent} points on backend a"), || {
            count(&a, "udpdb", "v", "m") == sent
        });
    }
    // Garbage, and a bad line among good ones: counted and logged, the good lines written.
    socket
        .send(b"\xff\xfe this is not line protocol\n")
        .expect("send");
    socket
        .send(b"m,d=x,l=0 v=1000i 1700001000\nnot a point\nm,d=x,l=1 v=1001i 1700001001")
        .expect("send");

    let total = (0..1000u64).sum::<u64>() + 1000 + 1001;
    assert_same_on_both(&relay, &a, &b, "udpdb", 1002, total as f64);
}

/// `body` written in slices of `slice` bytes over `streams`, round-robin.
fn write_interleaved(streams: &mut [TcpStream], bodies: &[Vec<u8>], slice: usize) {
    let mut chunks: Vec<_> = bodies.iter().map(|b| b.chunks(slice)).collect();
    loop {
        let mut wrote = false;
        for (s, c) in streams.iter_mut().zip(chunks.iter_mut()) {
            if let Some(chunk) = c.next() {
                s.write_all(chunk).expect("write");
                wrote = true;
            }
        }
        if !wrote {
            return;
        }
    }
}

#[test]
fn tcp_streams_reach_both_backends_as_whole_lines() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    let port = testkit::free_port().expect("free port");
    let mut relay = Relay::start(
        &[&a, &b],
        &format!("[[tcp]]\nbind = \"127.0.0.1:{port}\"\ndatabase = \"tcpdb\"\n"),
    );
    for (name, i) in [("a", &a), ("b", &b)] {
        wait_for(&relay, &format!("tcpdb created on backend {name}"), || {
            has_database(i, "tcpdb")
        });
    }

    // Four clients at once, 250 points each, written in 37-byte slices that cut lines anywhere.
    let mut streams: Vec<TcpStream> = (0..4)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s
        })
        .collect();
    let bodies: Vec<Vec<u8>> = (0..4u64)
        .map(|c| {
            (0..250u64)
                .map(|k| {
                    let i = c * 250 + k;
                    format!("m,c={c} v={i}i {}\n", TS_NS + i)
                })
                .collect::<String>()
                .into_bytes()
        })
        .collect();
    write_interleaved(&mut streams, &bodies, 37);
    // Whole lines are written as they arrive: no need to close the connections first.
    let total = (0..1000u64).sum::<u64>();
    assert_same_on_both(&relay, &a, &b, "tcpdb", 1000, total as f64);
    drop(streams);

    // A string value holding a raw newline, cut right after that newline; a bad line among good
    // ones before it.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(
        format!(
            "q,k=a s=\"before\" {}\nnot a point\nq,k=a s=\"first\n",
            TS_NS + 1
        )
        .as_bytes(),
    )
    .expect("write");
    // The line before the cut is written on its own: the relay has read up to the cut.
    for (name, i) in [("a", &a), ("b", &b)] {
        wait_for(
            &relay,
            &format!("the first string on backend {name}"),
            || count(i, "tcpdb", "s", "q") == 1,
        );
    }
    s.write_all(format!("second\" {}\nq,k=a s=\"after\" {}\n", TS_NS + 2, TS_NS + 3).as_bytes())
        .expect("write");
    for (name, i) in [("a", &a), ("b", &b)] {
        wait_for(&relay, &format!("3 strings on backend {name}"), || {
            count(i, "tcpdb", "s", "q") == 3
        });
        let strings = i.query("tcpdb", "SELECT s FROM q");
        assert!(
            strings.contains("\"first\\nsecond\""),
            "backend {name}: {strings}"
        );
    }
    // The last line needs no newline when the client closes.
    s.write_all(format!("q,k=a s=\"last\" {}", TS_NS + 4).as_bytes())
        .expect("write");
    drop(s);
    for (name, i) in [("a", &a), ("b", &b)] {
        wait_for(&relay, &format!("4 strings on backend {name}"), || {
            count(i, "tcpdb", "s", "q") == 4
        });
    }
    assert_eq!(dump(&a, "tcpdb"), dump(&b, "tcpdb"));
    assert!(
        relay.log().contains("refused lines were not written"),
        "{}",
        relay.log()
    );
    // SIGTERM closes the listener with the rest.
    let status = relay.terminate().expect("was running");
    assert!(status.success(), "{status}: {}", relay.log());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_backend_down_at_start_gets_the_database_and_the_lines_later() {
    let _serial = serial();
    let (a, mut b) = (Influxd::start(), Influxd::start());
    b.kill();
    let port = testkit::free_port().expect("free port");
    let relay = Relay::start(
        &[&a, &b],
        &format!("[[tcp]]\nbind = \"127.0.0.1:{port}\"\ndatabase = \"late\"\n"),
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let body: String = (0..100u64)
        .map(|i| format!("m,h=h{} v={i}i {}\n", i % 10, TS_NS + i))
        .collect();
    s.write_all(body.as_bytes()).expect("write");
    drop(s);
    wait_for(&relay, "100 points on backend a", || {
        count(&a, "late", "v", "m") == 100
    });
    b.restart();
    let total = (0..100u64).sum::<u64>();
    assert_same_on_both(&relay, &a, &b, "late", 100, total as f64);
}
