"""Utilization: the window arithmetic, and the busy seconds a scoreboard row carries."""

from __future__ import annotations

import os
import time

import pytest

from arbiter.scoreboard import Scoreboard
from arbiter.utilization import BusyHistory, Utilization, fraction

pytestmark = pytest.mark.timeout(10)


def sampled(points: list[tuple[float, float]], key: object = "w") -> Utilization:
    """A Utilization that sampled one worker's (time, busy seconds) points."""
    util = Utilization()
    for now, busy in points:
        util.sample({key: busy}, now)
    return util


def test_a_worker_busy_half_the_time_is_at_half():
    # busy 0.5 s of every second for 70 s
    util = sampled([(t, t * 0.5) for t in range(0, 71)])
    assert util.worker("w", 35.0, 70.0) == {"10s": 0.5, "60s": 0.5}


def test_each_window_sees_only_its_own_seconds():
    # idle for 60 s, then fully busy for the last 10 s
    points = [(t, 0.0) for t in range(0, 61)] + [(t, float(t - 60)) for t in range(61, 71)]
    util = sampled(points)
    got = util.worker("w", 10.0, 70.0)
    assert got["10s"] == 1.0
    assert got["60s"] == pytest.approx(10 / 60, abs=1e-3)


def test_a_running_request_counts_up_to_now():
    # the last sample (t=20) read 2 s; at t=20.5 the row reads 4.5 s (a request running):
    # the window ends at the reading, not at the last sample
    util = sampled([(t, 0.0) for t in range(11, 20)] + [(20.0, 2.0)])
    assert util.worker("w", 4.5, 20.5)["10s"] == pytest.approx(4.5 / 9.5, abs=1e-3)


def test_a_young_worker_is_measured_over_its_life():
    util = sampled([(100.0, 0.0), (101.0, 0.5)])
    assert util.worker("w", 1.0, 102.0) == {"10s": 0.5, "60s": 0.5}


def test_what_a_worker_did_before_its_first_sample_counts():
    # born at t=10 (counter 0); first sampled at t=11, after a 0.5 s request
    util = Utilization()
    util.sample({"w": 0.5}, 11.0, born={"w": 10.0})
    assert util.worker("w", 0.5, 12.0)["10s"] == 0.25
    util.sample({"w": 0.5, "v": 0.2}, 12.0)  # no birth time: measured from first sight
    assert util.worker("v", 0.2, 13.0)["10s"] == 0.0


def test_no_sample_or_no_time_is_zero():
    util = Utilization()
    assert util.worker("unknown", 3.0, 5.0) == {"10s": 0.0, "60s": 0.0}
    util.sample({"w": 1.0}, 5.0)
    assert util.worker("w", 1.0, 5.0) == {"10s": 0.0, "60s": 0.0}  # wall time 0
    assert fraction(1.0, 0.0) == 0.0


def test_never_below_zero_nor_above_one():
    history = BusyHistory(10)
    history.add(0.0, 5.0)
    history.add(1.0, 3.0)  # went back: held at 5
    assert history.samples[-1] == (1.0, 5.0)
    assert history.span(2.0, 4.0, 10.0) == (0.0, 2.0)
    assert history.span(2.0, 50.0, 10.0) == (2.0, 2.0)  # more busy than wall: capped
    assert fraction(3.0, 2.0) == 1.0


def test_sampling_is_once_per_interval_and_the_ring_is_bounded():
    util = Utilization()
    assert util.due(0.0)
    util.sample({"w": 0.0}, 0.0)
    assert not util.due(0.5) and util.due(1.0)
    for t in range(1, 500):
        util.sample({"w": float(t)}, float(t))
    assert len(util.histories["w"].samples) == util.size == 62  # 60 s at 1 s, and slack
    assert util.worker("w", 499.0, 499.0) == {"10s": 1.0, "60s": 1.0}


def test_workers_that_are_gone_are_forgotten():
    util = Utilization()
    util.sample({"a": 0.0, "b": 0.0}, 0.0)
    util.sample({"b": 1.0}, 1.0)
    assert set(util.histories) == {"b"}


def test_the_server_is_busy_sum_over_wall_sum():
    util = Utilization()
    for t in range(0, 21):
        # a: busy all the time; b: idle; c: started at t=15, half busy
        readings = {"a": float(t), "b": 0.0}
        if t >= 15:
            readings["c"] = (t - 15) * 0.5
        util.sample(readings, float(t))
    now = 20.0
    readings = {"a": 20.0, "b": 0.0, "c": 2.5}
    # 10s: a 10/10, b 0/10, c 2.5/5 -> 12.5 / 25
    assert util.server(readings, now)["10s"] == 0.5
    # 60s (the samples go back to t=0): a 20/20, b 0/20, c 2.5/5 -> 22.5 / 45
    assert util.server(readings, now)["60s"] == 0.5
    assert Utilization().server({}, now) == {"10s": 0.0, "60s": 0.0}


def test_a_row_counts_busy_seconds_single_request():
    board = Scoreboard(2)
    writer = board.writer(1)
    assert board.busy_seconds(1, time.monotonic()) == 0.0
    writer.request_started("GET", "/slow")
    started = writer.busy_mark
    # while it runs, a reader sees it grow up to "now"
    assert board.busy_seconds(1, started + 2.0) == pytest.approx(2.0)
    writer.request_finished(200)
    done = time.monotonic()
    assert 0 < board.busy_seconds(1, done) <= done - started
    assert board.busy_seconds(1, done + 100.0) == board.busy_seconds(1, done)  # idle now
    assert board.busy_seconds(0, done) == 0.0  # the other row
    writer.request_started("GET", "/again")  # a second request adds to the first
    assert board.busy_seconds(1, writer.busy_mark + 1.0) == pytest.approx(writer.busy + 1.0)


def test_a_row_counts_a_fraction_of_capacity():
    board = Scoreboard(1)
    writer = board.writer(0)
    writer.account_busy(10.0, 0.25)  # one of four threads busy from t=10
    writer.account_busy(14.0, 0.75)  # three of four from t=14
    writer.account_busy(16.0, 0.0)
    assert board.busy_seconds(0, 30.0) == pytest.approx(4 * 0.25 + 2 * 0.75)
    writer.publish_busy(7.0, 40.0, 0.5)  # a forked worker's children, added up
    assert board.busy_seconds(0, 42.0) == pytest.approx(8.0)


def test_a_forked_writer_busy_time_is_seen_by_the_master():
    board = Scoreboard(1)
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            writer = board.writer(0)
            writer.account_busy(1.0, 1.0)
            writer.account_busy(3.5, 0.0)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert board.busy_seconds(0, 100.0) == pytest.approx(2.5)
