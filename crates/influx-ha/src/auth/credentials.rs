//! Reading a client's credentials from a request exactly as InfluxDB 1.6's `parseCredentials`
//! does, plus 1.8's `Authorization: Token user:password` and influx-ha's own tokens.
//!
//! Order (1.6): `u` and `p` URL query parameters when both are non-empty (never the form body
//! of a POST); else the `Authorization` header: `Bearer X` (1.6 refuses JWTs without a shared
//! secret, and so do we), `Token X` (1.8), then HTTP Basic (scheme compared ignoring case,
//! strict base64 with padding, as Go's `Request.BasicAuth`).

use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::base64;
use crate::http::query::QueryParams;

/// What the client presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    /// A user name and password (`u`/`p`, Basic, or `Token user:password`).
    User {
        /// The user name (may be empty: refused with 1.6's `username required`).
        name: String,
        /// The password, as bytes.
        password: Vec<u8>,
    },
    /// `Authorization: Token X` where `X` has no `:`: one of the configured tokens.
    Token(Vec<u8>),
    /// `Authorization: Bearer X` (a JWT in 1.6).
    Bearer,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User { name, .. } => f
                .debug_struct("User")
                .field("name", name)
                .finish_non_exhaustive(),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::Bearer => f.write_str("Bearer"),
        }
    }
}

/// Reads the credentials of a request; `None` when there are none 1.6 can read (answered 401
/// `unable to parse authentication credentials`).
pub fn presented(headers: &HeaderMap, query: Option<&str>) -> Option<Presented> {
    let params = QueryParams::parse(query);
    let (u, p) = (params.get("u"), params.get("p"));
    if !u.is_empty() && !p.is_empty() {
        return Some(Presented::User {
            name: u.to_owned(),
            password: p.as_bytes().to_vec(),
        });
    }
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    if value.is_empty() {
        return None;
    }
    let mut parts = value.split(|&b| b == b' ');
    if let (Some(scheme), Some(rest), None) = (parts.next(), parts.next(), parts.next()) {
        match scheme {
            b"Bearer" => return Some(Presented::Bearer),
            b"Token" => match rest.iter().position(|&b| b == b':') {
                Some(i) => {
                    return Some(Presented::User {
                        name: String::from_utf8_lossy(&rest[..i]).into_owned(),
                        password: rest[i + 1..].to_vec(),
                    });
                }
                None if !rest.is_empty() => return Some(Presented::Token(rest.to_vec())),
                None => {}
            },
            _ => {}
        }
    }
    basic(value)
}

/// Go's `parseBasicAuth`.
fn basic(value: &[u8]) -> Option<Presented> {
    const PREFIX: &[u8] = b"Basic ";
    if value.len() < PREFIX.len() || !value[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let decoded = base64::decode_padded(&value[PREFIX.len()..])?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(Presented::User {
        name: String::from_utf8_lossy(&decoded[..colon]).into_owned(),
        password: decoded[colon + 1..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("ascii"));
        h
    }

    fn user(name: &str, password: &str) -> Option<Presented> {
        Some(Presented::User {
            name: name.to_owned(),
            password: password.as_bytes().to_vec(),
        })
    }

    #[test]
    fn query_parameters_need_both() {
        let none = HeaderMap::new();
        assert_eq!(presented(&none, Some("u=a&p=b&db=x")), user("a", "b"));
        assert_eq!(
            presented(&none, Some("u=a%20b&p=c%2Bd")),
            user("a b", "c+d")
        );
        assert_eq!(presented(&none, Some("u=a")), None);
        assert_eq!(presented(&none, Some("p=a")), None);
        assert_eq!(presented(&none, None), None);
        // u alone falls through to the header, as in 1.6.
        let h = with_auth("Basic YWRtaW46c2VjcmV0");
        assert_eq!(presented(&h, Some("u=x")), user("admin", "secret"));
        // Both parameters win over the header.
        assert_eq!(presented(&h, Some("u=x&p=y")), user("x", "y"));
    }

    #[test]
    fn basic_as_go_reads_it() {
        assert_eq!(
            presented(&with_auth("Basic YWRtaW46c2VjcmV0"), None),
            user("admin", "secret")
        );
        assert_eq!(
            presented(&with_auth("basic YWRtaW46c2VjcmV0"), None),
            user("admin", "secret")
        );
        // ":secret": empty user name (1.6: `username required`).
        assert_eq!(
            presented(&with_auth("Basic OnNlY3JldA=="), None),
            user("", "secret")
        );
        // A password may contain ':'.
        assert_eq!(
            presented(&with_auth("Basic YTpiOmM="), None),
            user("a", "b:c")
        );
        for bad in [
            "Basic !!!",
            "Basic YWRtaW4=",
            "Basic",
            "Basic YWRtaW46c2VjcmV0 x",
            "Digest x",
        ] {
            assert_eq!(presented(&with_auth(bad), None), None, "{bad}");
        }
    }

    #[test]
    fn token_and_bearer() {
        assert_eq!(
            presented(&with_auth("Token admin:secret"), None),
            user("admin", "secret")
        );
        assert_eq!(
            presented(&with_auth("Token abc"), None),
            Some(Presented::Token(b"abc".to_vec()))
        );
        assert_eq!(
            presented(&with_auth("Bearer abc"), None),
            Some(Presented::Bearer)
        );
        // Not two parts: Basic parsing, which fails.
        assert_eq!(presented(&with_auth("Bearer"), None), None);
        assert_eq!(presented(&with_auth("Token a b"), None), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let shown = format!("{:?}", user("admin", "hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
        let shown = format!("{:?}", Presented::Token(b"tok123".to_vec()));
        assert!(!shown.contains("tok123"), "{shown}");
    }
}
