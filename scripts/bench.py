#!/usr/bin/env python3
"""Benchmark arbiter against gunicorn (sync, 2 workers) on a hello-world WSGI app.

This script owns the arbiter-vs-gunicorn benchmark; it measures, it does not
tune.  It is modelled on the peer baseline (shared bench/README.md, peers.sh):

* every server is started on 127.0.0.1 on a free port, with ``scripts/hello.py``
  as the app, and is polled until it answers an HTTP request;
* a 2 s warm-up, then ``wrk -t1 -c50 -d8s --latency`` (``-H "Connection: close"``
  for the ``close`` load); without wrk, a built-in closed-loop Python load
  generator (selectors, one thread) runs instead;
* server CPU per request: utime+stime (+ reaped children's) of the server's
  whole process tree, read from /proc before and after the measured run,
  divided by the requests completed;
* "connections served": a separate probe opens 50 connections at once, each
  sending requests in a loop for ~2 s, and counts the connections that got at
  least one response (plus the worst latency, including requests still
  unanswered at the end) -- this is what exposes a one-connection-at-a-time
  keep-alive worker starving the others;
* each (server, parser, load) is run ``--runs`` times, servers alternating
  (order reversed every other run against drift); the table shows medians and
  the arbiter/gunicorn ratios (median of the per-run ratios).

Every server started is stopped by pid (TERM, then KILL after a timeout, its
descendants too), also on errors and Ctrl-C.

Usage::

    python scripts/bench.py [--duration 8] [--runs 3] [--gunicorn-venv PATH]
        [--parsers httptools,h11] [--loads keepalive,close] [--connections 50]
        [--servers arbiter,gunicorn] [--loadgen auto|wrk|python] [--json]
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


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the ``(comm)`` field (index 0 = state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """All live descendants of *root*, found by walking /proc by parent pid."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _proc_stat(int(entry))
        if st is not None:
            children.setdefault(int(st[1]), []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu_ticks(root: int) -> int:
    """utime+stime+cutime+cstime of *root* and all its descendants, in clock ticks.

    The reaped-children fields make a worker that exits (and is reaped by its
    master) mid-run keep its CPU in the total.
    """
    total = 0
    for pid in [root, *descendants(root)]:
        st = _proc_stat(pid)
        if st is not None:  # after comm: [11]=utime [12]=stime [13]=cutime [14]=cstime
            total += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return total


def alive(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


@dataclass
class Server:
    name: str  # "arbiter" | "gunicorn"
    parser: str  # arbiter: httptools | h11; gunicorn: "-"
    port: int
    proc: subprocess.Popen
    logfile: Path


RUNNING: list[Server] = []


def stop_server(server: Server, timeout: float = 15.0) -> None:
    """TERM the master by pid, KILL it after *timeout*, then any descendant left."""
    proc = server.proc
    kids = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"  {server.name} pid {proc.pid} still alive after {timeout:.0f}s: SIGKILL")
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
                f"{server.name} exited with code {server.proc.returncode}:\n{tail(server.logfile)}"
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
    raise RuntimeError(f"{server.name} did not answer within {timeout:.0f}s ({last}):\n"
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


def start_server(name: str, parser: str, workers: int, worker_type: str, gunicorn_py: str,
                 logdir: Path) -> Server:
    port = free_port()
    if name == "arbiter":
        cmd = [sys.executable, "-m", "arbiter", "-b", f"127.0.0.1:{port}", "-w", str(workers),
               "-k", worker_type, "--http-parser", parser, "--log-level", "warning", APP]
    else:
        cmd = [gunicorn_py, "-m", "gunicorn", "-w", str(workers), "-k", "sync",
               "-b", f"127.0.0.1:{port}", "--log-level", "warning", "--no-control-socket",
               "--chdir", str(SCRIPTS_DIR), APP]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SCRIPTS_DIR), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    for key in list(env):
        if key.startswith("ARBITER_") or key in ("WEB_CONCURRENCY", "PORT"):
            del env[key]  # don't let the caller's environment change what is measured
    logfile = logdir / f"{name}-{parser}-{port}.log"
    with open(logfile, "wb") as out:
        # own session: a Ctrl-C in the terminal reaches only us; we stop the server by pid
        proc = subprocess.Popen(cmd, cwd=SCRIPTS_DIR, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, parser, port, proc, logfile)
    RUNNING.append(server)
    log(f"started {name} ({parser}) pid {proc.pid} on 127.0.0.1:{port}: {' '.join(cmd)}")
    return server


# --------------------------------------------------------------------------- load: wrk


@dataclass
class LoadResult:
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    socket_errors: int = 0
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
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        res.non2xx = int(m.group(1))
    return res


def run_wrk(wrk: str, port: int, conns: int, seconds: float, close: bool) -> LoadResult:
    cmd = [wrk, "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()}")
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
    server: str
    parser: str
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
    loadgen: str


def measure(server: Server, load: str, args: argparse.Namespace, run: int,
            use_wrk: str | None) -> Sample:
    close = load == "close"
    # warm-up with the same load
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
    cpu_us = (t1 - t0) * 1e6 / CLK_TCK / res.requests if res.requests else float("nan")
    probe = probe_connections(server.port, args.connections, args.probe_seconds, close)
    sample = Sample(run, server.name, server.parser, load, res.rps, res.p99_ms, cpu_us,
                    res.requests, res.socket_errors, res.non2xx, probe.served, probe.connections,
                    probe.max_ms, "wrk" if use_wrk else "python")
    log(f"  {server.name:8} {server.parser:9} {load:9} {res.rps:9.0f} req/s  p99 "
        f"{res.p99_ms:7.2f} ms  {cpu_us:6.0f} us/req  served {probe.served}/{probe.connections}"
        f"  errs {res.socket_errors}+{res.non2xx}")
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.name} died during the run:\n{tail(server.logfile)}")
    return sample


