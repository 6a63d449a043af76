//! The clear request envelope and the shapes of the master's replies.
//!
//! salt-api never holds a key pair: every request is `{"enc": "clear", "load": {...},
//! "version": 3}` and authorisation travels inside the load (a token or eauth credentials).
//! Replies are not always maps: transport and channel errors come back as bare strings
//! (`"bad load"`), command errors as `{"error": {"name", "message"}}`, a failed `mk_token` as
//! `""` and an unknown token as `{}`. [`classify`] turns a reply into either the value or a
//! typed [`MasterError`], so callers never decode a reply straight into a struct.

use serde_json::{Map, Value};

/// Lowest envelope version the master accepts (`minimum_auth_version`, default 3).
pub const ENVELOPE_VERSION: u64 = 3;

/// Encodes a clear request for `load` (a map that holds at least `cmd`).
pub fn encode_clear(load: &Map<String, Value>) -> Vec<u8> {
    let env = rmpv::Value::Map(vec![
        (rmpv::Value::from("enc"), rmpv::Value::from("clear")),
        (
            rmpv::Value::from("load"),
            crate::value::json_to_mp(&Value::Object(load.clone())),
        ),
        (
            rmpv::Value::from("version"),
            rmpv::Value::from(ENVELOPE_VERSION),
        ),
    ]);
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &env);
    out
}

/// An error the master reported in place of a result.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MasterError {
    /// `{"error": {"name": ..., "message": ...}}`: a Salt exception by class name.
    #[error("{name}: {message}")]
    Named {
        /// Salt exception class (`AuthenticationError`, `TokenAuthenticationError`, ...).
        name: String,
        /// The exception's message.
        message: String,
    },
    /// A bare string reply from the transport or channel layer (`"bad load"`, ...), or an
    /// `{"error": "<text>"}` map from the pool router.
    #[error("master refused the request: {0}")]
    Refused(String),
}

impl MasterError {
    /// True for the error classes rest_cherrypy maps to 401.
    pub fn is_auth(&self) -> bool {
        matches!(self, MasterError::Named { name, .. } if matches!(
            name.as_str(),
            "AuthenticationError"
                | "AuthorizationError"
                | "EauthAuthenticationError"
                | "TokenAuthenticationError"
        ))
    }
}

/// Splits a reply into the value or the master's error.
///
/// Bare strings are errors except where a command legitimately answers with a string; callers
/// of such commands (`mk_token` answers `""` on failure) look at the raw value instead.
pub fn classify(reply: Value) -> Result<Value, MasterError> {
    match reply {
        Value::String(s) => Err(MasterError::Refused(s)),
        Value::Object(ref map) => match map.get("error") {
            Some(Value::Object(err)) => Err(MasterError::Named {
                name: err
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("SaltException")
                    .to_owned(),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            }),
            Some(Value::String(text)) if map.len() <= 2 => Err(MasterError::Refused(text.clone())),
            _ => Ok(reply),
        },
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_bytes_are_what_salt_sends() {
        let mut load = Map::new();
        load.insert("cmd".into(), json!("ping"));
        let bytes = encode_clear(&load);
        // fixmap(3) "enc" "clear" "load" {cmd: ping} "version" 3
        let expected: Vec<u8> = [
            &[0x83, 0xa3][..],
            b"enc",
            &[0xa5],
            b"clear",
            &[0xa4],
            b"load",
            &[0x81, 0xa3],
            b"cmd",
            &[0xa4],
            b"ping",
            &[0xa7],
            b"version",
            &[0x03],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn replies_are_classified() {
        assert_eq!(
            classify(json!("bad load")),
            Err(MasterError::Refused("bad load".into()))
        );
        let auth = classify(
            json!({"error": {"name": "AuthenticationError", "message": "Authentication error occurred."}}),
        );
        assert!(matches!(&auth, Err(e) if e.is_auth()));
        assert_eq!(
            classify(json!({"error": "Routing error"})),
            Err(MasterError::Refused("Routing error".into()))
        );
        assert_eq!(classify(json!({})), Ok(json!({})));
        assert_eq!(classify(json!(false)), Ok(json!(false)));
        // A wheel reply whose data mentions "error" deeper down is a result, not an error.
        let wheel = json!({"tag": "salt/wheel/1", "data": {"error": "x"}});
        assert_eq!(classify(wheel.clone()), Ok(wheel));
    }
}
