//! The stream feed: every bus event, numbered, encoded for clients once, kept in a bounded
//! replay ring, and broadcast to every open stream (`/events`, `/ws`, tornado's sockets).
//!
//! * Numbering: ids start at the process start time in microseconds and grow by one per event,
//!   so an id from an earlier Brine process is always older than anything in the ring, and a
//!   client resuming with it is told that events were lost instead of silently skipping some.
//! * Each event is encoded once, as its SSE frame; the JSON and WebSocket frames are slices of
//!   it, shared by every stream: 10 000 streams cost one serialisation per event, not 10 000.
//! * An event holds its encoded frame and its tag, not the parsed data: what a stream that
//!   falls behind keeps alive is the bytes `stream_buffer_bytes` counts, and the replay ring
//!   costs what `event_ring_bytes` says (the parsed data would double both). The rare reader
//!   of the data (rest_tornado's formatted events) parses it back from the frame, once per
//!   event.
//! * The replay ring is bounded by count, by bytes and by age, so big events cannot make it
//!   large and a quiet bus gives its memory back.
//! * The broadcast channel is bounded; a stream that falls behind it is told how far (and is
//!   disconnected by its owner). Memory does not grow with slow clients: the channel holds each
//!   event once, whatever the number of receivers.
//! * A stream with a tag filter does not take the broadcast: the feed keeps the filtered
//!   streams by the literal prefix of their globs ([`crate::events::routes`]) and queues an
//!   event only for those whose globs match its tag ([`crate::events::source`]), so a
//!   stream costs nothing for an event outside its prefix (another job's, for a stream
//!   filtered to its own) and one glob match for one inside it.
//! * Replay and subscription happen under the ring's lock, which publishing also takes, so a
//!   resuming client gets exactly the events after its `Last-Event-ID`, each once (those its
//!   filter lets through, for a filtered stream).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use salt_wire::event::Event;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::filter::TagFilter;
use super::routes::Routes;
use super::source::{Filtered, FilteredRx, Source};
use crate::py::to_python_json;

/// One numbered event with its client encodings.
#[derive(Debug)]
pub struct StreamEvent {
    /// Sequence number (the SSE `id`).
    pub id: u64,
    /// Bytes of frames the feed published up to and including this event (0 for events that
    /// were not published: replay markers).
    pub end: u64,
    /// The event's tag, as the bus gave it.
    tag: Box<str>,
    /// The bus event, parsed back from `sse` when first asked for.
    event: OnceLock<Arc<Event>>,
    /// The SSE frame; the other encodings are slices of it.
    sse: Bytes,
    /// Where `data: ` starts in `sse`.
    data_at: usize,
    ws_json: OnceLock<Utf8Bytes>,
    ws_data: OnceLock<Utf8Bytes>,
}

impl StreamEvent {
    /// A numbered event, encoded once: `id:`, rest_cherrypy's `tag:` and `data:` lines and a
    /// blank line, the data being `{"data": <data>, "tag": <tag>}` as salt-api writes it. Line
    /// breaks in a tag (events are untrusted) are escaped so they cannot end the frame.
    pub fn new(id: u64, event: Arc<Event>) -> StreamEvent {
        let tag = event.tag.replace('\r', "\\r").replace('\n', "\\n");
        let json = to_python_json(&json!({"data": event.data, "tag": event.tag}));
        let head = format!("id: {id}\ntag: {tag}\n");
        let mut out = Vec::with_capacity(head.len() + json.len() + 8);
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        StreamEvent {
            id,
            end: 0,
            tag: event.tag.as_str().into(),
            event: OnceLock::new(),
            sse: Bytes::from(out),
            data_at: head.len(),
            ws_json: OnceLock::new(),
            ws_data: OnceLock::new(),
        }
    }

    /// The same event for the replay ring: what it holds is the frame, shared with this
    /// event (and never a parsed copy a reader of the live event may have made).
    fn kept(&self) -> StreamEvent {
        StreamEvent {
            id: self.id,
            end: self.end,
            tag: self.tag.clone(),
            event: OnceLock::new(),
            sse: self.sse.clone(),
            data_at: self.data_at,
            ws_json: OnceLock::new(),
            ws_data: OnceLock::new(),
        }
    }

