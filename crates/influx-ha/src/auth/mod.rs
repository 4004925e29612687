//! Relay-level authentication: the users and tokens of `[auth]`, checked the way InfluxDB 1.6
//! checks its own users, with its answers.
//!
//! - Credentials are read as 1.6 reads them ([`credentials`]): `u`/`p` query parameters, HTTP
//!   Basic, and 1.8's `Authorization: Token user:password`; `Authorization: Token X` (no `:`)
//!   is one of the configured tokens.
//! - Failures are 401 with 1.6.7's bodies and its `Www-Authenticate: Basic realm="InfluxDB"`
//!   header, measured on influxd 1.6.7 with `auth-enabled = true` ([`AuthError`]).
//! - Passwords are stored as slow salted hashes ([`password`]). A verification costs hundreds
//!   of milliseconds of CPU by design, so its result is remembered per (user, password) under
//!   a keyed HMAC (never the password itself), at most [`VERIFY_CONCURRENCY`] verifications run
//!   at once on the blocking pool, and a wrong password sent again is answered from memory:
//!   a client retrying with a bad password cannot make the node burn CPU.
//! - The [`Principal`] (a user or token *name*) is all that goes further; credentials are never
//!   logged, forwarded, counted or queued.

pub(crate) mod base64;
pub mod credentials;
pub mod input;
pub mod password;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use ring::hmac;
use ring::rand::SystemRandom;
use tokio::sync::Semaphore;

use self::credentials::{Presented, presented};
use self::password::{PasswordHash, token_digest};

/// Password verifications that may run at once (each keeps a core busy).
pub const VERIFY_CONCURRENCY: usize = 1;
/// Remembered verification results of each kind (passwords that matched, and those that did
/// not); each memory is cleared when it is full. They are apart so that a stream of wrong
/// passwords never evicts the right ones, which would then wait for a slow verification again.
pub const CACHE_ENTRIES: usize = 4096;
/// How long a request waits for a verification slot before it gets 503 (retry later): a
/// queue of slow verifications must not hold every client's request.
pub const VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A configured user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name clients send.
    pub name: String,
    /// The password's hash.
    pub password_hash: PasswordHash,
}

/// A configured token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Who holds it (shown in logs and used as the rate-limit key; never the token).
    pub name: String,
    /// SHA-256 of the token.
    pub digest: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a request is refused: 401 with InfluxDB 1.6.7's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials 1.6 can read.
    #[error("unable to parse authentication credentials")]
    Unparsable,
    /// A user name and password with an empty user name.
    #[error("username required")]
    UsernameRequired,
    /// `Authorization: Bearer …`: 1.6.7's text, its typo included.
    #[error("bearer auth disabld")]
    BearerDisabled,
    /// Unknown user, wrong password or unknown token.
    #[error("authorization failed")]
    Failed,
    /// No verification slot came free in time (answered 503, not 401).
    #[error("too many password verifications at once; retry later")]
    Busy,
}

/// Who a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The user or token name.
    pub name: Arc<str>,
}

