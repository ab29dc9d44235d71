"""Utilization and the status page, as an autoscaler and an operator see them.

Real ``arbiter`` with ``admin_bind`` and a control socket: requests that
take 0.5 s each make the worker that served them busy, which
``arbiter_worker_utilization`` and ``arbiter_utilization`` in ``/metrics``
and ``arbiter ctl status`` (JSON and the table) show, for the preforked,
threaded, pooled, forked and asgi types; a request still running counts as
it runs. ``GET /`` on the admin listener is an HTML page with a row per
worker, the request a worker runs escaped (a client chose its path), no
script and nothing loaded from elsewhere. (The browser check is
``scripts/status_page_screenshot.py``: the suite needs no Chromium.)
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import textwrap
import threading

import pytest
from harness import ARBITER, free_port, http_request, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)

WSGI_APP = """
import os, time
RELEASED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "released")

def app(environ, start_response):
    if environ["PATH_INFO"].startswith("/slow") and environ.get("QUERY_STRING") == "held":
        deadline = time.monotonic() + 30  # runs until the test creates the file "released"
        while not os.path.exists(RELEASED) and time.monotonic() < deadline:
            time.sleep(0.02)
    elif environ["PATH_INFO"].startswith("/slow"):
        time.sleep(float(environ.get("QUERY_STRING") or 0.5))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""

ASGI_APP = """
import asyncio
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"].startswith("/slow"):
        await asyncio.sleep(float(scope["query_string"] or 0.5))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})
"""

HOSTILE_PATH = "/slow/<script>alert('owned')</script>\"&x"


def start(server, worker_type: str, workers: int = 2) -> int:
    """Start arbiter with admin_bind and a control socket; return the admin port."""
    admin_port = free_port()
    server.write_app(ASGI_APP if worker_type == "asgi" else WSGI_APP)
    # threaded and forked: capacity is max_connections; a small one makes 0.5 s show
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: {workers}
        worker_type: {worker_type}
        max_connections: 4
        admin_bind: 127.0.0.1:{admin_port}
        control_socket: control.sock
        graceful_timeout: 5
    """))
    server.start("-c", "server.yaml")

    def ready() -> bool:
        try:
            return http_request(admin_port, "/readyz", timeout=2).status == 200
        except OSError:
            return False

    wait_for(ready, 15, message="/readyz 200")
    return admin_port


def utilization_metrics(admin_port: int) -> tuple[dict, dict]:
    """({(worker, generation, window): value}, {window: value}) from /metrics."""
    resp = http_request(admin_port, "/metrics")
    assert resp.status == 200
    per_worker, whole = {}, {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "arbiter_worker_utilization":
                per_worker[labels["worker"], labels["generation"], labels["window"]] = \
                    sample.value
            elif sample.name == "arbiter_utilization":
                whole[labels["window"]] = sample.value
    return per_worker, whole


def ctl(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ARBITER, "ctl", "-c", "server.yaml", *args], cwd=server.workdir,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("worker_type", ["preforked", "threaded", "pooled", "forked", "asgi"])
def test_a_busy_worker_shows_utilization(server, worker_type):
    admin_port = start(server, worker_type)
    before = {w["pid"]: w["requests"]
              for w in json.loads(ctl(server, "status", "--json").stdout)["workers"]}
    for _ in range(4):
        assert server.get("/slow").status == 200  # 0.5 s each, one after the other

    # Every slow request was served by a worker that shows itself busy (it spent at
    # least 0.5 s of the last 10 s in a request). A worker counts a request just after
    # its client has the answer, and the start-up probe's may be counted after `before`
    # was read: so, polled, and the sum compared, not each worker's count.
    def settled() -> dict | None:
        status = json.loads(ctl(server, "status", "--json").stdout)
        served = [w for w in status["workers"] if w["utilization"]["10s"] > 0]
        grown = sum(w["requests"] - before.get(w["pid"], 0) for w in served)
        return status if grown >= 4 else None

    status = wait_for(settled, 5, interval=0.2, message="the 4 slow requests on busy workers")
    served = [w for w in status["workers"] if w["utilization"]["10s"] > 0]
    for worker in served:
        assert 0 < worker["utilization"]["10s"] <= 1, worker
        assert 0 < worker["utilization"]["60s"] <= 1, worker
    assert 0 < status["utilization"]["10s"] <= 1, status["utilization"]
    assert set(status["utilization"]) == {"10s", "60s"}

    per_worker, whole = utilization_metrics(admin_port)
    for worker in served:
        for window in ("10s", "60s"):
            value = per_worker[str(worker["number"]), str(worker["generation"]), window]
            assert 0 < value <= 1, (worker, window, value)
    assert 0 < whole["10s"] <= 1 and 0 < whole["60s"] <= 1, whole
    assert len(per_worker) == 2 * len(status["workers"])  # two windows per worker

    table = ctl(server, "status")
    assert table.returncode == 0, table.stderr
    assert re.search(r"utilization: \d+% \(10s\), \d+% \(60s\)", table.stdout), table.stdout
    assert "UTIL 10s/60s" in table.stdout


def test_a_request_counts_while_it_runs(server):
    """A long request makes its worker busy before it ends (not only once it finishes)."""
    admin_port = start(server, "preforked", workers=1)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (server.get("/slow?held", timeout=15),
                                              done.set()))
    thread.start()
    try:
        def busy_now() -> float:
            per_worker, whole = utilization_metrics(admin_port)
            return whole["10s"] if per_worker[("1", "1", "10s")] > 0.2 else 0.0

        wait_for(busy_now, 10, message="utilization above 20% with the request running")
        assert not done.is_set(), "the request ended before utilization rose"
    finally:
        (server.workdir / "released").touch()  # the request ends only now
        thread.join(20)
    assert done.is_set()


def test_the_status_page(server):
    admin_port = start(server, "preforked", workers=3)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:  # a request with a hostile path, running while the page is read
        sock.sendall(f"GET {HOSTILE_PATH}?held HTTP/1.1\r\nHost: x\r\n\r\n".encode())

        def page_with_request() -> str | None:
            text = http_request(admin_port, "/").text
            return text if "alert(" in text else None

        page = wait_for(page_with_request, 10, message="the status page shows the request")
    finally:
        (server.workdir / "released").touch()  # the request ends once the page is read
        sock.close()

    resp = http_request(admin_port, "/")
    assert resp.status == 200
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<tr class="worker">') == 3  # a row per worker
    assert '<meta http-equiv="refresh"' in page
    # The path is shown escaped, never as markup.
    assert "<script" not in page and "alert('owned')" not in page
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;&quot;&amp;x" in page
    # Nothing external: no link, script, image, frame, font or CSS url.
    for needle in ("<link", "<img", "<iframe", "src=", "url(", "@import", "http://",
                   "https://", "//"):
        assert needle not in page.replace("</", "<"), needle
    # The master's figures are on it.
    for text in ("Utilization", "Restarts by reason", "Reloads", "max_requests"):
        assert text in page, text

    head = http_request(admin_port, "/", method="HEAD")
    assert head.status == 200 and head.body == b""
