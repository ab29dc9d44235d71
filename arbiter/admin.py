"""The admin listener (``admin_bind``): ``/livez``, ``/readyz``, ``/status``, ``/metrics``.

Served by the master itself, from its own selector loop: no thread, no
worker involved, so ``/livez`` answering proves the master loop turns. Each
connection carries one small HTTP/1.x request (GET or HEAD), gets one answer
with ``Connection: close``, and is closed. Everything is non-blocking; a
client can cost the master at most ``MAX_HEAD`` bytes of buffer and
``DEADLINE`` seconds, and at most ``MAX_CONNECTIONS`` are open at once (the
oldest is dropped to make room), so slow or idle clients cannot pile up. An
error while serving one client answers it 400 and closes it; the master's
loop goes on.

Routes:

``/``        the status page, HTML (:mod:`arbiter.status_page`), with a
             Content-Security-Policy that allows no script and nothing external.
``/livez``   200 ``ok`` while the master loop runs.
``/readyz``  200 when ``master.serving_ready()``, else 503 with the reason:
             starting, draining (TERM with ``drain_delay``), stopping, or no
             ready worker (crash-loop backoff).
``/status``  ``master.snapshot()`` as JSON (what ``arbiter ctl status --json`` shows).
``/metrics`` the Prometheus text format, from ``arbiter.metrics``.
"""

from __future__ import annotations

import json
import math
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from arbiter import status_page
from arbiter.metrics import make_registry
from arbiter.sockets import parse_address

MAX_HEAD = 8 * 1024  # bytes of request line + headers
MAX_CONNECTIONS = 16  # open admin connections; the oldest is dropped beyond this
DEADLINE = 5.0  # seconds a connection may live, request and answer included
LINGER = 1.0  # seconds to wait for the client's FIN after answering (avoids an RST)
BACKLOG = 64

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}
ROUTES = ("/", "/livez", "/readyz", "/status", "/metrics")


