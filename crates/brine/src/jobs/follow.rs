//! The jobs Brine follows to their end (`GET /jobs/<jid>/status`, `GET /jobs/<jid>?wait=`):
//! each one's state as it changes, shared by every request that asks about the job, so a
//! job is followed once however many clients poll or wait on it. What a state is made of
//! comes from the master's record of the job (`jobs.list_job`) and then from its events;
//! the task that follows a job lives in [`crate::follow`].
//!
//! Bounded: at most `max` jobs are remembered; past that, finished jobs go first, oldest
//! first, then the oldest running ones (their task ends on its own; a later request starts
//! another).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

/// A finished job's state is kept this long for the requests that ask again.
const KEEP_FINISHED: Duration = Duration::from_secs(600);

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The master has no record of the jid.
    Unknown,
    /// Minions that were sent the job have neither returned nor been given up on.
    Running,
    /// Every targeted minion returned, or Salt's rules for a sync `local` call gave up on
    /// the rest (`missing`).
    Complete,
}

impl Phase {
    /// The name clients read.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Unknown => "unknown",
            Phase::Running => "running",
            Phase::Complete => "complete",
        }
    }
}

/// One job's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    pub phase: Phase,
    /// The minions the job was sent to.
    pub minions: Vec<String>,
    /// The minions that returned, in the order they did.
    pub returned: Vec<String>,
    /// Once complete: the minions that never returned.
    pub missing: Vec<String>,
}

impl JobState {
    /// The state the master's record of a job shows (`jobs.list_job`: `Minions`, `Result`,
    /// or an `Error` when it has no such job). A job without `Minions` (a runner's) is
    /// complete once it has a result.
    pub fn from_record(record: &Value) -> JobState {
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let returned: Vec<String> = record
            .get("Result")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if record.get("Error").is_some() && returned.is_empty() {
            return JobState {
                phase: Phase::Unknown,
                minions: Vec::new(),
                returned,
                missing: Vec::new(),
            };
        }
        let mut minions = strings(record.get("Minions"));
        if minions.is_empty() {
            minions = returned.clone();
        }
        let done = !minions.is_empty() && minions.iter().all(|m| returned.contains(m));
        JobState {
            phase: if done {
                Phase::Complete
            } else {
                Phase::Running
            },
            minions,
            returned,
            missing: Vec::new(),
        }
    }

    /// `{"jid", "state", "minions", "returned", "missing"}`.
    pub fn to_json(&self, jid: &str) -> Value {
        json!({
            "jid": jid,
            "state": self.phase.name(),
            "minions": self.minions,
            "returned": self.returned,
            "missing": self.missing,
        })
    }
}

struct Entry {
    rx: watch::Receiver<JobState>,
    since: Instant,
}

/// The followed jobs (see the module notes).
pub struct Followed {
    jobs: Mutex<HashMap<String, Entry>>,
    max: usize,
}

impl Followed {
    /// Remembers at most `max` jobs.
    pub fn new(max: usize) -> Followed {
        Followed {
            jobs: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// The state of `jid` if it is followed; otherwise its state starts as `initial`, and the
    /// sender comes back too: the caller must follow the job and send its changes.
    pub fn begin(
        &self,
        jid: &str,
        initial: JobState,
    ) -> (watch::Receiver<JobState>, Option<watch::Sender<JobState>>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(e) = jobs.get(jid) {
            let running = e.rx.borrow().phase == Phase::Running;
            // A running job whose follower is gone is followed anew; a finished one is kept.
            let keep = if running {
                e.rx.has_changed().is_ok()
            } else {
                now.duration_since(e.since) < KEEP_FINISHED
            };
            if keep {
                return (e.rx.clone(), None);
            }
        }
        let (tx, rx) = watch::channel(initial);
        jobs.insert(
            jid.to_owned(),
            Entry {
                rx: rx.clone(),
                since: now,
            },
        );
        while jobs.len() > self.max {
            let victim = jobs
                .iter()
                .min_by_key(|(_, e)| (e.rx.borrow().phase == Phase::Running, e.since))
                .map(|(j, _)| j.clone());
            match victim {
                Some(j) => jobs.remove(&j),
                None => break,
            };
        }
        (rx, Some(tx))
    }

    /// Forgets `jid` (its follower stopped before the end: the next request starts anew).
    pub fn forget(&self, jid: &str) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(jid);
    }

    /// Jobs remembered.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_state_from_the_masters_record() {
        let running = json!({"Function": "test.sleep", "Minions": ["m1", "m2"],
            "Result": {"m1": {"return": true}}});
        let s = JobState::from_record(&running);
        assert_eq!(
            (s.phase, s.minions.clone(), s.returned.clone()),
            (Phase::Running, ids(&["m1", "m2"]), ids(&["m1"]))
        );
        assert_eq!(
            s.to_json("1"),
            json!({"jid": "1", "state": "running", "minions": ["m1", "m2"],
                "returned": ["m1"], "missing": []})
        );
        let done = json!({"Minions": ["m1"], "Result": {"m1": {"return": true}}});
        assert_eq!(JobState::from_record(&done).phase, Phase::Complete);
        let unknown = json!({"Error": "Cannot contact returner or no job with this jid",
            "Result": {}});
        assert_eq!(JobState::from_record(&unknown).phase, Phase::Unknown);
        let runner = json!({"Function": "runner.test.arg", "Result": {"master": {"return": 1}}});
        let r = JobState::from_record(&runner);
        assert_eq!((r.phase, r.minions), (Phase::Complete, ids(&["master"])));
        let starting = json!({"Function": "runner.test.sleep", "Result": {}});
        assert_eq!(JobState::from_record(&starting).phase, Phase::Running);
    }

    #[test]
    fn one_follower_per_job_and_finished_jobs_leave_first() {
        let running = || JobState {
            phase: Phase::Running,
            minions: ids(&["m1"]),
            returned: vec![],
            missing: vec![],
        };
        let f = Followed::new(2);
        let (_, first) = f.begin("1", running());
        let (rx, second) = f.begin("1", running());
        assert!(first.is_some() && second.is_none());
        let tx = first.unwrap_or_else(|| panic!("a sender"));
        tx.send_replace(JobState {
            phase: Phase::Complete,
            ..running()
        });
        assert_eq!(rx.borrow().phase, Phase::Complete);
        let (_, b) = f.begin("2", running());
        let (_, c) = f.begin("3", running());
        assert!(b.is_some() && c.is_some());
        // Job 1 (finished) left; 2 and 3 (running) stay.
        assert_eq!(f.count(), 2);
        assert!(f.begin("2", running()).1.is_none());
        assert!(f.begin("1", running()).1.is_some());
        f.forget("1");
        assert!(f.begin("1", running()).1.is_some());
    }
}
