//! Lowstate: turning a parsed request body into chunks, checking each chunk the way
//! rest_cherrypy's `exec_lowstate` and Salt's `NetapiClient.run` do, and handing it to its
//! client.
//!
//! Order of checks per chunk (it decides which error a bad chunk gets):
//! the session token is written into the chunk; a `token` must pass Python's `int(x, 16)`
//! (401 `Invalid token`); a forced client (`POST /minions`) is applied; a scalar `arg` becomes a
//! one-element list; then the master must be up (503), `client` must be one of the ten names
//! (400), enabled in `netapi_enable_clients` (400), the chunk must carry `token` or `eauth`
//! (401), and `raw_shell` needs `netapi_allow_raw_shell` (401). Chunks run in order and the
//! first error aborts the request (results of earlier chunks are discarded; their commands ran).

use serde_json::{Map, Value};

use crate::app::{App, SharedApp};
use crate::clients::{self, Client};
use crate::error::ApiError;
use crate::py::{is_python_hex, python_str, truthy};
use crate::stats::ClientLabels;

/// rest_cherrypy's `lowdata_fmt` and the list check of `exec_lowstate`: a non-empty object
/// is one chunk, a list is the chunks, anything else is `400 Lowstates must be a list`.
pub fn shape(body: Option<Value>) -> Result<Vec<Value>, ApiError> {
    match body {
        Some(Value::Object(m)) if !m.is_empty() => Ok(vec![Value::Object(m)]),
        Some(Value::Array(chunks)) => Ok(chunks),
        _ => Err(ApiError::BadRequest("Lowstates must be a list".into())),
    }
}

/// How the endpoint wants its chunks run.
#[derive(Clone, Debug, Default)]
pub struct Exec {
    /// The session's token, written into every chunk (overwriting a chunk's own `token`).
    pub token: Option<String>,
    /// A client forced on every chunk (`POST /minions` forces `local_async`).
    pub client: Option<Client>,
    /// The session's user and eauth backend, for the audit trail.
    pub caller: Option<(String, String)>,
}

/// Most chunks one request may carry.
pub const MAX_CHUNKS: usize = 1000;

/// Runs the chunks in order and collects their results (see the module notes).
pub async fn execute(
    app: &SharedApp,
    chunks: Vec<Value>,
    exec: &Exec,
) -> Result<Vec<Value>, ApiError> {
    if chunks.len() > MAX_CHUNKS {
        return Err(ApiError::BadRequest(format!(
            "A lowstate may hold at most {MAX_CHUNKS} chunks"
        )));
    }
    let mut results = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        // A chunk that is not an object makes Python fail with a TypeError/AttributeError.
        let Value::Object(mut chunk) = chunk else {
            tracing::debug!("lowstate chunk is not an object");
            return Err(ApiError::Internal);
        };
        if let Some(token) = &exec.token {
            chunk.insert("token".into(), Value::String(token.clone()));
        }
        if let Some(token) = chunk.get("token") {
            match token {
                Value::String(t) if is_python_hex(t) => {}
                _ => return Err(ApiError::Unauthorized("Invalid token".into())),
            }
        }
        if let Some(client) = exec.client {
            chunk.insert("client".into(), Value::String(client.name().into()));
        }
        if let Some(arg) = chunk.get_mut("arg") {
            if !arg.is_array() {
                let single = arg.take();
                *arg = Value::Array(vec![single]);
            }
        }
        let client = validate(app, &chunk).await?;
        let audit = crate::audit::Entry::new(exec.caller.as_ref(), client, &chunk);
        let started = std::time::Instant::now();
        let clients::Outcome {
            result: outcome,
            jids,
        } = clients::dispatch(app, client, chunk).await;
        let label = match &outcome {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.status().as_u16().to_string(),
        };
        audit.record(
            jids,
            outcome.as_deref().ok(),
            &label,
            started.elapsed().as_millis() as u64,
        );
        app.stats
            .chunks
            .get_or_create(&ClientLabels {
                client: client.name(),
                outcome: label,
            })
            .inc();
        results.extend(outcome?);
    }
    Ok(results)
}

/// `NetapiClient.run`'s checks, in its order.
async fn validate(app: &App, chunk: &Map<String, Value>) -> Result<Client, ApiError> {
    // salt-api tests for the master's socket file; Brine's equivalent is its live bus
    // subscription (it follows master restarts), given a moment to come up.
    app.bus_ready().await?;
    let name = chunk.get("client");
    let client = name
        .and_then(Value::as_str)
        .and_then(Client::parse)
        .ok_or_else(|| {
            ApiError::BadRequest(format!("Invalid client specified: '{}'", python_str(name)))
        })?;
    let enabled = &app.settings.master.netapi_enable_clients;
    if !enabled.iter().any(|c| c == client.name()) {
        return Err(ApiError::BadRequest(format!(
            "Client disabled: '{}'. Add to 'netapi_enable_clients' master config option to enable.",
            client.name()
        )));
    }
    if !(chunk.contains_key("token") || chunk.contains_key("eauth")) {
        return Err(ApiError::Unauthorized(
            "No authentication credentials given".into(),
        ));
    }
    if chunk.get("raw_shell").is_some_and(truthy) && !app.settings.master.netapi_allow_raw_shell {
        return Err(ApiError::Unauthorized(
            "Raw shell option not allowed.".into(),
        ));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shaping_follows_lowdata_fmt() {
        assert_eq!(shape(Some(json!({"a": 1}))), Ok(vec![json!({"a": 1})]));
        assert_eq!(shape(Some(json!([]))), Ok(vec![]));
        assert_eq!(shape(Some(json!([1, "x"]))), Ok(vec![json!(1), json!("x")]));
        for bad in [
            None,
            Some(json!({})),
            Some(json!("x")),
            Some(json!(0)),
            Some(json!(null)),
        ] {
            assert_eq!(
                shape(bad),
                Err(ApiError::BadRequest("Lowstates must be a list".into()))
            );
        }
    }
}
