use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;

use super::*;
use crate::config::Config;
use crate::health::Health;
use crate::http::compat::RequestId;
use crate::http::{RequestObserver, Surface, empty};
use crate::params::Consistency;
use crate::write::Replicator;

/// A replicator over two backends that refuse connections (nothing listens on port 1), so
/// every write ends up queued; no replay task runs, so queues stay as the test leaves them.
/// The free-disk floor is low so that a busy shared disk does not refuse the appends.
fn setup(dir: &std::path::Path) -> (AdminHandler, Replicator) {
    setup_with_board(dir, false)
}

/// [`setup`], with a state board (as the read path keeps) when `board`; no task updates it.
fn setup_with_board(dir: &std::path::Path, board: bool) -> (AdminHandler, Replicator) {
    setup_with_news(dir, board, None)
}

/// [`setup_with_board`], with `news` where peers' notices go.
fn setup_with_news(
    dir: &std::path::Path,
    board: bool,
    news: Option<std::sync::Arc<crate::peers::PeerNews>>,
) -> (AdminHandler, Replicator) {
    let text = format!(
        "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[queue]\nmin_free_disk = \"1MiB\"\n[[backend]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:1\"\n[[backend]]\nname = \"beta\"\nurl = \"http://127.0.0.2:1\"\n",
        dir.display().to_string()
    );
    let config = Config::from_toml(&text, "test").expect("valid config");
    let clients = crate::node::backend_clients(&config).expect("clients");
    let replicator = Replicator::open(&config, &clients).expect("queues open");
    let board =
        board.then(|| crate::state::StateBoard::new(crate::monitor::initial_states(&clients)));
    let admin = AdminHandler::new(Sources {
        replicator: replicator.clone(),
        board,
        node_name: "node-1".to_owned(),
        health: Health::new(),
        data_dir: config.data_dir.clone(),
        started: SystemTime::now() - Duration::from_secs(90),
        http_listeners: vec![("http", "127.0.0.1:8086".to_owned())],
        inflight: None,
        anti_entropy: None,
        peers_changed: news,
        guard: None,
    });
    (admin, replicator)
}

async fn write_one(replicator: &Replicator, line: &str) {
    // Both backends are unreachable: the batch is queued for each (500 "queue not empty").
    let _ = replicator
        .replicate(
            "db".into(),
            None,
            "",
            Consistency::Any,
            Bytes::from(line.to_owned()),
        )
        .await;
}

async fn call(
    admin: &AdminHandler,
    method: &str,
    uri: &str,
) -> (StatusCode, String, http::HeaderMap) {
    call_with(admin, method, uri, &[]).await
}

async fn call_with(
    admin: &AdminHandler,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, http::HeaderMap) {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(empty()).expect("request");
    let resp = admin.call(RequestId::new(), req).await;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        String::from_utf8(bytes.to_vec()).expect("utf-8"),
        parts.headers,
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("JSON")
}

#[tokio::test]
async fn the_queue_report_for_peers_shows_the_queues_as_they_are_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup_with_board(dir.path(), true);
    let records = |text: &str| -> Vec<u64> {
        json(text)["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .map(|b| b["queue_records"].as_u64().expect("records"))
            .collect()
    };
    let (status, text, _) = call(&admin, "GET", crate::peers::QUEUES_PATH).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(records(&text), [0, 0]);
    // No monitor round has refreshed the board since: the report reads the queues.
    write_one(&replicator, "m v=1 1\n").await;
    let (_, text, _) = call(&admin, "GET", crate::peers::QUEUES_PATH).await;
    assert_eq!(records(&text), [1, 1], "{text}");
    // Behind its queue with the queue empty (in maintenance, before any write): the next
    // write goes to the queue, so peers count one record, as this node does for its reads.
    for r in replicator.replicas().iter() {
        r.purge_queue().expect("purged");
    }
    replicator.replicas()[1]
        .enter_maintenance()
        .expect("maintenance");
    let (_, text, _) = call(&admin, "GET", crate::peers::QUEUES_PATH).await;
    assert_eq!(records(&text)[1], 1, "{text}");
}

