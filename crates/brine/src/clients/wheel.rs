//! The `wheel` and `wheel_async` clients (`WheelClient.cmd_sync` / `cmd_async`).
//!
//! `wheel` sends the whole chunk as the master's wheel load (the master runs wheel functions
//! synchronously and answers `{"tag", "data"}`, which rest_cherrypy returns as is).
//!
//! `wheel_async` in salt-api forks a child that makes the same synchronous call and answers at
//! once with a jid the *API* generated, one the master then replaces with its own:
//! the returned jid never appears on the bus. Brine keeps that answer shape (clients read
//! `jid`/`tag`) and runs the call in a background task, but refuses a token the master does not
//! know before answering, and waits up to 3 s for the master to refuse eauth credentials (a
//! `/run` chunk with a wrong password), instead of answering 200 with a jid to anyone as
//! salt-api does (CVE-2021-25281 class).

use serde_json::{json, Map, Value};

use super::missing_fun;
use super::Client;
use crate::app::SharedApp;
use crate::error::ApiError;
use crate::jid::gen_jid;

/// `wheel`: the master's `{"tag", "data": {"fun", "jid", "tag", "user", "return", "success"}}`.
pub async fn wheel(app: &SharedApp, chunk: Map<String, Value>) -> Result<Value, ApiError> {
    if !chunk.contains_key("fun") {
        return Err(missing_fun(Client::Wheel));
    }
    app.master
        .wheel(chunk, app.settings.master.rest_timeout)
        .await
}

/// `wheel_async`: `{"tag": "salt/wheel/<jid>", "jid": "<jid>"}` at once; the call runs in the
/// background.
pub async fn wheel_async(app: &SharedApp, chunk: Map<String, Value>) -> Result<Value, ApiError> {
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
    super::started(&jid);
    let tag = format!("salt/wheel/{jid}");
    let bg = app.clone();
    // The call runs in the background; its first moments are awaited so that credentials the
    // master refuses (a wrong eauth password in a `/run` chunk) get a 401, not a jid.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let timeout = bg.settings.master.rest_timeout;
        let result = bg.master.wheel(chunk, timeout).await;
        if let Err(e) = &result {
            tracing::warn!(error = ?e, "background wheel_async call failed");
        }
        let _ = done_tx.send(result);
    });
    match tokio::time::timeout(AUTH_WAIT, done_rx).await {
        Ok(Ok(Err(e @ ApiError::Unauthorized(_)))) => Err(e),
        _ => Ok(json!({"tag": tag, "jid": jid})),
    }
}

/// How long `wheel_async` waits for the master to refuse the caller's credentials before it
/// answers with a jid (eauth checks take milliseconds; a slow PAM or LDAP backend may take
/// longer, and then the refusal only shows in the master's log, as with salt-api).
const AUTH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
