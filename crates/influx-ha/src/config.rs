//! The TOML configuration: schema, defaults and validation.
//!
//! Reading happens in two steps. [`toml`] and serde turn the text into raw structs, refusing
//! unknown keys and wrong types with an error that names the line and shows it. Then
//! validation checks what types cannot express (at least one backend,
//! unique and file-system-safe names, URLs, listen addresses) and builds a [`Config`] of plain,
//! already-checked values; its errors name the line and the key path, such as
//! `backend[1].url`.
//!
//! ```toml
//! data_dir = "/var/lib/influx-ha"     # one hinted-handoff queue folder per backend
//! # node_name = "relay-1"             # this relay's name towards its peers; default: host name
//!
//! [http]
//! bind = "0.0.0.0:8086"
//! # max_body_bytes = 25000000        # 413 past this, before and after gzip inflation
//! # max_inflight_bytes = "32MiB"     # request bodies held at once (at least max_body_bytes);
//! # inflight_wait = "5s"             # past it a request waits this long for room, then 503
//! # max_connections = 10000
//! # header_read_timeout = "30s"     # request headers (and TLS handshake) within this; also
//! #                                  # closes connections idle this long (HTTP/1 and h2)
//! # body_read_timeout = "60s"
//! # drain_timeout = "30s"            # SIGTERM: time given to in-flight requests
//! # tls_cert = "/etc/influx-ha/cert.pem"  # HTTPS: PEM chain, leaf first (both or neither;
//! # tls_key = "/etc/influx-ha/key.pem"    # re-read on SIGHUP)
//! # rate_limit = { requests_per_second = 100, burst = 200, per = "address" }
//! #                                  # token bucket per client ("address" or "user"); past
//! #                                  # it 503 + Retry-After; burst defaults to the rate
//!
//! [admin]                             # optional: /, /status, /metrics, /admin/v1/… here
//!                                     # (without it they are on the main listener)
//! bind = "127.0.0.1:8093"
//! # tls_cert = "…"                    # as in [http]
//! # tls_key = "…"
//!
//! [[udp]]                             # any number; one datagram = a batch of lines
//! bind = "0.0.0.0:8089"
//! database = "telegraf"               # created on every backend at start
//! # precision = "ns"                 # ns, us (microseconds), ms, s, m, h
//!
//! [[tcp]]                             # any number; newline-delimited lines per connection
//! bind = "0.0.0.0:8094"
//! database = "telegraf"               # created on every backend at start
//! # max_connections = 1024           # more clients wait in the kernel's backlog
//! # idle_timeout = "5m"              # a connection silent this long is closed
//!
//! [[graphite]]                        # any number; Graphite plaintext `path value [timestamp]`
//! bind = "0.0.0.0:2003"
//! # protocol = "tcp"                 # tcp | udp
//! # database = "graphite"            # created on every backend at start
//! # separator = "."                  # joins the parts of a measurement, field or tag
//! # templates = [                    # InfluxDB 1.x templates: [filter] pattern [tag=value,...]
//! #   "servers.* .host.measurement.field",
//! #   "measurement*",                # no filter: replaces the default (whole path)
//! # ]
//! # tags = ["region=eu"]             # added where the path and template set no such tag
//!
//! [[opentsdb]]                        # any number; telnet `put` lines and HTTP /api/put,
//! bind = "0.0.0.0:4242"               # told apart per connection as InfluxDB does
//! # database = "opentsdb"            # created on every backend at start
//!
//! [write]
//! consistency = "one"                 # any | one | quorum | all
//! # backend_timeout = "10s"          # deadline of one direct write to a backend
//! # connect_timeout = "2s"
//!
//! [queue]
//! max_bytes = "10GiB"                 # per backend
//! max_age = "7d"
//! fsync = "always"                    # always | interval | never
//! # fsync_interval = "1s"            # with fsync = "interval"
//! # segment_bytes = "64MiB"
//! # min_free_disk = "1GiB"
//! # replay_lanes = 2                 # a replayed batch is sent as this many requests at once,
//! #                                  # split by measurement (1: strictly one request at a time)
//!
//! [health]                            # active checks: GET /ping on every backend
//! # interval = "1s"                  # also how often peers are asked for their queues
//! # timeout = "1s"                   # a check not answered 204 within this fails
//! # rise = 2                         # consecutive good checks before a down backend is up
//! # fall = 2                         # consecutive failures (checks, or errors seen by
//! #                                  # reads and writes) before an up backend is down
//!
//! [query]
//! # stale_reads = false              # true: with no fresh backend, a catching-up one answers
//! #                                  # (header X-Influx-Ha-Stale: true) instead of a 503
//! # timeout = "60s"                  # time a backend gets to send the first byte of a
//! #                                  # read's answer (InfluxDB sends its headers before it
//! #                                  # runs the query), and the longest it may go silent
//! #                                  # mid-answer
//!
//! [[backend]]
//! name = "influx-a"                   # also the queue folder name under data_dir
//! url = "http://10.0.0.1:8086"
//! # username = "relay"               # service credentials for this backend
//! # password = "..."
//! # ca_file = "/etc/influx-ha/ca.pem" # https:// only: trust these CAs, not the system's
//!
//! [auth]                              # optional: relay-level authentication, off by default
//! enabled = true                      # InfluxDB's auth-enabled: 401 without good credentials
//! # admin_listener = true            # false: the [admin] listener asks for none
//! # admins = ["ops"]                # the users/tokens (by name, each defined below) that may
//! #                                  # use /admin/… (default: all)
//!
//! [[auth.user]]                       # any number; u/p parameters, Basic, `Token user:pass`
//! name = "telegraf"
//! password_hash = "$pbkdf2-sha256$i=600000$…"  # from `influx-ha hash-password`
//!
//! [[auth.user]]
//! name = "ops"                        # an operator, for the commands and the admin API
//! password_hash = "$pbkdf2-sha256$i=600000$…"
//!
//! [[auth.token]]                      # any number; `Authorization: Token TOKEN`
//! name = "grafana"                    # shown in logs instead of the token
//! token_hash = "$sha256$…"            # from `influx-ha new-token`
//!
//! [[peer]]                            # any number: the other relays writing to the same
//! name = "relay-2"                    # backends; reads wait for their queues too
//! url = "http://10.0.0.2:8093"        # the peer's admin address (its [admin] bind, or its
//!                                     # main address when it has no [admin] listener)
//! # username = "peer"                # a user of the peer's [auth], when it has auth on
//! # password = "..."
//! # ca_file = "/etc/influx-ha/ca.pem" # https:// peers: trust these CAs, not the system's
//!
//! [anti_entropy]                      # optional: compares the backends in the background
//! # check_interval = "1h"            # how often
//! # window = "24h"                   # how far back each check looks
//! # settle = "1m"                    # the most recent span it leaves out (writes on their way)
//! # auto_repair = true               # copy what differs back (false: only report it)
//! # rate = 20                        # requests a second at most, over every backend
//! ```
//!
//! Backends are matched across relays by `name`: every relay must give the same backend the
//! same name, or a peer's queue for it is not seen.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod anti_entropy;
mod protocols;
pub use self::anti_entropy::AntiEntropyConfig;
pub use self::protocols::{
    DEFAULT_GRAPHITE_DATABASE, DEFAULT_OPENTSDB_DATABASE, GraphiteConfig, GraphiteProtocol,
    OpentsdbConfig,
};

