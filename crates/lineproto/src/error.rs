//! Why a line is refused, worded byte for byte as InfluxDB 1.6.7 words it.

use std::fmt;

/// The smallest and largest timestamps InfluxDB 1.6 stores, in nanoseconds. The two lowest
/// int64 values and the highest one are sentinels inside InfluxDB.
pub const MIN_NANO_TIME: i64 = i64::MIN + 2;
/// See [`MIN_NANO_TIME`].
pub const MAX_NANO_TIME: i64 = i64::MAX - 1;

/// InfluxDB's limit on a series key plus field key.
pub const MAX_KEY_LENGTH: usize = 65535;

/// A line InfluxDB 1.6's parser refuses, with the parser's own reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    MissingMeasurement,
    MissingFields,
    MissingTagKey,
    MissingTagValue,
    InvalidTagFormat,
    DuplicateTags,
    /// The series key (plus a field key) is longer than [`MAX_KEY_LENGTH`].
    MaxKeyLength(usize),
    MissingFieldKey,
    MissingFieldValue,
    InvalidNumber,
    InvalidFloat,
    /// An `i` integer outside int64: the digits, and Go's `strconv` reason.
    IntegerRange(Vec<u8>),
    InvalidBoolean,
    UnbalancedQuotes,
    InvalidFieldFormat,
    /// A field key whose `=` the field walker reads as escaped: the raw field section.
    InvalidValue(Vec<u8>),
    BadTimestamp,
    /// The timestamp is only `-`: Go's `strconv.ParseInt` reports invalid syntax.
    TimestampSyntax(Vec<u8>),
    /// The timestamp digits overflow int64.
    TimestampOverflow(Vec<u8>),
    TimeOutOfRange,
    /// Something other than spaces follows the timestamp.
    PointInvalid,
    /// A line with exactly 100, 200, 400, … tags: InfluxDB 1.6.7's parser then indexes past
    /// the end of its tag table and fails the whole request with a 500. Refused here so that
    /// it is never forwarded, where it would fail every retry.
    CrashingTagCount(usize),
    /// A string field value that is one `"`: InfluxDB 1.6.7's storage layer slices it out of
    /// bounds and the whole process dies. Never forwarded.
    CrashingQuote,
    /// A field value (as the storage engine splits the fields) that the engine cannot read
    /// although the parser accepted the line: InfluxDB fails the whole request with a 500.
    /// Holds the value. Never forwarded.
    EngineFails(Vec<u8>),
    /// A line without timestamp whose last byte is `\`: the timestamp influx-ha appends would
    /// be escaped into the field value, so the line cannot be stamped.
    Unstampable,
    /// A line without timestamp that runs on past a line break (InfluxDB's line splitter took
    /// a quote for an open string) where a timestamp appended at its end would not be read as
    /// its timestamp: every backend would stamp it with its own clock.
    UnstampableAcrossLines,
}

