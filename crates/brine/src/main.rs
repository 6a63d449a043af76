//! `brine`: reads the master's configuration, connects to the master (request pool + one event
//! bus subscription) and serves the salt-api HTTP interface. This file only wires the pieces;
//! each concern lives in its own module.

#![forbid(unsafe_code)]

mod app;
mod auth;
mod cli;
mod clients;
mod coalesce;
mod feed;
mod formatted;
mod http;
mod hub;
mod jid;
mod lowstate;
mod master;
mod settings;
mod stats;
mod streams;
mod throttle;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use salt_wire::config::MasterConfig;
use salt_wire::pool::MasterPool;
use tracing_subscriber::prelude::*;

use crate::app::App;
use crate::auth::Auth;
use crate::hub::Hub;
use crate::master::Master;
use crate::settings::{Overrides, Settings};

fn init_logging(
    cli: &cli::Cli,
    debug: bool,
    error_file: Option<&std::path::Path>,
) -> Result<(), String> {
    let console = cli::tracing_level(&cli.log_level)
        .ok_or_else(|| format!("--log-level: unknown level {:?}", cli.log_level))?;
    let console = if debug && console != "trace" {
        "debug"
    } else {
        console
    };
    // Third-party crates stay at warn unless trace is asked for.
    let filter = |level: &str| {
        let deps = if level == "trace" { "trace" } else { "warn" };
        tracing_subscriber::EnvFilter::new(format!(
            "{deps},brine={level},salt_wire={level},brine::access={}",
            if level == "off" { "off" } else { level }
        ))
    };
    let console_layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter(console));
    let file_layer = match &cli.log_file {
        Some(path) => {
            let level = cli::tracing_level(&cli.log_file_level).ok_or_else(|| {
                format!("--log-file-level: unknown level {:?}", cli.log_file_level)
            })?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--log-file {}: {e}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(filter(level)),
            )
        }
        None => None,
    };
    // `rest_cherrypy.log_error_file`: error lines also go there.
    let error_layer = match error_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("rest_cherrypy.log_error_file {}: {e}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(tracing_subscriber::EnvFilter::new("error")),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(console_layer)
        .with(file_layer)
        .with(error_layer)
        .try_init()
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
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
    // `rest_cherrypy.debug` raises the log level; peek at it before logging starts so that
    // every note about the configuration is logged once, at the right level.
    let debug = cfg
        .get("rest_cherrypy")
        .and_then(|b| b.get("debug"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let error_file = cfg
        .get("rest_cherrypy")
        .and_then(|b| b.get("log_error_file"))
        .and_then(serde_json::Value::as_str)
        .map(std::path::PathBuf::from);
    if let Err(e) = init_logging(&cli, debug, error_file.as_deref()) {
        eprintln!("brine: {e}");
        return ExitCode::from(2);
    }
    let settings = match Settings::from_config(&cfg, &over) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("brine: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.daemon {
        tracing::warn!("-d/--daemon: Brine stays in the foreground; let systemd or the init system supervise it");
    }
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(settings));
    if let Some(pid_file) = &cli.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    code
}

async fn run(settings: Settings) -> ExitCode {
    let tls = if settings.rest.disable_ssl {
        None
    } else {
        let (Some(crt), Some(key)) = (&settings.rest.ssl_crt, &settings.rest.ssl_key) else {
            tracing::error!("ssl_crt and ssl_key are required unless disable_ssl is true");
            return ExitCode::from(2);
        };
        match http::server::tls_acceptor(crt, key, settings.rest.ssl_chain.as_deref()) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!("TLS configuration: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let addr = SocketAddr::new(settings.rest.host, settings.rest.port);
    let listener = match http::server::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = Arc::new(settings.master.clone());
    let pool = MasterPool::new(opts.pool(
        settings.brine.pool_size,
        settings.brine.pool_queue,
        settings.brine.connect_timeout,
    ));
    let hub = Hub::new(
        settings.brine.event_ring,
        settings.brine.event_ring_bytes,
        settings.brine.stream_buffer,
    );
    let bus = opts.bus_pub();
    let stats = Arc::new(stats::Stats::default());
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
    let app = Arc::new_cyclic(|me| App {
        master: Master::new(pool, opts.clone(), stats.clone()),
        hub: hub.clone(),
        auth: Auth::new(settings.brine.token_cache),
        stats,
        access_log,
        throttle: throttle::LoginThrottle::new(
            settings.brine.login_rate_limit,
            settings.brine.login_burst,
            settings.brine.login_rate_limit_failures_only,
        ),
        settings: settings.clone(),
        connected_minions: coalesce::Coalescer::new(std::time::Duration::from_secs(1)),
        me: me.clone(),
    });
    tokio::spawn(hub.clone().run(bus));
    // Revocations announced by any Brine instance on this master.
    {
        let app = app.clone();
        let mut rx = hub.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => app.auth.on_event(&ev.event.tag, &ev.event.data),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "revocation listener fell behind the bus");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
    tracing::info!(
        address = %addr,
        tls = tls.is_some(),
        master = %format!("{}:{}", opts.connect_host, opts.ret_port),
        config = %settings.config_file.display(),
        "Brine {} listening", env!("CARGO_PKG_VERSION")
    );
    http::serve(app, listener, tls, shutdown_signal()).await;
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
