//! Framing of msgpack messages on the master's stream sockets.
//!
//! Salt writes its stream protocols (the `tcp` request transport and the event bus) as msgpack
//! values concatenated with no separator, except where a 4-byte big-endian length prefix is put
//! in front (the event bus PULL side in every supported version, and both bus sides in 3006).
//! The decoder here finds where one value ends without building it ([`msgpack_len`]), so a
//! large event arriving in many small reads is scanned cheaply and decoded once, and it can
//! tell a length prefix from a bare map by the first byte of each frame (a msgpack
//! map starts with `0x80..=0x8f`, `0xde` or `0xdf`; a prefix of a frame under 16 MiB starts
//! with `0x00`).
//!
//! rmp/rmpv offer no "how long is the next value" primitive, and re-running `read_value` on
//! every partial read is quadratic in the frame size, hence the small hand-written scanner
//! (recorded in DESIGN.md).

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Errors of the stream framing.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes are not msgpack, or a value nests deeper than allowed.
    #[error("malformed msgpack frame: {0}")]
    Malformed(String),
    /// A frame is larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size announced or reached.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How deep msgpack values from the master may nest before they are refused.
pub const MAX_DEPTH: usize = 256;

/// Returns the encoded length of the msgpack value at the start of `buf`, `Ok(None)` when
/// `buf` holds only part of it, or an error for bytes that are not msgpack.
pub fn msgpack_len(buf: &[u8], max_depth: usize) -> Result<Option<usize>, FrameError> {
    // An explicit stack of "values still to skip" keeps nesting from recursing.
    let mut pos = 0usize;
    let mut pending: Vec<u64> = vec![1];
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        // (bytes of payload to skip, number of child values that follow)
        let (skip, children): (usize, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, u64::from(marker & 0x0f) * 2),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => match read_be(buf, pos, 1) {
                Some(n) => (1 + n as usize, 0),
                None => return Ok(None),
            },
            0xc5 | 0xda => match read_be(buf, pos, 2) {
                Some(n) => (2 + n as usize, 0),
                None => return Ok(None),
            },
            0xc6 | 0xdb => match read_be(buf, pos, 4) {
                Some(n) => (4 + n as usize, 0),
                None => return Ok(None),
            },
            0xc7 => match read_be(buf, pos, 1) {
                Some(n) => (2 + n as usize, 0),
                None => return Ok(None),
            },
            0xc8 => match read_be(buf, pos, 2) {
                Some(n) => (3 + n as usize, 0),
                None => return Ok(None),
            },
            0xc9 => match read_be(buf, pos, 4) {
                Some(n) => (5 + n as usize, 0),
                None => return Ok(None),
            },
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => match read_be(buf, pos, 2) {
                Some(n) => (2, n),
                None => return Ok(None),
            },
            0xdd => match read_be(buf, pos, 4) {
                Some(n) => (4, n),
                None => return Ok(None),
            },
            0xde => match read_be(buf, pos, 2) {
                Some(n) => (2, n * 2),
                None => return Ok(None),
            },
            0xdf => match read_be(buf, pos, 4) {
                Some(n) => (4, n * 2),
                None => return Ok(None),
            },
            0xc1 => return Err(FrameError::Malformed("reserved marker 0xc1".into())),
        };
        pos = pos.saturating_add(skip);
        if children > 0 {
            if pending.len() >= max_depth {
                return Err(FrameError::Malformed(format!(
                    "nesting deeper than {max_depth}"
                )));
            }
            pending.push(children);
        }
    }
    if pos > buf.len() {
        Ok(None)
    } else {
        Ok(Some(pos))
    }
}

