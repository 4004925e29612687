//! Relay-level authentication, TLS and protection, against real InfluxDB.
//!
//! The 401 answers are compared with a real influxd 1.6.7 started with `auth-enabled = true`:
//! influx-ha with `[auth]` on must answer every credential case as influxd does.

use std::path::Path;

use testkit::{Influxd, Options, form};

use crate::relay::Relay;
use crate::support::{CONVERGE, count, serial, wait_until};

/// The client's password: must never appear in logs or data.
const CLIENT_PASSWORD: &str = "client-Pw-7f3a9";
/// A client token, made once per test binary by `influx-ha new-token`, and its hash.
static TOKEN: std::sync::LazyLock<(String, String)> = std::sync::LazyLock::new(new_token);

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `influx-ha hash-password` with `password` on standard input (the way scripts use it).
fn hash_password(password: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .args(["hash-password", "--iterations", "10000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("hash-password output");
    assert!(out.status.success(), "hash-password failed");
    let hash = String::from_utf8(out.stdout).expect("utf-8");
    assert!(!hash.contains(password));
    hash.trim().to_owned()
}

/// A token and its `token_hash`, from `influx-ha new-token`.
fn new_token() -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_influx-ha"))
        .arg("new-token")
        .output()
        .expect("run new-token");
    assert!(out.status.success(), "new-token failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.trim()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    (value("token "), value("token_hash "))
}

/// The `[auth]` section: user `admin` (the same name and password as the reference influxd's
/// admin) and a token named `grafana`.
fn auth_section(admin_listener: Option<bool>) -> String {
    let mut s = format!(
        "[auth]\nenabled = true\n{}\n[[auth.user]]\nname = \"admin\"\npassword_hash = \"{}\"\n\n[[auth.token]]\nname = \"grafana\"\ntoken_hash = \"{}\"\n\n",
        admin_listener.map_or(String::new(), |b| format!("admin_listener = {b}\n")),
        hash_password(CLIENT_PASSWORD),
        TOKEN.1,
    );
    s.push('\n');
    s
}

/// Backends with auth on, reached with the relay's service credentials.
fn service_backends(backends: &[&Influxd]) -> String {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "[[backend]]\nname = \"influx-{i}\"\nurl = \"{}\"\nusername = \"svc\"\npassword = \"svc-pw\"\n\n",
                b.url()
            )
        })
        .collect()
}

fn admin(user: &str, password: &str) -> Options {
    Options {
        admin: Some((user.to_owned(), password.to_owned())),
        ..Options::default()
    }
}

