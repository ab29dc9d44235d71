"""Server hooks: each is called at its point, and one that raises harms nothing."""

from __future__ import annotations

import os
import signal

import pytest
from harness import wait_for

pytestmark = pytest.mark.timeout(60)

HOOKS = """
import os

def _note(name, *extra):
    with open(os.path.join(os.path.dirname(__file__), "hooks.log"), "a") as f:
        f.write(" ".join([name, str(os.getpid()), *map(str, extra)]) + "\\n")

def on_starting(master): _note("on_starting")
def when_ready(master): _note("when_ready", len(master.snapshot()["workers"]))
def pre_fork(master, worker): _note("pre_fork", worker["number"])
def post_fork(master, worker): _note("post_fork", worker.number)
def worker_exit(master, worker): _note("worker_exit", worker.pid)
def on_reload(master): _note("on_reload")
def on_exit(master): _note("on_exit")
def broken(*args): raise RuntimeError("this hook is broken on purpose")
"""

APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def test_every_hook_is_called(server):
    server.write_app(APP)
    server.write_app(HOOKS, name="myhooks.py")
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
        hooks:
          on_starting: myhooks:on_starting
          when_ready: myhooks:when_ready
          pre_fork: myhooks:pre_fork
          post_fork: myhooks:post_fork
          worker_exit: myhooks:worker_exit
          on_reload: myhooks:on_reload
          on_exit: myhooks:on_exit
    """)
    log = server.workdir / "hooks.log"

    def calls() -> list[list[str]]:
        return [line.split() for line in log.read_text().splitlines()] if log.exists() else []

    server.start("-c", "server.yaml")
    workers = server.wait_workers(2)
    wait_for(lambda: any(c[0] == "when_ready" for c in calls()), message="when_ready")
    master = str(server.pid)
    names = [c[0] for c in calls()]
    assert names[0] == "on_starting"
    assert names.count("pre_fork") == 2 and names.count("post_fork") == 2
    assert all(c[1] == master for c in calls() if c[0] in ("on_starting", "pre_fork",
                                                           "when_ready"))
    assert {c[1] for c in calls() if c[0] == "post_fork"} == {str(p) for p in workers}
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: ["worker_exit", master, str(workers[0])] in calls(), message="worker_exit")
    server.signal(signal.SIGHUP)
    server.wait_log("reload complete")
    assert any(c[0] == "on_reload" for c in calls())
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert calls()[-1] == ["on_exit", master]


def test_a_hook_that_raises_is_logged_and_the_server_serves_on(server):
    server.write_app(APP)
    server.write_app(HOOKS, name="myhooks.py")
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        hooks: {{when_ready: myhooks:broken, post_fork: myhooks:broken, pre_fork: myhooks:broken}}
    """)
    server.start("-c", "server.yaml")
    server.wait_workers(1)
    server.wait_log("this hook is broken on purpose")
    assert server.get("/").text == "ok"


def test_a_hook_that_cannot_be_imported_stops_the_start_with_exit_1(server):
    server.write_app(APP)
    server.start("-b", f"127.0.0.1:{server.port}", "app:app", wait=False,
                 env={"ARBITER_HOOKS_ON_STARTING": "no_such_hooks:start"})
    assert server.wait_exit(20) == 1
    assert "hooks.on_starting" in server.stderr and "no_such_hooks" in server.stderr
