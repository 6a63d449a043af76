//! The `local` and `local_async` clients: publish an execution-module job and, for `local`,
//! gather the returns with Salt's own rules so results equal the `salt` CLI's and
//! rest_cherrypy's (`LocalClient.cmd` → `get_iter_returns`).
//!
//! Brine makes the jid and registers with the event hub **before** publishing, then drives
//! Salt's gathering rules ([`super::gather`]): one `saltutil.find_job` probe per round goes to
//! all pending minions at once, with the caller's credentials, so probes never multiply with
//! minions. Minions that never answered get Salt's "Minion did not return" text
//! (`[Not connected]` when the master's `minions.connected` does not list them, else
//! `[No response]`), and ids the publish named but that produced nothing at all are `false`.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::gather::{Gather, Gathered, Step, Timing};
use crate::app::SharedApp;
use crate::error::ApiError;
use crate::events::hub::{HubMsg, JidWatch};
use crate::jid::{gen_jid, is_jid};
use crate::py::{string_list, truthy};

/// A parsed `local` chunk (`LocalClient.cmd`'s parameters; everything else is `kwargs`).
pub(super) struct LocalCall {
    pub(super) tgt: Value,
    pub(super) fun: Value,
    pub(super) arg: Vec<Value>,
    pub(super) tgt_type: String,
    pub(super) ret: String,
    pub(super) jid: String,
    pub(super) timeout: Duration,
    pub(super) gather_job_timeout: Duration,
    pub(super) full_return: bool,
    /// Every other chunk key, credentials included: travels as the publish `kwargs`.
    pub(super) kwargs: Map<String, Value>,
}

/// `LocalClient._get_timeout`: an int or a numeric string, anything else the master default.
fn get_timeout(v: Option<&Value>, default: Duration) -> Duration {
    let secs = match v {
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.as_i64(),
        Some(Value::Bool(b)) => Some(i64::from(*b)),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) => Duration::from_secs(s.clamp(0, 86_400 * 7) as u64),
        None => default,
    }
}

/// `int(gather_job_timeout)`; a value Python's `int()` refuses is a 500.
fn gather_timeout(v: Option<&Value>, default: Duration) -> Result<Duration, ApiError> {
    let secs = match v {
        None => return Ok(default),
        Some(Value::Number(n)) => n.as_f64().map(|f| f.trunc()),
        Some(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok().map(|i| i as f64),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() => Ok(Duration::from_secs(s.clamp(0.0, 86_400.0) as u64)),
        _ => Err(ApiError::Internal),
    }
}

fn value_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => crate::py::python_str(Some(&other)),
    }
}

impl LocalCall {
    pub(super) fn parse(
        app: &SharedApp,
        mut chunk: Map<String, Value>,
    ) -> Result<LocalCall, ApiError> {
        let opts = &app.settings.master;
        // `LocalClient.cmd(tgt, fun, ...)` without them is a TypeError in Python: a 500.
        let tgt = chunk.remove("tgt").ok_or(ApiError::Internal)?;
        let fun = chunk.remove("fun").ok_or(ApiError::Internal)?;
        let mut arg = match chunk.remove("arg") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(other) => vec![other],
        };
        // `condition_input`: ints that look like jids travel as strings.
        for a in arg.iter_mut() {
            if let Value::Number(n) = a {
                let s = n.to_string();
                if is_jid(&s) {
                    *a = Value::String(s);
                }
            }
        }
        if let Some(Value::Object(kw)) = chunk.remove("kwarg") {
            if !kw.is_empty() {
                let mut m = Map::new();
                m.insert("__kwarg__".into(), Value::Bool(true));
                m.extend(kw);
                arg.push(Value::Object(m));
            }
        }
        let tgt_type = match chunk.remove("tgt_type") {
            None | Some(Value::Null) => "glob".to_owned(),
            Some(v) => value_text(v),
        };
        let mut ret = chunk.remove("ret").map(value_text).unwrap_or_default();
        if !opts.ext_job_cache.is_empty() {
            ret = if ret.is_empty() {
                opts.ext_job_cache.clone()
            } else {
                format!("{ret},{}", opts.ext_job_cache)
            };
        }
        let jid = match chunk.remove("jid") {
            Some(v) if truthy(&v) => value_text(v),
            _ => gen_jid(app.settings.utc_jid),
        };
        let timeout = get_timeout(chunk.remove("timeout").as_ref(), opts.timeout);
        let full_return = chunk.remove("full_return").is_some_and(|v| truthy(&v));
        let gather_job_timeout =
            gather_timeout(chunk.get("gather_job_timeout"), opts.gather_job_timeout)?;
        let (tgt, tgt_type) = resolve_nodegroup(app, tgt, tgt_type);
        Ok(LocalCall {
            tgt,
            fun,
            arg,
            tgt_type,
            ret,
            jid,
            timeout,
            gather_job_timeout,
            full_return,
            kwargs: chunk,
        })
    }

    pub(super) fn publish_load(&self) -> Map<String, Value> {
        let mut load = Map::new();
        load.insert("tgt".into(), self.tgt.clone());
        load.insert("fun".into(), self.fun.clone());
        load.insert("arg".into(), Value::Array(self.arg.clone()));
        load.insert("tgt_type".into(), self.tgt_type.clone().into());
        load.insert("ret".into(), self.ret.clone().into());
        load.insert("jid".into(), self.jid.clone().into());
        if !self.kwargs.is_empty() {
            load.insert("kwargs".into(), Value::Object(self.kwargs.clone()));
        }
        load
    }
}

