//! Per-second rates from monotonic counters: samples taken every few seconds, kept for a
//! minute; a rate is (value now − oldest sample) / time between them.
//!
//! Sampling on a timer rather than per request keeps the rates independent of who polls the
//! page and how often.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Counter values by key (`b/<backend>/writes`, `l/<kind>/<addr>/lines`, …).
pub type Sample = HashMap<String, u64>;

/// How far back rates look.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Shortest span a rate is computed over (a shorter one is noise).
pub const MIN_SPAN: Duration = Duration::from_secs(1);

/// A minute of samples.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(SystemTime, Sample)>>,
}

impl Rates {
    /// Keeps `sample` taken at `at`, forgetting samples older than the window (the newest
    /// one past the window stays, so a rate always spans about a minute once there is one).
    pub fn record(&self, at: SystemTime, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back((at, sample));
        while samples.len() > 2
            && samples
                .get(1)
                .is_some_and(|(t, _)| at.duration_since(*t).unwrap_or_default() >= WINDOW)
        {
            samples.pop_front();
        }
    }

    /// The rate of `key` per second from the oldest kept sample to `current` at `now`;
    /// `None` without a sample at least [`MIN_SPAN`] old holding the key.
    pub fn rate(&self, key: &str, current: &Sample, now: SystemTime) -> Option<f64> {
        let value = *current.get(key)?;
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, old) = samples.iter().find(|(t, s)| {
            s.contains_key(key) && now.duration_since(*t).unwrap_or_default() >= MIN_SPAN
        })?;
        let span = now.duration_since(*at).ok()?.as_secs_f64();
        let before = *old.get(key)?;
        Some(value.saturating_sub(before) as f64 / span)
    }
}
