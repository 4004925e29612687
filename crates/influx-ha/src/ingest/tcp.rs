//! `[[tcp]]`: newline-delimited line protocol over TCP, one stream per client.
//!
//! Each connection reads into a buffer; as soon as a read returns (plus whatever else is
//! readable at once, up to [`TcpOptions::max_batch_bytes`]), the complete lines at its front
//! ([`lineproto::complete_lines`]: a `\n` inside a quoted string value does not end a line) are
//! validated, stamped and replicated, and the rest waits for more data. The next read starts
//! only once that write is done, so a slow write path slows the client down through TCP
//! instead of filling memory. A 503 from the write path (overloaded, queues refusing) is
//! retried with backoff rather than dropped.
//!
//! Limits: at most [`TcpOptions::max_connections`] connections (more clients wait in the
//! kernel's backlog); a connection idle for [`TcpOptions::idle_timeout`] is closed; a line still
//! incomplete past `max_body_bytes` closes its connection (logged and counted). At the end of
//! the stream the unterminated last line is taken as a line; a partial line left at an idle
//! timeout, an error or shutdown is discarded and counted.
//!
//! The same listener serves the text protocols ([`TextProtocol`]: Graphite, OpenTSDB telnet):
//! their lines end at their newline (no quoting), are converted to line protocol before the
//! same validation, and what the protocol answers (`version`, `stats`) is written back. A
//! protocol may first look at a new connection and take it ([`TextProtocol::sniff`]: OpenTSDB's
//! HTTP API on the telnet port).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::task::JoinSet;

use super::{Feed, ListenerStats, Sink, TextProtocol, add};
use crate::config::TcpConfig;
use crate::shutdown::Shutdown;

/// Limits of a TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// Open connections at most.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Bytes asked of the socket per read.
    pub read_bytes: usize,
    /// Bytes read (without waiting) before the complete lines are written.
    pub max_batch_bytes: usize,
    /// A line still incomplete past this closes the connection (`max_body_bytes`).
    pub max_line_bytes: usize,
    /// After shutdown: time connections get to finish their write.
    pub drain_timeout: Duration,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            read_bytes: 64 * 1024,
            max_batch_bytes: 1 << 20,
            max_line_bytes: 25_000_000,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A bound TCP line-protocol listener.
pub struct TcpLineListener<S> {
    listener: TcpListener,
    feed: Arc<Feed<S>>,
    options: TcpOptions,
    /// What the lines are when they are not line protocol (Graphite, OpenTSDB).
    text: Option<Arc<dyn TextProtocol>>,
}

impl<S> std::fmt::Debug for TcpLineListener<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLineListener")
            .field("addr", &self.feed.listener)
            .field("database", &self.feed.database)
            .field("options", &self.options)
            .finish()
    }
}

/// Keeps `open_connections` right however a connection task ends.
struct OpenConnection<S> {
    feed: Arc<Feed<S>>,
    _permit: OwnedSemaphorePermit,
}

impl<S> Drop for OpenConnection<S> {
    fn drop(&mut self) {
        self.feed
            .counters
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S: Sink> TcpLineListener<S> {
    /// Binds `config.bind`.
    pub async fn bind(config: &TcpConfig, sink: S, options: TcpOptions) -> std::io::Result<Self> {
        Self::bind_text(config.bind, &config.database, "tcp", sink, options, None).await
    }

    /// Binds `bind` for a text protocol (`text`, named `kind`) or, without one, line
    /// protocol.
    pub async fn bind_text(
        bind: SocketAddr,
        database: &str,
        kind: &'static str,
        sink: S,
        options: TcpOptions,
        text: Option<Arc<dyn TextProtocol>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            feed: Arc::new(Feed::new(
                sink,
                database.to_owned(),
                lineproto::Precision::Nanoseconds,
                kind,
                addr,
            )),
            options,
            text,
        })
    }

