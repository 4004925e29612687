//! Reading a request body under three caps: its size, the time it takes, and the bytes all
//! requests hold at once.
//!
//! - A `Content-Length` over `max_body_bytes` is refused (413) before anything is read; a body
//!   without one is refused as soon as it grows past the limit.
//! - `Content-Encoding: gzip` (exactly that value, as 1.6 compares it) is inflated after the
//!   compressed body was read, through the same limit ([`super::gzip`]): a gzip bomb gets 413
//!   after at most `max_body_bytes` of output.
//! - Every byte held counts against [`InflightBytes`]. A request that would exceed it waits,
//!   before its body is read when the length is known, for up to `inflight_wait` (first come,
//!   first served), and is answered 503 with `Retry-After` if there is still no room. While it
//!   waits its body stays in the kernel's socket buffers and the client's, so the relay's
//!   memory stays bounded however many clients send at once. A gzip body's inflated bytes are
//!   counted once inflated, without waiting (503 if there is no room). The permit travels with
//!   the body ([`RequestBody`]) until the write is answered.
//! - Large bodies arrive in many chunks and are joined into one buffer of their declared
//!   length. Those buffers come from, and go back to, a small pool ([`BodyPool`]) instead of
//!   the allocator: with bodies of a megabyte or more arriving on many connections, glibc's
//!   heap otherwise keeps freed body buffers in fragmented arenas and the process grows to
//!   about twice the bodies it really holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::error::RequestError;
use super::gzip::{GunzipError, gunzip};

/// Limits on one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body, compressed and inflated.
    pub max_body_bytes: usize,
    /// Time allowed to receive the whole body.
    pub read_timeout: Duration,
    /// Time a request may wait for room under `max_inflight_bytes` before it gets 503.
    pub inflight_wait: Duration,
}

impl BodyLimits {
    /// The limits `[http]` sets.
    pub fn of(http: &crate::config::HttpConfig) -> Self {
        Self {
            max_body_bytes: usize::try_from(http.max_body_bytes).unwrap_or(usize::MAX),
            read_timeout: http.body_read_timeout,
            inflight_wait: http.inflight_wait,
        }
    }
}

/// [`BodyLimits`] that a config reload changes while requests are being served; every request
/// reads them once, when its body starts.
#[derive(Debug, Clone)]
pub struct SharedLimits(Arc<arc_swap::ArcSwap<BodyLimits>>);

impl SharedLimits {
    /// Starts with `limits`.
    pub fn new(limits: BodyLimits) -> Self {
        Self(Arc::new(arc_swap::ArcSwap::from_pointee(limits)))
    }

    /// The limits in force.
    pub fn get(&self) -> BodyLimits {
        **self.0.load()
    }

    /// Replaces the limits for requests whose bodies start from now on.
    pub fn set(&self, limits: BodyLimits) {
        self.0.store(Arc::new(limits));
    }
}

// === impl BodyPool ===

/// `n` rounded up to a multiple of an eighth of its highest power of two (less than 12.5%
/// more). Bodies from one kind of agent differ by a few percent in size; buffers made exactly
/// to size would each be a little too small for the next larger body, so the pool would fill
/// with buffers nobody can reuse while new ones are allocated.
fn size_class(n: usize) -> usize {
    let highest_bit = 1usize << (usize::BITS - 1 - n.max(1).leading_zeros());
    let step = (highest_bit / 8).max(1);
    n.div_ceil(step).saturating_mul(step)
}

/// Buffers smaller than this are left to the allocator (it handles them well).
const MIN_POOLED: usize = 256 << 10;
/// The pool keeps at most this many bytes of idle buffers.
const MAX_POOL_BYTES: usize = 64 << 20;

/// Recycled buffers for joining large request bodies (see the module docs).
#[derive(Debug, Clone)]
pub struct BodyPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    /// Idle buffers, empty, with their capacity.
    idle: Mutex<Vec<Vec<u8>>>,
    /// Most idle bytes kept; buffers returned past it are freed.
    max_idle_bytes: usize,
}

/// A pooled buffer lent to a [`Bytes`]; goes back to the pool when the last clone is dropped.
struct Lent {
    buf: Vec<u8>,
    pool: Arc<PoolInner>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held: usize = idle.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= self.pool.max_idle_bytes {
            idle.push(buf);
        }
    }
}

