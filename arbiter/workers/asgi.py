"""The ``asgi`` worker: one asyncio event loop per process serving an ASGI 3 (or 2) app.

The coroutine pattern: like ``evented``, one thread holds every connection, but
the app is a coroutine that awaits its body and its client instead of being
called once the request is complete. The loop is uvloop's when it imports (the
``uvloop`` extra), else asyncio's own. What a connection does is its
:class:`~arbiter.http.lifecycle.Lifecycle`'s call, carried out by
:class:`~arbiter.asgi.connection.HTTPProtocol`; this module is the strategy
around it (its scoreboard row is written once a turn: ``publish_once_a_turn``):

* **Accepting**: the inherited listeners are watched by the loop; each
  accepted socket becomes a protocol
  (:func:`~arbiter.asgi.connection.open_connection`). A worker holding more
  connections than its peers leaves the next clients to them for a moment
  (:class:`~arbiter.io.balance.AcceptShare`). At ``max_connections`` open
  connections the listeners are unwatched and clients wait in the backlog.
* **Boot**: the ``lifespan`` startup (:mod:`arbiter.asgi.lifespan`) runs
  before the worker reports ready; one that fails is a failed boot (exit 3),
  so a first start exits and a reload rolls back.
* **Heartbeat**: a loop callback beats every half ``tick``; an app that blocks the
  loop stops it, and the master kills the worker after ``timeout`` (``hung_policy =
  "self"``: a slow request is this worker's business).
* **timeout**: a longer request (its client's waits not counted) is cancelled by its
  :class:`~arbiter.asgi.connection.RequestCycle` (504); the worker serves on.
* **reactor_block_warning**: a loop blocked that long logs the blocking call's stack
  (:class:`~arbiter.io.event_loop.LoopWatchdog`).
* **Stop** (TERM, a recycle, a scale-down) and **refork** (``refork_after``:
  this type can be the mold): :mod:`arbiter.asgi.draining` -- a stop drains
  every connection within ``graceful_timeout`` less ``SHUTDOWN_RESERVE``,
  then runs the lifespan shutdown; a mold stops accepting until no request is
  in flight, forks between two runs of its loop, and the worker it forked
  starts a loop and a lifespan of its own.
"""

from __future__ import annotations

import asyncio
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from arbiter.appload import asgi2_reason
from arbiter.asgi.connection import HTTPProtocol, open_connection
from arbiter.asgi.draining import drain, quiet_for_fork, start_afresh_after_fork
from arbiter.asgi.handler import ASGIHandler
from arbiter.asgi.lifespan import Lifespan, LifespanFailed
from arbiter.io.accept import ACCEPT_BACKOFF, AcceptPaused, accept_one
from arbiter.io.balance import RECHECK, AcceptShare
from arbiter.io.event_loop import new_event_loop
from arbiter.workers.base import Worker
from arbiter.workers.evented import FD_SLACK, raise_open_files_limit

__all__ = ["AsgiWorker"]

SHUTDOWN_RESERVE = 1.0  # of graceful_timeout (at most a quarter), kept for the lifespan shutdown


