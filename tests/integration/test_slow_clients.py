"""Slow clients can't pin capacity: every type cuts a trickler, and others are served.

A body trickled a byte at a time, a response read slowly, pipelined requests
behind slow ones: the connection's transfer budget (``min_transfer_rate``
after ``header_timeout`` of waiting) and, for ``preforked``, the hold limit
(``timeout``) free the worker; a GET beside them is answered at once.
"""

from __future__ import annotations

import socket
import textwrap
import threading
import time

import pytest
from harness import asgi_twin, http_request, status_of, wait_for

pytestmark = pytest.mark.timeout(60)

APP = """
import time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or 1))
    if path == "/upload":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(len(data)).encode()]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(50 * 1024 * 1024))])
        return (b"b" * (1024 * 1024) for _ in range(50))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [path.encode()]
"""


def start(server, worker_type: str, workers: int = 1, extra: str = "",
          header_timeout: float = 2) -> None:
    server.write_app(asgi_twin(APP, worker_type))
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: {workers}
        worker_type: {worker_type}
        threads: 2
        header_timeout: {header_timeout:g}
    """) + extra)
    server.start("-c", "server.yaml")
    server.wait_workers(workers)


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Read until the server closes; fail if it keeps the connection past ``seconds``."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s") from None
    except ConnectionResetError:
        pass
    return data


def test_a_trickled_body_is_cut_and_the_worker_serves_again(server, worker_type):
    """A byte every half second, on a one-worker server: cut (408) after about
    header_timeout (1 s here) of waiting, then the next client is served."""
    start(server, worker_type, header_timeout=1)
    trickler = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    stop = threading.Event()

    def trickle() -> None:
        try:
            trickler.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.5):
                trickler.sendall(b"t")
        except OSError:
            pass
    thread = threading.Thread(target=trickle)
    started = time.monotonic()
    thread.start()
    try:
        reply = closed_within(trickler, 15)
        elapsed = time.monotonic() - started
        assert status_of(reply) == 408, reply[:100]
        assert elapsed < 6, f"cut after {elapsed:.1f} s"
    finally:
        stop.set()
        thread.join(5)
        trickler.close()
    started = time.monotonic()
    assert http_request(server.port, "/next").status == 200
    assert time.monotonic() - started < 1.0


def test_preforked_is_not_pinned_by_a_slow_reader_past_timeout(server):
    """A 50 MB response read at 512 KiB/s, timeout 3: the worker is freed at about 3 s,
    so a GET to a one-worker server waits for that, not for the 100 s download."""
    start(server, "preforked", extra="timeout: 3\n")
    reader = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    reader.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    got = [0]
    done = threading.Event()

    def read_slowly() -> None:
        try:
            while not done.is_set():
                data = reader.recv(64 * 1024)
                if not data:
                    return
                got[0] += len(data)
                time.sleep(0.125)  # 512 KiB/s
        except OSError:
            pass
    thread = threading.Thread(target=read_slowly)
    thread.start()
    try:
        wait_for(lambda: got[0] > 0, 5, message="the download to start")
        started = time.monotonic()
        assert http_request(server.port, "/beside", timeout=20).status == 200
        waited = time.monotonic() - started
        assert waited < 5, f"the GET waited {waited:.1f} s behind the slow reader"
        assert got[0] < 50 * 1024 * 1024  # the download was cut, not finished
    finally:
        done.set()
        reader.close()
        thread.join(5)


@pytest.mark.parametrize("worker_type", ["preforked", "pooled", "evented"])
def test_a_get_beside_slow_uploads_is_answered_at_once(server, worker_type):
    """Two uploads of 2 MB trickled slowly; pooled with threads: 2, preforked with one
    free worker: a GET beside them is answered within a second."""
    start(server, worker_type, workers=3 if worker_type == "preforked" else 1)
    uploads = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nu"
                         % (2 * 1024 * 1024))
            uploads.append(sock)
        for _ in range(3):
            time.sleep(0.3)
            for sock in uploads:
                sock.sendall(b"u")
            started = time.monotonic()
            assert http_request(server.port, "/beside").status == 200
            assert time.monotonic() - started < 1.0
    finally:
        for sock in uploads:
            sock.close()


@pytest.mark.parametrize("worker_type", ["preforked", "threaded", "forked"])
def test_a_pipelined_head_behind_slow_requests_gets_its_own_clock(server, worker_type):
    """Two pipelined requests of 0.75 s each, and a third head split across writes: its
    header_timeout (1 s) counts from when it becomes the current request, not from its
    first byte -- no false 408."""
    start(server, worker_type, header_timeout=1)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    try:
        sock.sendall(b"GET /slow?0.75 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /slow?0.75 HTTP/1.1\r\nHost: x\r\n\r\nGET /third HT")
        time.sleep(1.75)  # the client's own pace: the rest of the third head, later
        sock.sendall(b"TP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        replies = closed_within(sock, 10)
    finally:
        sock.close()
    assert replies.count(b"HTTP/1.1 200 OK") == 3, replies[-300:]
    assert replies.endswith(b"/third")