pub use self::security::{AuthConfig, RateLimit, RateLimitKey};
pub use crate::params::{Consistency, Precision};
pub use crate::tls::TlsFiles;
use crate::units::{ByteSize, HumanDuration};

/// InfluxDB 1.6's default `max-body-size`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 25_000_000;
/// Default cap on request-body bytes held in memory at once, over all requests. Bodies are
/// held from their first byte until they are answered; at the backends' pace, a few megabytes
/// keep every core busy, so the cap bounds memory without costing throughput.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 32 << 20;
/// Default time a request waits for room under the in-flight cap before it gets 503.
pub const DEFAULT_INFLIGHT_WAIT: Duration = Duration::from_secs(5);
/// Default concurrent requests per replayed batch: InfluxDB on the small machines this is built
/// for has two cores.
pub const DEFAULT_REPLAY_LANES: usize = 2;
/// Most concurrent requests per replayed batch.
pub const MAX_REPLAY_LANES: usize = 16;
/// Default cap on open client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time a client gets to send its request headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a client gets to send a whole request body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline of one direct write to a backend (InfluxDB's own write timeout).
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default TCP connect timeout towards a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default per-backend queue size cap.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 10 << 30;
/// Default per-backend queue age cap.
pub const DEFAULT_QUEUE_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// Default fsync period with `fsync = "interval"`.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default queue segment file size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default free-disk floor under which queues stop accepting appends.
pub const DEFAULT_MIN_FREE_DISK: u64 = 1 << 30;
/// Default cap on open connections of one `[[tcp]]` listener.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 1024;
/// Default time a `[[tcp]]` connection may stay silent before it is closed.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest backend name (it is a directory name).
pub const MAX_BACKEND_NAME_LEN: usize = 64;
/// Most connections a listener may be configured to hold: far past what one process can have
/// open, and within what its connection limit can count.
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 24;

/// Default period of the active health checks and of peer polls.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Default deadline of one health check.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of consecutive good checks before a down backend counts as up.
pub const DEFAULT_HEALTH_RISE: u32 = 2;
/// Default number of consecutive failures before an up backend counts as down.
pub const DEFAULT_HEALTH_FALL: u32 = 2;
/// Default time a backend gets to start answering a query (its response headers).
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

// === Validated configuration ===

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the per-backend queues live: `data_dir/<backend name>/`.
    pub data_dir: PathBuf,
    /// The main HTTP listener (InfluxDB's API).
    pub http: HttpConfig,
    /// A separate admin listener; `None` serves the admin surface on the main listener.
    pub admin: Option<AdminConfig>,
    /// UDP line-protocol listeners.
    pub udp: Vec<UdpConfig>,
    /// TCP (newline-delimited) line-protocol listeners.
    pub tcp: Vec<TcpConfig>,
    /// Graphite plaintext listeners (TCP or UDP).
    pub graphite: Vec<GraphiteConfig>,
    /// OpenTSDB listeners (telnet and HTTP on one port).
    pub opentsdb: Vec<OpentsdbConfig>,
    /// Write-path settings.
    pub write: WriteConfig,
    /// Hinted-handoff queue limits, the same for every backend.
    pub queue: QueueConfig,
    /// The InfluxDB backends every write is replicated to; never empty.
    pub backends: Vec<BackendConfig>,
    /// Relay-level authentication (off unless `[auth] enabled = true`).
    pub auth: AuthConfig,
    /// This relay's name in its queue reports to peers (`node_name`, default the host name).
    pub node_name: String,
    /// Active health checks of the backends (`[health]`).
    pub health: HealthConfig,
    /// Read-path settings (`[query]`).
    pub query: QueryConfig,
    /// The other relays writing to the same backends (`[[peer]]`): a backend one of them
    /// still has queued writes for serves no reads.
    pub peers: Vec<PeerConfig>,
    /// The background comparison of the backends (`[anti_entropy]`); off without it.
    pub anti_entropy: Option<AntiEntropyConfig>,
}

