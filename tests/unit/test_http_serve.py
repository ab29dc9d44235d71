"""serve_connection over socket.socketpair(): the blocking driver end to end."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from arbiter.http import HTTPSettings, WSGIHandler
from arbiter.io.blocking import serve_connection

LOG = logging.getLogger("test.http.serve")


class Observer:
    def __init__(self) -> None:
        self.events: list = []
        self.queued: list = []
        self.beats = 0

    def heartbeat(self) -> None:
        self.beats += 1

    def request_started(self, method: str, path: str, key: object = None) -> None:
        self.events.append(("start", method, path))

    def request_finished(self, status: int, key: object = None,
                         duration: float | None = None) -> None:
        self.events.append(("finish", status))

    def request_queued(self, seconds: float, shed: bool) -> None:
        self.queued.append((seconds, shed))


class Server:
    """serve_connection in a thread on one end of a socketpair; the test is the client."""

    def __init__(self, app, observer=None, may_keep_alive=lambda: True,
                 stopping=lambda: False, **settings) -> None:
        self.handler = WSGIHandler(app, HTTPSettings(**settings), LOG)
        self.server_sock, self.client = socket.socketpair()
        self.client.settimeout(5)
        self.observer = observer or Observer()
        self.result: list[int] = []
        self.thread = threading.Thread(target=self._run, args=(may_keep_alive, stopping),
                                       daemon=True)
        self.thread.start()
        self.buf = b""

    def _run(self, may_keep_alive, stopping) -> None:
        self.result.append(serve_connection(
            self.handler, self.server_sock, "", "", may_keep_alive=may_keep_alive,
            observer=self.observer, stopping=stopping))

    def send(self, data: bytes) -> None:
        self.client.sendall(data)

    def _fill(self) -> bool:
        data = self.client.recv(65536)
        self.buf += data
        return bool(data)

    def response(self) -> tuple[str, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(self.buf)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(": ")
            headers[name.lower()] = value
        status = lines[0]
        if " 100 " in status + " ":
            return status, headers, b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            if self.method_was_head:
                n = 0
            while len(self.buf) < n:
                if not self._fill():
                    raise EOFError
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, _, rest = self.buf.partition(b"\r\n")
                size = int(size_line, 16)
                while len(rest) < size + 2:
                    self._fill()
                    size_line, _, rest = self.buf.partition(b"\r\n")
                body += rest[:size]
                self.buf = rest[size + 2:]
                if size == 0:
                    break
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return status, headers, body

    method_was_head = False

    def closed(self) -> bool:
        """True if the server closed the connection (EOF after what was buffered)."""
        try:
            return self.client.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    def finish(self) -> int:
        self.client.close()
        self.thread.join(5)
        assert not self.thread.is_alive()
        return self.result[0]


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " + environ["PATH_INFO"].encode("latin-1")]


GET = b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_keep_alive_and_observer(parser: str) -> None:
    srv = Server(hello, parser=parser)
    srv.send(GET % b"one")
    status, headers, body = srv.response()
    assert status == "HTTP/1.1 200 OK" and body == b"hello /one"
    assert "connection" not in headers
    srv.send(GET % b"two")
    assert srv.response()[2] == b"hello /two"
    assert srv.finish() == 2
    assert srv.observer.events == [("start", "GET", "/one"), ("finish", 200),
                                   ("start", "GET", "/two"), ("finish", 200)]
    assert srv.observer.beats >= 2


@pytest.mark.timeout(10)
def test_pipelined_answered_in_order() -> None:
    srv = Server(hello)
    srv.send(GET % b"a" + GET % b"b" + GET % b"c")
    assert [srv.response()[2] for _ in range(3)] == [b"hello /a", b"hello /b", b"hello /c"]
    assert srv.finish() == 3


@pytest.mark.timeout(10)
def test_may_keep_alive_false_closes() -> None:
    srv = Server(hello, may_keep_alive=lambda: False)
    srv.send(GET % b"x" + GET % b"y")
    status, headers, body = srv.response()
    assert headers["connection"] == "close" and body == b"hello /x"
    assert srv.closed()
    assert srv.finish() == 1


@pytest.mark.timeout(10)
def test_client_connection_close_and_http10() -> None:
    srv = Server(hello)
    srv.send(b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert srv.response()[1]["connection"] == "close"
    assert srv.closed()
    srv.finish()
    srv = Server(hello)
    srv.send(b"GET /d HTTP/1.0\r\n\r\n")
    assert srv.response()[2] == b"hello /d" and srv.closed()
    srv.finish()


@pytest.mark.timeout(10)
def test_head() -> None:
    srv = Server(hello)
    srv.method_was_head = True
    srv.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = srv.response()
    assert headers["content-length"] == "8" and body == b""
    srv.method_was_head = False
    srv.send(GET % b"after")
    assert srv.response()[2] == b"hello /after"
    srv.finish()


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


@pytest.mark.timeout(10)
def test_expect_100_continue() -> None:
    srv = Server(echo)
    srv.send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    status, _, _ = srv.response()
    assert status == "HTTP/1.1 100 Continue"
    srv.send(b"hello")
    status, _, body = srv.response()
    assert status == "HTTP/1.1 200 OK" and body == b"hello"
    srv.send(GET % b"next")
    assert srv.response()[:2][0] == "HTTP/1.1 200 OK"  # echo of an empty body
    srv.finish()


@pytest.mark.timeout(10)
def test_expect_100_not_sent_if_never_read() -> None:
    srv = Server(hello)
    srv.send(b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    status, headers, body = srv.response()
    assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"
    assert srv.closed()
    srv.finish()


@pytest.mark.timeout(10)
def test_chunked_streaming_input_and_readline() -> None:
    def app(environ, start_response):
        stream = environ["wsgi.input"]
        lines = [stream.readline(), stream.readline(3), stream.read(2), stream.read()]
        start_response("200 OK", [])
        return [b"|".join(lines)]

    srv = Server(app)
    srv.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab\nc\r\n")
    time.sleep(0.05)
    srv.send(b"6;x=y\r\ndefghi\r\n0\r\nX-T: 1\r\n\r\n")
    assert srv.response()[2] == b"ab\n|cde|fg|hi"
    srv.send(GET % b"z")
    assert srv.response()[2] == b"|||"  # the same app, no body this time
    srv.finish()


@pytest.mark.timeout(10)
def test_unread_body_is_drained() -> None:
    srv = Server(hello)
    srv.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n" + b"x" * 20000
             + GET % b"q")
    assert srv.response()[2] == b"hello /p"
    assert srv.response()[2] == b"hello /q"
    assert srv.finish() == 2


@pytest.mark.timeout(10)
def test_chunked_body_over_limit_is_413() -> None:
    srv = Server(echo, limit_body=10)
    srv.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
    status, headers, _ = srv.response()
    assert status.startswith("HTTP/1.1 413") and headers["connection"] == "close"
    assert srv.closed()
    srv.finish()


@pytest.mark.timeout(10)
def test_content_length_over_limit_answered_before_body() -> None:
    srv = Server(echo, limit_body=10)
    srv.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
    status, headers, body = srv.response()
    assert status == "HTTP/1.1 413 Content Too Large" or status.startswith("HTTP/1.1 413")
    assert body.startswith(b"413 ")
    srv.finish()


@pytest.mark.timeout(10)
def test_write_callable_streams() -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"one,")
        write(b"two,")
        return [b"three"]

    srv = Server(app)
    srv.send(GET % b"")
    status, headers, body = srv.response()
    assert headers["transfer-encoding"] == "chunked" and body == b"one,two,three"
    srv.finish()


@pytest.mark.timeout(10)
def test_close_called_and_file_wrapper_sendfile(tmp_path) -> None:
    path = tmp_path / "data.bin"
    payload = bytes(range(256)) * 1000
    path.write_bytes(payload)
    files = []

    def app(environ, start_response):
        f = open(path, "rb")
        f.seek(256)
        files.append(f)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)

    srv = Server(app)
    srv.send(GET % b"f")
    status, headers, body = srv.response()
    assert headers["content-length"] == str(len(payload) - 256) and body == payload[256:]
    srv.send(GET % b"g")
    assert srv.response()[2] == payload[256:]
    srv.finish()
    assert all(f.closed for f in files)


@pytest.mark.timeout(10)
def test_app_exception_gives_500_and_traceback_logged(caplog) -> None:
    def app(environ, start_response):
        raise RuntimeError("kaboom internals")

    with caplog.at_level(logging.ERROR, logger=LOG.name):
        srv = Server(app)
        srv.send(GET % b"x")
        status, headers, body = srv.response()
        assert status == "HTTP/1.1 500 Internal Server Error"
        assert body == b"500 Internal Server Error\n" and headers["connection"] == "close"
        assert srv.closed()
        srv.finish()
    assert "kaboom internals" in caplog.text and "Traceback" in caplog.text


@pytest.mark.timeout(10)
@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_bad_request_closes_and_next_not_answered(parser: str) -> None:
    srv = Server(hello, parser=parser)
    srv.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
             b"\r\n\r\n0\r\n\r\n" + GET % b"smuggled")
    status, headers, body = srv.response()
    assert status == "HTTP/1.1 400 Bad Request" and headers["connection"] == "close"
    assert body == b"400 Bad Request\n"
    assert srv.buf == b"" and srv.closed()
    assert srv.finish() == 0
    assert srv.observer.events == [("finish", 400)]


@pytest.mark.timeout(10)
def test_endless_request_line_gets_414() -> None:
    srv = Server(hello, limit_request_line=100)
    srv.send(b"GET /" + b"a" * 300)
    status, headers, _ = srv.response()
    assert status.startswith("HTTP/1.1 414") and headers["connection"] == "close"
    srv.finish()


@pytest.mark.timeout(10)
def test_keepalive_timeout_closes_idle_connection() -> None:
    srv = Server(hello, keepalive=0.2)
    srv.send(GET % b"k")
    srv.response()
    t0 = time.monotonic()
    assert srv.closed()
    assert time.monotonic() - t0 < 2
    srv.finish()


@pytest.mark.timeout(10)
def test_keepalive_zero_closes_after_response() -> None:
    srv = Server(hello, keepalive=0)
    srv.send(GET % b"k")
    assert srv.response()[1]["connection"] == "close"
    assert srv.closed()
    srv.finish()


@pytest.mark.timeout(10)
def test_a_head_not_complete_within_header_timeout_is_408() -> None:
    srv = Server(hello, header_timeout=0.2)
    srv.send(b"GET / HTTP/1.1\r\nHo")
    status, headers, _ = srv.response()
    assert status.startswith("HTTP/1.1 408") and headers["connection"] == "close"
    srv.finish()


@pytest.mark.timeout(10)
def test_stopping_finishes_current_then_closes() -> None:
    stop = threading.Event()

    def app(environ, start_response):
        stop.set()
        start_response("200 OK", [])
        return [b"last"]

    srv = Server(app, stopping=stop.is_set)
    srv.send(GET % b"s")
    status, headers, body = srv.response()
    assert body == b"last" and headers["connection"] == "close"
    assert srv.closed()
    srv.finish()


@pytest.mark.timeout(10)
def test_stopping_while_idle_keeps_the_connection_for_its_next_request() -> None:
    """A stop never cuts a kept-alive connection under its client (who may be sending
    right now, like nginx reusing it for a POST): its next request is answered with
    Connection: close, and then it closes."""
    stop = threading.Event()
    srv = Server(hello, stopping=stop.is_set)
    srv.send(GET % b"1")
    srv.response()
    beats = srv.observer.beats
    stop.set()
    deadline = time.monotonic() + 5  # the driver looks at stopping() once per tick:
    while srv.observer.beats < beats + 2 and time.monotonic() < deadline:  # two beats
        time.sleep(0.01)
    assert srv.observer.beats >= beats + 2
    srv.send(GET % b"2")
    status, headers, _ = srv.response()
    assert status.startswith("HTTP/1.1 200") and headers["connection"] == "close"
    assert srv.closed()
    srv.finish()


@pytest.mark.timeout(10)
def test_stopping_while_idle_closes_at_the_keepalive_timeout() -> None:
    stop = threading.Event()
    srv = Server(hello, stopping=stop.is_set, keepalive=0.5)
    srv.send(GET % b"1")
    srv.response()
    stop.set()
    started = time.monotonic()
    assert srv.closed()
    assert 0.3 < time.monotonic() - started < 3


@pytest.mark.timeout(10)
def test_client_disconnect_mid_response() -> None:
    closed = threading.Event()

    class Body:
        def __iter__(self):
            for _ in range(2000):
                yield b"x" * 65536

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    srv = Server(app)
    srv.send(GET % b"big")
    srv.client.recv(100)
    srv.client.close()
    srv.thread.join(5)
    assert not srv.thread.is_alive() and closed.is_set()


@pytest.mark.timeout(10)
def test_garbage_and_reset_never_raise() -> None:
    srv = Server(hello)
    srv.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 50 + b"\r\n\r\n")
    status, _, _ = srv.response()
    assert status.startswith("HTTP/1.1 400")
    srv.finish()
    srv = Server(hello)
    srv.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    srv.send(b"GET / HTTP/1.1\r\nHo")
    assert srv.finish() == 0


@pytest.mark.timeout(10)
def test_validator_app_get_post_head() -> None:
    from wsgiref.validate import validator

    def app(environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        payload = b"method=" + environ["REQUEST_METHOD"].encode() + b" body=" + body
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(payload)))])
        return [payload]

    srv = Server(validator(app))
    srv.send(GET % b"v")
    assert srv.response()[2] == b"method=GET body="
    srv.send(b"POST /v HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
             b"\r\nabc")
    assert srv.response()[2] == b"method=POST body=abc"
    srv.method_was_head = True
    srv.send(b"HEAD /v HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = srv.response()
    assert status == "HTTP/1.1 200 OK" and body == b""
    assert srv.finish() == 3


@pytest.mark.timeout(20)
def test_large_bodies_arrive_whole_to_a_slow_reader() -> None:
    """A head and a 3 MiB body (written together), then a streamed 1 MiB one: every
    byte arrives, in order, to a client that reads in small pieces with pauses."""
    big = bytes(range(256)) * (3 * 4096)
    streamed = [b"x" * 65536] * 16

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/big":
            start_response("200 OK", [("Content-Length", str(len(big)))])
            return [big]
        start_response("200 OK", [])
        return iter(streamed)

    server = Server(app)
    server.send(GET % b"big" + GET % b"stream")
    received = bytearray()
    deadline = time.monotonic() + 15
    want = len(big) + len(b"".join(streamed))
    while len(received) < want and time.monotonic() < deadline:
        piece = server.client.recv(4096)
        if not piece:
            break
        received += piece
        if len(received) % (256 * 1024) < 4096:
            time.sleep(0.001)  # a reader that pauses now and then
    server.buf = bytes(received)
    status, headers, body = server.response()
    assert status.endswith("200 OK") and body == big
    status, headers, body = server.response()
    assert status.endswith("200 OK") and body == b"".join(streamed)
    assert server.finish() == 2
