"""The connection lifecycle as a table: phases, deadlines and what a stop means, no sockets."""

from __future__ import annotations

import logging
import time

import pytest

from arbiter.http import HTTPConnection, HTTPSettings, WSGIHandler
from arbiter.http.app_response import RequestBodyError, ResponseOutcome
from arbiter.http.bodies import BodySpool, SpoolMemory
from arbiter.http.lifecycle import (
    APP,
    BODY,
    CLOSE,
    CLOSED,
    DRAIN_LIMIT,
    FIRST_HEAD,
    GIVE_WAY_GRACE,
    HANDSHAKE,
    HEAD,
    IDLE,
    LINGER,
    LINGER_THEN_CLOSE,
    PROXY,
    READ,
    RESPOND,
    WRITE,
    Lifecycle,
    TransferBudget,
)
from arbiter.http.parsers import make_head_parser
from arbiter.http.proxy_protocol import ProxyHeaderReader

GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"
T0 = 1000.0


class Recorder:
    def __init__(self) -> None:
        self.events: list = []
        self.queued: list = []

    def heartbeat(self) -> None:
        return None

    def request_started(self, method: str, path: str, key: object = None) -> None:
        self.events.append(("start", method, path))

    def request_finished(self, status: int, key: object = None,
                         duration: float | None = None) -> None:
        self.events.append(("finish", status))

    def request_queued(self, seconds: float, shed: bool) -> None:
        self.queued.append((seconds, shed))


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]


def make(buffer_bodies: bool = False, **settings) -> tuple[Lifecycle, Recorder]:
    options = {"header_timeout": 10.0, "keepalive": 5.0, "read_timeout": 30.0,
               "min_transfer_rate": 1024.0, **settings}
    proxy = options.pop("proxy", False)
    tls = options.pop("tls", False)
    handler = WSGIHandler(app, HTTPSettings(**options), logging.getLogger("test.lifecycle"))
    observer = Recorder()
    memory = SpoolMemory()
    lc = Lifecycle(handler, HTTPConnection(handler.settings, make_head_parser("httptools")),
                   ("127.0.0.1", 5000), ("127.0.0.1", 8000), T0, observer=observer,
                   tls=tls, proxy=proxy, buffer_bodies=buffer_bodies,
                   body_store=lambda: BodySpool(memory))
    return lc, observer


def answered(lc: Lifecycle, now: float, keep_alive: bool = True) -> None:
    lc.response_done(ResponseOutcome(200, keep_alive, 2, False), now)


def test_the_first_head_must_come_within_header_timeout_of_the_accept() -> None:
    lc, _ = make()
    assert (lc.next(T0), lc.phase, lc.deadline) == (READ, FIRST_HEAD, T0 + 10)
    lc.received(b"GET / HT", T0 + 9)
    assert (lc.next(T0 + 9), lc.deadline) == (READ, T0 + 10)  # the clock ran from accept
    lc.timed_out(T0 + 10)
    assert lc.next(T0 + 10) == WRITE and lc.take_output().startswith(b"HTTP/1.1 408 ")
    assert lc.next(T0 + 10) == LINGER_THEN_CLOSE and lc.phase == LINGER
    assert lc.next(T0 + 10) == READ  # discard what the client still sends
    lc.received(b"", T0 + 10.1)
    assert lc.next(T0 + 10.1) == CLOSE


def test_a_connection_that_never_sends_a_byte_is_closed_without_an_answer() -> None:
    lc, observer = make()
    lc.next(T0)
    lc.timed_out(T0 + 10)
    assert lc.next(T0 + 10) == CLOSE and not lc.out and observer.events == []


