//! The headers that make a response look like InfluxDB 1.6.7's.
//!
//! Measured on influxd 1.6.7 (`/ping`, `/write`, `/query`):
//!
//! - every response: `X-Influxdb-Build: OSS` and `X-Influxdb-Version: 1.6.7~rc0`;
//! - every response from a handler (not the router's own 404 and 405): `Request-Id` and
//!   `X-Request-Id`, the same UUID;
//! - the router's 404 and 405: `Content-Type: text/plain; charset=utf-8` and
//!   `X-Content-Type-Options: nosniff`, no request id (that is Go's `http.Error`);
//! - 204 answers of `/ping` and `/write`: `Content-Type: application/json`;
//! - errors: `Content-Type: application/json`, the message in `X-Influxdb-Error`.
//!
//! **Version header.** We send exactly what the InfluxDB we stand in for sends,
//! [`INFLUXDB_VERSION`] = `1.6.7~rc0`. Clients read this header: the `influx` CLI prints it,
//! client libraries return it from `ping()`, and some pick features by it (Flux, v2 endpoints),
//! so a made-up value could change their behaviour. Our own version is in a separate header,
//! [`INFLUX_HA_VERSION_HEADER`], which InfluxDB clients ignore.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use http::header::{HeaderMap, HeaderName};

/// `X-Influxdb-Version` as influxd 1.6.7 sends it.
pub const INFLUXDB_VERSION: &str = "1.6.7~rc0";
/// `X-Influxdb-Build` of InfluxDB OSS.
pub const INFLUXDB_BUILD: &str = "OSS";
/// Header carrying influx-ha's own version.
pub const INFLUX_HA_VERSION_HEADER: &str = "x-influx-ha-version";
/// Longest `X-Influxdb-Error` value we send; the JSON body always has the whole message.
pub const MAX_ERROR_HEADER_BYTES: usize = 1024;

/// `X-Influxdb-Build`.
pub static X_INFLUXDB_BUILD: HeaderName = HeaderName::from_static("x-influxdb-build");
/// `X-Influxdb-Version`.
pub static X_INFLUXDB_VERSION: HeaderName = HeaderName::from_static("x-influxdb-version");
/// `X-Influxdb-Error`.
pub static X_INFLUXDB_ERROR: HeaderName = HeaderName::from_static("x-influxdb-error");
/// `Request-Id`.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

// === impl RequestId ===

/// The id of one request, echoed in `Request-Id` and `X-Request-Id`.
///
/// As influxd 1.6.7 does, a client's own `X-Request-Id` (or else `Request-Id`) is kept, so a
/// request can be followed through proxies; otherwise a fresh random id formatted like a
/// UUID (version 4) is made. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

/// Longest client-chosen request id that is echoed; longer ones are replaced by our own.
pub const MAX_CLIENT_REQUEST_ID_BYTES: usize = 256;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// 64 unpredictable-enough bits: std's randomly keyed SipHash over a counter and the clock.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(SEQUENCE.fetch_add(1, Ordering::Relaxed));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.finish()
}

impl RequestId {
    /// A fresh random id.
    pub fn new() -> Self {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&random_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&random_u64().to_le_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        let mut text = String::with_capacity(36);
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                text.push('-');
            }
            let _ = write!(text, "{b:02x}");
        }
        Self(HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid")))
    }

    /// The client's `X-Request-Id`, else its `Request-Id`, else a fresh id (influxd's order).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        [&X_REQUEST_ID, &REQUEST_ID]
            .into_iter()
            .filter_map(|name| headers.get(name))
            .find(|v| !v.is_empty() && v.len() <= MAX_CLIENT_REQUEST_ID_BYTES)
            .map_or_else(Self::new, |v| Self(v.clone()))
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0.as_bytes()))
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

