//! One job's own event feed (`GET /jobs/<jid>/events`): the job's events Brine still has (its
//! `new`, the returns so far), what the replay ring no longer has rebuilt from the master's
//! record of the job, then the live ones, and a last event of its own,
//! `brine/job/<jid>/complete` with `{"jid", "minions", "returned", "missing"}`, once the job is
//! complete by Salt's rules for a sync `local` call ([`crate::follow`]).
//!
//! * No return falls between what is replayed, what the record holds and what comes live: the
//!   feed subscription (replay and live queue, filtered to the job's tags) and the follower's
//!   registration come first ([`prepare`]); the caller then reads the master's record
//!   (`jobs.list_job` with the caller's token, which is also the access check) and
//!   [`Prepared::start`]s the feed.
//! * Each minion's return goes out once: one that comes live after the record (or the ring)
//!   already gave it is left out.
//! * The complete event goes out after the return of every minion it lists as `returned` (the
//!   follower may learn of the last return a moment before the stream's queue holds it), or at
//!   most [`GRACE`] after the job completed.
//! * Rebuilt is only what neither the ring's replay nor the live queue brings: returns that
//!   came while the record was read come live, with their own ids.
//! * Ids: replayed and live events carry the feed's ids; rebuilt ones carry the id just before
//!   the first replayed event (or the feed's newest when the subscription began), so a client
//!   that resumes with one gets everything after it that the ring still has. A `Last-Event-ID`
//!   the ring still covers replays only what came after it; after a gap, the returns the ring
//!   lost are rebuilt again (a client keeps the last return per minion).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use salt_wire::event::Event;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

use crate::app::SharedApp;
use crate::error::ApiError;
use crate::events::feed::{Resume, StreamEvent};
use crate::events::filter::TagFilter;
use crate::events::hub::JidWatch;
use crate::jobs::follow::Phase;
use crate::stream::End;

/// How long the complete event waits for the returns it names to reach the stream.
pub const GRACE: Duration = Duration::from_secs(2);

/// A job's feed, subscribed and registered, waiting for the master's record of the job.
pub struct Prepared {
    jid: String,
    resume: Resume,
    watch: JidWatch,
    /// The feed's newest id when the subscription began.
    base: u64,
    /// The client resumes from a point the ring still covers: nothing is rebuilt.
    covered: bool,
}

/// Subscribes to the events of `jid` (replaying what the ring has after `last_id`, or all of
/// the job's events it has) and registers its follower: before the record is read.
pub fn prepare(app: &SharedApp, jid: &str, last_id: Option<u64>) -> Result<Prepared, ApiError> {
    let filter = TagFilter::new(vec![format!("salt/job/{jid}/*")])?;
    let watch = app.hub.watch(jid);
    let base = app.hub.feed().last_id();
    let resume = app
        .hub
        .feed()
        .resume(Some(last_id.unwrap_or(0)), Some(filter));
    let covered = last_id.is_some() && resume.lost.is_none();
    Ok(Prepared {
        jid: jid.to_owned(),
        resume,
        watch,
        base,
        covered,
    })
}

/// The returns a stream has sent, shared with the wait for the complete event.
#[derive(Default)]
struct Sent {
    minions: Mutex<HashSet<String>>,
    more: Notify,
}

