"""The ``arbiter`` command: argv + environment + YAML file -> a running master.

Owns the command line of CONTRACT §1: ``arbiter [-c FILE] [options] [APP]``,
``arbiter check``, ``arbiter ctl`` (a later release), ``arbiter --version``,
and the mapping of start-up failures to the contract's exit codes
(1 config/command line, 2 bind, 3 app load). The options themselves come from
the settings table in :mod:`arbiter.config`.
"""

from __future__ import annotations

import argparse
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
        log = logs.setup_error_log(cfg.log.level, cfg.log.error_log, cfg.proc_name)
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
        print("arbiter ctl: the control socket arrives in a later release; "
              "use signals for now (see the README)", file=sys.stderr)
        return 1
    return run_server(args)


if __name__ == "__main__":
    raise SystemExit(main())
