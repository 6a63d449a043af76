//! The salt-api URL map: every request is parsed into an [`Endpoint`] once, at the edge, and
//! handlers never look at raw paths.
//!
//! CherryPy's routing rules reproduced here: paths live under `root_prefix`; a trailing slash
//! is the same resource (`/login/`); extra path segments on a resource that takes none are 404
//! `Nothing matches the given URI`; an unknown path is 404 `The path '<path>' was not found.`;
//! a known resource with an unsupported method is 405 with `Allow`.

use axum::http::Method;

use super::answer::Answer;
use super::error::ApiError;
use super::{
    events, files, hook, index, jobs, keys, login, minions, openapi, session, stats, ws, Req,
};
use crate::app::SharedApp;
use crate::settings::RestSettings;
pub use crate::settings::RouteConfig;

/// A salt-api resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/` (also `/index`): welcome (GET) and lowstate (POST).
    Index,
    /// `/login`.
    Login,
    /// `/logout`.
    Logout,
    /// `/token`.
    Token,
    /// `/run`.
    Run,
    /// `/minions[/<mid>]`.
    Minions(Option<String>),
    /// `/jobs[/<jid>]`.
    Jobs(Option<String>),
    /// `/jobs/<jid>/status` (Brine's).
    JobStatus(String),
    /// `/jobs/<jid>/events` (Brine's): one job's events as SSE. Below `/jobs`, so refused as
    /// the reference refuses that URL (the `Allow` of `/jobs`; `POST` finds no handler).
    JobEvents(String),
    /// `/keys[/<mid>]`.
    Keys(Option<String>),
    /// `/stats`.
    Stats,
    /// `/metrics` (Brine's Prometheus endpoint).
    Metrics,
    /// `/events`: the SSE stream of the event bus.
    Events,
    /// `/hook[/<path>...]` (URL segment from `webhook_url`): fires `salt/netapi/hook/<path>`.
    Hook(Vec<String>),
    /// `/ws` and `/ws/<token>`: rest_cherrypy's WebSocket of the event bus.
    Ws(Option<String>),
    /// rest_tornado's `/all_events/<token>`.
    AllEvents(String),
    /// rest_tornado's `/formatted_events/<token>`.
    FormattedEvents(String),
    /// `app_path` and everything below it: the configured `app` file.
    App,
    /// A file below `static_path` (the path segments under it).
    Static(Vec<String>),
    /// `/favicon.ico` when `favicon` is configured.
    Favicon,
    /// `/openapi.json`: the OpenAPI description of this API (Brine's own).
    OpenApi,
}

/// A resolved request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The resource.
    pub endpoint: Endpoint,
    /// Path segments beyond the resource's own (CherryPy answers those with 404 `Nothing
    /// matches the given URI`, but only when it calls the handler: after the auth gate).
    pub extra: bool,
}