    /// The address it got (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.feed.listener
    }

    /// The listener's feed (sink, database, counters), for a protocol built around it.
    pub(crate) fn feed(&self) -> Arc<Feed<S>> {
        self.feed.clone()
    }

    /// Makes the listener speak `text` instead of line protocol.
    pub(crate) fn set_text(&mut self, text: Arc<dyn TextProtocol>) {
        self.text = Some(text);
    }

    pub fn stats(&self) -> ListenerStats {
        ListenerStats {
            kind: self.feed.kind,
            addr: self.feed.listener,
            database: self.feed.database.clone(),
            counters: self.feed.counters.clone(),
        }
    }

    /// Accepts until `shutdown`; then closes the listener, tells every connection to stop
    /// after its current write, and waits for them (at most the drain period).
    pub async fn run(self, mut shutdown: Shutdown) {
        let addr = self.feed.listener;
        tracing::info!(listener = %addr, database = %self.feed.database, kind = self.feed.kind, "listening (TCP)");
        let limit = Arc::new(Semaphore::new(self.options.max_connections.max(1)));
        let (notify, _) = broadcast::channel::<()>(1);
        let mut connections = JoinSet::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            while connections.try_join_next().is_some() {}
            let permit = tokio::select! {
                () = shutdown.recv() => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                () = shutdown.recv() => break,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(100);
                    a
                }
                Err(e) => {
                    // EMFILE and the like: back off, never give up.
                    if let Some(suppressed) = self.feed.other_log.allow() {
                        tracing::warn!(listener = %addr, error = %e, suppressed, "accept failed");
                    }
                    tokio::select! {
                        () = shutdown.recv() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            add(&self.feed.counters.connections, 1);
            add(&self.feed.counters.open_connections, 1);
            let open = OpenConnection {
                feed: self.feed.clone(),
                _permit: permit,
            };
            let connection = Connection {
                feed: self.feed.clone(),
                peer,
                options: self.options,
                text: self.text.clone(),
            };
            let stop = Shutdown::new(notify.subscribe());
            let sniff_stop = Shutdown::new(notify.subscribe());
            connections.spawn(async move {
                let stream = match &connection.text {
                    Some(text) => text.sniff(stream, sniff_stop).await,
                    None => Some(stream),
                };
                if let Some(stream) = stream {
                    connection.serve(stream, stop).await;
                }
                drop(open);
            });
        }
        drop(self.listener);
        let _ = notify.send(());
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(self.options.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                listener = %addr,
                connections = connections.len(),
                "drain period over with TCP connections still writing; closing them"
            );
            connections.shutdown().await;
        }
        tracing::info!(listener = %addr, "TCP listener stopped");
    }
}

/// One client's stream.
struct Connection<S> {
    feed: Arc<Feed<S>>,
    peer: SocketAddr,
    options: TcpOptions,
    text: Option<Arc<dyn TextProtocol>>,
}

/// How reading went.
enum Read {
    /// Bytes were read; `eof` when the client also closed its side.
    Data {
        eof: bool,
    },
    /// The client closed its side.
    Eof,
    /// Nothing came within the idle timeout.
    Idle,
    Shutdown,
    Failed(std::io::Error),
}

/// A buffer with no complete line up to this size is scanned again at every newline.
const RESCAN_FREELY: usize = 64 * 1024;

