"""The ``arbiter`` command: argv + environment + YAML file -> a running master.

Owns the command line of CONTRACT §1: ``arbiter [-c FILE] [options] [APP]``,
``arbiter check``, ``arbiter ctl`` (a later release), ``arbiter --version``,
and the mapping of start-up failures to the contract's exit codes
(1 config/command line, 2 bind, 3 app load). The options themselves come from
the settings table in :mod:`arbiter.config`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from arbiter import __version__
from arbiter.config import ConfigError, add_cli_options, cli_overrides, load_config

EXIT_USAGE = 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line exits 1 as the contract says (not 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(prog: str = "arbiter") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Run a WSGI app under a supervising master process.",
        epilog="Subcommands: 'arbiter check -c FILE' validates a config and imports its app; "
               "'arbiter ctl ...' controls a running master (a later release). "
               "Settings layer as defaults < file < ARBITER_<KEY> environment < options.",
    )
    parser.add_argument("app_spec", nargs="?", metavar="APP",
                        help="the WSGI app as module:attr or module:factory() "
                             "(default: the file's 'app', else the built-in demo)")
    parser.add_argument("-c", "--config", metavar="FILE", help="the YAML config file")
    parser.add_argument("--version", action="version", version=f"arbiter {__version__}")
    add_cli_options(parser)
    return parser


def _overrides(ns: argparse.Namespace) -> dict[str, Any]:
    overrides = cli_overrides(ns)
    if ns.app_spec:
        overrides["app"] = ns.app_spec
    return overrides


def _load(ns: argparse.Namespace) -> Any:
    return load_config(ns.config, os.environ, _overrides(ns))


def run_check(argv: Sequence[str]) -> int:
    """``arbiter check``: validate the config and import the app; exit 0 or 1."""
    from arbiter.appload import AppLoadError, load_app, prepare_import_path
    from arbiter.workers import worker_class

    ns = build_parser("arbiter check").parse_args(argv)
    try:
        cfg = _load(ns)
    except ConfigError as exc:
        print(f"arbiter check: {exc}", file=sys.stderr)
        return 1
    try:
        worker_class(cfg.worker_type)
    except ValueError as exc:
        print(f"arbiter check: {exc}", file=sys.stderr)
        return 1
    try:
        prepare_import_path(cfg.chdir, cfg.pythonpath)
        load_app(cfg.app)
    except (AppLoadError, OSError) as exc:
        print(f"arbiter check: {exc}", file=sys.stderr)
        return 1
    where = cfg.source or "defaults"
    print(f"arbiter check: OK: config {where}; app {cfg.app} loads; "
          f"{cfg.workers} {cfg.worker_type} worker(s) on {', '.join(cfg.bind)}")
    return 0


def build_ctl_parser() -> argparse.ArgumentParser:
    # -c/-s are accepted before or after the command: `arbiter ctl -c x.yaml status`
    # and `arbiter ctl status -c x.yaml` both work.
    where = _Parser(add_help=False)
    group = where.add_mutually_exclusive_group()
    group.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="find the socket from this config (control_socket, or next to "
                            "the pidfile)")
    group.add_argument("-s", "--socket", metavar="SOCK", default=argparse.SUPPRESS,
                       help="the control socket itself")
    parser = _Parser(prog="arbiter ctl", parents=[where],
                     description="Control a running arbiter master through its control socket.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)
    status = commands.add_parser("status", parents=[where], help="the master and every worker")
    status.add_argument("--json", action="store_true", help="one JSON object")
    scale = commands.add_parser("scale", parents=[where],
                                help="set the worker count: N, +N or -N")
    scale.add_argument("workers", metavar="N|+N|-N")
    commands.add_parser("reload", parents=[where],
                        help="reload as a transaction; exit 0 when the new generation serves, "
                             "1 when it rolled back")
    commands.add_parser("reopen", parents=[where], help="reopen log files (like USR1)")
    stop = commands.add_parser("stop", parents=[where], help="graceful stop (like TERM)")
    stop.add_argument("--now", action="store_true", help="fast stop (like INT)")
    return parser


def run_ctl(argv: Sequence[str]) -> int:
    """``arbiter ctl``: talk to a running master; exit 0 on success, 1 otherwise."""
    from arbiter import control

    ns = build_ctl_parser().parse_args(argv)
    path = getattr(ns, "socket", None)
    if not path:
        try:
            cfg = load_config(getattr(ns, "config", None), os.environ, {})
        except ConfigError as exc:
            print(f"arbiter ctl: {exc}", file=sys.stderr)
            return 1
        path = cfg.control_socket or control.default_socket_path(cfg.pidfile)
        if not path:
            print("arbiter ctl: no control socket: set control_socket (or a pidfile) in the "
                  "config, or name the socket with -s", file=sys.stderr)
            return 1
    command: dict[str, Any] = {"command": ns.command}
    if ns.command == "scale":
        command["workers"] = ns.workers
    if ns.command == "stop":
        command["now"] = ns.now
    timeout = 10.0
    if ns.command == "reload":  # waits for the new generation: up to boot_timeout and more
        timeout = 600.0
    try:
        answer = control.request(path, command, timeout=timeout)
    except control.ControlError as exc:
        print(f"arbiter ctl: {exc}", file=sys.stderr)
        return 1
    if ns.command == "status":
        if not answer.get("ok"):
            print(f"arbiter ctl: {answer.get('error')}", file=sys.stderr)
            return 1
        if ns.json:
            print(json.dumps(answer["status"], indent=2))
        else:
            print(format_status(answer["status"]))
        return 0
    message = answer.get("outcome") or answer.get("error") or ""
    print(f"arbiter ctl {ns.command}: {'ok' if answer.get('ok') else 'FAILED'}: {message}",
          file=sys.stdout if answer.get("ok") else sys.stderr)
    return 0 if answer.get("ok") else 1


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1048576:.1f}M"


def format_status(status: dict[str, Any]) -> str:
    """The human table of ``arbiter ctl status``."""
    master = status["master"]
    lines = [
        f"master pid {master['pid']}, up {_age(master['uptime'])}, "
        f"config {master['config'] or '(none)'}",
        f"{master['worker_type']} workers: {len(status['workers'])} running, target "
        f"{master['target_workers']}, generation {master['generation']}"
        + (", reloading" if master["reloading"] else "")
        + (f", stopping ({master['stopping']})" if master["stopping"] else "")
        + (f", crash-loop backoff ({master['crash_loop_failures']} failures)"
           if master["crash_loop_failures"] else ""),
        f"listening on {', '.join(master['listeners']) or '(nothing)'}",
        f"requests served: {status['requests']['total']}",
        "",
        f"{'PID':>7} {'#':>3} {'GEN':>3} {'STATE':<9} {'AGE':>7} {'REQS':>8} {'INFL':>4} "
        f"{'RSS':>7} {'USS':>7} {'BEAT':>5}  CURRENT",
    ]
    for w in status["workers"]:
        current = ""
        if w["current"]:
            c = w["current"]
            current = f"{c['method']} {c['path']} ({c['age']:.1f}s)"
        lines.append(
            f"{w['pid']:>7} {w['number']:>3} {w['generation']:>3} {w['state']:<9} "
            f"{_age(w['age']):>7} {w['requests']:>8} {w['in_flight']:>4} {_mib(w['rss']):>7} "
            f"{_mib(w['uss']):>7} {w['last_heartbeat']:>4.1f}s  {current}")
    restarts = ", ".join(f"{k} {v}" for k, v in status["restarts"].items() if v) or "none"
    lines += ["", f"restarts: {restarts}; reloads: {status['reloads']['succeeded']} ok, "
                  f"{status['reloads']['failed']} failed"]
    return "\n".join(lines)


def run_server(argv: Sequence[str]) -> int:
    ns = build_parser().parse_args(argv)
    from arbiter import logs
    from arbiter.master import Master, StartupError

    try:
        cfg = _load(ns)
    except ConfigError as exc:
        print(f"arbiter: {exc}", file=sys.stderr)
        return 1
    try:
        log = logs.setup_error_log(cfg.log.level, cfg.log.error_log, cfg.proc_name,
                                   json=cfg.log.json)
    except OSError as exc:
        print(f"arbiter: cannot open the error log {cfg.log.error_log}: {exc}", file=sys.stderr)
        return 1
    os.umask(cfg.umask)
    # A reload re-reads the same file even after `chdir` moved the working directory.
    if ns.config:
        ns.config = os.path.abspath(ns.config)
    master = Master(cfg, lambda: _load(ns), log)
    try:
        master.start()
    except StartupError as exc:
        log.error("%s", exc)
        if cfg.log.error_log != "-":
            print(f"arbiter: {exc}", file=sys.stderr)
        return exc.code
    return master.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "check":
        return run_check(args[1:])
    if args and args[0] == "ctl":
        return run_ctl(args[1:])
    return run_server(args)


if __name__ == "__main__":
    raise SystemExit(main())
