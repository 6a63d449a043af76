//! The event hub: Brine's one subscription to the master's event bus, fanned out to everyone
//! who waits for events.
//!
//! * One task owns the subscription and does nothing but decode and dispatch, so the master
//!   never sees Brine as a slow subscriber. It reconnects with back-off (0.5 s
//!   doubling to 5 s) after the master restarts.
//! * Job waiters register **by jid before the job is published** ([`Hub::watch`]), so a minion
//!   that answers within a millisecond is never missed. Each waiter has a bounded queue; if it
//!   fills, further events for it are dropped (and logged) instead of the bus reader ever
//!   waiting on it. When the subscription drops or comes back, every waiter is told
//!   ([`HubMsg::Gap`]): events of its job may have been published while Brine was not
//!   listening.
//! * Runner jids are chosen by the master and only known after its reply, by which time a
//!   fast runner may already have returned; the hub keeps the last [`RECENT`] `salt/run/…`
//!   events and replays those of a jid when a waiter registers for it.
//! * Every event also goes to the stream feed ([`crate::events::feed`]): numbered, kept in a replay
//!   ring, broadcast to streams and to the token-revocation listener.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use salt_wire::event::{BusAddr, Event, Subscription};
use tokio::sync::{broadcast, mpsc, watch};

use crate::events::feed::{Feed, StreamEvent};

/// Runner events remembered for late registrations.
pub const RECENT: usize = 2048;
/// How long a runner event is remembered: a waiter registers as soon as the master has
/// answered the runner call, so seconds cover the race, and a large runner return (a
/// `jobs.list_jobs` of a big cache, hundreds of megabytes parsed) does not stay in memory.
pub const RECENT_AGE: Duration = Duration::from_secs(30);
/// Capacity of one waiter's queue.
pub const WAITER_QUEUE: usize = 8192;

/// What a waiter receives.
#[derive(Debug, Clone)]
pub enum HubMsg {
    /// An event of the watched jid.
    Event(Arc<Event>),
    /// Events of the jid may have been lost (the bus subscription dropped or came back).
    Gap,
}

struct Waiter {
    id: u64,
    tx: mpsc::Sender<HubMsg>,
    overflowed: AtomicBool,
}

struct Inner {
    waiters: Mutex<HashMap<String, Vec<Arc<Waiter>>>>,
    /// How many waiters `waiters` holds (read by `/stats` without the lock).
    waiter_count: AtomicUsize,
    /// Recent runner events: (jid, event, when it came).
    recent: Mutex<VecDeque<(String, Arc<Event>, Instant)>>,
    next_id: AtomicU64,
    feed: Feed,
    connected: watch::Sender<bool>,
    events: AtomicU64,
    reconnects: AtomicU64,
}

/// Handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A registration for the events of one jid; deregisters when dropped.
pub struct JidWatch {
    hub: Arc<Inner>,
    jid: String,
    id: u64,
    rx: mpsc::Receiver<HubMsg>,
}

impl JidWatch {
    /// The next event (or gap notice) of the jid; `None` only if the hub is gone.
    pub async fn recv(&mut self) -> Option<HubMsg> {
        self.rx.recv().await
    }

    /// An event already queued, if any.
    pub fn try_recv(&mut self) -> Option<HubMsg> {
        self.rx.try_recv().ok()
    }
}

impl Drop for JidWatch {
    fn drop(&mut self) {
        let mut waiters = self.hub.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = waiters.get_mut(&self.jid) {
            let before = list.len();
            list.retain(|w| w.id != self.id);
            self.hub
                .waiter_count
                .fetch_sub(before - list.len(), Ordering::Relaxed);
            if list.is_empty() {
                waiters.remove(&self.jid);
            }
        }
    }
}

fn expire_recent(recent: &mut VecDeque<(String, Arc<Event>, Instant)>, now: Instant) {
    while recent
        .front()
        .is_some_and(|(_, _, at)| now.saturating_duration_since(*at) > RECENT_AGE)
    {
        recent.pop_front();
    }
}

/// The jid in `salt/job/<jid>/…`, `salt/run/<jid>/…` or `salt/wheel/<jid>/…`.
pub fn tag_jid(tag: &str) -> Option<&str> {
    let rest = tag
        .strip_prefix("salt/job/")
        .or_else(|| tag.strip_prefix("salt/run/"))
        .or_else(|| tag.strip_prefix("salt/wheel/"))?;
    let jid = rest.split('/').next()?;
    (!jid.is_empty()).then_some(jid)
}

