//! `rest_cherrypy` options, Brine and the reference on one master with the same block: TLS with
//! a self-signed pair made here, `root_prefix`, `app`/`app_path`, `static`/`static_path`, the
//! HTML override, `collect_stats`; and the options where Brine deliberately differs
//! (`max_request_body_size` enforced with 413, `cors_origin` honoured, CORS preflight 200),
//! plus `log_access_file`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // for its helpers; see clippy.toml

pub mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use serde_json::json;

struct Fixture {
    dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("brine-options-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("static/js")).unwrap();
        let write = |p: &str, t: &str| {
            std::fs::write(dir.join(p), t).unwrap_or_else(|e| panic!("{p}: {e}"))
        };
        write("index.html", "<html><body>brine test app</body></html>\n");
        write("static/hello.txt", "hello from static\n");
        write("static/js/app.js", "console.log('app');\n");
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("rcgen");
        write("tls.crt", &cert.cert.pem());
        write("tls.key", &cert.signing_key.serialize_pem());
        let _ = TRUSTED_PEM.set(cert.cert.pem().into_bytes());
        Fixture { dir }
    })
}

fn st() -> &'static Stack {
    let f = fixture();
    let d = f.dir.display();
    stack_with(StackOpts {
        rest_extra: format!(
            "{{disable_ssl: false, ssl_crt: '{d}/tls.crt', ssl_key: '{d}/tls.key', root_prefix: /api, \
              app: '{d}/index.html', app_path: /ui, static: '{d}/static', static_path: /assets, \
              max_request_body_size: 2000, collect_stats: true, \
              cors_origin: 'https://allowed.example', log_access_file: '{d}/access.log', \
              ssl_chain: '{d}/tls.crt', authorized_ips: ['127.0.0.1'], \
              api_acl: {{users: {{saltdev: ['*'], limited: ['127.0.0.2']}}}}}}"
        ),
        ..StackOpts::default()
    })
}