impl BodyPool {
    /// A pool keeping at most `max_idle_bytes` of idle buffers.
    pub fn new(max_idle_bytes: usize) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(Vec::new()),
                max_idle_bytes,
            }),
        }
    }

    /// An empty buffer with room for `n` bytes: an idle one of at most twice that size when
    /// there is one (the smallest that fits), else a new one of `n`'s [`size_class`].
    fn take(&self, n: usize) -> Vec<u8> {
        if n >= MIN_POOLED {
            let mut idle = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let best = idle
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= n && b.capacity() / 2 <= n)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                return idle.swap_remove(i);
            }
            return Vec::with_capacity(size_class(n));
        }
        Vec::with_capacity(n)
    }

    /// Freezes `buf` into [`Bytes`] that return it to the pool once dropped (small buffers
    /// are handed over to `Bytes` as they are).
    fn freeze(&self, buf: Vec<u8>) -> Bytes {
        if buf.capacity() < MIN_POOLED {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Lent {
            buf,
            pool: self.inner.clone(),
        })
    }

    /// Bytes held by idle buffers.
    pub fn idle_bytes(&self) -> usize {
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        idle.iter().map(Vec::capacity).sum()
    }
}

// === impl InflightBytes ===

/// A cap on request-body bytes held in memory at once, over all requests.
#[derive(Debug, Clone)]
pub struct InflightBytes {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    /// Requests that had to wait for room, and those refused (503) for want of it.
    waits: Arc<[AtomicU64; 2]>,
    /// Told whenever a permit gives bytes back, for those that wait for room without a place
    /// in the semaphore's queue (the TCP listeners).
    released: Arc<tokio::sync::Notify>,
    /// Where large bodies are joined. Idle buffers are kept up to the cap (at most 64 MiB):
    /// a new buffer is made only when no idle one fits, so buffers lent and idle together stay
    /// near the most bodies ever held at once, which the cap bounds.
    pool: BodyPool,
}

/// Bytes counted against [`InflightBytes`]; released when dropped.
#[derive(Debug, Default)]
pub struct InflightPermit {
    permit: Option<OwnedSemaphorePermit>,
    /// Told when bytes are given back ([`InflightBytes::released`]).
    released: Option<Arc<tokio::sync::Notify>>,
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        // Given back first, then told: a waiter woken finds the bytes free.
        let held = self.permit.take().is_some();
        if let (true, Some(released)) = (held, &self.released) {
            released.notify_waiters();
        }
    }
}

impl InflightPermit {
    fn merge(&mut self, more: OwnedSemaphorePermit, released: &Arc<tokio::sync::Notify>) {
        self.released.get_or_insert_with(|| released.clone());
        match &mut self.permit {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
    }

    /// Bytes this permit holds.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Gives back what this permit holds beyond `n` bytes.
    pub fn shrink_to(&mut self, n: usize) {
        let extra = self.bytes().saturating_sub(n);
        if extra == 0 {
            return;
        }
        if n == 0 {
            self.permit = None;
        } else if let Some(p) = &mut self.permit {
            drop(p.split(extra));
        }
        if let Some(released) = &self.released {
            released.notify_waiters();
        }
    }
}

impl InflightBytes {
    /// A cap of `capacity` bytes (at most `usize::MAX >> 3`, tokio's limit).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(Semaphore::MAX_PERMITS);
        Self {
            semaphore: Arc::new(Semaphore::new(capacity)),
            capacity,
            waits: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
            released: Arc::new(tokio::sync::Notify::new()),
            pool: BodyPool::new(capacity.min(MAX_POOL_BYTES)),
        }
    }

    /// Told whenever bytes are given back.
    pub fn released(&self) -> &tokio::sync::Notify {
        &self.released
    }

    /// The pool large bodies are joined in.
    pub fn pool(&self) -> &BodyPool {
        &self.pool
    }

    /// The cap.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held right now (including what requests waiting for room have reserved).
    pub fn in_use(&self) -> usize {
        self.capacity - self.semaphore.available_permits()
    }

    /// Requests that waited for room since start.
    pub fn waited(&self) -> u64 {
        self.waits[0].load(Ordering::Relaxed)
    }

    /// Requests answered 503 for want of room since start.
    pub fn refused(&self) -> u64 {
        self.waits[1].load(Ordering::Relaxed)
    }

