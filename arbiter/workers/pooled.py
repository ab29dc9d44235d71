"""The ``pooled`` worker: a fixed pool of threads that run the app, and nothing else.

The thread-pool pattern bounds the number of threads, but its naive form (and
Gunicorn's gthread worker, issue #3518) lets a pool thread sit on a
connection while it waits for the client: an idle keep-alive connection, or a
client that sends its request slowly, pins a thread, and ``threads`` such
clients starve everyone else.

Here a pool thread is only ever given a *complete* request. The worker's main
thread is a selector loop that owns every connection while it waits: it
accepts, reads without blocking into each connection's sans-IO
:class:`~arbiter.http.protocol.HTTPConnection`, answers ``Expect:
100-continue``, enforces ``header_timeout`` (408, slowloris), the body stall
limit and the ``keepalive`` idle limit with deadlines, and writes the core's
error responses (400/413/431/...) itself. When a request's head and whole
body are buffered, the connection is handed to the pool; the pool thread
builds the environ, runs the app, writes the response, and gives the
connection back, ready for the next request: an idle keep-alive connection
whose socket the selector still watches simply becomes idle again (no wakeup,
no syscall: the hot path); any other (pipelined bytes buffered, to close or
linger) goes through a queue and a wakeup pipe watched by the selector.
Pipelined requests already buffered are dispatched next, one request per
connection at a time, so responses stay in order.

Two bounded exceptions, both documented trade-offs:

* a request body larger than ``BODY_BUFFER_LIMIT`` (1 MiB) is not held in
  memory: the connection is handed over once the head (and what is already
  buffered) is in, and the pool thread reads the rest as the app consumes
  ``wsgi.input`` (each read waits at most the stall limit, ``timeout``), so
  a slow sender of a *large* body does hold a pool thread while it sends;
* writing a response blocks the pool thread while the client does not read
  it, for at most the stall limit per write: slow *readers* of large responses
  can hold a thread for a while, slow *senders* never do.

Bound: at most ``max_connections`` open connections per worker; at the bound
the listeners are no longer watched, so further clients wait in the kernel's
backlog (never refused). ``hung_policy = "recycle"``: a request stuck in the
app gets its traceback logged and the worker is told TERM, so the other
threads finish their requests while the master starts a replacement. TERM (or
``max_requests``) stops accepting, closes idle connections, lets in-flight
requests finish, then returns.
"""

from __future__ import annotations

import collections
import io
import os
import select
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from arbiter.http import (
    CONNECTION_CLOSED,
    CONTINUE_RESPONSE,
    EMPTY_INPUT,
    NEED_DATA,
    ClientDisconnected,
    ConnectionInfo,
    Data,
    EndOfMessage,
    HTTPConnection,
    ProtocolError,
    Request,
    StreamInput,
)
from arbiter.http.parsers import make_head_parser
from arbiter.http.server import DRAIN_LIMIT, next_body_chunk, send_all
from arbiter.tls import HANDSHAKE_ERRORS, close_notify, wrap
from arbiter.workers.base import Worker

BODY_BUFFER_LIMIT = 1024 * 1024  # larger request bodies are streamed by the pool thread
RECV_SIZE = 65536
LINGER_SECONDS = 0.5  # after an error response: read and discard briefly so it is not lost to RST
LINGER_BYTES = 256 * 1024
TLS_WRITE_CHUNK = 256 * 1024  # TLS: bytes per SSL write in a pool thread (stall limit each)
MAX_SCAN_INTERVAL = 0.5  # the deadline scan runs at least this often while deadlines are pending
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

# Who holds a connection, and what the selector waits for on it.
WAIT_FIRST = 0  # accepted, no byte yet: closed silently after header_timeout
WAIT_IDLE = 1  # kept alive between requests: closed silently after keepalive
WAIT_HEAD = 2  # part of a head received: 408 after header_timeout
WAIT_BODY = 3  # head done, body arriving: closed if it stalls for the stall limit
IN_POOL = 4  # a pool thread owns it
WRITING = 5  # the selector writes an error response, then lingers
LINGERING = 6  # half-closed: discarding what the client still sends, then close
CLOSED = 7
HANDSHAKE = 8  # TLS: accepted, handshake in progress; closed silently after header_timeout

# What a pool thread asks the selector to do with a connection it gives back.
KEEP = 0
CLOSE = 1
LINGER = 2

