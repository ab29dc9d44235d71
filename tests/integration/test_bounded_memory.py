"""Memory is bounded by construction: worker RSS, read from /proc, while clients misbehave.

Half-sent uploads that stall, a streamed response to a client that reads
nothing, a large ``wsgi.file_wrapper`` download: the worker holds a small
buffer per connection (bodies past 64 KiB go to a temporary file, responses
are pulled from the app only as the client reads), never the whole of it.
Run on the reactor types (evented, pooled), where one process holds many
connections at once.
"""

from __future__ import annotations

import socket
import textwrap
import time
from pathlib import Path

import pytest
from harness import http_request, wait_for

pytestmark = pytest.mark.timeout(90)

MIB = 1024 * 1024

APP = """
import os

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":  # 300 x 1 MiB, produced as fast as it is taken
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * (1024 * 1024) for _ in range(300))
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open("big.bin", "rb"))
    if path == "/upload":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(len(data)).encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def start(server, worker_type: str, extra: str = "") -> int:
    server.write_app(APP)
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        worker_type: {worker_type}
        threads: 2
        timeout: 60
    """) + extra)
    server.start("-c", "server.yaml")
    (worker,) = server.wait_workers(1)
    return worker


@pytest.mark.parametrize("worker_type", ["evented", "pooled"])
def test_stalled_half_sent_uploads_cost_no_memory(server, worker_type):
    """40 clients declare 8 MB bodies, send 7 MB and stall: the bodies wait on disk."""
    worker = start(server, worker_type)
    assert http_request(server.port, "/").status == 200
    before = rss(worker)
    chunk = b"y" * MIB
    clients = []
    try:
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                         % (8 * MIB))
            clients.append(sock)
        for _ in range(7):
            for sock in clients:
                sock.sendall(chunk)
        peak = rss(worker)
        assert peak - before < 64 * MIB, f"worker RSS grew {(peak - before) / MIB:.0f} MiB"
        # the worker still serves others at once
        started = time.monotonic()
        assert http_request(server.port, "/").status == 200
        assert time.monotonic() - started < 1.0
        # and a body that does complete reaches the app whole
        clients[0].sendall(chunk)
        assert clients[0].recv(4096).endswith(b"\r\n\r\n%d" % (8 * MIB))
    finally:
        for sock in clients:
            sock.close()
    wait_for(lambda: rss(worker) - before < 32 * MIB, 10, message="RSS back down")


@pytest.mark.parametrize("worker_type", ["evented", "pooled"])
def test_a_response_to_a_client_that_reads_nothing_is_not_buffered(server, worker_type):
    worker = start(server, worker_type)
    assert http_request(server.port, "/").status == 200
    before = rss(worker)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        # the app would produce 300 MiB at once if it were let: give it the time
        deadline = time.monotonic() + 1.5
        peak = before
        while time.monotonic() < deadline:
            peak = max(peak, rss(worker))
            time.sleep(0.05)
        assert peak - before < 64 * MIB, f"worker RSS grew {(peak - before) / MIB:.0f} MiB"
        started = time.monotonic()
        assert http_request(server.port, "/").status == 200
        assert time.monotonic() - started < 1.0
    finally:
        sock.close()
    assert http_request(server.port, "/").status == 200


def test_a_large_file_goes_out_by_sendfile_without_memory(server):
    worker = start(server, "evented")
    (server.workdir / "big.bin").write_bytes(b"z" * (50 * MIB))
    assert http_request(server.port, "/").status == 200
    before = rss(worker)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    received = 0
    peak = before
    try:
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        received = len(head.split(b"\r\n\r\n", 1)[1])
        assert b"Content-Length: %d" % (50 * MIB) in head
        while received < 50 * MIB:  # read slowly: the worker must not copy ahead
            data = sock.recv(256 * 1024)
            if not data:
                break
            received += len(data)
            if received % (8 * MIB) < 256 * 1024:
                peak = max(peak, rss(worker))
                time.sleep(0.05)
    finally:
        sock.close()
    assert received == 50 * MIB
    assert peak - before < 16 * MIB, f"worker RSS grew {(peak - before) / MIB:.0f} MiB"
