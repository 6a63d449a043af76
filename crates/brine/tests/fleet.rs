//! A fleet, checked: 1 000 simulated minions (`salt-swarm`, the workspace's minion swarm, which
//! speaks the master's own protocol) on the real master, 5 % of them silent, and 20 more that
//! signed in once and went away, driven through Brine and through the Python rest_cherrypy on
//! the same master:
//!
//! * a sync `local` `test.ping` to all answers exactly as the reference's (the same minions,
//!   `true` or the same "Minion did not return. [No response]" / "[Not connected]" texts);
//! * its `saltutil.find_job` probes, read from the bus, are one publish per round for all the
//!   minions that have not returned (never one per minion);
//! * `local_async` to every answering minion, then `GET /jobs/<jid>`, holds every return;
//! * `local_batch` with `batch: 10%` gets every return;
//! * Brine's live heap is back near its baseline afterwards.
//!
//! The swarm is the `salt-swarm` library, run inside this test binary ([`start_swarm`]): its
//! minions end with it.

pub mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Simulated minions that answer (but for the silent ones).
const COUNT: usize = 1000;
/// Percentage of them that never answer a publish.
const SILENT_PERCENT: usize = 5;
/// Minions that signed in once and then went away.
const GONE: usize = 20;
/// The master's `timeout` (its default): the gathering rules' round.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A sync `local` call's answer as a map of minion id to return (jids in texts normalized).
fn returns(r: &Resp) -> BTreeMap<String, Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    normalize(&r.json()["return"][0])
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_else(|| panic!("not a map of returns: {}", r.text()))
}

