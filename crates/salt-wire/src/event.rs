//! The master's event bus: reading it (the PUB side) and firing events into it (the PULL side).
//!
//! Both sides are stream sockets: unix sockets `master_event_pub.ipc` / `master_event_pull.ipc`
//! under `sock_dir`, or TCP ports on loopback with `ipc_mode: tcp`. Every message
//! is `{"head": {}, "body": bin(tag + "\n\n" + msgpack(data))}`. Subscribers read bare maps in
//! 3007/3008 and length-prefixed maps in 3006, so the reader detects the framing per frame;
//! firers must write a 4-byte length prefix in every supported version.
//! No subscription message exists: the master sends every event to every subscriber.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::framing::{FrameError, Framing, MsgpackCodec};
use crate::value::map_get;
use crate::WireError;

/// Largest event accepted from the bus (the master trims events at `max_event_size`, 1 MiB by
/// default, but an operator may raise it).
pub const MAX_EVENT: usize = 64 * 1024 * 1024;

/// One event of the bus.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event tag, e.g. `salt/job/<jid>/ret/<minion>`.
    pub tag: String,
    /// The event data (a map for every event Salt fires).
    pub data: Value,
}

/// Where one side of the bus listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusAddr {
    /// A unix socket path (`ipc_mode: ipc`).
    Unix(PathBuf),
    /// A TCP address (`ipc_mode: tcp`).
    Tcp(String, u16),
}

impl std::fmt::Display for BusAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusAddr::Unix(p) => write!(f, "{}", p.display()),
            BusAddr::Tcp(h, p) => write!(f, "tcp://{h}:{p}"),
        }
    }
}

/// A connected bus socket of either kind.
pub enum BusStream {
    /// Unix socket.
    Unix(UnixStream),
    /// TCP socket.
    Tcp(TcpStream),
}

impl BusStream {
    /// Connects to `addr`.
    pub async fn connect(addr: &BusAddr) -> Result<BusStream, WireError> {
        match addr {
            BusAddr::Unix(path) => UnixStream::connect(path)
                .await
                .map(BusStream::Unix)
                .map_err(|e| WireError::Unavailable(format!("{}: {e}", path.display()))),
            BusAddr::Tcp(host, port) => TcpStream::connect((host.as_str(), *port))
                .await
                .map(BusStream::Tcp)
                .map_err(|e| WireError::Unavailable(format!("{host}:{port}: {e}"))),
        }
    }
}

impl AsyncRead for BusStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BusStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            BusStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BusStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BusStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            BusStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BusStream::Unix(s) => Pin::new(s).poll_flush(cx),
            BusStream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BusStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            BusStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Decodes one bus message into an [`Event`]. Returns `None` for messages that carry no event
/// (a malformed body is logged by the caller and skipped).
pub fn decode_message(msg: &rmpv::Value) -> Option<Event> {
    if let Some(body) = map_get(msg, "body") {
        let raw: &[u8] = match body {
            rmpv::Value::Binary(b) => b,
            rmpv::Value::String(s) => s.as_bytes(),
            _ => return None,
        };
        return split_body(raw);
    }
    // Some firers put tag and data side by side instead of packing a body.
    let tag = map_get(msg, "tag")?.as_str()?.to_owned();
    let data = map_get(msg, "data")
        .map(crate::value::mp_to_json)
        .unwrap_or(Value::Null);
    Some(Event { tag, data })
}

/// Splits `tag\n\n<msgpack data>`.
pub fn split_body(raw: &[u8]) -> Option<Event> {
    let at = raw.windows(2).position(|w| w == b"\n\n")?;
    let tag = String::from_utf8_lossy(&raw[..at]).into_owned();
    let rest = &raw[at + 2..];
    let data = if rest.is_empty() {
        Value::Object(Map::new())
    } else {
        crate::value::mp_to_json(&crate::framing::decode_value(rest).ok()?)
    };
    Some(Event { tag, data })
}

/// Encodes an event as a bus message (`{"head": {}, "body": bin(...)}`).
pub fn encode_message(tag: &str, data: &Value) -> rmpv::Value {
    let mut body = Vec::with_capacity(tag.len() + 64);
    body.extend_from_slice(tag.as_bytes());
    body.extend_from_slice(b"\n\n");
    body.extend_from_slice(&crate::value::encode_json(data));
    rmpv::Value::Map(vec![
        (rmpv::Value::from("head"), rmpv::Value::Map(vec![])),
        (rmpv::Value::from("body"), rmpv::Value::Binary(body)),
    ])
}

