"""WebSockets on the ``asgi`` worker, proved from outside with a real client (websockets).

Echo of text and bytes and the scope, a client ping answered, close codes
both ways, a message over ``limits.websocket_message`` closed 1009, a denial
(close before accept) answered 403, the denial-response extension,
subprotocol negotiation, an app exception closing 1011 (500 before accept)
while the worker serves on, a malformed handshake answered without the app,
garbage frames closed 1002, the access log line (101) and ``ctl status``
(one request in flight), an idle socket pinged and closed, a handshake the
app never decides (504), a graceful stop, a HUP and a ``max_requests``
recycle closing an open WebSocket with 1001 (not cutting it, and dropping
no HTTP request), ``wss://`` over TLS, a FastAPI ``@app.websocket`` route,
and (when nginx is installed) a WebSocket through nginx.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ARBITER, Server, free_port, http_request, nginx_binary, running_nginx, wait_for

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

pytestmark = pytest.mark.timeout(60)

WS_APP = """
import asyncio
import json
import os

MARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "marks.log")


def mark(text):
    with open(MARKS, "a") as f:
        f.write(text + "\\n")


async def http(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"ok {os.getpid()}".encode()})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "http":
        return await http(scope, receive, send)
    path = scope["path"]
    assert (await receive())["type"] == "websocket.connect"
    if path == "/deny":
        await send({"type": "websocket.close", "code": 1008})
        return
    if path == "/teapot":
        await send({"type": "websocket.http.response.start", "status": 418,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"no socket for you"})
        return
    if path == "/boom-early":
        raise RuntimeError("refusing before accept")
    if path == "/undecided":
        await asyncio.sleep(60)
    offered = scope["subprotocols"]
    chosen = "chat.v2" if "chat.v2" in offered else None
    await send({"type": "websocket.accept", "subprotocol": chosen,
                "headers": [(b"x-served-by", str(os.getpid()).encode())]})
    if path == "/boom":
        raise RuntimeError("the handler failed")
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            mark(f"disconnect {path} {message['code']} {message.get('reason', '')}")
            return
        text = message.get("text")
        if text == "scope":
            shown = {k: v for k, v in scope.items() if k not in ("headers", "state", "extensions")}
            shown["raw_path"] = scope["raw_path"].decode()
            shown["query_string"] = scope["query_string"].decode()
            shown["header_names"] = [name.decode() for name, _ in scope["headers"]]
            await send({"type": "websocket.send", "text": json.dumps(shown)})
        elif text is not None and text.startswith("close:"):
            _, code, reason = text.split(":", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
"""

FASTAPI_WS_APP = """
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.get("/")
async def root():
    return {"ok": True}


@app.websocket("/ws/{room}")
async def room(websocket: WebSocket, room: str):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_json({"room": room, "said": text})
    except WebSocketDisconnect:
        pass
"""


def run(coro, timeout: float = 20.0):
    """Run a client coroutine, bounded."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def start_ws_server(server: Server, *args: str, graceful: int = 10, workers: int = 1,
                    extra: str = "") -> Server:
    server.write_app(WS_APP, name="wsapp.py")
    server.write_config(f"""
        app: wsapp:app
        bind: ["127.0.0.1:{server.port}"]
        workers: {workers}
        worker_type: asgi
        graceful_timeout: {graceful}
        limits:
          websocket_message: 1000
        log:
          access_log: "-"
        {extra}
    """)
    server.start("-c", str(server.config_path), *args, timeout=30)
    return server


def marks(server: Server) -> list[str]:
    path = server.workdir / "marks.log"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("ws"))
    try:
        yield start_ws_server(server)
    finally:
        server.stop()


