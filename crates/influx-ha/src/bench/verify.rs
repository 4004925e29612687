//! Verification: does a backend hold exactly the points of a range of the stream?
//!
//! The expected state is computed from the workload alone (no record of what was sent is
//! kept): for every series, per field, the number of points and the sum of their values. Each
//! backend is asked `SELECT count(*), sum(*) FROM /.*/ WHERE <time range> GROUP BY *` in the
//! database, and the answer must match series for series and field for field — a missing or an
//! extra point, a different value, or a series that should not be there all show. Float values
//! are multiples of 0.25 and integer sums are added by InfluxDB in int64, so sums compare
//! exactly. This cheap check is polled while replication converges; each time it matches, every
//! point is read back and checked row by row ([`super::readback`]), which also catches what
//! totals cannot: a point at another time, or wrong values whose errors cancel out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use serde_json::Value as Json;

use super::series::{Value, Workload};
use super::{BenchError, HttpClient};
use crate::http::query::encode_component;

/// How many differences a report lists, at most.
const MAX_LISTED: usize = 8;
/// Longest query answer read.
const MAX_ANSWER: usize = 512 << 20;

/// The count and sum of one field of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldTotal {
    /// Points holding the field.
    pub count: u64,
    /// Sum of integer values (exact).
    pub int_sum: i128,
    /// Sum of float values (exact: multiples of 0.25).
    pub float_sum: f64,
    /// Whether the field is an integer.
    pub integer: bool,
}

/// Per series key (`measurement,tag=value,…`), per field name, what a backend should hold.
pub type Totals = BTreeMap<String, BTreeMap<String, FieldTotal>>;

/// The totals of points `range` of `workload`.
pub fn expected(workload: &Workload, range: std::ops::Range<u64>) -> Totals {
    let n = workload.cardinality();
    let mut totals = Totals::new();
    for (s, series) in workload.series.iter().enumerate() {
        let s = s as u64;
        let entry = totals.entry(series.key.clone()).or_default();
        for (f, (name, integer)) in series.fields.iter().enumerate() {
            let mut t = FieldTotal {
                count: 0,
                int_sum: 0,
                float_sum: 0.0,
                integer: *integer,
            };
            // Points of series s inside the range: indexes tick * n + s.
            let first_tick = range.start.saturating_sub(s).div_ceil(n);
            let mut index = first_tick * n + s;
            while index < range.end {
                if index >= range.start {
                    t.count += 1;
                    match super::series::value(s, index / n, f as u64, *integer) {
                        Value::Int(v) => t.int_sum += i128::from(v),
                        q @ Value::Quarter(_) => t.float_sum += q.as_f64(),
                    }
                }
                index += n;
            }
            if t.count > 0 {
                entry.insert(name.clone(), t);
            }
        }
    }
    totals.retain(|_, fields| !fields.is_empty());
    totals
}

/// What one backend holds, compared with what it should.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackendCheck {
    /// The backend's URL.
    pub url: String,
    /// Whether it holds exactly the expected points.
    pub exact: bool,
    /// Series expected.
    pub series_expected: u64,
    /// Series found in the time range.
    pub series_found: u64,
    /// Points expected.
    pub points_expected: u64,
    /// Points found in the time range (per series, the largest field count).
    pub points_found: u64,
    /// Rows read back and checked one by one; `None` when the totals differed (the points are
    /// read back when the totals match).
    pub rows_read: Option<u64>,
    /// The first differences, for people.
    pub differences: Vec<String>,
    /// Seconds spent waiting for the backend to match (replication converges asynchronously).
    pub waited_s: f64,
}

/// Where the points were written, and the credentials to read them with.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The database.
    pub db: &'a str,
    /// The retention policy (`None`: the database's default).
    pub rp: Option<&'a str>,
    /// `Authorization` for `/query`.
    pub auth: Option<&'a HeaderValue>,
}

