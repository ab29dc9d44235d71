"""The ``evented`` worker: one thread, one reactor, thousands of connections.

The reactor pattern's promise is concurrency in the tens of thousands from a
single thread; its known weakness is that one blocking call stalls
everything. This worker is the shared :class:`~arbiter.io.reactor.Reactor`
with the app run in the reactor thread itself, and answers the weakness so:

* **The reactor never waits for a client.** Accepts, reads and writes are
  non-blocking; a request's head and whole body are read before the app is
  called (the body spooled: 128 KiB in memory, then a temporary file), so the
  app never waits for a slow sender; the response is pulled from the app
  only as fast as the client reads it (at most ``OUTPUT_HIGH`` pending per
  connection), and ``wsgi.file_wrapper`` goes out with non-blocking
  ``sendfile``. Slow clients cost a few kilobytes each, never the thread.
* **Every wait is bounded** by the connection's lifecycle: a head within
  ``header_timeout``, a body and a response within their transfer budgets
  (``min_transfer_rate``), an idle keep-alive connection ``keepalive``;
  deadlines sit in coarse buckets, so 10,000 idle connections cost nothing
  per turn.
* **An app that blocks anyway is caught, not hidden.** The loop beats the
  heartbeat at least every half ``tick``; an app stuck in the reactor thread
  freezes it, and the master (``hung_policy = "kill"``) dumps this worker's
  traceback -- naming the blocking call -- and replaces it. Before that, a
  watchdog thread sees the reactor not turn for ``reactor_block_warning``
  (0.5 s) and logs, once per stall, the stack of the blocking code and the
  request it serves, and counts the stall (``arbiter_reactor_stalls_total``,
  ``arbiter_reactor_blocked_seconds_total``). Only apps that never block
  belong here (``config/evented.yaml`` says so).

Bounds: at most ``max_connections`` open connections (at the bound the
listeners are unwatched and further clients wait in the kernel backlog); the
soft ``RLIMIT_NOFILE`` is raised at boot (up to the hard limit) so they fit.
TERM: the listeners close and every connection finishes as its lifecycle
promised (a kept-alive one until its next response or its idle timeout),
within ``graceful_timeout``.

This type can be the mold (``refork_after``). Asked for workers
(``fork_due``), it drains as on TERM -- the reactor's drain -- but keeps its
listeners; once no connection is left the reactor's selector is closed and
the watchdog thread stopped and joined, so :mod:`arbiter.workers.mold` forks
from the only thread; the mold and its child each start a new reactor (and
watchdog).
"""

from __future__ import annotations

import resource
import time

from arbiter.io.reactor import Connection, Reactor
from arbiter.workers.base import Worker

__all__ = ["EventedWorker", "raise_open_files_limit"]

FD_SLACK = 64  # descriptors beyond max_connections: listeners, logs, pipes, the selector


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE toward ``wanted`` (capped by the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class EventedWorker(Worker):
    """A single-threaded reactor that runs the app itself, one complete request at a time."""

    worker_type = "evented"
    multithread = False
    hung_policy = "kill"
    can_refork = True

    def serve(self) -> None:
        cfg = self.cfg
        max_open = cfg.max_connections
        soft = raise_open_files_limit(cfg.max_connections + FD_SLACK)
        if soft != resource.RLIM_INFINITY and soft < cfg.max_connections + FD_SLACK:
            max_open = max(1, soft - FD_SLACK)
            self.log.warning("worker #%d: RLIMIT_NOFILE is %d: holding at most %d connections "
                             "instead of max_connections %d (raise the hard limit: ulimit -Hn)",
                             self.number, soft, max_open, cfg.max_connections)
        self.reactor = Reactor(self, self, max_open)
        # reactor_block_warning: an app that blocks the reactor is caught in the act.
        watchdog = self.reactor.watchdog = self.loop_watchdog()
        if watchdog is not None:
            watchdog.start()
        try:
            self.reactor.run()
        finally:
            if watchdog is not None:
                watchdog.stop()

    # -- the strategy: the reactor thread runs the app and pulls the response -----------
    def respond(self, conn: Connection) -> bool:
        self.reactor.start_response(conn)
        self.reactor.pull(conn, time.monotonic())
        return True

    def resume(self, conn: Connection) -> bool:
        self.reactor.pull(conn, time.monotonic())
        return True

    def after_select(self) -> None:
        return None

    def on_wakeup(self) -> None:
        return None
