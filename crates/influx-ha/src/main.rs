use clap::Parser;

/// High availability for InfluxDB OSS.
#[derive(Parser)]
#[command(name = "influx-ha", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