impl Hub {
    /// A hub that is not connected yet ([`Hub::run`] connects it), whose stream feed keeps
    /// `ring` events (`ring_bytes` at most) for resumption and buffers `channel` events.
    pub fn new(ring: usize, ring_bytes: usize, channel: usize) -> Hub {
        let (connected, _) = watch::channel(false);
        Hub {
            inner: Arc::new(Inner {
                waiters: Mutex::new(HashMap::new()),
                waiter_count: AtomicUsize::new(0),
                recent: Mutex::new(VecDeque::with_capacity(RECENT)),
                next_id: AtomicU64::new(1),
                feed: Feed::new(ring, ring_bytes, channel),
                connected,
                events: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
            }),
        }
    }

    /// Registers for the events of `jid`. Recent runner events of that jid are replayed.
    pub fn watch(&self, jid: &str) -> JidWatch {
        let (tx, rx) = mpsc::channel(WAITER_QUEUE);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let waiter = Arc::new(Waiter {
            id,
            tx,
            overflowed: AtomicBool::new(false),
        });
        {
            // Registration and replay happen under the waiters lock, which dispatch also
            // takes, so no event can slip between the replay and the registration.
            let mut waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
            let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
            for (j, ev, _) in recent.iter() {
                if j == jid {
                    let _ = waiter.tx.try_send(HubMsg::Event(ev.clone()));
                }
            }
            waiters.entry(jid.to_owned()).or_default().push(waiter);
            self.inner.waiter_count.fetch_add(1, Ordering::Relaxed);
        }
        JidWatch {
            hub: self.inner.clone(),
            jid: jid.to_owned(),
            id,
            rx,
        }
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StreamEvent>> {
        self.inner.feed.subscribe()
    }

    /// Events read from the bus since start.
    pub fn events_seen(&self) -> u64 {
        self.inner.events.load(Ordering::Relaxed)
    }

    /// Registered jid watches (requests waiting for the events of a job).
    pub fn waiters(&self) -> usize {
        self.inner.waiter_count.load(Ordering::Relaxed)
    }

    /// Times the bus subscription was re-established.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// The stream feed.
    pub fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    /// Whether the bus subscription is up right now.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits up to `limit` for the subscription to be up.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let mut rx = self.inner.connected.subscribe();
        let ready = tokio::time::timeout(limit, rx.wait_for(|c| *c)).await;
        matches!(ready, Ok(Ok(_)))
    }

    /// Hands one event to its waiters, the recent-runner memory and the broadcast.
    pub fn dispatch(&self, event: Event) {
        let event = Arc::new(event);
        self.inner.events.fetch_add(1, Ordering::Relaxed);
        // A bare-jid tag: the job announcement of masters before Salt 3008.
        let bare = (!event.tag.is_empty() && !event.tag.contains('/')).then_some(&*event.tag);
        if let Some(jid) = tag_jid(&event.tag).or(bare) {
            let waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if event.tag.starts_with("salt/run/") {
                let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
                if recent.len() >= RECENT {
                    recent.pop_front();
                }
                let now = Instant::now();
                expire_recent(&mut recent, now);
                recent.push_back((jid.to_owned(), event.clone(), now));
            }
            if let Some(list) = waiters.get(jid) {
                for w in list {
                    if w.tx.try_send(HubMsg::Event(event.clone())).is_err()
                        && !w.overflowed.swap(true, Ordering::Relaxed)
                    {
                        tracing::warn!(jid, "a job waiter fell behind; events were dropped");
                    }
                }
            }
        }
        self.inner.feed.publish(event);
    }

    /// Forgets runner events older than [`RECENT_AGE`] (dispatch does it too; the ticker of
    /// [`Hub::start`] does it on a quiet bus).
    fn expire_recent(&self, now: Instant) {
        let mut recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
        expire_recent(&mut recent, now);
    }

    fn notify_gap(&self) {
        let waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for list in waiters.values() {
            for w in list {
                let _ = w.tx.try_send(HubMsg::Gap);
            }
        }
    }

