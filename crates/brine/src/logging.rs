//! Logging: salt-api's levels (`-l`, `--log-file-level`) on `tracing`, as text or JSON lines
//! (`--log-format`), to the console, the `--log-file`, `rest_cherrypy.log_error_file` (errors
//! only) and `brine.audit_log_file` (the audit trail only, see [`crate::audit`]).
//!
//! Log files are opened in append mode and can be reopened (SIGHUP, after logrotate moved
//! them): every file writer goes through a [`LogFile`], whose handle is swapped in place.
//!
//! No request thread writes a log line itself: every sink (the console too, which under
//! systemd is a pipe to journald) is fed through a bounded queue of [`QUEUED_LINES`] lines to
//! a writer thread of its own (`tracing-appender`'s non-blocking writer). A slow disk or a
//! busy journald holds up the writer thread, not the answers; only when a sink is that many
//! lines behind does logging wait for it, so no line is ever dropped (the audit trail least
//! of all). The queues are flushed when [`Logging`] is dropped, at the end of `main`.
//!
//! The console's queue also carries a daemon's ready line ([`Logging::daemon_ready`]), so that
//! the command waiting for it has read every line logged before.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Layer, Registry};

use crate::cli::{self, LogFormat};

/// A log file that can be reopened at its path.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl LogFile {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path) -> std::io::Result<Arc<LogFile>> {
        Ok(Arc::new(LogFile {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
        }))
    }

    /// Opens the path again (a rotated file is let go); on failure the old handle stays.
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = open_append(&self.path)?;
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        *f = fresh;
        Ok(())
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The writes of a sink's writer thread to a [`LogFile`] (the lock is shared with
/// [`LogFile::reopen`] only).
struct LogFileWriter(Arc<LogFile>);

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut f = self.0.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut f = self.0.file.lock().unwrap_or_else(|p| p.into_inner());
        f.flush()
    }
}

/// The console: stderr, which a daemon leaves for `/dev/null` right after writing its ready
/// line (see [`crate::daemon`]).
struct Console;

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf == crate::daemon::READY {
            // Whether the command still reads or not, the daemon is on its own from here.
            let _ = std::io::stderr().write_all(buf);
            crate::daemon::detach_stderr();
            return Ok(buf.len());
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How many lines a sink's queue holds before logging waits for its writer thread: some
/// megabytes of lines, seconds of a busy daemon's logging at `debug`.
pub const QUEUED_LINES: usize = 16_384;

/// A sink's queue to its own writer thread, and the guard that flushes it when dropped.
fn queued<W: Write + Send + 'static>(writer: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("brine-log")
        .finish(writer)
}

/// Running logging: the files (to reopen on SIGHUP) and the sinks' queues, which are flushed
/// when this is dropped.
pub struct Logging {
    files: Vec<Arc<LogFile>>,
    console: NonBlocking,
    _queues: Vec<WorkerGuard>,
}

impl Logging {
    /// A daemon listens: tells the command that started it, after every line logged so far,
    /// and leaves stderr (see [`crate::daemon`]).
    pub fn daemon_ready(&self) {
        let _ = self.console.clone().write_all(crate::daemon::READY);
    }

    /// The log files, for [`reopen`].
    pub fn files(&self) -> Vec<Arc<LogFile>> {
        self.files.clone()
    }
}

/// The filter of a sink at a salt-api level: Brine's own targets at that level, third-party
/// crates at `warn` (unless `trace` is asked for), the audit trail not at all (it has its own
/// file, and is an `info` line of every command otherwise).
fn filter(level: &str, audit_too: bool) -> EnvFilter {
    let deps = if level == "trace" { "trace" } else { "warn" };
    let audit = if audit_too { level } else { "off" };
    EnvFilter::new(format!(
        "{deps},brine={level},salt_wire={level},brine::audit={audit}"
    ))
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

fn fmt_layer<W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    }
}

/// The files to log to besides the console.
pub struct Files<'a> {
    /// `rest_cherrypy.log_error_file`: error lines.
    pub error: Option<&'a Path>,
    /// `brine.audit_log_file`: audit lines only.
    pub audit: Option<&'a Path>,
}

