//! `GET /openapi.json`: an OpenAPI 3.0 description of every route this deployment serves.
//!
//! The document is built from the routing table itself: [`template`] maps every
//! [`Endpoint`] variant to its documented path (an exhaustive `match`, so a new route does not
//! compile until it is documented), the paths follow this deployment's `root_prefix`,
//! `webhook_url`, `enable_sessions`, `app_path`, `static_path` and `favicon`, and a unit test
//! checks that each documented path resolves to its endpoint and documents exactly the methods
//! the router serves there.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::routes::{Endpoint, RouteConfig};
use crate::app::SharedApp;

/// A documented operation.
struct Op {
    method: &'static str,
    summary: &'static str,
    /// Needs a session token (`X-Auth-Token` or the `session_id` cookie).
    auth: bool,
    /// Request body schema (a `#/components/schemas` name).
    body: Option<&'static str>,
    /// Media types of the 2xx answer and its status.
    answer: (&'static str, &'static [&'static str]),
}

const JSON_ETC: &[&str] = &["application/json", "application/x-yaml", "text/yaml"];

/// Every documented path of this deployment with its endpoint (a sample of it, for the
/// routing test) and its operations.
fn paths(cfg: &RouteConfig) -> Vec<(String, Endpoint, Vec<Op>)> {
    let welcome = |summary| Op {
        method: "get",
        summary,
        auth: false,
        body: None,
        answer: ("200", JSON_ETC),
    };
    let lowstate = |summary, auth| Op {
        method: "post",
        summary,
        auth,
        body: Some("Lowstate"),
        answer: ("200", JSON_ETC),
    };
    let get = |summary, auth, answer| Op {
        method: "get",
        summary,
        auth,
        body: None,
        answer,
    };
    let ws = |summary| Op {
        method: "get",
        summary,
        auth: false,
        body: None,
        answer: ("101", &[]),
    };
    let arg = || Some("x".to_owned());
    let mut out = vec![
        (
            Endpoint::Index,
            vec![
                welcome("API information: the clients this API runs"),
                lowstate("Run a lowstate (one or more chunks) with the session's token", true),
            ],
        ),
        (
            Endpoint::Token,
            vec![
                welcome("API information (as /)"),
                Op {
                    method: "post",
                    summary: "Get a Salt token for eauth credentials, without a session",
                    auth: false,
                    body: Some("Credentials"),
                    answer: ("200", JSON_ETC),
                },
            ],
        ),
        (
            Endpoint::Run,
            vec![
                welcome("API information (as /)"),
                lowstate(
                    "Run a lowstate whose chunks carry their own credentials (token or eauth)",
                    false,
                ),
            ],
        ),
        (
            Endpoint::Keys(None),
            vec![
                get("All minion keys by state (wheel key.list_all)", true, ("200", JSON_ETC)),
                Op {
                    method: "post",
                    summary: "Generate and accept a key pair for a minion id; the keys come back as a tar file",
                    auth: false,
                    body: Some("KeyGen"),
                    answer: ("200", &["application/x-tar"]),
                },
            ],
        ),
        (
            Endpoint::Keys(arg()),
            vec![get("One minion's key fingerprints (wheel key.finger)", true, ("200", JSON_ETC))],
        ),
        (
            Endpoint::Stats,
            vec![get("Brine's counters (and CherryPy-compatible fields)", true, ("200", JSON_ETC))],
        ),
        (
            Endpoint::Metrics,
            vec![get("Prometheus metrics", true, ("200", &["text/plain"]))],
        ),
        (
            Endpoint::Events,
            vec![get(
                "The master's event bus as server-sent events (Last-Event-ID resumes)",
                true,
                ("200", &["text/event-stream"]),
            )],
        ),
        (
            Endpoint::Ws(None),
            vec![ws("The event bus over a WebSocket (session cookie or X-Auth-Token)")],
        ),
        (
            Endpoint::Ws(arg()),
            vec![ws("The event bus over a WebSocket, the token in the path")],
        ),
        (
            Endpoint::AllEvents("ab".into()),
            vec![ws("rest_tornado's event WebSocket (bare JSON messages)")],
        ),
        (
            Endpoint::FormattedEvents("ab".into()),
            vec![ws("rest_tornado's formatted event WebSocket (minion and job view)")],
        ),
        (
            Endpoint::Hook(Vec::new()),
            vec![Op {
                method: "post",
                summary: "Fire an event tagged salt/netapi/hook with the request body",
                auth: true,
                body: Some("Any"),
                answer: ("200", JSON_ETC),
            }],
        ),
        (
            Endpoint::Hook(vec!["x".into()]),
            vec![Op {
                method: "post",
                summary: "Fire an event tagged salt/netapi/hook/<tag> (the tag may span segments)",
                auth: true,
                body: Some("Any"),
                answer: ("200", JSON_ETC),
            }],
        ),
        (
            Endpoint::OpenApi,
            vec![get("This document", false, ("200", &["application/json"]))],
        ),
    ];
    if cfg.enable_sessions {
        out.extend([
            (
                Endpoint::Login,
                vec![
                    get("Login help (401 with a WWW-Authenticate hint)", false, ("401", JSON_ETC)),
                    Op {
                        method: "post",
                        summary: "Log in with eauth credentials; the token comes back and as the session_id cookie",
                        auth: false,
                        body: Some("Credentials"),
                        answer: ("200", JSON_ETC),
                    },
                ],
            ),
            (
                Endpoint::Logout,
                vec![Op {
                    method: "post",
                    summary: "End the session and revoke its token (on every Brine of the master)",
                    auth: true,
                    body: None,
                    answer: ("200", JSON_ETC),
                }],
            ),
            (
                Endpoint::Minions(None),
                vec![
                    get("Grains of every minion", true, ("200", JSON_ETC)),
                    Op {
                        method: "post",
                        summary: "Start jobs (each chunk runs as local_async); links to the jobs",
                        auth: true,
                        body: Some("Lowstate"),
                        answer: ("202", JSON_ETC),
                    },
                ],
            ),
            (
                Endpoint::Minions(arg()),
                vec![get("Grains of one minion", true, ("200", JSON_ETC))],
            ),
            (
                Endpoint::Jobs(None),
                vec![
                    get("Recent jobs (runner jobs.list_jobs)", true, ("200", JSON_ETC)),
                    lowstate("Run a lowstate (as POST /)", true),
                ],
            ),
            (
                Endpoint::Jobs(arg()),
                vec![get("One job and its returns (runner jobs.list_job)", true, ("200", JSON_ETC))],
            ),
            (
                Endpoint::JobStatus("x".into()),
                vec![get(
                    "Where a job stands: running, complete (with the minions that never returned) or unknown",
                    true,
                    ("200", JSON_ETC),
                )],
            ),
            (
                Endpoint::JobEvents("x".into()),
                vec![get(
                    "One job's events as server-sent events: what Brine still has, then live ones, \
then brine/job/{jid}/complete with the minions that returned and those missing (Last-Event-ID resumes)",
                    true,
                    ("200", &["text/event-stream"]),
                )],
            ),
        ]);
    }
    out.push((
        Endpoint::App,
        vec![get(
            "The configured web application (app; 404 when none is configured)",
            false,
            ("200", &["text/html"]),
        )],
    ));
    if cfg.static_path.is_some() {
        out.push((
            Endpoint::Static(vec!["x".into()]),
            vec![get(
                "A file of the static directory",
                false,
                ("200", &["*/*"]),
            )],
        ));
    }
    if cfg.favicon {
        out.push((
            Endpoint::Favicon,
            vec![get(
                "The configured favicon",
                false,
                ("200", &["image/x-icon"]),
            )],
        ));
    }
    out.into_iter()
        .map(|(e, ops)| (template(&e, cfg), e, ops))
        .collect()
}

/// The documented path of an endpoint (every variant; `{name}` for a path parameter).
pub fn template(e: &Endpoint, cfg: &RouteConfig) -> String {
    let one = |base: &str, arg: &Option<String>, name: &str| match arg {
        None => format!("/{base}"),
        Some(_) => format!("/{base}/{{{name}}}"),
    };
    match e {
        Endpoint::Index => "/".into(),
        Endpoint::Login => "/login".into(),
        Endpoint::Logout => "/logout".into(),
        Endpoint::Token => "/token".into(),
        Endpoint::Run => "/run".into(),
        Endpoint::Minions(a) => one("minions", a, "mid"),
        Endpoint::Jobs(a) => one("jobs", a, "jid"),
        Endpoint::JobStatus(_) => "/jobs/{jid}/status".into(),
        Endpoint::JobEvents(_) => "/jobs/{jid}/events".into(),
        Endpoint::Keys(a) => one("keys", a, "mid"),
        Endpoint::Stats => "/stats".into(),
        Endpoint::Metrics => "/metrics".into(),
        Endpoint::Events => "/events".into(),
        Endpoint::Hook(segments) if segments.is_empty() => format!("/{}", cfg.webhook),
        Endpoint::Hook(_) => format!("/{}/{{tag}}", cfg.webhook),
        Endpoint::Ws(t) => one("ws", t, "token"),
        Endpoint::AllEvents(_) => "/all_events/{token}".into(),
        Endpoint::FormattedEvents(_) => "/formatted_events/{token}".into(),
        Endpoint::App => format!("/{}", cfg.app),
        Endpoint::Static(_) => format!(
            "/{}/{{file}}",
            cfg.static_path.as_deref().unwrap_or("static")
        ),
        Endpoint::Favicon => "/favicon.ico".into(),
        Endpoint::OpenApi => "/openapi.json".into(),
    }
}

/// Brine's query parameters, by documented path: (path, name, type, description); the type
/// `array` is a repeatable parameter.
const QUERY: &[(&str, &str, &str, &str)] = &[
    ("/events", "tag", "array", TAG),
    ("/ws", "tag", "array", TAG),
    ("/ws/{token}", "tag", "array", TAG),
    ("/all_events/{token}", "tag", "array", TAG),
    ("/formatted_events/{token}", "tag", "array", TAG),
    (
        "/jobs",
        "limit",
        "integer",
        "Page the job list: the newest N jobs (1-1000), newest first, \
with _links.next while older ones match (Brine's; without it, every job as jobs.list_jobs)",
    ),
    (
        "/jobs",
        "before",
        "string",
        "With limit: only jobs older than this jid",
    ),
    (
        "/jobs",
        "fun",
        "string",
        "With limit: only jobs whose function matches this glob",
    ),
    (
        "/jobs",
        "user",
        "string",
        "With limit: only jobs of this user",
    ),
    (
        "/jobs",
        "tgt",
        "string",
        "With limit: only jobs whose target (or one of them) matches this glob",
    ),
    (
        "/jobs/{jid}",
        "wait",
        "number",
        "Answer once the job is complete (every minion returned, or Salt's rules for a sync \
local call gave up on the rest), or after this many seconds, at most rest_timeout (Brine's)",
    ),
];

const TAG: &str = "Only events whose tag matches one of these globs (repeatable; Salt's glob: \
`*` crosses `/`). A WebSocket client can replace the filter at any time with a text message \
{\"subscribe\": [\"<glob>\", ...]}.";

fn operation(op: &Op, path: &str) -> Value {
    let mut o = Map::new();
    o.insert("summary".into(), json!(op.summary));
    let mut params: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if op.method == "get" {
        params.extend(
            QUERY
                .iter()
                .filter(|(p, ..)| *p == path)
                .map(|(_, name, kind, about)| {
                    let schema = match *kind {
                        "array" => json!({"type": "array", "items": {"type": "string"}}),
                        other => json!({"type": other}),
                    };
                    json!({"name": name, "in": "query", "required": false, "description": about,
                "schema": schema})
                }),
        );
    }
    if !params.is_empty() {
        o.insert("parameters".into(), Value::Array(params));
    }
    if let Some(schema) = op.body {
        let reference = json!({"$ref": format!("#/components/schemas/{schema}")});
        let mut content = Map::new();
        for t in [
            "application/json",
            "application/x-yaml",
            "application/x-www-form-urlencoded",
        ] {
            content.insert(t.into(), json!({"schema": reference}));
        }
        o.insert(
            "requestBody".into(),
            json!({"required": true, "content": content}),
        );
    }
    let (status, types) = op.answer;
    let mut answer = json!({"description": "Success"});
    if !types.is_empty() {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| ((*t).to_owned(), json!({"schema": {}})))
            .collect();
        answer["content"] = Value::Object(content);
    }
    let mut responses = Map::new();
    responses.insert(status.into(), answer);
    let error = json!({"$ref": "#/components/responses/Error"});
    for s in [
        "400", "401", "403", "404", "406", "413", "415", "429", "500", "503",
    ] {
        responses.insert(s.into(), error.clone());
    }
    o.insert("responses".into(), Value::Object(responses));
    if op.auth {
        o.insert("security".into(), json!([{"token": []}, {"session": []}]));
    }
    Value::Object(o)
}

/// The document for this deployment.
pub fn document(cfg: &RouteConfig) -> Value {
    let mut doc_paths = Map::new();
    for (path, _, ops) in paths(cfg) {
        let mut item = Map::new();
        for op in &ops {
            item.insert(op.method.into(), operation(op, &path));
        }
        doc_paths.insert(path, Value::Object(item));
    }
    let server = if cfg.root_prefix.is_empty() {
        "/".to_owned()
    } else {
        cfg.root_prefix.clone()
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Brine (salt-api rest_cherrypy)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Salt's salt-api REST interface as Brine serves it. Every endpoint also \
                answers HEAD where it answers GET. Request bodies may be JSON, YAML or a form; \
                answers are JSON or YAML by the Accept header. Commands run with the caller's \
                token or eauth credentials, so the master's eauth ACLs apply."
        },
        "servers": [{"url": server}],
        "paths": doc_paths,
        "components": {
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session_id"}
            },
            "responses": {
                "Error": {
                    "description": "An error, as rest_cherrypy answers it: a JSON or YAML \
                        {status, return} object, or CherryPy's HTML error page",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                        "text/html": {"schema": {"type": "string"}}
                    }
                }
            },
            "schemas": {
                "Chunk": {
                    "type": "object",
                    "description": "One lowstate chunk: the client and its parameters",
                    "required": ["client"],
                    "properties": {
                        "client": {"type": "string", "enum": [
                            "local", "local_async", "local_batch", "local_subset", "runner",
                            "runner_async", "wheel", "wheel_async", "ssh"]},
                        "tgt": {},
                        "fun": {},
                        "arg": {},
                        "kwarg": {"type": "object"},
                        "tgt_type": {"type": "string"},
                        "timeout": {},
                        "token": {"type": "string"},
                        "eauth": {"type": "string"},
                        "username": {"type": "string"},
                        "password": {"type": "string"}
                    },
                    "additionalProperties": true
                },
                "Lowstate": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Chunk"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/Chunk"}}
                    ]
                },
                "Credentials": {
                    "type": "object",
                    "required": ["username", "password", "eauth"],
                    "properties": {
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                        "eauth": {"type": "string"}
                    }
                },
                "KeyGen": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Credentials"},
                        {
                            "type": "object",
                            "required": ["mid"],
                            "properties": {
                                "mid": {"type": "string"},
                                "keysize": {"type": "integer"},
                                "force": {"type": "boolean"}
                            }
                        }
                    ]
                },
                "Any": {"description": "Any JSON, YAML or form body"},
                "Error": {
                    "type": "object",
                    "properties": {"status": {"type": "integer"}, "return": {"type": "string"}}
                }
            }
        }
    })
}

