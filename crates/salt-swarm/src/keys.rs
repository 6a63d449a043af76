//! The swarm's key pair on disk, and `--accept`.
//!
//! One RSA key pair serves every simulated minion (the master stores a public key per id and
//! does not care that they are equal). It is generated at the first run and kept in the state
//! directory (`$TMPDIR/salt-swarm-<uid>` unless `--state-dir`) as `minion.pem` (PKCS#1, mode
//! 0600) and `minion.pub` (SubjectPublicKeyInfo), the files and formats a minion's `pki_dir`
//! holds.
//!
//! `--accept` does what `salt-key -a` does with the default `localfs_key` key cache: the
//! public key goes to `<pki_dir>/minions/<id>`, and a copy under `minions_pre`,
//! `minions_rejected` or `minions_denied` is removed.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::crypt::KeyPair;

/// The default state directory.
pub fn default_state_dir() -> PathBuf {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("salt-swarm-{uid}"))
}

/// Loads the key pair from `dir`, or generates and stores one.
pub fn load_or_create(dir: &Path) -> Result<KeyPair, String> {
    let pem_path = dir.join("minion.pem");
    match std::fs::read_to_string(&pem_path) {
        Ok(pem) => {
            return KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", pem_path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", pem_path.display())),
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "generating the swarm's RSA key pair (2048 bits)");
    let pair = KeyPair::generate().map_err(|e| format!("generating a key pair: {e}"))?;
    let private = pair.private_pem().map_err(|e| e.to_string())?;
    write_atomic(&pem_path, private.as_bytes(), 0o600)?;
    write_atomic(
        &dir.join("minion.pub"),
        format!("{}\n", pair.public_pem).as_bytes(),
        0o644,
    )?;
    Ok(pair)
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Accepts `ids` with public key `pub_pem` in the master's `pki_dir`.
pub fn accept(pki_dir: &Path, ids: &[String], pub_pem: &str) -> Result<(), String> {
    let accepted = pki_dir.join("minions");
    std::fs::create_dir_all(&accepted).map_err(|e| format!("{}: {e}", accepted.display()))?;
    let body = format!("{pub_pem}\n");
    for id in ids {
        for other in ["minions_pre", "minions_rejected", "minions_denied"] {
            let p = pki_dir.join(other).join(id);
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    tracing::info!(minion = %id, from = other, "removed a key before accepting")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", p.display())),
            }
        }
        write_atomic(&accepted.join(id), body.as_bytes(), 0o644)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_moves_keys_to_minions() {
        let dir = std::env::temp_dir().join(format!("salt-swarm-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(dir.join("minions_pre"));
        let _ = std::fs::write(dir.join("minions_pre").join("swarm-1"), "old");
        let ids = vec!["swarm-1".to_owned(), "swarm-2".to_owned()];
        assert_eq!(
            accept(
                &dir,
                &ids,
                "-----BEGIN PUBLIC KEY-----\nX\n-----END PUBLIC KEY-----"
            ),
            Ok(())
        );
        assert!(!dir.join("minions_pre").join("swarm-1").exists());
        let stored =
            std::fs::read_to_string(dir.join("minions").join("swarm-2")).unwrap_or_default();
        assert!(stored.starts_with("-----BEGIN PUBLIC KEY-----\nX\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
