"""The ``asgi`` worker type, proved from outside: real ``arbiter`` serving ASGI apps.

A plain ASGI 3 app and an ASGI 2 one, FastAPI routes and JSON, a streamed
response, uploads (Content-Length and chunked), keep-alive and pipelining,
HEAD, 100-continue, an app error (500), a request past ``timeout`` (504, the
worker serves on), the lifespan (startup state, shutdown on stop, a failing
startup stops the start), the worker type picked by itself for an ASGI app,
the mismatch errors, and a graceful stop that lets a request in flight finish.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from harness import ARBITER, http_request, raw_exchange, status_of, wait_for

pytestmark = pytest.mark.timeout(60)

PLAIN_APP = """
async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello from asgi"})
"""

ASGI2_APP = """
class App:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2 " + self.scope["path"].encode()})

app = App
"""

FASTAPI_APP = """
import asyncio
import contextlib
import hashlib
import os

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lifespan.log")


def mark(text):
    with open(MARKS, "a") as f:
        f.write(text + "\\n")


@contextlib.asynccontextmanager
async def lifespan(app):
    mark(f"startup {os.getpid()}")
    yield {"booted_by": os.getpid()}
    mark(f"shutdown {os.getpid()}")


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def item(item_id: int, request: Request, q: str | None = None):
    return {"id": item_id, "q": q, "booted_by": request.state.booted_by,
            "path": request.url.path, "client": request.client.host,
            "scheme": request.url.scheme}


@app.get("/stream")
async def stream():
    async def pieces():
        for i in range(5):
            yield f"piece {i}\\n".encode()
            await asyncio.sleep(0.01)
    return StreamingResponse(pieces(), media_type="text/plain")


@app.post("/upload")
async def upload(request: Request):
    size = 0
    digest = hashlib.sha256()
    async for chunk in request.stream():
        size += len(chunk)
        digest.update(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


@app.get("/boom")
async def boom():
    raise RuntimeError("the app fell over")


@app.get("/sleep")
async def sleep(seconds: float):
    await asyncio.sleep(seconds)
    return {"slept": seconds}


HELD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "held")
RELEASED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "released")


@app.get("/held")
async def held():  # runs until the test creates the file "released" (at most 30 s)
    with open(HELD, "a") as f:
        f.write("held")
    for _ in range(1500):
        if os.path.exists(RELEASED):
            break
        await asyncio.sleep(0.02)
    return {"released": os.path.exists(RELEASED)}


@app.get("/halfway")
async def halfway():
    async def pieces():
        yield b"first piece\\n"
        raise RuntimeError("the stream broke")
    return StreamingResponse(pieces(), media_type="text/plain")


BIG_SENT = 0


@app.get("/big")
async def big():
    async def pieces():
        global BIG_SENT
        for _ in range(1600):  # 100 MiB
            BIG_SENT += 65536
            yield b"x" * 65536
    return StreamingResponse(pieces(), media_type="application/octet-stream")


@app.get("/big-sent")
async def big_sent():
    return {"sent": BIG_SENT}


@app.get("/until-disconnect")
async def until_disconnect(request: Request):
    while not await request.is_disconnected():
        await asyncio.sleep(0.05)
    mark("client disconnected")
    return {}
"""

FAILING_STARTUP_APP = """
import contextlib
from fastapi import FastAPI


@contextlib.asynccontextmanager
async def lifespan(app):
    raise RuntimeError("database unreachable")
    yield


app = FastAPI(lifespan=lifespan)
"""

WSGI_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]
"""


class _KeptOpen:
    """A buffered socket file that http.client may "close" after each response."""

    def __init__(self, file) -> None:
        self.file = file

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def close(self) -> None:
        return None


