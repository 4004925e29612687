//! InfluxDB 1.6.7's line-protocol parser (`models/points.go`), ported function by function.
//!
//! This module *defines* what is valid: it keeps the original's structure and quirks on purpose
//! (two different escape rules, the counting of `=` and `,` to decide whether a `"` opens a
//! string, the field walker that can disagree with the field scanner), because clients must get
//! exactly the answers InfluxDB gives. It is not fast; `fast` accepts the common lines quickly
//! and sends everything else here. Each function names the Go function it mirrors.

use crate::error::{MAX_KEY_LENGTH, MAX_NANO_TIME, MIN_NANO_TIME, ParseError};
use crate::precision::Precision;

/// What validation learns about a line that parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PointInfo {
    /// False when the line has no timestamp and the ingest time must be appended.
    pub has_timestamp: bool,
    /// A tag key is `time`: InfluxDB's storage layer drops the point.
    pub time_tag: bool,
    /// Every field key is `time`: InfluxDB's storage layer drops the point.
    pub only_time_fields: bool,
    /// A field value InfluxDB's storage engine cannot read although the parser accepted it
    /// (the two split fields differently): storing the point would fail or crash the backend.
    pub engine_fails: Option<ParseError>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    TagKey,
    Fields,
}

/// `scanLine`: the end of the line starting at `i` (the index of its `\n`, or `buf.len()`).
/// A `\n` inside what the original takes for a quoted string does not end the line.
pub(crate) fn scan_line(buf: &[u8], mut i: usize) -> usize {
    let mut quoted = false;
    let mut fields = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    while i < buf.len() {
        let c = buf[i];
        if c == b'\\' && i + 2 < buf.len() {
            i += 2;
            continue;
        }
        if c == b' ' {
            fields = true;
        }
        if fields {
            if !quoted && c == b'=' {
                i += 1;
                equals += 1;
                continue;
            } else if !quoted && c == b',' {
                i += 1;
                commas += 1;
                continue;
            } else if c == b'"' && equals > commas {
                i += 1;
                quoted = !quoted;
                continue;
            }
        }
        if c == b'\n' && !quoted {
            break;
        }
        i += 1;
    }
    i
}

/// `skipWhitespace`: spaces, tabs and NUL bytes.
pub(crate) fn skip_whitespace(buf: &[u8], mut i: usize) -> usize {
    while i < buf.len() && matches!(buf[i], b' ' | b'\t' | 0) {
        i += 1;
    }
    i
}

/// `parsePoint`: validates one line (leading whitespace already skipped, no trailing `\n`).
pub(crate) fn parse_point(buf: &[u8], precision: Precision) -> Result<PointInfo, ParseError> {
    let mut tag_starts = Vec::new();
    let (pos, key_len) = scan_key(buf, &mut tag_starts)?;
    if key_len == 0 {
        return Err(ParseError::MissingMeasurement);
    }
    if key_len > MAX_KEY_LENGTH {
        return Err(ParseError::MaxKeyLength(key_len));
    }

    let (pos, fields) = scan_fields(buf, pos)?;
    let fields = &buf[fields.0..fields.1];
    if fields.is_empty() {
        return Err(ParseError::MissingFields);
    }

    let mut max_key_err = None;
    let mut non_time_field = false;
    let mut engine_fails = None;
    walk_fields(fields, |key, value| {
        let size = key_len + 4 + key.len();
        if size > MAX_KEY_LENGTH {
            max_key_err = Some(ParseError::MaxKeyLength(size));
            return false;
        }
        non_time_field |= key != b"time";
        if engine_fails.is_none() {
            engine_fails = engine_reads(value).err();
        }
        true
    })?;
    if let Some(e) = max_key_err {
        return Err(e);
    }

    let (mut pos, ts) = scan_time(buf, pos)?;
    let has_timestamp = !ts.is_empty();
    if has_timestamp {
        let value = parse_go_int(ts)?;
        check_time(value, precision)?;
        while pos < buf.len() {
            if buf[pos] != b' ' {
                return Err(ParseError::PointInvalid);
            }
            pos += 1;
        }
    }

    let time_tag = tag_starts
        .iter()
        .any(|&s| scan_to(&buf[s..], 0, b'=').1 == b"time");
    Ok(PointInfo {
        has_timestamp,
        time_tag,
        only_time_fields: !non_time_field,
        engine_fails,
    })
}