#[test]
fn auth_answers_match_influxd() {
    let _serial = serial();
    let bare = Influxd::start_with_options(admin("admin", CLIENT_PASSWORD));
    let (a, b) = (
        Influxd::start_with_options(admin("svc", "svc-pw")),
        Influxd::start_with_options(admin("svc", "svc-pw")),
    );
    for i in [&bare, &a, &b] {
        i.create_database("db");
    }
    let mut relay = Relay::start_config(&auth_section(None), &service_backends(&[&a, &b]), "info");
    let mut direct = bare.client();

    let good_basic = basic("admin", CLIENT_PASSWORD);
    let lower_basic = good_basic.replacen("Basic", "basic", 1);
    let wrong_basic = basic("admin", "wrong");
    let empty_user = basic("", CLIENT_PASSWORD);
    let good_up = form(&[("u", "admin"), ("p", CLIENT_PASSWORD)]);
    let line = |n: u32| format!("auth v={n} 170000000000000000{n}").into_bytes();
    // (method, target, Authorization header, body)
    let cases: Vec<(&str, String, Option<&str>, Vec<u8>)> = vec![
        ("POST", "/write?db=db".into(), None, line(1)),
        ("POST", "/write?db=db&u=admin&p=wrong".into(), None, line(1)),
        ("POST", "/write?db=db&u=nobody&p=x".into(), None, line(1)),
        ("POST", "/write?db=db&u=admin".into(), None, line(1)),
        ("POST", "/write?db=db".into(), Some(&wrong_basic), line(1)),
        ("POST", "/write?db=db".into(), Some(&empty_user), line(1)),
        ("POST", "/write?db=db".into(), Some("Basic !!!"), line(1)),
        ("POST", "/write?db=db".into(), Some("Bearer x.y.z"), line(1)),
        ("POST", "/write?db=db".into(), Some("Digest abc"), line(1)),
        // Good header, bad parameters: the parameters decide.
        (
            "POST",
            "/write?db=db&u=admin&p=bad".into(),
            Some(&good_basic),
            line(1),
        ),
        ("POST", format!("/write?db=db&{good_up}"), None, line(2)),
        ("POST", "/write?db=db".into(), Some(&good_basic), line(3)),
        ("POST", "/write?db=db".into(), Some(&lower_basic), line(4)),
        // u alone, then a good header: accepted.
        (
            "POST",
            "/write?db=db&u=admin".into(),
            Some(&good_basic),
            line(5),
        ),
        // A database that does not exist: 404 after authentication.
        (
            "POST",
            "/write?db=nosuch".into(),
            Some(&good_basic),
            line(6),
        ),
        ("GET", "/query?q=SHOW+DATABASES".into(), None, vec![]),
        (
            "GET",
            "/query?q=SHOW+DATABASES&u=admin&p=no".into(),
            None,
            vec![],
        ),
        // Credentials in a POST form are not read (1.6 reads only the URL).
        (
            "POST",
            "/query".into(),
            None,
            format!("q=SHOW+DATABASES&{good_up}").into_bytes(),
        ),
        ("GET", "/ping".into(), None, vec![]),
        (
            "GET",
            "/ping?u=admin&p=wrong".into(),
            Some("Bearer x"),
            vec![],
        ),
        ("HEAD", "/ping".into(), None, vec![]),
        ("GET", "/write?db=db".into(), None, vec![]),
        ("OPTIONS", "/write?db=db".into(), None, vec![]),
        ("GET", "/nosuch".into(), None, vec![]),
    ];
    for (method, target, authorization, body) in &cases {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(v) = authorization {
            headers.push(("Authorization", v));
        }
        if method == &"POST" && target == "/query" {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let want = direct
            .request(method, target, &headers, body)
            .expect("influxd answers");
        let got = relay.request(method, target, &headers, body);
        let what = format!("{method} {target} {authorization:?}");
        assert_eq!(got.status, want.status, "{what}: {}", got.text());
        assert_eq!(got.body, want.body, "{what}");
        for h in ["www-authenticate", "x-influxdb-error", "content-type"] {
            assert_eq!(got.header(h), want.header(h), "{what}: header {h}");
        }
        if want.status == 401 {
            assert_eq!(
                got.header("www-authenticate"),
                Some("Basic realm=\"InfluxDB\"")
            );
        }
    }
    // The accepted writes reached both backends (through the service user).
    for (name, i) in [("a", &a), ("b", &b)] {
        wait_until(
            &format!("4 points on {name}"),
            crate::support::CONVERGE,
            || count(i, "db", "v", "auth") == 4,
        );
    }
    assert_eq!(count(&bare, "db", "v", "auth"), 4);

    // 1.8's `Token user:password` and influx-ha's tokens (influxd 1.6 has neither).
    let t = |relay: &mut Relay, auth: &str, n: u32| {
        relay.request(
            "POST",
            "/api/v2/write?bucket=db",
            &[("Authorization", auth)],
            &line(n),
        )
    };
    let token = format!("Token {}", TOKEN.0);
    assert_eq!(t(&mut relay, &token, 7).status, 204);
    assert_eq!(
        t(&mut relay, &format!("Token admin:{CLIENT_PASSWORD}"), 8).status,
        204
    );
    let refused = t(&mut relay, "Token tok-wrong", 9);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.text(), "{\"error\":\"authorization failed\"}\n");
    let refused = relay.request("POST", "/api/v2/write?bucket=db", &[], &line(9));
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.text(),
        "{\"error\":\"unable to parse authentication credentials\"}\n"
    );

    // The admin surface on the main listener: refused without credentials.
    for path in ["/status", "/metrics", "/", "/admin/queues"] {
        let r = relay.request("GET", path, &[], b"");
        assert_eq!(r.status, 401, "GET {path}");
        let r = relay.request("GET", path, &[("Authorization", &good_basic)], b"");
        assert_ne!(r.status, 401, "GET {path} with credentials");
    }
    let r = relay.request("GET", "/health", &[], b"");
    assert_eq!(
        r.status, 200,
        "/health is for load balancers: no credentials"
    );
    let r = relay.request(
        "GET",
        "/query?q=SHOW+DATABASES",
        &[("Authorization", &token)],
        b"",
    );
    assert_ne!(r.status, 401, "a token opens /query");
}

