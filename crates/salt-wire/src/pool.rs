//! A bounded pool of request-channel connections to one master.
//!
//! * At most `size` requests are on the wire at once (a semaphore): the master's MWorker pool
//!   (`worker_threads`) is the real limit, and piling more requests on it only lengthens its
//!   queue. Callers beyond that wait in a queue of at most `queue` entries; past it the pool
//!   answers [`WireError::Busy`] at once, which the HTTP layer turns into a 503 instead of
//!   flooding the master.
//! * Connections are reused while healthy. Any transport failure drops the connection and
//!   bumps a generation counter, so idle connections opened before a master restart are thrown
//!   away instead of each failing once. Connections the master closed while idle are noticed
//!   by their reader task and skipped ([`Connection::is_alive`]).
//! * A request that failed before anything reached the master is retried once on a fresh
//!   connection; one that may have reached it is retried only when the caller says the command
//!   is idempotent (`get_token`, `mk_token`), never for `publish`.
//! * A request whose reply is slow is not simply waited out: every `connect_timeout` the pool
//!   checks that the master still completes the greeting on a new connection (done by
//!   libzmq's I/O thread, so a master busy running a long `wheel` function passes). A frozen
//!   master (SIGSTOP, swapped out, hung) fails the check, and the request fails as unavailable
//!   then, not after its whole deadline (a sync `wheel` may wait `rest_timeout`, 300 s). The
//!   checks are bounded by the pool: at most one per request on the wire per
//!   `connect_timeout`. Salt's `tcp` transport has no greeting, so there the check only
//!   notices a master that refuses connections.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::reqchan::{Connection, Transport};
use crate::WireError;

/// Settings of a [`MasterPool`].
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Request transport of the master.
    pub transport: Transport,
    /// Host to connect to (the master's `interface`, `0.0.0.0` already mapped to loopback).
    pub host: String,
    /// The master's `ret_port`.
    pub port: u16,
    /// Connections (and so requests in flight) at most.
    pub size: usize,
    /// Requests that may wait for a free connection before the pool answers `Busy`.
    pub queue: usize,
    /// Limit for opening one connection.
    pub connect_timeout: Duration,
}

/// The pool (see the module notes).
pub struct MasterPool {
    cfg: PoolConfig,
    permits: Semaphore,
    waiting: AtomicUsize,
    generation: AtomicU64,
    idle: Mutex<Vec<(u64, Connection)>>,
}

/// How waiting for a reply ended.
enum Waited {
    Reply(Result<rmpv::Value, WireError>),
    Timeout,
    /// No reply, and the master did not answer a new connection either.
    Gone(String),
}

