//! OpenTSDB's telnet protocol, converted as InfluxDB 1.6's OpenTSDB service converts it.
//!
//! `put <metric> <timestamp> <value> [tag=value …]`: the metric is the measurement, the value
//! the float field `value`. A 10-character timestamp is seconds; a 13-character one is taken
//! as InfluxDB 1.6 takes it: whole seconds from the first ten digits, and the last three
//! digits as *microseconds* (InfluxDB's reading, kept so both store the same point); any other
//! length refuses the line. A malformed tag (`k=`, `=v`, no `=`) is left out and the point
//! kept. `version` is answered as InfluxDB answers it; `stats` with the listener's counters in
//! OpenTSDB's `stats` format.

use crate::ingest::points::write_point;
use crate::ingest::{CountersSnapshot, unix_nanos};

/// What InfluxDB answers to `version`.
pub const VERSION_ANSWER: &[u8] = b"InfluxDB TSDB proxy";

/// Why a telnet line was not turned into a point.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TelnetError {
    #[error("malformed line: expected put <metric> <timestamp> <value> [tag=value ...]")]
    Malformed,
    #[error("time must be 10 or 13 chars: {0:?}")]
    TimeLength(String),
    #[error("bad float: {0:?}")]
    Value(String),
    #[error("{0}")]
    Unwritable(#[from] crate::ingest::points::Unwritable),
    #[error("not valid UTF-8")]
    NotUtf8,
}

/// What one line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A point was appended.
    Put,
    /// `version`: answered.
    Version,
    /// `stats`: answered.
    Stats,
    /// Blank.
    Empty,
}

/// The most reply bytes one batch of lines builds: replies are sent after the batch's points
/// are written, and six bytes of `stats` ask for about 400, so that a batch of `stats` lines
/// must not build an answer many times its own size in memory. Past it, `version` and `stats`
/// are not answered.
pub const MAX_BATCH_REPLY: usize = 64 * 1024;

/// Converts one line (without its newline), appending a point to `out` or an answer to
/// `reply` (while `reply` is under [`MAX_BATCH_REPLY`]).
pub fn line(
    raw: &[u8],
    out: &mut Vec<u8>,
    reply: &mut Vec<u8>,
    stats: &dyn Fn() -> CountersSnapshot,
) -> Result<Command, TelnetError> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = std::str::from_utf8(raw).map_err(|_| TelnetError::NotUtf8)?;
    let words: Vec<&str> = text.split_whitespace().collect();
    match words[..] {
        [] => return Ok(Command::Empty),
        ["version"] => {
            if reply.len() < MAX_BATCH_REPLY {
                reply.extend_from_slice(VERSION_ANSWER);
            }
            return Ok(Command::Version);
        }
        ["stats"] => {
            if reply.len() < MAX_BATCH_REPLY {
                write_stats(reply, &stats());
            }
            return Ok(Command::Stats);
        }
        _ => {}
    }
    if words.len() < 4 || words[0] != "put" {
        return Err(TelnetError::Malformed);
    }
    let (metric, ts, value) = (words[1], words[2], words[3]);
    // A timestamp of the right length that does not parse is the epoch, as InfluxDB has it.
    let n: i64 = ts.parse().unwrap_or(0);
    let nanos = match ts.len() {
        10 => n.checked_mul(1_000_000_000),
        13 => (n / 1000)
            .checked_mul(1_000_000_000)
            .and_then(|s| s.checked_add((n % 1000) * 1000)),
        _ => None,
    }
    .ok_or_else(|| TelnetError::TimeLength(ts.to_owned()))?;
    let mut tags: Vec<(&str, &str)> = Vec::with_capacity(words.len() - 4);
    for t in &words[4..] {
        match t.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => tags.push((k, v)),
            _ => {}
        }
    }
    crate::ingest::points::last_of_each_key(&mut tags);
    let v: f64 = value
        .parse()
        .map_err(|_| TelnetError::Value(value.to_owned()))?;
    write_point(out, metric, &mut tags, "value", v, nanos)?;
    Ok(Command::Put)
}

