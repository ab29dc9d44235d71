"""The ``asgi`` worker: one asyncio event loop per process serving an ASGI 3 (or 2) app.

The coroutine pattern: like ``evented``, one thread holds every connection,
but the app is a coroutine that awaits its body and its client instead of
being called once the request is complete. The loop is uvloop's when it
imports (the ``uvloop`` extra), else asyncio's own. What a
connection does is its :class:`~arbiter.http.lifecycle.Lifecycle`'s call,
carried out by :class:`~arbiter.asgi.connection.HTTPProtocol`; this module is
only the strategy around it:

* **Accepting**: the inherited listeners are watched by the loop; each
  accepted socket becomes a protocol
  (:func:`~arbiter.asgi.connection.open_connection`). A worker holding more
  connections than its peers leaves the next clients to them for a moment
  (:class:`~arbiter.io.balance.AcceptShare`). At ``max_connections`` open
  connections the listeners are unwatched and clients wait in the backlog.
* **Boot**: the ``lifespan`` startup (:mod:`arbiter.asgi.lifespan`) runs
  before the worker reports ready; one that fails is a failed boot (exit 3),
  so a first start exits and a reload rolls back.
* **Heartbeat**: a loop callback beats every half ``tick``; an app that blocks
  the loop stops it, and the master kills the worker after ``timeout``
  (``hung_policy = "self"``: a slow request is this worker's business).
* **timeout**: a longer request (its client's waits not counted) is cancelled
  by its :class:`~arbiter.asgi.connection.RequestCycle` (504); the worker serves on.
* **reactor_block_warning**: a loop blocked that long logs the blocking call's
  stack (:class:`~arbiter.io.event_loop.LoopWatchdog`).
* **Stop** (TERM, a recycle, a scale-down): the listeners close, every
  connection is told and finishes as its lifecycle promised, within
  ``graceful_timeout`` less ``SHUTDOWN_RESERVE`` (then what is left is
  cut), then the lifespan shutdown runs in what is left of
  ``graceful_timeout`` -- the master kills the worker at its end. An open
  WebSocket (:mod:`arbiter.asgi.websocket`) is left to its app until
  ``WEBSOCKET_CLOSE_MARGIN`` before the drain's end, then sent a close 1001
  ("going away") and given the margin for its close handshake.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

from arbiter.appload import asgi2_reason
from arbiter.asgi.connection import HTTPProtocol, open_connection
from arbiter.asgi.handler import ASGIHandler
from arbiter.asgi.lifespan import Lifespan, LifespanFailed
from arbiter.io.accept import ACCEPT_BACKOFF, AcceptPaused, accept_one
from arbiter.io.balance import RECHECK, AcceptShare
from arbiter.io.event_loop import new_event_loop
from arbiter.workers.base import Worker
from arbiter.workers.evented import FD_SLACK, raise_open_files_limit

__all__ = ["AsgiWorker"]

SHUTDOWN_RESERVE = 1.0  # of graceful_timeout (at most a quarter), kept for the lifespan shutdown
WEBSOCKET_CLOSE_MARGIN = 2.0  # of the drain (at most a quarter): open WebSockets close 1001


class AsgiWorker(Worker):
    """One event loop serving an ASGI app (see the module docstring)."""

    worker_type = "asgi"
    multithread = True  # many requests in flight: the scoreboard shows count and oldest
    hung_policy = "self"

    loop: asyncio.AbstractEventLoop | None = None

    def make_handler(self, settings: Any, access_log: Any) -> ASGIHandler:
        return ASGIHandler(self.app, settings, self.log, access_log,
                           asgi2=asgi2_reason(self.app) is not None)

    def start_app(self) -> str | None:
        cfg = self.cfg
        self.connections: set[HTTPProtocol] = set()
        self.opening = 0  # accepted, handshake under way
        self.draining = False
        self.accepting = False
        self.full = False  # the listeners are unwatched at max_connections
        self.share = AcceptShare(self.slot, int(cfg.workers))
        self.request_timeout = float(cfg.timeout)
        self.websocket_message_limit = int(cfg.limits.websocket_message)
        self.max_open = cfg.max_connections
        soft = raise_open_files_limit(cfg.max_connections + FD_SLACK)
        if soft != resource.RLIM_INFINITY and soft < cfg.max_connections + FD_SLACK:
            self.max_open = max(1, soft - FD_SLACK)
        self.loop = loop = new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self.loop_error)
        self.stop_requested = asyncio.Event()
        self.all_closed = asyncio.Event()
        self.lifespan = Lifespan(self.handler.asgi_app, cfg.lifespan, self.handler.state,
                                 self.log)
        try:
            loop.run_until_complete(self.lifespan.startup(float(cfg.boot_timeout)))
        except LifespanFailed as exc:
            loop.close()
            return str(exc)
        self.log.debug("worker #%d: %s event loop", self.number, type(loop).__module__)
        return None

    def serve(self) -> None:
        assert self.loop is not None
        watchdog = self.loop_watchdog()
        if watchdog is not None:
            watchdog.start()
            watchdog.follow(self.loop)
        try:
            self.loop.run_until_complete(self.main())
        finally:
            if watchdog is not None:
                watchdog.stop()
            for listener in self.listeners:
                listener.sock.close()
            self.loop.close()

    async def main(self) -> None:
        for listener in self.listeners:
            listener.sock.setblocking(False)
        self.watch_listeners(True)
        self.beat()
        await self.stop_requested.wait()
        started = time.monotonic()
        graceful = float(self.cfg.graceful_timeout)
        # The master kills what is left at graceful_timeout: the drain ends before, so the
        # lifespan shutdown still has a moment.
        await self.drain(graceful - min(SHUTDOWN_RESERVE, graceful / 4))
        left = graceful - (time.monotonic() - started)
        await self.lifespan.shutdown(max(left, 0.1))

    # -- the loop's chores ---------------------------------------------------------------
    def beat(self) -> None:
        """Heartbeat and housekeeping, every half tick, from the loop itself."""
        if self.between_requests():
            self.loop.call_later(self.tick / 2, self.beat)
        else:
            self.stop_requested.set()

    def loop_error(self, loop: Any, context: dict) -> None:
        """What asyncio could not hand to anyone (a callback's error): the error log."""
        self.log.error("worker #%d: event loop: %s", self.number,
                       context.get("message", "error"), exc_info=context.get("exception"))

    def handle_term(self, signum: int, frame: Any) -> None:
        super().handle_term(signum, frame)
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_requested.set)

    def may_keep_alive(self) -> bool:
        return self.alive

    # -- accepting ---------------------------------------------------------------------
    def watch_listeners(self, watch: bool) -> None:
        if watch == self.accepting or (watch and self.draining):
            return
        self.accepting = watch
        if watch:
            self.full = False
            self.share.deferring(False)
        for listener in self.listeners:
            if watch:
                self.loop.add_reader(listener.sock.fileno(), self.accept, listener)
            else:
                self.loop.remove_reader(listener.sock.fileno())

    def accept(self, listener: Any) -> None:
        share = self.share
        while (held := len(self.connections) + self.opening) < self.max_open:
            if share.should_defer(held, time.monotonic()):
                self.watch_listeners(False)  # a less loaded peer takes the next clients
                self.loop.call_later(RECHECK, self.end_deferral)
                return
            try:
                accepted = accept_one(listener, self.log)
            except AcceptPaused:
                self.watch_listeners(False)
                self.loop.call_later(ACCEPT_BACKOFF, self.watch_listeners, True)
                return
            if accepted is None:
                return
            sock, peer = accepted
            sock.setblocking(False)
            self.opening += 1
            self.loop.create_task(self.connect(sock, peer))
        self.watch_listeners(False)  # at the bound: further clients wait in the backlog
        self.full = True

    def end_deferral(self) -> None:
        """While leaving the accept queue to peers: accept again once they caught up."""
        if self.accepting or self.draining:
            return
        now = time.monotonic()
        held = len(self.connections) + self.opening
        if now >= self.share.deferred_until or self.share.caught_up(held, now):
            self.watch_listeners(True)
        else:
            self.loop.call_later(RECHECK, self.end_deferral)

    async def connect(self, sock: Any, peer: Any) -> None:
        try:
            await open_connection(self, sock, peer, float(self.cfg.header_timeout))
        finally:
            self.opening -= 1
            self.forget(None)

    def opened(self, conn: HTTPProtocol) -> None:
        self.connections.add(conn)
        self.share.publish(len(self.connections))

    def forget(self, conn: HTTPProtocol | None) -> None:
        """A connection closed (or never opened): accept again below the bound."""
        if conn is not None:
            self.connections.discard(conn)
            self.share.publish(len(self.connections))
        held = len(self.connections) + self.opening
        if self.draining and not held:
            self.all_closed.set()
        elif not self.draining and self.full and held < self.max_open:
            self.watch_listeners(True)

    # -- stopping ----------------------------------------------------------------------
    async def drain(self, within: float) -> None:
        """Accept nothing more; let every connection finish as its lifecycle promised,
        ``within`` seconds; then cut what is left."""
        self.watch_listeners(False)
        self.draining = True
        self.slot.set_closed()
        for listener in self.listeners:
            listener.sock.close()
        for conn in list(self.connections):
            conn.stop()
        self.forget(None)
        # A WebSocket is not cut when the drain starts (its app may still use it): it is
        # sent a close 1001 once the time is nearly up, its close handshake given the rest.
        margin = min(WEBSOCKET_CLOSE_MARGIN, within / 4)
        try:
            await asyncio.wait_for(self.all_closed.wait(), max(within - margin, 0.0))
        except TimeoutError:
            for conn in list(self.connections):
                conn.going_away()
        try:
            await asyncio.wait_for(self.all_closed.wait(), margin)
        except TimeoutError:
            self.log.warning("worker #%d: graceful_timeout reached with %d connection(s) "
                             "still open; closing them", self.number, len(self.connections))
            for conn in list(self.connections):
                if conn.cycle is not None and conn.cycle.task is not None:
                    conn.cycle.task.cancel()
                conn.abort()