impl Prepared {
    /// The feed of a job the master has a record of (`record`, read after [`prepare`]),
    /// followed to its end with `token` (the caller's, for `find_job` probes); `None` when
    /// the master has no such job.
    pub fn start(self, app: &SharedApp, record: &Value, token: &str) -> Option<(Resume, End)> {
        let Prepared {
            jid,
            mut resume,
            watch,
            base,
            covered,
        } = self;
        let mut state = crate::follow::follow(app, &jid, record, watch, token);
        if state.borrow().phase == Phase::Unknown {
            return None;
        }
        resume.lost = None;
        let prefix = format!("salt/job/{jid}/");
        let ret_prefix = format!("{prefix}ret/");
        if !covered {
            let first = resume
                .replay
                .first()
                .map_or(base, |e| e.id.saturating_sub(1).min(base));
            // What came since the subscription comes live: not rebuilt.
            let live = app.hub.feed().kept_tags_after(base, &prefix);
            let mut out = rebuilt(&jid, record, &resume.replay, &live, &ret_prefix)
                .into_iter()
                .map(|ev| Arc::new(StreamEvent::new(first, Arc::new(ev))))
                .collect::<Vec<_>>();
            out.append(&mut resume.replay);
            resume.replay = out;
        }
        let sent = Arc::new(Sent::default());
        let keep = {
            let sent = sent.clone();
            Box::new(move |ev: &StreamEvent| {
                // A jid with glob characters matches other jobs' tags too.
                if !ev.tag().starts_with(&prefix) {
                    return false;
                }
                let Some(id) = ev.tag().strip_prefix(&ret_prefix) else {
                    return true;
                };
                let first = sent
                    .minions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.to_owned());
                sent.more.notify_one();
                first
            })
        };
        let app = app.clone();
        let last = async move {
            // (The state changes with every return: it is read once, at the end.)
            let done = match state.wait_for(|s| s.phase == Phase::Complete).await {
                Ok(s) => s.clone(),
                Err(_) => {
                    // The follower stopped (the bus was lost): the feed ends without a verdict.
                    tracing::info!(jid, "a job's feed ended before the job did");
                    return None;
                }
            };
            let deadline = tokio::time::Instant::now() + GRACE;
            loop {
                let all = {
                    let have = sent.minions.lock().unwrap_or_else(|p| p.into_inner());
                    done.returned.iter().all(|m| have.contains(m))
                };
                if all {
                    break;
                }
                tokio::select! {
                    _ = sent.more.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let ev = Event {
                tag: format!("brine/job/{jid}/complete"),
                data: json!({
                    "jid": jid,
                    "minions": done.minions,
                    "returned": done.returned,
                    "missing": done.missing,
                }),
            };
            Some(Arc::new(StreamEvent::new(
                app.hub.feed().last_id(),
                Arc::new(ev),
            )))
        }
        .boxed();
        Some((resume, End { keep, last }))
    }
}

/// The events of the job that neither `replay` nor the live queue (`live`: the tags that came
/// since the subscription) has, rebuilt from the master's record of it (`jobs.list_job`): its
/// `new` (without `_stamp`), and each stored return as its `ret` event (`return`, `retcode`,
/// `success` as stored; without `_stamp`).
fn rebuilt(
    jid: &str,
    record: &Value,
    replay: &[Arc<StreamEvent>],
    live: &[String],
    ret_prefix: &str,
) -> Vec<Event> {
    let field = |k: &str| record.get(k).cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    let new_tag = format!("salt/job/{jid}/new");
    let had = |tag: &str| replay.iter().any(|e| e.tag() == tag) || live.iter().any(|t| t == tag);
    if !had(&new_tag) && record.get("Function").is_some() {
        out.push(Event {
            tag: new_tag,
            data: json!({
                "jid": jid,
                "tgt": field("Target"),
                "tgt_type": field("Target-type"),
                "user": field("User"),
                "fun": field("Function"),
                "arg": field("Arguments"),
                "minions": record.get("Minions").cloned().unwrap_or_else(|| json!([])),
                "missing": [],
            }),
        });
    }
    let replayed: HashSet<&str> = replay
        .iter()
        .map(|e| e.tag())
        .chain(live.iter().map(String::as_str))
        .filter_map(|t| t.strip_prefix(ret_prefix))
        .collect();
    let Some(results) = record.get("Result").and_then(Value::as_object) else {
        return out;
    };
    for (id, stored) in results {
        if replayed.contains(id.as_str()) {
            continue;
        }
        let mut data = Map::new();
        data.insert("cmd".into(), json!("_return"));
        data.insert("id".into(), json!(id));
        data.insert("jid".into(), json!(jid));
        data.insert("fun".into(), field("Function"));
        data.insert("fun_args".into(), field("Arguments"));
        for k in ["return", "retcode", "success", "out"] {
            if let Some(v) = stored.get(k) {
                data.insert(k.into(), v.clone());
            }
        }
        out.push(Event {
            tag: format!("{ret_prefix}{id}"),
            data: Value::Object(data),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_ring_lacks_is_rebuilt_from_the_record() {
        let record = json!({"Function": "test.ping", "Arguments": [], "Target": "*",
            "Target-type": "glob", "User": "root", "Minions": ["m1", "m2", "m3"],
            "Result": {"m1": {"return": true, "retcode": 0, "success": true},
                       "m2": {"return": true}}});
        let kept = Arc::new(StreamEvent::new(
            7,
            Arc::new(Event {
                tag: "salt/job/1/ret/m2".into(),
                data: json!({"id": "m2", "return": true}),
            }),
        ));
        let out = rebuilt(
            "1",
            &record,
            std::slice::from_ref(&kept),
            &[],
            "salt/job/1/ret/",
        );
        let tags: Vec<&str> = out.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(tags, ["salt/job/1/new", "salt/job/1/ret/m1"]);
        // What comes live is not rebuilt.
        let live = ["salt/job/1/new".to_owned(), "salt/job/1/ret/m1".to_owned()];
        assert!(rebuilt("1", &record, &[kept], &live, "salt/job/1/ret/").is_empty());
        assert_eq!(out[0].data["minions"], json!(["m1", "m2", "m3"]));
        assert_eq!(out[0].data["fun"], "test.ping");
        assert_eq!(
            out[1].data,
            json!({"cmd": "_return", "id": "m1", "jid": "1", "fun": "test.ping",
                "fun_args": [], "return": true, "retcode": 0, "success": true})
        );
        // A record with no job: nothing.
        let none = json!({"Error": "Cannot contact returner or no job with this jid",
            "Result": {}});
        assert!(rebuilt("2", &none, &[], &[], "salt/job/2/ret/").is_empty());
    }
}
