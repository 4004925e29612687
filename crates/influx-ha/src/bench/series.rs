//! The deterministic telegraf-like workload: which series exist, which point comes at which
//! index of the stream, and what every field holds.
//!
//! The stream of points is infinite and indexed from 0: point `i` belongs to series
//! `i % series` at tick `i / series`, and its timestamp is `start + tick × interval` (every
//! series reports once per interval, as Telegraf flushes its inputs). Field values are a hash
//! of (series, tick, field), so any range of the stream can be regenerated — or its expected
//! counts and sums computed — without having been kept.
//!
//! Float values are multiples of 0.25 below 100, so their sums over millions of points are
//! exact in a `f64` whatever order InfluxDB adds them in; integers stay below 2^36 and InfluxDB
//! adds them in int64. Verification can therefore compare sums for equality.

use std::fmt::Write as _;

/// One kind of measurement, as a Telegraf input reports it.
#[derive(Debug)]
struct Template {
    /// Measurement name.
    name: &'static str,
    /// The tag that tells instances apart (`cpu=cpu0`, `interface=eth1`) and the prefix of its
    /// values; `None` for one series per host.
    instance: Option<(&'static str, &'static str)>,
    /// Field names with `true` for integer fields.
    fields: &'static [(&'static str, bool)],
}

/// The inputs of a default Telegraf configuration, in the order `--measurements` takes them.
const TEMPLATES: &[Template] = &[
    Template {
        name: "cpu",
        instance: Some(("cpu", "cpu")),
        fields: &[
            ("usage_user", false),
            ("usage_system", false),
            ("usage_idle", false),
            ("usage_iowait", false),
            ("usage_irq", false),
            ("usage_softirq", false),
            ("usage_steal", false),
            ("usage_guest", false),
            ("usage_guest_nice", false),
            ("usage_nice", false),
        ],
    },
    Template {
        name: "mem",
        instance: None,
        fields: &[
            ("total", true),
            ("used", true),
            ("free", true),
            ("available", true),
            ("cached", true),
            ("buffered", true),
            ("used_percent", false),
            ("available_percent", false),
        ],
    },
    Template {
        name: "disk",
        instance: Some(("device", "sd")),
        fields: &[
            ("total", true),
            ("free", true),
            ("used", true),
            ("used_percent", false),
            ("inodes_total", true),
            ("inodes_free", true),
            ("inodes_used", true),
        ],
    },
    Template {
        name: "diskio",
        instance: Some(("name", "nvme")),
        fields: &[
            ("reads", true),
            ("writes", true),
            ("read_bytes", true),
            ("write_bytes", true),
            ("read_time", true),
            ("write_time", true),
            ("io_time", true),
            ("iops_in_progress", true),
        ],
    },
    Template {
        name: "net",
        instance: Some(("interface", "eth")),
        fields: &[
            ("bytes_sent", true),
            ("bytes_recv", true),
            ("packets_sent", true),
            ("packets_recv", true),
            ("err_in", true),
            ("err_out", true),
            ("drop_in", true),
            ("drop_out", true),
        ],
    },
    Template {
        name: "system",
        instance: None,
        fields: &[
            ("load1", false),
            ("load5", false),
            ("load15", false),
            ("n_cpus", true),
            ("n_users", true),
            ("uptime", true),
        ],
    },
    Template {
        name: "processes",
        instance: None,
        fields: &[
            ("blocked", true),
            ("running", true),
            ("sleeping", true),
            ("stopped", true),
            ("total", true),
            ("zombies", true),
            ("total_threads", true),
        ],
    },
    Template {
        name: "swap",
        instance: None,
        fields: &[
            ("total", true),
            ("used", true),
            ("free", true),
            ("used_percent", false),
            ("in", true),
            ("out", true),
        ],
    },
    Template {
        name: "kernel",
        instance: None,
        fields: &[
            ("boot_time", true),
            ("context_switches", true),
            ("interrupts", true),
            ("processes_forked", true),
            ("entropy_avail", true),
        ],
    },
    Template {
        name: "netstat",
        instance: None,
        fields: &[
            ("tcp_established", true),
            ("tcp_time_wait", true),
            ("tcp_listen", true),
            ("tcp_close_wait", true),
            ("udp_socket", true),
        ],
    },
];

