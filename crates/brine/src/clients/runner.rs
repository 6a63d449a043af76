//! The `runner` and `runner_async` clients (`RunnerClient.cmd_sync` / `cmd_async`).
//!
//! The chunk becomes the master's runner load `{"fun", "kwarg": {"arg": [...], "kwarg": {...}},
//! <credentials>}`: `arg` strings of the form `name=value` turn into keyword arguments (Salt's
//! `parse_input`, values YAML-coerced), `kwarg` and every leftover key are merged into the
//! keyword arguments. `timeout` and `full_return` belong to the sync client and are not passed
//! on. The master always runs runners asynchronously and answers `{tag, jid}`; the sync client
//! then waits for `salt/run/<jid>/ret` on the event hub (which replays a return that raced
//! ahead of the reply) for `timeout` seconds or the master's `rest_timeout`, else 504.
//!
//! Salt's Python client checks that the runner function exists before sending (it loads the
//! runner modules itself) and answers 500 at once when it does not. Brine asks the master for
//! its runner functions instead (`doc.runner`, with the caller's credentials, so the master's
//! ACL applies) and keeps the names ([`RunnerFunctions`]): a function not among them is
//! answered 500 at once. The first call races the list against the call itself, since for an
//! unknown function the master replies with a jid and its runner process then dies without
//! any event (a Salt bug: `UnboundLocalError` in `mixins.low`). When no list can be had (the
//! caller may not run `doc.runner`), Brine falls back to waiting for the runner's `new` event,
//! which every runner that started fires at once, and answers 500 when it does not come within
//! [`START_TIMEOUT`] (`runner` and `runner_async` alike).
//!
//! One difference from Python remains: Salt's client also drops keyword arguments the runner
//! function does not accept (it can load the function's signature, Brine cannot), so an unknown
//! extra key reaches the runner and it answers with its usage text.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use salt_wire::event::Event;

use serde_json::{json, Map, Value};

use super::missing_fun;
use super::Client;
use crate::app::SharedApp;
use crate::error::ApiError;
use crate::events::hub::{HubMsg, JidWatch};
use crate::py::truthy;
use crate::py::yamlify_arg;

/// How long a runner may take to fire its `new` event before Brine decides it never started.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Keys `RunnerClient._reformat_low` moves to the top level of the master load.
const CRED_KEYS: [&str; 7] = [
    "username", "password", "eauth", "token", "client", "user", "key",
];

/// How long fetching the list may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the master has the runner function `fun` ([`RunnerFunctions`]); `None` when that
/// cannot be known (the list could not be fetched with the credentials of `load`).
async fn function_exists(app: &SharedApp, load: &Map<String, Value>, fun: &str) -> Option<bool> {
    if let Some(known) = app.runner_functions.known(fun) {
        return Some(known);
    }
    let mut ask = Map::new();
    for k in CRED_KEYS {
        if let Some(v) = load.get(k) {
            ask.insert(k.into(), v.clone());
        }
    }
    let creds = serde_json::to_vec(&ask).unwrap_or_default();
    ask.insert("fun".into(), json!("doc.runner"));
    ask.insert("kwarg".into(), json!({"arg": [], "kwarg": {}}));
    let key = crate::coalesce::key(&[b"doc.runner", &creds]);
    let bg = app.clone();
    let set = app
        .runner_functions
        .fetches
        .get(key, move || async move {
            // A task of its own: it runs to its end (and lets go of its job watch) even
            // when every caller stopped waiting for it (their runner started first).
            tokio::spawn(async move {
                let set = fetch_names(&bg, ask).await?;
                bg.runner_functions.store(set.clone());
                Some(set)
            })
            .await
            .ok()
            .flatten()
        })
        .await?;
    Some(set.contains(fun))
}

