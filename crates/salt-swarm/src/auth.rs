//! Sign-in (`_auth`) as `salt.crypt.AsyncAuth.sign_in` and `handle_signin_response` (3008)
//! do it, and the master's publish key that every simulated minion shares.
//!
//! The request: `{"cmd": "_auth", "id", "nonce", "enc_algo", "sig_algo", "token", "pub"}`,
//! `token` being this process's random token encrypted (OAEP) with the master's public key,
//! sent once that key is known (a minion's first sign-in has none, as a fresh minion has no
//! `minion_master.pub`). The reply, for an accepted key, is
//! `{"enc": "clear", "load": <msgpack bytes>, "sig": <PKCS1v15-SHA1 over them>}` whose load
//! holds `pub_key`, `publish_port`, `aes` and `session` (each OAEP-encrypted to the minion),
//! `token` (ours, re-encrypted to us), `sig` (X9.31 over the SHA-256 hex digest of the AES key
//! string) and our `nonce`. A pending, rejected or refused key comes back as a signed
//! `{"ret": true|false|"full", "nonce"}`.
//!
//! Checks done, as a minion does them: the master key is the one this process saw first (a
//! real minion pins it in `minion_master.pub`; the swarm pins it per process, so a new test
//! master with new keys is fine), the reply's signature, the nonce, the AES key's X9.31
//! signature, and the returned token. Cost control: the AES key is the same for every minion
//! and its X9.31 signature is deterministic, so when `sig` equals the one already verified
//! the key is not decrypted again; only the per-minion session key costs an RSA decryption.
//!
//! Key rotation: when a publish does not decrypt, [`Master::refresh_aes`] signs in again once
//! for the whole swarm (the first minion to notice does it; the others wait and reuse it).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmpv::Value as Mp;
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};

use crate::channel::{self, bytes, get, ReqPool, ENC_ALGO, SIG_ALGO};
use crate::crypt::{self, Crypticle, KeyPair};

/// Why a sign-in did not produce keys.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The master could not be reached or did not answer.
    #[error("{0}")]
    Wire(#[from] salt_wire::WireError),
    /// The master answered something a minion must not accept.
    #[error("{0}")]
    Refused(String),
}

/// Outcome of one `_auth`.
pub enum SignIn {
    /// The key is accepted: the minion's session key and the master's publish port.
    Accepted {
        /// Key of this minion's AES requests.
        session: Crypticle,
        /// `publish_port` from the reply.
        publish_port: u16,
    },
    /// The key waits in `minions_pre` (`salt-key -a` needed); retry later.
    Pending,
    /// The key is rejected or denied.
    Rejected,
    /// `max_minions` reached.
    Full,
}

/// The master's publish key as last learnt, with the X9.31 signature that vouched for it.
struct PublishKey {
    crypticle: Arc<Crypticle>,
    sig: Vec<u8>,
    generation: u64,
}

/// What every simulated minion shares about the master: the request pool, the swarm's key
/// pair, the pinned master key and the publish key.
pub struct Master {
    /// Request channel connections.
    pub pool: ReqPool,
    /// The swarm's RSA key pair.
    pub keys: KeyPair,
    /// Random token proving the master can decrypt what we encrypt to it.
    token: Vec<u8>,
    master_pub: RwLock<Option<(String, RsaPublicKey)>>,
    publish: RwLock<Option<PublishKey>>,
    refresh: tokio::sync::Mutex<()>,
    /// Per-request limit.
    pub timeout: Duration,
    /// The master's signing key (`master_sign.pub`), when the master signs its public key
    /// (`master_sign_pubkey`): then every reply must carry a `pub_sig` that verifies with it,
    /// as a minion with `verify_master_pubkey_sign` checks.
    pub sign_key: Option<RsaPublicKey>,
}

impl Master {
    /// Shared state for one master.
    pub fn new(
        pool: ReqPool,
        keys: KeyPair,
        timeout: Duration,
        sign_key: Option<RsaPublicKey>,
    ) -> Master {
        Master {
            pool,
            keys,
            token: Crypticle::generate_key_string().into_bytes(),
            master_pub: RwLock::new(None),
            publish: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            timeout,
            sign_key,
        }
    }

    /// The current publish key and its generation (bumped on every change).
    pub fn publish_key(&self) -> Option<(Arc<Crypticle>, u64)> {
        let guard = self.publish.read().ok()?;
        guard.as_ref().map(|p| (p.crypticle.clone(), p.generation))
    }

    /// Signs in again for the whole swarm after a publish failed to decrypt with key
    /// generation `seen`, unless another minion already did. Returns the minion's new
    /// session when it was this call that signed in.
    pub async fn refresh_aes(&self, id: &str, seen: u64) -> Result<Option<SignIn>, AuthError> {
        let _one = self.refresh.lock().await;
        if self.publish_key().is_some_and(|(_, g)| g != seen) {
            return Ok(None);
        }
        tracing::info!(
            minion = id,
            "publish did not decrypt: signing in again for a new key"
        );
        self.sign_in(id).await.map(Some)
    }

