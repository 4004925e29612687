//! OpenTSDB's HTTP `POST /api/put`, converted as InfluxDB 1.6's OpenTSDB service converts it.
//!
//! The body is one JSON data point `{"metric":…,"timestamp":…,"value":…,"tags":{…}}` or an
//! array of them (gzip when `Content-Encoding: gzip`). Only the first JSON value is read, as
//! Go's decoder does; member names match in any case, the last of a repeated one wins, and
//! missing or `null` members are zero. A timestamp under 10,000,000,000 is seconds;
//! a larger one milliseconds, read as InfluxDB 1.6 reads it (whole seconds, then the last three
//! digits as microseconds). A point that cannot be stored (no metric, NaN, …) is dropped and
//! the others written.
//!
//! Answers: 204, as InfluxDB (also when points were dropped); with `?summary` 200
//! `{"failed":N,"success":M}` and with `?details` 200 `{"errors":[{"datapoint":…,"error":…}],
//! "failed":N,"success":M}`, as OpenTSDB answers them. A body that is not a JSON object or
//! array gets InfluxDB's 400 texts (`expected JSON array or hash`, `json array decode error`,
//! `json object decode error`).
//!
//! An array is converted point by point as it is read, so that a body of many tiny points
//! (`[{},{},…]`) never becomes a vector of them; `?details` lists the first
//! [`MAX_DETAILED`] dropped points (`failed` counts them all).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ingest::points::write_point;

/// One data point as OpenTSDB sends it, read as Go's decoder reads it into InfluxDB's struct:
/// member names in any case, the last of a repeated member wins, absent members and `null`
/// leave the zero value (`null` tags: none), other members are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

impl<'de> Deserialize<'de> for DataPoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `any`: a `null` in an array is a zero point to Go (dropped, the others written).
        d.deserialize_any(PointVisitor)
    }
}

struct PointVisitor;

impl<'de> Visitor<'de> for PointVisitor {
    type Value = DataPoint;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OpenTSDB data point")
    }

    fn visit_unit<E>(self) -> Result<DataPoint, E> {
        Ok(DataPoint::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DataPoint, A::Error> {
        let mut p = DataPoint::default();
        while let Some(key) = map.next_key::<String>()? {
            // Go matches a member to a field by name exactly, else case-insensitively.
            match key.to_ascii_lowercase().as_str() {
                "metric" => {
                    if let Some(v) = map.next_value::<Option<String>>()? {
                        p.metric = v;
                    }
                }
                "timestamp" => {
                    if let Some(v) = map.next_value::<Option<i64>>()? {
                        p.timestamp = v;
                    }
                }
                "value" => {
                    if let Some(v) = map.next_value::<Option<f64>>()? {
                        p.value = v;
                    }
                }
                "tags" => {
                    // Go decodes a repeated map into the one it has; `null` empties it.
                    match map.next_value::<Option<BTreeMap<String, Option<String>>>>()? {
                        None => p.tags = None,
                        Some(t) => p
                            .tags
                            .get_or_insert_with(BTreeMap::new)
                            .extend(t.into_iter().map(|(k, v)| (k, v.unwrap_or_default()))),
                    }
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
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

/// Dropped points kept for `?details` and the log; beyond them only counted.
pub const MAX_DETAILED: usize = 1000;

/// What a body became.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Converted {
    /// Line protocol, nanosecond timestamps.
    pub lines: Vec<u8>,
    /// Points written to `lines`.
    pub points: usize,
    /// Points dropped.
    pub failed: usize,
    /// The first [`MAX_DETAILED`] of them.
    pub dropped: Vec<Dropped>,
}

impl Converted {
    /// Converts one point (or counts it dropped).
    fn add(&mut self, p: DataPoint) {
        let ts = p.timestamp;
        let nanos = if ts < 10_000_000_000 {
            ts.checked_mul(1_000_000_000)
        } else {
            (ts / 1000)
                .checked_mul(1_000_000_000)
                .and_then(|s| s.checked_add((ts % 1000) * 1000))
        };
        let mut tags: Vec<(&str, &str)> = p
            .tags
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let written = match nanos {
            None => Err("time outside range".to_owned()),
            Some(nanos) => write_point(
                &mut self.lines,
                &p.metric,
                &mut tags,
                "value",
                p.value,
                nanos,
            )
            .map_err(|e| e.to_string()),
        };
        drop(tags);
        match written {
            Ok(()) => self.points += 1,
            Err(error) => {
                self.failed += 1;
                if self.dropped.len() < MAX_DETAILED {
                    self.dropped.push(Dropped { point: p, error });
                }
            }
        }
    }
}

/// Decodes and converts a body.
pub fn convert(body: &[u8]) -> Result<Converted, BodyError> {
    let mut c = Converted::default();
    // Go's decoder skips leading white space before the first value; the peek that chooses
    // between object and array does not. Only the first value is read.
    let mut de = serde_json::Deserializer::from_slice(body);
    match body.first() {
        None => return Err(BodyError::Empty),
        Some(b'[') => de
            .deserialize_seq(Points(&mut c))
            .map_err(|_| BodyError::Array)?,
        Some(b'{') => c.add(DataPoint::deserialize(&mut de).map_err(|_| BodyError::Object)?),
        Some(_) => return Err(BodyError::NotJson),
    }
    Ok(c)
}

/// Converts the points of an array as they are read.
struct Points<'c>(&'c mut Converted);

impl<'de> Visitor<'de> for Points<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of data points")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(p) = seq.next_element::<DataPoint>()? {
            self.0.add(p);
        }
        Ok(())
    }
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
        failed: c.failed,
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
    fn many_dropped_points_are_counted_and_only_the_first_kept() {
        let n = 100_000;
        let mut body = b"[".to_vec();
        for i in 0..n {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{}");
        }
        body.push(b']');
        let c = convert(&body).expect("valid");
        assert_eq!((c.points, c.failed, c.dropped.len()), (0, n, MAX_DETAILED));
        let answer: serde_json::Value = serde_json::from_slice(&summary(&c, true)).expect("JSON");
        assert_eq!(answer["failed"], n);
        assert_eq!(
            answer["errors"].as_array().map(Vec::len),
            Some(MAX_DETAILED)
        );
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

    #[test]
    fn members_are_read_as_go_reads_them() {
        // Any case, the last of a repeated member, null as nothing, unknown members ignored.
        let c = convert(
            br#"{"Metric":"cpu","TIMESTAMP":1356998400,"value":1,"value":2,"tags":{"h":"a","h":"b","x":null},"other":[1,{"a":2}]}"#,
        )
        .expect("valid");
        assert_eq!(text(&c), "cpu,h=b value=2.0 1356998400000000000\n");
        let c = convert(br#"[{"metric":"m","timestamp":5,"value":3,"value":null,"tags":null}]"#)
            .expect("valid");
        assert_eq!(text(&c), "m value=3.0 5000000000\n");
        // A repeated tags member adds to the first; a null point is a dropped zero point.
        let c = convert(
            br#"[null,{"metric":"m","timestamp":5,"value":1,"tags":{"a":"1"},"tags":{"b":"2"}}]"#,
        )
        .expect("valid");
        assert_eq!(text(&c), "m,a=1,b=2 value=1.0 5000000000\n");
        assert_eq!((c.points, c.failed), (1, 1));
        assert_eq!(convert(b"[1]"), Err(BodyError::Array));
    }
}
