//! `salt-swarm`: N simulated Salt minions in one process, speaking an unmodified master's own
//! protocol (ZeroMQ transport): sign-in, publish subscription, minion-side targeting, a few
//! execution functions, returns.
//!
//! The library is what the `salt-swarm` binary runs and what tests embed: [`Options`] say
//! which master and how many minions, [`start`] reads the master's configuration (through
//! `salt_wire::config`), optionally accepts the swarm's key for every id, and starts the
//! minions; the returned [`Running`] swarm tells when every minion is up and stops them all
//! when dropped.
//!
//! Minion ids are `<prefix><n>`, `n` from 1 to N zero-padded to the width of N (`count 50`:
//! `swarm-01` .. `swarm-50`).
//!
//! Modules: [`crypt`] (Salt's ciphers), [`channel`] (request channel), [`auth`] (sign-in and
//! the publish key), [`pubsub`] (publish subscription), [`target`] (matchers), [`grains`],
//! [`functions`], [`knobs`] (latency, silent and flapping minions), [`keys`] (key pair,
//! accepting it), [`minion`] (one minion's life).

#![recursion_limit = "512"]

mod auth;
mod channel;
mod crypt;
mod functions;
mod grains;
mod keys;
pub mod knobs;
mod minion;
mod pubsub;
mod target;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use salt_wire::config::{MasterConfig, MasterOptions, Reader};
use salt_wire::reqchan::Transport;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::minion::{Flap, Minion, Swarm};

/// What to simulate, against which master (the binary's flags, with the same defaults).
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory of the master's configuration (holds `master`).
    pub config_dir: PathBuf,
    /// Number of minions.
    pub count: u32,
    /// Minion id prefix.
    pub prefix: String,
    /// Accept the minions' key on the master (`salt-key -a`) before starting.
    pub accept: bool,
    /// Percentage of minions that start up but never answer a publish.
    pub silent: f64,
    /// Percentage of minions that drop off now and then and come back.
    pub flap: f64,
    /// Mean time a flapping minion stays up.
    pub flap_every: Duration,
    /// Mean time a flapping minion stays down.
    pub flap_down: Duration,
    /// Function latencies, `[FUN=]MIN[..MAX]` each ([`knobs::Latency::parse`]).
    pub latency: Vec<String>,
    /// Approximate size of a `state.apply` return, in bytes.
    pub return_size: usize,
    /// Minions starting up (sign-in, pillar, subscription) at once.
    pub signin_concurrency: usize,
    /// Request-channel connections shared by all minions.
    pub req_connections: usize,
    /// Salt version the minions claim.
    pub salt_version: String,
    /// Minion n connects from the loopback address of n + this, so that several swarms on one
    /// master do not share addresses (the master tells connected minions by the address of
    /// their publish connection).
    pub address_offset: u32,
    /// Where the swarm keeps its key pair (`None`: `$TMPDIR/salt-swarm-<uid>`).
    pub state_dir: Option<PathBuf>,
}

impl Options {
    /// `count` minions named `swarm-<n>` for the master configured in `config_dir`, with the
    /// binary's defaults for everything else.
    pub fn new(config_dir: impl Into<PathBuf>, count: u32) -> Options {
        Options {
            config_dir: config_dir.into(),
            count,
            prefix: "swarm-".into(),
            accept: false,
            silent: 0.0,
            flap: 0.0,
            flap_every: Duration::from_secs(60),
            flap_down: Duration::from_secs(5),
            latency: Vec::new(),
            return_size: 2048,
            signin_concurrency: 8,
            req_connections: 8,
            salt_version: "3008.4".into(),
            address_offset: 0,
            state_dir: None,
        }
    }
}

/// A started swarm. Dropping it stops every minion (their connections close).
pub struct Running {
    swarm: Arc<Swarm>,
    tasks: JoinSet<()>,
    ids: Vec<String>,
    silent: Vec<String>,
}

impl Running {
    /// Every minion id, in order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The ids of the minions that never answer.
    pub fn silent(&self) -> &[String] {
        &self.silent
    }

    /// How many minions are signed in and subscribed now.
    pub fn up(&self) -> usize {
        self.swarm.up.load(Ordering::SeqCst)
    }

    /// Returns once every minion has signed in and subscribed.
    pub async fn all_up(&self) {
        loop {
            let notified = self.swarm.up_changed.notified();
            if self.up() >= self.ids.len() {
                return;
            }
            notified.await;
        }
    }

