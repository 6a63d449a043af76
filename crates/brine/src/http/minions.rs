//! `/minions`: a session endpoint built on lowstate clients.
//!
//! * `GET /minions[/<mid>]`: `local` `grains.items` on `<mid>` (a glob) or `*`.
//! * `POST /minions`: the posted lowstate forced to `local_async`; **202** with `_links` to
//!   `/jobs/<jid>` for every chunk that started a job (the link has no `root_prefix`, as in the
//!   reference).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::answer::Answer;
use super::error::ApiError;
use super::{ok, session, Req};
use crate::app::SharedApp;
use crate::clients::Client;
use crate::lowstate::{self, Exec};

/// `GET /minions[/<mid>]`.
pub async fn get_minions(app: &SharedApp, req: &mut Req, mid: Option<&str>) -> Answer {
    session::gated(app, req, |req, session| async move {
        let format = req.format()?;
        let chunk = json!({"client": "local", "tgt": mid.unwrap_or("*"), "fun": "grains.items"});
        let results = session::run_as(app, session, chunk).await?;
        Ok(ok(format, StatusCode::OK, &json!({"return": results})))
    })
    .await
}

/// `POST /minions`.
pub async fn post_minions(app: &SharedApp, req: &mut Req) -> Answer {
    session::gated(app, req, |req, session| start_jobs(app, req, session)).await
}

/// The posted lowstate, each chunk forced to `local_async`.
async fn start_jobs(
    app: &SharedApp,
    req: &mut Req,
    session: session::Session,
) -> Result<Response, ApiError> {
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
