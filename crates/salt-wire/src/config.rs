//! Master configuration discovery: the master file, its includes, and the options a socket
//! client of the master needs.
//!
//! Salt's rules, reproduced: the main file is `<config dir>/master`; `default_include`
//! (default `master.d/*.conf`) and then `include` are globbed relative to the main file's
//! directory and read in sorted order (nested `include` honoured); included files are
//! deep-merged into each other and the result **replaces top-level keys** of the main file.
//! `sock_dir` is moved to `<cachedir>/.salt-unix` when it is more than 10 characters longer than
//! `cachedir`, and then `root_dir` is put in front of the paths. Every top-level key remembers
//! the file it came from, so a bad value is reported with its file and key. A collecting
//! [`Reader`] goes on past a bad value (its fallback stands in), so that every option is read
//! and every bad one reported.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::event::BusAddr;
use crate::pool::PoolConfig;
use crate::reqchan::Transport;
use crate::yaml::{self, Limits};

/// A configuration problem, always naming the file (and key when there is one).
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A key has a value of the wrong kind or out of range.
    #[error("{file}: option '{key}': {message}")]
    Value {
        /// The file that set the key (the main file when the default was used).
        file: PathBuf,
        /// Dotted key path, e.g. `rest_cherrypy.port`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The file each top-level option came from.
type Sources = HashMap<String, PathBuf>;

/// The merged master configuration with the source file of every top-level key.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// The main master file.
    pub main_file: PathBuf,
    /// Every top-level option as read.
    pub values: Map<String, Value>,
    /// The file each top-level option came from.
    pub sources: HashMap<String, PathBuf>,
    /// Dotted names of the options read through a [`Reader`] so far, in first-read order
    /// (shared by clones): what a program honours is what it asked for (`brine check-config`).
    /// With each, the default its reader fell back to when the option was not set, where the
    /// reader was given one.
    reads: Arc<Mutex<Vec<OptionRead>>>,
}

/// An option's dotted name, and the default its reader fell back to (if it was given one and
/// the option was not set).
type OptionRead = (String, Option<Value>);

fn read_yaml_map(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let text = std::fs::read(path).map_err(|e| ConfigError::File {
        file: path.to_owned(),
        message: e.to_string(),
    })?;
    let text = String::from_utf8(text).map_err(|_| ConfigError::File {
        file: path.to_owned(),
        message: "not valid UTF-8".into(),
    })?;
    let limits = Limits {
        max_depth: 128,
        max_nodes: 10_000_000,
    };
    match yaml::load(&text, limits) {
        Ok(None) => Ok(Map::new()),
        Ok(Some(Value::Object(m))) => Ok(m),
        Ok(Some(_)) => Err(ConfigError::File {
            file: path.to_owned(),
            message: "the top level is not a mapping of options".into(),
        }),
        Err(e) => Err(ConfigError::File {
            file: path.to_owned(),
            message: format!("invalid YAML: {e}"),
        }),
    }
}

/// `salt.utils.dictupdate.update(dest, upd, recursive_update=True, merge_lists=True)`.
fn deep_merge(dest: &mut Map<String, Value>, upd: Map<String, Value>) {
    for (k, v) in upd {
        match (dest.get_mut(&k), v) {
            (Some(Value::Object(d)), Value::Object(u)) => deep_merge(d, u),
            (Some(Value::Array(d)), Value::Array(u)) => {
                for item in u {
                    if !d.contains(&item) {
                        d.push(item);
                    }
                }
            }
            (_, v) => {
                dest.insert(k, v);
            }
        }
    }
}

