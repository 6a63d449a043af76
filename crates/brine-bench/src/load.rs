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
//! * `lookup`: `local_async test.ping`, then `GET /jobs/<jid>` every `--poll-ms` until it holds
//!   every return [the raw target: `publish`, until every return is on the bus].
//! * `batch`: `local_batch test.ping` with `--batch`; the returns of all batches together must
//!   hold every minion (the raw target has no batch: an error).
//! * `minions`: `GET /minions` (`grains.items` on `*`); every minion's grains must be there
//!   [`publish grains.items`, every return on the bus].
//! * `keys`: `GET /keys`; every minion must be accepted [`wheel key.list_all`].
//! * `jobs`: `GET /jobs`; every expected jid must be listed [`runner jobs.list_jobs`].
//! * `jobs-page`: `GET /jobs?limit=50` (Brine's paging): 50 jobs, newest first.
//!
//! With `--targets-file` (see [`crate::targets`]) worker w targets line w of the file and a
//! complete answer is the exact set of ids on that line; without it, `*` and `--minions`.
//! With `--requests K` every worker sends K requests instead of running for `--seconds`.
//!
//! `login`..`local` run for `--seconds` with `--concurrency` workers, each on its own
//! connection, each sending its next request when the previous one was answered. A request
//! counts only when its answer is right. Prints one JSON line: `{"target", "scenario",
//! "concurrency", "ok", "errors", "master_errors", "seconds", "rps", "p50_ms", "p99_ms",
//! "first_error", "first_error_ms", "entries_min", "entries_max", "bytes_mean",
//! "find_job_publishes", "find_job_jobs", "find_job_minions"}`; `master_errors` counts the
//! errors the master answered itself (its own exception text), which any salt-api in front of
//! it would pass on; `entries_*` are the sizes of the checked answers (minions, or jobs of
//! `jobs`), `bytes_mean` their mean body size (HTTP), `find_job_*` the `saltutil.find_job`
//! publishes seen on the master's bus during the run (publishes, jobs probed, minions probed).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use salt_wire::config::{MasterConfig, MasterOptions};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;

use crate::raw::{gen_jid, short, RawMaster};
use crate::returns::Returns;
use crate::targets::{self, Line, Want};
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
    /// `local_async`, then `GET /jobs/<jid>` until it holds every return.
    Lookup,
    /// `local_batch` with `--batch`.
    Batch,
    /// `GET /minions` (all grains).
    Minions,
    /// `GET /keys`.
    Keys,
    /// `GET /jobs` (the job cache's listing).
    Jobs,
    /// `GET /jobs?limit=50` (Brine's paging): 50 jobs, newest first.
    JobsPage,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Login => "login",
            Scenario::Runner => "runner",
            Scenario::Wheel => "wheel",
            Scenario::Local => "local",
            Scenario::Async => "async",
            Scenario::Lookup => "lookup",
            Scenario::Batch => "batch",
            Scenario::Minions => "minions",
            Scenario::Keys => "keys",
            Scenario::Jobs => "jobs",
            Scenario::JobsPage => "jobs-page",
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
    /// Requests per worker; 0: as many as fit in `--seconds`.
    #[arg(long, default_value_t = 0)]
    requests: usize,
    /// Jobs of the `async` scenario.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Minions that must answer (`local`, `async`) or be listed (`wheel`).
    #[arg(long, default_value_t = 1)]
    minions: usize,
    /// Per-worker targets and the exact ids of a complete answer (see `crate::targets`).
    #[arg(long)]
    targets_file: Option<PathBuf>,
    /// Pause between two `GET /jobs/<jid>` of the `lookup` scenario, milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// `batch` of the `batch` scenario.
    #[arg(long, default_value = "10%")]
    batch: String,
    #[command(flatten)]
    creds: crate::Creds,
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
    Raw(RawMaster),
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
    /// `--targets-file`, or the default line (`*`, glob, no ids: `--minions` counts).
    lines: Vec<Line>,
}