impl Endpoint {
    /// A short name of the route family (metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Index => "index",
            Endpoint::Login => "login",
            Endpoint::Logout => "logout",
            Endpoint::Token => "token",
            Endpoint::Run => "run",
            Endpoint::Minions(_) => "minions",
            Endpoint::Jobs(_) => "jobs",
            Endpoint::JobStatus(_) => "job_status",
            Endpoint::JobEvents(_) => "job_events",
            Endpoint::Keys(_) => "keys",
            Endpoint::Stats => "stats",
            Endpoint::Metrics => "metrics",
            Endpoint::Events => "events",
            Endpoint::Hook(_) => "hook",
            Endpoint::Ws(_) => "ws",
            Endpoint::AllEvents(_) => "all_events",
            Endpoint::FormattedEvents(_) => "formatted_events",
            Endpoint::App => "app",
            Endpoint::Static(_) => "static",
            Endpoint::Favicon => "favicon",
            Endpoint::OpenApi => "openapi",
        }
    }

    /// The `Allow` header of the resource (every lowstate resource inherits `GET` from the
    /// welcome handler in rest_cherrypy, `/logout` included). `None`: no `Allow` header.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            Endpoint::Events
            | Endpoint::Ws(_)
            | Endpoint::AllEvents(_)
            | Endpoint::FormattedEvents(_)
            | Endpoint::Stats
            | Endpoint::Metrics
            | Endpoint::OpenApi
            | Endpoint::App => Some("GET, HEAD"),
            Endpoint::Hook(_) => Some("POST"),
            Endpoint::Static(_) | Endpoint::Favicon => None,
            _ => Some("GET, HEAD, POST"),
        }
    }

    /// Whether rest_cherrypy runs its session tool for this resource and method: then every
    /// response, errors included, refreshes the `session_id` cookie.
    pub fn session_enabled(&self, method: &Method) -> bool {
        let get = method == Method::GET || method == Method::HEAD;
        match self {
            Endpoint::Login
            | Endpoint::Logout
            | Endpoint::Events
            | Endpoint::Hook(_)
            | Endpoint::Ws(_)
            | Endpoint::Minions(_)
            | Endpoint::Jobs(_)
            | Endpoint::JobStatus(_)
            | Endpoint::JobEvents(_)
            | Endpoint::Stats => true,
            // `GET /` switches sessions off; every other method of `/` has them.
            Endpoint::Index => !get,
            // `POST /keys` switches them off.
            Endpoint::Keys(_) => get,
            Endpoint::AllEvents(_)
            | Endpoint::FormattedEvents(_)
            | Endpoint::Token
            | Endpoint::Run
            | Endpoint::Metrics
            | Endpoint::OpenApi
            | Endpoint::App
            | Endpoint::Static(_)
            | Endpoint::Favicon => false,
        }
    }

    /// Whether rest_cherrypy's auth tool guards the resource's whole class, so that a method
    /// the resource lacks is 401 without a session, before it is 405.
    pub fn class_auth(&self, settings: &RestSettings) -> bool {
        match self {
            Endpoint::Hook(_) => !settings.webhook_disable_auth,
            Endpoint::Stats => !settings.stats_disable_auth,
            Endpoint::Minions(_)
            | Endpoint::Jobs(_)
            | Endpoint::JobStatus(_)
            | Endpoint::JobEvents(_) => true,
            _ => false,
        }
    }

    /// Whether a `GET` with this query string finds a handler: `/events` answers other
    /// parameters with its own 400, `/ws` reads `format_events`, `/jobs` accepts `timeout`,
    /// files take any; other resources take none.
    pub fn takes_query(&self, query: Option<&str>) -> bool {
        match self {
            // The streams read `tag` (tornado's sockets ignore any other parameter).
            Endpoint::Events
            | Endpoint::Ws(_)
            | Endpoint::AllEvents(_)
            | Endpoint::FormattedEvents(_)
            | Endpoint::App
            | Endpoint::Static(_)
            | Endpoint::Favicon => true,
            // `timeout` is the reference's (ignored); the others are Brine's paging.
            Endpoint::Jobs(None) => query.is_none_or(|q| {
                form_urlencoded::parse(q.as_bytes()).all(|(k, _)| {
                    ["timeout", "limit", "before", "fun", "user", "tgt"].contains(&k.as_ref())
                })
            }),
            // `wait` is Brine's.
            Endpoint::Jobs(Some(_)) => query.is_none_or(|q| {
                form_urlencoded::parse(q.as_bytes()).all(|(k, _)| k == "timeout" || k == "wait")
            }),
            _ => query.is_none_or(str::is_empty),
        }
    }

    /// Whether a request that finds no handler here (404 `Nothing matches the given URI`) is
    /// refused by the session gate first: CherryPy looks for the handler after its auth tool.
    pub fn gated_when_unmatched(&self, method: &Method) -> bool {
        let get = method == Method::GET || method == Method::HEAD;
        match self {
            Endpoint::Index | Endpoint::Logout => !get,
            Endpoint::Minions(_)
            | Endpoint::Jobs(_)
            | Endpoint::JobStatus(_)
            | Endpoint::JobEvents(_) => true,
            _ => false,
        }
    }

    /// Whether the answer to `method` on this route finds a handler at all: a `POST` to a
    /// resource with a path argument takes none (`POST /minions/m1`), nor does a path with
    /// extra segments or a `GET` with a query the resource does not take.
    pub fn matches(&self, method: &Method, extra: bool, query: Option<&str>) -> bool {
        let get = method == Method::GET || method == Method::HEAD;
        let post_arg = !get
            && matches!(
                self,
                Endpoint::Minions(Some(_))
                    | Endpoint::Jobs(Some(_))
                    | Endpoint::JobStatus(_)
                    | Endpoint::JobEvents(_)
                    | Endpoint::Keys(Some(_))
            );
        !(extra || post_arg || (get && !self.takes_query(query)))
    }

    /// Whether the request path carries a token (`/ws/<token>`, `/all_events/<token>`,
    /// `/formatted_events/<token>`): logs show `<token>` in its place.
    pub fn token_in_path(&self) -> bool {
        matches!(
            self,
            Endpoint::Ws(Some(_)) | Endpoint::AllEvents(_) | Endpoint::FormattedEvents(_)
        )
    }

    /// Only files: no `authorized_ips` check (rest_cherrypy applies it to the API).
    pub fn is_file(&self) -> bool {
        matches!(
            self,
            Endpoint::App | Endpoint::Static(_) | Endpoint::Favicon
        )
    }

    /// Whether the resource answers `method` at all.
    pub fn supports(&self, method: &Method) -> bool {
        let get = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        match self {
            Endpoint::Logout | Endpoint::Hook(_) => post,
            Endpoint::Events
            | Endpoint::Ws(_)
            | Endpoint::AllEvents(_)
            | Endpoint::FormattedEvents(_)
            | Endpoint::Stats
            | Endpoint::Metrics
            | Endpoint::OpenApi
            | Endpoint::App
            | Endpoint::Static(_)
            | Endpoint::Favicon => get,
            _ => get || post,
        }
    }
}

