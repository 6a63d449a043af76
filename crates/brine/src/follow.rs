//! Following one job to its end for `GET /jobs/<jid>/status` and `GET /jobs/<jid>?wait=`,
//! with Salt's rules for a sync `local` call ([`crate::clients::gather`]): the job is
//! complete once every targeted minion returned, or once `timeout` passed, a
//! `saltutil.find_job` probe (published with the token of the request that started the
//! follower, one per round for all pending minions) found them not running and
//! `gather_job_timeout` passed too; those minions are then `missing`. The clock starts when
//! Brine starts following, with the master's `timeout` and `gather_job_timeout`.
//!
//! The caller registers for the job's events before it reads the master's record
//! (`jobs.list_job`, which is also the access check), so no return falls between the two.
//! One follower per job ([`crate::jobs::follow::Followed`]); requests share its state.

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::app::SharedApp;
use crate::clients::gather::{Gather, Timing};
use crate::clients::local::{gather, Probes};
use crate::events::hub::JidWatch;
use crate::jobs::follow::{JobState, Phase};
use salt_wire::event::Event;

/// The state of `jid`, followed from now on if it is running: `record` is the master's
/// record of the job read after `watch` was registered, `token` the caller's (for probes).
pub fn follow(
    app: &SharedApp,
    jid: &str,
    record: &Value,
    watch: JidWatch,
    token: &str,
) -> watch::Receiver<JobState> {
    let initial = JobState::from_record(record);
    if initial.phase != Phase::Running {
        // Over (or unknown) by the master's own record: nothing to follow.
        return watch::channel(initial).1;
    }
    // A job the record shows running may have a follower already (one that gave up on some
    // minions knows it is complete).
    let (rx, tx) = app.jobs.followed.begin(jid, initial.clone());
    let Some(tx) = tx else {
        return rx;
    };
    let app = app.clone();
    let jid = jid.to_owned();
    let token = token.to_owned();
    let results = record.get("Result").cloned().unwrap_or(Value::Null);
    tokio::spawn(async move {
        let opts = &app.settings.master;
        let timing = Timing::of(opts.timeout, opts.gather_job_timeout, opts);
        let now = Instant::now();
        let mut g = Gather::new(&jid, &initial.minions, Vec::new(), timing, now);
        // The returns the record already has count as returned.
        for id in &initial.returned {
            let ret = results
                .get(id)
                .and_then(|r| r.get("return"))
                .cloned()
                .unwrap_or(Value::Null);
            let ev = Event {
                tag: format!("salt/job/{jid}/ret/{id}"),
                data: json!({"id": id, "return": ret}),
            };
            g.on_event(&ev, now);
        }
        let mut kwargs = Map::new();
        kwargs.insert("token".into(), json!(token));
        let probes = Probes {
            kwargs: &kwargs,
            gather_job_timeout: opts.gather_job_timeout,
        };
        // Updated in place: the state's `returned` is always the start of the gathering's
        // (the record's returns were fed to it in that order), so an event adds only what is
        // new instead of copying every id again (a job of N minions is not N² copies).
        let mut progress = |g: &Gather| {
            tx.send_modify(|s| {
                if s.minions.len() != g.expected().len() {
                    s.minions = g.expected().to_vec();
                }
                let known = s.returned.len();
                s.returned
                    .extend(g.returned().skip(known).map(str::to_owned));
            });
        };
        match gather(&app, &probes, g, watch, &mut progress).await {
            Ok(done) => {
                let returned: Vec<String> = done.returns.iter().map(|(id, _)| id.clone()).collect();
                let mut minions = returned.clone();
                minions.extend(done.failed.iter().cloned());
                tx.send_replace(JobState {
                    phase: Phase::Complete,
                    minions,
                    returned,
                    missing: done.failed,
                });
            }
            Err(e) => {
                tracing::info!(jid, error = ?e, "stopped following a job (its events may be lost)");
                app.jobs.followed.forget(&jid);
            }
        }
    });
    rx
}
