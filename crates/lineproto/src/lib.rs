//! InfluxDB 1.6 line protocol, validated exactly as InfluxDB 1.6.7's parser does, fast.
//!
//! Every write goes through [`validate`]: it splits a request body into lines the way InfluxDB
//! does (a `\n` inside a quoted string value does not end a line), decides for each line what
//! InfluxDB 1.6.7 would decide, stamps the lines that carry no timestamp with the ingest time,
//! and yields the bytes to forward plus the exact error text InfluxDB would answer.
//!
//! ```
//! use lineproto::{validate, Precision};
//!
//! let body = b"cpu,host=a usage=1 1700000000\ncpu,host=a usage=\ncpu,host=b usage=2\n";
//! let v = validate(body, Precision::Seconds, 1_700_000_042_000_000_000);
//! assert_eq!(v.points(), 2);
//! assert_eq!(v.output(), b"cpu,host=a usage=1 1700000000\ncpu,host=b usage=2 1700000042\n");
//! assert_eq!(
//!     v.influx_error().unwrap(),
//!     b"partial write: unable to parse 'cpu,host=a usage=': missing field value dropped=0",
//! );
//! ```
//!
//! Layout:
//! - [`exact`](crate::exact) (private): the original parser ported function by function; the
//!   definition of valid and the source of every error message.
//! - `classify` (private): the bitmasks of 64-byte blocks, with the widest SIMD the CPU has.
//! - `fast` (private): a SIMD-indexed accept path for the plain lines agents send, and line
//!   splitting; anything it is unsure of goes to `exact`.
//! - [`Validated`]: the outcome for one body; [`series`]: measurement and series key of a line.
// `unsafe` only where `classify` calls CPU-specific SIMD instructions.
#![deny(unsafe_code)]

mod classify;
mod error;
mod exact;
use exact::PointInfo;
mod fast;
mod precision;
pub mod series;

pub use error::{MAX_KEY_LENGTH, MAX_NANO_TIME, MIN_NANO_TIME, ParseError, Reason};
pub use precision::{InvalidPrecision, Precision};

/// A line that is not forwarded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected<'a> {
    line: &'a [u8],
    reason: Reason,
}

impl<'a> Rejected<'a> {
    /// The line as InfluxDB quotes it in its error: leading whitespace skipped, no `\n`.
    pub fn line(&self) -> &'a [u8] {
        self.line
    }

    pub fn reason(&self) -> &Reason {
        &self.reason
    }
}

/// The outcome of validating one request body.
#[derive(Debug, Clone)]
pub struct Validated<'a> {
    body: &'a [u8],
    points: usize,
    rejected: Vec<Rejected<'a>>,
    /// `None` while the output is the body itself; the rebuilt output otherwise.
    rebuilt: Option<Vec<u8>>,
}

/// Validates `body` as InfluxDB 1.6.7's `/write` does with this `precision`; lines without a
/// timestamp get `now_unix_nanos`, truncated to the precision.
pub fn validate(body: &[u8], precision: Precision, now_unix_nanos: i64) -> Validated<'_> {
    validate_with(body, precision, now_unix_nanos, true)
}

/// [`validate`] for a stream, where every line is an event of its own: the lines without a
/// timestamp are stamped one unit of `precision` apart, in order (the first at
/// `now_unix_nanos`), so that points of one series that came together without timestamps do
/// not overwrite each other (InfluxDB keeps one point per series and time).
pub fn validate_spaced(body: &[u8], precision: Precision, now_unix_nanos: i64) -> Validated<'_> {
    validate_stamping(body, precision, now_unix_nanos, true, Stamps::Spaced)
}

/// How lines without a timestamp are stamped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stamps {
    /// All with the same time, as InfluxDB stamps the lines of one request.
    Same,
    /// One unit of precision apart, in order.
    Spaced,
}

/// [`validate`] with the ported parser alone, without the fast path: for differential tests
/// and fuzzing, which hold the two to the same answers.
#[doc(hidden)]
pub fn validate_reference(body: &[u8], precision: Precision, now_unix_nanos: i64) -> Validated<'_> {
    validate_with(body, precision, now_unix_nanos, false)
}

/// [`validate`], optionally without the fast path.
fn validate_with(
    body: &[u8],
    precision: Precision,
    now_unix_nanos: i64,
    use_fast: bool,
) -> Validated<'_> {
    validate_stamping(body, precision, now_unix_nanos, use_fast, Stamps::Same)
}

