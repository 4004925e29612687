//! The exact part of verification: every point of the range read back from a backend and held,
//! row by row, to what the workload says its series, time and fields are.
//!
//! Counts and sums ([`super::verify`]) are cheap and catch nearly every difference, but a point
//! moved in time, or two wrong values whose errors cancel out, pass them. So once they match,
//! the points themselves are read, streamed (`chunked=true`: InfluxDB then sends the answer in
//! pieces as it goes, and its `max-row-limit` does not cut it). Each series comes in time
//! order, one row per time: a backend whose rows are all points of the range, in strictly
//! increasing time per series, with the right values, and as many per series as the range
//! holds, holds exactly the points of the range. JSON does not tell an integer 25 from a float
//! 25, so a field of another type but the same value passes (InfluxDB refuses a second type
//! for a field within a shard).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::Value as Json;

use super::series::{Value, Workload};
use super::{BenchError, HttpClient};
use crate::http::query::encode_component;

/// Cells (rows × columns) per piece of the streamed answer, about: each is held as a JSON
/// value of 32 bytes while its piece is checked.
const PIECE_CELLS: usize = 1 << 20;
/// Longest piece of the answer read.
const MAX_PIECE: usize = 64 << 20;
/// Longest the backend may send nothing while it streams the answer.
const SILENCE: Duration = Duration::from_secs(120);
/// How many differences are listed, at most.
const MAX_LISTED: usize = 8;

/// What reading the points back found.
#[derive(Debug, Default, PartialEq)]
pub struct Readback {
    /// Rows read.
    pub rows: u64,
    /// Differences found (rows wrong, missing or unexpected; series unexpected).
    pub mismatched: u64,
    /// The first differences, for people.
    pub differences: Vec<String>,
}