def configs(args: argparse.Namespace) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in args.servers:
        if name == "arbiter":
            out += [("arbiter", p) for p in args.parsers]
        else:
            out.append(("gunicorn", "-"))
    # interleave so that gunicorn sits between arbiter configurations
    arb = [c for c in out if c[0] == "arbiter"]
    gun = [c for c in out if c[0] == "gunicorn"]
    mixed: list[tuple[str, str]] = []
    while arb or gun:
        if arb:
            mixed.append(arb.pop(0))
        if gun:
            mixed.append(gun.pop(0))
    return mixed


# --------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    vals = [v for v in values if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


def summarize(samples: list[Sample]) -> list[dict]:
    rows: list[dict] = []
    keys: list[tuple[str, str, str]] = []
    for s in samples:
        if (s.server, s.parser, s.load) not in keys:
            keys.append((s.server, s.parser, s.load))
    for key in keys:
        ss = [s for s in samples if (s.server, s.parser, s.load) == key]
        row = {
            "server": key[0], "parser": key[1], "load": key[2], "runs": len(ss),
            "rps": _med([s.rps for s in ss]),
            "p99_ms": _med([s.p99_ms for s in ss]),
            "cpu_us_per_req": _med([s.cpu_us_per_req for s in ss]),
            "served": min(s.served for s in ss),
            "connections": ss[0].connections,
            "probe_max_ms": max(s.probe_max_ms for s in ss),
            "errors": _med([s.socket_errors + s.non2xx for s in ss]),
            "rps_ratio": None, "cpu_ratio": None,
        }
        if key[0] == "arbiter":
            rr, cr = [], []
            for s in ss:
                g = [x for x in samples if x.server == "gunicorn" and x.load == s.load
                     and x.run == s.run]
                if g and g[0].rps and g[0].cpu_us_per_req:
                    rr.append(s.rps / g[0].rps)
                    cr.append(s.cpu_us_per_req / g[0].cpu_us_per_req)
            if rr:
                row["rps_ratio"], row["cpu_ratio"] = _med(rr), _med(cr)
        rows.append(row)
    rows.sort(key=lambda r: (r["load"] != "keepalive", r["load"], r["server"] != "gunicorn",
                             r["parser"]))
    return rows


