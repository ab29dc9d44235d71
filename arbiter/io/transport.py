"""Transports: how bytes move on one accepted socket, plain or TLS, blocking or not.

Owns the four ways a worker reads and writes a client socket, so no worker
strategy or HTTP module touches a socket itself:

* :class:`BlockingTransport` / :class:`BlockingTLSTransport` -- for the
  drivers that give a connection its own thread or process (forked,
  preforked, threaded). Every wait is a ``poll()`` of at most ``TICK``
  seconds, so the caller's heartbeat keeps beating; reads wait until an
  absolute deadline, or within a *budget*; writes always take one -- the
  transfer's :class:`~arbiter.http.lifecycle.TransferBudget`, to which every
  wait and every byte moved is reported -- so a client reading (or sending)
  a byte a second is cut when its budget runs out, however long it keeps at it.
* :class:`NonBlockingTransport` / :class:`NonBlockingTLSTransport` -- for
  the reactor (evented, pooled): each call does what the socket takes now and
  says so (bytes, ``None`` for "would block", ``b""`` for EOF); the reactor
  waits.

Both kinds also carry: ``sendfile`` (zero-copy, plain sockets only), the TLS
handshake step, the TLS close alert (``close_notify``) before closing, the
half-close that starts a linger, and ``close``. A failed or vanished peer
raises :class:`~arbiter.http.app_response.ClientDisconnected` (a ``ssl.SSLError``
included), never a bare ``OSError``.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from arbiter.http.app_response import ClientDisconnected
from arbiter.io.stamps import recv_stamped, stamps_possible
from arbiter.tls import close_notify, wrap

__all__ = [
    "BlockingTLSTransport", "BlockingTransport", "NonBlockingTLSTransport",
    "NonBlockingTransport", "READABLE", "TICK", "TICKED", "TIMEOUT", "WATCHED", "WouldBlock",
]

RECV_SIZE = 65536
TICK = 1.0  # longest single wait: the heartbeat beats at least this often
TLS_WRITE_CHUNK = 256 * 1024  # bytes per SSL write (the budget is checked between them)
SENDFILE_CHUNK = 1024 * 1024  # bytes per sendfile() call (the budget is checked between them)
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_POLLIN = select.POLLIN | select.POLLPRI
_POLLOUT = select.POLLOUT

# What BlockingTransport.wait_readable says.
READABLE, TIMEOUT, TICKED, WATCHED = range(4)


class WouldBlock(Exception):
    """A non-blocking TLS operation needs the socket readable/writable first."""

    def __init__(self, want_write: bool) -> None:
        super().__init__("want write" if want_write else "want read")
        self.want_write = want_write


def _nothing() -> None:
    return None


class _SocketEnds:
    """What every transport does at the end: half-close, close."""

    __slots__ = ()
    sock: Any

    def shutdown_write(self) -> None:
        """Half-close: the last answer is out; a linger reads what the client still sends."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass


class _TLSEnds(_SocketEnds):
    """A TLS transport's end: the close alert first, then as any socket."""

    __slots__ = ()

    def shutdown_write(self) -> None:
        close_notify(self.sock)  # type: ignore[arg-type]
        super().shutdown_write()

    def close(self) -> None:
        close_notify(self.sock)  # type: ignore[arg-type]
        super().close()


