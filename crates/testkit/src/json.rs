//! A string encoder byte-compatible with Go's `encoding/json` (as used by InfluxDB 1.6).
//!
//! influxd builds every error body as `{"error":"<msg>"}` followed by `\n`, where `<msg>` goes
//! through `json.Marshal`, which escapes HTML characters by default. To produce the exact same
//! bytes (a relay that answers like InfluxDB must), the message has to be encoded the way Go
//! encodes it, which differs from most JSON libraries:
//!
//! - `"` and `\` are escaped as `\"` and `\\`;
//! - `\n`, `\r` and `\t` get their short forms; every other control character below U+0020
//!   (including backspace and form feed, which Go before 1.22 does not shorten) is `\u00XX`
//!   with lowercase hex digits;
//! - `<`, `>` and `&` become `\u003c`, `\u003e` and `\u0026` (HTML escaping);
//! - U+2028 and U+2029 become `\u2028` and `\u2029`;
//! - DEL (U+007F) and every other valid character are copied as they are;
//! - each byte that does not start a valid UTF-8 sequence becomes `\ufffd`, one per byte, as
//!   Go's `utf8.DecodeRune` consumes a single byte on invalid input.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Encodes `s` as a JSON string literal (with the surrounding quotes) exactly as Go's
/// `encoding/json` does with HTML escaping on.
///
/// ```
/// assert_eq!(testkit::go_json_string("a<b>\"c\"\n"), r#""a\u003cb\u003e\"c\"\n""#);
/// ```
pub fn go_json_string(s: &str) -> String {
    go_json_bytes(s.as_bytes())
}

/// Like [`go_json_string`] for arbitrary bytes: invalid UTF-8 becomes `\ufffd` per byte, as Go
/// does for a Go string holding those bytes.
pub fn go_json_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                b'\n' => out.push_str("\\n"),
                b'\r' => out.push_str("\\r"),
                b'\t' => out.push_str("\\t"),
                b'<' | b'>' | b'&' | 0x00..=0x1f => {
                    out.push_str("\\u00");
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0xf)]));
                }
                _ => out.push(char::from(b)),
            }
            i += 1;
            continue;
        }
        match decode_one(&bytes[i..]) {
            Some((c, len)) => {
                match c {
                    '\u{2028}' => out.push_str("\\u2028"),
                    '\u{2029}' => out.push_str("\\u2029"),
                    _ => out.push(c),
                }
                i += len;
            }
            None => {
                out.push_str("\\ufffd");
                i += 1;
            }
        }
    }
    out.push('"');
    out
}

/// Decodes the UTF-8 sequence at the start of `bytes` (whose first byte is >= 0x80) the way Go's
/// `utf8.DecodeRune` accepts it: only shortest forms, no surrogates, nothing above U+10FFFF.
fn decode_one(bytes: &[u8]) -> Option<(char, usize)> {
    let len = match bytes.first()? {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let seq = bytes.get(..len)?;
    // `from_utf8` rejects overlong forms, surrogates and out-of-range code points, exactly the
    // sequences Go's decoder refuses.
    let c = std::str::from_utf8(seq).ok()?.chars().next()?;
    Some((c, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_quotes() {
        assert_eq!(go_json_string(""), r#""""#);
        assert_eq!(go_json_string("abc"), r#""abc""#);
        assert_eq!(go_json_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_json_string("/"), r#""/""#);
    }

    #[test]
    fn control_characters() {
        assert_eq!(go_json_string("\n\r\t"), r#""\n\r\t""#);
        assert_eq!(
            go_json_string("\u{0}\u{1}\u{8}\u{c}\u{1f}"),
            r#""\u0000\u0001\u0008\u000c\u001f""#
        );
        assert_eq!(go_json_string("\u{7f}"), "\"\u{7f}\"");
    }

    #[test]
    fn html_characters() {
        assert_eq!(go_json_string("<a&b>"), r#""\u003ca\u0026b\u003e""#);
    }

    #[test]
    fn line_separators_and_unicode() {
        assert_eq!(go_json_string("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
        assert_eq!(go_json_string("é€😀"), "\"é€😀\"");
    }

    #[test]
    fn invalid_utf8_one_replacement_per_byte() {
        // A truncated 3-byte sequence: Go consumes one byte per decoding error.
        assert_eq!(go_json_bytes(b"\xe2\x82a"), r#""\ufffd\ufffda""#);
        assert_eq!(go_json_bytes(b"\xff"), r#""\ufffd""#);
        // Overlong '/' and an encoded surrogate are invalid in Go too.
        assert_eq!(go_json_bytes(b"\xc0\xaf"), r#""\ufffd\ufffd""#);
        assert_eq!(go_json_bytes(b"\xed\xa0\x80"), r#""\ufffd\ufffd\ufffd""#);
        // Above U+10FFFF.
        assert_eq!(
            go_json_bytes(b"\xf4\x90\x80\x80"),
            r#""\ufffd\ufffd\ufffd\ufffd""#
        );
        // A valid sequence right after an invalid byte is kept.
        assert_eq!(go_json_bytes(b"\x80\xc3\xa9"), "\"\\ufffd\u{e9}\"");
    }
}
