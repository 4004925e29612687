//! `[[udp]]`: line protocol over UDP, as InfluxDB 1.x's UDP service takes it.
//!
//! Each datagram is a batch of lines for the listener's database and precision, validated and
//! stamped when it arrives. A receiving task reads datagrams with a 64 KiB buffer and appends
//! their valid lines to the pending batches; a writing task replicates the pending batches one
//! after the other, in arrival order, so datagrams that arrive while a batch is being written
//! are gathered into the next one (up to [`UdpOptions::max_batch_bytes`]). A datagram is
//! appended to a batch only when its lines end where they would end on their own (a quote left
//! open in a comment line would otherwise swallow the lines of the next datagram); after one
//! that does not, the batch takes nothing more.
//!
//! Oversize datagrams (the kernel truncated them to the buffer) and refused lines are counted
//! and logged, never fatal. When more than [`UdpOptions::max_pending_bytes`] wait to be
//! written, new datagrams are dropped and counted (the kernel would drop them otherwise, out of
//! sight). A failed write is logged and counted: UDP has nobody to answer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use super::{Feed, ListenerStats, Sink, TextProtocol, add, sample};
use crate::config::UdpConfig;
use crate::shutdown::Shutdown;

/// Limits of a UDP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpOptions {
    /// Largest datagram taken; longer ones are truncated by the kernel and dropped.
    pub max_datagram_bytes: usize,
    /// Datagrams gathered into one write, at most (one datagram may exceed it alone).
    pub max_batch_bytes: usize,
    /// Valid lines waiting to be written, at most; past it datagrams are dropped.
    pub max_pending_bytes: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            max_datagram_bytes: 64 * 1024,
            max_batch_bytes: 1 << 20,
            max_pending_bytes: 8 << 20,
        }
    }
}

/// A bound UDP listener.
pub struct UdpListener<S> {
    socket: UdpSocket,
    feed: Arc<Feed<S>>,
    options: UdpOptions,
    /// What the datagrams hold when it is not line protocol (Graphite).
    text: Option<Arc<dyn TextProtocol>>,
}

/// A batch being gathered, and whether it may take more.
#[derive(Debug, Default)]
struct Batch {
    data: Vec<u8>,
    sealed: bool,
}

/// Batches waiting for the writer.
#[derive(Debug, Default)]
struct Queue {
    batches: VecDeque<Batch>,
    bytes: usize,
    closed: bool,
}

#[derive(Debug, Default)]
struct Pending {
    queue: Mutex<Queue>,
    ready: Notify,
}

impl Queue {
    /// Queues the valid lines of one datagram (ending in `\n`; `whole` when they end where
    /// they would on their own), gathered into the last batch when it may take them. False
    /// when too much is pending already.
    fn push(&mut self, lines: Vec<u8>, whole: bool, options: &UdpOptions) -> bool {
        if self.bytes > 0 && self.bytes + lines.len() > options.max_pending_bytes {
            return false;
        }
        self.bytes += lines.len();
        match self.batches.back_mut() {
            Some(b) if !b.sealed && b.data.len() + lines.len() <= options.max_batch_bytes => {
                b.data.extend_from_slice(&lines);
                b.sealed = !whole;
            }
            _ => self.batches.push_back(Batch {
                data: lines,
                sealed: !whole,
            }),
        }
        true
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: Sink> UdpListener<S> {
    /// Binds `config.bind`.
    pub async fn bind(config: &UdpConfig, sink: S, options: UdpOptions) -> std::io::Result<Self> {
        let precision = lineproto::Precision::from_v1_param(config.precision.as_v1_param());
        Self::bind_text(
            config.bind,
            &config.database,
            precision,
            "udp",
            sink,
            options,
            None,
        )
        .await
    }

    /// Binds `bind` for a text protocol (`text`, named `kind`; it produces nanosecond
    /// timestamps) or, without one, line protocol in `precision`.
    pub async fn bind_text(
        bind: SocketAddr,
        database: &str,
        precision: lineproto::Precision,
        kind: &'static str,
        sink: S,
        options: UdpOptions,
        text: Option<Arc<dyn TextProtocol>>,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind).await?;
        let addr = socket.local_addr()?;
        Ok(Self {
            socket,
            feed: Arc::new(Feed::new(sink, database.to_owned(), precision, kind, addr)),
            options,
            text,
        })
    }

    /// The address it got (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.feed.listener
    }

    pub fn stats(&self) -> ListenerStats {
        ListenerStats {
            kind: self.feed.kind,
            addr: self.feed.listener,
            database: self.feed.database.clone(),
            counters: self.feed.counters.clone(),
        }
    }

