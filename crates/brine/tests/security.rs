//! Security behaviour of Brine itself, on its own stack (no reference: rest_cherrypy has
//! neither feature): the per-address login throttle, and secrets kept out of every log line
//! (Brine at `-l all`, so third-party crates log at trace level too, plus the access log);
//! the audit trail (one line per executed chunk, with its jid) as text and as JSON in its own
//! file, and SIGHUP reopening the log files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // for its helpers; see clippy.toml

pub mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("brine-security-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fn st() -> &'static Stack {
    let d = dir().display();
    stack_with(StackOpts {
        reference: false,
        minions: 1,
        // 3 refused attempts at once, then one every 10 s (a refused `file` login takes about
        // a second, so a faster rate would refill during the test).
        extra_config: "brine: {login_rate_limit: 6, login_burst: 3}",
        rest_extra: format!("{{log_access_file: '{d}/access.log'}}"),
        brine_log_level: "all",
        ..StackOpts::default()
    })
}

/// A client whose connections come from `addr` (any 127/8 address reaches the loopback).
fn client_from(addr: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(addr))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn post_login(
    c: &reqwest::Client,
    base: &str,
    creds: &Value,
) -> (u16, Option<String>, Value) {
    let r = c
        .post(format!("{base}/login"))
        .header("Accept", "application/json")
        .json(creds)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, retry, body)
}

