"""The control socket: how ``arbiter ctl`` talks to a running master.

Owns both ends of a tiny protocol over a unix stream socket (mode 0600): the
client sends one JSON object on one line (``{"command": "status"}``), the
master answers one JSON object on one line and closes. The server side is
non-blocking and is driven by the master's own selector loop — no thread in
the master. An answer may be deferred (``ctl reload`` is answered when the
reload transaction commits or rolls back): the handler receives a ``reply``
callable and may call it later.

Nothing a client sends can take the master down: a request that is not one
JSON object (garbage, a line nested 60,000 deep) gets ``{"ok": false,
"error": ...}`` and the connection is closed; a client must send its whole
command within ``REQUEST_DEADLINE`` seconds and read its answer within
``ANSWER_DEADLINE``; at most ``MAX_CLIENTS`` are open at once (the oldest
is dropped to make room). A client waiting on a reload is exempt from the
answer deadline until the master answers.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

MAX_REQUEST = 64 * 1024
MAX_CLIENTS = 32  # open control connections; the oldest is dropped beyond this
REQUEST_DEADLINE = 5.0  # seconds a client has to send its whole command line
ANSWER_DEADLINE = 5.0  # seconds a client has to read the answer once it is written

Reply = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any], Reply], None]


class ControlError(Exception):
    """The client could not talk to the master; str() says why, for the user."""


def default_socket_path(pidfile: str | None) -> str | None:
    """Where the control socket lives when ``control_socket`` is not set: next to the pidfile."""
    if not pidfile:
        return None
    root, _ = os.path.splitext(pidfile)
    return root + ".ctl"


class _Client:
    __slots__ = ("sock", "inbox", "outbox", "answered", "deadline")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.answered = False  # a command was taken (its answer may come later)
        self.deadline = deadline  # drop the client past this (inf while a reload runs)


class ControlServer:
    """The master's end: a listening unix socket served from the master's selector."""

    def __init__(self, path: str, handler: Handler, log: Any, take_over: bool = False) -> None:
        """Bind ``path``. ``take_over``: a new master after USR2 replaces the old
        master's socket file (the old one keeps its open socket, unreachable by path)."""
        self.path = path
        self.handler = handler
        self.log = log
        self.selector: selectors.BaseSelector | None = None
        self.clients: dict[int, _Client] = {}  # by fd, oldest first
        if take_over and os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise OSError(f"control_socket {path}: exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: nobody answers
            else:
                raise OSError(f"control_socket {path}: another master is listening on it")
            finally:
                probe.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self.inode = os.stat(path).st_ino
        self.sock.listen(16)
        self.sock.setblocking(False)

    def register(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self._on_accept)

    def reclaim_path(self) -> None:
        """Bind the path again if it vanished (a USR2 master that took it over exited)."""
        if os.path.exists(self.path):
            return
        selector = self.selector
        if selector is not None:
            try:
                selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
        self.sock.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old_umask)
        self.inode = os.stat(self.path).st_ino
        self.sock.listen(16)
        self.sock.setblocking(False)
        if selector is not None:
            selector.register(self.sock, selectors.EVENT_READ, self._on_accept)

    def _on_accept(self, mask: int) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log.warning("control socket accept failed: %s", exc)
                return
            conn.setblocking(False)
            while len(self.clients) >= MAX_CLIENTS:  # drop a stalled sender before a waiter
                waiting = [c for c in self.clients.values() if not c.answered]
                self._drop(waiting[0] if waiting else next(iter(self.clients.values())))
            client = _Client(conn, time.monotonic() + REQUEST_DEADLINE)
            self.clients[conn.fileno()] = client
            assert self.selector is not None
            self.selector.register(conn, selectors.EVENT_READ,
                                   lambda m, c=client: self._on_client(c, m))

    def tick(self) -> None:
        """Drop clients past their deadline (cheap: at most MAX_CLIENTS); every loop turn."""
        now = time.monotonic()
        for client in [c for c in self.clients.values() if now >= c.deadline]:
            self._drop(client)

    def _on_client(self, client: _Client, mask: int) -> None:
        try:
            self._serve_client(client, mask)
        except Exception as exc:  # noqa: BLE001 -- whatever it is, only this client pays
            self.log.exception("control client failed")
            if not client.outbox and client.sock.fileno() >= 0:
                try:
                    client.sock.send(json.dumps(
                        {"ok": False, "error": f"internal error: {type(exc).__name__}"}
                    ).encode() + b"\n")
                except OSError:
                    pass
            self._drop(client)

    def _serve_client(self, client: _Client, mask: int) -> None:
        if mask & selectors.EVENT_READ and not client.answered:
            try:
                data = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(client)
                return
            if not data:
                self._drop(client)
                return
            client.inbox += data
            if len(client.inbox) > MAX_REQUEST:
                self._answer(client, {"ok": False, "error": "request too large"})
                return
            if b"\n" in client.inbox:
                line = client.inbox.split(b"\n", 1)[0]
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not a JSON object")
                except RecursionError:
                    self._answer(client, {"ok": False, "error": "bad request: nested too deeply"})
                    return
                except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError too
                    self._answer(client, {"ok": False, "error": f"bad request: {exc}"})
                    return
                client.answered = True
                client.deadline = float("inf")  # a reload answers when it is done
                try:
                    self.handler(request, lambda answer: self._answer(client, answer))
                except Exception as exc:  # a bug in a command must not take the master down
                    self.log.exception("control command %r failed", request.get("command"))
                    self._answer(client, {"ok": False, "error": f"internal error: {exc}"})
        if mask & selectors.EVENT_WRITE:
            self._flush(client)

    def _answer(self, client: _Client, answer: dict[str, Any]) -> None:
        if client.sock.fileno() < 0:
            return  # the client went away while we worked on it
        client.answered = True
        client.deadline = time.monotonic() + ANSWER_DEADLINE
        client.outbox += json.dumps(answer).encode() + b"\n"
        try:
            self._flush(client)
        except Exception:  # noqa: BLE001 -- a deferred answer must not raise into the master
            self._drop(client)

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        client.outbox = client.outbox[sent:]
        if client.outbox:
            assert self.selector is not None
            self.selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                 lambda m, c=client: self._on_client(c, m))
        else:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        for fd, known in list(self.clients.items()):
            if known is client:
                del self.clients[fd]
        if client.sock.fileno() < 0:
            return
        if self.selector is not None:
            try:
                self.selector.unregister(client.sock)
            except (KeyError, ValueError):
                pass
        client.sock.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        if self.selector is not None:
            try:
                self.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self.inode:  # not a newer master's socket
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def request(path: str, command: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """The client's end: send one command, return the master's answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no control socket at {path}: is arbiter running "
                               f"(with control_socket or a pidfile set)?") from None
        except ConnectionRefusedError:
            raise ControlError(f"nothing answers on {path}: the master is not running") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path} (mode 0600: run as the user "
                               f"that runs arbiter)") from None
        sock.sendall(json.dumps(command).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise ControlError(f"the master did not answer within {timeout:g} s") from None
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if not data:
        raise ControlError("the master closed the connection without answering")
    return json.loads(data)