    /// Receives until `shutdown`, then writes what is pending and returns.
    pub async fn run(self, mut shutdown: Shutdown) {
        tracing::info!(
            listener = %self.feed.listener,
            database = %self.feed.database,
            precision = self.feed.precision.v1_param(),
            kind = self.feed.kind,
            "listening (UDP)"
        );
        let pending = Arc::new(Pending::default());
        let writer = tokio::spawn(write_pending(self.feed.clone(), pending.clone()));
        let mut buf = vec![0u8; self.options.max_datagram_bytes.saturating_add(1)];
        loop {
            let received = tokio::select! {
                () = shutdown.recv() => break,
                r = self.socket.recv_from(&mut buf) => r,
            };
            match received {
                Ok((n, peer)) => self.take(&buf[..n], peer, &pending),
                Err(e) => {
                    if let Some(suppressed) = self.feed.other_log.allow() {
                        tracing::warn!(listener = %self.feed.listener, error = %e, suppressed, "UDP receive failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        drop(self.socket);
        pending.lock().closed = true;
        pending.ready.notify_one();
        if let Err(e) = writer.await {
            tracing::error!(listener = %self.feed.listener, error = %e, "UDP writer failed");
        }
        tracing::info!(listener = %self.feed.listener, "UDP listener stopped");
    }

    /// One datagram: counted, validated, its valid lines queued for the writer.
    fn take(&self, datagram: &[u8], peer: SocketAddr, pending: &Pending) {
        let counters = &self.feed.counters;
        add(&counters.datagrams, 1);
        add(&counters.bytes, datagram.len());
        if datagram.len() > self.options.max_datagram_bytes {
            add(&counters.oversize_datagrams, 1);
            if let Some(suppressed) = self.feed.other_log.allow() {
                tracing::warn!(
                    listener = %self.feed.listener,
                    %peer,
                    limit = self.options.max_datagram_bytes,
                    sample = %sample(datagram),
                    suppressed,
                    "oversize datagram dropped"
                );
            }
            return;
        }
        let converted;
        let datagram = match &self.text {
            Some(text) => {
                converted = self.feed.convert(text.as_ref(), datagram, &mut Vec::new());
                converted.as_slice()
            }
            None => datagram,
        };
        if datagram.is_empty() {
            return;
        }
        let Some(lines) = self.feed.prepare(datagram) else {
            return;
        };
        let mut lines = lines.into_owned();
        if lines.last() != Some(&b'\n') {
            lines.push(b'\n');
        }
        let whole = lineproto::complete_lines(&lines) == lines.len();
        if !pending.lock().push(lines, whole, &self.options) {
            add(&counters.dropped_datagrams, 1);
            if let Some(suppressed) = self.feed.other_log.allow() {
                tracing::warn!(
                    listener = %self.feed.listener,
                    %peer,
                    pending_bytes = self.options.max_pending_bytes,
                    suppressed,
                    "writes are behind: datagram dropped"
                );
            }
            return;
        }
        pending.ready.notify_one();
    }
}

/// Writes the pending batches in order until the receiver closed the queue and it is empty.
async fn write_pending<S: Sink>(feed: Arc<Feed<S>>, pending: Arc<Pending>) {
    loop {
        let next = {
            let mut q = pending.lock();
            match q.batches.pop_front() {
                Some(b) => {
                    q.bytes -= b.data.len();
                    Some(b.data)
                }
                None if q.closed => return,
                None => None,
            }
        };
        match next {
            Some(data) => {
                feed.deliver(Bytes::from(data), None).await;
            }
            None => pending.ready.notified().await,
        }
    }
}

impl<S> std::fmt::Debug for UdpListener<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpListener")
            .field("addr", &self.feed.listener)
            .field("database", &self.feed.database)
            .field(
                "datagrams",
                &self.feed.counters.datagrams.load(Ordering::Relaxed),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast;

    use super::*;
    use crate::ingest::testing::{Recorder, eventually};
    use crate::params::Precision;

    async fn start(
        options: UdpOptions,
        precision: Precision,
    ) -> (
        SocketAddr,
        Recorder,
        Arc<super::super::Counters>,
        broadcast::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let config = UdpConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            database: "udpdb".into(),
            precision,
        };
        let r = Recorder::default();
        let l = UdpListener::bind(&config, r.clone(), options)
            .await
            .expect("bind");
        let addr = l.local_addr();
        let counters = l.stats().counters;
        let (tx, rx) = broadcast::channel(1);
        let task = tokio::spawn(l.run(Shutdown::new(rx)));
        (addr, r, counters, tx, task)
    }

    async fn client(to: SocketAddr) -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        s.connect(to).await.expect("connect");
        s
    }

    #[tokio::test]
    async fn datagrams_reach_the_sink_with_database_and_precision() {
        let (addr, r, counters, tx, task) =
            start(UdpOptions::default(), Precision::Milliseconds).await;
        let c = client(addr).await;
        for i in 0..20 {
            c.send(format!("m,d={i} v={i} {i}\nm,d={i} w=1 {i}").as_bytes())
                .await
                .expect("send");
        }
        eventually("40 lines", || r.lines().len() == 40).await;
        let batches = r.batches.lock().expect("lock").clone();
        for (db, precision, data) in &batches {
            assert_eq!(db, "udpdb");
            assert_eq!(*precision, lineproto::Precision::Milliseconds);
            assert_eq!(data.last(), Some(&b'\n'));
        }
        let mut lines = r.lines();
        lines.sort();
        assert!(lines.contains(&"m,d=7 w=1 7".to_owned()), "{lines:?}");
        let s = counters.snapshot();
        assert_eq!((s.datagrams, s.lines, s.bad_lines), (20, 40, 0));
        tx.send(()).expect("listener runs");
        task.await.expect("stops");
    }

    #[tokio::test]
    async fn garbage_and_oversize_datagrams_are_counted_not_fatal() {
        let options = UdpOptions {
            max_datagram_bytes: 100,
            ..UdpOptions::default()
        };
        let (addr, r, counters, tx, task) = start(options, Precision::Nanoseconds).await;
        let c = client(addr).await;
        c.send(&[0xff, 0x00, b'\n', b'x']).await.expect("send");
        c.send(&vec![b'a'; 500]).await.expect("send");
        c.send(b"good v=1 1\nbad line\n").await.expect("send");
        c.send(b"after v=2 2\n").await.expect("send");
        eventually("both good lines", || r.lines().len() == 2).await;
        assert_eq!(r.lines(), ["good v=1 1", "after v=2 2"]);
        let s = counters.snapshot();
        assert_eq!(s.datagrams, 4);
        assert_eq!(s.oversize_datagrams, 1);
        assert_eq!(s.bad_lines, 3);
        assert_eq!(s.lines, 5);
        tx.send(()).expect("listener runs");
        task.await.expect("stops");
    }

    #[test]
    fn datagrams_are_gathered_up_to_the_limits() {
        let options = UdpOptions {
            max_datagram_bytes: 100,
            max_batch_bytes: 10,
            max_pending_bytes: 20,
        };
        let mut q = Queue::default();
        assert!(q.push(b"a 1\n".to_vec(), true, &options));
        assert!(q.push(b"b 2\n".to_vec(), true, &options));
        // Past max_batch_bytes: a new batch.
        assert!(q.push(b"c 3\n".to_vec(), true, &options));
        assert_eq!(q.batches.len(), 2);
        assert_eq!(q.batches[0].data, b"a 1\nb 2\n");
        // A datagram whose lines may run on seals its batch.
        assert!(q.push(b"d=\"\n".to_vec(), false, &options));
        assert!(q.push(b"e 5\n".to_vec(), true, &options));
        assert_eq!(q.batches.len(), 3);
        assert_eq!(q.batches[1].data, b"c 3\nd=\"\n");
        assert_eq!(q.bytes, 20);
        // Past max_pending_bytes: refused.
        assert!(!q.push(b"f\n".to_vec(), true, &options));
        // An empty queue takes a datagram of any size.
        let mut q = Queue::default();
        assert!(q.push(vec![b'x'; 50], true, &options));
    }

    #[tokio::test]
    async fn an_open_quote_does_not_swallow_the_next_datagram() {
        let (addr, r, counters, tx, task) =
            start(UdpOptions::default(), Precision::Nanoseconds).await;
        let c = client(addr).await;
        // The comment's quote stays open to the end of its datagram, as InfluxDB reads it.
        c.send(b"a v=1 1\n# note x=\"open\n").await.expect("send");
        c.send(b"b v=2 2\n").await.expect("send");
        eventually("b", || r.lines().iter().any(|l| l == "b v=2 2")).await;
        assert_eq!(counters.snapshot().lines, 2);
        tx.send(()).expect("listener runs");
        task.await.expect("stops");
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_pending() {
        let (addr, r, counters, tx, task) =
            start(UdpOptions::default(), Precision::Nanoseconds).await;
        let c = client(addr).await;
        for i in 0..50 {
            c.send(format!("m v={i} {i}\n").as_bytes())
                .await
                .expect("send");
        }
        eventually("50 datagrams", || counters.snapshot().datagrams == 50).await;
        tx.send(()).expect("listener runs");
        task.await.expect("stops");
        assert_eq!(r.lines().len(), 50);
    }
}
