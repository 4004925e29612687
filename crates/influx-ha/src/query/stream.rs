//! A backend's answer on its way to the client: the first bytes are held back briefly (so that
//! a backend failing right after its headers can still be replaced by another), then the body
//! streams frame by frame — memory does not grow with the size of the result, and a chunked
//! answer stays chunked.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::http::BoxError;
use crate::monitor::PassiveMarks;

/// Most bytes held back before streaming starts.
pub const PEEK_BYTES: usize = 64 << 10;
/// Longest a body is held back: a slow chunked answer starts streaming after this.
pub const PEEK_TIME: Duration = Duration::from_millis(200);

// === impl Outstanding ===

/// One request in flight to a backend (least-outstanding-first routing); released on drop,
/// which for a streamed answer is when the client got all of it or went away.
#[derive(Debug)]
pub struct Outstanding(Arc<AtomicUsize>);

impl Outstanding {
    /// Counts one more request on `counter`.
    pub fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

// === peek ===

/// The start of a body.
pub enum Peeked {
    /// The whole body arrived.
    Complete(Bytes),
    /// More is coming: what arrived so far and the rest.
    Partial(VecDeque<Bytes>, Incoming),
}

/// Reads the start of `body`: all of it when it ends within [`PEEK_BYTES`] and [`PEEK_TIME`].
/// An error here happened before anything reached the client.
pub async fn peek(mut body: Incoming) -> Result<Peeked, hyper::Error> {
    let mut held = VecDeque::new();
    let mut bytes = 0;
    let deadline = tokio::time::Instant::now() + PEEK_TIME;
    loop {
        if bytes >= PEEK_BYTES {
            return Ok(Peeked::Partial(held, body));
        }
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Ok(Peeked::Partial(held, body)),
            Ok(None) => break,
            Ok(Some(frame)) => frame?,
        };
        if let Ok(data) = frame.into_data() {
            bytes += data.len();
            held.push_back(data);
        }
    }
    if held.len() == 1 {
        return Ok(Peeked::Complete(held.pop_front().unwrap_or_default()));
    }
    let mut all = Vec::with_capacity(bytes);
    for b in held {
        all.extend_from_slice(&b);
    }
    Ok(Peeked::Complete(Bytes::from(all)))
}

// === impl Relayed ===

/// The body of a streamed answer: the held-back start, then the rest as the backend sends it.
pub struct Relayed {
    /// Held back by [`peek`], sent first.
    held: VecDeque<Bytes>,
    /// The rest; `None` once ended.
    rest: Option<Incoming>,
    /// Keeps the backend's in-flight count until the body is done.
    _outstanding: Outstanding,
    /// Where a failure mid-stream is reported: the marks and the backend's index.
    marks: (PassiveMarks, usize),
}

impl Relayed {
    /// A body of `held`, then `rest`.
    pub fn new(
        held: VecDeque<Bytes>,
        rest: Incoming,
        outstanding: Outstanding,
        marks: (PassiveMarks, usize),
    ) -> Self {
        Self {
            held,
            rest: Some(rest),
            _outstanding: outstanding,
            marks,
        }
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.held.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                self.rest = None;
                let (marks, index) = &self.marks;
                marks.failure(*index, format!("answer cut off: {e}"));
                tracing::warn!(error = %e, "a backend's answer was cut off mid-stream");
                Poll::Ready(Some(Err(Box::new(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self.held.iter().map(|b| b.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(held),
            Some(rest) => {
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + held);
                if let Some(upper) = r.upper() {
                    hint.set_upper(upper + held);
                }
                hint
            }
        }
    }
}
