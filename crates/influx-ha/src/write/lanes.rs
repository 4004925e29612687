//! Splitting a queued write into lanes by measurement, so that the replay can send the parts
//! of one batch concurrently without reordering what must stay in order.
//!
//! InfluxDB 1.6 spreads concurrent requests over its cores; one request at a time leaves all
//! but one idle, so a replay that sends sequentially drains slower than clients write. Lines of
//! one measurement must keep their order: a point written, acknowledged and then overwritten is
//! queued in that order, and a field's type is fixed per measurement (per shard) by the first
//! write that reaches it. So every line of a measurement goes to the same lane, in order;
//! lanes hold different measurements and may be sent concurrently.

use std::collections::HashMap;

use bytes::Bytes;

/// Payloads smaller than this go as one request: splitting them saves less than the extra
/// request costs.
pub const MIN_SPLIT_BYTES: usize = 64 << 10;

/// Splits a newline-terminated, validated line-protocol `payload` into at most `lanes` runs of
/// whole lines, every measurement in exactly one of them with its lines in their original
/// order, the runs' sizes balanced (largest measurements first, each to the lightest lane).
/// Blank and comment lines stay with the line before them. Returns `payload` alone (not
/// copied) when it is smaller than [`MIN_SPLIT_BYTES`], holds one measurement, or `lanes` is
/// 0 or 1.
pub fn split(payload: &Bytes, lanes: usize) -> Vec<Bytes> {
    if lanes <= 1 || payload.len() < MIN_SPLIT_BYTES {
        return vec![payload.clone()];
    }
    // Runs of consecutive lines of one measurement: (end offset, measurement id).
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut ids: HashMap<&[u8], usize> = HashMap::new();
    let mut bytes: Vec<usize> = Vec::new();
    let mut last: Option<(&[u8], usize)> = None;
    let mut at = 0;
    for line in lineproto::lines(payload) {
        at += line.len();
        let id = match content(line) {
            None => last.map_or(0, |(_, id)| id),
            Some(name) => match last {
                Some((prev, id)) if prev == name => id,
                _ => {
                    let next = ids.len();
                    let id = *ids.entry(name).or_insert(next);
                    last = Some((name, id));
                    id
                }
            },
        };
        if bytes.len() <= id {
            bytes.resize(id + 1, 0);
        }
        bytes[id] += line.len();
        match runs.last_mut() {
            Some((end, run_id)) if *run_id == id => *end = at,
            _ => runs.push((at, id)),
        }
    }
    if bytes.len() <= 1 {
        return vec![payload.clone()];
    }
    // Largest first, ties by first appearance (the sort is stable): each to the lightest lane.
    let mut order: Vec<usize> = (0..bytes.len()).collect();
    order.sort_by(|a, b| bytes[*b].cmp(&bytes[*a]));
    let mut load = vec![0usize; lanes.min(bytes.len())];
    let mut lane_of = vec![0usize; bytes.len()];
    for id in order {
        let (lightest, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| **l)
            .expect("at least two lanes");
        lane_of[id] = lightest;
        load[lightest] += bytes[id];
    }
    let mut out: Vec<Vec<u8>> = load.iter().map(|l| Vec::with_capacity(*l)).collect();
    let mut start = 0;
    for (end, id) in runs {
        out[lane_of[id]].extend_from_slice(&payload[start..end]);
        start = end;
    }
    out.into_iter()
        .filter(|lane| !lane.is_empty())
        .map(Bytes::from)
        .collect()
}

