"""The reactor: one selector thread that owns every connection while it waits.

Owns, for the evented and pooled workers alike: the selector (an epoll
:class:`~arbiter.io.poller.Poller`), the listeners (watched, paused at
``max_connections``, rested after an accept error through
:func:`~arbiter.io.accept.accept_one`, left for a moment to less loaded peer
workers through :class:`~arbiter.io.balance.AcceptShare`), the signal wakeup fd, the deadline
buckets (:class:`DeadlineBuckets`), and the engine that carries out each
connection's :class:`~arbiter.http.lifecycle.Lifecycle` over a non-blocking
transport: the PROXY header and the TLS handshake, reads, a whole request
body spooled (:class:`~arbiter.http.bodies.BodySpool`) before the app sees
it, the core's own answers, writes with their transfer budget (the time the
client keeps output waiting), non-blocking ``sendfile``, linger and close,
and the drain when the worker stops (each connection is told; none is cut).

The same drain makes either worker a mold (``refork_after``): once the
worker's ``stopping()`` says so -- TERM, or ``fork_due`` -- nothing more is
accepted, every response says ``Connection: close`` and every connection
ends as its lifecycle promised; a mold keeps its listeners (unwatched), and
``run()`` returns once no connection is left, its selector closed (an epoll
fd must not be shared across a fork), so that :mod:`arbiter.workers.mold`
forks from a worker holding no client socket. The mold and its child each
build a new reactor. A mold whose connections outlast ``graceful_timeout``
gives the fork up (the master's request expires) and serves on: nobody is cut.

What differs between the two workers is one question, answered by their
strategy object: who runs the app, and who pulls the next piece of a
response once the socket has drained the last one -- the reactor thread
itself (evented), or a pool thread (pooled, which hands the connection over
and gets it back). The response is pulled only when the connection's output
is below ``OUTPUT_HIGH``, so a client that reads nothing holds at most one
piece of the response in memory, never the whole of it.

A strategy provides ``respond(conn)`` and ``resume(conn)`` (return True when
the reactor should go on driving the connection, False when it was handed
away), ``after_select()`` (once per turn, before events are dispatched) and
``on_wakeup()``, ``event_while_away(conn)`` (an event for a connection it
holds); it may register fds of its own with a callable as their data.
"""

from __future__ import annotations

import heapq
import os
import time
from typing import Any

from arbiter.http.app_response import AppResponse, ClientDisconnected, FileSegment
from arbiter.http.bodies import BodySpool, SpoolMemory
from arbiter.http.inputs import EMPTY_INPUT
from arbiter.http.lifecycle import (
    CLOSE,
    HANDSHAKE,
    LINGER_THEN_CLOSE,
    PROXY,
    READ,
    RESPOND,
    WRITE,
    Lifecycle,
)
from arbiter.http.parsers import make_head_parser
from arbiter.http.protocol import HTTPConnection
from arbiter.io.accept import ACCEPT_BACKOFF, AcceptPaused, accept_one
from arbiter.io.balance import RECHECK, AcceptShare
from arbiter.io.poller import READ as _READ
from arbiter.io.poller import WRITE as _WRITE
from arbiter.io.poller import Poller
from arbiter.io.proxy import ProxyHeaderTaker
from arbiter.io.stamps import peek_stamp
from arbiter.io.transport import NonBlockingTLSTransport, NonBlockingTransport, WouldBlock
from arbiter.tls import HANDSHAKE_ERRORS

__all__ = ["Connection", "DeadlineBuckets", "OUTPUT_HIGH", "Reactor"]

OUTPUT_HIGH = 64 * 1024  # pull the next response piece only below this much pending output
_INF = float("inf")


class Connection:
    """One client connection as the reactor holds it (kept small: 10,000 must fit)."""

    __slots__ = ("transport", "lc", "out", "out_size", "response", "segment", "budget",
                 "backlog_since", "events", "deadline", "bucket", "closed", "in_pool",
                 "taker", "tls_want", "peer", "task", "gone", "action")

    def __init__(self, transport: Any, lc: Lifecycle, peer: Any) -> None:
        self.transport = transport
        self.lc = lc
        self.peer = peer
        self.out: list = []  # bytes / memoryviews not yet written
        self.out_size = 0
        self.response: Any = None  # an AppResponse still being pulled
        self.segment: FileSegment | None = None  # a file part being sendfile()d
        self.budget: Any = None  # the response's TransferBudget
        self.backlog_since: float | None = None  # output waiting for the client since
        self.events = 0  # what the selector watches for
        self.deadline = _INF
        self.bucket: int | None = None
        self.closed = False
        self.in_pool = False  # a pool thread owns it (pooled)
        self.taker: ProxyHeaderTaker | None = None
        self.tls_want = 0  # TLS needs this event before it can go on
        self.task = 0  # pooled: what the pool thread is to do with it
        self.gone: object = None  # pooled: why a pool thread found the client gone
        self.action: int | None = None  # the lifecycle's answer a pool thread already got


