//! Comparing Brine with the reference: the same request to both, answers reduced to what is
//! compared (status, key headers, body with jids, tokens, timestamps and cookies normalized),
//! and the shape of `/stats` answers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::{send, send_reference, Req, Resp, Sessions, Stack};

fn is_hex_token(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_jid(s: &str) -> bool {
    s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Replaces volatile values: jids, tokens, timestamps, `_stamp`s (also inside strings such
/// as `salt/job/<jid>/ret` tags and the "lookup_jid <jid>" hint).
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(normalize_text(s)),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let k2 = normalize_text(k);
                let v2 = match k.as_str() {
                    "_stamp" => json!("<stamp>"),
                    "start" | "expire" if v.is_number() => json!("<time>"),
                    "token" if v.as_str().is_some_and(is_hex_token) => json!("<token>"),
                    "StartTime" => json!("<starttime>"),
                    _ => normalize(v),
                };
                out.insert(k2, v2);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Normalizes jids and tokens inside a string.
pub fn normalize_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if is_jid(word) {
            out.push_str("<jid>");
        } else if is_hex_token(word) {
            out.push_str("<token>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// What two responses are compared on.
#[derive(Debug, PartialEq)]
pub struct Shape {
    /// Status.
    pub status: u16,
    /// Key headers, normalized.
    pub headers: Vec<(String, String)>,
    /// The body: normalized JSON, or the error page's title and message.
    pub body: Value,
}

/// The `<title>` and `<p>` of an HTML error page.
pub fn html_parts(text: &str) -> Value {
    let between = |a: &str, b: &str| -> String {
        text.split_once(a)
            .and_then(|(_, rest)| rest.split_once(b))
            .map(|(x, _)| x.to_owned())
            .unwrap_or_default()
    };
    json!({"title": between("<title>", "</title>"), "message": between("<p>", "</p>")})
}

/// Headers that clients rely on, compared between the servers.
pub const KEY_HEADERS: [&str; 9] = [
    "content-type",
    "allow",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "access-control-allow-credentials",
    "cache-control",
    "www-authenticate",
    "x-auth-token",
    "set-cookie",
];

/// The comparable shape of a response.
pub fn shape(r: &Resp) -> Shape {
    let mut headers = Vec::new();
    for name in KEY_HEADERS {
        if let Some(v) = r.header(name) {
            let v = match name {
                "x-auth-token" => "<token>".to_owned(),
                "set-cookie" => normalize_cookie(v),
                "content-type" => v.replace(' ', "").to_ascii_lowercase(),
                _ => v.to_owned(),
            };
            headers.push((name.to_owned(), v));
        }
    }
    let ct = r.header("content-type").unwrap_or("");
    let body = if ct.starts_with("text/html") {
        html_parts(&r.text())
    } else if ct.starts_with("application/x-yaml") {
        let parsed = salt_wire::yaml::load(&r.text(), salt_wire::yaml::Limits::default());
        normalize(&parsed.ok().flatten().unwrap_or(Value::Null))
    } else {
        normalize(&r.json())
    };
    Shape {
        status: r.status,
        headers,
        body,
    }
}

/// `session_id=<id>; expires=<date>; ...` with the id and the date replaced.
pub fn normalize_cookie(v: &str) -> String {
    v.split(';')
        .map(|part| {
            let p = part.trim();
            if let Some((k, _)) = p.split_once('=') {
                match k {
                    "session_id" => "session_id=<id>".to_owned(),
                    "expires" => "expires=<date>".to_owned(),
                    _ => p.to_owned(),
                }
            } else {
                p.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Sends `req` to both servers and returns (brine, reference).
pub async fn both(st: &Stack, req: &Req) -> (Resp, Resp) {
    let b = send(&st.brine, req).await;
    let c = send_reference(st, req).await;
    (b, c)
}

/// Asserts that both servers answer `req` the same way (after normalization).
pub async fn same(st: &Stack, what: &str, req: &Req) -> (Resp, Resp) {
    same2(st, what, req, req).await
}

/// Asserts that both servers answer `req` the same way when it carries each server's own
/// session token.
pub async fn same_session(st: &Stack, s: &Sessions, what: &str, req: &Req) -> (Resp, Resp) {
    same2(
        st,
        what,
        &req.clone().header("X-Auth-Token", &s.brine),
        &req.clone().header("X-Auth-Token", &s.cherry),
    )
    .await
}

/// Asserts that Brine answers `req_b` as rest_cherrypy answers `req_c` (the same request
/// carrying each server's own token).
pub async fn same2(st: &Stack, what: &str, req_b: &Req, req_c: &Req) -> (Resp, Resp) {
    let b = send(&st.brine, req_b).await;
    let c = send_reference(st, req_c).await;
    let (sb, sc) = (shape(&b), shape(&c));
    assert_eq!(
        sb,
        sc,
        "{what}: Brine (left) and rest_cherrypy (right) differ\nbrine body: {}\ncherry body: {}",
        b.text(),
        c.text()
    );
    (b, c)
}

/// The JSON type of a value as a typed client reads it (integers and floats apart: Gson and
/// Go refuse `1.5` for an `int` field).
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key path of a `/stats` answer with the JSON types found there. The keys that name
/// things rather than fields (the server's id, request and thread names) read `*`, so two
/// answers compare by their fields.
pub fn stats_type_paths(v: &Value) -> BTreeMap<String, BTreeSet<&'static str>> {
    fn walk(
        v: &Value,
        path: &str,
        named: bool,
        out: &mut BTreeMap<String, BTreeSet<&'static str>>,
    ) {
        out.entry(path.to_owned()).or_default().insert(json_type(v));
        if let Value::Object(m) = v {
            for (k, child) in m {
                let key = if named {
                    "*"
                } else if path.is_empty() && k.starts_with("Cheroot HTTPServer ") {
                    "Cheroot HTTPServer *"
                } else {
                    k.as_str()
                };
                let names_below = !named && (k == "Requests" || k == "Worker Threads");
                walk(child, &format!("{path}/{key}"), names_below, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, "", false, &mut out);
    out
}

/// Checks that every key path of the reference's `/stats` answer is in Brine's with the
/// same JSON type (for the per-request and per-thread records, a type the reference shows
/// there; a record still being handled has `null`s where a finished one has numbers).
pub fn assert_stats_shape(brine: &Value, reference: &Value) {
    let b = stats_type_paths(brine);
    let c = stats_type_paths(reference);
    for (path, types) in &c {
        let Some(ours) = b.get(path) else {
            panic!("/stats: Brine lacks {path} ({types:?})\nBrine: {brine}");
        };
        let in_records = path.contains("/*/");
        let same = if in_records {
            !ours.is_disjoint(types)
        } else {
            ours == types
        };
        assert!(
            same,
            "/stats {path}: Brine has {ours:?}, the reference {types:?}"
        );
    }
}
