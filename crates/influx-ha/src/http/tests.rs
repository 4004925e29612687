use std::sync::Mutex;
use std::time::Duration;

use http_body_util::{BodyExt, Full};

use super::*;

/// db, rp, precision, consistency and body of a write that reached the seam.
type Seen = (String, Option<String>, String, Option<String>, Bytes);

/// Records what reached the write seam and answers with a preset result.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    answer: Option<RequestError>,
}

impl WriteHandler for Recorder {
    async fn write(&self, r: WriteRequest) -> Result<(), RequestError> {
        self.seen.lock().expect("not poisoned").push((
            r.db,
            r.rp,
            r.precision,
            r.consistency,
            r.body.data,
        ));
        match &self.answer {
            None => Ok(()),
            Some(e) => Err(e.clone()),
        }
    }
}

fn service<W: WriteHandler>(writer: W, surface: Surface) -> Arc<HttpService<W>> {
    Arc::new(HttpService {
        surface,
        limits: body::SharedLimits::new(body::BodyLimits {
            max_body_bytes: 1000,
            read_timeout: Duration::from_secs(5),
            inflight_wait: Duration::from_secs(1),
        }),
        inflight: InflightBytes::new(10_000),
        health: Health::new(),
        writer,
        query: None,
        admin: None,
        observer: None,
        guard: Default::default(),
    })
}

fn main_service<W: WriteHandler>(writer: W) -> Arc<HttpService<W>> {
    service(writer, Surface::Main { with_admin: true })
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

async fn call<W: WriteHandler>(
    svc: &Arc<HttpService<W>>,
    method: &str,
    uri: &str,
    body: &'static [u8],
) -> Answer {
    call_with(svc, method, uri, &[], body).await
}

async fn call_with<W: WriteHandler>(
    svc: &Arc<HttpService<W>>,
    method: &str,
    uri: &str,
    headers: &[(&'static str, &'static str)],
    body: &'static [u8],
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from_static(body)))
        .expect("valid request");
    let resp = svc.clone().handle(req).await;
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.expect("in-memory").to_bytes().to_vec(),
    }
}

fn assert_influx_headers(a: &Answer) {
    assert_eq!(a.headers["x-influxdb-build"], "OSS");
    assert_eq!(a.headers["x-influxdb-version"], "1.6.7~rc0");
    let id = a.headers["request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 36);
    assert_eq!(a.headers["x-request-id"], id);
}

#[tokio::test]
async fn ping_answers_204_with_influxdb_headers() {
    let svc = main_service(NotReplicating);
    for method in ["GET", "HEAD"] {
        let a = call(&svc, method, "/ping", b"").await;
        assert_eq!(a.status, 204);
        assert!(a.body.is_empty());
        assert_eq!(a.headers["content-type"], "application/json");
        assert_influx_headers(&a);
    }
    let a = call(&svc, "GET", "/ping?verbose=true", b"").await;
    assert_eq!(a.status, 204);
    let a = call(&svc, "POST", "/ping", b"").await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "GET, HEAD");
    assert_eq!(a.body, b"Method Not Allowed\n");
}

#[tokio::test]
async fn client_request_ids_are_echoed() {
    let svc = main_service(NotReplicating);
    let a = call_with(
        &svc,
        "GET",
        "/ping",
        &[("request-id", "abc"), ("x-request-id", "xyz")],
        b"",
    )
    .await;
    assert_eq!(a.headers["request-id"], "xyz");
    assert_eq!(a.headers["x-request-id"], "xyz");
    let a = call_with(&svc, "POST", "/write", &[("request-id", "abc")], b"").await;
    assert_eq!(a.headers["request-id"], "abc");
}

#[tokio::test]
async fn request_ids_differ_per_request() {
    let svc = main_service(NotReplicating);
    let a = call(&svc, "GET", "/ping", b"").await;
    let b = call(&svc, "GET", "/ping", b"").await;
    assert_ne!(a.headers["request-id"], b.headers["request-id"]);
}

