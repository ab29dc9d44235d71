#!/usr/bin/env python3
"""Do N arbiter workers share the load? Connections and requests per worker, and 1w vs Nw req/s.

This script owns the load-balance measurement across the worker processes of
one arbiter master (it measures, it does not tune). For each worker type
(default ``evented,pooled,threaded``) and ``--runs`` times (default 10), with a
freshly started server every run (how connections spread at connect time is
the point):

* arbiter is started on 127.0.0.1 (a free port) from a generated YAML config:
  ``-w N`` workers (default 2), ``scripts/hello.py`` as the app, ``threads: 4``
  for ``pooled``, ``max_connections`` >= the load's connections, and an
  ``admin_bind`` on another free 127.0.0.1 port; it is polled through the
  admin ``/status`` until all N workers of the generation are ready;
* ``wrk -t1 -cC -dDs`` (keep-alive, C >= 10 x N, default max(50, 10 x N))
  runs against it; at 1/4, 1/2 and 3/4 of the run the ESTABLISHED server-side
  connections (local port = the server's port, state 01) are matched by socket
  inode against each worker's ``/proc/PID/fd``. The socket table is the
  kernel's, read by default through a sock_diag netlink dump asking for
  ESTABLISHED sockets only: ``/proc/net/tcp`` also lists every TIME_WAIT
  socket, and with tens of thousands of them (a box that benchmarks) one read
  costs ~0.5 s of CPU in the middle of the measured run. ``--socket-table
  proc`` reads ``/proc/net/tcp`` and ``tcp6`` instead (the same sockets);
  the half-way sample is the verdict's (the others show whether connections
  moved); a sample not both begun and ended while wrk still ran is dropped
  (a starved machine can be that late), and the verdict takes an earlier one;
* each worker's ``requests`` in ``/status`` is read before and after the load;
* a run passes when every worker holds C/N +- 25 % of the connections and
  served total/N +- 25 % of the requests;
* the same load is run against a 1-worker server each run too (the order of
  the two alternates run by run), for the throughput ratio Nw / 1w of the
  medians of the runs' req/s. The goal is >= 1.7x with 2 workers on a machine
  with the cores; on a 2-core machine that wrk shares, expect less.

Prints a markdown table (``--json``: one JSON object instead). Exit status 0
when every run balanced, 1 when one did not, 2 when a server or wrk failed.
Every process started (servers and wrk) is stopped by pid -- TERM, KILL after
a timeout, descendants too -- also on errors, Ctrl-C and SIGTERM. Server
start/stop and the /proc helpers come from ``scripts/bench.py``.

Usage::

    python scripts/balance.py [--types evented,pooled,threaded] [--workers 2]
        [--connections 50] [--duration 5] [--runs 10] [--tolerance 0.25]
        [--socket-table netlink|proc] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (scripts/bench.py: process helpers, server spawn/stop, wrk parsing)

HOST = "127.0.0.1"
WORKER_TYPES = ("forked", "preforked", "threaded", "pooled", "evented")
TCP_ESTABLISHED = "01"


def log(msg: str) -> None:
    bench.log(msg)


# --------------------------------------------------------------------------- servers


@dataclass
class Arbiter:
    """A running arbiter master started from a generated config, with its admin port."""

    server: bench.Server
    admin_port: int
    config: Path
    error_log: Path

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.proc.pid


def start_arbiter(worker_type: str, workers: int, logdir: Path, *, connections: int = 1000,
                  threads: int = 4, extra: dict | None = None, tag: str = "") -> Arbiter:
    """Write a server.yaml for 127.0.0.1 and start ``python -m arbiter -c`` it (not yet ready)."""
    port, admin_port = bench.free_port(), bench.free_port()
    while admin_port == port:
        admin_port = bench.free_port()
    name = f"{worker_type}-{workers}w{tag}-{port}"
    error_log = logdir / f"{name}.error.log"
    cfg: dict = {
        "app": bench.APP,
        "bind": [f"{HOST}:{port}"],
        "admin_bind": f"{HOST}:{admin_port}",
        "workers": workers,
        "worker_type": worker_type,
        "http_parser": "httptools",
        "log": {"level": "info", "error_log": str(error_log)},
    }
    if worker_type == "pooled":
        cfg["threads"] = threads
    if worker_type != "preforked":
        cfg["max_connections"] = max(1000, connections)
    cfg.update(extra or {})
    config = logdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "arbiter", "-c", str(config)]
    server = bench.spawn("arbiter", worker_type, f"{workers}w{tag}", port, cmd, logdir)
    return Arbiter(server, admin_port, config, error_log)


def status(arb: Arbiter, timeout: float = 2.0) -> dict:
    """The admin ``/status`` JSON (what ``arbiter ctl status --json`` prints)."""
    url = f"http://{HOST}:{arb.admin_port}/status"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def serving_workers(st: dict) -> list[dict]:
    """The ready workers of the current generation, by worker number."""
    gen = st["master"]["generation"]
    return sorted((w for w in st["workers"] if w["generation"] == gen and w["ready"]),
                  key=lambda w: w["number"])


def settled(st: dict, workers: int) -> bool:
    """Ready, not reloading, exactly *workers* workers and all of them serving."""
    return (st["master"]["ready"] and not st["master"]["reloading"]
            and len(st["workers"]) == workers and len(serving_workers(st)) == workers)


def wait_settled(arb: Arbiter, workers: int, timeout: float = 30.0) -> dict:
    """Poll ``/status`` until :func:`settled`; the status then. Raises on exit or timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if arb.server.proc.poll() is not None:
            raise RuntimeError(f"{arb.server.label} exited with code "
                               f"{arb.server.proc.returncode}:\n{bench.tail(arb.error_log)}\n"
                               f"{bench.tail(arb.server.logfile)}")
        try:
            st = status(arb)
            if settled(st, workers):
                return st
            last = f"{len(serving_workers(st))}/{workers} workers serving"
        except (OSError, ValueError) as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(f"{arb.server.label} not settled within {timeout:.0f}s ({last}):\n"
                       f"{bench.tail(arb.error_log)}")


