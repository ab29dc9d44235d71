"""The asyncio event loop of a worker: which one, and noticing that it stopped turning.

Owns :func:`new_event_loop` (uvloop's loop when uvloop imports -- the
optional ``arbiter[uvloop]`` extra -- else asyncio's own) and
:class:`LoopWatchdog` (the ``reactor_block_warning`` setting): the loop
calls :meth:`LoopWatchdog.turned` from a callback it schedules every quarter
of the threshold; a daemon thread checks twice per threshold, and when the
loop has not turned for longer than the threshold it logs, once per stall,
the stack of the loop's thread -- the blocking call an async app made (a
``time.sleep``, a synchronous database driver, a heavy computation) -- with
the request(s) the worker is serving, and, when the loop turns again, how
long the stall lasted. Each stall is counted in the worker's scoreboard row
(``arbiter_reactor_stalls_total``, ``arbiter_reactor_blocked_seconds_total``).
It changes nothing else: the master's ``timeout`` still kills a worker whose
loop stays blocked (its heartbeat stops).

Any loop can use the watchdog: the asgi worker's asyncio loop calls
:meth:`LoopWatchdog.turned` from a periodic callback; the evented worker's
reactor calls it after each wait and :meth:`LoopWatchdog.waiting` before it
(a loop waiting for events is not blocked, however long it waits).
:func:`awaiting_stack` (where a suspended task waits) is for the log line of
a request or a WebSocket handshake cancelled at ``timeout``; :func:`wake_all`
resolves the futures a request or a WebSocket waits on.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["LoopWatchdog", "awaiting_stack", "new_event_loop", "wake_all"]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it imports, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopWatchdog:
    """Logs the stack of a loop's thread when it blocks longer than ``threshold`` s."""

    def __init__(self, threshold: float, log: logging.Logger, what: str,
                 serving: Callable[[], str] | None = None, counts: Any = None,
                 publish: Callable[[], None] | None = None) -> None:
        """``serving()``: the request(s) in progress, for the log; ``counts``: the
        worker's scoreboard row (``count_stall()``, ``count_blocked(seconds)``);
        ``publish()``: writes what the loop would have written to the row at the end of
        its turn (called when the loop has not turned for half the threshold)."""
        self.threshold = threshold
        self.log = log
        self.what = what  # "worker #3": who is blocked, for the log
        self.serving = serving
        self.counts = counts
        self.publish = publish
        self.loop_thread = threading.get_ident()
        self.turned_at = time.monotonic()
        self.idle = False  # waiting for events (a reactor in epoll): not blocked
        self.stalled_since: float | None = None  # a stall reported, not yet over
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="arbiter-loop-watchdog",
                                       daemon=True)

    @property
    def period(self) -> float:
        """How often the loop should call :meth:`turned`."""
        return self.threshold / 4

    def start(self) -> None:
        self.thread.start()

    def stop(self, join: bool = True) -> None:
        """Stop watching; the thread is joined (it wakes at once), so a worker about
        to fork holds no thread of it."""
        self.stop_event.set()
        if join and self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(1.0)

    def follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hear an asyncio loop turn: a callback every :attr:`period` calls :meth:`turned`."""
        def turning() -> None:
            if not self.stop_event.is_set():  # a stopped watchdog's callbacks end with it
                self.turned()
                loop.call_later(self.period, turning)

        loop.call_soon(turning)

    def waiting(self) -> None:
        """Called by a loop about to wait for events: not blocked until it turns."""
        self.idle = True

    def turned(self) -> None:
        """Called by the loop: it is turning."""
        now = time.monotonic()
        self.turned_at = now
        self.idle = False
        since = self.stalled_since
        if since is not None:
            self.stalled_since = None
            if self.counts is not None:
                self.counts.count_blocked(now - since)
            self.log.warning("%s: the event loop turns again after %.2f s blocked",
                             self.what, now - since)

    def watch(self) -> None:
        while not self.stop_event.wait(self.threshold / 2):
            turned_at = self.turned_at
            blocked = time.monotonic() - turned_at
            if self.publish is not None and blocked > self.threshold / 2 and not self.idle:
                try:  # a request the blocked loop started shows in the row (ctl status)
                    self.publish()
                except Exception:  # noqa: BLE001 -- the watch must go on
                    self.log.exception("%s: publishing the scoreboard row failed", self.what)
            if blocked <= self.threshold or self.stalled_since is not None or self.idle:
                continue
            self.stalled_since = turned_at
            if self.counts is not None:
                self.counts.count_stall()
            frame = sys._current_frames().get(self.loop_thread)
            stack = "".join(traceback.format_stack(frame)).rstrip() if frame else "(unknown)"
            serving = ""
            if self.serving is not None:
                try:
                    serving = self.serving()
                except Exception:  # noqa: BLE001 -- the report must not fail
                    serving = ""
            self.log.warning("%s: the event loop has been blocked for %.2f s "
                             "(reactor_block_warning %g s)%s, in (most recent call last):\n%s",
                             self.what, blocked, self.threshold,
                             f" serving {serving}" if serving else "", stack)



def awaiting_stack(task: asyncio.Task) -> str:
    """Where a suspended task waits: every coroutine in its chain of awaits, outermost
    first, as traceback lines (``Task.print_stack`` shows only the outermost). A compiled
    coroutine of arbiter's own (its frame has no line) is stepped through, not shown."""
    frames = []
    coro: Any = task.get_coro()
    for _ in range(256):  # a chain of awaits is finite, but be sure
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            coro = _awaited_by_wrapper(coro)  # a compiled coroutine awaits through one
            if coro is None:
                break
            continue
        if (frame.f_lineno or 0) > 0:
            frames.append((frame, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if coro is None:
            break
    return "".join(traceback.format_list(traceback.StackSummary.extract(frames))).rstrip()


def _awaited_by_wrapper(awaitable: Any) -> Any:
    """The coroutine behind ``awaitable`` when it is the iterator a coroutine's
    ``__await__`` made (what a compiled coroutine awaits): that iterator exposes its
    coroutine to the garbage collector only."""
    if awaitable is None:
        return None
    for referent in gc.get_referents(awaitable):
        if getattr(referent, "cr_frame", None) is not None:
            return referent
    return None


def wake_all(waiters: list[asyncio.Future]) -> None:
    """Resolve every future still waiting in ``waiters``, which is left empty."""
    pending = waiters[:]
    waiters.clear()
    for future in pending:
        if not future.done():
            future.set_result(None)
