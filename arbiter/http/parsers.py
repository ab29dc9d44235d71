"""Parser back-ends: tokenise one complete, already-validated request head.

Owns the two interchangeable parsers behind :class:`HeadParser`:

* :class:`HttptoolsHeadParser` -- llhttp via httptools (C, the fast path). One
  ``HttpRequestParser`` is reused for every request on a connection while it
  stays in a clean state (message complete, keep-alive); otherwise a fresh one
  is made for the next head.
* :class:`H11HeadParser` -- h11 (pure Python, the reference). h11 is driven as a
  parser only: a new ``h11.Connection`` is made for each head, fed the head and
  asked for its ``Request`` event; nothing is ever sent through it.

Division of labour (see :mod:`arbiter.http.protocol`): the core frames the
head itself, enforces the limits while bytes arrive, checks the grammar,
framing and every smuggling shape *before* a parser sees anything, and does
body framing (Content-Length / chunked) itself. A parser only turns the head
into ``[(name, value), ...]`` -- so both parsers yield identical results, and a
parser that still refuses a head the core accepted yields a plain 400.
"""

from __future__ import annotations

from typing import Protocol

Headers = list[tuple[bytes, bytes]]


class ParserRejected(Exception):
    """The parser refused a head the core had accepted (answered with 400)."""


class HeadParser(Protocol):
    name: str

    def parse(self, head: bytes) -> Headers:
        """Tokenise ``head`` (request line + fields + empty line) into header pairs."""
        ...


class HttptoolsHeadParser:
    """llhttp through httptools; one instance per connection."""

    name = "httptools"
    __slots__ = ("_parser", "_headers", "_complete", "_httptools")

    def __init__(self) -> None:
        import httptools

        self._httptools = httptools
        self._headers: Headers = []
        self._complete = False
        self._parser = httptools.HttpRequestParser(self)

    # llhttp callbacks --------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if value and value[-1] in (32, 9):  # llhttp keeps trailing OWS; h11 strips it
            value = value.rstrip(b" \t")
        self._headers.append((name, value))

    def on_message_complete(self) -> None:
        self._complete = True

    # ------------------------------------------------------------------------
    def parse(self, head: bytes) -> Headers:
        httptools = self._httptools
        headers = self._headers = []
        self._complete = False
        parser = self._parser
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            # Upgrade / CONNECT-like: ignored, the request is served normally.
            self._parser = httptools.HttpRequestParser(self)
            return headers
        except httptools.HttpParserInvalidMethodError:
            # llhttp knows a fixed method list; the core already checked the
            # method is a token, so tokenise the fields under a stand-in line.
            self._parser = httptools.HttpRequestParser(self)
            return self._parse_with_stand_in(head)
        except httptools.HttpParserError as exc:
            self._parser = httptools.HttpRequestParser(self)
            raise ParserRejected(str(exc)) from None
        if not self._complete or not parser.should_keep_alive():
            self._parser = httptools.HttpRequestParser(self)
        return headers

    def _parse_with_stand_in(self, head: bytes) -> Headers:
        httptools = self._httptools
        eol = head.find(b"\r\n")
        version = head[eol - 8:eol]  # b"HTTP/1.x", already validated by the core
        headers = self._headers = []
        parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(b"GET / " + version + head[eol:])
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            raise ParserRejected(str(exc)) from None
        return headers


class H11HeadParser:
    """h11 as a pure parser: a fresh ``h11.Connection`` per head."""

    name = "h11"
    __slots__ = ("_h11",)

    def __init__(self) -> None:
        import h11

        self._h11 = h11

    def parse(self, head: bytes) -> Headers:
        h11 = self._h11
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
        try:
            conn.receive_data(head)
            event = conn.next_event()
        except h11.ProtocolError as exc:
            raise ParserRejected(str(exc)) from None
        if type(event) is not h11.Request:
            raise ParserRejected(f"h11 returned {type(event).__name__}")
        return list(event.headers.raw_items())


def make_head_parser(name: str) -> HeadParser:
    """A parser instance for a concrete parser name ("httptools" or "h11")."""
    if name == "httptools":
        return HttptoolsHeadParser()
    if name == "h11":
        return H11HeadParser()
    raise ValueError(f"unknown HTTP parser {name!r}")