/// Runs `doc.runner` (the load carries the caller's credentials) and keeps the names.
async fn fetch_names(
    app: &SharedApp,
    load: Map<String, Value>,
) -> Option<Arc<std::collections::HashSet<String>>> {
    let (reply, mut watch, started) =
        match start(app, load, LIST_TIMEOUT, std::future::pending()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = ?e, "cannot list the master's runner functions");
                return None;
            }
        };
    let ev = match started {
        Started::Done(ev) => ev,
        Started::Unknown => return None,
        Started::Running => {
            let ret_tag = format!("{}/ret", reply.get("tag").and_then(Value::as_str)?);
            let deadline = tokio::time::Instant::now() + LIST_TIMEOUT;
            loop {
                match tokio::time::timeout_at(deadline, watch.recv()).await {
                    Ok(Some(HubMsg::Event(ev))) if ev.tag.starts_with(&ret_tag) => break ev,
                    Ok(Some(HubMsg::Event(_))) => {}
                    _ => return None,
                }
            }
        }
    };
    let names = ev.data.get("return")?.as_object()?;
    tracing::debug!(
        functions = names.len(),
        "listed the master's runner functions"
    );
    Some(Arc::new(names.keys().cloned().collect()))
}

/// `salt.utils.args.parse_kwarg`: `name=value` with `name` matching `[^\d\W][\w.-]*` and the
/// value not starting with `=`.
pub fn parse_kwarg(arg: &str) -> Option<(String, String)> {
    let (name, value) = arg.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    if !(first.is_alphabetic() || first == '_') {
        return None;
    }
    if !chars.all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '-') {
        return None;
    }
    if value.starts_with('=') {
        return None;
    }
    // `.*$` without DOTALL: a newline is allowed only as the very last character.
    let value = value.strip_suffix('\n').unwrap_or(value);
    if value.contains('\n') {
        return None;
    }
    Some((name.to_owned(), value.to_owned()))
}

/// `salt.utils.args.parse_input(args, condition=False)`.
pub fn parse_input(args: Vec<Value>) -> (Vec<Value>, Map<String, Value>) {
    let mut positional = Vec::new();
    let mut named = Map::new();
    for arg in args {
        match arg {
            Value::String(s) => match parse_kwarg(&s) {
                Some((k, v)) => {
                    named.insert(k, yamlify_arg(&v));
                }
                None => positional.push(yamlify_arg(&s)),
            },
            Value::Object(mut m) => {
                if m.remove("__kwarg__") == Some(Value::Bool(true)) {
                    named.extend(m);
                } else {
                    positional.push(Value::Object(m));
                }
            }
            other => positional.push(other),
        }
    }
    (positional, named)
}

/// Builds the master's runner load from a chunk (`_reformat_low`). Returns it with the sync
/// client's own `timeout` and `full_return`.
/// A runner call: the master load plus the sync client's own options.
struct RunnerCall {
    load: Map<String, Value>,
    timeout: Option<Value>,
    full_return: bool,
}

fn reformat(client: Client, mut chunk: Map<String, Value>) -> Result<RunnerCall, ApiError> {
    let fun = match chunk.remove("fun") {
        Some(f) => f,
        None => return Err(missing_fun(client)),
    };
    let (timeout, full_return) = if client == Client::Runner {
        (
            chunk.remove("timeout").filter(|v| !v.is_null()),
            chunk.remove("full_return").is_some_and(|v| truthy(&v)),
        )
    } else {
        (None, false)
    };
    let mut load = Map::new();
    load.insert("fun".into(), fun);
    for k in CRED_KEYS {
        if let Some(v) = chunk.remove(k) {
            load.insert(k.into(), v);
        }
    }
    let args = match chunk.remove("arg") {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => vec![other],
    };
    let (positional, mut named) = parse_input(args);
    match chunk.remove("kwarg") {
        None => {}
        Some(Value::Object(kw)) => named.extend(kw),
        // `dict.update(<not a mapping>)` raises in Python: a 500.
        Some(_) => return Err(ApiError::Internal),
    }
    named.extend(chunk);
    load.insert("kwarg".into(), json!({"arg": positional, "kwarg": named}));
    Ok(RunnerCall {
        load,
        timeout,
        full_return,
    })
}

/// `float(timeout)`; anything Python cannot convert is a 500.
fn timeout_secs(v: &Value) -> Result<f64, ApiError> {
    let f = match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match f {
        Some(f) if f.is_finite() => Ok(f.clamp(0.0, 86_400.0 * 7.0)),
        _ => Err(ApiError::Internal),
    }
}

/// How far [`start`] saw the runner get.
enum Started {
    /// Its `new` event came.
    Running,
    /// Its `ret` event came too.
    Done(Arc<Event>),
    /// The bus subscription dropped before either came: the master accepted the job, nothing
    /// more is known.
    Unknown,
}

