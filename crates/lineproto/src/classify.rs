//! The bitmasks of 64-byte blocks that the fast path walks: where the delimiters are, where
//! the non-digits are, where a plain line stops.
//!
//! Building them is about a quarter of the fast path's work with 16-byte SSE2 compares, the
//! x86-64 baseline. Where the CPU has AVX-512BW (one compare classifies 64 bytes straight into
//! a mask) or AVX2 (32 bytes), that version is chosen at run time. Every version yields the
//! same masks; the tests hold each one available here to the byte-by-byte definition.
// The wide versions need `std::arch` intrinsics: loading a vector from a byte array, and
// calling a function compiled for a CPU feature once that feature has been detected.
#![allow(unsafe_code)]

use wide::i8x16;

/// The masks of 64 bytes: bit `k` describes byte `k`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Block {
    /// `=`, space or comma.
    pub(crate) delim: u64,
    /// Not an ASCII digit.
    pub(crate) nondigit: u64,
    /// `\n`, `"` or `\`: where a plain line ends, or where it turns out not to be plain.
    pub(crate) stop: u64,
}

impl Block {
    /// The definition, one byte at a time.
    #[cfg(test)]
    pub(crate) fn bytewise(bytes: &[u8; 64]) -> Self {
        let mut block = Block::default();
        for (k, &b) in bytes.iter().enumerate() {
            block.delim |= u64::from(matches!(b, b'=' | b' ' | b',')) << k;
            block.nondigit |= u64::from(!b.is_ascii_digit()) << k;
            block.stop |= u64::from(matches!(b, b'\n' | b'"' | b'\\')) << k;
        }
        block
    }
}

/// An implementation of the classification: appends the masks of each chunk to `out`.
type Classify = fn(&[[u8; 64]], &mut Vec<Block>);

/// Appends the masks of each 64-byte chunk to `out`, with the widest vectors this CPU has.
pub(crate) fn classify(chunks: &[[u8; 64]], out: &mut Vec<Block>) {
    best()(chunks, out)
}

/// The implementation for this CPU. Detection is cached by `std`, so asking per window of
/// 64 KiB costs nothing measurable.
fn best() -> Classify {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx512bw() {
            return x86::avx512bw;
        }
        if x86::has_avx2() {
            return x86::avx2;
        }
    }
    portable
}

/// Every implementation this CPU can run, with its name, for the tests.
#[cfg(test)]
pub(crate) fn available() -> Vec<(&'static str, Classify)> {
    let mut all: Vec<(&'static str, Classify)> = vec![("portable", portable)];
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx2() {
            all.push(("avx2", x86::avx2));
        }
        if x86::has_avx512bw() {
            all.push(("avx512bw", x86::avx512bw));
        }
    }
    all
}

