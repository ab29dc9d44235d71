"""The dev loop: ``arbiter --reload`` runs a saved change as the reload transaction.

A change to a ``*.py`` file of the project (or to the config file) reloads
the workers; a change that does not import -- a syntax error -- keeps the old
code serving and the log says where the error is; the next good save reloads.
Polling is forced in one test (``ARBITER_RELOAD_POLL=1``); the other uses
watchfiles when it is installed.
"""

from __future__ import annotations

import pytest
from harness import http_request, wait_for

pytestmark = pytest.mark.timeout(60)

WSGI = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%s"]
"""

ASGI = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%s"})
"""


def body(server) -> bytes:
    try:
        return http_request(server.port, "/", timeout=5).body
    except OSError:
        return b""


def test_a_saved_change_reloads_and_a_syntax_error_keeps_the_old_code(server):
    server.write_app(WSGI % "first")
    server.start("--reload", "-b", f"127.0.0.1:{server.port}", "-w", "1", "app:app",
                 env={"ARBITER_RELOAD_POLL": "1"})
    assert body(server) == b"first"
    assert "watching" in server.stderr and "(polling)" in server.stderr
    server.write_app(WSGI % "second")
    wait_for(lambda: body(server) == b"second", 20, message="the change to be served")
    assert "--reload: app.py changed; reloading" in server.stderr
    server.write_app("x = 1\ndef app(environ, start_response:\n    pass\n")
    wait_for(lambda: "reload rolled back" in server.stderr, 20, message="the failed reload")
    rolled_back = next(line for line in server.stderr.splitlines()
                       if "reload rolled back" in line)
    assert "SyntaxError" in rolled_back and "app.py, line 2" in rolled_back, rolled_back
    assert body(server) == b"second"  # the old code serves on
    server.write_app(WSGI % "third")
    wait_for(lambda: body(server) == b"third", 20, message="the fixed code to be served")
    assert server.proc.poll() is None


def test_asgi_and_a_change_to_the_config_file(server):
    server.write_app(ASGI % "async one")
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
    """)
    server.start("--reload", "-c", "server.yaml")
    assert body(server) == b"async one"
    server.write_app(ASGI % "async two")
    wait_for(lambda: body(server) == b"async two", 20, message="the change to be served")
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
    """)
    wait_for(lambda: len(server.workers()) == 2, 20, message="the config's 2 workers")
    assert "server.yaml changed; reloading" in server.stderr
