//! Which filtered streams an event is offered to. Each filtered stream sits in one bucket,
//! keyed by the literal text all its globs start with ([`TagFilter::prefix`]); an event is
//! offered to the buckets whose key its tag starts with, one hash lookup per distinct key
//! length. 1 000 streams each filtered to its own job (`salt/job/<jid>/*`) cost one lookup per
//! event, not 1 000 glob matches; only the streams of a matching bucket match their globs.
//!
//! A closed stream leaves its bucket when an event reaches the bucket, and at every
//! [`Routes::sweep`] (the hub's ticker sweeps each second).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::feed::StreamEvent;
use super::filter::TagFilter;
use super::source::Filtered;

/// The filtered streams, by prefix (see the module notes).
#[derive(Default)]
pub struct Routes {
    by_prefix: HashMap<Box<str>, Vec<Arc<Filtered>>>,
    /// The lengths of the keys of `by_prefix`, with how many keys have each.
    lens: BTreeMap<usize, usize>,
    /// Streams in all buckets.
    count: usize,
}

impl Routes {
    /// Adds a stream, in the bucket of its filter's prefix.
    pub fn add(&mut self, f: Arc<Filtered>) {
        let key = f.prefix();
        match self.by_prefix.get_mut(key.as_str()) {
            Some(bucket) => bucket.push(f),
            None => {
                *self.lens.entry(key.len()).or_default() += 1;
                self.by_prefix.insert(key.into_boxed_str(), vec![f]);
            }
        }
        self.count += 1;
    }

    /// Offers an event to every stream whose bucket key its tag starts with (each stream then
    /// matches its globs); closed streams met on the way leave.
    pub fn offer(&mut self, ev: &Arc<StreamEvent>) {
        let tag = ev.tag();
        let lens: Vec<usize> = self
            .lens
            .keys()
            .copied()
            .take_while(|&l| l <= tag.len())
            .filter(|&l| tag.is_char_boundary(l))
            .collect();
        for l in lens {
            let key = &tag[..l];
            let Some(bucket) = self.by_prefix.get_mut(key) else {
                continue;
            };
            let emptied = retain(bucket, &mut self.count, |f| {
                let open = !f.is_closed();
                if open {
                    f.offer(ev);
                }
                open
            });
            if emptied {
                self.remove_key(key);
            }
        }
    }

    /// Replaces a stream's filter (a WebSocket's `subscribe`), moving it to its new bucket.
    pub fn retune(&mut self, f: &Arc<Filtered>, filter: TagFilter) {
        let old = f.prefix();
        if let Some(bucket) = self.by_prefix.get_mut(old.as_str()) {
            if retain(bucket, &mut self.count, |g| !Arc::ptr_eq(g, f)) {
                self.remove_key(&old);
            }
        }
        f.set_filter(filter);
        self.add(f.clone());
    }

    /// Drops every closed stream.
    pub fn sweep(&mut self) {
        let mut emptied = Vec::new();
        for (key, bucket) in self.by_prefix.iter_mut() {
            if retain(bucket, &mut self.count, |f| !f.is_closed()) {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.remove_key(&key);
        }
    }

    /// Streams held (closed ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.count
    }

    fn remove_key(&mut self, key: &str) {
        if self.by_prefix.remove(key).is_none() {
            return;
        }
        if let Some(n) = self.lens.get_mut(&key.len()) {
            *n -= 1;
            if *n == 0 {
                self.lens.remove(&key.len());
            }
        }
    }
}

/// Keeps the streams of `bucket` that `keep` accepts, taking the others off `count`; true
/// when the bucket is left empty.
fn retain(
    bucket: &mut Vec<Arc<Filtered>>,
    count: &mut usize,
    keep: impl FnMut(&Arc<Filtered>) -> bool,
) -> bool {
    let before = bucket.len();
    bucket.retain(keep);
    *count -= before - bucket.len();
    bucket.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::source::Source;
    use salt_wire::event::Event;
    use serde_json::json;

    fn filter(globs: &[&str]) -> TagFilter {
        TagFilter::new(globs.iter().map(|g| g.to_string()).collect())
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn ev(tag: &str) -> Arc<StreamEvent> {
        Arc::new(StreamEvent::new(
            1,
            Arc::new(Event {
                tag: tag.into(),
                data: json!({}),
            }),
        ))
    }

    #[test]
    fn an_event_reaches_exactly_the_streams_whose_globs_match() {
        let mut routes = Routes::default();
        let mut open = |globs: &[&str]| {
            let (f, rx) = Filtered::new(filter(globs), 8);
            routes.add(f);
            Source::Filtered(rx)
        };
        let mut own_rx = open(&["salt/job/1/*"]);
        let mut other_rx = open(&["salt/job/2/*"]);
        let mut any_rx = open(&["*/ret/*"]);
        let mut two_rx = open(&["salt/job/1/new", "salt/auth"]);
        assert_eq!(routes.len(), 4);
        routes.offer(&ev("salt/job/1/ret/m1"));
        routes.offer(&ev("salt/job/1/new"));
        routes.offer(&ev("salt/auth"));
        routes.offer(&ev("salt/job/12/new"));
        routes.offer(&ev("é"));
        let tags = |rx: &mut Source| {
            let mut out = Vec::new();
            while let Some(e) = rx.try_recv() {
                out.push(e.tag().to_owned());
            }
            out
        };
        assert_eq!(tags(&mut own_rx), ["salt/job/1/ret/m1", "salt/job/1/new"]);
        assert!(tags(&mut other_rx).is_empty());
        assert_eq!(tags(&mut any_rx), ["salt/job/1/ret/m1"]);
        assert_eq!(tags(&mut two_rx), ["salt/job/1/new", "salt/auth"]);
    }

    #[test]
    fn retune_moves_a_stream_and_closed_streams_leave() {
        let mut routes = Routes::default();
        let (a, a_rx) = Filtered::new(filter(&["x/*"]), 8);
        let (b, b_rx) = Filtered::new(filter(&["x/*"]), 8);
        routes.add(a.clone());
        routes.add(b);
        routes.retune(&a, filter(&["y/*"]));
        routes.offer(&ev("x/1"));
        routes.offer(&ev("y/1"));
        let mut a_rx = Source::Filtered(a_rx);
        assert_eq!(
            a_rx.try_recv().map(|e| e.tag().to_owned()),
            Some("y/1".into())
        );
        assert!(a_rx.try_recv().is_none());
        assert_eq!(routes.len(), 2);
        drop(b_rx);
        routes.offer(&ev("x/2"));
        assert_eq!(routes.len(), 1);
        drop(a_rx);
        drop(a);
        routes.sweep();
        assert_eq!(routes.len(), 0);
        assert!(routes.lens.is_empty() && routes.by_prefix.is_empty());
    }
}