/// `tgt_type: nodegroup` is resolved by the client (Salt's `LocalClient._prep_pub`), from the
/// master's `nodegroups`, into a compound target.
fn resolve_nodegroup(app: &SharedApp, tgt: Value, tgt_type: String) -> (Value, String) {
    if tgt_type != "nodegroup" {
        return (tgt, tgt_type);
    }
    let Some(name) = tgt.as_str() else {
        return (tgt, tgt_type);
    };
    match app.settings.master.nodegroups.get(name) {
        Some(Value::String(expr)) => (Value::String(expr.clone()), "compound".into()),
        Some(Value::Array(ids)) => {
            let ids: Vec<String> = ids
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            (
                Value::String(format!("L@{}", ids.join(","))),
                "compound".into(),
            )
        }
        _ => (tgt, tgt_type),
    }
}

/// The publish reply's minion list; `None` when the target matched nothing.
pub(super) fn matched(reply: &Value) -> Option<(String, Vec<String>, Vec<String>)> {
    let jid = reply.get("jid")?.as_str()?.to_owned();
    let minions = string_list(reply.get("minions"));
    if minions.is_empty() {
        return None;
    }
    Some((jid, minions, string_list(reply.get("missing"))))
}

/// `local_async` (`LocalClient.run_job`): `{"jid", "minions"}`, or `{}` when nothing matched.
pub async fn local_async(app: &SharedApp, chunk: Map<String, Value>) -> Result<Value, ApiError> {
    let call = LocalCall::parse(app, chunk)?;
    let reply = app.master.publish(call.publish_load()).await?;
    Ok(match matched(&reply) {
        Some((jid, minions, _)) => {
            super::started(&jid);
            json!({"jid": jid, "minions": minions})
        }
        None => json!({}),
    })
}

/// `local` (`LocalClient.cmd`): the minions' returns.
pub async fn local(app: &SharedApp, chunk: Map<String, Value>) -> Result<Value, ApiError> {
    let call = LocalCall::parse(app, chunk)?;
    match run_and_gather(app, &call).await? {
        None => Ok(json!({})),
        Some(job) => Ok(cmd_result(app, &call, job).await),
    }
}

/// Runs `fun` without arguments on the chunk's target (Salt's discovery step of batch and
/// subset runs), with the chunk's credentials and timeouts. `None`: nothing matched.
pub(super) async fn discover(
    app: &SharedApp,
    chunk: &Map<String, Value>,
    fun: &str,
) -> Result<Option<Job>, ApiError> {
    let mut probe = chunk.clone();
    probe.insert("fun".into(), json!(fun));
    for k in ["arg", "kwarg", "jid", "full_return", "ret"] {
        probe.remove(k);
    }
    let call = LocalCall::parse(app, probe)?;
    run_and_gather(app, &call).await
}

/// A published job and what its minions returned.
pub(super) struct Job {
    /// The job id.
    pub(super) jid: String,
    /// The minions the publish named.
    pub(super) minions: Vec<String>,
    /// What came back.
    pub(super) gathered: Gathered,
}

