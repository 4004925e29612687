//! The compatibility oracle for the line-protocol validator: a real InfluxDB 1.6.7 decides.
//!
//! For every case (a body and a `precision` parameter):
//!
//! 1. the body is POSTed to a real influxd (`A`) at `/write?db=D&precision=P` in a fresh
//!    database, and the status and body of its answer are recorded;
//! 2. `lineproto::validate` gives its verdict: `influx_error() == None` must mean 204 with an
//!    empty body, `Some(msg)` must mean 400 with exactly `{"error":<msg as Go JSON>}` + `\n`;
//! 3. `output()` is written (same precision) to a second influxd (`B`), which must answer 204,
//!    and the data both servers then hold (`SHOW SERIES`, `SHOW FIELD KEYS`, `SELECT * FROM
//!    /.*/ GROUP BY *`) must be identical. Points stamped with the server clock on `A` and with
//!    lineproto's clock on `B` compare equal by replacing those times with `STAMP`, so bodies
//!    with and without timestamps are all checked.
//!
//! Cases: the line-protocol rows of REFERENCE.md, several hundred hand-written edge cases, and a
//! fixed number of generated ones (a seeded generator that assembles lines from fragments
//! biased toward the characters the parser treats specially).
//!
//! Every difference is collected and printed (body, influxd's answer, lineproto's answer,
//! what B did with the output, data diff) before the test fails, so one run shows them all.
//! Each is classified ([`Kind`]); only two kinds fail the test:
//!
//! - `MISMATCH`: answer, output or data differ;
//! - `MISMATCH: POISON`: influxd fails on the body (a 5xx, or the process dies: 1.6.7 has such
//!   bugs, see the cases after "Found by the generator") and lineproto forwards what makes it
//!   fail, so every backend would refuse that batch forever or crash.
//!
//! Listed but not failing: influxd answering differently when the case is re-run (it writes
//! shards concurrently and reports the first failing shard's error); influxd failing on a body
//! whose offending line lineproto keeps out (no influxd answer to copy); a field type conflict
//! inside one body (the storage layer's decision, outside the validator's contract "the error
//! text if the forwarded points are all stored"); and a series that influxd keeps in its index
//! after dropping the only point in it for its `time` field (no points differ).
//!
//! Run: `cargo test -p lineproto --test oracle -- --nocapture` (needs `influxd` on PATH, as
//! `scripts/test` and CI provide). Knobs: `ORACLE_GENERATED=N` (default 1500 generated cases),
//! `ORACLE_SEED=S`, `ORACLE_REPORT=FILE` (also write the report to FILE), `ORACLE_MINIMIZE=N`
//! (shrink each failing body of at most N bytes to a small reproduction; slow).

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lineproto::{Precision, validate};
use testkit::{Influxd, Response, go_json_bytes};

/// lineproto's "now" for stamping: fixed, so verdicts are reproducible and stamped points are
/// recognisable on `B`.
const NOW: i64 = 1_500_000_000_123_456_789;

/// Generated cases unless `ORACLE_GENERATED` says otherwise.
const GENERATED_DEFAULT: usize = 1500;

/// How often a mismatching case is re-run on `A` to tell influxd's own nondeterminism apart.
const RERUNS: usize = 3;

/// The data queries, run in one request.
const DATA_QUERY: &str = "SHOW SERIES; SHOW FIELD KEYS; SELECT * FROM /.*/ GROUP BY *";

// === cases ===

#[derive(Clone)]
struct Case {
    /// Where the case comes from (`ref`, `hand`, `gen`).
    origin: &'static str,
    /// The `precision` parameter as sent to `A` (empty: no parameter).
    precision: String,
    body: Vec<u8>,
}

struct Cases(Vec<Case>);

impl Cases {
    fn add(&mut self, origin: &'static str, precision: &str, body: impl AsRef<[u8]>) {
        self.0.push(Case {
            origin,
            precision: precision.to_owned(),
            body: body.as_ref().to_vec(),
        });
    }

    /// Each line given is one case of its own.
    fn each(&mut self, origin: &'static str, precision: &str, bodies: &[&[u8]]) {
        for b in bodies {
            self.add(origin, precision, b);
        }
    }
}

/// The line-protocol rows of REFERENCE.md.
fn reference_cases(c: &mut Cases) {
    c.add("ref", "", "cpu,host=a usage=");
    c.add(
        "ref",
        "",
        "pa,host=x v=1 1700000000000000001\npb,host=y v= 1700000000000000002\npc,host=z v=3 1700000000000000003",
    );
    c.add("ref", "", "cpu idle=1i 1700000000000000000\ncpu idle=1.5 1700000000000000001\ncpu,host=b idle=2i 1700000000000000002");
    c.add("ref", "", "");
    c.add("ref", "", "cpu time=1");
    c.add("ref", "", "cpu,time=1 v=1");
    c.add("ref", "", "cpu v=1 1\r\n");
    c.add("ref", "", "cpu v=1 1\r\ncpu v=2 2\r\n");
    c.add("ref", "", "cpu v=1u");
    for p in ["u", "ms", "s", "m", "h", "n", "ns", "us", "xx", ""] {
        c.add("ref", p, "cpu v=1 1700000000");
    }
}