def _ratio(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else ""


def table(rows: list[dict]) -> str:
    head = ["server", "parser", "load", "req/s", "p99 ms", "CPU us/req", "served",
            "probe max ms", "errors", "req/s ratio", "CPU ratio"]
    lines = []
    for r in rows:
        lines.append([
            r["server"], r["parser"], r["load"], f"{r['rps']:,.0f}", f"{r['p99_ms']:.2f}",
            f"{r['cpu_us_per_req']:.0f}", f"{r['served']}/{r['connections']}",
            f"{r['probe_max_ms']:.0f}", f"{r['errors']:.0f}", _ratio(r["rps_ratio"]),
            _ratio(r["cpu_ratio"]),
        ])
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(x) for x in lines]
    return "\n".join(out)


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
        "loadgen": loadgen,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8, help="seconds of measured load [8]")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up load [2]")
    p.add_argument("--runs", type=int, default=3, help="passes over every configuration [3]")
    p.add_argument("--connections", type=int, default=50, help="concurrent connections [50]")
    p.add_argument("--probe-seconds", type=float, default=2,
                   help="length of the connections-served probe [2]")
    p.add_argument("--servers", default="arbiter,gunicorn", help="arbiter,gunicorn")
    p.add_argument("--parsers", default="httptools,h11", help="arbiter parsers [httptools,h11]")
    p.add_argument("--loads", default="keepalive,close", help="keepalive,close")
    p.add_argument("--workers", type=int, default=2, help="workers per server [2]")
    p.add_argument("--worker-type", default="preforked", help="arbiter worker type [preforked]")
    p.add_argument("--gunicorn-venv", default=None,
                   help=f"venv with gunicorn (made if missing) [this interpreter if it has "
                        f"gunicorn, else {DEFAULT_VENV}]")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                   help="wrk, the built-in Python generator, or wrk if installed [auto]")
    p.add_argument("--json", action="store_true", help="print JSON (samples + summary) to stdout")
    args = p.parse_args(argv)
    def split(s: str) -> list[str]:
        return [x.strip() for x in s.split(",") if x.strip()]

    args.servers, args.parsers, args.loads = split(args.servers), split(args.parsers), split(args.loads)
    for name in args.servers:
        if name not in ("arbiter", "gunicorn"):
            p.error(f"--servers: unknown server {name!r}")
    for load in args.loads:
        if load not in ("keepalive", "close"):
            p.error(f"--loads: unknown load {load!r}")
    for parser in args.parsers:
        if parser not in ("httptools", "h11", "auto"):
            p.error(f"--parsers: unknown parser {parser!r}")
    if args.runs < 1 or args.connections < 1 or args.duration <= 0:
        p.error("--runs, --connections and --duration must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if args.loadgen == "wrk" and not wrk:
        log("wrk not found")
        return 1
    use_wrk = wrk if args.loadgen != "python" else None
    if use_wrk is None:
        log("using the built-in Python load generator (numbers are not comparable with wrk's)")
    gunicorn_py = gunicorn_python(args.gunicorn_venv) if "gunicorn" in args.servers else None
    env = environment(gunicorn_py, "wrk" if use_wrk else "python")
    log(f"environment: {env}")
    samples: list[Sample] = []
    logdir = Path(tempfile.mkdtemp(prefix="arbiter-bench-"))
    order = configs(args)
    try:
        for run in range(1, args.runs + 1):
            for name, parser in (order if run % 2 else order[::-1]):
                server = start_server(name, parser, args.workers, args.worker_type,
                                      gunicorn_py or sys.executable, logdir)
                try:
                    wait_ready(server)
                    for load in args.loads:
                        samples.append(measure(server, load, args, run, use_wrk))
                finally:
                    stop_server(server)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except RuntimeError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        for server in list(RUNNING):
            stop_server(server)
    rows = summarize(samples)
    cmd = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.json:
        print(json.dumps({"command": cmd, "environment": env,
                          "samples": [asdict(s) for s in samples], "summary": rows}, indent=2))
    else:
        print(f"\n{cmd}")
        print(f"{env['date']}  nproc={env['nproc']}  {env['cpu']}  Python {env['python']}  "
              f"arbiter {env['arbiter_commit']}  gunicorn {env['gunicorn']}  load: {env['loadgen']}"
              f" -t1 -c{args.connections} -d{args.duration:g}s (warm-up {args.warmup:g}s), "
              f"medians of {args.runs} run(s)\n")
        print(table(rows))
        print(
            "\nserved = connections (of the probe's, each sending requests for "
            f"{args.probe_seconds:g}s) that got >= 1 response, worst run; probe max ms = worst "
            "latency seen by the probe, unanswered requests included; errors = socket errors + "
            "non-2xx/3xx (median); ratios = arbiter / gunicorn sync, median of per-run ratios "
            "(noise band ~0.83-1.17); CPU us/req = server process tree CPU / requests."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
