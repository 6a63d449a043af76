"""Soak test: mixed load against Brine for a long time, with its memory and descriptors logged.

Started by scripts/soak (which builds the release binaries first); not part of CI. It starts a
private stack (scripts/saltstack.py: salt-master and minions, no Python salt-api) with Brine in
front, holds --idle-streams /events streams open the whole time, and cycles through checked
load runs of brine-bench (login, runner, wheel, local, 50 local_async jobs, an SSE fan-out) until
--minutes have passed. Every --sample seconds it records Brine's RSS, open descriptors and the
/stats figures (streams open, job waiters, master requests in flight, the allocator's heap
allocated and resident bytes) in a CSV file.

At the end it prints a summary and exits non-zero if a load run had a request Brine got wrong
(requests the master failed itself, with its own exception text, are counted apart), an idle
stream was dropped, or Brine's RSS or descriptor count in the last fifth of the run is clearly
above the second fifth (growth that does not level off).
"""

import argparse
import csv
import datetime
import json
import os
import selectors
import socket
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the stack and the driver runners)

log = bench.log


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def kib(v):
    """Bytes from /stats as KiB (None when missing or unknown, -1)."""
    return v // 1024 if isinstance(v, int) and v >= 0 else None


def stats(base, token):
    req = urllib.request.Request(base + "/stats", headers={"X-Auth-Token": token, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r).get("Brine", {})
    except (OSError, ValueError):
        return {}


class IdleStreams:
    """N /events streams read and discarded; a stream that ends is counted and reopened."""

    def __init__(self, base, token, n):
        self.addr = base.split("://", 1)[1]
        self.token, self.n = token, n
        self.sel = selectors.DefaultSelector()
        self.dropped = 0
        self.bytes = 0
        self.stop = threading.Event()
        for _ in range(n):
            self.open()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def open(self):
        host, port = self.addr.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(f"GET /events HTTP/1.1\r\nHost: {self.addr}\r\nAccept: text/event-stream\r\n"
                  f"X-Auth-Token: {self.token}\r\n\r\n".encode())
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)

    def run(self):
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.5):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self.bytes += len(data)
                    continue
                self.sel.unregister(s)
                s.close()
                if not self.stop.is_set():
                    self.dropped += 1
                    try:
                        self.open()
                    except OSError as e:
                        log(f"cannot reopen an idle stream: {e}")

    def close(self):
        self.stop.set()
        self.thread.join()
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="how long to run")
    ap.add_argument("--minions", type=int, default=2)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--idle-streams", type=int, default=200, help="/events streams held open throughout")
    ap.add_argument("--run-seconds", type=float, default=15.0, help="length of one load run")
    ap.add_argument("--bin-dir", default=os.path.join(bench.REPO, "target", "release"))
    ap.add_argument("--out", default=None, help="CSV file (default target/soak/<time>.csv)")
    args = ap.parse_args()
    out = args.out or os.path.join(bench.REPO, "target", "soak",
                                   datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S") + ".csv")
    os.makedirs(os.path.dirname(out), exist_ok=True)

    stack = bench.Stack(args.minions, args.bin_dir, "multiprocessing: false", "", references=False,
                        prefix="brine-soak-")
    base, pid = stack.urls["brine"], stack.pids["brine"]
    token = bench.login(base)
    run_args = argparse.Namespace(seconds=args.run_seconds, jobs=50, timeout=60, async_timeout=120, async_quiet=0,
                                  events=20,
                                  sse_connect_timeout=60, sse_drain=10)
    failures, runs, master_faults = [], 0, 0
    samples = []
    stop = threading.Event()

    def sampler():
        t0 = time.monotonic()
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seconds", "rss_kib", "fds", "streams_open", "job_waiters", "master_in_flight",
                        "requests_total", "heap_allocated_kib", "heap_resident_kib"])
            while not stop.is_set():
                s = stats(base, token)
                rss = bench.rss_mib(pid)
                row = [round(time.monotonic() - t0, 1), int(rss * 1024) if rss else None, fds(pid),
                       s.get("Streams Open"), s.get("Job Waiters"), s.get("Master Requests In Flight"),
                       s.get("Total Requests"), kib(s.get("Heap Allocated Bytes")),
                       kib(s.get("Heap Resident Bytes"))]
                w.writerow(row)
                f.flush()
                samples.append(row)
                stop.wait(args.sample)

    idle = IdleStreams(base, token, args.idle_streams)
    sample_thread = threading.Thread(target=sampler, daemon=True)
    sample_thread.start()
    plan = [("login", 10), ("runner", 10), ("wheel", 10), ("local", 5), ("async", 50), ("sse", 200)]
    deadline = time.monotonic() + args.minutes * 60
    log(f"soaking Brine (pid {pid}) for {args.minutes:g} min; samples in {out}")
    try:
        while time.monotonic() < deadline:
            for scenario, n in plan:
                if time.monotonic() >= deadline:
                    break
                runs += 1
                if scenario == "sse":
                    res = bench.run_sse(stack, "brine", token, n, run_args)
                    bad = res.get("delivered_pct") != 100.0
                else:
                    res = bench.run_load(stack, "brine", scenario, n, run_args)
                    # Errors the master answered itself (its own exception text, e.g. two
                    # master workers drawing the same jid) are counted, not held against Brine.
                    master = res.get("master_errors", 0)
                    master_faults += master
                    bad = res.get("errors", 1) - master != 0 or res.get("ok", 0) == 0
                    if master:
                        log(f"master faults in {scenario} {n}: {master} ({res.get('first_error', '')[:200]})")
                if bad:
                    failures.append(res)
                    log(f"FAILED {scenario} {n}: {json.dumps(res)[:400]}")
            elapsed = args.minutes * 60 - (deadline - time.monotonic())
            if samples:
                last = samples[-1]
                log(f"{elapsed / 60:5.1f} min: {runs} runs, {len(failures)} failed, RSS {last[1]} KiB, "
                    f"{last[2]} fds, {last[3]} streams")
    finally:
        stop.set()
        sample_thread.join()
        idle.close()
        stack.stop()

    ok = True
    n = len(samples)
    if n >= 10:
        fifth = n // 5
        early = samples[fifth:2 * fifth]
        late = samples[-fifth:]

        def avg(rows, i):
            vals = [r[i] for r in rows if r[i] is not None]
            return sum(vals) / len(vals) if vals else 0.0

        rss_early, rss_late = avg(early, 1), avg(late, 1)
        fd_early, fd_late = avg(early, 2), avg(late, 2)
        rss_max = max((r[1] or 0) for r in samples)
        print(f"RSS: second fifth {rss_early / 1024:.1f} MiB, last fifth {rss_late / 1024:.1f} MiB, "
              f"max {rss_max / 1024:.1f} MiB")
        # What Brine has allocated versus what the allocator holds: RSS rising with a flat
        # `allocated` is pages kept by jemalloc, not live memory.
        print(f"heap allocated: second fifth {avg(early, 7) / 1024:.1f} MiB, last fifth "
              f"{avg(late, 7) / 1024:.1f} MiB; allocator resident: second fifth "
              f"{avg(early, 8) / 1024:.1f} MiB, last fifth {avg(late, 8) / 1024:.1f} MiB")
        print(f"descriptors: second fifth {fd_early:.0f}, last fifth {fd_late:.0f}")
        if rss_late > rss_early * 1.2 + 8 * 1024:
            print("RSS kept growing")
            ok = False
        if fd_late > fd_early + 50:
            print("descriptors kept growing")
            ok = False
    else:
        print(f"only {n} samples; run longer for a trend")
    print(f"load runs: {runs}, failed: {len(failures)}; requests the master itself failed: "
          f"{master_faults}; idle streams dropped: {idle.dropped}; samples: {out}")
    if failures or idle.dropped:
        ok = False
    print("soak: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