/// A subscription to the PUB side: a stream of events until the master closes the socket.
pub struct Subscription {
    inner: FramedRead<BusStream, MsgpackCodec>,
}

impl Subscription {
    /// Connects to the PUB side at `addr`.
    pub async fn connect(addr: &BusAddr) -> Result<Subscription, WireError> {
        let stream = BusStream::connect(addr).await?;
        Ok(Subscription {
            inner: FramedRead::with_capacity(
                stream,
                MsgpackCodec::new(Framing::Detect, MAX_EVENT),
                64 * 1024,
            ),
        })
    }
}

impl Stream for Subscription {
    type Item = Result<Event, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match std::task::ready!(self.inner.poll_next_unpin(cx)) {
                Some(Ok(msg)) => match decode_message(&msg) {
                    Some(ev) => return Poll::Ready(Some(Ok(ev))),
                    None => tracing::debug!("skipping a bus message without an event"),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            }
        }
    }
}

/// A connection to the PULL side for firing events; keep it open to fire many.
pub struct Firer {
    sink: FramedWrite<BusStream, MsgpackCodec>,
}

impl Firer {
    /// Connects to the PULL side at `addr`; `framing` is what the master expects (a length
    /// prefix in every supported version).
    pub async fn connect(addr: &BusAddr, framing: Framing) -> Result<Firer, WireError> {
        let stream = BusStream::connect(addr).await?;
        Ok(Firer {
            sink: FramedWrite::new(stream, MsgpackCodec::new(framing, MAX_EVENT)),
        })
    }

    /// Fires one event. `data` should already carry `_stamp` if the caller wants one.
    pub async fn fire(&mut self, tag: &str, data: &Value) -> Result<(), WireError> {
        let msg = encode_message(tag, data);
        self.sink
            .send(&msg)
            .await
            .map_err(|e| WireError::Transport(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_round_trips_through_a_bus_message() {
        let data = json!({"jid": "20261126092012564887", "return": true, "_stamp": "x"});
        let msg = encode_message("salt/job/20261126092012564887/ret/m1", &data);
        let ev = decode_message(&msg);
        assert_eq!(
            ev,
            Some(Event {
                tag: "salt/job/20261126092012564887/ret/m1".into(),
                data
            })
        );
    }

    #[test]
    fn tag_is_split_at_the_first_blank_line() {
        let mut raw = b"a/b\n\n".to_vec();
        raw.extend_from_slice(&crate::value::encode_json(&json!({"k": "x\n\ny"})));
        let ev = split_body(&raw);
        assert_eq!(
            ev.map(|e| (e.tag, e.data)),
            Some(("a/b".into(), json!({"k": "x\n\ny"})))
        );
        assert_eq!(split_body(b"no separator"), None);
    }

    #[tokio::test]
    async fn subscription_reads_bare_and_prefixed_frames_from_a_socket() {
        use tokio::io::AsyncWriteExt;
        let dir = std::env::temp_dir().join(format!("salt-wire-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("pub.ipc");
        let _ = std::fs::remove_file(&path);
        let listener = match tokio::net::UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut bare = Vec::new();
            let _ = rmpv::encode::write_value(&mut bare, &encode_message("t/1", &json!({"n": 1})));
            let mut prefixed = Vec::new();
            let mut one = Vec::new();
            let _ = rmpv::encode::write_value(&mut one, &encode_message("t/2", &json!({"n": 2})));
            prefixed.extend_from_slice(&(one.len() as u32).to_be_bytes());
            prefixed.extend_from_slice(&one);
            s.write_all(&bare).await.map_err(|e| e.to_string())?;
            s.write_all(&prefixed).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        });
        let mut sub = match Subscription::connect(&BusAddr::Unix(path.clone())).await {
            Ok(s) => s,
            Err(e) => panic!("connect: {e}"),
        };
        let a = sub.next().await;
        let b = sub.next().await;
        assert_eq!(a.and_then(Result::ok).map(|e| e.tag), Some("t/1".into()));
        assert_eq!(
            b.and_then(Result::ok).map(|e| e.data),
            Some(json!({"n": 2}))
        );
        assert!(sub.next().await.is_none());
        assert_eq!(server.await.ok(), Some(Ok(())));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
