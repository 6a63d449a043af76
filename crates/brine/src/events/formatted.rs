//! The "formatted events" view of the bus that `/ws?format_events` (rest_cherrypy) and
//! `/formatted_events/<token>` (rest_tornado) send: a running picture of jobs and minions,
//! re-published whole after each change (Salt's `event_processor.SaltInfo`).
//!
//! * `salt/job/<jid>/new` adds a job `{jid, start_time, minions: {id: {success: false}}, fun,
//!   tgt, tgt_type, state: "running"}` and publishes `{"jobs": {...}}`;
//! * `salt/job/<jid>/ret/<id>` records `return`, `retcode`, `success` for that minion, marks the
//!   job `complete` once every minion succeeded, and publishes the jobs; a `grains.items` return
//!   also updates that minion's grains and publishes `{"minions": ...}`;
//! * `salt/key` accept/delete events add or remove minions;
//! * `salt/presence/...` events drop minions that left and ask for the grains of new ones (a
//!   `grains.items` job with the stream's token; its returns come back as events).
//!
//! The two flavours differ as the two Python servers do: rest_cherrypy publishes `minions` as a
//! list of objects with an `id`, rest_tornado as an object keyed by id and ends every frame
//! with a blank line; they read presence events slightly differently. Events that lack the
//! fields a step needs are skipped (the Python code raises and, for rest_cherrypy, stops the
//! stream for good).

use serde_json::{json, Map, Value};

use crate::py::string_list;
use crate::py::to_python_json;

/// Which server's format to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// rest_cherrypy `/ws?format_events`.
    Cherry,
    /// rest_tornado `/formatted_events/<token>`.
    Tornado,
}

/// The state of one formatted stream.
pub struct SaltInfo {
    flavor: Flavor,
    jobs: Map<String, Value>,
    minions: Map<String, Value>,
}

/// What processing one event produced.
#[derive(Debug, Default, PartialEq)]
pub struct Output {
    /// Frames to send, in order.
    pub frames: Vec<String>,
    /// Minions whose grains should be requested (`grains.items`, list target).
    pub query_grains: Vec<String>,
}

fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}

impl SaltInfo {
    /// An empty picture.
    pub fn new(flavor: Flavor) -> SaltInfo {
        SaltInfo {
            flavor,
            jobs: Map::new(),
            minions: Map::new(),
        }
    }

    fn frame(&self, value: &Value) -> String {
        let mut s = String::from_utf8_lossy(&to_python_json(value)).into_owned();
        if self.flavor == Flavor::Tornado {
            s.push_str("\n\n");
        }
        s
    }

    fn publish_jobs(&self, out: &mut Output) {
        out.frames
            .push(self.frame(&json!({"jobs": Value::Object(self.jobs.clone())})));
    }

    fn publish_minions(&self, out: &mut Output) {
        let minions = match self.flavor {
            Flavor::Cherry => Value::Array(
                self.minions
                    .iter()
                    .map(|(id, info)| {
                        let mut m = info.as_object().cloned().unwrap_or_default();
                        m.insert("id".into(), Value::String(id.clone()));
                        Value::Object(m)
                    })
                    .collect(),
            ),
            Flavor::Tornado => Value::Object(
                self.minions
                    .iter()
                    .map(|(id, info)| {
                        let mut m = info.as_object().cloned().unwrap_or_default();
                        m.insert("id".into(), Value::String(id.clone()));
                        (id.clone(), Value::Object(m))
                    })
                    .collect(),
            ),
        };
        out.frames.push(self.frame(&json!({ "minions": minions })));
    }

    /// Processes one bus event.
    pub fn process(&mut self, tag: &str, data: &Value) -> Output {
        let mut out = Output::default();
        let parts: Vec<&str> = tag.split('/').collect();
        if parts.len() < 2 {
            return out;
        }
        match parts[1] {
            "job" if parts.len() >= 4 && parts[3] == "new" && self.new_job(data) => {
                self.publish_jobs(&mut out);
                if self.flavor == Flavor::Cherry && text(data.get("fun")) == Some("grains.items") {
                    self.minions.clear();
                }
            }
            "job" if parts.len() >= 4 && parts[3] == "ret" => {
                let mid = match self.flavor {
                    Flavor::Cherry if parts.len() == 5 => parts[4],
                    Flavor::Cherry => return out,
                    Flavor::Tornado => parts[parts.len() - 1],
                };
                if self.job_return(parts[2], mid, data) {
                    self.publish_jobs(&mut out);
                    if text(data.get("fun")) == Some("grains.items") {
                        if let Some(grains) = data.get("return") {
                            let entry = self
                                .minions
                                .entry(mid.to_owned())
                                .or_insert_with(|| Value::Object(Map::new()));
                            if let Value::Object(m) = entry {
                                m.insert("grains".into(), grains.clone());
                            }
                            self.publish_minions(&mut out);
                        }
                    }
                }
            }
            "key" => {
                let (Some(act), Some(id)) = (text(data.get("act")), text(data.get("id"))) else {
                    return out;
                };
                match act {
                    "delete" => {
                        self.minions.shift_remove(id);
                    }
                    "accept" => {
                        self.minions
                            .entry(id.to_owned())
                            .or_insert_with(|| Value::Object(Map::new()));
                    }
                    _ => {}
                }
                self.publish_minions(&mut out);
            }
            "presence" => self.presence(data, &mut out),
            _ => {}
        }
        out
    }

