//! The shared state of a running Brine: settings, the master handle, the event hub and the
//! token checker. One `App` per process, behind an `Arc`, handed to every request.

use std::sync::Arc;

use crate::auth::Auth;
use crate::http::error::ApiError;
use crate::hub::Hub;
use crate::master::Master;
use crate::master::MASTER_DOWN;
use crate::settings::Settings;
use crate::stats::Stats;

/// Shared state (see the module notes).
pub struct App {
    /// Settings read at startup.
    pub settings: Settings,
    /// The master's request channel and event firing.
    pub master: Master,
    /// The one event-bus subscription.
    pub hub: Hub,
    /// Token checks and revocations.
    pub auth: Auth,
    /// Counters about this process.
    pub stats: Arc<Stats>,
    /// The `log_access_file` writer, if configured.
    pub access_log: Option<crate::http::access_log::AccessLog>,
    /// The login throttle (`None` when `login_rate_limit` is 0).
    pub throttle: Option<crate::throttle::LoginThrottle>,
    /// `minions.connected` answers shared by concurrent `local` calls of one caller (`None`
    /// when the master could not answer).
    pub connected_minions: crate::coalesce::Coalescer<Option<Vec<String>>>,
    /// The master's runner functions, to answer a misspelt one at once.
    pub runner_functions: crate::clients::runner::RunnerFunctions,
    /// A weak handle on this `App`, for work that outlives a request (background calls).
    pub me: std::sync::Weak<App>,
    /// Cancelled when Brine starts to stop (SIGTERM): streams end at once, cleanly, so that
    /// their connections can close while the requests in flight finish.
    pub stopping: tokio_util::sync::CancellationToken,
}

impl App {
    /// The figures `/stats` and `/metrics` read from the rest of the process.
    pub fn live(&self) -> crate::stats::Live {
        crate::stats::Live {
            master_in_flight: self.master.in_flight(),
            master_queued: self.master.queued(),
            bus_connected: self.hub.is_connected(),
            bus_events: self.hub.events_seen(),
            bus_reconnects: self.hub.reconnects(),
            job_waiters: self.hub.waiters(),
            events_kept: self.hub.feed().kept(),
        }
    }

    /// Ok when the event-bus subscription is up (waiting up to `connect_timeout` for it);
    /// commands whose results arrive as events need it, as Salt's own clients do.
    pub async fn bus_ready(&self) -> Result<(), ApiError> {
        if self.hub.is_connected()
            || self
                .hub
                .wait_connected(self.settings.brine.connect_timeout)
                .await
        {
            Ok(())
        } else {
            Err(ApiError::MasterUnavailable(MASTER_DOWN.into()))
        }
    }

    /// A strong handle on this `App` (`None` only while it is being dropped).
    pub fn self_ref(&self) -> Option<SharedApp> {
        self.me.upgrade()
    }
}

/// The handle requests receive.
pub type SharedApp = Arc<App>;
