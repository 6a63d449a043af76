//! The `local_subset` client (`LocalClient.cmd_subset`): run a function on at most `subset`
//! (default 3; the legacy key `sub` wins) minions of the target that have it.
//!
//! As Salt does it: a full `sys.list_functions` gathering on the target first, then the ids in
//! random order, keeping those whose function list contains `fun` until enough are chosen,
//! then a normal `local` call on those ids as a list target. Minions that did not answer the
//! first step are skipped; none left means no minion matched (`{}`).

use rand::seq::SliceRandom;
use serde_json::{json, Map, Value};

use super::local::{cmd_result, discover, run_and_gather, LocalCall};
use crate::app::SharedApp;
use crate::error::ApiError;

/// How many minions to pick (`sub` over `subset`, default 3).
fn subset_size(chunk: &mut Map<String, Value>) -> Result<usize, ApiError> {
    let sub = chunk.remove("sub");
    let subset = chunk.remove("subset");
    let v = sub.or(subset);
    match v {
        None => Ok(3),
        Some(Value::Number(n)) => n.as_u64().map(|n| n as usize).ok_or(ApiError::Internal),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| ApiError::Internal),
        Some(_) => Err(ApiError::Internal),
    }
}

/// Whether a `sys.list_functions` return lists `fun`.
fn has_function(ret: &Value, fun: &Value) -> bool {
    let Some(fun) = fun.as_str() else {
        return false;
    };
    match ret {
        Value::Array(list) => list.iter().any(|f| f.as_str() == Some(fun)),
        Value::Object(map) => map.contains_key(fun),
        _ => false,
    }
}

/// `local_subset`.
pub async fn local_subset(
    app: &SharedApp,
    mut chunk: Map<String, Value>,
) -> Result<Value, ApiError> {
    let size = subset_size(&mut chunk)?;
    chunk.remove("cli");
    let call = LocalCall::parse(app, chunk.clone())?;
    // Step 1: which minions of the target have the function.
    let Some(listed) = discover(app, &chunk, "sys.list_functions").await? else {
        return Ok(json!({}));
    };
    let mut candidates: Vec<(String, Value)> = listed
        .gathered
        .returns
        .into_iter()
        .map(|(id, data)| (id, data.get("ret").cloned().unwrap_or(Value::Null)))
        .collect();
    candidates.shuffle(&mut rand::rng());
    let chosen: Vec<Value> = candidates
        .into_iter()
        .filter(|(_, ret)| has_function(ret, &call.fun))
        .take(size)
        .map(|(id, _)| Value::String(id))
        .collect();
    // Step 2: the call itself, on the chosen ids.
    let mut target = chunk;
    target.insert("tgt".into(), Value::Array(chosen));
    target.insert("tgt_type".into(), json!("list"));
    let call = LocalCall::parse(app, target)?;
    match run_and_gather(app, &call).await? {
        None => Ok(json!({})),
        Some(job) => Ok(cmd_result(app, &call, job).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_wins_over_subset_and_functions_are_looked_up() {
        let mut c = json!({"sub": 1, "subset": 2})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(subset_size(&mut c), Ok(1));
        let mut c = Map::new();
        assert_eq!(subset_size(&mut c), Ok(3));
        assert!(has_function(
            &json!(["test.ping", "test.arg"]),
            &json!("test.ping")
        ));
        assert!(!has_function(
            &json!("Minion did not return."),
            &json!("test.ping")
        ));
    }
}
