"""The blocking connection driver: one socket, one thread or process, the lifecycle deciding.

Owns :func:`serve_connection`, used by the forked, preforked and threaded
workers. It only carries out what the connection's
:class:`~arbiter.http.lifecycle.Lifecycle` answers -- read until its
deadline, write its bytes, run the app, linger, close -- over a
:class:`~arbiter.io.transport.BlockingTransport` (or its TLS twin, after the
handshake, which must complete within ``header_timeout``). The app reads the
body as it arrives (``wsgi.input`` pulls through the lifecycle, which owes the
``100 Continue`` and holds the body's transfer budget) and its response is
written as it is produced, each write within the response's budget.

Every wait lasts at most a tick, so the worker's heartbeat beats and a stop
(``stopping()``) is noticed: the lifecycle then lets the connection finish
as it promised (see its module). While the connection idles between
requests, ``watch_fds`` (a preforked worker's listeners and wakeup fd) are
watched too: when one becomes readable -- another client waits -- the
lifecycle gives the idle connection a short grace, then gives it up.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from arbiter.http.app_response import AppResponse, ClientDisconnected, FileSegment
from arbiter.http.inputs import EMPTY_INPUT, StreamInput
from arbiter.http.lifecycle import CLOSE, LINGER_THEN_CLOSE, READ, RESPOND, WRITE, Lifecycle
from arbiter.http.parsers import make_head_parser
from arbiter.http.protocol import HTTPConnection
from arbiter.http.wsgi import NULL_OBSERVER, RequestObserver, WSGIHandler
from arbiter.io.proxy import ProxyHeaderTaker
from arbiter.io.stamps import peek_stamp
from arbiter.io.transport import (
    READABLE,
    TIMEOUT,
    WATCHED,
    BlockingTLSTransport,
    BlockingTransport,
)
from arbiter.tls import HANDSHAKE_ERRORS, wrap

__all__ = ["serve_connection"]


def _always() -> bool:
    return True


def _never() -> bool:
    return False


def serve_connection(handler: WSGIHandler, sock: socket.socket, peer: Any, sockname: Any, *,
                     may_keep_alive: Callable[[], bool] = _always,
                     observer: RequestObserver = NULL_OBSERVER,
                     stopping: Callable[[], bool] = _never,
                     watch_fds: Sequence[int] = (),
                     tls: ssl.SSLContext | None = None,
                     hold_limit: float = 0.0) -> int:
    """Serve one connection until it closes; return the requests served.

    ``peer`` is the accept() address (a tuple for TCP, '' or str for a unix
    socket); ``sockname`` is ``sock.getsockname()``. ``may_keep_alive()`` is
    asked before each response head (the strategy's say: nobody waiting).
    ``stopping()`` True: the worker was told to stop (see the lifecycle).
    ``hold_limit``: seconds one request's transfers may take in all (preforked).
    Never raises for client misbehaviour; the socket is closed on return.
    """
    log = handler.error_log
    transport: BlockingTransport | None = None
    lc: Lifecycle | None = None
    try:
        http = HTTPConnection(handler.settings, make_head_parser(handler.parser_name))
        proxy = handler.expects_proxy_header(peer)
        lc = Lifecycle(handler, http, peer, sockname, time.monotonic(), observer=observer,
                       tls=tls is not None, proxy=proxy,
                       may_keep_alive=lambda: may_keep_alive() and not stopping(),
                       hold_limit=hold_limit,
                       stamp=peek_stamp(sock) if tls is not None else None)
        if proxy:  # before the TLS handshake: the proxy speaks first, in the clear
            lc.proxy_done(_take_proxy_header(handler.proxy_protocol, sock, lc.deadline,
                                             observer.heartbeat), time.monotonic())
        if tls is not None:
            try:
                transport = BlockingTLSTransport(wrap(tls, sock), observer.heartbeat, watch_fds)
            except HANDSHAKE_ERRORS as exc:
                log.debug("TLS with %r failed: %s", peer, exc)
                sock.close()
                return 0
            transport.handshake(lc.deadline)  # type: ignore[attr-defined]
            lc.handshake_done(time.monotonic())
        else:
            transport = BlockingTransport(sock, observer.heartbeat, watch_fds)
        _drive(handler, lc, transport, stopping)
    except ClientDisconnected as exc:
        log.debug("connection from %r ended: %s", peer, exc)
    except OSError as exc:
        log.debug("connection from %r failed: %s", peer, exc)
    except Exception:
        log.exception("unexpected error serving a connection from %r", peer)
    finally:
        if transport is not None:
            transport.close()
        else:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass
    return lc.served if lc is not None else 0


def _take_proxy_header(mode: str, sock: socket.socket, deadline: float,
                       heartbeat: Callable[[], None]) -> Any:
    """The PROXY protocol header, by ``deadline``; ClientDisconnected if not."""
    taker = ProxyHeaderTaker(mode)
    sock.setblocking(False)
    waiting = BlockingTransport(sock, heartbeat)
    while True:
        info = taker.take(sock)
        if info is not None:
            return info
        if waiting.recv_until_readable(deadline) is None:
            raise ClientDisconnected("no PROXY protocol header within header_timeout")


def _drive(handler: WSGIHandler, lc: Lifecycle, transport: BlockingTransport,
           stopping: Callable[[], bool]) -> None:
    """Carry out the lifecycle's answers until it says CLOSE."""
    now = time.monotonic()
    fresh = transport.plain  # a new client has usually sent its request already: read first
    while True:
        action = lc.next(now)
        if action == READ:
            if fresh:
                fresh = False
                data = transport.recv()
                if data is not None:
                    lc.received(data, now, transport.stamp)
                    continue
            if not lc.stopping and stopping():
                lc.stop(now)
            state = transport.wait_readable(lc.deadline, watch=lc.may_give_way)
            now = time.monotonic()
            if state == READABLE:
                data = transport.recv()
                if data is not None:
                    lc.received(data, now, transport.stamp)
            elif state == TIMEOUT:
                lc.timed_out(now)
            elif state == WATCHED:
                # Another client waits: the idle connection is given up, unless its own
                # client sends the next request within the grace.
                lc.give_way(now)
        elif action == WRITE:
            transport.send_all(lc.take_output(), lc.writing(now))
            now = time.monotonic()
        elif action == RESPOND:
            if not lc.stopping and stopping():
                lc.stop(now)  # before the head says keep-alive
            _respond(handler, lc, transport)
            now = time.monotonic()
        elif action == LINGER_THEN_CLOSE:
            transport.shutdown_write()
        elif action == CLOSE:
            return


def _respond(handler: WSGIHandler, lc: Lifecycle, transport: BlockingTransport) -> None:
    """Run the app for the lifecycle's request; write its response as it comes."""
    if not lc.admit():
        return  # it waited too long: the lifecycle answers 503 instead
    request = lc.request
    assert request is not None
    started = time.perf_counter()
    if request.content_length == 0:
        wsgi_input: Any = EMPTY_INPUT
    else:
        def pull() -> bytes:
            return lc.read_body(transport.recv_within,
                                lambda data: transport.send_all(data, lc.budget))
        wsgi_input = StreamInput(pull)
    environ = handler.build_environ(request, lc.info, wsgi_input)
    response = AppResponse(handler, environ, request, lc.may_keep_alive, started,
                           files=transport.plain)
    response.start()
    budget = lc.writing(time.monotonic())
    try:
        while (piece := response.pull()) is not None:
            if type(piece) is FileSegment:
                response.file_sent(transport.sendfile(piece.file, piece.offset, piece.count,
                                                      budget))
            elif (following := response.pull_pending_bytes()) is not None:
                transport.send_pair(piece, following, budget)  # a head and a large body
            else:
                transport.send_all(piece, budget)
    except ClientDisconnected as exc:
        response.client_gone(exc)
    lc.response_done(response.finish(), time.monotonic())
