//! `[http] rate_limit`: a token bucket per client (address or user).
//!
//! Each client has a bucket of `burst` requests that refills at `requests_per_second`; a
//! request takes one token. Without a token the answer is 503 with `Retry-After` (the seconds
//! until the next token, rounded up) — never a 4xx, on which Telegraf and other agents drop
//! their data instead of retrying. Buckets of clients gone quiet are forgotten once there are
//! many of them, so the memory stays bounded by the number of active clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// Buckets kept before full (idle) ones are dropped.
pub const PRUNE_AT: usize = 65_536;

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A client address.
    Addr(IpAddr),
    /// An authenticated user or token name.
    User(Arc<str>),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of every client.
#[derive(Debug)]
pub struct RateLimiter {
    /// The configured rate and burst.
    pub limit: RateLimit,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

impl RateLimiter {
    /// A limiter with no client seen yet.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key` at `now`; `Err` holds how long until one is free.
    pub fn take(&self, key: ClientKey, now: Instant) -> Result<(), Duration> {
        let rate = self.limit.requests_per_second;
        let burst = f64::from(self.limit.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(&key) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            // A rate so slow that the wait overflows a `Duration` waits for ever in effect.
            Err(Duration::try_from_secs_f64((1.0 - bucket.tokens) / rate).unwrap_or(Duration::MAX))
        }
    }

    /// Clients with a bucket right now.
    pub fn clients(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitKey;

    fn limiter(rps: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit {
            requests_per_second: rps,
            burst,
            per: RateLimitKey::Address,
        })
    }

    fn addr(last: u8) -> ClientKey {
        ClientKey::Addr(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limiter(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take(addr(1), t0), Ok(()));
        }
        let wait = l.take(addr(1), t0).expect_err("burst used up");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        // Another client has its own bucket.
        assert_eq!(l.take(addr(2), t0), Ok(()));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.take(addr(1), t1), Ok(()));
        assert!(l.take(addr(1), t1).is_err());
        // Long idle: the bucket is full again, never fuller than the burst.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.take(addr(1), t2), Ok(()));
        }
        assert!(l.take(addr(1), t2).is_err());
    }

    #[test]
    fn slow_rates_ask_for_longer_waits() {
        let l = limiter(0.1, 1);
        let t0 = Instant::now();
        assert_eq!(l.take(ClientKey::User(Arc::from("u")), t0), Ok(()));
        let wait = l
            .take(ClientKey::User(Arc::from("u")), t0)
            .expect_err("limited");
        assert_eq!(retry_after_secs(wait), 10);
        // A rate too slow for a `Duration` to hold the wait is refused, not a panic.
        let l = limiter(1e-300, 1);
        assert_eq!(l.take(addr(1), t0), Ok(()));
        let wait = l.take(addr(1), t0).expect_err("limited");
        assert_eq!(retry_after_secs(wait), u64::MAX);
        assert_eq!(retry_after_secs(Duration::from_millis(10_001)), 11);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn idle_clients_are_forgotten_when_there_are_many() {
        let l = limiter(1000.0, 1);
        let t0 = Instant::now();
        for i in 0..PRUNE_AT as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert_eq!(l.take(ClientKey::Addr(ip), t0), Ok(()));
        }
        assert_eq!(l.clients(), PRUNE_AT);
        // A second later every bucket is full again: a new client makes room.
        assert_eq!(l.take(addr(9), t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(l.clients(), 1);
    }
}
