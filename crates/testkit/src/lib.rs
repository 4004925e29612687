//! Test harness for end-to-end tests: real `influxd` (InfluxDB 1.6) processes on free loopback
//! ports, each with its own temporary directory, killed and cleaned up on drop.
//!
//! ```no_run
//! let db = testkit::Influxd::start();
//! db.create_database("metrics");
//! let (status, _) = db.write("metrics", "s", b"cpu,host=a usage=1 1700000000\n");
//! assert_eq!(status, 204);
//! let json = db.query("metrics", "SELECT * FROM cpu");
//! assert!(json.contains("1700000000"));
//! ```
//!
//! Layout:
//! - this file: [`Influxd`] (start, signals, restart, database helpers) and [`free_port`];
//! - [`http`]: a small blocking keep-alive HTTP/1.1 client ([`HttpClient`], [`Response`]);
//! - [`json`]: [`go_json_string`], the byte-exact Go `encoding/json` string encoder influxd
//!   uses for its error bodies.
//!
//! `influxd` must be on `PATH` (Debian package `influxdb`; `.ci/run` installs it). Without it
//! [`Influxd::start`] panics with a message saying so: end-to-end tests never skip silently.

pub mod http;
pub mod json;

pub use http::{HttpClient, Response, form, url_encode};
pub use json::{go_json_bytes, go_json_string};

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a starting influxd may take to answer `/ping` (it usually needs 0.15–0.3 s, but the
/// test machine is small and shared).
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// How many times a start is retried with new ports when another process took one of the ports
/// between choosing and binding it.
const PORT_ATTEMPTS: usize = 8;

/// Why an influxd could not be started.
#[derive(Debug)]
pub enum StartError {
    /// `influxd` is not on `PATH`.
    NotInstalled,
    /// An I/O error while preparing or spawning.
    Io(io::Error),
    /// influxd exited, or did not become ready in time; the text holds its log.
    Failed(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInstalled => f.write_str(
                "influxd is not on PATH: end-to-end tests need InfluxDB 1.6 (Debian package \
                 `influxdb`). Run scripts/test, which installs it as CI does (.ci/run)",
            ),
            Self::Io(e) => write!(f, "starting influxd: {e}"),
            Self::Failed(msg) => write!(f, "starting influxd: {msg}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// How to configure a test influxd beyond the minimal config (see
/// [`Influxd::start_with_options`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `[http] auth-enabled = true`, with an admin user of this name and password created at
    /// start; the helper methods ([`Influxd::query`], [`Influxd::write`], …) then send these
    /// credentials as `u`/`p` (raw [`Influxd::request`]s send what they are given).
    pub admin: Option<(String, String)>,
    /// `[http] https-enabled = true` with this PEM certificate and key. The server then speaks
    /// only HTTPS: readiness is its listening socket, and the plain-HTTP helper methods cannot
    /// be used (talk to it with a TLS client).
    pub https: Option<(PathBuf, PathBuf)>,
    /// `[http] max-row-limit`: the most rows an unchunked answer holds (0, the default, is
    /// no limit).
    pub max_row_limit: u32,
}

/// One outcome of launching influxd on chosen ports.
enum Launch {
    Ready(Child),
    PortTaken(String),
    Failed(StartError),
}

/// A running `influxd` on `127.0.0.1`, in its own process group, with its state in a temporary
/// directory. Dropping it kills the process group with SIGKILL and removes the directory.
#[derive(Debug)]
pub struct Influxd {
    /// The temporary directory holding the config, the data and the log; removed on drop.
    dir: tempfile::TempDir,
    /// The config file influxd was started with (kept for restarts).
    config: PathBuf,
    /// The HTTP port (`[http] bind-address`).
    http_port: u16,
    /// The RPC port (top-level `bind-address`), which must differ per instance.
    rpc_port: u16,
    /// The running process (also the process group leader), `None` after [`Influxd::kill`].
    child: Option<Child>,
    /// A keep-alive connection for the helper methods.
    client: Mutex<HttpClient>,
    /// Ports chosen for the `{port0}`, `{port1}`, … placeholders of [`Influxd::start_with`].
    extra_ports: Vec<u16>,
    /// What it was started with.
    options: Options,
}

// === impl Influxd ===

impl Influxd {
    /// Starts an influxd and waits until it answers `/ping`.
    ///
    /// # Panics
    ///
    /// When influxd is not installed or cannot be started; the message says why.
    pub fn start() -> Self {
        match Self::try_start() {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts an influxd and waits until it answers `/ping`, retrying with new ports when a
    /// chosen port was taken by someone else in the meantime.
    pub fn try_start() -> Result<Self, StartError> {
        Self::try_start_with("")
    }

    /// Starts an influxd with `extra` appended to its config, such as its own `[[graphite]]` or
    /// `[[opentsdb]]` listeners. Each `{port0}`, `{port1}`, … in `extra` is replaced by a free
    /// port (new ones on every retry); [`Influxd::extra_port`] says which were used.
    ///
    /// # Panics
    ///
    /// When influxd is not installed or cannot be started; the message says why.
    pub fn start_with(extra: &str) -> Self {
        match Self::try_start_with(extra) {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        }
    }

    /// The port chosen for `{port<i>}` in [`Influxd::start_with`].
    ///
    /// # Panics
    ///
    /// When `extra` had no such placeholder.
    pub fn extra_port(&self, i: usize) -> u16 {
        self.extra_ports[i]
    }

    /// Like [`Influxd::start_with`], returning the error instead of panicking.
    pub fn try_start_with(extra: &str) -> Result<Self, StartError> {
        Self::try_start_configured(extra, Options::default())
    }

    /// Starts an influxd configured by `options` (see [`Options`]).
    ///
    /// # Panics
    ///
    /// When influxd is not installed or cannot be started; the message says why.
    pub fn start_with_options(options: Options) -> Self {
        match Self::try_start_configured("", options) {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts an influxd with `extra` appended to its config and `options`.
    pub fn try_start_configured(extra: &str, options: Options) -> Result<Self, StartError> {
        if !on_path("influxd") {
            return Err(StartError::NotInstalled);
        }
        let dir = tempfile::Builder::new()
            .prefix("testkit-influxd-")
            .tempdir()?;
        let config = dir.path().join("influxd.conf");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let [http_port, rpc_port] = free_ports::<2>()?;
            let placeholders = (0..).take_while(|i| extra.contains(&format!("{{port{i}}}")));
            let mut extra_ports = Vec::new();
            let mut extra_text = extra.to_owned();
            for i in placeholders {
                let port = free_port()?;
                extra_text = extra_text.replace(&format!("{{port{i}}}"), &port.to_string());
                extra_ports.push(port);
            }
            let mut text = config_text(dir.path(), http_port, rpc_port);
            if options.admin.is_some() {
                text = text.replace("auth-enabled = false", "auth-enabled = true");
            }
            if let Some((cert, key)) = &options.https {
                text = text.replace(
                    "  log-enabled = false\n",
                    &format!(
                        "  log-enabled = false\n  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n",
                        cert.display(),
                        key.display()
                    ),
                );
            }
            if options.max_row_limit > 0 {
                text = text.replace(
                    "  log-enabled = false\n",
                    &format!(
                        "  log-enabled = false\n  max-row-limit = {}\n",
                        options.max_row_limit
                    ),
                );
            }
            text.push_str(&extra_text);
            fs::write(&config, text)?;
            match launch(dir.path(), &config, http_port, options.https.is_some()) {
                Launch::Ready(child) => {
                    let influxd = Self {
                        client: Mutex::new(HttpClient::new(loopback(http_port))),
                        dir,
                        config,
                        http_port,
                        rpc_port,
                        child: Some(child),
                        extra_ports,
                        options,
                    };
                    if let Some((user, password)) = &influxd.options.admin {
                        // The first admin user may be created without credentials.
                        let q = format!(
                            "CREATE USER {} WITH PASSWORD '{}' WITH ALL PRIVILEGES",
                            quote_ident(user),
                            password.replace('\\', "\\\\").replace('\'', "\\'")
                        );
                        let r = influxd
                            .request(
                                "POST",
                                "/query",
                                &[("Content-Type", "application/x-www-form-urlencoded")],
                                form(&[("q", &q)]).as_bytes(),
                            )
                            .map_err(StartError::Io)?;
                        if r.status != 200 || r.text().contains("\"error\"") {
                            return Err(StartError::Failed(format!(
                                "creating the admin user: {} {}",
                                r.status,
                                r.text()
                            )));
                        }
                    }
                    return Ok(influxd);
                }
                Launch::PortTaken(log) => last = log,
                Launch::Failed(e) => return Err(e),
            }
        }
        Err(StartError::Failed(format!(
            "ports kept being taken ({PORT_ATTEMPTS} attempts); last log:\n{last}"
        )))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.http_port
    }

    /// The HTTP address.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.http_port)
    }

    /// The RPC (backup/restore) port.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// The temporary directory holding `meta/`, `data/`, `wal/`, the config and `influxd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// influxd's stdout and stderr so far (all runs of this instance).
    pub fn log(&self) -> String {
        fs::read(self.dir.path().join("influxd.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The process id (also the process group id), `None` when not running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (possibly stopped by [`Influxd::stop`]).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process group with SIGKILL and reaps it. Does nothing when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        self.reset_client();
    }

    /// Stops gracefully: SIGTERM, then waits up to 30 s (SIGKILL after that).
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal_group(child.id(), "TERM");
            let deadline = Instant::now() + READY_DEADLINE;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        kill_group(&mut child);
                        break;
                    }
                }
            }
        }
        self.reset_client();
    }

    /// Freezes the process group with SIGSTOP: connections are accepted by the kernel but never
    /// answered, like a hung server.
    ///
    /// # Panics
    ///
    /// When not running or the signal cannot be sent.
    pub fn stop(&self) {
        self.signal("STOP");
        self.wait_for_state(true);
    }

    /// Resumes the process group after [`Influxd::stop`] with SIGCONT.
    ///
    /// # Panics
    ///
    /// When not running or the signal cannot be sent.
    pub fn cont(&self) {
        self.signal("CONT");
        self.wait_for_state(false);
    }

    /// Signals are delivered asynchronously: waits until `/proc` shows the process stopped
    /// (state `T`) or running again, so that the caller's next step sees the new state.
    fn wait_for_state(&self, stopped: bool) {
        let Some(pid) = self.pid() else { return };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().chars().next())
                })
                .flatten();
            if (state == Some('T')) == stopped {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "influxd (pid {pid}) did not become {} (state {state:?})",
                if stopped { "stopped" } else { "running" }
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("influxd on port {} is not running", self.http_port));
        if let Err(e) = signal_group(pid, sig) {
            panic!("sending SIG{sig} to influxd (pgid {pid}): {e}");
        }
    }

    /// Starts influxd again on the same ports, config and data directory (killing it first with
    /// SIGKILL if it is still running) and waits until it answers `/ping`.
    ///
    /// # Panics
    ///
    /// When it cannot start again, e.g. because another process took its port meanwhile.
    pub fn restart(&mut self) {
        self.kill();
        match launch(
            self.dir.path(),
            &self.config,
            self.http_port,
            self.options.https.is_some(),
        ) {
            Launch::Ready(child) => self.child = Some(child),
            Launch::PortTaken(log) => panic!(
                "restarting influxd: port {} or {} was taken meanwhile; log:\n{log}",
                self.http_port, self.rpc_port
            ),
            Launch::Failed(e) => panic!("restarting influxd: {e}"),
        }
    }

    /// A new client of its own for this server (for use from other threads).
    pub fn client(&self) -> HttpClient {
        HttpClient::new(self.addr())
    }

    fn conn(&self) -> MutexGuard<'_, HttpClient> {
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reset_client(&self) {
        *self.conn() = HttpClient::new(self.addr());
    }

    /// Sends any request on the shared keep-alive connection.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.conn().request(method, target, headers, body)
    }

    /// `path` with the admin credentials of [`Options::admin`] as `u`/`p` (unchanged without).
    fn authed(&self, path: &str) -> String {
        match &self.options.admin {
            None => path.to_owned(),
            Some((u, p)) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}{}", form(&[("u", u), ("p", p)]))
            }
        }
    }

    /// `POST /query` with the given form parameters (e.g. `db`, `q`, `epoch`).
    pub fn query_params(&self, params: &[(&str, &str)]) -> io::Result<Response> {
        self.request(
            "POST",
            &self.authed("/query"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form(params).as_bytes(),
        )
    }

    /// Runs `q` against `db` (empty: none) by POST and returns the JSON text of the answer,
    /// with times as integer nanoseconds (`epoch=ns`).
    ///
    /// # Panics
    ///
    /// When the request fails or the status is not 200.
    pub fn query(&self, db: &str, q: &str) -> String {
        let mut params = vec![("q", q), ("epoch", "ns")];
        if !db.is_empty() {
            params.push(("db", db));
        }
        match self.query_params(&params) {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => panic!(
                "query {q:?} on db {db:?}: status {}: {}",
                r.status,
                r.text()
            ),
            Err(e) => panic!("query {q:?} on db {db:?}: {e}"),
        }
    }

    /// `CREATE DATABASE "name"`.
    ///
    /// # Panics
    ///
    /// When the statement fails.
    pub fn create_database(&self, name: &str) {
        self.statement(&format!("CREATE DATABASE {}", quote_ident(name)));
    }

    /// `DROP DATABASE "name"`.
    ///
    /// # Panics
    ///
    /// When the statement fails.
    pub fn drop_database(&self, name: &str) {
        self.statement(&format!("DROP DATABASE {}", quote_ident(name)));
    }

    /// Runs a statement and panics when its result holds an error.
    fn statement(&self, q: &str) {
        let json = self.query("", q);
        if json.contains("\"error\"") {
            panic!("{q}: {json}");
        }
    }

    /// `POST /write?db=DB&precision=P` (no `precision` parameter when `precision` is empty)
    /// with `body`; returns the whole response.
    pub fn write_raw(&self, db: &str, precision: &str, body: &[u8]) -> io::Result<Response> {
        let mut params = vec![("db", db)];
        if !precision.is_empty() {
            params.push(("precision", precision));
        }
        self.request(
            "POST",
            &self.authed(&format!("/write?{}", form(&params))),
            &[],
            body,
        )
    }

    /// Writes `body` to `db` with `precision` (`n`, `u`, `ms`, `s`, `m`, `h`, or empty) and
    /// returns the status and the body text.
    ///
    /// # Panics
    ///
    /// When the request fails at the connection level.
    pub fn write(&self, db: &str, precision: &str, body: impl AsRef<[u8]>) -> (u16, String) {
        match self.write_raw(db, precision, body.as_ref()) {
            Ok(r) => (r.status, r.text()),
            Err(e) => panic!("write to {db:?} on {}: {e}", self.url()),
        }
    }

    /// `GET /ping` answered 204.
    pub fn ping(&self) -> bool {
        matches!(self.request("GET", "/ping", &[], b""), Ok(r) if r.status == 204)
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        // `dir` is removed when its field is dropped, after the process is gone.
    }
}

