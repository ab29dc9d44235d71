"""The ``forked`` worker's pattern: a fresh child per connection, bounded, reaped, policed."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import children_of, http_request, pid_alive, preconnected_gets, wait_for

pytestmark = pytest.mark.timeout(60)

# /slow?S sleeps S seconds and answers "<pid> <requests running when it started>":
# each running request holds a marker file, so the count spans processes.
APP = """
import os, time

RUNNING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "running")
os.makedirs(RUNNING, exist_ok=True)

def app(environ, start_response):
    path = environ["PATH_INFO"]
    running = 0
    if path == "/slow":
        marker = os.path.join(RUNNING, str(os.getpid()))
        open(marker, "w").close()
        try:
            running = len(os.listdir(RUNNING))
            time.sleep(float(environ.get("QUERY_STRING") or 1))
        finally:
            os.unlink(marker)
    if path == "/hang":
        with open("hang-pid", "w") as f:
            f.write(str(os.getpid()))
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
        worker_type: forked
        {extra}
    """)
    server.start("-c", "server.yaml")
    (worker,) = server.wait_workers(1)
    return worker


def no_children(worker: int) -> bool:
    """No child left, not even a zombie (children_of lists zombies too)."""
    return children_of(worker) == []


def test_each_connection_is_served_by_a_fresh_child(server):
    worker = start(server)
    pids = [int(server.get("/", headers={"Connection": "close"}).text.split()[0])
            for _ in range(3)]
    assert len(set(pids)) == 3
    assert worker not in pids and server.pid not in pids
    wait_for(lambda: no_children(worker), message="every child reaped")
    assert server.workers() == [worker]


def test_max_connections_bounds_the_children_and_the_rest_wait(server):
    worker = start(server, "max_connections: 2")
    seen = set()
    peak_children = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak_children
        while not done.is_set():
            kids = children_of(worker)
            seen.update(kids)
            peak_children = max(peak_children, len(kids))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        # all five connected before any answer: a busy box cannot start them late
        responses = preconnected_gets(server.port, "/slow?1", 5)
    finally:
        done.set()
        watcher.join()
    elapsed = time.monotonic() - started
    assert [r.status for r in responses] == [200] * 5  # none refused, none failed
    peak = max(int(r.text.split()[1]) for r in responses)
    assert peak <= 2 and peak_children <= 2, (peak, peak_children)
    assert elapsed >= 2.8, "5 requests of 1 s, 2 at a time, need three rounds"
    assert len({int(r.text.split()[0]) for r in responses}) == 5
    # while clients queued at the bound, children answered with Connection: close
    assert sum(r.headers.get("connection") == "close" for r in responses) >= 2
    # reaped promptly: no zombie stays behind
    wait_for(lambda: no_children(worker), timeout=5, message="every child reaped")
    for pid in seen:
        assert not pid_alive(pid)


def test_a_hung_child_is_killed_with_its_traceback_and_the_worker_serves_on(server):
    worker = start(server, "timeout: 1")
    threading.Thread(target=lambda: _ignore(http_request, server.port, "/hang", timeout=30),
                     daemon=True).start()
    hang_pid_file = server.workdir / "hang-pid"
    wait_for(lambda: hang_pid_file.exists() and hang_pid_file.read_text(),
             message="the hung request")
    hung = int(hang_pid_file.read_text())
    # meanwhile the worker serves others
    assert server.get("/").status == 200
    log = server.wait_log("timed out", timeout=15)
    assert f"child pid {hung}" in log and "GET /hang" in log
    wait_for(lambda: "hang_forever" in server.stderr, message="the child's traceback")
    wait_for(lambda: not pid_alive(hung), message="the hung child to be killed")
    wait_for(lambda: no_children(worker), message="the killed child reaped")
    assert server.workers() == [worker]  # the worker itself was not replaced
    resp = server.get("/")
    assert resp.status == 200 and int(resp.text.split()[0]) not in (worker, hung)


def test_term_lets_the_children_finish_their_response(server):
    worker = start(server)
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(http_request, server.port, "/slow?1.5", timeout=30)
                   for _ in range(3)]
        running = server.workdir / "running"
        wait_for(lambda: len(list(running.iterdir())) == 3, message="three requests in the app")
        assert len(children_of(worker)) == 3
        server.signal(signal.SIGTERM)
        responses = [f.result() for f in futures]
    assert [r.status for r in responses] == [200] * 3
    assert server.wait_exit(20) == 0


def _ignore(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except OSError:
        pass
