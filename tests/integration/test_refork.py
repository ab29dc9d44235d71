"""Reforking (``refork_after``) as an operator sees it, on a real arbiter.

Three workers of each type that can be a mold (preforked, threaded, pooled,
evented); after 50 requests a warm worker becomes the mold, the others are
replaced one at a time by workers forked from it, and after 50 more
requests of one of those, again from it. A closed-loop client that never
retries runs all along and sees no failure. The new workers are the
master's children (``ps``), ``ctl status`` shows their refork generation
and the mold; the app itself reports its parent and that the collector is
frozen. The master still replaces a reforked worker killed with SIGKILL
(and a TTIN's worker comes from the mold too), a HUP goes back to workers
forked from the master, and TERM stops them all. A type that cannot be a
mold (asgi) says so and is forked from the master.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import textwrap
import threading

import pytest
from harness import ARBITER, children_of, pid_alive, wait_for

pytestmark = pytest.mark.timeout(90)

APP = """
import gc, os
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d %d %d" % (os.getpid(), os.getppid(), gc.get_freeze_count())]
"""

ASGI_APP = """
import gc, os
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body",
                "body": b"%d %d %d" % (os.getpid(), os.getppid(), gc.get_freeze_count())})
"""


class ClosedLoop:
    """``clients`` threads GET on kept-alive connections until stopped, never retrying."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.answered = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True)
                        for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        while not self.done.is_set():
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or len(body.split()) != 3:
                    raise AssertionError(f"{resp.status} {body[:60]!r}")
                with self.lock:
                    self.answered += 1
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()  # the server said so: a new connection, not a retry
            except Exception as exc:  # noqa: BLE001 -- every failure counts
                with self.lock:
                    self.failures.append(repr(exc))
                conn.close()
        conn.close()

    def stop(self) -> tuple[int, list[str]]:
        self.done.set()
        for thread in self.threads:
            thread.join(20)
        return self.answered, self.failures


def status(server) -> dict:
    ctl = subprocess.run([*ARBITER, "ctl", "-s", "arbiter.ctl", "status", "--json"],
                         cwd=server.workdir, capture_output=True, text=True, timeout=30)
    assert ctl.returncode == 0, ctl.stderr
    return json.loads(ctl.stdout)


def start(server, extra: str = "", workers: int = 3, worker_type: str = "preforked",
          graceful_timeout: float = 10) -> None:
    server.write_app(ASGI_APP if worker_type == "asgi" else APP)
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: {workers}
        worker_type: {worker_type}
        control_socket: arbiter.ctl
        graceful_timeout: {graceful_timeout}
    """) + extra)
    server.start("-c", "server.yaml")


def answer(server) -> tuple[int, int, int]:
    pid, ppid, frozen = server.get("/").text.split()
    return int(pid), int(ppid), int(frozen)


def settled(server, condition, count: int = 3) -> dict:
    """The status once ``condition(status)`` holds and ``count`` workers are ready and
    serving."""
    def check() -> dict | None:
        snap = status(server)
        workers = snap["workers"]
        if len(workers) == count and all(w["ready"] and w["state"] in ("idle", "busy")
                                     for w in workers) and condition(snap):
            return snap
        return None
    return wait_for(check, 30, interval=0.2, message="the workers to settle")


@pytest.mark.parametrize("worker_type", ["preforked", "threaded", "pooled", "evented"])
def test_workers_are_reforked_from_a_warm_worker_without_a_failed_request(server, worker_type):
    start(server, "refork_after: [50, 50]\n", worker_type=worker_type)
    master = server.pid
    first = set(server.wait_workers(3))
    load = ClosedLoop(server.port, 3)
    try:
        # the second step: every worker but the mold is of refork generation 2
        snap = settled(server, lambda s: sum(w["refork_generation"] == 2
                                             for w in s["workers"]) == 2)
    finally:
        answered, failures = load.stop()
    assert failures == [], failures[:5]
    assert answered >= 100
    log = server.stderr
    assert "it is the mold" in log and "forked from worker #" in log
    workers = snap["workers"]
    molds = [w for w in workers if w["mold"]]
    assert len(molds) == 1 and molds[0]["refork_generation"] == 1
    assert snap["master"]["mold"] == molds[0]["pid"]
    assert not first & {w["pid"] for w in workers}  # every worker of the start replaced
    # the new workers are the master's own children, and say so themselves
    pids = {w["pid"] for w in workers}
    assert set(children_of(master)) == pids
    seen = {}
    for _ in range(30):
        pid, ppid, frozen = answer(server)
        seen[pid] = (ppid, frozen)
    assert all(ppid == master and frozen > 0 for ppid, frozen in seen.values()), seen
    ctl = subprocess.run([*ARBITER, "ctl", "-s", "arbiter.ctl", "status"],
                         cwd=server.workdir, capture_output=True, text=True, timeout=30)
    assert " 1.2 " in ctl.stdout and " 1.1* " in ctl.stdout, ctl.stdout

    # kill -9 a reforked worker: reaped and replaced (forked from the mold)
    victim = next(w["pid"] for w in workers if not w["mold"])
    os.kill(victim, signal.SIGKILL)
    snap = settled(server, lambda s: victim not in {w["pid"] for w in s["workers"]})
    assert f"(pid {victim}, generation 1) died (signal SIGKILL); replacing it" in server.stderr
    replacement = next(w for w in snap["workers"] if w["pid"] not in pids)
    assert replacement["refork_generation"] == 2
    assert set(children_of(master)) == {w["pid"] for w in snap["workers"]}
    assert snap["restarts"]["refork"] >= 4 and snap["restarts"]["crash"] == 1

    # one worker more (TTIN): it too is forked from the mold
    before = {w["pid"] for w in snap["workers"]}
    server.signal(signal.SIGTTIN)
    snap = settled(server, lambda s: True, count=4)
    [added] = [w for w in snap["workers"] if w["pid"] not in before]
    assert added["refork_generation"] == 2 and added["pid"] in children_of(master)

    # HUP: a fresh generation forked from the master, no mold
    reforked = {w["pid"] for w in snap["workers"]}
    server.signal(signal.SIGHUP)
    snap = settled(server, lambda s: s["master"]["generation"] == 2
                   and all(w["generation"] == 2 for w in s["workers"]), count=4)
    assert all(w["refork_generation"] == 0 and not w["mold"] for w in snap["workers"])
    assert snap["master"]["mold"] is None
    wait_for(lambda: not any(pid_alive(p) for p in reforked), message="the old workers to stop")

    # TERM stops them all
    last = {w["pid"] for w in snap["workers"]}
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    assert not any(pid_alive(p) for p in last)


def test_a_worker_type_that_cannot_refork_says_so_and_still_freezes_the_collector(server):
    start(server, "refork_after: [10]\n", workers=1, worker_type="forked")
    server.wait_log("refork_after: [10] (set by server.yaml:")
    assert "has no effect with worker_type forked: it applies to preforked, threaded, " \
        "pooled, evented and asgi only" in server.stderr
    [worker] = server.wait_workers(1)
    for _ in range(30):
        _, ppid, frozen = answer(server)  # a forked worker's child per connection
        assert ppid == worker and frozen > 0
    assert "it is the mold" not in server.stderr


def test_the_post_fork_hook_runs_in_each_worker_a_mold_forks(server):
    server.write_app("""
        import os
        def post_fork(master, worker):
            with open("post_fork.log", "a") as log:
                log.write(f"{os.getpid()} {worker.number}\\n")
    """, name="myhooks.py")
    start(server, "refork_after: [20]\nhooks:\n  post_fork: myhooks:post_fork\n")
    load = ClosedLoop(server.port, 2)
    try:
        snap = settled(server, lambda s: sum(w["refork_generation"] == 1
                                             for w in s["workers"]) == 2)
    finally:
        _, failures = load.stop()
    assert failures == []
    lines = (server.workdir / "post_fork.log").read_text().split("\n")
    calls = {tuple(int(x) for x in line.split()) for line in lines if line}
    assert {(w["pid"], w["number"]) for w in snap["workers"]} <= calls


def keep_alive_get(sock) -> tuple[int, str]:
    """GET / on a kept-alive socket: the status and the Connection header (lower case)."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers.get("connection", "")