#[tokio::test]
async fn a_peers_notice_hands_its_report_to_the_monitor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let news = std::sync::Arc::new(crate::peers::PeerNews::default());
    let (admin, _replicator) = setup_with_news(dir.path(), true, Some(news.clone()));
    let notice = |body: &'static str| {
        let admin = admin.clone();
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri(crate::peers::CHANGED_PATH)
                .body(crate::http::full(body))
                .expect("request");
            let resp = admin.call(RequestId::new(), req).await;
            let status = resp.status();
            let text = resp.into_body().collect().await.expect("body").to_bytes();
            (status, String::from_utf8_lossy(&text).into_owned())
        }
    };
    // A peer of an older version sends no report: every peer is asked for theirs.
    assert_eq!(notice("").await.0, StatusCode::NO_CONTENT);
    let (reports, ask) = news.take();
    assert!(reports.is_empty() && ask);
    let report = r#"{"node":"relay-2","instance":"p2","backends":[{"name":"alpha","queue_records":4,"queue_bytes":9,"oldest_age_seconds":null,"diverged":false,"maintenance":false}]}"#;
    assert_eq!(notice(report).await.0, StatusCode::NO_CONTENT);
    let (reports, ask) = news.take();
    assert!(!ask);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].0.backends[0].queue_records, 4);
    // A report that cannot be read is refused; the notice still has the peers polled.
    let (status, text) = notice("{\"node\":").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("unreadable queue report"), "{text}");
    let (reports, ask) = news.take();
    assert!(reports.is_empty() && ask);
    // From a client `[auth] admins` does not name: news only, its report not taken.
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(crate::peers::CHANGED_PATH)
        .body(crate::http::full(report))
        .expect("request");
    req.extensions_mut().insert(crate::peers::UntrustedNotice);
    let resp = admin.call(RequestId::new(), req).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (reports, ask) = news.take();
    assert!(reports.is_empty() && ask);
}

#[tokio::test]
async fn status_json_shows_queued_backends_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    let (status, body, headers) = call(&admin, "GET", "/status").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let v = json(&body);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["node_name"], "node-1");
    assert!(v["uptime_seconds"].as_u64().expect("uptime") >= 90);
    assert_eq!(v["backends"][0]["name"], "alpha");
    assert_eq!(v["backends"][0]["sync"], "in_sync");
    assert_eq!(v["backends"][0]["reachability"], "unknown");
    assert_eq!(v["listeners"][0]["kind"], "http");
    assert!(v["data_dir"]["free_bytes"].as_u64().is_some());

    write_one(&replicator, "m v=1 1\n").await;
    let v = json(&call(&admin, "GET", "/status").await.1);
    let alpha = &v["backends"][0];
    assert_eq!(alpha["reachability"], "down", "{alpha}");
    assert_eq!(alpha["reachability_source"], "passive");
    assert!(
        alpha["down_reason"]
            .as_str()
            .expect("reason")
            .contains("connect"),
        "{alpha}"
    );
    assert_eq!(alpha["sync"], "catching_up");
    assert_eq!(alpha["queue"]["records"], 1);
    assert!(alpha["queue"]["bytes"].as_u64().expect("bytes") > 0);
    assert!(alpha["queue"]["oldest_age_seconds"].as_f64().is_some());
    assert_eq!(alpha["totals"]["direct_failed"], 1);
    assert_eq!(alpha["fresh"], false);
    assert_eq!(v["summary"]["ok"], false);
    let summary = v["summary"]["text"].as_str().expect("text");
    assert!(summary.contains("alpha: down"), "{summary}");
    assert!(summary.contains("beta: catching up (1 write,"), "{summary}");
}

#[tokio::test]
async fn rates_and_catch_up_come_from_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    write_one(&replicator, "m v=1 1\n").await;
    // A sample from two seconds ago with nothing counted yet: one write in two seconds.
    let mut old = status::sample(&admin.inner.sources, &[], &admin.inner.requests);
    for v in old.values_mut() {
        *v = 0;
    }
    admin
        .inner
        .rates
        .record(SystemTime::now() - Duration::from_secs(2), old);
    let v = json(&call(&admin, "GET", "/status").await.1);
    let rates = &v["backends"][0]["rates"];
    let writes = rates["writes_per_second"].as_f64().expect("rate");
    assert!(writes > 0.3 && writes <= 0.5, "{rates}");
    // Appending, not replaying: the queue is not shrinking, so there is no estimate.
    assert!(v["backends"][0]["catch_up_seconds"].is_null());
}

#[test]
fn rates_need_a_sample_old_enough() {
    let r = rates::Rates::default();
    let now = SystemTime::now();
    let mut s = rates::Sample::new();
    s.insert("k".into(), 10);
    assert_eq!(r.rate("k", &s, now), None, "no sample yet");
    r.record(now, s.clone());
    assert_eq!(r.rate("k", &s, now), None, "too recent");
    let mut later = rates::Sample::new();
    later.insert("k".into(), 30);
    let rate = r.rate("k", &later, now + Duration::from_secs(10));
    assert_eq!(rate, Some(2.0));
    // Old samples are forgotten past the window, the newest past it kept.
    for i in 1..30 {
        r.record(now + Duration::from_secs(5 * i), s.clone());
    }
    let at = now + Duration::from_secs(150);
    let rate = r.rate("k", &later, at).expect("rate");
    assert!(rate > 0.0, "{rate}");
    assert!(r.rate("missing", &later, at).is_none());
}

