//! Brine's job paging (`GET /jobs?limit=N`) against a real master whose job cache holds
//! 10 000 jobs written by Salt's own `local_cache` returner (`scripts/seed-jobs`): a Brine
//! started after the seeding indexes them at start, pages walk every job once, newest first,
//! each listed exactly as `jobs.list_jobs` lists it; filters pick what `jobs.list_jobs`
//! would; a job started through the bus shows up at once; and a user the master does not
//! let run `jobs.list_jobs` is refused exactly as `GET /jobs` refuses them (and as the
//! reference does). Then one job followed to its end: `GET /jobs/<jid>/status` while it runs
//! and after, `GET /jobs/<jid>?wait=` answering within 100 ms of the last return (timed
//! against the return on an event stream), and a stopped minion reported `missing` once
//! Salt's rules give up on it (the master's `timeout` and `gather_job_timeout` are 2 s here).
//! And one job's feed (`GET /jobs/<jid>/events`) opened when about half of 20 simulated
//! minions (`salt-swarm`, two of them silent) have returned: every return once, then
//! `brine/job/<jid>/complete` naming the silent two `missing`; resumed from the middle with
//! `Last-Event-ID`, exactly what came after.

#![allow(clippy::unwrap_used, clippy::expect_used)] // for its helpers; see clippy.toml

pub mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Map, Value};

const SEEDED: usize = 10_000;

/// Held by the tests that start jobs: the walk compares the job cache at two moments and
/// must not see another test's jobs (runner calls included) appear in between.
static JOBS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn st() -> &'static Stack {
    stack_with(StackOpts {
        minions: 2,
        extra_config: "timeout: 2\ngather_job_timeout: 2",
        ..StackOpts::default()
    })
}

