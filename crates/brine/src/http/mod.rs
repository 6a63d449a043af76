//! The HTTP side: one request pipeline in rest_cherrypy's order, the listener, and the
//! response decorations every answer carries.
//!
//! Pipeline (rest_cherrypy's, with Brine's decisions): CORS headers on every response; `OPTIONS`
//! stops after them with an empty 200 (D2); the path is resolved into an
//! [`routes::Endpoint`]; a method the resource lacks is 405 with `Allow`; session endpoints run
//! the auth gate **before** reading the body (401 beats 400); then the body is parsed, the
//! `Accept` header is checked **before** anything executes (D3), and the handler runs.
//! Every request is logged once (method, path without query, status, duration), never with a
//! token, a password or a query string.

pub mod access_log;
pub mod body;
pub mod error;
mod linger;
pub mod negotiate;
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

pub use server::serve;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::app::SharedApp;
use crate::settings::CorsOrigin;
use error::{ApiError, Render};
use negotiate::{output_format, Format, NegotiationError};
use routes::Endpoint;

/// Response decorations decided while handling a request.
pub struct Ctx {
    /// `Allow` of the routed resource.
    pub allow: Option<&'static str>,
    /// `Set-Cookie` to send.
    pub cookie: Option<HeaderValue>,
    /// Whether the request passed a session gate (`Cache-Control: private`).
    pub private: bool,
    /// The user the request acted as, for the access log.
    pub user: Option<String>,
    /// The route family, for metrics.
    pub route: &'static str,
}

/// What a handler receives.
pub struct Req {
    /// Method.
    pub method: Method,
    /// Request headers.
    pub headers: HeaderMap,
    /// Query string, if any (never logged).
    pub query: Option<String>,
    /// The body, not read yet.
    pub body: Body,
    /// The socket peer.
    pub peer: SocketAddr,
    /// Request extensions (the connection's kill switch, the WebSocket upgrade).
    pub extensions: axum::http::Extensions,
}

impl Req {
    /// The `Accept` header value.
    pub fn accept(&self) -> Option<&str> {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
    }

    /// The negotiated output format, or the 406/400 for it.
    pub fn format(&self) -> Result<Format, ApiError> {
        output_format(self.accept()).map_err(|e| match e {
            NegotiationError::NotAcceptable => {
                ApiError::NotAcceptable(self.accept().unwrap_or("").to_owned())
            }
            NegotiationError::Malformed(m) => ApiError::BadRequest(m),
        })
    }

    /// Reads and parses the body (`Ok(None)`: no body).
    pub async fn parse_body(&mut self, app: &crate::app::App) -> Result<Option<Value>, ApiError> {
        let bytes = self.read_body(app).await?;
        self.parse_bytes(app, &bytes)
    }

    /// Parses body bytes read with [`Req::read_body`] by this request's `Content-Type`.
    pub fn parse_bytes(
        &self,
        app: &crate::app::App,
        bytes: &[u8],
    ) -> Result<Option<Value>, ApiError> {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let limits = body::BodyLimits {
            max_depth: app.settings.brine.body_max_depth,
            ..body::BodyLimits::default()
        };
        body::parse(ct, bytes, limits)
    }

