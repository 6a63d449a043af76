#!/usr/bin/env python3
"""Private Salt test stack for Brine: one salt-master, N salt-minions and
optionally the reference Python salt-api, all under one root directory, on
free TCP ports, running as the current user (root or not).

Usage (normally with the project venv's python, see scripts/salt-venv):

    saltstack.py start --root DIR [--minions 2] [--transport zeromq|tcp]
                       [--ipc-mode ipc|tcp] [--reference cherrypy[,tornado]]
                       [--brine-port PORT] [--watch-pid PID [--remove-root]] [--timeout 90]
                       [--extra-config YAML] [--rest-extra YAML] [--minion-extra YAML]
                       [--no-netapi-marker]
    saltstack.py stop --root DIR [--grace 10]
    saltstack.py stop-master --root DIR
    saltstack.py start-master --root DIR [--timeout 90] [--recover-after 15]
                       [--no-minion-restart]
    saltstack.py status --root DIR [--json]

The Salt venv is --venv, else $BRINE_VENV, else the venv this python runs
in, else REPO/.venv. BRINE_STACK_LOG_LEVEL=debug raises the Salt log files'
level (default info). Timings on a 2-CPU box: start ~13-17 s (fresh keys),
start-master ~10-20 s, stop ~5-10 s (salt-minion takes 5-8 s to exit).

Layout under DIR:
    etc/salt/master            master config (root_dir: DIR)
    etc/salt/pki/master        master keys, accepted minion keys
    var/cache/salt/master      master cachedir (tokens, jobs)
    run/master                 master sock_dir (event bus unix sockets)
    minions/<id>/minion        minion config (-c DIR/minions/<id>), root_dir of that minion
    srv/salt, srv/pillar       file_roots / pillar_roots (empty)
    logs/                      <name>.out (stdout+stderr) and <name>.log (Salt log file)
    pids/<name>.pid            one pid per line-less file; others (e.g. Brine) may add theirs
    stack.json                 machine-readable description (ports, paths, pids, eauth)

`stop` (and the --watch-pid watchdog) terminates every process recorded in
DIR/pids, including pid files added later by others (e.g. DIR/pids/brine.pid).

Exit codes: 0 success; 1 failure (message on stderr); 2 usage error;
`status` exits 3 when some recorded process is dead and 4 when none is recorded.

Linux only (uses /proc to follow process groups).
"""

import argparse
import contextlib
import errno
import fcntl
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))

DEFAULT_TIMEOUT = 90.0
STOP_GRACE = 10.0
EAUTH = {"eauth": "auto", "username": "saltdev", "password": "saltdev"}
NETAPI_CLIENTS = [
    "local",
    "local_async",
    "local_batch",
    "local_subset",
    "runner",
    "runner_async",
    "wheel",
    "wheel_async",
]
# Longest unix socket names Salt creates in a sock_dir (3006-3008):
# master: "master_event_pull.ipc"; minion: "minion_event_<10 hex>_pull.ipc".
MASTER_SOCK_NAME_MAX = len("master_event_pull.ipc")
MINION_SOCK_NAME_MAX = len("minion_event_0123456789_pull.ipc")
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
# Salt log file level of master and minions (debugging the stack itself).
LOGFILE_LEVEL = os.environ.get("BRINE_STACK_LOG_LEVEL", "info")


class StackError(Exception):
    pass


