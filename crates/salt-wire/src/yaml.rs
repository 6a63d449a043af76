//! Salt's YAML dialect, loaded into JSON values, with limits for untrusted input.
//!
//! Salt reads its config files and salt-api reads `application/x-yaml` bodies with
//! `SaltYamlSafeLoader`: PyYAML's YAML 1.1 resolver plus a few changes. A YAML 1.2
//! library would read `yes`/`on` as strings, so this module builds values from the parser's
//! events itself and resolves plain scalars with PyYAML's 1.1 rules:
//!
//! * booleans `yes|no|true|false|on|off` in three spellings each; `y`/`n` stay strings;
//! * nulls `~`, `null`, `Null`, `NULL` and the empty scalar;
//! * ints in binary, octal, decimal, hex and base 60 (`12:30` is 750); Salt strips leading
//!   zeros first, so `0644` is the decimal 644; `08` matches no int rule and stays a string;
//! * floats need a dot (`1e3` is a string, `1.0e+3` a float), `.inf`, `.nan`;
//! * timestamps stay strings; `!!binary` is base64 with missing padding added;
//! * a key may appear once per map, merge keys (`<<`) included: a merged key that is also set
//!   explicitly is an error in Salt's loader, and here too.
//!
//! Aliases are expanded by copying, which is where "billion laughs" bombs blow up PyYAML; here
//! every produced node counts against [`Limits::max_nodes`], checked before a copy is made, and
//! nesting is capped by [`Limits::max_depth`].

use serde_json::{Map, Number, Value};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Bounds applied while loading.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Deepest nesting of sequences and maps.
    pub max_depth: usize,
    /// Most nodes the document may expand to, aliases counted at their full size.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_nodes: 1_000_000,
        }
    }
}

/// A document that is not valid YAML, not valid for Salt, or over a limit.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct YamlError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl YamlError {
    fn at(span: &Span, message: impl Into<String>) -> Self {
        YamlError {
            line: span.start.line(),
            column: span.start.col() + 1,
            message: message.into(),
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Value>,
        nodes: usize,
        anchor: usize,
    },
    Map {
        entries: Vec<(Key, Value)>,
        key: Option<Key>,
        nodes: usize,
        anchor: usize,
        span: Span,
    },
}

#[derive(Clone)]
enum Key {
    Merge,
    Plain(String),
}

