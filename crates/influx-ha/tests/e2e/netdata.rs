//! A real Netdata agent (Debian `netdata`) exporting to influx-ha over Graphite, OpenTSDB
//! telnet and OpenTSDB HTTP at once: its metrics appear in both InfluxDB backends, and once the
//! agent is gone both hold exactly the same points.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::Influxd;

use crate::relay::Relay;
use crate::support::{serial, wait_until};

const CONVERGE: Duration = Duration::from_secs(180);

/// A `netdata -D` in its own process group, with its own directories; killed (the whole
/// group: its plugins too) when dropped, also when the test panics.
struct Netdata {
    child: Child,
    dir: tempfile::TempDir,
}

impl Netdata {
    fn start(graphite_port: u16, opentsdb_port: u16) -> Netdata {
        use std::os::unix::process::CommandExt;

        assert!(
            Path::new("/usr/sbin/netdata").exists(),
            "netdata is not installed: scripts/test installs it (apt-get install -y netdata)"
        );
        let dir = tempfile::Builder::new()
            .prefix("influx-ha-netdata-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path();
        for sub in ["etc", "log", "cache", "lib"] {
            fs::create_dir_all(d.join(sub)).expect("netdata directory");
        }
        let p = d.display();
        // Only what the test needs: the proc collector, no web server, health, ML or
        // registry; data kept in memory; everything under the temporary directory.
        fs::write(
            d.join("etc/netdata.conf"),
            format!(
                r#"[global]
    run as user = root
    hostname = testhost
[db]
    mode = ram
    update every = 1
[directories]
    config = {p}/etc
    stock config = /usr/lib/netdata/conf.d
    log = {p}/log
    cache = {p}/cache
    lib = {p}/lib
    home = {p}
[logs]
    debug = {p}/log/debug.log
    error = {p}/log/error.log
    access = none
    collector = none
    health = none
[web]
    mode = none
[health]
    enabled = no
[ml]
    enabled = no
[registry]
    enabled = no
[statsd]
    enabled = no
[plugins]
    proc = yes
    diskspace = no
    cgroups = no
    tc = no
    idlejitter = no
    apps = no
    python.d = no
    charts.d = no
    go.d = no
    ebpf = no
    perf = no
    slabinfo = no
    statsd = no
    timex = no
    checks = no
    enable running new plugins = no
"#
            ),
        )
        .expect("netdata.conf");
        let connector = |kind: &str, name: &str, port: u16| {
            format!(
                r#"[{kind}:{name}]
    enabled = yes
    destination = tcp:127.0.0.1:{port}
    data source = average
    prefix = netdata
    hostname = testhost
    update every = 1
    buffer on failures = 30
    timeout ms = 20000
    send charts matching = system.cpu system.load system.ram
    send configured labels = no
    send automatic labels = no
"#
            )
        };
        fs::write(
            d.join("etc/exporting.conf"),
            format!(
                "[exporting:global]\n    enabled = yes\n    update every = 1\n{}{}{}",
                connector("graphite", "influxha_graphite", graphite_port),
                connector("opentsdb", "influxha_telnet", opentsdb_port),
                connector("opentsdb:http", "influxha_http", opentsdb_port),
            ),
        )
        .expect("exporting.conf");
        // No anonymous statistics from a test.
        fs::write(d.join("etc/.opt-out-from-anonymous-statistics"), "").expect("opt-out");
        let log = fs::File::create(d.join("log/stdout.log")).expect("log file");
        let child = Command::new("/usr/sbin/netdata")
            .arg("-D")
            .arg("-c")
            .arg(d.join("etc/netdata.conf"))
            .env("DO_NOT_TRACK", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .expect("netdata starts");
        Netdata { child, dir }
    }

    fn log(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        let error = read("log/error.log");
        let tail: Vec<&str> = error.lines().rev().take(40).collect();
        format!(
            "{}\n{}",
            read("log/stdout.log"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Netdata {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("sh")
            .args(["-c", "kill -s KILL -- \"$0\"", &group])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn series(influxd: &Influxd, db: &str) -> String {
    influxd.query(db, "SHOW SERIES")
}

#[test]
fn netdata_metrics_reach_both_backends_over_graphite_and_opentsdb() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    let [graphite, opentsdb] = [0, 1].map(|_| testkit::free_port().expect("free port"));
    let mut relay = Relay::start(
        &[&a, &b],
        &format!(
            "[[graphite]]\nbind = \"127.0.0.1:{graphite}\"\ndatabase = \"netdata\"\n\
             templates = [\"netdata.* .host.measurement.measurement.field\"]\n\
             [[opentsdb]]\nbind = \"127.0.0.1:{opentsdb}\"\ndatabase = \"netdata_tsdb\"\n"
        ),
    );
    let netdata = Netdata::start(graphite, opentsdb);

    // Graphite: `netdata.testhost.system.cpu.user` → measurement system.cpu, field user.
    // OpenTSDB: `put netdata.system.cpu.user <ts> <v> host=testhost`.
    let wanted = [
        ("netdata", "system.cpu,host=testhost"),
        ("netdata", "system.load,host=testhost"),
        ("netdata_tsdb", "netdata.system.cpu.user,host=testhost"),
        ("netdata_tsdb", "netdata.system.ram.used,host=testhost"),
    ];
    let deadline = Instant::now() + CONVERGE;
    for (name, backend) in [("a", &a), ("b", &b)] {
        for (db, key) in wanted {
            while !series(backend, db).contains(key) {
                assert!(
                    Instant::now() < deadline,
                    "{key} never reached backend {name} ({db}); netdata log:\n{}\nrelay log:\n{}",
                    netdata.log(),
                    relay.log()
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
    // The listeners show in the metrics with what they received.
    let metrics = relay.get("/metrics").expect("metrics").text();
    for kind in ["graphite-tcp", "opentsdb", "prometheus"] {
        assert!(
            metrics.contains(&format!("kind=\"{kind}\"")),
            "no {kind} listener in /metrics:\n{metrics}"
        );
    }
    // Graphite lines are points of their own, which may arrive in different batches.
    wait_until(
        "system.cpu has the user and system fields",
        CONVERGE,
        || {
            let fields = a.query("netdata", "SHOW FIELD KEYS FROM \"system.cpu\"");
            fields.contains("\"user\"") && fields.contains("\"system\"")
        },
    );

    // Once the agent is gone, both replicas hold the same points.
    drop(netdata);
    let queries = [
        ("netdata", "SELECT * FROM \"system.cpu\" GROUP BY *"),
        ("netdata", "SELECT * FROM \"system.load\" GROUP BY *"),
        (
            "netdata_tsdb",
            "SELECT * FROM /^netdata\\.system\\./ GROUP BY *",
        ),
    ];
    for (db, q) in queries {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let (x, y) = (a.query(db, q), b.query(db, q));
            if x == y && x.contains("\"values\"") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "backends differ for {q}:\n{x}\n{y}\nrelay log:\n{}",
                relay.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
