"""Prometheus metrics for the admin listener's ``/metrics``.

A custom ``prometheus_client`` collector over ``Master.snapshot()``: every
scrape reads the scoreboard afresh (no sampling, no multiprocess files
directory). The request counters are exact across workers because the
snapshot already adds the final counts of every worker that exited (a worker
recycled by ``max_requests`` loses nothing).

The scoreboard counts responses by status class and requests by method
separately (not their cross product), so they are two metrics:
``arbiter_responses_total{status_class}`` and
``arbiter_requests_by_method_total{method}``.

Utilization (:mod:`arbiter.utilization`) is two gauges per window (``10s``,
``60s``): ``arbiter_worker_utilization{worker,generation,window}``, each live
worker's busy fraction (worker numbers repeat across generations during a
reload, hence the generation label), and ``arbiter_utilization{window}``, the
whole server's (busy seconds summed over capacity) -- what an autoscaler
reads.

``arbiter_listen_queue_depth{listener}`` is read from Linux's ``TCP_INFO`` on
each listening TCP socket: for a socket in the LISTEN state the kernel reports
the current accept-queue length as ``tcpi_unacked`` and the backlog as
``tcpi_sacked``. Unix sockets and other platforms are skipped.
"""

from __future__ import annotations

import math
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

import arbiter

WORKER_STATES = ("booting", "idle", "busy", "draining")
MEMORY_KINDS = ("rss", "uss")

TCP_LISTEN = 10  # tcp_info.tcpi_state of a listening socket
_TCP_INFO_SIZE = 104
_TCP_INFO_QUEUE = struct.Struct("<II")  # tcpi_unacked, tcpi_sacked
_TCP_INFO_QUEUE_OFFSET = 24  # 8 one-byte fields, then rto, ato, snd_mss, rcv_mss (u32 each)


