"""The life of one client connection, sans-IO: every decision a driver must not make.

Owns :class:`Lifecycle` -- one per connection, for every worker type -- and
with it: when a request head must be complete, when a body and a response
must have moved (whole-phase deadlines), whether to send ``100 Continue``,
whether the connection may be kept alive, how much unread body to drain,
when to linger before closing, the core's own error answers (400/408/413/
431/…) and what a stop request means in each phase. Drivers (the blocking
one, the reactor, the asyncio one) only move bytes and wait; none of them
decides any of this.

Phases (``Lifecycle.phase``)::

    PROXY       PROXY protocol header expected     deadline: header_timeout from accept
    HANDSHAKE   TLS handshake in progress          deadline: header_timeout from accept
    FIRST_HEAD  first request head arriving        deadline: header_timeout from accept
    IDLE        kept alive, nothing received       deadline: keepalive after the response
    HEAD        a later head arriving              deadline: header_timeout from its start
    BODY        a request body arriving            deadline: the transfer budget
    APP         the app has the request            (the master's ``timeout`` guards it)
    DRAIN       reading the body the app left      deadline: the transfer budget
    LINGER      write side shut, input discarded   deadline: LINGER_SECONDS
    CLOSED
    UPGRADED    handed over to another protocol    (its driver owns the connection)

The driver's loop::

    while True:
        action = lc.next(now)
        READ     -> wait for bytes until lc.deadline: lc.received(data, now) (b"" = EOF),
                    or lc.timed_out(now) when the deadline passes
        WRITE    -> write lc.take_output() (a 100 Continue, a core error answer)
        RESPOND  -> when the app is about to start, lc.admit() (False: the request waited
                    past max_queue_time -- skip the app, next() has its 503 to write);
                    run the app for lc.request (lc.body_input when bodies are buffered,
                    else pull the body with lc.read_body, or lc.next_body_piece from a
                    driver that must not block); then lc.response_done(outcome)
        LINGER   -> shut the write side; READ until lc.deadline, discarding; then close
        CLOSE    -> close the connection

and tells it ``lc.stop(now)`` when the worker is told to stop (and
``lc.give_way(now)`` when another client waits for a one-connection worker).

**Upgrades** (a WebSocket): while the app has an ``Upgrade`` request
(RESPOND), the driver may answer ``101`` itself and call
``lc.hand_over(now)``: the lifecycle returns the bytes received past the
request head (the new protocol's first bytes) and decides nothing more for
the connection (``next`` refuses to); the request stays in flight for the
observer until ``lc.upgrade_finished(status, now)`` when the new protocol
ends. An upgrade the app refuses is an ordinary response
(``response_done``).

The promises:

* **A stop never cuts a client that may be sending.** A kept-alive
  connection stays open after a stop until its next response goes out with
  ``Connection: close``, or until it has idled for its keep-alive period; a
  connection that has not sent its first request keeps its header deadline;
  a request in flight finishes. The worker bounds it all by
  ``graceful_timeout``.
* **Every deadline is a whole-phase deadline.** A head must be complete
  within ``header_timeout`` of its first byte (of the accept, for the first
  one; of the moment it became the current request, for a pipelined one
  already buffered). A body and a response each get a
  :class:`TransferBudget`: the time spent *waiting for the client* (for
  body bytes to arrive, for the client to take response bytes) may total at
  most ``header_timeout + bytes moved / min_transfer_rate``, and no single
  wait may pass ``read_timeout`` without a byte moving. So a client
  trickling a byte a second is cut after about ``header_timeout`` however
  patiently it trickles, a client that stops is cut after ``read_timeout``,
  and neither a slow app (reading its body slowly, producing a stream
  slowly) nor a fast client is ever counted against the budget. A
  one-connection-at-a-time worker (``preforked``) also holds one request's
  transfers to ``hold_limit`` (its ``timeout``) in all, so one slow client
  cannot keep the worker from the others.
* **Keep-alive is decided here**: only while the client wants it, the
  strategy allows it (``may_keep_alive`` hook: nobody waiting for a
  one-connection worker), the worker is not stopping, no ``100 Continue``
  is still owed for an unread body, and what is left of the body is small
  enough to drain (``DRAIN_LIMIT``).
* **Linger** after an error answer or a close with input possibly unread, so
  the answer is not lost to a reset.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

from arbiter.http.app_response import ClientDisconnected, RequestBodyError, ResponseOutcome
from arbiter.http.protocol import (
    CONNECTION_CLOSED,
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    HTTPConnection,
    ProtocolError,
    Request,
)
from arbiter.http.queue_time import REQUEST_START, parse_request_start
from arbiter.http.response import CONTINUE_RESPONSE

__all__ = [
    "APP", "BODY", "CLOSE", "CLOSED", "DRAIN", "DRAIN_LIMIT", "FIRST_HEAD", "HANDSHAKE",
    "HEAD", "IDLE", "LINGER", "LINGER_SECONDS", "Lifecycle", "PHASE_NAMES", "PROXY", "READ",
    "RESPOND", "UPGRADED", "WRITE",
]

# Phases.
PROXY, HANDSHAKE, FIRST_HEAD, IDLE, HEAD, BODY, APP, DRAIN, LINGER, CLOSED, UPGRADED = range(11)
PHASE_NAMES = ("proxy", "handshake", "first_head", "idle", "head", "body", "app", "drain",
               "linger", "closed", "upgraded")

# What the driver does next.
READ, WRITE, RESPOND, LINGER_THEN_CLOSE, CLOSE = range(5)
ACTION_NAMES = ("READ", "WRITE", "RESPOND", "LINGER", "CLOSE")

DRAIN_LIMIT = 1024 * 1024  # unread request body read and discarded to keep a connection
LINGER_SECONDS = 0.5  # after the last answer: discard input this long before closing
LINGER_BYTES = 256 * 1024  # ... or until this much was discarded
GIVE_WAY_GRACE = 0.02  # an idle connection's last chance when another client waits
_INF = float("inf")


def _always() -> bool:
    return True


def _peer_address(address: tuple[str, int]) -> Any:
    """A PROXY header's address as an accept() peer: (ip, port), an IPv4-mapped IPv6
    address as plain IPv4 (as forwarded headers give it); a unix path as a str."""
    host, port = address
    if ":" not in host:
        return host if host.startswith(("/", "\x00")) else (host, port)
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return (host, port)
    return (str(mapped), port) if mapped is not None else (host, port)


class TransferBudget:
    """How long a body or a response may keep the connection waiting for its client.

    The drivers report each wait (``waited``) and each byte moved (``moved``);
    ``wait_deadline(now)`` is when a wait starting ``now`` must end.
    """

    __slots__ = ("grace", "min_rate", "stall", "limit_at", "waited_total", "moved_total",
                 "last_progress")

    def __init__(self, now: float, grace: float, min_rate: float, stall: float,
                 limit_at: float = _INF) -> None:
        self.grace = grace
        self.min_rate = min_rate  # bytes/s; 0: only the stall limit
        self.stall = stall  # the longest single wait without progress
        self.limit_at = limit_at  # the hold limit's absolute end (inf: none)
        self.waited_total = 0.0
        self.moved_total = 0
        self.last_progress = now

    def wait_deadline(self, now: float) -> float:
        deadline = self.last_progress + self.stall
        if self.min_rate:
            allowance = self.grace + self.moved_total / self.min_rate - self.waited_total
            deadline = min(deadline, now + max(allowance, 0.0))
        return min(deadline, self.limit_at)

    def waited(self, seconds: float) -> None:
        if seconds > 0:
            self.waited_total += seconds

    def moved(self, count: int, now: float) -> None:
        if count > 0:
            self.moved_total += count
            self.last_progress = now


class Lifecycle:
    """One connection's phases and deadlines (see the module docstring)."""

    __slots__ = (
        "http", "handler", "observer", "settings", "info", "phase", "deadline", "stopping",
        "served", "request", "out", "close_after", "linger_after", "may_keep_alive_hook",
        "buffer_bodies", "body_store", "body_input", "continue_owed", "budget", "wait_start",
        "request_start", "hold_limit", "min_rate", "read_timeout", "header_timeout",
        "keepalive", "lingered", "tls", "peer", "answered", "giving_way", "drained",
        "input_stamp", "first_stamp", "request_stamp", "queue_time", "max_queue_time",
        "handshake_seconds", "observed",
    )

    def __init__(self, handler: Any, http: HTTPConnection, peer: Any, sockname: Any,
                 now: float, *, observer: Any, tls: bool = False, proxy: bool = False,
                 buffer_bodies: bool = False, body_store: Callable[[], Any] | None = None,
                 may_keep_alive: Callable[[], bool] = _always,
                 hold_limit: float = 0.0, stamp: float | None = None) -> None:
        settings = handler.settings
        self.handler = handler
        self.http = http
        self.observer = observer
        self.settings = settings
        self.peer = peer
        self.info = handler.connection_info(peer, sockname)
        self.header_timeout = settings.header_timeout
        self.keepalive = settings.keepalive
        self.read_timeout = settings.read_timeout
        self.min_rate = settings.min_transfer_rate
        self.hold_limit = hold_limit
        self.may_keep_alive_hook = may_keep_alive
        self.buffer_bodies = buffer_bodies
        self.body_store = body_store
        self.body_input: Any = None
        self.tls = tls
        self.stopping = False
        self.served = 0
        self.request: Request | None = None
        self.out: list[bytes] = []
        self.close_after = False
        self.linger_after = False
        self.continue_owed = False
        self.request_start = now
        self.budget = self.new_budget(now)
        self.wait_start: float | None = now  # waiting for the client's body since
        self.drained = 0  # unread body discarded after the response
        self.lingered = 0
        self.answered = False  # the current request has been answered (or refused)
        self.giving_way = False  # idle, another client waits: closing after a grace
        self.deadline = now + self.header_timeout
        self.phase = PROXY if proxy else HANDSHAKE if tls else FIRST_HEAD
        # Queue time (see admit): wall-clock receive times. ``stamp``: the kernel's, of
        # the first bytes waiting at accept (for a driver whose reads carry none).
        self.first_stamp = stamp
        self.input_stamp: float | None = None  # of the oldest bytes not yet parsed
        self.request_stamp: float | None = None  # of the current request's first bytes
        self.queue_time: float | None = None  # how long the current request waited
        self.max_queue_time = settings.max_queue_time
        self.handshake_seconds = 0.0  # an upgrade's: from its head to hand_over
        self.observed = False  # the observer was told the current request started

    # -- inputs ------------------------------------------------------------------------
    def proxy_done(self, info: Any, now: float) -> None:
        """The PROXY protocol header (a ProxyInfo): who the client really is. The
        accept-time deadline stands for what follows (the handshake, the head)."""
        if info.source is not None:
            self.peer = _peer_address(info.source)
            destination = info.destination
            sockname = _peer_address(destination) if destination is not None else None
            self.info = self.handler.connection_info(
                self.peer, sockname if sockname is not None else ("", ""))
        self.phase = HANDSHAKE if self.tls else FIRST_HEAD

    def handshake_done(self, now: float) -> None:
        """The TLS handshake finished; the accept-time deadline stands for the head."""
        if self.phase == HANDSHAKE:
            self.phase = FIRST_HEAD

    def received(self, data: bytes, now: float, stamp: float | None = None) -> None:
        """Bytes from the client (``b""``: it closed its side); ``stamp``: the kernel's
        receive time of their first byte (wall clock), where the driver's read has it."""
        phase = self.phase
        if phase == LINGER:
            self.lingered += len(data)
            if not data or self.lingered > LINGER_BYTES:
                self.phase = CLOSED
            return
        if phase == CLOSED:
            return
        if phase == BODY or phase == DRAIN:  # the reactor waits for the client all along
            budget = self.budget
            if self.wait_start is not None:  # None: nobody waits (the app has not asked)
                budget.waited(now - self.wait_start)
                self.wait_start = now
            budget.moved(len(data), now)
            self.deadline = budget.wait_deadline(now)
            if phase == DRAIN:
                self.drained += len(data)
        http = self.http
        if data and not http.buffered:  # these bytes begin what is parsed next
            if stamp is None:
                stamp = self.first_stamp
                if stamp is None:
                    stamp = time.time()
                else:
                    self.first_stamp = None
            self.input_stamp = stamp
        http.receive_data(data)

    def timed_out(self, now: float) -> None:
        """``self.deadline`` passed: what that means depends on the phase."""
        phase = self.phase
        if phase in (FIRST_HEAD, HEAD) and not self.http.idle:
            self._refuse(408)  # slowloris: the head did not arrive in time
            return
        if phase == BODY and self.buffer_bodies and not self.answered:
            self.handler.error_log.debug("request body from %r too slow: cut", self.peer)
            self._refuse(408)
            return
        if phase in (BODY, DRAIN, APP):
            self.handler.error_log.debug("connection from %r: %s too slow", self.peer,
                                         PHASE_NAMES[phase])
        self.phase = CLOSED

    def stop(self, now: float) -> None:
        """The worker is told to stop. Nothing is cut: an idle kept-alive connection
        keeps its keep-alive deadline, a connection that has not sent its first
        request its header deadline; the next response says ``Connection: close``."""
        self.stopping = True

    def give_way(self, now: float) -> None:
        """Another client waits for this one-connection worker: an idle kept-alive
        connection is given up after a short grace (a request arriving within it is
        still served)."""
        if self.phase == IDLE and not self.giving_way:
            self.giving_way = True
            self.deadline = min(self.deadline, now + GIVE_WAY_GRACE)

    # -- the decision --------------------------------------------------------------------
    def next(self, now: float) -> int:
        """What the driver does now: READ, WRITE, RESPOND, LINGER_THEN_CLOSE or CLOSE."""
        if self.out:
            return WRITE
        phase = self.phase
        if phase == CLOSED:
            return CLOSE
        if phase == UPGRADED:
            raise RuntimeError("the connection was handed over to another protocol")
        if phase == LINGER:
            return READ
        if self.close_after:
            return self._close_now(now)
        if phase == HANDSHAKE or phase == PROXY:
            return READ
        http = self.http
        while True:
            event = http.next_event()
            etype = type(event)
            if etype is Data:
                if self.phase == DRAIN:
                    if self.drained > DRAIN_LIMIT:  # too much left unread: close
                        self.close_after = self.linger_after = True
                        return self._close_now(now)
                    continue  # discarded
                if self.body_store is not None and self.phase == BODY:
                    self.body_input.write(event.data)
                    continue
                raise RuntimeError("body bytes outside a body phase")
            if event is NEED_DATA:
                return self._await(now)
            if etype is Request:
                self._new_request(event, now)
                if self.buffer_bodies and event.content_length != 0:
                    self.phase = BODY
                    self.body_input = self.body_store()
                    self._begin_transfer(now)
                    if event.expect_continue:
                        self.out.append(CONTINUE_RESPONSE)
                        return WRITE
                    continue
                return self._respond(now)
            if etype is EndOfMessage:
                if self.phase == DRAIN:
                    http.next_event()  # PAUSED
                    return self._next_cycle(now)
                continue
            if event is PAUSED:
                if self.phase == BODY:  # a buffered body is complete
                    self.body_input.seek(0)
                    return self._respond(now)
                if self.phase == DRAIN:
                    return self._next_cycle(now)
                raise RuntimeError("PAUSED outside a body phase")
            if etype is ProtocolError:
                if self.phase == DRAIN:  # the rest of a body the app did not read
                    self.close_after = self.linger_after = True
                    return self._close_now(now)
                self._refuse(event)
                return WRITE
            if event is CONNECTION_CLOSED:
                self.phase = CLOSED
                return CLOSE
            raise RuntimeError(f"unexpected event {event!r}")

    def _new_request(self, request: Request, now: float) -> None:
        self.served += 1
        self.request = request
        self.request_start = now
        self.request_stamp = self.input_stamp
        self.answered = False
        self.continue_owed = request.expect_continue and request.content_length != 0

    def _respond(self, now: float) -> int:
        self.phase = APP
        self.deadline = _INF
        request = self.request
        assert request is not None
        self.observer.request_started(request.method, request.path.decode("latin-1"), self)
        self.observed = True
        return RESPOND

    def admit(self) -> bool:
        """The app is about to start on the current request (called by whoever starts
        it, when it does: a pool thread, the asyncio task): how long the request waited
        since its first bytes reached this server -- or its proxy, by a trusted proxy's
        ``X-Request-Start`` -- as ``queue_time``, told to the observer. False when it
        waited longer than ``max_queue_time``: it is answered ``503`` with
        ``Retry-After`` instead (``next()`` has the answer to write) and the app is not
        called -- refusing it now is cheaper than serving a client that gave up."""
        request = self.request
        assert request is not None
        start = self.request_stamp
        if self.info.trusted:
            for name, value in request.headers:
                if len(name) == 15 and name.lower() == REQUEST_START:
                    sent = parse_request_start(value)
                    if sent is not None:
                        start = sent
                    break
        if start is None:
            self.queue_time = None
            return True
        waited = time.time() - start
        if waited < 0.0:  # a proxy's clock ahead of ours
            waited = 0.0
        self.queue_time = request.queue_time = waited
        shed = 0.0 < self.max_queue_time < waited
        self.observer.request_queued(waited, shed)
        if shed:
            self.handler.error_log.debug("request from %r waited %.3f s (max_queue_time "
                                         "%g s): 503", self.peer, waited, self.max_queue_time)
            self._refuse(ProtocolError(503, "waited longer than max_queue_time", request))
            if request.content_length == 0 and not self.http.has_trailing_data:
                self.linger_after = False  # nothing unread to reset the answer: close now
            return False
        return True

    def _await(self, now: float) -> int:
        """NEED_DATA: enter the phase that matches what is missing, with its deadline."""
        http = self.http
        phase = self.phase
        if self.request is not None and phase in (BODY, DRAIN):
            return READ  # the transfer deadline moves as bytes arrive
        if phase == FIRST_HEAD:
            return READ  # the accept-time deadline stands
        if http.idle:
            if phase != IDLE:
                self.phase = IDLE
                self.deadline = now + self.keepalive
            return READ
        if phase != HEAD:  # the first byte of a later head
            self.phase = HEAD
            self.deadline = now + self.header_timeout
        return READ

    def new_budget(self, now: float) -> TransferBudget:
        """A fresh transfer budget (a body, a response), capped by the hold limit."""
        limit_at = self.request_start + self.hold_limit if self.hold_limit else _INF
        return TransferBudget(now, self.header_timeout, self.min_rate, self.read_timeout,
                              limit_at)

    def _begin_transfer(self, now: float) -> None:
        """A buffered body or a drain starts: the reactor waits for the client from now."""
        self.budget = self.new_budget(now)
        self.wait_start = now
        self.deadline = self.budget.wait_deadline(now)

    def _refuse(self, error: ProtocolError | int) -> None:
        """A core error answer (408, 400, 413, …), counted, then linger and close."""
        handler = self.handler
        self.out.append(handler.error_response(error, self.info))
        status = error.status if isinstance(error, ProtocolError) else error
        # A request refused before it reached the app was never started for the observer:
        # it took no time of the worker's (not the time since the last one started).
        self.observer.request_finished(status, self, None if self.observed else 0.0)
        self.observed = False
        self.answered = True
        self.close_after = self.linger_after = True
        self.request = None
        self.phase = APP  # no deadline while the answer goes out; then linger

    def _close_now(self, now: float) -> int:
        if self.linger_after:
            self.phase = LINGER
            self.deadline = now + LINGER_SECONDS
            self.lingered = 0
            return LINGER_THEN_CLOSE
        self.phase = CLOSED
        return CLOSE

    def _next_cycle(self, now: float) -> int:
        """The response is out and the request body consumed: the next request."""
        self._start_next_cycle(now)
        return self.next(now)

    def _start_next_cycle(self, now: float) -> None:
        self.http.start_next_cycle()
        self.request = None
        self.body_input = None
        self.giving_way = False
        # Even when stopping: the response promised keep-alive, so the client may be
        # sending its next request now; that one gets Connection: close.
        if self.http.has_trailing_data:
            # A pipelined request already buffered: its head clock starts now.
            self.phase = HEAD
            self.deadline = now + self.header_timeout
        else:
            self.phase = IDLE
            self.deadline = now + self.keepalive

    # -- what the driver hands over ------------------------------------------------------
    def take_output(self) -> bytes:
        """The bytes the core wants written now (100 Continue, an error answer)."""
        out, self.out = self.out, []
        return out[0] if len(out) == 1 else b"".join(out)

    def may_keep_alive(self) -> bool:
        """Asked when the response head is built: may this connection serve another?"""
        if self.keepalive <= 0 or self.stopping or not self.may_keep_alive_hook():
            return False
        if self.buffer_bodies:
            return True
        if self.continue_owed and not self.http.message_complete:
            return False  # the client still waits for 100 Continue before its body
        remaining = self.http.body_remaining
        return remaining is None or remaining <= DRAIN_LIMIT

    def read_body(self, recv: Callable[[float], bytes | None],
                  send: Callable[[bytes], None], now: float | None = None) -> bytes:
        """The next piece of the request body (b"" at its end), for a driver that
        lets the app read as the body arrives: ``recv(budget)`` returns bytes, b""
        at EOF, or None once the body's :class:`TransferBudget` ran out (the
        driver reports its waits and the bytes to it); ``send`` writes the 100 Continue
        owed before the first read. Raises RequestBodyError (a body the core
        refuses, or one too slow: 408) or ClientDisconnected (the client is gone)."""
        http = self.http
        if self.continue_owed:
            self.continue_owed = False
            if not http.message_complete:
                send(CONTINUE_RESPONSE)
        if self.phase == APP:  # the app's first read: the body's budget starts
            self.phase = BODY
            self.budget = self.new_budget(time.monotonic() if now is None else now)
        while True:
            event = http.next_event()
            etype = type(event)
            if etype is Data:
                return event.data
            if etype is EndOfMessage:
                self.phase = APP
                return b""
            if event is NEED_DATA:
                data = recv(self.budget)
                if data is None:  # the client is there, just too slow: it is told so
                    raise self.body_too_slow()
                http.receive_data(data)
                continue
            if etype is ProtocolError:
                raise RequestBodyError(event)
            raise ClientDisconnected("connection closed inside the request body")

    def next_body_piece(self, now: float) -> bytes | None:
        """The next piece of the request body for a driver that must not block (asyncio):
        bytes, ``b""`` at its end, or None when the client has to send more. Then the
        driver waits until ``self.deadline`` (the body's transfer budget: only the time
        the app waits for the client counts), hands what arrives to :meth:`received`
        and asks again; when the deadline passes first it raises :meth:`body_too_slow`.
        The ``100 Continue`` owed before the first read is queued for
        :meth:`take_output`. Raises RequestBodyError (a body the core refuses) or
        ClientDisconnected (the client closed inside the body)."""
        http = self.http
        if self.continue_owed:
            self.continue_owed = False
            if not http.message_complete:
                self.out.append(CONTINUE_RESPONSE)
        if self.phase == APP:  # the app's first read: the body's budget starts
            self.phase = BODY
            self.budget = self.new_budget(now)
            self.wait_start = None
        event = http.next_event()
        etype = type(event)
        if etype is Data:
            self.wait_start = None  # the app has bytes: its own pace is not the client's
            return event.data
        if etype is EndOfMessage:
            self.phase = APP
            self.deadline = _INF
            return b""
        if event is NEED_DATA:
            budget = self.budget
            if self.wait_start is None:  # a wait starts: so does its stall clock
                self.wait_start = now
                budget.last_progress = max(budget.last_progress, now)
            self.deadline = budget.wait_deadline(now)
            return None
        if etype is ProtocolError:
            raise RequestBodyError(event)
        raise ClientDisconnected("connection closed inside the request body")

    def body_too_slow(self) -> RequestBodyError:
        """The error for a body whose transfer budget ran out (the client is told 408)."""
        return RequestBodyError(ProtocolError(408, "the request body arrived too slowly",
                                              self.request))

    def writing(self, now: float) -> TransferBudget:
        """A response (or a core answer) starts to go out: its budget, for the driver to
        report its waits and bytes to; also the budget ``lc.deadline`` follows."""
        self.budget = self.new_budget(now)
        return self.budget

    def response_done(self, outcome: ResponseOutcome, now: float) -> bool:
        """The app's response is completely written (or abandoned). True when the
        connection now waits for the client's next request, nothing of it received:
        ``next()`` would answer READ at once (a driver may skip asking)."""
        self.observer.request_finished(outcome.status, self)
        self.observed = False
        self.answered = True
        if self.body_input is not None:
            close = getattr(self.body_input, "close", None)
            if close is not None:
                close()
            self.body_input = None
        if outcome.aborted:
            self.phase = CLOSED
            return False
        http = self.http
        if http.error is not None:  # the app read a body the core refused
            self.close_after = self.linger_after = True
            return False
        if not outcome.keep_alive:
            self.close_after = True
            self.linger_after = outcome.status == 0 or not http.message_complete or bool(
                http.has_trailing_data)
            return False
        # Drain what the app left unread (if anything) so the next request starts at its
        # head; a complete body leaves only the EndOfMessage bookkeeping (no wait, so no
        # transfer budget).
        if http.message_complete:  # nothing left of this request: the next one now
            self._start_next_cycle(now)
            return self.phase == IDLE and not self.out and not http.peer_closed
        self.phase = DRAIN
        self.drained = 0
        self._begin_transfer(now)
        return False

    def hand_over(self, now: float) -> bytes:
        """The driver answered the current request ``101 Switching Protocols``: the
        connection leaves HTTP. Returns the bytes received past the request head (the
        new protocol's first bytes); from now on this lifecycle decides nothing."""
        if self.phase != APP or self.request is None:
            raise RuntimeError("only a request the app has may be upgraded")
        http = self.http
        if not http.message_complete:
            http.next_event()  # the EndOfMessage of a request without a body
        rest = http.trailing_data
        self.handshake_seconds = now - self.request_start  # its duration, for the observer
        self.phase = UPGRADED
        self.deadline = _INF
        self.close_after = True
        self.out.clear()
        return rest

    def upgrade_finished(self, status: int, now: float) -> None:
        """The protocol the connection was handed over to ended: the request (``status``,
        101 for an upgrade carried out) is done for the observer -- its duration the
        handshake's, not the new protocol's lifetime (a WebSocket open for an hour is not
        an hour-long request in the duration histogram)."""
        if self.phase != UPGRADED:
            raise RuntimeError("upgrade_finished() without hand_over()")
        self.observer.request_finished(status, self, self.handshake_seconds)
        self.observed = False
        self.answered = True
        self.request = None
        self.phase = CLOSED

    @property
    def idle(self) -> bool:
        """Kept alive between requests with nothing received."""
        return self.phase == IDLE

    @property
    def may_give_way(self) -> bool:
        """Idle, not stopping, not already giving way: worth watching for other clients."""
        return self.phase == IDLE and not self.stopping and not self.giving_way
