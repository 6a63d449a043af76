//! The master's job cache as `local_cache` (the default `master_job_cache`) writes it, read
//! directly and only for the job index: one directory per job,
//! `<cachedir>/jobs/<h[..2]>/<h[2..]>/`, where `h` is the hex `hash_type` digest of the jid;
//! `.load.p` in it is the publish load (msgpack), which is all `jobs.list_jobs` reads of a job.
//! Returns are never read here. Blocking file I/O: callers run it on a blocking thread.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::Digest;

/// A `.load.p` larger than this is not read. A publish's load is kilobytes; a runner's holds
/// its whole return (`jobs.list_jobs` of a large cache: tens of megabytes).
const MAX_LOAD_BYTES: u64 = 256 << 20;

/// The digest `local_cache` names job directories with.
#[derive(Clone, Copy, Debug)]
enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The master's job cache directory.
#[derive(Clone, Debug)]
pub struct JobCache {
    dir: PathBuf,
    hash: Hash,
}

impl JobCache {
    /// The cache under `cachedir`, whose directories are named with `hash_type`; `Err` says why
    /// Brine cannot find a job's directory by its jid (a `hash_type` it does not compute).
    pub fn new(cachedir: &Path, hash_type: &str) -> Result<JobCache, String> {
        let hash = match hash_type {
            "sha224" => Hash::Sha224,
            "sha256" => Hash::Sha256,
            "sha384" => Hash::Sha384,
            "sha512" => Hash::Sha512,
            other => return Err(format!("hash_type {other} is not one Brine computes")),
        };
        Ok(JobCache {
            dir: cachedir.join("jobs"),
            hash,
        })
    }

    /// The directory of the jobs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of one job (`salt.utils.jid.jid_dir`).
    pub fn job_dir(&self, jid: &str) -> PathBuf {
        let h = match self.hash {
            Hash::Sha224 => hex::encode(sha2::Sha224::digest(jid.as_bytes())),
            Hash::Sha256 => hex::encode(sha2::Sha256::digest(jid.as_bytes())),
            Hash::Sha384 => hex::encode(sha2::Sha384::digest(jid.as_bytes())),
            Hash::Sha512 => hex::encode(sha2::Sha512::digest(jid.as_bytes())),
        };
        self.dir.join(&h[..2]).join(&h[2..])
    }

    /// Whether the job is still in the cache (the master's `clean_old_jobs` removes jobs older
    /// than `keep_jobs`).
    pub fn exists(&self, jid: &str) -> bool {
        self.job_dir(jid).join(".load.p").is_file()
    }

    /// The load of one job, if the cache has it.
    pub fn load(&self, jid: &str) -> Option<Value> {
        read_load(&self.job_dir(jid).join(".load.p"))
    }

    /// Every job in the cache, as `local_cache`'s `get_jids` walks it: `each(jid, load)` for
    /// every readable `.load.p` with a `jid`. The number of jobs seen, or the error that kept
    /// the directory from being read at all.
    pub fn scan(&self, mut each: impl FnMut(String, Value)) -> std::io::Result<usize> {
        let mut seen = 0;
        for top in std::fs::read_dir(&self.dir)? {
            let Ok(top) = top else { continue };
            let Ok(finals) = std::fs::read_dir(top.path()) else {
                continue;
            };
            for job in finals.flatten() {
                let Some(load) = read_load(&job.path().join(".load.p")) else {
                    continue;
                };
                let Some(jid) = load.get("jid").and_then(jid_text) else {
                    continue;
                };
                seen += 1;
                each(jid, load);
            }
        }
        Ok(seen)
    }
}

/// A jid as the load holds it (a string; a number in loads some returners wrote).
fn jid_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One `.load.p`, decoded as Salt decodes it; `None` when missing, too large, unreadable or
/// empty (Salt skips those too).
fn read_load(path: &Path) -> Option<Value> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_LOAD_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let mp = salt_wire::framing::decode_value(&bytes).ok()?;
    let load = salt_wire::value::mp_to_json(&mp);
    match &load {
        Value::Object(m) if !m.is_empty() => Some(load),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writes a job as `local_cache` does (the load only).
    fn write_job(cache: &JobCache, load: &Value) {
        let jid = load["jid"].as_str().unwrap_or_default();
        let dir = cache.job_dir(jid);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("jid"), jid).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join(".load.p"), salt_wire::value::encode_json(load))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn directories_are_named_as_salt_names_them() {
        let cache = JobCache::new(Path::new("/c"), "sha256").unwrap_or_else(|e| panic!("{e}"));
        // hashlib.sha256(b"20261207033206123456").hexdigest()
        let dir = cache.job_dir("20261207033206123456");
        let h = hex::encode(sha2::Sha256::digest(b"20261207033206123456"));
        assert_eq!(dir, Path::new("/c/jobs").join(&h[..2]).join(&h[2..]),);
        assert!(JobCache::new(Path::new("/c"), "md5").is_err());
    }

    #[test]
    fn scan_reads_every_load_and_skips_the_broken() {
        let root = std::env::temp_dir().join(format!("brine-jobcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cache = JobCache::new(&root, "sha256").unwrap_or_else(|e| panic!("{e}"));
        for n in 0..5 {
            write_job(
                &cache,
                &json!({"jid": format!("2026120703320612345{n}"), "fun": "test.ping", "tgt": "*"}),
            );
        }
        // A broken load and a directory without one are skipped.
        let bad = cache.job_dir("20261207033206999999");
        std::fs::create_dir_all(&bad).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(bad.join(".load.p"), b"\xc1").unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(cache.job_dir("20261207033206888888"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut jids = Vec::new();
        let seen = cache
            .scan(|jid, load| {
                assert_eq!(load["fun"], "test.ping");
                jids.push(jid);
            })
            .unwrap_or_else(|e| panic!("{e}"));
        jids.sort();
        assert_eq!(seen, 5);
        assert_eq!(
            jids.first().map(String::as_str),
            Some("20261207033206123450")
        );
        assert!(cache.exists("20261207033206123453"));
        assert!(!cache.exists("20261207033206888888"));
        assert_eq!(
            cache.load("20261207033206123451").map(|l| l["tgt"].clone()),
            Some(json!("*"))
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