/// Publishes `call` (registered for its events first) and gathers the returns with Salt's
/// rules. `None` when the target matched no minion.
pub(super) async fn run_and_gather(
    app: &SharedApp,
    call: &LocalCall,
) -> Result<Option<Job>, ApiError> {
    // Salt's LocalClient refuses to publish without its event subscription, too.
    app.bus_ready().await?;
    let mut watch = app.hub.watch(&call.jid);
    let reply = app.master.publish(call.publish_load()).await?;
    let Some((jid, minions, missing)) = matched(&reply) else {
        return Ok(None);
    };
    super::started(&jid);
    if jid != call.jid {
        // The master chose another jid (a passed jid is normally kept): follow it.
        tracing::warn!(ours = %call.jid, theirs = %jid, "master replaced the job id");
        watch = app.hub.watch(&jid);
    }
    let timing = Timing::of(call.timeout, call.gather_job_timeout, &app.settings.master);
    let probes = Probes {
        kwargs: &call.kwargs,
        gather_job_timeout: call.gather_job_timeout,
    };
    let g = Gather::new(&jid, &minions, missing, timing, Instant::now());
    let gathered = gather(app, &probes, g, watch, &mut |_| {}).await?;
    Ok(Some(Job {
        jid,
        minions,
        gathered,
    }))
}

/// `LocalClient.cmd`'s result: each minion's return (or full return), Salt's "did not return"
/// text for the silent ones, `false` for ids that produced nothing at all (and for the silent
/// ones too, not for named ids without a key, when the master is older than 3008,
/// [`Gathered::bare_announce`]).
pub(super) async fn cmd_result(app: &SharedApp, call: &LocalCall, job: Job) -> Value {
    let Job {
        jid,
        minions,
        gathered,
    } = job;
    // A master before 3008 comes with a LocalClient that gives the texts only to the ids the
    // target named that have no key, and answers `false` (below) for the silent minions.
    let failed: Vec<String> = if gathered.bare_announce {
        gathered.missing.clone()
    } else {
        gathered.failed.clone()
    };
    let reasons = if failed.is_empty() {
        HashSet::new()
    } else {
        not_connected(app, &call.kwargs, &failed).await
    };
    let mut out = Map::new();
    for (id, data) in gathered.returns {
        out.insert(
            id,
            if call.full_return {
                data
            } else {
                data.get("ret").cloned().unwrap_or(json!({}))
            },
        );
    }
    for id in failed {
        let text = if reasons.contains(&id) {
            "Minion did not return. [Not connected]".to_owned()
        } else {
            format!(
                "Minion did not return. [No response]\nThe minions may not have all finished running \
                 and any remaining minions will return upon completion. To look up the return data \
                 for this job later, run the following command:\n\nsalt-run jobs.lookup_jid {jid}"
            )
        };
        let data = json!({"out": "no_return", "ret": text, "retcode": 1});
        out.insert(
            id,
            if call.full_return {
                data
            } else {
                data["ret"].clone()
            },
        );
    }
    for id in minions {
        out.entry(id).or_insert(Value::Bool(false));
    }
    Value::Object(out)
}

/// What a gathering's `saltutil.find_job` probes carry: the publish `kwargs` of the caller
/// (its credentials), and the `gather_job_timeout` they announce.
pub struct Probes<'a> {
    pub kwargs: &'a Map<String, Value>,
    pub gather_job_timeout: Duration,
}