def test_keep_alive_cycle_idle_deadline_and_the_next_head_clock() -> None:
    lc, observer = make()
    lc.received(GET % b"a", T0 + 1)
    assert lc.next(T0 + 1) == RESPOND and lc.phase == APP
    assert lc.may_keep_alive()
    answered(lc, T0 + 2)
    assert (lc.next(T0 + 2), lc.phase, lc.deadline) == (READ, IDLE, T0 + 7)
    lc.received(b"GET /b HTTP/1.1\r\n", T0 + 4)
    assert (lc.next(T0 + 4), lc.phase, lc.deadline) == (READ, HEAD, T0 + 14)
    lc.received(b"Host: x\r\n\r\n", T0 + 5)
    assert lc.next(T0 + 5) == RESPOND
    assert observer.events == [("start", "GET", "/a"), ("finish", 200), ("start", "GET", "/b")]


def test_a_pipelined_head_already_buffered_gets_a_fresh_clock() -> None:
    lc, _ = make()
    lc.received(GET % b"1" + b"GET /2 HTTP/1.1\r\nHo", T0)
    assert lc.next(T0) == RESPOND
    answered(lc, T0 + 30)  # a slow app: the second head waited 30 s in the buffer
    assert (lc.next(T0 + 30), lc.phase, lc.deadline) == (READ, HEAD, T0 + 40)


def test_a_stop_never_cuts_a_kept_alive_connection() -> None:
    lc, _ = make()
    lc.received(GET % b"a", T0)
    lc.next(T0)
    answered(lc, T0 + 1)
    lc.next(T0 + 1)
    lc.stop(T0 + 2)
    assert (lc.next(T0 + 2), lc.phase, lc.deadline) == (READ, IDLE, T0 + 6)  # unchanged
    lc.received(GET % b"b", T0 + 3)  # the client was sending: it is served...
    assert lc.next(T0 + 3) == RESPOND
    assert not lc.may_keep_alive()  # ...with Connection: close
    answered(lc, T0 + 3, keep_alive=False)
    assert lc.next(T0 + 3) in (CLOSE, LINGER_THEN_CLOSE)


def test_a_stop_keeps_a_fresh_connection_for_its_first_request() -> None:
    lc, _ = make()
    lc.next(T0)
    lc.stop(T0 + 1)
    assert (lc.next(T0 + 1), lc.phase, lc.deadline) == (READ, FIRST_HEAD, T0 + 10)


def test_giving_way_to_a_waiting_client_after_a_grace_once() -> None:
    lc, _ = make()
    lc.received(GET % b"a", T0)
    lc.next(T0)
    answered(lc, T0)
    lc.next(T0)
    assert lc.may_give_way
    lc.give_way(T0 + 1)
    assert lc.deadline == T0 + 1 + GIVE_WAY_GRACE and not lc.may_give_way
    lc.give_way(T0 + 1.01)
    assert lc.deadline == T0 + 1 + GIVE_WAY_GRACE
    lc.timed_out(T0 + 1.02)
    assert lc.next(T0 + 1.02) == CLOSE


def test_a_protocol_error_is_answered_then_lingered() -> None:
    lc, observer = make()
    lc.received(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", T0)
    assert lc.next(T0) == WRITE and lc.take_output().startswith(b"HTTP/1.1 400 ")
    assert lc.next(T0) == LINGER_THEN_CLOSE
    assert observer.events == [("finish", 400)]


def test_buffered_bodies_are_read_whole_with_100_continue_first() -> None:
    lc, _ = make(buffer_bodies=True)
    lc.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                b"Expect: 100-continue\r\n\r\n", T0)
    assert lc.next(T0) == WRITE and lc.take_output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert (lc.next(T0), lc.phase) == (READ, BODY)
    lc.received(b"0123", T0 + 1)
    assert lc.next(T0 + 1) == READ
    lc.received(b"456789", T0 + 2)
    assert lc.next(T0 + 2) == RESPOND and lc.body_input.read() == b"0123456789"
    answered(lc, T0 + 3)
    assert (lc.next(T0 + 3), lc.phase) == (READ, IDLE)