    /// The event's tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The bus event (tag and data), parsed back from the frame on first use.
    pub fn event(&self) -> &Arc<Event> {
        self.event.get_or_init(|| {
            // The frame is the JSON this module wrote.
            let mut v: Value = serde_json::from_slice(&self.json()).unwrap_or(Value::Null);
            Arc::new(Event {
                tag: self.tag.to_string(),
                data: v.get_mut("data").map(Value::take).unwrap_or(Value::Null),
            })
        })
    }

    /// `{"data": <data>, "tag": <tag>}`.
    pub fn json(&self) -> Bytes {
        self.sse.slice(self.data_at + 6..self.sse.len() - 2)
    }

    /// The SSE frame.
    pub fn sse(&self) -> &Bytes {
        &self.sse
    }

    /// The JSON as a WebSocket text message (rest_tornado's `/all_events` frame).
    pub fn ws_json(&self) -> &Utf8Bytes {
        self.ws_json.get_or_init(|| utf8(self.json()))
    }

    /// `data: <json>` and a blank line as a WebSocket text message (rest_cherrypy's `/ws`).
    pub fn ws_data(&self) -> &Utf8Bytes {
        self.ws_data
            .get_or_init(|| utf8(self.sse.slice(self.data_at..)))
    }

    /// Approximate memory an event holds: its frame, its tag and its bookkeeping.
    pub fn weight(&self) -> usize {
        self.sse.len() + self.tag.len() + 192
    }
}

/// Keys whose values never go out to stream clients.
const SECRET_KEYS: [&str; 2] = ["password", "token"];

/// The master fires `salt/job/<jid>/error` for a publish it refused with the whole load, so a
/// wrong password or a token sent through `/run` would reach every `/events` client (Salt's
/// salt-api relays it as is). Returns the data with `password` and `token` values replaced by
/// `<redacted>` at the top level and one level down (`kwargs`), or `None` when there is none.
pub fn redact_credentials(data: &Value) -> Option<Value> {
    fn has_secret(m: &serde_json::Map<String, Value>) -> bool {
        SECRET_KEYS.iter().any(|k| m.contains_key(*k))
    }
    let Value::Object(top) = data else {
        return None;
    };
    let nested = |v: &Value| matches!(v, Value::Object(m) if has_secret(m));
    if !has_secret(top) && !top.values().any(nested) {
        return None;
    }
    let scrub = |m: &mut serde_json::Map<String, Value>| {
        for k in SECRET_KEYS {
            if let Some(v) = m.get_mut(k) {
                *v = Value::String("<redacted>".into());
            }
        }
    };
    let mut out = top.clone();
    scrub(&mut out);
    for v in out.values_mut() {
        if let Value::Object(m) = v {
            scrub(m);
        }
    }
    Some(Value::Object(out))
}

