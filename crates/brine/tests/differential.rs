//! Differential tests: the same requests to Brine and to the Python rest_cherrypy on the same
//! master, responses compared after normalizing jids, tokens and timestamps (status, key
//! headers and body; for HTML error pages their title and message).
//!
//! Intended differences (README, "Differences from Python salt-api") are not compared here:
//! the token format (Brine hands out the master's token), and the reference bugs Brine fixes
//! (decision D2).

pub mod common;

use common::*;
use serde_json::json;

fn with_token(req: Req, token: &str) -> Req {
    req.header("X-Auth-Token", token)
}

#[tokio::test]
async fn welcome_document_and_routing() {
    let st = stack();
    same(st, "GET /", &Req::get("/")).await;
    same(
        st,
        "GET / yaml",
        &Req::get("/").header("Accept", "application/x-yaml"),
    )
    .await;
    same(st, "GET / no Accept", &Req::get("/").without("Accept")).await;
    same(
        st,
        "GET / tie goes to yaml",
        &Req::get("/").header("Accept", "application/json, application/x-yaml"),
    )
    .await;
    same(
        st,
        "GET / 406",
        &Req::get("/").header("Accept", "text/html"),
    )
    .await;
    same(st, "GET /run", &Req::get("/run")).await;
    same(st, "GET /token", &Req::get("/token")).await;
    same(st, "GET /?x=1", &Req::get("/?x=1")).await;
    same(st, "unknown path", &Req::get("/nonexistent/path")).await;
    same(st, "extra segment", &Req::get("/login/extra")).await;
    same(st, "trailing slash", &Req::get("/login/")).await;
    // The app page is mounted without an `app` too: a 404 with its `Allow`.
    let (b, _) = same(st, "GET /app without app", &Req::get("/app")).await;
    assert_eq!((b.status, b.header("allow")), (404, Some("GET, HEAD")));
    same(
        st,
        "GET /app/deep/link without app",
        &Req::get("/app/deep/link"),
    )
    .await;
    // (CherryPy wants a Content-Length on PUT, else 411: send a body.)
    let mut put = Req::post_json("/", &json!({}));
    put.method = reqwest::Method::PUT;
    same(st, "PUT /", &put).await;
    let (b, _) = same(st, "HEAD /", &{
        let mut r = Req::get("/");
        r.method = reqwest::Method::HEAD;
        r
    })
    .await;
    assert!(b.body.is_empty());
    same(
        st,
        "Origin is reflected",
        &Req::get("/").header("Origin", "https://ui.example"),
    )
    .await;
}

#[tokio::test]
async fn login_variants() {
    let st = stack();
    let creds = st.creds();
    let (b, _) = same(st, "login JSON", &Req::post_json("/login", &creds)).await;
    assert_eq!(b.json()["return"][0]["user"], "saltdev");
    let login = |body: serde_json::Value| Req::post_json("/login", &body);
    let cases: Vec<(&str, Req)> = vec![
        ("GET /login", Req::get("/login")),
        (
            "form",
            Req::post(
                "/login",
                "application/x-www-form-urlencoded",
                "username=saltdev&password=saltdev&eauth=auto",
            ),
        ),
        (
            "YAML",
            Req::post(
                "/login",
                "application/x-yaml",
                "username: saltdev\npassword: saltdev\neauth: auto\n",
            ),
        ),
        (
            "text/plain JSON (SaltGUI)",
            Req::post(
                "/login",
                "text/plain;charset=UTF-8",
                r#"{"username": "saltdev", "password": "saltdev", "eauth": "auto"}"#,
            ),
        ),
        ("list body", login(json!([creds]))),
        (
            "YAML output",
            login(creds.clone()).header("Accept", "application/x-yaml"),
        ),
        (
            "limited user perms",
            login(json!({"username": "limited", "password": "x", "eauth": "auto"})),
        ),
        (
            "wrong password",
            login(json!({"username": "fileuser", "password": "wrong", "eauth": "file"})),
        ),
        (
            "right password, file eauth",
            login(json!({"username": "fileuser", "password": "filepass", "eauth": "file"})),
        ),
        (
            "unknown eauth",
            login(json!({"username": "saltdev", "password": "x", "eauth": "nope"})),
        ),
        (
            "missing eauth",
            login(json!({"username": "saltdev", "password": "x"})),
        ),
        (
            "missing password",
            login(json!({"username": "saltdev", "eauth": "auto"})),
        ),
        ("empty body", Req::post("/login", "application/json", "")),
        (
            "broken JSON",
            Req::post("/login", "application/json", "{nope"),
        ),
        (
            "unsupported content type",
            Req::post("/login", "application/xml", "<a/>"),
        ),
    ];
    for (what, req) in cases {
        same(st, what, &req).await;
    }
}

