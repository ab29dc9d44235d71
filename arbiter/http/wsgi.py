"""The WSGI (PEP 3333) layer shared by every worker type; no socket in sight.

Owns :class:`WSGIHandler` (built once per worker) and what it needs:

* ``handler.connection_info(peer, sockname)`` -> :class:`ConnectionInfo`: the
  per-connection part of the environ (server/remote address, proxy trust),
  computed once per connection;
* ``handler.build_environ(request, conn_info, wsgi_input)`` -> the environ,
  a copy of that per-connection template plus the request's fields;
* ``handler.run_app(environ, request, send, ...)`` -> :class:`ResponseOutcome`:
  for a blocking driver, calls the app through an
  :class:`~arbiter.http.app_response.AppResponse` (which owns
  ``start_response``, framing, ``file_wrapper``, errors -> 500 and the access
  line) and writes every piece it pulls through ``send(bytes)`` (head and a
  small body in one call), ``sendfile`` for ``wsgi.file_wrapper``;
* ``handler.error_response(error, conn_info)`` -> bytes for a core-generated
  error (:class:`~arbiter.http.protocol.ProtocolError`), access-logged too;
* ``wsgi.input`` / ``wsgi.errors``: :mod:`arbiter.http.inputs` (a body pulled
  as it arrives) or a :class:`~arbiter.http.bodies.BodySpool` (read whole
  first); ``EMPTY_INPUT`` for no body;
* :class:`RequestObserver` / :class:`NullObserver` (the scoreboard hooks).

Headers with an underscore in their name are dropped (``X_Forwarded_For``
could otherwise pose as ``X-Forwarded-For``), with one exception below.

Proxy headers are read only when the peer is trusted: its address is in
``forwarded_allow_ips``, or it is a unix-socket peer (a local process, i.e.
the proxy). Then :class:`~arbiter.http.forwarded.ProxyTrust` reads exactly
one header family, chosen by ``forwarded_headers``: ``X-Forwarded-For`` /
``X-Forwarded-Proto`` (``x-forwarded``, the default) or RFC 7239
``Forwarded`` (``forwarded``). The other family is left in the environ as
plain ``HTTP_*`` keys and sets nothing. ``REMOTE_ADDR`` becomes the rightmost
address of the chain that is not itself a trusted proxy -- one in an IP or
network of ``forwarded_allow_ips`` (``"*"`` trusts every peer but no hop) --
or the leftmost if all are. An entry that is not an IP address is never
copied: the walk stops there and ``REMOTE_ADDR`` stays the peer or the last
trusted hop. ``wsgi.url_scheme`` becomes the rightmost ``X-Forwarded-Proto``,
or the ``proto=`` of the ``Forwarded`` element that named the client, when it
is ``http`` or ``https``. The details are in :mod:`arbiter.http.forwarded`.
A request without proxy headers parses nothing: it costs at most two dict
lookups from a trusted peer, none from an untrusted one.

``SCRIPT_NAME``: the process environment variable of that name is the
default mount prefix (``PATH_INFO`` loses it when it starts with it). A
trusted peer's ``SCRIPT_NAME`` request header (any case; nginx:
``proxy_set_header SCRIPT_NAME /prefix;``) replaces it for that request: its
trailing ``/`` is stripped, it must start with ``/`` (else it is ignored, as
are two such headers), and ``PATH_INFO`` is the request path without that
prefix when it starts with it (at a ``/`` boundary), else the whole path.
From an untrusted peer the header is dropped like any underscore header.

``wsgi.errors``: one stream per worker; every line the app writes goes to
the error log as written (:func:`arbiter.logs.write_app_lines`), whatever
``log.level``; a partial line waits, per thread, for its newline, for
``flush()``, or until it is 64 KiB long.

Request ids: every environ carries ``HTTP_X_REQUEST_ID`` (apps read it like
the header). A client's ``X-Request-ID`` is kept when it is 1-200 printable
ASCII characters; otherwise (absent or unfit) a new id replaces it: 32 hex
digits, a random 64-bit per-process prefix (drawn again in every forked
child) plus a counter -- unique across workers and restarts for practical
purposes, and cheaper than ``os.urandom`` per request. The access log shows
it (``request_id`` in JSON, ``%({x-request-id}i)s`` in the text format). It
is not echoed as a response header (that would change every response head).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from arbiter.http.app_response import (
    AppResponse,
    ClientDisconnected,
    FileSegment,
    FileWrapper,
    RequestBodyError,
    ResponseOutcome,
)
from arbiter.http.forwarded import ProxyTrust, script_name_prefix
from arbiter.http.inputs import EMPTY_INPUT, ErrorStream, StreamInput
from arbiter.http.protocol import ProtocolError, Request
from arbiter.http.proxy_protocol import ProxyAllowList
from arbiter.http.response import error_response
from arbiter.http.settings import HTTPSettings, resolve_parser

__all__ = [
    "EMPTY_INPUT",
    "NULL_OBSERVER",
    "ClientDisconnected",
    "ConnectionInfo",
    "FileWrapper",
    "NullObserver",
    "RequestBodyError",
    "RequestObserver",
    "ResponseOutcome",
    "StreamInput",
    "WSGIHandler",
    "new_request_id",
    "request_id",
]


# -- request ids ----------------------------------------------------------------
_REQUEST_ID_MAX = 200
_rid_prefix = os.urandom(8).hex()
_rid_counter = itertools.count(1)


def _reseed_request_ids() -> None:
    global _rid_prefix, _rid_counter
    _rid_prefix = os.urandom(8).hex()
    _rid_counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed_request_ids)


def new_request_id() -> str:
    """A fresh request id: this process's random prefix + a counter, 32 hex digits."""
    return _rid_prefix + format(next(_rid_counter), "016x")


