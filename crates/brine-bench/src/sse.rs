//! `brine-bench sse`: opens N `/events` streams on a target, fires M events straight into the
//! master's bus (its pull socket), and measures, per event and client, whether it arrived and
//! how long after the bus itself delivered it (the driver also subscribes to the bus, so
//! "delay" is relative to the master, not to the firing). Prints one JSON line of results:
//! `{"target", "clients", "connected", "events", "delivered_pct", "p50_ms", "p99_ms", "max_ms"}`.
//!
//! With `--job-returns` nothing is fired: once the streams are open the driver publishes one
//! `test.ping` job straight to the master (`salt-wire`, `--master-config`) to the first line of
//! `--targets-file`, and the events measured are that job's `salt/job/<jid>/ret/<id>`, one per
//! expected minion (`events` is then their number). With `--jobs K` (K > 1) it publishes K
//! jobs instead, job k to the k-th minion of that line alone, and the events measured are
//! their K returns.
//!
//! Brine's own streams (`--job-returns` only):
//! * `--filter own`: stream i opens `/events?tag=salt/job/<jid of job i mod K>/*` and is
//!   measured on that job's returns alone; `--filter idle`: `/events?tag=brine/bench/idle/*`,
//!   a filter nothing matches (nothing is measured: compare the server's CPU).
//! * `--job-feed`: stream i opens `GET /jobs/<jid of job i mod K>/events` once the jobs are
//!   published, and is measured on that job's returns (replayed or live) and on its
//!   `brine/job/<jid>/complete` event: `complete_p50_ms`/`complete_p99_ms` are the times from
//!   the job's last return on the bus to that event.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use salt_wire::config::{MasterConfig, MasterOptions};
use salt_wire::event::{BusAddr, Firer, Subscription};
use salt_wire::framing::Framing;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::raw::{gen_jid, RawMaster};
use crate::{host_port, percentile, targets};

#[derive(Parser, Debug)]
pub struct SseArgs {
    /// Name of the target in the results.
    #[arg(long)]
    name: String,
    /// Base URL of the target (http://host:port).
    #[arg(long)]
    url: String,
    /// Token for `X-Auth-Token` (log in first).
    #[arg(long)]
    token: String,
    /// Streams to open.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Events to fire.
    #[arg(long, default_value_t = 20)]
    events: usize,
    /// Pause between events, milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// The master's event publisher (`<sock_dir>/master_event_pub.ipc`).
    #[arg(long)]
    bus_pub: String,
    /// The master's event puller (`<sock_dir>/master_event_pull.ipc`).
    #[arg(long)]
    bus_pull: String,
    /// `Accept` header of the stream requests (rest_tornado refuses `text/event-stream` with
    /// 406 and wants `application/json`).
    #[arg(long, default_value = "text/event-stream")]
    accept: String,
    /// Seconds allowed for opening all streams.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,
    /// Seconds to wait for stragglers after the last event.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Measure a job's returns instead of fired events (see the module notes).
    #[arg(long)]
    job_returns: bool,
    /// The master's config file (`--job-returns`).
    #[arg(long)]
    master_config: Option<PathBuf>,
    /// The job's target and expected minions, first line (`--job-returns`; see
    /// `crate::targets`).
    #[arg(long)]
    targets_file: Option<PathBuf>,
    /// Seconds allowed for every return of the job to reach the bus (`--job-returns`).
    #[arg(long, default_value_t = 120)]
    job_timeout: u64,
    /// Jobs to publish (`--job-returns`; see the module notes).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// The streams' tag filter (`--job-returns`; see the module notes).
    #[arg(long, value_enum, default_value_t = Filter::None)]
    filter: Filter,
    /// Open Brine's job feeds instead of `/events` (see the module notes).
    #[arg(long)]
    job_feed: bool,
    #[command(flatten)]
    creds: crate::Creds,
}