/// Whether InfluxDB 1.6.7's storage engine reads `value`, typed the way its field iterator
/// types it (`point.Next`): a leading `"` makes a string, a leading digit, sign, `.`, `n`, `i`
/// or `u` a number (integer with a trailing `i`, unsigned with `u`, float otherwise), anything
/// else a boolean. The parser and the iterator split fields differently in rare escape cases,
/// so a value the parser accepted can still fail here: a one-byte string panics the process,
/// the others fail the request with a 500.
fn engine_reads(value: &[u8]) -> Result<(), ParseError> {
    let text = || std::str::from_utf8(value).ok();
    let Some(&first) = value.first() else {
        return Err(ParseError::EngineFails(value.to_vec()));
    };
    let readable = match first {
        b'"' if value.len() < 2 => return Err(ParseError::CrashingQuote),
        b'"' => true,
        b'0'..=b'9' | b'-' | b'.' | b'n' | b'N' | b'i' | b'I' | b'u' => match value.split_last() {
            Some((b'i', digits)) => {
                std::str::from_utf8(digits).is_ok_and(|d| d.parse::<i64>().is_ok())
            }
            Some((b'u', digits)) => {
                std::str::from_utf8(digits).is_ok_and(|d| d.parse::<u64>().is_ok())
            }
            _ => text().is_some_and(go_parse_float_ok),
        },
        _ => matches!(
            value,
            b"1" | b"t"
                | b"T"
                | b"TRUE"
                | b"true"
                | b"True"
                | b"0"
                | b"f"
                | b"F"
                | b"FALSE"
                | b"false"
                | b"False"
        ),
    };
    if readable {
        Ok(())
    } else {
        Err(ParseError::EngineFails(value.to_vec()))
    }
}

/// Go's `strconv.ParseFloat(s, 64)` succeeding: Rust's parser accepts the same decimal forms
/// and the same spellings of infinity and NaN, but returns infinity where Go reports a range
/// error.
fn go_parse_float_ok(s: &str) -> bool {
    match s.parse::<f64>() {
        Ok(f) if f.is_infinite() => {
            let word = s.trim_start_matches(['+', '-']).to_ascii_lowercase();
            word == "inf" || word == "infinity"
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

/// `SafeCalcTime` + `CheckTime`: the timestamp in nanoseconds must lie within InfluxDB's range.
pub(crate) fn check_time(value: i64, precision: Precision) -> Result<i64, ParseError> {
    match value.checked_mul(precision.nanos()) {
        Some(ns) if (MIN_NANO_TIME..=MAX_NANO_TIME).contains(&ns) => Ok(ns),
        _ => Err(ParseError::TimeOutOfRange),
    }
}

/// `strconv.ParseInt(s, 10, 64)` on input that holds only an optional leading `-` and digits.
fn parse_go_int(ts: &[u8]) -> Result<i64, ParseError> {
    let (negative, digits) = match ts.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, ts),
    };
    if digits.is_empty() {
        return Err(ParseError::TimestampSyntax(ts.to_vec()));
    }
    let mut value: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(d)
                } else {
                    v.checked_add(d)
                }
            })
            .ok_or_else(|| ParseError::TimestampOverflow(ts.to_vec()))?;
    }
    Ok(value)
}

