"""The ``evented`` worker: one thread, one ``selectors`` reactor, thousands of connections.

The reactor pattern's promise is concurrency in the tens of thousands from a
single thread; its known weakness is that one blocking call stalls
everything. This worker answers it in three ways:

* **The reactor itself never blocks.** Listeners, every connection and the
  signal wakeup fd sit in one selector (epoll on Linux). Accepts, ``recv`` and
  ``send`` are non-blocking; a request is fed to its connection's sans-IO
  :class:`~arbiter.http.protocol.HTTPConnection` as bytes arrive, and the app
  is called only once the request is complete -- head *and* body buffered --
  so the app never waits for a slow client. The response is collected into
  the connection's output buffer and written as the socket becomes writable
  (``EVENT_WRITE`` is registered only while output is pending). Slow clients
  therefore cost a few kilobytes of memory, never the thread.
* **Every wait is bounded by a timer**, kept in coarse deadline buckets
  (:class:`DeadlineBuckets`): a head not complete within ``header_timeout``
  gets 408 (slowloris), an idle keep-alive connection is closed after
  ``keepalive``, a body that stops arriving or a client that stops reading its
  response is dropped after ``timeout`` (``read_timeout`` of the HTTP core).
  Only buckets that are due are looked at, so 10,000 idle connections cost
  nothing per loop iteration.
* **An app that blocks anyway is caught, not hidden.** The loop beats the
  heartbeat at least every ``tick``; an app stuck in the reactor thread
  freezes it, and the master (``hung_policy = "kill"``) dumps this worker's
  traceback -- naming the blocking call -- and replaces it. The lesson for
  the user is in ``config/evented.yaml``: only apps that never block belong
  here.

Bounds: at most ``max_connections`` open connections (at the bound the
listeners are unwatched and further clients wait in the kernel backlog);
request bodies are buffered up to ``limits.body``, or up to
:data:`UNLIMITED_BODY_CAP` (32 MiB) when no limit is set -- larger bodies get
413; pipelined requests are answered in order, and reading from a connection
pauses while its output buffer is not yet flushed, so a client that pipelines
without reading cannot grow the worker's memory. At boot the soft
``RLIMIT_NOFILE`` is raised (up to the hard limit) so ``max_connections`` fit.

TERM: the listeners are closed, idle connections are closed, requests being
received and responses being written are finished (with ``Connection:
close``) for up to ``graceful_timeout``, then the worker returns.
"""

from __future__ import annotations

import errno
import heapq
import io
import resource
import selectors
import socket
import ssl
import time
from typing import Any

from arbiter.http import (
    CONNECTION_CLOSED,
    CONTINUE_RESPONSE,
    EMPTY_INPUT,
    NEED_DATA,
    PAUSED,
    ConnectionInfo,
    Data,
    EndOfMessage,
    HTTPConnection,
    ProtocolError,
    Request,
)
from arbiter.http.parsers import make_head_parser
from arbiter.tls import HANDSHAKE_ERRORS, close_notify, wrap
from arbiter.workers.base import Worker

__all__ = ["EventedWorker", "DeadlineBuckets", "UNLIMITED_BODY_CAP"]

UNLIMITED_BODY_CAP = 32 * 1024 * 1024  # bytes buffered per body when limits.body is null
RECV_SIZE = 65536
PIPELINE_OUTPUT_LIMIT = 256 * 1024  # stop answering buffered requests until this is flushed
LINGER_SECONDS = 0.5  # after an error response: read and discard before closing (no RST)
FD_SLACK = 64  # descriptors beyond max_connections: listeners, logs, pipes, the selector
IOV_BATCH = 64  # buffers per sendmsg() call (well under IOV_MAX)
ACCEPT_BACKOFF = 0.5  # seconds the listeners rest after EMFILE / ENFILE / ENOBUFS
TLS_JOIN = 16 * 1024  # TLS: small pending buffers are joined up to this into one write
TLS_WRITE_CHUNK = 256 * 1024  # TLS: bytes per SSL write (progress is seen between them)

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE

# What a connection is waiting for; each phase has its own deadline.
FIRST_HEAD = 0  # accepted, first request head not complete (header_timeout from accept)
IDLE = 1  # between requests, nothing received (keepalive)
HEAD = 2  # a later request's head is arriving (header_timeout from its first byte)
BODY = 3  # a request body is arriving (read_timeout since the last bytes)
WRITE = 4  # output pending (read_timeout since the last progress)
LINGER = 5  # final response sent, write side shut: discard input briefly, then close
APP = 6  # a complete request is being answered (no deadline needed: the reactor is busy)
HANDSHAKE = 7  # TLS: accepted, handshake in progress (header_timeout from accept)