#[tokio::test]
async fn metrics_have_conventional_names_and_backend_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    write_one(&replicator, "m v=1 1\n").await;
    admin.request_metrics().observe(
        Surface::Main { with_admin: false },
        &Method::POST,
        "/write",
        StatusCode::NO_CONTENT,
        Duration::from_millis(3),
    );
    // A path a client made up does not become a label value.
    admin.request_metrics().observe(
        Surface::Admin,
        &Method::GET,
        "/made/up/path",
        StatusCode::NOT_FOUND,
        Duration::from_millis(1),
    );
    let (status, body, headers) = call(&admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/openmetrics-text"),
        "{headers:?}"
    );
    for expected in [
        "influx_ha_build_info{version=\"",
        "# TYPE influx_ha_uptime_seconds gauge",
        "influx_ha_healthy 1",
        "influx_ha_data_dir_free_bytes ",
        "influx_ha_backend_up{backend=\"alpha\"} 0",
        "influx_ha_backend_state{backend=\"alpha\",state=\"catching_up\"} 1",
        "influx_ha_backend_state{backend=\"alpha\",state=\"in_sync\"} 0",
        "influx_ha_queue_records{backend=\"alpha\"} 1",
        "influx_ha_queue_records{backend=\"beta\"} 1",
        "# TYPE influx_ha_queue_bytes gauge",
        "influx_ha_queue_oldest_age_seconds{backend=\"beta\"}",
        "influx_ha_backend_direct_writes_total{backend=\"alpha\",result=\"failed\"} 1",
        "influx_ha_backend_queued_batches_total{backend=\"alpha\"} 1",
        "influx_ha_queue_dropped_records_total{backend=\"alpha\",reason=\"purged\"} 0",
        "influx_ha_dead_letter_records{backend=\"alpha\"} 0",
        "# TYPE influx_ha_http_request_duration_seconds histogram",
        "influx_ha_http_request_duration_seconds_count{listener=\"http\",endpoint=\"write\",method=\"POST\",code=\"204\"} 1",
        "endpoint=\"other\",method=\"GET\",code=\"404\"",
        "# EOF",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in\n{body}");
    }
    assert!(!body.contains("made/up"), "{body}");
}

#[tokio::test]
async fn page_shows_every_backend_with_its_state_and_escapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    let (status, page, headers) = call(&admin, "GET", "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(page.contains("<meta http-equiv=\"refresh\""), "{page}");
    assert!(page.contains("<h1>influx-ha node-1</h1>"), "{page}");
    assert!(page.contains("data-backend=\"alpha\""));
    assert!(page.contains("data-backend=\"beta\""));
    assert!(page.contains("in sync"));

    write_one(&replicator, "m v=1 1\n").await;
    replicator.replicas()[1].mark_diverged("refused <script>alert(1)</script> & more");
    let page = call(&admin, "GET", "/").await.1;
    assert!(page.contains("class=\"summary bad\""), "{page}");
    assert!(page.contains("alpha: down"), "{page}");
    assert!(
        page.contains("<span class=\"badge down\">down</span>"),
        "{page}"
    );
    assert!(page.contains("catching up"), "{page}");
    assert!(page.contains(">diverged<"), "{page}");
    // Diverged and queued: both are said.
    assert!(page.contains("beta: 1 write queued"), "{page}");
    assert!(page.contains("refused &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
    assert!(!page.contains("<script>"), "{page}");
}

#[tokio::test]
async fn maintenance_queues_everything_and_resume_clears_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    let (status, body, _) = call(&admin, "POST", "/admin/v1/backend/alpha/maintenance").await;
    assert_eq!(status, 200, "{body}");
    assert!(dir.path().join("alpha/maintenance").exists());
    let alpha = replicator.replicas()[0].clone();
    assert!(alpha.in_maintenance() && alpha.is_queueing());
    let v = json(&call(&admin, "GET", "/status").await.1);
    assert_eq!(v["backends"][0]["sync"], "maintenance");
    assert!(
        v["summary"]["text"]
            .as_str()
            .expect("text")
            .contains("alpha: in maintenance")
    );
    // The flag survives a restart.
    let (_, body, _) = call(&admin, "POST", "/admin/v1/backend/alpha/resume").await;
    assert!(
        json(&body)["message"]
            .as_str()
            .expect("msg")
            .contains("resumed")
    );
    assert!(!dir.path().join("alpha/maintenance").exists());
    assert!(!alpha.in_maintenance());
    let (status, body, _) = call(&admin, "POST", "/admin/v1/backend/nope/resume").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("no backend named \\\"nope\\\" (configured: alpha, beta)"),
        "{body}"
    );
}