/// Hand-written edge cases.
#[allow(clippy::too_many_lines)]
fn hand_cases(c: &mut Cases) {
    // Escapes in the measurement.
    c.each(
        "hand",
        "",
        &[
            b"c\\ pu v=1 1",
            b"c\\,pu v=1 1",
            b"c\\=pu v=1 1",
            b"c\\\"pu v=1 1",
            b"c\\\\pu v=1 1",
            b"c\\pu v=1 1",
            b"cpu\\ v=1 1",
            b"cpu\\\\ v=1 1",
            b"cpu\\  v=1 1",
            b"\\ cpu v=1 1",
            b"\\,cpu v=1 1",
            b"c=pu v=1 1",
            b"\"cpu\" v=1 1",
            b"c\"pu v=1 1",
            b"cpu\\",
            b"cpu\\ ",
            b"cpu\\,t=a v=1 1",
            b"cpu\\ ,t=a v=1 1",
            b"cpu\\\\,t=a v=1 1",
            b"c\\\\\\ pu v=1 1",
            b"c#pu v=1 1",
            b"c<p>u&x v=1 1",
            b"c<p>u&x v= 1",
            b"\xe6\xb8\xa9\xe5\xba\xa6 v=1 1",
            b"cpu\\\nv=1 1",
            b"cpu\\\n v=1 1",
            b"c\\\npu v=1 1",
            b"cpu\\",
            b"cpu v=1\\",
            b"cpu v=1 1\\",
            b"cpu v=1 1\\\n",
            b"cpu v=1 1\\\nx",
            b"cpu v=1 1\\\ncpu v=2 2",
            b"cpu v=1 1\n\\\n",
            b"\\",
            b"\\\n",
            b"\\\\",
            b"\\\ncpu v=1 1",
        ],
    );
    // Escapes in tag keys and values.
    c.each(
        "hand",
        "",
        &[
            b"cpu,t\\ a=b v=1 1",
            b"cpu,t\\,a=b v=1 1",
            b"cpu,t\\=a=b v=1 1",
            b"cpu,t\\\"a=b v=1 1",
            b"cpu,t\\\\a=b v=1 1",
            b"cpu,t=a\\ b v=1 1",
            b"cpu,t=a\\,b v=1 1",
            b"cpu,t=a\\=b v=1 1",
            b"cpu,t=a\\\"b v=1 1",
            b"cpu,t=a\\\\b v=1 1",
            b"cpu,t=a\\b v=1 1",
            b"cpu,t=a\\ v=1 1",
            b"cpu,t=a\\\\ v=1 1",
            b"cpu,t=\\  v=1 1",
            b"cpu,t=\"a b\" v=1 1",
            b"cpu,t=\"a\" v=1 1",
            b"cpu,\"t\"=a v=1 1",
            b"cpu,t=a\\\nb v=1 1",
            b"cpu,t\\\n=a v=1 1",
            b"cpu,t=a=b v=1 1",
            b"cpu,t==b v=1 1",
            b"cpu,t=a\\=\\=b v=1 1",
            b"cpu,t=<&> v=1 1",
            b"cpu,t=\xff v=1 1",
            b"cpu,t=\xff v= 1",
            b"cpu,t=a#b v=1 1",
            b"cpu,#t=a v=1 1",
        ],
    );
    // Escapes and quotes in field keys.
    c.each(
        "hand",
        "",
        &[
            b"cpu v\\ a=1 1",
            b"cpu v\\,a=1 1",
            b"cpu v\\=a=1 1",
            b"cpu v\\\"a=1 1",
            b"cpu v\\\\a=1 1",
            b"cpu v\\a=1 1",
            b"cpu v\\=1 1",
            b"cpu \"v\"=1 1",
            b"cpu v\"=1 1",
            b"cpu \"v=1 1",
            b"cpu v=1,\"w\"=2 1",
            b"cpu v=1,w\"=2 1",
            b"cpu v=1,\"w=2 1",
            b"cpu \"v\"=\"x\" 1",
            b"cpu v\\\n=1 1",
            b"cpu v=1,w\\ x=2 1",
            b"cpu #v=1 1",
            b"cpu v#=1 1",
            b"cpu <v>=1 1",
            b"cpu v=1 1 # trailing comment",
        ],
    );
    // String fields: quotes, raw newlines, escaped quotes.
    c.each(
        "hand",
        "",
        &[
            b"cpu v=\"\" 1",
            b"cpu v=\"a\" 1",
            b"cpu v=\"a b\" 1",
            b"cpu v=\"a,b=c\" 1",
            b"cpu v=\"a\\\"b\" 1",
            b"cpu v=\"a\\\\\" 1",
            b"cpu v=\"a\\\\\\\"\" 1",
            b"cpu v=\"a\\\" 1",
            b"cpu v=\"a\\\"",
            b"cpu v=\"a\\b\" 1",
            b"cpu v=\"a\\nb\" 1",
            b"cpu v=\"a\nb\" 1",
            b"cpu v=\"a\n\" 1",
            b"cpu v=\"\n\" 1",
            b"cpu v=\"a\r\nb\" 1",
            b"cpu v=\"a\nb\" 1\ncpu v=2 2",
            b"cpu v=\"a\n\ncpu v=2 2",
            b"cpu v=\"unterminated 1",
            b"cpu v=\"unterminated\ncpu v=2 2",
            b"cpu v=\"",
            b"cpu v=\"\"\" 1",
            b"cpu v=\"a\"b 1",
            b"cpu v=\"a\" b 1",
            b"cpu v=a\"b\" 1",
            b"cpu v=\"a\"\"b\" 1",
            b"cpu v=\"a\",w=\"b\" 1",
            b"cpu v=\"a\" \"b\"",
            b"cpu v=1 \"1\"",
            b"cpu v=\"\t\" 1",
            b"cpu v=\"<&>\" 1",
            b"cpu v=\"\xff\xfe\" 1",
            b"cpu v=\"\x00\" 1",
            b"cpu v=\"\xe2\x80\xa8\" 1",
            b"cpu v=\"# not a comment\" 1",
            b"cpu v=1,w=\"x\ny\",z=2 1\ncpu v=3 2",
            b"cpu v=\"x\ny\" 1\ncpu v= 2",
            b"cpu v=\"a=b,c=d\",w=1 1",
            b"cpu v=\"\\\\\" 1",
            b"cpu v=\"\\\"\" 1",
            b"cpu v=\"a\\\nb\" 1",
            b"cpu,t=\"x v=\"y\" 1",
            b"cpu,t=a\" v=\"y\ncpu v=1 2",
            b"cpu a\"b=1\ncpu v=2 2",
            b"cpu v=1,w\"x=2\ncpu v=2 2",
        ],
    );
    // Comments, blank and whitespace-only lines, leading and trailing whitespace.
    c.each(
        "hand",
        "",
        &[
            b"# comment",
            b"#",
            b"  # indented comment",
            b"\t# tab-indented comment",
            b"#cpu v=1 1",
            b"# c\ncpu v=1 1",
            b"cpu v=1 1\n# c\ncpu v=2 2",
            b"cpu v=1 1\n  # c\ncpu v=2 2",
            b"# comment with \"quote\ncpu v=1 1",
            b"# comment with \\\ncpu v=1 1",
            b"#\xff\ncpu v=1 1",
            b"\n",
            b"\n\n",
            b"   ",
            b" \n ",
            b"\t",
            b"\t\n\t",
            b"\r",
            b"\r\n",
            b"\n\ncpu v=1 1\n\n\ncpu v=2 2\n\n",
            b" cpu v=1 1",
            b"\tcpu v=1 1",
            b"  cpu v=1 1",
            b" \tcpu v=1 1",
            b"\t cpu v=1 1",
            b"cpu v=1 1 ",
            b"cpu v=1 1  ",
            b"cpu v=1 1\t",
            b"cpu v=1 ",
            b"cpu v=1  ",
            b"cpu v=1\t",
            b"cpu v=1 \n",
            b"cpu v=1 1 \ncpu v=2 2 ",
            b"cpu\tv=1 1",
            b"cpu v=1\t1",
            b"cpu,t=a\tv=1 1",
            b"cpu\t,v=1 1",
            b"cpu  v=1 1",
            b"cpu v=1  1",
            b"cpu,t=a  v=1 1",
            b"cpu v=1 1\r",
            b"cpu v=1\r",
            b"cpu v=1\r\n",
            b"cpu v=1\r\ncpu v=2\r\n",
            b"cpu v=\"a\r\" 1\r\n",
            b"\rcpu v=1 1",
            b"cpu\r v=1 1",
        ],
    );
    // Booleans.
    for b in [
        "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE", "tRUE", "tru",
        "truee", "fALSE", "fals", "falsee", "FAlse", "TRue", "t1", "true1", "tt", "ff", "yes",
        "on", "1b",
    ] {
        c.add("hand", "", format!("cpu v={b} 1"));
        c.add("hand", "", format!("cpu w=1,v={b},x=2 1"));
    }
    // Numbers.
    let long_int = format!("1{}", "0".repeat(400));
    let long_frac = format!("0.{}1", "0".repeat(400));
    let numbers: Vec<String> = [
        "1",
        "-1",
        "0",
        "-0",
        "+1",
        "01",
        "00.1",
        "1.5",
        ".5",
        "1.",
        "-.",
        ".",
        "-",
        "1e5",
        "1E5",
        "1E-5",
        "1e+5",
        "1e",
        "1e+",
        "1e-",
        "-1e-3",
        "1.1.1",
        "1..1",
        "1.e5",
        ".e5",
        "e5",
        "-e5",
        "1e5.5",
        "1ee5",
        "1e5e5",
        "--1",
        "-+1",
        "1-",
        "1+1",
        "1i",
        "-1i",
        "+1i",
        "0i",
        "-0i",
        "01i",
        "1i1",
        "i",
        "-i",
        "1ii",
        "1I",
        "9223372036854775807i",
        "9223372036854775808i",
        "-9223372036854775808i",
        "-9223372036854775809i",
        "99999999999999999999i",
        "1u",
        "0u",
        "-1u",
        "1.5i",
        "1e5i",
        "9i10",
        "NaN",
        "nan",
        "Inf",
        "-Inf",
        "+Inf",
        "inf",
        "-inf",
        "Infinity",
        "infinity",
        "1_000",
        "1,000",
        "0x10",
        "0b1",
        "0o7",
        "1e308",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "1e309",
        "1e400",
        "-1e400",
        "1e-400",
        "4.9e-324",
        "2e-324",
        "1.00000000000000000000000001",
        "1234567890123456789012345",
        "12345678901234567890123456",
        "123456789012345678901234567890.5",
        "-1234567890123456789012345.5",
        "0.1234567890123456789012345",
        "1.234567890123456789012345e300",
        "1.234567890123456789012345e400",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([
        long_int,
        long_frac,
        format!("1{}", "0".repeat(308)),
        format!("1{}", "0".repeat(309)),
    ])
    .collect();
    for n in &numbers {
        c.add("hand", "", format!("cpu v={n} 1"));
    }
    for n in ["1", "1i", "1.5", "1e", "1i1", "NaN"] {
        c.add("hand", "", format!("cpu v={n}"));
        c.add("hand", "", format!("cpu v={n},w=1 1"));
    }
    // Tags: duplicates, order, empty keys and values.
    c.each(
        "hand",
        "",
        &[
            b"cpu,a=1,a=2 v=1 1",
            b"cpu,a=1,a=1 v=1 1",
            b"cpu,a=1,b=2,a=3 v=1 1",
            b"cpu,b=1,a=2,b=3 v=1 1",
            b"cpu,b=1,a=2 v=1 1",
            b"cpu,c=1,b=2,a=3 v=1 1",
            b"cpu,b=1,a=2,a=3 v=1 1",
            b"cpu,a=1,A=2 v=1 1",
            b"cpu,a\\ =1,a=2 v=1 1",
            b"cpu,t= v=1 1",
            b"cpu,=a v=1 1",
            b"cpu,= v=1 1",
            b"cpu,t=a, v=1 1",
            b"cpu,,t=a v=1 1",
            b"cpu,t v=1 1",
            b"cpu,t=a,u v=1 1",
            b"cpu,t=a,u= v=1 1",
            b"cpu, v=1 1",
            b"cpu,t=a,=b v=1 1",
            b"cpu,t=a\\, v=1 1",
            b"cpu,a=1,a=2 v= 1",
            b"cpu v=1,v=2 1",
            b"cpu v=1,v=\"a\" 1",
            b"cpu v=1i,w=2,v=3 1",
            b"cpu v=1,w=2,v=1 1",
        ],
    );
    // Missing parts.
    c.each(
        "hand",
        "",
        &[
            b"cpu",
            b"cpu ",
            b"cpu,",
            b"cpu,t=1",
            b"cpu,t=1 ",
            b"cpu v=",
            b"cpu v= ",
            b"cpu =1",
            b"cpu v=1,",
            b"cpu v=1, 1",
            b"cpu v=1,,w=2",
            b"cpu ,v=1",
            b",t=a v=1",
            b",t=a v=1 1",
            b" v=1",
            b"v=1",
            b"=1",
            b"=",
            b",",
            b" ",
            b"cpu v",
            b"cpu v 1",
            b"cpu v=1,w",
            b"cpu v=1,w=",
            b"cpu =",
            b"cpu ==1",
            b"cpu v==1",
            b"cpu v=1=2",
            b"cpu v=1 1 1",
            b"cpu,t=a",
            b"cpu,t=a v",
            b"cpu 1",
            b"cpu  ",
            b" cpu",
        ],
    );
    // Timestamps with every precision spelling.
    let precisions = ["", "n", "ns", "u", "us", "ms", "s", "m", "h", "xx"];
    let common: &[&str] = &[
        "",
        "0",
        "1",
        "-1",
        "-0",
        "1700000000",
        "9223372036854775806",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775806",
        "-9223372036854775807",
        "-9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999",
        "-",
        "+1",
        "1a",
        "a",
        "1.5",
        "1e9",
        "01",
        "0x10",
        "1 2",
        "1_0",
    ];
    for p in precisions {
        for ts in common {
            let sep = if ts.is_empty() { "" } else { " " };
            c.add("hand", p, format!("cpu v=1{sep}{ts}"));
        }
    }
    // Each unit's range limits: max/unit, one past it, and the negative side.
    for (p, max) in [
        ("u", 9_223_372_036_854_775_i64),
        ("ms", 9_223_372_036_854),
        ("s", 9_223_372_036),
        ("m", 153_722_867),
        ("h", 2_562_047),
    ] {
        for ts in [max - 1, max, max + 1, -(max - 1), -max, -max - 1] {
            c.add("hand", p, format!("cpu v=1 {ts}"));
        }
        c.add("hand", p, format!("cpu v=1 {}0", max));
        c.add(
            "hand",
            p,
            format!("cpu v=1 1\ncpu v=2 {}\ncpu v=3 3", max + 1),
        );
    }
    // `time` as a tag key or a field key.
    c.each(
        "hand",
        "",
        &[
            b"cpu time=1 1",
            b"cpu time=1",
            b"cpu time=1,v=2 1",
            b"cpu v=2,time=1 1",
            b"cpu time=1,time=2 1",
            b"cpu time=\"x\" 1",
            b"cpu time=t 1",
            b"cpu time=1i 1",
            b"cpu,time=a v=1 1",
            b"cpu,time=a v=1",
            b"cpu,time=a time=1 1",
            b"cpu,a=b,time=c v=1 1",
            b"cpu,time=a,z=b v=1 1",
            b"cpu,time= v=1 1",
            b"cpu Time=1 1",
            b"cpu TIME=1 1",
            b"cpu,Time=1 v=1 1",
            b"cpu,tag=time v=1 1",
            b"cpu v=\"time\" 1",
            b"time v=1 1",
            b"time time=1 1",
            b"cpu time\\ =1 1",
            b"cpu ti\\me=1 1",
            b"cpu \\time=1 1",
            b"cpu,ti\\me=1 v=1 1",
            b"cpu,time\\ =1 v=1 1",
            b"c\\ pu time=1 1",
            b"c\\,pu,time=x v=1 1",
            b"c\\=pu time=1 1",
            b"c\"pu time=1 1",
            b"c<p>&u time=1 1",
            b"c\\\\pu,time=1 v=1 1",
            b"c\xffpu time=1 1",
            b"c\\ p\\,u\\=x,time=1 v=1 1",
            b"cpu time=1 1\ncpu v=1 2\ncpu,time=1 v=1 3",
            b"cpu time=1 1\ncpu time=2 2\ncpu v=3 3",
            b"cpu,time=1 v=1 1\ncpu time=1 2",
            b"mem time=1 1\ncpu time=1 2",
            b"cpu time=1 1\ncpu v= 2",
            b"cpu v= 1\ncpu time=1 2\ncpu time=2 3",
            b"cpu v= 1\ncpu,time=1 v=1 2\nmem v=x 3\ncpu v=4 4",
            b"cpu time=1 1\ncpu v=1,time=2 2",
            b"cpu time=1\ncpu v=2",
        ],
    );
    // Long keys around the 65535-byte series key limit, many tags and fields.
    for n in [65_530, 65_535, 65_536, 70_000] {
        c.add("hand", "", format!("{} v=1 1", "m".repeat(n)));
    }
    for n in [65_520, 65_531, 65_532, 65_533, 70_000] {
        c.add("hand", "", format!("cpu,t={} v=1 1", "x".repeat(n)));
    }
    c.add("hand", "", format!("cpu,t={} v=1 1", "\\ ".repeat(33_000)));
    c.add("hand", "", format!("cpu {}=1 1", "f".repeat(70_000)));
    c.add("hand", "", format!("cpu v=\"{}\" 1", "s".repeat(70_000)));
    c.add("hand", "", format!("{} v= 1", "m".repeat(70_000)));
    c.add("hand", "", format!("{} time=1 1", "m".repeat(70_000)));
    c.add("hand", "", format!("{},time=1 v=1 1", "m".repeat(70_000)));
    c.add(
        "hand",
        "",
        format!("{} v=1 1\ncpu v=1 2", "m".repeat(70_000)),
    );
    let tags = |n: usize, rev: bool| {
        let mut v: Vec<String> = (0..n).map(|i| format!("t{i:03}=v{i}")).collect();
        if rev {
            v.reverse();
        }
        v.join(",")
    };
    // influxd 1.6.7 panics in scanTags (index out of range) on exactly 100 * 2^k tags: those
    // cases are listed as "influxd panicked", the neighbours must agree.
    for (n, rev) in [
        (99, false),
        (100, false),
        (100, true),
        (101, false),
        (200, false),
        (250, true),
        (300, false),
        (400, false),
    ] {
        c.add("hand", "", format!("cpu,{} v=1 1", tags(n, rev)));
    }
    c.add(
        "hand",
        "",
        format!("cpu,{},t050=dup v=1 1", tags(100, true)),
    );
    c.add("hand", "", format!("cpu,{},t=a\\,b v=1 1", tags(99, false)));
    c.add(
        "hand",
        "",
        format!("cpu v=1 1\ncpu,{} v=1 2\ncpu v= 3", tags(100, false)),
    );
    let fields: Vec<String> = (0..200).map(|i| format!("f{i}={i}i")).collect();
    c.add("hand", "", format!("cpu {} 1", fields.join(",")));
    // Non-UTF-8, HTML characters, control characters and NUL bytes (the JSON escaping).
    c.each(
        "hand",
        "",
        &[
            b"cpu v=<",
            b"cpu v=> 1",
            b"cpu v=& 1",
            b"cpu v=\xff 1",
            b"c\xffpu v= 1",
            b"c\xe2\x82pu v= 1",
            b"c\xc0\xafpu v= 1",
            b"c\xed\xa0\x80pu v= 1",
            b"c\xf4\x90\x80\x80pu v= 1",
            b"cpu v= \xe2\x80\xa8\xe2\x80\xa9",
            b"cpu v=1\x00 1",
            b"cpu\x00 v=1 1",
            b"\x00",
            b"\x00\n",
            b"cpu v= \x01\x02\x08\x0c\x1b\x1f\x7f",
            b"cpu v=1 1\x00",
            b"cpu,t=\x00 v=1 1",
            b"cpu \x00=1 1",
            b"cpu v=\"\x00\n\" 1",
            b"c\xc3\xa9 v=\"\xc3\xa9\" 1",
            b"\xef\xbb\xbfcpu v=1 1",
        ],
    );
    // A string field value that is a lone quote (after a stray quote in a field key) makes
    // influxd 1.6.7 panic in `StringValue` while writing the shard: the process dies.
    c.each(
        "hand",
        "",
        &[
            b"cpu a\"-,z=\"\\==\",t=\"",
            b"cpu a\"-,z=\"\\==\",t=\" 1",
            b"cpu a\"-,z=\"\\==\",t=\"\ncpu v=1 1",
        ],
    );
    // A backslash as the last byte of a line without a timestamp: stamping must not turn it into
    // an escape of the separator before the stamp.
    for p in ["", "u", "s"] {
        c.each(
            "hand",
            p,
            &[
                b"b b=\"x\"\\",
                b"b b=\"x\"\\\n",
                b"b b=\"x\"\\\\",
                b"b b=\"\\\nx\"\\",
                b"b b=\"\\\ntrue<time\"\\",
                b"b b=1\\",
                b"b b=1i\\",
                b"b b=t\\",
                b"b b=\"x\" \\",
                b"b,t=a\\ b=1",
                b"b b=\"x\"\\\nb c=1",
            ],
        );
    }
    // Found by the generator (shrunk with ORACLE_MINIMIZE): influxd's parser accepts these,
    // then its storage engine cannot convert a field value and the write fails with 500
    // "engine: unable to parse ... value"; the lone-quote ones crash the process.
    for p in ["", "h"] {
        c.each(
            "hand",
            p,
            &[
                b"- i=\"\"\\,\"=c\"",
                b"0 \\\\=\"\"\"=.\"",
                b"_ m=1,\\\\=\"=x\"",
                b"\\  \\\\=\"=T\"",
                b"u ,e=\"=\",= \"",
                b"u ,e=\"=\",=\"",
                b"v ,z=\"=\",=\"",
                b"- i=\"\"\\,\"=c\" 1",
                b"a \\\\=\"=t\"",
                b"0 \\\\=\"=.\"",
                b"9 \\\\=\"=\\\\\"",
                b"a \\\\=\"=t\" 1",
                b"a \\\\=\"=1.5\"",
                b"a \\\\=\"=1i\"",
                b"t,time=k \\\\=\"=\"",
                b"a c=\"\"\\\n\n\"",
            ],
        );
    }
    c.each(
        "hand",
        "",
        &[b"b b=\"\"\\", b"b b=\"\"\\ 1", b"b b=\"\" \\"],
    );
    // The original generated bodies of that kind.
    c.add(
        "hand",
        "h",
        b"9-  #a=455,time=\"\n\"i.\",ak=\"uE\\,F\"\t\n_,cpu=c#,v=,9 t=\"-\\\"\n9,t=z,.z_0=time \n&=\"\rt\xc3\xa9\"",
    );
    c.add(
        "hand",
        "",
        b" _1k,0b9=c,_b=cpu,w=\r0 \\\\=\"#x,c=\"<\\,cpu#\",fkz-845.I 401\n\na \r9=.E1,9=\"b.F\ntrue,k9\\ =bkaz\xc3\xa9=t,z=NaN 79\nhost,9_v=\"z c\xc3\xa9_52,v=cpu_ 821",
    );
    c.add(
        "hand",
        "n",
        b"t,v=zctime. F=\"\" 173\ncpu,ca+a=x y _a=\",E\ttrue\" 948\nbz_ mem=471,+\\\\=\"=\nx\"",
    );
    c.add(
        "hand",
        "ns",
        b"9true\\\",zz=host,time=v truetime\\=\\\",a=\\ -827\nw,e0timee=v,a=\\=_x 9=9,t.92,cpu=\"9\"\nw,_\\=mem,kazkv,host=hosthost=96,ak\\\n9=\"0\\=\"\",a_=\"\"\nba,w=\\  b\\\\=\" =bT\"",
    );
    c.add(
        "hand",
        "h",
        b".ab,u=mem,c=k0ccpu k\\=\"_9cpu\",time=\"Fe\\\\\",a=\"utime=\" 9223372036854775807\nhost,aEc=x y a=\"f\nb\",a\n\\=_=\xc3\xa9,_=3.52E64\na v=6 871",
    );
    // Several lines: good and bad mixed (partial writes), several errors joined.
    c.each(
        "hand",
        "",
        &[
            b"a v= 1\nb v= 2",
            b"a v= 1\nb v= 2\nc v= 3",
            b"a v=1 1\nb v= 2\nc v=3 3\nd v=x 4",
            b"a v= 1\nb v=1 2",
            b"a v=1 1\nb v= 2",
            b"a v=1 1\nb v=2 2\n\nc v= 3\n",
            b"a v= 1\n\nb v=<& 2\n",
            b"a v=1\nb v=\nc v=3",
            b"a v=1 1\nb v=1 9223372036854775807\nc v=1 3",
            b"a\nb\nc",
            b"a v=1 1\nb\nc v=\"x\ny\" 3\nd v=1i 4\ne v=1u 5",
            b"cpu v=1 1\ncpu v=1 1\ncpu v=2 1",
            b"cpu v=1 1\ncpu w=2 1",
            b"cpu v=1\ncpu v=2\ncpu v=3",
            b"cpu,t=a v=1\ncpu,t=b v=2 5\nmem v=3",
            b"cpu v=1i 1\ncpu v=2 2",
            b"cpu v=\"a\" 1\nmem v=\"a\" 2\ncpu w=1 3",
        ],
    );
    let many_good: String = (0..1000)
        .map(|i| format!("cpu,h=h{} v={i} {i}\n", i % 7))
        .collect();
    c.add("hand", "", format!("{many_good}cpu v= 1\n"));
    c.add("hand", "s", format!("cpu v= 1\n{many_good}"));
    let many_bad: String = (0..60).map(|i| format!("cpu,i={i} v=\n")).collect();
    c.add("hand", "", &many_bad);
    c.add("hand", "", format!("{many_bad}cpu v=1 1\n"));
    // Stamping with every precision (no timestamp).
    for p in precisions {
        c.add("hand", p, "cpu v=1");
        c.add("hand", p, "cpu,t=a v=1,w=\"x\"\ncpu,t=a v=2 1\ncpu,t=a v=3");
        c.add("hand", p, "cpu v= \ncpu v=2");
        c.add("hand", p, "cpu time=1\ncpu v=1");
    }
}

// === generated cases ===

/// SplitMix64: small, deterministic, good enough to explore.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).expect("usize fits u64")).expect("below n")
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Fragments biased toward what the parser treats specially.
const FRAGMENTS: &[&str] = &[
    "\\", "\\ ", "\\,", "\\=", "\\\"", "\\\\", "\\\n", ",", "=", "\"", "\n", " ", "\t", "#", "-",
    ".", "e", "i", "t", "f", "0", "1", "9", "a", "b", "x", "time", "true", "T", "F", "\r", "<",
    "&", "\u{e9}", "\\n", "u", "E", "+", "_", "cpu", "v",
];

/// Fragments for keys (measurement, tag and field keys, tag values).
fn gen_key(r: &mut Rng) -> String {
    if r.chance(40) {
        return (*r.pick(&["cpu", "mem", "v", "w", "t", "a", "time", "host", "x y"])).to_owned();
    }
    let n = 1 + r.below(4);
    let mut s = String::new();
    for _ in 0..n {
        if r.chance(55) {
            s.push_str(r.pick(&["a", "b", "c", "k", "z", "9", "_"]));
        } else {
            s.push_str(r.pick(FRAGMENTS));
        }
    }
    s
}

fn gen_number(r: &mut Rng) -> String {
    let mut s = String::new();
    if r.chance(20) {
        s.push('-');
    }
    let digits = r.below(4);
    for _ in 0..digits {
        s.push(char::from(b'0' + u8::try_from(r.below(10)).expect("digit")));
    }
    if r.chance(25) {
        s.push('.');
        for _ in 0..r.below(3) {
            s.push(char::from(b'0' + u8::try_from(r.below(10)).expect("digit")));
        }
    }
    if r.chance(15) {
        s.push_str(r.pick(&["e", "E", "e-", "e+", "E5"]));
        for _ in 0..r.below(3) {
            s.push(char::from(b'0' + u8::try_from(r.below(10)).expect("digit")));
        }
    }
    if r.chance(25) {
        s.push_str(r.pick(&["i", "u", "ii", "I"]));
    }
    if r.chance(5) {
        s = (*r.pick(&[
            "9223372036854775807i",
            "9223372036854775808i",
            "-9223372036854775809i",
            "1e400",
            "NaN",
            "Inf",
            "1234567890123456789012345.6",
        ]))
        .to_owned();
    }
    s
}

fn gen_value(r: &mut Rng) -> String {
    match r.below(10) {
        0..=3 => gen_number(r),
        4 => (*r.pick(&[
            "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE", "tRUE", "tru",
            "fa", "truee",
        ]))
        .to_owned(),
        5..=7 => {
            let mut s = String::from("\"");
            for _ in 0..r.below(5) {
                s.push_str(r.pick(FRAGMENTS));
            }
            if r.chance(85) {
                s.push('"');
            }
            s
        }
        _ => {
            let mut s = String::new();
            for _ in 0..1 + r.below(3) {
                s.push_str(r.pick(FRAGMENTS));
            }
            s
        }
    }
}

fn gen_timestamp(r: &mut Rng) -> String {
    match r.below(13) {
        0..=3 => String::new(),
        10 => {
            // Any length up to past i64, to reach the range checks of every precision.
            let mut s = String::from(if r.chance(30) { "-" } else { "" });
            for _ in 0..1 + r.below(20) {
                s.push(char::from(b'0' + u8::try_from(r.below(10)).expect("digit")));
            }
            s
        }
        4..=7 => format!("{}", r.below(1000)),
        8 => format!("-{}", r.below(1000)),
        9 => (*r.pick(&[
            "9223372036854775806",
            "9223372036854775807",
            "-9223372036854775806",
            "-9223372036854775808",
            "9223372036",
            "9223372037",
            "2562048",
            "153722868",
        ]))
        .to_owned(),
        _ => {
            let mut s = String::new();
            for _ in 0..1 + r.below(3) {
                s.push_str(r.pick(FRAGMENTS));
            }
            s
        }
    }
}

/// One line: mostly structured (measurement, tags, fields, timestamp) with tricky parts, and
/// now and then a plain fragment soup or a mutated separator.
fn gen_line(r: &mut Rng) -> String {
    if r.chance(15) {
        let mut s = String::new();
        for _ in 0..1 + r.below(10) {
            s.push_str(r.pick(FRAGMENTS));
        }
        return s;
    }
    let mut s = String::new();
    if r.chance(5) {
        s.push_str(r.pick(&[" ", "\t", "#", "# "]));
    }
    s.push_str(&gen_key(r));
    for _ in 0..r.below(4) {
        s.push(',');
        s.push_str(&gen_key(r));
        if r.chance(92) {
            s.push('=');
        }
        s.push_str(&gen_key(r));
    }
    s.push_str(if r.chance(92) {
        " "
    } else {
        r.pick(&["  ", "\t", ""])
    });
    let nfields = if r.chance(5) { 0 } else { 1 + r.below(3) };
    for i in 0..nfields {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&gen_key(r));
        if r.chance(95) {
            s.push('=');
        }
        s.push_str(&gen_value(r));
    }
    let ts = gen_timestamp(r);
    if !ts.is_empty() {
        s.push_str(if r.chance(92) {
            " "
        } else {
            r.pick(&["  ", "\t", ""])
        });
        s.push_str(&ts);
    }
    if r.chance(5) {
        s.push_str(r.pick(&[" ", "\r", "\t", "\\"]));
    }
    s
}

