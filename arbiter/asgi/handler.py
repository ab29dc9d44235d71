"""The asgi worker's handler: the HTTP ``scope`` of a request, and the app as ASGI 3.

Owns :class:`ASGIHandler`. It is a :class:`~arbiter.http.wsgi.WSGIHandler`
for everything the core and the response framing ask of a handler (settings,
``connection_info``, proxy trust, ``error_response``, the access log), so an
ASGI request is judged, answered and logged exactly as a WSGI one; what it
adds is :meth:`ASGIHandler.build_scope`.

The scope is derived from the environ the WSGI layer builds for the same
request (the access log needs that environ anyway), so forwarded headers,
``forwarded_allow_ips``, ``SCRIPT_NAME`` (the process environment variable or
a trusted proxy's header) and the request id mean the same for both kinds of
app:

* ``scheme`` is ``wsgi.url_scheme``; ``client`` is ``REMOTE_ADDR`` with the
  peer's port (port 0 when a trusted proxy named the client), None for a
  unix-socket peer that has no address; ``server`` the listener's address
  (``[path, None]`` for a unix socket);
* ``root_path`` is ``SCRIPT_NAME``; ``path`` is the mount prefix plus the
  rest of the path (``SCRIPT_NAME + PATH_INFO``, percent-decoded, UTF-8),
  as the ASGI spec and Starlette's routing expect; ``raw_path`` the path as
  sent, without the query;
* ``headers`` are the request's, names lower-cased; ``x-request-id`` is the
  environ's (the client's when fit, else a new one), once; for an
  absolute-form target (``GET http://host/path``) ``host`` is its authority
  (RFC 9112 §3.2.2), as ``HTTP_HOST`` is;
* ``state`` is a shallow copy of the lifespan state.

The ``websocket`` scope (:meth:`ASGIHandler.build_websocket_scope`) is the
same scope without ``method``, with ``scheme`` ``ws`` / ``wss``, the
``subprotocols`` the client offered (``Sec-WebSocket-Protocol``, in its
order) and the ``websocket.http.response`` (denial response) extension.
"""

from __future__ import annotations

import logging
from typing import Any

from arbiter.http.inputs import EMPTY_INPUT
from arbiter.http.protocol import Request
from arbiter.http.settings import HTTPSettings
from arbiter.http.wsgi import (
    UNKNOWN_CLIENT,
    ConnectionInfo,
    WSGIHandler,
    new_request_id,
    request_id,
)

__all__ = ["ASGIHandler", "as_asgi3"]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
# What a trusted proxy may say about the client (and its SCRIPT_NAME, an underscore name).
_PROXY_HEADERS = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"))


def as_asgi3(app: Any, asgi2: bool) -> Any:
    """An ASGI 2 ("double callable") app as an ASGI 3 one; an ASGI 3 app as it is."""
    if not asgi2:
        return app

    async def asgi2_app(scope: dict, receive: Any, send: Any) -> None:
        instance = app(scope)
        await instance(receive, send)

    return asgi2_app


