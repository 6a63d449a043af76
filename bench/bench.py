"""Side-by-side benchmark: Brine, the Python salt-api (rest_cherrypy, rest_tornado) and the raw
master ceiling, on one Salt master, in one run.

Started by bench/run (which builds the binaries first). It starts a private stack
(scripts/saltstack.py: salt-master, minions, one salt-api process serving rest_cherrypy and
rest_tornado), Brine in front of the same master, and runs every scenario against every target
interleaved (raw, Brine, cherrypy, tornado, raw, Brine, ... for --rounds rounds), so all
targets see the same machine over time. Every answer is checked by the driver (brine-bench):
a request counts only when its body is right.

Targets:
  raw            the same master commands sent straight through salt-wire, no HTTP (the ceiling)
  brine          this project, release build
  rest_cherrypy  Salt's rest_cherrypy (the reference)
  rest_tornado   Salt's rest_tornado (saltnado)

Scenarios:
  login          POST /login (eauth `auto`), at each --conc-api concurrency
  runner         sync `runner test.arg`, same concurrencies
  wheel          sync `wheel key.list_all`, same concurrencies (rest_tornado has no wheel client)
  local          sync `local test.ping` on all minions, at each --conc-local concurrency
  async          --jobs `local_async test.ping` jobs at once; wall time until every return is in
  sse-N          N /events streams; events fired into the master's bus; delivered share and
                 p50/p99 delay relative to the bus itself
Also: server RSS idle and with streams open, server CPU-seconds per request (the process that
owns the target's port; the raw target has no server process).

--smoke: a 2-minute run of every scenario at small sizes with the debug binaries, written to
target/bench-smoke.md; fails when Brine or the raw target has a failed request or no result,
so the benchmark cannot rot (scripts/test runs it).
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["raw", "brine", "rest_cherrypy", "rest_tornado"]
HTTP_TARGETS = TARGETS[1:]
LABEL = {"raw": "raw master", "brine": "Brine", "rest_cherrypy": "rest_cherrypy", "rest_tornado": "rest_tornado"}
README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"


def log(msg):
    print(f"bench [{time.strftime('%H:%M:%S')}]: {msg}", file=sys.stderr, flush=True)


def login(base):
    req = urllib.request.Request(
        base + "/login",
        data=json.dumps({"username": "saltdev", "password": "saltdev", "eauth": "auto"}).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["return"][0]["token"]


def machine():
    cpus = os.cpu_count()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpus} CPUs ({model}), {mem}, {platform.system()} {platform.release()}"


# --------------------------------------------------------------------------
# Processes: who serves a port, its CPU time and memory


def listening_inodes(port):
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        found.add(inode)
        except (OSError, StopIteration, ValueError, IndexError):
            pass
    return found


def port_owner(port):
    """The pid whose open sockets include the one listening on `port`."""
    inodes = {f"socket:[{i}]" for i in listening_inodes(port)}
    if not inodes:
        return None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


def cpu_busy(interval=1.0):
    """The machine's busy share of all CPUs over `interval` seconds (0..1, /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def settle(what, busy_max=0.3, limit=15):
    """Waits (at most `limit` s) until the machine is quiet, so that a run does not measure
    what the one before it left behind (a Python server still closing 1 000 streams)."""
    started = time.time()
    while time.time() - started < limit:
        if cpu_busy() < busy_max:
            break
    waited = time.time() - started
    if waited > 1.5:
        log(f"{what}: waited {waited:.0f} s for the machine to settle")


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, TypeError):
        pass
    return None


