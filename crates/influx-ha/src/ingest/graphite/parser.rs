//! Graphite plaintext (`path value [timestamp]`) to points, with InfluxDB 1.x's templates.
//!
//! Semantics follow InfluxDB 1.6's graphite service, so a metric lands in the same series
//! whether it was sent to influxd or to influx-ha:
//!
//! - A template is `[filter] pattern [tag=value,…]`. The pattern's `.`-separated parts name
//!   what each part of the path is: `measurement` (several are joined with the separator),
//!   `measurement*` (this part and all after it), `field` (the field name, once), `field*`
//!   (this part and all after it), a tag key, or nothing (skipped). Parts of the path that
//!   name the same tag twice are joined with the separator.
//! - Filters are `.`-separated too, `*` matching any one part; the most specific filter wins
//!   (exact parts before `*`, part by part), as 1.6's filter tree decides. A template without
//!   a filter replaces the default, `measurement*` (which joins with `.` whatever the
//!   separator, as 1.6's does).
//! - The template's own tags come first, then the path's, then the listener's `tags` for keys
//!   still missing. No measurement from the template: the whole path is the measurement; no
//!   field: `value`.
//! - The value is a float; NaN is dropped silently (graphite sends it for "no data"), an
//!   infinity is an error. The timestamp is in seconds, fractions allowed; absent or `-1`
//!   means now; outside 1901-12-13..2038-01-19 it is refused.

use std::borrow::Cow;

use crate::ingest::points::{Unwritable, write_point};

/// 1.6's default separator for joined parts.
pub const DEFAULT_SEPARATOR: &str = ".";

/// Earliest timestamp 1.6's parser takes (1901-12-13T00:00:00Z), in seconds.
const MIN_UNIX: i64 = -2_147_558_400;
/// Latest timestamp 1.6's parser takes (2038-01-19T00:00:00Z), in seconds.
const MAX_UNIX: i64 = 2_147_472_000;

/// A template or tag the configuration cannot use; the text says which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Why a line was not turned into a point.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("received {0:?} which doesn't have required fields")]
    Fields(String),
    #[error("{0}")]
    Template(String),
    #[error("field \"{name}\" value: cannot parse {value:?} as a float")]
    Value { name: String, value: String },
    #[error("field \"{name}\" value: {value} is unsupported")]
    Unsupported { name: String, value: f64 },
    #[error("field \"{name}\" time: cannot parse {time:?} as a float")]
    Time { name: String, time: String },
    #[error("timestamp out of range")]
    TimeRange,
    #[error(transparent)]
    Unwritable(#[from] Unwritable),
}

/// What became of a line that was not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// One line of line protocol was appended.
    Point,
    /// The value was NaN: nothing written, no error (as 1.6 does).
    NaN,
}

/// What a template makes of a path: measurement, tags, field (empty: none).
type Applied<'a> = (Cow<'a, str>, Vec<(&'a str, Cow<'a, str>)>, Cow<'a, str>);

/// One pattern with its own tags.
#[derive(Debug, Clone)]
struct Template {
    parts: Vec<String>,
    tags: Vec<(String, String)>,
    separator: String,
    /// Both `measurement*` and `field*`: every path it matches is refused (as 1.6 does).
    wildcards_clash: bool,
}

impl Template {
    fn new(
        pattern: &str,
        tags: Vec<(String, String)>,
        separator: &str,
    ) -> Result<Self, TemplateError> {
        let parts: Vec<String> = pattern.split('.').map(str::to_owned).collect();
        if !parts.iter().any(|p| p.starts_with("measurement")) {
            return Err(TemplateError(format!(
                "no measurement specified for template {pattern:?}"
            )));
        }
        let wildcards_clash =
            parts.iter().any(|p| p == "measurement*") && parts.iter().any(|p| p == "field*");
        Ok(Self {
            parts,
            tags,
            separator: separator.to_owned(),
            wildcards_clash,
        })
    }

    /// `measurement*`, joined with `.` whatever the listener's separator (as 1.6's is).
    fn default_template() -> Self {
        Self {
            parts: vec!["measurement*".to_owned()],
            tags: Vec::new(),
            separator: DEFAULT_SEPARATOR.to_owned(),
            wildcards_clash: false,
        }
    }

