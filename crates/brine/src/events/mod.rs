//! The master's event bus as Brine holds it, up to what every client stream reads:
//!
//! * [`hub`]: Brine's one subscription; hands each event to the job waiters of its jid and to
//!   the feed;
//! * [`feed`]: every event numbered, encoded once for clients, kept in a bounded replay ring
//!   and broadcast, or queued only for the streams whose [`filter`] lets it through;
//! * [`filter`]: a stream's tag globs; [`routes`]: the filtered streams by the literal prefix
//!   of their globs, so an event reaches only those that may want it; [`source`]: what one
//!   stream reads from the feed;
//! * [`formatted`]: rest_tornado's formatted events (its minion and job view of the bus).
//!
//! One client's reader of the feed is [`crate::stream`]; the HTTP layer renders it as SSE or
//! WebSocket frames.

pub mod feed;
pub mod filter;
pub mod formatted;
pub mod hub;
pub mod routes;
pub mod source;
