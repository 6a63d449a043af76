//! `salt-wire`: the client side of an unmodified Salt master's own sockets, with no HTTP in it.
//!
//! * [`envelope`]: the clear request envelope and the master's reply shapes;
//! * [`reqchan`] and [`pool`]: the request channel (ZeroMQ or `tcp` transport) and a bounded,
//!   self-healing pool of connections to it; [`zmtp`]: the ZeroMQ wire protocol subset used;
//! * [`event`]: reading and firing events on the master's event bus;
//! * [`framing`]: msgpack stream framing shared by the socket protocols;
//! * [`value`]: msgpack ↔ JSON conversion with Salt's decoding rules;
//! * [`yaml`]: Salt's YAML 1.1 dialect, with limits for untrusted input;
//! * [`config`]: master configuration discovery (includes, `root_dir`, `sock_dir` rewrite);
//! * [`fnmatch`]: Salt's glob (Python's `fnmatch.fnmatchcase`).
//!
//! The protocol notes these modules follow are in the repository's `spec/` references.

pub mod config;
pub mod envelope;
pub mod event;
pub mod fnmatch;
pub mod framing;
pub mod pool;
pub mod reqchan;
pub mod value;
pub mod yaml;
pub mod zmtp;

/// Errors talking to the master.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    /// The master is not reachable (connection refused, socket missing, connect timed out).
    #[error("master unavailable: {0}")]
    Unavailable(String),
    /// Sending failed before anything reached the master; safe to retry.
    #[error("send failed: {0}")]
    SendFailed(String),
    /// The connection failed after the request may have reached the master.
    #[error("transport error: {0}")]
    Transport(String),
    /// No reply within the allotted time.
    #[error("the master did not answer in time")]
    Timeout,
    /// Every connection is busy and the wait queue is full.
    #[error("too many requests waiting for the master")]
    Busy,
    /// The master sent bytes that are not a valid reply.
    #[error("protocol error: {0}")]
    Protocol(String),
}
