"""The ``threaded`` worker's pattern: a thread per connection, bounded, in one process."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import http_request, pid_alive, preconnected_gets, wait_for

pytestmark = pytest.mark.timeout(60)

# /slow?S sleeps S seconds and answers "<pid> <requests running when it started>":
# each running request holds a marker file, so the count spans threads and processes.
APP = """
import os, threading, time

RUNNING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "running")
os.makedirs(RUNNING, exist_ok=True)

def app(environ, start_response):
    path = environ["PATH_INFO"]
    running = 0
    if path == "/slow":
        marker = os.path.join(RUNNING, f"{os.getpid()}-{threading.get_ident()}")
        open(marker, "w").close()
        try:
            running = len(os.listdir(RUNNING))
            time.sleep(float(environ.get("QUERY_STRING") or 1))
        finally:
            os.unlink(marker)
    if path == "/until-released":  # runs until the test creates the file "released"
        open("waiting", "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists("released") and time.monotonic() < deadline:
            time.sleep(0.02)
    if path == "/hang":
        open("hang-started", "w").close()
        hang_forever()
    body = f"{os.getpid()} {running}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

def hang_forever():
    while True:
        time.sleep(0.2)
"""


def start(server, extra: str = "") -> int:
    server.write_app(APP)
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        worker_type: threaded
        {extra}
    """)
    server.start("-c", "server.yaml")
    (worker,) = server.wait_workers(1)
    return worker


def concurrent_gets(port: int, path: str, count: int) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: http_request(port, path, timeout=30), range(count)))


def test_slow_requests_run_in_parallel_in_one_process(server):
    worker = start(server)
    started = time.monotonic()
    responses = concurrent_gets(server.port, "/slow?1", 8)
    elapsed = time.monotonic() - started
    assert [r.status for r in responses] == [200] * 8
    assert {int(r.text.split()[0]) for r in responses} == {worker}
    assert elapsed < 4, f"8 requests of 1 s took {elapsed:.1f} s: not in parallel"
    assert max(int(r.text.split()[1]) for r in responses) >= 4


def test_max_connections_bounds_the_threads_and_the_rest_wait(server):
    start(server, "max_connections: 3")
    started = time.monotonic()
    responses = preconnected_gets(server.port, "/slow?1", 6)
    elapsed = time.monotonic() - started
    assert [r.status for r in responses] == [200] * 6  # none refused, none failed
    peak = max(int(r.text.split()[1]) for r in responses)
    assert peak <= 3, f"{peak} requests ran at once with max_connections: 3"
    assert peak == 3
    assert elapsed >= 1.9, "6 requests of 1 s, 3 at a time, need two rounds"
    # while clients queued at the bound, the first round was told to close (threads turn over)
    assert sum(r.headers.get("connection") == "close" for r in responses) >= 3


def test_a_hung_request_recycles_the_worker_and_the_others_finish(server):
    old = start(server, "timeout: 1\n        graceful_timeout: 2\n        log: {level: debug}")
    threading.Thread(target=lambda: _ignore(http_request, server.port, "/hang", timeout=30),
                     daemon=True).start()
    wait_for(lambda: (server.workdir / "hang-started").exists(), message="the hung request")
    result = {}

    def parallel() -> None:
        result["resp"] = http_request(server.port, "/until-released", timeout=30)

    parallel_thread = threading.Thread(target=parallel)
    parallel_thread.start()
    wait_for(lambda: (server.workdir / "waiting").exists(), message="the parallel request")
    log = server.wait_log("timed out", timeout=15)
    assert "GET /hang" in log
    wait_for(lambda: "hang_forever" in server.stderr, message="the hung thread's traceback")
    # recycled with both requests still running: the parallel one is let go only now
    server.wait_log(f"(pid {old}) stops accepting; 2 connection(s) to finish")
    assert parallel_thread.is_alive()
    (server.workdir / "released").touch()
    parallel_thread.join(20)
    assert result["resp"].status == 200
    assert int(result["resp"].text.split()[0]) == old  # finished on the recycled worker
    wait_for(lambda: not pid_alive(old), timeout=15, message="the old worker to go")
    (new,) = server.wait_workers(1)
    assert new != old
    assert int(server.get("/").text.split()[0]) == new


def _ignore(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except OSError:
        pass
