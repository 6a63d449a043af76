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

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

use crate::py::{to_python_json, to_yaml};

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

/// A negotiated 200 (or `status`) answer with `value` as the body.
pub fn ok(format: Format, status: StatusCode, value: &Value) -> Response {
    let mut resp = Response::new(Body::from(render(format, value)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