fn include_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads the files an include list names, relative to `origin`'s directory. Returns the merged
/// options and, per top-level key, the file that set it last.
fn include_config(
    patterns: &[String],
    origin: &Path,
    warn_missing: bool,
    depth: usize,
) -> Result<(Map<String, Value>, Sources), ConfigError> {
    let mut merged = Map::new();
    let mut sources = HashMap::new();
    if depth > 16 {
        return Err(ConfigError::File {
            file: origin.to_owned(),
            message: "includes nest deeper than 16 levels (an include loop?)".into(),
        });
    }
    let base = origin.parent().unwrap_or(Path::new("/"));
    for pattern in patterns {
        let expanded = match pattern.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(rest))
                .unwrap_or_else(|| PathBuf::from(pattern)),
            None => PathBuf::from(pattern),
        };
        let full = if expanded.is_absolute() {
            expanded
        } else {
            base.join(expanded)
        };
        let full_str = full.to_string_lossy().into_owned();
        let mut matches: Vec<PathBuf> = glob::glob(&full_str)
            .map_err(|e| ConfigError::Value {
                file: origin.to_owned(),
                key: "include".into(),
                message: format!("bad pattern {pattern:?}: {e}"),
            })?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        matches.sort();
        if matches.is_empty() && warn_missing {
            tracing::warn!(pattern = %full_str, file = %origin.display(), "include matched no file");
        }
        for file in matches {
            let mut opts = read_yaml_map(&file)?;
            let nested = include_list(opts.get("include"));
            if !nested.is_empty() {
                let (inc, inc_src) = include_config(&nested, &file, true, depth + 1)?;
                for (k, v) in inc {
                    opts.insert(k, v);
                }
                for (k, f) in inc_src {
                    sources.insert(k, f);
                }
            }
            for k in opts.keys() {
                sources.insert(k.clone(), file.clone());
            }
            deep_merge(&mut merged, opts);
        }
    }
    Ok((merged, sources))
}

impl MasterConfig {
    /// Loads `main_file` and everything it includes.
    pub fn load(main_file: &Path) -> Result<MasterConfig, ConfigError> {
        let mut values = read_yaml_map(main_file)?;
        let mut sources: HashMap<String, PathBuf> = values
            .keys()
            .map(|k| (k.clone(), main_file.to_owned()))
            .collect();
        let default_include = match values.get("default_include") {
            Some(v) => include_list(Some(v)),
            None => vec!["master.d/*.conf".to_owned()],
        };
        let include = include_list(values.get("include"));
        for (patterns, warn) in [(default_include, false), (include, true)] {
            let (inc, inc_src) = include_config(&patterns, main_file, warn, 0)?;
            for (k, v) in inc {
                values.insert(k, v);
            }
            sources.extend(inc_src);
        }
        Ok(MasterConfig {
            main_file: main_file.to_owned(),
            values,
            sources,
            reads: Arc::default(),
        })
    }

    /// Builds a configuration from a map (tests, `check-config` dry runs).
    pub fn from_map(main_file: &Path, values: Map<String, Value>) -> MasterConfig {
        let sources = values
            .keys()
            .map(|k| (k.clone(), main_file.to_owned()))
            .collect();
        MasterConfig {
            main_file: main_file.to_owned(),
            values,
            sources,
            reads: Arc::default(),
        }
    }

    /// The same configuration with other values (and the same read record).
    pub fn with_values(&self, values: Map<String, Value>) -> MasterConfig {
        MasterConfig {
            values,
            ..self.clone()
        }
    }

    /// Dotted names of the options read so far, in first-read order.
    pub fn reads(&self) -> Vec<String> {
        self.reads
            .lock()
            .map(|r| r.iter().map(|(name, _)| name.clone()).collect())
            .unwrap_or_default()
    }

    /// The default a typed reader used for an option that was not set (`None` when the
    /// option is set, was not read, or its default depends on other options).
    pub fn default_of(&self, dotted: &str) -> Option<Value> {
        let reads = self.reads.lock().ok()?;
        reads
            .iter()
            .find(|(name, _)| name == dotted)
            .and_then(|(_, d)| d.clone())
    }

