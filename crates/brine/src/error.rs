//! The one error type of Brine's requests: what went wrong, its HTTP status and the message
//! the client sees (rest_cherrypy's words where the reference has the case). The cause of an
//! error is logged where it happens, never kept here, so no internal detail can reach a
//! response. Rendering (CherryPy's HTML page, or a negotiated JSON/YAML body) is the HTTP
//! layer's job: `http::error`.

use axum::http::StatusCode;

/// An error of a request. Messages are the reference's, verbatim.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 400 with a message (`Lowstates must be a list`, `Invalid JSON document`, ...).
    BadRequest(String),
    /// 401 with a message; [`ApiError::unauthorized`] gives CherryPy's default one.
    Unauthorized(String),
    /// 403 with a message (`Bad IP`).
    Forbidden(String),
    /// 404 with a message.
    NotFound(String),
    /// 404 with no body: a path outside `root_prefix`, where CherryPy has nothing mounted.
    NotMounted,
    /// 405 (the caller adds `Allow`).
    MethodNotAllowed,
    /// 406 for a request body type salt-api does not read.
    UnsupportedContentType,
    /// 406 for an `Accept` header that matches neither output type (the header as sent).
    NotAcceptable(String),
    /// 413: the body is over `max_request_body_size`.
    PayloadTooLarge(usize),
    /// 500 JSON/YAML: an unexpected error inside a handler.
    Internal,
    /// 503 JSON: the master cannot be reached (the text says why, without secrets).
    MasterUnavailable(String),
    /// 503 JSON: too many requests are already waiting for the master.
    Busy,
    /// 504: a synchronous runner or wheel call did not return in time.
    GatewayTimeout,
    /// 429 JSON with `Retry-After`: too many login attempts from the caller's address.
    TooManyRequests(std::time::Duration),
}

/// CherryPy's default 401 message.
pub const NO_PERMISSION: &str = "No permission -- see authorization schemes";

impl ApiError {
    /// 401 with CherryPy's default message.
    pub fn unauthorized() -> ApiError {
        ApiError::Unauthorized(NO_PERMISSION.into())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NotMounted => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedContentType | ApiError::NotAcceptable(_) => {
                StatusCode::NOT_ACCEPTABLE
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::MasterUnavailable(_) | ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The message shown to the client.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m) => m.clone(),
            ApiError::NotMounted => String::new(),
            ApiError::MethodNotAllowed => "Specified method is invalid for this resource".into(),
            ApiError::UnsupportedContentType => "Content type not supported".into(),
            ApiError::NotAcceptable(accept) => format!(
                "Your client sent this Accept header: {accept}. But this resource only emits \
                 these media types: application/json, application/x-yaml."
            ),
            ApiError::PayloadTooLarge(limit) => {
                format!("The request body is larger than the limit of {limit} bytes.")
            }
            ApiError::Internal => "An unexpected error occurred".into(),
            ApiError::MasterUnavailable(why) => why.clone(),
            ApiError::Busy => {
                "Too many requests are waiting for the Salt master; try again shortly.".into()
            }
            ApiError::GatewayTimeout => {
                "The gateway server did not receive a timely response".into()
            }
            ApiError::TooManyRequests(wait) => format!(
                "Too many login attempts from this address; retry in {} s.",
                wait.as_secs()
            ),
        }
    }
}