/// Loads a single-document YAML stream. An empty stream is `Ok(None)`.
pub fn load(text: &str, limits: Limits) -> Result<Option<Value>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: Vec<(usize, Value, usize)> = Vec::new();
    let mut total_nodes = 0usize;
    let mut docs = 0usize;
    let mut result: Option<Value> = None;
    let mut last_span = Span::default();

    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| YamlError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        })?;
        last_span = span;
        // A finished node: (value, nodes it counts for, anchor id)
        let finished: Option<(Value, usize, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    return Err(YamlError::at(
                        &span,
                        "expected a single document in the stream",
                    ));
                }
                None
            }
            Event::Alias(id) => {
                let Some((_, value, nodes)) = anchors.iter().rev().find(|(a, _, _)| *a == id)
                else {
                    return Err(YamlError::at(&span, "found undefined alias"));
                };
                total_nodes = total_nodes.saturating_add(*nodes);
                if total_nodes > limits.max_nodes {
                    return Err(YamlError::at(
                        &span,
                        format!("document expands to more than {} nodes", limits.max_nodes),
                    ));
                }
                Some((value.clone(), *nodes, 0))
            }
            Event::Scalar(text, style, anchor, tag) => {
                total_nodes += 1;
                if total_nodes > limits.max_nodes {
                    return Err(YamlError::at(
                        &span,
                        format!("document expands to more than {} nodes", limits.max_nodes),
                    ));
                }
                let is_key = matches!(stack.last(), Some(Frame::Map { key: None, .. }));
                if is_key && style == ScalarStyle::Plain && tag.is_none() && text == "<<" {
                    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                        *key = Some(Key::Merge);
                    }
                    continue;
                }
                let value = match tag {
                    Some(tag) => tagged_scalar(&tag.handle, &tag.suffix, &text, &span)?,
                    None if style == ScalarStyle::Plain => resolve_plain(&text),
                    None => Value::String(text.into_owned()),
                };
                Some((value, 1, anchor))
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq", &span)?;
                if stack.len() >= limits.max_depth {
                    return Err(YamlError::at(
                        &span,
                        format!("nesting deeper than {} levels", limits.max_depth),
                    ));
                }
                total_nodes += 1;
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    nodes: 1,
                    anchor,
                });
                None
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map", &span)?;
                if stack.len() >= limits.max_depth {
                    return Err(YamlError::at(
                        &span,
                        format!("nesting deeper than {} levels", limits.max_depth),
                    ));
                }
                total_nodes += 1;
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    nodes: 1,
                    anchor,
                    span,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    nodes,
                    anchor,
                }) => Some((Value::Array(items), nodes, anchor)),
                _ => return Err(YamlError::at(&span, "unbalanced sequence end")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    nodes,
                    anchor,
                    span,
                    ..
                }) => Some((build_map(entries, &span)?, nodes, anchor)),
                _ => return Err(YamlError::at(&span, "unbalanced mapping end")),
            },
        };
        if total_nodes > limits.max_nodes {
            return Err(YamlError::at(
                &span,
                format!("document expands to more than {} nodes", limits.max_nodes),
            ));
        }
        let Some((value, nodes, anchor)) = finished else {
            continue;
        };
        if anchor != 0 {
            anchors.push((anchor, value.clone(), nodes));
        }
        match stack.last_mut() {
            None => result = Some(value),
            Some(Frame::Seq {
                items, nodes: n, ..
            }) => {
                *n = n.saturating_add(nodes);
                items.push(value);
            }
            Some(Frame::Map {
                entries,
                key,
                nodes: n,
                ..
            }) => {
                *n = n.saturating_add(nodes);
                match key.take() {
                    None => *key = Some(Key::Plain(key_string(&value, &span)?)),
                    Some(k) => entries.push((k, value)),
                }
            }
        }
    }
    if !stack.is_empty() {
        return Err(YamlError::at(&last_span, "unexpected end of document"));
    }
    Ok(result)
}

fn check_collection_tag(
    tag: Option<&saphyr_parser::Tag>,
    want: &str,
    span: &Span,
) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(t) if t.handle == "tag:yaml.org,2002:" && t.suffix == want => Ok(()),
        Some(t) => Err(YamlError::at(
            span,
            format!("could not determine a constructor for the tag {t}"),
        )),
    }
}

fn build_map(entries: Vec<(Key, Value)>, span: &Span) -> Result<Value, YamlError> {
    // Salt's flatten_mapping puts merged entries first; its construct_mapping then refuses
    // any key seen twice.
    let mut merged: Vec<(String, Value)> = Vec::new();
    let mut explicit: Vec<(String, Value)> = Vec::new();
    for (key, value) in entries {
        match key {
            Key::Plain(k) => explicit.push((k, value)),
            Key::Merge => match value {
                Value::Object(m) => merged.extend(m),
                Value::Array(items) => {
                    let mut parts = Vec::new();
                    for item in items {
                        match item {
                            Value::Object(m) => parts.push(m),
                            _ => return Err(YamlError::at(span, "expected a mapping for merging")),
                        }
                    }
                    for m in parts.into_iter().rev() {
                        merged.extend(m);
                    }
                }
                _ => {
                    return Err(YamlError::at(
                        span,
                        "expected a mapping or list of mappings for merging",
                    ))
                }
            },
        }
    }
    let mut out = Map::new();
    for (k, v) in merged.into_iter().chain(explicit) {
        if out.contains_key(&k) {
            return Err(YamlError::at(span, format!("found conflicting ID '{k}'")));
        }
        out.insert(k, v);
    }
    Ok(Value::Object(out))
}

fn key_string(v: &Value, span: &Span) -> Result<String, YamlError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok("null".into()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(YamlError::at(span, "found unacceptable key")),
    }
}