    /// The value at a dotted name (`rest_cherrypy.port`), if set.
    pub fn lookup(&self, dotted: &str) -> Option<&Value> {
        let mut parts = dotted.split('.');
        let mut v = self.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p).filter(|v| !v.is_null())?;
        }
        Some(v)
    }

    fn note_read(&self, dotted: String) {
        if let Ok(mut r) = self.reads.lock() {
            if !r.iter().any(|(name, _)| *name == dotted) {
                r.push((dotted, None));
            }
        }
    }

    fn note_default(&self, dotted: &str, default: Value) {
        if let Ok(mut r) = self.reads.lock() {
            if let Some(entry) = r.iter_mut().find(|(name, _)| name == dotted) {
                entry.1 = Some(default);
            }
        }
    }

    /// The file a top-level key came from (the main file for keys nobody set).
    pub fn source(&self, key: &str) -> &Path {
        let top = key.split('.').next().unwrap_or(key);
        self.sources
            .get(top)
            .map(PathBuf::as_path)
            .unwrap_or(&self.main_file)
    }

    /// The value of a top-level key, if set (`null` counts as unset, as in Salt's defaults).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key).filter(|v| !v.is_null())
    }

    /// An error about `key` that names its file.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Value {
            file: self.source(key).to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The bad values a collecting [`Reader`] met, in the order it met them.
#[derive(Debug, Default)]
pub struct ConfigErrors(RefCell<Vec<ConfigError>>);

impl ConfigErrors {
    /// Records an error.
    pub fn push(&self, e: ConfigError) {
        self.0.borrow_mut().push(e);
    }

    /// The errors recorded.
    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0.into_inner()
    }
}

/// Typed reading of option values out of a map, reporting errors against a [`MasterConfig`].
///
/// A plain reader answers the first bad value as an error. A collecting one
/// ([`Reader::collecting`]) records it and answers the option's fallback instead (its default,
/// or unset), so that reading goes on: every option is then recorded as read (what
/// `brine check-config` lists as honoured) and every bad one is reported.
pub struct Reader<'a> {
    cfg: &'a MasterConfig,
    /// The block's options (`None`: an absent block, read as empty).
    map: Option<&'a Map<String, Value>>,
    prefix: String,
    /// Where a collecting reader records bad values.
    errors: Option<&'a ConfigErrors>,
}

impl<'a> Reader<'a> {
    /// Reads the top-level options.
    pub fn top(cfg: &'a MasterConfig) -> Reader<'a> {
        Reader {
            cfg,
            map: Some(&cfg.values),
            prefix: String::new(),
            errors: None,
        }
    }

    /// The same reader, collecting bad values in `errors` instead of answering them as errors.
    pub fn collecting(self, errors: &'a ConfigErrors) -> Reader<'a> {
        Reader {
            errors: Some(errors),
            ..self
        }
    }

    /// The options of a nested block (`brine`), read the way this reader reads. An absent
    /// block reads as empty: every option at its default, and recorded as read. A block that is
    /// not a mapping is an error (a collecting reader records it and reads the block as empty).
    pub fn section(&self, key: &str) -> Result<Reader<'a>, ConfigError> {
        let map = match self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null()) {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => self.reject(key, "must be a mapping of options", None)?,
        };
        Ok(Reader {
            cfg: self.cfg,
            map,
            prefix: format!("{}{key}.", self.prefix),
            errors: self.errors,
        })
    }

