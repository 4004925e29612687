//! The security parts of the config: `[auth]` with its users and tokens, the TLS files of
//! the listeners, and `[http] rate_limit`.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::tls::TlsFiles;

use super::{BackendUrl, Checker, Credentials, Scheme, Secret};
use crate::auth::password::{HashError, PasswordHash, parse_token_hash};
use crate::auth::{Token, User};

/// `[auth]`: relay-level authentication (see [`crate::auth`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Whether requests must present credentials (InfluxDB's `auth-enabled`).
    pub enabled: bool,
    /// Whether the separate `[admin]` listener asks for them too (default true; false leaves
    /// a loopback admin listener open to local tools).
    pub admin_listener: bool,
    /// `[[auth.user]]`: user names and password hashes.
    pub users: Vec<User>,
    /// `[[auth.token]]`: named tokens, stored as hashes.
    pub tokens: Vec<Token>,
    /// `admins`: the users and tokens that may use the admin API (`/admin/…`); `None`: all.
    pub admins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default)]
    enabled: bool,
    admin_listener: Option<bool>,
    #[serde(default)]
    user: Vec<RawUser>,
    #[serde(default)]
    token: Vec<RawToken>,
    admins: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    password_hash: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Spanned<String>,
    token_hash: Spanned<String>,
}

impl RawAuth {
    pub(super) fn validate(&self, c: &mut Checker<'_>) -> AuthConfig {
        let mut users: Vec<User> = Vec::with_capacity(self.user.len());
        for (i, u) in self.user.iter().enumerate() {
            let name = u.name.get_ref();
            if name.is_empty() {
                c.at(&u.name, format!("auth.user[{i}].name"), "must not be empty");
            } else if let Some(j) = users.iter().position(|o| &o.name == name) {
                c.at(
                    &u.name,
                    format!("auth.user[{i}].name"),
                    format!("{name:?} is already the name of auth.user[{j}]"),
                );
            }
            match PasswordHash::parse(u.password_hash.get_ref().trim()) {
                Ok(h) => users.push(User {
                    name: name.clone(),
                    password_hash: h,
                }),
                Err(e) => {
                    c.at(
                        &u.password_hash,
                        format!("auth.user[{i}].password_hash"),
                        hash_message(&e),
                    );
                }
            }
        }
        let mut tokens: Vec<Token> = Vec::with_capacity(self.token.len());
        for (i, t) in self.token.iter().enumerate() {
            let name = t.name.get_ref();
            if name.is_empty() {
                c.at(
                    &t.name,
                    format!("auth.token[{i}].name"),
                    "must not be empty",
                );
            }
            match parse_token_hash(t.token_hash.get_ref().trim()) {
                Ok(digest) if tokens.iter().any(|o| o.digest == digest) => {
                    c.at(
                        &t.token_hash,
                        format!("auth.token[{i}].token_hash"),
                        "is the same token as another [[auth.token]]",
                    );
                }
                Ok(digest) => tokens.push(Token {
                    name: name.clone(),
                    digest,
                }),
                Err(e) => c.at(
                    &t.token_hash,
                    format!("auth.token[{i}].token_hash"),
                    hash_message(&e),
                ),
            }
        }
        if self.enabled && self.user.is_empty() && self.token.is_empty() {
            c.general(
                "auth",
                "enabled = true needs at least one [[auth.user]] or [[auth.token]] (make a hash with `influx-ha hash-password`)",
            );
        }
        let admins = self.admins.as_ref().map(|names| {
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let known = self.user.iter().any(|u| u.name.get_ref() == name.get_ref())
                        || self
                            .token
                            .iter()
                            .any(|t| t.name.get_ref() == name.get_ref());
                    if !known {
                        c.at(
                            name,
                            format!("auth.admins[{i}]"),
                            format!(
                                "{:?} is the name of no [[auth.user]] or [[auth.token]]",
                                name.get_ref()
                            ),
                        );
                    }
                    name.get_ref().clone()
                })
                .collect()
        });
        AuthConfig {
            enabled: self.enabled,
            admin_listener: self.admin_listener.unwrap_or(true),
            users,
            tokens,
            admins,
        }
    }
}

