"""Scale benchmark: Brine, rest_cherrypy, rest_tornado and the raw master in front of one Salt
master with 1 000 to 10 000 simulated minions (salt-swarm), interleaved as bench/bench.py does.

Started by bench/scale (which builds the binaries first). Per size N: a private stack
(scripts/saltstack.py: salt-master and one salt-api process serving rest_cherrypy and
rest_tornado, no real minion), Brine in front of it, `salt-swarm --count N --accept` (ids
`swarm-<n>`), and for the silent scenario a second swarm of N/10 minions that never answer
(`quiet-<n>`, `--silent 100`, addresses after the first swarm's). Every answer is checked by
the driver (brine-bench): a request counts only when it holds every expected minion (or job).

Scenarios (each round runs every target in turn; n/a where a target has no such client):
  ping      sync `local test.ping` to `swarm-*`: time to the complete answer, entries in it
            (raw: publish through salt-wire, until the last return is on the master's bus)
  ping20    20 concurrent sync `local` calls, each to a list of min(1 000, N) minions
            (different slices where N allows)
  lookup    `local_async` to `swarm-*`, then `GET /jobs/<jid>` every 0.5 s until it holds every
            return (raw: the bus)
  batch     `local_batch` with `batch: 10%` over a list of min(1 000, N) minions (raw: n/a)
  silent    sync `local` to `*` while the quiet swarm is up: time to the answer and the
            `saltutil.find_job` publishes on the master's bus (raw: publish, until the last
            answering minion's return; it sends no probe)
  sse       --sse-clients streams on `/events` while a `test.ping` job to `swarm-*` (published
            by the driver straight to the master) returns: delivered share and p50/p99 delay of
            each `salt/job/<jid>/ret/<id>` against the driver's own bus subscription
  minions   `GET /minions` (`grains.items` on all; raw: that publish)
  keys      `GET /keys` with every swarm key accepted (raw: `wheel key.list_all`)
  jobs-K    `GET /jobs` with K jobs seeded into the master's job cache in its own
            `local_cache` format (raw: `runner jobs.list_jobs`); at the first size only (the
            cache does not depend on the swarm)
For each run: the server's CPU seconds and peak RSS (the process that owns the target's port),
and the master's own CPU seconds (every salt-master process, children reaped included).

--smoke: every scenario once at 50 minions with the debug binaries, written to
target/scale-smoke.md; fails when a Brine or raw request failed or Brine's SSE missed a return.
"""

import argparse
import datetime
import importlib.machinery
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# bench/bench.py: the stack, process sampling, formatting.
from bench import (LABEL, REPO, TARGETS, Stack, Watch, fmt, ints, login, machine, median,  # noqa: E402
                   ratio, settle, sse_command, terminate, update_readme, write_result)

# scripts/seed-jobs: the job cache seeder (a script without the .py suffix; registered as a
# module so that its worker processes find its functions).
_loader = importlib.machinery.SourceFileLoader("seed_jobs", os.path.join(REPO, "scripts", "seed-jobs"))
SEED = importlib.util.module_from_spec(importlib.util.spec_from_loader("seed_jobs", _loader))
sys.modules["seed_jobs"] = SEED
_loader.exec_module(SEED)

README_BEGIN = "<!-- scale:begin -->"
README_END = "<!-- scale:end -->"
HTTP = TARGETS[1:]
SCENARIOS = ["ping", "ping20", "lookup", "batch", "silent", "sse", "filter", "feed", "minions", "keys", "jobs"]
# Brine's own streams (`filter`, `feed`): (label, brine-bench sse flags, streams or None for
# --sse-clients). Interleaved within a round.
FILTER_RUNS = [
    ("filter-none", ["--filter", "none"], None),
    ("filter-own", ["--filter", "own"], None),
    ("filter-idle", ["--filter", "idle"], None),
    ("filter-nostream", ["--filter", "none"], 0),
]
# Targets that have no such client at all: recorded as n/a, not run.
NO_CLIENT = {
    ("batch", "raw"): "no batch client (local_batch is a salt-api client)",
    ("sse", "raw"): "the reference itself (the driver's bus subscription)",
    ("batch", "rest_tornado"): "saltnado has no local_batch client",
    ("keys", "rest_tornado"): "saltnado has no /keys",
    ("page", "raw"): "jobs.list_jobs has no paging (see jobs-K)",
    ("page", "rest_cherrypy"): "no paging: its GET /jobs is jobs-K",
    ("page", "rest_tornado"): "no paging: its GET /jobs is jobs-K",
}