#[tokio::test]
async fn logout_revokes_the_session() {
    let st = stack();
    let s = sessions(st).await;
    let ping = Req::post_json(
        "/",
        &json!({"client": "local", "tgt": "m1", "fun": "test.ping"}),
    );
    same_session(st, &s, "before logout", &ping).await;
    let out = Req::post_json("/logout", &json!({}));
    same_session(st, &s, "logout", &out).await;
    same_session(st, &s, "after logout", &ping).await;
    same(st, "logout without session", &out).await;
    // Intended difference (D2): the reference answers GET /logout with a 500, Brine with 405.
    let (b, c) = both(st, &Req::get("/logout")).await;
    assert_eq!((b.status, c.status), (405, 500));
}

fn six_clients() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "local",
            json!({"client": "local", "tgt": "*", "fun": "test.arg", "arg": ["a", "k=v"], "kwarg": {"x": 1}}),
        ),
        (
            "local full_return",
            json!({"client": "local", "tgt": "*", "fun": "test.ping", "full_return": true}),
        ),
        (
            "local_async",
            json!({"client": "local_async", "tgt": "*", "fun": "test.ping"}),
        ),
        (
            "runner",
            json!({"client": "runner", "fun": "test.arg", "arg": ["a", "k=1"], "kwarg": {"z": [1, 2]}}),
        ),
        (
            "runner full_return",
            json!({"client": "runner", "fun": "test.arg", "full_return": true}),
        ),
        (
            "runner_async",
            json!({"client": "runner_async", "fun": "test.arg"}),
        ),
        ("wheel", json!({"client": "wheel", "fun": "key.list_all"})),
        (
            "wheel match",
            json!({"client": "wheel", "fun": "key.finger", "match": "m1"}),
        ),
        (
            "wheel_async",
            json!({"client": "wheel_async", "fun": "key.list_all"}),
        ),
        (
            "local no match",
            json!({"client": "local", "tgt": "nosuch*", "fun": "test.ping"}),
        ),
        (
            "local_async no match",
            json!({"client": "local_async", "tgt": "nosuch*", "fun": "test.ping"}),
        ),
        (
            "local list target",
            json!({"client": "local", "tgt": ["m1", "m2"], "tgt_type": "list", "fun": "test.echo", "arg": ["hi"]}),
        ),
        (
            "local minion error text",
            json!({"client": "local", "tgt": "m1", "fun": "nosuch.function"}),
        ),
    ]
}

#[tokio::test]
async fn clients_through_root_with_session_token() {
    let st = stack();
    let s = sessions(st).await;
    for (what, chunk) in six_clients() {
        let req = Req::post_json("/", &chunk);
        same_session(st, &s, what, &req).await;
    }
}

#[tokio::test]
async fn clients_through_run_with_token_and_with_eauth() {
    let st = stack();
    let s = sessions(st).await;
    for (what, chunk) in six_clients() {
        let mut b = chunk.clone();
        b["token"] = json!(s.brine_salt);
        let mut c = chunk.clone();
        c["token"] = json!(s.cherry_salt);
        same2(
            st,
            what,
            &Req::post_json("/run", &b),
            &Req::post_json("/run", &c),
        )
        .await;
        let mut e = chunk.clone();
        for (k, v) in st.creds().as_object().cloned().unwrap_or_default() {
            e[k] = v;
        }
        same(st, what, &Req::post_json("/run", &e)).await;
    }
}

