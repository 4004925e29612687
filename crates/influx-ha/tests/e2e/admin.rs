//! The operator's surface against real InfluxDB: the status page in headless Chromium, the
//! `queue`/`backend` commands on a running node and on a stopped node's data directory,
//! maintenance, and SIGHUP reloads adding and removing a backend under writes.

use std::process::Command;

use testkit::Influxd;
use testkit::http::HttpClient;

use crate::proxy::{FaultProxy, Mode};
use crate::relay::Relay;
use crate::support::{
    CONVERGE, ContinuousWriter, assert_converged, count, points, serial, wait_until, write_batches,
};

/// A relay with a separate admin listener; returns it with the admin port.
fn relay_with_admin(backends: &[&Influxd]) -> (Relay, u16) {
    let admin = testkit::free_port().expect("free port");
    let relay = Relay::start(
        backends,
        &format!("[admin]\nbind = \"127.0.0.1:{admin}\"\n"),
    );
    (relay, admin)
}

fn admin_get(port: u16, path: &str) -> testkit::http::Response {
    let mut c = HttpClient::new(([127, 0, 0, 1], port).into());
    c.request("GET", path, &[], b"").expect("admin request")
}

fn status(port: u16) -> String {
    let r = admin_get(port, "/status");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// `influx-ha ARGS…`; returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .args(args)
        .output()
        .expect("run influx-ha");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The DOM of `url` after Chromium rendered it.
fn chromium_dom(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--dump-dom",
            url,
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromium ({e}): install it (Debian package chromium; scripts/test does)"
            )
        });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The row of backend `name` in the page's DOM.
