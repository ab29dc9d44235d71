"""systemd integration: readiness notification and socket activation.

Owns the two conversations arbiter has with systemd, implemented directly
(no systemd library):

* ``sd_notify``: :class:`Notifier` sends ``READY=1``, ``RELOADING=1``,
  ``STOPPING=1``, ``STATUS=``, ``MAINPID=`` and ``WATCHDOG=1`` as one datagram
  each on the ``AF_UNIX``/``SOCK_DGRAM`` socket named by ``NOTIFY_SOCKET``
  (a filesystem path, or ``@name`` for an abstract socket). Without
  ``NOTIFY_SOCKET`` every call is a no-op. A send never raises: the server
  must not die because systemd went away.
* ``sd_listen_fds``: :func:`listen_fds` reads ``LISTEN_PID`` /
  ``LISTEN_FDS`` / ``LISTEN_FDNAMES`` and describes the sockets systemd
  passed from fd 3 on; :func:`activated_bind_addresses` turns them into the
  ``fd://N`` bind strings :mod:`arbiter.sockets` already understands (an
  ``fd://`` listener is never unlinked, so an activated unix socket file
  stays with systemd, who owns it).

Who may talk to systemd: only the master. A :class:`Notifier` remembers the
pid that created it and is silent in any other process, so workers that
inherit the master's notifier through ``fork`` cannot notify by accident, and
a worker should also call :func:`clear_environ` on ``os.environ`` right after
the fork so nothing it runs (the app, its subprocesses) sees
``NOTIFY_SOCKET`` / ``WATCHDOG_*``. The master itself keeps them: a USR2
upgrade execs a new master that needs them to send ``MAINPID=`` (see
:func:`upgrade_environ`).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

SD_LISTEN_FDS_START = 3

NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

SEND_TIMEOUT = 1.0  # seconds a notification may block if systemd's queue is full


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _notify_address(value: str) -> bytes | None:
    """The sendto() address for a NOTIFY_SOCKET value, or None if unsupported."""
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None  # relative paths, vsock:..., garbage: not ours to guess


class Notifier:
    """A tiny sd_notify for the master process.

    Build it with :meth:`from_environ`. Every method returns True when the
    datagram was sent, False when notification is off or the send failed
    (logged at debug level); none of them raises.
    """

    def __init__(self, address: bytes | None, watchdog_usec: int | None = None,
                 logger: logging.Logger | None = None,
                 send_timeout: float = SEND_TIMEOUT) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.log = logger
        self.send_timeout = send_timeout
        self.pid = os.getpid()  # the only process allowed to send
        self.handed_over = False  # a USR2-upgraded master speaks for the service now
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None,
                     logger: logging.Logger | None = None) -> Notifier:
        """Read NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID (default: ``os.environ``).

        The environment is not modified (see :func:`clear_environ`).
        """
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        address = _notify_address(value) if value else None
        if value and address is None and logger is not None:
            logger.debug("NOTIFY_SOCKET=%r is not a path or @abstract name: "
                         "not notifying systemd", value)
        return cls(address, _watchdog_usec(env), logger)

    @property
    def enabled(self) -> bool:
        """True when this process can notify systemd."""
        return (self.address is not None and os.getpid() == self.pid
                and not self.handed_over)

    def __bool__(self) -> bool:
        return self.enabled

    # -- sending -------------------------------------------------------------
    def send_raw(self, text: str) -> bool:
        """Send ``text`` (newline-separated ``KEY=VALUE`` lines) as one datagram."""
        if not self.enabled:
            return False
        assert self.address is not None
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # not inheritable
                sock.settimeout(self.send_timeout)
                self._sock = sock
            self._sock.sendto(text.encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if self.log is not None:
                self.log.debug("sd_notify %r failed: %s", text.split("\n", 1)[0], exc)
            return False
        return True

    def send(self, **fields: Any) -> bool:
        """Send ``KEY=value`` fields in one datagram, e.g. ``send(READY=1, STATUS="ok")``.

        A value of None leaves its field out; newlines in values become spaces.
        """
        lines = [f"{key}={_one_line(value)}" for key, value in fields.items()
                 if value is not None]
        if not lines:
            return False
        return self.send_raw("\n".join(lines))

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished, or a reload finished (committed or rolled back)."""
        return self.send(READY=1, STATUS=status)

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (what ``Type=notify-reload`` requires)."""
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS=status)

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: a stop began."""
        return self.send(STOPPING=1, STATUS=status)

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status``."""
        return self.send(STATUS=text)

    def mainpid(self, pid: int | None = None, *, ready: bool = False,
                status: str | None = None) -> bool:
        """``MAINPID=pid`` (default: this process), optionally with ``READY=1``.

        A USR2-upgraded master sends it (with ``ready=True``) once its first
        generation serves, so systemd tracks it instead of the old master;
        this needs ``NotifyAccess=all`` in the unit, as the new master is not
        the main process when it sends.
        """
        return self.send(MAINPID=os.getpid() if pid is None else pid,
                         READY=1 if ready else None, STATUS=status)

    def hand_over(self) -> None:
        """Go silent: the USR2-upgraded master has taken over (it sent ``MAINPID=``).

        From then on the old master must not send ``STOPPING=1`` (its TERM
        after WINCH would make systemd stop the whole service), nor
        ``READY=1``/``STATUS=``/``WATCHDOG=1``.
        """
        self.handed_over = True

    def reclaim(self, status: str | None = None) -> bool:
        """Speak again after :meth:`hand_over`: the new master died, the upgrade is
        rolled back, so this master is systemd's main process again."""
        self.handed_over = False
        return self.mainpid(ready=True, status=status)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping of ``WatchdogSec=``."""
        return self.send(WATCHDOG=1)

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for more time in the current start/stop phase."""
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of WATCHDOG_USEC), or None if off.

        None also when WATCHDOG_PID names another process, or in a process
        other than the one that built this notifier.
        """
        if not self.enabled or not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(value: Any) -> str:
    return str(value).replace("\r", " ").replace("\n", " ")


def _watchdog_usec(env: MutableMapping[str, str]) -> int | None:
    """WATCHDOG_USEC when it applies to this process (sd_watchdog_enabled semantics)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec)


