"""WSGIHandler without sockets: environ building, start_response validation, framing."""

from __future__ import annotations

import io
import logging

import pytest

from arbiter.http import (
    EMPTY_INPUT,
    ClientDisconnected,
    HTTPConnection,
    HTTPSettings,
    Request,
    StreamInput,
    WSGIHandler,
)

LOG = logging.getLogger("test.http.wsgi")


def parse(raw: bytes, parser: str = "httptools") -> Request:
    conn = HTTPConnection(HTTPSettings(parser=parser))
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, Request), event
    return event


def environ_for(raw: bytes, peer=("127.0.0.1", 40000), sockname=("127.0.0.1", 8000),
                **settings) -> dict:
    handler = WSGIHandler(lambda e, s: [], HTTPSettings(**settings), LOG)
    info = handler.connection_info(peer, sockname)
    return handler.build_environ(parse(raw), info, EMPTY_INPUT)


class Recorder:
    def __init__(self) -> None:
        self.calls: list = []

    def log(self, environ, status, headers, body_bytes, duration_us) -> None:
        self.calls.append((environ["REQUEST_METHOD"], status, headers, body_bytes, duration_us))


def respond(app, raw: bytes = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", access_log=None,
            may_keep_alive=None, body: bytes = b""):
    handler = WSGIHandler(app, HTTPSettings(), LOG, access_log)
    request = parse(raw)
    environ = handler.build_environ(request, handler.connection_info(("127.0.0.1", 1),
                                                                     ("127.0.0.1", 80)),
                                    io.BytesIO(body))
    sent: list[bytes] = []
    outcome = handler.run_app(environ, request, sent.append, may_keep_alive=may_keep_alive)
    return outcome, sent, b"".join(sent)


