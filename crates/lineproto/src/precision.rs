//! Timestamp precision, spelled the way each write endpoint spells it.

use std::fmt;

/// Units of a line's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

/// A `/api/v2/write` precision outside `ns|us|ms|s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPrecision(pub String);

impl fmt::Display for InvalidPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid precision {:?}: expected one of ns, us, ms, s",
            self.0
        )
    }
}

impl std::error::Error for InvalidPrecision {}

impl Precision {
    /// The `precision` parameter of `/write` as InfluxDB 1.6.7 reads it: `u`, `ms`, `s`, `m`,
    /// `h`; everything else (`n`, `ns`, `us`, empty, unknown) means nanoseconds.
    pub fn from_v1_param(s: &str) -> Self {
        match s {
            "u" => Self::Microseconds,
            "ms" => Self::Milliseconds,
            "s" => Self::Seconds,
            "m" => Self::Minutes,
            "h" => Self::Hours,
            _ => Self::Nanoseconds,
        }
    }

    /// The `precision` parameter of `/api/v2/write`: `ns` (or absent), `us`, `ms`, `s`.
    pub fn from_v2_param(s: &str) -> Result<Self, InvalidPrecision> {
        match s {
            "" | "ns" => Ok(Self::Nanoseconds),
            "us" => Ok(Self::Microseconds),
            "ms" => Ok(Self::Milliseconds),
            "s" => Ok(Self::Seconds),
            other => Err(InvalidPrecision(other.to_owned())),
        }
    }

    /// The spelling a 1.6 backend's `/write` understands for this precision.
    pub fn v1_param(self) -> &'static str {
        match self {
            Self::Nanoseconds => "n",
            Self::Microseconds => "u",
            Self::Milliseconds => "ms",
            Self::Seconds => "s",
            Self::Minutes => "m",
            Self::Hours => "h",
        }
    }

    /// Nanoseconds in one unit.
    pub fn nanos(self) -> i64 {
        match self {
            Self::Nanoseconds => 1,
            Self::Microseconds => 1_000,
            Self::Milliseconds => 1_000_000,
            Self::Seconds => 1_000_000_000,
            Self::Minutes => 60_000_000_000,
            Self::Hours => 3_600_000_000_000,
        }
    }

    /// `now` (Unix nanoseconds) in this precision's units, truncated as InfluxDB truncates the
    /// server time it gives a point without a timestamp.
    pub fn stamp(self, now_unix_nanos: i64) -> i64 {
        now_unix_nanos.div_euclid(self.nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_spellings_match_influxdb_1_6_7() {
        for (s, p) in [
            ("u", Precision::Microseconds),
            ("ms", Precision::Milliseconds),
            ("s", Precision::Seconds),
            ("m", Precision::Minutes),
            ("h", Precision::Hours),
            ("n", Precision::Nanoseconds),
            ("ns", Precision::Nanoseconds),
            ("us", Precision::Nanoseconds),
            ("", Precision::Nanoseconds),
            ("xx", Precision::Nanoseconds),
        ] {
            assert_eq!(Precision::from_v1_param(s), p, "{s:?}");
        }
    }

    #[test]
    fn v2_spellings() {
        assert_eq!(Precision::from_v2_param("us"), Ok(Precision::Microseconds));
        assert_eq!(Precision::from_v2_param("ns"), Ok(Precision::Nanoseconds));
        assert!(Precision::from_v2_param("u").is_err());
        assert!(Precision::from_v2_param("h").is_err());
    }

    #[test]
    fn v1_param_round_trips() {
        for p in [
            Precision::Nanoseconds,
            Precision::Microseconds,
            Precision::Milliseconds,
            Precision::Seconds,
            Precision::Minutes,
            Precision::Hours,
        ] {
            assert_eq!(Precision::from_v1_param(p.v1_param()), p);
        }
    }

    #[test]
    fn stamp_truncates() {
        assert_eq!(
            Precision::Seconds.stamp(1_700_000_000_999_999_999),
            1_700_000_000
        );
        assert_eq!(Precision::Nanoseconds.stamp(42), 42);
    }
}
