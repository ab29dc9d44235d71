"""Replacing workers that live but should go: hung, or past max_requests or max_worker_memory.

Owns the ``timeout`` check (a worker silent past it is killed once its
traceback is dumped; a thread worker whose oldest request is past it, while
its own loop still beats, is recycled), ``max_requests`` (a worker that
asked to be replaced) and ``max_worker_memory`` (a worker whose private
memory grew past it, looked at every few seconds). A recycled worker keeps
serving while its replacement boots, and is told to stop once that one is
ready.

A mixin of :class:`arbiter.master.loop.Master`; it counts and stops workers
with ``live_workers`` and ``stop_worker`` (:mod:`arbiter.master.supervisor`).
"""

from __future__ import annotations

import os
import signal
import time

from arbiter.master.process import hung_verdict, private_memory
from arbiter.workers.base import TRACEBACK_SIGNAL

MEMORY_CHECK_INTERVAL = 5.0  # seconds between private-memory checks of the workers
TIMEOUT_KILL_GRACE = 1.0  # after the traceback dump, before SIGKILL


class Recycling:
    """Find workers to replace (hung, max_requests, memory); retire them once replaced."""

    def kill_hung_workers(self) -> None:
        """Report and replace workers stuck longer than ``timeout``.

        A silent worker (no heartbeat) is killed after its traceback is dumped.
        A multithreaded worker whose oldest request is too old, while its own
        loop still beats, is recycled: traceback, then TERM so its other
        requests finish within ``graceful_timeout`` while a replacement starts.
        """
        assert self.scoreboard is not None
        now = time.monotonic()
        for worker in list(self.workers.values()):
            timeout = worker.generation.cfg.timeout
            if not timeout or not worker.ready or worker.kill_at is not None \
                    or worker.reason == "timed out":  # reported already
                continue
            policy = getattr(worker.generation.worker_cls, "hung_policy", "kill")
            # struct.pack_into zero-fills a field before writing it, so a row read
            # while its worker writes can show a heartbeat of 0: only a verdict that
            # holds on a second read counts.
            verdict = None
            for _ in range(2):
                row = self.scoreboard.read(worker.slot)
                verdict = hung_verdict(row, now, timeout, policy)
                if verdict is None:
                    break
            if verdict is None:
                continue
            what, recycle = verdict
            oldest = now - row.request_started if row.in_flight else 0.0
            running = ""
            if row.in_flight:
                running = (f" while running {row.method} {row.path} for "
                           f"{oldest:.1f} s")
            action = ("then it is recycled (other requests may finish)" if recycle
                      else "then it is killed")
            self.log.error("worker #%d (pid %d) timed out: %s (timeout %g s)%s; "
                           "its traceback follows, %s",
                           worker.number, worker.pid, what, timeout, running, action)
            try:
                os.kill(worker.pid, TRACEBACK_SIGNAL)
            except ProcessLookupError:
                continue
            worker.reason = "timed out"
            if recycle:  # its other threads still serve: stop it once a replacement is ready
                worker.retiring = True
                worker.awaiting_replacement = True
            else:
                worker.retiring = True
                worker.kill_at = now + TIMEOUT_KILL_GRACE

    def recycle_requested_workers(self) -> None:
        """max_requests: a worker that asked to be replaced keeps serving while its
        replacement boots, and is told to stop once that one is ready."""
        assert self.scoreboard is not None
        for worker in self.workers.values():
            if worker.retiring or not worker.ready or not self.scoreboard.wants_recycle(
                    worker.slot):
                continue
            self.log.info("worker #%d (pid %d) reached max_requests: starting its replacement",
                          worker.number, worker.pid)
            worker.retiring = True
            worker.reason = "max_requests"
            worker.awaiting_replacement = True

    def recycle_large_workers(self) -> None:
        """max_worker_memory: recycle a worker whose private memory (USS) grew too large.

        The replacement starts first; the old worker is told to stop (TERM,
        in-flight requests finish) once the replacement is ready.
        """
        now = time.monotonic()
        if now < self.next_memory_check:
            return
        self.next_memory_check = now + MEMORY_CHECK_INTERVAL
        for worker in list(self.workers.values()):
            limit_mib = worker.generation.cfg.max_worker_memory
            if not limit_mib or not worker.ready or worker.retiring:
                continue
            uss = private_memory(worker.pid)
            if uss is None or uss <= limit_mib * 1024 * 1024:
                continue
            self.log.warning("worker #%d (pid %d) uses %.1f MiB of private memory "
                             "(max_worker_memory %g MiB): recycling it once a replacement "
                             "is ready", worker.number, worker.pid, uss / 1048576, limit_mib)
            worker.retiring = True
            worker.reason = "max_worker_memory"
            worker.awaiting_replacement = True

    def retire_replaced_workers(self) -> None:
        for worker in list(self.workers.values()):
            if not worker.awaiting_replacement:
                continue
            gen = worker.generation
            ready = sum(1 for w in self.live_workers(gen) if w.ready)
            if ready >= self.target or gen is not self.current:
                worker.awaiting_replacement = False
                self.stop_worker(worker, signal.SIGTERM, worker.reason)
