//! Gzip inflation with a hard output cap and Go's error wording.
//!
//! InfluxDB 1.6 reads `Content-Encoding: gzip` bodies with Go's `compress/gzip` (multi-member),
//! and answers a broken body with 400 and Go's error text. Clients see those texts, so this
//! reader reproduces Go's checks in Go's order:
//!
//! | input | Go's error |
//! |---|---|
//! | empty body | `EOF` |
//! | header shorter than 10 bytes, or cut anywhere later | `unexpected EOF` |
//! | wrong magic or method, over-long name/comment, bad header CRC | `gzip: invalid header` |
//! | corrupt deflate data | `flate: corrupt input before offset N` |
//! | CRC-32 or length mismatch in a trailer | `gzip: invalid checksum` |
//!
//! Further members after the first are read the same way; a body that ends exactly after a
//! member is complete. The offset in a `flate:` message counts bytes of the member's deflate
//! data consumed when zlib gave up; Go counts the same bytes but zlib may read a little further
//! before noticing, so that number can differ from influxd's.
//!
//! Unlike 1.6.7, which does not cap the inflated size at all, output is capped: the buffer
//! never grows past `limit + 1` bytes, so a gzip bomb costs at most `limit` bytes of memory and
//! the time to inflate that much.

use flate2::{Crc, Decompress, FlushDecompress, Status};

/// Go's `compress/gzip` and `compress/flate` errors, displayed with Go's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GzipError {
    /// `io.EOF`: the body is empty.
    #[error("EOF")]
    Eof,
    /// `io.ErrUnexpectedEOF`: the body ends inside a member.
    #[error("unexpected EOF")]
    UnexpectedEof,
    /// `gzip.ErrHeader`.
    #[error("gzip: invalid header")]
    InvalidHeader,
    /// `gzip.ErrChecksum`.
    #[error("gzip: invalid checksum")]
    InvalidChecksum,
    /// `flate.CorruptInputError`.
    #[error("flate: corrupt input before offset {0}")]
    CorruptInput(u64),
}

/// Why [`gunzip`] stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GunzipError {
    /// The inflated data is longer than the limit.
    #[error("inflated body is larger than the limit")]
    TooLarge,
    /// The data is not valid gzip.
    #[error(transparent)]
    Invalid(#[from] GzipError),
}

const FTEXT_IGNORED: u8 = 0x01;
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
/// Go reads NUL-terminated header strings into a 512-byte buffer.
const GO_HEADER_STRING_MAX: usize = 512;
/// Growth step of the output buffer while it is small.
const MIN_GROWTH: usize = 64 * 1024;

/// A cursor over the input that fails with Go's EOF errors.
struct Input<'a> {
    /// The whole compressed body.
    data: &'a [u8],
    /// Bytes consumed so far.
    pos: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GzipError> {
        let end = self.pos.checked_add(n).ok_or(GzipError::UnexpectedEof)?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or(GzipError::UnexpectedEof)?;
        self.pos = end;
        Ok(bytes)
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }
}

/// Reads one member header; `first` decides whether an empty input is `EOF` (an error) or the
/// clean end of a multi-member stream (`Ok(false)`).
fn read_header(input: &mut Input<'_>, first: bool) -> Result<bool, GzipError> {
    let remaining = input.rest().len();
    if remaining == 0 {
        return if first {
            Err(GzipError::Eof)
        } else {
            Ok(false)
        };
    }
    let start = input.pos;
    let fixed = input.take(10)?;
    if fixed[0] != 0x1f || fixed[1] != 0x8b || fixed[2] != 8 {
        return Err(GzipError::InvalidHeader);
    }
    let flags = fixed[3] & !FTEXT_IGNORED;
    if flags & FEXTRA != 0 {
        let len = input.take(2)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        input.take(len)?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = input.rest();
            match rest.iter().position(|b| *b == 0) {
                Some(i) if i < GO_HEADER_STRING_MAX => {
                    input.take(i + 1)?;
                }
                Some(_) => return Err(GzipError::InvalidHeader),
                None if rest.len() >= GO_HEADER_STRING_MAX => return Err(GzipError::InvalidHeader),
                None => return Err(GzipError::UnexpectedEof),
            }
        }
    }
    if flags & FHCRC != 0 {
        let header = &input.data[start..input.pos];
        let got = input.take(2)?;
        let mut crc = Crc::new();
        crc.update(header);
        if u16::from_le_bytes([got[0], got[1]]) != (crc.sum() & 0xffff) as u16 {
            return Err(GzipError::InvalidHeader);
        }
    }
    Ok(true)
}

