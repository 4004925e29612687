//! Finding what differs between backends, reading aggregates rather than points.
//!
//! 1. Schema: `SHOW DATABASES`, `SHOW RETENTION POLICIES`, `SHOW CONTINUOUS QUERIES` on every
//!    backend; what one has and another lacks is a [`SchemaDiff`].
//! 2. Windows: per database and retention policy, one query per backend counts the field
//!    values of every measurement per shard-group window:
//!    `SELECT count(*) FROM "db"."rp"./.*/ WHERE time … GROUP BY time(<shard duration>)
//!    fill(none)`. Windows whose counts differ are kept (falls back to one query per
//!    measurement when the answer is too long).
//! 3. Units: per differing window, one query per backend counts per series and per sixteenth
//!    of the window (`GROUP BY *, time(…)`); the (series, time range) pieces that differ are
//!    what repair copies, so repair reads only what is missing somewhere.
//!
//! On identical backends this is 3 queries per backend plus one per database and one per
//! retention policy, whatever the amount of data. Counts do not see a point whose value
//! differs with the same timestamp on two backends (writes are idempotent, so replication
//! never produces one).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::RepairError;
use super::conn::{Conn, Traffic, answer_too_long};
use super::influxql::{Series, qualified, quote_ident};
use super::rebuild::{escape_key, escape_measurement};
use super::timespec::{MAX_TIME, MIN_TIME, format_span, format_time};
use crate::write::schema::{RetentionPolicy, parse_go_duration};

/// Into how many pieces a differing window is cut, per series.
pub const SUBDIVISIONS: i64 = 16;

/// What to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// One database, or every database but `_internal`.
    pub db: Option<String>,
    /// Start of the time range (inclusive, ns).
    pub since: i64,
    /// End of the time range (exclusive, ns).
    pub until: i64,
}

impl Default for Scope {
    fn default() -> Self {
        Self {
            db: None,
            since: MIN_TIME,
            until: MAX_TIME,
        }
    }
}

impl Scope {
    /// Whether this scope covers every database and all of time: only then can a clean
    /// verify clear a backend's diverged flag.
    pub fn is_everything(&self) -> bool {
        self.db.is_none() && self.since <= MIN_TIME && self.until >= MAX_TIME
    }

    fn includes(&self, db: &str) -> bool {
        db != "_internal" && self.db.as_deref().is_none_or(|d| d == db)
    }
}

/// A difference in schema. Backends are given by their index in the run's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaDiff {
    /// A database some backends lack.
    Database {
        /// The database.
        db: String,
        /// The backends without it.
        missing: Vec<usize>,
    },
    /// A retention policy some backends lack (settings as the first backend holding it).
    RetentionPolicy {
        /// The database.
        db: String,
        /// The policy with its real durations.
        rp: RetentionPolicy,
        /// The backends without it.
        missing: Vec<usize>,
    },
    /// A retention policy whose settings differ (reported, not changed by repair).
    RetentionPolicySettings {
        /// The database.
        db: String,
        /// The policy.
        rp: String,
        /// What differs, in words.
        detail: String,
    },
    /// A continuous query some backends lack.
    ContinuousQuery {
        /// Its database.
        db: String,
        /// Its name.
        name: String,
        /// The `CREATE CONTINUOUS QUERY` statement, as `SHOW CONTINUOUS QUERIES` gives it.
        query: String,
        /// The backends without it.
        missing: Vec<usize>,
    },
    /// A continuous query whose statement differs (reported, not changed by repair).
    ContinuousQuerySettings {
        /// Its database.
        db: String,
        /// Its name.
        name: String,
        /// What differs, in words.
        detail: String,
    },
}

/// A piece of one series in one time range whose count differs between backends: what repair
/// copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The series key (`measurement,tag=value`), for people.
    pub series: String,
    /// Per backend: the series' tags with every tag key the backend knows for the
    /// measurement (empty value: the series lacks it); `None` where the backend has none of it.
    pub tags: Vec<Option<BTreeMap<String, String>>>,
    /// Start (inclusive, ns).
    pub start: i64,
    /// End (exclusive, ns).
    pub end: i64,
    /// Per backend: field values in the piece.
    pub values: Vec<u64>,
}

