"""Unit tests for the command line (arbiter.cli), ASGI detection (arbiter.appload) and
the preflight checks (arbiter.preflight): no server, no sockets bound."""

from __future__ import annotations

import argparse
import functools
import os
import socket
from pathlib import Path

import pytest

from arbiter import preflight
from arbiter.appload import AppKindError, asgi2_reason, asgi_reason, serving_worker_type
from arbiter.cli import build_ctl_parser, build_parser, env_assignment
from arbiter.config import cli_labels, cli_overrides, load_config

pytestmark = pytest.mark.timeout(10)


# ---------------------------------------------------------------- ASGI detection


class StarletteLike:
    async def __call__(self, scope, receive, send):
        pass


class WSGIObject:
    def __call__(self, environ, start_response):
        return []


async def asgi_function(scope, receive, send):
    pass


async def asgi_with_settings(settings, scope, receive, send):
    pass


def wsgi_function(environ, start_response):
    return []


async def async_two_arguments(environ, start_response):
    pass


@functools.wraps(asgi_function)
def passthrough_wrapper(*args, **kwargs):
    return asgi_function(*args, **kwargs)


@functools.wraps(asgi_function)
def wsgi_adapter(environ, start_response):  # a WSGI callable that names the ASGI app it wraps
    return []


@pytest.mark.parametrize(("app", "reason"), [
    (StarletteLike(), "an ASGI application (async __call__(scope, receive, send))"),
    (asgi_function, "an ASGI application (async def asgi_function(scope, receive, send))"),
    (functools.partial(asgi_with_settings, {}),
     "an ASGI application (functools.partial of async def asgi_with_settings"
     "(scope, receive, send))"),
    (functools.partial(StarletteLike()),
     "an ASGI application (functools.partial of async __call__(scope, receive, send))"),
    (passthrough_wrapper,
     "an ASGI application (a wrapper of async def asgi_function(scope, receive, send))"),
])
def test_asgi_apps_are_recognised(app, reason):
    assert asgi_reason(app) == reason


@pytest.mark.parametrize("app", [
    wsgi_function, WSGIObject(), wsgi_adapter, async_two_arguments, StarletteLike, print,
    functools.partial(wsgi_function),
])
def test_wsgi_callables_are_not_asgi(app):
    assert asgi_reason(app) is None


class ASGI2App:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        pass


def test_asgi2_double_callables_are_recognised():
    assert asgi2_reason(ASGI2App) == ("an ASGI 2 application (class ASGI2App, async "
                                      "__call__(receive, send))")
    for app in (StarletteLike, StarletteLike(), WSGIObject, wsgi_function, asgi_function):
        assert asgi2_reason(app) is None


def test_an_asgi_app_picks_asgi_unless_a_wsgi_type_was_chosen():
    assert serving_worker_type("fa:app", StarletteLike(), "preforked", False) == "asgi"
    assert serving_worker_type("fa:app", ASGI2App, "preforked", False) == "asgi"
    assert serving_worker_type("fa:app", StarletteLike(), "asgi", True) == "asgi"
    assert serving_worker_type("w:app", wsgi_function, "preforked", False) == "preforked"
    assert serving_worker_type("w:app", wsgi_function, "pooled", True) == "pooled"
    with pytest.raises(AppKindError) as info:
        serving_worker_type("fa:app", StarletteLike(), "threaded", True)
    message = str(info.value)
    assert message.startswith("app 'fa:app' is an ASGI application (async __call__(scope, "
                              "receive, send)), not a WSGI callable, but worker_type is "
                              "'threaded'")
    assert "set worker_type: asgi" in message
    with pytest.raises(AppKindError, match="app 'w:app' is not an ASGI application .* but "
                                           "worker_type is 'asgi'"):
        serving_worker_type("w:app", wsgi_function, "asgi", True)


# ---------------------------------------------------------------- the parser


def parse(*args: str) -> argparse.Namespace:
    return build_parser().parse_args(list(args))


