//! What a run measured, for people (text) and for scripts (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::load::Tally;
use super::verify::BackendCheck;

/// Latency percentiles of the acknowledged requests (from when each was due, at a set rate), in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// The result of one `influx-ha bench` run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Where the load went (the write URL, or `udp://…`).
    pub target: String,
    /// `v1`, `v2` or `udp`.
    pub protocol: String,
    /// Requests in flight at once.
    pub concurrency: u64,
    /// Points per batch.
    pub batch_points: u64,
    /// Distinct series written (cardinality).
    pub series: u64,
    /// Requested rate in points/s, if limited.
    pub rate_limit: Option<f64>,
    /// Distinct batches generated; in duration mode the load cycles over them.
    pub distinct_batches: u64,
    /// Seconds from the first request to the last answer.
    pub duration_s: f64,
    /// Requests sent, retries included (UDP: datagrams).
    pub requests: u64,
    /// Requests answered 2xx.
    pub requests_ok: u64,
    /// Points acknowledged (UDP: sent).
    pub points_acked: u64,
    /// Points of batches that failed for good.
    pub points_failed: u64,
    /// Batches that failed for good.
    pub batches_failed: u64,
    /// Acknowledged points per second.
    pub points_per_s: f64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Megabytes (10^6) of line protocol acknowledged per second, before compression.
    pub mb_per_s: f64,
    /// Latency of the acknowledged requests; `None` for UDP.
    pub latency_ms: Option<Latency>,
    /// Retried attempts.
    pub retries: u64,
    /// Failed attempts by kind (`status 503`, `connect`, `timeout`, `transport`).
    pub errors: BTreeMap<String, u64>,
    /// The first answer text of each kind of error.
    pub error_samples: BTreeMap<String, String>,
    /// Per backend, whether it holds exactly the points written; empty without `--verify`.
    pub verify: Vec<BackendCheck>,
    /// Whether Ctrl-C ended the run early (and left the verification out).
    pub cancelled: bool,
}

/// What the run was, before its figures.
#[derive(Debug, Clone)]
pub struct Setup {
    /// See [`Report::target`].
    pub target: String,
    /// See [`Report::protocol`].
    pub protocol: String,
    /// See [`Report::concurrency`].
    pub concurrency: u64,
    /// See [`Report::batch_points`].
    pub batch_points: u64,
    /// See [`Report::series`].
    pub series: u64,
    /// See [`Report::rate_limit`].
    pub rate_limit: Option<f64>,
    /// See [`Report::distinct_batches`].
    pub distinct_batches: u64,
}

impl Report {
    /// Builds the report of a run that took `secs`.
    pub fn new(setup: Setup, tally: Tally, secs: f64, udp: bool) -> Self {
        let secs_nz = secs.max(1e-9);
        let h = &tally.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = (!udp && !h.is_empty()).then(|| Latency {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        });
        Self {
            target: setup.target,
            protocol: setup.protocol,
            concurrency: setup.concurrency,
            batch_points: setup.batch_points,
            series: setup.series,
            rate_limit: setup.rate_limit,
            distinct_batches: setup.distinct_batches,
            duration_s: secs,
            requests: tally.requests,
            requests_ok: tally.requests_ok,
            points_acked: tally.points_acked,
            points_failed: tally.points_failed,
            batches_failed: tally.batches_failed,
            points_per_s: tally.points_acked as f64 / secs_nz,
            requests_per_s: tally.requests as f64 / secs_nz,
            mb_per_s: tally.raw_bytes as f64 / secs_nz / 1e6,
            latency_ms,
            retries: tally.retries,
            errors: tally.errors,
            error_samples: tally.samples,
            verify: Vec::new(),
            cancelled: false,
        }
    }

    /// Whether every backend verified holds exactly the points (true without `--verify`).
    pub fn verified(&self) -> bool {
        self.verify.iter().all(|c| c.exact)
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let rate = self
            .rate_limit
            .map_or("as fast as answered".to_owned(), |r| {
                format!("limited to {} points/s", group(r as u64))
            });
        let _ = writeln!(s, "target     {} ({})", self.target, self.protocol);
        if self.requests > 0 || self.verify.is_empty() {
            let _ = writeln!(
                s,
                "load       {} in flight, {} points per batch, {} series, {rate}",
                self.concurrency,
                group(self.batch_points),
                group(self.series)
            );
            let _ = writeln!(
                s,
                "{}    {} points in {:.2} s: {} points/s, {:.1} requests/s, {:.1} MB/s of line protocol",
                if self.protocol == "udp" {
                    "sent   "
                } else {
                    "written"
                },
                group(self.points_acked),
                self.duration_s,
                group(self.points_per_s as u64),
                self.requests_per_s,
                self.mb_per_s
            );
            if let Some(l) = &self.latency_ms {
                let _ = writeln!(
                    s,
                    "latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (mean {:.2} ms)",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.mean
                );
            }
            if self.errors.is_empty() {
                let _ = writeln!(s, "errors     none");
            } else {
                let list: Vec<String> = self
                    .errors
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "errors     {} ({} retried; {} batches, {} points failed for good)",
                    list.join(", "),
                    self.retries,
                    self.batches_failed,
                    group(self.points_failed)
                );
                for (k, v) in &self.error_samples {
                    if !v.is_empty() {
                        let _ = writeln!(s, "           {k}: {v}");
                    }
                }
            }
        }
        for c in &self.verify {
            if c.exact {
                let _ = writeln!(
                    s,
                    "verify     {}: exact, {} points in {} series, every one read back",
                    c.url,
                    group(c.points_found),
                    group(c.series_found)
                );
            } else if let Some(rows) = c.rows_read {
                let _ = writeln!(
                    s,
                    "verify     {}: DIFFERS after {:.0} s: counts and sums match, the {} points read back do not",
                    c.url,
                    c.waited_s,
                    group(rows)
                );
                for d in &c.differences {
                    let _ = writeln!(s, "             {d}");
                }
            } else {
                let _ = writeln!(
                    s,
                    "verify     {}: DIFFERS after {:.0} s: {} points in {} series, expected {} in {}",
                    c.url,
                    c.waited_s,
                    group(c.points_found),
                    group(c.series_found),
                    group(c.points_expected),
                    group(c.series_expected)
                );
                for d in &c.differences {
                    let _ = writeln!(s, "             {d}");
                }
            }
        }
        s
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