class Connection:
    """One client connection's state; kept small (10,000 of these must fit)."""

    __slots__ = ("sock", "peer", "sockname", "http", "info", "phase", "events", "out",
                 "request", "body", "body_size", "continue_sent", "close_after",
                 "linger", "served", "deadline", "bucket", "closed")

    def __init__(self, sock: socket.socket, peer: Any, sockname: Any,
                 http: HTTPConnection) -> None:
        self.sock = sock
        self.peer = peer
        self.sockname = sockname
        self.http = http
        self.info: ConnectionInfo | None = None  # built at the first request
        self.phase = FIRST_HEAD
        self.events = _READ
        self.out: list[bytes | memoryview] | None = None  # buffers not yet written
        self.request: Request | None = None  # the request being received
        self.body: list[bytes] | None = None
        self.body_size = 0
        self.continue_sent = False
        self.close_after = False  # close once the output is flushed
        self.linger = False  # ... after shutting the write side and draining briefly
        self.served = 0
        self.deadline = 0.0
        self.bucket: int | None = None
        self.closed = False


class DeadlineBuckets:
    """Connection deadlines in buckets of 1/``RESOLUTION`` s, fired in order.

    ``schedule`` is O(1) and lazy: a deadline that moves later only updates
    ``conn.deadline``, and the connection is re-filed when its old bucket
    comes due. ``expired(now)`` looks only at buckets that are due.
    """

    RESOLUTION = 4  # buckets per second

    def __init__(self) -> None:
        self.buckets: dict[int, set[Connection]] = {}
        self.keys: list[int] = []  # heap of bucket keys

    def schedule(self, conn: Connection, deadline: float) -> None:
        conn.deadline = deadline
        key = int(deadline * self.RESOLUTION) + 1  # fires at key/RESOLUTION > deadline
        old = conn.bucket
        if old is not None:
            if old <= key:
                return  # the earlier bucket re-files it when it comes due
            self.buckets[old].discard(conn)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = set()
            heapq.heappush(self.keys, key)
        bucket.add(conn)
        conn.bucket = key

    def cancel(self, conn: Connection) -> None:
        if conn.bucket is not None:
            bucket = self.buckets.get(conn.bucket)
            if bucket is not None:
                bucket.discard(conn)
            conn.bucket = None

    def expired(self, now: float) -> list[Connection]:
        """Connections whose deadline has passed; the others in due buckets are re-filed."""
        due: list[Connection] = []
        keys = self.keys
        limit = now * self.RESOLUTION
        while keys and keys[0] <= limit:
            for conn in self.buckets.pop(heapq.heappop(keys), ()):
                conn.bucket = None
                if conn.deadline <= now:
                    due.append(conn)
                else:
                    self.schedule(conn, conn.deadline)
        return due

    def next_due(self) -> float | None:
        return self.keys[0] / self.RESOLUTION if self.keys else None


