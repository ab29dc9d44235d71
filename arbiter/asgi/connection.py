"""One client connection on an asyncio loop: the lifecycle driven, the ASGI app called.

Owns :func:`open_connection` (an accepted socket, its PROXY header and TLS,
becoming a protocol), :class:`HTTPProtocol` (an ``asyncio.Protocol`` per
connection) and :class:`RequestCycle` (one request's ``receive`` / ``send``). The protocol
only carries out what the connection's
:class:`~arbiter.http.lifecycle.Lifecycle` answers -- read until its
deadline, write its bytes, start the app, shut the write side and linger,
close -- so keep-alive, deadlines, ``100 Continue``, drains, pipelining, the
core's error answers and what a stop means are decided there, as for every
other worker type.

Bounded memory: while the app has the request, reading goes on (so a client
that goes away is noticed) only until ``READ_HIGH`` bytes wait unparsed; then
the transport is paused until the app asks for more body (``receive``) or the
response is done. Output: ``send`` returns at once while the transport's
write buffer is below its high-water mark, else waits for it to drain, that
wait bounded by the response's transfer budget (a client that does not read
is cut).

``receive``: ``http.request`` messages with the body as it arrives (the
lifecycle's non-blocking :meth:`~arbiter.http.lifecycle.Lifecycle.next_body_piece`
owes the ``100 Continue`` and keeps the body's budget; a body the core
refuses or one too slow raises
:class:`~arbiter.http.app_response.RequestBodyError` into the app, which is
answered 4xx as a WSGI app's would be), then ``http.disconnect`` once the
client is gone or the response is complete. ``send``: ``http.response.start``
and ``http.response.body`` go through an
:class:`~arbiter.http.app_response.AppResponse`, so framing (Content-Length,
chunked, close), HEAD, 204/304 and the checks on status and headers are the
WSGI rules; app errors before the head went out are a 500, after it a cut.
After the client is gone, ``send`` does nothing (ASGI spec 2.3).

A request asking for a WebSocket gets a
:class:`~arbiter.asgi.websocket.WebSocketSession` in the request's place; once
the app accepts, the lifecycle hands the connection over and the protocol's
input goes to the session (``upgraded``).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from arbiter.asgi.websocket import WebSocketSession, wants_websocket
from arbiter.http.app_response import (
    AppResponse,
    ClientDisconnected,
    FileSegment,
    RequestBodyError,
    ResponseOutcome,
)
from arbiter.http.lifecycle import CLOSE, LINGER_THEN_CLOSE, READ, RESPOND, WRITE, Lifecycle
from arbiter.http.parsers import make_head_parser
from arbiter.http.protocol import HTTPConnection
from arbiter.io.event_loop import awaiting_stack, wake_all
from arbiter.io.proxy import take_proxy_header
from arbiter.io.stamps import peek_stamp

__all__ = ["HTTPProtocol", "READ_HIGH", "RequestCycle", "open_connection"]

READ_HIGH = 64 * 1024  # unparsed bytes held while the app has the request; then pause reading
FILE_BLOCK = 256 * 1024  # http.response.pathsend without sendfile: read and written in these
CLOSE_FLUSH_LIMIT = 5.0  # seconds a closing connection may take to flush what it still holds


async def open_connection(host: Any, sock: Any, peer: Any, header_timeout: float) -> None:
    """An accepted (non-blocking) socket becomes an :class:`HTTPProtocol`: its PROXY
    protocol header taken first from a peer in ``proxy_allow_ips`` (when
    ``proxy_protocol`` is on), then asyncio's TLS handshake when ``host.tls`` is set --
    each within ``header_timeout`` of the accept. A client failing either is closed
    (logged at debug); this never raises."""
    loop = asyncio.get_running_loop()
    handler, tls = host.handler, host.tls
    stamp = peek_stamp(sock)  # asyncio's reads drop the kernel's stamps: the first one now
    try:
        proxy = None
        if handler.expects_proxy_header(peer):
            proxy = await take_proxy_header(loop, sock, handler.proxy_protocol,
                                            time.monotonic() + header_timeout)
        if tls is None:
            await loop.connect_accepted_socket(lambda: HTTPProtocol(host, False, proxy, stamp),
                                               sock)
        else:
            await loop.connect_accepted_socket(lambda: HTTPProtocol(host, True, proxy, stamp), sock,
                                               ssl=tls, ssl_handshake_timeout=header_timeout)
    except (TimeoutError, OSError) as exc:
        host.log.debug("connection from %r refused: %s", peer, exc)
        sock.close()


class HTTPProtocol:
    """One connection, its lifecycle carried out from asyncio's callbacks (an asyncio
    protocol by its methods, with no base class: the compiled build makes it a C type).

    ``host`` is the worker: ``handler``, ``log``, ``draining``,
    ``request_timeout``, ``may_keep_alive()``, ``opened(conn)`` / ``forget(conn)``
    and the observer methods (``request_started`` / ``request_finished``)."""

    __slots__ = ("host", "tls", "proxy", "stamp", "transport", "lc", "sockname", "peer",
                 "timer", "timer_at", "request_timer", "request_timer_at", "cycle",
                 "upgraded", "closed", "reading", "write_paused", "drained", "loop")

    def __init__(self, host: Any, tls: bool, proxy: Any = None,
                 stamp: float | None = None) -> None:
        self.host = host
        self.tls = tls
        self.proxy = proxy  # the PROXY protocol header the worker took (a ProxyInfo)
        self.stamp = stamp  # the kernel's receive time of the first bytes waiting at accept
        self.transport: Any = None
        self.lc: Lifecycle | None = None
        self.sockname: Any = None
        self.peer: Any = None
        self.timer: asyncio.TimerHandle | None = None  # the lifecycle's deadline
        self.timer_at = 0.0
        self.request_timer: asyncio.TimerHandle | None = None  # the request's `timeout`
        self.request_timer_at = 0.0
        self.cycle: RequestCycle | WebSocketSession | None = None
        self.upgraded: WebSocketSession | None = None  # the session that took the connection
        self.closed = False
        self.reading = True
        self.write_paused = False
        self.drained: asyncio.Future | None = None
        # the loop, kept: asyncio.get_running_loop() makes a getpid() syscall each call
        self.loop: Any = None

    # -- asyncio's callbacks -----------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        host = self.host
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.peer = transport.get_extra_info("peername") or ""
        self.sockname = transport.get_extra_info("sockname") or ""
        handler = host.handler
        now = time.monotonic()
        http = HTTPConnection(handler.settings, make_head_parser(handler.parser_name))
        self.lc = Lifecycle(handler, http, self.peer, self.sockname, now, observer=host,
                            tls=self.tls, proxy=self.proxy is not None,
                            may_keep_alive=host.may_keep_alive, stamp=self.stamp)
        if self.proxy is not None:
            self.lc.proxy_done(self.proxy, now)
        if self.tls:  # asyncio finished the handshake before calling us
            self.lc.handshake_done(now)
        host.opened(self)
        self.guard(self.drive)

    def data_received(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.guard(lambda: self.upgraded.received(data))
            return
        self.lc.received(data, time.monotonic())
        if self.cycle is not None:
            self.after_input()
            return
        try:  # guard(drive), inlined: once a request
            self.drive()
        except Exception as exc:  # noqa: BLE001
            self.failed(exc)

    def eof_received(self) -> bool:
        if self.upgraded is not None:
            self.guard(lambda: self.upgraded.received(None))
            return False
        self.lc.received(b"", time.monotonic())
        self.after_input(eof=True)
        # Keep the write side: the lifecycle decides when to close (asyncio's TLS cannot
        # half-close, and says so if asked).
        return not self.tls

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.cancel_timer()
        self.host.forget(self)
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        if self.cycle is not None:
            self.cycle.client_gone(exc or "connection closed")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # -- the engine --------------------------------------------------------------------
    def guard(self, step: Any) -> None:
        """Run a step of the engine; anything unexpected closes this connection only."""
        try:
            step()
        except Exception as exc:  # noqa: BLE001
            self.failed(exc)

    def failed(self, exc: Exception) -> None:
        """A step of the engine raised: this connection closes (logged)."""
        if isinstance(exc, ClientDisconnected):
            self.host.log.debug("connection from %r ended: %s", self.peer, exc)
        else:
            self.host.log.error("unexpected error on a connection from %r", self.peer,
                                exc_info=exc)
        self.abort()

    def after_input(self, eof: bool = False) -> None:
        cycle = self.cycle
        if cycle is None:
            self.guard(self.drive)
            return
        if eof:
            cycle.client_eof()
        cycle.wake()
        if self.lc.http.buffered >= READ_HIGH:
            self.set_reading(False)

    def drive(self) -> None:
        """Carry out the lifecycle until it waits for the client, or the app has it."""
        lc, host = self.lc, self.host
        while not self.closed:
            now = time.monotonic()
            action = lc.next(now)
            if action == READ:
                self.wait_for_input(now)
                return
            if action == WRITE:
                lc.writing(now)
                self.transport.write(lc.take_output())
            elif action == RESPOND:
                # The keep-alive timer stays (it finds a request running and is dropped):
                # cancelling and filing a timer for every request cost more than this.
                try:
                    if not wants_websocket(lc.request):
                        self.cycle = RequestCycle(self)  # admitted when its task starts
                    elif lc.admit():
                        self.cycle = WebSocketSession(self)
                    else:
                        continue  # it waited too long: the lifecycle has a 503 to write
                except Exception:
                    host.log.exception("cannot start a request from %r", self.peer)
                    lc.response_done(ResponseOutcome(0, False, 0, True), now)
                    self.abort()
                    return
                self.cycle.start()
                return
            elif action == LINGER_THEN_CLOSE:
                if not self.transport.can_write_eof():
                    self.close()
                    return
                self.transport.write_eof()
            elif action == CLOSE:
                self.close()
                return

    def wait_for_input(self, now: float) -> None:
        """The lifecycle answered READ: read, until its deadline."""
        lc = self.lc
        if self.host.draining and not lc.stopping:
            lc.stop(now)
        if not self.reading:
            self.set_reading(True)
        if self.timer is None or self.timer_at > lc.deadline:
            self.schedule(lc.deadline)

    def cycle_done(self, outcome: Any) -> None:
        """The request's response is written (or abandoned): the lifecycle goes on."""
        self.cycle = None
        now = time.monotonic()
        if self.lc.response_done(outcome, now):  # the next request is awaited: READ
            if not self.closed:
                self.wait_for_input(now)
        elif not self.closed:
            self.guard(self.drive)

    def stop(self) -> None:
        """The worker stops: the lifecycle is told (an idle connection keeps its keep-alive
        deadline, the next response says Connection: close)."""
        if self.upgraded is not None:
            self.upgraded.stop()
        elif self.lc is not None and not self.lc.stopping:
            self.lc.stop(time.monotonic())

    def going_away(self) -> None:
        """The worker's graceful time is nearly up: a WebSocket closes politely (1001)."""
        if self.upgraded is not None:
            self.upgraded.going_away()

    # -- timers, reading, closing ------------------------------------------------------
    def schedule(self, deadline: float) -> None:
        """Be woken at ``deadline``: a timer due earlier stays (it finds the deadline moved
        and files a new one), so a deadline that moves later costs nothing."""
        if self.timer is not None:
            if self.timer_at <= deadline:
                return
            self.timer.cancel()
            self.timer = None
        if deadline != float("inf"):
            self.timer_at = deadline
            self.timer = self.loop.call_later(
                max(deadline - time.monotonic(), 0.0), self.on_deadline)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.request_timer is not None:
            self.request_timer.cancel()
            self.request_timer = None

    def arm_request_timer(self, due: float) -> None:
        """Check the running request against ``timeout`` at ``due``. One timer serves the
        connection's requests in turn: one due earlier stays (the request it finds
        running re-arms it for what is left of its own time), so a kept-alive
        connection does not file and cancel a timer per request."""
        if self.request_timer is not None:
            if self.request_timer_at <= due:
                return
            self.request_timer.cancel()
        self.request_timer_at = due
        self.request_timer = self.loop.call_later(
            max(due - time.monotonic(), 0.0), self.on_request_timer)

    def on_request_timer(self) -> None:
        self.request_timer = None
        cycle = self.cycle
        if not self.closed and type(cycle) is RequestCycle:
            cycle.on_timeout()

    def on_deadline(self) -> None:
        self.timer = None
        if self.closed or self.cycle is not None:
            return
        now = time.monotonic()
        if now < self.lc.deadline:  # moved later since
            self.schedule(self.lc.deadline)
            return
        self.lc.timed_out(now)
        self.guard(self.drive)

    def set_reading(self, reading: bool) -> None:
        if reading == self.reading or self.closed:
            return
        self.reading = reading
        if reading:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.cancel_timer()
        self.host.forget(self)
        transport = self.transport
        transport.close()
        if transport.get_write_buffer_size():  # a client that never reads: not forever
            asyncio.get_running_loop().call_later(CLOSE_FLUSH_LIMIT, transport.abort)

    def abort(self) -> None:
        self.closed = True
        self.cancel_timer()
        self.host.forget(self)
        if self.transport is not None:
            self.transport.abort()