#[tokio::test]
async fn clear_diverged_needs_a_verify_begun_after_the_last_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    let alpha = replicator.replicas()[0].clone();
    let flag = dir.path().join("alpha/diverged");
    let (status, _, _) = call(&admin, "POST", "/admin/v1/queue/alpha/purge").await;
    assert_eq!(status, 200);
    assert!(flag.exists() && alpha.diverged().is_some());
    let now_ms = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_millis()
    };

    // Without the time the verify began: refused.
    let (status, body, _) = call(&admin, "POST", "/admin/v1/backend/alpha/clear-diverged").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("verified_from"), "{body}");
    // A verify that began before the drop cannot have seen it.
    let uri = format!(
        "/admin/v1/backend/alpha/clear-diverged?verified_from={}",
        1000
    );
    let (status, body, _) = call(&admin, "POST", &uri).await;
    assert_eq!(status, 409, "{body}");
    assert!(flag.exists() && alpha.diverged().is_some());
    // One begun after it (or in the same millisecond) clears the flag and its file.
    let uri = format!(
        "/admin/v1/backend/alpha/clear-diverged?verified_from={}",
        now_ms()
    );
    let (status, body, _) = call(&admin, "POST", &uri).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("no longer diverged"), "{body}");
    assert!(!flag.exists() && alpha.diverged().is_none());
    let (_, body, _) = call(&admin, "POST", &uri).await;
    assert!(body.contains("was not diverged"), "{body}");
    let (status, _, _) = call(&admin, "GET", &uri).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn a_flag_stays_when_another_backend_had_writes_queued_as_the_verify_began() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    let (alpha, beta) = (
        replicator.replicas()[0].clone(),
        replicator.replicas()[1].clone(),
    );
    write_one(&replicator, "m v=1 1\n").await;
    // A verify of alpha: its marks read before, then the clear with them.
    let verified = || async {
        let (_, body, _) = call(&admin, "GET", "/admin/v1/backend/alpha/divergence").await;
        let marks = json(&body)["marks"].as_str().expect("marks").to_owned();
        let uri = format!("/admin/v1/backend/alpha/clear-diverged?marks={marks}");
        let (status, body, _) = call(&admin, "POST", &uri).await;
        (status, body)
    };
    // A backend that is not diverged is said to be so, whatever the others' queues hold.
    let (status, body) = verified().await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("was not diverged"), "{body}");

    // alpha lost what it had queued; beta still has writes queued (they are on neither yet).
    let (status, _, _) = call(&admin, "POST", "/admin/v1/queue/alpha/purge").await;
    assert_eq!(status, 200);
    assert!(beta.queue().has_pending());
    let (status, body) = verified().await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("queued here for other backends"), "{body}");
    assert!(alpha.diverged().is_some());
    // With a time instead of marks, beta's queue now holds it back too.
    let uri = "/admin/v1/backend/alpha/clear-diverged?verified_from=99999999999999";
    let (status, body, _) = call(&admin, "POST", uri).await;
    assert_eq!(status, 409, "{body}");

    // Once beta's queue is empty, a verify begun then may clear alpha.
    let (status, _, _) = call(&admin, "POST", "/admin/v1/queue/beta/purge").await;
    assert_eq!(status, 200);
    beta.leave_queueing_if_drained();
    let (status, body) = verified().await;
    assert_eq!(status, 200, "{body}");
    assert!(alpha.diverged().is_none());
}

