//! `/jobs`: the master's job cache through the runner client, with the caller's session.
//!
//! * `GET /jobs`: runner `jobs.list_jobs`.
//! * `GET /jobs/<jid>`: runner `jobs.list_job`, answered as
//!   `{"info": [<job>], "return": [{<minion>: <return>}]}`.
//!
//! `?timeout=` is accepted and ignored. `POST /jobs` is `POST /` (`index`).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::answer::Answer;
use super::error::ApiError;
use super::{ok, session, Req};
use crate::app::SharedApp;

/// `GET /jobs[/<jid>]`.
pub async fn get_jobs(app: &SharedApp, req: &mut Req, jid: Option<&str>) -> Answer {
    session::gated(app, req, |req, session| list(app, req, session, jid)).await
}

async fn list(
    app: &SharedApp,
    req: &mut Req,
    session: session::Session,
    jid: Option<&str>,
) -> Result<Response, ApiError> {
    let format = req.format()?;
    let chunk = match jid {
        Some(jid) => json!({"client": "runner", "fun": "jobs.list_job", "jid": jid}),
        None => json!({"client": "runner", "fun": "jobs.list_jobs"}),
    };
    let first = session::run_as(app, session, chunk)
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