async fn post_status(c: &reqwest::Client, base: &str, path: &str, body: &Value) -> u16 {
    c.post(format!("{base}{path}"))
        .header("Accept", "application/json")
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn refused_logins_are_throttled_per_address() {
    let st = st();
    let good = json!({"username": "fileuser", "password": "filepass", "eauth": "file"});
    let bad = json!({"username": "fileuser", "password": "guess", "eauth": "file"});
    let attacker = client_from([127, 0, 0, 3]);
    let bystander = client_from([127, 0, 0, 4]);
    // Good logins do not count (failures only, the default).
    for _ in 0..5 {
        assert_eq!(post_login(&attacker, &st.brine, &good).await.0, 200);
    }
    // The burst of refused attempts reaches the master and is refused by it.
    for i in 0..3 {
        let (status, _, body) = post_login(&attacker, &st.brine, &bad).await;
        assert_eq!(status, 401, "attempt {i}: {body}");
    }
    // Then the address is throttled, even with the right password, before the master is asked.
    for creds in [&bad, &good] {
        let (status, retry, body) = post_login(&attacker, &st.brine, creds).await;
        assert_eq!(status, 429, "{body}");
        let secs: u64 = retry
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After: {retry:?}"));
        assert!((1..=10).contains(&secs), "Retry-After {secs}");
        assert_eq!(body["status"], json!(429), "{body}");
        assert!(
            body["return"]
                .as_str()
                .is_some_and(|m| m.contains("Too many login attempts")),
            "{body}"
        );
    }
    // `/token` and `/run` with credentials are behind the same throttle.
    assert_eq!(
        post_status(&attacker, &st.brine, "/token", &good).await,
        429
    );
    let mut run = good.clone();
    run["client"] = json!("runner");
    run["fun"] = json!("test.arg");
    assert_eq!(post_status(&attacker, &st.brine, "/run", &run).await, 429);
    // Another address is not affected.
    assert_eq!(post_login(&bystander, &st.brine, &good).await.0, 200);
    // The allowance comes back at the configured rate.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, _) = post_login(&attacker, &st.brine, &good).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < deadline, "still throttled after 15 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Counted and logged.
    let token = login(&st.brine, &st.creds()).await;
    let stats = send(
        &st.brine,
        &Req::get("/stats").header("X-Auth-Token", &token),
    )
    .await;
    let throttled = stats.json()["Brine"]["Logins Throttled"]
        .as_u64()
        .unwrap_or(0);
    assert!(throttled >= 4, "{}", stats.text());
    assert!(st.brine_log().contains("login attempts over the limit"));
}

#[tokio::test]
async fn credentials_the_master_echoes_on_the_bus_are_redacted_on_streams() {
    let st = st();
    let token = login(&st.brine, &st.creds()).await;
    let mut sse = open_sse(&st.brine, &[("X-Auth-Token", &token)]).await;
    assert_eq!(sse.status, 200);
    let secret = format!("Echoed-{}-pw", std::process::id());
    // A publish the master refuses: it fires `salt/job/<jid>/error` with the whole load.
    let chunk = json!({"client": "local", "tgt": "*", "fun": "test.ping",
        "username": "fileuser", "password": secret, "eauth": "file"});
    let r = send(&st.brine, &Req::post_json("/run", &chunk)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut error_event = None;
    while Instant::now() < deadline {
        let Some(ev) = sse.next_tagged("salt/job/", Duration::from_secs(10)).await else {
            break;
        };
        let text = ev.data.to_string();
        assert!(!text.contains(&secret), "password on the stream: {text}");
        if ev.tag.ends_with("/error") && text.contains("fileuser") {
            error_event = Some(ev);
            break;
        }
    }
    let ev = error_event.expect("no error event from the master");
    assert_eq!(
        ev.data["data"]["kwargs"]["password"],
        json!("<redacted>"),
        "{}",
        ev.data
    );
    sse.task.abort();
}

#[tokio::test]
async fn passwords_and_tokens_never_reach_the_logs() {
    let st = st();
    // `auto` accepts any password: a unique one that can only be in a log if it leaked.
    let password = format!("Pw-{}-c0rrect-h0rse", std::process::id());
    let wrong = format!("Wrong-{}-b4ttery", std::process::id());
    let creds = json!({"username": "saltdev", "password": password, "eauth": "auto"});
    // Log in as JSON and as a form.
    let token = login(&st.brine, &creds).await;
    let form = format!("username=saltdev&password={password}&eauth=auto");
    let r = send(
        &st.brine,
        &Req::post("/login", "application/x-www-form-urlencoded", form),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token2 = r.json()["return"][0]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // A refused password (file eauth checks it).
    let r = send(
        &st.brine,
        &Req::post_json(
            "/login",
            &json!({"username": "fileuser", "password": wrong, "eauth": "file"}),
        ),
    )
    .await;
    assert_eq!(r.status, 401);
    // Commands with the token in the header, the cookie, the chunk; credentials in /run.
    let ping = json!([{"client": "local", "tgt": "*", "fun": "test.ping"}]);
    let r = send(
        &st.brine,
        &Req::post_json("/", &ping).header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        &st.brine,
        &Req::get("/minions").header("Cookie", &format!("session_id={token2}")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut chunk = ping[0].clone();
    chunk["token"] = json!(token);
    let r = send(&st.brine, &Req::post_json("/run", &chunk)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut chunk = json!({"client": "runner", "fun": "test.arg", "arg": ["x"]});
    for (k, v) in creds.as_object().into_iter().flatten() {
        chunk[k] = v.clone();
    }
    let r = send(&st.brine, &Req::post_json("/run", &chunk)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(&st.brine, &Req::post_json("/token", &creds)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let salt_token = r.json()[0]["token"].as_str().unwrap_or_default().to_owned();
    // A hook with the token in its headers; a bad token; a token in a WebSocket URL.
    let r = send(
        &st.brine,
        &Req::post_json("/hook/secret/test", &json!({"a": 1})).header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        &st.brine,
        &Req::get("/minions").header("X-Auth-Token", &format!("{}ff", &token[..20])),
    )
    .await;
    assert_eq!(r.status, 401);
    let ws = format!("{}/ws/{token}", st.brine.replacen("http://", "ws://", 1));
    let (mut sock, _) = tokio_tungstenite::connect_async(&ws)
        .await
        .unwrap_or_else(|e| panic!("{ws}: {e}"));
    let _ = sock.close(None).await;
    let r = send(
        &st.brine,
        &Req::post_json("/logout", &json!({})).header("X-Auth-Token", &token2),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let log = st.brine_log();
    let access = std::fs::read_to_string(dir().join("access.log")).unwrap_or_default();
    // The audit trail: the session's local call (with the jid its answer does not carry) and
    // the runner run with eauth credentials through /run.
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("brine::audit")).collect();
    let has = |needles: &[&str]| audit.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(
        has(&[
            "user=saltdev",
            "eauth=auto",
            "client=\"local\"",
            "fun=test.ping",
            "tgt=*",
            "outcome=\"ok\""
        ]) && audit
            .iter()
            .any(|l| l.contains("client=\"local\"") && jid_in(l).is_some()),
        "no audit line of the local call: {audit:#?}"
    );
    assert!(
        has(&[
            "user=saltdev",
            "eauth=auto",
            "client=\"runner\"",
            "fun=test.arg"
        ]),
        "no audit line of the runner call: {audit:#?}"
    );
    assert!(
        has(&["eauth=token", "client=\"local\""]),
        "no audit line of the chunk with its own token: {audit:#?}"
    );
    // The logs are there and detailed (trace level): the test looks at real output.
    assert!(log.lines().count() > 20, "brine log too short: {log}");
    assert!(log.contains(" TRACE "), "not at trace level: {log}");
    assert!(
        log.contains("path=/ws/<token>"),
        "WebSocket path not logged as expected"
    );
    assert!(access.contains("POST /login"), "access log: {access}");
    assert!(access.contains("GET /ws/"), "access log: {access}");
    for (what, secret) in [
        ("password", password.as_str()),
        ("refused password", wrong.as_str()),
        ("token", token.as_str()),
        ("second token", token2.as_str()),
        ("raw Salt token", salt_token.as_str()),
        // A prefix catches a token shortened for display.
        ("token prefix", &token[..16]),
    ] {
        assert!(!secret.is_empty(), "{what} is empty");
        for (name, text) in [("brine log", &log), ("access log", &access)] {
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                panic!("{what} in the {name}: {line}");
            }
        }
    }
}

/// The first 20-digit jid in an audit line's `jid=` field.
fn jid_in(line: &str) -> Option<&str> {
    let rest = line.split("jid=").nth(1)?;
    let jid = rest.trim_start_matches('"').get(..20)?;
    jid.bytes().all(|b| b.is_ascii_digit()).then_some(jid)
}

/// `--log-format json` and `brine.audit_log_file`: every line is a JSON object, audit lines go
/// to their own file only, and SIGHUP lets logrotate move that file away.
#[tokio::test]
async fn json_logs_and_the_audit_file_follow_sighup() {
    let st = st();
    let conf = dir().join("json-conf");
    let _ = std::fs::remove_dir_all(&conf);
    std::fs::create_dir_all(conf.join("master.d")).unwrap();
    std::fs::copy(st.config_dir().join("master"), conf.join("master")).unwrap();
    let audit_file = conf.join("audit.log");
    // An included file replaces the top-level `brine:` block of the stack's master file.
    std::fs::write(
        conf.join("master.d/audit.conf"),
        format!(
            "brine:\n  login_rate_limit: 0\n  audit_log_file: {}\n",
            audit_file.display()
        ),
    )
    .unwrap();
    let b = st.spawn_extra_brine_with("brine-json", &conf, &["--log-format", "json"]);
    let creds = json!({"username": "saltdev", "password": "json-test", "eauth": "auto"});
    let token = login(&b.url, &creds).await;
    let ping = json!([{"client": "local", "tgt": "*", "fun": "test.ping"}]);
    let r = send(
        &b.url,
        &Req::post_json("/", &ping).header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut chunk = json!({"client": "local_async", "tgt": "*", "fun": "test.arg", "arg": ["a"]});
    for (k, v) in creds.as_object().into_iter().flatten() {
        chunk[k] = v.clone();
    }
    let r = send(&b.url, &Req::post_json("/run", &chunk)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let async_jid = r.json()["return"][0]["jid"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(async_jid.len(), 20, "{}", r.text());

    let lines = |p: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let audit = loop {
        let a = lines(&audit_file);
        if a.len() >= 2 || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(audit.len(), 2, "{audit:#?}");
    for a in &audit {
        assert_eq!(a["target"], "brine::audit", "{a}");
        assert_eq!(a["user"], "saltdev", "{a}");
        assert_eq!(a["outcome"], "ok", "{a}");
    }
    assert_eq!(audit[0]["client"], "local");
    assert_eq!(audit[0]["eauth"], "auto");
    assert_eq!(audit[0]["fun"], "test.ping");
    assert_eq!(
        audit[0]["jid"].as_str().map(str::len),
        Some(20),
        "{}",
        audit[0]
    );
    assert_eq!(audit[1]["client"], "local_async");
    assert_eq!(audit[1]["jid"], json!(async_jid));
    let text = std::fs::read_to_string(&audit_file).unwrap_or_default();
    assert!(
        !text.contains(&token) && !text.contains("json-test"),
        "{text}"
    );
    // The console log is JSON too, and carries no audit line (they have their own file).
    let console = lines(&st.root.join("logs/brine-json.out"));
    assert!(!console.is_empty());
    assert!(
        console
            .iter()
            .all(|l| l["target"] != "brine::audit" && l["level"].is_string()),
        "{console:#?}"
    );

    // logrotate: move the file, SIGHUP, the next line goes to a new file at the path.
    let rotated = conf.join("audit.log.1");
    std::fs::rename(&audit_file, &rotated).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &b.pid().to_string()])
        .status()
        .map(|s| s.success());
    assert_eq!(hup.ok(), Some(true));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = send(
        &b.url,
        &Req::post_json("/", &ping).header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines(&audit_file).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        lines(&audit_file).len(),
        1,
        "no new audit file after SIGHUP"
    );
    assert_eq!(lines(&rotated).len(), 2, "the rotated file changed");
    let reopened = lines(&st.root.join("logs/brine-json.out"));
    assert!(
        reopened.iter().any(|l| l["message"] == "log file reopened"),
        "{reopened:#?}"
    );
    drop(b);
}

/// A 429 reaches a client that is still sending its body (the rest is read and discarded),
/// for clients that write the whole body before reading, at 1 to 150 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_reaches_a_client_still_uploading() {
    let st = st();
    let bad = json!({"username": "fileuser", "password": "guess", "eauth": "file"});
    let addr = [127, 0, 0, 5];
    let source = "127.0.0.5";
    let prober = client_from(addr);
    let url = format!("{}/login", st.brine);
    for mib in [1, 5, 20, 150] {
        for client in ["http.client", "curl"] {
            // The address is over its allowance right before the upload.
            let mut throttled = false;
            for _ in 0..5 {
                if post_login(&prober, &st.brine, &bad).await.0 == 429 {
                    throttled = true;
                    break;
                }
            }
            assert!(throttled, "127.0.0.5 never throttled");
            let got = if client == "curl" {
                upload_curl(st, &url, mib, Some(source), &[])
            } else {
                upload_python(st, &url, mib, Some(source), &[])
            };
            let (status, body) = got.unwrap_or_else(|e| panic!("{mib} MiB, {client}: {e}"));
            assert_eq!(status, 429, "{mib} MiB, {client}: {body}");
            assert!(body.contains("429"), "{mib} MiB, {client}: {body}");
        }
    }
}
