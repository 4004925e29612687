//! JSON strings byte-for-byte as Go's `encoding/json` writes them, as InfluxDB 1.6 does.
//!
//! Clients compare error strings, so `{"error":"..."}` bodies must be identical to what influxd
//! sends. Go's encoder (with its default HTML escaping, and as built for 1.6.7):
//!
//! - escapes `"` and `\` with a backslash;
//! - writes `\n`, `\r`, `\t` as such and every other byte below 0x20 as `\u00XX` (lower-case hex;
//!   the Go of 1.6.7 predates `\b` and `\f` short forms);
//! - writes `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`, and U+2028 / U+2029 as `\u2028` /
//!   `\u2029`;
//! - replaces every byte of an invalid UTF-8 sequence with `\ufffd` (one per byte, unlike Rust's
//!   lossy conversion, which replaces a maximal invalid prefix once);
//! - leaves DEL (0x7f) and all other valid UTF-8 as it is.
//!
//! The reverse direction ([`decode_error_body`]) reads the `"error"` member of an InfluxDB error
//! body so a backend's message can be passed on unchanged.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` to `out` as a quoted JSON string, escaped exactly as Go's `json.Marshal` does.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                    let b = c as u8;
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0xf)]);
                }
                '\u{2028}' => out.extend_from_slice(b"\\u2028"),
                '\u{2029}' => out.extend_from_slice(b"\\u2029"),
                _ => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        for _ in chunk.invalid() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

/// Appends `s` quoted as Go's `%q` / `strconv.Quote` does: printable characters as they are,
/// `"` and `\` escaped, `\n` `\r` `\t` (and `\a \b \f \v`) as such, other control and
/// non-printable characters as `\xXX` (below U+0080) or `\uXXXX`, invalid UTF-8 bytes as
/// `\xXX`. "Printable" follows Go's `unicode.IsPrint` closely (non-ASCII white space and
/// control characters are escaped; everything else is kept).
pub fn quote(out: &mut String, s: &[u8]) {
    use std::fmt::Write as _;
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\u{b}' => out.push_str("\\v"),
                c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                    let n = u32::from(c);
                    let _ = if n < 0x80 {
                        write!(out, "\\x{n:02x}")
                    } else if n <= 0xffff {
                        write!(out, "\\u{n:04x}")
                    } else {
                        write!(out, "\\U{n:08x}")
                    };
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
}

/// The body InfluxDB sends with an error: `{"error":"<message>"}` and a newline.
pub fn error_body(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 14);
    out.extend_from_slice(b"{\"error\":");
    write_string(&mut out, message);
    out.extend_from_slice(b"}\n");
    out
}

/// Reads the `"error"` string of a JSON object such as `{"error":"database not found: \"x\""}`.
///
/// Returns `None` when the body is not a JSON object or has no string `"error"` member. Other
/// members (of any type) are skipped. Escapes are decoded as Go decodes them: a lone surrogate
/// becomes U+FFFD.
pub fn decode_error_body(body: &[u8]) -> Option<Vec<u8>> {
    let mut p = Parser { s: body, i: 0 };
    p.ws();
    p.expect(b'{')?;
    p.ws();
    if p.peek()? == b'}' {
        return None;
    }
    let mut found = None;
    loop {
        p.ws();
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        if key == b"error" && p.peek()? == b'"' {
            let value = p.string()?;
            if found.is_none() {
                found = Some(value);
            }
        } else {
            p.skip_value(0)?;
        }
        p.ws();
        match p.next()? {
            b',' => continue,
            b'}' => return found,
            _ => return None,
        }
    }
}