/// What the streams let through.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    /// Every event.
    None,
    /// Their own job's events.
    Own,
    /// Nothing that happens.
    Idle,
}

/// How the rest of a tag after the run's prefix names an event: its number (fired events), or
/// a minion id looked up in the expected ones (job returns).
#[derive(Clone)]
enum Keying {
    Numbered,
    Ids(Arc<HashMap<String, usize>>),
}

impl Keying {
    fn key(&self, rest: &str) -> Option<usize> {
        match self {
            Keying::Numbered => rest.parse().ok(),
            Keying::Ids(ids) => ids.get(rest).copied(),
        }
    }
}

/// One client's deliveries: (event index, arrival time), and when a job feed's `complete`
/// event came.
#[derive(Default)]
struct Deliveries {
    got: Vec<(usize, Instant)>,
    complete: Option<Instant>,
}

/// Opens one stream; reports `true` on the ready channel once the response headers arrived,
/// then records every bench event until the stream ends or `stop` fires.
#[allow(clippy::too_many_arguments)]
async fn sse_client(
    addr: String,
    path: String,
    token: String,
    accept: String,
    prefix: String,
    keying: Keying,
    ready: mpsc::Sender<bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Deliveries {
    let mut got = Deliveries::default();
    let opened = async {
        let stream = TcpStream::connect(&addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path.as_str())
            .header("Host", &addr)
            .header("X-Auth-Token", &token)
            .header("Accept", &accept)
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        (resp.status() == 200).then(|| resp.into_body())
    };
    let body = tokio::select! {
        b = opened => b,
        _ = stop.changed() => None,
    };
    let _ = ready.send(body.is_some()).await;
    let Some(mut body) = body else {
        return got;
    };
    let marker = format!("tag: {prefix}");
    let complete = "tag: brine/job/";
    let mut buf = String::new();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = stop.changed() => break,
        };
        let Some(Ok(frame)) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&data));
        while let Some(at) = buf.find('\n') {
            let line: String = buf.drain(..=at).collect();
            let line = line.trim_end();
            if let Some(n) = line.strip_prefix(&marker).and_then(|rest| keying.key(rest)) {
                got.got.push((n, now));
            } else if line.starts_with(complete) && line.ends_with("/complete") {
                got.complete.get_or_insert(now);
            }
        }
    }
    got
}

/// The jobs of `--job-returns`: the master, its token, the target line, the jids.
struct Job {
    master: RawMaster,
    token: String,
    line: targets::Line,
    jids: Vec<String>,
    timeout: Duration,
}

