"""HTTP as a client sees it from a running server, for both parsers."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest
from conftest import ALL_WORKER_TYPES
from harness import asgi_twin, raw_exchange, status_of, wait_for

pytestmark = pytest.mark.timeout(60)

APP = """
import wsgiref.validate

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("the app failed on purpose")
    if path == "/echo":
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        body = stream.read(int(length)) if length else stream.read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part {i}\\n".encode() for i in range(3))
    body = f"{environ['REQUEST_METHOD']} {path}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

validated = wsgiref.validate.validator(app)
"""

BAD_INPUTS = {
    "malformed request line": (b"GARBAGE\r\n\r\n", 400),
    "malformed header": (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
    "request line too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "too many headers": (b"GET / HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
    "header too long": (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    "body over limit": (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"
                        + b"x" * 2000, 413),
    "unsupported transfer-encoding": (b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                      b"Transfer-Encoding: gzip\r\n\r\n", 501),
    "content-length and transfer-encoding": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "conflicting content-length": (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                   b"Content-Length: 6\r\n\r\nhello!", 400),
    "app raises before responding": (b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n", 500),
}


# Every worker type with the default parser, and the parser parity on preforked.
SERVING_CONFIGS = [("preforked", "httptools"), ("preforked", "h11"), ("forked", "auto"),
                   ("threaded", "auto"), ("pooled", "auto"), ("evented", "auto")]


@pytest.fixture(scope="module", params=SERVING_CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}")
def running(request, make_module_server):
    worker_type, parser = request.param
    server = make_module_server(f"{worker_type}-{parser}")
    server.write_app(APP)
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
        worker_type: {worker_type}
        http_parser: {parser}
        limits: {{body: 1000}}
        header_timeout: 1
    """)
    server.start("-c", "server.yaml")
    server.wait_workers(2)
    return server


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gets_its_status_and_the_worker_serves_on(running, name):
    data, expected = BAD_INPUTS[name]
    workers = set(running.workers())
    reply = raw_exchange(running.port, data)
    assert status_of(reply) == expected, reply[:300]
    if expected == 500:
        assert b"the app failed on purpose" not in reply  # the traceback goes to the log only
        wait_for(lambda: "the app failed on purpose" in running.stderr,
                 message="the traceback in the error log")
    assert running.get("/after").text == "GET /after"
    assert set(running.workers()) == workers  # no worker died of it


def test_keep_alive_serves_several_requests_on_one_connection(running):
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as s:
        for i in range(3):
            s.sendall(f"GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = _read_response(s)
            assert reply.endswith(f"GET /k{i}".encode())
            assert b"connection: close" not in reply.lower()


def test_pipelined_requests_are_answered_in_order(running):
    data = b"".join(f"GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(4))
    data += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(running.port, data)
    positions = [reply.find(f"GET /p{i}".encode()) for i in range(4)]
    positions.append(reply.find(b"GET /last"))
    assert all(p >= 0 for p in positions) and positions == sorted(positions)


def test_chunked_request_body_is_decoded(running):
    data = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    reply = raw_exchange(running.port, data)
    assert status_of(reply) == 200
    assert reply.endswith(b"hello world")


def test_streamed_response_is_chunked(running):
    reply = raw_exchange(running.port, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"transfer-encoding: chunked" in reply.lower()
    assert b"part 2" in reply


def test_head_has_no_body(running):
    reply = raw_exchange(running.port, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert status_of(reply) == 200 and body == b""
    assert b"content-length: 7" in head.lower()


def test_expect_100_continue(running):
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        interim = s.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"data")
        assert _read_response(s).endswith(b"data")


@pytest.mark.parametrize("worker_type", ALL_WORKER_TYPES)  # wsgiref's validator is WSGI's
def test_validator_wrapped_app_runs_clean(make_server, worker_type):
    server = make_server()
    server.write_app(APP)
    server.start("-b", f"127.0.0.1:{server.port}", "-w", "1", "-k", worker_type, "app:validated")
    assert server.get("/v").text == "GET /v"
    assert server.get("/echo", method="POST", body=b"abc").text == "abc"
    assert server.get("/v", method="HEAD").status == 200
    assert "Traceback" not in server.stderr and "AssertionError" not in server.stderr


def test_slowloris_client_gets_408_and_others_are_served(running):
    """A head trickling in a byte at a time is cut after header_timeout (1 s here)."""
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as slow:
        started = time.monotonic()
        reply = b""
        try:
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
                if select.select([slow], [], [], 0)[0]:
                    break  # the server answered: stop sending, read it
                slow.sendall(bytes([byte]))
                assert running.get("/other", timeout=5).status == 200
                time.sleep(0.25)
                if time.monotonic() - started > 4:
                    break
        except OSError:
            pass  # the server cut us off mid-send
        slow.settimeout(5)
        try:
            while chunk := slow.recv(65536):
                reply += chunk
        except OSError:
            pass
    assert status_of(reply) == 408
    assert time.monotonic() - started < 4


def test_fifty_keepalive_clients_on_two_workers_are_all_served(running):
    """The preforked trap: keep-alive must not starve the clients queued behind."""
    served = [0] * 50
    latencies: list[float] = []
    stop = time.monotonic() + 3
    lock = threading.Lock()

    failures: list[str] = []

    def client(i: int) -> None:
        conn = None
        try:
            while time.monotonic() < stop:
                fresh = conn is None
                if conn is None:
                    conn = socket.create_connection(("127.0.0.1", running.port), timeout=10)
                t0 = time.monotonic()
                try:
                    conn.sendall(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
                    reply = _read_response(conn)
                except OSError as exc:
                    reply, error = b"", exc
                else:
                    error = None
                if not reply:
                    conn.close()
                    conn = None
                    if fresh:  # a new connection must be answered
                        failures.append(f"client {i}: {error or 'closed without a response'}")
                        return
                    continue  # an idle keep-alive connection was closed: retry, as clients do
                with lock:
                    latencies.append(time.monotonic() - t0)
                served[i] += 1
                if b"connection: close" in reply.lower():
                    conn.close()
                    conn = None
        except OSError as exc:
            failures.append(f"client {i}: {exc}")
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not failures, failures[:5]
    assert all(n > 0 for n in served), f"unserved clients: {served.count(0)}"
    # Starvation shows as waits of a whole keep-alive period (5 s) or the whole run;
    # a loaded 2-core box forking a child per connection stays well below that.
    assert max(latencies) < 4.0


def _read_response(s: socket.socket) -> bytes:
    """Read one response with a Content-Length body from a keep-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
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
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_an_idle_keepalive_connection_does_not_hold_back_a_new_client(make_server, worker_type):
    """One worker, one idle keep-alive client: a second client is served at once."""
    server = make_server()
    server.write_app(asgi_twin(APP, worker_type))
    server.start("-b", f"127.0.0.1:{server.port}", "-w", "1", "-k", worker_type,
                 "--keepalive", "30", "app:app")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
        idle.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(idle).endswith(b"GET /first")
        started = time.monotonic()
        assert server.get("/second", timeout=10).text == "GET /second"
        assert time.monotonic() - started < 2.0  # not the 30 s keep-alive
