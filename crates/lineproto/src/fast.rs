//! The fast path: accepts, with a handful of instructions per token, the lines agents send.
//!
//! A window of the body is first indexed 64 bytes at a time with SIMD compares into bitmasks
//! (where the delimiters `=`, space and comma are, where the non-digits are, where a line may
//! end); the parse then jumps from delimiter to delimiter instead of looking at every byte.
//!
//! It handles "plain" lines only (no `"` and no `\`, so no escapes and no strings) whose tags
//! are sorted, with single spaces between sections, short numbers and a plain timestamp. For
//! such a line every rule of the original parser reduces to the checks below. Anything else,
//! valid or not, answers `None` and goes to [`crate::exact`], which alone produces error
//! messages. Property tests hold this module to "`Some` only where `exact` agrees".

use crate::classify::{Block, classify};
use crate::exact::PointInfo;
use crate::precision::Precision;

/// Bytes indexed at a time. Lines longer than a window go to `exact`.
const WINDOW: usize = 64 * 1024;

/// Bitmask index of a window `[base, end)` of the body.
pub(crate) struct Index<'a> {
    body: &'a [u8],
    base: usize,
    end: usize,
    blocks: Vec<Block>,
}

impl<'a> Index<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        let mut index = Index {
            body,
            base: 0,
            end: 0,
            blocks: Vec::with_capacity(WINDOW.min(body.len()) / 64 + 1),
        };
        index.rebase(0);
        index
    }

    /// Indexes the window that starts at `at`.
    fn rebase(&mut self, at: usize) {
        self.base = at;
        self.end = (at + WINDOW).min(self.body.len());
        self.blocks.clear();
        let (chunks, rest) = self.body[at..self.end].as_chunks::<64>();
        classify(chunks, &mut self.blocks);
        if !rest.is_empty() {
            // Zero padding matches no mask but `nondigit`, and lookups stop at `end` anyway.
            let mut padded = [0u8; 64];
            padded[..rest.len()].copy_from_slice(rest);
            classify(&[padded], &mut self.blocks);
        }
    }

    /// The first position at or after `from` whose bit is set in `mask`, or `self.end`.
    #[inline(always)]
    fn next(&self, mask: fn(&Block) -> u64, from: usize) -> usize {
        let rel = from - self.base;
        let mut b = rel / 64;
        let Some(block) = self.blocks.get(b) else {
            return self.end;
        };
        let mut bits = mask(block) & (!0u64 << (rel % 64));
        loop {
            if bits != 0 {
                return (self.base + b * 64 + bits.trailing_zeros() as usize).min(self.end);
            }
            b += 1;
            match self.blocks.get(b) {
                Some(block) => bits = mask(block),
                None => return self.end,
            }
        }
    }

    /// The non-digit bits of `len` (at most 32) bytes from `from`, bit 0 for `from`. Bytes
    /// outside the window count as non-digits.
    #[inline(always)]
    fn nondigits(&self, from: usize, len: usize) -> u64 {
        let rel = from - self.base;
        let (b, off) = (rel / 64, rel % 64);
        let word = |b: usize| self.blocks.get(b).map_or(!0, |x| x.nondigit);
        let mut bits = word(b) >> off;
        if off + len > 64 {
            bits |= word(b + 1) << (64 - off);
        }
        bits & ((1u64 << len) - 1)
    }

    /// The end of the line that starts at `start` (the index of its `\n`, or the body's end)
    /// and whether the line is plain and indexed, so that [`parse_indexed`] may read it.
    #[inline]
    pub(crate) fn line_end(&mut self, start: usize) -> (usize, bool) {
        if start >= self.end {
            self.rebase(start);
        }
        let mut stop = self.next(|b| b.stop, start);
        if stop == self.end && self.end < self.body.len() && self.base != start {
            // The line may go on past the window: index a window that starts with it.
            self.rebase(start);
            stop = self.next(|b| b.stop, start);
        }
        if stop < self.body.len() && self.body[stop] == b'\n' {
            return (stop, true);
        }
        if stop == self.body.len() {
            return (stop, true);
        }
        (crate::exact::scan_line(self.body, start), false)
    }
}

