"""WebSockets without sockets: the lifecycle's hand-over, the handshake checks, the
websocket scope, and a session's bounded inbox and size limit over a fake transport."""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from arbiter.asgi.handler import ASGIHandler
from arbiter.asgi.websocket import (
    INBOX_MESSAGES,
    WebSocketSession,
    handshake_problem,
    wants_websocket,
)
from arbiter.http import HTTPConnection, HTTPSettings
from arbiter.http.app_response import ClientDisconnected
from arbiter.http.lifecycle import CLOSED, RESPOND, UPGRADED, Lifecycle
from arbiter.http.parsers import make_head_parser

pytestmark = pytest.mark.timeout(10)

KEY = base64.b64encode(b"0123456789abcdef")
UPGRADE = (b"GET /chat?room=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " + KEY +
           b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\n\r\n")


class Recorder:
    def __init__(self) -> None:
        self.events: list = []
        self.queued: list = []

    def request_started(self, method: str, path: str, key: object = None) -> None:
        self.events.append(("start", method, path))

    def request_finished(self, status: int, key: object = None,
                         duration: float | None = None) -> None:
        self.events.append(("finish", status))

    def request_queued(self, seconds: float, shed: bool) -> None:
        self.queued.append((seconds, shed))


def lifecycle(**settings) -> tuple[Lifecycle, Recorder, ASGIHandler]:
    handler = ASGIHandler(None, HTTPSettings(**settings), logging.getLogger("test.ws"))
    observer = Recorder()
    lc = Lifecycle(handler, HTTPConnection(handler.settings, make_head_parser("httptools")),
                   ("127.0.0.1", 5000), ("127.0.0.1", 8000), 0.0, observer=observer)
    return lc, observer, handler


def request(raw: bytes):
    lc, _, _ = lifecycle()
    lc.received(raw, 0.0)
    assert lc.next(0.0) == RESPOND
    return lc.request


def client_frames(*messages) -> bytes:
    client = Connection(ConnectionType.CLIENT)
    return b"".join(client.send(m) for m in messages)


# -------------------------------------------------------------------------- the lifecycle
def test_hand_over_returns_the_bytes_past_the_head_and_decides_nothing_more() -> None:
    lc, observer, _ = lifecycle()
    early = client_frames(TextMessage(data="early"))
    lc.received(UPGRADE + early, 1.0)
    assert lc.next(1.0) == RESPOND
    assert lc.hand_over(1.5) == early
    assert lc.phase == UPGRADED and lc.deadline == float("inf")
    with pytest.raises(RuntimeError):
        lc.next(2.0)
    assert observer.events == [("start", "GET", "/chat")]
    lc.upgrade_finished(101, 9.0)
    assert observer.events[-1] == ("finish", 101) and lc.phase == CLOSED


def test_only_a_request_the_app_has_may_be_handed_over() -> None:
    lc, _, _ = lifecycle()
    with pytest.raises(RuntimeError):
        lc.hand_over(0.0)
    with pytest.raises(RuntimeError):
        lc.upgrade_finished(101, 0.0)


# -------------------------------------------------------------------------- the handshake
def test_an_upgrade_is_recognised_by_both_headers() -> None:
    assert wants_websocket(request(UPGRADE))
    assert not wants_websocket(request(UPGRADE.replace(b"keep-alive, Upgrade", b"keep-alive")))
    assert not wants_websocket(request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert handshake_problem(request(UPGRADE)) is None


@pytest.mark.parametrize(("change", "status"), [
    ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), 426),
    ((b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Key: c2hvcnQ="), 400),
    ((b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Key: !!not base64!!"), 400),
    ((b"GET ", b"POST "), 400),
    ((b"HTTP/1.1", b"HTTP/1.0"), 400),
    ((b"Host: x\r\n", b"Host: x\r\nContent-Length: 2\r\n"), 400),
])
def test_a_bad_handshake_is_refused(change, status) -> None:
    raw = UPGRADE.replace(*change)
    if b"Content-Length" in raw:
        raw += b"hi"
    problem = handshake_problem(request(raw))
    assert problem is not None and problem[0] == status
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in problem[1]


def test_the_websocket_scope() -> None:
    lc, _, handler = lifecycle()
    lc.received(UPGRADE, 0.0)
    lc.next(0.0)
    scope, _ = handler.build_websocket_scope(lc.request, lc.info, ("127.0.0.1", 8000))
    assert scope["type"] == "websocket" and "method" not in scope
    assert (scope["scheme"], scope["path"], scope["query_string"]) == ("ws", "/chat", b"room=1")
    assert scope["subprotocols"] == ["a", "b"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["client"] == ("127.0.0.1", 5000)
    proxied = UPGRADE.replace(b"Host: x\r\n", b"Host: x\r\nX-Forwarded-Proto: https\r\n")
    lc, _, handler = lifecycle()
    lc.received(proxied, 0.0)
    lc.next(0.0)
    assert handler.build_websocket_scope(lc.request, lc.info, ("127.0.0.1", 8000))[0][
        "scheme"] == "wss"


# -------------------------------------------------------------------------- a session
class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_write_buffer_size(self) -> int:
        return 0


class FakeHost:
    def __init__(self, handler: ASGIHandler, limit: int) -> None:
        self.handler = handler
        self.log = logging.getLogger("test.ws")
        self.websocket_message_limit = limit


class FakeConn:
    """What a session asks of its HTTPProtocol."""

    def __init__(self, lc: Lifecycle, handler: ASGIHandler, limit: int = 1000) -> None:
        self.lc = lc
        self.host = FakeHost(handler, limit)
        self.transport = FakeTransport()
        self.sockname = ("127.0.0.1", 8000)
        self.peer = ("127.0.0.1", 5000)
        self.closed = False
        self.write_paused = False
        self.drained = None
        self.upgraded = None
        self.reading = True
        self.readings: list[bool] = []

    def set_reading(self, reading: bool) -> None:
        if reading != self.reading:
            self.readings.append(reading)
        self.reading = reading

    def close(self) -> None:
        self.closed = True

    abort = close

    def cycle_done(self, outcome) -> None:
        self.outcome = outcome


async def accepted_session(limit: int = 1000) -> tuple[WebSocketSession, FakeConn]:
    lc, _, handler = lifecycle()
    lc.received(UPGRADE, 0.0)
    assert lc.next(0.0) == RESPOND
    conn = FakeConn(lc, handler, limit)
    session = WebSocketSession(conn)
    assert (await session.receive())["type"] == "websocket.connect"
    await session.send({"type": "websocket.accept"})
    assert conn.transport.out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert conn.upgraded is session
    conn.transport.out.clear()
    return session, conn


def test_reading_pauses_while_the_app_leaves_messages_waiting_and_resumes() -> None:
    async def scenario():
        session, conn = await accepted_session()
        session.received(client_frames(*(TextMessage(data=f"m{i}")
                                          for i in range(INBOX_MESSAGES))))
        assert conn.readings == [False] and not conn.reading
        texts = [(await session.receive())["text"] for _ in range(INBOX_MESSAGES // 2 + 1)]
        assert texts[:2] == ["m0", "m1"] and conn.reading
        session.cancel_timers()
    asyncio.run(scenario())


def test_a_message_over_the_limit_is_closed_1009_and_not_kept() -> None:
    async def scenario():
        session, conn = await accepted_session(limit=10)
        client = Connection(ConnectionType.CLIENT)  # one client: the fragments continue
        session.received(client.send(BytesMessage(data=b"x" * 6, message_finished=False)))
        assert session.parts and session.state == 1  # OPEN: 6 bytes are within the limit
        session.received(client.send(BytesMessage(data=b"x" * 6)))
        out = conn.transport.out
        assert out[0] == 0x88 and out[2:4] == (1009).to_bytes(2, "big")  # close, 1009
        assert session.parts == [] and not session.inbox
        message = await session.receive()
        assert (message["type"], message["code"]) == ("websocket.disconnect", 1009)
        session.cancel_timers()
    asyncio.run(scenario())


def test_non_ascii_text_is_counted_in_bytes() -> None:
    async def scenario():
        session, _ = await accepted_session(limit=10)
        session.received(client_frames(TextMessage(data="é" * 5)))  # 10 bytes
        assert session.inbox_bytes == 10
        assert (await session.receive())["text"] == "é" * 5
        assert session.inbox_bytes == 0
        session.received(client_frames(TextMessage(data="é" * 6)))  # 12 bytes: too big
        assert session.close_code == 1009
        session.cancel_timers()
    asyncio.run(scenario())


def test_send_waits_while_the_write_buffer_is_high_and_cuts_a_client_that_never_reads() -> None:
    async def scenario():
        session, conn = await accepted_session()
        conn.write_paused = True
        sending = asyncio.ensure_future(session.send({"type": "websocket.send", "text": "a"}))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not sending.done() and conn.drained is not None
        conn.write_paused = False
        conn.drained.set_result(None)  # what resume_writing does
        await asyncio.wait_for(sending, 1)
        assert conn.transport.out.endswith(b"\x81\x01a")
        conn.write_paused = True
        session.idle_limit = 0.05  # read_timeout: the longest wait for the client
        with pytest.raises(ClientDisconnected):
            await session.send({"type": "websocket.send", "bytes": b"b"})
        assert conn.closed and session.gone
        with pytest.raises(ClientDisconnected):  # the ASGI spec: an OSError once closed
            await session.send({"type": "websocket.send", "text": "late"})
        session.cancel_timers()
    asyncio.run(scenario())


def test_an_app_close_code_must_be_one_an_endpoint_may_send() -> None:
    async def scenario():
        session, conn = await accepted_session()
        for code in (1005, 1006, 999, 70000, "1000"):
            with pytest.raises(ValueError):
                await session.send({"type": "websocket.close", "code": code})
        with pytest.raises(TypeError):
            await session.send({"type": "websocket.send", "text": b"not text"})
        assert conn.transport.out == b"" and session.state == 1  # nothing sent, still open
        await session.send({"type": "websocket.close", "code": 4321, "reason": "r"})
        assert conn.transport.out == b"\x88\x03\x10\xe1r"
        session.cancel_timers()
    asyncio.run(scenario())
