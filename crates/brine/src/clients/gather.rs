//! Salt's rules for gathering the returns of one job (`LocalClient.get_iter_returns`), as a
//! state machine with no I/O: the `local` client feeds it events and the time, and it says
//! what to do next ([`Step`]). Kept pure so the rules are unit-tested with recorded events.
//!
//! The rules: returns (`salt/job/<jid>/ret/<id>` carrying `return`) count first-wins per id
//! (`resource_id` before `id`); events with `minions` add expected ids. Every pending minion
//! gets a deadline of `timeout` from when it is first seen. Once `timeout` has passed while
//! minions may still run, one `saltutil.find_job` probe goes to all pending minions and the
//! overall deadline moves `gather_job_timeout` ahead; a probe answer with a non-empty return
//! means the minion still runs the job (its deadline moves `timeout` ahead and another probe
//! round follows), an answer with `retcode > 0` drops the minion. Gathering ends when every
//! expected minion returned, or when the deadline has passed, no probe said "running" and no
//! pending minion's own deadline is in the future.
//!
//! When the probe goes out: Salt looks at its deadline only when the job's events pause (its
//! loop reads them with `get_event(wait=0.01)` and checks the time when one read comes back
//! empty), so while returns pour in it sends no probe, and a Python client that lags behind a
//! flood of returns probes once the flood is over, naming only the minions that are really
//! late. Brine reads the bus faster than that, so a 10 ms pause comes in the middle of a
//! flood; it waits for a pause of [`PROBE_QUIET`] instead. Minions whose returns are still
//! arriving are not probed (each probe costs the master a publish and a return per minion),
//! and a deadline that passes during a flood is acted upon at most the flood plus
//! [`PROBE_QUIET`] later.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use salt_wire::event::Event;
use serde_json::{Map, Value};
use tokio::time::Instant;

/// How long the job's events must pause before a probe goes out once `timeout` has passed
/// (see the module's header).
pub const PROBE_QUIET: Duration = Duration::from_millis(200);

/// What the driver should do next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Gathering is over.
    Done,
    /// Publish a `saltutil.find_job` probe to these minions, then step again.
    Probe(Vec<String>),
    /// Wait for an event, or until this instant.
    Wait(Instant),
}

/// Timing settings of one gathering.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// `timeout`.
    pub timeout: Duration,
    /// `gather_job_timeout`.
    pub gather_job_timeout: Duration,
    /// `order_masters`: syndics may announce more minions; wait at least `syndic_wait`.
    pub order_masters: bool,
    /// `syndic_wait`.
    pub syndic_wait: Duration,
}

impl Timing {
    /// A call's `timeout` and `gather_job_timeout`, with the master's syndic settings.
    pub fn of(
        timeout: Duration,
        gather_job_timeout: Duration,
        opts: &salt_wire::config::MasterOptions,
    ) -> Timing {
        Timing {
            timeout,
            gather_job_timeout,
            order_masters: opts.order_masters,
            syndic_wait: opts.syndic_wait,
        }
    }
}

/// The gathering state of one job.
pub struct Gather {
    jid: String,
    ret_prefix: String,
    timing: Timing,
    expected: Vec<String>,
    expected_set: HashSet<String>,
    missing: Vec<String>,
    found: HashSet<String>,
    returns: Vec<(String, Value)>,
    deadlines: HashMap<String, Instant>,
    timeout_at: Instant,
    syndic_until: Instant,
    /// When the last event of the job came (the publish, at first).
    last_event: Instant,
    running: bool,
    bare_announce: bool,
}

/// The outcome of a gathering.
#[derive(Debug, PartialEq)]
pub struct Gathered {
    /// Returns in arrival order: id → `{"ret", ["out"], ["retcode"], ["jid"]}`.
    pub returns: Vec<(String, Value)>,
    /// Expected ids (then named-but-missing ids) that never returned, in order.
    pub failed: Vec<String>,
    /// The named-but-missing ids among `failed` (the target named them; they have no key).
    pub missing: Vec<String>,
    /// The master announced the job on the bus under its bare jid (`{"minions": [...]}`), as
    /// masters before Salt 3008 do. The `LocalClient` of those releases reports a minion that
    /// did not return as `false`, where 3008's gives a "Minion did not return" text.
    pub bare_announce: bool,
}