#[tokio::test]
async fn health_follows_readiness() {
    let svc = main_service(NotReplicating);
    let a = call(&svc, "GET", "/health", b"").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        b"{\"status\":\"pass\",\"message\":\"ready for writes\"}\n"
    );
    assert_eq!(a.headers["content-type"], "application/json");
    assert_influx_headers(&a);

    svc.health
        .set_unavailable("no queue can take data: disk full");
    let a = call(&svc, "GET", "/health", b"").await;
    assert_eq!(a.status, 503);
    assert_eq!(
        a.body,
        b"{\"status\":\"fail\",\"message\":\"no queue can take data: disk full\"}\n"
    );
    svc.health.set_draining();
    let a = call(&svc, "HEAD", "/health", b"").await;
    assert_eq!(a.status, 503);
    let a = call(&svc, "GET", "/health", b"").await;
    assert_eq!(
        a.body,
        b"{\"status\":\"fail\",\"message\":\"shutting down\"}\n"
    );
}

#[tokio::test]
async fn write_passes_checked_requests_to_the_handler() {
    let svc = main_service(Recorder::default());
    let a = call(
        &svc,
        "POST",
        "/write?db=telegraf&rp=autogen&precision=s&consistency=all&u=user&p=secret",
        b"cpu v=1 1\n",
    )
    .await;
    assert_eq!(a.status, 204);
    assert!(a.body.is_empty());
    assert_eq!(a.headers["content-type"], "application/json");
    assert_influx_headers(&a);
    let seen = svc.writer.seen.lock().expect("not poisoned").clone();
    assert_eq!(
        seen,
        [(
            "telegraf".to_owned(),
            Some("autogen".to_owned()),
            "s".to_owned(),
            Some("all".to_owned()),
            Bytes::from_static(b"cpu v=1 1\n")
        )]
    );

    let a = call(&svc, "POST", "/write?db=x&rp=", b"").await;
    assert_eq!(a.status, 204);
    let seen = svc.writer.seen.lock().expect("not poisoned").clone();
    assert_eq!(
        seen[1],
        ("x".to_owned(), None, String::new(), None, Bytes::new())
    );
}

#[tokio::test]
async fn write_handler_errors_become_influxdb_answers() {
    let svc = main_service(Recorder {
        answer: Some(RequestError::QueuedOnly),
        ..Recorder::default()
    });
    let a = call(&svc, "POST", "/write?db=x", b"cpu v=1").await;
    assert_eq!(a.status, 500);
    assert_eq!(
        a.body,
        b"{\"error\":\"write failed: hinted handoff queue not empty\"}\n"
    );
    assert_eq!(
        a.headers["x-influxdb-error"],
        "write failed: hinted handoff queue not empty"
    );
    assert_influx_headers(&a);
}

#[tokio::test]
async fn write_checks_in_influxdb_order() {
    let svc = main_service(Recorder::default());
    // No db: 400 before the body is looked at.
    let a = call_with(
        &svc,
        "POST",
        "/write",
        &[("content-encoding", "gzip")],
        b"garbage",
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body, b"{\"error\":\"database is required\"}\n");
    assert_eq!(a.headers["x-influxdb-error"], "database is required");
    assert_influx_headers(&a);
    let a = call(&svc, "POST", "/write?db=", b"").await;
    assert_eq!(a.body, b"{\"error\":\"database is required\"}\n");

    // Body too large.
    let big: &'static [u8] = Box::leak(vec![b'a'; 1001].into_boxed_slice());
    let a = call(&svc, "POST", "/write?db=x", big).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.body, b"{\"error\":\"Request Entity Too Large\"}\n");
    let a = call_with(
        &svc,
        "POST",
        "/write?db=x",
        &[("content-length", "30000000")],
        b"",
    )
    .await;
    assert_eq!(a.status, 413);

    // Invalid gzip.
    let a = call_with(
        &svc,
        "POST",
        "/write?db=x",
        &[("content-encoding", "gzip")],
        b"abc",
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body, b"{\"error\":\"unexpected EOF\"}\n");
    let a = call_with(
        &svc,
        "POST",
        "/write?db=x",
        &[("content-encoding", "gzip")],
        b"abcdefghijklmnop",
    )
    .await;
    assert_eq!(a.body, b"{\"error\":\"gzip: invalid header\"}\n");
    assert!(svc.writer.seen.lock().expect("not poisoned").is_empty());
}