impl Job {
    async fn prepare(args: &SseArgs) -> Result<Job, String> {
        let (Some(config), Some(file)) = (&args.master_config, &args.targets_file) else {
            return Err("--job-returns needs --master-config and --targets-file".into());
        };
        let cfg = MasterConfig::load(config).map_err(|e| e.to_string())?;
        let opts = MasterOptions::from_config(&cfg).map_err(|e| e.to_string())?;
        let line = targets::read(file)?.swap_remove(0);
        let master = RawMaster::new(&opts, 1);
        let mut load = serde_json::Map::new();
        load.insert("cmd".into(), "mk_token".into());
        if let serde_json::Value::Object(creds) = args.creds.json() {
            load.extend(creds);
        }
        let reply = master.request(&load, Duration::from_secs(60)).await?;
        let token = reply
            .get("token")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("mk_token: {}", crate::raw::short(&reply)))?
            .to_owned();
        if args.jobs > 1 && args.jobs > line.ids.len() {
            return Err(format!(
                "--jobs {}: the targets line has {} minions",
                args.jobs,
                line.ids.len()
            ));
        }
        Ok(Job {
            master,
            token,
            line,
            jids: (0..args.jobs.max(1)).map(|_| gen_jid()).collect(),
            timeout: Duration::from_secs(args.job_timeout),
        })
    }

    /// The measured tag prefix, how the rest of a tag names an event, and each job's events.
    fn keying(&self) -> (String, Keying, Vec<Vec<usize>>) {
        if self.jids.len() == 1 {
            let ids: HashMap<String, usize> = self
                .line
                .ids
                .iter()
                .enumerate()
                .map(|(n, id)| (id.clone(), n))
                .collect();
            let all = (0..ids.len()).collect();
            let prefix = format!("salt/job/{}/ret/", self.jids[0]);
            return (prefix, Keying::Ids(Arc::new(ids)), vec![all]);
        }
        // Job k's one return, keyed by its whole tag.
        let tags: HashMap<String, usize> = self
            .jids
            .iter()
            .zip(self.line.ids.iter())
            .enumerate()
            .map(|(k, (jid, id))| (format!("salt/job/{jid}/ret/{id}"), k))
            .collect();
        let per_job = (0..self.jids.len()).map(|k| vec![k]).collect();
        (String::new(), Keying::Ids(Arc::new(tags)), per_job)
    }

    /// Publishes every job (job k to the k-th minion when there are several).
    async fn publish(&self) -> Result<(), String> {
        for (k, jid) in self.jids.iter().enumerate() {
            let (tgt, tgt_type) = if self.jids.len() == 1 {
                (self.line.tgt.as_str(), self.line.tgt_type.as_str())
            } else {
                (self.line.ids[k].as_str(), "glob")
            };
            self.master
                .publish(&self.token, jid, tgt, tgt_type, "test.ping", self.timeout)
                .await?;
        }
        Ok(())
    }
}

/// The path stream `i` opens.
fn stream_path(args: &SseArgs, job: Option<&Job>, i: usize) -> String {
    let Some(j) = job else {
        return "/events".into();
    };
    let jid = &j.jids[i % j.jids.len()];
    if args.job_feed {
        return format!("/jobs/{jid}/events");
    }
    match args.filter {
        Filter::None => "/events".into(),
        Filter::Own => format!("/events?tag=salt/job/{jid}/*"),
        Filter::Idle => "/events?tag=brine/bench/idle/*".into(),
    }
}

