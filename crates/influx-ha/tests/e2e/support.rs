//! Helpers shared by the end-to-end tests.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use testkit::Influxd;

use crate::relay::Relay;

static SERIAL: Mutex<()> = Mutex::new(());

/// The timestamp of point 0 of [`points`].
pub const TS: u64 = 1_700_000_000_000_000_000;

/// How long replicas get to converge.
pub const CONVERGE: Duration = Duration::from_secs(120);

/// Points `first..last` of measurement `m` in database `db`: one series per 10 points, value =
/// index, timestamp `TS + index`.
pub fn points(range: std::ops::Range<u64>) -> Vec<u8> {
    let mut body = String::new();
    for i in range {
        body.push_str(&format!("m,host=h{} v={i}i {}\n", i % 10, TS + i));
    }
    body.into_bytes()
}

/// The sum of `v` over points `0..points`.
pub fn expected_sum(points: u64) -> f64 {
    (points * (points - 1) / 2) as f64
}

/// Writes batches `from..to` of 100 points (batch `n` holds points `100n..100n+100`),
/// asserting every answer.
pub fn write_batches(relay: &mut Relay, from: u64, to: u64, query: &str, want: u16) {
    for n in from..to {
        let r = relay.write(query, &points(n * 100..(n + 1) * 100));
        assert_eq!(r.status, want, "batch {n}: {}\n{}", r.text(), relay.log());
    }
}

/// Both backends hold exactly points `0..points` of `db`, and the same data.
pub fn assert_converged(a: &Influxd, b: &Influxd, points: u64) {
    for (name, i) in [("a", a), ("b", b)] {
        wait_until(
            &format!("{points} points on backend {name}"),
            CONVERGE,
            || count(i, "db", "v", "m") == points,
        );
        assert_eq!(
            sum(i, "db", "v", "m"),
            expected_sum(points),
            "backend {name}"
        );
    }
    assert_eq!(dump(a, "db"), dump(b, "db"));
}

/// Held by each test for its whole run: end-to-end tests run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `SELECT count(v) FROM m` in `db`, 0 when the measurement is empty or missing.
pub fn count(influxd: &Influxd, db: &str, field: &str, measurement: &str) -> u64 {
    let json = influxd.query(db, &format!("SELECT count({field}) FROM {measurement}"));
    number_after(&json, "\"values\":[[").unwrap_or(0.0) as u64
}

/// Creates `db` on `influxd` with its default `autogen` altered (30 days, shards of a day),
/// which a database created anew elsewhere does not have.
pub fn create_with_altered_autogen(influxd: &Influxd, db: &str) {
    influxd.create_database(db);
    let altered = influxd.query(
        "",
        &format!("ALTER RETENTION POLICY autogen ON {db} DURATION 30d SHARD DURATION 1d"),
    );
    assert!(!altered.contains("error"), "{altered}");
}

/// Whether `influxd` holds `db` with the settings of [`create_with_altered_autogen`].
pub fn assert_altered_autogen(influxd: &Influxd, db: &str) {
    let policies = influxd.query("", &format!("SHOW RETENTION POLICIES ON {db}"));
    assert!(policies.contains("720h0m0s"), "{policies}");
    assert!(policies.contains("24h0m0s"), "{policies}");
}

/// `SELECT sum(v) FROM m` in `db`.
pub fn sum(influxd: &Influxd, db: &str, field: &str, measurement: &str) -> f64 {
    let json = influxd.query(db, &format!("SELECT sum({field}) FROM {measurement}"));
    number_after(&json, "\"values\":[[").unwrap_or(0.0)
}

/// The second element of the first row after `marker` (the first is the time).
fn number_after(json: &str, marker: &str) -> Option<f64> {
    let row = &json[json.find(marker)? + marker.len()..];
    let end = row.find(']')?;
    let mut cells = row[..end].split(',');
    cells.next()?;
    cells.next()?.trim().parse().ok()
}

/// Every point of `db` as InfluxDB returns it, for comparing replicas exactly.
pub fn dump(influxd: &Influxd, db: &str) -> String {
    influxd.query(db, "SELECT * FROM /.*/ GROUP BY *")
}

/// A thread writing batches of 10 points (`points(n * 10..)`, database `db`) to a relay
/// without pause until stopped or `max_batches` were written; every answer must be 204.
pub struct ContinuousWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<u64>,
}

impl ContinuousWriter {
    /// Starts writing to the relay listening on `port`.
    pub fn start(port: u16, max_batches: u64) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut client = testkit::http::HttpClient::new(([127, 0, 0, 1], port).into());
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) && n < max_batches {
                    let r = client
                        .request("POST", "/write?db=db", &[], &points(n * 10..(n + 1) * 10))
                        .expect("write");
                    assert_eq!(r.status, 204, "batch {n}: {}", r.text());
                    n += 1;
                    written.store(n, Ordering::SeqCst);
                }
                n
            })
        };
        Self {
            stop,
            written,
            thread,
        }
    }

    /// Batches answered so far.
    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `more` batches beyond the current count were answered.
    pub fn wait_batches(&self, more: u64) {
        let target = self.written() + more;
        wait_until("writes go on", CONVERGE, || self.written() >= target);
    }

    /// Stops the writer and returns how many batches were answered (all 204).
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("every write answered 204")
    }
}
