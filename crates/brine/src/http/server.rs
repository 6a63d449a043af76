//! The listener: plain TCP or TLS (rustls), HTTP/1.1 and HTTP/2, a bounded header read time
//! (slow clients cannot hold a connection open by trickling headers), and a graceful stop.
//!
//! Event streams get their own runtime: a plain connection whose first request line asks for
//! a stream route (`/events`, `/ws`, `/all_events/…`, `/formatted_events/…`, peeked before
//! hyper reads it) is served on the streams runtime, every other connection on this one. An
//! event fans out to every open stream at once, a burst of socket writes that keeps the
//! streams' threads busy and makes the kernel slow to run them again; requests (`/stats`,
//! `/login`, `/run`) then neither queue behind the burst nor share its threads. A connection
//! that starts with `GET /events` is answered by [`sse_connection`] rather than hyper (a few
//! KiB per open stream instead of hyper's fixed 16).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::routes::{Endpoint, RouteConfig};
use super::sse_connection::{self, Head, Prefixed};

use bytes::Bytes;

/// Largest request head (request line and headers) accepted; bigger ones get 431.
const MAX_HEAD: usize = 64 * 1024;

/// How long a client may take to send its request headers: the first request's from the
/// moment its connection is accepted (TLS handshake included), a kept-alive connection's next
/// one from the end of the previous answer (hyper's timer, which is also the idle time).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// When a connection's first request head must be in; `seen` is set by the service when
/// hyper hands it a request.
struct FirstHeadBy {
    at: tokio::time::Instant,
    seen: Arc<AtomicBool>,
}

/// The kill switch of the connection a request arrived on (a request extension).
#[derive(Clone)]
pub struct ConnKill(pub CancellationToken);