impl<S: Sink> Connection<S> {
    async fn serve(self, mut stream: TcpStream, mut shutdown: Shutdown) {
        let mut buf = BytesMut::new();
        // Up to here `buf` is known to hold no complete line (only a `\n` can complete one).
        let mut scanned = 0;
        // The length `buf` had when a scan last found no complete line in it (0: none since).
        // Line protocol is scanned from the start of the line (a quote can hide a newline), so
        // past `RESCAN_FREELY` the next scan waits until `buf` has doubled: a line that never
        // ends costs linear time, not a whole rescan for every newline that arrives.
        let mut stuck_at = 0usize;
        let mut newline_pending = false;
        loop {
            let read = self.read(&mut stream, &mut buf, &mut shutdown).await;
            let eof = match read {
                Read::Data { eof } => eof,
                Read::Eof => true,
                Read::Idle => {
                    tracing::debug!(peer = %self.peer, "idle TCP connection closed");
                    self.write_complete(&mut buf, &mut stream, &mut shutdown)
                        .await;
                    return self.discard(&buf, "idle connection closed");
                }
                Read::Shutdown => {
                    self.write_complete(&mut buf, &mut stream, &mut shutdown)
                        .await;
                    return self.discard(&buf, "shutting down");
                }
                Read::Failed(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "TCP read failed");
                    return self.discard(&buf, "connection failed");
                }
            };
            if eof {
                // The client is done: whatever is left is its last line.
                if !buf.is_empty() {
                    self.write(buf.split().freeze(), &mut stream, &mut shutdown)
                        .await;
                }
                return;
            }
            // A newline not yet scanned for stays pending while a scan is put off.
            newline_pending |= buf[scanned..].contains(&b'\n');
            scanned = buf.len();
            let rescan = stuck_at <= RESCAN_FREELY || buf.len() >= stuck_at.saturating_mul(2);
            if newline_pending && rescan {
                newline_pending = false;
                let n = self.complete(&buf);
                if n > 0 {
                    let lines = buf.split_to(n).freeze();
                    self.write(lines, &mut stream, &mut shutdown).await;
                    stuck_at = 0;
                    scanned = buf.len();
                } else {
                    stuck_at = buf.len();
                }
            }
            if buf.len() > self.options.max_line_bytes && newline_pending {
                // Complete lines may wait behind a put-off scan: they go before the limit is
                // judged on what is left.
                newline_pending = false;
                stuck_at = 0;
                self.write_complete(&mut buf, &mut stream, &mut shutdown)
                    .await;
                scanned = buf.len();
            }
            if buf.len() > self.options.max_line_bytes {
                add(&self.feed.counters.closed_for_long_lines, 1);
                add(&self.feed.counters.bad_lines, 1);
                if let Some(suppressed) = self.feed.other_log.allow() {
                    tracing::warn!(
                        listener = %self.feed.listener,
                        peer = %self.peer,
                        limit = self.options.max_line_bytes,
                        sample = %super::sample(&buf),
                        suppressed,
                        "line longer than max_body_bytes: connection closed"
                    );
                }
                return;
            }
            if shutdown.is_shutdown() {
                return self.discard(&buf, "shutting down");
            }
        }
    }

    /// Waits for data (idle timeout, shutdown), then takes what else is readable at once.
    async fn read(
        &self,
        stream: &mut TcpStream,
        buf: &mut BytesMut,
        shutdown: &mut Shutdown,
    ) -> Read {
        buf.reserve(self.options.read_bytes);
        let first = tokio::select! {
            () = shutdown.recv() => return Read::Shutdown,
            r = tokio::time::timeout(self.options.idle_timeout, stream.read_buf(buf)) => r,
        };
        let n = match first {
            Err(_) => return Read::Idle,
            Ok(Err(e)) => return Read::Failed(e),
            Ok(Ok(0)) => return Read::Eof,
            Ok(Ok(n)) => n,
        };
        add(&self.feed.counters.bytes, n);
        let mut taken = n;
        while taken < self.options.max_batch_bytes {
            buf.reserve(self.options.read_bytes);
            match stream.try_read_buf(buf) {
                Ok(0) => return Read::Data { eof: true },
                Ok(n) => {
                    add(&self.feed.counters.bytes, n);
                    taken += n;
                }
                // WouldBlock, or an error the next read reports again.
                Err(_) => break,
            }
        }
        Read::Data { eof: false }
    }

    /// Validates and replicates whole lines (retrying while the write path answers 503).
    async fn write(&self, lines: Bytes, stream: &mut TcpStream, shutdown: &mut Shutdown) {
        let lines = match &self.text {
            Some(text) => {
                let mut reply = Vec::new();
                let converted = self.feed.convert(text.as_ref(), &lines, &mut reply);
                if !reply.is_empty() {
                    // A client that does not read its answers only loses them.
                    let _ = tokio::io::AsyncWriteExt::write_all(stream, &reply).await;
                }
                Bytes::from(converted)
            }
            None => lines,
        };
        if lines.is_empty() {
            return;
        }
        let Some(valid) = self.feed.prepare(&lines) else {
            return;
        };
        let data = match valid {
            // Unchanged: the lines themselves, without a copy.
            std::borrow::Cow::Borrowed(_) => lines.clone(),
            std::borrow::Cow::Owned(v) => Bytes::from(v),
        };
        self.feed.deliver(data, Some(shutdown)).await;
    }

    /// How many bytes at the start of `buf` are complete lines.
    fn complete(&self, buf: &[u8]) -> usize {
        match self.text {
            // Text protocols have no quoting: a line ends at its newline.
            Some(_) => buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1),
            None => lineproto::complete_lines(buf),
        }
    }

    /// Writes the complete lines `buf` still holds (a scan may have been put off), leaving
    /// the incomplete rest.
    async fn write_complete(
        &self,
        buf: &mut BytesMut,
        stream: &mut TcpStream,
        shutdown: &mut Shutdown,
    ) {
        let n = self.complete(buf);
        if n > 0 {
            let lines = buf.split_to(n).freeze();
            self.write(lines, stream, shutdown).await;
        }
    }

    fn discard(&self, tail: &[u8], why: &'static str) {
        if !tail.is_empty() {
            self.feed.discard(tail, why);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::http::error::RequestError;
    use crate::ingest::Counters;
    use crate::ingest::testing::{Recorder, eventually};

    struct Running {
        addr: SocketAddr,
        recorder: Recorder,
        counters: Arc<Counters>,
        stop: broadcast::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        async fn stop(self) {
            self.stop.send(()).expect("listener runs");
            tokio::time::timeout(Duration::from_secs(20), self.task)
                .await
                .expect("stops in time")
                .expect("no panic");
        }
    }

    async fn start(options: TcpOptions) -> Running {
        let config = TcpConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            database: "tcpdb".into(),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
        };
        let recorder = Recorder::default();
        let l = TcpLineListener::bind(&config, recorder.clone(), options)
            .await
            .expect("bind");
        let addr = l.local_addr();
        let counters = l.stats().counters;
        let (stop, rx) = broadcast::channel(1);
        let task = tokio::spawn(l.run(Shutdown::new(rx)));
        Running {
            addr,
            recorder,
            counters,
            stop,
            task,
        }
    }

    async fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    #[tokio::test]
    async fn lines_split_across_reads_are_written_whole() {
        let r = start(TcpOptions::default()).await;
        let mut c = connect(r.addr).await;
        c.write_all(b"a v=1 1\nb v=2").await.expect("write");
        eventually("a", || r.recorder.lines() == ["a v=1 1"]).await;
        // The partial line waits for the rest.
        c.write_all(b" 2\nc s=\"one\n").await.expect("write");
        eventually("b", || r.recorder.lines().len() == 2).await;
        // The newline inside the string did not end the line.
        c.write_all(b"two\" 3\n").await.expect("write");
        eventually("c", || r.recorder.lines().len() == 4).await;
        assert_eq!(
            r.recorder.lines(),
            ["a v=1 1", "b v=2 2", "c s=\"one", "two\" 3"]
        );
        let batches = r.recorder.batches.lock().expect("lock").clone();
        assert_eq!(batches.len(), 3);
        assert_eq!(&batches[2].2[..], b"c s=\"one\ntwo\" 3\n");
        assert!(batches.iter().all(|(db, _, _)| db == "tcpdb"));
        assert_eq!(r.counters.snapshot().lines, 3);
        r.stop().await;
    }

    #[tokio::test]
    async fn a_long_line_held_open_by_a_quote_is_written_once_it_ends_or_at_idle() {
        let r = start(TcpOptions {
            idle_timeout: Duration::from_secs(2),
            ..TcpOptions::default()
        })
        .await;
        let mut c = connect(r.addr).await;
        // Past the size scanned at every newline: many string fields, each with a newline
        // inside, sent one by one.
        let mut sent = b"m ".to_vec();
        c.write_all(b"m ").await.expect("write");
        for i in 0..20_000 {
            let field = format!("f{i}=\"a\nb\",");
            c.write_all(field.as_bytes()).await.expect("write");
            sent.extend_from_slice(field.as_bytes());
        }
        c.write_all(b"g=1 1\n").await.expect("write");
        sent.extend_from_slice(b"g=1 1\n");
        assert!(sent.len() > 2 * RESCAN_FREELY);
        // Kept open: the line is written when a scan comes, at the latest when the connection
        // is closed for being idle.
        eventually("the long line", || {
            r.recorder.batches.lock().expect("lock").len() == 1
        })
        .await;
        let batches = r.recorder.batches.lock().expect("lock").clone();
        assert_eq!(&batches[0].2[..], &sent[..]);
        assert_eq!(r.counters.snapshot().lines, 1);
        drop(c);
        r.stop().await;
    }

    #[tokio::test]
    async fn complete_lines_behind_a_put_off_scan_are_written_before_the_length_limit() {
        let r = start(TcpOptions {
            max_line_bytes: 300_000,
            // Small reads, so that many scans are put off.
            read_bytes: 4096,
            max_batch_bytes: 4096,
            ..TcpOptions::default()
        })
        .await;
        let mut c = connect(r.addr).await;
        // A long line that stays incomplete for a while (its scans are put off), then short
        // ones that take what the connection sent past the limit: every line arrives.
        c.write_all(b"m ").await.expect("write");
        let mut long = 2;
        for i in 0..21_500 {
            let field = format!("f{i}=\"a\nb\",");
            c.write_all(field.as_bytes()).await.expect("write");
            long += field.len();
        }
        c.write_all(b"g=1 1\n").await.expect("write");
        assert!(long > 4 * RESCAN_FREELY && long < 300_000, "{long}");
        let short = 30_000;
        for i in 0..short {
            c.write_all(format!("n v={i} 1\n").as_bytes())
                .await
                .expect("write");
        }
        eventually("every line", || {
            r.counters.snapshot().lines == 1 + short as u64
        })
        .await;
        assert_eq!(r.counters.snapshot().closed_for_long_lines, 0);
        drop(c);
        r.stop().await;
    }

    #[tokio::test]
    async fn a_trailing_escape_waits_for_the_next_byte() {
        let r = start(TcpOptions::default()).await;
        let mut c = connect(r.addr).await;
        // `\` then `\n` at the end of what arrived: more data makes the newline escaped.
        c.write_all(b"a,t=x\\\n").await.expect("write");
        c.write_all(b" v=1 1\nb v=2 2\n").await.expect("write");
        eventually("b", || r.recorder.lines().iter().any(|l| l == "b v=2 2")).await;
        let batches = r.recorder.batches.lock().expect("lock").clone();
        let all: Vec<u8> = batches.iter().flat_map(|b| b.2.to_vec()).collect();
        assert_eq!(all, b"a,t=x\\\n v=1 1\nb v=2 2\n");
        assert_eq!(r.counters.snapshot().lines, 2);
        r.stop().await;
    }

    #[tokio::test]
    async fn the_last_line_needs_no_newline_and_lines_get_timestamps() {
        let r = start(TcpOptions::default()).await;
        let mut c = connect(r.addr).await;
        c.write_all(b"a v=1 1\nbad\nb v=2").await.expect("write");
        c.shutdown().await.expect("close");
        eventually("b", || r.recorder.lines().len() == 2).await;
        let lines = r.recorder.lines();
        assert_eq!(lines[0], "a v=1 1");
        assert!(lines[1].starts_with("b v=2 "), "{lines:?}");
        let s = r.counters.snapshot();
        assert_eq!((s.lines, s.bad_lines, s.connections), (3, 1, 1));
        eventually("closed", || r.counters.snapshot().open_connections == 0).await;
        r.stop().await;
    }

    #[tokio::test]
    async fn a_line_past_the_limit_closes_its_connection_only() {
        let r = start(TcpOptions {
            max_line_bytes: 1000,
            ..TcpOptions::default()
        })
        .await;
        let mut long = connect(r.addr).await;
        long.write_all(b"ok v=1 1\n").await.expect("write");
        let mut closed = false;
        for _ in 0..100 {
            if long.write_all(&[b'x'; 100]).await.is_err() {
                closed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut rest = Vec::new();
        if !closed {
            // The server closed: reading ends (EOF or reset).
            let _ = tokio::time::timeout(Duration::from_secs(20), long.read_to_end(&mut rest))
                .await
                .expect("closed by the server");
        }
        eventually("closed", || {
            r.counters.snapshot().closed_for_long_lines == 1
        })
        .await;
        let mut other = connect(r.addr).await;
        other.write_all(b"after v=2 2\n").await.expect("write");
        eventually("after", || r.recorder.lines().len() == 2).await;
        assert_eq!(r.recorder.lines(), ["ok v=1 1", "after v=2 2"]);
        r.stop().await;
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let r = start(TcpOptions {
            idle_timeout: Duration::from_millis(200),
            ..TcpOptions::default()
        })
        .await;
        let mut c = connect(r.addr).await;
        c.write_all(b"a v=1 1\npartial").await.expect("write");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut rest))
            .await
            .expect("closed by the server")
            .expect("clean close");
        assert_eq!(r.recorder.lines(), ["a v=1 1"]);
        let s = r.counters.snapshot();
        assert_eq!((s.bad_lines, s.open_connections), (1, 0));
        r.stop().await;
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait() {
        let r = start(TcpOptions {
            max_connections: 1,
            ..TcpOptions::default()
        })
        .await;
        let mut first = connect(r.addr).await;
        first.write_all(b"a v=1 1\n").await.expect("write");
        eventually("a", || r.recorder.lines().len() == 1).await;
        // Accepted by the kernel, served once the first one is gone.
        let mut second = connect(r.addr).await;
        second.write_all(b"b v=2 2\n").await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(r.recorder.lines().len(), 1);
        drop(first);
        eventually("b", || r.recorder.lines().len() == 2).await;
        r.stop().await;
    }

    #[tokio::test]
    async fn an_overloaded_write_path_is_retried_not_dropped() {
        let r = start(TcpOptions::default()).await;
        r.recorder
            .fail_next(RequestError::Overloaded("too many bytes in flight".into()));
        r.recorder
            .fail_next(RequestError::Unavailable("queue full".into()));
        let mut c = connect(r.addr).await;
        c.write_all(b"a v=1 1\n").await.expect("write");
        eventually("a", || r.recorder.lines().len() == 1).await;
        let s = r.counters.snapshot();
        assert_eq!(
            (s.write_retries, s.write_failures, s.batches_written),
            (2, 0, 1)
        );
        r.stop().await;
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener_and_its_connections() {
        let r = start(TcpOptions::default()).await;
        let mut c = connect(r.addr).await;
        c.write_all(b"a v=1 1\n").await.expect("write");
        eventually("a", || r.recorder.lines().len() == 1).await;
        let addr = r.addr;
        r.stop().await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut rest))
            .await
            .expect("connection closed");
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
