"""The reactor's pieces without sockets: deadline buckets."""

from __future__ import annotations

from arbiter.io.reactor import Connection, DeadlineBuckets


def test_deadline_buckets_fire_in_order_and_refile_moved_deadlines():
    timers = DeadlineBuckets()
    conns = [Connection(None, None, None) for _ in range(3)]  # type: ignore[arg-type]
    timers.schedule(conns[0], 10.0)
    timers.schedule(conns[1], 5.0)
    timers.schedule(conns[2], 5.0)
    timers.schedule(conns[2], 20.0)  # moved later: re-filed lazily when 5.0 comes due
    timers.schedule(conns[0], 2.0)  # moved earlier: re-filed at once
    assert timers.expired(1.9) == []
    assert timers.expired(2.3) == [conns[0]]
    assert timers.expired(6.0) == [conns[1]]
    assert timers.expired(19.9) == []
    assert timers.expired(20.3) == [conns[2]]
    timers.schedule(conns[1], 30.0)
    timers.cancel(conns[1])
    assert timers.expired(100.0) == [] and timers.next_due() is None