/// Starts logging; the answer must live until the end of `main`, so that the last lines are
/// written.
pub fn init(cli: &cli::Cli, debug: bool, files: Files<'_>) -> Result<Logging, String> {
    let console = cli::tracing_level(&cli.log_level)
        .ok_or_else(|| format!("--log-level: unknown level {:?}", cli.log_level))?;
    let console = if debug && console != "trace" {
        "debug"
    } else {
        console
    };
    let format = cli.log_format;
    let mut opened = Vec::new();
    let mut queues = Vec::new();
    let mut layers: Vec<Boxed> = Vec::new();
    let ansi = format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (stderr, guard) = queued(Console);
    let console_queue = stderr.clone();
    queues.push(guard);
    layers.push(
        fmt_layer(format, stderr, ansi)
            .with_filter(filter(console, files.audit.is_none()))
            .boxed(),
    );
    // Each file sink: (path, the option that named it, its filter).
    let mut sinks: Vec<(&Path, &str, EnvFilter)> = Vec::new();
    if let Some(path) = &cli.log_file {
        let level = cli::tracing_level(&cli.log_file_level)
            .ok_or_else(|| format!("--log-file-level: unknown level {:?}", cli.log_file_level))?;
        sinks.push((path, "--log-file", filter(level, files.audit.is_none())));
    }
    if let Some(path) = files.error {
        sinks.push((
            path,
            "rest_cherrypy.log_error_file",
            EnvFilter::new("error,brine::audit=off"),
        ));
    }
    if let Some(path) = files.audit {
        sinks.push((
            path,
            "brine.audit_log_file",
            EnvFilter::new("off,brine::audit=info"),
        ));
    }
    for (path, option, sink_filter) in sinks {
        let f = LogFile::open(path).map_err(|e| format!("{option} {}: {e}", path.display()))?;
        opened.push(f.clone());
        let (writer, guard) = queued(LogFileWriter(f));
        queues.push(guard);
        layers.push(
            fmt_layer(format, writer, false)
                .with_filter(sink_filter)
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Logging {
        files: opened,
        console: console_queue,
        _queues: queues,
    })
}

/// Reopens every log file (SIGHUP), logging what could not be reopened.
pub fn reopen(files: &[Arc<LogFile>]) {
    for f in files {
        match f.reopen() {
            Ok(()) => tracing::info!(file = %f.path().display(), "log file reopened"),
            Err(e) => tracing::error!(file = %f.path().display(), "cannot reopen log file: {e}"),
        }
    }
}

/// Reopens `files` on every SIGHUP (after logrotate moved them), and calls `also` for the log
/// files kept elsewhere (the HTTP access log).
pub fn reopen_on_sighup(files: Vec<Arc<LogFile>>, also: impl Fn() + Send + 'static) {
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
            reopen(&files);
            also();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_file_follows_its_path() {
        let dir = std::env::temp_dir().join(format!("brine-logfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("brine.log");
        let f = LogFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut w = LogFileWriter(f.clone());
        let _ = w.write_all(b"one\n");
        // logrotate moves the file away; the next lines go to a new file at the path.
        std::fs::rename(&path, dir.join("brine.log.1")).unwrap_or_else(|e| panic!("{e}"));
        f.reopen().unwrap_or_else(|e| panic!("{e}"));
        let _ = w.write_all(b"two\n");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(&dir.join("brine.log.1")), "one\n");
        assert_eq!(read(&path), "two\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A sink that cannot write (its disk stalled) until `open` is set, recording what it was
    /// given.
    struct Stalled {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !*open {
                open = cv.wait(open).unwrap_or_else(|p| p.into_inner());
            }
            self.got
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_holds_up_no_logging_thread_and_loses_no_line() {
        let open = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (writer, guard) = queued(Stalled {
            open: open.clone(),
            got: got.clone(),
        });
        // With the sink stalled, a thousand lines are queued without waiting for it (the
        // old writer wrote each line on the logging thread, and would block here forever).
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let logger = std::thread::spawn(move || {
            for i in 0..1000 {
                let _ = writer
                    .make_writer()
                    .write_all(format!("line {i}\n").as_bytes());
            }
            let _ = done_tx.send(());
        });
        let queued_in_time = done_rx.recv_timeout(std::time::Duration::from_secs(10));
        // The disk comes back; dropping the guard writes out what is queued, in order.
        {
            let (lock, cv) = &*open;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        let _ = logger.join();
        drop(guard);
        assert!(queued_in_time.is_ok(), "logging waited for a stalled sink");
        let text = String::from_utf8(got.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default();
        let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
    }
}
