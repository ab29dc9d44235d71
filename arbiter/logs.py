"""Logging for arbiter: the error log and the access log.

This module owns:

* ``setup_error_log()`` -- configures the ``arbiter.error`` logger (stderr, a
  file, or syslog) with a Gunicorn-like line format
  ``[2026-11-26 12:00:00 +0000] [PID] [LEVEL] message``.  The pid is taken at
  emit time, so a worker forked from the master logs its own pid.
* ``AccessLog`` -- one line per request in the Gunicorn/Apache ``%(atom)s``
  format language (``log.access_format`` in the config file, CONTRACT §2).
  The format is compiled once at construction; the default format has a
  dedicated fast path.  Every line is written with a single ``write(2)`` on an
  ``O_APPEND`` descriptor, so lines from several workers sharing one file do
  not interleave and nothing sits in a user-space buffer when a worker dies.
* ``reopen_log_files()`` -- USR1 / logrotate support: reopen every file this
  module opened in the current process (a file moved away is recreated at its
  configured path).
* ``log.json: true`` -- both logs write one JSON object per line instead
  (``setup_error_log(..., json=True)``, ``AccessLog(..., json=True)``):

  - error log: ``timestamp`` (ISO 8601, local time with its offset, ms),
    ``level`` (lower case), ``pid``, ``logger``, ``message``, ``exc_info``
    (the traceback text, only when there is one), ``worker`` (the worker
    number, only inside a worker);
  - access log: ``timestamp`` (when the line is written), ``level`` ("info"),
    ``logger`` ("arbiter.access"), ``pid``, ``worker`` (when known), ``method``,
    ``path`` (SCRIPT_NAME + PATH_INFO, percent-decoded), ``query``, ``status``
    (int), ``bytes`` (int), ``duration_us`` (int), ``queue_us`` (int: how long the
    request waited before the app started, see ``max_queue_time``), ``remote_addr``,
    ``user_agent``, ``referer``, ``request_id`` (the ``X-Request-ID`` the HTTP
    layer put into the environ), ``protocol``.  Absent values are ``null``.
    ``log.access_format`` is ignored in JSON mode.

  Output is pure ASCII (non-ASCII characters are ``\\uXXXX`` escapes), so a
  line can never be broken by the file or terminal encoding.  Through syslog,
  the JSON object follows the usual ``ident[pid]: `` tag.

* ``write_app_lines()`` -- what the app writes to ``environ["wsgi.errors"]``
  goes to the error log as the app wrote it, whatever ``log.level`` (as
  Gunicorn does): in text mode each line exactly as written (no timestamp,
  pid or level of ours); in JSON mode one object per line with
  ``timestamp``, ``pid``, ``worker`` (inside a worker), ``logger``
  (``"wsgi.errors"``) and ``message`` (the line) -- and no ``level``, since
  the app's line carries its own; through syslog ``ident[pid]: line`` (or the
  JSON object) at priority ``info``.  The lines of one ``write()`` go out in
  one locked write on stderr or a file, so lines from several threads never
  interleave mid-line.

The worker number comes from ``set_worker()`` (``AccessLog(worker=N)`` calls
it: the worker builds its AccessLog right after the fork).  The pid is cached
and refreshed after every ``os.fork()``.

It does not own signal handling (the master and workers call
``reopen_log_files()`` from their main loops) or the config parsing of the
``log:`` section.
"""

from __future__ import annotations

import errno
import json as _json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _enc

__all__ = [
    "DEFAULT_ACCESS_FORMAT",
    "ERROR_LOGGER_NAME",
    "WSGI_ERRORS_LOGGER",
    "AccessLog",
    "reopen_log_files",
    "set_worker",
    "setup_error_log",
    "write_app_lines",
]

ERROR_LOGGER_NAME = "arbiter.error"
WSGI_ERRORS_LOGGER = "wsgi.errors"  # the ``logger`` of what the app writes to wsgi.errors
DEFAULT_ACCESS_FORMAT = '%(h)s - - [%(t)s] "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)sus'

