"""Server hooks: user functions called at fixed points of the master's and workers' lives.

Owns loading the ``hooks.*`` settings (each ``module:function``) and calling
them so that a hook that raises is logged and never takes the master (or a
worker) down. The points and their arguments:

=============== ============================ ==========================================
hook            where it runs                arguments
=============== ============================ ==========================================
on_starting     master, before it binds      ``(master)``
when_ready      master, first generation up  ``(master)``
pre_fork        master, before each fork     ``(master, worker)`` — the master's record
post_fork       worker, right after the fork ``(master, worker)`` — the Worker object
worker_exit     master, a worker was reaped  ``(master, worker)`` — the master's record
on_reload       master, HUP / ctl reload     ``(master)``
on_exit         master, just before exit     ``(master)``
=============== ============================ ==========================================

``master`` is the :class:`arbiter.master.Master`; its ``cfg`` and ``snapshot()``
are the stable parts to use.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

HOOK_NAMES = ("on_starting", "when_ready", "pre_fork", "post_fork", "worker_exit",
              "on_reload", "on_exit")


class HookError(Exception):
    """A hook named in the config cannot be imported."""


class Hooks:
    """The loaded hooks of one config."""

    def __init__(self, functions: dict[str, Callable[..., Any]], log: logging.Logger) -> None:
        self.functions = functions
        self.log = log

    def call(self, name: str, *args: Any) -> None:
        function = self.functions.get(name)
        if function is None:
            return
        try:
            function(*args)
        except Exception:
            self.log.exception("hook %s (%s) raised; carrying on", name,
                               getattr(function, "__qualname__", function))


def load_hooks(hooks_cfg: Any, log: logging.Logger) -> Hooks:
    """Import every configured hook; HookError names the first that can't be imported."""
    functions: dict[str, Callable[..., Any]] = {}
    for name in HOOK_NAMES:
        spec = getattr(hooks_cfg, name, None)
        if not spec:
            continue
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            function = getattr(module, attr)
        except Exception as exc:
            raise HookError(f"hooks.{name}: cannot import {spec!r}: "
                            f"{type(exc).__name__}: {exc}") from None
        if not callable(function):
            raise HookError(f"hooks.{name}: {spec!r} is not callable")
        functions[name] = function
    return Hooks(functions, log)
