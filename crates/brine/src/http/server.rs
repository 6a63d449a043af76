//! The listener: plain TCP or TLS (rustls), HTTP/1.1 and HTTP/2, a bounded header read time
//! (slow clients cannot hold a connection open by trickling headers), and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::app::SharedApp;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The kill switch of the connection a request arrived on (a request extension).
#[derive(Clone)]
pub struct ConnKill(pub CancellationToken);

/// Loads the TLS configuration from `ssl_crt` (+ `ssl_chain`) and `ssl_key`.
pub fn tls_acceptor(
    crt: &std::path::Path,
    key: &std::path::Path,
    chain: Option<&std::path::Path>,
) -> Result<TlsAcceptor, String> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut certs: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read(crt)?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", crt.display()))?;
    if let Some(chain) = chain {
        let extra: Vec<_> = rustls_pemfile::certs(&mut read(chain)?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", chain.display()))?;
        certs.extend(extra);
    }
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", crt.display()));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key found", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("{}: {e}", crt.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    app: SharedApp,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        // Each connection gets a kill switch: streams use it to drop a client that stopped
        // reading (hyper would otherwise keep a stalled connection open).
        let kill = CancellationToken::new();
        let app = app.clone();
        let conn_kill = kill.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            let kill = conn_kill.clone();
            async move {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnKill(kill));
                Ok::<_, std::convert::Infallible>(super::handle(app, req, peer).await)
            }
        });
        let builder = builder.clone();
        let acceptor = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let io = match acceptor {
                None => Either::Left(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => Either::Right(s),
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let conn = watcher.watch(conn.into_owned());
            tokio::select! {
                done = conn => if let Err(e) = done {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                },
                _ = kill.cancelled() => {
                    tracing::debug!(peer = %peer, "connection dropped by Brine");
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; stopping anyway");
        }
    }
}

/// Binds the listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