    /// Stops every minion now (as dropping does).
    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

/// Minion ids: `<prefix><n>`, zero-padded to the width of `count`.
pub fn minion_ids(prefix: &str, count: u32) -> Vec<String> {
    let width = count.to_string().len();
    (1..=count)
        .map(|n| format!("{prefix}{n:0width$}"))
        .collect()
}

/// Reads the master's configuration, accepts the swarm's key if asked, and starts every
/// minion (sign-in proceeds in the background: see [`Running::all_up`]). Must run inside a
/// tokio runtime.
pub async fn start(opts: &Options) -> Result<Running, String> {
    if opts.count == 0 {
        return Err("the count must be at least 1".into());
    }
    let settings = read_master(&opts.config_dir)?;
    // Every minion holds a publish connection: make room for them.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open-files limit");
    }
    let dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(keys::default_state_dir);
    let keys = tokio::task::spawn_blocking(move || keys::load_or_create(&dir))
        .await
        .map_err(|e| e.to_string())??;
    let ids = minion_ids(&opts.prefix, opts.count);
    if opts.accept {
        keys::accept(&settings.pki_dir, &ids, &keys.public_pem)?;
        tracing::info!(count = ids.len(), pki_dir = %settings.pki_dir.display(), "keys accepted");
    }
    let host = settings.options.connect_host.clone();
    let publish_host = tokio::net::lookup_host((host.as_str(), settings.publish_port))
        .await
        .map_err(|e| format!("resolving the master {host}: {e}"))?
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4())
        .ok_or_else(|| format!("the master {host} has no IPv4 address"))?;
    let bind_source = publish_host.is_loopback();
    if !bind_source {
        tracing::warn!(%publish_host, "master not on loopback: minions connect from the host's own address");
    }
    let pool = channel::ReqPool::new(
        &host,
        settings.options.ret_port,
        opts.req_connections,
        Duration::from_secs(10),
    );
    let latency = knobs::Latency::parse(&opts.latency)?;
    let sign_key = match &settings.sign_key_path {
        Some(path) => {
            let pem =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(crypt::parse_public_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let swarm = Arc::new(Swarm {
        master: auth::Master::new(pool, keys, Duration::from_secs(60), sign_key),
        grains: grains::Grains::new(&opts.salt_version),
        publish_host,
        publish_port: AtomicU16::new(settings.publish_port),
        bind_source,
        zmq_filtering: settings.zmq_filtering,
        latency,
        return_size: opts.return_size,
        salt_version: opts.salt_version.clone(),
        startups: Semaphore::new(opts.signin_concurrency.max(1)),
        flap: Flap {
            every: opts.flap_every,
            down: opts.flap_down,
        },
        up: AtomicUsize::new(0),
        up_changed: Notify::new(),
        connect_timeout: Duration::from_secs(10),
    });
    let mut silent = Vec::new();
    let mut tasks = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let index = i as u32 + 1;
        let is_silent = knobs::picked(index, opts.silent);
        if is_silent {
            silent.push(id.clone());
        }
        let m = Arc::new(Minion::new(
            index,
            minion::address(index.saturating_add(opts.address_offset)),
            id.clone(),
            is_silent,
            knobs::picked(index, opts.flap),
        ));
        tasks.spawn(minion::run(swarm.clone(), m));
    }
    if !silent.is_empty() {
        tracing::info!(count = silent.len(), minions = %silent.join(","), "silent minions");
    }
    Ok(Running {
        swarm,
        tasks,
        ids,
        silent,
    })
}

/// What the swarm needs from the master's configuration.
struct MasterSettings {
    options: MasterOptions,
    publish_port: u16,
    pki_dir: PathBuf,
    zmq_filtering: bool,
    /// `<pki_dir>/<master_sign_key_name>.pub` when `master_sign_pubkey` is on.
    sign_key_path: Option<PathBuf>,
}

fn read_master(config_dir: &Path) -> Result<MasterSettings, String> {
    let cfg = MasterConfig::load(&config_dir.join("master")).map_err(|e| e.to_string())?;
    let options = MasterOptions::from_config(&cfg).map_err(|e| e.to_string())?;
    if options.transport != Transport::Zeromq {
        return Err(
            "the master's transport is tcp: salt-swarm speaks the zeromq transport only".into(),
        );
    }
    let r = Reader::top(&cfg);
    let publish_port = r
        .integer("publish_port", 4505, 1, 65535)
        .map_err(|e| e.to_string())? as u16;
    let pki = r
        .string("pki_dir")
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| "/etc/salt/pki/master".into());
    let pki_path = Path::new(&pki);
    let pki_dir = if options.root_dir == Path::new("/") || pki_path.starts_with(&options.root_dir) {
        pki_path.to_owned()
    } else {
        options
            .root_dir
            .join(pki_path.strip_prefix("/").unwrap_or(pki_path))
    };
    let zmq_filtering = r
        .boolean("zmq_filtering", false)
        .map_err(|e| e.to_string())?;
    let sign_key_path = if r
        .boolean("master_sign_pubkey", false)
        .map_err(|e| e.to_string())?
    {
        let name = r
            .string("master_sign_key_name")
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| "master_sign".into());
        Some(pki_dir.join(format!("{name}.pub")))
    } else {
        None
    };
    Ok(MasterSettings {
        sign_key_path,
        options,
        publish_port,
        pki_dir,
        zmq_filtering,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_zero_padded_to_the_count() {
        assert_eq!(
            minion_ids("swarm-", 3),
            vec!["swarm-1", "swarm-2", "swarm-3"]
        );
        let ids = minion_ids("m", 50);
        assert_eq!((ids[0].as_str(), ids[49].as_str()), ("m01", "m50"));
        assert_eq!(minion_ids("x-", 10000)[41], "x-00042");
    }
}
