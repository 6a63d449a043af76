//! `POST /hook[/<path>...]`: fires one event `salt/netapi/hook/<path>` on the master's bus for
//! reactors, with rest_cherrypy's event data:
//!
//! * `body`: the raw request body as text (`""` when empty; form bodies stay URL-encoded);
//! * `post`: the body as parsed (object, list or string; `{}` when empty). As in the reference,
//!   a scalar `arg` inside an object body shows up as a one-element list;
//! * `headers`: every request header in CherryPy's title-case spelling, plus `Remote-Addr` from
//!   the socket peer. `X-Auth-Token` and `Cookie` values are replaced with `<redacted>` by
//!   default, so a hook never hands a session to every event-stream reader (decision D4;
//!   `brine: {hook_redact_auth_headers: false}` turns that off).
//!
//! The URL segment is `webhook_url`; the tag base is always `salt/netapi/hook`. Auth is the
//! session gate unless `webhook_disable_auth`. The answer is `{"success": true}`; a master that
//! cannot be reached is a 503.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::answer::Answer;
use super::error::ApiError;
use super::{ok, session, Req};
use crate::app::SharedApp;

/// CherryPy's spelling of a header name: each `-`-separated part capitalised.
pub fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join("-")
}

/// `POST /hook[/<path>...]`.
pub async fn hook(app: &SharedApp, req: &mut Req, path: &[String]) -> Answer {
    if app.settings.rest.webhook_disable_auth {
        return fire(app, req, path).await.into();
    }
    session::gated(app, req, |req, _| fire(app, req, path)).await
}

/// Fires the posted body as `salt/netapi/hook/<path>`.
async fn fire(app: &SharedApp, req: &mut Req, path: &[String]) -> Result<Response, ApiError> {
    let raw = req.read_body(app).await?;
    let parsed = req.parse_bytes(app, &raw)?;
    let format = req.format()?;
    let post = match parsed {
        None => Value::Object(Map::new()),
        Some(Value::Object(mut m)) => {
            // lowdata_fmt mutates the parsed object in place before the hook reads it.
            if let Some(arg) = m.get_mut("arg") {
                if !arg.is_array() {
                    let single = arg.take();
                    *arg = Value::Array(vec![single]);
                }
            }
            Value::Object(m)
        }
        Some(other) => other,
    };
    let redact = app.settings.brine.hook_redact_auth_headers;
    let mut headers = Map::new();
    for name in req.headers.keys() {
        let values: Vec<&str> = req
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let key = title_case(name.as_str());
        let value = if redact && matches!(key.as_str(), "X-Auth-Token" | "Cookie") {
            "<redacted>".to_owned()
        } else {
            values.join(", ")
        };
        headers.insert(key, Value::String(value));
    }
    headers.insert(
        "Remote-Addr".into(),
        Value::String(req.peer.ip().to_string()),
    );
    let mut data = Map::new();
    data.insert(
        "body".into(),
        Value::String(String::from_utf8_lossy(&raw).into_owned()),
    );
    data.insert("post".into(), post);
    data.insert("headers".into(), Value::Object(headers));
    let tag: String = std::iter::once("salt/netapi/hook".to_owned())
        .chain(path.iter().cloned())
        .collect::<Vec<_>>()
        .join("/");
    app.master.fire_event(&tag, data).await?;
    Ok(ok(format, StatusCode::OK, &json!({"success": true})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_title_cased_like_cherrypy() {
        assert_eq!(title_case("x-auth-token"), "X-Auth-Token");
        assert_eq!(title_case("content-type"), "Content-Type");
        assert_eq!(title_case("host"), "Host");
        assert_eq!(title_case("x-github-event"), "X-Github-Event");
    }
}
