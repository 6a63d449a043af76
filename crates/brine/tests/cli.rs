//! The `brine` binary's command line and startup errors: a missing or bad configuration stops
//! Brine with one clear line naming the file and the key, a non-zero exit, and no panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // for its helpers; see clippy.toml

use std::process::Command;

fn brine(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brine"))
        .args(args)
        .output()
        .expect("brine");
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
    std::fs::create_dir_all(dir.join("master.d")).unwrap();
    std::fs::write(dir.join("master"), master).unwrap();
    for (file, text) in extra {
        std::fs::write(dir.join(file), text).unwrap();
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

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Runs `brine args`, failing the test if it has not returned within `secs`.
fn brine_within(secs: u64, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_brine"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("brine");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("brine {args:?} still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("brine");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session, ...
fn proc_stat(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether `pid` still runs (a zombie nobody reaped has stopped).
fn running(pid: u32) -> bool {
    proc_stat(pid).first().is_some_and(|state| state != "Z")
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// A configuration that serves plain HTTP on `port` with no master behind it.
fn daemon_config_dir(name: &str, port: u16) -> std::path::PathBuf {
    config_dir(
        name,
        &format!(
            "rest_cherrypy:\n  port: {port}\n  host: 127.0.0.1\n  disable_ssl: true\n\
             sock_dir: /nonexistent/brine-daemon-test\n"
        ),
        &[],
    )
}

#[test]
fn daemon_returns_once_serving_in_its_own_session() {
    let port = free_port();
    let dir = daemon_config_dir("daemon", port);
    let pid_file = dir.join("brine.pid");
    let log_file = dir.join("brine.log");
    let (code, text) = brine_within(
        20,
        &[
            "-d",
            "-c",
            dir.to_str().unwrap_or(""),
            "--pid-file",
            pid_file.to_str().unwrap_or(""),
            "--log-file",
            log_file.to_str().unwrap_or(""),
            "--log-file-level",
            "info",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("pid file: {e}: {text}"));
    let stop = |pid: u32| {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    };
    let stat = proc_stat(pid);
    let checks = || -> Result<(), String> {
        if !running(pid) {
            return Err(format!("the daemon {pid} is not running"));
        }
        // A session of its own (it leads it), not the test's.
        let mine = proc_stat(std::process::id());
        if stat.get(3) != Some(&pid.to_string()) || stat.get(3) == mine.get(3) {
            return Err(format!("session: daemon {stat:?}, test {mine:?}"));
        }
        let link = |p: String| std::fs::read_link(p).unwrap_or_default();
        if link(format!("/proc/{pid}/cwd")) != std::path::Path::new("/") {
            return Err("the daemon is not in /".into());
        }
        for fd in 0..3 {
            let target = link(format!("/proc/{pid}/fd/{fd}"));
            if target != std::path::Path::new("/dev/null") {
                return Err(format!("fd {fd} is {}", target.display()));
            }
        }
        let answer = http_get(port, "/");
        if !(answer.starts_with("HTTP/1.1 200") && answer.contains("\"Welcome\"")) {
            return Err(format!("GET /: {answer}"));
        }
        Ok(())
    };
    let checked = checks();
    stop(pid);
    if let Err(e) = checked {
        panic!("{e}");
    }
    // SIGTERM stops it cleanly: it removes its pid file on the way out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while (running(pid) || pid_file.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!running(pid), "SIGTERM did not stop the daemon");
    assert!(!pid_file.exists(), "the pid file outlived the daemon");
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        log.contains("listening") && log.contains("stopped"),
        "{log}"
    );
}

#[test]
fn daemon_reports_what_stops_it_on_the_terminal() {
    // A bad configuration: the one error line, before any daemon starts.
    let dir = config_dir(
        "daemon-bad",
        "rest_cherrypy:\n  port: eighty\n  disable_ssl: true\n",
        &[],
    );
    let (code, text) = brine_within(20, &["-d", "-c", dir.to_str().unwrap_or("")]);
    assert_clean_error(code, &text, &["master", "rest_cherrypy.port"]);

    // What only the daemon meets (its port is taken) comes back from it, with a failure.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().map(|a| a.port()).unwrap_or_default();
    let dir = daemon_config_dir("daemon-busy", port);
    let pid_file = dir.join("brine.pid");
    let (code, text) = brine_within(
        20,
        &[
            "-d",
            "-c",
            dir.to_str().unwrap_or(""),
            "--pid-file",
            pid_file.to_str().unwrap_or(""),
        ],
    );
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("cannot listen"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(!pid_file.exists(), "a failed daemon left its pid file");
}
