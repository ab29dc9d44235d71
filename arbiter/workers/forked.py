"""The ``forked`` worker: a fresh child process for every connection, with a bound.

The worker process accepts; for each connection it forks a child that serves
that one connection through the blocking driver
(:func:`arbiter.io.blocking.serve_connection`) and exits. Each connection gets
a clean copy of the loaded app; nothing one request does (leaked memory,
global state, a crash) survives it. The naive pattern's two weaknesses:

* **No upper bound on forks.** At most ``max_connections`` children live at
  once; at the bound the listeners are unwatched and further clients wait in
  the kernel's backlog, while children answer with ``Connection: close`` so
  slots turn over. Children are reaped as soon as they exit (SIGCHLD wakes
  the loop).
* **Fork is not cheap.** The worker forks from a lean loop, and
  ``gc.freeze()`` at boot keeps a child's collections from touching (and so
  copying) the pages it shares with the worker: measured on a 39 MB worker,
  a child's private memory after ``gc.collect()`` was 17.2 MB without the
  freeze and 1.0 MB with it. Choose another type for many short requests.

Each child reports into its own row of a :class:`~arbiter.scoreboard.Scoreboard`
made by the worker (one aligned store per field, never ``struct.pack_into``):
the request it runs and its exact counters, and it pokes the worker after each
request. The worker publishes its children's in-flight count, oldest request
and counts in its own row of the master's scoreboard as they change, applies
``max_requests`` to them, and kills its own hung children (``hung_policy =
"self"``: a request older than ``timeout`` gets SIGUSR2 -- faulthandler writes
the child's traceback -- and SIGKILL a second later). The worker keeps serving.
"""

from __future__ import annotations

import gc
import mmap
import os
import select
import selectors
import signal
import sys
import time
from typing import Any

from arbiter.io.accept import ACCEPT_BACKOFF, AcceptPaused, accept_one
from arbiter.io.blocking import serve_connection
from arbiter.workers.base import Worker, setproctitle
from arbiter.workers.children import ChildReport, ChildTable, die_with_parent

ACCEPT_BATCH = 16  # connections accepted (and forked) per wakeup before the chores run


