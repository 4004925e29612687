//! Validation throughput on a telegraf-like body, beside the `influxdb-line-protocol` crate on
//! the same input in the same run.
//!
//! `cargo bench -p lineproto --bench validate`. The body is the shape of
//! `shared/bench/gen-body.py` (5,000 points: half `cpu` with 7 tags and 10 floats, half `mem`
//! with 6 tags and 8 integer/float fields, one timestamp); set `LINEPROTO_BENCH_BODY=FILE` to
//! use that script's output instead.

use divan::counter::{BytesCount, ItemsCount};
use lineproto::{Precision, validate};

fn main() {
    divan::main();
}

/// A deterministic telegraf-like body.
fn body() -> Vec<u8> {
    if let Ok(path) = std::env::var("LINEPROTO_BENCH_BODY") {
        return std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    }
    let mut seed: u64 = 42;
    let mut rnd = move |max: f64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64 * max
    };
    let regions = [
        "eu-west-1",
        "eu-central-1",
        "us-east-1",
        "us-west-2",
        "ap-south-1",
    ];
    let envs = ["prod", "staging", "dev"];
    let services = ["api", "db", "cache", "queue", "web", "worker"];
    let ts = 1_700_000_000_000_000_000i64;
    let mut out = String::new();
    for i in 0..2500usize {
        let (host, cpu) = (i / 4, i % 4);
        let (u, s, io) = (rnd(60.0), rnd(20.0), rnd(5.0));
        out += &format!(
            "cpu,cpu=cpu{cpu},dc=dc{},env={},host=host-{host:05},rack=r{:02},region={},service={} \
             usage_user={u:.4},usage_system={s:.4},usage_idle={:.4},usage_iowait={io:.4},\
             usage_irq={:.4},usage_softirq={:.4},usage_steal=0,usage_guest=0,usage_guest_nice=0,\
             usage_nice={:.4} {ts}\n",
            host % 7,
            envs[host % 3],
            host % 40,
            regions[host % 5],
            services[host % 6],
            100.0 - u - s - io,
            rnd(1.0),
            rnd(1.0),
            rnd(2.0),
        );
    }
    for i in 0..2500usize {
        let total = 1u64 << (33 + (rnd(4.0) as u32));
        let used = (total as f64 * (0.1 + rnd(0.8))) as u64;
        let cached = ((total - used) as f64 * (0.1 + rnd(0.4))) as u64;
        out += &format!(
            "mem,dc=dc{},env={},host=host-{i:05},os=linux,rack=r{:02},region={} \
             total={total}i,used={used}i,free={}i,available={}i,cached={cached}i,buffered={}i,\
             used_percent={:.4},available_percent={:.4} {ts}\n",
            i % 7,
            envs[i % 3],
            i % 40,
            regions[i % 5],
            total - used - cached,
            total - used,
            rnd((1u64 << 28) as f64) as u64,
            100.0 * used as f64 / total as f64,
            100.0 - 100.0 * used as f64 / total as f64,
        );
    }
    out.into_bytes()
}

/// `LINEPROTO_BENCH_DUMP=FILE` writes the generated body to FILE, to look at it.
fn dump(body: &[u8]) {
    if let Ok(path) = std::env::var("LINEPROTO_BENCH_DUMP") {
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}

fn lines(body: &[u8]) -> usize {
    body.iter().filter(|&&c| c == b'\n').count()
}

#[divan::bench]
fn influx_ha_validate(bencher: divan::Bencher) {
    let body = body();
    dump(&body);
    let n = lines(&body);
    bencher
        .counter(BytesCount::new(body.len()))
        .counter(ItemsCount::new(n))
        .bench(|| {
            let v = validate(divan::black_box(&body), Precision::Nanoseconds, 0);
            assert_eq!(v.points(), n);
            v.points()
        });
}

/// The same body with the timestamps removed: every line is stamped and the output rebuilt.
#[divan::bench]
fn influx_ha_validate_and_stamp(bencher: divan::Bencher) {
    let body: Vec<u8> = String::from_utf8(body())
        .expect("generated body is UTF-8")
        .replace(" 1700000000000000000\n", "\n")
        .into_bytes();
    let n = lines(&body);
    bencher
        .counter(BytesCount::new(body.len()))
        .counter(ItemsCount::new(n))
        .bench(|| {
            let v = validate(divan::black_box(&body), Precision::Nanoseconds, 1);
            assert_eq!(v.points(), n);
            v.output().len()
        });
}

/// The reference: the `influxdb-line-protocol` crate parsing the same body.
#[divan::bench]
fn influxdb_line_protocol_crate(bencher: divan::Bencher) {
    let body = body();
    let text = std::str::from_utf8(&body).expect("generated body is UTF-8");
    let n = lines(&body);
    bencher
        .counter(BytesCount::new(body.len()))
        .counter(ItemsCount::new(n))
        .bench(|| {
            let ok = influxdb_line_protocol::parse_lines(divan::black_box(text))
                .filter(Result::is_ok)
                .count();
            assert_eq!(ok, n);
            ok
        });
}
