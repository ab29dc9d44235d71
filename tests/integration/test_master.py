"""The master as an operator sees it: start, signals, reload, respawn, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import ALL_WORKER_TYPES
from harness import ARBITER, asgi_twin, children_of, cmdline, http_request, pid_alive, wait_for

pytestmark = pytest.mark.timeout(60)

APP = """
import os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        open("slow-started", "w").close()
        time.sleep(float(environ.get("QUERY_STRING") or 2))
    if path == "/until-released":  # runs until the test creates the file "released"
        open("slow-started", "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists("released") and time.monotonic() < deadline:
            time.sleep(0.02)
    if path == "/hang":
        hang_forever()
    body = f"hello from {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

def hang_forever():
    while True:
        time.sleep(0.2)

def other(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"other app"]
"""


def basic_config(server, workers: int = 2, extra: str = "", worker_type: str = "preforked",
                 graceful_timeout: float = 10) -> None:
    server.write_app(asgi_twin(APP, worker_type))
    extra = extra.replace("\n", "\n        ")  # keep every extra line in the mapping
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: {workers}
        worker_type: {worker_type}
        graceful_timeout: {graceful_timeout}
        {extra}
    """)


def test_serves_a_request_from_a_worker(server, worker_type):
    basic_config(server, worker_type=worker_type)
    server.start("-c", "server.yaml")
    workers = server.wait_workers(2)
    resp = server.get("/")
    assert resp.status == 200
    answered_by = int(resp.text.split()[-1])
    if worker_type == "forked":  # a child of a worker answers, one per connection
        assert answered_by not in workers and answered_by != server.pid
    else:
        assert answered_by in workers


def test_demo_app_with_no_arguments_names_pid_and_worker_type(server):
    server.start("-b", f"127.0.0.1:{server.port}")
    resp = server.get("/")
    assert resp.status == 200
    assert "preforked" in resp.text
    assert any(str(pid) in resp.text for pid in server.workers())


