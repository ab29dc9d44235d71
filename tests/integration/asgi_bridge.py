"""Appended to a test's WSGI app source (harness.asgi_twin) to serve it on the asgi type.

Owns the test-only bridge that lets the shared behaviour tests, written with WSGI
apps, run on the asgi worker: every top-level ``(environ, start_response)``
callable of the module it is appended to becomes an ASGI app that reads the body
through ``receive()``, runs the WSGI code in a thread (as an async app awaits its
I/O, so a ``time.sleep`` in it does not block the loop) and sends the response
whole. Lifespan is acknowledged. Not part of arbiter.
"""

import asyncio as _asyncio
import inspect as _inspect
import io as _io
import sys as _sys


def _as_asgi(wsgi_app):
    async def asgi_app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        environ = {
            "REQUEST_METHOD": scope["method"], "SCRIPT_NAME": scope["root_path"],
            "PATH_INFO": scope["path"][len(scope["root_path"]):],
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": _io.BytesIO(body),
            "wsgi.url_scheme": scope["scheme"], "wsgi.errors": _sys.stderr,
            "REMOTE_ADDR": (scope.get("client") or ("", 0))[0],
            "REMOTE_PORT": str((scope.get("client") or ("", 0))[1]),
        }
        for name, value in scope["headers"]:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            if key == "HTTP_CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value.decode("latin-1")
            elif key != "HTTP_CONTENT_LENGTH":
                environ[key] = value.decode("latin-1")
        answer = {}

        def start_response(status, headers, exc_info=None):
            answer["status"], answer["headers"] = status, headers

        def call():
            chunks = wsgi_app(environ, start_response)
            try:
                return b"".join(chunks)
            finally:
                getattr(chunks, "close", lambda: None)()

        data = await _asyncio.to_thread(call)
        await send({"type": "http.response.start", "status": int(answer["status"][:3]),
                    "headers": [(n.encode("latin-1"), v.encode("latin-1"))
                                for n, v in answer["headers"]]})
        await send({"type": "http.response.body", "body": data})

    return asgi_app


for _name, _value in list(globals().items()):
    if (_inspect.isfunction(_value) and not _name.startswith("_")
            and list(_inspect.signature(_value).parameters)[:2] == ["environ",
                                                                    "start_response"]):
        globals()[_name] = _as_asgi(_value)
