//! Tests of the security keys: `[auth]`, TLS files, `rate_limit`, `[[tcp]]` limits, `ca_file`.

use std::time::Duration;

use super::tests::{parse, problem, problems};
use super::*;
use crate::auth::password::{MIN_ITERATIONS, PasswordHash, token_hash_string};

const BACKEND: &str = "[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:8086\"\n";

fn with(top: &str) -> String {
    format!("data_dir = \"/d\"\n{top}\n{BACKEND}")
}

#[test]
fn auth_users_and_tokens() {
    let hash = PasswordHash::new(b"pw", MIN_ITERATIONS).expect("hash");
    let token = token_hash_string(b"tok");
    let c = parse(&with(&format!(
        "[auth]\nenabled = true\n[[auth.user]]\nname = \"u\"\npassword_hash = \"{hash}\"\n[[auth.token]]\nname = \"t\"\ntoken_hash = \"{token}\"\n"
    )))
    .expect("valid");
    assert!(c.auth.enabled && c.auth.admin_listener);
    assert_eq!(c.auth.users.len(), 1);
    assert_eq!(c.auth.users[0].name, "u");
    assert_eq!(c.auth.tokens[0].name, "t");
    assert!(!parse(&with("")).expect("valid").auth.enabled);

    let p = problem(&with("[auth]\nenabled = true\n"));
    assert_eq!(p.key, "auth");
    let p = problem(&with(
        "[auth]\nenabled = true\n[[auth.user]]\nname = \"u\"\npassword_hash = \"plain\"\n",
    ));
    assert_eq!(
        (p.key.as_str(), p.line),
        ("auth.user[0].password_hash", Some(6))
    );
    assert!(p.message.contains("hash-password"), "{}", p.message);
    let dup = format!(
        "[auth]\n[[auth.user]]\nname = \"u\"\npassword_hash = \"{hash}\"\n[[auth.user]]\nname = \"u\"\npassword_hash = \"{hash}\"\n"
    );
    assert_eq!(problem(&with(&dup)).key, "auth.user[1].name");
    let p = problem(&with(
        "[auth]\n[[auth.token]]\nname = \"t\"\ntoken_hash = \"tok\"\n",
    ));
    assert_eq!(p.key, "auth.token[0].token_hash");
}

#[test]
fn admins_name_users_or_tokens() {
    let hash = PasswordHash::new(b"pw", MIN_ITERATIONS).expect("hash");
    let token = token_hash_string(b"tok");
    let auth = |admins: &str| {
        with(&format!(
            "[auth]\nenabled = true\n{admins}\n[[auth.user]]\nname = \"u\"\npassword_hash = \"{hash}\"\n[[auth.token]]\nname = \"t\"\ntoken_hash = \"{token}\"\n"
        ))
    };
    assert_eq!(parse(&auth("")).expect("valid").auth.admins, None);
    assert_eq!(
        parse(&auth("admins = [\"u\", \"t\"]"))
            .expect("valid")
            .auth
            .admins,
        Some(vec!["u".to_owned(), "t".to_owned()])
    );
    let p = problem(&auth("admins = [\"u\", \"nobody\"]"));
    assert_eq!((p.key.as_str(), p.line), ("auth.admins[1]", Some(4)));
    assert!(
        p.message.contains("\"nobody\" is the name of no"),
        "{}",
        p.message
    );
}

#[test]
fn tls_files_come_in_pairs() {
    let c = parse(&format!(
        "data_dir = \"/d\"\n[http]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n[admin]\nbind = \"127.0.0.1:8093\"\ntls_cert = \"/a.pem\"\ntls_key = \"/ak.pem\"\n{BACKEND}"
    ))
    .expect("valid");
    let tls = c.http.tls.expect("tls");
    assert_eq!(tls.cert, std::path::PathBuf::from("/c.pem"));
    assert_eq!(tls.key, std::path::PathBuf::from("/k.pem"));
    assert!(c.admin.expect("admin").tls.is_some());
    let p = problem(&format!(
        "data_dir = \"/d\"\n[http]\ntls_cert = \"/c.pem\"\n{BACKEND}"
    ));
    assert_eq!((p.key.as_str(), p.line), ("http.tls_key", Some(3)));
}

#[test]
fn backend_ca_file_is_for_https_only() {
    let c = parse(
        "data_dir = \"/d\"\n[[backend]]\nname = \"a\"\nurl = \"https://h:8086\"\nca_file = \"/ca.pem\"\n",
    )
    .expect("valid");
    assert_eq!(
        c.backends[0].ca_file.as_deref(),
        Some(std::path::Path::new("/ca.pem"))
    );
    let p = problem(
        "data_dir = \"/d\"\n[[backend]]\nname = \"a\"\nurl = \"http://h:8086\"\nca_file = \"/ca.pem\"\n",
    );
    assert_eq!((p.key.as_str(), p.line), ("backend[0].ca_file", Some(5)));
}

#[test]
fn rate_limits() {
    let c = parse(&format!(
        "data_dir = \"/d\"\n[http]\nrate_limit = {{ requests_per_second = 2.5 }}\n{BACKEND}"
    ))
    .expect("valid");
    assert_eq!(
        c.http.rate_limit,
        Some(RateLimit {
            requests_per_second: 2.5,
            burst: 3,
            per: RateLimitKey::Address
        })
    );
    let c = parse(&format!(
        "data_dir = \"/d\"\n[http]\nrate_limit = {{ requests_per_second = 100, burst = 500, per = \"user\" }}\n{BACKEND}"
    ))
    .expect("valid");
    let r = c.http.rate_limit.expect("limit");
    assert_eq!((r.burst, r.per), (500, RateLimitKey::User));
    assert!(parse(&with("")).expect("valid").http.rate_limit.is_none());
    let ps = problems(&format!(
        "data_dir = \"/d\"\n[http]\nrate_limit = {{ requests_per_second = 0, burst = 0 }}\n{BACKEND}"
    ));
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "http.rate_limit.requests_per_second",
            "http.rate_limit.burst"
        ]
    );
    assert!(ps.iter().all(|p| p.line == Some(3)));
    assert!(
        parse(&format!(
            "data_dir = \"/d\"\n[http]\nrate_limit = {{ requests_per_second = 1, per = \"ip\" }}\n{BACKEND}"
        ))
        .is_err()
    );
}

#[test]
fn tcp_listener_limits() {
    let c = parse(&with(
        "[[tcp]]\nbind = \"127.0.0.1:8094\"\ndatabase = \"t\"\nmax_connections = 10\nidle_timeout = \"30s\"\n[[tcp]]\nbind = \"127.0.0.1:8095\"\ndatabase = \"t\"\n",
    ))
    .expect("valid");
    assert_eq!(c.tcp[0].max_connections, 10);
    assert_eq!(c.tcp[0].idle_timeout, Duration::from_secs(30));
    assert_eq!(c.tcp[1].max_connections, DEFAULT_TCP_MAX_CONNECTIONS);
    assert_eq!(c.tcp[1].idle_timeout, DEFAULT_TCP_IDLE_TIMEOUT);
    let p = problem(&with(
        "[[tcp]]\nbind = \"127.0.0.1:8094\"\ndatabase = \"t\"\nmax_connections = 0\n",
    ));
    assert_eq!(p.key, "tcp[0].max_connections");
}