class Watch:
    """CPU seconds used and peak RSS of a server process while a scenario runs."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, None, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.cpu = None

    def run(self):
        while not self.stop.is_set():
            r = rss_mib(self.pid)
            if r is not None and (self.peak is None or r > self.peak):
                self.peak = r
            self.stop.wait(0.2)

    def __enter__(self):
        self.cpu0 = cpu_seconds(self.pid) if self.pid else None
        if self.pid:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.pid:
            self.thread.join()
            c1 = cpu_seconds(self.pid)
            if c1 is not None and self.cpu0 is not None:
                self.cpu = c1 - self.cpu0


# --------------------------------------------------------------------------
# The stack


def terminate(proc, grace):
    """SIGTERM, then SIGKILL after `grace` seconds; waits for the process either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Stack:
    def __init__(self, minions, bin_dir, minion_extra, master_extra, references=True, prefix="brine-bench-",
                 salt_nice=0):
        self.root = tempfile.mkdtemp(prefix=prefix)
        self.py = sys.executable
        self.bin_dir = bin_dir
        self.minions = minions
        cmd = [self.py, os.path.join(REPO, "scripts", "saltstack.py"), "start", "--root", self.root,
               "--minions", str(minions), "--watch-pid", str(os.getpid())]
        if not os.environ.get("BRINE_KEEP_STACK"):
            cmd.append("--remove-root")
        if references:
            cmd += ["--reference", "cherrypy,tornado"]
        if minion_extra:
            cmd += ["--minion-extra", minion_extra]
        if master_extra:
            cmd += ["--extra-config", master_extra]
        if salt_nice:
            cmd += ["--salt-nice", str(salt_nice)]
        log("starting the master, minions" + (", rest_cherrypy and rest_tornado" if references else "")
            + ": " + " ".join(cmd[2:]))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.root, "stack.json")) as f:
            self.info = json.load(f)
        self.master_config = self.info["master_config"]
        self.urls = {"brine": self.start_brine()}
        self.pids = {"brine": self.brine_proc.pid, "raw": None}
        if references:
            self.urls["rest_cherrypy"] = f"http://127.0.0.1:{self.info['cherrypy_port']}"
            self.urls["rest_tornado"] = f"http://127.0.0.1:{self.info['tornado_port']}"
            self.pids["rest_cherrypy"] = port_owner(self.info["cherrypy_port"])
            self.pids["rest_tornado"] = port_owner(self.info["tornado_port"])
        log(f"server pids: {self.pids}")

    def start_brine(self):
        port = self.info["brine_port"]
        log_path = os.path.join(self.root, "logs", "brine.out")
        proc = subprocess.Popen(
            [os.path.join(self.bin_dir, "brine"), "-c", self.info["config_dir"], "--port", str(port), "-l", "warning"],
            stdout=subprocess.DEVNULL, stderr=open(log_path, "a"))
        with open(os.path.join(self.root, "pids", "brine.pid"), "w") as f:
            f.write(str(proc.pid))
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        self.brine_proc = proc
        return base

    def restart_brine(self):
        """Stops Brine and starts it again: a new process, which reads the job cache afresh."""
        terminate(self.brine_proc, 30)
        self.urls["brine"] = self.start_brine()
        self.pids["brine"] = self.brine_proc.pid

    def stop(self):
        subprocess.run([self.py, os.path.join(REPO, "scripts", "saltstack.py"), "stop", "--root", self.root],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# Scenarios


def driver(stack):
    return os.path.join(stack.bin_dir, "brine-bench")


def run_load(stack, target, scenario, conc, args):
    limit = args.async_timeout if scenario == "async" else args.timeout
    cmd = [driver(stack), "load", "--name", target, "--master-config", stack.master_config,
           "--scenario", scenario, "--concurrency", str(conc), "--seconds", str(args.seconds),
           "--jobs", str(args.jobs), "--minions", str(stack.minions), "--timeout", str(limit),
           "--quiet", str(args.async_quiet if scenario == "async" else 0)]
    if target != "raw":
        cmd += ["--url", stack.urls[target]]
    with Watch(stack.pids.get(target)) as w:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit * 4 + args.seconds + 120)
    if p.returncode != 0:
        res = {"target": target, "scenario": scenario, "concurrency": conc, "ok": 0, "errors": 1,
               "seconds": None, "rps": 0.0, "p50_ms": None, "p99_ms": None,
               "first_error": (p.stderr.strip().splitlines() or ["driver failed"])[-1]}
    else:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    res["cpu_s"] = w.cpu
    res["peak_rss_mib"] = w.peak
    return res


