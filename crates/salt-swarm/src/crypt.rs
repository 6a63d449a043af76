//! Salt's cryptography, minion side, as `salt/crypt.py` (3008) does it:
//!
//! * [`Crypticle`]: AES-192-CBC with a random IV, PKCS#7 padding, then HMAC-SHA256 over
//!   `iv + ciphertext` appended. The key string is base64 of 24 AES bytes + 32 HMAC bytes
//!   (`Crypticle.generate_key_string`). Serialized payloads are `b"pickle::" [+ nonce] +
//!   msgpack` (`Crypticle.dumps`/`loads`); a reply to a request carries the request's
//!   32-character nonce right after the pad.
//! * RSA with the algorithms a 3008 minion announces (`encryption_algorithm: OAEP-SHA1`,
//!   `signing_algorithm: PKCS1v15-SHA1`): OAEP-SHA1 for the token and the keys the master
//!   sends, PKCS#1 v1.5 SHA-1 for the master's signature over its sign-in reply.
//! * ANSI X9.31 "signatures" made with OpenSSL's `RSA_private_encrypt(..., RSA_X931_PADDING)`
//!   (`salt/utils/rsax931.py`): the request token `tok` (X9.31 of `b"salt"` with the minion's
//!   private key) and the master's `sig` over the SHA-256 hex digest of the AES key. No crate
//!   implements X9.31 message recovery, so the padding is written here on top of the `rsa`
//!   crate's raw primitive (`hazmat`).

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use hmac::{Hmac, Mac};
use rmpv::Value as Mp;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

type Aes192CbcEnc = cbc::Encryptor<aes::Aes192>;
type Aes192CbcDec = cbc::Decryptor<aes::Aes192>;
type HmacSha256 = Hmac<Sha256>;

/// `Crypticle.PICKLE_PAD`.
const PICKLE_PAD: &[u8] = b"pickle::";
/// AES key bytes (192 bits) and HMAC key bytes in a key string.
const AES_LEN: usize = 24;
const HMAC_LEN: usize = 32;
/// A nonce is `uuid4().hex`: 32 characters.
pub const NONCE_LEN: usize = 32;

/// Crypto failures. `Authentication` is what Salt calls `AuthenticationError`: the HMAC did
/// not match, i.e. the data was encrypted with another key (the master rotated it).
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The HMAC over the message did not verify.
    #[error("message authentication failed")]
    Authentication,
    /// Anything else malformed: a bad key string, padding, nonce or RSA block.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(e: impl std::fmt::Display) -> CryptError {
    CryptError::Invalid(e.to_string())
}

/// Salt's symmetric cipher (see the module notes).
#[derive(Clone)]
pub struct Crypticle {
    aes: [u8; AES_LEN],
    hmac: [u8; HMAC_LEN],
}

impl std::fmt::Debug for Crypticle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypticle(..)")
    }
}

impl Crypticle {
    /// From a key string (base64 of 56 bytes), as the master sends it.
    pub fn from_key_string(key: &[u8]) -> Result<Crypticle, CryptError> {
        let trimmed: Vec<u8> = key
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(trimmed)
            .map_err(|e| invalid(format!("key string is not base64: {e}")))?;
        if raw.len() != AES_LEN + HMAC_LEN {
            return Err(invalid(format!(
                "key string holds {} bytes, {} expected",
                raw.len(),
                AES_LEN + HMAC_LEN
            )));
        }
        let mut aes = [0u8; AES_LEN];
        let mut hmac = [0u8; HMAC_LEN];
        aes.copy_from_slice(&raw[..AES_LEN]);
        hmac.copy_from_slice(&raw[AES_LEN..]);
        Ok(Crypticle { aes, hmac })
    }

    /// A fresh random key string (`Crypticle.generate_key_string`).
    pub fn generate_key_string() -> String {
        let mut raw = [0u8; AES_LEN + HMAC_LEN];
        rand::fill(&mut raw[..]);
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    /// `Crypticle.encrypt`: `iv + AES-CBC(data) + HMAC`.
    pub fn encrypt(&self, data: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; 16];
        rand::fill(&mut iv[..]);
        self.encrypt_with_iv(data, &iv)
    }

