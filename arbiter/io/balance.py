"""Sharing the accept queue: a worker holding more connections than its peers lets them take the next.

Owns :class:`AcceptShare`. Every worker of a type that holds many
connections (evented, pooled, threaded) accepts on the same listening
socket, and the kernel wakes all of them (or whichever runs first): on its
own, whichever worker wakes first accepts the whole queue, and two workers
split 50 connections 50/0 as often as 25/25. So each worker publishes how
many connections it holds (its scoreboard row), and before accepting asks
``should_defer(mine, now)``: when it holds more than ``SLACK`` connections more
than the least loaded serving peer, it stops watching the listeners for up to
``DEFER`` seconds, leaving the queued clients to that peer (which the same
readiness woke), and looks every ``RECHECK`` seconds whether the peers have
caught up (``caught_up``): then it accepts again at once. (Without that, two
workers under ``Connection: close`` load deferred to each other in turn and
served a tenth of what one worker does.) A peer that is stopping, recycling, booting, or stuck in one
request for over ``STUCK_AFTER`` seconds does not count. When the deferral ends
the worker asks again: if the peers took connections meanwhile, it may defer
again; if they took none (every peer is busy, or asleep in a long call), it
accepts without asking for ``FORCED`` seconds. So a client waits at most
about ``DEFER`` longer than it would have, and a burst of connections is
dealt out rather than swallowed by the first worker awake.

Why this and not the alternatives (measured with ``scripts/balance.py``):
``EPOLLEXCLUSIVE`` wakes one waiter per arriving connection but the woken
worker still drains the queue, so a burst still lands on one worker; one
``SO_REUSEPORT`` socket per worker spreads connections by a hash of their
addresses (a binomial split: 50 connections over 2 workers are outside
±25 % of 25 about one run in fifteen, 20 connections one run in four) and drops the connections queued on a
worker's socket when that worker exits.
"""

from __future__ import annotations

from arbiter.scoreboard import PeerLoads, SlotWriter

__all__ = ["AcceptShare"]

SLACK = 1  # connections a worker may hold above the least loaded peer and still accept
DEFER = 0.01  # seconds a worker over its share leaves the queue to its peers
FORCED = 0.05  # after a deferral: accept without asking, for this long
STUCK_AFTER = 0.05  # a peer in one request for longer is not accepting
RECHECK = 0.001  # while deferring: how often to look whether the peers have caught up


class AcceptShare:
    """One worker's side of the shared accept queue (see the module docstring)."""

    __slots__ = ("slot", "peers", "forced_until", "published", "deferred_until",
                 "peers_held", "shown_deferring", "peers_free")

    def __init__(self, slot: SlotWriter, workers: int) -> None:
        self.slot = slot
        # Peers are in the lowest slots; a reload or a recycle briefly needs more.
        self.peers = PeerLoads(slot, min(slot.slots, 2 * max(1, workers) + 2))
        self.forced_until = 0.0
        self.deferred_until = 0.0
        self.peers_held = -1  # what the peers held when this worker last deferred
        self.published = -1
        self.shown_deferring = False
        self.peers_free = False  # the least loaded peer was not deferring when this one did

    def publish(self, held: int) -> None:
        """This worker now holds ``held`` connections."""
        if held != self.published:
            self.published = held
            self.slot.set_connections(held)

    def should_defer(self, held: int, now: float) -> bool:
        """True: leave the queued clients to a less loaded peer for ``DEFER`` seconds
        (until :meth:`deferring` says otherwise, the peers see this worker deferring)."""
        if held <= SLACK or now < self.forced_until:
            return False
        least, peers_held, least_defers = self.peers.others(now, STUCK_AFTER)
        if least is None or held <= least + SLACK:
            return False
        if self.peers_free and not least_defers and now >= self.deferred_until \
                and self.deferred_until + FORCED > now and peers_held <= self.peers_held:
            # Back from a deferral, and the peers, free to all along, took nothing:
            # they are busy.
            self.forced_until = now + FORCED
            return False
        self.deferred_until = now + DEFER
        self.peers_held = peers_held
        self.peers_free = not least_defers
        self.deferring(True)
        return True

    def caught_up(self, held: int, now: float) -> bool:
        """While deferring: the peers took enough (this worker is no longer over the least
        loaded one), so it accepts again without waiting out ``DEFER``."""
        least = self.peers.others(now, STUCK_AFTER)[0]
        return least is None or held <= least + SLACK

    def deferring(self, deferring: bool) -> None:
        """Tell the peers whether this worker is leaving the queue to them now."""
        if deferring != self.shown_deferring:
            self.shown_deferring = deferring
            self.slot.set_deferring(deferring)