_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_FILE_MODE = 0o644  # the process umask still applies

# This process's pid (os.getpid() is a syscall; refreshed in every forked child)
# and worker number (None in the master; set by the worker at boot).
_pid = os.getpid()
_worker: int | None = None


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def set_worker(number: int | None) -> None:
    """Record this process's worker number for the JSON logs (None: not a worker)."""
    global _worker
    _worker = number


# (second, "2026-11-26T12:00:00", "+00:00") swapped as one tuple (thread-safe)
_iso_cache: tuple[int, str, str] = (-1, "", "")


def _iso_time(t: float) -> str:
    """ISO 8601 local time with milliseconds and offset: ``2026-11-26T12:00:00.123+00:00``."""
    global _iso_cache
    sec = int(t)
    cached = _iso_cache
    if sec != cached[0]:
        tm = time.localtime(sec)
        off = time.strftime("%z", tm)
        cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", tm), f"{off[:3]}:{off[3:]}")
        _iso_cache = cached
    return cached[1] + _MILLIS[int((t - sec) * 1000)] + cached[2]


_MILLIS = tuple(f".{ms:03d}" for ms in range(1000))


def _check_parent_dir(path: str, what: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OSError(
            errno.ENOENT,
            f"cannot open {what} {path!r}: directory {parent!r} does not exist",
        )


def _open_append_fd(path: str, what: str) -> int:
    """Open *path* for appending (creating it), as a raw close-on-exec fd."""
    _check_parent_dir(path, what)
    try:
        return os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE
        )
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open {what} {path!r}: {exc.strerror}") from exc


# --------------------------------------------------------------------------- error log


class _ErrorFormatter(logging.Formatter):
    """``[2026-11-26 12:00:00 +0000] [PID] [LEVEL] message``; pid read at emit time."""

    default_time_format = "%Y-%m-%d %H:%M:%S %z"

    def __init__(self, prefix: str = "", with_time: bool = True) -> None:
        super().__init__()
        self._prefix = prefix
        self._with_time = with_time

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime(self.default_time_format, time.localtime(record.created))

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        if record.__dict__.get("wsgi_errors"):
            return self.format_app_line(record.message)
        head = f"[{self.formatTime(record)}] " if self._with_time else ""
        return f"{self._prefix}{head}[{os.getpid()}] [{record.levelname}] {record.message}"

    def format_app_line(self, line: str) -> str:
        """A line the app wrote to ``wsgi.errors``: as written, nothing of ours on top."""
        return self._prefix + line


class _JsonErrorFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def __init__(self, prefix: bool = False, ident: str = "") -> None:
        super().__init__()
        self._ident = ident if prefix else None

    def format_app_line(self, line: str) -> str:
        """A line the app wrote to ``wsgi.errors``: no level of ours (see the module docstring)."""
        worker = f'"worker": {_worker}, ' if _worker is not None else ""
        doc = (f'{{"timestamp": "{_iso_time(time.time())}", "pid": {_pid}, {worker}'
               f'"logger": "{WSGI_ERRORS_LOGGER}", "message": {_enc(line)}}}')
        if self._ident is not None:
            return f"{self._ident}[{_pid}]: {doc}"
        return doc

    def format(self, record: logging.LogRecord) -> str:
        if record.__dict__.get("wsgi_errors"):
            return self.format_app_line(str(record.msg))
        doc: dict[str, object] = {
            "timestamp": _iso_time(record.created),
            "level": record.levelname.lower(),
            "pid": _pid,
        }
        if _worker is not None:
            doc["worker"] = _worker
        doc["logger"] = record.name
        try:
            doc["message"] = record.getMessage()
        except Exception as exc:  # noqa: BLE001 -- a bad %-format must still log something
            doc["message"] = f"{record.msg!r} % {record.args!r} (cannot format: {exc})"
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc_info"] = record.exc_text
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        line = _json.dumps(doc, default=str)
        if self._ident is not None:
            return f"{self._ident}[{_pid}]: {line}"
        return line