def test_a_buffered_body_trickled_is_cut_with_408() -> None:
    lc, _ = make(buffer_bodies=True, header_timeout=2.0)
    lc.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", T0)
    assert lc.next(T0) == READ and lc.deadline == pytest.approx(T0 + 2)
    for second in range(1, 3):  # a byte a second: the deadline hardly moves
        lc.received(b"x", T0 + second)
        lc.next(T0 + second)
    assert lc.deadline < T0 + 3
    lc.timed_out(lc.deadline)
    assert lc.next(lc.deadline) == WRITE and lc.take_output().startswith(b"HTTP/1.1 408 ")


def test_the_body_left_unread_is_drained_within_the_limit_else_closed() -> None:
    lc, _ = make()
    lc.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab", T0)
    assert lc.next(T0) == RESPOND and lc.may_keep_alive()
    answered(lc, T0)  # the app read nothing
    assert lc.next(T0) == READ  # draining the rest
    lc.received(b"cde" + GET % b"next", T0 + 1)
    assert lc.next(T0 + 1) == RESPOND and lc.request.path == b"/next"

    big, _ = make()
    big.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                 % (DRAIN_LIMIT + 1), T0)
    assert big.next(T0) == RESPOND
    assert not big.may_keep_alive()  # too much to drain: the answer says close


def test_a_streamed_body_too_slow_is_a_408_to_the_app() -> None:
    lc, _ = make()
    lc.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", T0)
    lc.next(T0)
    with pytest.raises(RequestBodyError) as raised:
        lc.read_body(lambda budget: None, lambda data: None, T0)
    assert raised.value.status == 408


def test_transfer_budget_counts_only_the_waits() -> None:
    budget = TransferBudget(T0, grace=10, min_rate=1000, stall=30)
    assert budget.wait_deadline(T0) == T0 + 10
    budget.waited(9)
    budget.moved(5000, T0 + 100)  # a slow app took 90 s: not the client's fault
    assert budget.wait_deadline(T0 + 100) == pytest.approx(T0 + 100 + 1 + 5)
    stalled = TransferBudget(T0, grace=10, min_rate=0, stall=30)
    stalled.moved(10, T0 + 5)
    assert stalled.wait_deadline(T0 + 6) == T0 + 35  # no rate: 30 s since the last byte
    held = TransferBudget(T0, grace=10, min_rate=1000, stall=30, limit_at=T0 + 3)
    assert held.wait_deadline(T0) == T0 + 3  # the hold limit (preforked: timeout)


def test_proxy_then_tls_then_the_first_head() -> None:
    lc, _ = make(proxy=True, tls=True)
    assert lc.phase == PROXY
    info = ProxyHeaderReader("v1").feed(b"PROXY TCP4 203.0.113.9 127.0.0.1 56324 8000\r\n")
    lc.proxy_done(info, T0 + 1)
    assert lc.phase == HANDSHAKE and lc.peer == ("203.0.113.9", 56324)
    assert lc.info.environ["REMOTE_ADDR"] == "203.0.113.9"
    lc.handshake_done(T0 + 2)
    assert (lc.phase, lc.deadline) == (FIRST_HEAD, T0 + 10)


def test_a_closed_connection_stays_closed() -> None:
    lc, _ = make()
    lc.received(b"", T0)
    assert lc.next(T0) == CLOSE and lc.phase == CLOSED


# ---------------------------------------------------------------- a driver that must not block
def test_next_body_piece_owes_100_continue_then_streams_the_body() -> None:
    lc, _ = make()
    lc.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                b"Expect: 100-continue\r\n\r\n", T0)
    assert lc.next(T0) == RESPOND
    assert lc.next_body_piece(T0 + 1) is None  # nothing yet: wait until lc.deadline
    assert lc.take_output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert (lc.phase, lc.deadline) == (BODY, T0 + 1 + 10)  # the budget's grace: header_timeout
    lc.received(b"abc", T0 + 2)
    assert lc.next_body_piece(T0 + 2) == b"abc"
    lc.received(b"def", T0 + 3)
    assert lc.next_body_piece(T0 + 3) == b"def"
    assert lc.next_body_piece(T0 + 3) == b""
    assert lc.phase == APP
    assert not lc.out  # the 100 Continue is owed once


