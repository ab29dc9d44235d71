"""The scoreboard: a shared-memory table with one fixed-size row per worker slot.

The master creates it (an anonymous shared ``mmap``) before forking any worker,
so every worker inherits the same memory. Each worker writes only its own row;
the master reads all rows. One mechanism serves boot detection ("ready"),
hung-worker detection (heartbeat and the running request's start time), and
later ``arbiter ctl status`` and metrics. No files, no pipes. With
``refork_after`` it also carries the master's requests to the mold: a row
claimed in state ``FORK_REQUESTED`` is a worker the mold is to fork, and
the child's pid written in it is how the master learns of its new worker.

Row layout (little-endian, see ``_ROW``): pid, generation, worker number,
state, boot time, heartbeat, requests served, requests in flight, the running
request's start time, method and path; then the connections it holds open
(what its peers read to share the load, :mod:`arbiter.io.balance`). Times
are ``time.monotonic()`` values, which on Linux (CLOCK_MONOTONIC) are
comparable across processes.

Busy time, for utilization (:mod:`arbiter.utilization`): each row carries the
seconds of full capacity its worker has used -- ``busy`` up to ``busy_mark``,
plus ``busy_rate`` (the fraction of capacity in use since then, 0 to 1) times
the seconds since -- so a reader sees a long request count as it runs, not
when it ends. The writer updates the three at each request start and finish,
inside a sequence count (odd while writing) the reader retries on.
"""

from __future__ import annotations

import mmap
import struct
import time
from bisect import bisect_left
from dataclasses import dataclass, field

# Worker states stored in a row.
FREE = 0
BOOTING = 1
IDLE = 2
BUSY = 3
DRAINING = 4
FORK_REQUESTED = 5  # claimed for a worker the mold is to fork (refork_after)

STATE_NAMES = {FREE: "free", BOOTING: "booting", IDLE: "idle", BUSY: "busy", DRAINING: "draining",
               FORK_REQUESTED: "booting"}
# Rows of workers not ready yet: being forked by the mold, or loading the app.
NOT_READY = (FREE, BOOTING, FORK_REQUESTED)

METHOD_SIZE = 16
PATH_SIZE = 96

# pid, generation, number, state, boot_time, heartbeat, requests, in_flight,
# request_started, method, path
_ROW = struct.Struct(f"<iIIB3xddQIxxxxd{METHOD_SIZE}s{PATH_SIZE}s")

