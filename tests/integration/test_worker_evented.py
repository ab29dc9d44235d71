"""The ``evented`` worker's pattern, proved from outside: one thread holds many clients.

One worker keeps 1,000 idle keep-alive connections and 100 slowloris clients
open and still answers a new request in well under a second; the slowloris
clients get 408 after ``header_timeout``; pipelined requests come back in
order; the ``max_connections`` bound holds (the next client waits in the
backlog, it is not refused); a client that never reads its response is dropped
while everyone else is served.
"""

from __future__ import annotations

import resource
import selectors
import socket
import threading
import time
from pathlib import Path

import pytest
from harness import http_request, status_of, wait_for

pytestmark = pytest.mark.timeout(60)

APP = """
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/big":
        body = b"x" * (32 * 1024 * 1024)
    elif path == "/echo":
        body = environ["wsgi.input"].read()
    else:
        body = path.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

IDLE_CLIENTS = 1000
SLOWLORIS_CLIENTS = 100
HEADER_TIMEOUT = 3.0


def raise_own_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def worker_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class ResponseReader:
    """Reads responses with a Content-Length body off one blocking socket, in order."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0) -> None:
        self.sock = sock
        self.buffer = b""
        sock.settimeout(timeout)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def next(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                return self.buffer
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length and self._fill():
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
        self.buffer = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]


def read_response(sock: socket.socket) -> bytes:
    return ResponseReader(sock).next()


def tcp_state(local_port: int, remote_port: int) -> str | None:
    """The kernel's state of a 127.0.0.1 TCP socket (hex code from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].split(":")[1], 16) == local_port
                and int(fields[2].split(":")[1], 16) == remote_port):
            return fields[3]
    return None


TCP_ESTABLISHED = "01"


@pytest.fixture
def evented(server):
    server.write_app(APP)

    def start(extra: str = "", max_connections: int = 2000) -> object:
        server.write_config(f"""
            app: app:app
            bind: ["127.0.0.1:{server.port}"]
            workers: 1
            worker_type: evented
            max_connections: {max_connections}
            keepalive: 60
            header_timeout: {HEADER_TIMEOUT}
            {extra}
        """)
        server.start("-c", "server.yaml")
        server.wait_workers(1)
        return server
    return start


def test_thousand_idle_and_hundred_slowloris_do_not_delay_a_new_request(evented):
    raise_own_fd_limit(4096)
    server = evented()
    (worker,) = server.workers()
    rss_before = worker_rss_kib(worker)
    idle: list[socket.socket] = []
    slow: list[socket.socket] = []
    stop_trickle = threading.Event()
    try:
        for i in range(IDLE_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /idle%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            reply = read_response(sock)
            assert status_of(reply) == 200 and reply.endswith(b"/idle%d" % i), reply[-100:]
            idle.append(sock)

        slow_started = time.monotonic()
        for _ in range(SLOWLORIS_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(sock)

        def trickle() -> None:  # one more header byte every 0.5 s, never the end of the head
            while not stop_trickle.wait(0.5):
                for sock in slow:
                    try:
                        sock.send(b"a")
                    except OSError:
                        pass
        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()

        latencies = []
        for _ in range(5):
            started = time.monotonic()
            response = http_request(server.port, "/new", timeout=5)
            latencies.append(time.monotonic() - started)
            assert response.status == 200 and response.body == b"/new"
            time.sleep(0.3)
        rss = worker_rss_kib(worker)
        print(f"\nevented worker pid {worker}: {IDLE_CLIENTS} idle keep-alive + "
              f"{SLOWLORIS_CLIENTS} slowloris connections open; new-request latency "
              f"max {max(latencies) * 1000:.1f} ms; VmRSS {rss / 1024:.1f} MiB "
              f"(at boot {rss_before / 1024:.1f} MiB)")
        assert max(latencies) < 1.0, latencies

        # Every slowloris client gets 408 once header_timeout has passed, then EOF.
        replies = {sock: b"" for sock in slow}
        done_at: dict[socket.socket, float] = {}
        with selectors.DefaultSelector() as selector:
            for sock in slow:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            deadline = slow_started + HEADER_TIMEOUT + 10
            while len(done_at) < len(slow) and time.monotonic() < deadline:
                for key, _ in selector.select(0.5):
                    sock = key.fileobj
                    try:
                        chunk = sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        chunk = b""
                    replies[sock] += chunk
                    if not chunk:
                        done_at[sock] = time.monotonic()
                        selector.unregister(sock)
        assert len(done_at) == len(slow), f"{len(slow) - len(done_at)} slowloris still open"
        assert all(status_of(reply) == 408 for reply in replies.values())
        first_cut = min(done_at.values()) - slow_started
        assert first_cut >= HEADER_TIMEOUT - 0.5, first_cut  # not cut before its time
        stop_trickle.set()

        # The idle connections were held all along: each still answers on the same socket.
        for i, sock in enumerate(idle):
            sock.sendall(b"GET /again%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        for i, sock in enumerate(idle):
            reply = read_response(sock)
            assert status_of(reply) == 200 and reply.endswith(b"/again%d" % i)
        assert server.workers() == [worker]  # one process did all of it
    finally:
        stop_trickle.set()
        for sock in idle + slow:
            sock.close()


def test_pipelined_requests_are_answered_in_order(evented):
    server = evented()
    requests = (b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo"
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nthree\r\n0\r\n\r\n"
                b"GET /four HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(requests)
        reader = ResponseReader(sock)
        bodies = [reader.next().partition(b"\r\n\r\n")[2] for _ in range(4)]
        assert sock.recv(100) == b""  # closed after the Connection: close one
    assert bodies == [b"/one", b"two", b"three", b"/four"]


def test_max_connections_bound_holds_and_the_next_client_waits(evented):
    server = evented(max_connections=3)
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(read_response(sock)) == 200
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        held.append(waiting)
        waiting.sendall(b"GET /waiting HTTP/1.1\r\nHost: x\r\n\r\n")
        waiting.settimeout(0.5)
        with pytest.raises(TimeoutError):  # in the backlog: not refused, not yet served
            waiting.recv(100)
        held[0].close()  # one slot frees up: the waiting client is accepted and served
        reply = read_response(waiting)
        assert status_of(reply) == 200 and reply.endswith(b"/waiting")
    finally:
        for sock in held:
            sock.close()


def test_a_client_that_never_reads_is_dropped_and_others_are_served(evented):
    server = evented("timeout: 2")  # the write stall limit is `timeout`
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # 32 MiB, not read
        server_side = (server.port, stuck.getsockname()[1])
        assert tcp_state(*server_side) == TCP_ESTABLISHED
        started = time.monotonic()
        response = http_request(server.port, "/other", timeout=5)
        assert response.status == 200 and time.monotonic() - started < 1.0
        wait_for(lambda: tcp_state(*server_side) != TCP_ESTABLISHED, timeout=10,
                 message="the worker to drop the client that does not read")
        assert time.monotonic() - started >= 1.5  # dropped for stalling, not at once
    assert http_request(server.port, "/after").status == 200
