//! `brine check-config`: reads the master configuration exactly as the daemon does and reports
//! it, so an operator can see what Brine will do before starting it.
//!
//! What is "honoured" is not a list kept by hand: the configuration records every option the
//! settings code asks for ([`MasterConfig::reads`]), so the report cannot drift from the code.
//! The settings are read collecting errors ([`Settings::read_all`]): one bad value neither
//! stops the reading of the others nor turns them into warnings. Each honoured option is
//! printed with its value (secrets masked) and the file that set it, `--host`/`--port` as the
//! value they replace, or as `(default: value)`, or `(not set)` for an option without a default
//! (a path, a list, a mapping that is simply absent).
//! Warnings: `rest_cherrypy` keys Brine does not implement, keys it accepts and ignores,
//! `brine:` keys it does not know (typos), and a `rest_tornado` block (Brine serves
//! rest_tornado's URLs from the rest_cherrypy listener and reads nothing from that block).
//! Errors (what would stop the daemon, including an unreadable TLS certificate) exit with 2.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::ExitCode;

use salt_wire::config::MasterConfig;
use serde_json::Value;

use crate::settings::{Overrides, Settings, IGNORED_REST_KEYS};

/// Words in an option's name that make its text value a secret (never printed). Numbers and
/// booleans are printed whatever the name (`token_expire`, `brine.events_query_token`): a
/// secret is text.
const SECRET_WORDS: [&str; 7] = [
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "api_key",
    "apikey",
];

/// Longest value printed; longer ones are cut.
const VALUE_WIDTH: usize = 120;