#[tokio::test]
async fn tls_root_prefix_app_and_static_match_the_reference() {
    let st = st();
    assert!(st.brine.starts_with("https://"));
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    for (what, req) in [
        ("welcome over TLS under root_prefix", Req::get("/api/")),
        ("outside root_prefix", Req::get("/")),
        ("app page", Req::get("/api/ui").header("Accept", "*/*")),
        (
            "app deep link",
            Req::get("/api/ui/minions/m1").header("Accept", "*/*"),
        ),
        (
            "static file",
            Req::get("/api/assets/hello.txt").header("Accept", "*/*"),
        ),
        (
            "static nested",
            Req::get("/api/assets/js/app.js").header("Accept", "*/*"),
        ),
        (
            "static missing",
            Req::get("/api/assets/missing.txt").header("Accept", "*/*"),
        ),
        (
            "HTML override on an API URL",
            Req::get("/api/minions").header("Accept", html),
        ),
        (
            // (An empty Accept counts as none; HTTP clients add `*/*` when there is none.)
            "HTML override without Accept",
            Req::post_json("/api/login", &st.creds()).header("Accept", ""),
        ),
        (
            "exact */* is not overridden",
            Req::get("/api/").header("Accept", "*/*"),
        ),
    ] {
        let (b, c) = both(st, &req).await;
        assert_eq!(b.status, c.status, "{what}: {} vs {}", b.text(), c.text());
        if b.status == 200 && !b.header("content-type").unwrap_or("").contains("json") {
            assert_eq!(b.text(), c.text(), "{what}: same file");
        } else {
            assert_eq!(shape(&b).body, shape(&c).body, "{what}");
        }
    }
    // No way out of the static directory.
    for path in [
        "/api/assets/..%2Findex.html",
        "/api/assets/%2e%2e/%2e%2e/tls.key",
        "/api/assets/..%2F..%2Ftls.key",
    ] {
        let b = send(&st.brine, &Req::get(path).header("Accept", "*/*")).await;
        assert!(matches!(b.status, 403 | 404), "{path}: {}", b.status);
        let text = b.text();
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("brine test app"),
            "{path}"
        );
    }
    // The override really served the app and logged nobody in.
    let b = send(
        &st.brine,
        &Req::post_json("/api/login", &st.creds()).header("Accept", ""),
    )
    .await;
    assert!(b.text().contains("brine test app") && b.header("x-auth-token").is_none());
    // Plain HTTP on a TLS port is refused.
    let plain = st.brine.replace("https://", "http://");
    let r = reqwest::Client::new()
        .get(format!("{plain}/api/"))
        .send()
        .await;
    assert!(r.is_err() || r.is_ok_and(|r| !r.status().is_success()));
    // Login and a command work end to end over TLS.
    let token = login(&format!("{}/api", st.brine), &st.creds()).await;
    let r = send(
        &st.brine,
        &Req::post_json(
            "/api/",
            &json!({"client": "local", "tgt": "m1", "fun": "test.ping"}),
        )
        .header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.json()["return"][0], json!({"m1": true}));
    let r = send(
        &st.brine,
        &Req::get("/api/stats").header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.json()["Brine"]["Enabled"], true, "collect_stats");
    // The reference's namespaces, every field with its JSON type, with requests counted.
    let cherry_token = login(&format!("{}/api", st.cherry), &st.creds()).await;
    let c = send(
        &st.cherry,
        &Req::get("/api/stats").header("X-Auth-Token", &cherry_token),
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.text());
    let b = r.json();
    assert_stats_shape(&b, &c.json());
    let apps = &b["CherryPy Applications"];
    assert_eq!(apps["Enabled"], true);
    assert!(apps["Total Requests"].as_u64() >= Some(3), "{apps}");
    assert!(apps["Total Bytes Read"].as_u64() > Some(0), "{apps}");
    assert!(apps["Total Bytes Written"].as_u64() > Some(0), "{apps}");
    // This very request, still being handled, and a finished one with its status and size.
    let line = |r: &serde_json::Value| r["Request-Line"].as_str().unwrap_or("").to_owned();
    let records: Vec<&serde_json::Value> = apps["Requests"]
        .as_object()
        .map(|m| m.values().collect())
        .unwrap_or_default();
    assert!(
        records
            .iter()
            .any(|r| line(r).starts_with("GET /api/stats HTTP/") && r["End Time"].is_null()),
        "{apps}"
    );
    assert!(
        records
            .iter()
            .any(|r| line(r).starts_with("POST /api/ HTTP/")
                && r["Response Status"] == "200 OK"
                && r["Bytes Read"].as_u64() > Some(0)
                && r["Bytes Written"].as_u64() > Some(0)),
        "{apps}"
    );
}

