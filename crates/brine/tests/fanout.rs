//! Fan-out at scale from Brine's one bus subscription: 1 000 SSE clients and 100 WebSocket
//! clients all receive every event of a burst of jobs, in order, while Brine stays under
//! 100 MiB; clients that never read are disconnected without costing the others anything, and
//! what they hold up in Brine's heap stays within `event_ring_bytes` and `stream_buffer_bytes`.

pub mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The two tests load the same Brine heavily: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stack_no_ref() -> &'static Stack {
    stack_with(StackOpts {
        reference: false,
        // Streams may fall 16 MiB behind (the default is 64 MiB), so that the clients that
        // never read are cut off within the ~24 MB the slow-client test sends.
        extra_config: "brine: {login_rate_limit: 0, stream_buffer_bytes: 16777216}",
        ..StackOpts::default()
    })
}

/// Runs `n` `local_async` jobs and returns their jids.
async fn burst(st: &Stack, token: &str, n: usize) -> Vec<String> {
    let mut jids = Vec::new();
    for _ in 0..n {
        let r = send(
            &st.brine,
            &Req::post_json(
                "/",
                &json!({"client": "local_async", "tgt": "*", "fun": "test.ping"}),
            )
            .header("X-Auth-Token", token),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        jids.push(
            r.json()["return"][0]["jid"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    jids
}

/// Every `new` and `ret` tag the jobs produce (2 minions each).
fn expected_tags(jids: &[String]) -> HashSet<String> {
    jids.iter()
        .flat_map(|j| {
            [
                format!("salt/job/{j}/new"),
                format!("salt/job/{j}/ret/m1"),
                format!("salt/job/{j}/ret/m2"),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sse_and_a_hundred_ws_clients_get_every_event_in_order() {
    let _serial = SERIAL.lock().await;
    let st = stack_no_ref();
    let token = login(&st.brine, &st.creds()).await;
    let pid = st.brine_pid();
    let idle_rss = rss_kib(pid);
    // Open 1000 SSE streams.
    let mut sse = Vec::new();
    for _ in 0..1000 {
        sse.push(open_sse(&st.brine, &[("X-Auth-Token", &token)]).await);
    }
    assert!(sse.iter().all(|s| s.status == 200));
    // And 100 WebSockets (tornado's /all_events: bare JSON frames).
    let (wtx, mut wrx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    for i in 0..100 {
        let url = format!(
            "{}/all_events/{token}",
            st.brine.replace("http://", "ws://")
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("ws {i}: {e}"));
        let _ = ws.send(Message::text("websocket client ready")).await;
        let wtx = wtx.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let tag = serde_json::from_str::<Value>(&t)
                        .ok()
                        .and_then(|v| v["tag"].as_str().map(str::to_owned));
                    if let Some(tag) = tag {
                        let _ = wtx.send((i, tag));
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let jids = burst(st, &token, 10).await;
    let want = expected_tags(&jids);
    let mut peak = rss_kib(pid);
    // Collect until every SSE client has every tag, or time runs out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut per_client: Vec<Vec<(u64, String)>> = vec![Vec::new(); sse.len()];
    for (i, s) in sse.iter_mut().enumerate() {
        while per_client[i]
            .iter()
            .filter(|(_, t)| want.contains(t))
            .count()
            < want.len()
        {
            match tokio::time::timeout_at(deadline, s.events.recv()).await {
                Ok(Some(ev)) => per_client[i].push((ev.id.unwrap_or(0), ev.tag)),
                _ => break,
            }
        }
        if i % 100 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    // Every client: every event of the burst, and the same order as every other client.
    let reference: Vec<(u64, String)> = per_client[0]
        .iter()
        .filter(|(_, t)| want.contains(t))
        .cloned()
        .collect();
    assert_eq!(reference.len(), want.len(), "client 0 got {reference:?}");
    assert!(
        reference.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase"
    );
    for (i, got) in per_client.iter().enumerate() {
        let mine: Vec<(u64, String)> = got
            .iter()
            .filter(|(_, t)| want.contains(t))
            .cloned()
            .collect();
        assert_eq!(mine, reference, "SSE client {i} differs");
    }
    // WebSocket clients: every tag, in the same order.
    let mut ws_tags: Vec<Vec<String>> = vec![Vec::new(); 100];
    let ws_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ws_tags
        .iter()
        .any(|t| t.iter().filter(|x| want.contains(*x)).count() < want.len())
    {
        match tokio::time::timeout_at(ws_deadline, wrx.recv()).await {
            Ok(Some((i, tag))) => ws_tags[i].push(tag),
            _ => break,
        }
    }
    let order: Vec<String> = reference.iter().map(|(_, t)| t.clone()).collect();
    for (i, tags) in ws_tags.iter().enumerate() {
        let mine: Vec<String> = tags.iter().filter(|t| want.contains(*t)).cloned().collect();
        assert_eq!(mine, order, "WebSocket client {i} differs");
    }
    peak = peak.max(rss_kib(pid));
    eprintln!("Brine RSS: idle {idle_rss} KiB, peak with 1100 streams {peak} KiB");
    assert!(peak < 100 * 1024, "Brine RSS {peak} KiB with 1100 streams");
    for s in &sse {
        s.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_dropped_and_the_others_get_everything() {
    let _serial = SERIAL.lock().await;
    let st = stack_no_ref();
    let token = login(&st.brine, &st.creds()).await;
    let pid = st.brine_pid();
    // 10 clients that open a stream and never read a byte.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut s = tokio::net::TcpStream::connect(st.brine.trim_start_matches("http://"))
            .await
            .unwrap();
        use tokio::io::AsyncWriteExt;
        let req = format!("GET /events HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n\r\n");
        let _ = s.write_all(req.as_bytes()).await;
        stalled.push(s);
    }
    // 20 clients that read.
    let mut readers = Vec::new();
    for _ in 0..20 {
        readers.push(open_sse(&st.brine, &[("X-Auth-Token", &token)]).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_heap = heap_kib(&st.brine, &token).await.0;
    // Four rounds of 150 events of ~40 KB (24 MB of stream data in all): enough to fill the
    // stalled clients' socket buffers and queues. Events are shared: what they can hold on to
    // is the replay ring (`event_ring_bytes`, 16 MiB by default) or, for a stream behind
    // it, up to `stream_buffer_bytes` (16 MiB here), after which the stream is cut off. So
    // Brine's live heap must stay within those two of its idle size, and stop growing once
    // the ring is full (during the third round); RSS is reported (it follows the allocator's
    // purging, seconds later).
    let blob = "x".repeat(40_000);
    let mut rss = Vec::new();
    let mut heap = Vec::new();
    for round in 0..4 {
        let mut fired = Vec::new();
        for n in 0..150 {
            let path = format!("fanout/slow/{round}/{n}");
            fire_hook(&st.brine, &token, &path, &json!({"blob": blob})).await;
            fired.push(format!("salt/netapi/hook/{path}"));
        }
        let want: HashSet<String> = fired.iter().cloned().collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for (i, r) in readers.iter_mut().enumerate() {
            let mut got = Vec::new();
            while got.len() < fired.len() {
                match tokio::time::timeout_at(deadline, r.events.recv()).await {
                    Ok(Some(ev)) if want.contains(&ev.tag) => got.push(ev.tag),
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            assert_eq!(got, fired, "round {round}: reader {i} missed events");
        }
        rss.push(rss_kib(pid));
        heap.push(heap_kib(&st.brine, &token).await.0);
    }
    // The stalled clients were disconnected, with a log line each (the watchdog cuts a stream
    // off once it is `stream_buffer_bytes` behind the bus, or its socket has taken nothing for
    // `STALL` while it owes events).
    let by = tokio::time::Instant::now() + Duration::from_secs(15);
    let drops = loop {
        let drops = st.brine_log().matches("does not keep up").count();
        if drops >= 10 || tokio::time::Instant::now() > by {
            break drops;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(drops >= 10, "{drops} slow-client disconnects logged");
    eprintln!(
        "Brine after each round: RSS {rss:?} KiB, live heap {heap:?} KiB (idle {idle_heap} KiB)"
    );
    const MIB: i64 = 1024;
    assert!(
        heap.iter()
            .all(|&h| h < idle_heap + 16 * MIB + 16 * MIB + 4 * MIB),
        "live heap beyond the ring and the stream buffer: {heap:?} KiB, idle {idle_heap} KiB"
    );
    assert!(
        heap[3] < heap[2] + 4 * MIB,
        "live heap still growing with a full ring: {heap:?} KiB"
    );
    for r in &readers {
        r.task.abort();
    }
    drop(stalled);
}
