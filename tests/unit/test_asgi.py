"""The ASGI layer without sockets: the scope, ASGI 2 wrapping, response framing, lifespan."""

from __future__ import annotations

import asyncio
import logging

import pytest

from arbiter.asgi.handler import ASGIHandler, as_asgi3
from arbiter.asgi.lifespan import Lifespan, LifespanFailed
from arbiter.http import HTTPConnection, HTTPSettings
from arbiter.http.app_response import AppResponse
from arbiter.http.parsers import make_head_parser


async def asgi_app(scope, receive, send):
    return None


def handler(**settings) -> ASGIHandler:
    return ASGIHandler(asgi_app, HTTPSettings(**settings), logging.getLogger("test.asgi"))


def request_of(raw: bytes, h: ASGIHandler):
    http = HTTPConnection(h.settings, make_head_parser("h11"))
    http.receive_data(raw)
    return http.next_event()


def scope_of(raw: bytes, peer=("127.0.0.1", 5000), sockname=("127.0.0.1", 8000), **settings):
    h = handler(**settings)
    info = h.connection_info(peer, sockname)
    return h.build_scope(request_of(raw, h), info, sockname)


def test_the_http_scope() -> None:
    scope, environ = scope_of(b"GET /caf%C3%A9/x%2Fy?q=1&r=%20 HTTP/1.1\r\nHost: example.com\r\n"
                              b"X-Custom: Yes\r\nX-Request-ID: abc-123\r\n\r\n")
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert (scope["http_version"], scope["method"], scope["scheme"]) == ("1.1", "GET", "http")
    assert scope["path"] == "/café/x/y"
    assert scope["raw_path"] == b"/caf%C3%A9/x%2Fy"
    assert scope["query_string"] == b"q=1&r=%20"
    assert scope["root_path"] == ""
    assert scope["headers"] == [(b"host", b"example.com"), (b"x-custom", b"Yes"),
                                (b"x-request-id", b"abc-123")]
    assert scope["client"] == ("127.0.0.1", 5000)
    assert scope["server"] == ("127.0.0.1", 8000)
    assert scope["state"] == {}
    assert environ is None  # nothing needed one: the scope came straight from the request


def test_the_scope_without_an_environ_is_the_one_derived_from_it() -> None:
    raw = (b"GET /caf%C3%A9/x%2Fy?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Custom: Yes\r\n"
           b"X-Request-ID: abc-123\r\nX-Request-ID: def\r\n\r\n")
    for peer in (("127.0.0.1", 5000), ("10.1.2.3", 4000)):  # a trusted peer, an untrusted one
        h = handler()
        sockname = ("127.0.0.1", 8000)
        info = h.connection_info(peer, sockname)
        request = request_of(raw, h)
        direct, none = h.build_scope(request, info, sockname)
        derived, environ = h.scope_from_environ(request, info, sockname)
        assert none is None and direct == derived
        assert environ["PATH_INFO"] == "/café/x/y".encode().decode("latin-1")


