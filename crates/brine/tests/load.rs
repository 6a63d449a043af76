//! Load against a real master: 1 000 concurrent synchronous `local` requests while 1 000 SSE
//! streams are open. Every request must come back right, every stream must carry every job up
//! to a final marker event, every `/stats` call made throughout must be answered in under
//! 100 ms end to end (with the master at a lower CPU weight than Brine, as
//! `packaging/brine.service` sets it up), and once the load is gone no stream, job waiter,
//! master request or descriptor may be left, and Brine's live heap (jemalloc's `allocated`)
//! must be back within 4 MiB of its baseline, its RSS within 16 MiB. RSS (baseline, peak,
//! after) and the heap are reported.
//!
//! A Salt minion is one Python process that runs about two `test.ping` jobs a second on this
//! kind of machine, so 1 000 jobs on live minions would measure the minions for minutes. Most
//! requests therefore target `m3`, a minion whose key is accepted but whose process is
//! stopped: the master publishes each job, nobody answers, and Brine holds all of them open
//! for `timeout`, probes with `find_job`, asks `minions.connected` and answers Salt's "Minion
//! did not return" text: the longest path a sync `local` has, 1 000 at once. Every 50th
//! request pings the live minions `m1` and `m2` and must get both `True`s.
//!
//! The stream readers are raw sockets that only count byte patterns, so the test process
//! (a debug build, like Brine here) does not become the bottleneck it is measuring.

#![allow(clippy::unwrap_used, clippy::expect_used)] // for its helpers; see clippy.toml

pub mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use memchr::memmem;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REQUESTS: usize = 1000;
const STREAMS: usize = 1000;
const MARKER: &str = "load/done";
/// How far above its baseline Brine's live heap (jemalloc's `allocated`) may stay once the
/// load is gone.
const HEAP_MARGIN_KIB: i64 = 4 * 1024;
/// How far above its baseline Brine's RSS may stay once the load is gone: the live heap's
/// margin plus the pages the allocator keeps (partly used slabs, extents it caches).
const RSS_MARGIN_KIB: u64 = 16 * 1024;

/// One `/stats` call of the probe: when (seconds into its run), how long in all, and after
/// how long the connection was established and the first byte of the answer came.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Read through Debug, in the report.
struct Probe {
    at: f64,
    took: Duration,
    connected: Duration,
    first_byte: Duration,
}

/// What one stream carried.
#[derive(Debug, Default)]
struct Carried {
    status_ok: bool,
    returns: usize,
    jobs: usize,
    marker: bool,
    lost: bool,
    /// The longest time between two reads that returned data.
    max_gap: Duration,
}

/// One raw SSE client: counts job returns and stops at the marker event (or `deadline`).
async fn stream(
    addr: String,
    token: String,
    opened: Arc<AtomicUsize>,
    deadline: tokio::time::Instant,
) -> Carried {
    let mut out = Carried::default();
    let Ok(mut sock) = tokio::net::TcpStream::connect(&addr).await else {
        return out;
    };
    let head = format!(
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
         X-Auth-Token: {token}\r\n\r\n"
    );
    if sock.write_all(head.as_bytes()).await.is_err() {
        return out;
    }
    let rets = [
        memmem::Finder::new(b"/ret/m1\ndata:"),
        memmem::Finder::new(b"/ret/m2\ndata:"),
    ];
    let new_job = memmem::Finder::new(b"/new\ndata:");
    let marker = memmem::Finder::new(MARKER.as_bytes());
    let lost = memmem::Finder::new(b"brine/events/lost");
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    let mut first = true;
    let mut last_read = Instant::now();
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return out,
        };
        out.max_gap = out.max_gap.max(last_read.elapsed());
        last_read = Instant::now();
        let mut window = std::mem::take(&mut carry);
        window.extend_from_slice(&buf[..n]);
        if first {
            first = false;
            out.status_ok = window.starts_with(b"HTTP/1.1 200");
            opened.fetch_add(1, Ordering::SeqCst);
        }
        out.returns += rets
            .iter()
            .map(|f| f.find_iter(&window).count())
            .sum::<usize>();
        out.jobs += new_job.find_iter(&window).count();
        out.lost |= lost.find(&window).is_some();
        if marker.find(&window).is_some() {
            out.marker = true;
            return out;
        }
        // Keep a tail shorter than every pattern, so no match is counted twice.
        let keep = window.len().min(12);
        carry = window[window.len() - keep..].to_vec();
    }
}