    /// One `_auth` for minion `id` (see the module notes).
    pub async fn sign_in(&self, id: &str) -> Result<SignIn, AuthError> {
        let nonce = channel::nonce();
        let known = self
            .master_pub
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(|(_, k)| k.clone()));
        let mut load = vec![
            (Mp::from("cmd"), Mp::from("_auth")),
            (Mp::from("id"), Mp::from(id)),
            (Mp::from("nonce"), Mp::from(nonce.as_str())),
            (Mp::from("enc_algo"), Mp::from(ENC_ALGO)),
            (Mp::from("sig_algo"), Mp::from(SIG_ALGO)),
        ];
        let sent_token = match &known {
            Some(k) => {
                let t = crypt::encrypt_oaep(k, &self.token)
                    .map_err(|e| AuthError::Refused(format!("encrypting the token: {e}")))?;
                load.push((Mp::from("token"), Mp::Binary(t)));
                true
            }
            None => false,
        };
        load.push((Mp::from("pub"), Mp::from(self.keys.public_pem.as_str())));
        let reply = self
            .pool
            .send(&channel::clear(Mp::Map(load)), self.timeout)
            .await?;
        self.handle_reply(&reply, &nonce, sent_token)
    }

    fn handle_reply(&self, reply: &Mp, nonce: &str, sent_token: bool) -> Result<SignIn, AuthError> {
        let refused = |m: &str| AuthError::Refused(m.to_owned());
        let load = get(reply, "load")
            .ok_or_else(|| AuthError::Refused(format!("sign-in answered {}", short(reply))))?;
        if let Some(ret) = get(load, "ret").and_then(Mp::as_str) {
            // Unsigned: "bad enc algo", "bad sig algo".
            return Err(AuthError::Refused(format!("sign-in refused: {ret}")));
        }
        let signed = bytes(load).ok_or_else(|| refused("sign-in reply without a signed load"))?;
        let signature = get(reply, "sig").and_then(bytes).unwrap_or_default();
        let inner = salt_wire::framing::decode_value(signed)
            .map_err(|e| AuthError::Refused(format!("sign-in load: {e}")))?;
        if get(&inner, "nonce").and_then(Mp::as_str) != Some(nonce) {
            return Err(refused("the sign-in reply's nonce did not validate"));
        }
        let master_key = match get(&inner, "pub_key").and_then(Mp::as_str) {
            Some(pem) => {
                self.check_pub_sig(&inner, pem)?;
                Some(self.pin_master_key(pem)?)
            }
            None => self
                .master_pub
                .read()
                .ok()
                .and_then(|g| g.as_ref().map(|(_, k)| k.clone())),
        };
        if let Some(key) = &master_key {
            if !crypt::verify_pkcs1v15_sha1(key, signed, signature) {
                return Err(refused("the sign-in reply's signature did not validate"));
            }
        }
        match get(&inner, "ret") {
            Some(Mp::Boolean(false)) => return Ok(SignIn::Rejected),
            Some(Mp::String(s)) if s.as_str() == Some("full") => return Ok(SignIn::Full),
            Some(_) => return Ok(SignIn::Pending),
            None => {}
        }
        let key = master_key.ok_or_else(|| refused("sign-in reply without the master's key"))?;
        let aes_sig = get(&inner, "sig").and_then(bytes).unwrap_or_default();
        let known_sig = self
            .publish
            .read()
            .ok()
            .and_then(|g| g.as_ref().map(|p| p.sig.clone()));
        if known_sig.as_deref() != Some(aes_sig) {
            self.learn_publish_key(&inner, &key, aes_sig, sent_token)?;
        }
        let session = get(&inner, "session")
            .and_then(bytes)
            .ok_or_else(|| refused("sign-in reply without a session key"))?;
        let session = self
            .keys
            .decrypt(session)
            .and_then(|k| Crypticle::from_key_string(&k))
            .map_err(|e| AuthError::Refused(format!("session key: {e}")))?;
        let publish_port = get(&inner, "publish_port")
            .and_then(Mp::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| refused("sign-in reply without a publish port"))?;
        Ok(SignIn::Accepted {
            session,
            publish_port,
        })
    }

    /// `check_auth_deps` and `verify_signing_master`: with the master's signing key, the
    /// reply's `pub_sig` (base64 PKCS1v15-SHA1 over `pub_key`) must verify; without it, a
    /// signed reply is refused, as a minion that does not verify refuses it.
    fn check_pub_sig(&self, inner: &Mp, pem: &str) -> Result<(), AuthError> {
        use base64::Engine;
        let sig = get(inner, "pub_sig").and_then(bytes);
        match (&self.sign_key, sig) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(AuthError::Refused(
                "the master signs its public key (master_sign_pubkey) but its master_sign.pub is not readable".into(),
            )),
            (Some(_), None) => Err(AuthError::Refused(
                "the master did not send its public-key signature".into(),
            )),
            (Some(key), Some(sig)) => {
                let clean: Vec<u8> = sig.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(clean)
                    .map_err(|e| AuthError::Refused(format!("pub_sig: {e}")))?;
                if crypt::verify_pkcs1v15_sha1(key, pem.as_bytes(), &raw) {
                    Ok(())
                } else {
                    Err(AuthError::Refused(
                        "the master's public-key signature did not verify".into(),
                    ))
                }
            }
        }
    }

    /// Pins the master's key on first sight; a different key later is refused, as a minion
    /// refuses a master whose key changed.
    fn pin_master_key(&self, pem: &str) -> Result<RsaPublicKey, AuthError> {
        let clean = crypt::clean_key(pem);
        if let Ok(guard) = self.master_pub.read() {
            if let Some((known, key)) = guard.as_ref() {
                if *known == clean {
                    return Ok(key.clone());
                }
                return Err(AuthError::Refused(
                    "the master's public key changed; refusing it (restart the swarm for a new master)"
                        .into(),
                ));
            }
        }
        let key = crypt::parse_public_pem(&clean)
            .map_err(|e| AuthError::Refused(format!("master public key: {e}")))?;
        if let Ok(mut guard) = self.master_pub.write() {
            if guard.is_none() {
                *guard = Some((clean, key.clone()));
            }
        }
        Ok(key)
    }

    /// Decrypts and checks a publish key not seen before (`decrypt_aes`, `extract_aes`).
    fn learn_publish_key(
        &self,
        inner: &Mp,
        master_key: &RsaPublicKey,
        aes_sig: &[u8],
        sent_token: bool,
    ) -> Result<(), AuthError> {
        let refused = |m: String| AuthError::Refused(m);
        let aes = get(inner, "aes")
            .and_then(bytes)
            .ok_or_else(|| refused("sign-in reply without the publish key".into()))?;
        let key_str = self
            .keys
            .decrypt(aes)
            .map_err(|e| refused(format!("publish key: {e}")))?;
        let digest = hex::encode(Sha256::digest(&key_str));
        let signed = crypt::x931_recover(master_key, aes_sig)
            .map_err(|e| refused(format!("publish key signature: {e}")))?;
        if signed != digest.as_bytes() {
            return Err(refused(
                "the publish key's signature did not validate".into(),
            ));
        }
        // auth_mode >= 2 folds the token into the key string: "<key>_|-<token>".
        let (key_part, token) = match find(&key_str, b"_|-") {
            Some(i) => (key_str[..i].to_vec(), Some(key_str[i + 3..].to_vec())),
            None => {
                let token = match get(inner, "token").and_then(bytes) {
                    Some(t) => Some(
                        self.keys
                            .decrypt(t)
                            .map_err(|e| refused(format!("token: {e}")))?,
                    ),
                    None => None,
                };
                (key_str, token)
            }
        };
        if sent_token && token.as_deref() != Some(self.token.as_slice()) {
            return Err(refused(
                "the master failed to decrypt the random minion token".into(),
            ));
        }
        let crypticle = Crypticle::from_key_string(&key_part)
            .map_err(|e| refused(format!("publish key: {e}")))?;
        if let Ok(mut guard) = self.publish.write() {
            if guard.as_ref().is_some_and(|p| p.sig == aes_sig) {
                // Another minion's sign-in learnt the same key meanwhile.
                return Ok(());
            }
            let generation = guard.as_ref().map_or(1, |p| p.generation + 1);
            *guard = Some(PublishKey {
                crypticle: Arc::new(crypticle),
                sig: aes_sig.to_vec(),
                generation,
            });
            tracing::info!(generation, "new publish key from the master");
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A short rendering of an unexpected reply, for logs.
pub fn short(v: &Mp) -> String {
    let s = format!("{v}");
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::{Pkcs1v15Sign, RsaPrivateKey};

    fn key(bits: usize) -> RsaPrivateKey {
        RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
            .unwrap_or_else(|e| panic!("keygen: {e}"))
    }

    fn master(minion_key: RsaPrivateKey) -> Master {
        let pool = ReqPool::new("127.0.0.1", 9, 1, Duration::from_secs(1));
        let keys = KeyPair::from_private(minion_key).unwrap_or_else(|e| panic!("{e}"));
        Master::new(pool, keys, Duration::from_secs(1), None)
    }

    /// A sign-in reply built the way `AuthFuncs._auth` and `_clear_signed` build it.
    fn reply(
        m: &Master,
        master_key: &RsaPrivateKey,
        aes: &str,
        nonce: &str,
        extra: Vec<(Mp, Mp)>,
    ) -> Mp {
        let minion_pub =
            crypt::parse_public_pem(&m.keys.public_pem).unwrap_or_else(|e| panic!("{e}"));
        let enc =
            |data: &[u8]| Mp::Binary(crypt::encrypt_oaep(&minion_pub, data).unwrap_or_default());
        let digest = hex::encode(Sha256::digest(aes.as_bytes()));
        let pem = master_key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default();
        let mut inner = vec![
            (Mp::from("enc"), Mp::from("pub")),
            (Mp::from("pub_key"), Mp::from(pem)),
            (Mp::from("publish_port"), Mp::from(4505)),
            (Mp::from("token"), enc(&m.token)),
            (Mp::from("aes"), enc(aes.as_bytes())),
            (
                Mp::from("session"),
                enc(Crypticle::generate_key_string().as_bytes()),
            ),
            (
                Mp::from("sig"),
                Mp::Binary(crypt::x931_sign(master_key, digest.as_bytes()).unwrap_or_default()),
            ),
            (Mp::from("nonce"), Mp::from(nonce)),
        ];
        for (k, v) in extra {
            match inner.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v,
                None => inner.push((k, v)),
            }
        }
        let mut load = Vec::new();
        let _ = rmpv::encode::write_value(&mut load, &Mp::Map(inner));
        use sha1::Digest as _;
        let sig = master_key
            .sign(
                Pkcs1v15Sign::new::<sha1::Sha1>(),
                &sha1::Sha1::digest(&load),
            )
            .unwrap_or_default();
        Mp::Map(vec![
            (Mp::from("enc"), Mp::from("clear")),
            (Mp::from("load"), Mp::Binary(load)),
            (Mp::from("sig"), Mp::Binary(sig)),
        ])
    }

    #[test]
    fn accepts_a_master_reply_and_learns_the_publish_key_once() {
        let master_key = key(1024);
        let m = master(key(1024));
        let aes = Crypticle::generate_key_string();
        let nonce = channel::nonce();
        let r = reply(&m, &master_key, &aes, &nonce, vec![]);
        assert!(matches!(
            m.handle_reply(&r, &nonce, true),
            Ok(SignIn::Accepted {
                publish_port: 4505,
                ..
            })
        ));
        let Some((crypticle, generation)) = m.publish_key() else {
            panic!("no publish key")
        };
        assert_eq!(generation, 1);
        let Ok(expected) = Crypticle::from_key_string(aes.as_bytes()) else {
            panic!("key")
        };
        let probe = expected.dumps(&Mp::from("x"), None);
        assert_eq!(crypticle.loads(&probe, None).ok(), Some(Mp::from("x")));
        // The same key again: nothing new learnt.
        let nonce2 = channel::nonce();
        let r2 = reply(&m, &master_key, &aes, &nonce2, vec![]);
        assert!(m.handle_reply(&r2, &nonce2, true).is_ok());
        assert_eq!(m.publish_key().map(|(_, g)| g), Some(1));
    }

    #[test]
    fn refuses_bad_nonce_signature_key_and_token() {
        let master_key = key(1024);
        let m = master(key(1024));
        let aes = Crypticle::generate_key_string();
        let nonce = channel::nonce();
        let good = reply(&m, &master_key, &aes, &nonce, vec![]);
        assert!(
            m.handle_reply(&good, &channel::nonce(), true).is_err(),
            "nonce"
        );
        // A flipped byte in the signed load: the signature fails.
        let mut tampered = good.clone();
        if let Mp::Map(fields) = &mut tampered {
            if let Some((_, Mp::Binary(load))) =
                fields.iter_mut().find(|(k, _)| k.as_str() == Some("load"))
            {
                let last = load.len() - 1;
                load[last] ^= 1;
            }
        }
        assert!(
            m.handle_reply(&tampered, &nonce, true).is_err(),
            "signature"
        );
        // A master whose token answer is wrong.
        let wrong_token = reply(
            &m,
            &master_key,
            &aes,
            &nonce,
            vec![(
                Mp::from("token"),
                Mp::Binary(
                    crypt::encrypt_oaep(
                        &crypt::parse_public_pem(&m.keys.public_pem)
                            .unwrap_or_else(|e| panic!("{e}")),
                        b"not the token",
                    )
                    .unwrap_or_default(),
                ),
            )],
        );
        assert!(m.handle_reply(&wrong_token, &nonce, true).is_err(), "token");
        // Pinned: another master key is refused.
        assert!(m.handle_reply(&good, &nonce, true).is_ok());
        let other = key(1024);
        let n = channel::nonce();
        assert!(
            m.handle_reply(&reply(&m, &other, &aes, &n, vec![]), &n, true)
                .is_err(),
            "pinned key"
        );
    }
}
