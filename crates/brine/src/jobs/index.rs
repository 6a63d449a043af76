//! The job index: every job of the master's job cache as `jobs.list_jobs` shows it, in jid
//! (that is, time) order, so that `GET /jobs?limit=N` pages through it in milliseconds however
//! large the cache is. Pure data: [`crate::jobs`] fills it (a scan of the cache at start, then
//! each job the bus announces) and keeps it true to the cache.
//!
//! Bounded by a number of jobs and by bytes; past either, the oldest jobs leave the index (a
//! page then ends where the index does). An entry is the job's listing as compact JSON plus
//! the three fields the filters read: ~150 bytes beside the load's own size.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// At most this many jobs in one page.
pub const MAX_LIMIT: usize = 1000;

/// What an entry costs beside its strings (map node, boxes, lengths).
const ENTRY_OVERHEAD: usize = 96;

/// One job.
struct Entry {
    /// The job as `jobs.list_jobs` shows it, compact JSON.
    shown: Box<str>,
    function: Box<str>,
    user: Box<str>,
    targets: Box<[Box<str>]>,
}

impl Entry {
    fn weight(&self, jid: &str) -> usize {
        ENTRY_OVERHEAD
            + jid.len()
            + self.shown.len()
            + self.function.len()
            + self.user.len()
            + self.targets.iter().map(|t| t.len() + 16).sum::<usize>()
    }
}

/// A page request: `limit`, `before` (a jid: only older jobs), and the filters `fun` (glob on
/// the function), `user` (the user, exactly) and `tgt` (glob on the target, or on any target
/// of a list), as `jobs.list_jobs`' `search_function` and `search_target` match them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub limit: usize,
    pub before: Option<String>,
    pub fun: Option<String>,
    pub user: Option<String>,
    pub tgt: Option<String>,
}

impl Query {
    /// The paging request of a `/jobs` query string; `None` without `limit` (then `/jobs` is
    /// the reference's `jobs.list_jobs`). 400 for a bad `limit`, an empty value, or a
    /// parameter `/jobs` does not know (`timeout` is the reference's and ignored).
    pub fn from_query(query: Option<&str>) -> Result<Option<Query>, ApiError> {
        let Some(q) = query else { return Ok(None) };
        let mut out = Query::default();
        let mut limit = None;
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let slot = match k.as_ref() {
                "timeout" => continue,
                "limit" => {
                    let n = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n));
                    let Some(n) = n else {
                        return Err(ApiError::BadRequest(format!(
                            "limit must be a number from 1 to {MAX_LIMIT}"
                        )));
                    };
                    limit = Some(n);
                    continue;
                }
                "before" => &mut out.before,
                "fun" => &mut out.fun,
                "user" => &mut out.user,
                "tgt" => &mut out.tgt,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "/jobs takes limit, before, fun, user and tgt; not {other}"
                    )))
                }
            };
            if v.is_empty() || v.len() > 1024 {
                return Err(ApiError::BadRequest(format!(
                    "{k} must be 1 to 1024 characters"
                )));
            }
            *slot = Some(v.into_owned());
        }
        match limit {
            Some(limit) => Ok(Some(Query { limit, ..out })),
            None if out == Query::default() => Ok(None),
            None => Err(ApiError::BadRequest(
                "before, fun, user and tgt need limit".into(),
            )),
        }
    }

    fn wants(&self, e: &Entry) -> bool {
        use salt_wire::fnmatch::fnmatch;
        self.fun.as_deref().is_none_or(|g| fnmatch(&e.function, g))
            && self.user.as_deref().is_none_or(|u| *e.user == *u)
            && self
                .tgt
                .as_deref()
                .is_none_or(|g| e.targets.iter().any(|t| fnmatch(t, g)))
    }
}

/// One page: the jobs, newest first, and whether older ones match too.
#[derive(Debug, PartialEq)]
pub struct Page {
    pub jobs: Vec<(String, Value)>,
    pub more: bool,
}

