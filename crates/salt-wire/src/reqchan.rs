//! One connection to the master's request channel (the "ret port"), for either transport.
//!
//! * `transport: zeromq`: ZMTP 3.1 as a `REQ` peer of the master's ROUTER ([`crate::zmtp`]);
//!   one message is one msgpack envelope.
//! * `transport: tcp`: `{"head": {"mid": <id>}, "body": <envelope>}` maps back to back; the
//!   reply echoes `head`.
//!
//! Each connection is owned by a small task that reads the socket all the time: it answers the
//! master's ZMTP heartbeats (`PING`) even while the connection is idle in the pool, and it
//! notices at once when the master closes the connection (restart), so the pool never hands
//! out a dead connection. Requests reach the task through a channel, one at a time.
//! Concurrency and reconnection live one level up, in [`crate::pool`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rmpv::Value as Mp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::framing::{msgpack_len, MAX_DEPTH};
use crate::value::map_get;
use crate::zmtp::{self, Frame};
use crate::WireError;

/// Largest reply accepted from the master (a wheel `key.list_all` on a big fleet is a few MB).
pub const MAX_REPLY: usize = 256 * 1024 * 1024;

/// Which request transport the master runs (`transport` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `zeromq` (the default).
    Zeromq,
    /// `tcp`.
    Tcp,
}

type Reply = oneshot::Sender<Result<Mp, WireError>>;

struct Job {
    envelope: Vec<u8>,
    reply: Reply,
}

/// One open connection (a handle on the task that owns the socket).
pub struct Connection {
    tx: mpsc::Sender<Job>,
    alive: Arc<AtomicBool>,
}

/// Marks the connection dead when its task ends, however it ends.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Connection {
    /// Opens a connection to `host:port` and completes the transport's handshake within
    /// `timeout`. A refused connection fails at once.
    pub async fn open(
        transport: Transport,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Connection, WireError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| WireError::Unavailable(format!("connect to {host}:{port} timed out")))?
            .map_err(|e| WireError::Unavailable(format!("connect to {host}:{port}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = rd;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        if transport == Transport::Zeromq {
            tokio::time::timeout(timeout, zmq_handshake(&mut rd, &mut wr, &mut buf))
                .await
                .map_err(|_| WireError::Unavailable("ZMTP handshake timed out".into()))??;
        }
        let (tx, rx) = mpsc::channel(1);
        let alive = Arc::new(AtomicBool::new(true));
        let guard = AliveGuard(alive.clone());
        match transport {
            Transport::Zeromq => {
                tokio::spawn(async move {
                    let _guard = guard;
                    zmq_task(rd, wr, buf, rx).await;
                });
            }
            Transport::Tcp => {
                tokio::spawn(async move {
                    let _guard = guard;
                    tcp_task(rd, wr, buf, rx).await;
                });
            }
        }
        Ok(Connection { tx, alive })
    }

    /// Whether the connection is still usable.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Sends one encoded envelope and waits for its reply. [`WireError::SendFailed`] means
    /// nothing reached the master, so the request may be retried on a fresh connection.
    pub async fn request(&self, envelope: &[u8]) -> Result<Mp, WireError> {
        if !self.is_alive() {
            return Err(WireError::SendFailed("connection closed".into()));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                envelope: envelope.to_vec(),
                reply,
            })
            .await
            .map_err(|_| WireError::SendFailed("connection closed".into()))?;
        rx.await
            .unwrap_or_else(|_| Err(WireError::Transport("connection closed".into())))
    }
}

async fn zmq_handshake(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    buf: &mut BytesMut,
) -> Result<(), WireError> {
    let io = |e: std::io::Error| WireError::Unavailable(format!("ZMTP handshake: {e}"));
    wr.write_all(&zmtp::greeting()).await.map_err(io)?;
    let mut greeting = [0u8; 64];
    rd.read_exact(&mut greeting).await.map_err(io)?;
    zmtp::check_greeting(&greeting)?;
    wr.write_all(&zmtp::ready()).await.map_err(io)?;
    loop {
        match zmtp::take_frame(buf)? {
            Some(Frame::Command { name, data }) => match name.as_str() {
                "READY" => return Ok(()),
                "ERROR" => {
                    return Err(WireError::Unavailable(format!(
                        "master refused the ZMTP handshake: {}",
                        String::from_utf8_lossy(data.get(1..).unwrap_or(&[]))
                    )))
                }
                _ => {}
            },
            Some(Frame::Message { .. }) => {
                return Err(WireError::Protocol("message before ZMTP READY".into()))
            }
            None => {
                if rd.read_buf(buf).await.map_err(io)? == 0 {
                    return Err(WireError::Unavailable(
                        "master closed during the ZMTP handshake".into(),
                    ));
                }
            }
        }
    }
}

