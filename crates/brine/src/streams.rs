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
//! stream that owes events and has delivered none for [`STALL`], or that is as far behind as
//! the feed buffers (`brine: {stream_buffer}`), is disconnected through the connection's kill
//! switch, with a log line and a counter, so it cannot hold memory or slow anyone else. The
//! watchdog also ends streams whose end (expiry, revocation, stop) their stalled connection
//! would never see. The bus reader never waits on a stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use crate::app::App;
use crate::feed::{Resume, StreamEvent};

/// Interval of keep-alive frames on an idle stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a stream may owe events without delivering any before it counts as stalled.
pub const STALL: Duration = Duration::from_secs(5);
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
    rx: broadcast::Receiver<Arc<StreamEvent>>,
    /// Frames rendered and not yet handed out (the preamble, a replay, an event's few frames).
    pending: VecDeque<R::Frame>,
    /// The id of the last event taken from the feed (the watchdog reads it).
    delivered: Arc<AtomicU64>,
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
    fn take(&mut self, ev: &StreamEvent) {
        self.delivered.store(ev.id, Ordering::Relaxed);
        self.render.event(ev, &mut self.pending);
    }

    /// The next batch of frames, or `None` when the stream has ended.
    async fn next_batch(&mut self) -> Option<Vec<R::Frame>> {
        while self.pending.is_empty() && !self.ended {
            tokio::select! {
                biased;
                _ = &mut self.stopping => {
                    tracing::debug!(user = %self.owner.user, kind = self.owner.kind, "Brine is stopping; stream closed");
                    self.ended = true;
                }
                got = self.rx.recv() => match got {
                    Ok(ev) => self.take(&ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        drop_slow(&self.app, &self.owner, &format!("{n} events behind the bus"));
                        self.ended = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => self.ended = true,
                },
                _ = &mut self.check => {
                    let now = Instant::now();
                    self.check.as_mut().reset(now + CHECK);
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
            match self.rx.try_recv() {
                Ok(ev) => {
                    let before = self.pending.len();
                    self.take(&ev);
                    size += self.pending.iter().skip(before).map(R::size).sum::<usize>();
                }
                Err(broadcast::error::TryRecvError::Empty) => {
                    drained = true;
                    break;
                }
                // A lag is found (and handled) by the next wait.
                Err(_) => break,
            }
        }
        let now = Instant::now();
        self.last_frame = now;
        if drained {
            self.hold = Some(now + COALESCE);
        }
        Some(self.pending.drain(..).collect())
    }
}

/// Watches one stream from outside its connection (see the module notes); ends with it.
async fn watchdog(
    app: Arc<App>,
    owner: Arc<Owner>,
    delivered: Arc<AtomicU64>,
    expires: Instant,
    gone: CancellationToken,
) {
    let limit = app.settings.brine.stream_buffer as u64;
    let mut tick = tokio::time::interval(CHECK);
    tick.reset();
    let (mut seen, mut since) = (delivered.load(Ordering::Relaxed), Instant::now());
    let mut should_have_ended: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = gone.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let at = delivered.load(Ordering::Relaxed);
        let behind = app.hub.feed().last_id().saturating_sub(at);
        if at != seen || behind == 0 {
            (seen, since) = (at, now);
        }
        if behind >= limit {
            drop_slow(&app, &owner, &format!("{behind} events behind the bus"));
            return;
        }
        if now.duration_since(since) >= STALL {
            drop_slow(
                &app,
                &owner,
                &format!("{behind} events owed, none taken for {} s", STALL.as_secs()),
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
/// then every event of the feed, in batches of frames; `None` when it ends.
pub fn open<R: Render>(
    app: Arc<App>,
    owner: Owner,
    resume: Resume,
    mut render: R,
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
    if let Some((seen, oldest)) = lost {
        // Numbered just before the oldest kept event, so a reconnect with this id replays
        // everything that is still available.
        let marker = StreamEvent::new(
            oldest.saturating_sub(1),
            Arc::new(crate::feed::lost_marker(seen, oldest)),
        );
        render.event(&marker, &mut pending);
    }
    for ev in replay {
        last = last.max(ev.id);
        render.event(&ev, &mut pending);
    }
    let owner = Arc::new(owner);
    let delivered = Arc::new(AtomicU64::new(last));
    let gone = CancellationToken::new();
    let now = Instant::now();
    let expires = now + until_expiry(owner.expire);
    tokio::spawn(watchdog(
        app.clone(),
        owner.clone(),
        delivered.clone(),
        expires,
        gone.clone(),
    ));
    let reader = Reader {
        expires,
        check: Box::pin(tokio::time::sleep(CHECK)),
        last_frame: now,
        stopping: Box::pin(app.stopping.clone().cancelled_owned()),
        hold: None,
        _open: OpenGuard(app.clone()),
        app,
        owner,
        render,
        rx,
        pending,
        delivered,
        ended: false,
        _watchdog: gone.drop_guard(),
    };
    futures_util::stream::unfold(reader, |mut r| async move {
        let batch = r.next_batch().await?;
        Some((batch, r))
    })
}

/// rest_cherrypy's SSE framing (with an `id:` line for `Last-Event-ID`).
pub struct Sse;

impl Render for Sse {
    type Frame = Bytes;

    fn preamble(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b"retry: 400\n"))
    }

    fn event(&mut self, ev: &StreamEvent, out: &mut VecDeque<Bytes>) {
        out.push_back(ev.sse().clone());
    }

    fn keepalive(&self) -> Option<Bytes> {
        // An SSE comment: every client ignores it, proxies see traffic.
        Some(Bytes::from_static(b": keep-alive\n\n"))
    }

    fn size(frame: &Bytes) -> usize {
        frame.len()
    }
}
