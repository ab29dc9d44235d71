"""Preflight: what a valid config can still fail on when the server starts.

Owns the checks ``arbiter check`` runs after the config has loaded, so that it
fails on what ``arbiter -c FILE`` would fail on: the TLS context, every log
target, ``user``/``group``, the pidfile's and the control socket's
directories, every bind address and ``admin_bind`` (parsed and resolved,
never bound), ``chdir``, the hooks, the worker type, and the app itself
(imported; its kind, WSGI or ASGI, must fit the worker type). Each problem is one message that starts
with the setting it is about, in the words the server's start uses where it
has words for it; every problem is reported, not just the first.

Nothing here binds a socket or creates a file: an existing log file is
opened for appending and closed, a missing one is only checked for a
writable directory. ``start_problems`` is the part the server runs itself
before it starts the master (the error log, ``chdir``, the access log), so a
bad path is exit 1 with a message instead of a traceback or a crash loop.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from types import SimpleNamespace
from typing import Any

from arbiter.config import Config

__all__ = ["chdir_problem", "check_warnings", "find_problems", "log_target_problem",
           "start_problems"]

# How each log setting is named in the messages of arbiter.logs.
_LOG_TARGETS = (("log.error_log", "error log"), ("log.access_log", "access log"))


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _at(path: str, base: str | None) -> str:
    """``path`` as the server will open it: relative paths are taken from ``base``
    (the ``chdir`` the master changes into before it opens them)."""
    return path if base is None or os.path.isabs(path) else os.path.join(base, path)


def log_target_problem(setting: str, target: str | None, base: str | None = None) -> str | None:
    """Can the log ``target`` of ``setting`` be opened for appending? None when it can.

    ``"-"`` (stderr/stdout) and, for the error log, ``"syslog"`` are always
    fine. A path needs an existing directory; an existing file must open for
    appending (it is opened and closed); a missing one needs a writable
    directory (nothing is created).
    """
    if target is None or target == "-" or (setting == "log.error_log" and target == "syslog"):
        return None
    what = dict(_LOG_TARGETS)[setting]
    path = _at(target, base)
    parent = os.path.dirname(os.path.abspath(path))
    prefix = f"{setting}: cannot open {what} {target!r}"
    if not os.path.isdir(parent):
        return f"{prefix}: directory {parent!r} does not exist"
    if os.path.exists(path):
        try:  # append mode, as the server opens it; O_NONBLOCK: a FIFO can't hang the check
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return None  # a FIFO nobody reads yet: the server would wait for a reader
            return f"{prefix}: {_strerror(exc)}"
        return None
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{prefix}: Permission denied (directory {parent!r} is not writable)"
    return None


def chdir_problem(cfg: Config) -> str | None:
    """Is ``chdir`` a directory the master can change into? None when it is (or unset)."""
    if not cfg.chdir:
        return None
    if not os.path.isdir(cfg.chdir):
        return f"chdir: cannot change into {cfg.chdir!r}: no such directory"
    if not os.access(cfg.chdir, os.X_OK):
        return f"chdir: cannot change into {cfg.chdir!r}: Permission denied"
    return None


def start_problems(cfg: Config) -> list[str]:
    """What the server checks itself before the master starts: the error log (opened
    before ``chdir``), ``chdir``, and the access log (opened by every worker after it)."""
    problems = []
    for problem in (log_target_problem("log.error_log", cfg.log.error_log),
                    chdir_problem(cfg),
                    log_target_problem("log.access_log", cfg.log.access_log, cfg.chdir)):
        if problem:
            problems.append(problem)
    return problems


def _directory_problem(setting: str, path: str) -> str | None:
    """The words of the master's pidfile check, for any file it creates at start."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK):
        return f"{setting} {path}: directory {directory} is not writable"
    return None