#[tokio::test]
async fn operations_posted_from_a_web_page_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    write_one(&replicator, "m v=1 1\n").await;
    let from_pages: [&[(&str, &str)]; 4] = [
        &[("Origin", "http://evil.example")],
        // A name rebound to this address makes the page's origin match the Host.
        &[
            ("Origin", "http://relay.example:8093"),
            ("Host", "relay.example:8093"),
        ],
        &[("Sec-Fetch-Site", "same-origin")],
        &[("Origin", "null")],
    ];
    for headers in from_pages {
        for path in [
            "/admin/v1/queue/beta/purge",
            "/admin/v1/backend/beta/maintenance",
            "/admin/v1/queues/changed",
        ] {
            let (status, body, _) = call_with(&admin, "POST", path, headers).await;
            assert_eq!(status, 403, "{path} {headers:?}: {body}");
            assert!(body.contains("no requests from web pages"), "{body}");
        }
    }
    let beta = &replicator.replicas()[1];
    assert!(!beta.in_maintenance());
    let v = json(&call(&admin, "GET", "/admin/v1/queue/beta").await.1);
    assert_eq!(v["depth"]["records"], 1, "nothing was purged");
    // Reading stays open to the page, and tools that send neither header still operate.
    let (status, _, _) = call_with(
        &admin,
        "GET",
        "/status",
        &[("Sec-Fetch-Site", "same-origin")],
    )
    .await;
    assert_eq!(status, 200);
    let (status, body, _) = call(&admin, "POST", "/admin/v1/queue/beta/purge").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn queue_api_lists_inspects_dumps_verifies_and_purges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    write_one(&replicator, "m v=1 1\n").await;
    write_one(&replicator, "m v=2 2\n").await;
    let v = json(&call(&admin, "GET", "/admin/v1/queue").await.1);
    assert_eq!(v[0]["backend"], "alpha");
    assert_eq!(v[0]["queue"]["records"], 2);
    assert_eq!(v[0]["dead_letters"]["records"], 0);

    let v = json(&call(&admin, "GET", "/admin/v1/queue/beta").await.1);
    assert_eq!(v["depth"]["records"], 2);
    assert_eq!(v["appended_records"], 2);
    assert_eq!(v["segments"].as_array().expect("segments").len(), 1);

    let (status, dump, _) = call(&admin, "GET", "/admin/v1/queue/beta/records").await;
    assert_eq!(status, 200);
    assert!(dump.contains("# handoff write db=db"), "{dump}");
    assert!(
        dump.contains("m v=1 1\n") && dump.contains("m v=2 2\n"),
        "{dump}"
    );
    let (_, _, headers) = call(&admin, "GET", "/admin/v1/queue/beta/records?max_bytes=10").await;
    assert_eq!(headers["x-influx-ha-truncated"], "true");
    for bad in ["max_bytes=ten", "max_bytes=-1", "max_bytes=999999999999"] {
        let (status, body, _) = call(
            &admin,
            "GET",
            &format!("/admin/v1/queue/beta/records?{bad}"),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("max_bytes must be a whole number"), "{body}");
    }
    let (status, body, _) = call(&admin, "POST", "/admin/v1/queue/beta/drain?wait=1m").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("wait must be a whole number"), "{body}");

    let (status, body, _) = call(&admin, "POST", "/admin/v1/queue/beta/verify").await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(v["valid_records"], 2);

    let (status, _, headers) = call(&admin, "GET", "/admin/v1/queue/beta/purge").await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    let v = json(&call(&admin, "POST", "/admin/v1/queue/beta/purge").await.1);
    assert_eq!(v["records"], 2);
    assert_eq!(v["queue"]["records"], 0);
    let beta = &replicator.replicas()[1];
    assert!(
        beta.diverged()
            .expect("diverged")
            .contains("purged its queue (2 records"),
        "{:?}",
        beta.diverged()
    );
    // Leaving queueing mode is its replay's part, once no send of a purged batch is in
    // flight (none runs here until now).
    assert!(beta.is_queueing());
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let replay = tokio::spawn(
        beta.clone()
            .replay(crate::shutdown::Shutdown::new(stop.subscribe())),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while beta.is_queueing() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an empty queue sends direct again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    replay.await.expect("replay ends");
    let diverged_file =
        std::fs::read_to_string(dir.path().join("beta/diverged")).expect("persisted");
    assert!(diverged_file.contains("purged"));

    let (status, body, _) = call(&admin, "POST", "/admin/v1/queue/alpha/drain?wait=0").await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body)["complete"],
        false,
        "nothing replays in this test"
    );
    call(&admin, "POST", "/admin/v1/backend/alpha/maintenance").await;
    let (status, body, _) = call(&admin, "POST", "/admin/v1/queue/alpha/drain").await;
    assert_eq!(status, 409);
    assert!(body.contains("in maintenance"), "{body}");

    let (status, _, _) = call(&admin, "GET", "/admin/v1/nothing/here").await;
    assert_eq!(status, 404);
    let (status, _, _) = call(&admin, "GET", "/admin/v1/backend/alpha/resume").await;
    assert_eq!(status, 405);
    let (status, _, _) = call(&admin, "GET", "/nothing").await;
    assert_eq!(status, 404);
    let (status, _, _) = call(&admin, "POST", "/status").await;
    assert_eq!(status, 405);
}

/// Files `line` (to `db`) as a dead letter of `to`.
async fn letter(to: &crate::write::replica::Replica, line: &str) {
    to.dead_letters()
        .append(&handoff::Record::Write {
            db: "db",
            rp: "",
            precision: "n",
            payload: line.as_bytes(),
        })
        .await
        .expect("appended");
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    let alpha = replicator.replicas()[0].clone();
    for line in ["m v=1 1\n", "m v=2 2\n"] {
        letter(&alpha, line).await;
    }
    let v = json(&call(&admin, "GET", "/admin/v1/deadletter").await.1);
    assert_eq!(v[0]["dead_letters"]["records"], 2);
    let dump = call(&admin, "GET", "/admin/v1/deadletter/alpha/records")
        .await
        .1;
    assert!(dump.contains("m v=2 2"), "{dump}");

    let v = json(
        &call(&admin, "POST", "/admin/v1/deadletter/alpha/replay")
            .await
            .1,
    );
    assert_eq!(v["records"], 2, "{v}");
    assert_eq!(v["queue"]["records"], 1, "merged into one batch: {v}");
    assert_eq!(alpha.dead_letters().stats().depth_records, 0);
    assert!(alpha.is_queueing());
    let queued = call(&admin, "GET", "/admin/v1/queue/alpha/records").await.1;
    assert!(queued.contains("m v=1 1\nm v=2 2\n"), "{queued}");

    letter(&alpha, "m v=3 3\n").await;
    let v = json(
        &call(&admin, "POST", "/admin/v1/deadletter/alpha/purge")
            .await
            .1,
    );
    assert_eq!(v["records"], 1);
    assert_eq!(alpha.dead_letters().stats().depth_records, 0);
}

