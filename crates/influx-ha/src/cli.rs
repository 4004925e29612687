//! Command line: `influx-ha serve|check --config FILE`, `influx-ha bench URL`, and what
//! `check` prints.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::units::{format_duration, format_size};

/// High availability for InfluxDB OSS: every write replicated to every backend, durably.
///
/// Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=influx_ha=debug) to change what is logged.
#[derive(Debug, Parser)]
#[command(name = "influx-ha", version, propagate_version = true)]
pub struct Cli {
    /// Format of the log lines on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: listen for writes and replicate them to every backend.
    ///
    /// Stops on SIGTERM or SIGINT: /health answers 503, listeners close, in-flight requests
    /// get the drain period ([http] drain_timeout) to finish, then the process exits 0.
    Serve(ConfigArg),
    /// Validate a config file and print what `serve` would do with it; exits non-zero with
    /// the problems (line and key of each) when the file is not valid.
    Check(ConfigArg),
    /// Hash a password for an [[auth.user]] table: reads it from a prompt (twice, echo off)
    /// or, when standard input is not a terminal, from its first line; prints the
    /// password_hash value. The password is never taken from the command line.
    HashPassword(HashPasswordArgs),
    /// Make a random token for an [[auth.token]] table: prints the token (give it to the
    /// client, which sends `Authorization: Token TOKEN`) and the token_hash for the config.
    NewToken,
    /// Load-test an InfluxDB-compatible write endpoint (HTTP v1/v2 or UDP) with telegraf-like
    /// series, and optionally verify that every backend holds exactly the points written.
    ///
    /// Prints points/s, latency percentiles and errors by kind at the end (--json for
    /// scripts); exits non-zero when a verified backend differs or no write succeeded.
    Bench(Box<crate::bench::BenchArgs>),
    /// Hinted-handoff queues: list, inspect, verify, drain, purge (running or stopped node).
    Queue(crate::admin::cli::QueueArgs),
    /// Dead letters (batches a backend refused for good): list, replay, purge.
    Deadletter(crate::admin::cli::DeadletterArgs),
    /// Backend maintenance: queue every write for it and serve no reads from it, or resume.
    Backend(crate::admin::cli::BackendArgs),
    /// Compare the backends' data without reading it all: counts per database, retention
    /// policy, measurement and shard-group window, then per series where they differ.
    ///
    /// Prints the schema differences and a table of the differing windows. Exit status: 0 the
    /// backends match, 1 they differ, 2 verify could not run. Safe on a running cluster: small
    /// aggregate queries, paced by --rate.
    Verify(VerifyArgs),
    /// Copy what differs (verify's pieces) from the most complete backend to the others, with
    /// the schema (databases, retention policies, continuous queries); verify again; clear the
    /// backends' diverged flags when everything matches.
    ///
    /// Idempotent: stopped at any point, it is simply run again. Exit status as verify's,
    /// for the state after the repair.
    Repair(RepairArgs),
}

/// What `verify` compares and how gently.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The node's config: backends, their service credentials, data_dir.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this database (default: every database but _internal).
    #[arg(long, value_name = "NAME")]
    pub db: Option<String>,
    /// Only data from this time on: RFC 3339 (2024-05-01T00:00:00Z), a date, a duration
    /// before now (7d) or nanoseconds since the epoch.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only data before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many requests a second, over every backend (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub rate: u32,
    /// Deadline of one request to a backend, e.g. 60s.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub timeout: String,
}

/// What `repair` does besides verify's arguments.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// What to compare.
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// Points read per SELECT.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub chunk: usize,
    /// Verify-and-copy rounds at most.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub passes: u32,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub quiet: bool,
}

/// Options of `hash-password`.
#[derive(Debug, Args)]
pub struct HashPasswordArgs {
    /// PBKDF2 iterations (10000 to 2000000); more is slower to check and to attack.
    #[arg(long, default_value_t = crate::auth::password::DEFAULT_ITERATIONS)]
    pub iterations: u32,
}

/// The config file argument.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path of the TOML config file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

