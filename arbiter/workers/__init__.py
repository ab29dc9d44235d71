"""Worker types: the registry mapping ``worker_type`` names to worker classes.

``current_worker_type`` is set in a worker process once it has booted, so the
app (the demo page, for one) can say which kind of worker answered.
"""

from __future__ import annotations

import importlib
import importlib.util

current_worker_type: str | None = None

WORKER_CLASSES = {
    "forked": "arbiter.workers.forked:ForkedWorker",
    "preforked": "arbiter.workers.preforked:PreforkedWorker",
    "threaded": "arbiter.workers.threaded:ThreadedWorker",
    "pooled": "arbiter.workers.pooled:PooledWorker",
    "evented": "arbiter.workers.evented:EventedWorker",
    "asgi": "arbiter.workers.asgi:AsgiWorker",
}


def worker_class(name: str) -> type:
    """The worker class for a ``worker_type``; ValueError if this build lacks it."""
    try:
        module_name, _, attr = WORKER_CLASSES[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown worker_type {name!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        available = ", ".join(n for n in sorted(WORKER_CLASSES) if _exists(n))
        raise ValueError(f"worker_type {name!r} is not available in this release "
                         f"(available: {available})") from None
    return getattr(module, attr)


def _exists(name: str) -> bool:
    module_name = WORKER_CLASSES[name].partition(":")[0]
    return importlib.util.find_spec(module_name) is not None
