//! Freshness across relays (DESIGN.md §5): each relay publishes its per-backend queue state on
//! its admin surface, and asks its peers (`[[peer]]`) for theirs, so that a backend one relay
//! sees as in sync but another still has queued writes for serves no reads.
//!
//! The report, `GET /admin/v1/queues` on the admin surface:
//!
//! ```json
//! {"node":"relay-1","backends":[{"name":"influx-a","queue_records":0,"queue_bytes":0,
//!   "oldest_age_seconds":null,"diverged":false,"maintenance":false}]}
//! ```
//!
//! Backends are matched across relays by their configured `name`: every relay must give a
//! backend the same name. A peer's report counts until a newer one arrives, also while the
//! peer cannot be reached (its last report stands), and across restarts of this relay (the
//! last reports are kept in `data_dir/peer-reports.json`); a peer never reached has told
//! nothing and holds nothing back. The [`crate::monitor`] task polls the peers at the
//! health-check interval, and a report shows the queues as they are when it is served.
//!
//! Between polls, a relay whose queues change (a backend's queue starts or stops holding
//! records, a backend turns diverged or goes into maintenance) tells its peers at once
//! (`POST /admin/v1/queues/changed` with its report as the body, [`tell_changes`]), and the
//! report counts there at once, without a fetch: also when this relay's address cannot be
//! reached, or has closed at shutdown. So a write a peer acknowledged through its queue is
//! missed by a read here only for the few milliseconds that takes (or until the next poll,
//! when the peer cannot be told). A notice without a report (an older version) has the peers
//! polled at once instead.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};

use crate::backend::BackendClient;
use crate::monitor::Peer;
use crate::shutdown::Shutdown;
use crate::state::{ClusterState, QueueDepth};
use crate::write::Replicator;

/// Where the report is served on the admin surface.
pub const QUEUES_PATH: &str = "/admin/v1/queues";
/// Where a peer says that its queues changed (`POST`, no body): poll it now.
pub const CHANGED_PATH: &str = "/admin/v1/queues/changed";

/// Marks a notice sent by a client `[auth] admins` does not name: its report is not taken
/// (it could steer reads), only the news that something changed, so the peers are polled.
#[derive(Debug, Clone, Copy)]
pub struct UntrustedNotice;
/// How often this node looks whether its queues changed, to tell its peers.
const CHANGE_CHECK: Duration = Duration::from_millis(20);

/// Largest report read from a peer.
const MAX_REPORT_BYTES: usize = 1 << 20;

/// This relay's queue report, as served at [`QUEUES_PATH`], of the state `read` returns (it
/// reads the queues).
pub fn queue_report(node: &str, read: impl FnOnce() -> ClusterState) -> Vec<u8> {
    numbered(node, || {
        read()
            .backends
            .iter()
            .map(|b| ReportedBackend::new(&b.name, &b.queue, b.diverged.is_some(), b.maintenance))
            .collect()
    })
}

/// The same report built from the replicas alone, as a notice to the peers carries it.
fn replicas_report(node: &str, replicator: &Replicator) -> Vec<u8> {
    numbered(node, || {
        replicator
            .replicas()
            .iter()
            .map(|r| {
                ReportedBackend::new(
                    r.name(),
                    &reported_depth(r),
                    r.diverged().is_some(),
                    r.in_maintenance(),
                )
            })
            .collect()
    })
}

/// A replica's queue as peers are told of it: while the backend is behind its queue, at least
/// one record, as this node counts it for its own reads. Writes go to the queue then (an
/// insured send still running, a drop just taken from the queue and not yet flagged, an
/// append on its way), so an empty queue would say too little.
pub(crate) fn reported_depth(r: &crate::write::replica::Replica) -> crate::state::QueueDepth {
    let mut depth = crate::monitor::queue_depth(&r.queue().stats());
    if r.is_queueing() {
        depth.records = depth.records.max(1);
    }
    depth
}

/// A report of `read`'s backends, numbered in the order the reads happen: of two reports of
/// this process, the one with the higher number read the queues later, whichever way (fetched
/// or sent with a notice) and in whichever order they arrive.
fn numbered(node: &str, read: impl FnOnce() -> Vec<ReportedBackend>) -> Vec<u8> {
    static LAST: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
    let (seq, backends) = {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last += 1;
        (*last, read())
    };
    let report = QueueReport {
        node: node.to_owned(),
        instance: Some(instance().to_owned()),
        seq: Some(seq),
        backends,
    };
    let mut out = serde_json::to_vec(&report).unwrap_or_default();
    out.push(b'\n');
    out
}

