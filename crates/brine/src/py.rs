//! Python, as salt-api's answers show it: the few behaviours of Python and Salt's helpers
//! that a compatible answer depends on, in one place.
//!
//! * values: truthiness, `str()` and `repr()`, `int(x, 16)`'s notion of a hex string;
//! * arguments: `salt.utils.args.yamlify_arg`, the CLI-style coercion of an argument string;
//! * output: `json.dumps` spacing and PyYAML's `safe_dump` block layout, the two bodies
//!   salt-api writes.

use salt_wire::yaml::{self, Limits};
use serde_json::Value;

/// Python truthiness of a JSON value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// The strings of a JSON list (other items and non-lists are ignored).
pub fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `str(value)` as Python prints it in error messages.
pub fn python_str(v: Option<&Value>) -> String {
    match v {
        None => "None".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => python_repr(other),
    }
}

/// Python's `repr()` of a JSON-like value (the sort key of `sorted_permissions`).
pub fn python_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            if s.contains('\'') && !s.contains('"') {
                format!("\"{s}\"")
            } else {
                format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Value::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `int(token, 16)` in Python terms: what rest_cherrypy accepts as a "hex" token.
pub fn is_python_hex(token: &str) -> bool {
    let t = token.trim();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    !t.is_empty()
        && !t.starts_with('_')
        && !t.ends_with('_')
        && !t.contains("__")
        && t.chars().all(|c| c.is_ascii_hexdigit() || c == '_')
}

/// `salt.utils.args.yamlify_arg`: CLI-style coercion of one argument string.
pub fn yamlify_arg(arg: &str) -> Value {
    let keep = || Value::String(arg.to_owned());
    let stripped = arg.trim();
    if matches!(stripped, "" | "---" | "...") {
        return keep();
    }
    if arg.contains('_') && stripped.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return keep();
    }
    if arg.contains(['\t', '\r', '\n']) {
        return keep();
    }
    let limits = Limits {
        max_depth: 32,
        max_nodes: 10_000,
    };
    if arg.contains('#') {
        // Only take the YAML reading when it is not a string: a `#` may start a comment.
        return match yaml::load(arg, limits) {
            Ok(Some(Value::String(_))) | Ok(None) | Err(_) => keep(),
            Ok(Some(v)) => v,
        };
    }
    if arg == "None" {
        return Value::Null;
    }
    let parsed = match yaml::load(arg, limits) {
        Ok(v) => v.unwrap_or(Value::Null),
        Err(_) => return keep(),
    };
    match parsed {
        Value::Object(_) if !arg.starts_with('{') => keep(),
        Value::Array(_) if !arg.starts_with('[') => keep(),
        Value::String(ref s) if s.is_empty() && (arg == "|" || arg == "!") => keep(),
        Value::Null if stripped.starts_with('#') || arg == "!" => keep(),
        other => other,
    }
}

/// `json.dumps` spacing: `", "` between items and `": "` after keys.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.begin_array_value(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Serialises like Python's `json.dumps(value, ensure_ascii=False)`.
pub fn to_python_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serialising a `Value` into a Vec cannot fail.
    let _ = serde::Serialize::serialize(value, &mut ser);
    out
}

