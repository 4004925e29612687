//! The compatibility oracle for the write path: the same request to a bare influxd and to
//! influx-ha in front of two influxd gets the same status, body and error header.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use testkit::Influxd;

use crate::relay::Relay;
use crate::support::{count, serial};

/// Method, target, extra headers, body.
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Vec<u8>);

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn write_answers_match_influxd() {
    let _serial = serial();
    let bare = Influxd::start();
    let (a, b) = (Influxd::start(), Influxd::start());
    for i in [&bare, &a, &b] {
        i.create_database("db");
    }
    let mut relay = Relay::start(&[&a, &b], "");
    let mut direct = bare.client();

    let ts = "1700000000000000000";
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            b"cpu,host=a usage=".to_vec(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            format!("pa,host=x v=1 {ts}\npb,host=y v= {ts}\npc,host=z v=3 {ts}\n").into_bytes(),
        ),
        ("POST", "/write".into(), vec![], b"cpu v=1".to_vec()),
        (
            "POST",
            "/write?db=nosuchdb".into(),
            vec![],
            b"cpu v=1".to_vec(),
        ),
        (
            "POST",
            "/write?db=db&rp=nosuch".into(),
            vec![],
            b"cpu v=1".to_vec(),
        ),
        (
            "POST",
            "/write?db=db&consistency=bogus".into(),
            vec![],
            b"cpu v=1".to_vec(),
        ),
        // 1.6 checks the level after parsing: a body without a point is refused first, an
        // empty one is not.
        (
            "POST",
            "/write?db=db&consistency=bogus".into(),
            vec![],
            b"garbage".to_vec(),
        ),
        (
            "POST",
            "/write?db=db&consistency=bogus".into(),
            vec![],
            vec![],
        ),
        (
            "POST",
            "/write?db=db&consistency=bogus".into(),
            vec![],
            format!("ok v=1 {ts}\nbad v=\n").into_bytes(),
        ),
        (
            "POST",
            "/write?db=db&consistency=all".into(),
            vec![],
            format!("cc v=1 {ts}").into_bytes(),
        ),
        ("GET", "/write?db=db".into(), vec![], vec![]),
        ("POST", "/write?db=db".into(), vec![], vec![]),
        (
            "POST",
            "/write?db=db".into(),
            vec![("Content-Encoding", "gzip")],
            gzip(format!("gz v=1 {ts}").as_bytes()),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![("Content-Encoding", "gzip")],
            b"not gzip at all".to_vec(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            format!("cpu time=1 {ts}").into_bytes(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            format!("cpu,time=x v=1 {ts}").into_bytes(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            b"cpu v=1 1\r\n".to_vec(),
        ),
        ("POST", "/write?db=db".into(), vec![], b"cpu v=1u".to_vec()),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            b"a v=\nb\n<x> v=&\n".to_vec(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            format!("tc v=1i {ts}").into_bytes(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            format!("tc v=1.5 {ts}\ntc w=1 {ts}").into_bytes(),
        ),
        (
            "POST",
            "/write?db=db&precision=s".into(),
            vec![],
            b"ps v=1 1700000000".to_vec(),
        ),
        (
            "POST",
            "/write?db=db&precision=h".into(),
            vec![],
            b"ph v=1 9999999".to_vec(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            b"cpu v=1 9223372036854775807".to_vec(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            b"cpu v=1 12 x".to_vec(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            b"cpu,t=a,t=b v=1".to_vec(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            b"# only a comment\n\n   \n".to_vec(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            format!("m{} v=1", "k".repeat(65_530)).into_bytes(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            b"cpu v=\"unterminated".to_vec(),
        ),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            format!("s v=\"a\nb\\\"c\" {ts}\nbad\n").into_bytes(),
        ),
        (
            "POST",
            "/write?db=db&rp=autogen".into(),
            vec![],
            format!("rp v=1 {ts}").into_bytes(),
        ),
        (
            "POST",
            "/write?db=db&consistency=ANY".into(),
            vec![],
            format!("ca v=1 {ts}").into_bytes(),
        ),
        ("POST", "/write?db=".into(), vec![], b"cpu v=1".to_vec()),
        (
            "POST",
            "/write?db=db&u=nobody&p=secret".into(),
            vec![],
            format!("up v=1 {ts}").into_bytes(),
        ),
        ("PUT", "/write?db=db".into(), vec![], b"cpu v=1".to_vec()),
        (
            "POST",
            "/write?db=db".into(),
            vec![],
            b"a v=1i,b=2.5,c=t,d=\"s\",e=-3i 1\nb v=1e400 2\nc v=NaN 3\n".to_vec(),
        ),
        ("GET", "/ping".into(), vec![], vec![]),
        ("HEAD", "/ping".into(), vec![], vec![]),
    ];

    let mut mismatches = Vec::new();
    for (method, target, headers, body) in &cases {
        let want = direct
            .request(method, target, headers, body)
            .expect("influxd answers");
        let got = relay.request(method, target, headers, body);
        let (want_err, got_err) = (
            want.header("X-Influxdb-Error"),
            got.header("X-Influxdb-Error"),
        );
        if want.status != got.status || want.body != got.body || want_err != got_err {
            mismatches.push(format!(
                "{method} {target} {:?}\n  influxd:   {} {:?} {want_err:?}\n  influx-ha: {} {:?} {got_err:?}",
                String::from_utf8_lossy(body),
                want.status,
                want.text(),
                got.status,
                got.text(),
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // What was accepted is on both backends.
    for i in [&a, &b] {
        assert_eq!(count(i, "db", "v", "gz"), 1);
        assert_eq!(count(i, "db", "v", "pa"), 1);
    }
}