/// A window of one measurement whose counts differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowDiff {
    /// Database.
    pub db: String,
    /// Retention policy.
    pub rp: String,
    /// Measurement.
    pub measurement: String,
    /// Start (inclusive, ns).
    pub start: i64,
    /// End (exclusive, ns).
    pub end: i64,
    /// Per backend: field values in the window (`count(*)` summed over the fields).
    pub values: Vec<u64>,
    /// The differing pieces.
    pub units: Vec<Unit>,
}

/// What verify found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The backends compared, in config order.
    pub backends: Vec<String>,
    /// Schema differences.
    pub schema: Vec<SchemaDiff>,
    /// Differing windows.
    pub windows: Vec<WindowDiff>,
    /// Windows compared (measurement × window holding data on some backend).
    pub windows_compared: u64,
    /// Queries sent, over every backend.
    pub queries: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// When it began (Unix ms): a diverged flag set after this is not covered by it.
    pub started_ms: u64,
}

impl Report {
    /// Whether the backends hold the same schema and the same counts everywhere.
    pub fn matches(&self) -> bool {
        self.schema.is_empty() && self.windows.is_empty()
    }

    /// Field values that differ from the most complete backend, summed over the windows.
    pub fn missing_values(&self) -> u64 {
        self.windows
            .iter()
            .map(|w| {
                let max = w.values.iter().copied().max().unwrap_or(0);
                w.values.iter().map(|v| max - v).sum::<u64>()
            })
            .sum()
    }

    /// The report for people: schema differences, then a table of the differing windows.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let names = |ix: &[usize]| {
            ix.iter()
                .filter_map(|&i| self.backends.get(i).map(String::as_str))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for d in &self.schema {
            let _ = match d {
                SchemaDiff::Database { db, missing } => {
                    writeln!(s, "database {db:?} is missing on {}", names(missing))
                }
                SchemaDiff::RetentionPolicy { db, rp, missing } => writeln!(
                    s,
                    "retention policy {:?} on {db:?} is missing on {}",
                    rp.name,
                    names(missing)
                ),
                SchemaDiff::RetentionPolicySettings { db, rp, detail } => {
                    writeln!(s, "retention policy {rp:?} on {db:?} differs: {detail}")
                }
                SchemaDiff::ContinuousQuery {
                    db, name, missing, ..
                } => writeln!(
                    s,
                    "continuous query {name:?} on {db:?} is missing on {}",
                    names(missing)
                ),
                SchemaDiff::ContinuousQuerySettings { db, name, detail } => {
                    writeln!(s, "continuous query {name:?} on {db:?} differs: {detail}")
                }
            };
        }
        if !self.windows.is_empty() {
            if !self.schema.is_empty() {
                s.push('\n');
            }
            let mut header = vec![
                "DATABASE".to_owned(),
                "RP".to_owned(),
                "MEASUREMENT".to_owned(),
                "WINDOW START (UTC)".to_owned(),
                "LENGTH".to_owned(),
            ];
            header.extend(self.backends.iter().cloned());
            header.push("SERIES DIFFERING".to_owned());
            let mut rows = vec![header];
            for w in &self.windows {
                let mut row = vec![
                    w.db.clone(),
                    w.rp.clone(),
                    w.measurement.clone(),
                    format_time(w.start),
                    format_span(w.end - w.start),
                ];
                row.extend(w.values.iter().map(u64::to_string));
                let series: BTreeSet<&str> = w.units.iter().map(|u| u.series.as_str()).collect();
                row.push(series.len().to_string());
                rows.push(row);
            }
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
                .collect();
            for row in &rows {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, w)| format!("{cell:w$}"))
                    .collect();
                let _ = writeln!(s, "{}", line.join("  ").trim_end());
            }
            let _ = writeln!(
                s,
                "(counts are field values: points × fields; {} missing against the most complete backend)",
                self.missing_values()
            );
        }
        let verdict = if self.matches() {
            "backends match"
        } else {
            "backends differ"
        };
        let _ = writeln!(
            s,
            "{verdict}: {} windows compared, {} differ, {} schema differences; {} queries in {:.1}s",
            self.windows_compared,
            self.windows.len(),
            self.schema.len(),
            self.queries,
            self.elapsed.as_secs_f64()
        );
        s
    }
}

