//! The real `pepper` client (PyPI `salt-pepper`) against Brine: the CLI with the `local`,
//! `local_async`, `runner` and `wheel` clients, and the `libpepper` library, each compared
//! with what the same client gets from the Python rest_cherrypy on the same master.

pub mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// Runs the pepper CLI against `base` (see [`common::pepper_cli`]); a failure fails the test.
fn pepper_ok(st: &Stack, base: &str, args: &[&str]) -> Value {
    pepper_cli(st, base, args)
        .unwrap_or_else(|e| panic!("pepper {args:?} against {base} failed: {e}"))
}

fn both_cli(st: &Stack, args: &[&str]) -> Value {
    let b = pepper_ok(st, &st.brine, args);
    let c = pepper_ok(st, &st.cherry, args);
    assert_eq!(
        normalize(&b),
        normalize(&c),
        "pepper {args:?}: Brine (left) and rest_cherrypy (right) differ"
    );
    b
}

#[test]
fn pepper_cli_local() {
    let st = stack();
    let out = both_cli(st, &["*", "test.ping"]);
    assert_eq!(out, json!({"m1": true, "m2": true}));
    let out = both_cli(st, &["m1", "test.arg", "a", "k=v"]);
    assert_eq!(out["m1"]["args"], json!(["a"]));
    assert_eq!(out["m1"]["kwargs"]["k"], json!("v"));
}

#[test]
fn pepper_cli_local_async() {
    let st = stack();
    let out = both_cli(st, &["--client", "local_async", "*", "test.ping"]);
    assert_eq!(out["minions"], json!(["m1", "m2"]));
    assert!(out["jid"].as_str().is_some_and(|j| j.len() == 20));
}

#[test]
fn pepper_cli_runner() {
    let st = stack();
    let out = both_cli(st, &["--client", "runner", "test.arg", "a", "k=1"]);
    assert_eq!(out, json!({"args": ["a"], "kwargs": {"k": 1}}));
}

/// pepper JSON-decodes `key=value` arguments, so a jid travels as a 20-digit JSON number:
/// it must reach the master with every digit, as the reference sends it.
#[test]
fn pepper_cli_lookup_jid_with_a_numeric_jid() {
    let st = stack();
    let started = pepper_ok(
        st,
        &st.brine,
        &["--client", "local_async", "*", "test.ping"],
    );
    let jid = started["jid"].as_str().unwrap_or_default().to_owned();
    assert_eq!(jid.len(), 20, "{started}");
    let arg = format!("jid={jid}");
    let args = ["--client", "runner", "jobs.lookup_jid", arg.as_str()];
    let want = json!({"m1": true, "m2": true});
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let c = pepper_ok(st, &st.cherry, &args);
        if c == want || std::time::Instant::now() > deadline {
            assert_eq!(c, want, "the reference's jobs.lookup_jid {jid}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        pepper_ok(st, &st.brine, &args),
        want,
        "jobs.lookup_jid {jid}"
    );
}

#[test]
fn pepper_cli_wheel() {
    let st = stack();
    let out = both_cli(st, &["--client", "wheel", "key.list_all"]);
    assert_eq!(out["minions"], json!(["m1", "m2"]));
}

#[test]
fn pepper_library() {
    let st = stack();
    let script = repo().join("crates/brine/tests/clients/pepper_lib.py");
    let run = |base: &str| -> Value {
        let out = Command::new(st.venv.join("bin/python"))
            .arg(&script)
            .arg(base)
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "pepper_lib.py against {base}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let b = run(&st.brine);
    let c = run(&st.cherry);
    assert_eq!(
        normalize(&b),
        normalize(&c),
        "libpepper: Brine (left) and rest_cherrypy (right) differ"
    );
    assert_eq!(b["local"]["return"][0], json!({"m1": true, "m2": true}));
    assert_eq!(
        b["runner"]["return"][0],
        json!({"args": ["r"], "kwargs": {"kw": "v"}})
    );
    assert_eq!(b["run_with_token"]["return"][0], json!({"m1": true}));
    assert_eq!(b["after_logout"], json!("PepperException"));
}