/// One HTTP/1.1 connection, reopened when the server closed it.
struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Body size of the last answer.
    bytes: usize,
}

impl Conn {
    fn new() -> Self {
        Conn {
            sender: None,
            bytes: 0,
        }
    }

    async fn post(
        &mut self,
        addr: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Value, String> {
        self.call("POST", addr, path, token, Some(body)).await
    }

    async fn get(&mut self, addr: &str, path: &str, token: &str) -> Result<Value, String> {
        self.call("GET", addr, path, Some(token), None).await
    }

    async fn call(
        &mut self,
        method: &str,
        addr: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
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
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", addr)
            .header("Accept", "application/json");
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        let payload = body.map(Value::to_string).unwrap_or_default();
        let req = req
            .body(Full::new(Bytes::from(payload)))
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
        self.bytes = bytes.len();
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
            other => Err(format!(
                "no return list: {}",
                short(&other.unwrap_or_default())
            )),
        },
        other => Err(format!("answer is not a map: {}", short(&other))),
    }
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

/// A key listing (`{"minions": [...], ...}`) holds every id; the number of accepted keys.
fn check_keys(listing: &Value, ids: &[String]) -> Result<usize, String> {
    let listed: Map<String, Value> = listing
        .get("minions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|id| (id.to_owned(), Value::Bool(true)))
                .collect()
        })
        .ok_or_else(|| format!("no minions list: {}", short(listing)))?;
    targets::check(&listed, ids, Want::Present)
}

fn check_pings(ret: &Value, minions: usize) -> Result<usize, String> {
    match ret.as_object() {
        Some(m) if m.len() >= minions && m.values().all(|v| v == &Value::Bool(true)) => Ok(m.len()),
        _ => Err(format!("test.ping: {}", short(ret))),
    }
}

/// An answer map checked against a line: its exact ids, or (without ids) `minions` pings.
/// A page of `n` jobs, newest first, each listed with its function.
fn check_page(page: &Value, n: usize) -> Result<usize, String> {
    let Some(jobs) = page.as_object() else {
        return Err(format!("not a map of jobs: {}", short(page)));
    };
    if jobs.len() != n {
        return Err(format!("{} jobs in a page of {n}", jobs.len()));
    }
    let jids: Vec<&String> = jobs.keys().collect();
    if jids.windows(2).any(|w| w[0] <= w[1]) {
        return Err("the page is not newest first".into());
    }
    match jobs.iter().find(|(_, j)| j.get("Function").is_none()) {
        Some((jid, j)) => Err(format!("{jid} has no Function: {}", short(j))),
        None => Ok(n),
    }
}

fn check_line(ret: &Value, line: &Line, minions: usize, want: Want) -> Result<usize, String> {
    if line.ids.is_empty() {
        return check_pings(ret, minions);
    }
    match ret.as_object() {
        Some(m) => targets::check(m, &line.ids, want),
        None => Err(format!("not a map of returns: {}", short(ret))),
    }
}

impl Ctx {
    fn raw_master(&self) -> Result<&RawMaster, String> {
        match &self.target {
            Target::Raw(raw) => Ok(raw),
            Target::Http { .. } => Err("not a raw target".into()),
        }
    }

    /// A raw command authenticated with the run's token (unless it carries credentials).
    async fn raw(&self, mut load: Map<String, Value>) -> Result<Value, String> {
        if !load.contains_key("username") {
            load.insert("token".into(), self.token.clone().into());
        }
        self.raw_master()?.request(&load, self.timeout).await
    }

