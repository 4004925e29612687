//! A fault-injecting TCP proxy for end-to-end tests: it listens on a free loopback port,
//! forwards bytes both ways to one upstream address, and misbehaves on demand
//! ([`FaultProxy::set_mode`]) in ways a killed or stopped process cannot: connections reset,
//! requests that are accepted and never answered, connections closed right after accept.
//!
//! Plain std threads: one polls the non-blocking listener, each connection has one thread per
//! direction. Every socket has a short read and write timeout, so each thread sees a mode
//! change or the proxy's drop within a few milliseconds; dropping the proxy joins them all.
//!
//! How [`Mode::Reset`] makes a reset without `SO_LINGER` (std cannot set it and the tests use
//! no socket crate): the proxy stops reading, waits briefly for the peer's bytes to arrive, and
//! closes the socket with those bytes unread, which Linux answers with RST instead of FIN. A
//! connection with nothing unread gets a FIN, and the peer's next send on it gets the RST.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often threads look at the mode and the stop flag (socket timeouts and sleeps).
const TICK: Duration = Duration::from_millis(10);
/// Connect timeout towards the upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reset waits for the peer's bytes to sit unread (so that the close is an RST).
const RESET_WAIT: Duration = Duration::from_millis(300);

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways. Connections stalled earlier resume; connections that had bytes
    /// thrown away by [`Mode::Blackhole`] stay black holes.
    Pass,
    /// Close every connection, open and new, abortively (see the module docs).
    Reset,
    /// Read nothing and answer nothing: open connections freeze, new ones are accepted and left
    /// alone. Back in [`Mode::Pass`] they carry on where they stopped.
    Stall,
    /// Read and discard what the client sends, never answer, keep the connection open.
    Blackhole,
    /// Close new connections right after accept (shutdown both ways: FIN) and open ones too.
    Refuse,
    /// Requests pass; of an answer with a body only the status line and headers do, and the
    /// rest is held until [`Mode::Pass`]: a backend that took a query and has not sent a byte
    /// of its result. `204` answers (a ping's) pass whole; any other status counts as having
    /// a body (so not for answers to `HEAD`, or `304`).
    HeadersOnly,
}

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::Pass,
        Mode::Reset,
        Mode::Stall,
        Mode::Blackhole,
        Mode::Refuse,
        Mode::HeadersOnly,
    ];

    /// Whether requests go to the upstream.
    fn forwards_requests(self) -> bool {
        matches!(self, Mode::Pass | Mode::HeadersOnly)
    }

    fn index(self) -> u8 {
        Mode::ALL
            .iter()
            .position(|m| *m == self)
            .map_or(0, |i| i as u8)
    }
}

struct Shared {
    upstream: SocketAddr,
    mode: AtomicU8,
    stop: AtomicBool,
    accepted: AtomicUsize,
    /// Bytes read from clients and thrown away ([`Mode::Blackhole`]).
    discarded: AtomicUsize,
    /// Answers held after their headers ([`Mode::HeadersOnly`]).
    cut: AtomicUsize,
}