def log(msg):
    sys.stderr.write("saltstack [%s]: %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# --------------------------------------------------------------------------
# Paths


class Paths:
    def __init__(self, root):
        self.root = os.path.realpath(os.path.abspath(root))
        r = self.root
        self.config_dir = os.path.join(r, "etc", "salt")
        self.master_config = os.path.join(self.config_dir, "master")
        self.pki_master = os.path.join(self.config_dir, "pki", "master")
        self.cachedir = os.path.join(r, "var", "cache", "salt", "master")
        self.run = os.path.join(r, "run")
        self.sock_dir = os.path.join(self.run, "master")
        self.logs = os.path.join(r, "logs")
        self.pids = os.path.join(r, "pids")
        self.srv = os.path.join(r, "srv")
        self.minions_dir = os.path.join(r, "minions")
        self.stack_json = os.path.join(r, "stack.json")
        self.lock = os.path.join(r, ".saltstack.lock")

    def minion_root(self, mid):
        return os.path.join(self.minions_dir, mid)

    def minion_config(self, mid):
        return os.path.join(self.minion_root(mid), "minion")

    def minion_sock_dir(self, mid):
        return os.path.join(self.minion_root(mid), "run")

    def minion_pki(self, mid):
        return os.path.join(self.minion_root(mid), "pki")

    def minion_log(self, mid):
        # Salt prefixes root_dir to log_file unless it is already below it.
        return os.path.join(self.minion_root(mid), "minion.log")

    def out(self, name):
        return os.path.join(self.logs, name + ".out")

    def saltlog(self, name):
        return os.path.join(self.logs, name + ".log")

    def pidfile(self, name):
        return os.path.join(self.pids, name + ".pid")

    def startfile(self, name):
        return os.path.join(self.pids, "." + name + ".start")


def find_venv(explicit=None):
    cands = []
    if explicit:
        cands.append(explicit)
    if os.environ.get("BRINE_VENV"):
        cands.append(os.environ["BRINE_VENV"])
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        cands.append(sys.prefix)  # we run inside a venv: use its Salt
    cands.append(os.path.join(REPO, ".venv"))
    for c in cands:
        if os.access(os.path.join(c, "bin", "salt-master"), os.X_OK):
            return os.path.abspath(c)
    raise StackError(
        "no Salt venv found (looked in %s); run scripts/salt-venv first, or pass --venv, "
        "or run this script with the venv's python"
        % ", ".join(cands)
    )


def current_user():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise StackError("uid %d has no passwd entry; Salt needs a user name" % os.geteuid())


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALT_")}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


# --------------------------------------------------------------------------
# Minimal YAML emitter (block style, YAML 1.1-safe scalars)

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_YAML11_SPECIAL = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"}


def _scalar(v):
    if v is True:
        return "True"
    if v is False:
        return "False"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _YAML11_SPECIAL:
        return s
    return "'" + s.replace("'", "''") + "'"


def _emit(obj, indent):
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = _scalar(k)
            if isinstance(v, (dict, list)) and v:
                lines.append("%s%s:" % (pad, key))
                lines.extend(_emit(v, indent + 2))
            elif isinstance(v, dict):
                lines.append("%s%s: {}" % (pad, key))
            elif isinstance(v, list):
                lines.append("%s%s: []" % (pad, key))
            else:
                lines.append("%s%s: %s" % (pad, key, _scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict) and item:
                sub = _emit(item, indent + 2)
                sub[0] = pad + "- " + sub[0][indent + 2 :]
                lines.extend(sub)
            elif isinstance(item, (dict, list)):
                if item:
                    raise ValueError("nested lists are not supported")
                lines.append("%s- %s" % (pad, "{}" if isinstance(item, dict) else "[]"))
            else:
                lines.append("%s- %s" % (pad, _scalar(item)))
    else:
        raise ValueError("top level must be a dict or list")
    return lines


def to_yaml(obj):
    return "\n".join(_emit(obj, 0)) + "\n"


def write_atomic(path, text, mode=0o644):
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------
# Processes (Linux /proc)


def proc_stat(pid):
    """(state, pgrp, starttime) of pid, or None if it does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    rest = data[data.rfind(")") + 2 :].split()
    try:
        return rest[0], int(rest[2]), int(rest[19])
    except (IndexError, ValueError):
        return None


def alive(pid, starttime=None):
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    if starttime is not None and st[2] != starttime:
        return False  # pid reused by another process
    return True


def proc_start_epoch(pid):
    """Start time of pid in seconds since the epoch (None if unknown)."""
    st = proc_stat(pid)
    if st is None:
        return None
    try:
        with open("/proc/stat") as f:
            btime = next(int(l.split()[1]) for l in f if l.startswith("btime "))
        return btime + st[2] / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError):
        return None


def group_members(pgid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st and st[1] == pgid and st[0] not in ("Z", "X"):
            out.append(int(d))
    return out


def read_pidfiles(paths):
    """{name: (pid, starttime or None)} for every DIR/pids/*.pid."""
    res = {}
    if not os.path.isdir(paths.pids):
        return res
    for fn in sorted(os.listdir(paths.pids)):
        if not fn.endswith(".pid") or fn.startswith("."):
            continue
        name = fn[: -len(".pid")]
        try:
            with open(os.path.join(paths.pids, fn)) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        start = None
        with contextlib.suppress(OSError, ValueError):
            with open(paths.startfile(name)) as f:
                start = int(f.read().strip())
        if start is None:
            # A pid file written by someone else (e.g. brine.pid). If its
            # process started after the file was last written, the pid has
            # been reused: leave that process alone.
            began = proc_start_epoch(pid)
            with contextlib.suppress(OSError):
                if began is not None and began > os.stat(os.path.join(paths.pids, fn)).st_mtime + 2:
                    res[name] = (pid, -1)  # never matches: treated as dead
                    continue
        res[name] = (pid, start)
    return res


def record_pid(paths, name, pid):
    st = proc_stat(pid)
    write_atomic(paths.pidfile(name), "%d\n" % pid)
    if st is not None:
        write_atomic(paths.startfile(name), "%d\n" % st[2])


def remove_pidfile(paths, name):
    for p in (paths.pidfile(name), paths.startfile(name)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def _signal_target(pid, start, sig):
    """Send sig to the process group of pid when we own it (pid is its own
    group leader or a recorded group of ours), else to pid alone."""
    if start == -1:
        return None  # stale foreign pid file (pid reused), see read_pidfiles
    me_pgrp = os.getpgrp()
    own = start is not None  # we recorded it: started with start_new_session
    st = proc_stat(pid)
    is_leader = st is not None and st[1] == pid
    if (own or is_leader) and pid != me_pgrp:
        if own and not alive(pid, start) and not group_members(pid):
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        return ("group", pid)
    if st is None or not alive(pid, start):
        return None
    if pid == os.getpid():
        return None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
    return ("pid", pid)


def _target_alive(t):
    kind, pid = t
    if kind == "group":
        return bool([p for p in group_members(pid) if p != os.getpid()])
    return alive(pid)


def terminate(entries, grace=STOP_GRACE):
    """entries: {name: (pid, starttime|None)}. SIGTERM all, wait up to grace
    seconds, SIGKILL what is left. Returns names that had to be killed."""
    targets = {}
    for name, (pid, start) in entries.items():
        if pid == os.getpid() or pid <= 1:
            continue
        t = _signal_target(pid, start, signal.SIGTERM)
        if t:
            targets[name] = t
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(_target_alive(t) for t in targets.values()):
            return []
        time.sleep(0.1)
    killed = []
    for name, t in targets.items():
        if _target_alive(t):
            killed.append(name)
            kind, pid = t
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if kind == "group":
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_target_alive(t) for t in targets.values()):
        time.sleep(0.1)
    left = [n for n, t in targets.items() if _target_alive(t)]
    if left:
        raise StackError("could not kill: %s" % ", ".join(left))
    return killed


def clear_responsibility(*dirs):
    """Remove Salt's process_responsibility_*.pid files. Salt (with psutil)
    refuses to start ("An instance is already running") while the process
    named there still exists, and a killed daemon can linger as a zombie
    until init reaps it. Only call this once the old processes are gone."""
    for d in dirs:
        with contextlib.suppress(OSError):
            for fn in os.listdir(d):
                if fn.startswith("process_responsibility_") and fn.endswith(".pid"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(d, fn))


def spawn(paths, name, argv, env, nice=0):
    """Starts argv in its own session (so its own autogroup) with output to the stack's log.
    nice > 0 runs it, and everything it forks, that much nicer: as a process (inherited by
    its children) and as an autogroup (the kernel weighs sessions against each other by the
    autogroup's nice, not by the processes' own)."""
    out = open(paths.out(name), "ab")
    try:
        out.write(("\n==== %s %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), " ".join(argv))).encode())
        out.flush()
        try:
            p = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=paths.root,
                env=env,
                close_fds=True,
                preexec_fn=(lambda: os.nice(nice)) if nice > 0 else None,
            )
        except OSError as e:
            raise StackError("cannot run %s: %s" % (argv[0], e))
    finally:
        out.close()
    if nice > 0:
        # Absent without CONFIG_SCHED_AUTOGROUP; ignored when autogroup is off.
        with contextlib.suppress(OSError):
            with open("/proc/%d/autogroup" % p.pid, "w") as f:
                f.write(str(nice))
    record_pid(paths, name, p.pid)
    return p


@contextlib.contextmanager
def root_lock(paths, timeout=120.0):
    os.makedirs(paths.root, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise StackError("another saltstack.py holds %s" % paths.lock)
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# Ports: random, outside the kernel's ephemeral range (so outgoing
# connections cannot grab them between allocation and bind, e.g. while the
# master is down for a restart), reserved per user so parallel stacks do not
# pick the same ones.


def _reservation_dir():
    d = os.path.join(tempfile.gettempdir(), "brine-ports-%d" % os.geteuid())
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def _port_free(port):
    for host in ("127.0.0.1", "0.0.0.0"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _reservation_live(path):
    try:
        with open(path) as f:
            root = f.read().strip()
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return False
    if age < 600:
        return True
    # Older reservations stay while their stack has a live process.
    if not root or not os.path.isdir(root):
        return False
    for _name, (pid, start) in read_pidfiles(Paths(root)).items():
        if alive(pid, start):
            return True
    return False


def release_ports(paths):
    d = _reservation_dir()
    for fn in os.listdir(d):
        if not fn.isdigit():
            continue
        p = os.path.join(d, fn)
        with contextlib.suppress(OSError):
            with open(p) as f:
                if f.read().strip() == paths.root:
                    os.unlink(p)


def allocate_ports(paths, n, exclude=(), linked=None):
    """n free ports. linked: {index: offset}: port[index] + offset must be
    free too, and is reserved with it (Salt derives a port from it)."""
    linked = linked or {}
    d = _reservation_dir()
    lo_eph = 32768
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo_eph = int(f.read().split()[0])
    lo, hi = 10000, lo_eph - 1
    if hi - lo < 1000:
        lo, hi = 1024, lo_eph - 1
    lockfd = os.open(os.path.join(d, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lockfd, fcntl.LOCK_EX)
        got = []
        taken = set(exclude)
        tries = 0
        while len(got) < n:
            tries += 1
            if tries > 5000:
                raise StackError("could not find %d free TCP ports in %d-%d" % (n, lo, hi))
            off = linked.get(len(got))
            group = [random.randint(lo, hi - (off or 0))]
            if off:
                group.append(group[0] + off)
            ok = True
            for port in group:
                rp = os.path.join(d, str(port))
                if (port in taken or (os.path.exists(rp) and _reservation_live(rp))
                        or not _port_free(port)):
                    ok = False
                    break
            if not ok:
                continue
            for port in group:
                with open(os.path.join(d, str(port)), "w") as f:
                    f.write(paths.root + "\n")
                taken.add(port)
            got.append(group[0])
        return got
    finally:
        os.close(lockfd)


# --------------------------------------------------------------------------
# Config


def parse_reference(s):
    if not s:
        return []
    items = [x.strip().lower() for x in s.split(",") if x.strip()]
    for x in items:
        if x not in ("cherrypy", "tornado"):
            raise StackError("--reference: unknown API %r (use cherrypy[,tornado])" % x)
    return items


def build_master_config(paths, user, ports, transport, ipc_mode, with_tornado):
    cfg = {
        "root_dir": paths.root,
        "user": user,
        "interface": "127.0.0.1",
        "publish_port": ports["publish_port"],
        "ret_port": ports["ret_port"],
        "transport": transport,
        "ipc_mode": ipc_mode,
    }
    if ipc_mode == "tcp":
        for k in ("tcp_master_pub_port", "tcp_master_pull_port", "tcp_master_publish_pull", "tcp_master_workers"):
            cfg[k] = ports[k]
    cfg.update(
        {
            "pki_dir": paths.pki_master,
            "cachedir": paths.cachedir,
            "sock_dir": paths.sock_dir,
            "pidfile": os.path.join(paths.run, "salt-master.pid"),
            "log_file": paths.saltlog("master"),
            "key_logfile": paths.saltlog("key"),
            "log_level_logfile": LOGFILE_LEVEL,
            "api_logfile": paths.saltlog("salt-api"),
            "api_pidfile": os.path.join(paths.run, "salt-api.pid"),
            "file_roots": {"base": [os.path.join(paths.srv, "salt")]},
            "pillar_roots": {"base": [os.path.join(paths.srv, "pillar")]},
            "auto_accept": True,
            "open_mode": False,
            "worker_threads": 5,
            "netapi_enable_clients": list(NETAPI_CLIENTS),
            "external_auth": {
                "auto": {
                    "saltdev": [".*", "@runner", "@wheel", "@jobs"],
                    "limited": [{"m1": ["test.*"]}],
                }
            },
            "rest_cherrypy": {
                "host": "127.0.0.1",
                "port": ports["cherrypy_port"],
                "disable_ssl": True,
            },
        }
    )
    if with_tornado:
        cfg["rest_tornado"] = {
            "address": "127.0.0.1",
            "port": ports["tornado_port"],
            "disable_ssl": True,
            "websockets": True,
        }
    return cfg


def build_minion_config(paths, mid, user, ports, transport, ipc_mode, mports):
    r = paths.minion_root(mid)
    cfg = {
        "id": mid,
        "root_dir": r,
        "user": user,
        "master": "127.0.0.1",
        "master_port": ports["ret_port"],
        "publish_port": ports["publish_port"],
        "transport": transport,
        "ipc_mode": ipc_mode,
    }
    if ipc_mode == "tcp":
        cfg["tcp_pub_port"], cfg["tcp_pull_port"] = mports
    cfg.update(
        {
            "pki_dir": paths.minion_pki(mid),
            "cachedir": os.path.join(r, "cache"),
            "sock_dir": paths.minion_sock_dir(mid),
            "pidfile": os.path.join(paths.minion_sock_dir(mid), "salt-minion.pid"),
            "log_file": paths.minion_log(mid),
            "log_level_logfile": LOGFILE_LEVEL,
            # Fast (re)connection: defaults wait 10 s before retrying auth
            # and up to 10 s random delay before re-auth after a master restart.
            "acceptance_wait_time": 1,
            "acceptance_wait_time_max": 5,
            "random_reauth_delay": 0,
            "recon_default": 200,
            "recon_max": 2000,
            "recon_randomize": False,
        }
    )
    return cfg


def check_sock_lengths(paths, minions, ipc_mode):
    if ipc_mode != "ipc":
        return
    worst = len(paths.sock_dir) + 1 + MASTER_SOCK_NAME_MAX
    what = paths.sock_dir
    for mid in minions:
        n = len(paths.minion_sock_dir(mid)) + 1 + MINION_SOCK_NAME_MAX
        if n > worst:
            worst, what = n, paths.minion_sock_dir(mid)
    if worst > UNIX_PATH_MAX:
        raise StackError(
            "root dir %s is too long: unix socket paths under %s would be %d bytes "
            "(limit %d); use a shorter --root (at most %d characters)"
            % (paths.root, what, worst, UNIX_PATH_MAX, len(paths.root) - (worst - UNIX_PATH_MAX))
        )


def effective_master_opts(venv, paths):
    """Read the master config back through Salt's own loader (also validates
    the YAML). Falls back to Salt's sock_dir rule if that fails."""
    code = (
        "import json,sys,salt.config,salt.version\n"
        "o=salt.config.master_config(sys.argv[1])\n"
        "print(json.dumps(dict({k:o.get(k) for k in ('sock_dir','cachedir','pki_dir','id',"
        "'ret_port','publish_port','transport','ipc_mode','user','root_dir')},"
        "salt_version=salt.version.__version__)))\n"
    )
    try:
        r = subprocess.run(
            [os.path.join(venv, "bin", "python"), "-c", code, paths.master_config],
            capture_output=True, text=True, timeout=60, env=clean_env(),
        )
        if r.returncode == 0:
            return json.loads(r.stdout.strip().splitlines()[-1])
        log("warning: reading config back with Salt failed: %s" % r.stderr.strip()[-500:])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        log("warning: reading config back with Salt failed: %s" % e)
    sock = paths.sock_dir
    if len(sock) > len(paths.cachedir) + 10:
        sock = os.path.join(paths.cachedir, ".salt-unix")
    return {"sock_dir": sock, "cachedir": paths.cachedir, "salt_version": None}


# --------------------------------------------------------------------------
# Readiness


class Proc:
    """A process we wait on: Popen when we started it in this run, else pid."""

    def __init__(self, name, logs, popen=None, pid=None, start=None):
        self.name, self.logs, self.popen = name, logs, popen
        self.pid = popen.pid if popen else pid
        self.start = start

    def check(self):
        if self.popen is not None:
            rc = self.popen.poll()
            dead = rc is not None
        else:
            rc = None
            dead = not alive(self.pid, self.start)
        if dead:
            raise StackError(
                "%s (pid %d) exited%s during startup; read %s"
                % (self.name, self.pid, "" if rc is None else " with code %s" % rc, " and ".join(self.logs))
            )


class Waiter:
    def __init__(self, timeout, procs, watch=None):
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.procs = procs
        self.watch = watch  # (pid, starttime): abort when it dies

    def left(self):
        return self.deadline - time.monotonic()

    def tick(self, what, logs, delay=0.25):
        for p in self.procs:
            p.check()
        if self.watch and not alive(*self.watch):
            raise StackError("watched pid %d exited; aborting" % self.watch[0])
        if self.left() <= 0:
            raise StackError(
                "timed out after %.0f s waiting for %s; read %s" % (self.timeout, what, " and ".join(logs))
            )
        time.sleep(delay)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_answers(port):
    """Whether something answers HTTP (or HTTPS, certificate unchecked) on the port."""
    import ssl

    unchecked = ssl.create_default_context()
    unchecked.check_hostname = False
    unchecked.verify_mode = ssl.CERT_NONE
    for url, ctx in (("http://127.0.0.1:%d/" % port, None), ("https://127.0.0.1:%d/" % port, unchecked)):
        try:
            with urllib.request.urlopen(url, timeout=3, context=ctx) as r:
                r.read()
            return True
        except urllib.error.HTTPError:
            return True  # any HTTP status means the server is up
        except (OSError, ValueError):
            continue
    return False


def salt_ping(venv, paths, t=5):
    """{minion: True|...} from `salt '*' test.ping --out json --static`."""
    argv = [
        os.path.join(venv, "bin", "salt"), "-c", paths.config_dir,
        "--out", "json", "--static", "-t", str(t), "*", "test.ping",
    ]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=t + 40, env=clean_env(), cwd=paths.root)
    except subprocess.TimeoutExpired:
        return {}, "salt CLI timed out"
    try:
        data = json.loads(r.stdout) if r.stdout.strip() else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return data, (r.stderr.strip() or r.stdout.strip())[-300:]


def wait_pings(venv, paths, minions, waiter, logs, recover_after=None, recover=None):
    """Ping until every minion answers True. With recover: once, after
    recover_after seconds, call recover(missing) (used by start-master)."""
    t_start = time.monotonic()
    recovered = False
    while True:
        data, err = salt_ping(venv, paths, t=min(5, max(1, int(waiter.left()))))
        ok = [m for m in minions if data.get(m) is True]
        if len(ok) == len(minions):
            return
        missing = [m for m in minions if m not in ok]
        if recover and not recovered and time.monotonic() - t_start >= recover_after:
            recovered = True
            recover(missing)
            continue
        last = "got %s%s" % (json.dumps(data), (" (" + err + ")") if err else "")
        log("test.ping not complete yet: %s" % last)
        waiter.tick("test.ping from %s (%s)" % (", ".join(minions), last), logs, delay=0.5)


def wait_master_port(paths, port, waiter):
    while not port_open(port):
        waiter.tick("the master's ret port %d" % port, [paths.out("master"), paths.saltlog("master")])


def minion_logs(paths, mid):
    return [paths.out(mid), paths.minion_log(mid)]


# --------------------------------------------------------------------------
# Commands


def load_stack(paths):
    try:
        with open(paths.stack_json) as f:
            return json.load(f)
    except FileNotFoundError:
        raise StackError("%s not found: no stack was started in %s" % (paths.stack_json, paths.root))


def save_stack(paths, stack):
    stack["pids"] = {n: p for n, (p, _s) in read_pidfiles(paths).items()}
    write_atomic(paths.stack_json, json.dumps(stack, indent=2, sort_keys=False) + "\n")


def prune_stale_keys(paths, minions):
    """Drop master-side keys of minions not in this stack, and of minions
    whose own key pair is gone or changed (else they would be denied)."""
    for sub in ("minions", "minions_pre", "minions_rejected", "minions_denied", "minions_autosign"):
        d = os.path.join(paths.pki_master, sub)
        if not os.path.isdir(d):
            continue
        for mid in os.listdir(d):
            keep = False
            if sub == "minions" and mid in minions:
                mine = os.path.join(paths.minion_pki(mid), "minion.pub")
                with contextlib.suppress(OSError):
                    with open(mine) as a, open(os.path.join(d, mid)) as b:
                        keep = a.read().strip() == b.read().strip()
            if not keep:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(d, mid))


def cmd_start(args):
    paths = Paths(args.root)
    venv = find_venv(args.venv)
    user = current_user()
    refs = parse_reference(args.reference)
    with_tornado = "tornado" in refs
    if args.minions < 0:
        raise StackError("--minions must be >= 0")
    minions = ["m%d" % i for i in range(1, args.minions + 1)]
    watch = None
    if args.watch_pid is not None:
        st = proc_stat(args.watch_pid)
        if st is None or st[0] in ("Z", "X"):
            raise StackError("--watch-pid %d: no such process" % args.watch_pid)
        watch = (args.watch_pid, st[2])
    check_sock_lengths(paths, minions, args.ipc_mode)

    def on_term(signum, _frame):
        raise StackError("got signal %d" % signum)

    # A killed `start` must not leave daemons behind: turn SIGTERM/SIGHUP into
    # an exception so the cleanup below runs.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    t0 = time.monotonic()
    with root_lock(paths):
        running = {n: v for n, v in read_pidfiles(paths).items() if alive(*v)}
        if running:
            raise StackError(
                "a stack is already running in %s (%s); run `stop --root %s` first"
                % (paths.root, ", ".join("%s=%d" % (n, v[0]) for n, v in running.items()), paths.root)
            )
        for n in read_pidfiles(paths):
            remove_pidfile(paths, n)
        release_ports(paths)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.stack_json)  # stale from an earlier run

        for d in (paths.config_dir, paths.pki_master, paths.cachedir, paths.sock_dir, paths.logs,
                  paths.pids, os.path.join(paths.srv, "salt"), os.path.join(paths.srv, "pillar")):
            os.makedirs(d, exist_ok=True)
        for mid in minions:
            os.makedirs(paths.minion_sock_dir(mid), exist_ok=True)
        clear_responsibility(paths.run, *[paths.minion_sock_dir(m) for m in minions])
        prune_stale_keys(paths, minions)

        # Ports
        names = ["publish_port", "ret_port", "cherrypy_port"]
        if with_tornado:
            names.append("tornado_port")
        if args.ipc_mode == "tcp":
            names += ["tcp_master_pub_port", "tcp_master_pull_port", "tcp_master_publish_pull", "tcp_master_workers"]
        need_brine = args.brine_port is None
        if need_brine:
            names.append("brine_port")
        n_minion_ports = 2 * len(minions) if args.ipc_mode == "tcp" else 0
        # With ipc_mode tcp, Salt 3008 binds each worker pool's request server
        # on tcp_master_workers + adler32(pool_name) % 1000 ("default": +926).
        linked = {}
        if "tcp_master_workers" in names:
            linked[names.index("tcp_master_workers")] = zlib.adler32(b"default") % 1000
        got = allocate_ports(paths, len(names) + n_minion_ports,
                             exclude=() if need_brine else (args.brine_port,), linked=linked)
        ports = dict(zip(names, got))
        if not need_brine:
            ports["brine_port"] = args.brine_port
        mports = {}
        rest = got[len(names):]
        for i, mid in enumerate(minions):
            mports[mid] = tuple(rest[2 * i : 2 * i + 2]) if n_minion_ports else None

        # Configs
        mcfg = build_master_config(paths, user, ports, args.transport, args.ipc_mode, with_tornado)
        # A second eauth backend that checks passwords (`auto` accepts any): Salt's `file`
        # backend with a plain-text user list.
        users_file = os.path.join(os.path.dirname(paths.master_config), "eauth-users.txt")
        write_atomic(users_file, "fileuser:filepass\n")
        mcfg["external_auth"]["file"] = {
            "^filename": users_file,
            "^filetype": "text",
            "fileuser": [".*", "@runner", "@wheel", "@jobs"],
        }
        if args.extra_config:
            import yaml  # from the Salt venv

            extra = yaml.safe_load(args.extra_config) or {}
            if not isinstance(extra, dict):
                raise StackError("--extra-config must be a YAML mapping")
            mcfg.update(extra)
        if args.rest_extra:
            import yaml  # from the Salt venv

            extra = yaml.safe_load(args.rest_extra) or {}
            if not isinstance(extra, dict):
                raise StackError("--rest-extra must be a YAML mapping")
            mcfg["rest_cherrypy"].update(extra)
        minion_extra = {}
        if args.minion_extra:
            import yaml  # from the Salt venv

            minion_extra = yaml.safe_load(args.minion_extra) or {}
            if not isinstance(minion_extra, dict):
                raise StackError("--minion-extra must be a YAML mapping")
        write_atomic(paths.master_config, "# written by scripts/saltstack.py\n" + to_yaml(mcfg))
        for mid in minions:
            mcfg_m = build_minion_config(paths, mid, user, ports, args.transport, args.ipc_mode, mports[mid])
            mcfg_m.update(minion_extra)
            write_atomic(paths.minion_config(mid), "# written by scripts/saltstack.py\n" + to_yaml(mcfg_m))
            # The minion's Salt log file lives below its own root_dir; link it.
            link = paths.saltlog(mid)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(paths.minion_log(mid), link)

        env = clean_env()
        bindir = os.path.join(venv, "bin")
        procs = []
        try:
            log("starting salt-master (transport=%s ipc_mode=%s ret_port=%d publish_port=%d) in %s"
                % (args.transport, args.ipc_mode, ports["ret_port"], ports["publish_port"], paths.root))
            master = spawn(paths, "master", [os.path.join(bindir, "salt-master"), "-c", paths.config_dir,
                                             "--log-level", "warning"], env, nice=args.salt_nice)
            procs.append(Proc("salt-master", [paths.out("master"), paths.saltlog("master")], popen=master))
            waiter = Waiter(args.timeout, procs, watch)
            wait_master_port(paths, ports["ret_port"], waiter)
            log("master listening after %.1f s; starting %d minion(s)" % (time.monotonic() - t0, len(minions)))
            for mid in minions:
                p = spawn(paths, mid, [os.path.join(bindir, "salt-minion"), "-c", paths.minion_root(mid),
                                       "--log-level", "warning"], env, nice=args.salt_nice)
                procs.append(Proc("salt-minion %s" % mid, minion_logs(paths, mid), popen=p))
            # Read the config back through Salt's loader while the minions start.
            eff = effective_master_opts(venv, paths)

            all_logs = [paths.saltlog("master")] + [paths.minion_log(m) for m in minions]
            # Keys accepted (auto_accept) ...
            acc = os.path.join(paths.pki_master, "minions")
            while True:
                missing = [m for m in minions if not os.path.exists(os.path.join(acc, m))]
                if not missing:
                    break
                waiter.tick("accepted keys of %s in %s" % (", ".join(missing), acc), all_logs)
            # ... then each minion says it is ready (soft: 20 s at most), so the
            # first test.ping does not run into timeout + gather_job_timeout.
            soft = time.monotonic() + 20
            while time.monotonic() < soft:
                pending = [m for m in minions if not _log_contains(paths.minion_log(m), "ready to receive requests")]
                if not pending:
                    break
                waiter.tick("minions %s to get ready" % ", ".join(pending), all_logs)
            if minions:
                wait_pings(venv, paths, minions, waiter, all_logs)
            log("master and %d minion(s) answer test.ping after %.1f s" % (len(minions), time.monotonic() - t0))

            marker = None
            if refs and args.ipc_mode == "tcp" and not args.no_netapi_marker:
                # Salt bug saltstack/salt#67808: NetapiClient._is_master_running()
                # only checks that <sock_dir>/publish_pull.ipc (transport tcp) or
                # workers.ipc (zeromq) exists; with ipc_mode tcp neither does, and
                # rest_cherrypy /login answers 503. Create the file it looks for.
                # (With ipc_mode ipc the master leaves these files behind when it
                # stops, so the check passes while the master is down as well.)
                marker = os.path.join(eff["sock_dir"], "publish_pull.ipc" if args.transport == "tcp" else "workers.ipc")
                os.makedirs(eff["sock_dir"], exist_ok=True)
                if not os.path.exists(marker):
                    open(marker, "a").close()
                log("ipc_mode tcp: created %s so rest_cherrypy /login works (salt#67808)" % marker)
            if refs:
                api = spawn(paths, "salt-api", [os.path.join(bindir, "salt-api"), "-c", paths.config_dir,
                                                "--log-level", "warning"], env)
                procs.append(Proc("salt-api", [paths.out("salt-api"), paths.saltlog("salt-api")], popen=api))
                api_ports = [ports["cherrypy_port"]] + ([ports["tornado_port"]] if with_tornado else [])
                for port in api_ports:
                    while not http_answers(port):
                        waiter.tick("salt-api HTTP on port %d" % port, [paths.out("salt-api"), paths.saltlog("salt-api")])
                log("salt-api answers on %s after %.1f s"
                    % (", ".join(str(p) for p in api_ports), time.monotonic() - t0))

            stack = {
                "root": paths.root,
                "config_dir": paths.config_dir,
                "master_config": paths.master_config,
                "ret_port": ports["ret_port"],
                "publish_port": ports["publish_port"],
                "sock_dir": eff["sock_dir"],
                "transport": args.transport,
                "ipc_mode": args.ipc_mode,
                "minions": minions,
                "salt_nice": args.salt_nice,
                "cherrypy_port": ports["cherrypy_port"],
                "tornado_port": ports.get("tornado_port"),
                "brine_port": ports["brine_port"],
                "venv": venv,
                "pids": {},
                "eauth": dict(EAUTH),
                # extras
                "interface": "127.0.0.1",
                "user": user,
                "salt_version": eff.get("salt_version"),
                "master_id": eff.get("id"),
                "cachedir": eff.get("cachedir"),
                "pki_dir": paths.pki_master,
                "tcp_master_pub_port": ports.get("tcp_master_pub_port"),
                "tcp_master_pull_port": ports.get("tcp_master_pull_port"),
                "tcp_master_publish_pull": ports.get("tcp_master_publish_pull"),
                "tcp_master_workers": ports.get("tcp_master_workers"),
                "reference": refs,
                "netapi_ipc_marker": marker,
                "logs": paths.logs,
                "pids_dir": paths.pids,
                "minion_configs": {m: paths.minion_root(m) for m in minions},
                "start_seconds": None,
            }

            if watch:
                spawn(paths, "watchdog", [sys.executable, os.path.realpath(__file__), "_watchdog",
                                               "--root", paths.root, "--pid", str(watch[0]),
                                               "--pid-start", str(watch[1])]
                      + (["--remove-root"] if args.remove_root else []), env)
                stack["watch_pid"] = watch[0]
            stack["start_seconds"] = round(time.monotonic() - t0, 2)
            save_stack(paths, stack)
        except BaseException as e:
            log("start failed: %s; stopping what was started" % (e if isinstance(e, StackError) else repr(e)))
            try:
                terminate(read_pidfiles(paths))
            finally:
                for n in read_pidfiles(paths):
                    remove_pidfile(paths, n)
                release_ports(paths)
            raise
    log("stack up in %.1f s" % (time.monotonic() - t0))
    print(paths.stack_json)
    return 0


def _log_contains(path, needle):
    try:
        with open(path, "rb") as f:
            return needle.encode() in f.read()
    except OSError:
        return False


def stop_stack(paths, quiet=False, grace=STOP_GRACE):
    entries = read_pidfiles(paths)
    me = os.getpid()
    entries = {n: v for n, v in entries.items() if v[0] != me}
    live = [n for n, v in entries.items() if alive(v[0], v[1])]
    killed = terminate(entries, grace)
    for n in entries:
        remove_pidfile(paths, n)
    release_ports(paths)
    if not quiet:
        log("stopped %s%s" % (", ".join(live) if live else "nothing (no live processes)",
                              ("; SIGKILLed " + ", ".join(killed)) if killed else ""))
    return live


def cmd_stop(args):
    paths = Paths(args.root)
    if not os.path.isdir(paths.root):
        log("%s does not exist; nothing to stop" % paths.root)
        return 0
    with root_lock(paths):
        stop_stack(paths, grace=args.grace)
        if os.path.exists(paths.stack_json):
            with contextlib.suppress(Exception):
                stack = load_stack(paths)
                save_stack(paths, stack)
    return 0


def cmd_stop_master(args):
    paths = Paths(args.root)
    with root_lock(paths):
        stack = load_stack(paths)
        entries = read_pidfiles(paths)
        if "master" not in entries:
            log("master is not recorded as running")
        else:
            terminate({"master": entries["master"]})
            remove_pidfile(paths, "master")
            log("master stopped (pid %d)" % entries["master"][0])
        save_stack(paths, stack)
    return 0


def cmd_start_master(args):
    paths = Paths(args.root)
    t0 = time.monotonic()
    with root_lock(paths):
        stack = load_stack(paths)
        venv = stack.get("venv") or find_venv(args.venv)
        entries = read_pidfiles(paths)
        if "master" in entries and alive(*entries["master"]):
            raise StackError("master already running (pid %d)" % entries["master"][0])
        remove_pidfile(paths, "master")
        clear_responsibility(paths.run)
        minions = stack.get("minions", [])
        procs = []
        for mid in minions:
            if mid in entries:
                procs.append(Proc("salt-minion %s" % mid, minion_logs(paths, mid), pid=entries[mid][0],
                                  start=entries[mid][1]))
        bindir = os.path.join(venv, "bin")
        try:
            master = spawn(paths, "master", [os.path.join(bindir, "salt-master"), "-c", paths.config_dir,
                                             "--log-level", "warning"], clean_env(),
                           nice=stack.get("salt_nice", 0))
            procs.insert(0, Proc("salt-master", [paths.out("master"), paths.saltlog("master")], popen=master))
            waiter = Waiter(args.timeout, procs)
            wait_master_port(paths, stack["ret_port"], waiter)

            def restart_minions(missing):
                # Salt 3008.4 with transport tcp: after a master restart a minion
                # sometimes logs "ready to receive requests" but never gets
                # publishes again. Restart such minions once.
                log("warning: %s still not answering test.ping %.0f s after the master came back; "
                    "restarting them (disable with --no-minion-restart)" % (", ".join(missing), args.recover_after))
                cur = read_pidfiles(paths)
                terminate({m: cur[m] for m in missing if m in cur}, grace=3)
                for m in missing:
                    remove_pidfile(paths, m)
                    clear_responsibility(paths.minion_sock_dir(m))
                    waiter.procs[:] = [p for p in waiter.procs if p.name != "salt-minion %s" % m]
                    p = spawn(paths, m, [os.path.join(bindir, "salt-minion"), "-c", paths.minion_root(m),
                                         "--log-level", "warning"], clean_env(),
                              nice=stack.get("salt_nice", 0))
                    waiter.procs.append(Proc("salt-minion %s" % m, minion_logs(paths, m), popen=p))
                stack.setdefault("minion_restarts", []).append(
                    {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "minions": missing})

            if minions:
                wait_pings(venv, paths, minions, waiter,
                           [paths.saltlog("master")] + [paths.minion_log(m) for m in minions],
                           recover_after=args.recover_after,
                           recover=None if args.no_minion_restart else restart_minions)
        except BaseException as e:
            log("start-master failed: %s; stopping the new master" % e)
            e2 = read_pidfiles(paths)
            if "master" in e2:
                terminate({"master": e2["master"]})
                remove_pidfile(paths, "master")
            save_stack(paths, stack)
            raise
        save_stack(paths, stack)
    log("master back (pid %d) and %d minion(s) answer after %.1f s" % (master.pid, len(minions), time.monotonic() - t0))
    return 0


def cmd_status(args):
    paths = Paths(args.root)
    entries = read_pidfiles(paths)
    res = {n: {"pid": pid, "alive": alive(pid, start)} for n, (pid, start) in entries.items()}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        if not res:
            print("no processes recorded in %s" % paths.pids)
        for n, v in res.items():
            print("%-12s %7d  %s" % (n, v["pid"], "alive" if v["alive"] else "dead"))
    if not res:
        return 4
    return 0 if all(v["alive"] for v in res.values()) else 3


def cmd_watchdog(args):
    paths = Paths(args.root)
    pid, start = args.pid, args.pid_start
    log("watchdog: watching pid %d for stack %s" % (pid, paths.root))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while alive(pid, start):
        if not os.path.isdir(paths.pids):
            log("watchdog: %s is gone; exiting" % paths.pids)
            return 0
        time.sleep(0.5)
    log("watchdog: pid %d is gone; stopping the stack" % pid)
    try:
        with root_lock(paths, timeout=300):
            stop_stack(paths)
    except StackError as e:
        log("watchdog: %s; stopping anyway" % e)
        stop_stack(paths)
    remove_pidfile(paths, "watchdog")
    if args.remove_root:
        log("watchdog: removing %s" % paths.root)
        shutil.rmtree(paths.root, ignore_errors=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="Private Salt master + minions (+ salt-api) for Brine tests.")
    sub = ap.add_subparsers(dest="cmd", metavar="{start,stop,stop-master,start-master,status}")
    sub.required = True

    def common(p, timeout=True):
        p.add_argument("--root", required=True, help="stack directory (created if missing)")
        p.add_argument("--venv", help="Salt venv (default: $BRINE_VENV, else the venv this python runs in, else REPO/.venv)")
        if timeout:
            p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                           help="readiness timeout in seconds (default %(default)s)")

    p = sub.add_parser("start", help="write configs, start master, minions (and salt-api), wait until ready")
    common(p)
    p.add_argument("--minions", type=int, default=2, help="number of minions m1..mN (default 2)")
    p.add_argument("--salt-nice", type=int, default=0, choices=range(0, 20), metavar="0..19",
                   help="run the master and minions this much nicer, as processes and as autogroups "
                        "(what CPUWeight= on salt-master.service does on a host); default 0")
    p.add_argument("--transport", choices=["zeromq", "tcp"], default="zeromq")
    p.add_argument("--ipc-mode", choices=["ipc", "tcp"], default="ipc")
    p.add_argument("--reference", default="", help="also start Python salt-api: cherrypy[,tornado]")
    p.add_argument("--brine-port", type=int, help="port recorded for Brine (default: a free one)")
    p.add_argument("--watch-pid", type=int, help="stop the whole stack when this pid exits")
    p.add_argument("--remove-root", action="store_true",
                   help="with --watch-pid: also delete DIR once the stack is stopped (test and "
                        "bench stacks, which would otherwise pile up in the temp directory)")
    p.add_argument("--rest-extra", default="",
                   help="YAML mapping merged into the generated rest_cherrypy block (app, static, ssl_crt, ...)")
    p.add_argument("--extra-config", default="",
                   help="YAML mapping of master options that replace the generated ones (top-level keys)")
    p.add_argument("--minion-extra", default="",
                   help="YAML mapping of minion options that replace the generated ones (e.g. multiprocessing: false)")
    p.add_argument("--no-netapi-marker", action="store_true",
                   help="with ipc_mode tcp, do not create the sock_dir marker file that works around "
                        "salt#67808 (rest_cherrypy /login then answers 503)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("stop", help="terminate every process recorded in DIR/pids")
    common(p, timeout=False)
    p.add_argument("--grace", type=float, default=STOP_GRACE,
                   help="seconds between SIGTERM and SIGKILL (default %(default)s; "
                        "salt-minion needs ~5-8 s to exit cleanly)")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("stop-master", help="stop only the master")
    common(p, timeout=False)
    p.set_defaults(func=cmd_stop_master)

    p = sub.add_parser("start-master", help="start the master again and wait for the minions")
    common(p)
    p.add_argument("--recover-after", type=float, default=15.0,
                   help="restart minions that still do not answer after this many seconds (default %(default)s)")
    p.add_argument("--no-minion-restart", action="store_true",
                   help="never restart minions; just wait (and fail after --timeout)")
    p.set_defaults(func=cmd_start_master)

    p = sub.add_parser("status", help="show which recorded processes are alive")
    common(p, timeout=False)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("_watchdog")  # internal: spawned by start --watch-pid
    p.add_argument("--root", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--pid-start", type=int, required=True)
    p.add_argument("--remove-root", action="store_true")
    p.set_defaults(func=cmd_watchdog)

    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except StackError as e:
        log("error: %s" % e)
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
