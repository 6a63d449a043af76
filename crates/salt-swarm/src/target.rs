//! Minion-side targeting, as `salt/matchers/*.py` (3008) decide whether a publish is for
//! this minion: `glob` (Python's `fnmatch`, case-sensitive on Linux), `list`, `pcre`
//! (`re.match`: anchored at the start only), `grain` and `grain_pcre`
//! (`salt.utils.data.subdict_match`: `:` nesting, glob or regex on the value, values compared
//! as lower-cased `str()`), `ipcidr`, and `compound` (`and`/`or`/`not`/parentheses over
//! `G@ P@ L@ E@ S@ I@ J@` and plain globs, evaluated as `compound_match` does with Python's
//! `eval`). The swarm has no pillar, so `I@`/`J@`/`pillar` never match; a nodegroup (`N@`)
//! expands to nothing here (the minion's own `nodegroups` are empty), like a real minion
//! without nodegroups.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use regex::Regex;
use rmpv::Value as Mp;
use salt_wire::fnmatch::fnmatch;

/// What a matcher needs to know about one minion.
pub struct Subject<'a> {
    /// Minion id.
    pub id: &'a str,
    /// Its grains (built on demand: only grain and compound targets need them).
    pub grains: &'a dyn Fn() -> Mp,
    /// Its IPv4 addresses (the `ipv4` grain).
    pub ipv4: &'a [Ipv4Addr],
}

/// Whether a publish with `tgt`, `tgt_type` and `delimiter` targets `who`
/// (`Minion._target_load`; an unknown `tgt_type` does not match).
pub fn matches(tgt: &Mp, tgt_type: &str, delimiter: &str, who: &Subject<'_>) -> bool {
    match tgt_type {
        "glob" => tgt.as_str().is_some_and(|t| fnmatch(who.id, t)),
        "list" => list_match(tgt, who.id),
        "pcre" => tgt.as_str().is_some_and(|t| pcre_match(t, who.id)),
        "grain" | "grain_pcre" => tgt.as_str().is_some_and(|t| {
            t.contains(delimiter)
                && subdict_match(&(who.grains)(), t, delimiter, tgt_type == "grain_pcre")
        }),
        "ipcidr" => tgt.as_str().is_some_and(|t| ipcidr_match(t, who.ipv4)),
        "compound" => compound_match(tgt, who),
        _ => false,
    }
}

/// `list_match.match`: a comma-separated string or a list of ids.
fn list_match(tgt: &Mp, id: &str) -> bool {
    match tgt {
        Mp::String(s) => {
            let Some(t) = s.as_str() else { return false };
            t.contains(&format!(",{id},"))
                || t.starts_with(&format!("{id},"))
                || t.ends_with(&format!(",{id}"))
                || t == id
        }
        Mp::Array(items) => items.iter().any(|i| i.as_str() == Some(id)),
        _ => false,
    }
}

/// Compiled patterns of recent publishes: every simulated minion checks the same target, so
/// a regex is compiled once per publish rather than once per minion.
static REGEXES: Mutex<Vec<(String, Option<Regex>)>> = Mutex::new(Vec::new());

/// `re.match(pattern, text)`, case-sensitive unless `fold`; an invalid pattern matches
/// nothing (Salt logs and answers false).
fn re_match(pattern: &str, text: &str, fold: bool) -> bool {
    let key = if fold {
        format!("(?i){pattern}")
    } else {
        pattern.to_owned()
    };
    let Ok(mut cache) = REGEXES.lock() else {
        return false;
    };
    let re = match cache.iter().position(|(k, _)| *k == key) {
        Some(i) => cache[i].1.clone(),
        None => {
            let flags = if fold { "(?i)" } else { "" };
            let re = Regex::new(&format!("{flags}^(?:{pattern})")).ok();
            if cache.len() >= 32 {
                cache.remove(0);
            }
            cache.push((key, re.clone()));
            re
        }
    };
    drop(cache);
    re.is_some_and(|r| r.is_match(text))
}

fn pcre_match(tgt: &str, id: &str) -> bool {
    re_match(tgt, id, false)
}

fn ipcidr_match(tgt: &str, ipv4: &[Ipv4Addr]) -> bool {
    let (net, bits) = match tgt.split_once('/') {
        Some((n, b)) => match b.parse::<u32>() {
            Ok(b) if b <= 32 => (n, b),
            _ => return false,
        },
        None => (tgt, 32),
    };
    let Ok(net) = net.parse::<Ipv4Addr>() else {
        return false;
    };
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    ipv4.iter()
        .any(|ip| u32::from(*ip) & mask == u32::from(net) & mask)
}

