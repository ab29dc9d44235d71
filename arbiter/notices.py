"""Worker notices: how a worker wakes the master, and tells it why, without waiting.

Owns one pipe, made by the master before it forks any worker. A worker writes
one short line per notice (``b"<pid> <kind> <text>\\n"``, at most
``PIPE_BUF`` bytes, so lines from many workers never interleave); the master's
loop selects on the read end and wakes at once instead of at its next tick.

The scoreboard stays the truth about a worker (its state, its counters); a
notice only says "look now", and carries what the scoreboard has no room for:
the reason a worker failed to boot (the exception's last line). Writes never
block: when the pipe is full (a master that is not reading) the notice is
dropped, and the master still finds the state in the scoreboard on its tick.

Kinds: ``ready`` (the app is loaded, the worker serves), ``recycle`` (the
worker reached ``max_requests`` and asks for a replacement; it keeps serving
until the master stops it), ``failed`` (the app could not be loaded; the text
says why), ``forked`` (``refork_after``: the mold forked a worker; the text is
its scoreboard slot and pid, so the master can adopt it before it is reaped).
"""

from __future__ import annotations

import os
import select
from dataclasses import dataclass

READY = "ready"
RECYCLE = "recycle"
FAILED = "failed"
FORKED = "forked"

_MAX_LINE = getattr(select, "PIPE_BUF", 512)


@dataclass(frozen=True)
class Notice:
    """One notice as the master reads it."""

    pid: int
    kind: str
    text: str


class NoticePipe:
    """The pipe: the master reads (``read``), workers write (``send``)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)  # shared by every worker: never block one
        self._partial = b""

    # -- the master's end ----------------------------------------------------------
    def fileno(self) -> int:
        return self.read_fd

    def read(self) -> list[Notice]:
        """Every whole notice waiting in the pipe (none when it is empty)."""
        data = self._partial
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        *lines, self._partial = data.split(b"\n")
        notices = []
        for line in lines:
            pid, _, rest = line.partition(b" ")
            kind, _, text = rest.partition(b" ")
            if pid.isdigit() and kind:
                notices.append(Notice(int(pid), kind.decode("ascii", "replace"),
                                      text.decode("utf-8", "replace")))
        return notices

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.read_fd = self.write_fd = -1

    # -- a worker's end --------------------------------------------------------------
    def become_writer(self) -> None:
        """In a freshly forked worker: it only ever writes."""
        try:
            os.close(self.read_fd)
        except OSError:
            pass
        self.read_fd = -1

    def send(self, kind: str, text: str = "") -> None:
        """Write one notice; never blocks, never raises."""
        if self.write_fd < 0:
            return
        flat = " ".join(text.split())  # one line
        line = f"{os.getpid()} {kind} {flat}".encode("utf-8", "replace")[:_MAX_LINE - 1]
        try:
            os.write(self.write_fd, line + b"\n")
        except OSError:
            pass  # full (the master will see the scoreboard on its tick) or gone