class _ReopenableFileHandler(logging.FileHandler):
    """A FileHandler (append mode, flushed per record) whose file can be reopened."""

    def __init__(self, path: str) -> None:
        _check_parent_dir(path, "error log")
        try:
            super().__init__(path, mode="a", encoding="utf-8", errors="backslashreplace")
        except OSError as exc:
            raise OSError(exc.errno, f"cannot open error log {path!r}: {exc.strerror}") from exc

    def reopen(self) -> None:
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            if old is not None:
                try:
                    old.close()
                except OSError:
                    pass
        finally:
            self.release()


def _syslog_handler(proc_name: str, json: bool = False) -> logging.Handler:
    address: str | tuple[str, int]
    address = "/dev/log" if os.path.exists("/dev/log") else ("127.0.0.1", 514)
    handler = logging.handlers.SysLogHandler(
        address=address, facility=logging.handlers.SysLogHandler.LOG_USER
    )
    # syslog stamps the time itself; the conventional tag is "ident[pid]: ".
    handler.ident = ""
    handler.setFormatter(
        _JsonErrorFormatter(prefix=True, ident=proc_name) if json else _SyslogFormatter(proc_name))
    return handler


class _SyslogFormatter(logging.Formatter):
    def __init__(self, proc_name: str) -> None:
        super().__init__()
        self._ident = proc_name

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        if record.__dict__.get("wsgi_errors"):  # as the app wrote it, at priority info
            return f"{self._ident}[{os.getpid()}]: {record.message}"
        return f"{self._ident}[{os.getpid()}]: [{record.levelname}] {record.message}"


def setup_error_log(
    level: str = "info", target: str = "-", proc_name: str = "arbiter", json: bool = False
) -> logging.Logger:
    """Configure and return the ``arbiter.error`` logger.

    *target*: ``"-"`` = stderr; ``"syslog"`` = syslog (``/dev/log`` when it
    exists, else UDP 127.0.0.1:514; facility user; ident *proc_name*); anything
    else is a file path opened in append mode (its directory must exist, else
    ``OSError`` naming the path).  *level* is one of debug, info, warning,
    error, critical (any case).  Calling again reconfigures: the previous
    handlers are closed and replaced.  *json*: one JSON object per line
    (see the module docstring) instead of the text format.
    """
    key = str(level).strip().lower()
    if key not in _LEVELS:
        raise ValueError(
            f"log level: expected one of {', '.join(_LEVELS)}, got {level!r}"
        )
    handler: logging.Handler
    formatter = _JsonErrorFormatter() if json else _ErrorFormatter()
    if target == "-":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
    elif target == "syslog":
        handler = _syslog_handler(proc_name, json)
    else:
        handler = _ReopenableFileHandler(target)
        handler.setFormatter(formatter)

    logger = logging.getLogger(ERROR_LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        try:
            old.close()
        except Exception:  # noqa: BLE001 -- a broken old handler must not block reconfiguring
            pass
    logger.addHandler(handler)
    logger.setLevel(_LEVELS[key])
    logger.propagate = False
    return logger


# --------------------------------------------------------------------------- wsgi.errors

_DIRECT_HANDLERS = (logging.StreamHandler, _ReopenableFileHandler)


def write_app_lines(logger: logging.Logger, lines: list[str]) -> None:
    """Write lines the app wrote to ``wsgi.errors`` to *logger*'s handlers, as written.

    Whatever the logger's level. Our text and JSON formats on stderr or a
    file get one locked write of all *lines* (threads never interleave
    mid-line); other handlers (syslog, foreign ones) get one INFO record per
    line, named ``wsgi.errors``. Losing a line never raises to the app.
    """
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            hook = getattr(handler.formatter, "format_app_line", None)
            if hook is not None and type(handler) in _DIRECT_HANDLERS:
                text = "".join([hook(line) + "\n" for line in lines])
                handler.acquire()
                try:
                    stream = handler.stream  # type: ignore[attr-defined]
                    if stream is not None:
                        stream.write(text)
                        stream.flush()
                except Exception:  # noqa: BLE001 -- disk full, closed pipe: drop the line
                    pass
                finally:
                    handler.release()
                continue
            for line in lines:
                record = logging.LogRecord(WSGI_ERRORS_LOGGER, logging.INFO, "", 0, line,
                                           None, None)
                record.wsgi_errors = True
                handler.handle(record)
        node = node.parent if node.propagate else None


# --------------------------------------------------------------------------- access log

# One value getter per atom: (environ, status, response_headers, body_bytes, duration_us) -> value
_Getter = Callable[[dict, str, list, int, int], object]

_ATOM_RE = re.compile(
    r"%%|%\((?P<key>[^)]*)\)(?P<flags>[#0\- +]*\d*(?:\.\d+)?)(?P<conv>[a-zA-Z])"
)
_NUMERIC_CONV = frozenset("diouxXeEfFgGc")

# (second, rendered) swapped as one tuple, so threads never pair one second with another's text
_time_cache: tuple[int, str] = (-1, "")


def _apache_time(duration_us: int) -> str:
    """Request start time, ``26/Nov/2026:12:00:00 +0000``, cached per second."""
    global _time_cache
    sec = int(time.time() - duration_us / 1_000_000)
    cached = _time_cache
    if sec == cached[0]:
        return cached[1]
    text = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(sec))
    _time_cache = (sec, text)
    return text


