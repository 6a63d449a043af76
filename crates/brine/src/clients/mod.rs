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

use std::cell::RefCell;

use serde_json::{Map, Value};

use crate::app::SharedApp;
use crate::error::ApiError;

/// The client names `GET /` lists (Salt's `NetapiClient` members, `destroy` included).
pub const CLIENT_NAMES: [&str; 10] = [
    "destroy",
    "local",
    "local_async",
    "local_batch",
    "local_subset",
    "runner",
    "runner_async",
    "ssh",
    "wheel",
    "wheel_async",
];

/// A lowstate client, parsed once from the chunk's `client` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// `local`: run and wait for the returns.
    Local,
    /// `local_async`: publish and return the jid.
    LocalAsync,
    /// `local_batch`: run in batches.
    LocalBatch,
    /// `local_subset`: run on a random subset that has the function.
    LocalSubset,
    /// `runner`: run and wait for the return event.
    Runner,
    /// `runner_async`: start and return the jid.
    RunnerAsync,
    /// `wheel`: run (the master answers synchronously).
    Wheel,
    /// `wheel_async`: start in the background and return a jid.
    WheelAsync,
    /// `ssh`: salt-ssh.
    Ssh,
    /// `destroy`: listed by `GET /`, never executed.
    Destroy,
}

impl Client {
    /// Parses a client name.
    pub fn parse(name: &str) -> Option<Client> {
        Some(match name {
            "local" => Client::Local,
            "local_async" => Client::LocalAsync,
            "local_batch" => Client::LocalBatch,
            "local_subset" => Client::LocalSubset,
            "runner" => Client::Runner,
            "runner_async" => Client::RunnerAsync,
            "wheel" => Client::Wheel,
            "wheel_async" => Client::WheelAsync,
            "ssh" => Client::Ssh,
            "destroy" => Client::Destroy,
            _ => return None,
        })
    }

    /// The client's name.
    pub fn name(self) -> &'static str {
        match self {
            Client::Local => "local",
            Client::LocalAsync => "local_async",
            Client::LocalBatch => "local_batch",
            Client::LocalSubset => "local_subset",
            Client::Runner => "runner",
            Client::RunnerAsync => "runner_async",
            Client::Wheel => "wheel",
            Client::WheelAsync => "wheel_async",
            Client::Ssh => "ssh",
            Client::Destroy => "destroy",
        }
    }
}

/// What one chunk did: its result, and the jobs it started on the master (a synchronous
/// `local` call's answer carries no jid, yet the audit names it).
pub struct Outcome {
    /// Most clients give one result, batch clients several.
    pub result: Result<Vec<Value>, ApiError>,
    /// The jids the master gave the chunk's jobs, in order.
    pub jids: Vec<String>,
}

tokio::task_local! {
    static STARTED: RefCell<Vec<String>>;
}

/// Notes a job the running chunk started (called by the clients where they publish or start
/// a runner or wheel job; a no-op outside [`dispatch`]).
fn started(jid: &str) {
    let _ = STARTED.try_with(|j| {
        let mut j = j.borrow_mut();
        if !j.iter().any(|x| x == jid) {
            j.push(jid.to_owned());
        }
    });
}

/// Runs one checked chunk.
pub async fn dispatch(app: &SharedApp, client: Client, chunk: Map<String, Value>) -> Outcome {
    STARTED
        .scope(RefCell::new(Vec::new()), async {
            let result = run(app, client, chunk).await;
            let jids = STARTED.with(|j| j.take());
            Outcome { result, jids }
        })
        .await
}

async fn run(
    app: &SharedApp,
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
        // Listed by `GET /` for compatibility; never a command.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_name_parses() {
        assert_eq!(
            CLIENT_NAMES.iter().filter_map(|n| Client::parse(n)).count(),
            10
        );
    }

    #[tokio::test]
    async fn jobs_started_are_collected_once_each_in_order() {
        let jids = STARTED
            .scope(RefCell::new(Vec::new()), async {
                started("2");
                started("1");
                started("2");
                STARTED.with(|j| j.take())
            })
            .await;
        assert_eq!(jids, ["2", "1"]);
        started("outside a chunk: ignored");
    }
}
