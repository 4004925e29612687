use proptest::prelude::*;

use super::*;

fn kinds(q: &str) -> Vec<StatementKind> {
    classify(q).statements.into_iter().map(|s| s.kind).collect()
}

fn texts(q: &str) -> Vec<&str> {
    split(q).into_iter().map(|r| &q[r]).collect()
}

#[test]
fn reads() {
    for q in [
        "SELECT * FROM cpu",
        "select mean(v) from m where time > now() - 1h group by time(1m)",
        "SHOW DATABASES",
        "show measurements on db",
        "EXPLAIN SELECT * FROM m",
        "EXPLAIN ANALYZE SELECT count(v) FROM m",
        "SHOW RETENTION POLICIES ON \"db\"",
        "SELECT \"into\" FROM m",
        "SELECT 'INTO' FROM m",
        "SELECT * FROM /into/",
        "SELECT * FROM m WHERE host =~ /into;x/",
        "SELECT * FROM a, /b into c/",
        "SELECT * FROM m -- INTO x\n",
        "SELECT * FROM m /* INTO x */",
        "SELEC",
        "bogus statement",
    ] {
        assert_eq!(classify(q).route, Route::Read, "{q}");
    }
    assert_eq!(kinds("SHOW QUERIES"), vec![StatementKind::ShowQueries]);
}

#[test]
fn writes() {
    for q in [
        "CREATE DATABASE x",
        "create retention policy r on db duration 1d replication 1",
        "DROP DATABASE x",
        "DROP MEASUREMENT m",
        "DROP SERIES FROM m",
        "ALTER RETENTION POLICY autogen ON db DURATION 2d",
        "DELETE FROM m WHERE time < now()",
        "SELECT * INTO m2 FROM m",
        "select mean(v) into \"db\".\"rp\".:MEASUREMENT from /.*/ group by *",
        "SELECT v / 2 INTO m2 FROM m",
        "CREATE CONTINUOUS QUERY cq ON db BEGIN SELECT mean(v) INTO m2 FROM m GROUP BY time(1h) END",
        "SHOW DATABASES; CREATE DATABASE x",
    ] {
        assert_eq!(classify(q).route, Route::Everywhere, "{q}");
    }
}

#[test]
fn user_administration() {
    for q in [
        "CREATE USER admin WITH PASSWORD 'x;y' WITH ALL PRIVILEGES",
        "drop user bob",
        "SET PASSWORD FOR bob = 'secret'",
        "GRANT READ ON db TO bob",
        "REVOKE ALL PRIVILEGES FROM bob",
        "CREATE DATABASE x; CREATE USER u WITH PASSWORD 'p'",
    ] {
        assert_eq!(classify(q).route, Route::UserAdmin, "{q}");
    }
    // The password's `;` does not split the statement.
    assert_eq!(
        texts("CREATE USER a WITH PASSWORD 'x;y'; SHOW USERS"),
        vec!["CREATE USER a WITH PASSWORD 'x;y'", "SHOW USERS"]
    );
}

#[test]
fn kill_query_names_its_backend() {
    assert_eq!(classify("KILL QUERY 12").route, Route::Kill { on: None });
    assert_eq!(
        classify("kill query 12 on \"influx-a\"").route,
        Route::Kill {
            on: Some("influx-a".into())
        }
    );
    assert_eq!(
        classify("KILL QUERY 3 ON b1").route,
        Route::Kill {
            on: Some("b1".into())
        }
    );
}

