"""Loading the application named by the ``app`` setting, and telling WSGI from ASGI.

Owns the forms ``module:attr``, ``module:attr.sub`` and ``module:factory()``
(a factory called with no arguments), plus ``module`` alone, which looks for
``application`` then ``app``. Failures raise AppLoadError carrying the full
import traceback, so the master can print it and exit 3.

Also owns the one rule that matches an app to a worker type
(:func:`serving_worker_type`): an ASGI app (3, or 2 "double callable") is served
by ``asgi``, picked by itself when ``worker_type`` is unset; an ASGI app on a
WSGI type, or a WSGI app on ``asgi``, is an :class:`AppKindError` -- the same
words at ``arbiter check``, at start, on reload and in a worker.
"""

from __future__ import annotations

import functools
import importlib
import inspect
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
    """The current exception as its traceback's last line: ``ImportError: no module x``;
    a SyntaxError with where it is (``SyntaxError: ... (app.py, line 3)``)."""
    kind, exc = sys.exc_info()[:2]
    line = "".join(traceback.format_exception_only(kind, exc)).strip().splitlines()[-1]
    if isinstance(exc, SyntaxError) and exc.filename:
        where = os.path.relpath(exc.filename) if os.path.isabs(exc.filename) else exc.filename
        line += f" ({where}, line {exc.lineno})"
    return line


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


def _takes_three_positional(function: Any, follow_wrapped: bool = True) -> bool | None:
    """Can ``function`` be called with three positional arguments? None: inspect can't tell."""
    try:
        signature = inspect.signature(function, follow_wrapped=follow_wrapped)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(None, None, None)
    except TypeError:
        return False
    return True


def _wsgi_shaped(function: Any) -> bool:
    """Does ``function``'s own signature take exactly (environ, start_response)?"""
    try:
        signature = inspect.signature(function, follow_wrapped=False)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(None, None)
    except TypeError:
        return False
    return _takes_three_positional(function, follow_wrapped=False) is False


def _parameters(function: Any) -> str:
    try:
        names = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        names = []
    return f"({', '.join(names)})" if names else "(scope, receive, send)"


def _async_kind(target: Any) -> str | None:
    """``"async def NAME"`` or ``"async __call__"`` when calling ``target`` itself runs a
    coroutine function; None otherwise (partials and wrappers are not looked into here)."""
    if inspect.isfunction(target) or inspect.ismethod(target):
        if inspect.iscoroutinefunction(target):
            return f"async def {target.__qualname__}"
        return None
    if inspect.isclass(target):
        return None  # calling a class makes an instance (ASGI 2 style is not detected)
    call = inspect.getattr_static(type(target), "__call__", None)
    if isinstance(call, staticmethod | classmethod):
        call = call.__func__
    if inspect.iscoroutinefunction(call):
        return "async __call__"
    return None


def asgi_reason(app: Any) -> str | None:
    """Why ``app`` is an ASGI 3 application and not a WSGI callable; None when it isn't one.

    An ASGI 3 app is a coroutine function taking ``(scope, receive, send)``, or
    an object whose ``__call__`` is one (FastAPI, Starlette, Quart, Django's
    ASGIHandler). ``functools.partial`` objects and ``functools.wraps``-style
    wrappers (``__wrapped__``) are looked through, as far as :mod:`inspect`
    can tell; a wrapper whose own signature is ``(environ, start_response)``
    is taken for the WSGI adapter it is. Nothing is imported or called.
    The answer is a short description, e.g. ``"an ASGI application (async
    __call__(scope, receive, send))"``.
    """
    target = app
    via = ""
    for _ in range(16):  # partials of partials, wrappers of wrappers: bounded
        if isinstance(target, functools.partial):
            target, via = target.func, via + "functools.partial of "
            continue
        kind = _async_kind(target)
        if kind is not None:
            # The signature as the server would call it: a partial's remaining
            # parameters, a wrapper's wrapped ones, an object's __call__ without self.
            if _takes_three_positional(app) is False:
                return None
            return f"an ASGI application ({via}{kind}{_parameters(app)})"
        wrapped = getattr(target, "__wrapped__", None)
        if wrapped is None or _wsgi_shaped(target):
            return None
        target, via = wrapped, via + "a wrapper of "
    return None


def asgi2_reason(app: Any) -> str | None:
    """Why ``app`` is an ASGI 2 ("double callable") application; None when it isn't one.

    ASGI 2: a class called with the scope, whose instance is then awaited with
    ``(receive, send)`` -- its ``__call__`` is a coroutine function. A class that
    is awaitable itself (``__await__``) is not one, and neither is a WSGI class
    (called with ``(environ, start_response)``, iterated).
    """
    if not inspect.isclass(app) or hasattr(app, "__await__"):
        return None
    call = inspect.getattr_static(app, "__call__", None)
    if not inspect.iscoroutinefunction(call):
        return None
    try:  # (self, receive, send): not an ASGI 3 __call__(self, scope, receive, send)
        signature = inspect.signature(call)
        signature.bind(None, None, None)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(None, None, None, None)
        return None
    except TypeError:
        pass
    return f"an ASGI 2 application (class {app.__qualname__}, async __call__(receive, send))"


class AppKindError(Exception):
    """The app's kind (WSGI or ASGI) does not fit the worker type the config names;
    ``str()`` is the message ``arbiter check`` and the start both print."""


def serving_worker_type(spec: str, app: Any, worker_type: str, chosen: bool) -> str:
    """The worker type that serves ``app``: ``worker_type``, or ``asgi`` for an ASGI app
    when the config did not choose one (``chosen`` False). Raises AppKindError when a
    chosen type cannot serve the app: an ASGI app on a WSGI type, a WSGI app on asgi."""
    reason = asgi_reason(app) or asgi2_reason(app)
    if reason is not None:
        if worker_type == "asgi":
            return worker_type
        if not chosen:
            return "asgi"
        raise AppKindError(
            f"app {spec!r} is {reason}, not a WSGI callable, but worker_type is "
            f"{worker_type!r}, which serves WSGI apps: set worker_type: asgi (or leave "
            f"worker_type unset and arbiter picks asgi for an ASGI app)")
    if worker_type == "asgi":
        demo = (" (the built-in demo as ASGI: arbiter.demo:asgi_app)"
                if spec == "arbiter.demo:app" else "")
        raise AppKindError(
            f"app {spec!r} is not an ASGI application (no async def (scope, receive, send), "
            f"no async __call__), but worker_type is 'asgi': serve a WSGI app with one of the "
            f"WSGI worker types (forked, preforked, threaded, pooled, evented), or point "
            f"app at the ASGI application{demo}")
    return worker_type


def worker_type_chosen(cfg: Any) -> bool:
    """Did the config file, the environment or the command line set ``worker_type``?"""
    origin = getattr(cfg, "origin", None)
    return origin is None or origin("worker_type") != "default"