/// Counts of one window or piece: field column (`count_f`) → values.
type Counts = BTreeMap<String, u64>;

fn total(c: Option<&Counts>) -> u64 {
    c.map_or(0, |c| c.values().sum())
}

/// The counts of one row of a `count(*)` answer, keyed by window start.
fn row_counts(series: &Series, row: &[serde_json::Value]) -> Option<(i64, Counts)> {
    let time = row.first()?.as_i64()?;
    let mut counts = Counts::new();
    for (col, v) in series.columns.iter().zip(row).skip(1) {
        if let Some(n) = v.as_u64().filter(|n| *n > 0) {
            counts.insert(col.clone(), n);
        }
    }
    (!counts.is_empty()).then_some((time, counts))
}

/// The series key for people and for matching series across backends: the measurement and
/// the tags with a value, sorted.
pub fn series_key(measurement: &str, tags: &BTreeMap<String, String>) -> String {
    // Escaped as in line protocol, so that `a=1,b=2` and `a=1\,b\=2` stay two series.
    let mut key = String::with_capacity(measurement.len() + 16 * tags.len());
    escape_measurement(measurement, &mut key);
    for (k, v) in tags.iter().filter(|(_, v)| !v.is_empty()) {
        key.push(',');
        escape_key(k, &mut key);
        key.push('=');
        escape_key(v, &mut key);
    }
    key
}

fn time_condition(start: i64, end: i64) -> String {
    format!("time >= {start} AND time < {end}")
}

async fn show_databases(c: &Conn) -> Result<BTreeSet<String>, RepairError> {
    let series = c.select("SHOW DATABASES", None).await?;
    Ok(series.iter().flat_map(|s| s.texts("name")).collect())
}

/// `SHOW CONTINUOUS QUERIES`: (database, name) → statement.
async fn show_continuous_queries(
    c: &Conn,
) -> Result<BTreeMap<(String, String), String>, RepairError> {
    let series = c.select("SHOW CONTINUOUS QUERIES", None).await?;
    let mut out = BTreeMap::new();
    for s in &series {
        let (Some(n), Some(q)) = (s.column("name"), s.column("query")) else {
            continue;
        };
        for row in &s.values {
            if let (Some(name), Some(query)) = (
                row.get(n).and_then(|v| v.as_str()),
                row.get(q).and_then(|v| v.as_str()),
            ) {
                out.insert((s.name.clone(), name.to_owned()), query.to_owned());
            }
        }
    }
    Ok(out)
}

async fn show_retention_policies(c: &Conn, db: &str) -> Result<Vec<RetentionPolicy>, RepairError> {
    let q = format!("SHOW RETENTION POLICIES ON {}", quote_ident(db));
    let series = c.select(&q, None).await?;
    let mut out = Vec::new();
    for s in &series {
        let col = |name: &str| s.column(name);
        let (Some(n), Some(d), Some(sg)) =
            (col("name"), col("duration"), col("shardGroupDuration"))
        else {
            continue;
        };
        for row in &s.values {
            let text = |i: usize| row.get(i).and_then(|v| v.as_str()).unwrap_or_default();
            let (Some(duration), Some(shard)) =
                (parse_go_duration(text(d)), parse_go_duration(text(sg)))
            else {
                return Err(RepairError::Query {
                    backend: c.name().to_owned(),
                    query: q.clone(),
                    message: format!("unreadable durations {:?}, {:?}", text(d), text(sg)),
                });
            };
            out.push(RetentionPolicy {
                name: text(n).to_owned(),
                duration: (!duration.is_zero()).then_some(duration),
                shard_group_duration: shard,
                replication: col("replicaN")
                    .and_then(|i| row.get(i))
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(1),
                default: col("default")
                    .and_then(|i| row.get(i))
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
            });
        }
    }
    Ok(out)
}

