"""Queue time and load shedding, as an operator and a client see them.

A request that waits -- in the listen backlog of a busy preforked worker, in
a kept-alive connection while every thread is busy, for a blocked event loop
-- is measured from when its first bytes reached the machine (the kernel's
receive timestamp), or from a trusted proxy's ``X-Request-Start``: in the
environ (``arbiter.queue_time``), the ASGI scope's extensions, the access
log's ``%(Q)s`` and the ``arbiter_request_queue_seconds`` histogram. With
``max_queue_time``, a request that already waited longer is answered ``503``
with ``Retry-After`` and the app never sees it (``arbiter_requests_shed_total``).
"""

from __future__ import annotations

import http.client
import textwrap
import threading
import time

import pytest
from harness import free_port, http_request, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)

WSGI_APP = """
import os, time
def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        with open("calls.log", "a") as calls:
            calls.write("call\\n")
        time.sleep(0.4)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr(environ.get("arbiter.queue_time")).encode()]
"""

ASGI_APP = """
import time
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        with open("calls.log", "a") as calls:
            calls.write("call\\n")
        time.sleep(0.4)  # blocks the loop: every other request waits for it
    queued = scope.get("extensions", {}).get("arbiter.queue_time", {}).get("seconds")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": repr(queued).encode()})
"""

# One request at a time per type, so a second client waits.
ONE_AT_A_TIME = {"forked": "max_connections: 1", "threaded": "max_connections: 1",
                 "pooled": "threads: 1"}


def start(server, worker_type: str, extra: str = "") -> int:
    admin_port = free_port()
    server.write_app(ASGI_APP if worker_type == "asgi" else WSGI_APP)
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        worker_type: {worker_type}
        admin_bind: 127.0.0.1:{admin_port}
        reactor_block_warning: 0
        graceful_timeout: 5
        {ONE_AT_A_TIME.get(worker_type, "")}
    """) + extra)
    server.start("-c", "server.yaml")
    server.wait_workers(1)
    return admin_port


def scrape(admin_port: int) -> dict:
    samples = {}
    for family in text_string_to_metric_families(http_request(admin_port, "/metrics").text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def burst(port: int, count: int, path: str = "/slow", spacing: float = 0.05) -> list:
    """``count`` clients, one new connection each, ``spacing`` s apart; in sending order:
    (status, Retry-After, body)."""
    results: list = [None] * count

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            results[i] = (resp.status, resp.getheader("retry-after"), resp.read())
        finally:
            conn.close()

    threads = []
    for i in range(count):
        thread = threading.Thread(target=client, args=(i,))
        thread.start()
        threads.append(thread)
        time.sleep(spacing)
    for thread in threads:
        thread.join(30)
    return results


def calls(server) -> int:
    path = server.workdir / "calls.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_request_waiting_in_the_backlog_knows_how_long(server):
    """Preforked: one worker busy, the others wait in the listen backlog -- unseen by any
    accept-time clock -- and still know how long they waited."""
    admin_port = start(server, "preforked", textwrap.dedent("""
        log:
          access_log: access.log
          access_format: '%(r)s %(s)s Q=%(Q)s'
    """))
    results = burst(server.port, 3)
    waited = [float(body) for _, _, body in results]
    assert [status for status, _, _ in results] == [200, 200, 200]
    assert waited[0] < 0.2
    assert 0.25 < waited[1] < 2.0 and 0.6 < waited[2] < 3.0, waited
    samples = scrape(admin_port)
    count = samples[("arbiter_request_queue_seconds_count", frozenset())]
    assert count >= 3  # and the probes of the start
    assert samples[("arbiter_request_queue_seconds_sum", frozenset())] >= sum(waited) - 0.01
    assert samples[("arbiter_request_queue_seconds_bucket", frozenset({("le", "0.25")}))] \
        <= count - 2  # the two that waited are above 0.25 s
    log = server.workdir / "access.log"
    wait_for(lambda: log.exists() and log.read_text().count("GET /slow") == 3, 10)
    shown = sorted(int(line.rpartition("Q=")[2]) for line in log.read_text().splitlines()
                   if "/slow" in line)
    assert shown[2] > 600_000 and shown[1] > 250_000  # microseconds


@pytest.mark.parametrize("worker_type",
                         ["preforked", "forked", "threaded", "pooled", "evented", "asgi"])
def test_a_request_that_waited_too_long_is_shed_with_503_unread(server, worker_type):
    admin_port = start(server, worker_type, "max_queue_time: 0.2\n")
    results = burst(server.port, 3)
    statuses = [status for status, _, _ in results]
    assert statuses[0] == 200, results
    assert 503 in statuses, results  # they waited ~0.35 s and ~0.3 s behind the first
    for status, retry_after, body in results:
        if status == 503:
            assert retry_after == "1" and body.startswith(b"503 Service Unavailable")
    assert calls(server) == statuses.count(200)  # the app never saw a shed request
    assert http_request(server.port, "/").status == 200  # and the worker serves on
    samples = scrape(admin_port)
    assert samples[("arbiter_requests_shed_total", frozenset())] == statuses.count(503)
    page = http_request(admin_port, "/").text  # the status page has them too
    assert "Queue time / shed" in page
    assert f"<dt>shed (503)</dt><dd>{statuses.count(503)}</dd>" in page, page
    assert samples[("arbiter_responses_total", frozenset({("status_class", "5xx")}))] \
        == statuses.count(503)


def test_a_trusted_proxys_request_start_header_is_the_clock(server):
    start(server, "asgi", "max_queue_time: 5\n")
    now = time.time()
    for value, low, high in ((f"t={now - 2:.3f}", 1.9, 4.0),             # seconds, as nginx
                             (f"t={int((now - 1) * 1000)}", 0.9, 3.0),     # milliseconds
                             (f"t={int((now - 3) * 1e6)}", 2.9, 5.0),      # microseconds
                             ("t=garbage", 0.0, 0.5)):                    # ignored
        resp = http_request(server.port, "/", headers={"X-Request-Start": value})
        assert resp.status == 200
        assert low <= float(resp.body) <= high, (value, resp.body)
    # Waited longer than max_queue_time before it even reached us: shed.
    resp = http_request(server.port, "/", headers={"X-Request-Start": f"t={now - 10:.3f}"})
    assert resp.status == 503 and resp.headers["retry-after"] == "1"


def test_an_untrusted_clients_request_start_header_is_ignored(server):
    start(server, "threaded", "max_queue_time: 1\nforwarded_allow_ips: []\n")
    resp = http_request(server.port, "/",
                        headers={"X-Request-Start": f"t={time.time() - 100:.3f}"})
    assert resp.status == 200 and float(resp.body) < 0.5