class _SharedReader:
    """A socket's one buffered reader, so responses read one after the other lose no
    bytes that arrived together (pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = _KeptOpen(sock.makefile("rb"))

    def makefile(self, mode: str):
        return self.file


_readers: dict[int, _SharedReader] = {}


def raw_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """The next response off a socket (Content-Length or chunked)."""
    import http.client

    reader = _readers.get(id(sock))
    if reader is None or reader.sock is not sock:
        reader = _readers[id(sock)] = _SharedReader(sock)
    resp = http.client.HTTPResponse(reader)  # type: ignore[arg-type]
    resp.begin()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


@pytest.fixture(scope="module")
def fastapi_server(make_module_server):
    server = make_module_server("fastapi")
    server.write_app(FASTAPI_APP, name="fa.py")
    # worker_type unset: the ASGI app picks asgi by itself.
    server.write_config(f"""
        app: fa:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        timeout: 2
        keepalive: 5
        graceful_timeout: 10
        limits:
          body: 2000000
        log:
          access_log: "-"
    """)
    server.start("-c", str(server.config_path), timeout=30)
    return server


# ---------------------------------------------------------------- plain apps, selection
def test_a_plain_asgi_app_is_served_with_the_asgi_type_picked_by_itself(server):
    server.write_app(PLAIN_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1")
    resp = server.get("/")
    assert (resp.status, resp.body) == (200, b"hello from asgi")
    assert resp.headers["content-length"] == "15"
    assert "ready: 1 asgi worker(s) serving" in server.wait_log("ready: 1 asgi")
    head = server.get("/", method="HEAD")
    assert (head.status, head.headers["content-length"], head.body) == (200, "15", b"")
    # lifespan: auto, and the app raises on the lifespan scope: served without it.
    assert "lifespan: the app does not support it (AssertionError" in server.stderr


def test_an_asgi2_double_callable_is_served(server):
    server.write_app(ASGI2_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "-k", "asgi")
    resp = server.get("/two")
    assert (resp.status, resp.body) == (200, b"asgi2 /two")


def run_arbiter(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ARBITER, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def test_check_picks_asgi_for_an_asgi_app_and_refuses_mismatches(tmp_path):
    (tmp_path / "fa.py").write_text(PLAIN_APP)
    (tmp_path / "wsgi.py").write_text(WSGI_APP)
    ok = run_arbiter(tmp_path, "check", "fa:app")
    assert ok.returncode == 0, ok.stderr
    assert "2 asgi worker(s)" in ok.stdout
    asgi_on_wsgi_type = run_arbiter(tmp_path, "check", "fa:app", "-k", "threaded")
    assert asgi_on_wsgi_type.returncode == 1
    assert ("app 'fa:app' is an ASGI application (async def app(scope, receive, send)), not "
            "a WSGI callable, but worker_type is 'threaded'") in asgi_on_wsgi_type.stderr
    wsgi_on_asgi = run_arbiter(tmp_path, "check", "wsgi:app", "-k", "asgi")
    assert wsgi_on_asgi.returncode == 1
    assert "app 'wsgi:app' is not an ASGI application" in wsgi_on_asgi.stderr
    assert "worker_type is 'asgi'" in wsgi_on_asgi.stderr


@pytest.mark.parametrize("preload", [False, True])
def test_a_wsgi_app_on_the_asgi_type_does_not_start(server, preload):
    server.write_app(WSGI_APP, name="wsgi.py")
    server.start("wsgi:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "-k", "asgi",
                 *(["--preload"] if preload else []), wait=False)
    assert server.wait_exit(20) == 1
    assert "app 'wsgi:app' is not an ASGI application" in server.stderr


def test_an_asgi_app_on_a_wsgi_type_does_not_start(server):
    server.write_app(PLAIN_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "-k", "pooled",
                 wait=False)
    assert server.wait_exit(20) == 1
    assert "but worker_type is 'pooled', which serves WSGI apps" in server.stderr


# ---------------------------------------------------------------- FastAPI
def test_fastapi_routes_json_and_lifespan_state(fastapi_server):
    resp = fastapi_server.get("/items/42?q=a%20b")
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    data = json.loads(resp.body)
    worker = fastapi_server.workers()[0]
    assert data == {"id": 42, "q": "a b", "booted_by": worker, "path": "/items/42",
                    "client": "127.0.0.1", "scheme": "http"}
    assert f"startup {worker}" in (fastapi_server.workdir / "lifespan.log").read_text()
    assert fastapi_server.get("/items/x").status == 422
    assert fastapi_server.get("/nowhere").status == 404


def test_forwarded_headers_from_a_trusted_peer_set_client_and_scheme(fastapi_server):
    resp = fastapi_server.get("/items/1", headers={"X-Forwarded-For": "203.0.113.9",
                                                  "X-Forwarded-Proto": "https"})
    data = json.loads(resp.body)
    assert (data["client"], data["scheme"]) == ("203.0.113.9", "https")


def test_a_streaming_response_goes_out_chunked(fastapi_server):
    with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = raw_response(sock)
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"".join(f"piece {i}\n".encode() for i in range(5))


@pytest.mark.parametrize("chunked", [False, True])
def test_an_upload_is_streamed_to_the_app(fastapi_server, chunked):
    payload = bytes(range(256)) * 4096  # 1 MiB
    with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=10) as sock:
        if chunked:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(payload), 100_000):
                piece = payload[start:start + 100_000]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                         % len(payload) + payload)
        status, _, body = raw_response(sock)
    assert status == 200
    assert json.loads(body) == {"size": len(payload),
                                "sha256": hashlib.sha256(payload).hexdigest()}


def test_keep_alive_and_pipelined_requests_come_back_in_order(fastapi_server):
    with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=10) as sock:
        sock.sendall(b"".join(b"GET /items/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
                              for i in range(3)))
        ids = [json.loads(raw_response(sock)[2])["id"] for _ in range(3)]
        sock.sendall(b"GET /items/9 HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection
        status, headers, body = raw_response(sock)
    assert ids == [0, 1, 2]
    assert (status, json.loads(body)["id"]) == (200, 9)
    assert headers.get("connection") != "close"


def test_head_gets_the_head_without_a_body(fastapi_server):
    raw = raw_exchange(fastapi_server.port,
                       b"HEAD /items/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    # FastAPI answers 405 for HEAD on a GET route; what matters is the framing.
    assert status_of(raw) in (200, 405)
    assert b"content-length:" in head.lower()
    assert body == b""


def test_100_continue_is_sent_when_the_app_reads_the_body(fastapi_server):
    with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        status, _, body = raw_response(sock)
    assert status == 200
    assert json.loads(body)["size"] == 5


def test_an_app_exception_is_a_500_with_the_traceback_in_the_log(fastapi_server):
    resp = fastapi_server.get("/boom")
    assert resp.status == 500
    assert b"Traceback" not in resp.body
    fastapi_server.wait_log("RuntimeError: the app fell over")
    assert fastapi_server.get("/items/1").status == 200


def test_a_request_past_timeout_gets_504_and_the_worker_serves_on(fastapi_server):
    worker = fastapi_server.workers()
    started = time.monotonic()
    resp = fastapi_server.get("/sleep?seconds=30", timeout=20)
    assert resp.status == 504
    assert 1.5 < time.monotonic() - started < 10
    log = fastapi_server.wait_log("ran longer than timeout (2 s): cancelled; its stack")
    assert "in sleep" in log  # the stack goes down to the app's own await
    assert fastapi_server.get("/items/7").status == 200
    assert fastapi_server.workers() == worker  # the same worker, not a replacement


def test_bad_requests_get_the_core_answers(fastapi_server):
    assert status_of(raw_exchange(fastapi_server.port, b"GARBAGE\r\n\r\n")) == 400
    assert status_of(raw_exchange(
        fastapi_server.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")) == 400
    assert fastapi_server.get("/items/3").status == 200


# ---------------------------------------------------------------- lifespan and stopping
def test_a_failing_lifespan_startup_stops_the_start(server):
    server.write_app(FAILING_STARTUP_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", wait=False)
    assert server.wait_exit(30) == 3
    assert "lifespan startup failed" in server.stderr
    assert "database unreachable" in server.stderr


def test_lifespan_on_with_an_app_without_lifespan_is_a_failed_boot(server):
    server.write_app("""
        async def app(scope, receive, send):
            if scope["type"] != "http":
                raise ValueError(f"unsupported scope {scope['type']}")
    """, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "--lifespan", "on",
                 wait=False)
    assert server.wait_exit(30) == 3
    assert "ValueError: unsupported scope lifespan" in server.stderr


def test_graceful_stop_finishes_the_request_in_flight_then_runs_shutdown(make_server):
    server = make_server("graceful")
    server.write_app(FASTAPI_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "--timeout", "20",
                 timeout=30)
    worker = server.workers()[0]
    result: dict = {}

    def slow_request() -> None:
        result["resp"] = http_request(server.port, "/held", timeout=20)

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_for(lambda: (server.workdir / "held").exists(), message="the request in the app")
    server.signal(signal.SIGTERM)
    server.wait_log("stopping gracefully")  # the stop has begun with the request in the app
    assert thread.is_alive()  # not answered yet: it runs until released
    (server.workdir / "released").touch()
    thread.join(20)
    assert result["resp"].status == 200
    assert json.loads(result["resp"].body) == {"released": True}
    assert server.wait_exit(20) == 0
    assert f"shutdown {worker}" in (server.workdir / "lifespan.log").read_text()


def test_uvloop_is_optional():
    """The worker falls back to asyncio's loop when uvloop is not importable."""
    code = ("import sys; sys.modules['uvloop'] = None\n"
            "from arbiter.io.event_loop import new_event_loop\n"
            "loop = new_event_loop(); print(type(loop).__module__); loop.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "asyncio.unix_events", out.stderr


def test_the_access_log_has_a_line_per_request(fastapi_server):
    fastapi_server.get("/items/31337?q=logged")
    wait_for(lambda: "GET /items/31337?q=logged HTTP/1.1\" 200" in fastapi_server.stdout,
             message="the access log line")


def test_a_chunked_body_over_the_limit_gets_413(fastapi_server):
    with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 500_000
        try:
            for _ in range(6):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except OSError:
            pass  # the server answered and closed while we were still sending
        status, _, _ = raw_response(sock)
    assert status == 413
    assert fastapi_server.get("/items/1").status == 200


def test_a_content_length_over_the_limit_gets_413_before_the_app(fastapi_server):
    raw = raw_exchange(fastapi_server.port, b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Length: 3000000\r\n\r\n")
    assert status_of(raw) == 413


def test_a_body_that_stalls_gets_408(fastapi_server):
    with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=15) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                     b"only ten b")
        status, _, _ = raw_response(sock)
    assert status == 408
    assert time.monotonic() - started < 10  # read_timeout (= timeout, 2 s) without a byte


