//! The life of one event stream (SSE or WebSocket): reading the feed, keep-alives, and the
//! reasons a stream ends.
//!
//! A stream is a [`Stream`] of frame batches that the connection itself polls: the SSE body
//! is polled by hyper when it has room to write, the WebSocket task polls it between sends.
//! Each event therefore wakes one task per stream (the connection's), and frames go from the
//! feed's shared buffers straight to the socket, with no queue in between.
//!
//! A stream ends when the client goes away, when its token expires or is revoked (checked every
//! second, so a logout on any Brine instance ends the streams of that token), when Brine stops
//! (SIGTERM: the stream's body ends cleanly, a WebSocket gets 1001), or when the client
//! cannot keep up. A connection that stops reading stops polling its stream, so a small
//! watchdog task per stream (one wakeup a second) looks at how far it is behind the feed: a
//! stream that owes events while its connection has held the same batch for [`STALL`] (the
//! socket does not take it: the client is not reading), or that is as far behind as the feed
//! buffers (`brine: {stream_buffer}` events, `{stream_buffer_bytes}` bytes: events a stream
//! has not taken stay in memory), is disconnected through the connection's kill switch,
//! with a log line and a counter, so it cannot hold memory or slow anyone else. Time a stream
//! spends waiting for Brine itself (its task queued behind others on a busy machine) never
//! counts against its client. The watchdog also ends streams whose end (expiry, revocation,
//! stop) their stalled connection would never see. The bus reader never waits on a stream.
//!
//! A stream with a tag filter reads its own queue ([`crate::events::source`]); what it owes
//! is what that queue holds, and an event that finds the queue full ends the stream as one
//! that does not keep up. A WebSocket client can change the filter while it reads
//! ([`Retune`]): an unfiltered stream then moves to a queue of its own.
//!
//! A stream may also end on its own ([`End`]: a job's feed ends once the job is complete): it
//! then sends one last event of its own and closes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::Stream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use crate::app::App;
use crate::events::feed::{Resume, StreamEvent};
use crate::events::filter::TagFilter;
use crate::events::source::{Filtered, Recv, Source};

/// Interval of keep-alive frames on an idle stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a connection may hold one batch (its socket not taking it) while the stream owes
/// more events before it counts as stalled. Generous: on a machine busier than it can serve,
/// a stream may wait seconds for Brine itself to run it, and memory does not depend on it
/// (the byte and event bounds do that).
pub const STALL: Duration = Duration::from_secs(30);
/// How often a stream checks its token and the watchdog checks the stream.
const CHECK: Duration = Duration::from_secs(1);
/// Events taken from the feed at once, while their frames stay under this many bytes (the
/// batch goes out in one write; SSE joins it into one buffer, a private copy per stream, so
/// it stays small: 10 000 streams hold at most ~40 MiB of copies).
const BATCH_BYTES: usize = 4 * 1024;
/// After a batch that took everything the feed had, an event that comes within this time
/// waits for the rest of the window before it goes out with whatever joined it: events that
/// come in a burst leave in a few writes instead of one write (and one wakeup of the
/// connection) per event and stream. An event after a quiet spell goes out at once; only
/// events close behind another wait, by at most this much.
pub const COALESCE: Duration = Duration::from_millis(20);

/// The next instant after `now` that is a whole number of [`CHECK`]s after the first call:
/// every stream's checks fall on the same instants, so the runtime wakes once per `CHECK` for
/// all of them instead of once per stream (at 1 000 idle streams, thread wake-ups were most
/// of what they cost).
fn next_check(now: Instant) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    let period = CHECK.as_millis().max(1);
    let ticks = now.saturating_duration_since(epoch).as_millis() / period + 1;
    u64::try_from(ticks * period)
        .ok()
        .and_then(|ms| epoch.checked_add(Duration::from_millis(ms)))
        .unwrap_or(now + CHECK)
}

