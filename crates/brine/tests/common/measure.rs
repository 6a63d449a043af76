//! What a process uses, for the resource tests: open descriptors, resident memory and CPU time
//! from /proc, and Brine's heap from its `/stats`.

use super::{send, Req};

/// How many descriptors a process has open (from /proc); `None` when it cannot be read.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .ok()
}

/// Brine's heap from `/stats` (jemalloc's allocated and resident bytes), in KiB; both must
/// be there and make sense (something allocated, no more than the allocator holds).
pub async fn heap_kib(base: &str, token: &str) -> (i64, i64) {
    let r = send(base, &Req::get("/stats").header("X-Auth-Token", token)).await;
    let s = &r.json()["Brine"];
    let bytes = |k: &str| {
        s[k].as_i64()
            .unwrap_or_else(|| panic!("no {k} in /stats: {s}"))
    };
    let (allocated, resident) = (bytes("Heap Allocated Bytes"), bytes("Heap Resident Bytes"));
    assert!(
        allocated > 0 && resident >= allocated,
        "heap figures in /stats: {s}"
    );
    (allocated / 1024, resident / 1024)
}

/// Brine's resident memory in KiB (from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat` (in clock ticks of
/// 1/100 s, the value of `USER_HZ` on Linux); 0 when it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}
