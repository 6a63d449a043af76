//! The lowstate clients, one module each: [`local`] (`local`, `local_async`, with Salt's
//! gathering rules in [`gather`]), [`batch`] (`local_batch`), [`subset`] (`local_subset`),
//! [`runner`] (`runner`, `runner_async`), [`wheel`] (`wheel`, `wheel_async`) and [`ssh`]. Each turns a checked
//! chunk into the clear commands Salt's own Python client would send, with the caller's token
//! or eauth credentials, and shapes the result as rest_cherrypy returns it.

pub mod batch;
pub mod gather;
pub mod local;
pub mod runner;
pub mod ssh;
pub mod subset;
pub mod wheel;

use serde_json::{Map, Value};

use crate::app::App;
use crate::http::error::ApiError;
use crate::lowstate::Client;

/// Runs one checked chunk; most clients give one result, batch clients several.
pub async fn dispatch(
    app: &App,
    client: Client,
    chunk: Map<String, Value>,
) -> Result<Vec<Value>, ApiError> {
    let one = |v: Value| Ok(vec![v]);
    match client {
        Client::Local => one(local::local(app, chunk).await?),
        Client::LocalAsync => one(local::local_async(app, chunk).await?),
        Client::Runner => one(runner::runner(app, chunk).await?),
        Client::RunnerAsync => one(runner::runner_async(app, chunk).await?),
        Client::Wheel => one(wheel::wheel(app, chunk).await?),
        Client::WheelAsync => one(wheel::wheel_async(app, chunk).await?),
        Client::LocalBatch => batch::local_batch(app, chunk).await,
        Client::LocalSubset => one(subset::local_subset(app, chunk).await?),
        Client::Ssh => one(ssh::ssh(app, chunk).await?),
        // Listed by `GET /` for compatibility; never a command (spec §7, item 4).
        Client::Destroy => Err(ApiError::BadRequest(
            "Invalid client specified: 'destroy'".into(),
        )),
    }
}

/// Credentials keys of a chunk, as the master reads them.
pub const AUTH_KEYS: [&str; 4] = ["token", "eauth", "username", "password"];

/// `"<fun> takes at least 1 argument (0 given)"`: Salt's `format_call` error for a client
/// called without `fun`.
pub fn missing_fun(client: Client) -> ApiError {
    ApiError::BadRequest(format!(
        "{} takes at least 1 argument (0 given)",
        client.name()
    ))
}

/// The 503 of a synchronous command whose events stopped arriving because the event-bus
/// subscription dropped (the master went away or restarted) while it waited: the job may have
/// run, but its result can no longer be known here, so it is not guessed.
pub fn bus_lost(jid: &str) -> ApiError {
    tracing::warn!(jid, "event bus lost while waiting for a job; answering 503");
    ApiError::MasterUnavailable(format!(
        "Lost the connection to the Salt master's event bus while job {jid} was running; \
         its result is unknown here. Look it up later with GET /jobs/{jid}."
    ))
}
