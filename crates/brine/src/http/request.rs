//! A request as handlers see it: method, headers, query, the unread body and the peer, with
//! the body's reading and parsing within Brine's limits and the negotiated output format.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method};
use http_body_util::BodyExt;
use serde_json::Value;

use super::body;
use super::error::ApiError;
use super::negotiate::{output_format, Format, NegotiationError};

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
            .get::<super::server::ConnKill>()
            .map(|k| k.0.clone())
    }
}
