"""The built-in demo app served by a bare ``arbiter``: says which worker answered."""

from __future__ import annotations

import html
import os

from arbiter import workers


def app(environ, start_response):
    """A small HTML page naming the worker pid and type, the request and the server."""
    worker_type = workers.current_worker_type or "unknown"
    path = html.escape(environ.get("PATH_INFO", "/"))
    body = (
        "<!doctype html>\n<html><head><title>arbiter demo</title></head><body>\n"
        "<h1>Hello from arbiter</h1>\n"
        f"<p>Answered by worker pid <b>{os.getpid()}</b> "
        f"(worker type <b>{html.escape(worker_type)}</b>).</p>\n"
        f"<p>You asked for <code>{html.escape(environ['REQUEST_METHOD'])} {path}</code> "
        f"over {html.escape(environ['SERVER_PROTOCOL'])}.</p>\n"
        "<p>Serve your own app: <code>arbiter yourmodule:app</code> or "
        "<code>arbiter -c server.yaml</code>.</p>\n"
        "</body></html>\n"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
