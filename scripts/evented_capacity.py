#!/usr/bin/env python3
"""How many concurrent keep-alive connections one arbiter ``evented`` worker holds, and its RSS.

The floor (issue 3): 10,000 concurrent connections in one worker, worker RSS
under 150 MB.

What it does:

1. starts ``python -m arbiter -b 127.0.0.1:PORT -w 1 -k evented
   --max-connections N+100 --keepalive K --http-parser P --log-level warning
   hello:app`` (``--keepalive`` long enough that an idle connection is not
   closed by policy while the test holds it -- the default, 5 s, is a
   timeout, not a capacity limit), waits until it answers, and reads the
   idle worker's RSS;
2. raises this process's RLIMIT_NOFILE soft limit towards the hard limit (the
   server was started before, with the limits it inherits from the caller);
3. from one thread, with non-blocking sockets and a selector, opens N
   connections -- at most ``--window`` of them connecting or awaiting their
   response at a time, so the listen backlog never overflows -- and on each
   sends one ``GET /`` and reads the whole response, then keeps the
   connection open (still registered for reading, so a server-side close is
   seen at once); "time to establish" runs from the first connect() to the
   last first response;
4. holds them all ``--hold`` seconds, then reads the worker's VmRSS/VmHWM, its
   open fds and threads, and times a request on a fresh connection;
5. verifies the connections are still open and served: a second request on
   every held connection (``--verify all``) or on a random sample, again at
   most ``--window`` in flight;
6. closes the client sockets and stops the server by pid (also on errors,
   Ctrl-C and SIGTERM).

A connection counts as "held" when it got its first response, was not
closed by the server during the hold, and (if it was in the verification
sample) answered the second request.  Every failure is counted with its
reason (connect error, reset, EOF, timeout, non-200, "Connection: close").

``--port P --server-pid PID`` measures a server started elsewhere (no start,
no stop; the RSS read is PID's own), to try the client on another server.

Usage::

    python scripts/evented_capacity.py [N=10000] [--worker-type evented]
        [--workers 1] [--window 500] [--hold 5] [--verify all|K]
        [--keepalive 300] [--timeout 120] [--http-parser httptools]
        [--port P --server-pid PID] [--json]

``python scripts/bench.py --capacity N`` runs the same benchmark after the
worker-type comparison.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import random
import re
import resource
import selectors
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (scripts/bench.py: process helpers, server start/stop)

FLOOR_CONNECTIONS = 10_000
FLOOR_RSS_MB = 150.0
FD_SPARE = 64  # fds this process needs besides the client sockets

CONNECTING, SENDING, READING, HELD, DEAD = range(5)
STATE_NAMES = {CONNECTING: "connecting", SENDING: "sending", READING: "awaiting response"}


def log(msg: str) -> None:
    bench.log(msg)


# --------------------------------------------------------------------------- client


@dataclass
class Conn:
    index: int
    sock: socket.socket
    state: int = CONNECTING
    out: bytes = b""
    buf: bytearray = field(default_factory=bytearray)
    started: float = 0.0
    responses: int = 0


class Client:
    """N keep-alive connections from one thread: non-blocking sockets and an epoll selector."""

    def __init__(self, port: int, window: int) -> None:
        self.port = port
        self.window = window
        self.request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.failures: Counter[str] = Counter()
        self.latencies: list[float] = []  # per round: request sent (or connect) -> response
        self.in_flight = 0
        self.dropped_while_held = 0

    # ---- one connection's steps

    def _fail(self, conn: Conn, reason: str) -> None:
        if conn.state == HELD:
            self.dropped_while_held += 1
        else:
            self.in_flight -= 1
        self.failures[reason] += 1
        conn.state = DEAD
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _open(self, index: int) -> Conn | None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.failures[f"socket(): {errno.errorcode.get(exc.errno, exc.errno)}"] += 1
            return None
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(index, sock, started=time.perf_counter())
        self.conns.append(conn)
        self.in_flight += 1
        err = sock.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            self.sel.register(sock, selectors.EVENT_READ, conn)  # _fail unregisters
            self._fail(conn, f"connect: {errno.errorcode.get(err, err)}")
            return None
        self.sel.register(sock, selectors.EVENT_WRITE, conn)
        return conn

    def _send_request(self, conn: Conn) -> None:
        """Start (another) request on a connection (HELD or just connected)."""
        if conn.state == HELD:
            self.in_flight += 1
            conn.started = time.perf_counter()
        conn.state = SENDING
        conn.out = self.request
        self.sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: Conn) -> None:
        try:
            n = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(conn, f"send: {errno.errorcode.get(exc.errno, exc.errno)}")
            return
        conn.out = conn.out[n:]
        if not conn.out:
            conn.state = READING
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(conn, f"recv: {errno.errorcode.get(exc.errno, exc.errno)}"
                       + (" while held" if conn.state == HELD else ""))
            return
        if not data:
            self._fail(conn, "closed by server while held" if conn.state == HELD
                       else "EOF before a whole response")
            return
        if conn.state == HELD:
            self._fail(conn, "unsolicited data while held")
            return
        conn.buf += data
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(conn.buf[:end]).decode("latin-1")
        m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
        if m is None:
            self._fail(conn, "response without Content-Length")
            return
        if len(conn.buf) < end + 4 + int(m.group(1)):
            return
        if len(conn.buf) > end + 4 + int(m.group(1)):
            self._fail(conn, "more bytes than one response")
            return
        conn.buf.clear()
        status = head.split(" ", 2)[1] if head.count(" ") >= 1 else "?"
        if status != "200":
            self._fail(conn, f"status {status}")
            return
        if re.search(r"(?im)^connection:\s*close\s*$", head):
            self._fail(conn, "server said Connection: close")
            return
        self.latencies.append(time.perf_counter() - conn.started)
        conn.responses += 1
        conn.state = HELD
        self.in_flight -= 1

    def _dispatch(self, timeout: float) -> None:
        for key, events in self.sel.select(timeout):
            conn: Conn = key.data
            if conn.state == DEAD:
                continue
            if conn.state == CONNECTING:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._fail(conn, f"connect: {errno.errorcode.get(err, err)}")
                    continue
                self._send_request(conn)
            elif conn.state == SENDING and events & selectors.EVENT_WRITE:
                self._write(conn)
            elif events & selectors.EVENT_READ:
                self._read(conn)

    def _expire(self, conns: list[Conn]) -> None:
        for conn in conns:
            if conn.state in STATE_NAMES:
                self._fail(conn, f"timeout while {STATE_NAMES[conn.state]}")

    # ---- phases

    def establish(self, n: int, deadline: float) -> float:
        """Open *n* connections, one request each; returns seconds to the last response."""
        start = time.perf_counter()
        opened = 0
        stop_opening = False
        while time.perf_counter() < deadline:
            while not stop_opening and opened < n and self.in_flight < self.window:
                before = sum(self.failures.values())
                self._open(opened)
                opened += 1
                if sum(self.failures.values()) > before and any(
                        k.startswith(("socket(): EMFILE", "socket(): ENFILE",
                                      "connect: EADDRNOTAVAIL")) for k in self.failures):
                    stop_opening = True  # out of fds or ports: opening more cannot work
            if self.in_flight == 0 and (opened >= n or stop_opening):
                break
            self._dispatch(min(0.2, max(0.0, deadline - time.perf_counter())))
        self._expire(self.conns)
        if opened < n:
            self.failures["not attempted (fd/port limit or deadline)"] += n - opened
        return time.perf_counter() - start

    def hold(self, seconds: float) -> None:
        """Keep serving the selector (to see server-side closes) for *seconds*."""
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            self._dispatch(min(0.2, left))

    def verify(self, sample: list[Conn], deadline: float) -> tuple[int, int]:
        """A second request on each connection of *sample*; returns (ok, checked)."""
        todo = [c for c in sample if c.state == HELD]
        checked = len(todo)
        before = {id(c): c.responses for c in todo}
        pos = 0
        while time.perf_counter() < deadline:
            while pos < len(todo) and self.in_flight < self.window:
                if todo[pos].state == HELD:
                    self._send_request(todo[pos])
                pos += 1
            if pos >= len(todo) and self.in_flight == 0:
                break
            self._dispatch(min(0.2, max(0.0, deadline - time.perf_counter())))
        self._expire(todo)
        ok = sum(1 for c in todo if c.state == HELD and c.responses > before[id(c)])
        return ok, checked

    def held(self) -> list[Conn]:
        return [c for c in self.conns if c.state == HELD]

    def close(self) -> None:
        for conn in self.conns:
            if conn.state != DEAD:
                try:
                    self.sel.unregister(conn.sock)
                except (KeyError, ValueError):
                    pass
                conn.sock.close()
                conn.state = DEAD
        self.sel.close()


# --------------------------------------------------------------------------- server facts


def raise_nofile(needed: int) -> tuple[int, int, int]:
    """Raise RLIMIT_NOFILE's soft limit to min(needed, hard); returns (old soft, new, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return soft, max(soft, want), hard