/// How a value is printed: masked when it is a secret (text under a secret's name, or a
/// private key whatever the name), cut when long.
fn shown(name: &str, v: &Value) -> String {
    let last = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    let text = v.to_string();
    let scalar = matches!(v, Value::Bool(_) | Value::Number(_) | Value::Null);
    if (!scalar && SECRET_WORDS.iter().any(|w| last.contains(w))) || text.contains("PRIVATE KEY") {
        return "<masked>".into();
    }
    if text.chars().count() > VALUE_WIDTH {
        let cut: String = text.chars().take(VALUE_WIDTH).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// The report and whether the configuration is usable.
pub fn report(cfg: &MasterConfig, over: &Overrides) -> (String, bool) {
    let mut out = String::new();
    let mut files: BTreeSet<String> = cfg
        .sources
        .values()
        .map(|p| p.display().to_string())
        .collect();
    files.insert(cfg.main_file.display().to_string());
    let _ = writeln!(out, "Configuration files read:");
    for f in &files {
        let _ = writeln!(out, "  {f}");
    }
    let mut errors = Vec::new();
    match Settings::read_all(cfg, over) {
        Err(all) => errors.extend(all.iter().map(ToString::to_string)),
        Ok(s) => {
            if let (false, Some(crt), Some(key)) =
                (s.rest.disable_ssl, &s.rest.ssl_crt, &s.rest.ssl_key)
            {
                if let Err(e) = crate::tls::acceptor(crt, key, s.rest.ssl_chain.as_deref()) {
                    errors.push(format!("TLS: {e}"));
                }
            }
        }
    }
    let ignored: Vec<String> = IGNORED_REST_KEYS
        .iter()
        .map(|(k, _)| format!("rest_cherrypy.{k}"))
        .collect();
    let reads: Vec<String> = cfg
        .reads()
        .into_iter()
        .filter(|k| !ignored.contains(k))
        .collect();
    // The command line's replacements: (option, flag, value).
    let overrides: Vec<(&str, &str, Value)> = [
        (
            "rest_cherrypy.host",
            "--host",
            over.host.map(|h| h.to_string().into()),
        ),
        ("rest_cherrypy.port", "--port", over.port.map(Value::from)),
    ]
    .into_iter()
    .filter_map(|(name, flag, v)| Some((name, flag, v?)))
    .collect();
    let width = reads.iter().map(String::len).max().unwrap_or(0);
    let _ = writeln!(out, "\nOptions Brine honours (value, file):");
    for name in &reads {
        let set = cfg.lookup(name);
        if let Some((_, flag, v)) = overrides.iter().find(|(n, _, _)| n == name) {
            let replaced = set.map_or_else(String::new, |f| {
                format!(
                    " (replaces {} from {})",
                    shown(name, f),
                    cfg.source(name).display()
                )
            });
            let _ = writeln!(
                out,
                "  {name:width$} = {}    {flag}{replaced}",
                shown(name, v)
            );
        } else if let Some(v) = set {
            let _ = writeln!(
                out,
                "  {name:width$} = {}    {}",
                shown(name, v),
                cfg.source(name).display()
            );
        } else {
            let default = cfg.default_of(name).map_or_else(
                || "(not set)".to_owned(),
                |d| format!("(default: {})", shown(name, &d)),
            );
            let _ = writeln!(out, "  {name:width$}   {default}");
        }
    }
    let mut warnings = Vec::new();
    for block in ["rest_cherrypy", "brine"] {
        let Some(Value::Object(m)) = cfg.get(block) else {
            continue;
        };
        for k in m.keys() {
            let name = format!("{block}.{k}");
            if let Some((_, why)) = IGNORED_REST_KEYS
                .iter()
                .find(|(ik, _)| block == "rest_cherrypy" && ik == k)
            {
                warnings.push(format!("{name}: accepted and ignored ({why})"));
            } else if !reads.contains(&name) {
                warnings.push(if block == "brine" {
                    format!("{name}: not a Brine option; ignored (a typo?)")
                } else {
                    format!("{name}: not implemented by Brine; ignored")
                });
            }
        }
    }
    if cfg.get("rest_tornado").is_some() {
        warnings.push(format!(
            "rest_tornado ({}): not read; Brine serves rest_tornado's URLs (/all_events, \
             /formatted_events, ...) on the rest_cherrypy listener",
            cfg.source("rest_tornado").display()
        ));
    }
    if !warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in &warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    if errors.is_empty() {
        let _ = writeln!(
            out,
            "\nOK: Brine can start with this configuration ({} warning(s)).",
            warnings.len()
        );
    } else {
        let _ = writeln!(out, "\nErrors:");
        for e in &errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    (out, errors.is_empty())
}

/// Prints the report; exit status 0 when the configuration is usable, 2 otherwise.
pub fn run(cfg: &MasterConfig, over: &Overrides) -> ExitCode {
    let (text, ok) = report(cfg, over);
    print!("{text}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn cfg(v: Value) -> MasterConfig {
        MasterConfig::from_map(
            Path::new("/etc/salt/master"),
            v.as_object().cloned().unwrap_or_default(),
        )
    }

    #[test]
    fn honoured_ignored_unknown_and_secret_options() {
        let c = cfg(json!({
            "ret_port": 4606,
            "rest_cherrypy": {"port": 8000, "disable_ssl": true, "thread_pool": 50, "frobnicate": 1},
            "brine": {"pool_sise": 3, "login_rate_limit": 0},
            "rest_tornado": {"port": 8001},
            "external_auth": {"pam": {"ops": [".*"]}},
        }));
        let (text, ok) = report(&c, &Overrides::default());
        assert!(ok, "{text}");
        for needle in [
            "ret_port",
            "= 4606    /etc/salt/master",
            "rest_cherrypy.port",
            "brine.login_rate_limit",
            "rest_cherrypy.thread_pool: accepted and ignored",
            "rest_cherrypy.frobnicate: not implemented by Brine",
            "brine.pool_sise: not a Brine option",
            "rest_tornado (/etc/salt/master): not read",
            "OK: Brine can start",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
        }
        // Options nobody set show as defaults; the ignored key is not listed as honoured.
        let publish = text
            .lines()
            .find(|l| l.trim_start().starts_with("publish_timeout "))
            .unwrap_or_default();
        assert!(publish.ends_with("(default: 30.0)"), "{text}");
        assert!(!text.contains("thread_pool ="), "{text}");
        assert_eq!(shown("brine.redis_password", &json!("x")), "<masked>");
        assert_eq!(shown("rest_cherrypy.port", &json!(8000)), "8000");
    }

    /// The report's line for option `name` (empty if it has none).
    fn line<'t>(text: &'t str, name: &str) -> &'t str {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_default()
    }

    #[test]
    fn one_bad_value_hides_no_other_option() {
        for (bad, culprit) in [
            (
                json!({"rest_cherrypy": {"port": "eighty", "host": "127.0.0.1", "disable_ssl": true,
                                         "webhook_url": "/h"},
                       "brine": {"pool_size": 3}}),
                "rest_cherrypy.port",
            ),
            (
                json!({"rest_cherrypy": {"port": 8000, "ssl_crt": "/nonexistent.crt",
                                         "ssl_key": "/nonexistent.key", "host": "127.0.0.1",
                                         "webhook_url": "/h"},
                       "brine": {"pool_size": 3}}),
                "rest_cherrypy.ssl_crt",
            ),
            (
                json!({"ret_port": "x", "rest_cherrypy": {"port": 8000, "host": "127.0.0.1",
                                                         "disable_ssl": true, "webhook_url": "/h"},
                       "brine": {"pool_size": 3}}),
                "'ret_port'",
            ),
        ] {
            let (text, ok) = report(&cfg(bad), &Overrides::default());
            assert!(!ok, "{text}");
            let errors = text.split("\nErrors:").nth(1).unwrap_or_default();
            assert!(errors.contains(culprit), "{culprit} not in:\n{text}");
            assert!(!text.contains("Warnings:"), "{text}");
            assert!(
                line(&text, "rest_cherrypy.host").contains("= \"127.0.0.1\""),
                "{text}"
            );
            assert!(
                line(&text, "rest_cherrypy.webhook_url").contains("= \"/h\""),
                "{text}"
            );
            assert!(line(&text, "brine.pool_size").contains("= 3"), "{text}");
            assert!(
                line(&text, "utc_jid").contains("(default: false)"),
                "{text}"
            );
        }
        // Every bad value is reported, not only the first.
        let c = cfg(
            json!({"ret_port": "x", "rest_cherrypy": {"port": "eighty", "disable_ssl": true},
                           "brine": {"pool_size": 0}}),
        );
        let (text, ok) = report(&c, &Overrides::default());
        assert!(!ok, "{text}");
        for culprit in ["'ret_port'", "rest_cherrypy.port", "brine.pool_size"] {
            assert!(text.contains(culprit), "{culprit} not in:\n{text}");
        }
    }

    #[test]
    fn only_secrets_are_masked() {
        let c = cfg(
            json!({"token_expire": 3600, "rest_cherrypy": {"port": 8000, "disable_ssl": true}}),
        );
        let (text, ok) = report(&c, &Overrides::default());
        assert!(ok, "{text}");
        assert!(line(&text, "token_expire").contains("= 3600"), "{text}");
        assert!(
            line(&text, "brine.token_cache").ends_with("(default: 10000)"),
            "{text}"
        );
        assert!(
            line(&text, "brine.events_query_token").ends_with("(default: false)"),
            "{text}"
        );
        assert!(!text.contains("<masked>"), "{text}");
        // Text named like a secret, and a private key whatever its name, stay masked.
        for (name, value) in [
            ("brine.redis_password", json!("hunter2")),
            ("brine.api_token", json!("0123abcd")),
            ("brine.client_secret", json!(["s3cret"])),
            ("brine.tls", json!("-----BEGIN PRIVATE KEY-----\nMIIE...")),
        ] {
            assert_eq!(shown(name, &value), "<masked>", "{name}");
        }
        // A key file's path is not its contents.
        assert_eq!(
            shown("rest_cherrypy.ssl_key", &json!("/etc/pki/api.key")),
            "\"/etc/pki/api.key\""
        );
    }

    #[test]
    fn every_option_is_listed_with_its_default_without_a_block() {
        let c = cfg(json!({"rest_cherrypy": {"port": 8000, "disable_ssl": true}}));
        let (text, ok) = report(&c, &Overrides::default());
        assert!(ok, "{text}");
        for (name, default) in [
            ("brine.pool_size", "4"),
            ("brine.pool_queue", "10000"),
            ("brine.connect_timeout", "3.0"),
            ("brine.token_cache", "10000"),
            ("brine.body_max_depth", "64"),
            ("brine.event_ring", "10000"),
            ("brine.event_ring_bytes", "16777216"),
            ("brine.event_ring_seconds", "300.0"),
            ("brine.stream_buffer", "4096"),
            ("brine.stream_buffer_bytes", "67108864"),
            ("brine.events_query_token", "false"),
            ("brine.hook_redact_auth_headers", "true"),
            ("brine.metrics_disable_auth", "false"),
            ("brine.enable_ssh", "false"),
            ("brine.login_rate_limit", "10"),
            ("brine.login_burst", "10"),
            ("brine.login_rate_limit_failures_only", "true"),
            // Constant defaults show their value too.
            ("rest_cherrypy.max_request_body_size", "104857600"),
            ("rest_cherrypy.socket_queue_size", "1024"),
            ("rest_cherrypy.queue_size", "1024"),
            ("rest_cherrypy.webhook_url", "\"/hook\""),
            ("rest_cherrypy.root_prefix", "\"/\""),
            ("rest_cherrypy.host", "\"0.0.0.0\""),
            ("hash_type", "\"sha256\""),
            ("interface", "\"0.0.0.0\""),
            ("transport", "\"zeromq\""),
        ] {
            let l = line(&text, name);
            assert!(
                l.ends_with(&format!("(default: {default})")),
                "{name}: {l:?} in:\n{text}"
            );
        }
        assert!(
            line(&text, "brine.audit_log_file").ends_with("(not set)"),
            "{text}"
        );
        assert!(!text.contains("(default)"), "{text}");
    }

    #[test]
    fn enable_ssh_shows_the_default_netapi_enable_clients_gives() {
        let c = cfg(json!({"rest_cherrypy": {"port": 8000, "disable_ssl": true},
                           "netapi_enable_clients": ["local", "ssh"]}));
        let (text, ok) = report(&c, &Overrides::default());
        assert!(ok, "{text}");
        assert!(
            line(&text, "brine.enable_ssh").ends_with("(default: true)"),
            "{text}"
        );
        let c = cfg(json!({"rest_cherrypy": {"port": 8000, "disable_ssl": true},
                           "netapi_enable_clients": ["ssh"], "brine": {"enable_ssh": false}}));
        let (text, ok) = report(&c, &Overrides::default());
        assert!(ok, "{text}");
        assert!(
            line(&text, "brine.enable_ssh").contains("= false"),
            "{text}"
        );
    }

    #[test]
    fn host_and_port_overrides_are_shown() {
        let c =
            cfg(json!({"rest_cherrypy": {"port": 8000, "host": "10.0.0.1", "disable_ssl": true}}));
        let over = Overrides {
            host: Some([127, 0, 0, 1].into()),
            port: Some(8123),
        };
        let (text, ok) = report(&c, &over);
        assert!(ok, "{text}");
        let port = line(&text, "rest_cherrypy.port");
        assert!(
            port.contains("= 8123") && port.contains("--port") && port.contains("8000"),
            "{text}"
        );
        let host = line(&text, "rest_cherrypy.host");
        assert!(
            host.contains("= \"127.0.0.1\"") && host.contains("--host"),
            "{text}"
        );
        assert!(!text.contains("Warnings:"), "{text}");
        // --port without a rest_cherrypy block serves plain HTTP: the report says so.
        let (text, ok) = report(
            &cfg(json!({})),
            &Overrides {
                host: None,
                port: Some(8123),
            },
        );
        assert!(ok, "{text}");
        assert!(
            line(&text, "rest_cherrypy.disable_ssl").ends_with("(default: true)"),
            "{text}"
        );
    }

    #[test]
    fn errors_make_it_fail() {
        let c = cfg(json!({"rest_cherrypy": {"port": "eighty", "disable_ssl": true}}));
        let (text, ok) = report(&c, &Overrides::default());
        assert!(!ok);
        assert!(
            text.contains("Errors:") && text.contains("rest_cherrypy.port"),
            "{text}"
        );
        let c = cfg(
            json!({"rest_cherrypy": {"port": 8000, "ssl_crt": "/nonexistent.crt",
                                             "ssl_key": "/nonexistent.key"}}),
        );
        let (text, ok) = report(&c, &Overrides::default());
        assert!(!ok && text.contains("ssl_crt"), "{text}");
    }
}