/// Successive delimiter positions of one line, one bit operation per token. The delimiter word
/// and the non-digit word of the current block are held here, so that neither a token nor a
/// field value lying in that block reads the index again.
struct Cursor<'i> {
    /// The blocks after the current one.
    rest: std::slice::Iter<'i, Block>,
    /// Body position of bit 0 of the current block.
    block_start: usize,
    /// Delimiters of the current block not yet returned.
    bits: u64,
    /// Non-digits of the current block.
    nondigit: u64,
    /// What [`Cursor::next`] answers once the window holds no further delimiter: the line's end,
    /// which callers treat like any position at or past it.
    end: usize,
}

impl Cursor<'_> {
    /// The next delimiter position (possibly past the line), or `end`.
    #[inline(always)]
    fn next(&mut self) -> usize {
        loop {
            if self.bits != 0 {
                // Padding past the window's end holds no delimiter, so `at` is inside it.
                let at = self.block_start + self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                return at;
            }
            let Some(block) = self.rest.next() else {
                // Past every block, so `block_start` exceeds any position of the line.
                self.block_start += 64;
                return self.end;
            };
            self.block_start += 64;
            self.bits = block.delim;
            self.nondigit = block.nondigit;
        }
    }

    /// The non-digit bits of `body[s..s + len]` (`len` at most 24), bit 0 for `s`, where
    /// `s + len` is at or before the position [`Cursor::next`] last returned.
    #[inline(always)]
    fn nondigits(&self, ix: &Index<'_>, s: usize, len: usize) -> u64 {
        if s >= self.block_start {
            // The value ends at or before a delimiter of this block (or the line's end, which
            // is then before that delimiter): it lies in this block.
            (self.nondigit >> (s - self.block_start)) & ((1u64 << len) - 1)
        } else {
            ix.nondigits(s, len)
        }
    }
}

/// The timestamps a precision admits, as digit strings, so that a timestamp is checked by
/// comparing bytes rather than by converting it.
pub(crate) struct TimeLimits {
    max: Vec<u8>,
    min_magnitude: Vec<u8>,
}

impl TimeLimits {
    pub(crate) fn new(precision: Precision) -> Self {
        let n = precision.nanos();
        TimeLimits {
            max: (crate::error::MAX_NANO_TIME / n).to_string().into_bytes(),
            min_magnitude: (crate::error::MIN_NANO_TIME / n)
                .unsigned_abs()
                .to_string()
                .into_bytes(),
        }
    }

    /// True when `digits` (no sign, no leading zero) is certainly within range.
    #[inline(always)]
    fn admits(&self, digits: &[u8], negative: bool) -> bool {
        let limit = if negative {
            &self.min_magnitude
        } else {
            &self.max
        };
        match digits.len().cmp(&limit.len()) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            // The first digit nearly always decides, without a call to `memcmp`.
            std::cmp::Ordering::Equal => match (digits.first(), limit.first()) {
                (Some(d), Some(l)) if d != l => d < l,
                _ => digits <= &limit[..],
            },
        }
    }
}

/// Lines longer than this go to `exact`, which checks InfluxDB's key-length limit; below it the
/// limit cannot be reached.
const MAX_FAST_LINE: usize = 60_000;

