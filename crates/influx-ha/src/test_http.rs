//! Stand-in HTTP servers for unit tests: one that answers 204 to every request, on kept-alive
//! connections, and keeps the request lines and bodies (`Content-Length` ones) it was sent;
//! and [`serve`], which serves a test's own hyper service.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One backend named `a` at `addr`, with its queue under `dir`: its client and its replica.
pub fn one_backend_at(
    dir: &std::path::Path,
    addr: SocketAddr,
) -> (
    Vec<crate::backend::BackendClient>,
    Arc<crate::write::replica::Replica>,
) {
    let text = format!(
        "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[[backend]]\nname = \"a\"\nurl = \"http://{addr}\"\n",
        dir.display().to_string()
    );
    let config = crate::config::Config::from_toml(&text, "test").expect("valid config");
    let clients = crate::node::backend_clients(&config).expect("clients");
    let replica = crate::write::open_replica(&config, &clients[0], &clients).expect("queue");
    (clients, replica)
}

/// A request as the server read it.
pub type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Starts one on a free loopback port; returns its address and the requests so far.
pub async fn answering_204() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                        let length = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if pending.len() < end + 4 + length {
                            break; // the rest of the body is still on its way
                        }
                        pending.drain(..end + 4);
                        let body: Vec<u8> = pending.drain(..length).collect();
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        log.lock().expect("not poisoned").push((line, body));
                        if conn
                            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Serves every connection to a free loopback port with `service` (HTTP/1.1, kept alive);
/// returns the address.
pub async fn serve<S, B>(service: S) -> SocketAddr
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
