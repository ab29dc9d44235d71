"""Proxy trust: which peers may tell us who the client is, and what we believe of it.

Owns :class:`ProxyTrust`, built once per worker from ``forwarded_allow_ips``
and ``forwarded_headers``, and the pure parsers it uses (no sockets):

* :func:`parse_node` -- one address of a forwarding chain (``1.2.3.4``,
  ``1.2.3.4:5678``, ``::1``, ``[::1]:80``) -> the IP without port or
  brackets, or ``None`` when it is not an IP address;
* :func:`parse_forwarded` -- an RFC 7239 ``Forwarded`` value -> its elements
  (one ``{parameter: value}`` dict each, names lower-cased, quoted-strings
  unquoted), or ``None`` when it is malformed;
* :func:`script_name_prefix` -- a ``SCRIPT_NAME`` header value -> the prefix
  to mount the app under, or ``None``.

The rules (the WSGI handler calls :meth:`ProxyTrust.apply` only for a trusted
peer: one in ``forwarded_allow_ips``, or a unix-socket peer):

* exactly one header family is read: ``X-Forwarded-For`` /
  ``X-Forwarded-Proto`` (``forwarded_headers: x-forwarded``, the default) or
  ``Forwarded`` (``forwarded_headers: forwarded``). The other family stays in
  the environ as plain ``HTTP_*`` keys and sets nothing;
* the chain is walked from the right (the hop nearest to us). An address in
  ``forwarded_allow_ips`` is a trusted proxy and is skipped; the first one
  that is not is the client and becomes ``REMOTE_ADDR``. When every address
  is trusted, the leftmost is the client. ``"*"`` in ``forwarded_allow_ips``
  trusts every *peer* to send the headers but makes no address of the chain
  a trusted hop (else a client could name itself): with ``"*"`` alone, the
  rightmost address is the client;
* an entry that is not an IP address (garbage, ``unknown``, an obfuscated
  ``_name``, an element without ``for=``) stops the walk: it is never copied,
  and ``REMOTE_ADDR`` stays the nearest address verified so far -- the peer,
  or the last trusted hop. It is logged at debug level;
* the scheme: the rightmost ``X-Forwarded-Proto`` value; in ``forwarded``
  mode, the ``proto=`` of the element whose ``for=`` gave ``REMOTE_ADDR``.
  Only ``http`` and ``https`` (any case) are accepted;
* a malformed ``Forwarded`` header is ignored entirely (debug log).

Costs: the peer check and every parsed chain address are cached (bounded
dicts), so a proxied request costs a split and a few dict lookups; a request
without proxy headers costs two ``dict.get``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, MutableMapping
from typing import Any

__all__ = [
    "FORWARDED_HEADER_MODES",
    "ProxyTrust",
    "parse_forwarded",
    "parse_node",
    "script_name_prefix",
]

FORWARDED_HEADER_MODES = ("x-forwarded", "forwarded")
_SCHEMES = {"http": "http", "https": "https"}
_CACHE_MAX = 4096

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- addresses ------------------------------------------------------------------------
_PORT_RE = re.compile(r"[0-9]{1,5}")
_OBFUSCATED_RE = re.compile(r"_[A-Za-z0-9._-]+")


def _valid_port(port: str, obfuscated_ok: bool) -> bool:
    if _PORT_RE.fullmatch(port):
        return int(port) <= 65535
    return obfuscated_ok and _OBFUSCATED_RE.fullmatch(port) is not None


def _parse_ip_port(text: str, obfuscated_port: bool) -> IPAddress | None:
    """``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` or ``[::1]:80`` -> the address."""
    if not text or not text.isascii():
        return None
    if text[0] == "[":
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and _valid_port(rest[1:], obfuscated_port))):
            return None
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _valid_port(port, obfuscated_port):
            return None
        try:
            return ipaddress.IPv4Address(host)
        except ValueError:
            return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_node(text: str, obfuscated_port: bool = False) -> str | None:
    """One address of a forwarding chain -> the IP as ``REMOTE_ADDR`` holds it, or None.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``::1`` and ``[::1]:80`` (surrounding
    whitespace ignored); returns it without the port, IPv6 without brackets,
    in its canonical (compressed, lower-case) form, IPv4-mapped IPv6 as IPv4.
    ``obfuscated_port``: also accept an RFC 7239 obfuscated port (``1.2.3.4:_abc``).
    """
    addr = _parse_ip_port(text.strip(), obfuscated_port)
    return None if addr is None else _remote_addr(addr)


def _remote_addr(addr: IPAddress) -> str:
    """The ``REMOTE_ADDR`` form: IPv4-mapped IPv6 (``::ffff:1.2.3.4``) as plain IPv4."""
    if addr.version == 6 and addr.ipv4_mapped is not None:  # type: ignore[union-attr]
        return str(addr.ipv4_mapped)  # type: ignore[union-attr]
    return str(addr)


# -- RFC 7239 -------------------------------------------------------------------------
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_PAIR_RE = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_OWS_RE = re.compile(r"[ \t]*")
_QUOTED_PAIR_RE = re.compile(r"\\(.)")


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """Parse an RFC 7239 ``Forwarded`` value; None if it is malformed.

    Elements are comma-separated, each a ``;``-separated list of
    ``name=value`` pairs whose value is a token or a quoted-string (which may
    hold commas, semicolons and ``\\``-escaped characters). Names are returned
    lower-cased. Empty elements and empty pairs (``a=1;;b=2``, ``x, ,y``) are
    allowed, as the list syntax says; a parameter given twice in one element
    is malformed. Whitespace is allowed around ``,`` and ``;``, not around ``=``.
    """
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    pos, end = 0, len(value)
    while True:
        m = _PAIR_RE.match(value, pos)
        if m is not None:
            name = m.group(1).lower()
            if name in current:
                return None
            v = m.group(2)
            if v[0] == '"':
                v = _QUOTED_PAIR_RE.sub(r"\1", v[1:-1])
            current[name] = v
            pos = m.end()
        else:
            pos = _OWS_RE.match(value, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            break
        c = value[pos]
        pos += 1
        if c == ",":
            if current:
                elements.append(current)
                current = {}
        elif c != ";":
            return None
    if current:
        elements.append(current)
    return elements


# -- SCRIPT_NAME ----------------------------------------------------------------------
def script_name_prefix(value: str) -> str | None:
    """A ``SCRIPT_NAME`` header value -> the mount prefix (trailing ``/`` stripped).

    None unless it starts with ``/``; ``"/"`` gives ``""`` (mounted at the root).
    """
    value = value.strip()
    if not value.startswith("/"):
        return None
    return value.rstrip("/")


# -- trust ----------------------------------------------------------------------------
class ProxyTrust:
    """``forwarded_allow_ips`` and ``forwarded_headers`` applied to environs (see the module)."""

    def __init__(self, allow_ips: Iterable[str], headers: str = "x-forwarded",
                 log: logging.Logger | None = None) -> None:
        if headers not in FORWARDED_HEADER_MODES:
            raise ValueError(f"forwarded_headers: expected x-forwarded or forwarded, got {headers!r}")
        self.mode = headers
        self.log = log if log is not None else logging.getLogger("arbiter.error")
        self.trust_all = False
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow_ips:
            entry = entry.strip()
            if entry == "*":
                self.trust_all = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.log.warning("forwarded_allow_ips: ignoring invalid entry %r", entry)
        self._peer_cache: dict[str, bool] = {}
        # chain entry text -> (REMOTE_ADDR form or None, is a trusted hop)
        self._node_cache: dict[str, tuple[str | None, bool]] = {}
        self._obfuscated_ports = headers == "forwarded"
        self.apply = self._apply_forwarded if headers == "forwarded" else self._apply_x_forwarded

    def _in_networks(self, addr: IPAddress) -> bool:
        if addr.version == 6 and addr.ipv4_mapped is not None:  # type: ignore[union-attr]
            addr = addr.ipv4_mapped  # type: ignore[union-attr]
        for net in self.networks:
            if addr in net:
                return True
        return False

    def peer_trusted(self, ip: str) -> bool:
        """May this TCP peer set the proxy headers? (``"*"`` trusts every peer.)"""
        if self.trust_all:
            return True
        cached = self._peer_cache.get(ip)
        if cached is None:
            try:
                addr = ipaddress.ip_address(ip.split("%", 1)[0])
            except ValueError:
                cached = False
            else:
                cached = self._in_networks(addr)
            if len(self._peer_cache) >= _CACHE_MAX:
                self._peer_cache.clear()
            self._peer_cache[ip] = cached
        return cached

    def node(self, text: str) -> tuple[str | None, bool]:
        """A chain entry -> (its ``REMOTE_ADDR`` form or None, is it a trusted proxy)."""
        cached = self._node_cache.get(text)
        if cached is None:
            addr = _parse_ip_port(text.strip(), self._obfuscated_ports)
            if addr is None:
                cached = (None, False)
            else:
                cached = (_remote_addr(addr), self._in_networks(addr))
            if len(self._node_cache) >= _CACHE_MAX:
                self._node_cache.clear()
            self._node_cache[text] = cached
        return cached

    def client_from_x_forwarded_for(self, value: str) -> str | None:
        """The client of an ``X-Forwarded-For`` chain, or None to keep the peer."""
        found = None
        node = self.node
        for entry in reversed(value.split(",")):
            addr, hop = node(entry)
            if addr is None:
                self.log.debug("X-Forwarded-For: %r is not an IP address; using %s", entry,
                               found or "the peer")
                break
            found = addr
            if not hop:
                break
        return found

    def client_from_forwarded(self, value: str) -> tuple[str, dict[str, str]] | None:
        """(client, its element) of a ``Forwarded`` chain, or None to keep the peer."""
        elements = parse_forwarded(value)
        if elements is None:
            self.log.debug("Forwarded: ignoring a malformed header %r", value)
            return None
        found = None
        for element in reversed(elements):
            text = element.get("for")
            addr, hop = self.node(text) if text is not None else (None, False)
            if addr is None:
                self.log.debug("Forwarded: for=%r is not an IP address; using %s", text,
                               found[0] if found else "the peer")
                break
            found = (addr, element)
            if not hop:
                break
        return found

    def _apply_x_forwarded(self, environ: MutableMapping[str, Any]) -> None:
        xff = environ.get("HTTP_X_FORWARDED_FOR")
        if xff:
            client = self.client_from_x_forwarded_for(xff)
            if client is not None:
                environ["REMOTE_ADDR"] = client
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto:
            last = proto.rpartition(",")[2].strip().lower()
            scheme = _SCHEMES.get(last)
            if scheme is not None:
                environ["wsgi.url_scheme"] = scheme
            else:
                self.log.debug("X-Forwarded-Proto: ignoring %r", last)

    def _apply_forwarded(self, environ: MutableMapping[str, Any]) -> None:
        value = environ.get("HTTP_FORWARDED")
        if not value:
            return
        found = self.client_from_forwarded(value)
        if found is None:
            return
        environ["REMOTE_ADDR"] = found[0]
        proto = found[1].get("proto")
        if proto is not None:
            scheme = _SCHEMES.get(proto.lower())
            if scheme is not None:
                environ["wsgi.url_scheme"] = scheme
            else:
                self.log.debug("Forwarded: ignoring proto=%r", proto)