def stop_arbiter(arb: Arbiter) -> None:
    bench.stop_server(arb.server)


# --------------------------------------------------------------------------- wrk


WRKS: list[Wrk] = []


class Wrk:
    """A ``wrk`` run in the background, tracked so it is stopped by pid on any exit."""

    def __init__(self, wrk: str, port: int, conns: int, seconds: float,
                 script: Path | None = None) -> None:
        # wrk takes whole seconds only
        self.cmd = [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s"]
        if script is not None:
            self.cmd += ["-s", str(script)]
        self.cmd.append(f"http://{HOST}:{port}/")
        self.seconds = seconds
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        WRKS.append(self)

    def running(self) -> bool:
        return self.proc.poll() is None

    def _result(self, out: str, err: str) -> bench.LoadResult:
        if self in WRKS:
            WRKS.remove(self)
        res = bench.parse_wrk(out)
        if self.proc.returncode != 0 or not res.requests:
            msg = (err.strip() or out.strip()).splitlines()[:3]
            raise RuntimeError(f"wrk failed ({self.proc.returncode}): {' / '.join(msg)}")
        return res

    def finish(self) -> bench.LoadResult:
        """Wait for the run's end; its parsed output."""
        out, err = self.proc.communicate(timeout=self.seconds + 60)
        return self._result(out, err)

    def interrupt(self) -> bench.LoadResult:
        """End the run now with SIGINT (wrk then prints its totals); its parsed output."""
        if self.running():
            self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return self._result(out, err)

    def stop(self) -> None:
        """TERM by pid, KILL after 5 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in WRKS:
            WRKS.remove(self)


def stop_everything() -> None:
    """Every wrk and every server still running, each by pid; Ctrl-C is ignored meanwhile."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for w in list(WRKS):
            w.stop()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    bench.stop_all()


def wait_until(when: float, wrk: Wrk) -> None:
    """Wait for the monotonic time *when*, returning early if wrk ended."""
    while wrk.running() and time.monotonic() < when:
        time.sleep(min(0.02, max(0.0, when - time.monotonic())))


# --------------------------------------------------------------------------- /proc sockets


def established_inodes_proc(port: int) -> set[int]:
    """Inodes of ESTABLISHED TCP sockets (v4 and v6) whose local port is *port*, from the text
    tables ``/proc/net/tcp`` and ``/proc/net/tcp6``."""
    inodes: set[int] = set()
    needle = b":%04X " % port  # the port as the tables write it; exact fields checked below
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, "rb") as f:
                data = f.read()
        except OSError:
            continue
        for line in data.split(b"\n")[1:]:
            if needle not in line:
                continue
            fields = line.split()
            if len(fields) >= 10 and fields[3] == TCP_ESTABLISHED.encode() \
                    and int(fields[1].rsplit(b":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


# sock_diag (linux/sock_diag.h, linux/inet_diag.h): the same table /proc/net/tcp prints, asked
# for ESTABLISHED sockets only, so the kernel skips the TIME_WAIT ones
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSG_HDR = struct.Struct("=IHHII")
INET_DIAG_REQ_V2 = struct.Struct("=BBBBI48s")  # family, protocol, ext, pad, states, sockid
INET_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # ... sport, dport, ..., uid, inode


def established_inodes_netlink(port: int) -> set[int]:
    """Inodes of ESTABLISHED TCP sockets (v4 and v6) whose local port is *port*, from a
    NETLINK_SOCK_DIAG dump. Raises OSError where netlink is not available."""
    inodes: set[int] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            req = INET_DIAG_REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 0,
                                        1 << int(TCP_ESTABLISHED, 16), b"\0" * 48)
            nl.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(req), SOCK_DIAG_BY_FAMILY,
                                   NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + req)
            done = False
            while not done:
                data = nl.recv(1 << 16)
                offset = 0
                while offset + NLMSG_HDR.size <= len(data):
                    length, kind, _, _, _ = NLMSG_HDR.unpack_from(data, offset)
                    if length < NLMSG_HDR.size:
                        raise OSError("sock_diag: malformed netlink message")
                    if kind == NLMSG_DONE:
                        done = True
                        break
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + NLMSG_HDR.size)[0]
                        raise OSError(code, f"sock_diag: {os.strerror(code)}")
                    if kind == SOCK_DIAG_BY_FAMILY:
                        msg = INET_DIAG_MSG.unpack_from(data, offset + NLMSG_HDR.size)
                        if int.from_bytes(msg[4], "big") == port:
                            inodes.add(msg[-1])
                    offset += (length + 3) & ~3
    return inodes


