//! Brine's settings: the master options it needs, the `rest_cherrypy:` block salt-api reads,
//! and a few Brine-only knobs under a top-level `brine:` block.
//!
//! Everything comes from the master's own configuration (`<config dir>/master` plus includes),
//! so an operator points Brine at the same directory salt-api used. Unknown keys are ignored
//! (they belong to the master); keys of `rest_cherrypy:` that Brine accepts without acting on
//! them are logged once at startup. A bad value is an error naming the file and the key.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use salt_wire::config::{ConfigError, ConfigErrors, MasterConfig, MasterOptions, Reader};

/// Where the routing table differs between deployments (the HTTP layer's `routes` reads it).
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// `root_prefix` without a trailing slash (empty for `/`).
    pub root_prefix: String,
    /// `enable_sessions`.
    pub enable_sessions: bool,
    /// `webhook_url` without slashes (default `hook`).
    pub webhook: String,
    /// `app_path` without slashes (default `app`): mounted whether or not `app` is
    /// configured, as in the reference (without it the page is a 404 with `Allow`).
    pub app: String,
    /// `static_path` without slashes, when `static` is configured.
    pub static_path: Option<String>,
    /// Whether `favicon` is configured.
    pub favicon: bool,
}

/// What logging needs before the other settings are read, so that every note about the
/// configuration is logged once, at the right level: `rest_cherrypy.debug` (raises the log
/// level), `rest_cherrypy.log_error_file` and `brine.audit_log_file`, as written (a wrong
/// type is reported by [`Settings::from_config`]).
pub struct LogOptions {
    /// `rest_cherrypy.debug`.
    pub debug: bool,
    /// `rest_cherrypy.log_error_file`.
    pub error_file: Option<PathBuf>,
    /// `brine.audit_log_file`.
    pub audit_file: Option<PathBuf>,
}

impl LogOptions {
    /// Reads them from the master's configuration.
    pub fn from_config(cfg: &MasterConfig) -> LogOptions {
        let get = |block: &str, key: &str| cfg.get(block).and_then(|b| b.get(key)).cloned();
        let path = |block: &str, key: &str| {
            get(block, key)
                .as_ref()
                .and_then(serde_json::Value::as_str)
                .map(PathBuf::from)
        };
        LogOptions {
            debug: get("rest_cherrypy", "debug")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            error_file: path("rest_cherrypy", "log_error_file"),
            audit_file: path("brine", "audit_log_file"),
        }
    }
}

/// The `rest_cherrypy:` settings Brine honours.
#[derive(Clone, Debug)]
pub struct RestSettings {
    /// `host` (default `0.0.0.0`).
    pub host: IpAddr,
    /// `port` (required, or `--port`).
    pub port: u16,
    /// `disable_ssl`.
    pub disable_ssl: bool,
    /// `ssl_crt`.
    pub ssl_crt: Option<PathBuf>,
    /// `ssl_key`.
    pub ssl_key: Option<PathBuf>,
    /// `ssl_chain`.
    pub ssl_chain: Option<PathBuf>,
    /// `max_request_body_size` when set; otherwise 100 MiB (what rest_cherrypy really allows).
    pub max_body: usize,
    /// The listen backlog: `socket_queue_size` (the name rest_cherrypy documents), else
    /// `queue_size` (the key its code reads), else [`DEFAULT_LISTEN_BACKLOG`]. The kernel caps
    /// it at `net.core.somaxconn`.
    pub listen_backlog: u32,
    /// The URL map: `root_prefix` (default `/`), `enable_sessions` (default true: `false`
    /// removes `/login`, `/logout`, `/minions`, `/jobs`), `webhook_url` (default `/hook`).
    pub routes: RouteConfig,
    /// `webhook_disable_auth`: no auth on the hook URL.
    pub webhook_disable_auth: bool,
    /// `app`: the HTML file served at `app_path` and by the HTML override.
    pub app: Option<PathBuf>,
    /// `static`: the directory served under `static_path`.
    pub static_dir: Option<PathBuf>,
    /// `favicon`: the file served at `/favicon.ico`.
    pub favicon: Option<PathBuf>,
    /// `collect_stats`: Brine keeps its request counters for `/stats` either way; this is
    /// reported as `Enabled`.
    pub collect_stats: bool,
    /// `stats_disable_auth`: no auth on `/stats`.
    pub stats_disable_auth: bool,
    /// `cors_origin`: origins allowed to use the API from a browser (`None`: reflect any origin,
    /// as rest_cherrypy does).
    pub cors_origin: Option<CorsOrigin>,
    /// `api_acl`: `{users: {<user or *>: [<ip or *>, ...]}}`, checked at login.
    pub api_acl: Option<serde_json::Map<String, serde_json::Value>>,
    /// `authorized_ips`: client addresses allowed on the API (403 `Bad IP` otherwise).
    pub authorized_ips: Option<Vec<IpAddr>>,
    /// `log_access_file`: access log in the Apache combined format.
    pub log_access_file: Option<PathBuf>,
}

