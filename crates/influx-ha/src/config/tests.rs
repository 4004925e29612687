use super::*;

const MINIMAL: &str = r#"
data_dir = "/var/lib/influx-ha"

[[backend]]
name = "influx-a"
url = "http://10.0.0.1:8086"
"#;

const FULL: &str = r#"
data_dir = "/var/lib/influx-ha"     # hinted-handoff queues live here, one folder per backend

[http]
bind = "0.0.0.0:8086"
max_body_bytes = 25000000
max_inflight_bytes = "256MiB"
inflight_wait = "250ms"
max_connections = 500
header_read_timeout = "10s"
body_read_timeout = "1m"
drain_timeout = "15s"

[admin]
bind = "127.0.0.1:8093"

[[udp]]
bind = "0.0.0.0:8089"
database = "telegraf"
precision = "s"

[[udp]]
bind = "0.0.0.0:8090"
database = "collectd"

[[tcp]]
bind = "0.0.0.0:8094"
database = "telegraf"

[write]
consistency = "quorum"
backend_timeout = "5s"
connect_timeout = "500ms"

[queue]
max_bytes = "10GiB"
max_age = "7d"
fsync = "interval"
fsync_interval = "250ms"
segment_bytes = "32MiB"
min_free_disk = "2GiB"
replay_lanes = 4

[[backend]]
name = "influx-a"
url = "http://10.0.0.1:8086"
username = "relay"
password = "hunter2"

[[backend]]
name = "influx-b"
url = "https://influx-b.example.com:8086/prefix/"
"#;

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml")
}

pub(super) fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// The single problem of an invalid config.
pub(super) fn problem(text: &str) -> Problem {
    let mut p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    p.remove(0)
}