def sse_command(stack, target, token, clients, args):
    """`brine-bench sse` for `clients` streams on the target (what to measure is added)."""
    sock = stack.info["sock_dir"]
    cmd = [driver(stack), "sse", "--name", target, "--url", stack.urls[target], "--token", token,
           "--clients", str(clients),
           "--bus-pub", os.path.join(sock, "master_event_pub.ipc"),
           "--bus-pull", os.path.join(sock, "master_event_pull.ipc"),
           "--connect-timeout", str(args.sse_connect_timeout), "--drain", str(args.sse_drain)]
    if target == "rest_tornado":
        # saltnado answers 406 to `Accept: text/event-stream`.
        cmd += ["--accept", "application/json"]
    return cmd


def run_sse(stack, target, token, clients, args):
    cmd = sse_command(stack, target, token, clients, args) + ["--events", str(args.events)]
    with Watch(stack.pids.get(target)) as w:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        res = {"target": target, "clients": clients, "connected": 0, "events": args.events,
               "delivered_pct": 0.0, "p50_ms": None, "p99_ms": None, "max_ms": None,
               "error": (p.stderr.strip().splitlines() or ["driver failed"])[-1]}
    else:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    res["peak_rss_mib"] = w.peak
    res["cpu_s"] = w.cpu
    return res


# --------------------------------------------------------------------------
# Report


def fmt(v, unit="", digits=1):
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{unit}".replace(",", " ")
    return f"{v}{unit}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(rows):
    """Per (scenario, concurrency, target): median figures over the rounds."""
    out = {}
    for r in rows:
        key = (r["scenario"], r["concurrency"], r["target"])
        out.setdefault(key, []).append(r)
    summary = {}
    for key, rs in out.items():
        ok = sum(r["ok"] for r in rs)
        errors = sum(r["errors"] for r in rs)
        cpu = [r["cpu_s"] / r["ok"] * 1000 for r in rs if r.get("cpu_s") is not None and r["ok"]]
        summary[key] = {
            "rps": median([r["rps"] for r in rs]) if ok else None,
            "seconds": median([r["seconds"] for r in rs]),
            "p50_ms": median([r["p50_ms"] for r in rs]),
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "ok": ok,
            "errors": errors,
            "first_error": next((r["first_error"] for r in rs if r.get("first_error")), None),
            "cpu_ms": median(cpu),
            "peak_rss_mib": max([r["peak_rss_mib"] for r in rs if r.get("peak_rss_mib")] or [None]) if any(r.get("peak_rss_mib") for r in rs) else None,
        }
    return summary


