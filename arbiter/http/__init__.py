"""arbiter's HTTP/1.1 core and WSGI layer, shared by every worker type.

This package owns everything between bytes and a WSGI app:

* :mod:`arbiter.http.settings` -- :class:`HTTPSettings`, :func:`resolve_parser`;
* :mod:`arbiter.http.parsers` -- the httptools / h11 head tokenisers;
* :mod:`arbiter.http.protocol` -- sans-IO :class:`HTTPConnection` (bytes ->
  ``Request`` / ``Data`` / ``EndOfMessage`` / ``ProtocolError`` events), with
  all limits and strictness checks, identical for both parsers;
* :mod:`arbiter.http.response` -- response serialisation (heads, chunks,
  error pages, Date cache);
* :mod:`arbiter.http.app_response` -- :class:`AppResponse`: one call of the
  app, ``start_response``, the head and body framing, ``file_wrapper``, the
  access line; its response pulled piece by piece (a reactor pulls only as
  fast as the socket drains);
* :mod:`arbiter.http.wsgi` -- :class:`WSGIHandler` (the environ, proxy
  trust, ``run_app`` for blocking drivers, core error responses), inputs and
  observer hooks;
* :mod:`arbiter.http.lifecycle` -- :class:`Lifecycle`: one connection's phases,
  deadlines, keep-alive, drain, linger and what a stop means (sans-IO; the
  drivers in :mod:`arbiter.io` carry it out);
* :mod:`arbiter.http.bodies` -- :class:`BodySpool`, a whole body bounded in memory.

Nothing in this package opens or touches a socket. ASGI apps are served
over the same core by :mod:`arbiter.asgi` (the scope, ``receive``/``send``
and the lifespan on an asyncio loop).

Drivers without a blocking socket (evented, pooled) use HTTPConnection +
``handler.build_environ(request, handler.connection_info(peer, sockname),
io.BytesIO(body))`` + ``handler.run_app(environ, request, send)`` directly.
"""

from arbiter.http.app_response import AppResponse, FileSegment
from arbiter.http.protocol import (
    CONNECTION_CLOSED,
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    HTTPConnection,
    ProtocolError,
    Request,
)
from arbiter.http.response import CONTINUE_RESPONSE, error_response, http_date
from arbiter.http.settings import HTTPSettings, resolve_parser
from arbiter.http.wsgi import (
    EMPTY_INPUT,
    NULL_OBSERVER,
    ClientDisconnected,
    ConnectionInfo,
    FileWrapper,
    NullObserver,
    RequestBodyError,
    RequestObserver,
    ResponseOutcome,
    StreamInput,
    WSGIHandler,
)

__all__ = [
    "AppResponse",
    "CONNECTION_CLOSED",
    "CONTINUE_RESPONSE",
    "EMPTY_INPUT",
    "NEED_DATA",
    "NULL_OBSERVER",
    "PAUSED",
    "ClientDisconnected",
    "ConnectionInfo",
    "Data",
    "EndOfMessage",
    "FileSegment",
    "FileWrapper",
    "HTTPConnection",
    "HTTPSettings",
    "NullObserver",
    "ProtocolError",
    "Request",
    "RequestBodyError",
    "RequestObserver",
    "ResponseOutcome",
    "StreamInput",
    "WSGIHandler",
    "error_response",
    "http_date",
    "resolve_parser",
]
