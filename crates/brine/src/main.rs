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
mod feed;
mod formatted;
mod http;
mod hub;
mod jid;
mod logging;
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

use crate::app::App;

/// jemalloc with its background purging threads: memory freed after a load (thousands of
/// closed connections) goes back to the operating system within seconds, where glibc's malloc
/// keeps it in its arenas for the life of the process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use crate::auth::Auth;
use crate::hub::Hub;
use crate::master::Master;
use crate::settings::{Overrides, Settings};

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
    // `rest_cherrypy.debug` raises the log level; peek at it before logging starts so that
    // every note about the configuration is logged once, at the right level.
    let debug = cfg
        .get("rest_cherrypy")
        .and_then(|b| b.get("debug"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let file_option = |block: &str, key: &str| {
        cfg.get(block)
            .and_then(|b| b.get(key))
            .and_then(serde_json::Value::as_str)
            .map(std::path::PathBuf::from)
    };
    let error_file = file_option("rest_cherrypy", "log_error_file");
    let audit_file = file_option("brine", "audit_log_file");
    let logging = match logging::init(
        &cli,
        debug,
        logging::Files {
            error: error_file.as_deref(),
            audit: audit_file.as_deref(),
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
        new_runtime("tokio-runtime-worker", 0),
        new_runtime("brine-streams", STREAMS_NICENESS),
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

/// How much nicer than the rest of Brine the streams runtime's threads run. Fanning an
/// event out to thousands of streams is a burst of socket writes that can take every CPU;
/// with the kernel preferring the request threads, `/stats`, `/login` and `/run` are answered
/// first and the streams catch up from their buffers (each stream is bounded by
/// `stream_buffer` and `stream_buffer_bytes`). Lowering one's own threads' priority needs no
/// privilege.
const STREAMS_NICENESS: i32 = 5;

/// A multi-threaded runtime whose worker threads are called `name` and run `nicer` steps
/// nicer than the thread that starts them.
fn new_runtime(name: &str, nicer: i32) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.thread_name(name).enable_all();
    if nicer != 0 {
        let name = name.to_owned();
        builder.on_thread_start(move || {
            if let Err(e) = lower_priority(nicer) {
                tracing::warn!("cannot lower the priority of a {name} thread: {e}");
            }
        });
    }
    builder.build()
}

/// Raises the calling thread's nice value by `nicer` (on Linux, `setpriority` on a thread id
/// changes that thread alone; threads started by it inherit the new value).
fn lower_priority(nicer: i32) -> rustix::io::Result<()> {
    let me = Some(rustix::thread::gettid());
    let now = rustix::process::getpriority_process(me)?;
    rustix::process::setpriority_process(me, (now + nicer).min(19))
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
        match http::server::tls_acceptor(crt, key, settings.rest.ssl_chain.as_deref()) {
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
    hub.feed().set_max_age(settings.brine.event_ring_seconds);
    if !settings.brine.event_ring_seconds.is_zero() {
        // Ages kept events out while the bus is quiet too.
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                hub.feed().expire();
            }
        });
    }
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
        runner_functions: Default::default(),
        me: me.clone(),
        stopping: tokio_util::sync::CancellationToken::new(),
    });
    tokio::spawn(hub.clone().run(bus));
    // Revocations announced by any Brine instance on this master.
    {
        let app = app.clone();
        let mut rx = hub.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    // Only a revocation's data is parsed back from its frame.
                    Ok(ev) if ev.tag() == auth::REVOKE_TAG => {
                        app.auth.on_event(ev.tag(), &ev.event().data)
                    }
                    Ok(_) => {}
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
        audit = %settings
            .brine
            .audit_log_file
            .as_deref()
            .map_or_else(|| "with the other logs".into(), |p| p.display().to_string()),
        "Brine {} listening", env!("CARGO_PKG_VERSION")
    );
    reopen_on_sighup(log_files, app.access_log.clone());
    ready();
    // The accept loop is a task of the runtime, not the future `main` blocks on: a new
    // connection is then taken by whichever worker is already running, instead of waiting
    // for the main thread to be woken and given a CPU. Under load that wait was the longest
    // part of a `/stats` call (66 ms in one run, with the CPU the main thread had last run on
    // busy with the master).
    let served = tokio::spawn(http::serve(app, listener, tls, streams, shutdown_signal()));
    if let Err(e) = served.await {
        tracing::error!("the server stopped abnormally: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGHUP reopens the log files (after logrotate moved them), the access log included.
fn reopen_on_sighup(
    files: Vec<Arc<logging::LogFile>>,
    access_log: Option<http::access_log::AccessLog>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reopening log files");
            logging::reopen(&files);
            if let Some(a) = &access_log {
                a.reopen();
            }
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn my_niceness() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(i32::MIN)
    }

    #[test]
    fn the_streams_runtime_runs_nicer_than_the_thread_that_built_it() {
        // Built from a fresh thread, so that the test runner's own threads keep their value.
        let seen = std::thread::spawn(|| {
            let mine = my_niceness();
            let rt = new_runtime("nicer-test", 3).ok()?;
            let theirs = rt.block_on(rt.spawn(async { my_niceness() })).ok()?;
            let plain = new_runtime("plain-test", 0).ok()?;
            let plain = plain.block_on(plain.spawn(async { my_niceness() })).ok()?;
            Some((mine, theirs, plain))
        })
        .join()
        .ok()
        .flatten();
        let Some((mine, theirs, plain)) = seen else {
            panic!("no runtime");
        };
        assert!(mine > i32::MIN && mine <= 16, "niceness {mine}");
        assert_eq!(theirs, mine + 3);
        assert_eq!(plain, mine);
    }
}
