//! Fault injection against a real master: killed (SIGKILL of its whole process group) while a
//! synchronous `local` job, a synchronous runner and an event stream wait on it; frozen
//! (SIGSTOP) for longer than `publish_timeout`; started without its event-bus socket. Each
//! case must give a clear JSON 503 within the configured time, keep Brine answering
//! (`/stats` stays fast), leave no waiter, master request or file descriptor behind, and
//! recover fully once the master is back, in the same Brine process.
//!
//! The scenarios change the shared master, so they take a lock and run one at a time.

pub mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Serializes the scenarios (the test harness runs tests of a binary in parallel).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `publish_timeout` of this stack: how long a request to a frozen master may take.
const PUBLISH_TIMEOUT: u64 = 5;

fn st() -> &'static Stack {
    stack_with(StackOpts {
        reference: false,
        extra_config: "publish_timeout: 5\n",
        ..StackOpts::default()
    })
}

fn master_pid(st: &Stack) -> i32 {
    std::fs::read_to_string(st.root.join("pids/master.pid"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or_else(|| panic!("no master pid in {}", st.root.display()))
}

/// Sends `sig` to the master's whole process group (the stack script starts it in its own
/// session, so the group is the master and every process it forked).
fn signal_master(st: &Stack, sig: &str) {
    let pgid = master_pid(st);
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), "--", &format!("-{pgid}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} -{pgid} failed");
}

fn brine_fds(st: &Stack) -> usize {
    open_fds(st.brine_pid()).unwrap_or(0)
}

async fn stats(st: &Stack, token: &str) -> (Value, Duration) {
    let started = Instant::now();
    let r = send(&st.brine, &Req::get("/stats").header("X-Auth-Token", token)).await;
    assert_eq!(r.status, 200, "/stats: {}", r.text());
    (r.json()["Brine"].clone(), started.elapsed())
}

fn ping() -> Value {
    json!({"client": "local", "tgt": "*", "fun": "test.ping"})
}

async fn run(st: &Stack, token: &str, chunk: &Value) -> Resp {
    send(
        &st.brine,
        &Req::post_json("/", chunk).header("X-Auth-Token", token),
    )
    .await
}

/// Sends `chunk` with `token` in the background.
fn spawn_run(st: &Stack, token: &str, chunk: Value) -> tokio::task::JoinHandle<Resp> {
    let (base, token) = (st.brine.clone(), token.to_owned());
    tokio::spawn(async move {
        send(
            &base,
            &Req::post_json("/", &chunk).header("X-Auth-Token", &token),
        )
        .await
    })
}

/// The stack answers like a healthy one: both minions ping, a runner runs.
async fn assert_full_service(st: &Stack, token: &str) {
    let r = run(st, token, &ping()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["return"][0], json!({"m1": true, "m2": true}));
    let r = run(
        st,
        token,
        &json!({"client": "runner", "fun": "test.arg", "arg": ["back"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["return"][0],
        json!({"args": ["back"], "kwargs": {}})
    );
}

/// Nothing is left waiting inside Brine: no job waiter, no master request, the only request
/// in flight is the `/stats` call itself, and the descriptors are back near `baseline`.
async fn assert_nothing_leaked(st: &Stack, token: &str, baseline_fds: usize) {
    // Connections closed by the client are reaped asynchronously; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _) = stats(st, token).await;
        let fds = brine_fds(st);
        let clean = s["Job Waiters"] == json!(0)
            && s["Master Requests In Flight"] == json!(0)
            && s["Master Requests Queued"] == json!(0)
            && s["Current Requests"] == json!(1)
            && fds <= baseline_fds + 6;
        if clean {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after the fault: {s} (fds {fds}, baseline {baseline_fds})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn assert_503(r: &Resp, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let body = r.json();
    assert_eq!(body["status"], json!(503), "{what}: {body}");
    assert!(
        body["return"].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: {body}"
    );
}

/// Each chunk is refused with a JSON 503 in under 10 s.
async fn assert_quick_503s(st: &Stack, token: &str, chunks: impl IntoIterator<Item = Value>) {
    for chunk in chunks {
        let started = Instant::now();
        let r = run(st, token, &chunk).await;
        assert_503(&r, &chunk.to_string());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{chunk}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn master_killed_mid_local_runner_and_stream() {
    let _serial = SERIAL.lock().await;
    let st = st();
    let token = login(&st.brine, &st.creds()).await;
    assert_full_service(st, &token).await;
    let baseline_fds = brine_fds(st);
    let pid_before = st.brine_pid();

    let mut sse = open_sse(&st.brine, &[("X-Auth-Token", &token)]).await;
    assert_eq!(sse.status, 200);
    // A sync local job and a sync runner, both well inside their timeouts when the master dies.
    let local = spawn_run(
        st,
        &token,
        json!({"client": "local", "tgt": "*", "fun": "test.sleep", "arg": [30], "timeout": 60}),
    );
    let runner = spawn_run(
        st,
        &token,
        json!({"client": "runner", "fun": "test.sleep", "s_time": 30}),
    );
    // Both jobs are on the bus before the master goes.
    assert!(
        sse.next_tagged("salt/job/", Duration::from_secs(15))
            .await
            .is_some(),
        "the local job never showed on the stream"
    );
    assert!(
        sse.next_tagged("salt/run/", Duration::from_secs(15))
            .await
            .is_some(),
        "the runner never showed on the stream"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    signal_master(st, "KILL");

    // Both waiting requests end with a JSON 503 at once, not at their 60 s / 300 s timeouts.
    for (what, task) in [("local", local), ("runner", runner)] {
        let r = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .unwrap_or_else(|_| panic!("{what} still waiting 15 s after the master died"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_503(&r, what);
        assert!(
            r.json()["return"]
                .as_str()
                .is_some_and(|s| s.contains("event bus")),
            "{what}: {}",
            r.text()
        );
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "{what} took {:?}",
            killed.elapsed()
        );
    }
    // While the master is dead: Brine answers, commands are quick 503s.
    let (s, took) = stats(st, &token).await;
    assert!(took < Duration::from_millis(100), "/stats took {took:?}");
    assert_eq!(s["Event Bus Connected"], json!(false), "{s}");
    assert_quick_503s(
        st,
        &token,
        [
            ping(),
            json!({"client": "runner", "fun": "test.arg"}),
            json!({"client": "wheel", "fun": "key.list_all"}),
        ],
    )
    .await;
    let r = send(&st.brine, &Req::post_json("/login", &st.creds())).await;
    assert_503(&r, "login");

    // The master comes back (its stale sockets are still in sock_dir: it was SIGKILLed).
    st.script("start-master");
    assert_full_service(st, &token).await;
    // The stream opened before the kill carries a job run after the restart.
    let r = run(
        st,
        &token,
        &json!({"client": "local_async", "tgt": "m2", "fun": "test.ping"}),
    )
    .await;
    let jid = r.json()["return"][0]["jid"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(jid.len(), 20, "{}", r.text());
    assert!(
        sse.next_tagged(&format!("salt/job/{jid}/ret/m2"), Duration::from_secs(30))
            .await
            .is_some(),
        "the stream did not survive the master being killed"
    );
    sse.task.abort();
    drop(sse);
    assert_eq!(st.brine_pid(), pid_before, "Brine was restarted");
    assert_nothing_leaked(st, &token, baseline_fds).await;
    let log = st.brine_log();
    assert!(
        log.contains("event bus lost while waiting for a job"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn frozen_master_gives_503_within_publish_timeout_and_thaws() {
    let _serial = SERIAL.lock().await;
    let st = st();
    let token = login(&st.brine, &st.creds()).await;
    assert_full_service(st, &token).await;
    let baseline_fds = brine_fds(st);

    signal_master(st, "STOP");
    // Longer than the timeout: a burst of commands and logins against the frozen master.
    let limit = Duration::from_secs(PUBLISH_TIMEOUT + 5);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (base, token, creds) = (st.brine.clone(), token.clone(), st.creds());
        tasks.push(tokio::spawn(async move {
            let req = match i % 4 {
                0 => Req::post_json("/", &ping()).header("X-Auth-Token", &token),
                1 => Req::post_json("/", &json!({"client": "runner", "fun": "test.arg"}))
                    .header("X-Auth-Token", &token),
                2 => Req::post_json("/", &json!({"client": "wheel", "fun": "key.list_all"}))
                    .header("X-Auth-Token", &token),
                _ => Req::post_json("/login", &creds),
            };
            let started = Instant::now();
            let r = send(&base, &req).await;
            (req.path, r, started.elapsed())
        }));
    }
    // Brine itself stays responsive while they wait.
    for _ in 0..10 {
        let (_, took) = stats(st, &token).await;
        assert!(took < Duration::from_millis(100), "/stats took {took:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for t in tasks {
        let (path, r, took) = t.await.unwrap();
        assert_503(&r, &path);
        // A token checked before the freeze is cached, so a command fails at the publish.
        assert!(
            took <= limit,
            "{path}: 503 after {took:?} (limit {limit:?})"
        );
    }
    signal_master(st, "CONT");
    // The master catches up; Brine needs no restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run(st, &token, &ping()).await;
        if r.status == 200 && r.json()["return"][0] == json!({"m1": true, "m2": true}) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after SIGCONT: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_full_service(st, &token).await;
    assert_nothing_leaked(st, &token, baseline_fds).await;
}

#[tokio::test]
async fn missing_bus_socket_gives_503_until_the_master_restores_it() {
    let _serial = SERIAL.lock().await;
    let st = st();
    let token = login(&st.brine, &st.creds()).await;
    assert_full_service(st, &token).await;

    // The bus socket disappears (a cleanup job, a mistaken tmpfiles rule); Brine (re)starts.
    let sock = st.root.join("run/master/master_event_pub.ipc");
    assert!(sock.exists(), "{} missing before the test", sock.display());
    std::fs::remove_file(&sock).unwrap_or_else(|e| panic!("rm {}: {e}", sock.display()));
    st.start_brine();
    let pid = st.brine_pid();

    // Brine serves what needs no master (a token it has checked, /stats) and says why it
    // cannot serve the rest: the bus is its test of "the master is up", as the socket files
    // are the reference's, so logins and commands are quick 503s, not hangs.
    let (s, took) = stats(st, &token).await;
    assert!(took < Duration::from_millis(100), "/stats took {took:?}");
    assert_eq!(s["Event Bus Connected"], json!(false), "{s}");
    let started = Instant::now();
    let r = send(&st.brine, &Req::post_json("/login", &st.creds())).await;
    assert_503(&r, "login");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_quick_503s(
        st,
        &token,
        [
            ping(),
            json!({"client": "runner", "fun": "test.arg"}),
            json!({"client": "local_async", "tgt": "*", "fun": "test.ping"}),
        ],
    )
    .await;
    // Event streams open and wait for the bus.
    let mut sse = open_sse(&st.brine, &[("X-Auth-Token", &token)]).await;
    assert_eq!(sse.status, 200);
    assert!(st.brine_log().contains("cannot subscribe to the event bus"));

    // Restarting the master recreates the socket; Brine subscribes by itself.
    st.script("stop-master");
    st.script("start-master");
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats(st, &token).await.0["Event Bus Connected"] != json!(true) {
        assert!(
            Instant::now() < deadline,
            "Brine never subscribed to the restored bus"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_full_service(st, &token).await;
    fire_hook(&st.brine, &token, "faults/restored", &json!({"n": 1})).await;
    assert!(
        sse.next_tagged("salt/netapi/hook/faults/restored", Duration::from_secs(10))
            .await
            .is_some(),
        "the stream opened without a bus never delivered"
    );
    sse.task.abort();
    assert_eq!(st.brine_pid(), pid, "Brine was restarted");
}