fn parse_error(text: &str) -> String {
    match parse(text) {
        Err(e @ ConfigError::Parse { .. }) => e.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn with_backend(extra_top: &str, backend: &str) -> String {
    format!("data_dir = \"/d\"\n{extra_top}\n[[backend]]\n{backend}\n")
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/influx-ha"));
    assert_eq!(
        c.http.bind,
        "0.0.0.0:8086".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.http.max_body_bytes, 25_000_000);
    assert_eq!(c.http.max_inflight_bytes, DEFAULT_MAX_INFLIGHT_BYTES);
    assert_eq!(c.http.inflight_wait, DEFAULT_INFLIGHT_WAIT);
    assert_eq!(c.http.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.http.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    assert_eq!(c.admin, None);
    assert!(c.udp.is_empty() && c.tcp.is_empty());
    assert_eq!(c.write.consistency, Consistency::One);
    assert_eq!(c.write.backend_timeout, Duration::from_secs(10));
    assert_eq!(c.queue.max_bytes, 10 << 30);
    assert_eq!(c.queue.max_age, Duration::from_secs(7 * 86_400));
    assert_eq!(c.queue.fsync, FsyncPolicy::Always);
    assert_eq!(c.queue.segment_bytes, DEFAULT_SEGMENT_BYTES);
    assert_eq!(c.backends.len(), 1);
    assert_eq!(c.backends[0].name, "influx-a");
    assert_eq!(c.backends[0].url.to_string(), "http://10.0.0.1:8086");
    assert_eq!(c.backends[0].credentials, None);
    assert_eq!(
        c.queue_dir(&c.backends[0]),
        PathBuf::from("/var/lib/influx-ha/influx-a")
    );
}

#[test]
fn full_config() {
    let c = parse(FULL).expect("valid");
    assert_eq!(c.http.max_inflight_bytes, 256 << 20);
    assert_eq!(c.http.inflight_wait, Duration::from_millis(250));
    assert_eq!(c.http.max_connections, 500);
    assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.http.body_read_timeout, Duration::from_secs(60));
    assert_eq!(c.http.drain_timeout, Duration::from_secs(15));
    assert_eq!(
        c.admin,
        Some(AdminConfig {
            bind: "127.0.0.1:8093".parse().expect("addr"),
            tls: None,
        })
    );
    assert_eq!(c.udp.len(), 2);
    assert_eq!(c.udp[0].precision, Precision::Seconds);
    assert_eq!(c.udp[1].precision, Precision::Nanoseconds);
    assert_eq!(c.udp[1].database, "collectd");
    assert_eq!(c.tcp[0].database, "telegraf");
    assert_eq!(c.write.consistency, Consistency::Quorum);
    assert_eq!(c.write.connect_timeout, Duration::from_millis(500));
    assert_eq!(
        c.queue.fsync,
        FsyncPolicy::Interval(Duration::from_millis(250))
    );
    assert_eq!(c.queue.segment_bytes, 32 << 20);
    assert_eq!(c.queue.min_free_disk, 2 << 30);
    assert_eq!(c.queue.replay_lanes, 4);
    let a = &c.backends[0];
    let creds = a.credentials.as_ref().expect("credentials");
    assert_eq!(creds.username, "relay");
    assert_eq!(creds.password.expose(), "hunter2");
    let b = &c.backends[1];
    assert_eq!(b.url.scheme, Scheme::Https);
    assert_eq!(b.url.host, "influx-b.example.com");
    assert_eq!(b.url.base_path, "/prefix");
    assert_eq!(
        b.url.endpoint("/write"),
        "https://influx-b.example.com:8086/prefix/write"
    );
}

#[test]
fn passwords_are_never_printed() {
    let c = parse(FULL).expect("valid");
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("<redacted>"));
    let secret = Secret::new("s3cret");
    assert_eq!(secret.to_string(), "<redacted>");
    assert!(!format!("{secret:?}").contains("s3cret"));
}

#[test]
fn parse_errors_on_password_lines_do_not_show_the_password() {
    for line in [
        "password = \"hunter2",
        "password = hunter2",
        "password = 12345678",
        "password = \"hunter2\" x",
        "\"password\" = \"hunter2\" \"12345678\"",
    ] {
        let text = format!(
            "data_dir = \"/d\"\n[[backend]]\nname = \"a\"\nurl = \"http://h:1\"\nusername = \"u\"\n{line}\n"
        );
        let err = parse_error(&text);
        assert!(
            !err.contains("hunter2") && !err.contains("12345678"),
            "{err}"
        );
        assert!(err.contains("line 6"), "{err}");
        assert!(err.contains("<redacted>"), "{err}");
    }
    // Other lines are shown as written.
    let err = parse_error("data_dir = \"/d\"\n[http]\nbind = 8086\n");
    assert!(err.contains("| bind = 8086"), "{err}");
    assert!(err.contains("line 3, column 8"), "{err}");
}

#[test]
fn password_is_not_echoed_in_errors() {
    // A wrong type on the password line: toml quotes the line, so the value must not be a
    // string we would mind showing; what matters is that our own messages never include it.
    let text = with_backend(
        "",
        "name = \"a\"\nurl = \"http://u:hunter2@h:8086\"\nusername = \"u\"\npassword = \"hunter2\"",
    );
    let p = problem(&text);
    assert_eq!(p.key, "backend[0].url");
    assert!(p.message.contains("credentials"), "{p}");
    assert!(!p.to_string().contains("hunter2"), "{p}");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let err = parse_error(&format!("{MINIMAL}\n[queue]\nmax_byte = \"1GiB\"\n"));
    assert!(err.contains("unknown field `max_byte`"), "{err}");
    assert!(err.contains("line 9"), "{err}");

    let err =
        parse_error("data_dir = \"/d\"\nbogus = 1\n[[backend]]\nname=\"a\"\nurl=\"http://h:1\"\n");
    assert!(err.contains("unknown field `bogus`"), "{err}");
    assert!(err.contains("line 2"), "{err}");

    let err = parse_error(&with_backend(
        "",
        "name = \"a\"\nurl = \"http://h:1\"\npasword = \"x\"",
    ));
    assert!(err.contains("unknown field `pasword`"), "{err}");
}

#[test]
fn secrets_under_misspelled_keys_in_inline_tables_and_in_urls_are_not_shown() {
    for (backend, secret) in [
        (
            "name = \"a\"\nurl = \"http://h:1\"\npasswd = \"hunter2\"",
            "hunter2",
        ),
        (
            "name = \"a\"\nurl = \"http://h:1\"\npasword = \"hunter2\"",
            "hunter2",
        ),
        (
            "name = \"a\"\nurl = \"http://h:1\"\nsecret = 12345678",
            "12345678",
        ),
        // TOML quotes numbers as it read them, not as written.
        (
            "name = \"a\"\nurl = \"http://h:1\"\npassword = 1_234_5678",
            "12345678",
        ),
        (
            "name = \"a\"\nurl = \"http://h:1\"\npassword = 0xDEADBEEF",
            "3735928559",
        ),
    ] {
        let err = parse_error(&with_backend("", backend));
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("<redacted>"), "{err}");
    }
    // The key's name stays readable in the message.
    let err = parse_error(&with_backend(
        "",
        "name = \"a\"\nurl = \"http://h:1\"\npasswd = \"hunter2\"",
    ));
    assert!(err.contains("unknown field `passwd`"), "{err}");

    let err = parse_error(
        "data_dir = \"/d\"\nbackend = [{ name = \"a\", url = \"http://h:1\", password = \"hunter2\", bogus = 1 }]\n",
    );
    assert!(!err.contains("hunter2"), "{err}");

    for url in [
        "http://h:8086/?u=relay&p=hunter2",
        "http://h:8086/#hunter2",
        "http://user:hun/ter2@h:8086",
        "http://user:hunter2@h:8086",
    ] {
        let p = problem(&with_backend("", &format!("name = \"a\"\nurl = \"{url}\"")));
        assert_eq!(p.key, "backend[0].url");
        assert!(
            !p.to_string().contains("hunter2") && !p.to_string().contains("hun/"),
            "{p}"
        );
    }
}

