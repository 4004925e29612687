//! Splitting an InfluxQL query into statements and deciding where each one must go
//! (DESIGN.md §5).
//!
//! The scanner knows just enough InfluxQL to find statement boundaries and leading keywords
//! without being fooled by what is inside quotes or comments: `'strings'` and `"identifiers"`
//! (with backslash escapes), `/regular expressions/` (only `\/` is an escape in them, as in
//! InfluxQL), `-- line` comments (ended by `\n` or `\r`, which InfluxQL reads as a line end)
//! and `/* block */` comments. `/*` always starts a comment: where InfluxQL's parser would read
//! it as the start of a regex instead (after `FROM` or `=~`, say), that regex would begin with
//! `*`, which Go's regexp refuses, so InfluxDB refuses the whole query and nothing runs. A `/`
//! not followed by `*` starts a regex where InfluxQL expects an operand (a field, a call
//! argument, a dimension, a source, a match) and divides after one. The scanner never fails:
//! text it cannot make sense of is a read, which one backend then refuses with InfluxDB's own
//! parse error.
//!
//! | statement | [`StatementKind`] | where it goes |
//! |---|---|---|
//! | `SELECT` without `INTO`, `SHOW …`, `EXPLAIN …`, anything unknown | [`StatementKind::Read`] | one fresh backend |
//! | `SHOW QUERIES` | [`StatementKind::ShowQueries`] | one backend: the answer lists that backend's queries |
//! | `SELECT … INTO`, `CREATE`, `DROP`, `ALTER`, `DELETE` (not about users) | [`StatementKind::Write`] | every backend; queued in order with the writes for one that cannot take it now |
//! | `CREATE USER`, `DROP USER`, `SET PASSWORD`, `GRANT`, `REVOKE` | [`StatementKind::UserAdmin`] | every backend directly, never queued (it may carry a password) |
//! | `KILL QUERY n [ON "backend"]` | [`StatementKind::KillQuery`] | the one backend named (query ids are per backend) |
//! | `DROP SHARD n` | [`StatementKind::PerBackend`] | refused: shard ids are per backend, the same id names other data on each |
//!
//! Refused as well: a `KILL QUERY` sent together with statements for every backend, `KILL
//! QUERY` statements naming different backends, statements about users sent together with
//! changes that cannot be repeated (the ones are never queued, the others must be), and any
//! query holding a NUL
//! character (InfluxQL's scanner drops it inside a word, so `DR\0OP` runs as `DROP`).
//!
//! The safe direction matters: a write taken for a read would reach one backend only, so any
//! `INTO` outside quotes in a `SELECT` or `EXPLAIN` makes it a write, even where InfluxDB would
//! then refuse the statement.

use std::ops::Range;

/// What one statement does, as far as routing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads data or metadata (also anything unrecognised: the backend answers its error).
    Read,
    /// `SHOW QUERIES`: a read whose answer depends on the backend.
    ShowQueries,
    /// Changes data or schema: every backend must execute it.
    Write,
    /// Changes users or privileges: every backend, directly.
    UserAdmin,
    /// `KILL QUERY`; `on` is the `ON` host as written (unquoted), when given.
    KillQuery {
        /// The host of `ON <host>`.
        on: Option<String>,
    },
    /// Changes data named by a backend's own ids (`DROP SHARD`): not sent anywhere.
    PerBackend,
}

/// One statement of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Where it is in the query text (without the `;`).
    pub span: Range<usize>,
    /// What it does.
    pub kind: StatementKind,
    /// Whether running it twice leaves what running it once does (a read, creating a
    /// database, creating or altering a retention policy that is not made the default).
    pub repeatable: bool,
    /// Whether writes reaching a backend after it change what it did there: it removes data
    /// (`DELETE`, `DROP SERIES`, `MEASUREMENT`, `DATABASE`, `RETENTION POLICY`), derives
    /// data from what is there (`SELECT … INTO`), or makes another retention policy the
    /// default (where writes without `rp` land).
    pub order_sensitive: bool,
}

/// Where a whole query goes: the most demanding of its statements decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One fresh backend.
    Read,
    /// Every backend, queued for those that cannot take it now.
    Everywhere,
    /// Every backend directly; refused while one is down.
    UserAdmin,
    /// One named backend; `on` as in [`StatementKind::KillQuery`].
    Kill {
        /// The backend named in the first `KILL QUERY … ON`, if any.
        on: Option<String>,
    },
    /// Nowhere, for this reason: a [`StatementKind::PerBackend`] statement, a `KILL QUERY`
    /// (one backend) sent with statements that must run on every backend or with one naming
    /// another backend, user statements sent with changes that cannot be repeated, or a NUL
    /// in the text.
    Refused(&'static str),
}

