"""Loading the WSGI application named by the ``app`` setting.

Owns the forms ``module:attr``, ``module:attr.sub`` and ``module:factory()``
(a factory called with no arguments), plus ``module`` alone, which looks for
``application`` then ``app``. Failures raise AppLoadError carrying the full
import traceback, so the master can print it and exit 3.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any


class AppLoadError(Exception):
    """The app could not be loaded; str() is the reason with the traceback, ``summary``
    one line for a deploy script (the exception's last line, ``ImportError: ...``)."""

    def __init__(self, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        lines = message.strip().splitlines()
        self.summary = summary or (lines[-1] if lines else "")


def _exception_line() -> str:
    """The current exception as its traceback's last line: ``ImportError: no module x``."""
    return "".join(traceback.format_exception_only(*sys.exc_info()[:2])).strip().splitlines()[-1]


def prepare_import_path(chdir: str | None, pythonpath: Iterable[str]) -> None:
    """chdir if asked, then put the extra paths and the working directory first on sys.path."""
    if chdir:
        os.chdir(chdir)
    for path in reversed([os.getcwd(), *pythonpath]):
        path = os.path.abspath(path)
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def forget_project_modules(roots: Iterable[str]) -> list[str]:
    """Drop from sys.modules every module whose file lies under one of ``roots``
    (the project's own code: its directory and ``pythonpath``), so that the next
    import reads the files again. Used by a HUP with ``preload_app``: libraries
    in site-packages stay loaded (a new release of those needs USR2)."""
    prefixes = tuple(os.path.join(os.path.abspath(root), "") for root in roots)
    stdlib = tuple(os.path.join(os.path.abspath(p), "") for p in
                   {sys.prefix, sys.base_prefix, sys.exec_prefix} if p)
    forgotten = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        path = os.path.abspath(path)
        if path.startswith(prefixes) and not path.startswith(stdlib) \
                and not name.startswith("arbiter"):
            del sys.modules[name]
            forgotten.append(name)
    importlib.invalidate_caches()
    return forgotten


def load_app(spec: str) -> Callable[..., Any]:
    """Import and return the WSGI callable named by ``spec``."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AppLoadError(f"cannot import module {module_name!r} for app {spec!r}:\n"
                           f"{traceback.format_exc()}", _exception_line()) from None
    call = attr.endswith("()")
    if call:
        attr = attr[:-2]
    names = attr.split(".") if attr else []
    if not names:
        for default in ("application", "app"):
            if hasattr(module, default):
                names = [default]
                break
        else:
            raise AppLoadError(f"app {spec!r}: module {module_name!r} has no 'application' "
                               f"or 'app'; name it as {module_name}:NAME")
    target: Any = module
    for name in names:
        try:
            target = getattr(target, name)
        except AttributeError:
            raise AppLoadError(f"app {spec!r}: {module_name!r} has no attribute "
                               f"{'.'.join(names)!r}") from None
    if call:
        try:
            target = target()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise AppLoadError(f"app factory {spec!r} raised:\n{traceback.format_exc()}",
                               _exception_line()) from None
    if not callable(target):
        raise AppLoadError(f"app {spec!r} is not callable (got {type(target).__name__})")
    return target
