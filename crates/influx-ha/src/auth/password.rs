//! Password hashes: PBKDF2-HMAC-SHA256 (ring), salted, slow, in a self-describing string.
//!
//! Format (the PHC string format, as passlib and others write PBKDF2):
//!
//! ```text
//! $pbkdf2-sha256$i=600000$<salt, base64 without padding>$<32-byte hash, base64 without padding>
//! ```
//!
//! The iteration count travels in the string, so a config keeps working when the default
//! changes and an operator can choose a count for their hardware (`influx-ha hash-password
//! --iterations`). Verification is constant-time (ring). Tokens are random 32-byte values and
//! need no slow hash: they are stored as `$sha256$<base64 of SHA-256(token)>`.

use std::fmt;
use std::num::NonZeroU32;

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};

use super::base64;

/// Iterations of new hashes (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Fewest iterations a configured hash may have: below it a stolen config is too cheap to
/// attack.
pub const MIN_ITERATIONS: u32 = 10_000;
/// Most iterations of a new hash: one check of more takes about a second of a core here, and
/// checks run one at a time, so other clients would wait past [`super::VERIFY_WAIT`].
pub const MAX_ITERATIONS: u32 = 2_000_000;
/// Most iterations a configured hash may have: above [`MAX_ITERATIONS`] for hashes made
/// before that cap, but a typo of thousands of millions would hold the one verification slot
/// for half an hour a check.
pub const MAX_CONFIGURED_ITERATIONS: u32 = 10 * MAX_ITERATIONS;
/// Salt length of new hashes.
pub const SALT_BYTES: usize = 16;
/// Length of the derived key.
pub const HASH_BYTES: usize = 32;
/// Random bytes of a new token (base64: 43 characters).
pub const TOKEN_BYTES: usize = 32;

const PBKDF2_PREFIX: &str = "$pbkdf2-sha256$i=";
const SHA256_PREFIX: &str = "$sha256$";

/// A parsed `password_hash`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    hash: [u8; HASH_BYTES],
}

/// Why a hash string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not the format above.
    #[error(
        "is not a password hash made by `influx-ha hash-password` (expected \"$pbkdf2-sha256$i=ITERATIONS$SALT$HASH\")"
    )]
    Format,
    /// Too few iterations.
    #[error("has {0} iterations; at least {MIN_ITERATIONS} are required")]
    TooFewIterations(u32),
    /// Too many iterations.
    #[error("has {0} iterations; at most {MAX_CONFIGURED_ITERATIONS} are taken")]
    TooManyIterations(u32),
    /// Not a token hash.
    #[error(
        "is not a token hash made by `influx-ha new-token` (expected \"$sha256$\" and 43 base64 characters)"
    )]
    TokenFormat,
    /// The system's random generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PBKDF2_PREFIX}{}${}${}",
            self.iterations,
            base64::encode(&self.salt, false),
            base64::encode(&self.hash, false)
        )
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<Self, HashError> {
        let iterations = NonZeroU32::new(iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS))
            .ok_or(HashError::Format)?;
        let mut salt = vec![0u8; SALT_BYTES];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| HashError::Random)?;
        let mut hash = [0u8; HASH_BYTES];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password,
            &mut hash,
        );
        Ok(Self {
            iterations,
            salt,
            hash,
        })
    }

    /// Parses a hash string.
    pub fn parse(s: &str) -> Result<Self, HashError> {
        let rest = s.strip_prefix(PBKDF2_PREFIX).ok_or(HashError::Format)?;
        let mut parts = rest.split('$');
        let (Some(iterations), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HashError::Format);
        };
        if !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HashError::Format);
        }
        let iterations: u32 = iterations.parse().map_err(|_| HashError::Format)?;
        if iterations < MIN_ITERATIONS {
            return Err(HashError::TooFewIterations(iterations));
        }
        if iterations > MAX_CONFIGURED_ITERATIONS {
            return Err(HashError::TooManyIterations(iterations));
        }
        let salt = base64::decode_unpadded(salt.as_bytes()).ok_or(HashError::Format)?;
        if salt.len() < 8 {
            return Err(HashError::Format);
        }
        let hash: [u8; HASH_BYTES] = base64::decode_unpadded(hash.as_bytes())
            .and_then(|h| h.try_into().ok())
            .ok_or(HashError::Format)?;
        Ok(Self {
            iterations: NonZeroU32::new(iterations).ok_or(HashError::Format)?,
            salt,
            hash,
        })
    }

    /// Whether `password` matches (constant time; as slow as the iteration count says).
    pub fn verify(&self, password: &[u8]) -> bool {
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            self.iterations,
            &self.salt,
            password,
            &self.hash,
        )
        .is_ok()
    }

    /// The iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }
}

