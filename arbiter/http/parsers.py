"""Parser back-ends: tokenise one complete, already-validated request head.

Owns the two interchangeable parsers behind :class:`HeadParser`:

* :class:`HttptoolsHeadParser` -- llhttp via httptools (C, the fast path). One
  ``HttpRequestParser`` is reused for every request on a connection while it
  stays in a clean state (the last head completed a message); otherwise a
  fresh one is made for the next head. llhttp is told to leave alone what the
  core decides: the transfer coding (``lenient_transfer_encoding``: the core
  accepts ``chunked`` with any OWS, e.g. ``chunked<TAB>``, which llhttp alone
  refuses) and persistence (``lenient_keep_alive``: a reused parser does not
  refuse the next head after ``Connection: close`` / ``Proxy-Connection:
  close``). When llhttp still refuses a head, the fields are tokenised again by
  a fresh parser under a stand-in request line (``GET / HTTP/1.x``): llhttp's
  opinion of the request line (its fixed method list, ``PRI`` as the HTTP/2
  preface only) is not ours -- the core has already judged the line. Only a
  refusal of the fields themselves is a :class:`ParserRejected`.
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
        self._parser = self._new_parser()

    def _new_parser(self):
        parser = self._httptools.HttpRequestParser(self)
        # The core judges the transfer coding and the connection's persistence itself.
        parser.set_dangerous_leniencies(lenient_transfer_encoding=True, lenient_keep_alive=True)
        return parser

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
            self._parser = self._new_parser()
            return headers
        except httptools.HttpParserError:
            # llhttp refused the request line (a method not in its list, PRI that is
            # not the HTTP/2 preface, ...) or the head as a whole: the core already
            # judged the line, so tokenise the fields under a stand-in line.
            self._parser = self._new_parser()
            return self._parse_with_stand_in(head)
        if not self._complete:  # e.g. a body follows: llhttp is inside the message
            self._parser = self._new_parser()
        return headers

    def _parse_with_stand_in(self, head: bytes) -> Headers:
        httptools = self._httptools
        eol = head.find(b"\r\n")
        version = head[eol - 8:eol]  # b"HTTP/1.x", already validated by the core
        headers = self._headers = []
        parser = self._new_parser()
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
