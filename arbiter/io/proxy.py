"""Reading a PROXY protocol header off a socket without reading one byte past it.

Owns :class:`ProxyHeaderTaker`: for a connection from a peer in
``proxy_allow_ips`` (when ``proxy_protocol`` is on), it takes exactly the
header's bytes from the socket -- it peeks at what has arrived, lets the
sans-IO :class:`~arbiter.http.proxy_protocol.ProxyHeaderReader` say how much
of it is header, and receives only that -- so whatever follows stays in the
socket for its rightful reader: the HTTP parser, or, when the listener
serves TLS, the TLS handshake (a proxy like an AWS NLB puts the PROXY header
before the ClientHello). Works on blocking and non-blocking sockets alike
(each call does what has arrived; ``None`` means "wait for more").
"""

from __future__ import annotations

import socket
from typing import Any

from arbiter.http.app_response import ClientDisconnected
from arbiter.http.proxy_protocol import (
    MAX_V2_LENGTH,
    NEED_MORE,
    ProxyHeaderError,
    ProxyHeaderReader,
    ProxyInfo,
)

__all__ = ["ProxyHeaderTaker"]

_PEEK = 16 + MAX_V2_LENGTH  # the longest header there can be
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)  # the socket may be in blocking mode


class ProxyHeaderTaker:
    """Takes one PROXY header, exactly, from a socket (see the module docstring)."""

    __slots__ = ("mode", "taken")

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.taken = b""  # header bytes received so far

    def take(self, sock: socket.socket) -> ProxyInfo | None:
        """The header once it is complete; None while more must arrive. Raises
        ClientDisconnected for a malformed header, or a peer gone before it ended."""
        try:
            peeked = sock.recv(_PEEK - len(self.taken), socket.MSG_PEEK | _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise ClientDisconnected(f"recv failed: {exc}") from None
        reader = ProxyHeaderReader(self.mode)
        try:
            result: Any = reader.feed(self.taken + peeked)
            if not peeked:
                reader.feed(b"")  # EOF: an incomplete header raises
        except ProxyHeaderError as exc:
            raise ClientDisconnected(f"PROXY protocol header refused: {exc}") from None
        if not peeked:
            raise ClientDisconnected("the peer closed before sending a PROXY header")
        wanted = len(peeked) if result is NEED_MORE else len(peeked) - len(result.rest)
        try:
            data = sock.recv(wanted, _MSG_DONTWAIT)  # what was peeked: exactly it
        except OSError as exc:
            raise ClientDisconnected(f"recv failed: {exc}") from None
        self.taken += data
        if result is NEED_MORE or len(data) < wanted:
            return None
        return result
