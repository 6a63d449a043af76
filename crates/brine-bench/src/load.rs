//! `brine-bench load`: closed-loop load for one scenario against one target, with every answer
//! checked. A target is a salt-api over HTTP (`--url`) or, without `--url`, the master itself
//! through `salt-wire` (the "raw ceiling": the same master commands with no HTTP in between).
//!
//! Scenarios (the master's command in brackets):
//! * `login`: `POST /login` with eauth credentials [`mk_token`]; the answer must hold a token.
//! * `runner`: `runner test.arg bench` [`runner` + its `salt/run/<jid>/ret` event]; the return
//!   must echo the argument.
//! * `wheel`: `wheel key.list_all` [`wheel`]; every expected minion must be listed.
//! * `local`: `local test.ping` on `*` [`publish` + one return per minion]; every expected
//!   minion must answer `true`.
//! * `async`: `--jobs` `local_async test.ping` jobs at `--concurrency`; the figure is the wall
//!   time until every minion's return of every job is on the master's bus (the master fires it
//!   as it stores the return in the job cache).
//!
//! `login`..`local` run for `--seconds` with `--concurrency` workers, each on its own
//! connection, each sending its next request when the previous one was answered. A request
//! counts only when its answer is right. Prints one JSON line: `{"target", "scenario",
//! "concurrency", "ok", "errors", "master_errors", "seconds", "rps", "p50_ms", "p99_ms",
//! "first_error"}`; `master_errors` counts the errors the master answered itself (its own
//! exception text), which any salt-api in front of it would pass on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use salt_wire::config::{MasterConfig, MasterOptions};
use salt_wire::envelope::classify;
use salt_wire::pool::MasterPool;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;

use crate::returns::Returns;
use crate::{host_port, percentile};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `POST /login` / `mk_token`.
    Login,
    /// Sync `runner test.arg`.
    Runner,
    /// Sync `wheel key.list_all`.
    Wheel,
    /// Sync `local test.ping` on every minion.
    Local,
    /// `--jobs` `local_async` jobs, until every return is in.
    Async,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Login => "login",
            Scenario::Runner => "runner",
            Scenario::Wheel => "wheel",
            Scenario::Local => "local",
            Scenario::Async => "async",
        }
    }
}

#[derive(Parser, Debug)]
pub struct LoadArgs {
    /// Name of the target in the results.
    #[arg(long)]
    name: String,
    /// Base URL of a salt-api (http://host:port); without it the master is called directly.
    #[arg(long)]
    url: Option<String>,
    /// The master's config file (for the bus and, without `--url`, the request channel).
    #[arg(long)]
    master_config: PathBuf,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Workers (each with its own connection), or jobs in flight for `async`.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Length of a closed-loop run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Jobs of the `async` scenario.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Minions that must answer (`local`, `async`) or be listed (`wheel`).
    #[arg(long, default_value_t = 1)]
    minions: usize,
    #[arg(long, default_value = "saltdev")]
    username: String,
    #[arg(long, default_value = "saltdev")]
    password: String,
    #[arg(long, default_value = "auto")]
    eauth: String,
    /// Limit for one request (and for one job's returns), seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// A job with some but not all returns is given up when no return of any job arrived
    /// for this many seconds (0: wait the whole `--timeout`).
    #[arg(long, default_value_t = 0)]
    quiet: u64,
}

/// Where requests go.
enum Target {
    Http { addr: String },
    Raw { pool: MasterPool, user: String },
}

/// Everything a worker needs.
struct Ctx {
    args: LoadArgs,
    target: Target,
    token: String,
    returns: Option<Arc<Returns>>,
    timeout: Duration,
    quiet: Option<Duration>,
    /// Job ids the target answered so far (`async`): two jobs must never share one.
    jids: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// One HTTP/1.1 connection, reopened when the server closed it.
struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new() -> Self {
        Conn { sender: None }
    }