impl Gather {
    /// Starts gathering job `jid`, published at `now` to `minions` (`missing`: ids the target
    /// named that have no key).
    pub fn new(
        jid: &str,
        minions: &[String],
        missing: Vec<String>,
        timing: Timing,
        now: Instant,
    ) -> Gather {
        let mut g = Gather {
            jid: jid.to_owned(),
            ret_prefix: format!("salt/job/{jid}/ret/"),
            timing,
            expected: Vec::new(),
            expected_set: HashSet::new(),
            missing,
            found: HashSet::new(),
            returns: Vec::new(),
            deadlines: HashMap::new(),
            timeout_at: now + timing.timeout,
            syndic_until: now + timing.syndic_wait,
            last_event: now,
            running: true,
            bare_announce: false,
        };
        for m in minions {
            g.expect(m);
        }
        g
    }

    fn expect(&mut self, id: &str) {
        if self.expected_set.insert(id.to_owned()) {
            self.expected.push(id.to_owned());
        }
    }

    fn pending(&self) -> impl Iterator<Item = &String> {
        self.expected.iter().filter(|m| !self.found.contains(*m))
    }

    /// The job's jid.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// The minions expected to return, in the order they became known.
    pub fn expected(&self) -> &[String] {
        &self.expected
    }

    /// The minions that returned, in the order they did.
    pub fn returned(&self) -> impl Iterator<Item = &str> {
        self.returns.iter().map(|(id, _)| id.as_str())
    }

    /// An event of the job's own jid, seen at `now`.
    pub fn on_event(&mut self, ev: &Event, now: Instant) {
        self.last_event = now;
        let data = &ev.data;
        if ev.tag == self.jid {
            self.bare_announce = true;
        }
        if let Some(ms) = data.get("minions").and_then(Value::as_array) {
            for m in ms.iter().filter_map(Value::as_str) {
                self.expect(m);
            }
            if let Some(miss) = data.get("missing").and_then(Value::as_array) {
                for m in miss.iter().filter_map(Value::as_str) {
                    if !self.missing.iter().any(|x| x == m) {
                        self.missing.push(m.to_owned());
                    }
                }
            }
            return;
        }
        if !ev.tag.starts_with(&self.ret_prefix) {
            return;
        }
        let Some(ret) = data.get("return") else {
            return;
        };
        let id = data
            .get("resource_id")
            .or_else(|| data.get("id"))
            .and_then(Value::as_str);
        let Some(id) = id else { return };
        if !self.found.insert(id.to_owned()) {
            return;
        }
        let mut r = Map::new();
        r.insert("ret".into(), ret.clone());
        for k in ["out", "retcode", "jid"] {
            if let Some(v) = data.get(k) {
                r.insert(k.into(), v.clone());
            }
        }
        self.returns.push((id.to_owned(), Value::Object(r)));
    }

    /// An event of a `find_job` probe's jid.
    pub fn on_probe_event(&mut self, ev: &Event, now: Instant) {
        let data = &ev.data;
        let id = data.get("id").and_then(Value::as_str);
        if let (Some(rc), Some(id)) = (data.get("retcode").and_then(Value::as_i64), id) {
            if rc > 0 {
                self.expected_set.remove(id);
                self.expected.retain(|m| m != id);
                return;
            }
        }
        if let Some(ms) = data.get("minions").and_then(Value::as_array) {
            for m in ms.iter().filter_map(Value::as_str) {
                self.expect(m);
            }
            return;
        }
        let still_running = match data.get("return") {
            Some(Value::Object(m)) if m.is_empty() => false,
            Some(Value::Object(m)) => {
                !matches!(m.get("return"), Some(Value::Object(x)) if x.is_empty())
            }
            _ => false,
        };
        if let (true, Some(id)) = (still_running, id) {
            self.expect(id);
            self.deadlines
                .insert(id.to_owned(), now + self.timing.timeout);
            self.running = true;
        }
    }

