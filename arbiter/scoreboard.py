"""The scoreboard: a shared-memory table with one fixed-size row per worker slot.

The master creates it (an anonymous shared ``mmap``) before forking any worker,
so every worker inherits the same memory. Each worker writes only its own row;
the master reads all rows. One mechanism serves boot detection ("ready"),
hung-worker detection (heartbeat and the running request's start time), and
later ``arbiter ctl status`` and metrics. No files, no pipes.

Row layout (little-endian, see ``_ROW``): pid, generation, worker number,
state, boot time, heartbeat, requests served, requests in flight, the running
request's start time, method and path. Times are ``time.monotonic()`` values,
which on Linux (CLOCK_MONOTONIC) are comparable across processes.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

# Worker states stored in a row.
FREE = 0
BOOTING = 1
IDLE = 2
BUSY = 3
DRAINING = 4

STATE_NAMES = {FREE: "free", BOOTING: "booting", IDLE: "idle", BUSY: "busy", DRAINING: "draining"}

METHOD_SIZE = 16
PATH_SIZE = 96

# pid, generation, number, state, boot_time, heartbeat, requests, in_flight,
# request_started, method, path
_ROW = struct.Struct(f"<iIIB3xddQIxxxxd{METHOD_SIZE}s{PATH_SIZE}s")
ROW_SIZE = 192
assert _ROW.size <= ROW_SIZE

# Offsets of the fields a worker updates on its hot path.
_OFF_STATE = 12
_OFF_HEARTBEAT = 24
_OFF_REQUESTS = 32
_OFF_IN_FLIGHT = 40
_OFF_REQ_START = 48
_OFF_METHOD = 56
_OFF_PATH = _OFF_METHOD + METHOD_SIZE

_STATE = struct.Struct("<B")
_DOUBLE = struct.Struct("<d")
# state (+pad) .. heartbeat are not contiguous with the request fields, so the
# request start/finish writes are grouped in two structs each.
_REQUEST_OPEN = struct.Struct(f"<I4xd{METHOD_SIZE}s{PATH_SIZE}s")  # in_flight, started, method, path
_REQUEST_DONE = struct.Struct("<QI")  # requests, in_flight

DEFAULT_SLOTS = 1024


@dataclass(frozen=True)
class WorkerRow:
    """A snapshot of one slot, as the master reads it."""

    slot: int
    pid: int
    generation: int
    number: int
    state: int
    boot_time: float
    heartbeat: float
    requests: int
    in_flight: int
    request_started: float
    method: str
    path: str

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, "unknown")


class Scoreboard:
    """The shared table. Create in the master before forking."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        self.slots = slots
        self.memory = mmap.mmap(-1, slots * ROW_SIZE)

    # -- master side -------------------------------------------------------
    def claim(self, slot: int, generation: int, number: int) -> None:
        """Reset a slot for a worker about to be forked (pid filled in by the worker)."""
        now = time.monotonic()
        _ROW.pack_into(self.memory, slot * ROW_SIZE, 0, generation, number, BOOTING,
                       now, now, 0, 0, 0.0, b"", b"")

    def release(self, slot: int) -> None:
        self.memory[slot * ROW_SIZE:(slot + 1) * ROW_SIZE] = bytes(ROW_SIZE)

    def read(self, slot: int) -> WorkerRow:
        (pid, generation, number, state, boot_time, heartbeat, requests, in_flight,
         started, method, path) = _ROW.unpack_from(self.memory, slot * ROW_SIZE)
        return WorkerRow(slot, pid, generation, number, state, boot_time, heartbeat,
                         requests, in_flight, started,
                         method.rstrip(b"\0").decode("latin-1"),
                         path.rstrip(b"\0").decode("latin-1"))

    def close(self) -> None:
        self.memory.close()

    # -- worker side -------------------------------------------------------
    def writer(self, slot: int) -> SlotWriter:
        return SlotWriter(self.memory, slot * ROW_SIZE)


class SlotWriter:
    """What a worker uses to write its own row. Cheap enough for the request path."""

    __slots__ = ("memory", "base", "requests")

    def __init__(self, memory: mmap.mmap, base: int) -> None:
        self.memory = memory
        self.base = base
        self.requests = 0

    def set_pid(self, pid: int) -> None:
        struct.pack_into("<i", self.memory, self.base, pid)

    def set_state(self, state: int) -> None:
        _STATE.pack_into(self.memory, self.base + _OFF_STATE, state)

    def heartbeat(self) -> None:
        _DOUBLE.pack_into(self.memory, self.base + _OFF_HEARTBEAT, time.monotonic())

    def request_started(self, method: str, path: str) -> None:
        now = time.monotonic()
        _STATE.pack_into(self.memory, self.base + _OFF_STATE, BUSY)
        _DOUBLE.pack_into(self.memory, self.base + _OFF_HEARTBEAT, now)
        _REQUEST_OPEN.pack_into(self.memory, self.base + _OFF_IN_FLIGHT, 1, now,
                                method.encode("latin-1", "replace")[:METHOD_SIZE],
                                path.encode("latin-1", "replace")[:PATH_SIZE])

    def show_in_flight(self, in_flight: int, started: float, method: str, path: str) -> None:
        """For workers running several requests at once: the count and the oldest one."""
        _STATE.pack_into(self.memory, self.base + _OFF_STATE, BUSY if in_flight else IDLE)
        _DOUBLE.pack_into(self.memory, self.base + _OFF_HEARTBEAT, time.monotonic())
        _REQUEST_OPEN.pack_into(self.memory, self.base + _OFF_IN_FLIGHT, in_flight, started,
                                method.encode("latin-1", "replace")[:METHOD_SIZE],
                                path.encode("latin-1", "replace")[:PATH_SIZE])

    def count_request(self) -> None:
        """One more request served (the in-flight fields are written separately)."""
        self.requests += 1
        struct.pack_into("<Q", self.memory, self.base + _OFF_REQUESTS, self.requests)

    def request_finished(self, status: int) -> None:
        self.requests += 1
        _REQUEST_DONE.pack_into(self.memory, self.base + _OFF_REQUESTS, self.requests, 0)
        _DOUBLE.pack_into(self.memory, self.base + _OFF_HEARTBEAT, time.monotonic())
        _STATE.pack_into(self.memory, self.base + _OFF_STATE, IDLE)