fn validate_stamping(
    body: &[u8],
    precision: Precision,
    now_unix_nanos: i64,
    use_fast: bool,
    stamps: Stamps,
) -> Validated<'_> {
    let first_stamp = precision.stamp(now_unix_nanos);
    // Lines stamped so far, and the count `stamp` was last made for.
    let mut stamped: i64 = 0;
    let mut spaced_at: i64 = 0;
    let mut stamp = Vec::with_capacity(21);
    let set_stamp = |stamp: &mut Vec<u8>, t: i64| {
        stamp.clear();
        stamp.push(b' ');
        stamp.extend_from_slice(t.to_string().as_bytes());
        stamp.push(b'\n');
    };
    set_stamp(&mut stamp, first_stamp);

    let mut v = Validated {
        body,
        points: 0,
        rejected: Vec::new(),
        rebuilt: None,
    };
    // Everything of `body` before `copied` is already in `rebuilt` (or needs no copy).
    let mut copied = 0;
    let limits = fast::TimeLimits::new(precision);
    let mut index = fast::Index::new(body);
    let mut pos = 0;
    while pos < body.len() {
        let (end, indexed) = index.line_end(pos);
        let line_start = pos;
        pos = end + 1;

        let block = &body[line_start..end];
        let start = exact::skip_whitespace(block, 0);
        if start >= block.len() || block[start] == b'#' {
            continue;
        }
        let block = block.strip_suffix(b"\n").unwrap_or(block);
        let line = &block[start..];
        if stamps == Stamps::Spaced && stamped > 0 && stamped != spaced_at {
            // The stamp this line gets if it needs one, before the checks that read it.
            set_stamp(&mut stamp, first_stamp.saturating_add(stamped));
            spaced_at = stamped;
        }

        let fast = (use_fast && indexed)
            .then(|| fast::parse_indexed(&index, line_start + start, end, &limits));
        let verdict = match fast.flatten() {
            Some(info) => Ok(info),
            None => exact::parse_point(line, precision),
        };
        let reason = match verdict {
            Ok(info) if info.time_tag => {
                Reason::TimeTag(exact::unescape_name(exact::raw_measurement(line)))
            }
            Ok(info) if info.only_time_fields => {
                Reason::TimeField(exact::unescape_name(exact::raw_measurement(line)))
            }
            Ok(PointInfo {
                engine_fails: Some(e),
                ..
            }) => Reason::Parse(e),
            Ok(info) if !info.has_timestamp && line.last() == Some(&b'\\') => {
                Reason::Parse(ParseError::Unstampable)
            }
            Ok(info)
                if !info.has_timestamp
                    && line.contains(&b'\n')
                    && !stamp_is_read(line, &stamp, precision) =>
            {
                Reason::Parse(ParseError::UnstampableAcrossLines)
            }
            Ok(info) => {
                v.points += 1;
                if !info.has_timestamp {
                    stamped += 1;
                    let out = v
                        .rebuilt
                        .get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
                    out.extend_from_slice(&body[copied..line_start + block.len()]);
                    out.extend_from_slice(&stamp);
                    copied = pos.min(body.len());
                }
                continue;
            }
            Err(e) => Reason::Parse(e),
        };
        let out = v
            .rebuilt
            .get_or_insert_with(|| Vec::with_capacity(body.len()));
        out.extend_from_slice(&body[copied..line_start]);
        copied = pos.min(body.len());
        v.rejected.push(Rejected { line, reason });
    }
    if let Some(out) = v.rebuilt.as_mut() {
        out.extend_from_slice(&body[copied..]);
        if out.last().is_some_and(|&c| c != b'\n') {
            out.push(b'\n');
        }
    }
    v
}

/// Whether `line` (parsed without a timestamp) takes `stamp` (` <ts>\n`) appended at its end
/// as its timestamp. Only asked for lines that span a line break: there InfluxDB's line
/// splitter may have taken a quote for an open string, and the appended digits would then not
/// be read as the timestamp.
fn stamp_is_read(line: &[u8], stamp: &[u8], precision: Precision) -> bool {
    let mut stamped = Vec::with_capacity(line.len() + stamp.len());
    stamped.extend_from_slice(line);
    stamped.extend_from_slice(stamp.strip_suffix(b"\n").unwrap_or(stamp));
    matches!(exact::parse_point(&stamped, precision), Ok(info) if info.has_timestamp)
}

/// A byte offset near the middle of `body` that splits it into two non-empty runs of whole
/// lines (a `\n` inside a quoted string is not a line end), or `None` for a single line. For
/// splitting a batch a backend refused as too large.
pub fn split_point(body: &[u8]) -> Option<usize> {
    let mut index = fast::Index::new(body);
    let mut pos = 0;
    let mut split = None;
    while pos < body.len() {
        let (end, _) = index.line_end(pos);
        let next = end + 1;
        if next >= body.len() {
            break;
        }
        split = Some(next);
        if next >= body.len() / 2 {
            break;
        }
        pos = next;
    }
    split
}

/// The lines of `body` as InfluxDB's scanner splits them (a `\n` inside a quoted string value
/// does not end a line), each with its terminating `\n` (the last one may have none), blank
/// and comment lines included: concatenated, they give `body` back. For regrouping the lines
/// of a validated payload, e.g. by [`series::measurement`].
pub fn lines(body: &[u8]) -> Lines<'_> {
    Lines {
        index: fast::Index::new(body),
        body,
        pos: 0,
    }
}