fn generated_cases(c: &mut Cases, seed: u64, count: usize) {
    let precisions = ["", "", "", "n", "ns", "u", "us", "ms", "s", "m", "h", "xx"];
    let mut r = Rng(seed);
    for _ in 0..count {
        let lines = 1 + r.below(5);
        let mut body = String::new();
        for i in 0..lines {
            if i > 0 {
                body.push_str(if r.chance(90) {
                    "\n"
                } else {
                    r.pick(&["\n\n", "\r\n", "\n \n"])
                });
            }
            body.push_str(&gen_line(&mut r));
        }
        if r.chance(30) {
            body.push('\n');
        }
        let p = r.pick(&precisions);
        c.add("gen", p, body);
    }
}

// === running ===

/// What lineproto says about a case.
struct Verdict {
    /// `None` when `validate` panicked (the text of the panic is in `status_body`).
    output: Option<Vec<u8>>,
    /// The answer influxd should give: status and exact body.
    status: u16,
    body: Vec<u8>,
    /// Human-readable form of `influx_error()`.
    describe: String,
    /// A line was refused because it could not be stamped (a deliberate difference).
    unstampable: bool,
}

fn verdict(case: &Case) -> Verdict {
    let precision = Precision::from_v1_param(&case.precision);
    let run = catch_unwind(AssertUnwindSafe(|| {
        let v = validate(&case.body, precision, NOW);
        // `influx_error` holds the line bytes as InfluxDB quotes them (maybe not UTF-8).
        let error: Option<Vec<u8>> = v.influx_error().map(|m| AsRef::<[u8]>::as_ref(&m).to_vec());
        let unstampable = v.rejected().iter().any(|r| {
            matches!(
                r.reason(),
                lineproto::Reason::Parse(lineproto::ParseError::Unstampable)
            )
        });
        (error, v.output().to_vec(), unstampable)
    }));
    match run {
        Ok((None, output, unstampable)) => Verdict {
            output: Some(output),
            status: 204,
            body: Vec::new(),
            describe: "None".to_owned(),
            unstampable,
        },
        Ok((Some(msg), output, unstampable)) => Verdict {
            output: Some(output),
            status: 400,
            body: format!("{{\"error\":{}}}\n", go_json_bytes(&msg)).into_bytes(),
            describe: format!("Some({})", show(&msg, 600)),
            unstampable,
        },
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Verdict {
                output: None,
                status: 0,
                body: format!("lineproto::validate panicked: {text}").into_bytes(),
                describe: "panic".to_owned(),
                unstampable: false,
            }
        }
    }
}

