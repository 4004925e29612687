use bytes::Bytes;

use super::Replicator;
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

/// An HTTP server answering 204 to everything, on a free loopback port.
async fn answers_204() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let _ = req.into_body().collect().await;
                    let mut resp = http::Response::new(http_body_util::Full::new(Bytes::new()));
                    *resp.status_mut() = http::StatusCode::NO_CONTENT;
                    Ok::<_, std::convert::Infallible>(resp)
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

#[tokio::test]
async fn a_backend_with_too_many_late_sends_goes_behind_its_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fast = answers_204().await;
    // Accepts connections in the kernel's backlog and never answers: a stalled backend.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let text = format!(
        "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[[backend]]\nname = \"fast\"\nurl = \"http://{fast}\"\n[[backend]]\nname = \"stalled\"\nurl = \"http://{}\"\n",
        dir.path().display().to_string(),
        stalled.local_addr().expect("addr"),
    );
    let config = Config::from_toml(&text, "test").expect("valid config");
    let clients = crate::node::backend_clients(&config).expect("clients");
    let replicator = Replicator::open(&config, &clients).expect("queues open");
    let replicas = replicator.replicas();
    let slow = &replicas[1];
    let max = super::replica::MAX_LATE_SENDS;
    for i in 0..max + 3 {
        let body = Bytes::from(format!("m v={i} {i}\n"));
        replicator
            .replicate("db".into(), None, "", Consistency::One, body)
            .await
            .expect("the fast backend takes it");
        let insured = slow
            .counters
            .insured
            .load(std::sync::atomic::Ordering::Relaxed);
        if i < max {
            assert!(!slow.is_queueing(), "write {i}: queueing too early");
            assert_eq!(insured, i as u64 + 1, "write {i} was insured");
        } else {
            // Past the cap nothing more is sent directly: the copies wait in the queue.
            assert!(slow.is_queueing(), "write {i}: still sending directly");
            assert_eq!(insured, max as u64 + 1, "write {i}");
            assert_eq!(slow.late_sends(), max + 1);
        }
    }
    assert_eq!(slow.queue().stats().depth_records, max as u64 + 3);
    assert!(!replicas[0].is_queueing());
}