def test_next_body_piece_counts_only_the_time_the_app_waits_for_the_client() -> None:
    lc, _ = make(read_timeout=5.0, min_transfer_rate=0.0)
    lc.received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", T0)
    assert lc.next(T0) == RESPOND
    assert lc.next_body_piece(T0) == b"abc"  # the app has bytes: nobody waits
    lc.received(b"def", T0 + 100)  # arrives while the app is busy elsewhere
    assert lc.budget.waited_total == 0.0
    assert lc.next_body_piece(T0 + 200) == b"def"
    assert lc.next_body_piece(T0 + 200) is None  # now the app waits
    assert lc.deadline == T0 + 200 + 5  # a stall: read_timeout after the wait began
    lc.received(b"ghij", T0 + 201)
    assert lc.budget.waited_total == 1.0
    assert lc.next_body_piece(T0 + 201) == b"ghij"


def test_next_body_piece_raises_the_core_s_refusal_and_too_slow_is_408() -> None:
    lc, _ = make(limit_body=4)
    lc.received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n3\r\ndef\r\n", T0)
    assert lc.next(T0) == RESPOND
    assert lc.next_body_piece(T0) == b"abc"
    with pytest.raises(RequestBodyError) as info:
        lc.next_body_piece(T0)
    assert info.value.status == 413
    assert lc.body_too_slow().status == 408


# -- queue time (admit) -------------------------------------------------------------
def test_each_request_waits_from_its_own_first_bytes() -> None:
    """Queue time runs from the kernel's stamp of a request's first bytes: the rest of a
    split head does not restart it, a kept-alive connection's next request has its own,
    a pipelined one shares the read that brought it."""
    lc, observer = make()
    wall = time.time()
    lc.received(b"GET /a HTTP/1.1\r\n", T0, stamp=wall - 3.0)
    lc.received(b"Host: x\r\n\r\n", T0, stamp=wall - 0.1)
    assert lc.next(T0) == RESPOND and lc.admit()
    assert 2.9 < lc.queue_time < 3.5 and lc.request.queue_time == lc.queue_time
    answered(lc, T0)
    assert lc.next(T0) == READ
    lc.received(GET % b"b" + GET % b"c", T0, stamp=wall - 1.0)
    for _ in "bc":
        assert lc.next(T0) == RESPOND and lc.admit()
        assert 0.9 < lc.queue_time < 1.5
        answered(lc, T0)
    assert [shed for _, shed in observer.queued] == [False, False, False]


def test_a_request_that_waited_past_max_queue_time_is_answered_503_unread() -> None:
    lc, observer = make(max_queue_time=0.5)
    lc.received(GET % b"late", T0, stamp=time.time() - 2.0)
    assert lc.next(T0) == RESPOND
    assert not lc.admit()
    assert lc.next(T0) == WRITE
    answer = lc.take_output()
    assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in answer
    assert b"\r\nConnection: close\r\n" in answer
    assert lc.next(T0) == CLOSE  # nothing unread: no linger
    assert observer.events[-1] == ("finish", 503) and observer.queued[-1][1] is True


def test_a_trusted_proxys_request_start_is_the_clock_an_untrusted_ones_is_not() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Start: t=%.3f\r\n\r\n" % (time.time() - 4)
    lc, _ = make()  # the peer 127.0.0.1 is in forwarded_allow_ips by default
    lc.received(head, T0, stamp=time.time())
    assert lc.next(T0) == RESPOND and lc.admit() and 3.9 < lc.queue_time < 4.5
    lc, _ = make(forwarded_allow_ips=())
    lc.received(head, T0, stamp=time.time())
    assert lc.next(T0) == RESPOND and lc.admit() and lc.queue_time < 0.5