/// What one server did with one case.
#[derive(Clone, PartialEq, Eq)]
struct Outcome {
    /// Status of the write (0: connection-level failure, with the error in `body`).
    status: u16,
    body: Vec<u8>,
    /// Stored data, normalised (stamped times replaced).
    data: String,
}

fn now_nanos() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_nanos()).expect("nanos fit i64")
}

/// Creates database `db`, writes `body`, reads back the data, drops `db`. Stored times inside
/// `stamped` (inclusive) are replaced by `STAMP`. When influxd dies on the case, the outcome
/// says so (status 0) and the server is restarted for the next case.
fn run_one(
    server: &mut Influxd,
    db: &str,
    precision: &str,
    body: Option<&[u8]>,
    stamped: impl Fn(i64, i64) -> (i64, i64),
) -> Outcome {
    match try_run_one(server, db, precision, body, stamped) {
        Ok(o) => o,
        Err(e) => {
            // Let a dying process finish (and write its panic) before reading the log.
            let deadline = Instant::now() + Duration::from_secs(3);
            while server.is_running() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let running = server.is_running();
            let log = server.log();
            let crash = log
                .lines()
                .rev()
                .find(|l| l.starts_with("panic: ") || l.starts_with("fatal error: "))
                .unwrap_or("(no panic in the log)")
                .to_owned();
            server.restart();
            Outcome {
                status: 0,
                body: format!("{e}; influxd running afterwards: {running}; log: {crash}")
                    .into_bytes(),
                data: String::new(),
            }
        }
    }
}

