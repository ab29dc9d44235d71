"""The built-in demo apps: say which worker answered.

``app`` (WSGI) is what a bare ``arbiter`` serves; ``asgi_app`` is the same page
as an ASGI app, for the asgi worker type (``config/asgi.yaml``).
"""

from __future__ import annotations

import html
import os

from arbiter import workers


def page(method: str, path: str, protocol: str) -> bytes:
    """A small HTML page naming the worker pid and type, the request and the server."""
    worker_type = workers.current_worker_type or "unknown"
    path = html.escape(path)
    return (
        "<!doctype html>\n<html><head><title>arbiter demo</title></head><body>\n"
        "<h1>Hello from arbiter</h1>\n"
        f"<p>Answered by worker pid <b>{os.getpid()}</b> "
        f"(worker type <b>{html.escape(worker_type)}</b>).</p>\n"
        f"<p>You asked for <code>{html.escape(method)} {path}</code> "
        f"over {html.escape(protocol)}.</p>\n"
        "<p>Serve your own app: <code>arbiter yourmodule:app</code> or "
        "<code>arbiter -c server.yaml</code>.</p>\n"
        "</body></html>\n"
    ).encode()


def app(environ, start_response):
    """The demo page, WSGI."""
    body = page(environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/"),
                environ["SERVER_PROTOCOL"])
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope, receive, send):
    """The demo page, ASGI (lifespan: it has nothing to start)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    body = page(scope["method"], scope["path"], f"HTTP/{scope['http_version']}")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})