_SELECTOR_ROLE_SIGNAL = "signal"
_SELECTOR_ROLE_RETURNS = "returns"


class PooledConnection:
    """One client connection and its request in progress."""

    __slots__ = ("sock", "fd", "peer", "info", "http", "state", "deadline", "head_started",
                 "fd_watched", "request", "body_parts", "body_size", "streamed", "started",
                 "outbox", "registered_events", "linger_budget")

    def __init__(self, sock: socket.socket, peer: Any, info: ConnectionInfo,
                 http: HTTPConnection, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.info = info
        self.http = http
        self.state = WAIT_FIRST
        self.deadline = deadline
        self.head_started = 0.0
        self.fd_watched = False  # while in the pool: still registered for reading
        self.request: Request | None = None
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.streamed = False
        self.started = 0.0
        self.outbox = b""  # bytes the selector still has to write (100 Continue, an error)
        self.registered_events = 0
        self.linger_budget = LINGER_BYTES


class PooledWorker(Worker):
    """A selector thread owns connections; ``threads`` pool threads run complete requests."""

    worker_type = "pooled"
    multithread = True
    hung_policy = "recycle"

    # -- the selector thread -----------------------------------------------------------
    def serve(self) -> None:
        settings = self.handler.settings
        self.keepalive = settings.keepalive
        self.header_timeout = settings.header_timeout
        self.stall_timeout = settings.read_timeout
        self.max_connections = max(1, int(self.cfg.max_connections))
        self.parser_name = self.handler.parser_name
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, PooledConnection] = {}
        self.next_scan = float("inf")
        self.accepting = False
        self.socknames = {listener.fileno: listener.sock.getsockname()
                          for listener in self.listeners}
        # Pool -> selector: connections given back, and a pipe that wakes the selector.
        self.returned: collections.deque = collections.deque()
        self.return_wake_pending = False
        self.returns_r, self.returns_w = os.pipe()
        os.set_blocking(self.returns_r, False)
        os.set_blocking(self.returns_w, False)
        self.work: collections.deque = collections.deque()
        self.work_ready = threading.Condition(threading.Lock())
        # Guards the hand-back of an idle keep-alive connection by a pool thread.
        self.handback_lock = threading.Lock()
        for listener in self.listeners:
            listener.sock.setblocking(False)
        # The pool threads' waiting writes and reads.
        self.send_all: Callable[[Any, bytes, float], None] = send_all
        self.recv_waiting: Callable[[Any, float], bytes | None] = recv_waiting
        if self.tls is not None:
            # Every connection is TLS: the loop and the pool threads call these instead
            # (the plain path is not touched by a per-event check).
            self.on_readable = self.on_readable_tls  # type: ignore[method-assign]
            self.on_writable = self.on_writable_tls  # type: ignore[method-assign]
            self.flush_outbox = self.flush_outbox_tls  # type: ignore[method-assign]
            self.start_linger = self.start_linger_tls  # type: ignore[method-assign]
            self.close = self.close_tls  # type: ignore[method-assign]
            self.send_all = send_all_tls
            self.recv_waiting = recv_waiting_tls
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, _SELECTOR_ROLE_SIGNAL)
        self.selector.register(self.returns_r, selectors.EVENT_READ, _SELECTOR_ROLE_RETURNS)
        self.watch_listeners(True)
        threads = max(1, int(self.cfg.threads))
        for number in range(threads):
            threading.Thread(target=self.pool_thread, name=f"pool-{number}",
                             daemon=True).start()
        try:
            self.selector_loop()
        finally:
            self.close_all()

    def selector_loop(self) -> None:
        tick = self.tick
        next_beat = 0.0
        draining = False
        wait_for_events = self.selector.select
        while True:
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + tick
                if not self.between_requests() and not draining:
                    draining = True
                    self.begin_drain()
                elif (not self.accepting and not draining
                      and len(self.connections) < self.max_connections):
                    self.watch_listeners(True)  # after an accept error paused it
            if not self.alive and not draining:  # max_requests, from a pool thread
                draining = True
                self.begin_drain()
            if draining and not self.connections:
                return
            timeout = min(next_beat, self.next_scan) - now
            events = wait_for_events(timeout if timeout > 0 else 0)
            for key, mask in events:
                role = key.data
                if type(role) is PooledConnection:
                    state = role.state
                    if state == IN_POOL:  # bytes or EOF while a pool thread owns it
                        with self.handback_lock:
                            if role.state == IN_POOL:
                                role.fd_watched = False
                                self.watch(role, 0)
                                continue
                        # handed back this instant: an ordinary event
                    elif state == CLOSED:  # closed by an earlier event of this batch
                        continue
                    if mask & selectors.EVENT_WRITE:
                        self.on_writable(role)
                    if mask & selectors.EVENT_READ and role.state != CLOSED:
                        self.on_readable(role)
                elif role is _SELECTOR_ROLE_RETURNS:
                    self.take_back()
                elif role is _SELECTOR_ROLE_SIGNAL:
                    self.drain_wakeup()
                    if not self.alive and not draining:
                        draining = True
                        self.begin_drain()
                elif self.alive:
                    self.accept_from(role)
            if self.returned:
                self.take_back()
            if time.monotonic() >= self.next_scan:
                self.expire_deadlines()

    def watch_listeners(self, watch: bool) -> None:
        if watch == self.accepting:
            return
        self.accepting = watch
        for listener in self.listeners:
            if watch:
                self.selector.register(listener.sock, selectors.EVENT_READ, listener)
            else:
                self.selector.unregister(listener.sock)

    def accept_from(self, listener: Any) -> None:
        """Accept what is queued, up to the connection bound."""
        sockname = self.socknames[listener.fileno]
        header_timeout = self.header_timeout
        tls = self.tls
        while len(self.connections) < self.max_connections:
            try:
                sock, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENOBUFS...: pause accepting for a tick
                self.log.warning("accept on %s failed: %s", listener.name, exc)
                self.watch_listeners(False)
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                try:
                    sock = wrap(tls, sock)  # the handshake is driven by this selector
                except HANDSHAKE_ERRORS as exc:
                    self.log.debug("TLS with %r failed: %s", peer, exc)
                    sock.close()
                    continue
            http = HTTPConnection(self.handler.settings, make_head_parser(self.parser_name))
            conn = PooledConnection(sock, peer, self.handler.connection_info(peer, sockname),
                                    http, time.monotonic() + header_timeout)
            if tls is not None:
                conn.state = HANDSHAKE
            self.connections[conn.fd] = conn
            self.set_deadline(conn, conn.deadline)
            self.watch(conn, selectors.EVENT_READ)
        self.watch_listeners(False)  # at the bound: new clients wait in the backlog

    def watch(self, conn: PooledConnection, events: int) -> None:
        if events == conn.registered_events:
            return
        if not events:
            self.selector.unregister(conn.sock)
        elif not conn.registered_events:
            self.selector.register(conn.sock, events, conn)
        else:
            self.selector.modify(conn.sock, events, conn)
        conn.registered_events = events

    def set_deadline(self, conn: PooledConnection, deadline: float) -> None:
        conn.deadline = deadline
        if deadline < self.next_scan:
            self.next_scan = deadline

    def on_readable(self, conn: PooledConnection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)
            return
        state = conn.state
        if state == LINGERING:
            conn.linger_budget -= len(data)
            if not data or conn.linger_budget <= 0:
                self.close(conn)
            return
        if not data and state in (WAIT_FIRST, WAIT_IDLE):
            self.close(conn)  # the client closed between requests
            return
        if state == WAIT_FIRST:  # the first head must be complete header_timeout after accept
            conn.state = WAIT_HEAD
        elif state == WAIT_IDLE:  # a later head: header_timeout after its first byte
            conn.state = WAIT_HEAD
            conn.head_started = time.monotonic()
            self.set_deadline(conn, conn.head_started + self.header_timeout)
        elif state == WAIT_BODY:
            self.set_deadline(conn, time.monotonic() + self.stall_timeout)
        conn.http.receive_data(data)
        self.advance(conn)

    def advance(self, conn: PooledConnection) -> None:
        """Feed the parser's events until it needs bytes, or the request goes to the pool."""
        http = conn.http
        while True:
            event = http.next_event()
            if event is NEED_DATA:
                self.watch(conn, selectors.EVENT_READ | (
                    selectors.EVENT_WRITE if conn.outbox else 0))
                return
            etype = type(event)
            if etype is Data:
                conn.body_parts.append(event.data)
                conn.body_size += len(event.data)
                if conn.body_size > BODY_BUFFER_LIMIT:  # a long chunked body: stream the rest
                    self.dispatch(conn, streamed=True)
                    return
                continue
            if etype is EndOfMessage:
                self.dispatch(conn, streamed=False)
                return
            if etype is Request:
                conn.request = event
                conn.started = time.perf_counter()
                conn.body_parts = []
                conn.body_size = 0
                if event.content_length == 0:
                    self.dispatch(conn, streamed=False)
                    return
                if event.expect_continue and not http.message_complete:
                    conn.outbox += CONTINUE_RESPONSE
                    self.flush_outbox(conn)
                    if conn.state == CLOSED:  # the write failed
                        return
                content_length = event.content_length
                if content_length is not None and content_length > BODY_BUFFER_LIMIT:
                    self.dispatch(conn, streamed=True)
                    return
                conn.state = WAIT_BODY
                self.set_deadline(conn, time.monotonic() + self.stall_timeout)
                continue
            if etype is ProtocolError:
                self.answer_error(conn, event)
                return
            if event is CONNECTION_CLOSED:
                self.close(conn)
                return
            raise RuntimeError(f"unexpected event {event!r} in the selector")

    def dispatch(self, conn: PooledConnection, *, streamed: bool) -> None:
        """Give a connection with a complete request (or a big body to stream) to the pool.

        Its fd stays registered for reading (no epoll_ctl per request): in the
        common case nothing arrives while the app runs; if something does, the
        loop unregisters it then, and it is watched again when it comes back.
        """
        if conn.registered_events != selectors.EVENT_READ:
            self.watch(conn, 0)
        conn.fd_watched = conn.registered_events == selectors.EVENT_READ
        conn.state = IN_POOL
        conn.streamed = streamed
        with self.work_ready:
            self.work.append(conn)
            self.work_ready.notify()

    def flush_outbox(self, conn: PooledConnection) -> None:
        """Write what the selector owes the client without blocking; the rest waits for POLLOUT."""
        try:
            sent = conn.sock.send(conn.outbox, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            conn.outbox = b""
            self.close(conn)
            return
        conn.outbox = conn.outbox[sent:]

    def answer_error(self, conn: PooledConnection, error: ProtocolError | int) -> None:
        """A core-generated error response, written by the selector; then linger and close."""
        conn.outbox += self.handler.error_response(error, conn.info)
        status = error.status if isinstance(error, ProtocolError) else error
        self.request_finished(status)
        conn.state = WRITING
        self.set_deadline(conn, time.monotonic() + self.stall_timeout)
        self.flush_outbox(conn)
        if conn.state == CLOSED:
            return
        if conn.outbox:
            self.watch(conn, selectors.EVENT_WRITE)
        else:
            self.start_linger(conn)

    def on_writable(self, conn: PooledConnection) -> None:
        self.flush_outbox(conn)
        if conn.state == CLOSED or conn.outbox:
            return
        if conn.state == WRITING:
            self.start_linger(conn)
        else:
            self.watch(conn, selectors.EVENT_READ)

    def start_linger(self, conn: PooledConnection) -> None:
        """Half-close and read briefly so the client sees our last response, not a reset."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        conn.state = LINGERING
        conn.linger_budget = LINGER_BYTES
        self.set_deadline(conn, time.monotonic() + LINGER_SECONDS)
        self.watch(conn, selectors.EVENT_READ)

    def close(self, conn: PooledConnection) -> None:
        if conn.state == CLOSED:
            return
        conn.state = CLOSED
        if conn.registered_events:
            try:
                self.selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.registered_events = 0
        if self.connections.get(conn.fd) is conn:
            del self.connections[conn.fd]
        try:
            conn.sock.close()
        except OSError:
            pass
        if self.alive and not self.accepting:
            self.watch_listeners(True)

    def expire_deadlines(self) -> None:
        """Cut connections past their deadline: 408 for a slow head, close otherwise."""
        now = time.monotonic()
        nearest = now + MAX_SCAN_INTERVAL
        for conn in list(self.connections.values()):
            state = conn.state
            if state == IN_POOL:
                continue
            if conn.deadline > now:
                if conn.deadline < nearest:
                    nearest = conn.deadline
                continue
            if state == WAIT_HEAD:
                self.log.debug("request head from %r not complete within %g s: 408",
                               conn.peer, self.header_timeout)
                conn.outbox = b""
                self.answer_error(conn, 408)
                if conn.state != CLOSED and conn.deadline < nearest:
                    nearest = conn.deadline
            else:  # silent new connection, idle keep-alive, stalled body or write, linger done,
                if state == HANDSHAKE:  # or a TLS handshake not done within header_timeout
                    self.log.debug("TLS handshake with %r not complete within %g s",
                                   conn.peer, self.header_timeout)
                self.close(conn)
        self.next_scan = nearest if self.connections else float("inf")

    def take_back(self) -> None:
        """Connections the pool has finished with: keep alive, linger or close."""
        # Order matters: empty the pipe, then clear the flag, then drain the queue, so
        # a give_back() that saw the flag still set is always drained below.
        try:
            while os.read(self.returns_r, 4096):
                pass
        except BlockingIOError:
            pass
        self.return_wake_pending = False
        returned = self.returned
        while returned:
            conn, action = returned.popleft()
            if action == KEEP and self.alive:
                conn.request = None
                conn.body_parts = []
                if conn.http.idle:
                    conn.state = WAIT_IDLE
                    self.set_deadline(conn, time.monotonic() + self.keepalive)
                else:  # pipelined bytes are already here: parse the next request now
                    conn.state = WAIT_HEAD
                    conn.head_started = time.monotonic()
                    self.set_deadline(conn, conn.head_started + self.header_timeout)
                self.advance(conn)
            elif action == LINGER:
                self.start_linger(conn)
            else:
                self.close(conn)

    def begin_drain(self) -> None:
        """TERM or max_requests: stop accepting, close idle connections; in-flight ones finish."""
        self.watch_listeners(False)
        for listener in self.listeners:
            try:
                listener.sock.close()
            except OSError:
                pass
        with self.handback_lock:  # a connection being handed back is closed here, or sees alive
            for conn in list(self.connections.values()):
                # Only kept-alive connections between requests: a fresh one (no request
                # yet, or mid-handshake) is about to send its first request — closing it
                # would fail that request; it is answered with Connection: close, or cut
                # at header_timeout.
                if conn.state == WAIT_IDLE:
                    self.close(conn)
        self.log.debug("worker #%d (pid %d) draining: %d connection(s) in progress",
                       self.number, os.getpid(), len(self.connections))

    def close_all(self) -> None:
        for conn in list(self.connections.values()):
            if conn.state != IN_POOL:
                self.close(conn)
        try:
            self.selector.close()
        except OSError:
            pass
        os.close(self.returns_r)
        os.close(self.returns_w)
        for listener in self.listeners:
            try:
                listener.sock.close()
            except OSError:
                pass

    # -- TLS (chosen in serve() when the listeners serve TLS) ------------------------------
    def continue_handshake(self, conn: PooledConnection) -> None:
        """One step of the server handshake; wait for what OpenSSL asks for next."""
        sock: ssl.SSLSocket = conn.sock  # type: ignore[assignment]
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self.watch(conn, selectors.EVENT_WRITE)
            return
        except HANDSHAKE_ERRORS as exc:
            self.log.debug("TLS handshake with %r failed: %s", conn.peer, exc)
            self.close(conn)
            return
        conn.state = WAIT_FIRST  # the accept-time deadline stands for the first head
        self.watch(conn, selectors.EVENT_READ)
        if sock.pending():
            self.on_readable_tls(conn)

    def on_readable_tls(self, conn: PooledConnection) -> None:
        state = conn.state
        if state == HANDSHAKE:
            self.continue_handshake(conn)
            return
        if state == LINGERING:  # the write side is shut: raw bytes, discarded
            PooledWorker.on_readable(self, conn)
            return
        data = tls_read(conn.sock)  # type: ignore[arg-type]
        if data is None:
            return
        if data is False:
            self.close(conn)
            return
        # From here as PooledWorker.on_readable (kept separate: the plain path stays as is).
        if not data and state in (WAIT_FIRST, WAIT_IDLE):
            self.close(conn)
            return
        if state == WAIT_FIRST:
            conn.state = WAIT_HEAD
        elif state == WAIT_IDLE:
            conn.state = WAIT_HEAD
            conn.head_started = time.monotonic()
            self.set_deadline(conn, conn.head_started + self.header_timeout)
        elif state == WAIT_BODY:
            self.set_deadline(conn, time.monotonic() + self.stall_timeout)
        conn.http.receive_data(data)
        self.advance(conn)

    def on_writable_tls(self, conn: PooledConnection) -> None:
        if conn.state == HANDSHAKE:
            self.continue_handshake(conn)
            return
        PooledWorker.on_writable(self, conn)

    def flush_outbox_tls(self, conn: PooledConnection) -> None:
        # An SSL write takes all of the outbox or nothing (retried with the same bytes).
        try:
            sent = conn.sock.send(conn.outbox)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, InterruptedError):
            sent = 0
        except OSError:
            conn.outbox = b""
            self.close(conn)
            return
        conn.outbox = conn.outbox[sent:]

    def start_linger_tls(self, conn: PooledConnection) -> None:
        close_notify(conn.sock)  # type: ignore[arg-type]
        PooledWorker.start_linger(self, conn)

    def close_tls(self, conn: PooledConnection) -> None:
        if conn.state not in (CLOSED, HANDSHAKE, LINGERING):
            close_notify(conn.sock)  # type: ignore[arg-type]
        PooledWorker.close(self, conn)

    # -- the pool threads ----------------------------------------------------------------
    def pool_thread(self) -> None:
        work = self.work
        work_ready = self.work_ready
        while True:
            with work_ready:
                while not work:
                    work_ready.wait()
                conn = work.popleft()
            try:
                action = self.run_request(conn)
            except Exception:
                self.log.exception("unexpected error serving a request from %r", conn.peer)
                action = CLOSE
            self.give_back(conn, action)

    def give_back(self, conn: PooledConnection, action: int) -> None:
        """Return a connection to the selector thread.

        The hot path -- keep-alive, nothing buffered, its fd still registered --
        needs no wakeup: the connection just becomes idle again (under the
        hand-back lock, so the selector never sees it half-way) and the
        selector's next read event on it is the next request. Anything else
        goes through the queue and the wakeup pipe.
        """
        if action == KEEP and conn.http.idle:
            with self.handback_lock:
                if conn.fd_watched and self.alive:
                    conn.request = None
                    conn.deadline = time.monotonic() + self.keepalive  # the scan reads it
                    conn.state = WAIT_IDLE
                    return
        self.returned.append((conn, action))
        if not self.return_wake_pending:
            self.return_wake_pending = True
            try:
                os.write(self.returns_w, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: the selector is awake anyway

    def run_request(self, conn: PooledConnection) -> int:
        """Run the app for the connection's request and write the response; KEEP/CLOSE/LINGER."""
        request = conn.request
        assert request is not None
        handler = self.handler
        http = conn.http
        sock = conn.sock
        stall = self.stall_timeout

        write_all = self.send_all

        def send(data: bytes) -> None:
            write_all(sock, data, stall)

        if conn.outbox:  # a 100 Continue the selector could not finish writing
            pending, conn.outbox = conn.outbox, b""
            send(pending)

        self.request_started(request.method, request.path.decode("latin-1"))
        if conn.streamed:
            wsgi_input: Any = StreamInput(self.body_reader(conn))
        elif conn.body_size:
            body = conn.body_parts[0] if len(conn.body_parts) == 1 else b"".join(conn.body_parts)
            wsgi_input = io.BytesIO(body)
        else:
            wsgi_input = EMPTY_INPUT
        conn.body_parts = []
        keepalive_on = self.keepalive > 0

        def may_keep_alive() -> bool:
            if not (keepalive_on and self.alive):
                return False
            if conn.streamed:  # what is left of the body must be small enough to drain
                remaining = http.body_remaining
                return remaining is None or remaining <= DRAIN_LIMIT
            return True

        environ = handler.build_environ(request, conn.info, wsgi_input)
        plain = type(sock) is socket.socket
        outcome = handler.run_app(environ, request, send,
                                  sendfile=sendfile_for(sock, stall) if plain else None,
                                  may_keep_alive=may_keep_alive, started=conn.started)
        self.request_finished(outcome.status)
        if outcome.aborted:
            return CLOSE
        if http.error is not None:
            return LINGER
        if not outcome.keep_alive:
            return LINGER if (outcome.status == 0 or conn.streamed
                              or http.trailing_data) else CLOSE
        if conn.streamed and not self.drain_body(conn):
            return LINGER
        http.next_event()  # PAUSED
        http.start_next_cycle()
        return KEEP

    def body_reader(self, conn: PooledConnection) -> Callable[[], bytes]:
        """``pull()`` for a streamed body: buffered parts first, then blocking reads."""
        http = conn.http
        buffered = collections.deque(conn.body_parts)
        stall = self.stall_timeout

        def pull() -> bytes:
            if buffered:
                return buffered.popleft()
            return next_body_chunk(http, lambda: self.recv_waiting(conn.sock, stall))

        return pull

    def drain_body(self, conn: PooledConnection) -> bool:
        """Read and discard what the app left of a streamed body; False if it cannot be kept."""
        http = conn.http
        budget = DRAIN_LIMIT
        while True:
            event = http.next_event()
            etype = type(event)
            if etype is Data:
                budget -= len(event.data)
                if budget < 0:
                    return False
                continue
            if etype is EndOfMessage:
                return True
            if event is NEED_DATA:
                try:
                    data = self.recv_waiting(conn.sock, self.stall_timeout)
                except ClientDisconnected:
                    return False
                if not data:
                    return False
                http.receive_data(data)
                continue
            return http.message_complete


def sendfile_for(sock: socket.socket, stall: float) -> Callable[[Any, int, int], int]:
    """``sendfile(file, offset, count)`` for the handler: zero-copy, the stall limit as timeout."""
    def sendfile(file: Any, offset: int, count: int) -> int:
        sock.settimeout(stall)  # socket.sendfile needs a blocking socket with a timeout
        try:
            return sock.sendfile(file, offset, count)
        except OSError as exc:
            raise ClientDisconnected(f"sendfile failed: {exc}") from None
        finally:
            sock.setblocking(False)
    return sendfile


def recv_waiting(sock: socket.socket, stall: float) -> bytes | None:
    """Read from a non-blocking socket, waiting up to ``stall``: bytes, b"" at EOF, None on timeout."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    deadline = time.monotonic() + stall
    while True:
        try:
            return sock.recv(RECV_SIZE, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            raise ClientDisconnected(f"recv failed: {exc}") from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        poller.poll(min(remaining, 1.0) * 1000.0)


# -- TLS: the same over a non-blocking ssl.SSLSocket (no MSG_DONTWAIT: it refuses flags) ---
def tls_read(sock: ssl.SSLSocket) -> bytes | bool | None:
    """Read what is there, including what OpenSSL already decrypted (``pending()``, which
    no poll sees): bytes, b"" at EOF, None when nothing is ready yet, False on an error."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = sock.recv(RECV_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            break
        except InterruptedError:
            continue
        except OSError:
            return False if not chunks else b"".join(chunks)
        if not chunk:
            if not chunks:
                return b""
            break  # the EOF is seen again at the next event
        chunks.append(chunk)
        size += len(chunk)
        if size >= RECV_SIZE and not sock.pending():
            break
    if not chunks:
        return None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def send_all_tls(sock: ssl.SSLSocket, data: bytes, stall: float) -> None:
    """``send_all`` for an SSLSocket: a write takes all it is given or raises
    SSLWantWriteError and is retried with the same bytes, so large data goes in
    chunks of ``TLS_WRITE_CHUNK``, each with its own stall limit."""
    poller: Any = None
    view = memoryview(data) if len(data) > TLS_WRITE_CHUNK else data
    for offset in range(0, len(data), TLS_WRITE_CHUNK):
        chunk = view[offset:offset + TLS_WRITE_CHUNK] if view is not data else data
        deadline = time.monotonic() + stall
        while True:
            try:
                sock.send(chunk)
                break
            except ssl.SSLWantWriteError:
                events = select.POLLOUT
            except ssl.SSLWantReadError:
                events = select.POLLIN
            except InterruptedError:
                continue
            except OSError as exc:
                raise ClientDisconnected(f"send failed: {exc}") from None
            if poller is None:
                poller = select.poll()
                poller.register(sock, events)
            else:
                poller.modify(sock, events)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientDisconnected("write timed out")
                if poller.poll(min(remaining, 1.0) * 1000.0):
                    break


def recv_waiting_tls(sock: ssl.SSLSocket, stall: float) -> bytes | None:
    """``recv_waiting`` for an SSLSocket; leaves nothing decrypted behind in OpenSSL."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    deadline = time.monotonic() + stall
    while True:
        data = tls_read(sock)
        if data is False:
            raise ClientDisconnected("recv failed")
        if data is not None:
            return data  # type: ignore[return-value]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        poller.poll(min(remaining, 1.0) * 1000.0)
