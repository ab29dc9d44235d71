"""The ``pooled`` worker's pattern, as a client sees it.

A fixed pool of ``threads`` threads runs the app; idle keep-alive connections
and slow clients wait in the selector, never in a pool thread (the starvation
of Gunicorn's gthread, #3518); ``max_connections`` bounds open connections.
"""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest
from harness import http_request, pid_alive, status_of, wait_for

pytestmark = pytest.mark.timeout(60)

APP = """
import os, threading, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or 1))
    if path == "/stuck":
        stuck_in_the_app()
    if path == "/echo":
        body = environ["wsgi.input"].read()
    else:
        body = f"{os.getpid()} {threading.get_ident()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

def stuck_in_the_app():
    while True:
        time.sleep(0.2)
"""


def start_pooled(server, threads: int, workers: int = 1, **settings: object) -> None:
    server.write_app(APP)
    config = {"app": "app:app", "bind": f'["127.0.0.1:{server.port}"]', "workers": workers,
              "worker_type": "pooled", "threads": threads, "graceful_timeout": 5, **settings}
    server.write_config("".join(f"{key}: {value}\n" for key, value in config.items()))
    server.start("-c", "server.yaml")
    server.wait_workers(workers)


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body from a keep-alive socket (b"" if closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def keepalive_client(port: int) -> socket.socket:
    """A connection that made one request and now idles (kept alive)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = read_response(sock)
    assert status_of(reply) == 200 and b"connection: close" not in reply.lower()
    return sock


def timed_get(port: int, path: str = "/", timeout: float = 10) -> tuple[float, int]:
    started = time.monotonic()
    status = http_request(port, path, timeout=timeout).status
    return time.monotonic() - started, status


def test_threads_slow_requests_run_in_parallel_in_one_process(server):
    start_pooled(server, threads=4)
    (worker,) = server.workers()
    bodies: list[str] = []

    def slow() -> None:
        bodies.append(http_request(server.port, "/sleep", timeout=10).text)

    started = time.monotonic()
    clients = [threading.Thread(target=slow) for _ in range(4)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(10)
    elapsed = time.monotonic() - started
    assert len(bodies) == 4
    assert elapsed < 2.5, f"4 one-second requests on 4 threads took {elapsed:.2f} s"
    pids = {body.split()[0] for body in bodies}
    threads = {body.split()[1] for body in bodies}
    assert pids == {str(worker)}
    assert len(threads) == 4


def test_fifty_idle_keepalive_connections_do_not_delay_a_new_request(server):
    start_pooled(server, threads=4, keepalive=30)
    idle = [keepalive_client(server.port) for _ in range(50)]  # 50 > threads
    try:
        for _ in range(3):
            elapsed, status = timed_get(server.port, "/new")
            assert status == 200
            assert elapsed < 0.5, f"a new request waited {elapsed:.2f} s behind idle clients"
        # the idle connections were kept, not dropped to make room
        for sock in idle[:: 10]:
            sock.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(read_response(sock)) == 200
    finally:
        for sock in idle:
            sock.close()


def test_slow_clients_get_408_and_never_hold_the_only_pool_thread(server):
    """threads: 1 -- a slowloris head and a trickling body wait in the selector, and are
    cut there: the head at header_timeout (1 s), the body by its transfer budget."""
    start_pooled(server, threads=1, header_timeout=1, keepalive=30)
    slowloris = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    trickler = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        trickler.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
        started = time.monotonic()
        reply = b""
        body_sent = 0
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            if select.select([slowloris], [], [], 0)[0]:
                break  # the server answered: read it
            slowloris.sendall(bytes([byte]))
            if body_sent < 8:
                trickler.sendall(b"b")
                body_sent += 1
            elapsed, status = timed_get(server.port, "/other")
            assert status == 200
            assert elapsed < 0.5, f"the only pool thread was held: waited {elapsed:.2f} s"
            time.sleep(0.5)
            if time.monotonic() - started > 6:
                break
        slowloris.settimeout(5)
        try:
            while chunk := slowloris.recv(65536):
                reply += chunk
        except OSError:
            pass
        assert status_of(reply) == 408
        assert time.monotonic() - started < 3.5
        # the body trickled at 2 bytes/s is under min_transfer_rate: cut too, with a 408,
        # once it has kept us waiting header_timeout (and it never held the pool thread)
        assert status_of(read_response(trickler)) == 408
        assert time.monotonic() - started < 5
    finally:
        slowloris.close()
        trickler.close()


def test_max_connections_bound_holds_and_waiting_clients_are_served(server):
    start_pooled(server, threads=2, max_connections=3, keepalive=30)
    idle = [keepalive_client(server.port) for _ in range(3)]
    try:
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        waiting.sendall(b"GET /waiting HTTP/1.1\r\nHost: x\r\n\r\n")
        # at the bound the worker does not accept: the client waits in the backlog
        assert not select.select([waiting], [], [], 1.0)[0]
        idle.pop().close()
        waiting.settimeout(5)
        assert status_of(read_response(waiting)) == 200
        waiting.close()
    finally:
        for sock in idle:
            sock.close()


def test_stuck_request_is_reported_and_the_worker_recycled(server):
    start_pooled(server, threads=2, timeout=1, graceful_timeout=1)
    (stuck_worker,) = server.workers()

    def stuck() -> None:
        try:
            http_request(server.port, "/stuck", timeout=20)
        except OSError:
            pass

    threading.Thread(target=stuck, daemon=True).start()
    # the other pool thread keeps serving while the first one is stuck
    assert server.get("/").status == 200
    server.wait_log("timed out", timeout=15)
    wait_for(lambda: "stuck_in_the_app" in server.stderr, message="the traceback in the log")
    assert "GET /stuck" in server.stderr
    wait_for(lambda: not pid_alive(stuck_worker), timeout=15,
             message="the stuck worker to be replaced")
    (new_worker,) = server.wait_workers(1)
    assert new_worker != stuck_worker
    assert server.get("/").text.split()[0] == str(new_worker)