def _bind_problems(cfg: Config) -> list[str]:
    from arbiter.sockets import parse_address

    problems = []
    for text in cfg.bind:
        try:
            address = parse_address(text)
        except ValueError as exc:
            problems.append(f"bind: cannot bind {exc}")
            continue
        if address.family == socket.AF_UNIX:
            directory = os.path.dirname(os.path.abspath(_at(address.path, cfg.chdir)))
            if not os.path.isdir(directory):
                problems.append(f"bind: cannot bind {text}: directory {directory} does not "
                                f"exist")
            elif not os.access(directory, os.W_OK | os.X_OK):
                problems.append(f"bind: cannot bind {text}: Permission denied (directory "
                                f"{directory} is not writable)")
        elif address.family == socket.AF_INET:  # [v6] literals need no resolving
            try:
                socket.getaddrinfo(address.host, address.port, socket.AF_UNSPEC,
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
            except OSError as exc:
                problems.append(f"bind: cannot bind {text}: {_strerror(exc)}")
        # fd://N: a socket the service manager passes at start; nothing to check here.
    return problems


def _admin_bind_problem(cfg: Config) -> str | None:
    from arbiter.sockets import parse_address

    if not cfg.admin_bind:
        return None
    try:
        address = parse_address(cfg.admin_bind)
    except ValueError as exc:
        return f"admin_bind: cannot bind admin_bind {cfg.admin_bind}: {exc}"
    if address.family == socket.AF_INET:
        try:
            socket.getaddrinfo(address.host, address.port, socket.AF_UNSPEC,
                               socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        except OSError as exc:
            return f"admin_bind: cannot bind admin_bind {cfg.admin_bind}: {_strerror(exc)}"
    elif address.family != socket.AF_INET6:
        return f"admin_bind: {cfg.admin_bind!r}: admin_bind takes host:port or [v6]:port"
    return None


def _hook_problems(cfg: Config) -> list[str]:
    from arbiter.hooks import HOOK_NAMES, HookError, load_hooks

    problems = []
    log = logging.getLogger("arbiter.preflight")
    for name in HOOK_NAMES:  # one at a time: load_hooks stops at the first it can't import
        if not getattr(cfg.hooks, name):
            continue
        try:
            load_hooks(SimpleNamespace(**{name: getattr(cfg.hooks, name)}), log)
        except HookError as exc:
            problems.append(str(exc))
    return problems


class Problems(list):
    """The problems :func:`find_problems` found; ``worker_type`` is the type that would
    serve the app (asgi for an ASGI app when the config sets none)."""

    worker_type: str = ""


def _app_problem(cfg: Config, problems: Problems) -> str | None:
    from arbiter.appload import (
        AppKindError,
        AppLoadError,
        load_app,
        serving_worker_type,
        worker_type_chosen,
    )

    try:
        app: Any = load_app(cfg.app)
    except AppLoadError as exc:
        return f"app: {exc}"
    try:
        problems.worker_type = serving_worker_type(cfg.app, app, cfg.worker_type,
                                                   worker_type_chosen(cfg))
    except AppKindError as exc:
        return str(exc)
    return None


def find_problems(cfg: Config) -> Problems:
    """Everything a valid ``cfg`` would still fail on at start; [] when it would start.

    Runs in the order the server meets them. It changes into ``chdir`` and
    puts ``pythonpath`` on ``sys.path`` (to import the hooks and the app, as
    the master does), so call it in a process that is about to exit.
    """
    from arbiter.appload import prepare_import_path
    from arbiter.master import resolve_identity
    from arbiter.tls import server_context
    from arbiter.workers import worker_class

    problems = Problems()
    problems.worker_type = cfg.worker_type

    def note(problem: str | None) -> None:
        if problem:
            problems.append(problem)

    note(log_target_problem("log.error_log", cfg.log.error_log))  # opened before chdir
    chdir = chdir_problem(cfg)
    note(chdir)
    try:
        prepare_import_path(None if chdir else cfg.chdir, cfg.pythonpath)
    except OSError as exc:
        note(f"chdir: cannot change into {cfg.chdir!r}: {_strerror(exc)}")
    # From here on relative paths are taken from the new working directory, as at start.
    note(log_target_problem("log.access_log", cfg.log.access_log))
    try:
        server_context(cfg.ssl)
    except ValueError as exc:
        note(str(exc))
    try:
        resolve_identity(cfg.user, cfg.group)
    except ValueError as exc:
        note(str(exc))
    if cfg.pidfile:
        note(_directory_problem("pidfile", cfg.pidfile))
    if cfg.control_socket:
        note(_directory_problem("control_socket", cfg.control_socket))
    problems.extend(_bind_problems(cfg))
    note(_admin_bind_problem(cfg))
    problems.extend(_hook_problems(cfg))
    try:
        worker_class(cfg.worker_type)
    except ValueError as exc:
        message = str(exc)
        note(message if message.startswith(("worker_type", "unknown worker_type"))
             else f"worker_type: {message}")
    note(_app_problem(cfg, problems))
    return problems


def check_warnings(cfg: Config) -> list[str]:
    """Things that start but likely not as meant (not problems: check still exits 0)."""
    warnings = []
    if cfg.log.access_log == "syslog":
        warnings.append("log.access_log: 'syslog' is a file name here (the access log has no "
                        "syslog target; the error log has): lines go to a file named syslog")
    return warnings