#[test]
fn syntax_and_type_errors_name_the_line() {
    let err = parse_error("data_dir = \"/d\"\n[http]\nbind = 8086\n");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("test.toml"), "{err}");

    let err = parse_error("data_dir = \n");
    assert!(err.contains("line 1"), "{err}");

    let err = parse_error(&format!("{MINIMAL}[write]\nconsistency = \"most\"\n"));
    assert!(err.contains("unknown variant `most`"), "{err}");
    assert!(err.contains("quorum"), "{err}");

    let err = parse_error(&format!("{MINIMAL}[queue]\nfsync = \"sometimes\"\n"));
    assert!(err.contains("unknown variant `sometimes`"), "{err}");

    let err = parse_error(&format!("{MINIMAL}[queue]\nmax_bytes = \"10 gigs\"\n"));
    assert!(err.contains("unknown unit \"gigs\""), "{err}");
    assert!(err.contains("line 8"), "{err}");

    let err = parse_error(&format!("{MINIMAL}[queue]\nmax_age = \"7 days\"\n"));
    assert!(err.contains("unknown unit \"days\""), "{err}");

    let err = parse_error(&format!(
        "{MINIMAL}[[udp]]\nbind=\"0.0.0.0:1\"\ndatabase=\"x\"\nprecision=\"us2\"\n"
    ));
    assert!(err.contains("unknown variant `us2`"), "{err}");
}

#[test]
fn data_dir_is_required_and_non_empty() {
    let err = parse_error("[[backend]]\nname = \"a\"\nurl = \"http://h:1\"\n");
    assert!(err.contains("missing field `data_dir`"), "{err}");

    let p = problem("data_dir = \"\"\n[[backend]]\nname = \"a\"\nurl = \"http://h:1\"\n");
    assert_eq!(p.key, "data_dir");
    assert_eq!(p.line, Some(1));
}

#[test]
fn at_least_one_backend() {
    let p = problem("data_dir = \"/d\"\n");
    assert_eq!(p.key, "backend");
    assert_eq!(p.line, None);
    assert!(p.message.contains("at least one"), "{p}");
}

#[test]
fn backend_names_must_be_safe_folder_names() {
    for bad in [
        "",
        "..",
        ".",
        "a/b",
        "a b",
        "-a",
        ".hidden",
        "a\\b",
        "ä",
        &"x".repeat(65),
    ] {
        let text = with_backend("", &format!("name = {bad:?}\nurl = \"http://h:1\""));
        let p = problem(&text);
        assert_eq!(p.key, "backend[0].name", "{bad:?}");
        assert_eq!(p.line, Some(4), "{bad:?}");
    }
    for good in ["a", "influx-a", "A_1.b", "9"] {
        let text = with_backend("", &format!("name = {good:?}\nurl = \"http://h:1\""));
        parse(&text).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
}

#[test]
fn backend_names_must_be_unique_ignoring_case() {
    let text = "data_dir = \"/d\"\n[[backend]]\nname = \"a\"\nurl = \"http://h:1\"\n[[backend]]\nname = \"A\"\nurl = \"http://h:2\"\n";
    let p = problem(text);
    assert_eq!(p.key, "backend[1].name");
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("backend[0]"), "{p}");
    assert_eq!(
        p.to_string(),
        "line 6: backend[1].name: \"A\" is already the name of backend[0] (names are compared ignoring case: they are folder names)"
    );
}