#[test]
fn admin_listener_asks_for_credentials_unless_told_not_to() {
    let _serial = serial();
    let a = Influxd::start();
    for (setting, protected) in [(None, true), (Some(false), false)] {
        let admin_port = testkit::free_port().expect("port");
        let extra = format!(
            "[admin]\nbind = \"127.0.0.1:{admin_port}\"\n\n{}",
            auth_section(setting)
        );
        let tables = format!("[[backend]]\nname = \"a\"\nurl = \"{}\"\n\n", a.url());
        let _relay = Relay::start_config(&extra, &tables, "info");
        let mut admin = testkit::HttpClient::new(([127, 0, 0, 1], admin_port).into());
        let status = |admin: &mut testkit::HttpClient, path: &str, auth: Option<&str>| {
            let headers: Vec<(&str, &str)> =
                auth.map(|v| vec![("Authorization", v)]).unwrap_or_default();
            admin
                .request("GET", path, &headers, b"")
                .expect("admin listener answers")
                .status
        };
        assert_eq!(status(&mut admin, "/ping", None), 204);
        assert_eq!(status(&mut admin, "/health", None), 200);
        let good = basic("admin", CLIENT_PASSWORD);
        for path in ["/status", "/metrics", "/"] {
            let anonymous = status(&mut admin, path, None);
            assert_eq!(
                anonymous == 401,
                protected,
                "{path} with admin_listener = {setting:?}"
            );
            assert_ne!(status(&mut admin, path, Some(&good)), 401, "{path}");
        }
    }
}

/// Every file under `dir`, recursively, as bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p.display().to_string(), bytes));
            }
        }
    }
    out
}

#[test]
fn client_credentials_never_reach_logs_queues_or_backends() {
    let _serial = serial();
    let a = Influxd::start();
    let mut b = Influxd::start();
    for i in [&a, &b] {
        i.create_database("db");
    }
    let tables = format!(
        "[[backend]]\nname = \"a\"\nurl = \"{}\"\n\n[[backend]]\nname = \"b\"\nurl = \"{}\"\n\n",
        a.url(),
        b.url()
    );
    // Debug logging: the most the relay ever writes.
    let mut relay = Relay::start_config(&auth_section(None), &tables, "debug");
    b.kill(); // its writes are queued on disk
    let good_basic = basic("admin", CLIENT_PASSWORD);
    let token = format!("Token {}", TOKEN.0);
    let up = form(&[("u", "admin"), ("p", CLIENT_PASSWORD)]);
    for n in 0..5u64 {
        let body = format!("sec v={n} {}", 1_700_000_000_000_000_000u64 + n);
        let r = relay.request("POST", &format!("/write?db=db&{up}"), &[], body.as_bytes());
        assert!(r.status == 204 || r.status == 500, "{}", r.text());
        let r = relay.request(
            "POST",
            "/write?db=db",
            &[("Authorization", &good_basic)],
            body.as_bytes(),
        );
        assert!(r.status == 204 || r.status == 500, "{}", r.text());
        let r = relay.request(
            "POST",
            "/api/v2/write?bucket=db",
            &[("Authorization", &token)],
            body.as_bytes(),
        );
        assert!(r.status == 204 || r.status == 500, "{}", r.text());
        // And refused attempts.
        relay.request(
            "POST",
            "/write?db=db&u=admin&p=wrong-Pw-x1",
            &[],
            body.as_bytes(),
        );
        relay.request("GET", &format!("/query?q=SHOW+DATABASES&{up}"), &[], b"");
    }
    wait_until("the points on a", crate::support::CONVERGE, || {
        count(&a, "db", "v", "sec") == 5
    });
    let queued: u64 = files(&relay.dir().join("data").join("b"))
        .iter()
        .map(|(_, bytes)| bytes.len() as u64)
        .sum();
    assert!(queued > 0, "backend b's writes are queued on disk");
    b.restart();
    wait_until("the queue replayed to b", crate::support::CONVERGE, || {
        count(&b, "db", "v", "sec") == 5
    });
    let secrets = [
        CLIENT_PASSWORD,
        TOKEN.0.as_str(),
        "wrong-Pw-x1",
        good_basic.trim_start_matches("Basic "),
    ];
    let mut everything = files(relay.dir());
    for i in [&a, &b] {
        // What the backends logged and stored.
        everything.extend(files(i.dir()));
    }
    for path in ["/", "/status", "/metrics"] {
        let r = relay.request("GET", path, &[("Authorization", &good_basic)], b"");
        assert_eq!(r.status, 200, "GET {path}");
        everything.push((format!("GET {path}"), r.body));
    }
    everything.push(("relay log".to_owned(), relay.log().into_bytes()));
    assert!(
        relay.log().contains("DEBUG"),
        "the relay logged at debug level"
    );
    for (path, bytes) in &everything {
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} found in {path}"
            );
        }
    }
}