#[tokio::test]
async fn not_replicating_is_honest() {
    let svc = main_service(NotReplicating);
    let a = call(&svc, "POST", "/write?db=x", b"cpu v=1 1\n").await;
    assert_eq!(a.status, 501);
    assert_eq!(
        a.body,
        b"{\"error\":\"influx-ha cannot replicate writes yet: nothing was written\"}\n"
    );
    // An empty body is a successful no-op, as in 1.6.
    let a = call(&svc, "POST", "/write?db=x", b"").await;
    assert_eq!(a.status, 204);
    let a = call(&svc, "POST", "/write?db=x&consistency=bogus", b"").await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body, b"{\"error\":\"invalid consistency level\"}\n");
    let a = call(&svc, "POST", "/write?db=x&consistency=QUORUM", b"").await;
    assert_eq!(a.status, 204);
}

#[tokio::test]
async fn write_methods() {
    let svc = main_service(NotReplicating);
    for method in ["GET", "PUT", "DELETE", "PATCH", "HEAD"] {
        let a = call(&svc, method, "/write?db=x", b"").await;
        assert_eq!(a.status, 405, "{method}");
        assert_eq!(a.headers["allow"], "OPTIONS, POST");
        assert_eq!(a.headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(a.headers["x-content-type-options"], "nosniff");
        assert_eq!(a.headers["x-influxdb-version"], "1.6.7~rc0");
        assert!(!a.headers.contains_key("request-id"));
        if method != "HEAD" {
            assert_eq!(a.body, b"Method Not Allowed\n");
        }
    }
    let a = call(&svc, "OPTIONS", "/write", b"").await;
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty());
    assert_influx_headers(&a);
    assert!(!a.headers.contains_key("content-type"));
}

#[tokio::test]
async fn unknown_paths_are_404_like_go() {
    let svc = main_service(NotReplicating);
    for path in ["/nosuch", "/api/v2/query", "/write/", "/pingx"] {
        let a = call(&svc, "POST", path, b"").await;
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(a.body, b"404 page not found\n");
        assert_eq!(a.headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(a.headers["x-influxdb-build"], "OSS");
        assert!(!a.headers.contains_key("request-id"));
    }
}

#[tokio::test]
async fn unbuilt_endpoints_answer_501() {
    let svc = main_service(NotReplicating);
    let a = call(&svc, "GET", "/query?q=SHOW+DATABASES", b"").await;
    assert_eq!(a.status, 501);
    assert_eq!(
        a.body,
        b"{\"error\":\"influx-ha cannot route queries yet\"}\n"
    );
    let a = call(&svc, "DELETE", "/query", b"").await;
    assert_eq!(a.status, 405);
    for path in ["/", "/status", "/metrics"] {
        let a = call(&svc, "GET", path, b"").await;
        assert_eq!(a.status, 501, "{path}");
    }
    // With a separate admin listener the main one does not serve the admin paths ...
    let main_only = service(NotReplicating, Surface::Main { with_admin: false });
    assert_eq!(call(&main_only, "GET", "/status", b"").await.status, 404);
    // ... and the admin listener serves no InfluxDB API.
    let admin = service(NotReplicating, Surface::Admin);
    assert_eq!(call(&admin, "GET", "/status", b"").await.status, 501);
    assert_eq!(call(&admin, "GET", "/ping", b"").await.status, 204);
    assert_eq!(call(&admin, "GET", "/health", b"").await.status, 200);
    assert_eq!(call(&admin, "POST", "/write?db=x", b"").await.status, 404);
    assert_eq!(call(&admin, "GET", "/query", b"").await.status, 404);
}

#[tokio::test]
async fn overload_answers_503_not_4xx() {
    let svc = Arc::new(HttpService {
        surface: Surface::Main { with_admin: false },
        limits: body::SharedLimits::new(body::BodyLimits {
            max_body_bytes: 100,
            read_timeout: Duration::from_secs(5),
            inflight_wait: Duration::ZERO,
        }),
        inflight: InflightBytes::new(100),
        health: Health::new(),
        writer: Recorder::default(),
        query: None,
        admin: None,
        observer: None,
        guard: Default::default(),
    });
    // Hold 95 bytes in flight.
    let mut held = body::InflightPermit::default();
    svc.inflight.try_grow(&mut held, 95).expect("fits");
    let a = call(&svc, "POST", "/write?db=x", b"cpu v=1 1\n").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.headers["retry-after"], "1");
    assert!(
        a.body
            .starts_with(b"{\"error\":\"too many request bytes in flight")
    );
    drop(held);
    let a = call(&svc, "POST", "/write?db=x", b"cpu v=1 1\n").await;
    assert_eq!(a.status, 204);
}