/// How many measurement kinds exist before names repeat with a suffix (`cpu_2`).
pub const TEMPLATE_COUNT: usize = TEMPLATES.len();

const REGIONS: &[&str] = &[
    "eu-west-1",
    "eu-central-1",
    "us-east-1",
    "us-west-2",
    "ap-south-1",
];
const ENVS: &[&str] = &["prod", "staging", "dev"];

/// The shape of the workload, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Hosts (the `host` tag).
    pub hosts: u32,
    /// Measurements per host, taken in order from Telegraf's default inputs (cpu, mem, disk,
    /// diskio, net, system, processes, swap, kernel, netstat), repeated with a suffix past ten.
    pub measurements: u32,
    /// Fields per point; `None` keeps each input's own fields. More than an input has adds
    /// `field_N` floats.
    pub fields: Option<u32>,
    /// Instances of the measurements that have them (CPUs, disks, interfaces) per host.
    pub instances: u32,
    /// Timestamp of tick 0, in nanoseconds since the epoch.
    pub start_ns: i64,
    /// Nanoseconds between two ticks.
    pub interval_ns: i64,
}

/// Why a shape cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    /// A count is zero.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// The stream would pass InfluxDB's largest timestamp.
    #[error(
        "the timestamps would pass InfluxDB's largest time (2262-04-11): lower --start or --interval"
    )]
    TimeRange,
}

/// One series: its key (`measurement,tags`) and its fields.
#[derive(Debug, Clone)]
pub struct Series {
    /// Measurement name.
    pub measurement: String,
    /// `measurement,tag=value,…` as written (tags sorted, as Telegraf sends them).
    pub key: String,
    /// Tags as (key, value), sorted by key.
    pub tags: Vec<(String, String)>,
    /// Fields as (name, is integer).
    pub fields: Vec<(String, bool)>,
    /// `field=` prefixes with their leading separator (`" f="` then `",g="`), ready to copy.
    prefixes: Vec<String>,
}

/// The expanded workload: every series, in stream order.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The shape it was built from.
    pub shape: Shape,
    /// Every series; point `i` belongs to `series[i % len]`.
    pub series: Vec<Series>,
}

impl Workload {
    /// Expands a shape into its series.
    pub fn new(shape: Shape) -> Result<Self, ShapeError> {
        for (name, v) in [
            ("hosts", shape.hosts),
            ("measurements", shape.measurements),
            ("instances", shape.instances),
        ] {
            if v == 0 {
                return Err(ShapeError::Zero(name));
            }
        }
        if shape.fields == Some(0) {
            return Err(ShapeError::Zero("fields"));
        }
        if shape.interval_ns <= 0 {
            return Err(ShapeError::Zero("interval"));
        }
        let mut series = Vec::new();
        for host in 0..shape.hosts {
            for m in 0..shape.measurements as usize {
                let template = &TEMPLATES[m % TEMPLATES.len()];
                let round = m / TEMPLATES.len();
                let measurement = if round == 0 {
                    template.name.to_owned()
                } else {
                    format!("{}_{}", template.name, round + 1)
                };
                let fields = fields_of(template, shape.fields);
                let instances = if template.instance.is_some() {
                    shape.instances
                } else {
                    1
                };
                for inst in 0..instances {
                    let mut tags = vec![
                        ("dc".to_owned(), format!("dc{}", host % 7)),
                        (
                            "env".to_owned(),
                            ENVS[host as usize % ENVS.len()].to_owned(),
                        ),
                        ("host".to_owned(), format!("host-{host:05}")),
                        ("rack".to_owned(), format!("r{:02}", host % 40)),
                        (
                            "region".to_owned(),
                            REGIONS[host as usize % REGIONS.len()].to_owned(),
                        ),
                    ];
                    if let Some((key, prefix)) = template.instance {
                        tags.push((key.to_owned(), format!("{prefix}{inst}")));
                    }
                    tags.sort();
                    series.push(Series::new(measurement.clone(), tags, fields.clone()));
                }
            }
        }
        let workload = Self { shape, series };
        Ok(workload)
    }

    /// How many series the workload has (its cardinality).
    pub fn cardinality(&self) -> u64 {
        self.series.len() as u64
    }

