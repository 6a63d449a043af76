//! One connection to the master's request channel (the "ret port"), for either transport.
//!
//! * `transport: zeromq`: a ZeroMQ REQ socket (pure-Rust `zeromq` crate) to
//!   `tcp://<interface>:<ret_port>`; one message is one msgpack envelope (spec §1.3). REQ is
//!   strict send/recv lockstep and this crate does not reconnect by itself (spec §10a), so a
//!   connection that failed or timed out is dropped by its owner, never reused.
//! * `transport: tcp`: a TCP stream carrying `{"head": {"mid": <id>}, "body": <envelope>}`
//!   maps back to back; the reply echoes `head` (spec §1.4). Connections are used one request
//!   at a time here, so the matching `mid` is simply the next reply; others are skipped.
//!
//! Concurrency and reconnection live one level up, in [`crate::pool`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rmpv::Value as Mp;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use zeromq::{Socket, SocketRecv, SocketSend};

use crate::framing::{Framing, MsgpackCodec};
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

/// One open connection to the request channel.
pub enum Connection {
    /// A ZeroMQ REQ socket.
    Zmq(Box<zeromq::ReqSocket>),
    /// A framed TCP stream.
    Tcp(Box<Framed<TcpStream, MsgpackCodec>>),
}

impl Connection {
    /// Opens a connection to `host:port`. A refused TCP connection fails at once; a master
    /// that accepts but does not complete the handshake fails after `timeout`.
    pub async fn open(
        transport: Transport,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Connection, WireError> {
        // A plain TCP connect first: it fails fast (ECONNREFUSED) while the master is down,
        // where the zeromq crate would keep retrying in the background.
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| WireError::Unavailable(format!("connect to {host}:{port} timed out")))?
            .map_err(|e| WireError::Unavailable(format!("connect to {host}:{port}: {e}")))?;
        match transport {
            Transport::Tcp => {
                let _ = stream.set_nodelay(true);
                Ok(Connection::Tcp(Box::new(Framed::new(
                    stream,
                    MsgpackCodec::new(Framing::Bare, MAX_REPLY),
                ))))
            }
            Transport::Zeromq => {
                drop(stream);
                let endpoint = if host.contains(':') {
                    format!("tcp://[{host}]:{port}")
                } else {
                    format!("tcp://{host}:{port}")
                };
                let mut sock = zeromq::ReqSocket::new();
                tokio::time::timeout(timeout, sock.connect(&endpoint))
                    .await
                    .map_err(|_| {
                        WireError::Unavailable(format!("zeromq connect to {endpoint} timed out"))
                    })?
                    .map_err(|e| WireError::Unavailable(format!("zeromq connect: {e}")))?;
                Ok(Connection::Zmq(Box::new(sock)))
            }
        }
    }

    /// Sends one encoded envelope and waits for its reply. On `Err` the connection must be
    /// dropped: its state is unknown. [`WireError::SendFailed`] means nothing reached the
    /// master, so the request may be retried on a fresh connection.
    pub async fn request(&mut self, envelope: &[u8]) -> Result<Mp, WireError> {
        match self {
            Connection::Zmq(sock) => {
                sock.send(zeromq::ZmqMessage::from(envelope.to_vec()))
                    .await
                    .map_err(|e| WireError::SendFailed(e.to_string()))?;
                let msg = sock
                    .recv()
                    .await
                    .map_err(|e| WireError::Transport(e.to_string()))?;
                let frames = msg.into_vec();
                let bytes: Vec<u8> = match frames.as_slice() {
                    [one] => one.to_vec(),
                    many => many.iter().flat_map(|b| b.iter().copied()).collect(),
                };
                crate::framing::decode_value(&bytes).map_err(|e| WireError::Protocol(e.to_string()))
            }
            Connection::Tcp(framed) => {
                let body = crate::framing::decode_value(envelope)
                    .map_err(|e| WireError::Protocol(e.to_string()))?;
                let mid = uuid::Uuid::new_v4().to_string();
                let msg = Mp::Map(vec![
                    (
                        Mp::from("head"),
                        Mp::Map(vec![(Mp::from("mid"), Mp::from(mid.as_str()))]),
                    ),
                    (Mp::from("body"), body),
                ]);
                framed
                    .send(&msg)
                    .await
                    .map_err(|e| WireError::SendFailed(e.to_string()))?;
                loop {
                    let reply = match framed.next().await {
                        Some(Ok(v)) => v,
                        Some(Err(e)) => return Err(WireError::Transport(e.to_string())),
                        None => {
                            return Err(WireError::Transport("master closed the connection".into()))
                        }
                    };
                    let (head, body) = split_head_body(reply);
                    let matches = head
                        .as_ref()
                        .and_then(|h| map_get(h, "mid"))
                        .and_then(Mp::as_str)
                        == Some(mid.as_str());
                    if matches {
                        return Ok(body.unwrap_or(Mp::Nil));
                    }
                }
            }
        }
    }
}

/// Looks up a string key in a msgpack map.
pub(crate) fn map_get<'a>(map: &'a Mp, key: &str) -> Option<&'a Mp> {
    map.as_map()?.iter().find_map(|(k, v)| {
        let name = match k {
            Mp::String(s) => s.as_str(),
            Mp::Binary(b) => std::str::from_utf8(b).ok(),
            _ => None,
        };
        (name == Some(key)).then_some(v)
    })
}

fn split_head_body(v: Mp) -> (Option<Mp>, Option<Mp>) {
    let Mp::Map(entries) = v else {
        return (None, None);
    };
    let mut head = None;
    let mut body = None;
    for (k, v) in entries {
        match k.as_str() {
            Some("head") => head = Some(v),
            Some("body") => body = Some(v),
            _ => {}
        }
    }
    (head, body)
}