/// Quotes an InfluxQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A free TCP port on 127.0.0.1 (bound and released at once: another process may take it
/// before it is used, so users must retry on "address in use", as [`Influxd::try_start`] does).
pub fn free_port() -> io::Result<u16> {
    let [p] = free_ports::<1>()?;
    Ok(p)
}

/// `N` distinct free ports: all are held at the same time while choosing, so they differ.
fn free_ports<const N: usize>() -> io::Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        *port = l.local_addr()?.port();
        listeners.push(l);
    }
    Ok(ports)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            fs::metadata(dir.join(program)).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
    })
}

/// The minimal config of REFERENCE.md.
fn config_text(dir: &Path, http_port: u16, rpc_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
"#
    )
}

/// Spawns influxd with `config` in its own process group and waits until it answers `/ping`.
fn launch(dir: &Path, config: &Path, http_port: u16, https: bool) -> Launch {
    use std::os::unix::process::CommandExt;

    let log_path = dir.join("influxd.log");
    let open_log = || OpenOptions::new().create(true).append(true).open(&log_path);
    let (out, err) = match open_log().and_then(|a| Ok((a, open_log()?))) {
        Ok(pair) => pair,
        Err(e) => return Launch::Failed(e.into()),
    };
    let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    let spawned = Command::new("influxd")
        .arg("run")
        .arg("-config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Launch::Failed(StartError::NotInstalled);
        }
        Err(e) => return Launch::Failed(e.into()),
    };
    let new_log = || {
        fs::read(&log_path)
            .map(|b| {
                let from = usize::try_from(log_start).unwrap_or(0).min(b.len());
                String::from_utf8_lossy(&b[from..]).into_owned()
            })
            .unwrap_or_default()
    };

    let mut client = HttpClient::new(loopback(http_port));
    client.set_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let log = new_log();
                return if log.contains("address already in use") {
                    Launch::PortTaken(log)
                } else {
                    Launch::Failed(StartError::Failed(format!(
                        "influxd exited with {status}; log:\n{log}"
                    )))
                };
            }
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                return Launch::Failed(e.into());
            }
        }
        let answers = if https {
            // No TLS client here: a listening socket owned by influxd is the sign.
            std::net::TcpStream::connect(loopback(http_port)).is_ok()
        } else {
            matches!(client.request("GET", "/ping", &[], b""), Ok(r) if r.status == 204)
        };
        if answers {
            match listener_owner_is(child.id(), http_port) {
                Some(false) => {
                    // Someone else answers on our port; ours will fail to bind (or has).
                    kill_group(&mut child);
                    return Launch::PortTaken(format!(
                        "port {http_port} is served by another process\n{}",
                        new_log()
                    ));
                }
                Some(true) | None => return Launch::Ready(child),
            }
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            return Launch::Failed(StartError::Failed(format!(
                "no answer on /ping within {READY_DEADLINE:?}; log:\n{}",
                new_log()
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the socket listening on 127.0.0.1:`port` belongs to process `pid` (from `/proc`);
/// `None` when that cannot be told.
fn listener_owner_is(pid: u32, port: u16) -> Option<bool> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    let inode = table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        (cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A"))
            .then(|| cols.get(9).map(|s| (*s).to_owned()))
            .flatten()
    })?;
    let wanted = format!("socket:[{inode}]");
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
    }))
}

