//! Validates a line-protocol file N times and prints the throughput:
//! `cargo run --release -p lineproto --example validate_file -- FILE [N] [reference]`; with
//! `reference`, the ported parser alone (no fast path).

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: validate_file FILE [N]");
        std::process::exit(2);
    };
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let validate = if args.next().as_deref() == Some("reference") {
        lineproto::validate_reference
    } else {
        lineproto::validate
    };
    let body = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    });
    let start = Instant::now();
    let mut points = 0;
    for _ in 0..n {
        points += validate(&body, lineproto::Precision::Nanoseconds, 0).points();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} bytes x {n}: {:.0} MB/s, {:.2} M points/s ({points} points)",
        body.len(),
        (body.len() * n) as f64 / secs / 1e6,
        points as f64 / secs / 1e6
    );
}
