//! The `wheel` and `wheel_async` clients (`WheelClient.cmd_sync` / `cmd_async`).
//!
//! `wheel` sends the whole chunk as the master's wheel load (the master runs wheel functions
//! synchronously and answers `{"tag", "data"}`, which rest_cherrypy returns as is).
//!
//! `wheel_async` in salt-api forks a child that makes the same synchronous call and answers at
//! once with a jid the *API* generated, one the master then replaces with its own (spec §4.4):
//! the returned jid never appears on the bus. Brine keeps that answer shape (clients read
//! `jid`/`tag`) and runs the call in a background task, but refuses a token the master does not
//! know before answering, instead of answering 200 to anyone (issue 8: CVE-2021-25281 class).

use serde_json::{json, Map, Value};

use super::missing_fun;
use crate::app::App;
use crate::http::error::ApiError;
use crate::jid::gen_jid;
use crate::lowstate::Client;
use std::sync::Arc;

/// `wheel`: the master's `{"tag", "data": {"fun", "jid", "tag", "user", "return", "success"}}`.
pub async fn wheel(app: &App, chunk: Map<String, Value>) -> Result<Value, ApiError> {
    if !chunk.contains_key("fun") {
        return Err(missing_fun(Client::Wheel));
    }
    app.master
        .wheel(chunk, app.settings.master.rest_timeout)
        .await
}

/// `wheel_async`: `{"tag": "salt/wheel/<jid>", "jid": "<jid>"}` at once; the call runs in the
/// background.
pub async fn wheel_async(app: &App, chunk: Map<String, Value>) -> Result<Value, ApiError> {
    if !chunk.contains_key("fun") {
        return Err(missing_fun(Client::WheelAsync));
    }
    if let Some(Value::String(token)) = chunk.get("token") {
        if app.auth.check(&app.master, token).await?.is_none() {
            return Err(ApiError::Unauthorized(
                "Authentication failure of type \"token\" occurred.".into(),
            ));
        }
    }
    let jid = gen_jid(app.settings.utc_jid);
    let tag = format!("salt/wheel/{jid}");
    let spawn_app: Option<Arc<App>> = app.self_ref();
    if let Some(bg) = spawn_app {
        let timeout = bg.settings.master.rest_timeout;
        tokio::spawn(async move {
            if let Err(e) = bg.master.wheel(chunk, timeout).await {
                tracing::warn!(error = ?e, "background wheel_async call failed");
            }
        });
    }
    Ok(json!({"tag": tag, "jid": jid}))
}
