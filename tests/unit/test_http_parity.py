"""Parity corpus: every input gives the same outcome with httptools and h11,
whether fed whole, byte by byte or in random chunks (HTTP-STRICTNESS.md, CONTRACT §5)."""

from __future__ import annotations

import random

import pytest

from arbiter.http import (
    CONNECTION_CLOSED,
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    HTTPConnection,
    HTTPSettings,
    ProtocolError,
    Request,
)

PARSERS = ("httptools", "h11")
MODES = ("whole", "bytes", "random")
LIMITS = dict(limit_request_line=200, limit_header_fields=10, limit_header_field_size=120,
              limit_body=1000)


def pieces(raw: bytes, mode: str, seed: int = 0) -> list[bytes]:
    if mode == "whole":
        return [raw]
    if mode == "bytes":
        return [raw[i:i + 1] for i in range(len(raw))]
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(raw):
        n = rng.randint(1, 13)
        out.append(raw[i:i + n])
        i += n
    return out


def run(raw: bytes, parser: str, mode: str, seed: int = 0, eof: bool = False, **limits) -> list:
    """Feed ``raw`` and return a normalised list of what the core produced."""
    settings = HTTPSettings(parser=parser, **{**LIMITS, **limits})
    conn = HTTPConnection(settings)
    outcome: list = []
    current: dict | None = None
    chunks = pieces(raw, mode, seed) + ([b""] if eof else [])
    for piece in chunks:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if event is PAUSED:
                conn.start_next_cycle()
                continue
            if isinstance(event, Request):
                current = {"method": event.method, "target": event.target,
                           "version": event.http_version, "headers": event.headers,
                           "body": b"", "keep_alive": event.keep_alive,
                           "continue": event.expect_continue}
                outcome.append(current)
            elif isinstance(event, Data):
                current["body"] += event.data
            elif isinstance(event, EndOfMessage):
                current["trailers"] = event.trailers
            elif isinstance(event, ProtocolError):
                outcome.append(event.status)
                return outcome
            elif event is CONNECTION_CLOSED:
                outcome.append("closed")
                return outcome
    return outcome


def summary(outcome: list) -> tuple:
    return tuple(x if not isinstance(x, dict) else f"{x['method']} {x['target'].decode('latin-1')}"
                 for x in outcome)


H = b"Host: example.com\r\n"