class ForkedWorker(Worker):
    """Accept; fork a child per connection; at most ``max_connections`` children."""

    worker_type = "forked"
    hung_policy = "self"

    def serve(self) -> None:
        self.limit = max(1, int(self.cfg.max_connections))
        self.children = ChildTable(self.limit, float(self.cfg.timeout), self.log, self.number)
        self.waiting = mmap.mmap(-1, 1)  # 1 while clients queue at the bound
        self.poke_r, self.poke_w = os.pipe()
        for fd in (self.poke_r, self.poke_w):
            os.set_blocking(fd, False)
        self.paused_until = 0.0
        self.in_child = False
        self.die_with_parent = die_with_parent()
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # the wakeup fd wakes us
        gc.freeze()
        selector = self.selector = selectors.DefaultSelector()
        for listener in self.listeners:
            listener.sock.setblocking(False)
            selector.register(listener.sock, selectors.EVENT_READ, listener)
        self.watching = True
        self.pending = select.poll()  # the listeners: do clients queue at the bound?
        for listener in self.listeners:
            self.pending.register(listener.sock, select.POLLIN)
        selector.register(self.wakeup_r, selectors.EVENT_READ, None)
        selector.register(self.poke_r, selectors.EVENT_READ, self.poke_r)
        try:
            while self.between_requests():
                for key, _ in selector.select(self.wait_time()):
                    if key.data is None:
                        self.drain_wakeup()
                    elif key.data == self.poke_r:
                        self.drain(self.poke_r)
                    else:
                        self.accept_from(key.data)
                self.chores()
            self.watch_listeners(False)
            for listener in self.listeners:
                listener.sock.close()
            self.stop_children()
        except BaseException:
            if not self.in_child:
                self.children.signal_all(signal.SIGINT)  # INT/QUIT: children stop at once
            raise
        finally:
            if not self.in_child:
                selector.close()

    @staticmethod
    def drain(fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass

    def wait_time(self) -> float:
        now = time.monotonic()
        return max(0.0, min([self.tick, *(at - now for at in self.children.kill_times())]))

    def chores(self) -> None:
        self.children.reap()
        self.children.kill_hung()
        self.publish()
        bound = len(self.children) >= self.limit
        self.waiting[0] = 1 if bound and self.clients_waiting() else 0
        self.watch_listeners(self.alive and not bound and time.monotonic() >= self.paused_until)

    def clients_waiting(self) -> bool:
        return bool(self.pending.poll(0))

    def watch_listeners(self, watch: bool) -> None:
        if watch == self.watching:
            return
        self.watching = watch
        for listener in self.listeners:
            if watch:
                self.selector.register(listener.sock, selectors.EVENT_READ, listener)
            else:
                self.selector.unregister(listener.sock)

    # -- accept and fork ------------------------------------------------------------
    def accept_from(self, listener: Any) -> None:
        """Accept and fork while connections are queued, up to the bound (and at most
        ACCEPT_BATCH per wakeup, so the chores run even in a flood)."""
        for _ in range(ACCEPT_BATCH):
            if not self.alive or len(self.children) >= self.limit:
                return
            try:
                accepted = accept_one(listener, self.log)
            except AcceptPaused:
                self.paused_until = time.monotonic() + ACCEPT_BACKOFF
                self.watch_listeners(False)
                return
            if accepted is None:
                return
            conn, peer = accepted
            try:
                self.fork_child(conn, peer, listener.sock.getsockname())
            finally:
                if not self.in_child:
                    conn.close()  # the child has its own copy

    def fork_child(self, conn: Any, peer: Any, sockname: Any) -> None:
        row = self.children.take_row()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            self.children.free_rows.append(row)
            self.log.error("cannot fork a child for %r: %s", peer, exc)
            return
        if pid:
            self.children.add(pid, row)
            return
        self.in_child = True
        code = 0
        try:  # the child: serve the one connection, then _exit
            worker_pid = os.getppid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.selector.close()
            for listener in self.listeners:
                listener.sock.close()
            for fd in (self.wakeup_r, self.wakeup_w, self.poke_r):
                os.close(fd)
            if self.die_with_parent is not None:
                self.die_with_parent()
                if os.getppid() != worker_pid:  # the worker died before prctl
                    return
            setproctitle(f"arbiter: child [{self.cfg.proc_name}] #{self.number}")
            serve_connection(self.handler, conn, peer, sockname,
                             observer=ChildReport(self.children.rows.writer(row),
                                                  self.poke_w),
                             stopping=self.stopping,
                             may_keep_alive=lambda: not self.waiting[0], tls=self.tls)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException:
            code = 1
            try:
                self.log.exception("child serving %r failed", peer)
            except BaseException:
                pass
        finally:
            try:
                for handler in self.log.handlers:
                    handler.flush()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    # -- the worker's row ---------------------------------------------------------------
    def publish(self) -> None:
        """The worker's row: its children's requests in flight, the oldest, the exact
        counts, their busy time (utilization: children in requests / max_connections);
        and max_requests applied to them."""
        now = time.monotonic()
        counters, requests, running, oldest, busy = self.children.totals(now)
        self.slot.set_counters(counters, requests)
        self.slot.show_in_flight(running, *oldest)
        self.slot.publish_busy(busy / self.limit, now, min(running, self.limit) / self.limit)
        self.requests_served = requests
        if self.max_requests and requests >= self.max_requests:
            self.ask_for_recycle()

    def stop_children(self) -> None:
        """TERM the children (each finishes as its lifecycle promised); wait up to
        ``graceful_timeout`` for them; kill the rest."""
        children = self.children
        children.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + float(self.cfg.graceful_timeout)
        while children and time.monotonic() < deadline:
            self.slot.heartbeat()
            self.selector.select(min(self.wait_time(), max(0.0, deadline - time.monotonic())))
            self.drain_wakeup()
            self.drain(self.poke_r)
            children.reap()
            children.kill_hung()
            self.publish()
        if children:
            self.log.warning("worker #%d (pid %d): killing %d child(ren) still running after "
                             "graceful_timeout", self.number, os.getpid(), len(children))
            children.kill_all()
        self.publish()  # the final counts, for the master to fold in