impl RouteConfig {
    /// Resolves a request path (already without its query).
    pub fn resolve(&self, path: &str) -> Result<Route, ApiError> {
        resolve(path, self)
    }

    /// The path below `root_prefix`, or `None` when the path is outside it.
    pub fn local<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.root_prefix.is_empty() {
            return Some(path);
        }
        match path.strip_prefix(self.root_prefix.as_str()) {
            Some(r) if r.is_empty() || r.starts_with('/') => Some(r),
            _ => None,
        }
    }
}

fn resolve(path: &str, cfg: &RouteConfig) -> Result<Route, ApiError> {
    let enable_sessions = cfg.enable_sessions;
    let not_found = || ApiError::NotFound(format!("The path '{path}' was not found."));
    let Some(rest) = cfg.local(path) else {
        return Err(ApiError::NotMounted);
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some((first, extra)) = segments.split_first() else {
        return Ok(Route {
            endpoint: Endpoint::Index,
            extra: false,
        });
    };
    let route = |endpoint| {
        Ok(Route {
            endpoint,
            extra: false,
        })
    };
    let all = || extra.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    if cfg.static_path.as_deref() == Some(*first) {
        return route(Endpoint::Static(all()));
    }
    if cfg.app == *first {
        return route(Endpoint::App);
    }
    if *first == cfg.webhook {
        return route(Endpoint::Hook(all()));
    }
    if *first == "favicon.ico" && cfg.favicon && extra.is_empty() {
        return route(Endpoint::Favicon);
    }
    if *first == "openapi.json" {
        return Ok(Route {
            endpoint: Endpoint::OpenApi,
            extra: !extra.is_empty(),
        });
    }
    // WebSocket URLs carry a token as their one extra segment.
    let token = || match extra {
        [t] if t.bytes().all(|b| b.is_ascii_hexdigit()) => Some((*t).to_owned()),
        _ => None,
    };
    match *first {
        "ws" if extra.is_empty() => return route(Endpoint::Ws(None)),
        "ws" | "all_events" | "formatted_events" => {
            let Some(t) = token() else {
                return Err(not_found());
            };
            return route(match *first {
                "ws" => Endpoint::Ws(Some(t)),
                "all_events" => Endpoint::AllEvents(t),
                _ => Endpoint::FormattedEvents(t),
            });
        }
        _ => {}
    }
    if *first == "jobs" && enable_sessions {
        match extra {
            [jid, "status"] => return route(Endpoint::JobStatus((*jid).to_owned())),
            [jid, "events"] => return route(Endpoint::JobEvents((*jid).to_owned())),
            _ => {}
        }
    }
    // Resources that take one optional path argument.
    let arg = extra.first().map(|s| (*s).to_owned());
    let (endpoint, takes_arg) = match *first {
        "index" => (Endpoint::Index, false),
        "events" => (Endpoint::Events, false),
        "login" if enable_sessions => (Endpoint::Login, false),
        "logout" if enable_sessions => (Endpoint::Logout, false),
        "token" => (Endpoint::Token, false),
        "run" => (Endpoint::Run, false),
        "stats" => (Endpoint::Stats, false),
        "metrics" => (Endpoint::Metrics, false),
        "minions" if enable_sessions => (Endpoint::Minions(arg), true),
        "jobs" if enable_sessions => (Endpoint::Jobs(arg), true),
        "keys" => (Endpoint::Keys(arg), true),
        _ => return Err(not_found()),
    };
    let allowed = usize::from(takes_arg);
    Ok(Route {
        endpoint,
        extra: extra.len() > allowed,
    })
}

/// The refusals before a handler (a method or a URI the resource does not take, each behind
/// the session gate where rest_cherrypy's auth tool comes first), else the handler's answer.
pub async fn admit(
    app: &SharedApp,
    req: &mut Req,
    endpoint: Endpoint,
    extra: bool,
    path: &str,
) -> Answer {
    // (`GET /logout` is 405 whatever the session, where the reference answers 500: D2.)
    let refusal = if !endpoint.supports(&req.method) {
        Some((
            endpoint.class_auth(&app.settings.rest),
            ApiError::MethodNotAllowed,
        ))
    } else if !endpoint.matches(&req.method, extra, req.query.as_deref()) {
        Some((
            endpoint.gated_when_unmatched(&req.method),
            ApiError::NotFound("Nothing matches the given URI".into()),
        ))
    } else {
        None
    };
    match refusal {
        None => dispatch(app, req, endpoint, path).await,
        Some((false, e)) => e.into(),
        Some((true, e)) => session::gated(app, req, |_, _| async { Err(e) }).await,
    }
}

/// The handler of each resource and method (the request has passed every check above).
pub async fn dispatch(app: &SharedApp, req: &mut Req, endpoint: Endpoint, path: &str) -> Answer {
    let get = req.method == Method::GET || req.method == Method::HEAD;
    match (endpoint, get) {
        (Endpoint::Index | Endpoint::Run | Endpoint::Token, true) => index::welcome(req).into(),
        (Endpoint::Index | Endpoint::Jobs(None), false) => index::post_lowstate(app, req).await,
        (Endpoint::Run, false) => {
            login::throttled(app, req, |req| async move {
                index::post_run(app, req).await.into()
            })
            .await
        }
        (Endpoint::Login, true) => login::login_prompt(req).into(),
        (Endpoint::Login, false) => login::throttled(app, req, |req| login::login(app, req)).await,
        (Endpoint::Logout, _) => login::logout(app, req).await,
        (Endpoint::Token, false) => {
            login::throttled(app, req, |req| async move {
                login::token(app, req).await.into()
            })
            .await
        }
        (Endpoint::Minions(mid), true) => minions::get_minions(app, req, mid.as_deref()).await,
        (Endpoint::Minions(_), false) => minions::post_minions(app, req).await,
        (Endpoint::Jobs(jid), _) => jobs::get_jobs(app, req, jid.as_deref()).await,
        (Endpoint::JobStatus(jid), _) => jobs::get_status(app, req, &jid).await,
        (Endpoint::JobEvents(jid), _) => jobs::get_events(app, req, &jid).await,
        (Endpoint::Keys(mid), true) => keys::get_keys(app, req, mid.as_deref()).await,
        (Endpoint::Keys(_), false) => keys::post_keys(app, req).await.into(),
        (Endpoint::Stats, _) => stats::stats(app, req).await,
        (Endpoint::Metrics, _) => stats::metrics(app, req).await,
        (Endpoint::Events, _) => events::events(app, req).await,
        (Endpoint::Hook(path), _) => hook::hook(app, req, &path).await,
        (e @ (Endpoint::Ws(_) | Endpoint::AllEvents(_) | Endpoint::FormattedEvents(_)), _) => {
            ws::ws(app, req, &e).await
        }
        (Endpoint::App, _) => files::app_page(app, files::FileReq::from(&*req), path)
            .await
            .into(),
        (Endpoint::Static(segments), _) => {
            files::static_file(app, files::FileReq::from(&*req), &segments, path)
                .await
                .into()
        }
        (Endpoint::Favicon, _) => files::favicon(app, files::FileReq::from(&*req), path)
            .await
            .into(),
        (Endpoint::OpenApi, _) => openapi::answer(app).into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A route table under `prefix` with every optional route on (also for server.rs's tests).
    pub(crate) fn cfg(prefix: &str, sessions: bool) -> RouteConfig {
        RouteConfig {
            root_prefix: prefix.into(),
            enable_sessions: sessions,
            webhook: "hook".into(),
            app: "app".into(),
            static_path: Some("static".into()),
            favicon: false,
        }
    }

    #[test]
    fn paths_resolve_like_cherrypy() {
        let ep = |p: &str| cfg("", true).resolve(p).map(|r| (r.endpoint, r.extra));
        assert_eq!(ep("/"), Ok((Endpoint::Index, false)));
        assert_eq!(ep(""), Ok((Endpoint::Index, false)));
        assert_eq!(ep("/login/"), Ok((Endpoint::Login, false)));
        assert_eq!(ep("/run"), Ok((Endpoint::Run, false)));
        assert_eq!(ep("/login/x"), Ok((Endpoint::Login, true)));
        assert_eq!(
            cfg("", true).resolve("/nonexistent/path"),
            Err(ApiError::NotFound(
                "The path '/nonexistent/path' was not found.".into()
            ))
        );
        assert_eq!(
            cfg("/api", true).resolve("/api/login").map(|r| r.endpoint),
            Ok(Endpoint::Login)
        );
        assert_eq!(
            cfg("/api", true).resolve("/apix/login"),
            Err(ApiError::NotMounted)
        );
        assert!(cfg("", false).resolve("/login").is_err());
        assert_eq!(
            ep("/hook/a/b"),
            Ok((Endpoint::Hook(vec!["a".into(), "b".into()]), false))
        );
        assert_eq!(ep("/hook"), Ok((Endpoint::Hook(vec![]), false)));
        assert_eq!(ep("/events"), Ok((Endpoint::Events, false)));
        assert_eq!(
            ep("/minions/m1"),
            Ok((Endpoint::Minions(Some("m1".into())), false))
        );
        assert_eq!(ep("/minions/"), Ok((Endpoint::Minions(None), false)));
        assert_eq!(
            ep("/minions/m1/x"),
            Ok((Endpoint::Minions(Some("m1".into())), true))
        );
        assert_eq!(ep("/keys"), Ok((Endpoint::Keys(None), false)));
        assert_eq!(ep("/index"), Ok((Endpoint::Index, false)));
        assert_eq!(ep("/app/minions/x"), Ok((Endpoint::App, false)));
        assert_eq!(
            ep("/static/scripts/a.js"),
            Ok((
                Endpoint::Static(vec!["scripts".into(), "a.js".into()]),
                false
            ))
        );
        assert!(cfg("", false).resolve("/minions").is_err());
    }
}
