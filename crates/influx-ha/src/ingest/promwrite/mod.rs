//! Prometheus remote write (`POST /api/v1/prom/write?db=…`): a snappy-compressed protobuf
//! `WriteRequest`, converted as InfluxDB 1.6.7 converts it on the same endpoint, then written
//! through the ordinary write path with the request's `db`, `rp` and `consistency`.
//!
//! The conversion: every label becomes a tag (`__name__` included), the measurement is the
//! value of `__name__` (`prom_metric_not_specified` without one), each sample becomes a point
//! with the float field `value` at its millisecond timestamp. NaN samples are dropped
//! without an error (Prometheus uses them as staleness markers), as 1.6.7 does.
//!
//! What 1.6.7 refuses with a 400 for the whole request (an infinite value: `+/-Inf is an
//! unsupported value for field value`), and what line protocol cannot carry (a newline in a
//! label, …), is refused per point here: the other points of the request are written, then
//! the first reason is answered with 400 like InfluxDB's partial writes, so Prometheus does not
//! resend what was stored.
//!
//! Messages are hand-written [`prost`] structs (field numbers of Prometheus' `remote.proto`);
//! fields Prometheus added later (metadata, exemplars, histograms) are skipped by the decoder.
//!
//! A small body can expand a lot: every label of a series is written again for each of its
//! samples, and an empty label takes 2 bytes on the wire but a struct of 48 in memory. Before
//! decoding, a walk over the wire format ([`expansion`]) bounds both: a request whose decoded
//! structs would pass 8 × `max_body_bytes` or whose line protocol would pass `max_body_bytes`
//! is refused with 413 (InfluxDB 1.6.7 has no such bound).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::http::error::RequestError;
use crate::ingest::points::write_point;
use crate::ingest::{Counters, ListenerStats, LogLimit, add, sample};