/// Window counts of every measurement of `db`.`rp`: (measurement, window start) → counts.
async fn window_counts(
    c: &Conn,
    db: &str,
    rp: &str,
    window: i64,
    scope: &Scope,
) -> Result<BTreeMap<(String, i64), Counts>, RepairError> {
    let range = time_condition(scope.since, scope.until);
    let all = format!(
        "SELECT count(*) FROM {}.{}./.*/ WHERE {range} GROUP BY time({window}ns) fill(none)",
        quote_ident(db),
        quote_ident(rp)
    );
    let series = match c.select(&all, Some(db)).await {
        Ok(s) => s,
        Err(e) if answer_too_long(&e) => {
            // Many measurements: one query each.
            let q = format!("SHOW MEASUREMENTS ON {}", quote_ident(db));
            let names: Vec<String> = c
                .select(&q, None)
                .await?
                .iter()
                .flat_map(|s| s.texts("name"))
                .collect();
            let mut series = Vec::new();
            for m in names {
                let one = format!(
                    "SELECT count(*) FROM {} WHERE {range} GROUP BY time({window}ns) fill(none)",
                    qualified(db, rp, &m)
                );
                series.extend(c.select(&one, Some(db)).await?);
            }
            series
        }
        Err(e) => return Err(e),
    };
    let mut out = BTreeMap::new();
    for s in &series {
        for row in &s.values {
            if let Some((t, counts)) = row_counts(s, row) {
                out.insert((s.name.clone(), t), counts);
            }
        }
    }
    Ok(out)
}

/// Per series and sub-window counts of one window on one backend:
/// (series key, piece start) → (tags, counts).
async fn piece_counts(
    c: &Conn,
    w: &WindowDiff,
    piece: i64,
) -> Result<BTreeMap<(String, i64), (BTreeMap<String, String>, Counts)>, RepairError> {
    let q = format!(
        "SELECT count(*) FROM {} WHERE {} GROUP BY *, time({piece}ns) fill(none)",
        qualified(&w.db, &w.rp, &w.measurement),
        time_condition(w.start, w.end)
    );
    let series = c.select(&q, Some(&w.db)).await?;
    let mut out = BTreeMap::new();
    for s in &series {
        let key = series_key(&w.measurement, &s.tags);
        for row in &s.values {
            if let Some((t, counts)) = row_counts(s, row) {
                out.insert((key.clone(), t), (s.tags.clone(), counts));
            }
        }
    }
    Ok(out)
}

/// Cuts a differing window into the (series, time range) pieces that differ.
async fn find_units(
    conns: &[Conn],
    present: &[bool],
    w: &WindowDiff,
    window: i64,
) -> Result<Vec<Unit>, RepairError> {
    let mut piece = (window / SUBDIVISIONS).max(1);
    let per_backend = 'retry: loop {
        let mut per_backend = Vec::with_capacity(conns.len());
        for (c, &has) in conns.iter().zip(present) {
            if !has {
                per_backend.push(BTreeMap::new());
                continue;
            }
            match piece_counts(c, w, piece).await {
                Ok(p) => per_backend.push(p),
                // Too many series for sixteenths in one answer: whole windows per series.
                Err(e) if answer_too_long(&e) && piece < window => {
                    piece = window;
                    continue 'retry;
                }
                Err(e) => return Err(e),
            }
        }
        break per_backend;
    };
    let keys: BTreeSet<&(String, i64)> = per_backend.iter().flat_map(|m| m.keys()).collect();
    let mut units: Vec<Unit> = Vec::new();
    for key in keys {
        let counts: Vec<Option<&Counts>> = per_backend
            .iter()
            .map(|m| m.get(key).map(|(_, c)| c))
            .collect();
        if counts.windows(2).all(|p| p[0] == p[1]) {
            continue;
        }
        let (series, t) = key;
        let start = (*t).max(w.start);
        let end = t.saturating_add(piece).min(w.end);
        let values: Vec<u64> = counts.iter().map(|c| total(*c)).collect();
        let tags: Vec<Option<BTreeMap<String, String>>> = per_backend
            .iter()
            .map(|m| m.get(key).map(|(tags, _)| tags.clone()))
            .collect();
        // Adjacent pieces of the same series are copied as one range.
        if let Some(last) = units.last_mut()
            && last.series == *series
            && last.end == start
        {
            last.end = end;
            for (v, add) in last.values.iter_mut().zip(&values) {
                *v += add;
            }
            for (have, new) in last.tags.iter_mut().zip(tags) {
                if have.is_none() {
                    *have = new;
                }
            }
            continue;
        }
        units.push(Unit {
            series: series.clone(),
            tags,
            start,
            end,
            values,
        });
    }
    Ok(units)
}