#[test]
fn splits_on_semicolons_outside_quotes_and_comments() {
    assert_eq!(
        texts(" SELECT 'a;b' FROM \"m;n\" ;; -- c;d\n SHOW DATABASES ; /* x;y */ "),
        vec!["SELECT 'a;b' FROM \"m;n\"", "SHOW DATABASES"]
    );
    assert_eq!(
        texts("SELECT * FROM m WHERE a =~ /x;y\\/z;/; SHOW USERS"),
        vec!["SELECT * FROM m WHERE a =~ /x;y\\/z;/", "SHOW USERS"]
    );
    assert_eq!(
        texts("SELECT 'it\\'s;' FROM m"),
        vec!["SELECT 'it\\'s;' FROM m"]
    );
    // Division is not a regex.
    assert_eq!(texts("SELECT a/2;SELECT b"), vec!["SELECT a/2", "SELECT b"]);
    assert_eq!(
        texts("SELECT (a) / 2, \"b\" / 'c';SELECT b"),
        vec!["SELECT (a) / 2, \"b\" / 'c'", "SELECT b"]
    );
}

#[test]
fn a_regex_is_read_wherever_influxql_expects_an_operand() {
    // Each hides a quote in a regex: read as a string, it would swallow the statement after it.
    for (q, regex) in [
        ("SELECT v FROM m GROUP BY /x'/", "/x'/"),
        ("SELECT /x'/ FROM m", "/x'/"),
        ("SELECT top(/x'/, 1) FROM m", "/x'/"),
        ("SELECT v FROM m GROUP BY time(1m), /x'/", "/x'/"),
        ("SELECT v FROM db.rp./x'/", "/x'/"),
        ("SELECT v FROM m WHERE a = /x'/ AND /y'/ =~ b", "/y'/"),
    ] {
        let query = format!("{q}; DROP MEASUREMENT m -- '");
        assert_eq!(texts(&query), vec![q, "DROP MEASUREMENT m"], "{query}");
        assert!(q.contains(regex));
        assert_eq!(classify(&query).route, Route::Everywhere, "{query}");
    }
    // A write hidden behind one is a write, and a password behind one is never queued.
    assert_eq!(
        kinds("SELECT /x'/ INTO m2 FROM m -- '"),
        vec![StatementKind::Write]
    );
    assert_eq!(
        kinds("SELECT * INTO a FROM b GROUP BY /x'/; CREATE USER u WITH PASSWORD 's' -- '"),
        vec![StatementKind::Write, StatementKind::UserAdmin]
    );
    // `into` inside a regex is not INTO.
    assert_eq!(kinds("SELECT /into/ FROM m"), vec![StatementKind::Read]);
    assert!(split("").is_empty());
    assert!(split(" ; -- only a comment").is_empty());
    // Unterminated quotes run to the end.
    assert_eq!(texts("SELECT 'oops; DROP"), vec!["SELECT 'oops; DROP"]);
    assert_eq!(classify("SELECT 'oops; DROP DATABASE x").route, Route::Read);
}

/// Statements the property tests join: their text and kind.
fn statement() -> impl Strategy<Value = (String, StatementKind)> {
    let ident = prop_oneof![
        "[a-z][a-z0-9_]{0,8}".prop_map(|s| s),
        // Quoted identifiers with anything inside, quotes and backslashes escaped.
        any::<String>()
            .prop_map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
    ];
    let string =
        any::<String>().prop_map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")));
    // Not starting with `*`: Go's regexp refuses that, and InfluxDB the whole query.
    let regex = "([a-z;'\" .][a-z;'\" *.]{0,9})?".prop_map(|s| format!("/{s}/"));
    (ident.clone(), ident, string, regex, 0..9u8).prop_map(|(a, b, s, r, which)| match which {
        0 => (
            format!("SELECT {a} FROM {b} WHERE x = {s}"),
            StatementKind::Read,
        ),
        1 => (format!("SELECT * FROM {r}"), StatementKind::Read),
        2 => (format!("SELECT * INTO {a} FROM {b}"), StatementKind::Write),
        3 => (format!("CREATE DATABASE {a}"), StatementKind::Write),
        4 => (
            format!("DELETE FROM {a} WHERE t = {s}"),
            StatementKind::Write,
        ),
        5 => (
            format!("CREATE USER {a} WITH PASSWORD {s}"),
            StatementKind::UserAdmin,
        ),
        6 => (
            format!("SHOW TAG VALUES FROM {a} WITH KEY =~ {r}"),
            StatementKind::Read,
        ),
        7 => (format!("select {a} -- {s}\n from {b}"), StatementKind::Read),
        _ => (
            format!("SET PASSWORD FOR {a} = {s}"),
            StatementKind::UserAdmin,
        ),
    })
}