/// How much nicer the master and minions run than Brine: as `CPUWeight=400` in
/// `packaging/brine.service` against salt-master.service's default 100 does on a host
/// (nice 6 weighs 272 against nice 0's 1 024). The load saturates both CPUs of this machine
/// with the master's and minions' work; at equal shares Brine's threads and the probe wait
/// in the run queue behind them, and `/stats` would measure the kernel, not Brine.
const SALT_NICE: u8 = 6;
/// How much nicer this test's load generator runs than the `/stats` probe and Brine (all in
/// this test's session). Clients on other hosts do not compete with Brine for its CPUs;
/// here they do, and the probe would measure the generator parsing 1 000 answers.
const LOAD_GENERATOR_NICE: i32 = 10;

/// Puts the calling thread (the `/stats` probe) in the real-time FIFO class with `chrt`
/// (util-linux, on every Debian), so that the kernel runs it the moment Brine's answer wakes
/// it. The probe stands for a monitoring client on another host; on this 2-CPU machine it
/// shares the CPUs with the master, the minions and the load generator, and in the kernel's
/// group scheduling a thread woken on the CPU its session has little of waited up to 30 ms
/// for it after Brine's answer was already in its socket (`perf sched timehist`). The probe
/// uses a fraction of a millisecond per call. Returns the class it got, for the report; if
/// `chrt` is refused (no `CAP_SYS_NICE`), the probe stays in the normal class and the
/// assertions stay as they are.
fn probe_in_real_time() -> String {
    let tid = rustix::process::Pid::as_raw(Some(rustix::thread::gettid())).to_string();
    match std::process::Command::new("chrt")
        .args(["--fifo", "--pid", "10", &tid])
        .output()
    {
        Ok(o) if o.status.success() => "SCHED_FIFO 10".into(),
        Ok(o) => format!(
            "normal (chrt: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("normal (chrt: {e})"),
    }
}

/// Makes the calling thread `by` steps nicer (a thread's nice value is its own on Linux,
/// and threads it spawns start with it).
fn make_nicer(by: i32) {
    let me = Some(rustix::thread::gettid());
    let now = rustix::process::getpriority_process(me).unwrap();
    rustix::process::setpriority_process(me, (now + by).min(19)).unwrap();
}

#[test]
fn thousand_sync_locals_and_thousand_streams_at_once() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| make_nicer(LOAD_GENERATOR_NICE))
        .build()
        .unwrap()
        .block_on(load());
}

