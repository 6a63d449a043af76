//! Salt's gathering rules for the sync `local` client, compared with rest_cherrypy on the same
//! master: `saltutil.find_job` keeps waiting for a minion that still runs the job past
//! `timeout`, and a minion that is down is reported with Salt's "Minion did not return" text.

pub mod common;

use std::time::Instant;

use common::*;
use serde_json::json;

fn stack3() -> &'static Stack {
    stack_with(StackOpts {
        minions: 3,
        ..StackOpts::default()
    })
}

#[tokio::test]
async fn find_job_extends_the_wait_for_a_running_job() {
    let st = stack3();
    let s = sessions(st).await;
    let chunk =
        json!({"client": "local", "tgt": "m1", "fun": "test.sleep", "arg": [4], "timeout": 1});
    let req = Req::post_json("/", &chunk);
    let started = Instant::now();
    let b = send(&st.brine, &req.clone().header("X-Auth-Token", &s.brine)).await;
    let took = started.elapsed().as_secs_f64();
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(b.json()["return"][0], json!({"m1": true}));
    assert!(
        took >= 3.5,
        "returned after {took} s, before the job could finish"
    );
    let c = send(&st.cherry, &req.header("X-Auth-Token", &s.cherry)).await;
    assert_eq!(shape(&b), shape(&c));
}

#[tokio::test]
async fn a_stopped_minion_did_not_return() {
    let st = stack3();
    let s = sessions(st).await;
    // Stop m3 (its own process group).
    let pid = st.info["pids"]["m3"].as_i64().unwrap_or(0);
    assert!(pid > 1);
    let _ = std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .status();
    std::thread::sleep(std::time::Duration::from_secs(2));
    for (what, chunk) in [
        (
            "plain",
            json!({"client": "local", "tgt": "*", "fun": "test.ping", "timeout": 2, "gather_job_timeout": 2}),
        ),
        (
            "full_return",
            json!({"client": "local", "tgt": "*", "fun": "test.ping", "timeout": 2, "gather_job_timeout": 2, "full_return": true}),
        ),
    ] {
        let req = Req::post_json("/", &chunk);
        let b = send(&st.brine, &req.clone().header("X-Auth-Token", &s.brine)).await;
        let c = send(&st.cherry, &req.clone().header("X-Auth-Token", &s.cherry)).await;
        // Before Salt 3008 the LocalClient reports a minion that did not return as `false`
        // (3008's gives the "did not return" text); Brine answers as the master's release does.
        assert_eq!(
            shape(&b),
            shape(&c),
            "{what}: Brine (left) and rest_cherrypy (right) differ"
        );
        let ret = &b.json()["return"][0];
        assert_eq!(
            ret["m1"],
            if what == "plain" {
                json!(true)
            } else {
                ret["m1"].clone()
            }
        );
        // (`false` stays `false` with `full_return` too.)
        let m3 = if what == "plain" || ret["m3"] == json!(false) {
            ret["m3"].clone()
        } else {
            ret["m3"]["ret"].clone()
        };
        assert!(
            m3 == json!(false)
                || m3
                    .as_str()
                    .is_some_and(|t| t.starts_with("Minion did not return.")),
            "{ret}"
        );
    }
}