#[tokio::test]
async fn v2_write_maps_bucket_and_precision_as_influxdb_1_8() {
    let svc = main_service(Recorder::default());
    for (query, db, rp, precision) in [
        (
            "bucket=telegraf/autogen&org=ignored&precision=ns",
            "telegraf",
            Some("autogen"),
            "n",
        ),
        ("bucket=telegraf&precision=us", "telegraf", None, "u"),
        ("bucket=telegraf/&precision=ms", "telegraf", None, "ms"),
        (
            "bucket=tele%2Fgraf/rp&precision=s",
            "tele",
            Some("graf/rp"),
            "s",
        ),
        ("bucket=db", "db", None, ""),
    ] {
        let uri: &'static str = Box::leak(format!("/api/v2/write?{query}").into_boxed_str());
        let a = call(&svc, "POST", uri, b"cpu v=1 1\n").await;
        assert_eq!(a.status, 204, "{query}");
        assert_influx_headers(&a);
        let seen = svc
            .writer
            .seen
            .lock()
            .expect("not poisoned")
            .pop()
            .expect("one write");
        assert_eq!(seen.0, db, "{query}");
        assert_eq!(seen.1.as_deref(), rp, "{query}");
        assert_eq!(seen.2, precision, "{query}");
    }
}

#[tokio::test]
async fn v2_write_errors_use_influxdb_1_8_texts() {
    let svc = main_service(Recorder::default());
    let a = call(&svc, "POST", "/api/v2/write?bucket=db&precision=h", b"").await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body,
        br#"{"error":"invalid precision \"h\" (use ns, us, ms or s)"}"#
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>()
    );
    let a = call(&svc, "POST", "/api/v2/write", b"").await;
    assert_eq!(a.status, 404);
    assert_eq!(
        String::from_utf8_lossy(&a.body),
        "{\"error\":\"bucket name \\\"\\\" is missing a slash; not in \\\"database/retention-policy\\\" format\"}\n"
    );
    let a = call(&svc, "POST", "/api/v2/write?bucket=/autogen", b"").await;
    assert_eq!(a.status, 404);
    assert_eq!(
        String::from_utf8_lossy(&a.body),
        "{\"error\":\"bucket name \\\"/autogen\\\" is in db/rp form but has an empty database\"}\n"
    );
    let a = call(&svc, "GET", "/api/v2/write?bucket=db", b"").await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "OPTIONS, POST");
    assert!(svc.writer.seen.lock().expect("not poisoned").is_empty());
}

/// Answers every request with its method and path, to show what was delegated.
struct Echo;

impl Handler for Echo {
    fn call(&self, _id: RequestId, req: Request<HandlerBody>) -> HandlerFuture {
        Box::pin(async move {
            let text = format!("{} {}", req.method(), req.uri().path());
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let text = format!("{text} {}", body.map_or(0, |b| b.len()));
            Response::new(full(text))
        })
    }
}

