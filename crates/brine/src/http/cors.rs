//! CORS as rest_cherrypy does it: every answer reflects the caller's `Origin` (or `*`) and
//! allows credentials; with `cors_origin` set, only the listed origins get those headers, so
//! browsers refuse the others. `OPTIONS` is answered here too (the preflight).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

use crate::settings::CorsOrigin;

/// The answer to an `OPTIONS` request: empty, with the preflight headers when the browser
/// asks about `GET` or `POST` (decision D2: the reference answers 500 after setting these).
pub fn preflight(requested_method: Option<&str>) -> Response {
    let mut resp = Response::new(Body::empty());
    if matches!(requested_method, Some("GET") | Some("POST")) {
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
    resp
}

/// Adds the CORS headers of an answer to a request from `origin` (and takes the preflight
/// headers away from an origin that is not allowed).
pub fn apply(h: &mut HeaderMap, origin: Option<HeaderValue>, cors: Option<&CorsOrigin>) {
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
}
