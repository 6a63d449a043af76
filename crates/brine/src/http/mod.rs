//! The HTTP side: one request pipeline in rest_cherrypy's order, on top of the domain (which
//! never imports it). CORS on every response; `OPTIONS` answered at once (D2); the path
//! resolved into a [`routes::Endpoint`]; 405/404 behind the session gate where the reference
//! gates first; the handler, which reads the body after its gate and checks `Accept` before
//! anything executes (D3), returns an [`answer::Answer`]. Every request is logged once, never
//! with a token, a password or a query string.

pub mod access_log;
mod answer;
pub mod body;
mod cors;
pub mod error;
mod linger;
pub mod negotiate;
mod request;
mod request_stats;
pub mod routes;
pub mod session;
mod sse_connection;

mod events;
mod files;
mod hook;
mod index;
mod jobs;
mod keys;
mod login;
mod minions;
mod openapi;
pub mod server;
mod stats;
mod ws;

pub use negotiate::ok;
pub use request::Req;
pub use server::serve;

use std::net::SocketAddr;
use std::sync::{atomic::Ordering, Arc};
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request};
use axum::response::Response;

use crate::app::SharedApp;
use answer::Answer;
use error::{ApiError, Render};
use negotiate::Format;

/// What the HTTP layer serves: the application, and the HTTP access log.
pub struct Edge {
    /// The application.
    pub app: SharedApp,
    /// The `log_access_file` writer, if configured.
    pub access_log: Option<access_log::AccessLog>,
}

/// Where a request went: the answer, and what the route adds to it.
struct Routed {
    answer: Answer,
    /// `Allow` of the routed resource.
    allow: Option<&'static str>,
    /// The route family, for metrics.
    name: &'static str,
    /// The session cookie rest_cherrypy's session tool sets when the handler sets none.
    cookie: Option<HeaderValue>,
    /// Whether the path carries a token the logs must not show.
    token_in_path: bool,
}

impl Routed {
    /// An answer given before (or without) a route.
    fn unrouted(answer: Answer) -> Routed {
        Routed {
            answer,
            allow: None,
            name: "unknown",
            cookie: None,
            token_in_path: false,
        }
    }
}

/// Handles one request end to end.
pub async fn handle(edge: Arc<Edge>, req: Request<Body>, peer: SocketAddr) -> Response {
    let app = &edge.app;
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let (counted, body) = request_stats::begin(app, &parts, &path, peer, body);
    let origin = parts.headers.get(header::ORIGIN).cloned();
    let mut req = Req {
        method: parts.method.clone(),
        headers: parts.headers,
        query: parts.uri.query().map(str::to_owned),
        body,
        peer,
        extensions: parts.extensions,
    };
    app.stats.requests_in_flight.fetch_add(1, Ordering::Relaxed);
    // Errors are rendered in the negotiated format when there is one.
    let err_format = req.format().unwrap_or(Format::Json);
    let routed = route(app, &mut req, &path).await;
    // Answered before its body was read (a refusal): the client may still be sending it.
    if linger::unread(&req.body) {
        linger::drain(std::mem::take(&mut req.body));
    }
    let Answer { result, marks } = routed.answer;
    let mut resp = result.unwrap_or_else(|e| {
        if e.status().is_server_error() {
            tracing::debug!(error = ?e, "request failed");
        }
        e.into_response(err_format)
    });
    let h = resp.headers_mut();
    cors::apply(h, origin, app.settings.rest.cors_origin.as_ref());
    if let Some(allow) = routed.allow {
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(c) = marks.cookie.or(routed.cookie) {
        h.insert(header::SET_COOKIE, c);
    }
    if marks.private && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    h.insert(header::SERVER, HeaderValue::from_static("Brine"));
    app.stats.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    if let Some(counted) = counted {
        counted.end(app, &resp);
    }
    let status = resp.status().as_u16();
    app.stats.record_request(
        routed.name,
        req.method.as_str(),
        status,
        started.elapsed().as_secs_f64(),
    );
    let path = access_log::loggable_path(&path, routed.token_in_path);
    if let Some(log) = &edge.access_log {
        let header = |name| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        log.record(access_log::Line {
            peer: peer.ip(),
            user: marks.user.clone(),
            method: req.method.to_string(),
            path: path.clone(),
            status,
            size: access_log::body_size(&resp),
            referer: header(header::REFERER),
            agent: header(header::USER_AGENT),
        });
    }
    tracing::info!(
        target: "brine::access",
        method = %req.method,
        path = %path,
        status,
        ms = started.elapsed().as_millis() as u64,
        peer = %peer.ip(),
        user = marks.user.as_deref().unwrap_or("-"),
    );
    resp
}

/// Routes the request through rest_cherrypy's checks, in its order, to its handler.
async fn route(app: &SharedApp, req: &mut Req, path: &str) -> Routed {
    // rest_cherrypy's HTML override comes first, for any method.
    if files::html_override(app, path, req.accept()) {
        let page = files::app_page(app, files::FileReq::from(&*req), path).await;
        return Routed {
            allow: Some("GET, HEAD"),
            name: "app",
            ..Routed::unrouted(page.into())
        };
    }
    let resolved = app.settings.rest.routes.resolve(path);
    if req.method == Method::OPTIONS {
        let asked = req
            .headers
            .get("access-control-request-method")
            .and_then(|v| v.to_str().ok());
        return Routed {
            allow: resolved.as_ref().ok().and_then(|r| r.endpoint.allow()),
            ..Routed::unrouted(cors::preflight(asked).into())
        };
    }
    let routes::Route { endpoint, extra } = match resolved {
        Ok(r) => r,
        Err(e) => return Routed::unrouted(e.into()),
    };
    let (allow, name) = (endpoint.allow(), endpoint.name());
    if let (Some(allowed), false) = (&app.settings.rest.authorized_ips, endpoint.is_file()) {
        // The socket's address, never a client-supplied header.
        if !allowed.contains(&req.peer.ip()) {
            tracing::warn!(peer = %req.peer.ip(), "request from an address not in authorized_ips");
            let bad_ip = ApiError::Forbidden("Bad IP".into()).into();
            return Routed {
                allow,
                name,
                ..Routed::unrouted(bad_ip)
            };
        }
    }
    // Handlers replace it with the session's own id once they know it is valid.
    let cookie = endpoint
        .session_enabled(&req.method)
        .then(|| session::session_cookie(&session::random_id()));
    let token_in_path = endpoint.token_in_path();
    let answer = routes::admit(app, req, endpoint, extra, path).await;
    Routed {
        answer,
        allow,
        name,
        cookie,
        token_in_path,
    }
}
