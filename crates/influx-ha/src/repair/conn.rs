//! One backend as verify and repair use it: queries paced by a shared rate limit (they run
//! against a live cluster and must not hurt it) and counted (so a test or an operator can see
//! how much they read), writes with the backend's service credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::RepairError;
use super::influxql::{Series, parse_answer};
use crate::backend::{BackendClient, SendError, WriteOutcome, classify};

/// Spaces requests out: at most one per `interval`, over every backend together.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    /// At most `per_second` requests a second; 0 means no limit.
    pub fn new(per_second: u32) -> Self {
        let interval = if per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / per_second
        };
        Self {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next slot.
    pub async fn wait(&self) {
        if self.interval.is_zero() {
            return;
        }
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Counts of what was sent, over every backend.
#[derive(Debug, Default)]
pub struct Traffic {
    /// `/query` requests (SHOW, SELECT, CREATE).
    pub queries: AtomicU64,
    /// `/write` requests.
    pub writes: AtomicU64,
    /// Points written.
    pub points: AtomicU64,
}

/// A backend for verify and repair.
#[derive(Debug, Clone)]
pub struct Conn {
    client: BackendClient,
    pacer: Arc<Pacer>,
    traffic: Arc<Traffic>,
}

/// How much of a query goes into an error message.
const QUERY_IN_ERRORS: usize = 300;

fn shorten(q: &str) -> String {
    if q.len() <= QUERY_IN_ERRORS {
        return q.to_owned();
    }
    let mut end = QUERY_IN_ERRORS;
    while !q.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &q[..end])
}

impl Conn {
    /// Wraps `client`; every `Conn` of one run shares `pacer` and `traffic`.
    pub fn new(client: BackendClient, pacer: Arc<Pacer>, traffic: Arc<Traffic>) -> Self {
        Self {
            client,
            pacer,
            traffic,
        }
    }

    /// The backend's configured name.
    pub fn name(&self) -> &str {
        self.client.name()
    }

    /// Runs one statement and returns the series of its answer (timestamps in ns).
    pub async fn select(&self, q: &str, db: Option<&str>) -> Result<Vec<Series>, RepairError> {
        self.pacer.wait().await;
        self.traffic.queries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(backend = self.name(), query = q, "verify/repair query");
        let answer = self
            .client
            .select(q, db)
            .await
            .map_err(|source| RepairError::Send {
                backend: self.name().to_owned(),
                query: shorten(q),
                source,
            })?;
        let failed = |message: String| RepairError::Query {
            backend: self.name().to_owned(),
            query: shorten(q),
            message,
        };
        if !answer.status.is_success() {
            let message = answer
                .message()
                .map(|m| String::from_utf8_lossy(&m).into_owned())
                .unwrap_or_default();
            return Err(failed(format!("answered {}: {message}", answer.status)));
        }
        parse_answer(&answer.body).map_err(failed)
    }

    /// Writes line protocol (nanosecond timestamps) into `db`.`rp`.
    pub async fn write(
        &self,
        db: &str,
        rp: &str,
        body: String,
        points: u64,
    ) -> Result<(), RepairError> {
        self.pacer.wait().await;
        self.traffic.writes.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .client
            .write(db, Some(rp), "n", Bytes::from(body))
            .await
            .map_err(|source| RepairError::Send {
                backend: self.name().to_owned(),
                query: format!("write to {db}.{rp}"),
                source,
            })?;
        match classify(&Ok(answer.clone())) {
            WriteOutcome::Ok => {
                self.traffic.points.fetch_add(points, Ordering::Relaxed);
                Ok(())
            }
            other => Err(RepairError::Write {
                backend: self.name().to_owned(),
                db: db.to_owned(),
                rp: rp.to_owned(),
                message: answer.message().map_or_else(
                    || format!("{other:?}"),
                    |m| format!("{}: {}", answer.status, String::from_utf8_lossy(&m)),
                ),
            }),
        }
    }
}

/// Whether a failed query failed because its answer was too long to read (the caller asks for
/// less).
pub fn answer_too_long(e: &RepairError) -> bool {
    matches!(
        e,
        RepairError::Send {
            source: SendError::Answer(_),
            ..
        }
    )
}
