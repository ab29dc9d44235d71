"""The ``threaded`` worker: one thread per connection, with a bound.

The main thread accepts; each accepted connection is served to its end by its
own thread, through the shared blocking driver
(:func:`arbiter.io.blocking.serve_connection`). Nothing is shared between connection
threads but the app, so the pattern keeps its simplicity.

The naive pattern's weakness is that it has no upper bound: every client gets
a thread, and a burst of clients turns into thousands of threads fighting over
the GIL and the scheduler. This worker runs at most ``max_connections``
connection threads. At the bound the main thread stops watching the listeners,
so further clients wait in the kernel's listen backlog (they are neither
refused nor failed) until a connection thread finishes and wakes the main
thread through a pipe. Below the bound, a worker holding more connections
than its least loaded peer leaves the next clients to that peer for a moment
(:mod:`arbiter.io.balance`), so N workers share a burst of clients.

A thread whose connection has ended waits a moment for the next one before it
exits, so under steady load a connection does not pay a thread start (about
100 µs); the total of threads, busy or waiting, never exceeds the bound.
Measured with ``wrk -c20`` and ``Connection: close`` on one worker, reuse
served about 2,200 connections/s against 1,300 for a new thread each.
The cost this pattern keeps: an idle keep-alive connection holds its thread
for up to ``keepalive`` seconds (bounded by ``max_connections``). While
clients wait at the bound, responses say ``Connection: close`` so threads
turn over to the waiting clients instead of staying with the ones they have.

A request stuck in the app cannot be killed in a thread: the master dumps every
thread's traceback and recycles the worker (``hung_policy = "recycle"``) once
a replacement is ready: it then stops accepting, and every other connection
finishes as its lifecycle promised. A mold (``refork_after``) drains, keeping its
listeners, then forks from its only thread (:mod:`arbiter.workers.mold`).
"""

from __future__ import annotations

import os
import select
import selectors
import threading
import time
from typing import Any

from arbiter.io.accept import ACCEPT_BACKOFF, AcceptPaused, accept_one
from arbiter.io.balance import RECHECK, AcceptShare
from arbiter.workers.base import Worker
from arbiter.workers.connection_thread import ConnectionThread

# How long a thread whose connection ended waits to be handed the next one.
THREAD_LINGER_SECONDS = 2.0
# Connections accepted per wakeup before the loop's heartbeat and chores run again.
ACCEPT_BATCH = 64
# What the main loop's selector reports besides listeners.
SIGNAL_ARRIVED = "signal arrived"
THREAD_FREED = "a connection thread finished while at the bound"


