//! testkit against a real influxd: start, write, query, signals, restart.

use std::time::Duration;
use testkit::{Influxd, go_json_string};

#[test]
fn start_write_query_kill_restart() {
    let mut db = Influxd::start();
    assert!(db.ping());
    assert!(db.url().ends_with(&format!(":{}", db.port())));
    assert_ne!(db.port(), db.rpc_port());

    db.create_database("t");
    let (status, body) = db.write(
        "t",
        "s",
        "cpu,host=a v=1 1700000000\ncpu,host=b v=2 1700000001\n",
    );
    assert_eq!((status, body.as_str()), (204, ""));

    // An error body is Go's JSON of the message plus a newline.
    let (status, body) = db.write("t", "", "cpu,host=a v=<&>");
    let msg = "unable to parse 'cpu,host=a v=<&>': invalid boolean";
    assert_eq!(status, 400);
    assert_eq!(body, format!("{{\"error\":{}}}\n", go_json_string(msg)));

    let r = db.write_raw("nosuchdb", "", b"cpu v=1").expect("write");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("X-Influxdb-Build"), Some("OSS"));

    let json = db.query("t", "SELECT v FROM cpu");
    assert!(json.contains("[1700000000000000000,1]"), "{json}");

    // SIGSTOP: the server accepts connections but does not answer.
    db.stop();
    let mut c = db.client();
    c.set_timeout(Duration::from_millis(300));
    match c.request("GET", "/ping", &[], b"") {
        // Connected and left unanswered, not refused.
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
        Ok(r) => panic!("a stopped influxd answered {}", r.status),
    }
    db.cont();
    assert!(db.ping());

    // SIGKILL loses nothing written (the WAL is fsynced), and restart keeps the ports.
    let (port, pid) = (db.port(), db.pid());
    db.kill();
    assert!(!db.is_running());
    assert!(!db.ping());
    db.restart();
    assert_eq!(db.port(), port);
    assert_ne!(db.pid(), pid);
    let json = db.query("t", "SELECT count(v) FROM cpu");
    assert!(json.contains("[0,2]"), "{json}");

    // A graceful stop and another restart.
    db.terminate();
    assert!(!db.is_running());
    db.restart();
    assert!(db.ping());

    db.drop_database("t");
    let json = db.query("", "SHOW DATABASES");
    assert!(!json.contains("[\"t\"]"), "{json}");
}

#[test]
fn instances_are_independent_and_cleaned_up() {
    let a = Influxd::start();
    let b = Influxd::start();
    assert_ne!(a.port(), b.port());
    a.create_database("only_a");
    assert!(a.query("", "SHOW DATABASES").contains("only_a"));
    assert!(!b.query("", "SHOW DATABASES").contains("only_a"));

    let dir = a.dir().to_owned();
    let pid = a.pid().expect("running");
    drop(a);
    assert!(!dir.exists(), "temporary directory removed");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process gone"
    );
}
