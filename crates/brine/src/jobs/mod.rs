//! The master's jobs beyond one request: the job index behind `GET /jobs?limit=N`.
//!
//! * [`cache`]: the master's `local_cache` job directories, read directly;
//! * [`index`]: every cached job as `jobs.list_jobs` shows it, in jid order, bounded;
//! * [`follow`]: the jobs followed to their end for `/jobs/<jid>/status` and `?wait=`.
//!
//! [`Jobs::start`] fills the index in the background: it follows the bus first (a filtered
//! queue of `salt/job/*/new`, `salt/run/*/new` and `salt/run/*/ret`: each names a job whose
//! load it then reads from the cache, retrying while the master has not written it yet), then
//! scans the whole cache once, so no job falls between the two. A page is checked against
//! the cache before it is served: a job the master has removed (`keep_jobs`) leaves the index
//! then. The index is unavailable (and `/jobs?limit=` is served from `jobs.list_jobs`, as
//! slowly as the reference) when `master_job_cache` is not `local_cache`, when the cache
//! cannot be read, when `hash_type` is one Brine does not compute, or with `job_index: 0`.

pub mod cache;
pub mod follow;
pub mod index;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::events::feed::Feed;
use crate::events::filter::TagFilter;
use crate::events::source::{Recv, Source};
use cache::JobCache;
use index::{JobIndex, Page, Query};

/// When a job the bus announced is looked for in the cache again: the master announces a
/// publish before it saves its load, and a runner's load only when the runner ends.
const RETRIES: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// How long the master's word that a token may list jobs is taken for.
const ACCESS_FOR: Duration = Duration::from_secs(60);

/// Tokens whose access is remembered.
const LISTERS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(10_000) {
    Some(n) => n,
    None => std::num::NonZeroUsize::MIN,
};

/// Jobs followed to their end at once, at most.
const FOLLOWED: usize = 4096;

/// Pages checked against the cache at most this many times when jobs have vanished from it.
const PAGE_ATTEMPTS: usize = 4;

/// The index's state.
#[derive(Clone, Debug, PartialEq)]
enum State {
    /// The first scan of the cache runs.
    Loading,
    Ready,
    /// No index: why (logged once).
    Unavailable(String),
}

/// The job index and what keeps it true (see the module notes).
pub struct Jobs {
    cache: Option<JobCache>,
    index: Mutex<JobIndex>,
    state: watch::Sender<State>,
    /// Tokens the master let run `jobs.list_jobs`, and when.
    listers: Mutex<lru::LruCache<String, Instant>>,
    /// The jobs followed to their end.
    pub followed: follow::Followed,
}

impl Jobs {
    /// The index of the cache under `cachedir` (`None` with the reason when it cannot be
    /// kept), holding at most `max_jobs` jobs and `max_bytes` bytes.
    pub fn new(cache: Result<JobCache, String>, max_jobs: usize, max_bytes: usize) -> Jobs {
        let (cache, state) = match cache {
            Ok(c) if max_jobs > 0 => (Some(c), State::Loading),
            Ok(_) => (None, State::Unavailable("job_index is 0".into())),
            Err(why) => (None, State::Unavailable(why)),
        };
        Jobs {
            cache,
            index: Mutex::new(JobIndex::new(max_jobs, max_bytes)),
            state: watch::Sender::new(state),
            listers: Mutex::new(lru::LruCache::new(LISTERS)),
            followed: follow::Followed::new(FOLLOWED),
        }
    }

    /// Whether the master let this token list jobs within the last [`ACCESS_FOR`].
    pub fn may_list(&self, token: &str) -> bool {
        let mut l = self.listers.lock().unwrap_or_else(|p| p.into_inner());
        l.get(token).is_some_and(|at| at.elapsed() < ACCESS_FOR)
    }

    /// Records that the master let this token list jobs.
    pub fn allow_list(&self, token: &str) {
        let mut l = self.listers.lock().unwrap_or_else(|p| p.into_inner());
        l.put(token.to_owned(), Instant::now());
    }

    /// The cache Brine would index for these master options, or why it cannot.
    pub fn cache_of(
        master_job_cache: &str,
        cachedir: &std::path::Path,
        hash_type: &str,
    ) -> Result<JobCache, String> {
        if master_job_cache != "local_cache" {
            return Err(format!(
                "master_job_cache is {master_job_cache}, not local_cache"
            ));
        }
        JobCache::new(cachedir, hash_type)
    }

