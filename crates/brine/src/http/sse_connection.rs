//! The connection of a client whose first request is `GET /events`: a lean HTTP/1.1 server for
//! that one request, so an open event stream costs a few KiB instead of hyper's fixed 16.
//!
//! hyper gives every connection an 8 KiB read buffer and an 8 KiB header-write buffer for its
//! whole life and does not let a server shrink them; with an SSE stream open for hours that
//! is nearly all of what a stream costs.
//! Here Brine reads the request head itself (`httparse`, the parser hyper uses), builds the
//! same `http::Request`, runs it through the same handler as every request (auth, CORS,
//! stats, access log: [`super::handle`]), writes the answer's head and then each batch of
//! events as one HTTP chunk straight to the socket. The head buffer is freed once parsed.
//!
//! Only the plain case is served here: a complete `GET` head, HTTP/1.1, no request body, no
//! `Expect` or `Upgrade`. Anything else (and a head that is too large or malformed) goes to
//! hyper exactly as before, the bytes already read put back in front of the socket
//! ([`Prefixed`]), so odd requests get hyper's answers. The connection closes once the
//! answer is written or the stream ends (`Connection: close`); a client that hangs up is
//! noticed at once (the socket turns readable at EOF), a client that stops reading is cut
//! off by the stream's watchdog through the connection's kill switch.

use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Most headers a request read here may have (more go to hyper, which allows 100).
const MAX_HEADERS: usize = 64;

/// How a connection's first request was read.
pub enum Head {
    /// A plain `GET` this module answers.
    Lean(Box<Request<Body>>),
    /// Anything else: hyper serves the connection, these bytes first.
    Hyper(Bytes),
    /// No complete head within the header read time, or the client left.
    Gone,
}

/// Reads the first request head from `io`, at most `max` bytes within `limit`.
pub async fn read_head(io: &mut TcpStream, max: usize, limit: Duration) -> Head {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= max {
            // hyper answers 431 for it.
            return Head::Hyper(buf.freeze());
        }
        buf.reserve(1024.min(max - buf.len()));
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Head::Gone,
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(len)) if len == buf.len() => {
                return match plain_get(&parsed) {
                    Some(req) => Head::Lean(Box::new(req)),
                    None => Head::Hyper(buf.freeze()),
                };
            }
            // Bytes after the head, too many headers, a malformed head: hyper's case.
            _ => return Head::Hyper(buf.freeze()),
        }
    }
}

/// The request, when it is a plain HTTP/1.1 `GET` without a body.
fn plain_get(parsed: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let uri: Uri = parsed.path?.parse().ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    let body_free = headers
        .get(header::CONTENT_LENGTH)
        .is_none_or(|v| v.as_bytes() == b"0");
    if !body_free
        || headers.contains_key(header::TRANSFER_ENCODING)
        || headers.contains_key(header::EXPECT)
        || headers.contains_key(header::UPGRADE)
    {
        return None;
    }
    let mut req = Request::new(Body::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// Writes `resp` to `io` (its body as chunks when it has no known length) and returns when it
/// is written, the client left, or `kill` fires.
pub async fn respond(io: &mut TcpStream, resp: Response, kill: &CancellationToken) {
    let (parts, mut body) = resp.into_parts();
    let mut head = Vec::with_capacity(512);
    let reason = parts.status.canonical_reason().unwrap_or("");
    let _ = write!(head, "HTTP/1.1 {} {reason}\r\n", parts.status.as_u16());
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let chunked = !parts.headers.contains_key(header::CONTENT_LENGTH)
        && match body.size_hint().exact() {
            Some(n) => {
                let _ = write!(head, "content-length: {n}\r\n");
                false
            }
            None => {
                head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                true
            }
        };
    let date = httpdate::fmt_http_date(SystemTime::now());
    let _ = write!(head, "date: {date}\r\nconnection: close\r\n\r\n");
    if !send(io, &head, kill).await {
        return;
    }
    drop(head);
    let mut scratch = [0u8; 64];
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = kill.cancelled() => return,
            // Readable while streaming: the client hung up (EOF) or sent more, which is not
            // read as a request (the connection closes after this answer).
            ready = io.readable() => {
                if ready.is_err() {
                    return;
                }
                match io.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return,
                }
            }
        };
        let data = match frame {
            None => {
                if chunked {
                    send(io, b"0\r\n\r\n", kill).await;
                }
                let _ = io.shutdown().await;
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "event stream body failed");
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        let sent = if chunked {
            // One write per batch: chunk size line, data, CRLF.
            let mut chunk = Vec::with_capacity(data.len() + 12);
            let _ = write!(chunk, "{:x}\r\n", data.len());
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
            send(io, &chunk, kill).await
        } else {
            send(io, &data, kill).await
        };
        if !sent {
            return;
        }
    }
}

/// Writes all of `bytes`; false when the client is gone or `kill` fired first.
async fn send(io: &mut TcpStream, bytes: &[u8], kill: &CancellationToken) -> bool {
    tokio::select! {
        r = io.write_all(bytes) => r.is_ok(),
        _ = kill.cancelled() => false,
    }
}

/// A socket with bytes already read from it put back in front, for hyper.
pub struct Prefixed {
    prefix: Bytes,
    io: TcpStream,
}

impl Prefixed {
    /// `io`, whose next reads first return `prefix`.
    pub fn new(prefix: Bytes, io: TcpStream) -> Prefixed {
        Prefixed { prefix, io }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Option<Request<Body>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(head.as_bytes()) {
            Ok(httparse::Status::Complete(_)) => plain_get(&parsed),
            _ => None,
        }
    }

    #[test]
    fn only_plain_gets_are_served_here() {
        let req =
            parse("GET /events HTTP/1.1\r\nHost: x\r\nX-Auth-Token: t\r\nLast-Event-ID: 7\r\n\r\n")
                .unwrap_or_else(|| panic!("a plain GET"));
        assert_eq!(req.uri().path(), "/events");
        assert_eq!(req.headers()["x-auth-token"], "t");
        assert_eq!(req.headers()["last-event-id"], "7");
        assert!(parse("GET /events HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
        for odd in [
            "GET /events HTTP/1.0\r\n\r\n",
            "HEAD /events HTTP/1.1\r\n\r\n",
            "GET /events HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            "GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /events HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /events HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ] {
            assert!(parse(odd).is_none(), "{odd:?} served here");
        }
    }

    #[tokio::test]
    async fn prefixed_reads_the_prefix_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            s.write_all(b" world")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        });
        let (io, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let mut p = Prefixed::new(Bytes::from_static(b"hello"), io);
        let mut all = String::new();
        p.read_to_string(&mut all)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        client.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all, "hello world");
    }
}