/// Validates the plain line `body[s..e]` (leading whitespace skipped) through the index. `None`
/// means "ask `exact`", not "invalid".
// Not inlined: in the caller's loop its state would not fit in registers and be spilled.
#[inline(never)]
pub(crate) fn parse_indexed(
    ix: &Index<'_>,
    s: usize,
    e: usize,
    limits: &TimeLimits,
) -> Option<PointInfo> {
    if e - s > MAX_FAST_LINE || e > ix.end {
        return None;
    }
    // Every position is compared with `e` before its byte is read, so reads of `line` need no
    // bounds check.
    let line = ix.body.get(..e)?;
    let rel = s - ix.base;
    let first = rel / 64;
    let block = ix.blocks.get(first)?;
    let mut delims = Cursor {
        rest: ix.blocks.get(first + 1..).unwrap_or_default().iter(),
        block_start: ix.base + first * 64,
        bits: block.delim & (!0u64 << (rel % 64)),
        nondigit: block.nondigit,
        end: e,
    };

    // Measurement: up to the first comma or space.
    let mut i = delims.next();
    if i >= e || i == s || line[i] == b'=' {
        return None;
    }

    // Tags, strictly increasing by key (so neither unsorted nor duplicated).
    let mut time_tag = false;
    if line[i] == b',' {
        let mut prev_key: &[u8] = &[];
        let mut tags = 0;
        loop {
            // Some tag counts of 100 and more crash InfluxDB; `exact` knows which.
            tags += 1;
            if tags >= 100 {
                return None;
            }
            let key_start = i + 1;
            i = delims.next();
            if i >= e || line[i] != b'=' || i == key_start {
                return None;
            }
            let key = &line[key_start..i];
            if key_not_after(key, prev_key) {
                return None;
            }
            time_tag |= is_time(key);
            prev_key = key;
            let value_start = i + 1;
            i = delims.next();
            if i >= e || i == value_start || line[i] == b'=' {
                return None;
            }
            if line[i] == b' ' {
                break;
            }
        }
    }

    // Fields: key=value pairs separated by commas.
    i += 1;
    if i >= e || matches!(line[i], b' ' | b'\t' | 0) {
        return None;
    }
    let mut non_time_field = false;
    loop {
        let key_start = i;
        i = delims.next();
        if i >= e || line[i] != b'=' || i == key_start {
            return None;
        }
        non_time_field |= !is_time(&line[key_start..i]);
        let value_start = i + 1;
        i = delims.next().min(e);
        let len = i - value_start;
        if len == 0 || len > 24 {
            // Floats of 25 characters and more, and long integers, need `exact`'s range checks.
            return None;
        }
        let nondigits = delims.nondigits(ix, value_start, len);
        if !value_ok(&line[value_start..i], nondigits) {
            return None;
        }
        if i == e || line[i] == b' ' {
            break;
        }
        if line[i] != b',' {
            return None;
        }
        i += 1;
    }

    // Timestamp: digits up to the line's end, no further delimiter.
    let has_timestamp = i < e;
    if has_timestamp {
        let ts = i + 1;
        if ts >= e || delims.next() < e {
            return None;
        }
        let negative = line[ts] == b'-';
        let digits = &line[ts + usize::from(negative)..];
        let nondigits = ix.nondigits(ts, (e - ts).min(32)) & !u64::from(negative);
        if nondigits != 0 || digits.is_empty() || digits.len() > 19 {
            return None;
        }
        if digits[0] == b'0' && digits.len() > 1 || !limits.admits(digits, negative) {
            return None;
        }
    }

    Some(PointInfo {
        has_timestamp,
        time_tag,
        only_time_fields: !non_time_field,
        engine_fails: None,
    })
}

/// Whether `value` (1 to 24 bytes, `nondigits` its non-digit bits) is a field value that is
/// certainly valid: a short decimal float without exponent, an `i` integer short enough not
/// to overflow, or a boolean spelling. Decided from the non-digit bits, so that the common
/// numbers take at most one byte read.
#[inline(always)]
fn value_ok(value: &[u8], nondigits: u64) -> bool {
    let len = value.len();
    if nondigits == 0 {
        return true;
    }
    let at = nondigits.trailing_zeros() as usize;
    let rest = nondigits & (nondigits - 1);
    if rest == 0 {
        // One non-digit: a decimal point, a sign, the integer suffix, or a boolean letter.
        return match value.get(at) {
            Some(b'.') => len > 1,
            Some(b'-') if at == 0 => len > 1,
            // 18 digits cannot overflow int64; longer ones go to `exact`.
            Some(b'i') if at == len - 1 => (2..=19).contains(&len),
            _ => is_bool(value),
        };
    }
    if at == 0 && value.first() == Some(&b'-') && rest & (rest - 1) == 0 {
        // A sign and one more non-digit: a decimal point or the integer suffix.
        let at = rest.trailing_zeros() as usize;
        return match value.get(at) {
            Some(b'.') => len > 2,
            Some(b'i') if at == len - 1 => (3..=20).contains(&len),
            _ => false,
        };
    }
    is_bool(value)
}

