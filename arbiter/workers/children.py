"""A forked worker's children: their scoreboard, reaping, hung children, their counts.

Owns :class:`ChildTable` -- the worker's own :class:`~arbiter.scoreboard.Scoreboard`
with one row per child slot (each field one aligned store, as in the
master's), the live children, reaping, the exact counts of children that
are gone (folded in when reaped) and of those alive (read from their rows),
and the hung-child policy (``timeout``: SIGUSR2 for the traceback, SIGKILL a
second later) -- and :class:`ChildReport`, the observer a child writes its
row through, poking the worker after each request so its counts show at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from arbiter.scoreboard import Counters, Scoreboard, SlotWriter

__all__ = ["ChildReport", "ChildTable", "die_with_parent"]

HUNG_CHILD_KILL_DELAY = 1.0  # between SIGUSR2 (traceback) and SIGKILL for a hung child


class ChildReport:
    """A child's observer: its scoreboard row, and a poke to the worker per request."""

    __slots__ = ("row", "poke_fd")

    def __init__(self, row: SlotWriter, poke_fd: int) -> None:
        self.row = row
        self.poke_fd = poke_fd

    def heartbeat(self) -> None:
        return None  # the worker's own loop beats for it

    def request_started(self, method: str, path: str, key: object = None) -> None:
        self.row.request_started(method, path)

    def request_queued(self, seconds: float, shed: bool) -> None:
        self.row.record_queue(seconds, shed)

    def request_finished(self, status: int, key: object = None,
                         duration: float | None = None) -> None:
        self.row.request_finished(status, duration)
        try:
            os.write(self.poke_fd, b".")
        except OSError:
            pass  # the pipe is full: the worker is awake already


def die_with_parent() -> Any:
    """A function that asks Linux to SIGKILL the calling process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ChildTable:
    """The live children of one forked worker, and what they counted."""

    def __init__(self, limit: int, timeout: float, log: Any, number: int) -> None:
        self.rows = Scoreboard(limit)
        self.timeout = timeout
        self.log = log
        self.number = number
        self.free_rows = list(range(limit - 1, -1, -1))
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (row, kill_at or 0)
        self.folded = Counters.zero()  # what reaped children counted
        self.folded_requests = 0
        self.folded_busy = 0.0  # seconds reaped children spent in requests

    def __len__(self) -> int:
        return len(self.children)

    def take_row(self) -> int:
        row = self.free_rows.pop()
        self.rows.release(row)
        return row

    def add(self, pid: int, row: int) -> None:
        self.children[pid] = (row, 0.0)

    def kill_times(self) -> list[float]:
        return [kill_at for _, kill_at in self.children.values() if kill_at]

    def fold(self, row: int) -> None:
        self.folded.add(self.rows.counters(row))
        self.folded_requests += self.rows.read(row).requests
        self.folded_busy += self.rows.busy_seconds(row, time.monotonic())
        self.free_rows.append(row)

    def reap(self) -> None:
        """Collect every exited child and fold in what it counted."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.children.pop(pid, None)
            if entry is None:
                continue
            row, kill_at = entry
            self.fold(row)
            if status and not kill_at:
                code = os.waitstatus_to_exitcode(status)
                how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
                self.log.warning("child pid %d of worker #%d ended with %s", pid, self.number,
                                 how)

    def totals(self, now: float) -> tuple[Counters, int, int, tuple[float, str, str], float]:
        """(counters, requests, requests running now, the oldest running one, the seconds
        all children have spent in requests up to ``now``)."""
        running, oldest = 0, (0.0, "", "")
        total = Counters.zero()
        total.add(self.folded)
        requests = self.folded_requests
        busy = self.folded_busy
        for row, _ in self.children.values():
            child = self.rows.read(row)
            total.add(self.rows.counters(row))
            requests += child.requests
            busy += self.rows.busy_seconds(row, now)
            if child.in_flight:
                running += 1
                if not oldest[0] or child.request_started < oldest[0]:
                    oldest = (child.request_started, child.method, child.path)
        return total, requests, running, oldest, busy

    def kill_hung(self) -> None:
        """A request older than ``timeout``: traceback (SIGUSR2), then SIGKILL."""
        from arbiter.workers.base import TRACEBACK_SIGNAL

        now = time.monotonic()
        for pid, (row, kill_at) in list(self.children.items()):
            if kill_at:
                if now >= kill_at:
                    self.signal(pid, signal.SIGKILL)
                    self.children[pid] = (row, float("inf"))  # killed: just reap it
                continue
            child = self.rows.read(row)
            if not self.timeout or not child.in_flight or \
                    now - child.request_started <= self.timeout:
                continue
            self.log.error("child pid %d of worker #%d timed out: %s %s has run for %.1f s "
                           "(timeout %g s); its traceback follows, then it is killed",
                           pid, self.number, child.method, child.path,
                           now - child.request_started, self.timeout)
            self.children[pid] = (row, now + HUNG_CHILD_KILL_DELAY)
            self.signal(pid, TRACEBACK_SIGNAL)

    @staticmethod
    def signal(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def signal_all(self, sig: int) -> None:
        for pid in list(self.children):
            self.signal(pid, sig)

    def kill_all(self) -> None:
        """graceful_timeout is over: SIGKILL what is left, wait for it, fold its counts."""
        self.signal_all(signal.SIGKILL)
        for pid, (row, _) in list(self.children.items()):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.fold(row)
        self.children.clear()