/// Queries `url` and compares with `want`, the totals of points `points` of `workload`; when
/// they match, reads every point back.
pub async fn check(
    client: &HttpClient,
    url: &str,
    scope: Scope<'_>,
    time_range: (i64, i64),
    want: &Totals,
    (workload, points): (&Workload, std::ops::Range<u64>),
) -> Result<BackendCheck, BenchError> {
    let mut from = String::new();
    if let Some(rp) = scope.rp {
        quote_ident(rp, &mut from);
        from.push('.');
    }
    from.push_str("/.*/");
    let q = format!(
        "SELECT count(*), sum(*) FROM {from} WHERE time >= {} AND time <= {} GROUP BY *",
        time_range.0, time_range.1
    );
    let body = query(client, url, scope.db, &q, scope.auth).await?;
    let found = parse_totals(&body).map_err(|message| BenchError::Verify {
        url: url.to_owned(),
        message,
    })?;
    let mut c = compare(url, want, &found);
    if !c.exact {
        return Ok(c);
    }
    let rows = super::readback::read_back(
        client,
        url,
        (scope.db, &from, scope.auth),
        time_range,
        workload,
        points,
    )
    .await?;
    c.rows_read = Some(rows.rows);
    if rows.mismatched > 0 {
        c.exact = false;
        c.differences = rows.differences;
        if rows.mismatched as usize > c.differences.len() {
            c.differences
                .push(format!("… {} differences in all", rows.mismatched));
        }
    }
    Ok(c)
}

/// `CREATE DATABASE db` on `url` (harmless when it exists).
pub async fn create_database(
    client: &HttpClient,
    url: &str,
    db: &str,
    auth: Option<&HeaderValue>,
) -> Result<(), BenchError> {
    let mut q = String::from("CREATE DATABASE ");
    quote_ident(db, &mut q);
    let body = post_query(client, url, &q, auth).await?;
    if let Some(e) = first_error(&body) {
        return Err(BenchError::Verify {
            url: url.to_owned(),
            message: format!("CREATE DATABASE {db:?}: {e}"),
        });
    }
    Ok(())
}

fn quote_ident(name: &str, out: &mut String) {
    out.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

async fn query(
    client: &HttpClient,
    url: &str,
    db: &str,
    q: &str,
    auth: Option<&HeaderValue>,
) -> Result<Json, BenchError> {
    let mut path = String::from("/query?db=");
    encode_component(db, &mut path);
    path.push_str("&q=");
    encode_component(q, &mut path);
    exchange(client, url, Method::GET, &path, Bytes::new(), auth).await
}

async fn post_query(
    client: &HttpClient,
    url: &str,
    q: &str,
    auth: Option<&HeaderValue>,
) -> Result<Json, BenchError> {
    let mut form = String::from("q=");
    encode_component(q, &mut form);
    exchange(client, url, Method::POST, "/query", Bytes::from(form), auth).await
}

async fn exchange(
    client: &HttpClient,
    url: &str,
    method: Method,
    path: &str,
    body: Bytes,
    auth: Option<&HeaderValue>,
) -> Result<Json, BenchError> {
    let fail = |message: String| BenchError::Verify {
        url: url.to_owned(),
        message,
    };
    let uri: Uri = format!("{}{path}", url.trim_end_matches('/'))
        .parse()
        .map_err(|e| fail(format!("invalid URL: {e}")))?;
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        req = req.header(http::header::AUTHORIZATION, auth.clone());
    }
    if !body.is_empty() {
        req = req.header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| fail(format!("invalid request: {e}")))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| fail(format!("query failed: {e}")))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| fail(format!("cannot read the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(fail(format!(
                "query answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).trim()
            )));
        }
        serde_json::from_slice::<Json>(&bytes)
            .map_err(|e| fail(format!("the answer is not JSON: {e}")))
    };
    tokio::time::timeout(Duration::from_secs(120), exchange)
        .await
        .map_err(|_| fail("no answer to the query within 120 s".to_owned()))?
}

fn first_error(body: &Json) -> Option<String> {
    if let Some(e) = body.get("error").and_then(Json::as_str) {
        return Some(e.to_owned());
    }
    body.get("results")?
        .as_array()?
        .iter()
        .find_map(|r| r.get("error").and_then(Json::as_str).map(str::to_owned))
}

/// A number found in an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Found {
    Int(i128),
    Float(f64),
}

/// Per series key, per field: (count, sum).
type FoundTotals = BTreeMap<String, BTreeMap<String, (u64, Option<Found>)>>;

