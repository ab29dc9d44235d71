"""Reforking (``refork_after``): the next workers are forked from a warm one.

A worker forked from the master shares its pages only until it warms up
(caches, lazily imported modules, reference counts); each becomes, in time,
a full copy. With ``refork_after: [N1, N2, ...]`` the first worker of the
generation to have served N1 requests becomes the *mold*: the master asks it
for every new worker from then on (its warm pages are shared by them), and
replaces the other workers one at a time by workers forked from it, through
the recycle path (the old one serves until its replacement is ready, then
stops gracefully: no request is dropped). Once a worker forked from the mold
has served N2 requests it becomes the mold in turn, and so on down the list;
after the last step the last mold stays the mold. The mold keeps serving
(it is one of ``workers``): it forks only at a quiet point of its own loop
(:mod:`arbiter.workers.mold`), which is why only ``can_refork`` types
(preforked, threaded, pooled, evented, asgi) can be molds; on the other
(forked) the setting is a warning at start, and its workers are forked from
the master.

The master is a ``PR_SET_CHILD_SUBREAPER`` (Linux): the mold double-forks, so
each new worker is re-parented to the master, which reaps, signals and
kills it as any other. It learns the pid from the worker's scoreboard row
(the row it claimed in state ``FORK_REQUESTED``) or from the intermediate's
``forked`` notice, whichever comes first; a request not answered within
``boot_timeout`` is given up, and the master forks from itself again. The
refork generation (``ctl status``: GEN ``1.2``) counts the forks between the
master and a worker. A reload starts over: the new generation is forked
from the master, and its own first worker to serve N1 requests is the next
mold. When the mold dies, workers are forked from the master until a new
mold is chosen.

A mixin of :class:`arbiter.master.loop.Master`. The supervisor
(:mod:`arbiter.master.supervisor`) asks ``fork_from_mold`` before it forks
a worker itself and tells ``worker_gone`` what it reaped; the loop calls
``manage_reforks`` each turn; replacing uses the recycle path
(:mod:`arbiter.master.recycling`).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from arbiter import workers
from arbiter.appload import worker_type_chosen
from arbiter.master.process import become_subreaper
from arbiter.scoreboard import FORK_REQUESTED
from arbiter.workers.mold import REFORK_SIGNAL


@dataclass
class ForkRequest:
    """A worker the master asked the mold for, not seen yet."""

    slot: int
    number: int
    generation: Any  # arbiter.master.supervisor.Generation
    mold: Any  # the WorkerProcess asked
    asked_at: float


class Reforking:
    """Choose the mold, ask it for workers, adopt them, replace the old ones."""

    def enable_reforking(self, cfg: Any) -> None:
        """At start and on reload: a config with ``refork_after`` makes us the subreaper."""
        if not cfg.refork_after or self.subreaper:
            return
        self.subreaper = become_subreaper()
        if not self.subreaper:
            self.log.warning("refork_after: %s needs Linux (PR_SET_CHILD_SUBREAPER); every "
                             "worker is forked from the master",
                             list(cfg.refork_after))

    def mold_usable(self, gen: Any) -> bool:
        mold = self.mold
        return (mold is not None and gen is self.current and mold.generation is gen
                and mold.pid in self.workers and mold.kill_at is None)

    def fork_from_mold(self, gen: Any) -> bool:
        """Ask the mold for one worker of ``gen``; False: fork it from the master."""
        if not self.mold_usable(gen):
            return False
        assert self.scoreboard is not None and self.mold is not None
        slot = self.free_slot()
        if slot is None:
            return False
        used = {w.number for w in self.workers.values() if w.generation is gen}
        used |= {r.number for r in self.fork_requests.values() if r.generation is gen}
        number = next(n for n in range(1, len(used) + 2) if n not in used)
        self.scoreboard.claim(slot, gen.number, number, FORK_REQUESTED)
        self.fork_requests[slot] = ForkRequest(slot, number, gen, self.mold, time.monotonic())
        try:
            os.kill(self.mold.pid, REFORK_SIGNAL)
        except ProcessLookupError:
            pass  # reaped on this turn; the request expires
        return True

    def forks_in_flight(self, gen: Any) -> int:
        return sum(1 for r in self.fork_requests.values() if r.generation is gen)

    def forked_notice(self, text: str) -> None:
        """The intermediate's ``forked SLOT PID`` notice."""
        slot, _, pid = text.partition(" ")
        if slot.isdigit() and pid.isdigit() and int(slot) in self.fork_requests:
            self.adopt(self.fork_requests.pop(int(slot)), int(pid))

    def adopt_forks(self) -> None:
        """Adopt the workers whose pid is in their row; give up on stale requests."""
        assert self.scoreboard is not None
        now = time.monotonic()
        for slot, request in list(self.fork_requests.items()):
            row = self.scoreboard.read(slot)
            if row.pid > 0:
                del self.fork_requests[slot]
                self.adopt(request, row.pid)
                continue
            mold_gone = request.mold.pid not in self.workers
            never_taken = mold_gone and row.state == FORK_REQUESTED
            stopped = bool(self.stop_mode) and now >= self.stop_deadline
            if never_taken or stopped or \
                    now - request.asked_at > request.generation.cfg.boot_timeout:
                del self.fork_requests[slot]
                self.scoreboard.release(slot)
                if self.mold is request.mold and not mold_gone:
                    self.log.error("worker #%d (pid %d), the mold, did not fork a worker within "
                                   "boot_timeout (%g s): new workers start from the master",
                                   request.mold.number, request.mold.pid,
                                   request.generation.cfg.boot_timeout)
                    self.mold = None

    def adopt(self, request: ForkRequest, pid: int) -> None:
        """A worker forked by the mold is ours now (our child, by the subreaper)."""
        from arbiter.master.supervisor import WorkerProcess

        mold = request.mold
        worker = WorkerProcess(pid, request.slot, request.number, request.generation,
                               request.asked_at,
                               refork_generation=mold.refork_generation + 1)
        self.workers[pid] = worker
        self.log.info("worker #%d (pid %d, generation %d) forked from worker #%d (pid %d), the "
                      "mold: refork generation %d", worker.number, pid,
                      request.generation.number, mold.number, mold.pid,
                      worker.refork_generation)
        if self.stop_mode:  # forked while we stop: it stops with the others
            worker.retiring = True
            worker.kill_at = self.stop_deadline
            try:
                os.kill(pid, signal.SIGTERM if self.stop_mode == "graceful" else signal.SIGINT)
            except ProcessLookupError:
                pass
        elif request.generation is not self.current and (
                self.pending is None or request.generation is not self.pending.generation):
            self.stop_worker(worker, signal.SIGTERM, "replaced by reload")

    def worker_gone(self, worker: Any) -> None:
        """The reaper's word: a worker exited. When it was the mold, fork from the master."""
        if worker is not self.mold:
            return
        self.mold = None
        children = any(w.refork_generation > worker.refork_generation
                       for w in self.workers.values() if w.generation is worker.generation)
        if not children and worker.generation is self.current:
            self.refork_stage = worker.refork_generation  # another may take its place
        if not self.stop_mode and worker.reason != "replaced by reload":
            self.log.warning("worker #%d (pid %d), the mold, is gone: new workers start from "
                             "the master until another becomes the mold", worker.number,
                             worker.pid)

    def reset_reforks(self) -> None:
        """A reload committed: its workers come from the master; the list starts over."""
        self.mold = None
        self.refork_stage = 0

    def manage_reforks(self) -> None:
        """Each turn: adopt forked workers, choose the mold, replace one old worker."""
        self.adopt_forks()
        gen = self.current
        if gen is None or self.pending is not None or self.winched or not self.subreaper:
            return
        steps = gen.cfg.refork_after
        if not steps:
            return
        if not workers.worker_class(gen.worker_type).can_refork:
            # worker_type unset and the app served as a type that cannot (an explicit
            # type was warned about at start)
            if not worker_type_chosen(gen.cfg) and self.refork_refused is not gen:
                self.refork_refused = gen
                self.log.warning("refork_after has no effect on %s workers: every worker is "
                                 "forked from the master", gen.worker_type)
            return
        self.choose_mold(gen, steps)
        mold = self.mold
        if not self.mold_usable(gen) or self.fork_requests:
            return
        assert mold is not None
        if any(w.reason == "reforked" and w.awaiting_replacement for w in self.workers.values()):
            return  # one at a time
        if sum(1 for w in self.live_workers(gen) if w.ready) < self.target:
            return  # a worker still boots
        old = [w for w in self.live_workers(gen)
               if w is not mold and w.refork_generation <= mold.refork_generation]
        if not old:
            return
        worker = min(old, key=lambda w: (w.refork_generation, w.spawned_at))
        self.log.info("worker #%d (pid %d, refork generation %d): replacing it by a worker "
                      "forked from the mold", worker.number, worker.pid,
                      worker.refork_generation)
        worker.retiring = True
        worker.reason = "reforked"
        worker.awaiting_replacement = True

    def choose_mold(self, gen: Any, steps: tuple[int, ...]) -> None:
        """The first worker of the newest refork generation past its step is the mold."""
        assert self.scoreboard is not None
        stage = self.refork_stage
        if stage >= len(steps):
            return
        best = None
        for worker in self.live_workers(gen):
            if not worker.ready or worker.refork_generation != stage:
                continue
            served = self.scoreboard.read(worker.slot).requests
            if served >= steps[stage] and (best is None or served > best[0]):
                best = (served, worker)
        if best is None:
            return
        served, worker = best
        self.mold = worker
        self.refork_stage = stage + 1
        self.log.info("worker #%d (pid %d, generation %d) served %d requests (refork_after "
                      "step %d: %d): it is the mold; the other workers are replaced one at a "
                      "time by workers forked from it (refork generation %d)",
                      worker.number, worker.pid, gen.number, served, stage + 1, steps[stage],
                      worker.refork_generation + 1)
