//! The `local_batch` client (Salt 3008's `LocalClient.cmd_batch` / `salt.cli.batch.Batch`).
//!
//! 1. Discovery: `test.ping` on the target with the normal gathering rules; minions that do
//!    not answer are left out of the run and of the results.
//! 2. Batch size from `batch` (default `10%`): `N%` of the minions that answered, rounded down
//!    but at least 1; a number is taken as is (at least 1); anything else is a 400.
//! 3. A sliding window, not fixed waves: whenever fewer than `batch` minions run (minions that
//!    finished less than `batch_wait` seconds ago still count), the next ones are published as a
//!    list target. Every sub-batch reuses one jid, as Salt 3008 does.
//! 4. Results: one element per minion return, `{id: return}`, in arrival order; a minion that
//!    does not return within `timeout` + `gather_job_timeout` of its publish gives `{id: {}}`.
//!    With `failhard`, the first failing return (`retcode` > 0) stops the run.
//!
//! Each sub-batch carries the caller's credentials, so the master checks every publish.
//! Unlike Salt's per-sub-batch iterators, Brine does not send `find_job` probes inside a batch:
//! a minion still running its job at the deadline counts as timed out.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Map, Value};
use tokio::time::{Duration, Instant};

use super::local::{discover, matched, LocalCall};
use super::AUTH_KEYS;
use crate::app::SharedApp;
use crate::error::ApiError;
use crate::events::hub::HubMsg;
use crate::jid::gen_jid;
use crate::py::truthy;