#[tokio::test]
async fn token_by_header_cookie_and_chunk() {
    let st = stack();
    let s = sessions(st).await;
    let chunk = json!({"client": "local", "tgt": "m1", "fun": "test.ping"});
    let req = Req::post_json("/", &chunk);
    same_session(st, &s, "header", &req).await;
    same2(
        st,
        "cookie",
        &req.clone()
            .header("Cookie", &format!("session_id={}", s.brine)),
        &req.clone()
            .header("Cookie", &format!("session_id={}", s.cherry)),
    )
    .await;
    // A chunk token on `/` is overwritten by the session's: no session is 401.
    let mut b = chunk.clone();
    b["token"] = json!(s.brine_salt);
    let mut c = chunk.clone();
    c["token"] = json!(s.cherry_salt);
    same2(
        st,
        "chunk token on / without session",
        &Req::post_json("/", &b),
        &Req::post_json("/", &c),
    )
    .await;
    same2(
        st,
        "chunk token on /run",
        &Req::post_json("/run", &b),
        &Req::post_json("/run", &c),
    )
    .await;
    same(st, "no token", &req).await;
    same(st, "bad token", &with_token(req.clone(), "deadbeef")).await;
    same(st, "non-hex token", &with_token(req.clone(), "not-a-token")).await;
    let mut nonhex = chunk.clone();
    nonhex["token"] = json!("zzz");
    same(
        st,
        "non-hex chunk token on /run",
        &Req::post_json("/run", &nonhex),
    )
    .await;
    let mut unknown = chunk.clone();
    unknown["token"] = json!("deadbeef");
    same(
        st,
        "unknown chunk token on /run",
        &Req::post_json("/run", &unknown),
    )
    .await;
    same(
        st,
        "no credentials on /run",
        &Req::post_json("/run", &chunk),
    )
    .await;
}

