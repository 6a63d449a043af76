//! Shared fixture of the integration tests: one real Salt stack per test binary (a master,
//! minions and the reference Python salt-api, started by `scripts/saltstack.py` on free ports
//! under a temp dir) with Brine in front of the same master, plus helpers that send the same
//! request to both and compare normalized answers.
//!
//! Teardown is by PID: the stack script's watchdog stops every process of the stack (Brine
//! included, through `pids/brine.pid`) once this test process exits.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// A running stack.
pub struct Stack {
    /// Root directory of the stack.
    pub root: PathBuf,
    /// `stack.json` as written by the stack script.
    pub info: Value,
    /// Brine's base URL.
    pub brine: String,
    /// The reference rest_cherrypy's base URL (if started).
    pub cherry: String,
    /// The Salt venv.
    pub venv: PathBuf,
    /// Brine's process.
    pub brine_child: Mutex<Option<Child>>,
    /// Brine's `-l` level.
    pub brine_log_level: &'static str,
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The project venv (created by `scripts/salt-venv` if needed).
pub fn venv() -> PathBuf {
    let out = run(Command::new(repo().join("scripts/salt-venv")).stderr(Stdio::inherit()));
    PathBuf::from(out.trim().lines().last().unwrap_or("").trim())
}

/// Options of a stack.
pub struct StackOpts {
    /// Minions to start.
    pub minions: usize,
    /// Also start the reference rest_cherrypy.
    pub reference: bool,
    /// Extra master options (a YAML mapping) that replace generated ones.
    pub extra_config: &'static str,
    /// `transport` of the master (`zeromq` or `tcp`).
    pub transport: &'static str,
    /// `ipc_mode` of the master (`ipc` or `tcp`).
    pub ipc_mode: &'static str,
    /// Options merged into the `rest_cherrypy` block (YAML mapping), for Brine and the
    /// reference alike.
    pub rest_extra: String,
    /// Brine's `-l` level.
    pub brine_log_level: &'static str,
    /// Minion options (a YAML mapping) that replace generated ones.
    pub minion_extra: &'static str,
    /// How much nicer the master and minions run (`saltstack.py --salt-nice`): 0 is the
    /// scheduler's default, an equal share for every session.
    pub salt_nice: u8,
}

impl Default for StackOpts {
    fn default() -> Self {
        StackOpts {
            minions: 2,
            reference: true,
            extra_config: "",
            transport: "zeromq",
            ipc_mode: "ipc",
            rest_extra: String::new(),
            brine_log_level: "debug",
            minion_extra: "",
            salt_nice: 0,
        }
    }
}

static STACK: OnceLock<Stack> = OnceLock::new();

/// The stack of this test binary, started on first use.
pub fn stack() -> &'static Stack {
    stack_with(StackOpts::default())
}

/// The stack of this test binary with specific options (the first caller's options win).
pub fn stack_with(opts: StackOpts) -> &'static Stack {
    STACK.get_or_init(|| start(opts))
}

