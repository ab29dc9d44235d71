#!/usr/bin/env python3
"""Benchmark arbiter's five worker types against gunicorn and the other peers.

This script owns the arbiter-vs-peers benchmark; it measures, it does not
tune.  It is modelled on the peer baseline (shared bench/README.md, peers.sh).

Pairs -- every arbiter worker type is compared with the gunicorn worker
nearest to it, at equal worker (and thread) counts:

* preforked -- gunicorn sync ``-w W``: one connection at a time per worker;
* pooled -- gunicorn gthread ``-w W --threads T``: the same pattern, a thread
  pool;
* threaded, forked, evented -- gunicorn gthread ``-w W --threads T``: the
  nearest peer gunicorn has without extra packages (its event-loop workers
  need gevent/eventlet; it has no thread- or fork-per-connection worker).

Peers -- with ``--servers all`` (the default) the same run also measures,
when installed: nginx with 1 worker and ``return 200`` (the machine's limit),
bjoern (1 process), granian WSGI ``--workers W``, uvicorn ASGI ``--workers W``
with httptools + uvloop, meinheld (1 process, keep-alive on), gunicorn sync
and gthread.  A peer that is not installed is skipped with a note.  Their
Python is the venv of ``--peers PATH`` (default: /tmp/peers-venv if it
exists, else the gunicorn venv).  Installing the peers in a venv::

    python3 -m venv /tmp/peers-venv && . /tmp/peers-venv/bin/activate
    pip install gunicorn granian uvicorn httptools uvloop
    pip install --no-deps meinheld greenlet   # meinheld pins a greenlet that
                                              # does not build on 3.11
    apt-get install libev-dev && pip install bjoern   # bjoern needs libev
    apt-get install nginx-light wrk

arbiter runs as ``python -m arbiter -b 127.0.0.1:PORT -w W -k TYPE -t T
--http-parser P --log-level warning --max-connections 1000 bench_app:app``
with this interpreter; every WSGI server serves ``scripts/bench_app.py``
(uvicorn its ASGI hello; meinheld and bjoern through ``scripts/peer_run.py``).

Loads (``--loads``):

* ``keepalive``, ``close`` -- the hello world (13 bytes), ``wrk -t1 -c50``
  (``--connections``) for ``--duration`` s, keep-alive or with
  ``Connection: close``;
* ``mem1m`` (GET of 1 MiB, one bytes object), ``file1m`` (GET of a 1 MiB
  file written to the run's temp dir at start, through
  ``wsgi.file_wrapper``), ``post100k`` (POST of 100,000 bytes, ``wrk -s``
  with a Lua script in the temp dir, that the app reads whole) -- the bulk
  loads: keep-alive, 16 connections (``--bulk-connections``), one
  ``--bulk-duration`` (4) s pass per run, WSGI servers only (not nginx,
  uvicorn).  They need wrk.

How each number is taken:

* every server is started on 127.0.0.1 on a free port and is polled until it
  answers an HTTP request; then every load's answer is checked once (status
  200 and the exact body bytes) -- a load a server answers wrongly is not
  measured and shows "(errors)";
* with only arbiter and gunicorn (``--servers arbiter,gunicorn``) the two
  servers of a pair run side by side and are measured alternately, load by
  load (which one goes first flips every run and every load), so drift of
  the machine's speed hits both; pairs are visited in reverse order every
  other run;
* with peers, the servers are measured one at a time in a fixed order
  (nginx ... gunicorn, then arbiter), reversed every other run, and ratios
  are taken between measurements of the same run;
* per measurement: a warm-up (``--warmup``, same load), then
  ``wrk -t1 -cN -dDs --latency`` (``-H "Connection: close"`` for the
  ``close`` load); without wrk, a built-in closed-loop Python load generator
  (selectors, one thread) runs the hello-world loads instead;
* server CPU per request (us/req): utime+stime (+ reaped children's) of the
  server's whole process tree, read from /proc before and after the
  measured run, divided by the requests completed;
* balance, for servers with 2+ worker processes (the master's children that
  hold the listening socket): during keep-alive loads, at 1/4, 1/2 and 3/4
  of the run, the ESTABLISHED connections on the server port (sock_diag
  netlink, else /proc/net/tcp) whose socket inode is open in a worker's
  process tree, per worker; for every load, each worker tree's CPU ticks
  during the run.  Shown as shares, largest first ("52/48");
* "served": a separate probe opens 50 connections at once, each sending
  requests in a loop for ~2 s, and counts the connections that got at least
  one response -- this exposes a one-connection-at-a-time keep-alive worker
  starving the others;
* the tables show medians over ``--runs``; ratios are arbiter / peer, the
  median of the per-run ratios; the floor column applies the README's noise
  band (0.83-1.17 = the same speed).

``--capacity N`` also runs the concurrency benchmark of
``scripts/evented_capacity.py`` (N keep-alive connections held by one
``evented`` worker, its RSS); ``--capacity-only`` runs just that.

Every server started is stopped by pid (TERM, then KILL after a timeout, its
descendants too), also on errors, Ctrl-C and SIGTERM.

Usage::

    python scripts/bench.py [--types preforked,pooled,threaded,forked,evented]
        [--workers 2] [--threads 4] [--parsers httptools[,h11]]
        [--loads keepalive,close,mem1m,file1m,post100k] [--duration 8] [--runs 3]
        [--connections 50] [--bulk-connections 16] [--bulk-duration 4]
        [--servers all|arbiter,gunicorn,nginx,bjoern,granian,uvicorn,meinheld]
        [--peers VENV] [--gunicorn-venv PATH] [--loadgen auto|wrk|python]
        [--capacity N [--capacity-only]] [--json] [--save FILE] [--report FILE]
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import platform
import re
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import venv
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
APP = "bench_app:app"  # scripts/bench_app.py: every load's route
HELLO_APP = "hello:app"  # scripts/hello.py: arbiter_cmd's default (evented_capacity.py)
ASGI_APP = "bench_app:asgi_app"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_VENV = Path.home() / ".cache" / "arbiter-bench" / "venv"
PEERS_VENV = Path("/tmp/peers-venv")
WORKER_TYPES = ("preforked", "pooled", "threaded", "forked", "evented", "asgi")
PEER_NAMES = ("nginx", "bjoern", "granian", "uvicorn", "meinheld")  # the peer table's order
SERVER_NAMES = ("arbiter", "gunicorn", *PEER_NAMES)
# peer -> the modules its venv must import (the first is also its distribution's name)
PEER_MODULES = {"granian": ("granian",), "uvicorn": ("uvicorn", "httptools", "uvloop"),
                "meinheld": ("meinheld", "meinheld.server", "greenlet"), "bjoern": ("bjoern",)}
STD_LOADS = ("keepalive", "close", "fastapi")  # fastapi: ASGI servers only
BULK_LOADS = ("mem1m", "file1m", "post100k")
LOAD_PATHS = {"keepalive": "/", "close": "/", "mem1m": "/mem1m", "file1m": "/file1m",
              "post100k": "/post100k", "fastapi": "/fastapi/items/42"}
ASGI_ONLY_LOADS = ("fastapi",)  # a FastAPI JSON endpoint, keep-alive
POST_LUA = ('wrk.method = "POST"\nwrk.body = string.rep("x", 100000)\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n')
NOISE_LOW, NOISE_HIGH = 0.83, 1.17  # README: a server against itself reads 0.83-1.17
FORK_EXEMPT = ("forked", "close")
WRK_TIMEOUT_MS = 2000.0  # wrk's default --timeout  # (type, load) exempt from the speed floor


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP end the run like Ctrl-C does, so every server is stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the ``(comm)`` field (index 0 = state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _proc_stat(int(entry))
        if st is not None:
            children.setdefault(int(st[1]), []).append(int(entry))
    return children


def descendants(root: int) -> list[int]:
    """All live descendants of *root*, found by walking /proc by parent pid."""
    children = _children_map()
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def children_of(pid: int) -> list[int]:
    """Direct, live (not zombie) children of *pid* -- a master's workers."""
    return [c for c in _children_map().get(pid, []) if alive(c)]


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict ({} if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
    except OSError:
        return {}


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """VmRSS (or VmHWM, ...) of *pid* in MiB; NaN if the process is gone."""
    value = proc_status(pid).get(key, "")
    return int(value.split()[0]) / 1024 if value.endswith("kB") else float("nan")


def tree_cpu_ticks(root: int) -> int:
    """utime+stime+cutime+cstime of *root* and all its descendants, in clock ticks.

    The reaped-children fields make a worker that exits (and is reaped by its
    master) mid-run -- or a forked worker's per-connection child -- keep its CPU
    in the total.
    """
    total = 0
    for pid in [root, *descendants(root)]:
        st = _proc_stat(pid)
        if st is not None:  # after comm: [11]=utime [12]=stime [13]=cutime [14]=cstime
            total += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return total


def loadavg() -> float:
    """The 1-minute load average (NaN if unknown): how busy the machine was."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def alive(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


# --------------------------------------------------------------------------- balance

TCP_ESTABLISHED, TCP_LISTEN = 1, 10  # kernel TCP states (include/net/tcp_states.h)


def _diag_inodes(port: int, state: int) -> set[int]:
    """sock_diag (NETLINK_INET_DIAG) dump of IPv4 TCP sockets in *state*; those on *port*.

    The kernel filters by state, so a close load's TIME_WAIT thousands are not
    read.  Message layouts: linux/inet_diag.h (inet_diag_req_v2 = 56 bytes,
    inet_diag_msg: sport at 4, inode at 68).
    """
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << state) + bytes(48)
    # nlmsghdr: len, type SOCK_DIAG_BY_FAMILY (20), flags NLM_F_REQUEST | NLM_F_DUMP, seq, pid
    msg = struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0) + req
    found: set[int] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as nl:  # NETLINK_INET_DIAG
        nl.settimeout(2)
        nl.send(msg)
        while True:
            data = nl.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if mtype == 3:  # NLMSG_DONE
                    return found
                if mtype == 2 or length < 16:  # NLMSG_ERROR
                    raise OSError("sock_diag answered an error")
                body = off + 16
                if struct.unpack_from("!H", data, body + 4)[0] == port:
                    found.add(struct.unpack_from("=I", data, body + 68)[0])
                off += (length + 3) & ~3
            if not data:
                raise OSError("sock_diag: end of data without NLMSG_DONE")


def _proc_net_inodes(port: int, state: int) -> set[int]:
    """The same as _diag_inodes, read from /proc/net/tcp (slower when it is long)."""
    found: set[int] = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if int(cols[3], 16) == state and int(cols[1].rsplit(":", 1)[1], 16) == port:
                found.add(int(cols[9]))
    return found


def tcp_inodes(port: int, state: int) -> set[int]:
    """Inodes of the IPv4 TCP sockets in *state* whose local port is *port*."""
    try:
        return _diag_inodes(port, state)
    except OSError:
        return _proc_net_inodes(port, state)


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets open in process *pid* (its /proc/PID/fd links)."""
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def worker_pids(root: int, port: int) -> list[int]:
    """The server's workers: children of *root* that hold a listening socket on *port*.

    A single-process server (bjoern, meinheld) has none; uvicorn's resource
    tracker and arbiter forked's per-connection children are left out.
    """
    listening = tcp_inodes(port, TCP_LISTEN)
    return sorted(c for c in children_of(root) if socket_inodes(c) & listening)


def worker_connections(workers: list[int], port: int) -> list[int]:
    """Per worker: the ESTABLISHED connections on *port* open in its process tree."""
    established = tcp_inodes(port, TCP_ESTABLISHED)
    children = _children_map()
    counts = []
    for worker in workers:
        tree, todo, inodes = [worker], [worker], set()
        while todo:
            kids = children.get(todo.pop(), [])
            tree += kids
            todo += kids
        for pid in tree:
            inodes |= socket_inodes(pid)
        counts.append(len(inodes & established))
    return counts


class ConnSampler:
    """Adds up worker_connections() at fractions of a run, in a thread (started at once)."""

    def __init__(self, workers: list[int], port: int, seconds: float,
                 points: tuple[float, ...] = (0.25, 0.5, 0.75)) -> None:
        self.counts = [0] * len(workers)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(workers, port, seconds, points),
                                        daemon=True)
        self._thread.start()

    def _run(self, workers: list[int], port: int, seconds: float,
             points: tuple[float, ...]) -> None:
        start = time.monotonic()
        for point in points:
            if self._done.wait(max(0.0, start + point * seconds - time.monotonic())):
                return
            for i, n in enumerate(worker_connections(workers, port)):
                self.counts[i] += n

    def stop(self) -> list[int]:
        self._done.set()
        self._thread.join()
        return self.counts