#[test]
fn backend_urls_are_checked() {
    let cases = [
        ("ftp://h:1", "http:// or https://"),
        ("h:8086", "http:// or https://"),
        ("http://", "no host"),
        ("http://:8086", "no host"),
        ("http://h", "no port"),
        ("http://h:", "no port"),
        ("http://h:x", "not a port"),
        ("http://h:70000", "not a port"),
        ("http://h:0", "not a port"),
        ("http://h:1?db=x", "query"),
        ("http://h:1/#x", "query"),
        ("http://u:p@h:1", "credentials"),
        ("http://h h:1", "not a valid host"),
        ("http://[zz]:1", "not an IPv6"),
        ("http://[::1:1", "unclosed"),
        ("http://h:1/../x", "'..'"),
        ("http://h:1/a b", "unreserved"),
    ];
    for (url, expected) in cases {
        let p = problem(&with_backend("", &format!("name = \"a\"\nurl = {url:?}")));
        assert_eq!(p.key, "backend[0].url", "{url}");
        assert_eq!(p.line, Some(5), "{url}");
        assert!(p.message.contains(expected), "{url}: {p}");
    }
    let ok = [
        ("http://10.0.0.1:8086", "http://10.0.0.1:8086"),
        ("http://localhost:8086/", "http://localhost:8086"),
        (
            "https://h.example:443/influx",
            "https://h.example:443/influx",
        ),
        ("http://[::1]:8086", "http://[::1]:8086"),
    ];
    for (url, shown) in ok {
        let c = parse(&with_backend("", &format!("name = \"a\"\nurl = {url:?}"))).expect(url);
        assert_eq!(c.backends[0].url.to_string(), shown);
    }
}

#[test]
fn backend_urls_must_differ() {
    let text = "data_dir = \"/d\"\n[[backend]]\nname = \"a\"\nurl = \"http://h:1\"\n[[backend]]\nname = \"b\"\nurl = \"http://H:1/\"\n";
    let p = problem(text);
    assert_eq!(p.key, "backend[1].url");
    assert!(p.message.contains("backend[0]"), "{p}");
}

#[test]
fn credentials_come_in_pairs() {
    let p = problem(&with_backend(
        "",
        "name = \"a\"\nurl = \"http://h:1\"\nusername = \"u\"",
    ));
    assert_eq!(p.key, "backend[0].password");
    let p = problem(&with_backend(
        "",
        "name = \"a\"\nurl = \"http://h:1\"\npassword = \"p\"",
    ));
    assert_eq!(p.key, "backend[0].username");
    let p = problem(&with_backend(
        "",
        "name = \"a\"\nurl = \"http://h:1\"\nusername = \"\"\npassword = \"p\"",
    ));
    assert_eq!(p.key, "backend[0].username");
}

#[test]
fn binds_must_be_socket_addresses() {
    let b = "name = \"a\"\nurl = \"http://h:1\"";
    for (top, key) in [
        ("[http]\nbind = \"localhost:8086\"", "http.bind"),
        ("[http]\nbind = \"8086\"", "http.bind"),
        ("[admin]\nbind = \"127.0.0.1\"", "admin.bind"),
        ("[[udp]]\nbind = \":8089\"\ndatabase = \"x\"", "udp[0].bind"),
        (
            "[[tcp]]\nbind = \"0.0.0.0:99999\"\ndatabase = \"x\"",
            "tcp[0].bind",
        ),
    ] {
        let p = problem(&with_backend(top, b));
        assert_eq!(p.key, key, "{top}");
        assert_eq!(p.line, Some(3), "{top}");
        assert!(p.message.contains("IP:port"), "{p}");
    }
    let c = parse(&with_backend("[http]\nbind = \"[::1]:8086\"", b)).expect("ipv6");
    assert_eq!(
        c.http.bind,
        "[::1]:8086".parse::<SocketAddr>().expect("addr")
    );
}

#[test]
fn listeners_must_not_collide() {
    let b = "name = \"a\"\nurl = \"http://h:1\"";
    let p = problem(&with_backend(
        "[http]\nbind = \"127.0.0.1:8086\"\n[admin]\nbind = \"127.0.0.1:8086\"",
        b,
    ));
    assert_eq!(p.key, "admin.bind");
    assert!(p.message.contains("http.bind"), "{p}");

    let p = problem(&with_backend(
        "[[tcp]]\nbind = \"0.0.0.0:8086\"\ndatabase = \"x\"",
        b,
    ));
    assert_eq!(p.key, "tcp[0].bind");

    let p = problem(&with_backend(
        "[[udp]]\nbind = \"0.0.0.0:9\"\ndatabase = \"x\"\n[[udp]]\nbind = \"0.0.0.0:9\"\ndatabase = \"y\"",
        b,
    ));
    assert_eq!(p.key, "udp[1].bind");

    // UDP and TCP may share a port number; port 0 means "any free port" and never collides.
    parse(&with_backend(
        "[[udp]]\nbind = \"0.0.0.0:8086\"\ndatabase = \"x\"\n[[tcp]]\nbind = \"127.0.0.1:0\"\ndatabase = \"x\"\n[http]\nbind = \"127.0.0.1:0\"",
        b,
    ))
    .expect("valid");
}

