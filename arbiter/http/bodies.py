"""Request bodies read in full before the app runs: memory-bounded by construction.

Owns :class:`BodySpool`, the ``wsgi.input`` of the reactor-driven workers
(evented, pooled), which read a whole body before they hand the request to
the app, and :class:`SpoolMemory`, the per-worker cap on how much of all
such bodies is held in memory at once. Like nginx's
``client_body_buffer_size``: a body stays in memory while it is small
(``BODY_MEMORY`` per connection) and while the worker's total stays under
its cap (``WORKER_BODY_MEMORY``); past either, it goes on in an anonymous
temporary file (``tempfile.TemporaryFile``: in ``$TMPDIR``, gone when closed,
and nothing of it is in the worker's memory). So 100 clients each sending a
30 MB body cost the worker at most 8 MiB of memory, and a body that the
transfer budget cuts short is dropped with its connection. (128 KiB per body:
at 64 KiB, every 100 KB upload went through a temporary file -- a create, a
write and a read-back per request, which halved the upload rate; the worker's
cap went from 16 to 8 MiB, so the worst case holds less than before.)
"""

from __future__ import annotations

import io
import tempfile
import threading
from typing import Any

__all__ = ["BODY_MEMORY", "WORKER_BODY_MEMORY", "BodySpool", "SpoolMemory"]

BODY_MEMORY = 128 * 1024  # bytes of one body held in memory before it spills to a file
WORKER_BODY_MEMORY = 8 * 1024 * 1024  # bytes of all bodies held in memory, per worker


class SpoolMemory:
    """How much body memory a worker's spools hold; shared by its threads."""

    __slots__ = ("limit", "held", "_lock")

    def __init__(self, limit: int = WORKER_BODY_MEMORY) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, count: int) -> bool:
        with self._lock:
            if self.held + count > self.limit:
                return False
            self.held += count
            return True

    def give_back(self, count: int) -> None:
        with self._lock:
            self.held -= count


class BodySpool:
    """A request body: written as it arrives, then read by the app as ``wsgi.input``."""

    __slots__ = ("memory", "limit", "file", "in_memory", "closed")

    def __init__(self, memory: SpoolMemory, limit: int = BODY_MEMORY) -> None:
        self.memory = memory
        self.limit = limit
        self.file: Any = io.BytesIO()
        self.in_memory = 0  # bytes counted against the worker's cap
        self.closed = False

    # -- filled by the lifecycle ------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.in_memory is not None:
            size = self.in_memory + len(data)
            if size <= self.limit and self.memory.take(len(data)):
                self.in_memory = size
                self.file.write(data)
                return
            self._spill()
        self.file.write(data)

    def _spill(self) -> None:
        spooled = tempfile.TemporaryFile()
        spooled.write(self.file.getbuffer())
        self.memory.give_back(self.in_memory)
        self.in_memory = None  # type: ignore[assignment]
        self.file = spooled

    @property
    def on_disk(self) -> bool:
        return self.in_memory is None

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    # -- read by the app ----------------------------------------------------------------
    def read(self, size: int | None = -1) -> bytes:
        return self.file.read(-1 if size is None else size)

    def readline(self, size: int | None = -1) -> bytes:
        return self.file.readline(-1 if size is None else size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return self.file.readlines(-1 if hint is None else hint)

    def __iter__(self) -> Any:
        return iter(self.file)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.in_memory:
            self.memory.give_back(self.in_memory)
            self.in_memory = 0
        self.file.close()
