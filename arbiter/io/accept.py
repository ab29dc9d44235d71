"""Accepting a connection: one function and one back-off policy for every worker type.

Owns :func:`accept_one`. An accepted TCP socket gets ``TCP_NODELAY`` (a
response head and its small body are one write; nothing waits for Nagle) --
on Linux from its listener (see :class:`~arbiter.sockets.Listener`), with no
call per connection. The transports make the socket non-blocking (one
``ioctl``).
When the process or the system is out of descriptors or buffers
(``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) the listener stays readable,
so accepting again at once would spin: :class:`AcceptPaused` tells the caller
to stop accepting for ``ACCEPT_BACKOFF`` seconds (the waiting clients stay
in the kernel's backlog, neither refused nor failed) and the warning is
logged once per pause. A client that gave up before we accepted it
(``ECONNABORTED``, ``EPROTO``...) is skipped (None, as if none were queued: the
listener stays readable for the next one).
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

__all__ = ["ACCEPT_BACKOFF", "AcceptPaused", "accept_one"]

ACCEPT_BACKOFF = 0.5  # seconds the listeners rest after running out of descriptors
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class AcceptPaused(Exception):
    """Out of descriptors or buffers: stop accepting for ACCEPT_BACKOFF seconds."""


_KINDS: dict[int, tuple[int, int, int]] = {}  # listener fd -> (family, type, proto), as ints


def _kind(lsock: socket.socket) -> tuple[int, int, int]:
    kind = _KINDS.get(lsock.fileno())
    if kind is None or len(_KINDS) > 64:
        _KINDS.clear()
        kind = _KINDS[lsock.fileno()] = (int(lsock.family), int(lsock.type), lsock.proto)
    return kind


def accept_one(listener: Any, log: logging.Logger) -> tuple[socket.socket, Any] | None:
    """One connection from a non-blocking ``listener`` (a Listener), or None when none
    is queued. Raises AcceptPaused when the caller must back off.

    The socket object is made from the listener's family, type and protocol as
    plain ints, read once per listener: ``socket.accept()`` reads them back as enums
    for every connection, which cost more than the ``accept`` call itself."""
    lsock = listener.sock
    family, kind, proto = _kind(lsock)
    try:
        fd, peer = lsock._accept()  # type: ignore[attr-defined]
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        if exc.errno in _RESOURCE_ERRORS:
            log.warning("accept on %s failed: %s; pausing accepts for %g s",
                        listener.name, exc, ACCEPT_BACKOFF)
            raise AcceptPaused(str(exc)) from None
        log.debug("accept on %s failed: %s", listener.name, exc)
        return None  # a client gone before we took it; the listener stays readable
    sock = socket.socket(family, kind, proto, fd)
    if family != socket.AF_UNIX and not listener.nodelay_inherited:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    return sock, peer