class ThreadedWorker(Worker):
    """Accept in the main thread; serve each connection in a thread; at most
    ``max_connections`` at once."""

    worker_type = "threaded"
    multithread = True
    hung_policy = "recycle"
    capacity_setting = "max_connections"  # utilization: requests / the bound
    can_refork = True

    def serve(self) -> None:
        self.slot.set_closed(False)  # a mold that forked accepts again
        self.limit = max(1, int(self.cfg.max_connections))
        self.active = 0  # connections being served
        self.idle_threads: list[ConnectionThread] = []
        self.lock = threading.Lock()
        self.connection_ended = threading.Condition(self.lock)
        self.paused = False  # listeners unwatched: at the bound
        self.clients_waiting = False  # paused, and a client is queued in the backlog
        self.pending = select.poll()
        for listener in self.listeners:
            self.pending.register(listener.sock, select.POLLIN)
        self.freed_r, self.freed_w = os.pipe()
        os.set_blocking(self.freed_r, False)
        os.set_blocking(self.freed_w, False)

        self.share = AcceptShare(self.slot, int(self.cfg.workers))  # see arbiter.io.balance
        self.deferring = self.watching = False
        selector = self.selector = selectors.DefaultSelector()
        for listener in self.listeners:
            listener.sock.setblocking(False)
        self.watch_listeners(selector)
        selector.register(self.wakeup_r, selectors.EVENT_READ, SIGNAL_ARRIVED)
        selector.register(self.freed_r, selectors.EVENT_READ, THREAD_FREED)
        socknames = {listener.fileno: listener.sock.getsockname() for listener in self.listeners}
        try:
            while self.between_requests() and not self.fork_due:
                wait = RECHECK if self.deferring else self.tick
                for key, _ in selector.select(wait):
                    data = key.data
                    if data is SIGNAL_ARRIVED:
                        self.drain_wakeup()
                    elif data is THREAD_FREED:
                        self.drain_freed()
                    else:
                        self.accept_from(data, socknames[data.fileno])
                with self.lock:
                    if self.paused and self.active < self.limit:
                        self.paused = self.clients_waiting = False
                        resume = True
                    else:
                        resume = False
                now = time.monotonic()
                if self.deferring and (now >= self.share.deferred_until
                                       or self.share.caught_up(self.active, now)):
                    self.deferring = False
                    resume = not self.paused
                if resume:
                    self.watch_listeners(selector)
                elif self.paused:
                    self.clients_waiting = bool(self.pending.poll(0))
            self.slot.set_closed()  # its peers stop counting on it
            self.log.debug("worker #%d (pid %d) stops accepting%s; %d connection(s) to finish",
                           self.number, os.getpid(), " to fork" * self.alive, self.active)
        finally:
            selector.close()
            if not (self.alive and self.fork_due):  # a mold serves again after forking
                for listener in self.listeners:
                    listener.sock.close()
        self.finish_connections()
        for fd in (self.freed_r, self.freed_w):  # no thread is left to write to it
            os.close(fd)

    # -- accepting --------------------------------------------------------------
    def watch_listeners(self, selector: selectors.BaseSelector) -> None:
        if not self.watching and not self.deferring:
            self.watching = True
            self.share.deferring(False)
            for listener in self.listeners:
                selector.register(listener.sock, selectors.EVENT_READ, listener)

    def unwatch_listeners(self) -> None:
        if self.watching:
            self.watching = False
            for listener in self.listeners:
                self.selector.unregister(listener.sock)

    def accept_from(self, listener: Any, sockname: Any) -> None:
        """Accept what is queued, up to the bound; at the bound stop watching.

        At most ``ACCEPT_BATCH`` per wakeup, so a flood of clients never keeps
        the loop from its heartbeat and chores (the selector fires again at once).
        """
        for _ in range(ACCEPT_BATCH):
            if not self.alive:
                return
            with self.lock:
                if self.active >= self.limit:
                    self.pause_listeners()
                    return
                if self.share.should_defer(self.active, time.monotonic()):
                    self.deferring = True  # a less loaded peer takes the next clients
                    self.unwatch_listeners()
                    return
            try:
                accepted = accept_one(listener, self.log)
            except AcceptPaused:
                time.sleep(ACCEPT_BACKOFF)  # the listener stays readable: no hot loop
                return
            if accepted is None:
                return
            self.dispatch((*accepted, sockname))

    def pause_listeners(self) -> None:
        """At the bound (lock held): leave further clients in the backlog."""
        if self.paused:
            return
        self.paused = True
        self.clients_waiting = bool(self.pending.poll(0))
        self.unwatch_listeners()

    def dispatch(self, job: tuple) -> None:
        """Hand a connection to a waiting thread, or start a new one."""
        with self.lock:
            self.active += 1
            self.share.publish(self.active)
            if self.idle_threads:
                worker_thread = self.idle_threads.pop()
                worker_thread.handoff.append(job)
                worker_thread.handed.notify()
                return
        worker_thread = ConnectionThread(self)
        worker_thread.handoff.append(job)
        try:
            worker_thread.thread.start()
        except RuntimeError as exc:  # can't start a new thread: resources exhausted
            with self.lock:
                self.active -= 1
                self.share.publish(self.active)
            self.log.error("cannot start a connection thread: %s", exc)
            job[0].close()

    # -- connection threads ---------------------------------------------------------
    def connection_done(self, worker_thread: ConnectionThread) -> tuple | None:
        """Called by a thread whose connection ended: its next job, or None to exit."""
        with self.lock:
            self.active -= 1
            self.share.publish(self.active)
            if self.paused:
                try:
                    os.write(self.freed_w, b"\0")
                except BlockingIOError:
                    pass
            if self.stopping():
                self.connection_ended.notify()
                return None
            self.idle_threads.append(worker_thread)
            deadline = time.monotonic() + THREAD_LINGER_SECONDS
            while not worker_thread.handoff:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stopping():
                    break
                worker_thread.handed.wait(remaining)
            if worker_thread.handoff:
                return worker_thread.handoff.popleft()
            if worker_thread in self.idle_threads:  # a mold's next serve() has a new list
                self.idle_threads.remove(worker_thread)
            return None

    def nobody_waiting(self) -> bool:
        """Keep-alive is offered only while no client waits for a thread (no lock:
        a stale answer costs one keep-alive or one reconnect, nothing more)."""
        return not self.clients_waiting

    def drain_freed(self) -> None:
        try:
            while os.read(self.freed_r, 512):
                pass
        except BlockingIOError:
            pass

    # -- stopping -------------------------------------------------------------------
    def finish_connections(self) -> None:
        """After TERM: wait for the running connections (the master kills after
        ``graceful_timeout``); keep the heartbeat going meanwhile."""
        with self.lock:
            for worker_thread in self.idle_threads:
                worker_thread.handed.notify()  # waiting threads exit
            while self.active:
                self.slot.heartbeat()
                self.connection_ended.wait(self.tick)
        self.log.debug("worker #%d (pid %d): all connections finished", self.number, os.getpid())