/// The index (see the module notes).
pub struct JobIndex {
    jobs: BTreeMap<Box<str>, Entry>,
    bytes: usize,
    max_jobs: usize,
    max_bytes: usize,
}

impl JobIndex {
    /// An empty index of at most `max_jobs` jobs and `max_bytes` bytes.
    pub fn new(max_jobs: usize, max_bytes: usize) -> JobIndex {
        JobIndex {
            jobs: BTreeMap::new(),
            bytes: 0,
            max_jobs,
            max_bytes,
        }
    }

    /// Jobs and bytes held.
    pub fn size(&self) -> (usize, usize) {
        (self.jobs.len(), self.bytes)
    }

    /// Adds (or replaces) a job from its load; the oldest jobs leave past the bounds.
    pub fn insert(&mut self, jid: &str, load: &Value) {
        self.insert_shown(jid, &format_job(jid, load));
    }

    /// Adds (or replaces) a job from its listing (as [`format_job`] makes it).
    pub fn insert_shown(&mut self, jid: &str, shown: &Value) {
        let text =
            |k: &str| -> Box<str> { shown.get(k).and_then(Value::as_str).unwrap_or("").into() };
        let targets: Box<[Box<str>]> = match shown.get("Target") {
            Some(Value::String(s)) => Box::new([s.as_str().into()]),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(Into::into).collect(),
            _ => Box::new([]),
        };
        let entry = Entry {
            function: text("Function"),
            user: text("User"),
            targets,
            shown: shown.to_string().into(),
        };
        self.remove(jid);
        let weight = entry.weight(jid);
        if weight > self.max_bytes {
            return;
        }
        self.bytes += weight;
        self.jobs.insert(jid.into(), entry);
        while self.jobs.len() > self.max_jobs || self.bytes > self.max_bytes {
            match self.jobs.pop_first() {
                Some((jid, e)) => self.bytes -= e.weight(&jid),
                None => break,
            }
        }
    }

    /// Forgets a job (gone from the cache).
    pub fn remove(&mut self, jid: &str) {
        if let Some(e) = self.jobs.remove(jid) {
            self.bytes -= e.weight(jid);
        }
    }

    /// Whether the index holds the job.
    #[cfg(test)]
    pub fn contains(&self, jid: &str) -> bool {
        self.jobs.contains_key(jid)
    }

    /// The newest `q.limit` jobs older than `q.before` that match the filters.
    pub fn page(&self, q: &Query) -> Page {
        let upper = match &q.before {
            Some(b) => std::ops::Bound::Excluded(b.as_str()),
            None => std::ops::Bound::Unbounded,
        };
        let mut matching = self
            .jobs
            .range::<str, _>((std::ops::Bound::Unbounded, upper))
            .rev()
            .filter(|(_, e)| q.wants(e));
        let jobs: Vec<(String, Value)> = matching
            .by_ref()
            .take(q.limit)
            .map(|(jid, e)| {
                let v = serde_json::from_str(&e.shown).unwrap_or(Value::Null);
                (jid.to_string(), v)
            })
            .collect();
        let more = matching.next().is_some();
        Page { jobs, more }
    }
}

