//! Repair: copies each differing piece (one series, one time range) from the backend that
//! holds most of it to the others, then verifies again.
//!
//! Points are read in chunks (`SELECT * … WHERE <series> AND time >= t … GROUP BY * LIMIT n`,
//! the next chunk from the last timestamp read, which is exact because a series holds one point
//! per timestamp), rebuilt into line protocol ([`super::rebuild`]) and written with the target
//! backend's service credentials. Writing a point InfluxDB already holds changes nothing, so a
//! repair stopped anywhere (even `kill -9`) and started again converges: it verifies first and
//! copies what still differs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use super::RepairError;
use super::conn::{Conn, Traffic, answer_too_long};
use super::influxql::{qualified, quote_ident, series_condition};
use super::progress::Progress;
use super::rebuild::{FieldType, RebuildError, SeriesWriter};
use super::verify::{Report, Scope, Unit, WindowDiff, schema_statement, verify};

/// How a repair runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairOptions {
    /// Points per SELECT (halved while an answer is too long to read).
    pub chunk: usize,
    /// How many verify-and-copy rounds at most (a live cluster keeps writing; a second round
    /// takes what changed during the first).
    pub passes: u32,
}

impl Default for RepairOptions {
    fn default() -> Self {
        Self {
            chunk: 5000,
            passes: 3,
        }
    }
}

/// What a repair did.
#[derive(Debug, Clone)]
pub struct RepairOutcome {
    /// What the first verify found.
    pub before: Report,
    /// What the last verify found: [`Report::matches`] when the backends are identical.
    pub after: Report,
    /// Copy rounds run.
    pub passes: u32,
    /// Schema statements sent.
    pub statements: u64,
    /// Points written (counted once per target backend).
    pub points: u64,
    /// Pieces that could not be copied, and why (a value the target refuses, say); the other
    /// pieces were copied.
    pub failures: Vec<String>,
}

/// Field types of measurements, per backend: (backend, db, rp, measurement) → field → type,
/// and the fields with several types (across shards), with them all.
type TypeCache = HashMap<
    (usize, String, String, String),
    (BTreeMap<String, FieldType>, BTreeMap<String, String>),
>;

async fn field_types<'a>(
    cache: &'a mut TypeCache,
    conns: &[Conn],
    source: usize,
    w: &WindowDiff,
) -> Result<&'a (BTreeMap<String, FieldType>, BTreeMap<String, String>), RepairError> {
    let key = (source, w.db.clone(), w.rp.clone(), w.measurement.clone());
    if !cache.contains_key(&key) {
        let q = format!(
            "SHOW FIELD KEYS FROM {}.{}",
            quote_ident(&w.rp),
            quote_ident(&w.measurement)
        );
        let mut types = BTreeMap::new();
        let mut several = BTreeMap::<String, String>::new();
        for s in conns[source].select(&q, Some(&w.db)).await? {
            let (Some(k), Some(t)) = (s.column("fieldKey"), s.column("fieldType")) else {
                continue;
            };
            for row in &s.values {
                let name = row.get(k).and_then(|v| v.as_str());
                let kind = row
                    .get(t)
                    .and_then(|v| v.as_str())
                    .and_then(FieldType::parse);
                if let (Some(name), Some(kind)) = (name, kind) {
                    let first = *types.entry(name.to_owned()).or_insert(kind);
                    if first != kind {
                        let all = several
                            .entry(name.to_owned())
                            .or_insert_with(|| format!("{first:?}"));
                        all.push_str(&format!(", {kind:?}"));
                    }
                }
            }
        }
        cache.insert(key.clone(), (types, several));
    }
    Ok(&cache[&key])
}

