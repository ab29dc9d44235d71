"""The apps scripts/bench.py serves: one WSGI app for every load, and an ASGI hello.

This module owns what the servers answer, so that arbiter, gunicorn, granian,
meinheld and bjoern all run the same code (``bench_app:app``):

* ``/`` -- ``Hello, World!`` (13 bytes, Content-Length), the peer baseline's
  hello world (shared bench/hello.py, scripts/hello.py);
* ``/mem1m`` -- a 1 MiB body from memory, one bytes object (``MEM1M``);
* ``/file1m`` -- the file named by ``$BENCH_FILE1M`` (bench.py writes ``MEM1M``
  to a temp file at start) through ``environ['wsgi.file_wrapper']``, or read
  in 64 KiB blocks if the server has none; 500 when the variable is unset;
* ``/post100k`` -- reads the request body whole with ``wsgi.input.read()``
  and answers its length in decimal (``100000`` for the load's body).

``asgi_app`` is the hello world for uvicorn: the same 13 bytes with a
Content-Length on every path but one -- ``/fastapi/items/{id}``, a small FastAPI
JSON endpoint (a path parameter, a query parameter with a default, a pydantic
response model: ``FASTAPI_JSON``), when FastAPI is installed.  The body bytes are deterministic so bench.py can check
each server's answer once before measuring it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

BODY = b"Hello, World!"
MEM1M = bytes(range(256)) * 4096  # 1 MiB, not all one byte so a mangled body shows
POST_SIZE = 100_000
BLOCK = 65536

_HELLO = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
_MEM = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(MEM1M)))]


def _file1m(environ: dict, start_response: Callable) -> Iterable[bytes]:
    path = os.environ.get("BENCH_FILE1M")
    if not path:
        msg = b"BENCH_FILE1M is not set\n"
        start_response("500 Internal Server Error",
                       [("Content-Type", "text/plain"), ("Content-Length", str(len(msg)))])
        return [msg]
    f = open(path, "rb")  # closed by the server, through the iterable
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, BLOCK)
    return _blocks(f)


def _blocks(f) -> Iterable[bytes]:
    with f:
        while block := f.read(BLOCK):
            yield block


def _post(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    answer = str(len(body)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(answer)))])
    return [answer]


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        start_response("200 OK", _HELLO)
        return [BODY]
    if path == "/mem1m":
        start_response("200 OK", _MEM)
        return [MEM1M]
    if path == "/file1m":
        return _file1m(environ, start_response)
    if path == "/post100k":
        return _post(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return []


application = app

_ASGI_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))],
}
_ASGI_BODY = {"type": "http.response.body", "body": BODY}


FASTAPI_JSON = b'{"id":42,"name":"item 42","tags":["a","b"],"price":4.2}'


def _fastapi_app():
    """The FastAPI JSON endpoint (None without FastAPI)."""
    try:
        from fastapi import FastAPI
        from pydantic import BaseModel
    except ImportError:
        return None

    class Item(BaseModel):
        id: int
        name: str
        tags: list[str]
        price: float

    api = FastAPI()

    @api.get("/fastapi/items/{item_id}", response_model=Item)
    async def read_item(item_id: int, tag: str = "a") -> Item:
        return Item(id=item_id, name=f"item {item_id}", tags=[tag, "b"], price=item_id / 10)

    return api


_FASTAPI = _fastapi_app()


async def asgi_app(scope: dict, receive: Callable, send: Callable) -> None:
    if scope["type"] != "http":  # uvicorn runs with --lifespan off; nothing else comes
        return
    if _FASTAPI is not None and scope["path"].startswith("/fastapi/"):
        await _FASTAPI(scope, receive, send)
        return
    await send(_ASGI_START)
    await send(_ASGI_BODY)