/// The listing of one job, as `salt.utils.jid.format_jid_instance` makes it from the load.
pub fn format_job(jid: &str, load: &Value) -> Value {
    let get = |k: &str| load.get(k);
    // Python's `list()` of the value.
    let arguments = match get("arg") {
        Some(Value::Array(a)) => Value::Array(a.clone()),
        Some(Value::String(s)) => Value::Array(s.chars().map(|c| json!(c.to_string())).collect()),
        Some(Value::Object(m)) => Value::Array(m.keys().map(|k| json!(k)).collect()),
        _ => json!([]),
    };
    let mut out = Map::new();
    out.insert(
        "Function".into(),
        get("fun").cloned().unwrap_or(json!("unknown-function")),
    );
    out.insert("Arguments".into(), arguments);
    out.insert(
        "Target".into(),
        get("tgt").cloned().unwrap_or(json!("unknown-target")),
    );
    out.insert(
        "Target-type".into(),
        get("tgt_type").cloned().unwrap_or(json!("list")),
    );
    out.insert("User".into(), get("user").cloned().unwrap_or(json!("root")));
    let kwarg_metadata = || {
        get("arg")?.as_array()?.iter().find_map(|a| {
            let m = a.as_object()?;
            (m.get("__kwarg__") == Some(&Value::Bool(true)))
                .then(|| m.get("metadata").cloned())
                .flatten()
        })
    };
    let metadata = get("metadata")
        .cloned()
        .or_else(|| get("kwargs")?.get("metadata").cloned())
        .or_else(kwarg_metadata);
    if let Some(m) = metadata {
        out.insert("Metadata".into(), m);
    }
    out.insert("StartTime".into(), json!(jid_to_time(jid)));
    Value::Object(out)
}

