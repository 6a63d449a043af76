//! Coalescing of identical questions to the master: callers that ask the same thing with the
//! same credentials while an answer is on its way share that one request, and the answer is
//! reused for a short time. Used where many requests ask the same at once (a burst of `local`
//! calls whose minions did not return all ask `minions.connected`), so a burst costs the
//! master one request instead of one per caller. Keys are SHA-256 digests of the question and
//! the credentials (the map never holds a password or token); the map is bounded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use sha2::{Digest, Sha256};

/// Entries kept at most (expired and finished ones are dropped first).
const MAX_ENTRIES: usize = 4096;

enum Entry<V: Clone> {
    Pending(Shared<BoxFuture<'static, V>>),
    Ready(Instant, V),
}

/// One kind of coalesced question with answers of type `V`.
pub struct Coalescer<V: Clone> {
    entries: Mutex<HashMap<[u8; 32], Entry<V>>>,
    ttl: Duration,
}

/// The key of a question: a digest of its parts (e.g. function name and credentials).
pub fn key(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

impl<V: Clone + Send + Sync + 'static> Coalescer<V> {
    /// Answers are reused for `ttl` after they arrive.
    pub fn new(ttl: Duration) -> Coalescer<V> {
        Coalescer {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The answer to the question `key`: a fresh one, the one in flight, or `ask()`'s.
    pub async fn get<F, Fut>(&self, key: [u8; 32], ask: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let shared = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(&key) {
                Some(Entry::Ready(at, v)) if at.elapsed() < self.ttl => return v.clone(),
                Some(Entry::Pending(f)) => f.clone(),
                _ => {
                    if entries.len() >= MAX_ENTRIES {
                        let ttl = self.ttl;
                        entries
                            .retain(|_, e| matches!(e, Entry::Ready(at, _) if at.elapsed() < ttl));
                        if entries.len() >= MAX_ENTRIES {
                            entries.clear();
                        }
                    }
                    let f = ask().boxed().shared();
                    entries.insert(key, Entry::Pending(f.clone()));
                    f
                }
            }
        };
        let v = shared.await;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(entries.get(&key), Some(Entry::Pending(_))) {
            entries.insert(key, Entry::Ready(Instant::now(), v.clone()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn concurrent_callers_share_one_request_and_keys_are_separate() {
        let c: Arc<Coalescer<usize>> = Arc::new(Coalescer::new(Duration::from_millis(200)));
        let asked = Arc::new(AtomicUsize::new(0));
        let ask = |asked: Arc<AtomicUsize>| {
            move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                asked.fetch_add(1, Ordering::SeqCst) + 1
            }
        };
        let k = key(&[b"minions.connected", b"token-a"]);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (c, asked) = (c.clone(), asked.clone());
                tokio::spawn(async move { c.get(k, ask(asked)).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.ok(), Some(1));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // Within the ttl the answer is reused; another key asks on its own.
        assert_eq!(c.get(k, ask(asked.clone())).await, 1);
        let other = key(&[b"minions.connected", b"token-b"]);
        assert_eq!(c.get(other, ask(asked.clone())).await, 2);
        // After the ttl the question is asked again.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(c.get(k, ask(asked.clone())).await, 3);
        // Parts are length-prefixed: ("ab", "c") is not ("a", "bc").
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
    }
}