    /// The timestamp of point `index`.
    pub fn timestamp(&self, index: u64) -> i64 {
        let tick = index / self.cardinality();
        self.shape
            .start_ns
            .saturating_add((tick as i64).saturating_mul(self.shape.interval_ns))
    }

    /// Checks that points `0..end` have timestamps InfluxDB accepts.
    pub fn check_range(&self, end: u64) -> Result<(), ShapeError> {
        let ticks = end.div_ceil(self.cardinality()) as i128;
        let last = i128::from(self.shape.start_ns) + ticks * i128::from(self.shape.interval_ns);
        if last > i128::from(lineproto::MAX_NANO_TIME)
            || self.shape.start_ns < lineproto::MIN_NANO_TIME
        {
            return Err(ShapeError::TimeRange);
        }
        Ok(())
    }

    /// Appends point `index` as one line of line protocol (with its `\n`).
    pub fn write_point(&self, index: u64, out: &mut Vec<u8>) {
        let n = self.cardinality();
        let s = (index % n) as usize;
        let tick = index / n;
        let series = &self.series[s];
        out.extend_from_slice(series.key.as_bytes());
        let mut num = itoa_buf();
        for (f, ((_, int), prefix)) in series.fields.iter().zip(&series.prefixes).enumerate() {
            out.extend_from_slice(prefix.as_bytes());
            match value(s as u64, tick, f as u64, *int) {
                Value::Int(v) => {
                    out.extend_from_slice(fmt_u64(&mut num, v));
                    out.push(b'i');
                }
                Value::Quarter(q) => {
                    out.extend_from_slice(fmt_u64(&mut num, q / 4));
                    out.extend_from_slice([&b""[..], b".25", b".5", b".75"][(q % 4) as usize]);
                }
            }
        }
        out.push(b' ');
        let ts = self.timestamp(index);
        if ts < 0 {
            out.push(b'-');
        }
        out.extend_from_slice(fmt_u64(&mut num, ts.unsigned_abs()));
        out.push(b'\n');
    }

    /// Appends points `range` to `out`.
    pub fn write_points(&self, range: std::ops::Range<u64>, out: &mut Vec<u8>) {
        for i in range {
            self.write_point(i, out);
        }
    }

    /// Bytes of one point, on average over the series (for sizing buffers).
    pub fn point_bytes_estimate(&self) -> usize {
        let sample = self.series.len().min(64) as u64;
        let mut buf = Vec::new();
        self.write_points(0..sample, &mut buf);
        buf.len() / sample.max(1) as usize + 1
    }
}

impl Series {
    fn new(measurement: String, tags: Vec<(String, String)>, fields: Vec<(String, bool)>) -> Self {
        let mut key = measurement.clone();
        for (k, v) in &tags {
            let _ = write!(key, ",{k}={v}");
        }
        let prefixes = fields
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{}{name}=", if i == 0 { ' ' } else { ',' }))
            .collect();
        Self {
            measurement,
            key,
            tags,
            fields,
            prefixes,
        }
    }
}

fn fields_of(template: &Template, wanted: Option<u32>) -> Vec<(String, bool)> {
    let own = template.fields.iter().map(|(n, i)| ((*n).to_owned(), *i));
    match wanted {
        None => own.collect(),
        Some(n) => own
            .chain((template.fields.len()..).map(|i| (format!("field_{i}"), false)))
            .take(n as usize)
            .collect(),
    }
}

/// A field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// An integer field.
    Int(u64),
    /// A float field holding `q / 4` (exact in binary).
    Quarter(u64),
}

impl Value {
    /// The value as InfluxDB's `sum()` sees it.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Quarter(q) => q as f64 / 4.0,
        }
    }
}

/// The value of field `field` of series `series` at `tick`.
pub fn value(series: u64, tick: u64, field: u64, integer: bool) -> Value {
    let h =
        splitmix(series.wrapping_mul(0x9E37_79B9) ^ tick.rotate_left(24) ^ field.rotate_left(48));
    if integer {
        Value::Int(h >> 28)
    } else {
        Value::Quarter(h % 400)
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// Formats `v` in decimal into `buf`, returning the digits.
fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}