fn tagged_scalar(handle: &str, suffix: &str, text: &str, span: &Span) -> Result<Value, YamlError> {
    if handle != "tag:yaml.org,2002:" {
        return Err(YamlError::at(
            span,
            format!("could not determine a constructor for the tag {handle}{suffix}"),
        ));
    }
    let bad = |what: &str| YamlError::at(span, format!("invalid {what} value: {text}"));
    match suffix {
        "str" | "timestamp" => Ok(Value::String(text.to_owned())),
        "int" => resolve_int(text).ok_or_else(|| bad("int")),
        "float" => resolve_float(text)
            .or_else(|| resolve_int(text).and_then(|v| v.as_f64()).map(float))
            .ok_or_else(|| bad("float")),
        "bool" => resolve_bool(text).ok_or_else(|| bad("bool")),
        "null" => Ok(Value::Null),
        "binary" => {
            use base64::Engine;
            let mut clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            while clean.len() % 4 != 0 {
                clean.push('=');
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(clean.as_bytes())
                .map_err(|e| YamlError::at(span, format!("failed to decode base64 data: {e}")))?;
            Ok(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        }
        _ => Err(YamlError::at(
            span,
            format!("could not determine a constructor for the tag !!{suffix}"),
        )),
    }
}

/// Resolves a plain (unquoted, untagged) scalar with the YAML 1.1 rules of the module notes.
pub fn resolve_plain(text: &str) -> Value {
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if let Some(b) = resolve_bool(text) {
        return b;
    }
    if let Some(i) = resolve_int(text) {
        return i;
    }
    if let Some(f) = resolve_float(text) {
        return f;
    }
    Value::String(text.to_owned())
}

fn resolve_bool(text: &str) -> Option<Value> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(Value::Bool(true))
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(Value::Bool(false))
        }
        _ => None,
    }
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

fn all(s: &str, f: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.bytes().all(f)
}

fn int_value(negative: bool, magnitude: u128) -> Value {
    if negative {
        if magnitude <= i64::MAX as u128 + 1 {
            return Value::Number(Number::from((magnitude as i128).wrapping_neg() as i64));
        }
        big_int(true, &magnitude.to_string())
    } else if let Ok(u) = u64::try_from(magnitude) {
        Value::Number(Number::from(u))
    } else {
        big_int(false, &magnitude.to_string())
    }
}

