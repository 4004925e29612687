//! Every way a request can fail, and the one place that turns a failure into InfluxDB's answer.
//!
//! Status codes and texts are InfluxDB 1.6.7's where it has the case (REFERENCE.md) and
//! DESIGN.md §3's answer table for the replication cases. Overload and unavailability are
//! always 503 with `Retry-After`, never 4xx: Telegraf and other clients drop data on 4xx.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use super::compat::{RequestId, X_INFLUXDB_ERROR, add_common_headers, error_header_value};
use super::gzip::GzipError;
use super::{ResponseBody, full};
use crate::go_json;

/// Seconds clients are asked to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The `Www-Authenticate` challenge of a 401, as influxd 1.6.7 sends it (its default realm).
pub const AUTH_CHALLENGE: &str = "Basic realm=\"InfluxDB\"";

/// `Allow` of `/write`, as influxd sends it (Go prints it in random order; this is one of them).
pub const ALLOW_WRITE: &str = "OPTIONS, POST";
/// `Allow` of `/api/v2/write`.
pub const ALLOW_WRITE_V2: &str = "OPTIONS, POST";
/// `Allow` of `/ping` and `/health`.
pub const ALLOW_PING: &str = "GET, HEAD";
/// `Allow` of `/query`.
pub const ALLOW_QUERY: &str = "GET, OPTIONS, POST";

/// A failed request. [`RequestError::status`] and [`RequestError::message`] are the single
/// mapping to what the client sees; [`RequestError::into_response`] builds the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `/write` without `db`: 400.
    #[error("database is required")]
    DatabaseRequired,
    /// `consistency` is not one of any, one, quorum, all: 400.
    #[error("invalid consistency level")]
    InvalidConsistency,
    /// `/api/v2/write` with a precision other than ns, us, ms, s: 400 with InfluxDB 1.8's text
    /// (`invalid precision "x" (use ns, us, ms or s)`); the field holds the whole text.
    #[error("{0}")]
    InvalidPrecisionV2(String),
    /// `/api/v2/write` with a `bucket` that names no database: 404 with 1.8's text.
    #[error("{0}")]
    InvalidBucket(String),
    /// The body (compressed or inflated) is larger than `max_body_bytes`: 413.
    #[error("Request Entity Too Large")]
    BodyTooLarge,
    /// A `Content-Encoding: gzip` body that is not valid gzip: 400 with Go's text.
    #[error("{0}")]
    InvalidGzip(GzipError),
    /// The connection failed while the body was being read (the client went away): 400, as Go
    /// answers a body read error; the client usually never sees it.
    #[error("{0}")]
    BodyRead(String),
    /// The client took longer than `body_read_timeout` to send the body, or fell behind the
    /// pace that would end it within that time: 503, the data is not at fault and the client
    /// should retry.
    #[error("timeout reading request body")]
    BodyReadTimeout,
    /// A state-changing statement that a backend's queue could not hold, should that backend
    /// be unable to take it now (its `db` longer than 65,535 bytes, or longer than a queue
    /// record): 400, and nothing is run anywhere.
    #[error("{0}")]
    CannotQueue(String),
    /// A statement that names data by a backend's own ids (`DROP SHARD`), which mean other
    /// data on each backend: 400, and nothing is run anywhere.
    #[error("{0}")]
    PerBackend(String),
    /// `/query` without a query: 400, as 1.6 answers it.
    #[error("missing required parameter \"q\"")]
    MissingQuery,
    /// No line could be parsed: 400 with 1.6's `unable to parse …` text.
    #[error("{}", String::from_utf8_lossy(.0))]
    Unparsable(Vec<u8>),
    /// Some lines were refused (by us or by every backend): 400 with the whole
    /// `partial write: … dropped=N` text.
    #[error("{}", String::from_utf8_lossy(.0))]
    PartialWrite(Vec<u8>),
    /// Every backend that answered gave the same 4xx (e.g. 404 database not found): passed on.
    #[error("{}", String::from_utf8_lossy(message))]
    Backend {
        /// The backends' status.
        status: StatusCode,
        /// The backends' error text.
        message: Vec<u8>,
    },
    /// Consistency level not met but some backend acknowledged (the rest is queued): 500
    /// `partial write`, as InfluxDB Enterprise says it.
    #[error("partial write")]
    LevelNotMet,
    /// Consistency level not met, nothing acknowledged but queued somewhere: 500, Enterprise's
    /// text, which Telegraf counts as stored.
    #[error("write failed: hinted handoff queue not empty")]
    QueuedOnly,
    /// The write did not finish in time: 500 `timeout`, as 1.6 answers when overloaded.
    #[error("timeout")]
    Timeout,
    /// Too many bytes in flight or another capacity limit: 503 with `Retry-After`.
    #[error("{0}")]
    Overloaded(String),
    /// The write could not be stored anywhere, or the node is draining: 503 with `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
    /// A method the path does not take: 405 (Go's router text and headers).
    #[error("Method Not Allowed")]
    MethodNotAllowed {
        /// The `Allow` header value.
        allow: &'static str,
    },
    /// An unknown path: 404 (Go's router text and headers).
    #[error("404 page not found")]
    NotFound,
    /// A known endpoint influx-ha does not serve yet: 501.
    #[error("{0}")]
    NotImplemented(&'static str),
    /// A bug or an unexpected condition on our side: 500.
    #[error("{0}")]
    Internal(String),
    /// Missing or wrong credentials: 401 with 1.6.7's text and `Www-Authenticate` challenge
    /// (and, as 1.6.7 answers it, no `X-Influxdb-Error` header).
    #[error("{0}")]
    Unauthorized(crate::auth::AuthError),
    /// Good credentials that may not do this: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The client's `rate_limit` bucket is empty: 503 with `Retry-After` in seconds.
    #[error("rate limit exceeded: retry after {retry_after_secs}s")]
    RateLimited {
        /// Seconds until the client has a token again.
        retry_after_secs: u64,
    },
}

