//! `brine`: reads the master's configuration, connects to the master (request pool + one event
//! bus subscription) and serves the salt-api HTTP interface. This file only wires the pieces;
//! each concern lives in its own module.

#![forbid(unsafe_code)]

mod app;
mod audit;
mod auth;
mod check;
mod cli;
mod clients;
mod coalesce;
mod cpstats;
mod daemon;
mod error;
mod events;
mod follow;
mod http;
mod jid;
mod job_feed;
mod jobs;
mod logging;
mod lowstate;
mod master;
mod py;
mod runtime;
mod settings;
mod stats;
mod stream;
mod throttle;
mod tls;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use salt_wire::config::MasterConfig;

use crate::app::App;

/// jemalloc with its background purging threads: memory freed after a load (thousands of
/// closed connections) goes back to the operating system within seconds, where glibc's malloc
/// keeps it in its arenas for the life of the process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use crate::settings::{LogOptions, Overrides, Settings};

fn main() -> ExitCode {
    // Purge freed pages in the background (jemalloc's default decay, about 10 s), also while
    // the process is idle.
    let purging = tikv_jemalloc_ctl::background_thread::write(true);
    let mut cli = cli::Cli::parse();
    // `-d`: this process is either the command, which starts the daemon and waits for it, or
    // the daemon it started (daemon.rs).
    let daemon_child = daemon::is_child();
    if daemon_child {
        if let Err(e) = daemon::new_session() {
            eprintln!("brine: -d: cannot start a new session: {e}");
            return ExitCode::FAILURE;
        }
    }
    let daemonize = cli.daemon && cli.command.is_none();
    let started_in = std::env::current_dir().ok();
    if daemonize {
        if let Err(e) = daemon::leave_cwd(&mut cli) {
            eprintln!("brine: -d: {e}");
            return ExitCode::from(2);
        }
    }
    let config_file = cli.config_dir.join("master");
    let cfg = match MasterConfig::load(&config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("brine: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let over = Overrides {
        host: cli.host,
        port: cli.port,
    };
    if let Some(cli::Command::CheckConfig) = cli.command {
        return check::run(&cfg, &over);
    }
    if daemonize && !daemon_child {
        // A bad configuration is reported here, on the terminal, before any daemon starts;
        // what only the daemon meets (a log file, the certificate, the port) comes back
        // through daemon::start.
        if let Err(e) = Settings::from_config(&cfg, &over) {
            eprintln!("brine: configuration error: {e}");
            return ExitCode::from(2);
        }
        return daemon::start(started_in.as_deref());
    }
    let log = LogOptions::from_config(&cfg);
    let logging = match logging::init(
        &cli,
        log.debug,
        logging::Files {
            error: log.error_file.as_deref(),
            audit: log.audit_file.as_deref(),
        },
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("brine: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = purging {
        tracing::warn!("jemalloc background purging is off: {e}");
    }
    let settings = match Settings::from_config(&cfg, &over) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("brine: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(pid_file) = &cli.pid_file {
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            tracing::error!("--pid-file {}: {e}", pid_file.display());
            return ExitCode::from(2);
        }
    }
    // Every stream is a socket: use the hard limit on open files, not the soft default.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open files limit"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    // Event streams run on their own threads (http/server.rs says why).
    let (runtime, streams) = match (
        runtime::new_runtime("tokio-runtime-worker", 0),
        runtime::new_runtime("brine-streams", runtime::STREAMS_NICENESS),
    ) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ready = || {
        if daemon_child {
            logging.daemon_ready();
        }
    };
    let code = runtime.block_on(run(
        settings,
        logging.files(),
        streams.handle().clone(),
        ready,
    ));
    streams.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Some(pid_file) = &cli.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    code
}

/// Serves until SIGTERM or SIGINT; `ready` is called once Brine listens.
async fn run(
    settings: Settings,
    log_files: Vec<Arc<logging::LogFile>>,
    streams: tokio::runtime::Handle,
    ready: impl FnOnce(),
) -> ExitCode {
    let tls = if settings.rest.disable_ssl {
        None
    } else {
        let (Some(crt), Some(key)) = (&settings.rest.ssl_crt, &settings.rest.ssl_key) else {
            tracing::error!("ssl_crt and ssl_key are required unless disable_ssl is true");
            return ExitCode::from(2);
        };
        match tls::acceptor(crt, key, settings.rest.ssl_chain.as_deref()) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!("TLS configuration: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let addr = SocketAddr::new(settings.rest.host, settings.rest.port);
    let listener = match http::server::bind(addr, settings.rest.listen_backlog) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let access_log = match &settings.rest.log_access_file {
        None => None,
        Some(path) => match http::access_log::AccessLog::open(path).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!("log_access_file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let app = App::start(settings.clone());
    tracing::info!(
        address = %addr,
        tls = tls.is_some(),
        master = %format!("{}:{}", settings.master.connect_host, settings.master.ret_port),
        config = %settings.config_file.display(),
        audit = %settings
            .brine
            .audit_log_file
            .as_deref()
            .map_or_else(|| "with the other logs".into(), |p| p.display().to_string()),
        "Brine {} listening", env!("CARGO_PKG_VERSION")
    );
    let reopen_access_log = access_log.clone();
    logging::reopen_on_sighup(log_files, move || {
        if let Some(a) = &reopen_access_log {
            a.reopen();
        }
    });
    ready();
    // The accept loop is a task of the runtime, not the future `main` blocks on: a new
    // connection is then taken by whichever worker is already running, instead of waiting
    // for the main thread to be woken and given a CPU.
    let edge = Arc::new(http::Edge { app, access_log });
    let served = tokio::spawn(http::serve(edge, listener, tls, streams, shutdown_signal()));
    if let Err(e) = served.await {
        tracing::error!("the server stopped abnormally: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}
