//! `[anti_entropy]`: the background check that compares the recent past on every backend and
//! copies back what differs (see `crate::repair::background`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Checker;
use crate::units::{HumanDuration, format_duration};

/// Default period of the check.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Default span of the recent past a check compares.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Default most recent span a check leaves out: writes still on their way.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(60);
/// Default pace, requests a second over every backend (as `influx-ha verify --rate`).
pub const DEFAULT_RATE: u32 = 20;

/// `[anti_entropy]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AntiEntropyConfig {
    /// How often the recent past is compared.
    pub check_interval: Duration,
    /// How far back a check looks.
    pub window: Duration,
    /// The most recent span a check leaves out.
    pub settle: Duration,
    /// Copy what differs back (as `influx-ha repair`), or only report it.
    pub auto_repair: bool,
    /// Requests a second at most, over every backend (0: no limit).
    pub rate: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAntiEntropy {
    check_interval: Option<Spanned<HumanDuration>>,
    window: Option<Spanned<HumanDuration>>,
    settle: Option<Spanned<HumanDuration>>,
    auto_repair: Option<bool>,
    rate: Option<Spanned<i64>>,
}

impl RawAntiEntropy {
    pub(super) fn validate(&self, c: &mut Checker<'_>) -> AntiEntropyConfig {
        let check_interval = c.positive(
            &self.check_interval,
            "anti_entropy.check_interval",
            DEFAULT_CHECK_INTERVAL,
        );
        let window = c.positive(&self.window, "anti_entropy.window", DEFAULT_WINDOW);
        let settle = self
            .settle
            .as_ref()
            .map_or(DEFAULT_SETTLE, |s| s.get_ref().0);
        if settle >= window {
            let message = format!(
                "settle ({}) must be shorter than window ({})",
                format_duration(settle),
                format_duration(window)
            );
            match (&self.settle, &self.window) {
                (Some(s), _) => c.at(s, "anti_entropy.settle", message),
                (None, Some(w)) => c.at(w, "anti_entropy.window", message),
                (None, None) => {}
            }
        }
        let rate = match &self.rate {
            None => DEFAULT_RATE,
            Some(r) => u32::try_from(*r.get_ref()).unwrap_or_else(|_| {
                c.at(r, "anti_entropy.rate", "must be 0 (no limit) or more");
                DEFAULT_RATE
            }),
        };
        AntiEntropyConfig {
            check_interval,
            window,
            settle,
            auto_repair: self.auto_repair.unwrap_or(true),
            rate,
        }
    }
}