/// An integer beyond 64 bits, kept exact as Python keeps it (serde_json's
/// `arbitrary_precision` holds a number as its digits); `digits` is decimal, without sign.
pub fn big_int(negative: bool, digits: &str) -> Value {
    let text = format!("{}{digits}", if negative { "-" } else { "" });
    serde_json::from_str::<Number>(&text)
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn parse_radix(digits: &str, radix: u32) -> Option<u128> {
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if clean.is_empty() {
        return Some(0);
    }
    u128::from_str_radix(&clean, radix).ok()
}

fn resolve_int(text: &str) -> Option<Value> {
    let (neg, body) = split_sign(text);
    let b = body.as_bytes();
    // Which of PyYAML's int patterns matches (on the text before Salt's zero stripping).
    if let Some(bin) = body.strip_prefix("0b") {
        if all(bin, |c| c == b'0' || c == b'1' || c == b'_') {
            return parse_radix(bin, 2).map(|m| int_value(neg, m));
        }
        return None;
    }
    if let Some(hex) = body.strip_prefix("0x") {
        if all(hex, |c| c.is_ascii_hexdigit() || c == b'_') {
            return parse_radix(hex, 16).map(|m| int_value(neg, m));
        }
        return None;
    }
    if body == "0" {
        return Some(int_value(false, 0));
    }
    if b.first() == Some(&b'0') && all(&body[1..], |c| (b'0'..=b'7').contains(&c) || c == b'_') {
        // Octal in YAML 1.1, but Salt strips the leading zeros of an unsigned value first and
        // reads the rest as decimal ("0644" -> 644). A signed one stays octal in PyYAML.
        if text.starts_with('0') {
            return parse_radix(body.trim_start_matches('0'), 10).map(|m| int_value(false, m));
        }
        return parse_radix(&body[1..], 8).map(|m| int_value(neg, m));
    }
    if matches!(b.first(), Some(b'1'..=b'9')) {
        if all(body, |c| c.is_ascii_digit() || c == b'_') {
            return Some(match parse_radix(body, 10) {
                Some(m) => int_value(neg, m),
                // Beyond 128 bits: still an int for Python.
                None => big_int(neg, &body.replace('_', "")),
            });
        }
        // Base 60: [1-9][0-9_]*(:[0-5]?[0-9])+
        let mut parts = body.split(':');
        let head = parts.next()?;
        if !all(head, |c| c.is_ascii_digit() || c == b'_') {
            return None;
        }
        let mut total = parse_radix(head, 10)?;
        let mut any = false;
        for p in parts {
            if p.is_empty() || p.len() > 2 || !all(p, |c| c.is_ascii_digit()) {
                return None;
            }
            if p.len() == 2 && p.as_bytes()[0] > b'5' {
                return None;
            }
            total = total
                .checked_mul(60)?
                .checked_add(p.parse::<u128>().ok()?)?;
            any = true;
        }
        if any {
            return Some(int_value(neg, total));
        }
    }
    None
}

fn resolve_float(text: &str) -> Option<Value> {
    let (neg, body) = split_sign(text);
    let sign = if neg { -1.0 } else { 1.0 };
    match body {
        ".inf" | ".Inf" | ".INF" => return Some(Value::Null),
        ".nan" | ".NaN" | ".NAN" if text == body => return Some(Value::Null),
        _ => {}
    }
    // [0-9][0-9_]*\.[0-9_]*([eE][-+][0-9]+)?  |  \.[0-9_]+([eE][-+][0-9]+)? (unsigned)
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    if let Some(exp) = exponent {
        let digits = exp.strip_prefix(['-', '+'])?;
        if !all(digits, |c| c.is_ascii_digit()) {
            return None;
        }
    }
    let (int_part, frac_part) = mantissa.split_once('.')?;
    if !frac_part.bytes().all(|c| c.is_ascii_digit() || c == b'_') {
        return None;
    }
    if int_part.is_empty() {
        if text != body || !all(frac_part, |c| c.is_ascii_digit() || c == b'_') {
            return None;
        }
    } else if int_part.contains(':') {
        // Base 60 float: [0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*
        if exponent.is_some() {
            return None;
        }
        let mut parts = int_part.split(':');
        let head = parts.next()?;
        if !matches!(head.as_bytes().first(), Some(b'0'..=b'9'))
            || !all(head, |c| c.is_ascii_digit() || c == b'_')
        {
            return None;
        }
        let mut total: f64 = head.replace('_', "").parse().ok()?;
        for p in parts {
            if p.is_empty() || p.len() > 2 || !all(p, |c| c.is_ascii_digit()) {
                return None;
            }
            if p.len() == 2 && p.as_bytes()[0] > b'5' {
                return None;
            }
            total = total * 60.0 + p.parse::<f64>().ok()?;
        }
        let frac: f64 = format!("0.{}", frac_part.replace('_', "")).parse().ok()?;
        return Some(float(sign * (total + frac)));
    } else if !matches!(int_part.as_bytes().first(), Some(b'0'..=b'9'))
        || !all(int_part, |c| c.is_ascii_digit() || c == b'_')
    {
        return None;
    }
    let clean = body.replace('_', "");
    let parsed: f64 = if clean.starts_with('.') {
        format!("0{clean}").parse().ok()?
    } else {
        clean.parse().ok()?
    };
    Some(float(sign * parsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn y(text: &str) -> Value {
        match load(text, Limits::default()) {
            Ok(Some(v)) => v,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn yaml_1_1_scalars_as_salt_reads_them() {
        let v = y("a: yes\nb: On\nc: n\nd: 0644\ne: 12:30\nf: 2024-01-01\ng: 1e3\nh: 1.5e+3\n\
                   i: 0x1f\nj: 0b101\nk: 1_000\nl: ~\nm:\nn: '08'\no: 08\np: .5\nq: 'yes'\nr: -7\ns: 1.\n");
        assert_eq!(
            v,
            json!({"a": true, "b": true, "c": "n", "d": 644, "e": 750, "f": "2024-01-01",
                   "g": "1e3", "h": 1500.0, "i": 31, "j": 5, "k": 1000, "l": null, "m": null,
                   "n": "08", "o": "08", "p": 0.5, "q": "yes", "r": -7, "s": 1.0})
        );
    }

    #[test]
    fn empty_stream_is_none_and_two_documents_are_refused() {
        assert_eq!(load("", Limits::default()), Ok(None));
        assert_eq!(load("# only a comment\n", Limits::default()), Ok(None));
        assert!(load("a: 1\n---\nb: 2\n", Limits::default()).is_err());
    }

    #[test]
    fn duplicate_keys_are_refused_merge_keys_work() {
        assert!(load("a: 1\na: 2\n", Limits::default()).is_err());
        let v = y("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  z: 3\n");
        assert_eq!(v["use"], json!({"x": 1, "y": 2, "z": 3}));
        assert!(load(
            "base: &b {x: 1}\nuse:\n  <<: *b\n  x: 3\n",
            Limits::default()
        )
        .is_err());
    }

    #[test]
    fn tags_are_honoured_or_refused() {
        let v = y("a: !!str 12\nb: !!binary aGVsbG8\nc: !!int '7'\n");
        assert_eq!(v, json!({"a": "12", "b": "hello", "c": 7}));
        assert!(load("a: !!python/object:os.system x\n", Limits::default()).is_err());
        assert!(load("a: !custom x\n", Limits::default()).is_err());
    }

    #[test]
    fn alias_bomb_is_refused_within_budget() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..20 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = load(&doc, Limits::default());
        assert!(
            matches!(&err, Err(e) if e.message.contains("nodes")),
            "{err:?}"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(load(&deep, Limits::default()).is_err());
        let ok = format!("{}{}", "[".repeat(60), "]".repeat(60));
        assert!(load(&ok, Limits::default()).is_ok());
    }

    #[test]
    fn top_level_scalar_and_list_are_values() {
        assert_eq!(y("hello"), json!("hello"));
        assert_eq!(y("- 1\n- two\n"), json!([1, "two"]));
        assert_eq!(
            y("{client: local, arg: [1, '2']}"),
            json!({"client": "local", "arg": [1, "2"]})
        );
    }

    /// Expected values recorded from Salt 3008.4's own loader (`salt.utils.yaml.safe_load`).
    #[test]
    fn plain_scalars_match_salts_loader() {
        let cases = [
            ("yes", json!(true)),
            ("no", json!(false)),
            ("y", json!("y")),
            ("n", json!("n")),
            ("on", json!(true)),
            ("off", json!(false)),
            ("True", json!(true)),
            ("TRUE", json!(true)),
            ("tRue", json!("tRue")),
            ("null", json!(null)),
            ("Null", json!(null)),
            ("~", json!(null)),
            ("", json!(null)),
            ("0", json!(0)),
            ("00", json!(0)),
            ("0644", json!(644)),
            ("-0644", json!(-420)),
            ("08", json!("08")),
            ("0o17", json!("0o17")),
            ("0x1F", json!(31)),
            ("0b11", json!(3)),
            ("1_000", json!(1000)),
            ("12:30", json!(750)),
            ("1:2:3", json!(3723)),
            ("1:60", json!("1:60")),
            ("190:20:30.15", json!(685230.15)),
            ("1e3", json!("1e3")),
            ("1.0e3", json!("1.0e3")),
            ("1.0e+3", json!(1000.0)),
            ("1.5", json!(1.5)),
            ("-1.5", json!(-1.5)),
            (".5", json!(0.5)),
            ("-.5", json!("-.5")),
            ("1.", json!(1.0)),
            (".inf", json!(null)),
            ("-.inf", json!(null)),
            (".nan", json!(null)),
            ("2024-01-01", json!("2024-01-01")),
            ("2024-01-01 10:00:00", json!("2024-01-01 10:00:00")),
            ("+12", json!(12)),
            ("-0", json!(0)),
            ("0.0", json!(0.0)),
            ("1__0", json!(10)),
            ("0x", json!("0x")),
            ("0b", json!("0b")),
            ("3:7", json!(187)),
            ("12:3a", json!("12:3a")),
            ("01:30", json!("01:30")),
            ("1_0.5", json!(10.5)),
            ("9223372036854775808", json!(9223372036854775808u64)),
            ("+.5", json!("+.5")),
        ];
        for (text, want) in cases {
            let doc = if text.is_empty() {
                "k:".to_owned()
            } else {
                format!("k: {text}")
            };
            assert_eq!(y(&doc)["k"], want, "{text:?}");
        }
    }
}
