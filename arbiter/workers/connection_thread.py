"""One connection thread of the ``threaded`` worker: serves the connections handed to it.

Owns :class:`ConnectionThread`: a thread that serves one connection to its
end through the shared blocking driver, then asks its worker
(:meth:`~arbiter.workers.threaded.ThreadedWorker.connection_done`) for the
next one, and exits when none comes in time.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from arbiter.io.blocking import serve_connection

__all__ = ["ConnectionThread"]


class ConnectionThread:
    """A thread serving connections handed to it, one at a time, until it idles out."""

    __slots__ = ("worker", "handoff", "handed", "thread")

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        # The next connection, (socket, peer, sockname), put there by the main thread.
        self.handoff: deque = deque()
        # Signalled (under the worker's lock) when a connection is handed over.
        self.handed = threading.Condition(worker.lock)
        self.thread = threading.Thread(target=self.run, name="arbiter-conn", daemon=True)

    def run(self) -> None:
        worker = self.worker
        handler = worker.handler
        observer = worker
        stopping = worker.stopping
        job: tuple | None = self.handoff.popleft()
        while job is not None:
            conn, peer, sockname = job
            try:
                serve_connection(handler, conn, peer, sockname, observer=observer,
                                 stopping=stopping, may_keep_alive=worker.nobody_waiting,
                                 tls=worker.tls)  # TLS: the handshake is done in this thread
            except BaseException:  # serve_connection logs; never let a thread die noisily
                worker.log.exception("connection thread failed serving %r", peer)
            finally:
                conn.close()
            job = worker.connection_done(self)