    /// The eauth credentials, as a `/login` body.
    fn credentials(&self) -> Value {
        self.args.creds.json()
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

    fn missing(&self, jid: &str) -> String {
        match self.quiet {
            Some(q) => format!(
                "returns of {jid} missing after {:?} or {q:?} without any return",
                self.timeout
            ),
            None => format!("returns of {jid} missing after {:?}", self.timeout),
        }
    }

    /// Waits for one return per minion of `jid` (`minions` of them, or every id of `line`);
    /// checks them as `want` says; the number of returns.
    async fn bus_returns(
        &self,
        jid: &str,
        minions: usize,
        line: &Line,
        want: Want,
    ) -> Result<usize, String> {
        let ids = line.ids.clone();
        let got = self
            .returns()?
            .wait(jid, self.timeout, self.quiet, |r| {
                if ids.is_empty() {
                    r.len() >= minions
                } else {
                    targets::covered(r, &ids)
                }
            })
            .await
            .ok_or_else(|| self.missing(jid))?;
        if line.ids.is_empty() {
            if got
                .iter()
                .all(|(_, d)| d.get("return") == Some(&Value::Bool(true)))
            {
                return Ok(got.len());
            }
            return Err(format!("a minion did not answer true for {jid}"));
        }
        targets::check(&targets::as_answer(&got), &line.ids, want)
    }

    /// A raw `publish` of `fun` to the line's target, then its returns from the bus.
    async fn raw_job(&self, line: &Line, fun: &str, want: Want) -> Result<usize, String> {
        let jid = gen_jid();
        let matched = self
            .raw_master()?
            .publish(
                &self.token,
                &jid,
                &line.tgt,
                &line.tgt_type,
                fun,
                self.timeout,
            )
            .await?;
        if matched.len() < self.args.minions.max(line.ids.len()) {
            return Err(format!("publish matched {} minions", matched.len()));
        }
        self.bus_returns(&jid, matched.len(), line, want).await
    }

    /// A raw runner call; its return from the bus.
    async fn raw_runner(&self, fun: &str, kwarg: Value) -> Result<Value, String> {
        let mut load = Map::new();
        load.insert("cmd".into(), "runner".into());
        load.insert("fun".into(), fun.into());
        load.insert("kwarg".into(), kwarg);
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
        Ok(got
            .into_iter()
            .next()
            .and_then(|(_, mut d)| d.get_mut("return").map(Value::take))
            .unwrap_or(Value::Null))
    }

    /// The `local` chunk of a line.
    fn chunk(line: &Line, client: &str) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("client".into(), client.into());
        c.insert("tgt".into(), line.tgt.clone().into());
        if line.tgt_type != "glob" {
            c.insert("tgt_type".into(), line.tgt_type.clone().into());
        }
        c.insert("fun".into(), "test.ping".into());
        c
    }