    /// Decides what happens next at `now`.
    pub fn step(&mut self, now: Instant) -> Step {
        let all_in = self.expected_set.iter().all(|m| self.found.contains(m));
        if all_in
            && (!self.timing.order_masters
                || (!self.expected_set.is_empty() && now > self.syndic_until))
        {
            return Step::Done;
        }
        let timeout = self.timing.timeout;
        let new: Vec<String> = self
            .pending()
            .filter(|m| !self.deadlines.contains_key(*m))
            .cloned()
            .collect();
        for id in new {
            self.deadlines.insert(id, now + timeout);
        }
        let quiet_at = self.last_event + PROBE_QUIET;
        if now > self.timeout_at && self.running && now < quiet_at {
            // The job's events still come: no probe before they pause.
            return Step::Wait(quiet_at);
        }
        if now > self.timeout_at && self.running {
            let pending: Vec<String> = self.pending().cloned().collect();
            self.running = false;
            self.timeout_at = now + self.timing.gather_job_timeout;
            if self.timing.order_masters {
                self.timeout_at += self.timing.syndic_wait;
            }
            if !pending.is_empty() {
                return Step::Probe(pending);
            }
        }
        if now > self.timeout_at && !self.running {
            let waiting = self
                .pending()
                .any(|m| self.deadlines.get(m).is_some_and(|d| now < *d));
            if !waiting {
                return Step::Done;
            }
        }
        // Wake at the next instant that can change the outcome.
        let mut wake = self.timeout_at;
        for id in self.pending() {
            if let Some(d) = self.deadlines.get(id) {
                if *d > now && *d < wake {
                    wake = *d;
                }
            }
        }
        Step::Wait(wake.max(now + Duration::from_millis(5)))
    }