/// `[health]`: active checks of every backend, with hysteresis so that a flapping backend
/// does not flap the routing of reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Period of the checks (and of the polls of peers).
    pub interval: Duration,
    /// Deadline of one check.
    pub timeout: Duration,
    /// Consecutive good checks before a down backend is up again.
    pub rise: u32,
    /// Consecutive failures (checks, or errors seen by reads and writes) before an up backend
    /// is down.
    pub fall: u32,
}

/// `[query]`: the read path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryConfig {
    /// With no fresh backend, let a reachable, catching-up one answer (the response says so in
    /// a header) instead of answering 503.
    pub stale_reads: bool,
    /// Time a backend gets for each stage of a read's answer. Without headers within it, the
    /// backend counts as failed and the next one is tried. With headers (InfluxDB sends them
    /// as it takes the query) and no byte of the answer within it, the client gets 503 and the
    /// query is not run elsewhere; a backend marked down meanwhile is left for the next one.
    /// Once the answer streams, a silence this long cuts it off.
    pub timeout: Duration,
}

/// `[[peer]]`: another relay in front of the same backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its name, for messages and the status page.
    pub name: String,
    /// Its admin address (`/admin/v1/queues` is fetched from there).
    pub url: BackendUrl,
    /// A user of the peer's `[auth]`, sent as Basic auth, when the peer asks for credentials.
    pub credentials: Option<Credentials>,
    /// For `https://`: PEM CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
}

/// `[http]`: the main listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Largest request body, compressed and after inflation; past it: 413.
    pub max_body_bytes: u64,
    /// Request-body bytes held at once over all requests; past it a request waits for room.
    pub max_inflight_bytes: u64,
    /// How long a request waits for room under `max_inflight_bytes`; then 503 + Retry-After.
    pub inflight_wait: Duration,
    /// Open client connections; further clients wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Time a client gets to send the request headers (slow-loris protection); it also closes
    /// keep-alive connections idle for this long (clients reconnect transparently).
    pub header_read_timeout: Duration,
    /// Time a client gets to send a whole request body.
    pub body_read_timeout: Duration,
    /// After SIGTERM: time in-flight requests get to finish before the process exits anyway.
    pub drain_timeout: Duration,
    /// `tls_cert` and `tls_key`: serve HTTPS instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// `rate_limit`: a token bucket per client address or user; past it 503 + Retry-After.
    pub rate_limit: Option<RateLimit>,
}

/// `[admin]`: the separate admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to listen on (loopback is the sensible choice).
    pub bind: SocketAddr,
    /// `tls_cert` and `tls_key`: serve HTTPS instead of HTTP.
    pub tls: Option<TlsFiles>,
}

/// `[[udp]]`: one UDP line-protocol listener: each datagram is a batch of lines, written at the
/// `[write]` consistency (see [`crate::ingest::udp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Database every datagram is written to; created on every backend at start.
    pub database: String,
    /// Precision of timestamps in the datagrams.
    pub precision: Precision,
}

/// `[[tcp]]`: one TCP line-protocol listener: newline-delimited lines per connection, written
/// at the `[write]` consistency; a line longer than `http.max_body_bytes` closes its connection
/// (see [`crate::ingest::tcp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Database every line is written to; created on every backend at start.
    pub database: String,
    /// Open connections at most; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// `[write]`: the write path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteConfig {
    /// Default consistency level; a request's `consistency` parameter overrides it.
    pub consistency: Consistency,
    /// Deadline of one direct write to a backend; past it the send counts as failed.
    pub backend_timeout: Duration,
    /// TCP connect timeout towards a backend.
    pub connect_timeout: Duration,
}

/// When queue appends are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before the client is answered (group commit): the promise of DESIGN.md §2.
    Always,
    /// Every period; a crash can lose the last period of acknowledged writes.
    Interval(Duration),
    /// Left to the OS; a crash can lose acknowledged writes.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Interval(d) => write!(f, "every {}", crate::units::format_duration(*d)),
            Self::Never => f.write_str("never"),
        }
    }
}

/// `[queue]`: limits of each backend's hinted-handoff queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Size cap of one backend's queue; past it the backend is marked diverged.
    pub max_bytes: u64,
    /// Age cap: older records are dropped and the backend is marked diverged.
    pub max_age: Duration,
    /// fsync policy for appends.
    pub fsync: FsyncPolicy,
    /// Size of one segment file.
    pub segment_bytes: u64,
    /// Appends are refused while the file system has less free space than this.
    pub min_free_disk: u64,
    /// Concurrent requests per replayed batch (its measurements split between them).
    pub replay_lanes: usize,
}

/// `[[backend]]`: one InfluxDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Unique, file-system-safe name; also the queue folder name.
    pub name: String,
    /// Where the backend's HTTP API is.
    pub url: BackendUrl,
    /// Service credentials influx-ha uses for this backend (never the client's).
    pub credentials: Option<Credentials>,
    /// For `https://`: PEM CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
}

