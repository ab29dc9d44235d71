"""The worker's side of reforking (``refork_after``): a warm worker forks the next ones.

A worker the master chose as the *mold* keeps serving; the master asks it
for a worker by claiming a scoreboard row in state ``FORK_REQUESTED`` and
sending it ``REFORK_SIGNAL`` (SIGURG: ignored by default, so it is harmless
to a worker that is not a mold). The mold forks only from its main thread
at a quiet point, so nothing half-done is carried into the child: the
preforked loop leaves ``serve()`` between connections, holding no client
socket; the threaded, pooled and evented ones drain first (no new
connection, each one ended after its response in progress, their threads --
connection, pool, watchdog -- joined), and a mold with any thread left but
its main one does not fork (the request expires); the asgi one stops
accepting until no request is in flight and leaves its loop
(:mod:`arbiter.asgi.draining`). The mold and its children then enter
``serve()`` afresh: new threads, new selector (the asgi child: a new loop
and its own lifespan startup, from ``Worker.reforked``). Each child is
double-forked: the mold forks an intermediate
process that forks the worker and exits at once, so the worker is
re-parented to the master (a ``PR_SET_CHILD_SUBREAPER``), which reaps it,
signals it and kills it when it hangs like any worker it forked itself. The
child writes its pid in the row; that, and a ``forked`` notice the
intermediate sends, is how the master learns of it.

Before forking, the mold collects its garbage and ``gc.freeze()``s what is
left, so the collector of neither process touches the pages they share. The
child then becomes a new worker: its own row and number, a new signal
wakeup pipe, the master-death signal (once the master is its parent), and a
request count from zero; it serves with the mold's warm app and imports.

What it asks of the app: what the app holds at a quiet point must survive a
fork, as with ``preload_app`` -- no thread of its own it relies on (a forked
child has only the thread that forked) and no connection it shares (a
database connection opened at import is shared by the mold and its
children; open it per request, or again after the fork).
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from typing import Any

from arbiter import logs
from arbiter.notices import FORKED, READY
from arbiter.scoreboard import IDLE

REFORK_SIGNAL = signal.SIGURG  # the master: "a fork request waits in the scoreboard"
REPARENT_WAIT = 5.0  # seconds a new worker waits for the intermediate to exit


def fork_requested_workers(worker: Any) -> bool:
    """In the mold, at a quiet point: fork one worker per waiting request.

    Returns False in the mold (it serves on), True in a child, which is then a
    new worker ready to serve."""
    requests = worker.slot.fork_requests()
    deadline = time.monotonic() + 1.0
    while requests and threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.005)  # a thread that said it is done is still on its way out
    worker.fork_due = False  # (while it was set, the threads knew to exit)
    if not requests or not worker.alive:
        return False
    if threading.active_count() > 1:  # never fork beside a live thread: the request expires
        worker.log.warning("worker #%d (pid %d) did not fork: %d thread(s) still run",
                           worker.number, os.getpid(), threading.active_count() - 1)
        return False
    gc.collect()
    gc.freeze()  # what is alive now stays where it is in both processes
    for slot in requests:
        if not worker.alive:
            break
        child_slot = worker.slot.take_fork_request(slot)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            worker.log.error("worker #%d (pid %d) cannot fork a worker: %s",
                             worker.number, os.getpid(), exc)
            return False
        if pid == 0:
            _intermediate(worker, child_slot)  # returns only in the new worker
            return True
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        try:
            os.waitpid(pid, 0)  # the intermediate exits as soon as it has forked
        except ChildProcessError:
            pass
    return False


def _intermediate(worker: Any, child_slot: Any) -> None:
    """In the intermediate: fork the worker, tell the master its pid, exit."""
    try:
        pid = os.fork()
    except OSError:
        os._exit(1)
    if pid:
        worker.notify(FORKED, f"{child_slot.index} {pid}")
        os._exit(0)
    become_forked_worker(worker, child_slot)


def become_forked_worker(worker: Any, slot: Any) -> None:
    """In the new worker: take its row, number and signals; wait to be the master's."""
    slot.set_pid(os.getpid())
    deadline = time.monotonic() + REPARENT_WAIT
    while os.getppid() != worker.master_pid:  # the intermediate has not exited yet
        if time.monotonic() > deadline:
            os._exit(1)  # the master is gone: nobody would reap or supervise us
        time.sleep(0.001)
    mold_number = worker.number
    row = slot.claimed_number()
    worker.slot = slot
    worker.number = row
    worker.refork_generation += 1
    worker.requests_served = 0
    worker.recycle_asked = False
    worker.max_requests = worker.pick_max_requests()
    worker.running = {}
    worker.parent_checked_at = 0.0
    logs.set_worker(row)
    for fd in (worker.wakeup_r, worker.wakeup_w):
        os.close(fd)
    worker.wakeup_r, worker.wakeup_w = os.pipe()
    worker.install_signals()  # a wakeup pipe of its own; signals unblocked
    worker.watch_master_death()
    if worker.after_refork is not None:
        worker.after_refork(worker)
    worker.reforked()  # what the type starts afresh (the asgi type: its loop, its lifespan)
    worker.set_title()
    slot.heartbeat()
    slot.set_state(IDLE)
    worker.notify(READY, worker.worker_type)
    worker.log.debug("worker #%d (pid %d) forked from worker #%d (refork generation %d)",
                     row, os.getpid(), mold_number, worker.refork_generation)

