"""Sans-IO HTTP/1.1 response side: status lines, heads, chunk framing, error pages.

Owns the bytes arbiter writes -- for both parsers, responses are always
produced here, never by a parser library:

* :func:`http_date` / :func:`http_date_line` -- the ``Date`` value (and its header
  line), formatted at most once per second;
* :func:`serialize_head` -- status line + header fields -> one ``bytes``
  (names and values written as given, latin-1);
* :func:`frame_chunk` / ``LAST_CHUNK`` -- chunked transfer coding of a body;
* :func:`error_response` -- a complete core-generated error response
  (``text/plain`` body like ``400 Bad Request\\n``, ``Connection: close``);
* ``CONTINUE_RESPONSE`` -- the interim ``100 Continue``;
* :func:`status_line` / ``REASONS`` -- standard reason phrases.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
REASONS.setdefault(431, "Request Header Fields Too Large")

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

_date_second = 0
_date_value = ""
_date_line = b""


def http_date() -> str:
    """The current time as an IMF-fixdate, cached for the current second."""
    global _date_second, _date_value, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_value = formatdate(now, usegmt=True)
        _date_line = b"Date: %s\r\n" % _date_value.encode("ascii")
        _date_second = now
    return _date_value


def http_date_line() -> bytes:
    """``Date: <http_date()>`` with its CRLF, as a response head carries it."""
    if int(time.time()) != _date_second:
        http_date()
    return _date_line


def status_line(code: int) -> str:
    """``"404 Not Found"`` for 404 (``"599 Unknown"`` for unknown codes)."""
    return f"{code} {REASONS.get(code, 'Unknown')}"


def serialize_head(status: str, headers: list[tuple[str, str]]) -> bytes:
    """``HTTP/1.1 <status>`` + fields + empty line, encoded latin-1.

    Raises UnicodeEncodeError for text that latin-1 cannot carry.
    """
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return f"HTTP/1.1 {status}\r\n{fields}\r\n".encode("latin-1")


def frame_chunk(data: bytes) -> bytes:
    """One chunk of the chunked transfer coding (``data`` must not be empty)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def error_response(code: int, server_software: str = "", *, head_only: bool = False,
                   close: bool = True) -> tuple[str, list[tuple[str, str]], bytes]:
    """A core-generated error: ``(status, headers, full response bytes)``.

    The body is ``"<code> <reason>\\n"``; ``Connection: close`` unless ``close``
    is False. ``head_only`` leaves the body out (answer to HEAD).
    """
    status = status_line(code)
    body = (status + "\n").encode("latin-1")
    headers = [("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Length", str(len(body)))]
    if code == 503:  # the core's 503 is load shedding: a moment later may find room
        headers.append(("Retry-After", "1"))
    if close:
        headers.append(("Connection", "close"))
    headers.append(("Date", http_date()))
    if server_software:
        headers.append(("Server", server_software))
    data = serialize_head(status, headers)
    if not head_only:
        data += body
    return status, headers, data
