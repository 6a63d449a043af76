//! Hostile and malformed input, unauthenticated where it can be: each gets a 4xx at once, the
//! process keeps its memory bounded, and service continues (Brine only: rest_cherrypy is
//! known to die on some of these, e.g. the YAML alias bomb).

#![allow(clippy::unwrap_used, clippy::expect_used)] // for its helpers; see clippy.toml

pub mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn st() -> &'static Stack {
    stack_with(StackOpts {
        reference: false,
        minions: 1,
        rest_extra: "{max_request_body_size: 1000000}".into(),
        ..StackOpts::default()
    })
}

/// `[[[...]]]` nested `n` deep.
fn nested(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// The classic "billion laughs" in YAML: ~1 KB that expands to 10^9 nodes.
fn yaml_bomb() -> String {
    let mut s = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        s.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    s.push_str("username: x\npassword: y\neauth: auto\n");
    s
}

#[tokio::test]
async fn malformed_bodies_get_a_4xx_and_memory_stays_bounded() {
    let st = st();
    let pid = st.brine_pid();
    let token = login(&st.brine, &st.creds()).await;
    let base_rss = rss_kib(pid);
    let cases: Vec<(&str, Req, u16, &str)> = vec![
        (
            "body over max_request_body_size",
            Req::post("/login", "application/json", vec![b' '; 2_000_000]),
            413,
            "larger than the limit",
        ),
        (
            "nesting deeper than 64",
            Req::post("/login", "application/json", nested(65)),
            400,
            "nest",
        ),
        (
            "YAML alias bomb",
            Req::post("/login", "application/x-yaml", yaml_bomb()),
            400,
            "",
        ),
        (
            "invalid UTF-8 in JSON",
            Req::post(
                "/login",
                "application/json",
                b"{\"username\": \"\xff\xfe\"}".to_vec(),
            ),
            400,
            "Invalid JSON document",
        ),
        (
            "invalid UTF-8 in a form",
            Req::post(
                "/login",
                "application/x-www-form-urlencoded",
                b"username=%ff%fe&password=\xff".to_vec(),
            ),
            400,
            "400 Bad Request",
        ),
        (
            "unsupported content type",
            Req::post("/login", "application/octet-stream", b"\x00\x01".to_vec()),
            406,
            "Content type not supported",
        ),
        (
            "10 000-chunk lowstate",
            Req::post_json(
                "/",
                &Value::Array(vec![
                    json!({"client": "local", "tgt": "*", "fun": "test.ping"});
                    10_000
                ]),
            )
            .header("X-Auth-Token", &token),
            400,
            "at most",
        ),
    ];
    for (what, req, status, text) in cases {
        let started = Instant::now();
        let r = send(&st.brine, &req).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert!(r.text().contains(text), "{what}: {}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what} took {:?}",
            started.elapsed()
        );
        let rss = rss_kib(pid);
        assert!(
            rss < base_rss + 64 * 1024,
            "{what}: RSS {rss} KiB (was {base_rss} KiB)"
        );
    }
    // Service continues, same process.
    assert_eq!(st.brine_pid(), pid);
    let r = send(
        &st.brine,
        &Req::post_json(
            "/",
            &json!([{"client": "local", "tgt": "*", "fun": "test.ping"}]),
        )
        .header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["return"][0]["m1"], json!(true), "{}", r.text());
}

#[tokio::test]
async fn huge_headers_are_refused_and_slow_headers_time_out() {
    let st = st();
    let addr = st.brine.trim_start_matches("http://").to_owned();
    // 100 KB of headers: refused by the HTTP layer (431), the server stays up.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let _ = s.write_all(big.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let head = String::from_utf8_lossy(&out);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    // A client that trickles its headers is cut off 30 s after it connected (the header read
    // time), also when it waited before its first byte (the first bytes are peeked to pick
    // the connection's runtime; that wait is part of the 30 s), and also when its request
    // line is an SSE one (served without hyper, http/sse_connection.rs).
    let slow = [
        (Duration::ZERO, "POST /login HTTP/1.1\r\n"),
        (Duration::from_secs(20), "POST /login HTTP/1.1\r\n"),
        (Duration::from_secs(20), "GET /events HTTP/1.1\r\n"),
    ]
    .map(|(wait, line)| {
        let addr = addr.clone();
        std::thread::spawn(move || slow_client(&addr, wait, line))
    });
    for (i, t) in slow.into_iter().enumerate() {
        let closed_after = t
            .join()
            .unwrap_or_else(|_| panic!("slow client {i} failed"));
        eprintln!("slow client {i}: closed {closed_after:?} after connecting");
        assert!(
            closed_after >= Duration::from_secs(25) && closed_after < Duration::from_secs(40),
            "slow client {i} closed after {closed_after:?} (header read time: 30 s from connect)"
        );
    }
    // Still serving.
    let r = send(&st.brine, &Req::get("/")).await;
    assert_eq!(r.status, 200);
}

/// Connects, waits `wait`, sends `line` and then a header line every 0.8 s; how long after
/// connecting the server closed the connection.
fn slow_client(addr: &str, wait: Duration, line: &str) -> Duration {
    let started = Instant::now();
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200))).ok();
    std::thread::sleep(wait);
    let _ = slow.write_all(line.as_bytes());
    let _ = slow.write_all(b"Host: x\r\n");
    loop {
        if slow.write_all(b"X-A: b\r\n").is_err() {
            return started.elapsed();
        }
        let mut buf = [0u8; 512];
        if slow.read(&mut buf).is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "slow client still connected after 60 s"
        );
        std::thread::sleep(Duration::from_millis(800));
    }
}

