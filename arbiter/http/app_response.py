"""One call of a WSGI app and its response, pulled piece by piece; no socket in sight.

Owns :class:`AppResponse` -- ``start_response`` and its validation, the
response head (framing, keep-alive, ``Date``/``Server``), the body framing
(Content-Length, chunked, or delimited by the close), ``write()``,
``wsgi.file_wrapper`` (:class:`FileWrapper`, sent as a :class:`FileSegment`
when the driver can ``sendfile``), turning app errors into a 500, and the
access log line -- and the small types around it: :class:`ResponseOutcome`,
:class:`ClientDisconnected`, :class:`RequestBodyError`.

A driver pulls::

    response = AppResponse(handler, environ, request, may_keep_alive, started, files=True)
    response.start()                      # calls the app
    while (piece := response.pull()) is not None:
        ... write piece (bytes), or sendfile a FileSegment and report file_sent(n) ...
    outcome = response.finish()           # closes the iterable, logs the access line

A blocking driver writes each piece as it comes; a reactor pulls the next
piece only when the socket has drained the last one, so a response is read
from the app no faster than the client reads it and memory stays bounded.
The first piece carries the head and, when it is small, the first body bytes
with it (one write on the hot path).

What the client never gets (RFC 9110 / 9112): an interim 1xx status as the
final answer (the app's ``start_response("103 ...")`` is a 500), a
Content-Length on 204 or 304, the same Content-Length twice (two equal ones
are sent once, two different ones are a 500), a status line without a reason
phrase (``"200"`` is sent as ``"200 OK"``), a body on HEAD, 204 or 304, more
body bytes than the declared Content-Length (the extra is cut and the
connection closed), or framing headers of the app's (``Transfer-Encoding``,
``Connection``, ``Keep-Alive``, ``Upgrade``, ``TE``, ``Trailer``: framing is
ours).
"""

from __future__ import annotations

import io
import os
import re
import stat
import time
from collections.abc import Callable
from typing import Any

from arbiter.http.protocol import ProtocolError, Request
from arbiter.http.response import (
    LAST_CHUNK,
    REASONS,
    error_response,
    frame_chunk,
    http_date_line,
)

__all__ = ["AppResponse", "ClientDisconnected", "FileSegment", "FileWrapper",
           "RequestBodyError", "ResponseOutcome"]


# -- errors ---------------------------------------------------------------------
class ClientDisconnected(OSError):
    """The client went away (reset, broken pipe, EOF inside a body, a stalled transfer)."""


class RequestBodyError(OSError):
    """The request body broke the protocol or a limit while the app read it."""

    def __init__(self, error: ProtocolError) -> None:
        super().__init__(f"{error.status} {error.reason}")
        self.error = error
        self.status = error.status


class _AppError(Exception):
    """The app broke the WSGI contract (bad status, bad header, bad body type)."""


