//! rest_cherrypy's `/stats` document: the `CherryPy Applications` namespace (what CherryPy's
//! `cpstats` tool counts per request when `collect_stats` is on) and the `Cheroot HTTPServer
//! <id>` namespace (the HTTP server's threads), with the keys and JSON types of the reference,
//! so that clients that deserialize them (salt-netapi-client's `Stats` model, Go and Python UIs)
//! read Brine's answer. The values are Brine's own.
//!
//! As in salt-api, `CherryPy Applications` counts only with `collect_stats: true` (its figures
//! stay 0 and `Requests` empty otherwise), and the server namespace has its statistics off
//! (salt-api never turns them on): `Enabled: false`, `-1` for the figures it does not count.
//! Its `Threads`, `Threads Idle` and `Queue` are live: the request runtime's worker threads,
//! those parked right now, and the tasks waiting in its global queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// How many requests `Requests` shows, the newest (the reference keeps the last one of each of
/// its threads).
pub const RECENT_REQUESTS: usize = 64;

/// Seconds since the Unix epoch, as the reference's `time.time()`.
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One request as `Requests` shows it; the `None`s are the reference's `null`s of a request
/// still being handled.
#[derive(Clone, Debug)]
struct Record {
    id: u64,
    client: String,
    request_line: String,
    start_time: f64,
    started: Instant,
    end: Option<Ended>,
}

#[derive(Clone, Debug)]
struct Ended {
    bytes_read: u64,
    /// `None`: the body was streamed without a length (the reference's `"chunked"`).
    bytes_written: Option<u64>,
    status: String,
    end_time: f64,
    processing: f64,
}

/// What `collect_stats` counts (the `CherryPy Applications` namespace).
#[derive(Default)]
pub struct AppCounters {
    total_requests: AtomicU64,
    total_bytes_read: AtomicU64,
    total_bytes_written: AtomicU64,
    total_time_us: AtomicU64,
    recent: Mutex<VecDeque<Record>>,
}

/// How a counted request ended.
pub struct Outcome<'a> {
    /// Body bytes read from the client.
    pub bytes_read: u64,
    /// The response's `Content-Length`, `None` for a streamed body.
    pub bytes_written: Option<u64>,
    /// The status line's code and reason (`200 OK`).
    pub status: &'a str,
}

impl AppCounters {
    /// Starts counting one request; the returned id ends it ([`AppCounters::end`]).
    /// `request_line` must already be free of secrets (no query string, no token segment).
    pub fn begin(&self, client: String, request_line: String) -> u64 {
        let id = self.total_requests.fetch_add(1, Ordering::Relaxed) + 1;
        let record = Record {
            id,
            client,
            request_line,
            start_time: epoch_now(),
            started: Instant::now(),
            end: None,
        };
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= RECENT_REQUESTS {
                recent.pop_front();
            }
            recent.push_back(record);
        }
        id
    }

    /// Ends the request `id` began.
    pub fn end(&self, id: u64, out: Outcome<'_>) {
        self.total_bytes_read
            .fetch_add(out.bytes_read, Ordering::Relaxed);
        if let Some(n) = out.bytes_written {
            self.total_bytes_written.fetch_add(n, Ordering::Relaxed);
        }
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        // Pushed out already when more than RECENT_REQUESTS began since: counted, not shown.
        let Some(r) = recent.iter_mut().rev().find(|r| r.id == id) else {
            return;
        };
        let processing = r.started.elapsed().as_secs_f64();
        self.total_time_us
            .fetch_add((processing * 1e6) as u64, Ordering::Relaxed);
        r.end = Some(Ended {
            bytes_read: out.bytes_read,
            bytes_written: out.bytes_written,
            status: out.status.to_owned(),
            end_time: epoch_now(),
            processing,
        });
    }

    fn requests(&self) -> Value {
        let Ok(recent) = self.recent.lock() else {
            return json!({});
        };
        let mut map = Map::new();
        for r in recent.iter() {
            let rec = match &r.end {
                Some(e) => json!({
                    "Bytes Read": e.bytes_read,
                    "Bytes Written": match e.bytes_written {
                        Some(n) => json!(n),
                        None => json!("chunked"),
                    },
                    "Client": r.client,
                    "End Time": e.end_time,
                    "Processing Time": e.processing,
                    "Request-Line": r.request_line,
                    "Response Status": e.status,
                    "Start Time": r.start_time,
                }),
                None => json!({
                    "Bytes Read": null,
                    "Bytes Written": null,
                    "Client": r.client,
                    "End Time": null,
                    "Processing Time": r.started.elapsed().as_secs_f64(),
                    "Request-Line": r.request_line,
                    "Response Status": null,
                    "Start Time": r.start_time,
                }),
            };
            map.insert(r.id.to_string(), rec);
        }
        Value::Object(map)
    }
}