    async fn post(
        &mut self,
        addr: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Value, String> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let _ = stream.set_nodelay(true);
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(conn);
                sender
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let mut req = hyper::Request::post(path)
            .header("Host", addr)
            .header("Accept", "application/json")
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        self.sender = Some(sender);
        if status != 200 {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
    }
}

/// `return[0]` of a salt-api answer.
fn first_return(v: Value) -> Result<Value, String> {
    match v {
        Value::Object(mut m) => match m.remove("return") {
            Some(Value::Array(mut a)) if !a.is_empty() => Ok(a.swap_remove(0)),
            other => Err(format!("no return list: {other:?}")),
        },
        other => Err(format!("answer is not a map: {other}")),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(600).collect()
}

fn check_token(v: &Value) -> Result<String, String> {
    match v.get("token").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => Ok(t.to_owned()),
        _ => Err(format!("no token in {}", short(v))),
    }
}

fn check_runner(ret: &Value) -> Result<(), String> {
    let args = ret.get("args").and_then(Value::as_array);
    match args.and_then(|a| a.first()).and_then(Value::as_str) {
        Some("bench") => Ok(()),
        _ => Err(format!("test.arg did not echo: {}", short(ret))),
    }
}

/// How the master words a wheel function that raised (`ClearFuncs.wheel` in salt/master.py).
const MASTER_WHEEL_FAULT: &str = "Exception occurred in wheel ";

/// Marks an error the master caused itself (it answered, but with its own failure), so the
/// soak can tell them from wrong answers of the target. Such a request is not counted as ok.
const MASTER_FAULT: &str = "master fault: ";

/// `{"tag", "data": {"return": {"minions": [...]}, "success": true}}`.
///
/// A `success: false` whose `return` is the master's own exception text is the master's fault,
/// e.g. Salt 3008's `.minions.p does not exist` when two master workers draw the same jid in
/// the same microsecond (`unique_jid: False`, the default): it reaches every salt-api alike.
fn check_wheel(v: &Value, minions: usize) -> Result<(), String> {
    let data = v.get("data");
    if let Some(text) = data
        .and_then(|d| d.get("return"))
        .and_then(Value::as_str)
        .filter(|t| t.starts_with(MASTER_WHEEL_FAULT))
    {
        return Err(format!("{MASTER_FAULT}{text}"));
    }
    let listed = data
        .and_then(|d| d.get("return"))
        .and_then(|r| r.get("minions"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let success = data.and_then(|d| d.get("success")) == Some(&Value::Bool(true));
    if success && listed >= minions {
        Ok(())
    } else {
        Err(format!("key.list_all: {}", short(v)))
    }
}

fn check_pings(ret: &Value, minions: usize) -> Result<(), String> {
    match ret.as_object() {
        Some(m) if m.len() >= minions && m.values().all(|v| v == &Value::Bool(true)) => Ok(()),
        _ => Err(format!("test.ping: {}", short(ret))),
    }
}

/// Jids for the raw publishes, in Salt's format, never repeated within a run.
fn gen_jid() -> String {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = chrono::Local::now().timestamp_micros();
    let micros = match LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
        Some(now.max(last + 1))
    }) {
        Ok(last) | Err(last) => now.max(last + 1),
    };
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000);
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => format!(
            "{}{sub:06}",
            t.with_timezone(&chrono::Local).format("%Y%m%d%H%M%S")
        ),
        None => format!("{micros:020}"),
    }
}

impl Ctx {
    /// Sends a clear command to the master (raw target) and classifies the reply.
    async fn request(&self, load: &Map<String, Value>) -> Result<Value, String> {
        let Target::Raw { pool, .. } = &self.target else {
            return Err("not a raw target".into());
        };
        let reply = pool
            .request(load, self.timeout, false)
            .await
            .map_err(|e| format!("master: {e}"))?;
        classify(reply).map_err(|e| format!("master: {e}"))
    }

    /// A raw command authenticated with the run's token (unless it carries credentials).
    async fn raw(&self, mut load: Map<String, Value>) -> Result<Value, String> {
        if !load.contains_key("username") {
            load.insert("token".into(), self.token.clone().into());
        }
        self.request(&load).await
    }

    /// The eauth credentials, as a `/login` body.
    fn credentials(&self) -> Value {
        json!({"username": self.args.username, "password": self.args.password,
            "eauth": self.args.eauth})
    }

