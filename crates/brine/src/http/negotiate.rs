//! Output negotiation: CherryPy's `Accept` algorithm and the two serialisers salt-api has.
//!
//! The algorithm is copied from `cherrypy.lib.cptools.accept` including its tie rule (spec
//! §1.4.2): media ranges are sorted by `q` and then by their text in *descending* byte order, so
//! `application/json, application/x-yaml` yields YAML. `*/*` picks the first offer (JSON),
//! `type/*` the first offer of that type, `q=0` ranges are skipped, and nothing matching is a
//! 406. A `q` that is not a number is CherryPy's 400 `Malformed HTTP header`.
//!
//! JSON is written like Python's `json.dumps` (`", "` and `": "` separators, raw UTF-8). YAML
//! is written block style with sorted keys, quoting every string that a YAML 1.1 reader
//! (PyYAML, which Salt's Python clients use) would otherwise turn into another type: no
//! maintained Rust YAML emitter quotes by 1.1 rules (`yes`, `on`, `12:30`, dates), hence the
//! small emitter here.

use serde_json::Value;

/// The two output formats of salt-api.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json`
    Json,
    /// `application/x-yaml`
    Yaml,
}

impl Format {
    /// The `Content-Type` of this format (no `charset`, as rest_cherrypy sends it).
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Yaml => "application/x-yaml",
        }
    }
}

/// Offered media types, in CherryPy's order of preference.
pub const OFFERS: [&str; 2] = ["application/json", "application/x-yaml"];

/// Why negotiation failed.
#[derive(Debug, PartialEq, Eq)]
pub enum NegotiationError {
    /// No range matches (406).
    NotAcceptable,
    /// A `q` value is not a number (400).
    Malformed(String),
}

struct Range {
    value: String,
    text: String,
    q: f64,
}

/// Splits an `Accept` header at commas outside double quotes.
fn split_elements(header: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in header.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&header[start..]);
    out
}

fn parse_params(s: &str) -> (String, Vec<(String, String)>) {
    let mut atoms = s.split(';').map(str::trim).filter(|a| !a.is_empty());
    let value = atoms.next().unwrap_or("").to_owned();
    let params = atoms
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
            None => (a.to_owned(), String::new()),
        })
        .collect();
    (value, params)
}

fn parse_ranges(header: &str) -> Result<Vec<Range>, NegotiationError> {
    let mut out = Vec::new();
    for element in split_elements(header) {
        // CherryPy splits at the first `; *q *=`: what precedes is the media range.
        let (range, q_part) = match find_q(element) {
            Some((at, after)) => (&element[..at], Some(&element[after..])),
            None => (element, None),
        };
        let (value, params) = parse_params(range.trim());
        let mut text = value.clone();
        for (k, v) in &params {
            text.push_str(&format!(";{k}={v}"));
        }
        let q = match q_part {
            None => 1.0,
            Some(q) => {
                let (qv, qparams) = parse_params(q.trim());
                text.push_str(&format!(";q={qv}"));
                for (k, v) in &qparams {
                    text.push_str(&format!(";{k}={v}"));
                }
                qv.parse::<f64>().map_err(|_| {
                    NegotiationError::Malformed(format!(
                        "Malformed HTTP header: `{}`",
                        element.trim()
                    ))
                })?
            }
        };
        out.push(Range { value, text, q });
    }
    Ok(out)
}

/// Finds `; *q *=` and returns (start of `;`, index after `=`).
fn find_q(element: &str) -> Option<(usize, usize)> {
    let b = element.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c != b';' {
            continue;
        }
        let mut j = i + 1;
        while b.get(j) == Some(&b' ') {
            j += 1;
        }
        if b.get(j) != Some(&b'q') {
            continue;
        }
        j += 1;
        while b.get(j) == Some(&b' ') {
            j += 1;
        }
        if b.get(j) == Some(&b'=') {
            return Some((i, j + 1));
        }
    }
    None
}

/// Picks one of `offers` for the `Accept` header value (`None` or empty: the first offer).
pub fn choose<'a>(accept: Option<&str>, offers: &[&'a str]) -> Result<&'a str, NegotiationError> {
    let header = accept.map(str::trim).unwrap_or("");
    let first = offers
        .first()
        .copied()
        .ok_or(NegotiationError::NotAcceptable)?;
    if header.is_empty() {
        return Ok(first);
    }
    let mut ranges = parse_ranges(header)?;
    // Most preferred first: higher q, then greater text.
    ranges.sort_by(|a, b| {
        b.q.partial_cmp(&a.q)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| b.text.cmp(&a.text))
    });
    for r in ranges.iter().filter(|r| r.q > 0.0) {
        if r.value == "*/*" {
            return Ok(first);
        }
        if let Some(major) = r.value.strip_suffix('*').filter(|m| m.ends_with('/')) {
            if let Some(m) = offers.iter().find(|m| m.starts_with(major)) {
                return Ok(m);
            }
        } else if let Some(m) = offers.iter().find(|m| **m == r.value) {
            return Ok(m);
        }
    }
    Err(NegotiationError::NotAcceptable)
}

/// Picks the output format for an `Accept` header.
pub fn output_format(accept: Option<&str>) -> Result<Format, NegotiationError> {
    match choose(accept, &OFFERS)? {
        "application/x-yaml" => Ok(Format::Yaml),
        _ => Ok(Format::Json),
    }
}

/// Serialises `value` in `format`.
pub fn render(format: Format, value: &Value) -> Vec<u8> {
    match format {
        Format::Json => to_python_json(value),
        Format::Yaml => to_yaml(value).into_bytes(),
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
    fn cherrypy_accept_examples() {
        let f = |h: &str| output_format(Some(h));
        assert_eq!(output_format(None), Ok(Format::Json));
        assert_eq!(f(""), Ok(Format::Json));
        assert_eq!(f("*/*"), Ok(Format::Json));
        assert_eq!(f("application/*"), Ok(Format::Json));
        assert_eq!(f("application/json"), Ok(Format::Json));
        assert_eq!(f("application/x-yaml"), Ok(Format::Yaml));
        // Equal q: the greater text wins, whatever the order in the header.
        assert_eq!(f("application/json, application/x-yaml"), Ok(Format::Yaml));
        assert_eq!(f("application/x-yaml, application/json"), Ok(Format::Yaml));
        assert_eq!(
            f("application/json;q=0.5, application/x-yaml"),
            Ok(Format::Yaml)
        );
        assert_eq!(f("application/json, text/plain, */*"), Ok(Format::Json));
        assert_eq!(
            f("application/x-yaml;q=0, application/json"),
            Ok(Format::Json)
        );
        assert_eq!(f("text/yaml"), Err(NegotiationError::NotAcceptable));
        assert_eq!(f("text/html"), Err(NegotiationError::NotAcceptable));
        assert!(matches!(
            f("application/json;q=abc"),
            Err(NegotiationError::Malformed(_))
        ));
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
}