def bind_admin_socket(bind: str) -> socket.socket:
    """A non-blocking listening TCP socket on "host:port" or "[v6]:port"; OSError on failure."""
    try:
        address = parse_address(bind)
    except ValueError as exc:
        raise OSError(str(exc)) from None
    if address.family not in (socket.AF_INET, socket.AF_INET6):
        raise OSError(f"{bind!r}: admin_bind takes host:port or [v6]:port")
    if address.family == socket.AF_INET6:
        family, sockaddr = socket.AF_INET6, (address.host, address.port)
    else:
        infos = socket.getaddrinfo(address.host, address.port, socket.AF_UNSPEC,
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _strict_json(value: Any) -> Any:
    """JSON has no Infinity/NaN: write them as the strings Prometheus uses."""
    if isinstance(value, float) and not math.isfinite(value):
        return "+Inf" if value > 0 else "-Inf" if value < 0 else "NaN"
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


class _Conn:
    __slots__ = ("sock", "fd", "inbox", "outbox", "deadline", "answered", "closing")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.inbox = b""
        self.outbox = b""
        self.deadline = deadline
        self.answered = False
        self.closing = False  # answer sent, write side shut: waiting for the client's FIN


class AdminServer:
    """The master's HTTP admin endpoints, driven by the master's selector."""

    def __init__(self, bind: str, master: Any, log: Any,
                 inherited_fd: int | None = None) -> None:
        """Bind ``bind``, or adopt ``inherited_fd`` (the old master's admin socket, USR2)."""
        self.bind = bind
        self.master = master
        self.log = log
        self.selector: selectors.BaseSelector | None = None
        if inherited_fd is not None:
            self.sock = socket.socket(fileno=inherited_fd)
            self.sock.setblocking(False)
        else:
            self.sock = bind_admin_socket(bind)
        self.conns: dict[int, _Conn] = {}  # by fd, oldest first
        self.registry = make_registry(master)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (the port is real when admin_bind asked for 0)."""
        host, port = self.sock.getsockname()[:2]
        return host, port

    def register(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self._on_accept)

    # -- connections -----------------------------------------------------------------
    def _on_accept(self, mask: int) -> None:
        now = time.monotonic()
        self.tick(now)
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next event
                self.log.warning("admin listener: accept failed: %s", exc)
                return
            sock.setblocking(False)
            while len(self.conns) >= MAX_CONNECTIONS:
                self._drop(next(iter(self.conns.values())))
            conn = _Conn(sock, now + DEADLINE)
            self.conns[sock.fileno()] = conn
            assert self.selector is not None
            self.selector.register(sock, selectors.EVENT_READ,
                                   lambda m, c=conn: self._on_client(c, m))

    def tick(self, now: float | None = None) -> None:
        """Close connections past their deadline; cheap (at most MAX_CONNECTIONS).

        Called on every admin event; the master may also call it once per turn
        of its loop so an idle slow client is closed even when nothing else comes.
        """
        now = time.monotonic() if now is None else now
        for conn in [c for c in self.conns.values() if now >= c.deadline]:
            if not conn.answered and not conn.inbox:
                self._drop(conn)
            elif not conn.answered:
                self._answer(conn, 408, "request timeout\n", head_only=False)
                self._drop(conn)  # no time left to flush more than one try
            else:
                self._drop(conn)

    def _on_client(self, conn: _Conn, mask: int) -> None:
        try:
            self._serve_client(conn, mask)
        except Exception:  # noqa: BLE001 -- whatever it is, only this client pays
            self.log.exception("admin client failed")
            if not conn.answered:
                try:
                    conn.sock.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                   b"Connection: close\r\n\r\n")
                except OSError:
                    pass
            self._drop(conn)

    def _serve_client(self, conn: _Conn, mask: int) -> None:
        self.tick()
        if conn.sock.fileno() < 0:
            return
        if mask & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(MAX_HEAD + 1)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(conn)
                return
            if data is not None:
                if not data:
                    self._drop(conn)  # EOF: before answering, or the FIN we waited for
                    return
                if not conn.answered:
                    conn.inbox += data
                    self._on_data(conn)
                # after answering: discard whatever else the client sends
        if mask & selectors.EVENT_WRITE and conn.sock.fileno() >= 0:
            self._flush(conn)

    def _on_data(self, conn: _Conn) -> None:
        end = conn.inbox.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbox.find(b"\n\n")
        if end < 0:
            if len(conn.inbox) > MAX_HEAD:
                self._answer(conn, 431, "request head too large\n", head_only=False)
            return
        if end > MAX_HEAD:
            self._answer(conn, 431, "request head too large\n", head_only=False)
            return
        line = conn.inbox.split(b"\n", 1)[0].rstrip(b"\r")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._answer(conn, 400, "bad request\n", head_only=False)
            return
        method = parts[0].decode("latin-1")
        path = parts[1].split(b"?", 1)[0].decode("latin-1")
        self._route(conn, method, path)

    # -- routes -------------------------------------------------------------------------
    def _route(self, conn: _Conn, method: str, path: str) -> None:
        head_only = method == "HEAD"
        if path.startswith(("http://", "https://")):  # absolute form
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        if path not in ROUTES:
            self._answer(conn, 404, f"not found; try {', '.join(ROUTES)}\n", head_only)
            return
        if method not in ("GET", "HEAD"):
            self._answer(conn, 405, "method not allowed (GET, HEAD)\n", head_only=False,
                         extra=[("Allow", "GET, HEAD")])
            return
        try:
            status, body, content_type = self._handlers()[path]()
        except Exception as exc:  # a bug here must not take the master down
            self.log.exception("admin endpoint %s failed", path)
            status, body, content_type = 500, f"internal error: {exc}\n", "text/plain"
        extra = None
        if content_type.startswith("text/html"):
            extra = [("Content-Security-Policy", status_page.CONTENT_SECURITY_POLICY),
                     ("X-Content-Type-Options", "nosniff")]
        self._answer(conn, status, body, head_only, content_type, extra)

    def _handlers(self) -> dict[str, Callable[[], tuple[int, str | bytes, str]]]:
        return {"/": self.page, "/livez": self.livez, "/readyz": self.readyz, "/status": self.status,
                "/metrics": self.metrics}

    def page(self) -> tuple[int, str | bytes, str]:
        return 200, status_page.render(self.master.snapshot()), "text/html; charset=utf-8"

    def livez(self) -> tuple[int, str | bytes, str]:
        return 200, "ok\n", "text/plain; charset=utf-8"

    def readyz(self) -> tuple[int, str | bytes, str]:
        if self.master.serving_ready():
            return 200, "ready\n", "text/plain; charset=utf-8"
        return 503, f"not ready: {self.not_ready_reason()}\n", "text/plain; charset=utf-8"

    def not_ready_reason(self) -> str:
        """Why /readyz answers 503, in the operator's words."""
        master = self.master
        if getattr(master, "stop_mode", None):
            return "stopping"
        if getattr(master, "draining_until", 0):
            left = max(0.0, master.draining_until - time.monotonic())
            return f"draining (TERM received; stopping in {left:.1f} s)"
        if getattr(master, "winched", False):
            return "no workers (stopped by WINCH; HUP starts them)"
        failures = getattr(master, "boot_failures", 0)
        if failures:
            wait = max(0.0, getattr(master, "next_spawn_at", 0.0) - time.monotonic())
            return (f"no ready worker (crash-loop backoff: {failures} boot failure(s) in a row, "
                    f"next attempt in {wait:.1f} s)")
        if not getattr(master, "ever_ready", False):
            return "starting (no worker has loaded the app yet)"
        return "no ready worker of the current generation"

    def status(self) -> tuple[int, str | bytes, str]:
        body = json.dumps(_strict_json(self.master.snapshot()), indent=2) + "\n"
        return 200, body, "application/json"

    def metrics(self) -> tuple[int, str | bytes, str]:
        return 200, generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4

    # -- answering ------------------------------------------------------------------
    def _answer(self, conn: _Conn, status: int, body: str | bytes, head_only: bool,
                content_type: str = "text/plain; charset=utf-8",
                extra: list[tuple[str, str]] | None = None) -> None:
        if conn.answered or conn.sock.fileno() < 0:
            return
        conn.answered = True
        conn.inbox = b""
        data = body.encode() if isinstance(body, str) else body
        headers = [("Content-Type", content_type), ("Content-Length", str(len(data))),
                   ("Cache-Control", "no-store"), ("Connection", "close"), *(extra or [])]
        head = f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        conn.outbox = head.encode("latin-1") + (b"" if head_only else data)
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.outbox:
            try:
                sent = conn.sock.send(conn.outbox)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn)
                return
            conn.outbox = conn.outbox[sent:]
        assert self.selector is not None
        if conn.outbox:
            self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                 lambda m, c=conn: self._on_client(c, m))
            return
        if conn.closing:
            return
        # All sent: shut our side and wait briefly for the client's FIN, so closing
        # with unread bytes pending doesn't reset the connection under the answer.
        conn.closing = True
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.deadline = min(conn.deadline, time.monotonic() + LINGER)
        self.selector.modify(conn.sock, selectors.EVENT_READ,
                             lambda m, c=conn: self._on_client(c, m))

    def _drop(self, conn: _Conn) -> None:
        if self.conns.get(conn.fd) is conn:
            del self.conns[conn.fd]
        if conn.sock.fileno() < 0:
            return
        if self.selector is not None:
            try:
                self.selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.sock.close()

    def close(self) -> None:
        """Close the listener and every client connection."""
        for conn in list(self.conns.values()):
            self._drop(conn)
        if self.selector is not None:
            try:
                self.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
        self.sock.close()