def test_version_flag():
    out = subprocess.run([*ARBITER, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout.startswith("arbiter ")


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "arbiter")
    out = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_process_titles(server):
    basic_config(server, extra="proc_name: shop")
    server.start("-c", "server.yaml")
    workers = server.wait_workers(2)
    assert cmdline(server.pid).startswith("arbiter: master [shop]")
    titles = sorted(cmdline(pid) for pid in workers)
    assert titles == ["arbiter: worker [shop] #1", "arbiter: worker [shop] #2"]


def test_kill_9_worker_is_replaced(server, worker_type):
    basic_config(server, worker_type=worker_type)
    server.start("-c", "server.yaml")
    before = server.wait_workers(2)
    os.kill(before[0], signal.SIGKILL)
    wait_for(lambda: len(server.workers()) == 2 and before[0] not in server.workers(),
             message="a replacement worker")
    assert server.get("/").status == 200


def test_ttin_and_ttou_change_the_worker_count(server, worker_type):
    basic_config(server, worker_type=worker_type)
    server.start("-c", "server.yaml")
    server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    server.signal(signal.SIGTTOU)  # one signal at a time: Unix merges pending duplicates
    server.wait_workers(2)
    server.signal(signal.SIGTTOU)
    server.wait_workers(1)
    server.signal(signal.SIGTTOU)  # never below one
    time.sleep(0.5)  # give a wrong scale-down the chance to happen
    assert len(server.wait_workers(1)) == 1
    assert server.get("/").status == 200


def test_hup_applies_a_changed_file_and_replaces_every_worker(server, worker_type):
    basic_config(server, worker_type=worker_type)
    server.start("-c", "server.yaml")
    old = set(server.wait_workers(2))
    server.write_config(f"""
        app: app:other
        bind: ["127.0.0.1:{server.port}"]
        workers: 3
        worker_type: {worker_type}
    """)
    server.signal(signal.SIGHUP)
    server.wait_log("reload complete")
    new = set(server.wait_workers(3))
    assert not old & new
    assert server.get("/").text == "other app"


def test_hup_with_a_broken_file_keeps_serving(server, worker_type):
    basic_config(server, worker_type=worker_type)
    server.start("-c", "server.yaml")
    old = set(server.wait_workers(2))
    server.config_path.write_text("workers: four\n")
    server.signal(signal.SIGHUP)
    log = server.wait_log("reload aborted")
    assert "workers" in log and "four" in log
    assert set(server.workers()) == old
    assert server.get("/").status == 200
    assert pid_alive(server.pid)


def test_hup_with_a_broken_app_rolls_back(server):
    basic_config(server)
    server.start("-c", "server.yaml")
    old = set(server.wait_workers(2))
    server.write_app("raise RuntimeError('release is broken')\n", name="broken.py")
    server.write_config(f"""
        app: broken:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
    """)
    server.signal(signal.SIGHUP)
    log = server.wait_log("reload rolled back")
    assert "release is broken" in log
    assert set(server.wait_workers(2)) == old
    assert server.get("/").status == 200


def test_term_finishes_the_slow_request_and_exits_0(server, worker_type):
    basic_config(server, worker_type=worker_type)
    server.start("-c", "server.yaml")
    server.wait_workers(2)
    result = {}

    def slow():
        result["resp"] = http_request(server.port, "/until-released", timeout=20)

    thread = threading.Thread(target=slow)
    thread.start()
    wait_for(lambda: (server.workdir / "slow-started").exists(), message="the request in the app")
    server.signal(signal.SIGTERM)
    server.wait_log("stopping gracefully")  # the stop has begun with the request in the app
    assert thread.is_alive()  # not answered yet: it runs until released
    (server.workdir / "released").touch()
    thread.join(20)
    assert result["resp"].status == 200
    assert server.wait_exit(20) == 0


def test_int_exits_fast_even_with_a_slow_request(server, worker_type):
    basic_config(server, worker_type=worker_type)
    server.start("-c", "server.yaml")
    server.wait_workers(2)
    thread = threading.Thread(target=lambda: _ignore(http_request, server.port, "/slow?30",
                                                     timeout=40), daemon=True)
    thread.start()
    wait_for(lambda: (server.workdir / "slow-started").exists(), message="the request in the app")
    started = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.wait_exit(10) == 0
    assert time.monotonic() - started < 3
    assert not server.workers()


def _ignore(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except OSError:
        pass


def test_unimportable_app_at_start_exits_3_with_traceback(server):
    server.write_app("import no_such_module_here\n", name="bad.py")
    server.start("-b", f"127.0.0.1:{server.port}", "bad:app", wait=False)
    assert server.wait_exit(20) == 3
    assert "Traceback" in server.stderr
    assert "no_such_module_here" in server.stderr


def test_unimportable_app_with_preload_exits_3(server):
    server.write_app("import no_such_module_here\n", name="bad.py")
    server.start("-b", f"127.0.0.1:{server.port}", "--preload", "bad:app", wait=False)
    assert server.wait_exit(20) == 3
    assert "no_such_module_here" in server.stderr


def test_bad_config_exits_1_naming_file_line_and_key(server):
    server.write_config("""
        workers: 2
        wokers: 3
    """)
    server.start("-c", "server.yaml", wait=False)
    assert server.wait_exit(20) == 1
    assert "server.yaml:3" in server.stderr and "wokers" in server.stderr


def test_bad_command_line_exits_1(server):
    server.start("--workers", "zero", wait=False)
    assert server.wait_exit(20) == 1


def test_port_in_use_exits_2_naming_the_address(server):
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        server.start("-b", f"127.0.0.1:{port}", wait=False)
        assert server.wait_exit(20) == 2
        assert f"127.0.0.1:{port}" in server.stderr
    finally:
        blocker.close()


def test_boot_crash_loop_backs_off_and_recovers(server):
    server.write_app("""
        import os
        if os.path.exists(os.path.join(os.path.dirname(__file__), "BROKEN")):
            raise RuntimeError("the release is broken")
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
    """)
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
    """)
    server.start("-c", "server.yaml")
    first, second = server.wait_workers(2)
    (server.workdir / "BROKEN").write_text("")
    os.kill(first, signal.SIGKILL)
    server.wait_log("retrying in 1 s")
    log = server.wait_log("retrying in 2 s")
    assert "retrying in 4 s" not in log  # no hot loop: the second retry waits 2 s
    assert server.get("/").text == "ok"  # the healthy worker keeps serving
    assert pid_alive(server.pid)
    (server.workdir / "BROKEN").unlink()
    server.wait_log("backoff cleared", timeout=20)
    server.wait_workers(2)
    assert server.get("/").text == "ok"


@pytest.mark.parametrize("worker_type", ALL_WORKER_TYPES)  # asgi cancels the request instead
def test_hung_worker_is_killed_with_its_traceback_and_replaced(server, worker_type):
    basic_config(server, workers=1, extra="timeout: 1", worker_type=worker_type,
                 graceful_timeout=1)
    server.start("-c", "server.yaml")
    (hung,) = server.wait_workers(1)
    thread = threading.Thread(target=lambda: _ignore(http_request, server.port, "/hang",
                                                     timeout=30), daemon=True)
    thread.start()
    log = server.wait_log("timed out", timeout=15)
    wait_for(lambda: "hang_forever" in server.stderr, message="the traceback in the log")
    log = server.stderr
    if worker_type == "forked":
        # the worker kills its own hung child and goes on serving
        assert pid_alive(hung)
    else:
        assert "GET /hang" in log
        wait_for(lambda: not pid_alive(hung), message="the hung worker to be killed")
        assert server.wait_workers(1) != [hung]
    assert server.get("/").status == 200


def test_max_requests_recycles_the_worker(server, worker_type):
    """After max_requests the worker is replaced; the replacement starts first and the
    old one serves until it is ready, so every request in between is answered."""
    basic_config(server, workers=1, extra="max_requests: 3", worker_type=worker_type)
    server.start("-c", "server.yaml")
    (first,) = server.wait_workers(1)

    def replaced() -> bool:
        assert server.get("/").status == 200
        return first not in server.workers()
    wait_for(replaced, message="the recycled worker to exit while requests go on")
    (second,) = server.wait_workers(1)
    assert second != first
    assert server.get("/").status == 200
    assert "reached max_requests: starting its replacement" in server.stderr


def test_pidfile_written_and_removed(server):
    basic_config(server, extra="pidfile: arbiter.pid")
    server.start("-c", "server.yaml")
    pidfile = server.workdir / "arbiter.pid"
    assert int(pidfile.read_text()) == server.pid
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not pidfile.exists()


def test_workers_exit_when_the_master_is_killed(server):
    basic_config(server)
    server.start("-c", "server.yaml")
    workers = server.wait_workers(2)
    os.kill(server.pid, signal.SIGKILL)
    server.wait_exit()
    for pid in workers:
        wait_for(lambda pid=pid: not pid_alive(pid), message=f"orphan worker {pid} to exit")
    # the port is free again
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))


def test_usr1_reopens_the_access_and_error_logs(server, worker_type):
    basic_config(server, workers=1, extra="log: {access_log: access.log, error_log: error.log}",
                 worker_type=worker_type)
    server.start("-c", "server.yaml")
    server.wait_workers(1)
    server.get("/first")
    access = server.workdir / "access.log"
    wait_for(lambda: access.exists() and "/first" in access.read_text())
    access.rename(server.workdir / "access.log.1")
    (server.workdir / "error.log").rename(server.workdir / "error.log.1")
    server.signal(signal.SIGUSR1)
    wait_for(lambda: (server.workdir / "error.log").exists(), message="error.log recreated")

    def logged_again():
        server.get("/second")
        return access.exists() and "/second" in access.read_text()

    wait_for(logged_again, message="access.log recreated by the worker")
    server.get("/third")
    wait_for(lambda: "/third" in access.read_text(), message="/third in the new access.log")
    assert "/third" not in (server.workdir / "access.log.1").read_text()


def test_check_command(server):
    basic_config(server)
    ok = subprocess.run([*ARBITER, "check", "-c", "server.yaml"], cwd=server.workdir,
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    server.write_config("app: nowhere_to_be_found:app\n")
    bad = subprocess.run([*ARBITER, "check", "-c", "server.yaml"], cwd=server.workdir,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert "nowhere_to_be_found" in bad.stderr


def test_environment_and_command_line_layering(server):
    basic_config(server, workers=3)
    server.start("-c", "server.yaml", env={"ARBITER_WORKERS": "2"})
    server.wait_workers(2)
    server.stop()
    other = type(server)(server.workdir)
    other.port = server.port
    try:
        other.start("-c", "server.yaml", "-w", "1", env={"ARBITER_WORKERS": "2"})
        other.wait_workers(1)
    finally:
        other.stop()


def test_usr2_upgrade_then_winch_and_term_the_old_master(server):
    from harness import free_port

    admin = free_port()
    basic_config(server, extra=f"pidfile: arbiter.pid\nadmin_bind: 127.0.0.1:{admin}")
    server.start("-c", "server.yaml")
    old_workers = set(server.wait_workers(2))
    pidfile = server.workdir / "arbiter.pid"
    server.signal(signal.SIGUSR2)
    oldbin = server.workdir / "arbiter.pid.oldbin"
    wait_for(lambda: oldbin.exists() and pidfile.exists(), message="pidfile and .oldbin")
    assert int(oldbin.read_text()) == server.pid
    new_master = int(pidfile.read_text())
    assert new_master != server.pid
    wait_for(lambda: len([p for p in children_of(new_master) if pid_alive(p)]) == 2,
             timeout=30, message="the new master's workers")
    server.signal(signal.SIGWINCH)
    wait_for(lambda: not any(pid_alive(p) for p in old_workers),
             message="the old workers to stop after WINCH")
    # only the new master's workers answer now, on the same port
    new_workers = {p for p in children_of(new_master) if pid_alive(p)}
    for _ in range(4):
        assert int(server.get("/").text.split()[-1]) in new_workers
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not oldbin.exists()
    assert int(pidfile.read_text()) == new_master
    assert server.get("/").status == 200  # the new master serves on alone
    # the control socket (next to the pidfile) now belongs to the new master
    ctl = subprocess.run([*ARBITER, "ctl", "-s", "arbiter.ctl", "status", "--json"],
                         cwd=server.workdir, capture_output=True, text=True, timeout=30)
    assert ctl.returncode == 0, ctl.stderr
    assert json.loads(ctl.stdout)["master"]["pid"] == new_master
    # and so does the admin port, handed over with the listeners
    status = json.loads(http_request(admin, "/status").body)
    assert status["master"]["pid"] == new_master
    os.kill(new_master, signal.SIGTERM)
    wait_for(lambda: not pid_alive(new_master), message="the new master to stop")
    assert not pidfile.exists()


def test_a_worker_over_max_worker_memory_is_recycled_after_its_replacement(server):
    server.write_app("""
        import os
        hoard = []

        def app(environ, start_response):
            if environ["PATH_INFO"] == "/grow":
                hoard.append(bytearray(os.urandom(1024)) * (40 * 1024))  # 40 MiB, private
            body = str(os.getpid()).encode()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body]
    """)
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        max_worker_memory: 30
    """)
    server.start("-c", "server.yaml")
    (big,) = server.wait_workers(1)
    assert server.get("/grow").text == str(big)
    log = server.wait_log("max_worker_memory", timeout=20)
    assert f"pid {big}" in log
    wait_for(lambda: not pid_alive(big), timeout=20, message="the large worker to be recycled")
    (fresh,) = server.wait_workers(1)
    assert fresh != big
    assert server.get("/").text == str(fresh)


