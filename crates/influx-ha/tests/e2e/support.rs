//! Helpers shared by the end-to-end tests.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use testkit::Influxd;

static SERIAL: Mutex<()> = Mutex::new(());

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