#[tokio::test]
async fn query_and_admin_paths_reach_their_handlers() {
    let mut main = HttpService {
        surface: Surface::Main { with_admin: true },
        limits: body::SharedLimits::new(body::BodyLimits {
            max_body_bytes: 1000,
            read_timeout: Duration::from_secs(5),
            inflight_wait: Duration::from_secs(1),
        }),
        inflight: InflightBytes::new(10_000),
        health: Health::new(),
        writer: NotReplicating,
        query: Some(Arc::new(Echo)),
        admin: Some(Arc::new(Echo)),
        observer: None,
        guard: Default::default(),
    };
    let svc = Arc::new(HttpService {
        query: main.query.clone(),
        admin: main.admin.clone(),
        observer: None,
        surface: main.surface,
        limits: main.limits.clone(),
        inflight: main.inflight.clone(),
        health: main.health.clone(),
        writer: NotReplicating,
        guard: Default::default(),
    });
    let text = |a: Answer| String::from_utf8(a.body).expect("utf-8");
    assert_eq!(
        text(call(&svc, "POST", "/query?q=x", b"abc").await),
        "POST /query 3"
    );
    assert_eq!(
        text(call(&svc, "GET", "/api/v2/query", b"").await),
        "GET /api/v2/query 0"
    );
    assert_eq!(call(&svc, "PUT", "/query", b"").await.status, 405);
    assert_eq!(
        text(call(&svc, "GET", "/status", b"").await),
        "GET /status 0"
    );
    assert_eq!(
        text(call(&svc, "POST", "/admin/x", b"").await),
        "POST /admin/x 0"
    );
    assert_eq!(call(&svc, "GET", "/other", b"").await.status, 404);
    // A separate admin listener takes every path but /ping and /health.
    main.surface = Surface::Admin;
    let admin = Arc::new(main);
    assert_eq!(
        text(call(&admin, "GET", "/anything", b"").await),
        "GET /anything 0"
    );
    assert_eq!(call(&admin, "GET", "/ping", b"").await.status, 204);
}

/// Answers with the request's URI, whether it has an `Authorization` header, and the
/// authenticated principal.
struct ShowCredentials;

impl Handler for ShowCredentials {
    fn call(&self, _id: RequestId, req: Request<HandlerBody>) -> HandlerFuture {
        Box::pin(async move {
            let principal = req
                .extensions()
                .get::<crate::auth::Principal>()
                .map_or("-".to_owned(), |p| p.name.to_string());
            let untrusted = req
                .extensions()
                .get::<crate::peers::UntrustedNotice>()
                .map_or("", |_| " untrusted");
            let text = format!(
                "{} {} {}{untrusted}",
                req.uri(),
                req.headers().contains_key(http::header::AUTHORIZATION),
                principal
            );
            Response::new(full(text))
        })
    }
}

fn guarded(admin_listener: bool, surface: Surface) -> Arc<HttpService<Recorder>> {
    guarded_with_admins(admin_listener, surface, None)
}

fn guarded_with_admins(
    admin_listener: bool,
    surface: Surface,
    admins: Option<&[&str]>,
) -> Arc<HttpService<Recorder>> {
    use crate::auth::password::{MIN_ITERATIONS, PasswordHash};
    let users = [
        crate::auth::User {
            name: "u1".to_owned(),
            password_hash: PasswordHash::new(b"pw", MIN_ITERATIONS).expect("hash"),
        },
        crate::auth::User {
            name: "ops".to_owned(),
            password_hash: PasswordHash::new(b"pw", MIN_ITERATIONS).expect("hash"),
        },
    ];
    let svc = service(Recorder::default(), surface);
    let mut svc = Arc::into_inner(svc).expect("sole owner");
    svc.query = Some(Arc::new(ShowCredentials));
    svc.admin = Some(Arc::new(ShowCredentials));
    svc.guard = guard::Guard::new(Some(guard::AuthSettings {
        authenticator: crate::auth::Authenticator::new(&users, &[]),
        admin_listener,
        admins: admins.map(|a| a.iter().map(|n| (*n).to_owned()).collect()),
    }));
    Arc::new(svc)
}