/// `GET /openapi.json` (always JSON: it is a document for tools, not a salt-api answer).
pub fn answer(app: &SharedApp) -> Response {
    let doc = document(&app.settings.rest.routes);
    let mut resp = Response::new(Body::from(serde_json::to_vec(&doc).unwrap_or_default()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn cfg(prefix: &str, sessions: bool, files: bool) -> RouteConfig {
        RouteConfig {
            root_prefix: prefix.into(),
            enable_sessions: sessions,
            webhook: "hook".into(),
            app: "app".into(),
            static_path: files.then(|| "static".into()),
            favicon: files,
        }
    }

    /// Every documented path resolves to its endpoint, and documents exactly the methods the
    /// router serves there (HEAD goes with GET).
    #[test]
    fn the_document_is_the_routing_table() {
        for c in [cfg("", true, true), cfg("/api", false, false)] {
            let doc = document(&c);
            let mut seen = Vec::new();
            for (path, endpoint, _) in paths(&c) {
                let sample = path.replace("{token}", "ab").replace(['{', '}'], "");
                let resolved = c.resolve(&format!("{}{sample}", c.root_prefix));
                let route = match resolved {
                    Ok(r) => r,
                    Err(e) => panic!("{path}: {e:?}"),
                };
                assert_eq!(route.endpoint.name(), endpoint.name(), "{path}");
                assert!(!route.extra, "{path}");
                assert_eq!(template(&route.endpoint, &c), path);
                for (method, name) in [(Method::GET, "get"), (Method::POST, "post")] {
                    // POST to a resource with a path argument finds no handler (404).
                    let post_arg = method == Method::POST
                        && matches!(
                            route.endpoint,
                            Endpoint::Minions(Some(_))
                                | Endpoint::Jobs(Some(_))
                                | Endpoint::JobStatus(_)
                                | Endpoint::JobEvents(_)
                                | Endpoint::Keys(Some(_))
                        );
                    let served = route.endpoint.supports(&method) && !post_arg;
                    assert_eq!(
                        doc["paths"][&path].get(name).is_some(),
                        served,
                        "{name} {path}"
                    );
                }
                seen.push(endpoint.name());
            }
            // Every resource family of the router is documented.
            let expected: &[&str] = if c.enable_sessions {
                &[
                    "index",
                    "login",
                    "logout",
                    "token",
                    "run",
                    "minions",
                    "jobs",
                    "job_status",
                    "job_events",
                    "keys",
                    "stats",
                    "metrics",
                    "events",
                    "hook",
                    "ws",
                    "all_events",
                    "formatted_events",
                    "app",
                    "static",
                    "favicon",
                    "openapi",
                ]
            } else {
                &[
                    "index",
                    "token",
                    "run",
                    "keys",
                    "stats",
                    "metrics",
                    "events",
                    "hook",
                    "ws",
                    "all_events",
                    "formatted_events",
                    "openapi",
                ]
            };
            for name in expected {
                assert!(seen.contains(name), "{name} is not documented");
            }
            assert_eq!(
                doc["servers"][0]["url"],
                if c.root_prefix.is_empty() {
                    "/"
                } else {
                    "/api"
                }
            );
        }
    }
}
