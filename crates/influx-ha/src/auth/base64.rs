//! Standard base64 (RFC 4648 §4), as Go's `base64.StdEncoding` reads and writes it: HTTP Basic
//! credentials are decoded with it, and hash strings are written with it (without padding, as
//! the PHC string format does).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `input`; `pad` adds the trailing `=` (HTTP Basic needs them, PHC strings omit them).
pub fn encode(input: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a' + 26)),
        b'0'..=b'9' => Some(u32::from(c - b'0' + 52)),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes `input` strictly as Go's `StdEncoding.DecodeString` does: padding required, `\r`
/// and `\n` ignored, anything else outside the alphabet an error (`None`).
pub fn decode_padded(input: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = input
        .iter()
        .copied()
        .filter(|&c| c != b'\r' && c != b'\n')
        .collect();
    if !clean.len().is_multiple_of(4) {
        return None;
    }
    decode_groups(&clean, true)
}

/// Decodes unpadded base64 (hash strings); `None` when it is not valid.
pub fn decode_unpadded(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() % 4 == 1 || input.contains(&b'=') {
        return None;
    }
    decode_groups(input, false)
}

fn decode_groups(input: &[u8], padded: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let chunks: Vec<&[u8]> = input.chunks(4).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let data: &[u8] = if padded && last {
            let pads = chunk.iter().rev().take_while(|&&c| c == b'=').count();
            if pads > 2 {
                return None;
            }
            &chunk[..chunk.len() - pads]
        } else {
            chunk
        };
        if data.len() < 2 {
            return None;
        }
        let mut n = 0u32;
        for (j, &c) in data.iter().enumerate() {
            n |= value(c)? << (18 - 6 * j);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let kept = data.len() - 1;
        // Bits past the last byte must be zero, as Go's strict decoder requires.
        let unused_mask = match kept {
            1 => 0xffff,
            2 => 0xff,
            _ => 0,
        };
        if n & unused_mask != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..kept]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let padded = encode(&data, true);
            assert_eq!(decode_padded(padded.as_bytes()), Some(data.clone()));
            let bare = encode(&data, false);
            assert_eq!(decode_unpadded(bare.as_bytes()), Some(data));
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(encode(b"admin:secret", true), "YWRtaW46c2VjcmV0");
        assert_eq!(encode(b"ab", true), "YWI=");
        assert_eq!(encode(b"ab", false), "YWI");
        assert_eq!(decode_padded(b"YWI="), Some(b"ab".to_vec()));
        assert_eq!(decode_padded(b"YW\r\nI="), Some(b"ab".to_vec()));
    }

    #[test]
    fn strict_like_go() {
        assert_eq!(decode_padded(b"YWI"), None, "missing padding");
        assert_eq!(decode_padded(b"!!!!"), None);
        assert_eq!(decode_padded(b"YWJ="), None, "non-zero trailing bits");
        assert_eq!(decode_padded(b"Y==="), None);
        assert_eq!(decode_unpadded(b"YWI="), None);
        assert_eq!(decode_unpadded(b"Y"), None);
    }
}