impl ParseError {
    /// Appends the reason, as InfluxDB words it, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let text: &str = match self {
            Self::MissingMeasurement => "missing measurement",
            Self::MissingFields => "missing fields",
            Self::MissingTagKey => "missing tag key",
            Self::MissingTagValue => "missing tag value",
            Self::InvalidTagFormat => "invalid tag format",
            Self::DuplicateTags => "duplicate tags",
            Self::MaxKeyLength(n) => {
                out.extend_from_slice(
                    format!("max key length exceeded: {n} > {MAX_KEY_LENGTH}").as_bytes(),
                );
                return;
            }
            Self::MissingFieldKey => "missing field key",
            Self::MissingFieldValue => "missing field value",
            Self::InvalidNumber => "invalid number",
            Self::InvalidFloat => "invalid float",
            Self::IntegerRange(digits) => {
                out.extend_from_slice(b"unable to parse integer ");
                out.extend_from_slice(digits);
                out.extend_from_slice(b": ");
                go_parse_int_error(out, digits, "value out of range");
                return;
            }
            Self::InvalidBoolean => "invalid boolean",
            Self::UnbalancedQuotes => "unbalanced quotes",
            Self::InvalidFieldFormat => "invalid field format",
            Self::InvalidValue(key) => {
                out.extend_from_slice(b"invalid value: field-key=");
                out.extend_from_slice(key);
                return;
            }
            Self::BadTimestamp => "bad timestamp",
            Self::TimestampSyntax(ts) => {
                go_parse_int_error(out, ts, "invalid syntax");
                return;
            }
            Self::TimestampOverflow(ts) => {
                go_parse_int_error(out, ts, "value out of range");
                return;
            }
            Self::TimeOutOfRange => {
                out.extend_from_slice(
                    format!("time outside range {MIN_NANO_TIME} - {MAX_NANO_TIME}").as_bytes(),
                );
                return;
            }
            Self::PointInvalid => "point is invalid",
            Self::CrashingTagCount(n) => {
                out.extend_from_slice(
                    format!(
                        "{n} tags: InfluxDB 1.6 fails the whole request on exactly 100, 200, \
                         400, ... tags; add or remove a tag"
                    )
                    .as_bytes(),
                );
                return;
            }
            Self::CrashingQuote => {
                "a string field value of a single '\"' crashes InfluxDB 1.6; write \"\\\"\""
            }
            Self::EngineFails(value) => {
                out.extend_from_slice(b"InfluxDB 1.6 parses this line but its storage engine cannot read the field value '");
                out.extend_from_slice(value);
                out.extend_from_slice(b"' and fails the whole request; check the escaping");
                return;
            }
            Self::Unstampable => {
                "a line without timestamp cannot end in a backslash: the timestamp added at \
                 ingest would be escaped; send a timestamp"
            }
            Self::UnstampableAcrossLines => {
                "a line without timestamp runs on past a line break (a quote InfluxDB reads as \
                 an open string): the timestamp added at ingest would not be read as one; close \
                 the quote or send a timestamp"
            }
        };
        out.extend_from_slice(text.as_bytes());
    }
}

/// Go's `strconv.ParseInt` error text. The input is only ever `-` and ASCII digits here, which
/// `strconv.Quote` leaves as they are.
fn go_parse_int_error(out: &mut Vec<u8>, input: &[u8], why: &str) {
    out.extend_from_slice(b"strconv.ParseInt: parsing \"");
    out.extend_from_slice(input);
    out.extend_from_slice(b"\": ");
    out.extend_from_slice(why.as_bytes());
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::new();
        self.write_to(&mut buf);
        f.write_str(&String::from_utf8_lossy(&buf))
    }
}

impl std::error::Error for ParseError {}

/// Why a line is not forwarded: refused by the parser, or parsed but dropped the way InfluxDB
/// 1.6's storage layer drops a point that uses `time` as a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Parse(ParseError),
    /// A tag key is `time`; holds the unescaped measurement name.
    TimeTag(Vec<u8>),
    /// Every field key is `time`; holds the unescaped measurement name.
    TimeField(Vec<u8>),
}

impl Reason {
    /// True for the storage-layer drops, which InfluxDB reports as `partial write … dropped=N`
    /// rather than as `unable to parse`.
    pub fn is_drop(&self) -> bool {
        !matches!(self, Self::Parse(_))
    }

    /// Appends the reason text to `out`: the parser's reason, or the storage layer's sentence.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Parse(e) => e.write_to(out),
            Self::TimeTag(name) => {
                out.extend_from_slice(b"invalid tag key: input tag \"time\" on measurement \"");
                out.extend_from_slice(name);
                out.extend_from_slice(b"\" is invalid");
            }
            Self::TimeField(name) => {
                out.extend_from_slice(
                    b"invalid field name: input field \"time\" on measurement \"",
                );
                out.extend_from_slice(name);
                out.extend_from_slice(b"\" is invalid");
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::new();
        self.write_to(&mut buf);
        f.write_str(&String::from_utf8_lossy(&buf))
    }
}