/// A refusal reaches a client that is still sending its body (Brine reads and discards the
/// rest, as nginx's lingering close does): 401 without a token, with a bad one and on a hook,
/// 413 over `max_request_body_size`, for clients that write the whole body before reading
/// (Python's `http.client`, curl without `Expect`), at 1 to 150 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_reach_clients_still_uploading() {
    let st = st();
    let token = login(&st.brine, &st.creds()).await;
    let bad = "X-Auth-Token: 0123456789abcdef0123456789abcdef01234567";
    let good = format!("X-Auth-Token: {token}");
    let root = format!("{}/", st.brine);
    let hook = format!("{}/hook/upload", st.brine);
    let cases: Vec<(&str, &str, Vec<&str>, u16)> = vec![
        ("POST / without a token", root.as_str(), vec![], 401),
        ("POST / with a bad token", root.as_str(), vec![bad], 401),
        ("POST /hook without a token", hook.as_str(), vec![], 401),
        (
            "POST / over the body limit",
            root.as_str(),
            vec![good.as_str()],
            413,
        ),
    ];
    let pid = st.brine_pid();
    let base_rss = rss_kib(pid);
    for (what, url, headers, want) in &cases {
        for mib in [1, 5, 20, 150] {
            for (client, got) in [
                ("http.client", upload_python(st, url, mib, None, headers)),
                ("curl", upload_curl(st, url, mib, None, headers)),
            ] {
                let (status, body) =
                    got.unwrap_or_else(|e| panic!("{what}, {mib} MiB, {client}: {e}"));
                assert_eq!(status, *want, "{what}, {mib} MiB, {client}: {body}");
                // The error page names the status (rest_cherrypy's HTML error page).
                assert!(
                    body.contains(&want.to_string()),
                    "{what}: the answer's body: {body}"
                );
            }
        }
    }
    // Discarded, not kept: the bodies went through without growing the process.
    let grown = rss_kib(pid).saturating_sub(base_rss);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    // And service goes on.
    let r = send(&st.brine, &Req::get("/").header("X-Auth-Token", &token)).await;
    assert_eq!(r.status, 200);
}
