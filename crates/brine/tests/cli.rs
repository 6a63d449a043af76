//! The `brine` binary's command line and startup errors: a missing or bad configuration stops
//! Brine with one clear line naming the file and the key, a non-zero exit, and no panic.

use std::process::Command;

fn brine(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brine"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("brine: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn config_dir(name: &str, master: &str, extra: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("brine-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("master.d")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("master"), master).unwrap_or_else(|e| panic!("{e}"));
    for (file, text) in extra {
        std::fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

fn assert_clean_error(code: i32, text: &str, needles: &[&str]) {
    assert_eq!(code, 2, "{text}");
    assert!(!text.contains("panicked"), "{text}");
    for n in needles {
        assert!(text.contains(n), "{n:?} not in {text:?}");
    }
    assert_eq!(text.trim().lines().count(), 1, "one line expected: {text}");
}

#[test]
fn missing_config_file() {
    let (code, text) = brine(&["-c", "/nonexistent/brine-test"]);
    assert_clean_error(
        code,
        &text,
        &["/nonexistent/brine-test/master", "No such file"],
    );
}

#[test]
fn bad_values_name_file_and_key() {
    let dir = config_dir(
        "port",
        "rest_cherrypy:\n  port: 99999\n  disable_ssl: yes\n",
        &[],
    );
    let (code, text) = brine(&["-c", dir.to_str().unwrap_or("")]);
    assert_clean_error(code, &text, &["master", "rest_cherrypy.port", "99999"]);

    // A key set in master.d is reported against that file.
    let dir = config_dir(
        "inc",
        "rest_cherrypy:\n  port: 8000\n  disable_ssl: true\n",
        &[("master.d/net.conf", "ret_port: not-a-port\n")],
    );
    let (code, text) = brine(&["-c", dir.to_str().unwrap_or("")]);
    assert_clean_error(code, &text, &["master.d/net.conf", "'ret_port'"]);

    let dir = config_dir("yaml", "rest_cherrypy: [unclosed\n", &[]);
    let (code, text) = brine(&["-c", dir.to_str().unwrap_or("")]);
    assert_clean_error(code, &text, &["master", "invalid YAML", "line"]);

    let dir = config_dir("nossl", "rest_cherrypy:\n  port: 8000\n", &[]);
    let (code, text) = brine(&["-c", dir.to_str().unwrap_or("")]);
    assert_clean_error(code, &text, &["ssl_crt"]);

    let dir = config_dir("noport", "interface: 127.0.0.1\n", &[]);
    let (code, text) = brine(&["-c", dir.to_str().unwrap_or("")]);
    assert_clean_error(code, &text, &["rest_cherrypy"]);
}

#[test]
fn unknown_log_level_is_refused() {
    let dir = config_dir(
        "lvl",
        "rest_cherrypy:\n  port: 8000\n  disable_ssl: True\n",
        &[],
    );
    let (code, text) = brine(&["-c", dir.to_str().unwrap_or(""), "-l", "loud"]);
    assert_clean_error(code, &text, &["--log-level", "loud"]);
}

#[test]
fn version_and_help_work() {
    let (code, text) = brine(&["--version"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("brine "), "{text}");
    let (code, text) = brine(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--config-dir",
        "--log-level",
        "--log-file",
        "--pid-file",
        "--daemon",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn check_config_lists_honoured_options_with_their_files() {
    let dir = config_dir(
        "check",
        "ret_port: 4606\nrest_cherrypy:\n  port: 8000\n  disable_ssl: true\n  thread_pool: 40\n\
         rest_tornado:\n  port: 8001\n",
        &[(
            "master.d/brine.conf",
            "brine:\n  pool_size: 3\n  pool_sise: 4\n  redis_password: hunter2\n",
        )],
    );
    let d = dir.to_str().unwrap_or("");
    let (code, text) = brine(&["check-config", "-c", d]);
    assert_eq!(code, 0, "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
            .to_owned()
    };
    assert!(line("ret_port").contains("4606") && line("ret_port").ends_with("/master"));
    assert!(line("rest_cherrypy.port").contains("= 8000"), "{text}");
    assert!(
        line("brine.pool_size").ends_with("master.d/brine.conf"),
        "{text}"
    );
    assert!(
        line("publish_timeout").contains("(default: 30.0)"),
        "{text}"
    );
    for needle in [
        "rest_cherrypy.thread_pool: accepted and ignored",
        "brine.pool_sise: not a Brine option",
        "brine.redis_password: not a Brine option",
        "rest_tornado (",
        "OK: Brine can start",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert!(!text.contains("hunter2"), "a secret was printed:\n{text}");

    // What would stop the daemon makes check-config fail, with the file and key.
    let dir = config_dir("check-bad", "rest_cherrypy:\n  port: 8000\n", &[]);
    let (code, text) = brine(&["check-config", "-c", dir.to_str().unwrap_or("")]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("Errors:") && text.contains("ssl_crt"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn check_config_takes_host_and_port_and_shows_them() {
    let dir = config_dir(
        "check-over",
        "rest_cherrypy:\n  port: 8000\n  host: 10.0.0.1\n  disable_ssl: true\n",
        &[],
    );
    let d = dir.to_str().unwrap_or("");
    let (code, text) = brine(&[
        "check-config",
        "-c",
        d,
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
    ]);
    assert_eq!(code, 0, "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
            .to_owned()
    };
    assert!(line("rest_cherrypy.port").contains("= 8123"), "{text}");
    assert!(line("rest_cherrypy.port").contains("--port"), "{text}");
    assert!(
        line("rest_cherrypy.host").contains("\"127.0.0.1\""),
        "{text}"
    );
    assert!(line("rest_cherrypy.host").contains("--host"), "{text}");
    assert!(!text.contains("Warnings:"), "{text}");
}
