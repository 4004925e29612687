//! The security sections of the config: `[auth]` with its users and tokens.

use serde::Deserialize;
use toml::Spanned;

use super::Checker;
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
        AuthConfig {
            enabled: self.enabled,
            admin_listener: self.admin_listener.unwrap_or(true),
            users,
            tokens,
        }
    }
}

fn hash_message(e: &HashError) -> String {
    e.to_string()
}
