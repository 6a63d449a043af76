//! Request bodies: the content types salt-api reads and how each becomes a value.
//!
//! Quirks of rest_cherrypy reproduced on purpose, each where it happens below:
//! * `text/plain` is tried as JSON first, because SaltGUI posts JSON with `fetch` and no
//!   `Content-Type` (the browser then sends `text/plain;charset=UTF-8`); text that is not JSON
//!   stays a string.
//! * Form bodies: a key seen once is a string, a key seen several times a list of strings;
//!   blank values are dropped (Python's `parse_qsl`); `arg` values and `kwarg` go through
//!   Salt's CLI coercion [`yamlify_arg`]; `arg[]` is not special (stays a literal key).
//! * An empty body is "no data" whatever the `Content-Type`.
//!
//! Differences, all in the direction of refusing bad input early: a YAML syntax error is 400
//! `Invalid YAML document` (the reference answers 500, decision D2); bodies that are not UTF-8,
//! nest deeper than the configured depth, or expand past the YAML node budget are 400.

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::py::yamlify_arg;
use salt_wire::yaml::{self, Limits};

/// Bounds applied to every parsed body.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Deepest nesting of lists and objects.
    pub max_depth: usize,
    /// Most YAML nodes a body may expand to (aliases counted at full size).
    pub max_yaml_nodes: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_depth: 64,
            max_yaml_nodes: 200_000,
        }
    }
}

/// The media type of a `Content-Type` value, lower-cased, parameters dropped.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Parses a request body. `Ok(None)` means "no data" (empty body).
pub fn parse(
    content_type: Option<&str>,
    bytes: &[u8],
    limits: BodyLimits,
) -> Result<Option<Value>, ApiError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let kind = content_type.map(media_type).unwrap_or_default();
    let value = match kind.as_str() {
        "application/json" => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::BadRequest("Invalid JSON document".into()))?;
            serde_json::from_str::<Value>(text)
                .map_err(|_| ApiError::BadRequest("Invalid JSON document".into()))?
        }
        "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::BadRequest("Invalid YAML document".into()))?;
            let lim = Limits {
                max_depth: limits.max_depth,
                max_nodes: limits.max_yaml_nodes,
            };
            match yaml::load(text, lim) {
                Ok(Some(v)) => v,
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::debug!(error = %e, "refused a YAML body");
                    return Err(ApiError::BadRequest("Invalid YAML document".into()));
                }
            }
        }
        "text/plain" => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::BadRequest("Request body is not valid UTF-8".into()))?;
            match serde_json::from_str::<Value>(text) {
                Ok(v) => v,
                Err(_) => Value::String(text.to_owned()),
            }
        }
        "application/x-www-form-urlencoded" => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::BadRequest("Request body is not valid UTF-8".into()))?;
            form(text)
        }
        _ => return Err(ApiError::UnsupportedContentType),
    };
    if depth(&value) > limits.max_depth {
        return Err(ApiError::BadRequest(format!(
            "Request body nests deeper than {} levels",
            limits.max_depth
        )));
    }
    Ok(Some(value))
}

