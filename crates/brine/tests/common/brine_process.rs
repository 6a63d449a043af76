//! Brine's processes on the stack's master: the stack's own Brine (started, restarted, its
//! pid and log) and extra Brines for scale-out and configuration tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Stack;

impl Stack {
    /// Starts (or restarts) Brine in front of the stack's master.
    pub fn start_brine(&self) {
        let mut guard = self.brine_child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut old) = guard.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let port = self.info["brine_port"].as_u64().unwrap_or(0).to_string();
        let log = std::fs::File::create(self.root.join("logs/brine.out")).expect("brine log");
        // BRINE_BIN runs the suite against another build (e.g. target/release/brine).
        let bin = std::env::var("BRINE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_brine").into());
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.config_dir())
            .args(["--port", &port, "-l", self.brine_log_level])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start brine");
        let _ = std::fs::write(self.root.join("pids/brine.pid"), child.id().to_string());
        *guard = Some(child);
        drop(guard);
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/", self.brine);
        while Instant::now() < deadline {
            let hostport = url
                .split("://")
                .nth(1)
                .unwrap_or(&url)
                .trim_end_matches('/');
            if std::net::TcpStream::connect(hostport).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "brine did not start; see {}",
            self.root.join("logs/brine.out").display()
        );
    }

    /// Brine's process id.
    pub fn brine_pid(&self) -> u32 {
        self.brine_child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.id()))
            .unwrap_or(0)
    }

    /// Brine's log so far.
    pub fn brine_log(&self) -> String {
        std::fs::read_to_string(self.root.join("logs/brine.out")).unwrap_or_default()
    }
}

/// Another Brine process on the stack's master (scale-out tests); killed when dropped.
pub struct ExtraBrine {
    /// Its base URL.
    pub url: String,
    child: std::process::Child,
}

impl ExtraBrine {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit; its exit code (`None`: still running, or
    /// killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for ExtraBrine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stack {
    /// Starts one more Brine on a free port in front of the same master, logging to
    /// `logs/<name>.out` (its pid is recorded so the stack's stop reaps it too).
    pub fn spawn_extra_brine(&self, name: &str) -> ExtraBrine {
        self.spawn_extra_brine_with(name, &self.config_dir(), &[])
    }

    /// As [`Stack::spawn_extra_brine`], with another configuration directory and more flags.
    pub fn spawn_extra_brine_with(
        &self,
        name: &str,
        config_dir: &Path,
        args: &[&str],
    ) -> ExtraBrine {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port");
        let log = std::fs::File::create(self.root.join(format!("logs/{name}.out")))
            .unwrap_or_else(|e| panic!("{name} log: {e}"));
        let bin = std::env::var("BRINE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_brine").into());
        let child = Command::new(bin)
            .arg("-c")
            .arg(config_dir)
            .args(["--port", &port.to_string(), "-l", self.brine_log_level])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let _ = std::fs::write(
            self.root.join(format!("pids/{name}.pid")),
            child.id().to_string(),
        );
        let log_path = self.root.join(format!("logs/{name}.out"));
        // A Brine that exited (a port taken in between, a bad config) says why.
        let exited = |child: &mut std::process::Child| {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("{name} exited ({status}) on port {port}:\n{log}");
            }
        };
        // Built first, so that a panic below still stops the process.
        let mut extra = ExtraBrine {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            exited(&mut extra.child);
            assert!(Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        exited(&mut extra.child);
        extra
    }
}