/// A node whose backend `alpha` has one dead letter, and a `deadletter replay` of it polled
/// once (so begun, and not done at once).
async fn replay_begun(
    dir: &std::path::Path,
) -> (AdminHandler, Replicator, crate::http::HandlerFuture) {
    let (admin, replicator) = setup(dir);
    letter(&replicator.replicas()[0], "m v=1 1\n").await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/admin/v1/deadletter/alpha/replay")
        .body(empty())
        .expect("request");
    let mut running = admin.call(RequestId::new(), req);
    assert!(
        poll_once(running.as_mut()).await.is_pending(),
        "done at once"
    );
    (admin, replicator, running)
}

#[tokio::test]
async fn a_dead_letter_replay_whose_client_hangs_up_still_ends_its_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator, hung_up) = replay_begun(dir.path()).await;
    let alpha = replicator.replicas()[0].clone();
    // Dropped after its first poll: the client went away while the requeue ran.
    drop(hung_up);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while alpha.dead_letters().stats().depth_records > 0 || !alpha.queue().has_pending() {
        assert!(tokio::time::Instant::now() < deadline, "requeue not done");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Once the queue is emptied, nothing counted as in flight keeps the backend behind it.
    let (status, _, _) = call(&admin, "POST", "/admin/v1/queue/alpha/purge").await;
    assert_eq!(status, 200);
    alpha.leave_queueing_if_drained();
    assert!(!alpha.is_queueing(), "an append is still counted in flight");
}

/// Polls `f` once.
async fn poll_once<F: Future + ?Sized>(mut f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await
}

#[tokio::test]
async fn a_dead_letter_replay_is_waited_for_at_shutdown_and_refused_once_it_began() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator, running) = replay_begun(dir.path()).await;
    let alpha = replicator.replicas()[0].clone();
    // Shutdown waits for it before the queues close.
    let still = replicator
        .wait_for_deliveries(Duration::from_secs(60))
        .await;
    assert_eq!(still, 0);
    assert_eq!(alpha.dead_letters().stats().depth_records, 0);
    assert!(alpha.queue().has_pending());
    drop(running);
    let (status, body, _) = call(&admin, "POST", "/admin/v1/deadletter/alpha/replay").await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn a_dead_letter_replay_moves_what_was_there_when_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_admin, replicator) = setup(dir.path());
    let alpha = replicator.replicas()[0].clone();
    letter(&alpha, "m v=1 1\n").await;
    letter(&alpha, "m v=2 2\n").await;
    // As a replay that sends them again and has them refused again: every letter taken out
    // comes back as a new one.
    let refiling = tokio::spawn({
        let alpha = alpha.clone();
        async move {
            let mut seen = 0;
            loop {
                let acked = alpha.dead_letters().stats().acked_records;
                if acked > seen {
                    seen = acked;
                    letter(&alpha, "m v=3 3\n").await;
                }
                tokio::task::yield_now().await;
            }
        }
    });
    let moved = tokio::time::timeout(Duration::from_secs(30), alpha.requeue_dead_letters())
        .await
        .expect("the move ends")
        .expect("moved");
    refiling.abort();
    assert_eq!(moved, 2);
}

mod reload {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::admin::reload::{ReloadError, Reloader};
    use crate::config::Config;
    use crate::params::Consistency;
    use crate::state::{BackendState, StateBoard};
    use crate::write::Replicator;

    fn text(dir: &std::path::Path, backends: &[(&str, &str)], extra: &str) -> String {
        let mut t = format!(
            "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[queue]\nmin_free_disk = \"1MiB\"\nsegment_bytes = \"1MiB\"\n{extra}\n",
            dir.join("data").display().to_string()
        );
        for (name, host) in backends {
            t.push_str(&format!(
                "[[backend]]\nname = \"{name}\"\nurl = \"http://{host}:1\"\n"
            ));
        }
        t
    }