def url(server: Server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


# ------------------------------------------------------------------------- messages
def test_echo_of_text_and_bytes_and_the_websocket_scope(ws_server):
    async def client():
        async with connect(url(ws_server, "/echo/%C3%A9?x=1"), compression=None) as ws:
            await ws.send("hello")
            text = await ws.recv()
            await ws.send(b"\x00\x01binary\xff")
            data = await ws.recv()
            await ws.send("x" * 1000)  # exactly the limit
            long = await ws.recv()
            await ws.send("scope")
            scope = json.loads(await ws.recv())
            return text, data, long, scope, ws.response.headers
    text, data, long, scope, headers = run(client())
    assert (text, data, long) == ("hello", b"\x00\x01binary\xff", "x" * 1000)
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["path"] == "/echo/é" and scope["raw_path"] == "/echo/%C3%A9"
    assert scope["query_string"] == "x=1" and scope["root_path"] == ""
    assert scope["asgi"]["version"] == "3.0" and scope["http_version"] == "1.1"
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", ws_server.port]
    assert scope["subprotocols"] == [] and "method" not in scope
    assert "sec-websocket-key" in scope["header_names"]
    assert "x-request-id" in scope["header_names"]
    assert headers["x-served-by"].isdigit()
    assert "sec-websocket-extensions" not in headers  # no permessage-deflate


def test_a_client_ping_gets_a_pong(ws_server):
    async def client():
        async with connect(url(ws_server, "/echo")) as ws:
            started = time.monotonic()
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            return time.monotonic() - started
    assert run(client()) < 5


def test_the_clients_close_code_reaches_the_app(ws_server):
    async def client():
        async with connect(url(ws_server, "/client-closes")) as ws:
            await ws.send("hi")
            await ws.recv()
            await ws.close(4000, "done here")
            return ws.close_code
    assert run(client()) == 4000
    wait_for(lambda: "disconnect /client-closes 4000 done here" in marks(ws_server), 10)


def test_the_apps_close_code_and_reason_reach_the_client(ws_server):
    async def client():
        async with connect(url(ws_server, "/app-closes")) as ws:
            await ws.send("close:4001:bye now")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd
    received = run(client())
    assert (received.code, received.reason) == (4001, "bye now")


def test_a_message_over_the_limit_is_closed_1009(ws_server):
    async def client():
        async with connect(url(ws_server, "/big"), compression=None) as ws:
            await ws.send("y" * 1001)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd
    assert run(client()).code == 1009
    wait_for(lambda: any(line.startswith("disconnect /big 1009") for line in marks(ws_server)),
             10)


def test_a_fragmented_message_over_the_limit_is_closed_1009(ws_server):
    async def client():
        async with connect(url(ws_server, "/fragments"), compression=None) as ws:
            await ws.send(iter([b"z" * 600, b"z" * 600]))  # two frames, one message
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd
    assert run(client()).code == 1009


# ------------------------------------------------------------------------- handshake
def test_a_close_before_accept_is_a_403(ws_server):
    async def client():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(ws_server, "/deny")):
                pass
        return refused.value.response
    response = run(client())
    assert response.status_code == 403


def test_the_denial_response_extension_sends_the_apps_response(ws_server):
    async def client():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(ws_server, "/teapot")):
                pass
        return refused.value.response
    response = run(client())
    assert (response.status_code, response.body) == (418, b"no socket for you")


def test_subprotocol_negotiation(ws_server):
    async def client(offered):
        async with connect(url(ws_server, "/echo"), subprotocols=offered) as ws:
            await ws.send("scope")
            return ws.subprotocol, json.loads(await ws.recv())["subprotocols"]
    assert run(client(["chat.v1", "chat.v2"])) == ("chat.v2", ["chat.v1", "chat.v2"])
    assert run(client(["chat.v1"])) == (None, ["chat.v1"])


def test_an_app_exception_closes_1011_or_answers_500_and_the_worker_serves_on(ws_server):
    before = ws_server.workers()

    async def client():
        async with connect(url(ws_server, "/boom")) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            code = closed.value.rcvd.code
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(ws_server, "/boom-early")):
                pass
        async with connect(url(ws_server, "/echo")) as ws:
            await ws.send("still here")
            return code, refused.value.response.status_code, await ws.recv()
    assert run(client()) == (1011, 500, "still here")
    log = ws_server.wait_log("RuntimeError: the handler failed")
    assert "Error in WebSocket /boom" in log
    assert "RuntimeError: refusing before accept" in ws_server.wait_log("refusing before accept")
    assert ws_server.workers() == before
    assert ws_server.get("/").status == 200


def handshake(port: int, version: bytes = b"13", key: bytes | None = None) -> socket.socket:
    key = key if key is not None else base64.b64encode(os.urandom(16))
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                 b"\r\nSec-WebSocket-Version: " + version + b"\r\n\r\n")
    return sock


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return data


def test_a_malformed_handshake_is_answered_without_the_app(ws_server):
    with handshake(ws_server.port, version=b"8") as sock:
        head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 426 ") and b"Sec-WebSocket-Version: 13" in head
    with handshake(ws_server.port, key=b"short") as sock:
        assert read_head(sock).startswith(b"HTTP/1.1 400 ")
    assert ws_server.get("/").status == 200


def test_garbage_after_the_handshake_is_closed_1002_and_the_worker_serves_on(ws_server):
    before = ws_server.workers()
    for junk in (b"\x81\x05hello",  # unmasked: a client must mask
                 b"\x8f\x80\x00\x00\x00\x00",  # an unknown opcode
                 b"\xff" * 64):
        sock = handshake(ws_server.port)
        with sock:
            assert read_head(sock).startswith(b"HTTP/1.1 101 ")
            sock.sendall(junk)
            frames = b""
            while piece := sock.recv(4096):
                frames += piece
        assert frames[0] == 0x88 and struct.unpack("!H", frames[2:4])[0] == 1002, frames
    assert ws_server.workers() == before
    assert ws_server.get("/").status == 200