def ask_the_mold_for_a_worker(server, sock: socket.socket, mold_pid: int) -> None:
    """Five kept-alive requests on ``sock`` make the only worker the mold (refork_after:
    [5]); then one worker more (TTIN): the master asks the mold for it."""
    for _ in range(5):
        assert keep_alive_get(sock) == (200, "")
    settled(server, lambda s: s["master"]["mold"] == mold_pid, count=1)
    server.signal(signal.SIGTTIN)


@pytest.mark.parametrize("worker_type", ["threaded", "pooled", "evented"])
def test_a_draining_mold_keeps_an_idle_kept_alive_connection_until_its_next_response(
        server, worker_type):
    """Asked for a worker, the mold stops accepting, but an idle kept-alive client is not
    cut: its next request is answered (``Connection: close``), then the mold forks."""
    start(server, "refork_after: [5]\nkeepalive: 30\nlog:\n  level: debug\n", workers=1,
          worker_type=worker_type)
    [mold_pid] = server.wait_workers(1)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        ask_the_mold_for_a_worker(server, sock, mold_pid)
        server.wait_log(f"(pid {mold_pid}) stops accepting to fork; 1 connection(s) to finish")
        assert keep_alive_get(sock) == (200, "close")  # idle through the drain's start
        assert sock.recv(1) == b""  # then closed in order, not reset
    finally:
        sock.close()
    snap = settled(server, lambda s: True, count=2)
    assert sorted(w["refork_generation"] for w in snap["workers"]) == [0, 1]
    assert mold_pid in {w["pid"] for w in snap["workers"]}
    assert "did not fork" not in server.stderr


@pytest.mark.parametrize("worker_type", ["pooled", "evented"])
def test_a_reactor_mold_that_cannot_drain_in_graceful_timeout_serves_on_unforked(
        server, worker_type):
    """A client idling on a kept-alive connection longer than ``graceful_timeout``: the
    mold gives the fork up rather than cut it, and accepts again; the master, its request
    unanswered within ``boot_timeout``, forks the worker itself."""
    start(server, "refork_after: [5]\nkeepalive: 30\nboot_timeout: 3\nlog:\n  level: debug\n",
          workers=1, worker_type=worker_type, graceful_timeout=1)
    [mold_pid] = server.wait_workers(1)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        ask_the_mold_for_a_worker(server, sock, mold_pid)
        server.wait_log(f"(pid {mold_pid}), the mold, still holds 1 connection(s) after "
                        "graceful_timeout: not forking")
        pid, _, _ = answer(server)  # it accepts again
        assert pid == mold_pid
        assert keep_alive_get(sock) == (200, "close")  # told to stop: its last response
        assert sock.recv(1) == b""
    finally:
        sock.close()
    server.wait_log("did not fork a worker within boot_timeout")
    snap = settled(server, lambda s: True, count=2)
    assert [w["refork_generation"] for w in snap["workers"]] == [0, 0]
    assert mold_pid in {w["pid"] for w in snap["workers"]}
