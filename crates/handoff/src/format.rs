//! On-disk encoding: segment header, record frames and the cursor file. See the crate docs
//! for the layout; this module is pure (no I/O).

use crate::{Error, Record};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"IHAHOFF\0";
/// First bytes of the cursor file.
pub(crate) const CURSOR_MAGIC: [u8; 8] = *b"IHACURS\0";
/// Format version written by this code; the only one it reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Segment header: magic (8) + version (4) + reserved (4).
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
/// Per-record sync marker. 0xFE never occurs in UTF-8, so it cannot occur in valid
/// line-protocol text; a false match is still rejected by the length bound and the CRC.
pub(crate) const FRAME_MARKER: [u8; 4] = [0xFE, b'H', b'Q', 0x01];
/// Frame header: marker (4) + body length (4) + CRC (4).
pub(crate) const FRAME_HEADER_LEN: u64 = 12;
/// Fixed part of a body: kind (1) + timestamp (8) + db len (2) + rp len (2) + precision len (1).
pub(crate) const BODY_FIXED_LEN: usize = 14;
/// Hard upper bound of a body, independent of configuration: anything longer is corruption.
pub(crate) const MAX_BODY_LEN: u64 = 1 << 30;
/// Cursor file: magic (8) + version (4) + segment (8) + offset (8) + CRC (4).
pub(crate) const CURSOR_LEN: usize = 32;

pub(crate) const KIND_WRITE: u8 = 1;
/// A statement alone: the payload is its text.
pub(crate) const KIND_SCHEMA: u8 = 2;
/// A statement with the request's other parameters: the payload is the statement's length
/// (u32 LE), the statement, then the parameters, form-encoded.
pub(crate) const KIND_SCHEMA_PARAMS: u8 = 3;

/// Whether records of `kind` hold a statement (never merged with others).
pub(crate) fn is_schema(kind: u8) -> bool {
    kind == KIND_SCHEMA || kind == KIND_SCHEMA_PARAMS
}

/// The segment header bytes.
pub(crate) fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    BadMagic,
    UnsupportedVersion(u32),
}

pub(crate) fn check_segment_header(
    h: &[u8; SEGMENT_HEADER_LEN as usize],
) -> Result<(), HeaderError> {
    if h[..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let v = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if v != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(v));
    }
    Ok(())
}

fn crc(len_bytes: [u8; 4], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(body);
    h.finalize()
}

/// Encodes one record into a complete frame (header + body).
pub(crate) fn encode_frame(rec: &Record<'_>, ts_ms: u64) -> Result<Vec<u8>, Error> {
    let with_params;
    let (kind, db, rp, precision, payload) = match rec {
        Record::Write {
            db,
            rp,
            precision,
            payload,
        } => (KIND_WRITE, *db, *rp, *precision, *payload),
        Record::Schema {
            db,
            statement,
            params: "",
        } => (KIND_SCHEMA, *db, "", "", statement.as_bytes()),
        Record::Schema {
            db,
            statement,
            params,
        } => {
            let len = u32::try_from(statement.len()).map_err(|_| Error::RecordTooLarge {
                size: statement.len() as u64,
                max: MAX_BODY_LEN,
            })?;
            let mut p = Vec::with_capacity(4 + statement.len() + params.len());
            p.extend_from_slice(&len.to_le_bytes());
            p.extend_from_slice(statement.as_bytes());
            p.extend_from_slice(params.as_bytes());
            with_params = p;
            (KIND_SCHEMA_PARAMS, *db, "", "", with_params.as_slice())
        }
    };
    let mut f = encode_head(kind, ts_ms, db, rp, precision, payload, payload.len())?;
    f.extend_from_slice(payload);
    Ok(f)
}

