//! Event streams and webhooks, compared with rest_cherrypy on the same master: `/events` (auth
//! by header and cookie, the query-token refusal, no auth), `/ws` in both forms, `/hook` with
//! JSON, form and YAML bodies and the event each fires; plus Brine's `Last-Event-ID` resume,
//! its tag filters (`?tag=` on every stream, a WebSocket's `subscribe`), two Brine instances on one master (tokens, revocation and the bus shared through it), and
//! SIGTERM (requests in flight finish, streams end at once, the process exits 0).

#![allow(clippy::unwrap_used, clippy::expect_used)] // for its helpers; see clippy.toml

pub mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// The stack of this binary: users may ask for short-lived tokens (to test expiry).
fn stream_stack() -> &'static Stack {
    stack_with(StackOpts {
        extra_config: "token_expire_user_override: true",
        ..StackOpts::default()
    })
}

/// The header subset of an `/events` response that clients rely on.
fn stream_shape(status: u16, headers: &[(String, String)]) -> Shape {
    shape(&Resp {
        status,
        headers: headers.to_vec(),
        body: Vec::new(),
    })
}

/// The parts of a hook event that do not depend on which server fired it.
fn hook_view(data: &Value) -> Value {
    let mut headers = data["data"]["headers"].clone();
    if let Value::Object(h) = &mut headers {
        // Host carries each server's port; the token is each server's own (and redacted by
        // Brine, decision D4); lengths follow.
        for k in ["Host", "X-Auth-Token", "Content-Length", "Cookie"] {
            h.remove(k);
        }
    }
    json!({"tag": data["tag"], "body": data["data"]["body"], "post": data["data"]["post"], "headers": headers})
}

#[tokio::test]
async fn events_auth_and_headers_match_the_reference() {
    let st = stream_stack();
    let s = sessions(st).await;
    // Header, cookie: a 200 stream with the same headers; both carry the same hook event.
    for how in ["header", "cookie"] {
        let hb = if how == "header" {
            ("X-Auth-Token", s.brine.clone())
        } else {
            ("Cookie", format!("session_id={}", s.brine))
        };
        let hc = if how == "header" {
            ("X-Auth-Token", s.cherry.clone())
        } else {
            ("Cookie", format!("session_id={}", s.cherry))
        };
        let mut b = open_sse(&st.brine, &[(hb.0, &hb.1)]).await;
        let mut c = open_sse(&st.cherry, &[(hc.0, &hc.1)]).await;
        assert_eq!(
            stream_shape(b.status, &b.headers),
            stream_shape(c.status, &c.headers),
            "{how}"
        );
        assert_eq!(b.status, 200);
        let path = format!("streams/{how}");
        fire_hook(&st.brine, &s.brine, &path, &json!({"via": how})).await;
        let eb = b
            .next_tagged(&format!("salt/netapi/hook/{path}"), WAIT)
            .await;
        let ec = c
            .next_tagged(&format!("salt/netapi/hook/{path}"), WAIT)
            .await;
        let (eb, ec) = (
            eb.expect("brine stream got the hook event"),
            ec.expect("reference stream got the hook event"),
        );
        assert_eq!(
            eb.data, ec.data,
            "{how}: the same bus event on both streams"
        );
        assert!(eb.id.is_some(), "Brine numbers its events");
        b.task.abort();
        c.task.abort();
    }
    // The query token is refused by both (3008.4 behaviour), and no auth is a 401.
    for (what, path) in [
        ("query token", format!("/events?token={}", s.brine)),
        ("salt_token", "/events?salt_token=abc".to_owned()),
        ("no auth", "/events".to_owned()),
    ] {
        same(st, what, &Req::get(&path)).await;
    }
    same(
        st,
        "bad token",
        &Req::get("/events").header("X-Auth-Token", "deadbeef"),
    )
    .await;
}

