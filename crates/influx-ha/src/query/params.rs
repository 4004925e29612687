//! The parameters of a `/query` request, read as InfluxDB 1.6 reads them (Go's
//! `r.FormValue`), and re-encoded for a backend without the client's credentials.
//!
//! - GET: the query string.
//! - POST `application/x-www-form-urlencoded`: the body's pairs, then the query string's (Go
//!   puts the body first, so a body value wins).
//! - POST `multipart/form-data`: the query string's pairs, then the text parts; when `q` is
//!   empty, the first file part named `q` holds the query (`curl -F q=@file.iql`).
//! - Other POST bodies are ignored, as Go ignores them.
//!
//! `u` and `p` are the client's credentials: they are never forwarded (the backend gets the
//! relay's service credentials), and never logged.

use bytes::Bytes;

use crate::http::query::{QueryParams, encode_component};

/// Parameters that are the client's credentials and stay here.
const CREDENTIALS: [&str; 2] = ["u", "p"];

/// A `/query` request's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// Every pair, in Go's precedence order (the first of a key wins).
    pairs: Vec<(String, String)>,
    /// The query text (`q`, trimmed, or the `q` file of a multipart body); empty when missing.
    pub q: String,
}

impl Params {
    /// Reads the parameters of a request.
    pub fn parse(is_post: bool, query: Option<&str>, content_type: &str, body: &[u8]) -> Self {
        let url = pairs_of(QueryParams::parse(query));
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let mut file_q = None;
        let pairs = if !is_post {
            url
        } else if media == "application/x-www-form-urlencoded" {
            let text = String::from_utf8_lossy(body);
            let mut pairs = pairs_of(QueryParams::parse(Some(&text)));
            pairs.extend(url);
            pairs
        } else if media == "multipart/form-data" {
            let mut pairs = url;
            if let Some(boundary) = boundary(content_type) {
                for part in multipart(body, &boundary) {
                    match part.filename {
                        None => pairs
                            .push((part.name, String::from_utf8_lossy(&part.data).into_owned())),
                        Some(_) if part.name == "q" && file_q.is_none() => {
                            file_q = Some(String::from_utf8_lossy(&part.data).into_owned());
                        }
                        Some(_) => {}
                    }
                }
            }
            pairs
        } else {
            url
        };
        let mut params = Self {
            pairs,
            q: String::new(),
        };
        params.q = params.get("q").trim().to_owned();
        if let Some(f) = file_q.filter(|_| params.q.is_empty()) {
            params.q = f;
        }
        params
    }