def test_an_absolute_form_target_names_the_host() -> None:
    scope, _ = scope_of(b"GET http://example.org:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
    assert (scope["path"], scope["query_string"]) == ("/p", b"q")
    assert [v for n, v in scope["headers"] if n == b"host"] == [b"example.org:8080"]


def test_a_request_without_an_id_gets_a_new_one() -> None:
    ids = set()
    for _ in range(2):
        scope, _ = scope_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [rid] = [v for n, v in scope["headers"] if n == b"x-request-id"]
        assert len(rid) == 32 and int(rid, 16) >= 0
        ids.add(rid)
    assert len(ids) == 2


def test_a_trusted_proxy_names_the_client_and_the_scheme() -> None:
    raw = (b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n"
           b"X-Forwarded-Proto: https\r\n\r\n")
    scope, _ = scope_of(raw)
    assert (scope["client"], scope["scheme"]) == (("203.0.113.7", 0), "https")
    untrusted, _ = scope_of(raw, peer=("10.1.2.3", 4000))
    assert (untrusted["client"], untrusted["scheme"]) == (("10.1.2.3", 4000), "http")


def test_a_unix_socket_and_a_mount_prefix_from_the_proxy() -> None:
    scope, _ = scope_of(b"GET /api/users HTTP/1.1\r\nHost: x\r\nSCRIPT_NAME: /api\r\n\r\n",
                        peer="", sockname="/run/app.sock")
    assert scope["client"] is None
    assert scope["server"] == ("/run/app.sock", None)
    assert (scope["root_path"], scope["path"]) == ("/api", "/api/users")


def test_state_is_a_shallow_copy_per_request() -> None:
    h = handler()
    h.state["pool"] = pool = object()
    raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    scope, _ = h.build_scope(request_of(raw, h), h.connection_info(("127.0.0.1", 1), ("", 0)),
                             ("127.0.0.1", 8000))
    scope["state"]["per_request"] = 1
    assert scope["state"]["pool"] is pool
    assert "per_request" not in h.state


def test_an_asgi2_app_is_called_as_asgi3() -> None:
    seen = []

    class App:
        def __init__(self, scope):
            seen.append(scope["type"])

        async def __call__(self, receive, send):
            seen.append(await receive())

    async def receive():
        return "message"

    asyncio.run(as_asgi3(App, asgi2=True)({"type": "http"}, receive, None))
    assert seen == ["http", "message"]
    assert as_asgi3(asgi_app, asgi2=False) is asgi_app


def response(raw: bytes) -> AppResponse:
    h = handler()
    request = request_of(raw, h)
    return AppResponse(h, {}, request, lambda: True)


def test_send_body_in_one_piece_gets_a_content_length() -> None:
    r = response(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r.start_response("200", [("content-type", "text/plain")])
    r.send_body(b"hello", more=False)
    [piece] = r.take_pending()
    assert piece.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                            b"Content-Length: 5\r\n")
    assert piece.endswith(b"\r\n\r\nhello")
    assert r.finished and r.keep_alive


def test_send_body_in_pieces_is_chunked_and_the_head_goes_with_an_empty_first_piece() -> None:
    r = response(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r.start_response("200", [])
    r.send_body(b"", more=True)
    [head] = r.take_pending()
    assert b"Transfer-Encoding: chunked\r\n" in head
    r.send_body(b"abc", more=True)
    r.send_body(b"", more=False)
    assert b"".join(r.take_pending()) == b"3\r\nabc\r\n0\r\n\r\n"
    assert r.finished


def test_head_and_a_declared_length_send_no_body() -> None:
    r = response(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    r.start_response("200", [("content-length", "5")])
    r.send_body(b"hello", more=False)
    [piece] = r.take_pending()
    assert piece.endswith(b"\r\n\r\n")
    assert b"content-length: 5\r\n" in piece


def test_answer_instead_after_the_head_is_a_cut() -> None:
    r = response(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r.start_response("200", [])
    r.send_body(b"abc", more=True)
    r.take_pending()
    r.answer_instead(504)
    assert r.take_pending() == []
    assert not r.keep_alive and r.finished
    r2 = response(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r2.answer_instead(504)
    [answer] = r2.take_pending()
    assert answer.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")


# ---------------------------------------------------------------- the lifespan

def run_lifespan(app, mode: str = "auto", state: dict | None = None):
    log = logging.getLogger("test.lifespan")
    state = {} if state is None else state

    async def both() -> Lifespan:
        lifespan = Lifespan(app, mode, state, log)
        await lifespan.startup(5)
        await lifespan.shutdown(5)
        return lifespan

    return asyncio.run(both())


def test_startup_and_shutdown_with_state() -> None:
    seen = []

    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    state: dict = {}
    assert run_lifespan(app, state=state).supported
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert state == {"db": "connected"}


async def no_lifespan(scope, receive, send):
    raise ValueError("only http")


def test_auto_serves_an_app_that_raises_on_lifespan_without_it() -> None:
    assert not run_lifespan(no_lifespan, "auto").supported
    with pytest.raises(LifespanFailed, match="ValueError: only http"):
        run_lifespan(no_lifespan, "on")
    assert not run_lifespan(no_lifespan, "off").supported


def test_startup_failed_is_a_failed_boot_even_on_auto() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(LifespanFailed, match="lifespan startup failed: no database"):
        run_lifespan(app, "auto")


def test_a_startup_that_never_answers_fails_within_its_bound() -> None:
    async def app(scope, receive, send):
        await receive()
        await asyncio.sleep(60)

    async def startup() -> None:
        await Lifespan(app, "on", {}, logging.getLogger("test")).startup(0.05)

    with pytest.raises(LifespanFailed, match="no answer to lifespan.startup within 0.05 s"):
        asyncio.run(startup())
