"""The ``preforked`` worker: a horde of processes accepting on the shared socket.

Each worker process accepts one connection and serves it to the end before it
accepts the next (bound: one connection per process). The pattern's classic
trap is keep-alive: a one-connection-at-a-time worker that holds an idle
connection open starves every client queued behind it (uWSGI's HTTP/1.1
socket served 2 of 50 clients that way). This worker keeps a connection alive
only while nobody else is waiting: before each response it polls the
listeners, and if a connection is pending the response says
``Connection: close`` and the worker goes back to ``accept``. While a
kept-alive connection idles, the worker also watches the listeners: a client
arriving ends the idle wait (after a 20 ms grace for the idle client's own
next request, the idle connection is closed, as HTTP allows) instead of
queueing behind it for ``keepalive`` seconds. So idle clients get
keep-alive, and under load every client is served in turn.

A slow client is the same trap in another form: a body trickled a byte at a
time, or a large response read slowly, would hold the worker from everyone
else. The lifecycle cuts a trickler by its transfer budget
(``min_transfer_rate``), and this worker also holds one request's transfers to
``timeout`` in all (``hold_limit``), as Gunicorn's sync worker does by
killing a worker silent past ``timeout``: the slow client is cut, the worker
goes back to ``accept``.

Its other weakness, memory (each process a full copy), is answered by
``preload_app`` (copy-on-write sharing of the imported app), the master's
recycling, and reforking (``refork_after``): this type can be the mold. Asked
for workers (``fork_due``), it leaves ``serve()`` between two connections --
holding none, its only thread -- keeping its listeners open;
:mod:`arbiter.workers.mold` forks, and the mold and its children each serve
again.
"""

from __future__ import annotations

import select
import selectors
import time

from arbiter.io.accept import ACCEPT_BACKOFF, AcceptPaused, accept_one
from arbiter.io.blocking import serve_connection
from arbiter.workers.base import Worker


class PreforkedWorker(Worker):
    """Accept, serve the connection to the end, repeat."""

    worker_type = "preforked"
    can_refork = True

    def serve(self) -> None:
        selector = selectors.DefaultSelector()
        pending = select.poll()
        for listener in self.listeners:
            listener.sock.setblocking(False)
            selector.register(listener.sock, selectors.EVENT_READ, listener)
            pending.register(listener.sock, select.POLLIN)
        selector.register(self.wakeup_r, selectors.EVENT_READ, None)

        def nobody_waiting() -> bool:
            return not pending.poll(0)

        socknames = {listener.fileno: listener.sock.getsockname() for listener in self.listeners}
        # While a kept-alive connection idles, a new client ends the wait (it gives way).
        listener_fds = [listener.fileno for listener in self.listeners]
        # One connection at a time: one request's transfers may take at most `timeout`,
        # so a slow client cannot keep the worker from everyone else.
        hold_limit = float(self.cfg.timeout)
        handler = self.handler
        stopping = self.stopping  # and a mold about to fork: see Worker.stopping
        tls = self.tls  # TLS: serve_connection does the handshake, bounded by header_timeout
        try:
            while self.between_requests() and not self.fork_due:
                for key, _ in selector.select(self.tick):
                    listener = key.data
                    if listener is None:
                        self.drain_wakeup()
                        continue
                    # Accept and serve while connections are queued, then sleep again.
                    while self.alive:
                        try:
                            accepted = accept_one(listener, self.log)
                        except AcceptPaused:
                            time.sleep(ACCEPT_BACKOFF)  # the listener stays readable
                            break
                        if accepted is None:
                            break
                        conn, peer = accepted
                        try:
                            serve_connection(handler, conn, peer, socknames[listener.fileno],
                                             may_keep_alive=nobody_waiting,
                                             observer=self, stopping=stopping,
                                             watch_fds=listener_fds, tls=tls,
                                             hold_limit=hold_limit)
                        finally:
                            conn.close()
                        if not self.between_requests() or self.fork_due:
                            break
                    if not self.alive or self.fork_due:
                        break
        finally:
            selector.close()
            if not (self.alive and self.fork_due):  # a mold serves again after forking
                for listener in self.listeners:
                    listener.sock.close()
