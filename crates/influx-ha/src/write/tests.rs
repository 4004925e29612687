use bytes::Bytes;

use super::Replicator;
use crate::config::Config;
use crate::params::Consistency;

/// Two unreachable backends (nothing listens on port 1) with queues of 1 KiB.
fn tiny_queues(dir: &std::path::Path) -> Replicator {
    let text = format!(
        "data_dir = {:?}\n[http]\nbind = \"127.0.0.1:0\"\n[queue]\nmax_bytes = \"1KiB\"\nsegment_bytes = \"1KiB\"\n[[backend]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:1\"\n[[backend]]\nname = \"beta\"\nurl = \"http://127.0.0.2:1\"\n",
        dir.display().to_string()
    );
    let config = Config::from_toml(&text, "test").expect("valid config");
    let clients = crate::node::backend_clients(&config).expect("clients");
    Replicator::open(&config, &clients).expect("queues open")
}

#[tokio::test]
async fn a_refused_append_marks_the_backend_diverged_and_does_not_leave_it_queueing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replicator = tiny_queues(dir.path());
    // Larger than a queue record may be: refused by both queues.
    let line = format!("m v=\"{}\" 1\n", "x".repeat(2000));
    let _ = replicator
        .replicate("db".into(), None, "", Consistency::Any, Bytes::from(line))
        .await;
    for r in replicator.replicas().iter() {
        let why = r.diverged().expect("diverged");
        assert!(why.contains("queue refused a record"), "{why}");
        assert!(dir.path().join(r.name()).join("diverged").exists());
        // Nothing is queued, so nothing holds later writes back (and keeps reads away).
        assert!(!r.queue().has_pending());
        assert!(!r.is_queueing(), "{} stays in queueing mode", r.name());
    }
}