def test_daemon_detaches_and_stops_cleanly_via_the_pidfile(server):
    basic_config(server, extra="pidfile: arbiter.pid\ndaemon: true\nlog: {error_log: error.log}")
    server.start("-c", "server.yaml", wait=False)
    assert server.wait_exit(20) == 0  # the command returns once detached
    pidfile = server.workdir / "arbiter.pid"
    wait_for(pidfile.exists, message="the daemon's pidfile")
    daemon_pid = int(pidfile.read_text())
    assert daemon_pid != server.pid
    try:
        server.wait_serving(detached=True)
        assert cmdline(daemon_pid).startswith("arbiter: master")
        os.kill(daemon_pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(daemon_pid), message="the daemon to stop")
        assert not pidfile.exists()
        assert "exiting with code 0" in (server.workdir / "error.log").read_text()
    finally:
        if pid_alive(daemon_pid):
            os.kill(daemon_pid, signal.SIGKILL)


def test_daemon_start_errors_reach_the_terminal(server):
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        port = blocker.getsockname()[1]
        server.start("--daemon", "-b", f"127.0.0.1:{port}", wait=False)
        assert server.wait_exit(20) == 2
        assert f"127.0.0.1:{port}" in server.stderr
    finally:
        blocker.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_workers_drop_privileges_to_user_and_group(server):
    import pwd

    nobody = pwd.getpwnam("nobody")
    # preload: the app is imported by the master, before the workers drop privileges
    basic_config(server, extra="user: nobody\npreload_app: true\nlog: {access_log: access.log}")
    server.start("-c", "server.yaml")
    workers = server.wait_workers(2)

    def uids(pid: int) -> list[str]:
        status = open(f"/proc/{pid}/status").read()
        return next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    for pid in workers:  # a worker drops privileges just after the fork: poll for it
        wait_for(lambda pid=pid: uids(pid) == [str(nobody.pw_uid)] * 4,
                 message=f"worker {pid} running as nobody (uids {uids(pid)})")
    assert os.stat(f"/proc/{server.pid}").st_uid == 0  # the master keeps root to bind on reload
    assert server.get("/").status == 200
    access = server.workdir / "access.log"
    wait_for(lambda: access.exists() and "GET /" in access.read_text(), message="access log")


