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
        "GET, HEAD, POST"
    }

    /// Whether rest_cherrypy runs its session tool for this resource and method: then every
    /// response, errors included, refreshes the `session_id` cookie.
    pub fn session_enabled(&self, method: &Method) -> bool {
        match self {
            Endpoint::Login | Endpoint::Logout => true,
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
            Endpoint::Logout => post,
            _ => get || post,
        }
    }
}

/// Resolves a request path (already without its query) against `root_prefix` (no trailing
/// slash; empty for `/`).
pub fn resolve(path: &str, root_prefix: &str, enable_sessions: bool) -> Result<Route, ApiError> {
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
    let endpoint = match *first {
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

    #[test]
    fn paths_resolve_like_cherrypy() {
        let ep = |p: &str| resolve(p, "", true).map(|r| (r.endpoint, r.extra));
        assert_eq!(ep("/"), Ok((Endpoint::Index, false)));
        assert_eq!(ep(""), Ok((Endpoint::Index, false)));
        assert_eq!(ep("/login/"), Ok((Endpoint::Login, false)));
        assert_eq!(ep("/run"), Ok((Endpoint::Run, false)));
        assert_eq!(ep("/login/x"), Ok((Endpoint::Login, true)));
        assert_eq!(
            resolve("/nonexistent/path", "", true),
            Err(ApiError::NotFound(
                "The path '/nonexistent/path' was not found.".into()
            ))
        );
        assert_eq!(
            resolve("/api/login", "/api", true).map(|r| r.endpoint),
            Ok(Endpoint::Login)
        );
        assert!(resolve("/apix/login", "/api", true).is_err());
        assert!(resolve("/login", "", false).is_err());
    }
}