/// 16 bytes at a time through `wide`: SSE2 on x86-64 (its baseline), NEON or scalar elsewhere.
fn portable(chunks: &[[u8; 64]], out: &mut Vec<Block>) {
    out.extend(chunks.iter().map(|bytes| {
        let (lanes, _) = bytes.as_chunks::<16>();
        let mut block = Block::default();
        for (k, lane) in lanes.iter().enumerate() {
            let v = i8x16::new(lane.map(|b| b as i8));
            let is = |c: u8| v.simd_eq(i8x16::splat(c as i8));
            let delim = is(b'=') | is(b' ') | is(b',');
            // `'0'..='9'` moved to the bottom of the signed range, so that one signed compare
            // finds the non-digits (SSE2 has no unsigned byte compare).
            let nondigit = (v + i8x16::splat(0x50)).simd_gt(i8x16::splat(-119));
            let stop = is(b'\n') | is(b'"') | is(b'\\');
            let shift = 16 * k;
            block.delim |= u64::from(delim.to_bitmask()) << shift;
            block.nondigit |= u64::from(nondigit.to_bitmask()) << shift;
            block.stop |= u64::from(stop.to_bitmask()) << shift;
        }
        block
    }));
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Block;

    pub(super) fn has_avx512bw() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
    }

    pub(super) fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2")
    }

    pub(super) fn avx512bw(chunks: &[[u8; 64]], out: &mut Vec<Block>) {
        out.reserve(chunks.len());
        // SAFETY: chosen only where `has_avx512bw` held.
        unsafe { avx512bw_blocks(chunks, out) }
    }

    pub(super) fn avx2(chunks: &[[u8; 64]], out: &mut Vec<Block>) {
        out.reserve(chunks.len());
        // SAFETY: chosen only where `has_avx2` held.
        unsafe { avx2_blocks(chunks, out) }
    }

    #[target_feature(enable = "avx512bw")]
    fn avx512bw_blocks(chunks: &[[u8; 64]], out: &mut Vec<Block>) {
        let splat = |c: u8| _mm512_set1_epi8(c as i8);
        let (eq, space, comma) = (splat(b'='), splat(b' '), splat(b','));
        let (newline, quote, backslash) = (splat(b'\n'), splat(b'"'), splat(b'\\'));
        let (zero, ten) = (splat(b'0'), splat(10));
        for bytes in chunks {
            // SAFETY: `bytes` is 64 readable bytes; the load has no alignment requirement.
            let v = unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) };
            let is = |c: __m512i| _mm512_cmpeq_epi8_mask(v, c);
            out.push(Block {
                delim: is(eq) | is(space) | is(comma),
                // A digit is below 10 once `'0'` is subtracted, as an unsigned byte.
                nondigit: !_mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, zero), ten),
                stop: is(newline) | is(quote) | is(backslash),
            });
        }
    }

    #[target_feature(enable = "avx2")]
    fn avx2_blocks(chunks: &[[u8; 64]], out: &mut Vec<Block>) {
        let splat = |c: u8| _mm256_set1_epi8(c as i8);
        let (eq, space, comma) = (splat(b'='), splat(b' '), splat(b','));
        let (newline, quote, backslash) = (splat(b'\n'), splat(b'"'), splat(b'\\'));
        let (zero, nine) = (splat(b'0'), splat(9));
        // One half of a block: its 32 mask bits for delimiters, non-digits and stops.
        let half = |v: __m256i| {
            let is = |c: __m256i| _mm256_cmpeq_epi8(v, c);
            let delim = _mm256_or_si256(_mm256_or_si256(is(eq), is(space)), is(comma));
            let stop = _mm256_or_si256(_mm256_or_si256(is(newline), is(quote)), is(backslash));
            // A digit is at most 9 once `'0'` is subtracted, as an unsigned byte: then the
            // unsigned minimum with 9 is the byte itself.
            let shifted = _mm256_sub_epi8(v, zero);
            let digit = _mm256_cmpeq_epi8(_mm256_min_epu8(shifted, nine), shifted);
            let bits = |m: __m256i| u64::from(_mm256_movemask_epi8(m) as u32);
            (bits(delim), !bits(digit) & 0xffff_ffff, bits(stop))
        };
        for bytes in chunks {
            let (low, high) = bytes.split_at(32);
            // SAFETY: each half is 32 readable bytes; the load has no alignment requirement.
            let (lo, hi) = unsafe {
                (
                    _mm256_loadu_si256(low.as_ptr().cast()),
                    _mm256_loadu_si256(high.as_ptr().cast()),
                )
            };
            let (a, b) = (half(lo), half(hi));
            out.push(Block {
                delim: a.0 | b.0 << 32,
                nondigit: a.1 | b.1 << 32,
                stop: a.2 | b.2 << 32,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks holding every byte value at every position of a block.
    fn every_byte_at_every_lane() -> Vec<[u8; 64]> {
        let mut chunks = Vec::new();
        for rotation in 0..64u8 {
            for quarter in 0..4u8 {
                chunks.push(std::array::from_fn(|k| {
                    (k as u8).wrapping_add(rotation) % 64 + 64 * quarter
                }));
            }
        }
        chunks
    }

    #[test]
    fn every_implementation_matches_the_bytewise_definition() {
        let chunks = every_byte_at_every_lane();
        let expected: Vec<Block> = chunks.iter().map(Block::bytewise).collect();
        for (name, f) in available() {
            let mut out = vec![Block::default()];
            f(&chunks, &mut out);
            // Appended after what `out` held.
            assert_eq!(out[0], Block::default(), "{name}");
            assert_eq!(out[1..], expected[..], "{name}");
        }
    }
}