fn try_run_one(
    server: &Influxd,
    db: &str,
    precision: &str,
    body: Option<&[u8]>,
    stamped: impl Fn(i64, i64) -> (i64, i64),
) -> Result<Outcome, String> {
    let statement = |q: String| -> Result<(), String> {
        let r = server
            .query_params(&[("q", &q)])
            .map_err(|e| format!("{q}: {e}"))?;
        if r.status == 200 && !r.text().contains("\"error\"") {
            Ok(())
        } else {
            Err(format!("{q}: {} {}", r.status, r.text()))
        }
    };
    statement(format!("CREATE DATABASE \"{db}\""))?;
    let t0 = now_nanos();
    let (status, resp_body) = match body {
        None => (204, Vec::new()),
        Some(b) => match server.write_raw(db, precision, b) {
            Ok(Response { status, body, .. }) => (status, body),
            Err(e) => return Err(format!("write: {e}")),
        },
    };
    let t1 = now_nanos();
    // influxd writes each shard in its own goroutine and answers as soon as one fails, while
    // the others may still be writing: after a storage-layer error (not a parse error) in a
    // body spanning several shards, give them a moment before reading the data back.
    let text = String::from_utf8_lossy(&resp_body);
    if status == 400
        && !text.starts_with("{\"error\":\"unable to parse")
        && !text.starts_with("{\"error\":\"partial write: unable to parse")
    {
        let shards = server
            .query_params(&[("q", "SHOW SHARDS")])
            .map_err(|e| format!("SHOW SHARDS: {e}"))?
            .text()
            .matches(&format!(",\"{db}\",\"autogen\","))
            .count();
        if shards > 1 {
            thread::sleep(Duration::from_millis(50));
        }
    }
    let data = server
        .query_params(&[("db", db), ("q", DATA_QUERY), ("epoch", "ns")])
        .map_err(|e| format!("data query: {e}"))?;
    statement(format!("DROP DATABASE \"{db}\""))?;
    let (lo, hi) = stamped(t0, t1);
    Ok(Outcome {
        status,
        body: resp_body,
        data: normalise(&data.text(), lo, hi),
    })
}

