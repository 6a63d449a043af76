//! One minion's subscription to the master's publish port: a ZMTP 3.1 `SUB` peer
//! (`salt_wire::zmtp` frames) on a TCP connection made from the minion's own loopback
//! address, so the master sees (and `CkMinions.connected_ids` counts) one peer address per
//! minion.
//!
//! * Handshake: greeting, `READY` with `Socket-Type: SUB` and `Identity: <minion id>` (Salt
//!   sets `zmq.IDENTITY` on its SUB socket), the master's `READY`.
//! * Subscriptions are sent as messages `\x01<topic>` (ZMTP 3.0 style, which libzmq's XPUB
//!   accepts from 3.1 peers too): the empty topic (everything) by default; with the master's
//!   `zmq_filtering`, `broadcast` and the SHA-1 hex of the minion id, as
//!   `PublishClient._legacy_setup` does.
//! * Messages: one frame (the msgpack payload), or two (topic, payload) with `zmq_filtering`;
//!   topics other than `broadcast` and the minion's own are dropped (`_decode_messages`).
//! * The master's PUB socket sends ZMTP heartbeats (`PING` every 10 s, dead after 30 s
//!   without a `PONG`): answered as they come.
//!
//! The read buffer starts empty and is dropped after a large message, so an idle minion
//! holds a few hundred bytes here.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use salt_wire::zmtp::{self, Frame};
use salt_wire::WireError;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest publish accepted.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Read buffers larger than this are not kept between messages.
const KEEP_BUFFER: usize = 1024;

/// The topics a minion subscribes to.
pub fn topics(id: &str, zmq_filtering: bool) -> Vec<Vec<u8>> {
    if zmq_filtering {
        vec![b"broadcast".to_vec(), hexid(id).into_bytes()]
    } else {
        vec![Vec::new()]
    }
}

/// `hashlib.sha1(id).hexdigest()`: a minion's topic under `zmq_filtering`.
pub fn hexid(id: &str) -> String {
    hex::encode(Sha1::digest(id.as_bytes()))
}

/// An open subscription.
pub struct Subscription {
    stream: TcpStream,
    buf: BytesMut,
    parts: Vec<Bytes>,
    own_topic: String,
}