    /// Reads the options of a nested block (`rest_cherrypy`), `None` if it is absent. A block
    /// that is not a mapping is an error.
    pub fn block(cfg: &'a MasterConfig, key: &str) -> Result<Option<Reader<'a>>, ConfigError> {
        match cfg.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Reader {
                cfg,
                map: Some(map),
                prefix: format!("{key}."),
                errors: None,
            })),
            Some(_) => Err(cfg.error(key, "must be a mapping of options")),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The raw value of `key`, `null` counting as unset. Every typed reader goes through
    /// here, which records the key as read.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.cfg.note_read(self.name(key));
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// An error about `key`.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.cfg.error(&self.name(key), message)
    }

    /// A bad value of `key`: the error, or for a collecting reader, `fallback` once the error
    /// is recorded.
    pub fn reject<T>(
        &self,
        key: &str,
        message: impl Into<String>,
        fallback: T,
    ) -> Result<T, ConfigError> {
        let e = self.error(key, message);
        match self.errors {
            None => Err(e),
            Some(errors) => {
                errors.push(e);
                Ok(fallback)
            }
        }
    }

    /// Records the default `key` falls back to (it was not set), for the report of what is
    /// honoured, and returns it.
    fn fall_back<T: Clone + Into<Value>>(&self, key: &str, default: T) -> T {
        self.cfg
            .note_default(&self.name(key), default.clone().into());
        default
    }

    /// A string option; numbers are accepted and written out, as Salt would `str()` them.
    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => self.reject(key, "must be a string", None),
        }
    }

    /// A string option with a default (recorded, like the other typed readers').
    pub fn string_or(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        if self.raw(key).is_none() {
            return Ok(self.fall_back(key, default.to_owned()));
        }
        // Set: its value, or the default in place of a bad one a collecting reader recorded.
        Ok(self.string(key)?.unwrap_or_else(|| default.to_owned()))
    }

    /// A boolean option (YAML 1.1 booleans are already booleans; `0`/`1` and the strings
    /// `true`/`false` are accepted too).
    pub fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(key) {
            None => Ok(self.fall_back(key, default)),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                Ok(n.as_i64() == Some(1))
            }
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => self.reject(key, format!("must be true or false, not {s:?}"), default),
            },
            Some(other) => self.reject(key, format!("must be true or false, not {other}"), default),
        }
    }

    /// An unsigned integer option within `min..=max`; numeric strings are accepted.
    pub fn integer(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let v = match self.raw(key) {
            None => return Ok(self.fall_back(key, default)),
            Some(Value::Number(n)) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        match v {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            Some(v) => self.reject(key, format!("{v} is outside {min}..={max}"), default),
            None => self.reject(key, "must be a whole number", default),
        }
    }

    /// A duration in seconds (integer or float), at least zero.
    pub fn seconds(&self, key: &str, default: f64) -> Result<Duration, ConfigError> {
        let v = match self.raw(key) {
            None => Some(self.fall_back(key, default)),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match v {
            Some(v) if (0.0..1.0e9).contains(&v) => Ok(Duration::from_secs_f64(v)),
            _ => self.reject(
                key,
                "must be a number of seconds (0 or more)",
                Duration::from_secs_f64(default),
            ),
        }
    }

    /// A list of strings; a single string is a one-element list.
    pub fn string_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let items = match self.raw(key) {
            None => return Ok(None),
            Some(Value::String(s)) => return Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) => items,
            Some(_) => return self.reject(key, "must be a list of strings", None),
        };
        let list: Option<Vec<String>> = items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect();
        match list {
            Some(list) => Ok(Some(list)),
            None => self.reject(key, "must be a list of strings", None),
        }
    }
}

