//! The Salt stack of a test binary: a master and minions (and the reference salt-api when
//! asked), started once by `scripts/saltstack.py` on free ports under a temp dir, with Brine
//! in front of the same master; its options, its stack script and its test credentials.
//!
//! Teardown is by PID: the stack script's watchdog stops every process of the stack (Brine
//! included, through `pids/brine.pid`) once this test process exits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde_json::{json, Value};

/// A running stack.
pub struct Stack {
    /// Root directory of the stack.
    pub root: PathBuf,
    /// `stack.json` as written by the stack script.
    pub info: Value,
    /// Brine's base URL.
    pub brine: String,
    /// The reference rest_cherrypy's base URL (if started).
    pub cherry: String,
    /// The Salt venv.
    pub venv: PathBuf,
    /// Brine's process.
    pub brine_child: Mutex<Option<Child>>,
    /// Brine's `-l` level.
    pub brine_log_level: &'static str,
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The project venv (created by `scripts/salt-venv` if needed).
pub fn venv() -> PathBuf {
    let out = run(Command::new(repo().join("scripts/salt-venv")).stderr(Stdio::inherit()));
    PathBuf::from(out.trim().lines().last().unwrap_or("").trim())
}

/// Options of a stack.
pub struct StackOpts {
    /// Minions to start.
    pub minions: usize,
    /// Also start the reference rest_cherrypy.
    pub reference: bool,
    /// Extra master options (a YAML mapping) that replace generated ones.
    pub extra_config: &'static str,
    /// `transport` of the master (`zeromq` or `tcp`).
    pub transport: &'static str,
    /// `ipc_mode` of the master (`ipc` or `tcp`).
    pub ipc_mode: &'static str,
    /// Options merged into the `rest_cherrypy` block (YAML mapping), for Brine and the
    /// reference alike.
    pub rest_extra: String,
    /// Brine's `-l` level.
    pub brine_log_level: &'static str,
    /// Minion options (a YAML mapping) that replace generated ones.
    pub minion_extra: &'static str,
    /// How much nicer the master and minions run (`saltstack.py --salt-nice`): 0 is the
    /// scheduler's default, an equal share for every session.
    pub salt_nice: u8,
}

impl Default for StackOpts {
    fn default() -> Self {
        StackOpts {
            minions: 2,
            reference: true,
            extra_config: "",
            transport: "zeromq",
            ipc_mode: "ipc",
            rest_extra: String::new(),
            brine_log_level: "debug",
            minion_extra: "",
            salt_nice: 0,
        }
    }
}

pub(super) static STACK: OnceLock<Stack> = OnceLock::new();

/// The stack of this test binary, started on first use.
pub fn stack() -> &'static Stack {
    stack_with(StackOpts::default())
}

/// The stack of this test binary with specific options (the first caller's options win).
pub fn stack_with(opts: StackOpts) -> &'static Stack {
    STACK.get_or_init(|| start(opts))
}

fn start(opts: StackOpts) -> Stack {
    let venv = venv();
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into());
    let short: String = name.chars().take(12).collect();
    let root = std::env::temp_dir().join(format!("brine-{short}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let started = Instant::now();
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(repo().join("scripts/saltstack.py"))
        .args(["start", "--root"])
        .arg(&root)
        .args(["--minions", &opts.minions.to_string()])
        .args(["--transport", opts.transport, "--ipc-mode", opts.ipc_mode])
        .args(["--watch-pid", &std::process::id().to_string()]);
    // The stack lives in a static, which is never dropped: its watchdog deletes the root when
    // this test binary exits, unless BRINE_KEEP_STACK asks to keep it (logs for a post-mortem).
    if std::env::var_os("BRINE_KEEP_STACK").is_none() {
        cmd.arg("--remove-root");
    }
    if opts.reference {
        cmd.args(["--reference", "cherrypy"]);
    }
    if opts.salt_nice > 0 {
        cmd.args(["--salt-nice", &opts.salt_nice.to_string()]);
    }
    // Differential tests send many refused logins on purpose; Brine's login throttle (which
    // rest_cherrypy does not have) would turn the later ones into 429s. Its own tests
    // (security.rs) configure it explicitly.
    let mut extra = opts.extra_config.to_owned();
    if !extra.contains("brine:") {
        extra.push_str("\nbrine: {login_rate_limit: 0}");
    }
    cmd.args(["--extra-config", extra.trim_start()]);
    if !opts.rest_extra.is_empty() {
        cmd.args(["--rest-extra", &opts.rest_extra]);
    }
    if !opts.minion_extra.is_empty() {
        cmd.args(["--minion-extra", opts.minion_extra]);
    }
    cmd.stderr(Stdio::inherit());
    run(&mut cmd);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("stack.json")).unwrap_or_default())
            .expect("stack.json");
    let brine_port = info["brine_port"].as_u64().unwrap_or(0);
    let cherry_port = info["cherrypy_port"].as_u64().unwrap_or(0);
    let scheme = if opts.rest_extra.contains("disable_ssl: false") {
        "https"
    } else {
        "http"
    };
    let stack = Stack {
        brine: format!("{scheme}://127.0.0.1:{brine_port}"),
        cherry: format!("{scheme}://127.0.0.1:{cherry_port}"),
        root,
        info,
        venv,
        brine_child: Mutex::new(None),
        brine_log_level: opts.brine_log_level,
    };
    stack.start_brine();
    if opts.reference {
        stack.warm_up_reference();
    }
    eprintln!(
        "test stack ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    stack
}

impl Stack {
    /// The master config directory.
    pub fn config_dir(&self) -> PathBuf {
        PathBuf::from(self.info["config_dir"].as_str().unwrap_or(""))
    }

    /// The minion ids.
    pub fn minions(&self) -> Vec<String> {
        self.info["minions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs the stack script with a subcommand (`stop-master`, `start-master`, ...).
    pub fn script(&self, sub: &str) {
        run(Command::new(self.venv.join("bin/python"))
            .arg(repo().join("scripts/saltstack.py"))
            .arg(sub)
            .arg("--root")
            .arg(&self.root)
            .stderr(Stdio::inherit()));
    }

    /// The eauth credentials of the full-rights test user.
    pub fn creds(&self) -> Value {
        json!({"username": "saltdev", "password": "saltdev", "eauth": "auto"})
    }
}