/// The measurement of a series without `__name__` (InfluxDB 1.6's).
pub const NO_NAME_MEASUREMENT: &str = "prom_metric_not_specified";
/// The label that names a Prometheus metric.
pub const NAME_LABEL: &str = "__name__";
/// The field every sample is written to.
pub const FIELD: &str = "value";

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series, each with its samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Values at times.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label` (`LabelPair` in older versions). Read as bytes: a `string` field would
/// make one label that is not UTF-8 refuse the whole request, and with it every other series
/// (the sender drops a batch answered 4xx); such a series is refused alone instead.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    /// Label value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Why a request body was refused as a whole (400, with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not snappy block format (Go's snappy text).
    #[error("snappy: corrupt input")]
    Snappy,
    /// Inflates past the limit.
    #[error("snappy: decoded block is too large")]
    TooLarge,
    /// Would decode, or convert, to more than the limits allow.
    #[error("request expands past the body limit")]
    Expands,
    /// Not a `WriteRequest`.
    #[error("proto: {0}")]
    Proto(String),
    /// What it decodes to finds no room under `max_inflight_bytes` (503, not 400).
    #[error("no room for the decoded request")]
    NoRoom,
}

/// How far a request may expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the snappy-decoded protobuf, and of the structs decoded from it.
    pub max_decoded: usize,
    /// Bytes of the line protocol it converts to.
    pub max_lines: usize,
}

impl Limits {
    /// The limits for a relay whose `max_body_bytes` is `max_body`.
    pub fn of(max_body: usize) -> Self {
        Limits {
            // Protobuf inflates a few times over: allow that much, not more.
            max_decoded: max_body.saturating_mul(8),
            max_lines: max_body,
        }
    }
}

/// Decodes a request body.
pub fn decode(body: &[u8], limits: Limits) -> Result<WriteRequest, DecodeError> {
    decode_charged(body, limits, &mut |_| true)
}

/// [`decode`], asking `charge` for room for what it builds before building it: the decoded
/// bytes, then the structs and the lines they convert to; `false` refuses the request.
pub fn decode_charged(
    body: &[u8],
    limits: Limits,
    charge: &mut dyn FnMut(usize) -> bool,
) -> Result<WriteRequest, DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(|_| DecodeError::Snappy)?;
    if len > limits.max_decoded {
        return Err(DecodeError::TooLarge);
    }
    if !charge(len) {
        return Err(DecodeError::NoRoom);
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|_| DecodeError::Snappy)?;
    // A body the walk cannot read is refused before prost, which would build every field it
    // read before it met the fault.
    let e = expansion(&raw).ok_or_else(|| DecodeError::Proto("malformed message".to_owned()))?;
    if e.structs > limits.max_decoded || e.lines > limits.max_lines {
        return Err(DecodeError::Expands);
    }
    if !charge(e.structs.saturating_add(e.lines)) {
        return Err(DecodeError::NoRoom);
    }
    <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| DecodeError::Proto(e.to_string()))
}

/// What decoding and converting a `WriteRequest` builds, bounded from above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Bytes of the decoded structs and their strings.
    pub structs: usize,
    /// Bytes of line protocol.
    pub lines: usize,
}

/// Bytes a point's line takes besides its labels: measurement separator, `value=` with the
/// longest float, the timestamp, spaces and newline.
const LINE_OVERHEAD: usize = 64;

/// Reads the protobuf wire format of a `WriteRequest` without decoding it (and without
/// allocating): per series, its labels' bytes and its samples. `None` when it is malformed.
pub fn expansion(raw: &[u8]) -> Option<Expansion> {
    use std::mem::size_of;
    let mut total = Expansion::default();
    for field in Fields(raw) {
        let (tag, series) = field?;
        let (1, Field::Bytes(series)) = (tag, series) else {
            continue;
        };
        let (mut labels, mut label_bytes, mut samples) = (0usize, 0usize, 0usize);
        for field in Fields(series) {
            match field? {
                (1, Field::Bytes(label)) => {
                    labels += 1;
                    label_bytes += label.len();
                }
                (2, Field::Bytes(_)) => samples += 1,
                _ => {}
            }
        }
        total.structs = total
            .structs
            .saturating_add(size_of::<TimeSeries>())
            .saturating_add(labels.saturating_mul(size_of::<Label>()))
            .saturating_add(label_bytes)
            .saturating_add(samples.saturating_mul(size_of::<Sample>()));
        // Each label as `,name=value`, escapes doubling its bytes at most; `__name__`'s value
        // is written twice (measurement and tag): four times the label bytes bound it all.
        let line = label_bytes.saturating_mul(4).saturating_add(LINE_OVERHEAD);
        total.lines = total.lines.saturating_add(samples.saturating_mul(line));
    }
    Some(total)
}

/// One field of a protobuf message: a length-delimited payload, or a scalar (skipped).
enum Field<'a> {
    Bytes(&'a [u8]),
    Scalar,
}

/// The fields of a message, as (field number, field); an item `None` when malformed (and
/// nothing after it).
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u64, Field<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.read();
        if field.is_none() {
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn read(&mut self) -> Option<(u64, Field<'a>)> {
        let buf = &mut self.0;
        let key = varint(buf)?;
        let field = match key & 7 {
            0 => {
                varint(buf)?;
                Field::Scalar
            }
            1 => {
                *buf = buf.get(8..)?;
                Field::Scalar
            }
            2 => {
                let len = usize::try_from(varint(buf)?).ok()?;
                let (bytes, rest) = (buf.get(..len)?, buf.get(len..)?);
                *buf = rest;
                Field::Bytes(bytes)
            }
            5 => {
                *buf = buf.get(4..)?;
                Field::Scalar
            }
            _ => return None,
        };
        Some((key >> 3, field))
    }
}

/// Reads a base-128 varint off the front of `buf`.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// What a request became.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Converted {
    /// Line protocol, nanosecond timestamps.
    pub lines: Vec<u8>,
    /// Points written to `lines`.
    pub points: usize,
    /// NaN samples dropped (no error).
    pub nan: usize,
    /// Samples refused, and the first reason.
    pub refused: usize,
    /// The first refusal, as InfluxDB words it where it has the case.
    pub first_error: Option<String>,
}

/// Converts a request as 1.6.7 does (see the module docs).
pub fn convert(req: &WriteRequest) -> Converted {
    let mut c = Converted {
        lines: Vec::with_capacity(req.timeseries.len() * 96),
        ..Converted::default()
    };
    let mut tags: Vec<(&str, &str)> = Vec::new();
    'series: for ts in &req.timeseries {
        tags.clear();
        let mut measurement = NO_NAME_MEASUREMENT;
        for l in &ts.labels {
            let (Ok(name), Ok(value)) =
                (std::str::from_utf8(&l.name), std::str::from_utf8(&l.value))
            else {
                let refused = ts.samples.iter().filter(|s| !s.value.is_nan()).count();
                c.refused += refused;
                c.nan += ts.samples.len() - refused;
                c.first_error.get_or_insert_with(|| {
                    format!(
                        "label {:?}={:?} is not UTF-8",
                        String::from_utf8_lossy(&l.name),
                        String::from_utf8_lossy(&l.value)
                    )
                });
                continue 'series;
            };
            tags.push((name, value));
            if name == NAME_LABEL {
                measurement = value;
            }
        }
        // A map in InfluxDB: the last of a repeated name wins.
        crate::ingest::points::last_of_each_key(&mut tags);
        for s in &ts.samples {
            if s.value.is_nan() {
                c.nan += 1;
                continue;
            }
            let refusal = if s.value.is_infinite() {
                Some(format!("+/-Inf is an unsupported value for field {FIELD}"))
            } else {
                match s.timestamp.checked_mul(1_000_000) {
                    None => Some("time outside range".to_owned()),
                    Some(nanos) => {
                        write_point(&mut c.lines, measurement, &mut tags, FIELD, s.value, nanos)
                            .err()
                            .map(|e| e.to_string())
                    }
                }
            };
            match refusal {
                None => c.points += 1,
                Some(why) => {
                    c.refused += 1;
                    c.first_error.get_or_insert(why);
                }
            }
        }
    }
    c
}

// === Counters ===

/// The endpoint's counters and log limit, one set per process (the endpoint lives on the
/// main HTTP listener, which has no other place for them).
#[derive(Debug, Default)]
struct Stats {
    counters: Arc<Counters>,
    log: LogLimit,
}

fn global() -> &'static Stats {
    static STATS: OnceLock<Stats> = OnceLock::new();
    STATS.get_or_init(Stats::default)
}

/// The endpoint's identity and counters, for the status page (`kind` `prometheus`).
pub fn stats(http: SocketAddr) -> ListenerStats {
    ListenerStats {
        kind: "prometheus",
        addr: http,
        database: "(the request's db)".to_owned(),
        counters: global().counters.clone(),
    }
}

/// Decodes and converts one request body, counting it; the body refused as a whole is a 400
/// with the decoder's text (logged with its size, never its content).
pub fn receive(
    db: &str,
    body: &[u8],
    limits: Limits,
    charge: &mut dyn FnMut(usize) -> bool,
) -> Result<Converted, RequestError> {
    let s = global();
    add(&s.counters.requests, 1);
    add(&s.counters.bytes, body.len());
    let req = match decode_charged(body, limits, charge) {
        Ok(r) => r,
        Err(DecodeError::NoRoom) => {
            return Err(RequestError::Overloaded(
                "too many request bytes in flight to decode this request; retry later".to_owned(),
            ));
        }
        Err(e) => {
            add(&s.counters.bad_requests, 1);
            if let Some(suppressed) = s.log.allow() {
                tracing::warn!(
                    database = db,
                    bytes = body.len(),
                    error = %e,
                    suppressed,
                    "Prometheus remote write refused"
                );
            }
            return Err(match e {
                DecodeError::Expands => RequestError::BodyTooLarge,
                e => RequestError::Unparsable(e.to_string().into_bytes()),
            });
        }
    };
    let c = convert(&req);
    add(&s.counters.lines, c.points + c.refused);
    add(&s.counters.bad_lines, c.refused);
    if let Some(why) = &c.first_error
        && let Some(suppressed) = s.log.allow()
    {
        tracing::warn!(
            database = db,
            refused = c.refused,
            error = %sample(why.as_bytes()),
            suppressed,
            "Prometheus samples refused; the others are written"
        );
    }
    Ok(c)
}

/// Counts how the write of a converted request went, and gives the client's answer: the
/// write path's, or 400 with the first refusal when samples were refused.
pub fn finish(written: Result<(), RequestError>, c: &Converted) -> Result<(), RequestError> {
    let counters = &global().counters;
    match &written {
        Ok(()) => add(&counters.batches_written, 1),
        Err(RequestError::PartialWrite(_)) => {
            add(&counters.batches_written, 1);
            add(&counters.batches_partly_refused, 1);
        }
        Err(RequestError::LevelNotMet | RequestError::QueuedOnly) => {
            add(&counters.batches_below_level, 1);
        }
        Err(_) => add(&counters.write_failures, 1),
    }
    written?;
    match &c.first_error {
        Some(why) => Err(RequestError::PartialWrite(why.clone().into_bytes())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