@dataclass
class Server:
    name: str  # "arbiter" | "gunicorn" | anything a caller spawns
    kind: str  # arbiter worker type | gunicorn worker class
    parser: str  # arbiter: httptools | h11; gunicorn: "-"
    port: int
    proc: subprocess.Popen
    logfile: Path

    @property
    def label(self) -> str:
        return f"{self.name} {self.kind}" + (f" {self.parser}" if self.parser != "-" else "")


RUNNING: list[Server] = []


def stop_server(server: Server, timeout: float = 15.0) -> None:
    """TERM the master by pid, KILL it after *timeout*, then any descendant left.

    The server leaves RUNNING only once it is stopped, so an interrupted stop
    is finished by ``stop_all``.
    """
    proc = server.proc
    kids = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"  {server.label} pid {proc.pid} still alive after {timeout:.0f}s: SIGKILL")
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    for kid in kids:
        while alive(kid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(kid):
            log(f"  child pid {kid} of {proc.pid} still alive: SIGKILL")
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if server in RUNNING:
        RUNNING.remove(server)


def stop_all() -> None:
    """Stop every server still running (each by pid); a second Ctrl-C is ignored meanwhile."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for server in list(RUNNING):
            stop_server(server)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(server: Server, timeout: float = 30.0) -> None:
    """Poll until the server answers an HTTP request (any status), or fail."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.label} exited with code {server.proc.returncode}:\n{tail(server.logfile)}"
            )
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            return
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"{server.label} did not answer within {timeout:.0f}s ({last}):\n"
                       f"{tail(server.logfile)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- gunicorn


def gunicorn_python(venv_arg: str | None) -> str:
    """The interpreter that runs ``-m gunicorn``: ours if it has gunicorn, else a venv."""
    if venv_arg is None:
        probe = subprocess.run([sys.executable, "-c", "import gunicorn"], capture_output=True)
        if probe.returncode == 0:
            return sys.executable
    venv_dir = Path(venv_arg).expanduser() if venv_arg else DEFAULT_VENV
    py = venv_dir / "bin" / "python"
    if py.exists():
        if subprocess.run([str(py), "-c", "import gunicorn"], capture_output=True).returncode == 0:
            return str(py)
    else:
        log(f"creating venv {venv_dir}")
        venv_dir.parent.mkdir(parents=True, exist_ok=True)
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    log(f"pip install gunicorn into {venv_dir}")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "gunicorn"], check=True)
    return str(py)


def version_of(python: str, module: str) -> str:
    code = f"import {module}; print(getattr({module}, '__version__', '?'))"
    res = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return res.stdout.strip() or "?"


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Spec:
    """One server configuration: arbiter (kind = worker type), gunicorn (kind = class), a peer."""

    name: str  # "arbiter" | "gunicorn" | one of PEER_NAMES
    kind: str
    parser: str
    workers: int
    threads: int

    @property
    def label(self) -> str:
        if self.name == "gunicorn":
            shape = f"{self.workers}w" + (f"x{self.threads}t" if self.kind == "gthread" else "")
            return f"gunicorn {self.kind} {shape}"
        if self.name == "arbiter":
            return f"arbiter {self.kind} {self.parser}"
        return self.title

    @property
    def title(self) -> str:
        """The server's row in the peer table."""
        w, s = self.workers, "s" if self.workers != 1 else ""
        if self.name == "arbiter":
            threads = f" x {self.threads} threads" if self.kind == "pooled" else ""
            parser = f" ({self.parser})" if self.parser != "httptools" else ""
            return f"arbiter {self.kind}, {w} worker{s}{threads}{parser}"
        if self.name == "gunicorn":
            threads = f" x {self.threads} threads" if self.kind == "gthread" else ""
            return f"gunicorn {self.kind}, {w} worker{s}{threads}"
        return {"nginx": f"nginx, {w} worker{s} (the limit)",
                "granian": f"granian WSGI, {w} worker{s}",
                "uvicorn": f"uvicorn ASGI, {w} worker{s} (httptools + uvloop)",
                }.get(self.name, f"{self.name}, 1 process")

    @property
    def short(self) -> str:
        """The server's column in the bulk table."""
        if self.name == "arbiter":
            return f"arbiter {self.kind}" + (f" {self.parser}" if self.parser != "httptools" else "")
        return f"gunicorn {self.kind}" if self.name == "gunicorn" else self.name

    @property
    def wsgi(self) -> bool:
        """Serves bench_app:app, so it runs the bulk loads too (nginx, uvicorn and arbiter's
        asgi type serve the ASGI hello, or nginx's own answer, instead)."""
        return self.name not in ("nginx", "uvicorn") and not (
            self.name == "arbiter" and self.kind == "asgi")


def peer_spec(worker_type: str, workers: int, threads: int) -> Spec:
    """The gunicorn worker nearest to an arbiter worker type (see the module docstring);
    for asgi, uvicorn (httptools + uvloop), the ASGI server it is measured against."""
    if worker_type == "preforked":
        return Spec("gunicorn", "sync", "-", workers, 1)
    if worker_type == "asgi":
        return Spec("uvicorn", "asgi", "-", workers, 1)
    return Spec("gunicorn", "gthread", "-", workers, threads)


