//! `/login`, `/logout` and `/token`.
//!
//! * `GET /login`: 200 `{"status": null, "return": "Please log in"}` with
//!   `WWW-Authenticate: Session` and a fresh cookie, as rest_cherrypy answers it.
//! * `POST /login`: the credentials go to the master's `mk_token` as sent (extra fields reach
//!   the eauth backend). The answer carries the master's token itself (decision D1) in the body,
//!   the `X-Auth-Token` header and the `session_id` cookie, with `perms` computed from
//!   `external_auth` like rest_cherrypy. Refused credentials are 401
//!   `Could not authenticate using provided credentials`; a body with no credential object is
//!   the 500 JSON body, as in the reference.
//! * `POST /logout`: revokes the token on every Brine instance of this master (an event on the
//!   bus) and asks the master to delete it (`auth.del_token`, best effort), then expires the
//!   cookie.
//! * `POST /token`: each credential object becomes a runner `auth.mk_token` call authenticated
//!   by those credentials; the answer is a bare list of token records.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::answer::{Answer, Marks};
use super::error::ApiError;
use super::{ok, session, Req};
use crate::app::SharedApp;
use crate::auth::{login_perms, TokenInfo};
use crate::lowstate::{self, Exec};

/// `GET /login`.
pub fn login_prompt(req: &Req) -> Result<Response, ApiError> {
    let format = req.format()?;
    let mut resp = ok(
        format,
        StatusCode::OK,
        &json!({"status": null, "return": "Please log in"}),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Session"),
    );
    Ok(resp)
}

/// `POST /login`.
pub async fn login(app: &SharedApp, req: &mut Req) -> Answer {
    match log_in(app, req).await {
        Ok((resp, marks)) => marks.answer(Ok(resp)),
        Err(e) => e.into(),
    }
}

/// Checks the credentials with the master and answers the new token, with its marks.
async fn log_in(app: &SharedApp, req: &mut Req) -> Result<(Response, Marks), ApiError> {
    app.bus_ready().await?;
    let body = req.parse_body(app).await?;
    let creds: Map<String, Value> = match body {
        Some(Value::Object(m)) if !m.is_empty() => m,
        Some(Value::Array(items)) => match items.into_iter().next() {
            Some(Value::Object(m)) => m,
            _ => return Err(ApiError::Internal),
        },
        // No credential object at all: Python fails on `None.get` / `"x".get` (500).
        _ => return Err(ApiError::Internal),
    };
    let format = req.format()?;
    if !api_acl_allows(app, creds.get("username"), req.peer.ip()) {
        return Err(ApiError::unauthorized());
    }
    let refused =
        || ApiError::Unauthorized("Could not authenticate using provided credentials".into());
    let record = app.master.mk_token(&creds).await?.ok_or_else(refused)?;
    let token = record
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(refused)?;
    let info = TokenInfo::from_record(record.clone()).ok_or_else(refused)?;
    app.auth.remember(&token, &info);
    let marks = Marks {
        cookie: Some(session::session_cookie(&token)),
        private: false,
        user: Some(info.name.clone()),
    };
    let perms = login_perms(&record, &app.settings.master.external_auth);
    let body = json!({"return": [{
        "token": token,
        "expire": record.get("expire").cloned().unwrap_or(Value::Null),
        "start": record.get("start").cloned().unwrap_or(Value::Null),
        "user": info.name,
        "eauth": info.eauth,
        "perms": perms,
    }]});
    let mut resp = ok(format, StatusCode::OK, &body);
    if let Ok(v) = HeaderValue::from_str(&token) {
        resp.headers_mut().insert("x-auth-token", v);
    }
    Ok((resp, marks))
}

/// rest_cherrypy's `api_acl`: `{users: {<user or *>: [<ip or *>, ...]}}`. A listed user may log
/// in from the listed addresses; an unlisted one only through a `*` entry; no list: anyone.
pub fn api_acl_allows(app: &SharedApp, username: Option<&Value>, ip: std::net::IpAddr) -> bool {
    let Some(acl) = &app.settings.rest.api_acl else {
        return true;
    };
    let Some(users) = acl
        .get("users")
        .and_then(Value::as_object)
        .filter(|u| !u.is_empty())
    else {
        return true;
    };
    let ip = ip.to_string();
    let permits = |list: &Value| {
        list.as_array().is_some_and(|l| {
            l.iter()
                .any(|v| v.as_str() == Some(ip.as_str()) || v.as_str() == Some("*"))
        })
    };
    let allowed = match username.and_then(Value::as_str).and_then(|u| users.get(u)) {
        Some(list) => permits(list),
        None => users.get("*").is_some_and(permits),
    };
    if !allowed {
        tracing::info!(ip = %ip, "api_acl refused a login");
    }
    allowed
}