/// Python's `str()` of a grain value, for `subdict_match`'s comparisons.
fn py_str(v: &Mp) -> String {
    match v {
        Mp::Nil => "None".into(),
        Mp::Boolean(true) => "True".into(),
        Mp::Boolean(false) => "False".into(),
        Mp::Integer(i) => i.to_string(),
        Mp::F32(f) => py_float(f64::from(*f)),
        Mp::F64(f) => py_float(*f),
        Mp::String(s) => s.as_str().map(str::to_owned).unwrap_or_default(),
        Mp::Binary(b) => format!("b'{}'", String::from_utf8_lossy(b)),
        Mp::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Mp::Map(items) => format!(
            "{{{}}}",
            items
                .iter()
                .map(|(k, v)| format!("{}: {}", py_repr(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Mp::Ext(..) => String::new(),
    }
}

fn py_repr(v: &Mp) -> String {
    match v {
        Mp::String(_) => format!("'{}'", py_str(v)),
        other => py_str(other),
    }
}

fn py_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

fn map_get<'a>(map: &'a Mp, key: &str) -> Option<&'a Mp> {
    map.as_map()?
        .iter()
        .find_map(|(k, v)| (k.as_str() == Some(key)).then_some(v))
}

/// `salt.utils.data.traverse_dict_and_list` (without its YAML re-reading of keys).
fn traverse<'a>(data: &'a Mp, key: &str, delimiter: &str) -> Option<&'a Mp> {
    let mut ptr = data;
    for each in key.split(delimiter) {
        ptr = match ptr {
            Mp::Array(items) => {
                let embedded = items.iter().find_map(|x| map_get(x, each));
                match (embedded, each.parse::<usize>()) {
                    (Some(v), _) => v,
                    (None, Ok(i)) => items.get(i)?,
                    (None, Err(_)) => return None,
                }
            }
            Mp::Map(_) => map_get(ptr, each)?,
            _ => return None,
        };
    }
    Some(ptr)
}

/// `subdict_match._match`.
fn value_match(target: &Mp, pattern: &str, regex: bool) -> bool {
    let t = py_str(target).to_lowercase();
    let p = pattern.to_lowercase();
    if regex {
        re_match(&p, &t, false)
    } else {
        fnmatch(&t, &p)
    }
}

/// `subdict_match._dict_match`.
fn dict_match(target: &Mp, pattern: &str, regex: bool, delimiter: &str) -> bool {
    let (wildcard, pattern) = match pattern.strip_prefix("*:") {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let Some(items) = target.as_map() else {
        return false;
    };
    if pattern == "*"
        || map_get(target, pattern).is_some()
        || items.iter().any(|(k, _)| value_match(k, pattern, regex))
        || subdict_match(target, pattern, delimiter, regex)
    {
        return true;
    }
    if wildcard {
        for (_, v) in items {
            let hit = match v {
                Mp::Map(_) => dict_match(v, pattern, regex, delimiter),
                Mp::Array(members) => members.iter().any(|m| value_match(m, pattern, regex)),
                other => value_match(other, pattern, regex),
            };
            if hit {
                return true;
            }
        }
    }
    false
}

/// `salt.utils.data.subdict_match`: deeper keys are tried first, so `foo:bar:baz` matches
/// `{"foo": {"bar": "baz"}}` and also `{"foo": "bar:baz"}`.
pub fn subdict_match(data: &Mp, expr: &str, delimiter: &str, regex: bool) -> bool {
    let splits: Vec<&str> = expr.split(delimiter).collect();
    if splits.len() == 1 {
        return false;
    }
    for idx in (1..splits.len()).rev() {
        let key = splits[..idx].join(delimiter);
        let (matchstr, found) = if key == "*" {
            (expr.to_owned(), Some(data))
        } else {
            (
                splits[idx..].join(delimiter),
                traverse(data, &key, delimiter),
            )
        };
        let Some(found) = found else { continue };
        let hit = match found {
            Mp::Map(items) if items.is_empty() => continue,
            Mp::Map(_) => dict_match(found, &matchstr, regex, delimiter),
            Mp::Array(members) => members.iter().any(|m| {
                (m.is_map() && dict_match(m, &matchstr, regex, delimiter))
                    || value_match(m, &matchstr, regex)
            }),
            other => value_match(other, &matchstr, regex),
        };
        if hit {
            return true;
        }
    }
    false
}

/// One word of a compound target after matching: what `compound_match` appends to its
/// list before `eval`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Tok {
    Bool(bool),
    And,
    Or,
    Not,
    Open,
    Close,
}