    #[tokio::test]
    async fn adds_and_removes_backends_and_refuses_bad_configs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("influx-ha.toml");
        let first = text(
            dir.path(),
            &[("alpha", "127.0.0.1"), ("beta", "127.0.0.2")],
            "",
        );
        std::fs::write(&path, &first).expect("write");
        let config = Config::from_toml(&first, "t").expect("valid");
        let clients = crate::node::backend_clients(&config).expect("clients");
        let replicator = Replicator::open(&config, &clients).expect("open");
        let board = StateBoard::new(
            clients
                .iter()
                .map(|c| BackendState::new(c.name(), c.url().to_string()))
                .collect(),
        );
        let (stop, _) = tokio::sync::broadcast::channel(1);
        let reloader = Reloader::new(
            path.clone(),
            config,
            replicator.clone(),
            Some(board.clone()),
            stop.clone(),
        );
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        reloader.on_reload(
            "counter",
            Box::new(move |_| {
                s.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        );
        let changed = Arc::new(AtomicUsize::new(0));
        let c = changed.clone();
        reloader.on_backends_changed(Box::new(move |_, replicas| {
            c.store(replicas.len(), Ordering::SeqCst);
        }));
        let names = |r: &Replicator| -> Vec<String> {
            r.replicas().iter().map(|r| r.name().to_owned()).collect()
        };

        // A bad file changes nothing.
        std::fs::write(&path, "data_dir = 3\n").expect("write");
        let err = reloader.reload().await.expect_err("invalid");
        assert!(matches!(err, ReloadError::Invalid(_)), "{err}");
        assert_eq!(names(&replicator), ["alpha", "beta"]);
        assert_eq!(seen.load(Ordering::SeqCst), 0);

        // A body limit above the running in-flight cap (which needs a restart) could never
        // be met: refused, though the file is valid on its own.
        let bigger = text(
            dir.path(),
            &[("alpha", "127.0.0.1"), ("beta", "127.0.0.2")],
            "",
        )
        .replace(
            "[http]\n",
            "[http]\nmax_body_bytes = \"64MiB\"\nmax_inflight_bytes = \"128MiB\"\n",
        );
        assert!(Config::from_toml(&bigger, "t").is_ok());
        std::fs::write(&path, &bigger).expect("write");
        let err = reloader.reload().await.expect_err("body over the cap");
        assert!(matches!(err, ReloadError::BodyOverInflight { .. }), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 0);

        // gamma added, beta removed, consistency, queue limits and a listener changed.
        let beta = replicator.replicas()[1].clone();
        let second = text(
            dir.path(),
            &[("gamma", "127.0.0.3"), ("alpha", "127.0.0.1")],
            "[write]\nconsistency = \"all\"\n[admin]\nbind = \"127.0.0.1:0\"\n[anti_entropy]\n",
        )
        .replace(
            "[queue]\n",
            "[queue]\nmax_bytes = \"5MiB\"\nmax_age = \"1h\"\n",
        )
        // Applied by the body-limits hook: not a restart of [http].
        .replace("[http]\n", "[http]\ninflight_wait = \"3s\"\n");
        std::fs::write(&path, &second).expect("write");
        let report = reloader.reload().await.expect("reloaded");
        assert_eq!(report.added, ["gamma"]);
        assert_eq!(report.removed, ["beta"]);
        assert_eq!(report.restart_needed, ["[admin]", "[anti_entropy]"]);
        assert_eq!(names(&replicator), ["gamma", "alpha"]);
        // A missing database is copied from the backends of the new set.
        for r in replicator.replicas().iter() {
            let others: Vec<&str> = ["gamma", "alpha"]
                .into_iter()
                .filter(|n| *n != r.name())
                .collect();
            assert_eq!(r.peer_names(), others, "{}", r.name());
        }
        assert!(
            reloader.current().anti_entropy.is_none(),
            "the running check (none) stays until a restart"
        );
        assert_eq!(replicator.default_consistency(), Consistency::All);
        for r in replicator.replicas().iter() {
            let limits = r.queue().limits();
            assert_eq!(limits.max_bytes, 5 << 20, "{}", r.name());
            assert_eq!(limits.max_age, Some(std::time::Duration::from_secs(3600)));
            assert_eq!(limits.min_free_bytes, 1 << 20);
        }
        let gamma = replicator.replicas()[0].clone();
        assert!(
            gamma
                .diverged()
                .expect("diverged")
                .starts_with("newly added")
        );
        assert!(dir.path().join("data/gamma/diverged").exists());
        let on_board: Vec<String> = board
            .load()
            .backends
            .iter()
            .map(|b| b.name.clone())
            .collect();
        assert_eq!(on_board, ["gamma", "alpha"]);
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert_eq!(changed.load(Ordering::SeqCst), 2);
        assert!(
            reloader.current().admin.is_none(),
            "the running listener stays"
        );

        // beta is still held (here by the test, in real life by a write in flight): adding it
        // back now would open its queue twice.
        let third = text(
            dir.path(),
            &[
                ("gamma", "127.0.0.3"),
                ("alpha", "127.0.0.1"),
                ("beta", "127.0.0.2"),
            ],
            "",
        );
        std::fs::write(&path, &third).expect("write");
        let err = reloader.reload().await.expect_err("still closing");
        assert!(
            matches!(err, ReloadError::StillClosing(ref n) if n == "beta"),
            "{err}"
        );
        drop(beta);
        let report = reloader.reload().await.expect("reloaded");
        assert_eq!(report.added, ["beta"]);
        // Back to what runs: nothing needs a restart any more.
        assert!(
            report.restart_needed.is_empty(),
            "{:?}",
            report.restart_needed
        );

        // A hook that refuses refuses the reload.
        reloader.on_reload("tls", Box::new(|_| Err("cannot read cert.pem".to_owned())));
        std::fs::write(&path, &first).expect("write");
        let err = reloader.reload().await.expect_err("refused");
        assert_eq!(err.to_string(), "tls: cannot read cert.pem");
        assert_eq!(names(&replicator), ["gamma", "alpha", "beta"]);
        let _ = stop.send(());
    }
}

mod command_line {
    use clap::Parser;

