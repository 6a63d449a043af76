//! `log_access_file`: one line per request in the Apache combined format, as CherryPy writes
//! it, through a bounded queue to a writer task (a slow disk never holds a request). The path
//! is logged without its query string, so no token can end up in the file. SIGHUP reopens the
//! file (before the next line is written), for logrotate.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::header;
use axum::response::Response;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// One request, as logged.
pub struct Line {
    /// Client address.
    pub peer: IpAddr,
    /// Authenticated user, if any.
    pub user: Option<String>,
    /// Method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Status.
    pub status: u16,
    /// Body size, when known.
    pub size: Option<u64>,
    /// `Referer`.
    pub referer: Option<String>,
    /// `User-Agent`.
    pub agent: Option<String>,
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Line>,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

fn quote(v: Option<&str>) -> String {
    v.unwrap_or("").replace('\\', "\\\\").replace('"', "\\\"")
}

impl Line {
    fn format(&self) -> String {
        let date = chrono::Local::now().format("%d/%b/%Y:%H:%M:%S %z");
        format!(
            "{} - {} [{date}] \"{} {} HTTP/1.1\" {} {} \"{}\" \"{}\"\n",
            self.peer,
            self.user.as_deref().unwrap_or("-"),
            self.method,
            self.path.replace('"', "%22"),
            self.status,
            self.size
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            quote(self.referer.as_deref()),
            quote(self.agent.as_deref()),
        )
    }
}

impl AccessLog {
    /// Opens (appends to) `path` and starts the writer.
    pub async fn open(path: &Path) -> std::io::Result<AccessLog> {
        let open = |path: std::path::PathBuf| async move {
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
        };
        let mut file = open(path.to_owned()).await?;
        let (tx, mut rx) = mpsc::channel::<Line>(10_000);
        let dropped = Arc::new(AtomicU64::new(0));
        let seen = dropped.clone();
        let reopen = Arc::new(AtomicBool::new(false));
        let asked = reopen.clone();
        let path = path.to_owned();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if asked.swap(false, Ordering::Relaxed) {
                    let _ = file.flush().await;
                    match open(path.clone()).await {
                        Ok(f) => file = f,
                        Err(e) => tracing::error!(
                            file = %path.display(),
                            "cannot reopen the access log: {e}"
                        ),
                    }
                }
                let lost = seen.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = file
                        .write_all(
                            format!("# {lost} access log lines dropped (queue full)\n").as_bytes(),
                        )
                        .await;
                }
                if let Err(e) = file.write_all(line.format().as_bytes()).await {
                    tracing::warn!("access log write failed: {e}");
                }
            }
        });
        Ok(AccessLog {
            tx,
            dropped,
            reopen,
        })
    }

    /// Reopens the file at its path before the next line (SIGHUP).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Queues one line (dropped, and counted, when the writer is behind).
    pub fn record(&self, line: Line) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The size of a response's body: its `Content-Length`, or the exact size of a body held in
/// memory (hyper writes that length itself); `None` for a streamed body.
pub fn body_size(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| hyper::body::Body::size_hint(resp.body()).exact())
}

/// The request path as logs show it: the token segment of a path that carries one
/// ([`super::routes::Endpoint::token_in_path`]) is replaced with `<token>` (query strings are
/// never logged).
pub fn loggable_path(path: &str, token_in_path: bool) -> String {
    if !token_in_path {
        return path.to_owned();
    }
    match path.trim_end_matches('/').rfind('/') {
        Some(i) => format!("{}<token>", &path[..i + 1]),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format() {
        let l = Line {
            peer: IpAddr::from([127, 0, 0, 1]),
            user: Some("saltdev".into()),
            method: "POST".into(),
            path: "/login".into(),
            status: 200,
            size: Some(209),
            referer: None,
            agent: Some("curl/8 \"x\"".into()),
        };
        let text = l.format();
        assert!(text.starts_with("127.0.0.1 - saltdev ["), "{text}");
        assert!(
            text.ends_with("] \"POST /login HTTP/1.1\" 200 209 \"\" \"curl/8 \\\"x\\\"\"\n"),
            "{text}"
        );
    }
}
