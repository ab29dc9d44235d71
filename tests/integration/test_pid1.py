"""arbiter as PID 1 of a container: orphans reaped quietly, TERM and INT honoured.

A container's first process is its init: every orphaned process in it is
reparented to it, and the kernel delivers it only the signals it has a
handler for. The master is run here as PID 1 of a new PID namespace
(``unshare --pid --fork --mount-proc``, which needs root) with no init shim,
as the README's Dockerfile runs it. Skipped, saying why, where that cannot be.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from harness import ARBITER, free_port, http_request, wait_for

pytestmark = pytest.mark.timeout(60)

APP = """
import os, subprocess

def app(environ, start_response):
    if environ["PATH_INFO"] == "/orphans":
        for _ in range(20):  # each shell exits at once: its sleep is an orphan of PID 1
            subprocess.run("sleep 0.3 &", shell=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()} {os.getppid()}".encode()]
"""


def _unshare() -> str:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    if os.geteuid() != 0:
        pytest.skip("a new PID namespace needs root")
    probe = subprocess.run([unshare, "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid is not permitted here: {probe.stderr.decode().strip()}")
    return unshare


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "gone"


class Container:
    """``unshare --pid --fork --mount-proc arbiter -c server.yaml`` in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        (workdir / "app.py").write_text(textwrap.dedent(APP))
        (workdir / "server.yaml").write_text(textwrap.dedent(f"""
            app: app:app
            bind: ["127.0.0.1:{self.port}"]
            workers: 2
            graceful_timeout: 5
        """))
        self.stderr_path = workdir / "stderr.log"
        self.proc: subprocess.Popen | None = None

    def start(self, unshare: str) -> int:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [unshare, "--pid", "--fork", "--mount-proc", *ARBITER, "-c", "server.yaml"],
                cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True)

        def serving() -> bool:
            assert self.proc.poll() is None, self.stderr
            try:
                return http_request(self.port, "/", timeout=2).status == 200
            except OSError:
                return False
        wait_for(serving, 20, message="arbiter as PID 1 to serve")
        return wait_for(lambda: (_children(self.proc.pid) or [None])[0], 10,
                        message="the master (the namespace's PID 1)")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # PID 1 dying takes the namespace
            except ProcessLookupError:
                pass
            self.proc.wait(10)


@pytest.fixture
def container(tmp_path: Path):
    box = Container(tmp_path)
    yield box
    box.stop()


def test_as_pid_1_orphans_are_reaped_without_a_log_line_and_term_stops_it(container):
    master = container.start(_unshare())
    pid, parent = http_request(container.port, "/").body.split()
    assert parent == b"1"  # the worker's parent, the master, is the namespace's PID 1
    assert "arbiter master (pid 1)" in container.stderr
    wait_for(lambda: "ready:" in container.stderr, 10, message="the ready line")
    lines_before = len(container.stderr.splitlines())
    assert http_request(container.port, "/orphans").status == 200

    def only_workers_left() -> bool:
        children = _children(master)
        return len(children) == 2 and all(_state(child) != "Z" for child in children)
    wait_for(only_workers_left, 15, message="the orphans to end and be reaped (no zombie)")
    time.sleep(0.2)  # a log line about them would be written by now
    assert len(container.stderr.splitlines()) == lines_before, container.stderr
    os.kill(master, signal.SIGTERM)
    assert container.proc.wait(20) == 0
    assert "exiting with code 0" in container.stderr
    assert _state(master) == "gone"


def test_as_pid_1_int_stops_it_at_once(container):
    master = container.start(_unshare())
    workers = _children(master)
    started = time.monotonic()
    os.kill(master, signal.SIGINT)
    assert container.proc.wait(20) == 0
    assert time.monotonic() - started < 5
    assert all(_state(worker) == "gone" for worker in workers)
