"""Listening sockets: parse bind addresses, bind or inherit them, close them.

Owns the four address forms of the contract: ``host:port``, ``[v6]:port``,
``unix:/path[:mode]`` (mode 0666 unless the bind names one) and ``fd://N``.
The master opens every listener once, before forking; workers inherit them. A unix socket file we created is removed
when the listener is closed for good; an inherited one (``fd://``) is never
unlinked.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from dataclasses import dataclass, field

from arbiter.io.stamps import enable_receive_timestamps

# A unix socket a local proxy (nginx's workers run as another user) can connect to;
# "unix:/path:0660" (or 0600) hardens it.
UNIX_SOCKET_MODE = 0o666


class BindError(Exception):
    """A listener could not be opened; the message names the address and the OS error."""


@dataclass(frozen=True)
class Address:
    """A parsed bind address."""

    text: str  # as the user wrote it
    family: int
    host: str = ""
    port: int = 0
    path: str = ""
    mode: int | None = None
    fd: int | None = None


def parse_address(text: str) -> Address:
    """Parse one bind string. Raises ValueError with a readable message."""
    if text.startswith("unix:"):
        rest = text[5:]
        mode = None
        head, sep, tail = rest.rpartition(":")
        if sep and tail and all(c in "01234567" for c in tail) and head:
            rest, mode = head, int(tail, 8)
        if not rest:
            raise ValueError(f"{text!r}: unix socket path is empty")
        return Address(text, socket.AF_UNIX, path=rest, mode=mode)
    if text.startswith("fd://"):
        num = text[5:]
        if not num.isdigit():
            raise ValueError(f"{text!r}: expected fd://N with N a file descriptor number")
        return Address(text, -1, fd=int(num))
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        family = socket.AF_INET6
    else:
        host, sep, port = text.rpartition(":")
        family = socket.AF_INET
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: expected host:port, [v6]:port, unix:/path or fd://N")
    if family == socket.AF_INET and ":" in host:
        raise ValueError(f"{text!r}: write IPv6 addresses in brackets, e.g. [::1]:8000")
    return Address(text, family, host=host or "0.0.0.0", port=int(port))


@dataclass
class Listener:
    """One open listening socket and what it was bound from."""

    address: Address
    sock: socket.socket
    created_path: str | None = None  # a unix socket file we made (unlinked on close)
    fileno: int = field(init=False)
    # Accepted sockets come with TCP_NODELAY already set: Linux copies it from the
    # listener, which saves a setsockopt per connection.
    nodelay_inherited: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.fileno = self.sock.fileno()
        if self.sock.family != socket.AF_UNIX and sys.platform.startswith("linux"):
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.nodelay_inherited = True
            except OSError:
                pass
            # And the kernel's receive timestamps, which the queue time is read from
            # (arbiter.io.stamps): on the listener, so that bytes waiting in the
            # backlog are stamped when they arrived, not when a worker got to them.
            enable_receive_timestamps(self.sock)

    @property
    def name(self) -> str:
        """Where it actually listens: host:port with the real port, or unix:/path."""
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname()}"
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if self.sock.family == socket.AF_INET6 else f"{host}:{port}"

    def close(self, unlink: bool = True) -> None:
        try:
            self.sock.close()
        finally:
            if unlink and self.created_path:
                try:
                    os.unlink(self.created_path)
                except FileNotFoundError:
                    pass


def _resolve_family(address: Address) -> tuple[int, tuple]:
    if address.family == socket.AF_INET6:
        return socket.AF_INET6, (address.host, address.port)
    try:
        infos = socket.getaddrinfo(address.host, address.port, socket.AF_UNSPEC,
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot bind {address.text}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _remove_stale_unix_socket(path: str) -> None:
    """Unlink a leftover socket file nobody listens on; refuse to touch anything else."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(f"cannot bind unix:{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise BindError(f"cannot bind unix:{path}: another process is listening on it")


def open_listener(address: Address, backlog: int, reuse_port: bool = False) -> Listener:
    """Bind and listen. Raises BindError naming the address and the OS error."""
    if address.fd is not None:
        try:
            sock = socket.socket(fileno=address.fd)
        except OSError as exc:
            raise BindError(f"cannot use {address.text}: {exc.strerror or exc}") from None
        if sock.type != socket.SOCK_STREAM:
            raise BindError(f"cannot use {address.text}: not a stream socket")
        sock.set_inheritable(True)
        return Listener(address, sock)
    if address.family == socket.AF_UNIX:
        _remove_stale_unix_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
            os.chmod(address.path, UNIX_SOCKET_MODE if address.mode is None else address.mode)
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            raise BindError(f"cannot bind {address.text}: {exc.strerror or exc}") from None
        sock.set_inheritable(True)
        return Listener(address, sock, created_path=address.path)
    family, sockaddr = _resolve_family(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += " (is another server running on it?)"
        raise BindError(f"cannot bind {address.text}: {reason}") from None
    sock.set_inheritable(True)
    return Listener(address, sock)


def adopt_listener(text: str, fd: int) -> Listener:
    """A listener inherited from an old master (USR2 upgrade) for the bind ``text``.

    A unix socket keeps its path, so the last master to own it unlinks it.
    """
    address = parse_address(text)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"cannot adopt inherited {text} (fd {fd}): {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    created = address.path if address.family == socket.AF_UNIX else None
    return Listener(address, sock, created_path=created)


def encode_inherited(listeners: list[Listener]) -> str:
    """The environment value that hands listeners to a new master: ``fd=bind`` pairs."""
    return "\n".join(f"{lst.fileno}={lst.address.text}" for lst in listeners)


def decode_inherited(value: str) -> dict[str, int]:
    """Bind text -> fd, from :func:`encode_inherited`'s value."""
    inherited: dict[str, int] = {}
    for line in value.splitlines():
        fd, sep, text = line.partition("=")
        if sep and fd.isdigit():
            inherited[text] = int(fd)
    return inherited


def open_listeners(binds: tuple[str, ...] | list[str], backlog: int,
                   reuse_port: bool = False,
                   existing: dict[str, Listener] | None = None,
                   inherited: dict[str, int] | None = None) -> list[Listener]:
    """Open every bind address, reusing listeners already open for the same text,
    and adopting ``inherited`` fds (bind text -> fd) passed by an old master.

    On failure, the listeners opened by this call are closed again before
    BindError propagates, so a failed reload leaks nothing.
    """
    existing = existing or {}
    inherited = inherited or {}
    opened: list[Listener] = []
    result: list[Listener] = []
    try:
        for text in binds:
            if text in existing:
                result.append(existing[text])
                continue
            if text in inherited:
                listener = adopt_listener(text, inherited[text])
                opened.append(listener)
                result.append(listener)
                continue
            try:
                address = parse_address(text)
            except ValueError as exc:
                raise BindError(f"cannot bind {exc}") from None
            listener = open_listener(address, backlog, reuse_port)
            opened.append(listener)
            result.append(listener)
    except BaseException:
        for listener in opened:
            listener.close(unlink=listener.address.text not in inherited)
        raise
    return result