def test_env_assignments_parse_and_bad_forms_are_errors():
    assert env_assignment("X=1") == ("X", "1")
    assert env_assignment("URL=a=b") == ("URL", "a=b")
    assert env_assignment("EMPTY=") == ("EMPTY", "")
    for bad in ("X", "=1", "A B=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
            env_assignment(bad)
    assert parse("-e", "A=1", "--env", "B=2").env == [("A", "1"), ("B", "2")]


def test_a_bad_env_exits_1(capsys):
    with pytest.raises(SystemExit) as info:
        parse("-e", "NOEQUALS")
    assert info.value.code == 1
    assert "expected KEY=VALUE, got 'NOEQUALS'" in capsys.readouterr().err


def test_a_gunicorn_only_flag_gets_a_hint(capsys):
    with pytest.raises(SystemExit) as info:
        parse("--statsd-host", "localhost:8125")
    assert info.value.code == 1
    assert "gunicorn's --statsd-host: arbiter has no StatsD client" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "name", "value", "label"), [
    (["--keep-alive", "7"], "keepalive", 7, "--keep-alive"),
    (["--access-logfile", "-"], "log.access_log", "-", "--access-logfile"),
    (["--error-logfile", "e.log"], "log.error_log", "e.log", "--error-logfile"),
    (["--log-file", "e.log"], "log.error_log", "e.log", "--log-file"),
    (["--limit-request-line", "0"], "limits.request_line", 0, "--limit-request-line"),
    (["--limit-request-fields", "20"], "limits.header_fields", 20, "--limit-request-fields"),
    (["--limit-request-field_size", "99"], "limits.header_field_size", 99,
     "--limit-request-field_size"),
    (["--forwarded-allow-ips", "10.0.0.1,10.0.0.2"], "forwarded_allow_ips",
     ("10.0.0.1", "10.0.0.2"), "--forwarded-allow-ips"),
    (["--certfile", "c.pem"], "ssl.certfile", "c.pem", "--certfile"),
    (["--worker-class", "sync"], "worker_type", "preforked", "--worker-class"),
    (["-k", "gthread"], "worker_type", "pooled", "-k"),
    (["--worker-connections", "5"], "max_connections", 5, "--worker-connections"),
    (["--access-logformat", "%(h)s"], "log.access_format", "%(h)s", "--access-logformat"),
    (["-p", "x.pid"], "pidfile", "x.pid", "-p"),
    (["--pid", "x.pid"], "pidfile", "x.pid", "--pid"),
    (["-D"], "daemon", True, "-D"),
    (["-u", "nobody"], "user", "nobody", "-u"),
    (["-g", "nogroup"], "group", "nogroup", "-g"),
    (["-n", "web"], "proc_name", "web", "-n"),
    (["--pythonpath", "a,b"], "pythonpath", ("a", "b"), "--pythonpath"),
    (["-t", "8"], "threads", 8, "-t"),
    (["--threads", "8"], "threads", 8, "--threads"),
])
def test_spellings_reach_the_setting_and_origins_name_the_flag_typed(args, name, value, label):
    ns = parse(*args)
    cfg = load_config(None, {}, cli_overrides(ns), cli_labels(ns))
    assert cfg.get(name) == value
    assert cfg.origin(name) == label


def test_help_texts_match_the_code():
    main_help = build_parser().format_help()
    assert "later release" not in main_help
    assert "'arbiter ctl ...' controls a running master" in main_help
    assert "--print-config" in main_help and "-e KEY=VALUE" in main_help
    check_help = build_parser("arbiter check").format_help()
    assert check_help.count("Run a WSGI app") == 0
    assert "without starting" in check_help
    assert "--check-config" not in check_help
    ctl_help = build_ctl_parser().format_help()
    for command in ("status", "scale", "reload", "reopen", "stop"):
        assert command in ctl_help


# ---------------------------------------------------------------- preflight


def test_log_targets(tmp_path: Path):
    check = preflight.log_target_problem
    assert check("log.error_log", "-") is None
    assert check("log.error_log", "syslog") is None
    assert check("log.access_log", None) is None
    assert check("log.access_log", str(tmp_path / "new.log")) is None
    assert not (tmp_path / "new.log").exists()  # nothing created
    missing = tmp_path / "missing" / "a.log"
    assert check("log.access_log", str(missing)) == (
        f"log.access_log: cannot open access log {str(missing)!r}: directory "
        f"{str(missing.parent)!r} does not exist")
    assert check("log.error_log", str(tmp_path)) == (
        f"log.error_log: cannot open error log {str(tmp_path)!r}: Is a directory")
    # Relative to the chdir the workers open it from.
    (tmp_path / "logs").mkdir()
    assert check("log.access_log", "logs/a.log", str(tmp_path)) is None
    assert check("log.access_log", "nope/a.log", str(tmp_path)) is not None


def test_a_fifo_log_target_does_not_hang_the_check(tmp_path: Path):
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    assert preflight.log_target_problem("log.access_log", str(fifo)) is None


def test_access_log_syslog_is_a_file_and_check_warns(tmp_path: Path):
    cfg = load_config(None, {}, {"log.access_log": "syslog"})
    [warning] = preflight.check_warnings(cfg)
    assert warning.startswith("log.access_log: 'syslog' is a file name here")


def test_binds_that_do_not_resolve_are_problems(monkeypatch: pytest.MonkeyPatch):
    def no_such_host(host, *args, **kwargs):
        if host == "db.internal":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    cfg = load_config(None, {}, {"bind": ["db.internal:80", "127.0.0.1:0", "[::1]:0",
                                          "fd://3"],
                                 "admin_bind": "db.internal:9000"})
    assert preflight._bind_problems(cfg) == [
        "bind: cannot bind db.internal:80: Name or service not known"]
    assert preflight._admin_bind_problem(cfg) == (
        "admin_bind: cannot bind admin_bind db.internal:9000: Name or service not known")


def test_chdir_that_does_not_exist(tmp_path: Path):
    cfg = load_config(None, {}, {"chdir": str(tmp_path / "gone")})
    assert preflight.chdir_problem(cfg) == (
        f"chdir: cannot change into {str(tmp_path / 'gone')!r}: no such directory")
    assert preflight.start_problems(cfg) == [preflight.chdir_problem(cfg)]