fn start(opts: StackOpts) -> Stack {
    let venv = venv();
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into());
    let short: String = name.chars().take(12).collect();
    let root = std::env::temp_dir().join(format!("brine-{short}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let started = Instant::now();
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(repo().join("scripts/saltstack.py"))
        .args(["start", "--root"])
        .arg(&root)
        .args(["--minions", &opts.minions.to_string()])
        .args(["--transport", opts.transport, "--ipc-mode", opts.ipc_mode])
        .args(["--watch-pid", &std::process::id().to_string()]);
    // The stack lives in a static, which is never dropped: its watchdog deletes the root when
    // this test binary exits, unless BRINE_KEEP_STACK asks to keep it (logs for a post-mortem).
    if std::env::var_os("BRINE_KEEP_STACK").is_none() {
        cmd.arg("--remove-root");
    }
    if opts.reference {
        cmd.args(["--reference", "cherrypy"]);
    }
    if opts.salt_nice > 0 {
        cmd.args(["--salt-nice", &opts.salt_nice.to_string()]);
    }
    // Differential tests send many refused logins on purpose; Brine's login throttle (which
    // rest_cherrypy does not have) would turn the later ones into 429s. Its own tests
    // (security.rs) configure it explicitly.
    let mut extra = opts.extra_config.to_owned();
    if !extra.contains("brine:") {
        extra.push_str("\nbrine: {login_rate_limit: 0}");
    }
    cmd.args(["--extra-config", extra.trim_start()]);
    if !opts.rest_extra.is_empty() {
        cmd.args(["--rest-extra", &opts.rest_extra]);
    }
    if !opts.minion_extra.is_empty() {
        cmd.args(["--minion-extra", opts.minion_extra]);
    }
    cmd.stderr(Stdio::inherit());
    run(&mut cmd);
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("stack.json")).unwrap_or_default())
            .unwrap_or_else(|e| panic!("stack.json: {e}"));
    let brine_port = info["brine_port"].as_u64().unwrap_or(0);
    let cherry_port = info["cherrypy_port"].as_u64().unwrap_or(0);
    let scheme = if opts.rest_extra.contains("disable_ssl: false") {
        "https"
    } else {
        "http"
    };
    let stack = Stack {
        brine: format!("{scheme}://127.0.0.1:{brine_port}"),
        cherry: format!("{scheme}://127.0.0.1:{cherry_port}"),
        root,
        info,
        venv,
        brine_child: Mutex::new(None),
        brine_log_level: opts.brine_log_level,
    };
    stack.start_brine();
    if opts.reference {
        stack.warm_up_reference();
    }
    eprintln!(
        "test stack ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    stack
}

impl Stack {
    /// The master config directory.
    pub fn config_dir(&self) -> PathBuf {
        PathBuf::from(self.info["config_dir"].as_str().unwrap_or(""))
    }

    /// The minion ids.
    pub fn minions(&self) -> Vec<String> {
        self.info["minions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Starts (or restarts) Brine in front of the stack's master.
    pub fn start_brine(&self) {
        let mut guard = self.brine_child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut old) = guard.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let port = self.info["brine_port"].as_u64().unwrap_or(0).to_string();
        let log = std::fs::File::create(self.root.join("logs/brine.out"))
            .unwrap_or_else(|e| panic!("brine log: {e}"));
        // BRINE_BIN runs the suite against another build (e.g. target/release/brine).
        let bin = std::env::var("BRINE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_brine").into());
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.config_dir())
            .args(["--port", &port, "-l", self.brine_log_level])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start brine: {e}"));
        let _ = std::fs::write(self.root.join("pids/brine.pid"), child.id().to_string());
        *guard = Some(child);
        drop(guard);
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/", self.brine);
        while Instant::now() < deadline {
            let hostport = url
                .split("://")
                .nth(1)
                .unwrap_or(&url)
                .trim_end_matches('/');
            if std::net::TcpStream::connect(hostport).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "brine did not start; see {}",
            self.root.join("logs/brine.out").display()
        );
    }

    /// rest_cherrypy sometimes fails the very first logins when several arrive at once (its
    /// lazy setup races; observed as a 500). One request that authenticates (`/token`, which
    /// every configuration has) before the tests start avoids that.
    fn warm_up_reference(&self) {
        if self.cherry.starts_with("https://") {
            // (Plain-socket warm-up only; TLS stacks are used by one test at a time.)
            return;
        }
        let body = serde_json::to_vec(&self.creds()).unwrap_or_default();
        let addr = self.cherry.trim_start_matches("http://").to_owned();
        // `/token` sets up the auth path, `/login` the session tool (Salt 3006 races there
        // too); each must answer once without a 500 (`/login` is a 404 without sessions)
        // before the tests send them concurrently.
        for path in ["/token", "/login"] {
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let warmed = (0..5).any(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(500));
                }
                let ok = std::net::TcpStream::connect(&addr).ok().and_then(|mut s| {
                    use std::io::{Read, Write};
                    s.write_all(req.as_bytes()).ok()?;
                    s.write_all(&body).ok()?;
                    let mut out = String::new();
                    s.read_to_string(&mut out).ok()?;
                    Some(
                        out.starts_with("HTTP/1.1 200")
                            || (path == "/login" && out.starts_with("HTTP/1.1 404")),
                    )
                });
                ok == Some(true)
            });
            assert!(
                warmed,
                "the reference salt-api does not answer {path}; see {}",
                self.root.join("logs").display()
            );
        }
    }

    /// Runs the stack script with a subcommand (`stop-master`, `start-master`, ...).
    pub fn script(&self, sub: &str) {
        run(Command::new(self.venv.join("bin/python"))
            .arg(repo().join("scripts/saltstack.py"))
            .arg(sub)
            .arg("--root")
            .arg(&self.root)
            .stderr(Stdio::inherit()));
    }

    /// Brine's log so far.
    pub fn brine_log(&self) -> String {
        std::fs::read_to_string(self.root.join("logs/brine.out")).unwrap_or_default()
    }

    /// The eauth credentials of the full-rights test user.
    pub fn creds(&self) -> Value {
        json!({"username": "saltdev", "password": "saltdev", "eauth": "auto"})
    }
}

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

