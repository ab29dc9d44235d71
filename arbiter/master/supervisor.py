"""The workers' life, as the master sees it: spawn, reap, respawn, scale.

Owns the master's records of a generation and of a worker; forking a worker
(and what the child closes and drops before it becomes one); reaping, and
what each exit means: a replacement, a restart counted by its reason, a boot
failure with crash-loop backoff (1 s, doubling up to 60 s, one probe worker
at a time), or, when the app cannot load at first start, the master's end;
marking workers ready from the scoreboard and killing those past
``boot_timeout``; stopping one worker with a kill deadline; and spawning or
retiring workers to the target count.

A mixin of :class:`arbiter.master.loop.Master`, which holds the state. From
the other parts it calls ``fork_from_mold``, ``forks_in_flight``,
``forked_notice`` and ``worker_gone`` (``refork_after``:
:mod:`arbiter.master.refork`), ``abort_reload`` (a worker of a pending reload
failed to boot: :mod:`arbiter.master.reload`), ``upgrade_exited`` (the
reaped child was the USR2 master: :mod:`arbiter.master.upgrade`) and
``begin_stop`` (:mod:`arbiter.master.loop`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from arbiter import systemd
from arbiter.hooks import Hooks
from arbiter.master.process import (
    EXIT_APP,
    EXIT_CONFIG,
    HANDLED_SIGNALS,
    describe_log_target,
    drop_privileges,
    fork_with_signals_blocked,
)
from arbiter.notices import FAILED, FORKED, READY
from arbiter.scoreboard import NOT_READY
from arbiter.sockets import Listener
from arbiter.workers.base import EXIT_APP_KIND_MISMATCH, EXIT_APP_LOAD_FAILED

# Why workers were replaced, as `ctl status` and the metrics count them.
RESTART_REASONS = {"timed out": "timeout", "max_worker_memory": "memory",
                   "max_requests": "max_requests",
                   "replaced by reload": "reload", "scaled down": "scale_down",
                   "WINCH": "winch", "reload rolled back": "reload", "reforked": "refork"}

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


@dataclass
class Generation:
    """Everything a set of workers was started with: config, listeners, app."""

    number: int
    cfg: Any
    listeners: list[Listener]
    worker_cls: type
    app: Any = None  # the preloaded app, when preload_app
    tls: Any = None  # the ssl.SSLContext every listener serves with (None: plain HTTP)
    hooks: Hooks | None = None
    # The worker type its workers said they serve as (their ready notice): asgi for an
    # ASGI app when worker_type is unset and the master did not import the app itself.
    serving_type: str = ""

    @property
    def worker_type(self) -> str:
        return self.serving_type or self.worker_cls.worker_type


@dataclass
class WorkerProcess:
    """The master's record of one worker."""

    pid: int
    slot: int
    number: int
    generation: Generation
    spawned_at: float
    ready: bool = False
    retiring: bool = False  # told to stop (TERM): not counted towards the target
    kill_at: float | None = None  # SIGKILL when this monotonic time passes
    killed: bool = False
    reason: str = ""  # why it is being stopped, for the log
    awaiting_replacement: bool = False  # recycle (TERM) once a replacement is ready
    failure: str = ""  # why it could not boot, as the worker said (the exception's last line)
    refork_generation: int = 0  # forks from warm workers (molds) between the master and it