    /// Starts following the bus, then scans the cache (both in the background).
    pub fn start(self: &Arc<Self>, feed: &Feed) {
        let Some(cache) = self.cache.clone() else {
            if let State::Unavailable(why) = &*self.state.borrow() {
                tracing::info!("no job index ({why}): GET /jobs?limit= pages jobs.list_jobs");
            }
            return;
        };
        let globs = ["salt/job/*/new", "salt/run/*/new", "salt/run/*/ret"];
        let filter = match TagFilter::new(globs.iter().map(|g| g.to_string()).collect()) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("no job index: {e:?}");
                return;
            }
        };
        let mut source = Source::Filtered(feed.filtered(filter));
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match source.recv().await {
                    Recv::Event(ev) => {
                        if let Some(jid) = crate::events::hub::tag_jid(ev.tag()) {
                            me.clone().add_later(cache.clone(), jid.to_owned());
                        }
                    }
                    Recv::Lagged(why) => {
                        // Jobs were announced while the queue was full: the cache has them.
                        tracing::warn!("the job index fell behind the bus ({why}); scanning the job cache again");
                        source.recover();
                        me.clone().scan(cache.clone()).await;
                    }
                    Recv::Closed => return,
                }
            }
        });
        let me = self.clone();
        let cache = self.cache.clone();
        tokio::spawn(async move {
            if let Some(c) = cache {
                me.scan(c).await;
            }
        });
    }

    /// Reads every job of the cache into the index; the index is ready afterwards (or
    /// unavailable, if the cache cannot be read).
    async fn scan(self: Arc<Self>, cache: JobCache) {
        let started = std::time::Instant::now();
        let me = self.clone();
        let dir = cache.dir().to_path_buf();
        let done = tokio::task::spawn_blocking(move || {
            cache.scan(|jid, load| {
                me.index
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(&jid, &load)
            })
        })
        .await;
        match done {
            Ok(Ok(seen)) => {
                let (jobs, bytes) = self.size();
                tracing::info!(
                    seen,
                    jobs,
                    bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "job index loaded from {}",
                    dir.display()
                );
                self.state.send_replace(State::Ready);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                // A master that never ran a job has no directory yet.
                self.state.send_replace(State::Ready);
            }
            Ok(Err(e)) => {
                let why = format!("cannot read {}: {e}", dir.display());
                tracing::warn!("no job index ({why}): GET /jobs?limit= pages jobs.list_jobs");
                self.state.send_replace(State::Unavailable(why));
            }
            Err(e) => {
                tracing::error!("the job cache scan failed: {e}");
                self.state
                    .send_replace(State::Unavailable("the scan failed".into()));
            }
        }
    }

    /// Reads a job the bus announced into the index, retrying while its load is not written.
    fn add_later(self: Arc<Self>, cache: JobCache, jid: String) {
        tokio::spawn(async move {
            for pause in std::iter::once(Duration::ZERO).chain(RETRIES) {
                tokio::time::sleep(pause).await;
                let (c, j) = (cache.clone(), jid.clone());
                let load = tokio::task::spawn_blocking(move || c.load(&j))
                    .await
                    .ok()
                    .flatten();
                if let Some(load) = load {
                    self.index
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(&jid, &load);
                    return;
                }
            }
        });
    }

    /// Jobs and bytes in the index.
    pub fn size(&self) -> (usize, usize) {
        self.index.lock().unwrap_or_else(|p| p.into_inner()).size()
    }

    /// A page of the index, once its first scan is done (waiting at most `limit`); `None`
    /// when there is no index, or it is still loading after `limit`.
    pub async fn page(&self, q: &Query, limit: Duration) -> Option<Page> {
        let cache = self.cache.clone()?;
        let mut state = self.state.subscribe();
        // The state's read guard must not live across an await: only a bool leaves.
        let ready = tokio::time::timeout(limit, async {
            state
                .wait_for(|s| !matches!(s, State::Loading))
                .await
                .map(|s| *s == State::Ready)
        })
        .await;
        if !matches!(ready, Ok(Ok(true))) {
            return None;
        }
        for _ in 0..PAGE_ATTEMPTS {
            let page = self.index.lock().unwrap_or_else(|p| p.into_inner()).page(q);
            let (c, jids): (JobCache, Vec<String>) = (
                cache.clone(),
                page.jobs.iter().map(|(j, _)| j.clone()).collect(),
            );
            let gone = tokio::task::spawn_blocking(move || {
                jids.into_iter()
                    .filter(|j| !c.exists(j))
                    .collect::<Vec<_>>()
            })
            .await
            .ok()?;
            if gone.is_empty() {
                return Some(page);
            }
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            for j in &gone {
                index.remove(j);
            }
        }
        None
    }
}