/// Replaces the `time` column of every series whose value is in `lo..=hi` with `"STAMP"`.
fn normalise(json: &str, lo: i64, hi: i64) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_owned();
    };
    if let Some(results) = v.get_mut("results").and_then(|r| r.as_array_mut()) {
        for result in results {
            let Some(series) = result.get_mut("series").and_then(|s| s.as_array_mut()) else {
                continue;
            };
            for s in series.iter_mut() {
                // `GROUP BY *` over several measurements lists the union of their tag keys,
                // with "" where a series lacks one; a tag cannot be stored with an empty value,
                // so "" means absent. Dropping those keeps a series that holds no points (see
                // `phantom_series_only`) from changing the rows of other measurements.
                let emptied = s
                    .get_mut("tags")
                    .and_then(|t| t.as_object_mut())
                    .map(|tags| {
                        tags.retain(|_, v| v != "");
                        tags.is_empty()
                    });
                if emptied == Some(true) {
                    s.as_object_mut().map(|obj| obj.remove("tags"));
                }
                let time_first = s
                    .get("columns")
                    .and_then(|c| c.get(0))
                    .is_some_and(|c| c == "time");
                if !time_first {
                    continue;
                }
                let Some(rows) = s.get_mut("values").and_then(|v| v.as_array_mut()) else {
                    continue;
                };
                for row in rows {
                    let Some(t) = row.get_mut(0) else { continue };
                    if t.as_i64().is_some_and(|t| (lo..=hi).contains(&t)) {
                        *t = serde_json::Value::from("STAMP");
                    }
                }
            }
            // Without the empty tags the order of the series may change: sort them.
            series.sort_by_cached_key(|s| (s["name"].to_string(), s["tags"].to_string()));
        }
    }
    v.to_string()
}