def _text(value: str) -> str:
    """An environ string (bytes as latin-1) as the UTF-8 text it encodes, if it does."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


_SERVERS: dict[Any, tuple] = {}  # a listener's address -> its scope "server" (a few)


def _server(sockname: Any) -> Any:
    """The scope's ``server``: the listener's (host, port), or [path, None] for a unix
    socket; remembered (a worker has a few listeners)."""
    if isinstance(sockname, tuple):
        server: tuple = (str(sockname[0]), int(sockname[1]))
    else:
        server = (sockname.decode("latin-1") if isinstance(sockname, bytes)
                  else str(sockname or ""), None)
    if len(_SERVERS) < 64:
        _SERVERS[sockname] = server
    return server


class ASGIHandler(WSGIHandler):
    """The asgi worker's handler (see the module docstring). Built once per worker."""

    def __init__(self, app: Any, settings: HTTPSettings, error_log: logging.Logger,
                 access_log: Any = None, asgi2: bool = False) -> None:
        super().__init__(app, settings, error_log, access_log)
        self.asgi_app = as_asgi3(app, asgi2)
        self.state: dict[str, Any] = {}  # the lifespan state, copied into every scope
        self.root_path = _text(self.script_name)

    def build_scope(self, request: Request, info: ConnectionInfo,
                    sockname: Any) -> tuple[dict, dict | None]:
        """The HTTP scope for ``request`` on the connection ``info`` (its listener's
        address ``sockname``), and the environ it was derived from for the access log
        (None when nothing needs one)."""
        if self.access_log is not None or request.target[0] != 0x2F:
            return self.scope_from_environ(request, info, sockname)
        # Unless a trusted proxy's headers say otherwise, nothing but the request and its
        # connection decide the scope: no environ.
        headers = [(name.lower(), value) for name, value in request.headers]
        sent_id = None
        trusted = info.trusted
        for name, value in headers:
            if len(name) == 12 and name == b"x-request-id":
                sent_id = value if sent_id is None else sent_id + b", " + value
            elif trusted and (name in _PROXY_HEADERS or b"_" in name):
                return self.scope_from_environ(request, info, sockname)
        if sent_id is not None:
            headers = [pair for pair in headers if pair[0] != b"x-request-id"]
            rid = request_id(sent_id.decode("latin-1"))
        else:
            rid = new_request_id()
        headers.append((b"x-request-id", rid.encode("latin-1")))
        if self.script_name or b"%" in request.path:
            path_info = self.split_path(request)[1]
        else:  # split_path's answer without a mount prefix: the path as it came
            path_info = request.path.decode("latin-1")
        client = info.client
        if client is UNKNOWN_CLIENT:  # the connection's peer: the same for its requests
            peer = info.environ
            remote = peer["REMOTE_ADDR"]
            if not info.unix:
                port = peer["REMOTE_PORT"]
                client = (remote, int(port) if port.isdigit() else 0)
            else:
                client = (remote, 0) if remote else None
            info.client = client
        return self._http_scope(request, info.environ["wsgi.url_scheme"], self.root_path,
                                path_info, headers, client, sockname), None

    def scope_from_environ(self, request: Request, info: ConnectionInfo,
                           sockname: Any) -> tuple[dict, dict]:
        """The scope where forwarded headers, an absolute-form target or the access log
        ask for the environ: derived from it, so both kinds of app see the same."""
        environ = self.build_environ(request, info, EMPTY_INPUT)
        root_path = _text(environ["SCRIPT_NAME"])
        target = request.target
        absolute = target[0] != 0x2F and target != b"*"  # its authority is the host
        headers = []
        for name, value in request.headers:
            name = name.lower()
            if name != b"x-request-id" and not (absolute and name == b"host"):
                headers.append((name, value))
        if absolute:
            headers.append((b"host", environ["HTTP_HOST"].encode("latin-1")))
        headers.append((b"x-request-id", environ["HTTP_X_REQUEST_ID"].encode("latin-1")))
        peer = info.environ
        remote = environ["REMOTE_ADDR"]
        if not info.unix or remote != peer["REMOTE_ADDR"]:
            port = peer["REMOTE_PORT"] if remote == peer["REMOTE_ADDR"] else ""
            client: Any = (remote, int(port) if port.isdigit() else 0)
        else:
            client = (remote, 0) if remote else None
        return self._http_scope(request, environ["wsgi.url_scheme"], root_path,
                                environ["PATH_INFO"], headers, client, sockname), environ

    def _http_scope(self, request: Request, scheme: str, root_path: str, path_info: str,
                    headers: list, client: Any, sockname: Any) -> dict:
        scope = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": request.http_version,
            "method": request.method,
            "scheme": scheme,
            "path": root_path + (path_info if path_info.isascii() else _text(path_info)),
            "raw_path": request.path,
            "query_string": request.query,
            "root_path": root_path,
            "headers": headers,
            "client": client,
            "server": _SERVERS.get(sockname) or _server(sockname),
            "state": self.state.copy(),
            "extensions": {"http.response.pathsend": {}},
        }
        if request.queue_time is not None:  # how long it waited before this task started
            scope["extensions"]["arbiter.queue_time"] = {"seconds": request.queue_time}
        return scope

    def build_websocket_scope(self, request: Request, info: ConnectionInfo,
                              sockname: Any) -> tuple[dict, dict]:
        """The ``websocket`` scope for an upgrade ``request``, and its environ."""
        scope, environ = self.build_scope(request, info, sockname)
        del scope["method"]
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        offered = []
        for name, value in scope["headers"]:
            if name == b"sec-websocket-protocol":
                offered.extend(p.strip() for p in value.decode("latin-1").split(",")
                               if p.strip())
        scope["subprotocols"] = offered
        extensions = scope["extensions"]
        del extensions["http.response.pathsend"]  # an HTTP response's, not a WebSocket's
        extensions["websocket.http.response"] = {}
        return scope, environ
