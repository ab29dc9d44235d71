"""How long a request waited before a worker started it: the clocks it is read from.

Owns what the HTTP layer knows of a request's queue start, both wall-clock
seconds:

* the kernel's receive timestamp of the request's first bytes, which the
  drivers read with the bytes (:mod:`arbiter.io.stamps`: ``SO_TIMESTAMPNS``
  on the listener) and hand to
  :meth:`~arbiter.http.lifecycle.Lifecycle.received`;
* ``X-Request-Start`` from a trusted proxy (``forwarded_allow_ips``), as
  nginx (``t=${msec}``), Heroku and New Relic write it: ``t=`` and a number in
  seconds, milliseconds or microseconds since the epoch (told apart by their
  size), :func:`parse_request_start`. It includes the time spent in the proxy
  and on the way, so it is preferred when present.

The lifecycle (:meth:`arbiter.http.lifecycle.Lifecycle.admit`) turns these
into the queue time, the ``arbiter_request_queue_seconds`` histogram and the
``max_queue_time`` load shedding.
"""

from __future__ import annotations

__all__ = ["REQUEST_START", "parse_request_start"]

REQUEST_START = b"x-request-start"


def parse_request_start(value: bytes) -> float | None:
    """An ``X-Request-Start`` value (``t=1700000000.123``, ``t=1700000000123`` ms,
    ``t=1700000000123456`` µs, or the number alone) as epoch seconds; None if it is
    not one."""
    value = value.strip()
    if value[:2] in (b"t=", b"T="):
        value = value[2:]
    if not value or len(value) > 32:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not number > 0 or number != number or number == float("inf"):
        return None
    if number > 1e14:  # microseconds (until the year 5138)
        return number / 1e6
    if number > 1e11:  # milliseconds
        return number / 1e3
    return number
