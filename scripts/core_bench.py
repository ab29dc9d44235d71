#!/usr/bin/env python3
"""In-process microbenchmark of arbiter's per-request core: no sockets, no workers.

Owns the measurement of what one keep-alive request costs in Python inside
arbiter -- the bytes of a request head fed to a connection's
:class:`~arbiter.http.lifecycle.Lifecycle`, the head parsed, the environ
built, the WSGI app called through :class:`~arbiter.http.app_response.AppResponse`,
the response bytes pulled, the request finished and the connection back to
idle -- exactly the calls the reactor and the blocking driver make, minus the
``recv``/``send`` syscalls. Whatever a server spends per request beyond this
figure is syscalls, polling and driver overhead.

Not run in CI: a tool for profiling the hot path. Usage::

    python scripts/core_bench.py [--requests 200000] [--parser httptools|h11]
        [--rounds 5] [--access-log] [--profile]

``--profile`` runs one round under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arbiter.http import HTTPConnection, HTTPSettings, WSGIHandler  # noqa: E402
from arbiter.http.app_response import AppResponse  # noqa: E402
from arbiter.http.inputs import EMPTY_INPUT  # noqa: E402
from arbiter.http.lifecycle import READ, RESPOND, Lifecycle  # noqa: E402
from arbiter.http.parsers import make_head_parser  # noqa: E402
from arbiter.http.wsgi import NULL_OBSERVER  # noqa: E402
from arbiter.logs import AccessLog  # noqa: E402

REQUEST = (b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n"
           b"Accept: */*\r\n\r\n")
BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def hello(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


def make_connection(parser: str, access_log: bool) -> Lifecycle:
    log = logging.getLogger("core_bench")
    access = AccessLog(os.devnull) if access_log else None
    handler = WSGIHandler(hello, HTTPSettings(parser=parser), log, access)
    return Lifecycle(handler, HTTPConnection(handler.settings, make_head_parser(parser)),
                     ("127.0.0.1", 50000), ("127.0.0.1", 8000), time.monotonic(),
                     observer=NULL_OBSERVER)


def serve(lc: Lifecycle, count: int) -> int:
    """Serve ``count`` keep-alive requests; return the response bytes produced."""
    handler = lc.handler
    produced = 0
    monotonic = time.monotonic
    for _ in range(count):
        now = monotonic()
        lc.received(REQUEST, now)
        action = lc.next(now)
        assert action == RESPOND, action
        request = lc.request
        environ = handler.build_environ(request, lc.info, EMPTY_INPUT)
        response = AppResponse(handler, environ, request, lc.may_keep_alive,
                               time.perf_counter(), files=True)
        response.start()
        lc.writing(now)
        while (piece := response.pull()) is not None:
            produced += len(piece)
        lc.response_done(response.finish(), monotonic())
        assert lc.next(now) == READ
    return produced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parser", default="httptools", choices=["httptools", "h11"])
    parser.add_argument("--access-log", action="store_true",
                        help="write the access log (to /dev/null)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    lc = make_connection(args.parser, args.access_log)
    produced = serve(lc, 1000)  # warm-up, and check the response
    assert produced > 1000 * len(BODY)
    gc.freeze()
    if args.profile:
        import cProfile
        import pstats
        cProfile.runctx("serve(lc, args.requests)", globals(), locals(), "/tmp/core_bench.prof")
        pstats.Stats("/tmp/core_bench.prof").sort_stats("tottime").print_stats(25)
        return 0
    per_request = []
    for _ in range(args.rounds):
        started = time.process_time()  # CPU time: steadier than wall time on a busy box
        serve(lc, args.requests)
        per_request.append((time.process_time() - started) / args.requests * 1e6)
    print(f"core CPU per keep-alive request ({args.parser}): "
          f"median {statistics.median(per_request):.2f} µs "
          f"(rounds: {', '.join(f'{v:.2f}' for v in per_request)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
