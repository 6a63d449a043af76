//! `/minions` and `/jobs`: the session endpoints built on lowstate clients (spec §2.7-2.9).
//!
//! * `GET /minions[/<mid>]`: `local` `grains.items` on `<mid>` (a glob) or `*`.
//! * `POST /minions`: the posted lowstate forced to `local_async`; **202** with `_links` to
//!   `/jobs/<jid>` for every chunk that started a job (the link has no `root_prefix`, as in the
//!   reference).
//! * `GET /jobs`: runner `jobs.list_jobs`; `GET /jobs/<jid>`: runner `jobs.list_job`, answered
//!   as `{"info": [<job>], "return": [{<minion>: <return>}]}`. `?timeout=` is accepted and
//!   ignored. `POST /jobs` is `POST /`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::{ok, session, Ctx, Req};
use crate::app::SharedApp;
use crate::lowstate::{self, Client, Exec};

/// Runs built-in chunks with the session token.
async fn run(
    app: &SharedApp,
    session: session::Session,
    chunk: Value,
) -> Result<Vec<Value>, ApiError> {
    let exec = Exec {
        token: Some(session.token),
        client: None,
        caller: Some((session.info.name, session.info.eauth)),
    };
    lowstate::execute(app, vec![chunk], &exec).await
}

/// `GET /minions[/<mid>]`.
pub async fn get_minions(
    app: &SharedApp,
    req: &mut Req,
    ctx: &mut Ctx,
    mid: Option<&str>,
) -> Result<Response, ApiError> {
    let session = session::gate_request(app, &req.headers, ctx).await?;
    let format = req.format()?;
    let chunk = json!({"client": "local", "tgt": mid.unwrap_or("*"), "fun": "grains.items"});
    let results = run(app, session, chunk).await?;
    Ok(ok(format, StatusCode::OK, &json!({"return": results})))
}

/// `POST /minions`.
pub async fn post_minions(
    app: &SharedApp,
    req: &mut Req,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    let session = session::gate_request(app, &req.headers, ctx).await?;
    let body = req.parse_body(app).await?;
    let chunks = lowstate::shape(body)?;
    let format = req.format()?;
    let exec = Exec {
        token: Some(session.token),
        client: Some(Client::LocalAsync),
        caller: Some((session.info.name, session.info.eauth)),
    };
    let results = lowstate::execute(app, chunks, &exec).await?;
    let links: Vec<Value> = results
        .iter()
        .filter_map(|r| r.get("jid").and_then(Value::as_str))
        .map(|jid| json!({"href": format!("/jobs/{jid}")}))
        .collect();
    Ok(ok(
        format,
        StatusCode::ACCEPTED,
        &json!({"return": results, "_links": {"jobs": links}}),
    ))
}

/// `GET /jobs[/<jid>]`.
pub async fn get_jobs(
    app: &SharedApp,
    req: &mut Req,
    ctx: &mut Ctx,
    jid: Option<&str>,
) -> Result<Response, ApiError> {
    let session = session::gate_request(app, &req.headers, ctx).await?;
    let format = req.format()?;
    let chunk = match jid {
        Some(jid) => json!({"client": "runner", "fun": "jobs.list_job", "jid": jid}),
        None => json!({"client": "runner", "fun": "jobs.list_jobs"}),
    };
    let first = run(app, session, chunk)
        .await?
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    let body = match jid {
        None => json!({"return": [first]}),
        Some(_) => {
            // rest_cherrypy iterates `Result`; a job record without one is a 500 there.
            let Some(result) = first.get("Result").and_then(Value::as_object) else {
                return Err(ApiError::Internal);
            };
            let returns: Map<String, Value> = result
                .iter()
                .map(|(m, r)| (m.clone(), r.get("return").cloned().unwrap_or(Value::Null)))
                .collect();
            json!({"info": [first], "return": [returns]})
        }
    };
    Ok(ok(format, StatusCode::OK, &body))
}