// === TLS ===

/// A test CA and a certificate for `localhost` and 127.0.0.1 it signed, as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "influx-ha e2e CA");
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write PEM");
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", leaf.pem()),
        key: write("key.pem", leaf_key.serialize_pem()),
        _dir: dir,
    }
}

/// One HTTPS request trusting only `ca`; returns the status and body.
fn https(
    port: u16,
    ca: &Path,
    method: &str,
    target: &str,
    body: &[u8],
) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt, Full};
    let config = influx_ha::tls::client_config(Some(ca)).map_err(|e| e.to_string())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<bytes::Bytes>>(connector);
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost:{port}{target}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(bytes::Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
}

/// The Python `influxdb` client (Debian's python3-influxdb) over TLS, as user `admin`: pings,
/// writes `lines` to `db`, prints the server version. `ca` None: the system trust store.
fn python_client(port: u16, ca: Option<&Path>, lines: &[String]) -> (bool, String) {
    let script = r#"
import sys, influxdb
port, ca, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = influxdb.InfluxDBClient(host='localhost', port=port, ssl=True, username=user,
                            password=password, verify_ssl=(ca if ca else True),
                            database='db', timeout=30)
try:
    version = c.ping()
    c.write(sys.argv[5:], params={'db': 'db', 'precision': 'n'}, protocol='line')
except Exception as e:
    print('refused:', type(e).__name__, e)
    sys.exit(3)
print('version', version)
"#;
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(ca.map_or(String::new(), |p| p.display().to_string()))
        .args(["admin", CLIENT_PASSWORD])
        .args(lines);
    let out = cmd.output().expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The Python `influxdb` client over TLS trusting `ca`, as user `admin`: runs `q` on `db` and
/// prints the first point of the answer.
fn python_query(port: u16, ca: &Path, q: &str) -> (bool, String) {
    let script = r#"
import sys, influxdb
port, ca, user, password, q = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
c = influxdb.InfluxDBClient(host='localhost', port=port, ssl=True, username=user,
                            password=password, verify_ssl=ca, database='db', timeout=30)
print('point', list(c.query(q, epoch='ns').get_points())[0])
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(ca)
        .args(["admin", CLIENT_PASSWORD, q])
        .output()
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_client_trusting_the_ca_writes_and_queries_over_tls() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&a, &b] {
        i.create_database("db");
    }
    let pki = pki();
    let extra = format!(
        "tls_cert = {:?}\ntls_key = {:?}\n\n{}",
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
        auth_section(None)
    );
    let tables = format!(
        "[[backend]]\nname = \"a\"\nurl = \"{}\"\n\n[[backend]]\nname = \"b\"\nurl = \"{}\"\n\n",
        a.url(),
        b.url()
    );
    let relay = Relay::start_config(&extra, &tables, "info");
    let port = relay.port();

    // The real Python client, trusting the test CA, with credentials in the URL.
    let lines: Vec<String> = (0..10)
        .map(|i| format!("tls,h=h{i} v={i}i {}", 1_700_000_000_000_000_000u64 + i))
        .collect();
    let (ok, out) = python_client(port, Some(&pki.ca), &lines);
    assert!(ok, "{out}\n{}", relay.log());
    assert!(out.contains("version 1.6.7~rc0"), "{out}");
    for (name, i) in [("a", &a), ("b", &b)] {
        wait_until(
            &format!("10 points on {name}"),
            crate::support::CONVERGE,
            || count(i, "db", "v", "tls") == 10,
        );
    }
    // And reads them back through influx-ha, over TLS.
    let (ok, out) = python_query(port, &pki.ca, "SELECT count(v) FROM tls");
    assert!(ok, "{out}\n{}", relay.log());
    assert!(out.contains("'count': 10"), "{out}");
    // The same client trusting only the system's CAs refuses the certificate.
    let (ok, out) = python_client(port, None, &lines);
    assert!(!ok && out.contains("SSL"), "{out}");

    // Plain HTTP on the TLS port gets nothing useful; HTTPS with the CA does.
    let mut plain = testkit::HttpClient::new(([127, 0, 0, 1], port).into());
    assert!(
        plain
            .request("GET", "/ping", &[], b"")
            .map_or(true, |r| r.status != 204),
        "plain HTTP must not be served on a TLS listener"
    );
    let (status, _) = https(port, &pki.ca, "GET", "/ping", b"").expect("https /ping");
    assert_eq!(status, 204);
    let (status, body) = https(port, &pki.ca, "POST", "/write?db=db", b"x v=1").expect("https");
    assert_eq!(status, 401, "{body}");
}

