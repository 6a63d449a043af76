//! `GET /stats` (salt-api's statistics endpoint, with Brine's own figures) and `GET /metrics`
//! (Prometheus text). `/stats` is a session endpoint unless `stats_disable_auth`; pepper uses
//! it as a "is my token still valid" probe, so the status is what matters (200 or 401).
//! `/metrics` also needs a session unless `brine: {metrics_disable_auth: true}`.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use super::answer::{Answer, Marks};
use super::error::ApiError;
use super::{ok, session, Req};
use crate::app::SharedApp;

/// `GET /stats`.
pub async fn stats(app: &SharedApp, req: &mut Req) -> Answer {
    if app.settings.rest.stats_disable_auth {
        return figures(app, req).into();
    }
    session::gated(app, req, |req, _| async move { figures(app, req) }).await
}

fn figures(app: &SharedApp, req: &Req) -> Result<Response, ApiError> {
    let format = req.format()?;
    let bind = std::net::SocketAddr::new(app.settings.rest.host, app.settings.rest.port);
    let body = app
        .stats
        .json(app.settings.rest.collect_stats, &app.live(), bind);
    Ok(ok(format, StatusCode::OK, &body))
}

/// `GET /metrics`.
pub async fn metrics(app: &SharedApp, req: &mut Req) -> Answer {
    let mut marks = Marks::default();
    if !app.settings.brine.metrics_disable_auth {
        match session::gate(app, &req.headers).await {
            Ok(s) => marks.user = Some(s.info.name),
            Err(e) => return e.into(),
        }
    }
    let mut resp = Response::new(Body::from(app.stats.prometheus(&app.live())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    marks.answer(Ok(resp))
}