def test_unknown_user_exits_1(server):
    server.start("-b", f"127.0.0.1:{server.port}", "--user", "no-such-user-here", wait=False)
    assert server.wait_exit(20) == 1
    assert "no-such-user-here" in server.stderr


def test_hup_with_preload_app_loads_the_new_code(server):
    server.write_app("""
        VERSION = b"release 1"
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [VERSION]
    """)
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
        preload_app: true
    """)
    server.start("-c", "server.yaml")
    server.wait_workers(2)
    assert server.get("/").text == "release 1"
    server.write_app("""
        VERSION = b"release 2, a longer one"
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [VERSION]
    """)
    server.signal(signal.SIGHUP)
    server.wait_log("reload complete")
    wait_for(lambda: server.get("/").text == "release 2, a longer one", message="the new release to serve")


def test_usr2_rollback_when_the_new_master_is_stopped(server):
    from harness import free_port

    admin = free_port()
    basic_config(server, extra=f"pidfile: arbiter.pid\nadmin_bind: 127.0.0.1:{admin}")
    server.start("-c", "server.yaml")
    old_workers = set(server.wait_workers(2))
    pidfile = server.workdir / "arbiter.pid"
    server.signal(signal.SIGUSR2)
    oldbin = server.workdir / "arbiter.pid.oldbin"
    wait_for(lambda: oldbin.exists() and pidfile.exists(), message="pidfile and .oldbin")
    new_master = int(pidfile.read_text())
    wait_for(lambda: len([p for p in children_of(new_master) if pid_alive(p)]) == 2,
             timeout=30, message="the new master's workers")
    os.kill(new_master, signal.SIGTERM)  # roll back: the new release is no good
    server.wait_log("stays in charge")
    wait_for(lambda: int(pidfile.read_text()) == server.pid and not oldbin.exists(),
             message="the pidfile back to the old master")
    assert set(server.workers()) == old_workers
    assert server.get("/").status == 200
    ctl = subprocess.run([*ARBITER, "ctl", "-s", "arbiter.ctl", "status", "--json"],
                         cwd=server.workdir, capture_output=True, text=True, timeout=30)
    assert ctl.returncode == 0, ctl.stderr
    assert json.loads(ctl.stdout)["master"]["pid"] == server.pid
    assert http_request(admin, "/livez").status == 200


def test_start_reload_and_scale_up_do_not_wait_for_a_tick(server):
    """Launch to first 200, `ctl reload` and TTIN take the time their work takes: the master
    used to wait a whole loop tick (1 s) before its first fork and before seeing a new
    worker ready. Each is measured against the same machine's cost of the same
    interpreter start, so a busy box slows both sides alike."""
    basic_config(server, workers=2, extra="control_socket: control.sock")

    def timed(command: list[str]) -> float:
        started = time.monotonic()
        subprocess.run(command, cwd=server.workdir, check=True, capture_output=True, timeout=30)
        return time.monotonic() - started

    imports = [sys.executable, "-c", "import arbiter.cli, arbiter.master, "
               "arbiter.workers.preforked"]
    interpreter = statistics_median([timed(imports) for _ in range(3)])
    launches = []
    for _ in range(3):
        started = time.monotonic()
        server.start("-c", "server.yaml", wait=False)

        def answered() -> bool:
            try:
                return http_request(server.port, "/", timeout=2).status == 200
            except OSError:
                return False
        wait_for(answered, 15, interval=0.005, message="the first 200")
        launches.append(time.monotonic() - started)
        server.signal(signal.SIGINT)
        server.wait_exit(15)
        server.stop()
    assert statistics_median(launches) - interpreter < 0.5, (launches, interpreter)

    server.start("-c", "server.yaml")
    server.wait_workers(2)
    ctl = [*ARBITER, "ctl", "-c", "server.yaml"]
    status = statistics_median([timed([*ctl, "status"]) for _ in range(3)])
    reloads = [timed([*ctl, "reload"]) for _ in range(3)]
    assert statistics_median(reloads) - status < 0.5, (reloads, status)

    server.wait_workers(2)
    before = set(server.workers())
    started = time.monotonic()
    server.signal(signal.SIGTTIN)
    wait_for(lambda: len(set(server.workers()) - before) == 1, 10, interval=0.005,
             message="the third worker")
    assert time.monotonic() - started < 0.5


def statistics_median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


ASGI_APP = """
class App:
    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi"})

