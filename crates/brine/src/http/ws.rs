//! The WebSocket views of the event bus, from the same feed as `/events`:
//!
//! * rest_cherrypy `/ws` (session cookie or `X-Auth-Token`) and `/ws/<token>`: after the client
//!   sends `websocket client ready`, every event is a text message `data: <json>` plus a blank
//!   line; every text message the client sends is answered with `server received message`. With
//!   `?format_events`, messages are the processed jobs/minions view ([`crate::events::formatted`]).
//! * rest_tornado `/all_events/<token>`: after the ready message, each event as bare JSON.
//! * rest_tornado `/formatted_events/<token>`: starts a `grains.items` job on every minion with
//!   the token, then sends the processed view in tornado's shape.
//!
//! Brine's own, on each of them: `?tag=<glob>` (repeatable) and a text message
//! `{"subscribe": ["<glob>", …]}` (which replaces the filter, before or after the ready
//! message) send only the events whose tag matches one of the globs
//! ([`crate::events::filter`]); a `subscribe` the server cannot use is answered with
//! `{"status": 400, "return": "<why>"}` and changes nothing.
//!
//! A missing or invalid token is a 401 before the upgrade. The socket closes with code 1008
//! when the token expires or is revoked (the references keep it open), and is dropped when
//! the client does not read fast enough (see [`crate::stream`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::answer::{Answer, Marks};
use super::error::ApiError;
use super::routes::Endpoint;
use super::{session, Req};
use crate::app::{App, SharedApp};
use crate::events::feed::StreamEvent;
use crate::events::filter::TagFilter;
use crate::events::formatted::{Flavor, SaltInfo};
use crate::stream::{self, Owner, Render, Retune};

/// The message that starts the event flow.
pub const READY: &str = "websocket client ready";
/// rest_cherrypy's answer to every client message.
pub const RECEIVED: &str = "server received message";

/// Which WebSocket view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    CherryPlain,
    CherryFormatted,
    TornadoAll,
    TornadoFormatted,
}

/// Renders the feed for one socket.
enum WsRender {
    Plain(Kind),
    Formatted {
        info: SaltInfo,
        app: Arc<App>,
        token: String,
    },
}

impl Render for WsRender {
    type Frame = Utf8Bytes;

    fn preamble(&self) -> Option<Utf8Bytes> {
        None
    }

    fn event(&mut self, ev: &StreamEvent, out: &mut VecDeque<Utf8Bytes>) {
        match self {
            WsRender::Plain(Kind::TornadoAll) => out.push_back(ev.ws_json().clone()),
            WsRender::Plain(_) => out.push_back(ev.ws_data().clone()),
            WsRender::Formatted { info, app, token } => {
                let result = info.process(&ev.event().tag, &ev.event().data);
                out.extend(result.frames.into_iter().map(Utf8Bytes::from));
                if !result.query_grains.is_empty() {
                    query_grains(
                        app.clone(),
                        token.clone(),
                        json!(result.query_grains),
                        "list",
                    );
                }
            }
        }
    }

    fn keepalive(&self) -> Option<Utf8Bytes> {
        // WebSocket pings from the writer keep proxies happy; no text frame needed.
        None
    }

    fn size(frame: &Utf8Bytes) -> usize {
        frame.len()
    }
}

/// Starts a `grains.items` job with the stream's token, as the references do for new minions.
fn query_grains(app: Arc<App>, token: String, tgt: Value, tgt_type: &str) {
    let mut chunk = Map::new();
    chunk.insert("client".into(), json!("local_async"));
    chunk.insert("tgt".into(), tgt);
    chunk.insert("tgt_type".into(), json!(tgt_type));
    chunk.insert("fun".into(), json!("grains.items"));
    chunk.insert("token".into(), json!(token));
    tokio::spawn(async move {
        if let Err(e) = crate::clients::local::local_async(&app, chunk).await {
            tracing::debug!(error = ?e, "grains.items for a formatted event stream failed");
        }
    });
}

/// `GET /ws[/<token>]`, `/all_events/<token>`, `/formatted_events/<token>`.
pub async fn ws(app: &SharedApp, req: &mut Req, endpoint: &Endpoint) -> Answer {
    match upgrade(app, req, endpoint).await {
        Ok((resp, marks)) => marks.answer(Ok(resp)),
        Err(e) => e.into(),
    }
}

/// Checks the token and answers the WebSocket handshake, with the marks of its caller.
async fn upgrade(
    app: &SharedApp,
    req: &mut Req,
    endpoint: &Endpoint,
) -> Result<(Response, Marks), ApiError> {
    let format_events = req
        .query
        .as_deref()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "format_events"));
    let (kind, token) = match endpoint {
        Endpoint::Ws(t) => (
            if format_events {
                Kind::CherryFormatted
            } else {
                Kind::CherryPlain
            },
            t.clone().or_else(|| session::request_token(&req.headers)),
        ),
        Endpoint::AllEvents(t) => (Kind::TornadoAll, Some(t.clone())),
        Endpoint::FormattedEvents(t) => (Kind::TornadoFormatted, Some(t.clone())),
        _ => return Err(ApiError::Internal),
    };
    let token = token.ok_or_else(ApiError::unauthorized)?;
    let info = app
        .auth
        .check(&app.master, &token)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let filter = TagFilter::from_query(req.query.as_deref())?;
    let marks = Marks {
        cookie: matches!(endpoint, Endpoint::Ws(_)).then(|| session::session_cookie(&token)),
        private: false,
        user: Some(info.name.clone()),
    };
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.method = req.method.clone();
    parts.headers = req.headers.clone();
    parts.extensions = std::mem::take(&mut req.extensions);
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return Ok((rejection.into_response(), marks)),
    };
    let app = app.clone();
    let owner = Owner {
        token,
        user: info.name,
        expire: info.expire,
        kill: None,
        kind: match kind {
            Kind::CherryPlain | Kind::CherryFormatted => "ws",
            Kind::TornadoAll | Kind::TornadoFormatted => "tornado-ws",
        },
    };
    let cherrypy = matches!(kind, Kind::CherryPlain | Kind::CherryFormatted);
    let mut resp = upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| run(app, socket, kind, owner, filter));
    if cherrypy {
        // rest_cherrypy's (ws4py's) 101 carries these two besides the handshake's own.
        let h = resp.headers_mut();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/plain;charset=utf-8"),
        );
        h.insert(
            axum::http::header::SEC_WEBSOCKET_VERSION,
            axum::http::HeaderValue::from_static("13"),
        );
    }
    Ok((resp, marks))
}