def log(msg):
    print(f"scale [{time.strftime('%H:%M:%S')}]: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The master's CPU: every process of its tree


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        head, rest = f.read().rsplit(")", 1)
    return rest.split()


def master_tree(root):
    """The pids of `root` and all its descendants."""
    children = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            ppid = int(_stat(pid)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def master_cpu(root):
    """CPU seconds of the master's process tree: user + system of every live process plus what
    each has reaped of its dead children (a runner's process, a forked job)."""
    if not root:
        return None
    total = 0
    for pid in master_tree(root):
        try:
            f = _stat(pid)
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# The swarms


def swarm_ids(prefix, count):
    """salt-swarm's minion ids: <prefix><n>, n zero-padded to the width of count."""
    width = len(str(count))
    return [f"{prefix}{n:0{width}d}" for n in range(1, count + 1)]


class Swarm:
    def __init__(self, stack, bin_dir, prefix, count, silent=0, offset=0, nice=0):
        self.prefix, self.count = prefix, count
        self.ids = swarm_ids(prefix, count)
        log_path = os.path.join(stack.root, "logs", f"{prefix}swarm.log")
        cmd = [os.path.join(bin_dir, "salt-swarm"), "--config-dir", stack.info["config_dir"],
               "--count", str(count), "--prefix", prefix, "--accept", "--silent", str(silent),
               "--address-offset", str(offset), "--signin-concurrency", "16",
               "--state-dir", os.path.join(stack.root, "swarm-state"), "--log-level", "warn"]
        if nice:
            cmd = ["nice", "-n", str(nice)] + cmd
        log(f"starting {count} simulated minions ({prefix}*): " + " ".join(cmd[1:]))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True)
        # The stack's watchdog stops what is recorded here with the master.
        with open(os.path.join(stack.root, "pids", f"{prefix}swarm.pid"), "w") as f:
            f.write(str(self.proc.pid))
        started = time.monotonic()
        # The master signs in some 15 minions a second on a 2-CPU machine.
        limit = 120 + count / 5
        got = []
        reader = threading.Thread(target=lambda: got.append(self.proc.stdout.readline().strip()), daemon=True)
        reader.start()
        reader.join(limit)
        want = f"salt-swarm: {count} minions up"
        if not got or got[0] != want:
            self.stop()
            raise SystemExit(f"salt-swarm ({prefix}, {count}) not up after {time.monotonic() - started:.0f} s "
                             f"(said {got[:1]}); see {log_path}")
        self.up_seconds = time.monotonic() - started
        log(f"{count} minions ({prefix}*) up in {self.up_seconds:.0f} s")

    def stop(self):
        terminate(self.proc, 60)


# --------------------------------------------------------------------------
# The master's job cache, seeded in its own format


def seed_jobs(stack, first, count, minion):
    """Writes `count` finished jobs (one return each) into the master's job cache with Salt's
    own local_cache returner (scripts/seed-jobs), numbered from `first` so that seeding more
    later adds to them. Returns the jids."""
    started = time.monotonic()
    jids = SEED.seed(stack.master_config, first, count, minion)
    log(f"seeded {count} jobs into the master's job cache in {time.monotonic() - started:.0f} s")
    return jids


# --------------------------------------------------------------------------
# Runs


def write_targets(stack, name, lines):
    """A brine-bench targets file: one `<tgt>\\t<tgt_type>\\t<ids>` line per worker."""
    path = os.path.join(stack.root, "targets", name + ".tsv")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for tgt, tgt_type, ids in lines:
            f.write(f"{tgt}\t{tgt_type}\t{','.join(ids)}\n")
    return path


def master_rate(root, seconds=3.0):
    """The master's CPU seconds per second while nothing runs: a master with thousands of
    connected minions is never at zero (its publisher alone keeps their connections)."""
    a = master_cpu(root)
    time.sleep(seconds)
    b = master_cpu(root)
    return 0.0 if a is None or b is None else max(0.0, (b - a) / seconds)


def master_idle(root, base, limit=600, margin=0.05):
    """Waits until the master is back at its idle rate `base` (at most `margin` CPU seconds
    above it in a second; at most `limit` seconds): a server that answers before the master
    has stored every return (or gives up on minions) leaves work that the run caused all the
    same."""
    last = master_cpu(root)
    started = time.monotonic()
    while last is not None and time.monotonic() - started < limit:
        time.sleep(1)
        now = master_cpu(root)
        if now is None or now - last <= base + margin:
            return
        last = now


def measured(stack, target, fn):
    """Runs fn() with the target server's CPU and peak RSS sampled, and the master's CPU from
    the start until it is idle again after the run, less its idle rate over that time."""
    base = master_rate(stack.master_pid) if stack.master_pid else 0.0
    m0 = master_cpu(stack.master_pid)
    t0 = time.monotonic()
    with Watch(stack.pids.get(target)) as w:
        res = fn()
    master_idle(stack.master_pid, base)
    m1 = master_cpu(stack.master_pid)
    res["server_cpu_s"] = w.cpu
    res["server_peak_rss_mib"] = w.peak
    res["master_idle_rate"] = base
    res["master_cpu_s"] = None if m0 is None or m1 is None else max(0.0, m1 - m0 - base * (time.monotonic() - t0))
    return res


def failed(target, scenario, p, why=None):
    return {"target": target, "scenario": scenario, "ok": 0, "errors": 1, "seconds": None,
            "first_error": why or (p.stderr.strip().splitlines() or ["driver failed"])[-1]}


def run_load(stack, target, scenario, driver_scenario, targets_file, timeout, conc=1, extra=(), requests=1):
    cmd = [stack.driver, "load", "--name", target, "--master-config", stack.master_config,
           "--scenario", driver_scenario, "--concurrency", str(conc), "--requests", str(requests),
           "--targets-file", targets_file, "--timeout", str(int(timeout)), *extra]
    if target != "raw":
        cmd += ["--url", stack.urls[target]]

    def go():
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 2 + 120)
        except subprocess.TimeoutExpired:
            return failed(target, scenario, None, f"driver still running after {timeout * 2 + 120:.0f} s")
        if p.returncode != 0:
            return failed(target, scenario, p)
        return json.loads(p.stdout.strip().splitlines()[-1])

    res = measured(stack, target, go)
    res["scenario"] = scenario
    return res