def _env(name: str) -> _Getter:
    def get(environ: dict, status: str, headers: list, body: int, dur: int) -> object:
        return environ.get(name) or "-"

    return get


def _request_line(environ: dict, status: str, headers: list, body: int, dur: int) -> object:
    return (
        f"{environ.get('REQUEST_METHOD', '-')} {_target(environ)} "
        f"{environ.get('SERVER_PROTOCOL', '-')}"
    )


def _target(environ: dict) -> str:
    uri = environ.get("RAW_URI")
    if uri:
        return uri
    path = environ.get("PATH_INFO") or "/"
    qs = environ.get("QUERY_STRING")
    return f"{path}?{qs}" if qs else path


def _req_header(name: str) -> _Getter:
    upper = name.strip().upper().replace("-", "_")
    key = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper
    return _env(key)


def _resp_header(name: str) -> _Getter:
    lname = name.strip().lower()

    def get(environ: dict, status: str, headers: list, body: int, dur: int) -> object:
        values = [v for k, v in headers if k.lower() == lname]
        return ", ".join(values) if values else "-"

    return get


_SIMPLE_ATOMS: dict[str, _Getter] = {
    "h": _env("REMOTE_ADDR"),
    "l": lambda e, s, h, b, d: "-",
    "u": _env("REMOTE_USER"),
    "t": lambda e, s, h, b, d: _apache_time(d),
    "r": _request_line,
    "m": _env("REQUEST_METHOD"),
    "U": _env("PATH_INFO"),
    "q": _env("QUERY_STRING"),
    "H": _env("SERVER_PROTOCOL"),
    "s": lambda e, s, h, b, d: s[:3] or "-",
    "B": lambda e, s, h, b, d: b,
    "b": lambda e, s, h, b, d: str(b) if b else "-",
    "f": _env("HTTP_REFERER"),
    "a": _env("HTTP_USER_AGENT"),
    "T": lambda e, s, h, b, d: d // 1_000_000,
    "M": lambda e, s, h, b, d: d // 1000,
    "D": lambda e, s, h, b, d: d,
    "L": lambda e, s, h, b, d: f"{d / 1_000_000:.6f}",
    "p": lambda e, s, h, b, d: os.getpid(),
    "Q": lambda e, s, h, b, d: _queue_us(e),
}
_NUMERIC_ATOMS = frozenset("BTMDp")