proptest! {
    #[test]
    fn never_panics_and_spans_are_ordered(q in any::<String>()) {
        let c = classify(&q);
        let mut end = 0;
        for s in &c.statements {
            prop_assert!(s.span.start >= end && s.span.start < s.span.end && s.span.end <= q.len());
            prop_assert!(q.is_char_boundary(s.span.start) && q.is_char_boundary(s.span.end));
            end = s.span.end;
        }
    }

    #[test]
    fn joined_statements_split_back(stmts in proptest::collection::vec(statement(), 1..6), sep in "[ \n]{0,2};[ \n]{0,2}") {
        let q = stmts.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(&sep);
        let c = classify(&q);
        let got: Vec<(&str, StatementKind)> = c.statements.iter().map(|s| (&q[s.span.clone()], s.kind.clone())).collect();
        let want: Vec<(&str, StatementKind)> = stmts.iter().map(|(t, k)| (t.as_str(), k.clone())).collect();
        prop_assert_eq!(got, want);
        let user = stmts.iter().any(|(_, k)| *k == StatementKind::UserAdmin);
        let once_only = c.statements.iter().any(|s| s.kind == StatementKind::Write && !s.repeatable);
        if user && once_only {
            prop_assert!(matches!(c.route, Route::Refused(_)), "{:?}", c.route);
            return Ok(());
        }
        let expected_route = if user {
            Route::UserAdmin
        } else if stmts.iter().any(|(_, k)| *k == StatementKind::Write) {
            Route::Everywhere
        } else {
            Route::Read
        };
        prop_assert_eq!(c.route, expected_route);
    }

    /// The safe direction: a bare INTO in a SELECT is never a read, whatever surrounds it.
    #[test]
    fn select_into_is_never_a_read(before in "[a-z0-9_ ,*()+]{0,20}", after in "[a-z0-9_ ,*()+\"'.]{0,20}") {
        let q = format!("SELECT {before} INTO {after}");
        prop_assert_eq!(classify(&q).route, Route::Everywhere);
    }
}

#[test]
fn a_block_comment_where_influxql_scans_a_token_is_a_comment() {
    // InfluxQL reads `/*` after WHERE, AND, BY, SELECT and punctuation as a comment: a `/` in
    // it must not start a regex that swallows the statement after it.
    for q in [
        "SELECT * FROM cpu WHERE /* a/b */ time > 0",
        "SELECT /* a/b */ v FROM cpu",
        "SELECT v FROM cpu WHERE a = 1 AND /* x/ */ b = 2",
        "SELECT v FROM cpu GROUP BY /* a/ */ host",
        "SELECT max(/* a/ */ v) FROM cpu",
    ] {
        let query = format!("{q}; DROP MEASUREMENT cpu");
        assert_eq!(texts(&query), vec![q, "DROP MEASUREMENT cpu"], "{query}");
        assert_eq!(classify(&query).route, Route::Everywhere, "{query}");
    }
}

#[test]
fn a_slash_star_is_a_comment_everywhere() {
    // Where InfluxQL reads a regex itself (after FROM, `,` or `.` in a FROM list, `=~`), a
    // regex starting with `*` cannot compile and the whole query is refused: as a comment,
    // `/*` is read right wherever the query can run.
    for q in [
        "SELECT v FROM --x\n/* a/ ' */ cpu",
        "SELECT v FROM /* a/ ' */ cpu",
        "SELECT v FROM a, /* a/ ' */ cpu",
        "SELECT v FROM cpu WHERE t =~ /* a/ ' */ /x/",
    ] {
        let query = format!("{q}; DROP MEASUREMENT cpu --'");
        assert_eq!(texts(&query), vec![q, "DROP MEASUREMENT cpu"], "{query}");
        assert_eq!(classify(&query).route, Route::Everywhere, "{query}");
    }
}

