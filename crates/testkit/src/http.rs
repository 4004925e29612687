//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`, enough to talk to influxd (and
//! to the relay) in tests without pulling an HTTP stack into the test harness.
//!
//! It sends `Content-Length` on every request, reads complete responses (`Content-Length`,
//! `Transfer-Encoding: chunked`, or up to the end of the connection) and keeps the connection
//! alive between requests. A request that fails on a *reused* connection before any byte of the
//! answer arrived (the server closed the idle connection) is sent once more on a new one.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The upper bound on one response's header section, so a broken peer cannot make a test hang
/// on an endless header.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 204.
    pub status: u16,
    /// The header fields in the order received, names as the server spelled them.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client for one server address.
#[derive(Debug)]
pub struct HttpClient {
    /// Where requests go.
    addr: SocketAddr,
    /// The open connection, kept between requests.
    conn: Option<BufReader<TcpStream>>,
    /// Read and write timeout of the socket: a stuck server fails the request instead of
    /// hanging the test.
    timeout: Duration,
}

/// Whether a failed attempt may be repeated on a fresh connection.
enum Failure {
    /// Nothing of the response arrived: the server may have closed an idle connection.
    BeforeResponse(io::Error),
    /// Part of the response arrived, or the error is not about the connection.
    Fatal(io::Error),
}

impl HttpClient {
    /// A client for `addr` with a 60 s socket timeout.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Changes the socket read/write timeout (also of an open connection).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.conn = None;
    }

    /// The address requests go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request and reads the complete response. `target` is the path with its query
    /// string (`/write?db=x`). `Host`, `Content-Length` and `User-Agent` are added; `headers`
    /// come after them.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let reused = self.conn.is_some();
        match self.attempt(method, target, headers, body) {
            Ok(r) => Ok(r),
            Err(Failure::BeforeResponse(_)) if reused => {
                self.conn = None;
                self.attempt(method, target, headers, body)
                    .map_err(|f| match f {
                        Failure::BeforeResponse(e) | Failure::Fatal(e) => e,
                    })
            }
            Err(Failure::BeforeResponse(e) | Failure::Fatal(e)) => Err(e),
        }
    }

    fn attempt(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        let result = self.attempt_inner(method, target, headers, body);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn attempt_inner(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let stream =
                    TcpStream::connect_timeout(&self.addr, self.timeout).map_err(Failure::Fatal)?;
                stream
                    .set_read_timeout(Some(self.timeout))
                    .map_err(Failure::Fatal)?;
                stream
                    .set_write_timeout(Some(self.timeout))
                    .map_err(Failure::Fatal)?;
                stream.set_nodelay(true).map_err(Failure::Fatal)?;
                self.conn.insert(BufReader::new(stream))
            }
        };

        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: testkit\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let stream = conn.get_mut();
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .and_then(|()| stream.flush())
            .map_err(Failure::BeforeResponse)?;

        let (response, keep_alive) = read_response(conn, method == "HEAD")?;
        if !keep_alive {
            self.conn = None;
        }
        Ok(response)
    }
}

