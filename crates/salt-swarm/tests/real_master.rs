//! salt-swarm against a real, unmodified Salt master: `scripts/saltstack.py` starts one with
//! no minions and `auto_accept: False` (so the swarm's `--accept` is what lets the minions
//! in), the `salt-swarm` binary runs 50 minions of which 10 % are silent, and Salt's own CLI
//! (`salt`, `salt-run`) checks what they answer: every non-silent minion and no silent one,
//! grain and compound targeting resolved by the master's data cache and the minions'
//! matchers, returns in the job cache, an unknown function's answer, every minion answering
//! again after a master restart (new AES key: one new sign-in for the swarm), and a clean
//! SIGTERM.
//!
//! The stack's watchdog (`--watch-pid`) stops the master and removes its root when this test
//! process exits.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> PathBuf {
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
            "{cmd:?} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The project's Salt venv (`scripts/salt-venv`, which honours `BRINE_VENV`).
fn venv() -> PathBuf {
    let out = run(Command::new(repo().join("scripts/salt-venv")).stderr(Stdio::inherit()));
    PathBuf::from(out.trim().lines().last().unwrap_or("").trim())
}

/// The first JSON value in a command's output (Salt may log after it).
fn first_json(out: &str) -> Value {
    let start = out.find(['{', '[']).unwrap_or(0);
    serde_json::Deserializer::from_str(&out[start..])
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON in {out:?}"))
}

/// The swarm process, stopped when dropped (if the test failed before it stopped it).
struct SwarmProcess(Child);

impl Drop for SwarmProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ids(indices: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    indices
        .into_iter()
        .map(|i| format!("swarm-{i:02}"))
        .collect()
}

#[test]
fn fifty_minions_answer_salts_own_cli() {
    let venv = venv();
    let root = std::env::temp_dir().join(format!("salt-swarm-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new(venv.join("bin/python"))
        .arg(repo().join("scripts/saltstack.py"))
        .args(["start", "--root"])
        .arg(&root)
        .args(["--minions", "0", "--remove-root", "--watch-pid"])
        .arg(std::process::id().to_string())
        .args(["--extra-config", "auto_accept: False"])
        .stderr(Stdio::inherit()));
    let config_dir = root.join("etc/salt");

    let mut child = Command::new(env!("CARGO_BIN_EXE_salt-swarm"))
        .arg("--config-dir")
        .arg(&config_dir)
        .args(["--count", "50", "--accept", "--silent", "10"])
        .arg("--state-dir")
        .arg(root.join("swarm-state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start salt-swarm");
    let stdout = child.stdout.take();
    let mut swarm = SwarmProcess(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(out) = stdout {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("no line from salt-swarm");
    assert_eq!(line, "salt-swarm: 50 minions up");

    let silent = ids([10, 20, 30, 40, 50]);
    let all = ids(1..=50);
    let answering: BTreeSet<String> = all.difference(&silent).cloned().collect();
    let salt = |args: &[&str]| -> Value {
        first_json(&run(Command::new(venv.join("bin/salt"))
            .arg("-c")
            .arg(&config_dir)
            .args(args)
            .args(["--out", "json", "--static"])))
    };

    // Every key was accepted by --accept (the master does not auto-accept here).
    let keys = first_json(&run(Command::new(venv.join("bin/salt-key"))
        .arg("-c")
        .arg(&config_dir)
        .args(["-L", "--out", "json"])));
    let accepted: BTreeSet<String> = keys["minions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(accepted, all);

    // test.ping: the 45 answering minions, all true; the silent ones absent.
    let pings = salt(&["*", "test.ping", "-t", "10"]);
    let answered: BTreeSet<String> = pings
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(answered, answering);
    assert!(pings
        .as_object()
        .is_some_and(|m| m.values().all(|v| *v == Value::Bool(true))));

    // Grain targeting: the master picks minions from its data cache (the grains each minion
    // sent with its pillar request), the minions check again. Minion n runs flavour
    // (n - 1) % 4; SUSE is flavour 3: minions 4, 8, ..., 48, of which 20 and 40 are silent.
    let suse = salt(&["-G", "os:SUSE", "test.ping", "-t", "10"]);
    let got: BTreeSet<String> = suse
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let want: BTreeSet<String> = ids((4..=48).step_by(4))
        .difference(&silent)
        .cloned()
        .collect();
    assert_eq!(got, want);

    // Compound: RedHat family (Rocky, flavour 2: minions 3, 7, 11, ...) and a regex on ids.
    let compound = salt(&[
        "-C",
        "G@os_family:RedHat and E@swarm-0[0-9]",
        "test.echo",
        "hello",
    ]);
    assert_eq!(
        compound,
        serde_json::json!({"swarm-03": "hello", "swarm-07": "hello"})
    );

    // An unknown function answers as a real minion without that module does.
    let nope = salt(&["swarm-01", "nope.nope"]);
    assert_eq!(
        nope,
        serde_json::json!({"swarm-01": "'nope.nope' is not available."})
    );

    // The job cache has every return of an asynchronous job.
    let out = run(Command::new(venv.join("bin/salt"))
        .arg("-c")
        .arg(&config_dir)
        .args(["*", "test.echo", "cached", "--async"]));
    let jid = out.split_whitespace().last().unwrap_or_default().to_owned();
    assert!(
        jid.len() == 20 && jid.chars().all(|c| c.is_ascii_digit()),
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let looked_up = loop {
        let v = first_json(&run(Command::new(venv.join("bin/salt-run"))
            .arg("-c")
            .arg(&config_dir)
            .args(["jobs.lookup_jid", &jid, "--out", "json"])));
        let n = v.as_object().map_or(0, |m| m.len());
        if n >= answering.len() || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let returned: BTreeSet<String> = looked_up
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(returned, answering);
    assert!(looked_up
        .as_object()
        .is_some_and(|m| m.values().all(|v| v == "cached")));

    // A master restart: new AES key, publish connections dropped. The minions reconnect,
    // fail to decrypt the next publish, sign in again (once for the swarm) and answer.
    for step in ["stop-master", "start-master"] {
        run(Command::new(venv.join("bin/python"))
            .arg(repo().join("scripts/saltstack.py"))
            .args([step, "--root"])
            .arg(&root)
            .stderr(Stdio::inherit()));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let after_restart = loop {
        let got: BTreeSet<String> = salt(&["*", "test.ping", "-t", "10"])
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if got == answering || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(after_restart, answering);

    // SIGTERM ends it with status 0.
    run(Command::new("kill").args(["-TERM", &swarm.0.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match swarm.0.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => break None,
        }
    };
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
