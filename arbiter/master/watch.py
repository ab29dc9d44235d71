"""The dev loop (``--reload``): the project's files watched, a change run as a reload.

Owns :class:`SourceWatcher` -- which files count (``*.py`` under the project's
directory, the config file), which directories never do (virtualenvs,
``.git``, caches, ``site-packages``), and how a change is seen: by
``watchfiles`` (the OS's file notifications) when it is installed, else by a
scan of modification times once a second -- both from the master's own loop,
with no Python thread in the master (it forks the workers). The master asks :meth:`SourceWatcher.changed` each turn
and runs a change exactly as a HUP: the reload transaction, so a release that
fails to import (a syntax error) leaves the old workers serving, and the
error with its file and line is in the log; the next save that imports
reloads as usual. Saves that come together (an editor writing several files)
are one reload: a change is reported once the files have been quiet for
``SETTLE`` seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

__all__ = ["SETTLE", "SKIPPED_DIRS", "SourceWatcher"]

SCAN_EVERY = 1.0  # seconds between two scans when polling
SETTLE = 0.3  # seconds without a further change before the change counts
SKIPPED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "env", "__pycache__", "node_modules",
    "site-packages", "dist-packages", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
    ".ruff_cache", "build", "dist", ".eggs",
})


class SourceWatcher:
    """Sees changes to the project's Python files and its config file."""

    def __init__(self, roots: list[str], files: list[str], log: logging.Logger,
                 use_watchfiles: bool = True) -> None:
        self.roots = [os.path.abspath(root) for root in roots]
        self.files = frozenset(os.path.abspath(path) for path in files)
        self.log = log
        self.pending: set[str] = set()  # changed paths not yet reported
        self.last_change = 0.0
        self.next_scan = 0.0
        self.snapshot: dict[str, tuple[int, int]] = {}
        self.notifications = None  # watchfiles' generator, asked without waiting
        self.how = "polling"
        if use_watchfiles and os.environ.get("ARBITER_RELOAD_POLL") != "1":
            try:
                import watchfiles
            except ImportError:
                watchfiles = None
            if watchfiles is not None:
                self.how = "watchfiles"
                self.notifications = watchfiles.watch(
                    *self.roots, *self.files, debounce=50, step=10, rust_timeout=1,
                    yield_on_timeout=True, raise_interrupt=False,
                    watch_filter=lambda _change, path: self._counts(path))
        if self.notifications is None:
            self.snapshot = self._scan()
            self.next_scan = time.monotonic() + SCAN_EVERY

    # -- what counts --------------------------------------------------------------
    def _counts(self, path: str) -> bool:
        if path in self.files:
            return True
        return path.endswith(".py") and not any(
            part in SKIPPED_DIRS or part.endswith(".egg-info") for part in path.split(os.sep))

    def _paths(self) -> Iterator[str]:
        for root in self.roots:
            for folder, dirs, names in os.walk(root):
                dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(
                    ".egg-info")]
                for name in names:
                    if name.endswith(".py"):
                        yield os.path.join(folder, name)
        yield from self.files

    def _scan(self) -> dict[str, tuple[int, int]]:
        seen = {}
        for path in self._paths():
            try:
                st = os.stat(path)
            except OSError:
                continue
            seen[path] = (st.st_mtime_ns, st.st_size)
        return seen

    # -- the master's side ------------------------------------------------------------
    def changed(self) -> list[str]:
        """The files changed since the last report, once they have settled ([] if none)."""
        now = time.monotonic()
        paths: set[str] = set()
        if self.notifications is not None:
            try:
                paths = {path for _change, path in next(self.notifications)}
            except Exception:  # noqa: BLE001 -- the dev loop must not take the master down
                self.log.exception("--reload: watchfiles failed; scanning for changes instead")
                self.notifications = None
                self.snapshot = self._scan()
        elif now >= self.next_scan:
            self.next_scan = now + SCAN_EVERY
            snapshot = self._scan()
            paths = {path for path in snapshot.keys() | self.snapshot.keys()
                     if snapshot.get(path) != self.snapshot.get(path)}
            self.snapshot = snapshot
        if paths:
            self.pending |= paths
            self.last_change = now
        if not self.pending or now - self.last_change < SETTLE:
            return []
        changed, self.pending = sorted(self.pending), set()
        return changed
