//! What one stream reads from the feed: every event (the feed's broadcast channel, one copy
//! of each event whatever the number of streams), or, for a stream with a tag filter, its own
//! bounded queue that the feed fills with the events the filter lets through. A filtered
//! stream is not woken, and holds nothing, for an event it does not want; the feed matches
//! its globs only against the tags that start with their literal start
//! ([`crate::events::routes`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use super::feed::StreamEvent;
use super::filter::TagFilter;

/// One filtered stream's entry in the feed.
pub struct Filtered {
    filter: Mutex<TagFilter>,
    tx: mpsc::Sender<Arc<StreamEvent>>,
    /// Frame bytes queued and not yet taken.
    queued_bytes: AtomicU64,
    /// An event found the queue full: the stream is behind by its whole buffer.
    overflowed: AtomicBool,
}

impl Filtered {
    /// A filtered stream's entry and its receiving end, queueing at most `capacity` events.
    pub fn new(filter: TagFilter, capacity: usize) -> (Arc<Filtered>, FilteredRx) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sub = Arc::new(Filtered {
            filter: Mutex::new(filter),
            tx,
            queued_bytes: AtomicU64::new(0),
            overflowed: AtomicBool::new(false),
        });
        (sub.clone(), FilteredRx { sub, rx })
    }

    /// Whether the filter lets an event with this tag through.
    pub fn wants(&self, tag: &str) -> bool {
        self.filter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .matches(tag)
    }

    /// Queues the event if the filter lets it through (called by the feed as it publishes).
    pub fn offer(&self, ev: &Arc<StreamEvent>) {
        if !self.wants(ev.tag()) {
            return;
        }
        let len = ev.sse().len() as u64;
        match self.tx.try_send(ev.clone()) {
            Ok(()) => {
                self.queued_bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The literal text its filter's globs start with (the feed's bucket for it).
    pub fn prefix(&self) -> String {
        self.filter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .prefix()
            .to_owned()
    }

    /// Replaces the filter; events already queued stay. The feed does it
    /// ([`crate::events::feed::Feed::retune`]), as the stream's bucket changes with it.
    pub(super) fn set_filter(&self, filter: TagFilter) {
        *self.filter.lock().unwrap_or_else(|p| p.into_inner()) = filter;
    }

    /// Whether the stream is gone (the feed then forgets the entry).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Events and frame bytes queued and not yet taken.
    pub fn owed(&self) -> (u64, u64) {
        let events = self.tx.max_capacity() - self.tx.capacity();
        (events as u64, self.queued_bytes.load(Ordering::Relaxed))
    }

    /// Whether an event was refused because the queue was full.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// The receiving end of a filtered stream's queue.
pub struct FilteredRx {
    /// The entry the feed fills.
    pub sub: Arc<Filtered>,
    rx: mpsc::Receiver<Arc<StreamEvent>>,
}

impl FilteredRx {
    fn took(&self, ev: &StreamEvent) {
        let len = ev.sse().len() as u64;
        // Never below zero, whatever the order of the two updates.
        let _ = self
            .sub
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(len))
            });
    }
}

/// What a stream reads.
pub enum Source {
    /// Every event.
    All(broadcast::Receiver<Arc<StreamEvent>>),
    /// The events its filter lets through.
    Filtered(FilteredRx),
}

/// One read from a [`Source`].
pub enum Recv {
    Event(Arc<StreamEvent>),
    /// The stream fell behind by this much and lost events.
    Lagged(String),
    /// The feed is gone.
    Closed,
}

impl Source {
    /// The next event, waiting for it.
    pub async fn recv(&mut self) -> Recv {
        match self {
            Source::All(rx) => match rx.recv().await {
                Ok(ev) => Recv::Event(ev),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Recv::Lagged(format!("{n} events behind the bus"))
                }
                Err(broadcast::error::RecvError::Closed) => Recv::Closed,
            },
            Source::Filtered(f) => {
                if f.sub.overflowed() {
                    return Recv::Lagged(lag(f));
                }
                match f.rx.recv().await {
                    Some(ev) => {
                        f.took(&ev);
                        Recv::Event(ev)
                    }
                    None => Recv::Closed,
                }
            }
        }
    }

    /// The next event if one is waiting (`None`: nothing waiting, or a lag the next
    /// [`Source::recv`] reports).
    pub fn try_recv(&mut self) -> Option<Arc<StreamEvent>> {
        match self {
            Source::All(rx) => rx.try_recv().ok(),
            Source::Filtered(f) => {
                if f.sub.overflowed() {
                    return None;
                }
                let ev = f.rx.try_recv().ok()?;
                f.took(&ev);
                Some(ev)
            }
        }
    }

    /// Takes events again after a lag was reported, for a reader that catches up on what it
    /// lost by other means (the job index rescans the cache); streams end instead.
    pub fn recover(&mut self) {
        if let Source::Filtered(f) = self {
            f.sub.overflowed.store(false, Ordering::Relaxed);
        }
    }

    /// The filtered stream's entry, if the stream is filtered.
    pub fn filtered(&self) -> Option<&Arc<Filtered>> {
        match self {
            Source::All(_) => None,
            Source::Filtered(f) => Some(&f.sub),
        }
    }
}

fn lag(f: &FilteredRx) -> String {
    let (events, bytes) = f.sub.owed();
    format!("{events} matching events, {bytes} bytes queued and more refused")
}