fn backend_row<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("data-backend=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name} in\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

#[test]
fn status_page_in_chromium_shows_backends_and_a_dead_one() {
    let _serial = serial();
    let a = Influxd::start();
    let mut b = Influxd::start();
    let (mut relay, admin) = relay_with_admin(&[&a, &b]);
    a.create_database("db");
    b.create_database("db");
    write_batches(&mut relay, 0, 2, "db=db", 204);
    let url = format!("http://127.0.0.1:{admin}/");
    wait_until("both backends up and in sync", CONVERGE, || {
        let dom = chromium_dom(&url);
        ["influx-0", "influx-1"].iter().all(|n| {
            let row = backend_row(&dom, n);
            row.contains(">up<") && row.contains(">in sync<")
        }) && dom.contains("all backends in sync")
    });

    b.kill();
    // Writes for the dead backend are queued; the page says it is down and catching up.
    write_batches(&mut relay, 2, 4, "db=db", 204);
    let mut dom = String::new();
    wait_until("the page shows influx-1 down", CONVERGE, || {
        dom = chromium_dom(&url);
        backend_row(&dom, "influx-1").contains(">down<")
    });
    let row = backend_row(&dom, "influx-1");
    assert!(row.contains("catching up"), "{row}");
    assert!(row.contains("records"), "{row}");
    assert!(backend_row(&dom, "influx-0").contains(">up<"));
    assert!(
        dom.contains("influx-1: down"),
        "summary names the problem:\n{dom}"
    );
    assert!(!dom.contains("all backends in sync"));

    // /metrics and /health agree.
    let metrics = admin_get(admin, "/metrics").text();
    assert!(
        metrics.contains("influx_ha_backend_up{backend=\"influx-1\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("influx_ha_queue_records{backend=\"influx-1\"}"));
    assert!(metrics.contains("influx_ha_http_request_duration_seconds_count{listener=\"http\",endpoint=\"write\",method=\"POST\",code=\"204\"}"), "{metrics}");
    assert_eq!(admin_get(admin, "/health").status, 200);
    assert_eq!(relay.get("/health").expect("health").status, 200);
    // The admin surface is on the admin listener only.
    assert_eq!(relay.get("/status").expect("status").status, 404);
}

#[test]
fn maintenance_queues_writes_and_resume_delivers_them() {
    let _serial = serial();
    let a = Influxd::start();
    let b = Influxd::start();
    let (mut relay, admin) = relay_with_admin(&[&a, &b]);
    a.create_database("db");
    b.create_database("db");
    let config = relay.config_path().display().to_string();
    write_batches(&mut relay, 0, 2, "db=db", 204);

    let (code, out, err) = cli(&["backend", "maintenance", "influx-1", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("influx-1 is in maintenance"), "{out}");
    assert!(status(admin).contains("\"sync\": \"maintenance\""));
    write_batches(&mut relay, 2, 5, "db=db", 204);
    assert_eq!(count(&a, "db", "v", "m"), 500);
    assert_eq!(
        count(&b, "db", "v", "m"),
        200,
        "nothing reaches a backend in maintenance"
    );
    let (code, out, _) = cli(&["queue", "list", "--config", &config]);
    assert_eq!(code, 0);
    let line = out
        .lines()
        .find(|l| l.starts_with("influx-1"))
        .expect("row");
    assert!(
        line.contains("3 records") && line.contains("maintenance"),
        "{out}"
    );
    // Drain refuses while the queue is held.
    let (code, _, err) = cli(&["queue", "drain", "influx-1", "--config", &config]);
    assert_eq!(code, 1);
    assert!(err.contains("in maintenance"), "{err}");

    // The flag survives a restart.
    relay.restart();
    assert!(status(admin).contains("\"sync\": \"maintenance\""));
    write_batches(&mut relay, 5, 6, "db=db", 204);

    let admin_url = format!("http://127.0.0.1:{admin}");
    let (code, out, err) = cli(&["backend", "resume", "influx-1", "--admin", &admin_url]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&[
        "queue", "drain", "influx-1", "--admin", &admin_url, "--wait", "120",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("delivered"), "{out}");
    write_batches(&mut relay, 6, 7, "db=db", 204);
    assert_converged(&a, &b, 700);
    wait_until("influx-1 in sync", CONVERGE, || {
        status(admin).contains("\"text\": \"all backends in sync\"")
    });
}

#[test]
fn cli_works_on_a_stopped_nodes_data_dir_and_not_beside_a_running_one() {
    let _serial = serial();
    let a = Influxd::start();
    let mut b = Influxd::start();
    let mut relay = Relay::start(&[&a, &b], "");
    a.create_database("db");
    b.create_database("db");
    let config = relay.config_path().display().to_string();
    write_batches(&mut relay, 0, 1, "db=db", 204);
    b.kill();
    write_batches(&mut relay, 1, 4, "db=db", 204);
    relay.terminate();

    // Stopped: the data directory itself.
    let (code, out, err) = cli(&["queue", "list", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("influx-1"))
        .expect("row");
    assert!(line.contains("3 records"), "{out}");
    let (code, out, err) = cli(&["queue", "verify", "influx-1", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("influx-1: clean") && out.contains("3 valid records"),
        "{out}"
    );
    let (code, out, _) = cli(&[
        "queue",
        "inspect",
        "influx-1",
        "--records",
        "--config",
        &config,
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("pending        3 records"), "{out}");
    assert!(out.contains("# handoff write db=db"), "{out}");
    assert!(
        out.contains(&String::from_utf8_lossy(&points(150..151)).into_owned()),
        "{out}"
    );
    // Drain delivers to the backend without the node.
    let (code, _, err) = cli(&[
        "queue", "drain", "influx-1", "--config", &config, "--wait", "2",
    ]);
    assert_eq!(code, 1, "the backend is down: {err}");
    b.restart();
    let (code, out, err) = cli(&[
        "queue", "drain", "influx-1", "--config", &config, "--wait", "120",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_converged(&a, &b, 400);
    let (code, out, _) = cli(&["queue", "purge", "influx-0", "--config", &config]);
    assert_eq!(code, 1, "purge needs --yes: {out}");

    // Something else on the node's port, no admin API: the data directory is not touched.
    let port = relay.port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("port free after stop");
    let (code, _, err) = cli(&["queue", "list", "--config", &config]);
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to touch the data directory"),
        "{err}"
    );
    drop(squatter);

    // Running: the same commands go through its admin API (on the main listener here).
    relay.restart();
    let (code, out, err) = cli(&["queue", "list", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("influx-0") && out.contains("influx-1"),
        "{out}"
    );
    let (code, out, err) = cli(&["queue", "verify", "influx-1", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Rewrites the backend tables of the config at `path` to `backends` (name, URL).
fn set_backends(path: &std::path::Path, backends: &[(&str, String)]) {
    let text = std::fs::read_to_string(path).expect("config");
    let head = text.split("[[backend]]").next().expect("head").to_owned();
    let mut out = head;
    for (name, url) in backends {
        out.push_str(&format!(
            "[[backend]]\nname = \"{name}\"\nurl = \"{url}\"\n\n"
        ));
    }
    std::fs::write(path, out).expect("write config");
}

#[test]
fn a_sighup_while_the_relay_starts_is_a_reload_once_it_runs() {
    let _serial = serial();
    let a = Influxd::start();
    // The start-up creates the UDP listener's database and waits for the backend's answer,
    // which the stalled proxy holds back. The health checks and the write deadline are long
    // enough not to give up on it first.
    let proxy = FaultProxy::start(a.addr());
    proxy.set_mode(Mode::Stall);
    let udp = testkit::free_port().expect("free port");
    let mut relay = Relay::spawn_urls(
        &[proxy.url()],
        &format!(
            "[write]\nbackend_timeout = \"5m\"\n\n[health]\ninterval = \"5m\"\ntimeout = \"5m\"\n\n\
             [[udp]]\nbind = \"127.0.0.1:{udp}\"\ndatabase = \"udp\"\n"
        ),
    );
    wait_until("the relay asks the backend for something", CONVERGE, || {
        proxy.connections() >= 1
    });
    // `systemctl reload` now: SIGHUP's default action would end the process.
    relay.signal("HUP");
    proxy.set_mode(Mode::Pass);
    relay.wait_ready();
    wait_until("the reload ran", CONVERGE, || {
        relay.log().contains("SIGHUP: reloading the config")
    });
    wait_until("the listener's database exists", CONVERGE, || {
        a.query("", "SHOW DATABASES").contains("\"udp\"")
    });
    assert_eq!(relay.get("/ping").map(|r| r.status).ok(), Some(204));
}

#[test]
fn reload_adds_and_removes_backends_under_writes() {
    let _serial = serial();
    let a = Influxd::start();
    let b = Influxd::start();
    let c = Influxd::start();
    for i in [&a, &b, &c] {
        i.create_database("db");
    }
    let (relay, admin) = relay_with_admin(&[&a, &b]);
    let port = relay.port();

    // One writer, without pause, for the whole test; every answer must be 204.
    let writer = ContinuousWriter::start(port, 2000);
    writer.wait_batches(20);

    // Add influx-2.
    set_backends(
        relay.config_path(),
        &[
            ("influx-0", a.url()),
            ("influx-1", b.url()),
            ("influx-2", c.url()),
        ],
    );
    relay.signal("HUP");
    wait_until("influx-2 appears", CONVERGE, || {
        status(admin).contains("\"name\": \"influx-2\"")
    });
    let s = status(admin);
    assert!(s.contains("newly added"), "{s}");
    let added_at = writer.written();
    writer.wait_batches(20);
    wait_until("influx-2 gets new writes", CONVERGE, || {
        count(&c, "db", "v", "m") > 0
    });

    // An invalid config is refused and changes nothing.
    let good = std::fs::read_to_string(relay.config_path()).expect("config");
    std::fs::write(
        relay.config_path(),
        format!("{good}\n[[backend]]\nname = \"x\"\n"),
    )
    .expect("write");
    relay.signal("HUP");
    wait_until("the refusal is logged", CONVERGE, || {
        relay.log().contains("config reload refused")
    });
    assert!(
        relay.log().contains("missing field `url`"),
        "{}",
        relay.log()
    );
    assert!(status(admin).contains("\"name\": \"influx-2\""));

    // Remove influx-1.
    set_backends(
        relay.config_path(),
        &[("influx-0", a.url()), ("influx-2", c.url())],
    );
    relay.signal("HUP");
    wait_until("influx-1 is gone", CONVERGE, || {
        !status(admin).contains("\"name\": \"influx-1\"")
    });
    let removed_at = writer.written();
    writer.wait_batches(20);
    let total = writer.stop();

    // influx-0 has everything; influx-2 everything since it was added; influx-1 nothing
    // written after it was removed (and everything before).
    let all = total * 10;
    wait_until("influx-0 holds every point", CONVERGE, || {
        count(&a, "db", "v", "m") == all
    });
    // Every batch started after the add reached influx-2 (directly or through its queue);
    // the one batch that may have been in flight at the swap went to the old set.
    let since_added = (total - added_at - 1) * 10;
    wait_until(
        "influx-2 holds every point written since it was added",
        CONVERGE,
        || count(&c, "db", "v", "m") >= since_added,
    );
    assert!(
        count(&c, "db", "v", "m") < all,
        "influx-2 was added after the first writes"
    );
    // A batch still queued for influx-1 when it was removed stays in its queue on disk; the
    // one batch that may have been in flight at the swap went to the old set.
    let on_b = count(&b, "db", "v", "m");
    assert!(on_b > 0, "influx-1 had the writes before its removal");
    assert!(
        on_b <= (removed_at + 1) * 10,
        "influx-1 got writes after it was removed ({on_b} points, removed after {removed_at} batches)"
    );
    assert!(relay.log().contains("config reloaded"), "{}", relay.log());
}

#[test]
fn reload_changes_the_body_limit() {
    let _serial = serial();
    let a = Influxd::start();
    a.create_database("db");
    let (mut relay, _admin) = relay_with_admin(&[&a]);
    let body = points(0..50);
    assert!(body.len() > 1000, "the body is larger than the new limit");
    let w = relay.write("db=db", &body);
    assert_eq!(w.status, 204, "{}", w.text());

    let config = std::fs::read_to_string(relay.config_path()).expect("config");
    let limited = config.replacen("[http]\n", "[http]\nmax_body_bytes = 1000\n", 1);
    assert_ne!(config, limited, "the config has an [http] table");
    std::fs::write(relay.config_path(), limited).expect("write");
    relay.signal("HUP");
    wait_until("the reload is logged", CONVERGE, || {
        relay.log().contains("config reloaded")
    });
    let w = relay.write("db=db", &body);
    assert_eq!(w.status, 413, "{}", w.text());
    assert!(
        !relay.log().contains("only after a restart"),
        "applied, not reported as needing a restart: {}",
        relay.log()
    );
    assert_eq!(count(&a, "db", "v", "m"), 50);
}

#[test]
fn health_fails_while_the_disk_is_below_the_queue_floor() {
    let _serial = serial();
    let a = Influxd::start();
    a.create_database("db");
    // No filesystem here has 1000 TiB free: the queue could take no data.
    let admin = testkit::free_port().expect("free port");
    let mut relay = Relay::start(
        &[&a],
        &format!("[admin]\nbind = \"127.0.0.1:{admin}\"\n[queue]\nmin_free_disk = \"1000TiB\"\n"),
    );
    wait_until("/health answers 503", CONVERGE, || {
        relay.get("/health").expect("health").status == 503
    });
    let health = relay.get("/health").expect("health").text();
    assert!(health.contains("min_free_disk = 1000 TiB"), "{health}");
    assert!(
        status(admin).contains("node does not take writes: the data directory has"),
        "{}",
        status(admin)
    );
    // A write the backend takes directly is still stored.
    let w = relay.write("db=db", &points(0..10));
    assert_eq!(w.status, 204, "{}", w.text());

    // A floor the disk meets, reloaded: healthy again.
    let config = std::fs::read_to_string(relay.config_path()).expect("config");
    let lowered = config.replacen("min_free_disk = \"1000TiB\"", "min_free_disk = \"1MiB\"", 1);
    assert_ne!(config, lowered);
    std::fs::write(relay.config_path(), lowered).expect("write");
    relay.signal("HUP");
    wait_until("/health answers 200", CONVERGE, || {
        relay.get("/health").expect("health").status == 200
    });
    assert!(
        relay.log().contains("queues can take data again"),
        "{}",
        relay.log()
    );
    assert_eq!(count(&a, "db", "v", "m"), 10);
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused() {
    let _serial = serial();
    let a = Influxd::start();
    a.create_database("db");
    let relay = Relay::start(&[&a], "");
    let config = std::fs::read_to_string(relay.config_path()).expect("config");
    let port = testkit::free_port().expect("free port");
    let other = config.replacen(
        &format!("127.0.0.1:{}", relay.port()),
        &format!("127.0.0.1:{port}"),
        1,
    );
    assert_ne!(config, other);
    let path = relay.dir().join("second.toml");
    std::fs::write(&path, other).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second influx-ha");
    let mut exited = None;
    wait_until("the second node exits", CONVERGE, || {
        exited = child.try_wait().expect("wait");
        exited.is_some()
    });
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!exited.is_some_and(|s| s.success()), "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    // The first node is untouched.
    let mut relay = relay;
    let w = relay.write("db=db", &points(0..5));
    assert_eq!(w.status, 204, "{}", w.text());
    assert_eq!(relay.get("/health").expect("health").status, 200);
    assert_eq!(count(&a, "db", "v", "m"), 5);
}

#[test]
fn cli_presents_a_token_to_a_node_with_auth() {
    let _serial = serial();
    let a = Influxd::start();
    let (code, out, err) = cli(&["new-token"]);
    assert_eq!(code, 0, "{err}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token      = "))
        .expect("token line")
        .trim()
        .to_owned();
    let hash_line = out
        .lines()
        .find(|l| l.starts_with("token_hash"))
        .expect("token_hash line");
    let admin = testkit::free_port().expect("free port");
    let relay = Relay::start(
        &[&a],
        &format!(
            "[admin]\nbind = \"127.0.0.1:{admin}\"\n[auth]\nenabled = true\n[[auth.token]]\nname = \"ops\"\n{hash_line}\n"
        ),
    );
    let config = relay.config_path().display().to_string();
    let (code, _, err) = cli(&["queue", "list", "--config", &config]);
    assert_eq!(code, 1);
    assert!(
        err.contains("asks for credentials: set INFLUX_HA_TOKEN"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .args(["queue", "list", "--config", &config])
        .env("INFLUX_HA_TOKEN", &token)
        .output()
        .expect("run influx-ha");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("influx-0"), "{stdout}");
    assert!(!relay.log().contains(&token), "the token is never logged");
}
