//! `influx-ha bench`: a load generator for any InfluxDB-compatible write endpoint, and a check
//! that backends hold exactly what was written.
//!
//! - [`series`]: the deterministic telegraf-like workload (hosts × measurements × instances,
//!   fields, timestamps one interval apart); any range of its point stream can be regenerated.
//! - [`load`]: pre-generated bodies and the workers sending them (HTTP v1 `/write`, v2
//!   `/api/v2/write`, or UDP), with rate limiting, retries, latency histograms.
//! - [`verify`]: per series and field, counts and sums on every backend against the expected
//!   ones, polled until they match (replication converges asynchronously) or time runs out;
//!   then [`readback`]: every point read back and checked row by row.
//! - [`report`]: the summary for people and `--json` for scripts.
//!
//! Two modes: `--points N` writes points `offset..offset+N` of the stream exactly once (the
//! set `--verify` checks); `--duration` (the default, 10 s) writes as much as it can, cycling
//! over the pre-generated batches (so the same points are written again once the pool is used
//! up: InfluxDB overwrites them).

pub mod load;
pub mod readback;
pub mod report;
pub mod series;
pub mod verify;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::Uri;
use http::header::HeaderValue;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use self::load::{Plan, PoolSpec, Progress, Sink, Stop, Tally};
use self::report::{Report, Setup, group};
use self::series::{Shape, ShapeError, Workload};
use crate::http::query::encode_component;
use crate::units::parse_duration;

/// The keep-alive HTTP client the generator and the verifier use.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// 2026-01-01T00:00:00Z: the default timestamp of tick 0, fixed so that runs with the same
/// arguments write the same points (and separate runs can extend one verified set).
pub const DEFAULT_START_NS: i64 = 1_767_225_600_000_000_000;

/// Write API of an HTTP target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Api {
    /// InfluxDB 1.x `POST /write?db=…&rp=…&precision=ns`.
    V1,
    /// InfluxDB 1.8+/2.x `POST /api/v2/write?bucket=db[/rp]&precision=ns`.
    V2,
}

/// `influx-ha bench` arguments.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  influx-ha bench http://127.0.0.1:8086 --duration 30s -c 16
  influx-ha bench http://127.0.0.1:8086 --points 1000000 --rate 50000
  influx-ha bench udp://127.0.0.1:8089 --duration 10s --rate 20000
  influx-ha bench http://lb:8086 --points 170000 --verify http://a:8086 --verify http://b:8086")]
pub struct BenchArgs {
    /// Where to write: http://HOST:PORT (InfluxDB, influx-ha, a load balancer) or
    /// udp://HOST:PORT (a UDP line-protocol listener).
    #[arg(value_name = "URL")]
    pub url: String,
    /// HTTP write API.
    #[arg(long, value_enum, default_value_t = Api::V1)]
    pub api: Api,
    /// Database (v2: the bucket's database).
    #[arg(long, default_value = "bench")]
    pub db: String,
    /// Retention policy; the database's default when absent.
    #[arg(long)]
    pub rp: Option<String>,
    /// Credentials: Basic auth for v1, `Token USER:PASSWORD` for v2.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub auth: Option<String>,
    /// Send `CREATE DATABASE` to the target before writing (the --verify URLs always get it).
    #[arg(long)]
    pub create_db: bool,

