//! An `influx-ha serve` process for end-to-end tests: a config in a temporary directory, the
//! binary cargo built for this test, a free loopback port, SIGKILL on drop.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::Influxd;
use testkit::http::{HttpClient, Response};

/// A running relay.
pub struct Relay {
    dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
    client: HttpClient,
    /// `RUST_LOG` of the process.
    log_level: &'static str,
    /// Whether the main listener speaks TLS (readiness is then its listening socket; the
    /// plain-HTTP helpers cannot be used).
    tls: bool,
}

/// The `[[backend]]` tables for `urls`, named `influx-<i>`.
fn backend_tables(urls: &[String]) -> String {
    let mut tables = String::new();
    for (i, url) in urls.iter().enumerate() {
        tables.push_str(&format!(
            "[[backend]]\nname = \"influx-{i}\"\nurl = \"{url}\"\n\n"
        ));
    }
    tables
}

impl Relay {
    /// Starts a relay in front of `backends` with `extra` appended to its config (TOML after
    /// the `[[backend]]` tables, so it may add tables such as `[write]`).
    pub fn start(backends: &[&Influxd], extra: &str) -> Relay {
        let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
        Relay::start_urls(&urls, extra)
    }

    /// Like [`Relay::start`], with the backends given by URL (`http://127.0.0.1:<port>`), for
    /// backends reached through something in between, such as a fault proxy.
    pub fn start_urls(urls: &[String], extra: &str) -> Relay {
        let mut relay = Relay::spawn_urls(urls, extra);
        relay.wait_ready();
        relay
    }

    /// Like [`Relay::start_urls`], without waiting for the relay to serve: for tests of what
    /// happens while it starts. [`Relay::wait_ready`] waits.
    pub fn spawn_urls(urls: &[String], extra: &str) -> Relay {
        let port = testkit::free_port().expect("free port");
        Relay::configure(port, extra, &backend_tables(urls), "info")
    }

    /// Starts a relay with `extra` and then `backend_tables` (the `[[backend]]` tables as
    /// written) in its config, logging at `log_level`.
    pub fn start_config(extra: &str, backend_tables: &str, log_level: &'static str) -> Relay {
        let port = testkit::free_port().expect("free port");
        Relay::start_config_on(port, extra, backend_tables, log_level)
    }

    /// Like [`Relay::start_urls`], listening on `port` (for relays that must know each other's
    /// address before they start).
    pub fn start_urls_on(port: u16, urls: &[String], extra: &str) -> Relay {
        Relay::start_config_on(port, extra, &backend_tables(urls), "info")
    }

    /// Like [`Relay::start_config`], listening on `port`.
    pub fn start_config_on(
        port: u16,
        extra: &str,
        backend_tables: &str,
        log_level: &'static str,
    ) -> Relay {
        let mut relay = Relay::configure(port, extra, backend_tables, log_level);
        relay.wait_ready();
        relay
    }

    /// Writes the config of [`Relay::start_config_on`] and starts the process.
    fn configure(port: u16, extra: &str, backend_tables: &str, log_level: &'static str) -> Relay {
        let dir = tempfile::Builder::new()
            .prefix("influx-ha-e2e-")
            .tempdir()
            .expect("temporary directory");
        let mut text = format!(
            "data_dir = {:?}\n\n[http]\nbind = \"127.0.0.1:{port}\"\ndrain_timeout = \"5s\"\n\n",
            dir.path().join("data")
        );
        text.push_str(extra);
        text.push('\n');
        text.push_str(backend_tables);
        let config = dir.path().join("influx-ha.toml");
        fs::write(&config, text).expect("write config");
        let mut relay = Relay {
            client: HttpClient::new(([127, 0, 0, 1], port).into()),
            dir,
            config,
            port,
            child: None,
            log_level,
            // Keys before the first table header of `extra` belong to [http].
            tls: extra
                .lines()
                .take_while(|l| !l.trim_start().starts_with('['))
                .any(|l| l.trim_start().starts_with("tls_cert")),
        };
        relay.spawn();
        relay
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("relay.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_influx-ha"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", self.log_level)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start influx-ha");
        self.child = Some(child);
    }

    /// Waits until the relay serves (`/ping`, or a TCP connection with TLS); panics if it
    /// exits or is not ready within 60 s.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = if self.tls {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                self.get("/ping").is_ok_and(|r| r.status == 204)
            };
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("influx-ha exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "influx-ha not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The config file (tests rewrite it before a SIGHUP).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Sends `signal` (a `kill` name such as `HUP`) to the running process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("influx-ha is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// The relay's `data_dir` (queues and flags, one folder per backend `influx-<i>`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory: config, `relay.log` and `data/` (the queues).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port of the main listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The relay's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the relay again with the same config and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.client = HttpClient::new(([127, 0, 0, 1], self.port).into());
        self.launch();
    }

    pub fn get(&mut self, target: &str) -> io::Result<Response> {
        self.client.request("GET", target, &[], b"")
    }

    /// `GET /status`, parsed.
    pub fn status_json(&mut self) -> serde_json::Value {
        let r = self.get("/status").expect("status answers");
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).expect("JSON status")
    }

    /// `POST /write?…` with `query` (e.g. `db=x&precision=s`).
    pub fn write(&mut self, query: &str, body: &[u8]) -> Response {
        self.client
            .request("POST", &format!("/write?{query}"), &[], body)
            .expect("write through influx-ha")
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.client
            .request(method, target, headers, body)
            .expect("request to influx-ha")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}
