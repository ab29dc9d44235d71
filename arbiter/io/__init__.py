"""arbiter's I/O layer: everything that touches a client socket.

* :mod:`arbiter.io.transport` -- plain and TLS, blocking and non-blocking:
  reads, writes within a budget, ``sendfile``, the TLS handshake step and
  close alert, the half-close of a linger;
* :mod:`arbiter.io.blocking` -- :func:`~arbiter.io.blocking.serve_connection`,
  the driver for a connection with its own thread or process (forked,
  preforked, threaded).

The HTTP package (:mod:`arbiter.http`) opens no socket: what to do with a
connection is decided by its sans-IO :class:`~arbiter.http.lifecycle.Lifecycle`,
and these modules carry it out.
"""
