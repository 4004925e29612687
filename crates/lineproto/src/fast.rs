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

use wide::u8x16;

use crate::exact::PointInfo;
use crate::precision::Precision;

/// Bytes indexed at a time. Lines longer than a window go to `exact`.
const WINDOW: usize = 64 * 1024;

/// The masks of 64 bytes: bit `k` describes byte `k`.
#[derive(Debug, Clone, Copy, Default)]
struct Block {
    /// `=`, space or comma.
    delim: u64,
    /// Not an ASCII digit.
    nondigit: u64,
    /// `\n`, `"` or `\`: where a plain line ends, or where it turns out not to be plain.
    stop: u64,
}

impl Block {
    fn of(bytes: &[u8; 64]) -> Self {
        let (lanes, _) = bytes.as_chunks::<16>();
        let mut block = Block::default();
        for (k, lane) in lanes.iter().enumerate() {
            let v = u8x16::new(*lane);
            let delim = v.simd_eq(u8x16::splat(b'='))
                | v.simd_eq(u8x16::splat(b' '))
                | v.simd_eq(u8x16::splat(b','));
            let digit = v.max(u8x16::splat(b'0')).min(u8x16::splat(b'9')).simd_eq(v);
            let stop = v.simd_eq(u8x16::splat(b'\n'))
                | v.simd_eq(u8x16::splat(b'"'))
                | v.simd_eq(u8x16::splat(b'\\'));
            let shift = 16 * k;
            block.delim |= u64::from(delim.to_bitmask()) << shift;
            block.nondigit |= u64::from(!digit.to_bitmask() & 0xffff) << shift;
            block.stop |= u64::from(stop.to_bitmask()) << shift;
        }
        block
    }
}

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
        self.blocks.extend(chunks.iter().map(Block::of));
        if !rest.is_empty() {
            // Zero padding matches no mask but `nondigit`, and lookups stop at `end` anyway.
            let mut padded = [0u8; 64];
            padded[..rest.len()].copy_from_slice(rest);
            self.blocks.push(Block::of(&padded));
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

/// Successive delimiter positions from a starting point: one bit operation per token.
struct Delims<'i, 'a> {
    ix: &'i Index<'a>,
    block: usize,
    /// Body position of bit 0 of `bits`.
    block_start: usize,
    bits: u64,
}

impl Delims<'_, '_> {
    /// The next delimiter position, or the window's end.
    #[inline(always)]
    fn next(&mut self) -> usize {
        loop {
            if self.bits != 0 {
                // Padding past the window's end holds no delimiter, so `at` is inside it.
                let at = self.block_start + self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                return at;
            }
            self.block += 1;
            self.block_start += 64;
            match self.ix.blocks.get(self.block) {
                Some(b) => self.bits = b.delim,
                None => return self.ix.end,
            }
        }
    }
}

impl<'a> Index<'a> {
    #[inline(always)]
    fn delims_from(&self, from: usize) -> Delims<'_, 'a> {
        let rel = from - self.base;
        let block = rel / 64;
        let bits = self
            .blocks
            .get(block)
            .map_or(0, |b| b.delim & (!0u64 << (rel % 64)));
        Delims {
            ix: self,
            block,
            block_start: self.base + block * 64,
            bits,
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
#[inline]
pub(crate) fn parse_indexed(
    ix: &Index<'_>,
    s: usize,
    e: usize,
    limits: &TimeLimits,
) -> Option<PointInfo> {
    let body = ix.body;
    if e - s > MAX_FAST_LINE || e > ix.end {
        return None;
    }
    let mut delims = ix.delims_from(s);

    // Measurement: up to the first comma or space.
    let mut i = delims.next();
    if i >= e || i == s || body[i] == b'=' {
        return None;
    }

    // Tags, strictly increasing by key (so neither unsorted nor duplicated).
    let mut time_tag = false;
    if body[i] == b',' {
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
            if i >= e || body[i] != b'=' || i == key_start {
                return None;
            }
            let key = &body[key_start..i];
            if key_not_after(key, prev_key) {
                return None;
            }
            time_tag |= is_time(key);
            prev_key = key;
            let value_start = i + 1;
            i = delims.next();
            if i >= e || i == value_start || body[i] == b'=' {
                return None;
            }
            if body[i] == b' ' {
                break;
            }
        }
    }

    // Fields: key=value pairs separated by commas.
    i += 1;
    if i >= e || matches!(body[i], b' ' | b'\t' | 0) {
        return None;
    }
    let mut non_time_field = false;
    loop {
        let key_start = i;
        i = delims.next();
        if i >= e || body[i] != b'=' || i == key_start {
            return None;
        }
        non_time_field |= !is_time(&body[key_start..i]);
        let value_start = i + 1;
        i = delims.next().min(e);
        if !value_ok(ix, value_start, i) {
            return None;
        }
        if i == e || body[i] == b' ' {
            break;
        }
        if body[i] != b',' {
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
        let negative = body[ts] == b'-';
        let digits = &body[ts + usize::from(negative)..e];
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

/// Whether `body[s..e]` is a field value that is certainly valid: a short decimal float without
/// exponent, an `i` integer short enough not to overflow, or a boolean spelling. Decided from
/// the value's non-digit bits, so that the common numbers take no per-byte look.
#[inline(always)]
fn value_ok(ix: &Index<'_>, s: usize, e: usize) -> bool {
    let body = ix.body;
    let len = e - s;
    if len == 0 || len > 24 {
        // Floats of 25 characters and more, and long integers, need `exact`'s range checks.
        return false;
    }
    let nondigits = ix.nondigits(s, len);
    if nondigits == 0 {
        return true;
    }
    let sign = usize::from(body[s] == b'-');
    let rest = nondigits & !(sign as u64);
    if rest == 0 {
        return len > sign;
    }
    if rest & (rest - 1) != 0 {
        return is_bool(&body[s..e]);
    }
    // One non-digit besides the sign: a decimal point, the integer suffix, or a letter.
    let at = rest.trailing_zeros() as usize;
    match body[s + at] {
        b'.' => len > sign + 1,
        // 18 digits cannot overflow int64; longer ones go to `exact`.
        b'i' if at == len - 1 => (1..=18).contains(&(len - 1 - sign)),
        _ => is_bool(&body[s..e]),
    }
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
    fn block_masks_match_bytewise_classification() {
        let mut bytes = [0u8; 64];
        for (k, b) in bytes.iter_mut().enumerate() {
            *b = (k as u8).wrapping_mul(37).wrapping_add(7);
        }
        for round in 0..4u8 {
            let shifted = bytes.map(|b| b.wrapping_add(round.wrapping_mul(64)));
            let block = Block::of(&shifted);
            for (k, &b) in shifted.iter().enumerate() {
                let bit = |m: u64| m >> k & 1 == 1;
                assert_eq!(bit(block.delim), matches!(b, b'=' | b' ' | b','), "{b}");
                assert_eq!(bit(block.nondigit), !b.is_ascii_digit(), "{b}");
                assert_eq!(bit(block.stop), matches!(b, b'\n' | b'"' | b'\\'), "{b}");
            }
        }
    }

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
