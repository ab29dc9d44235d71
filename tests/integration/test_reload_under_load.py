"""Reload and upgrade under continuous load: not one request may fail.

A few client threads send requests back to back while the master is told to
HUP (five times, each once the previous reload completed) or to upgrade
(USR2, then WINCH and TERM to the old master). Half the clients send
``Connection: close``; the others keep their connection alive and behave like
every real HTTP client: a request on a *reused* connection that the server
closed while it was idle (EOF or ECONNRESET before any byte of the response)
is retried once on a new connection. Anything else is a failure: no complete
response on a fresh connection, a truncated response, a non-200 status, or a
retry that failed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from harness import asgi_twin, children_of, pid_alive, wait_for

APP = """
import os, time

PID = str(os.getpid()).encode()

def app(environ, start_response):
    time.sleep(0.002)
    body = b"pid " + PID
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

HUPS = 5


class Dropped(Exception):
    def __init__(self, why: str, got: int) -> None:
        super().__init__(why)
        self.got = got  # response bytes received before the connection ended


@dataclass
class Load:
    """Closed-loop clients: ``keepalive`` threads reusing connections, ``close`` threads not."""

    port: int
    keepalive: int = 3
    close: int = 4
    ok: int = 0
    retried: int = 0
    failures: list[str] = field(default_factory=list)
    served_by: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, worker pid)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i >= self.keepalive,),
                                         daemon=True)
                        for i in range(self.keepalive + self.close)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def completed(self) -> int:
        with self.lock:
            return self.ok

    def client(self, close: bool) -> None:
        request = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   + (b"Connection: close\r\n" if close else b"") + b"\r\n")
        sock: socket.socket | None = None
        while not self.stop.is_set():
            reused = sock is not None
            try:
                if sock is None:
                    sock = self.connect()
                status, pid, keep = self.exchange(sock, request)
            except Dropped as exc:
                sock = self.discard(sock)
                if not (reused and exc.got == 0):
                    self.fail(f"{'reused' if reused else 'fresh'} connection: {exc}")
                    continue
                with self.lock:  # closed while idle: retry once on a new connection
                    self.retried += 1
                try:
                    sock = self.connect()
                    status, pid, keep = self.exchange(sock, request)
                except Dropped as exc2:
                    sock = self.discard(sock)
                    self.fail(f"retry on a fresh connection: {exc2}")
                    continue
            if status != 200:
                self.fail(f"HTTP {status} from pid {pid}")
            else:
                with self.lock:
                    self.ok += 1
                    self.served_by.append((time.monotonic(), pid))
            if close or not keep:
                sock = self.discard(sock)
        self.discard(sock)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(f"{time.strftime('%H:%M:%S')} {what}")

    @staticmethod
    def discard(sock: socket.socket | None) -> None:
        if sock is not None:
            sock.close()
        return None

    def connect(self) -> socket.socket:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except OSError as exc:
            raise Dropped(f"connect: {exc!r}", 0) from None

    @staticmethod
    def exchange(sock: socket.socket, request: bytes) -> tuple[int, int, bool]:
        try:
            sock.sendall(request)
        except OSError as exc:
            raise Dropped(f"send: {exc!r}", 0) from None
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise Dropped("EOF before the end of the response head", len(buf))
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip().lower()
                       for k, _, v in (line.partition(b":") for line in lines[1:])}
            length = int(headers.get(b"content-length", b"0"))
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise Dropped(f"truncated: EOF after {len(body)}/{length} body bytes",
                                  len(buf))
                body += chunk
                buf += chunk
        except OSError as exc:  # ECONNRESET, timeout, ...
            raise Dropped(f"recv: {exc!r}", len(buf)) from None
        m = re.match(rb"pid (\d+)", body)
        return status, int(m.group(1)) if m else 0, headers.get(b"connection") != b"close"


def configure(server, worker_type: str) -> None:
    server.write_app(asgi_twin(APP, worker_type))
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
        worker_type: {worker_type}
        threads: 4
        graceful_timeout: 10
        log: {{level: info}}
    """)


def wait_served(load: Load, more: int, timeout: float = 15.0) -> None:
    target = load.completed() + more
    wait_for(lambda: load.completed() >= target, timeout,
             message=f"{more} more requests served (failures so far: {load.failures[:5]})")


@pytest.mark.timeout(40)
def test_hup_under_load_fails_no_request(server, worker_type):
    configure(server, worker_type)
    server.start("-c", "server.yaml")
    first = set(server.wait_workers(2))
    with Load(server.port) as load:
        wait_served(load, 20)
        for n in range(1, HUPS + 1):
            done = server.stderr.count("reload complete")
            server.signal(signal.SIGHUP)
            wait_for(lambda done=done: server.stderr.count("reload complete") > done, 20,
                     message=f"HUP #{n}: 'reload complete' in the log")
        wait_served(load, 20)  # the last generation serves too
    assert not load.failures, (f"{len(load.failures)} of {load.ok + len(load.failures)} "
                               f"requests failed across {HUPS} HUPs ({load.retried} idle "
                               f"keep-alive retries): {load.failures[:10]}\n"
                               f"{server.stderr[-3000:]}")
    assert "reload rolled back" not in server.stderr
    assert not first & set(server.workers()), "the workers were not replaced"
    assert server.proc.poll() is None


@pytest.mark.timeout(45)
@pytest.mark.parametrize("worker_type", ["preforked", "threaded", "pooled"])
def test_usr2_winch_term_old_under_load_fails_no_request(server, worker_type):
    configure(server, worker_type)
    server.start("-c", "server.yaml")
    old_workers = set(server.wait_workers(2))
    new_master = 0
    try:
        with Load(server.port) as load:
            wait_served(load, 20)
            server.signal(signal.SIGUSR2)
            text = server.wait_log("upgrade: new master started")
            new_master = int(re.search(r"new master started \(pid (\d+)\)", text).group(1))
            wait_for(lambda: server.stderr.count("ready: ") >= 2
                     and len([p for p in children_of(new_master) if pid_alive(p)]) == 2,
                     15, message="the new master's workers to be ready")
            new_workers = {p for p in children_of(new_master) if pid_alive(p)}
            server.signal(signal.SIGWINCH)
            wait_for(lambda: not any(pid_alive(p) for p in old_workers), 15,
                     message="the old workers to stop after WINCH")
            server.signal(signal.SIGTERM)
            assert server.wait_exit(15) == 0
            after_old = time.monotonic()
            wait_served(load, 30)
        assert not load.failures, (f"{len(load.failures)} of {load.ok + len(load.failures)} "
                                   f"requests failed across USR2/WINCH/TERM ({load.retried} "
                                   f"idle keep-alive retries): {load.failures[:10]}\n"
                                   f"{server.stderr[-3000:]}")
        # the new master serves alone, with the workers it started
        late = {pid for t, pid in load.served_by if t > after_old}
        assert late and late <= new_workers, (late, new_workers)
        assert pid_alive(new_master)
    finally:
        if new_master and pid_alive(new_master):
            os.kill(new_master, signal.SIGTERM)
            wait_for(lambda: not pid_alive(new_master), 15, message="the new master to stop")
