//! The shared state of a running Brine: settings, the master handle, the event hub and the
//! token checker. One `App` per process, behind an `Arc`, handed to every request.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use salt_wire::pool::MasterPool;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::events::hub::Hub;
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
    pub auth: Arc<Auth>,
    /// Counters about this process.
    pub stats: Arc<Stats>,
    /// The login throttle (`None` when `login_rate_limit` is 0).
    pub throttle: Option<crate::throttle::LoginThrottle>,
    /// `minions.connected` answers shared by concurrent `local` calls of one caller (`None`
    /// when the master could not answer).
    pub connected_minions: crate::coalesce::Coalescer<Option<Vec<String>>>,
    /// The job index behind `GET /jobs?limit=`.
    pub jobs: Arc<crate::jobs::Jobs>,
    /// The master's runner functions, to answer a misspelt one at once.
    pub runner_functions: RunnerFunctions,
    /// Cancelled when Brine starts to stop (SIGTERM): streams end at once, cleanly, so that
    /// their connections can close while the requests in flight finish.
    pub stopping: tokio_util::sync::CancellationToken,
}

impl App {
    /// Connects to the master as `settings` say (the request pool, the event hub) and starts
    /// the background tasks of the parts that own them: the hub's bus subscription and the
    /// token-revocation listener. Call it inside the runtime.
    pub fn start(settings: Settings) -> SharedApp {
        let opts = Arc::new(settings.master.clone());
        let b = &settings.brine;
        let pool = MasterPool::new(opts.pool(b.pool_size, b.pool_queue, b.connect_timeout));
        let hub = Hub::new(b.event_ring, b.event_ring_bytes, b.stream_buffer);
        let stats = Arc::new(Stats::default());
        let app = Arc::new(App {
            master: Master::new(pool, opts.clone(), stats.clone()),
            hub,
            auth: Arc::new(Auth::new(b.token_cache)),
            stats,
            throttle: crate::throttle::LoginThrottle::new(
                b.login_rate_limit,
                b.login_burst,
                b.login_rate_limit_failures_only,
            ),
            connected_minions: crate::coalesce::Coalescer::new(Duration::from_secs(1)),
            runner_functions: RunnerFunctions::default(),
            jobs: Arc::new(crate::jobs::Jobs::new(
                crate::jobs::Jobs::cache_of(
                    &settings.master_job_cache,
                    &opts.cachedir,
                    &opts.hash_type,
                ),
                b.job_index,
                b.job_index_bytes,
            )),
            stopping: tokio_util::sync::CancellationToken::new(),
            settings,
        });
        app.hub
            .start(opts.bus_pub(), app.settings.brine.event_ring_seconds);
        app.auth.follow_revocations(&app.hub);
        app.jobs.start(app.hub.feed());
        app
    }

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
            streams_filtered: self.hub.feed().filtered_streams(),
            job_index: self.jobs.size(),
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
}

/// The handle requests receive.
pub type SharedApp = Arc<App>;

/// A function missing from a list fetched longer ago than this is looked up again (a runner
/// module may have been added since) before the call is refused.
const LIST_FRESH: Duration = Duration::from_secs(10);

/// How long one credential's `doc.runner` answer (or its refusal) is reused.
const LIST_PER_CREDENTIAL: Duration = Duration::from_secs(10);

/// The names of the master's runner functions, as its `doc.runner` lists them: the same for
/// every caller, fetched (by the runner client) with the credentials of a caller who may run
/// `doc.runner`.
pub struct RunnerFunctions {
    names: std::sync::Mutex<Option<(std::time::Instant, Arc<HashSet<String>>)>>,
    /// `doc.runner` answers per credential, shared by concurrent askers.
    pub fetches: crate::coalesce::Coalescer<Option<Arc<HashSet<String>>>>,
}

impl Default for RunnerFunctions {
    fn default() -> Self {
        RunnerFunctions {
            names: std::sync::Mutex::new(None),
            fetches: crate::coalesce::Coalescer::new(LIST_PER_CREDENTIAL),
        }
    }
}

impl RunnerFunctions {
    /// What the list already says of `fun` without asking: `Some(true)` when it is there,
    /// `Some(false)` when a fresh list lacks it, `None` when the master must be asked.
    pub fn known(&self, fun: &str) -> Option<bool> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let (at, set) = names.as_ref()?;
        if set.contains(fun) {
            Some(true)
        } else if at.elapsed() < LIST_FRESH {
            Some(false)
        } else {
            None
        }
    }

    /// Keeps a fresh list.
    pub fn store(&self, set: Arc<HashSet<String>>) {
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), set));
    }
}