#[tokio::test]
async fn intended_differences_body_limit_and_cors() {
    let st = st();
    // max_request_body_size: the reference ignores it; Brine answers 413.
    let mut big = st.creds();
    big["pad"] = json!("x".repeat(3000));
    let (b, c) = both(st, &Req::post_json("/api/login", &big)).await;
    assert_eq!((b.status, c.status), (413, 200), "{}", b.text());
    // CORS preflight from the allowed origin: 200 (the reference: 500) with the CORS headers.
    let preflight = |origin: &str| {
        let mut r = Req::get("/api/login")
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "X-Auth-Token");
        r.method = reqwest::Method::OPTIONS;
        r
    };
    let (b, c) = both(st, &preflight("https://allowed.example")).await;
    assert_eq!((b.status, c.status), (200, 500));
    for (k, v) in [
        ("access-control-allow-origin", "https://allowed.example"),
        ("access-control-allow-methods", "GET, POST"),
        (
            "access-control-allow-headers",
            "Content-Type, X-Auth-Token, X-Requested-With",
        ),
        ("access-control-allow-credentials", "true"),
    ] {
        assert_eq!(b.header(k), Some(v), "{k}");
        assert_eq!(c.header(k), Some(v), "{k} (reference)");
    }
    // From a refused origin: no CORS headers from Brine (the reference reflects any origin).
    let (b, c) = both(st, &preflight("https://evil.example")).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.header("access-control-allow-origin"), None);
    assert_eq!(
        c.header("access-control-allow-origin"),
        Some("https://evil.example")
    );
    // A simple request from a refused origin still works, without CORS headers.
    let r = send(
        &st.brine,
        &Req::get("/api/").header("Origin", "https://evil.example"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn access_log_has_no_tokens_or_query_strings() {
    let st = st();
    let token = login(&format!("{}/api", st.brine), &st.creds()).await;
    let probe = "/api/events?token=secret-in-query";
    let r = send(&st.brine, &Req::get(probe).header("X-Auth-Token", &token)).await;
    assert_eq!(r.status, 400);
    let _ = send(&st.brine, &Req::get("/api/brine-access-probe")).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let log = std::fs::read_to_string(fixture().dir.join("access.log")).unwrap_or_default();
    assert!(
        log.contains("\"GET /api/brine-access-probe HTTP/1.1\" 404"),
        "{log}"
    );
    assert!(log.contains("\"GET /api/events HTTP/1.1\" 400"), "{log}");
    assert!(
        !log.contains("secret-in-query") && !log.contains(&token),
        "a secret in the access log"
    );
    assert!(
        !st.brine_log().contains(&token),
        "the token in Brine's own log"
    );
}

#[tokio::test]
async fn api_acl_and_authorized_ips_match_the_reference() {
    let st = st();
    // `limited` may only log in from 127.0.0.2: refused from here, by both.
    let limited = json!({"username": "limited", "password": "x", "eauth": "auto"});
    let (b, c) = both(st, &Req::post_json("/api/login", &limited)).await;
    assert_eq!((b.status, c.status), (401, 401));
    assert_eq!(shape(&b).body, shape(&c).body);
    // A client whose address is not in authorized_ips gets 403 `Bad IP` from both.
    let pem = TRUSTED_PEM.get().cloned().unwrap_or_default();
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let token_b = login(&format!("{}/api", st.brine), &st.creds()).await;
    let token_c = login(&format!("{}/api", st.cherry), &st.creds()).await;
    for (base, token) in [(&st.brine, &token_b), (&st.cherry, &token_c)] {
        let r = other
            .post(format!("{base}/api/"))
            .header("X-Auth-Token", token.as_str())
            .header("Accept", "application/json")
            .json(&json!({"client": "local", "tgt": "m1", "fun": "test.ping"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{base}");
        let text = r.text().await.unwrap_or_default();
        assert_eq!(html_parts(&text)["message"], "Bad IP", "{base}");
    }
}

/// `/openapi.json` describes this deployment (root_prefix, app, static paths) and is a valid
/// OpenAPI 3.0 document by the reference validator (`openapi-spec-validator` in the venv).
#[tokio::test]
async fn openapi_document_is_valid_and_follows_the_configuration() {
    let st = st();
    let r = send(&st.brine, &Req::get("/api/openapi.json")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.0.3");
    assert_eq!(doc["servers"][0]["url"], "/api");
    for path in [
        "/",
        "/login",
        "/logout",
        "/token",
        "/run",
        "/minions",
        "/minions/{mid}",
        "/jobs",
        "/jobs/{jid}",
        "/jobs/{jid}/status",
        "/jobs/{jid}/events",
        "/keys",
        "/keys/{mid}",
        "/stats",
        "/metrics",
        "/events",
        "/hook",
        "/hook/{tag}",
        "/ws",
        "/ws/{token}",
        "/all_events/{token}",
        "/formatted_events/{token}",
        "/ui",
        "/assets/{file}",
        "/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
    // Brine's own query parameters, on the operations that take them.
    let query = |path: &str| -> Vec<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (path, names) in [
        ("/jobs", &["limit", "before", "fun", "user", "tgt"][..]),
        ("/jobs/{jid}", &["wait"][..]),
        ("/events", &["tag"][..]),
        ("/ws", &["tag"][..]),
        ("/all_events/{token}", &["tag"][..]),
    ] {
        let got = query(path);
        for n in names {
            assert!(
                got.iter().any(|g| g == n),
                "{path}: no `{n}` parameter in {got:?}"
            );
        }
    }
    assert!(doc["paths"]["/"]["post"]["security"].is_array());
    assert!(doc["paths"]["/login"]["post"].get("security").is_none());
    // The reference validator.
    let file = st.root.join("openapi.json");
    std::fs::write(&file, r.body.clone()).unwrap();
    let out = std::process::Command::new(st.venv.join("bin/python"))
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; \
             validate(json.load(open(sys.argv[1]))); print('valid')",
        ])
        .arg(&file)
        .output()
        .expect("python");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("valid"),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