def split(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return lines[0], headers, body


# -- environ -----------------------------------------------------------------------------
@pytest.mark.timeout(5)
@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_environ_basics(parser: str) -> None:
    raw = (b"POST /a%20b/caf%C3%A9?x=%20&y=2 HTTP/1.1\r\nHost: example.com\r\n"
           b"Content-Type: text/plain\r\nContent-Length: 0\r\nX-Multi: 1\r\nX-Multi: 2\r\n"
           b"Cookie: a=1\r\nCookie: b=2\r\nX_Forwarded_For: 6.6.6.6\r\nUser-Agent: t\r\n\r\n")
    handler = WSGIHandler(lambda e, s: [], HTTPSettings(parser=parser), LOG)
    env = handler.build_environ(parse(raw, parser),
                                handler.connection_info(("10.1.2.3", 5555), ("0.0.0.0", 8000)),
                                EMPTY_INPUT)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/a b/caf\xc3\xa9"
    assert env["QUERY_STRING"] == "x=%20&y=2"
    assert env["RAW_URI"] == env["REQUEST_URI"] == "/a%20b/caf%C3%A9?x=%20&y=2"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SCRIPT_NAME"] == ""
    assert env["SERVER_NAME"] == "0.0.0.0" and env["SERVER_PORT"] == "8000"
    assert env["REMOTE_ADDR"] == "10.1.2.3" and env["REMOTE_PORT"] == "5555"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "0"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_X_MULTI"] == "1, 2"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_FORWARDED_FOR" not in env  # underscore names are dropped
    assert env["HTTP_USER_AGENT"] == "t"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input"] is EMPTY_INPUT
    assert env["wsgi.multithread"] is False and env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False and env["wsgi.input_terminated"] is True
    assert callable(env["wsgi.file_wrapper"])
    env["wsgi.errors"].write("app says hi\n")


@pytest.mark.timeout(5)
def test_forwarded_trusted_and_untrusted() -> None:
    raw = (b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6, 1.2.3.4\r\n"
           b"X-Forwarded-Proto: https\r\n\r\n")
    trusted = environ_for(raw, peer=("127.0.0.1", 1))
    assert trusted["REMOTE_ADDR"] == "1.2.3.4"  # the entry our trusted proxy added
    assert trusted["wsgi.url_scheme"] == "https"
    untrusted = environ_for(raw, peer=("8.8.8.8", 1))
    assert untrusted["REMOTE_ADDR"] == "8.8.8.8"
    assert untrusted["wsgi.url_scheme"] == "http"
    assert untrusted["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 1.2.3.4"
    star = environ_for(raw, peer=("8.8.8.8", 1), forwarded_allow_ips=("*",))
    assert star["REMOTE_ADDR"] == "1.2.3.4"
    cidr = environ_for(raw, peer=("10.9.8.7", 1), forwarded_allow_ips=("10.0.0.0/8",))
    assert cidr["wsgi.url_scheme"] == "https"
    v6 = environ_for(raw, peer=("::1", 1, 0, 0))
    assert v6["REMOTE_ADDR"] == "1.2.3.4"


@pytest.mark.timeout(5)
def test_forwarded_rfc7239() -> None:
    raw = (b"GET / HTTP/1.1\r\nHost: a\r\n"
           b"Forwarded: for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https\r\n\r\n")
    env = environ_for(raw, forwarded_headers="forwarded")
    assert env["REMOTE_ADDR"] == "2001:db8::1"
    assert env["wsgi.url_scheme"] == "https"
    untrusted = environ_for(raw, peer=("9.9.9.9", 1), forwarded_headers="forwarded")
    assert untrusted["REMOTE_ADDR"] == "9.9.9.9"
    default = environ_for(raw)  # x-forwarded mode: Forwarded is a plain header
    assert default["REMOTE_ADDR"] == "127.0.0.1" and default["wsgi.url_scheme"] == "http"


@pytest.mark.timeout(5)
def test_unix_socket_peer() -> None:
    env = environ_for(b"GET / HTTP/1.1\r\nHost: app.local:8080\r\n\r\n", peer="",
                      sockname="/tmp/arbiter.sock")
    assert env["REMOTE_ADDR"] == "" and env["REMOTE_PORT"] == ""
    assert env["SERVER_NAME"] == "app.local" and env["SERVER_PORT"] == "8080"
    env = environ_for(b"GET / HTTP/1.0\r\n\r\n", peer="", sockname="/tmp/arbiter.sock")
    assert env["SERVER_NAME"] == "localhost" and env["SERVER_PORT"] == ""


@pytest.mark.timeout(5)
def test_script_name_from_process_environment(monkeypatch) -> None:
    monkeypatch.setenv("SCRIPT_NAME", "/app")
    env = environ_for(b"GET /app/x?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == "/x"


@pytest.mark.timeout(5)
def test_options_star_and_absolute_form() -> None:
    env = environ_for(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert env["PATH_INFO"] == "" and env["HTTP_HOST"] == "a"
    env = environ_for(b"GET http://a/p%2Fq?z HTTP/1.1\r\nHost: a\r\n\r\n")
    assert env["PATH_INFO"] == "/p/q" and env["QUERY_STRING"] == "z"


def absolute_environ(raw: bytes, parser: str, **where) -> dict:
    handler = WSGIHandler(lambda e, s: [], HTTPSettings(parser=parser), LOG)
    info = handler.connection_info(where.get("peer", ("127.0.0.1", 40000)),
                                   where.get("sockname", ("127.0.0.1", 8000)))
    return handler.build_environ(parse(raw, parser), info, EMPTY_INPUT)


@pytest.mark.timeout(5)
@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_absolute_form_target_names_the_host(parser: str) -> None:
    # RFC 9112 §3.2.2: the host comes from the target; the Host header is ignored.
    raw = b"GET http://example.com:8080/path?q HTTP/1.1\r\nHost: other.example\r\n\r\n"
    env = absolute_environ(raw, parser)
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["PATH_INFO"] == "/path" and env["QUERY_STRING"] == "q"
    assert env["RAW_URI"] == env["REQUEST_URI"] == "http://example.com:8080/path?q"
    # On TCP the server address is the socket's, whatever the host (as for origin form).
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == "8000"
    # On a unix socket SERVER_NAME / SERVER_PORT come from the host: the target's.
    env = absolute_environ(raw, parser, peer="", sockname="/tmp/arbiter.sock")
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["SERVER_NAME"] == "example.com" and env["SERVER_PORT"] == "8080"


@pytest.mark.timeout(5)
@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_absolute_form_shapes(parser: str) -> None:
    env = absolute_environ(b"GET http://example.com?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", parser)
    assert env["HTTP_HOST"] == "example.com"
    assert env["PATH_INFO"] == "/" and env["QUERY_STRING"] == "x=1"
    env = absolute_environ(b"GET HTTPS://Example.COM HTTP/1.1\r\nHost: h\r\n\r\n", parser)
    assert env["HTTP_HOST"] == "Example.COM" and env["PATH_INFO"] == "/"
    assert env["QUERY_STRING"] == ""
    env = absolute_environ(b"GET http://[::1]:8443/a/b HTTP/1.1\r\nHost: h\r\n\r\n", parser,
                           peer="", sockname="/tmp/arbiter.sock")
    assert env["HTTP_HOST"] == "[::1]:8443" and env["PATH_INFO"] == "/a/b"
    assert env["SERVER_NAME"] == "::1" and env["SERVER_PORT"] == "8443"
    # HTTP/1.0 needs no Host header: the target still names the host.
    env = absolute_environ(b"GET http://example.com/p HTTP/1.0\r\n\r\n", parser)
    assert env["HTTP_HOST"] == "example.com" and env["PATH_INFO"] == "/p"
    # Origin form keeps the Host header.
    env = absolute_environ(b"GET /p HTTP/1.1\r\nHost: h:81\r\n\r\n", parser,
                           peer="", sockname="/tmp/arbiter.sock")
    assert env["HTTP_HOST"] == "h:81"
    assert env["SERVER_NAME"] == "h" and env["SERVER_PORT"] == "81"


# -- wsgi.input ------------------------------------------------------------------------------
@pytest.mark.timeout(5)
def test_stream_input() -> None:
    chunks = iter([b"line1\nli", b"ne2\n", b"", b"tail"])
    data = [b"line1\nli", b"ne2\n", b"tail"]
    it = iter(data)
    stream = StreamInput(lambda: next(it, b""))
    assert stream.readline() == b"line1\n"
    assert stream.readline(2) == b"li"
    assert stream.read(3) == b"ne2"
    assert stream.readlines() == [b"\n", b"tail"]
    assert stream.read() == b"" and stream.read(10) == b"" and stream.readline() == b""
    del chunks
    it2 = iter([b"a\nb", b"\nc"])
    assert list(StreamInput(lambda: next(it2, b""))) == [b"a\n", b"b\n", b"c"]
    it3 = iter([b"abc", b"def"])
    assert StreamInput(lambda: next(it3, b"")).read() == b"abcdef"


# -- responses ------------------------------------------------------------------------------
def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.mark.timeout(5)
def test_list_body_one_send_with_content_length() -> None:
    rec = Recorder()
    outcome, sent, data = respond(hello, access_log=rec)
    assert len(sent) == 1
    line, headers, body = split(data)
    assert line == "HTTP/1.1 200 OK"
    assert headers["content-length"] == "5" and body == b"hello"
    assert "date" in headers and headers["server"] == "arbiter"
    assert outcome.keep_alive and outcome.status == 200 and outcome.body_bytes == 5
    assert rec.calls[0][:2] == ("GET", "200 OK") and rec.calls[0][3] == 5


@pytest.mark.timeout(5)
def test_generator_chunked_and_http10_close() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b""
        yield b"ab"
        yield b"cde"

    outcome, _, data = respond(app)
    _, headers, body = split(data)
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
    assert outcome.keep_alive
    outcome, _, data = respond(app, b"GET / HTTP/1.0\r\n\r\n")
    _, headers, body = split(data)
    assert "transfer-encoding" not in headers and headers["connection"] == "close"
    assert body == b"abcde" and not outcome.keep_alive
    outcome, _, data = respond(app, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert not outcome.keep_alive  # no length known: close delimits
    outcome, _, data = respond(hello, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert outcome.keep_alive and split(data)[1]["connection"] == "keep-alive"


@pytest.mark.timeout(5)
def test_head_and_no_body_statuses() -> None:
    outcome, _, data = respond(hello, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    _, headers, body = split(data)
    assert headers["content-length"] == "5" and body == b"" and outcome.keep_alive

    def status_app(status):
        def app(environ, start_response):
            start_response(status, [])
            return iter([b"ignored"])
        return app

    for status in ("204 No Content", "304 Not Modified"):
        outcome, _, data = respond(status_app(status))
        _, headers, body = split(data)
        assert body == b"" and "transfer-encoding" not in headers, status
        assert outcome.keep_alive


@pytest.mark.timeout(5)
def test_content_length_mismatch() -> None:
    def short(environ, start_response):
        start_response("200 OK", [("Content-Length", "10")])
        return iter([b"abc"])

    outcome, _, data = respond(short)
    assert split(data)[2] == b"abc" and not outcome.keep_alive

    def long(environ, start_response):
        start_response("200 OK", [("Content-Length", "3")])
        return iter([b"ab", b"cdef", b"never"])

    outcome, _, data = respond(long)
    assert split(data)[2] == b"abc" and not outcome.keep_alive


@pytest.mark.timeout(5)
@pytest.mark.parametrize("status,headers", [
    ("200 OK", [("X-Evil", "a\r\nSet-Cookie: x=1")]),
    ("200 OK\r\nX: y", []),
    ("OK", []),
    ("200 OK", [("Bad Name", "v")]),
    ("200 OK", [("X", 1)]),
    ("200 OK", (("X", "y"),)),
    ("200 OK", [("Content-Length", "abc")]),
])
def test_invalid_start_response_is_500(status, headers, caplog) -> None:
    def app(environ, start_response):
        start_response(status, headers)
        return [b"body"]

    with caplog.at_level(logging.ERROR, logger=LOG.name):
        outcome, _, data = respond(app)
    line, hdrs, body = split(data)
    assert line == "HTTP/1.1 500 Internal Server Error"
    assert body == b"500 Internal Server Error\n" and hdrs["connection"] == "close"
    assert b"Set-Cookie" not in data and not outcome.keep_alive


@pytest.mark.timeout(5)
@pytest.mark.parametrize("status", ["100 Continue", "103 Early Hints", "100 Whatever", "199"])
def test_an_interim_status_from_the_app_is_a_500_never_sent_as_final(status, caplog) -> None:
    def app(environ, start_response):
        start_response(status, [("Link", "</s.css>; rel=preload")])
        return [b"body"]

    for raw in (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"):
        with caplog.at_level(logging.ERROR, logger=LOG.name):
            outcome, sent, data = respond(app, raw)
        line, headers, body = split(data)
        assert line == "HTTP/1.1 500 Internal Server Error", data
        assert len(sent) == 1 and data.count(b"HTTP/1.1 ") == 1  # one final answer, no 1xx
        assert "link" not in headers and not outcome.keep_alive
    assert "interim (1xx)" in caplog.text


@pytest.mark.timeout(5)
@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_content_length_on_204_and_304(status) -> None:
    def app(environ, start_response):
        start_response(status, [("Content-Length", "7"), ("ETag", '"x"')])
        return [b"ignored"]

    outcome, _, data = respond(app)
    _, headers, body = split(data)
    assert "content-length" not in headers and "transfer-encoding" not in headers
    assert headers["etag"] == '"x"' and body == b"" and outcome.keep_alive


@pytest.mark.timeout(5)
def test_the_same_content_length_twice_is_sent_once_and_two_different_ones_are_500() -> None:
    def twice(environ, start_response):
        start_response("200 OK", [("Content-Length", "2"), ("content-length", "2")])
        return [b"ok"]

    outcome, _, data = respond(twice)
    assert data.lower().count(b"content-length:") == 1
    assert split(data)[2] == b"ok" and outcome.keep_alive

    def differ(environ, start_response):
        start_response("200 OK", [("Content-Length", "2"), ("Content-Length", "3")])
        return [b"ok"]

    outcome, _, data = respond(differ)
    assert split(data)[0] == "HTTP/1.1 500 Internal Server Error"


@pytest.mark.timeout(5)
@pytest.mark.parametrize("status,line", [("200", "HTTP/1.1 200 OK"),
                                         ("404", "HTTP/1.1 404 Not Found"),
                                         ("299", "HTTP/1.1 299 Unknown"),
                                         ("200 Fine", "HTTP/1.1 200 Fine")])
def test_a_status_without_a_reason_phrase_gets_one(status, line) -> None:
    def app(environ, start_response):
        start_response(status, [])
        return [b"x"]

    assert split(respond(app)[2])[0] == line


@pytest.mark.timeout(5)
def test_app_exception_before_headers(caplog) -> None:
    closed = []

    class Body:
        def __iter__(self):
            raise RuntimeError("secret detail")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    with caplog.at_level(logging.ERROR, logger=LOG.name):
        outcome, _, data = respond(app)
    assert data.startswith(b"HTTP/1.1 500 ") and b"secret" not in data
    assert "secret detail" in caplog.text and "Traceback" in caplog.text
    assert closed == [True] and not outcome.keep_alive and outcome.status == 500


@pytest.mark.timeout(5)
def test_app_exception_after_headers(caplog) -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"partial"
        raise ValueError("late")

    with caplog.at_level(logging.ERROR, logger=LOG.name):
        outcome, _, data = respond(app)
    assert data.startswith(b"HTTP/1.1 200 OK") and not data.endswith(b"0\r\n\r\n")
    assert not outcome.keep_alive and "late" in caplog.text


@pytest.mark.timeout(5)
def test_start_response_twice_and_exc_info() -> None:
    def twice(environ, start_response):
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b""]

    assert respond(twice)[2].startswith(b"HTTP/1.1 500 ")

    def replaced(environ, start_response):
        start_response("200 OK", [("X-A", "1")])
        try:
            raise KeyError("x")
        except KeyError:
            import sys
            start_response("503 Service Unavailable", [("X-B", "2")], sys.exc_info())
        return [b"sorry"]

    line, headers, body = split(respond(replaced)[2])
    assert line == "HTTP/1.1 503 Service Unavailable" and "x-a" not in headers
    assert body == b"sorry"

    def after_sent(environ, start_response):
        write = start_response("200 OK", [])
        write(b"started")
        try:
            raise KeyError("boom")
        except KeyError:
            import sys
            start_response("500 Oops", [], sys.exc_info())
        return [b"never"]

    outcome, _, data = respond(after_sent)
    assert data.startswith(b"HTTP/1.1 200 OK") and not outcome.keep_alive


@pytest.mark.timeout(5)
def test_write_callable() -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "6")])
        write(b"abc")
        write(b"def")
        return []

    outcome, sent, data = respond(app)
    assert split(data)[2] == b"abcdef" and outcome.keep_alive and len(sent) == 2


@pytest.mark.timeout(5)
def test_hop_by_hop_and_app_connection_close() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Connection", "close"), ("Transfer-Encoding", "chunked"),
                                  ("Keep-Alive", "timeout=5"), ("Date", "X"), ("Server", "me")])
        return [b"x"]

    outcome, _, data = respond(app)
    _, headers, body = split(data)
    assert headers["connection"] == "close" and "transfer-encoding" not in headers
    assert "keep-alive" not in headers and headers["date"] == "X" and headers["server"] == "me"
    assert data.count(b"Date:") == 1 and body == b"x" and not outcome.keep_alive


@pytest.mark.timeout(5)
def test_may_keep_alive_false_closes() -> None:
    outcome, _, data = respond(hello, may_keep_alive=lambda: False)
    assert split(data)[1]["connection"] == "close" and not outcome.keep_alive


@pytest.mark.timeout(5)
def test_client_gone_closes_iterable() -> None:
    closed = []

    class Body:
        def __iter__(self):
            yield b"a" * 10
            yield b"b" * 10

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    def send(data: bytes) -> None:
        raise ClientDisconnected("gone")

    handler = WSGIHandler(app, HTTPSettings(), LOG)
    request = parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    env = handler.build_environ(request, handler.connection_info(("1.1.1.1", 1), ("::", 1)),
                                EMPTY_INPUT)
    outcome = handler.run_app(env, request, send)
    assert outcome.aborted and not outcome.keep_alive and closed == [True]


@pytest.mark.timeout(5)
def test_file_wrapper_fallback_without_sendfile(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100_000)

    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 4096)

    outcome, sent, data = respond(app)
    _, headers, body = split(data)
    assert headers["transfer-encoding"] == "chunked"
    assert body.replace(b"1000\r\n", b"").count(b"x") == 100_000


@pytest.mark.timeout(5)
def test_in_memory_body_and_validator() -> None:
    from wsgiref.validate import validator

    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body) + 3))])
        return [b"got" + body]

    wrapped = validator(app)
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: x/y\r\nContent-Length: 4\r\n\r\n"
    outcome, _, data = respond(wrapped, raw, body=b"data")
    assert split(data)[2] == b"gotdata" and outcome.keep_alive


@pytest.mark.timeout(5)
def test_error_response_is_access_logged() -> None:
    from arbiter.http import ProtocolError

    rec = Recorder()
    handler = WSGIHandler(hello, HTTPSettings(), LOG, rec)
    info = handler.connection_info(("127.0.0.1", 9), ("127.0.0.1", 80))
    data = handler.error_response(ProtocolError(400, "bad"), info)
    line, headers, body = split(data)
    assert line == "HTTP/1.1 400 Bad Request" and body == b"400 Bad Request\n"
    assert headers["connection"] == "close" and headers["content-type"].startswith("text/plain")
    assert rec.calls[0][1] == "400 Bad Request"
