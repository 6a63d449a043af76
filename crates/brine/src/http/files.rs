//! Files salt-api serves besides its API: the `app` page (at `app_path` and below, and for any
//! request that wants HTML when the HTML override applies), the `static` directory under
//! `static_path`, and `favicon`.
//!
//! Serving is `tower-http`'s `ServeFile`/`ServeDir`: content types by extension,
//! `Last-Modified` and conditional requests, byte ranges, and paths confined to the configured
//! directory. A missing file is CherryPy's HTML 404 (SaltGUI probes optional files under
//! `/static` and expects exactly that).
//!
//! The HTML override (rest_cherrypy's `html_override_tool`): with `app` configured, a request
//! whose path is not under `app_path` or `static_path`, whose `Accept` is not exactly `*/*`
//! and which accepts `text/html` by CherryPy's rules (no `Accept` header counts) gets the app
//! page, whatever its method. That is how SaltGUI's deep links (`/minions`, `/jobs`) reload.

use std::path::Path;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::error::ApiError;
use super::negotiate::choose;
use super::Req;
use crate::app::SharedApp;

/// Whether the HTML override serves the app page for this request.
pub fn html_override(app: &SharedApp, path: &str, accept: Option<&str>) -> bool {
    // Only with an `app` configured (the reference's `html_override_tool`).
    if app.settings.rest.app.is_none() {
        return false;
    }
    let routes = &app.settings.rest.routes;
    let app_path = &routes.app;
    let local = routes.local(path).unwrap_or(path);
    let static_path = routes.static_path.as_deref().unwrap_or("static");
    if local.starts_with(&format!("/{app_path}")) || local.starts_with(&format!("/{static_path}")) {
        return false;
    }
    if accept == Some("*/*") {
        return false;
    }
    matches!(choose(accept, &["text/html"]), Ok("text/html"))
}

async fn serve<S>(
    service: S,
    req: FileReq,
    rel: &str,
    shown_path: &str,
) -> Result<Response, ApiError>
where
    S: tower::Service<Request<Body>, Error = std::convert::Infallible> + Send,
    S::Response: Into<Response<tower_http::services::fs::ServeFileSystemResponseBody>>,
    S::Future: Send,
{
    let request = file_request(&req, rel, shown_path)?;
    let Ok(resp) = service.oneshot(request).await;
    let resp: Response<_> = resp.into();
    if resp.status() == StatusCode::NOT_FOUND {
        return Err(ApiError::NotFound(format!(
            "The path '{shown_path}' was not found."
        )));
    }
    Ok(resp.map(Body::new))
}

/// What file serving needs of a request (owned: `Req` holds a body that is not `Sync`, so a
/// reference to it cannot cross an await).
pub struct FileReq {
    method: Method,
    headers: axum::http::HeaderMap,
}

impl From<&Req> for FileReq {
    fn from(req: &Req) -> FileReq {
        FileReq {
            method: req.method.clone(),
            headers: req.headers.clone(),
        }
    }
}

/// The request the file service sees: the method and the conditional/range headers.
fn file_request(req: &FileReq, rel: &str, shown_path: &str) -> Result<Request<Body>, ApiError> {
    let mut builder = Request::builder()
        .method(if req.method == Method::HEAD {
            Method::HEAD
        } else {
            Method::GET
        })
        .uri(rel);
    for name in [
        "if-modified-since",
        "if-none-match",
        "if-unmodified-since",
        "if-match",
        "range",
        "if-range",
        "accept-encoding",
    ] {
        if let Some(v) = req.headers.get(name) {
            builder = builder.header(name, v);
        }
    }
    builder
        .body(Body::empty())
        .map_err(|_| ApiError::NotFound(format!("The path '{shown_path}' was not found.")))
}

/// The `app` page.
pub async fn app_page(
    app: &SharedApp,
    req: FileReq,
    shown_path: &str,
) -> Result<Response, ApiError> {
    let Some(file) = app.settings.rest.app.as_deref() else {
        return Err(ApiError::NotFound(format!(
            "The path '{shown_path}' was not found."
        )));
    };
    serve(ServeFile::new(file), req, "/", shown_path).await
}

/// A file under `static`.
pub async fn static_file(
    app: &SharedApp,
    req: FileReq,
    segments: &[String],
    shown_path: &str,
) -> Result<Response, ApiError> {
    let Some(dir) = app.settings.rest.static_dir.as_deref() else {
        return Err(ApiError::NotFound(format!(
            "The path '{shown_path}' was not found."
        )));
    };
    // Percent-encoded segments arrive encoded; ServeDir decodes and confines them.
    let rel = format!("/{}", segments.join("/"));
    serve(ServeDir::new(dir), req, &rel, shown_path).await
}

/// `/favicon.ico`.
pub async fn favicon(
    app: &SharedApp,
    req: FileReq,
    shown_path: &str,
) -> Result<Response, ApiError> {
    let Some(file) = app.settings.rest.favicon.as_deref() else {
        return Err(ApiError::NotFound(format!(
            "The path '{shown_path}' was not found."
        )));
    };
    serve(ServeFile::new(Path::new(file)), req, "/", shown_path).await
}