/// `salt.utils.batch_state.get_bnum`: the window size for `spec` with `up` minions answering.
pub fn batch_size(spec: &Value, up: usize) -> Result<usize, ApiError> {
    let invalid = |s: &str| {
        ApiError::BadRequest(format!(
            "Invalid batch specification '{s}': must be an integer or percentage string like '10' or '25%'."
        ))
    };
    match spec {
        Value::String(s) if s.contains('%') => {
            let pct: f64 = s.trim().trim_matches('%').parse().map_err(|_| invalid(s))?;
            let res = pct / 100.0 * up as f64;
            if res < 1.0 {
                Ok((res.ceil() as usize).max(1))
            } else {
                Ok(res as usize)
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(|n| n.max(1) as usize)
            .map_err(|_| invalid(s)),
        Value::Number(n) => Ok(n.as_f64().map(|f| f.max(1.0) as usize).unwrap_or(1)),
        other => Err(invalid(&crate::py::python_str(Some(other)))),
    }
}

/// `local_batch`: one result element per minion.
pub async fn local_batch(
    app: &SharedApp,
    mut chunk: Map<String, Value>,
) -> Result<Vec<Value>, ApiError> {
    let spec = match chunk.remove("batch") {
        None | Some(Value::Null) => json!("10%"),
        Some(v) => v,
    };
    let batch_wait = match chunk.remove("batch_wait") {
        None | Some(Value::Null) => Duration::ZERO,
        Some(v) => {
            let secs = match &v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<i64>().ok().map(|i| i as f64),
                _ => None,
            };
            // `int(batch_wait)` in Python: anything else is a 500.
            Duration::from_secs_f64(secs.ok_or(ApiError::Internal)?.clamp(0.0, 86_400.0))
        }
    };
    let failhard = chunk.remove("failhard").is_some_and(|v| truthy(&v));
    chunk.remove("raw");
    let call = LocalCall::parse(app, chunk.clone())?;

    // 1. Discovery.
    let Some(found) = discover(app, &chunk, "test.ping").await? else {
        return Ok(Vec::new());
    };
    let up: Vec<String> = found
        .gathered
        .returns
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    if up.is_empty() {
        return Ok(Vec::new());
    }
    let window = batch_size(&spec, up.len())?;

    // 3. The sliding window, all sub-batches under one jid.
    let jid = gen_jid(app.settings.utc_jid);
    let mut watch = app.hub.watch(&jid);
    let ret_prefix = format!("salt/job/{jid}/ret/");
    let mut kwargs = Map::new();
    for k in AUTH_KEYS {
        if let Some(v) = chunk.get(k) {
            kwargs.insert(k.into(), v.clone());
        }
    }
    kwargs.insert(
        "gather_job_timeout".into(),
        json!(call.gather_job_timeout.as_secs()),
    );
    kwargs.insert("yield_pub_data".into(), json!(true));
    kwargs.insert("raw".into(), json!(false));
    let limit = call.timeout + call.gather_job_timeout;
    let mut pending: VecDeque<String> = up.into();
    let mut active: HashMap<String, Instant> = HashMap::new();
    let mut cooling: Vec<Instant> = Vec::new();
    let mut results = Vec::new();
    loop {
        let now = Instant::now();
        let expired: Vec<String> = active
            .iter()
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            active.remove(&id);
            results.push(json!({ id: {} }));
            cooling.push(now + batch_wait);
        }
        cooling.retain(|t| *t > now);
        let free = window.saturating_sub(active.len() + cooling.len());
        if free > 0 && !pending.is_empty() {
            let ids: Vec<String> = (0..free).filter_map(|_| pending.pop_front()).collect();
            let mut load = Map::new();
            load.insert("tgt".into(), json!(ids));
            load.insert("fun".into(), call.fun.clone());
            load.insert("arg".into(), Value::Array(call.arg.clone()));
            load.insert("tgt_type".into(), json!("list"));
            load.insert("ret".into(), json!(call.ret));
            load.insert("jid".into(), json!(jid));
            load.insert("kwargs".into(), Value::Object(kwargs.clone()));
            let reply = app.master.publish(load).await?;
            super::started(&jid);
            let published = matched(&reply).map(|(_, m, _)| m).unwrap_or_default();
            for id in ids {
                if published.contains(&id) {
                    active.insert(id, now + limit);
                } else {
                    // The master no longer targets it (key removed meanwhile).
                    results.push(json!({ id: {} }));
                }
            }
            continue;
        }
        if active.is_empty() {
            if pending.is_empty() {
                break;
            }
            // Only cooling down: wait for the first slot.
            if let Some(first) = cooling.iter().min() {
                tokio::time::sleep_until(*first).await;
            }
            continue;
        }
        let mut wake = active.values().min().copied().unwrap_or(now + limit);
        if let Some(first) = cooling.iter().min() {
            wake = wake.min(*first);
        }
        tokio::select! {
            msg = watch.recv() => match msg {
                Some(HubMsg::Event(ev)) => {
                    let Some(id) = ev.tag.strip_prefix(&ret_prefix) else { continue };
                    let Some(ret) = ev.data.get("return") else { continue };
                    if active.remove(id).is_none() {
                        continue;
                    }
                    results.push(json!({ id: ret }));
                    cooling.push(Instant::now() + batch_wait);
                    let failed = ev.data.get("retcode").and_then(Value::as_i64).is_some_and(|rc| rc > 0)
                        || ev.data.get("success") == Some(&Value::Bool(false));
                    if failhard && failed {
                        tracing::info!(jid, "batch halted by failhard");
                        break;
                    }
                }
                Some(HubMsg::Gap) => return Err(super::bus_lost(&jid)),
                None => break,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_follow_salt() {
        assert_eq!(batch_size(&json!("50%"), 4), Ok(2));
        assert_eq!(batch_size(&json!("10%"), 4), Ok(1));
        assert_eq!(batch_size(&json!("33%"), 10), Ok(3));
        assert_eq!(batch_size(&json!("2"), 4), Ok(2));
        assert_eq!(batch_size(&json!("0"), 4), Ok(1));
        assert_eq!(batch_size(&json!(2), 4), Ok(2));
        assert_eq!(batch_size(&json!(1.5), 4), Ok(1));
        assert!(matches!(
            batch_size(&json!("1.5"), 4),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            batch_size(&json!("x%"), 4),
            Err(ApiError::BadRequest(_))
        ));
    }
}
