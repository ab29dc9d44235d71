#!/usr/bin/env python3
"""In-process microbenchmark of the asgi worker's per-request path: no sockets.

Owns the measurement of what one keep-alive request costs in Python inside the
asgi worker -- the request bytes handed to an
:class:`~arbiter.asgi.connection.HTTPProtocol` as asyncio would
(``data_received``), the lifecycle deciding, the scope built, the app's task
run on a real event loop (uvloop when installed), ``send`` framing the
response, the bytes "written" to a transport that only counts them, and the
connection back to idle. What the worker spends per request beyond this is
syscalls and the loop's own polling. The peer figure to hold it against:
uvicorn with httptools measured 40 µs per request *in all* on this machine.

It counts the Python well (under callgrind, in instructions, steady on a busy
machine), but it does not say what a change does to a server under load: check
a change with ``scripts/ab_commits.py`` (the real server, old and new
interleaved) before believing it. Two changes measured here 15% and 30% faster
came out 15% slower and no faster there (see its docstring).

Not run in CI: a tool for profiling the hot path. Usage::

    python scripts/asgi_core_bench.py [--requests 100000] [--rounds 5] [--profile]
        [--asyncio] [--observer] [--fastapi]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_app import asgi_app  # noqa: E402

from arbiter.asgi.connection import HTTPProtocol  # noqa: E402
from arbiter.asgi.handler import ASGIHandler  # noqa: E402
from arbiter.http import HTTPSettings  # noqa: E402

REQUEST_TEMPLATE = (b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n"
                    b"Accept: */*\r\n\r\n")
REQUEST = REQUEST_TEMPLATE % b"/hello"
LAST_BYTES = b"World!"  # how the transport knows a response is complete


class CountingTransport(asyncio.Transport):
    """A transport that takes every write at once and tells the bench when a
    response is complete (its last byte is the hello body's)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.responses = 0
        self.protocol: HTTPProtocol | None = None
        self.done: asyncio.Future | None = None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default)

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if data.endswith(LAST_BYTES):
            self.responses += 1
            if self.done is not None and not self.done.done():
                self.done.set_result(None)

    def writelines(self, pieces) -> None:
        for piece in pieces:
            self.write(piece)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class BenchHost:
    """What a connection asks of its worker, doing nothing the bench does not measure."""

    draining = False
    request_timeout = 30.0

    def __init__(self) -> None:
        self.handler = ASGIHandler(asgi_app, HTTPSettings(parser="httptools"),
                                   logging.getLogger("asgi_core_bench"))
        self.log = self.handler.error_log

    def may_keep_alive(self) -> bool:
        return True

    def opened(self, conn: object) -> None:
        pass

    def forget(self, conn: object) -> None:
        pass

    def request_started(self, method: str, path: str, key: object = None) -> None:
        pass

    def request_finished(self, status: int, key: object = None,
                         duration: float | None = None) -> None:
        pass

    def request_queued(self, seconds: float, shed: bool) -> None:
        pass

    def heartbeat(self) -> None:
        pass


class ObservedBenchHost(BenchHost):
    """A BenchHost whose observer methods are a real multithread worker's, writing a real
    scoreboard row (what the asgi worker pays per request to be seen by the master)."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        from arbiter.scoreboard import Scoreboard
        from arbiter.workers.base import Worker

        worker = Worker.__new__(Worker)  # only what the observer methods read
        worker.slot = Scoreboard(4).writer(0)
        worker.multithread = True
        worker.requests_lock = threading.Lock()
        worker.running = {}
        worker.capacity = 1000
        worker.requests_served = 0
        worker.max_requests = 0
        worker.publish_once_a_turn(asyncio.get_running_loop().call_soon,
                                   argparse.Namespace())  # as an asgi worker does
        self.request_started = worker.request_started
        self.request_finished = worker.request_finished
        self.request_queued = worker.request_queued


HOST = BenchHost


async def serve(count: int) -> int:
    """``count`` keep-alive requests, one after another, on one connection."""
    loop = asyncio.get_running_loop()
    transport = CountingTransport()
    protocol = HTTPProtocol(HOST(), False)
    protocol.connection_made(transport)
    for _ in range(count):
        transport.done = loop.create_future()
        protocol.data_received(REQUEST)
        await transport.done
    return transport.responses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--asyncio", action="store_true", help="asyncio's loop, not uvloop")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--observer", action="store_true",
                        help="a real worker's observer and scoreboard row, not stubs")
    parser.add_argument("--fastapi", action="store_true",
                        help="the FastAPI JSON endpoint of bench_app instead of the hello")
    args = parser.parse_args(argv)
    if args.observer:
        global HOST
        HOST = ObservedBenchHost
    if args.fastapi:
        import bench_app

        global REQUEST, LAST_BYTES
        REQUEST = REQUEST_TEMPLATE % b"/fastapi/items/42"
        LAST_BYTES = bench_app.FASTAPI_JSON[-8:]
    if args.asyncio:
        loop = asyncio.new_event_loop()
    else:
        from arbiter.io.event_loop import new_event_loop
        loop = new_event_loop()
    asyncio.set_event_loop(loop)
    assert loop.run_until_complete(serve(1000)) == 1000  # warm-up, and the answers came
    gc.freeze()
    if args.profile:
        import cProfile
        import pstats
        cProfile.runctx("loop.run_until_complete(serve(args.requests))", globals(), locals(),
                        "/tmp/asgi_core_bench.prof")
        pstats.Stats("/tmp/asgi_core_bench.prof").sort_stats("tottime").print_stats(30)
        return 0
    per_request = []
    for _ in range(args.rounds):
        started = time.process_time()
        loop.run_until_complete(serve(args.requests))
        per_request.append((time.process_time() - started) / args.requests * 1e6)
    print(f"asgi core CPU per keep-alive request ({type(loop).__module__}): "
          f"median {statistics.median(per_request):.2f} µs "
          f"(rounds: {', '.join(f'{v:.2f}' for v in per_request)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