    /// The first value of `key`, `""` when absent.
    pub fn get(&self, key: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The parameters as a backend gets them: form-encoded, `q` as the query text, without
    /// the client's credentials.
    pub fn encode_for_backend(&self) -> String {
        let mut out = String::with_capacity(self.q.len() + 64);
        if !self.q.is_empty() {
            out.push_str("q=");
            encode_component(&self.q, &mut out);
        }
        self.encode_pairs(&["q"], &mut out);
        out
    }

    /// The parameters other than `q` and `db` (`rp`, bound `params`, …), form-encoded as a
    /// backend gets them: what a queued statement carries besides its text and database.
    pub fn encode_others(&self) -> String {
        let mut out = String::new();
        self.encode_pairs(&["q", "db"], &mut out);
        out
    }

    /// Appends every pair but the client's credentials and the keys in `skip`.
    fn encode_pairs(&self, skip: &[&str], out: &mut String) {
        for (k, v) in &self.pairs {
            if skip.contains(&k.as_str()) || CREDENTIALS.contains(&k.as_str()) {
                continue;
            }
            if !out.is_empty() {
                out.push('&');
            }
            encode_component(k, out);
            out.push('=');
            encode_component(v, out);
        }
    }
}

fn pairs_of(params: QueryParams) -> Vec<(String, String)> {
    params.into_pairs()
}

/// A query string without the client's credentials (for paths forwarded as they are).
pub fn strip_credentials(query: Option<&str>) -> String {
    let mut out = String::new();
    for (k, v) in QueryParams::parse(query).into_pairs() {
        if CREDENTIALS.contains(&k.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        encode_component(&k, &mut out);
        out.push('=');
        encode_component(&v, &mut out);
    }
    out
}

/// The `boundary` parameter of a multipart content type.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    /// `name` of its Content-Disposition.
    name: String,
    /// `filename`, for file parts.
    filename: Option<String>,
    /// Its content.
    data: Bytes,
}

/// The parts of a `multipart/form-data` body; a malformed body yields the parts before the
/// damage.
fn multipart(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let Some(first) = find(body, &delimiter, 0) else {
        return parts;
    };
    let mut pos = first + delimiter.len();
    loop {
        // After a delimiter: `--` ends the body, else CRLF and the part's headers.
        if body[pos..].starts_with(b"--") {
            return parts;
        }
        let Some(headers_end) = find(body, b"\r\n\r\n", pos) else {
            return parts;
        };
        let headers = String::from_utf8_lossy(&body[pos..headers_end]);
        let content_start = headers_end + 4;
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let Some(content_end) = find(body, &closing, content_start) else {
            return parts;
        };
        let mut name = None;
        let mut filename = None;
        for line in headers.lines() {
            let Some((h, v)) = line.split_once(':') else {
                continue;
            };
            if !h.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for param in v.split(';').skip(1) {
                if let Some((k, val)) = param.split_once('=') {
                    let val = val.trim().trim_matches('"').to_owned();
                    match k.trim().to_ascii_lowercase().as_str() {
                        "name" => name = Some(val),
                        "filename" => filename = Some(val),
                        _ => {}
                    }
                }
            }
        }
        if let Some(name) = name {
            parts.push(Part {
                name,
                filename,
                data: Bytes::copy_from_slice(&body[content_start..content_end]),
            });
        }
        pos = content_end + closing.len();
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > haystack.len() {
        return None;
    }
    memchr::memmem::find(&haystack[from..], needle).map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_uses_the_query_string_and_drops_credentials() {
        let p = Params::parse(
            false,
            Some("q=SELECT+*+FROM+m&db=x&u=alice&p=secret&epoch=ms"),
            "",
            b"q=ignored",
        );
        assert_eq!(p.q, "SELECT * FROM m");
        assert_eq!(p.get("db"), "x");
        assert_eq!(
            p.encode_for_backend(),
            "q=SELECT%20%2A%20FROM%20m&db=x&epoch=ms"
        );
    }

    #[test]
    fn a_queued_statement_keeps_every_parameter_but_q_db_and_credentials() {
        let p = Params::parse(
            true,
            Some("rp=short&u=alice"),
            "application/x-www-form-urlencoded",
            b"q=DELETE+FROM+m+WHERE+host+%3D+%24h&db=x&params=%7B%22h%22%3A%22a+b%22%7D&p=secret",
        );
        assert_eq!(p.q, "DELETE FROM m WHERE host = $h");
        assert_eq!(
            p.encode_others(),
            "params=%7B%22h%22%3A%22a%20b%22%7D&rp=short"
        );
        assert_eq!(
            Params::parse(false, Some("q=x&db=y"), "", b"").encode_others(),
            ""
        );
    }

    #[test]
    fn form_body_wins_over_the_query_string() {
        let p = Params::parse(
            true,
            Some("db=url&chunked=true"),
            "application/x-www-form-urlencoded; charset=utf-8",
            b"q=SHOW%20DATABASES&db=body&p=pw",
        );
        assert_eq!(p.q, "SHOW DATABASES");
        assert_eq!(p.get("db"), "body");
        assert_eq!(p.get("chunked"), "true");
        assert!(!p.encode_for_backend().contains("pw"));
        // Other bodies are ignored, as Go ignores them.
        let p = Params::parse(true, Some("q=SHOW+USERS"), "text/plain", b"q=x");
        assert_eq!(p.q, "SHOW USERS");
        assert_eq!(Params::parse(false, None, "", b"").q, "");
        assert_eq!(Params::parse(false, Some("q=+%20+"), "", b"").q, "");
    }

    #[test]
    fn multipart_file_q() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"db\"\r\n\r\nmydb\r\n--XyZ\r\nContent-Disposition: form-data; name=\"q\"; filename=\"x.iql\"\r\nContent-Type: application/octet-stream\r\n\r\nSELECT * FROM m;\r\nSHOW DATABASES\r\n--XyZ--\r\n";
        let p = Params::parse(
            true,
            Some("epoch=s"),
            "multipart/form-data; boundary=XyZ",
            body,
        );
        assert_eq!(p.q, "SELECT * FROM m;\r\nSHOW DATABASES");
        assert_eq!(p.get("db"), "mydb");
        assert_eq!(p.get("epoch"), "s");
        // A text part q wins over the file.
        let body = b"--b\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nSHOW USERS\r\n--b\r\nContent-Disposition: form-data; name=\"q\"; filename=\"f\"\r\n\r\nSHOW DATABASES\r\n--b--";
        assert_eq!(
            Params::parse(true, None, "multipart/form-data; boundary=\"b\"", body).q,
            "SHOW USERS"
        );
        // Damaged bodies never panic.
        for cut in 0..body.len() {
            let _ = Params::parse(true, None, "multipart/form-data; boundary=b", &body[..cut]);
        }
    }

    #[test]
    fn stripped_query_strings() {
        assert_eq!(
            strip_credentials(Some("db=x&u=a&p=b&q=SELECT+1")),
            "db=x&q=SELECT%201"
        );
        assert_eq!(strip_credentials(None), "");
    }
}