/// `POST /logout`.
pub async fn logout(app: &SharedApp, req: &mut Req) -> Answer {
    let session = match session::gate(app, &req.headers).await {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    let mut marks = Marks {
        cookie: None,
        private: true,
        user: Some(session.info.name.clone()),
    };
    let result = clear(app, req, session).await;
    if result.is_ok() {
        marks.cookie = Some(session::expired_cookie());
    }
    marks.answer(result)
}

/// Revokes the session's token here and on every Brine instance of this master, and asks the
/// master to delete it.
async fn clear(
    app: &SharedApp,
    req: &mut Req,
    session: session::Session,
) -> Result<Response, ApiError> {
    // The body is ignored but still parsed (broken JSON is a 400), as in the reference.
    req.parse_body(app).await?;
    let format = req.format()?;
    app.auth
        .revoke_everywhere(&app.master, &session.token, session.info.expire)
        .await;
    let bg = app.clone();
    let token = session.token;
    tokio::spawn(async move {
        // Deletes the token from the master's store (localfs) when the user may run
        // runners; harmless otherwise. Not awaited by the client.
        let mut load = Map::new();
        load.insert("fun".into(), json!("auth.del_token"));
        load.insert("token".into(), json!(token));
        load.insert("kwarg".into(), json!({"arg": [token], "kwarg": {}}));
        if let Err(e) = bg.master.runner(load).await {
            tracing::debug!(error = ?e, "auth.del_token on logout was refused");
        }
    });
    Ok(ok(
        format,
        StatusCode::OK,
        &json!({"return": "Your token has been cleared"}),
    ))
}

/// `POST /token`.
pub async fn token(app: &SharedApp, req: &mut Req) -> Result<Response, ApiError> {
    let body = req.parse_body(app).await?;
    let chunks = match body {
        Some(Value::Object(m)) if !m.is_empty() => vec![Value::Object(m)],
        Some(Value::Array(items)) => items,
        // Python iterates `None` (or the characters of a string): an error, 500.
        _ => return Err(ApiError::Internal),
    };
    let mut calls = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let Value::Object(mut creds) = chunk else {
            return Err(ApiError::Internal);
        };
        let mut kwarg = Map::new();
        for k in ["username", "password", "eauth"] {
            match creds.get(k) {
                Some(v) => {
                    kwarg.insert(k.into(), v.clone());
                }
                None => {
                    return Err(ApiError::BadRequest(
                        "Require \"username\", \"password\", and \"eauth\" params".into(),
                    ))
                }
            }
        }
        creds.insert("client".into(), json!("runner"));
        creds.insert("fun".into(), json!("auth.mk_token"));
        creds.insert("kwarg".into(), Value::Object(kwarg));
        calls.push(Value::Object(creds));
    }
    let format = req.format()?;
    let results = lowstate::execute(app, calls, &Exec::default()).await?;
    Ok(ok(format, StatusCode::OK, &Value::Array(results)))
}

/// Runs a credential-checking endpoint (`/login`, `/token`, `/run`) behind the login
/// throttle: 429 when the caller's address has no attempt left, and a refused attempt counted
/// against it.
pub async fn throttled<'r, F, Fut>(app: &SharedApp, req: &'r mut Req, call: F) -> Answer
where
    F: FnOnce(&'r mut Req) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let Some(throttle) = app.throttle.as_ref() else {
        return call(req).await;
    };
    let ip = req.peer.ip();
    if let crate::throttle::Verdict::Limited(wait) = throttle.check(ip) {
        app.stats
            .logins_throttled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(peer = %ip, retry_after = wait.as_secs(), "login attempts over the limit; answering 429");
        return ApiError::TooManyRequests(wait).into();
    }
    let answer = call(req).await;
    if matches!(answer.result, Err(ApiError::Unauthorized(_))) {
        throttle.failed(ip);
    }
    answer
}
