//! The request channel (the master's `ret_port`), minion side: envelopes as
//! `salt/channel/client.py` (3008) packs them, and a small pool of ZeroMQ `REQ` connections
//! shared by every simulated minion.
//!
//! * Clear requests (`_auth`): `{"enc": "clear", "load": {...}, "version": 3}`.
//! * AES requests (`_return`, `_pillar`, `_minion_event`): the load gets `nonce`, `ts`, `tok`
//!   (X9.31 of `b"salt"`) and `id`, is encrypted with the minion's *session* key (version 3:
//!   one key per minion, not the master's publish key), and travels as
//!   `{"enc": "aes", "load": <bytes>, "version": 3, "id", "enc_algo", "sig_algo"}`. The master
//!   answers with `Crypticle.dumps(ret, nonce)` under the same session key, or with a plain
//!   map for `send_private` commands (`_pillar`), or with a bare string such as `"bad load"`
//!   when it could not read the request.
//!
//! Why shared connections: the master tells minions apart by the `id` in each load, not by
//! connection (only the publish port's connections count as "connected"), and a real minion
//! opens and closes request connections as it goes. 10 000 minions therefore need a few
//! connections here, not 10 000; the pool size bounds the requests in flight (the master has
//! `worker_threads` workers anyway).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rmpv::Value as Mp;
use salt_wire::reqchan::{Connection, Transport};
use salt_wire::WireError;
use tokio::sync::Mutex;

use crate::crypt::Crypticle;

/// `encryption_algorithm` and `signing_algorithm` a 3008 minion announces by default.
pub const ENC_ALGO: &str = "OAEP-SHA1";
/// See [`ENC_ALGO`].
pub const SIG_ALGO: &str = "PKCS1v15-SHA1";

/// A random `uuid4().hex`-shaped nonce.
pub fn nonce() -> String {
    let mut raw = [0u8; 16];
    rand::fill(&mut raw[..]);
    hex::encode(raw)
}

fn encode(v: &Mp) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

/// A clear request envelope.
pub fn clear(load: Mp) -> Vec<u8> {
    encode(&Mp::Map(vec![
        (Mp::from("enc"), Mp::from("clear")),
        (Mp::from("load"), load),
        (Mp::from("version"), Mp::from(3)),
    ]))
}

/// An AES request envelope for minion `id`: adds `nonce`, `ts`, `tok` and `id` to `load` (a
/// map) and encrypts it with `session`. Returns the bytes and the nonce the reply carries.
pub fn aes(
    id: &str,
    session: &Crypticle,
    tok: &[u8],
    mut load: Vec<(Mp, Mp)>,
) -> (Vec<u8>, String) {
    let nonce = nonce();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    load.retain(|(k, _)| !matches!(k.as_str(), Some("nonce" | "ts" | "tok" | "id")));
    load.push((Mp::from("nonce"), Mp::from(nonce.as_str())));
    load.push((Mp::from("ts"), Mp::from(ts)));
    load.push((Mp::from("tok"), Mp::Binary(tok.to_vec())));
    load.push((Mp::from("id"), Mp::from(id)));
    let body = session.dumps(&Mp::Map(load), None);
    let env = encode(&Mp::Map(vec![
        (Mp::from("enc"), Mp::from("aes")),
        (Mp::from("load"), Mp::Binary(body)),
        (Mp::from("version"), Mp::from(3)),
        (Mp::from("id"), Mp::from(id)),
        (Mp::from("enc_algo"), Mp::from(ENC_ALGO)),
        (Mp::from("sig_algo"), Mp::from(SIG_ALGO)),
    ]));
    (env, nonce)
}

/// Connections to the request channel shared by all minions (see the module notes).
pub struct ReqPool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    slots: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
}

impl ReqPool {
    /// A pool of `size` connections to `host:port`, opened on first use.
    pub fn new(host: &str, port: u16, size: usize, connect_timeout: Duration) -> ReqPool {
        ReqPool {
            host: host.to_owned(),
            port,
            connect_timeout,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Sends one envelope and waits for the reply. A connection found dead is reopened and
    /// the request sent again only if nothing reached the master; a timed-out connection is
    /// dropped (it is out of lockstep).
    pub async fn send(&self, envelope: &[u8], timeout: Duration) -> Result<Mp, WireError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        // A free connection first; else wait for the one this request was dealt.
        let mut slot = None;
        for i in 0..n {
            if let Ok(guard) = self.slots[(start + i) % n].try_lock() {
                slot = Some(guard);
                break;
            }
        }
        let mut slot = match slot {
            Some(s) => s,
            None => self.slots[start % n].lock().await,
        };
        for attempt in 0..2 {
            if !slot.as_ref().is_some_and(Connection::is_alive) {
                *slot = Some(
                    Connection::open(
                        Transport::Zeromq,
                        &self.host,
                        self.port,
                        self.connect_timeout,
                    )
                    .await?,
                );
            }
            let Some(conn) = slot.as_ref() else {
                return Err(WireError::Unavailable("no connection".into()));
            };
            match tokio::time::timeout(timeout, conn.request(envelope)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(WireError::SendFailed(e))) if attempt == 0 => {
                    tracing::debug!(error = %e, "request connection closed; reopening");
                    *slot = None;
                }
                Ok(Err(e)) => {
                    *slot = None;
                    return Err(e);
                }
                Err(_) => {
                    *slot = None;
                    return Err(WireError::Timeout);
                }
            }
        }
        Err(WireError::Unavailable(
            "request connection keeps closing".into(),
        ))
    }
}

/// Looks up a string key in a msgpack map (salt-wire's, shared with the request channel).
pub use salt_wire::value::map_get as get;

/// The bytes of a msgpack `bin` or `str` value.
pub fn bytes(v: &Mp) -> Option<&[u8]> {
    match v {
        Mp::Binary(b) => Some(b),
        Mp::String(s) => Some(s.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_envelope_carries_what_the_master_checks() {
        let Ok(session) = Crypticle::from_key_string(Crypticle::generate_key_string().as_bytes())
        else {
            panic!("key")
        };
        let (env, nonce) = aes(
            "swarm-1",
            &session,
            b"tok",
            vec![(Mp::from("cmd"), Mp::from("_return"))],
        );
        let Ok(v) = salt_wire::framing::decode_value(&env) else {
            panic!("decode")
        };
        assert_eq!(get(&v, "enc").and_then(Mp::as_str), Some("aes"));
        assert_eq!(get(&v, "id").and_then(Mp::as_str), Some("swarm-1"));
        assert_eq!(get(&v, "version").and_then(Mp::as_u64), Some(3));
        let body = get(&v, "load").and_then(bytes).unwrap_or_default();
        let Ok(load) = session.loads(body, None) else {
            panic!("loads")
        };
        assert_eq!(get(&load, "cmd").and_then(Mp::as_str), Some("_return"));
        assert_eq!(
            get(&load, "nonce").and_then(Mp::as_str),
            Some(nonce.as_str())
        );
        assert_eq!(get(&load, "id").and_then(Mp::as_str), Some("swarm-1"));
        assert!(get(&load, "ts").and_then(Mp::as_u64).is_some());
        assert_eq!(nonce.len(), 32);
    }
}
