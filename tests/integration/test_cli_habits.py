"""The command line as a user (often a gunicorn user) meets it: ``arbiter check`` failing
on what the start fails on, ASGI apps refused with a reason, warnings for settings that
do nothing, gunicorn's spellings, ``-e`` and ``--print-config``.

Most tests run ``arbiter check`` or ``arbiter --print-config``, which start no server;
the two that do start one stop it by pid (the ``server`` fixture).
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from harness import ARBITER

pytestmark = pytest.mark.timeout(60)

WSGI_APP = """
import os

def app(environ, start_response):
    body = os.environ.get("X", "unset").encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

ASGI_APP = """
class App:  # the shape of FastAPI / Starlette / Quart: an object with async __call__
    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

app = App()


async def function_app(scope, receive, send):
    pass
"""


def run(cwd: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the real ``arbiter`` command in ``cwd``, with no ARBITER_*/PORT/WEB_CONCURRENCY
    from the test runner's environment."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("ARBITER_") and k not in ("WEB_CONCURRENCY", "PORT")}
    clean.update(env or {})
    return subprocess.run([*ARBITER, *args], cwd=cwd, env=clean, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def project(tmp_path: Path, config: str = "", app: str = WSGI_APP) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(app))
    (tmp_path / "server.yaml").write_text(textwrap.dedent(config))
    return tmp_path


def problem_lines(stderr: str) -> list[str]:
    """The problems ``arbiter check`` reported, without its prefix and summary line."""
    return [line.removeprefix("arbiter check: ") for line in stderr.splitlines()
            if line.startswith("arbiter check: ") and "FAILED" not in line]


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if "__pycache__" not in p.parts}


# ---------------------------------------------------------------- A. check = what start fails on


def test_check_fails_on_a_missing_certfile_in_the_start_s_words(tmp_path):
    project(tmp_path, """
        app: app:app
        bind: ["127.0.0.1:0"]
        ssl:
          certfile: /nope.pem
    """)
    checked = run(tmp_path, "check", "-c", "server.yaml")
    assert checked.returncode == 1, checked.stdout
    assert problem_lines(checked.stderr) == ["ssl.certfile: cannot load '/nope.pem': "
                                             "No such file or directory"]
    started = run(tmp_path, "-c", "server.yaml")  # fails before binding anything
    assert started.returncode == 1
    assert problem_lines(checked.stderr)[0] in started.stderr


def test_check_fails_on_an_error_log_in_a_missing_directory_as_start_does(tmp_path):
    project(tmp_path, """
        app: app:app
        bind: ["127.0.0.1:0"]
        log:
          error_log: /nonexistent/dir/err.log
    """)
    checked = run(tmp_path, "check", "-c", "server.yaml")
    assert checked.returncode == 1
    [problem] = problem_lines(checked.stderr)
    assert problem == ("log.error_log: cannot open error log '/nonexistent/dir/err.log': "
                       "directory '/nonexistent/dir' does not exist")
    started = run(tmp_path, "-c", "server.yaml")
    assert started.returncode == 1
    assert f"arbiter: {problem}" in started.stderr.splitlines()


def test_check_fails_on_an_access_log_whose_directory_is_a_file_and_start_exits_1(tmp_path):
    project(tmp_path, """
        app: app:app
        bind: ["127.0.0.1:0"]
        log:
          access_log: notadir/access.log
    """)
    (tmp_path / "notadir").write_text("a file, not a directory")
    checked = run(tmp_path, "check", "-c", "server.yaml")
    assert checked.returncode == 1
    [problem] = problem_lines(checked.stderr)
    assert problem.startswith("log.access_log: cannot open access log 'notadir/access.log': "
                              "directory ")
    assert problem.endswith("notadir' does not exist")
    # The workers open the access log: without the check, start crash-looped on it.
    started = run(tmp_path, "-c", "server.yaml")
    assert started.returncode == 1
    assert f"arbiter: {problem}" in started.stderr.splitlines()