#[tokio::test]
async fn only_the_named_admins_may_use_the_admin_api() {
    let svc = guarded_with_admins(true, Surface::Main { with_admin: true }, Some(&["ops"]));
    for (user, path, status) in [
        ("u1", "/admin/v1/queue", 403),
        ("u1", "/admin/v1/queue/a/purge", 403),
        ("u1", "/status", 200),
        ("u1", "/metrics", 200),
        // The peers' queue reports: a peer's user need not be an admin.
        ("u1", "/admin/v1/queues", 200),
        ("ops", "/admin/v1/queue", 200),
        ("ops", "/status", 200),
    ] {
        let uri = format!("{path}?u={user}&p=pw");
        let a = call(&svc, "GET", &uri, b"").await;
        assert_eq!(a.status, status, "{user} {path}");
        if status == 403 {
            let text = String::from_utf8(a.body).expect("utf-8");
            assert!(text.contains("u1 may not use the admin API"), "{text}");
        }
    }
    // A notice from a user not named is taken as news only: its report is not trusted.
    let a = call(&svc, "POST", "/admin/v1/queues/changed?u=u1&p=pw", b"").await;
    assert_eq!(a.status, 200);
    assert!(
        String::from_utf8_lossy(&a.body).ends_with(" untrusted"),
        "{:?}",
        a.body
    );
    let a = call(&svc, "POST", "/admin/v1/queues/changed?u=ops&p=pw", b"").await;
    assert!(
        !String::from_utf8_lossy(&a.body).ends_with(" untrusted"),
        "{:?}",
        a.body
    );
    // Without `admins`, every user may.
    let svc = guarded(true, Surface::Main { with_admin: true });
    let a = call(&svc, "GET", "/admin/v1/queue?u=u1&p=pw", b"").await;
    assert_eq!(a.status, 200);
    // An admin listener that asks for no credentials stays open.
    let svc = guarded_with_admins(false, Surface::Admin, Some(&["ops"]));
    let a = call(&svc, "GET", "/admin/v1/queue", b"").await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn handlers_never_see_client_credentials() {
    let text = |a: Answer| String::from_utf8(a.body).expect("utf-8");
    let svc = guarded(true, Surface::Main { with_admin: true });
    let a = call(&svc, "GET", "/query?q=x&u=u1&p=pw&db=d", b"").await;
    assert_eq!(text(a), "/query?q=x&db=d false u1");
    let a = call_with(
        &svc,
        "GET",
        "/status",
        &[("authorization", "Basic dTE6cHc=")],
        b"",
    )
    .await;
    assert_eq!(text(a), "/status false u1");
    // Without authentication, credentials are still removed before the handler.
    let svc = service(Recorder::default(), Surface::Main { with_admin: true });
    let mut svc = Arc::into_inner(svc).expect("sole owner");
    svc.query = Some(Arc::new(ShowCredentials));
    let svc = Arc::new(svc);
    let a = call_with(
        &svc,
        "GET",
        "/query?u=x&p=y",
        &[("authorization", "Basic dTE6cHc=")],
        b"",
    )
    .await;
    assert_eq!(text(a), "/query false -");
}

#[tokio::test]
async fn what_needs_credentials() {
    let svc = guarded(true, Surface::Main { with_admin: true });
    for (method, path, status) in [
        ("POST", "/write?db=x", 401),
        ("POST", "/api/v2/write?bucket=x", 401),
        ("POST", "/api/v1/prom/write?db=x", 401),
        ("GET", "/query?q=x", 401),
        ("POST", "/query", 401),
        ("GET", "/api/v2/query", 401),
        ("GET", "/status", 401),
        ("GET", "/metrics", 401),
        ("GET", "/", 401),
        ("POST", "/admin/queue/purge", 401),
        ("GET", "/ping", 204),
        ("HEAD", "/ping", 204),
        ("GET", "/health", 200),
        ("GET", "/write", 405),
        ("OPTIONS", "/write", 200),
        ("GET", "/nosuch", 404),
    ] {
        let a = call(&svc, method, path, b"").await;
        assert_eq!(a.status, status, "{method} {path}");
        if status == 401 {
            assert_eq!(a.headers["www-authenticate"], "Basic realm=\"InfluxDB\"");
            assert!(a.headers.get("x-influxdb-error").is_none());
            assert_eq!(
                a.body,
                b"{\"error\":\"unable to parse authentication credentials\"}\n"
            );
        }
    }
    let a = call(&svc, "POST", "/write?db=x&u=u1&p=pw", b"m v=1").await;
    assert_eq!(a.status, 204);
    assert_eq!(svc.writer.seen.lock().expect("not poisoned").len(), 1);
    // The admin listener, with and without `admin_listener`.
    let on = guarded(true, Surface::Admin);
    assert_eq!(call(&on, "GET", "/status", b"").await.status, 401);
    assert_eq!(call(&on, "GET", "/health", b"").await.status, 200);
    let off = guarded(false, Surface::Admin);
    assert_eq!(call(&off, "GET", "/status", b"").await.status, 200);
}

#[tokio::test]
async fn rate_limits_answer_503_with_retry_after_per_client() {
    use crate::config::{RateLimit, RateLimitKey};
    let svc = service(Recorder::default(), Surface::Main { with_admin: true });
    svc.guard.set_rate_limit(Some(RateLimit {
        requests_per_second: 0.01,
        burst: 2,
        per: RateLimitKey::Address,
    }));
    let from = |ip: [u8; 4], method: &str, uri: &str| {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::from_static(b"m v=1")))
            .expect("request");
        req.extensions_mut()
            .insert(guard::ClientAddr(std::net::SocketAddr::from((ip, 5000))));
        req
    };
    let status = |r: &Response<ResponseBody>| r.status().as_u16();
    for _ in 0..2 {
        let r = svc
            .clone()
            .handle(from([10, 0, 0, 1], "POST", "/write?db=x"))
            .await;
        assert_eq!(status(&r), 204);
    }
    let r = svc
        .clone()
        .handle(from([10, 0, 0, 1], "POST", "/write?db=x"))
        .await;
    assert_eq!(status(&r), 503);
    assert_eq!(r.headers()["retry-after"], "100");
    let body = r.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        &body[..],
        b"{\"error\":\"rate limit exceeded: retry after 100s\"}\n"
    );
    // /ping and /health are never limited; another address has its own bucket.
    let r = svc
        .clone()
        .handle(from([10, 0, 0, 1], "GET", "/ping"))
        .await;
    assert_eq!(status(&r), 204);
    let r = svc
        .clone()
        .handle(from([10, 0, 0, 2], "POST", "/write?db=x"))
        .await;
    assert_eq!(status(&r), 204);
    assert_eq!(svc.writer.seen.lock().expect("not poisoned").len(), 3);
}