# -- file wrapper ---------------------------------------------------------------------
class FileWrapper:
    """``wsgi.file_wrapper``: sent with sendfile() when the driver can, else read in blocks."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


class FileSegment:
    """``count`` bytes of ``file`` from ``offset``, for the driver to ``sendfile``."""

    __slots__ = ("file", "offset", "count")

    def __init__(self, file: Any, offset: int, count: int) -> None:
        self.file = file
        self.offset = offset
        self.count = count


class ResponseOutcome:
    """What happened to one response."""

    __slots__ = ("status", "keep_alive", "body_bytes", "aborted")

    def __init__(self, status: int, keep_alive: bool, body_bytes: int, aborted: bool) -> None:
        self.status = status  # status code sent (0 if nothing could be sent)
        self.keep_alive = keep_alive  # the connection may serve another request
        self.body_bytes = body_bytes
        self.aborted = aborted  # the client went away during the response

    def __repr__(self) -> str:
        return (f"ResponseOutcome(status={self.status}, keep_alive={self.keep_alive}, "
                f"body_bytes={self.body_bytes}, aborted={self.aborted})")


# -- response validation ---------------------------------------------------------------
_STATUS_RE = re.compile(r"([1-9][0-9][0-9])(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS_RE = re.compile(r"[0-9]{1,19}")
_CL, _DROP, _CONNECTION, _DATE, _SERVER = range(5)
_PLAIN = -1  # an ordinary response header
# Response headers already checked -- (name, value) -> (their kind, their line as sent) --
# and statuses already checked, status -> (status as sent, code, status line). Most apps
# send the same few again and again. An ASGI app's headers are bytes: (name, value) ->
# (kind, line, the header as text).
_CHECKED_HEADERS: dict[tuple[str, str], tuple[int, bytes]] = {}
_CHECKED_RAW: dict[tuple[bytes, bytes], tuple[int, bytes, tuple[str, str]]] = {}
_CHECKED_STATUSES: dict[str, tuple[str, int, bytes]] = {}
_CHECKED_MAX = 4096
_RESPONSE_SPECIAL = {
    "content-length": _CL,
    "connection": _CONNECTION,
    "transfer-encoding": _DROP,  # framing is ours
    "keep-alive": _DROP,
    "proxy-connection": _DROP,
    "te": _DROP,
    "trailer": _DROP,
    "upgrade": _DROP,
    "date": _DATE,
    "server": _SERVER,
}
_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)
_SINGLE_SEND_MAX = 256 * 1024  # head + body copied into one piece below this size
_STATUS_TEXT = {code: str(code) for code in range(200, 600)}  # an ASGI status as text
_SERVER_LINES: dict[str, bytes] = {}  # server_software -> its Server line


def _check_status(status: Any) -> tuple[str, int, bytes]:
    """A WSGI status, checked: (the status line's text, its code, the status line);
    remembered."""
    match = _STATUS_RE.fullmatch(status) if type(status) is str else None
    if match is None:
        raise _AppError(f"invalid status {status!r}")
    code = int(match.group(1))
    if code < 200:
        raise _AppError(f"status {status!r} is an interim (1xx) response; a WSGI app must "
                        f"answer with a final status")
    text = status if match.group(2) else f"{code} {REASONS.get(code, 'Unknown')}"
    try:
        line = f"HTTP/1.1 {text}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise _AppError(f"status {status!r} is not latin-1") from None
    checked = (text, code, line)
    if len(_CHECKED_STATUSES) >= _CHECKED_MAX:
        _CHECKED_STATUSES.clear()
    _CHECKED_STATUSES[status] = checked
    return checked


def _check_header(item: tuple) -> tuple[int, bytes]:
    """A response header (a tuple of str), checked: its kind (``_PLAIN`` or special) and
    its line; remembered."""
    if len(item) != 2:
        raise _AppError(f"invalid response header {item!r}")
    name, value = item
    if type(name) is not str or type(value) is not str:
        raise _AppError(f"response header names and values must be str: {item!r}")
    checked = (_header_kind(name, value), _header_line(name, value))
    if len(_CHECKED_HEADERS) >= _CHECKED_MAX:
        _CHECKED_HEADERS.clear()
    _CHECKED_HEADERS[item] = checked
    return checked


def _check_raw_header(pair: Any) -> tuple[int, bytes, tuple[str, str]]:
    """An ASGI response header (a pair of bytes), checked: its kind, its line and the
    header as text (latin-1); remembered when it is a tuple of bytes."""
    try:
        name, value = pair
    except (TypeError, ValueError):
        raise _AppError(f"invalid response header {pair!r}") from None
    if not isinstance(name, bytes | bytearray) or not isinstance(value, bytes | bytearray):
        raise _AppError(f"response header names and values must be bytes: {pair!r}")
    text = (name.decode("latin-1"), value.decode("latin-1"))
    checked = (_header_kind(*text), bytes(name) + b": " + bytes(value) + b"\r\n", text)
    if type(pair) is tuple and type(name) is bytes and type(value) is bytes:
        if len(_CHECKED_RAW) >= _CHECKED_MAX:
            _CHECKED_RAW.clear()
        _CHECKED_RAW[pair] = checked
    return checked


def _header_kind(name: str, value: str) -> int:
    if _HEADER_NAME_RE.fullmatch(name) is None or _BAD_VALUE_RE.search(value):
        raise _AppError(f"invalid response header {(name, value)!r}")
    return _RESPONSE_SPECIAL.get(name.lower(), _PLAIN)


def _header_line(name: str, value: str) -> bytes:
    try:
        return f"{name}: {value}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise _AppError(f"response header not latin-1: {(name, value)!r}") from None


def _server_line(server_software: str) -> bytes:
    line = _SERVER_LINES.get(server_software)
    if line is None:
        line = _SERVER_LINES[server_software] = _header_line("Server", server_software)
    return line


class AppResponse:
    """One run of the app; its response pulled with :meth:`pull` (see the module docstring).

    ``handler`` is the worker's :class:`~arbiter.http.wsgi.WSGIHandler` (its app,
    error log, access log and ``server_software``)."""

    __slots__ = (
        "handler", "environ", "request", "may_keep_alive", "started", "files",
        "status", "code", "status_line", "headers", "lines", "app_lines", "content_length",
        "close_requested", "has_date", "has_server", "head_sent", "framing", "keep_alive", "left", "body_bytes", "done",
        "final_headers", "result", "iterator", "pending", "finished", "aborted", "error",
    )

    def __init__(self, handler: Any, environ: dict, request: Request,
                 may_keep_alive: Callable[[], bool] | None = None,
                 started: float | None = None, files: bool = False) -> None:
        self.handler = handler
        self.environ = environ
        self.request = request
        self.may_keep_alive = may_keep_alive
        self.started = time.perf_counter() if started is None else started
        self.files = files  # the driver can send a FileSegment (sendfile)
        # start_response sets code, status_line, headers, lines, content_length,
        # close_requested, has_date and has_server; the head sets framing, left,
        # app_lines and final_headers; start() sets
        # iterator. Only what may be read before those is set here (the hot path).
        self.status: str | None = None
        self.head_sent = False
        self.keep_alive = False
        self.body_bytes = 0
        self.done = False  # no more body is to be sent
        self.result: Any = None
        self.pending: list[bytes | FileSegment] = []
        self.finished = False  # the last piece has been queued
        self.aborted = False  # the client went away
        self.error = False  # the app failed after the head went out

    # -- the app's side ---------------------------------------------------------------
    def start_response(self, status: str, headers: list, exc_info: Any = None):
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        checked = _CHECKED_STATUSES.get(status) if type(status) is str else None
        if checked is None:
            checked = _check_status(status)
        if type(headers) is not list:
            raise _AppError(f"response headers must be a list, not {type(headers).__name__}")
        lines = []
        specials = None
        for item in headers:
            if type(item) is not tuple:
                raise _AppError(f"invalid response header {item!r}")
            try:
                entry = _CHECKED_HEADERS.get(item)
            except TypeError:  # something unhashable in it: not a pair of str
                entry = None
            if entry is None:
                entry = _check_header(item)
            lines.append(entry[1])
            if entry[0] != _PLAIN:
                if specials is None:
                    specials = []
                specials.append((len(lines) - 1, entry[0], item[1]))
        self._adopt(checked, headers, lines, specials)
        return self.write

    def start_raw(self, code: int, headers: Any) -> None:
        """The head of an app that sends its response itself (ASGI
        ``http.response.start``): the status code, the headers as pairs of bytes
        (latin-1); checked as :meth:`start_response` checks a WSGI app's."""
        if self.status is not None:
            raise AssertionError("the response was started twice")
        status = _STATUS_TEXT.get(code) or str(code)
        checked = _CHECKED_STATUSES.get(status)
        if checked is None:
            checked = _check_status(status)
        lines = []
        texts = []
        specials = None
        for pair in headers:
            try:
                entry = _CHECKED_RAW.get(pair)
            except TypeError:  # unhashable (a list, a bytearray): checked below
                entry = None
            if entry is None:
                entry = _check_raw_header(pair)
            lines.append(entry[1])
            text = entry[2]
            texts.append(text)
            if entry[0] != _PLAIN:
                if specials is None:
                    specials = []
                specials.append((len(lines) - 1, entry[0], text[1]))
        self._adopt(checked, texts, lines, specials)

    def _adopt(self, checked: tuple[str, int, bytes], headers: list, lines: list,
               specials: list | None) -> None:
        """The checked status, the app's headers (text) and their lines; ``specials``:
        (index, kind, value) of those the core looks at (None: there are none)."""
        status, code, status_line = checked
        content_length = None
        close = has_date = has_server = False
        no_length = code == 204 or code == 304
        if specials is not None:
            left_out = []  # framing is ours; one Content-Length at most, none on 204/304
            for index, kind, value in specials:
                if kind == _CL:
                    value = value.strip()
                    if _DIGITS_RE.fullmatch(value) is None or (
                            content_length is not None and int(value) != content_length):
                        raise _AppError(f"invalid Content-Length {value!r}")
                    if content_length is not None or no_length:
                        left_out.append(index)
                    content_length = int(value)
                elif kind == _DATE:
                    has_date = True
                elif kind == _SERVER:
                    has_server = True
                else:
                    left_out.append(index)
                    if kind == _CONNECTION and "close" in value.lower():
                        close = True
            if left_out:
                headers = [h for i, h in enumerate(headers) if i not in left_out]
                lines = [line for i, line in enumerate(lines) if i not in left_out]
        if no_length:
            content_length = None
        self.status = status
        self.code = code
        self.status_line = status_line
        self.headers = headers
        self.lines = lines
        self.content_length = content_length
        self.close_requested = close
        self.has_date = has_date
        self.has_server = has_server

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable (and each item of the app's iterable)."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise _AppError(f"response body must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if self.done or not data:
            return  # nothing is sent before the first non-empty body chunk
        if not self.head_sent:
            head = self._head(None)
            self.head_sent = True
            body = self._body(data)
            if len(body) < _SINGLE_SEND_MAX:
                self.pending.append(head + body)
            else:
                self.pending.append(head)
                self.pending.append(body)
        else:
            body = self._body(data)
            if body:
                self.pending.append(body)

    # -- framing ------------------------------------------------------------------------
    def _head(self, total: int | None) -> bytes:
        """Decide framing and keep-alive; return the head bytes."""
        request = self.request
        code = self.code
        lines = self.lines  # the app's; what the core adds follows them
        self.app_lines = len(lines)
        keep = request.keep_alive and not self.close_requested and (
            self.may_keep_alive is None or self.may_keep_alive())
        cl = self.content_length
        if code == 204 or code == 304:
            framing = _NO_BODY
        elif cl is not None:
            framing = _LENGTH
            self.left = cl
        elif total is not None:
            lines.append(b"Content-Length: %d\r\n" % total)
            framing = _LENGTH
            self.left = total
        elif request.method == "HEAD":
            framing = _NO_BODY
        elif request.http_version == "1.1":
            lines.append(b"Transfer-Encoding: chunked\r\n")
            framing = _CHUNKED
        else:
            framing = _UNTIL_CLOSE
            keep = False
        if request.method == "HEAD":
            framing = _NO_BODY
        if keep:
            if request.http_version == "1.0":
                lines.append(b"Connection: keep-alive\r\n")
        else:
            lines.append(b"Connection: close\r\n")
        if not self.has_date:
            lines.append(http_date_line())
        if not self.has_server and self.handler.server_software:
            lines.append(_server_line(self.handler.server_software))
        lines.append(b"\r\n")
        self.framing = framing
        self.keep_alive = keep
        self.final_headers = None  # made for the access log (final_header_list)
        return self.status_line + b"".join(lines)

    def final_header_list(self) -> list[tuple[str, str]]:
        """The headers the client got, as text (for the access log)."""
        if self.final_headers is None:
            added = [line[:-2].decode("latin-1").split(": ", 1)
                     for line in self.lines[self.app_lines:-1]]
            self.final_headers = self.headers + [(name, value) for name, value in added]
        return self.final_headers

    def _body(self, data: bytes) -> bytes:
        """Frame ``data`` per the chosen framing (may truncate or discard)."""
        framing = self.framing
        if framing == _LENGTH:
            left = self.left
            if len(data) >= left:
                if len(data) > left:
                    data = data[:left]
                    self.keep_alive = False  # the app sent more than it declared
                self.done = True
            self.left = left - len(data)
        elif framing == _CHUNKED:
            self.body_bytes += len(data)
            return frame_chunk(data)
        elif framing == _NO_BODY:
            self.done = True
            return b""
        self.body_bytes += len(data)
        return data

    def _whole(self, body: bytes) -> None:
        """The complete body is known: head with Content-Length, and the body."""
        if self.status is None:
            raise _AppError("the app returned without calling start_response()")
        head = self._head(len(body))
        self.head_sent = True
        body = self._body(body) if body else b""
        self.done = True
        if len(body) < _SINGLE_SEND_MAX:
            self.pending.append(head + body)
        else:
            self.pending.append(head)
            self.pending.append(body)
        if self.framing == _LENGTH and self.left:
            self.keep_alive = False

    def _end(self) -> None:
        """The iterable is exhausted: head if still unsent, terminating chunk, checks."""
        if not self.head_sent:
            self._whole(b"")
        elif self.framing == _CHUNKED:
            self.pending.append(LAST_CHUNK)
        elif self.framing == _LENGTH and self.left:
            self.keep_alive = False  # fewer bytes than declared: only a close ends it
        self.finished = True

    def _file(self, wrapper: FileWrapper) -> bool:
        """``wsgi.file_wrapper`` over a regular file: the head, then a FileSegment."""
        filelike = wrapper.filelike
        try:
            fd = filelike.fileno()
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return False
            offset = filelike.tell() if hasattr(filelike, "tell") else os.lseek(fd, 0, os.SEEK_CUR)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return False
        size = max(0, st.st_size - offset)
        declared = self.content_length
        count = size if declared is None else min(declared, size)
        self.pending.append(self._head(size if declared is None else None))
        self.head_sent = True
        self.done = self.finished = True
        if self.framing != _LENGTH or not count:
            if self.framing == _LENGTH and self.left:
                self.keep_alive = False
            return True
        self.pending.append(FileSegment(filelike, offset, count))
        return True

    def send_file(self, file: Any) -> None:
        """An app that sends its response itself gives a regular file (open for reading,
        at its start) as the whole body (ASGI ``http.response.pathsend``): the head
        (its size as Content-Length, unless the app declared one), then a
        :class:`FileSegment` to take with :meth:`take_pending`. Raises ValueError for
        what is not a regular file, or after the head went out."""
        if self.head_sent or self.finished:
            raise ValueError("a file must be the whole response body")
        if not self._file(FileWrapper(file)):
            raise ValueError(f"not a regular file: {file!r}")

    # -- the driver's side -------------------------------------------------------------
    def start(self) -> None:
        """Call the app; whatever it does, the response is ready to be pulled."""
        try:
            result = self.result = self.handler.app(self.environ, self.start_response)
            rtype = type(result)
            if (rtype is list or rtype is tuple) and not self.head_sent:
                if len(result) == 1 and type(result[0]) is bytes:
                    self._whole(result[0])
                else:
                    self._whole(b"".join(result))
                self.finished = True
            elif (rtype is FileWrapper and self.files and self.request.method != "HEAD"
                  and self.status is not None and self._file(result)):
                pass
            else:
                self.iterator = iter(result)
        except Exception as exc:  # noqa: BLE001 -- the app's failure becomes a response
            self._failed(exc)

    def pull(self) -> bytes | FileSegment | None:
        """The next piece to write (bytes or a FileSegment); None when the response is done."""
        pending = self.pending
        while not pending:
            if self.finished:
                return None
            if self.done:
                self._end()
                continue
            try:
                data = next(self.iterator)
            except StopIteration:
                self._end()
                continue
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
                continue
            try:
                self.write(data)
            except Exception as exc:  # noqa: BLE001 -- a bad body item
                self._failed(exc)
        return pending.pop(0)

    def pull_pending_bytes(self) -> bytes | None:
        """The next piece if it is bytes already produced (the large body after its head),
        else None: a driver writes the two in one call."""
        pending = self.pending
        if pending and type(pending[0]) is bytes:
            return pending.pop(0)  # type: ignore[return-value]
        return None

    def file_sent(self, count: int) -> None:
        """The driver sent ``count`` bytes of the FileSegment it pulled (all or fewer)."""
        self.body_bytes += count
        self.left -= count
        if self.left:
            self.keep_alive = False

    def client_gone(self, why: object = "") -> None:
        """The client went away while the response was written: nothing more is sent."""
        self.handler.error_log.debug("client went away during the response: %s", why)
        self.aborted = True
        self.keep_alive = False
        self.pending.clear()
        self.finished = True

    def finish(self) -> ResponseOutcome:
        """Close the app's iterable, write the access log line; the outcome."""
        close = getattr(self.result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001
                self.handler.error_log.exception("Error closing the response iterable")
        handler = self.handler
        if handler.access_log is not None and self.head_sent:
            handler.log_access(self.environ, self.status, self.final_header_list(),
                               self.body_bytes, self.started)
        return ResponseOutcome(self.code if self.head_sent else 0, self.keep_alive,
                               self.body_bytes, self.aborted)

    # -- an app that sends its response itself (the ASGI adapter) ----------------------
    def send_body(self, data: bytes, more: bool) -> None:
        """Body bytes from an app that sends its response itself, after
        :meth:`start_response`: the head goes out with the first piece (an empty one
        too), a whole body sent in one piece gets a Content-Length, and the last piece
        (``more`` False) ends the response. Raises for a body that is not bytes."""
        if self.finished:
            return
        if not more and not self.head_sent:
            if type(data) is not bytes:
                self.write(data)  # raises for what is not bytes-like
                data = bytes(data)
            self._whole(data)
            self.finished = True
            return
        if data:
            self.write(data)
        elif not self.head_sent:
            self.pending.append(self._head(None))
            self.head_sent = True
        if not more:
            self._end()

    def take_pending(self) -> list[bytes]:
        """The pieces ready to be written now (for a driver that does not :meth:`pull`)."""
        pending = self.pending
        self.pending = []
        return pending

    def fail(self, exc: Exception) -> None:
        """The app failed: a 500 (or the RequestBodyError's status) if the head has not
        gone out, else the connection is cut; the error is logged."""
        self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """The app (or its iterable, or the body it read) failed."""
        request = self.request
        log = self.handler.error_log
        if isinstance(exc, ClientDisconnected):
            self.client_gone(exc)
            return
        if isinstance(exc, RequestBodyError):
            log.debug("request body refused: %s", exc)
            code = exc.status
        else:
            log.error("Error handling request %s %s", request.method,
                      request.target.decode("latin-1"), exc_info=exc)
            code = 500
        self.answer_instead(code)

    def answer_instead(self, code: int) -> None:
        """The response cannot be completed (the app failed, or ran out of time): the
        client gets ``code`` if the head has not gone out, else a cut connection."""
        request = self.request
        self.finished = True
        self.done = True
        if self.head_sent:
            self.keep_alive = False  # no terminating chunk: the client sees a cut
            self.error = True
            return
        status, headers, data = error_response(
            code, self.handler.server_software, head_only=request.method == "HEAD")
        self.status, self.code, self.final_headers = status, code, headers
        self.head_sent = True
        self.keep_alive = False
        self.body_bytes = 0 if request.method == "HEAD" else len(data) - data.find(b"\r\n\r\n") - 4
        self.pending[:] = [data]