#[test]
fn udp_precisions() {
    let b = "name = \"a\"\nurl = \"http://h:1\"";
    for (written, expected) in [
        ("ns", Precision::Nanoseconds),
        ("n", Precision::Nanoseconds),
        ("u", Precision::Microseconds),
        ("us", Precision::Microseconds),
        ("µs", Precision::Microseconds),
        ("ms", Precision::Milliseconds),
        ("s", Precision::Seconds),
        ("m", Precision::Minutes),
        ("h", Precision::Hours),
    ] {
        let c = parse(&with_backend(
            &format!("[[udp]]\nbind = \"0.0.0.0:1\"\ndatabase = \"x\"\nprecision = {written:?}"),
            b,
        ))
        .expect(written);
        assert_eq!(c.udp[0].precision, expected, "{written}");
    }
    let err = parse_error(&with_backend(
        "[[udp]]\nbind = \"0.0.0.0:1\"\ndatabase = \"x\"\nprecision = \"d\"",
        b,
    ));
    assert!(err.contains("line 5"), "{err}");
}

#[test]
fn listener_databases_must_not_be_empty() {
    let b = "name = \"a\"\nurl = \"http://h:1\"";
    let p = problem(&with_backend(
        "[[udp]]\nbind = \"0.0.0.0:1\"\ndatabase = \"\"",
        b,
    ));
    assert_eq!(p.key, "udp[0].database");
    assert_eq!(p.line, Some(4));
    let p = problem(&with_backend(
        "[[tcp]]\nbind = \"0.0.0.0:1\"\ndatabase = \"\"",
        b,
    ));
    assert_eq!(p.key, "tcp[0].database");
    let err = parse_error(&with_backend("[[tcp]]\nbind = \"0.0.0.0:1\"", b));
    assert!(err.contains("missing field `database`"), "{err}");
}

#[test]
fn replay_lanes_are_checked() {
    let b = "name = \"a\"\nurl = \"http://h:1\"";
    let c = parse(&with_backend("", b)).expect("valid");
    assert_eq!(c.queue.replay_lanes, DEFAULT_REPLAY_LANES);
    let c = parse(&with_backend("[queue]\nreplay_lanes = 1", b)).expect("valid");
    assert_eq!(c.queue.replay_lanes, 1);
    for bad in ["0", "17", "-1"] {
        let p = problem(&with_backend(&format!("[queue]\nreplay_lanes = {bad}"), b));
        assert_eq!(p.key, "queue.replay_lanes", "{bad}");
        assert_eq!(p.line, Some(3), "{bad}");
    }
}

#[test]
fn http_limits_are_checked() {
    let b = "name = \"a\"\nurl = \"http://h:1\"";
    let p = problem(&with_backend("[http]\nmax_body_bytes = 0", b));
    assert_eq!(p.key, "http.max_body_bytes");
    let p = problem(&with_backend("[http]\nmax_body_bytes = \"5GiB\"", b));
    assert_eq!(p.key, "http.max_body_bytes");
    let p = problem(&with_backend(
        "[http]\nmax_body_bytes = \"10MB\"\nmax_inflight_bytes = \"5MB\"",
        b,
    ));
    assert_eq!(p.key, "http.max_inflight_bytes");
    assert_eq!(p.line, Some(4));
    let p = problem(&with_backend("[http]\nmax_connections = 0", b));
    assert_eq!(p.key, "http.max_connections");
    // More than a connection limit can count is refused here, not a panic at start.
    let p = problem(&with_backend(
        "[http]\nmax_connections = 9223372036854775807",
        b,
    ));
    assert_eq!(p.key, "http.max_connections");
    let p = problem(&with_backend("[http]\nbody_read_timeout = \"0s\"", b));
    assert_eq!(p.key, "http.body_read_timeout");
    let p = problem(&with_backend("[http]\nheader_read_timeout = \"0s\"", b));
    assert_eq!(p.key, "http.header_read_timeout");

    // A large body limit raises the default in-flight cap with it.
    let c = parse(&with_backend("[http]\nmax_body_bytes = \"1GiB\"", b)).expect("valid");
    assert_eq!(c.http.max_inflight_bytes, 1 << 30);
    let c = parse(&with_backend("[http]\ndrain_timeout = \"0s\"", b)).expect("valid");
    assert_eq!(c.http.drain_timeout, Duration::ZERO);
}

#[test]
fn write_settings_are_checked() {
    let b = "name = \"a\"\nurl = \"http://h:1\"";
    for level in ["any", "one", "quorum", "all"] {
        let c = parse(&with_backend(
            &format!("[write]\nconsistency = {level:?}"),
            b,
        ))
        .expect(level);
        assert_eq!(c.write.consistency.as_str(), level);
    }
    let p = problem(&with_backend("[write]\nbackend_timeout = \"0ms\"", b));
    assert_eq!(p.key, "write.backend_timeout");
    let p = problem(&with_backend("[write]\nconnect_timeout = \"0s\"", b));
    assert_eq!(p.key, "write.connect_timeout");
}