impl Shared {
    fn mode(&self) -> Mode {
        Mode::ALL[usize::from(self.mode.load(Ordering::SeqCst))]
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A running proxy; dropping it closes the listener and every connection and ends its threads.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 (the listener is bound before this returns, so the
    /// port cannot be taken by anyone else) and forwards to `upstream`, in [`Mode::Pass`].
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            mode: AtomicU8::new(Mode::Pass.index()),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            discarded: AtomicUsize::new(0),
            cut: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name("fault-proxy".to_owned())
            .spawn(move || accept_loop(listener, &s))
            .expect("start the proxy thread");
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for a backend URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Switches the behaviour for open and new connections.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode.index(), Ordering::SeqCst);
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Connections accepted since the start.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes thrown away in [`Mode::Blackhole`] since the start: a request is hanging on it.
    pub fn discarded(&self) -> usize {
        self.shared.discarded.load(Ordering::SeqCst)
    }

    /// Answers held after their headers in [`Mode::HeadersOnly`] since the start.
    pub fn cut_answers(&self) -> usize {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopped() {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                connections.retain(|c| !c.is_finished());
                let s = shared.clone();
                if let Ok(c) = thread::Builder::new()
                    .name("fault-proxy-conn".to_owned())
                    .spawn(move || serve(client, &s))
                {
                    connections.push(c);
                }
            }
            // Nothing to accept (or a transient error such as too many open files).
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
    drop(listener);
    for c in connections {
        let _ = c.join();
    }
}

/// What one connection shares between its two threads.
#[derive(Default)]
struct Link {
    /// The connection is over: both threads end.
    done: AtomicBool,
    /// Bytes were thrown away: the stream is broken for good and is never answered again.
    blackholed: AtomicBool,
}

enum End {
    Close,
    Reset,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// One client connection; this thread reads from the client, a second one
/// ([`upstream_to_client`]) carries the answers. Bytes are read first and forwarded only if
/// the mode, looked at again after the read, still lets them through: a mode change applies
/// to every byte that arrives after it.
fn serve(client: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let _ = client.set_read_timeout(Some(TICK));
    let _ = client.set_write_timeout(Some(TICK));
    let link = Arc::new(Link::default());
    let mut upstream: Option<(TcpStream, JoinHandle<()>)> = None;
    let mut buf = vec![0u8; 64 << 10];
    // Bytes read from the client and not forwarded yet.
    let mut held = 0;
    let end = loop {
        if shared.stopped() || link.done.load(Ordering::SeqCst) {
            break End::Close;
        }
        match shared.mode() {
            Mode::Reset => break End::Reset,
            Mode::Refuse => break End::Close,
            Mode::Stall => {
                thread::sleep(TICK);
                continue;
            }
            Mode::Pass | Mode::HeadersOnly if !link.blackholed.load(Ordering::SeqCst) => {
                if upstream.is_none() {
                    match connect(shared, &client, &link) {
                        Ok(u) => upstream = Some(u),
                        Err(_) => break End::Close,
                    }
                }
                if held > 0 {
                    let Some((to, _)) = &upstream else {
                        break End::Close;
                    };
                    if write_all(to, &buf[..held], shared, &link).is_err() {
                        break End::Close;
                    }
                    held = 0;
                    continue;
                }
            }
            Mode::Blackhole | Mode::Pass | Mode::HeadersOnly => {
                shared.discarded.fetch_add(held, Ordering::SeqCst);
                if held > 0
                    && !link.blackholed.swap(true, Ordering::SeqCst)
                    && let Some((to, _)) = &upstream
                {
                    let _ = to.shutdown(Shutdown::Both);
                }
                held = 0;
            }
        }
        match (&client).read(&mut buf) {
            Ok(0) => break End::Close,
            Ok(n) => held = n,
            Err(e) if is_timeout(&e) => {}
            Err(_) => break End::Close,
        }
    };
    link.done.store(true, Ordering::SeqCst);
    if let Some((to, answers)) = upstream {
        let _ = to.shutdown(Shutdown::Both);
        let _ = answers.join();
    }
    match end {
        End::Close => {
            let _ = client.shutdown(Shutdown::Both);
        }
        End::Reset => reset(client, shared),
    }
}

/// Connects to the upstream and starts the thread that carries its answers to the client.
fn connect(
    shared: &Arc<Shared>,
    client: &TcpStream,
    link: &Arc<Link>,
) -> io::Result<(TcpStream, JoinHandle<()>)> {
    let to = TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT)?;
    to.set_nodelay(true)?;
    to.set_read_timeout(Some(TICK))?;
    to.set_write_timeout(Some(TICK))?;
    let (from, back) = (to.try_clone()?, client.try_clone()?);
    let (s, l) = (shared.clone(), link.clone());
    let answers = thread::Builder::new()
        .name("fault-proxy-answers".to_owned())
        .spawn(move || upstream_to_client(&from, &back, &s, &l))?;
    Ok((to, answers))
}

/// Carries the upstream's answers to the client while the mode is [`Mode::Pass`] (held back
/// during a stall, never for a black hole), and in [`Mode::HeadersOnly`] up to the end of the
/// headers of an answer with a body.
fn upstream_to_client(from: &TcpStream, client: &TcpStream, shared: &Shared, link: &Link) {
    let mut buf = vec![0u8; 64 << 10];
    let mut held = 0;
    let mut answer = AnswerStart::default();
    loop {
        if shared.stopped() || link.done.load(Ordering::SeqCst) {
            return;
        }
        let mode = shared.mode();
        if !mode.forwards_requests() || link.blackholed.load(Ordering::SeqCst) {
            thread::sleep(TICK);
            continue;
        }
        if mode == Mode::Pass {
            // What was held goes on; the next headers-only spell starts with a new answer.
            answer = AnswerStart::default();
        }
        if held > 0 {
            let pass = match mode {
                Mode::HeadersOnly => answer.passable(&buf[..held], shared),
                _ => held,
            };
            if pass == 0 {
                thread::sleep(TICK);
                continue;
            }
            if write_all(client, &buf[..pass], shared, link).is_err() {
                break;
            }
            buf.copy_within(pass..held, 0);
            held -= pass;
            continue;
        }
        match (&*from).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => held = n,
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    // The upstream closed or failed: so does the client's connection, unless it is a black
    // hole (which stays open and silent).
    if !link.blackholed.load(Ordering::SeqCst) {
        link.done.store(true, Ordering::SeqCst);
        let _ = client.shutdown(Shutdown::Both);
    }
}

/// Where [`Mode::HeadersOnly`] is in the answers of one connection: the headers of the answer
/// being read so far, or the answer being held after them.
#[derive(Default)]
struct AnswerStart {
    head: Vec<u8>,
    holding: bool,
}

impl AnswerStart {
    /// How many bytes of `data` (the next bytes from the upstream) may go to the client: up to
    /// the end of an answer's headers, then nothing more of an answer with a body.
    fn passable(&mut self, data: &[u8], shared: &Shared) -> usize {
        if self.holding {
            return 0;
        }
        for (i, &byte) in data.iter().enumerate() {
            self.head.push(byte);
            if !self.head.ends_with(b"\r\n\r\n") {
                continue;
            }
            let bodiless =
                self.head.starts_with(b"HTTP/1.1 204") || self.head.starts_with(b"HTTP/1.0 204");
            self.head.clear();
            if !bodiless {
                self.holding = true;
                shared.cut.fetch_add(1, Ordering::SeqCst);
                return i + 1;
            }
        }
        data.len()
    }
}

/// Writes everything unless the proxy stops or the connection ends meanwhile.
fn write_all(to: &TcpStream, mut data: &[u8], shared: &Shared, link: &Link) -> io::Result<()> {
    while !data.is_empty() {
        if shared.stopped() || link.done.load(Ordering::SeqCst) {
            return Err(ErrorKind::ConnectionAborted.into());
        }
        match (&*to).write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes `client` with the peer's bytes unread, so that the kernel sends RST (waits up to
/// [`RESET_WAIT`] for such bytes; without any the close is a FIN).
fn reset(client: TcpStream, shared: &Shared) {
    let deadline = Instant::now() + RESET_WAIT;
    let mut probe = [0u8; 1];
    while Instant::now() < deadline && !shared.stopped() {
        match client.peek(&mut probe) {
            Ok(_) => break,
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    drop(client);
}