/// A minimal JSON reader: enough to find one string member, never panics on any input.
struct Parser<'a> {
    /// The JSON text.
    s: &'a [u8],
    /// Position of the next byte to read.
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = char::from(self.next()?).to_digit(16)?;
            v = v * 16 + d;
        }
        Some(v)
    }

    fn string(&mut self) -> Option<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = self.next()?;
            match b {
                b'"' => return Some(out),
                b'\\' => {
                    let e = self.next()?;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let first = self.hex4()?;
                            if (0xd800..0xdc00).contains(&first) {
                                // A high surrogate: valid only when a low one follows.
                                let save = self.i;
                                let low = if self.s.get(self.i..self.i + 2) == Some(b"\\u") {
                                    self.i += 2;
                                    self.hex4()
                                } else {
                                    None
                                };
                                match low {
                                    Some(low) if (0xdc00..0xe000).contains(&low) => {
                                        let cp =
                                            0x10000 + ((first - 0xd800) << 10) + (low - 0xdc00);
                                        char::from_u32(cp).unwrap_or('\u{fffd}')
                                    }
                                    _ => {
                                        self.i = save;
                                        '\u{fffd}'
                                    }
                                }
                            } else {
                                char::from_u32(first).unwrap_or('\u{fffd}')
                            }
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return None,
                _ => out.push(b),
            }
        }
    }

    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > 64 {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let close = if self.next()? == b'{' { b'}' } else { b']' };
                let is_object = close == b'}';
                self.ws();
                if self.peek()? == close {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    if is_object {
                        self.string()?;
                        self.ws();
                        self.expect(b':')?;
                        self.ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b if b == close => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => {
                let start = self.i;
                while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &[u8]) -> String {
        let mut out = Vec::new();
        write_string(&mut out, s);
        String::from_utf8(out).expect("the encoder writes UTF-8 only")
    }

    #[test]
    fn plain() {
        assert_eq!(enc(b""), r#""""#);
        assert_eq!(enc(b"database is required"), r#""database is required""#);
    }

    #[test]
    fn quotes_and_backslashes() {
        assert_eq!(
            enc(br#"database not found: "nosuchdb""#),
            r#""database not found: \"nosuchdb\"""#
        );
        assert_eq!(enc(br"a\b"), r#""a\\b""#);
    }

    #[test]
    fn control_characters() {
        assert_eq!(enc(b"a\nb\rc\td"), r#""a\nb\rc\td""#);
        assert_eq!(
            enc(b"\x00\x01\x08\x0c\x1f"),
            r#""\u0000\u0001\u0008\u000c\u001f""#
        );
        // DEL is not escaped by Go.
        assert_eq!(enc(b"\x7f"), "\"\x7f\"");
    }

    #[test]
    fn html_characters() {
        assert_eq!(
            enc(b"<a href='x'>&</a>"),
            r#""\u003ca href='x'\u003e\u0026\u003c/a\u003e""#
        );
    }

    #[test]
    fn line_and_paragraph_separators() {
        assert_eq!(
            enc("a\u{2028}b\u{2029}c".as_bytes()),
            r#""a\u2028b\u2029c""#
        );
    }

    #[test]
    fn valid_unicode_is_kept() {
        assert_eq!(enc("µs héllo 日本 🎉".as_bytes()), "\"µs héllo 日本 🎉\"");
    }

    #[test]
    fn invalid_utf8_is_replaced_per_byte() {
        assert_eq!(enc(b"a\xffb"), r#""a\ufffdb""#);
        // A truncated three-byte sequence: Go replaces each byte, Rust's lossy would not.
        assert_eq!(enc(b"\xe2\x82a"), r#""\ufffd\ufffda""#);
        // An encoded surrogate is invalid UTF-8.
        assert_eq!(enc(b"\xed\xa0\x80"), r#""\ufffd\ufffd\ufffd""#);
        // An overlong encoding.
        assert_eq!(enc(b"\xc0\xaf"), r#""\ufffd\ufffd""#);
        assert_eq!(enc(b"x\xf0\x9f\x8e"), r#""x\ufffd\ufffd\ufffd""#);
    }

    fn q(s: &[u8]) -> String {
        let mut out = String::new();
        quote(&mut out, s);
        out
    }

    #[test]
    fn go_quote() {
        assert_eq!(q(b""), r#""""#);
        assert_eq!(q(b"telegraf"), r#""telegraf""#);
        assert_eq!(q(b"/autogen"), r#""/autogen""#);
        assert_eq!(q(br#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(q(b"a\nb\tc\x00\x7f"), r#""a\nb\tc\x00\x7f""#);
        assert_eq!(q("µ日🎉".as_bytes()), "\"µ日🎉\"");
        assert_eq!(q("a\u{a0}b\u{2028}".as_bytes()), r#""a\u00a0b\u2028""#);
        assert_eq!(q(b"x\xffy"), r#""x\xffy""#);
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_body(b"database is required"),
            b"{\"error\":\"database is required\"}\n"
        );
        assert_eq!(
            error_body(b"unable to parse 'cpu v=1 1\r': bad timestamp"),
            b"{\"error\":\"unable to parse 'cpu v=1 1\\r': bad timestamp\"}\n".to_vec()
        );
        assert_eq!(
            error_body(
                b"partial write: field type conflict: input field \"idle\" on measurement \"cpu\" is type float, already exists as type integer dropped=1"
            ),
            br#"{"error":"partial write: field type conflict: input field \"idle\" on measurement \"cpu\" is type float, already exists as type integer dropped=1"}"#
                .iter()
                .copied()
                .chain(*b"\n")
                .collect::<Vec<u8>>()
        );
    }

    #[test]
    fn decode_round_trip() {
        let samples: [&[u8]; 6] = [
            b"database not found: \"nosuchdb\"",
            b"a\nb\r\t<>&\\",
            "\u{2028}µ🎉".as_bytes(),
            b"\x01\x1f",
            b"",
            b"partial write: unable to parse 'a b': invalid field format dropped=0",
        ];
        for s in samples {
            let body = error_body(s);
            assert_eq!(decode_error_body(&body).as_deref(), Some(s), "{body:?}");
        }
    }

    #[test]
    fn decode_escapes() {
        assert_eq!(
            decode_error_body(br#"{"error":"\/\b\f"}"#).as_deref(),
            Some(&b"/\x08\x0c"[..])
        );
        assert_eq!(
            decode_error_body(br#"{"error":"\ud83c\udf89"}"#).as_deref(),
            Some("🎉".as_bytes())
        );
        assert_eq!(
            decode_error_body(br#"{"error":"\ud83cx"}"#).as_deref(),
            Some("\u{fffd}x".as_bytes())
        );
        assert_eq!(
            decode_error_body(br#"{"error":"\udf89"}"#).as_deref(),
            Some("\u{fffd}".as_bytes())
        );
        assert_eq!(
            decode_error_body(br#"{"error":"\ud83c\u0041"}"#).as_deref(),
            Some("\u{fffd}A".as_bytes())
        );
    }

    #[test]
    fn decode_skips_other_members() {
        let body = br#" { "code" : 12, "nested": {"a":[1,2,{"b":null}],"c":"x"}, "ok": true, "error" : "boom" } "#;
        assert_eq!(decode_error_body(body).as_deref(), Some(&b"boom"[..]));
    }

    #[test]
    fn decode_refuses_what_is_not_an_error_body() {
        for body in [
            &b""[..],
            b"404 page not found\n",
            b"{}",
            b"[]",
            br#"{"error":12}"#,
            br#"{"error":"unterminated"#,
            br#"{"error":"bad \q escape"}"#,
            br#"{"results":[]}"#,
            b"{\"error\":\"raw\ncontrol\"}",
        ] {
            assert_eq!(
                decode_error_body(body),
                None,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn decode_never_panics_on_prefixes() {
        let body = error_body("x\"\\\u{2028}🎉\x01".as_bytes());
        for end in 0..body.len() {
            let _ = decode_error_body(&body[..end]);
        }
    }
}
