//! The `ssh` client. salt-api runs salt-ssh inside its own process; Brine never builds a
//! command line or starts a process from request data. It asks the master to run salt-ssh
//! through the runner `ssh.cmd(tgt, fun, arg, timeout, tgt_type, kwarg)` with the caller's
//! credentials, so the master's ACL decides (the caller needs runner rights for `ssh.cmd`,
//! which is stricter than the `ssh` ACL rest_cherrypy checks).
//!
//! Only `tgt`, `fun`, `arg`, `kwarg`, `tgt_type` and `timeout` reach the runner, as data;
//! every other key (roster files, ssh options) is ignored, so the roster and the ssh options
//! are the master's own (`roster_file` or `<config dir>/roster`, `ssh_*` options).
//!
//! As for salt-api since Salt 3006, listing `ssh` in `netapi_enable_clients` enables the
//! client; `brine: {enable_ssh: false}` switches it off all the same (settings.rs: unset, the
//! option follows the list). Lowstate's checks refuse an unlisted client before this one runs.

use serde_json::{json, Map, Value};

use super::runner;
use crate::app::SharedApp;
use crate::error::ApiError;

/// `ssh`: the runner's return (`{host: result}`).
pub async fn ssh(app: &SharedApp, chunk: Map<String, Value>) -> Result<Value, ApiError> {
    if !app.settings.brine.enable_ssh {
        return Err(ApiError::BadRequest(
            "Client disabled: 'ssh'. It is switched off by `brine: {enable_ssh: false}`.".into(),
        ));
    }
    let (Some(tgt), Some(fun)) = (chunk.get("tgt"), chunk.get("fun")) else {
        return Err(ApiError::Internal);
    };
    let mut kwarg = Map::new();
    kwarg.insert("tgt".into(), tgt.clone());
    kwarg.insert("fun".into(), fun.clone());
    kwarg.insert(
        "arg".into(),
        chunk.get("arg").cloned().unwrap_or_else(|| json!([])),
    );
    for k in ["tgt_type", "kwarg", "timeout"] {
        if let Some(v) = chunk.get(k) {
            kwarg.insert(k.into(), v.clone());
        }
    }
    let mut run = Map::new();
    run.insert("client".into(), json!("runner"));
    run.insert("fun".into(), json!("ssh.cmd"));
    run.insert("kwarg".into(), Value::Object(kwarg));
    for k in super::AUTH_KEYS {
        if let Some(v) = chunk.get(k) {
            run.insert(k.into(), v.clone());
        }
    }
    runner::runner(app, run).await
}