def listen_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(connections waiting to be accepted, backlog) of a listening TCP socket.

    None where the kernel does not tell (not Linux, not TCP, not listening).
    """
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(raw) < _TCP_INFO_QUEUE_OFFSET + _TCP_INFO_QUEUE.size or raw[0] != TCP_LISTEN:
        return None
    depth, backlog = _TCP_INFO_QUEUE.unpack_from(raw, _TCP_INFO_QUEUE_OFFSET)
    return depth, backlog


def _bound_label(bound: Any) -> str:
    """A histogram bucket's ``le`` label: "+Inf" for the last one, else the float's repr."""
    if isinstance(bound, str):
        return "+Inf" if bound.lstrip("+").lower() in ("inf", "infinity") else bound
    value = float(bound)
    return "+Inf" if math.isinf(value) else repr(value)


def _own_rss() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class ArbiterCollector:
    """Yields the metric families of one ``master.snapshot()`` per scrape."""

    def __init__(self, master: Any) -> None:
        self.master = master

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; collect() reads the live master

    def collect(self) -> Iterator[Metric]:
        snap = self.master.snapshot()
        info, workers, requests = snap["master"], snap["workers"], snap["requests"]
        yield from self._requests(requests, workers)
        yield from self._workers(info, workers)
        yield from self._utilization(snap["utilization"], workers)
        yield from self._lifecycle(snap)
        yield from self._master(info)
        yield from self._listen_queues()
        yield from self._reactor(snap["reactor"])

    def _reactor(self, reactor: dict[str, Any]) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "arbiter_reactor_stalls", "Times a worker's event loop was blocked longer than "
            "reactor_block_warning (evented, asgi)", value=reactor["stalls"])
        yield CounterMetricFamily(
            "arbiter_reactor_blocked_seconds", "Seconds workers' event loops spent blocked "
            "in those stalls", value=reactor["blocked_seconds"])

    # -- requests ---------------------------------------------------------------
    def _requests(self, requests: dict[str, Any], workers: list[dict[str, Any]]
                  ) -> Iterator[Metric]:
        yield CounterMetricFamily("arbiter_requests", "Requests served, all workers, exact",
                                  value=requests["total"])
        by_status = CounterMetricFamily("arbiter_responses",
                                        "Responses sent, by status class",
                                        labels=["status_class"])
        for status_class, count in requests["by_status"].items():
            by_status.add_metric([status_class], count)
        yield by_status
        by_method = CounterMetricFamily("arbiter_requests_by_method",
                                        "Requests served, by method (unlisted methods: other)",
                                        labels=["method"])
        for method, count in requests["by_method"].items():
            by_method.add_metric([method], count)
        yield by_method
        buckets = [(_bound_label(bound), count) for bound, count in requests["duration_buckets"]]
        if not buckets or buckets[-1][0] != "+Inf":  # the exposition requires a +Inf bucket
            buckets.append(("+Inf", buckets[-1][1] if buckets else 0))
        yield HistogramMetricFamily("arbiter_request_duration_seconds",
                                    "Time from the request head to the end of the response",
                                    buckets=buckets, sum_value=requests["duration_sum"])
        queue = [(_bound_label(bound), count) for bound, count in requests["queue_buckets"]]
        yield HistogramMetricFamily("arbiter_request_queue_seconds",
                                    "Time a request waited before a worker started it (a "
                                    "trusted proxy's X-Request-Start, else the kernel's "
                                    "receive time of its first bytes)",
                                    buckets=queue, sum_value=requests["queue_sum"])
        yield CounterMetricFamily("arbiter_requests_shed",
                                  "Requests answered 503 unread: they waited longer than "
                                  "max_queue_time", value=requests["shed"])
        yield GaugeMetricFamily("arbiter_requests_in_flight", "Requests being served now",
                                value=sum(w["in_flight"] for w in workers))

    # -- workers ------------------------------------------------------------------
    def _workers(self, info: dict[str, Any], workers: list[dict[str, Any]]) -> Iterator[Metric]:
        states = dict.fromkeys(WORKER_STATES, 0)
        for worker in workers:
            if worker["state"] in states:
                states[worker["state"]] += 1
        by_state = GaugeMetricFamily("arbiter_workers", "Worker processes, by state",
                                     labels=["state"])
        for state, count in states.items():
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily("arbiter_workers_target", "Workers the master keeps running",
                                value=info["target_workers"])
        memory = GaugeMetricFamily(
            "arbiter_worker_memory_bytes",
            "Memory of all workers: rss (counts shared pages once per worker) and uss "
            "(private pages, what max_worker_memory limits)", labels=["kind"])
        largest = GaugeMetricFamily("arbiter_worker_memory_max_bytes",
                                    "Memory of the largest worker", labels=["kind"])
        for kind in MEMORY_KINDS:
            values = [w[kind] for w in workers if w.get(kind) is not None]
            memory.add_metric([kind], sum(values))
            largest.add_metric([kind], max(values, default=0))
        yield memory
        yield largest

    def _utilization(self, server: dict[str, float], workers: list[dict[str, Any]]
                     ) -> Iterator[Metric]:
        per_worker = GaugeMetricFamily(
            "arbiter_worker_utilization",
            "Fraction of a worker's capacity in use over the window (time in requests / "
            "wall time; pooled, threaded, forked: divided by their concurrency)",
            labels=["worker", "generation", "window"])
        for worker in workers:
            for window, value in worker["utilization"].items():
                per_worker.add_metric([str(worker["number"]), str(worker["generation"]), window],
                                      value)
        yield per_worker
        whole = GaugeMetricFamily("arbiter_utilization",
                                  "Fraction of all workers' capacity in use over the window",
                                  labels=["window"])
        for window, value in server.items():
            whole.add_metric([window], value)
        yield whole

    # -- restarts and reloads -------------------------------------------------------
    def _lifecycle(self, snap: dict[str, Any]) -> Iterator[Metric]:
        restarts = CounterMetricFamily("arbiter_worker_restarts",
                                       "Workers replaced, by reason", labels=["reason"])
        for reason, count in snap["restarts"].items():
            restarts.add_metric([reason], count)
        yield restarts
        reloads = CounterMetricFamily("arbiter_reloads", "Reload transactions, by outcome",
                                      labels=["outcome"])
        for outcome, count in snap["reloads"].items():
            reloads.add_metric([outcome], count)
        yield reloads

    # -- the master -------------------------------------------------------------------
    def _master(self, info: dict[str, Any]) -> Iterator[Metric]:
        yield InfoMetricFamily("arbiter", "The running arbiter",
                               value={"version": str(getattr(arbiter, "__version__", "")),
                                      "worker_type": str(info["worker_type"])})
        yield GaugeMetricFamily("arbiter_generation",
                                "Generation of the serving workers (+1 per committed reload)",
                                value=info["generation"])
        yield GaugeMetricFamily("arbiter_ready", "1 when /readyz answers 200",
                                value=1 if info["ready"] else 0)
        yield GaugeMetricFamily("arbiter_draining",
                                "1 between TERM and the graceful stop (drain_delay)",
                                value=1 if info.get("draining") else 0)
        yield GaugeMetricFamily("arbiter_crash_loop_failures",
                                "Workers that failed to boot in a row (0: no backoff)",
                                value=info.get("crash_loop_failures", 0))
        yield GaugeMetricFamily("arbiter_master_uptime_seconds", "Seconds since the master started",
                                value=info["uptime"])
        rss = _own_rss()
        if rss is not None:
            yield GaugeMetricFamily("arbiter_master_memory_bytes",
                                    "Resident memory of the master process", value=rss)

    def _listen_queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("arbiter_listen_queue_depth",
                                  "Connections waiting to be accepted (Linux, TCP listeners)",
                                  labels=["listener"])
        backlog = GaugeMetricFamily("arbiter_listen_queue_max",
                                    "The accept queue's capacity (the effective backlog)",
                                    labels=["listener"])
        for listener in list(getattr(self.master, "listeners", {}).values()):
            try:
                queue, name = listen_queue(listener.sock), listener.name
            except OSError:  # closed under us (stopping)
                continue
            if queue is None:
                continue
            depth.add_metric([name], queue[0])
            backlog.add_metric([name], queue[1])
        yield depth
        yield backlog


def make_registry(master: Any) -> CollectorRegistry:
    """A registry holding only the arbiter collector (no default process collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArbiterCollector(master))  # type: ignore[arg-type]
    return registry