    /// Takes `n` more bytes into `permit`, or fails at once when that would pass the cap.
    pub fn try_grow(&self, permit: &mut InflightPermit, n: usize) -> Result<(), RequestError> {
        if n == 0 {
            return Ok(());
        }
        let more = self.take_now(n)?.ok_or_else(|| self.refuse(None))?;
        permit.merge(more, &self.released);
        Ok(())
    }

    /// Takes `n` more bytes into `permit`, waiting up to `wait` for requests ahead to release
    /// theirs (in arrival order, so that a large body is not starved by small ones).
    pub async fn grow(
        &self,
        permit: &mut InflightPermit,
        n: usize,
        wait: Duration,
    ) -> Result<(), RequestError> {
        if n == 0 {
            return Ok(());
        }
        if let Some(more) = self.take_now(n)? {
            permit.merge(more, &self.released);
            return Ok(());
        }
        if wait.is_zero() || n > self.capacity {
            return Err(self.refuse(None));
        }
        self.waits[0].fetch_add(1, Ordering::Relaxed);
        let n32 = u32::try_from(n).map_err(|_| RequestError::BodyTooLarge)?;
        let acquire = self.semaphore.clone().acquire_many_owned(n32);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(more)) => {
                permit.merge(more, &self.released);
                Ok(())
            }
            Ok(Err(_closed)) => Err(RequestError::Unavailable("shutting down".to_owned())),
            Err(_elapsed) => Err(self.refuse(Some(wait))),
        }
    }

    /// Takes `n` more bytes into `permit` if there is room now, without counting a refusal.
    pub fn try_reserve(&self, permit: &mut InflightPermit, n: usize) -> bool {
        match self.take_now(n) {
            Ok(Some(more)) => {
                permit.merge(more, &self.released);
                true
            }
            _ => n == 0,
        }
    }

    /// Takes up to `n` more bytes into `permit`, as many as are free now (none while requests
    /// wait for room: they come first), without waiting or counting a refusal. For the TCP
    /// listeners' buffers, which can read in smaller pieces.
    pub fn try_reserve_up_to(&self, permit: &mut InflightPermit, n: usize) {
        let free = self.semaphore.available_permits().min(n);
        if free > 0 {
            self.try_reserve(permit, free);
        }
    }

    /// `n` (> 0) bytes if there is room for them now, `None` if not.
    fn take_now(&self, n: usize) -> Result<Option<OwnedSemaphorePermit>, RequestError> {
        let n32 = u32::try_from(n).map_err(|_| RequestError::BodyTooLarge)?;
        match self.semaphore.clone().try_acquire_many_owned(n32) {
            Ok(more) => Ok(Some(more)),
            Err(TryAcquireError::NoPermits) => Ok(None),
            Err(TryAcquireError::Closed) => {
                Err(RequestError::Unavailable("shutting down".to_owned()))
            }
        }
    }

    /// Counts a refusal and says why.
    fn refuse(&self, waited: Option<Duration>) -> RequestError {
        self.waits[1].fetch_add(1, Ordering::Relaxed);
        let waited = waited.map_or(String::new(), |w| {
            format!(" for {}", crate::units::format_duration(w))
        });
        RequestError::Overloaded(format!(
            "too many request bytes in flight (limit {} bytes){waited}; retry later",
            self.capacity
        ))
    }
}

// === impl RequestBody ===

/// A request body read into memory (inflated if it was gzip), with the in-flight bytes it holds.
#[derive(Debug)]
pub struct RequestBody {
    /// The body; cheap to clone for every backend.
    pub data: Bytes,
    /// Keeps `data.len()` bytes counted until the request is answered.
    pub permit: InflightPermit,
}

/// Whether the request says its body is gzip, compared as 1.6 does (`== "gzip"`).
pub fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() == b"gzip")
}