/// SHA-256 of a token, as stored in `token_hash`.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The `token_hash` string of a token.
pub fn token_hash_string(token: &[u8]) -> String {
    format!(
        "{SHA256_PREFIX}{}",
        base64::encode(&token_digest(token), false)
    )
}

/// Parses a `token_hash` string into the digest it holds.
pub fn parse_token_hash(s: &str) -> Result<[u8; 32], HashError> {
    s.strip_prefix(SHA256_PREFIX)
        .and_then(|b| base64::decode_unpadded(b.as_bytes()))
        .and_then(|d| d.try_into().ok())
        .ok_or(HashError::TokenFormat)
}

/// A new random token: URL-safe characters, no `:` (so `Token user:password` stays
/// unambiguous).
pub fn new_token() -> Result<String, HashError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| HashError::Random)?;
    Ok(base64::encode(&bytes, false)
        .replace('+', "-")
        .replace('/', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_and_verifies() {
        let h = PasswordHash::new(b"s3cret", MIN_ITERATIONS).expect("hash");
        let text = h.to_string();
        assert!(text.starts_with("$pbkdf2-sha256$i=10000$"), "{text}");
        let parsed = PasswordHash::parse(&text).expect("parses");
        assert_eq!(parsed, h);
        assert!(parsed.verify(b"s3cret"));
        assert!(!parsed.verify(b"s3cret "));
        assert!(!parsed.verify(b""));
    }

    #[test]
    fn salts_differ() {
        let a = PasswordHash::new(b"same", MIN_ITERATIONS).expect("hash");
        let b = PasswordHash::new(b"same", MIN_ITERATIONS).expect("hash");
        assert_ne!(a.to_string(), b.to_string());
    }

    #[test]
    fn known_vector() {
        // PBKDF2-HMAC-SHA256("password", "saltsaltsalt", 10000), computed independently
        // (Python's hashlib.pbkdf2_hmac).
        let salt = base64::encode(b"saltsaltsalt", false);
        let hash = "Ywhqa9a6UzxJLtjYRT+Z1yOp+8LEJ8K4SHhDCPyIytM";
        let h =
            PasswordHash::parse(&format!("$pbkdf2-sha256$i=10000${salt}${hash}")).expect("parses");
        assert!(h.verify(b"password"));
    }

    #[test]
    fn bad_strings_are_refused() {
        let good = PasswordHash::new(b"x", MIN_ITERATIONS)
            .expect("hash")
            .to_string();
        assert!(PasswordHash::parse(&good).is_ok());
        for bad in [
            "",
            "secret",
            "$pbkdf2-sha256$i=10000$",
            "$pbkdf2-sha256$i=abc$c2FsdHNhbHQ$AAAA",
            "$pbkdf2-sha1$i=10000$c2FsdHNhbHQ$AAAA",
            &good.replace("$i=10000$", "$i=10000$$"),
            &format!("{good}$"),
            &good[..good.len() - 2],
        ] {
            assert_eq!(PasswordHash::parse(bad), Err(HashError::Format), "{bad}");
        }
        assert_eq!(
            PasswordHash::parse(&good.replace("i=10000", "i=999")),
            Err(HashError::TooFewIterations(999))
        );
        // Hashes made before the cap on new ones still work, up to a ceiling.
        assert!(PasswordHash::parse(&good.replace("i=10000", "i=6000000")).is_ok());
        assert_eq!(
            PasswordHash::parse(&good.replace("i=10000", "i=4000000000")),
            Err(HashError::TooManyIterations(4_000_000_000))
        );
    }

    #[test]
    fn tokens() {
        let t = new_token().expect("token");
        assert_eq!(t.len(), 43);
        assert!(!t.contains(':'));
        let stored = token_hash_string(t.as_bytes());
        assert_eq!(parse_token_hash(&stored), Ok(token_digest(t.as_bytes())));
        assert_eq!(parse_token_hash("$sha256$abc"), Err(HashError::TokenFormat));
        assert_eq!(parse_token_hash(&t), Err(HashError::TokenFormat));
    }
}