/// Writes `count` jobs into the master's job cache; their jids, oldest first.
fn seed(st: &Stack, count: usize) -> Vec<String> {
    let started = Instant::now();
    let out = Command::new(st.venv.join("bin/python"))
        .arg(repo().join("scripts/seed-jobs"))
        .arg("--master-config")
        .arg(st.info["master_config"].as_str().expect("master_config"))
        .args(["--count", &count.to_string(), "--minion", "m1"])
        .output()
        .expect("seed-jobs");
    assert!(
        out.status.success(),
        "seed-jobs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(jids.len(), count);
    eprintln!(
        "seeded {count} jobs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    jids
}

async fn get(base: &str, token: &str, path: &str) -> Resp {
    send(base, &Req::get(path).header("X-Auth-Token", token)).await
}

/// Every page from `first`, following `_links.next`: the jobs in the order served.
async fn walk(base: &str, token: &str, first: &str, limit: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut path = Some(first.to_owned());
    let mut pages = 0;
    while let Some(p) = path {
        let r = get(base, token, &p).await;
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        let body = r.json();
        let jobs = body["return"][0]
            .as_object()
            .expect("a map of jobs")
            .clone();
        assert!(jobs.len() <= limit, "{p}: {} jobs", jobs.len());
        out.extend(jobs);
        path = body["_links"]["next"].as_str().map(str::to_owned);
        if path.is_some() {
            assert_eq!(
                body["return"][0].as_object().map(Map::len),
                Some(limit),
                "{p}"
            );
        }
        pages += 1;
        assert!(pages <= 100_000 / limit.max(1) + 2, "no end of pages");
    }
    out
}

#[tokio::test]
async fn pages_walk_the_job_cache_as_jobs_list_jobs_lists_it() {
    let _alone = JOBS.lock().await;
    let st = st();
    let seeded = seed(st, SEEDED);
    // This Brine starts after the seeding: its index comes from the scan of the cache.
    let brine = st.spawn_extra_brine("jobs-index");
    let token = login(&brine.url, &st.creds()).await;
    // The first paged request asks the master whether this token may list jobs: a runner
    // job of its own, which the master stores when it ends. Once the index has it, the walk
    // and the master's listing below see the same cache.
    let r = get(&brine.url, &token, "/jobs?limit=1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(
        &brine.url,
        &token,
        "/jobs?limit=1&fun=runner.jobs.list_jobs",
    )
    .await
    .json()["return"][0]
        .as_object()
        .is_none_or(Map::is_empty)
    {
        assert!(
            Instant::now() < deadline,
            "the access check's job never showed up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // That first runner call also made this Brine fetch the master's runner list
    // (`doc.runner`, a runner job of its own, stored when it ends): wait until the index has
    // stopped growing for 2 s.
    let (mut last, mut same) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while same < 4 {
        assert!(Instant::now() < deadline, "the job index kept growing");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = get(&brine.url, &token, "/stats").await.json()["Brine"]["Job Index Jobs"]
            .as_u64()
            .unwrap_or(0);
        (last, same) = (now, if now == last { same + 1 } else { 0 });
    }
    // The pages come from the index (not from jobs.list_jobs, which Brine falls back to).
    let stats = get(&brine.url, &token, "/stats").await.json();
    let indexed = stats["Brine"]["Job Index Jobs"].as_u64().unwrap_or(0);
    assert!(
        indexed >= SEEDED as u64,
        "{indexed} jobs in the index: {}",
        stats["Brine"]
    );
    let started = Instant::now();
    let paged = walk(&brine.url, &token, "/jobs?limit=1000", 1000).await;
    eprintln!(
        "walked {} jobs in {:.2} s",
        paged.len(),
        started.elapsed().as_secs_f64()
    );
    // The master's own listing of the same cache.
    let all = get(&brine.url, &token, "/jobs").await;
    assert_eq!(all.status, 200, "{}", all.text());
    let all = all.json()["return"][0].as_object().cloned().expect("jobs");
    assert!(all.len() >= SEEDED, "{} jobs listed", all.len());
    let mut want: Vec<&String> = all.keys().collect();
    want.sort();
    want.reverse();
    let got: Vec<&String> = paged.iter().map(|(j, _)| j).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "paged {} of {} jobs",
        got.len(),
        want.len()
    );
    assert_eq!(got, want, "every job once, newest first");
    for (jid, job) in &paged {
        assert_eq!(Some(job), all.get(jid), "{jid} as jobs.list_jobs lists it");
    }
    assert!(seeded.iter().all(|j| all.contains_key(j)));

    // Filters: what jobs.list_jobs' entries say, newest first.
    let filtered = walk(
        &brine.url,
        &token,
        "/jobs?limit=500&fun=state.*&user=alice&tgt=web*",
        500,
    )
    .await;
    let mut want: Vec<&String> = all
        .iter()
        .filter(|(_, j)| {
            j["Function"] == "state.apply" && j["User"] == "alice" && j["Target"] == "web*"
        })
        .map(|(jid, _)| jid)
        .collect();
    want.sort();
    want.reverse();
    assert!(!want.is_empty());
    assert_eq!(filtered.iter().map(|(j, _)| j).collect::<Vec<_>>(), want);
    // `before` starts below a jid.
    let mid = &seeded[SEEDED / 2];
    let r = get(&brine.url, &token, &format!("/jobs?limit=3&before={mid}")).await;
    let page: Vec<String> = r.json()["return"][0]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(
        page,
        vec![
            seeded[SEEDED / 2 - 1].clone(),
            seeded[SEEDED / 2 - 2].clone(),
            seeded[SEEDED / 2 - 3].clone()
        ]
    );

    // A job started now is on the first page as soon as its load is in the cache.
    let jid = ping_async(&brine.url, &token, "m1").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(&brine.url, &token, "/jobs?limit=1&fun=test.ping").await;
        let first = r.json()["return"][0]
            .as_object()
            .and_then(|m| m.keys().next().cloned());
        if first.as_deref() == Some(jid.as_str()) {
            assert_eq!(r.json()["return"][0][&jid]["Target"], "m1", "{}", r.text());
            break;
        }
        assert!(Instant::now() < deadline, "{jid} not indexed: {}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bad_pages_and_refusals() {
    let st = st();
    let token = login(&st.brine, &st.creds()).await;
    for (path, status) in [
        ("/jobs?limit=0", 400),
        ("/jobs?limit=1001", 400),
        ("/jobs?limit=ten", 400),
        ("/jobs?fun=test.*", 400),
        ("/jobs?limit=5&fun=", 400),
        // Unknown parameters are CherryPy's 404, as before.
        ("/jobs?limit=5&page=2", 404),
    ] {
        let r = get(&st.brine, &token, path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
    }
    // A user the master does not let run runners: refused as GET /jobs refuses them, here
    // and in the reference.
    let limited = json!({"username": "limited", "password": "x", "eauth": "auto"});
    let (b, c) = (
        login(&st.brine, &limited).await,
        login(&st.cherry, &limited).await,
    );
    let plain = get(&st.brine, &b, "/jobs").await;
    let paged = get(&st.brine, &b, "/jobs?limit=5").await;
    let reference = get(&st.cherry, &c, "/jobs").await;
    assert_ne!(plain.status, 200, "{}", plain.text());
    assert_eq!(shape(&paged), shape(&plain));
    assert_eq!(shape(&paged), shape(&reference));
    // And as GET /jobs/<jid> refuses them, for the one-job routes.
    let jid = "20200101000000000000";
    let plain = get(&st.brine, &b, &format!("/jobs/{jid}")).await;
    let reference = get(&st.cherry, &c, &format!("/jobs/{jid}")).await;
    assert_ne!(plain.status, 200, "{}", plain.text());
    assert_eq!(shape(&plain), shape(&reference));
    for path in [
        format!("/jobs/{jid}/status"),
        format!("/jobs/{jid}?wait=5"),
        format!("/jobs/{jid}/events"),
    ] {
        let r = get(&st.brine, &b, &path).await;
        assert_eq!(shape(&r), shape(&plain), "{path}");
    }
    // No token: 401 before anything else.
    let r = send(&st.brine, &Req::get("/jobs?limit=5")).await;
    assert_eq!(r.status, 401, "{}", r.text());
}

async fn status(base: &str, token: &str, jid: &str) -> Value {
    let r = get(base, token, &format!("/jobs/{jid}/status")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["return"][0].clone()
}

#[tokio::test]
async fn a_job_followed_to_its_end() {
    let _alone = JOBS.lock().await;
    let st = st();
    let token = login(&st.brine, &st.creds()).await;
    // The return as an event stream sees it: the reference time of `wait`.
    let mut rets = open_sse_at(
        &st.brine,
        "/events?tag=salt/job/*/ret/m1",
        &[("X-Auth-Token", &token)],
    )
    .await;
    let r = send(
        &st.brine,
        &Req::post_json(
            "/",
            &json!({"client": "local_async", "tgt": "m1", "fun": "test.sleep", "arg": [2]}),
        )
        .header("X-Auth-Token", &token),
    )
    .await;
    let jid = r.json()["return"][0]["jid"]
        .as_str()
        .expect("jid")
        .to_owned();
    let running = status(&st.brine, &token, &jid).await;
    assert_eq!(
        running,
        json!({"jid": jid, "state": "running", "minions": ["m1"], "returned": [], "missing": []})
    );
    let waited = get(&st.brine, &token, &format!("/jobs/{jid}?wait=30")).await;
    let answered = Instant::now();
    assert_eq!(waited.status, 200, "{}", waited.text());
    assert_eq!(
        waited.json()["return"][0],
        json!({"m1": true}),
        "{}",
        waited.text()
    );
    let ret = rets
        .next_tagged(&format!("salt/job/{jid}/ret/m1"), Duration::from_secs(5))
        .await
        .expect("the return on the stream");
    let _ = ret;
    let returned_at = Instant::now();
    // The stream may deliver after the answer or before it: either way, within 100 ms.
    let apart = answered.max(returned_at) - answered.min(returned_at);
    assert!(
        apart < Duration::from_millis(100),
        "wait answered {apart:?} from the return"
    );
    rets.task.abort();
    assert_eq!(
        status(&st.brine, &token, &jid).await,
        json!({"jid": jid, "state": "complete", "minions": ["m1"], "returned": ["m1"], "missing": []})
    );
    // A job that is not over in time: the record as it stands after `wait`.
    let jid = {
        let r = send(
            &st.brine,
            &Req::post_json(
                "/",
                &json!({"client": "local_async", "tgt": "m1", "fun": "test.sleep", "arg": [4]}),
            )
            .header("X-Auth-Token", &token),
        )
        .await;
        r.json()["return"][0]["jid"]
            .as_str()
            .expect("jid")
            .to_owned()
    };
    let started = Instant::now();
    let r = get(&st.brine, &token, &format!("/jobs/{jid}?wait=1")).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["return"][0], json!({}), "{}", r.text());
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Unknown jobs, and the bounds of wait.
    let unknown = status(&st.brine, &token, "20200101000000000000").await;
    assert_eq!(unknown["state"], "unknown", "{unknown}");
    for bad in ["0", "-1", "x", "100000"] {
        let r = get(&st.brine, &token, &format!("/jobs/{jid}?wait={bad}")).await;
        assert_eq!(r.status, 400, "wait={bad}: {}", r.text());
    }

    // A minion that is down: missing once the rules give up (timeout 2 s, one probe round,
    // gather_job_timeout 2 s).
    let pid = st.info["pids"]["m2"].as_i64().unwrap_or(0);
    assert!(pid > 1);
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pid}")])
        .status();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let jid = ping_async(&st.brine, &token, "*").await;
    let started = Instant::now();
    let r = get(&st.brine, &token, &format!("/jobs/{jid}?wait=30")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["return"][0], json!({"m1": true}), "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let done = status(&st.brine, &token, &jid).await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["returned"], json!(["m1"]), "{done}");
    assert_eq!(done["missing"], json!(["m2"]), "{done}");
}

/// Every event of a stream until it ends (at most `limit`).
async fn all_events(mut s: SseStream, limit: Duration) -> Vec<SseEvent> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, s.events.recv()).await {
            Ok(Some(ev)) => out.push(ev),
            Ok(None) => return out,
            Err(_) => panic!(
                "the stream did not end within {limit:?}; it sent {:?}",
                out.iter().map(|e| &e.tag).collect::<Vec<_>>()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_feed_opened_half_way() {
    let _alone = JOBS.lock().await;
    let st = st();
    // 20 minions answering test.ping after 0.2 to 6 s, 2 of them never.
    let swarm = start_swarm(st, "feed-", 20, 10, 0, &["test.ping=200ms..6s"]).await;
    let silent: Vec<String> = swarm.silent().to_vec();
    assert_eq!(silent.len(), 2, "{silent:?}");
    let token = login(&st.brine, &st.creds()).await;
    let jid = ping_async(&st.brine, &token, "feed-*").await;
    // Half of the 18 returns in.
    let started = Instant::now();
    let before = loop {
        let s = status(&st.brine, &token, &jid).await;
        let n = s["returned"].as_array().map_or(0, Vec::len);
        if n >= 9 {
            break n;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(before < 18, "all returned before the feed opened");
    let feed = open_sse_at(
        &st.brine,
        &format!("/jobs/{jid}/events"),
        &[("X-Auth-Token", &token)],
    )
    .await;
    assert_eq!(feed.status, 200);
    let events = all_events(feed, Duration::from_secs(60)).await;
    let tags: Vec<&str> = events.iter().map(|e| e.tag.as_str()).collect();
    // Its `new` (on the bus it may come after a quick minion's return).
    let new = format!("salt/job/{jid}/new");
    assert_eq!(tags.iter().filter(|t| **t == new).count(), 1, "{tags:?}");
    let complete = format!("brine/job/{jid}/complete");
    assert_eq!(tags.last(), Some(&complete.as_str()), "{tags:?}");
    assert!(events.iter().all(|e| e.id.is_some()), "{tags:?}");
    // Every answering minion's return, once.
    let prefix = format!("salt/job/{jid}/ret/");
    let mut returned: Vec<String> = tags
        .iter()
        .filter_map(|t| t.strip_prefix(prefix.as_str()))
        .map(str::to_owned)
        .collect();
    let count = returned.len();
    returned.sort();
    returned.dedup();
    assert_eq!(count, returned.len(), "a return came twice: {tags:?}");
    let all: Vec<String> = swarm.ids().to_vec();
    let mut answering: Vec<String> = all
        .iter()
        .filter(|m| !silent.contains(m))
        .cloned()
        .collect();
    answering.sort();
    assert_eq!(returned, answering, "{tags:?}");
    for e in &events {
        if e.tag.starts_with(&prefix) {
            assert_eq!(e.data["data"]["return"], json!(true), "{e:?}");
        }
    }
    // The verdict: the silent two are missing.
    let verdict = &events[events.len() - 1].data["data"];
    let sorted = |v: &Value| {
        let mut out: Vec<String> = v
            .as_array()
            .unwrap_or_else(|| panic!("a list: {v}"))
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
        out.sort();
        out
    };
    assert_eq!(verdict["jid"], json!(jid), "{verdict}");
    assert_eq!(sorted(&verdict["returned"]), answering, "{verdict}");
    let mut missing = silent.clone();
    missing.sort();
    assert_eq!(sorted(&verdict["missing"]), missing, "{verdict}");
    let mut targeted = all.clone();
    targeted.sort();
    assert_eq!(sorted(&verdict["minions"]), targeted, "{verdict}");

    // Resumed from the middle: exactly what came after, then the verdict again.
    let middle = &events[events.len() / 2];
    let after: Vec<&str> = events[events.len() / 2 + 1..events.len() - 1]
        .iter()
        .map(|e| e.tag.as_str())
        .collect();
    let id = middle.id.unwrap_or_default().to_string();
    let resumed = open_sse_at(
        &st.brine,
        &format!("/jobs/{jid}/events"),
        &[("X-Auth-Token", &token), ("Last-Event-ID", &id)],
    )
    .await;
    let again = all_events(resumed, Duration::from_secs(30)).await;
    let again_tags: Vec<&str> = again.iter().map(|e| e.tag.as_str()).collect();
    assert_eq!(
        again_tags[..again_tags.len() - 1],
        after[..],
        "{again_tags:?}"
    );
    assert_eq!(again_tags.last(), Some(&complete.as_str()));
    assert_eq!(again[again.len() - 1].data["data"], *verdict);

    // A job the master does not know: 404; no token: 401.
    let r = get(&st.brine, &token, "/jobs/20200101000000000000/events").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = send(&st.brine, &Req::get(&format!("/jobs/{jid}/events"))).await;
    assert_eq!(r.status, 401, "{}", r.text());
    swarm.stop();
    // Their keys go: the other tests target `*`.
    let out = Command::new(st.venv.join("bin/salt-key"))
        .arg("-c")
        .arg(st.config_dir())
        .args(["-d", "feed-*", "-y"])
        .output()
        .expect("salt-key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
