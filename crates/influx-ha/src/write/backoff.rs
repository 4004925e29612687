//! Exponential backoff with full jitter, for replay retries.

use std::time::Duration;

/// Retry delays: the ceiling doubles from `min` up to `max`; each delay is drawn uniformly
/// below the ceiling so that relays retrying against the same backend spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    ceiling: Duration,
    rng: u64,
}

impl Backoff {
    /// `min` must not exceed `max`; both are clamped to at least a millisecond.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Backoff {
            min,
            max,
            ceiling: min,
            rng: seed | 1,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64*: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let ceiling = self.ceiling.as_micros().max(1) as u64;
        let delay = Duration::from_micros(self.min.as_micros() as u64 / 2 + r % ceiling);
        self.ceiling = (self.ceiling * 2).min(self.max);
        delay.min(self.max)
    }

    /// Back to the shortest delay after a success.
    pub fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds_and_reset() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut b = Backoff::new(min, max, 7);
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= max));
        assert!(
            delays[15..].iter().any(|d| *d > Duration::from_secs(1)),
            "{delays:?}"
        );
        b.reset();
        assert!(b.next_delay() <= min + min / 2);
    }
}