# (id, raw request bytes, expected summary)
CORPUS: list[tuple[str, bytes, tuple]] = [
    # --- accepted ----------------------------------------------------------------------
    ("simple-get", b"GET / HTTP/1.1\r\n" + H + b"\r\n", ("GET /",)),
    ("pipelined", b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H
     + b"\r\nHEAD /3?x=1 HTTP/1.1\r\n" + H + b"\r\n", ("GET /1", "GET /2", "HEAD /3?x=1")),
    ("post-cl", b"POST /p HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhelloGET /n HTTP/1.1\r\n"
     + H + b"\r\n", ("POST /p", "GET /n")),
    ("chunked-ext-trailers", b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5;name=val;q=\"a b\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"
     b"GET /after HTTP/1.1\r\n" + H + b"\r\n", ("POST /c", "GET /after")),
    ("chunked-uppercase", b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked \r\n\r\n"
     b"A\r\n0123456789\r\n0\r\n\r\n", ("POST /c",)),
    ("leading-crlf", b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n", ("GET /",)),
    ("options-star", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", ("OPTIONS *",)),
    ("absolute-form", b"GET http://example.com/a?b=c HTTP/1.1\r\n" + H + b"\r\n",
     ("GET http://example.com/a?b=c",)),
    ("custom-method", b"PURGEX /x HTTP/1.1\r\n" + H + b"\r\n", ("PURGEX /x",)),
    ("lowercase-method", b"get /x HTTP/1.1\r\n" + H + b"\r\n", ("get /x",)),
    ("http10-no-host", b"GET / HTTP/1.0\r\n\r\n", ("GET /",)),
    ("upgrade-ignored", b"GET /ws HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\n"
     b"Connection: Upgrade\r\n\r\nGET /next HTTP/1.1\r\n" + H + b"\r\n", ("GET /ws", "GET /next")),
    ("obs-text-value", b"GET / HTTP/1.1\r\n" + H + b"X-Name: caf\xe9\r\n\r\n", ("GET /",)),
    ("empty-value", b"GET / HTTP/1.1\r\n" + H + b"X-Empty:\r\nX-Sp:   \r\n\r\n", ("GET /",)),
    ("ows-trimmed", b"GET / HTTP/1.1\r\n" + H + b"X-A: \t a b \t\r\n\r\n", ("GET /",)),
    ("tab-inside-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\tb\r\n\r\n", ("GET /",)),
    ("weird-target-chars", b"GET /a|b{c}^`\"<>\\~ HTTP/1.1\r\n" + H + b"\r\n",
     ("GET /a|b{c}^`\"<>\\~",)),
    ("expect-continue", b"PUT /u HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
     b"Content-Length: 2\r\n\r\nok", ("PUT /u",)),
    ("cl-zero", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", ("POST /",)),
    ("at-limits", b"GET /" + b"a" * 185 + b" HTTP/1.1\r\n" + H
     + b"".join(b"X-%d: " % i + b"v" * 100 + b"\r\n" for i in range(9)) + b"\r\n",
     ("GET /" + "a" * 185,)),
    # --- request line ------------------------------------------------------------------
    ("line-too-long", b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n" + H + b"\r\n", (414,)),
    ("endless-line", b"GET /" + b"a" * 600, (414,)),
    ("http20", b"GET / HTTP/2.0\r\n" + H + b"\r\n", (505,)),
    ("http12", b"GET / HTTP/1.2\r\n" + H + b"\r\n", (505,)),
    ("http09", b"GET /\r\n\r\n", (400,)),
    ("lowercase-http", b"GET / http/1.1\r\n" + H + b"\r\n", (400,)),
    ("double-space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("trailing-space-line", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", (400,)),
    ("bad-method-char", b"GE(T / HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("bare-lf-line", b"GET / HTTP/1.1\n" + H + b"\r\n", (400,)),
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a\n\n", (400,)),
    ("bare-cr-line", b"GET / HTTP/1.1\rHost: a\r\n\r\n", (400,)),
    ("star-with-get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("authority-with-get", b"GET example.com:80 HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\n" + H + b"\r\n", (501,)),
    ("relative-target", b"GET foo/bar HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("malformed-target", b"GET s://]ufd/: HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("bad-absolute-authority", b"GET http://exa mple/ HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("absolute-userinfo", b"GET http://u@example.com/ HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("fragment", b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("non-ascii-target", b"GET /caf\xe9 HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("nul-in-target", b"GET /a\x00 HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    # --- header fields -----------------------------------------------------------------
    ("too-many-fields", b"GET / HTTP/1.1\r\n" + H
     + b"".join(b"X-%d: v\r\n" % i for i in range(10)) + b"\r\n", (431,)),
    ("field-too-long", b"GET / HTTP/1.1\r\n" + H + b"X-Long: " + b"v" * 200 + b"\r\n\r\n",
     (431,)),
    ("endless-field", b"GET / HTTP/1.1\r\n" + H + b"X-Long: " + b"v" * 400, (431,)),
    ("endless-fields", b"GET / HTTP/1.1\r\n" + H + b"X: y\r\n" * 40, (431,)),
    ("repeated-host", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", (400,)),
    ("repeated-host-case", b"GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n", (400,)),
    ("missing-host-11", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", (400,)),
    ("invalid-host", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", (400,)),
    ("repeated-content-type", b"POST / HTTP/1.1\r\n" + H + b"Content-Type: a/b\r\n"
     b"Content-Type: c/d\r\n\r\n", (400,)),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", (400,)),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n", (400,)),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", (400,)),
    ("empty-name", b"GET / HTTP/1.1\r\n" + H + b": x\r\n\r\n", (400,)),
    ("bad-name-char", b"GET / HTTP/1.1\r\n" + H + b"X{a}: x\r\n\r\n", (400,)),
    ("no-colon", b"GET / HTTP/1.1\r\n" + H + b"Justaname\r\n\r\n", (400,)),
    ("bel-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x07b\r\n\r\n", (400,)),
    ("del-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", (400,)),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", (400,)),
    ("esc-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: \x1b[31m\r\n\r\n", (400,)),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", (400,)),
    ("bare-lf-header", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n", (400,)),
    # --- framing / smuggling ------------------------------------------------------------
    ("cl-and-te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
     (400,)),
    ("te-and-cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Content-Length: 5\r\n\r\n0\r\n\r\n", (400,)),
    ("cl-conflict", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n"
     b"\r\nhello!", (400,)),
    ("cl-duplicate-same", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Content-Length: 5\r\n\r\nhello", (400,)),
    ("cl-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", (400,)),
    ("cl-negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", (400,)),
    ("cl-plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", (400,)),
    ("cl-hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", (400,)),
    ("cl-huge", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
     (400,)),
    ("te-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", (501,)),
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
     (501,)),
    ("te-chunked-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
     (501,)),
    ("te-two-fields", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", (501,)),
    ("te-chunked-twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n"
     b"\r\n0\r\n\r\n", (400,)),
    ("te-empty", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n\r\n", (400,)),
    ("te-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", (400,)),
    ("smuggled-request-not-parsed", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n" + H + b"\r\n", (400,)),
    ("after-error-nothing", b"GET / HTTP/1.1\r\n" + H + b"\r\nGET / HTTP/9.9\r\n\r\n"
     b"GET /third HTTP/1.1\r\n" + H + b"\r\n", ("GET /", 505)),
    # --- bodies ----------------------------------------------------------------------------
    ("cl-over-limit", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1001\r\n\r\n", (413,)),
    ("chunked-over-limit", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     + b"200\r\n" + b"x" * 512 + b"\r\n" + b"200\r\n" + b"x" * 512 + b"\r\n0\r\n\r\n",
     ("POST /", 413)),
    ("chunk-bad-size", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nhello\r\n0\r\n\r\n", ("POST /", 400)),
    ("chunk-size-0x", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0x5\r\nhello\r\n0\r\n\r\n", ("POST /", 400)),
    ("chunk-size-space", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b" 5\r\nhello\r\n0\r\n\r\n", ("POST /", 400)),
    ("chunk-size-overflow", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n", ("POST /", 400)),
    ("chunk-missing-crlf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhelloXX0\r\n\r\n", ("POST /", 400)),
    ("chunk-bare-lf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5\nhello\r\n0\r\n\r\n", ("POST /", 400)),
    ("chunk-bad-ext", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5;\x01\r\nhello\r\n0\r\n\r\n", ("POST /", 400)),
    ("trailer-content-length", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n", ("POST /", 400)),
    ("trailer-host", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\nHost: evil\r\n\r\n", ("POST /", 400)),
    ("trailer-te", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\nTransfer-Encoding: chunked\r\n\r\n", ("POST /", 400)),
    ("trailer-obs-fold", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\nX-A: a\r\n b\r\n\r\n", ("POST /", 400)),
]




def config_limits(**cli) -> dict:
    """The limits a worker gets from the config (``0`` = no limit -> ``1 << 30``)."""
    from arbiter.config import load_config
    from arbiter.workers.base import http_settings

    settings = http_settings(load_config(env={}, cli=cli), "preforked")
    return {name: getattr(settings, name) for name in LIMITS}


DEFAULTS = config_limits()  # the shipped defaults: 8190 / 100 / 8190, no body limit
NO_LINE_LIMIT = config_limits(**{"limits.request_line": 0})
NO_FIELDS_LIMIT = config_limits(**{"limits.header_fields": 0})
CHUNKED = b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"


def request_line(length: int, method: bytes = b"GET") -> bytes:
    """A request line of exactly ``length`` bytes, without its CRLF."""
    return method + b" /" + b"a" * (length - len(method) - 11) + b" HTTP/1.1"


def field_line(length: int, name: bytes = b"X-Long") -> bytes:
    """A field line (``name: value``) of exactly ``length`` bytes, without its CRLF."""
    return name + b": " + b"v" * (length - len(name) - 2)


def fields(count: int) -> bytes:
    """``count`` field lines, Host first."""
    return H + b"".join(b"X-%d: v\r\n" % i for i in range(count - 1))


def chunk_size_line(length: int) -> bytes:
    """A chunk-size line for 5 bytes, with an extension, of exactly ``length`` bytes."""
    return b"5;x=" + b"e" * (length - 4)


# Limits one off each way, OWS, the HTTP/2 preface, chunk-size lines, absolute form:
# (id, raw request bytes, expected summary, limits for HTTPSettings).
EDGE_CORPUS: list[tuple[str, bytes, tuple, dict]] = [
    # --- request line against limit_request_line (default 8190) -------------------------
    ("request-line-at-limit", request_line(8190) + b"\r\n" + H + b"\r\n",
     ("GET /" + "a" * 8176,), DEFAULTS),
    ("request-line-over-limit", request_line(8191) + b"\r\n" + H + b"\r\n", (414,), DEFAULTS),
    ("request-line-over-limit-endless", request_line(8191), (414,), DEFAULTS),
    ("request-line-at-limit-cr-pending", request_line(8190) + b"\r", (), DEFAULTS),
    ("request-line-over-limit-bare-lf", request_line(8191) + b"\n" + H + b"\r\n", (414,),
     DEFAULTS),
    ("request-line-at-limit-bare-lf", request_line(8190) + b"\n" + H + b"\r\n", (400,),
     DEFAULTS),
    ("request-line-small-limit-at", request_line(200) + b"\r\n" + H + b"\r\n",
     ("GET /" + "a" * 186,), LIMITS),
    ("request-line-small-limit-over", request_line(201) + b"\r\n" + H + b"\r\n", (414,),
     LIMITS),
    ("request-line-no-limit", request_line(20000) + b"\r\n" + H + b"\r\n",
     ("GET /" + "a" * 19986,), NO_LINE_LIMIT),
    # --- field lines against limit_header_field_size (default 8190) ---------------------
    ("field-line-at-limit", b"GET / HTTP/1.1\r\n" + H + field_line(8190) + b"\r\n\r\n",
     ("GET /",), DEFAULTS),
    ("field-line-over-limit", b"GET / HTTP/1.1\r\n" + H + field_line(8191) + b"\r\n\r\n",
     (431,), DEFAULTS),
    ("field-line-over-limit-endless", b"GET / HTTP/1.1\r\n" + H + field_line(8191), (431,),
     DEFAULTS),
    ("field-line-small-limit-at", b"GET / HTTP/1.1\r\n" + H + field_line(120) + b"\r\n\r\n",
     ("GET /",), LIMITS),
    ("field-line-small-limit-over", b"GET / HTTP/1.1\r\n" + H + field_line(121)
     + b"\r\n\r\n", (431,), LIMITS),
    # --- field count against limit_header_fields (default 100) --------------------------
    ("fields-at-limit", b"GET / HTTP/1.1\r\n" + fields(100) + b"\r\n", ("GET /",), DEFAULTS),
    ("fields-over-limit", b"GET / HTTP/1.1\r\n" + fields(101) + b"\r\n", (431,), DEFAULTS),
    ("fields-at-limit-then-body", b"POST / HTTP/1.1\r\n" + fields(99)
     + b"Content-Length: 2\r\n\r\nok", ("POST /",), DEFAULTS),
    ("fields-small-limit-at", b"GET / HTTP/1.1\r\n" + fields(10) + b"\r\n", ("GET /",), LIMITS),
    ("fields-small-limit-over", b"GET / HTTP/1.1\r\n" + fields(11) + b"\r\n", (431,), LIMITS),
    ("fields-no-limit", b"GET / HTTP/1.1\r\n" + fields(300) + b"\r\n", ("GET /",),
     NO_FIELDS_LIMIT),
    # --- bodies against limit_body (1000 here) ------------------------------------------
    ("cl-at-body-limit", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1000\r\n\r\n"
     + b"x" * 1000, ("POST /",), LIMITS),
    ("cl-over-body-limit", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1001\r\n\r\n"
     + b"x" * 1001, (413,), LIMITS),
    ("chunked-at-body-limit", CHUNKED + b"1f4\r\n" + b"x" * 500 + b"\r\n1f4\r\n" + b"x" * 500
     + b"\r\n0\r\n\r\n", ("POST /c",), LIMITS),
    ("chunked-over-body-limit", CHUNKED + b"1f4\r\n" + b"x" * 500 + b"\r\n1f5\r\n" + b"x" * 501
     + b"\r\n0\r\n\r\n", ("POST /c", 413), LIMITS),
    # --- Transfer-Encoding with OWS (RFC 9110 §5.6.3: not part of the value) ------------
    ("te-chunked-trailing-tab", b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\t\r\n"
     b"\r\n5\r\nhello\r\n0\r\n\r\n", ("POST /c",), LIMITS),
    ("te-chunked-tabs-around", b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding:\tChunked\t\r\n"
     b"\r\n5\r\nhello\r\n0\r\n\r\n", ("POST /c",), LIMITS),
    ("te-chunked-space-tab", b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding:  chunked \t\r\n"
     b"\r\n0\r\n\r\nGET /next HTTP/1.1\r\n" + H + b"\r\n", ("POST /c", "GET /next"), LIMITS),
    ("te-tab-gzip", b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\t\r\n\r\n", (501,),
     LIMITS),
    ("cl-trailing-tab", b"POST /c HTTP/1.1\r\n" + H + b"Content-Length: 5\t\r\n\r\nhello",
     ("POST /c",), LIMITS),
    # --- PRI: the HTTP/2 preface is a version error, PRI / HTTP/1.1 a token method ------
    ("pri-origin-http11", b"PRI / HTTP/1.1\r\n" + H + b"\r\n", ("PRI /",), LIMITS),
    ("pri-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (505,), LIMITS),
    ("pri-star-http11", b"PRI * HTTP/1.1\r\n" + H + b"\r\n", (400,), LIMITS),
    ("pri-pipelined", b"GET / HTTP/1.1\r\n" + H + b"\r\nPRI /p HTTP/1.1\r\n" + H
     + b"\r\nGET /n HTTP/1.1\r\n" + H + b"\r\n", ("GET /", "PRI /p", "GET /n"), LIMITS),
    # --- persistence is the core's call, not the parser's --------------------------------
    ("proxy-connection-close-pipelined", b"GET /1 HTTP/1.1\r\n" + H
     + b"Proxy-Connection: close\r\n\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\n",
     ("GET /1", "GET /2"), LIMITS),
    ("connection-close-pipelined", b"GET /1 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"
     b"PURGEX /2 HTTP/1.1\r\n" + H + b"\r\n", ("GET /1", "PURGEX /2"), LIMITS),
    # --- chunk-size line (size + extensions) bounded at 4096 bytes ----------------------
    ("chunk-ext-5000", CHUNKED + b"5;x=" + b"e" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
     ("POST /c", 400), DEFAULTS),
    ("chunk-size-line-at-limit", CHUNKED + chunk_size_line(4096) + b"\r\nhello\r\n0\r\n\r\n",
     ("POST /c",), DEFAULTS),
    ("chunk-size-line-over-limit", CHUNKED + chunk_size_line(4097)
     + b"\r\nhello\r\n0\r\n\r\n", ("POST /c", 400), DEFAULTS),
    ("chunk-size-line-endless", CHUNKED + chunk_size_line(10000), ("POST /c", 400), DEFAULTS),
    ("chunk-size-line-at-limit-cr-pending", CHUNKED + chunk_size_line(4096) + b"\r",
     ("POST /c",), DEFAULTS),
    ("chunk-size-line-over-limit-bare-lf", CHUNKED + chunk_size_line(4097) + b"\nhello\r\n",
     ("POST /c", 400), DEFAULTS),
    ("chunk-size-line-no-line-limit", CHUNKED + chunk_size_line(4097) + b"\r\nhello\r\n",
     ("POST /c", 400), NO_LINE_LIMIT),
    # --- absolute form: the target names the host --------------------------------------
    ("absolute-form-port-query", b"GET http://example.com:8080/path?q HTTP/1.1\r\n"
     b"Host: other.example\r\n\r\n", ("GET http://example.com:8080/path?q",), LIMITS),
    ("absolute-form-no-path", b"GET http://example.com?x=1 HTTP/1.1\r\n" + H + b"\r\n",
     ("GET http://example.com?x=1",), LIMITS),
    ("absolute-form-ipv6", b"GET https://[::1]:8443/ HTTP/1.1\r\n" + H + b"\r\n",
     ("GET https://[::1]:8443/",), LIMITS),
]


def check_parity(case_id: str, raw: bytes, expected: tuple, limits: dict) -> None:
    """Both parsers x whole / byte by byte / 3 seeded random splits: the same outcome."""
    reference = run(raw, "h11", "whole", **limits)
    assert summary(reference) == expected, case_id
    for parser in PARSERS:
        for mode in MODES:
            seeds = range(3) if mode == "random" else (0,)
            for seed in seeds:
                got = run(raw, parser, mode, seed, **limits)
                assert got == reference, (case_id, parser, mode, seed)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case_id,raw,expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_parity(case_id: str, raw: bytes, expected: tuple) -> None:
    check_parity(case_id, raw, expected, LIMITS)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case_id,raw,expected,limits", EDGE_CORPUS,
                         ids=[c[0] for c in EDGE_CORPUS])
def test_edge_corpus_parity(case_id: str, raw: bytes, expected: tuple, limits: dict) -> None:
    check_parity(case_id, raw, expected, limits)


@pytest.mark.timeout(10)
def test_config_zero_means_no_limit() -> None:
    assert DEFAULTS == {"limit_request_line": 8190, "limit_header_fields": 100,
                        "limit_header_field_size": 8190, "limit_body": None}
    assert NO_LINE_LIMIT["limit_request_line"] == 1 << 30
    assert NO_FIELDS_LIMIT["limit_header_fields"] == 1 << 30


@pytest.mark.timeout(10)
@pytest.mark.parametrize("parser", PARSERS)
def test_parsed_fields(parser: str) -> None:
    raw = (b"POST /a%20b?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\nX-A: \t a b \t\r\n"
           b"Cookie: a=1\r\nCookie: b=2\r\nTransfer-Encoding: chunked\r\n"
           b"Expect: 100-continue\r\n\r\n3;e=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
    (req,) = run(raw, parser, "whole")
    assert req["method"] == "POST"
    assert req["target"] == b"/a%20b?x=1&y=2"
    assert req["version"] == "1.1"
    assert (b"X-A", b"a b") in req["headers"]
    assert [v for n, v in req["headers"] if n == b"Cookie"] == [b"a=1", b"b=2"]
    assert req["body"] == b"abc"
    assert req["trailers"] == [(b"X-Trailer", b"t")]
    assert req["continue"] is True


@pytest.mark.timeout(10)
@pytest.mark.parametrize("parser", PARSERS)
def test_keep_alive_semantics(parser: str) -> None:
    def ka(raw: bytes) -> bool:
        return run(raw, parser, "whole")[0]["keep_alive"]

    assert ka(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") is True
    assert ka(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") is False
    assert ka(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n") is False
    assert ka(b"GET / HTTP/1.0\r\n\r\n") is False
    assert ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") is True


@pytest.mark.timeout(10)
@pytest.mark.parametrize("parser", PARSERS)
def test_eof_handling(parser: str) -> None:
    assert run(b"", parser, "whole", eof=True) == ["closed"]
    assert run(b"GET / HTTP/1.1\r\nHo", parser, "whole", eof=True) == [400]
    out = run(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc", parser, "bytes",
              eof=True)
    assert out[-1] == "closed" and out[0]["body"] == b"abc"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("parser", PARSERS)
def test_pause_until_next_cycle(parser: str) -> None:
    conn = HTTPConnection(HTTPSettings(parser=parser))
    conn.receive_data(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    first = conn.next_event()
    assert isinstance(first, Request) and first.target == b"/1"
    assert conn.next_event() is PAUSED
    assert conn.next_event() is PAUSED  # the second request waits for the first response
    conn.start_next_cycle()
    second = conn.next_event()
    assert isinstance(second, Request) and second.target == b"/2"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("parser", PARSERS)
def test_error_is_sticky(parser: str) -> None:
    conn = HTTPConnection(HTTPSettings(parser=parser))
    conn.receive_data(b"GET / HTTP/3.0\r\n\r\n")
    err = conn.next_event()
    assert isinstance(err, ProtocolError) and err.status == 505
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert conn.next_event() is err


@pytest.mark.timeout(10)
def test_limit_413_carries_request() -> None:
    conn = HTTPConnection(HTTPSettings(parser="h11", limit_body=3))
    conn.receive_data(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n")
    err = conn.next_event()
    assert isinstance(err, ProtocolError) and err.status == 413
    assert err.request is not None and err.request.method == "PUT"


@pytest.mark.timeout(10)
def test_resolve_parser() -> None:
    from arbiter.http import resolve_parser

    assert resolve_parser("auto") == "httptools"
    assert resolve_parser("h11") == "h11"
    with pytest.raises(ValueError):
        resolve_parser("picohttp")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("parser", PARSERS)
def test_body_pieces_in_any_split_then_the_pipelined_request(parser: str) -> None:
    """A Content-Length body arriving in pieces -- some all body, one carrying the next
    request too, several received before they are asked for -- comes out whole and in
    order, and the pipelined request after it is found."""
    body = bytes(range(256)) * 40  # 10,240 bytes
    head = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
    following = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    for cuts in ([], [100], [100, 5000], [len(body)], [3000, 3001, 9999]):
        conn = HTTPConnection(HTTPSettings(parser=parser))
        conn.receive_data(head)
        request = conn.next_event()
        assert isinstance(request, Request) and request.content_length == len(body)
        edges = [0, *cuts, len(body)]
        pieces = [body[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
        pieces[-1] += following
        got = b""
        ends = 0
        for index, piece in enumerate(pieces):
            conn.receive_data(piece)
            if index % 2 and index < len(pieces) - 1:
                continue  # now and then a second piece before the first is asked for
            while (event := conn.next_event()) is not NEED_DATA and event is not PAUSED:
                if isinstance(event, Data):
                    got += event.data
                else:
                    assert isinstance(event, EndOfMessage)
                    ends += 1
        assert got == body, cuts
        assert ends == 1 and event is PAUSED
        assert conn.has_trailing_data
        conn.start_next_cycle()
        second = conn.next_event()
        assert isinstance(second, Request) and second.target == b"/next"


@pytest.mark.timeout(10)
def test_a_body_piece_that_is_all_body_is_handed_out_as_received() -> None:
    conn = HTTPConnection(HTTPSettings(parser="httptools"))
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n")
    assert isinstance(conn.next_event(), Request)
    piece = b"x" * 65536
    conn.receive_data(piece)
    event = conn.next_event()
    assert isinstance(event, Data) and event.data is piece  # not copied in and out again
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is CONNECTION_CLOSED
