//! The client and the classifier against fake in-process InfluxDB servers, with faults.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;
use crate::config::{Credentials, Secret};

/// What the fake server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

/// The fake server's answer to every request.
#[derive(Clone)]
enum Reply {
    Answer {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: Bytes,
    },
    /// Never answer.
    Stall,
}

fn json_error(status: u16, message: &'static str) -> Reply {
    Reply::Answer {
        status,
        headers: vec![
            ("content-type", "application/json"),
            ("x-influxdb-error", message),
        ],
        body: Bytes::from(crate::go_json::error_body(message.as_bytes())),
    }
}

struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

async fn fake(reply: Reply) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen2, conns2) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            conns2.fetch_add(1, Ordering::SeqCst);
            let seen = seen2.clone();
            let reply = reply.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let seen = seen.clone();
                let reply = reply.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let header = |name| {
                        parts
                            .headers
                            .get(name)
                            .map(|v: &HeaderValue| v.to_str().unwrap_or("<bytes>").to_owned())
                    };
                    seen.lock().expect("not poisoned").push(Seen {
                        method: parts.method.clone(),
                        uri: parts.uri.to_string(),
                        authorization: header(AUTHORIZATION),
                        content_type: header(CONTENT_TYPE),
                        body,
                    });
                    match reply {
                        Reply::Stall => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                        Reply::Answer {
                            status,
                            headers,
                            body,
                        } => {
                            let mut resp = Response::new(Full::new(body));
                            *resp.status_mut() =
                                StatusCode::from_u16(status).expect("valid status");
                            for (k, v) in headers {
                                resp.headers_mut().insert(k, HeaderValue::from_static(v));
                            }
                            Ok(resp)
                        }
                    }
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Fake {
        addr,
        seen,
        connections,
    }
}

fn backend_config(addr: SocketAddr, credentials: bool) -> BackendConfig {
    BackendConfig {
        name: "influx-a".to_owned(),
        url: BackendUrl {
            scheme: Scheme::Http,
            host: addr.ip().to_string(),
            port: addr.port(),
            base_path: String::new(),
        },
        credentials: credentials.then(|| Credentials {
            username: "relay".to_owned(),
            password: Secret::new("hunter2"),
        }),
        ca_file: None,
    }
}

/// Long enough never to pass on a loaded machine; the timeout test sets a short one itself.
const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(60),
    request: Duration::from_secs(60),
};

fn client(addr: SocketAddr) -> BackendClient {
    BackendClient::new(&backend_config(addr, true), TIMEOUTS).expect("http backend")
}

async fn outcome_of(reply: Reply) -> WriteOutcome {
    let f = fake(reply).await;
    let result = client(f.addr)
        .write("db", None, "", Bytes::from_static(b"cpu v=1 1\n"))
        .await;
    classify(&result)
}

#[tokio::test]
async fn write_sends_service_credentials_and_parameters() {
    let f = fake(Reply::Answer {
        status: 204,
        headers: vec![],
        body: Bytes::new(),
    })
    .await;
    let c = client(f.addr);
    let result = c
        .write(
            "my db",
            Some("autogen"),
            "s",
            Bytes::from_static(b"cpu v=1 1\n"),
        )
        .await;
    assert_eq!(classify(&result), WriteOutcome::Ok);
    let seen = f.seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].uri, "/write?db=my%20db&rp=autogen&precision=s");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Basic cmVsYXk6aHVudGVyMg==")
    );
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(seen[0].body, "cpu v=1 1\n");

    // Empty rp and precision are left out.
    c.write("db", Some(""), "", Bytes::new())
        .await
        .expect("answer");
    let seen = f.seen.lock().expect("not poisoned").clone();
    assert_eq!(seen[1].uri, "/write?db=db");
}

#[tokio::test]
async fn no_credentials_no_authorization() {
    let f = fake(Reply::Answer {
        status: 204,
        headers: vec![],
        body: Bytes::new(),
    })
    .await;
    let c = BackendClient::new(&backend_config(f.addr, false), TIMEOUTS).expect("client");
    c.ping().await.expect("answer");
    let seen = f.seen.lock().expect("not poisoned").clone();
    assert_eq!(seen[0].uri, "/ping");
    assert_eq!(seen[0].authorization, None);
}

