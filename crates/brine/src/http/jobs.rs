//! `/jobs`: the master's job cache through the runner client, with the caller's session.
//!
//! * `GET /jobs`: runner `jobs.list_jobs`.
//! * `GET /jobs/<jid>`: runner `jobs.list_job`, answered as
//!   `{"info": [<job>], "return": [{<minion>: <return>}]}`.
//!
//! `?timeout=` is accepted and ignored. `POST /jobs` is `POST /` (`index`).
//!
//! Brine's, for one job (each runs the reference's `jobs.list_job` with the caller's token
//! first, so the master's refusal is the reference's):
//! * `GET /jobs/<jid>/status`: `{"return": [{"jid", "state", "minions", "returned",
//!   "missing"}]}`, `state` being `running`, `complete` or `unknown` ([`crate::follow`]);
//! * `GET /jobs/<jid>?wait=S` (0 < S ≤ `rest_timeout`): `GET /jobs/<jid>`'s answer once the
//!   job is complete, or after S seconds;
//! * `GET /jobs/<jid>/events`: the job's events as SSE, ending with `brine/job/<jid>/complete`
//!   ([`crate::job_feed`]).
//!
//! Brine's paging (`GET /jobs?limit=N`, with `before=<jid>`, `fun=<glob>`, `user=<name>`,
//! `tgt=<glob>`): the same body, the N newest matching jobs newest first, and
//! `"_links": {"next": "/jobs?limit=N&before=<jid>…"}` while older ones match, served from the
//! job index ([`crate::jobs`]), or from `jobs.list_jobs` when there is none. Whether the caller
//! may list jobs is the master's to say: Brine runs `jobs.list_jobs` with the caller's token
//! and an argument the runner refuses (so it stops before reading the cache) and answers a
//! refusal exactly as `GET /jobs` does; a token the master let through is not asked about
//! again for a minute.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::answer::Answer;
use super::error::ApiError;
use super::{events, ok, session, Req};
use crate::app::SharedApp;
use crate::events::hub::HubMsg;
use crate::jobs::follow::Phase;
use crate::jobs::index::{Page, Query};
use crate::stream::Owner;

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
    let wait = match jid {
        Some(_) => wait_of(app, req.query.as_deref())?,
        None => None,
    };
    if let (Some(jid), Some(limit)) = (jid, wait) {
        let body = waited(app, session, jid, limit).await?;
        return Ok(ok(format, StatusCode::OK, &body));
    }
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
        Some(_) => one_job(first)?,
    };
    Ok(ok(format, StatusCode::OK, &body))
}

/// `GET /jobs/<jid>`'s body from the master's record of the job.
fn one_job(record: Value) -> Result<Value, ApiError> {
    // rest_cherrypy iterates `Result`; a job record without one is a 500 there.
    let Some(result) = record.get("Result").and_then(Value::as_object) else {
        return Err(ApiError::Internal);
    };
    let returns: Map<String, Value> = result
        .iter()
        .map(|(m, r)| (m.clone(), r.get("return").cloned().unwrap_or(Value::Null)))
        .collect();
    Ok(json!({"info": [record], "return": [returns]}))
}

/// The master's record of one job (`jobs.list_job`), read with the caller's session.
async fn record(app: &SharedApp, session: session::Session, jid: &str) -> Result<Value, ApiError> {
    let chunk = json!({"client": "runner", "fun": "jobs.list_job", "jid": jid});
    Ok(session::run_as(app, session, chunk)
        .await?
        .into_iter()
        .next()
        .unwrap_or(Value::Null))
}

/// `?wait=S`: seconds, more than 0 and at most `rest_timeout`.
fn wait_of(app: &SharedApp, query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(q) = query else { return Ok(None) };
    let Some((_, v)) = form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "wait") else {
        return Ok(None);
    };
    let most = app.settings.master.rest_timeout;
    match v.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= most.as_secs_f64() => Ok(Some(Duration::from_secs_f64(s))),
        _ => Err(ApiError::BadRequest(format!(
            "wait must be a number of seconds above 0 and at most {} (rest_timeout)",
            most.as_secs_f64()
        ))),
    }
}

