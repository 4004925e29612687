//! Query-string parameters read as Go's `url.ParseQuery` of Go 1.10 (InfluxDB 1.6.7) does.
//!
//! Pairs are separated by `&` or `;`; `+` is a space; `%XX` is a byte; a pair with an invalid
//! escape is skipped (Go records the error and goes on, and `r.URL.Query()` ignores it); the
//! first value of a repeated key wins (`Query().Get`).

/// Decoded query parameters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Go's `url.QueryUnescape`; `None` for an invalid escape. Invalid UTF-8 becomes U+FFFD.
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

impl QueryParams {
    /// Parses a raw query string (without the `?`); `None` is an empty query.
    pub fn parse(query: Option<&str>) -> Self {
        let mut pairs = Vec::new();
        for part in query.unwrap_or_default().split(['&', ';']) {
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if let (Some(k), Some(v)) = (unescape(k), unescape(v)) {
                pairs.push((k, v));
            }
        }
        Self { pairs }
    }

    /// The first value of `key`, `""` when absent (Go's `Get`).
    pub fn get(&self, key: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every pair, in order (repeated keys included).
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }

    /// The first value of `key`, `None` when absent or empty.
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        Some(self.get(key)).filter(|v| !v.is_empty())
    }
}

/// Percent-encodes a query value: everything but `A-Z a-z 0-9 - _ . ~` is escaped.
pub fn encode_component(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        let q = QueryParams::parse(Some("db=telegraf&rp=autogen&precision=s&consistency=all"));
        assert_eq!(q.get("db"), "telegraf");
        assert_eq!(q.get("rp"), "autogen");
        assert_eq!(q.get("precision"), "s");
        assert_eq!(q.get("consistency"), "all");
        assert_eq!(q.get("missing"), "");
        assert_eq!(q.non_empty("missing"), None);

        let q = QueryParams::parse(Some("db=a+b%20c&db=second;rp=x&&empty=&flag"));
        assert_eq!(q.get("db"), "a b c");
        assert_eq!(q.get("rp"), "x");
        assert_eq!(q.non_empty("empty"), None);
        assert_eq!(q.get("flag"), "");

        // A pair with a bad escape is skipped; the next one with the same key is used.
        let q = QueryParams::parse(Some("db=%zz&db=ok&p=%4"));
        assert_eq!(q.get("db"), "ok");
        assert_eq!(q.get("p"), "");

        let q = QueryParams::parse(Some("d%62=%E6%97%A5"));
        assert_eq!(q.get("db"), "日");
        assert_eq!(QueryParams::parse(None), QueryParams::default());
    }

    #[test]
    fn encodes_components() {
        let mut s = String::new();
        encode_component("my db/rp&x=1 ü", &mut s);
        assert_eq!(s, "my%20db%2Frp%26x%3D1%20%C3%BC");
        let q = QueryParams::parse(Some(&format!("db={s}")));
        assert_eq!(q.get("db"), "my db/rp&x=1 ü");
    }
}
