"""One WebSocket (RFC 6455) on an asgi worker's connection: the ASGI ``websocket`` scope.

Owns :class:`WebSocketSession` -- what an :class:`~arbiter.asgi.connection.HTTPProtocol`
runs instead of a :class:`~arbiter.asgi.connection.RequestCycle` for a request
that asks to be upgraded (:func:`wants_websocket`) -- and the checks on the
handshake (:func:`handshake_problem`). The upgrade request itself was parsed
and judged by the HTTP core like any other; frames are wsproto's
(``wsproto.connection.Connection``, sans-IO), the I/O is the protocol's transport.

The handshake: the app is sent ``websocket.connect``. ``websocket.accept``
(with an optional ``subprotocol`` and ``headers``) writes ``101 Switching
Protocols`` and hands the connection over
(:meth:`~arbiter.http.lifecycle.Lifecycle.hand_over`: the lifecycle returns
the bytes already received past the head and decides nothing more);
``websocket.close`` before accept, or an app that returns without
accepting, is a ``403``; the denial-response extension
(``websocket.http.response.start`` / ``.body``) sends the app's own HTTP
response. Those HTTP answers go through an
:class:`~arbiter.http.app_response.AppResponse`, so their framing, keep-alive
and access log line are a WSGI response's. A malformed handshake never
reaches the app: 400 (426 with ``Sec-WebSocket-Version: 13`` for another
version). No extension (permessage-deflate) is negotiated.

After the upgrade: ``websocket.receive`` (text or bytes, whole messages),
``websocket.send``, ``websocket.close`` (code, reason) both ways; pings are
answered by the server, pongs not surfaced; a client's close gives the app
``websocket.disconnect`` with its code (1006 when the TCP connection just
ended). A ``websocket.send`` after the connection closed raises
:class:`~arbiter.http.app_response.ClientDisconnected` (an ``OSError``, as
the ASGI spec asks). An app exception closes with 1011 (a 500 before
accept) and is logged; a frame that breaks the protocol is closed with
wsproto's code (1002, 1007).

Bounded memory: a message larger than ``limits.websocket_message`` is
closed with 1009 as soon as its size passes the limit (fragments are counted
as they arrive, never assembled past it); reading pauses while received
messages the app has not taken total ``INBOX_HIGH`` bytes or
``INBOX_MESSAGES`` messages, and resumes as it takes them. ``send`` waits
while the transport's write buffer is above its high-water mark; a client
that takes nothing for ``read_timeout`` is cut.

Idle connections: the existing ``read_timeout`` (the longest wait for a
client without a byte moving: ``timeout``, 30 s by default) is used, no new
setting. After ``read_timeout`` with no frame either way, the server sends a
ping; a connection still silent another ``read_timeout`` later is closed
(1011, "keepalive ping timeout") and cut. A client that answers pings is
alive and may stay. ``timeout`` (the request time limit) bounds only the
handshake: an app that neither accepts nor denies within it is cancelled,
its stack logged, and the client answered 504; an accepted WebSocket may
last as long as it is used.

Stopping (TERM, the old workers of a HUP, a recycle): a WebSocket is not cut
when the worker starts to drain -- the app may go on using it -- but once
``graceful_timeout`` is nearly up the worker calls :meth:`going_away`: a
close frame 1001 ("going away"), the close handshake given what is left.
The session counts as one request in flight for the scoreboard from the
upgrade request until it ends; its access log line (status 101) is written
at the end, with the session's duration.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, generate_accept_token

from arbiter.http.app_response import AppResponse, ClientDisconnected
from arbiter.http.protocol import Request
from arbiter.io.event_loop import awaiting_stack, wake_all

__all__ = [
    "CLOSE_HANDSHAKE_TIMEOUT", "INBOX_HIGH", "INBOX_MESSAGES", "WebSocketSession",
    "handshake_problem", "wants_websocket",
]

INBOX_HIGH = 1024 * 1024  # bytes of received messages the app has not taken; then pause
INBOX_MESSAGES = 64  # ... or this many messages
CLOSE_HANDSHAKE_TIMEOUT = 5.0  # seconds our close frame waits for the client's answer

# The session's states.
CONNECTING, OPEN, CLOSING, CLOSED = range(4)

_SET_BY_SERVER = {b"upgrade", b"connection", b"sec-websocket-accept",
                  b"sec-websocket-extensions", b"content-length", b"transfer-encoding"}
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                         b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _tokens(request: Request, name: bytes) -> set[bytes]:
    found: set[bytes] = set()
    for key, value in request.headers:
        if key.lower() == name:
            found.update(token.strip().lower() for token in value.split(b","))
    return found


def _header(request: Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value.strip()
    return None


def wants_websocket(request: Request) -> bool:
    """The request asks for a WebSocket (``Upgrade: websocket``, ``Connection: upgrade``)."""
    for key, _value in request.headers:
        if len(key) == 7 and key.lower() == b"upgrade":  # else no need to look closer
            return b"websocket" in _tokens(request, b"upgrade") and b"upgrade" in _tokens(
                request, b"connection")
    return False


def handshake_problem(request: Request) -> tuple[int, list[tuple[str, str]], str] | None:
    """What is wrong with a WebSocket handshake (RFC 6455 §4.2.1) as (status, extra
    headers, reason), or None when the app may have it."""
    if request.method != "GET" or request.http_version != "1.1":
        return 400, [], "a WebSocket handshake is a GET over HTTP/1.1"
    if request.content_length != 0:
        return 400, [], "a WebSocket handshake has no body"
    if _header(request, b"sec-websocket-version") != b"13":
        return 426, [("Sec-WebSocket-Version", "13")], "only WebSocket version 13 is spoken"
    key = _header(request, b"sec-websocket-key")
    try:
        valid = key is not None and len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        return 400, [], "Sec-WebSocket-Key is missing or not 16 bytes in base64"
    return None


def _sendable_close_code(code: object) -> bool:
    """A close code an endpoint may put in a close frame (RFC 6455 §7.4)."""
    return type(code) is int and (1000 <= code <= 1003 or 1007 <= code <= 1014
                                  or 3000 <= code <= 4999)


def _checked_headers(headers: Any, skip: set[bytes]) -> list[tuple[bytes, bytes]]:
    """The app's extra 101 headers, checked (bytes, a token name, no CR/LF/NUL in a value)."""
    checked = []
    for item in headers or ():
        name, value = item
        if not isinstance(name, bytes | bytearray) or not isinstance(value, bytes | bytearray):
            raise TypeError(f"websocket.accept header names and values must be bytes: {item!r}")
        if not name or not set(name) <= _TOKEN_CHARS or any(c in value for c in b"\r\n\0"):
            raise ValueError(f"invalid websocket.accept header {item!r}")
        if bytes(name).lower() not in skip:
            checked.append((bytes(name), bytes(value)))
    return checked