/// A query split and classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The non-empty statements, in order.
    pub statements: Vec<Statement>,
    /// Where the query goes.
    pub route: Route,
}

/// A token of the scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word (keyword, identifier or number), as written.
    Word(Range<usize>),
    /// A `"quoted identifier"`; the range excludes the quotes.
    Quoted(Range<usize>),
    /// A `'string'`.
    Str,
    /// A `/regex/`.
    Regex,
    /// `;`.
    Semicolon,
    /// `=~` or `!~`.
    RegexOp,
    /// Any other punctuation.
    Punct(u8),
}

struct Scanner<'a> {
    q: &'a [u8],
    pos: usize,
    /// Whether a `/` here starts a regex (where an operand may start) rather than dividing.
    regex_allowed: bool,
    /// Whether the scanner is in a `FROM` list, where a `.` precedes a source (`db.rp./re/`).
    in_from: bool,
    /// `in_from` outside each open parenthesis.
    outer_from: Vec<bool>,
}

impl<'a> Scanner<'a> {
    fn new(q: &'a str) -> Self {
        Self {
            q: q.as_bytes(),
            pos: 0,
            regex_allowed: false,
            in_from: false,
            outer_from: Vec::new(),
        }
    }

    /// Back to the state at the start of a statement.
    fn restart(&mut self) {
        self.regex_allowed = false;
        self.in_from = false;
        self.outer_from.clear();
    }

    fn peek(&self, off: usize) -> Option<u8> {
        self.q.get(self.pos + off).copied()
    }

