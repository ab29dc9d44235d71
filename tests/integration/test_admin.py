"""The admin listener (`admin_bind`) as an operator and Kubernetes use it.

/metrics parsed with prometheus_client's own parser, counters compared with
the requests actually sent (also across a worker recycled by max_requests);
/livez; /readyz flipping during startup, drain (TERM with drain_delay) and a
crash loop; /status as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import time

import pytest
from harness import asgi_twin, free_port, http_request, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)

APP = """
import os
def app(environ, start_response):
    status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""

# Its import runs until the test creates the file "may-load" (at most 30 s).
SLOW_IMPORT_APP = """
import os, time
deadline = time.monotonic() + 30
while not os.path.exists("may-load") and time.monotonic() < deadline:
    time.sleep(0.02)
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""

# Loads only while the file "broken" does not exist (read at import, in each new worker).
FRAGILE_APP = """
import os
if os.path.exists("broken"):
    raise RuntimeError("the marker file 'broken' exists")
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def configure(server, app: str = APP, worker_type: str = "preforked", workers: int = 2,
              extra: str = "") -> int:
    """Write the app and a config with admin_bind; return the admin port."""
    admin_port = free_port()
    server.write_app(asgi_twin(app, worker_type))
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: {workers}
        worker_type: {worker_type}
        admin_bind: 127.0.0.1:{admin_port}
        graceful_timeout: 5
    """) + extra)
    return admin_port


def scrape(admin_port: int) -> dict[tuple[str, frozenset], float]:
    """GET /metrics and parse it: {(sample name, labels): value}."""
    resp = http_request(admin_port, "/metrics")
    assert resp.status == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def readyz(admin_port: int) -> tuple[int, str] | None:
    """(status, body) of /readyz; None while nothing listens."""
    try:
        resp = http_request(admin_port, "/readyz", timeout=2)
    except OSError:
        return None
    return resp.status, resp.text


def wait_ready(server, admin_port: int) -> None:
    """Wait for /readyz 200 without sending the app a request (so counts start at 0)."""
    def ready() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"arbiter exited:\n{server.stderr}")
        return readyz(admin_port) == (200, "ready\n")
    wait_for(ready, 15, message="/readyz 200")


def drive(port: int, clients: int, seconds: float, requests: list,
          keep_alive: bool = False) -> list[str]:
    """``clients`` threads send GET /, POST / and GET /missing for ``seconds``, appending
    (method, status) to ``requests``; they never retry; returns the failures.

    ``keep_alive``: half the clients keep their connection open between requests
    (otherwise every request is a new connection with ``Connection: close``)."""
    import http.client
    import threading

    failures: list[str] = []
    stop_at = time.monotonic() + seconds

    def client(number: int) -> None:
        conn = None
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            method, path, body = [("GET", "/", None), ("POST", "/", b"x" * 10),
                                  ("GET", "/missing", None)][i % 3]
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                close = not keep_alive or number % 2 == 0
                conn.request(method, path, body=body,
                             headers={"Connection": "close"} if close else {})
                resp = conn.getresponse()
                resp.read()
                requests.append((method, resp.status))
                if close or resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{method} {path}: {exc!r}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return failures


def test_metrics_counters_are_exact_across_recycled_workers(server, worker_type):
    """Workers recycled under concurrent load: every request counted once, none lost."""
    admin_port = configure(server, worker_type=worker_type, extra="max_requests: 7\n")
    server.start("-c", "server.yaml", wait=False)
    wait_ready(server, admin_port)
    requests: list = []
    failures = drive(server.port, 3, 2.0, requests)
    assert not failures, failures[:5]
    sent = len(requests)
    gets = sum(1 for method, _ in requests if method == "GET")
    posts = sent - gets
    not_found = sum(1 for _, status in requests if status == 404)
    assert sent > 2 * 7 and not_found > 0

    def settled() -> dict | None:
        samples = scrape(admin_port)
        if value(samples, "arbiter_requests_in_flight") or value(samples,
                                                                  "arbiter_workers",
                                                                  state="draining"):
            return None  # a recycled worker is still on its way out
        if value(samples, "arbiter_requests_total") < sent:
            return None
        return samples
    after = wait_for(settled, message=f"{sent} requests counted, recycles done")
    assert value(after, "arbiter_requests_total") == sent
    assert value(after, "arbiter_responses_total", status_class="2xx") == sent - not_found
    assert value(after, "arbiter_responses_total", status_class="4xx") == not_found
    assert value(after, "arbiter_responses_total", status_class="5xx") == 0
    assert value(after, "arbiter_requests_by_method_total", method="GET") == gets
    assert value(after, "arbiter_requests_by_method_total", method="POST") == posts
    assert value(after, "arbiter_request_duration_seconds_count") == sent
    assert value(after, "arbiter_request_duration_seconds_bucket", le="+Inf") == sent
    assert value(after, "arbiter_request_duration_seconds_sum") > 0
    assert value(after, "arbiter_worker_restarts_total", reason="max_requests") >= 1
    assert value(after, "arbiter_worker_restarts_total", reason="crash") == 0
    assert value(after, "arbiter_reloads_total", outcome="succeeded") == 0
    assert value(after, "arbiter_ready") == 1
    assert value(after, "arbiter_generation") == 1
    [info] = [dict(labels) for name, labels in after if name == "arbiter_info"]
    assert info["worker_type"] == worker_type
    workers = sum(value(after, "arbiter_workers", state=s)
                  for s in ("booting", "idle", "busy", "draining"))
    assert workers >= 2
    assert value(after, "arbiter_worker_memory_bytes", kind="rss") > 0
    listener = f"127.0.0.1:{server.port}"
    assert value(after, "arbiter_listen_queue_depth", listener=listener) == 0
    assert value(after, "arbiter_listen_queue_max", listener=listener) > 0

    assert http_request(admin_port, "/livez").text == "ok\n"
    status = http_request(admin_port, "/status")
    assert status.headers["content-type"] == "application/json"
    data = json.loads(status.body)
    assert data["master"]["pid"] == server.pid
    assert data["master"]["worker_type"] == worker_type
    assert data["requests"]["total"] == sent


def test_forked_counts_requests_while_the_connection_stays_open(server):
    """A forked child's requests show in /metrics as they finish, not when the child
    exits (a long keep-alive connection used to be invisible, then counted late)."""
    import http.client

    admin_port = configure(server, worker_type="forked", workers=1, extra="keepalive: 60\n")
    server.start("-c", "server.yaml", wait=False)
    wait_ready(server, admin_port)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        wait_for(lambda: value(scrape(admin_port), "arbiter_requests_total") == 3, 5,
                 message="3 requests counted while the connection is open")
        assert conn.sock is not None  # still the same connection: the child still runs
        samples = scrape(admin_port)
        assert value(samples, "arbiter_responses_total", status_class="2xx") == 3
        assert value(samples, "arbiter_request_duration_seconds_count") == 3
    finally:
        conn.close()
    wait_for(lambda: not value(scrape(admin_port), "arbiter_requests_in_flight"))
    assert value(scrape(admin_port), "arbiter_requests_total") == 3  # not counted again


def test_readyz_stays_200_through_a_recycle_storm(server, worker_type):
    """max_requests recycling is routine: a probe with failureThreshold 1 never sees 503."""
    import threading

    admin_port = configure(server, worker_type=worker_type, extra="max_requests: 20\n")
    server.start("-c", "server.yaml", wait=False)
    wait_ready(server, admin_port)
    probes: list = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            probes.append(readyz(admin_port))
            done.wait(0.005)
    prober = threading.Thread(target=probe)
    prober.start()
    requests: list = []
    try:
        failures = drive(server.port, 3, 3.0, requests)
    finally:
        done.set()
        prober.join(10)
    assert not failures, failures[:5]
    recycled = wait_for(lambda: value(scrape(admin_port), "arbiter_worker_restarts_total",
                                      reason="max_requests"), message="a recycle")
    assert len(requests) > 3 * 20 and recycled >= 2
    bad = [p for p in probes if p != (200, "ready\n")]
    assert len(probes) > 50 and not bad, f"{len(bad)} of {len(probes)} probes: {bad[:3]}"


def test_listen_queue_depth_counts_unaccepted_connections(server):
    """WINCH stops every worker; the master keeps the socket: connections queue up."""
    admin_port = configure(server, workers=1)
    server.start("-c", "server.yaml")
    server.wait_workers(1)
    server.signal(signal.SIGWINCH)
    wait_for(lambda: not server.workers(), message="workers stopped by WINCH")
    listener = f"127.0.0.1:{server.port}"
    waiting = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        wait_for(lambda: value(scrape(admin_port), "arbiter_listen_queue_depth",
                               listener=listener) == 3, message="3 connections in the queue")
        assert readyz(admin_port) == (503, "not ready: no workers (stopped by WINCH; HUP "
                                           "starts them)\n")
    finally:
        for sock in waiting:
            sock.close()


def test_admin_answers_probes_methods_and_bad_requests(server):
    admin_port = configure(server, workers=1)
    server.start("-c", "server.yaml")
    # A slow client holding a half-sent request does not block the master.
    slow = socket.create_connection(("127.0.0.1", admin_port))
    slow.sendall(b"GET /livez HTTP/1.1\r\n")
    try:
        assert http_request(admin_port, "/livez").status == 200
        head = http_request(admin_port, "/livez", method="HEAD")
        assert head.status == 200 and head.body == b"" and head.headers["connection"] == "close"
        assert http_request(admin_port, "/nope").status == 404
        post = http_request(admin_port, "/metrics", method="POST", body=b"x" * 10000)
        assert post.status == 405 and post.headers["allow"] == "GET, HEAD"
        with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as raw:
            raw.sendall(b"NOT HTTP\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 400 ")
    finally:
        slow.close()


def test_admin_bind_in_use_exits_2(server):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        server.write_app(APP)
        server.write_config(f"""
            app: app:app
            bind: ["127.0.0.1:{server.port}"]
            admin_bind: 127.0.0.1:{taken.getsockname()[1]}
        """)
        server.start("-c", "server.yaml", wait=False)
        assert server.wait_exit() == 2
        assert "admin_bind" in server.stderr
    finally:
        taken.close()


def test_readyz_is_503_until_a_worker_has_loaded_the_app(server):
    admin_port = configure(server, app=SLOW_IMPORT_APP, workers=1)
    server.start("-c", "server.yaml", wait=False)
    seen = []

    def ready() -> bool:
        answer = readyz(admin_port)
        if answer is not None:
            seen.append(answer)
        return answer is not None and answer[0] == 200
    wait_for(lambda: seen or ready(), timeout=15, message="a /readyz answer")
    (server.workdir / "may-load").touch()  # the worker's import of the app ends only now
    wait_for(ready, timeout=15, message="/readyz 200")
    assert seen[0] == (503, "not ready: starting (no worker has loaded the app yet)\n")
    assert seen[-1] == (200, "ready\n")
    assert server.get("/").status == 200
    assert http_request(admin_port, "/livez").status == 200


def test_readyz_is_503_while_draining_and_the_app_still_serves(server):
    admin_port = configure(server, workers=1, extra="drain_delay: 3\n")
    server.start("-c", "server.yaml")
    assert readyz(admin_port) == (200, "ready\n")
    server.signal(signal.SIGTERM)
    wait_for(lambda: (readyz(admin_port) or (0,))[0] == 503, message="/readyz 503")
    status, body = readyz(admin_port)
    assert status == 503 and body.startswith("not ready: draining")
    assert server.get("/").status == 200  # still accepting during drain_delay
    assert value(scrape(admin_port), "arbiter_draining") == 1
    assert server.wait_exit(timeout=15) == 0
    assert readyz(admin_port) is None  # the admin listener is closed


def test_readyz_is_503_in_a_crash_loop_and_recovers(server):
    admin_port = configure(server, app=FRAGILE_APP, workers=1)
    server.start("-c", "server.yaml")
    [worker] = server.wait_workers(1)
    assert readyz(admin_port) == (200, "ready\n")
    marker = server.workdir / "broken"
    marker.write_text("")
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: "crash-loop backoff" in (readyz(admin_port) or (0, ""))[1],
             message="/readyz reporting the crash loop")
    assert readyz(admin_port)[0] == 503
    assert value(scrape(admin_port), "arbiter_crash_loop_failures") >= 1
    marker.unlink()
    start = time.monotonic()
    wait_for(lambda: readyz(admin_port) == (200, "ready\n"), timeout=20,
             message="/readyz 200 after the fix")
    assert time.monotonic() - start < 20
    after = scrape(admin_port)
    assert value(after, "arbiter_worker_restarts_total", reason="crash") >= 2
    assert value(after, "arbiter_crash_loop_failures") == 0


BLOCKING_WSGI_APP = """
import time
def app(environ, start_response):
    if environ["PATH_INFO"] == "/block":
        time.sleep(1.2)  # blocks the reactor
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def test_an_app_blocking_the_evented_reactor_is_reported_with_its_request_and_counted(server):
    """reactor_block_warning on evented: an idle reactor is not "blocked"; an app that
    blocks it is logged once with the blocking line and the request, then counted."""
    admin_port = configure(server, app=BLOCKING_WSGI_APP, worker_type="evented", workers=1,
                           extra="reactor_block_warning: 0.3\n")
    server.start("-c", "server.yaml")
    server.wait_workers(1)
    assert server.get("/").status == 200
    time.sleep(1.0)  # idle for over three thresholds: waiting for clients is no stall
    samples = scrape(admin_port)
    assert value(samples, "arbiter_reactor_stalls_total") == 0
    assert "has been blocked" not in server.stderr
    assert http_request(server.port, "/block", timeout=10).status == 200
    log = server.wait_log("the event loop turns again after", timeout=10)
    assert log.count("the event loop has been blocked for") == 1
    assert "serving GET /block (" in log
    assert "time.sleep(1.2)  # blocks the reactor" in log  # the blocking call, named
    samples = scrape(admin_port)
    assert value(samples, "arbiter_reactor_stalls_total") == 1
    assert 0.8 <= value(samples, "arbiter_reactor_blocked_seconds_total") <= 5