/// `scanKey`: measurement and tags. Returns the index after the key and the key's length;
/// `tag_starts` receives the start of every tag.
fn scan_key(buf: &[u8], tag_starts: &mut Vec<usize>) -> Result<(usize, usize), ParseError> {
    let start = skip_whitespace(buf, 0);
    let (state, mut i) = scan_measurement(buf, start)?;
    if state == State::TagKey {
        i = scan_tags(buf, i, tag_starts)?;
    }

    // `indices` in the original: every tag start, then one past the space that ends the tags.
    let commas = tag_starts.len();
    if commas > 1 {
        let bound = |j: usize| if j < commas { tag_starts[j] } else { i + 1 };
        let mut sorted = true;
        for j in 0..commas - 1 {
            let left = scan_to(&buf[bound(j)..bound(j + 1) - 1], 0, b'=').1;
            let right = scan_to(&buf[bound(j + 1)..bound(j + 2) - 1], 0, b'=').1;
            match left.cmp(right) {
                std::cmp::Ordering::Greater => {
                    sorted = false;
                    break;
                }
                std::cmp::Ordering::Equal => return Err(ParseError::DuplicateTags),
                std::cmp::Ordering::Less => {}
            }
        }
        if !sorted {
            let mut keys: Vec<&[u8]> = tag_starts
                .iter()
                .map(|&s| scan_to(&buf[s..], 0, b'=').1)
                .collect();
            keys.sort();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err(ParseError::DuplicateTags);
            }
        }
    }
    Ok((i, i - start))
}

/// `scanMeasurement`. Escapes here are "the previous byte is a backslash", as in the original.
fn scan_measurement(buf: &[u8], mut i: usize) -> Result<(State, usize), ParseError> {
    if i >= buf.len() || buf[i] == b',' {
        return Err(ParseError::MissingMeasurement);
    }
    loop {
        i += 1;
        if i >= buf.len() {
            return Err(ParseError::MissingFields);
        }
        if buf[i - 1] == b'\\' {
            continue;
        }
        if buf[i] == b',' {
            return Ok((State::TagKey, i + 1));
        }
        if buf[i] == b' ' {
            return Ok((State::Fields, i));
        }
    }
}

/// `scanTags`: returns the index of the space that ends the tags.
fn scan_tags(buf: &[u8], mut i: usize, tag_starts: &mut Vec<usize>) -> Result<usize, ParseError> {
    loop {
        tag_starts.push(i);
        i = scan_tags_key(buf, i)?;
        match scan_tags_value(buf, i)? {
            (State::TagKey, next) => i = next,
            (State::Fields, next) => {
                if crashes_influxdb(tag_starts.len()) {
                    return Err(ParseError::CrashingTagCount(tag_starts.len()));
                }
                return Ok(next);
            }
        }
    }
}

/// Whether InfluxDB 1.6.7's `scanTags` fails on this many tags. It keeps tag starts in a table
/// of 100 entries, doubled whenever a tag does not fit, and writes one entry past the last
/// tag: out of bounds exactly when the table is full.
pub(crate) fn crashes_influxdb(tags: usize) -> bool {
    tags >= 100 && tags.is_multiple_of(100) && (tags / 100).is_power_of_two()
}

/// `scanTagsKey`: returns the index after the `=`.
fn scan_tags_key(buf: &[u8], mut i: usize) -> Result<usize, ParseError> {
    if i >= buf.len() || matches!(buf[i], b' ' | b',' | b'=') {
        return Err(ParseError::MissingTagKey);
    }
    loop {
        i += 1;
        if i >= buf.len() || (matches!(buf[i], b' ' | b',') && buf[i - 1] != b'\\') {
            return Err(ParseError::MissingTagValue);
        }
        if buf[i] == b'=' && buf[i - 1] != b'\\' {
            return Ok(i + 1);
        }
    }
}

/// `scanTagsValue`.
fn scan_tags_value(buf: &[u8], mut i: usize) -> Result<(State, usize), ParseError> {
    if i >= buf.len() || matches!(buf[i], b',' | b' ') {
        return Err(ParseError::MissingTagValue);
    }
    loop {
        i += 1;
        if i >= buf.len() {
            return Err(ParseError::MissingFields);
        }
        let escaped = buf[i - 1] == b'\\';
        match buf[i] {
            b'=' if !escaped => return Err(ParseError::InvalidTagFormat),
            b',' if !escaped => return Ok((State::TagKey, i + 1)),
            b' ' if !escaped => return Ok((State::Fields, i)),
            _ => {}
        }
    }
}

/// `scanTo`: up to the first `stop` not preceded by a backslash.
pub(crate) fn scan_to(buf: &[u8], mut i: usize, stop: u8) -> (usize, &[u8]) {
    let start = i;
    while i < buf.len() {
        if buf[i] == stop && (i == 0 || buf[i - 1] != b'\\') {
            break;
        }
        i += 1;
    }
    (i, &buf[start..i])
}