    /// Hosts (values of the `host` tag).
    #[arg(long, default_value_t = 100, help_heading = "Workload")]
    pub hosts: u32,
    /// Measurements per host, in Telegraf's order: cpu, mem, disk, diskio, net, system,
    /// processes, swap, kernel, netstat (then again with a suffix).
    #[arg(long, default_value_t = 5, help_heading = "Workload")]
    pub measurements: u32,
    /// Fields per point (default: each input's own, 5–10).
    #[arg(long, help_heading = "Workload")]
    pub fields: Option<u32>,
    /// CPUs, disks, interfaces per host: series of the cpu, disk, diskio and net measurements.
    #[arg(long, default_value_t = 4, help_heading = "Workload")]
    pub instances: u32,
    /// Points per request.
    #[arg(long, short = 'b', default_value_t = 5000, help_heading = "Workload")]
    pub batch: u64,
    /// Timestamp of the first tick: nanoseconds since the epoch, or `now`.
    #[arg(long, default_value = "1767225600000000000", value_parser = parse_start, help_heading = "Workload")]
    pub start: i64,
    /// Time between two points of a series.
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "Workload")]
    pub interval: Duration,
    /// First point of the stream to write (points before it were written by an earlier run).
    #[arg(long, default_value_t = 0, help_heading = "Workload")]
    pub offset: u64,

    /// Requests in flight at once (connections).
    #[arg(long, short = 'c', default_value_t = 8, help_heading = "Load")]
    pub concurrency: u64,
    /// Points per second at most (default: as fast as the target answers).
    #[arg(long, help_heading = "Load")]
    pub rate: Option<f64>,
    /// Write for this long (the default mode, 10s).
    #[arg(long, value_parser = parse_duration, conflicts_with = "points", help_heading = "Load")]
    pub duration: Option<Duration>,
    /// Write exactly this many points, each once.
    #[arg(long, short = 'n', help_heading = "Load")]
    pub points: Option<u64>,
    /// Deadline of one request.
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "Load")]
    pub timeout: Duration,
    /// Retry a batch that failed with a 5xx, a connection error or a timeout for this long,
    /// as Telegraf does (default: no retries; 120s with --verify).
    #[arg(long, value_parser = parse_duration, help_heading = "Load")]
    pub retry_for: Option<Duration>,
    /// Gzip the bodies (Content-Encoding: gzip).
    #[arg(long, help_heading = "Load")]
    pub gzip: bool,
    /// Largest UDP datagram, in bytes.
    #[arg(long, default_value_t = 1400, help_heading = "Load")]
    pub udp_payload: usize,
    /// Memory for pre-generated bodies, in MiB (with --points, all of them must fit).
    #[arg(long, default_value_t = 256, help_heading = "Load")]
    pub pool_mib: u64,
    /// Threads of the generator (default 2).
    #[arg(long, help_heading = "Load")]
    pub threads: Option<usize>,

    /// Print the report as one JSON object on stdout.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(long, help_heading = "Output")]
    pub no_progress: bool,

    /// After writing, check that this InfluxDB holds exactly the points written (repeat for
    /// every backend). Needs --points; --offset and --points must be whole ticks.
    #[arg(
        long = "verify",
        value_name = "URL",
        requires = "points",
        help_heading = "Verification"
    )]
    pub verify: Vec<String>,
    /// Write nothing; only check that the --verify backends hold points offset..offset+points.
    #[arg(long, requires = "verify", help_heading = "Verification")]
    pub verify_only: bool,
    /// How long the backends get to converge before verification fails.
    #[arg(long, default_value = "120s", value_parser = parse_duration, help_heading = "Verification")]
    pub verify_timeout: Duration,
}