/// `GET /jobs/<jid>/status`.
pub async fn get_status(app: &SharedApp, req: &mut Req, jid: &str) -> Answer {
    session::gated(app, req, |req, session| async move {
        let format = req.format()?;
        // Registered before the record is read: no return falls between the two.
        let watch = app.hub.watch(jid);
        let token = session.token.clone();
        let record = record(app, session, jid).await?;
        let state = crate::follow::follow(app, jid, &record, watch, &token);
        let body = json!({"return": [state.borrow().to_json(jid)]});
        Ok(ok(format, StatusCode::OK, &body))
    })
    .await
}

/// `GET /jobs/<jid>/events`: the job's feed ([`crate::job_feed`]) as SSE, framed as
/// `/events` frames it; 404 for a jid the master has no record of.
pub async fn get_events(app: &SharedApp, req: &mut Req, jid: &str) -> Answer {
    session::gated(app, req, |req, session| async move {
        // Subscribed and registered before the record is read: no return falls between.
        let prepared = crate::job_feed::prepare(app, jid, events::last_event_id(req))?;
        let owner = Owner {
            token: session.token.clone(),
            user: session.info.name.clone(),
            expire: session.info.expire,
            kill: req.kill(),
            kind: "job",
        };
        let record = record(app, session, jid).await?;
        let Some((resume, end)) = prepared.start(app, &record, &owner.token) else {
            return Err(ApiError::NotFound(format!(
                "The master has no job {jid} in its job cache."
            )));
        };
        Ok(events::sse_response(
            app,
            req,
            Some((owner, resume, Some(end))),
        ))
    })
    .await
}

/// `GET /jobs/<jid>?wait=S`: the record read before the wait, with the returns that came on
/// the bus since, in the shape the master's job cache gives them (`return`, `retcode`,
/// `success`, `out`), so the answer leaves as the last return arrives (the master announces a
/// return before it stores it, and a second `jobs.list_job` costs a runner process).
async fn waited(
    app: &SharedApp,
    session: session::Session,
    jid: &str,
    limit: Duration,
) -> Result<Value, ApiError> {
    let deadline = tokio::time::Instant::now() + limit;
    // Both registered before the record is read: no return falls between.
    let mut returns = app.hub.watch(jid);
    let watch = app.hub.watch(jid);
    let token = session.token.clone();
    let mut first = record(app, session, jid).await?;
    let mut state = crate::follow::follow(app, jid, &first, watch, &token);
    let mut seen = Map::new();
    loop {
        let running = state.borrow().phase == Phase::Running;
        if !running {
            break;
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() {
                // The follower stopped (the bus was lost): the record as it stands.
                break;
            },
            msg = returns.recv() => match msg {
                Some(HubMsg::Event(ev)) => stored_return(&mut seen, &ev),
                Some(HubMsg::Gap) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    // The event that completed the job was queued for both watches at once.
    while let Some(msg) = returns.try_recv() {
        if let HubMsg::Event(ev) = msg {
            stored_return(&mut seen, &ev);
        }
    }
    if let Some(Value::Object(result)) = first.get_mut("Result") {
        for (id, r) in seen {
            result.insert(id, r);
        }
    }
    one_job(first)
}

/// A return event as `local_cache` stores it: `{"return", "retcode", "success"}` of the
/// load, and `out` when the minion named an outputter.
fn stored_return(seen: &mut Map<String, Value>, ev: &salt_wire::event::Event) {
    if !ev.tag.contains("/ret/") {
        return;
    }
    let (Some(id), Some(data)) = (
        ev.data.get("id").and_then(Value::as_str),
        ev.data.as_object(),
    ) else {
        return;
    };
    if !data.contains_key("return") {
        return;
    }
    let mut r = Map::new();
    for k in ["return", "retcode", "success", "out"] {
        if let Some(v) = data.get(k) {
            r.insert(k.into(), v.clone());
        }
    }
    seen.insert(id.to_owned(), Value::Object(r));
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
