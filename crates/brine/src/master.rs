//! The master as Brine uses it: the clear commands salt-api needs, over the bounded request
//! pool, with their replies mapped onto API errors.
//!
//! * `mk_token` / `get_token`: authentication (idempotent, so retried once after a transport
//!   failure).
//! * `publish`, `runner`, `wheel`: commands, always with the caller's token or eauth
//!   credentials so the master enforces its ACLs. Never retried after a request may have
//!   reached the master: a retried publish would start the job twice.
//! * Firing events into the bus (`/hook`, token revocations) over one kept-open connection.
//!
//! Error mapping: an unreachable or silent master is 503 `Salt Master is not
//! available.`, a full queue 503 (busy), the master's `AuthenticationError` family 401 with the
//! master's message, anything else it refuses a 500.

use std::sync::Arc;
use std::time::Duration;

use salt_wire::config::MasterOptions;
use salt_wire::envelope::{classify, MasterError};
use salt_wire::event::Firer;
use salt_wire::framing::Framing;
use salt_wire::pool::MasterPool;
use salt_wire::WireError;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::error::ApiError;
use crate::stats::{CmdLabels, Stats};

/// Message of every "master not reachable" answer, as salt-api words it.
pub const MASTER_DOWN: &str = "Salt Master is not available.";

/// Handle to the master (shared by all requests).
pub struct Master {
    pool: MasterPool,
    opts: Arc<MasterOptions>,
    firer: Mutex<Option<Firer>>,
    stats: Arc<Stats>,
    /// The OS user Brine runs as: the `user` field of publish loads (the master overwrites it
    /// with the authenticated name, but requires it and checks `publisher_acl_blacklist`).
    os_user: String,
}

/// Maps a transport failure onto the API error the client sees, logging the cause.
pub fn wire_error(err: WireError) -> ApiError {
    match err {
        WireError::Busy => {
            tracing::warn!("master request queue is full; answering 503");
            ApiError::Busy
        }
        WireError::Protocol(m) => {
            tracing::error!(error = %m, "master sent an undecodable reply");
            ApiError::Internal
        }
        other => {
            tracing::warn!(error = %other, "master unreachable");
            ApiError::MasterUnavailable(MASTER_DOWN.into())
        }
    }
}

/// Maps an error the master reported onto the API error (401 for its auth family).
pub fn master_error(err: MasterError) -> ApiError {
    if err.is_auth() {
        if let MasterError::Named { message, .. } = &err {
            return ApiError::Unauthorized(message.clone());
        }
    }
    tracing::warn!(error = %err, "master refused a command");
    match err {
        MasterError::Named { name, message } if name == "SaltInvocationError" => {
            ApiError::BadRequest(message)
        }
        _ => ApiError::Internal,
    }
}

