//! Errors ([`crate::error::ApiError`]) rendered the way rest_cherrypy renders them.
//!
//! rest_cherrypy answers most errors with CherryPy's HTML error page (status line in `<title>`
//! and `<h2>`, the message in `<p>`); clients look at the status and some show the `<p>` text.
//! Only an unexpected error inside a handler is a negotiated JSON/YAML body
//! `{"status": 500, "return": "An unexpected error occurred"}`. Brine adds two JSON answers the
//! reference does not have: 503 when the master cannot be reached or Brine's queue for it is
//! full (`{"status": 503, "return": "<why>"}`), so scripts can tell "master down" from a bad
//! request without parsing HTML. The cause of an error is kept for the log, never sent: no
//! traceback or internal detail reaches a response (decision D7).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::negotiate::{render, Format};
pub use crate::error::ApiError;

/// Renders an [`ApiError`] as rest_cherrypy renders it.
pub trait Render {
    /// Renders the error; `format` is the negotiated output type for the JSON/YAML errors.
    fn into_response(self, format: Format) -> Response;
}

impl Render for ApiError {
    fn into_response(self, format: Format) -> Response {
        let status = self.status();
        match self {
            ApiError::Internal
            | ApiError::MasterUnavailable(_)
            | ApiError::Busy
            | ApiError::TooManyRequests(_) => {
                let body = json!({"status": status.as_u16(), "return": self.message()});
                let mut resp = Response::new(render(format, &body).into());
                *resp.status_mut() = status;
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                if let ApiError::TooManyRequests(wait) = self {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
                }
                resp
            }
            ApiError::NotMounted => {
                let mut resp = Response::new(axum::body::Body::empty());
                *resp.status_mut() = status;
                resp
            }
            other => html_error(status, &other.message()),
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// CherryPy's error page skeleton with a neutral footer.
pub fn html_error(status: StatusCode, message: &str) -> Response {
    let line = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<!DOCTYPE html PUBLIC\n\"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
         \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n<html>\n<head>\n    \
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\"></meta>\n    \
         <title>{line}</title>\n    <style type=\"text/css\">\n    #powered_by {{\n        \
         margin-top: 20px;\n        border-top: 2px solid black;\n        font-style: italic;\n    \
         }}\n\n    #traceback {{\n        color: red;\n    }}\n    </style>\n</head>\n    \
         <body>\n        <h2>{line}</h2>\n        <p>{msg}</p>\n        <pre id=\"traceback\">\
         </pre>\n    <div id=\"powered_by\">\n      <span>\n        Powered by Brine\n      \
         </span>\n    </div>\n    </body>\n</html>\n",
        msg = escape(message)
    );
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_text(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
        String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
    }

    #[tokio::test]
    async fn html_page_carries_status_and_escaped_message() {
        let resp = ApiError::Unauthorized("a <b> & \"c\"".into()).into_response(Format::Json);
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let text = body_text(resp).await;
        assert!(text.contains("<title>401 Unauthorized</title>"));
        assert!(text.contains("<p>a &lt;b&gt; &amp; \"c\"</p>"));
        assert!(!text.contains("CherryPy"));
    }

    #[tokio::test]
    async fn internal_error_is_negotiated_json_or_yaml() {
        let resp = ApiError::Internal.into_response(Format::Json);
        assert_eq!(
            body_text(resp).await,
            "{\"status\": 500, \"return\": \"An unexpected error occurred\"}"
        );
        let resp = ApiError::Internal.into_response(Format::Yaml);
        assert_eq!(
            body_text(resp).await,
            "return: An unexpected error occurred\nstatus: 500\n"
        );
    }
}
