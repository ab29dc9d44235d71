"""`arbiter ctl` against a running master, as an operator uses it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest
from harness import ARBITER, asgi_twin, pid_alive, wait_for

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
    server.write_app(asgi_twin(APP, worker_type))
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
    # A deploy script gets the reason and where the traceback went, in one line.
    assert "rolled back: a new worker failed to boot (exit code 3): ImportError: the new " \
           "release is broken (traceback in the error log, stderr)" in bad.stderr
    assert "Traceback (most recent call last)" in server.stderr
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


def control_exchange(server, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes on the control socket; return everything the master answers."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(server.workdir / "control.sock"))
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_garbage_on_the_control_socket_never_stops_the_master(server):
    start(server)
    nested = control_exchange(server, b"[" * 60_000 + b"\n")  # once a RecursionError
    assert json.loads(nested) == {"ok": False, "error": "bad request: nested too deeply"}
    deep_in_object = b'{"command": "status", "x": ' + b"[" * 60_000 + b"}\n"
    assert json.loads(control_exchange(server, deep_in_object))["ok"] is False
    for garbage in (b"\xff\xfe\x00garbage\n", b"null\n", b"[1, 2]\n", b"{\n",
                    b'{"command": ["status"]}\n', b'{"command": "scale", "workers": {}}\n',
                    b"x" * 70_000):
        answer = json.loads(control_exchange(server, garbage))
        assert answer["ok"] is False and answer["error"], garbage[:20]
    assert pid_alive(server.pid)
    assert server.get("/").status == 200
    assert status(server)["master"]["pid"] == server.pid


def test_stalled_control_clients_are_capped_and_dropped(server):
    """200 clients that send half a command and stall neither pile up nor block ctl."""
    start(server)

    def master_fds() -> int:
        return len(os.listdir(f"/proc/{server.pid}/fd"))
    before = master_fds()
    stalled = []
    try:
        for _ in range(200):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(server.workdir / "control.sock"))
            sock.sendall(b'{"command": "sta')
            stalled.append(sock)
        # the master holds at most its cap of clients, and ctl still answers at once
        assert ctl(server, "status", timeout=10).returncode == 0
        assert master_fds() <= before + 40
        # past the deadline every stalled client has been closed by the master
        started = time.monotonic()
        wait_for(lambda: master_fds() <= before, 15, message="stalled clients dropped")
        assert time.monotonic() - started < 12
        for sock in stalled[-5:]:
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the master (EOF)
    finally:
        for sock in stalled:
            sock.close()
    assert server.get("/").status == 200
