//! Parameters shared by the config file and the HTTP API: consistency levels and precisions.

use std::fmt;

use serde::Deserialize;

/// How many backends must acknowledge a write before the client gets a 2xx (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// One backend acknowledged *or* the batch was queued durably somewhere.
    Any,
    /// One backend acknowledged.
    One,
    /// A majority (`N/2 + 1`) of backends acknowledged.
    Quorum,
    /// Every backend acknowledged.
    All,
}

impl Consistency {
    /// Parses the `consistency` query parameter as InfluxDB 1.6 does (case-insensitive).
    ///
    /// An empty value means "not given" and is handled by the caller (1.6 checks `!= ""` first).
    pub fn from_param(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "any" => Some(Self::Any),
            "one" => Some(Self::One),
            "quorum" => Some(Self::Quorum),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// Backend acknowledgements needed with `backends` backends (`Any` needs one ack *or* one
    /// durable queue append; the fan-out tells those apart).
    pub fn required_acks(self, backends: usize) -> usize {
        match self {
            Self::Any | Self::One => 1.min(backends),
            Self::Quorum => backends / 2 + 1,
            Self::All => backends,
        }
    }

    /// The lower-case name used in the config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::One => "one",
            Self::Quorum => "quorum",
            Self::All => "all",
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Timestamp precision of line protocol received on a UDP or TCP listener (config only).
///
/// Unlike InfluxDB 1.6's HTTP API, where `us` silently means nanoseconds, the config reads `us`
/// as microseconds: a config file is not the wire, and it should do what the operator means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Precision {
    /// Nanoseconds (the default).
    #[default]
    #[serde(rename = "ns", alias = "n")]
    Nanoseconds,
    /// Microseconds.
    #[serde(rename = "u", alias = "us", alias = "µs")]
    Microseconds,
    /// Milliseconds.
    #[serde(rename = "ms")]
    Milliseconds,
    /// Seconds.
    #[serde(rename = "s")]
    Seconds,
    /// Minutes.
    #[serde(rename = "m")]
    Minutes,
    /// Hours.
    #[serde(rename = "h")]
    Hours,
}

impl Precision {
    /// The value of InfluxDB 1.6's `/write?precision=` that means this precision.
    pub fn as_v1_param(self) -> &'static str {
        lineproto::Precision::from(self).v1_param()
    }
}

impl From<Precision> for lineproto::Precision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::Nanoseconds => Self::Nanoseconds,
            Precision::Microseconds => Self::Microseconds,
            Precision::Milliseconds => Self::Milliseconds,
            Precision::Seconds => Self::Seconds,
            Precision::Minutes => Self::Minutes,
            Precision::Hours => Self::Hours,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nanoseconds => "ns",
            Self::Microseconds => "us",
            other => other.as_v1_param(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_params() {
        assert_eq!(Consistency::from_param("any"), Some(Consistency::Any));
        assert_eq!(Consistency::from_param("ONE"), Some(Consistency::One));
        assert_eq!(Consistency::from_param("Quorum"), Some(Consistency::Quorum));
        assert_eq!(Consistency::from_param("all"), Some(Consistency::All));
        assert_eq!(Consistency::from_param("bogus"), None);
        assert_eq!(Consistency::from_param(""), None);
    }

    #[test]
    fn required_acks() {
        assert_eq!(Consistency::Any.required_acks(3), 1);
        assert_eq!(Consistency::One.required_acks(3), 1);
        assert_eq!(Consistency::Quorum.required_acks(1), 1);
        assert_eq!(Consistency::Quorum.required_acks(2), 2);
        assert_eq!(Consistency::Quorum.required_acks(3), 2);
        assert_eq!(Consistency::Quorum.required_acks(4), 3);
        assert_eq!(Consistency::All.required_acks(3), 3);
    }

    #[test]
    fn precision_params() {
        assert_eq!(Precision::Microseconds.as_v1_param(), "u");
        assert_eq!(Precision::Nanoseconds.as_v1_param(), "n");
        assert_eq!(Precision::Hours.to_string(), "h");
        assert_eq!(Precision::Microseconds.to_string(), "us");
    }
}