    /// The returns and the ids that never returned.
    pub fn finish(self) -> Gathered {
        let mut failed: Vec<String> = self
            .expected
            .iter()
            .filter(|m| !self.found.contains(*m))
            .cloned()
            .collect();
        let mut missing = Vec::new();
        for m in self.missing {
            if !self.found.contains(&m) && !failed.contains(&m) {
                failed.push(m.clone());
                missing.push(m);
            }
        }
        Gathered {
            returns: self.returns,
            failed,
            missing,
            bare_announce: self.bare_announce,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing {
            timeout: 5 * S,
            gather_job_timeout: 10 * S,
            order_masters: false,
            syndic_wait: 5 * S,
        }
    }

    fn ev(tag: &str, data: Value) -> Event {
        Event {
            tag: tag.into(),
            data,
        }
    }

    fn ret(jid: &str, id: &str, value: Value) -> Event {
        ev(
            &format!("salt/job/{jid}/ret/{id}"),
            json!({"id": id, "return": value, "retcode": 0, "jid": jid, "fun": "test.ping"}),
        )
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn done_as_soon_as_every_minion_returned_duplicates_ignored() {
        let t0 = Instant::now();
        let mut g = Gather::new("1", &ids(&["m1", "m2"]), vec![], timing(), t0);
        assert!(matches!(g.step(t0), Step::Wait(_)));
        g.on_event(&ret("1", "m1", json!(true)), t0);
        g.on_event(&ret("1", "m1", json!("late duplicate")), t0);
        assert!(matches!(g.step(t0), Step::Wait(_)));
        g.on_event(&ret("1", "m2", json!(true)), t0);
        // Another job's return and a non-return event change nothing.
        g.on_event(&ret("2", "m3", json!(true)), t0);
        g.on_event(&ev("salt/job/1/publish", json!({"fun": "test.ping"})), t0);
        assert_eq!(g.step(t0 + S), Step::Done);
        let out = g.finish();
        assert_eq!(out.failed, Vec::<String>::new());
        assert!(!out.bare_announce);
        assert_eq!(
            out.returns,
            vec![
                (
                    "m1".to_string(),
                    json!({"ret": true, "retcode": 0, "jid": "1"})
                ),
                (
                    "m2".to_string(),
                    json!({"ret": true, "retcode": 0, "jid": "1"})
                ),
            ]
        );
    }

    #[test]
    fn a_bare_jid_announcement_marks_a_master_before_3008() {
        let t0 = Instant::now();
        // A 3008 master announces the job only as `salt/job/<jid>/new`.
        let mut g = Gather::new("1", &ids(&["m1"]), vec![], timing(), t0);
        g.on_event(&ev("salt/job/1/new", json!({"minions": ["m1"]})), t0);
        assert!(!g.finish().bare_announce);
        let mut g = Gather::new("1", &ids(&["m1"]), ids(&["ghost"]), timing(), t0);
        g.on_event(&ev("salt/job/1/new", json!({"minions": ["m1"]})), t0);
        g.on_event(&ev("1", json!({"minions": ["m1"]})), t0);
        let out = g.finish();
        assert!(out.bare_announce);
        assert_eq!(out.failed, ids(&["m1", "ghost"]));
        assert_eq!(out.missing, ids(&["ghost"]));
    }

    #[test]
    fn a_running_minion_is_probed_and_waited_for() {
        let t0 = Instant::now();
        let mut g = Gather::new("1", &ids(&["m1"]), vec![], timing(), t0);
        assert_eq!(g.step(t0), Step::Wait(t0 + 5 * S));
        assert_eq!(g.step(t0 + 6 * S), Step::Probe(ids(&["m1"])));
        // The probe says the job still runs on m1: its deadline moves 5 s ahead.
        let t1 = t0 + 7 * S;
        g.on_probe_event(
            &ev(
                "salt/job/9/ret/m1",
                json!({"id": "m1", "return": {"jid": "1", "fun": "test.sleep"}, "retcode": 0}),
            ),
            t1,
        );
        // At 17 s the probe round is over, but m1 is running: probe again.
        assert_eq!(g.step(t0 + 17 * S), Step::Probe(ids(&["m1"])));
        g.on_event(&ret("1", "m1", json!(true)), t0 + 17 * S);
        assert_eq!(g.step(t0 + 18 * S), Step::Done);
        assert_eq!(g.finish().failed, Vec::<String>::new());
    }

    #[test]
    fn a_silent_minion_fails_after_timeout_plus_gather_job_timeout() {
        let t0 = Instant::now();
        let mut g = Gather::new("1", &ids(&["m1", "ghost"]), vec![], timing(), t0);
        g.on_event(&ret("1", "m1", json!(true)), t0);
        assert_eq!(g.step(t0 + 6 * S), Step::Probe(ids(&["ghost"])));
        // The probe's own `new` event and an empty answer ("not running").
        g.on_probe_event(
            &ev("salt/job/9/new", json!({"minions": ["ghost"]})),
            t0 + 6 * S,
        );
        g.on_probe_event(
            &ev("salt/job/9/ret/ghost", json!({"id": "ghost", "return": {}})),
            t0 + 7 * S,
        );
        assert!(matches!(g.step(t0 + 15 * S), Step::Wait(_)));
        assert_eq!(g.step(t0 + 16 * S + S / 2), Step::Done);
        assert_eq!(g.finish().failed, ids(&["ghost"]));
    }

    #[test]
    fn new_event_adds_minions_and_missing_ids_fail_last() {
        let t0 = Instant::now();
        let mut g = Gather::new("1", &ids(&["m1"]), ids(&["nokey"]), timing(), t0);
        g.on_event(
            &ev(
                "salt/job/1/new",
                json!({"minions": ["m1", "m2"], "missing": ["nokey"]}),
            ),
            t0,
        );
        g.on_event(&ret("1", "m1", json!(1)), t0);
        assert!(matches!(g.step(t0), Step::Wait(_)));
        g.on_event(&ret("1", "m2", json!(2)), t0);
        assert_eq!(g.step(t0), Step::Done);
        assert_eq!(g.finish().failed, ids(&["nokey"]));
    }

    #[test]
    fn resource_id_names_the_return_and_probe_errors_drop_a_minion() {
        let t0 = Instant::now();
        let mut g = Gather::new("1", &ids(&["m1", "m2"]), vec![], timing(), t0);
        g.on_event(
            &ev(
                "salt/job/1/ret/m1",
                json!({"id": "m1", "resource_id": "m1", "return": "x"}),
            ),
            t0,
        );
        assert_eq!(g.step(t0 + 6 * S), Step::Probe(ids(&["m2"])));
        g.on_probe_event(
            &ev(
                "salt/job/9/ret/m2",
                json!({"id": "m2", "return": "err", "retcode": 1}),
            ),
            t0 + 7 * S,
        );
        assert_eq!(g.step(t0 + 7 * S), Step::Done);
        let out = g.finish();
        assert_eq!(out.failed, Vec::<String>::new());
        assert_eq!(out.returns.len(), 1);
    }

    #[test]
    fn no_probe_while_the_jobs_returns_still_arrive() {
        let t0 = Instant::now();
        let mut g = Gather::new("1", &ids(&["m1", "m2", "ghost"]), vec![], timing(), t0);
        // The timeout passes while returns come in: the probe waits for them to pause.
        let t1 = t0 + 5 * S + S / 10;
        g.on_event(&ret("1", "m1", json!(true)), t1);
        assert_eq!(g.step(t1), Step::Wait(t1 + PROBE_QUIET));
        let t2 = t1 + PROBE_QUIET / 2;
        g.on_event(&ret("1", "m2", json!(true)), t2);
        assert_eq!(g.step(t1 + PROBE_QUIET), Step::Wait(t2 + PROBE_QUIET));
        // Once they pause, only the minion that is really late is probed.
        assert_eq!(g.step(t2 + PROBE_QUIET), Step::Probe(ids(&["ghost"])));
    }
}