/// The code of the Close frame a WebSocket receives, skipping other messages; `None` when the
/// socket ends without one, or nothing arrives for `quiet`.
async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    quiet: Duration,
) -> Option<u16> {
    while let Ok(Some(msg)) = tokio::time::timeout(quiet, ws.next()).await {
        match msg {
            Ok(Message::Close(Some(frame))) => return Some(u16::from(frame.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

async fn ws_connect(
    base: &str,
    path: &str,
    cookie: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    let url = format!("{}{path}", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("Cookie", c.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("ws {path}: {e}"),
    }
}

/// Sends the ready message, fires a hook, returns the text messages received.
async fn ws_session(
    st: &Stack,
    base: &str,
    token: &str,
    path: &str,
    cookie: Option<&str>,
    hook: &str,
) -> Vec<String> {
    let mut ws = match ws_connect(base, path, cookie).await {
        Ok(ws) => ws,
        Err(code) => panic!("{base}{path}: HTTP {code}"),
    };
    let _ = ws.send(Message::text("websocket client ready")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    fire_hook(base, token, hook, &json!({"ws": true})).await;
    let _ = st;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(t) = msg {
            let done = t.contains(&format!("salt/netapi/hook/{hook}"));
            got.push(t.to_string());
            if done {
                break;
            }
        }
    }
    got
}

#[tokio::test]
async fn ws_both_forms_match_the_reference() {
    let st = stream_stack();
    let s = sessions(st).await;
    for form in ["path", "cookie"] {
        let hook = format!("streams/ws-{form}");
        let (pb, cb) = if form == "path" {
            (format!("/ws/{}", s.brine), None)
        } else {
            ("/ws".to_owned(), Some(format!("session_id={}", s.brine)))
        };
        let (pc, cc) = if form == "path" {
            (format!("/ws/{}", s.cherry), None)
        } else {
            ("/ws".to_owned(), Some(format!("session_id={}", s.cherry)))
        };
        let b = ws_session(st, &st.brine, &s.brine, &pb, cb.as_deref(), &hook).await;
        let c = ws_session(st, &st.cherry, &s.cherry, &pc, cc.as_deref(), &hook).await;
        assert_eq!(
            b.first().map(String::as_str),
            Some("server received message"),
            "{form}: {b:?}"
        );
        assert_eq!(
            c.first().map(String::as_str),
            Some("server received message"),
            "{form}: {c:?}"
        );
        let last = |v: &Vec<String>| -> Value {
            let text = v.last().cloned().unwrap_or_default();
            assert!(
                text.starts_with("data: ") && text.ends_with("\n\n"),
                "{text:?}"
            );
            serde_json::from_str(text.trim_start_matches("data: ").trim_end())
                .unwrap_or(Value::Null)
        };
        assert_eq!(hook_view(&last(&b)), hook_view(&last(&c)), "{form}");
    }
    // No token: 401 before the upgrade, on both.
    assert_eq!(ws_connect(&st.brine, "/ws", None).await.err(), Some(401));
    assert_eq!(ws_connect(&st.cherry, "/ws", None).await.err(), Some(401));
    assert_eq!(
        ws_connect(&st.brine, "/ws/deadbeef", None).await.err(),
        Some(401)
    );
}

/// The 101 of `/ws` carries the reference's headers (ws4py's `Content-Type` and
/// `Sec-WebSocket-Version` besides the handshake, `Allow`, CORS and the session cookie).
#[tokio::test]
async fn ws_upgrade_headers_match_the_reference() {
    let st = stream_stack();
    let s = sessions(st).await;
    let headers = |base: &str, token: &str| {
        let url = format!("{}/ws/{token}", base.replace("http://", "ws://"));
        async move {
            let mut req = url.clone().into_client_request().unwrap();
            req.headers_mut()
                .insert("Origin", "https://ui.example".parse().unwrap());
            let (mut ws, resp) = tokio_tungstenite::connect_async(req)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let _ = ws.close(None).await;
            resp.headers().clone()
        }
    };
    let b = headers(&st.brine, &s.brine).await;
    let c = headers(&st.cherry, &s.cherry).await;
    for name in [
        "content-type",
        "allow",
        "access-control-allow-origin",
        "access-control-expose-headers",
        "access-control-allow-credentials",
        "upgrade",
        "connection",
        "sec-websocket-version",
    ] {
        let value = |h: &tokio_tungstenite::tungstenite::http::HeaderMap| {
            h.get(name)
                .map(|v| v.to_str().unwrap_or("").to_ascii_lowercase())
        };
        assert!(value(&c).is_some(), "the reference sends {name}: {c:?}");
        assert_eq!(value(&b), value(&c), "{name}");
    }
    // (The accept value answers each client's random key.)
    for name in ["set-cookie", "sec-websocket-accept"] {
        assert!(b.contains_key(name) && c.contains_key(name), "{name}");
    }
}

#[tokio::test]
async fn hook_bodies_and_their_events_match_the_reference() {
    let st = stream_stack();
    let s = sessions(st).await;
    let mut b = open_sse(&st.brine, &[("X-Auth-Token", &s.brine)]).await;
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            "json",
            "application/json",
            r#"{"foo": "bar", "n": 1, "arg": "x"}"#,
        ),
        (
            "form",
            "application/x-www-form-urlencoded",
            "foo=bar&n=1&arg=2",
        ),
        ("yaml", "application/x-yaml", "foo: bar\nlist: [1, yes]\n"),
        ("text", "text/plain", "just text"),
        ("empty", "application/json", ""),
    ];
    for (what, ct, body) in cases {
        let path = format!("/hook/streams/body-{what}");
        let req = Req::post(&path, ct, body.as_bytes().to_vec());
        same_session(st, &s, what, &req).await;
        // Both servers fired one event each; Brine's stream sees both.
        let tag = format!("salt/netapi/hook/streams/body-{what}");
        let first = b
            .next_tagged(&tag, WAIT)
            .await
            .unwrap_or_else(|| panic!("{what}: no event"));
        let second = b
            .next_tagged(&tag, WAIT)
            .await
            .unwrap_or_else(|| panic!("{what}: one event only"));
        assert_eq!(hook_view(&first.data), hook_view(&second.data), "{what}");
        let by_brine = [&first, &second]
            .into_iter()
            .find(|e| e.data["data"]["headers"]["X-Auth-Token"] == "<redacted>")
            .unwrap_or_else(|| panic!("{what}: Brine's event redacts the token"));
        assert_eq!(by_brine.data["data"]["headers"]["Remote-Addr"], "127.0.0.1");
    }
    same(
        st,
        "hook without session",
        &Req::post_json("/hook/x", &json!({})),
    )
    .await;
    same(st, "GET /hook without session", &Req::get("/hook")).await;
    same_session(st, &s, "GET /hook", &Req::get("/hook")).await;
    b.task.abort();
}

#[tokio::test]
async fn last_event_id_resumes_exactly_the_missed_events() {
    let st = stream_stack();
    let token = login(&st.brine, &st.creds()).await;
    let mut a = open_sse(&st.brine, &[("X-Auth-Token", &token)]).await;
    fire_hook(&st.brine, &token, "streams/resume/0", &json!({"n": 0})).await;
    let seen = a
        .next_tagged("salt/netapi/hook/streams/resume/0", WAIT)
        .await
        .expect("first event");
    let last = seen.id.expect("id");
    a.task.abort();
    for n in 1..=3 {
        fire_hook(
            &st.brine,
            &token,
            &format!("streams/resume/{n}"),
            &json!({"n": n}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut b = open_sse(
        &st.brine,
        &[
            ("X-Auth-Token", &token),
            ("Last-Event-ID", &last.to_string()),
        ],
    )
    .await;
    let mut replayed = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(800), b.events.recv()).await
    {
        replayed.push(ev);
    }
    b.task.abort();
    // Consecutive ids right after the last one seen, nothing older, nothing twice.
    let ids: Vec<u64> = replayed.iter().filter_map(|e| e.id).collect();
    assert!(!ids.is_empty());
    assert_eq!(ids[0], last + 1, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let ours: Vec<&str> = replayed
        .iter()
        .filter(|e| e.tag.starts_with("salt/netapi/hook/streams/resume/"))
        .map(|e| e.tag.as_str())
        .collect();
    assert_eq!(
        ours,
        vec![
            "salt/netapi/hook/streams/resume/1",
            "salt/netapi/hook/streams/resume/2",
            "salt/netapi/hook/streams/resume/3"
        ]
    );
    // An id older than anything kept gets the "lost" marker first.
    let mut c = open_sse(
        &st.brine,
        &[("X-Auth-Token", &token), ("Last-Event-ID", "5")],
    )
    .await;
    let first = tokio::time::timeout(WAIT, c.events.recv())
        .await
        .ok()
        .flatten()
        .expect("marker");
    assert_eq!(first.tag, "brine/events/lost");
    assert_eq!(first.data["data"]["last_event_id"], 5);
    c.task.abort();
}

/// Fires the hooks `streams/filter/<name>` in order.
async fn fire_filter_hooks(base: &str, token: &str, names: &[&str]) {
    for name in names {
        fire_hook(base, token, &format!("streams/filter/{name}"), &json!({})).await;
    }
}

/// The tags of the events a WebSocket sends (`data: {…}` on `/ws`, bare JSON on
/// `/all_events`) until `last` arrives or nothing comes for a while; other text messages are
/// returned as they are.
async fn ws_tags(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    last: &str,
) -> (Vec<String>, Vec<String>) {
    let (mut tags, mut other) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        let Message::Text(t) = msg else { continue };
        let json = t.strip_prefix("data: ").unwrap_or(&t).trim();
        match serde_json::from_str::<Value>(json)
            .ok()
            .and_then(|v| v["tag"].as_str().map(str::to_owned))
        {
            Some(tag) => {
                let done = tag == last;
                tags.push(tag);
                if done {
                    break;
                }
            }
            None => other.push(t.to_string()),
        }
    }
    (tags, other)
}

#[tokio::test]
async fn tag_filters_deliver_exactly_the_matching_events() {
    let st = stream_stack();
    let token = login(&st.brine, &st.creds()).await;
    let auth = [("X-Auth-Token", token.as_str())];
    let base = "salt/netapi/hook/streams/filter";
    // SSE: two globs; an unfiltered stream says when everything fired has passed.
    let mut all = open_sse(&st.brine, &auth).await;
    let mut some = open_sse_at(
        &st.brine,
        "/events?tag=salt/netapi/hook/streams/filter/a*&tag=salt%2Fnetapi%2Fhook%2Fstreams%2Ffilter%2Fc",
        &auth,
    )
    .await;
    assert_eq!(some.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fire_filter_hooks(&st.brine, &token, &["a1", "b", "a2", "c", "cc", "end"]).await;
    let first = all
        .next_tagged(&format!("{base}/a1"), WAIT)
        .await
        .expect("a1 on the unfiltered stream");
    all.next_tagged(&format!("{base}/end"), WAIT)
        .await
        .expect("end on the unfiltered stream");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    while let Ok(ev) = some.events.try_recv() {
        got.push(ev.tag);
    }
    // Nothing else of the bus (the hooks' own auth events, the master's) came through.
    assert_eq!(
        got,
        vec![
            format!("{base}/a1"),
            format!("{base}/a2"),
            format!("{base}/c")
        ]
    );
    some.task.abort();
    // Resumed with a filter: only the matching events after the id are replayed.
    let before = (first.id.expect("id") - 1).to_string();
    let mut resumed = open_sse_at(
        &st.brine,
        "/events?tag=salt/netapi/hook/streams/filter/?",
        &[("X-Auth-Token", &token), ("Last-Event-ID", &before)],
    )
    .await;
    let mut replayed = Vec::new();
    while let Ok(Some(ev)) =
        tokio::time::timeout(Duration::from_millis(800), resumed.events.recv()).await
    {
        replayed.push(ev.tag);
    }
    resumed.task.abort();
    assert_eq!(replayed, vec![format!("{base}/b"), format!("{base}/c")]);
    // Refusals: an empty glob, too many globs, any other parameter (as before).
    let many: String = (0..65).map(|n| format!("tag=t{n}&")).collect();
    for (path, says) in [
        ("/events?tag=", "must not be empty"),
        (&format!("/events?{many}") as &str, "at most 64"),
        ("/events?tag=a&x=1", "takes no query parameters"),
    ] {
        let r = send(&st.brine, &Req::get(path).header("X-Auth-Token", &token)).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains(says), "{path}: {}", r.text());
    }
    let r = send(&st.brine, &Req::get("/events?tag=a")).await;
    assert_eq!(r.status, 401, "no token: {}", r.text());
    all.task.abort();

    // rest_cherrypy's /ws with ?tag=, then a subscribe that replaces the filter.
    let mut ws = ws_connect(
        &st.brine,
        &format!("/ws/{token}?tag=salt/netapi/hook/streams/filter/ws1"),
        None,
    )
    .await
    .unwrap_or_else(|code| panic!("/ws: HTTP {code}"));
    ws.send(Message::text("websocket client ready"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fire_filter_hooks(&st.brine, &token, &["ws2", "ws1"]).await;
    let (tags, _) = ws_tags(&mut ws, &format!("{base}/ws1")).await;
    assert_eq!(tags, vec![format!("{base}/ws1")]);
    let sub = json!({"subscribe": [format!("{base}/ws2"), format!("{base}/ws3")]}).to_string();
    ws.send(Message::text(sub)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fire_filter_hooks(&st.brine, &token, &["ws1", "ws2", "ws1", "ws3"]).await;
    let (tags, other) = ws_tags(&mut ws, &format!("{base}/ws3")).await;
    assert_eq!(tags, vec![format!("{base}/ws2"), format!("{base}/ws3")]);
    assert_eq!(other, vec!["server received message".to_string()]);
    // A subscribe the server cannot use: a 400 message, and the filter stays.
    ws.send(Message::text(r#"{"subscribe": "salt/*"}"#))
        .await
        .unwrap();
    fire_filter_hooks(&st.brine, &token, &["ws3"]).await;
    let (tags, other) = ws_tags(&mut ws, &format!("{base}/ws3")).await;
    assert_eq!(tags, vec![format!("{base}/ws3")]);
    assert_eq!(other.len(), 2, "{other:?}");
    assert!(
        other.iter().any(|m| m.contains(r#""status":400"#)),
        "{other:?}"
    );

    // rest_tornado's /all_events: a subscribe before the ready message.
    let mut ws = ws_connect(&st.brine, &format!("/all_events/{token}"), None)
        .await
        .unwrap_or_else(|code| panic!("/all_events: HTTP {code}"));
    let sub = json!({"subscribe": [format!("{base}/t*")]}).to_string();
    ws.send(Message::text(sub)).await.unwrap();
    ws.send(Message::text("websocket client ready"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fire_filter_hooks(&st.brine, &token, &["x", "t1", "y", "t2"]).await;
    let (tags, other) = ws_tags(&mut ws, &format!("{base}/t2")).await;
    assert_eq!(tags, vec![format!("{base}/t1"), format!("{base}/t2")]);
    assert!(other.is_empty(), "{other:?}");
}

#[tokio::test]
async fn streams_end_when_the_token_expires_or_is_revoked() {
    let st = stream_stack();
    // A token that expires in 3 seconds.
    let r = send(
        &st.brine,
        &Req::post_json(
            "/login",
            &json!({"username": "saltdev", "password": "x", "eauth": "auto", "token_expire": 3}),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let short = r.json()["return"][0]["token"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let mut sse = open_sse(&st.brine, &[("X-Auth-Token", &short)]).await;
    assert_eq!(sse.status, 200);
    let mut ws = ws_connect(&st.brine, &format!("/ws/{short}"), None)
        .await
        .unwrap_or_else(|code| panic!("HTTP {code}"));
    let _ = ws.send(Message::text("websocket client ready")).await;
    let started = std::time::Instant::now();
    // The SSE body ends (the reader task finishes) and the socket closes with 1008.
    let ended = tokio::time::timeout(Duration::from_secs(8), &mut sse.task).await;
    assert!(
        ended.is_ok(),
        "SSE stream still open after the token expired"
    );
    let close_code = close_code(&mut ws, Duration::from_secs(8)).await;
    assert_eq!(close_code, Some(1008));
    assert!(started.elapsed() < Duration::from_secs(8));

    // Logout ends the streams of that token within a couple of seconds.
    let token = login(&st.brine, &st.creds()).await;
    let mut sse = open_sse(&st.brine, &[("X-Auth-Token", &token)]).await;
    assert_eq!(sse.status, 200);
    let r = send(
        &st.brine,
        &Req::post_json("/logout", &json!({})).header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.status, 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut sse.task).await;
    assert!(ended.is_ok(), "SSE stream still open after logout");
}

/// Scale-out: two Brine processes on one master share nothing but the master. A token minted
/// through one works on the other, a logout on one is refused by the other once the
/// revocation, which travels on the master's bus, reaches it (milliseconds), and each serves `/events` from its own bus
/// subscription.
#[tokio::test]
async fn two_instances_share_tokens_revocations_and_the_bus() {
    let st = stream_stack();
    let b = st.spawn_extra_brine("brine-b");
    let a = st.brine.as_str();
    let token = login(a, &st.creds()).await;
    let keys = Req::get("/keys").header("X-Auth-Token", &token);
    let r = send(&b.url, &keys).await;
    assert_eq!(r.status, 200, "token of A on B: {}", r.text());
    // Both stream a hook fired through A, each from its own subscription.
    let mut sse_a = open_sse(a, &[("X-Auth-Token", &token)]).await;
    let mut sse_b = open_sse(&b.url, &[("X-Auth-Token", &token)]).await;
    assert_eq!((sse_a.status, sse_b.status), (200, 200));
    fire_hook(a, &token, "scaleout/ping", &json!({"from": "a"})).await;
    for (name, sse) in [("A", &mut sse_a), ("B", &mut sse_b)] {
        let ev = sse
            .next_tagged("salt/netapi/hook/scaleout/ping", WAIT)
            .await
            .unwrap_or_else(|| panic!("{name} did not stream the hook event"));
        assert_eq!(
            ev.data["data"]["post"]["from"], "a",
            "{name}: {:?}",
            ev.data
        );
    }
    let stats = send(&b.url, &Req::get("/stats").header("X-Auth-Token", &token)).await;
    assert_eq!(stats.json()["Brine"]["Event Bus Connected"], true);
    // Logout on A: B refuses the token as soon as the announcement reaches it over the
    // master's bus (it had the token cached as valid).
    let r = send(
        a,
        &Req::post_json("/logout", &json!({})).header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = std::time::Instant::now();
    let refused = loop {
        let r = send(&b.url, &keys).await;
        if r.status == 401 {
            break out.elapsed();
        }
        assert_eq!(r.status, 200, "{}", r.text());
        // Milliseconds when the machine is quiet; the bound is for the master's bus on a CI
        // machine that runs this binary's other tests (and their Brines) at the same time:
        // one run there took over 1 s.
        assert!(
            out.elapsed() < Duration::from_secs(5),
            "B still accepts the token 5 s after the logout on A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("scale-out: B refused the revoked token {refused:?} after the logout on A");
    // B's stream of that token ends too.
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut sse_b.task).await;
    assert!(ended.is_ok(), "B's stream still open after the logout on A");
    drop(b);
}

/// SIGTERM: the request in flight is answered, the SSE stream ends at once (its body closes
/// cleanly), a WebSocket gets 1001, new connections are refused, and the process exits 0.
#[tokio::test]
async fn sigterm_finishes_requests_ends_streams_and_exits() {
    let st = stream_stack();
    let mut b = st.spawn_extra_brine("brine-term");
    let token = login(&b.url, &st.creds()).await;
    let mut sse = open_sse(&b.url, &[("X-Auth-Token", &token)]).await;
    assert_eq!(sse.status, 200);
    let mut ws = ws_connect(&b.url, &format!("/ws/{token}"), None)
        .await
        .unwrap_or_else(|code| panic!("HTTP {code}"));
    let _ = ws.send(Message::text("websocket client ready")).await;
    let slow = Req::post_json(
        "/",
        &json!([{"client": "runner", "fun": "test.sleep", "s_time": 3}]),
    )
    .header("X-Auth-Token", &token);
    let url = b.url.clone();
    let in_flight = tokio::spawn(async move { send(&url, &slow).await });
    // A connection that never sends its request does not hold up the stop.
    let idle = std::net::TcpStream::connect(b.url.trim_start_matches("http://")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &b.pid().to_string()])
        .status()
        .map(|s| s.success());
    assert_eq!(term.ok(), Some(true));
    let t0 = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(3), &mut sse.task).await;
    assert!(ended.is_ok(), "SSE stream still open 3 s after SIGTERM");
    let close_code = close_code(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(close_code, Some(1001), "WebSocket close code at SIGTERM");
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the request in flight: {}", r.text());
    assert_eq!(r.json()["return"][0], json!(true), "{}", r.text());
    let code = tokio::task::spawn_blocking(move || {
        let code = b.wait_exit(Duration::from_secs(12));
        (code, b)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "exit code after SIGTERM");
    let took = t0.elapsed();
    eprintln!("sigterm: stopped {took:?} after the signal");
    // The request in flight ends ~1.5 s after the signal; the idle connection adds nothing
    // (the stop gives up on connections after 10 s).
    assert!(
        took < Duration::from_secs(6),
        "stopped {took:?} after the signal with an idle connection open"
    );
    drop(idle);
    let log = std::fs::read_to_string(st.root.join("logs/brine-term.out")).unwrap_or_default();
    assert!(
        log.contains("SIGTERM: stopping") && log.contains("stopped"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    drop(code.1);
}