# -- blocking ------------------------------------------------------------------------------
class BlockingTransport(_SocketEnds):
    """A plain socket served by its own thread or process."""

    plain = True

    __slots__ = ("sock", "heartbeat", "_rpoll", "_wpoll", "_watch", "stamp", "_stamped")

    def __init__(self, sock: socket.socket, heartbeat: Callable[[], None] = _nothing,
                 watch_fds: tuple[int, ...] | list[int] = ()) -> None:
        """``watch_fds``: descriptors that end an idle wait when readable (a preforked
        worker's listeners and wakeup fd: someone else waits, or a signal came)."""
        sock.setblocking(False)  # MSG_DONTWAIT too, but never a blocking socket (see accept)
        self.sock = sock
        self.stamp: float | None = None  # the kernel's receive time of the last read's bytes
        self._stamped = stamps_possible(sock)
        self.heartbeat = heartbeat
        self._rpoll = select.poll()
        self._rpoll.register(sock, _POLLIN)
        self._wpoll: Any = None
        self._watch: Any = None
        if watch_fds:
            self._watch = select.poll()
            self._watch.register(sock, _POLLIN)
            for fd in watch_fds:
                self._watch.register(fd, _POLLIN)

    # reading ------------------------------------------------------------------------------
    def buffered(self) -> bool:
        """Bytes already read from the socket but not handed out (TLS records)."""
        return False

    def wait_readable(self, deadline: float, watch: bool = False) -> int:
        """Wait at most one tick: READABLE, TIMEOUT (the deadline passed), TICKED (a tick
        passed; call again), or WATCHED (``watch``: a watched fd became readable)."""
        if self.buffered():
            return READABLE
        self.heartbeat()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return TIMEOUT
        poller = self._watch if watch and self._watch is not None else self._rpoll
        ready = poller.poll(min(remaining, TICK) * 1000.0)
        if not ready:
            return TIMEOUT if time.monotonic() >= deadline else TICKED
        fileno = self.sock.fileno()
        if any(fd == fileno for fd, _ in ready):
            return READABLE
        return WATCHED

    def readable_within(self, seconds: float) -> bool:
        """Does the client send something within ``seconds``?"""
        return self.buffered() or bool(self._rpoll.poll(seconds * 1000.0))

    def recv(self) -> bytes | None:
        """What the socket has now: bytes, b"" at EOF, None if nothing yet (``stamp``:
        when the kernel received them, where it says)."""
        try:
            if self._stamped:
                data, self.stamp = recv_stamped(self.sock, RECV_SIZE, _MSG_DONTWAIT)
                return data
            return self.sock.recv(RECV_SIZE, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise ClientDisconnected(f"recv failed: {exc}") from None

    def recv_until_readable(self, deadline: float) -> bool | None:
        """Wait until the socket is readable (True), or None once ``deadline`` passed."""
        while True:
            state = self.wait_readable(deadline)
            if state == TIMEOUT:
                return None
            if state == READABLE:
                return True

    def recv_within(self, budget: Any) -> bytes | None:
        """Bytes (b"" at EOF), or None once the transfer ``budget`` ran out. What is
        already there is read without a poll (a body's next piece usually is)."""
        data = self.recv()
        if data is not None:
            budget.moved(len(data), time.monotonic())
            return data
        start = time.monotonic()
        deadline = budget.wait_deadline(start)
        while True:
            state = self.wait_readable(deadline)
            if state == TIMEOUT:
                budget.waited(time.monotonic() - start)
                return None
            if state == READABLE:
                data = self.recv()
                if data is not None:
                    now = time.monotonic()
                    budget.waited(now - start)
                    budget.moved(len(data), now)
                    return data

    def recv_until(self, deadline: float) -> bytes | None:
        """Bytes (b"" at EOF), or None once ``deadline`` passed with nothing."""
        while True:
            state = self.wait_readable(deadline)
            if state == TIMEOUT:
                return None
            if state == READABLE:
                data = self.recv()
                if data is not None:
                    return data

    # writing ------------------------------------------------------------------------------
    def _wait_writable(self, budget: Any) -> None:
        """Wait until the client takes more bytes, within the budget (the wait counts)."""
        if self._wpoll is None:
            self._wpoll = select.poll()
            self._wpoll.register(self.sock, _POLLOUT)
        start = time.monotonic()
        deadline = budget.wait_deadline(start)
        while True:
            self.heartbeat()
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                budget.waited(now - start)
                raise ClientDisconnected("the client read the response too slowly")
            if self._wpoll.poll(min(remaining, TICK) * 1000.0):
                budget.waited(time.monotonic() - start)
                return

    def send_all(self, data: bytes, budget: Any) -> None:
        """Write all of ``data`` within the transfer ``budget``: one non-blocking send
        on the hot path (a client that takes everything at once costs no budget)."""
        sock = self.sock
        try:
            sent = sock.send(data, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(f"send failed: {exc}") from None
        if sent == len(data):
            return
        budget.moved(sent, time.monotonic())
        view = memoryview(data)[sent:]
        while view:
            self._wait_writable(budget)
            try:
                sent = sock.send(view, _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                raise ClientDisconnected(f"send failed: {exc}") from None
            budget.moved(sent, time.monotonic())
            view = view[sent:]

    def send_pair(self, first: bytes, second: bytes, budget: Any) -> None:
        """Write ``first`` then ``second`` (a head and a large body) within the budget:
        one ``sendmsg`` of both on the hot path, no copy joining them."""
        try:
            sent = self.sock.sendmsg((first, second), (), _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(f"send failed: {exc}") from None
        if sent < len(first):
            self.send_all(memoryview(first)[sent:], budget)
            self.send_all(second, budget)
        elif sent < len(first) + len(second):
            budget.moved(sent, time.monotonic())
            self.send_all(memoryview(second)[sent - len(first):], budget)

    def sendfile(self, file: Any, offset: int, count: int, budget: Any) -> int:
        """Zero-copy ``count`` bytes of ``file`` from ``offset``; the bytes sent."""
        fd = file.fileno()
        self.sock.setblocking(False)  # sendfile takes no MSG_DONTWAIT
        out = self.sock.fileno()
        total = 0
        while total < count:
            try:
                sent = os.sendfile(out, fd, offset + total, min(count - total, SENDFILE_CHUNK))
            except (BlockingIOError, InterruptedError):
                self._wait_writable(budget)
                continue
            except OSError as exc:
                raise ClientDisconnected(f"sendfile failed: {exc}") from None
            if sent == 0:  # the file is shorter than it said
                break
            total += sent
            budget.moved(sent, time.monotonic())
        return total


class BlockingTLSTransport(_TLSEnds, BlockingTransport):
    """The same over a non-blocking ``ssl.SSLSocket``: decrypted bytes already buffered
    (``pending()``) are read before any poll, ``SSLWant*Error`` means wait, writes go in
    chunks that must be retried whole, no sendfile, the close alert before closing."""

    plain = False

    __slots__ = ()

    def buffered(self) -> bool:
        return bool(self.sock.pending())  # type: ignore[attr-defined]

    def recv(self) -> bytes | None:
        try:
            return self.sock.recv(RECV_SIZE)
        except ssl.SSLWantReadError:  # a partial record, or a TLS 1.3 ticket/key update
            return None
        except ssl.SSLWantWriteError:
            return None
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:  # ssl.SSLError included
            raise ClientDisconnected(f"recv failed: {exc}") from None

    def handshake(self, deadline: float) -> None:
        """Complete the server handshake by ``deadline``; ClientDisconnected if not."""
        sock: ssl.SSLSocket = self.sock  # type: ignore[assignment]
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                events = _POLLIN
            except ssl.SSLWantWriteError:
                events = _POLLOUT
            except (OSError, ValueError) as exc:
                raise ClientDisconnected(f"TLS handshake failed: {exc}") from None
            poller = select.poll()
            poller.register(sock, events)
            while True:
                self.heartbeat()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientDisconnected("TLS handshake not complete within header_timeout")
                if poller.poll(min(remaining, TICK) * 1000.0):
                    break

    def send_all(self, data: bytes, budget: Any) -> None:
        # Without SSL_MODE_ENABLE_PARTIAL_WRITE an SSL write takes all it is given or
        # raises SSLWantWriteError and must be retried with the same bytes.
        sock = self.sock
        view = memoryview(data) if len(data) > TLS_WRITE_CHUNK else data
        for offset in range(0, len(data), TLS_WRITE_CHUNK):
            chunk = view[offset:offset + TLS_WRITE_CHUNK] if view is not data else data
            while True:
                try:
                    sock.send(chunk)
                    break
                except ssl.SSLWantWriteError:
                    self._wait_writable(budget)
                except ssl.SSLWantReadError:
                    self.recv_until(budget.wait_deadline(time.monotonic()))
                except InterruptedError:
                    continue
                except OSError as exc:
                    raise ClientDisconnected(f"send failed: {exc}") from None
            budget.moved(len(chunk), time.monotonic())

    def send_pair(self, first: bytes, second: bytes, budget: Any) -> None:
        self.send_all(first, budget)
        self.send_all(second, budget)

    def sendfile(self, file: Any, offset: int, count: int, budget: Any) -> int:
        raise NotImplementedError("TLS: no sendfile")


# -- non-blocking ------------------------------------------------------------------------------
class NonBlockingTransport(_SocketEnds):
    """A plain non-blocking socket driven by a reactor."""

    plain = True

    __slots__ = ("sock", "stamp", "_stamped")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)  # MSG_DONTWAIT too, but never a blocking socket (see accept)
        self.sock = sock
        self.stamp: float | None = None  # the kernel's receive time of the last read's bytes
        self._stamped = stamps_possible(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def buffered(self) -> bool:
        return False

    def handshake_step(self) -> bool | None:
        """Plain sockets have no handshake: done."""
        return True

    def recv(self) -> bytes | None:
        """Bytes, b"" at EOF, None if the socket has nothing now (``stamp``: when the
        kernel received them, where it says)."""
        try:
            if self._stamped:
                data, self.stamp = recv_stamped(self.sock, RECV_SIZE, _MSG_DONTWAIT)
                return data
            return self.sock.recv(RECV_SIZE, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise ClientDisconnected(f"recv failed: {exc}") from None

    def send(self, buffers: list) -> int:
        """Write what the socket takes of ``buffers`` now (one writev); the count."""
        try:
            if len(buffers) == 1:
                return self.sock.send(buffers[0], _MSG_DONTWAIT)
            return self.sock.sendmsg(buffers[:64], (), _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise ClientDisconnected(f"send failed: {exc}") from None

    def sendfile(self, file: Any, offset: int, count: int) -> int:
        """What the socket takes of the file segment now (0: would block)."""
        self.sock.setblocking(False)  # sendfile takes no MSG_DONTWAIT
        try:
            return os.sendfile(self.sock.fileno(), file.fileno(), offset,
                               min(count, SENDFILE_CHUNK))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise ClientDisconnected(f"sendfile failed: {exc}") from None


class NonBlockingTLSTransport(_TLSEnds, NonBlockingTransport):
    """A non-blocking ``ssl.SSLSocket`` driven by a reactor; ``handshake_step`` and the
    reads and writes raise :class:`WouldBlock` when TLS needs the other direction."""

    plain = False

    __slots__ = ("pending_write",)

    def __init__(self, context: ssl.SSLContext, sock: socket.socket) -> None:
        self.sock = wrap(context, sock)
        self.stamp = None  # decrypted bytes carry no stamp (the lifecycle's own clock)
        self._stamped = False
        self.pending_write: bytes | None = None  # an SSL write to retry with the same bytes

    def buffered(self) -> bool:
        return bool(self.sock.pending())  # type: ignore[attr-defined]

    def handshake_step(self) -> bool | None:
        """One step: True when done, None to wait for readable, False for writable."""
        try:
            self.sock.do_handshake()  # type: ignore[attr-defined]
            return True
        except ssl.SSLWantReadError:
            return None
        except ssl.SSLWantWriteError:
            return False
        except (OSError, ValueError) as exc:
            raise ClientDisconnected(f"TLS handshake failed: {exc}") from None

    def recv(self) -> bytes | None:
        try:
            return self.sock.recv(RECV_SIZE)
        except ssl.SSLWantReadError:
            return None
        except ssl.SSLWantWriteError:
            raise WouldBlock(True) from None
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise ClientDisconnected(f"recv failed: {exc}") from None

    def send(self, buffers: list) -> int:
        """One SSL write (of up to TLS_WRITE_CHUNK bytes, joined from the buffers)."""
        data = self.pending_write
        if data is None:
            joined = bytearray()
            for buffer in buffers:
                joined += buffer
                if len(joined) >= TLS_WRITE_CHUNK:
                    break
            data = bytes(joined[:TLS_WRITE_CHUNK])
        try:
            self.sock.send(data)
        except ssl.SSLWantWriteError:
            self.pending_write = data
            return 0
        except ssl.SSLWantReadError:
            self.pending_write = data
            raise WouldBlock(False) from None
        except (BlockingIOError, InterruptedError):
            self.pending_write = data
            return 0
        except OSError as exc:
            raise ClientDisconnected(f"send failed: {exc}") from None
        self.pending_write = None
        return len(data)

    def sendfile(self, file: Any, offset: int, count: int) -> int:
        raise NotImplementedError("TLS: no sendfile")