fn parse_start(value: &str) -> Result<i64, String> {
    if value == "now" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        return i64::try_from(now.as_nanos()).map_err(|e| e.to_string());
    }
    value
        .parse()
        .map_err(|_| format!("{value:?} is not a number of nanoseconds nor `now`"))
}

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An argument is not usable.
    #[error("{0}")]
    Usage(String),
    /// The workload shape is not usable.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// A verification URL could not be queried.
    #[error("{url}: {message}")]
    Verify {
        /// The backend.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Where the load goes.
#[derive(Debug, Clone)]
enum Target {
    Http { base: String },
    Udp { addr: SocketAddr },
}

fn parse_target(url: &str) -> Result<Target, BenchError> {
    if let Some(rest) = url.strip_prefix("udp://") {
        let addr = rest
            .trim_end_matches('/')
            .to_socket_addrs()
            .map_err(|e| BenchError::Usage(format!("{url}: {e}")))?
            .next()
            .ok_or_else(|| BenchError::Usage(format!("{url}: no address")))?;
        return Ok(Target::Udp { addr });
    }
    if url.starts_with("https://") {
        return Err(BenchError::Usage(format!(
            "{url}: https is not supported by the generator; write to the plain-HTTP listener"
        )));
    }
    if !url.starts_with("http://") {
        return Err(BenchError::Usage(format!(
            "{url}: the target must start with http:// or udp://"
        )));
    }
    let base = url.trim_end_matches('/').to_owned();
    base.parse::<Uri>()
        .map_err(|e| BenchError::Usage(format!("{url}: {e}")))?;
    Ok(Target::Http { base })
}

/// The client shared by the workers and the verifier.
pub fn http_client(connections: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(connections)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

fn write_uri(args: &BenchArgs, base: &str) -> Result<Uri, BenchError> {
    let mut s = String::from(base);
    match args.api {
        Api::V1 => {
            s.push_str("/write?db=");
            encode_component(&args.db, &mut s);
            if let Some(rp) = &args.rp {
                s.push_str("&rp=");
                encode_component(rp, &mut s);
            }
        }
        Api::V2 => {
            s.push_str("/api/v2/write?bucket=");
            let bucket = match &args.rp {
                Some(rp) => format!("{}/{rp}", args.db),
                None => args.db.clone(),
            };
            encode_component(&bucket, &mut s);
        }
    }
    s.push_str("&precision=ns");
    s.parse()
        .map_err(|e| BenchError::Usage(format!("{s}: {e}")))
}

fn authorization(args: &BenchArgs) -> Result<Option<HeaderValue>, BenchError> {
    let Some(auth) = &args.auth else {
        return Ok(None);
    };
    let Some((user, password)) = auth.split_once(':') else {
        return Err(BenchError::Usage("--auth must be USER:PASSWORD".to_owned()));
    };
    let mut value = match args.api {
        Api::V1 => crate::backend::basic_auth(user, password),
        Api::V2 => HeaderValue::from_str(&format!("Token {user}:{password}"))
            .map_err(|_| BenchError::Usage("--auth holds characters a header cannot".to_owned()))?,
    };
    value.set_sensitive(true);
    Ok(Some(value))
}

/// `Authorization` for `/query` (database creation, verification): Basic with `--auth`, which
/// every 1.x `/query` takes whatever the write API.
fn query_authorization(args: &BenchArgs) -> Result<Option<HeaderValue>, BenchError> {
    let Some(auth) = &args.auth else {
        return Ok(None);
    };
    let Some((user, password)) = auth.split_once(':') else {
        return Err(BenchError::Usage("--auth must be USER:PASSWORD".to_owned()));
    };
    let mut value = crate::backend::basic_auth(user, password);
    value.set_sensitive(true);
    Ok(Some(value))
}

/// Runs the load (and the verification) that `args` describe. Must run inside a tokio runtime.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let shape = Shape {
        hosts: args.hosts,
        measurements: args.measurements,
        fields: args.fields,
        instances: args.instances,
        start_ns: args.start,
        interval_ns: i64::try_from(args.interval.as_nanos()).unwrap_or(i64::MAX),
    };
    let workload = Workload::new(shape)?;
    let series = workload.cardinality();
    if args.batch == 0 {
        return Err(BenchError::Usage("--batch must be at least 1".to_owned()));
    }
    if args.concurrency == 0 {
        return Err(BenchError::Usage(
            "--concurrency must be at least 1".to_owned(),
        ));
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(BenchError::Usage(
            "--rate must be a positive number".to_owned(),
        ));
    }
    if args.rate.is_some_and(|r| pace_of(args.batch, r).is_none()) {
        return Err(BenchError::Usage(
            "--rate is too low: one batch would take more than a year".to_owned(),
        ));
    }
    let target = parse_target(&args.url)?;
    let end = args.points.map(|n| args.offset.saturating_add(n));
    if let Some(end) = end {
        workload.check_range(end)?;
        if args.points == Some(0) {
            return Err(BenchError::Usage("--points must be at least 1".to_owned()));
        }
    }
    if !args.verify.is_empty()
        && (!args.offset.is_multiple_of(series) || !args.points.unwrap_or(0).is_multiple_of(series))
    {
        return Err(BenchError::Usage(format!(
            "with --verify, --offset and --points must be multiples of the series count ({series}), \
             so that the verified time range holds whole ticks (e.g. --points {})",
            args.points.unwrap_or(0).div_ceil(series).max(1) * series
        )));
    }
    let client = http_client(args.concurrency as usize);
    let query_auth = query_authorization(&args)?;
    // Checking alone writes nothing, not even a database (nor needs the right to).
    if !args.verify_only {
        for url in &args.verify {
            verify::create_database(&client, url, &args.db, query_auth.as_ref()).await?;
        }
    }
    let (protocol, target_text) = match &target {
        Target::Http { base } => {
            let uri = write_uri(&args, base)?;
            let p = match args.api {
                Api::V1 => "v1",
                Api::V2 => "v2",
            };
            (p, uri.to_string())
        }
        Target::Udp { addr } => ("udp", format!("udp://{addr}")),
    };
    if args.create_db {
        let Target::Http { base } = &target else {
            return Err(BenchError::Usage(
                "--create-db needs an HTTP target (a UDP listener creates its own database)"
                    .to_owned(),
            ));
        };
        verify::create_database(&client, base, &args.db, query_auth.as_ref()).await?;
    }

    let mut setup = Setup {
        target: target_text,
        protocol: protocol.to_owned(),
        concurrency: args.concurrency,
        batch_points: args.batch,
        series,
        rate_limit: args.rate,
        distinct_batches: 0,
    };
    let mut loaded = None;
    let mut report = if args.verify_only {
        Report::new(
            setup,
            Tally::new(),
            0.0,
            matches!(target, Target::Udp { .. }),
        )
    } else {
        let Loaded {
            tally,
            secs,
            distinct,
            plan,
            ctrl_c,
        } = write_load(&args, &workload, &target, &client, end).await?;
        setup.distinct_batches = distinct;
        let mut report = Report::new(setup, tally, secs, matches!(target, Target::Udp { .. }));
        report.cancelled = plan.progress.cancel.load(Ordering::SeqCst);
        loaded = Some((plan, ctrl_c));
        report
    };

    if let (Some(end), false, false) = (end, args.verify.is_empty(), report.cancelled) {
        // Heard by the load's watcher (see `Loaded`), or by one of its own with `--verify-only`.
        let own = Arc::new(load::Progress::default());
        let _watcher = loaded.is_none().then(|| {
            let own = own.clone();
            AbortOnDrop(tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    own.stop();
                }
            }))
        });
        let progress = loaded.as_ref().map_or(&*own, |(plan, _)| &plan.progress);
        let interrupted = progress.cancelled.notified();
        tokio::pin!(interrupted);
        interrupted.as_mut().enable();
        let want = verify::expected(&workload, args.offset..end);
        let range = (workload.timestamp(args.offset), workload.timestamp(end - 1));
        for url in &args.verify {
            let scope = verify::Scope {
                db: &args.db,
                rp: args.rp.as_deref(),
                auth: query_auth.as_ref(),
            };
            tokio::select! {
                check = verify_until(&client, url, &args, scope, range, &want, (&workload, args.offset..end)) => {
                    report.verify.push(check);
                }
                () = &mut interrupted => {
                    report.cancelled = true;
                    break;
                }
            }
        }
    }
    Ok(report)
}