# Request counters, exact (each worker counts its own; the master adds a dead
# worker's final counts to its totals when it reaps it): responses by status
# class, requests by method, and a duration histogram (cumulative buckets are
# made by the reader; each request increments one bucket here).
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other")
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, float("inf"))
_METHOD_INDEX = {name: i for i, name in enumerate(METHODS)}
_OFF_COUNTERS = 192
_OFF_STATUS = _OFF_COUNTERS
_OFF_METHODS = _OFF_STATUS + 8 * len(STATUS_CLASSES)
_OFF_BUCKETS = _OFF_METHODS + 8 * len(METHODS)
# A finished request's counter qwords within the row: by status (the usual ones), by method.
_STATUS_INDEX = {code: (_OFF_STATUS >> 3) + min(max(code // 100, 1), 5) - 1
                 for code in range(100, 600)}
_METHOD_QWORD = {name: (_OFF_METHODS >> 3) + i for name, i in _METHOD_INDEX.items()}
_OTHER_METHOD_QWORD = (_OFF_METHODS >> 3) + 7
_OFF_DURATION_SUM = _OFF_BUCKETS + 8 * len(DURATION_BUCKETS)
# The event loop's stalls (reactor_block_warning): how many, and the seconds they lasted.
_OFF_STALLS = _OFF_DURATION_SUM + 8
_OFF_BLOCKED = _OFF_STALLS + 8
# Queue time (max_queue_time): how long requests waited before their app started, in the
# duration histogram's buckets, their sum, and the requests refused for waiting too long.
QUEUE_BUCKETS = DURATION_BUCKETS
_OFF_QUEUE_BUCKETS = _OFF_BLOCKED + 8
_OFF_QUEUE_SUM = _OFF_QUEUE_BUCKETS + 8 * len(QUEUE_BUCKETS)
_OFF_SHED = _OFF_QUEUE_SUM + 8
_COUNTERS = struct.Struct(f"<{len(STATUS_CLASSES)}Q{len(METHODS)}Q{len(DURATION_BUCKETS)}QdQd"
                          f"{len(QUEUE_BUCKETS)}QdQ")
# Busy time (utilization): a sequence count, seconds used up to the mark, the mark, the rate.
_OFF_BUSY_SEQ = _OFF_SHED + 8
_OFF_BUSY = _OFF_BUSY_SEQ + 8
_OFF_BUSY_MARK = _OFF_BUSY + 8
_OFF_BUSY_RATE = _OFF_BUSY_MARK + 8
_BUSY = struct.Struct("<Qddd")
ROW_SIZE = 768
assert _ROW.size <= _OFF_COUNTERS and _OFF_COUNTERS + _COUNTERS.size == _OFF_BUSY_SEQ
assert _OFF_BUSY_SEQ + _BUSY.size <= ROW_SIZE

# Offsets of the fields a worker updates on its hot path.
_OFF_NUMBER = 8
_OFF_STATE = 12
_OFF_RECYCLE = 13  # one byte in the row's padding: 1 = "replace me" (max_requests)
_OFF_DEFERRING = 14  # one byte: 1 = leaving the accept queue to its peers for a moment
_OFF_CLOSED = 15  # one byte: 1 = accepts no more connections (stopping, draining)
_OFF_HEARTBEAT = 24
_OFF_REQUESTS = 32
_OFF_IN_FLIGHT = 40
_OFF_REQ_START = 48
_OFF_METHOD = 56
_OFF_PATH = _OFF_METHOD + METHOD_SIZE
_OFF_CONNECTIONS = _ROW.size  # u32 after the row: connections the worker holds open
assert _OFF_CONNECTIONS % 4 == 0 and _OFF_CONNECTIONS + 4 <= _OFF_COUNTERS


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
    connections: int = 0  # connections held open (the reactor and thread workers)

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, "unknown")


@dataclass
class Counters:
    """Request counters: one worker's, or a sum of many."""

    by_status: list[int]
    by_method: list[int]
    buckets: list[int]  # per bucket (not cumulative), same order as DURATION_BUCKETS
    duration_sum: float = 0.0
    stalls: int = 0  # times the worker's event loop was blocked past reactor_block_warning
    blocked_seconds: float = 0.0  # how long those stalls lasted in all
    queue_buckets: list[int] = field(default_factory=lambda: [0] * len(QUEUE_BUCKETS))
    queue_sum: float = 0.0  # seconds requests waited before their app started, in all
    shed: int = 0  # requests answered 503 for waiting longer than max_queue_time

    @classmethod
    def zero(cls) -> Counters:
        return cls([0] * len(STATUS_CLASSES), [0] * len(METHODS), [0] * len(DURATION_BUCKETS))

    def add(self, other: Counters) -> None:
        for mine, theirs in ((self.by_status, other.by_status),
                             (self.by_method, other.by_method),
                             (self.buckets, other.buckets),
                             (self.queue_buckets, other.queue_buckets)):
            for i, value in enumerate(theirs):
                mine[i] += value
        self.duration_sum += other.duration_sum
        self.stalls += other.stalls
        self.blocked_seconds += other.blocked_seconds
        self.queue_sum += other.queue_sum
        self.shed += other.shed

    @property
    def total(self) -> int:
        return sum(self.by_status)


class Scoreboard:
    """The shared table. Create in the master before forking."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        self.slots = slots
        self.memory = mmap.mmap(-1, slots * ROW_SIZE)

    # -- master side -------------------------------------------------------
    def claim(self, slot: int, generation: int, number: int, state: int = BOOTING) -> None:
        """Reset a slot for a worker about to be forked (pid filled in by the worker);
        ``FORK_REQUESTED``: the mold is to fork it."""
        now = time.monotonic()
        _ROW.pack_into(self.memory, slot * ROW_SIZE, 0, generation, number, state,
                       now, now, 0, 0, 0.0, b"", b"")
        base = slot * ROW_SIZE + _OFF_CONNECTIONS
        self.memory[base:base + 4] = bytes(4)

    def counters(self, slot: int) -> Counters:
        values = _COUNTERS.unpack_from(self.memory, slot * ROW_SIZE + _OFF_COUNTERS)
        n_status, n_methods = len(STATUS_CLASSES), len(METHODS)
        buckets_end = n_status + n_methods + len(DURATION_BUCKETS)
        queue = buckets_end + 3
        return Counters(list(values[:n_status]), list(values[n_status:n_status + n_methods]),
                        list(values[n_status + n_methods:buckets_end]), values[buckets_end],
                        values[buckets_end + 1], values[buckets_end + 2],
                        list(values[queue:queue + len(QUEUE_BUCKETS)]), values[-2],
                        values[-1])

    def busy_seconds(self, slot: int, now: float) -> float:
        """Seconds of full capacity the worker in ``slot`` has used up to ``now``
        (a request running counts up to ``now``)."""
        base = slot * ROW_SIZE + _OFF_BUSY_SEQ
        for _ in range(100):
            seq, busy, mark, rate = _BUSY.unpack_from(self.memory, base)
            if not seq & 1 and _BUSY.unpack_from(self.memory, base)[0] == seq:
                break
        # (after 100 tries with a writer mid-update, the last reading is close enough)
        return busy + rate * max(0.0, now - mark) if mark else busy

    def wants_recycle(self, slot: int) -> bool:
        """Did the worker in ``slot`` ask to be replaced (it reached ``max_requests``)?"""
        return self.memory[slot * ROW_SIZE + _OFF_RECYCLE] != 0

    def release(self, slot: int) -> None:
        self.memory[slot * ROW_SIZE:(slot + 1) * ROW_SIZE] = bytes(ROW_SIZE)

    def read(self, slot: int) -> WorkerRow:
        (pid, generation, number, state, boot_time, heartbeat, requests, in_flight,
         started, method, path) = _ROW.unpack_from(self.memory, slot * ROW_SIZE)
        base = slot * ROW_SIZE + _OFF_CONNECTIONS
        return WorkerRow(slot, pid, generation, number, state, boot_time, heartbeat,
                         requests, in_flight, started,
                         method.rstrip(b"\0").decode("latin-1"),
                         path.rstrip(b"\0").decode("latin-1"),
                         int.from_bytes(self.memory[base:base + 4], "little"))

    def close(self) -> None:
        self.memory.close()

    # -- worker side -------------------------------------------------------
    def writer(self, slot: int) -> SlotWriter:
        return SlotWriter(self.memory, slot * ROW_SIZE)


class SlotWriter:
    """What a worker uses to write its own row. Cheap enough for the request path.

    Every field is written with one aligned store through a typed memoryview
    (``struct.pack_into`` zero-fills a field before writing it, and the master,
    reading concurrently from another process, would now and then see a
    heartbeat of 0 — a worker "silent" since boot). Request fields are written
    start time first, in-flight count last, so a reader never pairs a new
    in-flight count with a stale start.
    """

    __slots__ = ("memory", "base", "requests", "counts", "duration_sum", "started", "method",
                 "path", "method_shown",
                 "_bytes", "_i32", "_f64", "_u64", "_heartbeat", "_state", "_in_flight",
                 "_req_start", "_requests", "_duration_sum", "_qbase", "_connections",
                 "stalls", "blocked_seconds", "queue_sum", "shed", "busy", "busy_mark",
                 "busy_rate", "_busy_seq", "busy_seq")

    def __init__(self, memory: mmap.mmap, base: int) -> None:
        self.memory = memory
        self.base = base
        self.requests = 0
        self.counts = [0] * (ROW_SIZE // 8)  # by qword offset within the row
        self.duration_sum = 0.0
        self.stalls = 0
        self.blocked_seconds = 0.0
        self.queue_sum = 0.0
        self.shed = 0
        self.busy = 0.0  # seconds of full capacity used up to busy_mark
        self.busy_mark = 0.0
        self.busy_rate = 0.0  # fraction of capacity in use since busy_mark
        self.busy_seq = 0
        self.started = 0.0
        self.method = "GET"
        self.path: str | None = None  # what the row shows now
        self.method_shown: str | None = None
        view = memoryview(memory)
        self._bytes = view
        self._i32 = view.cast("i")
        self._f64 = view.cast("d")
        self._u64 = view.cast("Q")
        self._heartbeat = (base + _OFF_HEARTBEAT) // 8
        self._state = base + _OFF_STATE
        self._in_flight = (base + _OFF_IN_FLIGHT) // 4
        self._req_start = (base + _OFF_REQ_START) // 8
        self._requests = (base + _OFF_REQUESTS) // 8
        self._duration_sum = (base + _OFF_DURATION_SUM) // 8
        self._qbase = base // 8
        self._connections = (base + _OFF_CONNECTIONS) // 4
        self._busy_seq = (base + _OFF_BUSY_SEQ) // 8

    def _write_request(self, method: str, path: str) -> None:
        if path == self.path and method == self.method_shown:
            return  # the same request line as the last one (already in the row)
        self.path = path
        self.method_shown = method
        base = self.base + _OFF_METHOD
        self._bytes[base:base + METHOD_SIZE] = \
            method.encode("latin-1", "replace")[:METHOD_SIZE].ljust(METHOD_SIZE, b"\0")
        base = self.base + _OFF_PATH
        self._bytes[base:base + PATH_SIZE] = \
            path.encode("latin-1", "replace")[:PATH_SIZE].ljust(PATH_SIZE, b"\0")

    def record(self, status: int, method: str, duration: float) -> None:
        """Count one finished request: its status class, method and duration bucket."""
        counts = self.counts
        u64 = self._u64
        qbase = self._qbase
        index = _STATUS_INDEX.get(status)
        if index is None:
            index = (_OFF_STATUS >> 3) + min(max(status // 100, 1), 5) - 1
        count = counts[index] = counts[index] + 1
        u64[qbase + index] = count
        index = _METHOD_QWORD.get(method, _OTHER_METHOD_QWORD)
        count = counts[index] = counts[index] + 1
        u64[qbase + index] = count
        index = (_OFF_BUCKETS >> 3) + bisect_left(DURATION_BUCKETS, duration)
        count = counts[index] = counts[index] + 1
        u64[qbase + index] = count
        self.duration_sum += duration
        self._f64[self._duration_sum] = self.duration_sum

    @property
    def in_flight(self) -> bool:
        """A request is in flight (as the row shows it)."""
        return self._i32[self._in_flight] != 0

    def account_busy(self, now: float, rate: float) -> None:
        """From ``now`` on, ``rate`` (0 to 1) of this worker's capacity is in use."""
        self.busy += self.busy_rate * (now - self.busy_mark) if self.busy_mark else 0.0
        self.publish_busy(self.busy, now, rate)

    def publish_busy(self, busy: float, mark: float, rate: float) -> None:
        """Busy seconds someone else added up (a forked worker: its children's)."""
        self.busy, self.busy_mark, self.busy_rate = busy, mark, rate
        u64, f64, index = self._u64, self._f64, self._busy_seq
        self.busy_seq += 1
        u64[index] = self.busy_seq  # odd: the reader waits
        f64[index + 1] = busy
        f64[index + 2] = mark
        f64[index + 3] = rate
        self.busy_seq += 1
        u64[index] = self.busy_seq

    def count_stall(self) -> None:
        """The event loop was found blocked (the watchdog's thread writes this field only)."""
        self.stalls += 1
        self._u64[(self.base + _OFF_STALLS) // 8] = self.stalls

    def record_queue(self, seconds: float, shed: bool) -> None:
        """One request's wait before its app started (and whether it was shed: 503)."""
        index = (_OFF_QUEUE_BUCKETS >> 3) + bisect_left(QUEUE_BUCKETS, seconds)
        counts = self.counts
        counts[index] += 1
        self._u64[self._qbase + index] = counts[index]
        self.queue_sum += seconds
        self._f64[(self.base + _OFF_QUEUE_SUM) // 8] = self.queue_sum
        if shed:
            self.shed += 1
            self._u64[(self.base + _OFF_SHED) // 8] = self.shed

    def count_blocked(self, seconds: float) -> None:
        """A stall ended after ``seconds`` (the loop's thread writes this field only)."""
        self.blocked_seconds += seconds
        self._f64[(self.base + _OFF_BLOCKED) // 8] = self.blocked_seconds

    def set_pid(self, pid: int) -> None:
        self._i32[self.base // 4] = pid

    @property
    def slots(self) -> int:
        """How many rows the table has."""
        return len(self.memory) // ROW_SIZE

    def set_closed(self, closed: bool = True) -> None:
        """This worker accepts no more connections (it drains what it has); False: it
        accepts again (a mold that drained to fork)."""
        self._bytes[self.base + _OFF_CLOSED] = closed

    def set_deferring(self, deferring: bool) -> None:
        self._bytes[self.base + _OFF_DEFERRING] = deferring

    def set_connections(self, count: int) -> None:
        """The connections this worker holds open now (read by its peers to share load)."""
        self._i32[self._connections] = count

    def set_state(self, state: int) -> None:
        self._bytes[self._state] = state

    def heartbeat(self) -> None:
        self._f64[self._heartbeat] = time.monotonic()

    def fork_requests(self) -> list[int]:
        """The mold's side: the slots the master claimed for workers it is to fork."""
        raw = self._bytes
        return [slot for slot in range(self.slots)
                if raw[slot * ROW_SIZE + _OFF_STATE] == FORK_REQUESTED]

    @property
    def index(self) -> int:
        """The slot this writer writes."""
        return self.base // ROW_SIZE

    def claimed_number(self) -> int:
        """The worker number the master wrote when it claimed the row."""
        return self._i32[(self.base + _OFF_NUMBER) // 4]

    def take_fork_request(self, slot: int) -> SlotWriter:
        """The mold forks the worker of ``slot`` now: the row boots (never forked twice);
        the writer is the child's."""
        self._bytes[slot * ROW_SIZE + _OFF_STATE] = BOOTING
        return SlotWriter(self.memory, slot * ROW_SIZE)

    def ask_for_recycle(self) -> None:
        """Ask the master for a replacement; this worker serves on until it is stopped."""
        self._bytes[self.base + _OFF_RECYCLE] = 1

    def request_started(self, method: str, path: str) -> None:
        now = time.monotonic()
        f64 = self._f64
        if self.busy_rate:  # a start without a finish: what ran so far is busy time
            self.account_busy(now, 1.0)
        else:  # account_busy(now, 1.0) inlined (the busy seconds stay as they are)
            u64, index, seq = self._u64, self._busy_seq, self.busy_seq
            u64[index] = seq + 1
            f64[index + 2] = now
            f64[index + 3] = 1.0
            u64[index] = self.busy_seq = seq + 2
            self.busy_mark = now
            self.busy_rate = 1.0
        self.started = now
        self.method = method
        f64[self._req_start] = now
        self._write_request(method, path)
        self._f64[self._heartbeat] = now
        self._i32[self._in_flight] = 1
        self._bytes[self._state] = BUSY

    def show_in_flight(self, in_flight: int, started: float, method: str, path: str,
                       now: float | None = None) -> None:
        """For workers running several requests at once: the count and the oldest one.
        Going idle, the count is cleared before the start, so no reader pairs a request
        in flight with a start of 0 (the master once took that for a request running
        since boot, and recycled a healthy worker); the last request line stays (it is
        read only while a request is in flight)."""
        if now is None:
            now = time.monotonic()
        if not in_flight:
            self._i32[self._in_flight] = 0
            self._bytes[self._state] = IDLE
            self._f64[self._heartbeat] = now
            self._f64[self._req_start] = started
            return
        self._f64[self._req_start] = started
        self._write_request(method, path)
        self._f64[self._heartbeat] = now
        self._i32[self._in_flight] = in_flight
        self._bytes[self._state] = BUSY

    def show_running(self, now: float, rate: float, in_flight: int, started: float,
                     method: str, path: str) -> None:
        """A multithreaded worker's requests changed: ``account_busy(now, rate)`` (inlined:
        this runs twice a request) then ``show_in_flight(in_flight, started, method,
        path, now)``."""
        busy = self.busy
        if self.busy_mark:
            busy += self.busy_rate * (now - self.busy_mark)
        self.busy, self.busy_mark, self.busy_rate = busy, now, rate
        u64, f64, index = self._u64, self._f64, self._busy_seq
        seq = self.busy_seq + 1
        u64[index] = seq  # odd: the reader waits
        f64[index + 1] = busy
        f64[index + 2] = now
        f64[index + 3] = rate
        u64[index] = self.busy_seq = seq + 1
        self.show_in_flight(in_flight, started, method, path, now)

    def note_busy(self, now: float, rate: float) -> None:
        """``account_busy(now, rate)`` without writing the row: :meth:`publish_running`
        writes it later (a loop's observer publishes once a turn)."""
        busy = self.busy
        if self.busy_mark:
            busy += self.busy_rate * (now - self.busy_mark)
        self.busy, self.busy_mark, self.busy_rate = busy, now, rate

    def publish_running(self, in_flight: int, started: float, method: str,
                        path: str) -> None:
        """Write the busy time noted (:meth:`note_busy`) and the in-flight fields; the
        heartbeat they carry is the time noted, not now (the watchdog's thread publishes
        for a blocked loop: that must not look like a beat of it)."""
        u64, f64, index = self._u64, self._f64, self._busy_seq
        seq = self.busy_seq + 1
        u64[index] = seq  # odd: the reader waits
        f64[index + 1] = self.busy
        f64[index + 2] = self.busy_mark
        f64[index + 3] = self.busy_rate
        u64[index] = self.busy_seq = seq + 1
        self.show_in_flight(in_flight, started, method, path, self.busy_mark)

    def count_request(self, status: int = 0, method: str = "", duration: float = 0.0) -> None:
        """One more request served (the in-flight fields are written separately);
        with a status, it is counted in the request counters too."""
        self.requests += 1
        self._u64[self._requests] = self.requests
        if status:
            self.record(status, method, duration)

    def set_counters(self, counters: Counters, requests: int) -> None:
        """Publish totals someone else counted (a forked worker: its children's requests).

        Each field only ever grows, and is written with one store, so a reader
        never sees a count go back.
        """
        if requests != self.requests:
            self.requests = requests
            self._u64[self._requests] = requests
        for first, values in ((_OFF_STATUS, counters.by_status),
                              (_OFF_METHODS, counters.by_method),
                              (_OFF_BUCKETS, counters.buckets),
                              (_OFF_QUEUE_BUCKETS, counters.queue_buckets)):
            for i, value in enumerate(values):
                index = (first >> 3) + i
                if value != self.counts[index]:
                    self.counts[index] = value
                    self._u64[self._qbase + index] = value
        if counters.duration_sum != self.duration_sum:
            self.duration_sum = counters.duration_sum
            self._f64[self._duration_sum] = self.duration_sum
        if counters.queue_sum != self.queue_sum:
            self.queue_sum = counters.queue_sum
            self._f64[(self.base + _OFF_QUEUE_SUM) // 8] = self.queue_sum
        if counters.shed != self.shed:
            self.shed = counters.shed
            self._u64[(self.base + _OFF_SHED) // 8] = self.shed

    def request_finished(self, status: int, duration: float | None = None) -> None:
        now = time.monotonic()
        # account_busy(now, 0.0) inlined (busy_rate is 1 since request_started; 0 when the
        # core refused a request before it started)
        busy = self.busy = (self.busy + (now - self.busy_mark) * self.busy_rate
                            if self.busy_mark else self.busy)
        u64, f64, index, seq = self._u64, self._f64, self._busy_seq, self.busy_seq
        u64[index] = seq + 1
        f64[index + 1] = busy
        f64[index + 3] = 0.0
        u64[index] = self.busy_seq = seq + 2
        self.busy_rate = 0.0
        self.record(status, self.method, now - self.started if duration is None else duration)
        self._i32[self._in_flight] = 0
        self.requests += 1
        self._u64[self._requests] = self.requests
        self._f64[self._heartbeat] = now
        self._bytes[self._state] = IDLE


class PeerLoads:
    """What one worker reads of its peers' rows to share the load (arbiter.io.balance):
    for each row in the first ``slots`` slots but its own, serving (idle or busy, not
    recycling, still accepting) and not stuck in one long request, the connections it
    holds."""

    __slots__ = ("_i32", "_f64", "_bytes", "_own", "_slots")

    def __init__(self, writer: SlotWriter, slots: int) -> None:
        self._bytes = writer._bytes
        self._i32 = writer._i32
        self._f64 = writer._f64
        self._own = writer.base // ROW_SIZE
        self._slots = slots

    def others(self, now: float, stuck_after: float) -> tuple[int | None, int, bool]:
        """(the fewest connections a serving peer holds -- None: no serving peer,
        the connections all serving peers hold, whether that least loaded peer is
        itself leaving the queue to others for a moment)."""
        i32, f64, raw = self._i32, self._f64, self._bytes
        least = None
        total = 0
        least_defers = False
        for slot in range(self._slots):
            base = slot * ROW_SIZE
            if slot == self._own or raw[base + _OFF_STATE] not in (IDLE, BUSY) \
                    or not i32[base // 4] or raw[base + _OFF_RECYCLE] \
                    or raw[base + _OFF_CLOSED]:
                continue
            if i32[(base + _OFF_IN_FLIGHT) // 4] and \
                    now - f64[(base + _OFF_REQ_START) // 8] > stuck_after:
                continue  # busy with one long request: it is not accepting now
            count = i32[(base + _OFF_CONNECTIONS) // 4]
            total += count
            if least is None or count < least:
                least = count
                least_defers = bool(raw[base + _OFF_DEFERRING])
        return least, total, least_defers