def test_the_access_log_has_a_101_line_when_the_socket_ends(ws_server):
    async def client():
        async with connect(url(ws_server, "/logged?n=1")) as ws:
            await ws.send("x")
            await ws.recv()
    run(client())
    wait_for(lambda: '"GET /logged?n=1 HTTP/1.1" 101' in ws_server.stdout, 10,
             message="the 101 access log line")


def test_frames_sent_with_the_handshake_are_not_lost(ws_server):
    """A client that pipelines its first frame behind the handshake: the bytes the
    lifecycle already holds are handed over with the connection."""
    key = base64.b64encode(os.urandom(16))
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"early"))
    frame = b"\x81\x85" + mask + payload
    sock = socket.create_connection(("127.0.0.1", ws_server.port), timeout=10)
    with sock:
        sock.sendall(b"GET /early HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                     b"\r\nSec-WebSocket-Version: 13\r\n\r\n" + frame)
        data = b""
        while b"early" not in data:
            piece = sock.recv(4096)
            assert piece, data
            data += piece
    assert data.startswith(b"HTTP/1.1 101 ") and data.endswith(b"\x81\x05early")


def test_ctl_status_shows_an_open_websocket_in_flight_then_counts_it_101(make_server):
    server = start_ws_server(make_server(), extra="control_socket: control.sock")

    def status() -> dict:
        result = subprocess.run([*ARBITER, "ctl", "-c", "server.yaml", "status", "--json"],
                                cwd=server.workdir, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
    before = status()["requests"]["by_status"]["1xx"]

    def under_quarter_second() -> int:
        buckets = dict((str(bound), count)
                       for bound, count in status()["requests"]["duration_buckets"])
        return buckets["0.25"]
    short_before = under_quarter_second()

    async def client():
        async with connect(url(server, "/watched")) as ws:
            await ws.send("x")
            await ws.recv()
            worker = (await asyncio.to_thread(status))["workers"][0]
            await asyncio.sleep(1.2)  # open well past 0.25 s
        return worker
    worker = run(client())
    assert worker["in_flight"] == 1 and worker["state"] == "busy"
    assert worker["current"]["path"] == "/watched"
    wait_for(lambda: status()["requests"]["by_status"]["1xx"] == before + 1, 10,
             message="the ended WebSocket counted as a 1xx request")
    # Its duration is the handshake's, not the socket's lifetime.
    assert under_quarter_second() == short_before + 1


# ------------------------------------------------------------------------- idle
def test_an_idle_websocket_is_pinged_then_closed_when_silent(make_server):
    server = start_ws_server(make_server(), "--timeout", "1")
    sock = handshake(server.port)
    with sock:
        assert read_head(sock).startswith(b"HTTP/1.1 101 ")
        started = time.monotonic()
        frames = b""
        sock.settimeout(10)
        while True:  # this client answers nothing: a ping, then a close 1011, then EOF
            piece = sock.recv(4096)
            if not piece:
                break
            frames += piece
    took = time.monotonic() - started
    assert frames.startswith(b"\x89\x07arbiter")
    close = frames[9:]
    assert close[0] == 0x88 and struct.unpack("!H", close[2:4])[0] == 1011
    assert 1.5 <= took < 4.5  # the ping after timeout (1 s), the close one more later


def test_an_app_that_does_not_decide_within_timeout_gets_504_and_its_stack_logged(make_server):
    server = start_ws_server(make_server(), "--timeout", "1")

    async def client():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(server, "/undecided"), open_timeout=15):
                pass
        return refused.value.response.status_code
    started = time.monotonic()
    assert run(client()) == 504
    assert 0.75 < time.monotonic() - started < 10
    log = server.wait_log("not accepted or denied within timeout")
    assert "asyncio.sleep(60)" in log
    assert server.get("/").status == 200


# ------------------------------------------------------------------------- stopping
def test_a_graceful_stop_closes_an_open_websocket_with_1001(make_server):
    server = start_ws_server(make_server(), graceful=4)

    async def client():
        async with connect(url(server, "/held"), ping_interval=None) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            server.signal(signal.SIGTERM)
            stopped = time.monotonic()
            await asyncio.sleep(0.5)
            await ws.send("during the drain")  # not cut at the stop: still served
            assert await ws.recv() == "during the drain"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd, time.monotonic() - stopped
    received, after = run(client())
    assert received.code == 1001
    assert 1.0 < after < 4.0  # near graceful_timeout, before the worker is killed
    assert server.wait_exit(10) == 0
    assert "disconnect /held 1001" in " ".join(marks(server))
    assert "graceful_timeout reached" not in server.stderr


def test_hup_closes_the_old_workers_websocket_politely_and_drops_no_http_request(make_server):
    server = start_ws_server(make_server(), graceful=4)
    old = server.wait_workers(1)
    failures: list[object] = []
    statuses: list[int] = []
    done = threading.Event()

    def traffic() -> None:
        while not done.is_set():
            try:
                statuses.append(http_request(server.port, "/", timeout=5).status)
            except OSError as exc:
                failures.append(exc)

    async def client():
        async with connect(url(server, "/reloaded"), ping_interval=None) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            server.signal(signal.SIGHUP)
            hupped = time.monotonic()
            await asyncio.sleep(0.3)
            await ws.send("after the hup")
            assert await ws.recv() == "after the hup"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd, time.monotonic() - hupped
    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        received, after = run(client(), timeout=30)
    finally:
        done.set()
        thread.join(10)
    assert received.code == 1001 and after > 1.0
    assert failures == [] and statuses and set(statuses) == {200}
    new = wait_for(lambda: (w := server.workers()) and not set(w) & set(old) and w, 15)
    assert new

    async def again():
        async with connect(url(server, "/echo")) as ws:
            await ws.send("new worker")
            return await ws.recv()
    assert run(again()) == "new worker"


def test_a_recycle_at_max_requests_closes_an_open_websocket_with_1001(make_server):
    server = start_ws_server(make_server(), "--max-requests", "4", "--max-requests-jitter",
                             "0", graceful=4)
    old = server.wait_workers(1)

    async def client():
        async with connect(url(server, "/recycled"), ping_interval=None) as ws:
            await ws.send("open")
            assert await ws.recv() == "open"
            for _ in range(4):  # with the start-up poll, past max_requests
                assert (await asyncio.to_thread(server.get, "/")).status == 200
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd
    assert run(client(), timeout=30).code == 1001
    wait_for(lambda: (w := server.workers()) and not set(w) & set(old), 15,
             message="the recycled worker replaced")
    assert server.get("/").status == 200


def test_wss_over_tls_has_the_wss_scheme(make_server, tmp_path):
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    with open(cert, "wb") as out:
        for pem in issued.cert_chain_pems:
            out.write(pem.bytes())
    issued.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    server = make_server()
    server.write_app(WS_APP, name="wsapp.py")
    server.write_config(f"""
        app: wsapp:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        worker_type: asgi
        ssl:
          certfile: {cert}
          keyfile: {key}
    """)
    server.start("-c", str(server.config_path), wait=False)

    async def client():
        async with connect(f"wss://127.0.0.1:{server.port}/secure", ssl=context) as ws:
            await ws.send("scope")
            return json.loads(await ws.recv())["scheme"]

    def serving():
        if server.proc.poll() is not None:
            raise AssertionError(server.stderr)
        try:
            return run(client(), timeout=5)
        except OSError:
            return None
    assert wait_for(serving, 20, message="wss to answer") == "wss"


# ------------------------------------------------------------------------- FastAPI
def test_a_fastapi_websocket_route(make_server):
    pytest.importorskip("fastapi")
    server = make_server()
    server.write_app(FASTAPI_WS_APP, name="fa.py")
    server.start("fa:app", "-b", f"127.0.0.1:{server.port}", "-w", "1", "-k", "asgi",
                 timeout=30)

    async def client():
        async with connect(url(server, "/ws/lobby")) as ws:
            await ws.send("hello")
            return json.loads(await ws.recv())
    assert run(client()) == {"room": "lobby", "said": "hello"}
    assert server.get("/").status == 200


# ------------------------------------------------------------------------- nginx
NGINX_WS_CONF = """
{user}
worker_processes 1;
daemon off;
master_process on;
pid {base}/nginx.pid;
error_log {base}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def test_a_websocket_through_nginx(ws_server):
    nginx_binary()  # or the test is skipped, saying why
    base = Path(tempfile.mkdtemp(prefix="arbiter-ws-nginx-"))
    base.chmod(0o711)
    port = free_port()
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    conf = NGINX_WS_CONF.format(user=user, base=base, port=port, upstream=ws_server.port)
    try:
        with running_nginx(base, conf, port):
            async def client():
                async with connect(f"ws://127.0.0.1:{port}/via-nginx") as ws:
                    await ws.send("through nginx")
                    echoed = await ws.recv()
                    await ws.send("scope")
                    return echoed, json.loads(await ws.recv())
            echoed, scope = run(client())
            assert echoed == "through nginx"
            assert scope["path"] == "/via-nginx" and scope["client"][0] == "127.0.0.1"
    finally:
        shutil.rmtree(base, ignore_errors=True)