impl Master {
    /// A handle over `pool` for the master described by `opts`.
    pub fn new(pool: MasterPool, opts: Arc<MasterOptions>, stats: Arc<Stats>) -> Master {
        let os_user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| opts.user.clone())
            .unwrap_or_else(|| "root".into());
        Master {
            pool,
            opts,
            firer: Mutex::new(None),
            os_user,
            stats,
        }
    }

    /// Sends a clear command and returns the raw reply.
    pub async fn call(
        &self,
        load: &Map<String, Value>,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<Value, ApiError> {
        let started = std::time::Instant::now();
        let reply = self.pool.request(load, timeout, idempotent).await;
        let cmd = load
            .get("cmd")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        self.stats
            .master_latency
            .get_or_create(&CmdLabels { cmd })
            .observe(started.elapsed().as_secs_f64());
        reply.map_err(wire_error)
    }

    /// Requests to the master in flight.
    pub fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }

    /// Requests waiting for a master connection.
    pub fn queued(&self) -> usize {
        self.pool.queued()
    }

    /// `mk_token` with the caller's credentials (`eauth`, `username`, `password`, and any
    /// extra field the eauth backend reads). `None` when the master refuses them.
    pub async fn mk_token(&self, creds: &Map<String, Value>) -> Result<Option<Value>, ApiError> {
        let mut load = creds.clone();
        load.insert("cmd".into(), "mk_token".into());
        let reply = self.call(&load, self.opts.publish_timeout, true).await?;
        match reply {
            Value::Object(m) if m.contains_key("token") => Ok(Some(Value::Object(m))),
            _ => Ok(None),
        }
    }

    /// `get_token`: the token's data, or `None` when the master does not know it (or it
    /// expired).
    pub async fn get_token(&self, token: &str) -> Result<Option<Value>, ApiError> {
        let mut load = Map::new();
        load.insert("cmd".into(), "get_token".into());
        load.insert("token".into(), token.into());
        let reply = self.call(&load, self.opts.publish_timeout, true).await?;
        match reply {
            Value::Object(m) if m.get("token").and_then(Value::as_str) == Some(token) => {
                Ok(Some(Value::Object(m)))
            }
            _ => Ok(None),
        }
    }

    /// `publish`. `load` holds `tgt`, `fun`, `arg`, `tgt_type`, `ret`, `jid` and the auth in
    /// `kwargs`; `cmd` and `user` are added here. Returns the reply's `load` map
    /// (`jid`, `minions`, `missing`, or `error` for a target that matched nothing).
    pub async fn publish(&self, mut load: Map<String, Value>) -> Result<Value, ApiError> {
        load.insert("cmd".into(), "publish".into());
        load.insert("user".into(), self.os_user.clone().into());
        let reply = self.call(&load, self.opts.publish_timeout, false).await?;
        let reply = match reply {
            // `""` means the credentials were refused before any load was built.
            Value::String(s) if s.is_empty() => {
                return Err(ApiError::Unauthorized(
                    "Failed to authenticate! This is most likely because this user is not \
                     permitted to execute commands, but there is a small possibility that a \
                     disk error occurred (check disk/inode usage)."
                        .into(),
                ))
            }
            other => classify(other).map_err(master_error)?,
        };
        match reply {
            Value::Object(mut m) => match m.remove("load") {
                Some(Value::Object(l)) => Ok(Value::Object(l)),
                _ => {
                    tracing::error!("publish reply without a load");
                    Err(ApiError::Internal)
                }
            },
            _ => Err(ApiError::Internal),
        }
    }

    /// `runner`: returns the master's `{tag, jid}`.
    pub async fn runner(&self, mut load: Map<String, Value>) -> Result<Value, ApiError> {
        load.insert("cmd".into(), "runner".into());
        let reply = self.call(&load, self.opts.publish_timeout, false).await?;
        classify(reply).map_err(master_error)
    }

    /// `wheel`: the master runs it synchronously and replies `{tag, data}`.
    pub async fn wheel(
        &self,
        mut load: Map<String, Value>,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        load.insert("cmd".into(), "wheel".into());
        let reply = self.call(&load, timeout, false).await?;
        classify(reply).map_err(master_error)
    }

    /// Fires an event on the master's bus, adding `_stamp` as Salt's own firer does.
    pub async fn fire_event(
        &self,
        tag: &str,
        mut data: Map<String, Value>,
    ) -> Result<(), ApiError> {
        data.insert("_stamp".into(), stamp().into());
        let data = Value::Object(data);
        let mut firer = self.firer.lock().await;
        for attempt in 0..2 {
            if firer.is_none() {
                let f = Firer::connect(&self.opts.bus_pull(), Framing::LengthPrefixed)
                    .await
                    .map_err(wire_error)?;
                *firer = Some(f);
            }
            if let Some(f) = firer.as_mut() {
                match f.fire(tag, &data).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        // The master restarted since the connection was opened: reconnect once.
                        *firer = None;
                        if attempt == 1 {
                            return Err(wire_error(e));
                        }
                    }
                }
            }
        }
        Err(ApiError::MasterUnavailable(MASTER_DOWN.into()))
    }
}

/// `datetime.now(timezone.utc).isoformat()`.
pub fn stamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}