/// The spellings of a boolean field value.
#[inline(always)]
fn is_bool(value: &[u8]) -> bool {
    matches!(
        value,
        b"t" | b"T" | b"f" | b"F" | b"true" | b"True" | b"TRUE" | b"false" | b"False" | b"FALSE"
    )
}

/// Whether a key is `time`, without a call to `memcmp`.
#[inline(always)]
fn is_time(key: &[u8]) -> bool {
    matches!(key, [b't', b'i', b'm', b'e'])
}

/// `a <= b` for tag keys, deciding on the first two bytes when they differ (they nearly always
/// do) without a call to `memcmp`; `b` is empty before a line's first tag.
#[inline(always)]
fn key_not_after(a: &[u8], b: &[u8]) -> bool {
    if b.is_empty() {
        return a.is_empty();
    }
    let head = |k: &[u8]| {
        u16::from_be_bytes([
            k.first().copied().unwrap_or(0),
            k.get(1).copied().unwrap_or(0),
        ])
    };
    let (x, y) = (head(a), head(b));
    if x != y && a.len() >= 2 && b.len() >= 2 {
        return x < y;
    }
    a <= b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_take_the_fast_path_only_where_exact_agrees() {
        let fast_ones = [
            "0",
            "-1",
            "1.5",
            "-.5",
            "5.",
            ".5",
            "1i",
            "-1i",
            "123456789012345678i",
            "t",
            "F",
            "true",
            "FALSE",
        ];
        let exact_ones = [
            "-",
            ".",
            "-.",
            "-i",
            "i",
            "1.2.3",
            "--1",
            "+1",
            "1-",
            "1i1",
            "tr",
            "-t",
            "1e5",
            "1234567890123456789i",
            "-1234567890123456789i",
            "1.5i",
            "ti",
        ];
        for (values, fast_expected) in [(&fast_ones[..], true), (&exact_ones[..], false)] {
            for v in values {
                let line = format!("m f={v} 1");
                let ix = Index::new(line.as_bytes());
                let limits = TimeLimits::new(Precision::Nanoseconds);
                let fast = parse_indexed(&ix, 0, line.len(), &limits).is_some();
                assert_eq!(fast, fast_expected, "{line}");
                let exact = crate::exact::parse_point(line.as_bytes(), Precision::Nanoseconds);
                assert!(
                    !fast || exact.is_ok(),
                    "{line}: fast accepts what exact refuses"
                );
            }
        }
    }

    /// What the fast path and `exact` say of the line `body[s..]` (to its `\n` or the body's
    /// end), checking that the fast path answers only where `exact` agrees.
    fn fast_and_exact(body: &[u8], s: usize) -> (Option<PointInfo>, bool) {
        let mut ix = Index::new(body);
        let (e, plain) = ix.line_end(s);
        assert!(plain, "{:?}", String::from_utf8_lossy(&body[s..e]));
        let limits = TimeLimits::new(Precision::Nanoseconds);
        let fast = parse_indexed(&ix, s, e, &limits);
        let exact = crate::exact::parse_point(&body[s..e], Precision::Nanoseconds);
        if let Some(info) = &fast {
            assert_eq!(
                exact.as_ref().ok(),
                Some(info),
                "{:?}",
                String::from_utf8_lossy(&body[s..e])
            );
        }
        (fast, exact.is_ok())
    }

    #[test]
    fn values_at_every_offset_of_a_block_are_read_as_in_the_middle_of_one() {
        let values = [
            "0",
            "38.3656",
            "-1",
            "-0.5",
            "123456789012345678i",
            "-123456789012345678i",
            "1234567890123456789i",
            "true",
            "F",
            "1.2.3",
            "1e5",
            "--1",
            "1i1",
            "-t",
            "123456789012345678901234",
            "1234567890123456789012345",
        ];
        for value in values {
            for shift in 0..140 {
                for ts in ["", " 1700000000000000000"] {
                    // The line starts after a comment of `shift` bytes, so that its value and
                    // timestamp fall on every offset of a block and across block ends.
                    let line = format!("cpu,host=a,region=eu f=1,g={value},h=2{ts}");
                    let body = format!("#{}\n{line}", "x".repeat(shift));
                    let start = shift + 2;
                    let (fast, _) = fast_and_exact(body.as_bytes(), start);
                    let expected = fast_and_exact(line.as_bytes(), 0).0;
                    assert_eq!(fast, expected, "{line} after {shift}");
                    // The value last on the line, at the body's end without a `\n`.
                    let line = format!("cpu,host=a f=1,g={value}");
                    let body = format!("#{}\n{line}", "x".repeat(shift));
                    let (fast, _) = fast_and_exact(body.as_bytes(), start);
                    assert_eq!(fast, fast_and_exact(line.as_bytes(), 0).0, "{line}");
                }
            }
        }
    }

    #[test]
    fn common_lines_take_the_fast_path_wherever_they_lie() {
        let lines = [
            "cpu,cpu=cpu0,dc=dc0,host=host-00000 usage_user=38.3656,usage_steal=0,n=-1.5 1700000000000000000",
            "mem,host=h total=34359738368i,used=-17179869184i,ok=true,p=12.5",
            "m f=1",
            "m,a=b f=1 -1",
        ];
        for line in lines {
            for shift in 0..140 {
                let body = format!("#{}\n{line}\n", "x".repeat(shift));
                let (fast, exact_ok) = fast_and_exact(body.as_bytes(), shift + 2);
                assert!(exact_ok, "{line}");
                assert!(fast.is_some(), "{line} after {shift} bytes goes to exact");
            }
        }
    }

    #[test]
    fn lines_across_the_window_end_are_read_whole() {
        let line = "cpu,host=a,region=eu usage=38.3656,n=12i,ok=t 1700000000000000000\n";
        for shift in 0..line.len() + 70 {
            let mut body = "#".repeat(shift);
            body.push('\n');
            while body.len() < WINDOW + 2 * line.len() {
                body.push_str(line);
            }
            let fast = crate::validate_with(body.as_bytes(), Precision::Nanoseconds, 0, true);
            let exact = crate::validate_with(body.as_bytes(), Precision::Nanoseconds, 0, false);
            assert_eq!(fast.points(), exact.points(), "{shift}");
            assert_eq!(fast.rejected(), exact.rejected(), "{shift}");
            assert_eq!(fast.points(), (body.len() - shift - 1) / line.len());
            // The fast path took every line, the one across the window's end included.
            let mut ix = Index::new(body.as_bytes());
            let limits = TimeLimits::new(Precision::Nanoseconds);
            let mut pos = shift + 1;
            while pos < body.len() {
                let (end, plain) = ix.line_end(pos);
                assert!(plain);
                assert!(
                    parse_indexed(&ix, pos, end, &limits).is_some(),
                    "{shift} {pos}"
                );
                pos = end + 1;
            }
        }
    }

    #[test]
    fn key_order_matches_slice_order() {
        let keys: [&[u8]; 9] = [
            b"", b"a", b"ab", b"abc", b"abd", b"b", b"ba", b"host", b"hosts",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(key_not_after(a, b), a <= b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn lines_longer_than_a_window_are_found() {
        let mut body = vec![b'a'; WINDOW + 100];
        body[WINDOW + 50] = b'\n';
        let mut ix = Index::new(&body);
        assert_eq!(ix.line_end(0), (WINDOW + 50, false));
        assert_eq!(ix.line_end(WINDOW + 51), (body.len(), true));
        let mut ix = Index::new(&body);
        assert_eq!(ix.line_end(10), (WINDOW + 50, false));
    }
}
