//! The audit trail: one `info` line on the `brine::audit` target per lowstate chunk Brine
//! executed (or refused after it reached a client), with who asked (user, eauth or `token`),
//! what (client, fun, tgt), the jid(s) the master gave it and the outcome. Never the
//! arguments, never a password or a token. It goes with the other logs, or only to
//! `brine.audit_log_file` when that is set ([`crate::logging`]).
//!
//! The jids are those the clients report for the chunk ([`crate::clients::Outcome`]), so a
//! synchronous `local` call, whose answer carries no jid, is audited with its jid too.

use serde_json::{Map, Value};

use crate::clients::Client;

/// Longest `fun`/`tgt` text written; longer ones are cut.
const FIELD_WIDTH: usize = 256;

fn text(v: Option<&Value>) -> String {
    let t = match v {
        None | Some(Value::Null) => return "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if t.chars().count() > FIELD_WIDTH {
        let cut: String = t.chars().take(FIELD_WIDTH).collect();
        format!("{cut}…")
    } else {
        t
    }
}

/// What the audit line of one chunk says about the request, taken before the chunk runs.
pub struct Entry {
    user: String,
    eauth: String,
    client: Client,
    fun: String,
    tgt: String,
}

impl Entry {
    /// The session's user and eauth (`caller`) when the request came with a session token,
    /// else the chunk's own `username` and `eauth` (or `token`).
    pub fn new(
        caller: Option<&(String, String)>,
        client: Client,
        chunk: &Map<String, Value>,
    ) -> Entry {
        let (user, eauth) = match caller {
            Some((u, e)) => (u.clone(), e.clone()),
            None => (
                text(chunk.get("username")),
                match chunk.get("eauth") {
                    Some(e) => text(Some(e)),
                    None if chunk.contains_key("token") => "token".into(),
                    None => "-".into(),
                },
            ),
        };
        Entry {
            user,
            eauth,
            client,
            fun: text(chunk.get("fun")),
            tgt: text(chunk.get("tgt")),
        }
    }

    /// Writes the line. `outcome` is `ok` or the HTTP status the chunk ended with; `results`
    /// adds the jids an async client returned to those noted while it ran.
    pub fn record(&self, mut jids: Vec<String>, results: Option<&[Value]>, outcome: &str, ms: u64) {
        for r in results.unwrap_or_default() {
            if let Some(j) = r.get("jid").and_then(Value::as_str) {
                if !jids.iter().any(|x| x == j) {
                    jids.push(j.to_owned());
                }
            }
        }
        let jid = if jids.is_empty() {
            "-".to_owned()
        } else {
            jids.join(",")
        };
        tracing::info!(
            target: "brine::audit",
            user = %self.user,
            eauth = %self.eauth,
            client = self.client.name(),
            fun = %self.fun,
            tgt = %self.tgt,
            jid = %jid,
            outcome,
            ms,
            "lowstate"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut() {
        let long = Value::String("x".repeat(1000));
        assert_eq!(text(Some(&long)).chars().count(), FIELD_WIDTH + 1);
        assert_eq!(text(None), "-");
        assert_eq!(text(Some(&serde_json::json!(["a", "b"]))), r#"["a","b"]"#);
    }
}
