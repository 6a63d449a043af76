//! Sessions as clients see them: where a request's token comes from, the auth gate of
//! session endpoints, and the `session_id` cookie.
//!
//! Under decision D1 a "session id" is the master's eauth token itself. The token is read from
//! a non-empty `X-Auth-Token` header, else the `session_id` cookie (the header wins, as in
//! rest_cherrypy's `salt_token` tool). Session endpoints refresh the cookie on every response
//! with rest_cherrypy's attributes (`expires=<now + 10 h>; Max-Age=36000; Path=/`); a request
//! without a valid token gets a fresh random id that Brine never stores, as the reference does.

use std::future::Future;
use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use rand::RngCore;

use crate::app::{App, SharedApp};
use crate::auth::TokenInfo;
use crate::error::ApiError;

use super::answer::{Answer, Marks};
use super::Req;
use crate::lowstate::{self, Exec};
use serde_json::Value;

/// The token a request presents, if any.
pub fn request_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v.to_owned());
        }
    }
    cookie(headers, "session_id")
}

/// The value of a cookie.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for h in headers.get_all(header::COOKIE) {
        let Ok(text) = h.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k.trim() == name {
                    let v = v.trim().trim_matches('"');
                    if !v.is_empty() {
                        return Some(v.to_owned());
                    }
                }
            }
        }
    }
    None
}

/// A random id of 40 hex characters (what CherryPy hands out to unknown sessions).
pub fn random_id() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// `session_id=<id>; expires=<now + 10 h>; Max-Age=36000; Path=/`.
pub fn session_cookie(id: &str) -> HeaderValue {
    let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(36_000));
    HeaderValue::from_str(&format!(
        "session_id={id}; expires={expires}; Max-Age=36000; Path=/"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("session_id=; Path=/"))
}

/// The logout cookie: a new random id dated a year back, no `Max-Age` (the browser drops it).
pub fn expired_cookie() -> HeaderValue {
    let past = SystemTime::now()
        .checked_sub(Duration::from_secs(365 * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    HeaderValue::from_str(&format!(
        "session_id={}; expires={}; Path=/",
        random_id(),
        httpdate::fmt_http_date(past)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("session_id=; Path=/"))
}

/// The outcome of the session gate: the token and what the master knows of it.
#[derive(Clone, Debug)]
pub struct Session {
    /// The presented (valid) token.
    pub token: String,
    /// The master's record of it.
    pub info: TokenInfo,
}

/// The auth gate of session endpoints: a valid token, or 401 before the body is read.
pub async fn gate(app: &App, headers: &HeaderMap) -> Result<Session, ApiError> {
    let Some(token) = request_token(headers) else {
        return Err(ApiError::unauthorized());
    };
    match app.auth.check(&app.master, &token).await? {
        Some(info) => Ok(Session { token, info }),
        None => Err(ApiError::unauthorized()),
    }
}

/// What a session adds to its answers: the refreshed session cookie, `Cache-Control:
/// private`, and its user for the access log.
pub fn marks(s: &Session) -> Marks {
    Marks {
        cookie: Some(session_cookie(&s.token)),
        private: true,
        user: Some(s.info.name.clone()),
    }
}

/// The session gate, then `then` with the session: what every session endpoint does. The
/// answer, a refusal included, carries the session's [`marks`]; a request the gate refuses
/// gets its 401 before the body is read.
pub async fn gated<'r, F, Fut>(app: &SharedApp, req: &'r mut Req, then: F) -> Answer
where
    F: FnOnce(&'r mut Req, Session) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let session = match gate(app, &req.headers).await {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    marks(&session).answer(then(req, session).await)
}

/// Runs a chunk Brine built (`GET /minions`, `GET /jobs`) with the session's token, audited as
/// the session's user.
pub async fn run_as(
    app: &SharedApp,
    session: Session,
    chunk: Value,
) -> Result<Vec<Value>, ApiError> {
    let exec = Exec {
        token: Some(session.token),
        client: None,
        caller: Some((session.info.name, session.info.eauth)),
    };
    lowstate::execute(app, vec![chunk], &exec).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_beats_cookie_and_empty_header_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; session_id=cookie"),
        );
        assert_eq!(request_token(&h), Some("cookie".into()));
        h.insert("x-auth-token", HeaderValue::from_static(""));
        assert_eq!(request_token(&h), Some("cookie".into()));
        h.insert("x-auth-token", HeaderValue::from_static("hdr"));
        assert_eq!(request_token(&h), Some("hdr".into()));
    }

    #[test]
    fn cookies_have_the_reference_attributes() {
        let c = session_cookie("abc");
        let text = c.to_str().unwrap_or_default();
        assert!(text.starts_with("session_id=abc; expires="));
        assert!(text.ends_with("GMT; Max-Age=36000; Path=/"));
        let e = expired_cookie();
        let text = e.to_str().unwrap_or_default();
        assert!(!text.contains("Max-Age") && text.ends_with("; Path=/"));
        assert_eq!(random_id().len(), 40);
    }
}
