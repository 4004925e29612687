//! Validates a line-protocol file N times and prints the throughput:
//! `cargo run --release -p lineproto --example validate_file -- FILE [N] [reference] [copies=K]`;
//! with `reference`, the ported parser alone (no fast path); with `copies=K`, K copies of the
//! body are validated in turn, so that with enough of them each pass reads its body from
//! further away than the core's own cache, as a relay does with bodies received in turn.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: validate_file FILE [N] [reference] [copies=K]");
        std::process::exit(2);
    };
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut validate: fn(&[u8], lineproto::Precision, i64) -> lineproto::Validated<'_> =
        lineproto::validate;
    let mut copies = 1usize;
    for arg in args {
        if arg == "reference" {
            validate = lineproto::validate_reference;
        } else if let Some(k) = arg.strip_prefix("copies=").and_then(|k| k.parse().ok()) {
            copies = k;
        } else {
            eprintln!("unknown argument {arg:?}");
            std::process::exit(2);
        }
    }
    let body = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    });
    let bodies = vec![body; copies.max(1)];
    let start = Instant::now();
    let mut points = 0;
    for k in 0..n {
        let body = &bodies[k % bodies.len()];
        points += validate(body, lineproto::Precision::Nanoseconds, 0).points();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} bytes x {n}: {:.0} MB/s, {:.2} M points/s ({points} points)",
        bodies[0].len(),
        (bodies[0].len() * n) as f64 / secs / 1e6,
        points as f64 / secs / 1e6
    );
}