def test_an_app_error_after_the_response_started_cuts_the_connection(fastapi_server):
    import http.client

    with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=10) as sock:
        sock.sendall(b"GET /halfway HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(http.client.IncompleteRead) as info:
            raw_response(sock)
    assert info.value.partial == b"first piece\n"
    fastapi_server.wait_log("RuntimeError: the stream broke")


def test_the_app_hears_that_its_client_went_away(fastapi_server):
    with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=10) as sock:
        sock.sendall(b"GET /until-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)  # the request reaches the app (nothing to poll from outside)
    marks = fastapi_server.workdir / "lifespan.log"
    wait_for(lambda: "client disconnected" in marks.read_text(), timeout=10,
             message="the app to see http.disconnect")


BLOCKING_APP = """
import os
import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        time.sleep(30)  # blocks the whole loop: no heartbeat
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_an_app_blocking_the_loop_is_killed_and_replaced_after_timeout(server):
    server.write_app(BLOCKING_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "--timeout", "1")
    [first] = server.workers()
    try:
        http_request(server.port, "/block", timeout=15)
    except OSError:
        pass  # the worker was killed under the request
    log = server.wait_log("the event loop has been blocked for", timeout=15)
    assert "time.sleep(30)  # blocks the whole loop" in log  # the blocking call, named
    assert "serving GET /block (" in log  # and the request it serves
    server.wait_log("timed out: silent for", timeout=15)
    wait_for(lambda: server.workers() and server.workers() != [first], timeout=15,
             message="a replacement worker")
    server.wait_serving()
    assert int(server.get("/").body) != first


def test_tls(make_server, tmp_path):
    import ssl

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = make_server("tls")
    server.write_app(PLAIN_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1",
                 "--certfile", str(tmp_path / "server.pem"), wait=False)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

    def https_get() -> bytes | None:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return raw_response(sock)[2]
        except OSError:
            return None

    assert wait_for(https_get, timeout=20, message="an https answer") == b"hello from asgi"


def test_a_kept_alive_connection_at_stop_gets_its_next_answer_with_connection_close(server):
    server.write_app(PLAIN_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "--keepalive", "10")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = raw_response(sock)
        assert (status, headers.get("connection")) == (200, None)
        server.signal(signal.SIGTERM)
        server.wait_log("stopping gracefully")
        time.sleep(0.2)  # the worker hears TERM from the master (nothing to poll from here)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # a client that does not retry
        status, headers, body = raw_response(sock)
        assert (status, headers.get("connection"), body) == (200, "close", b"hello from asgi")
    assert server.wait_exit(20) == 0


CLIENT_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    host, port = scope["client"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"{host} {port}".encode()})
"""


def test_proxy_protocol_names_the_client(server):
    server.write_app(CLIENT_APP, name="fa.py")
    server.write_config(f"""
        app: fa:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        proxy_protocol: v1
        header_timeout: 2
    """)
    server.start("-c", str(server.config_path), wait=False)
    server.wait_log("ready: 1 asgi worker(s) serving")
    raw = raw_exchange(server.port, b"PROXY TCP4 198.51.100.7 10.0.0.1 55555 80\r\n"
                                    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.endswith(b"\r\n\r\n198.51.100.7 55555")
    # From a proxy peer, no header (or a broken one) means no answer at all.
    for data in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PROXY TCP4 x\r\n\r\n"):
        try:
            assert raw_exchange(server.port, data) == b""
        except ConnectionResetError:
            pass  # closed with the request unread: a reset, as for every worker type


def test_the_example_config_serves_the_asgi_demo(server):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "config" / "asgi.yaml"
    server.start("-c", str(example), "-b", f"127.0.0.1:{server.port}", "-w", "1")
    resp = server.get("/demo")
    assert resp.status == 200
    assert b"(worker type <b>asgi</b>)" in resp.body
    assert b"<code>GET /demo</code> over HTTP/1.1" in resp.body
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0
    assert "lifespan" not in server.stderr  # startup and shutdown went quietly


def ctl_status(server) -> dict:
    result = subprocess.run([*ARBITER, "ctl", "-s", str(server.workdir / "control.sock"),
                             "status", "--json"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ctl_status_shows_asgi_requests_in_flight_and_counts_them(make_server):
    server = make_server("status")
    server.write_app(FASTAPI_APP, name="fa.py")
    # control_socket has no flag: set it from the environment
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "--timeout", "20",
                 env={"ARBITER_CONTROL_SOCKET": str(server.workdir / "control.sock")},
                 timeout=30)
    threads = [threading.Thread(target=http_request, args=(server.port, "/held"),
                                kwargs={"timeout": 20}) for _ in range(3)]
    for thread in threads:
        thread.start()

    def three_in_flight() -> dict | None:
        [worker] = ctl_status(server)["workers"]
        return worker if worker.get("in_flight") == 3 else None

    try:  # the three run until released
        worker = wait_for(three_in_flight, timeout=15, message="3 requests in flight")
    finally:
        (server.workdir / "released").touch()
    assert worker["state"] == "busy"
    assert (worker["current"]["method"], worker["current"]["path"]) == ("GET", "/held")
    for thread in threads:
        thread.join(20)
    # a response reaches its client a moment before the worker has counted it
    data = wait_for(lambda: (d := ctl_status(server))["requests"]["by_status"].get("2xx") == 3
                    and d, timeout=10, message="the 3 requests counted")
    assert data["master"]["worker_type"] == "asgi"
    assert data["requests"]["by_status"]["2xx"] == 3  # (the readiness poll got a 404)
    assert data["requests"]["by_method"]["GET"] == 4


LOOP_BLOCKING_UNTIL_RELEASED_APP = """
import os
import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        while not os.path.exists("released"):
            time.sleep(0.05)  # blocks the whole loop, until the test releases it
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})
"""


def test_ctl_status_shows_the_request_of_a_loop_blocked_in_it(make_server):
    # The row is written once a loop turn; a loop blocked inside the app has its row
    # written by the watchdog's thread, so the request that blocks it shows.
    server = make_server("blocked-status")
    server.write_app(LOOP_BLOCKING_UNTIL_RELEASED_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "--timeout", "20",
                 env={"ARBITER_CONTROL_SOCKET": str(server.workdir / "control.sock")},
                 timeout=30)
    client = threading.Thread(target=http_request, args=(server.port, "/block"),
                              kwargs={"timeout": 20})
    client.start()

    def blocked_in_flight() -> dict | None:
        [worker] = ctl_status(server)["workers"]
        return worker if worker.get("in_flight") == 1 else None

    try:
        worker = wait_for(blocked_in_flight, timeout=10, message="the blocked request shown")
        server.wait_log("the event loop has been blocked for", timeout=10)
    finally:
        (server.workdir / "released").touch()
    assert worker["state"] == "busy"
    assert (worker["current"]["method"], worker["current"]["path"]) == ("GET", "/block")
    client.join(20)
    wait_for(lambda: ctl_status(server)["workers"][0].get("in_flight") == 0, timeout=10,
             message="the worker idle again")
    assert "timed out: silent for" not in server.stderr  # blocked, but not for timeout


def test_max_requests_recycles_the_worker_without_dropping_a_request(server):
    server.write_app(PLAIN_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1",
                 "--max-requests", "5")
    [first] = server.workers()
    statuses = [server.get("/").status for _ in range(12)]
    assert statuses == [200] * 12
    server.wait_log("(max_requests): recycling once its replacement is ready")
    wait_for(lambda: server.workers() and first not in server.workers(), timeout=20,
             message="the first worker replaced")


def test_graceful_timeout_cuts_what_is_left_and_the_worker_exits(server):
    server.write_app(FASTAPI_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "--timeout", "60",
                 "--graceful-timeout", "1", timeout=30)
    outcome: dict = {}

    def slow_request() -> None:
        try:
            outcome["status"] = http_request(server.port, "/sleep?seconds=30", timeout=20).status
        except OSError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.3)  # the request reaches the app (nothing to poll from outside)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0
    assert time.monotonic() - started < 10
    # The worker cut it itself before the master's deadline, and ran the lifespan shutdown.
    assert "graceful_timeout reached with 1 connection(s) still open" in server.stderr
    assert "shutdown" in (server.workdir / "lifespan.log").read_text()
    thread.join(20)
    assert "error" in outcome


def test_many_clients_at_once_on_two_workers(server):
    from harness import preconnected_gets

    server.write_app(BLOCKING_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "2", "--max-connections",
                 "15", "--keepalive", "0.5")  # the clients keep their connections open
    server.wait_workers(2)
    responses = preconnected_gets(server.port, "/", 40)  # more than one worker may hold
    assert [r.status for r in responses] == [200] * 40
    assert {int(r.body) for r in responses} <= set(server.workers())


def test_a_client_that_does_not_read_holds_the_app_back_and_is_cut(fastapi_server):
    with socket.create_connection(("127.0.0.1", fastapi_server.port), timeout=15) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1.0)  # reading nothing (the app runs meanwhile: nothing to poll)
        sent = json.loads(fastapi_server.get("/big-sent").body)["sent"]
        assert 0 < sent < 16 * 1024 * 1024  # of 100 MiB: send() waited for the client
        received = 0
        time.sleep(2.5)  # past read_timeout (timeout, 2 s) without taking a byte
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < 50 * 1024 * 1024  # cut, not served to the end
    assert fastapi_server.get("/items/1").status == 200


def test_a_reload_whose_lifespan_startup_fails_rolls_back(server):
    server.write_app(PLAIN_APP, name="fa.py")
    server.write_config(f"""
        app: fa:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        control_socket: control.sock
    """)
    server.start("-c", "server.yaml")
    old = server.wait_workers(1)
    server.write_app(FAILING_STARTUP_APP, name="fa.py")
    result = subprocess.run([*ARBITER, "ctl", "-c", "server.yaml", "reload"],
                            cwd=server.workdir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "rolled back: a new worker failed to boot (exit code 3): lifespan startup failed" \
        in result.stderr
    assert server.wait_workers(1) == old
    assert server.get("/").body == b"hello from asgi"


def test_idle_keep_alive_closes_and_a_slow_head_gets_408(server):
    server.write_app(PLAIN_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "--keepalive", "0.5",
                 "--header-timeout", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw_response(sock)[0] == 200
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server once idle for keepalive
        assert time.monotonic() - started < 5
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
        assert status_of(sock.recv(1000)) == 408
        assert 0.9 < time.monotonic() - started < 5


def rss_kib(pid: int) -> int:
    from pathlib import Path

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


NOT_READING_APP = """
import asyncio


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/ignore-body":
        await asyncio.sleep(30)  # never asks for its body
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def test_an_upload_the_app_does_not_read_is_not_buffered(server):
    server.write_app(NOT_READING_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "--timeout", "60",
                 "--graceful-timeout", "1")
    [worker] = server.workers()
    before = rss_kib(worker)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 200000000\r\n\r\n")
        sock.settimeout(1.0)
        piece = b"x" * 65536
        try:
            while sent < 200_000_000:
                sent += sock.send(piece)
        except TimeoutError:
            pass  # the server stopped reading: the send buffer filled up
        grown = rss_kib(worker) - before
        assert server.get("/").status == 200  # the worker serves on meanwhile
    assert sent < 32 * 1024 * 1024  # of 200 MB: the kernel's buffers, then backpressure
    assert grown < 16 * 1024  # KiB: no copy of what was sent


def test_a_streaming_response_to_http_1_0_is_delimited_by_the_close(fastapi_server):
    raw = raw_exchange(fastapi_server.port, b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status_of(raw) == 200
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"".join(f"piece {i}\n".encode() for i in range(5))


PATHSEND_APP = """
import os

FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "big.bin")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    assert "http.response.pathsend" in scope["extensions"]
    path = FILE if scope["path"] == "/file" else FILE + ".missing"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.pathsend", "path": path})
"""


@pytest.mark.parametrize("loop", ["default", "asyncio"])
def test_pathsend_serves_a_file_whole_and_keeps_the_connection(server, tmp_path, loop):
    """``http.response.pathsend``: the file as the body with its Content-Length (the
    loop's sendfile on asyncio, blocks as the client takes them on uvloop); HEAD gets the
    head; a path that cannot be opened is the app's error, a 500."""
    content = os.urandom(3 * 1024 * 1024 + 17)
    (server.workdir / "big.bin").write_bytes(content)
    server.write_app(PATHSEND_APP)
    env = {}
    if loop == "asyncio":  # uvloop made unimportable in the worker
        hide = tmp_path / "no-uvloop"
        hide.mkdir()
        (hide / "uvloop.py").write_text("raise ImportError('hidden by the test')\n")
        env["PYTHONPATH"] = str(hide)
    server.start("-b", f"127.0.0.1:{server.port}", "-w", "1", "-k", "asgi", "app:app", env=env)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        for _ in range(2):  # the same connection twice: kept alive after a file
            conn.request("GET", "/file")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and resp.getheader("content-length") == str(len(content))
            assert body == content
        conn.request("HEAD", "/file")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
        assert resp.getheader("content-length") == str(len(content))
    finally:
        conn.close()
    assert http_request(server.port, "/missing").status == 500
    assert "big.bin.missing" in server.stderr
