//! `/jobs`: the master's job cache through the runner client, with the caller's session.
//!
//! * `GET /jobs`: runner `jobs.list_jobs`.
//! * `GET /jobs/<jid>`: runner `jobs.list_job`, answered as
//!   `{"info": [<job>], "return": [{<minion>: <return>}]}`.
//!
//! `?timeout=` is accepted and ignored. `POST /jobs` is `POST /` (`index`).
//!
//! Brine's paging (`GET /jobs?limit=N`, with `before=<jid>`, `fun=<glob>`, `user=<name>`,
//! `tgt=<glob>`): the same body, the N newest matching jobs newest first, and
//! `"_links": {"next": "/jobs?limit=N&before=<jid>…"}` while older ones match, served from the
//! job index ([`crate::jobs`]), or from `jobs.list_jobs` when there is none. Whether the caller
//! may list jobs is the master's to say: Brine runs `jobs.list_jobs` with the caller's token
//! and an argument the runner refuses (so it stops before reading the cache) and answers a
//! refusal exactly as `GET /jobs` does; a token the master let through is not asked about
//! again for a minute.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::answer::Answer;
use super::error::ApiError;
use super::{ok, session, Req};
use crate::app::SharedApp;
use crate::jobs::index::{Page, Query};

/// `GET /jobs[/<jid>]`.
pub async fn get_jobs(app: &SharedApp, req: &mut Req, jid: Option<&str>) -> Answer {
    session::gated(app, req, |req, session| list(app, req, session, jid)).await
}

async fn list(
    app: &SharedApp,
    req: &mut Req,
    session: session::Session,
    jid: Option<&str>,
) -> Result<Response, ApiError> {
    let format = req.format()?;
    if jid.is_none() {
        if let Some(q) = Query::from_query(req.query.as_deref())? {
            let body = paged(app, session, &q).await?;
            return Ok(ok(format, StatusCode::OK, &body));
        }
    }
    let chunk = match jid {
        Some(jid) => json!({"client": "runner", "fun": "jobs.list_job", "jid": jid}),
        None => json!({"client": "runner", "fun": "jobs.list_jobs"}),
    };
    let first = session::run_as(app, session, chunk)
        .await?
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    let body = match jid {
        None => json!({"return": [first]}),
        Some(_) => {
            // rest_cherrypy iterates `Result`; a job record without one is a 500 there.
            let Some(result) = first.get("Result").and_then(Value::as_object) else {
                return Err(ApiError::Internal);
            };
            let returns: Map<String, Value> = result
                .iter()
                .map(|(m, r)| (m.clone(), r.get("return").cloned().unwrap_or(Value::Null)))
                .collect();
            json!({"info": [first], "return": [returns]})
        }
    };
    Ok(ok(format, StatusCode::OK, &body))
}

/// The argument that makes the access check's `jobs.list_jobs` stop before it reads the cache.
const ACCESS_CHECK_ARG: &str = "brine_access_check";

/// `GET /jobs?limit=N…`: a page of the index (or of `jobs.list_jobs` without one).
async fn paged(app: &SharedApp, session: session::Session, q: &Query) -> Result<Value, ApiError> {
    let token = session.token.clone();
    if !app.jobs.may_list(&token) {
        let mut check = json!({"client": "runner", "fun": "jobs.list_jobs"});
        check[ACCESS_CHECK_ARG] = json!(true);
        session::run_as(app, session.clone(), check).await?;
        app.jobs.allow_list(&token);
    }
    let wait = app.settings.master.rest_timeout;
    let page = match app.jobs.page(q, wait).await {
        Some(p) => p,
        None => {
            let chunk = json!({"client": "runner", "fun": "jobs.list_jobs"});
            let all = session::run_as(app, session, chunk)
                .await?
                .into_iter()
                .next()
                .unwrap_or(Value::Null);
            page_of(&all, q)
        }
    };
    let mut jobs = Map::new();
    let last = page.jobs.last().map(|(j, _)| j.clone());
    for (jid, job) in page.jobs {
        jobs.insert(jid, job);
    }
    let mut body = json!({"return": [jobs]});
    if let (true, Some(last)) = (page.more, last) {
        body["_links"] = json!({"next": next_link(q, &last)});
    }
    Ok(body)
}

/// A page cut from a whole `jobs.list_jobs` answer (no index).
fn page_of(all: &Value, q: &Query) -> Page {
    let mut index = crate::jobs::index::JobIndex::new(usize::MAX, usize::MAX);
    if let Some(jobs) = all.as_object() {
        for (jid, job) in jobs {
            index.insert_shown(jid, job);
        }
    }
    index.page(q)
}

/// The link to the page after the one that ended at `last`.
fn next_link(q: &Query, last: &str) -> String {
    let mut url = form_urlencoded::Serializer::new(String::new());
    url.append_pair("limit", &q.limit.to_string());
    url.append_pair("before", last);
    for (k, v) in [("fun", &q.fun), ("user", &q.user), ("tgt", &q.tgt)] {
        if let Some(v) = v {
            url.append_pair(k, v);
        }
    }
    format!("/jobs?{}", url.finish())
}