/// Nesting depth of a value (a scalar is 0, `[]` is 1).
pub fn depth(v: &Value) -> usize {
    // Iterative, so a hostile value cannot exhaust the stack here.
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                max = max.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            Value::Object(m) => {
                max = max.max(d + 1);
                stack.extend(m.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    max
}

/// `urlencoded_processor` of rest_cherrypy.
fn form(text: &str) -> Value {
    let mut fields: Map<String, Value> = Map::new();
    for (k, v) in form_urlencoded::parse(text.as_bytes()) {
        if v.is_empty() {
            // parse_qsl(keep_blank_values=False) drops blank values.
            continue;
        }
        let v = Value::String(v.into_owned());
        match fields.get_mut(k.as_ref()) {
            None => {
                fields.insert(k.into_owned(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(first) => {
                let prev = first.take();
                *first = Value::Array(vec![prev, v]);
            }
        }
    }
    if let Some(kwarg) = fields.get_mut("kwarg") {
        let coerced = yamlify(kwarg.take());
        *kwarg = coerced;
    }
    if let Some(arg) = fields.get_mut("arg") {
        let coerced = match arg.take() {
            Value::Array(items) => Value::Array(items.into_iter().map(yamlify).collect()),
            single => Value::Array(vec![yamlify(single)]),
        };
        *arg = coerced;
    }
    Value::Object(fields)
}

fn yamlify(v: Value) -> Value {
    match v {
        Value::String(s) => yamlify_arg(&s),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(ct: &str, body: &str) -> Result<Option<Value>, ApiError> {
        parse(Some(ct), body.as_bytes(), BodyLimits::default())
    }

    #[test]
    fn content_types() {
        assert_eq!(
            p("application/json", "{\"a\": 1}"),
            Ok(Some(json!({"a": 1})))
        );
        assert_eq!(
            p("application/json; charset=utf-8", "{bad"),
            Err(ApiError::BadRequest("Invalid JSON document".into()))
        );
        assert_eq!(p("text/plain;charset=UTF-8", "[1]"), Ok(Some(json!([1]))));
        assert_eq!(p("text/plain", "not json"), Ok(Some(json!("not json"))));
        assert_eq!(
            p("application/x-yaml", "a: yes"),
            Ok(Some(json!({"a": true})))
        );
        assert_eq!(
            p("text/yaml", "a: [b"),
            Err(ApiError::BadRequest("Invalid YAML document".into()))
        );
        assert_eq!(
            p("application/xml", "<a/>"),
            Err(ApiError::UnsupportedContentType)
        );
        assert_eq!(
            parse(None, b"x", BodyLimits::default()),
            Err(ApiError::UnsupportedContentType)
        );
        assert_eq!(p("application/xml", ""), Ok(None));
    }

    #[test]
    fn integers_beyond_64_bits_keep_every_digit() {
        let digits = |v: &Value| v.to_string();
        let json = p(
            "application/json",
            r#"{"arg": [20261206195204221114, 1.5, 12345678901234567890123, 18446744073709551615]}"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .unwrap_or_default();
        assert_eq!(
            digits(&json["arg"]),
            "[20261206195204221114,1.5,12345678901234567890123,18446744073709551615]"
        );
        let yaml = p(
            "application/x-yaml",
            "arg: [20261206195204221114, 1.5, 1234567890123456789012345678901234567890123]",
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .unwrap_or_default();
        assert_eq!(
            digits(&yaml["arg"]),
            "[20261206195204221114,1.5,1234567890123456789012345678901234567890123]"
        );
        let form = p(
            "application/x-www-form-urlencoded",
            "arg=20261206195204221114&arg=-9223372036854775809&arg=1.5",
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
        .unwrap_or_default();
        assert_eq!(
            digits(&form["arg"]),
            "[20261206195204221114,-9223372036854775809,1.5]"
        );
    }

    #[test]
    fn form_fields_follow_rest_cherrypy() {
        let v = p(
            "application/x-www-form-urlencoded",
            "client=local&tgt=*&fun=test.arg&arg=2&arg=true&arg=%7Bk%3A+v%7D&arg=a+b&arg%5B%5D=x&timeout=5&empty=",
        );
        assert_eq!(
            v,
            Ok(Some(
                json!({"client": "local", "tgt": "*", "fun": "test.arg",
                            "arg": [2, true, {"k": "v"}, "a b"], "arg[]": "x", "timeout": "5"})
            ))
        );
        let one = p(
            "application/x-www-form-urlencoded",
            "arg=hello&kwarg=%7Ba%3A+1%7D",
        );
        assert_eq!(one, Ok(Some(json!({"arg": ["hello"], "kwarg": {"a": 1}}))));
    }

    #[test]
    fn depth_limit() {
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        assert!(matches!(
            p("application/json", &deep),
            Err(ApiError::BadRequest(_))
        ));
        assert_eq!(depth(&json!([[1], {"a": {}}])), 3);
    }
}

/// Property tests of the body parser on arbitrary input in every accepted type (run briefly
/// by `cargo test`, at length by `scripts/fuzz`).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [&str; 6] = [
        "application/json",
        "application/x-yaml",
        "text/yaml",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/octet-stream",
    ];

    fn check(ct: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
        let limits = BodyLimits {
            max_depth: 8,
            max_yaml_nodes: 2_000,
        };
        if let Ok(Some(v)) = parse(Some(ct), bytes, limits) {
            prop_assert!(depth(&v) <= 8, "{ct}: {v}");
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_type(ct in 0usize..TYPES.len(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            check(TYPES[ct], &bytes)?;
        }

        #[test]
        fn lowstate_like_text(ct in 0usize..TYPES.len(), parts in proptest::collection::vec(prop_oneof![
            Just("["), Just("]"), Just("{"), Just("}"), Just("\"client\""), Just(": "), Just(", "),
            Just("\"local\""), Just("client=local"), Just("&"), Just("arg="), Just("arg[]="), Just("%ff"),
            Just("- "), Just("\n"), Just("&a "), Just("*a"), Just("yes"), Just("1e999"), Just("-0"),
            Just("\\u0000"), Just("\"\\ud800\""), Just("tgt"), Just("="), Just("'"),
        ], 0..80)) {
            check(TYPES[ct], parts.concat().as_bytes())?;
        }
    }
}