def pending_bytes(buffers: list[bytes | memoryview]) -> int:
    return sum(len(buffer) for buffer in buffers)


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE toward ``wanted`` (capped by the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class EventedWorker(Worker):
    """A single-threaded reactor: non-blocking accept, read, app call, write."""

    worker_type = "evented"
    multithread = False
    hung_policy = "kill"

    def serve(self) -> None:
        cfg = self.cfg
        handler = self.handler
        assert handler is not None
        settings = handler.settings
        self.max_open = cfg.max_connections
        soft = raise_open_files_limit(cfg.max_connections + FD_SLACK)
        if soft != resource.RLIM_INFINITY and soft < cfg.max_connections + FD_SLACK:
            self.max_open = max(1, soft - FD_SLACK)
            self.log.warning("worker #%d: RLIMIT_NOFILE is %d: holding at most %d connections "
                             "instead of max_connections %d (raise the hard limit: ulimit -Hn)",
                             self.number, soft, self.max_open, cfg.max_connections)
        self.header_timeout = settings.header_timeout
        self.keepalive = settings.keepalive
        self.read_timeout = settings.read_timeout
        self.body_cap = (settings.limit_body if settings.limit_body is not None
                         else UNLIMITED_BODY_CAP)
        self.parser_name = handler.parser_name
        self.selector = selectors.DefaultSelector()
        self.timers = DeadlineBuckets()
        self.connections: set[Connection] = set()
        self.listening = False
        self.accept_paused_until = 0.0
        self.draining = False
        self.socknames = {listener.fileno: listener.sock.getsockname()
                          for listener in self.listeners}
        for listener in self.listeners:
            listener.sock.setblocking(False)
        if self.tls is not None:
            # Every connection is TLS: the reactor calls these instead (the plain path
            # is not touched by a per-event check).
            self.on_readable = self.on_readable_tls  # type: ignore[method-assign]
            self.on_writable = self.on_writable_tls  # type: ignore[method-assign]
            self.flush = self.flush_tls  # type: ignore[method-assign]
            self.finish = self.finish_tls  # type: ignore[method-assign]
            self.close = self.close_tls  # type: ignore[method-assign]
        self.selector.register(self.wakeup_r, _READ, None)
        self.watch_listeners(True)
        try:
            self.run_reactor()
        finally:
            for conn in list(self.connections):
                self.close(conn)
            self.watch_listeners(False)
            self.selector.close()
            for listener in self.listeners:
                listener.sock.close()

    # -- the loop ------------------------------------------------------------------
    def run_reactor(self) -> None:
        selector = self.selector
        timers = self.timers
        tick = self.tick
        beat_every = tick / 2
        next_beat = 0.0
        drain_deadline = 0.0
        while True:
            now = time.monotonic()
            if now >= next_beat:
                self.between_requests()
                next_beat = now + beat_every
            if not self.alive:
                if not self.draining:
                    self.start_draining()
                    drain_deadline = now + float(self.cfg.graceful_timeout)
                if not self.connections:
                    return
                if now >= drain_deadline:
                    self.log.warning("worker #%d: graceful_timeout reached with %d connections "
                                     "still open; closing them", self.number,
                                     len(self.connections))
                    return
            elif not self.listening and now >= self.accept_paused_until and (
                    len(self.connections) < self.max_open):
                self.watch_listeners(True)
            wait = next_beat - now
            due = timers.next_due()
            if due is not None and due - now < wait:
                wait = due - now
            for key, mask in selector.select(max(wait, 0.0)):
                data = key.data
                if type(data) is Connection:
                    if data.closed:
                        continue
                    try:
                        if mask & _WRITE:
                            self.on_writable(data)
                        if mask & _READ and not data.closed:
                            self.on_readable(data)
                    except Exception:
                        self.log.exception("unexpected error on a connection from %r", data.peer)
                        self.close(data)
                elif data is None:
                    self.drain_wakeup()
                else:
                    self.accept(data)
            expired = timers.expired(time.monotonic())
            for conn in expired:
                if not conn.closed:
                    try:
                        self.on_deadline(conn)
                    except Exception:
                        self.log.exception("unexpected error timing out a connection from %r",
                                           conn.peer)
                        self.close(conn)

    def watch_listeners(self, watch: bool) -> None:
        if watch == self.listening:
            return
        self.listening = watch
        for listener in self.listeners:
            try:
                if watch:
                    self.selector.register(listener.sock, _READ, listener)
                else:
                    self.selector.unregister(listener.sock)
            except (KeyError, ValueError, OSError):
                pass

    def start_draining(self) -> None:
        """TERM (or max_requests): stop accepting, close idle connections, finish the rest."""
        self.draining = True
        self.watch_listeners(False)
        for listener in self.listeners:
            listener.sock.close()
        for conn in list(self.connections):
            # A connection that never sent a request is not idle: its client is about
            # to send one (closing it would fail that request). It is answered, with
            # Connection: close, or cut at header_timeout like any other.
            if self.is_idle(conn) and conn.phase != FIRST_HEAD:
                self.close(conn)

    @staticmethod
    def is_idle(conn: Connection) -> bool:
        return conn.out is None and conn.request is None and conn.phase != LINGER and (
            conn.http.idle)

    # -- accepting -----------------------------------------------------------------
    def accept(self, listener: Any) -> None:
        sock = listener.sock
        connections = self.connections
        max_open = self.max_open
        now = time.monotonic()
        first_deadline = now + self.header_timeout
        tcp = sock.family != socket.AF_UNIX
        sockname = self.socknames[listener.fileno]
        tls = self.tls
        while len(connections) < max_open:
            try:
                client, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.warning("accept on %s failed: %s; pausing accepts for %g s",
                                     listener.name, exc, ACCEPT_BACKOFF)
                    self.watch_listeners(False)
                    self.accept_paused_until = now + ACCEPT_BACKOFF
                else:
                    self.log.debug("accept on %s failed: %s", listener.name, exc)
                return
            client.setblocking(False)
            if tcp:
                try:
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
            if tls is not None:
                try:
                    client = wrap(tls, client)  # the handshake is driven by the reactor
                except HANDSHAKE_ERRORS as exc:
                    self.log.debug("TLS with %r failed: %s", peer, exc)
                    client.close()
                    continue
            conn = Connection(client, peer, sockname,
                              HTTPConnection(self.handler.settings,
                                             make_head_parser(self.parser_name)))
            if tls is not None:
                conn.phase = HANDSHAKE
            try:
                self.selector.register(client, _READ, conn)
            except (OSError, ValueError):
                client.close()
                continue
            connections.add(conn)
            self.timers.schedule(conn, first_deadline)
        self.watch_listeners(False)  # at the bound: clients wait in the backlog

    def close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.timers.cancel(conn)
        self.connections.discard(conn)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        conn.out = None
        conn.body = None

    # -- events --------------------------------------------------------------------
    def on_readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.log.debug("connection from %r ended: %s", conn.peer, exc)
            self.close(conn)
            return
        if conn.phase == LINGER:
            if not data:
                self.close(conn)
            return
        if conn.phase == BODY and data:
            self.timers.schedule(conn, time.monotonic() + self.read_timeout)
        conn.http.receive_data(data)
        self.drive(conn)

    def on_writable(self, conn: Connection) -> None:
        if conn.out is None:
            self.set_interest(conn)
            return
        before = pending_bytes(conn.out)
        if not self.flush(conn):
            return
        if conn.out is not None:
            if pending_bytes(conn.out) < before:
                self.timers.schedule(conn, time.monotonic() + self.read_timeout)
            return
        self.drive(conn)

    def on_deadline(self, conn: Connection) -> None:
        phase = conn.phase
        if phase in (FIRST_HEAD, HEAD) and not conn.http.idle:
            # Slowloris: the head did not arrive within header_timeout.
            self.request_finished(408)
            conn.out = [self.handler.error_response(408, self.connection_info(conn))]
            conn.close_after = conn.linger = True
            conn.request = None
            self.drive(conn)
            return
        if phase in (BODY, WRITE):
            self.log.debug("connection from %r timed out (%s)", conn.peer,
                           "request body stalled" if phase == BODY else "client not reading")
        elif phase == HANDSHAKE:
            self.log.debug("TLS handshake with %r not complete within header_timeout",
                           conn.peer)
        self.close(conn)

    # -- the HTTP state machine ------------------------------------------------------
    def drive(self, conn: Connection) -> None:
        """Answer what is complete, write what is pending, then wait for the next event."""
        while True:
            if not conn.close_after:
                self.advance(conn)
            if conn.out is not None:
                if not self.flush(conn):
                    return
                if conn.out is not None:
                    if conn.phase != WRITE:
                        conn.phase = WRITE
                        self.timers.schedule(conn, time.monotonic() + self.read_timeout)
                    self.set_interest(conn)
                    return
                if not conn.close_after and conn.request is None and conn.http.trailing_data:
                    continue  # buffered pipelined requests: answer them now
            if conn.close_after:
                self.finish(conn)
                return
            if self.draining and self.is_idle(conn):
                self.close(conn)
                return
            self.set_interest(conn)
            return

    def advance(self, conn: Connection) -> None:
        """Consume the buffered bytes: run the app for each complete request, in order."""
        http = conn.http
        queued: list[bytes | memoryview] = []
        size = 0
        while True:
            event = http.next_event()
            if event is NEED_DATA:
                self.await_more(conn)
                break
            etype = type(event)
            if etype is Data:
                conn.body_size += len(event.data)
                if conn.body_size > self.body_cap:
                    queued.append(self.refuse_body(conn))
                    break
                conn.body.append(event.data)
                continue
            if etype is Request:
                if conn.info is None:
                    conn.info = self.connection_info(conn)
                conn.request = event
                conn.continue_sent = False
                conn.phase = APP
                if event.content_length:
                    conn.body = []
                    conn.body_size = 0
                    if event.content_length > self.body_cap:
                        queued.append(self.refuse_body(conn))
                        break
                elif event.content_length is None:
                    conn.body = []
                    conn.body_size = 0
                continue
            if etype is EndOfMessage:
                continue
            if event is PAUSED:
                response = self.respond(conn)
                queued += response
                size += pending_bytes(response)
                if conn.close_after:
                    break
                http.start_next_cycle()
                if size >= PIPELINE_OUTPUT_LIMIT:
                    break
                continue
            if etype is ProtocolError:
                self.request_finished(event.status)
                queued.append(self.handler.error_response(event, self.connection_info(conn)))
                conn.close_after = conn.linger = True
                conn.request = None
                break
            if event is CONNECTION_CLOSED:
                conn.close_after = True
                conn.request = None
                break
            raise RuntimeError(f"unexpected event {event!r}")
        if queued:
            self.queue(conn, queued)

    def await_more(self, conn: Connection) -> None:
        """NEED_DATA: enter the phase that matches what is missing, with its deadline."""
        http = conn.http
        phase = conn.phase
        if conn.request is not None:
            if phase != BODY:
                conn.phase = BODY
                self.timers.schedule(conn, time.monotonic() + self.read_timeout)
            if conn.request.expect_continue and not conn.continue_sent:
                conn.continue_sent = True
                self.queue(conn, [CONTINUE_RESPONSE])
        elif conn.served == 0:
            conn.phase = FIRST_HEAD  # the accept-time deadline stands
        elif http.idle:
            if phase != IDLE:
                conn.phase = IDLE
                self.timers.schedule(conn, time.monotonic() + self.keepalive)
        elif phase != HEAD:
            conn.phase = HEAD
            self.timers.schedule(conn, time.monotonic() + self.header_timeout)

    def respond(self, conn: Connection) -> list[bytes]:
        """Run the app for the complete request; return the whole response as buffers."""
        request = conn.request
        assert request is not None
        handler = self.handler
        started = time.perf_counter()
        conn.served += 1
        body = conn.body
        if body:
            wsgi_input: Any = io.BytesIO(body[0] if len(body) == 1 else b"".join(body))
        else:
            wsgi_input = EMPTY_INPUT
        conn.body = None
        conn.request = None
        out: list[bytes] = []
        self.request_started(request.method, request.path.decode("latin-1"))
        environ = handler.build_environ(request, conn.info, wsgi_input)
        outcome = handler.run_app(environ, request, out.append,
                                  may_keep_alive=self.may_keep_alive, started=started)
        self.request_finished(outcome.status)
        if not outcome.keep_alive:
            conn.close_after = True
            conn.linger = outcome.status == 0 or bool(conn.http.trailing_data)
        return out

    def may_keep_alive(self) -> bool:
        return self.keepalive > 0 and self.alive

    def refuse_body(self, conn: Connection) -> bytes:
        """A body over the buffer cap: 413 and close."""
        conn.close_after = conn.linger = True
        conn.body = None
        request, conn.request = conn.request, None
        self.request_finished(413)
        error = ProtocolError(413, "request body over the evented worker's buffer", request)
        return self.handler.error_response(error, self.connection_info(conn))

    def connection_info(self, conn: Connection) -> ConnectionInfo:
        if conn.info is None:
            conn.info = self.handler.connection_info(conn.peer, conn.sockname)
        return conn.info

    # -- output --------------------------------------------------------------------
    @staticmethod
    def queue(conn: Connection, buffers: list[bytes | memoryview]) -> None:
        if conn.out is None:
            conn.out = buffers
        else:
            conn.out += buffers

    def flush(self, conn: Connection) -> bool:
        """Write as much pending output as the socket takes; False if the connection died.

        Several buffers go out in one ``sendmsg`` (writev): a large body is
        never copied to be joined with its head.
        """
        out = conn.out
        try:
            if len(out) == 1:
                sent = conn.sock.send(out[0])
            else:
                sent = conn.sock.sendmsg(out[:IOV_BATCH])
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            self.log.debug("connection from %r ended while writing: %s", conn.peer, exc)
            self.close(conn)
            return False
        done = 0
        while done < len(out) and sent >= len(out[done]):
            sent -= len(out[done])
            done += 1
        if done == len(out):
            conn.out = None
            return True
        if done:
            del out[:done]
        if sent:
            out[0] = memoryview(out[0])[sent:]
        return True

    def finish(self, conn: Connection) -> None:
        """The last response is written: close, after a brief linger if input may be unread."""
        if not conn.linger:
            self.close(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        conn.phase = LINGER
        conn.http = None  # type: ignore[assignment]  # nothing more is parsed
        self.timers.schedule(conn, time.monotonic() + LINGER_SECONDS)
        self.set_interest(conn)

    def set_interest(self, conn: Connection) -> None:
        if conn.out is not None:
            events = _WRITE | (_READ if conn.phase == BODY or conn.request is not None else 0)
        else:
            events = _READ
        if events != conn.events:
            conn.events = events
            self.selector.modify(conn.sock, events, conn)

    # -- TLS (chosen in serve() when the listeners serve TLS) ---------------------------
    def continue_handshake(self, conn: Connection) -> None:
        """One step of the server handshake; wait for what OpenSSL asks for next."""
        sock: ssl.SSLSocket = conn.sock  # type: ignore[assignment]
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            events = _READ
        except ssl.SSLWantWriteError:
            events = _WRITE
        except HANDSHAKE_ERRORS as exc:
            self.log.debug("TLS handshake with %r failed: %s", conn.peer, exc)
            self.close(conn)
            return
        else:
            conn.phase = FIRST_HEAD  # the accept-time deadline stands for the first head
            events = _READ
        if events != conn.events:
            conn.events = events
            self.selector.modify(sock, events, conn)
        if conn.phase == FIRST_HEAD and sock.pending():
            self.on_readable_tls(conn)

    def on_readable_tls(self, conn: Connection) -> None:
        phase = conn.phase
        if phase == HANDSHAKE:
            self.continue_handshake(conn)
            return
        if phase == LINGER:  # the write side is shut: raw bytes, discarded
            EventedWorker.on_readable(self, conn)
            return
        sock: ssl.SSLSocket = conn.sock  # type: ignore[assignment]
        chunks: list[bytes] = []
        size = 0
        while True:  # until OpenSSL has nothing decrypted left: epoll can't see those bytes
            try:
                chunk = sock.recv(RECV_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except InterruptedError:
                continue
            except OSError as exc:
                self.log.debug("connection from %r ended: %s", conn.peer, exc)
                self.close(conn)
                return
            if not chunk:
                if chunks:
                    break  # the EOF is seen again at the next event
                chunks.append(chunk)
                break
            chunks.append(chunk)
            size += len(chunk)
            if size >= RECV_SIZE and not sock.pending():
                break
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if phase == BODY and data:
            self.timers.schedule(conn, time.monotonic() + self.read_timeout)
        conn.http.receive_data(data)
        self.drive(conn)

    def on_writable_tls(self, conn: Connection) -> None:
        if conn.phase == HANDSHAKE:
            self.continue_handshake(conn)
            return
        EventedWorker.on_writable(self, conn)

    def flush_tls(self, conn: Connection) -> bool:
        """``flush`` for an SSLSocket (no sendmsg): small buffers joined, large ones cut.

        An SSL write either takes all it is given or raises SSLWantWriteError and
        must be retried with the same bytes: ``out[0]`` (and so the chunk) stays
        the same until it is written.
        """
        out = conn.out
        if len(out) > 1 and len(out[0]) < TLS_JOIN:
            count = total = 0
            while count < len(out) and total < TLS_JOIN:
                total += len(out[count])
                count += 1
            if count > 1:
                out[:count] = [b"".join(out[:count])]
        first = out[0]
        chunk = first if len(first) <= TLS_WRITE_CHUNK else memoryview(first)[:TLS_WRITE_CHUNK]
        try:
            sent = conn.sock.send(chunk)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, InterruptedError):
            return True
        except OSError as exc:
            self.log.debug("connection from %r ended while writing: %s", conn.peer, exc)
            self.close(conn)
            return False
        if sent >= len(first):
            del out[0]
            if not out:
                conn.out = None
        else:
            out[0] = memoryview(first)[sent:]
        return True

    def finish_tls(self, conn: Connection) -> None:
        if conn.linger:
            close_notify(conn.sock)  # type: ignore[arg-type]
        EventedWorker.finish(self, conn)

    def close_tls(self, conn: Connection) -> None:
        if not conn.closed and conn.phase not in (HANDSHAKE, LINGER):
            close_notify(conn.sock)  # type: ignore[arg-type]
        EventedWorker.close(self, conn)
