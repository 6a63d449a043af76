//! Draining a refused upload, as nginx's lingering close does. A request answered before its
//! body was read (401 without a token, 429 from the login throttle, 413 for a body over
//! `max_request_body_size`) leaves the client still sending; closing the socket with unread
//! data makes the kernel send a reset, and a client that writes its whole body before
//! reading (Python's `http.client`, curl without `Expect`) sees `EPIPE`/`ECONNRESET`
//! instead of the status. So the rest of the body is read and thrown away in the background
//! while the answer is written, within a bound of bytes and time; memory stays one frame.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;

/// At most this many bytes of an unread body are read and discarded.
pub const LINGER_BYTES: u64 = 1 << 30;

/// For at most this long in all.
pub const LINGER_TIME: Duration = Duration::from_secs(30);

/// And at most this long waiting for the client's next bytes.
pub const LINGER_IDLE: Duration = Duration::from_secs(5);

/// Whether `body` may still have bytes the client is sending.
pub fn unread(body: &Body) -> bool {
    !hyper::body::Body::is_end_stream(body)
}

/// Reads and discards `body` in the background, within the bounds above; the connection is
/// closed (or kept alive, when the whole body came in) once it ends.
pub fn drain(body: Body) {
    tokio::spawn(async move {
        let (bytes, why) = discard(body, LINGER_BYTES, LINGER_TIME, LINGER_IDLE).await;
        tracing::debug!(
            bytes,
            ended = why,
            "discarded the unread body of a refused request"
        );
    });
}

/// Reads `body` until its end or a bound; returns the bytes read and what ended it.
async fn discard(mut body: Body, max: u64, total: Duration, idle: Duration) -> (u64, &'static str) {
    let deadline = tokio::time::Instant::now() + total;
    let mut read = 0u64;
    loop {
        let next = tokio::time::timeout(idle, body.frame());
        match tokio::time::timeout_at(deadline, next).await {
            Err(_) => return (read, "time"),
            Ok(Err(_)) => return (read, "idle"),
            Ok(Ok(None)) => return (read, "end"),
            Ok(Ok(Some(Err(_)))) => return (read, "error"),
            Ok(Ok(Some(Ok(frame)))) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                }
                if read >= max {
                    return (read, "bytes");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::stream;

    fn chunks(n: usize, size: usize) -> Body {
        Body::from_stream(stream::iter(
            (0..n).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; size]))),
        ))
    }

    #[tokio::test]
    async fn a_body_is_read_to_its_end_within_the_bounds() {
        let (n, why) = discard(chunks(100, 1000), 1 << 20, LINGER_TIME, LINGER_IDLE).await;
        assert_eq!((n, why), (100_000, "end"));
    }

    #[tokio::test]
    async fn reading_stops_at_the_byte_bound() {
        let (n, why) = discard(chunks(100, 1000), 10_000, LINGER_TIME, LINGER_IDLE).await;
        assert_eq!((n, why), (10_000, "bytes"));
    }

    #[tokio::test]
    async fn a_silent_client_is_given_up_after_the_idle_time() {
        let silent = Body::from_stream(stream::pending::<Result<Bytes, std::io::Error>>());
        let started = std::time::Instant::now();
        let (n, why) = discard(silent, 1 << 20, LINGER_TIME, Duration::from_millis(100)).await;
        assert_eq!((n, why), (0, "idle"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_trickling_client_is_given_up_after_the_total_time() {
        let trickle = Body::from_stream(stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
        }));
        let (n, why) = discard(
            trickle,
            1 << 20,
            Duration::from_millis(300),
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(why, "time");
        assert!(n > 0 && n < 100, "{n}");
    }
}
