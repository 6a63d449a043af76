"""What an idle simulated minion costs: salt-swarm's RSS and CPU per minion.

Starts a private master (scripts/saltstack.py, no minions), runs target/release/salt-swarm
(or --swarm) with --count minions and --accept, waits for its "N minions up" line, lets it
idle, and reports its RSS and its CPU time over the idle period, in total and per minion,
with the master's publisher connections counted from /proc/net/tcp as a cross-check. Not
part of CI; run with the Salt venv's python:

    .venv/bin/python bench/swarm_cost.py --count 10000 [--idle 60] [--signin-concurrency 16] [--ping]

Prints one JSON line on stdout (progress on stderr). The goal it reports against:
at most 100 KiB of RSS and 0.01 % of a core per idle minion.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print("swarm_cost: " + msg, file=sys.stderr, flush=True)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based) of the whole line.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def established_to(port):
    """Established TCP connections whose remote end is `port` (the swarm's side)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            remote, state = parts[2], parts[3]
            if state == "01" and int(remote.split(":")[1], 16) == port:
                n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    ap.add_argument("--signin-concurrency", type=int, default=16)
    ap.add_argument("--swarm", default=os.path.join(REPO, "target/release/salt-swarm"))
    ap.add_argument("--root", default=None, help="stack root (default: a temp dir, removed)")
    ap.add_argument("--ping", action="store_true",
                    help="after the idle period, time salt '*' test.ping and the swarm's CPU for it")
    args = ap.parse_args()

    root = args.root or tempfile.mkdtemp(prefix="swarm-cost-")
    py = sys.executable
    subprocess.run(
        [py, os.path.join(REPO, "scripts/saltstack.py"), "start", "--root", root,
         "--minions", "0", "--watch-pid", str(os.getpid())]
        + ([] if args.root else ["--remove-root"]),
        check=True,
    )
    with open(os.path.join(root, "stack.json")) as f:
        stack = json.load(f)
    swarm = subprocess.Popen(
        [args.swarm, "--config-dir", os.path.join(root, "etc/salt"), "--count", str(args.count),
         "--accept", "--signin-concurrency", str(args.signin_concurrency),
         "--state-dir", os.path.join(root, "swarm-state"), "--log-level", "warn"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        t0 = time.monotonic()
        line = swarm.stdout.readline().strip()
        up_seconds = time.monotonic() - t0
        if line != "salt-swarm: %d minions up" % args.count:
            raise SystemExit("unexpected line from salt-swarm: %r" % line)
        log("%d minions up after %.1f s; idling %.0f s" % (args.count, up_seconds, args.idle))
        time.sleep(5)
        c0, w0 = cpu_seconds(swarm.pid), time.monotonic()
        time.sleep(args.idle)
        c1, w1 = cpu_seconds(swarm.pid), time.monotonic()
        rss = rss_kib(swarm.pid)
        core_share = (c1 - c0) / (w1 - w0)
        result = {
            "count": args.count,
            "up_seconds": round(up_seconds, 1),
            "publish_connections": established_to(stack["publish_port"]),
            "rss_kib": rss,
            "rss_kib_per_minion": round(rss / args.count, 2),
            "idle_cpu_percent_of_a_core": round(100 * core_share, 4),
            "idle_cpu_percent_per_minion": round(100 * core_share / args.count, 8),
            "goal_met": rss / args.count <= 100 and 100 * core_share / args.count <= 0.01,
        }
        if args.ping:
            venv_bin = os.path.dirname(py)
            c0, w0 = cpu_seconds(swarm.pid), time.monotonic()
            out = subprocess.run(
                [os.path.join(venv_bin, "salt"), "-c", os.path.join(root, "etc/salt"), "*",
                 "test.ping", "--out", "json", "--static", "-t", "60"],
                capture_output=True, text=True,
            ).stdout
            c1, w1 = cpu_seconds(swarm.pid), time.monotonic()
            start = min([i for i in (out.find("{"),) if i >= 0] or [0])
            try:
                answered = len(json.loads(out[start:]))
            except ValueError:
                answered = 0
            result.update({
                "ping_answered": answered,
                "ping_seconds": round(w1 - w0, 1),
                "ping_swarm_cpu_seconds": round(c1 - c0, 2),
            })
        print(json.dumps(result), flush=True)
    finally:
        swarm.terminate()
        swarm.wait(timeout=30)
        subprocess.run([py, os.path.join(REPO, "scripts/saltstack.py"), "stop", "--root", root])
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
