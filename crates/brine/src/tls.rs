//! TLS for the listener: the rustls server configuration from `ssl_crt` (+ `ssl_chain`) and
//! `ssl_key`, with HTTP/2 and HTTP/1.1 offered by ALPN. `check-config` loads it the same way
//! the server does, so a file it accepts is one the server starts with.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

/// Loads the TLS configuration from `ssl_crt` (+ `ssl_chain`) and `ssl_key`.
pub fn acceptor(
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
