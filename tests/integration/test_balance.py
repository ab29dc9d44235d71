"""Workers share the load: a burst of keep-alive connections is dealt out, not swallowed.

Two workers of the types that hold many connections each (evented, pooled,
threaded) on one listening socket; 40 clients connect at once and keep their
connections; each response names the worker process that holds it. Every
worker must hold within ±25 % of its fair share. And a worker busy in one long
request must not make new clients wait for it.
"""

from __future__ import annotations

import collections
import socket
import textwrap
import threading
import time

import pytest
from harness import wait_for

pytestmark = pytest.mark.timeout(90)

APP = """
import os, time
def app(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":  # runs until the test creates the file "released"
        open("sleeping", "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists("released") and time.monotonic() < deadline:
            time.sleep(0.02)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

CLIENTS = 40


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed without a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk
        body += chunk
    return body


def start(make_server, worker_type: str, workers: int = 2):
    server = make_server()
    server.write_app(APP)
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: {workers}
        worker_type: {worker_type}
        threads: 4
        max_connections: 200
        keepalive: 30
    """))
    server.start("-c", "server.yaml")
    return server


def worker_pids(server) -> list[int]:
    pids = server.wait_workers(2, timeout=20)
    # Both booted and serving: each has answered a request of its own (a peer still
    # booting does not count for the others, which rightly take the whole burst then).
    answered: set[int] = set()

    def both_answered() -> bool:
        response = server.get("/", headers={"Connection": "close"})
        if response.status == 200:
            answered.add(int(response.body))
        return answered >= set(pids)

    wait_for(both_answered, timeout=20)
    return pids


@pytest.mark.parametrize("worker_type", ["evented", "pooled", "threaded"])
def test_a_burst_of_keepalive_clients_is_shared_between_the_workers(make_server, worker_type):
    server = start(make_server, worker_type)
    pids = worker_pids(server)
    socks = []
    try:
        for _ in range(CLIENTS):  # all connect before any sends: one burst in the backlog
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        holders = collections.Counter(int(read_response(sock)) for sock in socks)
        # The same connection again: the same worker still holds it (nothing reconnected).
        for sock in socks[:5]:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            read_response(sock)
    finally:
        for sock in socks:
            sock.close()
    assert set(holders) <= set(pids), (holders, pids)
    fair = CLIENTS / 2
    split = [holders.get(pid, 0) for pid in pids]
    assert all(abs(n - fair) <= fair / 4 for n in split), f"connections per worker: {split}"


def test_a_worker_busy_in_one_long_request_does_not_hold_back_new_clients(make_server):
    server = start(make_server, "evented")
    worker_pids(server)
    busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        busy.sendall(b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: (server.workdir / "sleeping").exists(), message="the long request")
        waits: list[float] = []
        errors: list[str] = []

        def client() -> None:
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    read_response(sock)
            except (OSError, AssertionError) as exc:
                errors.append(repr(exc))
            waits.append(time.monotonic() - started)

        threads = [threading.Thread(target=client) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert not errors, errors[:3]
        # Served by the other worker at once, not after the long request (still running).
        assert max(waits) < 2.0, sorted(waits)[-3:]
        (server.workdir / "released").touch()
        assert int(read_response(busy)) in server.workers()
    finally:
        busy.close()