SOCKET_TABLE = "netlink"  # or "proc"; --socket-table


def established_inodes(port: int) -> set[int]:
    """Inodes of ESTABLISHED TCP sockets whose local port is *port* (the server's side of the
    connections), from sock_diag or, with ``--socket-table proc`` or without netlink, from
    /proc/net/tcp and tcp6."""
    global SOCKET_TABLE
    if SOCKET_TABLE == "netlink":
        try:
            return established_inodes_netlink(port)
        except OSError as exc:
            log(f"sock_diag failed ({exc}): reading /proc/net/tcp and tcp6 instead")
            SOCKET_TABLE = "proc"
    return established_inodes_proc(port)


socket_inodes = bench.socket_inodes  # inodes of the sockets a pid has open


def connections_by_pid(port: int, pids: list[int]) -> tuple[dict[int, int], int]:
    """ESTABLISHED server-side connections on *port* held by each pid, and those nobody holds
    (not accepted yet, or held by another process)."""
    conns = established_inodes(port)
    counts = {}
    held: set[int] = set()
    for pid in pids:
        mine = conns & socket_inodes(pid)
        counts[pid] = len(mine)
        held |= mine
    return counts, len(conns - held)


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    worker_type: str
    run: int
    workers: int
    connections: int
    rps: float = 0.0
    requests: int = 0
    socket_errors: int = 0
    non2xx: int = 0
    pids: list[int] = field(default_factory=list)  # by worker number
    conn_samples: list[list[int]] = field(default_factory=list)  # at 1/4, 1/2, 3/4 (while wrk ran)
    unowned: list[int] = field(default_factory=list)  # per sample
    sampled_at: list[float] = field(default_factory=list)  # seconds after wrk started
    conn_split: list[int] = field(default_factory=list)  # the half-way sample
    req_split: list[int] = field(default_factory=list)  # /status requests during the load
    conn_ok: bool = True
    req_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.conn_ok and self.req_ok