    fn encrypt_with_iv(&self, data: &[u8], iv: &[u8; 16]) -> Vec<u8> {
        let enc = Aes192CbcEnc::new(&self.aes.into(), iv.into());
        let ct = enc.encrypt_padded_vec_mut::<Pkcs7>(data);
        let mut out = Vec::with_capacity(16 + ct.len() + HMAC_LEN);
        out.extend_from_slice(iv);
        out.extend_from_slice(&ct);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.hmac)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// `Crypticle.decrypt`: checks the HMAC, then decrypts.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, CryptError> {
        if data.len() < 16 + HMAC_LEN {
            return Err(CryptError::Authentication);
        }
        let (body, sig) = data.split_at(data.len() - HMAC_LEN);
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.hmac)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(body);
        mac.verify_slice(sig)
            .map_err(|_| CryptError::Authentication)?;
        let (iv, ct) = body.split_at(16);
        let mut ivb = [0u8; 16];
        ivb.copy_from_slice(iv);
        Aes192CbcDec::new(&self.aes.into(), &ivb.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(|_| invalid("bad padding in an authenticated message"))
    }

    /// `Crypticle.dumps`: `pickle::` [+ nonce] + msgpack, encrypted.
    pub fn dumps(&self, value: &Mp, nonce: Option<&str>) -> Vec<u8> {
        let mut plain = Vec::with_capacity(256);
        plain.extend_from_slice(PICKLE_PAD);
        if let Some(n) = nonce {
            plain.extend_from_slice(n.as_bytes());
        }
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut plain, value);
        self.encrypt(&plain)
    }

    /// `Crypticle.loads`: decrypts, checks the pad and (for replies) the nonce, decodes.
    /// Salt answers `{}` for a payload without the pad; so do we.
    pub fn loads(&self, data: &[u8], nonce: Option<&str>) -> Result<Mp, CryptError> {
        let plain = self.decrypt(data)?;
        let Some(rest) = plain.strip_prefix(PICKLE_PAD) else {
            return Ok(Mp::Map(Vec::new()));
        };
        let rest = match nonce {
            Some(n) => {
                if rest.len() < NONCE_LEN || &rest[..NONCE_LEN] != n.as_bytes() {
                    return Err(invalid("nonce verification error"));
                }
                &rest[NONCE_LEN..]
            }
            None => rest,
        };
        salt_wire::framing::decode_value(rest).map_err(invalid)
    }
}

/// The swarm's RSA key pair (one for every simulated minion) and what is derived from it once.
pub struct KeyPair {
    private: RsaPrivateKey,
    /// `minion.pub` as Salt writes it (SubjectPublicKeyInfo PEM), `clean_key`'d.
    pub public_pem: String,
    /// `gen_token(b"salt")`: the X9.31 token every AES request carries as `tok`.
    pub tok: Vec<u8>,
}

impl KeyPair {
    /// Generates a 2048-bit key pair (Salt's default `keysize`).
    pub fn generate() -> Result<KeyPair, CryptError> {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(invalid)?;
        KeyPair::from_private(private)
    }

    /// From a PEM private key (PKCS#1 `RSA PRIVATE KEY`, as Salt writes `minion.pem`).
    pub fn from_pem(pem: &str) -> Result<KeyPair, CryptError> {
        let private = RsaPrivateKey::from_pkcs1_pem(pem).map_err(invalid)?;
        KeyPair::from_private(private)
    }

    pub(crate) fn from_private(private: RsaPrivateKey) -> Result<KeyPair, CryptError> {
        let public_pem = clean_key(
            &private
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(invalid)?,
        );
        let tok = x931_sign(&private, b"salt")?;
        Ok(KeyPair {
            private,
            public_pem,
            tok,
        })
    }

    /// The private key as PKCS#1 PEM.
    pub fn private_pem(&self) -> Result<String, CryptError> {
        Ok(self
            .private
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(invalid)?
            .to_string())
    }

    /// OAEP-SHA1 decryption with the private key (`PrivateKey.decrypt`).
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, CryptError> {
        self.private
            .decrypt(Oaep::new::<sha1::Sha1>(), data)
            .map_err(invalid)
    }
}

/// `salt.crypt.clean_key`: unix line ends, no surrounding whitespace.
pub fn clean_key(key: &str) -> String {
    key.trim().lines().collect::<Vec<_>>().join("\n")
}