async fn run(
    app: SharedApp,
    socket: WebSocket,
    kind: Kind,
    mut owner: Owner,
    mut filter: Option<TagFilter>,
) {
    let (mut sink, mut incoming) = socket.split();
    let kill = CancellationToken::new();
    owner.kill = Some(kill.clone());
    let mut owner = Some(owner);
    let mut frames: Option<Pin<Box<dyn Stream<Item = Vec<Utf8Bytes>> + Send>>> = None;
    let retune = Retune::default();
    let mut ping = tokio::time::interval(stream::KEEPALIVE);
    ping.reset();
    // Sends one message unless the client stalls past the kill switch.
    macro_rules! send {
        ($msg:expr) => {{
            tokio::select! {
                r = sink.send($msg) => r.is_ok(),
                _ = kill.cancelled() => false,
            }
        }};
    }
    // Queues one message without flushing (the last of a batch is sent with `send!`).
    macro_rules! feed {
        ($msg:expr) => {{
            tokio::select! {
                r = sink.feed($msg) => r.is_ok(),
                _ = kill.cancelled() => false,
            }
        }};
    }
    loop {
        tokio::select! {
            msg = incoming.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if matches!(kind, Kind::CherryPlain | Kind::CherryFormatted)
                        && !send!(Message::Text(Utf8Bytes::from_static(RECEIVED)))
                    {
                        break;
                    }
                    match TagFilter::from_message(text.as_str()) {
                        // Before the ready message it is the filter the stream starts with.
                        Some(Ok(f)) => {
                            tracing::debug!(globs = ?f.globs(), "stream filter set by the client");
                            if frames.is_none() {
                                filter = Some(f);
                            } else {
                                retune.set(f);
                            }
                        }
                        Some(Err(e)) => {
                            let why = json!({"status": 400, "return": e.message()}).to_string();
                            if !send!(Message::Text(Utf8Bytes::from(why))) {
                                break;
                            }
                        }
                        None => {}
                    }
                    if text.as_str() == READY {
                        if let Some(owner) = owner.take() {
                            let render = match kind {
                                Kind::CherryPlain | Kind::TornadoAll => WsRender::Plain(kind),
                                Kind::CherryFormatted | Kind::TornadoFormatted => {
                                    let flavor = if kind == Kind::CherryFormatted { Flavor::Cherry } else { Flavor::Tornado };
                                    if kind == Kind::TornadoFormatted {
                                        query_grains(app.clone(), owner.token.clone(), json!("*"), "glob");
                                    }
                                    WsRender::Formatted { info: SaltInfo::new(flavor), app: app.clone(), token: owner.token.clone() }
                                }
                            };
                            let resume = app.hub.feed().resume(None, filter.take());
                            frames = Some(Box::pin(stream::open(app.clone(), owner, resume, render, retune.clone(), None)));
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            batch = async {
                match frames.as_mut() {
                    Some(stream) => stream.next().await,
                    None => std::future::pending().await,
                }
            } => match batch {
                Some(batch) => {
                    // One flush for the batch.
                    let n = batch.len();
                    let mut sent = true;
                    for (i, f) in batch.into_iter().enumerate() {
                        sent = if i + 1 < n {
                            feed!(Message::Text(f))
                        } else {
                            send!(Message::Text(f))
                        };
                        if !sent {
                            break;
                        }
                    }
                    if !sent {
                        break;
                    }
                }
                None => {
                    // The stream ended: token expired or revoked, or Brine is stopping (a slow
                    // client is killed).
                    if !kill.is_cancelled() {
                        let (code, reason) = if app.stopping.is_cancelled() {
                            (1001, "server stopping")
                        } else {
                            (1008, "session ended")
                        };
                        let close = Message::Close(Some(CloseFrame {
                            code,
                            reason: Utf8Bytes::from_static(reason),
                        }));
                        let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(close)).await;
                    }
                    break;
                }
            },
            _ = ping.tick() => {
                if !send!(Message::Ping(Default::default())) {
                    break;
                }
            }
            // A socket that has not asked for events yet has no stream to end it.
            _ = app.stopping.cancelled(), if frames.is_none() => {
                let close = Message::Close(Some(CloseFrame {
                    code: 1001,
                    reason: Utf8Bytes::from_static("server stopping"),
                }));
                let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(close)).await;
                break;
            }
            _ = kill.cancelled() => break,
        }
    }
}
