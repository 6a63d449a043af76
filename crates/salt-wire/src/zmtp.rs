//! A minimal ZMTP 3.1 client (the ZeroMQ wire protocol, RFC 37) for the master's request
//! channel: NULL security, a `REQ` socket identity, and ZMTP heartbeats.
//!
//! Why not the `zeromq` crate: Salt 3008 masters enable ZMTP heartbeats on their ROUTER socket
//! (`zmq_heartbeat_ivl`, a `PING` every 10 s). `zeromq` 0.7 cannot decode a `PING` command: the
//! socket fails with "Unknown command received", and the request in flight with it. It also
//! never reconnects. The protocol subset salt-api needs is small, so it lives here:
//!
//! * greeting: 64 bytes, `0xFF`, 8 padding bytes, `0x7F`, version 3.1, mechanism `NULL`,
//!   as-server 0, filler;
//! * handshake: a `READY` command with `Socket-Type: REQ`, and the peer's `READY` (or `ERROR`);
//! * messages: frames with flags `MORE` (1), `LONG` (2), `COMMAND` (4); a REQ request is an
//!   empty delimiter frame then the body frame, and so is the reply;
//! * `PING` commands are answered with a `PONG` carrying the same context at any time, also
//!   while idle: the connection's reader runs all the time (see [`crate::reqchan`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::WireError;

/// Frame flag: more frames of this message follow.
const MORE: u8 = 0x01;
/// Frame flag: 8-byte size.
const LONG: u8 = 0x02;
/// Frame flag: this frame is a command.
const COMMAND: u8 = 0x04;

/// Largest frame accepted from the master.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Our greeting: ZMTP 3.1, NULL mechanism, client side.
pub fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = 1;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// Checks the peer's 64-byte greeting.
pub fn check_greeting(g: &[u8]) -> Result<(), WireError> {
    if g.len() < 64 || g[0] != 0xFF || g[9] & 0x01 != 0x01 {
        return Err(WireError::Protocol("peer is not a ZMTP 3 endpoint".into()));
    }
    if g[10] < 3 {
        return Err(WireError::Protocol(format!(
            "peer speaks ZMTP {}.{}, 3.0 or later is needed",
            g[10], g[11]
        )));
    }
    let mech = &g[12..32];
    let end = mech.iter().position(|b| *b == 0).unwrap_or(mech.len());
    if &mech[..end] != b"NULL" {
        return Err(WireError::Protocol(format!(
            "peer wants the {} security mechanism, only NULL is supported",
            String::from_utf8_lossy(&mech[..end])
        )));
    }
    Ok(())
}

/// Appends one frame.
pub fn put_frame(out: &mut BytesMut, flags: u8, body: &[u8]) {
    if body.len() > 255 {
        out.put_u8(flags | LONG);
        out.put_u64(body.len() as u64);
    } else {
        out.put_u8(flags);
        out.put_u8(body.len() as u8);
    }
    out.extend_from_slice(body);
}

/// Appends a command frame `name` + `data`.
pub fn put_command(out: &mut BytesMut, name: &str, data: &[u8]) {
    let mut body = Vec::with_capacity(1 + name.len() + data.len());
    body.push(name.len() as u8);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    put_frame(out, COMMAND, &body);
}

/// The `READY` command of a REQ socket.
pub fn ready() -> BytesMut {
    let mut props = Vec::new();
    let (k, v) = ("Socket-Type", "REQ");
    props.push(k.len() as u8);
    props.extend_from_slice(k.as_bytes());
    props.extend_from_slice(&(v.len() as u32).to_be_bytes());
    props.extend_from_slice(v.as_bytes());
    let mut out = BytesMut::new();
    put_command(&mut out, "READY", &props);
    out
}

/// A REQ request: empty delimiter frame, then the body.
pub fn request(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 16);
    put_frame(&mut out, MORE, &[]);
    put_frame(&mut out, 0, body);
    out
}

/// One decoded frame.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A message frame; `more` says whether the message continues.
    Message {
        /// More frames follow.
        more: bool,
        /// Frame body.
        body: Bytes,
    },
    /// A command: its name and data.
    Command {
        /// Command name (`READY`, `PING`, `PONG`, `ERROR`, ...).
        name: String,
        /// Data after the name.
        data: Bytes,
    },
}