_BRACED_RE = re.compile(r"\{(?P<name>[^}]*)\}(?P<kind>[ioe])")


def _queue_us(environ: dict) -> object:
    """``%(Q)s``: microseconds the request waited before the app started ('-' unknown)."""
    queued = environ.get("arbiter.queue_time")
    return "-" if queued is None else int(queued * 1_000_000)


def _missing(e: dict, s: str, h: list, b: int, d: int) -> object:
    return "-"


def _getter_for(key: str) -> _Getter:
    if key in _SIMPLE_ATOMS:
        return _SIMPLE_ATOMS[key]
    m = _BRACED_RE.fullmatch(key)
    if m:
        name, kind = m.group("name"), m.group("kind")
        if kind == "i":
            return _req_header(name)
        if kind == "o":
            return _resp_header(name)
        return _env(name)
    return _missing  # unknown atom: rendered as '-', like Gunicorn


def _compile(fmt: str) -> tuple[str, tuple[_Getter, ...]]:
    """Turn ``%(key)s`` atoms into positional ``%s`` plus one getter per atom."""
    out: list[str] = []
    getters: list[_Getter] = []
    pos = 0
    for m in _ATOM_RE.finditer(fmt):
        out.append(fmt[pos : m.start()].replace("%", "%%"))
        pos = m.end()
        if m.group(0) == "%%":
            out.append("%%")
            continue
        key, flags, conv = m.group("key"), m.group("flags"), m.group("conv")
        if conv in _NUMERIC_CONV and key not in _NUMERIC_ATOMS:
            conv = "s"  # a string atom (or '-') can't take a numeric conversion
        out.append(f"%{flags}{conv}")
        getters.append(_getter_for(key))
    out.append(fmt[pos:].replace("%", "%%"))
    return "".join(out), tuple(getters)


_access_logs: weakref.WeakSet[AccessLog] = weakref.WeakSet()

_codes: dict[str, str] = {}  # "200 OK" -> "200" (bounded: apps may invent reason phrases)


def _status_code(status: str | None) -> str:
    """The status line's code as JSON text (``200``, or ``null``)."""
    code = _codes.get(status)  # type: ignore[arg-type]
    if code is None:
        head = str(status or "")[:3]
        code = str(int(head)) if head.isdigit() else "null"
        if len(_codes) < 512:
            _codes[status] = code  # type: ignore[index]
    return code


