"""arbiter: a process manager and HTTP server for Python WSGI and ASGI applications.

This package root owns the version string and which build of the package runs:
the per-request modules compiled by Cython at install (``setup.py``), or, with
``ARBITER_PURE_PYTHON=1`` in the environment, the same modules' Python sources
even where compiled ones are installed beside them (for a debugger, a profiler
that should see their frames, or a comparison) -- and a module's source wherever it
was edited after the install compiled it. See arbiter.cli for the entry point.
"""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"


STALE_MARGIN = 10.0  # seconds a source may be newer than its compiled module (an install)
_stale: list[str] = []  # compiled modules older than their sources: run as the sources


class _SourcesFirst:
    """Finds an arbiter submodule as its ``.py`` source where that must win over the
    compiled module beside it: always under ``ARBITER_PURE_PYTHON``, else when the
    source was edited after the build (a checkout installed with ``pip install -e``:
    the edit runs, not the stale build, until the next install compiles it)."""

    pure = bool(os.environ.get("ARBITER_PURE_PYTHON"))

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        if not name.startswith("arbiter.") or not path:
            return None
        from importlib.machinery import (
            EXTENSION_SUFFIXES,
            SOURCE_SUFFIXES,
            FileFinder,
            SourceFileLoader,
        )

        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(name)
            if spec is None or spec.origin is None:
                continue
            if cls.pure:
                return spec
            stem = spec.origin[:-3]
            for suffix in EXTENSION_SUFFIXES:
                try:
                    built = os.stat(stem + suffix).st_mtime
                except OSError:
                    continue
                if os.stat(spec.origin).st_mtime > built + STALE_MARGIN:
                    _stale.append(name)
                    return spec
                return None  # the compiled module is current: the usual import
            return None
        return None


sys.meta_path.insert(0, _SourcesFirst)


def build() -> str:
    """Which build runs: ``compiled`` (the per-request modules are C extensions),
    ``pure Python``, or compiled with the modules edited since the install named
    (they run as their sources) -- shown by ``arbiter --version`` and the master's
    start line."""
    from arbiter.http import protocol

    if _stale:
        return "compiled, except " + ", ".join(sorted(_stale)) + " (edited since the install)"
    return "pure Python" if protocol.__file__.endswith(".py") else "compiled"
