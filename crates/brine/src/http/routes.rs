//! The salt-api URL map: every request is parsed into an [`Endpoint`] once, at the edge, and
//! handlers never look at raw paths (spec §1.1).
//!
//! CherryPy's routing rules reproduced here: paths live under `root_prefix`; a trailing slash
//! is the same resource (`/login/`); extra path segments on a resource that takes none are 404
//! `Nothing matches the given URI`; an unknown path is 404 `The path '<path>' was not found.`;
//! a known resource with an unsupported method is 405 with `Allow`.

use axum::http::Method;

use super::error::ApiError;

/// A salt-api resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/`: welcome (GET) and lowstate (POST).
    Index,
    /// `/login`.
    Login,
    /// `/logout`.
    Logout,
    /// `/token`.
    Token,
    /// `/run`.
    Run,
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
    /// The `Allow` header of the resource (every resource inherits `GET` from the welcome
    /// handler in rest_cherrypy, `/logout` included).
    pub fn allow(&self) -> &'static str {
        match self {
            Endpoint::Events
            | Endpoint::Ws(_)
            | Endpoint::AllEvents(_)
            | Endpoint::FormattedEvents(_) => "GET, HEAD",
            Endpoint::Hook(_) => "POST",
            _ => "GET, HEAD, POST",
        }
    }

    /// Whether rest_cherrypy runs its session tool for this resource and method: then every
    /// response, errors included, refreshes the `session_id` cookie.
    pub fn session_enabled(&self, method: &Method) -> bool {
        match self {
            Endpoint::Login
            | Endpoint::Logout
            | Endpoint::Events
            | Endpoint::Hook(_)
            | Endpoint::Ws(_) => true,
            Endpoint::AllEvents(_) | Endpoint::FormattedEvents(_) => false,
            // `GET /` switches sessions off; every other method of `/` has them.
            Endpoint::Index => method != Method::GET && method != Method::HEAD,
            Endpoint::Token | Endpoint::Run => false,
        }
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
            | Endpoint::FormattedEvents(_) => get,
            _ => get || post,
        }
    }
}

/// Resolves a request path (already without its query) against `root_prefix` (no trailing
/// slash; empty for `/`).
/// Where the routing table differs between deployments.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// `root_prefix` without a trailing slash (empty for `/`).
    pub root_prefix: String,
    /// `enable_sessions`.
    pub enable_sessions: bool,
    /// `webhook_url` without slashes (default `hook`).
    pub webhook: String,
}

impl RouteConfig {
    /// Resolves a request path (already without its query).
    pub fn resolve(&self, path: &str) -> Result<Route, ApiError> {
        resolve(path, self)
    }
}

fn resolve(path: &str, cfg: &RouteConfig) -> Result<Route, ApiError> {
    let root_prefix = cfg.root_prefix.as_str();
    let enable_sessions = cfg.enable_sessions;
    let not_found = || ApiError::NotFound(format!("The path '{path}' was not found."));
    let rest = if root_prefix.is_empty() {
        path
    } else {
        match path.strip_prefix(root_prefix) {
            Some(r) if r.is_empty() || r.starts_with('/') => r,
            _ => return Err(not_found()),
        }
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some((first, extra)) = segments.split_first() else {
        return Ok(Route {
            endpoint: Endpoint::Index,
            extra: false,
        });
    };
    if *first == cfg.webhook {
        return Ok(Route {
            endpoint: Endpoint::Hook(extra.iter().map(|s| (*s).to_owned()).collect()),
            extra: false,
        });
    }
    // WebSocket URLs carry a token as their one extra segment.
    let token = || match extra {
        [t] if t.bytes().all(|b| b.is_ascii_hexdigit()) => Some((*t).to_owned()),
        _ => None,
    };
    match *first {
        "ws" if extra.is_empty() => {
            return Ok(Route {
                endpoint: Endpoint::Ws(None),
                extra: false,
            })
        }
        "ws" | "all_events" | "formatted_events" => {
            let Some(t) = token() else {
                return Err(not_found());
            };
            let endpoint = match *first {
                "ws" => Endpoint::Ws(Some(t)),
                "all_events" => Endpoint::AllEvents(t),
                _ => Endpoint::FormattedEvents(t),
            };
            return Ok(Route {
                endpoint,
                extra: false,
            });
        }
        _ => {}
    }
    let endpoint = match *first {
        "events" => Endpoint::Events,
        "login" if enable_sessions => Endpoint::Login,
        "logout" if enable_sessions => Endpoint::Logout,
        "token" => Endpoint::Token,
        "run" => Endpoint::Run,
        _ => return Err(not_found()),
    };
    Ok(Route {
        endpoint,
        extra: !extra.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(prefix: &str, sessions: bool) -> RouteConfig {
        RouteConfig {
            root_prefix: prefix.into(),
            enable_sessions: sessions,
            webhook: "hook".into(),
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
        assert!(cfg("/api", true).resolve("/apix/login").is_err());
        assert!(cfg("", false).resolve("/login").is_err());
        assert_eq!(
            ep("/hook/a/b"),
            Ok((Endpoint::Hook(vec!["a".into(), "b".into()]), false))
        );
        assert_eq!(ep("/hook"), Ok((Endpoint::Hook(vec![]), false)));
        assert_eq!(ep("/events"), Ok((Endpoint::Events, false)));
    }
}
