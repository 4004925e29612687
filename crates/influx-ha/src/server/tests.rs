use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};

use super::*;
use crate::health::Health;
use crate::http::body::{BodyLimits, InflightBytes, SharedLimits};
use crate::http::error::RequestError;
use crate::http::{NotReplicating, Surface, WriteRequest};

fn options(drain: Duration) -> ServerOptions {
    ServerOptions {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(5),
        drain_timeout: drain,
    }
}

fn service<W: WriteHandler>(writer: W) -> Arc<HttpService<W>> {
    Arc::new(HttpService {
        surface: Surface::Main { with_admin: true },
        limits: SharedLimits::new(BodyLimits {
            max_body_bytes: 1 << 20,
            read_timeout: Duration::from_secs(5),
            inflight_wait: Duration::from_secs(1),
        }),
        inflight: InflightBytes::new(1 << 24),
        health: Health::new(),
        writer,
        query: None,
        admin: None,
        observer: None,
        guard: Default::default(),
    })
}

/// Sends raw bytes and reads the whole answer (the request asks to close the connection).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<DrainReport>,
}

async fn start<W: WriteHandler>(service: Arc<HttpService<W>>, drain: Duration) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(run(listener, service, options(drain), async move {
        let _ = stopped.await;
    }));
    Running { addr, stop, done }
}

#[tokio::test]
async fn serves_ping_over_tcp() {
    let r = start(service(NotReplicating), Duration::from_secs(5)).await;
    let answer = exchange(
        r.addr,
        b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{answer}"
    );
    // Header names as Go writes them.
    for header in [
        "\r\nX-Influxdb-Version: 1.6.7~rc0\r\n",
        "\r\nX-Influxdb-Build: OSS\r\n",
        "\r\nContent-Type: application/json\r\n",
        "\r\nRequest-Id: ",
        "\r\nX-Request-Id: ",
        "\r\nDate: ",
    ] {
        assert!(answer.contains(header), "{header:?} in {answer}");
    }

    let answer = exchange(
        r.addr,
        b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 30000000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 413 Request Entity Too Large\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("{\"error\":\"Request Entity Too Large\"}\n"),
        "{answer}"
    );

    r.stop.send(()).expect("server running");
    let report = r.done.await.expect("no panic");
    assert_eq!(report.abandoned_connections, 0);
    assert!(TcpStream::connect(r.addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn keep_alive_serves_several_requests() {
    let r = start(service(NotReplicating), Duration::from_secs(5)).await;
    let mut s = TcpStream::connect(r.addr).await.expect("connect");
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 204 No Content").count(), 2, "{text}");
    let _ = r.stop.send(());
}

/// Holds each write until released, counting the ones that finished and the ones dropped
/// before they did.
#[derive(Default)]
struct Gate {
    entered: Notify,
    release: Notify,
    finished: AtomicUsize,
    dropped: AtomicUsize,
}

/// Counts a write dropped before it finished.
struct Unfinished<'a>(Option<&'a AtomicUsize>);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(dropped) = self.0 {
            dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl WriteHandler for Gate {
    async fn write(&self, _: WriteRequest) -> Result<(), RequestError> {
        let mut unfinished = Unfinished(Some(&self.dropped));
        self.entered.notify_one();
        self.release.notified().await;
        unfinished.0 = None;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Polls until a connection to `addr` is refused (the listener is closed); panics after 60 s.
async fn wait_refused(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting connections while draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn in_flight_requests_finish_during_drain() {
    let gate = Arc::new(Gate::default());
    let svc = service(gate.clone());
    let r = start(svc.clone(), Duration::from_secs(10)).await;
    let addr = r.addr;
    let client = tokio::spawn(async move {
        exchange(
            addr,
            b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\ncpu v=1",
        )
        .await
    });
    gate.entered.notified().await;
    // SIGTERM arrives while the write is in flight.
    svc.health.set_draining();
    r.stop.send(()).expect("server running");
    // No new connections while draining, and the write in flight goes on.
    wait_refused(addr).await;
    gate.release.notify_one();
    let answer = client.await.expect("no panic");
    assert!(
        answer.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{answer}"
    );
    let report = r.done.await.expect("no panic");
    assert_eq!(report.abandoned_connections, 0);
    assert_eq!(gate.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    // A drain period far longer than the test may take: the shutdown must not wait for it.
    let r = start(service(NotReplicating), Duration::from_secs(3600)).await;
    let mut idle = TcpStream::connect(r.addr).await.expect("connect");
    idle.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.expect("read");
    assert!(n > 0);
    r.stop.send(()).expect("server running");
    let report = tokio::time::timeout(Duration::from_secs(60), r.done)
        .await
        .expect("shutdown not held up by the idle connection")
        .expect("no panic");
    assert_eq!(report.abandoned_connections, 0);
}

#[tokio::test]
async fn drain_period_is_bounded() {
    let gate = Arc::new(Gate::default());
    let r = start(service(gate.clone()), Duration::from_millis(200)).await;
    let addr = r.addr;
    let _client = tokio::spawn(async move {
        exchange(
            addr,
            b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\ncpu v=1",
        )
        .await
    });
    gate.entered.notified().await;
    r.stop.send(()).expect("server running");
    let report = r.done.await.expect("no panic");
    assert_eq!(report.abandoned_connections, 1);
    // The connection was ended with the drain: its request no longer goes on to a write path
    // whose queues are being closed.
    assert_eq!(gate.finished.load(Ordering::SeqCst), 0);
    assert_eq!(gate.dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_and_idle_clients_are_disconnected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let opts = ServerOptions {
        max_connections: 4,
        // Long enough for the keep-alive request below to be answered on a loaded machine.
        header_read_timeout: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(5),
    };
    let done = tokio::spawn(run(listener, service(NotReplicating), opts, async move {
        let _ = stopped.await;
    }));
    // Headers that never finish (slow loris).
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /ping HTTP/1.1\r\nHo")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "slow client still connected");
    // An idle keep-alive connection after one answered request.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), idle.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "idle client still connected");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 204"));
    stop.send(()).expect("running");
    assert_eq!(done.await.expect("no panic").abandoned_connections, 0);
}

#[tokio::test]
async fn connections_past_the_cap_wait_instead_of_failing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let opts = ServerOptions {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(5),
    };
    let done = tokio::spawn(run(listener, service(NotReplicating), opts, async move {
        let _ = stopped.await;
    }));
    // The first connection holds the only slot (keep-alive, no request yet).
    let holder = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(async move {
        exchange(
            addr,
            b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second client is served only when a slot frees up"
    );
    drop(holder);
    let answer = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("served after the slot freed")
        .expect("no panic");
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    stop.send(()).expect("running");
    done.await.expect("no panic");
}