/// The declared `Content-Length`, if any and parseable.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads, caps and (for gzip) inflates a request body.
pub async fn read_body<B>(
    body: B,
    headers: &HeaderMap,
    limits: &BodyLimits,
    inflight: &InflightBytes,
) -> Result<RequestBody, RequestError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let RequestBody { data: raw, permit } = read_raw_body(body, headers, limits, inflight).await?;
    if !is_gzip(headers) {
        return Ok(RequestBody { data: raw, permit });
    }
    let max = limits.max_body_bytes;
    let inflated = gunzip(&raw, max).map_err(|e| match e {
        GunzipError::TooLarge => RequestError::BodyTooLarge,
        GunzipError::Invalid(g) => RequestError::InvalidGzip(g),
    })?;
    // The compressed bytes are gone: release them before counting the inflated ones.
    drop(raw);
    drop(permit);
    // The inflated bytes are in memory already: they are counted, or refused, without waiting
    // (a wait would hold them uncounted).
    let mut inflated_permit = InflightPermit::default();
    inflight.try_grow(&mut inflated_permit, inflated.len())?;
    Ok(RequestBody {
        data: Bytes::from(inflated),
        permit: inflated_permit,
    })
}

/// Reads and caps a request body as it came (no inflating), counted in `inflight`.
pub async fn read_raw_body<B>(
    body: B,
    headers: &HeaderMap,
    limits: &BodyLimits,
    inflight: &InflightBytes,
) -> Result<RequestBody, RequestError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let max = limits.max_body_bytes;
    let declared = content_length(headers);
    if declared.is_some_and(|n| n > max as u64) {
        return Err(RequestError::BodyTooLarge);
    }
    let mut permit = InflightPermit::default();
    if let Some(n) = declared {
        // Known length: count it before reading, so that a waiting body stays in the socket.
        inflight
            .grow(&mut permit, n as usize, limits.inflight_wait)
            .await?;
    }
    let collect = collect_capped(body, max, declared, inflight, limits, &mut permit);
    // The whole timeout also bounds the waits for room of a body without a length.
    let raw = match tokio::time::timeout(limits.read_timeout, collect).await {
        Ok(result) => result?,
        Err(_) => return Err(RequestError::BodyReadTimeout),
    };
    Ok(RequestBody { data: raw, permit })
}

/// How long a body with a declared length may take to start arriving before it must keep
/// pace (see [`Pace`]): a round trip and a `100 Continue`, with room to spare.
const BODY_START_GRACE: Duration = Duration::from_secs(2);

/// The longest a body with a declared length may send nothing once it has started, whatever
/// its pace (one that sent most of itself fast is ahead of the pace for most of the timeout);
/// a sixth of `body_read_timeout` where that is longer, for links slow enough to need a
/// longer timeout.
const BODY_STALL: Duration = Duration::from_secs(10);

/// When a body being read must have delivered more than it has.
///
/// A body with a declared length holds that much of `max_inflight_bytes` from the start, so a
/// client that stops sending (its host gone, a bug, or on purpose) would hold it for the whole
/// `body_read_timeout`, and two such clients could starve every other writer. Such a body must
/// instead arrive at a pace that ends it within the timeout: after a short grace, the share
/// received must keep up with the share of the timeout gone. A body that falls behind is cut
/// (503, as for the timeout), and gives its reservation back in seconds; so is one that sends
/// nothing for [`BODY_STALL`]. A body without a length holds only what arrived and has the
/// whole timeout.
struct Pace {
    start: tokio::time::Instant,
    /// When the last bytes arrived.
    last: tokio::time::Instant,
    timeout: Duration,
    declared: Option<u64>,
}

impl Pace {
    fn new(timeout: Duration, declared: Option<u64>) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            start: now,
            last: now,
            // A year is as good as for ever, and cannot overflow an `Instant`.
            timeout: timeout.min(Duration::from_secs(365 * 24 * 3600)),
            declared,
        }
    }

    /// Bytes arrived just now.
    fn progressed(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// The time by which more than `received` bytes must have arrived.
    fn deadline(&self, received: usize) -> tokio::time::Instant {
        match self.declared {
            Some(n) if n > 0 => {
                let grace = BODY_START_GRACE.min(self.timeout);
                let share = (received as f64 / n as f64).min(1.0);
                let pace = self.start + grace + (self.timeout - grace).mul_f64(share);
                let stall = BODY_STALL.max(self.timeout / 6).max(grace);
                pace.min(self.last + stall)
            }
            _ => self.start + self.timeout,
        }
    }
}