    /// Measurement, tags and field from the parts of a path. Borrowed where a single part
    /// is the whole answer (the common case), joined with the separator where several are.
    fn apply<'a>(&'a self, path: &str, fields: &[&'a str]) -> Result<Applied<'a>, LineError> {
        let mut tags: Vec<(&'a str, Cow<'a, str>)> = Vec::with_capacity(self.parts.len() + 4);
        let separator = self.separator.as_str();
        let mut push = |key: &'a str, value: &'a str| match tags.iter_mut().find(|(k, _)| *k == key)
        {
            Some((_, joined)) => {
                let j = joined.to_mut();
                j.push_str(separator);
                j.push_str(value);
            }
            None => tags.push((key, Cow::Borrowed(value))),
        };
        for (k, v) in &self.tags {
            push(k, v);
        }
        if self.wildcards_clash {
            return Err(LineError::Template(format!(
                "either 'field*' or 'measurement*' can be used in each template (but not both together): {:?}",
                self.parts.join(separator)
            )));
        }
        let mut measurement: Option<Cow<'a, str>> = None;
        let mut join_measurement = |value: &'a str| match &mut measurement {
            None => measurement = Some(Cow::Borrowed(value)),
            Some(m) => {
                let m = m.to_mut();
                m.push_str(separator);
                m.push_str(value);
            }
        };
        let mut field: Cow<'a, str> = Cow::Borrowed("");
        for (i, part) in self.parts.iter().enumerate() {
            let Some(&value) = fields.get(i) else {
                continue;
            };
            match part.as_str() {
                "measurement" => join_measurement(value),
                "field" => {
                    if !field.is_empty() {
                        return Err(LineError::Template(format!(
                            "'field' can only be used once in each template: {path:?}"
                        )));
                    }
                    field = Cow::Borrowed(value);
                }
                "field*" => {
                    field = Cow::Owned(fields[i..].join(separator));
                    break;
                }
                "measurement*" => {
                    for &v in &fields[i..] {
                        join_measurement(v);
                    }
                    break;
                }
                "" => {}
                tag => push(tag, value),
            }
        }
        Ok((measurement.unwrap_or_default(), tags, field))
    }
}

/// A node of the filter tree: children sorted with `*` last.
#[derive(Debug, Clone, Default)]
struct Node {
    value: String,
    children: Vec<Node>,
    template: Option<usize>,
}

impl Node {
    fn insert(&mut self, values: &[&str], template: usize) {
        let Some((first, rest)) = values.split_first() else {
            self.template = Some(template);
            return;
        };
        if let Some(child) = self.children.iter_mut().find(|c| c.value == *first) {
            return child.insert(rest, template);
        }
        let mut node = Node {
            value: (*first).to_owned(),
            ..Node::default()
        };
        // A new wildcard inherits what matched here so far (as 1.6's tree does).
        if *first == "*" {
            node.template = self.template;
        }
        node.insert(rest, template);
        self.children.push(node);
        self.children
            .sort_by(|a, b| match (a.value == "*", b.value == "*") {
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => a.value.cmp(&b.value),
            });
    }

    fn search(&self, parts: &[&str]) -> Option<usize> {
        let Some((first, rest)) = parts.split_first() else {
            return self.template;
        };
        let Some(last) = self.children.last() else {
            return self.template;
        };
        let exact = if last.value == "*" {
            &self.children[..self.children.len() - 1]
        } else {
            &self.children[..]
        };
        let i = exact.partition_point(|c| c.value.as_str() < *first);
        if let Some(child) = self.children.get(i).filter(|c| c.value == *first) {
            return child.search(rest);
        }
        if last.value == "*" {
            return last.search(rest);
        }
        self.template
    }
}

/// Turns graphite lines into line protocol for one listener.
#[derive(Debug, Clone)]
pub struct GraphiteParser {
    templates: Vec<Template>,
    /// Index of the template used when no filter matches.
    default: usize,
    root: Node,
    /// The listener's `tags`, added where the path and template did not set the key.
    tags: Vec<(String, String)>,
}

/// Splits `k=v,k2=v2` as 1.6 reads template tags (each `k=v`, neither side empty).
fn parse_tags(s: &str) -> Result<Vec<(String, String)>, TemplateError> {
    s.split(',')
        .map(|kv| match kv.split('=').collect::<Vec<_>>()[..] {
            [k, v] if !k.is_empty() && !v.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(TemplateError(format!("invalid template tags: {kv:?}"))),
        })
        .collect()
}

/// Parses the listener's `tags` (each `key=value`).
pub fn parse_default_tags(tags: &[String]) -> Result<Vec<(String, String)>, TemplateError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in tags {
        for (k, v) in
            parse_tags(t).map_err(|_| TemplateError(format!("invalid tag {t:?}: use key=value")))?
        {
            out.retain(|(key, _)| *key != k);
            out.push((k, v));
        }
    }
    Ok(out)
}

