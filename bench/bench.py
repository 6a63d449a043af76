"""Side-by-side benchmark of Brine and the Python salt-api on one Salt master.

Started by bench/run (which builds the release binaries first). It starts a private stack
(scripts/saltstack.py: salt-master, minions, rest_cherrypy), Brine in front of the same master,
and runs each scenario against every target interleaved (A B A B ...), so all targets see the
same machine load over time. Results go to bench/results/<date>.md and are printed.

Scenarios:
  sse-N   N /events streams; events fired into the master's bus; delivered share and
          p50/p99 delay relative to the bus (brine-bench sse).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(REPO, "target", "release")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def login(base):
    req = urllib.request.Request(
        base + "/login",
        data=json.dumps({"username": "saltdev", "password": "saltdev", "eauth": "auto"}).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
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


class Stack:
    def __init__(self, minions):
        self.root = tempfile.mkdtemp(prefix="brine-bench-")
        self.py = sys.executable
        cmd = [self.py, os.path.join(REPO, "scripts", "saltstack.py"), "start", "--root", self.root,
               "--minions", str(minions), "--reference", "cherrypy", "--watch-pid", str(os.getpid())]
        log("starting master, minions and rest_cherrypy: " + " ".join(cmd[2:]))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.root, "stack.json")) as f:
            self.info = json.load(f)
        self.brine = self.start_brine()

    def start_brine(self):
        port = self.info["brine_port"]
        log_path = os.path.join(self.root, "logs", "brine.out")
        proc = subprocess.Popen(
            [os.path.join(RELEASE, "brine"), "-c", self.info["config_dir"], "--port", str(port), "-l", "warning"],
            stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
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

    def targets(self):
        return {
            "brine": self.brine,
            "rest_cherrypy": f"http://127.0.0.1:{self.info['cherrypy_port']}",
        }

    def pid(self, name):
        if name == "brine":
            return self.brine_proc.pid
        return self.info["pids"].get("salt-api")

    def stop(self):
        subprocess.run([self.py, os.path.join(REPO, "scripts", "saltstack.py"), "stop", "--root", self.root],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, TypeError):
        pass
    return None


class PeakRss:
    """Samples a process's resident memory every 200 ms while a scenario runs."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, None, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            r = rss_mib(self.pid)
            if r is not None and (self.peak is None or r > self.peak):
                self.peak = r
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run_sse(stack, name, base, token, clients, events):
    sock = stack.info["sock_dir"]
    cmd = [os.path.join(RELEASE, "brine-bench"), "sse", "--name", name, "--url", base, "--token", token,
           "--clients", str(clients), "--events", str(events),
           "--bus-pub", os.path.join(sock, "master_event_pub.ipc"),
           "--bus-pull", os.path.join(sock, "master_event_pull.ipc"),
           "--connect-timeout", "60", "--drain", "10"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])


def fmt(v, unit=""):
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    return f"{v}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sse-clients", default="1000,10000", help="SSE client counts (comma-separated)")
    ap.add_argument("--events", type=int, default=20, help="events per SSE run")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds per scenario")
    ap.add_argument("--minions", type=int, default=2)
    ap.add_argument("--out", default=None, help="result file (default bench/results/<date>.md)")
    args = ap.parse_args()

    stack = Stack(args.minions)
    rows = []
    try:
        targets = stack.targets()
        tokens = {name: login(base) for name, base in targets.items()}
        for n in [int(x) for x in args.sse_clients.split(",") if x]:
            for rnd in range(args.rounds):
                for name, base in targets.items():
                    log(f"sse: {n} clients on {name} (round {rnd + 1})")
                    with PeakRss(stack.pid(name)) as rss:
                        res = run_sse(stack, name, base, tokens[name], n, args.events)
                    res["peak_rss_mib"] = rss.peak
                    res["scenario"] = f"SSE, {n} clients"
                    res["round"] = rnd + 1
                    log(json.dumps(res))
                    rows.append(res)
    finally:
        stack.stop()

    date = datetime.date.today().isoformat()
    out = args.out or os.path.join(REPO, "bench", "results", f"{date}.md")
    cmdline = "bench/run " + " ".join(sys.argv[1:])
    lines = [
        f"# Brine benchmark, {date}",
        "",
        f"Command: `{cmdline.strip()}`",
        f"Machine: {machine()}",
        f"Salt: {stack.info.get('salt_version')}, {args.minions} minions; targets on the same master, "
        "interleaved per scenario.",
        "",
        "## SSE fan-out (events fired into the master's bus; delay measured from the bus)",
        "",
        "The driver (`brine-bench sse`) runs on the same machine as the servers and the master; "
        "peak RSS is the server's main process.",
        "",
        "| scenario | target | round | streams open | delivered | p50 delay | p99 delay | max delay | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['target']} | {r['round']} | {r['connected']}/{r['clients']} | "
            f"{fmt(r['delivered_pct'], ' %')} | {fmt(r['p50_ms'], ' ms')} | {fmt(r['p99_ms'], ' ms')} | "
            f"{fmt(r['max_ms'], ' ms')} | {fmt(r.get('peak_rss_mib'), ' MiB')} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(text)
    log(f"written to {out}")


if __name__ == "__main__":
    main()