/// Iterator returned by [`lines`].
pub struct Lines<'a> {
    index: fast::Index<'a>,
    body: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.body.len() {
            return None;
        }
        let start = self.pos;
        let (end, _) = self.index.line_end(start);
        // Every step takes at least one byte: `end` is at or after `start`.
        self.pos = (end + 1).min(self.body.len());
        Some(&self.body[start..self.pos])
    }
}

/// The length of the prefix of `buf` made of complete lines, for reading line protocol from a
/// stream: each line of the prefix is ended by a `\n` that ends it as InfluxDB's scanner reads
/// `buf` (a `\n` inside a quoted string value does not), and that no data arriving after `buf`
/// could turn into an escaped character. The rest of `buf` is a line still arriving.
///
/// A `\n` that is the last byte of `buf` right after a backslash that starts an escape is not
/// counted: the scanner skips an escaped character only when another byte follows it, so more
/// data would make that `\n` part of the line.
pub fn complete_lines(buf: &[u8]) -> usize {
    let mut index = fast::Index::new(buf);
    let mut pos = 0;
    let mut complete = 0;
    while pos < buf.len() {
        let (end, _) = index.line_end(pos);
        if end >= buf.len() {
            break;
        }
        if end + 1 == buf.len() {
            // Backslashes right before the `\n`: the scanner lands on the first one and skips
            // pairs, so an odd run ends with a backslash that escapes whatever follows it.
            let run = buf[pos..end]
                .iter()
                .rev()
                .take_while(|&&c| c == b'\\')
                .count();
            if run % 2 == 1 {
                break;
            }
        }
        complete = end + 1;
        pos = end + 1;
    }
    complete
}

impl<'a> Validated<'a> {
    /// Valid points, forwarded in [`output`](Self::output).
    pub fn points(&self) -> usize {
        self.points
    }

    /// Every line that is not forwarded, in body order.
    pub fn rejected(&self) -> &[Rejected<'a>] {
        &self.rejected
    }

    /// The bytes to forward: the valid lines as they came (comments and blank lines may
    /// remain), lines without a timestamp stamped.
    pub fn output(&self) -> &[u8] {
        self.rebuilt.as_deref().unwrap_or(self.body)
    }

    /// True when [`output`](Self::output) is the request body itself.
    pub fn is_unchanged(&self) -> bool {
        self.rebuilt.is_none()
    }

    /// The forwarded bytes, without a copy when the body is unchanged.
    pub fn into_output(self) -> std::borrow::Cow<'a, [u8]> {
        match self.rebuilt {
            Some(out) => std::borrow::Cow::Owned(out),
            None => std::borrow::Cow::Borrowed(self.body),
        }
    }

    /// The parser's complaints, as InfluxDB joins them: `unable to parse '<line>': <reason>`,
    /// one per refused line, separated by `\n`. `None` when every line parsed.
    pub fn parse_errors(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for r in self.rejected.iter().filter(|r| !r.reason.is_drop()) {
            if !out.is_empty() {
                out.push(b'\n');
            }
            out.extend_from_slice(b"unable to parse '");
            out.extend_from_slice(r.line);
            out.extend_from_slice(b"': ");
            r.reason.write_to(&mut out);
        }
        (!out.is_empty()).then_some(out)
    }

    /// Points that parsed but that InfluxDB's storage layer drops (`time` as a key).
    pub fn dropped(&self) -> usize {
        self.rejected.iter().filter(|r| r.reason.is_drop()).count()
    }

    /// The reason InfluxDB gives for its drops: its storage layer checks tags before fields, so
    /// a `time` tag is named before a `time` field whatever the line order.
    pub fn drop_reason(&self) -> Option<&Reason> {
        let drops = || {
            self.rejected
                .iter()
                .map(|r| &r.reason)
                .filter(|r| r.is_drop())
        };
        drops()
            .find(|r| matches!(r, Reason::TimeTag(_)))
            .or_else(|| drops().next())
    }

    /// The error text InfluxDB 1.6.7 answers, with status 400, for this body once the forwarded
    /// points are stored; `None` when it answers 204. Bytes, not a string: lines quoted in it
    /// may hold any bytes, and InfluxDB's JSON encoding replaces each invalid byte.
    pub fn influx_error(&self) -> Option<Vec<u8>> {
        let parsed = self.points + self.dropped();
        if parsed == 0 {
            return self.parse_errors();
        }
        if let Some(reason) = self.drop_reason() {
            let mut out = b"partial write: ".to_vec();
            reason.write_to(&mut out);
            out.extend_from_slice(format!(" dropped={}", self.dropped()).as_bytes());
            return Some(out);
        }
        let errors = self.parse_errors()?;
        let mut out = b"partial write: ".to_vec();
        out.extend_from_slice(&errors);
        out.extend_from_slice(b" dropped=0");
        Some(out)
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
