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
//! (`POST /admin/v1/queues/changed`, [`tell_changes`]), and they poll it then. So a write a
//! peer acknowledged through its queue is missed by a read here only for the few
//! milliseconds that takes (or until the next poll, when the peer cannot be told).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};

use crate::backend::BackendClient;
use crate::monitor::Peer;
use crate::shutdown::Shutdown;
use crate::state::ClusterState;
use crate::write::Replicator;

/// Where the report is served on the admin surface.
pub const QUEUES_PATH: &str = "/admin/v1/queues";
/// Where a peer says that its queues changed (`POST`, no body): poll it now.
pub const CHANGED_PATH: &str = "/admin/v1/queues/changed";
/// How often this node looks whether its queues changed, to tell its peers.
const CHANGE_CHECK: Duration = Duration::from_millis(20);

/// Largest report read from a peer.
const MAX_REPORT_BYTES: usize = 1 << 20;

/// This relay's queue report, as served at [`QUEUES_PATH`].
pub fn queue_report(node: &str, state: &ClusterState) -> Vec<u8> {
    let backends: Vec<serde_json::Value> = state
        .backends
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "queue_records": b.queue.records,
                "queue_bytes": b.queue.bytes,
                "oldest_age_seconds": b.queue.oldest_age.map(|d| d.as_secs_f64()),
                "diverged": b.diverged.is_some(),
                "maintenance": b.maintenance,
            })
        })
        .collect();
    let mut out = serde_json::to_vec(&serde_json::json!({"node": node, "backends": backends}))
        .unwrap_or_default();
    out.push(b'\n');
    out
}

/// A peer's report, as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueReport {
    /// The peer's `node_name`.
    pub node: String,
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
                r.queue().has_pending(),
                r.queue().fills(),
                r.diverged().is_some(),
                r.in_maintenance(),
            )
        })
        .collect()
}

/// Tells every peer when this node's queues change, until `shutdown`: the peers then poll
/// this node's report. A peer that cannot be told learns at its next poll. At `shutdown` a
/// change since the last look is told once more, and the tells are awaited: the node stops
/// this after its last write was queued, and keeps its report served until then. Returns
/// whether peers were told of a change lately (within [`PEER_FETCH_GRACE`], or at the end),
/// so that they may still be fetching the report.
pub async fn tell_changes(replicator: Replicator, peers: Vec<Peer>, shutdown: Shutdown) -> bool {
    tell_changes_every(replicator, peers, shutdown, CHANGE_CHECK).await
}

/// [`tell_changes`], looking every `period`.
async fn tell_changes_every(
    replicator: Replicator,
    peers: Vec<Peer>,
    mut shutdown: Shutdown,
    period: Duration,
) -> bool {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    let mut last_told: Option<tokio::time::Instant> = None;
    let mut telling: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    loop {
        let stopping = tokio::select! {
            () = shutdown.recv() => true,
            _ = ticker.tick() => false,
        };
        let now = queue_states(&replicator);
        let changed = last.as_ref() != Some(&now);
        telling.retain(|t| !t.is_finished());
        if changed {
            last = Some(now);
            last_told = Some(tokio::time::Instant::now());
            telling.extend(peers.iter().cloned().map(|p| tokio::spawn(tell(p))));
        }
        if stopping {
            for t in telling {
                let _ = t.await;
            }
            return last_told.is_some_and(|t| t.elapsed() < PEER_FETCH_GRACE);
        }
    }
}

/// Says to `peer` that this node's queues changed.
async fn tell(peer: Peer) {
    let told = peer
        .client
        .forward(
            Method::POST,
            CHANGED_PATH,
            http::HeaderMap::new(),
            Bytes::new(),
            TELL_TIMEOUT,
        )
        .await;
    match told {
        Ok(resp) if resp.status().is_success() => {}
        Ok(resp) => {
            tracing::debug!(peer = %peer.name, status = %resp.status(), "peer not told of a queue change");
        }
        Err(e) => {
            tracing::debug!(peer = %peer.name, error = %e, "peer not told of a queue change");
        }
    }
}

/// How long a node that told its peers of a last change at shutdown keeps its report served
/// for them to fetch.
pub const PEER_FETCH_GRACE: Duration = Duration::from_secs(1);

/// How long telling a peer may take.
const TELL_TIMEOUT: Duration = Duration::from_secs(2);

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
        let text = queue_report("relay-1", &state);
        assert_eq!(
            String::from_utf8_lossy(&text),
            "{\"backends\":[{\"diverged\":false,\"maintenance\":false,\"name\":\"influx-a\",\"oldest_age_seconds\":1.5,\"queue_bytes\":120,\"queue_records\":3},{\"diverged\":true,\"maintenance\":false,\"name\":\"influx-b\",\"oldest_age_seconds\":null,\"queue_bytes\":0,\"queue_records\":0}],\"node\":\"relay-1\"}\n"
        );
        let report = parse_report(&text).expect("parses");
        assert_eq!(report.node, "relay-1");
        assert_eq!(report.backends[0].queue_records, 3);
        assert_eq!(report.backends[0].oldest_age_seconds, Some(1.5));
        assert!(report.backends[1].diverged);
        assert!(parse_report(b"{}").is_err());
    }

    #[tokio::test]
    async fn a_change_just_before_shutdown_is_still_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (addr, seen) = crate::test_http::answering_204().await;
        let told = || {
            let lines = seen.lock().expect("not poisoned");
            lines
                .iter()
                .filter(|l| l.starts_with(&format!("POST {CHANGED_PATH} ")))
                .count()
        };
        let text = format!(
            "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[[backend]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[peer]]\nname = \"relay-2\"\nurl = \"http://{addr}\"\n",
            dir.path().display().to_string()
        );
        let config = crate::config::Config::from_toml(&text, "test").expect("valid config");
        let clients = crate::node::backend_clients(&config).expect("clients");
        let replicator = Replicator::open(&config, &clients).expect("queues open");
        let peers = crate::node::peer_clients(&config).expect("peer clients");
        let (stop, _) = tokio::sync::broadcast::channel(1);
        // Looking only once (at start) in the hour the test takes: what follows is told at
        // shutdown or not at all.
        let telling = tokio::spawn(tell_changes_every(
            replicator.clone(),
            peers,
            Shutdown::new(stop.subscribe()),
            Duration::from_secs(3600),
        ));
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
        assert_eq!(told(), 2);
    }
}