def field_specs(args: argparse.Namespace, peers: list[str]) -> list[Spec]:
    """Every server of a run with peers, in the table's order: peers, gunicorn, arbiter."""
    w = args.workers
    shapes = {"nginx": ("return200", 1), "bjoern": ("wsgi", 1), "granian": ("wsgi", w),
              "uvicorn": ("asgi", w), "meinheld": ("wsgi", 1)}
    specs = [Spec(name, shapes[name][0], "-", shapes[name][1], 1)
             for name in PEER_NAMES if name in peers]
    if "gunicorn" in args.servers:
        specs += [Spec("gunicorn", "sync", "-", w, 1), Spec("gunicorn", "gthread", "-", w,
                                                             args.threads)]
    if "arbiter" in args.servers:
        specs += [Spec("arbiter", t, p, w, args.threads) for t in args.types for p in args.parsers]
    return specs


@dataclass
class Bench:
    """What measuring needs besides the Spec: options, interpreters, the run's temp dir."""

    args: argparse.Namespace
    use_wrk: str | None
    logdir: Path  # the run's temp dir: server logs, nginx confs, the 1 MiB file, post.lua
    gunicorn_py: str = sys.executable
    peers_py: str | None = None
    nginx: str | None = None
    file1m: Path | None = None
    post_lua: Path | None = None


def arbiter_cmd(port: int, worker_type: str, workers: int, threads: int, parser: str,
                max_connections: int = 1000, extra: list[str] | None = None,
                app: str = HELLO_APP) -> list[str]:
    return [sys.executable, "-m", "arbiter", "-b", f"127.0.0.1:{port}", "-w", str(workers),
            "-k", worker_type, "-t", str(threads), "--http-parser", parser,
            "--log-level", "warning", "--max-connections", str(max_connections),
            *(extra or []), app]


def gunicorn_cmd(python: str, port: int, worker_class: str, workers: int,
                 threads: int, app: str = APP) -> list[str]:
    cmd = [python, "-m", "gunicorn", "-w", str(workers), "-k", worker_class]
    if worker_class == "gthread":
        cmd += ["--threads", str(threads)]
    return cmd + ["-b", f"127.0.0.1:{port}", "--log-level", "warning", "--no-control-socket",
                  "--chdir", str(SCRIPTS_DIR), app]


def nginx_conf(directory: Path, port: int, workers: int) -> Path:
    """An nginx.conf in *directory* (pid, logs, temp paths there): ``return 200`` hello world."""
    directory.mkdir(parents=True, exist_ok=True)
    temps = "\n".join(f"    {kind}_temp_path {directory / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = directory / "nginx.conf"
    conf.write_text(f"""worker_processes {workers};
pid {directory / 'nginx.pid'};
error_log {directory / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temps}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
""")
    return conf


def server_cmd(spec: Spec, port: int, bench: Bench) -> list[str]:
    if spec.name == "arbiter":
        return arbiter_cmd(port, spec.kind, spec.workers, spec.threads, spec.parser,
                           app=ASGI_APP if spec.kind == "asgi" else APP)
    if spec.name == "gunicorn":
        return gunicorn_cmd(bench.gunicorn_py, port, spec.kind, spec.workers, spec.threads)
    if spec.name == "nginx":
        assert bench.nginx is not None
        d = bench.logdir / f"nginx-{port}"
        conf = nginx_conf(d, port, spec.workers)
        return [bench.nginx, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log"),
                "-g", "daemon off;"]
    assert bench.peers_py is not None
    py = bench.peers_py
    if spec.name == "granian":
        return [str(Path(py).parent / "granian"), "--interface", "wsgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(spec.workers), "--http", "1",
                "--no-access-log", "--log-level", "warning", "--working-dir", str(SCRIPTS_DIR),
                APP]
    if spec.name == "uvicorn":
        return [py, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--workers",
                str(spec.workers), "--http", "httptools", "--loop", "uvloop", "--lifespan", "off",
                "--no-access-log", "--log-level", "warning", "--app-dir", str(SCRIPTS_DIR),
                ASGI_APP]
    if spec.name in ("meinheld", "bjoern"):
        return [py, str(SCRIPTS_DIR / "peer_run.py"), spec.name, str(port)]
    raise ValueError(f"unknown server {spec.name!r}")


def spawn(name: str, kind: str, parser: str, port: int, cmd: list[str], logdir: Path,
          env_extra: dict[str, str] | None = None) -> Server:
    """Start *cmd* in its own session (a terminal's Ctrl-C reaches only us) and track it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SCRIPTS_DIR), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    for key in list(env):
        if key.startswith(("ARBITER_", "GUNICORN_", "GRANIAN_", "UVICORN_", "BENCH_")) \
                or key in ("WEB_CONCURRENCY", "PORT"):
            del env[key]  # don't let the caller's environment change what is measured
    env.update(env_extra or {})
    logfile = logdir / f"{name}-{kind}-{parser}-{port}.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=SCRIPTS_DIR, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, kind, parser, port, proc, logfile)
    RUNNING.append(server)
    log(f"started {server.label} pid {proc.pid} on 127.0.0.1:{port}: {' '.join(cmd)}")
    return server


def start_server(spec: Spec, bench: Bench) -> Server:
    port = free_port()
    env = {"BENCH_FILE1M": str(bench.file1m)} if bench.file1m else None
    return spawn(spec.name, spec.kind, spec.parser, port, server_cmd(spec, port, bench),
                 bench.logdir, env)


def find_peers(args: argparse.Namespace, wanted: list[str],
               gunicorn_py: str | None) -> tuple[str | None, str | None, dict, dict]:
    """(peers' python, nginx, {peer: version}, {peer: why it is skipped}) for *wanted*."""
    versions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    nginx = None
    if "nginx" in wanted:
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx",
                                                                          os.X_OK) else None)
        if nginx:
            out = subprocess.run([nginx, "-v"], capture_output=True, text=True)
            versions["nginx"] = (out.stderr.strip().rpartition("/")[2]) or "?"
        else:
            skipped["nginx"] = "nginx not found (apt-get install nginx-light)"
    names = [n for n in wanted if n in PEER_MODULES]
    if not names:
        return None, nginx, versions, skipped
    if args.peers:
        candidates = [Path(args.peers).expanduser()]
    else:
        candidates = [PEERS_VENV]
        if gunicorn_py:
            candidates.append(Path(gunicorn_py).parent.parent)
    venv_dir = next((d for d in candidates if (d / "bin" / "python").exists()), None)
    if venv_dir is None:
        for n in names:
            skipped[n] = f"no venv with python at {' or '.join(map(str, candidates))} (--peers)"
        return None, nginx, versions, skipped
    py = str(venv_dir / "bin" / "python")
    code = ("import importlib, importlib.metadata as md, json, sys\n"
            "out = {}\n"
            "for name, mods in json.loads(sys.argv[1]).items():\n"
            "    try:\n"
            "        for m in mods: importlib.import_module(m)\n"
            "        out[name] = [True, md.version(name)]\n"
            "    except Exception as exc:\n"
            "        out[name] = [False, f'{type(exc).__name__}: {exc}']\n"
            "print(json.dumps(out))\n")
    res = subprocess.run([py, "-c", code, json.dumps({n: PEER_MODULES[n] for n in names})],
                         capture_output=True, text=True)
    try:
        found = json.loads(res.stdout)
    except ValueError:
        found = {n: [False, res.stderr.strip()[-200:]] for n in names}
    for n in names:
        ok, info = found.get(n, [False, "?"])
        if ok and n == "granian" and not (venv_dir / "bin" / "granian").exists():
            ok, info = False, f"no {venv_dir}/bin/granian"
        if ok:
            versions[n] = info
        else:
            skipped[n] = f"not installed in {venv_dir} ({info})"
    return py, nginx, versions, skipped


def _bench_app():
    """scripts/bench_app.py, imported here (for the bodies the servers must answer)."""
    if str(SCRIPTS_DIR) not in sys.path:
        sys.path.insert(0, str(SCRIPTS_DIR))
    import bench_app

    return bench_app


def check_answer(port: int, load: str) -> str | None:
    """None if the server answers *load*'s request with 200 and the exact body, else why not."""
    bench_app = _bench_app()
    path = LOAD_PATHS[load]
    method, body, headers = "GET", None, {}
    expect = bench_app.BODY
    if load in ("mem1m", "file1m"):
        expect = bench_app.MEM1M
    elif load == "fastapi":
        expect = bench_app.FASTAPI_JSON
    elif load == "post100k":
        method, body = "POST", b"x" * bench_app.POST_SIZE
        headers = {"Content-Type": "application/octet-stream"}
        expect = str(bench_app.POST_SIZE).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"{method} {path}: {exc!r}"
    finally:
        conn.close()
    if resp.status != 200:
        return f"{method} {path}: HTTP {resp.status} {data[:80]!r}"
    if data != expect:
        what = "other bytes" if len(data) == len(expect) else f"{len(data)} bytes"
        return f"{method} {path}: {what}, not the {len(expect)} expected"
    return None