fn decode_reply(bytes: &[u8]) -> Result<Mp, WireError> {
    crate::framing::decode_value(bytes).map_err(|e| WireError::Protocol(e.to_string()))
}

/// Owns a ZMTP connection: writes requests, reads replies, answers heartbeats.
async fn zmq_task(
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    mut buf: BytesMut,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut pending: Option<Reply> = None;
    let mut parts: Vec<bytes::Bytes> = Vec::new();
    let mut received = 0usize;
    let fail = |pending: &mut Option<Reply>, err: WireError| {
        if let Some(p) = pending.take() {
            let _ = p.send(Err(err));
        }
    };
    loop {
        // Frames already buffered first (the handshake may have read past READY).
        loop {
            match zmtp::take_frame(&mut buf) {
                Ok(Some(Frame::Command { name, data })) => match name.as_str() {
                    "PING" => {
                        if let Err(e) = wr.write_all(&zmtp::pong_for(&data)).await {
                            fail(&mut pending, WireError::Transport(e.to_string()));
                            return;
                        }
                    }
                    "ERROR" => {
                        fail(
                            &mut pending,
                            WireError::Transport("master sent a ZMTP ERROR".into()),
                        );
                        return;
                    }
                    _ => {}
                },
                Ok(Some(Frame::Message { more, body })) => {
                    received += body.len();
                    if received > MAX_REPLY {
                        fail(&mut pending, WireError::Protocol("reply too large".into()));
                        return;
                    }
                    parts.push(body);
                    if !more {
                        // REQ semantics: drop the empty delimiter frame(s).
                        let payload: Vec<u8> = parts
                            .drain(..)
                            .skip_while(|p| p.is_empty())
                            .flat_map(|p| p.to_vec())
                            .collect();
                        received = 0;
                        match pending.take() {
                            Some(p) => {
                                let _ = p.send(decode_reply(&payload));
                            }
                            None => tracing::debug!("unexpected reply from the master ignored"),
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    fail(&mut pending, e);
                    return;
                }
            }
        }
        tokio::select! {
            job = rx.recv(), if pending.is_none() => {
                let Some(job) = job else { return };
                if let Err(e) = wr.write_all(&zmtp::request(&job.envelope)).await {
                    let _ = job.reply.send(Err(WireError::SendFailed(e.to_string())));
                    return;
                }
                pending = Some(job.reply);
            }
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => {
                    fail(&mut pending, WireError::Transport("master closed the connection".into()));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    fail(&mut pending, WireError::Transport(e.to_string()));
                    return;
                }
            },
        }
    }
}

/// Owns a `tcp` transport connection: `{"head": {"mid"}, "body"}` maps, replies matched on
/// `mid`.
async fn tcp_task(
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    mut buf: BytesMut,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut pending: Option<(String, Reply)> = None;
    loop {
        loop {
            let len = match msgpack_len(&buf, MAX_DEPTH) {
                Ok(Some(len)) => len,
                Ok(None) if buf.len() > MAX_REPLY => {
                    if let Some((_, p)) = pending.take() {
                        let _ = p.send(Err(WireError::Protocol("reply too large".into())));
                    }
                    return;
                }
                Ok(None) => break,
                Err(e) => {
                    if let Some((_, p)) = pending.take() {
                        let _ = p.send(Err(WireError::Protocol(e.to_string())));
                    }
                    return;
                }
            };
            let frame = buf.split_to(len);
            let msg = match decode_reply(&frame) {
                Ok(m) => m,
                Err(e) => {
                    if let Some((_, p)) = pending.take() {
                        let _ = p.send(Err(e));
                    }
                    return;
                }
            };
            let mid = map_get(&msg, "head")
                .and_then(|h| map_get(h, "mid"))
                .and_then(Mp::as_str)
                .map(str::to_owned);
            match (&pending, mid) {
                (Some((want, _)), Some(got)) if *want == got => {
                    if let Some((_, p)) = pending.take() {
                        let body = map_get(&msg, "body").cloned().unwrap_or(Mp::Nil);
                        let _ = p.send(Ok(body));
                    }
                }
                _ => tracing::debug!("unmatched reply from the master ignored"),
            }
        }
        tokio::select! {
            job = rx.recv(), if pending.is_none() => {
                let Some(job) = job else { return };
                let body = match decode_reply(&job.envelope) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = job.reply.send(Err(e));
                        continue;
                    }
                };
                let mid = uuid::Uuid::new_v4().to_string();
                let msg = Mp::Map(vec![
                    (Mp::from("head"), Mp::Map(vec![(Mp::from("mid"), Mp::from(mid.as_str()))])),
                    (Mp::from("body"), body),
                ]);
                let mut out = Vec::with_capacity(job.envelope.len() + 64);
                let _ = rmpv::encode::write_value(&mut out, &msg);
                if let Err(e) = wr.write_all(&out).await {
                    let _ = job.reply.send(Err(WireError::SendFailed(e.to_string())));
                    return;
                }
                pending = Some((mid, job.reply));
            }
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    if let Some((_, p)) = pending.take() {
                        let _ = p.send(Err(WireError::Transport("master closed the connection".into())));
                    }
                    return;
                }
                Ok(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A fake ZMTP peer that pings before answering: the client must answer the ping and
    /// still get its reply.
    #[tokio::test]
    async fn zmtp_request_survives_a_heartbeat() {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut g = [0u8; 64];
            s.read_exact(&mut g).await.map_err(|e| e.to_string())?;
            s.write_all(&zmtp::greeting())
                .await
                .map_err(|e| e.to_string())?;
            let mut ready = BytesMut::new();
            zmtp::put_command(&mut ready, "READY", b"");
            s.write_all(&ready).await.map_err(|e| e.to_string())?;
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            while frames.len() < 3 {
                match zmtp::take_frame(&mut buf).map_err(|e| e.to_string())? {
                    Some(f) => frames.push(f),
                    None => {
                        s.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
                    }
                }
            }
            let mut ping = BytesMut::new();
            zmtp::put_command(&mut ping, "PING", b"\x00\x00hb");
            s.write_all(&ping).await.map_err(|e| e.to_string())?;
            // Wait for the PONG before replying.
            loop {
                match zmtp::take_frame(&mut buf).map_err(|e| e.to_string())? {
                    Some(Frame::Command { name, data }) if name == "PONG" => {
                        if &data[..] != b"hb" {
                            return Err("wrong pong context".to_string());
                        }
                        break;
                    }
                    Some(_) => {}
                    None => {
                        s.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
                    }
                }
            }
            let mut reply = Vec::new();
            let _ = rmpv::encode::write_value(&mut reply, &Mp::from("pong-reply"));
            s.write_all(&zmtp::request(&reply))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(frames.len())
        });
        let conn =
            match Connection::open(Transport::Zeromq, "127.0.0.1", port, Duration::from_secs(5))
                .await
            {
                Ok(c) => c,
                Err(e) => panic!("{e}"),
            };
        let mut env = Vec::new();
        let _ = rmpv::encode::write_value(&mut env, &Mp::from("hello"));
        let reply = tokio::time::timeout(Duration::from_secs(5), conn.request(&env)).await;
        assert_eq!(
            reply.ok().and_then(Result::ok),
            Some(Mp::from("pong-reply"))
        );
        assert_eq!(server.await.ok(), Some(Ok(3)));
    }

    #[tokio::test]
    async fn a_closed_connection_is_noticed_while_idle() {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.map_err(|e| e.to_string())?;
            drop(s);
            Ok::<_, String>(())
        });
        let conn = match Connection::open(Transport::Tcp, "127.0.0.1", port, Duration::from_secs(5))
            .await
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let _ = server.await;
        for _ in 0..100 {
            if !conn.is_alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!conn.is_alive());
        assert!(matches!(
            conn.request(b"\x90").await,
            Err(WireError::SendFailed(_))
        ));
    }
}