/// What tells this process's reports from those of any other relay, or of this relay before a
/// restart: a peer takes a report that comes with a notice (rather than fetched from a known
/// address) only from a relay it fetched one from before.
fn instance() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        use std::hash::BuildHasher;
        // `RandomState` is seeded at random per process; the pid and the time make two
        // relays started together differ even where that seed were not random.
        let seed = (std::process::id(), std::time::SystemTime::now());
        format!(
            "{:016x}",
            std::collections::hash_map::RandomState::new().hash_one(seed)
        )
    })
}

/// A peer's report, as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueReport {
    /// The peer's `node_name`.
    pub node: String,
    /// The peer's process (see [`instance`]); absent from reports of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The report's number in its process (see [`numbered`]); absent from older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Its backends.
    pub backends: Vec<ReportedBackend>,
}

/// One backend in a peer's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedBackend {
    /// The backend's configured name (the key across relays).
    pub name: String,
    /// Records the peer has queued for it.
    pub queue_records: u64,
    /// Bytes the peer has queued for it.
    pub queue_bytes: u64,
    /// Age of the peer's oldest queued record for it.
    pub oldest_age_seconds: Option<f64>,
    /// Whether the peer marks it diverged.
    pub diverged: bool,
    /// Whether the peer has it in maintenance.
    #[serde(default)]
    pub maintenance: bool,
}

impl ReportedBackend {
    fn new(name: &str, queue: &QueueDepth, diverged: bool, maintenance: bool) -> Self {
        ReportedBackend {
            name: name.to_owned(),
            queue_records: queue.records,
            queue_bytes: queue.bytes,
            oldest_age_seconds: queue.oldest_age.map(|d| d.as_secs_f64()),
            diverged,
            maintenance,
        }
    }
}

/// What peers are told about, per backend in config order: whether records are queued for it
/// and how often its queue started holding records (a drain and a new write between two looks
/// changes that, while a peer may have been served the empty queue in between), whether it
/// diverged, whether it is in maintenance.
fn queue_states(replicator: &Replicator) -> Vec<(String, bool, u64, bool, bool)> {
    replicator
        .replicas()
        .iter()
        .map(|r| {
            (
                r.name().to_owned(),
                r.queue().has_pending() || r.is_queueing(),
                r.queue().fills(),
                r.diverged().is_some(),
                r.in_maintenance(),
            )
        })
        .collect()
}

/// Tells every peer when this node's queues change, until `shutdown`, with the report as it
/// is then: a peer takes it at once, also when it cannot fetch the report (this node has no
/// `[admin]` listener and its main one closed at shutdown, or the peer cannot reach it). A
/// peer that cannot be told learns at its next poll. At `shutdown` a change since the last
/// look is told once more, and the tells are awaited: the node stops this after its last
/// write was queued. Returns whether peers were told of a change lately (within
/// [`PEER_FETCH_GRACE`], or at the end), so that a peer of an older version, which fetches
/// the report instead, may still be doing so.
pub async fn tell_changes(
    node: String,
    replicator: Replicator,
    peers: Vec<Peer>,
    shutdown: Shutdown,
) -> bool {
    tell_changes_every(node, replicator, peers, shutdown, CHANGE_CHECK).await
}

/// [`tell_changes`], looking every `period`.
async fn tell_changes_every(
    node: String,
    replicator: Replicator,
    peers: Vec<Peer>,
    mut shutdown: Shutdown,
    period: Duration,
) -> bool {
    // One teller per peer, each sending the latest report once its previous notice is over:
    // notices to a peer never overtake each other (an older report arriving last would stand
    // there), and a peer that is slow to answer holds up no other.
    let (latest, _) = tokio::sync::watch::channel(Bytes::new());
    let tellers: Vec<_> = peers
        .into_iter()
        .map(|peer| tokio::spawn(tell_each(peer, latest.subscribe())))
        .collect();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    let mut last_told: Option<tokio::time::Instant> = None;
    loop {
        let stopping = tokio::select! {
            () = shutdown.recv() => true,
            _ = ticker.tick() => false,
        };
        let now = queue_states(&replicator);
        if last.as_ref() != Some(&now) {
            // Built after the look: what it shows is at least as new as what was compared.
            latest.send_replace(Bytes::from(replicas_report(&node, &replicator)));
            last = Some(now);
            last_told = Some(tokio::time::Instant::now());
        }
        if stopping {
            // Each teller sends the last report it has not sent, then ends.
            drop(latest);
            for t in tellers {
                let _ = t.await;
            }
            return last_told.is_some_and(|t| t.elapsed() < PEER_FETCH_GRACE);
        }
    }
}

