"""The clocks a request's queue time is read from (arbiter.http.queue_time)."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from arbiter.http.queue_time import parse_request_start
from arbiter.io.stamps import enable_receive_timestamps, peek_stamp, recv_stamped

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(("value", "seconds"), [
    (b"t=1700000000.123", 1700000000.123),   # nginx: t=${msec}
    (b"t=1700000000123", 1700000000.123),    # milliseconds (Heroku)
    (b"t=1700000000123456", 1700000000.123456),  # microseconds
    (b"1700000000.5", 1700000000.5),         # no t=
    (b" t=1700000000 ", 1700000000.0),
])
def test_request_start_in_seconds_milliseconds_or_microseconds(value, seconds):
    assert parse_request_start(value) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize("value", [b"", b"t=", b"t=abc", b"t=-5", b"t=nan", b"t=inf",
                                   b"t=0", b"t=" + b"9" * 40])
def test_a_request_start_that_is_not_a_time_is_none(value):
    assert parse_request_start(value) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS is Linux's")
def test_bytes_that_waited_before_accept_carry_their_arrival_time():
    listener = socket.socket()
    client = None
    accepted = None
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert enable_receive_timestamps(listener)
        client = socket.create_connection(listener.getsockname())
        sent_at = time.time()
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        time.sleep(0.15)  # the request waits in the backlog
        accepted, _ = listener.accept()
        stamp = peek_stamp(accepted)
        assert stamp is not None and abs(stamp - sent_at) < 0.05
        data, again = recv_stamped(accepted, 1024)
        assert data == b"GET / HTTP/1.1\r\n\r\n" and again == stamp  # the peek took nothing
        accepted.setblocking(False)
        assert peek_stamp(accepted) is None  # nothing waits now
    finally:
        for sock in (client, accepted, listener):
            if sock is not None:
                sock.close()