/// How Brine (or any client process) reaches one master, derived from its configuration.
#[derive(Clone, Debug)]
pub struct MasterOptions {
    /// Host for the request channel (`interface`, with `0.0.0.0` → `127.0.0.1`, `::` → `::1`).
    pub connect_host: String,
    /// `ret_port`.
    pub ret_port: u16,
    /// `transport`.
    pub transport: Transport,
    /// `ipv6`.
    pub ipv6: bool,
    /// `root_dir`.
    pub root_dir: PathBuf,
    /// Effective `sock_dir` (after the rewrite and `root_dir`).
    pub sock_dir: PathBuf,
    /// Effective `cachedir`.
    pub cachedir: PathBuf,
    /// `ipc_mode` is `tcp`.
    pub ipc_tcp: bool,
    /// `tcp_master_pub_port`.
    pub tcp_master_pub_port: u16,
    /// `tcp_master_pull_port`.
    pub tcp_master_pull_port: u16,
    /// `worker_threads` (request workers of the master).
    pub worker_threads: u64,
    /// `timeout` (default wait of `local`).
    pub timeout: Duration,
    /// `gather_job_timeout`.
    pub gather_job_timeout: Duration,
    /// `publish_timeout`.
    pub publish_timeout: Duration,
    /// `rest_timeout` (sync runner wait).
    pub rest_timeout: Duration,
    /// `token_expire`.
    pub token_expire: Duration,
    /// `hash_type`.
    pub hash_type: String,
    /// `netapi_enable_clients`.
    pub netapi_enable_clients: Vec<String>,
    /// `netapi_allow_raw_shell`.
    pub netapi_allow_raw_shell: bool,
    /// `external_auth` (the ACL map, used to compute `perms` at login).
    pub external_auth: Map<String, Value>,
    /// `minion_data_cache`.
    pub minion_data_cache: bool,
    /// `order_masters` (syndic topologies; changes how long `local` waits).
    pub order_masters: bool,
    /// `syndic_wait`.
    pub syndic_wait: Duration,
    /// `nodegroups` (expanded client-side for `tgt_type: nodegroup`).
    pub nodegroups: Map<String, Value>,
    /// `ext_job_cache` (appended to `ret` of every publish, as LocalClient does).
    pub ext_job_cache: String,
    /// `user` the master runs as.
    pub user: Option<String>,
}

/// Applies Salt's `prepend_root_dir` to one path.
fn under_root(root: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if root == Path::new("/") || p.starts_with(root) {
        return p.to_owned();
    }
    root.join(p.strip_prefix("/").unwrap_or(p))
}

impl MasterOptions {
    /// Reads the options from a loaded configuration.
    pub fn from_config(cfg: &MasterConfig) -> Result<MasterOptions, ConfigError> {
        MasterOptions::from_reader(&Reader::top(cfg))
    }

