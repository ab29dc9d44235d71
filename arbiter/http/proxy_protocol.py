"""The PROXY protocol (HAProxy's, versions 1 and 2): the header a TCP proxy puts first.

Owns, sans-IO (no sockets, no clock, no logging):

* :class:`ProxyHeaderReader` -- bytes in, one :class:`ProxyInfo` out (or a
  :class:`ProxyHeaderError`), for ``proxy_protocol: v1 | v2 | auto``;
* :class:`ProxyInfo` -- what the header says: the client (``source``) and the
  address it connected to (``destination``), and the bytes after the header
  (``rest``), which are the start of the HTTP request;
* :class:`ProxyAllowList` -- ``proxy_allow_ips``: which accept() peers may send
  a header at all.

What a driver does with them (not here): for a peer the allow list admits,
feed what it reads to a reader until it answers; on a ``ProxyInfo``, use
``source``/``destination`` instead of the socket's addresses when they are not
None, and hand ``rest`` to the HTTP parser; on an error, close the connection.
The spec asks receivers to expect the header, never to guess whether it is
there: ``auto`` picks the *version* from the first bytes, a connection without
a header is an error in every mode. Deadlines for the header are the driver's.

The rules, from the spec (haproxy.org ``doc/proxy-protocol.txt``):

* v1 is one ASCII line, ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` or
  ``PROXY UNKNOWN[ anything]\\r\\n``, at most 107 bytes with the CRLF. Single
  spaces; TCP4 takes IPv4 and TCP6 IPv6 addresses (no zone ``%eth0``); ports
  are 0..65535 in decimal without sign or leading zeros. ``UNKNOWN`` means
  "use the real endpoints": ``source``/``destination`` are None. A line that
  has no CRLF within its first 107 bytes is refused as soon as the 107th byte
  arrives; a line feed without a carriage return before it, at once.
* v2 is binary: the 12-byte signature ``\\r\\n\\r\\n\\x00\\r\\nQUIT\\n``, a byte
  of version (high nibble, must be 2) and command (low nibble: 0 LOCAL, 1
  PROXY), a byte of address family (0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and
  transport (1 STREAM, 2 DGRAM), a 2-byte big-endian length of what follows:
  the address block (12, 36 or 216 bytes) then TLVs. TLVs are checked to fit
  (type, 2-byte length, value, exactly filling the length) and skipped. The
  length is capped at :data:`MAX_V2_LENGTH` bytes (refused as soon as the
  length field arrives). LOCAL (a health check by the proxy itself): the
  family and the whole block after the length are skipped unread, and
  ``source``/``destination`` are None.
  PROXY with family UNSPEC: None too (command ``"UNKNOWN"``, as v1's). DGRAM
  transports are refused: we serve streams. Unix addresses are 108-byte,
  NUL-padded paths: ``(path, 0)`` with the path up to its first NUL (an
  abstract-namespace name keeps its leading NUL), or None when empty.
* IP addresses are returned in ``ipaddress``'s canonical text form (IPv6
  compressed, lower-case; an IPv4-mapped IPv6 address stays IPv6).

Every decision is a function of the bytes seen so far, made as soon as those
bytes settle it, so the outcome never depends on how the bytes are split.
The reader buffers at most one header (107 bytes for v1, 16 +
``MAX_V2_LENGTH`` for v2) plus whatever arrived with its last byte.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "MAX_V1_LENGTH",
    "MAX_V2_LENGTH",
    "NEED_MORE",
    "PROXY_PROTOCOL_MODES",
    "V2_SIGNATURE",
    "NeedMore",
    "ProxyAllowList",
    "ProxyHeaderError",
    "ProxyHeaderReader",
    "ProxyInfo",
]

PROXY_PROTOCOL_MODES = ("v1", "v2", "auto")

V1_PREFIX = b"PROXY "
MAX_V1_LENGTH = 107  # bytes, the CRLF included (the spec's worst case, "PROXY UNKNOWN" + 2 IPv6)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length
MAX_V2_LENGTH = 4096  # bytes after the fixed 16: addresses + TLVs (the field allows 65535)

_CACHE_MAX = 4096


class NeedMore(enum.Enum):
    """The type of :data:`NEED_MORE`."""

    NEED_MORE = "NEED_MORE"

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE = NeedMore.NEED_MORE
"""``feed`` answer: the header is not complete yet; feed more bytes (or b"" at EOF)."""


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header (of the expected version).

    ``reason`` (also ``str(err)``) is short and safe to log; it quotes at most
    a few bytes of what was received. The connection should be closed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProxyInfo:
    """What a PROXY header said.

    ``source``: the client, ``(ip, port)``, or ``(path, 0)`` for a unix peer;
    ``destination``: the address the client connected to, same forms. Both are
    None when the header says to keep the real endpoints (v1 UNKNOWN, v2
    LOCAL, v2 UNSPEC) or a unix path is empty. ``version``: 1 or 2.
    ``command``: ``"PROXY"`` (addresses given), ``"LOCAL"`` (v2: the proxy's
    own connection, e.g. a health check) or ``"UNKNOWN"`` (v1 UNKNOWN, v2
    PROXY with family UNSPEC). ``rest``: the bytes that followed the header in
    what was fed -- the beginning of the HTTP request.
    """

    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    version: int
    command: str
    rest: bytes = b""


class ProxyHeaderReader:
    """Reads one PROXY protocol header from the start of a connection.

    ``mode``: ``"v1"``, ``"v2"`` or ``"auto"`` (the version from the first
    bytes: ``PROXY `` is v1, the v2 signature is v2, anything else an error).

    :meth:`feed` takes the bytes as they arrive and returns :data:`NEED_MORE`
    or, once, the :class:`ProxyInfo`. Errors are *raised*: a
    :class:`ProxyHeaderError` as soon as the bytes seen cannot start a valid
    header (and again from every later ``feed``). ``feed(b"")`` means EOF: an
    incomplete header is then an error. Feeding after the ``ProxyInfo`` was
    returned is a programming error (RuntimeError): the bytes that follow
    belong to HTTP.
    """

    __slots__ = ("mode", "_buffer", "_error", "_done")

    def __init__(self, mode: str) -> None:
        if mode not in PROXY_PROTOCOL_MODES:
            raise ValueError(f"proxy_protocol mode: expected v1, v2 or auto, got {mode!r}")
        self.mode = mode
        self._buffer = bytearray()
        self._error: ProxyHeaderError | None = None
        self._done = False

    def feed(self, data: bytes) -> ProxyInfo | Literal[NeedMore.NEED_MORE]:
        """Add received bytes (b"" = EOF); the header, or NEED_MORE. Raises ProxyHeaderError."""
        if self._done:
            raise RuntimeError("the PROXY header was already read; the rest is HTTP")
        if self._error is not None:
            raise self._error
        eof = not data
        self._buffer += data
        try:
            result = _decide(self._buffer, self.mode)
            if result is NEED_MORE and eof:
                raise ProxyHeaderError(_truncated(len(self._buffer)))
        except ProxyHeaderError as err:
            self._error = err
            self._buffer = bytearray()
            raise
        if result is not NEED_MORE:
            self._done = True
            self._buffer = bytearray()
        return result


def _truncated(received: int) -> str:
    if not received:
        return "connection closed before a PROXY header"
    return f"connection closed after {received} bytes, before the PROXY header was complete"


def _decide(buf: bytearray, mode: str) -> ProxyInfo | Literal[NeedMore.NEED_MORE]:
    """The outcome for the bytes received so far (raises ProxyHeaderError)."""
    v1, v2 = _agrees(buf, V1_PREFIX), _agrees(buf, V2_SIGNATURE)
    if v1 == len(V1_PREFIX) and mode != "v2":
        return _decide_v1(buf)
    if v2 == len(V2_SIGNATURE) and mode != "v1":
        return _decide_v2(buf)
    if v1 == len(V1_PREFIX):
        raise ProxyHeaderError("a PROXY protocol v1 header where v2 is expected")
    if v2 == len(V2_SIGNATURE):
        raise ProxyHeaderError("a PROXY protocol v2 header where v1 is expected")
    if max(v1, v2) == len(buf):  # still the start of one of them (of the other version
        return NEED_MORE         # too: wait for all of it, to say which it is)
    # Quote up to the first byte that can start no header: the same however it was split.
    what = "PROXY protocol header" if mode == "auto" else f"PROXY protocol {mode} header"
    raise ProxyHeaderError(f"not a {what} (starts {bytes(buf[: max(v1, v2) + 1])!r})")


def _agrees(buf: bytearray, prefix: bytes) -> int:
    """How many leading bytes of ``buf`` agree with ``prefix`` (at most its length)."""
    n = min(len(buf), len(prefix))
    if buf[:n] == prefix[:n]:
        return n
    return next(i for i in range(n) if buf[i] != prefix[i])


def _quote(data: bytes | bytearray, limit: int) -> str:
    text = repr(bytes(data[:limit]))
    return text + "..." if len(data) > limit else text


# -- v1 ---------------------------------------------------------------------------------
_PORT_RE = re.compile(rb"0|[1-9][0-9]{0,4}")


def _decide_v1(buf: bytearray) -> ProxyInfo | Literal[NeedMore.NEED_MORE]:
    end = buf.find(b"\n", 0, MAX_V1_LENGTH)
    if end < 0:
        if len(buf) >= MAX_V1_LENGTH:
            raise ProxyHeaderError(f"PROXY v1 line longer than {MAX_V1_LENGTH} bytes")
        return NEED_MORE
    if buf[end - 1] != 0x0D:
        raise ProxyHeaderError("PROXY v1 line ends with a bare LF, not CRLF")
    line = bytes(buf[: end - 1])
    rest = bytes(buf[end + 1 :])
    fields = line.split(b" ")
    protocol = fields[1]
    if protocol == b"UNKNOWN":  # the rest of the line, if any, is to be ignored
        return ProxyInfo(None, None, 1, "UNKNOWN", rest)
    if protocol not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(f"PROXY v1: unknown protocol {_quote(protocol, 16)}")
    if len(fields) != 6:
        raise ProxyHeaderError(
            f"PROXY v1: expected 'PROXY {protocol.decode()} SRC DST SPORT DPORT', "
            f"got {_quote(line, 60)}")
    version = 4 if protocol == b"TCP4" else 6
    src = _v1_address(fields[2], version, "source")
    dst = _v1_address(fields[3], version, "destination")
    sport = _v1_port(fields[4], "source")
    dport = _v1_port(fields[5], "destination")
    return ProxyInfo((src, sport), (dst, dport), 1, "PROXY", rest)


def _v1_address(field: bytes, version: int, which: str) -> str:
    try:
        text = field.decode("ascii")
        if "%" in text:
            raise ValueError(text)
        addr = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except ValueError:
        raise ProxyHeaderError(
            f"PROXY v1: {which} address {_quote(field, 46)} is not an IPv{version} address"
        ) from None
    return str(addr)


def _v1_port(field: bytes, which: str) -> int:
    if _PORT_RE.fullmatch(field) and int(field) <= 65535:
        return int(field)
    raise ProxyHeaderError(f"PROXY v1: {which} port {_quote(field, 8)} is not 0..65535")


# -- v2 ---------------------------------------------------------------------------------
_LOCAL, _PROXY = 0x0, 0x1
_UNSPEC, _INET, _INET6, _UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM, _DGRAM = 0x1, 0x2
_ADDRESS_BLOCK = {_INET: 12, _INET6: 36, _UNIX: 216}
_FAMILY_NAMES = {_INET: "IPv4", _INET6: "IPv6", _UNIX: "unix"}
_UNIX_PATH = 108


def _decide_v2(buf: bytearray) -> ProxyInfo | Literal[NeedMore.NEED_MORE]:
    n = len(buf)
    if n < 13:
        return NEED_MORE
    version, command = buf[12] >> 4, buf[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY v2: unsupported version {version} (byte 0x{buf[12]:02x})")
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"PROXY v2: unknown command {command}")
    if n < 14:
        return NEED_MORE
    family, transport = buf[13] >> 4, buf[13] & 0x0F
    if command == _PROXY:  # LOCAL: "the family is ignored", as are the addresses
        if transport == _DGRAM and family in _ADDRESS_BLOCK:
            raise ProxyHeaderError(
                f"PROXY v2: a datagram ({_FAMILY_NAMES[family]}) connection; "
                f"only streams are served")
        if not (buf[13] == 0x00 or (family in _ADDRESS_BLOCK and transport == _STREAM)):
            raise ProxyHeaderError(
                f"PROXY v2: unknown address family/transport 0x{buf[13]:02x}")
    if n < V2_FIXED:
        return NEED_MORE
    length = int.from_bytes(buf[14:16], "big")
    if length > MAX_V2_LENGTH:
        raise ProxyHeaderError(
            f"PROXY v2: length {length} is over the {MAX_V2_LENGTH}-byte limit")
    block = _ADDRESS_BLOCK.get(family, 0) if command == _PROXY else 0
    if length < block:
        raise ProxyHeaderError(
            f"PROXY v2: length {length} is too short for the {_FAMILY_NAMES[family]} "
            f"addresses ({block} bytes)")
    end = V2_FIXED + length
    if n < end:
        return NEED_MORE
    payload = bytes(buf[V2_FIXED:end])
    rest = bytes(buf[end:])
    if command == _LOCAL:  # "discard the protocol block": nothing in it is read
        return ProxyInfo(None, None, 2, "LOCAL", rest)
    _check_tlvs(payload, block)
    if family == _UNSPEC:
        return ProxyInfo(None, None, 2, "UNKNOWN", rest)
    if family == _UNIX:
        src_path = _unix_path(payload[:_UNIX_PATH])
        dst_path = _unix_path(payload[_UNIX_PATH:block])
        return ProxyInfo(None if src_path is None else (src_path, 0),
                         None if dst_path is None else (dst_path, 0), 2, "PROXY", rest)
    size = 4 if family == _INET else 16
    make = ipaddress.IPv4Address if family == _INET else ipaddress.IPv6Address
    src = str(make(payload[:size]))
    dst = str(make(payload[size : 2 * size]))
    sport = int.from_bytes(payload[2 * size : 2 * size + 2], "big")
    dport = int.from_bytes(payload[2 * size + 2 : 2 * size + 4], "big")
    return ProxyInfo((src, sport), (dst, dport), 2, "PROXY", rest)


def _check_tlvs(payload: bytes, start: int) -> None:
    """The TLVs from ``start`` (type, 2-byte length, value) must exactly fill the payload."""
    pos, end = start, len(payload)
    while pos < end:
        if end - pos < 3:
            raise ProxyHeaderError(f"PROXY v2: {end - pos} stray bytes after the last TLV")
        size = int.from_bytes(payload[pos + 1 : pos + 3], "big")
        if pos + 3 + size > end:
            raise ProxyHeaderError(
                f"PROXY v2: TLV type 0x{payload[pos]:02x} of {size} bytes overruns the header")
        pos += 3 + size


def _unix_path(raw: bytes) -> str | None:
    """A NUL-padded sun_path -> the path (abstract names keep their leading NUL), or None."""
    if raw[:1] == b"\x00":
        name = raw[1:].split(b"\x00", 1)[0]
        return "\x00" + os.fsdecode(name) if name else None
    path = raw.split(b"\x00", 1)[0]
    return os.fsdecode(path) if path else None


# -- who may send one -------------------------------------------------------------------
class ProxyAllowList:
    """``proxy_allow_ips``: the peers allowed to send a PROXY header.

    ``entries``: IP addresses, CIDR networks, or ``"*"`` (every peer), as the
    config validated them; an invalid entry raises ValueError. :meth:`allows`
    takes the address accept() returned: a tuple for TCP (``(ip, port)`` or
    IPv6's 4-tuple; an IPv4-mapped IPv6 peer of a dual-stack listener matches
    IPv4 entries; a zone ``%eth0`` is ignored), a str or bytes for a unix-socket
    peer, which is a local process and always allowed (as for the forwarded
    headers). Anything else is refused. Answers are cached per IP in a
    bounded dict.
    """

    __slots__ = ("allow_all", "networks", "_cache")

    def __init__(self, entries: Iterable[str]) -> None:
        self.allow_all = False
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            entry = entry.strip()
            if entry == "*":
                self.allow_all = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"proxy_allow_ips: expected an IP address, a CIDR network "
                                 f"or \"*\", got {entry!r}") from None
        self._cache: dict[str, bool] = {}

    def allows(self, peer: Any) -> bool:
        """May this accept() peer send a PROXY header?"""
        if isinstance(peer, str | bytes):
            return True  # a unix-socket peer: a local process
        if not isinstance(peer, tuple) or not peer:
            return False
        if self.allow_all:
            return True
        ip = str(peer[0])
        cached = self._cache.get(ip)
        if cached is None:
            cached = self._match(ip)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[ip] = cached
        return cached

    def _match(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:  # type: ignore[union-attr]
            addr = addr.ipv4_mapped  # type: ignore[union-attr]
        return any(addr in net for net in self.networks)