/// Reads a `count(*), sum(*) … GROUP BY *` answer.
fn parse_totals(body: &Json) -> Result<FoundTotals, String> {
    if let Some(e) = first_error(body) {
        // An empty database answers without series; a missing one with an error.
        return Err(e);
    }
    let mut out = FoundTotals::new();
    let results = body
        .get("results")
        .and_then(Json::as_array)
        .ok_or("the answer has no results")?;
    for series in results
        .iter()
        .filter_map(|r| r.get("series").and_then(Json::as_array))
        .flatten()
    {
        let name = series
            .get("name")
            .and_then(Json::as_str)
            .ok_or("a series without name")?;
        let mut key = name.to_owned();
        if let Some(tags) = series.get("tags").and_then(Json::as_object) {
            let mut tags: Vec<_> = tags
                .iter()
                .filter_map(|(k, v)| v.as_str().filter(|v| !v.is_empty()).map(|v| (k, v)))
                .collect();
            tags.sort();
            for (k, v) in tags {
                let _ = write!(key, ",{k}={v}");
            }
        }
        let columns: Vec<&str> = series
            .get("columns")
            .and_then(Json::as_array)
            .ok_or("a series without columns")?
            .iter()
            .map(|c| c.as_str().unwrap_or(""))
            .collect();
        let row = series
            .get("values")
            .and_then(Json::as_array)
            .and_then(|v| v.first())
            .and_then(Json::as_array)
            .ok_or("a series without values")?;
        let fields = out.entry(key).or_default();
        for (column, cell) in columns.iter().zip(row) {
            if let Some(field) = column.strip_prefix("count_") {
                let n = cell.as_u64().unwrap_or(0);
                fields.entry(field.to_owned()).or_insert((0, None)).0 = n;
            } else if let Some(field) = column.strip_prefix("sum_") {
                let v = if let Some(i) = cell.as_i64() {
                    Some(Found::Int(i128::from(i)))
                } else if let Some(u) = cell.as_u64() {
                    Some(Found::Int(i128::from(u)))
                } else {
                    cell.as_f64().map(Found::Float)
                };
                fields.entry(field.to_owned()).or_insert((0, None)).1 = v;
            }
        }
        fields.retain(|_, (count, _)| *count > 0);
    }
    out.retain(|_, fields| !fields.is_empty());
    Ok(out)
}

fn compare(url: &str, want: &Totals, found: &FoundTotals) -> BackendCheck {
    let mut differences = Vec::new();
    let mut note = |d: String| {
        if differences.len() < MAX_LISTED {
            differences.push(d);
        }
    };
    let mut mismatched = 0u64;
    for (key, fields) in want {
        let Some(got) = found.get(key) else {
            mismatched += 1;
            note(format!("missing series {key}"));
            continue;
        };
        for (field, t) in fields {
            let (count, sum) = got.get(field).copied().unwrap_or((0, None));
            let sum_ok = match sum {
                // JSON drops the fraction of a whole float sum: compare by the field's type.
                Some(Found::Int(v)) => {
                    if t.integer {
                        v == t.int_sum
                    } else {
                        v as f64 == t.float_sum
                    }
                }
                Some(Found::Float(v)) => {
                    if t.integer {
                        v == t.int_sum as f64
                    } else {
                        v == t.float_sum
                    }
                }
                None => t.count == 0,
            };
            if count != t.count {
                mismatched += 1;
                note(format!(
                    "{key} field {field}: {count} points, expected {}",
                    t.count
                ));
            } else if !sum_ok {
                mismatched += 1;
                let want = if t.integer {
                    t.int_sum.to_string()
                } else {
                    t.float_sum.to_string()
                };
                note(format!(
                    "{key} field {field}: sum {}, expected {want}",
                    match sum {
                        Some(Found::Int(v)) => v.to_string(),
                        Some(Found::Float(v)) => v.to_string(),
                        None => "none".to_owned(),
                    }
                ));
            }
        }
        for field in got.keys().filter(|f| !fields.contains_key(*f)) {
            mismatched += 1;
            note(format!("{key}: unexpected field {field}"));
        }
    }
    for key in found.keys().filter(|k| !want.contains_key(*k)) {
        mismatched += 1;
        note(format!("unexpected series {key}"));
    }
    if mismatched as usize > differences.len() {
        differences.push(format!("… {} differences in all", mismatched));
    }
    let points = |fields: &mut dyn Iterator<Item = u64>| fields.max().unwrap_or(0);
    BackendCheck {
        url: url.to_owned(),
        exact: mismatched == 0,
        series_expected: want.len() as u64,
        series_found: found.len() as u64,
        points_expected: want
            .values()
            .map(|f| points(&mut f.values().map(|t| t.count)))
            .sum(),
        points_found: found
            .values()
            .map(|f| points(&mut f.values().map(|(c, _)| *c)))
            .sum(),
        rows_read: None,
        differences,
        waited_s: 0.0,
    }
}

#[cfg(test)]
pub(super) fn parse_and_compare(
    url: &str,
    want: &Totals,
    body: &str,
) -> Result<BackendCheck, String> {
    let json: Json = serde_json::from_str(body).map_err(|e| e.to_string())?;
    Ok(compare(url, want, &parse_totals(&json)?))
}