#[tokio::test]
async fn lowstate_shapes_and_input_formats() {
    let st = stack();
    let s = sessions(st).await;
    let two = json!([
        {"client": "local", "tgt": "m1", "fun": "test.ping"},
        {"client": "runner", "fun": "test.arg", "arg": ["x"]}
    ]);
    let cases: Vec<(&str, Req)> = vec![
        ("two chunks", Req::post_json("/", &two)),
        ("empty list", Req::post_json("/", &json!([]))),
        (
            "form",
            Req::post(
                "/",
                "application/x-www-form-urlencoded",
                "client=local&tgt=m1&fun=test.arg&arg=2&arg=true&arg=%7Bk%3A+v%7D&arg=a+b&arg%5B%5D=x",
            ),
        ),
        (
            "YAML",
            Req::post("/", "application/x-yaml", "- client: local\n  tgt: m1\n  fun: test.arg\n  arg: [yes, '1', 0644]\n"),
        ),
        (
            "text/plain JSON",
            Req::post("/", "text/plain;charset=UTF-8", r#"{"client": "local", "tgt": "m2", "fun": "test.ping"}"#),
        ),
        ("scalar arg wrapped", Req::post_json("/", &json!({"client": "local", "tgt": "m1", "fun": "test.echo", "arg": "hello"}))),
        ("YAML output", Req::post_json("/", &json!({"client": "local", "tgt": "m1", "fun": "test.ping"})).header("Accept", "application/x-yaml")),
        ("unacceptable Accept", Req::post_json("/", &json!({"client": "runner", "fun": "test.arg"})).header("Accept", "text/csv")),
        ("malformed JSON", Req::post("/", "application/json", "{\"client\": ")),
        ("empty body", Req::post("/", "application/json", "")),
        ("empty object", Req::post_json("/", &json!({}))),
        ("scalar body", Req::post_json("/", &json!("x"))),
        ("text/plain not JSON", Req::post("/", "text/plain", "hello")),
        ("unsupported content type", Req::post("/", "application/xml", "<x/>")),
        ("non-object chunk", Req::post_json("/", &json!([1]))),
        ("invalid client", Req::post_json("/", &json!({"client": "bogus", "fun": "test.ping"}))),
        ("missing client", Req::post_json("/", &json!({"fun": "test.ping"}))),
        ("disabled client", Req::post_json("/", &json!({"client": "ssh", "tgt": "*", "fun": "test.ping"}))),
        ("local without tgt", Req::post_json("/", &json!({"client": "local", "fun": "test.ping"}))),
        ("runner without fun", Req::post_json("/", &json!({"client": "runner"}))),
        ("wheel without fun", Req::post_json("/", &json!({"client": "wheel"}))),
        ("raw_shell refused", Req::post_json("/", &json!({"client": "local", "tgt": "m1", "fun": "test.ping", "raw_shell": true}))),
        ("unknown runner", Req::post_json("/", &json!({"client": "runner", "fun": "nosuch.fun"}))),
    ];
    for (what, req) in cases {
        same_session(st, &s, what, &req).await;
    }
}

#[tokio::test]
async fn acl_refusals_come_from_the_master() {
    let st = stack();
    let limited = json!({"username": "limited", "password": "x", "eauth": "auto"});
    let tb = login(&st.brine, &limited).await;
    let tc = login(&st.cherry, &limited).await;
    let cases = [
        (
            "allowed",
            json!({"client": "local", "tgt": "m1", "fun": "test.ping"}),
        ),
        (
            "outside ACL",
            json!({"client": "local", "tgt": "*", "fun": "test.ping"}),
        ),
        (
            "no runner rights",
            json!({"client": "runner", "fun": "test.arg"}),
        ),
        (
            "no wheel rights",
            json!({"client": "wheel", "fun": "key.list_all"}),
        ),
    ];
    for (what, chunk) in cases {
        let req = Req::post_json("/", &chunk);
        same2(
            st,
            what,
            &with_token(req.clone(), &tb),
            &with_token(req, &tc),
        )
        .await;
    }
    same(
        st,
        "/token without runner rights",
        &Req::post_json("/token", &limited),
    )
    .await;
    same(
        st,
        "/token missing fields",
        &Req::post_json("/token", &json!({"username": "x"})),
    )
    .await;
    same(
        st,
        "/token empty body",
        &Req::post("/token", "application/json", ""),
    )
    .await;
}

/// `/stats` has rest_cherrypy's namespaces with every field and JSON type (salt-netapi-client's
/// `Stats` model reads them), here with `collect_stats` off; `options` checks it on.
#[tokio::test]
async fn stats_has_the_reference_keys_and_types() {
    let st = stack();
    let s = sessions(st).await;
    let req = Req::get("/stats");
    let b = send(&st.brine, &with_token(req.clone(), &s.brine)).await;
    let c = send(&st.cherry, &with_token(req, &s.cherry)).await;
    assert_eq!((b.status, c.status), (200, 200), "{}", b.text());
    assert_stats_shape(&b.json(), &c.json());
    // Brine's own figures stay under their key.
    assert!(b.json()["Brine"]["Total Requests"].is_u64(), "{}", b.text());
}

/// Numbers beyond 64 bits reach the master as the reference sends them (a jid-like integer
/// and one msgpack cannot hold become strings, floats stay floats), from JSON, YAML and form
/// bodies alike.
#[tokio::test]
async fn integers_beyond_64_bits() {
    let st = stack();
    let s = sessions(st).await;
    let bodies = [
        (
            "application/json",
            r#"{"client": "local", "tgt": "m1", "fun": "test.arg", "arg": [20261206195204221114, 1.5, 12345678901234567890123, 18446744073709551615, -9223372036854775809]}"#,
        ),
        (
            "application/x-yaml",
            "{client: local, tgt: m1, fun: test.arg, arg: [20261206195204221114, 1.5, 12345678901234567890123]}",
        ),
        (
            "application/x-www-form-urlencoded",
            "client=local&tgt=m1&fun=test.arg&arg=20261206195204221114&arg=1.5&arg=12345678901234567890123",
        ),
    ];
    for (ct, body) in bodies {
        let req = Req::post("/", ct, body);
        let (b, _) = same_session(st, &s, ct, &req).await;
        let args = &b.json()["return"][0]["m1"]["args"];
        assert_eq!(args[0], "20261206195204221114", "{ct}: {}", b.text());
        assert_eq!(args[1], 1.5, "{ct}");
        assert_eq!(args[2], "12345678901234567890123", "{ct}");
    }
}

/// A misspelt runner function is answered as the reference answers it (500), at once: Brine
/// checks the name against the master's runner list (`doc.runner`, fetched with the caller's
/// credentials) instead of waiting for a runner that never starts.
#[tokio::test]
async fn a_misspelt_runner_function_answers_at_once() {
    let st = stack();
    let s = sessions(st).await;
    for client in ["runner", "runner_async", "runner"] {
        let req = Req::post_json("/", &json!({"client": client, "fun": "nope.nope"}));
        let started = std::time::Instant::now();
        let (b, _) = same_session(st, &s, client, &req).await;
        let took = started.elapsed();
        assert_eq!(b.status, 500, "{}", b.text());
        // The first call may wait for the list itself (one runner job on the master);
        // later ones know it.
        assert!(
            took < std::time::Duration::from_secs(5),
            "{client}: {took:?} (the reference answers at once)"
        );
    }
    let req = Req::post_json("/", &json!({"client": "runner", "fun": "nope.again"}));
    let started = std::time::Instant::now();
    let b = send(&st.brine, &with_token(req, &s.brine)).await;
    assert_eq!(b.status, 500, "{}", b.text());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        st.brine_log().contains("not in its doc.runner list"),
        "the log says why"
    );
    // Functions that exist still run.
    let ok = Req::post_json(
        "/",
        &json!({"client": "runner", "fun": "test.arg", "arg": ["x"]}),
    );
    let b = send(&st.brine, &with_token(ok, &s.brine)).await;
    assert_eq!(b.json()["return"][0]["args"], json!(["x"]), "{}", b.text());
}