    /// `mk_token` with the eauth credentials.
    fn mk_token_load(&self) -> Map<String, Value> {
        let mut load = match self.credentials() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        load.insert("cmd".into(), "mk_token".into());
        load
    }

    fn returns(&self) -> Result<&Returns, String> {
        self.returns
            .as_deref()
            .ok_or_else(|| "no bus collector".to_owned())
    }

    /// Waits for one return per minion of `jid`; all must be `true`.
    async fn pings(&self, jid: &str, minions: usize) -> Result<(), String> {
        let got = self
            .returns()?
            .wait(jid, self.timeout, self.quiet, |r| r.len() >= minions)
            .await
            .ok_or_else(|| match self.quiet {
                Some(q) => format!(
                    "returns of {jid} missing after {:?} or {q:?} without any return",
                    self.timeout
                ),
                None => format!("returns of {jid} missing after {:?}", self.timeout),
            })?;
        if got
            .iter()
            .all(|(_, d)| d.get("return") == Some(&Value::Bool(true)))
        {
            Ok(())
        } else {
            Err(format!("a minion did not answer true for {jid}"))
        }
    }

    /// A raw `publish` of `test.ping` to `*`; the jid and how many minions the master expects.
    async fn raw_publish(&self) -> Result<(String, usize), String> {
        let Target::Raw { user, .. } = &self.target else {
            return Err("not a raw target".into());
        };
        let jid = gen_jid();
        let mut load = Map::new();
        load.insert("cmd".into(), "publish".into());
        load.insert("tgt".into(), "*".into());
        load.insert("fun".into(), "test.ping".into());
        load.insert("arg".into(), json!([]));
        load.insert("tgt_type".into(), "glob".into());
        load.insert("ret".into(), "".into());
        load.insert("jid".into(), jid.clone().into());
        load.insert("user".into(), user.clone().into());
        load.insert("kwargs".into(), json!({"token": self.token}));
        let reply = self.request(&load).await?;
        let minions = reply
            .get("load")
            .and_then(|l| l.get("minions"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if minions < self.args.minions {
            return Err(format!(
                "publish matched {minions} minions: {}",
                short(&reply)
            ));
        }
        Ok((jid, minions))
    }

    /// One request of the scenario, checked.
    async fn once(&self, conn: &mut Conn) -> Result<(), String> {
        let n = self.args.minions;
        let token = self.token.as_str();
        match (&self.target, self.args.scenario) {
            (Target::Http { addr }, Scenario::Login) => {
                let v = conn.post(addr, "/login", None, &self.credentials()).await?;
                check_token(&first_return(v)?).map(drop)
            }
            (Target::Http { addr }, Scenario::Runner) => {
                let body = json!([{"client": "runner", "fun": "test.arg", "arg": ["bench"]}]);
                let v = conn.post(addr, "/", Some(token), &body).await?;
                check_runner(&first_return(v)?)
            }
            (Target::Http { addr }, Scenario::Wheel) => {
                let body = json!([{"client": "wheel", "fun": "key.list_all"}]);
                let v = conn.post(addr, "/", Some(token), &body).await?;
                check_wheel(&first_return(v)?, n)
            }
            (Target::Http { addr }, Scenario::Local) => {
                let body = json!([{"client": "local", "tgt": "*", "fun": "test.ping"}]);
                let v = conn.post(addr, "/", Some(token), &body).await?;
                check_pings(&first_return(v)?, n)
            }
            (Target::Http { addr }, Scenario::Async) => {
                let body = json!([{"client": "local_async", "tgt": "*", "fun": "test.ping"}]);
                let v = first_return(conn.post(addr, "/", Some(token), &body).await?)?;
                let jid = v.get("jid").and_then(Value::as_str).unwrap_or("");
                let minions = v
                    .get("minions")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                if jid.is_empty() || minions < n {
                    return Err(format!("local_async: {}", short(&v)));
                }
                let fresh = self
                    .jids
                    .lock()
                    .map(|mut seen| seen.insert(jid.to_owned()))
                    .unwrap_or(true);
                if !fresh {
                    return Err(format!("local_async: jid {jid} answered for two jobs"));
                }
                self.pings(jid, minions).await
            }
            (Target::Raw { .. }, Scenario::Login) => {
                check_token(&self.raw(self.mk_token_load()).await?).map(drop)
            }
            (Target::Raw { .. }, Scenario::Runner) => {
                let mut load = Map::new();
                load.insert("cmd".into(), "runner".into());
                load.insert("fun".into(), "test.arg".into());
                load.insert("kwarg".into(), json!({"arg": ["bench"], "kwarg": {}}));
                let reply = self.raw(load).await?;
                let jid = reply.get("jid").and_then(Value::as_str).unwrap_or("");
                if jid.is_empty() {
                    return Err(format!("runner: {}", short(&reply)));
                }
                let got = self
                    .returns()?
                    .wait(jid, self.timeout, None, |r| !r.is_empty())
                    .await
                    .ok_or_else(|| format!("runner {jid} did not return"))?;
                let ret = got
                    .first()
                    .and_then(|(_, d)| d.get("return"))
                    .cloned()
                    .unwrap_or(Value::Null);
                check_runner(&ret)
            }
            (Target::Raw { .. }, Scenario::Wheel) => {
                let mut load = Map::new();
                load.insert("cmd".into(), "wheel".into());
                load.insert("fun".into(), "key.list_all".into());
                check_wheel(&self.raw(load).await?, n)
            }
            (Target::Raw { .. }, Scenario::Local | Scenario::Async) => {
                let (jid, minions) = self.raw_publish().await?;
                self.pings(&jid, minions).await
            }
        }
    }

    async fn login(&self) -> Result<String, String> {
        match &self.target {
            Target::Http { addr } => {
                let v = Conn::new()
                    .post(addr, "/login", None, &self.credentials())
                    .await?;
                check_token(&first_return(v)?)
            }
            Target::Raw { .. } => check_token(&self.raw(self.mk_token_load()).await?),
        }
    }
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    ok: usize,
    errors: usize,
    /// Of `errors`, those the master caused (see [`MASTER_FAULT`]).
    master_errors: usize,
    first_error: Option<String>,
    latencies_ms: Vec<f64>,
}

impl Tally {
    fn record(&mut self, started: Instant, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latencies_ms
                    .push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Err(e) => {
                self.errors += 1;
                if e.starts_with(MASTER_FAULT) {
                    self.master_errors += 1;
                }
                self.note(e);
            }
        }
    }

    /// Keeps the first error, preferring one the master did not cause.
    fn note(&mut self, e: String) {
        let replace = match &self.first_error {
            None => true,
            Some(kept) => kept.starts_with(MASTER_FAULT) && !e.starts_with(MASTER_FAULT),
        };
        if replace {
            self.first_error = Some(e);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.master_errors += other.master_errors;
        if let Some(e) = other.first_error {
            self.note(e);
        }
        self.latencies_ms.extend(other.latencies_ms);
    }
}

pub async fn load(args: LoadArgs) -> Result<(), String> {
    let cfg = MasterConfig::load(&args.master_config).map_err(|e| e.to_string())?;
    let opts = MasterOptions::from_config(&cfg).map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(args.timeout);
    let target = match &args.url {
        Some(url) => Target::Http {
            addr: host_port(url),
        },
        None => {
            // One connection per worker: the raw ceiling is the master with nothing in front.
            let size = args.concurrency.max(1);
            Target::Raw {
                pool: MasterPool::new(opts.pool(size, size * 4, Duration::from_secs(10))),
                user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
            }
        }
    };
    let needs_bus = matches!(args.scenario, Scenario::Async)
        || (args.url.is_none() && matches!(args.scenario, Scenario::Runner | Scenario::Local));
    let returns = if needs_bus {
        Some(Returns::start(&opts.bus_pub()).await?)
    } else {
        None
    };
    let quiet = (args.quiet > 0).then(|| Duration::from_secs(args.quiet));
    let mut ctx = Ctx {
        args,
        target,
        token: String::new(),
        returns,
        timeout,
        quiet,
        jids: Default::default(),
    };
    ctx.token = ctx.login().await.map_err(|e| format!("login: {e}"))?;
    let ctx = Arc::new(ctx);

    let started = Instant::now();
    let mut tally = Tally::default();
    if ctx.args.scenario == Scenario::Async {
        let gate = Arc::new(tokio::sync::Semaphore::new(ctx.args.concurrency.max(1)));
        let mut jobs = Vec::with_capacity(ctx.args.jobs);
        for _ in 0..ctx.args.jobs {
            let ctx = ctx.clone();
            let gate = gate.clone();
            jobs.push(tokio::spawn(async move {
                let mut t = Tally::default();
                let Ok(_permit) = gate.acquire().await else {
                    return t;
                };
                let at = Instant::now();
                t.record(at, ctx.once(&mut Conn::new()).await);
                t
            }));
        }
        for j in jobs {
            tally.merge(j.await.unwrap_or_default());
        }
    } else {
        let until = Instant::now() + Duration::from_secs_f64(ctx.args.seconds);
        let mut workers = Vec::with_capacity(ctx.args.concurrency);
        for _ in 0..ctx.args.concurrency.max(1) {
            let ctx = ctx.clone();
            workers.push(tokio::spawn(async move {
                let mut t = Tally::default();
                let mut conn = Conn::new();
                while Instant::now() < until {
                    let at = Instant::now();
                    let r = ctx.once(&mut conn).await;
                    if r.is_err() {
                        // A broken connection is not reused.
                        conn = Conn::new();
                    }
                    t.record(at, r);
                }
                t
            }));
        }
        for w in workers {
            tally.merge(w.await.unwrap_or_default());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    tally
        .latencies_ms
        .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let result = json!({
        "target": ctx.args.name,
        "scenario": ctx.args.scenario.name(),
        "concurrency": ctx.args.concurrency,
        "ok": tally.ok,
        "errors": tally.errors,
        "master_errors": tally.master_errors,
        "seconds": seconds,
        "rps": tally.ok as f64 / seconds.max(1e-9),
        "p50_ms": percentile(&tally.latencies_ms, 50.0),
        "p99_ms": percentile(&tally.latencies_ms, 99.0),
        "first_error": tally.first_error,
    });
    println!("{result}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped as the answer of a Salt 3008.4 master in a soak run when two of its workers drew
    /// the same jid (its log: "Exception occurred while introspecting key.list_all: …").
    fn master_fault() -> Value {
        json!({"tag": "salt/wheel/20261126233232655202", "data": {
            "fun": "wheel.key.list_all", "jid": "20261126233232655202",
            "tag": "salt/wheel/20261126233232655202", "user": "saltdev", "success": false,
            "return": "Exception occurred in wheel key.list_all: SaltCacheError: \
                       /tmp/x/jobs/99/5ce7/.minions.p does not exist"}})
    }

    #[test]
    fn wheel_answers_are_told_apart() {
        let is_master = |r: Result<(), String>| r.err().map(|e| e.starts_with(MASTER_FAULT));
        let good = json!({"data": {"success": true,
                                   "return": {"minions": ["m1", "m2"]}}});
        assert_eq!(check_wheel(&good, 2), Ok(()));
        assert_eq!(is_master(check_wheel(&good, 3)), Some(false));
        assert_eq!(is_master(check_wheel(&master_fault(), 2)), Some(true));
        let wrong = json!({"data": {"success": false, "return": "denied"}});
        assert_eq!(is_master(check_wheel(&wrong, 2)), Some(false));
    }

    #[test]
    fn tally_counts_master_faults_and_keeps_the_target_error_first() {
        let mut t = Tally::default();
        let at = Instant::now();
        t.record(at, check_wheel(&master_fault(), 2));
        t.record(at, Err("key.list_all: {}".into()));
        t.record(at, Ok(()));
        let mut total = Tally::default();
        total.merge(t);
        assert_eq!((total.ok, total.errors, total.master_errors), (1, 2, 1));
        assert_eq!(total.first_error.as_deref(), Some("key.list_all: {}"));
    }
}