/// Reads one response; returns it and whether the connection may be reused.
fn read_response(
    conn: &mut BufReader<TcpStream>,
    head_request: bool,
) -> Result<(Response, bool), Failure> {
    let mut header_bytes = 0usize;
    // Skip interim 1xx responses (we never send `Expect`, but be tolerant).
    let (version, status, headers) = loop {
        let mut line = Vec::new();
        let n = conn.read_until(b'\n', &mut line);
        let n = match n {
            Ok(0) if header_bytes == 0 => {
                return Err(Failure::BeforeResponse(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the response",
                )));
            }
            Err(e) if header_bytes == 0 => return Err(Failure::BeforeResponse(e)),
            Err(e) => return Err(Failure::Fatal(e)),
            Ok(n) => n,
        };
        header_bytes += n;
        let (version, status) = parse_status_line(&line).map_err(Failure::Fatal)?;
        let headers = read_headers(conn, &mut header_bytes).map_err(Failure::Fatal)?;
        if (100..200).contains(&status) {
            continue;
        }
        break (version, status, headers);
    };

    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    let connection = find("connection");
    let mut keep_alive = match connection.as_deref() {
        Some(c) if c.split(',').any(|t| t.trim() == "close") => false,
        Some(c) if c.split(',').any(|t| t.trim() == "keep-alive") => true,
        _ => version != "HTTP/1.0",
    };

    let body = if head_request || status == 204 || status == 304 {
        Vec::new()
    } else if find("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        read_chunked(conn).map_err(Failure::Fatal)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| Failure::Fatal(invalid(format!("bad Content-Length {len:?}"))))?;
        let mut body = vec![0; len];
        conn.read_exact(&mut body).map_err(Failure::Fatal)?;
        body
    } else {
        keep_alive = false;
        let mut body = Vec::new();
        conn.read_to_end(&mut body).map_err(Failure::Fatal)?;
        body
    };
    Ok((
        Response {
            status,
            headers,
            body,
        },
        keep_alive,
    ))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn parse_status_line(line: &[u8]) -> io::Result<(String, u16)> {
    let text = std::str::from_utf8(line)
        .map_err(|_| invalid("status line is not UTF-8".into()))?
        .trim_end();
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("bad status line {text:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {text:?}")))?;
    Ok((version.to_owned(), status))
}

fn read_headers(
    conn: &mut BufReader<TcpStream>,
    header_bytes: &mut usize,
) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = conn.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside the response header",
            ));
        }
        *header_bytes += n;
        if *header_bytes > MAX_HEADER_BYTES {
            return Err(invalid("response header too large".into()));
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(headers);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
}

fn read_chunked(conn: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunked body",
            ));
        }
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                if conn.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF".into()));
        }
    }
}

/// Percent-encodes `s` for a query string or an `application/x-www-form-urlencoded` body.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `a=1&b=2` from pairs, percent-encoding each name and value.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// Serves each scripted raw response to one request, on one connection per element of
    /// `conns`, and returns the requests it saw.
    fn serve(conns: Vec<Vec<&'static [u8]>>) -> (SocketAddr, thread::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            for responses in conns {
                let (stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream);
                for response in responses {
                    let mut request = Vec::new();
                    let mut len = 0usize;
                    loop {
                        let mut line = Vec::new();
                        reader.read_until(b'\n', &mut line).expect("read");
                        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
                        if let Some(v) = text.strip_prefix("content-length:") {
                            len = v.trim().parse().expect("len");
                        }
                        request.extend_from_slice(&line);
                        if line == b"\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).expect("body");
                    request.extend_from_slice(&body);
                    seen.push(request);
                    reader.get_mut().write_all(response).expect("write");
                }
            }
            seen
        });
        (addr, handle)
    }

    #[test]
    fn content_length_chunked_and_reconnect() {
        let (addr, handle) = serve(vec![
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
            ],
            // The server closes the first connection after three answers; the client must
            // resend on a new one.
            vec![b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\nbye"],
        ]);
        let mut c = HttpClient::new(addr);
        let r = c.request("GET", "/a", &[], b"").expect("a");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = c.request("POST", "/b", &[("X-T", "1")], b"xyz").expect("b");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
        let r = c.request("GET", "/c", &[], b"").expect("c");
        assert_eq!(r.status, 204);
        assert_eq!(r.header("x-a"), Some("b"));
        let r = c.request("POST", "/d", &[], b"q").expect("d");
        assert_eq!((r.status, r.text().as_str()), (400, "bye"));
        let seen = handle.join().expect("server");
        assert_eq!(seen.len(), 4);
        let b = String::from_utf8_lossy(&seen[1]);
        assert!(b.starts_with("POST /b HTTP/1.1\r\n"), "{b}");
        assert!(
            b.contains("Content-Length: 3\r\n") && b.contains("X-T: 1\r\n"),
            "{b}"
        );
        assert!(b.ends_with("\r\n\r\nxyz"), "{b}");
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form(&[("q", "SELECT * FROM \"a b\""), ("db", "x&y")]),
            "q=SELECT%20%2A%20FROM%20%22a%20b%22&db=x%26y"
        );
    }
}