class DeadlineBuckets:
    """Connection deadlines in buckets of 1/``RESOLUTION`` s, fired in order.

    ``schedule`` is O(1) and lazy: a deadline that moves later only updates
    ``conn.deadline``, and the connection is re-filed when its old bucket
    comes due. ``expired(now)`` looks only at buckets that are due.
    """

    RESOLUTION = 4  # buckets per second

    def __init__(self) -> None:
        self.buckets: dict[int, set[Connection]] = {}
        self.keys: list[int] = []  # heap of bucket keys

    def schedule(self, conn: Connection, deadline: float) -> None:
        conn.deadline = deadline
        if deadline == _INF:
            return  # filed nowhere; an old bucket re-checks it and lets it go
        key = int(deadline * self.RESOLUTION) + 1  # fires at key/RESOLUTION > deadline
        old = conn.bucket
        if old is not None:
            if old <= key:
                return  # the earlier bucket re-files it when it comes due
            self.buckets[old].discard(conn)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = set()
            heapq.heappush(self.keys, key)
        bucket.add(conn)
        conn.bucket = key

    def cancel(self, conn: Connection) -> None:
        if conn.bucket is not None:
            bucket = self.buckets.get(conn.bucket)
            if bucket is not None:
                bucket.discard(conn)
            conn.bucket = None

    def expired(self, now: float) -> list[Connection]:
        """Connections whose deadline has passed; the others in due buckets are re-filed."""
        due: list[Connection] = []
        keys = self.keys
        limit = now * self.RESOLUTION
        while keys and keys[0] <= limit:
            for conn in self.buckets.pop(heapq.heappop(keys), ()):
                conn.bucket = None
                if conn.deadline <= now:
                    due.append(conn)
                else:
                    self.schedule(conn, conn.deadline)
        return due

    def next_due(self) -> float | None:
        return self.keys[0] / self.RESOLUTION if self.keys else None


