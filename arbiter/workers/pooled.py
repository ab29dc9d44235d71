"""The ``pooled`` worker: a fixed pool of threads that run the app, and nothing else.

The thread-pool pattern bounds the number of threads, but its naive form
(and Gunicorn's gthread worker) lets a pool thread sit on a connection while
it waits for the client: an idle keep-alive connection, a client sending its
body slowly or reading its response slowly pins a thread, and ``threads``
such clients starve everyone else.

Here a pool thread never waits for a client. The shared
:class:`~arbiter.io.reactor.Reactor` (the worker's main thread) owns every
connection while it waits: it accepts, reads, spools a whole request body
(64 KiB in memory, then a temporary file), answers ``100 Continue`` and the
core's errors, and enforces every deadline of the connection's lifecycle.
Only a *complete* request is handed to the pool: the thread runs the app and
writes the response without blocking for as long as the socket takes it;
when the socket is full it gives the connection back, the reactor writes the
rest as the client reads, and once that is out a pool thread pulls the next
piece of the response from the app (app code only ever runs in pool
threads). An idle keep-alive connection comes back without waking the
reactor (its fd stays watched: the hot path). Pipelined requests already
buffered are run next by the same thread, in order.

Bound: at most ``max_connections`` open connections per worker (at the
bound further clients wait in the kernel backlog). ``hung_policy =
"recycle"``: a request stuck in the app gets its traceback logged and the
worker is recycled once a replacement is ready, so the other threads go on
serving meanwhile. TERM: accepting stops, every connection finishes as its
lifecycle promised, then the pool threads are told to exit and joined (a
thread still stuck in the app after ``graceful_timeout`` is left behind: they
are daemon threads).

This type can be the mold (``refork_after``). Asked for workers
(``fork_due``), it drains as on TERM -- the reactor's drain, keeping its
listeners -- and once no connection is left every pool thread exits and is
joined, so :mod:`arbiter.workers.mold` forks from the only thread left; the
mold and its child each start a new reactor and a new pool.
"""

from __future__ import annotations

import collections
import os
import threading
import time

from arbiter.http import ClientDisconnected
from arbiter.http.lifecycle import IDLE, RESPOND
from arbiter.io.poller import READ, WRITE
from arbiter.io.reactor import Connection, Reactor
from arbiter.io.transport import WouldBlock
from arbiter.workers.base import Worker

__all__ = ["PooledWorker"]

_RUN, _RESUME = 1, 2  # what a pool thread is to do: run the app, or pull more of its response