/// Checks requests against the configured users and tokens. Cheap to share.
pub struct Authenticator {
    /// By user name.
    users: HashMap<String, PasswordHash>,
    /// Token digest → token name.
    tokens: HashMap<[u8; 32], Arc<str>>,
    /// Keys the verification memory (random per process, so its entries mean nothing
    /// outside it).
    cache_key: hmac::Key,
    /// HMAC(user, password) → whether it matched. Shared with the checks still running, which
    /// record their outcome even when their request is gone.
    cache: Arc<Mutex<Memory>>,
    /// Bounds the CPU spent on password hashing.
    verify_slots: Arc<Semaphore>,
    /// Refused requests so far (for metrics).
    failures: AtomicU64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("tokens", &self.tokens.values().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for these users and tokens.
    pub fn new(users: &[User], tokens: &[Token]) -> Self {
        let rng = SystemRandom::new();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            // Without the system's random source nothing secure can be done; a fixed key
            // keeps the memory working (its entries still never hold a password).
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, b"influx-ha"));
        Self {
            users: users
                .iter()
                .map(|u| (u.name.clone(), u.password_hash.clone()))
                .collect(),
            tokens: tokens
                .iter()
                .map(|t| (t.digest, Arc::from(t.name.as_str())))
                .collect(),
            cache_key,
            cache: Arc::default(),
            verify_slots: Arc::new(Semaphore::new(VERIFY_CONCURRENCY)),
            failures: AtomicU64::new(0),
        }
    }

    /// Requests refused so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Authenticates a request from its headers and URL query.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let result = match presented(headers, query) {
            None => Err(AuthError::Unparsable),
            Some(Presented::Bearer) => Err(AuthError::BearerDisabled),
            Some(Presented::Token(token)) => self
                .tokens
                .get(&token_digest(&token))
                .map(|name| Principal { name: name.clone() })
                .ok_or(AuthError::Failed),
            Some(Presented::User { name, .. }) if name.is_empty() => {
                Err(AuthError::UsernameRequired)
            }
            Some(Presented::User { name, password }) => self.check_user(name, password).await,
        };
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn check_user(&self, name: String, password: Vec<u8>) -> Result<Principal, AuthError> {
        let Some(hash) = self.users.get(&name) else {
            return Err(AuthError::Failed);
        };
        let key = self.cache_key_of(&name, &password);
        if let Some(ok) = self.remembered(&key) {
            return if ok {
                Ok(Principal {
                    name: Arc::from(name.as_str()),
                })
            } else {
                Err(AuthError::Failed)
            };
        }
        let slot = tokio::time::timeout(VERIFY_WAIT, self.verify_slots.clone().acquire_owned());
        let Ok(Ok(slot)) = slot.await else {
            return Err(AuthError::Busy);
        };
        // Another request may have verified the same pair while this one waited.
        let ok = match self.remembered(&key) {
            Some(ok) => ok,
            None => {
                let (hash, memory) = (hash.clone(), self.cache.clone());
                // The slot and the outcome go with the hash: a client that hangs up cannot
                // free the slot while its hash still runs, nor make the next try hash again.
                tokio::task::spawn_blocking(move || {
                    let ok = hash.verify(&password);
                    remember(&memory, key, ok);
                    drop(slot);
                    ok
                })
                .await
                .unwrap_or(false)
            }
        };
        if ok {
            Ok(Principal {
                name: Arc::from(name.as_str()),
            })
        } else {
            Err(AuthError::Failed)
        }
    }

    fn cache_key_of(&self, name: &str, password: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(&(name.len() as u64).to_le_bytes());
        ctx.update(name.as_bytes());
        ctx.update(password);
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<bool> {
        let memory = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if memory.matched.contains(key) {
            Some(true)
        } else if memory.refused.contains(key) {
            Some(false)
        } else {
            None
        }
    }

    /// Takes over from the authenticator a reload replaces: its verification slots, so that
    /// checks still running on it count against the same bound, and what it remembered when
    /// both have the same users and password hashes, so that a reload which leaves them alone
    /// (a certificate renewal, say) does not make every client's password be hashed again.
    pub fn take_over_from(&mut self, old: &Authenticator) {
        self.verify_slots = old.verify_slots.clone();
        if self.users == old.users {
            self.cache_key = old.cache_key.clone();
            self.cache = old.cache.clone();
        }
    }
}

fn remember(memory: &Mutex<Memory>, key: [u8; 32], ok: bool) {
    let mut memory = memory
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let kind = if ok {
        &mut memory.matched
    } else {
        &mut memory.refused
    };
    if kind.len() >= CACHE_ENTRIES {
        kind.clear();
    }
    kind.insert(key);
}

/// Verification results remembered, by keyed digest of user and password.
#[derive(Default)]
struct Memory {
    matched: HashSet<[u8; 32]>,
    refused: HashSet<[u8; 32]>,
}

#[cfg(test)]
mod tests;