/// Compares every backend of `conns` over `scope`.
pub async fn verify(
    conns: &[Conn],
    traffic: &Traffic,
    scope: &Scope,
) -> Result<Report, RepairError> {
    let started = std::time::Instant::now();
    let started_ns = super::timespec::now_ns();
    let started_ms = u64::try_from(started_ns / 1_000_000).unwrap_or(0);
    let queries_before = traffic.queries.load(Ordering::Relaxed);
    let n = conns.len();
    let mut report = Report {
        backends: conns.iter().map(|c| c.name().to_owned()).collect(),
        started_ms,
        ..Report::default()
    };

    let mut dbs = Vec::with_capacity(n);
    let mut cqs = Vec::with_capacity(n);
    for c in conns {
        dbs.push(show_databases(c).await?);
        cqs.push(show_continuous_queries(c).await?);
    }
    let all_dbs: BTreeSet<&String> = dbs
        .iter()
        .flatten()
        .filter(|db| scope.includes(db))
        .collect();

    for db in all_dbs {
        let has_db: Vec<bool> = dbs.iter().map(|d| d.contains(db)).collect();
        let missing: Vec<usize> = (0..n).filter(|&i| !has_db[i]).collect();
        if !missing.is_empty() {
            report.schema.push(SchemaDiff::Database {
                db: db.clone(),
                missing,
            });
        }
        let mut rps: Vec<Vec<RetentionPolicy>> = Vec::with_capacity(n);
        for (c, &has) in conns.iter().zip(&has_db) {
            rps.push(if has {
                show_retention_policies(c, db).await?
            } else {
                Vec::new()
            });
        }
        let mut names: Vec<&RetentionPolicy> = Vec::new();
        for rp in rps.iter().flatten() {
            if !names.iter().any(|r| r.name == rp.name) {
                names.push(rp);
            }
        }
        for reference in names {
            let held: Vec<Option<&RetentionPolicy>> = rps
                .iter()
                .map(|list| list.iter().find(|r| r.name == reference.name))
                .collect();
            let missing: Vec<usize> = (0..n).filter(|&i| held[i].is_none()).collect();
            if !missing.is_empty() {
                report.schema.push(SchemaDiff::RetentionPolicy {
                    db: db.clone(),
                    rp: reference.clone(),
                    missing,
                });
            }
            for (i, rp) in held.iter().enumerate() {
                // Which policy is the default decides where writes without `rp` land.
                if let Some(rp) = rp
                    && (rp.duration != reference.duration
                        || rp.shard_group_duration != reference.shard_group_duration
                        || rp.default != reference.default)
                {
                    let default = |yes: bool| if yes { ", the default" } else { "" };
                    report.schema.push(SchemaDiff::RetentionPolicySettings {
                        db: db.clone(),
                        rp: reference.name.clone(),
                        detail: format!(
                            "{} has duration {:?} and shard duration {:?}{}, {} has {:?} and {:?}{}",
                            report.backends[i],
                            rp.duration,
                            rp.shard_group_duration,
                            default(rp.default),
                            report.backends[held.iter().position(Option::is_some).unwrap_or(0)],
                            reference.duration,
                            reference.shard_group_duration,
                            default(reference.default)
                        ),
                    });
                }
            }
            let window = i64::try_from(reference.shard_group_duration.as_nanos())
                .unwrap_or(i64::MAX)
                .max(1);
            // Each backend deletes shard groups past a finite retention on its own schedule:
            // the oldest one may differ for a while, and points copied into it would be
            // refused. Compare from one shard group after the retention horizon.
            let mut rp_scope = scope.clone();
            if let Some(d) = reference.duration {
                let d = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
                let horizon = started_ns.saturating_sub(d).saturating_add(window);
                rp_scope.since = rp_scope.since.max(horizon);
            }
            if rp_scope.since >= rp_scope.until {
                continue;
            }
            let scope = &rp_scope;
            let present: Vec<bool> = held.iter().map(Option::is_some).collect();
            let mut counts = Vec::with_capacity(n);
            for (c, &has) in conns.iter().zip(&present) {
                counts.push(if has {
                    window_counts(c, db, &reference.name, window, scope).await?
                } else {
                    BTreeMap::new()
                });
            }
            let keys: BTreeSet<&(String, i64)> = counts.iter().flat_map(|m| m.keys()).collect();
            report.windows_compared += keys.len() as u64;
            for key in keys {
                let per: Vec<Option<&Counts>> = counts.iter().map(|m| m.get(key)).collect();
                if per.windows(2).all(|p| p[0] == p[1]) {
                    continue;
                }
                let (measurement, t) = key;
                let mut w = WindowDiff {
                    db: db.clone(),
                    rp: reference.name.clone(),
                    measurement: measurement.clone(),
                    start: (*t).max(scope.since),
                    end: t.saturating_add(window).min(scope.until),
                    values: per.iter().map(|c| total(*c)).collect(),
                    units: Vec::new(),
                };
                w.units = find_units(conns, &present, &w, window).await?;
                report.windows.push(w);
            }
        }
    }

    // Continuous queries of the databases in scope.
    let all_cqs: BTreeSet<(&(String, String), &String)> = cqs
        .iter()
        .flat_map(|m| m.iter())
        .filter(|((db, _), _)| scope.includes(db))
        .collect();
    let mut seen = BTreeSet::new();
    for (key, query) in all_cqs {
        if !seen.insert(key) {
            continue;
        }
        let missing: Vec<usize> = (0..n).filter(|&i| !cqs[i].contains_key(key)).collect();
        if !missing.is_empty() {
            report.schema.push(SchemaDiff::ContinuousQuery {
                db: key.0.clone(),
                name: key.1.clone(),
                query: query.clone(),
                missing,
            });
        }
        // The same name with another statement computes other data with the same counts.
        let differing: Vec<&str> = (0..n)
            .filter(|&i| cqs[i].get(key).is_some_and(|q| q != query))
            .map(|i| report.backends[i].as_str())
            .collect();
        if !differing.is_empty() {
            report.schema.push(SchemaDiff::ContinuousQuerySettings {
                db: key.0.clone(),
                name: key.1.clone(),
                detail: format!(
                    "{} run another statement than {query:?}",
                    differing.join(", ")
                ),
            });
        }
    }

    report.queries = traffic.queries.load(Ordering::Relaxed) - queries_before;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The statement that gives the backends a schema difference names what they lack: (database
/// to run it in, statement, backends). `None` for differences repair reports but leaves alone.
pub fn schema_statement(d: &SchemaDiff) -> Option<(Option<&str>, String, &[usize])> {
    match d {
        SchemaDiff::Database { db, missing } => Some((
            None,
            format!("CREATE DATABASE {}", quote_ident(db)),
            missing,
        )),
        SchemaDiff::RetentionPolicy { db, rp, missing } => Some((
            None,
            crate::write::schema::create_statement(db, rp),
            missing,
        )),
        SchemaDiff::ContinuousQuery {
            db, query, missing, ..
        } => Some((Some(db), query.clone(), missing)),
        SchemaDiff::RetentionPolicySettings { .. } | SchemaDiff::ContinuousQuerySettings { .. } => {
            None
        }
    }
}