fn read_be(buf: &[u8], pos: usize, width: usize) -> Option<u64> {
    let bytes = buf.get(pos..pos + width)?;
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Decodes one complete msgpack value.
pub fn decode_value(bytes: &[u8]) -> Result<rmpv::Value, FrameError> {
    let mut rd = bytes;
    rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// How frames are delimited on a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Bare msgpack values back to back (3007+/3008 event PUB side, `tcp` request transport).
    Bare,
    /// A 4-byte big-endian length before each value (event PULL side; 3006 PUB side).
    LengthPrefixed,
    /// Per frame: a leading `0x00` means a length prefix, anything else a bare value.
    Detect,
}

/// A `tokio_util` codec for msgpack frames (see the module notes).
#[derive(Debug)]
pub struct MsgpackCodec {
    framing: Framing,
    max_frame: usize,
}

impl MsgpackCodec {
    /// A codec with the given framing and a limit on the size of one frame.
    pub fn new(framing: Framing, max_frame: usize) -> Self {
        Self { framing, max_frame }
    }
}

impl Decoder for MsgpackCodec {
    type Item = rmpv::Value;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<rmpv::Value>, FrameError> {
        let Some(&first) = src.first() else {
            return Ok(None);
        };
        let prefixed = match self.framing {
            Framing::Bare => false,
            Framing::LengthPrefixed => true,
            Framing::Detect => first == 0x00,
        };
        if prefixed {
            let Some(len) = read_be(src, 0, 4) else {
                return Ok(None);
            };
            let len = len as usize;
            if len > self.max_frame {
                return Err(FrameError::TooLarge {
                    size: len,
                    limit: self.max_frame,
                });
            }
            if src.len() < 4 + len {
                src.reserve(4 + len - src.len());
                return Ok(None);
            }
            src.advance(4);
            let frame = src.split_to(len);
            return decode_value(&frame).map(Some);
        }
        match msgpack_len(src, MAX_DEPTH)? {
            Some(len) => {
                let frame = src.split_to(len);
                decode_value(&frame).map(Some)
            }
            None if src.len() > self.max_frame => Err(FrameError::TooLarge {
                size: src.len(),
                limit: self.max_frame,
            }),
            None => Ok(None),
        }
    }
}

impl Encoder<&rmpv::Value> for MsgpackCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &rmpv::Value, dst: &mut BytesMut) -> Result<(), FrameError> {
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, item)
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        if self.framing == Framing::LengthPrefixed {
            let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
                size: body.len(),
                limit: u32::MAX as usize,
            })?;
            dst.put_u32(len);
        }
        dst.extend_from_slice(&body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value as Mp;

    fn enc(v: &Mp) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap_or_default();
        out
    }

    fn sample() -> Mp {
        Mp::Map(vec![
            (Mp::from("head"), Mp::Map(vec![])),
            (
                Mp::from("body"),
                Mp::Binary(b"salt/job/1/new\n\n\x81\xa3jid\xa11".to_vec()),
            ),
            (
                Mp::from("nested"),
                Mp::Array(vec![
                    Mp::from(1u64 << 40),
                    Mp::F64(1.5),
                    Mp::Nil,
                    Mp::from("x".repeat(300)),
                ]),
            ),
        ])
    }

    #[test]
    fn length_of_every_prefix_is_unknown_until_complete() {
        let bytes = enc(&sample());
        for cut in 0..bytes.len() {
            assert_eq!(
                msgpack_len(&bytes[..cut], 64).ok().flatten(),
                None,
                "cut {cut}"
            );
        }
        assert_eq!(msgpack_len(&bytes, 64).ok().flatten(), Some(bytes.len()));
    }

    #[test]
    fn bare_stream_splits_into_values() {
        let mut codec = MsgpackCodec::new(Framing::Bare, 1 << 20);
        let one = enc(&sample());
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&one);
        buf.extend_from_slice(&one[..10]);
        assert_eq!(codec.decode(&mut buf).ok().flatten(), Some(sample()));
        assert_eq!(codec.decode(&mut buf).ok().flatten(), None);
        buf.extend_from_slice(&one[10..]);
        assert_eq!(codec.decode(&mut buf).ok().flatten(), Some(sample()));
        assert!(buf.is_empty());
    }

    #[test]
    fn detect_mode_reads_both_framings() {
        let mut codec = MsgpackCodec::new(Framing::Detect, 1 << 20);
        let mut prefixed = MsgpackCodec::new(Framing::LengthPrefixed, 1 << 20);
        let mut buf = BytesMut::new();
        prefixed.encode(&sample(), &mut buf).ok();
        buf.extend_from_slice(&enc(&sample()));
        assert_eq!(codec.decode(&mut buf).ok().flatten(), Some(sample()));
        assert_eq!(codec.decode(&mut buf).ok().flatten(), Some(sample()));
    }

    #[test]
    fn garbage_and_oversize_and_deep_nesting_are_errors() {
        let mut codec = MsgpackCodec::new(Framing::Bare, 16);
        let mut buf = BytesMut::from(&[0xc1u8][..]);
        assert!(codec.decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0x00u8, 0, 1, 0][..]);
        let mut lp = MsgpackCodec::new(Framing::LengthPrefixed, 16);
        assert!(matches!(
            lp.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        let deep = vec![0x91u8; 1000];
        assert!(msgpack_len(&deep, 64).is_err());
    }
}