fn client() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        // No idle pool: every #[tokio::test] has its own runtime, and a pooled connection
        // would outlive the runtime that drives it.
        let mut b = reqwest::Client::builder();
        if let Some(pem) = TRUSTED_PEM.get() {
            let cert = reqwest::Certificate::from_pem(pem).unwrap_or_else(|e| panic!("{e}"));
            b = b.add_root_certificate(cert);
        }
        b.pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"))
    })
}

/// Response headers as (lower-case name, value) pairs.
fn header_list(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
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
        .unwrap_or_else(|e| panic!("{} {base}{}: {e}", req.method, req.path));
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

/// Sends `req`; an answer from the reference (not from Brine) that is not `ok` is retried up
/// to three times. Salt 3006's rest_cherrypy fails concurrent logins and tokens now and then:
/// `/login` with a 500 from its session tool ("'_Serving' object has no attribute
/// 'session'"); `/token`, which runs the `auth.mk_token` runner inside the salt-api process,
/// with a 500 or with a 200 whose return is the runner's traceback (`mk_key` unlinking a
/// `.root_key` another thread already removed). Seen in `scripts/test-matrix` runs on
/// 3006.29, never on 3007 or 3008.
async fn send_retrying_reference(base: &str, req: &Req, ok: impl Fn(&Resp) -> bool) -> Resp {
    let mut r = send(base, req).await;
    let is_reference = STACK.get().is_some_and(|st| st.cherry == base);
    for _ in 0..3 {
        if !is_reference || ok(&r) {
            break;
        }
        eprintln!(
            "the reference answered {} ({}); trying again",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        r = send(base, req).await;
    }
    r
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

/// Sends `req` to the reference. Its session-tool race (see `login`) fails a login now and
/// then with a 500: a `/login` answered 500 is asked again (a 500 it gives on purpose stays a
/// 500).
pub async fn send_reference(st: &Stack, req: &Req) -> Resp {
    let mut c = send(&st.cherry, req).await;
    if req.path.ends_with("/login") {
        for _ in 0..3 {
            if c.status != 500 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            c = send(&st.cherry, req).await;
        }
    }
    c
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

/// Per-server credentials for one test.
pub struct Sessions {
    /// Brine's `/login` token.
    pub brine: String,
    /// rest_cherrypy's `/login` session id.
    pub cherry: String,
    /// A Salt token from Brine's `/token`.
    pub brine_salt: String,
    /// A Salt token from rest_cherrypy's `/token`.
    pub cherry_salt: String,
}

/// Logs in on both servers.
pub async fn sessions(st: &Stack) -> Sessions {
    let creds = st.creds();
    Sessions {
        brine: login(&st.brine, &creds).await,
        cherry: login(&st.cherry, &creds).await,
        brine_salt: salt_token(&st.brine, &creds).await,
        cherry_salt: salt_token(&st.cherry, &creds).await,
    }
}

/// One event received on an SSE stream.
#[derive(Clone, Debug)]
pub struct SseEvent {
    /// The `id:` line (Brine only).
    pub id: Option<u64>,
    /// The `tag:` line.
    pub tag: String,
    /// The parsed `data:` line (`{"data", "tag"}`).
    pub data: Value,
}

/// An open SSE stream.
pub struct SseStream {
    /// Status of the response.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Events as they arrive.
    pub events: tokio::sync::mpsc::UnboundedReceiver<SseEvent>,
    /// The reading task (abort it to disconnect).
    pub task: tokio::task::JoinHandle<()>,
}

impl SseStream {
    /// Waits for the next event whose tag starts with `prefix`.
    pub async fn next_tagged(&mut self, prefix: &str, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if ev.tag.starts_with(prefix) => return Some(ev),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }
}

/// Parses SSE blocks out of `buf`, leaving an incomplete tail.
pub fn parse_sse(buf: &mut String) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(at) = buf.find("\n\n") {
        let block: String = buf.drain(..at + 2).collect();
        let (mut id, mut tag, mut data) = (None, String::new(), None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("tag: ") {
                tag = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).ok();
            }
        }
        if let Some(data) = data {
            out.push(SseEvent { id, tag, data });
        }
    }
    out
}

/// Opens `GET /events` with the given extra headers.
pub async fn open_sse(base: &str, headers: &[(&str, &str)]) -> SseStream {
    use futures_util::StreamExt;
    let mut b = client().get(format!("{base}/events"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = b
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}/events: {e}"));
    let status = r.status().as_u16();
    let hdrs = header_list(r.headers());
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        if status != 200 {
            return;
        }
        let mut body = r.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for ev in parse_sse(&mut buf) {
                if tx.send(ev).is_err() {
                    return;
                }
            }
        }
    });
    SseStream {
        status,
        headers: hdrs,
        events,
        task,
    }
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

/// How many descriptors a process has open (from /proc); `None` when it cannot be read.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .ok()
}

