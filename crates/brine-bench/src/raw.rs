//! The master itself, through `salt-wire` (the "raw ceiling"): clear commands on its request
//! channel, with no HTTP in between. Used by `load` for the raw target and by `sse --job-returns`
//! to start the job whose returns the streams carry.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use salt_wire::config::MasterOptions;
use salt_wire::envelope::classify;
use salt_wire::pool::MasterPool;
use serde_json::{json, Map, Value};

/// A pool of request-channel connections to the master.
pub struct RawMaster {
    pool: MasterPool,
    /// The `user` of publishes (as the `salt` CLI sends it).
    user: String,
}

/// A short rendering of a value, for error texts.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(600).collect()
}

/// Jids for the raw publishes, in Salt's format, never repeated within a run.
pub fn gen_jid() -> String {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = chrono::Local::now().timestamp_micros();
    let micros = match LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
        Some(now.max(last + 1))
    }) {
        Ok(last) | Err(last) => now.max(last + 1),
    };
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000);
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => format!(
            "{}{sub:06}",
            t.with_timezone(&chrono::Local).format("%Y%m%d%H%M%S")
        ),
        None => format!("{micros:020}"),
    }
}

impl RawMaster {
    /// `size` connections (one per concurrent caller: nothing queues in front of the master).
    pub fn new(opts: &MasterOptions, size: usize) -> RawMaster {
        let size = size.max(1);
        RawMaster {
            pool: MasterPool::new(opts.pool(size, size * 4, Duration::from_secs(10))),
            user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
        }
    }

    /// Sends a clear command and classifies the reply.
    pub async fn request(
        &self,
        load: &Map<String, Value>,
        timeout: Duration,
    ) -> Result<Value, String> {
        let reply = self
            .pool
            .request(load, timeout, false)
            .await
            .map_err(|e| format!("master: {e}"))?;
        classify(reply).map_err(|e| format!("master: {e}"))
    }

    /// `publish` of `fun` (no arguments) with the given jid; the minions the master matched.
    pub async fn publish(
        &self,
        token: &str,
        jid: &str,
        tgt: &str,
        tgt_type: &str,
        fun: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let mut load = Map::new();
        load.insert("cmd".into(), "publish".into());
        load.insert("tgt".into(), tgt.into());
        load.insert("fun".into(), fun.into());
        load.insert("arg".into(), json!([]));
        load.insert("tgt_type".into(), tgt_type.into());
        load.insert("ret".into(), "".into());
        load.insert("jid".into(), jid.into());
        load.insert("user".into(), self.user.clone().into());
        load.insert("kwargs".into(), json!({"token": token}));
        let reply = self.request(&load, timeout).await?;
        match reply
            .get("load")
            .and_then(|l| l.get("minions"))
            .and_then(Value::as_array)
        {
            Some(m) => Ok(m
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()),
            None => Err(format!("publish: {}", short(&reply))),
        }
    }
}