/// Sends `SIG<sig>` to the process group `pgid` with the shell's `kill` builtin (the workspace
/// forbids `unsafe`, so no direct syscall; `sh` is always there, procps' kill(1) may not be).
fn signal_group(pgid: u32, sig: &str) -> io::Result<()> {
    let status = Command::new("sh")
        .args(["-c", "kill -s \"$0\" -- \"$1\"", sig, &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -s {sig} -- -{pgid}: {status}"
        )))
    }
}

/// SIGKILLs the whole group (falling back to the leader alone) and reaps the leader.
fn kill_group(child: &mut Child) {
    if signal_group(child.id(), "KILL").is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// Prepares a config whose HTTP port is `http_port` in a new directory.
    fn prepared(http_port: u16) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("influxd.conf");
        let [rpc] = free_ports::<1>().expect("port");
        fs::write(&config, config_text(dir.path(), http_port, rpc)).expect("config");
        (dir, config)
    }

    #[test]
    fn port_held_by_a_silent_listener_is_reported_as_taken() {
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = squatter.local_addr().expect("addr").port();
        let (dir, config) = prepared(port);
        match launch(dir.path(), &config, port, false) {
            Launch::PortTaken(log) => assert!(log.contains("address already in use"), "{log}"),
            Launch::Ready(_) => panic!("started on a taken port"),
            Launch::Failed(e) => panic!("{e}"),
        }
    }

    #[test]
    fn port_answered_by_another_server_is_reported_as_taken() {
        // A fake server that answers every request with 204, like an influxd would on /ping.
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = squatter.local_addr().expect("addr").port();
        thread::spawn(move || {
            for stream in squatter.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" => {
                            let _ = reader
                                .get_mut()
                                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                        }
                        Ok(_) => {}
                    }
                }
            }
        });
        let (dir, config) = prepared(port);
        match launch(dir.path(), &config, port, false) {
            Launch::PortTaken(_) => {}
            Launch::Ready(_) => panic!("took another server for ours"),
            Launch::Failed(e) => panic!("{e}"),
        }
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports::<3>().expect("ports");
        assert!(a != b && b != c && a != c);
        assert!(free_port().expect("port") > 0);
    }
}