/// The listener's counters as OpenTSDB's `stats` command lists its own: `metric timestamp
/// value tag=value`, one per line.
fn write_stats(reply: &mut Vec<u8>, c: &CountersSnapshot) {
    let now = unix_nanos() / 1_000_000_000;
    let rows: [(&str, u64, &str); 8] = [
        ("tsd.connectionmgr.connections", c.connections, "type=total"),
        (
            "tsd.connectionmgr.connections",
            c.open_connections,
            "type=open",
        ),
        ("tsd.rpc.received", c.lines, "type=put"),
        ("tsd.rpc.errors", c.bad_lines, "type=put"),
        ("tsd.http.requests", c.requests, "type=put"),
        ("tsd.http.errors", c.bad_requests, "type=put"),
        ("tsd.influxha.batches", c.batches_written, "outcome=written"),
        ("tsd.influxha.batches", c.write_failures, "outcome=failed"),
    ];
    for (metric, value, tag) in rows {
        reply.extend_from_slice(format!("{metric} {now} {value} {tag}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(text: &str) -> Result<String, TelnetError> {
        let mut out = Vec::new();
        let stats = CountersSnapshot::default;
        line(text.as_bytes(), &mut out, &mut Vec::new(), &stats)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn puts_become_points_as_influxdb_stores_them() {
        assert_eq!(
            put("put sys.cpu.user 1356998400 42.5 host=web01 cpu=0\r"),
            Ok("sys.cpu.user,cpu=0,host=web01 value=42.5 1356998400000000000\n".into())
        );
        // 13 digits: the last three are microseconds, as InfluxDB 1.6 reads them.
        assert_eq!(
            put("put m 1356998400123 1 bad= =x novalue t=a=b"),
            Ok("m,t=a\\=b value=1.0 1356998400000123000\n".into())
        );
        assert_eq!(put("put m 13569984xx 1"), Ok("m value=1.0 0\n".into()));
    }

    #[test]
    fn bad_lines_are_refused() {
        assert_eq!(put("put m 1356998400"), Err(TelnetError::Malformed));
        assert_eq!(put("get m 1356998400 1"), Err(TelnetError::Malformed));
        assert!(matches!(
            put("put m 135699840 1"),
            Err(TelnetError::TimeLength(_))
        ));
        assert!(matches!(
            put("put m 1356998400 x"),
            Err(TelnetError::Value(_))
        ));
        assert!(matches!(
            put("put m 1356998400 NaN"),
            Err(TelnetError::Unwritable(_))
        ));
    }

    #[test]
    fn the_replies_of_one_batch_are_bounded() {
        let mut reply = Vec::new();
        let stats = CountersSnapshot::default;
        for _ in 0..100_000 {
            assert_eq!(
                line(b"stats", &mut Vec::new(), &mut reply, &stats),
                Ok(Command::Stats)
            );
        }
        assert!(reply.len() >= MAX_BATCH_REPLY && reply.len() < MAX_BATCH_REPLY + 1024);
        assert!(reply.ends_with(b"\n"));
    }

    #[test]
    fn version_and_stats_are_answered() {
        let mut reply = Vec::new();
        let stats = || CountersSnapshot {
            lines: 7,
            ..CountersSnapshot::default()
        };
        assert_eq!(
            line(b"version", &mut Vec::new(), &mut reply, &stats),
            Ok(Command::Version)
        );
        assert_eq!(reply, VERSION_ANSWER);
        reply.clear();
        assert_eq!(
            line(b" stats ", &mut Vec::new(), &mut reply, &stats),
            Ok(Command::Stats)
        );
        let text = String::from_utf8(reply).expect("utf-8");
        assert!(
            text.lines()
                .any(|l| l.starts_with("tsd.rpc.received ") && l.ends_with(" 7 type=put")),
            "{text}"
        );
        assert_eq!(
            line(b"", &mut Vec::new(), &mut Vec::new(), &stats),
            Ok(Command::Empty)
        );
    }
}
