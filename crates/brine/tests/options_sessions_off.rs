//! `rest_cherrypy` options on a plain-HTTP stack with sessions off, shared by Brine and the
//! reference: `enable_sessions: false` (no `/login`, `/logout`, `/minions`, `/jobs`; `/run`
//! and `/token` stay), `stats_disable_auth`, `webhook_disable_auth` with `webhook_url`,
//! `favicon`, `debug`, `expire_responses` (accepted, no effect) and `log_error_file`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // for its helpers; see clippy.toml

pub mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use serde_json::json;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d =
            std::env::temp_dir().join(format!("brine-options-sessions-off-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("favicon.ico"), b"\x00\x00\x01\x00fake-icon").unwrap();
        d
    })
}

fn st() -> &'static Stack {
    let d = dir().display();
    stack_with(StackOpts {
        rest_extra: format!(
            "{{enable_sessions: false, stats_disable_auth: true, webhook_disable_auth: true, \
              webhook_url: /myhook, favicon: '{d}/favicon.ico', debug: true, expire_responses: false, \
              log_error_file: '{d}/error.log'}}"
        ),
        ..StackOpts::default()
    })
}

#[tokio::test]
async fn options_match_the_reference() {
    let st = st();
    let token_b = salt_token(&st.brine, &st.creds()).await;
    let token_c = salt_token(&st.cherry, &st.creds()).await;
    for (what, req) in [
        ("no /login", Req::post_json("/login", &st.creds())),
        ("no /logout", Req::post_json("/logout", &json!({}))),
        ("no /minions", Req::get("/minions")),
        ("no /jobs", Req::get("/jobs")),
        ("stats without auth", Req::get("/stats")),
        (
            "hook at webhook_url without auth",
            Req::post_json("/myhook/a/b", &json!({"x": 1})),
        ),
        (
            "default hook URL is gone",
            Req::post_json("/hook/a", &json!({"x": 1})),
        ),
        ("favicon", Req::get("/favicon.ico").header("Accept", "*/*")),
        ("welcome", Req::get("/")),
    ] {
        let (b, c) = both(st, &req).await;
        assert_eq!(b.status, c.status, "{what}: {} / {}", b.text(), c.text());
        if what == "favicon" {
            assert_eq!(b.body, c.body, "{what}");
        } else if what != "stats without auth" {
            assert_eq!(shape(&b).body, shape(&c).body, "{what}");
        }
    }
    // /run and /token still work with credentials or a Salt token in the chunk.
    let mut bchunk = json!({"client": "local", "tgt": "m1", "fun": "test.ping"});
    let mut cchunk = bchunk.clone();
    bchunk["token"] = json!(token_b);
    cchunk["token"] = json!(token_c);
    same2(
        st,
        "/run with a token",
        &Req::post_json("/run", &bchunk),
        &Req::post_json("/run", &cchunk),
    )
    .await;
    // The hook fired `salt/netapi/hook/...` (tag base unchanged by webhook_url).
    let mut events = open_sse(&st.brine, &[("X-Auth-Token", &token_b)]).await;
    let r = send(
        &st.brine,
        &Req::post_json("/myhook/probe", &json!({"y": 2})),
    )
    .await;
    assert_eq!(r.status, 200);
    let ev = events
        .next_tagged("salt/netapi/hook/probe", std::time::Duration::from_secs(10))
        .await;
    assert_eq!(
        ev.map(|e| e.data["data"]["post"].clone()),
        Some(json!({"y": 2}))
    );
    events.task.abort();
    // debug never puts a traceback into a response.
    let r = send(
        &st.brine,
        &Req::post_json(
            "/run",
            &json!({"client": "local", "fun": "test.ping", "token": token_b}),
        ),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json(),
        json!({"status": 500, "return": "An unexpected error occurred"})
    );
    assert!(dir().join("error.log").exists(), "log_error_file is opened");
}
