//! A backend's answer on its way to the client: nothing is committed to the client before the
//! answer's first byte, and the first bytes are then held back briefly (so that a backend
//! failing while it works on the query, or right after it began answering, can still be
//! replaced by another); then the body streams frame by frame — memory does not grow with the
//! size of the result, and a chunked answer stays chunked.

use std::collections::VecDeque;
use std::future::Future;
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

/// Why no start of a body was read. Either way nothing reached the client.
#[derive(Debug)]
pub enum PeekError<W> {
    /// The connection failed.
    Body(hyper::Error),
    /// The backend sent no byte of its answer before `give_up` ended, with this.
    GaveUp(W),
}

/// Reads the start of `body`: all of it when it ends within [`PEEK_BYTES`] and [`PEEK_TIME`].
///
/// Until the first byte comes there is no deadline but `give_up`: InfluxDB sends its headers
/// as soon as it takes a query and its answer only once it has one, so a backend that dies or
/// stops while it works is noticed here, while another can still answer in its place.
pub async fn peek<W>(
    mut body: Incoming,
    give_up: impl Future<Output = W>,
) -> Result<Peeked, PeekError<W>> {
    let mut give_up = std::pin::pin!(give_up);
    let mut held = VecDeque::new();
    let mut bytes = 0;
    // Set by the first byte: the start is held back for `PEEK_TIME` from there.
    let mut deadline = None;
    loop {
        if bytes >= PEEK_BYTES {
            return Ok(Peeked::Partial(held, body));
        }
        let frame = match deadline {
            None => tokio::select! {
                frame = body.frame() => frame,
                why = &mut give_up => return Err(PeekError::GaveUp(why)),
            },
            Some(deadline) => match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Ok(Peeked::Partial(held, body)),
                Ok(frame) => frame,
            },
        };
        let Some(frame) = frame else {
            break;
        };
        if let Ok(data) = frame.map_err(PeekError::Body)?.into_data()
            && !data.is_empty()
        {
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + PEEK_TIME);
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
    /// Longest silence of the backend between two frames.
    idle: Duration,
    /// When the current silence ends the answer.
    silence: Pin<Box<tokio::time::Sleep>>,
    /// Whether `silence` runs: from the first time the backend had nothing, not from the
    /// last frame (the client may have taken its time to ask for the next one).
    waiting: bool,
}

impl Relayed {
    /// A body of `held`, then `rest`, cut (with an error) once the backend sends nothing for
    /// `idle`: a backend that stopped mid-answer (a stopped process still has its kernel keep
    /// the connection up) would otherwise hold the client and its count for ever.
    pub fn new(
        held: VecDeque<Bytes>,
        rest: Incoming,
        outstanding: Outstanding,
        marks: (PassiveMarks, usize),
        idle: Duration,
    ) -> Self {
        Self {
            held,
            rest: Some(rest),
            _outstanding: outstanding,
            marks,
            idle,
            silence: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }

    /// Ends the stream with `why`, reported against the backend when `failed` (a broken
    /// connection); a silence alone may be a slow query, which the health checks judge.
    fn cut(&mut self, why: String, failed: bool) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rest = None;
        if failed {
            let (marks, index) = &self.marks;
            marks.failure(*index, format!("answer cut off: {why}"));
        }
        tracing::warn!(error = %why, "a backend's answer was cut off mid-stream");
        Poll::Ready(Some(Err(why.into())))
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
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    let until = tokio::time::Instant::now() + self.idle;
                    self.silence.as_mut().reset(until);
                }
                if self.silence.as_mut().poll(cx).is_ready() {
                    let idle = self.idle;
                    return self.cut(format!("nothing received for {idle:?}"), false);
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                self.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => self.cut(e.to_string(), true),
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// One frame of `PEEK_BYTES` and more, then nothing ever again.
    struct StopsMidway(Option<Bytes>);

    impl Body for StopsMidway {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.0.take() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Pending,
            }
        }
    }

    /// An answer from a server that sends its start and then stops sending.
    async fn answer_that_stops() -> Incoming {
        answer_of(Some(Bytes::from(vec![b'x'; PEEK_BYTES + 1]))).await
    }

    /// An answer from a server that sends its headers, then `start` (if any), then nothing.
    async fn answer_of(start: Option<Bytes>) -> Incoming {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let svc = hyper::service::service_fn(move |_req| {
                let start = start.clone();
                async move { Ok::<_, Infallible>(hyper::Response::new(StopsMidway(start))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let req = hyper::Request::new(http_body_util::Empty::<Bytes>::new());
        send.send_request(req).await.expect("head").into_body()
    }

    #[tokio::test]
    async fn an_answer_that_stops_midway_is_cut_after_the_idle_time() {
        let body = answer_that_stops().await;
        let Ok(Peeked::Partial(held, rest)) = peek(body, std::future::pending::<()>()).await else {
            panic!("the start is held back, the rest streams");
        };
        let count = Arc::new(AtomicUsize::new(0));
        let relayed = Relayed::new(
            held,
            rest,
            Outstanding::new(&count),
            (PassiveMarks::new(1), 0),
            Duration::from_millis(300),
        );
        let collected = tokio::time::timeout(Duration::from_secs(60), relayed.collect())
            .await
            .expect("the stream ends");
        let err = collected.expect_err("ended with an error");
        assert!(err.to_string().contains("nothing received"), "{err}");
        // The backend's count was given back with the body.
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_answer_not_begun_is_awaited_past_the_peek_time_until_given_up() {
        // Headers at once, then nothing: InfluxDB still working on the query, or stopped.
        let body = answer_of(None).await;
        let give_up = async {
            tokio::time::sleep(PEEK_TIME * 3).await;
            "marked down".to_owned()
        };
        match peek(body, give_up).await {
            Err(PeekError::GaveUp(why)) => assert_eq!(why, "marked down"),
            Err(PeekError::Body(e)) => panic!("{e}"),
            Ok(_) => panic!("an answer without a byte was committed to the client"),
        }
        // Once its first byte came, the rest streams after the peek time.
        let body = answer_of(Some(Bytes::from_static(b"{"))).await;
        let Ok(Peeked::Partial(held, _rest)) = peek(body, std::future::pending::<()>()).await
        else {
            panic!("held back, then streamed");
        };
        assert_eq!(held, [Bytes::from_static(b"{")]);
    }
}
