//! A real browser client: SaltGUI (../shared/clients/saltgui), served by Brine's `app` and
//! `static` options, driven in headless Chromium by `tests/browser/saltgui.mjs`: log in, the
//! minions page, `test.ping` from the command box, jobs, keys, a live event on the events page,
//! log out. Screenshots are kept in `target/test-artifacts/saltgui/`.
//!
//! `scripts/browser-deps` installs what it needs (Debian's chromium, npm playwright-core).
//! Where SaltGUI's copy is absent (`$BRINE_SALTGUI_DIR`, ../shared/clients beside the checkout,
//! or /work/shared/clients) the test says so loudly and does nothing else.

pub mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

/// SaltGUI's copy: `$BRINE_SALTGUI_DIR`, else `../shared/clients/saltgui` beside the checkout,
/// else `/work/shared/clients/saltgui` (where the project's shared files live).
fn saltgui_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BRINE_SALTGUI_DIR") {
        return PathBuf::from(d);
    }
    [
        repo().join("../shared/clients/saltgui"),
        PathBuf::from("/work/shared/clients/saltgui"),
    ]
    .into_iter()
    .find(|d| d.join("index.html").is_file())
    .unwrap_or_else(|| repo().join("../shared/clients/saltgui"))
}

#[test]
fn saltgui_in_headless_chromium() {
    let gui = saltgui_dir();
    let skipped = repo().join("target/test-artifacts/SKIPPED-saltgui");
    let _ = std::fs::remove_file(&skipped);
    if !gui.join("index.html").is_file() {
        // The test harness hides output of passing tests: leave a marker scripts/test reports.
        let _ = std::fs::create_dir_all(repo().join("target/test-artifacts"));
        let _ = std::fs::write(&skipped, format!("{} is absent\n", gui.display()));
        eprintln!(
            "\n*** SKIPPED: SaltGUI browser test: {} is absent (the third-party client fixtures \
             live in ../shared/clients) ***\n",
            gui.display()
        );
        return;
    }
    let gui = gui.canonicalize().unwrap_or(gui);
    let deps = Command::new(repo().join("scripts/browser-deps"))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("scripts/browser-deps");
    assert!(deps.success(), "scripts/browser-deps failed");
    let st = stack_with(StackOpts {
        reference: false,
        rest_extra: format!(
            "{{app: '{}', static: '{}', static_path: /static, app_path: /app}}",
            gui.join("index.html").display(),
            gui.join("static").display()
        ),
        ..StackOpts::default()
    });
    let out = repo().join("target/test-artifacts/saltgui");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::create_dir_all(&out);
    let run = Command::new("node")
        .arg(repo().join("tests/browser/saltgui.mjs"))
        .args(["--base", &st.brine, "--out"])
        .arg(&out)
        .args([
            "--user",
            "saltdev",
            "--password",
            "saltdev",
            "--eauth",
            "auto",
        ])
        .args(["--hook-token-from-login", "--with-stats"])
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "SaltGUI run against Brine failed ({}):\n{stdout}\n{stderr}\nBrine log:\n{}",
        run.status,
        st.brine_log()
    );
    // The driver's summary: every step passed, each with a screenshot on disk.
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    let steps = summary["steps"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    for want in [
        "login", "minions", "command", "jobs", "keys", "events", "logout",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "step {want} missing: {summary}"
        );
    }
    for s in &steps {
        assert_eq!(s["ok"], true, "{s}");
        if let Some(shot) = s["screenshot"].as_str() {
            assert!(
                std::path::Path::new(shot).is_file(),
                "missing screenshot {shot}"
            );
        }
    }
    eprintln!("SaltGUI screenshots: {}", out.display());
}