/// `compound_match.match`.
fn compound_match(tgt: &Mp, who: &Subject<'_>) -> bool {
    let words: Vec<String> = match tgt {
        Mp::String(s) => match s.as_str() {
            Some(t) => t.split_whitespace().map(str::to_owned).collect(),
            None => return false,
        },
        Mp::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => return false,
    };
    let mut results: Vec<Tok> = Vec::new();
    for word in &words {
        let op = match word.as_str() {
            "and" => Some(Tok::And),
            "or" => Some(Tok::Or),
            "not" => Some(Tok::Not),
            "(" => Some(Tok::Open),
            ")" => Some(Tok::Close),
            _ => None,
        };
        if let Some(op) = op {
            match results.last() {
                Some(last) => {
                    if *last == Tok::Open && matches!(op, Tok::And | Tok::Or) {
                        return false;
                    }
                    if op == Tok::Not && !matches!(last, Tok::And | Tok::Or | Tok::Open) {
                        results.push(Tok::And);
                    }
                    results.push(op);
                }
                None => {
                    if !matches!(op, Tok::Open | Tok::Not) {
                        return false;
                    }
                    results.push(op);
                }
            }
            continue;
        }
        let (engine, delimiter, pattern) = parse_target(word);
        let hit = match engine {
            None => fnmatch(who.id, pattern),
            Some('N') => continue,
            Some('G') => grain_word(pattern, delimiter, who, false),
            Some('P') => grain_word(pattern, delimiter, who, true),
            Some('I') | Some('J') => false,
            Some('L') => list_match(&Mp::from(pattern), who.id),
            Some('E') => pcre_match(pattern, who.id),
            Some('S') => ipcidr_match(pattern, who.ipv4),
            // R@ (range) needs seco.range, T@/M@ need Salt resources: unknown engines
            // fail the whole expression, as in Salt.
            Some(_) => return false,
        };
        results.push(Tok::Bool(hit));
    }
    eval(&results).unwrap_or(false)
}

fn grain_word(pattern: &str, delimiter: Option<char>, who: &Subject<'_>, regex: bool) -> bool {
    let d = delimiter.map(String::from).unwrap_or_else(|| ":".into());
    pattern.contains(d.as_str()) && subdict_match(&(who.grains)(), pattern, &d, regex)
}

/// `salt.utils.minions.parse_target`: `E@...`, `G@...`, `G|@...` (a delimiter for
/// G/P/I/J), or a plain glob.
fn parse_target(word: &str) -> (Option<char>, Option<char>, &str) {
    let mut chars = word.chars();
    let (Some(e), Some(second)) = (chars.next(), chars.next()) else {
        return (None, None, word);
    };
    if !"GPIJLNSERTM".contains(e) {
        return (None, None, word);
    }
    let rest = &word[e.len_utf8() + second.len_utf8()..];
    if second == '@' && !rest.is_empty() {
        return (Some(e), None, rest);
    }
    if "GPIJ".contains(e) {
        if let Some(pattern) = rest.strip_prefix('@') {
            if !pattern.is_empty() {
                return (Some(e), Some(second), pattern);
            }
        }
    }
    (None, None, word)
}

/// Python's `eval` of `True and not ( False or True )`; `None` for what Python would reject
/// (the minion logs "Invalid compound target" and answers false).
fn eval(tokens: &[Tok]) -> Option<bool> {
    let mut pos = 0;
    let v = eval_or(tokens, &mut pos)?;
    (pos == tokens.len()).then_some(v)
}

fn eval_or(t: &[Tok], pos: &mut usize) -> Option<bool> {
    let mut v = eval_and(t, pos)?;
    while t.get(*pos) == Some(&Tok::Or) {
        *pos += 1;
        let r = eval_and(t, pos)?;
        v = v || r;
    }
    Some(v)
}

fn eval_and(t: &[Tok], pos: &mut usize) -> Option<bool> {
    let mut v = eval_not(t, pos)?;
    while t.get(*pos) == Some(&Tok::And) {
        *pos += 1;
        let r = eval_not(t, pos)?;
        v = v && r;
    }
    Some(v)
}

