//! One simulated minion's life: start-up as `salt-minion` does it (sign in, `_pillar` with
//! its grains so the master caches them, subscribe to the publish port, fire
//! `salt/minion/<id>/start`), then publishes: decrypt, target, run, return.
//!
//! * One task per minion, owning its subscription; a task per job while it runs. A minion's
//!   own state is its id, address, session key and running jobs; grains and everything else
//!   are shared ([`Swarm`]).
//! * Start-ups hold a permit of `--signin-concurrency`, so 10 000 minions sign in a few at a
//!   time instead of all at once: each costs the master RSA work and a pillar compile.
//! * A pending key is retried every `acceptance_wait_time` (10 s, Salt's default); a lost
//!   publish connection is reopened after 1-11 s (libzmq's `recon_default` plus a random
//!   share of `recon_max`, as Salt sets them), without signing in again.
//! * Returns go on the request channel as `_return` loads with the fields
//!   `Minion._thread_return` and `_return_pub` put there. A "bad load" answer or a reply that
//!   does not decrypt means the session key changed: the minion signs in again and resends.
//! * Silent minions (`--silent`) start up like the others but never answer a publish.
//!   Flapping ones (`--flap`) drop their publish connection now and then and come back as a
//!   restarted minion does (sign-in, pillar, subscription, start event).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmpv::Value as Mp;
use tokio::sync::{Notify, Semaphore};

use crate::auth::{short, Master, SignIn};
use crate::channel::{self, bytes, get};
use crate::crypt::{CryptError, Crypticle};
use crate::functions::{self, Env, Outcome, Run};
use crate::grains::Grains;
use crate::knobs::Latency;
use crate::pubsub::Subscription;
use crate::target::{self, Subject};

/// Salt's `acceptance_wait_time` default.
const ACCEPTANCE_WAIT: Duration = Duration::from_secs(10);

/// Restart behaviour of flapping minions.
#[derive(Clone, Copy, Debug)]
pub struct Flap {
    /// Mean time up between two drops (each draw is 0.5-1.5 times this).
    pub every: Duration,
    /// Time down.
    pub down: Duration,
}

/// What all minions share.
pub struct Swarm {
    /// Master connection state.
    pub master: Master,
    /// Grains builder.
    pub grains: Grains,
    /// The master's publish address (host from the configuration; port as the last sign-in
    /// reply said).
    pub publish_host: std::net::IpAddr,
    /// See [`Swarm::publish_host`].
    pub publish_port: AtomicU16,
    /// Whether subscriptions connect from each minion's own 127.x address (the master is on
    /// loopback).
    pub bind_source: bool,
    /// The master's `zmq_filtering`.
    pub zmq_filtering: bool,
    /// Function latencies.
    pub latency: Latency,
    /// `state.apply` return size.
    pub return_size: usize,
    /// Claimed Salt version.
    pub salt_version: String,
    /// Start-up permits.
    pub startups: Semaphore,
    /// Flapping, when asked for.
    pub flap: Flap,
    /// Minions that completed their first start-up.
    pub up: AtomicUsize,
    /// Woken at each start-up completion.
    pub up_changed: Notify,
    /// Connect timeout for publish connections.
    pub connect_timeout: Duration,
}

/// One simulated minion.
pub struct Minion {
    /// 1-based index.
    pub index: u32,
    /// Minion id.
    pub id: String,
    /// Its loopback address.
    pub ip: Ipv4Addr,
    /// Never answers publishes.
    pub silent: bool,
    /// Drops off and comes back.
    pub flapping: bool,
    session: Mutex<Option<Crypticle>>,
    running: Mutex<Vec<Mp>>,
}

/// The loopback address of minion `index` (1-based): 127.1.0.1, 127.1.0.2, ... skipping
/// host parts 0 and 255.
pub fn address(index: u32) -> Ipv4Addr {
    let i = index.saturating_sub(1);
    let c = (i % 254 + 1) as u8;
    let b = ((i / 254) % 256) as u8;
    let a = (1 + i / (254 * 256)).min(254) as u8;
    Ipv4Addr::new(127, a, b, c)
}