/// Serves `app` on `listener` until `shutdown` resolves; event streams on `streams`.
pub async fn serve(
    edge: Arc<super::Edge>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    streams: tokio::runtime::Handle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // Plain connections speak HTTP/1.1 only (as rest_cherrypy): hyper's own HTTP/1 server,
    // without the protocol sniffing of the auto builder, whose 24-byte first read makes hyper
    // grow every connection's read buffer to 16 KiB. TLS connections pick HTTP/2 or 1.1 by
    // ALPN through the auto builder.
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD);
    let h1 = Arc::new(h1);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let builder = Arc::new(builder);
    let tracker = tokio_util::task::TaskTracker::new();
    // The app's own token: cancelling it also ends every event stream (stream.rs).
    let stopping = edge.app.stopping.clone();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let head_by = FirstHeadBy {
            at: tokio::time::Instant::now() + HEADER_READ_TIMEOUT,
            seen: Arc::new(AtomicBool::new(false)),
        };
        let seen = head_by.seen.clone();
        // Each connection gets a kill switch: streams use it to drop a client that stopped
        // reading (hyper would otherwise keep a stalled connection open).
        let kill = CancellationToken::new();
        let sniff_app = edge.clone();
        let app = edge.clone();
        let conn_kill = kill.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            let app = app.clone();
            let kill = conn_kill.clone();
            // Boxed: hyper keeps room for one in-flight service future per connection for
            // the connection's whole life, and the handler's future is several KiB.
            Box::pin(async move {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnKill(kill));
                Ok::<_, std::convert::Infallible>(super::handle(app, req, peer).await)
            })
                as std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                                Output = Result<axum::response::Response, std::convert::Infallible>,
                            > + Send,
                    >,
                >
        });
        let builder = builder.clone();
        let h1 = h1.clone();
        let acceptor = tls.clone();
        let stopping = stopping.clone();
        // Two separately spawned futures: a task's size is that of its largest state, and
        // the TLS path (handshake, HTTP/2) is much larger than a plain HTTP/1 connection.
        match acceptor {
            None => {
                let (streams, inner) = (streams.clone(), tracker.clone());
                // A connection that has not sent its request yet does not hold up a stop.
                let quit = stopping.clone();
                let head_by_at = head_by.at;
                tracker.spawn(async move {
                    let peeked = tokio::select! {
                        p = peek_first_bytes(&stream, head_by_at) => p,
                        _ = quit.cancelled() => None,
                    };
                    let first = first_request(peeked.as_deref(), &sniff_app.app.settings.rest.routes);
                    let h1_kill = kill.clone();
                    let h1_serve = move |io: Prefixed| async move {
                        let conn = h1
                            .serve_connection(TokioIo::new(io), service)
                            .with_upgrades();
                        let ends = Ends { kill: h1_kill, stopping, head_by };
                        drive(conn, |c| c.graceful_shutdown(), ends, peer).await;
                    };
                    match first {
                        First::Nothing => {
                            tracing::debug!(peer = %peer, "no request before the header read time or the stop");
                        }
                        First::Request => h1_serve(Prefixed::new(Bytes::new(), stream)).await,
                        First::Stream => {
                            inner.spawn_on(h1_serve(Prefixed::new(Bytes::new(), stream)), &streams);
                        }
                        First::Sse => {
                            let mut stream = stream;
                            let head_time_left = head_by_at
                                .saturating_duration_since(tokio::time::Instant::now());
                            let lean = async move {
                                let head = tokio::select! {
                                    h = sse_connection::read_head(
                                        &mut stream,
                                        MAX_HEAD,
                                        head_time_left,
                                    ) => h,
                                    _ = quit.cancelled() => Head::Gone,
                                };
                                match head {
                                    Head::Gone => {}
                                    Head::Lean(mut req) => {
                                        req.extensions_mut().insert(ConnKill(kill.clone()));
                                        // Boxed: the handler's future is several KiB, and
                                        // the task would keep room for it for the stream's
                                        // whole life.
                                        let resp =
                                            Box::pin(super::handle(sniff_app, *req, peer)).await;
                                        sse_connection::respond(&mut stream, resp, &kill).await;
                                    }
                                    Head::Hyper(prefix) => {
                                        drop(sniff_app);
                                        h1_serve(Prefixed::new(prefix, stream)).await;
                                    }
                                }
                            };
                            inner.spawn_on(lean, &streams);
                        }
                    }
                });
            }
            Some(acceptor) => {
                tracker.spawn(async move {
                    let accept = acceptor.accept(stream);
                    let io = match tokio::time::timeout_at(head_by.at, accept).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    let ends = Ends {
                        kill,
                        stopping,
                        head_by,
                    };
                    drive(conn, |c| c.graceful_shutdown(), ends, peer).await;
                });
            }
        }
    }
    drop(listener);
    // Connections finish their current request and close; streams are cut after 10 s.
    stopping.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; stopping anyway");
    }
}

/// What ends a connection besides the client.
struct Ends {
    /// Brine drops the connection (a stream whose client stopped reading).
    kill: CancellationToken,
    /// The server stops: the connection is asked to finish its current request and close.
    stopping: CancellationToken,
    /// The first request head is not in by then: the connection is closed.
    head_by: FirstHeadBy,
}

/// Runs one connection until it ends or one of `ends` ends it.
async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    ends: Ends,
    peer: SocketAddr,
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Ends {
        kill,
        stopping,
        head_by,
    } = ends;
    let mut conn = std::pin::pin!(conn);
    let mut asked = false;
    let mut head_in = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(head_by.at), if !head_in => {
                head_in = head_by.seen.load(Ordering::Relaxed);
                if !head_in {
                    tracing::debug!(peer = %peer, "no complete request head within the header read time");
                    return;
                }
            }
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = kill.cancelled() => {
                tracing::debug!(peer = %peer, "connection dropped by Brine");
                return;
            }
            _ = stopping.cancelled(), if !asked => {
                asked = true;
                graceful(conn.as_mut());
            }
        }
    }
}

/// What a connection's first bytes ask for.
#[derive(Debug, PartialEq, Eq)]
enum First {
    /// Nothing arrived within the header read time.
    Nothing,
    /// `GET /events`: served by [`sse_connection`] on the streams runtime.
    Sse,
    /// A WebSocket stream route: served by hyper on the streams runtime.
    Stream,
    /// Anything else (including a request line not complete in the first segment).
    Request,
}