#[test]
fn queue_settings_are_checked() {
    let b = "name = \"a\"\nurl = \"http://h:1\"";
    let p = problem(&with_backend("[queue]\nmax_bytes = 0", b));
    assert_eq!(p.key, "queue.max_bytes");
    let p = problem(&with_backend("[queue]\nmax_age = \"0s\"", b));
    assert_eq!(p.key, "queue.max_age");
    let p = problem(&with_backend("[queue]\nsegment_bytes = 100", b));
    assert_eq!(p.key, "queue.segment_bytes");
    let p = problem(&with_backend(
        "[queue]\nmax_bytes = \"1MiB\"\nsegment_bytes = \"2MiB\"",
        b,
    ));
    assert_eq!(p.key, "queue.segment_bytes");
    let p = problem(&with_backend(
        "[queue]\nfsync = \"always\"\nfsync_interval = \"1s\"",
        b,
    ));
    assert_eq!(p.key, "queue.fsync_interval");
    let p = problem(&with_backend(
        "[queue]\nfsync = \"interval\"\nfsync_interval = \"0s\"",
        b,
    ));
    assert_eq!(p.key, "queue.fsync_interval");

    let c = parse(&with_backend("[queue]\nfsync = \"never\"", b)).expect("valid");
    assert_eq!(c.queue.fsync, FsyncPolicy::Never);
    let c = parse(&with_backend("[queue]\nfsync = \"interval\"", b)).expect("valid");
    assert_eq!(c.queue.fsync, FsyncPolicy::Interval(DEFAULT_FSYNC_INTERVAL));
    // A small queue gets a segment size that fits in it.
    let c = parse(&with_backend("[queue]\nmax_bytes = \"1MiB\"", b)).expect("valid");
    assert_eq!(c.queue.segment_bytes, 1 << 20);
}

#[test]
fn all_problems_are_reported_in_line_order() {
    let text = "data_dir = \"/d\"\n[http]\nbind = \"nope\"\n[[backend]]\nname = \"a/b\"\nurl = \"http://h\"\n";
    let p = problems(text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["http.bind", "backend[0].name", "backend[0].url"]);
    let shown = parse(text).expect_err("invalid").to_string();
    assert!(
        shown.starts_with("invalid config test.toml:\n  line 3: http.bind: "),
        "{shown}"
    );
    assert!(shown.contains("\n  line 5: backend[0].name: "), "{shown}");
}

#[test]
fn the_issue_example_is_valid() {
    let text = r#"
data_dir = "/var/lib/influx-ha"     # hinted-handoff queues live here, one folder per backend

[http]
bind = "0.0.0.0:8086"
# max_body_bytes = 25000000

[admin]                              # status page, /status, /metrics, admin API; optional:
bind = "127.0.0.1:8093"              # without it they are served on the [http] listener

[[udp]]                              # any number, optional
bind = "0.0.0.0:8089"
database = "telegraf"
# precision = "ns"

[[tcp]]                              # newline-delimited line protocol, any number, optional
bind = "0.0.0.0:8094"
database = "telegraf"

[write]
consistency = "one"                  # any | one | quorum | all; a request's ?consistency= overrides

[queue]
max_bytes = "10GiB"
max_age = "7d"
fsync = "always"

[[backend]]
name = "influx-a"
url = "http://10.0.0.1:8086"
# username / password: the service credentials influx-ha uses for this backend

[[backend]]
name = "influx-b"
url = "http://10.0.0.2:8086"
"#;
    let c = parse(text).expect("valid");
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.udp[0].database, "telegraf");
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("influx-ha.toml");
    std::fs::write(&path, MINIMAL).expect("write");
    Config::load(&path).expect("valid");

    let missing = dir.path().join("missing.toml");
    let err = Config::load(&missing).expect_err("missing").to_string();
    assert!(err.contains("missing.toml"), "{err}");

    std::fs::write(&path, "data_dir = \"/d\"\n").expect("write");
    let err = Config::load(&path).expect_err("invalid").to_string();
    assert!(err.contains("influx-ha.toml"), "{err}");
}

