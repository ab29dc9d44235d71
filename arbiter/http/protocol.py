"""Sans-IO HTTP/1.1 request side: bytes in, request events out; never touches a socket.

Owns :class:`HTTPConnection` and its events, and with them every strictness
rule of HTTP-STRICTNESS.md and CONTRACT §5 -- identical for both parsers:

* head framing: the core finds the end of the head itself, skips empty lines
  before a request line, and enforces ``limit_request_line`` (414) and
  ``limit_header_fields`` / ``limit_header_field_size`` (431) *while bytes
  arrive*, line by line, so an endless request line is refused as soon as it
  is longer than the limit;
* grammar: request line ``token SP target SP HTTP/d.d`` with CRLF, field lines
  ``token ":" OWS value OWS`` (no obs-fold, no whitespace before the colon, no
  control characters, no bare CR or LF) -> 400; versions other than 1.0/1.1
  -> 505 (so the HTTP/2 preface ``PRI * HTTP/2.0`` gets 505, while ``PRI /
  HTTP/1.1`` is a request like any other token method); target forms (origin;
  absolute http(s), whose path and query become :attr:`Request.path` /
  :attr:`Request.query` -- the WSGI layer takes the host from it; ``*`` only
  for OPTIONS; anything else, e.g. the authority form, -> 400). ``CONNECT``
  is answered 501 (arbiter is not a proxy);
* framing and smuggling: repeated Host / Content-Length / Content-Type,
  missing Host on 1.1, Content-Length together with Transfer-Encoding, TE on
  HTTP/1.0, malformed Content-Length, an empty coding or ``chunked`` twice
  -> 400; any coding but ``chunked`` -> 501 (``chunked`` in any case; OWS
  around it, e.g. ``chunked<TAB>``, is not part of the value, RFC 9110
  §5.6.3); Content-Length over ``limit_body`` -> 413 before any body byte is
  read, a chunked body over it -> 413 as soon as a chunk size takes the total
  over it (a body of exactly ``limit_body`` bytes is accepted);
* bodies: Content-Length and chunked (extensions allowed, trailers parsed;
  forbidden trailer fields such as Content-Length or Host -> 400; the others
  are reported on :class:`EndOfMessage` and never merged into the request's
  headers). A chunk-size line (size and extensions, without its CRLF) may be
  at most ``_MAX_CHUNK_SIZE_LINE`` = 4096 bytes, a fixed bound that no config
  value turns off; a longer one -> 400, refused while it arrives like a head
  line. The trailer section has its own count of ``limit_header_fields`` and
  each trailer line ``limit_header_field_size`` (-> 431).

Limits are inclusive: a request line of exactly ``limit_request_line`` bytes,
a field line (``name: value``) of exactly ``limit_header_field_size`` bytes
and exactly ``limit_header_fields`` fields pass; one more is refused. Line
lengths exclude the CRLF. (The config's 0 = no limit reaches this class as
``1 << 30``, see :func:`arbiter.workers.base.http_settings`.)

Checks are ordered so the outcome never depends on how the bytes were split:
each head line (and each chunk-size or trailer line) is judged -- length
first, then CRLF, then grammar -- as soon as it is complete, earlier lines
first, and a line still arriving is refused as soon as it is longer than its
limit; the fast path (whole head already buffered) only short-cuts inputs
that pass every line check, and falls back to the line-by-line scan
otherwise. Once the head is accepted a parser back-end
(:mod:`arbiter.http.parsers`, httptools or h11) tokenises the header fields;
that module says how each is kept from judging what the core decides.

Driving it (h11-style)::

    conn = HTTPConnection(settings)
    conn.receive_data(data)          # b"" = the peer closed its side
    event = conn.next_event()        # Request | Data | EndOfMessage | ProtocolError
                                     #   | NEED_DATA | PAUSED | CONNECTION_CLOSED
    ... answer the request ...
    conn.start_next_cycle()          # after the response is complete: next request

Pipelined requests stay in the buffer: after :class:`EndOfMessage` the
connection reports ``PAUSED`` until :meth:`HTTPConnection.start_next_cycle`,
so responses go out in request order. After a :class:`ProtocolError` nothing
more is parsed: the driver sends ``error_response`` and closes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from arbiter.http.parsers import HeadParser, ParserRejected, make_head_parser
from arbiter.http.settings import HTTPSettings, resolve_parser

__all__ = [
    "CONNECTION_CLOSED",
    "NEED_DATA",
    "PAUSED",
    "Data",
    "EndOfMessage",
    "HTTPConnection",
    "ProtocolError",
    "Request",
]


# -- events ---------------------------------------------------------------------
@dataclass(slots=True)
class Request:
    """A complete, validated request head."""

    method: str
    target: bytes  # raw request target as sent
    path: bytes  # still percent-encoded
    query: bytes
    http_version: str  # "1.0" | "1.1"
    headers: list[tuple[bytes, bytes]]
    content_length: int | None  # body length (0 = no body); None = chunked
    keep_alive: bool  # what the client asked for (1.1 default, 1.0 with keep-alive)
    expect_continue: bool  # "Expect: 100-continue" on HTTP/1.1
    queue_time: float | None = None  # seconds it waited before the app started (admit)

    @property
    def chunked(self) -> bool:
        return self.content_length is None


@dataclass(slots=True)
class Data:
    """A piece of the (de-chunked) request body."""

    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    """The request body is complete; ``trailers`` from a chunked body, if any."""

    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class ProtocolError:
    """The client broke the protocol: answer ``status`` with ``Connection: close``."""

    status: int
    reason: str
    request: Request | None = None  # set when the head was parsed (e.g. 413)


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")  # feed more bytes (receive_data), then ask again
PAUSED = _Sentinel("PAUSED")  # the request is complete; call start_next_cycle() after answering
CONNECTION_CLOSED = _Sentinel("CONNECTION_CLOSED")  # peer closed (between requests or mid-body)


# -- grammar ----------------------------------------------------------------------
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_VALUE_CHARS = rb"[\t\x20-\x7e\x80-\xff]"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb"+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_FIELD_LINE = re.compile(_TOKEN + rb"+:" + _VALUE_CHARS + rb"*")
_FIELD_BLOCK = re.compile(rb"(?:" + _TOKEN + rb"+:" + _VALUE_CHARS + rb"*\r\n)*\r\n")
_ABSOLUTE_TARGET = re.compile(
    rb"[Hh][Tt][Tt][Pp][Ss]?://"
    rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?"
    rb"(/[^?]*)?(?:\?(.*))?"
)
_HOST_VALUE = re.compile(rb"(?:[a-z0-9\-._~!$&'()*+,;=%]*|\[[0-9a-f:.]+\])(?::[0-9]*)?")
# Host values already found valid (lower-cased, as judged): a server sees a few again and
# again; bounded, so a client inventing hosts costs a regex match each, as before.
_VALID_HOSTS: set[bytes] = set()
_VALID_HOSTS_MAX = 1024
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,19}")
_CHUNK_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"+(?:[ \t]*=[ \t]*(?:" + _TOKEN
    + rb"+|\"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*\"))?)*"
)
# Fields the core itself looks at, found in the lower-cased head.
_FRAMING_FIELDS = re.compile(
    rb"\r\n(host|content-length|transfer-encoding|content-type|connection|expect):[ \t]*([^\r]*)"
)
_FRAMING_NAMES = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"content-type", b"connection", b"expect"})
# Trailer fields that must never appear in a chunked trailer section (RFC 9110 §6.5.1).
FORBIDDEN_TRAILERS = frozenset(
    {
        b"content-length", b"transfer-encoding", b"host", b"content-type", b"content-encoding",
        b"content-range", b"trailer", b"te", b"connection", b"keep-alive", b"upgrade",
        b"proxy-connection", b"expect", b"authorization", b"proxy-authorization", b"cookie",
        b"set-cookie", b"cache-control", b"max-forwards", b"pragma", b"range", b"age",
        b"expires", b"date", b"location", b"retry-after", b"vary", b"www-authenticate",
        b"proxy-authenticate", b"forwarded", b"x-forwarded-for", b"x-forwarded-proto",
    }
)

_MINORS = (b"0", b"1")  # the HTTP/1.x minor versions served
_MAX_LEADING_EMPTY = 1024  # bytes of CRLFs tolerated before a request line
_MAX_CHUNK_SIZE_LINE = 4096

# connection states
_IDLE, _BODY_CL, _BODY_CHUNKED, _BODY_END, _DONE, _ERROR, _CLOSED = range(7)
# chunked sub-states
_CH_SIZE, _CH_DATA, _CH_DATA_CRLF, _CH_TRAILER = range(4)


class _Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


class HTTPConnection:
    """The server side of one HTTP/1.x connection, as a state machine over bytes."""

    __slots__ = (
        "settings", "parser", "_buf", "_eof", "_state", "_scan", "_nfields", "_rl",
        "_skipped", "request", "_remaining", "_chunk_state", "_chunk_left", "_body_seen",
        "_trailers", "error", "_limit_line", "_limit_fields", "_limit_field_size",
        "_limit_body", "_fields_from_parser", "_body_piece",
    )

    def __init__(self, settings: HTTPSettings, parser: HeadParser | None = None) -> None:
        self.settings = settings
        self.parser = parser if parser is not None else make_head_parser(
            resolve_parser(settings.parser))
        self._limit_line = settings.limit_request_line
        self._limit_fields = settings.limit_header_fields
        self._limit_field_size = settings.limit_header_field_size
        self._limit_body = settings.limit_body
        self._fields_from_parser = self.parser.name == "httptools"
        self._buf = bytearray()
        # Received bytes that are all Content-Length body, kept as they came: handed out
        # as the next Data without being copied into the buffer and out again.
        self._body_piece: bytes | None = None
        self._eof = False
        self.request: Request | None = None
        self.error: ProtocolError | None = None
        self._reset_cycle()

    def _reset_cycle(self) -> None:
        self._state = _IDLE
        self._scan = 0
        self._nfields = 0
        self._rl: tuple | None = None
        self._skipped = 0
        self._remaining = 0
        self._chunk_state = _CH_SIZE
        self._chunk_left = 0
        self._body_seen = 0
        self._trailers: list[tuple[bytes, bytes]] = []

    # -- public ---------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the peer; ``b""`` means the peer closed its side."""
        if data:
            piece = self._body_piece
            if piece is None:
                if (self._state == _BODY_CL and not self._buf
                        and len(data) <= self._remaining and type(data) is bytes):
                    self._body_piece = data
                    return
            else:
                self._body_piece = None
                self._buf += piece
            self._buf += data
        else:
            self._eof = True

    def next_event(self):  # -> Request | Data | EndOfMessage | ProtocolError | sentinel
        """The next event from the buffered bytes (see the module docstring)."""
        state = self._state
        if state == _IDLE:
            return self._next_head()
        if state == _BODY_CL:
            return self._next_cl()
        if state == _BODY_CHUNKED:
            return self._next_chunked()
        if state == _BODY_END:
            self._state = _DONE
            return EndOfMessage(self._trailers)
        if state == _DONE:
            return PAUSED
        if state == _ERROR:
            return self.error
        return CONNECTION_CLOSED

    def start_next_cycle(self) -> None:
        """The response to the current request is complete: parse the next one."""
        if self._state != _DONE:
            raise RuntimeError("start_next_cycle() before the request body was complete")
        self.request = None
        self._reset_cycle()

    @property
    def idle(self) -> bool:
        """True between requests with no byte of the next one received yet."""
        return self._state == _IDLE and not self._buf and self._rl is None

    @property
    def peer_closed(self) -> bool:
        """The peer closed its side (``receive_data(b"")``)."""
        return self._eof

    @property
    def in_head(self) -> bool:
        """True while a request head is being received (or awaited)."""
        return self._state == _IDLE

    @property
    def message_complete(self) -> bool:
        """True once the current request's body has been read completely."""
        return self._state == _DONE

    @property
    def body_remaining(self) -> int | None:
        """Body bytes still to come for a Content-Length body; None if chunked/unknown."""
        if self._state == _BODY_CL:
            return self._remaining
        if self._state in (_BODY_END, _DONE):
            return 0
        return None

    @property
    def has_trailing_data(self) -> bool:
        """Bytes received but not consumed (e.g. a pipelined next request) -- without a copy."""
        return bool(self._buf) or self._body_piece is not None

    @property
    def buffered(self) -> int:
        """How many received bytes wait to be parsed (a driver bounds its reads by it)."""
        piece = self._body_piece
        return len(self._buf) if piece is None else len(self._buf) + len(piece)

    @property
    def trailing_data(self) -> bytes:
        """Bytes received but not consumed (e.g. a pipelined next request)."""
        piece = self._body_piece
        return bytes(self._buf) if piece is None else piece + bytes(self._buf)

    # -- errors -------------------------------------------------------------------
    def _fail(self, status: int, reason: str) -> ProtocolError:
        self._state = _ERROR
        self.error = ProtocolError(status, reason, self.request)
        return self.error

    # -- head -------------------------------------------------------------------
    def _next_head(self):
        buf = self._buf
        if not buf and not self._eof:
            return NEED_DATA  # between requests, nothing received yet
        if self._rl is None and self._scan == 0:
            while buf.startswith(b"\r\n"):
                del buf[:2]
                self._skipped += 2
                if self._skipped > _MAX_LEADING_EMPTY:
                    return self._fail(400, "too many empty lines before the request line")
            end = buf.find(b"\r\n\r\n")
            if end >= 0:  # the whole head: accepted in a few C-level checks, or judged below
                head_len = end + 4
                size = len(buf)
                head = bytes(buf) if size == head_len else bytes(buf[:head_len])
                rl_end = head.find(b"\r\n")
                m = _REQUEST_LINE.fullmatch(head, 0, rl_end) if (
                    rl_end <= self._limit_line) else None
                if m is not None:
                    groups = method, target, major, minor = m.groups()
                    if (target[0] == 0x2F and major == b"1" and minor in _MINORS
                            and b"#" not in target and method != b"CONNECT"):  # the common case of the checks below
                        target_parts = target.partition(b"?")[::2]
                    else:
                        try:
                            target_parts = self._check_request_line(*groups)
                        except _Reject as exc:
                            return self._fail(exc.status, exc.reason)
                    # Some line might be too long, or too many: judged line by line.
                    if (head_len - rl_end - 4 <= self._limit_field_size
                            and head.count(b"\r\n", rl_end) - 2 <= self._limit_fields
                            and _FIELD_BLOCK.fullmatch(head, rl_end + 2) is not None):
                        if size == head_len:
                            buf.clear()
                        else:
                            del buf[:head_len]
                        return self._complete_head(head, rl_end, groups, target_parts)
        return self._slow_head()

    def _slow_head(self):
        """Judge each complete head line in order; check the partial last line's length."""
        buf = self._buf
        scan = self._scan
        while True:
            nl = buf.find(b"\n", scan)
            if nl < 0:
                partial = len(buf) - scan
                if self._rl is None:
                    if partial > self._limit_line + 1 or (
                            partial > self._limit_line and buf[-1] != 13):
                        return self._fail(414, "request line too long")
                else:
                    if partial > self._limit_field_size + 1 or (
                            partial > self._limit_field_size and buf[-1] != 13):
                        return self._fail(431, "header field too long")
                    if (self._nfields >= self._limit_fields and partial
                            and buf[scan:] != b"\r"):
                        return self._fail(431, "too many header fields")
                self._scan = scan
                if self._eof:
                    if not buf:
                        self._state = _CLOSED
                        return CONNECTION_CLOSED
                    return self._fail(400, "connection closed inside the request head")
                return NEED_DATA
            has_cr = nl > scan and buf[nl - 1] == 13
            content_end = nl - 1 if has_cr else nl
            length = content_end - scan
            if self._rl is None:
                if length > self._limit_line:
                    return self._fail(414, "request line too long")
                if not has_cr:
                    return self._fail(400, "request line not terminated by CRLF")
                line = bytes(buf[scan:content_end])
                m = _REQUEST_LINE.fullmatch(line)
                if m is None:
                    return self._fail(400, "malformed request line")
                try:
                    target_parts = self._check_request_line(*m.groups())
                except _Reject as exc:
                    return self._fail(exc.status, exc.reason)
                self._rl = (content_end, m.groups(), target_parts)
            else:
                if length == 0:
                    if not has_cr:
                        return self._fail(400, "bare LF in the request head")
                    head = bytes(buf[:nl + 1])
                    del buf[:nl + 1]
                    rl_end, groups, target_parts = self._rl
                    return self._complete_head(head, rl_end, groups, target_parts)
                self._nfields += 1
                if self._nfields > self._limit_fields:
                    return self._fail(431, "too many header fields")
                if length > self._limit_field_size:
                    return self._fail(431, "header field too long")
                if not has_cr:
                    return self._fail(400, "header line not terminated by CRLF")
                if _FIELD_LINE.fullmatch(buf, scan, content_end) is None:
                    return self._fail(400, "malformed header field")
            scan = nl + 1

    def _check_request_line(self, method: bytes, target: bytes, major: bytes, minor: bytes):
        if major != b"1" or minor not in (b"0", b"1"):
            raise _Reject(505, "HTTP version not supported")
        if method == b"CONNECT":
            raise _Reject(501, "CONNECT is not supported")
        if b"#" in target:
            raise _Reject(400, "fragment in request target")
        first = target[0]
        if first == 0x2F:  # "/": origin form
            path, _, query = target.partition(b"?")
            return path, query
        if target == b"*":
            if method != b"OPTIONS":
                raise _Reject(400, "asterisk target with a method other than OPTIONS")
            return b"", b""
        m = _ABSOLUTE_TARGET.fullmatch(target)
        if m is None:
            raise _Reject(400, "invalid request target")
        return m.group(1) or b"/", m.group(2) or b""

    def _complete_head(self, head: bytes, rl_end: int, groups: tuple, target_parts: tuple):
        method, target, _major, minor = groups
        http11 = minor == b"1"
        try:
            if self._fields_from_parser:
                # llhttp keeps every field as sent (and refuses what it dislikes), so the
                # framing fields can be judged from its output; if it refuses, the raw
                # scan below decides the status exactly as for h11.
                try:
                    headers = self.parser.parse(head)
                except ParserRejected as exc:
                    self._judge_fields(self._raw_framing_fields(head, rl_end), http11)
                    raise _Reject(400, f"parser refused the head: {exc}") from None
                pairs = []
                for name, value in headers:
                    lname = name.lower()
                    if lname in _FRAMING_NAMES:
                        pairs.append((lname, value.lower()))
                if len(pairs) == 1 and pairs[0][0] == b"host" and pairs[0][1] in _VALID_HOSTS:
                    # only a Host already found valid: what _judge_fields answers for it
                    content_length, keep_alive, expect = 0, http11, False
                else:
                    content_length, keep_alive, expect = self._judge_fields(pairs, http11)
            else:
                # h11 normalises some fields (merges equal Content-Lengths, refuses
                # codings itself): judge the raw head first.
                content_length, keep_alive, expect = self._judge_fields(
                    self._raw_framing_fields(head, rl_end), http11)
                try:
                    headers = self.parser.parse(head)
                except ParserRejected as exc:
                    raise _Reject(400, f"parser refused the head: {exc}") from None
        except _Reject as exc:
            return self._fail(exc.status, exc.reason)
        if content_length is None:  # h11 lower-cases the value, llhttp keeps it
            headers = [(n, b"chunked") if n.lower() == b"transfer-encoding" else (n, v)
                       for n, v in headers]
        path, query = target_parts
        request = self.request = Request(
            method.decode("ascii"), target, path, query, "1.1" if http11 else "1.0",
            headers, content_length, keep_alive, expect,
        )
        if content_length is None:
            self._state = _BODY_CHUNKED
        elif content_length:
            limit = self._limit_body
            if limit is not None and content_length > limit:
                return self._fail(413, "Content-Length over the body limit")
            self._remaining = content_length
            self._state = _BODY_CL
        else:
            self._state = _DONE
        return request

    @staticmethod
    def _raw_framing_fields(head: bytes, rl_end: int) -> list[tuple[bytes, bytes]]:
        """(lower-case name, lower-case value) of the fields the core judges, from raw bytes."""
        return [(m.group(1), m.group(2).rstrip(b" \t"))
                for m in _FRAMING_FIELDS.finditer(head.lower(), rl_end)]

    def _judge_fields(self, pairs: list[tuple[bytes, bytes]], http11: bool):
        """Host / Content-Length / Transfer-Encoding / ... rules -> (length, keep-alive, 100)."""
        hosts = 0
        host_value = b""
        content_lengths: list[bytes] = []
        codings: list[bytes] = []
        has_te = False
        content_types = 0
        connection = b""
        expect = b""
        for name, value in pairs:
            if name == b"host":
                hosts += 1
                host_value = value
            elif name == b"connection":
                connection = connection + b"," + value if connection else value
            elif name == b"content-length":
                content_lengths.append(value)
            elif name == b"transfer-encoding":
                has_te = True
                codings.extend(value.split(b","))
            elif name == b"content-type":
                content_types += 1
            else:
                expect = value
        if hosts > 1:
            raise _Reject(400, "repeated Host")
        if hosts == 0 and http11:
            raise _Reject(400, "missing Host")
        if hosts and host_value not in _VALID_HOSTS:
            if _HOST_VALUE.fullmatch(host_value) is None:
                raise _Reject(400, "invalid Host")
            if len(_VALID_HOSTS) >= _VALID_HOSTS_MAX:
                _VALID_HOSTS.clear()
            _VALID_HOSTS.add(host_value)
        if content_types > 1:
            raise _Reject(400, "repeated Content-Type")
        if has_te and content_lengths:
            raise _Reject(400, "both Content-Length and Transfer-Encoding")
        content_length: int | None = 0
        if has_te:
            if not http11:
                raise _Reject(400, "Transfer-Encoding on HTTP/1.0")
            codings = [c.strip(b" \t") for c in codings]
            if b"" in codings:
                raise _Reject(400, "empty transfer coding")
            for coding in codings:
                if coding != b"chunked":
                    raise _Reject(501, "unsupported transfer coding")
            if len(codings) != 1:
                raise _Reject(400, "chunked applied more than once")
            content_length = None
        elif content_lengths:
            if len(content_lengths) > 1:
                raise _Reject(400, "repeated Content-Length")
            value = content_lengths[0]
            if _CONTENT_LENGTH.fullmatch(value) is None:
                raise _Reject(400, "invalid Content-Length")
            content_length = int(value)
        if not connection:
            keep_alive = http11
        elif connection == b"close":
            keep_alive = False
        elif connection == b"keep-alive":
            keep_alive = True
        else:
            tokens = [t.strip(b" \t") for t in connection.split(b",")]
            keep_alive = b"close" not in tokens and (http11 or b"keep-alive" in tokens)
        return content_length, keep_alive, http11 and expect == b"100-continue"

    # -- bodies -------------------------------------------------------------------
    def _need_body(self):
        if self._eof:
            self._state = _CLOSED
            return CONNECTION_CLOSED
        return NEED_DATA

    def _next_cl(self):
        piece = self._body_piece
        if piece is not None:  # all body (see receive_data): no copy
            self._body_piece = None
            remaining = self._remaining = self._remaining - len(piece)
            if not remaining:
                self._state = _BODY_END
            return Data(piece)
        buf = self._buf
        if not buf:
            return self._need_body()
        remaining = self._remaining
        if len(buf) <= remaining:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:remaining])
            del buf[:remaining]
        remaining -= len(data)
        self._remaining = remaining
        if not remaining:
            self._state = _BODY_END
        return Data(data)

    def _next_chunked(self):
        buf = self._buf
        while True:
            state = self._chunk_state
            if state == _CH_DATA:
                if not buf:
                    return self._need_body()
                n = self._chunk_left
                if len(buf) <= n:
                    data = bytes(buf)
                    buf.clear()
                else:
                    data = bytes(buf[:n])
                    del buf[:n]
                self._chunk_left -= len(data)
                if not self._chunk_left:
                    self._chunk_state = _CH_DATA_CRLF
                return Data(data)
            if state == _CH_SIZE:
                # Judged like a head line: length first (also while it is incomplete),
                # then CRLF, then grammar -- the same answer however the bytes came.
                nl = buf.find(b"\n", 0, _MAX_CHUNK_SIZE_LINE + 2)
                if nl < 0:
                    pending = len(buf)
                    if pending > _MAX_CHUNK_SIZE_LINE + 1 or (
                            pending > _MAX_CHUNK_SIZE_LINE and buf[-1] != 13):
                        return self._fail(400, "chunk size line too long")
                    return self._need_body()
                if nl == 0 or buf[nl - 1] != 13:
                    if nl > _MAX_CHUNK_SIZE_LINE:
                        return self._fail(400, "chunk size line too long")
                    return self._fail(400, "chunk size line not terminated by CRLF")
                m = _CHUNK_SIZE_LINE.fullmatch(buf, 0, nl - 1)
                if m is None:
                    return self._fail(400, "malformed chunk size line")
                size = int(m.group(1), 16)
                del buf[:nl + 1]
                self._body_seen += size
                if self._limit_body is not None and self._body_seen > self._limit_body:
                    return self._fail(413, "chunked body over the body limit")
                if size:
                    self._chunk_left = size
                    self._chunk_state = _CH_DATA
                else:
                    self._chunk_state = _CH_TRAILER
                    self._nfields = 0
                continue
            if state == _CH_DATA_CRLF:
                if len(buf) < 2:
                    if buf and buf[0] != 13:
                        return self._fail(400, "chunk data not followed by CRLF")
                    return self._need_body()
                if buf[0] != 13 or buf[1] != 10:
                    return self._fail(400, "chunk data not followed by CRLF")
                del buf[:2]
                self._chunk_state = _CH_SIZE
                continue
            # trailer section
            nl = buf.find(b"\n")
            if nl < 0:
                pending = len(buf)
                if pending > self._limit_field_size + 1 or (
                        pending > self._limit_field_size and buf[-1] != 13):
                    return self._fail(431, "trailer field too long")
                return self._need_body()
            has_cr = nl > 0 and buf[nl - 1] == 13
            length = nl - 1 if has_cr else nl
            if length == 0:
                if not has_cr:
                    return self._fail(400, "bare LF in trailer section")
                del buf[:nl + 1]
                self._state = _DONE
                return EndOfMessage(self._trailers)
            self._nfields += 1
            if self._nfields > self._limit_fields:
                return self._fail(431, "too many trailer fields")
            if length > self._limit_field_size:
                return self._fail(431, "trailer field too long")
            if not has_cr or _FIELD_LINE.fullmatch(buf, 0, length) is None:
                return self._fail(400, "malformed trailer field")
            name, _, value = bytes(buf[:length]).partition(b":")
            del buf[:nl + 1]
            if name.lower() in FORBIDDEN_TRAILERS:
                return self._fail(400, "forbidden trailer field")
            self._trailers.append((name, value.strip(b" \t")))