    use crate::admin::cli::{BackendCommand, CliError, Operation, QueueCommand, Target, run};
    use crate::cli::{Cli, Command};

    #[test]
    fn operator_commands_parse() {
        let cli = Cli::try_parse_from([
            "influx-ha",
            "queue",
            "drain",
            "influx-a",
            "--config",
            "x.toml",
            "--wait",
            "5",
        ])
        .expect("valid");
        let Command::Queue(q) = cli.command else {
            panic!("queue command");
        };
        assert_eq!(
            q.target.config.as_deref(),
            Some(std::path::Path::new("x.toml"))
        );
        assert!(
            matches!(q.command, QueueCommand::Drain { ref backend, wait: 5 } if backend == "influx-a")
        );
        let cli = Cli::try_parse_from([
            "influx-ha",
            "backend",
            "maintenance",
            "b",
            "--admin",
            "http://127.0.0.1:8093",
        ])
        .expect("valid");
        assert!(matches!(cli.command, Command::Backend(ref b)
            if matches!(b.command, BackendCommand::Maintenance { .. })
            && b.target.admin.as_deref() == Some("http://127.0.0.1:8093")));
        for ok in [
            &["influx-ha", "queue", "list", "-c", "x"][..],
            &["influx-ha", "queue", "inspect", "a", "--records", "-c", "x"],
            &["influx-ha", "queue", "verify", "a", "-c", "x"],
            &["influx-ha", "queue", "purge", "a", "--yes", "-c", "x"],
            &[
                "influx-ha",
                "deadletter",
                "list",
                "--records",
                "a",
                "-c",
                "x",
            ],
            &["influx-ha", "deadletter", "replay", "a", "-c", "x"],
            &["influx-ha", "deadletter", "purge", "a", "--yes", "-c", "x"],
            &["influx-ha", "backend", "resume", "a", "-c", "x"],
        ] {
            Cli::try_parse_from(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        assert!(
            Cli::try_parse_from(["influx-ha", "queue", "drain"]).is_err(),
            "backend required"
        );
    }

    #[test]
    fn purges_need_confirmation_and_a_target_is_required() {
        let none = Target {
            config: None,
            admin: None,
        };
        let err = run(
            &none,
            Operation::Queue(QueueCommand::Purge {
                backend: "a".into(),
                yes: false,
            }),
        )
        .expect_err("not confirmed");
        assert!(matches!(err, CliError::NotConfirmed(_)), "{err}");
        let err = run(&none, Operation::Queue(QueueCommand::List)).expect_err("no target");
        assert!(matches!(err, CliError::NoTarget), "{err}");
    }
}

#[tokio::test]
async fn operations_are_refused_once_the_queues_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin, replicator) = setup(dir.path());
    write_one(&replicator, "m v=1 1\n").await;
    // At shutdown the admin listener outlives the queues, for the peers' report.
    replicator.close();
    let (status, body, _) = call(&admin, "POST", "/admin/v1/queue/alpha/purge").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    let (status, _, _) = call(&admin, "POST", "/admin/v1/deadletter/alpha/replay").await;
    assert_eq!(status, 503);
    assert!(replicator.replicas()[0].diverged().is_none());
    let (status, _, _) = call(&admin, "GET", "/admin/v1/queue").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_commands_present_a_password_with_a_space_so_that_it_is_accepted() {
    use crate::auth::password::{MIN_ITERATIONS, PasswordHash};
    let users = [crate::auth::User {
        name: "ops".to_owned(),
        password_hash: PasswordHash::new(b"correct horse", MIN_ITERATIONS).expect("hash"),
    }];
    let authenticator = crate::auth::Authenticator::new(&users, &[]);
    let value = super::cli::authorization(None, Some("ops".into()), Some("correct horse".into()))
        .expect("a header");
    assert!(value.is_sensitive());
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    assert_eq!(
        authenticator
            .authenticate(&headers, None)
            .await
            .map(|p| p.name.to_string()),
        Ok("ops".to_owned())
    );
}
