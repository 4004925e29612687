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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::task::JoinSet;

use super::{Feed, ListenerStats, Sink, TextProtocol, add};
use crate::config::TcpConfig;
use crate::http::body::{InflightBytes, InflightPermit};
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
    /// How long a connection holding an incomplete line waits for room in the node's memory
    /// budget before it is closed (`inflight_wait`).
    pub memory_wait: Duration,
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
            memory_wait: Duration::from_secs(5),
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
    /// The node's memory budget (`max_inflight_bytes`), shared with the HTTP bodies: every
    /// connection's buffer counts against it.
    budget: InflightBytes,
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
            feed: Arc::new(
                Feed::new(
                    sink,
                    database.to_owned(),
                    lineproto::Precision::Nanoseconds,
                    kind,
                    addr,
                )
                .with_spaced_stamps(),
            ),
            options,
            text,
            budget: InflightBytes::new(usize::MAX),
        })
    }

    /// Counts the connections' buffers against `budget` (by default they have one of their
    /// own, unlimited).
    pub fn set_budget(&mut self, budget: InflightBytes) {
        self.budget = budget;
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
                budget: self.budget.clone(),
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
    budget: InflightBytes,
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
    /// No room in the memory budget (or shutdown while waiting for it): why.
    NoRoom(&'static str),
    Shutdown,
    Failed(std::io::Error),
}

/// How often a connection with no room in the memory budget looks again, besides when bytes
/// are given back.
const ROOM_POLL: Duration = Duration::from_millis(250);

/// How long a text protocol's reply (`version`, `stats`) may wait for its client to read.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A buffer with no complete line up to this size is scanned again at every newline.
const RESCAN_FREELY: usize = 64 * 1024;

/// Whether `buf`, which holds no complete line, is held open by a stray quote: it has
/// newlines, and no `"` in its last 64 KiB. A string value open for that long is longer than
/// InfluxDB stores (64 KiB), while the strings of real lines open and close far more often;
/// taken for a string, it would swallow every line after it.
fn stray_quote(buf: &[u8]) -> bool {
    let Some(quote) = buf.iter().rposition(|&b| b == b'"') else {
        return false;
    };
    buf.len() - quote > RESCAN_FREELY && buf[quote..].contains(&b'\n')
}

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
        // What `buf` holds and one more read, counted against the node's memory budget.
        let mut held = InflightPermit::default();
        loop {
            let read = self
                .read(&mut stream, &mut buf, &mut held, &mut shutdown)
                .await;
            let eof = match read {
                Read::Data { eof } => eof,
                Read::Eof => true,
                Read::NoRoom(why) => {
                    self.write_ended(&mut buf, &mut stream, &mut shutdown).await;
                    return self.discard(&buf, why);
                }
                Read::Idle => {
                    tracing::debug!(peer = %self.peer, "idle TCP connection closed");
                    self.write_ended(&mut buf, &mut stream, &mut shutdown).await;
                    return self.discard(&buf, "idle connection closed");
                }
                Read::Shutdown => {
                    self.write_ended(&mut buf, &mut stream, &mut shutdown).await;
                    return self.discard(&buf, "shutting down");
                }
                Read::Failed(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "TCP read failed");
                    // The lines that arrived whole before the failure are the client's.
                    self.write_ended(&mut buf, &mut stream, &mut shutdown).await;
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
                let n = self.complete_or_stray(&buf);
                if n > 0 {
                    // Room for reads is taken again when the next one comes: lines being
                    // written (which may wait long for the write path) hold only their bytes.
                    held.shrink_to(buf.len());
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
                held.shrink_to(buf.len());
                self.write_complete(&mut buf, &mut stream, &mut shutdown)
                    .await;
                scanned = buf.len();
            }
            if buf.len() > self.options.max_line_bytes {
                // A quote that never closed holds the lines after it in one: they are taken at
                // their newlines, the one with the stray quote refused alone.
                self.write_to_last_newline(&mut buf, &mut stream, &mut shutdown)
                    .await;
                held.shrink_to(buf.len());
                newline_pending = false;
                stuck_at = 0;
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

    /// Makes `held` cover `buf` and one more read, giving back the rest. A connection with
    /// nothing buffered waits as long as it takes (its client's bytes wait in the kernel); one
    /// holding an incomplete line waits up to `memory_wait` and is then given up (with why),
    /// since connections that all wait for room to complete their lines would wait for ever.
    async fn make_room(
        &self,
        held: &mut InflightPermit,
        buf: &BytesMut,
        shutdown: &mut Shutdown,
    ) -> Result<(), &'static str> {
        held.shrink_to(buf.len() + self.options.read_bytes);
        let started = tokio::time::Instant::now();
        loop {
            // Listening before looking, so that bytes given back in between are not missed.
            let released = self.budget.released().notified();
            tokio::pin!(released);
            released.as_mut().enable();
            // Whatever is free now, up to a read: a read takes no more than the room held. Not
            // a wait in the budget's queue, which is first come, first served: a connection
            // waiting there for a whole read would hold up every request behind it.
            let room = held.bytes().saturating_sub(buf.len());
            if room < self.options.read_bytes {
                self.budget
                    .try_reserve_up_to(held, self.options.read_bytes - room);
            }
            if held.bytes() > buf.len() {
                return Ok(());
            }
            if !buf.is_empty() && started.elapsed() >= self.options.memory_wait {
                add(&self.feed.counters.closed_for_memory, 1);
                if let Some(suppressed) = self.feed.other_log.allow() {
                    tracing::warn!(
                        listener = %self.feed.listener,
                        peer = %self.peer,
                        buffered = buf.len(),
                        suppressed,
                        "no room in max_inflight_bytes for an incomplete line: connection closed"
                    );
                }
                return Err("no room for its incomplete line");
            }
            tokio::select! {
                () = shutdown.recv() => return Err("shutting down"),
                () = released => {}
                // Room freed by requests still waiting for theirs is not announced.
                () = tokio::time::sleep(ROOM_POLL) => {}
            }
        }
    }

    /// Waits for data (idle timeout, shutdown), makes room for it, then takes what else is
    /// readable at once as far as `held` has room. Room is taken only once the client has sent
    /// something: an idle connection holds no more than its buffered bytes.
    async fn read(
        &self,
        stream: &mut TcpStream,
        buf: &mut BytesMut,
        held: &mut InflightPermit,
        shutdown: &mut Shutdown,
    ) -> Read {
        held.shrink_to(buf.len());
        let n = loop {
            // A peek, not `readable()`, which may answer before any byte is there: the room
            // is taken only for bytes that arrived.
            let mut byte = [0u8; 1];
            let arrived = tokio::select! {
                () = shutdown.recv() => return Read::Shutdown,
                r = tokio::time::timeout(self.options.idle_timeout, stream.peek(&mut byte)) => r,
            };
            match arrived {
                Err(_) => return Read::Idle,
                Ok(Err(e)) => return Read::Failed(e),
                Ok(Ok(0)) => return Read::Eof,
                Ok(Ok(_)) => {}
            }
            if let Err(why) = self.make_room(held, buf, shutdown).await {
                return Read::NoRoom(why);
            }
            match self.read_within(stream, buf, held) {
                Ok(0) => return Read::Eof,
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    held.shrink_to(buf.len());
                    continue;
                }
                Err(e) => return Read::Failed(e),
            }
        };
        add(&self.feed.counters.bytes, n);
        let mut taken = n;
        while taken < self.options.max_batch_bytes {
            let room = held.bytes().saturating_sub(buf.len());
            if room < self.options.read_bytes
                && !self
                    .budget
                    .try_reserve(held, self.options.read_bytes - room)
            {
                break;
            }
            match self.read_within(stream, buf, held) {
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

    /// Reads what is there without waiting, at most what `held` has room for beyond `buf`.
    fn read_within(
        &self,
        stream: &TcpStream,
        buf: &mut BytesMut,
        held: &InflightPermit,
    ) -> std::io::Result<usize> {
        let room = held
            .bytes()
            .saturating_sub(buf.len())
            .min(self.options.read_bytes);
        if room == 0 {
            // A read into no room would answer 0, which means the end of the stream.
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        buf.reserve(room);
        stream.try_read_buf(&mut bytes::BufMut::limit(&mut *buf, room))
    }

    /// Validates and replicates whole lines (retrying while the write path answers 503).
    async fn write(&self, lines: Bytes, stream: &mut TcpStream, shutdown: &mut Shutdown) {
        let mut reply = Vec::new();
        // What a conversion adds (a Graphite `a 1` becomes a line eight times its size) counts
        // in the budget too while it is written, as far as there is room now: the bytes are in
        // memory already, and waiting for room while holding the connection's buffer could
        // hold up the requests that would free it (gzip bodies are counted the same way).
        let mut converted_room = InflightPermit::default();
        let lines = match &self.text {
            Some(text) => {
                let converted = self.feed.convert(text.as_ref(), &lines, &mut reply);
                let added = converted.capacity().saturating_sub(lines.len());
                drop(lines);
                if added > 0 {
                    self.budget.try_reserve_up_to(&mut converted_room, added);
                }
                Bytes::from(converted)
            }
            None => lines,
        };
        if let Some(valid) = (!lines.is_empty())
            .then(|| self.feed.prepare(&lines))
            .flatten()
        {
            let data = match valid {
                // Unchanged: the lines themselves, without a copy.
                std::borrow::Cow::Borrowed(_) => lines.clone(),
                std::borrow::Cow::Owned(v) => Bytes::from(v),
            };
            self.feed.deliver(data, Some(shutdown)).await;
        }
        if !reply.is_empty() {
            // After the data: a client that does not read its answers only loses them, and
            // neither holds up its points nor keeps the connection for ever.
            let send = tokio::io::AsyncWriteExt::write_all(stream, &reply);
            if tokio::time::timeout(REPLY_TIMEOUT, send).await.is_err() {
                // Part of the reply may be out: no other reply goes after it (the connection
                // still takes the client's lines).
                tracing::debug!(peer = %self.peer, "a reply was not read in time: no more replies");
                let _ = tokio::io::AsyncWriteExt::shutdown(stream).await;
            }
        }
    }

    /// [`Self::complete`], or, where a stray quote holds every line open ([`stray_quote`]),
    /// the lines up to the last newline: validation takes them apart at their newlines
    /// ([`Feed::prepare`]) instead of losing them all.
    fn complete_or_stray(&self, buf: &[u8]) -> usize {
        let n = self.complete(buf);
        if n == 0 && self.text.is_none() && stray_quote(buf) {
            return buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        }
        n
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
        let n = self.complete_or_stray(buf);
        if n > 0 {
            let lines = buf.split_to(n).freeze();
            self.write(lines, stream, shutdown).await;
        }
    }

    /// Writes what a connection that ends without EOF still holds up to its last newline:
    /// the complete lines, then, where a stray quote holds lines open, those lines too (a
    /// refused line that runs over newlines is taken apart at them, see `Feed::prepare`), so
    /// that only the line with the stray quote and the unfinished last line are lost.
    async fn write_ended(
        &self,
        buf: &mut BytesMut,
        stream: &mut TcpStream,
        shutdown: &mut Shutdown,
    ) {
        self.write_complete(buf, stream, shutdown).await;
        self.write_to_last_newline(buf, stream, shutdown).await;
    }

    /// Writes `buf` up to its last newline, whatever quotes it holds.
    async fn write_to_last_newline(
        &self,
        buf: &mut BytesMut,
        stream: &mut TcpStream,
        shutdown: &mut Shutdown,
    ) {
        if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
            let lines = buf.split_to(last + 1).freeze();
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        start_with_budget(options, None).await
    }

    async fn start_with_budget(options: TcpOptions, budget: Option<InflightBytes>) -> Running {
        let config = TcpConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            database: "tcpdb".into(),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
        };
        let recorder = Recorder::default();
        let mut l = TcpLineListener::bind(&config, recorder.clone(), options)
            .await
            .expect("bind");
        if let Some(budget) = budget {
            l.set_budget(budget);
        }
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

    /// A line with a stray quote, then `n` good lines whose string values keep the quote open.
    fn stray_then_balanced(n: usize) -> (Vec<u8>, Vec<String>) {
        let mut body = b"ev msg=\"5\" pipe\" 1\n".to_vec();
        let mut good = Vec::new();
        for i in 0..n {
            let line = if i % 2 == 0 {
                format!("m s=\"x\" {}", i + 10)
            } else {
                format!("n v=1 {}", i + 10)
            };
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
            good.push(line);
        }
        (body, good)
    }

    #[tokio::test]
    async fn lines_held_open_by_a_stray_quote_are_kept_when_the_connection_idles_out() {
        let r = start(TcpOptions {
            idle_timeout: Duration::from_secs(2),
            ..TcpOptions::default()
        })
        .await;
        let mut c = connect(r.addr).await;
        let (body, good) = stray_then_balanced(20);
        c.write_all(&body).await.expect("write");
        // The unfinished last line is the only other loss.
        c.write_all(b"m v=1").await.expect("write");
        eventually("the good lines", || r.recorder.lines() == good).await;
        assert_eq!(
            r.counters.snapshot().bad_lines,
            2,
            "the stray line and the unfinished one"
        );
        r.stop().await;
    }

    #[tokio::test]
    async fn lines_held_open_by_a_stray_quote_past_the_line_limit_are_kept() {
        let r = start(TcpOptions {
            max_line_bytes: 4096,
            ..TcpOptions::default()
        })
        .await;
        let mut c = connect(r.addr).await;
        let (body, good) = stray_then_balanced(400);
        assert!(body.len() > 4096);
        c.write_all(&body).await.expect("write");
        c.write_all(b"after v=1 1\n").await.expect("write");
        let mut all = good.clone();
        all.push("after v=1 1".to_owned());
        eventually("every good line", || r.recorder.lines() == all).await;
        assert_eq!(r.counters.snapshot().closed_for_long_lines, 0);
        assert_eq!(r.counters.snapshot().bad_lines, 1);
        r.stop().await;
    }

    #[tokio::test]
    async fn lines_without_timestamps_read_together_keep_a_time_each() {
        let r = start(TcpOptions::default()).await;
        let mut c = connect(r.addr).await;
        // As a script's readings pile up while the write path is slow: read at once.
        c.write_all(b"temp,room=a v=1\ntemp,room=a v=2\ntemp,room=a v=3 7\ntemp,room=a v=4\n")
            .await
            .expect("write");
        eventually("4 lines", || r.recorder.lines().len() == 4).await;
        let lines = r.recorder.lines();
        let time = |l: &str| -> i64 {
            l.rsplit(' ')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("no time in {l}"))
        };
        let stamped: Vec<i64> = [0, 1, 3].iter().map(|&i| time(&lines[i])).collect();
        assert!(
            stamped.windows(2).all(|w| w[0] < w[1]),
            "distinct, in order: {lines:?}"
        );
        assert_eq!(time(&lines[2]), 7, "a line's own time is kept");
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
    async fn buffers_count_against_the_memory_budget_and_a_line_that_cannot_fit_is_given_up() {
        let budget = InflightBytes::new(256 * 1024);
        let r = start_with_budget(
            TcpOptions {
                memory_wait: Duration::from_millis(200),
                ..TcpOptions::default()
            },
            Some(budget.clone()),
        )
        .await;
        // A line that never ends: past the budget (well within max_line_bytes) it is given up.
        let mut long = connect(r.addr).await;
        let mut line = b"m s=\"".to_vec();
        line.resize(300 * 1024, b'x');
        // The server may close mid-write.
        let _ = long.write_all(&line).await;
        eventually("closed for want of memory", || {
            r.counters.snapshot().closed_for_memory == 1
        })
        .await;
        // Its bytes are free for others.
        let mut other = connect(r.addr).await;
        other.write_all(b"after v=2 2\n").await.expect("write");
        eventually("after", || r.recorder.lines() == ["after v=2 2"]).await;
        drop(other);
        eventually("everything given back", || budget.in_use() == 0).await;
        r.stop().await;
    }

    #[tokio::test]
    async fn a_stray_quote_costs_its_own_line_only() {
        let r = start(TcpOptions::default()).await;
        let mut c = connect(r.addr).await;
        // A quote that a later one closes: the block between them parses as one bad line
        // (bad here: its timestamp would be `v=1`).
        c.write_all(b"a v=1 1\nm s=\"oops 2\nb v=2 3\nc,t=\" v=1 4\nd v=4 5\n")
            .await
            .expect("write");
        eventually("the lines around the stray quote", || {
            r.recorder.lines().len() == 4
        })
        .await;
        assert_eq!(
            r.recorder.lines(),
            ["a v=1 1", "b v=2 3", "c,t=\" v=1 4", "d v=4 5"]
        );
        // A quote that nothing closes: past 64 KiB the lines after it are taken apart too.
        c.write_all(b"m s=\"oops 6\n").await.expect("write");
        let mut lines = Vec::new();
        for i in 0..5000 {
            lines.extend_from_slice(format!("e,i={i} v={i}i 7\n").as_bytes());
        }
        c.write_all(&lines).await.expect("write");
        eventually("the lines after an unclosed quote", || {
            r.recorder.lines().len() == 4 + 5000
        })
        .await;
        let s = r.counters.snapshot();
        assert_eq!((s.lines, s.bad_lines), (4 + 5000 + 2, 2), "{s:?}");
        r.stop().await;
    }

    /// A sink that notes the budget's bytes in use, and the batch's size, as each batch comes.
    #[derive(Clone)]
    struct Watching {
        budget: InflightBytes,
        seen: Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
    }

    impl Sink for Watching {
        async fn write(
            &self,
            _db: &str,
            _precision: lineproto::Precision,
            data: Bytes,
        ) -> Result<(), RequestError> {
            let in_use = self.budget.in_use();
            self.seen.lock().expect("lock").push((in_use, data.len()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn what_a_conversion_adds_counts_in_the_budget_while_it_is_written() {
        let budget = InflightBytes::new(1 << 20);
        let sink = Watching {
            budget: budget.clone(),
            seen: Arc::default(),
        };
        let config = TcpConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            database: "g".into(),
            max_connections: 16,
            idle_timeout: Duration::from_secs(300),
        };
        let mut l = TcpLineListener::bind(&config, sink.clone(), TcpOptions::default())
            .await
            .expect("bind");
        l.set_budget(budget.clone());
        l.set_text(Arc::new(
            crate::ingest::graphite::parser::GraphiteParser::new(&[], ".", Vec::new())
                .expect("parser"),
        ));
        let addr = l.local_addr();
        let (stop, rx) = broadcast::channel(1);
        let task = tokio::spawn(l.run(Shutdown::new(rx)));
        // 1,000 short Graphite lines, each several times longer once converted.
        let text: String = (0..1000).map(|i| format!("a.b {i}\n")).collect();
        let mut c = connect(addr).await;
        c.write_all(text.as_bytes()).await.expect("write");
        eventually("every line", || {
            let seen = sink.seen.lock().expect("lock");
            seen.iter().map(|(_, n)| n).sum::<usize>() > 4 * text.len()
        })
        .await;
        let seen = sink.seen.lock().expect("lock").clone();
        for (in_use, converted) in &seen {
            assert!(
                in_use >= converted,
                "{in_use} bytes counted while {converted} were written"
            );
        }
        drop(c);
        stop.send(()).expect("listener runs");
        task.await.expect("stops");
    }

    #[tokio::test]
    async fn a_connection_waiting_for_room_does_not_hold_up_requests() {
        let budget = InflightBytes::new(128 * 1024);
        let r = start_with_budget(TcpOptions::default(), Some(budget.clone())).await;
        // Requests hold the whole budget; a connection sends a line and waits for room.
        let mut requests = InflightPermit::default();
        budget
            .grow(&mut requests, 128 * 1024, Duration::from_secs(1))
            .await
            .expect("room");
        let mut c = connect(r.addr).await;
        c.write_all(b"a v=1 1\n").await.expect("write");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Another request waits for room; half the budget is given back: the request gets
        // it, not the connection that was waiting before it.
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut p = InflightPermit::default();
                budget
                    .grow(&mut p, 64 * 1024, Duration::from_secs(20))
                    .await
                    .map(|()| p)
            })
        };
        eventually("the request waits for room", || budget.waited() == 1).await;
        requests.shrink_to(64 * 1024);
        let got = waiting.await.expect("task").expect("the request got room");
        // The budget is full again: the connection has not read yet.
        assert!(r.recorder.lines().is_empty(), "{:?}", r.recorder.lines());
        drop((requests, got));
        eventually("a", || r.recorder.lines() == ["a v=1 1"]).await;
        r.stop().await;
    }

    #[tokio::test]
    async fn idle_connections_hold_none_of_the_memory_budget() {
        // Room for four reads at once: eight connections that wait for data must not hold it.
        let budget = InflightBytes::new(256 * 1024);
        let r = start_with_budget(TcpOptions::default(), Some(budget.clone())).await;
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(connect(r.addr).await);
        }
        idle[7].write_all(b"a v=1 1\n").await.expect("write");
        eventually("a", || r.recorder.lines() == ["a v=1 1"]).await;
        let mut other = connect(r.addr).await;
        other.write_all(b"b v=2 2\n").await.expect("write");
        eventually("b", || r.recorder.lines().len() == 2).await;
        eventually("nothing held while idle", || budget.in_use() == 0).await;
        drop(idle);
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