/// Adds the headers every response carries, and the request id when there is one.
pub fn add_common_headers(headers: &mut HeaderMap, request_id: Option<&RequestId>) {
    headers.insert(
        X_INFLUXDB_BUILD.clone(),
        HeaderValue::from_static(INFLUXDB_BUILD),
    );
    headers.insert(
        X_INFLUXDB_VERSION.clone(),
        HeaderValue::from_static(INFLUXDB_VERSION),
    );
    headers.insert(
        HeaderName::from_static(INFLUX_HA_VERSION_HEADER),
        HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    if let Some(id) = request_id {
        let v = id.header_value();
        headers.insert(REQUEST_ID.clone(), v.clone());
        headers.insert(X_REQUEST_ID.clone(), v);
    }
}

/// The `X-Influxdb-Error` value of a message: at most [`MAX_ERROR_HEADER_BYTES`] bytes (cut on
/// a character boundary when the message is UTF-8), with CR, LF and other control characters
/// replaced by spaces as Go's header writer does for newlines.
pub fn error_header_value(message: &[u8]) -> HeaderValue {
    let mut end = message.len().min(MAX_ERROR_HEADER_BYTES);
    if end < message.len() {
        // The first byte left out continues a character: step back to its start (at most 3).
        let mut back = 0;
        while back < 3 && end > 0 && (message[end] & 0xc0) == 0x80 {
            end -= 1;
            back += 1;
        }
    }
    let cleaned: Vec<u8> = message[..end]
        .iter()
        .map(|&b| {
            if b < 0x20 && b != b'\t' || b == 0x7f {
                b' '
            } else {
                b
            }
        })
        .collect();
    HeaderValue::from_bytes(&cleaned).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_uuids_and_differ() {
        let a = RequestId::new().to_string();
        let b = RequestId::new().to_string();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(
            a.bytes()
                .all(|c| c == b'-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]));
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| RequestId::new().to_string()).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn client_request_ids_are_kept_as_influxd_does() {
        let mut h = HeaderMap::new();
        h.insert("request-id", HeaderValue::from_static("abc"));
        assert_eq!(RequestId::from_headers(&h).to_string(), "abc");
        h.insert("x-request-id", HeaderValue::from_static("xyz"));
        assert_eq!(RequestId::from_headers(&h).to_string(), "xyz");
        h.insert("x-request-id", HeaderValue::from_static(""));
        assert_eq!(RequestId::from_headers(&h).to_string(), "abc");
        let long = "a".repeat(MAX_CLIENT_REQUEST_ID_BYTES + 1);
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_str(&long).expect("ascii"));
        assert_eq!(RequestId::from_headers(&h).to_string().len(), 36);
        assert_eq!(
            RequestId::from_headers(&HeaderMap::new()).to_string().len(),
            36
        );
    }

    #[test]
    fn common_headers() {
        let mut h = HeaderMap::new();
        let id = RequestId::new();
        add_common_headers(&mut h, Some(&id));
        assert_eq!(h["x-influxdb-build"], "OSS");
        assert_eq!(h["x-influxdb-version"], "1.6.7~rc0");
        assert_eq!(h["request-id"], id.to_string().as_str());
        assert_eq!(h["x-request-id"], id.to_string().as_str());
        let mut h = HeaderMap::new();
        add_common_headers(&mut h, None);
        assert!(!h.contains_key("request-id"));
    }

    #[test]
    fn error_header_is_cleaned_and_capped() {
        assert_eq!(
            error_header_value(b"database is required"),
            "database is required"
        );
        assert_eq!(
            error_header_value(b"unable to parse 'a': x\nunable to parse 'b\r': y"),
            "unable to parse 'a': x unable to parse 'b ': y"
        );
        let long = vec![b'a'; 5000];
        assert_eq!(error_header_value(&long).len(), MAX_ERROR_HEADER_BYTES);
        // A multi-byte character straddling the cut is dropped whole.
        let mut s = vec![b'a'; MAX_ERROR_HEADER_BYTES - 1];
        s.extend_from_slice("é and more".as_bytes());
        let v = error_header_value(&s);
        assert_eq!(v.len(), MAX_ERROR_HEADER_BYTES - 1);
        assert!(std::str::from_utf8(v.as_bytes()).is_ok());
        // Raw non-UTF-8 bytes pass, as in Go.
        assert_eq!(error_header_value(b"x\xffy").as_bytes(), b"x\xffy");
    }
}
