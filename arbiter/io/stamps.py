"""The kernel's receive timestamps of what a socket reads: the queue-time clock.

Owns ``SO_TIMESTAMPNS`` on Linux: set on a *listening* socket
(:func:`enable_receive_timestamps`), it is inherited by every socket it
accepts, and each ``recvmsg`` then carries the time the first of its bytes
reached the socket -- so a request that sat in the listen backlog (where no
accept-time clock sees it), or in a kept-alive connection's buffer while
every thread was busy, is measured from when it really arrived.
:func:`recv_stamped` is a read with its stamp; :func:`peek_stamp` the stamp
of bytes already queued on a socket just accepted, without taking them (for
drivers whose reads go through an event loop that drops ancillary data, or
through TLS). What the stamps become -- queue time, shedding -- is
:mod:`arbiter.http.queue_time` and :meth:`arbiter.http.lifecycle.Lifecycle.admit`.
"""

from __future__ import annotations

import socket
import struct
import sys

__all__ = ["enable_receive_timestamps", "peek_stamp", "recv_stamped", "stamps_possible"]

# Linux: SO_TIMESTAMPNS and its control message SCM_TIMESTAMPNS share the number 35
# (Python's socket module does not name it).
SO_TIMESTAMPNS = 35
_SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")  # struct timespec on a 64-bit Linux: tv_sec, tv_nsec
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
_PEEK_FLAGS = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)
_ON_LINUX = sys.platform.startswith("linux") and _TIMESPEC.size == 16


def enable_receive_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what ``sock`` (a listener: its accepted sockets inherit
    it) receives; False where that is not available (not Linux, not TCP)."""
    if not _ON_LINUX or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def stamps_possible(sock: socket.socket) -> bool:
    """Can reads on ``sock`` (accepted from a listener with stamps on) carry one?"""
    return _ON_LINUX and sock.family in (socket.AF_INET, socket.AF_INET6)


def _stamp(ancdata: list) -> float | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds + nanoseconds * 1e-9
    return None


def recv_stamped(sock: socket.socket, size: int, flags: int = 0) -> tuple[bytes, float | None]:
    """``sock.recv(size, flags)`` and the kernel's receive time of the first byte read
    (None when the socket carries no stamps)."""
    data, ancdata, _flags, _address = sock.recvmsg(size, _ANCILLARY, flags)
    return data, (_stamp(ancdata) if ancdata else None)


def peek_stamp(sock: socket.socket) -> float | None:
    """The receive time of the first byte waiting on ``sock``, taking nothing; None if
    nothing waits yet (the request then has not been kept waiting) or no stamps."""
    if not _ON_LINUX:
        return None
    try:
        _data, ancdata, _flags, _address = sock.recvmsg(1, _ANCILLARY, _PEEK_FLAGS)
    except (OSError, ValueError):
        return None
    return _stamp(ancdata) if ancdata else None
