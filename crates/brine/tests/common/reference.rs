//! The reference Python salt-api (rest_cherrypy) on the same master: its warm-up, the
//! retries around its known races, and logging in on both servers.

use std::time::Duration;

use super::stack::STACK;
use super::{login, salt_token, send, Req, Resp, Stack};

impl Stack {
    /// rest_cherrypy sometimes fails the very first logins when several arrive at once (its
    /// lazy setup races; observed as a 500). One request that authenticates (`/token`, which
    /// every configuration has) before the tests start avoids that.
    pub(super) fn warm_up_reference(&self) {
        if self.cherry.starts_with("https://") {
            // (Plain-socket warm-up only; TLS stacks are used by one test at a time.)
            return;
        }
        let body = serde_json::to_vec(&self.creds()).unwrap_or_default();
        let addr = self.cherry.trim_start_matches("http://").to_owned();
        // `/token` sets up the auth path, `/login` the session tool (Salt 3006 races there
        // too); each must answer once without a 500 (`/login` is a 404 without sessions)
        // before the tests send them concurrently.
        for path in ["/token", "/login"] {
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let warmed = (0..5).any(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(500));
                }
                let ok = std::net::TcpStream::connect(&addr).ok().and_then(|mut s| {
                    use std::io::{Read, Write};
                    s.write_all(req.as_bytes()).ok()?;
                    s.write_all(&body).ok()?;
                    let mut out = String::new();
                    s.read_to_string(&mut out).ok()?;
                    Some(
                        out.starts_with("HTTP/1.1 200")
                            || (path == "/login" && out.starts_with("HTTP/1.1 404")),
                    )
                });
                ok == Some(true)
            });
            assert!(
                warmed,
                "the reference salt-api does not answer {path}; see {}",
                self.root.join("logs").display()
            );
        }
    }
}

/// Sends `req`; an answer from the reference (not from Brine) that is not `ok` is retried up
/// to three times. Salt 3006's rest_cherrypy fails concurrent logins and tokens now and then:
/// `/login` with a 500 from its session tool ("'_Serving' object has no attribute
/// 'session'"); `/token`, which runs the `auth.mk_token` runner inside the salt-api process,
/// with a 500 or with a 200 whose return is the runner's traceback (`mk_key` unlinking a
/// `.root_key` another thread already removed). Seen in `scripts/test-matrix` runs on
/// 3006.29, never on 3007 or 3008.
pub(super) async fn send_retrying_reference(
    base: &str,
    req: &Req,
    ok: impl Fn(&Resp) -> bool,
) -> Resp {
    let mut r = send(base, req).await;
    let is_reference = STACK.get().is_some_and(|st| st.cherry == base);
    for _ in 0..3 {
        if !is_reference || ok(&r) {
            break;
        }
        eprintln!(
            "the reference answered {} ({}); trying again",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        r = send(base, req).await;
    }
    r
}

/// Sends `req` to the reference. Its session-tool race (see `login`) fails a login now and
/// then with a 500: a `/login` answered 500 is asked again (a 500 it gives on purpose stays a
/// 500).
pub async fn send_reference(st: &Stack, req: &Req) -> Resp {
    let mut c = send(&st.cherry, req).await;
    if req.path.ends_with("/login") {
        for _ in 0..3 {
            if c.status != 500 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            c = send(&st.cherry, req).await;
        }
    }
    c
}

/// Per-server credentials for one test.
pub struct Sessions {
    /// Brine's `/login` token.
    pub brine: String,
    /// rest_cherrypy's `/login` session id.
    pub cherry: String,
    /// A Salt token from Brine's `/token`.
    pub brine_salt: String,
    /// A Salt token from rest_cherrypy's `/token`.
    pub cherry_salt: String,
}

/// Logs in on both servers.
pub async fn sessions(st: &Stack) -> Sessions {
    let creds = st.creds();
    Sessions {
        brine: login(&st.brine, &creds).await,
        cherry: login(&st.cherry, &creds).await,
        brine_salt: salt_token(&st.brine, &creds).await,
        cherry_salt: salt_token(&st.cherry, &creds).await,
    }
}