/// The `cors_origin` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigin {
    /// `*`: any origin.
    Any,
    /// A list of allowed origins.
    List(Vec<String>),
}

/// Brine-only settings (`brine:` block).
#[derive(Clone, Debug)]
pub struct BrineSettings {
    /// Request-channel connections at most (default: one less than the master's
    /// `worker_threads`, so minions' own requests always find a free worker; at least 1, at
    /// most 16: more connections than workers only queue inside the master).
    pub pool_size: usize,
    /// Requests that may wait for a connection before Brine answers 503.
    pub pool_queue: usize,
    /// Limit for opening a connection to the master.
    pub connect_timeout: Duration,
    /// Valid tokens remembered between master checks.
    pub token_cache: usize,
    /// Deepest nesting accepted in request bodies.
    pub body_max_depth: usize,
    /// Events kept for streams that resume with `Last-Event-ID`.
    pub event_ring: usize,
    /// Bytes those kept events may take at most.
    pub event_ring_bytes: usize,
    /// How long an event is kept for resumption (zero: no age limit).
    pub event_ring_seconds: Duration,
    /// Events a stream may fall behind the bus before Brine disconnects it.
    pub stream_buffer: usize,
    /// Bytes of events a stream may fall behind the bus before Brine disconnects it (what a
    /// stream far behind keeps alive: events stay in memory until every stream has taken them).
    pub stream_buffer_bytes: usize,
    /// Accept `/events?token=` (and `salt_token=`) as Salt releases before 3008.3 did (D5).
    pub events_query_token: bool,
    /// Jobs the job index holds at most (0: no index).
    pub job_index: usize,
    /// Bytes the job index takes at most.
    pub job_index_bytes: usize,
    /// Replace `X-Auth-Token` and `Cookie` in hook events with `<redacted>` (D4).
    pub hook_redact_auth_headers: bool,
    /// Serve `/metrics` without a session.
    pub metrics_disable_auth: bool,
    /// Run the `ssh` client (through the master's `ssh.cmd` runner). Listing `ssh` in
    /// `netapi_enable_clients` is the opt-in, as in salt-api since Salt 3006: when
    /// `enable_ssh` is not set it follows that list; `false` switches the client off even
    /// though it is listed; `true` runs it when it is listed (it never runs unlisted).
    pub enable_ssh: bool,
    /// Login attempts per minute per client address (`/login`, `/token`, `/run`); 0: off.
    pub login_rate_limit: u64,
    /// Attempts an address may make at once before the rate applies.
    pub login_burst: u64,
    /// Count only attempts the master refused (a password guess), not successful logins.
    pub login_rate_limit_failures_only: bool,
    /// The audit trail's own file (main.rs opens it with the other logs).
    pub audit_log_file: Option<PathBuf>,
}