/// Sends the runner command and waits until the runner has started (its `new` event) or
/// finished, at most `limit`. Returns the master's `{tag, jid}` reply, the watch on the jid,
/// and how far the runner got.
/// `exists` says whether the function is one of the master's (see [`RunnerFunctions`]): a
/// `Some(false)` answers 500 at once, whatever the runner is doing.
async fn start(
    app: &SharedApp,
    load: Map<String, Value>,
    limit: Duration,
    exists: impl std::future::Future<Output = Option<bool>>,
) -> Result<(Value, JidWatch, Started), ApiError> {
    app.bus_ready().await?;
    let reply = app.master.runner(load).await?;
    let Some(jid) = reply.get("jid").and_then(Value::as_str) else {
        tracing::error!("runner reply without a jid");
        return Err(ApiError::Internal);
    };
    super::started(jid);
    let mut watch = app.hub.watch(jid);
    let deadline = tokio::time::Instant::now() + limit.min(START_TIMEOUT);
    let exists = exists.fuse();
    tokio::pin!(exists);
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, watch.recv()) => next,
            known = &mut exists => {
                if known == Some(false) {
                    tracing::warn!(jid, "the master has no such runner function (not in its doc.runner list)");
                    return Err(ApiError::Internal);
                }
                continue;
            }
        };
        match next {
            Err(_) if limit < START_TIMEOUT => {
                // The caller's own timeout is the shorter one: a 504, as in the reference.
                return Err(ApiError::GatewayTimeout);
            }
            Err(_) => {
                tracing::warn!(jid, "runner did not start (unknown function?)");
                return Err(ApiError::Internal);
            }
            Ok(None) => return Err(ApiError::Internal),
            Ok(Some(HubMsg::Gap)) => return Ok((reply, watch, Started::Unknown)),
            Ok(Some(HubMsg::Event(ev))) if ev.tag.ends_with("/ret") => {
                return Ok((reply, watch, Started::Done(ev)))
            }
            Ok(Some(HubMsg::Event(ev))) if ev.tag.ends_with("/new") => {
                return Ok((reply, watch, Started::Running))
            }
            Ok(Some(_)) => {}
        }
    }
}

/// Whether a runner's `ret` event reports that its function does not exist: Salt 3006 and
/// 3007 masters start the job anyway and return the failed `verify_fun` as the job's result,
/// where the Python salt-api, which checks the name itself first, answers 500 (3008 masters
/// never send a `ret` for it; see [`START_TIMEOUT`]).
fn unknown_function(ev: &Event, fun: &str) -> bool {
    ev.data.get("success") == Some(&Value::Bool(false))
        && ev
            .data
            .get("return")
            .and_then(Value::as_str)
            .is_some_and(|r| {
                r.starts_with(&format!("Exception occurred in runner {fun}:"))
                    && r.contains("verify_fun")
            })
}

/// `runner_async`: the master's `{"tag", "jid"}`, once the runner has started.
pub async fn runner_async(app: &SharedApp, chunk: Map<String, Value>) -> Result<Value, ApiError> {
    let call = reformat(Client::RunnerAsync, chunk)?;
    let (reply, _, _) = checked_start(app, call.load, START_TIMEOUT).await?;
    Ok(reply)
}

/// [`start`] for a caller's call: refused at once, without asking the master to run it, when
/// the master's runner list is known and lacks the function; else raced against that list.
async fn checked_start(
    app: &SharedApp,
    load: Map<String, Value>,
    limit: Duration,
) -> Result<(Value, JidWatch, Started), ApiError> {
    let fun = load
        .get("fun")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if app.runner_functions.known(&fun) == Some(false) {
        tracing::warn!(
            fun,
            "the master has no such runner function (not in its doc.runner list)"
        );
        return Err(ApiError::Internal);
    }
    let creds = load.clone();
    let exists = function_exists(app, &creds, &fun);
    start(app, load, limit, exists).await
}