#[test]
fn damaged_configs_never_panic() {
    // Every prefix of a full config, and every line replaced by something odd.
    for end in (0..=FULL.len()).filter(|i| FULL.is_char_boundary(*i)) {
        let _ = parse(&FULL[..end]);
    }
    let lines: Vec<&str> = FULL.lines().collect();
    for i in 0..lines.len() {
        for odd in [
            "é = \"ü\"",
            "[[backend]]",
            "password = \"µ",
            "= 1",
            "url = \"http://[::1\"",
            "\u{feff}",
        ] {
            let mut damaged = lines.clone();
            damaged[i] = odd;
            let _ = parse(&damaged.join("\n"));
        }
    }
}

#[test]
fn graphite_and_opentsdb_listeners() {
    let backend = "name = \"a\"\nurl = \"http://127.0.0.1:8086\"";
    let c = parse(&with_backend(
        "[[graphite]]\nbind = \"127.0.0.1:2003\"\n\
         [[graphite]]\nbind = \"127.0.0.1:2003\"\nprotocol = \"udp\"\ndatabase = \"g\"\n\
         separator = \"_\"\ntemplates = [\"a.* .host.measurement\"]\ntags = [\"dc=eu\"]\n\
         [[opentsdb]]\nbind = \"127.0.0.1:4242\"\n",
        backend,
    ))
    .expect("valid");
    assert_eq!(c.graphite.len(), 2);
    assert_eq!(
        (c.graphite[0].protocol, c.graphite[0].database.as_str()),
        (GraphiteProtocol::Tcp, DEFAULT_GRAPHITE_DATABASE)
    );
    assert_eq!(
        (c.graphite[1].protocol, c.graphite[1].database.as_str()),
        (GraphiteProtocol::Udp, "g")
    );
    assert_eq!(c.opentsdb[0].database, DEFAULT_OPENTSDB_DATABASE);
    // Listeners written alike are equal; another template, separator or tag tells them apart
    // (a reload compares them).
    assert_ne!(c.graphite[0], c.graphite[1]);
    let same = |extra: &str| {
        parse(&with_backend(
            &format!("[[graphite]]\nbind = \"127.0.0.1:2003\"\n{extra}"),
            backend,
        ))
        .expect("valid")
        .graphite
        .remove(0)
    };
    assert_eq!(same("separator = \"_\"\n"), same("separator = \"_\"\n"));
    assert_ne!(same(""), same("separator = \"_\"\n"));
    assert_ne!(same(""), same("templates = [\"a.* .host.measurement\"]\n"));
    assert_ne!(same(""), same("tags = [\"dc=eu\"]\n"));
    // A key given twice takes its last value, as 1.6's map of them does.
    let twice = same("tags = [\"dc=a\", \"dc=b\", \"zone=z\"]\n");
    let mut line = Vec::new();
    twice
        .parser
        .parse("x.y 1 1700000000", 0, &mut line)
        .expect("a point");
    assert_eq!(
        String::from_utf8_lossy(&line),
        "x.y,dc=b,zone=z value=1.0 1700000000000000000\n"
    );

    // A bad template names its line and says what is wrong.
    let p = problem(&with_backend(
        "[[graphite]]\nbind = \"127.0.0.1:2003\"\ntemplates = [\n  \"measurement*\",\n  \"host.cpu\",\n]\n",
        backend,
    ));
    assert_eq!((p.line, p.key.as_str()), (Some(6), "graphite[0].templates"));
    assert!(p.message.contains("no measurement"), "{p}");
    let p = problem(&with_backend(
        "[[graphite]]\nbind = \"127.0.0.1:2003\"\ntags = [\"novalue\"]\n",
        backend,
    ));
    assert_eq!(p.key, "graphite[0].tags");
    // TCP ports are shared by every TCP listener kind.
    let p = problem(&with_backend(
        "[[graphite]]\nbind = \"127.0.0.1:4242\"\n[[opentsdb]]\nbind = \"127.0.0.1:4242\"\n",
        backend,
    ));
    assert_eq!(p.key, "opentsdb[0].bind");
    assert!(p.message.contains("graphite[0].bind"), "{p}");
}

