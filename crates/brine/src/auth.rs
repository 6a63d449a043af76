//! Authentication: Salt eauth tokens are Brine's only sessions (decision D1).
//!
//! * `/login` asks the master for a token (`mk_token`) and hands that token out; Brine stores
//!   nothing, so any Brine instance in front of the same master accepts it.
//! * Every request's token is checked with the master's `get_token`, cached in a bounded LRU
//!   until shortly before the token expires (at most [`MAX_CACHE_TTL`]), so a busy client
//!   costs one master round trip per few minutes, not per request.
//! * Logout cannot delete a token through the master's clear commands, so Brine records a
//!   revocation (by SHA-256 of the token, never the token) and broadcasts it on the master's
//!   event bus under [`REVOKE_TAG`]; every Brine instance on that master refuses the token from
//!   then on, until it would have expired anyway.
//! * `perms` for the `/login` answer are computed from the master's `external_auth` exactly as
//!   rest_cherrypy does (`sum_permissions` + `sorted_permissions`), on a copy.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lru::LruCache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::events::hub::Hub;
use crate::master::Master;
use crate::py::python_repr;

/// Longest a positive token check is trusted without asking the master again.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(300);
/// Tag of the revocation events Brine instances exchange on the bus.
pub const REVOKE_TAG: &str = "brine/token/revoked";
/// Most revocations remembered (older, expired ones are dropped first).
const MAX_REVOKED: usize = 100_000;

/// What Brine knows about a valid token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenInfo {
    /// The user the token was issued to.
    pub name: String,
    /// The eauth backend.
    pub eauth: String,
    /// Expiry, seconds since the epoch.
    pub expire: f64,
    /// The master's full token record.
    pub data: Value,
}

/// Token checks and revocations (see the module notes).
pub struct Auth {
    cache: Mutex<LruCache<String, (TokenInfo, Instant)>>,
    revoked: Mutex<HashMap<String, f64>>,
}

/// SHA-256 of a token, hex: how revocations name a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl TokenInfo {
    /// Reads the master's token record.
    pub fn from_record(data: Value) -> Option<TokenInfo> {
        Some(TokenInfo {
            name: data.get("name")?.as_str()?.to_owned(),
            eauth: data.get("eauth")?.as_str()?.to_owned(),
            expire: data.get("expire")?.as_f64()?,
            data,
        })
    }
}

impl Auth {
    /// An empty cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Auth {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Auth {
            cache: Mutex::new(LruCache::new(cap)),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a token: `Ok(None)` when it is not valid (unknown, expired, revoked, not hex).
    pub async fn check(&self, master: &Master, token: &str) -> Result<Option<TokenInfo>, ApiError> {
        if token.is_empty() || token.len() > 1024 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        if self.is_revoked(token) {
            return Ok(None);
        }
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((info, until)) = cache.get(token) {
                if *until > now {
                    return Ok(Some(info.clone()));
                }
                cache.pop(token);
            }
        }
        let Some(record) = master.get_token(token).await? else {
            return Ok(None);
        };
        let Some(info) = TokenInfo::from_record(record) else {
            return Ok(None);
        };
        self.remember(token, &info);
        Ok(Some(info))
    }

    /// Caches a token the master just vouched for (from `mk_token` or `get_token`).
    pub fn remember(&self, token: &str, info: &TokenInfo) {
        let left = info.expire - now_epoch() - 5.0;
        if left <= 0.0 {
            return;
        }
        let ttl = Duration::from_secs_f64(left.min(MAX_CACHE_TTL.as_secs_f64()));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.put(token.to_owned(), (info.clone(), Instant::now() + ttl));
    }

    /// Records a revocation by token hash until `expire` (epoch seconds).
    pub fn revoke_hash(&self, hash: &str, expire: f64) {
        let now = now_epoch();
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        if revoked.len() >= MAX_REVOKED {
            revoked.retain(|_, exp| *exp > now);
        }
        if revoked.len() < MAX_REVOKED {
            revoked.insert(hash.to_owned(), expire.max(now + 60.0));
        } else {
            tracing::error!("revocation list full; a revoked token stays usable until it expires");
        }
        drop(revoked);
        // A cached positive check must not outlive the revocation.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<String> = cache
            .iter()
            .filter(|(t, _)| token_hash(t) == hash)
            .map(|(t, _)| t.clone())
            .collect();
        for t in stale {
            cache.pop(&t);
        }
    }

    /// Whether a token was revoked.
    pub fn is_revoked(&self, token: &str) -> bool {
        let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        if revoked.is_empty() {
            return false;
        }
        match revoked.get(&token_hash(token)) {
            Some(exp) => *exp > now_epoch(),
            None => false,
        }
    }

    /// Revokes `token` here and announces it on the bus, so that every Brine instance of this
    /// master drops it too (a failed announcement is logged: this instance still revokes).
    pub async fn revoke_everywhere(&self, master: &Master, token: &str, expire: f64) {
        self.revoke_hash(&token_hash(token), expire);
        if let Err(e) = master
            .fire_event(REVOKE_TAG, revocation_event(token, expire))
            .await
        {
            tracing::warn!(error = ?e, "could not announce a logout to other Brine instances");
        }
    }

    /// Follows the bus for revocations announced by any Brine instance on this master (this
    /// one included), for the life of the process.
    pub fn follow_revocations(self: &Arc<Self>, hub: &Hub) {
        let auth = self.clone();
        let mut rx = hub.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    // Only a revocation's data is parsed back from its frame.
                    Ok(ev) if ev.tag() == REVOKE_TAG => auth.on_event(ev.tag(), &ev.event().data),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "revocation listener fell behind the bus");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// Handles a bus event; revocations from any Brine instance are applied.
    pub fn on_event(&self, tag: &str, data: &Value) {
        if tag != REVOKE_TAG {
            return;
        }
        if let Some(hash) = data.get("token_sha256").and_then(Value::as_str) {
            let expire = data.get("expire").and_then(Value::as_f64).unwrap_or(0.0);
            self.revoke_hash(hash, expire);
        }
    }
}