/// Takes one complete frame from the front of `buf`, or `None` when more bytes are needed.
pub fn take_frame(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    let Some(&flags) = buf.first() else {
        return Ok(None);
    };
    if flags & !(MORE | LONG | COMMAND) != 0 {
        return Err(WireError::Protocol(format!(
            "bad ZMTP frame flags {flags:#04x}"
        )));
    }
    let (header, size) = if flags & LONG != 0 {
        if buf.len() < 9 {
            return Ok(None);
        }
        let mut s = [0u8; 8];
        s.copy_from_slice(&buf[1..9]);
        (9, u64::from_be_bytes(s) as usize)
    } else {
        if buf.len() < 2 {
            return Ok(None);
        }
        (2, usize::from(buf[1]))
    };
    if size > MAX_FRAME {
        return Err(WireError::Protocol(format!(
            "ZMTP frame of {size} bytes is too large"
        )));
    }
    if buf.len() < header + size {
        buf.reserve(header + size - buf.len());
        return Ok(None);
    }
    buf.advance(header);
    let mut body = buf.split_to(size).freeze();
    if flags & COMMAND != 0 {
        if body.is_empty() {
            return Err(WireError::Protocol("empty ZMTP command".into()));
        }
        let len = usize::from(body.get_u8());
        if body.len() < len {
            return Err(WireError::Protocol(
                "ZMTP command name exceeds its frame".into(),
            ));
        }
        let name = String::from_utf8_lossy(&body[..len]).into_owned();
        body.advance(len);
        return Ok(Some(Frame::Command { name, data: body }));
    }
    Ok(Some(Frame::Message {
        more: flags & MORE != 0,
        body,
    }))
}

/// The `PONG` answering a `PING` whose data is `ping` (2-byte TTL, then the context).
pub fn pong_for(ping: &[u8]) -> BytesMut {
    let context = ping.get(2..).unwrap_or(&[]);
    let mut out = BytesMut::new();
    put_command(&mut out, "PONG", context);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_layout() {
        let g = greeting();
        assert_eq!(g.len(), 64);
        assert_eq!((g[0], g[9], g[10], g[11]), (0xFF, 0x7F, 3, 1));
        assert_eq!(&g[12..16], b"NULL");
        assert!(check_greeting(&g).is_ok());
        let mut old = g;
        old[10] = 2;
        assert!(check_greeting(&old).is_err());
        let mut curve = g;
        curve[12..17].copy_from_slice(b"CURVE");
        assert!(check_greeting(&curve).is_err());
    }

    #[test]
    fn frames_round_trip_short_and_long() {
        let big = vec![7u8; 300];
        let mut buf = request(&big);
        buf.extend_from_slice(&ready());
        assert_eq!(
            take_frame(&mut buf).ok().flatten(),
            Some(Frame::Message {
                more: true,
                body: Bytes::new()
            })
        );
        let partial = buf.split_to(5);
        let mut head = partial;
        assert_eq!(take_frame(&mut head).ok().flatten(), None);
        head.unsplit(buf);
        let mut buf = head;
        assert_eq!(
            take_frame(&mut buf).ok().flatten(),
            Some(Frame::Message {
                more: false,
                body: Bytes::from(big)
            })
        );
        match take_frame(&mut buf) {
            Ok(Some(Frame::Command { name, data })) => {
                assert_eq!(name, "READY");
                assert_eq!(&data[..], b"\x0bSocket-Type\x00\x00\x00\x03REQ");
            }
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn ping_gets_a_pong_with_the_same_context() {
        let mut ping = BytesMut::new();
        put_command(&mut ping, "PING", b"\x00\x64ctx");
        let Ok(Some(Frame::Command { name, data })) = take_frame(&mut ping) else {
            panic!("no command");
        };
        assert_eq!(name, "PING");
        let mut pong = pong_for(&data);
        match take_frame(&mut pong) {
            Ok(Some(Frame::Command { name, data })) => {
                assert_eq!(name, "PONG");
                assert_eq!(&data[..], b"ctx");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_flags_and_huge_frames_are_refused() {
        let mut b = BytesMut::from(&[0x80u8, 0][..]);
        assert!(take_frame(&mut b).is_err());
        let mut b = BytesMut::from(&[LONG, 0xff, 0, 0, 0, 0, 0, 0, 0][..]);
        assert!(take_frame(&mut b).is_err());
    }
}
