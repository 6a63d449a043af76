//! `GET /events`: the master's event bus as Server-Sent Events, framed as rest_cherrypy frames
//! it, from Brine's one bus subscription.
//!
//! * Auth: a valid token in `X-Auth-Token` or the `session_id` cookie (the header wins). Any
//!   query parameter but `tag` is rest_cherrypy 3008's 400 (tokens in URLs end up in logs),
//!   unless the operator turns on `brine: {events_query_token: true}`, which accepts the
//!   legacy `?token=` and `?salt_token=` (decision D5). `Accept` is not negotiated.
//! * `?tag=<glob>` (Brine's, repeatable): only events whose tag matches one of the globs
//!   ([`crate::events::filter`]); a resumed stream replays only those.
//! * Body: `retry: 400`, then per event `id:`, `tag:` and `data:` lines and a blank line
//!   (`id:` is Brine's addition). A client that reconnects with `Last-Event-ID` gets the events
//!   it missed from the replay ring, or a `brine/events/lost` event saying which are gone.
//! * The stream ends at token expiry or revocation; see [`crate::stream`] for keep-alives and
//!   slow clients.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::answer::{Answer, Marks};
use super::error::ApiError;
use super::{session, Req};
use crate::app::SharedApp;
use crate::auth::TokenInfo;
use crate::events::feed::{parse_last_id, Resume, StreamEvent};
use crate::events::filter::TagFilter;
use crate::stream::{self, End, Owner, Render, Retune};

/// rest_cherrypy 3008's answer to any query parameter on `/events`.
pub const NO_QUERY: &str = "The /events endpoint takes no query parameters; in particular, tokens must not \
be passed via the query string -- they end up in access logs and the Referer header. Use the 'X-Auth-Token' \
header (for non-browser clients) or the session cookie set by /login (for browser EventSource clients) instead.";

/// The token of an `/events` request: from the query (legacy switch only), else the header or
/// cookie.
fn token(app: &SharedApp, req: &Req) -> Result<Option<String>, ApiError> {
    let Some(query) = req.query.as_deref().filter(|q| !q.is_empty()) else {
        return Ok(session::request_token(&req.headers));
    };
    let legacy = app.settings.brine.events_query_token;
    let mut found = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            // The stream's filter, read by `stream`.
            "tag" => {}
            "token" | "salt_token" if legacy && !v.is_empty() => found = Some(v.into_owned()),
            "token" | "salt_token" if legacy => {}
            _ => return Err(ApiError::BadRequest(NO_QUERY.into())),
        }
    }
    Ok(found.or_else(|| session::request_token(&req.headers)))
}

/// `GET /events`.
pub async fn events(app: &SharedApp, req: &mut Req) -> Answer {
    let (token, info) = match caller(app, req).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let filter = match TagFilter::from_query(req.query.as_deref()) {
        Ok(f) => f,
        Err(e) => return e.into(),
    };
    let marks = Marks {
        cookie: Some(session::session_cookie(&token)),
        private: false,
        user: Some(info.name.clone()),
    };
    marks.answer(Ok(stream(app, req, token, info, filter)))
}

/// The caller's token (query or session) and the master's record of it, or 401.
async fn caller(app: &SharedApp, req: &mut Req) -> Result<(String, TokenInfo), ApiError> {
    let token = token(app, req)?.ok_or_else(ApiError::unauthorized)?;
    let info = app
        .auth
        .check(&app.master, &token)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    Ok((token, info))
}

/// The stream's answer: headers now, the events as they come.
fn stream(
    app: &SharedApp,
    req: &Req,
    token: String,
    info: TokenInfo,
    filter: Option<TagFilter>,
) -> Response {
    if req.method == axum::http::Method::HEAD {
        return sse_response(app, req, None);
    }
    let resume = app.hub.feed().resume(last_event_id(req), filter);
    let owner = Owner {
        token,
        user: info.name,
        expire: info.expire,
        kill: req.kill(),
        kind: "sse",
    };
    sse_response(app, req, Some((owner, resume, None)))
}

/// The client's `Last-Event-ID`, if it sent one that Brine could have written.
pub(super) fn last_event_id(req: &Req) -> Option<u64> {
    req.headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_last_id)
}

/// An SSE answer: the headers, then (unless it is `None`: `HEAD`) the stream of `resume`,
/// ended by `end` if it has one, rendered as rest_cherrypy frames.
pub(super) fn sse_response(
    app: &SharedApp,
    req: &Req,
    stream: Option<(Owner, Resume, Option<End>)>,
) -> Response {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream;charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let Some((owner, resume, end)) = stream.filter(|_| req.method != axum::http::Method::HEAD)
    else {
        return resp;
    };
    // A batch (what was waiting in the feed when the connection asked) goes out as one write.
    let body = stream::open(app.clone(), owner, resume, Sse, Retune::default(), end).map(|batch| {
        let chunk = if batch.len() == 1 {
            batch.into_iter().next().unwrap_or_default()
        } else {
            let mut buf = BytesMut::with_capacity(batch.iter().map(Bytes::len).sum());
            for b in &batch {
                buf.extend_from_slice(b);
            }
            buf.freeze()
        };
        Ok::<Bytes, Infallible>(chunk)
    });
    *resp.body_mut() = Body::from_stream(body);
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// rest_cherrypy's SSE framing (with an `id:` line for `Last-Event-ID`).
struct Sse;

impl Render for Sse {
    type Frame = Bytes;

    fn preamble(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b"retry: 400\n"))
    }

    fn event(&mut self, ev: &StreamEvent, out: &mut VecDeque<Bytes>) {
        out.push_back(ev.sse().clone());
    }

    fn keepalive(&self) -> Option<Bytes> {
        // An SSE comment: every client ignores it, proxies see traffic.
        Some(Bytes::from_static(b": keep-alive\n\n"))
    }

    fn size(frame: &Bytes) -> usize {
        frame.len()
    }
}
