//! Points read back with `SELECT * … GROUP BY *` (epoch=ns), rebuilt into line protocol that
//! stores exactly the same point: field types from `SHOW FIELD KEYS` (JSON cannot tell the
//! integer 2 from the float 2.0), tags from the series, escaping as InfluxDB 1.6's own
//! `models.Point.String()` does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A field's type as `SHOW FIELD KEYS` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// `float`: written without suffix.
    Float,
    /// `integer`: written with the `i` suffix.
    Integer,
    /// `string`: quoted, `"` and `\` escaped.
    String,
    /// `boolean`: `true` / `false`.
    Boolean,
}

impl FieldType {
    /// Reads `SHOW FIELD KEYS`' `fieldType` column; `None` for a type 1.6 cannot write.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "float" => Some(Self::Float),
            "integer" => Some(Self::Integer),
            "string" => Some(Self::String),
            "boolean" => Some(Self::Boolean),
            _ => None,
        }
    }
}

/// Why a row cannot be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError {
    /// A column with no type in `SHOW FIELD KEYS` (a field and a tag of the same name, or the
    /// schema changed while reading).
    #[error("field {0:?} has no known type")]
    UnknownField(String),
    /// A value that does not fit its field's type (the field has several types across shards).
    #[error("field {field:?}: value {value} is not a {kind:?}")]
    Value {
        /// The field.
        field: String,
        /// The value as JSON.
        value: String,
        /// The type `SHOW FIELD KEYS` gave.
        kind: FieldType,
    },
    /// A row without an integer time.
    #[error("row without a nanosecond timestamp")]
    Time,
    /// A field with several types across shards: InfluxDB answers its values in one of
    /// them, so which a point had cannot be told, and written in the wrong one it would
    /// refuse later writes of the right one.
    #[error(
        "field {0:?} has several types in different shards ({1}): not copied, since which one each point had cannot be told; copy it by hand"
    )]
    SeveralTypes(String, String),
}

/// Escapes a measurement name: `,` and space.
pub fn escape_measurement(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, ',' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Escapes a tag key, tag value or field key: `,`, `=` and space.
pub fn escape_key(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Writes a string field value with its quotes: `"` and `\` escaped.
pub fn quote_string_field(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Writes a float so that it parses back to the same value (shortest round-trip form).
pub fn format_float(f: f64, out: &mut String) {
    // Debug is the shortest representation that round-trips, with an exponent for very large
    // and very small magnitudes (which line protocol accepts) instead of hundreds of zeros.
    let _ = write!(out, "{f:?}");
}

/// Rebuilds the rows of one series.
#[derive(Debug, Clone)]
pub struct SeriesWriter {
    /// `measurement,tag=value,…` escaped, tags sorted, empty values left out.
    prefix: String,
    /// Per column: the escaped field key and its type; `None` for `time`.
    columns: Vec<Option<(String, String, FieldType)>>,
    /// Index of the `time` column.
    time: usize,
}

impl SeriesWriter {
    /// A writer for rows with `columns` (as `SELECT *` returned them) of the series
    /// `measurement` + `tags`, with the field types of the measurement.
    pub fn new(
        measurement: &str,
        tags: &BTreeMap<String, String>,
        columns: &[String],
        types: &BTreeMap<String, FieldType>,
    ) -> Result<Self, RebuildError> {
        let mut prefix = String::with_capacity(measurement.len() + 16 * tags.len());
        escape_measurement(measurement, &mut prefix);
        for (k, v) in tags {
            if k.is_empty() || v.is_empty() {
                continue;
            }
            prefix.push(',');
            escape_key(k, &mut prefix);
            prefix.push('=');
            escape_key(v, &mut prefix);
        }
        let mut time = None;
        let mut cols = Vec::with_capacity(columns.len());
        for (i, c) in columns.iter().enumerate() {
            if c == "time" && time.is_none() {
                time = Some(i);
                cols.push(None);
                continue;
            }
            let kind = *types
                .get(c)
                .ok_or_else(|| RebuildError::UnknownField(c.clone()))?;
            let mut key = String::with_capacity(c.len());
            escape_key(c, &mut key);
            cols.push(Some((c.clone(), key, kind)));
        }
        Ok(Self {
            prefix,
            columns: cols,
            time: time.ok_or(RebuildError::Time)?,
        })
    }

    /// Appends the line of one row to `out` (with its `\n`); `Ok(false)` when the row has no
    /// field value (nothing to write).
    pub fn push_row(
        &self,
        row: &[serde_json::Value],
        out: &mut String,
    ) -> Result<bool, RebuildError> {
        let time = row
            .get(self.time)
            .and_then(serde_json::Value::as_i64)
            .ok_or(RebuildError::Time)?;
        let start = out.len();
        out.push_str(&self.prefix);
        let mut any = false;
        for (column, value) in self.columns.iter().zip(row) {
            let Some((name, key, kind)) = column else {
                continue;
            };
            if value.is_null() {
                continue;
            }
            out.push(if any { ',' } else { ' ' });
            any = true;
            out.push_str(key);
            out.push('=');
            let bad = || RebuildError::Value {
                field: name.clone(),
                value: value.to_string(),
                kind: *kind,
            };
            match kind {
                FieldType::Float => format_float(value.as_f64().ok_or_else(bad)?, out),
                FieldType::Integer => {
                    let _ = write!(out, "{}i", value.as_i64().ok_or_else(bad)?);
                }
                FieldType::String => quote_string_field(value.as_str().ok_or_else(bad)?, out),
                FieldType::Boolean => {
                    out.push_str(if value.as_bool().ok_or_else(bad)? {
                        "true"
                    } else {
                        "false"
                    });
                }
            }
        }
        if !any {
            out.truncate(start);
            return Ok(false);
        }
        let _ = writeln!(out, " {time}");
        Ok(true)
    }
}
