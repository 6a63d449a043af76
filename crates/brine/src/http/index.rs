//! `/` and `/run`: the welcome document and lowstate execution.
//!
//! * `GET /` (also `GET /run`, `GET /token`): `{"return": "Welcome", "clients": [...]}` with the
//!   ten names of Salt's `NetapiClient`; no session, no cookie.
//! * `POST /`: session endpoint; the session's token is written into every chunk.
//! * `POST /run`: no session; every chunk carries its own `token` or eauth credentials.
//!
//! Both POSTs answer `{"return": [<result per chunk>, ...]}`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::answer::Answer;
use super::error::ApiError;
use super::{ok, session, Req};
use crate::app::SharedApp;
use crate::clients::CLIENT_NAMES;
use crate::lowstate::{self, Exec};

/// `GET /`.
pub fn welcome(req: &Req) -> Result<Response, ApiError> {
    let format = req.format()?;
    Ok(ok(
        format,
        StatusCode::OK,
        &json!({"return": "Welcome", "clients": CLIENT_NAMES}),
    ))
}

/// `POST /`.
pub async fn post_lowstate(app: &SharedApp, req: &mut Req) -> Answer {
    session::gated(app, req, |req, session| async move {
        let body = req.parse_body(app).await?;
        let chunks = lowstate::shape(body)?;
        let format = req.format()?;
        let exec = Exec {
            token: Some(session.token),
            client: None,
            caller: Some((session.info.name, session.info.eauth)),
        };
        let results = lowstate::execute(app, chunks, &exec).await?;
        Ok(ok(format, StatusCode::OK, &json!({"return": results})))
    })
    .await
}

/// `POST /run`.
pub async fn post_run(app: &SharedApp, req: &mut Req) -> Result<Response, ApiError> {
    let body = req.parse_body(app).await?;
    let chunks = lowstate::shape(body)?;
    let format = req.format()?;
    let results = lowstate::execute(app, chunks, &Exec::default()).await?;
    Ok(ok(format, StatusCode::OK, &json!({"return": results})))
}