    /// Starts the hub's tasks: the bus subscription at `addr`, and a ticker that ages out
    /// what is kept while the bus is quiet too: recent runner events, and the feed's kept
    /// events after `max_age` (zero: never).
    pub fn start(&self, addr: BusAddr, max_age: Duration) {
        self.feed().set_max_age(max_age);
        tokio::spawn(self.clone().run(addr));
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                hub.expire_recent(Instant::now());
                if !max_age.is_zero() {
                    hub.feed().expire();
                }
                hub.feed().sweep();
            }
        });
    }

    /// Owns the bus subscription for the life of the process.
    async fn run(self, addr: BusAddr) {
        let mut backoff = Duration::from_millis(500);
        let mut ever_connected = false;
        loop {
            match Subscription::connect(&addr).await {
                Ok(mut sub) => {
                    if ever_connected {
                        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(bus = %addr, "event bus subscription re-established");
                        // Events published while we were away are lost to us.
                        self.notify_gap();
                    } else {
                        tracing::info!(bus = %addr, "subscribed to the master event bus");
                    }
                    ever_connected = true;
                    backoff = Duration::from_millis(500);
                    self.inner.connected.send_replace(true);
                    while let Some(item) = sub.next().await {
                        match item {
                            Ok(ev) => self.dispatch(ev),
                            Err(e) => {
                                tracing::warn!(error = %e, "event bus stream failed");
                                break;
                            }
                        }
                    }
                    self.inner.connected.send_replace(false);
                    tracing::warn!(bus = %addr, "event bus subscription lost; reconnecting");
                    self.notify_gap();
                }
                Err(e) => {
                    if backoff == Duration::from_millis(500) {
                        tracing::warn!(bus = %addr, error = %e, "cannot subscribe to the event bus; retrying");
                    } else {
                        tracing::debug!(bus = %addr, error = %e, "event bus still unavailable");
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(tag: &str) -> Event {
        Event {
            tag: tag.into(),
            data: json!({"tag": tag}),
        }
    }

    #[test]
    fn jid_is_taken_from_job_run_and_wheel_tags() {
        assert_eq!(tag_jid("salt/job/123/ret/m1"), Some("123"));
        assert_eq!(tag_jid("salt/run/456/ret"), Some("456"));
        assert_eq!(tag_jid("salt/wheel/789/new"), Some("789"));
        assert_eq!(tag_jid("salt/auth"), None);
        assert_eq!(tag_jid("salt/job//ret"), None);
    }

    #[tokio::test]
    async fn waiters_get_only_their_jid_and_deregister_on_drop() {
        let hub = Hub::new(16, 1 << 20, 16);
        let mut a = hub.watch("1");
        let mut b = hub.watch("2");
        hub.dispatch(ev("salt/job/1/ret/m1"));
        hub.dispatch(ev("salt/job/2/ret/m1"));
        hub.dispatch(ev("salt/auth"));
        // A master before Salt 3008 announces a job under its bare jid.
        hub.dispatch(ev("1"));
        assert!(matches!(a.recv().await, Some(HubMsg::Event(e)) if e.tag == "salt/job/1/ret/m1"));
        assert!(matches!(a.recv().await, Some(HubMsg::Event(e)) if e.tag == "1"));
        assert!(matches!(b.recv().await, Some(HubMsg::Event(e)) if e.tag == "salt/job/2/ret/m1"));
        assert!(a.rx.try_recv().is_err());
        drop(a);
        assert!(!hub
            .inner
            .waiters
            .lock()
            .map(|w| w.contains_key("1"))
            .unwrap_or(true));
    }

    #[tokio::test]
    async fn runner_events_before_registration_are_replayed() {
        let hub = Hub::new(16, 1 << 20, 16);
        hub.dispatch(ev("salt/run/9/new"));
        hub.dispatch(ev("salt/run/9/ret"));
        // A master before Salt 3008 announces a job under its bare jid.
        hub.dispatch(ev("1"));
        let mut w = hub.watch("9");
        assert!(matches!(w.recv().await, Some(HubMsg::Event(e)) if e.tag == "salt/run/9/new"));
        assert!(matches!(w.recv().await, Some(HubMsg::Event(e)) if e.tag == "salt/run/9/ret"));
        // Past their age they are gone (a big runner return does not stay in memory).
        hub.expire_recent(Instant::now() + RECENT_AGE + Duration::from_secs(1));
        let mut late = hub.watch("9");
        assert!(late.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_full_waiter_never_blocks_dispatch() {
        let hub = Hub::new(16, 1 << 20, 16);
        let mut w = hub.watch("5");
        for _ in 0..(WAITER_QUEUE + 100) {
            hub.dispatch(ev("salt/job/5/ret/m"));
        }
        // The queue holds exactly its capacity; the rest was dropped, not waited for.
        let mut n = 0;
        while let Ok(HubMsg::Event(_)) = w.rx.try_recv() {
            n += 1;
        }
        assert_eq!(n, WAITER_QUEUE);
        assert!(w
            .hub
            .waiters
            .lock()
            .map(|m| m["5"][0].overflowed.load(Ordering::Relaxed))
            .unwrap_or(false));
    }
}