impl From<GzipError> for RequestError {
    fn from(e: GzipError) -> Self {
        Self::InvalidGzip(e)
    }
}

impl RequestError {
    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::DatabaseRequired
            | Self::InvalidConsistency
            | Self::InvalidPrecisionV2(_)
            | Self::InvalidGzip(_)
            | Self::BodyRead(_)
            | Self::Unparsable(_)
            | Self::CannotQueue(_)
            | Self::PerBackend(_)
            | Self::MissingQuery
            | Self::PartialWrite(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Backend { status, .. } => *status,
            Self::LevelNotMet | Self::QueuedOnly | Self::Timeout | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::BodyReadTimeout
            | Self::Overloaded(_)
            | Self::Unavailable(_)
            | Self::RateLimited { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotFound | Self::InvalidBucket(_) => StatusCode::NOT_FOUND,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The message as the client reads it (raw bytes: parse errors quote the client's input).
    pub fn message(&self) -> Cow<'_, [u8]> {
        match self {
            Self::Unparsable(m) | Self::PartialWrite(m) | Self::Backend { message: m, .. } => {
                Cow::Borrowed(m)
            }
            other => Cow::Owned(other.to_string().into_bytes()),
        }
    }

    /// Whether this is answered like Go's router answers (plain text, no request id).
    fn is_router_error(&self) -> bool {
        matches!(self, Self::NotFound | Self::MethodNotAllowed { .. })
    }

    /// Builds the response. `request_id` is left out for router errors, as influxd does.
    pub fn into_response(self, request_id: &RequestId) -> Response<ResponseBody> {
        let status = self.status();
        let message = self.message();
        if self.is_router_error() {
            let mut body = message.into_owned();
            body.push(b'\n');
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            if let Self::MethodNotAllowed { allow } = self {
                h.insert(ALLOW, HeaderValue::from_static(allow));
            }
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            add_common_headers(h, None);
            return resp;
        }
        let body = Bytes::from(go_json::error_body(&message));
        let header = error_header_value(&message);
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        add_common_headers(h, Some(request_id));
        if status == StatusCode::UNAUTHORIZED {
            h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(AUTH_CHALLENGE));
        } else {
            h.insert(X_INFLUXDB_ERROR.clone(), header);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = match self {
                Self::RateLimited { retry_after_secs } => retry_after_secs,
                _ => u64::from(RETRY_AFTER_SECS),
            };
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: the connection cannot be reused.
            h.insert(CONNECTION, HeaderValue::from_static("close"));
            // Go's (older) reason phrase, not RFC 7231's "Payload Too Large".
            resp.extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(
                    b"Request Entity Too Large",
                ));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn answer(e: RequestError) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let resp = e.into_response(&RequestId::new());
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.expect("in-memory body").to_bytes();
        (parts.status, parts.headers, bytes.to_vec())
    }

    #[tokio::test]
    async fn influxdb_texts_and_statuses() {
        let cases: Vec<(RequestError, u16, &[u8])> = vec![
            (
                RequestError::DatabaseRequired,
                400,
                b"{\"error\":\"database is required\"}\n",
            ),
            (
                RequestError::InvalidConsistency,
                400,
                b"{\"error\":\"invalid consistency level\"}\n",
            ),
            (
                RequestError::BodyTooLarge,
                413,
                b"{\"error\":\"Request Entity Too Large\"}\n",
            ),
            (
                RequestError::InvalidGzip(GzipError::InvalidHeader),
                400,
                b"{\"error\":\"gzip: invalid header\"}\n",
            ),
            (
                RequestError::InvalidGzip(GzipError::UnexpectedEof),
                400,
                b"{\"error\":\"unexpected EOF\"}\n",
            ),
            (
                RequestError::Unparsable(
                    b"unable to parse 'cpu,host=a usage=': missing field value".to_vec(),
                ),
                400,
                b"{\"error\":\"unable to parse 'cpu,host=a usage=': missing field value\"}\n",
            ),
            (
                RequestError::Backend {
                    status: StatusCode::NOT_FOUND,
                    message: b"database not found: \"nosuchdb\"".to_vec(),
                },
                404,
                b"{\"error\":\"database not found: \\\"nosuchdb\\\"\"}\n",
            ),
            (
                RequestError::LevelNotMet,
                500,
                b"{\"error\":\"partial write\"}\n",
            ),
            (
                RequestError::QueuedOnly,
                500,
                b"{\"error\":\"write failed: hinted handoff queue not empty\"}\n",
            ),
            (RequestError::Timeout, 500, b"{\"error\":\"timeout\"}\n"),
            (
                RequestError::NotImplemented("query routing is not implemented yet"),
                501,
                b"{\"error\":\"query routing is not implemented yet\"}\n",
            ),
        ];
        for (e, status, body) in cases {
            let text = e.to_string();
            let (s, h, b) = answer(e).await;
            assert_eq!(s.as_u16(), status, "{text}");
            assert_eq!(b, body, "{text}");
            assert_eq!(h["content-type"], "application/json");
            assert_eq!(h["x-influxdb-error"], text.as_str());
            assert_eq!(h["x-influxdb-build"], "OSS");
            assert!(h.contains_key("request-id") && h.contains_key("x-request-id"));
            assert!(!h.contains_key("retry-after"), "{text}");
        }
    }

    #[tokio::test]
    async fn overload_is_503_with_retry_after_never_4xx() {
        for e in [
            RequestError::Overloaded("too many bytes in flight".into()),
            RequestError::Unavailable("shutting down".into()),
            RequestError::BodyReadTimeout,
        ] {
            let (s, h, _) = answer(e).await;
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(h["retry-after"], "1");
        }
    }

    #[tokio::test]
    async fn router_errors_are_plain_text() {
        let (s, h, b) = answer(RequestError::MethodNotAllowed { allow: ALLOW_WRITE }).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(b, b"Method Not Allowed\n");
        assert_eq!(h["allow"], "OPTIONS, POST");
        assert_eq!(h["content-type"], "text/plain; charset=utf-8");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-influxdb-version"], "1.6.7~rc0");
        assert!(!h.contains_key("request-id"));
        assert!(!h.contains_key("x-influxdb-error"));

        let (s, h, b) = answer(RequestError::NotFound).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(b, b"404 page not found\n");
        assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    }

    #[tokio::test]
    async fn too_large_closes_the_connection() {
        let (_, h, _) = answer(RequestError::BodyTooLarge).await;
        assert_eq!(h["connection"], "close");
    }

    #[tokio::test]
    async fn raw_messages_keep_their_bytes() {
        let msg =
            b"unable to parse 'cpu v=\xff': invalid number\nunable to parse 'x<y': bad".to_vec();
        let (_, h, b) = answer(RequestError::Unparsable(msg)).await;
        assert_eq!(
            b,
            b"{\"error\":\"unable to parse 'cpu v=\\ufffd': invalid number\\nunable to parse 'x\\u003cy': bad\"}\n"
        );
        assert_eq!(
            h["x-influxdb-error"].as_bytes(),
            b"unable to parse 'cpu v=\xff': invalid number unable to parse 'x<y': bad"
        );
    }
}