class Supervisor:
    """Spawn, reap and respawn workers; keep each generation at the target count."""

    def read_notices(self, mask: int) -> None:
        """Workers' notices: keep a boot failure's reason; the turn does the rest."""
        assert self.notices is not None
        for notice in self.notices.read():
            worker = self.workers.get(notice.pid)
            if worker is not None and notice.kind == FAILED:
                worker.failure = notice.text
            elif worker is not None and notice.kind == READY and notice.text:
                worker.generation.serving_type = notice.text
            elif notice.kind == FORKED:
                self.forked_notice(notice.text)

    def spawn_worker(self, gen: Generation) -> None:
        assert self.scoreboard is not None
        if self.fork_from_mold(gen):  # refork_after: the mold forks it, warm
            return
        slot = self.free_slot()
        if slot is None:
            self.log.error("no free scoreboard slot (%d workers): not spawning",
                           len(self.workers))
            return
        used = {w.number for w in self.workers.values() if w.generation is gen}
        number = next(n for n in range(1, len(used) + 2) if n not in used)
        self.scoreboard.claim(slot, gen.number, number)
        if gen.hooks is not None:
            gen.hooks.call("pre_fork", self, {"slot": slot, "number": number,
                                              "generation": gen.number})
        try:
            pid = fork_with_signals_blocked()  # the worker unblocks them with its handlers
        except OSError as exc:
            self.scoreboard.release(slot)
            self.log.error("cannot fork a worker: %s; trying again in 1 s", exc)
            self.next_spawn_at = time.monotonic() + 1.0
            return
        if pid:
            self.workers[pid] = WorkerProcess(pid, slot, number, gen, time.monotonic())
            self.log.debug("spawned worker #%d (pid %d, generation %d)", number, pid, gen.number)
            return
        # In the child: never return into the master's loop.
        code = 1
        try:
            code = self.become_worker(gen, slot, number)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException:
            try:
                self.log.error("worker #%d crashed:\n%s", number, traceback.format_exc())
            except BaseException:
                pass
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def become_worker(self, gen: Generation, slot: int, number: int) -> int:
        assert self.scoreboard is not None and self.selector is not None
        signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        # Close the master's fds here; never unregister them: the epoll instance is
        # shared with the master across fork, and an unregister would be the master's.
        assert self.notices is not None
        self.notices.become_writer()
        for key in list(self.selector.get_map().values()):
            if key.data is not None and hasattr(key.fileobj, "close"):
                key.fileobj.close()  # the control socket, admin listener, their clients
        self.selector.close()
        os.close(self.signal_r)
        os.close(self.signal_w)
        systemd.clear_environ(os.environ)  # only the master talks to systemd
        keep = {lst.fileno for lst in gen.listeners}
        for lst in self.listeners.values():
            if lst.fileno not in keep:
                lst.sock.close()
        worker = gen.worker_cls(cfg=gen.cfg, listeners=gen.listeners,
                                slot=self.scoreboard.writer(slot), number=number,
                                generation=gen.number, master_pid=self.pid, app=gen.app,
                                log=self.log, tls=gen.tls, notices=self.notices)
        if self.worker_identity:  # after the worker opened its log files
            drop_privileges(*self.worker_identity)
        if gen.hooks is not None:
            gen.hooks.call("post_fork", self, worker)
            # and in each worker a mold forks (refork_after), right after that fork
            worker.after_refork = lambda forked: gen.hooks.call("post_fork", self, forked)
        return worker.run()

    def free_slot(self) -> int | None:
        assert self.scoreboard is not None
        used = {w.slot for w in self.workers.values()}
        for slot in range(self.scoreboard.slots):
            if slot not in used:
                return slot
        return None

    def reap_workers(self) -> None:
        if self.notices is not None:
            self.read_notices(0)  # a dying worker's reason, written before it exited
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if pid == self.upgrade_pid:
                self.upgrade_exited(status)
                continue
            worker = self.workers.pop(pid, None)
            if worker is None and self.fork_requests:
                self.read_notices(0)  # forked by the mold: its notice may have just come
                worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            assert self.scoreboard is not None
            if not worker.ready:
                # It may have announced itself just before dying.
                worker.ready = self.scoreboard.read(worker.slot).state not in NOT_READY
                self.ever_ready = self.ever_ready or worker.ready
            self.finished_counters.add(self.scoreboard.counters(worker.slot))
            self.finished_requests += self.scoreboard.read(worker.slot).requests
            self.scoreboard.release(worker.slot)
            self.worker_gone(worker)
            self.worker_exited(worker, status)

    def worker_exited(self, worker: WorkerProcess, status: int) -> None:
        if worker.generation.hooks is not None:
            worker.generation.hooks.call("worker_exit", self, worker)
        code = os.waitstatus_to_exitcode(status)
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        label = f"worker #{worker.number} (pid {worker.pid}, generation {worker.generation.number})"
        if worker.retiring or self.stop_mode:
            self.log.info("%s stopped (%s)%s", label, how,
                          f": {worker.reason}" if worker.reason else "")
            if not self.stop_mode:
                self.count_restart(RESTART_REASONS.get(worker.reason, "crash"))
            return
        if worker.ready and code == 0:
            self.log.info("%s exited by itself; replacing it", label)
            self.count_restart("max_requests")
            return
        if worker.ready:
            self.log.warning("%s died (%s); replacing it", label, how)
            self.count_restart("crash")
            return
        self.count_restart("crash")
        # Died before it was ready: a boot failure.
        why = f"a new worker failed to boot ({how})"
        if worker.failure and code == EXIT_APP_KIND_MISMATCH:
            why += f": {worker.failure}"
        elif worker.failure:
            why += f": {worker.failure} (traceback in the error log, "
            why += f"{describe_log_target(worker.generation.cfg.log.error_log)})"
        if self.pending and worker.generation is self.pending.generation:
            self.abort_reload(why)
            return
        self.mark_ready_workers()  # a sibling may have booted since the last turn
        if code in (EXIT_APP_LOAD_FAILED, EXIT_APP_KIND_MISMATCH) and not self.ever_ready:
            if code == EXIT_APP_KIND_MISMATCH:
                self.log.error("%s; exiting", worker.failure or "the app does not fit the worker type")
                self.exit_code = EXIT_CONFIG
            else:
                self.log.error("the app cannot be loaded at first start (see the traceback "
                               "above); exiting")
                self.exit_code = EXIT_APP
            self.begin_stop("fast")
            return
        self.note_boot_failure(f"{label} failed to boot ({how}"
                               + (f": {worker.failure})" if worker.failure else ")"))

    def count_restart(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def note_boot_failure(self, why: str) -> None:
        self.boot_failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.boot_failures - 1))
        self.next_spawn_at = time.monotonic() + delay
        self.log.error("%s; retrying in %g s (failure %d in a row)", why, delay,
                       self.boot_failures)

    def mark_ready_workers(self) -> None:
        """Mark workers that announced themselves in the scoreboard as ready."""
        assert self.scoreboard is not None
        for worker in self.workers.values():
            if worker.ready or worker.retiring:
                continue
            if self.scoreboard.read(worker.slot).state not in NOT_READY:
                worker.ready = True
                self.ever_ready = True
                if self.boot_failures:
                    self.log.info("worker #%d (pid %d) booted: crash-loop backoff cleared",
                                  worker.number, worker.pid)
                self.boot_failures = 0
                self.next_spawn_at = 0.0

    def check_boots(self) -> None:
        """Mark workers ready from the scoreboard; kill those past boot_timeout."""
        self.mark_ready_workers()
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.ready or worker.retiring:
                continue
            boot_timeout = worker.generation.cfg.boot_timeout
            if now - worker.spawned_at > boot_timeout:
                why = (f"worker #{worker.number} (pid {worker.pid}) did not load the app "
                       f"within boot_timeout ({boot_timeout:g} s)")
                self.stop_worker(worker, signal.SIGKILL, why)
                if self.pending and worker.generation is self.pending.generation:
                    self.abort_reload(why)
                else:
                    self.note_boot_failure(why)

    def enforce_kill_deadlines(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.kill_at is not None and not worker.killed and now >= worker.kill_at:
                worker.killed = True
                if worker.reason != "timed out":
                    self.log.warning("worker #%d (pid %d) did not stop in time: killing it",
                                     worker.number, worker.pid)
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop_worker(self, worker: WorkerProcess, sig: int, reason: str,
                    grace: float | None = None) -> None:
        """Tell one worker to stop; SIGKILL it after ``grace`` seconds."""
        worker.retiring = True
        worker.reason = worker.reason or reason
        if grace is None:
            grace = worker.generation.cfg.graceful_timeout
        if worker.kill_at is None:
            worker.kill_at = time.monotonic() + grace
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def live_workers(self, gen: Generation) -> list[WorkerProcess]:
        return [w for w in self.workers.values() if w.generation is gen and not w.retiring]

    def manage_workers(self) -> None:
        """Spawn or retire workers so each generation in play has ``target`` of them."""
        if self.winched:
            return
        for gen in (self.current, self.pending.generation if self.pending else None):
            if gen is None:
                continue
            live = self.live_workers(gen)
            missing = self.target - len(live) - self.forks_in_flight(gen)
            if missing > 0:
                if time.monotonic() < self.next_spawn_at:
                    continue
                # In a crash loop, probe with one worker at a time.
                for _ in range(1 if self.boot_failures else missing):
                    self.spawn_worker(gen)
            elif missing < 0:
                # Retire the not-yet-ready first, then the highest numbers.
                extras = sorted(live, key=lambda w: (w.ready, -w.number))[:-missing]
                for worker in extras:
                    self.stop_worker(worker, signal.SIGTERM, "scaled down")

    def signal_workers(self, sig: int) -> None:
        for worker in self.workers.values():
            try:
                os.kill(worker.pid, sig)
            except ProcessLookupError:
                pass