# --------------------------------------------------------------------------- load: wrk


@dataclass
class LoadResult:
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    socket_errors: int = 0
    timeouts: int = 0  # wrk: requests unanswered within its 2 s timeout (not in the latencies)
    non2xx: int = 0
    raw: str = ""


def _to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(out: str) -> LoadResult:
    res = LoadResult(raw=out)
    if m := re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M):
        res.rps = float(m.group(1))
    if m := re.search(r"^\s*(\d+) requests in", out, re.M):
        res.requests = int(m.group(1))
    if m := re.search(r"^\s*50%\s+(\S+)", out, re.M):
        res.p50_ms = _to_ms(m.group(1))
    if m := re.search(r"^\s*99%\s+(\S+)", out, re.M):
        res.p99_ms = _to_ms(m.group(1))
    if m := re.search(r"^\s*Latency\s+\S+\s+\S+\s+(\S+)", out, re.M):
        res.max_ms = _to_ms(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        res.socket_errors = sum(int(x) for x in m.groups())
        res.timeouts = int(m.group(4))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        res.non2xx = int(m.group(1))
    return res


def run_wrk(wrk: str, port: int, conns: int, seconds: float, close: bool, path: str = "/",
            script: Path | None = None) -> LoadResult:
    # wrk takes whole seconds only ("-d0.5s" is a usage error)
    cmd = [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        msg = (out.stderr.strip() or out.stdout.strip()).splitlines()[:3]
        raise RuntimeError(f"wrk failed ({out.returncode}): {' / '.join(msg)}")
    return parse_wrk(out.stdout)


# --------------------------------------------------------------------------- load: Python


@dataclass
class _Slot:
    index: int
    sock: socket.socket | None = None
    out: bytes = b""
    buf: bytearray = field(default_factory=bytearray)
    sent_at: float = 0.0
    waiting: bool = False  # a request is out and its response not complete
    responses: int = 0


class PyLoad:
    """Closed-loop HTTP/1.1 load: *conns* connections, each one request at a time.

    One thread, non-blocking sockets and a selector.  Understands responses
    with Content-Length (or read-until-close).  In ``close`` mode every request
    carries ``Connection: close`` and a new connection is opened per request.
    """

    def __init__(self, port: int, conns: int, close: bool) -> None:
        self.port = port
        self.conns = conns
        self.close = close
        hdr = "Connection: close\r\n" if close else ""
        self.request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{hdr}\r\n".encode()
        self.latencies: list[float] = []
        self.errors = 0
        self.non2xx = 0
        self.sel = selectors.DefaultSelector()
        self.slots = [_Slot(i) for i in range(conns)]

    def _connect(self, slot: _Slot) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.errors += 1
            return
        slot.sock = sock
        slot.out = self.request
        slot.buf.clear()
        slot.sent_at = time.perf_counter()
        slot.waiting = True
        self.sel.register(sock, selectors.EVENT_WRITE, slot)

    def _drop(self, slot: _Slot) -> None:
        if slot.sock is not None:
            self.sel.unregister(slot.sock)
            slot.sock.close()
            slot.sock = None
        slot.waiting = False

    def _send(self, slot: _Slot) -> None:
        assert slot.sock is not None
        try:
            n = slot.sock.send(slot.out)
        except BlockingIOError:
            return
        except OSError:
            self.errors += 1
            self._drop(slot)
            return
        slot.out = slot.out[n:]
        if not slot.out:
            self.sel.modify(slot.sock, selectors.EVENT_READ, slot)

    def _complete(self, slot: _Slot) -> bool:
        """True when slot.buf holds a whole response; consumes it and records it."""
        end = slot.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(slot.buf[:end]).decode("latin-1")
        m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
        if m is None:
            return False  # read until close
        total = end + 4 + int(m.group(1))
        if len(slot.buf) < total:
            return False
        del slot.buf[:total]
        self._record(slot, head)
        return True

    def _record(self, slot: _Slot, head: str) -> None:
        self.latencies.append(time.perf_counter() - slot.sent_at)
        slot.responses += 1
        slot.waiting = False
        parts = head.split(" ", 2)
        if len(parts) < 2 or not parts[1].startswith("2"):
            self.non2xx += 1
        self._server_closes = re.search(r"(?im)^connection:\s*close\s*$", head) is not None

    def _read(self, slot: _Slot, running: bool) -> None:
        assert slot.sock is not None
        try:
            data = slot.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = None
        if not data:  # EOF or reset
            end = slot.buf.find(b"\r\n\r\n")
            if data == b"" and slot.waiting and end >= 0:
                self._record(slot, bytes(slot.buf[:end]).decode("latin-1"))  # read-until-close
            elif slot.waiting:
                self.errors += 1
            self._drop(slot)
            if running:
                self._connect(slot)
            return
        slot.buf += data
        if not self._complete(slot):
            return
        if self.close or self._server_closes:
            self._drop(slot)
            if running:
                self._connect(slot)
        elif running:
            slot.out = self.request
            slot.sent_at = time.perf_counter()
            slot.waiting = True
            self.sel.modify(slot.sock, selectors.EVENT_WRITE, slot)
        else:
            self._drop(slot)

    def run(self, seconds: float) -> LoadResult:
        self._server_closes = False
        start = time.perf_counter()
        deadline = start + seconds
        for slot in self.slots:
            self._connect(slot)
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            for key, events in self.sel.select(min(0.1, deadline - now)):
                slot = key.data
                if slot.sock is None:
                    continue
                if events & selectors.EVENT_WRITE:
                    if slot.out is self.request and slot.out:
                        err = slot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            self.errors += 1
                            self._drop(slot)
                            self._connect(slot)
                            continue
                    self._send(slot)
                elif events & selectors.EVENT_READ:
                    self._read(slot, running=True)
            for slot in self.slots:  # a slot whose connect failed outright: retry
                if slot.sock is None and time.perf_counter() < deadline:
                    self._connect(slot)
        end = time.perf_counter()
        # requests still unanswered at the end count towards the worst latency
        pending = [end - s.sent_at for s in self.slots if s.sock is not None and s.waiting]
        for slot in self.slots:
            self._drop(slot)
        self.sel.close()
        lat = sorted(self.latencies)
        res = LoadResult(requests=len(lat), rps=len(lat) / (end - start),
                         socket_errors=self.errors, non2xx=self.non2xx)
        if lat:
            res.p50_ms = lat[len(lat) // 2] * 1000
            res.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        worst = max([*lat[-1:], *pending], default=float("nan"))
        res.max_ms = worst * 1000
        self.pending = len(pending)
        return res

    @property
    def served(self) -> int:
        return sum(1 for s in self.slots if s.responses > 0)


def run_python_load(port: int, conns: int, seconds: float, close: bool) -> LoadResult:
    return PyLoad(port, conns, close).run(seconds)


@dataclass
class ProbeResult:
    served: int
    connections: int
    max_ms: float
    pending: int


def probe_connections(port: int, conns: int, seconds: float, close: bool) -> ProbeResult:
    load = PyLoad(port, conns, close)
    res = load.run(seconds)
    return ProbeResult(load.served, conns, res.max_ms, load.pending)


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    run: int
    pair_type: str  # the arbiter worker type this measurement belongs to
    pair_parser: str
    role: str  # "arbiter" | "peer"
    server: str
    kind: str
    parser: str
    workers: int
    threads: int
    load: str
    rps: float
    p99_ms: float
    cpu_us_per_req: float
    requests: int
    socket_errors: int
    non2xx: int
    served: int
    connections: int
    probe_max_ms: float
    worker_rss_mb: float
    loadgen: str
    loadavg: float  # 1-minute load average right after the measured run
    p99_censored: bool = False  # >= 1% of requests timed out: p99 is a lower bound
    # balance (servers with 2+ workers, in worker pid order): connections seen in each
    # worker's tree, summed over the mid-run samples (keep-alive loads), and each worker
    # tree's CPU ticks during the measured run
    worker_conns: list[int] = field(default_factory=list)
    worker_cpu: list[int] = field(default_factory=list)


def _load_once(server: Server, load: str, seconds: float, bench: Bench) -> LoadResult:
    args, close = bench.args, load == "close"
    conns = args.bulk_connections if load in BULK_LOADS else args.connections
    if bench.use_wrk:
        script = bench.post_lua if load == "post100k" else None
        return run_wrk(bench.use_wrk, server.port, conns, seconds, close, LOAD_PATHS[load],
                       script)
    if load in BULK_LOADS:
        raise RuntimeError(f"the {load} load needs wrk")
    return run_python_load(server.port, conns, seconds, close)


def measure(server: Server, spec: Spec, role: str, pair: tuple[str, str], load: str,
            bench: Bench, run: int) -> Sample:
    args, close, bulk = bench.args, load == "close", load in BULK_LOADS
    seconds = args.bulk_duration if bulk else args.duration
    if args.warmup > 0:  # warm-up with the same load
        _load_once(server, load, args.warmup, bench)
    root = server.proc.pid
    workers = worker_pids(root, server.port)
    if len(workers) < 2:
        workers = []
    cpu0 = [tree_cpu_ticks(w) for w in workers]
    sampler = ConnSampler(workers, server.port, seconds) if workers and not close else None
    t0 = tree_cpu_ticks(root)
    try:
        res = _load_once(server, load, seconds, bench)
    finally:
        conns = sampler.stop() if sampler else []
    t1 = tree_cpu_ticks(root)
    cpu = [max(0, tree_cpu_ticks(w) - c) for w, c in zip(workers, cpu0, strict=True)]
    rss = max((rss_mb(w) for w in children_of(root)), default=float("nan"))
    censored = res.timeouts >= 0.01 * (res.requests + res.timeouts) and res.timeouts > 0
    if censored:  # timed-out requests are missing from wrk's latencies: p99 is >= the timeout
        res.p99_ms = max(res.p99_ms if res.p99_ms == res.p99_ms else 0.0, WRK_TIMEOUT_MS)
    cpu_us = (t1 - t0) * 1e6 / CLK_TCK / res.requests if res.requests else float("nan")
    if bulk:  # the served probe is the hello world's
        probe = ProbeResult(0, 0, float("nan"), 0)
    else:
        probe = probe_connections(server.port, args.connections, args.probe_seconds, close)
    sample = Sample(run, pair[0], pair[1], role, spec.name, spec.kind, spec.parser, spec.workers,
                    spec.threads, load, res.rps, res.p99_ms, cpu_us, res.requests,
                    res.socket_errors, res.non2xx, probe.served, probe.connections, probe.max_ms,
                    rss, "wrk" if bench.use_wrk else "python", loadavg(), censored, conns, cpu)
    balance = f"  conns {_split_pct(conns)}" if any(conns) else ""
    balance += f"  cpu {_split_pct(cpu)}" if any(cpu) else ""
    served = f"served {probe.served}/{probe.connections}  " if probe.connections else ""
    log(f"  {spec.label:28} {load:9} {res.rps:9.0f} req/s  p99 {res.p99_ms:7.2f} ms  "
        f"{cpu_us:6.0f} us/req  {served}"
        f"errs {res.socket_errors}+{res.non2xx}  rss {rss:.0f} MB  load {sample.loadavg:.1f}"
        f"{balance}")
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.label} died during the run:\n{tail(server.logfile)}")
    return sample


def _split_pct(values: list[int]) -> str:
    """Shares of *values*, largest first: [30, 20] -> "60/40" ("" if all zero)."""
    total = sum(values)
    if not total:
        return ""
    return "/".join(f"{100 * v / total:.0f}" for v in sorted(values, reverse=True))


def check_all(server: Server, loads: list[str]) -> dict[str, str]:
    """{load: what is wrong} for every load *server* does not answer right (logged)."""
    bad = {}
    for load in loads:
        err = check_answer(server.port, load)
        if err is not None:
            bad[load] = err
            log(f"  {server.label}: {load} answered wrong, not measured: {err}")
    return bad


@dataclass
class Pair:
    """An arbiter configuration and its gunicorn peer (either may be left out by --servers)."""

    worker_type: str
    parser: str
    members: list[tuple[str, Spec]]  # (role, spec)

    @property
    def key(self) -> tuple[str, str]:
        return (self.worker_type, self.parser)


def make_pairs(args: argparse.Namespace) -> list[Pair]:
    pairs = []
    for worker_type in args.types:
        for parser in args.parsers:
            members: list[tuple[str, Spec]] = []
            if "arbiter" in args.servers:
                members.append(("arbiter", Spec("arbiter", worker_type, parser, args.workers,
                                                args.threads)))
            peer = peer_spec(worker_type, args.workers, args.threads)
            if peer.name in args.servers:
                members.append(("peer", peer))
            pairs.append(Pair(worker_type, parser, members))
    return pairs


def run_pair(pair: Pair, run: int, flip: bool, loads: list[str], bench: Bench,
             samples: list[Sample]) -> None:
    """Start both servers of *pair*, measure them alternately load by load, stop them."""
    members = pair.members[::-1] if flip else pair.members
    servers: dict[str, Server] = {}
    try:
        for role, spec in members:
            servers[role] = start_server(spec, bench)
        if pair.worker_type != "asgi":
            loads = [ld for ld in loads if ld not in ASGI_ONLY_LOADS]
        for role, _ in members:
            wait_ready(servers[role])
            if bad := check_all(servers[role], loads):
                raise RuntimeError(f"{servers[role].label} answers wrong: {bad}")
        for i, load in enumerate(loads):
            for role, spec in (members if i % 2 == 0 else members[::-1]):
                samples.append(measure(servers[role], spec, role, pair.key, load, bench, run))
    finally:
        for server in servers.values():
            stop_server(server)


@dataclass
class Field:
    """The measurements of a run with peers (or of the bulk loads), as saved."""

    specs: list[Spec]
    samples: list[Sample] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # spec label -> why
    load_errors: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> load -> why
    skipped: dict[str, str] = field(default_factory=dict)  # peer -> why it is not measured


def run_field(bench: Bench, result: Field, loads: list[str]) -> None:
    """Every server of *result*, one at a time, on its *loads*, --runs times.

    Order: the table's, reversed every other run.  A server that fails is
    recorded and skipped from then on (its samples of that run dropped); a
    load it answers wrong is skipped for that server.
    """
    args = bench.args
    for run in range(1, args.runs + 1):
        order = result.specs if run % 2 else result.specs[::-1]
        for spec in order:
            if spec.label in result.failures:
                continue
            errors = result.load_errors.setdefault(spec.label, {})
            mine = [ld for ld in loads if (spec.wsgi or ld in STD_LOADS) and ld not in errors
                    and (spec.kind == "asgi" or ld not in ASGI_ONLY_LOADS)]
            if not mine:
                continue
            log(f"run {run}/{args.runs}: {spec.title}")
            role = "arbiter" if spec.name == "arbiter" else "peer"
            server = None
            try:
                server = start_server(spec, bench)
                wait_ready(server)
                errors.update(check_all(server, mine))
                for load in mine:
                    if load not in errors:
                        result.samples.append(measure(server, spec, role, (spec.kind, spec.parser),
                                                      load, bench, run))
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                result.failures[spec.label] = f"run {run}: {exc}"
                log(f"  {spec.title} FAILED, skipped from now on: {exc}")
                result.samples[:] = [s for s in result.samples if not (
                    _spec_of(s) == spec and s.run == run)]
            finally:
                if server is not None:
                    stop_server(server)


def _spec_of(s: Sample) -> Spec:
    return Spec(s.server, s.kind, s.parser, s.workers, s.threads)


# --------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    vals = [v for v in values if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


def _stats(ss: list[Sample]) -> dict | None:
    if not ss:
        return None
    return {
        "label": Spec(ss[0].server, ss[0].kind, ss[0].parser, ss[0].workers,
                      ss[0].threads).label,
        "runs": len(ss),
        "rps": _med([s.rps for s in ss]),
        "p99_ms": _med([s.p99_ms for s in ss]),
        "p99_censored": any(s.p99_censored for s in ss),
        "cpu_us_per_req": _med([s.cpu_us_per_req for s in ss]),
        "served": min(s.served for s in ss),
        "connections": ss[0].connections,
        "probe_max_ms": max(s.probe_max_ms for s in ss),
        "errors": _med([s.socket_errors + s.non2xx for s in ss]),
        "worker_rss_mb": _med([s.worker_rss_mb for s in ss]),
    }


def verdict(worker_type: str, load: str, rps_ratio: float | None, arb: dict | None) -> str:
    """The issue's floor: not slower than the peer (ratio >= the noise band's low end)."""
    if arb is None:
        return "FAILED"
    if (worker_type, load) == FORK_EXEMPT:
        out = "exempt (fork/conn)"
    elif rps_ratio is None:
        out = "-"
    elif rps_ratio < NOISE_LOW:
        out = "FAIL slower"
    elif rps_ratio > NOISE_HIGH:
        out = "ok faster"
    else:
        out = "ok same"
    if arb["served"] < arb["connections"]:
        out += f"; STARVES {arb['served']}/{arb['connections']}"
    return out


def summarize(samples: list[Sample], pairs: list[Pair], loads: list[str],
              failures: dict[tuple[str, str], str]) -> list[dict]:
    rows: list[dict] = []
    for pair in pairs:
        for load in loads:
            mine = [s for s in samples if (s.pair_type, s.pair_parser) == pair.key
                    and s.load == load]
            arb = _stats([s for s in mine if s.role == "arbiter"])
            peer = _stats([s for s in mine if s.role == "peer"])
            rr, cr = [], []
            for a in (s for s in mine if s.role == "arbiter"):
                p = [s for s in mine if s.role == "peer" and s.run == a.run]
                if p and p[0].rps and p[0].cpu_us_per_req == p[0].cpu_us_per_req:
                    rr.append(a.rps / p[0].rps)
                    cr.append(a.cpu_us_per_req / p[0].cpu_us_per_req)
            rps_ratio = _med(rr) if rr else None
            cpu_ratio = _med(cr) if cr else None
            has_arbiter = any(role == "arbiter" for role, _ in pair.members)
            rows.append({
                "type": pair.worker_type, "parser": pair.parser, "load": load,
                "arbiter": arb, "peer": peer,
                "rps_ratio": rps_ratio, "cpu_ratio": cpu_ratio,
                "floor": verdict(pair.worker_type, load, rps_ratio, arb) if has_arbiter else "-",
                "failure": failures.get(pair.key),
            })
    return rows


def _ratio(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None and v == v else ""


def _cells(st: dict | None) -> list[str]:
    if st is None:
        return ["-", "-", "-", "-"]
    p99 = f"{st['p99_ms']:.2f}" + ("*" if st.get("p99_censored") else "")
    return [f"{st['rps']:,.0f}", p99, f"{st['cpu_us_per_req']:.0f}",
            f"{st['served']}/{st['connections']}"]


def table(rows: list[dict]) -> str:
    head = ["type", "parser", "load", "req/s", "p99 ms", "CPU us/req", "served",
            "gunicorn peer", "req/s", "p99 ms", "CPU us/req", "served",
            "req/s ratio", "CPU ratio", "errors a/p", "floor"]
    lines = []
    for r in rows:
        arb, peer = r["arbiter"], r["peer"]
        errs = "/".join("-" if st is None else f"{st['errors']:.0f}" for st in (arb, peer))
        peer_label = peer["label"].removeprefix("gunicorn ") if peer else "-"
        lines.append([r["type"], r["parser"], r["load"], *_cells(arb), peer_label,
                      *_cells(peer), _ratio(r["rps_ratio"]), _ratio(r["cpu_ratio"]), errs,
                      r["floor"]])
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(x) for x in lines]
    return "\n".join(out)


def notes(rows: list[dict], args: argparse.Namespace) -> list[str]:
    out = [
        f"arbiter: -w {args.workers} -t {args.threads} --max-connections 1000; peers at equal "
        f"workers (and threads): preforked <-> gunicorn sync, every other type <-> gunicorn "
        f"gthread --threads {args.threads}.",
        f"served = connections (of the probe's {args.connections}, each sending requests for "
        f"{args.probe_seconds:g}s) that got >= 1 response, worst run; errors = socket errors + "
        "non-2xx/3xx (median), arbiter/peer; ratios = arbiter / peer, median of per-run ratios; "
        "CPU us/req = the server's process tree CPU / requests; p99* = in some run >= 1% of "
        f"the requests timed out (wrk's {WRK_TIMEOUT_MS / 1000:g} s timeout), so that run's p99 "
        f"counts as >= {WRK_TIMEOUT_MS:.0f} ms.",
        f"floor: with keep-alive load no type slower than its peer, with Connection: close the "
        f"same for every type but forked; a req/s ratio in {NOISE_LOW}-{NOISE_HIGH} counts as "
        "the same speed (the machine's noise band).",
    ]
    by_key = {(r["type"], r["parser"], r["load"]): r for r in rows}
    for r in rows:
        if (r["type"], r["load"]) != FORK_EXEMPT or r["arbiter"] is None:
            continue
        arb, peer = r["arbiter"], r["peer"]
        ka = by_key.get((r["type"], r["parser"], "keepalive"))
        line = (f"forked under close load ({r['parser']}): {arb['rps']:,.0f} req/s, "
                f"{arb['cpu_us_per_req']:.0f} us CPU/req")
        if peer is not None:
            line += (f" vs gthread's {peer['rps']:,.0f} req/s, {peer['cpu_us_per_req']:.0f} us "
                     f"(req/s ratio {_ratio(r['rps_ratio'])}, CPU ratio {_ratio(r['cpu_ratio'])})")
        line += (". Every request is a new connection and forked serves each connection in a "
                 f"fresh child: fork + exit + reap of a ~{arb['worker_rss_mb']:.0f} MB worker "
                 "(README: ~1.9 ms wall for a 30 MB process, against ~0.1 ms to start a thread)")
        if ka is not None and ka["arbiter"] is not None:
            extra = arb["cpu_us_per_req"] - ka["arbiter"]["cpu_us_per_req"]
            line += f"; here a new connection costs forked {extra:+.0f} us of CPU over a kept-alive request"
            if peer is not None and ka["peer"] is not None:
                line += (f", gthread "
                         f"{peer['cpu_us_per_req'] - ka['peer']['cpu_us_per_req']:+.0f} us")
            if arb["rps"]:
                line += (f"; 1/throughput = {1e6 / arb['rps']:.0f} us per connection "
                         f"({args.workers} workers)")
        out.append(line + ". Exempt from the floor; reported for what it costs.")
    for r in rows:
        if r["failure"] and r["load"] == rows[0]["load"]:
            out.append(f"FAILED {r['type']} ({r['parser']}): {r['failure'].splitlines()[0]}")
    return out


def pairs_from_field(fld: Field, args: argparse.Namespace
                     ) -> tuple[list[Sample], dict[tuple[str, str], str]]:
    """The pair table's samples out of a run with peers: each arbiter measurement next to
    its gunicorn counterpart's of the same run and load; failures keyed by pair."""
    out: list[Sample] = []
    peers = [s for s in fld.samples if s.server in ("gunicorn", "uvicorn")]
    for a in fld.samples:
        if a.server != "arbiter" or a.load not in STD_LOADS:
            continue
        out.append(a)
        want = peer_spec(a.kind, a.workers, a.threads)
        out += [replace(p, pair_type=a.kind, pair_parser=a.parser) for p in peers
                if _spec_of(p) == want and p.run == a.run and p.load == a.load]
    failures: dict[tuple[str, str], str] = {}
    for spec in fld.specs:
        if spec.name != "arbiter":
            continue
        peer = peer_spec(spec.kind, spec.workers, spec.threads)
        why = fld.failures.get(spec.label) or fld.failures.get(peer.label)
        if why:
            failures[(spec.kind, spec.parser)] = why
    return out, failures


def _field_stats(fld: Field, spec: Spec, load: str) -> list[Sample]:
    return [s for s in fld.samples if _spec_of(s) == spec and s.load == load]


def _run_ratios(fld: Field, spec: Spec, other: Spec, load: str) -> str:
    """Median over runs of spec's req/s / other's in the same run ("" if none)."""
    theirs = {s.run: s.rps for s in _field_stats(fld, other, load)}
    ratios = [s.rps / theirs[s.run] for s in _field_stats(fld, spec, load)
              if theirs.get(s.run)]
    return _ratio(_med(ratios)) if ratios else ""


def _errs(ss: list[Sample]) -> bool:
    """wrk counted socket errors or non-2xx answers for > 0.1% of the requests in some run."""
    return any(s.socket_errors + s.non2xx > 0.001 * max(1, s.requests) for s in ss)


def _md_table(head: list[str], lines: list[list[str]], right_from: int = 1) -> str:
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w)
                                 in enumerate(zip(cells, widths, strict=True))) + " |"

    sep = "|" + "|".join("-" * (w + 2) if i < right_from else "-" * (w + 1) + ":"
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(head), sep, *(fmt(x) for x in lines)])


