//! Writing converted points (Graphite, OpenTSDB, Prometheus) as line protocol.
//!
//! The conversions build what InfluxDB's `models.NewPoint` builds from a measurement, a tag map
//! and one float field; this module writes that point as a line that 1.6's parser reads back
//! into the same series and value, so that converted points take the ordinary write path
//! (validation, replication, queues) like any other line.
//!
//! As `NewPoint` does, tags with an empty value are left out of the series key and tags are
//! sorted by key. What line protocol cannot say is refused with a reason instead of being
//! written differently: a newline anywhere, an empty measurement or tag key, a name that would
//! read as a comment, a backslash before a character that line protocol escapes (the parser
//! would take it as an escape), NaN and infinities.

use std::io::Write as _;

/// Why a converted point cannot be written as line protocol.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unwritable {
    #[error("missing measurement")]
    EmptyMeasurement,
    #[error("empty tag key")]
    EmptyTagKey,
    #[error(
        "{what} {name:?} cannot be written as line protocol (newline, or a backslash before an escaped character)"
    )]
    Unescapable { what: &'static str, name: String },
    #[error("{0} is an unsupported value")]
    NotFinite(f64),
}

/// Characters escaped with a backslash in measurements.
const MEASUREMENT_ESCAPES: &[u8] = b", ";
/// Characters escaped with a backslash in tag keys, tag values and field keys.
const KEY_ESCAPES: &[u8] = b", =";

/// Whether `s` can be escaped so that 1.6's parser reads back exactly `s`.
fn escapable(s: &str, escapes: &[u8]) -> bool {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            return false;
        }
        // The parser reads `\` + an escapable character as an escape (and skips the two
        // bytes while scanning): such a literal backslash has no spelling.
        if c == b'\\'
            && b.get(i + 1)
                .is_none_or(|n| escapes.contains(n) || *n == b'\\')
        {
            return false;
        }
    }
    true
}

fn push_escaped(out: &mut Vec<u8>, s: &str, escapes: &[u8]) {
    for &c in s.as_bytes() {
        if escapes.contains(&c) {
            out.push(b'\\');
        }
        out.push(c);
    }
}

/// Keeps, of tags with the same key, the last one given (InfluxDB puts them in a map), in
/// O(n log n): a request may carry a great many.
pub fn last_of_each_key<'a>(tags: &mut Vec<(&'a str, &'a str)>) {
    // Stable: tags of one key stay in the order given.
    tags.sort_by(|a, b| a.0.cmp(b.0));
    let mut kept = 0;
    for i in 0..tags.len() {
        let last_of_key = tags.get(i + 1).is_none_or(|next| next.0 != tags[i].0);
        if last_of_key {
            tags.swap(kept, i);
            kept += 1;
        }
    }
    tags.truncate(kept);
}

/// Appends one point with a single float field as a line (with `\n`), or says why it cannot
/// be written; `out` is unchanged then. `tags` are sorted here; empty values are skipped.
pub fn write_point(
    out: &mut Vec<u8>,
    measurement: &str,
    tags: &mut [(&str, &str)],
    field: &str,
    value: f64,
    unix_nanos: i64,
) -> Result<(), Unwritable> {
    if !value.is_finite() {
        return Err(Unwritable::NotFinite(value));
    }
    if measurement.is_empty() {
        return Err(Unwritable::EmptyMeasurement);
    }
    // A line starting with `#` is a comment; `\#` would keep the backslash. The parser skips
    // tabs and NULs before a measurement and before the fields, and they have no escape.
    let skipped = |name: &str| name.starts_with(['\t', '\0']);
    if measurement.starts_with('#')
        || skipped(measurement)
        || !escapable(measurement, MEASUREMENT_ESCAPES)
    {
        return Err(Unwritable::Unescapable {
            what: "measurement",
            name: measurement.to_owned(),
        });
    }
    if field.is_empty() {
        return Err(Unwritable::Unescapable {
            what: "field",
            name: String::new(),
        });
    }
    if skipped(field) || !escapable(field, KEY_ESCAPES) {
        return Err(Unwritable::Unescapable {
            what: "field",
            name: field.to_owned(),
        });
    }
    tags.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (k, v) in tags.iter() {
        if v.is_empty() {
            continue;
        }
        if k.is_empty() {
            return Err(Unwritable::EmptyTagKey);
        }
        for (what, s) in [("tag key", k), ("tag value", v)] {
            if !escapable(s, KEY_ESCAPES) {
                return Err(Unwritable::Unescapable {
                    what,
                    name: (*s).to_owned(),
                });
            }
        }
    }
    push_escaped(out, measurement, MEASUREMENT_ESCAPES);
    for (k, v) in tags.iter() {
        if v.is_empty() {
            continue;
        }
        out.push(b',');
        push_escaped(out, k, KEY_ESCAPES);
        out.push(b'=');
        push_escaped(out, v, KEY_ESCAPES);
    }
    out.push(b' ');
    push_escaped(out, field, KEY_ESCAPES);
    out.push(b'=');
    push_float(out, value);
    out.push(b' ');
    // Writing into a Vec cannot fail.
    let _ = writeln!(out, "{unix_nanos}");
    Ok(())
}

