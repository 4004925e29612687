//! `influx-ha verify` and `influx-ha repair`: from the command line's arguments to the report
//! on stdout and the exit status.

use std::sync::Arc;

use super::conn::{Conn, Pacer, Traffic};
use super::progress::Progress;
use super::timespec::{MAX_TIME, MIN_TIME, now_ns, parse_time};
use super::{RepairError, RepairOptions, Report, Scope, flag, repair, verify};
use crate::backend::{BackendClient, Timeouts};
use crate::cli::{RepairArgs, VerifyArgs};
use crate::config::Config;
use crate::units::parse_duration;

/// The backends of a run, sharing one pace and one set of counters.
struct Run {
    conns: Vec<Conn>,
    traffic: Arc<Traffic>,
    scope: Scope,
}

fn prepare(config: &Config, args: &VerifyArgs) -> Result<Run, RepairError> {
    let now = now_ns();
    let time = |v: &Option<String>, default: i64, what: &str| {
        v.as_deref().map_or(Ok(default), |s| {
            parse_time(s, now).map_err(|e| RepairError::Usage(format!("--{what}: {e}")))
        })
    };
    let scope = Scope {
        db: args.db.clone(),
        since: time(&args.since, MIN_TIME, "since")?,
        until: time(&args.until, MAX_TIME, "until")?,
    };
    if scope.since >= scope.until {
        return Err(RepairError::Usage(
            "--since must be before --until".to_owned(),
        ));
    }
    if config.backends.len() < 2 {
        return Err(RepairError::Usage(
            "verify and repair compare backends: the config has fewer than two".to_owned(),
        ));
    }
    let request =
        parse_duration(&args.timeout).map_err(|e| RepairError::Usage(format!("--timeout: {e}")))?;
    let timeouts = Timeouts {
        connect: config.write.connect_timeout,
        request,
    };
    let pacer = Arc::new(Pacer::new(args.rate));
    let traffic = Arc::new(Traffic::default());
    let conns = config
        .backends
        .iter()
        .map(|b| {
            Ok(Conn::new(
                BackendClient::new(b, timeouts)?,
                pacer.clone(),
                traffic.clone(),
            ))
        })
        .collect::<Result<Vec<_>, RepairError>>()?;
    Ok(Run {
        conns,
        traffic,
        scope,
    })
}

/// Clears every backend's diverged flag when `report` covered everything and found no
/// difference; prints what was done.
async fn clear_flags(
    config: &Config,
    scope: &Scope,
    report: &Report,
    since: &flag::VerifyStart,
) -> Result<(), RepairError> {
    if !report.matches() {
        return Ok(());
    }
    if !scope.is_everything() {
        println!(
            "diverged flags left as they are: only a verify of every database over all time clears them"
        );
        return Ok(());
    }
    let mut first_error = None;
    for b in &config.backends {
        let mut outcomes = vec![flag::clear(config, b, since).await];
        for peer in &config.peers {
            outcomes.push(
                flag::clear_on_peer(peer, &b.name, since, config.write.connect_timeout).await,
            );
        }
        for outcome in outcomes {
            match outcome {
                Ok(done) => println!("{done}"),
                Err(e) => {
                    println!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// `influx-ha verify`: prints the report; `Ok(true)` when the backends match.
pub async fn verify_command(config: &Config, args: &VerifyArgs) -> Result<bool, RepairError> {
    let run = prepare(config, args)?;
    let since = flag::VerifyStart::now(config).await;
    let report = verify(&run.conns, &run.traffic, &run.scope).await?;
    print!("{}", report.render());
    clear_flags(config, &run.scope, &report, &since).await?;
    Ok(report.matches())
}

/// `influx-ha repair`: copies what differs, prints what it did and the final report; `Ok(true)`
/// when the backends match afterwards.
pub async fn repair_command(config: &Config, args: &RepairArgs) -> Result<bool, RepairError> {
    let run = prepare(config, &args.verify)?;
    let options = RepairOptions {
        chunk: args.chunk.max(1),
        passes: args.passes.max(1),
    };
    let progress = Progress::new(!args.quiet);
    // Read before anything is compared: data dropped during the repair keeps the flags.
    let since = flag::VerifyStart::now(config).await;
    let outcome = repair(&run.conns, &run.traffic, &run.scope, &options, &progress).await?;
    if outcome.before.matches() {
        println!("nothing to repair");
    } else {
        print!("{}", outcome.before.render());
        println!(
            "repaired in {} passes: {} schema statements, {} points written",
            outcome.passes, outcome.statements, outcome.points
        );
        for f in &outcome.failures {
            println!("not copied: {f}");
        }
        println!("after the repair:");
    }
    print!("{}", outcome.after.render());
    clear_flags(config, &run.scope, &outcome.after, &since).await?;
    Ok(outcome.after.matches())
}
