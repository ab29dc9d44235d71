"""The readiness poller under the reactor: epoll on Linux, poll elsewhere, no key objects.

Owns :class:`Poller`, a thin layer over ``select.epoll`` (``select.poll``
where there is no epoll) that maps each fd to the object registered with it
and answers ``wait(timeout)`` with ``(object, events)`` pairs. The standard
``selectors`` module builds a key object per registration and looks one up
per event, and reports events through its own constants; on the request path
that was a measurable part of a keep-alive request's cost, and nothing of it
is needed here.

``READ`` and ``WRITE`` are the interest bits. An error or hang-up on an fd is
reported as both, so whoever waits on it (to read or to write) finds out.
"""

from __future__ import annotations

import select
from typing import Any

__all__ = ["Poller", "READ", "WRITE"]

if hasattr(select, "epoll"):
    READ = select.EPOLLIN
    WRITE = select.EPOLLOUT
    _ERRORS = select.EPOLLERR | select.EPOLLHUP
else:  # pragma: no cover - not Linux
    READ = select.POLLIN
    WRITE = select.POLLOUT
    _ERRORS = select.POLLERR | select.POLLHUP | select.POLLNVAL
_BOTH = READ | WRITE


def _fd(target: Any) -> int:
    return target if type(target) is int else target.fileno()


class Poller:
    """fd -> object registrations; ``wait`` returns ``[(object, events), ...]``."""

    __slots__ = ("_poll", "_objects", "_ms", "closed")

    def __init__(self) -> None:
        if hasattr(select, "epoll"):
            self._poll: Any = select.epoll()
            self._ms = False  # epoll's timeout is in seconds
        else:  # pragma: no cover - not Linux
            self._poll = select.poll()
            self._ms = True
        self._objects: dict[int, Any] = {}
        self.closed = False

    def register(self, target: Any, events: int, data: Any) -> None:
        """Watch ``target`` (an fd or an object with ``fileno()``) for ``events``."""
        fd = _fd(target)
        self._poll.register(fd, events)
        self._objects[fd] = data

    def modify(self, target: Any, events: int, data: Any) -> None:
        fd = _fd(target)
        self._poll.modify(fd, events)
        self._objects[fd] = data

    def unregister(self, target: Any) -> None:
        fd = _fd(target)
        self._objects.pop(fd, None)
        self._poll.unregister(fd)

    def forget(self, target: Any) -> None:
        """``target`` is about to be closed, which ends its registration in the kernel
        (the fd is not shared with another process): only the mapping goes."""
        if self._ms:  # pragma: no cover - poll() keeps watching a closed fd
            self.unregister(target)
            return
        self._objects.pop(_fd(target), None)

    def wait(self, timeout: float) -> list[tuple[Any, int]]:
        """What became ready within ``timeout`` seconds (0: just look)."""
        if self._ms:  # pragma: no cover - not Linux
            ready = self._poll.poll(timeout * 1000.0)
        else:
            ready = self._poll.poll(timeout)
        objects = self._objects
        events = []
        for fd, mask in ready:
            data = objects.get(fd)
            if data is None and fd not in objects:
                continue  # unregistered while the batch was pending
            if mask & _ERRORS:
                mask |= _BOTH
            events.append((data, mask))
        return events

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if hasattr(self._poll, "close"):
                self._poll.close()
            self._objects.clear()
