//! Simulated minions (the workspace's `salt-swarm` library) started inside a test binary, on
//! the stack's master: they end with the binary.

use std::time::{Duration, Instant};

use super::stack::Stack;

/// Starts `count` simulated minions named `<prefix><n>` (the `salt-swarm` library, in this
/// process), connecting from the loopback addresses after the first `offset`, and waits until
/// every one has signed in and subscribed. `silent`: the percentage that never answers;
/// `latency`: salt-swarm's `--latency` values (`test.ping=1s..3s`).
pub async fn start_swarm(
    st: &Stack,
    prefix: &str,
    count: usize,
    silent: usize,
    offset: usize,
    latency: &[&str],
) -> salt_swarm::Running {
    let mut opts = salt_swarm::Options::new(st.config_dir(), count as u32);
    opts.prefix = prefix.into();
    opts.accept = true;
    opts.silent = silent as f64;
    opts.signin_concurrency = 16;
    opts.address_offset = offset as u32;
    opts.latency = latency.iter().map(|l| (*l).to_owned()).collect();
    opts.state_dir = Some(st.root.join("swarm-state"));
    let swarm = salt_swarm::start(&opts)
        .await
        .unwrap_or_else(|e| panic!("salt-swarm ({prefix}): {e}"));
    let started = Instant::now();
    if tokio::time::timeout(Duration::from_secs(600), swarm.all_up())
        .await
        .is_err()
    {
        panic!(
            "salt-swarm ({prefix}): {} of {count} minions up after {:?}",
            swarm.up(),
            started.elapsed()
        );
    }
    eprintln!(
        "{count} simulated minions ({prefix}*) up in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    swarm
}
