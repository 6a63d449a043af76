//! `brine-bench sse`: opens N `/events` streams on a target, fires M events straight into the
//! master's bus (its pull socket), and measures, per event and client, whether it arrived and
//! how long after the bus itself delivered it (the driver also subscribes to the bus, so
//! "delay" is relative to the master, not to the firing). Prints one JSON line of results:
//! `{"target", "clients", "connected", "events", "delivered_pct", "p50_ms", "p99_ms", "max_ms"}`.
//!
//! With `--job-returns` nothing is fired: once the streams are open the driver publishes one
//! `test.ping` job straight to the master (`salt-wire`, `--master-config`) to the first line of
//! `--targets-file`, and the events measured are that job's `salt/job/<jid>/ret/<id>`, one per
//! expected minion (`events` is then their number).

use std::collections::HashMap;
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
    #[command(flatten)]
    creds: crate::Creds,
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

/// One client's deliveries: (event index, arrival time).
type Deliveries = Vec<(usize, Instant)>;

/// Opens one stream; reports `true` on the ready channel once the response headers arrived,
/// then records every bench event until the stream ends or `stop` fires.
async fn sse_client(
    addr: String,
    token: String,
    accept: String,
    prefix: String,
    keying: Keying,
    ready: mpsc::Sender<bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Deliveries {
    let mut got = Vec::new();
    let opened = async {
        let stream = TcpStream::connect(&addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/events")
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
            if let Some(n) = line
                .trim_end()
                .strip_prefix(&marker)
                .and_then(|rest| keying.key(rest))
            {
                got.push((n, now));
            }
        }
    }
    got
}

/// The job of `--job-returns`: the master, its token, the target line, the jid.
struct Job {
    master: RawMaster,
    token: String,
    line: targets::Line,
    jid: String,
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
        Ok(Job {
            master,
            token,
            line,
            jid: gen_jid(),
            timeout: Duration::from_secs(args.job_timeout),
        })
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
    let (prefix, keying, expected_events) = match &job {
        Some(j) => {
            let ids: HashMap<String, usize> = j
                .line
                .ids
                .iter()
                .enumerate()
                .map(|(n, id)| (id.clone(), n))
                .collect();
            let n = ids.len();
            (
                format!("salt/job/{}/ret/", j.jid),
                Keying::Ids(Arc::new(ids)),
                n,
            )
        }
        None => (
            format!("brine/bench/{run_id}/"),
            Keying::Numbered,
            args.events,
        ),
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
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(tokio::spawn(sse_client(
            addr.clone(),
            args.token.clone(),
            args.accept.clone(),
            prefix.clone(),
            keying.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
        )));
    }
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
    // Let the streams settle, then fire (or publish the job).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut job_error = None;
    if let Some(j) = &job {
        let published = j
            .master
            .publish(
                &j.token,
                &j.jid,
                &j.line.tgt,
                &j.line.tgt_type,
                "test.ping",
                j.timeout,
            )
            .await;
        match published {
            Ok(_) => {
                // Until every return is on the bus, or the job's time is up.
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
    let mut delays = Vec::new();
    let bus_times = bus_times.lock().map(|m| m.clone()).unwrap_or_default();
    for c in clients {
        let got = c.await.unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for (n, at) in got {
            if n < expected_events && seen.insert(n) {
                delivered += 1;
                if let Some(bus_at) = bus_times.get(&n) {
                    delays.push(at.saturating_duration_since(*bus_at).as_secs_f64() * 1000.0);
                }
            }
        }
    }
    bus_task.abort();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let expected = args.clients * expected_events;
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
    });
    println!("{result}");
    Ok(())
}