/// How a stream renders what it sends.
pub trait Render: Send + 'static {
    /// The frame type the connection writes.
    type Frame: Send + 'static;
    /// The first frame, if any (SSE's `retry:` line).
    fn preamble(&self) -> Option<Self::Frame>;
    /// The frames one event becomes (none, one, or a few), appended to `out`.
    fn event(&mut self, ev: &StreamEvent, out: &mut VecDeque<Self::Frame>);
    /// A keep-alive frame.
    fn keepalive(&self) -> Option<Self::Frame>;
    /// A frame's size in bytes (for batching).
    fn size(frame: &Self::Frame) -> usize;
}

/// Who is streaming, for logs and checks.
pub struct Owner {
    /// The token the stream was opened with.
    pub token: String,
    /// The token's user.
    pub user: String,
    /// Token expiry, epoch seconds.
    pub expire: f64,
    /// The connection's kill switch.
    pub kill: Option<CancellationToken>,
    /// What kind of stream (for logs): `sse`, `ws`, ...
    pub kind: &'static str,
}

/// A handle that changes a running stream's tag filter (a WebSocket's `subscribe`).
#[derive(Clone, Default)]
pub struct Retune {
    next: Arc<Mutex<Option<TagFilter>>>,
    notify: Arc<Notify>,
}

impl Retune {
    /// The stream lets through only what `filter` matches, from its next event on.
    pub fn set(&self, filter: TagFilter) {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = Some(filter);
        self.notify.notify_one();
    }

    fn take(&self) -> Option<TagFilter> {
        self.next.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// How a stream that ends on its own ends (a job's feed).
pub struct End {
    /// Sees each event before it is rendered; `false` leaves it out (a job's feed sends each
    /// minion's return once).
    pub keep: Box<dyn FnMut(&StreamEvent) -> bool + Send>,
    /// Resolves when the stream is to end: with its last event, or `None` to end without one.
    /// Events already waiting for the stream go out first.
    pub last: BoxFuture<'static, Option<Arc<StreamEvent>>>,
}

/// The end of a stream that has one, else never.
async fn last_event(end: &mut Option<End>) -> Option<Arc<StreamEvent>> {
    match end {
        Some(e) => (&mut e.last).await,
        None => std::future::pending().await,
    }
}

/// Counts an open stream while it lives.
struct OpenGuard(Arc<App>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.stats.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn until_expiry(expire: f64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Duration::from_secs_f64((expire - now).clamp(0.0, 1.0e9))
}

/// Why a stream must end now for its token's or Brine's sake (`expires` is the token's
/// expiry), if it must: the one test both the stream and its watchdog apply.
fn end_reason(app: &App, owner: &Owner, expires: Instant, now: Instant) -> Option<&'static str> {
    if now >= expires {
        Some("token expired")
    } else if app.auth.is_revoked(&owner.token) {
        Some("token revoked")
    } else if app.stopping.is_cancelled() {
        Some("Brine is stopping")
    } else {
        None
    }
}

/// Disconnects a client that does not keep up: counter, log line, kill switch.
fn drop_slow(app: &App, owner: &Owner, why: &str) {
    app.stats
        .streams_dropped_slow
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        user = %owner.user,
        kind = owner.kind,
        "disconnecting a stream client that does not keep up ({why})"
    );
    if let Some(kill) = &owner.kill {
        kill.cancel();
    }
}

/// One stream's state, owned by the connection that polls it.
struct Reader<R: Render> {
    app: Arc<App>,
    owner: Arc<Owner>,
    render: R,
    rx: Source,
    retune: Retune,
    /// How the stream ends on its own, if it does.
    end: Option<End>,
    /// Frames rendered and not yet handed out (the preamble, a replay, an event's few frames).
    pending: VecDeque<R::Frame>,
    /// How far the stream got (the watchdog reads it).
    progress: Arc<Progress>,
    expires: Instant,
    check: Pin<Box<Sleep>>,
    last_frame: Instant,
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set after a batch that emptied the feed: no new batch before this (see [`COALESCE`]).
    hold: Option<Instant>,
    ended: bool,
    _open: OpenGuard,
    /// Stops the watchdog when the connection drops the stream.
    _watchdog: DropGuard,
}

impl<R: Render> Reader<R> {
    /// Applies a new filter: in place for a filtered stream, a queue of its own for one that
    /// read the broadcast.
    fn apply(&mut self, filter: TagFilter) {
        if let Some(f) = self.rx.filtered() {
            self.app.hub.feed().retune(f, filter);
            return;
        }
        let rx = self.app.hub.feed().filtered(filter);
        // The watchdog now measures the queue.
        let _ = self.progress.filtered.set(rx.sub.clone());
        self.rx = Source::Filtered(rx);
    }

