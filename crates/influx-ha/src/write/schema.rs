//! Copying a database's retention policies from a backend that has them to one that does not,
//! so that replayed writes land in the same retention policies everywhere (DESIGN.md §3).

use std::time::Duration;

use crate::backend::BackendClient;

/// A retention policy as `SHOW RETENTION POLICIES` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub name: String,
    /// `None`: infinite.
    pub duration: Option<Duration>,
    pub shard_group_duration: Duration,
    pub replication: u64,
    pub default: bool,
}

/// Quotes an InfluxQL identifier.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // InfluxQL refuses a raw line feed in quotes; line protocol takes one in a name.
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Go `time.Duration` string as InfluxDB prints it (`168h0m0s`, `1h30m0s`, `0s`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if (c == 'm' || c == 'u' || c == 'µ' || c == 'n') && chars.peek() == Some(&'s') {
            chars.next();
            unit.push('s');
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        let seconds = match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += Duration::from_secs_f64(value * seconds);
        any = true;
    }
    (any && number.is_empty()).then_some(total)
}

/// Every error an InfluxQL answer reports, with the index of its statement (`None` for an
/// error about the whole request); `None` when the answer is neither one JSON document nor
/// MessagePack maps.
pub fn statement_errors(body: &[u8]) -> Option<Vec<(Option<u64>, String)>> {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return msgpack_errors(body);
    };
    let mut errors = Vec::new();
    if let Some(error) = json["error"].as_str() {
        errors.push((None, error.to_owned()));
    }
    for result in json["results"].as_array().into_iter().flatten() {
        if let Some(error) = result["error"].as_str() {
            errors.push((result["statement_id"].as_u64(), error.to_owned()));
        }
    }
    Some(errors)
}

/// The first error an InfluxQL answer reports: a statement that failed is answered 200 with
/// `results[i].error`. An answer that is not one JSON document (cut short, or chunked into
/// several) is searched for its first `"error":"…"` member instead.
pub fn statement_error(body: &[u8]) -> Option<String> {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        if let Some(errors) = msgpack_errors(body) {
            return errors.into_iter().next().map(|(_, e)| e);
        }
        return first_error_member(body);
    };
    if let Some(error) = json["error"].as_str() {
        return Some(error.to_owned());
    }
    json["results"]
        .as_array()?
        .iter()
        .find_map(|r| r["error"].as_str().map(str::to_owned))
}

/// The errors of an answer in MessagePack (`Accept: application/x-msgpack`, the Python
/// client's default), one or more maps shaped as the JSON documents are; `None` when `body`
/// is not that. A JSON document is not: its `{` reads as a MessagePack number.
fn msgpack_errors(body: &[u8]) -> Option<Vec<(Option<u64>, String)>> {
    let field = |map: &[(rmpv::Value, rmpv::Value)], key: &str| {
        map.iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.clone())
    };
    let mut rest = body;
    let mut errors = Vec::new();
    while !rest.is_empty() {
        let value = rmpv::decode::read_value(&mut rest).ok()?;
        let doc = value.as_map()?;
        if let Some(error) = field(doc, "error") {
            errors.push((None, error.as_str()?.to_owned()));
        }
        let results = field(doc, "results");
        for (at, result) in results
            .iter()
            .flat_map(|r| r.as_array())
            .flatten()
            .enumerate()
        {
            let result = result.as_map()?;
            if let Some(error) = field(result, "error") {
                // 1.6 leaves `statement_id` out of a failed statement's result here.
                let id = field(result, "statement_id").and_then(|id| id.as_u64());
                errors.push((id.or(u64::try_from(at).ok()), error.as_str()?.to_owned()));
            }
        }
    }
    (!body.is_empty()).then_some(errors)
}

/// The string value of the first `"error":` member in `body`, read as a JSON string.
fn first_error_member(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"error\":";
    let at = memchr::memmem::find(body, KEY)? + KEY.len();
    let mut values = serde_json::Deserializer::from_slice(&body[at..]).into_iter::<String>();
    values.next()?.ok()
}

/// `SHOW RETENTION POLICIES ON db` on `client`.
pub async fn retention_policies(
    client: &BackendClient,
    db: &str,
) -> Result<Vec<RetentionPolicy>, String> {
    let q = format!("SHOW RETENTION POLICIES ON {}", quote_ident(db));
    let answer = client.query(&q, None).await.map_err(|e| e.to_string())?;
    if !answer.status.is_success() {
        return Err(format!("{q} answered {}", answer.status));
    }
    parse_retention_policies(&answer.body)
}

fn parse_retention_policies(body: &[u8]) -> Result<Vec<RetentionPolicy>, String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    let result = &json["results"][0];
    if let Some(error) = result["error"].as_str() {
        return Err(error.to_owned());
    }
    let Some(series) = result["series"][0].as_object() else {
        return Ok(Vec::new());
    };
    let columns: Vec<&str> = series["columns"]
        .as_array()
        .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let col = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(n), Some(d), Some(sg), Some(r), Some(def)) = (
        col("name"),
        col("duration"),
        col("shardGroupDuration"),
        col("replicaN"),
        col("default"),
    ) else {
        return Err(format!("unexpected columns {columns:?}"));
    };
    let mut out = Vec::new();
    for row in series["values"].as_array().into_iter().flatten() {
        let text = |i: usize| row[i].as_str().unwrap_or_default();
        let duration =
            parse_go_duration(text(d)).ok_or_else(|| format!("duration {:?}", text(d)))?;
        out.push(RetentionPolicy {
            name: text(n).to_owned(),
            duration: (!duration.is_zero()).then_some(duration),
            shard_group_duration: parse_go_duration(text(sg))
                .ok_or_else(|| format!("shard group duration {:?}", text(sg)))?,
            replication: row[r].as_u64().unwrap_or(1),
            default: row[def].as_bool().unwrap_or(false),
        });
    }
    Ok(out)
}