def within(split: list[int], tolerance: float) -> bool:
    """Every share within fair +- tolerance x fair (fair = total / len)."""
    if not split:
        return False
    fair = sum(split) / len(split)
    return fair > 0 and all(abs(x - fair) <= tolerance * fair for x in split)


def deviation(split: list[int]) -> float:
    """The largest relative distance of a share from the fair share (0 = even)."""
    fair = sum(split) / len(split) if split else 0
    return max(abs(x - fair) / fair for x in split) if fair else float("inf")


def measure(worker_type: str, run: int, workers: int, args: argparse.Namespace, wrk_bin: str,
            logdir: Path) -> Run:
    """Start a fresh server, load it, sample the split, stop it."""
    res = Run(worker_type, run, workers, args.connections)
    arb = start_arbiter(worker_type, workers, logdir, connections=args.connections,
                        tag=f"-r{run}")
    try:
        before = wait_settled(arb, workers)
        serving = serving_workers(before)
        res.pids = [w["pid"] for w in serving]
        start_requests = {w["pid"]: w["requests"] for w in serving}
        wrk = Wrk(wrk_bin, arb.port, args.connections, args.duration)
        length = max(1, round(args.duration))
        for fraction in (0.25, 0.5, 0.75):
            wait_until(wrk.started + fraction * length, wrk)
            if not wrk.running():
                break  # the load is over: no sample (connections are being closed)
            counts, unowned = connections_by_pid(arb.port, res.pids)
            if not wrk.running():
                break  # wrk ended while /proc was read: the sample may mix both states
            res.conn_samples.append([counts[p] for p in res.pids])
            res.unowned.append(unowned)
            res.sampled_at.append(round(time.monotonic() - wrk.started, 3))
        load = wrk.finish()
        after = status(arb)
    finally:
        stop_arbiter(arb)
    res.rps, res.requests = load.rps, load.requests
    res.socket_errors, res.non2xx = load.socket_errors, load.non2xx
    final = {w["pid"]: w["requests"] for w in after["workers"]}
    res.req_split = [final.get(p, 0) - start_requests[p] for p in res.pids]
    # the half-way sample; if the machine was too slow to take it while wrk ran, an earlier one
    res.conn_split = res.conn_samples[min(1, len(res.conn_samples) - 1)] \
        if res.conn_samples else []
    if workers > 1:
        res.conn_ok = within(res.conn_split, args.tolerance) and sum(res.conn_split) > 0
        res.req_ok = within(res.req_split, args.tolerance)
    moved = "" if all(s == res.conn_split for s in res.conn_samples) else \
        f" (samples {' '.join('/'.join(map(str, s)) for s in res.conn_samples)})"
    late = "" if len(res.conn_samples) == 3 else f" ({len(res.conn_samples)}/3 samples in time)"
    log(f"  {worker_type} {workers}w run {run + 1}: {load.rps:.0f} req/s, connections "
        f"{'/'.join(map(str, res.conn_split)) or '-'}{moved}{late}, "
        f"unheld {max(res.unowned, default=0)}, requests "
        f"{'/'.join(map(str, res.req_split))}, errors {load.socket_errors}, "
        f"non-2xx {load.non2xx}" + ("" if res.ok else "  UNBALANCED"))
    return res


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(worker_type: str, runs: list[Run], workers: int) -> dict:
    multi = [r for r in runs if r.workers == workers]
    single = [r for r in runs if r.workers == 1]
    worst_conn = max(multi, key=lambda r: deviation(r.conn_split), default=None)
    worst_req = max(multi, key=lambda r: deviation(r.req_split), default=None)
    rps_n = median([r.rps for r in multi])
    rps_1 = median([r.rps for r in single]) if single else float("nan")
    return {
        "type": worker_type,
        "runs": len(multi),
        "passed": sum(r.ok for r in multi),
        "conn_passed": sum(r.conn_ok for r in multi),
        "req_passed": sum(r.req_ok for r in multi),
        "worst_conn_split": worst_conn.conn_split if worst_conn else [],
        "worst_req_split": worst_req.req_split if worst_req else [],
        "conn_splits": [r.conn_split for r in multi],
        "req_splits": [r.req_split for r in multi],
        "max_unheld": max((max(r.unowned, default=0) for r in multi), default=0),
        "moved_runs": sum(any(s != r.conn_split for s in r.conn_samples) for r in multi),
        "late_runs": sum(len(r.conn_samples) < 3 for r in multi),
        "zero_workers": sum(0 in r.conn_split for r in multi),
        "socket_errors": sum(r.socket_errors for r in runs),
        "non2xx": sum(r.non2xx for r in runs),
        "rps_1w": rps_1,
        "rps_nw": rps_n,
        "ratio": rps_n / rps_1 if rps_1 == rps_1 and rps_1 > 0 else float("nan"),
    }