/// Whether `a` and `b` differ only in `SHOW SERIES` (statement 0), `a` listing series that `b`
/// lacks: influxd 1.6.7 adds a point's series to the index before it drops the point for having
/// `time` as its only field, so such a series exists with no data in it. The points and field
/// keys (statements 1 and 2) must still be identical.
fn phantom_series_only(a: &str, b: &str) -> bool {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    let (Some(a), Some(b)) = (parse(a), parse(b)) else {
        return false;
    };
    let stmt = |v: &serde_json::Value, i: usize| v["results"][i].clone();
    let keys = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        stmt(v, 0)["series"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let (ka, kb) = (keys(&a), keys(&b));
    stmt(&a, 1) == stmt(&b, 1)
        && stmt(&a, 2) == stmt(&b, 2)
        && ka.len() > kb.len()
        && kb.iter().all(|k| ka.contains(k))
}

/// Times influxd may have given points without a timestamp: its clock during the write,
/// truncated to at most an hour (the coarsest precision).
fn server_stamp_window(t0: i64, t1: i64) -> (i64, i64) {
    (t0 - 3_600_000_000_000, t1 + 1_000_000_000)
}

/// The time lineproto gave points without a timestamp.
fn lineproto_stamp(precision: &str) -> (i64, i64) {
    let p = Precision::from_v1_param(precision);
    // Nanoseconds per unit, spelled out here rather than taken from the crate under test.
    let unit = match p.v1_param() {
        "u" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => 1,
    };
    let t = p.stamp(NOW) * unit;
    (t, t)
}

/// How a case that is not a plain agreement is classified.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// lineproto's answer, output or data differ from influxd's: a failure.
    Mismatch = 0,
    /// influxd fails (5xx, crash) on the body and lineproto forwards what makes it fail: a
    /// failure.
    Poison = 1,
    /// influxd answers differently when the case is run again: excluded.
    Nondeterministic = 2,
    /// A field type conflict inside the body (storage layer): excluded.
    Conflict = 3,
    /// influxd fails on the body, lineproto keeps the line out: excluded.
    InfluxdFails = 4,
    /// Only a series left behind by a `time`-field drop differs: excluded.
    Phantom = 5,
    /// lineproto refuses a line without timestamp that ends in a backslash, which influxd
    /// stores with its own clock: a replica cannot be given the same timestamp (the appended
    /// one would be escaped into the field value), so the line is refused on purpose.
    Unstampable = 6,
}

impl Kind {
    fn fails(self) -> bool {
        matches!(self, Kind::Mismatch | Kind::Poison)
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Mismatch => "MISMATCH",
            Kind::Poison => {
                "MISMATCH: POISON: influxd fails (5xx or crash) on the body, and on the output \
                 lineproto forwards"
            }
            Kind::Nondeterministic => "influxd nondeterministic, excluded",
            Kind::Conflict => {
                "field type conflict in the body: storage layer, outside the validator"
            }
            Kind::InfluxdFails => {
                "influxd fails (5xx or crash) on the body; excluded, lineproto keeps it out"
            }
            Kind::Phantom => "influxd keeps the series of a point it dropped for its `time` field",
            Kind::Unstampable => {
                "deliberate: a line without timestamp ending in a backslash cannot be stamped"
            }
        }
    }
}

/// Compares influxd's outcome `oa` for a case with lineproto's verdict `v` and with what B did
/// with lineproto's output (`ob`). `rerun(k)` runs the case on A again. Returns `None` when
/// they agree, else the kind and a readable description.
fn judge(
    case: &Case,
    oa: &Outcome,
    ob: &Outcome,
    v: &Verdict,
    rerun: &mut dyn FnMut(usize) -> Outcome,
) -> (Option<Kind>, String) {
    let answer_ok = oa.status == v.status && oa.body == v.body;
    let output_ok = v.output.is_some() && ob.status == 204 && ob.body.is_empty();
    let data_ok = oa.data == ob.data;
    if answer_ok && output_ok && data_ok {
        return (None, String::new());
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "precision {:?}\n  body: {}",
        case.precision,
        show(&case.body, 600)
    );
    if !answer_ok {
        let _ = writeln!(
            text,
            "  ANSWER differs\n    influxd:   {} {}\n    lineproto: {} {}   (influx_error = {})",
            oa.status,
            show(&oa.body, 600),
            v.status,
            show(&v.body, 600),
            v.describe
        );
    }
    if !output_ok {
        let _ = writeln!(
            text,
            "  OUTPUT refused by influxd B: {} {}\n    output: {}",
            ob.status,
            show(&ob.body, 600),
            show(v.output.as_deref().unwrap_or_default(), 600)
        );
    }
    if !data_ok {
        let _ = writeln!(
            text,
            "  DATA differs: {}\n    output: {}",
            diff(&oa.data, &ob.data),
            show(v.output.as_deref().unwrap_or_default(), 600)
        );
    }

    // influxd failing on the body with a 5xx or by dying: its handler panicking
    // (recovered: 500 "Internal Server Error" text/plain), the process crashing (a panic in
    // a shard-writing goroutine), or the storage engine refusing a value its own parser
    // accepted (500 "engine: unable to parse ... value"). 1.6.7 bugs with no answer a relay
    // can copy, so the case is excluded from the answer comparison. But lineproto must not
    // forward such a line: B then fails on `output()` too, which means a batch every backend
    // refuses with 5xx (retried forever) or that kills it. That fails.
    let broke = |o: &Outcome| o.status == 0 || o.status >= 500;
    if broke(oa) {
        let kind = if output_ok {
            Kind::InfluxdFails
        } else {
            Kind::Poison
        };
        return (Some(kind), text);
    }
    if v.unstampable && output_ok {
        return (Some(Kind::Unstampable), text);
    }
    // `time`-key drops in several shard groups: influxd writes the shards concurrently and
    // reports the reason and count of whichever failed first; lineproto reports the first
    // drop in body order and the total. Both store the same points, except that influxd may
    // also keep the series of a point it dropped for its `time` field (see `Kind::Phantom`).
    let drop_report = |b: &[u8]| {
        let t = String::from_utf8_lossy(b);
        t.starts_with("{\"error\":\"partial write: invalid tag key")
            || t.starts_with("{\"error\":\"partial write: invalid field name")
    };
    // The series kept only matters here when the answers differ: with the same answer, the
    // case is `Kind::Phantom` below.
    let same_points = data_ok || (!answer_ok && phantom_series_only(&oa.data, &ob.data));
    if output_ok && same_points && drop_report(&oa.body) && drop_report(&v.body) {
        return (Some(Kind::Nondeterministic), text);
    }
    // Is influxd itself stable on this case?
    if (0..RERUNS).any(|k| rerun(k) != *oa) {
        return (Some(Kind::Nondeterministic), text);
    }
    let conflict = |o: &Outcome| String::from_utf8_lossy(&o.body).contains("field type conflict");
    let kind = if answer_ok && output_ok && phantom_series_only(&oa.data, &ob.data) {
        Kind::Phantom
    } else if conflict(oa) && (conflict(ob) || ob.status == 204) {
        // influxd refuses a shard's whole batch ("field type conflict") when one body gives a
        // new field two types: storage, outside the validator's contract. (The data may differ
        // too: the other shards of the body are stored, or not yet when influxd answers.)
        Kind::Conflict
    } else {
        Kind::Mismatch
    };
    (Some(kind), text)
}

