"""The streams of a WSGI environ: ``wsgi.input`` and ``wsgi.errors``.

Owns :class:`StreamInput` (``wsgi.input`` pulling the body as it arrives,
through the driver's ``pull()``), ``EMPTY_INPUT`` (a request without a
body), and :class:`ErrorStream` (``wsgi.errors``: each line the app writes
goes to the error log as written). A body read whole before the app runs is
a :class:`~arbiter.http.bodies.BodySpool` instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from arbiter.logs import write_app_lines

__all__ = ["EMPTY_INPUT", "ErrorStream", "StreamInput"]


# -- wsgi.input -------------------------------------------------------------------
class StreamInput:
    """``wsgi.input`` over ``pull()``, which returns the next body bytes or b"" at the end."""

    __slots__ = ("_pull", "_buf", "_eof")

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._buf = b""
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._pull()
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buf] if self._buf else []  # one part: joined without a copy
            self._buf = b""
            while not self._eof:
                data = self._pull()
                if data:
                    parts.append(data)
                else:
                    self._eof = True
            return b"".join(parts)
        while len(self._buf) < size and self._fill():
            pass
        data = self._buf[:size]
        self._buf = self._buf[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= 0:
                end = i + 1
                break
            if 0 <= limit <= len(self._buf):
                end = limit
                break
            start = len(self._buf)
            if not self._fill():
                end = len(self._buf)
                break
        if 0 <= limit < end:
            end = limit
        data = self._buf[:end]
        self._buf = self._buf[end:]
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> StreamInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    @property
    def exhausted(self) -> bool:
        return self._eof and not self._buf


class _EmptyInput:
    """``wsgi.input`` for a request without a body (stateless, shared)."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> _EmptyInput:
        return self

    def __next__(self) -> bytes:
        raise StopIteration


EMPTY_INPUT = _EmptyInput()


class ErrorStream:
    """``wsgi.errors``: each line the app writes goes to the error log as written.

    One object per worker, shared by its threads: a partial line waits in a
    per-thread buffer until its newline (or ``flush()``, or 64 KiB), so lines
    of concurrent requests never mix; complete lines are handed to
    :func:`arbiter.logs.write_app_lines` together.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._local = threading.local()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        local = self._local
        pending = getattr(local, "pending", "")
        if "\n" not in text:
            pending += text
            if len(pending) < _ERRORS_PENDING_MAX:
                local.pending = pending
                return len(text)
            lines = [pending]
            local.pending = ""
        else:
            *lines, local.pending = (pending + text).split("\n")
        write_app_lines(self._log, lines)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pending = getattr(self._local, "pending", "")
        if pending:
            self._local.pending = ""
            write_app_lines(self._log, [pending])


_ERRORS_PENDING_MAX = 65536
