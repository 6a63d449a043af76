//! `brine-bench`: load drivers that no off-the-shelf tool covers, run against any salt-api
//! (Brine, rest_cherrypy, rest_tornado) on one master, or against the master itself.
//!
//! Off-the-shelf HTTP load tools count a request as done when a status line arrives; a
//! salt-api answers 200 with a result that misses a minion, so every answer here is checked
//! (`load`), and SSE fan-out needs the bus as its clock (`sse`). `bench/bench.py` runs the
//! subcommands against every target, interleaved, and writes the result table.

#![forbid(unsafe_code)]

mod load;
mod raw;
mod returns;
mod sse;
mod targets;

use clap::Parser;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "brine-bench",
    about = "Load drivers for salt-api implementations"
)]
enum Cmd {
    /// SSE fan-out: delivered share and delay of bus events on N `/events` streams.
    Sse(sse::SseArgs),
    /// Closed-loop load of one scenario, every answer checked (HTTP target or the raw master).
    Load(load::LoadArgs),
}

/// The eauth credentials every driver logs in or publishes with.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Creds {
    #[arg(long, default_value = "saltdev")]
    username: String,
    #[arg(long, default_value = "saltdev")]
    password: String,
    #[arg(long, default_value = "auto")]
    eauth: String,
}

impl Creds {
    /// `{"username", "password", "eauth"}`.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({"username": self.username, "password": self.password, "eauth": self.eauth})
    }
}

/// `host:port` of a base URL.
pub(crate) fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// The `p`th percentile (nearest rank) of sorted figures; NaN when there are none.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> std::process::ExitCode {
    let cmd = Cmd::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("brine-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cmd {
            Cmd::Sse(a) => sse::sse(a).await,
            Cmd::Load(a) => load::load(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brine-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