/// A float spelled so that Go's `ParseFloat` reads back the same bits (the shortest
/// round-tripping form, with an exponent for very large or small values), never an integer
/// literal: `1` would be read as a float anyway, since there is no `i` suffix.
pub fn push_float(out: &mut Vec<u8>, value: f64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value:?}");
}

/// Now, in nanoseconds since the Unix epoch (what a point without a timestamp gets).
pub fn now_nanos() -> i64 {
    super::unix_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(m: &str, tags: &mut [(&str, &str)], v: f64) -> Result<String, Unwritable> {
        let mut out = Vec::new();
        write_point(&mut out, m, tags, "value", v, 5)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn escapes_sorts_and_skips_empty_tag_values() {
        assert_eq!(
            line("c p,u", &mut [("z", "1"), ("a b", "x=y,"), ("e", "")], 1.0),
            Ok("c\\ p\\,u,a\\ b=x\\=y\\,,z=1 value=1.0 5\n".to_owned())
        );
        assert_eq!(
            line("m=x", &mut [], -2.5e-300),
            Ok("m=x value=-2.5e-300 5\n".to_owned())
        );
        assert_eq!(
            line("a\\b", &mut [("k", "v\\x")], 1e21),
            Ok("a\\b,k=v\\x value=1e21 5\n".to_owned())
        );
    }

    #[test]
    fn names_the_parser_would_strip_a_tab_or_nul_from_are_refused() {
        for m in ["\tcpu", "\0cpu", "\t#x"] {
            assert!(
                matches!(line(m, &mut [], 1.0), Err(Unwritable::Unescapable { .. })),
                "{m:?}"
            );
        }
        for field in ["\tv", "\0v"] {
            let mut out = Vec::new();
            assert!(matches!(
                write_point(&mut out, "m", &mut [], field, 1.0, 5),
                Err(Unwritable::Unescapable { .. })
            ));
            assert!(out.is_empty());
        }
        // Inside a name they are kept, and read back as written.
        assert_eq!(
            line("c\tpu", &mut [], 1.0),
            Ok("c\tpu value=1.0 5\n".to_owned())
        );
        let written = line(" cpu", &mut [], 1.0).expect("a space is escaped");
        assert!(
            lineproto::validate(written.as_bytes(), lineproto::Precision::Nanoseconds, 0).points()
                == 1
        );
    }

    #[test]
    fn the_last_tag_of_a_key_wins_among_many() {
        let mut tags = vec![
            ("b", "1"),
            ("a", "1"),
            ("b", "2"),
            ("c", "1"),
            ("a", "2"),
            ("b", "3"),
        ];
        last_of_each_key(&mut tags);
        assert_eq!(tags, [("a", "2"), ("b", "3"), ("c", "1")]);
        // Many distinct keys: linearithmic, where a search per tag was quadratic.
        let keys: Vec<String> = (0..200_000).map(|i| format!("k{i}")).collect();
        let mut tags: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
        tags.push(("k7", "last"));
        last_of_each_key(&mut tags);
        assert_eq!(tags.len(), 200_000);
        assert!(tags.contains(&("k7", "last")));
    }

    #[test]
    fn what_line_protocol_cannot_say_is_refused() {
        assert_eq!(line("", &mut [], 1.0), Err(Unwritable::EmptyMeasurement));
        assert_eq!(
            line("m", &mut [("", "v")], 1.0),
            Err(Unwritable::EmptyTagKey)
        );
        assert!(line("m", &mut [("", "")], 1.0).is_ok());
        assert!(line("#m", &mut [], 1.0).is_err());
        assert!(line("a\nb", &mut [], 1.0).is_err());
        assert!(line("a\\", &mut [], 1.0).is_err());
        assert!(line("m", &mut [("k", "v\\,")], 1.0).is_err());
        assert!(line("m", &mut [("k", "v\\")], 1.0).is_err());
        assert!(matches!(
            line("m", &mut [], f64::INFINITY),
            Err(Unwritable::NotFinite(_))
        ));
        assert!(line("m", &mut [], f64::NAN).is_err());
    }

    #[test]
    fn written_lines_validate_as_1_6_reads_them() {
        let mut out = Vec::new();
        for (i, v) in [
            0.0,
            -0.0,
            1.0,
            0.1,
            1e-7,
            123456789.125,
            f64::MAX,
            f64::MIN_POSITIVE,
        ]
        .into_iter()
        .enumerate()
        {
            write_point(&mut out, "m", &mut [("t", "x y")], "value", v, i as i64)
                .expect("writable");
        }
        let v = lineproto::validate(&out, lineproto::Precision::Nanoseconds, 0);
        assert_eq!((v.points(), v.rejected().len()), (8, 0));
    }
}
