//! The tests' own HTTP client: a request sendable to either server, the response as
//! received, and logging in, taking a Salt token and firing a webhook with it.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use super::reference::send_retrying_reference;

/// One HTTP request, sendable to both servers.
#[derive(Clone, Debug)]
pub struct Req {
    /// Method.
    pub method: reqwest::Method,
    /// Path (and query).
    pub path: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<Vec<u8>>,
}

impl Req {
    /// A GET.
    pub fn get(path: &str) -> Req {
        Req {
            method: reqwest::Method::GET,
            path: path.into(),
            headers: vec![("Accept".into(), "application/json".into())],
            body: None,
        }
    }

    /// A POST with a JSON body.
    pub fn post_json(path: &str, body: &Value) -> Req {
        Req::post(
            path,
            "application/json",
            serde_json::to_vec(body).unwrap_or_default(),
        )
    }

    /// A POST with a raw body of a given content type.
    pub fn post(path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
        Req {
            method: reqwest::Method::POST,
            path: path.into(),
            headers: vec![
                ("Accept".into(), "application/json".into()),
                ("Content-Type".into(), content_type.into()),
            ],
            body: Some(body.into()),
        }
    }

    /// Replaces (or adds) a header.
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Removes a header.
    pub fn without(mut self, name: &str) -> Req {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }
}

/// A received response.
#[derive(Clone, Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Resp {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A CA certificate (PEM) the test client trusts, for stacks serving TLS. Set it before the
/// first request of the test binary.
pub static TRUSTED_PEM: OnceLock<Vec<u8>> = OnceLock::new();

pub(super) fn client() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        // No idle pool: every #[tokio::test] has its own runtime, and a pooled connection
        // would outlive the runtime that drives it.
        let mut b = reqwest::Client::builder();
        if let Some(pem) = TRUSTED_PEM.get() {
            let cert = reqwest::Certificate::from_pem(pem).unwrap();
            b = b.add_root_certificate(cert);
        }
        b.pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(300))
            .build()
            .expect("client")
    })
}

/// Response headers as (lower-case name, value) pairs.
pub(super) fn header_list(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Sends `req` to the server at `base`.
pub async fn send(base: &str, req: &Req) -> Resp {
    let mut b = client().request(req.method.clone(), format!("{base}{}", req.path));
    for (k, v) in &req.headers {
        b = b.header(k, v);
    }
    if let Some(body) = &req.body {
        b = b.body(body.clone());
    }
    let r = b
        .send()
        .await
        .unwrap_or_else(|e| panic!("{} {base}{}: {e:?}", req.method, req.path));
    let status = r.status().as_u16();
    let headers = header_list(r.headers());
    let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

/// Logs in on a server and returns the token.
pub async fn login(base: &str, creds: &Value) -> String {
    let r =
        send_retrying_reference(base, &Req::post_json("/login", creds), |r| r.status != 500).await;
    assert_eq!(r.status, 200, "login on {base}: {}", r.text());
    r.json()["return"][0]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {}", r.text()))
        .to_owned()
}

/// A raw Salt eauth token from `POST /token`.
pub async fn salt_token(base: &str, creds: &Value) -> String {
    let r = send_retrying_reference(base, &Req::post_json("/token", creds), |r| {
        r.status != 500 && r.json()[0]["token"].is_string()
    })
    .await;
    assert_eq!(r.status, 200, "token on {base}: {}", r.text());
    r.json()[0]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {}", r.text()))
        .to_owned()
}

/// Fires a hook event through a server (JSON body) and checks it was accepted.
pub async fn fire_hook(base: &str, token: &str, path: &str, body: &Value) {
    let r = send(
        base,
        &Req::post_json(&format!("/hook/{path}"), body).header("X-Auth-Token", token),
    )
    .await;
    assert_eq!(r.status, 200, "hook on {base}: {}", r.text());
}

/// Starts `test.ping` on `tgt` with `local_async` and returns its jid.
pub async fn ping_async(base: &str, token: &str, tgt: &str) -> String {
    let r = send(
        base,
        &Req::post_json(
            "/",
            &json!({"client": "local_async", "tgt": tgt, "fun": "test.ping"}),
        )
        .header("X-Auth-Token", token),
    )
    .await;
    let jid = r.json()["return"][0]["jid"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(jid.len(), 20, "local_async on {base}: {}", r.text());
    jid
}