/// Sends `peer` each report that `latest` holds, until it is closed and the last one sent.
/// A report the peer did not take is sent again, with backoff, until it does or a newer one
/// replaces it: a peer that cannot poll this node learns of its queues only so. (Once
/// `latest` is closed, at shutdown, the last report is tried once.)
async fn tell_each(peer: Peer, mut latest: tokio::sync::watch::Receiver<Bytes>) {
    while latest.changed().await.is_ok() {
        let mut report = latest.borrow_and_update().clone();
        let mut pause = TELL_RETRY_FIRST;
        while !tell(&peer, report.clone()).await {
            tokio::select! {
                changed = latest.changed() => match changed {
                    Ok(()) => report = latest.borrow_and_update().clone(),
                    Err(_) => return,
                },
                () = tokio::time::sleep(pause) => pause = (pause * 2).min(TELL_RETRY_MAX),
            }
        }
    }
}

/// Pauses between attempts to tell a peer a report it did not take.
const TELL_RETRY_FIRST: Duration = Duration::from_millis(200);
const TELL_RETRY_MAX: Duration = Duration::from_secs(5);

/// Says to `peer` that this node's queues changed, with `report`; false when it is worth
/// saying again (no answer, a 5xx, 408 or 429; a refusal would only be repeated).
async fn tell(peer: &Peer, report: Bytes) -> bool {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let told = peer
        .client
        .forward(Method::POST, CHANGED_PATH, headers, report, TELL_TIMEOUT)
        .await;
    match told {
        Ok(resp) if resp.status().is_success() => true,
        Ok(resp) => {
            tracing::debug!(peer = %peer.name, status = %resp.status(), "peer not told of a queue change");
            let status = resp.status().as_u16();
            (400..500).contains(&status) && status != 408 && status != 429
        }
        Err(e) => {
            tracing::debug!(peer = %peer.name, error = %e, "peer not told of a queue change");
            false
        }
    }
}

/// How long a node that told its peers of a last change at shutdown keeps its report served
/// for them to fetch.
pub const PEER_FETCH_GRACE: Duration = Duration::from_secs(1);

/// How long telling a peer may take.
const TELL_TIMEOUT: Duration = Duration::from_secs(2);

/// What peers told this node: that their queues changed, with their report where they sent
/// one. Filled by the admin surface, emptied by the [`crate::monitor`] task.
#[derive(Debug, Default)]
pub struct PeerNews {
    rung: tokio::sync::Notify,
    held: std::sync::Mutex<HeldNews>,
}

#[derive(Debug, Default)]
struct HeldNews {
    /// The latest report per sender not yet taken, with when it arrived.
    reports: Vec<(QueueReport, tokio::time::Instant)>,
    /// Whether a notice came without a report (or one was let go): every peer is asked.
    ask_all: bool,
}

/// Reports held between two looks of the monitor, at most: one per peer is the normal case.
const MAX_HELD_REPORTS: usize = 64;

/// What [`PeerNews::take`] gives: the reports sent, and whether the peers are to be asked.
pub type News = (Vec<(QueueReport, tokio::time::Instant)>, bool);

impl PeerNews {
    /// A peer's notice, with its report when it sent one.
    pub fn notice(&self, report: Option<QueueReport>) {
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            match report {
                Some(report) => {
                    // A later report of the same relay replaces the earlier one; an earlier
                    // one that arrives after it (a stalled notice) is dropped.
                    let same =
                        |r: &QueueReport| r.node == report.node && r.instance == report.instance;
                    if held
                        .reports
                        .iter()
                        .any(|(r, _)| same(r) && r.seq.is_some() && r.seq > report.seq)
                    {
                        drop(held);
                        self.rung.notify_one();
                        return;
                    }
                    held.reports.retain(|(r, _)| !same(r));
                    if held.reports.len() >= MAX_HELD_REPORTS {
                        held.reports.remove(0);
                        held.ask_all = true;
                    }
                    held.reports.push((report, tokio::time::Instant::now()));
                }
                None => held.ask_all = true,
            }
        }
        self.rung.notify_one();
    }

    /// Waits for a notice.
    pub async fn notified(&self) {
        self.rung.notified().await;
    }

    /// The news since the last call.
    pub fn take(&self) -> News {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let held = std::mem::take(&mut *held);
        (held.reports, held.ask_all)
    }
}

