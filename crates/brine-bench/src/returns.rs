//! Job and runner returns as the master publishes them, collected from the driver's own bus
//! subscription so that a scenario can wait for "every minion answered" no matter which
//! target started the job.
//!
//! Every `salt/job/<jid>/ret/<minion>` and `salt/run/<jid>/ret` seen while the collector runs
//! is kept by jid, so a return that arrives before the caller learns its jid (a fast minion
//! races the HTTP reply) is not missed. Waiters take their entries out when they are done; the
//! collector lives for one driver run only, so what nobody takes is bounded by that run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use salt_wire::event::{BusAddr, Subscription};
use serde_json::Value;
use tokio::sync::Notify;

/// Returns seen so far, by jid: (minion id or `""` for a runner, event data).
type Seen = HashMap<String, Vec<(String, Value)>>;

/// `saltutil.find_job` publishes seen on the bus (`salt/job/<jid>/new` with that `fun`).
#[derive(Debug, Default, Clone)]
pub struct FindJobs {
    /// Publishes.
    pub publishes: usize,
    /// Distinct jobs they asked about.
    pub jobs: usize,
    /// Minions they targeted, summed over the publishes.
    pub minions: usize,
}

/// The collector (see the module notes).
pub struct Returns {
    seen: Mutex<Seen>,
    /// find_job publishes, and the jids they probed.
    probes: Mutex<(FindJobs, std::collections::HashSet<String>)>,
    /// When the last return of any job arrived (or the collector started).
    last: Mutex<Instant>,
    changed: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Returns {
    /// Subscribes to the bus at `addr` and starts collecting.
    pub async fn start(addr: &BusAddr) -> Result<Arc<Returns>, String> {
        let mut bus = Subscription::connect(addr)
            .await
            .map_err(|e| format!("bus subscription at {addr}: {e}"))?;
        let me = Arc::new(Returns {
            seen: Mutex::new(HashMap::new()),
            probes: Mutex::default(),
            last: Mutex::new(Instant::now()),
            changed: Notify::new(),
            task: Mutex::new(None),
        });
        let weak = Arc::downgrade(&me);
        let task = tokio::spawn(async move {
            while let Some(Ok(ev)) = bus.next().await {
                let Some(me) = weak.upgrade() else { break };
                if ev.tag.starts_with("salt/job/")
                    && ev.tag.ends_with("/new")
                    && ev.data.get("fun").and_then(Value::as_str) == Some("saltutil.find_job")
                {
                    me.probe(&ev.data);
                    continue;
                }
                let key = if let Some(rest) = ev.tag.strip_prefix("salt/job/") {
                    rest.split_once("/ret/")
                        .map(|(jid, minion)| (jid.to_owned(), minion.to_owned()))
                } else if let Some(rest) = ev.tag.strip_prefix("salt/run/") {
                    rest.strip_suffix("/ret")
                        .map(|jid| (jid.to_owned(), String::new()))
                } else {
                    None
                };
                if let Some((jid, who)) = key {
                    if let Ok(mut seen) = me.seen.lock() {
                        seen.entry(jid).or_default().push((who, ev.data));
                    }
                    if let Ok(mut last) = me.last.lock() {
                        *last = Instant::now();
                    }
                    me.changed.notify_waiters();
                }
            }
        });
        if let Ok(mut t) = me.task.lock() {
            *t = Some(task);
        }
        Ok(me)
    }

    /// Waits until `done` says the returns of `jid` are complete, at most `limit`; takes them
    /// out of the collector. `None` on time-out. With `quiet`, a job that has some of its
    /// returns is given up once no return of any job arrived for `quiet`: a return the master
    /// lost then costs `quiet` rather than the rest of `limit`.
    pub async fn wait(
        &self,
        jid: &str,
        limit: Duration,
        quiet: Option<Duration>,
        done: impl Fn(&[(String, Value)]) -> bool,
    ) -> Option<Vec<(String, Value)>> {
        let limit_at = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut started = false;
            if let Ok(mut seen) = self.seen.lock() {
                if seen.get(jid).is_some_and(|r| done(r)) {
                    return seen.remove(jid);
                }
                started = seen.get(jid).is_some_and(|r| !r.is_empty());
            }
            let deadline = match (quiet, self.last.lock()) {
                (Some(q), Ok(last)) if started => {
                    limit_at.min(tokio::time::Instant::from_std(*last + q))
                }
                _ => limit_at,
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err()
                && (deadline == limit_at || self.quiet_for(quiet))
            {
                return None;
            }
        }
    }
}

impl Returns {
    /// Counts one find_job publish.
    fn probe(&self, data: &Value) {
        let probed = data
            .get("arg")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let minions = data
            .get("minions")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if let Ok(mut p) = self.probes.lock() {
            p.0.publishes += 1;
            p.0.minions += minions;
            p.1.insert(probed);
            p.0.jobs = p.1.len();
        }
    }

    /// The find_job publishes seen so far.
    pub fn find_jobs(&self) -> FindJobs {
        self.probes.lock().map(|p| p.0.clone()).unwrap_or_default()
    }

    /// Whether no return arrived for `quiet`.
    fn quiet_for(&self, quiet: Option<Duration>) -> bool {
        match (quiet, self.last.lock()) {
            (Some(q), Ok(last)) => last.elapsed() >= q,
            _ => false,
        }
    }
}

impl Drop for Returns {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }
}