    /// Skips whitespace and comments.
    fn skip_blank(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    while let Some(b) = self.peek(0) {
                        self.pos += 1;
                        // InfluxQL's reader turns a lone `\r` into a line end too.
                        if b == b'\n' || b == b'\r' {
                            break;
                        }
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    self.pos += 2;
                    loop {
                        match (self.peek(0), self.peek(1)) {
                            (Some(b'*'), Some(b'/')) => {
                                self.pos += 2;
                                break;
                            }
                            (Some(_), _) => self.pos += 1,
                            (None, _) => break,
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// Moves past a quoted run that started at `self.pos` with `quote`; returns where its
    /// content ends. An unterminated run ends the text. A backslash escapes the next byte, but
    /// in a regex only a `/` (InfluxQL passes other backslashes through to the regex).
    fn skip_quoted(&mut self, quote: u8) -> usize {
        self.pos += 1;
        while let Some(b) = self.peek(0) {
            if b == b'\\' {
                let escaped = quote != b'/' || self.peek(1) == Some(b'/');
                self.pos = (self.pos + 1 + usize::from(escaped)).min(self.q.len());
                continue;
            }
            if b == quote {
                let end = self.pos;
                self.pos += 1;
                return end;
            }
            self.pos += 1;
        }
        self.q.len()
    }

    /// The next token and where it starts.
    fn next_token(&mut self) -> Option<(usize, Token)> {
        self.skip_blank();
        let start = self.pos;
        let b = self.peek(0)?;
        let token = match b {
            b'\'' => {
                self.skip_quoted(b'\'');
                Token::Str
            }
            b'"' => {
                let end = self.skip_quoted(b'"');
                Token::Quoted(start + 1..end)
            }
            b'/' if self.regex_allowed => {
                self.skip_quoted(b'/');
                Token::Regex
            }
            b';' => {
                self.pos += 1;
                Token::Semicolon
            }
            b'=' | b'!' if self.peek(1) == Some(b'~') => {
                self.pos += 2;
                Token::RegexOp
            }
            b if is_word_byte(b) => {
                while self.peek(0).is_some_and(is_word_byte) {
                    self.pos += 1;
                }
                Token::Word(start..self.pos)
            }
            other => {
                self.pos += 1;
                Token::Punct(other)
            }
        };
        // InfluxQL reads a `/` where an operand is expected as the start of a regex (a field,
        // a call argument, a dimension, a source, a match), and after an operand as division.
        self.regex_allowed = match &token {
            Token::Word(r) => {
                let w = &self.q[r.clone()];
                let is_any = |words: &[&[u8]]| words.iter().any(|k| w.eq_ignore_ascii_case(k));
                if w.eq_ignore_ascii_case(b"FROM") {
                    self.in_from = true;
                    true
                } else if w.eq_ignore_ascii_case(b"MEASUREMENT") {
                    // `WITH MEASUREMENT =~ db.rp./re/` names a source as FROM does.
                    self.in_from = true;
                    false
                } else {
                    if is_any(&FROM_ENDS) {
                        self.in_from = false;
                    }
                    is_any(&OPERAND_KEYWORDS)
                }
            }
            Token::RegexOp => true,
            // Elsewhere a `.` ends a number or a name, and a `/` after it divides.
            Token::Punct(b'.') => self.in_from,
            Token::Punct(b'(') => {
                self.outer_from.push(self.in_from);
                self.in_from = false;
                true
            }
            Token::Punct(b')') => {
                self.in_from = self.outer_from.pop().unwrap_or(false);
                false
            }
            Token::Punct(_) => true,
            Token::Quoted(_) | Token::Str | Token::Regex | Token::Semicolon => false,
        };
        Some((start, token))
    }
}

/// Keywords an operand follows (any other word is an operand itself).
const OPERAND_KEYWORDS: [&[u8]; 5] = [b"SELECT", b"WHERE", b"BY", b"AND", b"OR"];

/// Keywords that end a `FROM` list.
/// (`fill` and `tz` are not among them: InfluxQL reads them as names, which a source may be,
/// and a `(` follows them anyway.)
const FROM_ENDS: [&[u8]; 11] = [
    b"SELECT", b"WHERE", b"GROUP", b"ORDER", b"LIMIT", b"OFFSET", b"SLIMIT", b"SOFFSET", b"WITH",
    b"INTO", b"ON",
];

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Splits `q` into its non-empty statements (comments and blanks alone are not statements).
pub fn split(q: &str) -> Vec<Range<usize>> {
    classify(q).statements.into_iter().map(|s| s.span).collect()
}

/// What classifying a statement needs of its tokens, gathered as they are scanned: a query
/// of millions of tokens is not held token by token.
#[derive(Debug, Default)]
struct Summary {
    /// Its first two tokens.
    head: Vec<Token>,
    /// Whether `INTO` is among its words.
    into: bool,
    /// Whether `DEFAULT` is among its words.
    default: bool,
    /// The token after its first `ON`, once seen.
    after_on: Option<Option<Token>>,
    /// The last token was that first `ON`.
    on_just_seen: bool,
}

impl Summary {
    fn add(&mut self, q: &str, token: Token) {
        if self.on_just_seen {
            self.on_just_seen = false;
            self.after_on = Some(Some(token.clone()));
        }
        if self.after_on.is_none() && is(q, Some(&token), "ON") {
            self.after_on = Some(None);
            self.on_just_seen = true;
        }
        self.into |= is(q, Some(&token), "INTO");
        self.default |= is(q, Some(&token), "DEFAULT");
        if self.head.len() < 2 {
            self.head.push(token);
        }
    }
}

/// Statements with the summary of their tokens.
fn statements(q: &str) -> Vec<(Range<usize>, Summary)> {
    let mut out = Vec::new();
    let mut scanner = Scanner::new(q);
    let mut summary = Summary::default();
    let mut first: Option<usize> = None;
    let mut last_end = 0;
    loop {
        let next = scanner.next_token();
        match next {
            Some((_, Token::Semicolon)) | None => {
                if let Some(start) = first.take() {
                    out.push((start..last_end, std::mem::take(&mut summary)));
                }
                // A new statement starts: a `/` at its start is not a regex.
                scanner.restart();
                if next.is_none() {
                    return out;
                }
            }
            Some((start, token)) => {
                first.get_or_insert(start);
                last_end = scanner.pos;
                summary.add(q, token);
            }
        }
    }
}

fn word<'q>(q: &'q str, token: Option<&Token>) -> Option<&'q str> {
    match token {
        Some(Token::Word(r)) => q.get(r.clone()),
        _ => None,
    }
}

fn is(q: &str, token: Option<&Token>, keyword: &str) -> bool {
    word(q, token).is_some_and(|w| w.eq_ignore_ascii_case(keyword))
}

/// Classifies one statement from the summary of its tokens.
fn kind(q: &str, summary: &Summary) -> StatementKind {
    let t = |i: usize| summary.head.get(i);
    let Some(first) = word(q, t(0)) else {
        return StatementKind::Read;
    };
    match first.to_ascii_uppercase().as_str() {
        "SELECT" | "EXPLAIN" if summary.into => StatementKind::Write,
        "SELECT" | "EXPLAIN" => StatementKind::Read,
        "SHOW" if is(q, t(1), "QUERIES") => StatementKind::ShowQueries,
        "SHOW" => StatementKind::Read,
        "CREATE" | "DROP" if is(q, t(1), "USER") => StatementKind::UserAdmin,
        "DROP" if is(q, t(1), "SHARD") => StatementKind::PerBackend,
        "CREATE" | "DROP" | "ALTER" | "DELETE" => StatementKind::Write,
        "SET" | "GRANT" | "REVOKE" => StatementKind::UserAdmin,
        "KILL" => {
            let on = match &summary.after_on {
                Some(Some(Token::Word(r) | Token::Quoted(r))) => q.get(r.clone()),
                _ => None,
            }
            .map(|host| host.replace("\\\"", "\"").replace("\\\\", "\\"));
            StatementKind::KillQuery { on }
        }
        _ => StatementKind::Read,
    }
}

/// Whether running the statement twice leaves what running it once does: a read, creating a
/// database, creating or altering a retention policy (unless it makes one the default: run
/// again later, it could undo another default set meanwhile).
fn repeatable(q: &str, kind: &StatementKind, summary: &Summary) -> bool {
    let t = |i: usize| summary.head.get(i);
    let schema = (is(q, t(0), "CREATE") && (is(q, t(1), "DATABASE") || is(q, t(1), "RETENTION")))
        || (is(q, t(0), "ALTER") && is(q, t(1), "RETENTION"));
    matches!(kind, StatementKind::Read | StatementKind::ShowQueries) || schema && !summary.default
}

/// See [`Statement::order_sensitive`].
fn order_sensitive(q: &str, kind: &StatementKind, summary: &Summary) -> bool {
    let t = |i: usize| summary.head.get(i);
    let removes = is(q, t(0), "DELETE")
        || is(q, t(0), "DROP")
            && ["SERIES", "MEASUREMENT", "DATABASE", "RETENTION"]
                .iter()
                .any(|w| is(q, t(1), w));
    let derives = is(q, t(0), "SELECT") || is(q, t(0), "EXPLAIN");
    // Queued writes without `rp` land in whichever policy is the default when they arrive.
    let new_default = summary.default
        && (is(q, t(0), "CREATE") || is(q, t(0), "ALTER"))
        && is(q, t(1), "RETENTION");
    *kind == StatementKind::Write && (removes || derives || new_default)
}

/// Whether running every statement of `q` twice leaves what running it once does (see
/// [`Statement::repeatable`]).
pub fn all_repeatable(q: &str) -> bool {
    classify(q).repeatable()
}

impl Classified {
    /// Whether running every statement twice leaves what running them once does.
    pub fn repeatable(&self) -> bool {
        self.statements.iter().all(|s| s.repeatable)
    }

    /// Whether a statement is [`Statement::order_sensitive`].
    pub fn order_sensitive(&self) -> bool {
        self.statements.iter().any(|s| s.order_sensitive)
    }
}

/// Splits and classifies a query.
pub fn classify(q: &str) -> Classified {
    let statements: Vec<Statement> = statements(q)
        .into_iter()
        .map(|(span, summary)| {
            let kind = kind(q, &summary);
            Statement {
                repeatable: repeatable(q, &kind, &summary),
                order_sensitive: order_sensitive(q, &kind, &summary),
                kind,
                span,
            }
        })
        .collect();
    let any = |f: fn(&StatementKind) -> bool| statements.iter().any(|s| f(&s.kind));
    let kill = any(|k| matches!(k, StatementKind::KillQuery { .. }));
    let mut kill_hosts = statements.iter().filter_map(|s| match &s.kind {
        StatementKind::KillQuery { on } => Some(on),
        _ => None,
    });
    let first_host = kill_hosts.next();
    let route = if q.contains('\0') {
        // InfluxQL's scanner drops a NUL inside a word (`DR\0OP` runs as `DROP`) and ends a
        // `--` comment at one, so no reading of the text here could match what runs.
        Route::Refused(
            "the query holds a NUL character, which InfluxQL skips inside words and takes for the end of a comment: remove it",
        )
    } else if any(|k| *k == StatementKind::PerBackend) {
        Route::Refused(
            "DROP SHARD names a shard by its id on one backend, and the same id is other data on each: run it on each InfluxDB directly",
        )
    } else if kill && any(|k| matches!(k, StatementKind::Write | StatementKind::UserAdmin)) {
        Route::Refused(
            "KILL QUERY runs on one backend and the other statements on every backend: send them apart",
        )
    } else if first_host.is_some_and(|first| kill_hosts.any(|on| on != first)) {
        Route::Refused(
            "the KILL QUERY statements name different backends (query ids are per backend): send them apart",
        )
    } else if any(|k| *k == StatementKind::UserAdmin)
        && statements
            .iter()
            .any(|s| s.kind == StatementKind::Write && !s.repeatable)
    {
        // Run directly, a change that cannot be repeated would be left done on some backends
        // only by a failure halfway, with nothing queued to finish it.
        Route::Refused(
            "statements about users run on every backend directly and are never queued, and a change that cannot be run twice must be queued for a backend that fails it: send them apart",
        )
    } else if any(|k| *k == StatementKind::UserAdmin) {
        Route::UserAdmin
    } else if any(|k| *k == StatementKind::Write) {
        Route::Everywhere
    } else if let Some(on) = statements.iter().find_map(|s| match &s.kind {
        StatementKind::KillQuery { on } => Some(on.clone()),
        _ => None,
    }) {
        Route::Kill { on }
    } else {
        Route::Read
    };
    Classified { statements, route }
}

#[cfg(test)]
mod tests;