def request_id(sent: str | None) -> str:
    """The request's id: the client's ``X-Request-ID`` when it is fit (printable ASCII,
    at most 200 characters), else a fresh one."""
    if not sent or len(sent) > _REQUEST_ID_MAX or not (sent.isascii() and sent.isprintable()):
        return _rid_prefix + format(next(_rid_counter), "016x")
    return sent


# -- observer -------------------------------------------------------------------
class RequestObserver(Protocol):
    """What the worker (its scoreboard row) hears from the HTTP core."""

    def heartbeat(self) -> None: ...

    def request_started(self, method: str, path: str, key: object = None) -> None: ...

    def request_finished(self, status: int, key: object = None,
                         duration: float | None = None) -> None:
        """The request ended with ``status``; ``duration``: the seconds to count it
        for, when not the time since it started (an upgrade: its handshake)."""

    def request_queued(self, seconds: float, shed: bool) -> None:
        """How long the request about to start waited; ``shed``: it is refused (503)."""


class NullObserver:
    """A RequestObserver that ignores everything."""

    def heartbeat(self) -> None:
        return None

    def request_started(self, method: str, path: str, key: object = None) -> None:
        return None

    def request_finished(self, status: int, key: object = None,
                         duration: float | None = None) -> None:
        return None

    def request_queued(self, seconds: float, shed: bool) -> None:
        return None


NULL_OBSERVER = NullObserver()


# -- per connection ---------------------------------------------------------------------
UNKNOWN_CLIENT: Any = object()  # ConnectionInfo.client before the first ASGI scope


class ConnectionInfo:
    """Per-connection environ template and proxy trust."""

    __slots__ = ("environ", "trusted", "unix", "client")

    def __init__(self, environ: dict, trusted: bool, unix: bool) -> None:
        self.environ = environ
        self.trusted = trusted
        self.unix = unix
        self.client: Any = UNKNOWN_CLIENT  # the ASGI scope's client, once it is known


# -- the handler ---------------------------------------------------------------------
_AMBIGUOUS: Any = object()  # two SCRIPT_NAME headers: neither is used
_ABSOLUTE_AUTHORITY = re.compile(rb"[^:]*://([^/?]*)")  # of a target the core validated


