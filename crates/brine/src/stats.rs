//! What Brine counts about itself: the figures behind `/stats` (JSON, salt-api's endpoint) and
//! `/metrics` (Prometheus text). Counters are updated on the request path with atomics and
//! `prometheus-client` families (no locks taken per request beyond the family's map lookup).

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route family (`index`, `login`, `events`, ...).
    pub route: &'static str,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route family.
    pub route: &'static str,
}

/// Labels of a lowstate chunk.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    /// The lowstate client.
    pub client: &'static str,
    /// `ok` or the HTTP status of the error.
    pub outcome: String,
}

/// Labels of a master command.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CmdLabels {
    /// The clear command (`publish`, `runner`, `wheel`, `mk_token`, `get_token`).
    pub cmd: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Process-wide counters.
pub struct Stats {
    /// When the process started.
    pub started: Instant,
    started_epoch: f64,
    /// Requests being handled right now.
    pub requests_in_flight: AtomicUsize,
    /// Requests handled since start.
    pub requests_total: AtomicU64,
    /// Event streams open right now (SSE and WebSocket).
    pub streams_open: AtomicUsize,
    /// Streams disconnected because their client did not keep up.
    pub streams_dropped_slow: AtomicU64,
    /// Login attempts answered 429 by the login throttle.
    pub logins_throttled: AtomicU64,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<RequestLabels, Counter>,
    /// HTTP latency by route.
    pub http_latency: Family<RouteLabels, Histogram>,
    /// Lowstate chunks by client and outcome.
    pub chunks: Family<ClientLabels, Counter>,
    /// Master round trips by command.
    pub master_latency: Family<CmdLabels, Histogram>,
    /// Open descriptors, recounted at most once a second.
    fds: FdCount,
    /// What `collect_stats` counts, for the reference's `CherryPy Applications` namespace.
    pub cherrypy: crate::cpstats::AppCounters,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            started_epoch: crate::cpstats::epoch_now(),
            requests_in_flight: AtomicUsize::new(0),
            requests_total: AtomicU64::new(0),
            streams_open: AtomicUsize::new(0),
            streams_dropped_slow: AtomicU64::new(0),
            logins_throttled: AtomicU64::new(0),
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(latency_histogram),
            chunks: Family::default(),
            master_latency: Family::new_with_constructor(latency_histogram),
            fds: FdCount::new(),
            cherrypy: Default::default(),
        }
    }
}

/// Figures read from the rest of the process at scrape time.
pub struct Live {
    /// Requests to the master in flight.
    pub master_in_flight: usize,
    /// Requests waiting for a master connection.
    pub master_queued: usize,
    /// Whether the event-bus subscription is up.
    pub bus_connected: bool,
    /// Events read from the bus since start.
    pub bus_events: u64,
    /// Times the bus subscription was re-established.
    pub bus_reconnects: u64,
    /// Requests waiting for the events of a job (registered jid watches).
    pub job_waiters: usize,
    /// Events kept for streams that resume with `Last-Event-ID`, and their bytes.
    pub events_kept: (usize, usize),
    /// Streams with a tag filter (each has a queue of its own).
    pub streams_filtered: usize,
    /// Jobs in the job index, and its bytes.
    pub job_index: (usize, usize),
}

/// How often the descriptor count is taken again: listing `/proc/self/fd` walks every
/// descriptor (thousands under load), too much for a probe that is called often.
const FD_COUNT_EVERY: Duration = Duration::from_secs(1);

fn count_open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as i64)
        .unwrap_or(-1)
}

/// The process's open descriptors, counted at most once per [`FD_COUNT_EVERY`], and off the
/// caller's thread: with thousands of descriptors open, listing `/proc/self/fd` takes long
/// enough that a request thread (and the `/stats` caller) should not wait for it. A caller gets the last
/// count at once; when it is due, one caller (chosen by a CAS) has it recounted on the
/// runtime's blocking pool. The very first count is taken inline (there is nothing to answer
/// before it), and so is every count made outside a runtime (unit tests).
struct FdCount {
    value: std::sync::Arc<AtomicI64>,
    /// Milliseconds since [`Stats::started`] of the last count, `u64::MAX` before the first.
    at_ms: AtomicU64,
}

