"""How an asgi worker's connections come to an end: the drain of a stop, the quiet of a fork.

Owns the three moments the :class:`~arbiter.workers.asgi.AsgiWorker`'s loop
leaves its steady state:

* :func:`drain` (TERM, a recycle, a scale-down): the listeners close, every
  connection is told to stop and finishes as its lifecycle promised, within
  the time given; an open WebSocket is left to its app until
  ``WEBSOCKET_CLOSE_MARGIN`` before the end, then sent a close 1001 ("going
  away") and given the margin for its close handshake; what is left then is
  cut.
* :func:`quiet_for_fork` (a mold, ``refork_after``): the loop reaches a point
  where no request is in flight, so that nothing half-done is carried into a
  child. Accepting stops (the listeners stay open: the mold serves on after
  the fork), every HTTP connection is told to stop -- it ends after its
  response in progress, an idle kept-alive one by its keep-alive rules, as on
  a drain -- and once none is left the loop returns; the mold forks between
  two runs of its loop (:mod:`arbiter.workers.mold`). Open WebSockets stay
  with the mold: they are not requests in flight but conversations, and
  cutting them for a fork would be a failure the client sees.
* :func:`start_afresh_after_fork` (in the worker the mold forked): the mold's
  loop is never run again here -- its epoll set is the mold's, shared across
  the fork -- nor collected (its objects' finalizers would close descriptors
  by number); the WebSockets it holds are the mold's: this process closes
  only its copies of their descriptors. A new loop, and on it the app's
  lifespan startup, with a state of its own: what an app opens at startup (a
  database pool, a client session) belongs to a loop, so each worker opens
  its own, as when the master forks it. A startup that fails here is a failed
  boot of that worker.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from arbiter.notices import FAILED
from arbiter.workers.base import EXIT_APP_LOAD_FAILED

__all__ = ["WEBSOCKET_CLOSE_MARGIN", "drain", "quiet_for_fork", "start_afresh_after_fork"]

WEBSOCKET_CLOSE_MARGIN = 2.0  # of the drain (at most a quarter): open WebSockets close 1001
QUIET_RECHECK = 0.5  # seconds between looks at a quieting mold (a TERM may come meanwhile)


async def drain(worker: Any, within: float) -> None:
    """Accept nothing more; let every connection finish as its lifecycle promised,
    ``within`` seconds; then cut what is left."""
    worker.watch_listeners(False)
    worker.draining = True
    worker.slot.set_closed()
    for listener in worker.listeners:
        listener.sock.close()
    for conn in list(worker.connections):
        conn.stop()
    worker.forget(None)
    margin = min(WEBSOCKET_CLOSE_MARGIN, within / 4)
    try:
        await asyncio.wait_for(worker.all_closed.wait(), max(within - margin, 0.0))
    except TimeoutError:
        for conn in list(worker.connections):
            conn.going_away()
    try:
        await asyncio.wait_for(worker.all_closed.wait(), margin)
    except TimeoutError:
        worker.log.warning("worker #%d: graceful_timeout reached with %d connection(s) "
                           "still open; closing them", worker.number, len(worker.connections))
        for conn in list(worker.connections):
            if conn.cycle is not None and conn.cycle.task is not None:
                conn.cycle.task.cancel()
            conn.abort()


async def quiet_for_fork(worker: Any) -> bool:
    """Until no HTTP connection is open (WebSockets stay): True; False when the worker
    is stopped meanwhile."""
    worker.watch_listeners(False)
    worker.quieting = True
    worker.slot.set_closed()  # its peers stop counting on it meanwhile
    try:
        while worker.alive:
            held = [conn for conn in worker.connections if conn.upgraded is None]
            if not held and not worker.opening:
                return True
            for conn in held:
                conn.stop()  # once each: a connection already stopping is left as it is
            worker.all_closed.clear()
            try:
                await asyncio.wait_for(worker.all_closed.wait(), QUIET_RECHECK)
            except TimeoutError:
                pass
    finally:
        worker.quieting = False
        worker.all_closed.clear()
    return False


def start_afresh_after_fork(worker: Any) -> None:
    """In a worker the mold forked: its own loop, no connection, its own lifespan."""
    mold_connections = list(worker.connections)
    for conn in mold_connections:  # the mold's WebSockets: only our copies go
        sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        if sock is not None:
            try:
                os.close(sock.fileno())
            except OSError:
                pass
    worker.left_by_the_mold.append((worker.loop, mold_connections))  # never run, kept
    worker.handler.state = {}  # each worker's lifespan state is its own
    failure = worker.open_loop()
    if failure is not None:
        worker.log.error("worker #%d (pid %d) could not start the app: %s",
                         worker.number, os.getpid(), failure)
        worker.notify(FAILED, failure)
        os._exit(EXIT_APP_LOAD_FAILED)
