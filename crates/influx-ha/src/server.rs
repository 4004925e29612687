//! The accept loop and connection tasks of one HTTP listener, with backpressure and drain.
//!
//! - A connection permit is taken *before* `accept()`, so at most `max_connections` are open
//!   and further clients wait in the kernel's backlog instead of costing memory here.
//! - Accept errors (EMFILE, ENOBUFS, …) never end the listener: it backs off 1 s, 2 s, … up to
//!   64 s and tries again.
//! - Each connection is served by hyper-util's auto builder (HTTP/1.1, and h2c for clients that
//!   ask for it), with a header read timeout against slow-loris clients, and header names
//!   written in Go's canonical case (`X-Influxdb-Version`).
//! - TLS (optional, [`run_with_tls`]): the handshake runs in the connection's task, within the
//!   header read timeout, with the listener's current certificate ([`ServerTls`], reloadable).
//! - Idle connections: with no request in flight, a connection must deliver the next request's
//!   headers within the header read timeout, whatever it trickles meanwhile ([`idle`]); this
//!   also bounds the protocol sniffing and HTTP/2 connections, which hyper's own header
//!   timeout does not cover.
//! - Each request carries the client's address ([`ClientAddr`]) in its extensions.
//! - Shutdown: the loop stops accepting and drops the listener, every connection is told to
//!   finish its in-flight request and close ([`Shutdown`]), and [`run`] waits until all of them
//!   ended or the drain period is over.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};

use self::idle::{Activity, IdleTimeout, TrackedBody};
use crate::http::guard::ClientAddr;
use crate::http::{HttpService, WriteHandler};
use crate::shutdown::Shutdown;
use crate::tls::ServerTls;

/// Connection-level settings of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time a client gets to send request headers.
    pub header_read_timeout: Duration,
    /// After shutdown: time in-flight requests get to finish.
    pub drain_timeout: Duration,
}

/// How the drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections still open when the drain period ended (0: a clean drain).
    pub abandoned_connections: usize,
}

const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(64);

/// Largest read buffer of one HTTP/1 connection.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Serves `listener` until `shutdown` completes, then drains.
pub async fn run<W: WriteHandler>(
    listener: TcpListener,
    service: Arc<HttpService<W>>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> DrainReport {
    run_with_tls(listener, service, options, None, shutdown).await
}

/// [`run`], with TLS on every connection when `tls` is given: the handshake happens in the
/// connection's task and must finish within `header_read_timeout`.
pub async fn run_with_tls<W: WriteHandler>(
    listener: TcpListener,
    service: Arc<HttpService<W>>,
    options: ServerOptions,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()>,
) -> DrainReport {
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let limit = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (complete_tx, mut complete_rx) = mpsc::channel::<()>(1);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // hyper grows each connection's read buffer up to ~400 KiB while a large body comes
        // in and keeps it reserved while the request is processed: 13 MiB or more at 32
        // connections for nothing, as bodies are copied out anyway. 64 KiB reads cost a few
        // more syscalls per megabyte, nothing measurable.
        .max_buf_size(READ_BUFFER_BYTES)
        // `X-Influxdb-Version`, not `x-influxdb-version`: the spelling Go's server sends.
        .title_case_headers(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    // Every connection's task, so that those still open when the drain period is over can
    // be ended: a body still arriving then would reach queues already closed.
    let mut connections = tokio::task::JoinSet::new();
    let accept_loop = async {
        loop {
            // Finished ones are let go as they end, so the set holds the open ones only.
            while connections.try_join_next().is_some() {}
            // Backpressure: wait for a free slot before taking the next connection.
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = accept(&listener).await;
            let _ = stream.set_nodelay(true);
            let task = ConnectionTask {
                service: service.clone(),
                builder: builder.clone(),
                shutdown: Shutdown::new(notify_shutdown.subscribe()),
                _complete: complete_tx.clone(),
                _permit: permit,
                handshake_timeout: options.header_read_timeout,
            };
            connections.spawn(task.run(stream, peer, tls.clone()));
        }
    };
    tokio::select! {
        () = accept_loop => {}
        () = shutdown => {}
    }
    drop(listener);
    tracing::info!(listener = %local, "stopped accepting; draining connections");
    // Every connection task holds a receiver: this reaches all of them. No receiver: no task.
    let _ = notify_shutdown.send(());
    drop(complete_tx);
    let drained = tokio::time::timeout(options.drain_timeout, complete_rx.recv()).await;
    let abandoned = if drained.is_ok() {
        0
    } else {
        options.max_connections.max(1) - limit.available_permits()
    };
    if abandoned > 0 {
        tracing::warn!(
            listener = %local,
            connections = abandoned,
            "drain period over with connections still open; closing them"
        );
    }
    // Waited for, not only aborted: a task running on another worker stops only at its next
    // await, and no connection task may still be at work once the caller goes on to close
    // the queues. (Work that outlives its connection, an HTTP/2 stream's write or a dead-letter
    // replay, is counted by the write path and waited for there.)
    connections.shutdown().await;
    DrainReport {
        abandoned_connections: abandoned,
    }
}

/// Accepts one connection, backing off on errors instead of giving up.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(e) => {
                tracing::error!(error = %e, retry_in_s = backoff.as_secs(), "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// One client connection.
struct ConnectionTask<W> {
    /// Answers the requests.
    service: Arc<HttpService<W>>,
    /// Shared connection settings.
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// Tells the connection to finish and close.
    shutdown: Shutdown,
    /// Dropped when the task ends: the server knows all ended when the last one is gone.
    _complete: mpsc::Sender<()>,
    /// The connection slot, released when the task ends.
    _permit: OwnedSemaphorePermit,
    /// Time a TLS client gets to finish its handshake.
    handshake_timeout: Duration,
}

impl<W: WriteHandler> ConnectionTask<W> {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr, tls: Option<Arc<ServerTls>>) {
        let activity = Activity::new();
        let stream = IdleTimeout::new(stream, activity.clone(), self.handshake_timeout);
        let Some(tls) = tls else {
            return self.serve(stream, peer, activity).await;
        };
        let handshake = tokio::time::timeout(self.handshake_timeout, tls.acceptor().accept(stream));
        let result = tokio::select! {
            r = handshake => r,
            () = self.shutdown.recv() => return,
        };
        match result {
            Ok(Ok(stream)) => self.serve(stream, peer, activity).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time; closed"),
        }
    }

    async fn serve<I>(mut self, io: I, peer: SocketAddr, activity: Arc<Activity>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.service.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let service = service.clone();
            req.extensions_mut().insert(ClientAddr(peer));
            // In flight from its head until its answer is sent: never idle meanwhile.
            let in_flight = activity.start();
            async move {
                let resp = service.handle(req).await;
                Ok::<_, Infallible>(resp.map(|body| TrackedBody::new(body, in_flight)))
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), svc);
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = self.shutdown.recv() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

mod idle;
#[cfg(test)]
mod tests;
