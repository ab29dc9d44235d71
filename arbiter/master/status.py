"""What the master tells: the status snapshot, readiness, systemd, ``arbiter ctl``.

Owns ``snapshot()``, everything ``arbiter ctl status`` and the admin
``/status``, ``/metrics`` and status page show, as plain data: the master,
each worker's scoreboard row, memory and utilization, restarts, reloads, and
exact request counters (finished workers plus the live ones); the sampling of
every worker's busy time once a second for the utilization windows
(:mod:`arbiter.utilization`); ``serving_ready()`` for ``/readyz``;
the one-line status systemd shows, READY=1 once the first generation serves,
and the watchdog ping; and the control socket's command handler (status,
scale, reload, reopen, stop).

A mixin of :class:`arbiter.master.loop.Master`. It reads the state the loop
keeps, counting ready workers with ``live_workers``
(:mod:`arbiter.master.supervisor`); a command acts through the loop
(``handle_signal``, ``begin_stop``, ``reload_requested``, ``target``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from arbiter.master.process import process_memory
from arbiter.scoreboard import (
    BOOTING,
    DURATION_BUCKETS,
    METHODS,
    QUEUE_BUCKETS,
    STATE_NAMES,
    STATUS_CLASSES,
    Counters,
)


class StatusReport:
    """Snapshot, readiness and status line; the control socket's commands."""

    # -- control socket (arbiter ctl) ---------------------------------------------------
    def handle_control(self, request: dict[str, Any], reply: Callable[[dict[str, Any]], None]
                       ) -> None:
        command = request.get("command")
        if command == "status":
            reply({"ok": True, "status": self.snapshot()})
        elif command == "scale":
            self.control_scale(str(request.get("workers", "")), reply)
        elif command == "reload":
            if self.stop_mode:
                reply({"ok": False, "outcome": "the master is stopping"})
            elif self.pending is not None or self.reload_requested:
                reply({"ok": False, "outcome": "a reload is already in progress; try again"})
            else:
                self.log.info("reload requested through the control socket")
                self.reload_requested = True
                self.reload_waiters.append(reply)
        elif command == "reopen":
            self.handle_signal(signal.SIGUSR1)
            reply({"ok": True, "outcome": "log files reopened"})
        elif command == "stop":
            now = bool(request.get("now"))
            reply({"ok": True, "outcome": "stopping now" if now else "stopping gracefully"})
            self.begin_stop("fast" if now else "graceful")
        else:
            reply({"ok": False, "error": f"unknown command {command!r}"})

    def control_scale(self, spec: str, reply: Callable[[dict[str, Any]], None]) -> None:
        try:
            number = int(spec)
        except ValueError:
            reply({"ok": False, "error": f"scale: expected N, +N or -N, got {spec!r}"})
            return
        target = self.target + number if spec[:1] in "+-" else number
        if target < 1:
            reply({"ok": False, "error": f"scale: at least 1 worker (asked for {target})"})
            return
        self.target = target
        self.log.info("scaling to %d worker(s) (control socket)", target)
        reply({"ok": True, "outcome": f"scaling to {target} worker(s)", "workers": target})

    # -- status ---------------------------------------------------------------------
    def busy_readings(self, now: float) -> dict[int, float]:
        """Every live worker's busy seconds (its scoreboard counter), by pid."""
        assert self.scoreboard is not None
        return {pid: self.scoreboard.busy_seconds(worker.slot, now)
                for pid, worker in self.workers.items()}

    def sample_utilization(self) -> None:
        """Once a second (each turn of the loop asks): sample the busy counters."""
        now = time.monotonic()
        if self.scoreboard is not None and self.utilization.due(now):
            self.utilization.sample(self.busy_readings(now), now,
                                    {pid: w.spawned_at for pid, w in self.workers.items()})

    def request_counters(self) -> tuple[Counters, int]:
        """Exact request counters: finished workers plus the live ones."""
        assert self.scoreboard is not None
        total = Counters.zero()
        total.add(self.finished_counters)
        requests = self.finished_requests
        for worker in self.workers.values():
            total.add(self.scoreboard.counters(worker.slot))
            requests += self.scoreboard.read(worker.slot).requests
        return total, requests

    def snapshot(self) -> dict[str, Any]:
        """Everything `arbiter ctl status`, /status and /metrics show, as plain data."""
        assert self.scoreboard is not None and self.current is not None
        now = time.monotonic()
        busy = self.busy_readings(now)
        workers = []
        for worker in sorted(self.workers.values(), key=lambda w: (w.generation.number, w.number)):
            row = self.scoreboard.read(worker.slot)
            state = STATE_NAMES.get(row.state, "unknown")
            if worker.retiring and row.state != BOOTING:
                state = "draining"
            current = None
            if row.in_flight and row.request_started:
                current = {"method": row.method, "path": row.path,
                           "age": round(now - row.request_started, 3)}
            memory = process_memory(worker.pid)
            workers.append({
                "pid": worker.pid, "number": worker.number,
                "generation": worker.generation.number, "age": round(now - worker.spawned_at, 3),
                "state": state, "ready": worker.ready, "requests": row.requests,
                "in_flight": row.in_flight, "connections": row.connections, "current": current,
                "rss": memory[0], "uss": memory[1],
                "refork_generation": worker.refork_generation, "mold": worker is self.mold,
                "last_heartbeat": round(now - row.heartbeat, 3),
                "utilization": self.utilization.worker(worker.pid, busy[worker.pid], now),
            })
        counters, requests = self.request_counters()
        cumulative, running = [], 0
        for count in counters.buckets:
            running += count
            cumulative.append(running)
        cfg = self.current.cfg
        return {
            "master": {
                "pid": self.pid, "uptime": round(time.time() - self.started_at, 3),
                "config": cfg.source, "worker_type": self.current.worker_type, "app": cfg.app,
                "listeners": [lst.name for lst in self.listeners.values()],
                "generation": self.current.number, "target_workers": self.target,
                "reloading": self.pending is not None, "stopping": self.stop_mode,
                "draining": bool(self.draining_until) and not self.stop_mode,
                "crash_loop_failures": self.boot_failures,
                "next_spawn_in": round(max(0.0, self.next_spawn_at - now), 3),
                "ready": self.serving_ready(),
                "mold": self.mold.pid if self.mold is not None else None,
            },
            "workers": workers,
            # Busy fraction of all live workers' capacity, per window (arbiter.utilization).
            "utilization": self.utilization.server(busy, now),
            "restarts": dict(self.restarts),
            "reloads": dict(self.reloads),
            "requests": {
                "total": requests,
                "by_status": dict(zip(STATUS_CLASSES, counters.by_status, strict=True)),
                "by_method": dict(zip(METHODS, counters.by_method, strict=True)),
                # JSON has no infinity: the last bound is "+Inf", as Prometheus writes it
                "duration_buckets": [[bound if bound != float("inf") else "+Inf", count]
                                     for bound, count
                                     in zip(DURATION_BUCKETS, cumulative, strict=True)],
                "duration_sum": counters.duration_sum,
                # How long requests waited before their app started (max_queue_time),
                # and how many were refused 503 for waiting too long.
                "queue_buckets": [[bound if bound != float("inf") else "+Inf", count]
                                  for bound, count
                                  in zip(QUEUE_BUCKETS, accumulate(counters.queue_buckets),
                                         strict=True)],
                "queue_sum": round(counters.queue_sum, 6),
                "shed": counters.shed,
            },
            # The workers' event loops (evented, asgi) blocked past reactor_block_warning.
            "reactor": {"stalls": counters.stalls,
                        "blocked_seconds": round(counters.blocked_seconds, 6)},
        }

    def serving_ready(self) -> bool:
        """/readyz: some worker of the current generation serves and we're not stopping.

        A worker being recycled (max_requests, max_worker_memory, a hung request
        in a thread worker) still serves until its replacement is ready, so a
        routine recycle never takes readiness away."""
        if self.stop_mode or self.draining_until or self.current is None:
            return False
        return any(w.ready and (not w.retiring or w.awaiting_replacement)
                   for w in self.workers.values() if w.generation is self.current)

    # -- systemd ------------------------------------------------------------------
    def status_line(self) -> str:
        gen = self.current
        if gen is None:
            return "starting"
        ready = sum(1 for w in self.live_workers(gen) if w.ready)
        text = (f"generation {gen.number}: {ready}/{self.target} {gen.worker_type} "
                f"worker(s) ready")
        if self.pending is not None:
            new = sum(1 for w in self.live_workers(self.pending.generation) if w.ready)
            text += f"; reloading: {new}/{self.target} new worker(s) ready"
        if self.boot_failures:
            text += f"; crash-loop backoff ({self.boot_failures} failure(s) in a row)"
        return text

    def announce_first_ready(self) -> None:
        """READY=1 once, when the whole first generation has loaded the app."""
        if self.announced_ready or self.current is None:
            return
        ready = sum(1 for w in self.live_workers(self.current) if w.ready)
        if ready >= self.target:
            self.announced_ready = True
            self.log.info("ready: %d %s worker(s) serving", ready, self.current.worker_type)
            if self.upgraded_from:
                self.notify.mainpid(ready=True, status=self.status_line())
            else:
                self.notify.ready(self.status_line())
            if self.current.hooks is not None:
                self.current.hooks.call("when_ready", self)

    def ping_watchdog(self) -> None:
        interval = self.notify.watchdog_interval()
        if not interval:
            return
        now = time.monotonic()
        if now >= self.next_watchdog:
            self.notify.watchdog()
            self.notify.status(self.status_line())
            self.next_watchdog = now + interval
