//! Server-sent event streams: `GET /events` opened on either server, its events parsed and
//! read as they arrive.

use std::time::Duration;

use serde_json::Value;

use super::http::{client, header_list};

/// One event received on an SSE stream.
#[derive(Clone, Debug)]
pub struct SseEvent {
    /// The `id:` line (Brine only).
    pub id: Option<u64>,
    /// The `tag:` line.
    pub tag: String,
    /// The parsed `data:` line (`{"data", "tag"}`).
    pub data: Value,
}

/// An open SSE stream.
pub struct SseStream {
    /// Status of the response.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Events as they arrive.
    pub events: tokio::sync::mpsc::UnboundedReceiver<SseEvent>,
    /// The reading task (abort it to disconnect).
    pub task: tokio::task::JoinHandle<()>,
}

impl SseStream {
    /// Waits for the next event whose tag starts with `prefix`.
    pub async fn next_tagged(&mut self, prefix: &str, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if ev.tag.starts_with(prefix) => return Some(ev),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }
}

/// Parses SSE blocks out of `buf`, leaving an incomplete tail.
pub fn parse_sse(buf: &mut String) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(at) = buf.find("\n\n") {
        let block: String = buf.drain(..at + 2).collect();
        let (mut id, mut tag, mut data) = (None, String::new(), None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("tag: ") {
                tag = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).ok();
            }
        }
        if let Some(data) = data {
            out.push(SseEvent { id, tag, data });
        }
    }
    out
}

/// Opens `GET /events` with the given extra headers.
pub async fn open_sse(base: &str, headers: &[(&str, &str)]) -> SseStream {
    open_sse_at(base, "/events", headers).await
}

/// Opens a stream at `path` (`/events?tag=…`) with the given extra headers.
pub async fn open_sse_at(base: &str, path: &str, headers: &[(&str, &str)]) -> SseStream {
    use futures_util::StreamExt;
    let mut b = client().get(format!("{base}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = b
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"));
    let status = r.status().as_u16();
    let hdrs = header_list(r.headers());
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        if status != 200 {
            return;
        }
        let mut body = r.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for ev in parse_sse(&mut buf) {
                if tx.send(ev).is_err() {
                    return;
                }
            }
        }
    });
    SseStream {
        status,
        headers: hdrs,
        events,
        task,
    }
}