def field_table(fld: Field, loads: list[str]) -> str:
    """One row per server: req/s and us/req per hello-world load, ratios, balance."""
    names = {"keepalive": "keep-alive", "close": "close", "fastapi": "FastAPI JSON"}
    head = ["server"]
    for load in loads:
        head += [f"{names[load]} req/s", "µs/req"]
    head += ["vs counterpart", "vs meinheld", "balance"]
    meinheld = next((s for s in fld.specs if s.name == "meinheld"), None)
    lines = []
    for spec in fld.specs:
        row = [spec.title]
        if spec.label in fld.failures:
            lines.append(row + ["FAILED"] + [""] * (len(head) - 2))
            continue
        for load in loads:
            ss = _field_stats(fld, spec, load)
            if load in fld.load_errors.get(spec.label, {}):
                row += ["(errors)", ""]
            elif not ss:
                row += ["-", "-"]
            else:
                row += [f"{_med([s.rps for s in ss]):,.0f}" + ("*" if _errs(ss) else ""),
                        f"{_med([s.cpu_us_per_req for s in ss]):.0f}"]
        vs_g = vs_m = ""
        g = peer_spec(spec.kind, spec.workers, spec.threads)
        if spec.name == "arbiter" and g in fld.specs:
            vs_g = " / ".join(_run_ratios(fld, spec, g, ld) or "-" for ld in loads)
            vs_g += f" ({g.kind if g.name == 'gunicorn' else g.name})"
        if meinheld is not None and spec != meinheld:
            vs_m = " / ".join(_run_ratios(fld, spec, meinheld, ld) or "-" for ld in loads)
        row += [vs_g, vs_m, _balance_cell(fld, spec, loads)]
        lines.append(row)
    return _md_table(head, lines)


