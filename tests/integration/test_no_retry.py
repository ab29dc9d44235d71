"""Reloads and recycles drop no request, for a client that never retries.

nginx never retries a POST, and a kept-alive connection that a stopping
worker closes while the client sends on it is a failed request. The clients
here count any error as a failure -- a reset on a reused connection
included -- on every worker type: a Python closed-loop client straight to
arbiter, and the same client through a real nginx with upstream keep-alive
(when nginx is installed), while the master is sent HUPs or ``max_requests``
recycles the workers.
"""

from __future__ import annotations

import http.client
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest
from harness import asgi_twin, free_port, nginx_binary, running_nginx, wait_for

pytestmark = pytest.mark.timeout(90)
LOAD_SECONDS = 2.0  # of load per test, with three HUPs in it (or recycles every 40 requests)

APP = """
def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok %d" % len(body)]
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {base}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {base}/access.log;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def closed_loop(port: int, clients: int, seconds: float) -> tuple[int, list[str]]:
    """``clients`` threads POST on kept-alive connections for ``seconds``, never
    retrying; (answers, failures)."""
    failures: list[str] = []
    answered = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        while time.monotonic() < stop_at:
            try:
                conn.request("POST", "/", body=b"x" * 300)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or body != b"ok 300":
                    raise AssertionError(f"{resp.status} {body[:60]!r}")
                with lock:
                    answered[0] += 1
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()  # the server said so: a new connection, not a retry
            except Exception as exc:  # noqa: BLE001 -- every failure counts
                with lock:
                    failures.append(repr(exc))
                conn.close()
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return answered[0], failures


def start(server, worker_type: str, extra: str = "") -> None:
    server.write_app(asgi_twin(APP, worker_type))
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
        worker_type: {worker_type}
        graceful_timeout: 10
    """) + extra)
    server.start("-c", "server.yaml")
    server.wait_workers(2)


def hup_while(server, seconds: float, hups: int) -> threading.Thread:
    def send() -> None:
        for _ in range(hups):
            time.sleep(seconds / (hups + 1))
            server.signal(signal.SIGHUP)
    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.mark.parametrize("mode", ["hup", "recycle"])
def test_no_request_fails_on_reload_or_recycle(server, worker_type, mode):
    start(server, worker_type, "max_requests: 40\n" if mode == "recycle" else "")
    sender = hup_while(server, LOAD_SECONDS, 3) if mode == "hup" else None
    answered, failures = closed_loop(server.port, 6, LOAD_SECONDS)
    if sender is not None:
        sender.join(10)
    assert not failures, f"{len(failures)} of {answered + len(failures)}: {failures[:3]}"
    assert answered > 100
    if mode == "hup":
        wait_for(lambda: server.stderr.count("reload complete") >= 1, 20,
                 message="a reload to complete")
    else:
        assert "reached max_requests" in server.stderr


@pytest.mark.parametrize("mode", ["hup", "recycle"])
def test_no_502_behind_nginx_with_upstream_keepalive(server, worker_type, mode, tmp_path: Path):
    nginx_binary()  # or the test is skipped, saying why
    start(server, worker_type, "max_requests: 40\n" if mode == "recycle" else "")
    port = free_port()
    base = tmp_path / "nginx"
    base.mkdir()
    conf = NGINX_CONF.format(base=base, upstream=server.port, port=port)

    def nginx_answers() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False
    with running_nginx(base, conf, port, ready=nginx_answers):
        sender = hup_while(server, LOAD_SECONDS, 3) if mode == "hup" else None
        answered, failures = closed_loop(port, 6, LOAD_SECONDS)
        if sender is not None:
            sender.join(10)
    bad_gateway = [line for line in (base / "access.log").read_text().splitlines()
                   if '" 502 ' in line]
    assert not failures and not bad_gateway, (
        f"{len(failures)} failed, {len(bad_gateway)} x 502 of {answered}: {failures[:3]}")
    assert answered > 100
