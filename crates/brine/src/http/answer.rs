//! What a handler gives back to the pipeline: its response or refusal ([`Answer`]), with the
//! marks ([`Marks`]) the pipeline puts on whichever of the two goes out: the session cookie,
//! `Cache-Control: private` and the user for the access log. A refusal after the session gate
//! carries the session's marks too, as rest_cherrypy's answers do.

use axum::http::HeaderValue;
use axum::response::Response;

use super::error::ApiError;

/// What the pipeline adds to an answer (see the module notes).
#[derive(Debug, Default)]
pub struct Marks {
    /// `Set-Cookie` to send (`None`: the pipeline's default, if any).
    pub cookie: Option<HeaderValue>,
    /// Whether the request passed a session gate (`Cache-Control: private`).
    pub private: bool,
    /// The user the request acted as, for the access log.
    pub user: Option<String>,
}

impl Marks {
    /// The answer `result`, carrying these marks.
    pub fn answer(self, result: Result<Response, ApiError>) -> Answer {
        Answer {
            result,
            marks: self,
        }
    }
}

/// A handler's response or refusal, and its marks.
pub struct Answer {
    /// The response, or the error to render.
    pub result: Result<Response, ApiError>,
    /// What the pipeline adds to it.
    pub marks: Marks,
}

impl From<Result<Response, ApiError>> for Answer {
    fn from(result: Result<Response, ApiError>) -> Answer {
        Marks::default().answer(result)
    }
}

impl From<ApiError> for Answer {
    fn from(e: ApiError) -> Answer {
        Marks::default().answer(Err(e))
    }
}

impl From<Response> for Answer {
    fn from(r: Response) -> Answer {
        Marks::default().answer(Ok(r))
    }
}