impl Minion {
    /// A minion that has not signed in yet, connecting from `ip`.
    pub fn new(index: u32, ip: Ipv4Addr, id: String, silent: bool, flapping: bool) -> Minion {
        Minion {
            index,
            id,
            ip,
            silent,
            flapping,
            session: Mutex::new(None),
            running: Mutex::new(Vec::new()),
        }
    }

    fn grains(&self, swarm: &Swarm) -> Mp {
        swarm.grains.build(self.index, &self.id, self.ip)
    }

    fn set_session(&self, session: Crypticle) {
        if let Ok(mut s) = self.session.lock() {
            *s = Some(session);
        }
    }

    fn session(&self) -> Option<Crypticle> {
        self.session.lock().ok().and_then(|s| s.clone())
    }

    /// Signs in once; `Ok(false)` when the key is not accepted (yet).
    async fn sign_in(&self, swarm: &Swarm) -> Result<bool, String> {
        match swarm.master.sign_in(&self.id).await {
            Ok(SignIn::Accepted {
                session,
                publish_port,
            }) => {
                self.set_session(session);
                swarm.publish_port.store(publish_port, Ordering::Relaxed);
                Ok(true)
            }
            Ok(SignIn::Pending) => {
                tracing::info!(minion = %self.id, "key pending on the master (salt-key -a, or --accept)");
                Ok(false)
            }
            Ok(SignIn::Rejected) => {
                tracing::warn!(minion = %self.id, "key rejected by the master");
                Ok(false)
            }
            Ok(SignIn::Full) => {
                tracing::warn!(minion = %self.id, "master refused the minion: max_minions reached");
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends an AES request and decodes the reply (see the module notes on re-signing-in).
    async fn request(&self, swarm: &Swarm, load: Vec<(Mp, Mp)>) -> Result<Mp, String> {
        for attempt in 0..2 {
            let session = self.session().ok_or("not signed in")?;
            let (env, nonce) =
                channel::aes(&self.id, &session, &swarm.master.keys.tok, load.clone());
            let reply = swarm
                .master
                .pool
                .send(&env, swarm.master.timeout)
                .await
                .map_err(|e| e.to_string())?;
            // The master packs its reply bytes as msgpack `str` (not `bin`); a refusal is a
            // readable `str` such as "bad load".
            let stale = match &reply {
                Mp::Binary(_) | Mp::String(_) => {
                    let raw = bytes(&reply).unwrap_or_default();
                    match session.loads(raw, Some(&nonce)) {
                        Ok(v) => return Ok(v),
                        Err(CryptError::Authentication) => true,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Mp::Map(_) => return Ok(reply),
                other => return Err(format!("unexpected reply {}", short(other))),
            };
            if stale && attempt == 0 {
                tracing::info!(minion = %self.id, reply = %short(&reply), "request refused; signing in again");
                if !self.sign_in(swarm).await? {
                    return Err("not signed in".into());
                }
            }
        }
        Err("the master refused the request after a new sign-in".into())
    }

    /// Start-up up to a working subscription; `Err` carries how long to wait before retrying.
    async fn start_up(&self, swarm: &Swarm) -> Result<Subscription, Duration> {
        let backoff = Duration::from_secs(2);
        let t0 = tokio::time::Instant::now();
        match self.sign_in(swarm).await {
            Ok(true) => {}
            Ok(false) => return Err(ACCEPTANCE_WAIT),
            Err(e) => {
                tracing::warn!(minion = %self.id, error = %e, "sign-in failed");
                return Err(backoff);
            }
        }
        let t_auth = t0.elapsed();
        let pillar = vec![
            (Mp::from("id"), Mp::from(self.id.as_str())),
            (Mp::from("grains"), self.grains(swarm)),
            (Mp::from("saltenv"), Mp::Nil),
            (Mp::from("pillarenv"), Mp::Nil),
            (Mp::from("pillar_override"), Mp::Map(vec![])),
            (Mp::from("extra_minion_data"), Mp::Map(vec![])),
            (Mp::from("ver"), Mp::from("2")),
            (Mp::from("cmd"), Mp::from("_pillar")),
        ];
        match self.request(swarm, pillar).await {
            Ok(reply) if get(&reply, "pillar").is_some() => {}
            Ok(reply) => {
                tracing::warn!(minion = %self.id, reply = %short(&reply), "pillar request refused");
                return Err(backoff);
            }
            Err(e) => {
                tracing::warn!(minion = %self.id, error = %e, "pillar request failed");
                return Err(backoff);
            }
        }
        let t_pillar = t0.elapsed();
        let sub = self.subscribe(swarm).await.map_err(|e| {
            tracing::warn!(minion = %self.id, error = %e, "subscribing failed");
            backoff
        })?;
        let started = chrono::Local::now().format("%a %b %e %H:%M:%S %Y");
        let event = vec![
            (Mp::from("id"), Mp::from(self.id.as_str())),
            (Mp::from("cmd"), Mp::from("_minion_event")),
            (Mp::from("pretag"), Mp::Nil),
            (
                Mp::from("data"),
                Mp::from(format!("Minion {} started at {started}", self.id)),
            ),
            (
                Mp::from("tag"),
                Mp::from(format!("salt/minion/{}/start", self.id)),
            ),
        ];
        if let Err(e) = self.request(swarm, event).await {
            tracing::warn!(minion = %self.id, error = %e, "start event failed");
        }
        tracing::debug!(
            minion = %self.id,
            auth_ms = t_auth.as_millis() as u64,
            pillar_ms = (t_pillar - t_auth).as_millis() as u64,
            rest_ms = (t0.elapsed() - t_pillar).as_millis() as u64,
            "started up"
        );
        Ok(sub)
    }

    async fn subscribe(&self, swarm: &Swarm) -> Result<Subscription, String> {
        let addr = SocketAddr::new(
            swarm.publish_host,
            swarm.publish_port.load(Ordering::Relaxed),
        );
        Subscription::open(
            swarm.bind_source.then_some(self.ip),
            addr,
            &self.id,
            swarm.zmq_filtering,
            swarm.connect_timeout,
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Decodes one publish and starts the job if it is for this minion.
    async fn on_publish(self: &Arc<Self>, swarm: &Arc<Swarm>, payload: &[u8]) {
        let Ok(env) = salt_wire::framing::decode_value(payload) else {
            tracing::debug!(minion = %self.id, "undecodable publish dropped");
            return;
        };
        if get(&env, "enc").and_then(Mp::as_str) != Some("aes") {
            return;
        }
        let Some(body) = get(&env, "load").and_then(bytes) else {
            return;
        };
        let Some((key, generation)) = swarm.master.publish_key() else {
            return;
        };
        let load = match key.loads(body, None) {
            Ok(l) => l,
            Err(CryptError::Authentication) => {
                match swarm.master.refresh_aes(&self.id, generation).await {
                    Ok(Some(SignIn::Accepted { session, .. })) => self.set_session(session),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(minion = %self.id, error = %e, "signing in for a new publish key failed");
                        return;
                    }
                }
                let Some((key, _)) = swarm.master.publish_key() else {
                    return;
                };
                match key.loads(body, None) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(minion = %self.id, error = %e, "publish does not decrypt even after signing in again");
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(minion = %self.id, error = %e, "publish dropped");
                return;
            }
        };
        let Mp::Map(mut load) = load else { return };
        load.retain(|(k, _)| k.as_str() != Some("serial"));
        let load = Mp::Map(load);
        if ["tgt", "jid", "fun", "arg"]
            .iter()
            .any(|k| get(&load, k).is_none())
        {
            return;
        }
        let tgt_type = get(&load, "tgt_type")
            .and_then(Mp::as_str)
            .unwrap_or("glob");
        let delimiter = get(&load, "delimiter").and_then(Mp::as_str).unwrap_or(":");
        let ipv4 = [self.ip, Ipv4Addr::LOCALHOST];
        let grains = || self.grains(swarm);
        let subject = Subject {
            id: &self.id,
            grains: &grains,
            ipv4: &ipv4,
        };
        let tgt = get(&load, "tgt").cloned().unwrap_or(Mp::Nil);
        if !target::matches(&tgt, tgt_type, delimiter, &subject) {
            return;
        }
        tracing::debug!(minion = %self.id, load = %short(&load), "publish for this minion");
        if self.silent {
            return;
        }
        let me = self.clone();
        let swarm = swarm.clone();
        tokio::spawn(async move { me.job(&swarm, load).await });
    }

    /// Runs one job and returns its result.
    async fn job(&self, swarm: &Swarm, load: Mp) {
        let Mp::Map(mut fields) = load else { return };
        // Keys `_target_load` adds before the job starts (visible in saltutil.running and
        // test.arg's __pub_ keywords).
        fields.push((Mp::from("resource_targets"), Mp::Array(vec![])));
        fields.push((Mp::from("pure_resource_target"), Mp::Boolean(false)));
        fields.push((Mp::from("minion_is_target"), Mp::Boolean(true)));
        let load = Mp::Map(fields);
        let jid = get(&load, "jid").cloned().unwrap_or(Mp::Nil);
        let fun = get(&load, "fun").cloned().unwrap_or(Mp::Nil);
        let mut entry = vec![(Mp::from("pid"), Mp::from(std::process::id()))];
        entry.extend(load.as_map().cloned().unwrap_or_default());
        if let Ok(mut r) = self.running.lock() {
            r.push(Mp::Map(entry));
        }
        let mut ret: Vec<(Mp, Mp)> = match &fun {
            Mp::Array(funs) => self.run_multi(swarm, funs, &load, &jid).await,
            other => {
                let name = other.as_str().unwrap_or_default();
                let o = self.run_one(swarm, name, &load, &jid).await;
                let mut ret = vec![
                    (Mp::from("success"), Mp::Boolean(o.retcode == 0)),
                    (Mp::from("return"), o.ret),
                    (Mp::from("retcode"), Mp::from(o.retcode)),
                ];
                if let Some(out) = o.out {
                    ret.push((Mp::from("out"), Mp::from(out)));
                }
                ret
            }
        };
        // Off the running list before the return goes out: Salt's `_prepare_return_pub`
        // removes the job's proc file first, so a `find_job` that comes while the master is
        // still taking returns finds a real minion not running the job either.
        if let Ok(mut r) = self.running.lock() {
            r.retain(|e| get(e, "jid") != Some(&jid));
        }
        let mut msg = vec![
            (Mp::from("cmd"), Mp::from("_return")),
            (Mp::from("id"), Mp::from(self.id.as_str())),
        ];
        msg.append(&mut ret);
        msg.push((Mp::from("jid"), jid.clone()));
        msg.push((Mp::from("fun"), fun));
        msg.push((
            Mp::from("fun_args"),
            get(&load, "arg").cloned().unwrap_or(Mp::Array(vec![])),
        ));
        for key in ["user", "master_id"] {
            if let Some(v) = get(&load, key) {
                msg.push((Mp::from(key), v.clone()));
            }
        }
        if let Some(meta @ Mp::Map(_)) = get(&load, "metadata") {
            msg.push((Mp::from("metadata"), meta.clone()));
        }
        if let Err(e) = self.request(swarm, msg).await {
            tracing::warn!(minion = %self.id, jid = %jid, error = %e, "return failed");
        }
    }

    async fn run_one(&self, swarm: &Swarm, fun: &str, load: &Mp, jid: &Mp) -> Outcome {
        tokio::time::sleep(swarm.latency.for_function(fun).draw()).await;
        let running = self
            .running
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|e| get(e, "jid") != Some(jid))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let outcome = {
            let grains = || self.grains(swarm);
            let env = Env {
                grains: &grains,
                running,
                salt_version: &swarm.salt_version,
                return_size: swarm.return_size,
            };
            functions::run(fun, load, &env)
        };
        match outcome {
            Run::Done(o) => o,
            Run::After(d, o) => {
                tokio::time::sleep(d).await;
                o
            }
        }
    }

    /// A multi-function job (`fun` and `arg` are lists): results keyed by function, as
    /// `_thread_multi_return` builds them.
    async fn run_multi(&self, swarm: &Swarm, funs: &[Mp], load: &Mp, jid: &Mp) -> Vec<(Mp, Mp)> {
        let args = get(load, "arg")
            .and_then(Mp::as_array)
            .cloned()
            .unwrap_or_default();
        let (mut rets, mut codes, mut oks) = (Vec::new(), Vec::new(), Vec::new());
        for (i, f) in funs.iter().enumerate() {
            let name = f.as_str().unwrap_or_default();
            let mut one = load.as_map().cloned().unwrap_or_default();
            one.retain(|(k, _)| !matches!(k.as_str(), Some("arg" | "fun")));
            one.push((Mp::from("fun"), f.clone()));
            one.push((
                Mp::from("arg"),
                args.get(i).cloned().unwrap_or(Mp::Array(vec![])),
            ));
            let o = self.run_one(swarm, name, &Mp::Map(one), jid).await;
            oks.push((f.clone(), Mp::Boolean(o.retcode == 0)));
            codes.push((f.clone(), Mp::from(o.retcode)));
            rets.push((f.clone(), o.ret));
        }
        vec![
            (Mp::from("return"), Mp::Map(rets)),
            (Mp::from("retcode"), Mp::Map(codes)),
            (Mp::from("success"), Mp::Map(oks)),
        ]
    }
}

fn jitter(mean: Duration) -> Duration {
    mean.mul_f64(rand::random_range(0.5..1.5))
}

/// Runs one minion for the life of the process.
pub async fn run(swarm: Arc<Swarm>, me: Arc<Minion>) {
    let mut counted = false;
    loop {
        let mut sub = loop {
            let permit = swarm.startups.acquire().await;
            let result = Box::pin(me.start_up(&swarm)).await;
            drop(permit);
            match result {
                Ok(sub) => break sub,
                Err(wait) => tokio::time::sleep(jitter(wait)).await,
            }
        };
        if !counted {
            counted = true;
            swarm.up.fetch_add(1, Ordering::SeqCst);
            swarm.up_changed.notify_one();
        }
        let flap_at = me
            .flapping
            .then(|| tokio::time::Instant::now() + jitter(swarm.flap.every));
        loop {
            let next = tokio::select! {
                r = sub.next() => r,
                _ = sleep_until_opt(flap_at) => break,
            };
            match next {
                Ok(payload) => Box::pin(me.on_publish(&swarm, &payload)).await,
                Err(e) => {
                    tracing::info!(minion = %me.id, error = %e, "publish connection lost; reconnecting");
                    sub = loop {
                        let wait = Duration::from_millis(1000 + rand::random_range(0..10_000));
                        tokio::time::sleep(wait).await;
                        match Box::pin(me.subscribe(&swarm)).await {
                            Ok(s) => break s,
                            Err(e) => {
                                tracing::debug!(minion = %me.id, error = %e, "reconnect failed")
                            }
                        }
                    };
                }
            }
        }
        tracing::info!(minion = %me.id, "flapping: going down");
        drop(sub);
        tokio::time::sleep(jitter(swarm.flap.down)).await;
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_loopback_hosts() {
        assert_eq!(address(1), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(address(254), Ipv4Addr::new(127, 1, 0, 254));
        assert_eq!(address(255), Ipv4Addr::new(127, 1, 1, 1));
        let all: std::collections::HashSet<_> = (1..=20_000).map(address).collect();
        assert_eq!(all.len(), 20_000);
        assert!(all
            .iter()
            .all(|a| a.is_loopback() && a.octets()[3] != 0 && a.octets()[3] != 255));
    }
}