fn hash_message(e: &HashError) -> String {
    e.to_string()
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKey {
    /// The client's IP address (behind a proxy every client shares the proxy's).
    Address,
    /// The authenticated user or token name; the address when authentication is off.
    User,
}

/// `[http] rate_limit`: a token bucket per client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second a client may make on average.
    pub requests_per_second: f64,
    /// Requests a client may make at once after being idle.
    pub burst: u32,
    /// What a client is.
    pub per: RateLimitKey,
}

// The rate is checked to be finite and positive: equality is total on what validation keeps.
impl Eq for RateLimit {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    requests_per_second: f64,
    burst: Option<i64>,
    per: Option<RateLimitKey>,
}

pub(super) fn rate_limit(c: &mut Checker<'_>, raw: &Spanned<RawRateLimit>) -> RateLimit {
    let r = raw.get_ref();
    let mut rps = r.requests_per_second;
    if !rps.is_finite() || rps <= 0.0 {
        c.at(
            raw,
            "http.rate_limit.requests_per_second",
            "must be a number larger than zero",
        );
        rps = 1.0;
    }
    let default_burst = rps.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    let burst = match r.burst {
        None => default_burst,
        Some(b) => match u32::try_from(b) {
            Ok(b) if b >= 1 => b,
            _ => {
                c.at(raw, "http.rate_limit.burst", "must be at least 1");
                default_burst
            }
        },
    };
    RateLimit {
        requests_per_second: rps,
        burst,
        per: r.per.unwrap_or(RateLimitKey::Address),
    }
}

/// `tls_cert` and `tls_key` of a listener: both or neither.
pub(super) fn tls_files(
    c: &mut Checker<'_>,
    cert: &Option<Spanned<String>>,
    key: &Option<Spanned<String>>,
    section: &str,
) -> Option<TlsFiles> {
    let mut non_empty = |v: &Spanned<String>, name: &str| {
        if v.get_ref().trim().is_empty() {
            c.at(v, format!("{section}.{name}"), "must not be empty");
        }
        PathBuf::from(v.get_ref())
    };
    match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: non_empty(cert, "tls_cert"),
            key: non_empty(key, "tls_key"),
        }),
        (Some(cert), None) => {
            c.at(
                cert,
                format!("{section}.tls_key"),
                "is required when tls_cert is set",
            );
            None
        }
        (None, Some(key)) => {
            c.at(
                key,
                format!("{section}.tls_cert"),
                "is required when tls_key is set",
            );
            None
        }
    }
}

/// `ca_file` of an `https://` backend or peer (`key` such as `backend[0]`).
pub(super) fn ca_file(
    c: &mut Checker<'_>,
    raw: &Option<Spanned<String>>,
    url: &BackendUrl,
    key: &str,
) -> Option<PathBuf> {
    let f = raw.as_ref()?;
    if url.scheme != Scheme::Https {
        c.at(f, format!("{key}.ca_file"), "only applies to https:// URLs");
    }
    if f.get_ref().trim().is_empty() {
        c.at(f, format!("{key}.ca_file"), "must not be empty");
    }
    Some(PathBuf::from(f.get_ref()))
}

/// `username` and `password` of a peer: both or neither.
pub(super) fn credentials(
    c: &mut Checker<'_>,
    username: &Option<Spanned<String>>,
    password: &Option<Spanned<Secret>>,
    key: &str,
) -> Option<Credentials> {
    match (username, password) {
        (None, None) => None,
        (Some(u), Some(p)) => {
            if u.get_ref().is_empty() {
                c.at(u, format!("{key}.username"), "must not be empty");
            }
            Some(Credentials {
                username: u.get_ref().clone(),
                password: p.get_ref().clone(),
            })
        }
        (Some(u), None) => {
            c.at(
                u,
                format!("{key}.password"),
                "is required when username is set",
            );
            None
        }
        (None, Some(p)) => {
            c.at(
                p,
                format!("{key}.username"),
                "is required when password is set",
            );
            None
        }
    }
}
