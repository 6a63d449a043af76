//! `brine-bench sse`: opens N `/events` streams on a target, fires M events straight into the
//! master's bus (its pull socket), and measures, per event and client, whether it arrived and
//! how long after the bus itself delivered it (the driver also subscribes to the bus, so
//! "delay" is relative to the master, not to the firing). Prints one JSON line of results:
//! `{"target", "clients", "connected", "events", "delivered_pct", "p50_ms", "p99_ms", "max_ms"}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use salt_wire::event::{BusAddr, Firer, Subscription};
use salt_wire::framing::Framing;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::{host_port, percentile};

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
}

/// One client's deliveries: (event index, arrival time).
type Deliveries = Vec<(usize, Instant)>;

/// Opens one stream; reports `true` on the ready channel once the response headers arrived,
/// then records every bench event until the stream ends or `stop` fires.
async fn sse_client(
    addr: String,
    token: String,
    accept: String,
    run_id: String,
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
    let marker = format!("tag: brine/bench/{run_id}/");
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
            if let Some(n) = line.trim_end().strip_prefix(&marker) {
                if let Ok(n) = n.parse::<usize>() {
                    got.push((n, now));
                }
            }
        }
    }
    got
}

pub async fn sse(args: SseArgs) -> Result<(), String> {
    let run_id = format!("{}-{}", args.name, std::process::id());
    let addr = host_port(&args.url);
    // The driver's own bus subscription: the reference time of every event.
    let mut bus = Subscription::connect(&BusAddr::Unix(args.bus_pub.clone().into()))
        .await
        .map_err(|e| format!("bus subscription: {e}"))?;
    let bus_times: Arc<std::sync::Mutex<HashMap<usize, Instant>>> = Arc::default();
    let bt = bus_times.clone();
    let prefix = format!("brine/bench/{run_id}/");
    let bus_task = tokio::spawn(async move {
        while let Some(Ok(ev)) = bus.next().await {
            if let Some(n) = ev
                .tag
                .strip_prefix(&prefix)
                .and_then(|n| n.parse::<usize>().ok())
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
            run_id.clone(),
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
    // Let the streams settle, then fire.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut firer = Firer::connect(
        &BusAddr::Unix(args.bus_pull.clone().into()),
        Framing::LengthPrefixed,
    )
    .await
    .map_err(|e| format!("bus pull: {e}"))?;
    for n in 0..args.events {
        firer
            .fire(
                &format!("brine/bench/{run_id}/{n}"),
                &json!({"n": n, "pad": "x".repeat(200)}),
            )
            .await
            .map_err(|e| format!("fire: {e}"))?;
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
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
            if n < args.events && seen.insert(n) {
                delivered += 1;
                if let Some(bus_at) = bus_times.get(&n) {
                    delays.push(at.saturating_duration_since(*bus_at).as_secs_f64() * 1000.0);
                }
            }
        }
    }
    bus_task.abort();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let expected = args.clients * args.events;
    let result = json!({
        "target": args.name,
        "clients": args.clients,
        "connected": connected,
        "events": args.events,
        "bus_events_seen": bus_times.len(),
        "delivered_pct": if expected == 0 { 0.0 } else { 100.0 * delivered as f64 / expected as f64 },
        "p50_ms": percentile(&delays, 50.0),
        "p99_ms": percentile(&delays, 99.0),
        "max_ms": delays.last().copied().unwrap_or(f64::NAN),
    });
    println!("{result}");
    Ok(())
}