    fn new_job(&mut self, data: &Value) -> bool {
        let (Some(jid), Some(ids)) = (
            text(data.get("jid")),
            data.get("minions").and_then(Value::as_array),
        ) else {
            return false;
        };
        let mut minions = Map::new();
        for id in ids.iter().filter_map(Value::as_str) {
            minions.insert(id.to_owned(), json!({"success": false}));
        }
        let field = |k: &str| data.get(k).cloned().unwrap_or(Value::Null);
        self.jobs.insert(
            jid.to_owned(),
            json!({
                "jid": jid,
                "start_time": field("_stamp"),
                "minions": minions,
                "fun": field("fun"),
                "tgt": field("tgt"),
                "tgt_type": field("tgt_type"),
                "state": "running",
            }),
        );
        true
    }

    fn job_return(&mut self, jid: &str, mid: &str, data: &Value) -> bool {
        let (Some(ret), Some(retcode), Some(success)) =
            (data.get("return"), data.get("retcode"), data.get("success"))
        else {
            return false;
        };
        let job = self
            .jobs
            .entry(jid.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(job) = job else {
            return false;
        };
        let minions = job
            .entry("minions")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(minions) = minions else {
            return false;
        };
        let minion = minions
            .entry(mid.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = minion {
            m.insert("return".into(), ret.clone());
            m.insert("retcode".into(), retcode.clone());
            m.insert("success".into(), success.clone());
        }
        let complete = minions
            .values()
            .all(|m| m.get("success").is_some_and(crate::py::truthy));
        if complete {
            job.insert("state".into(), json!("complete"));
        }
        true
    }

    fn presence(&mut self, data: &Value, out: &mut Output) {
        let ids = |k: &str| string_list(data.get(k));
        let present = ids("present");
        let mut changed = false;
        let dropped: Vec<String> = match self.flavor {
            Flavor::Tornado if !ids("lost").is_empty() => ids("lost"),
            _ => self
                .minions
                .keys()
                .filter(|m| !present.contains(m))
                .cloned()
                .collect(),
        };
        for m in dropped {
            changed |= self.minions.shift_remove(&m).is_some() || self.flavor == Flavor::Cherry;
        }
        let new: Vec<String> = match self.flavor {
            Flavor::Tornado if !ids("new").is_empty() => ids("new"),
            _ => present
                .iter()
                .filter(|m| !self.minions.contains_key(*m))
                .cloned()
                .collect(),
        };
        if !new.is_empty() {
            changed = true;
            if self.flavor == Flavor::Tornado {
                for m in &new {
                    self.minions.insert(m.clone(), Value::Object(Map::new()));
                }
            }
            out.query_grains = new;
        }
        if changed {
            self.publish_minions(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job() -> Value {
        json!({"jid": "1", "minions": ["m1", "m2"], "fun": "test.ping", "tgt": "*",
               "tgt_type": "glob", "_stamp": "2026-01-01T00:00:00.000000"})
    }

    fn ret(ok: bool) -> Value {
        json!({"return": ok, "retcode": 0, "success": ok, "fun": "test.ping"})
    }

    #[test]
    fn a_job_runs_and_completes() {
        let mut s = SaltInfo::new(Flavor::Cherry);
        let out = s.process("salt/job/1/new", &new_job());
        assert_eq!(
            out.frames,
            vec![
                r#"{"jobs": {"1": {"jid": "1", "start_time": "2026-01-01T00:00:00.000000", "minions": {"m1": {"success": false}, "m2": {"success": false}}, "fun": "test.ping", "tgt": "*", "tgt_type": "glob", "state": "running"}}}"#
            ]
        );
        let out = s.process("salt/job/1/ret/m1", &ret(true));
        assert!(
            out.frames[0].contains(r#""m1": {"success": true, "return": true, "retcode": 0}"#),
            "{:?}",
            out.frames
        );
        assert!(out.frames[0].contains(r#""state": "running""#));
        let out = s.process("salt/job/1/ret/m2", &ret(true));
        assert!(out.frames[0].contains(r#""state": "complete""#));
    }

    #[test]
    fn grains_returns_update_minions_in_each_flavour() {
        let grains = json!({"return": {"os": "Debian"}, "retcode": 0, "success": true, "fun": "grains.items"});
        let mut c = SaltInfo::new(Flavor::Cherry);
        let out = c.process("salt/job/2/ret/m1", &grains);
        assert_eq!(out.frames.len(), 2);
        assert_eq!(
            out.frames[1],
            r#"{"minions": [{"grains": {"os": "Debian"}, "id": "m1"}]}"#
        );
        let mut t = SaltInfo::new(Flavor::Tornado);
        let out = t.process("salt/job/2/ret/m1", &grains);
        assert_eq!(
            out.frames[1],
            "{\"minions\": {\"m1\": {\"grains\": {\"os\": \"Debian\"}, \"id\": \"m1\"}}}\n\n"
        );
    }

    #[test]
    fn keys_and_presence() {
        let mut c = SaltInfo::new(Flavor::Cherry);
        let out = c.process("salt/key", &json!({"act": "accept", "id": "m3"}));
        assert_eq!(out.frames, vec![r#"{"minions": [{"id": "m3"}]}"#]);
        let out = c.process("salt/presence/present", &json!({"present": ["m1"]}));
        assert_eq!(out.query_grains, vec!["m1".to_string()]);
        assert_eq!(out.frames, vec![r#"{"minions": []}"#]);
        // Malformed events are skipped, not fatal.
        assert_eq!(c.process("salt/job/9/new", &json!({})), Output::default());
        assert_eq!(c.process("salt", &json!({})), Output::default());
        let mut t = SaltInfo::new(Flavor::Tornado);
        let out = t.process("salt/presence/change", &json!({"new": ["m9"], "lost": []}));
        assert_eq!(out.query_grains, vec!["m9".to_string()]);
        assert_eq!(
            out.frames,
            vec!["{\"minions\": {\"m9\": {\"id\": \"m9\"}}}\n\n"]
        );
    }
}