class PooledWorker(Worker):
    """The reactor owns connections; ``threads`` pool threads run complete requests."""

    worker_type = "pooled"
    multithread = True
    hung_policy = "recycle"
    capacity_setting = "threads"  # utilization: busy threads / threads
    can_refork = True
    POOL_JOIN_SECONDS = 1.0  # after a drain every pool thread is idle: it exits at once

    def serve(self) -> None:
        self.reactor = reactor = Reactor(self, self, max(1, int(self.cfg.max_connections)))
        self.work: collections.deque = collections.deque()
        self.work_ready = threading.Condition(threading.Lock())
        self.returned: collections.deque = collections.deque()  # pool -> reactor
        self.wake_pending = False
        self.handback_lock = threading.Lock()  # the hot hand-back against an event meanwhile
        self.returns_r, self.returns_w = os.pipe()
        os.set_blocking(self.returns_r, False)
        os.set_blocking(self.returns_w, False)
        reactor.selector.register(self.returns_r, READ, self.drain_returns)
        closing = threading.Event()  # this serve()'s pool is to exit (its own flag)
        pool = [threading.Thread(target=self.pool_thread, args=(closing,), name=f"pool-{number}",
                                 daemon=True) for number in range(max(1, int(self.cfg.threads)))]
        for thread in pool:
            thread.start()
        try:
            reactor.run()
        finally:
            self.stop_pool(pool, closing)

    def stop_pool(self, pool: list, closing: threading.Event) -> None:
        """The reactor is done: wake every idle pool thread to exit, join them, then
        close the hand-back pipe (no thread is left to write to it). A thread still
        running a request (INT/QUIT, or ``graceful_timeout`` reached) is not waited
        for: the process exits."""
        with self.work_ready:
            closing.set()
            self.work_ready.notify_all()
        if self.reactor.connections:  # some are still in the pool
            return
        deadline = time.monotonic() + self.POOL_JOIN_SECONDS
        for thread in pool:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in pool):
            os.close(self.returns_r)
            os.close(self.returns_w)

    # -- the strategy: the reactor side ----------------------------------------------------
    def respond(self, conn: Connection) -> bool:
        self.dispatch(conn, _RUN)
        return False

    def resume(self, conn: Connection) -> bool:
        self.dispatch(conn, _RESUME)
        return False

    def dispatch(self, conn: Connection, task: int) -> None:
        """Hand a connection to the pool. Its fd stays watched for reading (no epoll_ctl
        on the hot path); an event meanwhile unwatches it until it comes back."""
        if conn.events != READ:
            self.reactor.set_interest(conn, 0)
        conn.task = task
        conn.in_pool = True
        with self.work_ready:
            self.work.append(conn)
            self.work_ready.notify()

    def drain_returns(self) -> None:
        try:
            while os.read(self.returns_r, 4096):
                pass
        except BlockingIOError:
            pass
        self.wake_pending = False  # after emptying the pipe, before the queue: no loss

    def after_select(self) -> None:
        """Connections the pool gave back: the reactor drives them on."""
        returned = self.returned
        reactor = self.reactor
        now = time.monotonic()
        while returned:
            conn = returned.popleft()
            conn.in_pool = False
            if conn.gone is not None:
                reactor.close(conn, conn.gone)
            else:
                reactor.guard(conn, reactor.drive, now)

    def on_wakeup(self) -> None:
        return None

    def event_while_away(self, conn: Connection) -> None:
        """Bytes or EOF while a pool thread holds the connection: unwatch it until it is
        back (under the lock, so a hot hand-back then wakes the reactor)."""
        with self.handback_lock:
            self.reactor.set_interest(conn, 0)

    # -- the pool threads ----------------------------------------------------------------
    def pool_thread(self, closing: threading.Event) -> None:
        work, work_ready = self.work, self.work_ready
        while True:
            with work_ready:
                while not work:
                    if closing.is_set():
                        return
                    work_ready.wait()
                conn = work.popleft()
            try:
                self.run_task(conn)
            except Exception as exc:  # noqa: BLE001 -- the connection goes, the thread stays
                self.log.exception("unexpected error serving a request from %r", conn.peer)
                conn.gone = exc
            self.give_back(conn)

    def run_task(self, conn: Connection) -> None:
        """Run the app (and any pipelined request after it) and write without waiting."""
        lc = conn.lc
        if conn.task == _RUN:
            self.reactor.start_response(conn)
        while True:
            self.reactor.pull(conn, time.monotonic())
            if not self.write_now(conn) or conn.out or conn.segment is not None:
                return  # gone, or the socket is full: the reactor writes the rest
            if conn.response is not None:
                continue
            action = lc.next(time.monotonic())
            if action != RESPOND:
                conn.action = action  # the reactor carries it out
                return
            self.reactor.start_response(conn)  # a pipelined request, already complete

    def write_now(self, conn: Connection) -> bool:
        """Write what the socket takes without waiting; False once the client is gone."""
        transport = conn.transport
        try:
            while conn.out:
                sent = transport.send(conn.out)
                if not sent:
                    return True
                self.reactor._consume(conn, sent)
            segment = conn.segment
            while segment is not None and not conn.out:
                sent = transport.sendfile(segment.file, segment.offset, segment.count)
                if not sent:
                    return True  # would block (or a short file: the reactor sees to it)
                segment.offset += sent
                segment.count -= sent
                conn.response.file_sent(sent)
                if not segment.count:
                    conn.segment = segment = None
        except WouldBlock as exc:
            conn.tls_want = WRITE if exc.want_write else READ
        except ClientDisconnected as exc:
            conn.gone = exc
            return False
        return True

    def give_back(self, conn: Connection) -> None:
        """Return a connection to the reactor. Kept alive and idle with its fd still
        watched, it needs no wakeup: the reactor takes it back on its next turn (its
        next event on it included). Anything else wakes the reactor."""
        with self.handback_lock:
            hot = (conn.gone is None and conn.response is None and not conn.out
                   and conn.lc.phase == IDLE and conn.events == READ)
            self.returned.append(conn)
        if hot or self.wake_pending:
            return
        self.wake_pending = True
        try:
            os.write(self.returns_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the reactor is awake anyway