#[test]
fn a_dot_outside_a_from_list_is_followed_by_a_division() {
    let q =
        "SELECT v FROM cpu WHERE a./b > 0; DROP MEASUREMENT cpu; SELECT v FROM cpu WHERE c/2 > 0";
    assert_eq!(classify(q).route, Route::Everywhere);
    assert_eq!(texts(q).len(), 3);
    let q = "SELECT 1./2 FROM cpu; DROP MEASUREMENT cpu; SELECT 1/2 FROM cpu";
    assert_eq!(texts(q).len(), 3);
    // Naming a source (after FROM or WITH MEASUREMENT), it may be followed by a regex; `fill`
    // and `tz` are names there.
    for q in [
        "SELECT v FROM db.rp./x'/",
        "SELECT v FROM fill./x'/",
        "SELECT v FROM db.tz./x'/",
        "SHOW MEASUREMENTS WITH MEASUREMENT =~ x./'/",
    ] {
        let query = format!("{q}; DROP MEASUREMENT m --'");
        assert_eq!(texts(&query), vec![q, "DROP MEASUREMENT m"], "{query}");
    }
}

#[test]
fn only_reads_and_plain_schema_creation_are_repeatable() {
    let repeatable = all_repeatable;
    assert!(repeatable("CREATE DATABASE x; SHOW DATABASES"));
    assert!(repeatable(
        "CREATE RETENTION POLICY w ON x DURATION 7d REPLICATION 1"
    ));
    assert!(repeatable("ALTER RETENTION POLICY w ON x DURATION 8d"));
    assert!(!repeatable("ALTER RETENTION POLICY w ON x DEFAULT"));
    assert!(!repeatable(
        "CREATE RETENTION POLICY w ON x DURATION 7d REPLICATION 1 DEFAULT"
    ));
    assert!(!repeatable("DROP MEASUREMENT m"));
    assert!(!repeatable("DELETE FROM m WHERE time < now() - 1h"));
    assert!(!repeatable("SELECT * INTO b FROM a"));
}

#[test]
fn in_a_regex_only_a_slash_is_escaped() {
    // `\\/` is a backslash passed through, then an escaped `/`: the regex goes on.
    let q = "SELECT /v\\\\/'|value/ INTO cpu_copy FROM cpu";
    assert_eq!(kinds(q), vec![StatementKind::Write]);
    let q = "SHOW MEASUREMENTS WITH MEASUREMENT =~ /a\\\\/'/; DROP MEASUREMENT cpu";
    assert_eq!(
        texts(q),
        vec![
            "SHOW MEASUREMENTS WITH MEASUREMENT =~ /a\\\\/'/",
            "DROP MEASUREMENT cpu"
        ]
    );
    // In strings and identifiers `\\` is one escaped backslash.
    assert_eq!(
        texts("SELECT 'a\\\\'; SHOW USERS"),
        vec!["SELECT 'a\\\\'", "SHOW USERS"]
    );
}

#[test]
fn a_carriage_return_ends_a_line_comment() {
    let q = "SELECT * FROM cpu -- x\r; DROP MEASUREMENT cpu";
    assert_eq!(classify(q).route, Route::Everywhere);
    assert_eq!(texts(q), vec!["SELECT * FROM cpu", "DROP MEASUREMENT cpu"]);
}

#[test]
fn drop_shard_is_refused_for_its_id_is_per_backend() {
    assert_eq!(kinds("DROP SHARD 5"), vec![StatementKind::PerBackend]);
    assert!(matches!(
        classify("SHOW SHARDS; drop shard 5").route,
        Route::Refused(_)
    ));
    assert_eq!(classify("DROP SERIES FROM m").route, Route::Everywhere);
}