async fn load() {
    // Brine is started from this (not yet nicer) thread, at the scheduler's default.
    let st = stack_with(StackOpts {
        minions: 3,
        reference: false,
        minion_extra: "multiprocessing: false",
        // 1 000 publishes and as many probes queue for the master's workers; Brine's pool
        // lets a request wait up to `publish_timeout` for one (then a 503).
        // Kept events (for `Last-Event-ID` resumption) age out after 10 s here, so that the
        // memory check below sees the load's memory come back, not the replay ring.
        // A debug build of Brine cannot write 1 000 copies of every event as fast as the bus
        // produces them on 2 CPUs (Salt 3007 puts ~8 000 small events on it in ~25 s); its
        // streams fall behind by more than the default 4 096 events and catch up after the
        // burst. They may fall 65 536 behind here, so that the test measures delivery, not
        // the debug build's speed; memory stays bounded by `stream_buffer_bytes` (64 MiB).
        extra_config: "publish_timeout: 120\nbrine: {login_rate_limit: 0, event_ring_seconds: 10, \
                       stream_buffer: 65536}\n",
        brine_log_level: "info",
        salt_nice: SALT_NICE,
        ..StackOpts::default()
    });
    // The master and minions run at SALT_NICE (the process's own value; saltstack.py sets
    // their autogroups' too, where the kernel has them).
    for name in ["master", "m1", "m2"] {
        let pid = st.info["pids"][name].as_i64().unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let nice = stat
            .rsplit_once(')')
            .and_then(|(_, fields)| fields.split_whitespace().nth(16)?.parse::<i32>().ok());
        assert_eq!(
            nice,
            Some(i32::from(SALT_NICE)),
            "{name}'s nice value: {stat}"
        );
    }
    let token = login(&st.brine, &st.creds()).await;
    let live = json!({"client": "local", "tgt": ["m1", "m2"], "tgt_type": "list",
                      "fun": "test.ping", "timeout": 60});
    let live_req = Req::post_json("/", &live).header("X-Auth-Token", &token);
    // m3 keeps its accepted key; its process goes away.
    let m3 = st.info["pids"]["m3"].as_i64().unwrap_or(0);
    assert!(m3 > 1, "no pid for m3 in {}", st.info);
    let _ = std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{m3}")])
        .status();
    let silent = json!({"client": "local", "tgt": "m3", "fun": "test.ping",
                        "timeout": 5, "gather_job_timeout": 5});
    let silent_req = Req::post_json("/", &silent).header("X-Auth-Token", &token);
    // Warm up (connections to the master, the token cache, the threads that serve event
    // streams), then take the baseline.
    for req in [&live_req, &silent_req, &live_req] {
        let r = send(&st.brine, req).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    {
        let addr = st.brine.trim_start_matches("http://").to_owned();
        let opened = Arc::new(AtomicUsize::new(0));
        let warm: Vec<_> = (0..4)
            .map(|_| {
                let (addr, token, opened) = (addr.clone(), token.clone(), opened.clone());
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                    let head = format!(
                        "GET /events HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {token}\r\n\r\n"
                    );
                    s.write_all(head.as_bytes()).await.unwrap();
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    while memmem::find(&got, b"retry:").is_none() {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        assert!(n > 0, "warm-up stream: {}", String::from_utf8_lossy(&got));
                        got.extend_from_slice(&buf[..n]);
                    }
                    opened.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for w in warm {
            w.await.unwrap();
        }
        fire_hook(&st.brine, &token, "load/warm", &json!({})).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = st.brine_pid();
    let baseline = rss_kib(pid);
    let baseline_heap = heap_kib(&st.brine, &token).await;
    let baseline_fds = open_fds(pid).unwrap_or(0);

    // The /stats watcher: a plain OS thread with blocking sockets (so the test's own busy
    // runtime does not delay it), timing connect, request and answer of every call, and
    // Brine's RSS, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = std::thread::Builder::new()
        .name("stats-probe".into())
        .spawn({
            let (addr, token, stop) = (
                st.brine.trim_start_matches("http://").to_owned(),
                token.clone(),
                stop.clone(),
            );
            move || {
                use std::io::{Read, Write};
                let class = probe_in_real_time();
                let mut times = Vec::new();
                let mut peak = 0u64;
                let t0 = Instant::now();
                let head = format!(
                    "GET /stats HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
                     X-Auth-Token: {token}\r\nConnection: close\r\n\r\n"
                );
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let mut answer = Vec::new();
                    let (mut connected, mut first_byte) = (Duration::ZERO, Duration::ZERO);
                    let ok = std::net::TcpStream::connect(&addr)
                        .and_then(|mut s| {
                            connected = started.elapsed();
                            s.write_all(head.as_bytes())?;
                            let mut buf = [0u8; 4096];
                            loop {
                                let n = s.read(&mut buf)?;
                                if answer.is_empty() {
                                    first_byte = started.elapsed();
                                }
                                if n == 0 {
                                    return Ok(());
                                }
                                answer.extend_from_slice(&buf[..n]);
                            }
                        })
                        .is_ok();
                    let took = started.elapsed();
                    assert!(
                        ok && answer.starts_with(b"HTTP/1.1 200"),
                        "/stats under load: {}",
                        String::from_utf8_lossy(&answer)
                    );
                    times.push(Probe {
                        at: t0.elapsed().as_secs_f64(),
                        took,
                        connected,
                        first_byte,
                    });
                    peak = peak.max(rss_kib(pid));
                    std::thread::sleep(Duration::from_millis(100));
                }
                (times, peak, class)
            }
        })
        .expect("cannot start the /stats watcher");
    // The probe keeps this thread's priority; what this thread does from here on is load.
    make_nicer(LOAD_GENERATOR_NICE);

    // 1 000 streams, all open before the load starts.
    let addr = st.brine.trim_start_matches("http://").to_owned();
    let opened = Arc::new(AtomicUsize::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(400);
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            tokio::spawn(stream(
                addr.clone(),
                token.clone(),
                opened.clone(),
                deadline,
            ))
        })
        .collect();
    let open_by = Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::SeqCst) < STREAMS {
        assert!(
            Instant::now() < open_by,
            "only {} of {STREAMS} streams opened",
            opened.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1 000 synchronous local calls at once.
    let started = Instant::now();
    let cpu_before = cpu_seconds(pid);
    let calls: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let is_live = i % 50 == 0;
            let req = if is_live { &live_req } else { &silent_req }.clone();
            let base = st.brine.clone();
            tokio::spawn(async move { (is_live, send(&base, &req).await) })
        })
        .collect();
    let mut wrong = Vec::new();
    let mut live_calls = 0;
    for c in calls {
        let (is_live, r) = c.await.unwrap();
        let ret = r.json()["return"][0].clone();
        let right = r.status == 200
            && if is_live {
                live_calls += 1;
                ret == json!({"m1": true, "m2": true})
            } else {
                ret.as_object().is_some_and(|m| m.len() == 1)
                    && ret["m3"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("Minion did not return."))
            };
        if !right {
            wrong.push(format!("{} {}", r.status, r.text()));
        }
    }
    let load_time = started.elapsed();
    let cpu = cpu_seconds(pid) - cpu_before;
    assert!(
        wrong.is_empty(),
        "{} of {REQUESTS} calls failed, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );

    // The marker goes out after every return; each stream must see all returns before it.
    fire_hook(&st.brine, &token, MARKER, &json!({"done": true})).await;
    let mut carried = Vec::new();
    for s in streams {
        carried.push(s.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let (times, peak, probe_class) = watcher.join().expect("the /stats watcher failed");
    let short: Vec<_> = carried
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            !c.status_ok || !c.marker || c.lost || c.returns < 2 * live_calls || c.jobs < REQUESTS
        })
        .collect();
    if !short.is_empty() {
        // Say why: Brine's own count and log lines of streams it cut off.
        let stats = send(
            &st.brine,
            &Req::get("/stats").header("X-Auth-Token", &token),
        )
        .await
        .json();
        let log = st.brine_log();
        let cut: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("does not keep up") || l.contains("stream closed"))
            .take(5)
            .collect();
        panic!(
            "{} of {STREAMS} streams incomplete, e.g. {:?}; streams Brine dropped as slow: {}; \
             its log: {cut:#?}",
            short.len(),
            &short[..short.len().min(3)],
            stats["Brine"]["Streams Dropped (slow client)"]
        );
    }

    let slowest_read = carried.iter().map(|c| c.max_gap).max().unwrap_or_default();
    // Load gone: streams closed (Brine notices on its next write), nothing left behind.
    drop(carried);
    for i in 0..3 {
        fire_hook(&st.brine, &token, "load/after", &json!({"i": i})).await;
    }
    let settle = Instant::now() + Duration::from_secs(30);
    let drained = loop {
        let r = send(
            &st.brine,
            &Req::get("/stats").header("X-Auth-Token", &token),
        )
        .await;
        let s = r.json()["Brine"].clone();
        if s["Streams Open"] == json!(0)
            && s["Job Waiters"] == json!(0)
            && s["Master Requests In Flight"] == json!(0)
            && s["Master Requests Queued"] == json!(0)
            && s["Current Requests"] == json!(1)
            && s["Events Kept"] == json!(0)
        {
            break s;
        }
        assert!(Instant::now() < settle, "load did not drain: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The allocator hands freed pages back in the background (jemalloc's decay, ~10 s).
    let memory_back = Instant::now();
    let after = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(pid);
        if rss <= baseline + RSS_MARGIN_KIB || memory_back.elapsed() > Duration::from_secs(40) {
            break rss;
        }
    };
    let memory_back = memory_back.elapsed();
    let after_heap = heap_kib(&st.brine, &token).await;

    // /stats end to end (connect to last byte, from a client on the same loaded machine) and
    // Brine's own handling time of it (its access log).
    let samples = times.len();
    let mut slowest = times.clone();
    slowest.sort_by_key(|p| std::cmp::Reverse(p.took));
    slowest.truncate(3);
    let mut sorted: Vec<Duration> = times.iter().map(|p| p.took).collect();
    sorted.sort();
    let pct = |p: usize| sorted.get(samples * p / 100).copied().unwrap_or_default();
    let handled: Vec<u64> = st
        .brine_log()
        .lines()
        .filter(|l| l.contains("path=/stats status=200"))
        .filter_map(|l| {
            l.split(" ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let handled_max = handled.iter().copied().max().unwrap_or(0);
    let mut handled_sorted = handled.clone();
    handled_sorted.sort_unstable();
    let handled_p50 = handled_sorted
        .get(handled_sorted.len() / 2)
        .copied()
        .unwrap_or(0);
    eprintln!(
        "load: {REQUESTS} sync local calls ({live_calls} on live minions) in {:.1} s with \
         {STREAMS} streams open (longest a stream client went without data: \
         {slowest_read:?}); /stats end to end p50 {:?} p99 {:?} max {:?} over {samples} \
         calls (probe scheduled {probe_class}), handled by Brine in {handled_p50} ms (p50), \
         at most {handled_max} ms ({} calls); slowest: {slowest:.1?}; Brine CPU {cpu:.1} s over the load; Brine RSS baseline \
         {baseline} KiB, peak {peak} KiB, after {after} KiB ({memory_back:?} after the load \
         drained); heap allocated (jemalloc) baseline {baseline_heap:?} KiB, after \
         {after_heap:?} KiB; after the load: {drained}",
        load_time.as_secs_f64(),
        pct(50),
        pct(99),
        sorted.last().copied().unwrap_or_default(),
        handled.len()
    );
    assert!(samples >= 10, "only {samples} /stats samples");
    assert!(
        handled.len() >= samples,
        "{} /stats lines in the access log",
        handled.len()
    );
    // Every /stats call, connect to last byte, is answered in under 100 ms while Brine carries
    // the load. This holds with the deployment the README describes: the master and minions
    // at a quarter of Brine's CPU weight (SALT_NICE), the load generator below the probe. On
    // this 2-CPU machine the master alone wants more than one CPU during the load; at equal
    // weights the probe and Brine's threads wait in the kernel's run queue behind it. The dev
    // profile's `opt-level = 1` keeps a test build of Brine within a few times the release
    // build's cost (unoptimised, answering the 1 000 calls that end at once would hold the
    // probe's connection up). The probe runs in the real-time class (see
    // `probe_in_real_time`), and Brine accepts on its runtime's workers rather than on its
    // main thread.
    let over: Vec<&Probe> = times
        .iter()
        .filter(|p| p.took >= Duration::from_millis(100))
        .collect();
    assert!(
        over.is_empty(),
        "{} of {samples} /stats calls took 100 ms or more end to end under load: {over:.1?}",
        over.len()
    );
    assert!(
        handled_max < 100,
        "Brine took {handled_max} ms to answer /stats under load"
    );
    // Memory: what the load allocated is given back once the replay ring has aged out: the
    // live heap comes back to its baseline (the margin is for the runtime's grown tables),
    // and RSS follows, less what the allocator keeps.
    assert!(
        after_heap.0 <= baseline_heap.0 + HEAP_MARGIN_KIB,
        "Brine's live heap after the load: {after_heap:?} KiB, baseline {baseline_heap:?} KiB \
         (allocated, resident)"
    );
    assert!(
        after <= baseline + RSS_MARGIN_KIB,
        "Brine RSS after the load: {after} KiB, baseline {baseline} KiB (peak {peak} KiB)"
    );
    // Counted here rather than read from `/stats`, which recounts at most once a second.
    let fds = open_fds(pid).unwrap_or(usize::MAX);
    assert!(
        fds < baseline_fds + 16,
        "descriptors after the load: {fds} (baseline {baseline_fds})"
    );
}