/// `runner`: the runner's return, or the whole `{"tag", "data"}` event with `full_return`.
pub async fn runner(app: &SharedApp, chunk: Map<String, Value>) -> Result<Value, ApiError> {
    let RunnerCall {
        load,
        timeout,
        full_return,
    } = reformat(Client::Runner, chunk)?;
    let wait = match timeout {
        Some(t) => Duration::from_secs_f64(timeout_secs(&t)?),
        None => app.settings.master.rest_timeout,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let fun = load
        .get("fun")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let finish = |ev: Arc<Event>| {
        if unknown_function(&ev, &fun) {
            tracing::warn!(fun, "the master has no such runner function");
            return Err(ApiError::Internal);
        }
        Ok(if full_return {
            json!({"tag": ev.tag, "data": ev.data})
        } else {
            ev.data.get("return").cloned().unwrap_or(Value::Null)
        })
    };
    let (reply, mut watch, started) = checked_start(app, load, wait).await?;
    let jid = reply.get("jid").and_then(Value::as_str).unwrap_or("");
    match started {
        Started::Done(ev) => return finish(ev),
        Started::Unknown => return Err(super::bus_lost(jid)),
        Started::Running => {}
    }
    let tag = reply
        .get("tag")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("salt/run/{jid}"));
    let ret_tag = format!("{tag}/ret");
    loop {
        match tokio::time::timeout_at(deadline, watch.recv()).await {
            Err(_) => {
                tracing::info!(jid, "runner did not return in time");
                return Err(ApiError::GatewayTimeout);
            }
            Ok(None) => return Err(ApiError::Internal),
            Ok(Some(HubMsg::Gap)) => return Err(super::bus_lost(jid)),
            Ok(Some(HubMsg::Event(ev))) if ev.tag.starts_with(&ret_tag) => return finish(ev),
            Ok(Some(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_3006_unknown_function_return_is_recognised() {
        let ev = |ret: &str, success: bool| Event {
            tag: "salt/run/1/ret".into(),
            data: json!({"fun": "runner.nosuch.fun", "success": success, "return": ret}),
        };
        // As a Salt 3006.29 master sends it.
        let text =
            "Exception occurred in runner nosuch.fun: Traceback (most recent call last):\n  \
                    File \"salt/client/mixins.py\", line 341, in low\n    \
                    salt.utils.lazy.verify_fun(self_functions, fun)\n\
                    salt.exceptions.CommandExecutionError: 'nosuch.fun' is not available.\n";
        assert!(unknown_function(&ev(text, false), "nosuch.fun"));
        assert!(!unknown_function(&ev(text, false), "other.fun"));
        assert!(!unknown_function(&ev(text, true), "nosuch.fun"));
        // A runner that exists and raised is a result, as in the reference.
        let raised = "Exception occurred in runner nosuch.fun: Traceback ...\nValueError: x\n";
        assert!(!unknown_function(&ev(raised, false), "nosuch.fun"));
    }

    #[test]
    fn kwarg_regex() {
        assert_eq!(parse_kwarg("k=v"), Some(("k".into(), "v".into())));
        assert_eq!(
            parse_kwarg("a.b-c=1=2"),
            Some(("a.b-c".into(), "1=2".into()))
        );
        assert_eq!(parse_kwarg("k=v\n"), Some(("k".into(), "v".into())));
        assert_eq!(parse_kwarg("k=a\nb"), None);
        assert_eq!(parse_kwarg("x==1"), None);
        assert_eq!(parse_kwarg("1a=2"), None);
        assert_eq!(parse_kwarg("novalue"), None);
    }

    #[test]
    fn reformat_builds_the_master_load() {
        let chunk = json!({"client": "runner", "fun": "test.arg", "arg": ["a", "k=1", {"__kwarg__": true, "z": 2}],
                           "kwarg": {"x": "y"}, "token": "abc", "extra": "e", "timeout": 5, "full_return": true});
        let chunk = chunk.as_object().cloned().unwrap_or_default();
        let r = reformat(Client::Runner, chunk);
        let call = match r {
            Ok(v) => v,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(
            Value::Object(call.load),
            json!({"fun": "test.arg", "token": "abc", "client": "runner",
                   "kwarg": {"arg": ["a"], "kwarg": {"k": 1, "z": 2, "x": "y", "extra": "e"}}})
        );
        assert_eq!(call.timeout, Some(json!(5)));
        assert!(call.full_return);
        let none = reformat(Client::Runner, Map::new());
        assert_eq!(
            none.err(),
            Some(ApiError::BadRequest(
                "runner takes at least 1 argument (0 given)".into()
            ))
        );
    }
}