    /// Reads the raw body, within `max_request_body_size` (413 beyond it).
    pub async fn read_body(&mut self, app: &crate::app::App) -> Result<bytes::Bytes, ApiError> {
        let limit = app.settings.rest.max_body;
        if let Some(len) = self
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > limit as u64 {
                return Err(ApiError::PayloadTooLarge(limit));
            }
        }
        // Read frame by frame rather than through `Limited`, so that a body over the limit
        // stays here, unread, for the lingering close (linger.rs) to drain.
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = self.body.frame().await {
            let Ok(frame) = frame else {
                return Err(ApiError::BadRequest(
                    "The request body could not be read".into(),
                ));
            };
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > limit {
                    return Err(ApiError::PayloadTooLarge(limit));
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(buf.freeze())
    }

    /// The kill switch of the request's connection.
    pub fn kill(&self) -> Option<tokio_util::sync::CancellationToken> {
        self.extensions
            .get::<server::ConnKill>()
            .map(|k| k.0.clone())
    }
}

/// A negotiated 200 (or `status`) answer with `value` as the body.
pub fn ok(format: Format, status: StatusCode, value: &Value) -> Response {
    let mut resp = Response::new(Body::from(negotiate::render(format, value)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}

/// `GET /openapi.json` (always JSON: it is a document for tools, not a salt-api answer).
fn openapi_json(app: &SharedApp) -> Response {
    let doc = openapi::document(&app.settings.rest.routes);
    let mut resp = Response::new(Body::from(serde_json::to_vec(&doc).unwrap_or_default()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// What the HTTP layer serves: the application, and the HTTP access log.
pub struct Edge {
    /// The application.
    pub app: SharedApp,
    /// The `log_access_file` writer, if configured.
    pub access_log: Option<access_log::AccessLog>,
}

/// Handles one request end to end.
pub async fn handle(edge: std::sync::Arc<Edge>, req: Request<Body>, peer: SocketAddr) -> Response {
    let app = edge.app.clone();
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let (counted, body) = request_stats::begin(&app, &parts, &path, peer, body);
    let origin = parts.headers.get(header::ORIGIN).cloned();
    let preflight_method = parts
        .headers
        .get("access-control-request-method")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut req = Req {
        method: parts.method.clone(),
        headers: parts.headers,
        query: parts.uri.query().map(str::to_owned),
        body,
        peer,
        extensions: parts.extensions,
    };
    let mut ctx = Ctx {
        allow: None,
        cookie: None,
        private: false,
        user: None,
        route: "unknown",
    };
    app.stats.requests_in_flight.fetch_add(1, Ordering::Relaxed);
    // Errors are rendered in the negotiated format when there is one.
    let err_format = req.format().unwrap_or(Format::Json);
    let result = route(&app, &mut req, &mut ctx, &path, preflight_method.as_deref()).await;
    // Answered before its body was read (a refusal): the client may still be sending it.
    if linger::unread(&req.body) {
        linger::drain(std::mem::take(&mut req.body));
    }
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::debug!(error = ?e, "request failed");
            }
            e.into_response(err_format)
        }
    };
    decorate(
        &mut resp,
        &ctx,
        origin,
        app.settings.rest.cors_origin.as_ref(),
    );
    app.stats.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    if let Some(counted) = counted {
        counted.end(&app, &resp);
    }
    app.stats.record_request(
        ctx.route,
        req.method.as_str(),
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    let path = loggable_path(ctx.route, &path);
    if let Some(log) = &edge.access_log {
        log.record(access_log::Line {
            peer: peer.ip(),
            user: ctx.user.clone(),
            method: req.method.to_string(),
            path: path.clone(),
            status: resp.status().as_u16(),
            size: body_size(&resp),
            referer: req
                .headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            agent: req
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }
    tracing::info!(
        target: "brine::access",
        method = %req.method,
        path = %path,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        peer = %peer.ip(),
        user = ctx.user.as_deref().unwrap_or("-"),
    );
    resp
}

async fn route(
    app: &SharedApp,
    req: &mut Req,
    ctx: &mut Ctx,
    path: &str,
    preflight_method: Option<&str>,
) -> Result<Response, ApiError> {
    // rest_cherrypy's HTML override comes first, for any method.
    let accept = req.accept().map(str::to_owned);
    if files::html_override(app, path, accept.as_deref()) {
        ctx.allow = Some("GET, HEAD");
        ctx.route = "app";
        return files::app_page(app, files::FileReq::from(&*req), path).await;
    }
    let endpoint = app.settings.rest.routes.resolve(path);
    if req.method == Method::OPTIONS {
        // Decision D2: the reference answers 500 after setting these; Brine answers 200.
        let mut resp = Response::new(Body::empty());
        if let Ok(r) = &endpoint {
            ctx.allow = r.endpoint.allow();
        }
        if matches!(preflight_method, Some("GET") | Some("POST")) {
            let h = resp.headers_mut();
            h.insert(
                "access-control-allow-methods",
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                "access-control-allow-headers",
                HeaderValue::from_static("Content-Type, X-Auth-Token, X-Requested-With"),
            );
            h.insert("access-control-max-age", HeaderValue::from_static("1400"));
        }
        return Ok(resp);
    }
    let routes::Route { endpoint, extra } = endpoint?;
    ctx.allow = endpoint.allow();
    ctx.route = endpoint.name();
    let files_only = matches!(
        endpoint,
        Endpoint::App | Endpoint::Static(_) | Endpoint::Favicon
    );
    if let (Some(allowed), false) = (&app.settings.rest.authorized_ips, files_only) {
        // The socket's address, never a client-supplied header.
        if !allowed.contains(&req.peer.ip()) {
            tracing::warn!(peer = %req.peer.ip(), "request from an address not in authorized_ips");
            return Err(ApiError::Forbidden("Bad IP".into()));
        }
    }
    if endpoint.session_enabled(&req.method) {
        // Handlers replace it with the session's own id once they know it is valid.
        ctx.cookie = Some(session::session_cookie(&session::random_id()));
    }
    if !endpoint.supports(&req.method) {
        // Resources whose whole class has rest_cherrypy's auth tool check the session before
        // the method: without one, the answer is 401, not 405.
        // (`GET /logout` is the exception: the reference answers 500 there whatever the
        // session, which Brine turns into a plain 405, decision D2.)
        let class_auth = match endpoint {
            Endpoint::Hook(_) => !app.settings.rest.webhook_disable_auth,
            Endpoint::Stats => !app.settings.rest.stats_disable_auth,
            Endpoint::Minions(_) | Endpoint::Jobs(_) => true,
            _ => false,
        };
        if class_auth {
            let s = session::gate(app, &req.headers).await?;
            ctx.cookie = Some(session::session_cookie(&s.token));
            ctx.private = true;
        }
        return Err(ApiError::MethodNotAllowed);
    }
    let get = req.method == Method::GET || req.method == Method::HEAD;
    // Query parameters a GET handler takes: `/events` answers others with its own 400, `/ws`
    // reads `format_events`, `/jobs` accepts `timeout`; files take any.
    let query_ok = match &endpoint {
        Endpoint::Events
        | Endpoint::Ws(_)
        | Endpoint::App
        | Endpoint::Static(_)
        | Endpoint::Favicon => true,
        Endpoint::Jobs(_) => req
            .query
            .as_deref()
            .is_none_or(|q| form_urlencoded::parse(q.as_bytes()).all(|(k, _)| k == "timeout")),
        _ => req.query.as_deref().is_none_or(str::is_empty),
    };
    // A POST to a resource with a path argument takes none (`POST /minions/m1`).
    let post_arg = !get
        && matches!(
            &endpoint,
            Endpoint::Minions(Some(_)) | Endpoint::Jobs(Some(_)) | Endpoint::Keys(Some(_))
        );
    if extra || post_arg || (get && !query_ok) {
        // CherryPy finds no handler signature for these when it calls the handler, which is
        // after the auth gate of session endpoints.
        let gated = match &endpoint {
            Endpoint::Index | Endpoint::Logout => !get,
            Endpoint::Minions(_) | Endpoint::Jobs(_) => true,
            _ => false,
        };
        if gated {
            let s = session::gate(app, &req.headers).await?;
            ctx.cookie = Some(session::session_cookie(&s.token));
            ctx.private = true;
        }
        return Err(ApiError::NotFound("Nothing matches the given URI".into()));
    }
    match (endpoint, get) {
        (Endpoint::Index | Endpoint::Run | Endpoint::Token, true) => index::welcome(req),
        (Endpoint::Index | Endpoint::Jobs(None), false) => {
            index::post_lowstate(app, req, ctx).await
        }
        (Endpoint::Run, false) => throttled(app, req, |req| index::post_run(app, req)).await,
        (Endpoint::Login, true) => login::login_prompt(req),
        (Endpoint::Login, false) => throttled(app, req, |req| login::login(app, req, ctx)).await,
        (Endpoint::Logout, _) => login::logout(app, req, ctx).await,
        (Endpoint::Token, false) => throttled(app, req, |req| login::token(app, req)).await,
        (Endpoint::Minions(mid), true) => minions::get_minions(app, req, ctx, mid.as_deref()).await,
        (Endpoint::Minions(_), false) => minions::post_minions(app, req, ctx).await,
        (Endpoint::Jobs(jid), _) => jobs::get_jobs(app, req, ctx, jid.as_deref()).await,
        (Endpoint::Keys(mid), true) => keys::get_keys(app, req, ctx, mid.as_deref()).await,
        (Endpoint::Keys(_), false) => keys::post_keys(app, req).await,
        (Endpoint::Stats, _) => stats::stats(app, req, ctx).await,
        (Endpoint::Metrics, _) => stats::metrics(app, req, ctx).await,
        (Endpoint::Events, _) => events::events(app, req, ctx).await,
        (Endpoint::Hook(path), _) => hook::hook(app, req, ctx, &path).await,
        (e @ (Endpoint::Ws(_) | Endpoint::AllEvents(_) | Endpoint::FormattedEvents(_)), _) => {
            ws::ws(app, req, ctx, &e).await
        }
        (Endpoint::App, _) => files::app_page(app, files::FileReq::from(&*req), path).await,
        (Endpoint::Static(segments), _) => {
            files::static_file(app, files::FileReq::from(&*req), &segments, path).await
        }
        (Endpoint::Favicon, _) => files::favicon(app, files::FileReq::from(&*req), path).await,
        (Endpoint::OpenApi, _) => Ok(openapi_json(app)),
    }
}

/// The size of a response's body: its `Content-Length`, or the exact size of a body held in
/// memory (hyper writes that length itself); `None` for a streamed body.
fn body_size(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| hyper::body::Body::size_hint(resp.body()).exact())
}

/// Adds the headers every response carries.
fn decorate(
    resp: &mut Response,
    ctx: &Ctx,
    origin: Option<HeaderValue>,
    cors: Option<&CorsOrigin>,
) {
    let h = resp.headers_mut();
    // rest_cherrypy reflects any Origin; with `cors_origin` only allowed origins get the CORS
    // headers (and so browsers refuse the others).
    let allow_origin = match (cors, origin) {
        (None, o) => Some(o.unwrap_or_else(|| HeaderValue::from_static("*"))),
        (Some(CorsOrigin::Any), o) => Some(o.unwrap_or_else(|| HeaderValue::from_static("*"))),
        (Some(CorsOrigin::List(list)), Some(o)) => o
            .to_str()
            .ok()
            .filter(|v| list.iter().any(|allowed| allowed == v))
            .map(|_| o.clone()),
        (Some(CorsOrigin::List(_)), None) => None,
    };
    if let Some(o) = allow_origin {
        h.insert("access-control-allow-origin", o);
        // The reference exposes this literal (a bug clients have adapted to).
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
    } else {
        h.remove("access-control-allow-methods");
        h.remove("access-control-allow-headers");
        h.remove("access-control-max-age");
    }
    if let Some(allow) = ctx.allow {
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(c) = &ctx.cookie {
        h.insert(header::SET_COOKIE, c.clone());
    }
    if ctx.private && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    h.insert(header::SERVER, HeaderValue::from_static("Brine"));
}

/// The request path as logs show it: the token segment of `/ws/<token>`, `/all_events/<token>`
/// and `/formatted_events/<token>` is replaced with `<token>` (query strings are never logged).
fn loggable_path(route: &str, path: &str) -> String {
    let prefix = match route {
        "ws" => "/ws/",
        "all_events" => "/all_events/",
        "formatted_events" => "/formatted_events/",
        _ => return path.to_owned(),
    };
    match path.rfind(prefix) {
        Some(i) if path.len() > i + prefix.len() => {
            format!("{}<token>", &path[..i + prefix.len()])
        }
        _ => path.to_owned(),
    }
}

/// Runs a credential-checking endpoint (`/login`, `/token`, `/run`) behind the login
/// throttle: 429 when the caller's address has no attempt left, and a refused attempt counted
/// against it.
async fn throttled<'r, F, Fut>(
    app: &SharedApp,
    req: &'r mut Req,
    call: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(&'r mut Req) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
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
        return Err(ApiError::TooManyRequests(wait));
    }
    let result = call(req).await;
    if matches!(result, Err(ApiError::Unauthorized(_))) {
        throttle.failed(ip);
    }
    result
}
