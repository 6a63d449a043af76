//! `salt-swarm`: N simulated Salt minions in one process, speaking an unmodified master's own
//! protocol (ZeroMQ transport): sign-in, publish subscription, minion-side targeting, a few
//! execution functions, returns.
//!
//! ```text
//! salt-swarm --config-dir <master config dir> --count N [--prefix swarm-] [--accept] [--silent PERCENT]
//! ```
//!
//! Reads `<config-dir>/master` (with its includes) through `salt_wire::config`. Minion ids are
//! `<prefix><n>`, `n` from 1 to N zero-padded to the width of N (`--count 50`: `swarm-01` ..
//! `swarm-50`). Prints exactly one line on stdout, `salt-swarm: N minions up`, once every
//! minion has signed in and subscribed; logs go to stderr. SIGINT or SIGTERM end it with exit
//! status 0.
//!
//! Modules: [`crypt`] (Salt's ciphers), [`channel`] (request channel), [`auth`] (sign-in and
//! the publish key), [`pubsub`] (publish subscription), [`target`] (matchers), [`grains`],
//! [`functions`], [`knobs`] (latency, silent and flapping minions), [`keys`] (key pair,
//! `--accept`), [`minion`] (one minion's life).

#![recursion_limit = "512"]

mod auth;
mod channel;
mod crypt;
mod functions;
mod grains;
mod keys;
mod knobs;
mod minion;
mod pubsub;
mod target;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use salt_wire::config::{MasterConfig, MasterOptions, Reader};
use salt_wire::reqchan::Transport;
use tokio::sync::{Notify, Semaphore};

use crate::minion::{Flap, Minion, Swarm};

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

/// Minion ids: `<prefix><n>`, zero-padded to the width of `count`.
fn minion_ids(prefix: &str, count: u32) -> Vec<String> {
    let width = count.to_string().len();
    (1..=count)
        .map(|n| format!("{prefix}{n:0width$}"))
        .collect()
}

/// What the swarm needs from the master's configuration.
struct MasterSettings {
    options: MasterOptions,
    publish_port: u16,
    pki_dir: PathBuf,
    zmq_filtering: bool,
    /// `<pki_dir>/<master_sign_key_name>.pub` when `master_sign_pubkey` is on.
    sign_key_path: Option<PathBuf>,
}

fn read_master(config_dir: &Path) -> Result<MasterSettings, String> {
    let cfg = MasterConfig::load(&config_dir.join("master")).map_err(|e| e.to_string())?;
    let options = MasterOptions::from_config(&cfg).map_err(|e| e.to_string())?;
    if options.transport != Transport::Zeromq {
        return Err(
            "the master's transport is tcp: salt-swarm speaks the zeromq transport only".into(),
        );
    }
    let r = Reader::top(&cfg);
    let publish_port = r
        .integer("publish_port", 4505, 1, 65535)
        .map_err(|e| e.to_string())? as u16;
    let pki = r
        .string("pki_dir")
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| "/etc/salt/pki/master".into());
    let pki_path = Path::new(&pki);
    let pki_dir = if options.root_dir == Path::new("/") || pki_path.starts_with(&options.root_dir) {
        pki_path.to_owned()
    } else {
        options
            .root_dir
            .join(pki_path.strip_prefix("/").unwrap_or(pki_path))
    };
    let zmq_filtering = r
        .boolean("zmq_filtering", false)
        .map_err(|e| e.to_string())?;
    let sign_key_path = if r
        .boolean("master_sign_pubkey", false)
        .map_err(|e| e.to_string())?
    {
        let name = r
            .string("master_sign_key_name")
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| "master_sign".into());
        Some(pki_dir.join(format!("{name}.pub")))
    } else {
        None
    };
    Ok(MasterSettings {
        sign_key_path,
        options,
        publish_port,
        pki_dir,
        zmq_filtering,
    })
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
    if cli.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let settings = read_master(&cli.config_dir)?;
    // Every minion holds a publish connection: make room for them.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-files limit");
    }
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(keys::default_state_dir);
    let dir = state_dir.clone();
    let keys = tokio::task::spawn_blocking(move || keys::load_or_create(&dir))
        .await
        .map_err(|e| e.to_string())??;
    let ids = minion_ids(&cli.prefix, cli.count);
    if cli.accept {
        keys::accept(&settings.pki_dir, &ids, &keys.public_pem)?;
        tracing::info!(count = ids.len(), pki_dir = %settings.pki_dir.display(), "keys accepted");
    }
    let host = settings.options.connect_host.clone();
    let publish_host = tokio::net::lookup_host((host.as_str(), settings.publish_port))
        .await
        .map_err(|e| format!("resolving the master {host}: {e}"))?
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4())
        .ok_or_else(|| format!("the master {host} has no IPv4 address"))?;
    let bind_source = publish_host.is_loopback();
    if !bind_source {
        tracing::warn!(%publish_host, "master not on loopback: minions connect from the host's own address");
    }
    let timeout = Duration::from_secs(60);
    let pool = channel::ReqPool::new(
        &host,
        settings.options.ret_port,
        cli.req_connections,
        Duration::from_secs(10),
    );
    let latency = knobs::Latency::parse(&cli.latency)?;
    let sign_key = match &settings.sign_key_path {
        Some(path) => {
            let pem =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(crypt::parse_public_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let swarm = Arc::new(Swarm {
        master: auth::Master::new(pool, keys, timeout, sign_key),
        grains: grains::Grains::new(&cli.salt_version),
        publish_host,
        publish_port: AtomicU16::new(settings.publish_port),
        bind_source,
        zmq_filtering: settings.zmq_filtering,
        latency,
        return_size: cli.return_size,
        salt_version: cli.salt_version.clone(),
        startups: Semaphore::new(cli.signin_concurrency.max(1)),
        flap: Flap {
            every: cli.flap_every,
            down: cli.flap_down,
        },
        up: AtomicUsize::new(0),
        up_changed: Notify::new(),
        connect_timeout: Duration::from_secs(10),
    });
    let mut silent = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let index = i as u32 + 1;
        let is_silent = knobs::picked(index, cli.silent);
        if is_silent {
            silent.push(id.clone());
        }
        let m = Arc::new(Minion::new(
            index,
            minion::address(index.saturating_add(cli.address_offset)),
            id,
            is_silent,
            knobs::picked(index, cli.flap),
        ));
        tokio::spawn(minion::run(swarm.clone(), m));
    }
    if !silent.is_empty() {
        tracing::info!(count = silent.len(), minions = %silent.join(","), "silent minions");
    }
    let started = tokio::time::Instant::now();
    let count = cli.count as usize;
    let all_up = async {
        loop {
            let notified = swarm.up_changed.notified();
            if swarm.up.load(Ordering::SeqCst) >= count {
                return;
            }
            notified.await;
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = all_up => {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_zero_padded_to_the_count() {
        assert_eq!(
            minion_ids("swarm-", 3),
            vec!["swarm-1", "swarm-2", "swarm-3"]
        );
        let ids = minion_ids("m", 50);
        assert_eq!((ids[0].as_str(), ids[49].as_str()), ("m01", "m50"));
        assert_eq!(minion_ids("x-", 10000)[41], "x-00042");
    }

    #[test]
    fn percentages() {
        assert_eq!(percent("10"), Ok(10.0));
        assert_eq!(percent("2.5%"), Ok(2.5));
        assert!(percent("101").is_err());
        assert!(percent("x").is_err());
    }
}
