//! `/keys`: the master's minion keys through the wheel client.
//!
//! * `GET /keys`: wheel `key.list_all`; `GET /keys/<mid>`: wheel `key.finger` with
//!   `match=<mid>`. The answer's `return` is the wheel return itself (an object). There is no
//!   auth gate: the session's token goes to the master, which refuses a missing one.
//! * `POST /keys`: wheel `key.gen_accept` with the body's credentials (no session), answered
//!   as a tar archive holding `minion.pub` then `minion.pem` (mode 0644, mtime 0, padded to a
//!   10240-byte record as Python's `tarfile` writes it). The reference answers a bare 500 for a
//!   missing `mid` or bad credentials; Brine answers 400 and 401 (decision D2).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::answer::{Answer, Marks};
use super::error::ApiError;
use super::{ok, session, Req};
use crate::app::SharedApp;
use crate::lowstate::{self, Exec};

/// `GET /keys[/<mid>]`.
pub async fn get_keys(app: &SharedApp, req: &mut Req, mid: Option<&str>) -> Answer {
    // The session's token if it is one; without it the chunk carries no credentials and the
    // lowstate check answers 401 `No authentication credentials given`, as the reference.
    let mut token = None;
    let mut marks = Marks::default();
    if let Some(t) = session::request_token(&req.headers) {
        match app.auth.check(&app.master, &t).await {
            Ok(Some(info)) => {
                marks.cookie = Some(session::session_cookie(&t));
                marks.user = Some(info.name);
                token = Some(t);
            }
            Ok(None) => {}
            Err(e) => return e.into(),
        }
    }
    marks.answer(list(app, req, mid, token).await)
}

/// `key.list_all`, or `key.finger` of `mid`, as the caller.
async fn list(
    app: &SharedApp,
    req: &mut Req,
    mid: Option<&str>,
    token: Option<String>,
) -> Result<Response, ApiError> {
    let format = req.format()?;
    let mut chunk = match mid {
        Some(m) => json!({"client": "wheel", "fun": "key.finger", "match": m}),
        None => json!({"client": "wheel", "fun": "key.list_all"}),
    };
    if let Some(t) = token {
        chunk["token"] = json!(t);
    }
    let ret = wheel_return(app, chunk).await?;
    Ok(ok(format, StatusCode::OK, &json!({"return": ret})))
}

/// Runs one wheel chunk (its own credentials) and returns the wheel function's return
/// (`data.return` of the reply; `{}` when there is none, as rest_cherrypy reads it).
async fn wheel_return(app: &SharedApp, chunk: Value) -> Result<Value, ApiError> {
    let first = lowstate::execute(app, vec![chunk], &Exec::default())
        .await?
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    Ok(first
        .pointer("/data/return")
        .cloned()
        .unwrap_or_else(|| json!({})))
}

/// Python's `tarfile` output for the two key files.
fn key_tar(public: &str, private: &str) -> Result<Vec<u8>, ApiError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, text) in [("minion.pub", public), ("minion.pem", private)] {
        let mut h = tar::Header::new_ustar();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut h, name, text.as_bytes())
            .map_err(|_| ApiError::Internal)?;
    }
    let mut out = builder.into_inner().map_err(|_| ApiError::Internal)?;
    // tarfile pads the archive to a whole record of 20 blocks.
    let record = 10240;
    let padded = out.len().div_ceil(record) * record;
    out.resize(padded, 0);
    Ok(out)
}

/// `POST /keys`.
pub async fn post_keys(app: &SharedApp, req: &mut Req) -> Result<Response, ApiError> {
    let body = req.parse_body(app).await?;
    let mut chunks = lowstate::shape(body)?;
    let Some(Value::Object(mut chunk)) = chunks.drain(..).next() else {
        return Err(ApiError::BadRequest("Require \"mid\" param".into()));
    };
    let Some(mid) = chunk.remove("mid") else {
        return Err(ApiError::BadRequest("Require \"mid\" param".into()));
    };
    let mid_text = match &mid {
        Value::String(s) => s.clone(),
        other => crate::py::python_str(Some(other)),
    };
    chunk.insert("id_".into(), mid);
    chunk.insert("client".into(), json!("wheel"));
    chunk.insert("fun".into(), json!("key.gen_accept"));
    let ret = wheel_return(app, Value::Object(chunk)).await?;
    let text = |k: &str| ret.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let archive = key_tar(&text("pub"), &text("priv"))?;
    let mut resp = Response::new(Body::from(archive));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let disposition = format!("attachment; filename=\"saltkeys-{mid_text}.tar\"");
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_archive_is_two_files_in_a_padded_record() {
        let tar = match key_tar("PUB", "PRIVATE") {
            Ok(t) => t,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(tar.len(), 10240);
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<(String, u32, u64, usize)> = match archive.entries() {
            Ok(es) => es
                .filter_map(Result::ok)
                .map(|mut e| {
                    let mut buf = String::new();
                    let _ = std::io::Read::read_to_string(&mut e, &mut buf);
                    let h = e.header();
                    (
                        e.path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        h.mode().unwrap_or(0),
                        h.mtime().unwrap_or(1),
                        buf.len(),
                    )
                })
                .collect(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            entries,
            vec![
                ("minion.pub".into(), 0o644, 0, 3),
                ("minion.pem".into(), 0o644, 0, 7)
            ]
        );
    }
}