/// Encodes everything of a frame except the payload bytes, which the caller writes right
/// after it; the CRC covers the payload. Lets a shared payload be written without a copy.
/// The buffer has `room` more bytes of capacity: none for a head that waits in the writer's
/// queue while its payload is shared (a queue falling behind holds thousands of them).
pub(crate) fn encode_head(
    kind: u8,
    ts_ms: u64,
    db: &str,
    rp: &str,
    precision: &str,
    payload: &[u8],
    room: usize,
) -> Result<Vec<u8>, Error> {
    let db_len = u16::try_from(db.len()).map_err(|_| Error::FieldTooLong {
        field: "db",
        len: db.len(),
    })?;
    let rp_len = u16::try_from(rp.len()).map_err(|_| Error::FieldTooLong {
        field: "rp",
        len: rp.len(),
    })?;
    let p_len = u8::try_from(precision.len()).map_err(|_| Error::FieldTooLong {
        field: "precision",
        len: precision.len(),
    })?;
    let head_body = BODY_FIXED_LEN + db.len() + rp.len() + precision.len();
    let body_len = head_body + payload.len();
    if body_len as u64 > MAX_BODY_LEN {
        return Err(Error::RecordTooLarge {
            size: body_len as u64,
            max: MAX_BODY_LEN,
        });
    }
    let len_bytes = (body_len as u32).to_le_bytes();
    let mut f = Vec::with_capacity(FRAME_HEADER_LEN as usize + head_body + room);
    f.extend_from_slice(&FRAME_MARKER);
    f.extend_from_slice(&len_bytes);
    f.extend_from_slice(&[0; 4]); // CRC, filled below
    f.push(kind);
    f.extend_from_slice(&ts_ms.to_le_bytes());
    f.extend_from_slice(&db_len.to_le_bytes());
    f.extend_from_slice(&rp_len.to_le_bytes());
    f.push(p_len);
    f.extend_from_slice(db.as_bytes());
    f.extend_from_slice(rp.as_bytes());
    f.extend_from_slice(precision.as_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(&f[FRAME_HEADER_LEN as usize..]);
    h.update(payload);
    let c = h.finalize();
    f[8..12].copy_from_slice(&c.to_le_bytes());
    Ok(f)
}

/// Parses a frame header: `Some((body_len, crc))` if the marker matches and the length is
/// within the format bound.
pub(crate) fn parse_frame_header(h: &[u8]) -> Option<(u32, u32)> {
    if h.len() < FRAME_HEADER_LEN as usize || h[..4] != FRAME_MARKER {
        return None;
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let c = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if (len as usize) < BODY_FIXED_LEN || u64::from(len) > MAX_BODY_LEN {
        return None;
    }
    Some((len, c))
}

/// Whether `body` matches the CRC from its header.
pub(crate) fn crc_ok(body_len: u32, body: &[u8], expected: u32) -> bool {
    crc(body_len.to_le_bytes(), body) == expected
}

/// Timestamp of a body (the bytes right after the kind), without validating the rest.
pub(crate) fn body_ts(body_prefix: &[u8]) -> Option<u64> {
    let b: [u8; 8] = body_prefix.get(1..9)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// A decoded body, borrowing from the frame bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    pub kind: u8,
    pub ts_ms: u64,
    pub db: &'a str,
    pub rp: &'a str,
    pub precision: &'a str,
    pub payload: &'a [u8],
}

/// Decodes a CRC-checked body. `None` means the body is malformed (treated as corruption).
pub(crate) fn decode_body(body: &[u8]) -> Option<Decoded<'_>> {
    let fixed = body.get(..BODY_FIXED_LEN)?;
    let kind = fixed[0];
    if kind != KIND_WRITE && !is_schema(kind) {
        return None;
    }
    let ts_ms = body_ts(fixed)?;
    let db_len = usize::from(u16::from_le_bytes([fixed[9], fixed[10]]));
    let rp_len = usize::from(u16::from_le_bytes([fixed[11], fixed[12]]));
    let p_len = usize::from(fixed[13]);
    let mut at = BODY_FIXED_LEN;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = body.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let db = std::str::from_utf8(take(db_len)?).ok()?;
    let rp = std::str::from_utf8(take(rp_len)?).ok()?;
    let precision = std::str::from_utf8(take(p_len)?).ok()?;
    let payload = body.get(at..)?;
    let d = Decoded {
        kind,
        ts_ms,
        db,
        rp,
        precision,
        payload,
    };
    if is_schema(kind) && d.statement().is_none() {
        return None;
    }
    Some(d)
}

impl<'a> Decoded<'a> {
    /// A schema record's statement and other parameters (form-encoded, empty for none);
    /// `None` for a write or a malformed statement.
    pub(crate) fn statement(&self) -> Option<(&'a str, &'a str)> {
        match self.kind {
            KIND_SCHEMA => Some((std::str::from_utf8(self.payload).ok()?, "")),
            KIND_SCHEMA_PARAMS => {
                let (len, rest) = self.payload.split_first_chunk::<4>()?;
                let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
                let statement = rest.get(..len)?;
                let params = rest.get(len..)?;
                Some((
                    std::str::from_utf8(statement).ok()?,
                    std::str::from_utf8(params).ok()?,
                ))
            }
            _ => None,
        }
    }
}

/// Encodes the cursor file.
pub(crate) fn encode_cursor(segment: u64, offset: u64) -> [u8; CURSOR_LEN] {
    let mut b = [0u8; CURSOR_LEN];
    b[..8].copy_from_slice(&CURSOR_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[12..20].copy_from_slice(&segment.to_le_bytes());
    b[20..28].copy_from_slice(&offset.to_le_bytes());
    let c = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&c.to_le_bytes());
    b
}

/// Decodes the cursor file: `Some((segment, offset))` if magic, version and CRC are right.
pub(crate) fn decode_cursor(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != CURSOR_LEN || b[..8] != CURSOR_MAGIC {
        return None;
    }
    if u32::from_le_bytes(b[8..12].try_into().ok()?) != FORMAT_VERSION {
        return None;
    }
    if crc32fast::hash(&b[..28]) != u32::from_le_bytes(b[28..32].try_into().ok()?) {
        return None;
    }
    let seg = u64::from_le_bytes(b[12..20].try_into().ok()?);
    let off = u64::from_le_bytes(b[20..28].try_into().ok()?);
    Some((seg, off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip_and_crc() {
        let rec = Record::Write {
            db: "db",
            rp: "autogen",
            precision: "ms",
            payload: b"m v=1 1\n",
        };
        let f = encode_frame(&rec, 42).expect("encode");
        let (len, c) = parse_frame_header(&f).expect("header");
        let body = &f[FRAME_HEADER_LEN as usize..];
        assert_eq!(len as usize, body.len());
        assert!(crc_ok(len, body, c));
        let d = decode_body(body).expect("decode");
        assert_eq!(
            (d.kind, d.ts_ms, d.db, d.rp, d.precision),
            (KIND_WRITE, 42, "db", "autogen", "ms")
        );
        assert_eq!(d.payload, b"m v=1 1\n");
        let mut bad = body.to_vec();
        bad[20] ^= 1;
        assert!(!crc_ok(len, &bad, c));
    }

    #[test]
    fn a_head_for_a_shared_payload_holds_no_room_for_it() {
        let payload = vec![b'x'; 1 << 20];
        let head = encode_head(KIND_WRITE, 42, "db", "autogen", "ms", &payload, 0).expect("head");
        assert!(head.capacity() < 1024, "{} bytes held", head.capacity());
        // Head and payload together are the frame encode_frame writes.
        let rec = Record::Write {
            db: "db",
            rp: "autogen",
            precision: "ms",
            payload: &payload,
        };
        let mut joined = head;
        joined.extend_from_slice(&payload);
        assert_eq!(joined, encode_frame(&rec, 42).expect("frame"));
    }

    #[test]
    fn schema_roundtrip() {
        let f = encode_frame(
            &Record::Schema {
                db: "x",
                statement: "CREATE DATABASE x",
                params: "",
            },
            7,
        )
        .expect("encode");
        let d = decode_body(&f[FRAME_HEADER_LEN as usize..]).expect("decode");
        // Without parameters, the record is written as before they existed.
        assert_eq!(d.kind, KIND_SCHEMA);
        assert_eq!(d.payload, b"CREATE DATABASE x");
        assert_eq!(d.statement(), Some(("CREATE DATABASE x", "")));
    }

    #[test]
    fn schema_with_parameters_roundtrip() {
        let rec = Record::Schema {
            db: "x",
            statement: "DELETE FROM m WHERE host = $h",
            params: "rp=short&params=%7B%22h%22%3A%22a%22%7D",
        };
        let f = encode_frame(&rec, 7).expect("encode");
        let body = &f[FRAME_HEADER_LEN as usize..];
        let d = decode_body(body).expect("decode");
        assert_eq!(d.kind, KIND_SCHEMA_PARAMS);
        assert_eq!(
            d.statement(),
            Some((
                "DELETE FROM m WHERE host = $h",
                "rp=short&params=%7B%22h%22%3A%22a%22%7D"
            ))
        );
        // A statement length past the payload is malformed, not a panic.
        let mut bad = body.to_vec();
        let at = BODY_FIXED_LEN + 1;
        bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_body(&bad).is_none());
        assert!(decode_body(&bad[..BODY_FIXED_LEN + 1 + 3]).is_none());
    }

    #[test]
    fn cursor_roundtrip_and_rejects_corruption() {
        let b = encode_cursor(5, 1234);
        assert_eq!(decode_cursor(&b), Some((5, 1234)));
        for i in 0..CURSOR_LEN {
            let mut c = b;
            c[i] ^= 0x40;
            assert_eq!(decode_cursor(&c), None, "flip at {i}");
        }
        assert_eq!(decode_cursor(&b[..31]), None);
    }

    #[test]
    fn header_rejects_bad_magic_and_version() {
        let h = segment_header();
        assert_eq!(check_segment_header(&h), Ok(()));
        let mut v = h;
        v[8] = 9;
        assert_eq!(
            check_segment_header(&v),
            Err(HeaderError::UnsupportedVersion(9))
        );
        let mut m = h;
        m[0] = b'X';
        assert_eq!(check_segment_header(&m), Err(HeaderError::BadMagic));
    }
}
