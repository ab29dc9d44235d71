#!/usr/bin/env python3
"""Chaos under load: reloads, scaling and kill -9 while clients keep requesting.

For every server (each arbiter worker type, and gunicorn ``sync``/``gthread``
with ``--gunicorn``) and every action class, a fresh server is started on
127.0.0.1 (2 workers, an app that sleeps 5 ms and answers with its pid), a
closed-loop load runs against it, and one action class is applied for the
duration:

* ``hup`` -- ``--hups`` HUPs, each sent once the previous reload completed
  (arbiter: its "reload complete" log line; gunicorn: every old worker pid
  gone and the worker count back, at least 0.3 s apart).  This phase runs
  until all the HUPs are done, whatever ``--seconds`` says;
* ``ttin_ttou`` -- TTIN then TTOU, alternately, each once the worker count
  reached the new target (at least 0.3 s apart);
* ``kill9`` -- SIGKILL a random worker every ~0.5 s;
* ``usr2`` (arbiter only) -- USR2, wait until the new master's workers all
  serve, WINCH the old master, wait for its workers to go, TERM it, wait for
  it to exit; repeated.

The load: ``--clients`` threads, each sending GET requests back to back, with
a hand-written HTTP/1.1 client on a raw socket so every failure is seen as it
happened.  ``--close-clients`` of them send ``Connection: close``; the others
keep their connection alive.  Client behaviour is that of every real HTTP
client: a request on a *reused* connection that the server closed while idle
(EOF or ECONNRESET before any byte of the response) is retried once on a new
connection; those are counted as "retried", not failed.  FAILED is any request
that got no complete response on a fresh connection (refused, reset, EOF,
timeout), a truncated response, a 5xx (or any non-200), or a retry that
failed.

Bounds: 0 failures for ``hup``, ``ttin_ttou`` and ``usr2``.  Under ``kill9``
only requests in flight on the killed worker may fail: a failure is
"explained" when the connection's last response came from a killed pid, or
when it is a reset/EOF/timeout within 1 s after a kill; unexplained failures
must be 0, and failures are shown next to the number of kills.

Every server runs in its own session and is stopped by pid (TERM, then KILL
of its process group), also on errors and Ctrl-C.

Usage::

    python scripts/chaos.py [--seconds 30] [--types preforked,forked,threaded,pooled,evented]
        [--actions hup,ttin_ttou,kill9,usr2] [--hups 100] [--gunicorn]
        [--clients 16] [--close-clients 4] [--keep-logs]
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_TYPES = ("preforked", "forked", "threaded", "pooled", "evented")
GUNICORN_CLASSES = ("sync", "gthread")
ACTIONS = ("hup", "ttin_ttou", "kill9", "usr2")
WORKERS = 2
THREADS = 4
KILL_WINDOW = 1.0  # a reset within this many seconds after a kill is explained by it

APP_SOURCE = '''\
import os
import time

PID = str(os.getpid()).encode()


def app(environ, start_response):
    time.sleep(0.005)
    body = b"pid " + PID
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split() if alive(int(p))]


def alive(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return data.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


@dataclass
class Server:
    name: str  # "arbiter" | "gunicorn"
    kind: str  # worker type | worker class
    port: int
    proc: subprocess.Popen
    logfile: Path
    master: int = 0  # the master in charge now (changes after a USR2 upgrade)

    @property
    def label(self) -> str:
        return f"{self.name} {self.kind}"

    def workers(self) -> list[int]:
        return children_of(self.master)

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def count(self, text: str) -> int:
        return self.log_text().count(text)


RUNNING: list[Server] = []


def start_server(name: str, kind: str, workdir: Path, python: str) -> Server:
    port = free_port()
    logfile = workdir / f"{name}-{kind}-{port}.log"
    if name == "arbiter":
        cmd = [python, "-m", "arbiter", "-b", f"127.0.0.1:{port}", "-w", str(WORKERS),
               "-k", kind, "-t", str(THREADS), "--max-connections", "1000",
               "--graceful-timeout", "10", "--log-level", "info", "chaos_app:app"]
    else:
        cmd = [python, "-m", "gunicorn", "-w", str(WORKERS), "-k", kind,
               "--threads", str(THREADS), "-b", f"127.0.0.1:{port}", "--log-level", "info",
               "--graceful-timeout", "10", "--no-control-socket", "--chdir", str(workdir),
               "chaos_app:app"]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ARBITER_", "GUNICORN_")) and k not in ("WEB_CONCURRENCY", "PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir), str(REPO_ROOT),
                                                      env.get("PYTHONPATH")]))
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, kind, port, proc, logfile, proc.pid)
    RUNNING.append(server)
    ok = wait_until(lambda: proc.poll() is None and len(server.workers()) == WORKERS
                    and probe(port), 30, 0.05)
    if not ok:
        stop_server(server)
        raise RuntimeError(f"{server.label} did not serve:\n{tail(logfile)}")
    return server


def probe(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_server(server: Server) -> None:
    """TERM every master we know of by pid, then KILL what is left of the process group."""
    masters = [p for p in {server.proc.pid, server.master} if p]
    for pid in masters:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        server.proc.wait(15)
    except subprocess.TimeoutExpired:
        pass
    wait_until(lambda: not any(alive(p) for p in masters), 15, 0.05)
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)  # workers and any new master (same group)
    except (ProcessLookupError, PermissionError):
        pass
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(5)
    if server in RUNNING:
        RUNNING.remove(server)


def stop_all() -> None:
    for server in list(RUNNING):
        stop_server(server)


# --------------------------------------------------------------------------- load


class Dropped(Exception):
    """The connection ended; ``got`` bytes of the response had arrived."""

    def __init__(self, why: str, got: int) -> None:
        super().__init__(why)
        self.got = got


@dataclass
class Failure:
    at: float
    wall: float
    kind: str
    detail: str
    fresh: bool
    last_pid: int | None


@dataclass
class LoadStats:
    ok: int = 0
    retried: int = 0
    failures: list[Failure] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)


class Load:
    """Closed-loop HTTP/1.1 clients on threads; see the module docstring for the rules."""

    def __init__(self, port: int, clients: int, close_clients: int, timeout: float = 10.0):
        self.port = port
        self.timeout = timeout
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.stats = LoadStats()
        self.threads = [threading.Thread(target=self.client, args=(i < close_clients,),
                                         daemon=True) for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout + 5)

    def snapshot(self) -> tuple[int, int, int]:
        with self.lock:
            return self.stats.ok, self.stats.retried, len(self.stats.failures)

    def client(self, close: bool) -> None:
        request = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   + (b"Connection: close\r\n" if close else b"") + b"\r\n")
        sock: socket.socket | None = None
        last_pid: int | None = None
        while not self.stop.is_set():
            reused = sock is not None
            try:
                if sock is None:
                    sock = self.connect()
                status, pid, keep = self.exchange(sock, request)
            except Dropped as exc:
                sock = self.discard(sock)
                if reused and exc.got == 0:
                    # Closed while idle: retry once on a new connection.
                    with self.lock:
                        self.stats.retried += 1
                    try:
                        sock = self.connect()
                        status, pid, keep = self.exchange(sock, request)
                    except Dropped as exc2:
                        sock = self.discard(sock)
                        self.fail("retry " + self.kind_of(exc2), str(exc2), True, last_pid)
                        continue
                else:
                    self.fail(self.kind_of(exc), str(exc), not reused, last_pid)
                    continue
            last_pid = pid
            if status != 200:
                self.fail(f"status {status}", f"HTTP {status}", not reused, pid)
            else:
                with self.lock:
                    self.stats.ok += 1
                    self.stats.pids.add(pid)
            if not keep or close:
                sock = self.discard(sock)
        self.discard(sock)

    @staticmethod
    def kind_of(exc: Dropped) -> str:
        return "truncated" if exc.got else "no response"

    def fail(self, kind: str, detail: str, fresh: bool, last_pid: int | None) -> None:
        with self.lock:
            self.stats.failures.append(Failure(time.monotonic(), time.time(), kind, detail, fresh, last_pid))

    @staticmethod
    def discard(sock: socket.socket | None) -> None:
        if sock is not None:
            sock.close()
        return None

    def connect(self) -> socket.socket:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        except OSError as exc:
            raise Dropped(f"connect: {errno.errorcode.get(exc.errno, exc)}", 0) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def exchange(self, sock: socket.socket, request: bytes) -> tuple[int, int, bool]:
        """Send one request, read one whole response: (status, server pid, keep-alive)."""
        try:
            sock.sendall(request)
        except OSError as exc:
            raise Dropped(f"send: {errno.errorcode.get(exc.errno, exc)}", 0) from None
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise Dropped("EOF in the response head", len(buf))
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            parts = lines[0].split()
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise Dropped(f"not HTTP: {lines[0][:60]!r}", len(buf))
            status = int(parts[1])
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip().lower()
            keep = headers.get(b"connection") != b"close" and parts[0] == b"HTTP/1.1"
            length = headers.get(b"content-length")
            if length is None:  # read to EOF
                keep = False
                while chunk := sock.recv(65536):
                    body += chunk
            else:
                while len(body) < int(length):
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise Dropped(f"EOF after {len(body)}/{int(length)} body bytes",
                                      len(head) + len(body) + 4)
                    body += chunk
        except TimeoutError:
            raise Dropped(f"timeout after {self.timeout:g} s", len(buf)) from None
        except OSError as exc:
            raise Dropped(f"recv: {errno.errorcode.get(exc.errno, exc)}", len(buf)) from None
        m = re.match(rb"pid (\d+)", body)
        return status, int(m.group(1)) if m else 0, keep


# --------------------------------------------------------------------------- actions


@dataclass
class Outcome:
    server: str
    action: str
    actions: int = 0
    ok: int = 0
    failed: int = 0
    retried: int = 0
    unexplained: int = 0  # kill9: failures not attributable to a kill
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, what)

    def event(self, what: str) -> None:
        self.events.append((time.monotonic(), what))


class Stuck(Exception):
    pass


def do_hup(server: Server, args: argparse.Namespace, until: float, out: Outcome,
           kills: list) -> None:
    deadline = time.monotonic() + max(args.seconds, args.hups * 5.0)
    while out.actions < args.hups and time.monotonic() < deadline:
        if server.name == "arbiter":
            before = server.count("reload complete")
            bad = server.count("reload aborted") + server.count("rolled back")
            out.event(f"HUP #{out.actions + 1} sent")
            os.kill(server.master, signal.SIGHUP)
            out.actions += 1
            if not wait_until(lambda b=before: server.count("reload complete") > b, 30, 0.02):
                raise Stuck(f"HUP #{out.actions}: no 'reload complete' within 30 s")
            out.event(f"HUP #{out.actions} reload complete")
            if server.count("reload aborted") + server.count("rolled back") > bad:
                out.notes.append(f"HUP #{out.actions} rolled back")
        else:
            old = set(server.workers())
            sent = time.monotonic()
            out.event(f"HUP #{out.actions + 1} sent")
            os.kill(server.master, signal.SIGHUP)
            out.actions += 1
            if not wait_until(lambda old=old: replaced(server, old), 30, 0.02):
                raise Stuck(f"HUP #{out.actions}: the old workers did not go within 30 s")
            time.sleep(max(0.0, 0.3 - (time.monotonic() - sent)))


def do_ttin_ttou(server: Server, args: argparse.Namespace, until: float, out: Outcome,
                 kills: list) -> None:
    while time.monotonic() < until:
        up = out.actions % 2 == 0
        target = WORKERS + 1 if up else WORKERS
        sent = time.monotonic()
        out.event(f"{'TTIN' if up else 'TTOU'} #{out.actions + 1} sent")
        os.kill(server.master, signal.SIGTTIN if up else signal.SIGTTOU)
        out.actions += 1
        if not wait_until(lambda n=target: len(server.workers()) == n, 30, 0.02):
            raise Stuck(f"{'TTIN' if up else 'TTOU'} #{out.actions}: not {target} workers "
                        f"within 30 s")
        time.sleep(max(0.0, 0.3 - (time.monotonic() - sent)))


def do_kill9(server: Server, args: argparse.Namespace, until: float, out: Outcome,
             kills: list) -> None:
    rng = random.Random(4)
    while time.monotonic() < until:
        if not wait_until(lambda: len(server.workers()) == WORKERS, 30, 0.02):
            raise Stuck("the killed workers were not replaced within 30 s")
        time.sleep(0.5)
        pid = rng.choice(server.workers())
        kills.append((time.monotonic(), pid))
        out.event(f"kill -9 #{out.actions + 1} (pid {pid})")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        out.actions += 1


def replaced(server: Server, old: set[int]) -> bool:
    now = set(server.workers())
    return len(now) == WORKERS and not now & old


def do_usr2(server: Server, args: argparse.Namespace, until: float, out: Outcome,
            kills: list) -> None:
    started = re.compile(r"upgrade: new master started \(pid (\d+)\)")
    while time.monotonic() < until:
        old = server.master
        old_workers = set(server.workers())
        known = len(started.findall(server.log_text()))
        ready_before = server.count("ready: ")
        out.event(f"USR2 #{out.actions + 1} to {old}")
        os.kill(old, signal.SIGUSR2)
        out.actions += 1
        n = out.actions
        if not wait_until(lambda k=known: len(started.findall(server.log_text())) > k, 30):
            raise Stuck(f"USR2 #{n}: no new master within 30 s")
        new = int(started.findall(server.log_text())[-1])

        def new_serves(new: int = new, before: int = ready_before) -> bool:
            return (alive(new) and server.count("ready: ") > before
                    and len(children_of(new)) == WORKERS)

        if not wait_until(new_serves, 30):
            raise Stuck(f"USR2 #{n}: the new master {new} did not become ready within 30 s")
        out.event(f"USR2 #{n}: new master {new} serves; WINCH to {old}")
        os.kill(old, signal.SIGWINCH)
        if not wait_until(lambda ws=old_workers: not any(alive(p) for p in ws), 30):
            raise Stuck(f"USR2 #{n}: the old workers did not stop after WINCH within 30 s")
        out.event(f"USR2 #{n}: TERM to {old}")
        os.kill(old, signal.SIGTERM)
        if old == server.proc.pid:  # our child: reap it, or it stays a zombie that
            try:                    # the new master counts as a running old master
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if not wait_until(lambda pid=old: not alive(pid), 30):
            raise Stuck(f"USR2 #{n}: the old master {old} did not exit after TERM within 30 s")
        # The new master refuses another USR2 while the old pid exists, even as a
        # zombie its new parent has not reaped yet: wait until the pid is gone.
        if not wait_until(lambda pid=old: not pid_exists(pid), 30):
            raise Stuck(f"USR2 #{n}: the old master {old} exited but stayed a zombie (its "
                        f"parent did not reap it) for 30 s")
        server.master = new
        time.sleep(0.2)


ACTION_FUNCS = {"hup": do_hup, "ttin_ttou": do_ttin_ttou, "kill9": do_kill9, "usr2": do_usr2}


def explained(f: Failure, kills: list[tuple[float, int]]) -> bool:
    killed = {pid for _, pid in kills}
    if f.last_pid in killed and not f.kind.startswith("status"):
        return True
    if f.kind.startswith("status"):
        return False
    return any(0 <= f.at - t <= KILL_WINDOW for t, _ in kills)


def run_phase(name: str, kind: str, action: str, args: argparse.Namespace, workdir: Path,
              python: str) -> Outcome:
    out = Outcome(f"{name} {kind}", action)
    server = start_server(name, kind, workdir, python)
    kills: list[tuple[float, int]] = []
    try:
        with Load(server.port, args.clients, args.close_clients) as load:
            time.sleep(1.0)  # warm up: every client connected and served
            base_ok, base_retried, base_failed = load.snapshot()
            with load.lock:
                load.stats.failures.clear()
            start = time.monotonic()
            try:
                ACTION_FUNCS[action](server, args, start + args.seconds, out, kills)
            except Stuck as exc:
                out.notes.append(f"STUCK: {exc}")
                log(f"  {server.label} {action}: {exc}\n{tail(server.logfile)}")
            time.sleep(1.0)  # let the last action's effects reach the clients
            out.seconds = time.monotonic() - start
        out.ok = load.stats.ok - base_ok
        out.retried = load.stats.retried - base_retried
        out.failures = list(load.stats.failures)
        out.failed = len(out.failures)
        if action == "kill9":
            out.unexplained = sum(1 for f in out.failures if not explained(f, kills))
        else:
            out.unexplained = out.failed
        if server.proc.poll() is not None and server.master == server.proc.pid:
            out.notes.append(f"master exited with {server.proc.returncode}")
    finally:
        stop_server(server)
    if out.failures:
        out.notes.append(f"server log: {server.logfile}")
    return out


# --------------------------------------------------------------------------- report


def bound_of(action: str) -> str:
    return "<= in flight on killed" if action == "kill9" else "0"


def verdict(o: Outcome) -> str:
    if any(n.startswith(("STUCK", "master exited")) for n in o.notes):
        return "STUCK"
    return "ok" if o.unexplained == 0 else "FAIL"


def print_table(outcomes: list[Outcome]) -> None:
    head = ["server", "action", "actions", "secs", "completed", "failed", "retried",
            "failed/action", "unexplained", "bound", "verdict"]
    rows = []
    for o in outcomes:
        per = f"{o.failed / o.actions:.2f}" if o.actions else "-"
        rows.append([o.server, o.action, str(o.actions), f"{o.seconds:.0f}", str(o.ok),
                     str(o.failed), str(o.retried), per, str(o.unexplained), bound_of(o.action),
                     verdict(o)])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    for o in outcomes:
        if o.failures or o.notes:
            print(f"\n{o.server} / {o.action}:")
            for n in o.notes:
                print(f"  note: {n}")
            kinds: dict[str, int] = {}
            for f in o.failures:
                key = f"{f.kind} ({'fresh' if f.fresh else 'reused'} connection): {f.detail}"
                kinds[key] = kinds.get(key, 0) + 1
            for key, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
                print(f"  {n:5d} x {key}")
            for f in o.failures[:8]:
                before = [e for e in o.events if e[0] <= f.at]
                when = (f"{f.at - before[-1][0]:+.3f} s after {before[-1][1]}" if before
                        else "before the first action")
                stamp = time.strftime("%H:%M:%S", time.localtime(f.wall)) + f"{f.wall % 1:.3f}"[1:]
                print(f"  e.g. at {stamp} {f.kind} ({f.detail}), last served by pid "
                      f"{f.last_pid}: {when}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30,
                   help="duration of each ttin_ttou / kill9 / usr2 phase")
    p.add_argument("--types", default=",".join(WORKER_TYPES))
    p.add_argument("--actions", default="hup,ttin_ttou,kill9",
                   help=f"comma-separated, of {','.join(ACTIONS)}")
    p.add_argument("--hups", type=int, default=100, help="HUPs in the hup phase")
    p.add_argument("--gunicorn", action="store_true",
                   help="also run gunicorn sync and gthread (hup, ttin_ttou, kill9)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--close-clients", type=int, default=4,
                   help="how many of the clients send Connection: close")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = p.parse_args(argv)
    types = [t for t in args.types.split(",") if t]
    actions = [a for a in args.actions.split(",") if a]
    for t in types:
        if t not in WORKER_TYPES:
            p.error(f"unknown worker type {t!r}")
    for a in actions:
        if a not in ACTIONS:
            p.error(f"unknown action {a!r}")
    python = sys.executable
    if args.gunicorn and subprocess.run([python, "-c", "import gunicorn"],
                                        capture_output=True).returncode != 0:
        p.error(f"--gunicorn: {python} cannot import gunicorn")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="arbiter-chaos-"))
    (workdir / "chaos_app.py").write_text(APP_SOURCE)
    plan = [("arbiter", t, a) for t in types for a in actions]
    if args.gunicorn:
        plan += [("gunicorn", k, a) for k in GUNICORN_CLASSES for a in actions if a != "usr2"]
    outcomes: list[Outcome] = []
    print(f"# {' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}")
    print(f"# {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {WORKERS} workers "
          f"(pooled/gthread: {THREADS} threads), {args.clients} clients "
          f"({args.close_clients} with Connection: close), app sleeps 5 ms")
    failed_any = False
    try:
        for name, kind, action in plan:
            log(f"{name} {kind}: {action}")
            try:
                o = run_phase(name, kind, action, args, workdir, python)
            except RuntimeError as exc:
                log(str(exc))
                o = Outcome(f"{name} {kind}", action, notes=[f"STUCK: {exc}"])
            outcomes.append(o)
            log(f"  {o.actions} actions, {o.ok} completed, {o.failed} failed, "
                f"{o.retried} retried, {o.unexplained} unexplained")
            if name == "arbiter" and verdict(o) != "ok":
                failed_any = True
    except KeyboardInterrupt:
        log("interrupted: stopping the servers")
    finally:
        stop_all()
    print_table(outcomes)
    kept = any(o.failures for o in outcomes)
    if args.keep_logs or kept:
        print(f"\nlogs in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed_any else 0


if __name__ == "__main__":
    raise SystemExit(main())