fn eval_not(t: &[Tok], pos: &mut usize) -> Option<bool> {
    match t.get(*pos)? {
        Tok::Not => {
            *pos += 1;
            Some(!eval_not(t, pos)?)
        }
        Tok::Bool(b) => {
            *pos += 1;
            Some(*b)
        }
        Tok::Open => {
            *pos += 1;
            let v = eval_or(t, pos)?;
            if t.get(*pos) != Some(&Tok::Close) {
                return None;
            }
            *pos += 1;
            Some(v)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grains() -> Mp {
        salt_wire::value::json_to_mp(&serde_json::json!({
            "id": "swarm-07",
            "os": "Debian",
            "os_family": "Debian",
            "osrelease": "12",
            "num_cpus": 2,
            "virtual": "kvm",
            "ipv4": ["127.1.0.7", "127.0.0.1"],
            "roles": ["web", "db"],
            "nested": {"a": {"b": "c"}, "colon": "x:y"},
            "flag": true,
        }))
    }

    fn who<'a>(g: &'a dyn Fn() -> Mp, ips: &'a [Ipv4Addr]) -> Subject<'a> {
        Subject {
            id: "swarm-07",
            grains: g,
            ipv4: ips,
        }
    }

    fn m(tgt: &str, tgt_type: &str) -> bool {
        let ips = [Ipv4Addr::new(127, 1, 0, 7), Ipv4Addr::LOCALHOST];
        matches(&Mp::from(tgt), tgt_type, ":", &who(&grains, &ips))
    }

    /// The glob itself is `salt_wire::fnmatch`, tested there.
    #[test]
    fn globs_as_fnmatch() {
        assert!(m("swarm-*", "glob"));
        assert!(!m("other*", "glob"));
    }

    #[test]
    fn lists_and_pcre() {
        assert!(m("a,swarm-07,b", "list"));
        assert!(m("swarm-07,b", "list"));
        assert!(m("a,swarm-07", "list"));
        assert!(m("swarm-07", "list"));
        assert!(!m("swarm-0", "list"));
        let ips = [Ipv4Addr::LOCALHOST];
        let arr = Mp::Array(vec![Mp::from("x"), Mp::from("swarm-07")]);
        assert!(matches(&arr, "list", ":", &who(&grains, &ips)));
        // re.match anchors at the start only.
        assert!(m("swarm-0", "pcre"));
        assert!(m("sw.*[7]$", "pcre"));
        assert!(!m("warm", "pcre"));
        assert!(!m("(", "pcre"));
    }

    #[test]
    fn grains_nesting_and_values() {
        assert!(m("os:Debian", "grain"));
        assert!(m("os:debian", "grain"), "values compare lower-cased");
        assert!(m("os:Deb*", "grain"));
        assert!(!m("os:RedHat", "grain"));
        assert!(m("roles:db", "grain"), "list members");
        assert!(m("nested:a:b:c", "grain"));
        assert!(
            m("nested:colon:x:y", "grain"),
            "the delimiter inside a value"
        );
        assert!(m("nested:a", "grain"), "a key of a dict");
        assert!(m("num_cpus:2", "grain"));
        assert!(m("flag:True", "grain"));
        assert!(!m("missing:x", "grain"));
        assert!(!m("os", "grain"), "no delimiter: no match");
        assert!(m("os:^Deb", "grain_pcre"));
        assert!(!m("os:^Red", "grain_pcre"));
    }

    #[test]
    fn compound_expressions() {
        assert!(m("G@os:Debian and swarm-*", "compound"));
        assert!(!m("G@os:Debian and not swarm-*", "compound"));
        assert!(m("G@os:RedHat or L@a,swarm-07", "compound"));
        assert!(m("not G@os:RedHat", "compound"));
        assert!(m(
            "E@swarm-0[0-9] and ( G@os:RedHat or G@virtual:kvm )",
            "compound"
        ));
        assert!(!m("( G@os:RedHat or G@virtual:xen ) and *", "compound"));
        assert!(
            m("swarm-07 not G@os:RedHat", "compound"),
            "implicit and before not"
        );
        assert!(m("S@127.1.0.0/16", "compound"));
        assert!(!m("S@10.0.0.0/8", "compound"));
        assert!(m("G|@nested|a|b|c", "compound"), "custom delimiter");
        assert!(!m("and swarm-07", "compound"));
        assert!(!m("( and swarm-07 )", "compound"));
        assert!(!m("swarm-07 and", "compound"));
        assert!(!m("( swarm-07", "compound"));
        assert!(!m("I@role:web", "compound"), "no pillar in the swarm");
        assert!(!m("R@%foo", "compound"), "unknown engine");
        assert!(!m("N@group", "compound"), "nodegroups expand to nothing");
        assert!(m("N@group or swarm-07", "compound") == eval_python_like_or());
    }

    /// `N@group or swarm-07` leaves `or True` for Python's eval: a syntax error, so false.
    fn eval_python_like_or() -> bool {
        false
    }

    #[test]
    fn ipcidr_and_unknown_types() {
        assert!(m("127.1.0.7", "ipcidr"));
        assert!(m("127.0.0.0/8", "ipcidr"));
        assert!(!m("10.0.0.0/8", "ipcidr"));
        assert!(!m("x", "nodegroup"));
        assert!(!m("x", "pillar"));
    }
}