/// Everything Brine needs, read once at startup.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The master config file read.
    pub config_file: PathBuf,
    /// How to reach the master, and the master options salt-api honours.
    pub master: MasterOptions,
    /// The `rest_cherrypy:` block.
    pub rest: RestSettings,
    /// The `brine:` block.
    pub brine: BrineSettings,
    /// `utc_jid`.
    pub utc_jid: bool,
    /// `master_job_cache`: the returner the master keeps its jobs with.
    pub master_job_cache: String,
}

/// The listen backlog when neither `socket_queue_size` nor `queue_size` is set: room for a
/// burst of a thousand connections (event streams opened at once, a dashboard reconnecting)
/// while the accept loop catches up. Rust's standard listeners use 128, and a connection
/// the full queue refuses waits a second for the client's SYN retransmission.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 1024;

/// Keys of `rest_cherrypy:` that are accepted and have no effect in Brine (with why).
pub const IGNORED_REST_KEYS: &[(&str, &str)] = &[
    (
        "thread_pool",
        "Brine is asynchronous; concurrency is bounded by brine.pool_size",
    ),
    ("expire_responses", "a no-op in CherryPy 12+ as well"),
];

/// Optional overrides from the command line.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--host`.
    pub host: Option<IpAddr>,
    /// `--port`.
    pub port: Option<u16>,
}