/// Inflates a (possibly multi-member) gzip body into at most `limit` bytes.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let cap = limit.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).max(1024).min(cap));
    let mut input = Input { data, pos: 0 };
    let mut first = true;
    while read_header(&mut input, first)? {
        first = false;
        let member_start = out.len();
        let mut inflater = Decompress::new(false);
        let deflate_start = input.pos;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= cap {
                    return Err(GunzipError::TooLarge);
                }
                let grow = out.len().max(MIN_GROWTH).min(cap - out.len());
                out.reserve_exact(grow);
            }
            let in_before = inflater.total_in();
            let out_before = out.len();
            let status = inflater
                .decompress_vec(input.rest(), &mut out, FlushDecompress::None)
                .map_err(|_| GzipError::CorruptInput(inflater.total_in()))?;
            input.pos = deflate_start + usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
            if out.len() > limit {
                return Err(GunzipError::TooLarge);
            }
            match status {
                Status::StreamEnd => break,
                Status::Ok | Status::BufError => {
                    let progressed = inflater.total_in() != in_before || out.len() != out_before;
                    let room_left = out.len() < out.capacity();
                    if !progressed && room_left {
                        // zlib wants input we do not have.
                        return Err(GzipError::UnexpectedEof.into());
                    }
                }
            }
        }
        let trailer = input.take(8)?;
        let mut crc = Crc::new();
        crc.update(&out[member_start..]);
        let want_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let want_len = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        if crc.sum() != want_crc || (out.len() - member_start) as u32 != want_len {
            return Err(GzipError::InvalidChecksum.into());
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).expect("in-memory write");
        e.finish().expect("in-memory finish")
    }

    fn err(data: &[u8]) -> String {
        gunzip(data, 1 << 20).expect_err("invalid").to_string()
    }

    #[test]
    fn round_trip() {
        let body = b"cpu,host=a usage=1 1\nmem,host=a used=2 2\n".repeat(1000);
        assert_eq!(gunzip(&gz(&body), body.len()).expect("valid"), body);
        assert_eq!(gunzip(&gz(b""), 0).expect("valid"), b"");
    }

    #[test]
    fn multiple_members_are_concatenated() {
        let mut data = gz(b"cpu v=1 1\n");
        data.extend(gz(b"cpu v=2 2\n"));
        assert_eq!(
            gunzip(&data, 100).expect("valid"),
            b"cpu v=1 1\ncpu v=2 2\n"
        );
    }

    #[test]
    fn go_error_texts() {
        let good = gz(b"cpu v=1 1\n");
        assert_eq!(err(b""), "EOF");
        assert_eq!(err(b"abc"), "unexpected EOF");
        assert_eq!(err(&good[..10]), "unexpected EOF");
        assert_eq!(err(&good[..20]), "unexpected EOF");
        assert_eq!(err(&good[..good.len() - 1]), "unexpected EOF");
        assert_eq!(err(b"abcdefghijklmnop"), "gzip: invalid header");
        assert_eq!(err(b"cpu,host=a v=1 1700000000\n"), "gzip: invalid header");

        let mut bad_method = good.clone();
        bad_method[2] = 7;
        assert_eq!(err(&bad_method), "gzip: invalid header");

        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 0xff;
        assert_eq!(err(&bad_crc), "gzip: invalid checksum");

        let mut bad_len = good.clone();
        bad_len[n - 1] ^= 0xff;
        assert_eq!(err(&bad_len), "gzip: invalid checksum");

        // 0xff 0xff: final block of the reserved type 3.
        let mut corrupt = good.clone();
        corrupt[10] = 0xff;
        corrupt[11] = 0xff;
        assert_eq!(err(&corrupt), "flate: corrupt input before offset 1");

        // Trailing garbage after a complete member is read as a second header, as Go does.
        let mut short_junk = good.clone();
        short_junk.extend_from_slice(b"junk");
        assert_eq!(err(&short_junk), "unexpected EOF");
        let mut long_junk = good.clone();
        long_junk.extend_from_slice(b"junk-junk-junk");
        assert_eq!(err(&long_junk), "gzip: invalid header");
    }

    #[test]
    fn optional_header_fields() {
        let payload = b"cpu v=1 1\n";
        let deflated = {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
            e.write_all(payload).expect("write");
            e.finish().expect("finish")
        };
        let mut crc = Crc::new();
        crc.update(payload);
        let trailer: Vec<u8> = crc
            .sum()
            .to_le_bytes()
            .into_iter()
            .chain((payload.len() as u32).to_le_bytes())
            .collect();
        let build = |flags: u8, extra: &[u8], header_crc: Option<u16>| {
            let mut h = vec![0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3];
            h.extend_from_slice(extra);
            if let Some(c) = header_crc {
                h.extend_from_slice(&c.to_le_bytes());
            } else if flags & FHCRC != 0 {
                let mut crc = Crc::new();
                crc.update(&h);
                h.extend_from_slice(&((crc.sum() & 0xffff) as u16).to_le_bytes());
            }
            h.extend_from_slice(&deflated);
            h.extend_from_slice(&trailer);
            h
        };
        let fields = [
            &[3u8, 0, b'a', b'b', b'c'][..],
            b"name.txt\0",
            b"a comment\0",
        ]
        .concat();
        let all = build(
            FEXTRA | FNAME | FCOMMENT | FHCRC | FTEXT_IGNORED,
            &fields,
            None,
        );
        assert_eq!(gunzip(&all, 100).expect("valid"), payload);

        let bad_hcrc = build(FNAME | FHCRC, b"x\0", Some(0x1234));
        assert_eq!(err(&bad_hcrc), "gzip: invalid header");

        let long_name = [vec![b'n'; 511], vec![0]].concat();
        assert_eq!(
            gunzip(&build(FNAME, &long_name, None), 100).expect("511 bytes fit"),
            payload
        );
        let too_long = [vec![b'n'; 512], vec![0]].concat();
        assert_eq!(err(&build(FNAME, &too_long, None)), "gzip: invalid header");

        // A name that never ends.
        assert_eq!(
            err(&[0x1f, 0x8b, 8, FNAME, 0, 0, 0, 0, 0, 3, b'a', b'b']),
            "unexpected EOF"
        );
        // Extra field longer than the body.
        assert_eq!(
            err(&[0x1f, 0x8b, 8, FEXTRA, 0, 0, 0, 0, 0, 3, 9, 0, 1]),
            "unexpected EOF"
        );
    }

    #[test]
    fn limit_is_exact() {
        let body = vec![b'a'; 10_000];
        let data = gz(&body);
        assert_eq!(gunzip(&data, 10_000).expect("at the limit").len(), 10_000);
        assert_eq!(gunzip(&data, 9_999), Err(GunzipError::TooLarge));
        assert_eq!(gunzip(&data, 0), Err(GunzipError::TooLarge));
    }

    #[test]
    fn damaged_input_never_panics_or_passes_the_limit() {
        let mut data = gz(&b"cpu,host=a usage=1 1\n".repeat(50));
        data.extend(gz(b"mem v=2 2\n"));
        let limit = 2000;
        let check = |input: &[u8]| match gunzip(input, limit) {
            Ok(out) => assert!(out.len() <= limit),
            Err(GunzipError::TooLarge | GunzipError::Invalid(_)) => {}
        };
        for end in 0..=data.len() {
            check(&data[..end]);
        }
        for i in 0..data.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = data.clone();
                damaged[i] ^= flip;
                check(&damaged);
            }
        }
        // Pseudo-random garbage after a valid gzip magic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..500 {
            let mut junk = vec![0x1f, 0x8b, 8];
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                junk.push(x as u8);
            }
            check(&junk);
        }
    }

    /// Zeros streamed into a `GzEncoder`: one member, `mib` MiB inflated.
    pub(crate) fn single_member_bomb(mib: usize, level: Compression) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), level);
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..mib {
            e.write_all(&zeros).expect("in-memory write");
        }
        e.finish().expect("in-memory finish")
    }

    /// 1 GiB of zeros as 1024 gzip members of 1 MiB each: valid gzip (Go's reader, `gzip -d` and
    /// ours inflate all members), about 1 MB on the wire, and cheap to build in a debug test.
    pub(crate) fn one_gib_bomb() -> Vec<u8> {
        single_member_bomb(1, Compression::best()).repeat(1024)
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let start = std::time::Instant::now();
        let bomb = one_gib_bomb();
        assert!(bomb.len() < 2 << 20, "{}", bomb.len());
        assert_eq!(gunzip(&bomb, 25_000_000), Err(GunzipError::TooLarge));
        // The members before the limit are complete and valid.
        assert_eq!(
            gunzip(&bomb[..bomb.len() / 1024 * 3], 25_000_000).map(|v| v.len()),
            Ok(3 << 20)
        );
        // Generous bound: stopping at 25 MB takes well under a second even unoptimised.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn single_member_bomb_stops_at_the_limit() {
        let bomb = single_member_bomb(30, Compression::fast());
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        assert_eq!(gunzip(&bomb, 25_000_000), Err(GunzipError::TooLarge));
        assert_eq!(gunzip(&bomb, 30 << 20).map(|v| v.len()), Ok(30 << 20));
    }
}