    /// `local_async` over HTTP: the jid and its minion count, after checking the answer names
    /// a job for enough minions and a jid never seen before in this run.
    async fn http_async(
        &self,
        conn: &mut Conn,
        addr: &str,
        line: &Line,
    ) -> Result<(String, usize), String> {
        let body = Value::Array(vec![Value::Object(Self::chunk(line, "local_async"))]);
        let v = first_return(conn.post(addr, "/", Some(&self.token), &body).await?)?;
        let jid = v.get("jid").and_then(Value::as_str).unwrap_or("");
        let minions = v
            .get("minions")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if jid.is_empty() || minions < self.args.minions.max(line.ids.len()) {
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
        Ok((jid.to_owned(), minions))
    }

    /// `local_async`, then `GET /jobs/<jid>` until it holds every return of the line (the
    /// request's time-out ends it otherwise).
    async fn http_lookup(&self, conn: &mut Conn, addr: &str, line: &Line) -> Result<usize, String> {
        let (jid, _) = self.http_async(conn, addr, line).await?;
        let path = format!("/jobs/{jid}");
        loop {
            tokio::time::sleep(Duration::from_millis(self.args.poll_ms)).await;
            let v = first_return(conn.get(addr, &path, &self.token).await?)?;
            // rest_tornado answers the runner's `jobs.list_job` itself: the returns are under
            // `Result`, each as `{"return": ...}`.
            let v = match v.get("Result").and_then(Value::as_object) {
                Some(r) => Value::Object(
                    r.iter()
                        .map(|(id, x)| (id.clone(), x.get("return").cloned().unwrap_or_default()))
                        .collect(),
                ),
                None => v,
            };
            if let Ok(n) = check_line(&v, line, self.args.minions, Want::True) {
                return Ok(n);
            }
        }
    }

    /// `local_batch`: every return of every batch, merged, holds the line's ids.
    async fn http_batch(&self, conn: &mut Conn, addr: &str, line: &Line) -> Result<usize, String> {
        let mut chunk = Self::chunk(line, "local_batch");
        chunk.insert("batch".into(), self.args.batch.clone().into());
        let body = Value::Array(vec![Value::Object(chunk)]);
        let v = conn.post(addr, "/", Some(&self.token), &body).await?;
        let parts = v
            .get("return")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("no return list: {}", short(&v)))?;
        let mut merged = Map::new();
        for part in parts {
            if let Some(m) = part.as_object() {
                merged.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        check_line(&Value::Object(merged), line, self.args.minions, Want::True)
    }

    /// One request of the scenario, checked; the number of entries in the answer.
    async fn once(&self, conn: &mut Conn, line: &Line) -> Result<usize, String> {
        let n = self.args.minions;
        let token = self.token.as_str();
        match (&self.target, self.args.scenario) {
            (Target::Http { addr }, Scenario::Login) => {
                let v = conn.post(addr, "/login", None, &self.credentials()).await?;
                check_token(&first_return(v)?).map(|_| 1)
            }
            (Target::Http { addr }, Scenario::Runner) => {
                let body = json!([{"client": "runner", "fun": "test.arg", "arg": ["bench"]}]);
                let v = conn.post(addr, "/", Some(token), &body).await?;
                check_runner(&first_return(v)?).map(|()| 1)
            }
            (Target::Http { addr }, Scenario::Wheel) => {
                let body = json!([{"client": "wheel", "fun": "key.list_all"}]);
                let v = conn.post(addr, "/", Some(token), &body).await?;
                check_wheel(&first_return(v)?, n).map(|()| n)
            }
            (Target::Http { addr }, Scenario::Local) => {
                let body = Value::Array(vec![Value::Object(Self::chunk(line, "local"))]);
                let v = conn.post(addr, "/", Some(token), &body).await?;
                check_line(&first_return(v)?, line, n, Want::True)
            }
            (Target::Http { addr }, Scenario::Async) => {
                let (jid, minions) = self.http_async(conn, addr, line).await?;
                self.bus_returns(&jid, minions, line, Want::True).await
            }
            (Target::Http { addr }, Scenario::Lookup) => self.http_lookup(conn, addr, line).await,
            (Target::Http { addr }, Scenario::Batch) => self.http_batch(conn, addr, line).await,
            (Target::Http { addr }, Scenario::Minions) => {
                let v = first_return(conn.get(addr, "/minions", token).await?)?;
                check_line(&v, line, n, Want::Grains)
            }
            (Target::Http { addr }, Scenario::Keys) => {
                let v = conn.get(addr, "/keys", token).await?;
                let listing = v.get("return").cloned().unwrap_or_default();
                check_keys(&listing, &line.ids)
            }
            (Target::Http { addr }, Scenario::Jobs) => {
                let v = first_return(conn.get(addr, "/jobs", token).await?)?;
                check_line(&v, line, n, Want::Present)
            }
            (Target::Raw(_), Scenario::Login) => {
                check_token(&self.raw(self.mk_token_load()).await?).map(|_| 1)
            }
            (Target::Raw(_), Scenario::Runner) => {
                let ret = self
                    .raw_runner("test.arg", json!({"arg": ["bench"], "kwarg": {}}))
                    .await?;
                check_runner(&ret).map(|()| 1)
            }
            (Target::Raw(_), Scenario::Wheel) => {
                let mut load = Map::new();
                load.insert("cmd".into(), "wheel".into());
                load.insert("fun".into(), "key.list_all".into());
                check_wheel(&self.raw(load).await?, n).map(|()| n)
            }
            (Target::Raw(_), Scenario::Keys) => {
                let mut load = Map::new();
                load.insert("cmd".into(), "wheel".into());
                load.insert("fun".into(), "key.list_all".into());
                let v = self.raw(load).await?;
                let listing = v
                    .get("data")
                    .and_then(|d| d.get("return"))
                    .cloned()
                    .unwrap_or_default();
                check_keys(&listing, &line.ids)
            }
            (Target::Raw(_), Scenario::Local | Scenario::Async | Scenario::Lookup) => {
                self.raw_job(line, "test.ping", Want::True).await
            }
            (Target::Raw(_), Scenario::Minions) => {
                self.raw_job(line, "grains.items", Want::Grains).await
            }
            (Target::Http { addr }, Scenario::JobsPage) => check_page(
                &first_return(conn.get(addr, "/jobs?limit=50", token).await?)?,
                50,
            ),
            (Target::Raw(_), Scenario::JobsPage) => {
                Err("the raw master has no paging (jobs.list_jobs lists every job)".into())
            }
            (Target::Raw(_), Scenario::Jobs) => {
                let v = self.raw_runner("jobs.list_jobs", json!({})).await?;
                check_line(&v, line, n, Want::Present)
            }
            (Target::Raw(_), Scenario::Batch) => {
                Err("the raw target has no batch client (local_batch is the API's)".into())
            }
        }
    }

    /// `once` within the run's limit for one request (a lookup's polls and a batch's
    /// batches included).
    async fn once_limited(&self, conn: &mut Conn, line: &Line) -> Result<usize, String> {
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), self.once(conn, line))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("no complete answer within {:?}", self.timeout)),
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
            Target::Raw(_) => check_token(&self.raw(self.mk_token_load()).await?),
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
    /// How long the request of `first_error` took, ms.
    first_error_ms: Option<f64>,
    latencies_ms: Vec<f64>,
    /// Entries of each checked answer.
    entries: Vec<usize>,
    /// Body bytes of each checked answer (HTTP).
    bytes: Vec<usize>,
}