/// `scanFields`: returns the index after the fields and their range. Escapes here skip the next
/// byte, unlike in the key.
fn scan_fields(buf: &[u8], i: usize) -> Result<(usize, (usize, usize)), ParseError> {
    let start = skip_whitespace(buf, i);
    let mut i = start;
    let mut quoted = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    while i < buf.len() {
        let c = buf[i];
        if c == b'\\' && i + 1 < buf.len() {
            i += 2;
            continue;
        }
        if c == b'"' && equals > commas {
            quoted = !quoted;
            i += 1;
            continue;
        }
        if c == b'=' && !quoted {
            equals += 1;
            let before = buf[i - 1];
            let escaped = i >= 2 && buf[i - 2] == b'\\';
            if (before == b' ' || before == b',') && !escaped {
                return Err(ParseError::MissingFieldKey);
            }
            let Some(&next) = buf.get(i + 1) else {
                return Err(ParseError::MissingFieldValue);
            };
            if next == b',' || next == b' ' {
                return Err(ParseError::MissingFieldValue);
            }
            if is_numeric(next) || matches!(next, b'-' | b'N' | b'n') {
                i = scan_number(buf, i + 1)?;
                continue;
            }
            if next != b'"' {
                i = scan_boolean(buf, i + 1)?;
                continue;
            }
        }
        if c == b',' && !quoted {
            commas += 1;
        }
        if c == b' ' && !quoted {
            break;
        }
        i += 1;
    }
    if quoted {
        return Err(ParseError::UnbalancedQuotes);
    }
    if equals == 0 || commas + 1 != equals {
        return Err(ParseError::InvalidFieldFormat);
    }
    Ok((i, (start, i)))
}

/// `isNumeric`.
fn is_numeric(c: u8) -> bool {
    c.is_ascii_digit() || c == b'.'
}

/// `scanNumber`: returns the index after the number.
fn scan_number(buf: &[u8], mut i: usize) -> Result<usize, ParseError> {
    let start = i;
    let mut is_int = false;
    let mut is_unsigned = false;
    if i < buf.len() && buf[i] == b'-' {
        i += 1;
        if i == buf.len() {
            return Err(ParseError::InvalidNumber);
        }
    }
    let mut decimal = false;
    let mut scientific = false;
    while i < buf.len() {
        let c = buf[i];
        if c == b',' || c == b' ' {
            break;
        }
        if c == b'i' && i > start && !(is_int || is_unsigned) {
            is_int = true;
            i += 1;
            continue;
        } else if c == b'u' && i > start && !(is_int || is_unsigned) {
            is_unsigned = true;
            i += 1;
            continue;
        }
        if c == b'.' {
            if decimal {
                return Err(ParseError::InvalidNumber);
            }
            decimal = true;
        }
        if i > start && (c == b'e' || c == b'E') {
            scientific = true;
            i += 1;
            continue;
        }
        if (c == b'+' || c == b'-') && matches!(buf[i - 1], b'e' | b'E') {
            i += 1;
            continue;
        }
        if i + 2 < buf.len() && (c == b'N' || c == b'n') {
            return Err(ParseError::InvalidNumber);
        }
        if !is_numeric(c) {
            return Err(ParseError::InvalidNumber);
        }
        i += 1;
    }

    if (is_int || is_unsigned) && (decimal || scientific) {
        return Err(ParseError::InvalidNumber);
    }
    let mut numeric_digits = i - start;
    if is_int {
        numeric_digits -= 1;
    }
    if decimal {
        numeric_digits -= 1;
    }
    if buf[start] == b'-' {
        numeric_digits -= 1;
    }
    if numeric_digits == 0 {
        return Err(ParseError::InvalidNumber);
    }

    if is_int {
        if buf[i - 1] != b'i' {
            return Err(ParseError::InvalidNumber);
        }
        let digits = &buf[start..i - 1];
        // maxInt64Digits = 19, minInt64Digits = 20: only long numbers can overflow.
        if digits.len() >= 19 && parse_go_int(digits).is_err() {
            return Err(ParseError::IntegerRange(digits.to_vec()));
        }
    } else if is_unsigned {
        // 1.6 is built without unsigned integer support.
        return Err(ParseError::InvalidNumber);
    } else {
        let text = &buf[start..i];
        // maxFloat64Digits = 25, minFloat64Digits = 27.
        if (scientific || text.len() >= 25) && !go_float_ok(text) {
            return Err(ParseError::InvalidFloat);
        }
    }
    Ok(i)
}