/// Serialises as block-style YAML with sorted keys (PyYAML's `safe_dump` layout).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, level: usize) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for k in keys {
        indent(out, level);
        out.push_str(&string_text(k));
        out.push(':');
        match &m[k] {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, level + 2);
            }
            // PyYAML puts a block sequence under a key at the key's own indentation.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, level);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push('-');
        match item {
            Value::Object(inner) if !inner.is_empty() => {
                // The first key goes on the dash line, the rest indented under it.
                out.push(' ');
                let mut nested = String::new();
                write_map(&mut nested, inner, level + 2);
                out.push_str(nested.trim_start_matches(' '));
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push(' ');
                let mut nested = String::new();
                write_seq(&mut nested, inner, level + 2);
                out.push_str(nested.trim_start_matches(' '));
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(true) => "true".into(),
        Value::Bool(false) => "false".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string as a YAML scalar that every YAML 1.1 or 1.2 reader reads back as that string.
fn string_text(s: &str) -> String {
    let plain_safe = !s.is_empty()
        && s.len() < 1024
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '.' | '/' | '-' | '+' | ' ' | ',' | '(' | ')')
        })
        && !s.ends_with(' ')
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && matches!(salt_wire::yaml::resolve_plain(s), Value::String(_))
        && !matches!(s, "y" | "Y" | "n" | "N" | "=" | "<<");
    if plain_safe {
        return s.to_owned();
    }
    if s.chars().all(|c| !c.is_control() && c != '\u{feff}') {
        return format!("'{}'", s.replace('\'', "''"));
    }
    // JSON string syntax is valid YAML double-quoted syntax.
    serde_json::to_string(s).unwrap_or_else(|_| "''".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_str_and_truthiness() {
        assert_eq!(python_str(None), "None");
        assert_eq!(python_str(Some(&json!("x"))), "x");
        assert_eq!(python_str(Some(&json!(["a", 1]))), "['a', 1]");
        assert!(!truthy(&json!("")) && truthy(&json!("false")) && !truthy(&json!(0)));
    }

    #[test]
    fn python_hex_rules() {
        for ok in ["ab", " ab ", "0xab", "-ab", "a_b", "ABCDEF0123"] {
            assert!(is_python_hex(ok), "{ok}");
        }
        for bad in ["", "xyz", "a__b", "_a", "0x", "a b"] {
            assert!(!is_python_hex(bad), "{bad}");
        }
    }

    #[test]
    fn json_is_spaced_like_python() {
        let v = json!({"return": "Welcome", "clients": ["a", "b"], "n": {"k": 1.5, "u": "\u{e9}"}});
        assert_eq!(
            String::from_utf8_lossy(&to_python_json(&v)),
            "{\"return\": \"Welcome\", \"clients\": [\"a\", \"b\"], \"n\": {\"k\": 1.5, \"u\": \"\u{e9}\"}}"
        );
    }

    #[test]
    fn yaml_layout_and_quoting() {
        let v = json!({"return": "Welcome", "clients": ["destroy", "local"],
                       "q": ["yes", "12:30", "2024-01-01", "0644", "", "it's", "a\nb", "y", "two words", "Yes please"],
                       "m": [{"k": 1, "a": null}], "e": {}, "l": []});
        let text = to_yaml(&v);
        assert_eq!(
            text,
            "clients:\n- destroy\n- local\ne: {}\nl: []\nm:\n- a: null\n  k: 1\nq:\n- 'yes'\n- '12:30'\n- '2024-01-01'\n- '0644'\n- ''\n- 'it''s'\n- \"a\\nb\"\n- 'y'\n- two words\n- Yes please\nreturn: Welcome\n"
        );
        // Every string reads back as itself with Salt's (YAML 1.1) loader.
        let back = salt_wire::yaml::load(&text, salt_wire::yaml::Limits::default());
        assert_eq!(back.ok().flatten(), Some(v));
    }

    #[test]
    fn yamlify_arg_special_cases() {
        assert_eq!(yamlify_arg("1_000"), json!("1_000"));
        assert_eq!(yamlify_arg("---"), json!("---"));
        assert_eq!(yamlify_arg("a\tb"), json!("a\tb"));
        assert_eq!(yamlify_arg("foo #bar"), json!("foo #bar"));
        assert_eq!(yamlify_arg("[1, 2] # c"), json!([1, 2]));
        assert_eq!(yamlify_arg("None"), json!(null));
        assert_eq!(yamlify_arg("k: v"), json!("k: v"));
        assert_eq!(yamlify_arg("- a"), json!("- a"));
        assert_eq!(yamlify_arg("!"), json!("!"));
        assert_eq!(yamlify_arg("1.5"), json!(1.5));
        assert_eq!(yamlify_arg("name=value"), json!("name=value"));
        assert_eq!(yamlify_arg("'quoted'"), json!("quoted"));
    }
}