class WebSocketSession:
    """One WebSocket: the handshake, then messages both ways (see the module docstring).

    ``conn`` is the :class:`~arbiter.asgi.connection.HTTPProtocol`; the session
    stands in its ``cycle`` slot (``start``, ``wake``, ``client_eof``,
    ``client_gone``, ``task``) and, once accepted, takes its input (``received``)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        lc = conn.lc
        self.request = request = lc.request
        handler = conn.host.handler
        self.started = time.perf_counter()
        self.scope, self.environ = handler.build_websocket_scope(request, lc.info,
                                                                 conn.sockname)
        self.response = AppResponse(handler, self.environ, request, lc.may_keep_alive,
                                    self.started)
        self.limit = conn.host.websocket_message_limit
        self.idle_limit = handler.settings.read_timeout
        self.state = CONNECTING
        self.ws: Connection | None = None
        self.connect_sent = False
        self.denying = False  # the app sends its own HTTP response (the denial extension)
        self.accept_headers: list[tuple[str, str]] = []
        self.inbox: deque[tuple[dict, int]] = deque()  # messages and their sizes in bytes
        self.inbox_bytes = 0
        self.parts: list[Any] = []  # the fragments of the message arriving
        self.part_size = 0
        self.skipping = False  # the rest of an oversized message is discarded
        self.close_code: int | None = None  # for websocket.disconnect
        self.close_reason = ""
        self.gone = False
        self.sent_bytes = 0
        self.last_traffic = time.monotonic()
        self.pinged = False
        self.waiters: list[asyncio.Future] = []
        self.task: asyncio.Task | None = None
        self.timed_out = False  # the app did not decide within timeout
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.closed_event = asyncio.Event()

    # -- the protocol's side -------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self.run())
        timeout = self.conn.host.request_timeout
        if timeout:
            self.handshake_timer = loop.call_later(timeout, self.handshake_timed_out)

    def handshake_timed_out(self) -> None:
        """The app neither accepted nor denied within ``timeout``: cancelled, 504."""
        self.handshake_timer = None
        task = self.task
        if self.state != CONNECTING or task is None or task.done() or self.response.finished:
            return
        self.conn.host.log.error(
            "WebSocket %s not accepted or denied within timeout (%g s): cancelled; its "
            "stack (most recent call last):\n%s", self.request.target.decode("latin-1"),
            self.conn.host.request_timeout, awaiting_stack(task))
        self.timed_out = True
        task.cancel()

    def wake(self) -> None:
        wake_all(self.waiters)

    def client_eof(self) -> None:
        """Before the upgrade: the client closed its side, so it has gone."""
        if self.state == CONNECTING:
            self.gone = True

    def client_gone(self, why: object) -> None:
        """The TCP connection is closed (by either side)."""
        self.gone = True
        if self.close_code is None:
            self.close_code = 1006
        if self.state != CONNECTING:
            self.state = CLOSED
        elif not self.response.finished:
            self.response.client_gone(why)
        self.cancel_timers()
        self.closed_event.set()
        self.wake()

    def stop(self) -> None:
        """The worker drains: an open WebSocket carries on until :meth:`going_away`."""

    def going_away(self) -> None:
        """The worker's graceful time is nearly up: close politely (1001)."""
        if self.state == OPEN:
            self.server_close(1001, "server shutting down")

    # -- the app ---------------------------------------------------------------------------
    async def run(self) -> None:
        response = self.response
        log = self.conn.host.log
        cancelled = False
        try:
            problem = handshake_problem(self.request)
            if problem is not None:
                status, headers, reason = problem
                log.debug("WebSocket handshake from %r refused (%d): %s", self.conn.peer,
                          status, reason)
                self.answer(status, headers, reason.encode() + b"\n")
                return
            await self.conn.host.handler.asgi_app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if self.timed_out and self.state == CONNECTING and not response.finished:
                response.answer_instead(504)
            else:
                cancelled = True
                if self.state == CONNECTING and not response.finished:
                    response.client_gone("the worker stopped")
                raise
        except Exception as exc:  # noqa: BLE001 -- the app's failure closes this socket only
            target = self.request.target.decode("latin-1")
            if self.state == CONNECTING and not self.gone and not response.finished:
                response.fail(exc)  # 500 (or a cut after the denial's head), logged
            elif isinstance(exc, ClientDisconnected):  # our own: it sent to a closed socket
                log.debug("WebSocket %s: the app stopped on a closed socket: %s", target, exc)
            else:
                log.error("Error in WebSocket %s", target, exc_info=exc)
                self.server_close(1011, "internal error")  # if it is still open
        else:
            if self.state == CONNECTING and not response.finished and not self.gone:
                if self.denying:
                    response.fail(RuntimeError(
                        "the ASGI app returned before its denial response was complete"))
                else:
                    response.answer_instead(403)  # returned without accepting
            elif self.state == OPEN:
                self.server_close(1000, "")
        finally:
            await self.end(cancelled)

    async def end(self, cancelled: bool) -> None:
        """The app is done: an HTTP answer goes back to the lifecycle; a WebSocket waits
        (a while) for the client's close frame, is closed and logged."""
        conn = self.conn
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        if self.state == CONNECTING:
            self.write_http()
            self.wake()
            conn.cycle_done(self.response.finish())
            return
        if self.state == CLOSING and not cancelled and not self.gone:
            try:
                await asyncio.wait_for(self.closed_event.wait(), CLOSE_HANDSHAKE_TIMEOUT)
            except TimeoutError:
                pass
        self.state = CLOSED
        self.cancel_timers()
        conn.close()
        handler = conn.host.handler
        if handler.access_log is not None:
            handler.log_access(self.environ, "101 Switching Protocols", self.accept_headers,
                               self.sent_bytes, self.started)
        conn.lc.upgrade_finished(101, time.monotonic())

    async def receive(self) -> dict:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        while True:
            if self.inbox:
                message, size = self.inbox.popleft()
                self.inbox_bytes -= size
                if (self.state == OPEN and self.inbox_bytes < INBOX_HIGH // 2
                        and len(self.inbox) < INBOX_MESSAGES // 2):
                    self.conn.set_reading(True)
                return message
            if self.state == CONNECTING:
                if self.gone or self.response.finished:
                    return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            elif self.close_code is not None:
                return {"type": "websocket.disconnect", "code": self.close_code,
                        "reason": self.close_reason}
            future = asyncio.get_running_loop().create_future()
            self.waiters.append(future)
            await future

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if self.state == CONNECTING:
            self.send_connecting(kind, message)
            return
        if kind == "websocket.send":
            if self.state != OPEN:
                raise ClientDisconnected("the WebSocket is closed")
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise ValueError("websocket.send needs exactly one of 'text' and 'bytes'")
            if not (isinstance(text, str) if data is None else isinstance(
                    data, bytes | bytearray | memoryview)):
                raise TypeError("websocket.send: 'text' must be a str, 'bytes' bytes")
            event = TextMessage(data=text) if data is None else BytesMessage(data=bytes(data))
            self.write(self.ws.send(event))
            if self.conn.write_paused and not self.gone:
                await self.drain()
        elif kind == "websocket.close":
            code = message.get("code") or 1000
            if not _sendable_close_code(code):
                raise ValueError(f"websocket.close: {code!r} is not a close code an "
                                 "endpoint may send (1000-1003, 1007-1014, 3000-4999)")
            if self.state == OPEN:
                self.server_close(code, str(message.get("reason") or ""))
        elif kind == "websocket.accept":
            raise RuntimeError("websocket.accept sent twice")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")

    def send_connecting(self, kind: str, message: dict) -> None:
        """A message before the upgrade: accept, deny (close), or a denial response."""
        response = self.response
        if self.gone or response.finished:
            if kind == "websocket.send":
                raise ClientDisconnected("the WebSocket was not accepted")
            return
        if kind == "websocket.accept" and not self.denying:
            self.accept(message)
        elif kind == "websocket.close" and not self.denying:
            response.answer_instead(403)
            self.write_http()
        elif kind == "websocket.http.response.start" and not self.denying:
            status = message["status"]
            if type(status) is not int:
                raise TypeError(f"websocket.http.response.start status must be an int, "
                                f"not {status!r}")
            headers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                       for n, v in message.get("headers", ())]
            response.start_response(str(status), headers)
            self.denying = True
        elif kind == "websocket.http.response.body" and self.denying:
            response.send_body(message.get("body", b""), bool(message.get("more_body")))
            self.write_http()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} before websocket.accept")

    # -- the handshake ---------------------------------------------------------------------
    def accept(self, message: dict) -> None:
        conn = self.conn
        subprotocol = message.get("subprotocol")
        skip = set(_SET_BY_SERVER)
        lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
                 b"Connection: Upgrade"]
        key = _header(self.request, b"sec-websocket-key") or b""
        lines.append(b"Sec-WebSocket-Accept: " + generate_accept_token(key))
        if subprotocol is not None:
            if not isinstance(subprotocol, str) or not subprotocol or not set(
                    subprotocol.encode("latin-1", "replace")) <= _TOKEN_CHARS:
                raise ValueError(f"invalid websocket.accept subprotocol {subprotocol!r}")
            lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode())
            skip.add(b"sec-websocket-protocol")
        software = conn.host.handler.server_software
        if software:
            lines.append(b"Server: " + software.encode("latin-1"))
        for name, value in _checked_headers(message.get("headers"), skip):
            lines.append(name + b": " + value)
        self.accept_headers = [tuple(line.decode("latin-1").split(": ", 1))
                               for line in lines[1:]]
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        rest = conn.lc.hand_over(time.monotonic())
        conn.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
        self.state = OPEN
        self.ws = Connection(ConnectionType.SERVER)
        conn.upgraded = self
        self.last_traffic = time.monotonic()
        self.schedule_idle(self.idle_limit)
        if rest:
            self.received(rest)
        if self.state == OPEN:
            conn.set_reading(True)

    def answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """A plain HTTP answer to a handshake the app does not see."""
        reasons = {400: "Bad Request", 426: "Upgrade Required"}
        self.response.start_response(f"{status} {reasons.get(status, '')}".strip(), [
            ("Content-Type", "text/plain; charset=utf-8"), *headers])
        self.response.send_body(body, False)

    def write_http(self) -> None:
        pieces = self.response.take_pending()
        if pieces and not self.gone and not self.conn.closed:
            for piece in pieces:
                self.conn.transport.write(piece)

    # -- frames in -------------------------------------------------------------------------
    def received(self, data: bytes | None) -> None:
        """Bytes from the client after the upgrade (None: it closed its side)."""
        ws = self.ws
        if ws is None or ws.state is ConnectionState.CLOSED:
            return
        self.last_traffic = time.monotonic()
        self.pinged = False
        try:
            ws.receive_data(data)
        except LocalProtocolError:
            return
        for event in ws.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                self.message_part(event)
            elif kind is Ping:
                if ws.state is ConnectionState.OPEN:
                    self.write(ws.send(event.response()))
            elif kind is CloseConnection:
                self.client_closed(event)
            elif kind is not Pong:
                self.conn.host.log.debug("WebSocket event ignored: %r", event)
            if self.state == CLOSED:
                return
        if self.state == OPEN and (self.inbox_bytes >= INBOX_HIGH
                                   or len(self.inbox) >= INBOX_MESSAGES):
            self.conn.set_reading(False)

    def message_part(self, event: Any) -> None:
        if self.state != OPEN:
            return  # we are closing: what still arrives is discarded
        data = event.data
        if not self.skipping:
            self.part_size += len(data.encode()) if type(data) is str else len(data)
            if self.part_size > self.limit:
                self.skipping = True
                self.parts.clear()
                self.server_close(1009, f"message larger than {self.limit} bytes")
                return
            self.parts.append(data)
        if not event.message_finished:
            return
        parts, self.parts = self.parts, []
        size, self.part_size = self.part_size, 0
        if self.skipping:
            self.skipping = False
            return
        if type(event) is TextMessage:
            message = {"type": "websocket.receive", "text": "".join(parts)}
        else:
            message = {"type": "websocket.receive", "bytes": b"".join(parts)}
        self.inbox.append((message, size))
        self.inbox_bytes += size
        self.wake()

    def client_closed(self, event: CloseConnection) -> None:
        """A close frame (or wsproto's verdict on a broken frame, or the end of input)."""
        ws = self.ws
        if self.close_code is None:
            self.close_code = event.code
            self.close_reason = event.reason or ""
        if ws.state is ConnectionState.REMOTE_CLOSING:
            self.write(ws.send(event.response()))  # the close handshake's answer
        elif ws.state is ConnectionState.OPEN:  # a frame broke the protocol: we close
            self.write(ws.send(CloseConnection(code=event.code, reason=event.reason)))
        self.state = CLOSED
        self.closed_event.set()
        self.cancel_timers()
        self.conn.close()  # the server closes the TCP connection first (RFC 6455 §7.1.1)
        self.wake()

    # -- frames out ------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if data and not self.gone and not self.conn.closed:
            self.conn.transport.write(data)
            self.sent_bytes += len(data)
            self.last_traffic = time.monotonic()

    def server_close(self, code: int, reason: str) -> None:
        """Our close frame; the client's answer (or ``CLOSE_HANDSHAKE_TIMEOUT``) ends it."""
        ws = self.ws
        if self.state != OPEN or ws is None or ws.state is not ConnectionState.OPEN:
            return
        self.write(ws.send(CloseConnection(code=code, reason=reason)))
        self.state = CLOSING
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self.conn.set_reading(True)  # the client's close frame must get through
        self.close_timer = asyncio.get_running_loop().call_later(
            CLOSE_HANDSHAKE_TIMEOUT, self.close_timed_out)
        self.wake()

    def close_timed_out(self) -> None:
        self.close_timer = None
        if self.state == CLOSING:
            self.conn.close()

    async def drain(self) -> None:
        """Wait until the client took the output below the high-water mark; one that
        takes nothing for ``read_timeout`` is cut."""
        conn = self.conn
        if conn.drained is None or conn.drained.done():
            conn.drained = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(conn.drained), self.idle_limit)
        except TimeoutError:
            conn.host.log.debug("WebSocket from %r: output read too slowly", conn.peer)
            conn.abort()
            self.client_gone("output read too slowly")
            raise ClientDisconnected("the client does not read") from None

    # -- idle ------------------------------------------------------------------------------
    def schedule_idle(self, delay: float) -> None:
        if self.idle_limit > 0:
            self.idle_timer = asyncio.get_running_loop().call_later(
                max(delay, 0.01), self.idle_check)

    def idle_check(self) -> None:
        """No frame either way for ``read_timeout``: a ping; still nothing: close and cut."""
        self.idle_timer = None
        if self.state != OPEN:
            return
        now = time.monotonic()
        quiet = now - self.last_traffic
        if quiet < self.idle_limit:
            self.schedule_idle(self.idle_limit - quiet)
            return
        if not self.pinged:
            self.pinged = True
            self.conn.transport.write(self.ws.send(Ping(payload=b"arbiter")))
            self.last_traffic = now  # the ping's answer is due within read_timeout
            self.schedule_idle(self.idle_limit)
            return
        self.conn.host.log.debug("WebSocket from %r: no answer to a ping: closed",
                                 self.conn.peer)
        self.server_close(1011, "keepalive ping timeout")
        self.conn.close()

    def cancel_timers(self) -> None:
        for timer in (self.idle_timer, self.close_timer):
            if timer is not None:
                timer.cancel()
        self.idle_timer = self.close_timer = None