/// Counts the answers by kind: `true`, and each text.
fn kinds(m: &BTreeMap<String, Value>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for v in m.values() {
        *out.entry(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_minions_through_brine_and_the_reference() {
    let st = stack_with(StackOpts {
        minions: 0,
        ..StackOpts::default()
    });
    // The ones that go away first: signed in (their grains cached), then stopped.
    // (Addresses of their own: the master tells a connected minion by its address.)
    start_swarm(st, "gone-", GONE, 0, COUNT, &[]).await.stop();
    let swarm = start_swarm(st, "swarm-", COUNT, SILENT_PERCENT, 0, &[]).await;
    let s = sessions(st).await;
    let (heap_before, _) = heap_kib(&st.brine, &s.brine).await;

    // 1. A sync `local` to all, through Brine (its bus watched for the probes), then the
    //    reference.
    let mut bus = open_sse(&st.brine, &[("X-Auth-Token", s.brine.as_str())]).await;
    assert_eq!(bus.status, 200);
    let ping = Req::post_json(
        "/",
        &json!({"client": "local", "tgt": "*", "fun": "test.ping"}),
    );
    // Both at once: each waits out the same gathering rules for the silent minions.
    let timed = |base, req| async move {
        let started = Instant::now();
        let r = send(base, &req).await;
        (r, started.elapsed())
    };
    let ((b, brine_took), (c, cherry_took)) = tokio::join!(
        timed(&st.brine, ping.clone().header("X-Auth-Token", &s.brine)),
        timed(&st.cherry, ping.header("X-Auth-Token", &s.cherry)),
    );
    let (b, c) = (returns(&b), returns(&c));
    eprintln!(
        "local test.ping to {} minions: Brine {brine_took:?} {:?}, rest_cherrypy {cherry_took:?} {:?}",
        b.len(),
        kinds(&b),
        kinds(&c)
    );
    let differ: Vec<_> = b
        .iter()
        .filter(|(id, v)| c.get(*id) != Some(v))
        .map(|(id, v)| (id, v, c.get(id)))
        .collect();
    assert!(
        differ.is_empty() && b.len() == c.len(),
        "Brine and rest_cherrypy answer differently for {} minions ({} and {} answers): {:?}",
        differ.len(),
        b.len(),
        c.len(),
        differ.iter().take(5).collect::<Vec<_>>()
    );
    let silent = COUNT * SILENT_PERCENT / 100;
    let answering: Vec<String> = b
        .iter()
        .filter(|(_, v)| **v == Value::Bool(true))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(answering.len(), COUNT - silent, "{:?}", kinds(&b));
    assert!(answering.iter().all(|id| id.starts_with("swarm-")));
    if b.values().any(|v| *v == Value::Bool(false)) {
        // A master before Salt 3008 (its LocalClient answers `false` for a minion that did not
        // return, and rest_cherrypy's answer above is the same).
        let quiet: BTreeSet<&String> = b
            .iter()
            .filter(|(_, v)| **v == Value::Bool(false))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(quiet.len(), silent + GONE, "{:?}", kinds(&b));
    } else {
        let said = |id: &str| b.get(id).and_then(Value::as_str).unwrap_or("").to_owned();
        let no_response = b
            .keys()
            .filter(|id| said(id).starts_with("Minion did not return. [No response]"))
            .count();
        let not_connected: BTreeSet<&String> = b
            .keys()
            .filter(|id| said(id).starts_with("Minion did not return. [Not connected]"))
            .collect();
        assert_eq!(no_response, silent, "{:?}", kinds(&b));
        assert_eq!(not_connected.len(), GONE, "{:?}", kinds(&b));
        assert!(not_connected.iter().all(|id| id.starts_with("gone-")));
    }

    // 2. The probes Brine's call sent: `saltutil.find_job` publishes naming one job, each for
    //    every minion still missing, at most one per round.
    bus.task.abort();
    let mut probes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    while let Ok(ev) = bus.events.try_recv() {
        let data = &ev.data["data"];
        if ev.tag.ends_with("/new") && data["fun"] == "saltutil.find_job" {
            let job = data["arg"][0].as_str().unwrap_or("").to_owned();
            let targets = data["minions"].as_array().map_or(0, Vec::len);
            probes.entry(job).or_default().push(targets);
        }
    }
    let rounds = (brine_took.as_secs_f64() / TIMEOUT.as_secs_f64()).ceil() as usize + 1;
    assert!(!probes.is_empty(), "Brine's call sent no find_job probe");
    for (job, sent) in &probes {
        assert!(
            sent.len() <= rounds,
            "job {job}: {} find_job publishes in a {brine_took:?} call ({rounds} rounds at most)",
            sent.len()
        );
        assert!(
            sent.iter().all(|&n| n >= silent),
            "job {job}: probes for fewer minions than the {silent} silent ones: {sent:?}"
        );
    }

    // 3. `local_async` to every answering minion, then `/jobs/<jid>` holds every return.
    let list = answering.join(",");
    let r = send(
        &st.brine,
        &Req::post_json(
            "/",
            &json!({"client": "local_async", "tgt": list, "tgt_type": "list", "fun": "test.ping"}),
        )
        .header("X-Auth-Token", &s.brine),
    )
    .await;
    let jid = r.json()["return"][0]["jid"]
        .as_str()
        .unwrap_or_else(|| panic!("local_async: {}", r.text()))
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = send(
            &st.brine,
            &Req::get(&format!("/jobs/{jid}")).header("X-Auth-Token", &s.brine),
        )
        .await;
        let got = r.json()["return"][0].as_object().map_or(0, |m| {
            m.values().filter(|v| **v == Value::Bool(true)).count()
        });
        if got == answering.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/jobs/{jid}: {got} of {} returns after 120 s",
            answering.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 4. `local_batch`, 10 % at a time, gets every return.
    let r = send(
        &st.brine,
        &Req::post_json(
            "/",
            &json!({"client": "local_batch", "tgt": list, "tgt_type": "list",
                    "fun": "test.ping", "batch": "10%"}),
        )
        .header("X-Auth-Token", &s.brine),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut batched = BTreeSet::new();
    for element in r.json()["return"].as_array().into_iter().flatten() {
        for (id, v) in element.as_object().into_iter().flatten() {
            assert_eq!(v, &Value::Bool(true), "{id} in the batch");
            batched.insert(id.clone());
        }
    }
    assert_eq!(batched.len(), answering.len(), "local_batch returns");

    // 5. Memory: the answers are gone; what stays is the event ring's share (within 15 s:
    //    the allocator gives freed memory back in the background).
    let deadline = Instant::now() + Duration::from_secs(15);
    let (heap_after, kept) = loop {
        let (heap_after, _) = heap_kib(&st.brine, &s.brine).await;
        let kept = send(
            &st.brine,
            &Req::get("/stats").header("X-Auth-Token", &s.brine),
        )
        .await
        .json()["Brine"]["Events Kept Bytes"]
            .as_i64()
            .unwrap_or(0)
            / 1024;
        if heap_after - kept <= heap_before + 4 * 1024 || Instant::now() >= deadline {
            break (heap_after, kept);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("Brine's live heap: {heap_before} KiB before, {heap_after} KiB after ({kept} KiB of kept events)");
    assert!(
        heap_after - kept <= heap_before + 4 * 1024,
        "live heap {heap_before} -> {heap_after} KiB ({kept} KiB of it kept events)"
    );
    swarm.stop();
}