/// Reads a master public key (SubjectPublicKeyInfo PEM, or PKCS#1 `RSA PUBLIC KEY`).
pub fn parse_public_pem(pem: &str) -> Result<RsaPublicKey, CryptError> {
    RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
        .map_err(invalid)
}

/// OAEP-SHA1 encryption with a public key (`PublicKey.encrypt`).
pub fn encrypt_oaep(key: &RsaPublicKey, data: &[u8]) -> Result<Vec<u8>, CryptError> {
    key.encrypt(&mut rsa::rand_core::OsRng, Oaep::new::<sha1::Sha1>(), data)
        .map_err(invalid)
}

/// PKCS#1 v1.5 SHA-1 signature check (`PublicKey.verify`).
pub fn verify_pkcs1v15_sha1(key: &RsaPublicKey, data: &[u8], sig: &[u8]) -> bool {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(data);
    key.verify(Pkcs1v15Sign::new::<sha1::Sha1>(), &digest, sig)
        .is_ok()
}

/// X9.31 padding of `msg` into `k` bytes (OpenSSL's `RSA_padding_add_X931`).
fn x931_pad(msg: &[u8], k: usize) -> Result<Vec<u8>, CryptError> {
    if msg.len() + 2 > k {
        return Err(invalid("message too long for X9.31 padding"));
    }
    let j = k - msg.len() - 2;
    let mut out = Vec::with_capacity(k);
    if j == 0 {
        out.push(0x6A);
    } else {
        out.push(0x6B);
        out.extend(std::iter::repeat_n(0xBB, j - 1));
        out.push(0xBA);
    }
    out.extend_from_slice(msg);
    out.push(0xCC);
    Ok(out)
}

/// `RSA_private_encrypt` with X9.31 padding: `min(s, n - s)` where `s = pad(msg)^d mod n`.
pub fn x931_sign(key: &RsaPrivateKey, msg: &[u8]) -> Result<Vec<u8>, CryptError> {
    let k = key.size();
    let m = BigUint::from_bytes_be(&x931_pad(msg, k)?);
    let s = rsa::hazmat::rsa_decrypt_and_check(key, Some(&mut rsa::rand_core::OsRng), &m)
        .map_err(invalid)?;
    let alt = key.n() - &s;
    let s = if alt < s { alt } else { s };
    Ok(left_pad(&s.to_bytes_be(), k))
}

/// `RSA_public_decrypt` with X9.31 padding: recovers the signed message.
pub fn x931_recover(key: &RsaPublicKey, sig: &[u8]) -> Result<Vec<u8>, CryptError> {
    let k = key.size();
    let s = BigUint::from_bytes_be(sig);
    if &s >= key.n() {
        return Err(invalid("X9.31 signature out of range"));
    }
    let mut m = rsa::hazmat::rsa_encrypt(key, &s).map_err(invalid)?;
    let low = m.to_bytes_le().first().copied().unwrap_or(0);
    if low & 0x0F != 12 {
        m = key.n() - &m;
    }
    let p = left_pad(&m.to_bytes_be(), k);
    let bad = || invalid("bad X9.31 padding");
    let body = match p.first() {
        Some(0x6A) => &p[1..],
        Some(0x6B) => {
            let end = p[1..].iter().position(|b| *b != 0xBB).ok_or_else(bad)? + 1;
            if p.get(end) != Some(&0xBA) {
                return Err(bad());
            }
            &p[end + 1..]
        }
        _ => return Err(bad()),
    };
    match body.split_last() {
        Some((0xCC, msg)) => Ok(msg.to_vec()),
        _ => Err(bad()),
    }
}