#[test]
fn kill_query_with_statements_for_every_backend_is_refused() {
    assert!(matches!(
        classify("KILL QUERY 5 ON a; DROP MEASUREMENT m").route,
        Route::Refused(_)
    ));
    assert!(matches!(
        classify("KILL QUERY 5; SHOW QUERIES").route,
        Route::Kill { .. }
    ));
}

#[test]
fn a_nul_anywhere_refuses_the_query() {
    // What 1.6.7 runs: the NUL is skipped inside a word, and ends a line comment.
    for q in [
        "DR\0OP DATABASE a",
        "SELECT * IN\0TO m2 FROM m",
        "SHOW DATABASES -- x\0; DROP DATABASE b",
        "SELECT * FROM \"m\0\"",
    ] {
        assert!(matches!(classify(q).route, Route::Refused(_)), "{q:?}");
    }
}

#[test]
fn kill_queries_naming_different_backends_are_refused() {
    for q in [
        "KILL QUERY 1 ON \"a\"; KILL QUERY 2 ON \"b\"",
        "KILL QUERY 1 ON a; KILL QUERY 2",
        "KILL QUERY 1; KILL QUERY 2 ON a",
    ] {
        assert!(matches!(classify(q).route, Route::Refused(_)), "{q}");
    }
    assert_eq!(
        classify("KILL QUERY 1 ON a; KILL QUERY 2 ON \"a\"").route,
        Route::Kill {
            on: Some("a".to_owned())
        }
    );
    assert_eq!(
        classify("KILL QUERY 1; KILL QUERY 2").route,
        Route::Kill { on: None }
    );
}

#[test]
fn user_statements_sent_with_other_changes_are_refused() {
    assert!(matches!(
        classify("DROP MEASUREMENT m; SET PASSWORD FOR u = 'x'").route,
        Route::Refused(_)
    ));
    // Changes that may run twice are sent with them, as setup scripts do.
    for q in [
        "CREATE USER u WITH PASSWORD 'x'; SHOW USERS",
        "CREATE DATABASE x; CREATE USER u WITH PASSWORD 'p'",
    ] {
        assert_eq!(classify(q).route, Route::UserAdmin, "{q}");
    }
}

#[test]
fn statements_that_writes_arriving_later_would_change_are_told_apart() {
    let sensitive = |q: &str| classify(q).order_sensitive();
    for q in [
        "DELETE FROM m WHERE time < now() - 1d",
        "drop series from m where host = 'a'",
        "DROP MEASUREMENT m",
        "DROP DATABASE d",
        "DROP RETENTION POLICY r ON d",
        "SELECT mean(v) INTO m2 FROM m GROUP BY time(1m)",
        "EXPLAIN ANALYZE SELECT * INTO m2 FROM m",
        "/* first */ DELETE FROM m",
        "ALTER RETENTION POLICY r ON d DEFAULT",
        "CREATE RETENTION POLICY r ON d DURATION 1d REPLICATION 1 DEFAULT",
        "SHOW DATABASES; DROP MEASUREMENT m",
    ] {
        assert!(sensitive(q), "{q}");
    }
    for q in [
        "SELECT * FROM m",
        "CREATE DATABASE d",
        "CREATE RETENTION POLICY r ON d DURATION 1d REPLICATION 1",
        "ALTER RETENTION POLICY r ON d DURATION 2d",
        "CREATE CONTINUOUS QUERY c ON d BEGIN SELECT mean(v) INTO m2 FROM m GROUP BY time(1m) END",
        "DROP CONTINUOUS QUERY c ON d",
        "DROP SUBSCRIPTION s ON d.r",
        "CREATE USER u WITH PASSWORD 'x'",
    ] {
        assert!(!sensitive(q), "{q}");
    }
}