#[test]
fn a_backend_behind_tls_receives_every_write() {
    let _serial = serial();
    let pki = pki();
    let secure = Influxd::start_with_options(Options {
        https: Some((pki.cert.clone(), pki.key.clone())),
        ..Options::default()
    });
    let plain = Influxd::start();
    plain.create_database("db");
    let (status, body) = https(
        secure.port(),
        &pki.ca,
        "POST",
        "/query",
        b"q=CREATE+DATABASE+db",
    )
    .expect("create the database over https");
    assert_eq!(status, 200, "{body}");
    let tables = format!(
        "[[backend]]\nname = \"secure\"\nurl = \"https://127.0.0.1:{}\"\nca_file = {:?}\n\n[[backend]]\nname = \"plain\"\nurl = \"{}\"\n\n",
        secure.port(),
        pki.ca.display().to_string(),
        plain.url()
    );
    let mut relay = Relay::start_config("", &tables, "info");
    for n in 0..5u64 {
        // consistency=all: 204 only once the TLS backend acknowledged.
        let body = format!("sec,h=x v={n}i {}", 1_700_000_000_000_000_000u64 + n);
        let r = relay.write("db=db&consistency=all", body.as_bytes());
        assert_eq!(r.status, 204, "{}\n{}", r.text(), relay.log());
    }
    let (status, body) = https(
        secure.port(),
        &pki.ca,
        "POST",
        "/query",
        b"db=db&epoch=ns&q=SELECT+count(v)+FROM+sec",
    )
    .expect("query over https");
    assert_eq!(status, 200);
    assert!(body.contains("\"values\":[[0,5]]"), "{body}");
    assert_eq!(count(&plain, "db", "v", "sec"), 5);
}

/// A backend whose certificate is not signed by the configured CA gets nothing (the write is
/// queued for it), and the relay says why.
#[test]
fn a_backend_with_an_untrusted_certificate_is_not_written_to() {
    let _serial = serial();
    let (pki, other) = (pki(), pki());
    let secure = Influxd::start_with_options(Options {
        https: Some((pki.cert.clone(), pki.key.clone())),
        ..Options::default()
    });
    let tables = format!(
        "[[backend]]\nname = \"secure\"\nurl = \"https://127.0.0.1:{}\"\nca_file = {:?}\n\n",
        secure.port(),
        other.ca.display().to_string(),
    );
    let mut relay = Relay::start_config("", &tables, "info");
    let r = relay.write("db=db", b"m v=1 1700000000000000000");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(
        r.text(),
        "{\"error\":\"write failed: hinted handoff queue not empty\"}\n"
    );
    wait_until(
        "the relay logs the certificate error",
        crate::support::CONVERGE,
        || {
            let log = relay.log();
            log.contains("UnknownIssuer") || log.contains("invalid peer certificate")
        },
    );
}

// === Protection ===