def clear_environ(environ: MutableMapping[str, str]) -> None:
    """Drop NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from ``environ``.

    Call it with ``os.environ`` in every worker right after the fork: a worker
    is never systemd's main process and must not notify (with
    ``NotifyAccess=all`` systemd would believe a stray ``READY=1`` or
    ``STOPPING=1`` from the app or its subprocesses). The master keeps them.
    """
    for key in NOTIFY_VARS:
        environ.pop(key, None)


def upgrade_environ(environ: MutableMapping[str, str], pid: int) -> dict[str, str]:
    """The environment for a USR2-upgraded master exec'd as process ``pid``.

    A copy of ``environ`` in which WATCHDOG_PID, if systemd set it, names the
    new master, so that its :meth:`Notifier.watchdog_interval` is not None
    (call this in the forked child, with ``os.getpid()``, before exec).
    NOTIFY_SOCKET stays so the new master can send ``MAINPID=``; LISTEN_* are
    dropped (the upgrade passes the listeners its own way).
    """
    env = dict(environ)
    if "WATCHDOG_PID" in env:
        env["WATCHDOG_PID"] = str(pid)
    for key in LISTEN_VARS:
        env.pop(key, None)
    return env


# -- socket activation ----------------------------------------------------------

@dataclass(frozen=True)
class ActivatedSocket:
    """One file descriptor passed by systemd socket activation."""

    fd: int
    name: str  # from LISTEN_FDNAMES (FileDescriptorName=), else "unknown"
    family: int | None  # socket.AF_*, None when the fd is not a socket (ListenFIFO= ...)
    type: int | None  # socket.SOCK_*, None when not a socket
    listening: bool  # a stream socket in the listening state (SO_ACCEPTCONN)

    @property
    def bind(self) -> str:
        """The ``fd://N`` bind address for :mod:`arbiter.sockets`."""
        return f"fd://{self.fd}"


def listen_fds(environ: MutableMapping[str, str] | None = None,
               unset: bool = True) -> list[ActivatedSocket]:
    """The sockets systemd passed to this process (``sd_listen_fds_with_names``).

    Returns an empty list unless LISTEN_PID equals ``os.getpid()`` and
    LISTEN_FDS is a positive count; the fds are then ``3 .. 3+N-1``. Names
    come from LISTEN_FDNAMES (colon-separated); when it is missing or does not
    have exactly N entries, every name is ``"unknown"`` (as systemd's own
    default). Raises ValueError when LISTEN_PID or LISTEN_FDS is set but not
    a number, as sd_listen_fds would fail.

    The fds are marked close-on-exec, as sd_listen_fds does: workers get them
    by ``fork``, which ignores that flag, and :mod:`arbiter.sockets` marks an
    ``fd://`` listener inheritable again where the master wants exec
    inheritance (the USR2 upgrade).

    With ``unset`` (the default), LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are
    removed from ``environ`` whatever the outcome, so no child reinterprets
    them.
    """
    env = os.environ if environ is None else environ
    try:
        pid_text = env.get("LISTEN_PID", "")
        count_text = env.get("LISTEN_FDS", "")
        names_text = env.get("LISTEN_FDNAMES")
        if not pid_text or not count_text:
            return []
        if not pid_text.isdigit():
            raise ValueError(f"LISTEN_PID={pid_text!r}: expected a process id")
        if not count_text.isdigit():
            raise ValueError(f"LISTEN_FDS={count_text!r}: expected a number of file descriptors")
        if int(pid_text) != os.getpid():
            return []  # meant for another process (we were exec'd by it)
        count = int(count_text)
        names = names_text.split(":") if names_text is not None else []
        if len(names) != count:
            names = ["unknown"] * count
        result = []
        for i in range(count):
            fd = SD_LISTEN_FDS_START + i
            os.set_inheritable(fd, False)  # raises OSError (EBADF) if systemd lied
            result.append(_describe(fd, names[i] or "unknown"))
        return result
    finally:
        if unset:
            for key in LISTEN_VARS:
                env.pop(key, None)


def _describe(fd: int, name: str) -> ActivatedSocket:
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        return ActivatedSocket(fd, name, None, None, False)
    sock = socket.socket(fileno=fd)  # detects family and type; detached below
    try:
        family, kind = int(sock.family), int(sock.type)
        try:
            listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        except OSError:
            listening = False
    finally:
        sock.detach()
    return ActivatedSocket(fd, name, family, kind, listening and kind == socket.SOCK_STREAM)


def activated_bind_addresses(sockets: Iterable[ActivatedSocket]) -> list[str]:
    """``fd://N`` for each activated listening stream socket, in fd order.

    Anything else systemd passed (datagram sockets, FIFOs, ``Accept=yes``
    connections) cannot be an HTTP listener and is left out; compare with the
    input to warn about it.
    """
    return [s.bind for s in sorted(sockets, key=lambda s: s.fd) if s.listening]
