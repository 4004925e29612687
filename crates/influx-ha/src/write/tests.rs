use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::Replicator;
use super::answer::Outcome;
use super::replica::{Batch, Replica};
use crate::config::Config;
use crate::params::Consistency;

/// Two unreachable backends (nothing listens on port 1) with queues of 1 KiB.
fn tiny_queues(dir: &std::path::Path) -> Replicator {
    let text = format!(
        "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[queue]\nmax_bytes = \"1KiB\"\nsegment_bytes = \"1KiB\"\n[[backend]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:1\"\n[[backend]]\nname = \"beta\"\nurl = \"http://127.0.0.2:1\"\n",
        dir.display().to_string()
    );
    let config = Config::from_toml(&text, "test").expect("valid config");
    let clients = crate::node::backend_clients(&config).expect("clients");
    Replicator::open(&config, &clients).expect("queues open")
}

#[tokio::test]
async fn a_refused_append_marks_the_backend_diverged_and_does_not_leave_it_queueing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replicator = tiny_queues(dir.path());
    // Larger than a queue record may be: refused by both queues.
    let line = format!("m v=\"{}\" 1\n", "x".repeat(2000));
    let _ = replicator
        .replicate("db".into(), None, "", Consistency::Any, Bytes::from(line))
        .await;
    for r in replicator.replicas().iter() {
        let why = r.diverged().expect("diverged");
        assert!(why.contains("queue refused a record"), "{why}");
        assert!(dir.path().join(r.name()).join("diverged").exists());
        // Nothing is queued, so nothing holds later writes back (and keeps reads away).
        assert!(!r.queue().has_pending());
        assert!(!r.is_queueing(), "{} stays in queueing mode", r.name());
    }
}

