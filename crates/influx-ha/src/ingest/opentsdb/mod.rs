//! `[[opentsdb]]`: OpenTSDB's telnet protocol and its HTTP API on one TCP port, told apart as
//! InfluxDB 1.6's OpenTSDB service tells them apart: a connection whose first line is an HTTP
//! request line is served as HTTP ([`api`]: `POST /api/put`), any other as telnet lines
//! ([`telnet`]: `put`, `version`, `stats`).
//!
//! Telnet connections use the line-protocol TCP listener's machinery ([`super::tcp`]: limits,
//! batching, backpressure, retries of a busy write path); HTTP connections are served by
//! hyper on the same socket, keep-alive included. Points go to the listener's database at the
//! `[write]` consistency. Refused lines and dropped points are counted and logged with a
//! sample (rate limited); other points of the same read or request are written.

pub mod api;
pub mod telnet;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::tcp::{TcpLineListener, TcpOptions};
use super::{Feed, Sink, TextProtocol, add, sample};
use crate::http::body::{BodyLimits, InflightBytes, read_body};
use crate::http::error::RequestError;
use crate::shutdown::Shutdown;

/// How long a new connection may take to send its first line before it is taken for telnet.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes looked at to tell HTTP from telnet.
const SNIFF_BYTES: usize = 4096;

/// Binds an OpenTSDB listener on `bind` for `database`: telnet lines through the TCP
/// listener's machinery (`options`), HTTP requests capped by `limits`.
pub async fn bind<S: Sink>(
    bind: std::net::SocketAddr,
    database: &str,
    sink: S,
    options: TcpOptions,
    limits: BodyLimits,
    inflight: InflightBytes,
) -> std::io::Result<TcpLineListener<S>> {
    let mut listener =
        TcpLineListener::bind_text(bind, database, "opentsdb", sink, options, None).await?;
    let protocol = OpenTsdb::new(listener.feed(), limits, inflight);
    listener.set_text(Arc::new(protocol));
    Ok(listener)
}

/// The protocol of an OpenTSDB listener; shares the listener's feed (counters, sink).
pub struct OpenTsdb<S> {
    feed: Arc<Feed<S>>,
    limits: BodyLimits,
    inflight: InflightBytes,
}

impl<S> OpenTsdb<S> {
    /// The protocol for the listener whose feed is `feed`; HTTP bodies are capped by `limits`
    /// and count in `inflight` (the node's `max_inflight_bytes`).
    pub(crate) fn new(feed: Arc<Feed<S>>, limits: BodyLimits, inflight: InflightBytes) -> Self {
        Self {
            feed,
            limits,
            inflight,
        }
    }
}

impl<S: Sink> TextProtocol for OpenTsdb<S> {
    fn convert(
        &self,
        lines: &[u8],
        _now_nanos: i64,
        out: &mut Vec<u8>,
        reply: &mut Vec<u8>,
        refused: &mut dyn FnMut(&[u8], &dyn std::fmt::Display),
    ) {
        let stats = || self.feed.counters.snapshot();
        for raw in lines.split(|&b| b == b'\n') {
            if let Err(e) = telnet::line(raw, out, reply, &stats) {
                refused(raw, &e);
            }
        }
    }

    fn sniff(
        &self,
        stream: TcpStream,
        shutdown: Shutdown,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<TcpStream>> + Send>> {
        let http = Arc::new(HttpSide {
            feed: self.feed.clone(),
            limits: self.limits,
            inflight: self.inflight.clone(),
        });
        Box::pin(async move {
            if !is_http(&stream).await {
                return Some(stream);
            }
            http.serve(stream, shutdown).await;
            None
        })
    }
}

/// Whether the first line waiting on `stream` is an HTTP request line (`METHOD target
/// HTTP/x.y`). Peeks only: the bytes stay for whoever reads the connection.
async fn is_http(stream: &TcpStream) -> bool {
    let mut buf = vec![0u8; SNIFF_BYTES];
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            // Closed, failed or silent: the line reader sees to it.
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
            return is_request_line(&buf[..end]);
        }
        // Only a request method can start an HTTP request line: decide early when not.
        if !buf[..n]
            .iter()
            .take_while(|&&b| b != b' ')
            .all(u8::is_ascii_uppercase)
        {
            return false;
        }
        if n == buf.len() {
            return is_request_line(&buf[..n]);
        }
        if n == seen {
            // Nothing new yet: peek returns at once while data waits, so wait a little.
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}

fn is_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(u8::is_ascii_uppercase)
        && !target.is_empty()
        && version.starts_with(b"HTTP/")
}

