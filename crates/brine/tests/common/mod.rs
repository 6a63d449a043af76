//! Shared fixture of the integration tests: one real Salt stack per test binary (a master,
//! minions and the reference Python salt-api) with Brine in front of the same master, plus
//! helpers that send the same request to both and compare normalized answers. Each file holds
//! one concern; this one only declares them and re-exports their items, so that a test says
//! `use common::*;`.
//!
//! A test binary declares this module `pub mod common;`: its items are then public API of the
//! binary, so a helper that one binary does not use is no dead code there, and no
//! `allow(dead_code)` is needed.

// Test helpers fail the test on an unexpected error; clippy's `allow-unwrap-in-tests` covers
// `#[test]` functions and `#[cfg(test)]` modules only, not an integration test's helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod brine_process;
mod clients;
mod compare;
mod http;
mod measure;
mod reference;
mod sse;
mod stack;
mod swarm;

pub use brine_process::*;
pub use clients::*;
pub use compare::*;
pub use http::*;
pub use measure::*;
pub use reference::*;
pub use sse::*;
pub use stack::*;
pub use swarm::*;