/// Our JSON is always UTF-8; the fallback only avoids a panic path.
fn utf8(b: Bytes) -> Utf8Bytes {
    match Utf8Bytes::try_from(b.clone()) {
        Ok(u) => u,
        Err(_) => Utf8Bytes::from(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// What a (re)connecting stream starts with.
pub struct Resume {
    /// Events after the client's last id, oldest first.
    pub replay: Vec<Arc<StreamEvent>>,
    /// `Some((last_seen, oldest_kept))` when events between them are no longer available.
    pub lost: Option<(u64, u64)>,
    /// Everything from now on (what the filter lets through, for a filtered stream).
    pub rx: Source,
}

/// The feed (see the module notes).
pub struct Feed {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<StreamEvent>>,
    /// How many events a stream may owe: the broadcast's size, and each filtered stream's queue.
    channel: usize,
    /// The id of the newest event handed out (streams measure how far behind they are).
    last_id: AtomicU64,
    /// Bytes of frames handed out so far (the [`StreamEvent::end`] of the newest event).
    published_bytes: AtomicU64,
    /// Events and bytes in the ring, for `/stats` (which must not wait for the ring's lock:
    /// publishing holds it while it encodes an event and wakes every stream).
    kept_events: AtomicUsize,
    kept_bytes: AtomicUsize,
    /// Filtered streams, as of the last publish, subscription or sweep (for `/stats` too;
    /// a closed one counts until an event of its prefix or the next sweep, at most a second
    /// later, drops it).
    filtered_open: AtomicUsize,
}

struct Ring {
    /// Kept events with the time they came.
    events: VecDeque<(Instant, Arc<StreamEvent>)>,
    capacity: usize,
    max_bytes: usize,
    /// How long an event is kept (`None`: until count or bytes push it out).
    max_age: Option<Duration>,
    bytes: usize,
    next_id: u64,
    /// The filtered streams (see the module notes).
    filtered: Routes,
}

impl Ring {
    fn expire(&mut self, now: Instant) {
        let Some(age) = self.max_age else { return };
        while let Some((at, _)) = self.events.front() {
            if now.saturating_duration_since(*at) <= age {
                break;
            }
            if let Some((_, old)) = self.events.pop_front() {
                self.bytes -= old.weight();
            }
        }
    }
}

/// The first id of this process.
fn first_id() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

impl Feed {
    /// A feed keeping the last `ring` events (at most `ring_bytes` of them) for resumption,
    /// with a broadcast channel of `channel` events.
    pub fn new(ring: usize, ring_bytes: usize, channel: usize) -> Feed {
        let (tx, _) = broadcast::channel(channel.max(16));
        let first = first_id();
        Feed {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(ring.min(1 << 16)),
                capacity: ring,
                max_bytes: ring_bytes,
                max_age: None,
                bytes: 0,
                next_id: first,
                filtered: Routes::default(),
            }),
            tx,
            channel: channel.max(16),
            last_id: AtomicU64::new(first.saturating_sub(1)),
            published_bytes: AtomicU64::new(0),
            kept_events: AtomicUsize::new(0),
            kept_bytes: AtomicUsize::new(0),
            filtered_open: AtomicUsize::new(0),
        }
    }

    /// Numbers an event, keeps it for resumption and hands it to every stream.
    pub fn publish(&self, event: Arc<Event>) {
        let event = match redact_credentials(&event.data) {
            Some(data) => Arc::new(Event {
                tag: event.tag.clone(),
                data,
            }),
            None => event,
        };
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut ev = StreamEvent::new(ring.next_id, event);
        ring.next_id += 1;
        // Publishing holds the ring's lock, so this read and the store below do not race.
        ev.end = self.published_bytes.load(Ordering::Relaxed) + ev.sse().len() as u64;
        let ev = Arc::new(ev);
        let now = Instant::now();
        if ring.capacity > 0 && ev.weight() <= ring.max_bytes {
            ring.bytes += ev.weight();
            ring.events.push_back((now, Arc::new(ev.kept())));
            while ring.events.len() > ring.capacity || ring.bytes > ring.max_bytes {
                match ring.events.pop_front() {
                    Some((_, old)) => ring.bytes -= old.weight(),
                    None => break,
                }
            }
        }
        ring.expire(now);
        self.count(&ring);
        self.last_id.store(ev.id, Ordering::Relaxed);
        self.published_bytes.store(ev.end, Ordering::Relaxed);
        ring.filtered.offer(&ev);
        self.filtered_open
            .store(ring.filtered.len(), Ordering::Relaxed);
        // No receivers is fine.
        let _ = self.tx.send(ev);
    }

    /// The id of the newest event.
    pub fn last_id(&self) -> u64 {
        self.last_id.load(Ordering::Relaxed)
    }

    /// Bytes of frames published so far.
    pub fn published_bytes(&self) -> u64 {
        self.published_bytes.load(Ordering::Relaxed)
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StreamEvent>> {
        self.tx.subscribe()
    }

    /// Keeps events for at most `age` (zero: no age limit).
    pub fn set_max_age(&self, age: Duration) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.max_age = (!age.is_zero()).then_some(age);
    }

    /// Drops kept events older than the age limit (publishing does it too; this is for a quiet
    /// bus, so that its memory goes back).
    pub fn expire(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.expire(Instant::now());
        self.count(&ring);
    }

    /// Forgets the filtered streams that closed since an event last reached their bucket
    /// (the hub's ticker calls it each second, so `/stats` counts open streams).
    pub fn sweep(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.filtered.sweep();
        self.filtered_open
            .store(ring.filtered.len(), Ordering::Relaxed);
    }

    /// Records the ring's size for [`Feed::kept`] (called with the lock held).
    fn count(&self, ring: &Ring) {
        self.kept_events.store(ring.events.len(), Ordering::Relaxed);
        self.kept_bytes.store(ring.bytes, Ordering::Relaxed);
    }

    /// Events and bytes kept for resumption.
    pub fn kept(&self) -> (usize, usize) {
        (
            self.kept_events.load(Ordering::Relaxed),
            self.kept_bytes.load(Ordering::Relaxed),
        )
    }

    /// Subscribes, replaying what came after `last_id` if the ring still has it; with a
    /// filter, only what it lets through, then and from now on.
    pub fn resume(&self, last_id: Option<u64>, filter: Option<TagFilter>) -> Resume {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.expire(Instant::now());
        let rx = match filter {
            Some(f) => Source::Filtered(self.register(&mut ring, f)),
            None => Source::All(self.tx.subscribe()),
        };
        let Some(last) = last_id else {
            return Resume {
                replay: Vec::new(),
                lost: None,
                rx,
            };
        };
        let oldest = ring
            .events
            .front()
            .map(|(_, e)| e.id)
            .unwrap_or(ring.next_id);
        let lost = (last + 1 < oldest && last + 1 < ring.next_id).then_some((last, oldest));
        let wanted = |e: &StreamEvent| rx.filtered().is_none_or(|f| f.wants(e.tag()));
        let replay = ring
            .events
            .iter()
            .filter(|(_, e)| e.id > last && wanted(e.as_ref()))
            .map(|(_, e)| e.clone())
            .collect();
        Resume { replay, lost, rx }
    }

    /// The tags of the kept events after `after` that start with `prefix` (what a stream that
    /// subscribed at `after` has in its queue, or will have, unless the ring dropped it since).
    pub fn kept_tags_after(&self, after: u64, prefix: &str) -> Vec<String> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.events
            .iter()
            .rev()
            .take_while(|(_, e)| e.id > after)
            .filter(|(_, e)| e.tag().starts_with(prefix))
            .map(|(_, e)| e.tag().to_owned())
            .collect()
    }

    /// A filtered queue of the events from now on (a stream that starts filtering).
    pub fn filtered(&self, filter: TagFilter) -> FilteredRx {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        self.register(&mut ring, filter)
    }

    /// Replaces a filtered stream's filter (a WebSocket's `subscribe`): from the next event
    /// on, it gets what the new filter lets through; what is queued stays.
    pub fn retune(&self, stream: &Arc<Filtered>, filter: TagFilter) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.filtered.retune(stream, filter);
    }

    /// Adds a filtered stream (with the ring's lock held).
    fn register(&self, ring: &mut Ring, filter: TagFilter) -> FilteredRx {
        let (entry, rx) = Filtered::new(filter, self.channel);
        ring.filtered.add(entry);
        self.filtered_open
            .store(ring.filtered.len(), Ordering::Relaxed);
        rx
    }

    /// Filtered streams open, as of the last event or subscription.
    pub fn filtered_streams(&self) -> usize {
        self.filtered_open.load(Ordering::Relaxed)
    }

    /// The id the next event will get.
    #[cfg(test)]
    pub fn next_id(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).next_id
    }
}