/// The measurement of a line as written (escapes kept), or `None` for a blank or comment line.
fn content(line: &[u8]) -> Option<&[u8]> {
    let first = line.iter().position(|c| !c.is_ascii_whitespace())?;
    if line[first] == b'#' {
        return None;
    }
    Some(lineproto::series::measurement(&line[first..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` lines per measurement, interleaved, each naming its measurement and sequence number.
    fn interleaved(names: &[&str], n: usize, pad: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            for name in names {
                out.extend_from_slice(
                    format!("{name},host=h{i} v={i}i,s=\"{}\" {i}\n", "x".repeat(pad)).as_bytes(),
                );
            }
        }
        out
    }

    /// The lines of `payload` whose measurement is `name`, in order.
    fn lines_of<'a>(payload: &'a [u8], name: &[u8]) -> Vec<&'a [u8]> {
        lineproto::lines(payload)
            .filter(|l| content(l) == Some(name))
            .collect()
    }

    #[test]
    fn every_measurement_in_one_lane_in_its_order() {
        let names = ["cpu", "mem", "disk", "net", "c\\,pu", "c\\ pu", "system"];
        let payload = Bytes::from(interleaved(&names, 400, 40));
        assert!(payload.len() > MIN_SPLIT_BYTES);
        for n in [2, 3, 4, 16] {
            let lanes = split(&payload, n);
            assert_eq!(lanes.len(), n.min(names.len()), "{n} lanes");
            let total: usize = lanes.iter().map(Bytes::len).sum();
            assert_eq!(total, payload.len(), "no line lost or added");
            for name in names {
                let holding: Vec<&Bytes> = lanes
                    .iter()
                    .filter(|l| !lines_of(l, name.as_bytes()).is_empty())
                    .collect();
                assert_eq!(holding.len(), 1, "{name} is in exactly one lane of {n}");
                assert_eq!(
                    lines_of(holding[0], name.as_bytes()),
                    lines_of(&payload, name.as_bytes()),
                    "{name}: same lines, same order"
                );
            }
        }
    }

    #[test]
    fn escaped_commas_and_spaces_are_part_of_the_measurement() {
        // `c\,pu` and `c\ pu` are measurements of their own, not `c`.
        let mut body = Vec::new();
        for i in 0..2000 {
            body.extend_from_slice(format!("c\\,pu,t=a v={i} {i}\nc\\ pu v={i} {i}\n").as_bytes());
        }
        body.extend_from_slice(b"c v=1 1\n");
        let payload = Bytes::from(body);
        let lanes = split(&payload, 2);
        assert_eq!(lanes.len(), 2);
        let a = lines_of(&lanes[0], b"c\\,pu").len() + lines_of(&lanes[1], b"c\\,pu").len();
        assert_eq!(a, 2000);
        assert!(
            lanes
                .iter()
                .all(|l| lines_of(l, b"c\\,pu").is_empty() || lines_of(l, b"c\\ pu").is_empty()),
            "the two measurements are in different lanes"
        );
        assert_eq!(
            lanes.iter().map(|l| lines_of(l, b"c").len()).sum::<usize>(),
            1
        );
    }

    #[test]
    fn lanes_are_balanced_by_bytes() {
        // One big measurement and many small ones: the big one alone, the rest together.
        let mut body = interleaved(&["big"], 2000, 60);
        body.extend(interleaved(
            &["a", "b", "c", "d", "e", "f", "g", "h"],
            250,
            60,
        ));
        let payload = Bytes::from(body);
        let lanes = split(&payload, 2);
        let (x, y) = (lanes[0].len(), lanes[1].len());
        let (big, small) = (x.max(y), x.min(y));
        assert!(big - small < payload.len() / 20, "{x} vs {y}");
        // Equal measurements spread evenly over four lanes.
        let payload = Bytes::from(interleaved(
            &["a", "b", "c", "d", "e", "f", "g", "h"],
            200,
            40,
        ));
        let sizes: Vec<usize> = split(&payload, 4).iter().map(Bytes::len).collect();
        assert_eq!(sizes.len(), 4);
        let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
        assert_eq!(lo, hi, "{sizes:?}");
    }

    #[test]
    fn one_measurement_small_payloads_and_one_lane_go_whole() {
        let one = Bytes::from(interleaved(&["cpu"], 3000, 40));
        assert!(one.len() > MIN_SPLIT_BYTES);
        let lanes = split(&one, 2);
        assert_eq!(lanes.len(), 1);
        assert_eq!(lanes[0].as_ptr(), one.as_ptr(), "not copied");
        let small = Bytes::from(interleaved(&["cpu", "mem"], 10, 10));
        assert!(small.len() < MIN_SPLIT_BYTES);
        assert_eq!(split(&small, 2), vec![small.clone()]);
        let two = Bytes::from(interleaved(&["cpu", "mem"], 3000, 40));
        assert_eq!(split(&two, 1), vec![two.clone()]);
        assert_eq!(split(&two, 0), vec![two.clone()]);
        assert_eq!(split(&two, 2).len(), 2);
    }

    #[test]
    fn quoted_newlines_blank_and_comment_lines_stay_with_their_line() {
        let mut body = Vec::new();
        for i in 0..2000 {
            body.extend_from_slice(
                format!("a s=\"x\ny{i}\" {i}\n\n# note\nb v={i} {i}\n").as_bytes(),
            );
        }
        let payload = Bytes::from(body);
        let lanes = split(&payload, 2);
        assert_eq!(lanes.len(), 2);
        let a = lanes
            .iter()
            .find(|l| l.starts_with(b"a "))
            .expect("a lane starts with a");
        // The string's newline did not end the line, the blank and comment lines followed it.
        assert!(a.starts_with(b"a s=\"x\ny0\" 0\n\n# note\na s=\"x\ny1\" 1\n"));
        assert_eq!(lines_of(a, b"a").len(), 2000);
        assert_eq!(lanes.iter().map(Bytes::len).sum::<usize>(), payload.len());
    }
}