#[tokio::test]
async fn a_write_after_the_queues_closed_is_refused_and_marks_nothing() {
    async fn write(replicator: &Replicator) -> Result<(), crate::http::error::RequestError> {
        replicator
            .replicate(
                "db".into(),
                None,
                "",
                Consistency::Any,
                Bytes::from("m v=1 1\n"),
            )
            .await
    }
    let refused = |result: Result<(), crate::http::error::RequestError>| match result {
        Err(crate::http::error::RequestError::Unavailable(why)) => {
            assert!(why.contains("shutting down"), "{why}");
        }
        other => panic!("{other:?}"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let replicator = tiny_queues(dir.path());
    replicator.close();
    refused(write(&replicator).await);
    for r in replicator.replicas().iter() {
        assert_eq!(r.diverged(), None, "{}", r.name());
    }
    // Once shutdown waits for the fan-outs before closing, a new one is refused already.
    let dir = tempfile::tempdir().expect("tempdir");
    let replicator = tiny_queues(dir.path());
    assert_eq!(replicator.wait_for_deliveries(Duration::ZERO).await, 0);
    refused(write(&replicator).await);
    assert!(!replicator.replicas()[0].queue().has_pending());
}

/// A direct write's deadline no test outlives: the slow backend's stalled sends stay in
/// flight until the test releases them, however loaded the machine.
const LONG_DEADLINE: &str = "[write]\nbackend_timeout = \"1h\"\n";

/// A fast fake backend and a slow one (stalling its writes until told), replicated to.
async fn fast_and_slow(dir: &std::path::Path) -> (Replicator, Arc<FakeBackend>) {
    fast_and_slow_with(dir, "").await
}

/// [`fast_and_slow`] with `extra` config.
async fn fast_and_slow_with(dir: &std::path::Path, extra: &str) -> (Replicator, Arc<FakeBackend>) {
    let fast = serve(Arc::new(FakeBackend::default())).await;
    let slow = Arc::new(FakeBackend::default());
    slow.stall.store(true, Ordering::SeqCst);
    let text = format!(
        "data_dir = {:?}\n{extra}[http]\nbind = \"127.0.0.1:0\"\n{LONG_DEADLINE}[[backend]]\nname = \"fast\"\nurl = \"http://{fast}\"\n[[backend]]\nname = \"slow\"\nurl = \"http://{}\"\n",
        dir.display().to_string(),
        serve(slow.clone()).await,
    );
    let config = Config::from_toml(&text, "test").expect("valid config");
    let clients = crate::node::backend_clients(&config).expect("clients");
    (
        Replicator::open(&config, &clients).expect("queues open"),
        slow,
    )
}

/// Replicates `body` at level `one`, which the fast backend of [`fast_and_slow`] meets.
async fn fast_takes(replicator: &Replicator, body: &'static [u8]) {
    replicator
        .replicate(
            "db".into(),
            None,
            "",
            Consistency::One,
            Bytes::from_static(body),
        )
        .await
        .expect("the fast backend takes it");
}

/// Two fake backends, `up` and `down` by name, replicated to.
async fn two_fakes(
    dir: &std::path::Path,
    up: Arc<FakeBackend>,
    down: Arc<FakeBackend>,
) -> Replicator {
    let text = format!(
        "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[[backend]]\nname = \"up\"\nurl = \"http://{}\"\n[[backend]]\nname = \"down\"\nurl = \"http://{}\"\n",
        dir.display().to_string(),
        serve(up).await,
        serve(down).await,
    );
    let config = Config::from_toml(&text, "test").expect("valid config");
    let clients = crate::node::backend_clients(&config).expect("clients");
    Replicator::open(&config, &clients).expect("queues open")
}

/// [`two_fakes`]: `up` refuses every write (400), `down` fails every one (500).
async fn refusing_and_down(dir: &std::path::Path) -> (Arc<Replicator>, Arc<FakeBackend>) {
    let (up, down) = (
        Arc::new(FakeBackend::default()),
        Arc::new(FakeBackend::default()),
    );
    down.fail_all.store(true, Ordering::SeqCst);
    up.refuse_writes.store(true, Ordering::SeqCst);
    (Arc::new(two_fakes(dir, up.clone(), down).await), up)
}

fn is_refusal(result: &Result<(), crate::http::error::RequestError>) -> bool {
    matches!(
        result,
        Err(crate::http::error::RequestError::Backend { status, .. }) if *status == http::StatusCode::BAD_REQUEST
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_every_answering_backend_refused_is_queued_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (replicator, up) = refusing_and_down(dir.path()).await;
    let replicas = replicator.replicas();
    let write = |v: u32| {
        let r = replicator.clone();
        async move {
            let body = Bytes::from(format!("m v={v} 1\n"));
            r.replicate("db".into(), None, "", Consistency::One, body)
                .await
        }
    };

    // The down backend's send fails (worth retrying), the other refuses, after a while.
    up.stall.store(true, Ordering::SeqCst);
    let first = tokio::spawn(write(1));
    // Waiting for the answer, the down backend holds a place in its queue: later writes line
    // up behind it, and its replay cannot leave queueing mode meanwhile.
    wait_until("the down backend waits to queue", || {
        replicas[1].is_queueing()
    })
    .await;
    replicas[1].leave_queueing_if_drained();
    assert!(
        replicas[1].is_queueing(),
        "left queueing mode with a write to queue"
    );
    up.stall.store(false, Ordering::SeqCst);
    assert!(is_refusal(&first.await.expect("write task")));
    assert!(!replicas[1].queue().has_pending(), "queued a refused write");
    assert!(
        !replicas[1].is_queueing(),
        "the withheld write keeps it queueing"
    );

    // Behind its queue already, it is not given the refused write either.
    up.refuse_writes.store(false, Ordering::SeqCst);
    write(2).await.expect("the up backend stores it");
    assert!(replicas[1].is_queueing());
    up.refuse_writes.store(true, Ordering::SeqCst);
    assert!(is_refusal(&write(3).await));
    assert_eq!(replicas[1].queue().stats().depth_records, 1);
    assert!(replicas[1].diverged().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_any_a_refusal_after_the_queue_took_the_write_marks_that_backend_diverged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (replicator, up) = refusing_and_down(dir.path()).await;
    up.stall.store(true, Ordering::SeqCst);
    let replicas = replicator.replicas();
    let r = replicator.clone();
    let write = tokio::spawn(async move {
        r.replicate(
            "db".into(),
            None,
            "",
            Consistency::Any,
            Bytes::from_static(b"m v=1 1\n"),
        )
        .await
    });
    // The refusal is held back past the wait: the down backend queues the write meanwhile.
    wait_until("the write is queued", || replicas[1].queue().has_pending()).await;
    up.stall.store(false, Ordering::SeqCst);
    assert!(is_refusal(&write.await.expect("write task")));
    let why = replicas[1].diverged().expect("marked diverged");
    assert!(why.contains("refused"), "{why}");
    assert!(replicas[0].diverged().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insured_backend_goes_behind_its_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (replicator, slow_fake) = fast_and_slow(dir.path()).await;
    let replicas = replicator.replicas();
    let slow = &replicas[1];
    for i in 0..3 {
        let body = Bytes::from(format!("m v={i} {i}\n"));
        replicator
            .replicate("db".into(), None, "", Consistency::One, body)
            .await
            .expect("the fast backend takes it");
        // Only the first write was sent to it; the others went straight to the queue.
        assert!(slow.is_queueing(), "write {i}: still sending directly");
        assert_eq!(
            slow.counters.insured.load(Ordering::Relaxed),
            1,
            "write {i}"
        );
        assert_eq!(slow.late_sends(), 1, "write {i}");
    }
    assert_eq!(slow.queue().stats().depth_records, 3);
    assert!(!replicas[0].is_queueing());
    slow_fake.stall.store(false, Ordering::SeqCst);
    wait_until("the late send ends", || slow.late_sends() == 0).await;
    assert_eq!(slow_fake.writes.lock().expect("not poisoned").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_insured_append_keeps_writes_behind_the_send_still_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Every append is refused: the disk is below the floor kept free.
    let (replicator, slow_fake) =
        fast_and_slow_with(dir.path(), "[queue]\nmin_free_disk = \"1000TiB\"\n").await;
    let replicas = replicator.replicas();
    let slow = &replicas[1];
    fast_takes(&replicator, b"m v=1 1\n").await;
    // The slow backend's copy was insured and its record refused; its send still runs.
    assert_eq!(slow.late_sends(), 1);
    assert!(!slow.queue().has_pending());
    assert!(slow.diverged().is_some(), "the refused record is told");
    // A write now must not reach it directly ahead of that send, which may still land.
    assert!(
        slow.is_queueing(),
        "left queueing mode with a send in flight"
    );
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let replay = tokio::spawn(
        slow.clone()
            .replay(crate::shutdown::Shutdown::new(stop.subscribe())),
    );
    // The rewrite goes to its queue (which refuses it), not to it ahead of the first send.
    fast_takes(&replicator, b"m v=2 1\n").await;
    // Once that send is over, the replay finds nothing queued and writes go direct again.
    slow_fake.stall.store(false, Ordering::SeqCst);
    wait_until("the send ends and writes go direct again", || {
        slow.late_sends() == 0 && !slow.is_queueing()
    })
    .await;
    let writes = slow_fake.writes.lock().expect("not poisoned").clone();
    assert_eq!(writes, [Bytes::from_static(b"m v=1 1\n")]);
    let _ = stop.send(());
    replay.await.expect("replay ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_after_an_insured_write_is_not_overtaken_by_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (replicator, slow_fake) = fast_and_slow(dir.path()).await;
    let replicas = replicator.replicas();
    let slow = &replicas[1];
    // A client writes a point, is answered while the slow backend still has it in flight,
    // then writes the same point with another value.
    for v in [1, 2] {
        let body = Bytes::from(format!("m v={v} 1\n"));
        replicator
            .replicate("db".into(), None, "", Consistency::One, body)
            .await
            .expect("the fast backend takes it");
    }
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let replay = tokio::spawn(
        slow.clone()
            .replay(crate::shutdown::Shutdown::new(stop.subscribe())),
    );
    // The replay has read the queue and waits for the first write's own send, or it has sent
    // the queue while that send is still stalled at the backend.
    wait_until("the replay waits or sends", || {
        slow.late_send_waiters() > 0 || slow_fake.writes.lock().expect("not poisoned").len() > 1
    })
    .await;
    assert_eq!(
        slow_fake.writes.lock().expect("not poisoned").len(),
        1,
        "the replay sent while the insured write was still in flight"
    );
    slow_fake.stall.store(false, Ordering::SeqCst);
    wait_until("the queue is drained", || {
        !slow.queue().has_pending() && !slow.is_queueing()
    })
    .await;
    let _ = stop.send(());
    replay.await.expect("replay ends");
    let writes = slow_fake.writes.lock().expect("not poisoned").clone();
    // The insured write's own send got there first: the replay skipped its copy and sent only
    // the rewrite.
    assert_eq!(
        writes,
        [
            Bytes::from_static(b"m v=1 1\n"),
            Bytes::from_static(b"m v=2 1\n")
        ]
    );
    assert_eq!(slow.counters.insured_skipped.load(Ordering::Relaxed), 1);
}

/// A write both backends take in part, the slow one after the client was answered: its
/// copy is replayed (and dead-lettered, marking it diverged) only when the slow backend
/// dropped more points than the fast one.
/// Returns the slow backend's replica, with the directory of its queues.
async fn slow_partial_write(
    fast_dropped: usize,
    slow_dropped: usize,
) -> (tempfile::TempDir, Arc<Replica>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fast = Arc::new(FakeBackend::default());
    fast.partial_dropped.store(fast_dropped, Ordering::SeqCst);
    let slow_fake = Arc::new(FakeBackend::default());
    slow_fake.stall.store(true, Ordering::SeqCst);
    slow_fake
        .partial_dropped
        .store(slow_dropped, Ordering::SeqCst);
    let text = format!(
        "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n{LONG_DEADLINE}[[backend]]\nname = \"fast\"\nurl = \"http://{}\"\n[[backend]]\nname = \"slow\"\nurl = \"http://{}\"\n",
        dir.path().display().to_string(),
        serve(fast).await,
        serve(slow_fake.clone()).await,
    );
    let config = Config::from_toml(&text, "test").expect("valid config");
    let clients = crate::node::backend_clients(&config).expect("clients");
    let replicator = Replicator::open(&config, &clients).expect("queues open");
    let slow = replicator.replicas()[1].clone();
    let body = Bytes::from_static(b"m v=1 1\nm v=2 2\nm v=3 3\n");
    let answer = replicator
        .replicate("db".into(), None, "", Consistency::One, body)
        .await;
    assert!(
        matches!(
            answer,
            Err(crate::http::error::RequestError::PartialWrite(_))
        ),
        "{answer:?}"
    );
    assert_eq!(slow.counters.insured.load(Ordering::Relaxed), 1);
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let replay = tokio::spawn(
        slow.clone()
            .replay(crate::shutdown::Shutdown::new(stop.subscribe())),
    );
    slow_fake.stall.store(false, Ordering::SeqCst);
    wait_until("the queue is drained", || {
        !slow.queue().has_pending() && !slow.is_queueing()
    })
    .await;
    let _ = stop.send(());
    replay.await.expect("replay ends");
    (dir, slow)
}

#[tokio::test]
async fn a_slow_backends_own_partial_write_like_the_others_is_not_replayed() {
    let (_dir, slow) = slow_partial_write(1, 1).await;
    assert_eq!(slow.counters.insured_skipped.load(Ordering::Relaxed), 1);
    assert_eq!(slow.dead_letters().stats().depth_records, 0);
    assert_eq!(slow.diverged(), None);
}

#[tokio::test]
async fn a_slow_backend_that_dropped_another_count_is_replayed_and_marked() {
    // More than the fast one, or fewer (the fast one then lacks points: the mark at least
    // makes the difference visible).
    for (fast, slow) in [(1, 2), (2, 1)] {
        let (_dir, slow) = slow_partial_write(fast, slow).await;
        assert_eq!(slow.counters.insured_skipped.load(Ordering::Relaxed), 0);
        assert_eq!(slow.dead_letters().stats().depth_records, 1);
        assert!(slow.diverged().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_first_insured_record_is_skipped_once_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (replicator, slow_fake) = fast_and_slow(dir.path()).await;
    let replicator = Arc::new(replicator);
    let slow = replicator.replicas()[1].clone();
    // Two writes in flight to the slow backend at once, both insured: only the one appended
    // first may be skipped, the other lies behind it and must come again after it.
    let writes: Vec<_> = [1, 2]
        .map(|v| {
            let r = replicator.clone();
            tokio::spawn(async move {
                let body = Bytes::from(format!("m,w={v} v={v} 1\n"));
                r.replicate("db".into(), None, "", Consistency::One, body)
                    .await
            })
        })
        .into_iter()
        .collect();
    for w in writes {
        w.await.expect("task").expect("the fast backend takes it");
    }
    assert_eq!(slow.counters.insured.load(Ordering::Relaxed), 2);
    slow_fake.stall.store(false, Ordering::SeqCst);
    wait_until("the late sends end", || slow.late_sends() == 0).await;
    replay_until_drained(&slow).await;
    let got = slow_fake.writes.lock().expect("not poisoned").clone();
    assert_eq!(got.len(), 3, "{got:?}");
    // The replayed one is the second append: after both direct sends, a duplicate of one.
    assert!(got[..2].contains(&got[2]), "{got:?}");
    assert_eq!(slow.counters.insured_skipped.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insured_record_whose_send_failed_is_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (replicator, slow_fake) = fast_and_slow(dir.path()).await;
    let slow = replicator.replicas()[1].clone();
    slow_fake.fail_b_once.store(true, Ordering::SeqCst);
    fast_takes(&replicator, b"b,t=1 v=1 1\n").await;
    slow_fake.stall.store(false, Ordering::SeqCst);
    wait_until("the late send ends", || slow.late_sends() == 0).await;
    replay_until_drained(&slow).await;
    let got = slow_fake.writes.lock().expect("not poisoned").clone();
    // Refused with a 500 the first time, so delivered by the replay.
    let line = Bytes::from_static(b"b,t=1 v=1 1\n");
    assert_eq!(got, [line.clone(), line]);
    assert_eq!(slow.counters.insured_skipped.load(Ordering::Relaxed), 0);
}

/// What the fake backend of the replay tests saw and how it answers.
#[derive(Default)]
struct FakeBackend {
    /// `/write` bodies in the order they arrived.
    writes: std::sync::Mutex<Vec<Bytes>>,
    /// `/query` bodies in the order they arrived.
    queries: std::sync::Mutex<Vec<Bytes>>,
    /// Requests in progress, and the most seen at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Hold each write while set.
    stall: AtomicBool,
    /// Hold each write until another one is in progress too (or a generous deadline), so that
    /// concurrent sends are seen as such; off once two were seen together.
    hold_for_a_pair: AtomicBool,
    /// Answer 500 to the first write holding a line of measurement `b`.
    fail_b_once: AtomicBool,
    /// Writes whose batch tag (`batch=N`) arrived before both lanes of every earlier batch
    /// had been answered with success.
    overtaken: AtomicUsize,
    /// Answered writes per batch tag.
    answered: std::sync::Mutex<std::collections::HashMap<u64, usize>>,
    /// Answer this many of the next `/query` requests 401.
    refuse_queries: AtomicUsize,
    /// Answer this many of the next `/query` requests 429, as a busy proxy does.
    busy_queries: AtomicUsize,
    /// Answer every write 500.
    fail_all: AtomicBool,
    /// Hold each `/query` while set.
    stall_queries: AtomicBool,
    /// Answer every write 400, as a body InfluxDB cannot parse.
    refuse_writes: AtomicBool,
    /// Answer 413 to writes longer than this (0: never).
    too_large_over: AtomicUsize,
    /// Answer 400 to writes holding this line start.
    refuse_holding: std::sync::Mutex<Option<Vec<u8>>>,
    /// Answer 500 to this many of the next writes not refused otherwise.
    fail_next: AtomicUsize,
    /// Answer `/query` 200 with this body (204 without one).
    query_answer: std::sync::Mutex<Option<Bytes>>,
    /// Answer writes that would succeed with a partial write dropping this many points (0:
    /// never), as InfluxDB does for a field type conflict.
    partial_dropped: AtomicUsize,
}

/// The `batch=N` tag of the first line of a body (0 without one).
fn batch_tag(body: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(body);
    text.split_once("batch=")
        .and_then(|(_, rest)| rest.split([' ', ',']).next()?.parse().ok())
        .unwrap_or(0)
}

impl FakeBackend {
    async fn write(&self, body: Bytes) -> http::Response<http_body_util::Full<Bytes>> {
        let over = self.too_large_over.load(Ordering::SeqCst);
        let refused = self
            .refuse_holding
            .lock()
            .expect("not poisoned")
            .as_ref()
            .is_some_and(|m| body.windows(m.len()).any(|w| w == m.as_slice()));
        let early = if over > 0 && body.len() > over {
            Some(http::StatusCode::PAYLOAD_TOO_LARGE)
        } else if refused {
            Some(http::StatusCode::BAD_REQUEST)
        } else if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            Some(http::StatusCode::INTERNAL_SERVER_ERROR)
        } else {
            None
        };
        if let Some(status) = early {
            self.writes.lock().expect("not poisoned").push(body);
            let mut resp = http::Response::new(http_body_util::Full::new(Bytes::from_static(
                b"{\"error\":\"unable to parse 'x': bad timestamp\"}",
            )));
            *resp.status_mut() = status;
            return resp;
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let batch = batch_tag(&body);
        {
            // Every earlier batch (two lanes each) must have been answered completely.
            let answered = self.answered.lock().expect("not poisoned");
            if (1..batch).any(|b| answered.get(&b).copied().unwrap_or(0) < 2) {
                self.overtaken.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.writes.lock().expect("not poisoned").push(body.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.stall.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if self.hold_for_a_pair.load(Ordering::SeqCst) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while self.in_flight.load(Ordering::SeqCst) < 2
                && self.hold_for_a_pair.load(Ordering::SeqCst)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            self.hold_for_a_pair.store(false, Ordering::SeqCst);
        }
        let has_b = lineproto::lines(&body).any(|l| l.starts_with(b"b,"));
        let fail = has_b && self.fail_b_once.swap(false, Ordering::SeqCst);
        *self
            .answered
            .lock()
            .expect("not poisoned")
            .entry(batch)
            .or_default() += usize::from(!fail);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.refuse_writes.load(Ordering::SeqCst) {
            let mut resp = http::Response::new(http_body_util::Full::new(Bytes::from_static(
                b"{\"error\":\"unable to parse 'x': bad timestamp\"}",
            )));
            *resp.status_mut() = http::StatusCode::BAD_REQUEST;
            return resp;
        }
        let dropped = self.partial_dropped.load(Ordering::SeqCst);
        if dropped > 0 {
            let mut resp = http::Response::new(http_body_util::Full::new(Bytes::from(format!(
                "{{\"error\":\"partial write: field type conflict: input field \\\"v\\\" on measurement \\\"m\\\" is type float, already exists as type integer dropped={dropped}\"}}"
            ))));
            *resp.status_mut() = http::StatusCode::BAD_REQUEST;
            return resp;
        }
        let mut resp = http::Response::new(http_body_util::Full::new(if fail {
            Bytes::from_static(b"{\"error\":\"timeout\"}")
        } else {
            Bytes::new()
        }));
        *resp.status_mut() = if fail || self.fail_all.load(Ordering::SeqCst) {
            http::StatusCode::INTERNAL_SERVER_ERROR
        } else {
            http::StatusCode::NO_CONTENT
        };
        resp
    }
}

/// Serves `fake` on a free loopback port: `/write` as above, anything else 204.
async fn serve(fake: Arc<FakeBackend>) -> std::net::SocketAddr {
    use http_body_util::BodyExt;
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let fake = fake.clone();
        async move {
            let is_write = req.uri().path() == "/write";
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let resp = if is_write {
                fake.write(body).await
            } else {
                fake.queries.lock().expect("not poisoned").push(body);
                while fake.stall_queries.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let answer = fake.query_answer.lock().expect("not poisoned").clone();
                let mut r = http::Response::new(http_body_util::Full::new(
                    answer.clone().unwrap_or_default(),
                ));
                let refuse = fake
                    .refuse_queries
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let busy = fake
                    .busy_queries
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                *r.status_mut() = if refuse {
                    http::StatusCode::UNAUTHORIZED
                } else if busy {
                    http::StatusCode::TOO_MANY_REQUESTS
                } else if answer.is_some() {
                    http::StatusCode::OK
                } else {
                    http::StatusCode::NO_CONTENT
                };
                r
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    crate::test_http::serve(svc).await
}

/// One backend at `addr` with its queue under `dir`, not replaying yet.
fn one_backend(dir: &std::path::Path, addr: std::net::SocketAddr) -> Arc<Replica> {
    one_backend_with(dir, addr, "")
}

/// [`one_backend`] with more config (`[queue]` keys, say).
fn one_backend_with(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    extra: &str,
) -> Arc<Replica> {
    let text = format!(
        "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n{extra}\n[[backend]]\nname = \"alpha\"\nurl = \"http://{addr}\"\n",
        dir.display().to_string()
    );
    let config = Config::from_toml(&text, "test").expect("valid config");
    let clients = crate::node::backend_clients(&config).expect("clients");
    super::open_replica(&config, &clients[0], &clients).expect("queue opens")
}

/// A write to `db` of `lines` lines for each of measurements `a` and `b`, tagged `batch`,
/// interleaved, large enough to be split into lanes.
fn two_measurements(db: &str, batch: u64, lines: usize) -> Batch {
    let mut payload = Vec::new();
    for i in 0..lines {
        for m in ["a", "b"] {
            payload.extend_from_slice(
                format!("{m},batch={batch},host=h{i} v={i}i,s=\"padding padding padding\" {i}\n")
                    .as_bytes(),
            );
        }
    }
    assert!(payload.len() > super::lanes::MIN_SPLIT_BYTES);
    Batch {
        db: db.to_owned(),
        rp: String::new(),
        precision: "n",
        payload: Bytes::from(payload),
    }
}

/// Queues `count` batches from [`two_measurements`], each to a database of its own (`db1`, …) so
/// that the queue does not merge them, and returns them in queue order.
async fn queue_separate_batches(replica: &Replica, count: u64) -> Vec<Batch> {
    let batches: Vec<Batch> = (1..=count)
        .map(|n| two_measurements(&format!("db{n}"), n, 800))
        .collect();
    for b in &batches {
        assert!(matches!(replica.enqueue(b).await, Outcome::Queued));
    }
    batches
}

/// Polls `done` every 10 ms for up to 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replay_lane_sends_each_batch_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    replica.set_replay_lanes(1);
    let batches = queue_separate_batches(&replica, 3).await;
    replay_until_drained(&replica).await;
    let writes = fake.writes.lock().expect("not poisoned").clone();
    assert_eq!(writes.len(), 3, "one request per batch");
    for (w, b) in writes.iter().zip(&batches) {
        assert_eq!(w, &b.payload, "the batch as queued");
    }
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_statement_is_replayed_with_its_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    let params = "params=%7B%22h%22%3A%22a%22%7D&rp=short";
    let queued = replica
        .enqueue_statement("x", "DELETE FROM m WHERE host = $h", params)
        .await;
    assert!(matches!(queued, Outcome::Queued), "{queued:?}");
    replay_until_drained(&replica).await;
    let queries = fake.queries.lock().expect("not poisoned").clone();
    assert_eq!(
        queries,
        [Bytes::from(format!(
            "q=DELETE%20FROM%20m%20WHERE%20host%20%3D%20%24h&db=x&{params}"
        ))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_statement_stops_waiting_once_its_backend_is_marked_down() {
    // The backend takes the statement and never answers (stopped, say) until the health
    // checks find it down: the replay gives up on the answer and sends it again. Run twice,
    // creating a database leaves nothing different; a DROP may.
    for (statement, diverges) in [("CREATE DATABASE x", false), ("DROP MEASUREMENT m", true)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeBackend::default());
        fake.stall_queries.store(true, Ordering::SeqCst);
        let replica = one_backend(dir.path(), serve(fake.clone()).await);
        let queued = replica.enqueue_statement("x", statement, "").await;
        assert!(matches!(queued, Outcome::Queued), "{queued:?}");
        let (stop, _) = tokio::sync::broadcast::channel(1);
        let replay = tokio::spawn(
            replica
                .clone()
                .replay(crate::shutdown::Shutdown::new(stop.subscribe())),
        );
        let sent = |n: usize| fake.queries.lock().expect("not poisoned").len() >= n;
        wait_until("the statement is sent", || sent(1)).await;
        replica.set_down(true);
        let errors = || replica.counters.replay_errors.load(Ordering::Relaxed);
        wait_until("the wait for its answer is given up", || errors() > 0).await;
        // While the backend is down, it is not sent again, and waiting counts no error (the
        // health checks would hold it against the backend).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fake.queries.lock().expect("not poisoned").len(), 1);
        assert_eq!(errors(), 1);
        // Once it is up, it is.
        replica.set_down(false);
        replica.kick();
        wait_until("it is sent again", || sent(2)).await;
        assert_eq!(replica.diverged().is_some(), diverges, "{statement}");
        if diverges {
            let why = replica.diverged().unwrap_or_default();
            assert!(why.contains("may have run"), "{why}");
        }
        fake.stall_queries.store(false, Ordering::SeqCst);
        wait_until("drained", || !replica.queue().has_pending()).await;
        let _ = stop.send(());
        replay.await.expect("replay ends");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_statement_refused_as_everywhere_it_ran_leaves_its_backend_in_sync() {
    let answer = |error: &str| format!(r#"{{"results":[{{"statement_id":0,"error":"{error}"}}]}}"#);
    let failed_elsewhere = |error: &str| {
        crate::write::replica::Refusal::of(http::StatusCode::OK, answer(error).as_bytes())
    };
    let statement = "DROP RETENTION POLICY short ON x";
    for (elsewhere, diverges) in [
        // The other backends failed it the same way: this one is like them.
        (failed_elsewhere("retention policy not found: short"), false),
        // Otherwise, or when nothing is known of them (they ran it, or it queued everywhere,
        // or this relay restarted since), it differs.
        (failed_elsewhere("database not found: x"), true),
        (None, true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeBackend::default());
        *fake.query_answer.lock().expect("not poisoned") =
            Some(Bytes::from(answer("retention policy not found: short")));
        let replica = one_backend(dir.path(), serve(fake.clone()).await);
        let (queued, at) = replica.enqueue_statement_at("x", statement, "").await;
        assert!(matches!(queued, Outcome::Queued), "{queued:?}");
        if let Some(refusal) = elsewhere.clone() {
            replica.note_refused_elsewhere(at.expect("queued at"), refusal);
        }
        replay_until_drained(&replica).await;
        assert_eq!(fake.queries.lock().expect("not poisoned").len(), 1);
        assert_eq!(replica.diverged().is_some(), diverges, "{elsewhere:?}");
        if diverges {
            let why = replica.diverged().unwrap_or_default();
            assert!(why.contains("retention policy not found"), "{why}");
        }
    }

    // What is noted for one queued statement is not taken for another.
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    *fake.query_answer.lock().expect("not poisoned") =
        Some(Bytes::from(answer("retention policy not found: short")));
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    let (_, _) = replica.enqueue_statement_at("x", statement, "").await;
    let (_, second) = replica
        .enqueue_statement_at("x", "DROP RETENTION POLICY short ON x; ", "")
        .await;
    let refusal = failed_elsewhere("retention policy not found: short").expect("a refusal");
    replica.note_refused_elsewhere(second.expect("queued at"), refusal);
    replay_until_drained(&replica).await;
    let why = replica.diverged().unwrap_or_default();
    assert!(
        why.ends_with(&format!("{statement}: retention policy not found: short")),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_statement_refused_for_credentials_waits_instead_of_being_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    fake.refuse_queries.store(2, Ordering::SeqCst);
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    let queued = replica
        .enqueue_statement("x", "CREATE DATABASE x", "")
        .await;
    assert!(matches!(queued, Outcome::Queued), "{queued:?}");
    replay_until_drained(&replica).await;
    // Refused twice (401), then run: sent three times, and nothing was dropped.
    assert_eq!(fake.queries.lock().expect("not poisoned").len(), 3);
    assert_eq!(replica.diverged(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_statement_a_busy_proxy_turns_away_is_sent_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    fake.busy_queries.store(2, Ordering::SeqCst);
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    let queued = replica
        .enqueue_statement("x", "DROP MEASUREMENT m", "")
        .await;
    assert!(matches!(queued, Outcome::Queued), "{queued:?}");
    replay_until_drained(&replica).await;
    // Turned away twice (429), then run: not dropped, and nothing differs.
    assert_eq!(fake.queries.lock().expect("not poisoned").len(), 3);
    assert_eq!(replica.diverged(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_expire_while_the_backend_keeps_failing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    fake.fail_all.store(true, Ordering::SeqCst);
    let replica = one_backend_with(
        dir.path(),
        serve(fake.clone()).await,
        "[queue]\nmax_age = \"1s\"\n",
    );
    let batch = two_measurements("db", 1, 800);
    assert!(matches!(replica.enqueue(&batch).await, Outcome::Queued));
    // The replay retries the batch; past max_age it is dropped although it is being retried.
    replay_until_drained(&replica).await;
    assert!(!fake.writes.lock().expect("not poisoned").is_empty());
    let why = replica.diverged().unwrap_or_default();
    assert!(why.contains("dropped records"), "{why}");
    assert_eq!(replica.queue().stats().expired_records, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_larger_than_a_record_is_kept_whole_in_the_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    fake.refuse_writes.store(true, Ordering::SeqCst);
    // 16 KiB segments: the replay merges queued records into batches larger than one record.
    let replica = one_backend_with(
        dir.path(),
        serve(fake.clone()).await,
        "[queue]\nsegment_bytes = \"16KiB\"\n",
    );
    replica.set_replay_lanes(1);
    let batch = two_measurements("db", 1, 800);
    assert!(batch.payload.len() > 3 * 16 * 1024);
    assert!(matches!(replica.enqueue(&batch).await, Outcome::Queued));
    replay_until_drained(&replica).await;
    let why = replica.diverged().unwrap_or_default();
    assert!(
        why.starts_with("dead letters: the backend refused a batch"),
        "{why}"
    );
    // Every refused line is in the dead letters, in order.
    let mut kept = Vec::new();
    while let Some(b) = replica.dead_letters().next_batch(1 << 20).expect("read") {
        if let handoff::BatchKind::Write { payload, .. } = &b.kind {
            kept.extend_from_slice(payload);
        }
        replica.dead_letters().ack(&b).expect("ack");
    }
    assert_eq!(kept, batch.payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_split_only_the_undelivered_half_is_sent_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    replica.set_replay_lanes(1);
    let batch = two_measurements("db", 1, 800);
    // The whole batch is too large; its first half is refused (dead-lettered), its second
    // half fails once: the retry sends the second half alone.
    fake.too_large_over
        .store(batch.payload.len() * 2 / 3, Ordering::SeqCst);
    *fake.refuse_holding.lock().expect("not poisoned") = Some(b"a,batch=1,host=h0 ".to_vec());
    fake.fail_next.store(1, Ordering::SeqCst);
    assert!(matches!(replica.enqueue(&batch).await, Outcome::Queued));
    replay_until_drained(&replica).await;
    let writes = fake.writes.lock().expect("not poisoned").clone();
    assert_eq!(
        writes.len(),
        4,
        "whole (413), first half (400), second half (500, then 204)"
    );
    assert_eq!(writes[2], writes[3]);
    assert_eq!(
        [writes[1].clone(), writes[3].clone()].concat(),
        batch.payload.to_vec()
    );
    assert_eq!(
        replica.dead_letters().stats().depth_records,
        1,
        "dead-lettered once"
    );
}

#[tokio::test]
async fn a_flag_is_cleared_only_when_nothing_was_dropped_since_the_marks_were_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    replica.mark_diverged("queue full");
    assert!(dir.path().join("alpha").join("diverged").exists());
    let before_verify = replica.divergence_marks();
    // Data dropped again while the verify runs: its marks no longer match, whatever the time.
    replica.mark_diverged("queue full");
    let err = replica
        .clear_diverged_since(&before_verify)
        .expect_err("dropped since");
    assert!(err.contains("after the verify began"), "{err}");
    assert!(replica.diverged().is_some());
    let now = replica.divergence_marks();
    assert_ne!(now, before_verify);
    assert_eq!(
        replica.clear_diverged_since(&now).expect("cleared"),
        Some("queue full".to_owned())
    );
    assert!(replica.diverged().is_none());
    assert!(!dir.path().join("alpha").join("diverged").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mark_returns_with_the_flag_on_disk_and_a_clear_never_leaves_it_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    let file = dir.path().join("alpha").join("diverged");
    // Marks from many threads at once: each returns only once the file is there.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                replica.mark_diverged("queue full");
                assert!(file.exists(), "returned before the flag was on disk");
            });
        }
    });
    // Clears and marks interleaved: memory and the file agree at the end.
    for round in 0..20 {
        let marks = replica.divergence_marks();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = replica.clear_diverged_since(&marks);
            });
            if round % 2 == 0 {
                s.spawn(|| replica.mark_diverged("queue full"));
            }
        });
        assert_eq!(
            replica.diverged().is_some(),
            file.exists(),
            "round {round}: memory and the file disagree"
        );
        replica.mark_diverged("queue full");
    }
}

/// Runs the replica's replay until its queue is empty and it is back on direct writes.
async fn replay_until_drained(replica: &Arc<Replica>) {
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let replay = tokio::spawn(
        replica
            .clone()
            .replay(crate::shutdown::Shutdown::new(stop.subscribe())),
    );
    wait_until("the queue is drained", || {
        !replica.queue().has_pending() && !replica.is_queueing()
    })
    .await;
    let _ = stop.send(());
    replay.await.expect("replay ends");
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The lines of measurement `m` in `bodies`, in order.
fn lines_of(bodies: &[Bytes], m: &str) -> Vec<Vec<u8>> {
    let prefix = format!("{m},");
    bodies
        .iter()
        .flat_map(|b| lineproto::lines(b).map(<[u8]>::to_vec).collect::<Vec<_>>())
        .filter(|l| l.starts_with(prefix.as_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_go_concurrently_a_failed_lane_alone_is_sent_again_and_the_batch_acked_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    fake.hold_for_a_pair.store(true, Ordering::SeqCst);
    fake.fail_b_once.store(true, Ordering::SeqCst);
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    let batch = two_measurements("db", 1, 1000);
    assert!(matches!(replica.enqueue(&batch).await, Outcome::Queued));
    replay_until_drained(&replica).await;

    assert_eq!(
        fake.max_in_flight.load(Ordering::SeqCst),
        2,
        "lanes sent together"
    );
    let writes = fake.writes.lock().expect("not poisoned").clone();
    // a once; b twice (failed, then sent again alone).
    assert_eq!(writes.len(), 3, "{} writes", writes.len());
    for w in &writes {
        assert!(
            lines_of(std::slice::from_ref(w), "a").is_empty()
                || lines_of(std::slice::from_ref(w), "b").is_empty(),
            "one measurement per lane"
        );
    }
    let sent_a = lines_of(&writes, "a");
    let sent_b = lines_of(&writes, "b");
    let queued = std::slice::from_ref(&batch.payload);
    assert_eq!(sent_a, lines_of(queued, "a"), "a sent once, in order");
    assert_eq!(sent_b.len(), 2000, "b sent twice");
    assert_eq!(sent_b[..1000], lines_of(queued, "b")[..], "in order");
    assert_eq!(sent_b[1000..], lines_of(queued, "b")[..], "in order");
    let stats = replica.queue().stats();
    assert_eq!((stats.acked_batches, stats.depth_records), (1, 0));
    assert_eq!(replica.counters.replayed_batches.load(Ordering::SeqCst), 1);
    assert_eq!(replica.counters.replay_errors.load(Ordering::SeqCst), 1);
    assert!(replica.diverged().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_sent_one_after_the_other_with_the_next_read_ahead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    // Each is a batch of two lanes.
    let batches = queue_separate_batches(&replica, 6).await;
    replay_until_drained(&replica).await;

    assert_eq!(
        fake.overtaken.load(Ordering::SeqCst),
        0,
        "a batch overtook one before it"
    );
    let writes = fake.writes.lock().expect("not poisoned").clone();
    assert_eq!(writes.len(), 12, "two lanes per batch, each once");
    let order: Vec<u64> = writes.iter().map(|w| batch_tag(w)).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "batches in queue order");
    let all: Vec<Bytes> = batches.iter().map(|b| b.payload.clone()).collect();
    assert_eq!(lines_of(&writes, "a"), lines_of(&all, "a"));
    assert_eq!(lines_of(&writes, "b"), lines_of(&all, "b"));
    let stats = replica.queue().stats();
    assert_eq!((stats.acked_batches, stats.depth_records), (6, 0));
    // Everything was queued before the replay began: each batch after the first was read
    // while the one before it was sent.
    assert_eq!(replica.counters.read_ahead.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_client_is_gone_stays_counted_until_delivered_and_shutdown_waits_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (replicator, slow_fake) = fast_and_slow(dir.path()).await;
    let replicator = Arc::new(replicator);
    let inflight = crate::http::body::InflightBytes::new(1 << 20);
    let body = Bytes::from_static(b"m v=1 1\n");
    let mut permit = crate::http::body::InflightPermit::default();
    inflight
        .try_grow(&mut permit, body.len())
        .expect("room for the body");
    // consistency=all waits for the stalled backend; the client gives up meanwhile.
    let r = replicator.clone();
    let request = tokio::spawn(async move {
        r.replicate_checked(
            "db".into(),
            None,
            "",
            Ok(Consistency::All),
            body,
            permit,
            true,
        )
        .await
    });
    wait_until("the slow backend has the write", || {
        !slow_fake.writes.lock().expect("not poisoned").is_empty()
    })
    .await;
    request.abort();
    assert!(request.await.is_err(), "the request was cancelled");
    // The delivery goes on, and its body still counts against the cap; a shutdown would wait
    // for it before closing the queues.
    assert_eq!(inflight.in_use(), 8);
    let waited = Duration::from_millis(50);
    assert_eq!(replicator.wait_for_deliveries(waited).await, 1);
    slow_fake.stall.store(false, Ordering::SeqCst);
    wait_until("the delivery ends", || inflight.in_use() == 0).await;
    let limit = Duration::from_secs(60);
    assert_eq!(replicator.wait_for_deliveries(limit).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_longer_than_a_queue_record_is_queued_in_pieces_of_whole_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    let replica = one_backend_with(
        dir.path(),
        serve(fake.clone()).await,
        "[queue]\nsegment_bytes = \"4KiB\"",
    );
    // About 20 KB, with quoted line breaks that a cut must not fall on.
    let mut payload = String::new();
    for i in 0..1000 {
        payload.push_str(&format!("m,host=h{i} v={i}i 1\n"));
        if i % 97 == 0 {
            payload.push_str(&format!("m,host=q{i} s=\"two\nlines\" 1\n"));
        }
    }
    let batch = Batch {
        db: "db".into(),
        rp: String::new(),
        precision: "n",
        payload: Bytes::from(payload.clone()),
    };
    let queued = replica.enqueue(&batch).await;
    assert!(matches!(queued, Outcome::Queued), "{queued:?}");
    assert!(replica.diverged().is_none());
    let records = replica.queue().stats().depth_records;
    // Each record holds less than a 4 KiB segment.
    assert!(
        records > 1 && records as usize * 4096 >= payload.len(),
        "{records} records"
    );
    replay_until_drained(&replica).await;
    let writes = fake.writes.lock().expect("not poisoned").clone();
    let mut got: Vec<&[u8]> = writes.iter().flat_map(|w| lineproto::lines(w)).collect();
    let mut sent: Vec<&[u8]> = lineproto::lines(payload.as_bytes()).collect();
    got.sort_unstable();
    sent.sort_unstable();
    assert_eq!(got, sent);
}

#[test]
fn a_line_longer_than_a_record_is_cut_out_alone_and_the_rest_still_cut() {
    let long = format!("m s=\"{}\" 1\n", "x".repeat(100));
    let payload = Bytes::from(format!("a v=1 1\n{long}b v=2 2\nc v=3 3\n"));
    let pieces = super::replica::split_at_lines(&payload, 20);
    let texts: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
    assert_eq!(
        texts,
        [
            &b"a v=1 1\n"[..],
            long.as_bytes(),
            &b"b v=2 2\nc v=3 3\n"[..]
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_no_backend_takes_directly_waits_for_one_to_catch_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        Arc::new(FakeBackend::default()),
        Arc::new(FakeBackend::default()),
    );
    let mut replicator = two_fakes(dir.path(), a, b).await;
    // Long enough that the replays surely start within it on a busy machine.
    replicator.set_catch_up_wait(Duration::from_secs(60));
    let replicas = replicator.replicas();
    // Both answered (so known to be up), then behind short queues, as under a load above
    // what they take.
    replicator
        .replicate(
            "db".into(),
            None,
            "",
            Consistency::All,
            Bytes::from_static(b"m v=0 0\n"),
        )
        .await
        .expect("both take it");
    for r in replicas.iter() {
        let queued = r
            .enqueue(&Batch {
                db: "db".into(),
                rp: String::new(),
                precision: "n",
                payload: Bytes::from_static(b"m v=0 1\n"),
            })
            .await;
        assert_eq!(queued, Outcome::Queued);
        assert!(r.is_queueing());
    }
    let direct = || -> u64 {
        replicas
            .iter()
            .map(|r| r.counters.direct_ok.load(Ordering::Relaxed))
            .sum()
    };
    let direct_before = direct();
    let write = tokio::spawn({
        let replicator = replicator.clone();
        async move {
            // As an HTTP write: a listener's write does not wait.
            let body = Bytes::from_static(b"m v=1 2\n");
            let permit = crate::http::body::InflightPermit::default();
            replicator
                .replicate_checked(
                    "db".into(),
                    None,
                    "",
                    Ok(Consistency::One),
                    body,
                    permit,
                    true,
                )
                .await
        }
    });
    wait_until("the write waits for a backend to catch up", || {
        replicas
            .iter()
            .all(|r| r.counters.catch_up_waits.load(Ordering::Relaxed) == 1)
    })
    .await;
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let replays = replicator.spawn_replays(&stop);
    // Acknowledged by a backend directly, not queued everywhere and answered 500.
    write.await.expect("joined").expect("stored");
    assert!(direct() > direct_before, "sent directly");
    let _ = stop.send(());
    for r in replays {
        let _ = r.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_purged_while_its_replay_retries_is_not_sent_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    fake.fail_all.store(true, Ordering::SeqCst);
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    let batch = |n: u64| Batch {
        db: "db".into(),
        rp: String::new(),
        precision: "n",
        payload: Bytes::from(format!("m,batch={n} v=1 {n}\n")),
    };
    assert_eq!(replica.enqueue(&batch(1)).await, Outcome::Queued);
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let replay = tokio::spawn(
        replica
            .clone()
            .replay(crate::shutdown::Shutdown::new(stop.subscribe())),
    );
    let sent = |fake: &FakeBackend| -> Vec<u64> {
        let writes = fake.writes.lock().expect("not poisoned");
        writes.iter().map(|b| batch_tag(b)).collect()
    };
    wait_until("the replay retries batch 1", || !sent(&fake).is_empty()).await;

    // The operator purges it; the backend then takes writes, and a new one is queued.
    replica.purge_queue().expect("purged");
    let before = sent(&fake).len();
    fake.fail_all.store(false, Ordering::SeqCst);
    assert_eq!(replica.enqueue(&batch(2)).await, Outcome::Queued);
    wait_until("batch 2 is delivered", || sent(&fake).contains(&2)).await;
    assert_eq!(
        sent(&fake)[before..],
        [2],
        "batch 1 was sent again after the purge"
    );
    let _ = stop.send(());
    replay.await.expect("replay ends");
}

#[tokio::test]
async fn the_listeners_write_at_the_reloaded_default_level() {
    use crate::ingest::Sink;
    let dir = tempfile::tempdir().expect("tempdir");
    // Both backends unreachable: a write is queued for both, which meets `any` only.
    let replicator = tiny_queues(dir.path());
    replicator.set_default_consistency(Consistency::Any);
    let sink = crate::ingest::ReplicatorSink::new(Arc::new(replicator.clone()));
    let line = |v: u32| Bytes::from(format!("m v={v} {v}\n"));
    sink.write("db", lineproto::Precision::Nanoseconds, line(1))
        .await
        .expect("queued meets any");
    // A reload changes the level: the listeners' next write is held to it.
    replicator.set_default_consistency(Consistency::One);
    let err = sink
        .write("db", lineproto::Precision::Nanoseconds, line(2))
        .await
        .expect_err("queued does not meet one");
    assert!(
        err.to_string().contains("hinted handoff queue not empty"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_while_a_replayed_batch_is_sent_keeps_new_writes_behind_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeBackend::default());
    fake.stall.store(true, Ordering::SeqCst);
    let replica = one_backend(dir.path(), serve(fake.clone()).await);
    let batch = Batch {
        db: "db".into(),
        rp: String::new(),
        precision: "n",
        payload: Bytes::from_static(b"m,batch=1 v=1 1\n"),
    };
    assert_eq!(replica.enqueue(&batch).await, Outcome::Queued);
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let replay = tokio::spawn(
        replica
            .clone()
            .replay(crate::shutdown::Shutdown::new(stop.subscribe())),
    );
    wait_until("the replay sends batch 1", || {
        !fake.writes.lock().expect("not poisoned").is_empty()
    })
    .await;
    replica.purge_queue().expect("purged");
    // Its send is still on its way: a write sent directly now could land before it.
    assert!(replica.is_queueing());
    // Neither does a write that takes no queue slot let the backend out of queueing (a slot
    // given back when every backend refused the write, or a failed append, look whether
    // the queue drained).
    drop(replica.take_slot());
    assert!(replica.is_queueing());
    fake.stall.store(false, Ordering::SeqCst);
    wait_until("the replay is done with it", || !replica.is_queueing()).await;
    assert_eq!(replica.last_error(), None, "a purged batch is no error");
    let _ = stop.send(());
    replay.await.expect("replay ends");
}

#[tokio::test]
async fn a_diverged_flag_the_disk_refused_is_written_once_it_can_be() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = serve(Arc::new(FakeBackend::default())).await;
    let replica = one_backend(dir.path(), fake);
    let flag_dir = dir.path().join("alpha");
    // The flag's temporary file cannot be made (a directory stands in its way).
    std::fs::create_dir_all(flag_dir.join("diverged.tmp")).expect("obstacle");
    replica.mark_diverged("its queue overflowed");
    assert!(replica.diverged().is_some(), "marked in memory at once");
    assert!(replica.diverged_unpersisted());
    assert!(!flag_dir.join("diverged").exists());
    // The next health check round tries again; the disk takes it now.
    std::fs::remove_dir(flag_dir.join("diverged.tmp")).expect("obstacle gone");
    replica.persist_diverged_later();
    wait_until("the flag is on disk", || !replica.diverged_unpersisted()).await;
    let text = std::fs::read_to_string(flag_dir.join("diverged")).expect("flag file");
    assert_eq!(text, "its queue overflowed\n");
}
