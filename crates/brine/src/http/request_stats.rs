//! `collect_stats`: each request counted as CherryPy's `cpstats` tool counts it for the
//! reference's `/stats` (`crate::cpstats`): its request line (no query string, no token
//! segment), its client, the body bytes read as the handler reads them, and at the end its
//! status and answer size.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::response::Response;
use http_body_util::BodyExt;

use crate::app::App;

/// A request being counted.
pub struct Counted {
    id: u64,
    read: Arc<AtomicU64>,
}

/// Starts counting a request when `collect_stats` is on; returns the body to hand on (which
/// counts its bytes as they are read).
pub fn begin(
    app: &App,
    parts: &Parts,
    path: &str,
    peer: SocketAddr,
    body: Body,
) -> (Option<Counted>, Body) {
    if !app.settings.rest.collect_stats {
        return (None, body);
    }
    let token_in_path = app
        .settings
        .rest
        .routes
        .resolve(path)
        .is_ok_and(|r| r.endpoint.token_in_path());
    let line = format!(
        "{} {} {:?}",
        parts.method,
        super::access_log::loggable_path(path, token_in_path),
        parts.version
    );
    let id = app.stats.cherrypy.begin(peer.to_string(), line);
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    let body = Body::new(body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    }));
    (Some(Counted { id, read }), body)
}

impl Counted {
    /// Ends the count with the answer.
    pub fn end(self, app: &App, resp: &Response) {
        let status = resp.status();
        app.stats.cherrypy.end(
            self.id,
            crate::cpstats::Outcome {
                bytes_read: self.read.load(Ordering::Relaxed),
                bytes_written: super::access_log::body_size(resp),
                status: &format!(
                    "{} {}",
                    status.as_str(),
                    status.canonical_reason().unwrap_or("")
                ),
            },
        );
    }
}