impl Tally {
    #[cfg(test)]
    fn record(&mut self, started: Instant, result: Result<(), String>) {
        self.record_sized(started, result.map(|()| (0, 0)));
    }

    /// A request's result with (entries, bytes) of its answer.
    fn record_sized(&mut self, started: Instant, result: Result<(usize, usize), String>) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok((entries, bytes)) => {
                self.ok += 1;
                self.latencies_ms.push(ms);
                self.entries.push(entries);
                if bytes > 0 {
                    self.bytes.push(bytes);
                }
            }
            Err(e) => {
                self.errors += 1;
                if e.starts_with(MASTER_FAULT) {
                    self.master_errors += 1;
                }
                self.note(e, Some(ms));
            }
        }
    }

    /// Keeps the first error, preferring one the master did not cause.
    fn note(&mut self, e: String, ms: Option<f64>) {
        let replace = match &self.first_error {
            None => true,
            Some(kept) => kept.starts_with(MASTER_FAULT) && !e.starts_with(MASTER_FAULT),
        };
        if replace {
            self.first_error = Some(e);
            self.first_error_ms = ms;
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.master_errors += other.master_errors;
        if let Some(e) = other.first_error {
            self.note(e, other.first_error_ms);
        }
        self.latencies_ms.extend(other.latencies_ms);
        self.entries.extend(other.entries);
        self.bytes.extend(other.bytes);
    }
}