class Reactor:
    """The selector loop and the connection engine (see the module docstring)."""

    def __init__(self, worker: Any, strategy: Any, max_open: int) -> None:
        self.worker = worker
        self.strategy = strategy
        self.watchdog: Any = None  # a LoopWatchdog (reactor_block_warning), set by the worker
        self.handler = worker.handler
        self.log = worker.log
        self.tls = worker.tls
        self.max_open = max_open
        self.selector = Poller()
        self.timers = DeadlineBuckets()
        self.connections: set[Connection] = set()
        self.spool_memory = SpoolMemory()
        self.listeners = worker.listeners
        self.socknames = {lst.fileno: lst.sock.getsockname() for lst in self.listeners}
        self.listening = False
        self.paused_until = 0.0
        self.deferring = False  # paused to leave the accept queue to less loaded peers
        self.draining = False
        self.parser_name = self.handler.parser_name
        self.share = AcceptShare(worker.slot, int(worker.cfg.workers))
        for listener in self.listeners:
            listener.sock.setblocking(False)
        self.selector.register(worker.wakeup_r, _READ, None)

    def new_body(self) -> BodySpool:
        return BodySpool(self.spool_memory)

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        worker, selector, timers, strategy = self.worker, self.selector, self.timers, self.strategy
        watchdog = self.watchdog
        beat_every = worker.tick / 2
        next_beat = 0.0
        drain_deadline = _INF
        worker.slot.set_closed(False)  # a mold that forked accepts again
        self.watch_listeners(True)
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    worker.between_requests()
                    next_beat = now + beat_every
                if worker.stopping():  # TERM, or a mold about to fork
                    if not self.draining:
                        self.start_draining(now)
                        drain_deadline = now + float(worker.cfg.graceful_timeout)
                    if not self.connections:
                        return
                    if now >= drain_deadline:
                        if worker.alive:  # a mold: no fork rather than a client cut
                            self.give_up_fork()
                            continue
                        self.log.warning("worker #%d: graceful_timeout reached with %d "
                                         "connection(s) still open; closing them",
                                         worker.number, len(self.connections))
                        return
                elif not self.listening and len(self.connections) < self.max_open and (
                        now >= self.paused_until or self.deferring
                        and self.share.caught_up(len(self.connections), now)):
                    self.deferring = False
                    self.watch_listeners(True)
                wait = next_beat - now
                due = timers.next_due()
                if due is not None and due - now < wait:
                    wait = due - now
                if self.paused_until > now and not self.listening:
                    wait = min(wait, self.paused_until - now, RECHECK if self.deferring else wait)
                if watchdog is not None:
                    watchdog.waiting()
                events = selector.wait(max(wait, 0.0))
                if watchdog is not None:
                    watchdog.turned()
                strategy.after_select()
                for data, mask in events:
                    if type(data) is Connection:
                        self.on_event(data, mask)
                    elif data is None:
                        worker.drain_wakeup()
                        strategy.on_wakeup()
                    elif callable(data):  # a strategy's own fd (the pool's returns)
                        data()
                    else:
                        self.accept(data)
                now = time.monotonic()
                for conn in timers.expired(now):
                    if not conn.closed and not conn.in_pool:
                        self.guard(conn, self.on_deadline, now)
        finally:
            for conn in list(self.connections):
                if not conn.in_pool:
                    self.close(conn)
            self.watch_listeners(False)
            selector.close()
            if not (worker.alive and worker.fork_due):  # a mold serves again after forking
                for listener in self.listeners:
                    listener.sock.close()

    def guard(self, conn: Connection, step: Any, *args: Any) -> None:
        try:
            step(conn, *args)
        except ClientDisconnected as exc:
            self.log.debug("connection from %r ended: %s", conn.peer, exc)
            self.close(conn)
        except Exception:
            self.log.exception("unexpected error on a connection from %r", conn.peer)
            self.close(conn)

    def watch_listeners(self, watch: bool) -> None:
        if watch == self.listening or (watch and self.draining):
            return
        self.listening = watch
        if watch:
            self.share.deferring(False)
        for listener in self.listeners:
            try:
                if watch:
                    self.selector.register(listener.sock, _READ, listener)
                else:
                    self.selector.unregister(listener.sock)
            except (KeyError, ValueError, OSError):
                pass

    def start_draining(self, now: float) -> None:
        """The worker stops, or is a mold about to fork: accept nothing more; every
        connection is told and finishes as its lifecycle promised (none is cut). A
        connection a pool thread holds is told when it comes back (``drive``)."""
        worker = self.worker
        self.watch_listeners(False)
        self.draining = True
        worker.slot.set_closed()  # its peers stop counting on it
        self.log.debug("worker #%d (pid %d) stops accepting%s; %d connection(s) to finish",
                       worker.number, os.getpid(), "" if not worker.alive else " to fork",
                       len(self.connections))
        if not worker.alive:  # a mold keeps them for after the fork
            for listener in self.listeners:
                listener.sock.close()
        for conn in list(self.connections):
            if not conn.in_pool:
                conn.lc.stop(now)

    def give_up_fork(self) -> None:
        """A mold still holds connections after ``graceful_timeout``: it does not fork
        (the master's request expires) and accepts again; the connections it told to
        stop end after their next response."""
        worker = self.worker
        self.log.warning("worker #%d (pid %d), the mold, still holds %d connection(s) after "
                         "graceful_timeout: not forking", worker.number, os.getpid(),
                         len(self.connections))
        worker.fork_due = False
        self.draining = False
        worker.slot.set_closed(False)

    def may_keep_alive(self) -> bool:
        """The lifecycle's hook (asked by whichever thread builds a response head): no
        keep-alive once the worker stops or is about to fork."""
        return not self.worker.stopping()

    # -- accepting ---------------------------------------------------------------------
    def accept(self, listener: Any) -> None:
        handler, tls, log = self.handler, self.tls, self.log
        sockname = self.socknames[listener.fileno]
        connections, share = self.connections, self.share
        while len(connections) < self.max_open:
            if share.should_defer(len(connections), time.monotonic()):
                self.watch_listeners(False)  # a less loaded peer takes the next clients
                self.paused_until = share.deferred_until
                self.deferring = True
                return
            try:
                accepted = accept_one(listener, log)
            except AcceptPaused:
                self.watch_listeners(False)
                self.paused_until = time.monotonic() + ACCEPT_BACKOFF
                return
            if accepted is None:
                return
            sock, peer = accepted
            now = time.monotonic()
            proxy = handler.expects_proxy_header(peer)
            try:
                transport = (NonBlockingTransport(sock) if tls is None or proxy
                             else NonBlockingTLSTransport(tls, sock))
                http = HTTPConnection(handler.settings, make_head_parser(self.parser_name))
                lc = Lifecycle(handler, http, peer, sockname, now, observer=self.worker,
                               tls=tls is not None, proxy=proxy, buffer_bodies=True,
                               body_store=self.new_body,
                               may_keep_alive=self.may_keep_alive,
                               stamp=peek_stamp(sock) if tls is not None else None)
            except HANDSHAKE_ERRORS as exc:
                log.debug("connection from %r refused: %s", peer, exc)
                sock.close()
                continue
            conn = Connection(transport, lc, peer)
            if proxy:
                conn.taker = ProxyHeaderTaker(handler.proxy_protocol)
            connections.add(conn)
            share.publish(len(connections))
            if proxy or tls is not None:
                self.set_interest(conn, _READ)
                self.timers.schedule(conn, lc.deadline)
            else:
                # A new client has usually sent its request already: read it now. A
                # connection answered and closed at once then costs no epoll_ctl at all;
                # one that must wait is registered by the wait.
                self.guard(conn, self._on_event, _READ)
        self.watch_listeners(False)  # at the bound: further clients wait in the backlog

    # -- events ----------------------------------------------------------------------------
    def on_event(self, conn: Connection, mask: int) -> None:
        if conn.closed:
            return
        if conn.in_pool:  # bytes or EOF while a pool thread owns it: look when it is back
            self.strategy.event_while_away(conn)
            return
        self.guard(conn, self._on_event, mask)

    def _on_event(self, conn: Connection, mask: int) -> None:
        now = time.monotonic()
        lc = conn.lc
        phase = lc.phase
        if phase == PROXY:
            info = conn.taker.take(conn.transport.sock)  # type: ignore[union-attr]
            if info is None:
                return
            conn.taker = None
            lc.proxy_done(info, now)
            if self.tls is not None:
                conn.transport = NonBlockingTLSTransport(self.tls, conn.transport.sock)
        elif phase == HANDSHAKE:
            done = conn.transport.handshake_step()
            if done is not True:
                self.set_interest(conn, _READ if done is None else _WRITE)
                return
            lc.handshake_done(now)
        else:
            if conn.tls_want:
                conn.tls_want = 0
                mask = _READ | _WRITE
            if mask & _WRITE and not self.flush(conn, now):
                return
            if mask & _READ and not conn.out:
                self.read(conn, now)
        self.drive(conn, now)

    def read(self, conn: Connection, now: float) -> None:
        transport, lc = conn.transport, conn.lc
        try:
            while True:
                data = transport.recv()
                if data is None:
                    return
                lc.received(data, now, transport.stamp)
                if not data or not transport.buffered():
                    return
        except WouldBlock as exc:
            conn.tls_want = _WRITE if exc.want_write else _READ

    def on_deadline(self, conn: Connection, now: float) -> None:
        if conn.backlog_since is not None:  # the client kept the response waiting too long
            self.log.debug("connection from %r: response read too slowly", conn.peer)
            self.close(conn)
            return
        conn.lc.timed_out(now)
        self.drive(conn, now)

    # -- the engine ------------------------------------------------------------------------
    def drive(self, conn: Connection, now: float) -> None:
        """Carry out the lifecycle until it waits for the client, or the app has it."""
        lc, strategy = conn.lc, self.strategy
        while not conn.closed:
            if conn.out or conn.segment is not None:
                if not self.flush(conn, now):
                    return
                if conn.out or conn.segment is not None:
                    self.wait_for(conn, _WRITE, now)
                    return
            if conn.response is not None:
                if not strategy.resume(conn):
                    return
                continue
            action = conn.action
            if action is None:
                action = lc.next(now)
            else:
                conn.action = None
            if action == READ:
                if self.draining and not lc.stopping:
                    lc.stop(now)
                self.wait_for(conn, conn.tls_want or _READ, now)
                return
            if action == WRITE:
                conn.budget = lc.writing(now)
                self.queue(conn, lc.take_output())
            elif action == RESPOND:
                if not strategy.respond(conn):
                    return
            elif action == LINGER_THEN_CLOSE:
                conn.transport.shutdown_write()
            elif action == CLOSE:
                self.close(conn)
                return

    def start_response(self, conn: Connection) -> None:
        """Run the app for the lifecycle's complete request (its body spooled, or none);
        the response is then pulled with :meth:`pull` (by whoever owns the connection)."""
        lc = conn.lc
        if not lc.admit():
            return  # it waited too long: the lifecycle answers 503 instead (lc.next)
        request = lc.request
        assert request is not None
        handler = self.handler
        started = time.perf_counter()
        body = lc.body_input if request.content_length != 0 else None
        environ = handler.build_environ(request, lc.info, body if body is not None
                                        else EMPTY_INPUT)
        response = AppResponse(handler, environ, request, lc.may_keep_alive, started,
                               files=conn.transport.plain)
        response.start()
        conn.response = response
        conn.budget = lc.writing(time.monotonic())
        conn.backlog_since = None

    def pull(self, conn: Connection, now: float) -> None:
        """Pull the response's next pieces while the output is low (the reactor thread
        or a pool thread, whoever owns the connection); finish it at the end."""
        response = conn.response
        if response is None:
            return  # shed (see start_response): nothing of the app's to pull
        while conn.out_size < OUTPUT_HIGH and conn.segment is None:
            piece = response.pull()
            if piece is None:
                conn.response = None
                conn.lc.response_done(response.finish(), now)
                return
            if type(piece) is FileSegment:
                conn.segment = piece
            else:
                self.queue(conn, piece)

    @staticmethod
    def queue(conn: Connection, data: Any) -> None:
        if data:
            conn.out.append(data)
            conn.out_size += len(data)

    def flush(self, conn: Connection, now: float) -> bool:
        """Write what the socket takes now; False if the connection died."""
        transport = conn.transport
        sent_total = 0
        try:
            while conn.out:
                sent = transport.send(conn.out)
                if not sent:
                    break
                sent_total += sent
                self._consume(conn, sent)
            while conn.segment is not None and not conn.out:
                segment = conn.segment
                sent = transport.sendfile(segment.file, segment.offset, segment.count)
                if not sent:
                    if segment.count and self._file_ended(conn, segment):
                        continue
                    break
                sent_total += sent
                segment.offset += sent
                segment.count -= sent
                conn.response.file_sent(sent)
                if not segment.count:
                    conn.segment = None
        except WouldBlock as exc:
            conn.tls_want = _WRITE if exc.want_write else _READ
        except ClientDisconnected as exc:
            self.log.debug("connection from %r ended while writing: %s", conn.peer, exc)
            self.close(conn, exc)
            return False
        budget = conn.budget
        if budget is not None and conn.backlog_since is not None:
            budget.waited(now - conn.backlog_since)
            budget.moved(sent_total, now)
            conn.backlog_since = now if (conn.out or conn.segment is not None) else None
        return True

    @staticmethod
    def _file_ended(conn: Connection, segment: FileSegment) -> bool:
        """sendfile() sent nothing: would block, or the file is shorter than it said."""
        try:
            size = os.fstat(segment.file.fileno()).st_size
        except OSError:
            size = 0
        if segment.offset >= size:
            conn.segment = None  # short file: the response's framing notices
            return True
        return False

    @staticmethod
    def _consume(conn: Connection, sent: int) -> None:
        out = conn.out
        conn.out_size -= sent
        done = 0
        while done < len(out) and sent >= len(out[done]):
            sent -= len(out[done])
            done += 1
        if done:
            del out[:done]
        if sent:
            out[0] = memoryview(out[0])[sent:]

    def wait_for(self, conn: Connection, events: int, now: float) -> None:
        """Watch ``events``; file the deadline that ends the wait."""
        if events & _WRITE and (conn.out or conn.segment is not None):
            if conn.backlog_since is None:
                conn.backlog_since = now
            budget = conn.budget or conn.lc.writing(now)
            conn.budget = budget
            deadline = budget.wait_deadline(conn.backlog_since)
        else:
            deadline = conn.lc.deadline
        self.set_interest(conn, events)
        self.timers.schedule(conn, deadline)

    def set_interest(self, conn: Connection, events: int) -> None:
        if events == conn.events or conn.closed:
            return
        sock = conn.transport.sock
        try:
            if not events:
                self.selector.unregister(sock)
            elif not conn.events:
                self.selector.register(sock, events, conn)
            else:
                self.selector.modify(sock, events, conn)
        except (KeyError, ValueError, OSError):
            pass
        conn.events = events

    def close(self, conn: Connection, why: object = "closed") -> None:
        if conn.closed:
            return
        self.timers.cancel(conn)
        self.connections.discard(conn)
        self.share.publish(len(self.connections))
        if conn.events:  # closing the socket ends its epoll registration: no epoll_ctl
            self.selector.forget(conn.transport.sock)
            conn.events = 0
        conn.closed = True
        conn.transport.close()
        response = conn.response
        if response is not None:  # a response cut short: still counted, its app closed
            conn.response = None
            response.client_gone(why)
            conn.lc.response_done(response.finish(), time.monotonic())
        body = conn.lc.body_input
        if body is not None:
            body.close()
        conn.out = []
        conn.segment = None
