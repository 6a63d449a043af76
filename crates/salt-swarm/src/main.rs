//! `salt-swarm`: the command line of the [`salt_swarm`] library, N simulated Salt minions in
//! one process against an unmodified master.
//!
//! ```text
//! salt-swarm --config-dir <master config dir> --count N [--prefix swarm-] [--accept] [--silent PERCENT]
//! ```
//!
//! Prints exactly one line on stdout, `salt-swarm: N minions up`, once every minion has signed
//! in and subscribed; logs go to stderr. SIGINT or SIGTERM end it with exit status 0.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use salt_swarm::knobs;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "salt-swarm",
    version,
    about = "Simulated Salt minions against a real master"
)]
struct Cli {
    /// Directory of the master's configuration (holds `master`).
    #[arg(long)]
    config_dir: PathBuf,
    /// Number of minions.
    #[arg(long)]
    count: u32,
    /// Minion id prefix.
    #[arg(long, default_value = "swarm-")]
    prefix: String,
    /// Accept the minions' key on the master (`salt-key -a`) before starting.
    #[arg(long)]
    accept: bool,
    /// Percentage of minions that start up but never answer a publish.
    #[arg(long, default_value_t = 0.0, value_parser = percent)]
    silent: f64,
    /// Percentage of minions that drop off now and then and come back.
    #[arg(long, default_value_t = 0.0, value_parser = percent)]
    flap: f64,
    /// Mean time a flapping minion stays up.
    #[arg(long, default_value = "60s", value_parser = knobs::parse_duration)]
    flap_every: Duration,
    /// Mean time a flapping minion stays down.
    #[arg(long, default_value = "5s", value_parser = knobs::parse_duration)]
    flap_down: Duration,
    /// Function latency, `[FUN=]MIN[..MAX]` (`20ms`, `1s..3s`, `test.ping=5ms`); repeatable.
    #[arg(long)]
    latency: Vec<String>,
    /// Approximate size of a `state.apply` return, in bytes.
    #[arg(long, default_value_t = 2048)]
    return_size: usize,
    /// Minions starting up (sign-in, pillar, subscription) at once.
    #[arg(long, default_value_t = 8)]
    signin_concurrency: usize,
    /// Request-channel connections shared by all minions.
    #[arg(long, default_value_t = 8)]
    req_connections: usize,
    /// Salt version the minions claim.
    #[arg(long, default_value = "3008.4")]
    salt_version: String,
    /// Minion n connects from the loopback address of n + this (see `minion::address`), so
    /// that several swarms on one master do not share addresses (the master tells connected
    /// minions by the address of their publish connection).
    #[arg(long, default_value_t = 0)]
    address_offset: u32,
    /// Where the swarm keeps its key pair (default `$TMPDIR/salt-swarm-<uid>`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log level (or a `tracing` filter); `RUST_LOG` overrides.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not between 0 and 100"))
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("salt-swarm: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("salt-swarm: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let count = cli.count as usize;
    let opts = salt_swarm::Options {
        config_dir: cli.config_dir,
        count: cli.count,
        prefix: cli.prefix,
        accept: cli.accept,
        silent: cli.silent,
        flap: cli.flap,
        flap_every: cli.flap_every,
        flap_down: cli.flap_down,
        latency: cli.latency,
        return_size: cli.return_size,
        signin_concurrency: cli.signin_concurrency,
        req_connections: cli.req_connections,
        salt_version: cli.salt_version,
        address_offset: cli.address_offset,
        state_dir: cli.state_dir,
    };
    let swarm = salt_swarm::start(&opts).await?;
    let started = tokio::time::Instant::now();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = swarm.all_up() => {
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "every minion signed in and subscribed");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "salt-swarm: {count} minions up");
            let _ = out.flush();
        }
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = term.recv() => return Ok(()),
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    swarm.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(percent("10"), Ok(10.0));
        assert_eq!(percent("2.5%"), Ok(2.5));
        assert!(percent("101").is_err());
        assert!(percent("x").is_err());
    }
}
