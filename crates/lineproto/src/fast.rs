//! The fast path: accepts, in one tight pass, the lines that agents actually send.
//!
//! It handles "plain" lines only (no `"` and no `\`, so no escapes and no strings) whose tags
//! are sorted, with single spaces between sections, short numbers and a plain timestamp. For
//! such a line every rule of the original parser reduces to the simple checks below. Anything
//! else, valid or not, answers `None` and goes to [`crate::exact`], which alone produces error
//! messages. The property tests hold this module to "`Some` only where `exact` agrees".

use crate::exact::{PointInfo, check_time};
use crate::precision::Precision;

/// Lines longer than this go to `exact`, which checks InfluxDB's key-length limit; below it the
/// limit cannot be reached.
const MAX_FAST_LINE: usize = 60_000;

/// Bytes that end a name or a tag value.
#[inline]
fn is_delim(c: u8) -> bool {
    matches!(c, b'=' | b' ' | b',')
}

/// Index of the first delimiter at or after `i`, or `line.len()`.
#[inline]
fn until_delim(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && !is_delim(line[i]) {
        i += 1;
    }
    i
}

/// Validates a plain line (no `"`, no `\`, leading whitespace skipped). `None` means "ask
/// `exact`", not "invalid".
pub(crate) fn parse_plain(line: &[u8], precision: Precision) -> Option<PointInfo> {
    let n = line.len();
    if n > MAX_FAST_LINE {
        return None;
    }

    // Measurement: anything up to the first comma or space.
    let mut i = 0;
    while i < n && line[i] != b',' && line[i] != b' ' {
        i += 1;
    }
    if i == 0 || i == n {
        return None;
    }

    // Tags, strictly increasing by key (so neither unsorted nor duplicated).
    let mut time_tag = false;
    if line[i] == b',' {
        let mut prev_key: &[u8] = &[];
        loop {
            let key_start = i + 1;
            i = until_delim(line, key_start);
            if i == n || line[i] != b'=' || i == key_start {
                return None;
            }
            let key = &line[key_start..i];
            if key <= prev_key {
                return None;
            }
            time_tag |= key == b"time";
            prev_key = key;
            let value_start = i + 1;
            i = until_delim(line, value_start);
            if i == n || i == value_start || line[i] == b'=' {
                return None;
            }
            if line[i] == b' ' {
                break;
            }
        }
    }

    // Fields: key=value pairs separated by commas.
    i += 1;
    if i >= n || matches!(line[i], b' ' | b'\t' | 0) {
        return None;
    }
    let mut non_time_field = false;
    loop {
        let key_start = i;
        i = until_delim(line, key_start);
        if i == n || line[i] != b'=' || i == key_start {
            return None;
        }
        non_time_field |= &line[key_start..i] != b"time";
        let value_start = i + 1;
        i = value_start;
        while i < n && line[i] != b',' && line[i] != b' ' {
            i += 1;
        }
        if !plain_value_ok(&line[value_start..i]) {
            return None;
        }
        if i == n || line[i] == b' ' {
            break;
        }
        i += 1;
    }

    let has_timestamp = i < n;
    if has_timestamp {
        let ts = &line[i + 1..];
        let (negative, digits) = match ts.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, ts),
        };
        if digits.is_empty() || digits.len() > 19 {
            return None;
        }
        let mut magnitude: i64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            magnitude = magnitude
                .checked_mul(10)?
                .checked_add(i64::from(d - b'0'))?;
        }
        let value = if negative { -magnitude } else { magnitude };
        check_time(value, precision).ok()?;
    }

    Some(PointInfo {
        has_timestamp,
        time_tag,
        only_time_fields: !non_time_field,
    })
}

/// A field value that is certainly valid: a boolean spelling, an `i` integer short enough not
/// to overflow, or a short decimal float without exponent.
#[inline]
fn plain_value_ok(v: &[u8]) -> bool {
    let Some(&first) = v.first() else {
        return false;
    };
    match first {
        b't' | b'f' | b'T' | b'F' => matches!(
            v,
            b"t" | b"T"
                | b"f"
                | b"F"
                | b"true"
                | b"True"
                | b"TRUE"
                | b"false"
                | b"False"
                | b"FALSE"
        ),
        b'0'..=b'9' | b'.' | b'-' => {
            let (body, int) = match v.split_last() {
                Some((b'i', body)) => (body, true),
                _ => (v, false),
            };
            let digits = body.strip_prefix(b"-").unwrap_or(body);
            if int {
                // 18 digits cannot overflow int64; longer ones go to `exact`.
                !digits.is_empty() && digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit)
            } else {
                if v.len() >= 25 {
                    return false;
                }
                let mut seen_digit = false;
                let mut seen_dot = false;
                for &c in digits {
                    match c {
                        b'0'..=b'9' => seen_digit = true,
                        b'.' if !seen_dot => seen_dot = true,
                        _ => return false,
                    }
                }
                seen_digit
            }
        }
        _ => false,
    }
}