app = App()
"""


@pytest.mark.parametrize("preload", [False, True])
def test_an_asgi_app_on_a_wsgi_worker_type_exits_1_saying_it_is_asgi(server, preload):
    """FastAPI and friends used to start and answer every request with a plain 500."""
    server.write_app(ASGI_APP, name="fa.py")
    args = ["-b", f"127.0.0.1:{server.port}", "-k", "preforked",
            *(["--preload"] if preload else []), "fa:app"]
    server.start(*args, wait=False)
    assert server.wait_exit(20) == 1
    assert "app 'fa:app' is an ASGI application (async __call__(scope, receive, send))" \
        in server.stderr
    assert "but worker_type is 'preforked', which serves WSGI apps: set worker_type: asgi" \
        in server.stderr


@pytest.mark.parametrize("preload", [False, True])
def test_an_asgi_app_without_a_worker_type_is_served_by_asgi_workers(server, preload):
    server.write_app(ASGI_APP, name="fa.py")
    server.start("-b", f"127.0.0.1:{server.port}", "-w", "1",
                 *(["--preload"] if preload else []), "fa:app")
    assert server.get("/").body == b"asgi"
    server.wait_log("ready: 1 asgi worker(s) serving")


def test_a_reload_to_an_asgi_app_rolls_back_saying_why(server):
    basic_config(server, extra="control_socket: control.sock")
    server.start("-c", "server.yaml")
    old = set(server.wait_workers(2))
    server.write_app(ASGI_APP, name="fa.py")
    server.config_path.write_text(server.config_path.read_text().replace("app: app:app",
                                                                           "app: fa:app"))
    result = subprocess.run([*ARBITER, "ctl", "-c", "server.yaml", "reload"],
                            cwd=server.workdir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "rolled back: a new worker failed to boot (exit code 4): app 'fa:app' is an ASGI " \
        "application" in result.stderr
    assert "traceback" not in result.stderr
    assert set(server.wait_workers(2)) == old
    assert server.get("/").status == 200