    fn take(&mut self, ev: &StreamEvent) {
        self.progress.taken.store(ev.id, Ordering::Relaxed);
        if ev.end > 0 {
            self.progress.taken_bytes.store(ev.end, Ordering::Relaxed);
        }
        if self.end.as_mut().is_none_or(|e| (e.keep)(ev)) {
            self.render.event(ev, &mut self.pending);
        }
    }

    /// The stream ends on its own: what is waiting in its queue goes out, then `last`.
    fn finish(&mut self, last: Option<Arc<StreamEvent>>) {
        while let Some(ev) = self.rx.try_recv() {
            self.take(&ev);
        }
        if let Some(ev) = last {
            self.render.event(&ev, &mut self.pending);
        }
        self.end = None;
        self.ended = true;
    }

    /// The next batch of frames, or `None` when the stream has ended.
    async fn next_batch(&mut self) -> Option<Vec<R::Frame>> {
        // The connection is asking again: the last batch is written (or being written).
        self.progress.out.store(false, Ordering::Relaxed);
        while self.pending.is_empty() && !self.ended {
            tokio::select! {
                biased;
                _ = &mut self.stopping => {
                    tracing::debug!(user = %self.owner.user, kind = self.owner.kind, "Brine is stopping; stream closed");
                    self.ended = true;
                }
                got = self.rx.recv() => match got {
                    Recv::Event(ev) => self.take(&ev),
                    Recv::Lagged(why) => {
                        drop_slow(&self.app, &self.owner, &why);
                        self.ended = true;
                    }
                    Recv::Closed => self.ended = true,
                },
                _ = self.retune.notify.notified() => {
                    if let Some(filter) = self.retune.take() {
                        self.apply(filter);
                    }
                }
                last = last_event(&mut self.end) => self.finish(last),
                _ = &mut self.check => {
                    let now = Instant::now();
                    self.check.as_mut().reset(next_check(now));
                    if let Some(why) = end_reason(&self.app, &self.owner, self.expires, now) {
                        tracing::info!(user = %self.owner.user, kind = self.owner.kind, "{why}; stream closed");
                        self.ended = true;
                    } else if now.duration_since(self.last_frame) >= KEEPALIVE {
                        match self.render.keepalive() {
                            Some(f) => self.pending.push_back(f),
                            None => self.last_frame = now,
                        }
                    }
                }
            }
        }
        if self.pending.is_empty() {
            return None;
        }
        // An event close behind the last batch waits for the rest of its burst.
        if let Some(until) = self.hold.take() {
            if Instant::now() < until {
                tokio::select! {
                    biased;
                    _ = &mut self.stopping => self.ended = true,
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        }
        // Whatever else is already in the feed goes out with it, up to a batch.
        let mut size: usize = self.pending.iter().map(R::size).sum();
        let mut drained = false;
        while size < BATCH_BYTES && !self.ended {
            // Nothing waiting, or a lag that the next wait finds (and handles).
            let Some(ev) = self.rx.try_recv() else {
                drained = true;
                break;
            };
            let before = self.pending.len();
            self.take(&ev);
            size += self.pending.iter().skip(before).map(R::size).sum::<usize>();
        }
        let now = Instant::now();
        self.last_frame = now;
        if drained {
            self.hold = Some(now + COALESCE);
        }
        self.progress.out.store(true, Ordering::Relaxed);
        self.progress.batches.fetch_add(1, Ordering::Relaxed);
        Some(self.pending.drain(..).collect())
    }
}

/// What a stream's reader shares with its watchdog.
struct Progress {
    /// The id of the last event taken from the feed.
    taken: AtomicU64,
    /// The feed's byte count at that event.
    taken_bytes: AtomicU64,
    /// Batches handed to the connection so far.
    batches: AtomicU64,
    /// A batch is with the connection, which has not asked for the next one yet (it is
    /// writing it, or its socket does not take it).
    out: AtomicBool,
    /// The stream's own queue, once it filters.
    filtered: OnceLock<Arc<Filtered>>,
}

/// The watchdog's stall test: has the connection held the same batch for [`STALL`] while
/// more is owed? A stream that is not holding a batch is waiting for events or for Brine to
/// run it, neither of which is its client's doing.
struct Stall {
    /// The batch count when the connection was last seen making progress, and when.
    batch: u64,
    since: Instant,
}

impl Stall {
    fn new(now: Instant) -> Stall {
        Stall {
            batch: u64::MAX,
            since: now,
        }
    }

    /// One look: `out` (a batch is with the connection), `batch` (batches handed out so far),
    /// `behind` (events owed). True once the stream counts as stalled.
    fn look(&mut self, out: bool, batch: u64, behind: u64, now: Instant) -> bool {
        if !out || behind == 0 || batch != self.batch {
            (self.batch, self.since) = (batch, now);
            return false;
        }
        now.duration_since(self.since) >= STALL
    }
}

/// Watches one stream from outside its connection (see the module notes); ends with it.
async fn watchdog(
    app: Arc<App>,
    owner: Arc<Owner>,
    progress: Arc<Progress>,
    expires: Instant,
    gone: CancellationToken,
) {
    let limit = app.settings.brine.stream_buffer as u64;
    let limit_bytes = app.settings.brine.stream_buffer_bytes as u64;
    let mut tick = tokio::time::interval_at(next_check(Instant::now()), CHECK);
    // A late tick does not shift the later ones: they stay on the shared instants.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stall = Stall::new(Instant::now());
    let mut should_have_ended: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = gone.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let feed = app.hub.feed();
        let (behind, behind_bytes, full) = match progress.filtered.get() {
            Some(f) => {
                let (events, bytes) = f.owed();
                (events, bytes, f.overflowed())
            }
            None => (
                feed.last_id()
                    .saturating_sub(progress.taken.load(Ordering::Relaxed)),
                feed.published_bytes()
                    .saturating_sub(progress.taken_bytes.load(Ordering::Relaxed)),
                false,
            ),
        };
        if full || behind >= limit || behind_bytes >= limit_bytes {
            drop_slow(
                &app,
                &owner,
                &format!("{behind} events, {behind_bytes} bytes behind the bus"),
            );
            return;
        }
        let out = progress.out.load(Ordering::Relaxed);
        let batch = progress.batches.load(Ordering::Relaxed);
        if stall.look(out, batch, behind, now) {
            drop_slow(
                &app,
                &owner,
                &format!(
                    "{behind} events owed, its socket took nothing for {} s",
                    STALL.as_secs()
                ),
            );
            return;
        }
        // The stream ends itself on these when its connection polls it; one that is not
        // polled is cut off a little later.
        let over = end_reason(&app, &owner, expires, now).is_some();
        match (over, should_have_ended) {
            (false, _) => should_have_ended = None,
            (true, None) => should_have_ended = Some(now),
            (true, Some(t)) if now.duration_since(t) >= 2 * CHECK => {
                tracing::info!(user = %owner.user, kind = owner.kind, "stream ended while its client was not reading; connection closed");
                if let Some(kill) = &owner.kill {
                    kill.cancel();
                }
                return;
            }
            (true, Some(_)) => {}
        }
    }
}

/// Opens a stream: the preamble, what `resume` replays (or a `brine/events/lost` marker),
/// then every event of the feed, in batches of frames; `None` when it ends (and with `end`'s
/// last event when that says so).
pub fn open<R: Render>(
    app: Arc<App>,
    owner: Owner,
    resume: Resume,
    mut render: R,
    retune: Retune,
    mut end: Option<End>,
) -> impl Stream<Item = Vec<R::Frame>> + Send + 'static
where
    R::Frame: Send,
{
    app.stats.streams_open.fetch_add(1, Ordering::Relaxed);
    let Resume { replay, lost, rx } = resume;
    let mut pending = VecDeque::new();
    if let Some(first) = render.preamble() {
        pending.push_back(first);
    }
    let mut last = app.hub.feed().last_id();
    let mut last_bytes = app.hub.feed().published_bytes();
    if let Some((seen, oldest)) = lost {
        // Numbered just before the oldest kept event, so a reconnect with this id replays
        // everything that is still available.
        let marker = StreamEvent::new(
            oldest.saturating_sub(1),
            Arc::new(crate::events::feed::lost_marker(seen, oldest)),
        );
        render.event(&marker, &mut pending);
    }
    for ev in replay {
        last = last.max(ev.id);
        last_bytes = last_bytes.max(ev.end);
        if end.as_mut().is_none_or(|e| (e.keep)(&ev)) {
            render.event(&ev, &mut pending);
        }
    }
    let owner = Arc::new(owner);
    let progress = Arc::new(Progress {
        taken: AtomicU64::new(last),
        taken_bytes: AtomicU64::new(last_bytes),
        batches: AtomicU64::new(0),
        out: AtomicBool::new(false),
        filtered: OnceLock::new(),
    });
    if let Some(f) = rx.filtered() {
        let _ = progress.filtered.set(f.clone());
    }
    let gone = CancellationToken::new();
    let now = Instant::now();
    let expires = now + until_expiry(owner.expire);
    tokio::spawn(watchdog(
        app.clone(),
        owner.clone(),
        progress.clone(),
        expires,
        gone.clone(),
    ));
    let reader = Reader {
        expires,
        check: Box::pin(tokio::time::sleep_until(next_check(now))),
        last_frame: now,
        stopping: Box::pin(app.stopping.clone().cancelled_owned()),
        hold: None,
        _open: OpenGuard(app.clone()),
        app,
        owner,
        render,
        rx,
        retune,
        end,
        pending,
        progress,
        ended: false,
        _watchdog: gone.drop_guard(),
    };
    futures_util::stream::unfold(reader, |mut r| async move {
        let batch = r.next_batch().await?;
        Some((batch, r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn checks_fall_on_shared_instants() {
        let now = Instant::now();
        let first = next_check(now);
        assert!(first > now && first <= now + CHECK);
        // Streams opened at different times check at the same instants, one CHECK apart.
        let later = next_check(now + Duration::from_millis(1_300));
        assert_eq!(
            later.duration_since(first).as_millis() % CHECK.as_millis(),
            0
        );
        assert!(later > now + Duration::from_millis(1_300));
        assert_eq!(next_check(first), first + CHECK);
    }

    #[test]
    fn a_stream_waiting_for_brine_is_never_stalled() {
        // Owing events but not holding a batch: the stream's task waits to be run (a busy
        // machine), which is not its client's doing, however long it takes.
        let t = Instant::now();
        let mut s = Stall::new(t);
        for sec in 0..10 * STALL.as_secs() {
            assert!(!s.look(false, 7, 900, at(t, sec)), "stalled at {sec} s");
        }
    }

    #[test]
    fn a_connection_holding_one_batch_while_more_is_owed_is_stalled_after_stall() {
        let t = Instant::now();
        let mut s = Stall::new(t);
        assert!(!s.look(true, 3, 10, t));
        assert!(!s.look(true, 3, 10, at(t, STALL.as_secs() - 1)));
        assert!(s.look(true, 3, 10, at(t, STALL.as_secs())));
    }

    #[test]
    fn progress_or_nothing_owed_restarts_the_clock() {
        let t = Instant::now();
        let stall = STALL.as_secs();
        let mut s = Stall::new(t);
        assert!(!s.look(true, 3, 10, t));
        // A new batch went out just before the limit: the socket takes data, slowly.
        assert!(!s.look(true, 4, 10, at(t, stall - 1)));
        assert!(!s.look(true, 4, 10, at(t, 2 * stall - 2)));
        // Nothing owed: a full socket on a quiet bus holds nothing of Brine's.
        assert!(!s.look(true, 4, 0, at(t, 2 * stall - 1)));
        assert!(!s.look(true, 4, 10, at(t, 3 * stall - 2)));
        assert!(s.look(true, 4, 10, at(t, 3 * stall - 1)));
    }
}
