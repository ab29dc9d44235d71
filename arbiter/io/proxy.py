"""Reading a PROXY protocol header off a socket without reading one byte past it.

Owns :class:`ProxyHeaderTaker`: for a connection from a peer in
``proxy_allow_ips`` (when ``proxy_protocol`` is on), it takes exactly the
header's bytes from the socket -- it peeks at what has arrived, lets the
sans-IO :class:`~arbiter.http.proxy_protocol.ProxyHeaderReader` say how much
of it is header, and receives only that -- so whatever follows stays in the
socket for its rightful reader: the HTTP parser, or, when the listener
serves TLS, the TLS handshake (a proxy like an AWS NLB puts the PROXY header
before the ClientHello). Works on blocking and non-blocking sockets alike
(each call does what has arrived; ``None`` means "wait for more");
:func:`take_proxy_header` waits for it on an asyncio loop (the asgi worker,
before asyncio's transport takes the socket over).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from arbiter.http.app_response import ClientDisconnected
from arbiter.http.proxy_protocol import (
    MAX_V2_LENGTH,
    NEED_MORE,
    ProxyHeaderError,
    ProxyHeaderReader,
    ProxyInfo,
)

__all__ = ["ProxyHeaderTaker", "take_proxy_header"]

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


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def take_proxy_header(loop: asyncio.AbstractEventLoop, sock: socket.socket, mode: str,
                            deadline: float) -> ProxyInfo:
    """The PROXY header off a non-blocking ``sock``, waiting on ``loop`` until ``deadline``
    (monotonic); raises ClientDisconnected when it is malformed, late or never sent."""
    taker = ProxyHeaderTaker(mode)
    while (info := taker.take(sock)) is None:
        readable = loop.create_future()
        loop.add_reader(sock.fileno(), _resolve, readable)
        try:
            await asyncio.wait_for(readable, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise ClientDisconnected("no PROXY protocol header within header_timeout") from None
        finally:
            loop.remove_reader(sock.fileno())
    return info