/// `salt.utils.jid.jid_to_time`: `2026, Dec 07 03:32:06.123456`, or "" for what is not a jid.
pub fn jid_to_time(jid: &str) -> String {
    const MONTHS: [&str; 13] = [
        "", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = jid.as_bytes();
    let shaped = b.len() == 20 || (b.len() > 21 && b[20] == b'_');
    if !shaped || !b[..20].is_ascii() {
        return String::new();
    }
    let Some(month) = jid[4..6].parse::<usize>().ok().and_then(|m| MONTHS.get(m)) else {
        return String::new();
    };
    format!(
        "{}, {} {} {}:{}:{}.{}",
        &jid[..4],
        month,
        &jid[6..8],
        &jid[8..10],
        &jid[10..12],
        &jid[12..14],
        &jid[14..20]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(jid: &str, fun: &str, user: &str, tgt: Value) -> Value {
        json!({"jid": jid, "fun": fun, "arg": [1, "a"], "tgt": tgt, "tgt_type": "glob", "user": user})
    }

    fn jid(n: usize) -> String {
        format!("2026120703{n:010}")
    }

    fn ids(p: &Page) -> Vec<String> {
        p.jobs.iter().map(|(j, _)| j.clone()).collect()
    }

    #[test]
    fn a_listing_is_salts() {
        let l = json!({"jid": "20261207033206123456", "fun": "state.apply", "arg": ["web"],
            "tgt": ["a", "b"], "tgt_type": "list", "user": "alice",
            "kwargs": {"metadata": {"ticket": 7}}, "minions": ["a"]});
        let shown = format_job("20261207033206123456", &l);
        assert_eq!(
            shown.to_string(),
            r#"{"Function":"state.apply","Arguments":["web"],"Target":["a","b"],"Target-type":"list","User":"alice","Metadata":{"ticket":7},"StartTime":"2026, Dec 07 03:32:06.123456"}"#
        );
        let bare = format_job("20260107033206123456", &json!({"jid": "x"}));
        assert_eq!(
            bare.to_string(),
            r#"{"Function":"unknown-function","Arguments":[],"Target":"unknown-target","Target-type":"list","User":"root","StartTime":"2026, Jan 07 03:32:06.123456"}"#
        );
        let kw = json!({"fun": "f", "arg": [{"__kwarg__": true, "metadata": {"a": 1}}]});
        assert_eq!(format_job("j", &kw)["Metadata"], json!({"a": 1}));
        assert_eq!(jid_to_time("20261307033206123456"), "");
        assert_eq!(jid_to_time("2026120703320612345"), "");
        assert_eq!(
            jid_to_time("20261207033206123456_42"),
            "2026, Dec 07 03:32:06.123456"
        );
    }

    #[test]
    fn pages_walk_newest_first_with_no_job_missed_or_repeated() {
        let mut idx = JobIndex::new(100_000, 1 << 30);
        for n in 0..250 {
            idx.insert(&jid(n), &load(&jid(n), "test.ping", "u", json!("*")));
        }
        let mut seen = Vec::new();
        let mut q = Query {
            limit: 100,
            ..Query::default()
        };
        loop {
            let p = idx.page(&q);
            seen.extend(ids(&p));
            if !p.more {
                break;
            }
            q.before = seen.last().cloned();
        }
        let want: Vec<String> = (0..250).rev().map(jid).collect();
        assert_eq!(seen, want);
        assert_eq!(
            idx.page(&Query {
                limit: 5,
                before: Some(jid(0)),
                ..Query::default()
            }),
            Page {
                jobs: vec![],
                more: false
            }
        );
    }

    #[test]
    fn filters_match_as_list_jobs_searches() {
        let mut idx = JobIndex::new(100, 1 << 20);
        idx.insert(&jid(1), &load(&jid(1), "test.ping", "alice", json!("web*")));
        idx.insert(
            &jid(2),
            &load(&jid(2), "state.apply", "bob", json!(["db1", "web2"])),
        );
        idx.insert(&jid(3), &load(&jid(3), "test.echo", "alice", json!("db1")));
        let q = |fun: Option<&str>, user: Option<&str>, tgt: Option<&str>| Query {
            limit: 10,
            before: None,
            fun: fun.map(Into::into),
            user: user.map(Into::into),
            tgt: tgt.map(Into::into),
        };
        assert_eq!(
            ids(&idx.page(&q(Some("test.*"), None, None))),
            vec![jid(3), jid(1)]
        );
        assert_eq!(ids(&idx.page(&q(None, Some("bob"), None))), vec![jid(2)]);
        assert_eq!(ids(&idx.page(&q(None, None, Some("web2")))), vec![jid(2)]);
        assert_eq!(
            ids(&idx.page(&q(None, None, Some("db*")))),
            vec![jid(3), jid(2)]
        );
        assert_eq!(
            ids(&idx.page(&q(Some("test.*"), Some("bob"), None))),
            Vec::<String>::new()
        );
        let one = idx.page(&Query {
            limit: 1,
            ..q(None, Some("alice"), None)
        });
        assert_eq!((ids(&one), one.more), (vec![jid(3)], true));
    }

    #[test]
    fn the_oldest_jobs_leave_past_the_bounds() {
        let mut idx = JobIndex::new(3, 1 << 20);
        for n in 0..5 {
            idx.insert(&jid(n), &load(&jid(n), "f", "u", json!("*")));
        }
        assert_eq!(idx.size().0, 3);
        assert!(!idx.contains(&jid(1)) && idx.contains(&jid(2)));
        let one = {
            let mut i = JobIndex::new(100, 1 << 20);
            i.insert(&jid(0), &load(&jid(0), "f", "u", json!("*")));
            i.size().1
        };
        let mut idx = JobIndex::new(100, one * 2);
        for n in 0..5 {
            idx.insert(&jid(n), &load(&jid(n), "f", "u", json!("*")));
        }
        assert_eq!(idx.size(), (2, one * 2));
        idx.remove(&jid(4));
        assert_eq!(idx.size(), (1, one));
        // Replacing a job does not count it twice.
        idx.insert(&jid(3), &load(&jid(3), "f", "u", json!("*")));
        assert_eq!(idx.size(), (1, one));
    }

    #[test]
    fn queries() {
        let q = Query::from_query(Some(
            "limit=50&before=20261207033206123456&fun=test.*&timeout=3",
        ));
        assert_eq!(
            q.ok().flatten(),
            Some(Query {
                limit: 50,
                before: Some("20261207033206123456".into()),
                fun: Some("test.*".into()),
                user: None,
                tgt: None
            })
        );
        assert!(matches!(Query::from_query(None), Ok(None)));
        assert!(matches!(Query::from_query(Some("timeout=3")), Ok(None)));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "fun=a",
            "limit=5&fun=",
            "limit=5&page=2",
        ] {
            assert!(Query::from_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