/// Collects at most `max` bytes at the pace [`Pace`] sets. With a declared length (already
/// counted in `permit`) the buffer is sized once; without one, each chunk is counted against
/// `inflight` as it comes.
async fn collect_capped<B>(
    body: B,
    max: usize,
    declared: Option<u64>,
    inflight: &InflightBytes,
    limits: &BodyLimits,
    permit: &mut InflightPermit,
) -> Result<Bytes, RequestError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut pace = Pace::new(limits.read_timeout, declared);
    let mut first: Option<Bytes> = None;
    let mut buf: Option<Vec<u8>> = None;
    let mut total = 0usize;
    loop {
        let next = tokio::time::timeout_at(pace.deadline(total), body.frame());
        let Some(frame) = next.await.map_err(|_| RequestError::BodyReadTimeout)? else {
            break;
        };
        pace.progressed();
        let frame = frame.map_err(|e| RequestError::BodyRead(e.to_string()))?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        if chunk.is_empty() {
            continue;
        }
        total = total.saturating_add(chunk.len());
        if total > max {
            return Err(RequestError::BodyTooLarge);
        }
        if declared.is_none() {
            inflight
                .grow(permit, chunk.len(), limits.inflight_wait)
                .await?;
        }
        // The common single-chunk body is kept without a copy.
        match (&mut first, &mut buf) {
            (None, None) => first = Some(chunk),
            (Some(_), None) => {
                let f = first.take().unwrap_or_default();
                let size = match declared {
                    Some(n) => usize::try_from(n).unwrap_or(max),
                    None => (f.len() + chunk.len()).max(64 * 1024),
                };
                let mut b = inflight
                    .pool()
                    .take(size.min(max).max(f.len() + chunk.len()));
                b.extend_from_slice(&f);
                b.extend_from_slice(&chunk);
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => inflight.pool().freeze(b),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use http::HeaderValue;
    use http_body_util::Full;
    use hyper::body::Frame;

    use super::*;
    use crate::http::gzip::GzipError;

    fn limits(max: usize) -> BodyLimits {
        BodyLimits {
            max_body_bytes: max,
            read_timeout: Duration::from_secs(5),
            inflight_wait: Duration::from_secs(1),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("valid header"));
        }
        h
    }

    /// A body that arrives in the given chunks.
    mod chunks {
        use std::pin::Pin;
        use std::task::{Context, Poll};

        use super::*;

        pub struct Chunks(pub std::collections::VecDeque<&'static [u8]>);

        impl hyper::body::Body for Chunks {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                Poll::Ready(
                    self.0
                        .pop_front()
                        .map(|c| Ok(Frame::data(Bytes::from_static(c)))),
                )
            }
        }

        pub fn body(chunks: Vec<&'static [u8]>) -> Chunks {
            Chunks(chunks.into())
        }
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).expect("in-memory write");
        e.finish().expect("in-memory finish")
    }

    #[tokio::test]
    async fn plain_body_within_limits() {
        let inflight = InflightBytes::new(1000);
        let body = Full::new(Bytes::from_static(b"cpu v=1 1\n"));
        let got = read_body(
            body,
            &headers(&[("content-length", "10")]),
            &limits(100),
            &inflight,
        )
        .await
        .expect("valid");
        assert_eq!(got.data, "cpu v=1 1\n");
        assert_eq!(got.permit.bytes(), 10);
        assert_eq!(inflight.in_use(), 10);
        drop(got);
        assert_eq!(inflight.in_use(), 0);
    }

    #[tokio::test]
    async fn chunked_body_is_joined_and_counted() {
        let inflight = InflightBytes::new(1000);
        let body = chunks::body(vec![b"cpu v=1 1\n", b"", b"cpu v=2 2\n"]);
        let got = read_body(body, &HeaderMap::new(), &limits(100), &inflight)
            .await
            .expect("valid");
        assert_eq!(got.data, "cpu v=1 1\ncpu v=2 2\n");
        assert_eq!(inflight.in_use(), 20);
    }

    #[tokio::test]
    async fn large_bodies_are_joined_in_recycled_buffers() {
        let inflight = InflightBytes::new(1 << 24);
        let line: &'static [u8] = b"cpu,host=a usage_user=12.5,usage_idle=80 1700000000000000000\n";
        let chunk: &'static [u8] = line.repeat(4096).leak();
        let len = (chunk.len() * 2).to_string();
        for round in 0..3 {
            let body = chunks::body(vec![chunk, chunk]);
            let got = read_body(
                body,
                &headers(&[("content-length", &len)]),
                &limits(1 << 24),
                &inflight,
            )
            .await
            .expect("valid");
            assert_eq!(got.data.len(), chunk.len() * 2);
            assert_eq!(&got.data[..chunk.len()], chunk);
            assert_eq!(&got.data[chunk.len()..], chunk);
            let copy = got.data.clone();
            drop(got);
            if round == 0 {
                assert_eq!(inflight.pool().idle_bytes(), 0, "still lent to a clone");
            }
            drop(copy);
            // Back in the pool; the next body takes it again instead of allocating.
            assert!(inflight.pool().idle_bytes() >= chunk.len() * 2);
            assert!(
                inflight.pool().idle_bytes() < chunk.len() * 4,
                "one buffer, reused"
            );
        }
        // Small bodies never enter the pool.
        let pool = BodyPool::new(1 << 20);
        drop(pool.freeze(pool.take(100)));
        assert_eq!(pool.idle_bytes(), 0);
        // Idle buffers are capped.
        let pool = BodyPool::new(MIN_POOLED);
        let (a, b) = (pool.take(MIN_POOLED), pool.take(MIN_POOLED));
        drop((pool.freeze(a), pool.freeze(b)));
        assert_eq!(pool.idle_bytes(), MIN_POOLED);
    }

    #[tokio::test]
    async fn declared_body_in_many_chunks() {
        let inflight = InflightBytes::new(1000);
        let body = chunks::body(vec![b"cpu v=1 1\n", b"cpu v=2 2\n", b"cpu v=3 3\n"]);
        let got = read_body(
            body,
            &headers(&[("content-length", "30")]),
            &limits(100),
            &inflight,
        )
        .await
        .expect("valid");
        assert_eq!(got.data, "cpu v=1 1\ncpu v=2 2\ncpu v=3 3\n");
        assert_eq!(got.permit.bytes(), 30);
        assert_eq!(inflight.in_use(), 30);
    }

    #[test]
    fn size_classes_round_up_by_at_most_an_eighth() {
        for n in [
            MIN_POOLED,
            1_300_000,
            1_352_233,
            1_400_000,
            25_000_000,
            (1 << 20) + 1,
        ] {
            let c = size_class(n);
            assert!(c >= n && c - n <= n / 8, "{n} -> {c}");
        }
        // Telegraf-sized bodies a few percent apart share one class.
        assert_eq!(size_class(1_352_233), size_class(1_400_000));
        assert_eq!(size_class(1 << 20), 1 << 20);
    }

    #[tokio::test]
    async fn empty_body() {
        let inflight = InflightBytes::new(10);
        let got = read_body(
            Full::new(Bytes::new()),
            &HeaderMap::new(),
            &limits(10),
            &inflight,
        )
        .await
        .expect("valid");
        assert!(got.data.is_empty());
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_refused_before_reading() {
        let inflight = InflightBytes::new(1 << 30);
        // The body would fit; the declaration alone decides, as in 1.6.
        let err = read_body(
            Full::new(Bytes::from_static(b"x")),
            &headers(&[("content-length", "30000000")]),
            &limits(25_000_000),
            &inflight,
        )
        .await
        .expect_err("too large");
        assert_eq!(err, RequestError::BodyTooLarge);
    }

    #[tokio::test]
    async fn undeclared_body_over_the_limit() {
        let inflight = InflightBytes::new(1000);
        let body = chunks::body(vec![b"0123456789", b"0123456789", b"x"]);
        let err = read_body(body, &HeaderMap::new(), &limits(20), &inflight)
            .await
            .expect_err("too large");
        assert_eq!(err, RequestError::BodyTooLarge);
        assert_eq!(inflight.in_use(), 0, "permits are released on failure");
        // Exactly at the limit is fine.
        let body = chunks::body(vec![b"0123456789", b"0123456789"]);
        read_body(body, &HeaderMap::new(), &limits(20), &inflight)
            .await
            .expect("at the limit");
    }

    /// A 10-byte body with its `Content-Length`.
    async fn ten_bytes(
        inflight: &InflightBytes,
        limits: &BodyLimits,
    ) -> Result<RequestBody, RequestError> {
        read_body(
            Full::new(Bytes::from_static(b"0123456789")),
            &headers(&[("content-length", "10")]),
            limits,
            inflight,
        )
        .await
    }

    // Paused time: the wait for room elapses as soon as nothing else can run.
    #[tokio::test(start_paused = true)]
    async fn inflight_cap_answers_503_after_the_wait() {
        let inflight = InflightBytes::new(15);
        let first = ten_bytes(&inflight, &limits(100)).await.expect("fits");
        let err = ten_bytes(&inflight, &limits(100))
            .await
            .expect_err("over the in-flight cap");
        assert!(matches!(err, RequestError::Overloaded(_)), "{err:?}");
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        // Chunked bodies are counted as they arrive.
        let err = read_body(
            chunks::body(vec![b"01234", b"56789"]),
            &HeaderMap::new(),
            &limits(100),
            &inflight,
        )
        .await
        .expect_err("over the in-flight cap");
        assert!(matches!(err, RequestError::Overloaded(_)), "{err:?}");
        assert_eq!(
            inflight.in_use(),
            10,
            "the failed chunked body released its part"
        );
        drop(first);
        assert_eq!(inflight.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waits_for_room_then_is_read() {
        let inflight = InflightBytes::new(15);
        let first = ten_bytes(&inflight, &limits(100)).await.expect("fits");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = {
            let inflight = inflight.clone();
            tokio::spawn(async move {
                let body = Full::new(Bytes::from_static(b"abcdefghij"));
                let h = headers(&[("content-length", "10")]);
                let mut l = limits(100);
                l.inflight_wait = Duration::from_secs(3600);
                let read = read_body(body, &h, &l, &inflight);
                tokio::pin!(read);
                // Still waiting after the other body's holder had every chance to run.
                tokio::select! {
                    biased;
                    _ = rx => {}
                    _ = &mut read => panic!("read while the cap was full"),
                }
                read.await
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second body waits for room");
        drop(first);
        tx.send(()).expect("waiter alive");
        let second = waiting
            .await
            .expect("task")
            .expect("read once room was made");
        assert_eq!(second.data, "abcdefghij");
        assert_eq!(inflight.in_use(), 10);
        drop(second);
        assert_eq!(inflight.in_use(), 0);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_cap_is_refused_without_waiting() {
        let inflight = InflightBytes::new(5);
        let mut l = limits(100);
        l.inflight_wait = Duration::from_secs(3600);
        let err = ten_bytes(&inflight, &l).await.expect_err("can never fit");
        assert!(matches!(err, RequestError::Overloaded(_)), "{err:?}");
    }

    #[tokio::test]
    async fn gzip_bodies() {
        let inflight = InflightBytes::new(1 << 20);
        let gzipped = gz(b"cpu v=1 1\n");
        let got = read_body(
            Full::new(Bytes::from(gzipped.clone())),
            &headers(&[("content-encoding", "gzip")]),
            &limits(100),
            &inflight,
        )
        .await
        .expect("valid gzip");
        assert_eq!(got.data, "cpu v=1 1\n");
        assert_eq!(
            inflight.in_use(),
            10,
            "only the inflated bytes stay counted"
        );
        drop(got);

        // Only the exact value "gzip" means gzip, as in 1.6.
        let got = read_body(
            Full::new(Bytes::from(gzipped)),
            &headers(&[("content-encoding", "GZIP")]),
            &limits(100),
            &inflight,
        )
        .await
        .expect("taken as plain");
        assert_eq!(got.data[..2], [0x1f, 0x8b]);
    }

    #[tokio::test]
    async fn invalid_gzip_gets_go_texts() {
        let inflight = InflightBytes::new(1 << 20);
        for (body, expected) in [
            (&b"abc"[..], GzipError::UnexpectedEof),
            (b"abcdefghijklmnop", GzipError::InvalidHeader),
            (b"", GzipError::Eof),
        ] {
            let err = read_body(
                Full::new(Bytes::from_static(body)),
                &headers(&[("content-encoding", "gzip")]),
                &limits(100),
                &inflight,
            )
            .await
            .expect_err("invalid gzip");
            assert_eq!(err, RequestError::InvalidGzip(expected));
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn gzip_bomb_gets_413() {
        let inflight = InflightBytes::new(64 << 20);
        for bomb in [
            crate::http::gzip::tests::one_gib_bomb(),
            crate::http::gzip::tests::single_member_bomb(30, Compression::fast()),
        ] {
            let err = read_body(
                Full::new(Bytes::from(bomb)),
                &headers(&[("content-encoding", "gzip")]),
                &limits(25_000_000),
                &inflight,
            )
            .await
            .expect_err("bomb");
            assert_eq!(err, RequestError::BodyTooLarge);
            assert_eq!(inflight.in_use(), 0);
        }
    }

    #[tokio::test]
    async fn inflated_size_counts_against_the_inflight_cap() {
        let data = vec![b'a'; 4000];
        let read = |inflight: InflightBytes| {
            let body = Full::new(Bytes::from(gz(&data)));
            async move {
                let h = headers(&[("content-encoding", "gzip")]);
                read_body(body, &h, &limits(4000), &inflight).await
            }
        };
        let got = read(InflightBytes::new(4000)).await.expect("fits exactly");
        assert_eq!(got.permit.bytes(), 4000);
        let err = read(InflightBytes::new(3999))
            .await
            .expect_err("inflated does not fit");
        assert!(matches!(err, RequestError::Overloaded(_)), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_body_times_out_with_503() {
        struct Never;
        impl hyper::body::Body for Never {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                std::task::Poll::Pending
            }
        }
        let inflight = InflightBytes::new(100);
        let err = read_body(Never, &HeaderMap::new(), &limits(100), &inflight)
            .await
            .expect_err("timeout");
        assert_eq!(err, RequestError::BodyReadTimeout);
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }

    /// A body whose chunks come each after its delay; then it ends, or (`hang`) never does.
    struct Trickle {
        chunks: std::collections::VecDeque<(Duration, Bytes)>,
        sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        hang: bool,
    }

    impl Trickle {
        fn new(every: Duration, chunks: usize, size: usize, hang: bool) -> Self {
            Trickle {
                chunks: (0..chunks)
                    .map(|_| (every, Bytes::from(vec![b'a'; size])))
                    .collect(),
                sleep: None,
                hang,
            }
        }
    }

    impl hyper::body::Body for Trickle {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            use std::task::Poll;
            let Some((delay, _)) = self.chunks.front() else {
                return if self.hang {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            };
            let delay = *delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
            let chunk = self.chunks.pop_front().map(|(_, c)| c).unwrap_or_default();
            Poll::Ready(Some(Ok(Frame::data(chunk))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_mid_way_gives_its_reservation_back_long_before_the_timeout() {
        let inflight = InflightBytes::new(2_000_000);
        let h = headers(&[("content-length", "1000000")]);
        let started = tokio::time::Instant::now();
        // 10 KB, then nothing: its 1 MB reservation would otherwise be held for all 5 s.
        let body = Trickle::new(Duration::from_millis(100), 1, 10_000, true);
        let err = read_body(body, &h, &limits(1_000_000), &inflight)
            .await
            .expect_err("cut");
        assert_eq!(err, RequestError::BodyReadTimeout);
        assert_eq!(inflight.in_use(), 0);
        // 2 s to start, then 1% of the remaining 3 s for the 1% received (virtual time).
        let cut_after = started.elapsed();
        assert!(
            (Duration::from_secs(2)..Duration::from_millis(2100)).contains(&cut_after),
            "cut after {cut_after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_near_its_end_is_cut_after_the_stall_time() {
        let inflight = InflightBytes::new(2_000_000);
        let h = headers(&[("content-length", "1000000")]);
        let limits = BodyLimits {
            read_timeout: Duration::from_secs(60),
            ..limits(1_000_000)
        };
        let started = tokio::time::Instant::now();
        // 99% at once, then nothing: ahead of the pace until nearly the end of the minute.
        let body = Trickle::new(Duration::from_millis(10), 99, 10_000, true);
        let err = read_body(body, &h, &limits, &inflight)
            .await
            .expect_err("cut");
        assert_eq!(err, RequestError::BodyReadTimeout);
        let cut_after = started.elapsed();
        assert!(
            (BODY_STALL..BODY_STALL + Duration::from_secs(2)).contains(&cut_after),
            "cut after {cut_after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_on_pace_to_end_within_the_timeout_is_read_whole() {
        let inflight = InflightBytes::new(2_000_000);
        let h = headers(&[("content-length", "1000000")]);
        // A tenth every 450 ms: 4.5 s in all, always within the pace of a 5 s timeout.
        let body = Trickle::new(Duration::from_millis(450), 10, 100_000, false);
        let got = read_body(body, &h, &limits(1_000_000), &inflight)
            .await
            .expect("read whole");
        assert_eq!(got.data.len(), 1_000_000);
    }
}