/// Service credentials for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// InfluxDB user name.
    pub username: String,
    /// InfluxDB password; never printed.
    pub password: Secret,
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// A backend's base URL, checked: scheme, host, explicit port and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 in brackets, as written).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path prefix without a trailing slash, `""` for none (`/write` is appended to it).
    pub base_path: String,
}

impl BackendUrl {
    /// The full URL of an API path such as `/write`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(
            f,
            "{scheme}://{}:{}{}",
            self.host, self.port, self.base_path
        )
    }
}

// === impl Secret ===

/// A password or token: readable only through [`Secret::expose`], redacted in `Debug` and
/// `Display` so it cannot end up in a log or an error message by accident.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"<redacted>\")")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// === Errors ===

/// One thing wrong with a config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the offending value, when it is in the file.
    pub line: Option<usize>,
    /// Key path such as `backend[1].url`.
    pub key: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (part of the message, so not also a `source()`).
        error: std::io::Error,
    },
    /// Not valid TOML, an unknown key or a wrong type.
    #[error("invalid config {origin}: {}", parse_message(.line, .column, .message, .excerpt))]
    Parse {
        /// The file (or `<string>`).
        origin: String,
        /// 1-based line of the error, when toml knows it.
        line: Option<usize>,
        /// 1-based column of the error, when toml knows it.
        column: Option<usize>,
        /// toml's (or our deserializer's) message.
        message: String,
        /// The offending line as written, with any password value replaced by `<redacted>`.
        excerpt: Option<String>,
    },
    /// Well-formed but semantically wrong; every problem found is listed.
    #[error("invalid config {origin}:\n{}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file (or `<string>`).
        origin: String,
        /// What is wrong, in file order as far as known.
        problems: Vec<Problem>,
    },
}

// === Loading ===

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| parse_error(origin, text, &e))?;
        raw.validate(text).map_err(|problems| ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        })
    }

    /// The queue folder of a backend.
    pub fn queue_dir(&self, backend: &BackendConfig) -> PathBuf {
        self.data_dir.join(&backend.name)
    }
}

fn parse_message(
    line: &Option<usize>,
    column: &Option<usize>,
    message: &str,
    excerpt: &Option<String>,
) -> String {
    let mut s = String::new();
    if let (Some(line), Some(column)) = (line, column) {
        s.push_str(&format!("line {line}, column {column}: "));
    }
    s.push_str(message.trim_end());
    if let Some(excerpt) = excerpt {
        s.push_str(&format!("\n  | {excerpt}"));
    }
    s
}

/// Builds [`ConfigError::Parse`] from toml's error. toml's own `Display` quotes the offending
/// line, which would print a password when the error is on a `password` line; ours redacts it.
fn parse_error(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let (mut line, mut column, mut excerpt, mut message) = (None, None, None, None);
    if let Some(span) = e.span() {
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        line = Some(text[..start].matches('\n').count() + 1);
        column = Some(text[line_start..start].chars().count() + 1);
        let raw_line = &text[line_start..line_end];
        let shown = redact_line(raw_line);
        if shown != raw_line.trim_end_matches('\r') {
            // serde quotes offending values in backticks; a password's must not appear.
            let value = raw_line.split_once('=').map_or(raw_line, |(_, v)| v);
            let value = value.trim().trim_matches(['"', '\'']);
            let scrubbed = scrub_backticks(e.message(), value);
            // A value of a few characters turns up in any message by chance (`x` in
            // "expected"); the backticks, where serde quotes values, are scrubbed anyway.
            message = Some(if value.len() >= 4 && scrubbed.contains(value) {
                "invalid password value (it must be a quoted string)".to_owned()
            } else {
                scrubbed
            });
        }
        excerpt = Some(shown);
    }
    ConfigError::Parse {
        origin: origin.to_owned(),
        line,
        column,
        message: message.unwrap_or_else(|| e.message().to_owned()),
        excerpt,
    }
}

/// Replaces each `` `…` `` of a message with `` `<redacted>` `` unless it is a name (letters,
/// digits, `_`, not starting with a digit: the keys serde lists) that has no part of `value`
/// (TOML may quote a value as it read it, `1_234` as `1234`: only names are shown).
fn scrub_backticks(message: &str, value: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        out.push('`');
        let name = part
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let secret = !name || value.is_empty() || part.contains(value) || value.contains(part);
        out.push_str(if inside && secret { "<redacted>" } else { part });
        inside = !inside;
    }
    out
}

/// Words that make a config line's value secret, whatever the key is spelled like
/// (`passwd`, `pasword`, an inline table holding a password, a token).
const SECRET_WORDS: [&str; 6] = ["pass", "word", "pwd", "pswd", "secret", "token"];

/// A config line safe to show: on a line mentioning a secret, everything after the first `=`
/// (or the whole line, without one) is hidden.
fn redact_line(line: &str) -> String {
    let line = line.trim_end_matches('\r');
    let lower = line.to_ascii_lowercase();
    if !SECRET_WORDS.iter().any(|w| lower.contains(w)) {
        return line.to_owned();
    }
    match line.split_once('=') {
        Some((key, _)) => format!("{key}= <redacted>"),
        None => "<redacted>".to_owned(),
    }
}