def _balance_cell(fld: Field, spec: Spec, loads: list[str]) -> str:
    """Per run: keep-alive connection split, then the close load's CPU split; starvation."""
    parts = []
    ka = sorted(_field_stats(fld, spec, "keepalive"), key=lambda s: s.run)
    cl = sorted(_field_stats(fld, spec, "close"), key=lambda s: s.run)
    if splits := [x for x in (_split_pct(s.worker_conns) for s in ka) if x]:
        parts.append(" ".join(splits))
    if splits := [x for x in (_split_pct(s.worker_cpu) for s in cl) if x]:
        parts.append("cpu " + " ".join(splits))
    starved = [s for s in ka + cl if s.connections and s.served < s.connections]
    if starved:
        worst = min(starved, key=lambda s: s.served)
        parts.append(f"served {worst.served}/{worst.connections} ({worst.load})")
    return "; ".join(parts)


def bulk_table(fld: Field, loads: list[str]) -> str:
    """Rows = bulk loads, columns = WSGI servers, median req/s."""
    specs = [s for s in fld.specs if s.wsgi]
    lines = []
    for load in loads:
        row = [load]
        for spec in specs:
            ss = _field_stats(fld, spec, load)
            if load in fld.load_errors.get(spec.label, {}):
                row.append("(errors)")
            elif spec.label in fld.failures:
                row.append("FAILED")
            elif not ss:
                row.append("-")
            else:
                row.append(f"{_med([s.rps for s in ss]):,.0f}" + ("*" if _errs(ss) else ""))
        lines.append(row)
    return _md_table(["load", *(s.short for s in specs)], lines)