/// The statement that creates `rp` on `db`.
/// [`create_statement`] as an `ALTER`: for a policy that already exists with other settings
/// (a database just created has a default `autogen`).
pub fn alter_statement(db: &str, rp: &RetentionPolicy) -> String {
    create_statement(db, rp).replacen("CREATE RETENTION POLICY", "ALTER RETENTION POLICY", 1)
}

pub fn create_statement(db: &str, rp: &RetentionPolicy) -> String {
    let duration = rp
        .duration
        .map_or_else(|| "INF".to_owned(), |d| format!("{}s", d.as_secs()));
    format!(
        "CREATE RETENTION POLICY {} ON {} DURATION {duration} REPLICATION {} SHARD DURATION {}s{}",
        quote_ident(&rp.name),
        quote_ident(db),
        rp.replication.max(1),
        rp.shard_group_duration.as_secs().max(1),
        if rp.default { " DEFAULT" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn errors_are_read_from_messagepack_answers_as_influxd_gives_them() {
        // influxd 1.6.7's answers with `Accept: application/x-msgpack`, as captured.
        let not_found = hex(
            "81a7726573756c74739181a56572726f72b86461746162617365206e6f7420666f756e643a206e6f6462",
        );
        let second_not_found = hex(
            "81a7726573756c74739282ac73746174656d656e745f696400a67365726965739081a56572726f72b86461746162617365206e6f7420666f756e643a206e6f6462",
        );
        let ran = hex("81a7726573756c74739182ac73746174656d656e745f696400a673657269657390");
        let unparsable = hex("81a56572726f72a3626164");
        let error = "database not found: nodb".to_owned();
        assert_eq!(statement_error(&not_found), Some(error.clone()));
        assert_eq!(
            statement_errors(&not_found),
            Some(vec![(Some(0), error.clone())])
        );
        assert_eq!(
            statement_errors(&second_not_found),
            Some(vec![(Some(1), error.clone())])
        );
        assert_eq!(statement_error(&ran), None);
        assert_eq!(statement_errors(&ran), Some(Vec::new()));
        assert_eq!(
            statement_errors(&unparsable),
            Some(vec![(None, "bad".to_owned())])
        );
        // Chunked: one map per chunk, the error in the second.
        let chunked = [ran.clone(), not_found.clone()].concat();
        assert_eq!(statement_error(&chunked), Some(error));
        // Neither JSON nor MessagePack maps: nothing known.
        assert_eq!(statement_errors(b"404 page not found"), None);
        assert_eq!(statement_errors(&not_found[..10]), None);
    }

    #[test]
    fn statement_errors_are_read_from_any_result() {
        assert_eq!(
            statement_error(br#"{"results":[{"statement_id":0}]}"#),
            None
        );
        assert_eq!(
            statement_error(
                br#"{"results":[{"statement_id":0},{"statement_id":1,"error":"retention policy conflicts with an existing policy"}]}"#
            )
            .as_deref(),
            Some("retention policy conflicts with an existing policy")
        );
        assert_eq!(
            statement_error(br#"{"error":"error parsing query: x"}"#).as_deref(),
            Some("error parsing query: x")
        );
        assert_eq!(statement_error(b""), None);
        // Cut short, or chunked into several documents.
        assert_eq!(
            statement_error(
                br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}{"res"#
            )
            .as_deref(),
            Some("database not found: x")
        );
        assert_eq!(
            statement_error(
                br#"{"results":[{"statement_id":0,"series":[{"name":"m","values":[[1,"#
            ),
            None
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(
            parse_go_duration("168h0m0s"),
            Some(Duration::from_secs(604_800))
        );
        assert_eq!(
            parse_go_duration("1h30m0s"),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("3x"), None);
    }

    #[test]
    fn influxdb_answer_becomes_statements() {
        let body = br#"{"results":[{"statement_id":0,"series":[{"columns":["name","duration","shardGroupDuration","replicaN","default"],"values":[["autogen","0s","168h0m0s",1,false],["short","48h0m0s","24h0m0s",1,true]]}]}]}"#;
        let rps = parse_retention_policies(body).expect("parses");
        assert_eq!(rps.len(), 2);
        assert_eq!(
            create_statement("db", &rps[0]),
            "CREATE RETENTION POLICY \"autogen\" ON \"db\" DURATION INF REPLICATION 1 SHARD DURATION 604800s"
        );
        assert_eq!(
            create_statement("db", &rps[1]),
            "CREATE RETENTION POLICY \"short\" ON \"db\" DURATION 172800s REPLICATION 1 SHARD DURATION 86400s DEFAULT"
        );
        let missing = br#"{"results":[{"statement_id":0,"error":"database not found: db"}]}"#;
        assert_eq!(
            parse_retention_policies(missing),
            Err("database not found: db".to_owned())
        );
    }
}
