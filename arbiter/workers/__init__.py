"""Worker types: the registry mapping ``worker_type`` names to worker classes.

``current_worker_type`` is set in a worker process once it has booted, so the
app (the demo page, for one) can say which kind of worker answered.
"""

from __future__ import annotations

import importlib

current_worker_type: str | None = None

WORKER_CLASSES = {
    "preforked": "arbiter.workers.preforked:PreforkedWorker",
}


def worker_class(name: str) -> type:
    """The worker class for a ``worker_type``; ValueError if this build lacks it."""
    try:
        module_name, _, attr = WORKER_CLASSES[name].partition(":")
    except KeyError:
        available = ", ".join(sorted(WORKER_CLASSES))
        raise ValueError(f"worker_type {name!r} is not available in this release "
                         f"(available: {available})") from None
    return getattr(importlib.import_module(module_name), attr)