impl FdCount {
    fn new() -> Self {
        FdCount {
            value: std::sync::Arc::new(AtomicI64::new(-1)),
            at_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn get(&self, now_ms: u64) -> i64 {
        self.get_with(now_ms, count_open_fds)
    }

    /// [`FdCount::get`] with the counting function given (tests count their calls).
    fn get_with<F>(&self, now_ms: u64, count: F) -> i64
    where
        F: Fn() -> i64 + Clone + Send + 'static,
    {
        let at = self.at_ms.load(Ordering::Acquire);
        let due = at == u64::MAX || now_ms.saturating_sub(at) >= FD_COUNT_EVERY.as_millis() as u64;
        if due
            && self
                .at_ms
                .compare_exchange(at, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) if at != u64::MAX => {
                    let (value, count) = (self.value.clone(), count.clone());
                    rt.spawn_blocking(move || value.store(count(), Ordering::Release));
                }
                _ => self.value.store(count(), Ordering::Release),
            }
        }
        match self.value.load(Ordering::Acquire) {
            // The first caller is counting right now: count too rather than answer -1.
            -1 => count(),
            v => v,
        }
    }
}

/// The allocator's view of the heap: bytes the program has allocated and bytes of memory the
/// allocator holds for it (what RSS follows), or -1 each when jemalloc cannot tell. The gap
/// between the two is memory freed but not yet given back, so a rising RSS with a flat
/// `allocated` is the allocator keeping pages, not a leak.
pub fn heap() -> (i64, i64) {
    use tikv_jemalloc_ctl::{epoch, stats};
    // jemalloc's statistics are a snapshot taken when the epoch advances.
    if epoch::advance().is_err() {
        return (-1, -1);
    }
    let read = |r: Result<usize, tikv_jemalloc_ctl::Error>| r.map(|v| v as i64).unwrap_or(-1);
    (
        read(stats::allocated::read()),
        read(stats::resident::read()),
    )
}

impl Stats {
    /// Open descriptors (at most [`FD_COUNT_EVERY`] old).
    pub fn open_fds(&self) -> i64 {
        self.fds.get(self.started.elapsed().as_millis() as u64)
    }