/// The event data announcing a revocation.
pub fn revocation_event(token: &str, expire: f64) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("token_sha256".into(), token_hash(token).into());
    data.insert("expire".into(), expire.into());
    data
}

/// `salt.netapi.sum_permissions` + `sorted_permissions` (+ the `rest`/`django` special cases of
/// `/login`), computed on copies. An empty result is `{}`, as rest_cherrypy answers it.
pub fn login_perms(token: &Value, external_auth: &Map<String, Value>) -> Value {
    let eauth_name = token.get("eauth").and_then(Value::as_str).unwrap_or("");
    let Some(eauth) = external_auth.get(eauth_name).and_then(Value::as_object) else {
        return Value::Object(Map::new());
    };
    let auth_list = token.get("auth_list").filter(|v| v.is_array());
    if (eauth_name == "django" && eauth.contains_key("^model"))
        || (eauth_name == "rest" && auth_list.is_some())
    {
        return match auth_list {
            Some(Value::Array(a)) if !a.is_empty() => Value::Array(a.clone()),
            _ => Value::Object(Map::new()),
        };
    }
    let name = token.get("name").and_then(Value::as_str).unwrap_or("");
    let mut perms: Vec<Value> = Vec::new();
    let mut extend = |v: Option<&Value>| -> bool {
        match v {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => {
                perms.extend(a.iter().cloned());
                true
            }
            // rest_cherrypy's try/except turns a malformed entry into `{}`.
            Some(_) => false,
        }
    };
    if !extend(eauth.get(name)) || !extend(eauth.get("*")) {
        return Value::Object(Map::new());
    }
    if let Some(Value::Array(groups)) = token.get("groups") {
        let mut seen = std::collections::BTreeSet::new();
        for g in groups.iter().filter_map(Value::as_str) {
            if seen.insert(g) && !extend(eauth.get(&format!("{g}%"))) {
                return Value::Object(Map::new());
            }
        }
    }
    let mut strings: Vec<String> = Vec::new();
    let mut others: Vec<Value> = Vec::new();
    for p in perms {
        match p {
            Value::String(s) => {
                if !strings.contains(&s) {
                    strings.push(s);
                }
            }
            other => {
                if !others.contains(&other) {
                    others.push(other);
                }
            }
        }
    }
    if strings.is_empty() && others.is_empty() {
        return Value::Object(Map::new());
    }
    strings.sort();
    others.sort_by_key(python_repr);
    let mut out: Vec<Value> = strings.into_iter().map(Value::String).collect();
    out.extend(others);
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn perms_follow_rest_cherrypy() {
        let ea = json!({"auto": {"saltdev": [".*", "@runner", "@wheel", "@jobs"],
                                 "limited": [{"m1": ["test.*"]}],
                                 "*": ["@jobs"],
                                 "ops%": ["grains.*", {"m2": ["x"]}]}});
        let ea = ea.as_object().cloned().unwrap_or_default();
        let t = json!({"name": "saltdev", "eauth": "auto"});
        assert_eq!(
            login_perms(&t, &ea),
            json!([".*", "@jobs", "@runner", "@wheel"])
        );
        let t = json!({"name": "limited", "eauth": "auto", "groups": ["ops", "other"]});
        assert_eq!(
            login_perms(&t, &ea),
            json!(["@jobs", "grains.*", {"m1": ["test.*"]}, {"m2": ["x"]}])
        );
        let t = json!({"name": "nobody", "eauth": "pam"});
        assert_eq!(login_perms(&t, &ea), json!({}));
    }

    #[test]
    fn revocation_hides_a_token_and_drops_its_cache_entry() {
        let auth = Auth::new(4);
        let info = TokenInfo {
            name: "u".into(),
            eauth: "auto".into(),
            expire: now_epoch() + 1000.0,
            data: json!({}),
        };
        auth.remember("abcd", &info);
        assert!(!auth.is_revoked("abcd"));
        auth.on_event(
            REVOKE_TAG,
            &Value::Object(revocation_event("abcd", info.expire)),
        );
        assert!(auth.is_revoked("abcd"));
        assert!(auth
            .cache
            .lock()
            .map(|c| c.peek("abcd").is_none())
            .unwrap_or(false));
        assert!(!auth.is_revoked("abcde"));
    }
}