def _pcts(split: list[int]) -> str:
    total = sum(split)
    return "/".join(f"{100 * x / total:.0f}" for x in split) if total else "-"


def _join(split: list[int]) -> str:
    return "/".join(map(str, split)) if split else "-"


def table(rows: list[dict], workers: int, connections: int) -> str:
    n = workers
    lines = [
        f"| type | runs passed | conn passed | req passed | worst conn split | worst req split "
        f"(%) | conn split per run (of {connections}) | req/s 1w | req/s {n}w | ratio {n}w/1w |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['type']} | {r['passed']}/{r['runs']} | {r['conn_passed']}/{r['runs']} "
            f"| {r['req_passed']}/{r['runs']} | {_join(r['worst_conn_split'])} "
            f"| {_pcts(r['worst_req_split'])} | {' '.join(_join(s) for s in r['conn_splits'])} "
            f"| {r['rps_1w']:.0f} | {r['rps_nw']:.0f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def notes(rows: list[dict], args: argparse.Namespace) -> list[str]:
    cpus = os.cpu_count() or 1
    out = [f"Load average {args.load_before:.1f} before, {bench.loadavg():.1f} after, on {cpus} "
           f"CPU(s)" + (" (other work was running: noisy numbers)"
                        if max(args.load_before, bench.loadavg()) > cpus else "") + ".",
           f"{args.workers} workers, wrk -t1 -c{args.connections} -d{round(args.duration)}s "
           f"keep-alive, {args.runs} fresh servers per type; pass = every worker within "
           f"+-{100 * args.tolerance:.0f}% of the fair share of connections (half-way sample) "
           f"and of requests (/status)."]
    if cpus <= args.workers:
        out.append(f"This machine has {cpus} CPU(s), shared by wrk and the workers: the "
                   f"{args.workers}w/1w ratio cannot reach {args.workers}x here (goal >= 1.7x "
                   f"for 2 workers needs the cores).")
    for r in rows:
        if r["zero_workers"]:
            out.append(f"{r['type']}: a worker held 0 connections in {r['zero_workers']} run(s).")
        if r["late_runs"]:
            out.append(f"{r['type']}: in {r['late_runs']} run(s) a sample came too late (wrk "
                       f"had ended; the machine was slow) and was dropped.")
        if r["moved_runs"]:
            out.append(f"{r['type']}: connections moved between samples in "
                       f"{r['moved_runs']} run(s) (reconnects).")
        if r["max_unheld"]:
            out.append(f"{r['type']}: up to {r['max_unheld']} established connection(s) held "
                       f"by no worker in a sample (not accepted yet).")
        if r["socket_errors"] or r["non2xx"]:
            out.append(f"{r['type']}: wrk reported {r['socket_errors']} socket error(s), "
                       f"{r['non2xx']} non-2xx.")
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--types", default="evented,pooled,threaded",
                   help="comma-separated worker types (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="N workers (default: %(default)s)")
    p.add_argument("--connections", type=int, default=None,
                   help="wrk connections C, at least 10 x N (default: max(50, 10 x N))")
    p.add_argument("--duration", type=float, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--runs", type=int, default=10, help="fresh servers per type (default 10)")
    p.add_argument("--tolerance", type=float, default=0.25,
                   help="allowed distance from the fair share (default 0.25 = +-25%%)")
    p.add_argument("--socket-table", choices=("netlink", "proc"), default="netlink",
                   help="where the ESTABLISHED sockets are read: a sock_diag netlink dump "
                        "(default; the kernel filters by state) or /proc/net/tcp and tcp6 "
                        "(slow when many TIME_WAIT sockets are around)")
    p.add_argument("--json", action="store_true", help="print one JSON object, not the table")
    args = p.parse_args(argv)
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    for t in args.types:
        if t not in WORKER_TYPES:
            p.error(f"unknown worker type {t!r} (one of {', '.join(WORKER_TYPES)})")
    if args.workers < 1 or args.runs < 1:
        p.error("--workers and --runs must be >= 1")
    if args.connections is None:
        args.connections = max(50, 10 * args.workers)
    if args.connections < 10 * args.workers:
        p.error(f"--connections must be >= 10 x workers = {10 * args.workers}")
    return args


def find_wrk() -> str | None:
    """wrk's path, or None (said in the log) when it is not installed."""
    wrk_bin = shutil.which("wrk")
    if wrk_bin is None:
        log("wrk is not installed (Debian: apt-get install wrk)")
    return wrk_bin


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk_bin = find_wrk()
    if wrk_bin is None:
        return 2
    global SOCKET_TABLE
    SOCKET_TABLE = args.socket_table
    bench.install_signal_handlers()
    args.load_before = bench.loadavg()
    logdir = Path(tempfile.mkdtemp(prefix="arbiter-balance-"))
    log(f"server configs and logs in {logdir}")
    rows: list[dict] = []
    runs: list[Run] = []
    try:
        for worker_type in args.types:
            mine: list[Run] = []
            for run in range(args.runs):
                shapes = [args.workers] if args.workers == 1 else [args.workers, 1]
                if run % 2:
                    shapes.reverse()  # alternate which goes first, so drift hits both
                for workers in shapes:
                    mine.append(measure(worker_type, run, workers, args, wrk_bin, logdir))
            runs += mine
            rows.append(summarize(worker_type, mine, args.workers))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except RuntimeError as exc:
        log(f"failed: {exc}")
        return 2
    finally:
        stop_everything()
    if args.json:
        data = {"command": "python scripts/balance.py " + " ".join(sys.argv[1:]),
                "cpus": os.cpu_count(), "workers": args.workers,
                "connections": args.connections, "duration": round(args.duration),
                "tolerance": args.tolerance, "loadavg_before": args.load_before,
                "loadavg_after": bench.loadavg(), "summary": rows,
                "runs": [asdict(r) | {"ok": r.ok} for r in runs]}
        print(json.dumps(bench.jsonable(data), indent=2, allow_nan=False))
    else:
        print(table(rows, args.workers, args.connections))
        print()
        for line in notes(rows, args):
            print(f"- {line}")
    return 0 if all(r["passed"] == r["runs"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
