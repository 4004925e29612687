//! The idle deadline of a connection: while no request is in flight, the client must start
//! the next one (send complete request headers) within `header_read_timeout` of the last one
//! ending — or of connecting — whatever it trickles meanwhile.
//!
//! hyper's own header timeout covers HTTP/1 once a request head is being read, but not the
//! moment before: the protocol sniffing of the auto builder (HTTP/1 or h2c) waits for bytes
//! without a deadline, and an HTTP/2 connection has no idle limit at all. A client that
//! connects and sends nothing, or drips the h2 preface, would hold a connection slot forever.
//! [`IdleTimeout`] closes such a connection; a request in flight (its body, a slow query, a
//! long streamed answer) is never cut by it — body reads have their own timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests in flight on one connection, and since when it has been idle.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `base` when the connection last became idle.
    idle_since_ms: AtomicU64,
}

impl Activity {
    /// A connection that just opened (idle from now).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::SeqCst) == 0)
            .then(|| self.base + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst)))
    }
}

/// A request in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's IO that fails reads with `TimedOut` once it has been idle too long.
pub struct IdleTimeout<I> {
    io: I,
    activity: Arc<Activity>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
}

impl<I> IdleTimeout<I> {
    /// Wraps `io`.
    pub fn new(io: I, activity: Arc<Activity>, timeout: Duration) -> Self {
        Self {
            io,
            activity,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed_for: None,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                if let Some(since) = this.activity.idle_since() {
                    let deadline = since + this.timeout;
                    if this.armed_for != Some(deadline) {
                        this.sleep.as_mut().reset(deadline);
                        this.armed_for = Some(deadline);
                    }
                    if this.sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request within the header read timeout",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A response body that keeps its request in flight until it is sent (or dropped), so a long
/// streamed answer is never taken for an idle connection.
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_times_out_and_a_busy_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut io = IdleTimeout::new(server, activity.clone(), Duration::from_secs(2));
        let mut buf = [0u8; 8];
        // Busy: a request in flight, nothing read for a long time, no timeout.
        let busy = activity.start();
        let read = tokio::time::timeout(Duration::from_secs(10), io.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "still waiting after 10 s with a request in flight"
        );
        drop(busy);
        // Idle: the read fails two seconds after the request ended.
        let started = Instant::now();
        let err = io.read(&mut buf).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn trickled_bytes_do_not_extend_the_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = IdleTimeout::new(server, Activity::new(), Duration::from_secs(3));
        let started = Instant::now();
        let drip = tokio::spawn(async move {
            for _ in 0..10 {
                if client.write_all(b"P").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let mut buf = [0u8; 1];
        let err = loop {
            match io.read(&mut buf).await {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        drip.abort();
    }
}