/// Drives Salt's gathering rules ([`Gather`]) with the job's events and probes; `progress`
/// sees the gathering after each event.
pub async fn gather(
    app: &SharedApp,
    probes: &Probes<'_>,
    mut g: Gather,
    mut watch: JidWatch,
    progress: &mut (dyn FnMut(&Gather) + Send),
) -> Result<Gathered, ApiError> {
    let jid = g.jid().to_owned();
    let jid = jid.as_str();
    let mut probe: Option<JidWatch> = None;
    loop {
        let wake = match g.step(Instant::now()) {
            Step::Done => break,
            Step::Probe(pending) => {
                probe = find_job(app, probes, jid, pending).await;
                continue;
            }
            Step::Wait(at) => at,
        };
        tokio::select! {
            msg = watch.recv() => match msg {
                Some(HubMsg::Event(ev)) => {
                    g.on_event(&ev, Instant::now());
                    progress(&g);
                }
                // Returns published while the subscription was down are lost: do not report
                // those minions as silent.
                Some(HubMsg::Gap) => return Err(super::bus_lost(jid)),
                None => break,
            },
            msg = async {
                match probe.as_mut() {
                    Some(p) => p.recv().await,
                    None => std::future::pending().await,
                }
            } => match msg {
                Some(HubMsg::Event(ev)) => g.on_probe_event(&ev, Instant::now()),
                Some(HubMsg::Gap) => {}
                None => probe = None,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    Ok(g.finish())
}

/// Publishes one `saltutil.find_job` probe to `pending` and returns the watch on its jid.
pub(super) async fn find_job(
    app: &SharedApp,
    probes: &Probes<'_>,
    jid: &str,
    pending: Vec<String>,
) -> Option<JidWatch> {
    let probe_jid = gen_jid(app.settings.utc_jid);
    let watch = app.hub.watch(&probe_jid);
    let mut load = Map::new();
    load.insert("tgt".into(), json!(pending));
    load.insert("fun".into(), json!("saltutil.find_job"));
    load.insert("arg".into(), json!([jid]));
    load.insert("tgt_type".into(), json!("list"));
    load.insert("ret".into(), json!(""));
    load.insert("jid".into(), json!(probe_jid));
    let mut kwargs = probes.kwargs.clone();
    kwargs.insert(
        "gather_job_timeout".into(),
        json!(probes.gather_job_timeout.as_secs()),
    );
    load.insert("kwargs".into(), Value::Object(kwargs));
    match app.master.publish(load).await {
        Ok(reply) if matched(&reply).is_some() => Some(watch),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = ?e, jid, "find_job probe failed");
            None
        }
    }
}

/// Ids among `failed` that the master does not see connected (`minions.connected`), asked with
/// the caller's own credentials; concurrent calls of one caller share one question
/// ([`crate::coalesce`]). Empty when the master's answer is unavailable.
async fn not_connected(
    app: &SharedApp,
    kwargs: &Map<String, Value>,
    failed: &[String],
) -> HashSet<String> {
    if !app.settings.master.minion_data_cache {
        return HashSet::new();
    }
    let shared = app.clone();
    let mut load = Map::new();
    load.insert("fun".into(), json!("minions.connected"));
    for k in super::AUTH_KEYS {
        if let Some(v) = kwargs.get(k) {
            load.insert(k.into(), v.clone());
        }
    }
    // The load is the question and the caller's credentials: it is the key.
    let key = crate::coalesce::key(&[&serde_json::to_vec(&load).unwrap_or_default()]);
    let connected = app
        .connected_minions
        .get(key, move || async move {
            let timeout = shared.settings.master.publish_timeout;
            let reply = shared.master.wheel(load, timeout).await.ok()?;
            match reply.pointer("/data/return").and_then(Value::as_array) {
                Some(list) if !list.is_empty() => Some(
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                ),
                _ => None,
            }
        })
        .await;
    let Some(connected) = connected else {
        return HashSet::new();
    };
    failed
        .iter()
        .filter(|id| !connected.contains(id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_salts_coercions() {
        let d = Duration::from_secs(5);
        assert_eq!(get_timeout(Some(&json!(2)), d), Duration::from_secs(2));
        assert_eq!(get_timeout(Some(&json!("3")), d), Duration::from_secs(3));
        assert_eq!(get_timeout(Some(&json!(2.5)), d), d);
        assert_eq!(get_timeout(Some(&json!("x")), d), d);
        assert_eq!(get_timeout(Some(&json!(true)), d), Duration::from_secs(1));
        assert_eq!(
            gather_timeout(Some(&json!("x")), d),
            Err(ApiError::Internal)
        );
        assert_eq!(
            gather_timeout(Some(&json!(2.9)), d),
            Ok(Duration::from_secs(2))
        );
    }

    #[test]
    fn publish_reply_shapes() {
        let ok = json!({"jid": "1", "minions": ["m1"], "missing": []});
        assert_eq!(matched(&ok), Some(("1".into(), vec!["m1".into()], vec![])));
        let none = json!({"jid": null, "minions": [], "error": "Master could not resolve minions for target x"});
        assert_eq!(matched(&none), None);
    }
}
