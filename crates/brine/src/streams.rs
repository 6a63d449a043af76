//! The life of one event stream (SSE or WebSocket): reading the feed, handing frames to the
//! connection through a small bounded queue, keep-alives, and the reasons a stream ends.
//!
//! A stream ends when the client goes away, when its token expires or is revoked (checked every
//! second, so a logout on any Brine instance ends the streams of that token), when Brine stops
//! (SIGTERM: the stream's body ends cleanly, a WebSocket gets 1001), or when the client
//! cannot keep up: its queue is full or it fell further behind the feed than the feed buffers.
//! A client that stops reading is disconnected (its connection is dropped through the
//! connection's kill switch, so it cannot hold memory or slow anyone else), with a log line and
//! a counter. The bus reader never waits on a stream.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::feed::{Resume, StreamEvent};

/// Frames one stream may have queued before it counts as not keeping up.
pub const STREAM_QUEUE: usize = 256;
/// Interval of keep-alive frames on an idle stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// How a stream renders what it sends.
pub trait Render: Send + 'static {
    /// The frame type the connection writes.
    type Frame: Send + 'static;
    /// The first frame, if any (SSE's `retry:` line).
    fn preamble(&self) -> Option<Self::Frame>;
    /// The frames one event becomes (none, one, or a few), appended to `out`.
    fn event(&mut self, ev: &StreamEvent, out: &mut Vec<Self::Frame>);
    /// A keep-alive frame.
    fn keepalive(&self) -> Option<Self::Frame>;
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

/// Starts a stream task; returns the queue the connection reads frames from.
pub fn spawn<R: Render>(
    app: Arc<App>,
    owner: Owner,
    resume: Resume,
    render: R,
) -> mpsc::Receiver<R::Frame> {
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    app.stats.streams_open.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(run(app, owner, resume, render, tx));
    rx
}

async fn run<R: Render>(
    app: Arc<App>,
    owner: Owner,
    resume: Resume,
    mut render: R,
    tx: mpsc::Sender<R::Frame>,
) {
    let _open = OpenGuard(app.clone());
    let Resume {
        replay,
        lost,
        mut rx,
    } = resume;
    if let Some(first) = render.preamble() {
        if tx.send(first).await.is_err() {
            return;
        }
    }
    let mut frames = Vec::new();
    if let Some((last, oldest)) = lost {
        // Numbered just before the oldest kept event, so a reconnect with this id replays
        // everything that is still available.
        let marker = StreamEvent::new(
            oldest.saturating_sub(1),
            Arc::new(crate::feed::lost_marker(last, oldest)),
        );
        render.event(&marker, &mut frames);
    }
    for ev in replay {
        render.event(&ev, &mut frames);
    }
    for f in frames.drain(..) {
        if tx.send(f).await.is_err() {
            return;
        }
    }
    let expiry = tokio::time::sleep(until_expiry(owner.expire));
    tokio::pin!(expiry);
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    let mut revocation = tokio::time::interval(Duration::from_secs(1));
    let slow = |why: String| {
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
    };
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Ok(ev) => {
                    render.event(&ev, &mut frames);
                    for frame in frames.drain(..) {
                        match tx.try_send(frame) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                slow(format!("{STREAM_QUEUE} frames queued"));
                                return;
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    slow(format!("{n} events behind the bus"));
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = &mut expiry => {
                tracing::info!(user = %owner.user, kind = owner.kind, "token expired; stream closed");
                return;
            }
            _ = revocation.tick() => {
                if app.auth.is_revoked(&owner.token) {
                    tracing::info!(user = %owner.user, kind = owner.kind, "token revoked; stream closed");
                    return;
                }
            }
            _ = keepalive.tick() => {
                if let Some(f) = render.keepalive() {
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(f) {
                        return;
                    }
                }
            }
            _ = tx.closed() => return,
            _ = app.stopping.cancelled() => {
                tracing::debug!(user = %owner.user, kind = owner.kind, "Brine is stopping; stream closed");
                return;
            }
        }
    }
}

/// rest_cherrypy's SSE framing (with an `id:` line for `Last-Event-ID`).
pub struct Sse;

impl Render for Sse {
    type Frame = Bytes;

    fn preamble(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b"retry: 400\n"))
    }

    fn event(&mut self, ev: &StreamEvent, out: &mut Vec<Bytes>) {
        out.push(ev.sse().clone());
    }

    fn keepalive(&self) -> Option<Bytes> {
        // An SSE comment: every client ignores it, proxies see traffic.
        Some(Bytes::from_static(b": keep-alive\n\n"))
    }
}