/// How long a peer's notice may take to arrive whole.
const NOTICE_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a peer's notice ([`CHANGED_PATH`]): its report, or `None` when it sent none (a peer of
/// an older version, which has its report fetched instead).
pub async fn read_notice(
    mut body: crate::http::HandlerBody,
) -> Result<Option<QueueReport>, String> {
    let read = async {
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("cannot read the queue report: {e}"))?;
            if let Ok(chunk) = frame.into_data() {
                if data.len() + chunk.len() > MAX_REPORT_BYTES {
                    return Err(format!("queue report longer than {MAX_REPORT_BYTES} bytes"));
                }
                data.extend_from_slice(&chunk);
            }
        }
        Ok(data)
    };
    let body = tokio::time::timeout(NOTICE_READ_TIMEOUT, read)
        .await
        .map_err(|_| format!("queue report not received within {NOTICE_READ_TIMEOUT:?}"))??;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_report(&body).map(Some)
}

/// Reads a report.
pub fn parse_report(body: &[u8]) -> Result<QueueReport, String> {
    serde_json::from_slice(body).map_err(|e| format!("unreadable queue report: {e}"))
}

/// Fetches a peer's report through `client` (built for the peer's admin URL).
pub async fn fetch_report(
    client: &BackendClient,
    timeout: Duration,
) -> Result<QueueReport, String> {
    let exchange = async {
        let resp = client
            .forward(
                Method::GET,
                QUEUES_PATH,
                http::HeaderMap::new(),
                Bytes::new(),
                timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_REPORT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the report: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!("{QUEUES_PATH} answered {status}"));
        }
        parse_report(&body)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no report within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::state::{BackendState, QueueDepth};

    #[test]
    fn report_round_trips() {
        let mut a = BackendState::new("influx-a", "http://127.0.0.1:1");
        a.queue = QueueDepth {
            records: 3,
            bytes: 120,
            oldest_age: Some(Duration::from_millis(1500)),
        };
        let mut b = BackendState::new("influx-b", "http://127.0.0.1:2");
        b.diverged = Some("queue overflowed".into());
        let state = ClusterState {
            backends: vec![a, b],
            peers: Vec::new(),
            taken: SystemTime::now(),
        };
        let text = queue_report("relay-1", || state.clone());
        assert_eq!(
            String::from_utf8_lossy(&text),
            format!(
                "{{\"node\":\"relay-1\",\"instance\":\"{}\",\"seq\":{},\"backends\":[{{\"name\":\"influx-a\",\"queue_records\":3,\"queue_bytes\":120,\"oldest_age_seconds\":1.5,\"diverged\":false,\"maintenance\":false}},{{\"name\":\"influx-b\",\"queue_records\":0,\"queue_bytes\":0,\"oldest_age_seconds\":null,\"diverged\":true,\"maintenance\":false}}]}}\n",
                instance(),
                report_seq(&text)
            )
        );
        let report = parse_report(&text).expect("parses");
        assert_eq!(report.node, "relay-1");
        assert_eq!(report.backends[0].queue_records, 3);
        assert_eq!(report.backends[0].oldest_age_seconds, Some(1.5));
        assert!(report.backends[1].diverged);
        assert!(parse_report(b"{}").is_err());
    }

    #[test]
    fn a_held_notice_is_not_replaced_by_an_earlier_one_of_the_same_process() {
        let report = |seq: u64, records: u64| QueueReport {
            node: "relay-2".into(),
            instance: Some("p1".into()),
            seq: Some(seq),
            backends: vec![ReportedBackend {
                name: "influx-a".into(),
                queue_records: records,
                queue_bytes: 0,
                oldest_age_seconds: None,
                diverged: false,
                maintenance: false,
            }],
        };
        let news = PeerNews::default();
        news.notice(Some(report(2, 0)));
        news.notice(Some(report(1, 5)));
        let (held, _) = news.take();
        let seqs: Vec<Option<u64>> = held.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, [Some(2)]);
        news.notice(Some(report(3, 1)));
        news.notice(Some(report(4, 0)));
        let (held, _) = news.take();
        let seqs: Vec<Option<u64>> = held.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, [Some(4)]);
    }

    #[tokio::test]
    async fn a_notice_the_peer_did_not_take_is_sent_again_until_it_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The peer answers 503 to its first two notices (restarting, say), then takes them.
        let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Bytes>::new()));
        let (a, t) = (attempts.clone(), taken.clone());
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (a, t) = (a.clone(), t.clone());
                async move {
                    let body = http_body_util::BodyExt::collect(req.into_body())
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let n = a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut resp = http::Response::new(http_body_util::Full::new(Bytes::new()));
                    if n < 2 {
                        *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    } else {
                        *resp.status_mut() = http::StatusCode::NO_CONTENT;
                        t.lock().expect("not poisoned").push(body);
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
        let addr = crate::test_http::serve(service).await;
        // One look, at start, in the hour the test takes: no later change sends it again.
        let (_replicator, stop, telling) = telling(dir.path(), addr);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while taken.lock().expect("not poisoned").is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never told");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
        let report = parse_report(&taken.lock().expect("not poisoned")[0]).expect("report");
        assert_eq!(report.node, "relay-1");
        let _ = stop.send(());
        telling.await.expect("ends");
    }

    /// A node `relay-1` in `dir` with backend `a` and peer `relay-2` at `addr`, telling it of
    /// its queues, looking once at start and then only once an hour (or at the stop sent).
    fn telling(
        dir: &std::path::Path,
        addr: std::net::SocketAddr,
    ) -> (
        Replicator,
        tokio::sync::broadcast::Sender<()>,
        tokio::task::JoinHandle<bool>,
    ) {
        let text = format!(
            "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[peer]]\nname = \"relay-2\"\nurl = \"http://{addr}\"\n",
            dir.display().to_string()
        );
        let config = crate::config::Config::from_toml(&text, "test").expect("valid config");
        let clients = crate::node::backend_clients(&config).expect("clients");
        let replicator = Replicator::open(&config, &clients).expect("queues open");
        let peers = crate::node::peer_clients(&config).expect("peer clients");
        let (stop, _) = tokio::sync::broadcast::channel(1);
        let telling = tokio::spawn(tell_changes_every(
            "relay-1".to_owned(),
            replicator.clone(),
            peers,
            Shutdown::new(stop.subscribe()),
            Duration::from_secs(3600),
        ));
        (replicator, stop, telling)
    }

    fn report_seq(text: &[u8]) -> u64 {
        parse_report(text).expect("report").seq.expect("numbered")
    }

    #[tokio::test]
    async fn a_change_just_before_shutdown_is_still_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, seen) = crate::test_http::answering_204().await;
        let notices = || -> Vec<QueueReport> {
            let seen = seen.lock().expect("not poisoned");
            seen.iter()
                .filter(|(line, _)| line.starts_with(&format!("POST {CHANGED_PATH} ")))
                .map(|(_, body)| parse_report(body).expect("a notice carries the report"))
                .collect()
        };
        let told = || notices().len();
        // Looking only once (at start) in the hour the test takes: what follows is told at
        // shutdown or not at all.
        let (replicator, stop, telling) = telling(dir.path(), addr);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while told() < 1 {
            assert!(tokio::time::Instant::now() < deadline, "not told at start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The drain queues a last write, then the node stops telling.
        let r = replicator.replicas()[0].clone();
        let batch = crate::write::replica::Batch {
            db: "db".into(),
            rp: String::new(),
            precision: "n",
            payload: Bytes::from_static(b"m v=1 1\n"),
        };
        assert_eq!(
            r.enqueue(&batch).await,
            crate::write::answer::Outcome::Queued
        );
        let _ = stop.send(());
        assert!(telling.await.expect("ends"), "a last change was told");
        // The last notice carries the report with the queued write: a peer learns of it
        // without fetching the report from a node that is going away.
        let notices = notices();
        assert_eq!(notices.len(), 2);
        assert_eq!(notices[0].backends[0].queue_records, 0);
        let last = &notices[1];
        assert_eq!(last.node, "relay-1");
        assert_eq!(last.instance.as_deref(), Some(instance()));
        assert_eq!(last.backends[0].name, "a");
        assert_eq!(last.backends[0].queue_records, 1);
    }
}