class WSGIHandler:
    """Runs a WSGI app for any driver. Built once per worker."""

    def __init__(self, app: Callable, settings: HTTPSettings, error_log: logging.Logger,
                 access_log: Any = None) -> None:
        self.app = app
        self.settings = settings
        self.error_log = error_log
        self.access_log = access_log
        self.parser_name = resolve_parser(settings.parser)
        self.server_software = settings.server_software
        self.script_name = os.environ.get("SCRIPT_NAME", "").rstrip("/")
        self.base_environ: dict[str, Any] = {
            "SCRIPT_NAME": self.script_name,
            "SERVER_SOFTWARE": settings.server_software,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": settings.url_scheme,
            "wsgi.errors": ErrorStream(error_log),
            "wsgi.multithread": settings.multithread,
            "wsgi.multiprocess": settings.multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
        }
        self._header_keys: dict[bytes, str] = {}
        self.proxy = ProxyTrust(settings.forwarded_allow_ips, settings.forwarded_headers,
                                error_log)
        self._apply_proxy = self.proxy.apply
        # proxy_protocol: peers in proxy_allow_ips send a PROXY header first.
        self.proxy_protocol = settings.proxy_protocol
        self._proxy_peers = (ProxyAllowList(settings.proxy_allow_ips)
                             if settings.proxy_protocol else None)

    # -- per connection ----------------------------------------------------------
    def expects_proxy_header(self, peer: Any) -> bool:
        """Must this accept() peer send a PROXY protocol header first? (proxy_protocol
        is on and the peer is in proxy_allow_ips; anyone else speaks plain HTTP, and a
        PROXY line from them is a bad request.)"""
        return self._proxy_peers is not None and self._proxy_peers.allows(peer)

    def is_trusted(self, ip: str) -> bool:
        """Is a peer IP allowed to set the proxy headers (``forwarded_allow_ips``)?"""
        return self.proxy.peer_trusted(ip)

    def connection_info(self, peer: Any, sockname: Any) -> ConnectionInfo:
        """The per-connection environ template (addresses) and proxy trust."""
        environ = self.base_environ.copy()
        if isinstance(peer, tuple):
            environ["REMOTE_ADDR"] = str(peer[0])
            environ["REMOTE_PORT"] = str(peer[1])
            trusted = self.is_trusted(str(peer[0]))
            unix = False
        else:
            environ["REMOTE_ADDR"] = peer.decode("latin-1") if isinstance(peer, bytes) else (
                peer or "")
            environ["REMOTE_PORT"] = ""
            trusted = True  # a unix-socket peer is a local process (the proxy)
            unix = True
        if isinstance(sockname, tuple):
            environ["SERVER_NAME"] = str(sockname[0])
            environ["SERVER_PORT"] = str(sockname[1])
        else:
            unix = True
            environ["SERVER_NAME"] = "localhost"
            environ["SERVER_PORT"] = ""
        return ConnectionInfo(environ, trusted, unix)

    # -- per request --------------------------------------------------------------
    def _header_key(self, name: bytes) -> str:
        upper = name.decode("latin-1").upper()
        if "_" in upper:
            key = ""  # dropped: could spoof a dash-named header (as gunicorn, nginx)
        elif upper == "CONTENT-TYPE":
            key = "CONTENT_TYPE"
        elif upper == "CONTENT-LENGTH":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + upper.replace("-", "_")
        if len(self._header_keys) > 2048:
            self._header_keys.clear()
        self._header_keys[name] = key
        return key

    def build_environ(self, request: Request, info: ConnectionInfo, wsgi_input: Any) -> dict:
        """The PEP 3333 environ for ``request`` on the connection ``info``.

        An absolute-form target (``GET http://example.com:8080/p?q HTTP/1.1``)
        names the host: ``HTTP_HOST`` is its authority and the ``Host`` header is
        ignored (RFC 9112 §3.2.2), so ``SERVER_NAME`` / ``SERVER_PORT`` follow it
        where they come from the host (unix sockets). The core has already split
        the target into ``PATH_INFO`` / ``QUERY_STRING`` and checked the authority.
        """
        environ = info.environ.copy()
        environ["REQUEST_METHOD"] = request.method
        raw = request.target.decode("latin-1")
        environ["RAW_URI"] = raw
        environ["REQUEST_URI"] = raw
        full_path, environ["PATH_INFO"] = self.split_path(request)
        environ["QUERY_STRING"] = request.query.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/1.1" if request.http_version == "1.1" else "HTTP/1.0"
        environ["wsgi.input"] = wsgi_input
        keys = self._header_keys
        proxy_script_name = None
        for name, value in request.headers:
            key = keys.get(name)
            if key is None:
                key = self._header_key(name)
            if not key:  # a dropped (underscore) name; only a trusted proxy's SCRIPT_NAME counts
                if info.trusted and name.upper() == b"SCRIPT_NAME":
                    proxy_script_name = value if proxy_script_name is None else _AMBIGUOUS
                continue
            if key in environ:
                sep = "; " if key == "HTTP_COOKIE" else ", "
                environ[key] = environ[key] + sep + value.decode("latin-1")
            else:
                environ[key] = value.decode("latin-1")
        if request.target[0] != 0x2F and request.target != b"*":  # absolute form
            environ["HTTP_HOST"] = _ABSOLUTE_AUTHORITY.match(request.target).group(1).decode(
                "latin-1")
        if request.content_length is None:
            environ["HTTP_TRANSFER_ENCODING"] = "chunked"  # the one accepted value
        environ["HTTP_X_REQUEST_ID"] = request_id(environ.get("HTTP_X_REQUEST_ID"))
        environ["arbiter.queue_time"] = request.queue_time  # seconds it waited (or None)
        if info.trusted:
            self._apply_proxy(environ)
            if proxy_script_name is not None:
                self._mount_prefix(environ, proxy_script_name, full_path)
        if info.unix:
            self._unix_server_name(environ)
        return environ

    def split_path(self, request: Request) -> tuple[str, str]:
        """The request's path percent-decoded (bytes as latin-1), and what of it is past
        the ``SCRIPT_NAME`` mount prefix (``PATH_INFO``)."""
        path = request.path
        if b"%" in path:
            path = unquote_to_bytes(path)
        full_path = path_info = path.decode("latin-1")
        script_name = self.script_name
        if script_name and (path_info == script_name or path_info.startswith(script_name + "/")):
            path_info = path_info[len(script_name):]
        return full_path, path_info

    def _mount_prefix(self, environ: dict, value: Any, full_path: str) -> None:
        """A trusted proxy's ``SCRIPT_NAME`` header: the app is mounted under that prefix."""
        if value is _AMBIGUOUS:
            self.error_log.debug("SCRIPT_NAME headers ignored: more than one")
            return
        prefix = script_name_prefix(value.decode("latin-1"))
        if prefix is None:
            self.error_log.debug("SCRIPT_NAME header ignored (must start with /): %r", value)
            return
        environ["SCRIPT_NAME"] = prefix
        if prefix and (full_path == prefix or full_path.startswith(prefix + "/")):
            environ["PATH_INFO"] = full_path[len(prefix):]
        else:
            environ["PATH_INFO"] = full_path

    @staticmethod
    def _unix_server_name(environ: dict) -> None:
        host = environ.get("HTTP_HOST")
        if not host:
            return
        if host.startswith("["):
            name, _, rest = host[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            name, _, port = host.partition(":")
        environ["SERVER_NAME"] = name or "localhost"
        environ["SERVER_PORT"] = port

    # -- responses ----------------------------------------------------------------
    def run_app(self, environ: dict, request: Request, send: Callable[[bytes], Any], *,
                sendfile: Callable[[Any, int, int], int] | None = None,
                may_keep_alive: Callable[[], bool] | None = None,
                started: float | None = None) -> ResponseOutcome:
        """Call the app and write its whole response through ``send`` (a blocking driver).

        ``send(data)`` writes bytes (raise :class:`ClientDisconnected` if the
        peer is gone); ``sendfile(file, offset, count) -> sent`` is optional
        (plain sockets). ``may_keep_alive()`` is asked when the head is built.
        Never raises for app errors or a vanished client. A driver that must
        not block pulls an :class:`~arbiter.http.app_response.AppResponse` itself.
        """
        response = AppResponse(self, environ, request, may_keep_alive, started,
                               files=sendfile is not None)
        response.start()
        try:
            while (piece := response.pull()) is not None:
                if type(piece) is FileSegment:
                    response.file_sent(sendfile(piece.file, piece.offset, piece.count) or 0)
                else:
                    send(piece)
        except ClientDisconnected as exc:
            response.client_gone(exc)
        return response.finish()

    def error_response(self, error: ProtocolError | int, info: ConnectionInfo | None = None,
                       environ: dict | None = None, started: float | None = None) -> bytes:
        """Bytes of a core-generated error response (``Connection: close``), access-logged."""
        code = error.status if isinstance(error, ProtocolError) else error
        request = error.request if isinstance(error, ProtocolError) else None
        head_only = request is not None and request.method == "HEAD"
        status, headers, data = error_response(code, self.server_software, head_only=head_only)
        if self.access_log is not None:
            if environ is None:
                environ = self._minimal_environ(request, info)
            body = 0 if head_only else len(status) + 1
            self.log_access(environ, status, headers, body,
                             started if started is not None else time.perf_counter())
        return data

    def _minimal_environ(self, request: Request | None, info: ConnectionInfo | None) -> dict:
        environ = (info.environ if info is not None else self.base_environ).copy()
        if request is not None:
            try:
                return self.build_environ(request, info or self.connection_info("", ""),
                                          EMPTY_INPUT)
            except Exception:
                pass
        environ.update({"REQUEST_METHOD": "-", "RAW_URI": "-", "REQUEST_URI": "-",
                        "PATH_INFO": "", "QUERY_STRING": "", "SERVER_PROTOCOL": "-",
                        "wsgi.input": EMPTY_INPUT})
        return environ

    def log_access(self, environ: dict, status: str | None, headers: list, body_bytes: int,
                    started: float) -> None:
        try:
            self.access_log.log(environ, status, headers, body_bytes,
                                int((time.perf_counter() - started) * 1_000_000))
        except Exception:
            self.error_log.exception("access log failed")