class AccessLog:
    """One line per request, in the ``%(atom)s`` format (see the module docstring).

    *target*: ``None`` = off, ``"-"`` = stdout, else a file path opened for
    appending (created if missing; its directory must exist).
    """

    enabled: bool

    def __init__(self, target: str | None, fmt: str = DEFAULT_ACCESS_FORMAT, *,
                 json: bool = False, worker: int | None = None) -> None:
        """*json*: one JSON object per line (*fmt* is then ignored).  *worker*:
        this process's worker number; also recorded with ``set_worker()`` so
        the JSON error log carries it (the worker builds its AccessLog at boot)."""
        self.target = target
        self.fmt = fmt
        self.json = json
        if worker is not None:
            set_worker(worker)
        self._json_pid = -1
        self._json_head = ""
        self.enabled = target is not None
        self._fd = -1
        self._stream = None  # fallback when stdout has no usable fd (e.g. captured)
        self._lock = threading.Lock()
        self._template, self._getters = _compile(fmt)
        self._fast = fmt == DEFAULT_ACCESS_FORMAT
        if target is None:
            return
        if target == "-":
            try:
                self._fd = sys.stdout.fileno()
                sys.stdout.flush()
            except (AttributeError, OSError, ValueError):
                self._stream = sys.stdout
        else:
            self._fd = _open_append_fd(target, "access log")
            _access_logs.add(self)

    # -- formatting ---------------------------------------------------------

    def format(
        self,
        environ: dict,
        status: str,
        response_headers: list[tuple[str, str]],
        body_bytes: int,
        duration_us: int,
    ) -> str:
        """The line for one request, without the trailing newline."""
        if self.json:
            try:
                return self._format_json(environ, status, body_bytes, duration_us)
            except (TypeError, ValueError):  # something odd in the environ: the slow path
                return _json.dumps(self.json_fields(environ, status, body_bytes, duration_us),
                                   default=str)
        if self._fast:
            get = environ.get
            uri = get("RAW_URI")
            if not uri:
                uri = get("PATH_INFO") or "/"
                qs = get("QUERY_STRING")
                if qs:
                    uri = f"{uri}?{qs}"
            return (
                f'{get("REMOTE_ADDR") or "-"} - - [{_apache_time(duration_us)}] '
                f'"{get("REQUEST_METHOD", "-")} {uri} {get("SERVER_PROTOCOL", "-")}" '
                f'{status[:3] or "-"} {body_bytes or "-"} '
                f'"{get("HTTP_REFERER") or "-"}" "{get("HTTP_USER_AGENT") or "-"}" '
                f"{duration_us}us"
            )
        args = environ, status, response_headers, body_bytes, duration_us
        return self._template % tuple([g(*args) for g in self._getters])

    def _fixed_json(self) -> str:
        """The fields that are the same on every line of this process."""
        self._json_pid = _pid
        worker = f'"worker": {_worker}, ' if _worker is not None else ""
        self._json_head = f'"level": "info", "logger": "arbiter.access", "pid": {_pid}, {worker}'
        return self._json_head

    def _format_json(self, environ: dict, status: str, body_bytes: int, duration_us: int) -> str:
        """The fast path: precomputed constant fields, C-escaped strings, one f-string."""
        get = environ.get
        head = self._json_head if self._json_pid == _pid else self._fixed_json()
        method = get("REQUEST_METHOD")
        path = get("SCRIPT_NAME", "") + get("PATH_INFO", "")
        query = get("QUERY_STRING")
        addr = get("REMOTE_ADDR")
        agent = get("HTTP_USER_AGENT")
        referer = get("HTTP_REFERER")
        rid = get("HTTP_X_REQUEST_ID")
        proto = get("SERVER_PROTOCOL")
        queued = get("arbiter.queue_time")
        return (
            f'{{"timestamp": "{_iso_time(time.time())}", {head}'
            f'"method": {_enc(method) if method else "null"}, '
            f'"path": {_enc(path) if path else "null"}, '
            f'"query": {_enc(query) if query else "null"}, '
            f'"status": {_status_code(status)}, '
            f'"bytes": {body_bytes}, "duration_us": {duration_us}, '
            f'"queue_us": {"null" if queued is None else int(queued * 1_000_000)}, '
            f'"remote_addr": {_enc(addr) if addr else "null"}, '
            f'"user_agent": {_enc(agent) if agent else "null"}, '
            f'"referer": {_enc(referer) if referer else "null"}, '
            f'"request_id": {_enc(rid) if rid else "null"}, '
            f'"protocol": {_enc(proto) if proto else "null"}}}'
        )

    def json_fields(self, environ: dict, status: str | None, body_bytes: int,
                    duration_us: int) -> dict[str, object]:
        """The JSON line as a dict (the slow path, and the reference for the fast one)."""
        get = environ.get
        doc: dict[str, object] = {
            "timestamp": _iso_time(time.time()), "level": "info", "logger": "arbiter.access",
            "pid": _pid,
        }
        if _worker is not None:
            doc["worker"] = _worker
        code = str(status or "")[:3]
        path = f"{get('SCRIPT_NAME') or ''}{get('PATH_INFO') or ''}"
        doc.update({
            "method": get("REQUEST_METHOD") or None,
            "path": path or None,
            "query": get("QUERY_STRING") or None,
            "status": int(code) if code.isdigit() else None,
            "bytes": body_bytes, "duration_us": duration_us,
            "queue_us": (None if get("arbiter.queue_time") is None
                         else int(get("arbiter.queue_time") * 1_000_000)),
            "remote_addr": get("REMOTE_ADDR") or None,
            "user_agent": get("HTTP_USER_AGENT") or None,
            "referer": get("HTTP_REFERER") or None,
            "request_id": get("HTTP_X_REQUEST_ID") or None,
            "protocol": get("SERVER_PROTOCOL") or None,
        })
        return doc

    # -- output -------------------------------------------------------------

    def log(
        self,
        environ: dict,
        status: str,
        response_headers: list[tuple[str, str]],
        body_bytes: int,
        duration_us: int,
    ) -> None:
        """Write the line for one request (one ``write(2)``, nothing buffered)."""
        if not self.enabled:
            return
        try:
            line = self.format(environ, status, response_headers, body_bytes, duration_us)
        except Exception:  # noqa: BLE001 -- a log line must never fail a request
            logging.getLogger(ERROR_LOGGER_NAME).exception("access log: cannot format a line")
            return
        self._write(line + "\n")

    def _write(self, text: str) -> None:
        if self._stream is not None:
            with self._lock:
                self._stream.write(text)
                self._stream.flush()
            return
        data = text.encode("utf-8", "backslashreplace")
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # short write: pipes, signals
                data = data[written:]
                written = os.write(self._fd, data)
        except OSError:
            pass  # disk full / closed pipe: losing a log line must not fail the request

    def reopen(self) -> None:
        """Reopen the file at its configured path (recreated if moved away).

        The new file replaces the old one on the *same* descriptor number
        (``dup2``), so a thread writing concurrently never sees a closed fd.
        On failure the old file is kept and the error is logged.
        """
        if not self.enabled or self.target in (None, "-") or self._fd < 0:
            return
        try:
            new = _open_append_fd(self.target, "access log")
        except OSError as exc:
            logging.getLogger(ERROR_LOGGER_NAME).error("access log: reopen failed: %s", exc)
            return
        try:
            os.dup2(new, self._fd, inheritable=False)
        finally:
            os.close(new)

    def close(self) -> None:
        """Stop logging and close the file (stdout is left open)."""
        self.enabled = False
        _access_logs.discard(self)
        fd, self._fd = self._fd, -1
        if self.target not in (None, "-") and fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        self._stream = None

    def __repr__(self) -> str:
        return f"AccessLog(target={self.target!r}, enabled={self.enabled})"


# --------------------------------------------------------------------------- reopen


def reopen_log_files() -> None:
    """Reopen every log file this module opened, in this process (USR1 / logrotate).

    Covers the error log's file handler and every open ``AccessLog`` file.  A
    file moved away is recreated at its configured path.  Call it from a main
    loop, not from inside a signal handler (it takes the logging locks).
    """
    for handler in list(logging.getLogger(ERROR_LOGGER_NAME).handlers):
        if isinstance(handler, _ReopenableFileHandler):
            try:
                handler.reopen()
            except OSError as exc:
                logging.getLogger(ERROR_LOGGER_NAME).error(
                    "error log: reopen of %s failed: %s", handler.baseFilename, exc
                )
    for access_log in list(_access_logs):
        access_log.reopen()


def open_fds(logger: logging.Logger) -> list[int]:
    """The file descriptors a logger writes to (files, streams, syslog sockets):
    what daemon mode must keep open when it closes everything else."""
    fds: list[int] = []
    for handler in logger.handlers:
        for holder in (getattr(handler, "stream", None), getattr(handler, "socket", None)):
            if holder is None:
                continue
            try:
                fds.append(holder.fileno())
            except (AttributeError, OSError, ValueError):
                continue
    return fds
