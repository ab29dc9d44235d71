"""`arbiter ctl` against a running master, as an operator uses it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from harness import ARBITER, pid_alive, wait_for

pytestmark = pytest.mark.timeout(90)

APP = """
import os, time
def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(1.5)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def ctl(server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*ARBITER, "ctl", "-c", "server.yaml", *args], cwd=server.workdir,
                          capture_output=True, text=True, timeout=timeout)


def start(server, worker_type: str = "preforked", app: str = "app:app") -> None:
    server.write_app(APP)
    server.write_config(f"""
        app: {app}
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
        worker_type: {worker_type}
        control_socket: control.sock
    """)
    server.start("-c", "server.yaml")
    server.wait_workers(2)


def status(server) -> dict:
    result = ctl(server, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_status_json_counts_requests_and_shows_workers(server, worker_type):
    start(server, worker_type)
    before = status(server)["requests"]  # start() itself polled with a GET
    for _ in range(7):
        assert server.get("/").status == 200
    assert server.get("/", method="POST", body=b"x").status == 200
    wait_for(lambda: status(server)["requests"]["total"] >= before["total"] + 8,
             message="8 more requests counted")
    data = status(server)
    assert data["requests"]["total"] == before["total"] + 8
    assert data["requests"]["by_status"]["2xx"] == before["by_status"]["2xx"] + 8
    assert data["requests"]["by_method"]["GET"] == before["by_method"]["GET"] + 7
    assert data["requests"]["by_method"]["POST"] == 1
    assert data["master"]["pid"] == server.pid
    assert data["master"]["worker_type"] == worker_type
    assert sorted(w["pid"] for w in data["workers"]) == sorted(server.workers())
    for worker in data["workers"]:
        assert worker["state"] in ("idle", "busy")
        assert worker["rss"] > 0
    assert (server.workdir / "control.sock").stat().st_mode & 0o777 == 0o600


def test_status_table_shows_a_busy_worker_and_its_request(server):
    import threading

    from harness import http_request

    start(server)
    thread = threading.Thread(target=lambda: http_request(server.port, "/slow", timeout=10))
    thread.start()
    try:
        def busy() -> bool:
            out = ctl(server, "status").stdout
            return "busy" in out and "GET /slow" in out
        wait_for(busy, message="a busy worker running GET /slow in the table")
        assert f"master pid {server.pid}" in ctl(server, "status").stdout
    finally:
        thread.join(10)


def test_scale_changes_the_worker_count(server):
    start(server)
    assert ctl(server, "scale", "3").returncode == 0
    server.wait_workers(3)
    assert ctl(server, "scale", "-2").returncode == 0
    server.wait_workers(1)
    assert ctl(server, "scale", "+1").returncode == 0
    server.wait_workers(2)
    bad = ctl(server, "scale", "-5")
    assert bad.returncode == 1 and "at least 1" in bad.stderr


def test_reload_returns_0_for_a_good_release_and_1_with_the_reason_for_a_broken_one(server):
    start(server)
    old = set(server.workers())
    good = ctl(server, "reload")
    assert good.returncode == 0, good.stderr
    assert "serving" in good.stdout
    new = set(server.wait_workers(2))
    assert not old & new
    server.write_app("raise ImportError('the new release is broken')\n", name="broken.py")
    server.write_config(f"""
        app: broken:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
        control_socket: control.sock
    """)
    bad = ctl(server, "reload")
    assert bad.returncode == 1
    assert "rolled back" in bad.stderr
    assert set(server.wait_workers(2)) == new  # the old generation keeps serving
    assert server.get("/").status == 200
    data = status(server)
    assert data["reloads"] == {"succeeded": 1, "failed": 1}


def test_reopen_and_stop(server):
    start(server)
    assert ctl(server, "reopen").returncode == 0
    assert ctl(server, "stop").returncode == 0
    assert server.wait_exit(20) == 0
    assert not (server.workdir / "control.sock").exists()


def test_clear_error_when_the_master_is_not_running(server):
    server.write_config("control_socket: control.sock\n")
    result = ctl(server, "status")
    assert result.returncode == 1
    assert "control.sock" in result.stderr and "running" in result.stderr


def test_stop_now(server):
    start(server)
    workers = server.workers()
    assert ctl(server, "stop", "--now").returncode == 0
    assert server.wait_exit(20) == 0
    for pid in workers:
        wait_for(lambda pid=pid: not pid_alive(pid))
    assert os.path.exists(server.workdir / "server.yaml")