impl GraphiteParser {
    /// Checks and compiles `templates` as 1.6's config validation and parser do.
    pub fn new(
        templates: &[String],
        separator: &str,
        default_tags: Vec<(String, String)>,
    ) -> Result<Self, TemplateError> {
        let mut list = vec![Template::default_template()];
        let mut default = 0;
        let mut root = Node::default();
        let mut filters: Vec<&str> = Vec::new();
        for (i, pattern) in templates.iter().enumerate() {
            let parts: Vec<&str> = pattern.split_whitespace().collect();
            let (filter, template, tags) = match parts[..] {
                [] => {
                    return Err(TemplateError(format!("missing template at position {i}")));
                }
                [t] => ("", t, ""),
                [a, b] if b.contains('=') => ("", a, b),
                [a, b] => (a, b, ""),
                [a, b, c] => (a, b, c),
                _ => {
                    return Err(TemplateError(format!(
                        "invalid template format: {pattern:?}"
                    )));
                }
            };
            if !template
                .split('.')
                .any(|p| p == "measurement" || p == "measurement*")
            {
                return Err(TemplateError(format!(
                    "no measurement in template {template:?}"
                )));
            }
            if filters.contains(&filter) {
                return Err(TemplateError(format!(
                    "duplicate filter {filter:?} found at position {i}"
                )));
            }
            filters.push(filter);
            for p in filter.split('.').filter(|_| !filter.is_empty()) {
                if p.is_empty() {
                    return Err(TemplateError(format!(
                        "filter contains blank section: {filter:?}"
                    )));
                }
                if p.contains('*') && p != "*" {
                    return Err(TemplateError(format!(
                        "invalid filter wildcard section: {filter:?}"
                    )));
                }
            }
            let tags = if tags.is_empty() {
                Vec::new()
            } else {
                // Into a map, as InfluxDB reads them: the last value given for a key wins.
                let t: std::collections::BTreeMap<String, String> =
                    parse_tags(tags)?.into_iter().collect();
                t.into_iter().collect()
            };
            list.push(Template::new(template, tags, separator)?);
            let index = list.len() - 1;
            if filter.is_empty() {
                default = index;
            } else {
                root.insert(&filter.split('.').collect::<Vec<_>>(), index);
            }
        }
        Ok(Self {
            templates: list,
            default,
            root,
            tags: default_tags,
        })
    }

    /// The default template only (`measurement*`), with the listener's `tags`.
    pub fn without_templates(default_tags: Vec<(String, String)>) -> Self {
        Self {
            templates: vec![Template::default_template()],
            default: 0,
            root: Node::default(),
            tags: default_tags,
        }
    }

    /// Parses one line (already trimmed, not empty), received at `now_nanos`, and appends its
    /// point to `out`.
    pub fn parse(
        &self,
        line: &str,
        now_nanos: i64,
        out: &mut Vec<u8>,
    ) -> Result<Parsed, LineError> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 2 && fields.len() != 3 {
            return Err(LineError::Fields(line.to_owned()));
        }
        let path = fields[0];
        let parts: Vec<&str> = path.split('.').collect();
        let index = self.root.search(&parts).unwrap_or(self.default);
        let (measurement, mut tags, field) = self.templates[index].apply(path, &parts)?;
        let measurement = if measurement.is_empty() {
            path
        } else {
            &measurement
        };
        let value: f64 = fields[1].parse().map_err(|_| LineError::Value {
            name: path.to_owned(),
            value: fields[1].to_owned(),
        })?;
        if value.is_nan() {
            return Ok(Parsed::NaN);
        }
        if value.is_infinite() {
            return Err(LineError::Unsupported {
                name: path.to_owned(),
                value,
            });
        }
        let mut nanos = now_nanos;
        if let Some(t) = fields.get(2) {
            let unix: f64 = t.parse().map_err(|_| LineError::Time {
                name: path.to_owned(),
                time: (*t).to_owned(),
            })?;
            if unix != -1.0 {
                nanos = unix_to_nanos(unix).ok_or(LineError::TimeRange)?;
            }
        }
        for (k, v) in &self.tags {
            if !tags.iter().any(|(key, _)| key == k) {
                tags.push((k, Cow::Borrowed(v)));
            }
        }
        let mut refs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        let field = if field.is_empty() { "value" } else { &field };
        write_point(out, measurement, &mut refs, field, value, nanos)?;
        Ok(Parsed::Point)
    }
}

/// Seconds (with a fraction) to nanoseconds as Go's `time.Unix(int64(t), frac)` computes
/// them, within 1.6's accepted range.
fn unix_to_nanos(unix: f64) -> Option<i64> {
    if !unix.is_finite() {
        return None;
    }
    // Go's float-to-int conversion truncates towards zero; the fraction is taken from the
    // floor, so for negative times both parts add up as 1.6 computes them.
    let secs = unix.trunc();
    let frac = ((unix - unix.floor()) * 1e9).trunc();
    if secs < MIN_UNIX as f64 - 1.0 || secs > MAX_UNIX as f64 + 1.0 {
        return None;
    }
    let nanos = (secs as i64)
        .checked_mul(1_000_000_000)?
        .checked_add(frac as i64)?;
    let (min, max) = (MIN_UNIX * 1_000_000_000, MAX_UNIX * 1_000_000_000);
    (min..=max).contains(&nanos).then_some(nanos)
}

#[cfg(test)]
mod tests;