    /// Records one finished HTTP request.
    pub fn record_request(&self, route: &'static str, method: &str, status: u16, seconds: f64) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        self.http_requests
            .get_or_create(&RequestLabels {
                route,
                method: method.to_owned(),
                status,
            })
            .inc();
        self.http_latency
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// `/stats`: the reference's two namespaces ([`crate::cpstats`]) and Brine's own figures
    /// under a `Brine` key. `bind` is the listening address.
    pub fn json(
        &self,
        enabled: bool,
        live: &Live,
        bind: std::net::SocketAddr,
    ) -> serde_json::Value {
        let now = crate::cpstats::epoch_now();
        let uptime = self.started.elapsed().as_secs_f64();
        let total = self.requests_total.load(Ordering::Relaxed);
        let heap = heap();
        let mut doc = crate::cpstats::namespaces(
            enabled,
            &self.cherrypy,
            self.requests_in_flight.load(Ordering::Relaxed),
            self.started_epoch,
            &crate::cpstats::ServerView::current(bind),
        );
        let brine = serde_json::json!({
                "Enabled": enabled,
                "Server Version": env!("CARGO_PKG_VERSION"),
                "Start Time": self.started_epoch,
                "Current Time": now,
                "Uptime": uptime,
                "Total Requests": total,
                "Current Requests": self.requests_in_flight.load(Ordering::Relaxed),
                "Requests/Second": if uptime > 0.0 { total as f64 / uptime } else { 0.0 },
                "Streams Open": self.streams_open.load(Ordering::Relaxed),
                "Streams Filtered": live.streams_filtered,
                "Job Index Jobs": live.job_index.0,
                "Job Index Bytes": live.job_index.1,
                "Streams Dropped (slow client)": self.streams_dropped_slow.load(Ordering::Relaxed),
                "Logins Throttled": self.logins_throttled.load(Ordering::Relaxed),
                "Master Requests In Flight": live.master_in_flight,
                "Master Requests Queued": live.master_queued,
                "Event Bus Connected": live.bus_connected,
                "Event Bus Events": live.bus_events,
                "Event Bus Reconnects": live.bus_reconnects,
                "Job Waiters": live.job_waiters,
                "Events Kept": live.events_kept.0,
                "Events Kept Bytes": live.events_kept.1,
                "Open File Descriptors": self.open_fds(),
                "Heap Allocated Bytes": heap.0,
                "Heap Resident Bytes": heap.1,
        });
        doc.insert("Brine".into(), brine);
        serde_json::Value::Object(doc)
    }

    /// `/metrics`: Prometheus text exposition.
    pub fn prometheus(&self, live: &Live) -> String {
        let mut registry = Registry::with_prefix("brine");
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            self.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            self.http_latency.clone(),
        );
        registry.register(
            "lowstate_chunks",
            "Lowstate chunks by client and outcome",
            self.chunks.clone(),
        );
        registry.register(
            "master_request_duration_seconds",
            "Round trips to the master's request channel by command",
            self.master_latency.clone(),
        );
        let gauge = |v: i64| {
            let g: prometheus_client::metrics::gauge::Gauge = Default::default();
            g.set(v);
            g
        };
        registry.register(
            "master_requests_in_flight",
            "Requests to the master in flight",
            gauge(live.master_in_flight as i64),
        );
        registry.register(
            "master_requests_queued",
            "Requests waiting for a master connection",
            gauge(live.master_queued as i64),
        );
        registry.register(
            "event_bus_connected",
            "1 when the event-bus subscription is up",
            gauge(i64::from(live.bus_connected)),
        );
        registry.register("event_bus_events", "Events read from the master's bus", {
            let c: Counter = Default::default();
            c.inc_by(live.bus_events);
            c
        });
        registry.register(
            "event_bus_reconnects",
            "Event-bus subscription re-established",
            {
                let c: Counter = Default::default();
                c.inc_by(live.bus_reconnects);
                c
            },
        );
        registry.register(
            "job_waiters",
            "Requests waiting for the events of a job",
            gauge(live.job_waiters as i64),
        );
        registry.register(
            "events_kept",
            "Events kept for streams that resume with Last-Event-ID",
            gauge(live.events_kept.0 as i64),
        );
        registry.register(
            "events_kept_bytes",
            "Approximate bytes of the events kept for resumption",
            gauge(live.events_kept.1 as i64),
        );
        registry.register(
            "streams_open",
            "Event streams open (SSE and WebSocket)",
            gauge(self.streams_open.load(Ordering::Relaxed) as i64),
        );
        registry.register(
            "job_index_jobs",
            "Jobs in the job index behind GET /jobs?limit=",
            gauge(live.job_index.0 as i64),
        );
        registry.register(
            "job_index_bytes",
            "Approximate bytes of the job index",
            gauge(live.job_index.1 as i64),
        );
        registry.register(
            "streams_filtered",
            "Event streams with a tag filter",
            gauge(live.streams_filtered as i64),
        );
        registry.register(
            "streams_dropped_slow",
            "Streams disconnected because the client did not keep up",
            {
                let c: Counter = Default::default();
                c.inc_by(self.streams_dropped_slow.load(Ordering::Relaxed));
                c
            },
        );
        registry.register(
            "logins_throttled",
            "Login attempts answered 429 by the per-address login throttle",
            {
                let c: Counter = Default::default();
                c.inc_by(self.logins_throttled.load(Ordering::Relaxed));
                c
            },
        );
        registry.register(
            "open_fds",
            "Open file descriptors of the process",
            gauge(self.open_fds()),
        );
        let (allocated, resident) = heap();
        registry.register(
            "heap_allocated_bytes",
            "Bytes allocated by Brine (jemalloc stats.allocated)",
            gauge(allocated),
        );
        registry.register(
            "heap_resident_bytes",
            "Bytes of memory the allocator holds (jemalloc stats.resident)",
            gauge(resident),
        );
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_figures_follow_an_allocation() {
        let (before, resident) = heap();
        assert!(before > 0 && resident >= before, "{before} {resident}");
        // 64 MiB, touched so that it is really there; other tests allocate in parallel, so
        // only a rise of most of it is asserted.
        let block = vec![1u8; 64 << 20];
        let (during, _) = heap();
        assert!(
            during - before > 48 << 20,
            "allocated {before} -> {during} with 64 MiB held"
        );
        drop(block);
        let (after, _) = heap();
        assert!(
            during - after > 48 << 20,
            "allocated {during} -> {after} after freeing"
        );
    }

    #[test]
    fn prometheus_text_has_the_families() {
        let s = Stats::default();
        s.record_request("index", "POST", 200, 0.01);
        s.chunks
            .get_or_create(&ClientLabels {
                client: "local",
                outcome: "ok".into(),
            })
            .inc();
        let live = Live {
            master_in_flight: 1,
            master_queued: 0,
            bus_connected: true,
            bus_events: 5,
            bus_reconnects: 0,
            job_waiters: 0,
            events_kept: (3, 1200),
            streams_filtered: 1,
            job_index: (7, 2000),
        };
        let text = s.prometheus(&live);
        assert!(
            text.contains(
                "brine_http_requests_total{route=\"index\",method=\"POST\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("brine_lowstate_chunks_total{client=\"local\",outcome=\"ok\"} 1"));
        assert!(text.contains("brine_event_bus_events_total 5"));
        assert!(text.contains("brine_open_fds "));
        assert!(text.contains("brine_streams_filtered 1"));
        assert!(text.contains("brine_job_index_jobs 7"));
        let json = s.json(
            false,
            &live,
            "127.0.0.1:8000".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(json["Brine"]["Total Requests"], 1);
        assert_eq!(json["Brine"]["Enabled"], false);
        assert_eq!(json["Brine"]["Streams Filtered"], 1);
    }

    #[test]
    fn descriptors_are_recounted_at_most_once_a_second() {
        // The real count: this process has descriptors open.
        assert!(FdCount::new().get(0) > 0);
        // When the count is taken again: a counter that says how often it was called (the
        // process's own count moves with whatever the other tests open meanwhile).
        let calls = std::sync::Arc::new(AtomicI64::new(0));
        let count = {
            let calls = calls.clone();
            move || calls.fetch_add(1, Ordering::SeqCst) + 1
        };
        let c = FdCount::new();
        assert_eq!(c.get_with(0, count.clone()), 1);
        assert_eq!(c.get_with(999, count.clone()), 1);
        assert_eq!(c.get_with(1000, count.clone()), 2);
        assert_eq!(c.get_with(1500, count.clone()), 2);
        assert_eq!(c.get_with(2000, count), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_due_recount_runs_off_the_calling_thread() {
        // A count that takes a while, as listing thousands of descriptors does, and tells
        // which thread took it.
        let (tx, rx) = std::sync::mpsc::channel();
        let slow = move || {
            std::thread::sleep(Duration::from_millis(1000));
            let _ = tx.send(std::thread::current().id());
            7
        };
        let c = FdCount::new();
        c.value.store(5, Ordering::SeqCst);
        c.at_ms.store(0, Ordering::SeqCst);
        let asked = Instant::now();
        // Due: the caller gets the last count at once, the recount happens elsewhere.
        assert_eq!(c.get_with(1000, slow.clone()), 5);
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "{:?}",
            asked.elapsed()
        );
        let counted_on =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(5)))
                .await
                .ok()
                .and_then(Result::ok);
        assert!(counted_on.is_some_and(|t| t != std::thread::current().id()));
        // The recount stores its figure just after telling which thread it ran on.
        let stored = Instant::now();
        while c.value.load(Ordering::SeqCst) != 7 && stored.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(c.get_with(1500, slow), 7);
    }
}
