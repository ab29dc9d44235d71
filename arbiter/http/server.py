"""The blocking connection driver: one socket, one thread, sans-IO core underneath.

Owns :func:`serve_connection`, used by the forked, preforked, threaded and
pooled workers. It only moves bytes: reads into an
:class:`~arbiter.http.protocol.HTTPConnection`, hands each ``Request`` to
:meth:`WSGIHandler.run_app <arbiter.http.wsgi.WSGIHandler.run_app>` with a
``wsgi.input`` that pulls body bytes from the socket on demand, and writes
what the handler produces. Waiting is done with ``poll()`` in ticks of at most
one second so the observer's heartbeat keeps beating and ``stopping()`` is
noticed while a keep-alive connection idles; writes try a non-blocking
``send`` first (one syscall on the hot path) and only then wait.

Timeouts: a request head must be complete within ``header_timeout`` of the
connection (first request) or of its first byte (later ones), else 408 —
slowloris clients are cut however slowly they trickle; a body read waits at
most ``read_timeout`` per read (a stalled body closes the connection); an
idle keep-alive connection waits ``keepalive`` seconds.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from arbiter.http.parsers import make_head_parser
from arbiter.http.protocol import (
    CONNECTION_CLOSED,
    NEED_DATA,
    Data,
    EndOfMessage,
    HTTPConnection,
    ProtocolError,
    Request,
)
from arbiter.http.response import CONTINUE_RESPONSE
from arbiter.http.wsgi import (
    EMPTY_INPUT,
    NULL_OBSERVER,
    ClientDisconnected,
    RequestBodyError,
    RequestObserver,
    StreamInput,
    WSGIHandler,
)
from arbiter.tls import HANDSHAKE_ERRORS, close_notify, handshake

__all__ = ["serve_connection", "send_all", "next_body_chunk", "DRAIN_LIMIT"]

DRAIN_LIMIT = 1024 * 1024  # unread request body we read and discard to keep a connection
_RECV_SIZE = 65536
_LINGER_SECONDS = 0.5
_GIVE_WAY_GRACE_MS = 20  # an idle connection's last chance before it gives way
_LINGER_BYTES = 256 * 1024
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_TLS_WRITE_CHUNK = 256 * 1024  # bytes per SSL write (each with the stall limit)
_POLLIN = select.POLLIN | select.POLLPRI
_POLLOUT = select.POLLOUT


def _always() -> bool:
    return True


def _never() -> bool:
    return False


class _Channel:
    """Blocking-with-ticks reads and writes on one socket."""

    __slots__ = ("sock", "observer", "stopping", "stall", "_rpoll", "_wpoll", "plain",
                 "_idle_poll")

    def __init__(self, sock: socket.socket, observer: RequestObserver,
                 stopping: Callable[[], bool], stall: float,
                 idle_fds: Sequence[int] = ()) -> None:
        self.sock = sock
        self.observer = observer
        self.stopping = stopping
        self.stall = stall
        self._rpoll = select.poll()
        self._rpoll.register(sock, _POLLIN)
        self._wpoll: Any = None
        self._idle_poll = self._rpoll
        if idle_fds:
            self._idle_poll = select.poll()
            self._idle_poll.register(sock, _POLLIN)
            for fd in idle_fds:
                self._idle_poll.register(fd, _POLLIN)
        self.plain = type(sock) is socket.socket

    def recv(self, timeout: float, idle: bool) -> bytes | None:
        """Bytes, b"" at EOF, or None on timeout (or, while idle, on stopping() or
        when one of the ``idle_fds`` becomes readable and the socket is not)."""
        deadline = time.monotonic() + timeout
        sock = self.sock
        poller = self._idle_poll if idle else self._rpoll
        fileno = sock.fileno()
        while True:
            self.observer.heartbeat()
            if idle and self.stopping():
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready = poller.poll(min(remaining, 1.0) * 1000.0)
            if ready:
                if poller is not self._rpoll and not any(fd == fileno for fd, _ in ready) \
                        and not self._rpoll.poll(_GIVE_WAY_GRACE_MS):
                    # Someone else is waiting: give this idle connection up — unless its
                    # client sends its next request within a short grace (closing then
                    # would race with that request and fail it).
                    return None
                try:
                    return sock.recv(_RECV_SIZE, _MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    raise ClientDisconnected(f"recv failed: {exc}") from None

    def send(self, data: bytes) -> None:
        """Write all of ``data``; ClientDisconnected if the peer is gone or stalls."""
        send_all(self.sock, data, self.stall, self.observer.heartbeat)

    def sendfile(self, file: Any, offset: int, count: int) -> int:
        """``socket.sendfile`` (zero-copy) with the stall limit as its timeout."""
        sock = self.sock
        sock.settimeout(self.stall)
        try:
            return sock.sendfile(file, offset, count)
        except OSError as exc:
            raise ClientDisconnected(f"sendfile failed: {exc}") from None
        finally:
            sock.settimeout(None)

    def linger_close(self) -> None:
        """Half-close, then read and discard briefly so the last response is not lost to RST."""
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + _LINGER_SECONDS
        budget = _LINGER_BYTES
        while budget > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._rpoll.poll(remaining * 1000.0):
                return
            try:
                data = sock.recv(_RECV_SIZE, _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if not data:
                return
            budget -= len(data)


class _TLSChannel(_Channel):
    """The same over a non-blocking ``ssl.SSLSocket``: no MSG_DONTWAIT (SSLSocket refuses
    flags), ``SSLWant*Error`` instead of BlockingIOError, decrypted bytes already
    buffered in the SSL object (``pending()``) read before any poll, plain writes
    instead of sendfile, and the TLS close alert sent before the socket closes."""

    __slots__ = ()

    def _wait(self, events: int, deadline: float) -> None:
        """Wait (heartbeating) until the socket is ready for ``events``, or raise."""
        poller = select.poll()
        poller.register(self.sock, events)
        while True:
            self.observer.heartbeat()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientDisconnected("timed out waiting for the TLS peer")
            if poller.poll(min(remaining, 1.0) * 1000.0):
                return

    def recv(self, timeout: float, idle: bool) -> bytes | None:
        deadline = time.monotonic() + timeout
        sock = self.sock
        poller = self._idle_poll if idle else self._rpoll
        fileno = sock.fileno()
        while True:
            if sock.pending():  # decrypted already: poll() would not see these bytes
                try:
                    return sock.recv(_RECV_SIZE)
                except (ssl.SSLError, OSError) as exc:
                    raise ClientDisconnected(f"recv failed: {exc}") from None
            self.observer.heartbeat()
            if idle and self.stopping():
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready = poller.poll(min(remaining, 1.0) * 1000.0)
            if ready:
                if poller is not self._rpoll and not any(fd == fileno for fd, _ in ready) \
                        and not self._rpoll.poll(_GIVE_WAY_GRACE_MS):
                    # Someone else is waiting: give this idle connection up — unless its
                    # client sends its next request within a short grace (closing then
                    # would race with that request and fail it).
                    return None
                try:
                    return sock.recv(_RECV_SIZE)
                except ssl.SSLWantReadError:  # a partial record, or a TLS 1.3 ticket/key update
                    continue
                except ssl.SSLWantWriteError:
                    self._wait(_POLLOUT, deadline)
                    continue
                except InterruptedError:
                    continue
                except OSError as exc:  # ssl.SSLError included
                    raise ClientDisconnected(f"recv failed: {exc}") from None

    def send(self, data: bytes) -> None:
        # Without SSL_MODE_ENABLE_PARTIAL_WRITE, an SSL write takes all it is given or
        # raises SSLWantWriteError and must be retried with the same bytes; large data
        # goes in chunks so the stall limit applies to each, as for plain sockets.
        sock = self.sock
        view = memoryview(data) if len(data) > _TLS_WRITE_CHUNK else data
        for offset in range(0, len(data), _TLS_WRITE_CHUNK):
            chunk = view[offset:offset + _TLS_WRITE_CHUNK] if view is not data else data
            deadline = time.monotonic() + self.stall
            while True:
                try:
                    sock.send(chunk)
                    break
                except ssl.SSLWantWriteError:
                    if self._wpoll is None:
                        self._wpoll = select.poll()
                        self._wpoll.register(sock, _POLLOUT)
                    while True:
                        self.observer.heartbeat()
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise ClientDisconnected("write timed out") from None
                        if self._wpoll.poll(min(remaining, 1.0) * 1000.0):
                            break
                except ssl.SSLWantReadError:
                    self._wait(_POLLIN, deadline)
                except InterruptedError:
                    continue
                except OSError as exc:
                    raise ClientDisconnected(f"send failed: {exc}") from None

    def linger_close(self) -> None:
        close_notify(self.sock)  # then half-close: the SSLSocket reads raw bytes from here on
        super().linger_close()


def next_body_chunk(conn: HTTPConnection, recv: Callable[[], bytes | None]) -> bytes:
    """The next piece of the current request's body (b"" at its end), reading more
    with ``recv()`` (bytes, b"" at EOF, None on timeout) as needed. A body the
    core refuses raises RequestBodyError; a client gone or stalled raises
    ClientDisconnected. The ``wsgi.input`` pull of every blocking reader."""
    while True:
        event = conn.next_event()
        etype = type(event)
        if etype is Data:
            return event.data
        if etype is EndOfMessage:
            return b""
        if event is NEED_DATA:
            data = recv()
            if data is None:
                raise ClientDisconnected("timed out reading the request body")
            conn.receive_data(data)
            continue
        if etype is ProtocolError:
            raise RequestBodyError(event)
        raise ClientDisconnected("connection closed inside the request body")


def send_all(sock: socket.socket, data: bytes, stall: float,
             on_wait: Callable[[], None] | None = None) -> None:
    """Write all of ``data`` to a plain socket: one non-blocking ``send`` on the hot
    path, then poll-and-send, waiting at most ``stall`` seconds for any progress
    (``on_wait`` is called before each wait: the worker's heartbeat).
    ClientDisconnected if the peer is gone or stalls. Shared by the blocking
    driver and the pooled worker's threads."""
    try:
        sent = sock.send(data, _MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError as exc:
        raise ClientDisconnected(f"send failed: {exc}") from None
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    poller = select.poll()
    poller.register(sock, _POLLOUT)
    deadline = time.monotonic() + stall
    while view:
        if on_wait is not None:
            on_wait()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientDisconnected("write timed out")
        if not poller.poll(min(remaining, 1.0) * 1000.0):
            continue
        try:
            sent = sock.send(view, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as exc:
            raise ClientDisconnected(f"send failed: {exc}") from None
        view = view[sent:]
        deadline = time.monotonic() + stall


def serve_connection(handler: WSGIHandler, sock: socket.socket, peer: Any, sockname: Any, *,
                     may_keep_alive: Callable[[], bool] = _always,
                     observer: RequestObserver = NULL_OBSERVER,
                     stopping: Callable[[], bool] = _never,
                     idle_fds: Sequence[int] = (),
                     tls: ssl.SSLContext | None = None) -> int:
    """Serve one connection on a blocking socket until it closes; return requests served.

    ``peer`` is the accept() address (tuple for TCP, '' or str for unix
    sockets); ``sockname`` is ``sock.getsockname()``. ``may_keep_alive()`` is
    asked before each response head: False -> ``Connection: close`` and the
    connection ends after it. ``stopping()`` True -> finish the current
    response, then close. ``idle_fds`` are watched while the connection idles
    between requests: when one becomes readable (a preforked worker passes its
    listeners and its signal wakeup fd) the idle connection is closed so the
    worker can accept the waiting client. Never raises for client
    misbehaviour; the socket is closed on return.

    ``tls``: the server's ``ssl.SSLContext``. The handshake is done here, in the
    thread or process that serves the connection, and must complete within
    ``header_timeout`` of the call; that same deadline also bounds the first
    request head. A failed or timed-out handshake is logged at debug level.
    """
    log = handler.error_log
    served = 0
    channel = None
    linger = False
    connected = time.monotonic()
    if tls is not None:
        try:
            sock = handshake(tls, sock, connected + handler.settings.header_timeout,
                             observer.heartbeat)
        except HANDSHAKE_ERRORS as exc:
            log.debug("TLS handshake with %r failed: %s", peer, exc)
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass
            return 0
    try:
        if tls is None:
            sock.setblocking(True)
            channel = _Channel(sock, observer, stopping, handler.settings.read_timeout,
                               idle_fds)
        else:
            channel = _TLSChannel(sock, observer, stopping, handler.settings.read_timeout,
                                  idle_fds)
        conn = HTTPConnection(handler.settings, make_head_parser(handler.parser_name))
        served, linger = _serve(handler, conn, channel, handler.connection_info(peer, sockname),
                                may_keep_alive, observer, stopping, connected)
    except ClientDisconnected as exc:
        log.debug("connection from %r ended: %s", peer, exc)
    except OSError as exc:
        log.debug("connection from %r failed: %s", peer, exc)
    except Exception:
        log.exception("unexpected error serving a connection from %r", peer)
    finally:
        if linger and channel is not None:
            try:
                channel.linger_close()
            except Exception:  # pragma: no cover - best effort only
                pass
        elif tls is not None:
            close_notify(sock)  # type: ignore[arg-type]
        try:
            sock.close()
        except OSError:  # pragma: no cover
            pass
    return served


def _serve(handler: WSGIHandler, conn: HTTPConnection, channel: _Channel, info: Any,
           may_keep_alive: Callable[[], bool], observer: RequestObserver,
           stopping: Callable[[], bool], connected: float) -> tuple[int, bool]:
    """The request loop; returns (requests served, whether to linger before closing)."""
    settings = handler.settings
    read_timeout = settings.read_timeout
    header_timeout = settings.header_timeout
    keepalive = settings.keepalive
    keepalive_on = keepalive > 0

    def allow_keep_alive() -> bool:
        return keepalive_on and may_keep_alive() and not stopping()

    served = 0
    # The whole head must arrive within header_timeout of the connection (first
    # request) or of the first byte of a later one: a slowloris client is cut.
    # ``connected``: when serving began (before the TLS handshake, if any).
    head_deadline = connected + header_timeout
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            idle = conn.idle
            if idle and served:
                # Between requests: wait up to keepalive; give way to waiting clients.
                data = channel.recv(keepalive, True)
                if data is None:
                    return served, False
                head_deadline = time.monotonic() + header_timeout
            else:
                remaining = head_deadline - time.monotonic()
                data = channel.recv(min(remaining, read_timeout), False) if remaining > 0 else None
                if data is None:
                    if idle:
                        return served, False  # connected, never sent a byte
                    channel.send(handler.error_response(408, info))
                    observer.request_finished(408)
                    return served, True
            conn.receive_data(data)
            continue
        etype = type(event)
        if etype is Request:
            served += 1
            started = time.perf_counter()
            request: Request = event
            observer.request_started(request.method, request.path.decode("latin-1"))
            if request.content_length == 0:
                environ = handler.build_environ(request, info, EMPTY_INPUT)
                outcome = handler.run_app(environ, request, channel.send,
                                          sendfile=channel.sendfile if channel.plain else None,
                                          may_keep_alive=allow_keep_alive, started=started)
                observer.request_finished(outcome.status)
                if not outcome.keep_alive:
                    return served, outcome.status == 0 or conn.trailing_data != b""
                if stopping():
                    return served, False
                conn.start_next_cycle()
                continue
            keep, linger = _serve_with_body(handler, conn, channel, info, request, started,
                                            allow_keep_alive, observer, read_timeout)
            if not keep or stopping():
                return served, linger
            conn.start_next_cycle()
            continue
        if etype is ProtocolError:
            channel.send(handler.error_response(event, info))
            observer.request_finished(event.status)
            return served, True
        if event is CONNECTION_CLOSED:
            return served, False
        raise RuntimeError(f"unexpected event {event!r} between requests")


def _serve_with_body(handler: WSGIHandler, conn: HTTPConnection, channel: _Channel, info: Any,
                     request: Request, started: float, allow_keep_alive: Callable[[], bool],
                     observer: RequestObserver, read_timeout: float) -> tuple[bool, bool]:
    """One request that has a body; returns (keep the connection, linger on close)."""
    continue_pending = request.expect_continue

    def pull() -> bytes:
        nonlocal continue_pending
        if continue_pending:
            continue_pending = False
            if not conn.message_complete:
                channel.send(CONTINUE_RESPONSE)
        return next_body_chunk(conn, lambda: channel.recv(read_timeout, False))

    def keep_alive_for_this() -> bool:
        if not allow_keep_alive():
            return False
        if continue_pending and not conn.message_complete:
            return False  # the client still waits for 100 Continue
        remaining = conn.body_remaining
        return remaining is None or remaining <= DRAIN_LIMIT

    wsgi_input = StreamInput(pull)
    environ = handler.build_environ(request, info, wsgi_input)
    outcome = handler.run_app(environ, request, channel.send,
                              sendfile=channel.sendfile if channel.plain else None,
                              may_keep_alive=keep_alive_for_this, started=started)
    observer.request_finished(outcome.status)
    if outcome.aborted:
        return False, False
    if conn.error is not None:
        return False, True
    if not outcome.keep_alive:
        return False, True
    # Drain what the app left unread so the next request starts at its head.
    budget = DRAIN_LIMIT
    while True:
        event = conn.next_event()
        etype = type(event)
        if etype is Data:
            budget -= len(event.data)
            if budget < 0:
                return False, True
            continue
        if etype is EndOfMessage:
            event = conn.next_event()  # PAUSED
            return True, False
        if event is NEED_DATA:
            data = channel.recv(read_timeout, False)
            if not data:
                return False, False
            conn.receive_data(data)
            continue
        if conn.message_complete:
            return True, False
        return False, True