#[test]
fn rate_limits_answer_503_with_retry_after_never_4xx() {
    let _serial = serial();
    let a = Influxd::start();
    a.create_database("db");
    let tables = format!("[[backend]]\nname = \"a\"\nurl = \"{}\"\n\n", a.url());
    // One token per 100 s after a burst of 3: the 4th request is limited whatever the
    // machine's speed.
    let mut relay = Relay::start_config(
        "rate_limit = { requests_per_second = 0.01, burst = 3 }\n",
        &tables,
        "info",
    );
    let mut statuses = Vec::new();
    for n in 0..6u64 {
        let body = format!("rl v={n}i {}", 1_700_000_000_000_000_000u64 + n);
        let r = relay.write("db=db", body.as_bytes());
        if r.status == 503 {
            let retry: u64 = r
                .header("retry-after")
                .expect("Retry-After on 503")
                .parse()
                .expect("seconds");
            assert!((1..=100).contains(&retry), "Retry-After {retry}");
            assert!(r.text().contains("rate limit exceeded"), "{}", r.text());
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [204, 204, 204, 503, 503, 503]);
    // What was accepted is stored; /ping and /health are never limited.
    assert_eq!(count(&a, "db", "v", "rl"), 3);
    assert_eq!(relay.get("/ping").expect("ping").status, 204);
    assert_eq!(relay.get("/health").expect("health").status, 200);
}

#[test]
fn rate_limits_per_user_keep_users_apart() {
    let _serial = serial();
    let a = Influxd::start();
    a.create_database("db");
    let tables = format!("[[backend]]\nname = \"a\"\nurl = \"{}\"\n\n", a.url());
    let extra = format!(
        "rate_limit = {{ requests_per_second = 0.01, burst = 2, per = \"user\" }}\n\n{}",
        auth_section(None)
    );
    let mut relay = Relay::start_config(&extra, &tables, "info");
    let user = basic("admin", CLIENT_PASSWORD);
    let token = format!("Token {}", TOKEN.0);
    let write = |relay: &mut Relay, auth: &str, n: u64| {
        let body = format!("ru v={n}i {}", 1_700_000_000_000_000_000u64 + n);
        relay
            .request(
                "POST",
                "/write?db=db",
                &[("Authorization", auth)],
                body.as_bytes(),
            )
            .status
    };
    assert_eq!(
        [
            write(&mut relay, &user, 0),
            write(&mut relay, &user, 1),
            write(&mut relay, &user, 2)
        ],
        [204, 204, 503]
    );
    // The token holder, from the same address, has a bucket of its own.
    assert_eq!(
        [
            write(&mut relay, &token, 3),
            write(&mut relay, &token, 4),
            write(&mut relay, &token, 5)
        ],
        [204, 204, 503]
    );
    assert_eq!(count(&a, "db", "v", "ru"), 4);
}

#[test]
fn sighup_reloads_certificates_users_and_keeps_a_working_certificate() {
    let _serial = serial();
    let a = Influxd::start();
    a.create_database("db");
    let (first, second) = (pki(), pki());
    let files = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    let install = |p: &Pki| {
        std::fs::copy(&p.cert, &cert).expect("copy cert");
        std::fs::copy(&p.key, &key).expect("copy key");
    };
    install(&first);
    let top = format!(
        "tls_cert = {:?}\ntls_key = {:?}\n\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let tables = format!("[[backend]]\nname = \"a\"\nurl = \"{}\"\n\n", a.url());
    let relay = Relay::start_config(&format!("{top}{}", auth_section(None)), &tables, "info");
    let port = relay.port();
    let write = |ca: &Path, user: &str, password: &str| {
        let target = format!("/write?db=db&{}", form(&[("u", user), ("p", password)]));
        https(port, ca, "POST", &target, b"re v=1 1700000000000000000")
    };
    assert_eq!(
        write(&first.ca, "admin", CLIENT_PASSWORD),
        Ok((204, String::new()))
    );
    assert_eq!(write(&first.ca, "second", "pw-2").map(|r| r.0), Ok(401));

    // A renewed certificate (from another CA) and a new user: SIGHUP applies both.
    install(&second);
    let config = std::fs::read_to_string(relay.config_path()).expect("config");
    let new_user = format!(
        "[[auth.user]]\nname = \"second\"\npassword_hash = \"{}\"\n\n",
        hash_password("pw-2")
    );
    let config = config.replacen("[[auth.token]]", &format!("{new_user}[[auth.token]]"), 1);
    std::fs::write(relay.config_path(), config).expect("write config");
    relay.signal("HUP");
    wait_until("the new certificate is served", CONVERGE, || {
        https(port, &second.ca, "GET", "/ping", b"").is_ok_and(|r| r.0 == 204)
    });
    assert!(
        https(port, &first.ca, "GET", "/ping", b"").is_err(),
        "the old certificate is no longer served"
    );
    assert_eq!(write(&second.ca, "second", "pw-2").map(|r| r.0), Ok(204));
    // The refusal before the reload still counts.
    let target = format!(
        "/status?{}",
        form(&[("u", "admin"), ("p", CLIENT_PASSWORD)])
    );
    let (code, body) = https(port, &second.ca, "GET", &target, b"").expect("status");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status["auth"]["enabled"], true, "{status}");
    assert_eq!(status["auth"]["refused_requests"], 1, "{status}");

    // A key that cannot be used: the reload is refused and the running certificate stays.
    std::fs::write(&key, "not a key").expect("write key");
    relay.signal("HUP");
    wait_until("the refusal is logged", CONVERGE, || {
        relay.log().contains("config reload refused")
    });
    assert!(relay.log().contains("key.pem"), "{}", relay.log());
    assert_eq!(
        write(&second.ca, "admin", CLIENT_PASSWORD).map(|r| r.0),
        Ok(204)
    );
    assert_eq!(
        count(&a, "db", "v", "re"),
        1,
        "the same point, written three times"
    );
}

