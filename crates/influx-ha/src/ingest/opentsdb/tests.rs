use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

use super::*;
use crate::ingest::testing::{Recorder, eventually};

struct Running {
    addr: SocketAddr,
    recorder: Recorder,
    stop: broadcast::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    start_with(Duration::from_secs(20)).await
}

/// A listener whose HTTP side gives a request `read_timeout` to arrive.
async fn start_with(read_timeout: Duration) -> Running {
    start_with_budget(read_timeout, crate::http::body::InflightBytes::new(4 << 20)).await
}

/// A listener whose bodies count in `budget`.
async fn start_with_budget(
    read_timeout: Duration,
    budget: crate::http::body::InflightBytes,
) -> Running {
    let recorder = Recorder::default();
    let l = bind(
        "127.0.0.1:0".parse().expect("addr"),
        "tsdb",
        recorder.clone(),
        TcpOptions::default(),
        BodyLimits {
            max_body_bytes: 1 << 20,
            read_timeout,
            inflight_wait: Duration::from_secs(1),
        },
        budget,
    )
    .await
    .expect("bind");
    let addr = l.local_addr();
    let (stop, rx) = broadcast::channel(1);
    let task = tokio::spawn(l.run(Shutdown::new(rx)));
    Running {
        addr,
        recorder,
        stop,
        task,
    }
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(request).await.expect("send");
    c.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn telnet_and_http_share_the_port() {
    let r = start().await;
    let answer = exchange(
        r.addr,
        b"version\nput a 1356998400 1 host=x\nbogus\nput b 1356998401 2\n",
    )
    .await;
    assert_eq!(answer, "InfluxDB TSDB proxy");
    eventually("telnet points", || r.recorder.lines().len() == 2).await;
    assert_eq!(
        r.recorder.lines(),
        [
            "a,host=x value=1.0 1356998400000000000",
            "b value=2.0 1356998401000000000"
        ]
    );

    let body = br#"[{"metric":"c","timestamp":1356998402,"value":3,"tags":{"t":"v"}},{"metric":"","timestamp":1,"value":1}]"#;
    let request = format!(
        "POST /api/put?details HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let answer = exchange(r.addr, &bytes).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with(r#"{"errors":[{"datapoint":{"metric":"","timestamp":1,"value":1.0},"error":"missing measurement"}],"failed":1,"success":1}"#),
        "{answer}"
    );
    eventually("http point", || r.recorder.lines().len() == 3).await;
    assert_eq!(r.recorder.lines()[2], "c,t=v value=3.0 1356998402000000000");

    let answer = exchange(
        r.addr,
        b"POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("\r\n\r\nexpected JSON array or hash\n"),
        "{answer}"
    );
    let answer = exchange(
        r.addr,
        b"GET /api/put HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{answer}"
    );
    let batches = r.recorder.batches.lock().expect("lock").clone();
    assert!(batches.iter().all(|(db, _, _)| db == "tsdb"));
    r.stop.send(()).expect("running");
    r.task.await.expect("stops");
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_still_has_its_lines_taken() {
    let r = start().await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let c = socket.connect(r.addr).await.expect("connect");
    let (_unread, mut w) = c.into_split();
    // Far more replies than the kernel holds for a reader that never reads: the relay's
    // writes of them block, until it gives up on replying and takes the lines that follow.
    let versions = b"version\n".repeat(1 << 20);
    let sending = tokio::spawn(async move {
        w.write_all(&versions).await.expect("versions sent");
        w.write_all(b"put after 1356998400 1 host=x\n")
            .await
            .expect("line sent");
        w
    });
    eventually("the line after the unread replies", || {
        r.recorder.lines().iter().any(|l| l.starts_with("after,"))
    })
    .await;
    drop(sending.await.expect("sent"));
    r.stop.send(()).expect("running");
    r.task.await.expect("stops");
}

#[test]
fn request_lines_are_told_from_telnet_lines() {
    assert!(is_request_line(b"POST /api/put HTTP/1.1\r"));
    assert!(is_request_line(b"GET / HTTP/1.0"));
    assert!(!is_request_line(b"put sys.cpu 1356998400 1 host=a"));
    assert!(!is_request_line(b"PUT x"));
    assert!(!is_request_line(b"version"));
}

#[tokio::test]
async fn an_http_client_that_stops_mid_head_or_idles_is_disconnected() {
    // Long enough for the request sent at once to be answered on a loaded machine.
    let r = start_with(Duration::from_secs(2)).await;
    let ping = b"POST /api/metadata/put HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    for request in [&b"GET /api/put HTTP/1.1\r\nHost: x\r\n"[..], &ping[..]] {
        let mut c = TcpStream::connect(r.addr).await.expect("connect");
        c.write_all(request).await.expect("send");
        // Never half-closed: only the server's timeout can end the connection.
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut answer))
            .await
            .expect("the connection was closed by the server")
            .expect("read");
        if request == &ping[..] {
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("HTTP/1.1 204"), "{text}");
        }
    }
    let _ = r.stop.send(());
    r.task.await.expect("listener ends");
}

#[tokio::test]
async fn http_bodies_count_in_the_node_budget() {
    let budget = crate::http::body::InflightBytes::new(64 * 1024);
    let r = start_with_budget(Duration::from_secs(20), budget.clone()).await;
    // The node's requests hold all of it: the body waits for room, then gets 503.
    let mut others = crate::http::body::InflightPermit::default();
    budget.try_grow(&mut others, 64 * 1024).expect("room");
    let body = br#"{"metric":"c","timestamp":1356998402,"value":3}"#;
    let request = format!(
        "POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    // Not half-closed: the request waits for room with its body still unread.
    let mut c = TcpStream::connect(r.addr).await.expect("connect");
    c.write_all(&bytes).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    drop(others);
    let answer = exchange(r.addr, &bytes).await;
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer}");
    eventually("the point", || r.recorder.lines().len() == 1).await;
}

#[tokio::test]
async fn http_put_answers_500_for_every_write_error_but_overload_and_a_batch_only_queued() {
    let r = start().await;
    let body = br#"{"metric":"m","timestamp":1356998400,"value":1}"#;
    let mut request = format!(
        "POST /api/put HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let cases = [
        // Stored short of the level: the client is told to send it again.
        (RequestError::LevelNotMet, "HTTP/1.1 500 "),
        // A backend's partial write (1.6's own handler answers 500 for it too).
        (
            RequestError::PartialWrite(
                b"partial write: field type conflict: input field \"value\" on measurement \"m\" is type float, already exists as type integer dropped=1".to_vec(),
            ),
            "HTTP/1.1 500 ",
        ),
        (RequestError::Unavailable("busy".to_owned()), "HTTP/1.1 503 "),
    ];
    for (error, status) in cases {
        r.recorder
            .answers
            .lock()
            .expect("not poisoned")
            .push_back(error.clone());
        let answer = exchange(r.addr, &request).await;
        assert!(answer.starts_with(status), "{error:?}: {answer}");
        assert!(answer.contains("write series error: "), "{answer}");
    }
    // Stored in every backend's queue only: stored, and sent again it would only be queued
    // again.
    r.recorder
        .answers
        .lock()
        .expect("not poisoned")
        .push_back(RequestError::QueuedOnly);
    let answer = exchange(r.addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer}");
    let answer = exchange(r.addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer}");
}
