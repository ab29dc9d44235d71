"""The ASGI ``lifespan`` scope: the app's startup before a worker serves, its shutdown on stop.

Owns :class:`Lifespan`, one per asgi worker, run on the worker's loop. The
app is called once with ``{"type": "lifespan", "asgi": ..., "state": {}}``
and lives as a task for the worker's life; ``startup()`` sends
``lifespan.startup`` and waits for the answer, ``shutdown()`` sends
``lifespan.shutdown`` and waits, each within a bound.

``lifespan`` setting:

* ``on``: the app must support it: a startup that fails (``startup.failed``,
  an exception, no answer in time, or the app returning) is a failed boot;
* ``auto`` (the default): as ``on``, except that an app that raises (or
  returns, or answers with a message that is not ``lifespan.*``) before
  answering the startup -- the usual ways of saying "I do not do lifespan"
  -- is served without it (logged at info); an explicit
  ``lifespan.startup.failed`` is still a failed boot;
* ``off``: never called.

The ``state`` dict the app fills at startup is the one every request's
``scope["state"]`` is a shallow copy of.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arbiter.asgi.handler import ASGI_VERSION

__all__ = ["Lifespan", "LifespanFailed"]


class LifespanFailed(Exception):
    """The app's lifespan startup failed; ``str()`` says why (for the log and the master)."""


class Lifespan:
    """The lifespan protocol with one app (see the module docstring)."""

    def __init__(self, app: Any, mode: str, state: dict, log: logging.Logger) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self.log = log
        self.to_app: asyncio.Queue = asyncio.Queue()
        self.answer: asyncio.Future | None = None
        self.task: asyncio.Task | None = None
        self.supported = mode != "off"
        self.error: BaseException | None = None

    async def receive(self) -> dict:
        return await self.to_app.get()

    async def send(self, message: dict) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(message)
        elif kind not in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
            self.log.warning("lifespan: unexpected message from the app: %r", message)

    async def run_app(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 -- an app that does not do lifespan
            self.error = exc
        finally:
            if self.answer is not None and not self.answer.done():
                self.answer.set_result(None)  # the app is gone without answering

    async def exchange(self, kind: str, timeout: float) -> dict | None:
        """Send ``kind`` and wait for the app's answer (None: it returned or raised)."""
        loop = asyncio.get_running_loop()
        self.answer = loop.create_future()
        await self.to_app.put({"type": kind})
        try:
            return await asyncio.wait_for(asyncio.shield(self.answer), timeout or None)
        except TimeoutError:
            raise LifespanFailed(f"no answer to {kind} within {timeout:g} s") from None

    async def startup(self, timeout: float) -> None:
        """Run the app's startup; raises LifespanFailed when the boot must fail."""
        if not self.supported:
            return
        self.task = asyncio.get_running_loop().create_task(self.run_app())
        answer = await self.exchange("lifespan.startup", timeout)
        if answer is None:
            error = self.error
            if self.mode == "auto":
                self.supported = False
                self.log.info("lifespan: the app does not support it (%s); serving without",
                              f"{type(error).__name__}: {error}" if error else "it returned")
                return
            if error is not None:
                self.log.error("lifespan startup raised", exc_info=error)
            raise LifespanFailed("the app returned or raised during lifespan startup"
                                 + (f": {type(error).__name__}: {error}" if error else ""))
        kind = answer.get("type") if isinstance(answer, dict) else None
        if kind == "lifespan.startup.complete":
            return
        if kind == "lifespan.startup.failed":
            raise LifespanFailed(f"lifespan startup failed: {answer.get('message', '')}")
        if self.mode == "auto" and not str(kind).startswith("lifespan."):
            self.supported = False  # it answered as if the scope were another one
            self.log.info("lifespan: the app does not support it (it answered %r); serving "
                          "without", kind)
            self.task.cancel()
            return
        raise LifespanFailed(f"unexpected lifespan message from the app: {answer!r}")

    async def shutdown(self, timeout: float) -> None:
        """Run the app's shutdown (when its startup ran), within ``timeout``; never raises."""
        task = self.task
        if not self.supported or task is None or task.done():
            return
        try:
            answer = await self.exchange("lifespan.shutdown", timeout)
        except LifespanFailed as exc:
            self.log.warning("lifespan shutdown: %s", exc)
            answer = None
        if answer is not None and answer.get("type") == "lifespan.shutdown.failed":
            self.log.error("lifespan shutdown failed: %s", answer.get("message", ""))
        elif answer is None and self.error is not None:
            self.log.error("lifespan shutdown raised", exc_info=self.error)
        if not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 -- it was cancelled, whatever it says
                pass
