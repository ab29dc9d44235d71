"""The ``arbiter`` command: argv + environment + YAML file -> a running master.

Owns the command line of CONTRACT §1: ``arbiter [-c FILE] [options] [APP]``,
``arbiter check``, ``arbiter ctl``, ``arbiter --version``, the mapping of
start-up failures to the contract's exit codes (1 config/command line, 2 bind,
3 app load), and the command-line habits brought from gunicorn: ``-e/--env``,
``--print-config``, ``--check-config``, and a hint when a gunicorn-only flag
is typed. The setting options themselves (and gunicorn's spellings of them)
come from the settings table in :mod:`arbiter.config`; what ``check`` verifies
beyond the config is :mod:`arbiter.preflight`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from arbiter import __version__, build
from arbiter.config import (
    Config,
    ConfigError,
    add_cli_options,
    cli_labels,
    cli_overrides,
    ineffective_settings,
    load_config,
    render_effective_yaml,
)

EXIT_USAGE = 1

# Gunicorn flags with no arbiter flag, and what to do instead (said when one is typed).
GUNICORN_ONLY_FLAGS = {
    "--proxy-protocol": "planned for a later release, as the proxy_protocol setting",
    "--statsd-host": "arbiter has no StatsD client; admin_bind serves Prometheus /metrics",
    "--ca-certs": "set ssl.ca_certs in the config file (in arbiter it also requires "
                  "client certificates, gunicorn's --cert-reqs 2)",
    "--cert-reqs": "set ssl.ca_certs in the config file: then every client must present "
                   "a certificate",
    "--worker-tmp-dir": "not needed: workers beat through shared memory, not temp files",
    "--log-config": "use the log.* settings (level, error_log, access_log, json)",
    "-m": "use --umask (a bare number is octal in arbiter: --umask 022)",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line exits 1 as the contract says (not 2), and a
    gunicorn-only flag gets a word on what to use instead."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        hints = ""
        if message.startswith("unrecognized arguments:"):
            for word in message.split(":", 1)[1].split():
                flag = word.split("=", 1)[0]
                if flag in GUNICORN_ONLY_FLAGS:
                    hints += f"{self.prog}: gunicorn's {flag}: {GUNICORN_ONLY_FLAGS[flag]}\n"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n{hints}")


def env_assignment(text: str) -> tuple[str, str]:
    """``-e KEY=VALUE`` -> (KEY, VALUE); argparse turns a bad form into exit 1."""
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[^\s=\0]+", key) or "\0" in value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


_EPILOG = (
    "Subcommands: 'arbiter check [-c FILE] [options] [APP]' checks what the start would "
    "fail on (the config, TLS files, log paths, user/group, pidfile and socket "
    "directories, binds, hooks, the app) without binding or starting anything; "
    "'arbiter ctl ...' controls a running master (status, scale, reload, reopen, stop: "
    "'arbiter ctl --help'). Settings layer as defaults < file < ARBITER_<KEY> "
    "environment < options. Coming from gunicorn: its long spellings (--keep-alive, "
    "--access-logfile, --error-logfile, --worker-class sync|gthread, ...) work too; "
    "-t is --threads here, gunicorn's -t is --timeout."
)


def build_parser(prog: str = "arbiter") -> argparse.ArgumentParser:
    """The parser of ``arbiter`` (start the server) or ``arbiter check``."""
    checking = prog.endswith("check")
    if checking:
        description = ("Check a config as the start would, without starting: load it, then "
                       "the TLS files, log paths, user/group, pidfile and control socket "
                       "directories, bind addresses (parsed and resolved, not bound), hooks, "
                       "worker type and the app (imported; WSGI or ASGI, it must fit the worker "
                       "type). Exit 0 "
                       "with an OK line, or 1 with every problem, one per line. Settings "
                       "that would have no effect are warnings (still exit 0).")
    else:
        description = "Run a WSGI or ASGI app under a supervising master process."
    parser = _Parser(prog=prog, description=description,
                     epilog=None if checking else _EPILOG)
    parser.add_argument("app_spec", nargs="?", metavar="APP",
                        help="the WSGI app as module:attr or module:factory() "
                             "(default: the file's 'app', else the built-in demo)")
    parser.add_argument("-c", "--config", metavar="FILE", help="the YAML config file")
    parser.add_argument("-e", "--env", metavar="KEY=VALUE", action="append", default=[],
                        type=env_assignment,
                        help="set an environment variable for the app (repeatable); "
                             + ("the app is imported with it" if checking else
                                "set in the master before any worker starts or the app "
                                "is preloaded"))
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective config as YAML, each value with where it "
                             "came from, then " + ("check it" if checking else
                                                   "exit 0 without starting anything"))
    if not checking:
        parser.add_argument("--check-config", action="store_true",
                            help="the same as 'arbiter check' (gunicorn's spelling)")
    parser.add_argument("--version", action="version", version=f"arbiter {__version__} ({build()})")
    add_cli_options(parser)
    return parser


def _overrides(ns: argparse.Namespace) -> dict[str, Any]:
    overrides = cli_overrides(ns)
    if ns.app_spec:
        overrides["app"] = ns.app_spec
    return overrides


def _load(ns: argparse.Namespace) -> Config:
    return load_config(ns.config, os.environ, _overrides(ns), cli_labels(ns))


def _say(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def _load_or_say(ns: argparse.Namespace, prog: str) -> Config | None:
    try:
        return _load(ns)
    except ConfigError as exc:
        for line in exc.errors:
            _say(prog, line)
        return None


def apply_env(assignments: Sequence[tuple[str, str]]) -> None:
    """``-e KEY=VALUE``: into this process's environment, which workers inherit."""
    for key, value in assignments:
        os.environ[key] = value