impl Settings {
    /// Reads the settings from a loaded master configuration; the first bad value is the
    /// error.
    pub fn from_config(cfg: &MasterConfig, over: &Overrides) -> Result<Settings, ConfigError> {
        Settings::read_all(cfg, over).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Reads every option, going on past bad values (their fallbacks stand in), so that every
    /// option is recorded as read and every bad value is in the answer (never empty when it
    /// is an error). `brine check-config` reports from this; the daemon reads the same way.
    pub fn read_all(cfg: &MasterConfig, over: &Overrides) -> Result<Settings, Vec<ConfigError>> {
        let errors = ConfigErrors::default();
        let read = Settings::read(&Reader::top(cfg).collecting(&errors), cfg, over);
        let mut errors = errors.into_vec();
        match read {
            Ok(s) if errors.is_empty() => Ok(s),
            Ok(_) => Err(errors),
            Err(e) => {
                errors.push(e);
                Err(errors)
            }
        }
    }

    fn read(
        top: &Reader<'_>,
        cfg: &MasterConfig,
        over: &Overrides,
    ) -> Result<Settings, ConfigError> {
        let master = MasterOptions::from_reader(top)?;
        let block = cfg.get("rest_cherrypy");
        let rest = top.section("rest_cherrypy")?;
        let rest = match block {
            Some(serde_json::Value::Object(_)) => read_rest(&rest, false, over)?,
            // Without a `rest_cherrypy` block, `--port` alone serves plain HTTP.
            None if over.port.is_some() => read_rest(&rest, true, over)?,
            _ => {
                if block.is_none() {
                    top.reject(
                        "rest_cherrypy",
                        "missing: Brine serves the rest_cherrypy API and needs at least \
                         `rest_cherrypy: {port: 8000}` (or --port)",
                        (),
                    )?;
                }
                // Missing or not a mapping (`section` said so): its options are still read
                // (and listed), without the errors that follow (no port, no certificate).
                let consequences = ConfigErrors::default();
                read_rest(&rest.collecting(&consequences), false, over)?
            }
        };
        let b = top.section("brine")?;
        let default_pool = master.worker_threads.saturating_sub(1).clamp(1, 16);
        // Unset, `enable_ssh` follows `netapi_enable_clients` (check-config shows the
        // default this gives).
        let ssh_listed = master.netapi_enable_clients.iter().any(|c| c == "ssh");
        let brine = BrineSettings {
            pool_size: b.integer("pool_size", default_pool, 1, 1024)? as usize,
            pool_queue: b.integer("pool_queue", 10_000, 0, 1_000_000)? as usize,
            connect_timeout: b.seconds("connect_timeout", 3.0)?,
            token_cache: b.integer("token_cache", 10_000, 1, 10_000_000)? as usize,
            body_max_depth: b.integer("body_max_depth", 64, 4, 1024)? as usize,
            event_ring: b.integer("event_ring", 10_000, 0, 10_000_000)? as usize,
            event_ring_bytes: b.integer("event_ring_bytes", 16 << 20, 0, 1 << 40)? as usize,
            event_ring_seconds: b.seconds("event_ring_seconds", 300.0)?,
            stream_buffer: b.integer("stream_buffer", 4096, 16, 1_000_000)? as usize,
            stream_buffer_bytes: b.integer("stream_buffer_bytes", 64 << 20, 1 << 20, 1 << 40)?
                as usize,
            events_query_token: b.boolean("events_query_token", false)?,
            job_index: b.integer("job_index", 1_000_000, 0, 100_000_000)? as usize,
            job_index_bytes: b.integer("job_index_bytes", 256 << 20, 1 << 20, 1 << 40)? as usize,
            hook_redact_auth_headers: b.boolean("hook_redact_auth_headers", true)?,
            metrics_disable_auth: b.boolean("metrics_disable_auth", false)?,
            enable_ssh: b.boolean("enable_ssh", ssh_listed)?,
            login_rate_limit: b.integer("login_rate_limit", 10, 0, 1_000_000)?,
            login_burst: b.integer("login_burst", 10, 1, 1_000_000)?,
            login_rate_limit_failures_only: b.boolean("login_rate_limit_failures_only", true)?,
            audit_log_file: b.string("audit_log_file")?.map(PathBuf::from),
        };
        Ok(Settings {
            config_file: cfg.main_file.clone(),
            master,
            rest,
            brine,
            utc_jid: top.boolean("utc_jid", false)?,
            master_job_cache: top.string_or("master_job_cache", "local_cache")?,
        })
    }
}

/// Reads the `rest_cherrypy:` block (`no_block`: there is none, `--port` stands in for it and
/// TLS is off by default).
fn read_rest(
    r: &Reader<'_>,
    no_block: bool,
    over: &Overrides,
) -> Result<RestSettings, ConfigError> {
    // `--port` and `--host` replace the file's values, which are still recorded as read (they
    // are honoured options, overridden) but not checked.
    let port = match over.port {
        Some(p) => {
            r.raw("port");
            p
        }
        None => match r.raw("port") {
            None => r.reject(
                "port",
                "missing: salt-api starts rest_cherrypy only when `port` is set",
                0,
            )?,
            Some(_) => r.integer("port", 0, 1, 65535)? as u16,
        },
    };
    let any = IpAddr::from([0, 0, 0, 0]);
    let host = match over.host {
        Some(h) => {
            r.raw("host");
            h
        }
        None => {
            let h = r.string_or("host", "0.0.0.0")?;
            match h.trim_matches(['[', ']']).parse() {
                Ok(ip) => ip,
                Err(_) => r.reject("host", format!("{h:?} is not an IP address"), any)?,
            }
        }
    };
    let disable_ssl = r.boolean("disable_ssl", no_block)?;
    // `debug` only raises the log level ([`LogOptions`] reads it before logging starts); checked here
    // so a bad value is still an error.
    r.boolean("debug", false)?;
    let path =
        |k: &str| -> Result<Option<PathBuf>, ConfigError> { Ok(r.string(k)?.map(PathBuf::from)) };
    let ssl_crt = path("ssl_crt")?;
    let ssl_key = path("ssl_key")?;
    if !disable_ssl && (ssl_crt.is_none() || ssl_key.is_none()) {
        r.reject(
            "ssl_crt",
            "ssl_crt and ssl_key are required unless disable_ssl is true",
            (),
        )?;
    }
    for (k, p) in [("ssl_crt", &ssl_crt), ("ssl_key", &ssl_key)] {
        if let (false, Some(p)) = (disable_ssl, p) {
            if !p.is_file() {
                r.reject(k, format!("{} does not exist", p.display()), ())?;
            }
        }
    }
    let max_body = r.integer("max_request_body_size", 100 * 1024 * 1024, 1, 1 << 40)? as usize;
    // `socket_queue_size` is the name rest_cherrypy documents, `queue_size` the key its code
    // reads: the first one set, else the default.
    let queue_size = r.integer("queue_size", u64::from(DEFAULT_LISTEN_BACKLOG), 1, 65535)?;
    let listen_backlog = r.integer("socket_queue_size", queue_size, 1, 65535)? as u32;
    let mut root_prefix = r.string_or("root_prefix", "/")?;
    if !root_prefix.starts_with('/') {
        root_prefix.insert(0, '/');
    }
    let root_prefix = root_prefix.trim_end_matches('/').to_owned();
    let existing = |k: &str, dir: bool| -> Result<Option<PathBuf>, ConfigError> {
        match path(k)? {
            Some(p) if (dir && p.is_dir()) || (!dir && p.is_file()) => Ok(Some(p)),
            Some(p) => r.reject(k, format!("{} does not exist", p.display()), None),
            None => Ok(None),
        }
    };
    // `log_error_file` is opened with the other log files ([`LogOptions`]); its type is checked here.
    path("log_error_file")?;
    let app = existing("app", false)?;
    let static_dir = existing("static", true)?;
    let favicon = existing("favicon", false)?;
    let segment = |k: &str, default: &str| -> Result<String, ConfigError> {
        Ok(r.string_or(k, default)?.trim_matches('/').to_owned())
    };
    let app_path = segment("app_path", "/app")?;
    let static_path = segment("static_path", "/static")?;
    for (k, why) in IGNORED_REST_KEYS {
        if r.raw(k).is_some() {
            tracing::info!("rest_cherrypy.{k} is accepted and ignored: {why}");
        }
    }
    let cors_origin = match r.raw("cors_origin") {
        None => None,
        Some(serde_json::Value::String(s)) if s == "*" => Some(CorsOrigin::Any),
        Some(_) => {
            let list = r.string_list("cors_origin")?.unwrap_or_default();
            if list.iter().any(|o| o == "*") {
                Some(CorsOrigin::Any)
            } else {
                Some(CorsOrigin::List(list))
            }
        }
    };
    let api_acl = match r.raw("api_acl") {
        None => None,
        Some(serde_json::Value::Object(m)) => Some(m.clone()),
        Some(_) => r.reject(
            "api_acl",
            "must be a mapping like {users: {name: [ip, ...]}}",
            None,
        )?,
    };
    let authorized_ips = match r.string_list("authorized_ips")? {
        None => None,
        Some(list) => {
            let mut ips = Vec::with_capacity(list.len());
            for ip in &list {
                match ip.parse::<IpAddr>() {
                    Ok(a) => ips.push(a),
                    Err(_) => {
                        r.reject("authorized_ips", format!("{ip:?} is not an IP address"), ())?
                    }
                }
            }
            Some(ips)
        }
    };
    Ok(RestSettings {
        host,
        port,
        disable_ssl,
        ssl_crt,
        ssl_key,
        ssl_chain: path("ssl_chain")?,
        max_body,
        listen_backlog,
        routes: RouteConfig {
            root_prefix,
            enable_sessions: r.boolean("enable_sessions", true)?,
            webhook: segment("webhook_url", "/hook")?,
            app: app_path.clone(),
            static_path: static_dir.as_ref().map(|_| static_path.clone()),
            favicon: favicon.is_some(),
        },
        webhook_disable_auth: r.boolean("webhook_disable_auth", false)?,
        app,
        static_dir,
        favicon,
        collect_stats: r.boolean("collect_stats", false)?,
        stats_disable_auth: r.boolean("stats_disable_auth", false)?,
        cors_origin,
        api_acl,
        authorized_ips,
        log_access_file: path("log_access_file")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn cfg(v: serde_json::Value) -> MasterConfig {
        MasterConfig::from_map(
            Path::new("/etc/salt/master"),
            v.as_object().cloned().unwrap_or_default(),
        )
    }

    #[test]
    fn reads_rest_cherrypy_block() {
        let c = cfg(
            json!({"rest_cherrypy": {"port": "8000", "host": "127.0.0.1", "disable_ssl": true,
                                              "root_prefix": "/api/", "thread_pool": 50}}),
        );
        let s = Settings::from_config(&c, &Overrides::default());
        let s = match s {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(s.rest.port, 8000);
        assert_eq!(s.rest.routes.root_prefix, "/api");
        assert_eq!(s.rest.max_body, 100 * 1024 * 1024);
        assert_eq!(s.brine.pool_size, 4);
        assert_eq!(s.rest.listen_backlog, DEFAULT_LISTEN_BACKLOG);
    }

    #[test]
    fn the_listen_backlog_is_socket_queue_size_else_queue_size() {
        let backlog = |extra: serde_json::Value| {
            let mut rest = json!({"port": 8000, "disable_ssl": true});
            if let (Some(r), Some(e)) = (rest.as_object_mut(), extra.as_object()) {
                r.extend(e.clone());
            }
            Settings::from_config(
                &cfg(json!({ "rest_cherrypy": rest })),
                &Overrides::default(),
            )
            .map(|s| s.rest.listen_backlog)
            .map_err(|e| e.to_string())
        };
        assert_eq!(backlog(json!({"queue_size": 30})), Ok(30));
        assert_eq!(backlog(json!({"socket_queue_size": 4096})), Ok(4096));
        assert_eq!(
            backlog(json!({"socket_queue_size": 2048, "queue_size": 30})),
            Ok(2048)
        );
        let e = backlog(json!({"queue_size": 0})).err().unwrap_or_default();
        assert!(e.contains("rest_cherrypy.queue_size"), "{e}");
    }

    #[test]
    fn enable_ssh_follows_netapi_enable_clients_unless_set() {
        let enabled = |listed: &[&str], brine: serde_json::Value| {
            let c = cfg(json!({
                "rest_cherrypy": {"port": 8000, "disable_ssl": true},
                "netapi_enable_clients": listed,
                "brine": brine,
            }));
            Settings::from_config(&c, &Overrides::default())
                .map(|s| s.brine.enable_ssh)
                .map_err(|e| e.to_string())
        };
        // Unset: listing `ssh` is the opt-in, as for salt-api.
        assert_eq!(enabled(&["local", "ssh"], json!({})), Ok(true));
        assert_eq!(enabled(&["local"], json!({})), Ok(false));
        assert_eq!(enabled(&[], json!(null)), Ok(false));
        // `false` switches it off although it is listed; `true` as before.
        assert_eq!(enabled(&["ssh"], json!({"enable_ssh": false})), Ok(false));
        assert_eq!(enabled(&["ssh"], json!({"enable_ssh": "no"})), Ok(false));
        assert_eq!(enabled(&["ssh"], json!({"enable_ssh": true})), Ok(true));
        let e = enabled(&["ssh"], json!({"enable_ssh": "maybe"}))
            .err()
            .unwrap_or_default();
        assert!(e.contains("brine.enable_ssh"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let c = cfg(json!({"rest_cherrypy": {"host": "127.0.0.1"}}));
        let e = Settings::from_config(&c, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("rest_cherrypy.port"));
        let c = cfg(json!({"rest_cherrypy": {"port": 8000}}));
        let e = Settings::from_config(&c, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("ssl_crt"));
        let c = cfg(json!({"rest_cherrypy": {"port": 8000, "disable_ssl": "maybe"}}));
        let e = Settings::from_config(&c, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("rest_cherrypy.disable_ssl"));
    }
}