impl Subscription {
    /// Connects from `source` (when given) to `master`, handshakes and subscribes.
    pub async fn open(
        source: Option<Ipv4Addr>,
        master: SocketAddr,
        id: &str,
        zmq_filtering: bool,
        timeout: Duration,
    ) -> Result<Subscription, WireError> {
        let unavailable = |e: std::io::Error| WireError::Unavailable(format!("publish port: {e}"));
        let socket = match master {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(unavailable)?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))
                .map_err(unavailable)?;
        }
        let _ = socket.set_keepalive(true);
        let stream = tokio::time::timeout(timeout, socket.connect(master))
            .await
            .map_err(|_| WireError::Unavailable("connecting to the publish port timed out".into()))?
            .map_err(unavailable)?;
        let _ = stream.set_nodelay(true);
        let mut sub = Subscription {
            stream,
            buf: BytesMut::new(),
            parts: Vec::new(),
            own_topic: hexid(id),
        };
        tokio::time::timeout(timeout, sub.handshake(id, zmq_filtering))
            .await
            .map_err(|_| WireError::Unavailable("ZMTP handshake timed out".into()))??;
        Ok(sub)
    }

    async fn handshake(&mut self, id: &str, zmq_filtering: bool) -> Result<(), WireError> {
        let io = |e: std::io::Error| WireError::Unavailable(format!("ZMTP handshake: {e}"));
        self.stream.write_all(&zmtp::greeting()).await.map_err(io)?;
        let mut greeting = [0u8; 64];
        self.stream.read_exact(&mut greeting).await.map_err(io)?;
        zmtp::check_greeting(&greeting)?;
        let mut out = BytesMut::new();
        zmtp::put_command(&mut out, "READY", &ready_properties(id));
        for topic in topics(id, zmq_filtering) {
            let mut body = Vec::with_capacity(1 + topic.len());
            body.push(1);
            body.extend_from_slice(&topic);
            zmtp::put_frame(&mut out, 0, &body);
        }
        self.stream.write_all(&out).await.map_err(io)?;
        loop {
            match zmtp::take_frame(&mut self.buf)? {
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
                    self.buf.reserve(256);
                    if self.stream.read_buf(&mut self.buf).await.map_err(io)? == 0 {
                        return Err(WireError::Unavailable(
                            "master closed during the ZMTP handshake".into(),
                        ));
                    }
                }
            }
        }
    }

    /// The next publish payload for this minion (topic already checked), answering
    /// heartbeats meanwhile. An error means the connection is gone.
    pub async fn next(&mut self) -> Result<Bytes, WireError> {
        loop {
            while let Some(frame) = zmtp::take_frame(&mut self.buf)? {
                match frame {
                    Frame::Command { name, data } => match name.as_str() {
                        "PING" => self
                            .stream
                            .write_all(&zmtp::pong_for(&data))
                            .await
                            .map_err(|e| WireError::Transport(e.to_string()))?,
                        "ERROR" => {
                            return Err(WireError::Transport("master sent a ZMTP ERROR".into()))
                        }
                        _ => {}
                    },
                    Frame::Message { more, body } => {
                        self.parts.push(body);
                        if self.parts.iter().map(Bytes::len).sum::<usize>() > MAX_MESSAGE {
                            return Err(WireError::Protocol("publish too large".into()));
                        }
                        if !more {
                            let parts = std::mem::take(&mut self.parts);
                            if self.buf.is_empty() && self.buf.capacity() > KEEP_BUFFER {
                                self.buf = BytesMut::new();
                            }
                            if let Some(payload) = self.for_me(parts) {
                                return Ok(payload);
                            }
                        }
                    }
                }
            }
            // Small reads while idle (heartbeats are a few bytes), doubling while a large
            // publish comes in.
            if self.buf.capacity() - self.buf.len() < 128 {
                self.buf.reserve(self.buf.len().clamp(256, 64 * 1024));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(WireError::Transport(
                        "master closed the publish connection".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(WireError::Transport(e.to_string())),
            }
        }
    }

    /// `_decode_messages`: one frame is the payload; two are topic and payload.
    fn for_me(&self, mut parts: Vec<Bytes>) -> Option<Bytes> {
        match parts.len() {
            1 => parts.pop(),
            2 => {
                let topic = &parts[0];
                if &topic[..] == b"broadcast" || &topic[..] == self.own_topic.as_bytes() {
                    parts.pop()
                } else {
                    tracing::trace!("publish for another minion dropped");
                    None
                }
            }
            n => {
                tracing::debug!(
                    frames = n,
                    "publish with an unexpected number of frames dropped"
                );
                None
            }
        }
    }
}

fn ready_properties(id: &str) -> Vec<u8> {
    let mut props = Vec::new();
    for (k, v) in [("Socket-Type", "SUB"), ("Identity", id)] {
        props.push(k.len() as u8);
        props.extend_from_slice(k.as_bytes());
        props.extend_from_slice(&(v.len() as u32).to_be_bytes());
        props.extend_from_slice(v.as_bytes());
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn filtering_topics_are_sha1_hex_ids() {
        assert_eq!(topics("m1", false), vec![Vec::<u8>::new()]);
        let t = topics("m1", true);
        assert_eq!(t[0], b"broadcast");
        // hashlib.sha1(b"m1").hexdigest()
        assert_eq!(t[1], b"ae23b94ccaf714337e4ce5ba99ef3dc257e300df");
        assert_eq!(hexid("m1").len(), 40);
    }

    /// A fake PUB peer: checks our handshake and subscription, pings, sends one publish for
    /// another minion and one broadcast; we must answer the ping and get the broadcast only.
    #[tokio::test]
    async fn subscribes_answers_pings_and_filters_topics() {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("addr")
        };
        let server = tokio::spawn(async move {
            let (mut s, peer) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut g = [0u8; 64];
            s.read_exact(&mut g).await.map_err(|e| e.to_string())?;
            s.write_all(&zmtp::greeting())
                .await
                .map_err(|e| e.to_string())?;
            let mut out = BytesMut::new();
            zmtp::put_command(&mut out, "READY", b"\x0bSocket-Type\x00\x00\x00\x03PUB");
            s.write_all(&out).await.map_err(|e| e.to_string())?;
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            while got.len() < 3 {
                match zmtp::take_frame(&mut buf).map_err(|e| e.to_string())? {
                    Some(f) => got.push(f),
                    None => {
                        s.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
                    }
                }
            }
            let mut out = BytesMut::new();
            zmtp::put_command(&mut out, "PING", b"\x00\x0ahb");
            zmtp::put_frame(&mut out, 1, b"0000000000000000000000000000000000000000");
            zmtp::put_frame(&mut out, 0, b"not-for-us");
            zmtp::put_frame(&mut out, 1, b"broadcast");
            zmtp::put_frame(&mut out, 0, b"for-all");
            s.write_all(&out).await.map_err(|e| e.to_string())?;
            loop {
                match zmtp::take_frame(&mut buf).map_err(|e| e.to_string())? {
                    Some(Frame::Command { name, data }) if name == "PONG" => {
                        return Ok::<_, String>((got, data, peer));
                    }
                    Some(_) => {}
                    None => {
                        s.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
                    }
                }
            }
        });
        let source = Ipv4Addr::new(127, 3, 2, 1);
        let sub = Subscription::open(Some(source), addr, "m1", true, Duration::from_secs(5)).await;
        let Ok(mut sub) = sub else { panic!("open") };
        let msg = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
        assert_eq!(
            msg.ok().and_then(Result::ok),
            Some(Bytes::from_static(b"for-all"))
        );
        let Ok(Ok((got, pong, peer))) = server.await else {
            panic!("server")
        };
        assert_eq!(peer.ip(), std::net::IpAddr::V4(source));
        assert_eq!(&pong[..], b"hb");
        match &got[0] {
            Frame::Command { name, data } => {
                assert_eq!(name, "READY");
                assert!(data.windows(3).any(|w| w == b"SUB"));
                assert!(data.windows(2).any(|w| w == b"m1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            got[1],
            Frame::Message {
                more: false,
                body: Bytes::from_static(b"\x01broadcast")
            }
        );
        let mut own = b"\x01".to_vec();
        own.extend_from_slice(hexid("m1").as_bytes());
        assert_eq!(
            got[2],
            Frame::Message {
                more: false,
                body: Bytes::from(own)
            }
        );
    }
}