/// Up to 512 bytes at the start of `stream` (left in the socket for hyper), once any arrive;
/// `None` after `by` (the connection's header deadline), on an error or when the client closed.
async fn peek_first_bytes(
    stream: &tokio::net::TcpStream,
    by: tokio::time::Instant,
) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 512];
    match tokio::time::timeout_at(by, stream.peek(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.truncate(n);
            Some(buf)
        }
        _ => None,
    }
}

/// Whether `head` (a connection's first bytes) starts a `GET` of an event stream route.
fn first_request(head: Option<&[u8]>, routes: &RouteConfig) -> First {
    let Some(head) = head else {
        return First::Nothing;
    };
    let Some(rest) = head.strip_prefix(b"GET ") else {
        return First::Request;
    };
    let Some(end) = rest.iter().position(|&b| b == b' ' || b == b'?') else {
        return First::Request;
    };
    let Ok(path) = std::str::from_utf8(&rest[..end]) else {
        return First::Request;
    };
    match routes.resolve(path).map(|r| r.endpoint) {
        Ok(Endpoint::Events) => First::Sse,
        Ok(Endpoint::Ws(_) | Endpoint::AllEvents(_) | Endpoint::FormattedEvents(_)) => {
            First::Stream
        }
        _ => First::Request,
    }
}

/// Binds the listener with room for `backlog` connections the accept loop has not taken yet
/// (`TcpListener::bind` would leave 128).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::routes::tests::cfg;

    fn routes(prefix: &str) -> RouteConfig {
        cfg(prefix, true)
    }

    /// Connections the listener completes while nobody accepts: as many as its backlog
    /// (Linux keeps one more), and no more: a full queue drops the SYN.
    async fn completed_without_accept(backlog: u32, tries: usize) -> usize {
        let listener = match bind(
            "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            backlog,
        ) {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut held = Vec::new();
        for _ in 0..tries {
            let c = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(std::time::Duration::from_millis(300), c).await {
                Ok(Ok(s)) => held.push(s),
                _ => break,
            }
        }
        held.len()
    }

    #[tokio::test]
    async fn the_listener_queues_as_many_connections_as_its_backlog() {
        assert_eq!(completed_without_accept(2, 10).await, 3);
        assert_eq!(completed_without_accept(300, 300).await, 300);
    }

    #[test]
    fn stream_routes_are_told_from_requests_by_their_first_line() {
        let r = routes("");
        let first = |s: &str| first_request(Some(s.as_bytes()), &r);
        assert_eq!(first("GET /events HTTP/1.1\r\n"), First::Sse);
        assert_eq!(first("GET /events?token=abc HTTP/1.1\r\n"), First::Sse);
        assert_eq!(first("GET /ws/0123abcd HTTP/1.1\r\n"), First::Stream);
        assert_eq!(first("GET /all_events/0123 HTTP/1.1\r\n"), First::Stream);
        assert_eq!(
            first("GET /formatted_events/0123 HTTP/1.1\r\n"),
            First::Stream
        );
        assert_eq!(first("GET /stats HTTP/1.1\r\n"), First::Request);
        assert_eq!(first("POST /events HTTP/1.1\r\n"), First::Request);
        assert_eq!(first("GET /eventsx HTTP/1.1\r\n"), First::Request);
        // The path is cut off in the first segment: served as a request (still correct).
        assert_eq!(first("GET /even"), First::Request);
        assert_eq!(
            first_request(Some(b"GET /ev\xffents HTTP/1.1"), &r),
            First::Request
        );
        assert_eq!(first_request(None, &r), First::Nothing);
        let prefixed = routes("/api");
        assert_eq!(
            first_request(Some(b"GET /api/events HTTP/1.1"), &prefixed),
            First::Sse
        );
        assert_eq!(
            first_request(Some(b"GET /events HTTP/1.1"), &prefixed),
            First::Request
        );
    }
}