#[tokio::test]
async fn a_client_with_credentials_does_not_show_them() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("address");
    let shown = format!("{:?}", client(addr));
    // The password, and the Basic header made of it (`relay:hunter2`).
    for secret in ["hunter2", "cmVsYXk6aHVudGVyMg=="] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("influx-a"), "{shown}");
}

#[tokio::test]
async fn query_is_form_encoded() {
    let f = fake(Reply::Answer {
        status: 200,
        headers: vec![],
        body: Bytes::from_static(b"{\"results\":[{\"statement_id\":0}]}\n"),
    })
    .await;
    let answer = client(f.addr)
        .query("CREATE DATABASE \"tele graf\"", None)
        .await
        .expect("answer");
    assert_eq!(answer.status, StatusCode::OK);
    let seen = f.seen.lock().expect("not poisoned").clone();
    assert_eq!(seen[0].uri, "/query");
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(seen[0].body, "q=CREATE%20DATABASE%20%22tele%20graf%22");
}

#[tokio::test]
async fn connections_are_reused() {
    let f = fake(Reply::Answer {
        status: 204,
        headers: vec![],
        body: Bytes::new(),
    })
    .await;
    let c = client(f.addr);
    for _ in 0..5 {
        let r = c
            .write("db", None, "", Bytes::from_static(b"cpu v=1 1\n"))
            .await;
        assert_eq!(classify(&r), WriteOutcome::Ok);
    }
    assert_eq!(f.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn influxdb_answers_are_classified() {
    assert_eq!(
        outcome_of(json_error(404, "database not found: \"nosuchdb\"")).await,
        WriteOutcome::DatabaseNotFound {
            message: b"database not found: \"nosuchdb\"".to_vec()
        }
    );
    assert_eq!(
        outcome_of(json_error(500, "retention policy not found: nosuch")).await,
        WriteOutcome::RetentionPolicyNotFound {
            message: b"retention policy not found: nosuch".to_vec()
        }
    );
    let partial = "partial write: field type conflict: input field \"idle\" on measurement \"cpu\" is type float, already exists as type integer dropped=1";
    assert_eq!(
        outcome_of(json_error(400, partial)).await,
        WriteOutcome::PartialWrite {
            message: partial.as_bytes().to_vec()
        }
    );
    assert_eq!(
        outcome_of(json_error(
            400,
            "unable to parse 'cpu v=': missing field value"
        ))
        .await,
        WriteOutcome::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: b"unable to parse 'cpu v=': missing field value".to_vec()
        }
    );
    assert_eq!(
        outcome_of(json_error(401, "authorization failed")).await,
        WriteOutcome::AuthFailed {
            status: StatusCode::UNAUTHORIZED,
            message: b"authorization failed".to_vec()
        }
    );
    assert!(matches!(
        outcome_of(json_error(403, "forbidden")).await,
        WriteOutcome::AuthFailed { status, .. } if status == StatusCode::FORBIDDEN
    ));
    assert_eq!(
        outcome_of(json_error(413, "Request Entity Too Large")).await,
        WriteOutcome::TooLarge
    );
    // A proxy in front of the backend, busy for a moment: sent again, not refused.
    for status in [408, 429] {
        let outcome = outcome_of(json_error(status, "slow down")).await;
        assert!(outcome.is_retryable(), "{status}: {outcome:?}");
    }
    for status in [500, 502, 503] {
        let o = outcome_of(json_error(status, "timeout")).await;
        assert!(o.is_retryable(), "{status}: {o:?}");
    }
    // A 500 that is not about a retention policy is retried.
    assert!(
        outcome_of(json_error(
            500,
            "engine: cache maximum memory size exceeded"
        ))
        .await
        .is_retryable()
    );
}

#[tokio::test]
async fn answers_that_are_not_influxdb_are_retried() {
    let page_not_found = Reply::Answer {
        status: 404,
        headers: vec![("content-type", "text/plain; charset=utf-8")],
        body: Bytes::from_static(b"404 page not found\n"),
    };
    match outcome_of(page_not_found).await {
        WriteOutcome::Retryable { reason } => {
            assert!(reason.contains("404 page not found"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let redirect = Reply::Answer {
        status: 302,
        headers: vec![("location", "/elsewhere")],
        body: Bytes::new(),
    };
    assert!(outcome_of(redirect).await.is_retryable());
}

#[tokio::test]
async fn message_falls_back_to_the_error_header() {
    let f = fake(Reply::Answer {
        status: 400,
        headers: vec![("x-influxdb-error", "partial write: from header dropped=1")],
        body: Bytes::from_static(b"not json"),
    })
    .await;
    let r = client(f.addr).write("db", None, "", Bytes::new()).await;
    assert_eq!(
        classify(&r),
        WriteOutcome::PartialWrite {
            message: b"partial write: from header dropped=1".to_vec()
        }
    );
}

#[tokio::test]
async fn stalled_backend_times_out() {
    let f = fake(Reply::Stall).await;
    let deadline = Duration::from_millis(500);
    let c = client(f.addr).with_request_timeout(deadline);
    let r = c.write("db", None, "", Bytes::new()).await;
    assert_eq!(r, Err(SendError::Timeout(deadline)));
    assert!(classify(&r).is_retryable());
}

#[tokio::test]
async fn reset_connection_is_retryable() {
    // Accepts, reads a little, and drops the connection without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    let r = client(addr)
        .write("db", None, "", Bytes::from_static(b"cpu v=1 1\n"))
        .await;
    assert!(matches!(r, Err(SendError::Transport(_))), "{r:?}");
    assert!(classify(&r).is_retryable());
}

#[tokio::test]
async fn refused_connection_is_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let r = client(addr).write("db", None, "", Bytes::new()).await;
    assert!(matches!(r, Err(SendError::Connect(_))), "{r:?}");
    assert!(classify(&r).is_retryable());
}

#[tokio::test]
async fn oversized_answer_is_retryable() {
    let big: &'static [u8] = Box::leak(vec![b'x'; MAX_ANSWER_BYTES + 1].into_boxed_slice());
    let f = fake(Reply::Answer {
        status: 200,
        headers: vec![],
        body: Bytes::from_static(big),
    })
    .await;
    let r = client(f.addr).ping().await;
    assert!(matches!(r, Err(SendError::Answer(_))), "{r:?}");
}

#[test]
fn an_unreadable_ca_file_is_a_setup_error_naming_backend_and_file() {
    let mut config = backend_config(SocketAddr::from(([127, 0, 0, 1], 1)), false);
    config.url.scheme = Scheme::Https;
    config.ca_file = Some("/nonexistent/ca.pem".into());
    let err = BackendClient::new(&config, TIMEOUTS).expect_err("missing CA file");
    let text = err.to_string();
    assert!(text.contains("influx-a"), "{text}");
    assert!(text.contains("/nonexistent/ca.pem"), "{text}");
}

#[test]
fn basic_auth_encoding() {
    assert_eq!(
        basic_auth("Aladdin", "open sesame"),
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    assert_eq!(basic_auth("a", ""), "Basic YTo=");
    assert_eq!(basic_auth("ab", "c"), "Basic YWI6Yw==");
    assert_eq!(basic_auth("u", "pä"), "Basic dTpww6Q=");
    assert!(basic_auth("u", "p").is_sensitive());
}

#[test]
fn answer_messages() {
    let a = |body: &'static [u8], header: Option<&'static [u8]>| BackendAnswer {
        status: StatusCode::BAD_REQUEST,
        body: Bytes::from_static(body),
        error_header: header.map(Bytes::from_static),
    };
    assert_eq!(
        a(b"{\"error\":\"x\"}\n", Some(b"y")).message(),
        Some(b"x".to_vec())
    );
    assert_eq!(a(b"oops", Some(b"y")).message(), Some(b"y".to_vec()));
    assert_eq!(a(b" oops\n", None).message(), Some(b"oops".to_vec()));
    assert_eq!(a(b"", None).message(), None);
}