/// Checks `url` until it holds exactly `want` or `--verify-timeout` passes.
async fn verify_until(
    client: &HttpClient,
    url: &str,
    args: &BenchArgs,
    scope: verify::Scope<'_>,
    range: (i64, i64),
    want: &verify::Totals,
    points: (&Workload, std::ops::Range<u64>),
) -> verify::BackendCheck {
    let started = Instant::now();
    let deadline = started + args.verify_timeout;
    loop {
        let result = verify::check(client, url, scope, range, want, points.clone()).await;
        let done = Instant::now() >= deadline;
        match result {
            // Points read back that differ are read again while time is left: through a
            // relay, the totals and the points may come from different backends.
            Ok(mut c) if c.exact || done => {
                c.waited_s = started.elapsed().as_secs_f64();
                return c;
            }
            Err(e) if done => {
                return verify::BackendCheck {
                    url: url.to_owned(),
                    exact: false,
                    series_expected: want.len() as u64,
                    series_found: 0,
                    points_expected: 0,
                    points_found: 0,
                    rows_read: None,
                    differences: vec![e.to_string()],
                    waited_s: started.elapsed().as_secs_f64(),
                };
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Generates the pool, runs the workers, shows progress. Returns the merged tally, the
/// seconds the load took and how many distinct batches there were.
async fn write_load(
    args: &BenchArgs,
    workload: &Workload,
    target: &Target,
    client: &HttpClient,
    end: Option<u64>,
) -> Result<Loaded, BenchError> {
    let batch_bytes = (workload.point_bytes_estimate() as u64).saturating_mul(args.batch);
    let fit = ((args.pool_mib << 20) / batch_bytes.max(1)).max(1);
    let needed = end.map(|e| (e - args.offset).div_ceil(args.batch));
    let batches = needed.map_or(fit, |n| n.min(fit));
    // --points writes each point once: every batch must be generated, none sent twice.
    if let Some(n) = needed
        && n > batches
    {
        return Err(BenchError::Usage(format!(
            "--points needs every batch generated ({n} of about {} each); raise --pool-mib \
             to at least {} or write fewer --points",
            crate::units::format_size(batch_bytes),
            (n.saturating_mul(batch_bytes) >> 20) + 1
        )));
    }
    let spec = PoolSpec {
        offset: args.offset,
        batch: args.batch,
        batches,
        end,
        gzip: args.gzip,
        datagram_bytes: match target {
            Target::Udp { .. } => args.udp_payload.max(64),
            Target::Http { .. } => 0,
        },
    };
    let pool = {
        let workload = workload.clone();
        tokio::task::spawn_blocking(move || load::generate(&workload, spec))
            .await
            .map_err(|e| BenchError::Usage(format!("generating the batches failed: {e}")))?
    };
    let distinct = pool.len() as u64;
    let sink = match target {
        Target::Http { base } => Sink::Http(Box::new(load::HttpSink {
            client: client.clone(),
            uri: write_uri(args, base)?,
            authorization: authorization(args)?,
            gzip: args.gzip,
            timeout: args.timeout,
        })),
        Target::Udp { addr } => Sink::Udp { addr: *addr },
    };
    let retry_for = args.retry_for.unwrap_or(if args.verify.is_empty() {
        Duration::ZERO
    } else {
        Duration::from_secs(120)
    });
    let duration = args.duration.unwrap_or(Duration::from_secs(10));
    let start = Instant::now();
    let stop = match needed {
        Some(n) => Stop::Batches(n),
        None => Stop::At(start + duration),
    };
    let pace = args.rate.and_then(|r| pace_of(args.batch, r));
    let plan = Arc::new(Plan {
        pool,
        sink,
        stop,
        pace,
        retry_for,
        start,
        progress: Progress::default(),
    });

    let bar = progress_bar(args, end.map(|e| e - args.offset), duration);
    let ticker = {
        let plan = plan.clone();
        let bar = bar.clone();
        let count_mode = needed.is_some();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let p = &plan.progress;
                let acked = p.points_acked.load(Ordering::Relaxed);
                let secs = plan.start.elapsed().as_secs_f64().max(1e-3);
                if count_mode {
                    bar.set_position(p.points_done.load(Ordering::Relaxed));
                } else {
                    bar.set_position(plan.start.elapsed().as_millis() as u64);
                }
                bar.set_message(format!(
                    "{} points, {} points/s, {} errors",
                    group(acked),
                    group((acked as f64 / secs) as u64),
                    p.errors.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let cancel = {
        let plan = plan.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                plan.progress.stop();
            }
        })
    };
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(load::worker(plan.clone())))
        .collect();
    let mut tally = Tally::new();
    for w in workers {
        match w.await {
            Ok(t) => tally.merge(t),
            Err(e) => {
                ticker.abort();
                return Err(BenchError::Usage(format!("a worker failed: {e}")));
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    Ok(Loaded {
        tally,
        secs,
        distinct,
        plan,
        ctrl_c: AbortOnDrop(cancel),
    })
}

/// The time between two batches of `batch` points at `rate` points/s; `None` past a year (as
/// good as never, and past what an `Instant` may be moved by).
fn pace_of(batch: u64, rate: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(batch as f64 / rate)
        .ok()
        .filter(|p| *p <= Duration::from_secs(365 * 24 * 3600))
}

/// What [`write_load`] leaves: its figures, and the Ctrl-C watcher still listening (so that
/// the verification after the load hears it too: once installed, the handler keeps SIGINT
/// from ending the process).
struct Loaded {
    tally: Tally,
    secs: f64,
    distinct: u64,
    plan: Arc<load::Plan>,
    ctrl_c: AbortOnDrop,
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn progress_bar(args: &BenchArgs, points: Option<u64>, duration: Duration) -> ProgressBar {
    let visible = !args.no_progress && std::io::stderr().is_terminal();
    let (len, template) = match points {
        Some(n) => (
            n,
            "{spinner} {elapsed_precise} [{wide_bar}] {percent:>3}%  {msg}",
        ),
        None => (
            duration.as_millis() as u64,
            "{spinner} {elapsed_precise} [{wide_bar}] {msg}",
        ),
    };
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if visible {
            ProgressDrawTarget::stderr_with_hz(5)
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
