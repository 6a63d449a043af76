//! Conversion between msgpack values (what the master speaks) and JSON values (what salt-api
//! clients read), following the rules Salt itself applies when it decodes msgpack.
//!
//! Salt packs with `use_bin_type=True` and then decodes embedded byte strings as text when they
//! are valid UTF-8 (`decode_embedded_strs`), so a `bin` that holds UTF-8 becomes a JSON string
//! here too. Map keys that are not strings are written the way Python's `json.dumps` writes them
//! (`1` → `"1"`, `True` → `"true"`, `None` → `"null"`). Non-finite floats, which JSON cannot
//! carry, become `null`; msgpack extension values, which salt-api cannot serialise either,
//! become `null` as well.

use rmpv::Value as Mp;
use serde_json::{Map, Number, Value as Json};

/// Converts a decoded msgpack value into a JSON value (see the module notes for the rules).
pub fn mp_to_json(v: &Mp) -> Json {
    match v {
        Mp::Nil => Json::Null,
        Mp::Boolean(b) => Json::Bool(*b),
        Mp::Integer(i) => {
            if let Some(n) = i.as_i64() {
                Json::Number(n.into())
            } else if let Some(n) = i.as_u64() {
                Json::Number(n.into())
            } else {
                Json::Null
            }
        }
        Mp::F32(f) => float(f64::from(*f)),
        Mp::F64(f) => float(*f),
        Mp::String(s) => Json::String(match s.as_str() {
            Some(t) => t.to_owned(),
            None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        }),
        Mp::Binary(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
        Mp::Array(items) => Json::Array(items.iter().map(mp_to_json).collect()),
        Mp::Map(entries) => {
            let mut out = Map::with_capacity(entries.len());
            for (k, v) in entries {
                out.insert(key_string(k), mp_to_json(v));
            }
            Json::Object(out)
        }
        Mp::Ext(_, _) => Json::Null,
    }
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)
}

/// Renders a msgpack map key as a JSON object key, as Python's `json.dumps` would.
fn key_string(k: &Mp) -> String {
    match k {
        Mp::String(s) => match s.as_str() {
            Some(t) => t.to_owned(),
            None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        },
        Mp::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        Mp::Nil => "null".to_owned(),
        Mp::Boolean(b) => b.to_string(),
        Mp::Integer(i) => i.to_string(),
        Mp::F32(f) => f.to_string(),
        Mp::F64(f) => f.to_string(),
        other => other.to_string(),
    }
}

/// Looks up a string key in a msgpack map (a key sent as `str` or as `bin`, as Salt's peers
/// send them).
pub fn map_get<'a>(map: &'a Mp, key: &str) -> Option<&'a Mp> {
    map.as_map()?.iter().find_map(|(k, v)| {
        let name = match k {
            Mp::String(s) => s.as_str(),
            Mp::Binary(b) => std::str::from_utf8(b).ok(),
            _ => None,
        };
        (name == Some(key)).then_some(v)
    })
}

/// Converts a JSON value into the msgpack value Salt's own client would send for it.
pub fn json_to_mp(v: &Json) -> Mp {
    match v {
        Json::Null => Mp::Nil,
        Json::Bool(b) => Mp::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else {
                // serde_json keeps a number's digits (`arbitrary_precision`): a float has a
                // point or an exponent; anything else is an integer msgpack cannot hold,
                // which Salt's `payload.dumps` sends as its decimal string.
                let text = n.to_string();
                if text.contains(['.', 'e', 'E']) {
                    Mp::F64(text.parse().unwrap_or(0.0))
                } else {
                    Mp::from(text.as_str())
                }
            }
        }
        Json::String(s) => Mp::from(s.as_str()),
        Json::Array(items) => Mp::Array(items.iter().map(json_to_mp).collect()),
        Json::Object(map) => Mp::Map(
            map.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), json_to_mp(v)))
                .collect(),
        ),
    }
}

/// Encodes a JSON value as msgpack bytes.
pub fn encode_json(v: &Json) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &json_to_mp(v));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_go_to_msgpack_as_salt_payload_sends_them() {
        let doc: Json = serde_json::from_str(
            "[18446744073709551615, 18446744073709551616, -9223372036854775808, \
             -9223372036854775809, 20261206195204221114, 1.5, 1.0, 1e400, 0.1]",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let Mp::Array(items) = json_to_mp(&doc) else {
            panic!("not an array")
        };
        assert_eq!(items[0], Mp::from(u64::MAX));
        assert_eq!(items[1], Mp::from("18446744073709551616"));
        assert_eq!(items[2], Mp::from(i64::MIN));
        assert_eq!(items[3], Mp::from("-9223372036854775809"));
        assert_eq!(items[4], Mp::from("20261206195204221114"));
        assert_eq!(items[5], Mp::F64(1.5));
        assert_eq!(items[6], Mp::F64(1.0));
        assert_eq!(items[7], Mp::F64(f64::INFINITY));
        assert_eq!(items[8], Mp::F64(0.1));
    }

    #[test]
    fn bin_holding_utf8_becomes_text() {
        let v = Mp::Map(vec![(
            Mp::Binary(b"tag".to_vec()),
            Mp::Binary("caf\u{e9}".as_bytes().to_vec()),
        )]);
        assert_eq!(mp_to_json(&v), json!({"tag": "caf\u{e9}"}));
    }

    #[test]
    fn non_string_keys_are_written_like_python_json() {
        let v = Mp::Map(vec![
            (Mp::from(1), Mp::from("a")),
            (Mp::Boolean(true), Mp::from("b")),
            (Mp::Nil, Mp::from("c")),
        ]);
        assert_eq!(mp_to_json(&v), json!({"1": "a", "true": "b", "null": "c"}));
    }

    #[test]
    fn non_finite_floats_and_ext_become_null() {
        assert_eq!(mp_to_json(&Mp::F64(f64::NAN)), Json::Null);
        assert_eq!(mp_to_json(&Mp::Ext(1, vec![0])), Json::Null);
    }

    #[test]
    fn round_trip_keeps_numbers_and_order() {
        let v = json!({"z": 1, "a": [u64::MAX, -5, 1.5, "x", null, true]});
        let back = mp_to_json(&json_to_mp(&v));
        assert_eq!(back, v);
        assert_eq!(
            serde_json::to_string(&back).unwrap_or_default(),
            serde_json::to_string(&v).unwrap_or_default()
        );
    }
}