/// Serves the HTTP side of one connection.
struct HttpSide<S> {
    feed: Arc<Feed<S>>,
    limits: BodyLimits,
    inflight: InflightBytes,
}

type HttpBody = Full<Bytes>;

/// An answer as Go's `http.Error` writes it: text, `\n`, nosniff.
fn go_error(status: StatusCode, text: &str) -> Response<HttpBody> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn status_only(status: StatusCode) -> Response<HttpBody> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

impl<S: Sink> HttpSide<S> {
    async fn serve(self: Arc<Self>, stream: TcpStream, mut shutdown: Shutdown) {
        let side = self.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let side = side.clone();
            async move { Ok::<_, std::convert::Infallible>(side.handle(req).await) }
        });
        // Without a timer hyper applies no header timeout at all: a client that sends half a
        // request head, or keeps a connection idle, would hold its slot for good.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.limits.read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = %self.feed.listener, error = %e, "OpenTSDB HTTP connection ended");
                }
            }
            () = shutdown.recv() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<HttpBody> {
        match req.uri().path() {
            "/api/metadata/put" => status_only(StatusCode::NO_CONTENT),
            "/api/put" if req.method() == Method::POST => self.put(req).await,
            "/api/put" => go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
            _ => go_error(StatusCode::NOT_FOUND, "404 page not found"),
        }
    }

    async fn put(&self, req: Request<Incoming>) -> Response<HttpBody> {
        let counters = &self.feed.counters;
        add(&counters.requests, 1);
        // OpenTSDB's flags: present (with any value or none) or not.
        let flag = |name: &str| {
            req.uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == name)
        };
        let details = flag("details");
        let summary = details || flag("summary");
        let (parts, body) = req.into_parts();
        let body = match read_body(body, &parts.headers, &self.limits, &self.inflight).await {
            Ok(b) => b,
            Err(e) => {
                add(&counters.bad_requests, 1);
                return match e {
                    RequestError::InvalidGzip(g) => go_error(
                        StatusCode::BAD_REQUEST,
                        &format!("could not read gzip, {g}"),
                    ),
                    other => go_error(other.status(), &other.to_string()),
                };
            }
        };
        add(&counters.bytes, body.data.len());
        let converted = match api::convert(&body.data) {
            Ok(c) => c,
            Err(e) => {
                add(&counters.bad_requests, 1);
                if let Some(suppressed) = self.feed.other_log.allow() {
                    tracing::warn!(
                        listener = %self.feed.listener,
                        database = %self.feed.database,
                        error = %e,
                        sample = %sample(&body.data),
                        suppressed,
                        "OpenTSDB /api/put refused"
                    );
                }
                return go_error(StatusCode::BAD_REQUEST, &e.to_string());
            }
        };
        if let Some(first) = converted.dropped.first() {
            self.feed.refused(
                converted.failed,
                first.point.metric.as_bytes(),
                &first.error,
            );
        }
        // Validated as every write is; what validation refuses is counted there.
        if let Some(valid) = self.feed.prepare(&converted.lines)
            && let Err(e) = self
                .feed
                .deliver_once(Bytes::from(valid.into_owned()))
                .await
        {
            // As InfluxDB 1.6's handler: 500 for every error of its points writer (its
            // client-error test wants a `field type conflict` prefix, which a partial
            // write's text never has), so that the client sends the batch again; also when
            // the batch was stored short of the consistency level. But a batch every backend
            // only queued is stored: sending it again would only queue it again while the
            // backends catch up (`/write`'s 500 for it is one Telegraf takes as stored, and
            // `/write` first waits for a backend to catch up). Overload stays 503.
            let status = match e {
                RequestError::QueuedOnly => StatusCode::NO_CONTENT,
                ref e if e.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if status != StatusCode::NO_CONTENT {
                return go_error(status, &format!("write series error: {e}"));
            }
        }
        if summary {
            let mut resp = Response::new(Full::new(Bytes::from(api::summary(&converted, details))));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            );
            return resp;
        }
        status_only(StatusCode::NO_CONTENT)
    }
}

#[cfg(test)]
mod tests;
