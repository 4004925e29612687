//! The `influx-ha` binary: parses the command line, sets up logging, hands over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use influx_ha::admin::cli::{Operation, Target};
use influx_ha::cli::{Cli, Command, LogFormat, describe};
use influx_ha::config::Config;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Exit status of verify and repair when verify could not run (1 means "backends differ").
const EXIT_TROUBLE: u8 = 2;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs verify or repair: 0 the backends match, 1 they differ, 2 it could not run.
fn heal(
    config: &std::path::Path,
    job: impl AsyncFnOnce(Config) -> Result<bool, influx_ha::repair::RepairError>,
) -> ExitCode {
    let outcome = Config::load(config)
        .map_err(anyhow::Error::from)
        .and_then(|c| Ok(runtime()?.block_on(job(c))?));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("influx-ha: {e:#}");
            ExitCode::from(EXIT_TROUBLE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check(arg) => {
            let config = Config::load(&arg.config)?;
            print!("{}", describe(&config, &arg.config.display().to_string()));
            Ok(())
        }
        Command::HashPassword(args) => {
            use influx_ha::auth::password::{MAX_ITERATIONS, MIN_ITERATIONS, PasswordHash};
            anyhow::ensure!(
                (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&args.iterations),
                "--iterations must be from {MIN_ITERATIONS} to {MAX_ITERATIONS}"
            );
            let password = influx_ha::auth::input::read_password()?;
            let hash = PasswordHash::new(&password, args.iterations)?;
            println!("{hash}");
            Ok(())
        }
        Command::NewToken => {
            let token = influx_ha::auth::password::new_token()?;
            println!("token      = {token}");
            println!(
                "token_hash = \"{}\"",
                influx_ha::auth::password::token_hash_string(token.as_bytes())
            );
            Ok(())
        }
        Command::Queue(a) => operate(&a.target, Operation::Queue(a.command)),
        Command::Deadletter(a) => operate(&a.target, Operation::Deadletter(a.command)),
        Command::Backend(a) => operate(&a.target, Operation::Backend(a.command)),
        Command::Serve(arg) => {
            let config = Config::load(&arg.config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(influx_ha::node::serve_with_reload(
                config,
                Some(arg.config.clone()),
            ))?;
            Ok(())
        }
        Command::Bench(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.threads.unwrap_or(2).max(1))
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let json = args.json;
            let verify_only = args.verify_only;
            let counted = args.points.is_some();
            let report = runtime.block_on(influx_ha::bench::run(*args))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.text());
            }
            std::io::Write::flush(&mut std::io::stdout())?;
            if report.cancelled {
                // As a shell expects of a program stopped by Ctrl-C.
                eprintln!("cancelled");
                std::process::exit(130);
            }
            if !report.verified() {
                anyhow::bail!("a backend does not hold exactly the points written");
            }
            if !verify_only && report.points_acked == 0 {
                anyhow::bail!("no write succeeded");
            }
            if counted && report.points_failed > 0 {
                anyhow::bail!(
                    "{} of the points asked for were not acknowledged",
                    report.points_failed
                );
            }
            Ok(())
        }
        Command::Verify(_) | Command::Repair(_) => Ok(()),
    }
}

/// Runs an operator command; exits 1 when it did not reach its goal (verify not clean, drain
/// not complete).
fn operate(target: &Target, op: Operation) -> anyhow::Result<()> {
    let outcome = influx_ha::admin::cli::run(target, op)?;
    print!("{}", outcome.output);
    if !outcome.success {
        std::process::exit(1);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Operator commands print their result; their logs would only repeat it.
    let level = match cli.command {
        Command::Queue(_)
        | Command::Deadletter(_)
        | Command::Backend(_)
        | Command::Verify(_)
        | Command::Repair(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, level);
    match &cli.command {
        Command::Verify(args) => {
            return heal(&args.config.config, async |c| {
                influx_ha::repair::command::verify_command(&c, args).await
            });
        }
        Command::Repair(args) => {
            return heal(&args.verify.config.config, async |c| {
                influx_ha::repair::command::repair_command(&c, args).await
            });
        }
        _ => {}
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("influx-ha: {e:#}");
            ExitCode::FAILURE
        }
    }
}