/// Decrements the waiting counter when a queued caller stops waiting, however it stops.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MasterPool {
    /// A pool with no connection open yet; connections open on first use.
    pub fn new(cfg: PoolConfig) -> Self {
        let size = cfg.size.max(1);
        Self {
            permits: Semaphore::new(size),
            waiting: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            idle: Mutex::new(Vec::with_capacity(size)),
            cfg,
        }
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Requests waiting for a connection right now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Requests on the wire right now.
    pub fn in_flight(&self) -> usize {
        self.cfg.size.max(1) - self.permits.available_permits()
    }

    /// Sends the clear command `load` and returns the master's raw reply (see
    /// [`crate::envelope::classify`]). `timeout` covers waiting in the queue, connecting and
    /// the round trip.
    pub async fn request(
        &self,
        load: &Map<String, Value>,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<Value, WireError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.cfg.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(WireError::Busy);
                }
                let _w = Waiting(&self.waiting);
                match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(WireError::Busy),
                    Err(_) => return Err(WireError::Timeout),
                }
            }
        };
        let envelope = crate::envelope::encode_clear(load);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (generation, conn) = self.checkout(deadline).await?;
            match self.wait_checking(&conn, &envelope, deadline).await {
                Waited::Gone(why) => {
                    // Out of lockstep and to a master that does not answer: drop it and
                    // everything idle of its generation.
                    drop(conn);
                    self.invalidate(generation);
                    return Err(WireError::Unavailable(why));
                }
                Waited::Reply(Ok(reply)) => {
                    self.checkin(generation, conn);
                    return Ok(crate::value::mp_to_json(&reply));
                }
                Waited::Reply(Err(err)) => {
                    self.invalidate(generation);
                    let retry = attempt == 1
                        && (matches!(err, WireError::SendFailed(_))
                            || (idempotent && matches!(err, WireError::Transport(_))));
                    tracing::debug!(error = %err, retry, "master request failed");
                    if !retry {
                        return Err(match err {
                            WireError::SendFailed(m) | WireError::Transport(m) => {
                                WireError::Unavailable(m)
                            }
                            other => other,
                        });
                    }
                }
                Waited::Timeout => {
                    // The socket is out of lockstep now; drop it (it is not reused).
                    drop(conn);
                    return Err(WireError::Timeout);
                }
            }
        }
    }

    /// Sends `envelope` on `conn` and waits for the reply until `deadline`, checking every
    /// `connect_timeout` that the master still greets a new connection (see the module
    /// notes).
    async fn wait_checking(
        &self,
        conn: &Connection,
        envelope: &[u8],
        deadline: tokio::time::Instant,
    ) -> Waited {
        let every = self.cfg.connect_timeout.max(Duration::from_millis(100));
        let reply = conn.request(envelope);
        tokio::pin!(reply);
        loop {
            let check_at = tokio::time::Instant::now() + every;
            if check_at >= deadline {
                return match tokio::time::timeout_at(deadline, &mut reply).await {
                    Ok(r) => Waited::Reply(r),
                    Err(_) => Waited::Timeout,
                };
            }
            tokio::select! {
                r = &mut reply => return Waited::Reply(r),
                _ = tokio::time::sleep_until(check_at) => {}
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let generation = self.generation.load(Ordering::SeqCst);
            let probe = Connection::open(
                self.cfg.transport,
                &self.cfg.host,
                self.cfg.port,
                every.min(left),
            );
            tokio::select! {
                r = &mut reply => return Waited::Reply(r),
                checked = probe => match checked {
                    // The master is there (busy): keep the new connection if there is room.
                    Ok(fresh) => self.checkin(generation, fresh),
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "no reply from the master and it does not answer a new connection"
                        );
                        return Waited::Gone(format!(
                            "the master stopped answering ({e})"
                        ));
                    }
                },
            }
        }
    }

    async fn checkout(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(u64, Connection), WireError> {
        let current = self.generation.load(Ordering::SeqCst);
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|(g, c)| *g == current && c.is_alive());
            idle.pop()
        };
        if let Some(found) = reused {
            return Ok(found);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let limit = left.min(self.cfg.connect_timeout);
        let conn =
            Connection::open(self.cfg.transport, &self.cfg.host, self.cfg.port, limit).await?;
        Ok((current, conn))
    }

    fn checkin(&self, generation: u64, conn: Connection) {
        if generation == self.generation.load(Ordering::SeqCst) && conn.is_alive() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.cfg.size.max(1) {
                idle.push((generation, conn));
            }
        }
    }

    fn invalidate(&self, generation: u64) {
        // Only the first failure of a generation bumps it; later ones of the same generation
        // would throw away connections opened after the master came back.
        let _ = self.generation.compare_exchange(
            generation,
            generation + 1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let current = self.generation.load(Ordering::SeqCst);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(g, _)| *g == current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::net::TcpListener;

    fn load() -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("cmd".into(), Value::String("ping".into()));
        m
    }

    fn cfg(port: u16, size: usize, queue: usize) -> PoolConfig {
        PoolConfig {
            transport: Transport::Tcp,
            host: "127.0.0.1".into(),
            port,
            size,
            queue,
            connect_timeout: Duration::from_secs(1),
        }
    }

    /// A master that accepts connections and never answers.
    async fn silent_master() -> u16 {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        port
    }

    #[tokio::test]
    async fn a_full_queue_is_busy_at_once_and_silence_is_a_timeout() {
        let port = silent_master().await;
        let pool = Arc::new(MasterPool::new(cfg(port, 1, 1)));
        let p = pool.clone();
        let first =
            tokio::spawn(
                async move { p.request(&load(), Duration::from_millis(800), false).await },
            );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.in_flight(), 1);
        let p = pool.clone();
        let second =
            tokio::spawn(
                async move { p.request(&load(), Duration::from_millis(800), false).await },
            );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.queued(), 1);
        let started = std::time::Instant::now();
        let third = pool.request(&load(), Duration::from_secs(5), false).await;
        assert!(matches!(third, Err(WireError::Busy)), "{third:?}");
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(matches!(first.await, Ok(Err(WireError::Timeout))));
        assert!(matches!(second.await, Ok(Err(WireError::Timeout))));
        assert_eq!(pool.queued(), 0);
        assert_eq!(pool.in_flight(), 0);
    }

    /// A ZMTP master that never replies. `frozen`: it greets its first connection only (as
    /// under SIGSTOP: later connections are accepted by the kernel but never greeted);
    /// otherwise it greets every connection (a master whose workers are all busy).
    async fn unanswering_zmtp_master(frozen: bool) -> u16 {
        use crate::zmtp;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut first = true;
            while let Ok((mut s, _)) = listener.accept().await {
                if first || !frozen {
                    let mut g = [0u8; 64];
                    let _ = s.read_exact(&mut g).await;
                    let _ = s.write_all(&zmtp::greeting()).await;
                    let mut ready = bytes::BytesMut::new();
                    zmtp::put_command(&mut ready, "READY", b"");
                    let _ = s.write_all(&ready).await;
                }
                first = false;
                held.push(s);
            }
        });
        port
    }

    /// A pool of size 2 in front of [`unanswering_zmtp_master`].
    async fn pool_on_unanswering_master(frozen: bool, connect_timeout: Duration) -> MasterPool {
        let port = unanswering_zmtp_master(frozen).await;
        let mut c = cfg(port, 2, 10);
        c.transport = Transport::Zeromq;
        c.connect_timeout = connect_timeout;
        MasterPool::new(c)
    }

    #[tokio::test]
    async fn a_master_that_freezes_under_a_request_is_unavailable_after_one_check() {
        let pool = pool_on_unanswering_master(true, Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        // A deadline like a sync wheel's (`rest_timeout`): far longer than the test may take.
        let r = pool.request(&load(), Duration::from_secs(300), false).await;
        let took = started.elapsed();
        assert!(matches!(r, Err(WireError::Unavailable(_))), "{r:?}");
        // One wait of `connect_timeout`, then a check that times out after another.
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert_eq!(pool.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_busy_master_that_still_greets_is_waited_for_until_the_deadline() {
        let pool = pool_on_unanswering_master(false, Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let r = pool
            .request(&load(), Duration::from_millis(1500), false)
            .await;
        let took = started.elapsed();
        // Checked several times, passed each time: the request waits out its deadline.
        assert!(matches!(r, Err(WireError::Timeout)), "{r:?}");
        assert!(took >= Duration::from_millis(1400), "took {took:?}");
        // The checks' connections are kept (up to the pool's size), not piled up.
        let idle = pool.idle.lock().map(|i| i.len()).unwrap_or(usize::MAX);
        assert!(idle <= 2, "{idle} idle connections");
    }

    #[tokio::test]
    async fn a_master_that_is_down_is_unavailable_fast() {
        // Bind and drop to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0");
            l.ok()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port())
                .unwrap_or(1)
        };
        let pool = MasterPool::new(cfg(port, 2, 10));
        let started = std::time::Instant::now();
        let r = pool.request(&load(), Duration::from_secs(5), true).await;
        assert!(matches!(r, Err(WireError::Unavailable(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