/// Database names for minimizing, unique over the whole run.
static MINIMIZE_DB: AtomicUsize = AtomicUsize::new(0);

/// What identifies how influxd answered: the status and the start of the error (up to the
/// first quoted detail), or for a crash the panic message.
fn signature(o: &Outcome) -> (u16, String) {
    let text = String::from_utf8_lossy(&o.body);
    let key = match text.split_once("log: ") {
        Some((_, panic)) if o.status == 0 => panic.to_owned(),
        _ => text.split("\\\"").next().unwrap_or_default().to_owned(),
    };
    (o.status, key)
}

/// Shrinks a failing case's body (dropping ever smaller chunks) while it keeps failing the same
/// way: a small reproduction for the report. Only with `ORACLE_MINIMIZE` set.
fn minimized(
    a: &mut Influxd,
    b: &mut Influxd,
    case: &Case,
    kind: Kind,
    first_a: &Outcome,
) -> Vec<u8> {
    // Keep the way influxd fails, not only the kind (a 500 from the engine must not turn into
    // a crash while shrinking).
    let wanted = signature(first_a);
    let mut fails = |body: &[u8]| {
        let n = MINIMIZE_DB.fetch_add(1, Ordering::Relaxed);
        let c = Case {
            origin: case.origin,
            precision: case.precision.clone(),
            body: body.to_vec(),
        };
        let v = verdict(&c);
        let oa = run_one(
            a,
            &format!("m{n}"),
            &c.precision,
            Some(&c.body),
            server_stamp_window,
        );
        let p = Precision::from_v1_param(&c.precision).v1_param();
        let out = v.output.as_deref().filter(|o| !o.is_empty());
        let ob = run_one(b, &format!("m{n}"), p, out, |_, _| {
            lineproto_stamp(&c.precision)
        });
        let mut no_rerun = |_: usize| oa.clone();
        judge(&c, &oa, &ob, &v, &mut no_rerun).0 == Some(kind) && signature(&oa) == wanted
    };
    let mut body = case.body.clone();
    let mut chunk = body.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut progress = false;
        while i < body.len() {
            let mut candidate = body.clone();
            candidate.drain(i..(i + chunk).min(body.len()));
            if !candidate.is_empty() && fails(&candidate) {
                body = candidate;
                progress = true;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !progress {
            return body;
        }
        if !progress {
            chunk = chunk.div_ceil(2);
        }
    }
}

/// Bytes shown escaped (printable ASCII as is), cut to `max` characters.
fn show(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
        if s.len() > max {
            let _ = write!(s, "… ({} bytes in all)", bytes.len());
            break;
        }
    }
    format!("\"{s}\"")
}

/// The first difference of two texts with some context.
fn diff(a: &str, b: &str) -> String {
    let at = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = at.saturating_sub(120);
    let cut = |s: &str| {
        show(
            &s.as_bytes()[from.min(s.len())..(at + 300).min(s.len())],
            500,
        )
    };
    format!(
        "first difference at byte {at}:\n      influxd:   {}\n      lineproto: {}",
        cut(a),
        cut(b)
    )
}

#[test]
fn lineproto_agrees_with_influxd() {
    let started = Instant::now();
    let seed = std::env::var("ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1f6_d00d_u64);
    let generated = std::env::var("ORACLE_GENERATED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(GENERATED_DEFAULT);

    let mut cases = Cases(Vec::new());
    reference_cases(&mut cases);
    hand_cases(&mut cases);
    let hand = cases.0.len();
    generated_cases(&mut cases, seed, generated);
    let cases = cases.0;
    let verdicts: Vec<Verdict> = cases.iter().map(verdict).collect();

    let mut a = Influxd::start();
    let mut b = Influxd::start();
    // A and B work through the cases side by side, each on its own server.
    let (outcomes_a, outcomes_b) = thread::scope(|s| {
        let ta = s.spawn(|| {
            cases
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let db = format!("o{i}");
                    run_one(
                        &mut a,
                        &db,
                        &c.precision,
                        Some(&c.body),
                        server_stamp_window,
                    )
                })
                .collect::<Vec<_>>()
        });
        let tb = s.spawn(|| {
            cases
                .iter()
                .zip(&verdicts)
                .enumerate()
                .map(|(i, (c, v))| {
                    let p = Precision::from_v1_param(&c.precision).v1_param();
                    let out = v.output.as_deref().filter(|o| !o.is_empty());
                    let stamp = |_, _| lineproto_stamp(&c.precision);
                    run_one(&mut b, &format!("o{i}"), p, out, stamp)
                })
                .collect::<Vec<_>>()
        });
        (ta.join().expect("worker A"), tb.join().expect("worker B"))
    });

    let mut report = String::new();
    let mut counts = [0usize; 7];
    // ORACLE_MINIMIZE=N shrinks failing bodies of at most N bytes (any value that is not a
    // number: all of them).
    let minimize = std::env::var("ORACLE_MINIMIZE")
        .ok()
        .map(|v| v.parse::<usize>().unwrap_or(usize::MAX));
    for (i, case) in cases.iter().enumerate() {
        let (oa, ob, v) = (&outcomes_a[i], &outcomes_b[i], &verdicts[i]);
        let mut rerun = |k: usize| {
            let db = format!("r{i}_{k}");
            run_one(
                &mut a,
                &db,
                &case.precision,
                Some(&case.body),
                server_stamp_window,
            )
        };
        let (kind, text) = judge(case, oa, ob, v, &mut rerun);
        let Some(kind) = kind else { continue };
        counts[kind as usize] += 1;
        let _ = writeln!(
            report,
            "[{}] case #{i} ({}), {text}",
            kind.label(),
            case.origin
        );
        if kind.fails() && minimize.is_some_and(|max| case.body.len() <= max) {
            let small = minimized(&mut a, &mut b, case, kind, oa);
            let _ = writeln!(report, "  minimized: {}\n", show(&small, 600));
        }
    }
    let [
        failures,
        poison,
        nondeterministic,
        conflicts,
        influxd_breaks,
        phantom,
        unstampable,
    ] = counts;
    let failures = failures + poison;
    let summary = format!(
        "oracle: {} cases ({hand} hand-written incl. REFERENCE.md rows, {generated} generated, seed {seed:#x}) \
         in {:.1?}: {failures} mismatching, {nondeterministic} where influxd varies between runs, \
         {conflicts} with in-body field type conflicts, \
         {influxd_breaks} where influxd fails (5xx, crash) and lineproto keeps the line out, {phantom} with a series left by a `time` drop, \
         {unstampable} refusing on purpose a line without timestamp that ends in a backslash",
        cases.len(),
        started.elapsed()
    );
    println!("{report}\n{summary}");
    if let Ok(path) = std::env::var("ORACLE_REPORT") {
        std::fs::write(&path, format!("{report}\n{summary}\n")).expect("write ORACLE_REPORT");
    }
    assert!(failures == 0, "{summary}\n(details above)");
}