/// Brine's heap from `/stats` (jemalloc's allocated and resident bytes), in KiB; both must
/// be there and make sense (something allocated, no more than the allocator holds).
pub async fn heap_kib(base: &str, token: &str) -> (i64, i64) {
    let r = send(base, &Req::get("/stats").header("X-Auth-Token", token)).await;
    let s = &r.json()["Brine"];
    let bytes = |k: &str| {
        s[k].as_i64()
            .unwrap_or_else(|| panic!("no {k} in /stats: {s}"))
    };
    let (allocated, resident) = (bytes("Heap Allocated Bytes"), bytes("Heap Resident Bytes"));
    assert!(
        allocated > 0 && resident >= allocated,
        "heap figures in /stats: {s}"
    );
    (allocated / 1024, resident / 1024)
}

/// Brine's resident memory in KiB (from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat` (in clock ticks of
/// 1/100 s, the value of `USER_HZ` on Linux); 0 when it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Another Brine process on the stack's master (scale-out tests); killed when dropped.
pub struct ExtraBrine {
    /// Its base URL.
    pub url: String,
    child: std::process::Child,
}

impl ExtraBrine {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit; its exit code (`None`: still running, or
    /// killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for ExtraBrine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stack {
    /// Starts one more Brine on a free port in front of the same master, logging to
    /// `logs/<name>.out` (its pid is recorded so the stack's stop reaps it too).
    pub fn spawn_extra_brine(&self, name: &str) -> ExtraBrine {
        self.spawn_extra_brine_with(name, &self.config_dir(), &[])
    }

    /// As [`Stack::spawn_extra_brine`], with another configuration directory and more flags.
    pub fn spawn_extra_brine_with(
        &self,
        name: &str,
        config_dir: &std::path::Path,
        args: &[&str],
    ) -> ExtraBrine {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let log = std::fs::File::create(self.root.join(format!("logs/{name}.out")))
            .unwrap_or_else(|e| panic!("{name} log: {e}"));
        let bin = std::env::var("BRINE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_brine").into());
        let child = Command::new(bin)
            .arg("-c")
            .arg(config_dir)
            .args(["--port", &port.to_string(), "-l", self.brine_log_level])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let _ = std::fs::write(
            self.root.join(format!("pids/{name}.pid")),
            child.id().to_string(),
        );
        let extra = ExtraBrine {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        extra
    }

    /// Brine's process id.
    pub fn brine_pid(&self) -> u32 {
        self.brine_child
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.id()))
            .unwrap_or(0)
    }
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
pub fn stats_type_paths(
    v: &Value,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<&'static str>> {
    fn walk(
        v: &Value,
        path: &str,
        named: bool,
        out: &mut std::collections::BTreeMap<String, std::collections::BTreeSet<&'static str>>,
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
    let mut out = std::collections::BTreeMap::new();
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

/// How a client that sends its whole body before reading saw a request end: the status and
/// body, or the error it got instead (`BrokenPipeError`, a reset).
pub type UploadOutcome = Result<(u16, String), String>;

/// POSTs a body of `mib` MiB to `url` with Python's `http.client` (tests/clients/upload.py),
/// from `source` when given; `headers` as `Name: value`.
pub fn upload_python(
    st: &Stack,
    url: &str,
    mib: u32,
    source: Option<&str>,
    headers: &[&str],
) -> UploadOutcome {
    let mut cmd = Command::new(st.venv.join("bin/python"));
    cmd.arg(repo().join("crates/brine/tests/clients/upload.py"))
        .arg(url)
        .arg(mib.to_string());
    if let Some(s) = source {
        cmd.args(["--source", s]);
    }
    for h in headers {
        cmd.args(["--header", h]);
    }
    let out = cmd.output().map_err(|e| format!("python: {e}"))?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("upload.py: {e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    match v["status"].as_u64() {
        Some(s) => Ok((s as u16, v["body"].as_str().unwrap_or("").to_owned())),
        None => Err(v["error"].as_str().unwrap_or("?").to_owned()),
    }
}

/// The same with curl, posting a file of `mib` MiB (`--data-binary @file`) without
/// `Expect: 100-continue` (so curl sends the body at once, as a script's client does).
pub fn upload_curl(
    st: &Stack,
    url: &str,
    mib: u32,
    source: Option<&str>,
    headers: &[&str],
) -> UploadOutcome {
    let file = st.root.join(format!("upload-{mib}.bin"));
    if !file.exists() {
        let f = std::fs::File::create(&file).map_err(|e| e.to_string())?;
        f.set_len(u64::from(mib) << 20).map_err(|e| e.to_string())?;
    }
    let body_file = st
        .root
        .join(format!("upload-answer-{}.txt", std::process::id()));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "120", "-H", "Expect:"])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_code}"]);
    if let Some(s) = source {
        cmd.args(["--interface", s]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().map_err(|e| format!("curl: {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        return Err(format!(
            "curl exit {}: {} (code {code})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let body = std::fs::read_to_string(&body_file).unwrap_or_default();
    Ok((code.parse().unwrap_or(0), body))
}

/// Runs the `pepper` CLI (salt-pepper, from the venv) against `base` as `saltdev` with the
/// `auto` eauth, JSON output: its output documents merged into one map (a bare value under
/// `_value`), or its exit status and output when it fails.
pub fn pepper_cli(st: &Stack, base: &str, args: &[&str]) -> Result<Value, String> {
    let home = st.root.join("pepper-home");
    let _ = std::fs::create_dir_all(&home);
    let out = Command::new(st.venv.join("bin/pepper"))
        .env("HOME", &home)
        .args(["-u", base, "-a", "auto", "--username", "saltdev"])
        .args([
            "--password",
            "saltdev",
            "--non-interactive",
            "--out",
            "json",
        ])
        .args(args)
        .output()
        .map_err(|e| format!("pepper: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut merged = Map::new();
    for doc in serde_json::Deserializer::from_str(&stdout).into_iter::<Value>() {
        match doc {
            Ok(Value::Object(m)) => merged.extend(m),
            Ok(other) => {
                merged.insert("_value".into(), other);
            }
            Err(e) => return Err(format!("pepper output is not JSON ({e}): {stdout}")),
        }
    }
    Ok(Value::Object(merged))
}
