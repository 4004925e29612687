//! `[[graphite]]` and `[[opentsdb]]`: the listeners of other collectors' protocols, as raw
//! TOML tables and as validated values (see the module docs of [`crate::config`] for the keys).

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::Checker;
use crate::ingest::graphite::parser::{DEFAULT_SEPARATOR, GraphiteParser, parse_default_tags};

/// InfluxDB 1.6's default database of the graphite service.
pub const DEFAULT_GRAPHITE_DATABASE: &str = "graphite";
/// InfluxDB 1.6's default database of the OpenTSDB service.
pub const DEFAULT_OPENTSDB_DATABASE: &str = "opentsdb";

/// Which transport a graphite listener uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphiteProtocol {
    /// Newline-delimited lines per connection.
    #[default]
    Tcp,
    /// Each datagram holds lines.
    Udp,
}

/// `[[graphite]]`: one Graphite plaintext listener (see [`crate::ingest::graphite`]).
#[derive(Debug, Clone)]
pub struct GraphiteConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// TCP or UDP.
    pub protocol: GraphiteProtocol,
    /// Database every point is written to; created on every backend at start.
    pub database: String,
    /// The templates, separator and tags, checked and compiled.
    pub parser: GraphiteParser,
    /// The separator, templates and tags as written, which tell two configs apart.
    pub written: Vec<String>,
}

/// Equal when written the same: the compiled parser follows from the text.
impl PartialEq for GraphiteConfig {
    fn eq(&self, other: &Self) -> bool {
        self.bind == other.bind
            && self.protocol == other.protocol
            && self.database == other.database
            && self.written == other.written
    }
}

/// `[[opentsdb]]`: one OpenTSDB listener, telnet `put` lines and HTTP `/api/put` on the same
/// port (see [`crate::ingest::opentsdb`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpentsdbConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Database every point is written to; created on every backend at start.
    pub database: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGraphite {
    bind: Spanned<String>,
    #[serde(default)]
    protocol: GraphiteProtocol,
    database: Option<Spanned<String>>,
    separator: Option<Spanned<String>>,
    #[serde(default)]
    templates: Vec<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOpentsdb {
    bind: Spanned<String>,
    database: Option<Spanned<String>>,
}

impl RawGraphite {
    pub(super) fn bind_spanned(&self) -> &Spanned<String> {
        &self.bind
    }
}

impl RawOpentsdb {
    pub(super) fn bind_spanned(&self) -> &Spanned<String> {
        &self.bind
    }
}

/// A database key with its default.
fn database(
    c: &mut Checker<'_>,
    raw: &Option<Spanned<String>>,
    key: &str,
    default: &str,
) -> String {
    match raw {
        Some(v) => c.database(v, key),
        None => default.to_owned(),
    }
}

pub(super) fn graphite(
    c: &mut Checker<'_>,
    raw: &[RawGraphite],
    placeholder: SocketAddr,
) -> Vec<GraphiteConfig> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, g) in raw.iter().enumerate() {
        let key = |k: &str| format!("graphite[{i}].{k}");
        let bind = c.bind(&g.bind, &key("bind")).unwrap_or(placeholder);
        let database = database(c, &g.database, &key("database"), DEFAULT_GRAPHITE_DATABASE);
        let separator = match &g.separator {
            Some(s) if s.get_ref().is_empty() => {
                c.at(s, key("separator"), "must not be empty");
                DEFAULT_SEPARATOR.to_owned()
            }
            Some(s) => s.get_ref().clone(),
            None => DEFAULT_SEPARATOR.to_owned(),
        };
        let mut tags = Vec::new();
        for t in &g.tags {
            match parse_default_tags(std::slice::from_ref(t.get_ref())) {
                // As 1.6 reads them into a map: the last value given for a key wins.
                Ok(parsed) => {
                    for (k, v) in parsed {
                        tags.retain(|(key, _): &(String, String)| *key != k);
                        tags.push((k, v));
                    }
                }
                Err(e) => c.at(t, key("tags"), e.0),
            }
        }
        let templates: Vec<String> = g.templates.iter().map(|t| t.get_ref().clone()).collect();
        let parser = match GraphiteParser::new(&templates, &separator, tags.clone()) {
            Ok(p) => p,
            Err(e) => {
                // Name the template at fault: check them one by one for the line.
                let culprit = (0..templates.len()).find(|&n| {
                    GraphiteParser::new(&templates[..=n], &separator, Vec::new()).is_err()
                });
                match culprit {
                    Some(n) => c.at(&g.templates[n], key("templates"), e.0),
                    None => c.at(&g.bind, key("templates"), e.0),
                }
                GraphiteParser::without_templates(tags)
            }
        };
        let mut written = vec![separator];
        written.extend(templates);
        written.push(String::new());
        written.extend(g.tags.iter().map(|t| t.get_ref().clone()));
        out.push(GraphiteConfig {
            bind,
            protocol: g.protocol,
            database,
            parser,
            written,
        });
    }
    out
}

pub(super) fn opentsdb(
    c: &mut Checker<'_>,
    raw: &[RawOpentsdb],
    placeholder: SocketAddr,
) -> Vec<OpentsdbConfig> {
    raw.iter()
        .enumerate()
        .map(|(i, o)| OpentsdbConfig {
            bind: c
                .bind(&o.bind, &format!("opentsdb[{i}].bind"))
                .unwrap_or(placeholder),
            database: database(
                c,
                &o.database,
                &format!("opentsdb[{i}].database"),
                DEFAULT_OPENTSDB_DATABASE,
            ),
        })
        .collect()
}