def report(args, stack, rows, sse_rows, idle, goals_out):
    date = datetime.date.today().isoformat()
    s = summarize(rows)
    keys = []
    for r in rows:
        k = (r["scenario"], r["concurrency"])
        if k not in keys:
            keys.append(k)
    lines = [
        f"# Brine benchmark, {date}",
        "",
        f"Command: `{args.cmdline}`",
        f"Machine: {machine()}; the driver, the master, {stack.minions} minions and every server share it.",
        f"Salt {stack.info.get('salt_version')} (master defaults but `worker_threads: 5`; minions "
        f"{'fork a process per job' if args.minion_processes else 'run jobs in threads (`multiprocessing: false`)'}); Brine "
        f"{'release' if not args.smoke else 'debug'} build with default settings. {args.rounds} interleaved "
        f"round(s) per scenario, {args.seconds} s each; figures are medians over the rounds. Each "
        f"SSE and async run starts once the machine is under 30 % busy (at most 15 s of waiting).",
        "",
        "## Throughput (checked answers per second)",
        "",
        "`async` is the wall time until all returns of the jobs are on the master's bus. `raw master` is "
        "the same master commands sent by the driver through salt-wire with no HTTP in between (one "
        "connection per worker). Ratios: Brine ÷ raw master, Brine ÷ rest_cherrypy (for `async`: "
        "inverse of the wall times).",
        "",
        "| scenario | concurrency | raw master | Brine | rest_cherrypy | rest_tornado | Brine ÷ raw | Brine ÷ cherrypy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sc, conc in keys:
        cells = []
        for t in TARGETS:
            v = s.get((sc, conc, t))
            if v is None:
                cells.append("not run")
            elif sc == "async":
                cells.append(fmt(v["seconds"], " s") if v["ok"] and not v["errors"] else
                             f"{v['ok']} of {args.jobs} jobs")
            elif v["rps"] is None:
                cells.append("no such client" if "Client not found" in (v["first_error"] or "") else "fails")
            else:
                cells.append(fmt(v["rps"], "/s") + (f" ({v['errors']} err)" if v["errors"] else ""))
        b, raw, cp = (s.get((sc, conc, t)) or {} for t in ("brine", "raw", "rest_cherrypy"))
        if sc == "async":
            r1, r2 = ratio(raw.get("seconds"), b.get("seconds")), ratio(cp.get("seconds"), b.get("seconds"))
        else:
            r1, r2 = ratio(b.get("rps"), raw.get("rps")), ratio(b.get("rps"), cp.get("rps"))
        lines.append(f"| {sc} | {conc} | " + " | ".join(cells) + f" | {fmt(r1 * 100 if r1 else None, ' %', 0)} | {fmt(r2, '×')} |")
    lines += [
        "",
        "## Latency and server cost",
        "",
        "p50 / p99 latency per request; server CPU milliseconds per checked request (user + system "
        "time of the process that owns the target's port, over the run); peak RSS of that process.",
        "",
        "| scenario | concurrency | target | p50 | p99 | CPU per request | peak RSS | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sc, conc in keys:
        for t in TARGETS:
            v = s.get((sc, conc, t))
            if v is None:
                continue
            err = str(v["errors"]) + (f" (`{v['first_error'][:80]}`)" if v["first_error"] else "")
            lines.append(f"| {sc} | {conc} | {LABEL[t]} | {fmt(v['p50_ms'], ' ms')} | {fmt(v['p99_ms'], ' ms')} | "
                         f"{fmt(v['cpu_ms'], ' ms', 2)} | {fmt(v['peak_rss_mib'], ' MiB')} | {err} |")
    lines += [
        "",
        "## SSE fan-out",
        "",
        f"{args.events} events fired into the master's bus, one every 100 ms; delay is measured from the "
        "moment the master's bus delivered the event to the driver's own subscription, so the bus's own "
        "delay is zero by construction.",
        "",
        "| clients | target | streams open | delivered | p50 delay | p99 delay | max delay | peak RSS | CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sse_rows:
        if r.get("skipped"):
            lines.append(f"| {r['clients']} | {LABEL[r['target']]} | not run: {r['skipped']} | | | | | | |")
            continue
        lines.append(f"| {r['clients']} | {LABEL[r['target']]} | {r['connected']}/{r['clients']} | "
                     f"{fmt(r['delivered_pct'], ' %')} | {fmt(r['p50_ms'], ' ms')} | {fmt(r['p99_ms'], ' ms')} | "
                     f"{fmt(r['max_ms'], ' ms')} | {fmt(r.get('peak_rss_mib'), ' MiB')} | {fmt(r.get('cpu_s'), ' s', 2)} |")
    lines += ["", "## Idle memory (after start-up and one login)", "",
              "| target | RSS |", "|---|---|"]
    for t in HTTP_TARGETS:
        lines.append(f"| {LABEL[t]} | {fmt(idle.get(t), ' MiB')} |")
    lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    for g in goals_out:
        lines.append(f"| {g[0]} | {g[1]} | {'yes' if g[2] else '**no**'} |")
    return "\n".join(lines) + "\n"


def goals(s, sse_rows, idle, args):
    out = []
    for sc in ("login", "runner", "wheel"):
        for conc in args.conc_api:
            b, raw = s.get((sc, conc, "brine")), s.get((sc, conc, "raw"))
            if b and raw and raw["rps"]:
                r = (b["rps"] or 0) / raw["rps"]
                out.append((f"{sc} at {conc}: Brine ≥ 80 % of raw", f"{r * 100:.0f} %", r >= 0.8))
    for conc in args.conc_local:
        b, raw = s.get(("local", conc, "brine")), s.get(("local", conc, "raw"))
        if b and raw and raw["rps"]:
            r = (b["rps"] or 0) / raw["rps"]
            out.append((f"local at {conc}: Brine within 5 % of raw", f"{r * 100:.0f} %", r >= 0.95))
    b, raw = s.get(("async", args.jobs, "brine")), s.get(("async", args.jobs, "raw"))
    if b and raw and (b["errors"] or raw["errors"]):
        out.append((f"{args.jobs} async jobs: Brine within 5 % of raw",
                    f"not all returns arrived within {args.async_timeout} s (Brine {b['ok']}, raw {raw['ok']} jobs complete)",
                    False))
    elif b and raw and b["seconds"] and raw["seconds"]:
        r = raw["seconds"] / b["seconds"]
        out.append((f"{args.jobs} async jobs: Brine within 5 % of raw", f"{b['seconds']:.1f} s vs {raw['seconds']:.1f} s ({r * 100:.0f} %)", r >= 0.95))
    big = [r for r in sse_rows if r["target"] == "brine" and not r.get("skipped")]
    if big:
        r = max(big, key=lambda r: r["clients"])
        ok = r["delivered_pct"] >= 100.0 and r["p99_ms"] is not None and r["p99_ms"] <= 50.0
        out.append((f"SSE {r['clients']} clients: 100 % delivered, p99 ≤ bus + 50 ms",
                    f"{fmt(r['delivered_pct'], ' %')}, p99 {fmt(r['p99_ms'], ' ms')}", ok))
        rss = r.get("peak_rss_mib")
        if rss is not None:
            out.append((f"Brine RSS ≤ 100 MiB with {r['clients']} streams", fmt(rss, " MiB"), rss <= 100))
    if idle.get("brine") is not None:
        out.append(("Brine RSS ≤ 20 MiB idle", fmt(idle["brine"], " MiB"), idle["brine"] <= 20))
    worst = None
    for (sc, conc, t), v in s.items():
        if t != "brine" or sc == "async":
            continue
        cp = s.get((sc, conc, "rest_cherrypy"))
        if v["cpu_ms"] and cp and cp["cpu_ms"]:
            r = cp["cpu_ms"] / v["cpu_ms"]
            if worst is None or r < worst[0]:
                worst = (r, sc, conc)
    if worst:
        out.append(("CPU per request ≤ 1/50 of rest_cherrypy (worst scenario)",
                    f"1/{worst[0]:.0f} ({worst[1]} at {worst[2]})", worst[0] >= 50))
    return out


def write_result(out, text, data):
    """Writes the result table to `out` and its figures beside it as `.json`."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(data, f, indent=1)


def update_readme(text_table, begin=README_BEGIN, end=README_END):
    """Replaces what is between the markers `begin` and `end` in the README."""
    path = os.path.join(REPO, "README.md")
    with open(path) as f:
        readme = f.read()
    if begin not in readme or end not in readme:
        log(f"README has no {begin} markers; not updated")
        return
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + text_table + end + tail)
    log(f"README section {begin} updated")


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="short run with debug binaries (see above)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per scenario")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of one closed-loop run")
    ap.add_argument("--conc-api", type=ints, default=[1, 10, 50], help="concurrencies of login/runner/wheel")
    ap.add_argument("--conc-local", type=ints, default=[1, 10], help="concurrencies of local")
    ap.add_argument("--jobs", type=int, default=200, help="jobs of the async scenario (all in flight)")
    ap.add_argument("--sse-clients", type=ints, default=[100, 1000, 10000], help="SSE client counts")
    ap.add_argument("--events", type=int, default=20, help="events per SSE run")
    ap.add_argument("--sse-connect-timeout", type=int, default=30,
                    help="how long the driver waits for all streams to open (the Python servers "
                         "never open 1 000 or more; Brine opens 10 000 in a few seconds)")
    ap.add_argument("--sse-drain", type=int, default=10,
                    help="seconds the driver waits for late events after the last one is fired "
                         "(rest_cherrypy delivers some 5 to 11 s late)")
    ap.add_argument("--minions", type=int, default=4)
    ap.add_argument("--timeout", type=int, default=60, help="limit for one request, seconds")
    ap.add_argument("--async-timeout", type=int, default=300,
                    help="limit for the returns of one async job, seconds: a Salt 3008 minion "
                         "hands each return to its main process over its own event bus, where "
                         "every job thread listens, so a burst of N jobs costs it O(N^2) and 200 "
                         "jobs take minutes on a small machine")
    ap.add_argument("--async-quiet", type=int, default=60,
                    help="a job of the async scenario that has some of its returns is given up "
                         "once no return of any job arrived for this long, seconds (the master "
                         "can lose a minion's return under this load; without this the run "
                         "would wait the rest of --async-timeout for it)")
    ap.add_argument("--scenarios", default="login,runner,wheel,local,async,sse", help="which scenarios")
    ap.add_argument("--minion-processes", action="store_true",
                    help="minions fork a process per job (Salt's default); by default they run jobs in "
                         "threads (multiprocessing: false), so that on a small machine the minion-bound "
                         "scenarios measure the API and the master rather than Python's fork")
    ap.add_argument("--master-extra", default="",
                    help="YAML mapping of master options for the stack (e.g. 'brine: {pool_size: 8}')")
    ap.add_argument("--targets", default=",".join(TARGETS), help="which targets (comma-separated)")
    ap.add_argument("--bin-dir", default=None, help="where brine and brine-bench are (default target/release)")
    ap.add_argument("--out", default=None, help="result file (default bench/results/<date>.md)")
    ap.add_argument("--settle", type=float, default=15,
                    help="longest wait, seconds, for a quiet machine before an SSE or async run")
    args = ap.parse_args()
    args.cmdline = ("bench/run " + " ".join(sys.argv[1:])).strip()
    if args.smoke:
        args.rounds, args.seconds, args.conc_api, args.conc_local = 1, 1.0, [4], [1]
        args.jobs, args.sse_clients, args.events, args.minions = 10, [50], 5, 2
        args.sse_connect_timeout, args.sse_drain, args.timeout, args.async_timeout = 20, 3, 30, 60
        # The smoke run checks answers, not figures: it does not wait for a quiet machine.
        args.settle = 0
    bin_dir = args.bin_dir or os.path.join(REPO, "target", "debug" if args.smoke else "release")
    wanted = set(args.scenarios.split(","))

    stack = Stack(args.minions, bin_dir, "" if args.minion_processes else "multiprocessing: false",
                  args.master_extra)
    rows, sse_rows, idle = [], [], {}
    started = time.time()
    try:
        tokens = {t: login(stack.urls[t]) for t in HTTP_TARGETS}
        for t in HTTP_TARGETS:
            idle[t] = rss_mib(stack.pids[t]) if stack.pids[t] else None
        plan = [(sc, c) for sc in ("login", "runner", "wheel") if sc in wanted for c in args.conc_api]
        plan += [("local", c) for c in args.conc_local if "local" in wanted]
        # A target that has no such client (rest_tornado has no `wheel`) says so on its first
        # run; its further runs of that scenario are recorded as not run instead of repeated.
        no_client = {}
        for sc, conc in plan:
            for rnd in range(args.rounds):
                for t in [t for t in TARGETS if t in args.targets.split(",")]:
                    if (t, sc) in no_client:
                        rows.append({"target": t, "scenario": sc, "concurrency": conc, "ok": 0, "errors": 0,
                                     "seconds": None, "rps": 0.0, "p50_ms": None, "p99_ms": None,
                                     "first_error": no_client[(t, sc)] + " (not run again)",
                                     "cpu_s": None, "peak_rss_mib": None, "round": rnd + 1})
                        continue
                    res = run_load(stack, t, sc, conc, args)
                    if not res["ok"] and "Client not found" in (res.get("first_error") or ""):
                        no_client[(t, sc)] = res["first_error"]
                    res["round"] = rnd + 1
                    log(f"{sc} c={conc} round {rnd + 1} {t}: ok={res['ok']} err={res['errors']} "
                        f"rps={fmt(res['rps'])} p50={fmt(res['p50_ms'])} ms cpu={fmt(res['cpu_s'], '', 2)} s"
                        + (f" first_error={res['first_error']}" if res.get("first_error") else ""))
                    rows.append(res)
        # SSE before the async jobs: on a small machine the master is still storing late
        # returns of 200 jobs minutes later, and that event flood would be measured as SSE.
        if "sse" in wanted:
            # A server that could not even open half the streams at one size is not tried
            # with ten times more (it only burns minutes of the run).
            gave_up = {}
            for n in args.sse_clients:
                for t in [t for t in HTTP_TARGETS if t in args.targets.split(",")]:
                    if t in gave_up:
                        sse_rows.append({"target": t, "clients": n, "skipped": gave_up[t]})
                        continue
                    settle(f"sse {n} {t}", limit=args.settle)
                    log(f"sse: {n} clients on {t}")
                    res = run_sse(stack, t, tokens[t], n, args)
                    log(json.dumps(res))
                    sse_rows.append(res)
                    if res["connected"] * 2 < n:
                        gave_up[t] = f"opened {res['connected']} of {n} streams with {n} clients"
        if "async" in wanted:
            # One round: 200 jobs keep a small machine's minions busy for minutes (a Salt 3008
            # minion's cost grows with the square of its jobs in flight, see --async-timeout).
            for t in [t for t in TARGETS if t in args.targets.split(",")]:
                settle(f"async {t}", limit=args.settle)
                res = run_load(stack, t, "async", args.jobs, args)
                res["round"] = 1
                log(f"async {args.jobs} jobs {t}: ok={res['ok']} err={res['errors']} seconds={fmt(res['seconds'])}"
                    + (f" first_error={res['first_error']}" if res.get("first_error") else ""))
                rows.append(res)
    finally:
        stack.stop()
    elapsed = time.time() - started

    s = summarize(rows)
    goal_rows = goals(s, sse_rows, idle, args)
    text = report(args, stack, rows, sse_rows, idle, goal_rows)
    text += f"\nScenarios ran for {elapsed / 60:.1f} min.\n"
    date = datetime.date.today().isoformat()
    out = args.out or (os.path.join(REPO, "target", "bench-smoke.md") if args.smoke
                       else os.path.join(REPO, "bench", "results", f"{date}.md"))
    write_result(out, text, {"rows": rows, "sse": sse_rows, "idle_rss_mib": idle})
    print(text)
    log(f"written to {out}")

    if args.smoke:
        bad = [r for r in rows if r["target"] in ("brine", "raw")
               and (r["errors"] - r.get("master_errors", 0) or not r["ok"])]
        bad += [r for r in sse_rows if r["target"] == "brine" and r.get("delivered_pct", 0.0) < 100.0]
        if bad:
            for r in bad:
                log("FAILED: " + json.dumps(r))
            sys.exit(1)
        log("smoke: every Brine and raw request was answered right")
    elif not args.out:
        body = re.sub(r"^## ", "### ", text.split("\n", 1)[1], flags=re.M)
        update_readme(f"Result file: `bench/results/{date}.md`.\n" + body)

if __name__ == "__main__":
    main()
