//! Brine in front of a master with `transport: tcp` and `ipc_mode: tcp`: the request channel
//! is msgpack over plain TCP (`head.mid` framing) and the event bus is on TCP ports instead of
//! unix sockets. Compared with rest_cherrypy on the same master.

pub mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn tcp_transport_and_tcp_event_bus() {
    let st = stack_with(StackOpts {
        transport: "tcp",
        ipc_mode: "tcp",
        ..StackOpts::default()
    });
    let s = sessions(st).await;
    for (what, chunk) in [
        (
            "local",
            json!({"client": "local", "tgt": "*", "fun": "test.ping"}),
        ),
        (
            "local full_return",
            json!({"client": "local", "tgt": "m1", "fun": "test.arg", "arg": ["a"], "full_return": true}),
        ),
        (
            "local_async",
            json!({"client": "local_async", "tgt": "*", "fun": "test.ping"}),
        ),
        (
            "runner",
            json!({"client": "runner", "fun": "test.arg", "arg": ["x", "k=2"]}),
        ),
        ("wheel", json!({"client": "wheel", "fun": "key.list_all"})),
    ] {
        let req = Req::post_json("/", &chunk);
        let (b, _) = same_session(st, &s, what, &req).await;
        assert_eq!(b.status, 200, "{what}: {}", b.text());
    }
    let r = send(
        &st.brine,
        &Req::post_json(
            "/",
            &json!({"client": "local", "tgt": "*", "fun": "test.ping"}),
        )
        .header("X-Auth-Token", &s.brine),
    )
    .await;
    assert_eq!(r.json()["return"][0], json!({"m1": true, "m2": true}));
    // Logout fires its revocation event on the TCP pull port, then the token is refused.
    let r = send(
        &st.brine,
        &Req::post_json("/logout", &json!({})).header("X-Auth-Token", &s.brine),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(
        &st.brine,
        &Req::post_json(
            "/",
            &json!({"client": "local", "tgt": "m1", "fun": "test.ping"}),
        )
        .header("X-Auth-Token", &s.brine),
    )
    .await;
    assert_eq!(r.status, 401);
}