/// The marker a resuming stream gets when the events it missed are gone.
pub fn lost_marker(last_seen: u64, oldest_kept: u64) -> Event {
    Event {
        tag: "brine/events/lost".into(),
        data: json!({"last_event_id": last_seen, "oldest_available": oldest_kept,
                     "message": "events between these ids are no longer available"}),
    }
}

/// Reads a `Last-Event-ID` value.
pub fn parse_last_id(v: &str) -> Option<u64> {
    v.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::source::Recv;

    #[test]
    fn credentials_in_events_are_redacted_before_streams_see_them() {
        // As the master fires it for a refused publish.
        let error = json!({"fun": "test.ping", "kwargs": {"client": "local", "username": "u",
            "password": "hunter2", "eauth": "pam"}, "error": {"name": "AuthenticationError"}});
        let out = redact_credentials(&error).unwrap_or(Value::Null);
        assert_eq!(out["kwargs"]["password"], json!("<redacted>"));
        assert_eq!(out["kwargs"]["username"], json!("u"));
        assert_eq!(out["fun"], json!("test.ping"));
        let top = json!({"token": "abc", "x": 1});
        assert_eq!(
            redact_credentials(&top),
            Some(json!({"token": "<redacted>", "x": 1}))
        );
        assert_eq!(
            redact_credentials(&json!({"jid": "1", "return": true})),
            None
        );
        assert_eq!(redact_credentials(&json!("password")), None);
        let feed = Feed::new(10, 1 << 20, 16);
        let mut rx = feed.subscribe();
        feed.publish(Arc::new(Event {
            tag: "salt/job/1/error".into(),
            data: error,
        }));
        let got = rx.try_recv().map(|e| e.json()).unwrap_or_default();
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(
            !text.contains("hunter2") && text.contains("<redacted>"),
            "{text}"
        );
    }

    fn got(r: Recv) -> Option<u64> {
        match r {
            Recv::Event(e) => Some(e.id),
            _ => None,
        }
    }

    fn ev(n: u64) -> Arc<Event> {
        Arc::new(Event {
            tag: format!("t/{n}"),
            data: json!({"n": n}),
        })
    }

    #[test]
    fn encodings_are_salt_apis() {
        let e = StreamEvent::new(
            7,
            Arc::new(Event {
                tag: "salt/job/1/new".into(),
                data: json!({"jid": "1", "x": [1, 2]}),
            }),
        );
        assert_eq!(
            &e.json()[..],
            br#"{"data": {"jid": "1", "x": [1, 2]}, "tag": "salt/job/1/new"}"#
        );
        assert_eq!(
            &e.sse()[..],
            b"id: 7\ntag: salt/job/1/new\ndata: {\"data\": {\"jid\": \"1\", \"x\": [1, 2]}, \"tag\": \"salt/job/1/new\"}\n\n"
        );
        let evil = StreamEvent::new(
            8,
            Arc::new(Event {
                tag: "a\ndata: x".into(),
                data: Value::Null,
            }),
        );
        let text = String::from_utf8_lossy(evil.sse()).into_owned();
        assert_eq!(text.matches('\n').count(), 4, "{text}");
    }

    #[tokio::test]
    async fn resume_replays_exactly_the_missed_events() {
        let feed = Feed::new(4, 1 << 20, 16);
        let base = feed.next_id();
        for n in 0..3 {
            feed.publish(ev(n));
        }
        // Seen the first; missed the next two.
        let mut r = feed.resume(Some(base), None);
        assert_eq!(
            r.replay.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![base + 1, base + 2]
        );
        assert_eq!(r.lost, None);
        feed.publish(ev(3));
        assert_eq!(got(r.rx.recv().await), Some(base + 3));
        // Up to date: nothing to replay.
        let r = feed.resume(Some(base + 3), None);
        assert!(r.replay.is_empty() && r.lost.is_none());
    }

    #[tokio::test]
    async fn streamed_events_hold_only_their_frame_and_give_their_data_back() {
        let feed = Feed::new(0, 0, 16);
        let mut rx = feed.subscribe();
        let data = json!({"jid": "1", "return": "\u{e9}t\u{e9}", "n": [1, -2, 2.5, 1e300, null]});
        feed.publish(Arc::new(Event {
            tag: "salt/job/1/ret/m1".into(),
            data: data.clone(),
        }));
        let live = rx.recv().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            live.event.get().is_none(),
            "a streamed event holds no parsed data"
        );
        assert_eq!(live.tag(), "salt/job/1/ret/m1");
        assert_eq!(live.event().tag, "salt/job/1/ret/m1");
        assert_eq!(live.event().data, data);
    }

    #[test]
    fn kept_events_hold_only_their_frame_and_give_their_data_back() {
        let feed = Feed::new(4, 1 << 20, 16);
        let base = feed.next_id();
        let data = json!({"jid": "1", "return": {"a": [1, 2.5, null, "x\ny"]}, "success": true});
        feed.publish(Arc::new(Event {
            tag: "salt/job/1/ret/m1".into(),
            data: data.clone(),
        }));
        let r = feed.resume(Some(base - 1), None);
        assert_eq!(r.replay.len(), 1);
        let kept = &r.replay[0];
        assert!(kept.event.get().is_none(), "the ring keeps no parsed data");
        assert_eq!(kept.event().tag, "salt/job/1/ret/m1");
        assert_eq!(kept.event().data, data);
        assert_eq!(feed.kept(), (1, kept.weight()));
    }

    #[test]
    fn kept_events_expire() {
        let feed = Feed::new(100, 1 << 20, 16);
        feed.set_max_age(Duration::from_millis(50));
        let base = feed.next_id();
        feed.publish(ev(0));
        feed.publish(ev(1));
        assert_eq!(feed.kept().0, 2);
        std::thread::sleep(Duration::from_millis(80));
        feed.expire();
        assert_eq!(feed.kept(), (0, 0));
        // A client that saw the first one is told the second is gone.
        let r = feed.resume(Some(base), None);
        assert!(r.replay.is_empty());
        assert_eq!(r.lost, Some((base, base + 2)));
        feed.publish(ev(2));
        let r = feed.resume(Some(base), None);
        assert_eq!(r.lost, Some((base, base + 2)));
        assert_eq!(r.replay.len(), 1);
    }

    #[test]
    fn ids_older_than_the_ring_are_reported_lost() {
        let feed = Feed::new(2, 1 << 20, 16);
        let base = feed.next_id();
        for n in 0..5 {
            feed.publish(ev(n));
        }
        let r = feed.resume(Some(base), None);
        assert_eq!(r.lost, Some((base, base + 3)));
        assert_eq!(r.replay.len(), 2);
        // An id from an earlier process (smaller than anything of this one).
        let r = feed.resume(Some(12), None);
        assert!(r.lost.is_some());
    }

    fn filter(globs: &[&str]) -> TagFilter {
        TagFilter::new(globs.iter().map(|g| g.to_string()).collect())
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[tokio::test]
    async fn a_filtered_stream_gets_only_its_events_replayed_and_live() {
        let feed = Feed::new(8, 1 << 20, 16);
        let base = feed.next_id();
        for n in 0..4 {
            feed.publish(ev(n));
        }
        // Resuming after the first: of the three missed, only t/2 passes.
        let mut r = feed.resume(Some(base), Some(filter(&["t/2", "t/5"])));
        assert_eq!(
            r.replay.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![base + 2]
        );
        for n in 4..7 {
            feed.publish(ev(n));
        }
        assert_eq!(got(r.rx.recv().await), Some(base + 5));
        assert!(r.rx.try_recv().is_none());
        assert_eq!(r.rx.filtered().map(|f| f.owed()), Some((0, 0)));
        // A new filter takes effect with the next event.
        if let Some(f) = r.rx.filtered() {
            feed.retune(f, filter(&["t/*"]));
        }
        feed.publish(ev(7));
        assert_eq!(r.rx.try_recv().map(|e| e.id), Some(base + 7));
        assert_eq!(feed.filtered_streams(), 1);
        drop(r);
        feed.publish(ev(8));
        assert_eq!(feed.filtered_streams(), 0);
        // A stream no event reaches is forgotten at the next sweep.
        let quiet = feed.filtered(filter(&["elsewhere/*"]));
        feed.publish(ev(9));
        assert_eq!(feed.filtered_streams(), 1);
        drop(quiet);
        feed.publish(ev(10));
        assert_eq!(feed.filtered_streams(), 1);
        feed.sweep();
        assert_eq!(feed.filtered_streams(), 0);
    }

    #[tokio::test]
    async fn a_filtered_stream_that_falls_a_whole_queue_behind_is_told() {
        let feed = Feed::new(0, 0, 16);
        let rx = feed.filtered(filter(&["t/*"]));
        for n in 0..16 {
            feed.publish(ev(n));
        }
        let owed = rx.sub.owed();
        assert_eq!(owed.0, 16);
        assert!(owed.1 > 0);
        assert!(!rx.sub.overflowed());
        feed.publish(ev(16));
        assert!(rx.sub.overflowed());
        let mut source = Source::Filtered(rx);
        assert!(matches!(source.recv().await, Recv::Lagged(_)));
    }
}
