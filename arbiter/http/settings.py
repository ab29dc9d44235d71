"""HTTP core settings: the frozen knobs every worker's HTTP layer is built from.

Owns :class:`HTTPSettings` (limits, parser choice, timeouts, proxy trust, the
PROXY protocol, WSGI flags) and :func:`resolve_parser`, which turns ``"auto"``
into a concrete parser name. Workers build one ``HTTPSettings`` per process
from the config.
"""

from __future__ import annotations

from dataclasses import dataclass

PARSER_NAMES = ("auto", "httptools", "h11")


@dataclass(frozen=True)
class HTTPSettings:
    """Everything the HTTP core needs to know about limits and policy."""

    parser: str = "auto"  # "auto" | "httptools" | "h11"
    limit_request_line: int = 8190
    limit_header_fields: int = 100
    limit_header_field_size: int = 8190
    limit_body: int | None = None
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")  # "*" = trust all; CIDR ok
    forwarded_headers: str = "x-forwarded"  # "x-forwarded" | "forwarded": the one family read
    proxy_protocol: str | None = None  # None = off | "v1" | "v2" | "auto" (proxy_protocol.py)
    proxy_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")  # may send a PROXY header; "*" ok
    keepalive: float = 5.0  # idle keep-alive wait; 0 = close after each response
    read_timeout: float = 30.0  # max wait for more bytes of a started request body
    header_timeout: float = 10.0  # a request head must be complete within this -> else 408
    min_transfer_rate: float = 1024.0  # bytes/s a body or response must average while waiting
    server_software: str = "arbiter"
    multithread: bool = False
    multiprocess: bool = True
    url_scheme: str = "http"
    max_queue_time: float = 0.0  # seconds waited before the app starts -> 503 (0 = off)


def resolve_parser(name: str) -> str:
    """``"auto"`` -> ``"httptools"`` when it imports, else ``"h11"``.

    ``"httptools"`` is returned only if it imports (ImportError otherwise);
    an unknown name raises ValueError.
    """
    if name not in PARSER_NAMES:
        raise ValueError(f"unknown HTTP parser {name!r} (expected one of: auto, httptools, h11)")
    if name == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:
            return "h11"
        return "httptools"
    if name == "httptools":
        import httptools  # noqa: F401  (raise ImportError early, at worker boot)
    else:
        import h11  # noqa: F401
    return name