def _print_config(cfg: Config, ns: argparse.Namespace) -> None:
    comments = []
    if ns.env:
        keys = ", ".join(dict(ns.env))
        comments.append(f"-e sets {keys} in the app's environment (command line only, "
                        f"not a config key)")
    sys.stdout.write(render_effective_yaml(cfg, comments))
    sys.stdout.flush()


def check(ns: argparse.Namespace, prog: str = "arbiter check") -> int:
    """Validate the config and everything the start would fail on; exit 0 or 1."""
    from arbiter.preflight import check_warnings, find_problems

    cfg = _load_or_say(ns, prog)
    if cfg is None:
        return 1
    if ns.print_config:
        _print_config(cfg, ns)
    for note in cfg.notes:
        _say(prog, f"note: {note}")
    apply_env(ns.env)
    problems = find_problems(cfg)  # imports the app: the type that serves it is known
    for warning in ineffective_settings(cfg, problems.worker_type) + check_warnings(cfg):
        _say(prog, f"warning: {warning}")
    if problems:
        for problem in problems:
            _say(prog, problem)
        _say(prog, f"FAILED: {len(problems)} problem{'s' if len(problems) > 1 else ''}; "
                   f"the server would not start")
        return 1
    where = cfg.source or "defaults"
    print(f"{prog}: OK: config {where}; app {cfg.app} loads; "
          f"{cfg.workers} {problems.worker_type} worker(s) on {', '.join(cfg.bind)}")
    return 0


def run_check(argv: Sequence[str]) -> int:
    """``arbiter check``: validate the config and import the app; exit 0 or 1."""
    return check(build_parser("arbiter check").parse_args(argv))


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


def _percents(utilization: dict[str, float] | None, between: str = "") -> str:
    """Utilization by window as percents: "12% / 40%" (between given), or
    "12% (10s), 40% (60s)"."""
    if not utilization:
        return "-"
    if between:
        return between.join(f"{value:.0%}" for value in utilization.values())
    return ", ".join(f"{value:.0%} ({window})" for window, value in utilization.items())


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
        f"utilization: {_percents(status.get('utilization'))}",
        "",
        f"{'PID':>7} {'#':>3} {'GEN':>5} {'STATE':<9} {'AGE':>7} {'REQS':>8} {'INFL':>4} "
        f"{'RSS':>7} {'USS':>7} {'BEAT':>5} {'UTIL 10s/60s':>12}  CURRENT",
    ]
    for w in status["workers"]:
        current = ""
        if w["current"]:
            c = w["current"]
            current = f"{c['method']} {c['path']} ({c['age']:.1f}s)"
        # GEN: the generation, and after a dot the refork generation (forks from warm
        # workers since the master); a * marks the mold the next workers are forked from
        gen = str(w["generation"])
        if w.get("refork_generation"):
            gen += f".{w['refork_generation']}"
        gen += "*" if w.get("mold") else ""
        lines.append(
            f"{w['pid']:>7} {w['number']:>3} {gen:>5} {w['state']:<9} "
            f"{_age(w['age']):>7} {w['requests']:>8} {w['in_flight']:>4} {_mib(w['rss']):>7} "
            f"{_mib(w['uss']):>7} {w['last_heartbeat']:>4.1f}s "
            f"{_percents(w.get('utilization'), ' / '):>12}  {current}")
    restarts = ", ".join(f"{k} {v}" for k, v in status["restarts"].items() if v) or "none"
    lines += ["", f"restarts: {restarts}; reloads: {status['reloads']['succeeded']} ok, "
                  f"{status['reloads']['failed']} failed"]
    return "\n".join(lines)


def run_server(argv: Sequence[str]) -> int:
    """``arbiter [-c FILE] [options] [APP]``: start the master; its exit code."""
    ns = build_parser().parse_args(argv)
    if ns.check_config:
        return check(ns)
    from arbiter import logs
    from arbiter.master import Master, StartupError
    from arbiter.preflight import start_problems

    cfg = _load_or_say(ns, "arbiter")
    if cfg is None:
        return 1
    if ns.print_config:
        _print_config(cfg, ns)
        for note in cfg.notes:
            _say("arbiter", f"note: {note}")
        for warning in ineffective_settings(cfg):
            _say("arbiter", f"warning: {warning}")
        return 0
    problems = start_problems(cfg)
    if problems:
        for problem in problems:
            _say("arbiter", problem)
        return 1
    try:
        log = logs.setup_error_log(cfg.log.level, cfg.log.error_log, cfg.proc_name,
                                   json=cfg.log.json)
    except OSError as exc:
        _say("arbiter", f"log.error_log: cannot open error log {cfg.log.error_log!r}: "
                        f"{exc.strerror or exc}")
        return 1
    for note in cfg.notes:
        log.info("%s", note)
    for warning in ineffective_settings(cfg):
        log.warning("%s", warning)
    apply_env(ns.env)  # before the master preloads the app or forks a worker
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
        try:
            return run_ctl(args[1:])
        except BrokenPipeError:  # `arbiter ctl status | head`: the reader went away
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes
            return 1
    return run_server(args)


if __name__ == "__main__":
    raise SystemExit(main())