class RequestCycle:
    """One request on a connection: the scope, ``receive``, ``send``, the app's task."""

    __slots__ = ("conn", "request", "scope", "response", "budget", "body_done", "started",
                 "complete", "gone", "eof", "timed_out", "refused", "started_at",
                 "client_waited", "client_wait_since", "waiters", "task")

    def __init__(self, conn: HTTPProtocol) -> None:
        self.conn = conn
        lc = conn.lc
        self.request = request = lc.request
        # The scope is built when the task starts (run): after the queue time is known.
        self.scope: dict | None = None
        self.response = AppResponse(conn.host.handler, None, request, lc.may_keep_alive,
                                    time.perf_counter())
        self.budget: Any = None  # the response's transfer budget: made at its first wait
        self.body_done = False  # the last http.request message was received
        self.started = False
        self.complete = False  # the last body message was sent
        self.gone = False  # the client went away
        self.eof = False
        self.timed_out = False
        self.refused = False  # the core answered a bad body for the app
        self.started_at = time.monotonic()
        self.client_waited = 0.0  # seconds spent waiting for the client (body, drain)
        self.client_wait_since: float | None = None
        self.waiters: list[asyncio.Future] = []
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = self.conn.loop.create_task(self.run())
        conn = self.conn
        timeout = conn.host.request_timeout
        if timeout:
            due = self.started_at + timeout
            if conn.request_timer is None or conn.request_timer_at > due:
                conn.arm_request_timer(due)

    async def run(self) -> None:
        conn = self.conn
        lc = conn.lc
        if not lc.admit():  # it waited too long for this task to start: a 503 instead
            self.complete = True
            conn.cycle = None
            if not conn.closed:
                conn.guard(conn.drive)
            return
        response = self.response
        handler = conn.host.handler
        try:
            self.scope, response.environ = handler.build_scope(self.request, lc.info,
                                                               conn.sockname)
            await handler.asgi_app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.timed_out:
                response.client_gone("the worker stopped")
                raise
            response.answer_instead(504)
        except Exception as exc:  # noqa: BLE001 -- the app's failure becomes a response
            if self.gone or self.refused:
                self.conn.host.log.debug("the app raised after its client was gone or its "
                                         "body refused: %r", exc)
                if not response.finished:
                    response.client_gone(exc)
            else:
                response.fail(exc)
        else:
            if self.timed_out and not response.finished:  # it swallowed the cancellation
                response.answer_instead(504)
            elif not response.finished and not self.gone:
                response.fail(RuntimeError(
                    "the ASGI app returned without sending http.response.start"
                    if not self.started else
                    "the ASGI app returned before its response was complete"))
        finally:
            if response.pending:
                self.write_pending()
            self.complete = True
            if self.waiters:
                wake_all(self.waiters)
            self.conn.cycle_done(response.finish())

    def on_timeout(self) -> None:
        """The request ran longer than ``timeout``: its stack to the error log, cancelled;
        the client gets a 504 (or a cut, if its response had started)."""
        task = self.task
        if task is None or task.done():
            return
        now = time.monotonic()
        waited = self.client_waited + (now - self.client_wait_since
                                       if self.client_wait_since is not None else 0.0)
        left = self.started_at + self.conn.host.request_timeout + waited - now
        if left > 0.01:  # time the client kept it waiting is the transfer budgets' business
            self.conn.arm_request_timer(now + left)
            return
        request = self.request
        self.conn.host.log.error(
            "request %s %s ran longer than timeout (%g s): cancelled; its stack (most recent "
            "call last):\n%s", request.method, request.target.decode("latin-1"),
            self.conn.host.request_timeout, awaiting_stack(task))
        self.timed_out = True
        task.cancel()

    # -- the app's side ----------------------------------------------------------------
    async def receive(self) -> dict:
        if not self.body_done and not self.gone:
            return await self.receive_body()
        while not (self.gone or self.complete or self.eof):
            await self.wait()
        return {"type": "http.disconnect"}

    async def receive_body(self) -> dict:
        conn = self.conn
        lc = conn.lc
        if self.request.content_length == 0:
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while True:
            try:
                piece = lc.next_body_piece(time.monotonic())
            except ClientDisconnected:  # the client closed inside the body
                self.body_done = self.eof = True
                return {"type": "http.disconnect"}
            except RequestBodyError as exc:  # a body the core refuses (400, 413, ...)
                return self.refuse(exc)
            if lc.out:  # the 100 Continue owed before the body
                conn.transport.write(lc.take_output())
            if piece is not None:
                break
            conn.set_reading(True)
            if not await self.wait(lc.deadline, for_client=True):
                return self.refuse(lc.body_too_slow())
            if self.gone:
                return {"type": "http.disconnect"}
        more = bool(piece)
        if more and lc.http.body_remaining == 0:  # the end is known: say so now
            more = lc.next_body_piece(time.monotonic()) is None
        self.body_done = not more
        return {"type": "http.request", "body": piece, "more_body": more}

    def refuse(self, error: RequestBodyError) -> dict:
        """The request body broke the protocol, a limit or its budget: the client gets
        the core's answer (413, 400, 408 ...) now, as from a WSGI app; the app hears
        ``http.disconnect`` and whatever it sends next goes nowhere."""
        self.conn.host.log.debug("request body refused: %s", error)
        self.body_done = self.refused = self.complete = True
        self.response.answer_instead(error.status)
        self.write_pending()
        self.wake()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        response = self.response
        if self.gone or response.finished:
            return
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            status = message["status"]
            if type(status) is not int:
                raise TypeError(f"http.response.start status must be an int, not {status!r}")
            response.start_raw(status, message.get("headers", ()))
            self.started = True
        elif kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body before http.response.start")
            more = bool(message.get("more_body", False))
            response.send_body(message.get("body", b""), more)
            pieces = response.take_pending()  # write_pending, inlined
            conn = self.conn
            if pieces and not self.gone and not conn.closed:
                if len(pieces) == 1:
                    conn.transport.write(pieces[0])
                else:
                    conn.transport.writelines(pieces)
            if not more:
                self.complete = True
                if self.waiters:
                    wake_all(self.waiters)
            if conn.write_paused and not self.gone:
                await self.drain()
        elif kind == "http.response.pathsend":
            if not self.started:
                raise RuntimeError("http.response.pathsend before http.response.start")
            await self.send_path(message["path"])
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an http scope")

    async def send_path(self, path: str) -> None:
        """``http.response.pathsend``: the file at ``path`` is the whole body -- sent with
        the loop's ``sendfile`` where it has one (asyncio's, on a plain socket), else read
        and written in blocks as the client takes them (uvloop, TLS): never held whole."""
        conn, response = self.conn, self.response
        with open(path, "rb") as file:  # an error here is the app's: a 500
            response.send_file(file)
            for piece in response.take_pending():
                if self.gone or conn.closed:
                    break
                if type(piece) is not FileSegment:
                    conn.transport.write(piece)
                    continue
                sent = await self.sendfile(piece)
                response.file_sent(sent)
                if sent < piece.count:
                    break
        self.complete = True
        self.wake()

    async def sendfile(self, segment: FileSegment) -> int:
        """Write ``segment``; how many of its bytes went out (fewer: the client is gone)."""
        conn = self.conn
        loop = asyncio.get_running_loop()
        if not conn.tls:
            try:
                return await loop.sendfile(conn.transport, segment.file, segment.offset,
                                           segment.count, fallback=False)
            except (NotImplementedError, RuntimeError, asyncio.SendfileNotAvailableError):
                pass  # uvloop has none: in blocks below
            except OSError:
                return 0
        sent = 0
        fd = segment.file.fileno()
        while sent < segment.count and not (self.gone or conn.closed):
            block = os.pread(fd, min(FILE_BLOCK, segment.count - sent), segment.offset + sent)
            if not block:
                break  # the file shrank: the response is cut short (keep-alive off)
            conn.transport.write(block)
            sent += len(block)
            if conn.write_paused:
                await self.drain()
        return sent

    # -- the server's side -------------------------------------------------------------
    def write_pending(self) -> None:
        """What the response has ready, handed over at once: a head and its body go out
        in one send (uvloop writes the pieces with one writev, no copy of a large body)."""
        pieces = self.response.take_pending()
        if pieces and not self.gone and not self.conn.closed:
            if len(pieces) == 1:
                self.conn.transport.write(pieces[0])
            else:
                self.conn.transport.writelines(pieces)

    async def drain(self) -> None:
        """Wait until the client has taken the output below the high-water mark, within
        the response's transfer budget; a client too slow is cut."""
        conn = self.conn
        loop = asyncio.get_running_loop()
        since = self.client_wait_since = time.monotonic()
        size = conn.transport.get_write_buffer_size()
        budget = self.budget
        if budget is None:  # the response's budget runs from the request's start
            budget = self.budget = conn.lc.new_budget(self.started_at)
        if conn.drained is None or conn.drained.done():
            conn.drained = loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(conn.drained),
                                   max(budget.wait_deadline(since) - since, 0.0))
        except TimeoutError:
            conn.host.log.debug("connection from %r: response read too slowly", conn.peer)
            conn.abort()
            self.client_gone("response read too slowly")
            return
        finally:
            self.client_waited += time.monotonic() - since
            self.client_wait_since = None
        now = time.monotonic()
        budget.waited(now - since)
        if not conn.closed:
            budget.moved(size - conn.transport.get_write_buffer_size(), now)

    async def wait(self, deadline: float = float("inf"), for_client: bool = False) -> bool:
        """Until :meth:`wake` (True) or ``deadline`` (False); ``for_client``: the time is
        the client's (its body), not the app's, and does not count towards ``timeout``."""
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        since = time.monotonic()
        if for_client:
            self.client_wait_since = since
        try:
            if deadline == float("inf"):
                await future
                return True
            await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.0))
            return True
        except TimeoutError:
            return False
        finally:
            if future in self.waiters:
                self.waiters.remove(future)
            if for_client:
                self.client_waited += time.monotonic() - since
                self.client_wait_since = None

    def wake(self) -> None:
        wake_all(self.waiters)

    def client_eof(self) -> None:
        """The client closed its side: once the body is in, that is a disconnect."""
        if self.body_done:
            self.eof = True

    def client_gone(self, why: object) -> None:
        self.gone = True
        if not self.response.finished:
            self.response.client_gone(why)
        self.wake()
