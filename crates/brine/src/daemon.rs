//! `-d/--daemon`, as salt-api's (Salt's `daemonize`): the command returns 0 once the daemon
//! serves; the daemon runs in a session of its own, in `/`, with stdin, stdout and stderr on
//! `/dev/null`, and `--pid-file` holds its process id.
//!
//! Without `fork` (unsafe code is forbidden here), the command starts its own executable again
//! with the same arguments, marked as the daemon by [`CHILD_ENV`], stdin and stdout on
//! `/dev/null` and stderr on a pipe back to the command. The daemon starts a new session
//! ([`new_session`]) first thing; once it listens it writes [`READY`] through its console log
//! (after every line logged before it), and the console's writer thread then points stderr at
//! `/dev/null` ([`detach_stderr`]). The command copies to its own stderr what comes before
//! [`READY`] (startup warnings, or the error that stopped the daemon) and exits 0 at
//! [`READY`], or with the daemon's status when the pipe closes without it. Both check the
//! configuration the same way (the command does before it starts the daemon, so a bad one is
//! reported as without `-d`); both work in `/`, with the command line's paths made absolute
//! first ([`leave_cwd`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use crate::cli::Cli;

/// Set in the daemon's environment by the command that starts it.
pub const CHILD_ENV: &str = "BRINE_DAEMON_CHILD";

/// The line the daemon writes to the command once it listens (no log line starts with NUL).
pub const READY: &[u8] = b"\0brine: ready\n";

/// Whether this process is the daemon started by `brine -d`.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Leaves the command's session (and its terminal): the daemon's first step.
pub fn new_session() -> std::io::Result<()> {
    rustix::process::setsid()?;
    Ok(())
}

/// Makes the command line's paths absolute (against the current directory) and moves to `/`,
/// so that a daemon holds no directory busy and reads the configuration's own relative paths
/// from `/`, as salt-api's does.
pub fn leave_cwd(cli: &mut Cli) -> Result<(), String> {
    let absolute = |p: &Path| -> Result<PathBuf, String> {
        std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    cli.config_dir = absolute(&cli.config_dir)?;
    for p in [&mut cli.pid_file, &mut cli.log_file].into_iter().flatten() {
        *p = absolute(p)?;
    }
    std::env::set_current_dir("/").map_err(|e| format!("cannot change to /: {e}"))
}

/// Points stderr at `/dev/null` (the daemon, once [`READY`] is written; stdin and stdout are
/// there from the start). Errors are ignored: there is nowhere left to report them.
pub fn detach_stderr() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

/// Starts the daemon and waits until it is ready or has stopped (the command's side). `cwd`:
/// where the command was started, for the daemon to read the same relative paths.
pub fn start(cwd: Option<&Path>) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("brine: -d: cannot find the brine executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("brine: -d: cannot start {}: {e}", exe.display());
            return ExitCode::FAILURE;
        }
    };
    let mut said = false;
    if let Some(pipe) = child.stderr.take() {
        let mut pipe = BufReader::new(pipe);
        let mut line = Vec::new();
        let mut stderr = std::io::stderr();
        loop {
            line.clear();
            match pipe.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line == READY => return ExitCode::SUCCESS,
                Ok(_) => {
                    let _ = stderr.write_all(&line);
                    said = true;
                }
            }
        }
    }
    // The pipe closed without the ready line: the daemon stopped while starting.
    let status = child.wait();
    let code = match &status {
        Ok(s) => s
            .code()
            .filter(|c| *c != 0)
            .and_then(|c| u8::try_from(c).ok()),
        Err(_) => None,
    };
    if !said {
        match status {
            Ok(s) => eprintln!("brine: -d: the daemon stopped while starting ({s})"),
            Err(e) => eprintln!("brine: -d: the daemon stopped while starting: {e}"),
        }
    }
    code.map_or(ExitCode::FAILURE, ExitCode::from)
}