/// Per connection of an [`Attack`]: its kind, whether the server closed it, what it received.
type AttackState = std::sync::Arc<std::sync::Mutex<Vec<(String, bool, Vec<u8>)>>>;

/// Connections that misbehave on purpose, driven by one thread: each sends its first part at
/// once, then each second the next byte of the rest (nothing for `silent`). Records what each received and
/// whether the server closed it.
struct Attack {
    closed: AttackState,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Attack {
    fn start(port: u16, scripts: Vec<(&'static str, Vec<u8>, Vec<u8>)>) -> Attack {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let mut conns = Vec::new();
        for (kind, at_once, script) in scripts {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(&at_once).expect("first part");
            s.set_nonblocking(true).expect("nonblocking");
            conns.push((kind, script, s, 0usize));
        }
        let closed = std::sync::Arc::new(std::sync::Mutex::new(
            conns
                .iter()
                .map(|(k, ..)| ((*k).to_owned(), false, Vec::new()))
                .collect::<Vec<_>>(),
        ));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (state, stopping) = (closed.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                for (i, (_, script, s, next)) in conns.iter_mut().enumerate() {
                    let mut st = state.lock().expect("state");
                    if st[i].1 {
                        continue;
                    }
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => {
                                st[i].1 = true;
                                break;
                            }
                            Ok(n) => st[i].2.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                st[i].1 = true;
                                break;
                            }
                        }
                    }
                    if !st[i].1 && *next < script.len() {
                        if s.write(&script[*next..*next + 1]).is_err() {
                            st[i].1 = true;
                        }
                        *next += 1;
                    }
                }
                // The attack's own pace (one byte per second), not a wait for a condition.
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        });
        Attack {
            closed,
            stop,
            thread: Some(thread),
        }
    }

    fn open(&self) -> usize {
        self.closed
            .lock()
            .expect("state")
            .iter()
            .filter(|c| !c.1)
            .count()
    }

    fn received(&self, kind: &str) -> Vec<String> {
        self.closed
            .lock()
            .expect("state")
            .iter()
            .filter(|c| c.0 == kind)
            .map(|c| String::from_utf8_lossy(&c.2).into_owned())
            .collect()
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn slowloris_clients_cannot_hold_the_node() {
    let _serial = serial();
    let a = Influxd::start();
    a.create_database("db");
    let tables = format!("[[backend]]\nname = \"a\"\nurl = \"{}\"\n\n", a.url());
    let mut relay = Relay::start_config(
        "header_read_timeout = \"2s\"\nbody_read_timeout = \"4s\"\n",
        &tables,
        "info",
    );
    let headers_forever = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
    let h2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let slow_head =
        b"POST /write?db=db HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".to_vec();
    let mut scripts: Vec<(&'static str, Vec<u8>, Vec<u8>)> = Vec::new();
    for _ in 0..30 {
        scripts.push(("headers", Vec::new(), headers_forever.clone()));
    }
    for _ in 0..10 {
        scripts.push(("silent", Vec::new(), Vec::new()));
        scripts.push(("h2-preface", Vec::new(), h2_preface.clone()));
    }
    for _ in 0..5 {
        scripts.push(("slow-body", slow_head.clone(), vec![b'x'; 200]));
    }
    let total = scripts.len();
    let attack = Attack::start(relay.port(), scripts);
    assert_eq!(attack.open(), total);

    // Meanwhile the node serves others.
    for n in 0..5u64 {
        assert_eq!(relay.get("/ping").expect("ping").status, 204);
        let body = format!("sl v={n}i {}", 1_700_000_000_000_000_000u64 + n);
        let r = relay.write("db=db", body.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    // And closes every one of them.
    wait_until("every slow connection is closed", CONVERGE, || {
        attack.open() == 0
    });
    for answer in attack.received("slow-body") {
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("timeout reading request body"), "{answer}");
    }
    for kind in ["headers", "silent", "h2-preface"] {
        for answer in attack.received(kind) {
            assert!(!answer.contains("204"), "{kind}: {answer}");
        }
    }
    assert_eq!(count(&a, "db", "v", "sl"), 5);

    // An idle keep-alive connection is closed too.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", relay.port())).expect("connect");
    use std::io::{Read, Write};
    idle.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    idle.set_read_timeout(Some(CONVERGE)).expect("timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match idle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            // The read timeout: the relay kept the idle connection open.
            Err(e) => panic!("the idle connection was not closed: {e}"),
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 204"), "{seen}");
}

#[test]
fn connections_past_max_connections_wait_until_slow_ones_are_cut() {
    let _serial = serial();
    let a = Influxd::start();
    let tables = format!("[[backend]]\nname = \"a\"\nurl = \"{}\"\n\n", a.url());
    let mut relay = Relay::start_config(
        "header_read_timeout = \"2s\"\nmax_connections = 8\n",
        &tables,
        "info",
    );
    // Eight silent connections take every slot.
    let attack = Attack::start(
        relay.port(),
        (0..8).map(|_| ("silent", Vec::new(), Vec::new())).collect(),
    );
    // This one waits in the kernel's backlog and is served once they are cut.
    assert_eq!(
        relay.get("/ping").expect("served after the cut").status,
        204
    );
    wait_until("the silent connections are closed", CONVERGE, || {
        attack.open() == 0
    });
}

/// A relay whose admin listener has TLS from `pki` and `[auth]` on, in front of `backends`
/// (named `influx-a`, `influx-b`, …).
fn relay_with_tls_admin(pki: &Pki, backends: &[&Influxd]) -> Relay {
    let admin_port = testkit::free_port().expect("port");
    let extra = format!(
        "[admin]\nbind = \"127.0.0.1:{admin_port}\"\ntls_cert = {:?}\ntls_key = {:?}\n\n{}",
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
        auth_section(None)
    );
    let tables: String = backends
        .iter()
        .zip('a'..)
        .map(|(b, n)| {
            format!(
                "[[backend]]\nname = \"influx-{n}\"\nurl = \"{}\"\n\n",
                b.url()
            )
        })
        .collect();
    Relay::start_config(&extra, &tables, "info")
}

/// `influx-ha ARGS --config <relay's>` with the token of `[auth]`, trusting `ca` (or the
/// system's CAs); returns whether it succeeded and what it printed.
fn cli_with_token(relay: &Relay, args: &[&str], ca: Option<&Path>) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_influx-ha"));
    cmd.args(args)
        .arg("--config")
        .arg(relay.config_path())
        .env("INFLUX_HA_TOKEN", &TOKEN.0)
        .env_remove("INFLUX_HA_CA_FILE");
    if let Some(ca) = ca {
        cmd.env("INFLUX_HA_CA_FILE", ca);
    }
    let out = cmd.output().expect("run influx-ha");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_queue_commands_reach_an_admin_listener_behind_tls() {
    let _serial = serial();
    let a = Influxd::start();
    let pki = pki();
    let relay = relay_with_tls_admin(&pki, &[&a]);
    let (ok, out) = cli_with_token(&relay, &["queue", "list"], Some(&pki.ca));
    assert!(ok, "{out}\n{}", relay.log());
    assert!(out.contains("influx-a"), "{out}");
    // Without the CA the certificate is refused, and the running node's data is left alone.
    let (ok, out) = cli_with_token(&relay, &["queue", "list"], None);
    assert!(!ok, "{out}");
    assert!(
        out.contains("certificate") || out.contains("https"),
        "{out}"
    );
}

#[test]
fn repair_clears_a_flag_through_an_admin_listener_behind_tls() {
    let _serial = serial();
    let (a, b) = (Influxd::start(), Influxd::start());
    let pki = pki();
    let relay = relay_with_tls_admin(&pki, &[&a, &b]);
    let flag = relay.data_dir().join("influx-b").join("diverged");
    // Purging the (empty) queue marks influx-b diverged.
    let (ok, out) = cli_with_token(
        &relay,
        &["queue", "purge", "influx-b", "--yes"],
        Some(&pki.ca),
    );
    assert!(ok, "{out}\n{}", relay.log());
    assert!(flag.exists(), "{out}");

    // Without the CA the node's certificate is refused: the flag of the running node is left
    // alone, not removed as if no node ran.
    let (ok, out) = cli_with_token(&relay, &["repair"], None);
    assert!(!ok, "{out}");
    assert!(out.contains("certificate"), "{out}");
    assert!(flag.exists(), "{out}\n{}", relay.log());

    // With it, the identical backends' flag is cleared through the TLS listener.
    let (ok, out) = cli_with_token(&relay, &["repair"], Some(&pki.ca));
    assert!(ok, "{out}\n{}", relay.log());
    assert!(!flag.exists(), "{out}");
    let (ok, out) = cli_with_token(&relay, &["queue", "list"], Some(&pki.ca));
    assert!(ok, "{out}");
    assert!(!out.contains("diverged"), "{out}");
}