pub async fn sse(args: SseArgs) -> Result<(), String> {
    let run_id = format!("{}-{}", args.name, std::process::id());
    let addr = host_port(&args.url);
    let job = if args.job_returns {
        Some(Job::prepare(&args).await?)
    } else {
        None
    };
    let (prefix, keying, per_job) = match &job {
        Some(j) => j.keying(),
        None => (
            format!("brine/bench/{run_id}/"),
            Keying::Numbered,
            vec![(0..args.events).collect()],
        ),
    };
    let expected_events: usize = per_job.iter().map(Vec::len).sum();
    // What stream i is to receive.
    let expects = |i: usize| -> HashSet<usize> {
        if job.is_none() || (args.filter == Filter::None && !args.job_feed) {
            return (0..expected_events).collect();
        }
        if args.filter == Filter::Idle && !args.job_feed {
            return HashSet::new();
        }
        per_job[i % per_job.len()].iter().copied().collect()
    };
    // The driver's own bus subscription: the reference time of every event.
    let mut bus = Subscription::connect(&BusAddr::Unix(args.bus_pub.clone().into()))
        .await
        .map_err(|e| format!("bus subscription: {e}"))?;
    let bus_times: Arc<std::sync::Mutex<HashMap<usize, Instant>>> = Arc::default();
    let bt = bus_times.clone();
    let (bus_prefix, bus_keying) = (prefix.clone(), keying.clone());
    let bus_task = tokio::spawn(async move {
        while let Some(Ok(ev)) = bus.next().await {
            if let Some(n) = ev
                .tag
                .strip_prefix(&bus_prefix)
                .and_then(|rest| bus_keying.key(rest))
            {
                if let Ok(mut m) = bt.lock() {
                    m.entry(n).or_insert_with(Instant::now);
                }
            }
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(args.clients.max(1));
    // A job feed opens once its job exists; other streams open before anything happens.
    let mut published = None;
    if let (true, Some(j)) = (args.job_feed, &job) {
        published = Some(j.publish().await);
    }
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            tokio::spawn(sse_client(
                addr.clone(),
                stream_path(&args, job.as_ref(), i),
                args.token.clone(),
                args.accept.clone(),
                prefix.clone(),
                keying.clone(),
                ready_tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    // Wait until every stream answered (or the connect time is up).
    let mut connected = 0usize;
    let mut answered = 0usize;
    let connect_deadline = tokio::time::Instant::now() + Duration::from_secs(args.connect_timeout);
    while answered < args.clients {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(ok)) => {
                answered += 1;
                connected += usize::from(ok);
            }
            _ => break,
        }
    }
    // Let the streams settle, then fire (or publish the jobs).
    if !args.job_feed {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut job_error = None;
    if let Some(j) = &job {
        let published = match published {
            Some(done) => done,
            None => j.publish().await,
        };
        match published {
            Ok(()) => {
                // Until every return is on the bus, or the jobs' time is up.
                let until = tokio::time::Instant::now() + j.timeout;
                while tokio::time::Instant::now() < until
                    && bus_times.lock().map(|m| m.len()).unwrap_or(0) < expected_events
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(e) => job_error = Some(e),
        }
    } else {
        let mut firer = Firer::connect(
            &BusAddr::Unix(args.bus_pull.clone().into()),
            Framing::LengthPrefixed,
        )
        .await
        .map_err(|e| format!("bus pull: {e}"))?;
        for n in 0..args.events {
            firer
                .fire(
                    &format!("{prefix}{n}"),
                    &json!({"n": n, "pad": "x".repeat(200)}),
                )
                .await
                .map_err(|e| format!("fire: {e}"))?;
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(args.drain)).await;
    let _ = stop_tx.send(true);
    let mut delivered = 0usize;
    let mut expected = 0usize;
    let mut delays = Vec::new();
    let mut completes = Vec::new();
    let bus_times = bus_times.lock().map(|m| m.clone()).unwrap_or_default();
    for (i, c) in clients.into_iter().enumerate() {
        let got = c.await.unwrap_or_default();
        let wanted = expects(i);
        expected += wanted.len();
        let mut seen = HashSet::new();
        for (n, at) in got.got {
            if wanted.contains(&n) && seen.insert(n) {
                delivered += 1;
                if let Some(bus_at) = bus_times.get(&n) {
                    delays.push(at.saturating_duration_since(*bus_at).as_secs_f64() * 1000.0);
                }
            }
        }
        // A job feed's verdict, from its job's last return on the bus.
        let last = wanted.iter().filter_map(|n| bus_times.get(n)).max();
        if let (Some(done), Some(last)) = (got.complete, last) {
            completes.push(done.saturating_duration_since(*last).as_secs_f64() * 1000.0);
        }
    }
    bus_task.abort();
    let by = |a: &f64, b: &f64| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
    delays.sort_by(by);
    completes.sort_by(by);
    let result = json!({
        "target": args.name,
        "clients": args.clients,
        "connected": connected,
        "events": expected_events,
        "job_error": job_error,
        "bus_events_seen": bus_times.len(),
        "delivered_pct": if expected == 0 { 0.0 } else { 100.0 * delivered as f64 / expected as f64 },
        "p50_ms": percentile(&delays, 50.0),
        "p99_ms": percentile(&delays, 99.0),
        "max_ms": delays.last().copied().unwrap_or(f64::NAN),
        "filter": format!("{:?}", args.filter).to_lowercase(),
        "jobs": args.jobs,
        "job_feed": args.job_feed,
        "completes": completes.len(),
        "complete_p50_ms": percentile(&completes, 50.0),
        "complete_p99_ms": percentile(&completes, 99.0),
    });
    println!("{result}");
    Ok(())
}
