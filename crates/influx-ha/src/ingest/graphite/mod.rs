//! `[[graphite]]`: Graphite plaintext (`path value [timestamp]` per line) over TCP or UDP,
//! turned into points by InfluxDB 1.x's template rules ([`parser`]) and written to the
//! listener's database like any other line protocol.
//!
//! The transports are the line-protocol listeners' ([`super::tcp`], [`super::udp`]): the
//! same limits, batching, backpressure and counters. Lines are trimmed; blank lines are
//! skipped; a line that cannot be parsed is counted in `bad_lines` and logged (rate limited,
//! with a sample), and the other lines of the same read or datagram are written. A NaN value
//! is dropped without complaint, as InfluxDB does.

pub mod parser;

use self::parser::{GraphiteParser, Parsed};
use super::TextProtocol;

impl TextProtocol for GraphiteParser {
    fn convert(
        &self,
        lines: &[u8],
        now_nanos: i64,
        out: &mut Vec<u8>,
        _reply: &mut Vec<u8>,
        refused: &mut dyn FnMut(&[u8], &dyn std::fmt::Display),
    ) {
        // InfluxDB reads the clock for each line: lines of one read without a timestamp are
        // points of their own, never one overwriting the other. A nanosecond apart keeps that.
        let mut now_nanos = now_nanos;
        for raw in lines.split(|&b| b == b'\n') {
            let line = match std::str::from_utf8(raw) {
                Ok(l) => l.trim(),
                Err(_) => {
                    refused(raw, &"not valid UTF-8");
                    continue;
                }
            };
            if line.is_empty() {
                continue;
            }
            match self.parse(line, now_nanos, out) {
                Ok(Parsed::Point | Parsed::NaN) => {}
                Err(e) => refused(raw, &e),
            }
            now_nanos = now_nanos.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_refused_and_the_others_kept() {
        let p = GraphiteParser::new(&[], ".", Vec::new()).expect("default");
        let mut out = Vec::new();
        let mut refused = Vec::new();
        p.convert(
            b"a.b 1 10\r\n\n  \nbad line here too\nc nan 5\nd 2 11",
            7,
            &mut out,
            &mut Vec::new(),
            &mut |line, why| {
                refused.push((String::from_utf8_lossy(line).into_owned(), why.to_string()))
            },
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "a.b value=1.0 10000000000\nd value=2.0 11000000000\n"
        );
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].1.contains("doesn't have required fields"),
            "{refused:?}"
        );
    }

    #[test]
    fn lines_without_a_timestamp_are_points_of_their_own() {
        let p = GraphiteParser::new(&[], ".", Vec::new()).expect("default");
        let mut out = Vec::new();
        p.convert(
            b"a.b 1\na.b 2\n",
            7_000_000_000,
            &mut out,
            &mut Vec::new(),
            &mut |_, why| panic!("{why}"),
        );
        let out = String::from_utf8(out).expect("utf-8");
        let stamps: Vec<&str> = out.lines().filter_map(|l| l.rsplit(' ').next()).collect();
        assert_eq!(stamps.len(), 2, "{out}");
        assert_ne!(stamps[0], stamps[1], "{out}");
    }
}
