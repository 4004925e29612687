//! InfluxQL text and InfluxDB `/query` answers, as verify and repair need them.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use crate::write::schema::quote_ident;

/// Quotes an InfluxQL string literal (`'…'`, with `\` and `'` escaped, and a line feed as
/// `\n`: InfluxQL refuses one raw, while line protocol takes it in a tag value).
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `"db"."rp"."measurement"`.
pub fn qualified(db: &str, rp: &str, measurement: &str) -> String {
    format!(
        "{}.{}.{}",
        quote_ident(db),
        quote_ident(rp),
        quote_ident(measurement)
    )
}

/// A `WHERE` condition that selects exactly one series: every tag key the measurement has,
/// equal to the series' value, or to `''` for the keys the series lacks (InfluxDB 1.x reads
/// `tag = ''` as "has no such tag"). `tags` holds every key, as `GROUP BY *` reports them.
/// Each key is marked `::tag`: a field of the same name would be taken otherwise.
pub fn series_condition(tags: &BTreeMap<String, String>) -> Option<String> {
    let parts: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{}::tag = {}", quote_ident(k), quote_string(v)))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" AND "))
}

/// One series of an answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Series {
    /// Measurement (or `databases`, `measurements` … for SHOW statements).
    #[serde(default)]
    pub name: String,
    /// Tags of the series (`GROUP BY`); an empty value means the series lacks the tag.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Column names; `time` first for SELECT.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Rows, one value per column (`null` where a point has no such field).
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
    /// Set on a piece of a series whose rows go on in the next piece (or, unchunked, on the
    /// series InfluxDB cut at its `max-row-limit`).
    #[serde(default)]
    pub partial: bool,
}

impl Series {
    /// Index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The text values of column `name` (SHOW statements).
    pub fn texts(&self, name: &str) -> Vec<String> {
        let Some(i) = self.column(name) else {
            return Vec::new();
        };
        self.values
            .iter()
            .filter_map(|row| row.get(i).and_then(|v| v.as_str()).map(str::to_owned))
            .collect()
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
    /// Set when more of the result follows in later pieces (or, unchunked, when InfluxDB cut
    /// the answer at its `max-row-limit`).
    #[serde(default)]
    partial: bool,
}

/// The series of the first statement of an answer, or the error InfluxDB gave. A chunked
/// answer (one object per piece) is put back together: a series InfluxDB split across pieces
/// is marked `partial` in all but its last.
pub fn parse_answer(body: &[u8]) -> Result<Vec<Series>, String> {
    let mut series: Vec<Series> = Vec::new();
    // Whether the last piece said that more of the result follows.
    let mut more = false;
    let mut pieces = 0;
    for answer in serde_json::Deserializer::from_slice(body).into_iter::<Answer>() {
        let answer = answer.map_err(|e| format!("unreadable answer: {e}"))?;
        pieces += 1;
        if let Some(e) = answer.error {
            return Err(e);
        }
        // One statement is sent at a time: every piece holds its result.
        let Some(result) = answer.results.into_iter().next() else {
            continue;
        };
        if let Some(e) = result.error {
            return Err(e);
        }
        for s in result.series {
            match series.last_mut() {
                Some(last)
                    if last.partial
                        && (&last.name, &last.tags, &last.columns)
                            == (&s.name, &s.tags, &s.columns) =>
                {
                    last.values.extend(s.values);
                    last.partial = s.partial;
                }
                _ => series.push(s),
            }
        }
        more = result.partial;
    }
    if pieces == 0 {
        // A connection that ended right after the headers: not an empty result.
        return Err("unreadable answer: empty".to_owned());
    }
    if more || series.iter().any(|s| s.partial) {
        // Taken whole, it would hide what lies past the cut from the comparison.
        return Err(
            "the answer ended where InfluxDB said more was to come (cut at the backend's [http] max-row-limit, or a piece lost)".to_owned(),
        );
    }
    Ok(series)
}
