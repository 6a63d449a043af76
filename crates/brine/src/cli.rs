//! Command line: the flags of Salt's `salt-api`, so Brine can stand in for it in init scripts
//! and unit files, plus `--host`/`--port` overrides for running beside the Python salt-api.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// How log lines are written.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message` and the fields).
    Json,
}

/// salt-api's log levels, mapped onto tracing levels.
pub fn tracing_level(level: &str) -> Option<&'static str> {
    Some(match level {
        "all" | "garbage" | "trace" => "trace",
        "debug" | "profile" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "quiet" => "off",
        _ => return None,
    })
}

/// Brine: a drop-in replacement for Salt's salt-api.
#[derive(Parser, Debug, Clone)]
#[command(name = "brine", version, about, long_about = None)]
pub struct Cli {
    /// Configuration directory; the file read is <DIR>/master (plus master.d/*.conf).
    #[arg(
        short = 'c',
        long = "config-dir",
        default_value = "/etc/salt",
        env = "SALT_CONFIG_DIR",
        global = true
    )]
    pub config_dir: PathBuf,

    /// Console log level: all, garbage, trace, debug, profile, info, warning, error, critical, quiet.
    #[arg(short = 'l', long = "log-level", default_value = "warning")]
    pub log_level: String,

    /// Also write the log to this file.
    #[arg(long = "log-file")]
    pub log_file: Option<PathBuf>,

    /// Level of the log file (as --log-level).
    #[arg(long = "log-file-level", default_value = "warning")]
    pub log_file_level: String,

    /// Format of every log line (console, --log-file, error and audit files).
    #[arg(long = "log-format", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Write the process id to this file.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,

    /// Run in the background, as salt-api does: returns once Brine serves (a bad configuration
    /// is reported first); the daemon leaves the terminal's session, works in /, and logs only
    /// to --log-file and the configured log files.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Accepted and ignored (salt-api's supervisor switch).
    #[arg(long = "disable-keepalive")]
    pub disable_keepalive: bool,

    /// Listen on this address instead of rest_cherrypy.host.
    #[arg(long = "host", global = true)]
    pub host: Option<IpAddr>,

    /// Listen on this port instead of rest_cherrypy.port.
    #[arg(long = "port", global = true)]
    pub port: Option<u16>,

    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands (without one, Brine serves).
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Read the configuration as the daemon would; print every option Brine honours with its
    /// value and file, warn about options it ignores; exit 2 if it could not start.
    CheckConfig,
}
