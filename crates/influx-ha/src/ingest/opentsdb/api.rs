//! OpenTSDB's HTTP `POST /api/put`, converted as InfluxDB 1.6's OpenTSDB service converts it.
//!
//! The body is one JSON data point `{"metric":…,"timestamp":…,"value":…,"tags":{…}}` or an
//! array of them (gzip when `Content-Encoding: gzip`). Only the first JSON value is read, as
//! Go's decoder does; missing members are zero. A timestamp under 10,000,000,000 is seconds;
//! a larger one milliseconds, read as InfluxDB 1.6 reads it (whole seconds, then the last three
//! digits as microseconds). A point that cannot be stored (no metric, NaN, …) is dropped and
//! the others written.
//!
//! Answers: 204, as InfluxDB (also when points were dropped); with `?summary` 200
//! `{"failed":N,"success":M}` and with `?details` 200 `{"errors":[{"datapoint":…,"error":…}],
//! "failed":N,"success":M}`, as OpenTSDB answers them. A body that is not a JSON object or
//! array gets InfluxDB's 400 texts (`expected JSON array or hash`, `json array decode error`,
//! `json object decode error`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ingest::points::write_point;

/// One data point as OpenTSDB sends it; absent members are zero, as Go decodes them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct DataPoint {
    /// The measurement.
    pub metric: String,
    /// Seconds, or milliseconds from 10,000,000,000 on.
    pub timestamp: i64,
    /// The value (field `value`).
    pub value: f64,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// A body refused as a whole: InfluxDB's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("peek error: EOF")]
    Empty,
    #[error("expected JSON array or hash")]
    NotJson,
    #[error("json array decode error")]
    Array,
    #[error("json object decode error")]
    Object,
}

/// A point that was dropped, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    /// The point as it was sent.
    pub point: DataPoint,
    /// Why.
    pub error: String,
}

/// What a body became.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Converted {
    /// Line protocol, nanosecond timestamps.
    pub lines: Vec<u8>,
    /// Points written to `lines`.
    pub points: usize,
    /// Points dropped.
    pub dropped: Vec<Dropped>,
}

/// Decodes and converts a body.
pub fn convert(body: &[u8]) -> Result<Converted, BodyError> {
    // Go's decoder skips leading white space before the first value; the peek that chooses
    // between object and array does not.
    let points: Vec<DataPoint> = match body.first() {
        None => return Err(BodyError::Empty),
        Some(b'[') => first_value(body).ok_or(BodyError::Array)?,
        Some(b'{') => vec![first_value(body).ok_or(BodyError::Object)?],
        Some(_) => return Err(BodyError::NotJson),
    };
    let mut c = Converted {
        lines: Vec::with_capacity(points.len() * 64),
        ..Converted::default()
    };
    let mut tags: Vec<(&str, &str)> = Vec::new();
    for p in &points {
        let ts = p.timestamp;
        let nanos = if ts < 10_000_000_000 {
            ts.checked_mul(1_000_000_000)
        } else {
            (ts / 1000)
                .checked_mul(1_000_000_000)
                .and_then(|s| s.checked_add((ts % 1000) * 1000))
        };
        tags.clear();
        if let Some(t) = &p.tags {
            tags.extend(t.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let written = match nanos {
            None => Err("time outside range".to_owned()),
            Some(nanos) => write_point(&mut c.lines, &p.metric, &mut tags, "value", p.value, nanos)
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(()) => c.points += 1,
            Err(error) => c.dropped.push(Dropped {
                point: p.clone(),
                error,
            }),
        }
    }
    Ok(c)
}

/// The first JSON value of `body` (what follows it is ignored, as by Go's decoder).
fn first_value<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Option<T> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<T>()
        .next()?
        .ok()
}

/// `?summary` / `?details` answer bodies, as OpenTSDB words them.
pub fn summary(c: &Converted, details: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Error<'a> {
        datapoint: &'a DataPoint,
        error: &'a str,
    }
    #[derive(Serialize)]
    struct Summary<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        errors: Option<Vec<Error<'a>>>,
        failed: usize,
        success: usize,
    }
    let s = Summary {
        errors: details.then(|| {
            c.dropped
                .iter()
                .map(|d| Error {
                    datapoint: &d.point,
                    error: &d.error,
                })
                .collect()
        }),
        failed: c.dropped.len(),
        success: c.points,
    };
    serde_json::to_vec(&s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Converted) -> String {
        String::from_utf8(c.lines.clone()).expect("utf-8")
    }

    #[test]
    fn objects_and_arrays_become_points() {
        let one = convert(br#"{"metric":"sys.cpu","timestamp":1356998400,"value":18,"tags":{"host":"web01","dc":"lga"}} trailing"#)
            .expect("valid");
        assert_eq!(
            text(&one),
            "sys.cpu,dc=lga,host=web01 value=18.0 1356998400000000000\n"
        );
        let many = convert(
            br#"[{"metric":"a","timestamp":1356998400123,"value":1.5},{"timestamp":1,"value":2},{"metric":"b","value":3}]"#,
        )
        .expect("valid");
        assert_eq!(
            text(&many),
            "a value=1.5 1356998400000123000\nb value=3.0 0\n"
        );
        assert_eq!(many.points, 2);
        assert_eq!(many.dropped.len(), 1);
        assert_eq!(many.dropped[0].error, "missing measurement");
        assert_eq!(
            String::from_utf8(summary(&many, true)).expect("utf-8"),
            r#"{"errors":[{"datapoint":{"metric":"","timestamp":1,"value":2.0},"error":"missing measurement"}],"failed":1,"success":2}"#
        );
        assert_eq!(
            String::from_utf8(summary(&many, false)).expect("utf-8"),
            r#"{"failed":1,"success":2}"#
        );
        assert_eq!(convert(b"[]").map(|c| c.points), Ok(0));
    }

    #[test]
    fn bodies_that_are_not_data_points_get_influxdb_s_texts() {
        assert_eq!(convert(b""), Err(BodyError::Empty));
        assert_eq!(convert(b"put x"), Err(BodyError::NotJson));
        assert_eq!(convert(b" {}"), Err(BodyError::NotJson));
        assert_eq!(convert(br#"[{"metric":1}]"#), Err(BodyError::Array));
        assert_eq!(convert(br#"{"value":"1"}"#), Err(BodyError::Object));
    }
}