fn left_pad(bytes: &[u8], k: usize) -> Vec<u8> {
    let mut out = vec![0u8; k.saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key string and a ciphertext of `pickle::` + msgpack `{"fun": "test.ping", "arg": []}`
    /// produced by Salt 3008.4's own `salt.crypt.Crypticle(...).dumps(...)` (see
    /// `testdata/crypticle.py`).
    const SALT_KEY: &str = include_str!("../testdata/crypticle-key.txt");
    const SALT_CIPHERTEXT_B64: &str = include_str!("../testdata/crypticle-dumps.b64");

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .unwrap_or_default()
    }

    #[test]
    fn decrypts_what_salt_encrypted() {
        let c = Crypticle::from_key_string(SALT_KEY.trim().as_bytes());
        let Ok(c) = c else { panic!("key string") };
        let value = c.loads(&b64(SALT_CIPHERTEXT_B64), None);
        let expected = Mp::Map(vec![
            (Mp::from("fun"), Mp::from("test.ping")),
            (Mp::from("arg"), Mp::Array(vec![])),
        ]);
        assert_eq!(value.ok(), Some(expected));
    }

    #[test]
    fn round_trip_with_and_without_nonce() {
        let key = Crypticle::generate_key_string();
        let Ok(c) = Crypticle::from_key_string(key.as_bytes()) else {
            panic!("key")
        };
        let v = Mp::Map(vec![(Mp::from("a"), Mp::Binary(vec![0, 1, 2]))]);
        let nonce = "0123456789abcdef0123456789abcdef";
        assert_eq!(c.loads(&c.dumps(&v, None), None).ok(), Some(v.clone()));
        assert_eq!(
            c.loads(&c.dumps(&v, Some(nonce)), Some(nonce)).ok(),
            Some(v.clone())
        );
        let other = "ffffffffffffffffffffffffffffffff";
        assert!(c.loads(&c.dumps(&v, Some(nonce)), Some(other)).is_err());
        // Another key: an authentication error, which is what triggers a new sign-in.
        let Ok(c2) = Crypticle::from_key_string(Crypticle::generate_key_string().as_bytes()) else {
            panic!("key")
        };
        assert!(matches!(
            c2.loads(&c.dumps(&v, None), None),
            Err(CryptError::Authentication)
        ));
        // Block-aligned plaintext gets a whole block of padding, as Salt pads.
        let ct = c.encrypt(&[7u8; 32]);
        assert_eq!(ct.len(), 16 + 48 + 32);
        assert_eq!(c.decrypt(&ct).ok(), Some(vec![7u8; 32]));
    }

    #[test]
    fn bad_key_strings_are_refused() {
        assert!(Crypticle::from_key_string(b"not base64!").is_err());
        assert!(Crypticle::from_key_string(b"AAAA").is_err());
    }

    #[test]
    fn x931_round_trip_and_padding() {
        let Ok(key) = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024) else {
            panic!("keygen")
        };
        let public = key.to_public_key();
        let Ok(sig) = x931_sign(&key, b"salt") else {
            panic!("sign")
        };
        assert_eq!(sig.len(), 128);
        assert_eq!(x931_recover(&public, &sig).ok(), Some(b"salt".to_vec()));
        let mut bad = sig.clone();
        bad[5] ^= 1;
        assert!(x931_recover(&public, &bad).is_err());
        assert_eq!(
            x931_pad(b"ab", 5).ok(),
            Some(vec![0x6B, 0xBA, b'a', b'b', 0xCC])
        );
        assert_eq!(
            x931_pad(b"abc", 5).ok(),
            Some(vec![0x6A, b'a', b'b', b'c', 0xCC])
        );
    }

    /// Salt's `RSAX931Signer` (OpenSSL) made this token of `b"salt"`; X9.31 is
    /// deterministic, so ours must be the same bytes, and it must recover to `salt`.
    #[test]
    fn x931_matches_openssl_through_salt() {
        let pem = include_str!("../testdata/x931-key.pem");
        let salt_token = b64(include_str!("../testdata/x931-salt-token.b64"));
        let Ok(pair) = KeyPair::from_pem(pem) else {
            panic!("pem")
        };
        assert_eq!(pair.tok, salt_token);
        let public = pair.private.to_public_key();
        assert_eq!(
            x931_recover(&public, &salt_token).ok(),
            Some(b"salt".to_vec())
        );
    }

    #[test]
    fn oaep_and_pkcs1_with_a_fresh_key() {
        let Ok(key) = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024) else {
            panic!("keygen")
        };
        let Ok(pair) = KeyPair::from_private(key) else {
            panic!("pair")
        };
        let Ok(public) = parse_public_pem(&pair.public_pem) else {
            panic!("pem")
        };
        let Ok(ct) = encrypt_oaep(&public, b"secret") else {
            panic!("encrypt")
        };
        assert_eq!(pair.decrypt(&ct).ok(), Some(b"secret".to_vec()));
        assert!(pair.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(
            x931_recover(&public, &pair.tok).ok(),
            Some(b"salt".to_vec())
        );
    }
}
