"""Sharing the accept queue between workers through the scoreboard (arbiter.io.balance)."""

from __future__ import annotations

import time

from arbiter.io.balance import DEFER, FORCED, STUCK_AFTER, AcceptShare
from arbiter.scoreboard import BUSY, IDLE, Scoreboard


def board(workers: int = 2) -> tuple[Scoreboard, list]:
    scoreboard = Scoreboard(16)
    writers = []
    for slot in range(workers):
        scoreboard.claim(slot, 1, slot + 1)
        writer = scoreboard.writer(slot)
        writer.set_pid(1000 + slot)
        writer.set_state(IDLE)
        writers.append(writer)
    return scoreboard, writers


def test_a_worker_accepts_while_it_holds_at_most_one_more_than_its_least_loaded_peer():
    _, (mine, peer) = board()
    share, peer_share = AcceptShare(mine, 2), AcceptShare(peer, 2)
    now = time.monotonic()
    peer_share.publish(4)
    assert not share.should_defer(5, now)
    assert share.should_defer(6, now)
    assert mine.memory[mine.base + 14] == 1  # the peers see it deferring
    assert share.deferred_until == now + DEFER


def test_it_accepts_again_as_soon_as_the_peers_caught_up():
    _, (mine, peer) = board()
    share, peer_share = AcceptShare(mine, 2), AcceptShare(peer, 2)
    now = time.monotonic()
    peer_share.publish(0)
    assert share.should_defer(3, now)
    assert not share.caught_up(3, now + 0.001)
    peer_share.publish(2)
    assert share.caught_up(3, now + 0.002)


def test_peers_that_do_not_accept_are_not_counted():
    scoreboard, (mine, peer, third) = board(3)
    share = AcceptShare(mine, 3)
    now = time.monotonic()
    AcceptShare(third, 3).publish(10)
    AcceptShare(peer, 3).publish(0)
    assert share.should_defer(5, now)  # the peer holding 0 serves
    peer.set_closed()  # draining: it accepts nothing more
    assert not share.should_defer(5, now + 1)
    scoreboard.claim(1, 2, 2)  # a new worker in that slot, still booting
    assert not share.should_defer(5, now + 2)
    peer.set_pid(1001)
    peer.set_state(BUSY)
    peer.request_started("GET", "/slow")  # one request, running for a long time
    later = time.monotonic() + STUCK_AFTER * 2
    assert not share.should_defer(5, later)


def test_peers_that_take_nothing_while_free_to_get_the_queue_taken_anyway():
    _, (mine, peer) = board()
    share, peer_share = AcceptShare(mine, 2), AcceptShare(peer, 2)
    now = time.monotonic()
    peer_share.publish(0)
    assert share.should_defer(4, now)
    back = now + DEFER
    assert not share.should_defer(4, back)  # they took nothing: accept, for FORCED
    assert not share.should_defer(9, back + FORCED / 2)
    assert share.should_defer(9, back + FORCED + 0.001)  # then the share counts again


def test_a_peer_deferring_itself_is_waited_for_not_overrun():
    _, (mine, peer) = board()
    share, peer_share = AcceptShare(mine, 2), AcceptShare(peer, 2)
    now = time.monotonic()
    peer_share.publish(2)
    peer_share.deferring(True)  # it left the queue to this worker a moment ago
    assert share.should_defer(4, now)
    assert share.should_defer(4, now + DEFER)  # no evidence it is busy: defer again


def test_a_lone_worker_never_defers():
    _, (mine,) = board(1)
    share = AcceptShare(mine, 1)
    assert not share.should_defer(500, time.monotonic())