def run_sse(stack, target, token, clients, targets_file, timeout, args, extra=()):
    cmd = sse_command(stack, target, token, clients, args) + [
        "--job-returns", "--master-config", stack.master_config, "--targets-file", targets_file,
        "--job-timeout", str(int(timeout)), *extra]

    def go():
        try:
            p = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=timeout + args.sse_connect_timeout + args.sse_drain + 120)
        except subprocess.TimeoutExpired:
            return {"target": target, "clients": clients, "connected": 0, "delivered_pct": 0.0,
                    "errors": 1, "first_error": "driver did not finish"}
        if p.returncode != 0:
            return {"target": target, "clients": clients, "connected": 0, "delivered_pct": 0.0,
                    "errors": 1, "first_error": (p.stderr.strip().splitlines() or ["driver failed"])[-1]}
        res = json.loads(p.stdout.strip().splitlines()[-1])
        if res.get("job_error"):
            res.update({"errors": 1, "first_error": "the job was not published: " + res["job_error"]})
        return res

    res = measured(stack, target, go)
    res["scenario"] = "sse"
    return res


def wait_index(url, token, limit=600):
    """Seconds until Brine answers `GET /jobs?limit=1` (its job index has scanned the cache)."""
    import urllib.request
    started = time.monotonic()
    while time.monotonic() - started < limit:
        req = urllib.request.Request(url + "/jobs?limit=1", headers={"X-Auth-Token": token,
                                                                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=limit) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    return time.monotonic() - started


def describe(res):
    keys = ("ok", "errors", "seconds", "entries_min", "entries_max", "find_job_publishes",
            "delivered_pct", "p99_ms", "server_cpu_s", "server_peak_rss_mib", "master_cpu_s")
    out = " ".join(f"{k}={fmt(res.get(k), '', 2)}" for k in keys if k in res)
    if res.get("first_error"):
        out += f" first_error={res['first_error'][:200]}"
    return out


def one_size(n, args, bin_dir):
    """Every scenario at one size; the rows."""
    quiet_n = max(1, n // 10)
    slice_n = min(1000, n)
    timeout = args.timeout + n * args.timeout_per_minion
    # A run that overloads the master (ping20, or a server that gave up early) leaves it
    # storing returns for minutes: the next run starts only once the machine is quiet.
    settle_limit = 300 + n / 10
    # The master's own limit on open files is raised to its hard limit by Salt itself; the
    # master's children and salt-swarm inherit ours.
    master_extra = "max_open_files: 100000" + (("\n" + args.master_extra) if args.master_extra else "")
    stack = Stack(0, bin_dir, "", master_extra, references=True, prefix="brine-scale-", salt_nice=args.salt_nice)
    stack.driver = os.path.join(bin_dir, "brine-bench")
    try:
        with open(os.path.join(stack.root, "pids", "master.pid")) as f:
            stack.master_pid = int(f.read().strip())
    except (OSError, ValueError):
        stack.master_pid = None
        log("no master pid: the master's CPU is not measured")
    rows, swarms = [], []
    info = {"size": n, "quiet": quiet_n, "salt_version": stack.info.get("salt_version")}
    targets = [t for t in TARGETS if t in args.targets.split(",")]
    wanted = args.scenarios.split(",")
    try:
        swarm = Swarm(stack, bin_dir, "swarm-", n, nice=args.salt_nice)
        swarms.append(swarm)
        info["signin_seconds"] = swarm.up_seconds
        ids = swarm.ids
        tokens = {t: login(stack.urls[t]) for t in HTTP if t in targets}
        # ping20's 20 lists: consecutive slices of the ids, wrapping around.
        slices = [[ids[(i * slice_n + k) % n] for k in range(slice_n)] for i in range(20)]
        files = {
            "all": write_targets(stack, "all", [("swarm-*", "glob", ids)]),
            "slices": write_targets(stack, "slices", [(",".join(s), "list", s) for s in slices]),
            "batch": write_targets(stack, "batch", [(",".join(ids[:slice_n]), "list", ids[:slice_n])]),
            "keys": write_targets(stack, "keys", [("*", "glob", ids)]),
            "minions": write_targets(stack, "minions", [("*", "glob", ids)]),
        }

        def rounds(scenario, fn, label=None):
            for rnd in range(args.rounds):
                # Odd rounds run the targets in reverse, so no target always runs first (on a
                # master still cool) or last (after the others' jobs filled its cache).
                for t in targets if rnd % 2 == 0 else targets[::-1]:
                    if (scenario, t) in NO_CLIENT:
                        if rnd == 0:
                            rows.append({"size": n, "scenario": label or scenario, "target": t,
                                         "na": NO_CLIENT[(scenario, t)]})
                        continue
                    # A run starts on a quiet machine: the master may still be storing the
                    # returns of the one before (20 000 of them in ping20 at N=1 000).
                    settle(f"n={n} {label or scenario} {t}", limit=settle_limit)
                    res = fn(t)
                    res.update({"size": n, "round": rnd + 1, "target": t, "scenario": label or scenario})
                    log(f"n={n} {label or scenario} round {rnd + 1} {LABEL[t]}: {describe(res)}")
                    rows.append(res)

        if "ping" in wanted:
            rounds("ping", lambda t: run_load(stack, t, "ping", "local", files["all"], timeout))
        if "lookup" in wanted:
            rounds("lookup", lambda t: run_load(stack, t, "lookup", "lookup", files["all"], timeout))
        if "batch" in wanted:
            rounds("batch", lambda t: run_load(stack, t, "batch", "batch", files["batch"], timeout,
                                               extra=("--batch", "10%")))
        if "sse" in wanted:
            clients = args.sse_clients or min(1000, n)
            info["sse_clients"] = clients
            rounds("sse", lambda t: run_sse(stack, t, tokens[t], clients, files["all"], timeout, args))
        if "brine" in targets and ("filter" in wanted or "feed" in wanted):
            clients = args.sse_clients or min(1000, n)
            runs = [(label, ["--jobs", str(slice_n)] + flags, clients if c is None else c)
                    for label, flags, c in FILTER_RUNS if "filter" in wanted]
            if "feed" in wanted:
                runs.append(("feed", ["--job-feed"], 10))
            for rnd in range(args.rounds):
                # As for targets: even rounds run the kinds of stream in reverse.
                for label, flags, c in runs if rnd % 2 == 0 else runs[::-1]:
                    settle(f"n={n} {label} brine", limit=settle_limit)
                    res = run_sse(stack, "brine", tokens["brine"], c, files["all"], timeout, args, flags)
                    res.update({"size": n, "round": rnd + 1, "target": "brine", "scenario": label})
                    log(f"n={n} {label} round {rnd + 1} Brine: {describe(res)}")
                    rows.append(res)
        if "minions" in wanted:
            rounds("minions", lambda t: run_load(stack, t, "minions", "minions", files["minions"], timeout))
        if "keys" in wanted:
            rounds("keys", lambda t: run_load(stack, t, "keys", "keys", files["keys"], timeout))
        if "silent" in wanted:
            quiet = Swarm(stack, bin_dir, "quiet-", quiet_n, silent=100, offset=n, nice=args.salt_nice)
            swarms.append(quiet)
            files["silent"] = write_targets(stack, "silent", [("*", "glob", ids)])
            # Raw: the master's own sequence has no probe; its time is that of the last
            # answering minion's return.
            rounds("silent", lambda t: run_load(stack, t, "silent", "local", files["silent"], timeout))
            quiet.stop()
            swarms.remove(quiet)
            # The quiet keys go, so that later scenarios on `*` do not wait for them.
            subprocess.run([os.path.join(os.path.dirname(sys.executable), "salt-key"), "-c",
                            stack.info["config_dir"], "-d", "quiet-*", "-y"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The job cache does not depend on the swarm's size: `jobs` runs at the first size only.
        if "jobs" in wanted and n == args.sizes[0]:
            seeded = []
            for k in args.job_cache:
                seeded += seed_jobs(stack, len(seeded), k - len(seeded), ids[0])
                path = write_targets(stack, f"jobs-{k}", [("*", "glob", seeded)])
                jobs_timeout = args.jobs_timeout + k * args.jobs_timeout_per_job
                rounds("jobs", lambda t, path=path, jobs_timeout=jobs_timeout:
                       run_load(stack, t, f"jobs-{k}", "jobs", path, jobs_timeout), label=f"jobs-{k}")
                if "brine" in targets:
                    # The seeder wrote the jobs without announcing them on the bus: a Brine
                    # started now indexes them with its scan of the cache.
                    stack.restart_brine()
                    info[f"index_seconds_{k}"] = wait_index(stack.urls["brine"], tokens["brine"])
                    log(f"Brine's job index of {len(seeded)} jobs loaded in {info[f'index_seconds_{k}']:.1f} s")
                    rounds("page", lambda t: run_load(stack, t, f"page-{k}", "jobs-page", path, 60,
                                                      requests=args.page_requests), label=f"page-{k}")
        # Last: 20 000 returns and more overload this master for minutes.
        if "ping20" in wanted:
            rounds("ping20", lambda t: run_load(stack, t, "ping20", "local", files["slices"], timeout, conc=20))
    finally:
        for s in swarms:
            s.stop()
        stack.stop()
    return rows, info


# --------------------------------------------------------------------------
# Report


def group(rows):
    """(size, scenario, target) -> rows, in first-seen order."""
    out = {}
    for r in rows:
        out.setdefault((r["size"], r["scenario"], r["target"]), []).append(r)
    return out


def summary(rs):
    if rs[0].get("na"):
        return {"na": rs[0]["na"]}
    ok = [r for r in rs if r.get("ok") and not r.get("errors")]
    first_error = next((r.get("first_error") for r in rs if r.get("first_error")), None)
    err_ms = next((r.get("first_error_ms") for r in rs if r.get("first_error")), None)
    requests = [(r.get("ok") or 0) + (r.get("errors") or 0) for r in rs]
    per_job = [r["master_cpu_s"] / q for r, q in zip(rs, requests) if r.get("master_cpu_s") is not None and q]
    return {
        "runs": len(rs),
        "complete": len(ok),
        "seconds": median([r.get("seconds") for r in ok]),
        "p50_ms": median([r.get("p50_ms") for r in ok]),
        "max_ms": median([r.get("p99_ms") for r in ok]),
        "p99_ms": median([r.get("p99_ms") for r in ok]),
        "requests": sum(r.get("ok") or 0 for r in ok),
        "entries": (min((r["entries_min"] for r in ok if r.get("entries_min") is not None), default=None),
                    max((r["entries_max"] for r in ok if r.get("entries_max") is not None), default=None)),
        "bytes": median([r.get("bytes_mean") for r in ok]),
        "find_job": median([r.get("find_job_publishes") for r in rs]),
        "find_job_minions": median([r.get("find_job_minions") for r in rs]),
        "server_cpu_s": median([r.get("server_cpu_s") for r in rs]),
        "server_peak_rss_mib": max([r["server_peak_rss_mib"] for r in rs if r.get("server_peak_rss_mib")] or [None]),
        "master_cpu_s": median([r.get("master_cpu_s") for r in rs]),
        "master_cpu_per_job_s": median(per_job),
        "errors": sum(r.get("errors") or 0 for r in rs),
        "first_error": first_error,
        "first_error_s": err_ms / 1000 if err_ms is not None else None,
        "delivered_pct": median([r.get("delivered_pct") for r in rs]),
        "sse_p50_ms": median([r.get("p50_ms") for r in rs if r.get("delivered_pct")]),
        "sse_p99_ms": median([r.get("p99_ms") for r in rs if r.get("delivered_pct")]),
        "sse_max_ms": median([r.get("max_ms") for r in rs if r.get("delivered_pct")]),
        "connected": min([r.get("connected") or 0 for r in rs]),
        "events": max([r.get("events") or 0 for r in rs]),
        "bus_events_seen": min([r.get("bus_events_seen") or 0 for r in rs]),
        "clients": max([r.get("clients") or 0 for r in rs]),
        "jobs": max([r.get("jobs") or 0 for r in rs]),
        "completes": min([r.get("completes") or 0 for r in rs]),
        "complete_p50_ms": median([r.get("complete_p50_ms") for r in rs]),
        "complete_p99_ms": median([r.get("complete_p99_ms") for r in rs]),
    }


def short_error(v):
    text = (v.get("first_error") or "").replace("|", "/").replace("\n", " ")
    if len(text) > 90:
        text = text[:90] + "…"
    after = f" after {v['first_error_s']:.1f} s" if v.get("first_error_s") is not None else ""
    return f"{v['errors']} failed{after}: `{text}`" if text else f"{v['errors']} failed"


def load_table(s, sizes):
    lines = [
        "| N | scenario | target | time to complete answer | vs raw | entries per answer | bytes | "
        "find_job publishes | server CPU | server peak RSS | master CPU per job | failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (n, sc, t), v in s.items():
        if sc in ("sse", "feed") or sc.startswith(("page-", "filter-")):
            continue
        if "na" in v:
            lines.append(f"| {n} | {sc} | {LABEL[t]} | n/a: {v['na']} | | | | | | | | |")
            continue
        raw = s.get((n, sc, "raw")) or {}
        r = ratio(v["seconds"], raw.get("seconds")) if t != "raw" else None
        entries = v["entries"]
        ent = "n/a" if entries[0] is None else (f"{entries[0]}" if entries[0] == entries[1] else f"{entries[0]}–{entries[1]}")
        probes = fmt(v["find_job"], "", 0) if v["find_job"] is not None else ""
        if v["find_job"] and v["find_job_minions"]:
            probes += f" ({v['find_job_minions']:.0f} minions)"
        lines.append(
            f"| {n} | {sc} | {LABEL[t]} | {fmt(v['seconds'], ' s', 2)} ({v['complete']}/{v['runs']} complete) | "
            f"{'' if t == 'raw' else fmt(r * 100 if r else None, ' %', 0)} | {ent} | {fmt(v['bytes'], ' B', 0)} | {probes} | "
            f"{fmt(v['server_cpu_s'], ' s', 2)} | {fmt(v['server_peak_rss_mib'], ' MiB')} | "
            f"{fmt(v['master_cpu_per_job_s'], ' s', 2)} | {short_error(v) if v['errors'] else '0'} |")
    return lines


def sse_table(s):
    lines = ["| N | target | streams open | returns on the bus | delivered | p50 delay | p99 delay | max delay | "
             "server CPU | server peak RSS | failures |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (n, sc, t), v in s.items():
        if sc != "sse" or "na" in v:
            continue
        lines.append(f"| {n} | {LABEL[t]} | {v['connected']}/{v['clients']} | {v['bus_events_seen']}/{v['events']} | "
                     f"{fmt(v['delivered_pct'], ' %')} | {fmt(v['sse_p50_ms'], ' ms')} | {fmt(v['sse_p99_ms'], ' ms')} | "
                     f"{fmt(v['sse_max_ms'], ' ms')} | {fmt(v['server_cpu_s'], ' s', 2)} | "
                     f"{fmt(v['server_peak_rss_mib'], ' MiB')} | {short_error(v) if v['errors'] else '0'} |")
    return lines


def filter_table(s):
    lines = ["| N | streams | what each stream reads | jobs (returns) on the bus | delivered | p99 delay | "
             "Brine CPU | Brine peak RSS | failures |",
             "|---|---|---|---|---|---|---|---|---|"]
    what = {"filter-none": "every event", "filter-own": "its own job's events (`?tag=salt/job/<jid>/*`)",
            "filter-idle": "nothing that happens (`?tag=brine/bench/idle/*`)", "filter-nostream": "(no stream)"}
    for (n, sc, t), v in s.items():
        if sc not in what or "na" in v:
            continue
        wanted = v["delivered_pct"] if sc in ("filter-none", "filter-own") else None
        lines.append(f"| {n} | {v['connected']}/{v['clients']} | {what[sc]} | {v['bus_events_seen']}/{v['events']} | "
                     f"{fmt(wanted, ' %')} | {fmt(v['sse_p99_ms'] if wanted else None, ' ms')} | "
                     f"{fmt(v['server_cpu_s'], ' s', 2)} | {fmt(v['server_peak_rss_mib'], ' MiB')} | "
                     f"{short_error(v) if v['errors'] else '0'} |")
    return lines


def feed_table(s):
    lines = ["| N | feeds | returns on the bus | returns delivered | `complete` received | last return → `complete` p50 | p99 | "
             "Brine CPU | failures |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (n, sc, t), v in s.items():
        if sc != "feed" or "na" in v:
            continue
        lines.append(f"| {n} | {v['connected']}/{v['clients']} | {v['bus_events_seen']}/{v['events']} | "
                     f"{fmt(v['delivered_pct'], ' %')} | {v['completes']}/{v['clients']} | "
                     f"{fmt(v['complete_p50_ms'], ' ms')} | {fmt(v['complete_p99_ms'], ' ms')} | "
                     f"{fmt(v['server_cpu_s'], ' s', 2)} | {short_error(v) if v['errors'] else '0'} |")
    return lines


def page_table(s, infos):
    lines = ["| jobs in the cache | target | index loaded after start | requests | p50 | p99 | "
             "server peak RSS | the same cache through `GET /jobs` (jobs.list_jobs) | failures |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (n, sc, t), v in s.items():
        if not sc.startswith("page-") or "na" in v:
            continue
        k = sc.split("-", 1)[1]
        info = next((i for i in infos if i["size"] == n), {})
        full = ", ".join(f"{LABEL[r]} {fmt(s.get((n, f'jobs-{k}', r), {}).get('seconds'), ' s', 1)}"
                         for r in ("brine", "rest_cherrypy", "rest_tornado", "raw")
                         if (n, f"jobs-{k}", r) in s and "na" not in s[(n, f"jobs-{k}", r)])
        lines.append(f"| {int(k):,} | {LABEL[t]} | {fmt(info.get(f'index_seconds_{k}'), ' s', 1)} | "
                     f"{v.get('requests')} | {fmt(v['p50_ms'], ' ms', 1)} | {fmt(v['p99_ms'], ' ms', 1)} | "
                     f"{fmt(v['server_peak_rss_mib'], ' MiB')} | {full} | "
                     f"{short_error(v) if v['errors'] else '0'} |")
    return lines


def goals(s, sizes):
    out = []
    for (n, sc, t), v in s.items():
        if sc == "page-100000" and t == "brine" and "na" not in v:
            out.append(("`GET /jobs?limit=50` on 100 000 cached jobs: p99 under 50 ms",
                        f"p99 {fmt(v['p99_ms'], ' ms', 1)}", v["p99_ms"] is not None and v["p99_ms"] < 50))
    for n in sizes:
        own, idle = s.get((n, "filter-own", "brine")), s.get((n, "filter-idle", "brine"))
        if own and idle and own.get("server_cpu_s") is not None and idle.get("server_cpu_s") is not None:
            # Within 10 % (or 0.05 s): the measurement's own noise.
            ok = own["server_cpu_s"] <= max(idle["server_cpu_s"] * 1.1, idle["server_cpu_s"] + 0.05)
            out.append((f"N={n}: streams filtered to one job among {own['jobs']} busy ones cost no more CPU "
                        "than idle streams", f"{own['server_cpu_s']:.2f} s vs {idle['server_cpu_s']:.2f} s", ok))
        b, raw = s.get((n, "ping", "brine")), s.get((n, "ping", "raw"))
        if b and raw and "na" not in b and b["seconds"] and raw["seconds"]:
            r = b["seconds"] / raw["seconds"]
            out.append((f"N={n}: Brine's complete `local test.ping` within 5 % of the raw master's last return",
                        f"{b['seconds']:.2f} s vs {raw['seconds']:.2f} s ({r * 100:.0f} %)", r <= 1.05))
        elif b and raw:
            out.append((f"N={n}: Brine's complete `local test.ping` within 5 % of the raw master's last return",
                        "no complete answer from both", False))
        if b and "na" not in b and b["server_peak_rss_mib"] is not None:
            out.append((f"N={n}: Brine's RSS while gathering the `test.ping` (goal ≤ 64 MiB at 10 000)",
                        fmt(b["server_peak_rss_mib"], " MiB"), b["server_peak_rss_mib"] <= 64))
        sse = s.get((n, "sse", "brine"))
        if sse and "na" not in sse:
            ok = sse["delivered_pct"] is not None and sse["delivered_pct"] >= 100.0 and \
                sse["sse_p99_ms"] is not None and sse["sse_p99_ms"] <= 50
            out.append((f"N={n}: SSE 100 % of the returns delivered, p99 ≤ bus + 50 ms",
                        f"{fmt(sse['delivered_pct'], ' %')}, p99 {fmt(sse['sse_p99_ms'], ' ms')}", ok))
        cp = s.get((n, "ping", "rest_cherrypy"))
        if b and cp and "na" not in b and b.get("master_cpu_per_job_s") and cp.get("master_cpu_per_job_s"):
            r = b["master_cpu_per_job_s"] / cp["master_cpu_per_job_s"]
            out.append((f"N={n}: master CPU per `local` job through Brine ≤ 80 % of through rest_cherrypy",
                        f"{b['master_cpu_per_job_s']:.2f} s vs {cp['master_cpu_per_job_s']:.2f} s ({r * 100:.0f} %)",
                        r <= 0.8))
    return out


def report(args, rows, infos, bin_kind, elapsed):
    date = datetime.date.today().isoformat()
    s = {k: summary(v) for k, v in group(rows).items()}
    sizes = [i["size"] for i in infos]
    lines = [
        f"# Brine at scale, {date}",
        "",
        f"Command: `{args.cmdline}`",
        f"Machine: {machine()}; the driver, the master, the simulated minions (salt-swarm) and every "
        "server share it.",
        f"Salt {infos[0].get('salt_version', '?') if infos else '?'}: a private master (scripts/saltstack.py "
        "defaults: `worker_threads: 5`; plus `max_open_files: 100000`"
        + (f" and `{args.master_extra}`" if args.master_extra else "") + "), no real minion. "
        f"The master and the swarms run at nice {args.salt_nice}, every server and the driver at 0: "
        "what `CPUWeight=400` in `packaging/brine.service` against the master's default 100 arranges "
        "on a host (nice 6 weighs 272 against nice 0's 1 024), given here to the Python servers too; "
        f"Brine {bin_kind} build with default settings. Per size N: `salt-swarm --count N --accept` "
        "(`swarm-*`), and for `silent` a second swarm of N/10 that never answers (`quiet-*`, "
        "`--silent 100`), stopped and its keys deleted afterwards. "
        f"{args.rounds} interleaved round(s) per scenario (odd rounds in the order given, even ones "
        "reversed, for targets and for the kinds of filtered stream); times are medians over the complete "
        "answers (a run missing one return is a failure, counted in the last column).",
        "",
        "Sign-in: " + ", ".join(f"N={i['size']}: {fmt(i.get('signin_seconds'), ' s', 0)}" for i in infos) + ".",
        "",
        "## Requests",
        "",
        "Time: one request (`ping20`: all 20 together) from sending it to its complete, checked answer; "
        "for the raw master, from the publish to the last return on the master's bus. Entries: how many "
        "minions (or jobs) the answer held. find_job publishes: `salt/job/<jid>/new` events of "
        "`saltutil.find_job` on the master's bus during the run (minions they targeted, summed). Server "
        "CPU and peak RSS: the process that owns the target's port. Master CPU per job: CPU seconds of "
        "every salt-master process from the start of the run until the master is back at its idle rate "
        "after it, less that idle rate (measured for 3 s before the run: a master with thousands of "
        "connected minions is never at zero) over the same time, divided by the requests of the run. The raw master "
        "sends no `saltutil.find_job` probe: in `silent` its time is that of the last answering "
        "minion's return, which a salt-api answering as Salt's LocalClient does cannot reach (it "
        "waits for its probe round).",
        "",
    ]
    lines += load_table(s, sizes)
    # Each scenario's own section, when it ran: (which rows, title, what the table shows, table).
    sections = [
        (lambda sc: sc == "sse", "SSE during a job's returns",
         "Streams on `/events` while a `test.ping` job to `swarm-*` returns (the driver "
         "publishes it straight to the master); delay of each `salt/job/<jid>/ret/<id>` event "
         "on each stream after the driver's own subscription to the master's bus got it.",
         lambda: sse_table(s)),
        (lambda sc: sc.startswith("filter-"), "Filtered streams",
         "Brine's `?tag=` filters: the same load (jobs published by the driver, each a "
         "`test.ping` to one minion) with streams that read everything, only their own job, "
         "or nothing that happens, and with no stream. A filtered stream is offered only the "
         "events whose tag starts with the literal start of its globs and queued only what "
         "they match, so `own` should cost what `idle` costs.",
         lambda: filter_table(s)),
        (lambda sc: sc == "feed", "Job feeds",
         "`GET /jobs/<jid>/events` opened right after the driver published a `test.ping` to "
         "`swarm-*`: each feed's returns (replayed or live) and its `brine/job/<jid>/complete`, "
         "timed from the job's last return on the driver's own bus subscription.",
         lambda: feed_table(s)),
        (lambda sc: sc.startswith("page-"), "Paging the job list",
         "`GET /jobs?limit=50` from Brine's job index (requests one after another, each "
         "checked: 50 jobs, newest first), after Brine restarted on the seeded cache (the "
         "seeder does not announce jobs on the bus); beside it, the time of one "
         "`GET /jobs` on the same cache (`jobs-K` above).",
         lambda: page_table(s, infos)),
    ]
    for ran, title, about, table in sections:
        if any(ran(sc) for (_, sc, _) in s):
            lines += ["", f"## {title}", "", about, ""]
            lines += table()
    lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    for g in goals(s, sizes):
        lines.append(f"| {g[0]} | {g[1]} | {'yes' if g[2] else '**no**'} |")
    lines += ["", f"The run took {elapsed / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="every scenario at 50 minions, debug binaries")
    ap.add_argument("--sizes", type=ints, default=[1000, 5000], help="swarm sizes, one stack each")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per scenario")
    ap.add_argument("--targets", default=",".join(TARGETS), help="which targets (comma-separated)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="which scenarios (comma-separated)")
    ap.add_argument("--sse-clients", type=int, default=0, help="SSE streams (default min(1 000, N))")
    ap.add_argument("--sse-connect-timeout", type=int, default=60, help="seconds for all streams to open")
    ap.add_argument("--sse-drain", type=int, default=10, help="seconds for late events after the last return")
    ap.add_argument("--job-cache", type=ints, default=[10000, 100000], help="job cache sizes for `jobs`")
    ap.add_argument("--page-requests", type=int, default=200, help="`GET /jobs?limit=50` requests per page run")
    ap.add_argument("--timeout", type=float, default=120, help="limit for one request, seconds, plus ...")
    ap.add_argument("--timeout-per-minion", type=float, default=0.03, help="... this per minion of the size")
    ap.add_argument("--jobs-timeout", type=float, default=120, help="limit for `GET /jobs`, seconds, plus ...")
    ap.add_argument("--jobs-timeout-per-job", type=float, default=0.004, help="... this per cached job")
    ap.add_argument("--salt-nice", type=int, default=6,
                    help="nice value of the master and the swarms (the servers and the driver run at 0)")
    ap.add_argument("--master-extra", default="", help="YAML master options added to the stack's (stated in the result)")
    ap.add_argument("--bin-dir", default=None, help="where brine, brine-bench, salt-swarm are (default target/release)")
    ap.add_argument("--out", default=None, help="result file (default bench/results/<date>-scale.md)")
    args = ap.parse_args()
    args.cmdline = ("bench/scale " + " ".join(sys.argv[1:])).strip()
    if args.smoke:
        args.sizes, args.rounds, args.job_cache, args.sse_drain = [50], 1, [200, 1000], 3
    bin_kind = "debug" if args.smoke else "release"
    bin_dir = args.bin_dir or os.path.join(REPO, "target", bin_kind)
    # Thousands of connections: the swarm's, the servers' and the driver's.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The master's publisher and the swarm each hold one connection per minion.
    need = max(args.sizes) + 2000
    if hard != resource.RLIM_INFINITY and hard < need:
        log(f"the open files limit is {hard}; {max(args.sizes)} minions want about {need} per process")

    rows, infos = [], []
    started = time.time()
    for n in args.sizes:
        log(f"size {n}")
        r, info = one_size(n, args, bin_dir)
        rows += r
        infos.append(info)
    elapsed = time.time() - started
    text = report(args, rows, infos, bin_kind, elapsed)
    date = datetime.date.today().isoformat()
    out = args.out or (os.path.join(REPO, "target", "scale-smoke.md") if args.smoke
                       else os.path.join(REPO, "bench", "results", f"{date}-scale.md"))
    write_result(out, text, {"rows": rows, "sizes": infos})
    print(text)
    log(f"written to {out}")

    if args.smoke:
        # Idle filters and no stream deliver nothing by design: they only must not fail.
        nothing = ("filter-idle", "filter-nostream")
        bad = [r for r in rows if r["target"] in ("brine", "raw") and not r.get("na")
               and (r.get("errors") or not (r.get("ok") or r.get("delivered_pct") or r["scenario"] in nothing))]
        bad += [r for r in rows if r["scenario"] == "feed" and (r.get("completes") or 0) < (r.get("clients") or 1)]
        bad += [r for r in rows if r["target"] == "brine" and r["scenario"] in ("sse", "filter-none", "filter-own", "feed")
                and (r.get("delivered_pct") or 0) < 100.0]
        if bad:
            for r in bad:
                log("FAILED: " + json.dumps(r)[:600])
            sys.exit(1)
        log("smoke: every Brine and raw request was answered completely")
    elif not args.out:
        body = re.sub(r"^## ", "### ", text.split("\n", 1)[1], flags=re.M)
        update_readme(f"Result file: `bench/results/{date}-scale.md`.\n" + body, README_BEGIN, README_END)


if __name__ == "__main__":
    main()
