"""Minimal WSGI hello-world: the app scripts/evented_capacity.py serves.

Same app as the peer baseline (shared bench/hello.py): returns b"Hello, World!"
(13 bytes) with Content-Type: text/plain and an explicit Content-Length, so
every server can keep the connection alive without chunking.  scripts/bench.py
serves scripts/bench_app.py, whose ``/`` answers the same bytes.
"""

from collections.abc import Callable, Iterable

BODY = b"Hello, World!"
HEADERS = [
    ("Content-Type", "text/plain"),
    ("Content-Length", str(len(BODY))),
]


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return [BODY]


application = app  # uwsgi looks for `application` by default