#[tokio::test]
async fn body_limits_change_for_the_next_request() {
    let svc = main_service(Recorder::default());
    let body: &'static [u8] = b"cpu value=1 1\ncpu value=2 2\ncpu value=3 3\n";
    assert_eq!(call(&svc, "POST", "/write?db=x", body).await.status, 204);
    svc.limits.set(body::BodyLimits {
        max_body_bytes: 10,
        ..svc.limits.get()
    });
    let a = call(&svc, "POST", "/write?db=x", body).await;
    assert_eq!(a.status, 413);
    assert_eq!(svc.writer.seen.lock().expect("not poisoned").len(), 1);
}

#[tokio::test]
async fn a_remote_write_the_body_limit_takes_is_never_refused_for_its_decoding_alone() {
    use crate::ingest::promwrite::{Label, Sample, TimeSeries, WriteRequest as PromRequest};
    use prost::Message;
    let req = PromRequest {
        timeseries: (0..3)
            .map(|i| TimeSeries {
                labels: vec![
                    Label {
                        name: b"__name__".to_vec(),
                        value: b"up".to_vec(),
                    },
                    Label {
                        name: b"instance".to_vec(),
                        value: format!("host-{i}:9100").into_bytes(),
                    },
                ],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
            })
            .collect(),
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("compress");
    // Room for the body, but not for all that decoding builds (the decoded bytes, the
    // structs, the bound on the lines), on an otherwise idle relay.
    let capacity = body.len() + 200;
    let e = crate::ingest::promwrite::expansion(&req.encode_to_vec()).expect("well formed");
    assert!(
        body.len() + req.encoded_len() + e.structs + e.lines > capacity,
        "{e:?}"
    );
    let svc = main_service(Recorder::default());
    let mut svc = Arc::into_inner(svc).expect("sole owner");
    svc.inflight = InflightBytes::new(capacity);
    let svc = Arc::new(svc);
    let body: &'static [u8] = Box::leak(body.into_boxed_slice());
    let a = call(&svc, "POST", "/api/v1/prom/write?db=x", body).await;
    assert_eq!(a.status, 204, "{}", String::from_utf8_lossy(&a.body));
    let seen = svc.writer.seen.lock().expect("not poisoned");
    assert_eq!(seen[0].4.iter().filter(|&&b| b == b'\n').count(), 3);
}
