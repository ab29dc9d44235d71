"""Bind address parsing, listener opening, and the scoreboard's shared rows."""

from __future__ import annotations

import os
import socket

import pytest

from arbiter.scoreboard import BOOTING, BUSY, IDLE, Scoreboard
from arbiter.sockets import BindError, open_listener, open_listeners, parse_address

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("text, family, host, port", [
    ("127.0.0.1:8000", socket.AF_INET, "127.0.0.1", 8000),
    ("localhost:0", socket.AF_INET, "localhost", 0),
    ("[::1]:9000", socket.AF_INET6, "::1", 9000),
    (":80", socket.AF_INET, "0.0.0.0", 80),
])
def test_tcp_addresses(text, family, host, port):
    address = parse_address(text)
    assert (address.family, address.host, address.port) == (family, host, port)


def test_unix_address_with_and_without_mode():
    assert parse_address("unix:/tmp/a.sock").path == "/tmp/a.sock"
    address = parse_address("unix:/tmp/a.sock:0660")
    assert (address.path, address.mode) == ("/tmp/a.sock", 0o660)


def test_fd_address():
    assert parse_address("fd://3").fd == 3


@pytest.mark.parametrize("text", ["nohostport", "1.2.3.4:99999", "::1:80", "fd://x", "unix:"])
def test_bad_addresses_are_refused(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_port_in_use_names_the_address():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(BindError, match=f"127.0.0.1:{port}"):
            open_listener(parse_address(f"127.0.0.1:{port}"), 16)
    finally:
        taken.close()


def test_unix_listener_replaces_a_stale_socket_and_unlinks_on_close(tmp_path):
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # leaves the file behind, nobody listening
    listener = open_listener(parse_address(f"unix:{path}:0600"), 16)
    assert os.stat(path).st_mode & 0o777 == 0o600
    listener.close()
    assert not os.path.exists(path)


def test_unix_listener_defaults_to_a_mode_a_local_proxy_can_use(tmp_path):
    """nginx's workers run as another user: the socket is 0666 unless the bind says less."""
    old_umask = os.umask(0o022)
    try:
        listener = open_listener(parse_address(f"unix:{tmp_path / 'd.sock'}"), 16)
    finally:
        os.umask(old_umask)
    try:
        assert os.stat(tmp_path / "d.sock").st_mode & 0o777 == 0o666
    finally:
        listener.close()


def test_failed_open_listeners_closes_what_it_opened():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(BindError):
            open_listeners(["127.0.0.1:0", f"127.0.0.1:{port}"], 16)
    finally:
        taken.close()


@pytest.mark.timeout(10)
def test_accepted_tcp_sockets_have_nodelay_and_read_without_blocking():
    """Nagle off on every accepted connection (from the listener on Linux, with no call
    per connection); the blocking-mode socket never blocks a transport's read."""
    import logging

    from arbiter.io.accept import accept_one
    from arbiter.io.transport import BlockingTransport, NonBlockingTransport

    listener = open_listener(parse_address("127.0.0.1:0"), 16)
    listener.sock.setblocking(False)
    client = socket.create_connection(listener.sock.getsockname()[:2], timeout=5)
    try:
        accepted = None
        for _ in range(1000):
            accepted = accept_one(listener, logging.getLogger("test"))
            if accepted is not None:
                break
        assert accepted is not None
        sock, _peer = accepted
        with sock:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert BlockingTransport(sock).recv() is None  # nothing sent yet: no wait
            assert NonBlockingTransport(sock).recv() is None
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")
            transport = BlockingTransport(sock)
            assert transport.recv_until(float("inf")) == b"GET / HTTP/1.1\r\n\r\n"
    finally:
        client.close()
        listener.close()


def test_scoreboard_rows_are_shared_with_a_forked_writer():
    board = Scoreboard(slots=4)
    board.claim(2, generation=5, number=3)
    assert board.read(2).state == BOOTING
    pid = os.fork()
    if pid == 0:
        writer = board.writer(2)
        writer.set_pid(os.getpid())
        writer.set_state(IDLE)
        writer.request_started("POST", "/orders")
        os._exit(0)
    os.waitpid(pid, 0)
    row = board.read(2)
    assert (row.pid, row.generation, row.number) == (pid, 5, 3)
    assert (row.state, row.in_flight, row.method, row.path) == (BUSY, 1, "POST", "/orders")
    writer = board.writer(2)
    writer.request_finished(200)
    row = board.read(2)
    assert (row.state, row.in_flight, row.requests) == (IDLE, 0, 1)
    board.release(2)
    assert board.read(2).pid == 0


def test_a_reader_never_sees_a_torn_heartbeat_or_start_while_a_worker_writes():
    """The master reads rows while workers write them from other processes."""
    import signal
    import time

    board = Scoreboard(slots=2)
    board.claim(1, generation=1, number=1)
    writer = board.writer(1)
    writer.heartbeat()
    pid = os.fork()
    if pid == 0:  # the worker: write as fast as it can
        try:
            while True:
                writer.request_started("GET", "/x")
                writer.heartbeat()
                writer.request_finished(200)
                writer.show_in_flight(2, time.monotonic(), "POST", "/y")
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 1.0
        reads = 0
        while time.monotonic() < deadline:
            row = board.read(1)
            reads += 1
            assert row.heartbeat > 0.0
            if row.in_flight:
                assert row.request_started > 0.0
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert reads > 1000


def test_a_row_read_while_its_worker_goes_idle_is_no_hung_request():
    """Seen on a busy box: the master read a pooled worker's row between the two stores
    of going idle (start 0, count still 1), took it for a request running since boot and
    recycled a healthy worker, cutting its connections."""
    import time
    from types import SimpleNamespace

    from arbiter.master.process import hung_verdict

    now = time.monotonic()
    torn = SimpleNamespace(heartbeat=now, in_flight=1, request_started=0.0)
    assert hung_verdict(torn, now, 30.0, "recycle") is None
    stuck = SimpleNamespace(heartbeat=now, in_flight=1, request_started=now - 31.0)
    assert hung_verdict(stuck, now, 30.0, "recycle") == ("a request has run for 31.0 s", True)


def test_going_idle_clears_the_count_before_the_start():
    import time

    board = Scoreboard(slots=2)
    board.claim(0, 1, 1)
    writer = board.writer(0)
    writer.show_in_flight(1, time.monotonic(), "POST", "/x")
    assert board.read(0).in_flight == 1
    writer.show_in_flight(0, 0.0, "", "")
    row = board.read(0)
    assert row.in_flight == 0 and row.state == IDLE


def test_a_fork_request_is_taken_once_by_the_mold():
    from arbiter.scoreboard import FORK_REQUESTED, NOT_READY

    board = Scoreboard(slots=4)
    mold = board.writer(0)
    board.claim(0, 1, 1)
    board.claim(2, 1, 3, FORK_REQUESTED)
    assert mold.fork_requests() == [2]
    assert board.read(2).state in NOT_READY  # the master does not count it ready
    child = mold.take_fork_request(2)
    assert mold.fork_requests() == []  # never forked twice
    assert (child.index, child.claimed_number()) == (2, 3)
    child.set_pid(4242)
    assert board.read(2).pid == 4242 and board.read(2).state == BOOTING