def nofile_limit(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    except OSError:
        pass
    return "?"


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def the_worker(master: int) -> int | None:
    """The master's worker: its child holding the most fds (with -w 1, its only child)."""
    kids = bench.children_of(master)
    return max(kids, key=open_fds) if kids else None


def fresh_request_ms(port: int) -> float:
    """Wall time of one request on a new connection (NaN if it fails within 10 s)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.perf_counter()
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        return (time.perf_counter() - t0) * 1000 if resp.status == 200 else float("nan")
    except (OSError, http.client.HTTPException):
        return float("nan")
    finally:
        conn.close()


# --------------------------------------------------------------------------- the run


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def run_capacity(args: argparse.Namespace, logdir: Path | None = None) -> dict:
    """The whole benchmark; returns its result (``ok`` = the floor holds)."""
    n = args.connections
    logdir = logdir or Path(tempfile.mkdtemp(prefix="arbiter-capacity-"))
    server: bench.Server | None = None
    client: Client | None = None
    result: dict = {"connections": n, "worker_type": args.worker_type, "workers": args.workers,
                    "keepalive": args.keepalive, "window": args.window, "hold_s": args.hold,
                    "verify": args.verify}
    try:
        if args.port:
            port, master = args.port, args.server_pid
            result["command"] = f"(external server on 127.0.0.1:{port}, pid {master})"
            result["worker_type"] = "external"
            worker = master
        else:
            port = bench.free_port()
            cmd = bench.arbiter_cmd(port, args.worker_type, args.workers, args.threads,
                                    args.http_parser, max_connections=n + 100,
                                    extra=["--keepalive", f"{args.keepalive:g}"])
            result["command"] = " ".join(["python", *cmd[1:]])
            server = bench.spawn("arbiter", args.worker_type, args.http_parser, port, cmd,
                                 logdir)
            bench.wait_ready(server)
            master = server.proc.pid
            time.sleep(0.5)  # let the other workers (if -w > 1) boot too
            worker = the_worker(master) or master
        result["worker_pid"] = worker
        result["server_nofile"] = nofile_limit(worker)
        result["rss_idle_mb"] = bench.rss_mb(worker)

        old, new, hard = raise_nofile(n + FD_SPARE)
        result["client_nofile"] = f"{old} -> {new} (hard {hard})"
        if new < n + FD_SPARE:
            log(f"RLIMIT_NOFILE hard limit {hard} < {n + FD_SPARE} needed: some connections "
                "will fail with EMFILE")
        log(f"client RLIMIT_NOFILE {result['client_nofile']}; server worker pid {worker} "
            f"(limit {result['server_nofile']}), idle RSS {result['rss_idle_mb']:.1f} MB")

        client = Client(port, args.window)
        log(f"opening {n} keep-alive connections (at most {args.window} in flight)")
        establish_s = client.establish(n, time.perf_counter() + args.timeout)
        first = list(client.latencies)
        established = len(client.held())
        result.update(
            established=established, establish_s=establish_s,
            establish_rate=established / establish_s if establish_s else float("nan"),
            first_response_p50_ms=_pct(first, 0.5) * 1000,
            first_response_p99_ms=_pct(first, 0.99) * 1000,
            first_response_max_ms=max(first, default=float("nan")) * 1000,
        )
        log(f"established {established}/{n} in {establish_s:.2f}s; holding {args.hold:g}s")
        client.hold(args.hold)
        result["rss_held_mb"] = bench.rss_mb(worker)
        result["rss_hwm_mb"] = bench.rss_mb(worker, "VmHWM")
        result["worker_fds"] = open_fds(worker)
        result["worker_threads"] = int(bench.proc_status(worker).get("Threads", "0") or 0)
        result["master_rss_mb"] = bench.rss_mb(master) if master != worker else float("nan")
        result["fresh_request_ms"] = fresh_request_ms(port)
        result["dropped_while_held"] = client.dropped_while_held
        log(f"worker RSS {result['rss_held_mb']:.1f} MB (peak {result['rss_hwm_mb']:.1f}), "
            f"{result['worker_fds']} fds, {result['worker_threads']} thread(s); a fresh "
            f"request took {result['fresh_request_ms']:.1f} ms")

        held = client.held()
        if args.verify == "all" or int(args.verify) >= len(held):
            sample = held
        else:
            sample = random.Random(1).sample(held, int(args.verify))
        log(f"verifying: a second request on {len(sample)} held connections")
        t0 = time.perf_counter()
        lat_before = len(client.latencies)
        ok, checked = client.verify(sample, time.perf_counter() + args.timeout)
        second = client.latencies[lat_before:]
        result.update(
            verified_ok=ok, verified=checked, verify_s=time.perf_counter() - t0,
            second_response_p99_ms=_pct(second, 0.99) * 1000,
        )
        # sampled, unverified connections count as held if still open
        result["held"] = len(client.held())
        result["rss_after_verify_mb"] = bench.rss_mb(worker)
        result["failures"] = dict(client.failures)
        if server is not None and server.proc.poll() is not None:
            raise RuntimeError(f"the server died:\n{bench.tail(server.logfile)}")
        result["error"] = None
    except (RuntimeError, OSError) as exc:
        result["error"] = str(exc)
        log(f"error: {exc}")
    finally:
        if client is not None:
            result.setdefault("failures", dict(client.failures))
            client.close()
        if server is not None:
            bench.stop_server(server)
    rss = result.get("rss_hwm_mb", float("nan"))
    result["floor"] = (f"{FLOOR_CONNECTIONS:,} connections held by one worker with RSS < "
                       f"{FLOOR_RSS_MB:.0f} MB")
    all_held = bool(result.get("error") is None and result.get("held") == n
                    and result.get("verified_ok") == result.get("verified"))
    small = rss == rss and rss < FLOOR_RSS_MB
    result["ok"] = all_held and small and n >= FLOOR_CONNECTIONS
    if result["ok"]:
        result["verdict"] = "PASS"
    elif all_held and small:
        result["verdict"] = f"all held, but N < {FLOOR_CONNECTIONS:,}: floor not tested"
    else:
        result["verdict"] = "FAIL" + ("" if all_held else " (not all held)") + (
            "" if small else f" (RSS >= {FLOOR_RSS_MB:.0f} MB or unknown)")
    return result


def report(r: dict) -> str:
    def f(key: str, fmt: str = "{:,.1f}") -> str:
        v = r.get(key)
        return "-" if v is None or v != v else fmt.format(v)

    fails = r.get("failures") or {}
    n_fail = sum(fails.values())
    lines = [
        f"concurrency: {r['connections']:,} keep-alive connections to one "
        f"{r['worker_type']} worker",
        f"  server: {r.get('command', '?')}",
        "",
        "| connections held | failures | worker RSS idle / held / peak MB | per connection |"
        " time to establish | fresh request while held | floor |",
        "|---|---|---|---|---|---|---|",
    ]
    per_conn = "-"
    if r.get("held") and r.get("rss_held_mb") == r.get("rss_held_mb"):
        per_conn = f"{(r['rss_held_mb'] - r['rss_idle_mb']) * 1024 / max(1, r['held']):.1f} KB"
    lines.append(
        f"| {f('held', '{:,}')} / {r['connections']:,} | {n_fail:,} | "
        f"{f('rss_idle_mb')} / {f('rss_held_mb')} / {f('rss_hwm_mb')} | {per_conn} | "
        f"{f('establish_s', '{:.2f} s')} ({f('establish_rate', '{:,.0f}')}/s) | "
        f"{f('fresh_request_ms', '{:.1f} ms')} | {r.get('verdict', 'PASS' if r['ok'] else 'FAIL')} |"
    )
    lines += [
        "",
        f"* established {f('established', '{:,}')} (first response p50 "
        f"{f('first_response_p50_ms', '{:.1f}')} ms, p99 {f('first_response_p99_ms', '{:.1f}')}"
        f" ms, max {f('first_response_max_ms', '{:.0f}')} ms; at most {r['window']} in flight);"
        f" held {r['hold_s']:g} s: {f('dropped_while_held', '{:,}')} closed by the server;"
        f" second request on {f('verified', '{:,}')}: {f('verified_ok', '{:,}')} answered "
        f"(p99 {f('second_response_p99_ms', '{:.1f}')} ms, {f('verify_s', '{:.2f}')} s)",
        f"* worker pid {r.get('worker_pid', '?')}: {f('worker_fds', '{:,}')} open fds, "
        f"{f('worker_threads', '{:,}')} thread(s), RLIMIT_NOFILE {r.get('server_nofile', '?')};"
        f" master RSS {f('master_rss_mb')} MB; RSS after verifying {f('rss_after_verify_mb')} "
        f"MB; client RLIMIT_NOFILE {r.get('client_nofile', '?')}; server --keepalive "
        f"{r['keepalive']:g}",
        f"* floor: {r['floor']} (peak RSS = VmHWM of the worker)",
    ]
    if fails:
        lines.append("* failures: " + ", ".join(f"{k}: {v:,}" for k, v in
                                                  sorted(fails.items(), key=lambda kv: -kv[1])))
    if r.get("error"):
        lines.append(f"* ERROR: {r['error'].splitlines()[0]}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("connections", nargs="?", type=int, default=FLOOR_CONNECTIONS,
                   help=f"concurrent connections to open [{FLOOR_CONNECTIONS}]")
    p.add_argument("--worker-type", default="evented", help="arbiter -k [evented]")
    p.add_argument("--workers", type=int, default=1, help="arbiter -w [1]")
    p.add_argument("--threads", type=int, default=4, help="arbiter -t [4]")
    p.add_argument("--http-parser", default="httptools", help="arbiter --http-parser [httptools]")
    p.add_argument("--keepalive", type=float, default=300,
                   help="arbiter --keepalive: seconds an idle connection is kept [300]")
    p.add_argument("--window", type=int, default=500,
                   help="connections connecting or awaiting a response at once [500]")
    p.add_argument("--hold", type=float, default=5, help="seconds to hold them all [5]")
    p.add_argument("--verify", default="all",
                   help="second request on 'all' held connections or on a sample of K [all]")
    p.add_argument("--timeout", type=float, default=120,
                   help="deadline of the establish and verify phases, each [120]")
    p.add_argument("--port", type=int, default=0,
                   help="measure a server already listening on 127.0.0.1:PORT (not started)")
    p.add_argument("--server-pid", type=int, default=0,
                   help="with --port: the pid whose RSS/fds are read")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if args.connections < 1 or args.window < 1 or args.hold < 0 or args.timeout <= 0:
        p.error("connections, --window and --timeout must be positive, --hold >= 0")
    if args.verify != "all" and not (args.verify.isdigit()):
        p.error("--verify: 'all' or a number")
    if args.port and not args.server_pid:
        p.error("--port needs --server-pid")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench.install_signal_handlers()
    try:
        result = run_capacity(args)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.stop_all()
    if args.json:
        print(json.dumps(bench.jsonable(result), indent=2, allow_nan=False))
    else:
        cmd = "python scripts/evented_capacity.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        print(f"\n{cmd}\n{time.strftime('%Y-%m-%dT%H:%M:%S%z')}  nproc={os.cpu_count()}\n")
        print(report(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
