//! `GET /stats` (salt-api's statistics endpoint, with Brine's own figures) and `GET /metrics`
//! (Prometheus text). `/stats` is a session endpoint unless `stats_disable_auth`; pepper uses
//! it as a "is my token still valid" probe, so the status is what matters (200 or 401).
//! `/metrics` also needs a session unless `brine: {metrics_disable_auth: true}`.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use super::error::ApiError;
use super::{ok, session, Ctx, Req};
use crate::app::SharedApp;

/// `GET /stats`.
pub async fn stats(app: &SharedApp, req: &mut Req, ctx: &mut Ctx) -> Result<Response, ApiError> {
    if !app.settings.rest.stats_disable_auth {
        session::gate_request(app, &req.headers, ctx).await?;
    }
    let format = req.format()?;
    let bind = std::net::SocketAddr::new(app.settings.rest.host, app.settings.rest.port);
    let body = app
        .stats
        .json(app.settings.rest.collect_stats, &app.live(), bind);
    Ok(ok(format, StatusCode::OK, &body))
}

/// `GET /metrics`.
pub async fn metrics(app: &SharedApp, req: &mut Req, ctx: &mut Ctx) -> Result<Response, ApiError> {
    if !app.settings.brine.metrics_disable_auth {
        let s = session::gate(app, &req.headers).await?;
        ctx.user = Some(s.info.name);
    }
    let mut resp = Response::new(Body::from(app.stats.prometheus(&app.live())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}
