//! What a backend's answer to a write means, decided in one place.
//!
//! | answer | outcome | what the caller does (DESIGN.md §3) |
//! |---|---|---|
//! | 2xx | [`WriteOutcome::Ok`] | counts as acknowledged |
//! | 404 `database not found…` | [`WriteOutcome::DatabaseNotFound`] | create it from a healthy backend's schema, retry |
//! | 500 `retention policy not found…` | [`WriteOutcome::RetentionPolicyNotFound`] | create it, retry |
//! | 400 `partial write…` | [`WriteOutcome::PartialWrite`] | the backend stored what it could |
//! | 401, 403 | [`WriteOutcome::AuthFailed`] | pause the backend, show it; never discard |
//! | 413 | [`WriteOutcome::TooLarge`] | split the batch |
//! | other 4xx (e.g. 400 `unable to parse`) | [`WriteOutcome::BadRequest`] | refused data: pass on / dead-letter |
//! | 5xx, timeout, connection error | [`WriteOutcome::Retryable`] | queue and retry with backoff |
//! | anything else (1xx, 3xx, a 404 that is not about a database) | [`WriteOutcome::Retryable`] | the URL probably does not point at InfluxDB 1.x: keep the data, retry, show it |

use http::StatusCode;

use super::{BackendAnswer, SendError};

/// The meaning of a backend's answer to `/write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored.
    Ok,
    /// 404 `database not found: "x"`; the message as the backend wrote it.
    DatabaseNotFound {
        /// The backend's error text.
        message: Vec<u8>,
    },
    /// 500 `retention policy not found: x`.
    RetentionPolicyNotFound {
        /// The backend's error text.
        message: Vec<u8>,
    },
    /// 400 `partial write: … dropped=N`: the valid points were stored.
    PartialWrite {
        /// The backend's error text, whole.
        message: Vec<u8>,
    },
    /// Any other 4xx except 401, 403, 408, 413 and 429: the backend refused the data.
    BadRequest {
        /// The status.
        status: StatusCode,
        /// The backend's error text (empty when it gave none).
        message: Vec<u8>,
    },
    /// 401 or 403: our service credentials are wrong or lack rights.
    AuthFailed {
        /// The status.
        status: StatusCode,
        /// The backend's error text.
        message: Vec<u8>,
    },
    /// 413: the batch is larger than the backend takes.
    TooLarge,
    /// Worth retrying later: 5xx, 408 and 429 (from a proxy), no answer in time, connection
    /// errors, unexpected answers.
    Retryable {
        /// Why, for logs and the status page.
        reason: String,
    },
}

impl WriteOutcome {
    /// Whether the backend stored the batch (all of it).
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }

    /// Whether sending the same batch again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

/// Classifies the result of [`super::BackendClient::write`].
pub fn classify(result: &Result<BackendAnswer, SendError>) -> WriteOutcome {
    let answer = match result {
        Ok(answer) => answer,
        Err(e) => {
            return WriteOutcome::Retryable {
                reason: e.to_string(),
            };
        }
    };
    let status = answer.status;
    if status.is_success() {
        return WriteOutcome::Ok;
    }
    let message = answer.message().unwrap_or_default();
    match status.as_u16() {
        404 if message.starts_with(b"database not found") => {
            WriteOutcome::DatabaseNotFound { message }
        }
        500 if message.starts_with(b"retention policy not found") => {
            WriteOutcome::RetentionPolicyNotFound { message }
        }
        400 if message.starts_with(b"partial write") => WriteOutcome::PartialWrite { message },
        401 | 403 => WriteOutcome::AuthFailed { status, message },
        413 => WriteOutcome::TooLarge,
        // InfluxDB sends neither; a proxy in front of it does, for a passing overload: the
        // data was not looked at, and refusing it would dead-letter or diverge over nothing.
        408 | 429 => WriteOutcome::Retryable {
            reason: format!("{status}: {}", String::from_utf8_lossy(&message)),
        },
        404 => WriteOutcome::Retryable {
            reason: format!(
                "unexpected 404 ({}): is the backend URL an InfluxDB 1.x?",
                String::from_utf8_lossy(&message)
            ),
        },
        400..=499 => WriteOutcome::BadRequest { status, message },
        500..=599 => WriteOutcome::Retryable {
            reason: format!("{status}: {}", String::from_utf8_lossy(&message)),
        },
        _ => WriteOutcome::Retryable {
            reason: format!("unexpected answer {status}: is the backend URL an InfluxDB 1.x?"),
        },
    }
}