pub async fn load(args: LoadArgs) -> Result<(), String> {
    let cfg = MasterConfig::load(&args.master_config).map_err(|e| e.to_string())?;
    let opts = MasterOptions::from_config(&cfg).map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(args.timeout);
    let lines = match &args.targets_file {
        Some(path) => targets::read(path)?,
        None => vec![Line {
            tgt: "*".into(),
            tgt_type: "glob".into(),
            ids: Arc::default(),
        }],
    };
    let target = match &args.url {
        Some(url) => Target::Http {
            addr: host_port(url),
        },
        // One connection per worker: the raw ceiling is the master with nothing in front.
        None => Target::Raw(RawMaster::new(&opts, args.concurrency)),
    };
    let raw = args.url.is_none();
    let needs_bus = match args.scenario {
        Scenario::Async => true,
        Scenario::Runner | Scenario::Jobs | Scenario::Minions | Scenario::Lookup => raw,
        // With a targets file the run counts the find_job probes the target caused.
        Scenario::Local | Scenario::Batch => raw || args.targets_file.is_some(),
        Scenario::Login | Scenario::Wheel | Scenario::Keys | Scenario::JobsPage => false,
    };
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
        lines,
    };
    ctx.token = ctx.login().await.map_err(|e| format!("login: {e}"))?;
    let ctx = Arc::new(ctx);

    let started = Instant::now();
    let mut tally = Tally::default();
    if ctx.args.scenario == Scenario::Async {
        let gate = Arc::new(tokio::sync::Semaphore::new(ctx.args.concurrency.max(1)));
        let mut jobs = Vec::with_capacity(ctx.args.jobs);
        for j in 0..ctx.args.jobs {
            let ctx = ctx.clone();
            let gate = gate.clone();
            jobs.push(tokio::spawn(async move {
                let mut t = Tally::default();
                let Ok(_permit) = gate.acquire().await else {
                    return t;
                };
                let line = &ctx.lines[j % ctx.lines.len()];
                let at = Instant::now();
                let mut conn = Conn::new();
                let r = ctx.once_limited(&mut conn, line).await;
                t.record_sized(at, r.map(|n| (n, conn.bytes)));
                t
            }));
        }
        for j in jobs {
            tally.merge(j.await.unwrap_or_default());
        }
    } else {
        let until = Instant::now() + Duration::from_secs_f64(ctx.args.seconds);
        let mut workers = Vec::with_capacity(ctx.args.concurrency);
        for w in 0..ctx.args.concurrency.max(1) {
            let ctx = ctx.clone();
            workers.push(tokio::spawn(async move {
                let mut t = Tally::default();
                let mut conn = Conn::new();
                let line = &ctx.lines[w % ctx.lines.len()];
                let mut sent = 0usize;
                loop {
                    let more = if ctx.args.requests > 0 {
                        sent < ctx.args.requests
                    } else {
                        Instant::now() < until
                    };
                    if !more {
                        break;
                    }
                    sent += 1;
                    let at = Instant::now();
                    let r = ctx.once_limited(&mut conn, line).await;
                    let bytes = conn.bytes;
                    if r.is_err() {
                        // A broken connection is not reused.
                        conn = Conn::new();
                    }
                    t.record_sized(at, r.map(|n| (n, bytes)));
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
    let probes = ctx
        .returns
        .as_ref()
        .map(|r| r.find_jobs())
        .unwrap_or_default();
    let bytes_mean = (!tally.bytes.is_empty())
        .then(|| tally.bytes.iter().sum::<usize>() as f64 / tally.bytes.len() as f64);
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
        "first_error_ms": tally.first_error_ms,
        "entries_min": tally.entries.iter().min(),
        "entries_max": tally.entries.iter().max(),
        "bytes_mean": bytes_mean,
        "find_job_publishes": ctx.returns.as_ref().map(|_| probes.publishes),
        "find_job_jobs": ctx.returns.as_ref().map(|_| probes.jobs),
        "find_job_minions": ctx.returns.as_ref().map(|_| probes.minions),
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
