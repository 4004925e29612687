//! Human-friendly sizes (`"10GiB"`, `"25MB"`, `25000000`) and durations (`"7d"`, `"250ms"`).
//!
//! Small, strict parsers of our own so configuration errors can say exactly what was wrong.
//! Sizes take an optional unit: `B`, decimal `KB MB GB TB` (powers of 1000) or binary
//! `KiB MiB GiB TiB` (powers of 1024); the unit is case-sensitive except for a plain `b`/`B`,
//! and `K`, `M`, `G`, `T` alone are refused as ambiguous. Durations are one number and one unit:
//! `ms`, `s`, `m`, `h`, `d`, `w`; `0` alone is accepted.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Why a size or duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Nothing to parse.
    #[error("empty value")]
    Empty,
    /// The value has no leading digits.
    #[error("{0:?} does not start with a number")]
    NoNumber(String),
    /// The unit after the number is not one we know.
    #[error("unknown unit {unit:?} in {value:?} (use {expected})")]
    UnknownUnit {
        /// The whole value, as written.
        value: String,
        /// The unit as written.
        unit: String,
        /// The units that would have been accepted.
        expected: &'static str,
    },
    /// The value does not fit in 64 bits.
    #[error("{0:?} is too large")]
    Overflow(String),
}

const SIZE_UNITS: &str = "B, KB, MB, GB, TB, KiB, MiB, GiB or TiB";
const DURATION_UNITS: &str = "ms, s, m, h, d or w";

/// Splits `"10GiB"` into `(10, "GiB")`; whitespace between number and unit is allowed.
fn split_number(value: &str) -> Result<(u64, &str), UnitError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty);
    }
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(trimmed.len());
    let digits = &trimmed[..digits_end];
    if digits.is_empty() || digits.starts_with('_') {
        return Err(UnitError::NoNumber(value.to_owned()));
    }
    let mut number: u64 = 0;
    for c in digits.chars().filter(|c| *c != '_') {
        let d = u64::from(c as u8 - b'0');
        number = number
            .checked_mul(10)
            .and_then(|n| n.checked_add(d))
            .ok_or_else(|| UnitError::Overflow(value.to_owned()))?;
    }
    Ok((number, trimmed[digits_end..].trim_start()))
}

/// Parses a byte size: `"10GiB"`, `"512MiB"`, `"25MB"`, `"1000"`, `"1000B"`.
pub fn parse_size(value: &str) -> Result<u64, UnitError> {
    let (number, unit) = split_number(value)?;
    let factor: u64 = match unit {
        "" | "B" | "b" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            return Err(UnitError::UnknownUnit {
                value: value.to_owned(),
                unit: unit.to_owned(),
                expected: SIZE_UNITS,
            });
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| UnitError::Overflow(value.to_owned()))
}

/// Parses a duration: `"7d"`, `"250ms"`, `"10s"`, `"0"`.
pub fn parse_duration(value: &str) -> Result<Duration, UnitError> {
    let (number, unit) = split_number(value)?;
    let millis_per_unit: u64 = match unit {
        "" if number == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => {
            return Err(UnitError::UnknownUnit {
                value: value.to_owned(),
                unit: unit.to_owned(),
                expected: DURATION_UNITS,
            });
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| UnitError::Overflow(value.to_owned()))
}

/// Formats a byte count the way an operator reads it: exact binary units when they divide
/// evenly (`10 GiB`), otherwise plain bytes.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, factor) in UNITS {
        if bytes >= factor && bytes.checked_rem(factor) == Some(0) {
            return format!("{} {name}", bytes / factor);
        }
    }
    format!("{bytes} bytes")
}

/// Formats a duration in the largest unit that divides it evenly (`7d`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    const UNITS: [(&str, u128); 5] = [
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ];
    for (name, factor) in UNITS {
        if ms.checked_rem(factor) == Some(0) {
            return format!("{}{name}", ms / factor);
        }
    }
    format!("{ms}ms")
}

// === impl ByteSize ===

/// A byte size read from the config: a string with a unit or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a size such as \"10GiB\", \"25MB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size must not be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

// === impl HumanDuration ===

/// A duration read from the config: `"7d"`, `"250ms"`, `"10s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a duration such as \"10s\", \"250ms\" or \"7d\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                if v == 0 {
                    Ok(HumanDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "a duration needs a unit: write \"{v}s\" or \"{v}ms\""
                    )))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("25MB"), Ok(25_000_000));
        assert_eq!(parse_size("25000000"), Ok(25_000_000));
        assert_eq!(parse_size("25_000_000"), Ok(25_000_000));
        assert_eq!(parse_size("1 KiB"), Ok(1024));
        assert_eq!(parse_size(" 7B "), Ok(7));
        assert_eq!(parse_size("3kB"), Ok(3000));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(parse_size(""), Err(UnitError::Empty));
        assert!(matches!(parse_size("GiB"), Err(UnitError::NoNumber(_))));
        assert!(matches!(parse_size("-1"), Err(UnitError::NoNumber(_))));
        assert!(matches!(
            parse_size("1.5GiB"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10G"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10gib"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(UnitError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("20000000TiB"),
            Err(UnitError::Overflow(_))
        ));
        let msg = parse_size("10XB").expect_err("unknown unit").to_string();
        assert!(msg.contains("unknown unit \"XB\""), "{msg}");
        assert!(msg.contains("GiB"), "{msg}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations() {
        assert!(matches!(
            parse_duration("10"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1.5s"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("10us"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(parse_duration("s"), Err(UnitError::NoNumber(_))));
        assert_eq!(parse_duration(" "), Err(UnitError::Empty));
        assert!(matches!(
            parse_duration("99999999999999999w"),
            Err(UnitError::Overflow(_))
        ));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(10 << 30), "10 GiB");
        assert_eq!(format_size(25_000_000), "25000000 bytes");
        assert_eq!(format_size(1536), "1536 bytes");
        assert_eq!(format_size(3072), "3 KiB");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "1w");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[derive(serde::Deserialize)]
    struct T {
        s: ByteSize,
        d: HumanDuration,
    }

    #[test]
    fn deserialize() {
        let t: T = toml::from_str("s = \"1MiB\"\nd = \"1s\"").expect("valid");
        assert_eq!(t.s, ByteSize(1 << 20));
        assert_eq!(t.d, HumanDuration(Duration::from_secs(1)));
        let t: T = toml::from_str("s = 42\nd = 0").expect("valid");
        assert_eq!(t.s, ByteSize(42));
        assert_eq!(t.d, HumanDuration(Duration::ZERO));
        let err = toml::from_str::<T>("s = -1\nd = 0")
            .err()
            .expect("negative");
        assert!(err.to_string().contains("negative"), "{err}");
        let err = toml::from_str::<T>("s = 1\nd = 10")
            .err()
            .expect("unitless");
        assert!(err.to_string().contains("needs a unit"), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
