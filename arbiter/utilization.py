"""Utilization: the busy fraction of each worker, and of the server, over sliding windows.

Owns the window arithmetic, nothing else (no clock, no scoreboard): the
master hands it readings and times. A worker's row carries the seconds of
full capacity it has used since it started (:mod:`arbiter.scoreboard`; what
"capacity" is per worker type: :class:`arbiter.workers.base.Worker`), a
counter that only grows from 0 at the worker's start. The master samples
every live worker's counter about once a second (``SAMPLE_INTERVAL``) into
a small ring per worker, the first sample being (its start, 0);
over a window of W seconds a worker's utilization is::

    (busy now - busy at the oldest sample not older than W) / (the seconds between)

so it is the fraction of the last W seconds (or of the worker's life, when it
is younger) its capacity was in use, 0 to 1. The whole server's is the sum of
those busy seconds over the sum of those wall seconds, over the live workers:
"capacity in use" with every worker weighing for the time it ran in the window
(workers of one generation have the same capacity). A window is a little
shorter than W (by up to one sample interval): the samples are that coarse.

A counter that goes back (never expected: one writer per row, read under a
sequence count) is held at its highest value, so a window is never negative.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping

WINDOWS = (("10s", 10.0), ("60s", 60.0))  # label, seconds
SAMPLE_INTERVAL = 1.0  # seconds between samples of every worker's busy counter


class BusyHistory:
    """One worker's samples, oldest first: (time, busy seconds)."""

    __slots__ = ("samples",)

    def __init__(self, size: int) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=size)

    def add(self, now: float, busy: float) -> None:
        if self.samples:
            busy = max(busy, self.samples[-1][1])
        self.samples.append((now, busy))

    def span(self, now: float, busy: float, window: float) -> tuple[float, float]:
        """(busy seconds, wall seconds) from the oldest sample within ``window`` of
        ``now`` to ``now``, when the counter reads ``busy``; (0, 0) without a sample."""
        start = None
        for sample in self.samples:
            if sample[0] >= now - window:
                start = sample
                break
        if start is None:  # every sample is older than the window (sampling stalled)
            if not self.samples:
                return 0.0, 0.0
            start = self.samples[-1]
        wall = now - start[0]
        if wall <= 0:
            return 0.0, 0.0
        return min(max(0.0, busy - start[1]), wall), wall


def fraction(busy: float, wall: float) -> float:
    """busy / wall, 0 when there is no wall time, rounded for display."""
    return round(min(1.0, busy / wall), 4) if wall > 0 else 0.0


class Utilization:
    """The rings of every live worker, by a key the caller chooses (the pid)."""

    def __init__(self, windows: tuple[tuple[str, float], ...] = WINDOWS,
                 interval: float = SAMPLE_INTERVAL) -> None:
        self.windows = windows
        self.interval = interval
        longest = max(seconds for _, seconds in windows)
        # Samples are at least `interval` apart, so this many cover the longest window.
        self.size = int(longest / interval) + 2
        self.histories: dict[Hashable, BusyHistory] = {}
        self.next_sample = 0.0

    def due(self, now: float) -> bool:
        """Is it time for the next sample?"""
        return now >= self.next_sample

    def sample(self, readings: Mapping[Hashable, float], now: float,
               born: Mapping[Hashable, float] | None = None) -> None:
        """Record every live worker's busy counter; forget the workers not in ``readings``.

        ``born``: when each worker's counter was 0 (its start). A worker seen for the
        first time gets that as its first sample, so what it did before this sample
        (a request served in its first second) is inside its windows."""
        self.next_sample = now + self.interval
        for key in [k for k in self.histories if k not in readings]:
            del self.histories[key]
        for key, busy in readings.items():
            history = self.histories.get(key)
            if history is None:
                history = self.histories[key] = BusyHistory(self.size)
                start = (born or {}).get(key)
                if start is not None and start < now:
                    history.add(start, 0.0)
            history.add(now, busy)

    def spans(self, key: Hashable, busy: float, now: float) -> dict[str, tuple[float, float]]:
        """Per window label: (busy seconds, wall seconds) of one worker."""
        history = self.histories.get(key)
        if history is None:
            return {label: (0.0, 0.0) for label, _ in self.windows}
        return {label: history.span(now, busy, seconds) for label, seconds in self.windows}

    def worker(self, key: Hashable, busy: float, now: float) -> dict[str, float]:
        """Per window label: one worker's utilization, 0 to 1."""
        return {label: fraction(*span) for label, span in self.spans(key, busy, now).items()}

    def server(self, readings: Mapping[Hashable, float], now: float) -> dict[str, float]:
        """Per window label: the whole server's utilization (busy sum / wall sum)."""
        totals = {label: [0.0, 0.0] for label, _ in self.windows}
        for key, busy in readings.items():
            for label, (used, wall) in self.spans(key, busy, now).items():
                totals[label][0] += used
                totals[label][1] += wall
        return {label: fraction(used, wall) for label, (used, wall) in totals.items()}
