//! Targets with the exact set of minions (or jobs) that must be in a complete answer.
//!
//! A targets file has one line per worker: `<tgt>\t<tgt_type>\t<id>,<id>,...`; the ids are what
//! a complete answer holds (the minions that must return, or the jids `/jobs` must list). The
//! target may match more (silent minions), which an answer may then report as it likes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::raw::short;

/// One line of a targets file.
#[derive(Debug, Clone)]
pub struct Line {
    pub tgt: String,
    pub tgt_type: String,
    pub ids: Arc<Vec<String>>,
}

/// Reads a targets file; at least one line.
pub fn read(path: &Path) -> Result<Vec<Line>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (Some(tgt), Some(tgt_type), Some(ids)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{} line {}: want <tgt>\\t<tgt_type>\\t<ids>",
                path.display(),
                n + 1
            ));
        };
        let ids: Vec<String> = ids
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        out.push(Line {
            tgt: tgt.to_owned(),
            tgt_type: tgt_type.to_owned(),
            ids: Arc::new(ids),
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no targets", path.display()));
    }
    Ok(out)
}

/// What each expected id must have in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `true` (`test.ping`).
    True,
    /// A grains map naming the minion (`grains.items`).
    Grains,
    /// Anything (a `/jobs` listing: the jid must be there).
    Present,
}

impl Want {
    fn accepts(self, id: &str, v: &Value) -> bool {
        match self {
            Want::True => v == &Value::Bool(true),
            Want::Grains => v.get("id").and_then(Value::as_str) == Some(id),
            Want::Present => true,
        }
    }
}

/// Checks that `answer` holds every id of `ids` as `want` says; returns how many entries the
/// answer holds in all.
pub fn check(answer: &Map<String, Value>, ids: &[String], want: Want) -> Result<usize, String> {
    let mut missing = 0usize;
    let mut wrong = 0usize;
    let mut example = None;
    for id in ids {
        match answer.get(id) {
            None => {
                missing += 1;
                example.get_or_insert_with(|| format!("{id} missing"));
            }
            Some(v) if !want.accepts(id, v) => {
                wrong += 1;
                example.get_or_insert_with(|| format!("{id}: {}", short(v)));
            }
            Some(_) => {}
        }
    }
    if missing + wrong == 0 {
        Ok(answer.len())
    } else {
        Err(format!(
            "{} of {} entries: {missing} missing, {wrong} wrong (e.g. {})",
            answer.len(),
            ids.len(),
            example.unwrap_or_default()
        ))
    }
}

/// Whether the returns seen on the bus, `(minion, event data)`, cover every id.
pub fn covered(seen: &[(String, Value)], ids: &[String]) -> bool {
    if seen.len() < ids.len() {
        return false;
    }
    let have: HashSet<&str> = seen.iter().map(|(m, _)| m.as_str()).collect();
    ids.iter().all(|id| have.contains(id.as_str()))
}

/// The bus returns as an answer map: minion to its `return`.
pub fn as_answer(seen: &[(String, Value)]) -> Map<String, Value> {
    seen.iter()
        .map(|(m, d)| (m.clone(), d.get("return").cloned().unwrap_or(Value::Null)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_complete_answer_may_hold_more() {
        let a = json!({"a": true, "b": true, "q": "Minion did not return. [No response]"});
        let a = a.as_object().cloned().unwrap_or_default();
        assert_eq!(check(&a, &ids(&["a", "b"]), Want::True), Ok(3));
        assert!(check(&a, &ids(&["a", "q"]), Want::True).is_err());
        assert!(check(&a, &ids(&["a", "c"]), Want::Present).is_err());
    }

    #[test]
    fn grains_must_name_the_minion() {
        let a = json!({"a": {"id": "a", "os": "x"}, "b": {"id": "a"}});
        let a = a.as_object().cloned().unwrap_or_default();
        assert_eq!(check(&a, &ids(&["a"]), Want::Grains), Ok(2));
        assert!(check(&a, &ids(&["b"]), Want::Grains).is_err());
    }

    #[test]
    fn bus_returns_cover_the_ids() {
        let seen = vec![("a".to_owned(), json!({"return": true}))];
        assert!(covered(&seen, &ids(&["a"])));
        assert!(!covered(&seen, &ids(&["a", "b"])));
        assert_eq!(as_answer(&seen).get("a"), Some(&json!(true)));
    }

    #[test]
    fn lines_parse() {
        let dir = std::env::temp_dir().join(format!("brine-bench-t-{}", std::process::id()));
        let _ = std::fs::write(&dir, "swarm-*\tglob\ta,b\n\nx\tlist\tx\n");
        let lines = read(&dir).unwrap_or_default();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].ids.as_slice(), ["a", "b"]);
        assert_eq!(lines[1].tgt_type, "list");
    }
}