// === Raw (as written) configuration ===
//
// These mirror the TOML keys one to one (each documented on its validated counterpart above).
// Values that validation checks are `Spanned`, so problems can name their line.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Spanned<String>,
    #[serde(default)]
    http: RawHttp,
    admin: Option<RawAdmin>,
    #[serde(default)]
    udp: Vec<RawUdp>,
    #[serde(default)]
    tcp: Vec<RawTcp>,
    #[serde(default)]
    graphite: Vec<protocols::RawGraphite>,
    #[serde(default)]
    opentsdb: Vec<protocols::RawOpentsdb>,
    #[serde(default)]
    write: RawWrite,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    backend: Vec<RawBackend>,
    #[serde(default)]
    auth: security::RawAuth,
    node_name: Option<Spanned<String>>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    query: RawQuery,
    #[serde(default)]
    peer: Vec<RawPeer>,
    anti_entropy: Option<anti_entropy::RawAntiEntropy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<Spanned<HumanDuration>>,
    timeout: Option<Spanned<HumanDuration>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    stale_reads: Option<bool>,
    timeout: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Spanned<String>,
    url: Spanned<String>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<Secret>>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    bind: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<ByteSize>>,
    max_inflight_bytes: Option<Spanned<ByteSize>>,
    inflight_wait: Option<HumanDuration>,
    max_connections: Option<Spanned<i64>>,
    header_read_timeout: Option<Spanned<HumanDuration>>,
    body_read_timeout: Option<Spanned<HumanDuration>>,
    drain_timeout: Option<HumanDuration>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    rate_limit: Option<Spanned<security::RawRateLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    bind: Spanned<String>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUdp {
    bind: Spanned<String>,
    database: Spanned<String>,
    #[serde(default)]
    precision: Precision,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    bind: Spanned<String>,
    database: Spanned<String>,
    max_connections: Option<Spanned<i64>>,
    idle_timeout: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWrite {
    consistency: Option<Consistency>,
    backend_timeout: Option<Spanned<HumanDuration>>,
    connect_timeout: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawFsync {
    Always,
    Interval,
    Never,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    max_bytes: Option<Spanned<ByteSize>>,
    max_age: Option<Spanned<HumanDuration>>,
    fsync: Option<RawFsync>,
    fsync_interval: Option<Spanned<HumanDuration>>,
    segment_bytes: Option<Spanned<ByteSize>>,
    min_free_disk: Option<ByteSize>,
    replay_lanes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Spanned<String>,
    url: Spanned<String>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<Secret>>,
    ca_file: Option<Spanned<String>>,
}

/// Collects problems while validating.
struct Checker<'a> {
    /// The config text, to turn spans into line numbers.
    text: &'a str,
    /// Everything found so far.
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line<T>(&self, spanned: &Spanned<T>) -> usize {
        let start = spanned.span().start.min(self.text.len());
        self.text.as_bytes()[..start]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn at<T>(&mut self, spanned: &Spanned<T>, key: impl Into<String>, message: impl Into<String>) {
        let line = self.line(spanned);
        self.problems.push(Problem {
            line: Some(line),
            key: key.into(),
            message: message.into(),
        });
    }

    fn general(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            line: None,
            key: key.into(),
            message: message.into(),
        });
    }

    fn bind(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.at(
                    value,
                    key,
                    format!(
                        "{:?} is not an address to listen on: write IP:port such as \"0.0.0.0:8086\", \"127.0.0.1:8086\" or \"[::]:8086\" (host names are not resolved)",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn database(&mut self, value: &Spanned<String>, key: &str) -> String {
        if value.get_ref().is_empty() {
            self.at(value, key, "must not be empty");
        }
        value.get_ref().clone()
    }

    fn positive(
        &mut self,
        value: &Option<Spanned<HumanDuration>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(v) if v.get_ref().0.is_zero() => {
                self.at(v, key, "must be longer than zero");
                default
            }
            Some(v) => v.get_ref().0,
        }
    }
}

/// Backend names become directory names: keep them portable and unsurprising.
fn check_backend_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > MAX_BACKEND_NAME_LEN {
        return Err(format!("must be at most {MAX_BACKEND_NAME_LEN} characters"));
    }
    let first_ok = name.as_bytes()[0].is_ascii_alphanumeric();
    let rest_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !first_ok || !rest_ok {
        return Err(format!(
            "{name:?} is not a safe folder name: use letters, digits, '-', '_' and '.', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a backend URL. Messages never repeat a URL that carries credentials.
fn parse_backend_url(url: &str) -> Result<BackendUrl, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err("must start with http:// or https://".to_owned());
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // Before the path, or where a password holding a `/` puts it.
    if authority.contains('@')
        || path
            .split(['?', '#'])
            .next()
            .is_some_and(|p| p.contains('@'))
    {
        return Err(
            "must not contain credentials: set username and password in the [[backend]] table"
                .to_owned(),
        );
    }
    if path.contains(['?', '#']) {
        // Not shown: a query may hold credentials (`?u=…&p=…`).
        return Err("must not have a query or fragment".to_owned());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((inner, after)) = v6.split_once(']') else {
            return Err(format!("{url:?} has an unclosed '[' in the host"));
        };
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{url:?}: {inner:?} is not an IPv6 address"));
        }
        (format!("[{inner}]"), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{url:?} has no host"));
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!("{url:?}: {host:?} is not a valid host name"));
    }
    let Some(port) = port.filter(|p| !p.is_empty()) else {
        return Err(format!(
            "{url:?} has no port: write it explicitly, such as {}://{host}:8086",
            if scheme == Scheme::Http {
                "http"
            } else {
                "https"
            }
        ));
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{url:?}: {port:?} is not a port number")),
    };
    if path.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(format!(
            "{url:?}: the path must not contain '.' or '..' segments"
        ));
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b))
    {
        return Err(format!(
            "{url:?}: the path may only contain unreserved characters"
        ));
    }
    let base_path = path.trim_end_matches('/').to_owned();
    Ok(BackendUrl {
        scheme,
        host,
        port,
        base_path,
    })
}

impl RawConfig {
    fn validate(self, text: &str) -> Result<Config, Vec<Problem>> {
        let mut c = Checker {
            text,
            problems: Vec::new(),
        };
        let placeholder: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));

        // data_dir
        if self.data_dir.get_ref().trim().is_empty() {
            c.at(&self.data_dir, "data_dir", "must not be empty");
        }
        let data_dir = PathBuf::from(self.data_dir.get_ref());

        // [http]
        let http_bind = match &self.http.bind {
            Some(b) => c.bind(b, "http.bind").unwrap_or(placeholder),
            None => SocketAddr::from(([0, 0, 0, 0], 8086)),
        };
        let max_body_bytes = match &self.http.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(v) => {
                let n = v.get_ref().0;
                if n == 0 || n > u64::from(u32::MAX) {
                    c.at(v, "http.max_body_bytes", "must be between 1 byte and 4GiB");
                }
                n
            }
        };
        let max_inflight_bytes = match &self.http.max_inflight_bytes {
            None => DEFAULT_MAX_INFLIGHT_BYTES.max(max_body_bytes),
            Some(v) => {
                let n = v.get_ref().0;
                if n < max_body_bytes {
                    c.at(
                        v,
                        "http.max_inflight_bytes",
                        format!("must be at least http.max_body_bytes ({max_body_bytes}), or a request of the largest allowed size could never be taken"),
                    );
                }
                n
            }
        };
        let max_connections = match &self.http.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n) if (1..=MAX_CONNECTIONS_LIMIT).contains(&n) => n,
                _ => {
                    c.at(
                        v,
                        "http.max_connections",
                        format!("must be from 1 to {MAX_CONNECTIONS_LIMIT}"),
                    );
                    DEFAULT_MAX_CONNECTIONS
                }
            },
        };
        let header_read_timeout = c.positive(
            &self.http.header_read_timeout,
            "http.header_read_timeout",
            DEFAULT_HEADER_READ_TIMEOUT,
        );
        let body_read_timeout = c.positive(
            &self.http.body_read_timeout,
            "http.body_read_timeout",
            DEFAULT_BODY_READ_TIMEOUT,
        );
        let drain_timeout = self
            .http
            .drain_timeout
            .map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0);
        let http = HttpConfig {
            bind: http_bind,
            max_body_bytes,
            max_inflight_bytes,
            inflight_wait: self
                .http
                .inflight_wait
                .map_or(DEFAULT_INFLIGHT_WAIT, |d| d.0),
            max_connections,
            header_read_timeout,
            body_read_timeout,
            drain_timeout,
            tls: security::tls_files(&mut c, &self.http.tls_cert, &self.http.tls_key, "http"),
            rate_limit: self
                .http
                .rate_limit
                .as_ref()
                .map(|r| security::rate_limit(&mut c, r)),
        };

        // [admin]
        let admin = self.admin.as_ref().map(|a| AdminConfig {
            bind: c.bind(&a.bind, "admin.bind").unwrap_or(placeholder),
            tls: security::tls_files(&mut c, &a.tls_cert, &a.tls_key, "admin"),
        });

        // [[udp]] and [[tcp]]
        let udp: Vec<UdpConfig> = self
            .udp
            .iter()
            .enumerate()
            .map(|(i, u)| UdpConfig {
                bind: c
                    .bind(&u.bind, &format!("udp[{i}].bind"))
                    .unwrap_or(placeholder),
                database: c.database(&u.database, &format!("udp[{i}].database")),
                precision: u.precision,
            })
            .collect();
        let tcp: Vec<TcpConfig> = self
            .tcp
            .iter()
            .enumerate()
            .map(|(i, t)| TcpConfig {
                bind: c
                    .bind(&t.bind, &format!("tcp[{i}].bind"))
                    .unwrap_or(placeholder),
                database: c.database(&t.database, &format!("tcp[{i}].database")),
                max_connections: match &t.max_connections {
                    None => DEFAULT_TCP_MAX_CONNECTIONS,
                    Some(v) => match usize::try_from(*v.get_ref()) {
                        Ok(n) if (1..=MAX_CONNECTIONS_LIMIT).contains(&n) => n,
                        _ => {
                            c.at(
                                v,
                                format!("tcp[{i}].max_connections"),
                                format!("must be from 1 to {MAX_CONNECTIONS_LIMIT}"),
                            );
                            DEFAULT_TCP_MAX_CONNECTIONS
                        }
                    },
                },
                idle_timeout: c.positive(
                    &t.idle_timeout,
                    &format!("tcp[{i}].idle_timeout"),
                    DEFAULT_TCP_IDLE_TIMEOUT,
                ),
            })
            .collect();

        let graphite = protocols::graphite(&mut c, &self.graphite, placeholder);
        let opentsdb = protocols::opentsdb(&mut c, &self.opentsdb, placeholder);

        // Two TCP listeners on one address cannot both start.
        let mut tcp_binds: Vec<(String, SocketAddr, Option<&Spanned<String>>)> =
            vec![("http.bind".to_owned(), http.bind, self.http.bind.as_ref())];
        if let (Some(a), Some(raw)) = (&admin, &self.admin) {
            tcp_binds.push(("admin.bind".to_owned(), a.bind, Some(&raw.bind)));
        }
        for (i, (t, raw)) in tcp.iter().zip(&self.tcp).enumerate() {
            tcp_binds.push((format!("tcp[{i}].bind"), t.bind, Some(&raw.bind)));
        }
        for (i, (g, raw)) in graphite.iter().zip(&self.graphite).enumerate() {
            if g.protocol == GraphiteProtocol::Tcp {
                tcp_binds.push((
                    format!("graphite[{i}].bind"),
                    g.bind,
                    Some(raw.bind_spanned()),
                ));
            }
        }
        for (i, (o, raw)) in opentsdb.iter().zip(&self.opentsdb).enumerate() {
            tcp_binds.push((
                format!("opentsdb[{i}].bind"),
                o.bind,
                Some(raw.bind_spanned()),
            ));
        }
        for (i, (key, addr, raw)) in tcp_binds.iter().enumerate() {
            if addr.port() == 0 {
                continue;
            }
            if let Some((other, _, _)) = tcp_binds[..i].iter().find(|(_, a, _)| a == addr) {
                let msg = format!("{addr} is already used by {other}");
                match raw {
                    Some(raw) => c.at(raw, key.clone(), msg),
                    None => c.general(key.clone(), msg),
                }
            }
        }
        let mut udp_binds: Vec<(String, SocketAddr, &Spanned<String>)> = udp
            .iter()
            .zip(&self.udp)
            .enumerate()
            .map(|(i, (u, raw))| (format!("udp[{i}].bind"), u.bind, &raw.bind))
            .collect();
        for (i, (g, raw)) in graphite.iter().zip(&self.graphite).enumerate() {
            if g.protocol == GraphiteProtocol::Udp {
                udp_binds.push((format!("graphite[{i}].bind"), g.bind, raw.bind_spanned()));
            }
        }
        for (i, (key, addr, raw)) in udp_binds.iter().enumerate() {
            if addr.port() == 0 {
                continue;
            }
            if let Some((other, _, _)) = udp_binds[..i].iter().find(|(_, a, _)| a == addr) {
                c.at(
                    *raw,
                    key.clone(),
                    format!("{addr} is already used by {other}"),
                );
            }
        }

        // [write]
        let write = WriteConfig {
            consistency: self.write.consistency.unwrap_or(Consistency::One),
            backend_timeout: c.positive(
                &self.write.backend_timeout,
                "write.backend_timeout",
                DEFAULT_BACKEND_TIMEOUT,
            ),
            connect_timeout: c.positive(
                &self.write.connect_timeout,
                "write.connect_timeout",
                DEFAULT_CONNECT_TIMEOUT,
            ),
        };

        // [queue]
        let q = &self.queue;
        let max_bytes = q
            .max_bytes
            .as_ref()
            .map_or(DEFAULT_QUEUE_MAX_BYTES, |v| v.get_ref().0);
        if let Some(v) = q.max_bytes.as_ref().filter(|v| v.get_ref().0 == 0) {
            c.at(v, "queue.max_bytes", "must be larger than zero");
        }
        let max_age = c.positive(&q.max_age, "queue.max_age", DEFAULT_QUEUE_MAX_AGE);
        let fsync_interval = c.positive(
            &q.fsync_interval,
            "queue.fsync_interval",
            DEFAULT_FSYNC_INTERVAL,
        );
        let fsync = match q.fsync.unwrap_or(RawFsync::Always) {
            RawFsync::Always => FsyncPolicy::Always,
            RawFsync::Interval => FsyncPolicy::Interval(fsync_interval),
            RawFsync::Never => FsyncPolicy::Never,
        };
        if let (Some(v), false) = (&q.fsync_interval, matches!(fsync, FsyncPolicy::Interval(_))) {
            c.at(
                v,
                "queue.fsync_interval",
                "only applies with fsync = \"interval\"",
            );
        }
        let segment_bytes = match &q.segment_bytes {
            None => DEFAULT_SEGMENT_BYTES.min(max_bytes.max(1)),
            Some(v) => {
                let n = v.get_ref().0;
                if n < 1024 {
                    c.at(v, "queue.segment_bytes", "must be at least 1KiB");
                } else if n > max_bytes {
                    c.at(
                        v,
                        "queue.segment_bytes",
                        format!("must not exceed queue.max_bytes ({max_bytes})"),
                    );
                }
                n
            }
        };
        let replay_lanes = match &q.replay_lanes {
            None => DEFAULT_REPLAY_LANES,
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n @ 1..=MAX_REPLAY_LANES) => n,
                _ => {
                    c.at(
                        v,
                        "queue.replay_lanes",
                        format!("must be between 1 and {MAX_REPLAY_LANES}"),
                    );
                    DEFAULT_REPLAY_LANES
                }
            },
        };
        let queue = QueueConfig {
            max_bytes,
            max_age,
            fsync,
            segment_bytes,
            min_free_disk: q.min_free_disk.map_or(DEFAULT_MIN_FREE_DISK, |v| v.0),
            replay_lanes,
        };

        // [[backend]]
        if self.backend.is_empty() {
            c.general("backend", "at least one [[backend]] table is required");
        }
        let mut backends = Vec::with_capacity(self.backend.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut urls: HashMap<String, usize> = HashMap::new();
        for (i, b) in self.backend.iter().enumerate() {
            let name = b.name.get_ref();
            if let Err(msg) = check_backend_name(name) {
                c.at(&b.name, format!("backend[{i}].name"), msg);
            } else if let Some(j) = names.insert(name.to_ascii_lowercase(), i) {
                c.at(
                    &b.name,
                    format!("backend[{i}].name"),
                    format!("{name:?} is already the name of backend[{j}] (names are compared ignoring case: they are folder names)"),
                );
            }
            let url = match parse_backend_url(b.url.get_ref().trim()) {
                Ok(url) => {
                    let canonical = url.to_string().to_ascii_lowercase();
                    if let Some(j) = urls.insert(canonical, i) {
                        c.at(
                            &b.url,
                            format!("backend[{i}].url"),
                            format!("{url} is already the url of backend[{j}]"),
                        );
                    }
                    url
                }
                Err(msg) => {
                    c.at(&b.url, format!("backend[{i}].url"), msg);
                    BackendUrl {
                        scheme: Scheme::Http,
                        host: String::new(),
                        port: 0,
                        base_path: String::new(),
                    }
                }
            };
            let credentials = match (&b.username, &b.password) {
                (None, None) => None,
                (Some(u), Some(p)) => {
                    if u.get_ref().is_empty() {
                        c.at(u, format!("backend[{i}].username"), "must not be empty");
                    }
                    Some(Credentials {
                        username: u.get_ref().clone(),
                        password: p.get_ref().clone(),
                    })
                }
                (Some(u), None) => {
                    c.at(
                        u,
                        format!("backend[{i}].password"),
                        "is required when username is set",
                    );
                    None
                }
                (None, Some(p)) => {
                    c.at(
                        p,
                        format!("backend[{i}].username"),
                        "is required when password is set",
                    );
                    None
                }
            };
            let ca_file = security::ca_file(&mut c, &b.ca_file, &url, &format!("backend[{i}]"));
            backends.push(BackendConfig {
                name: name.clone(),
                url,
                credentials,
                ca_file,
            });
        }

        let auth = self.auth.validate(&mut c);
        // node_name, [health], [query], [[peer]]
        let node_name = match &self.node_name {
            Some(n) if n.get_ref().trim().is_empty() => {
                c.at(n, "node_name", "must not be empty");
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => host_name(),
        };
        let mut threshold = |v: &Option<Spanned<i64>>, key: &str, default: u32| match v {
            None => default,
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    c.at(v, key, "must be between 1 and 100");
                    default
                }
            },
        };
        let rise = threshold(&self.health.rise, "health.rise", DEFAULT_HEALTH_RISE);
        let fall = threshold(&self.health.fall, "health.fall", DEFAULT_HEALTH_FALL);
        let health = HealthConfig {
            interval: c.positive(
                &self.health.interval,
                "health.interval",
                DEFAULT_HEALTH_INTERVAL,
            ),
            timeout: c.positive(
                &self.health.timeout,
                "health.timeout",
                DEFAULT_HEALTH_TIMEOUT,
            ),
            rise,
            fall,
        };
        let query = QueryConfig {
            stale_reads: self.query.stale_reads.unwrap_or(false),
            timeout: c.positive(&self.query.timeout, "query.timeout", DEFAULT_QUERY_TIMEOUT),
        };
        let mut peers = Vec::with_capacity(self.peer.len());
        let mut peer_names: HashMap<String, usize> = HashMap::new();
        for (i, p) in self.peer.iter().enumerate() {
            let name = p.name.get_ref();
            if name.trim().is_empty() {
                c.at(&p.name, format!("peer[{i}].name"), "must not be empty");
            } else if let Some(j) = peer_names.insert(name.clone(), i) {
                c.at(
                    &p.name,
                    format!("peer[{i}].name"),
                    format!("{name:?} is already the name of peer[{j}]"),
                );
            } else if *name == node_name {
                c.at(
                    &p.name,
                    format!("peer[{i}].name"),
                    format!("{name:?} is this relay's own node_name"),
                );
            }
            let url = match parse_backend_url(p.url.get_ref().trim()) {
                Ok(url) => url,
                Err(msg) => {
                    c.at(&p.url, format!("peer[{i}].url"), msg);
                    continue;
                }
            };
            let credentials =
                security::credentials(&mut c, &p.username, &p.password, &format!("peer[{i}]"));
            let ca_file = security::ca_file(&mut c, &p.ca_file, &url, &format!("peer[{i}]"));
            peers.push(PeerConfig {
                name: name.clone(),
                url,
                credentials,
                ca_file,
            });
        }

        let anti_entropy = self.anti_entropy.as_ref().map(|a| a.validate(&mut c));

        if !c.problems.is_empty() {
            c.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            return Err(c.problems);
        }
        Ok(Config {
            data_dir,
            http,
            admin,
            udp,
            tcp,
            graphite,
            opentsdb,
            write,
            queue,
            backends,
            auth,
            node_name,
            health,
            query,
            peers,
            anti_entropy,
        })
    }
}

mod security;
/// The machine's host name (Linux), else `$HOSTNAME`, else `influx-ha`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "influx-ha".to_owned())
}

#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod tests;