    /// Reads the options with a top-level reader (a collecting one goes on past bad values).
    pub fn from_reader(r: &Reader<'_>) -> Result<MasterOptions, ConfigError> {
        let interface = r.string_or("interface", "0.0.0.0")?;
        let ipv6 = r.boolean("ipv6", false)?;
        let connect_host = match interface.as_str() {
            "0.0.0.0" | "" => "127.0.0.1".to_owned(),
            "::" | "[::]" => "::1".to_owned(),
            other => other.trim_matches(['[', ']']).to_owned(),
        };
        let transport = match r.string_or("transport", "zeromq")?.as_str() {
            "zeromq" | "zmq" => Transport::Zeromq,
            "tcp" => Transport::Tcp,
            other => r.reject(
                "transport",
                format!("{other:?} is not supported by Brine (zeromq or tcp)"),
                Transport::Zeromq,
            )?,
        };
        let ipc_tcp = match r.string_or("ipc_mode", "ipc")?.as_str() {
            "ipc" => false,
            "tcp" => true,
            other => r.reject("ipc_mode", format!("{other:?}: use ipc or tcp"), false)?,
        };
        let port = |key: &str, default: u64| -> Result<u16, ConfigError> {
            r.integer(key, default, 1, 65535).map(|p| p as u16)
        };
        let mut root_dir = PathBuf::from(r.string_or("root_dir", "/")?);
        if !root_dir.is_absolute() {
            root_dir = r.reject("root_dir", "must be an absolute path", PathBuf::from("/"))?;
        }
        let cachedir_raw = r.string_or("cachedir", "/var/cache/salt/master")?;
        let mut sock_raw = r.string_or("sock_dir", "/var/run/salt/master")?;
        if sock_raw.len() > cachedir_raw.len() + 10 {
            sock_raw = Path::new(&cachedir_raw)
                .join(".salt-unix")
                .to_string_lossy()
                .into_owned();
        }
        let mapping = |key: &str| match r.raw(key) {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => r.reject(key, "must be a mapping", Map::new()),
        };
        let external_auth = mapping("external_auth")?;
        let nodegroups = mapping("nodegroups")?;
        Ok(MasterOptions {
            connect_host,
            ret_port: port("ret_port", 4506)?,
            transport,
            ipv6,
            sock_dir: under_root(&root_dir, &sock_raw),
            cachedir: under_root(&root_dir, &cachedir_raw),
            root_dir: root_dir.clone(),
            ipc_tcp,
            tcp_master_pub_port: port("tcp_master_pub_port", 4512)?,
            tcp_master_pull_port: port("tcp_master_pull_port", 4513)?,
            worker_threads: r.integer("worker_threads", 5, 1, 100_000)?,
            timeout: r.seconds("timeout", 5.0)?,
            gather_job_timeout: r.seconds("gather_job_timeout", 10.0)?,
            publish_timeout: r.seconds("publish_timeout", 30.0)?,
            rest_timeout: r.seconds("rest_timeout", 300.0)?,
            token_expire: r.seconds("token_expire", 43200.0)?,
            hash_type: r.string_or("hash_type", "sha256")?,
            netapi_enable_clients: r.string_list("netapi_enable_clients")?.unwrap_or_default(),
            netapi_allow_raw_shell: r.boolean("netapi_allow_raw_shell", false)?,
            external_auth,
            minion_data_cache: r.boolean("minion_data_cache", true)?,
            order_masters: r.boolean("order_masters", false)?,
            syndic_wait: r.seconds("syndic_wait", 5.0)?,
            nodegroups,
            ext_job_cache: r.string_or("ext_job_cache", "")?,
            user: r.string("user")?,
        })
    }

    /// Where to subscribe to the event bus.
    pub fn bus_pub(&self) -> BusAddr {
        if self.ipc_tcp {
            BusAddr::Tcp(self.loopback(), self.tcp_master_pub_port)
        } else {
            BusAddr::Unix(self.sock_dir.join("master_event_pub.ipc"))
        }
    }

    /// Where to fire events.
    pub fn bus_pull(&self) -> BusAddr {
        if self.ipc_tcp {
            BusAddr::Tcp(self.loopback(), self.tcp_master_pull_port)
        } else {
            BusAddr::Unix(self.sock_dir.join("master_event_pull.ipc"))
        }
    }

    fn loopback(&self) -> String {
        if self.ipv6 { "::1" } else { "127.0.0.1" }.to_owned()
    }