def field_notes(std: list[str], bulk: list[str], args: argparse.Namespace) -> list[str]:
    """How the peer table (*std*) or the bulk table (*bulk*) was measured."""
    out = []
    if std:
        out.append(
            f"hello world, wrk -t1 -c{args.connections} -d{args.duration:g}s after a "
            f"{args.warmup:g} s warm-up, one server at a time, medians of {args.runs} run(s); "
            "µs/req = CPU (utime+stime) of the server's process tree / requests; "
            "vs counterpart / vs meinheld = req/s ratio per load "
            f"({' / '.join(std)}), median of the per-run ratios; arbiter's counterpart "
            "is gunicorn sync for preforked, uvicorn for asgi, gunicorn gthread for the "
            "others.")
        out.append(
            "balance (2+ workers only): per run, the share of the keep-alive load's "
            "connections each worker held (sampled at 1/4, 1/2, 3/4 of the run), largest "
            "first; \"cpu\": each worker's share of the server's CPU during the close load; "
            "served = a probe's connections that got an answer, when not all did.")
    if bulk:
        out.append(
            f"bulk loads: wrk -t1 -c{args.bulk_connections} -d{args.bulk_duration:g}s "
            f"keep-alive after a {args.warmup:g} s warm-up, req/s, medians of {args.runs} "
            "run(s); mem1m = 1 MiB from memory (req/s = MiB/s), file1m = a 1 MiB file through "
            "wsgi.file_wrapper, post100k = a 100,000-byte POST read whole; (errors) = the "
            "server's answer to that load was wrong (checked before measuring): not measured.")
    return out


def field_status(fld: Field, loads: list[str]) -> list[str]:
    """Peers skipped, servers failed, loads answered wrong, error marks."""
    out = []
    if any(_errs(_field_stats(fld, s, ld)) for s in fld.specs for ld in loads):
        out.append("req/s* = wrk counted socket errors or non-2xx answers for > 0.1% of "
                   "the requests in some run.")
    for name, why in fld.skipped.items():
        out.append(f"skipped {name}: {why}")
    for label, why in fld.failures.items():
        out.append(f"FAILED {label}: {why.splitlines()[0]}")
    for label, errs in fld.load_errors.items():
        for load, why in errs.items():
            out.append(f"{label} answered {load} wrong: {why}")
    return out


def environment(gunicorn_py: str | None, loadgen: str, peers: dict[str, str] | None = None
                ) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "nproc": os.cpu_count(), "cpu": cpu,
        "python": platform.python_version(), "arbiter_commit": commit or "?",
        "gunicorn": version_of(gunicorn_py, "gunicorn") if gunicorn_py else None,
        "peers": peers or {}, "loadgen": loadgen, "loadavg_start": round(loadavg(), 2),
    }


# --------------------------------------------------------------------------- main