#[test]
fn read_path_settings_and_peers() {
    let c = parse(MINIMAL).expect("valid");
    assert!(!c.node_name.is_empty(), "defaults to the host name");
    assert_eq!(c.health.interval, DEFAULT_HEALTH_INTERVAL);
    assert_eq!((c.health.rise, c.health.fall), (2, 2));
    assert!(!c.query.stale_reads);
    assert!(c.peers.is_empty());

    let text = with_backend(
        "node_name = \"relay-1\"\n[health]\ninterval = \"250ms\"\ntimeout = \"100ms\"\nrise = 3\nfall = 1\n[query]\nstale_reads = true\ntimeout = \"5s\"\n[[peer]]\nname = \"relay-2\"\nurl = \"http://127.0.0.1:8093\"\n",
        "name = \"a\"\nurl = \"http://127.0.0.1:8086\"",
    );
    let c = parse(&text).expect("valid");
    assert_eq!(c.node_name, "relay-1");
    assert_eq!(c.health.interval, Duration::from_millis(250));
    assert_eq!(c.health.timeout, Duration::from_millis(100));
    assert_eq!((c.health.rise, c.health.fall), (3, 1));
    assert!(c.query.stale_reads);
    assert_eq!(c.query.timeout, Duration::from_secs(5));
    assert_eq!(c.peers.len(), 1);
    assert_eq!(c.peers[0].name, "relay-2");
    assert_eq!(c.peers[0].url.to_string(), "http://127.0.0.1:8093");
    assert_eq!(c.peers[0].credentials, None);
    let p = problem(&with_backend(
        "[[peer]]\nname = \"x\"\nurl = \"http://127.0.0.1:1\"\nusername = \"u\"\n",
        "name = \"a\"\nurl = \"http://127.0.0.1:8086\"",
    ));
    assert_eq!(p.key, "peer[0].password");

    let p = problem(&with_backend(
        "[health]\nrise = 0\n",
        "name = \"a\"\nurl = \"http://127.0.0.1:8086\"",
    ));
    assert_eq!((p.line, p.key.as_str()), (Some(3), "health.rise"));
    let p = problem(&with_backend(
        "node_name = \"me\"\n[[peer]]\nname = \"me\"\nurl = \"http://127.0.0.1:1\"\n",
        "name = \"a\"\nurl = \"http://127.0.0.1:8086\"",
    ));
    assert_eq!(p.key, "peer[0].name");
    assert!(p.message.contains("own node_name"), "{p}");
    let p = problem(&with_backend(
        "[[peer]]\nname = \"x\"\nurl = \"127.0.0.1:1\"\n",
        "name = \"a\"\nurl = \"http://127.0.0.1:8086\"",
    ));
    assert_eq!(p.key, "peer[0].url");
    assert!(
        parse_error(&with_backend(
            "[query]\nstale = true\n",
            "name = \"a\"\nurl = \"http://127.0.0.1:8086\""
        ))
        .contains("unknown field")
    );
}

#[test]
fn anti_entropy_is_off_without_its_table_and_checked_with_it() {
    let b = "name = \"a\"\nurl = \"http://h:1\"";
    assert_eq!(
        parse(&with_backend("", b)).expect("valid").anti_entropy,
        None
    );
    let on = parse(&with_backend("[anti_entropy]", b)).expect("valid");
    assert_eq!(
        on.anti_entropy,
        Some(AntiEntropyConfig {
            check_interval: Duration::from_secs(3600),
            window: Duration::from_secs(86_400),
            settle: Duration::from_secs(60),
            auto_repair: true,
            rate: 20,
        })
    );
    let set = parse(&with_backend(
        "[anti_entropy]\ncheck_interval = \"5m\"\nwindow = \"2h\"\nsettle = \"0s\"\nauto_repair = false\nrate = 0",
        b,
    ))
    .expect("valid");
    assert_eq!(
        set.anti_entropy,
        Some(AntiEntropyConfig {
            check_interval: Duration::from_secs(300),
            window: Duration::from_secs(7200),
            settle: Duration::ZERO,
            auto_repair: false,
            rate: 0,
        })
    );
    for (body, key, line) in [
        ("check_interval = \"0s\"", "anti_entropy.check_interval", 3),
        ("window = \"0s\"", "anti_entropy.window", 3),
        ("window = \"1h\"\nsettle = \"1h\"", "anti_entropy.settle", 4),
        // The default settle (1m) is not shorter than this window.
        ("window = \"30s\"", "anti_entropy.window", 3),
        ("rate = -1", "anti_entropy.rate", 3),
    ] {
        let p = problem(&with_backend(&format!("[anti_entropy]\n{body}"), b));
        assert_eq!((p.key.as_str(), p.line), (key, Some(line)), "{body}: {p:?}");
    }
    let e = parse_error(&with_backend("[anti_entropy]\nenabled = true", b));
    assert!(e.contains("unknown field `enabled`"), "{e}");
}

#[test]
fn the_reference_deployment_configs_are_valid() {
    for (name, text) in [
        (
            "node-a",
            include_str!("../../../../examples/two-node/node-a.toml"),
        ),
        (
            "node-b",
            include_str!("../../../../examples/two-node/node-b.toml"),
        ),
    ] {
        let c = Config::from_toml(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.node_name, name);
        assert_eq!(c.backends.len(), 2, "{name}");
        // The check runs on one node only.
        assert_eq!(c.anti_entropy.is_some(), name == "node-a", "{name}");
    }
}