/// What `serve` would do with `config`, for people. Never includes credentials.
pub fn describe(config: &Config, origin: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "config {origin} is valid");
    let _ = writeln!(s);
    let _ = writeln!(s, "listeners");
    let admin_note = if config.admin.is_none() {
        "; admin surface: /, /status, /metrics"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "  http   {}  InfluxDB 1.6 API: /write, /api/v2/write, /query, /ping, /health{admin_note}",
        config.http.bind
    );
    if let Some(admin) = &config.admin {
        let _ = writeln!(
            s,
            "  admin  {}  /, /status, /metrics, /ping, /health",
            admin.bind
        );
    }
    for u in &config.udp {
        let _ = writeln!(
            s,
            "  udp    {}  database {:?}, precision {} (line protocol; database created at start)",
            u.bind, u.database, u.precision
        );
    }
    for t in &config.tcp {
        let _ = writeln!(
            s,
            "  tcp    {}  database {:?} (line protocol; database created at start)",
            t.bind, t.database
        );
    }
    for g in &config.graphite {
        let protocol = match g.protocol {
            crate::config::GraphiteProtocol::Tcp => "tcp",
            crate::config::GraphiteProtocol::Udp => "udp",
        };
        let _ = writeln!(
            s,
            "  graphite {} {}  database {:?} (Graphite plaintext; database created at start)",
            protocol, g.bind, g.database
        );
    }
    for o in &config.opentsdb {
        let _ = writeln!(
            s,
            "  opentsdb {}  database {:?} (telnet put lines and HTTP /api/put; database created at start)",
            o.bind, o.database
        );
    }
    let h = &config.http;
    let _ = writeln!(s);
    let _ = writeln!(s, "limits");
    let _ = writeln!(
        s,
        "  request body   {} bytes, before and after gzip inflation (413 past it)",
        h.max_body_bytes
    );
    let _ = writeln!(
        s,
        "  in flight      {} of request bodies at once (past it a request waits up to {}, then 503)",
        format_size(h.max_inflight_bytes),
        format_duration(h.inflight_wait)
    );
    let _ = writeln!(s, "  connections    {}", h.max_connections);
    let _ = writeln!(
        s,
        "  timeouts       headers {}, body {}, drain on shutdown {}",
        format_duration(h.header_read_timeout),
        format_duration(h.body_read_timeout),
        format_duration(h.drain_timeout)
    );
    let a = &config.auth;
    let _ = writeln!(s);
    let _ = writeln!(s, "security");
    if a.enabled {
        let _ = writeln!(
            s,
            "  authentication on: {} user(s), {} token(s); admin listener {}",
            a.users.len(),
            a.tokens.len(),
            if a.admin_listener {
                "asks for credentials"
            } else {
                "open"
            }
        );
    } else {
        let _ = writeln!(s, "  authentication off: every client is accepted");
    }
    let tls = |t: &Option<crate::tls::TlsFiles>| {
        t.as_ref().map_or("plain HTTP".to_owned(), |f| {
            format!("TLS, certificate {}", f.cert.display())
        })
    };
    let _ = writeln!(s, "  http listener: {}", tls(&config.http.tls));
    if let Some(admin) = &config.admin {
        let _ = writeln!(s, "  admin listener: {}", tls(&admin.tls));
    }
    match &config.http.rate_limit {
        Some(r) => {
            let per = match r.per {
                crate::config::RateLimitKey::Address => "address",
                crate::config::RateLimitKey::User => "user",
            };
            let _ = writeln!(
                s,
                "  rate limit: {} requests/s, burst {}, per {per} (503 + Retry-After past it)",
                r.requests_per_second, r.burst
            );
        }
        None => {
            let _ = writeln!(s, "  rate limit: none");
        }
    }
    let w = &config.write;
    let _ = writeln!(s);
    let _ = writeln!(s, "write");
    let _ = writeln!(
        s,
        "  consistency    {} (a request's consistency parameter overrides it)",
        w.consistency
    );
    let _ = writeln!(
        s,
        "  backends       deadline {} per write, connect timeout {}",
        format_duration(w.backend_timeout),
        format_duration(w.connect_timeout)
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "backends ({})", config.backends.len());
    let width = config
        .backends
        .iter()
        .map(|b| b.name.len())
        .max()
        .unwrap_or(0);
    for b in &config.backends {
        let creds = if b.credentials.is_some() {
            "service credentials set"
        } else {
            "no credentials"
        };
        let _ = writeln!(s, "  {:width$}  {}  {creds}", b.name, b.url);
    }
    let q = &config.queue;
    let _ = writeln!(s);
    let _ = writeln!(s, "hinted-handoff queues (one per backend)");
    for b in &config.backends {
        let _ = writeln!(s, "  {:width$}  {}", b.name, config.queue_dir(b).display());
    }
    let _ = writeln!(
        s,
        "  each: at most {}, records kept {}, fsync {}, segments of {}, appends stop below {} free disk; replayed {} request{} at a time",
        format_size(q.max_bytes),
        format_duration(q.max_age),
        q.fsync,
        format_size(q.segment_bytes),
        format_size(q.min_free_disk),
        q.replay_lanes,
        if q.replay_lanes == 1 { "" } else { "s" }
    );
    let hc = &config.health;
    let _ = writeln!(s);
    let _ = writeln!(s, "reads (node name {:?})", config.node_name);
    let _ = writeln!(
        s,
        "  health checks  GET /ping every {}, timeout {}; down after {} failures, up after {} good checks",
        format_duration(hc.interval),
        format_duration(hc.timeout),
        hc.fall,
        hc.rise
    );
    let _ = writeln!(
        s,
        "  stale reads    {}",
        if config.query.stale_reads {
            "on: with no fresh backend a catching-up one answers (X-Influx-Ha-Stale: true)"
        } else {
            "off: 503 when no backend is fresh"
        }
    );
    if config.peers.is_empty() {
        let _ = writeln!(s, "  peers          none");
    }
    for p in &config.peers {
        let _ = writeln!(s, "  peer           {}  {}/admin/v1/queues", p.name, p.url);
    }
    let _ = writeln!(s);
    match &config.anti_entropy {
        None => {
            let _ = writeln!(s, "anti-entropy     off");
        }
        Some(a) => {
            let _ = writeln!(
                s,
                "anti-entropy     every {}: verify from {} to {} ago, {}, {}",
                format_duration(a.check_interval),
                format_duration(a.window),
                format_duration(a.settle),
                if a.auto_repair {
                    "copy what differs back"
                } else {
                    "report what differs"
                },
                if a.rate == 0 {
                    "requests not paced".to_owned()
                } else {
                    format!("at most {} requests/s", a.rate)
                }
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands_and_global_flags() {
        let cli = Cli::try_parse_from(["influx-ha", "check", "--config", "x.toml"]).expect("valid");
        assert_eq!(cli.log_format, LogFormat::Text);
        assert!(matches!(cli.command, Command::Check(ref a) if a.config.as_os_str() == "x.toml"));
        let cli =
            Cli::try_parse_from(["influx-ha", "serve", "-c", "y.toml", "--log-format", "json"])
                .expect("valid");
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(matches!(cli.command, Command::Serve(_)));
        assert!(
            Cli::try_parse_from(["influx-ha", "serve"]).is_err(),
            "--config is required"
        );
        assert!(
            Cli::try_parse_from(["influx-ha", "--log-format", "xml", "check", "-c", "x"]).is_err()
        );
    }

    #[test]
    fn describe_shows_what_serve_does_without_credentials() {
        let text = r#"
data_dir = "/var/lib/influx-ha"
[admin]
bind = "127.0.0.1:8093"
[[udp]]
bind = "0.0.0.0:8089"
database = "telegraf"
[[graphite]]
bind = "0.0.0.0:2003"
[[opentsdb]]
bind = "0.0.0.0:4242"
[write]
consistency = "quorum"
[[backend]]
name = "influx-a"
url = "http://10.0.0.1:8086"
username = "relay"
password = "hunter2"
[[backend]]
name = "b"
url = "http://10.0.0.2:8086"
"#;
        let config = Config::from_toml(text, "t.toml").expect("valid");
        let out = describe(&config, "t.toml");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("relay"), "{out}");
        for expected in [
            "config t.toml is valid",
            "http   0.0.0.0:8086",
            "admin  127.0.0.1:8093",
            "udp    0.0.0.0:8089  database \"telegraf\", precision ns (line protocol; database created at start)",
            "graphite tcp 0.0.0.0:2003  database \"graphite\"",
            "opentsdb 0.0.0.0:4242  database \"opentsdb\"",
            "consistency    quorum",
            "influx-a  http://10.0.0.1:8086  service credentials set",
            "b         http://10.0.0.2:8086  no credentials",
            "influx-a  /var/lib/influx-ha/influx-a",
            "at most 10 GiB, records kept 1w, fsync always, segments of 64 MiB",
            "health checks  GET /ping every 1s, timeout 1s; down after 2 failures, up after 2 good checks",
            "stale reads    off",
            "peers          none",
            "anti-entropy     off",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
        }
    }
}
