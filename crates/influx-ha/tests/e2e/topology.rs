//! The reference deployment (`examples/two-node`, `scripts/demo`) end to end: two InfluxDB, two
//! influx-ha each replicating to both, a real HAProxy in front balancing roundrobin with health
//! checks on `/health`. `influx-ha bench` writes through HAProxy and retries failed batches as
//! Telegraf does; meanwhile one InfluxDB and one influx-ha are killed with SIGKILL and later
//! restarted. Both InfluxDB must end up holding exactly the points that were acknowledged, and
//! reads through HAProxy (the two nodes peers of each other) must see all of them.

use std::fs;
use std::io::Read as _;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{HttpClient, Influxd};

use crate::bench::bench;
use crate::relay::Relay;
use crate::support::{count, dump, serial, wait_until};

/// A real HAProxy process on free loopback ports, killed on drop.
struct Haproxy {
    /// Holds the config and the log.
    dir: tempfile::TempDir,
    /// The frontend port.
    port: u16,
    /// The stats page port.
    stats: u16,
    child: Child,
}

impl Haproxy {
    /// HAProxy in front of `servers` (ports), as `examples/two-node/haproxy.cfg` with faster
    /// checks.
    fn start(servers: &[u16]) -> Haproxy {
        // Debian installs it in /usr/sbin, which is not on an ordinary user's PATH.
        let haproxy = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("haproxy");
        let found = Command::new(haproxy).arg("-v").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "haproxy is not installed: the topology test needs it (Debian package `haproxy`; \
             scripts/test installs it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("influx-ha-e2e-haproxy-")
            .tempdir()
            .expect("temporary directory");
        let port = testkit::free_port().expect("free port");
        let stats = testkit::free_port().expect("free port");
        let mut config = format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    \
             timeout server 60s\n    retries 2\n    option redispatch\n\
             frontend influx\n    bind 127.0.0.1:{port}\n    default_backend influx_ha\n\
             backend influx_ha\n    balance roundrobin\n    option httpchk\n    \
             http-check send meth GET uri /health\n    http-check expect status 200\n    \
             default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2 check\n"
        );
        for (i, s) in servers.iter().enumerate() {
            config.push_str(&format!("    server node-{i} 127.0.0.1:{s}\n"));
        }
        config.push_str(&format!(
            "listen stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\n"
        ));
        let path = dir.path().join("haproxy.cfg");
        fs::write(&path, config).expect("write haproxy.cfg");
        let log = fs::File::create(dir.path().join("haproxy.log")).expect("log file");
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start haproxy");
        let h = Haproxy {
            dir,
            port,
            stats,
            child,
        };
        wait_until(
            "HAProxy to see every node up",
            Duration::from_secs(60),
            || h.states().iter().all(|s| s == "UP") && h.states().len() == servers.len(),
        );
        h
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The check state of each server (`UP`, `DOWN`, `UP 1/2`, …), from the stats CSV.
    fn states(&self) -> Vec<String> {
        let mut client = HttpClient::new(([127, 0, 0, 1], self.stats).into());
        let Ok(resp) = client.request("GET", "/stats;csv", &[], b"") else {
            return Vec::new();
        };
        resp.text()
            .lines()
            .filter(|l| l.starts_with("influx_ha,node-"))
            .filter_map(|l| l.split(',').nth(17).map(str::to_owned))
            .collect()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 20 hosts × (cpu, mem, disk, diskio, net) with 4 instances: 340 series, 80 of them cpu.
const SHAPE: &[&str] = &[
    "--hosts",
    "20",
    "--measurements",
    "5",
    "--instances",
    "4",
    "--batch",
    "340",
];
const SERIES: u64 = 340;
const TICKS: u64 = 150;

#[test]
fn two_nodes_behind_haproxy_converge_after_kill_9_of_an_influxdb_and_an_influx_ha() {
    let _serial = serial();
    let a = Influxd::start();
    let mut b = Influxd::start();
    a.create_database("bench");
    b.create_database("bench");
    // Peers of each other, as in examples/two-node: a read goes only to an InfluxDB for which
    // neither node holds a queue.
    let port = || testkit::free_port().expect("free port");
    let (pa, pb) = (port(), port());
    let config = |peer: &str, peer_port: u16| {
        format!(
            "[write]\nconsistency = \"any\"\n[[peer]]\nname = \"{peer}\"\nurl = \"http://127.0.0.1:{peer_port}\"\n"
        )
    };
    let backends = [a.url(), b.url()];
    let mut node_a = Relay::start_urls_on(pa, &backends, &config("node-b", pb));
    let node_b = Relay::start_urls_on(pb, &backends, &config("node-a", pa));
    let lb = Haproxy::start(&[node_a.port(), node_b.port()]);

    // The writer: 51,000 points at 5,000 points/s through HAProxy, each failed batch retried.
    let total = SERIES * TICKS;
    let points = total.to_string();
    let mut args = vec![
        lb.url(),
        "--points".into(),
        points.clone(),
        "--rate".into(),
        "5000".into(),
        "-c".into(),
        "4".into(),
        "--retry-for".into(),
        "300s".into(),
        "--json".into(),
        "--no-progress".into(),
    ];
    args.extend(SHAPE.iter().map(|s| (*s).to_owned()));
    let mut writer = Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .arg("bench")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start influx-ha bench");

    let cpu_points = |i: &Influxd| count(i, "bench", "usage_user", "cpu");
    let deadline = Duration::from_secs(180);
    wait_until("the first writes on influx-a", deadline, || {
        cpu_points(&a) >= 2_000
    });
    b.kill();
    wait_until("writes going on with influx-b down", deadline, || {
        cpu_points(&a) >= 4_000
    });
    node_a.kill();
    wait_until("HAProxy to take the killed influx-ha out", deadline, || {
        lb.states().first().is_some_and(|s| s.starts_with("DOWN"))
    });
    let before = cpu_points(&a);
    wait_until("writes going on through the other node", deadline, || {
        cpu_points(&a) >= before + 1_000
    });
    b.restart();
    node_a.restart();
    wait_until("HAProxy to take the restarted node back", deadline, || {
        lb.states().iter().all(|s| s == "UP")
    });

    let status = writer.wait().expect("the writer ends");
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = writer.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = writer.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(
        status.success(),
        "writer: {err}\n{out}\nHAProxy:\n{}",
        lb.log()
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    // Every batch was acknowledged in the end (retried through the node that stayed up),
    // so the acknowledged set is the whole range.
    assert_eq!(report["points_acked"], total, "{report}");
    assert_eq!(report["batches_failed"], 0, "{report}");

    // Both InfluxDB hold exactly those points: per series the count and sum of every field,
    // then every point read back.
    let (ua, ub) = (a.url(), b.url());
    let mut verify = vec![
        lb.url(),
        "--points".into(),
        points,
        "--verify-only".into(),
        "--verify".into(),
        ua,
        "--verify".into(),
        ub,
        "--verify-timeout".into(),
        "180s".into(),
    ];
    verify.extend(SHAPE.iter().map(|s| (*s).to_owned()));
    let verify: Vec<&str> = verify.iter().map(String::as_str).collect();
    let out = bench(&verify);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\nnode-a:\n{}\nnode-b:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node_a.log(),
        node_b.log()
    );
    assert_eq!(
        stdout
            .matches(&format!("exact, 51,000 points in {SERIES} series"))
            .count(),
        2,
        "{stdout}"
    );
    assert_eq!(dump(&a, "bench"), dump(&b, "bench"));

    // Reads through HAProxy, on either node, see every point once the queues have drained.
    let cpu_total = (total / SERIES * 80).to_string();
    let mut client = HttpClient::new(([127, 0, 0, 1], lb.port).into());
    for _ in 0..2 {
        wait_until(
            "a read through HAProxy seeing every point",
            deadline,
            || {
                client
                    .request(
                        "GET",
                        "/query?db=bench&q=SELECT+count(usage_user)+FROM+cpu",
                        &[],
                        b"",
                    )
                    .is_ok_and(|r| r.status == 200 && r.text().contains(&format!(",{cpu_total}]")))
            },
        );
    }
}