/// What the `Cheroot HTTPServer` namespace reads from the request runtime and the listener.
pub struct ServerView {
    /// The listening address.
    pub bind: std::net::SocketAddr,
    /// The request runtime's worker threads.
    pub threads: usize,
    /// Those parked (waiting for work) right now.
    pub idle: usize,
    /// Tasks waiting in the runtime's global queue.
    pub queue: usize,
}

impl ServerView {
    /// The view of the runtime the caller runs on (no runtime: no threads).
    pub fn current(bind: std::net::SocketAddr) -> ServerView {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return ServerView {
                bind,
                threads: 0,
                idle: 0,
                queue: 0,
            };
        };
        let m = rt.metrics();
        let threads = m.num_workers();
        // An odd park/unpark count means the worker is parked (tokio's documented meaning).
        let idle = (0..threads)
            .filter(|&w| m.worker_park_unpark_count(w) % 2 == 1)
            .count();
        ServerView {
            bind,
            threads,
            idle,
            queue: m.global_queue_depth(),
        }
    }
}

/// Python's `repr()` of a socket address tuple, as the reference's `Bind Address`.
fn python_bind_repr(addr: std::net::SocketAddr) -> String {
    match addr {
        std::net::SocketAddr::V4(a) => format!("('{}', {})", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!(
            "('{}', {}, {}, {})",
            a.ip(),
            a.port(),
            a.flowinfo(),
            a.scope_id()
        ),
    }
}

/// The two reference namespaces, keyed as the reference keys them.
/// `in_flight` is the requests being handled now, this one included.
pub fn namespaces(
    enabled: bool,
    counters: &AppCounters,
    in_flight: usize,
    started_epoch: f64,
    server: &ServerView,
) -> Map<String, Value> {
    let now = epoch_now();
    let uptime = (now - started_epoch).max(1e-6);
    let apps = if enabled {
        let requests = counters.total_requests.load(Ordering::Relaxed);
        let read = counters.total_bytes_read.load(Ordering::Relaxed);
        let written = counters.total_bytes_written.load(Ordering::Relaxed);
        let per_request = |n: u64| {
            if requests == 0 {
                0.0
            } else {
                n as f64 / requests as f64
            }
        };
        json!({
            "Enabled": true,
            "Bytes Read/Request": per_request(read),
            "Bytes Read/Second": read as f64 / uptime,
            "Bytes Written/Request": per_request(written),
            "Bytes Written/Second": written as f64 / uptime,
            "Current Time": now,
            "Current Requests": in_flight,
            "Requests/Second": requests as f64 / uptime,
            "Server Version": env!("CARGO_PKG_VERSION"),
            "Start Time": started_epoch,
            "Total Bytes Read": read,
            "Total Bytes Written": written,
            "Total Requests": requests,
            "Total Time": counters.total_time_us.load(Ordering::Relaxed) as f64 / 1e6,
            "Uptime": uptime,
            "Requests": counters.requests(),
        })
    } else {
        // What the reference shows when its counting tool is off: nothing counted.
        json!({
            "Enabled": false,
            "Bytes Read/Request": 0.0,
            "Bytes Read/Second": 0.0,
            "Bytes Written/Request": 0.0,
            "Bytes Written/Second": 0.0,
            "Current Time": now,
            "Current Requests": 0,
            "Requests/Second": 0.0,
            "Server Version": env!("CARGO_PKG_VERSION"),
            "Start Time": started_epoch,
            "Total Bytes Read": 0,
            "Total Bytes Written": 0,
            "Total Requests": 0,
            "Total Time": 0,
            "Uptime": uptime,
            "Requests": {},
        })
    };
    let workers: Map<String, Value> = (0..server.threads)
        .map(|i| {
            (
                format!("Brine Worker Thread-{}", i + 1),
                json!({
                    "Requests": 0,
                    "Bytes Read": 0,
                    "Bytes Written": 0,
                    "Work Time": 0,
                    "Read Throughput": 0.0,
                    "Write Throughput": 0.0,
                }),
            )
        })
        .collect();
    let http = json!({
        "Enabled": false,
        "Bind Address": python_bind_repr(server.bind),
        "Run time": -1,
        "Accepts": 0,
        "Accepts/sec": 0.0,
        "Queue": server.queue,
        "Threads": server.threads,
        "Threads Idle": server.idle,
        "Socket Errors": 0,
        "Requests": -1,
        "Bytes Read": -1,
        "Bytes Written": -1,
        "Work Time": -1,
        "Read Throughput": -1,
        "Write Throughput": -1,
        "Worker Threads": workers,
    });
    let mut out = Map::new();
    out.insert("CherryPy Applications".into(), apps);
    out.insert(format!("Cheroot HTTPServer {}", std::process::id()), http);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ServerView {
        ServerView {
            bind: "127.0.0.1:8000".parse().unwrap_or_else(|e| panic!("{e}")),
            threads: 2,
            idle: 1,
            queue: 0,
        }
    }

    #[test]
    fn counted_requests_show_with_the_reference_keys() {
        let c = AppCounters::default();
        let done = c.begin("127.0.0.1:5000".into(), "POST /login HTTP/1.1".into());
        c.end(
            done,
            Outcome {
                bytes_read: 44,
                bytes_written: Some(209),
                status: "200 OK",
            },
        );
        let streamed = c.begin("127.0.0.1:5001".into(), "GET /events HTTP/1.1".into());
        c.end(
            streamed,
            Outcome {
                bytes_read: 0,
                bytes_written: None,
                status: "200 OK",
            },
        );
        c.begin("127.0.0.1:5002".into(), "GET /stats HTTP/1.1".into());
        let ns = namespaces(true, &c, 1, epoch_now() - 10.0, &view());
        let apps = &ns["CherryPy Applications"];
        assert_eq!(apps["Total Requests"], 3);
        assert_eq!(apps["Total Bytes Read"], 44);
        assert_eq!(apps["Total Bytes Written"], 209);
        assert!(apps["Total Time"].is_f64());
        let reqs = apps["Requests"].as_object().map(|m| m.len());
        assert_eq!(reqs, Some(3));
        assert_eq!(apps["Requests"]["1"]["Response Status"], "200 OK");
        assert_eq!(apps["Requests"]["1"]["Bytes Read"], 44);
        assert_eq!(apps["Requests"]["2"]["Bytes Written"], "chunked");
        assert!(apps["Requests"]["3"]["Bytes Read"].is_null());
        assert!(apps["Requests"]["3"]["End Time"].is_null());
        let http = &ns[&format!("Cheroot HTTPServer {}", std::process::id())];
        assert_eq!(http["Bind Address"], "('127.0.0.1', 8000)");
        assert_eq!(
            (http["Threads"].clone(), http["Threads Idle"].clone()),
            (json!(2), json!(1))
        );
        assert_eq!(http["Run time"], -1);
        assert_eq!(http["Worker Threads"].as_object().map(|m| m.len()), Some(2));
    }

    #[test]
    fn only_the_newest_requests_are_kept_and_all_are_counted() {
        let c = AppCounters::default();
        for i in 0..(RECENT_REQUESTS + 10) {
            let id = c.begin(format!("127.0.0.1:{i}"), "GET / HTTP/1.1".into());
            c.end(
                id,
                Outcome {
                    bytes_read: 1,
                    bytes_written: Some(2),
                    status: "200 OK",
                },
            );
        }
        let ns = namespaces(true, &c, 0, epoch_now(), &view());
        let apps = &ns["CherryPy Applications"];
        assert_eq!(apps["Total Requests"], RECENT_REQUESTS + 10);
        assert_eq!(apps["Total Bytes Read"], RECENT_REQUESTS + 10);
        let kept = apps["Requests"].as_object().map(|m| m.len());
        assert_eq!(kept, Some(RECENT_REQUESTS));
        assert!(apps["Requests"].get("1").is_none());
    }

    #[test]
    fn without_collect_stats_nothing_is_shown_as_counted() {
        let c = AppCounters::default();
        c.begin("127.0.0.1:1".into(), "GET / HTTP/1.1".into());
        let ns = namespaces(false, &c, 3, epoch_now(), &view());
        let apps = &ns["CherryPy Applications"];
        assert_eq!(apps["Enabled"], false);
        assert_eq!(apps["Total Requests"], 0);
        assert_eq!(apps["Current Requests"], 0);
        assert_eq!(apps["Requests"], json!({}));
    }

    #[test]
    fn ipv6_bind_address_reads_as_python_prints_it() {
        let a: std::net::SocketAddr = "[::]:8000".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(python_bind_repr(a), "('::', 8000, 0, 0)");
    }
}