def test_check_fails_on_a_log_path_that_is_a_directory(tmp_path):
    project(tmp_path, "app: app:app\nlog:\n  error_log: logs\n")
    (tmp_path / "logs").mkdir()
    checked = run(tmp_path, "check", "-c", "server.yaml")
    assert checked.returncode == 1
    assert problem_lines(checked.stderr) == ["log.error_log: cannot open error log 'logs': "
                                             "Is a directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_check_fails_on_a_log_directory_that_is_not_writable(tmp_path):
    project(tmp_path, "app: app:app\nlog:\n  access_log: ro/access.log\n")
    (tmp_path / "ro").mkdir(mode=0o555)
    checked = run(tmp_path, "check", "-c", "server.yaml")
    assert checked.returncode == 1
    [problem] = problem_lines(checked.stderr)
    assert problem.startswith("log.access_log: cannot open access log 'ro/access.log': "
                              "Permission denied")


def test_check_fails_on_an_unknown_user(tmp_path):
    project(tmp_path, "app: app:app\n")
    checked = run(tmp_path, "check", "-c", "server.yaml", "--user", "no-such-user-here")
    assert checked.returncode == 1
    assert problem_lines(checked.stderr) == ["user: no such user 'no-such-user-here'"]


def test_check_fails_on_a_pidfile_in_a_missing_directory(tmp_path):
    project(tmp_path, "app: app:app\npidfile: /nonexistent/run/app.pid\n")
    checked = run(tmp_path, "check", "-c", "server.yaml")
    assert checked.returncode == 1
    assert problem_lines(checked.stderr) == [
        "pidfile /nonexistent/run/app.pid: directory /nonexistent/run is not writable"]


def test_check_reports_every_problem_each_on_its_line_and_leaves_nothing_behind(tmp_path):
    project(tmp_path, """
        app: app:app
        bind: ["127.0.0.1:0", "unix:/nonexistent/app.sock"]
        user: no-such-user-here
        pidfile: /nonexistent/run/app.pid
        control_socket: /nonexistent/ctl/app.ctl
        ssl:
          certfile: /nope.pem
        log:
          error_log: /nonexistent/dir/err.log
          access_log: logs/access.log
        hooks:
          on_starting: no_such_module:hook
          on_exit: app:no_such_function
    """)
    (tmp_path / "logs").mkdir()
    before = files_under(tmp_path)
    checked = run(tmp_path, "check", "-c", "server.yaml")
    assert checked.returncode == 1
    problems = problem_lines(checked.stderr)
    expected_starts = [
        "log.error_log: cannot open error log '/nonexistent/dir/err.log'",
        "ssl.certfile: cannot load '/nope.pem'",
        "user: no such user 'no-such-user-here'",
        "pidfile /nonexistent/run/app.pid: directory /nonexistent/run is not writable",
        "control_socket /nonexistent/ctl/app.ctl: directory /nonexistent/ctl is not writable",
        "bind: cannot bind unix:/nonexistent/app.sock: directory /nonexistent does not exist",
        "hooks.on_starting: cannot import 'no_such_module:hook'",
        "hooks.on_exit: cannot import 'app:no_such_function'",
    ]
    assert len(problems) == len(expected_starts), checked.stderr
    for line, start in zip(problems, expected_starts, strict=True):
        assert line.startswith(start), (line, start)
    assert "FAILED: 8 problems" in checked.stderr
    assert files_under(tmp_path) == before  # no log file, socket or pidfile was created


def test_check_ok_opens_nothing_new_and_says_ok(tmp_path):
    project(tmp_path, """
        app: app:app
        bind: ["127.0.0.1:0", "unix:sockets/app.sock"]
        log:
          error_log: logs/error.log
          access_log: logs/access.log
    """)
    (tmp_path / "logs").mkdir()
    (tmp_path / "sockets").mkdir()
    (tmp_path / "logs" / "error.log").write_text("old line\n")
    checked = run(tmp_path, "check", "-c", "server.yaml")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("arbiter check: OK: config server.yaml; app app:app loads")
    assert not (tmp_path / "logs" / "access.log").exists()
    assert not (tmp_path / "sockets" / "app.sock").exists()
    assert (tmp_path / "logs" / "error.log").read_text() == "old line\n"


# ---------------------------------------------------------------- B. ASGI


@pytest.mark.parametrize("spec", ["app:app", "app:function_app"])
def test_check_takes_an_asgi_app_for_asgi_and_refuses_it_on_a_wsgi_type(tmp_path, spec):
    project(tmp_path, "", app=ASGI_APP)
    checked = run(tmp_path, "check", spec)
    assert checked.returncode == 0, checked.stderr
    assert f"app {spec} loads; 2 asgi worker(s)" in checked.stdout
    checked = run(tmp_path, "check", "-k", "evented", spec)
    assert checked.returncode == 1
    [problem] = problem_lines(checked.stderr)
    assert problem.startswith(f"app {spec!r} is an ASGI application (async ")
    assert "(scope, receive, send)" in problem
    assert "but worker_type is 'evented', which serves WSGI apps: set worker_type: asgi" \
        in problem
    assert "OK" not in checked.stdout


# ---------------------------------------------------------------- C. settings that do nothing


def test_check_warns_that_threads_do_nothing_on_preforked_and_what_gunicorn_s_t_is(tmp_path):
    project(tmp_path, "app: app:app\n")
    checked = run(tmp_path, "check", "-k", "preforked", "-t", "30", "app:app")
    assert checked.returncode == 0, checked.stderr
    [warning] = [line for line in checked.stderr.splitlines() if "warning:" in line]
    assert warning.startswith("arbiter check: warning: threads: 30 (set by -t) has no effect "
                              "with worker_type preforked")
    assert "-t is --threads in arbiter; gunicorn's -t is --timeout" in warning
    assert "OK" in checked.stdout


def test_check_warns_about_max_connections_set_in_the_file_for_preforked(tmp_path):
    project(tmp_path, "app: app:app\nworker_type: preforked\nmax_connections: 50\n")
    checked = run(tmp_path, "check", "-c", "server.yaml")
    assert checked.returncode == 0, checked.stderr
    assert ("arbiter check: warning: max_connections: 50 (set by server.yaml:3) has no effect "
            "with worker_type preforked") in checked.stderr


def test_no_warning_where_the_setting_works_or_was_not_set(tmp_path):
    project(tmp_path, "app: app:app\n")
    for args in (["-k", "pooled", "-t", "30"], ["-k", "preforked"], ["-k", "evented",
                                                                     "--max-connections", "9"]):
        checked = run(tmp_path, "check", *args, "app:app")
        assert checked.returncode == 0, checked.stderr
        assert "warning" not in checked.stderr, (args, checked.stderr)


def test_start_logs_the_threads_warning_in_the_error_log(server):
    server.write_app(WSGI_APP)
    server.start("-b", f"127.0.0.1:{server.port}", "-w", "1", "-k", "preforked", "-t", "30",
                 "app:app")
    log = server.wait_log("[WARNING] threads: 30 (set by -t) has no effect with worker_type "
                          "preforked")
    assert "gunicorn's -t is --timeout" in log


# ---------------------------------------------------------------- C. gunicorn's spellings


def print_config(cwd: Path, *args: str, env: dict[str, str] | None = None
                 ) -> tuple[dict, dict[str, str], subprocess.CompletedProcess]:
    """``arbiter --print-config ARGS``: (the parsed YAML, key -> origin comment, the run)."""
    done = run(cwd, "--print-config", *args, env=env)
    assert done.returncode == 0, done.stderr
    origins: dict[str, str] = {}
    section = ""
    for line in done.stdout.splitlines():
        m = re.match(r"^(\s*)([a-z_]+):(.*?)(?:\s+#\s*(\S.*))?$", line)
        if not m:
            continue
        indent, key, value, origin = m.groups()
        if not indent and not value.strip():
            section = key + "."
            continue
        origins[(section if indent else "") + key] = origin
        if not indent:
            section = ""
    return yaml.safe_load(done.stdout), origins, done


def test_gunicorn_long_spellings_set_the_same_settings(tmp_path):
    config, origins, _ = print_config(
        tmp_path,
        "--keep-alive", "7",
        "--access-logfile", "-",
        "--error-logfile", "errors.log",
        "--limit-request-line", "0",
        "--limit-request-fields", "50",
        "--limit-request-field_size", "4096",
        "--forwarded-allow-ips", "10.0.0.1,10.0.0.2",
        "--certfile", "cert.pem", "--keyfile", "key.pem",
        "--worker-connections", "77",
        "--access-logformat", "%(h)s %(r)s",
        "--pid", "app.pid", "-D", "-n", "web",
    )
    expected = {
        "keepalive": (config["keepalive"], 7, "--keep-alive"),
        "log.access_log": (config["log"]["access_log"], "-", "--access-logfile"),
        "log.error_log": (config["log"]["error_log"], "errors.log", "--error-logfile"),
        "limits.request_line": (config["limits"]["request_line"], 0, "--limit-request-line"),
        "limits.header_fields": (config["limits"]["header_fields"], 50,
                                 "--limit-request-fields"),
        "limits.header_field_size": (config["limits"]["header_field_size"], 4096,
                                     "--limit-request-field_size"),
        "forwarded_allow_ips": (config["forwarded_allow_ips"], ["10.0.0.1", "10.0.0.2"],
                                "--forwarded-allow-ips"),
        "ssl.certfile": (config["ssl"]["certfile"], "cert.pem", "--certfile"),
        "ssl.keyfile": (config["ssl"]["keyfile"], "key.pem", "--keyfile"),
        "max_connections": (config["max_connections"], 77, "--worker-connections"),
        "log.access_format": (config["log"]["access_format"], "%(h)s %(r)s",
                              "--access-logformat"),
        "pidfile": (config["pidfile"], "app.pid", "--pid"),
        "daemon": (config["daemon"], True, "-D"),
        "proc_name": (config["proc_name"], "web", "-n"),
    }
    for name, (value, want, flag) in expected.items():
        assert value == want, name
        assert origins[name] == flag, name


@pytest.mark.parametrize(("gunicorn_class", "ours"), [("sync", "preforked"),
                                                      ("gthread", "pooled")])
def test_worker_class_maps_gunicorn_s_names_and_says_so(tmp_path, gunicorn_class, ours):
    config, origins, done = print_config(tmp_path, "--worker-class", gunicorn_class)
    assert config["worker_type"] == ours
    assert origins["worker_type"] == "--worker-class"
    assert (f"note: --worker-class {gunicorn_class}: gunicorn's {gunicorn_class!r} worker "
            f"class is arbiter's {ours!r} worker type") in done.stderr


def test_worker_class_maps_uvicorn_s_worker_to_asgi(tmp_path):
    config, origins, done = print_config(tmp_path, "--worker-class",
                                         "uvicorn.workers.UvicornWorker")
    assert config["worker_type"] == "asgi"
    assert ("'uvicorn.workers.UvicornWorker' is an ASGI worker class: arbiter's own is "
            "worker_type asgi") in done.stderr


@pytest.mark.parametrize(("gunicorn_class", "says"), [
    ("gevent", "arbiter does not monkey-patch"),
    ("myproject.workers.MyWorker", "is a worker class path"),
])
def test_worker_class_without_an_equivalent_is_an_error_naming_ours(tmp_path,
                                                                    gunicorn_class, says):
    project(tmp_path)
    checked = run(tmp_path, "check", "--worker-class", gunicorn_class, "app:app")
    assert checked.returncode == 1
    assert checked.stderr.startswith("arbiter check: --worker-class: worker_type: ")
    assert says in checked.stderr
    assert "forked, preforked, threaded, pooled, evented" in checked.stderr


def test_a_bad_value_through_an_alias_names_the_flag_typed(tmp_path):
    done = run(tmp_path, "--print-config", "--keep-alive", "soon")
    assert done.returncode == 1
    assert done.stderr.strip() == ("arbiter: --keep-alive: keepalive: expected a number >= 0, "
                                   "got 'soon'")


def test_a_gunicorn_python_config_file_is_named_as_such(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 4\n")
    done = run(tmp_path, "-c", "gunicorn.conf.py")
    assert done.returncode == 1
    assert "gunicorn.conf.py: is a Python file; arbiter's -c takes a YAML config file" \
        in done.stderr


def test_a_gunicorn_only_flag_gets_a_hint(tmp_path):
    done = run(tmp_path, "--statsd-host", "localhost:8125")
    assert done.returncode == 1
    assert "unrecognized arguments: --statsd-host" in done.stderr
    assert "gunicorn's --statsd-host: arbiter has no StatsD client" in done.stderr


def test_check_config_is_check(tmp_path):
    project(tmp_path, "app: app:app\nuser: no-such-user-here\n")
    done = run(tmp_path, "--check-config", "-c", "server.yaml")
    assert done.returncode == 1
    assert "arbiter check: user: no such user 'no-such-user-here'" in done.stderr


# ---------------------------------------------------------------- C. -e / --env


def test_env_reaches_the_app(server):
    server.write_app(WSGI_APP)
    server.start("-b", f"127.0.0.1:{server.port}", "-w", "1", "-e", "X=from the command line",
                 "-e", "UNUSED=1", "app:app")
    assert server.get("/").text == "from the command line"


def test_env_without_equals_is_a_command_line_error(tmp_path):
    done = run(tmp_path, "-e", "X", "--print-config")
    assert done.returncode == 1
    assert "argument -e/--env: expected KEY=VALUE, got 'X'" in done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------- C. --print-config


def test_print_config_is_yaml_with_origins_that_check_accepts_back(tmp_path):
    project(tmp_path, """
        app: app:app
        timeout: 12
        log:
          level: warning
    """)
    env = {"ARBITER_KEEPALIVE": "9", "WEB_CONCURRENCY": "3", "PORT": "5001"}
    config, origins, done = print_config(tmp_path, "-c", "server.yaml", "--max-requests",
                                         "100", env=env)
    assert done.stderr == ""
    assert (config["timeout"], origins["timeout"]) == (12, "server.yaml:3")
    assert (config["log"]["level"], origins["log.level"]) == ("warning", "server.yaml:5")
    assert (config["keepalive"], origins["keepalive"]) == (9, "ARBITER_KEEPALIVE")
    assert (config["workers"], origins["workers"]) == (3, "WEB_CONCURRENCY")
    assert (config["bind"], origins["bind"]) == (["0.0.0.0:5001"], "PORT")
    assert (config["max_requests"], origins["max_requests"]) == (100, "--max-requests")
    assert (config["threads"], origins["threads"]) == (4, "default")
    assert set(origins) >= {"app", "umask", "ssl.certfile", "hooks.on_exit"}

    (tmp_path / "printed.yaml").write_text(done.stdout)
    checked = run(tmp_path, "check", "-c", "printed.yaml")
    assert checked.returncode == 0, checked.stderr
    again, again_origins, _ = print_config(tmp_path, "-c", "printed.yaml")
    assert again == config
    assert again_origins["threads"].startswith("printed.yaml:")


def test_check_print_config_prints_then_checks(tmp_path):
    project(tmp_path, "app: app:app\n")
    done = run(tmp_path, "check", "--print-config", "-c", "server.yaml", "-w", "5")
    assert done.returncode == 0, done.stderr
    head, _, ok_line = done.stdout.rstrip("\n").rpartition("\n")
    assert yaml.safe_load(head)["workers"] == 5
    assert ok_line.startswith("arbiter check: OK:")


def test_print_config_starts_nothing(tmp_path):
    done = run(tmp_path, "--print-config", "--pidfile", "app.pid", "-b", "unix:app.sock")
    assert done.returncode == 0
    assert not (tmp_path / "app.pid").exists() and not (tmp_path / "app.sock").exists()