/// Whether Go's `strconv.ParseFloat(s, 64)` succeeds on `s`, which holds only digits, `.`,
/// `e`/`E` and signs here. Go refuses values that round to infinity; Rust returns infinity.
fn go_float_ok(text: &[u8]) -> bool {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// `scanBoolean`: returns the index after the value.
fn scan_boolean(buf: &[u8], mut i: usize) -> Result<usize, ParseError> {
    let start = i;
    if i < buf.len() && !matches!(buf[i], b't' | b'f' | b'T' | b'F') {
        return Err(ParseError::InvalidBoolean);
    }
    i += 1;
    while i < buf.len() && buf[i] != b',' && buf[i] != b' ' {
        i += 1;
    }
    let word = &buf[start..i];
    let valid = matches!(
        word,
        b"t" | b"T" | b"f" | b"F" | b"true" | b"True" | b"TRUE" | b"false" | b"False" | b"FALSE"
    );
    if valid {
        Ok(i)
    } else {
        Err(ParseError::InvalidBoolean)
    }
}

/// `walkFields`: calls `f` with each field key and value until it returns false.
fn walk_fields(mut buf: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<(), ParseError> {
    while !buf.is_empty() {
        let (i, key) = scan_to(buf, 0, b'=');
        if i + 2 > buf.len() {
            return Err(ParseError::InvalidValue(key.to_vec()));
        }
        buf = &buf[i + 1..];
        let (i, value) = scan_field_value(buf, 0);
        if !f(key, value) {
            break;
        }
        buf = &buf[i..];
        if !buf.is_empty() {
            buf = &buf[1..];
        }
    }
    Ok(())
}

/// `scanFieldValue`: a field value ends at a `,` outside quotes; `\"` and `\\` are escapes.
fn scan_field_value(buf: &[u8], mut i: usize) -> (usize, &[u8]) {
    let start = i;
    let mut quoted = false;
    while i < buf.len() {
        let c = buf[i];
        if c == b'\\' && i + 1 < buf.len() && matches!(buf[i + 1], b'"' | b'\\') {
            i += 2;
            continue;
        }
        if c == b'"' {
            i += 1;
            quoted = !quoted;
            continue;
        }
        if c == b',' && !quoted {
            break;
        }
        i += 1;
    }
    (i, &buf[start..i])
}

/// `scanTime`: returns the index after the timestamp and its bytes (empty when absent).
fn scan_time(buf: &[u8], i: usize) -> Result<(usize, &[u8]), ParseError> {
    let start = skip_whitespace(buf, i);
    let mut i = start;
    while i < buf.len() {
        let c = buf[i];
        if c == b'\n' || c == b' ' {
            break;
        }
        if i == start && c == b'-' {
            i += 1;
            continue;
        }
        if !c.is_ascii_digit() {
            return Err(ParseError::BadTimestamp);
        }
        i += 1;
    }
    Ok((i, &buf[start..i]))
}

/// `escape.Unescape`, as `point.Name()` applies it to the measurement.
pub(crate) fn unescape_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() && matches!(raw[i + 1], b',' | b'"' | b' ' | b'=') {
            out.push(raw[i + 1]);
            i += 2;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// The measurement as `point.Name()` sees it: the key up to its first unescaped comma.
pub(crate) fn raw_measurement(line: &[u8]) -> &[u8] {
    let start = skip_whitespace(line, 0);
    let rest = &line[start..];
    let end = match scan_measurement(rest, 0) {
        Ok((State::TagKey, i)) => i - 1,
        Ok((State::Fields, i)) => i,
        Err(_) => rest.len(),
    };
    scan_to(&rest[..end], 0, b',').1
}