/// Reads points `range` of `workload` back from `url` (`from` is the `FROM` clause, `time` the
/// range's first and last timestamps) and checks every row.
pub async fn read_back(
    client: &HttpClient,
    url: &str,
    (db, from, auth): (&str, &str, Option<&HeaderValue>),
    time: (i64, i64),
    workload: &Workload,
    range: Range<u64>,
) -> Result<Readback, BenchError> {
    let fail = |message: String| BenchError::Verify {
        url: url.to_owned(),
        message,
    };
    let q = format!(
        "SELECT * FROM {from} WHERE time >= {} AND time <= {} GROUP BY *",
        time.0, time.1
    );
    // Every field name of the database is a column of every row (null where a series lacks it).
    let columns = 1 + workload
        .series
        .iter()
        .flat_map(|s| s.fields.iter().map(|(name, _)| name.as_str()))
        .collect::<BTreeSet<_>>()
        .len();
    let chunk_rows = (PIECE_CELLS / columns).clamp(100, 10_000);
    let mut path = String::from("/query?epoch=ns&chunked=true&chunk_size=");
    let _ = write!(path, "{chunk_rows}&db=");
    encode_component(db, &mut path);
    path.push_str("&q=");
    encode_component(&q, &mut path);
    let uri: Uri = format!("{}{path}", url.trim_end_matches('/'))
        .parse()
        .map_err(|e| fail(format!("invalid URL: {e}")))?;
    let mut req = Request::builder().method(Method::GET).uri(uri);
    if let Some(auth) = auth {
        req = req.header(http::header::AUTHORIZATION, auth.clone());
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| fail(format!("invalid request: {e}")))?;
    let resp = tokio::time::timeout(SILENCE, client.request(req))
        .await
        .map_err(|_| fail(format!("no answer to the point query within {SILENCE:?}")))?
        .map_err(|e| fail(format!("point query failed: {e}")))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut check = RowCheck::new(workload, range);
    let mut pending: Vec<u8> = Vec::new();
    // How much of `pending` is known to hold no line end.
    let mut scanned = 0;
    loop {
        let frame = tokio::time::timeout(SILENCE, body.frame())
            .await
            .map_err(|_| fail(format!("the point query's answer stalled for {SILENCE:?}")))?;
        let Some(frame) = frame else { break };
        let frame =
            frame.map_err(|e| fail(format!("cannot read the point query's answer: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        if !status.is_success() {
            if pending.len() > 300 {
                break;
            }
            continue;
        }
        let mut start = 0;
        while let Some(n) = memchr::memchr(b'\n', &pending[scanned..]) {
            check
                .take_piece(&pending[start..scanned + n])
                .map_err(fail)?;
            start = scanned + n + 1;
            scanned = start;
        }
        pending.drain(..start);
        scanned = pending.len();
        if pending.len() > MAX_PIECE {
            return Err(fail(format!(
                "a piece of the point query's answer is longer than {MAX_PIECE} bytes"
            )));
        }
    }
    if !status.is_success() {
        return Err(fail(format!(
            "point query answered {status}: {}",
            String::from_utf8_lossy(&pending[..pending.len().min(300)]).trim()
        )));
    }
    check.take_piece(&pending).map_err(fail)?;
    check.finish().map_err(fail)
}

/// One piece of a chunked answer.
#[derive(Deserialize)]
struct Piece {
    /// Absent from what is not an InfluxDB 1.x answer.
    results: Option<Vec<PieceResult>>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct PieceResult {
    #[serde(default)]
    series: Vec<Rows>,
    error: Option<String>,
}

/// Rows of one series (a series may come in several pieces).
#[derive(Deserialize)]
struct Rows {
    name: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<Json>>,
}

/// Checks the rows of an answer as they come.
pub struct RowCheck<'w> {
    workload: &'w Workload,
    range: Range<u64>,
    /// Series index by key.
    by_key: HashMap<&'w str, usize>,
    /// Rows read per series.
    rows: Vec<u64>,
    /// The time of the last row read per series (rows come in increasing time).
    last_time: Vec<Option<i64>>,
    /// Pieces taken.
    pieces: u64,
    /// Series found that the workload does not have, each reported once.
    unexpected: BTreeSet<String>,
    out: Readback,
}

impl<'w> RowCheck<'w> {
    /// A check of points `range` of `workload`.
    pub fn new(workload: &'w Workload, range: Range<u64>) -> Self {
        let by_key = workload
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.as_str(), i))
            .collect();
        Self {
            workload,
            range,
            by_key,
            rows: vec![0; workload.series.len()],
            last_time: vec![None; workload.series.len()],
            pieces: 0,
            unexpected: BTreeSet::new(),
            out: Readback::default(),
        }
    }

    fn note(&mut self, difference: impl FnOnce() -> String) {
        self.out.mismatched += 1;
        if self.out.differences.len() < MAX_LISTED {
            self.out.differences.push(difference());
        }
    }

    /// Takes one piece (one line) of the answer; an error is an answer that cannot be read,
    /// or one InfluxDB gave instead of rows.
    pub fn take_piece(&mut self, line: &[u8]) -> Result<(), String> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let piece: Piece = serde_json::from_slice(line)
            .map_err(|e| format!("a piece of the point query's answer is not JSON: {e}"))?;
        self.pieces += 1;
        if let Some(e) = piece.error {
            return Err(format!("point query: {e}"));
        }
        let Some(results) = piece.results else {
            return Err(format!(
                "the point query's answer is not InfluxDB's: {}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ));
        };
        for result in results {
            if let Some(e) = result.error {
                return Err(format!("point query: {e}"));
            }
            for rows in result.series {
                self.take_rows(rows);
            }
        }
        Ok(())
    }

    fn take_rows(&mut self, rows: Rows) {
        let mut key = rows.name;
        // Tags a series lacks come back empty under `GROUP BY *`.
        for (k, v) in rows.tags.iter().filter(|(_, v)| !v.is_empty()) {
            let _ = write!(key, ",{k}={v}");
        }
        let Some(&s) = self.by_key.get(key.as_str()) else {
            let count = rows.values.len();
            if self.unexpected.insert(key.clone()) {
                self.note(|| format!("unexpected series {key} ({count} rows in a piece)"));
            }
            self.out.rows += count as u64;
            return;
        };
        if rows.columns.first().map(String::as_str) != Some("time") {
            self.note(|| format!("{key}: no time column first in {:?}", rows.columns));
            return;
        }
        let workload = self.workload;
        let series = &workload.series[s];
        // Per column, the series' field it holds; `None` for `time` and for fields this series
        // does not have (other series of the measurement may), which must then be empty.
        let fields: Vec<Option<usize>> = rows
            .columns
            .iter()
            .map(|c| series.fields.iter().position(|(name, _)| name == c))
            .collect();
        // A field of the series missing from the columns altogether: every row lacks it.
        for (name, _) in &series.fields {
            if !rows.columns.iter().any(|c| c == name) && !rows.values.is_empty() {
                self.note(|| format!("{key}: field {name} missing from the answer"));
            }
        }
        let n = workload.cardinality();
        let shape = &workload.shape;
        for row in &rows.values {
            self.out.rows += 1;
            if row.len() != rows.columns.len() {
                self.note(|| {
                    format!(
                        "{key}: a row of {} cells for {} columns",
                        row.len(),
                        rows.columns.len()
                    )
                });
                continue;
            }
            let Some(time) = row.first().and_then(Json::as_i64) else {
                self.note(|| format!("{key}: a row without a time"));
                continue;
            };
            if self.last_time[s].is_some_and(|last| time <= last) {
                self.note(|| format!("{key}: a row at {time} out of order or repeated"));
                continue;
            }
            self.last_time[s] = Some(time);
            let since = i128::from(time) - i128::from(shape.start_ns);
            let interval = i128::from(shape.interval_ns);
            let index = (since >= 0 && since % interval == 0)
                .then(|| u64::try_from(since / interval).ok())
                .flatten()
                .and_then(|tick| tick.checked_mul(n)?.checked_add(s as u64));
            let Some(index) = index.filter(|i| self.range.contains(i)) else {
                self.note(|| format!("{key}: a point at {time} that was not written"));
                continue;
            };
            self.rows[s] += 1;
            let tick = index / n;
            for ((column, cell), field) in rows.columns.iter().zip(row).zip(&fields).skip(1) {
                let Some(f) = *field else {
                    if !cell.is_null() {
                        self.note(|| format!("{key} at {time}: unexpected field {column}"));
                    }
                    continue;
                };
                let want = super::series::value(s as u64, tick, f as u64, series.fields[f].1);
                let ok = match want {
                    Value::Int(v) => cell.as_u64() == Some(v),
                    Value::Quarter(_) => cell.as_f64() == Some(want.as_f64()),
                };
                if !ok {
                    let want = match want {
                        Value::Int(v) => v.to_string(),
                        Value::Quarter(_) => want.as_f64().to_string(),
                    };
                    self.note(|| format!("{key} at {time}: {column}={cell}, expected {want}"));
                }
            }
        }
    }

    /// The outcome once every piece was taken: also the series short of rows. An error for an
    /// answer without a single piece.
    pub fn finish(mut self) -> Result<Readback, String> {
        if self.pieces == 0 {
            return Err("the point query's answer was empty".to_owned());
        }
        let n = self.workload.cardinality();
        for s in 0..self.rows.len() {
            let expected = points_of_series(&self.range, n, s as u64);
            let got = self.rows[s];
            if got != expected {
                let key = self.workload.series[s].key.clone();
                self.note(|| format!("{key}: {got} points read back, expected {expected}"));
            }
        }
        Ok(self.out)
    }
}

/// How many indexes of `range` belong to series `s` of `n` (those equal to `s` modulo `n`).
fn points_of_series(range: &Range<u64>, n: u64, s: u64) -> u64 {
    let below = |end: u64| end.saturating_sub(s).div_ceil(n);
    below(range.end) - below(range.start)
}
