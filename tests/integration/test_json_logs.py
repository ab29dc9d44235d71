"""log.json as an operator reads it: every line of both files is a JSON object,
X-Request-ID is passed through or generated (and the app sees it), USR1 reopens."""

from __future__ import annotations

import json
import re
import signal
from datetime import datetime
from pathlib import Path

import pytest
from harness import asgi_twin, raw_exchange, wait_for

pytestmark = pytest.mark.timeout(90)

APP = """
import json, os

def app(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom from the app")
    body = json.dumps({"rid": environ.get("HTTP_X_REQUEST_ID"), "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

ERROR_KEYS = {"timestamp", "level", "pid", "logger", "message"}
ACCESS_KEYS = {"timestamp", "level", "pid", "worker", "method", "path", "query", "status",
               "bytes", "duration_us", "remote_addr", "user_agent", "referer", "request_id",
               "protocol"}
GENERATED = re.compile(r"[0-9a-f]{32}")


def read_json_lines(path: Path) -> list[dict]:
    """Every line must parse as one JSON object."""
    text = path.read_text() if path.exists() else ""
    docs = []
    for line in text.splitlines():
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        datetime.fromisoformat(doc["timestamp"])  # ISO 8601 with an offset
        assert datetime.fromisoformat(doc["timestamp"]).tzinfo is not None
        docs.append(doc)
    return docs


def access_lines(server) -> list[dict]:
    docs = read_json_lines(server.workdir / "access.log")
    for doc in docs:
        assert ACCESS_KEYS <= set(doc), doc
        assert doc["level"] == "info"
        assert isinstance(doc["status"], int) and isinstance(doc["bytes"], int)
        assert isinstance(doc["duration_us"], int) and doc["duration_us"] >= 0
    return docs


def error_lines(server) -> list[dict]:
    docs = read_json_lines(server.workdir / "error.log")
    for doc in docs:
        assert ERROR_KEYS <= set(doc), doc
        assert doc["logger"] == "arbiter.error"
    return docs


def test_json_logs_request_id_and_reopen(server, worker_type):
    server.write_app(asgi_twin(APP, worker_type))
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        worker_type: {worker_type}
        log: {{json: true, access_log: access.log, error_log: error.log,
               access_format: "ignored %(h)s"}}
    """)
    server.start("-c", "server.yaml")
    server.wait_workers(1)

    given = server.get("/given?x=1", headers={"X-Request-ID": "client-id-42",
                                             "User-Agent": "json-test/1", "Referer": "http://r/"})
    assert given.status == 200
    assert json.loads(given.body)["rid"] == "client-id-42"
    fresh = server.get("/fresh")
    fresh_rid = json.loads(fresh.body)["rid"]
    assert GENERATED.fullmatch(fresh_rid), fresh_rid
    too_long = json.loads(server.get("/long", headers={"X-Request-ID": "y" * 300}).body)["rid"]
    assert GENERATED.fullmatch(too_long) and too_long != fresh_rid
    assert server.get("/boom").status == 500
    bad = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400")

    def all_logged() -> bool:  # the start-up probe's line is there too: wait for ours
        lines = access_lines(server)
        return {"/given", "/fresh", "/long", "/boom"} <= {d["path"] for d in lines} \
            and any(d["status"] == 400 for d in lines)
    wait_for(all_logged, message="an access line for each request sent")
    by_path = {doc["path"]: doc for doc in access_lines(server)}
    doc = by_path["/given"]
    assert doc["method"] == "GET" and doc["query"] == "x=1" and doc["status"] == 200
    assert doc["request_id"] == "client-id-42" and doc["user_agent"] == "json-test/1"
    assert doc["referer"] == "http://r/" and doc["remote_addr"] == "127.0.0.1"
    assert doc["protocol"] == "HTTP/1.1" and doc["bytes"] == len(given.body)
    assert doc["pid"] == json.loads(given.body)["pid"]  # the process that served it
    assert doc["worker"] == 1
    assert by_path["/fresh"]["request_id"] == fresh_rid
    assert by_path["/fresh"]["query"] is None
    assert by_path["/long"]["request_id"] == too_long
    assert by_path["/boom"]["status"] == 500
    assert any(d["status"] == 400 for d in access_lines(server))

    def boom_logged() -> dict | None:
        return next((d for d in error_lines(server) if "exc_info" in d), None)

    boom = wait_for(boom_logged, message="the app's traceback in error.log")
    assert boom["level"] == "error" and boom["worker"] == 1
    assert "RuntimeError: boom from the app" in boom["exc_info"]
    assert any("worker" not in d and d["pid"] == server.pid for d in error_lines(server))

    # logrotate: move both files away, USR1 the master, new lines go to new files
    (server.workdir / "access.log").rename(server.workdir / "access.log.1")
    (server.workdir / "error.log").rename(server.workdir / "error.log.1")
    server.signal(signal.SIGUSR1)
    wait_for(lambda: (server.workdir / "error.log").exists(), message="error.log recreated")

    def logged_again() -> bool:
        server.get("/after-rotate", headers={"X-Request-ID": "rotated"})
        return any(d["path"] == "/after-rotate" for d in access_lines(server))

    wait_for(logged_again, message="access.log recreated by the worker")
    assert all(d["request_id"] == "rotated" for d in access_lines(server))  # only new lines
    server.get("/third")  # the worker has reopened by now: this one is in the new file only
    wait_for(lambda: any(d["path"] == "/third" for d in access_lines(server)),
             message="/third in the new access.log")
    old = read_json_lines(server.workdir / "access.log.1")
    assert not any(d["path"] == "/third" for d in old)
    server.get("/boom")
    wait_for(lambda: any("exc_info" in d for d in error_lines(server)),
             message="a traceback in the new error.log")
    error_lines(server)
    read_json_lines(server.workdir / "error.log.1")