/// Copies one piece from its most complete backend to the backends whose count differs.
async fn copy_unit(
    conns: &[Conn],
    w: &WindowDiff,
    u: &Unit,
    cache: &mut TypeCache,
    chunk: usize,
    progress: &Progress,
) -> Result<(), RepairError> {
    // The most complete backend; the first one on a tie.
    let Some(source) = (0..u.values.len()).max_by_key(|&i| (u.values[i], usize::MAX - i)) else {
        return Ok(());
    };
    let targets: Vec<usize> = (0..u.values.len())
        .filter(|&i| i != source && u.values[i] != u.values[source])
        .collect();
    let Some(tags) = u.tags[source].as_ref() else {
        return Ok(());
    };
    if targets.is_empty() {
        return Ok(());
    }
    let (types, several) = field_types(cache, conns, source, w).await?.clone();
    let condition = series_condition(tags).map_or_else(String::new, |c| format!("{c} AND "));
    let from = qualified(&w.db, &w.rp, &w.measurement);
    let mut start = u.start;
    let mut limit = chunk.max(1);
    loop {
        let q = format!(
            "SELECT * FROM {from} WHERE {condition}time >= {start} AND time < {} GROUP BY * LIMIT {limit}",
            u.end
        );
        let series = match conns[source].select(&q, Some(&w.db)).await {
            Ok(s) => s,
            Err(e) if answer_too_long(&e) && limit > 1 => {
                limit /= 2;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut body = String::new();
        let mut points = 0u64;
        let mut longest = 0usize;
        let mut last = None;
        let rebuild_error = |e| RepairError::Rebuild {
            backend: conns[source].name().to_owned(),
            series: u.series.clone(),
            source: e,
        };
        for s in &series {
            // Only where this series holds values of such a field (columns list every field of
            // the measurement, nulls where a series has none).
            let holds = |i: usize| {
                s.values
                    .iter()
                    .any(|row| row.get(i).is_some_and(|v| !v.is_null()))
            };
            if let Some((field, kinds)) = s
                .columns
                .iter()
                .enumerate()
                .filter(|&(i, _)| holds(i))
                .find_map(|(_, c)| several.get_key_value(c))
            {
                return Err(rebuild_error(RebuildError::SeveralTypes(
                    field.clone(),
                    kinds.clone(),
                )));
            }
            let writer = SeriesWriter::new(&w.measurement, &s.tags, &s.columns, &types)
                .map_err(rebuild_error)?;
            longest = longest.max(s.values.len());
            for row in &s.values {
                if writer.push_row(row, &mut body).map_err(rebuild_error)? {
                    points += 1;
                }
                if let Some(t) = row.first().and_then(serde_json::Value::as_i64) {
                    last = Some(last.map_or(t, |l: i64| l.max(t)));
                }
            }
        }
        if points > 0 {
            for &t in &targets {
                conns[t].write(&w.db, &w.rp, body.clone(), points).await?;
            }
            progress.points(points * targets.len() as u64);
        }
        match last {
            Some(t) if longest >= limit && t < u.end - 1 => start = t + 1,
            _ => return Ok(()),
        }
    }
}

/// Verifies `scope`, copies what differs, and verifies again, up to `options.passes` rounds.
pub async fn repair(
    conns: &[Conn],
    traffic: &Traffic,
    scope: &Scope,
    options: &RepairOptions,
    progress: &Progress,
) -> Result<RepairOutcome, RepairError> {
    let points_before = traffic.points.load(Ordering::Relaxed);
    let before = verify(conns, traffic, scope).await?;
    let mut report = before.clone();
    let mut outcome = RepairOutcome {
        before,
        after: Report::default(),
        passes: 0,
        statements: 0,
        points: 0,
        failures: Vec::new(),
    };
    let mut cache = TypeCache::new();
    while !report.matches() && outcome.passes < options.passes {
        outcome.passes += 1;
        outcome.failures.clear();
        // Databases and retention policies first (the copies need them), continuous queries
        // last (they then start from complete data).
        let (cq, rest): (Vec<_>, Vec<_>) = report
            .schema
            .iter()
            .partition(|d| matches!(d, super::verify::SchemaDiff::ContinuousQuery { .. }));
        for d in &rest {
            apply_schema(conns, d, &mut outcome).await?;
        }
        let pieces: u64 = report.windows.iter().map(|w| w.units.len() as u64).sum();
        progress.start_pass(outcome.passes, pieces);
        for w in &report.windows {
            for u in &w.units {
                match copy_unit(conns, w, u, &mut cache, options.chunk, progress).await {
                    Ok(()) => {}
                    Err(e @ (RepairError::Rebuild { .. } | RepairError::Write { .. })) => {
                        tracing::warn!(error = %e, "piece not copied");
                        outcome.failures.push(e.to_string());
                    }
                    Err(e) => return Err(e),
                }
                progress.piece_done();
            }
        }
        for d in &cq {
            apply_schema(conns, d, &mut outcome).await?;
        }
        report = verify(conns, traffic, scope).await?;
    }
    progress.finish();
    outcome.after = report;
    outcome.points = traffic.points.load(Ordering::Relaxed) - points_before;
    Ok(outcome)
}

async fn apply_schema(
    conns: &[Conn],
    d: &super::verify::SchemaDiff,
    outcome: &mut RepairOutcome,
) -> Result<(), RepairError> {
    let Some((db, statement, missing)) = schema_statement(d) else {
        return Ok(());
    };
    // A database just created has a default `autogen`; when the copied one has other
    // settings it already exists: altered to them instead.
    let alter = match d {
        super::verify::SchemaDiff::RetentionPolicy { db, rp, .. } => {
            Some(crate::write::schema::alter_statement(db, rp))
        }
        _ => None,
    };
    for &i in missing {
        tracing::info!(backend = conns[i].name(), statement, "schema copied");
        match (conns[i].select(&statement, db).await, &alter) {
            (Err(RepairError::Query { message, .. }), Some(alter))
                if message.contains("retention policy already exists") =>
            {
                tracing::info!(
                    backend = conns[i].name(),
                    statement = alter,
                    "schema copied"
                );
                conns[i].select(alter, db).await?;
            }
            (other, _) => {
                other?;
            }
        }
        outcome.statements += 1;
    }
    Ok(())
}