class AsgiWorker(Worker):
    """One event loop serving an ASGI app (see the module docstring)."""

    worker_type = "asgi"
    multithread = True  # many requests in flight: the scoreboard shows count and oldest
    hung_policy = "self"
    can_refork = True
    loop: asyncio.AbstractEventLoop | None = None

    def make_handler(self, settings: Any, access_log: Any) -> ASGIHandler:
        return ASGIHandler(self.app, settings, self.log, access_log,
                           asgi2=asgi2_reason(self.app) is not None)

    def start_app(self) -> str | None:
        cfg = self.cfg
        self.request_timeout = float(cfg.timeout)
        self.websocket_message_limit = int(cfg.limits.websocket_message)
        self.max_open = cfg.max_connections
        soft = raise_open_files_limit(cfg.max_connections + FD_SLACK)
        if soft != resource.RLIM_INFINITY and soft < cfg.max_connections + FD_SLACK:
            self.max_open = max(1, soft - FD_SLACK)
        self.left_by_the_mold: list = []  # a reforked worker's: see start_afresh_after_fork
        return self.open_loop()

    def open_loop(self) -> str | None:
        """A new event loop, and the lifespan startup run on it: None, or why it failed."""
        self.connections: set[HTTPProtocol] = set()
        self.opening = 0  # accepted, handshake under way
        # full: the listeners are unwatched at max_connections
        self.draining = self.quieting = self.accepting = self.full = False
        self.share = AcceptShare(self.slot, int(self.cfg.workers))
        self.loop = loop = new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self.loop_error)
        loop.set_default_executor(self.new_executor())  # a mold's is new after a fork
        self.stop_requested = asyncio.Event()  # TERM, or (a mold) a fork request
        self.all_closed = asyncio.Event()
        self.beating = False
        self.lifespan = Lifespan(self.handler.asgi_app, self.cfg.lifespan, self.handler.state,
                                 self.log)
        try:
            loop.run_until_complete(self.lifespan.startup(float(self.cfg.boot_timeout)))
        except LifespanFailed as exc:
            loop.close()
            return str(exc)
        self.log.debug("worker #%d: %s event loop", self.number, type(loop).__module__)
        return None

    def new_executor(self) -> ThreadPoolExecutor:
        self.executor = ThreadPoolExecutor(thread_name_prefix="asgi-executor")
        return self.executor

    def serve(self) -> None:
        assert self.loop is not None
        watchdog = self.loop_watchdog()
        if watchdog is not None:  # it publishes the row of a loop blocked mid-turn
            self.publish_once_a_turn(self.loop.call_soon, watchdog)
            watchdog.start()
            watchdog.follow(self.loop)
        forking = False
        try:
            self.loop.run_until_complete(self.main())
            forking = self.alive and self.fork_due
            if forking:  # its idle threads go (a fork beside a thread is refused)
                self.executor.shutdown(wait=False)
                self.loop.set_default_executor(self.new_executor())
        finally:
            if watchdog is not None:
                watchdog.stop(join=forking)
            if not forking:
                for listener in self.listeners:
                    listener.sock.close()
                self.loop.close()

    async def main(self) -> None:
        self.slot.set_closed(False)  # a mold that forked accepts again
        self.stop_requested.clear()
        self.watch_listeners(True)
        if not self.beating:
            self.beating = True
            self.beat()
        await self.stop_requested.wait()
        if self.alive and self.fork_due and await quiet_for_fork(self):
            return  # quiet: the mold forks (else a TERM came meanwhile: the drain)
        started = time.monotonic()
        graceful = float(self.cfg.graceful_timeout)
        # the drain ends before graceful_timeout (the master's kill): the lifespan shutdown's
        await drain(self, graceful - min(SHUTDOWN_RESERVE, graceful / 4))
        left = graceful - (time.monotonic() - started)
        await self.lifespan.shutdown(max(left, 0.1))

    reforked = start_afresh_after_fork  # in a worker a mold forked: its own loop, lifespan

    # -- the loop's chores ---------------------------------------------------------------
    def beat(self) -> None:
        """Heartbeat and housekeeping, every half tick, from the loop itself."""
        if not self.between_requests() or self.fork_due:
            self.stop_requested.set()
        self.loop.call_later(self.tick / 2, self.beat)

    def loop_error(self, loop: Any, context: dict) -> None:
        """What asyncio could not hand to anyone (a callback's error): the error log."""
        self.log.error("worker #%d: event loop: %s", self.number,
                       context.get("message", "error"), exc_info=context.get("exception"))

    def handle_term(self, signum: int, frame: Any) -> None:
        super().handle_term(signum, frame)
        self.wake_main()

    def handle_urg(self, signum: int, frame: Any) -> None:
        super().handle_urg(signum, frame)
        self.wake_main()

    def wake_main(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_requested.set)

    def may_keep_alive(self) -> bool:
        return self.alive

    # -- accepting ---------------------------------------------------------------------
    def watch_listeners(self, watch: bool) -> None:
        if watch == self.accepting or (watch and (self.draining or self.quieting)):
            return
        self.accepting = watch
        if watch:
            self.full = False
            self.share.deferring(False)
        for listener in self.listeners:
            if watch:
                listener.sock.setblocking(False)
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
        if self.accepting or self.draining or self.quieting:
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
        elif self.quieting:
            self.all_closed.set()  # quiet_for_fork counts what is left
        elif not self.draining and self.full and held < self.max_open:
            self.watch_listeners(True)