    /// A request pool configuration for this master with the given bounds.
    pub fn pool(&self, size: usize, queue: usize, connect_timeout: Duration) -> PoolConfig {
        PoolConfig {
            transport: self.transport,
            host: self.connect_host.clone(),
            port: self.ret_port,
            size,
            queue,
            connect_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("salt-wire-cfg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::create_dir_all(d.join("master.d"));
        d
    }

    fn write(p: &Path, text: &str) {
        if let Err(e) = std::fs::write(p, text) {
            panic!("write {}: {e}", p.display());
        }
    }

    #[test]
    fn includes_replace_top_level_keys_and_remember_their_file() {
        let d = tmpdir("inc");
        write(
            &d.join("master"),
            "ret_port: 4506\nrest_cherrypy:\n  port: 8000\n  debug: yes\ninclude: extra/*.yml\n",
        );
        write(&d.join("master.d/b.conf"), "rest_cherrypy:\n  port: 8001\n");
        write(&d.join("master.d/a.conf"), "timeout: 9\nlist: [1]\n");
        write(&d.join("master.d/c.conf"), "list: [2]\n");
        let _ = std::fs::create_dir_all(d.join("extra"));
        write(&d.join("extra/x.yml"), "gather_job_timeout: 3\n");
        let cfg = match MasterConfig::load(&d.join("master")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        // Whole block replaced: `debug` from the main file is gone.
        assert_eq!(cfg.values["rest_cherrypy"], json!({"port": 8001}));
        assert_eq!(cfg.values["list"], json!([1, 2]));
        assert_eq!(cfg.source("rest_cherrypy.port"), d.join("master.d/b.conf"));
        assert_eq!(cfg.source("gather_job_timeout"), d.join("extra/x.yml"));
        assert_eq!(cfg.source("ret_port"), d.join("master"));
        let opts = match MasterOptions::from_config(&cfg) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(opts.timeout, Duration::from_secs(9));
        assert_eq!(opts.gather_job_timeout, Duration::from_secs(3));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_values_name_file_and_key() {
        let d = tmpdir("bad");
        write(&d.join("master"), "ret_port: 99999\n");
        let cfg = match MasterConfig::load(&d.join("master")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let err = MasterOptions::from_config(&cfg)
            .err()
            .map(|e| e.to_string());
        let text = err.unwrap_or_default();
        assert!(
            text.contains("'ret_port'") && text.contains("master"),
            "{text}"
        );
        write(&d.join("master"), "- not\n- a map\n");
        let err = MasterConfig::load(&d.join("master"))
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("not a mapping"));
        let missing = MasterConfig::load(&d.join("nope"))
            .err()
            .map(|e| e.to_string());
        assert!(missing.unwrap_or_default().contains("nope"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn sock_dir_rewrite_and_root_dir() {
        let d = Path::new("/x/master");
        let mut m = Map::new();
        m.insert("root_dir".into(), json!("/srv/salt"));
        m.insert("cachedir".into(), json!("/c"));
        m.insert("sock_dir".into(), json!("/a/very/long/socket/dir"));
        let o = MasterOptions::from_config(&MasterConfig::from_map(d, m));
        let o = match o {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(o.sock_dir, PathBuf::from("/srv/salt/c/.salt-unix"));
        assert_eq!(o.cachedir, PathBuf::from("/srv/salt/c"));
        let mut m = Map::new();
        m.insert("root_dir".into(), json!("/tmp/r"));
        m.insert("sock_dir".into(), json!("/tmp/r/s"));
        let o = MasterOptions::from_config(&MasterConfig::from_map(d, m));
        assert_eq!(o.map(|o| o.sock_dir).ok(), Some(PathBuf::from("/tmp/r/s")));
    }

    #[test]
    fn the_defaults_readers_fall_back_to_are_recorded() {
        let mut m = Map::new();
        m.insert("worker_threads".into(), json!(7));
        let cfg = MasterConfig::from_map(Path::new("/x/master"), m);
        let r = Reader::top(&cfg);
        assert_eq!(r.integer("worker_threads", 5, 1, 100).ok(), Some(7));
        assert_eq!(r.integer("ret_port", 4506, 1, 65535).ok(), Some(4506));
        assert_eq!(r.boolean("ipv6", false).ok(), Some(false));
        assert_eq!(
            r.seconds("publish_timeout", 2.5).ok(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(r.string("interface").ok(), Some(None));
        // Set options have no default; untyped ones have none to tell.
        assert_eq!(cfg.default_of("worker_threads"), None);
        assert_eq!(cfg.default_of("ret_port"), Some(json!(4506)));
        assert_eq!(cfg.default_of("ipv6"), Some(json!(false)));
        assert_eq!(cfg.default_of("publish_timeout"), Some(json!(2.5)));
        assert_eq!(cfg.default_of("interface"), None);
        assert_eq!(
            cfg.reads(),
            [
                "worker_threads",
                "ret_port",
                "ipv6",
                "publish_timeout",
                "interface"
            ]
        );
    }
}