def jsonable(value: object) -> object:
    """*value* with NaN/inf floats as None: strict JSON for other tools."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--types", default=",".join(WORKER_TYPES),
                   help=f"arbiter worker types [{','.join(WORKER_TYPES)}]")
    p.add_argument("--worker-type", dest="types", help=argparse.SUPPRESS)  # old spelling
    p.add_argument("--workers", type=int, default=2, help="workers per server [2]")
    p.add_argument("--threads", type=int, default=4,
                   help="arbiter -t and gunicorn gthread --threads [4]")
    p.add_argument("--parsers", default="httptools", help="arbiter parsers [httptools]; "
                   "httptools,h11 for both")
    p.add_argument("--loads", default="keepalive,close",
                   help=f"any of {','.join(STD_LOADS + BULK_LOADS)} [keepalive,close]")
    p.add_argument("--duration", type=float, default=8,
                   help="seconds of measured load (whole seconds with wrk) [8]")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up load [2]")
    p.add_argument("--runs", type=int, default=3, help="passes over every server [3]")
    p.add_argument("--connections", type=int, default=50,
                   help="concurrent connections of the hello-world loads [50]")
    p.add_argument("--bulk-connections", type=int, default=16,
                   help="concurrent connections of the bulk loads [16]")
    p.add_argument("--bulk-duration", type=float, default=4,
                   help="seconds of measured load per bulk load and run [4]")
    p.add_argument("--probe-seconds", type=float, default=2,
                   help="length of the connections-served probe [2]")
    p.add_argument("--servers", default="all",
                   help=f"any of {','.join(SERVER_NAMES)}, 'peers' (= {','.join(PEER_NAMES)}) "
                        "or 'all'; arbiter,gunicorn alone = side-by-side pairs [all]")
    p.add_argument("--peers", metavar="VENV", default=None,
                   help=f"venv with the peers granian, uvicorn, meinheld, bjoern [{PEERS_VENV} "
                        "if it exists, else the gunicorn venv]")
    p.add_argument("--gunicorn-venv", default=None,
                   help=f"venv with gunicorn (made if missing) [this interpreter if it has "
                        f"gunicorn, else {DEFAULT_VENV}]")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                   help="wrk, the built-in Python generator, or wrk if installed [auto]")
    p.add_argument("--capacity", type=int, default=0, metavar="N",
                   help="also run scripts/evented_capacity.py with N connections (e.g. 10000)")
    p.add_argument("--capacity-only", action="store_true",
                   help="run only the capacity benchmark (needs --capacity N)")
    p.add_argument("--json", action="store_true", help="print JSON (samples + summary) to stdout")
    p.add_argument("--save", metavar="FILE", help="also write the JSON to FILE")
    p.add_argument("--report", metavar="FILE",
                   help="measure nothing: print the table of a run saved with --save/--json")
    args = p.parse_args(argv)
    args.types, args.parsers = _split(args.types), _split(args.parsers)
    args.servers, args.loads = _split(args.servers), _split(args.loads)
    groups = {"all": SERVER_NAMES, "peers": PEER_NAMES}
    args.servers = list(dict.fromkeys(x for name in args.servers for x in groups.get(name, [name])))
    for name in args.servers:
        if name not in SERVER_NAMES:
            p.error(f"--servers: unknown server {name!r} (known: {', '.join(SERVER_NAMES)}, "
                    "peers, all)")
    for worker_type in args.types:
        if worker_type not in WORKER_TYPES:
            p.error(f"--types: unknown worker type {worker_type!r} (known: "
                    f"{', '.join(WORKER_TYPES)})")
    for load in args.loads:
        if load not in STD_LOADS + BULK_LOADS:
            p.error(f"--loads: unknown load {load!r} (known: "
                    f"{', '.join(STD_LOADS + BULK_LOADS)})")
    for parser in args.parsers:
        if parser not in ("httptools", "h11", "auto"):
            p.error(f"--parsers: unknown parser {parser!r}")
    if not (args.types and args.parsers and args.servers and args.loads):
        p.error("--types, --parsers, --servers and --loads must not be empty")
    if args.runs < 1 or args.connections < 1 or args.duration <= 0 or args.workers < 1 \
            or args.threads < 1 or args.warmup < 0 or args.bulk_connections < 1 \
            or args.bulk_duration <= 0:
        p.error("--runs, --connections, --duration, --workers, --threads, --bulk-connections "
                "and --bulk-duration must be positive")
    if args.loadgen != "python" and any(x != int(x) for x in (args.duration, args.warmup,
                                                              args.bulk_duration)):
        p.error("wrk takes whole seconds: give --duration, --warmup and --bulk-duration as "
                "integers")
    if args.capacity_only and args.capacity < 1:
        p.error("--capacity-only needs --capacity N")
    if args.capacity < 0:
        p.error("--capacity must be positive")
    return args


def compare(bench: Bench, loads: list[str]
            ) -> tuple[list[Sample], list[Pair], dict[tuple[str, str], str]]:
    """Every pair, --runs times; a pair whose server fails is recorded and skipped after."""
    args = bench.args
    samples: list[Sample] = []
    failures: dict[tuple[str, str], str] = {}
    pairs = make_pairs(args)
    for run in range(1, args.runs + 1):
        order = pairs if run % 2 else pairs[::-1]
        for i, pair in enumerate(order):
            if pair.key in failures:
                continue
            log(f"run {run}/{args.runs}: {pair.worker_type} ({pair.parser})")
            try:
                run_pair(pair, run, bool((run + i) % 2 == 0), loads, bench, samples)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                failures[pair.key] = f"run {run}: {exc}"
                log(f"  {pair.worker_type} ({pair.parser}) FAILED, skipped from now on: {exc}")
                # drop its partial samples of this run: a pair is compared whole or not at all
                samples[:] = [s for s in samples
                              if not ((s.pair_type, s.pair_parser) == pair.key and s.run == run)]
    return samples, pairs, failures


def split_loads(loads: list[str]) -> tuple[list[str], list[str]]:
    """(hello-world loads, bulk loads) of --loads, in its order."""
    return [ld for ld in loads if ld in STD_LOADS], [ld for ld in loads if ld in BULK_LOADS]


def with_peers(fld: Field, std: list[str]) -> bool:
    """Whether the hello-world loads ran one server at a time, with peers (else in pairs)."""
    return bool(std) and any(s.name in PEER_NAMES for s in fld.specs)


def write_load_files(bench: Bench) -> None:
    """The 1 MiB file (file1m) and wrk's POST script (post100k), in the run's temp dir."""
    bench.file1m = bench.logdir / "file1m.bin"
    bench.file1m.write_bytes(_bench_app().MEM1M)
    bench.post_lua = bench.logdir / "post.lua"
    bench.post_lua.write_text(POST_LUA)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return report_saved(args.report, args.json)
    install_signal_handlers()
    wrk = shutil.which("wrk")
    if args.loadgen == "wrk" and not wrk:
        log("wrk not found")
        return 1
    use_wrk = wrk if args.loadgen != "python" else None
    std, bulk = split_loads(args.loads)
    if use_wrk is None and not args.capacity_only:
        log("using the built-in Python load generator (numbers are not comparable with wrk's)")
        if bulk:
            log(f"the bulk loads ({', '.join(bulk)}) need wrk: not measured")
            bulk = []
    need_gunicorn = "gunicorn" in args.servers and not args.capacity_only
    gunicorn_py = gunicorn_python(args.gunicorn_venv) if need_gunicorn else None
    wanted = [] if args.capacity_only else [n for n in args.servers if n in PEER_NAMES]
    if not std:  # nginx and uvicorn run only the hello world
        wanted = [n for n in wanted if Spec(n, "", "", 1, 1).wsgi]
    peers_py, nginx, versions, skipped = find_peers(args, wanted, gunicorn_py)
    for name, why in skipped.items():
        log(f"skipping {name}: {why}")
    fld = Field(field_specs(args, [n for n in wanted if n not in skipped]), skipped=skipped)
    env = environment(gunicorn_py, "wrk" if use_wrk else "python", versions)
    log(f"environment: {env}")
    if env["loadavg_start"] > (os.cpu_count() or 1):
        log(f"the machine is busy (load average {env['loadavg_start']:.1f} on "
            f"{os.cpu_count()} CPUs): expect noisy numbers, trust the ratios more")
    logdir = Path(tempfile.mkdtemp(prefix="arbiter-bench-"))
    log(f"server logs in {logdir}")
    bench = Bench(args, use_wrk, logdir, gunicorn_py or sys.executable, peers_py, nginx)
    samples: list[Sample] = []
    pairs: list[Pair] = []
    failures: dict[tuple[str, str], str] = {}
    capacity: dict | None = None
    try:
        if not args.capacity_only:
            if bulk:
                write_load_files(bench)
            if std and not with_peers(fld, std):
                samples, pairs, failures = compare(bench, std)
            field_loads = (std if with_peers(fld, std) else []) + bulk
            if field_loads:
                run_field(bench, fld, field_loads)
        if args.capacity:
            sys.path.insert(0, str(SCRIPTS_DIR))
            import evented_capacity  # the concurrency benchmark, in its own script

            capacity = evented_capacity.run_capacity(
                evented_capacity.parse_args([str(args.capacity)]), logdir)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
        if bench.file1m is not None:
            bench.file1m.unlink(missing_ok=True)
    if with_peers(fld, std):
        pair_samples, pair_failures = pairs_from_field(fld, args)
    else:
        pair_samples, pair_failures = samples, failures
    cmd = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data = jsonable({
        "command": cmd, "environment": env, "samples": [asdict(s) for s in samples],
        "summary": summarize(pair_samples, make_pairs(args), std, pair_failures),
        "failures": {f"{k[0]}/{k[1]}": v for k, v in failures.items()},
        "field": asdict(fld), "capacity": capacity})
    if args.save:
        Path(args.save).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        log(f"results saved to {args.save} (python scripts/bench.py --report {args.save})")
    return emit(data, args)


def _sample(d: dict) -> Sample:
    return Sample(**{k: float("nan") if v is None else v for k, v in d.items()})


def load_field(data: dict) -> Field:
    """The Field of saved *data* (an empty one for runs saved before peers existed)."""
    d = data.get("field") or {"specs": []}
    return Field([Spec(**x) for x in d["specs"]], [_sample(x) for x in d.get("samples", [])],
                 d.get("failures", {}), d.get("load_errors", {}), d.get("skipped", {}))


def emit(data: dict, args: argparse.Namespace) -> int:
    """Print *data* (as saved) as JSON or as the tables; the exit status: 1 if anything failed."""
    std, bulk = split_loads(args.loads)
    fld = load_field(data)
    peers = with_peers(fld, std)
    if peers:
        samples, failures = pairs_from_field(fld, args)
    else:
        samples = [_sample(s) for s in data["samples"]]
        failures = {(k.split("/", 1)[0], k.split("/", 1)[-1]): v
                    for k, v in data["failures"].items()}
    rows = summarize(samples, make_pairs(args), std, failures) if std else []
    capacity, env = data.get("capacity"), data["environment"]
    if args.json:
        print(json.dumps(data, indent=2, allow_nan=False))
    else:
        every = samples + fld.samples
        versions = ", ".join(f"{k} {v}" for k, v in env.get("peers", {}).items())
        print(f"\n{data['command']}")
        print(f"{env['date']}  nproc={env['nproc']}  {env['cpu']}  Python {env['python']}  "
              f"arbiter {env['arbiter_commit']}  gunicorn {env['gunicorn']}"
              f"{'  ' + versions if versions else ''}  load: {env['loadgen']}"
              + (f" -t1 -c{args.connections} -d{args.duration:g}s" if std else "")
              + (f" (bulk -c{args.bulk_connections} -d{args.bulk_duration:g}s)" if bulk else "")
              + f" (warm-up {args.warmup:g}s), "
              f"medians of {args.runs} run(s); load average {env['loadavg_start']:.1f} at the "
              f"start, {_med([s.loadavg for s in every]):.1f} median during the runs\n")
        if peers:
            print(field_table(fld, std))
            print()
            for line in field_notes(std, [], args):
                print(f"* {line}")
            print()
        if rows and (samples or failures):
            print(table(rows))
            print()
            for line in notes(rows, args):
                print(f"* {line}")
            print()
        if bulk and any(s.wsgi for s in fld.specs):
            print(bulk_table(fld, bulk))
            print()
            for line in field_notes([], bulk, args):
                print(f"* {line}")
            print()
        for line in field_status(fld, std + bulk):
            print(f"* {line}")
        if capacity is not None:
            sys.path.insert(0, str(SCRIPTS_DIR))
            import evented_capacity

            print()
            print(evented_capacity.report(capacity))
    ours = {s.label for s in fld.specs if s.name in ("arbiter", "gunicorn")}
    bad = any(r["failure"] for r in rows) or (capacity is not None and not capacity["ok"]) \
        or any(label in ours for label in fld.failures) \
        or any(errs for label, errs in fld.load_errors.items() if label in ours)
    return 1 if bad else 0


def report_saved(path: str, json_out: bool) -> int:
    """``--report FILE``: the tables of a run saved with --save (or printed with --json)."""
    data = json.loads(Path(path).read_text())
    argv = shlex.split(data["command"])[2:]  # "python scripts/bench.py ARGS..."
    args = parse_args(argv)
    args.json = json_out
    return emit(data, args)


if __name__ == "__main__":
    sys.exit(main())
