#!/usr/bin/env python3
"""Benchmark arbiter's five worker types against their gunicorn counterparts.

This script owns the arbiter-vs-gunicorn benchmark; it measures, it does not
tune.  It is modelled on the peer baseline (shared bench/README.md, peers.sh).

Pairs -- every arbiter worker type is measured next to the gunicorn worker
nearest to it, at equal worker (and thread) counts:

* preforked -- gunicorn sync ``-w W``: one connection at a time per worker;
* pooled -- gunicorn gthread ``-w W --threads T``: the same pattern, a thread
  pool;
* threaded, forked, evented -- gunicorn gthread ``-w W --threads T``: the
  nearest peer gunicorn has without extra packages (its event-loop workers
  need gevent/eventlet; it has no thread- or fork-per-connection worker).

arbiter runs as ``python -m arbiter -b 127.0.0.1:PORT -w W -k TYPE -t T
--http-parser P --log-level warning --max-connections 1000 hello:app``.

How each number is taken:

* every server is started on 127.0.0.1 on a free port, with ``scripts/hello.py``
  as the app, and is polled until it answers an HTTP request;
* the two servers of a pair run side by side and are measured alternately,
  load by load (which one goes first flips every run and every load), so
  drift of the machine's speed hits both; pairs are visited in reverse order
  every other run;
* per measurement: a warm-up (``--warmup``, same load), then
  ``wrk -t1 -c50 -dDs --latency`` (``-H "Connection: close"`` for the
  ``close`` load); without wrk, a built-in closed-loop Python load generator
  (selectors, one thread) runs instead;
* server CPU per request: utime+stime (+ reaped children's) of the server's
  whole process tree, read from /proc before and after the measured run,
  divided by the requests completed;
* "served": a separate probe opens 50 connections at once, each sending
  requests in a loop for ~2 s, and counts the connections that got at least
  one response -- this exposes a one-connection-at-a-time keep-alive worker
  starving the others;
* the table shows medians over ``--runs``; ratios are arbiter / peer, the
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
        [--loads keepalive,close] [--duration 8] [--runs 3] [--connections 50]
        [--servers arbiter,gunicorn] [--gunicorn-venv PATH]
        [--loadgen auto|wrk|python] [--capacity N [--capacity-only]] [--json]
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
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
APP = "hello:app"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_VENV = Path.home() / ".cache" / "arbiter-bench" / "venv"
WORKER_TYPES = ("preforked", "pooled", "threaded", "forked", "evented")
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
    """One server configuration: arbiter (kind = worker type) or gunicorn (kind = class)."""

    name: str
    kind: str
    parser: str
    workers: int
    threads: int

    @property
    def label(self) -> str:
        if self.name == "gunicorn":
            shape = f"{self.workers}w" + (f"x{self.threads}t" if self.kind == "gthread" else "")
            return f"gunicorn {self.kind} {shape}"
        return f"arbiter {self.kind} {self.parser}"


def peer_spec(worker_type: str, workers: int, threads: int) -> Spec:
    """The gunicorn worker nearest to an arbiter worker type (see the module docstring)."""
    if worker_type == "preforked":
        return Spec("gunicorn", "sync", "-", workers, 1)
    return Spec("gunicorn", "gthread", "-", workers, threads)


def arbiter_cmd(port: int, worker_type: str, workers: int, threads: int, parser: str,
                max_connections: int = 1000, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "arbiter", "-b", f"127.0.0.1:{port}", "-w", str(workers),
            "-k", worker_type, "-t", str(threads), "--http-parser", parser,
            "--log-level", "warning", "--max-connections", str(max_connections),
            *(extra or []), APP]


def gunicorn_cmd(python: str, port: int, worker_class: str, workers: int,
                 threads: int) -> list[str]:
    cmd = [python, "-m", "gunicorn", "-w", str(workers), "-k", worker_class]
    if worker_class == "gthread":
        cmd += ["--threads", str(threads)]
    return cmd + ["-b", f"127.0.0.1:{port}", "--log-level", "warning", "--no-control-socket",
                  "--chdir", str(SCRIPTS_DIR), APP]


def spawn(name: str, kind: str, parser: str, port: int, cmd: list[str], logdir: Path) -> Server:
    """Start *cmd* in its own session (a terminal's Ctrl-C reaches only us) and track it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SCRIPTS_DIR), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    for key in list(env):
        if key.startswith(("ARBITER_", "GUNICORN_")) or key in ("WEB_CONCURRENCY", "PORT"):
            del env[key]  # don't let the caller's environment change what is measured
    logfile = logdir / f"{name}-{kind}-{parser}-{port}.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=SCRIPTS_DIR, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, kind, parser, port, proc, logfile)
    RUNNING.append(server)
    log(f"started {server.label} pid {proc.pid} on 127.0.0.1:{port}: {' '.join(cmd)}")
    return server


def start_server(spec: Spec, gunicorn_py: str, logdir: Path) -> Server:
    port = free_port()
    if spec.name == "arbiter":
        cmd = arbiter_cmd(port, spec.kind, spec.workers, spec.threads, spec.parser)
    else:
        cmd = gunicorn_cmd(gunicorn_py, port, spec.kind, spec.workers, spec.threads)
    return spawn(spec.name, spec.kind, spec.parser, port, cmd, logdir)


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


def run_wrk(wrk: str, port: int, conns: int, seconds: float, close: bool) -> LoadResult:
    # wrk takes whole seconds only ("-d0.5s" is a usage error)
    cmd = [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://127.0.0.1:{port}/")
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


def measure(server: Server, spec: Spec, role: str, pair: tuple[str, str], load: str,
            args: argparse.Namespace, run: int, use_wrk: str | None) -> Sample:
    close = load == "close"
    if args.warmup > 0:  # warm-up with the same load
        if use_wrk:
            run_wrk(use_wrk, server.port, args.connections, args.warmup, close)
        else:
            run_python_load(server.port, args.connections, args.warmup, close)
    t0 = tree_cpu_ticks(server.proc.pid)
    if use_wrk:
        res = run_wrk(use_wrk, server.port, args.connections, args.duration, close)
    else:
        res = run_python_load(server.port, args.connections, args.duration, close)
    t1 = tree_cpu_ticks(server.proc.pid)
    rss = max((rss_mb(w) for w in children_of(server.proc.pid)), default=float("nan"))
    censored = res.timeouts >= 0.01 * (res.requests + res.timeouts) and res.timeouts > 0
    if censored:  # timed-out requests are missing from wrk's latencies: p99 is >= the timeout
        res.p99_ms = max(res.p99_ms if res.p99_ms == res.p99_ms else 0.0, WRK_TIMEOUT_MS)
    cpu_us = (t1 - t0) * 1e6 / CLK_TCK / res.requests if res.requests else float("nan")
    probe = probe_connections(server.port, args.connections, args.probe_seconds, close)
    sample = Sample(run, pair[0], pair[1], role, spec.name, spec.kind, spec.parser, spec.workers,
                    spec.threads, load, res.rps, res.p99_ms, cpu_us, res.requests,
                    res.socket_errors, res.non2xx, probe.served, probe.connections, probe.max_ms,
                    rss, "wrk" if use_wrk else "python", loadavg(), censored)
    log(f"  {spec.label:28} {load:9} {res.rps:9.0f} req/s  p99 {res.p99_ms:7.2f} ms  "
        f"{cpu_us:6.0f} us/req  served {probe.served}/{probe.connections}  "
        f"errs {res.socket_errors}+{res.non2xx}  rss {rss:.0f} MB  load {sample.loadavg:.1f}")
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.label} died during the run:\n{tail(server.logfile)}")
    return sample


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
            if "gunicorn" in args.servers:
                members.append(("peer", peer_spec(worker_type, args.workers, args.threads)))
            pairs.append(Pair(worker_type, parser, members))
    return pairs


def run_pair(pair: Pair, run: int, flip: bool, args: argparse.Namespace, use_wrk: str | None,
             gunicorn_py: str, logdir: Path, samples: list[Sample]) -> None:
    """Start both servers of *pair*, measure them alternately load by load, stop them."""
    members = pair.members[::-1] if flip else pair.members
    servers: dict[str, Server] = {}
    try:
        for role, spec in members:
            servers[role] = start_server(spec, gunicorn_py, logdir)
        for role, _ in members:
            wait_ready(servers[role])
        for i, load in enumerate(args.loads):
            for role, spec in (members if i % 2 == 0 else members[::-1]):
                samples.append(measure(servers[role], spec, role, pair.key, load, args, run,
                                       use_wrk))
    finally:
        for server in servers.values():
            stop_server(server)


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


def environment(gunicorn_py: str | None, loadgen: str) -> dict:
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
        "loadgen": loadgen, "loadavg_start": round(loadavg(), 2),
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
    p.add_argument("--loads", default="keepalive,close", help="keepalive,close")
    p.add_argument("--duration", type=float, default=8,
                   help="seconds of measured load (whole seconds with wrk) [8]")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up load [2]")
    p.add_argument("--runs", type=int, default=3, help="passes over every pair [3]")
    p.add_argument("--connections", type=int, default=50, help="concurrent connections [50]")
    p.add_argument("--probe-seconds", type=float, default=2,
                   help="length of the connections-served probe [2]")
    p.add_argument("--servers", default="arbiter,gunicorn",
                   help="arbiter,gunicorn (leave one out to measure only the other)")
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
    for name in args.servers:
        if name not in ("arbiter", "gunicorn"):
            p.error(f"--servers: unknown server {name!r}")
    for worker_type in args.types:
        if worker_type not in WORKER_TYPES:
            p.error(f"--types: unknown worker type {worker_type!r} (known: "
                    f"{', '.join(WORKER_TYPES)})")
    for load in args.loads:
        if load not in ("keepalive", "close"):
            p.error(f"--loads: unknown load {load!r}")
    for parser in args.parsers:
        if parser not in ("httptools", "h11", "auto"):
            p.error(f"--parsers: unknown parser {parser!r}")
    if not (args.types and args.parsers and args.servers and args.loads):
        p.error("--types, --parsers, --servers and --loads must not be empty")
    if args.runs < 1 or args.connections < 1 or args.duration <= 0 or args.workers < 1 \
            or args.threads < 1 or args.warmup < 0:
        p.error("--runs, --connections, --duration, --workers and --threads must be positive")
    if args.loadgen != "python" and (args.duration != int(args.duration)
                                     or args.warmup != int(args.warmup)):
        p.error("wrk takes whole seconds: give --duration and --warmup as integers")
    if args.capacity_only and args.capacity < 1:
        p.error("--capacity-only needs --capacity N")
    if args.capacity < 0:
        p.error("--capacity must be positive")
    return args


def compare(args: argparse.Namespace, use_wrk: str | None, gunicorn_py: str | None,
            logdir: Path) -> tuple[list[Sample], list[Pair], dict[tuple[str, str], str]]:
    """Every pair, --runs times; a pair whose server fails is recorded and skipped after."""
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
                run_pair(pair, run, bool((run + i) % 2 == 0), args, use_wrk,
                         gunicorn_py or sys.executable, logdir, samples)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                failures[pair.key] = f"run {run}: {exc}"
                log(f"  {pair.worker_type} ({pair.parser}) FAILED, skipped from now on: {exc}")
                # drop its partial samples of this run: a pair is compared whole or not at all
                samples[:] = [s for s in samples
                              if not ((s.pair_type, s.pair_parser) == pair.key and s.run == run)]
    return samples, pairs, failures


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
    if use_wrk is None and not args.capacity_only:
        log("using the built-in Python load generator (numbers are not comparable with wrk's)")
    need_gunicorn = "gunicorn" in args.servers and not args.capacity_only
    gunicorn_py = gunicorn_python(args.gunicorn_venv) if need_gunicorn else None
    env = environment(gunicorn_py, "wrk" if use_wrk else "python")
    log(f"environment: {env}")
    if env["loadavg_start"] > (os.cpu_count() or 1):
        log(f"the machine is busy (load average {env['loadavg_start']:.1f} on "
            f"{os.cpu_count()} CPUs): expect noisy numbers, trust the ratios more")
    logdir = Path(tempfile.mkdtemp(prefix="arbiter-bench-"))
    log(f"server logs in {logdir}")
    samples: list[Sample] = []
    pairs: list[Pair] = []
    failures: dict[tuple[str, str], str] = {}
    capacity: dict | None = None
    try:
        if not args.capacity_only:
            samples, pairs, failures = compare(args, use_wrk, gunicorn_py, logdir)
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
    cmd = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data = jsonable({
        "command": cmd, "environment": env, "samples": [asdict(s) for s in samples],
        "summary": summarize(samples, pairs, args.loads, failures),
        "failures": {f"{k[0]}/{k[1]}": v for k, v in failures.items()}, "capacity": capacity})
    if args.save:
        Path(args.save).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        log(f"results saved to {args.save} (python scripts/bench.py --report {args.save})")
    return emit(data, args)


def emit(data: dict, args: argparse.Namespace) -> int:
    """Print *data* (as saved) as JSON or as the table; the exit status: 1 if anything failed."""
    samples = [Sample(**{k: float("nan") if v is None else v for k, v in s.items()})
               for s in data["samples"]]
    failures = {(k.split("/", 1)[0], k.split("/", 1)[-1]): v
                for k, v in data["failures"].items()}
    rows = summarize(samples, make_pairs(args), args.loads, failures)
    capacity, env = data.get("capacity"), data["environment"]
    if args.json:
        print(json.dumps(data, indent=2, allow_nan=False))
    else:
        print(f"\n{data['command']}")
        print(f"{env['date']}  nproc={env['nproc']}  {env['cpu']}  Python {env['python']}  "
              f"arbiter {env['arbiter_commit']}  gunicorn {env['gunicorn']}  load: {env['loadgen']}"
              f" -t1 -c{args.connections} -d{args.duration:g}s (warm-up {args.warmup:g}s), "
              f"medians of {args.runs} run(s); load average {env['loadavg_start']:.1f} at the "
              f"start, {_med([s.loadavg for s in samples]):.1f} median during the runs\n")
        if samples or failures:
            print(table(rows))
            print()
            for line in notes(rows, args):
                print(f"* {line}")
        if capacity is not None:
            sys.path.insert(0, str(SCRIPTS_DIR))
            import evented_capacity

            print()
            print(evented_capacity.report(capacity))
    bad = any(r["failure"] for r in rows) or (capacity is not None and not capacity["ok"])
    return 1 if bad else 0


def report_saved(path: str, json_out: bool) -> int:
    """``--report FILE``: the table of a run saved with --save (or printed with --json)."""
    data = json.loads(Path(path).read_text())
    argv = shlex.split(data["command"])[2:]  # "python scripts/bench.py ARGS..."
    args = parse_args(argv)
    args.json = json_out
    return emit(data, args)


if __name__ == "__main__":
    sys.exit(main())
