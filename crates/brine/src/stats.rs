//! Counters Brine keeps about itself (streams now; `/stats` and `/metrics` read them).

use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Process-wide counters.
#[derive(Default)]
pub struct Stats {
    /// Event streams open right now (SSE and WebSocket).
    pub streams_open: AtomicUsize,
    /// Streams disconnected because their client did not keep up.
    pub streams_dropped_slow: AtomicU64,
}
