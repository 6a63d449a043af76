//! The master goes away and comes back while Brine keeps running: Brine keeps serving, answers
//! commands with a JSON 503 while the master is down, the first command after the master is
//! back succeeds, and event streams opened before the restart carry the events of a job run
//! after it, all without restarting Brine.

pub mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

#[tokio::test]
async fn master_stop_gives_503_and_restart_recovers_without_restarting_brine() {
    let st = stack_with(StackOpts {
        reference: false,
        ..StackOpts::default()
    });
    let token = login(&st.brine, &st.creds()).await;
    let ping = Req::post_json(
        "/",
        &json!({"client": "local", "tgt": "*", "fun": "test.ping"}),
    )
    .header("X-Auth-Token", &token);
    let r = send(&st.brine, &ping).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["return"][0], json!({"m1": true, "m2": true}));

    // Streams opened before the master goes away.
    let mut sse = open_sse(&st.brine, &[("X-Auth-Token", &token)]).await;
    assert_eq!(sse.status, 200);
    let ws_url = format!(
        "{}/all_events/{token}",
        st.brine.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("ws");
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::text(
            "websocket client ready",
        ))
        .await;

    st.script("stop-master");

    // Brine itself keeps serving.
    let r = send(&st.brine, &Req::get("/")).await;
    assert_eq!(r.status, 200);
    // Every command is a JSON 503 that says the master is unavailable, quickly.
    for req in [
        ping.clone(),
        Req::post_json("/", &json!({"client": "runner", "fun": "test.arg"}))
            .header("X-Auth-Token", &token),
        Req::post_json("/", &json!({"client": "wheel", "fun": "key.list_all"}))
            .header("X-Auth-Token", &token),
        Req::post_json("/login", &st.creds()),
        Req::post_json(
            "/run",
            &json!({"client": "local", "tgt": "*", "fun": "test.ping", "username": "saltdev", "password": "x", "eauth": "auto"}),
        ),
    ] {
        let started = Instant::now();
        let r = send(&st.brine, &req).await;
        assert_eq!(r.status, 503, "{} {}: {}", req.method, req.path, r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            json!({"status": 503, "return": "Salt Master is not available."})
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "503 took {:?}",
            started.elapsed()
        );
    }
    let brine_pid = std::fs::read_to_string(st.root.join("pids/brine.pid")).unwrap_or_default();

    st.script("start-master");

    // The first command after the master is back succeeds (the token survived too).
    let r = send(&st.brine, &ping).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["return"][0], json!({"m1": true, "m2": true}));
    let r = send(
        &st.brine,
        &Req::post_json(
            "/",
            &json!({"client": "runner", "fun": "test.arg", "arg": ["x"]}),
        )
        .header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["return"][0], json!({"args": ["x"], "kwargs": {}}));
    // The streams opened before the restart carry the events of a job run after it.
    let jid = ping_async(&st.brine, &token, "m1").await;
    let ret = sse
        .next_tagged(&format!("salt/job/{jid}/ret/m1"), Duration::from_secs(30))
        .await;
    assert!(
        ret.is_some(),
        "the SSE stream did not survive the master restart"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ws_got = false;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if msg
            .to_text()
            .unwrap_or("")
            .contains(&format!("salt/job/{jid}/ret/m1"))
        {
            ws_got = true;
            break;
        }
    }
    assert!(ws_got, "the WebSocket did not survive the master restart");
    sse.task.abort();

    // Same Brine process throughout.
    assert_eq!(
        std::fs::read_to_string(st.root.join("pids/brine.pid")).unwrap_or_default(),
        brine_pid
    );
    assert!(st
        .brine_log()
        .contains("event bus subscription re-established"));
}
