"""The master: its state, and the loop that drives every other part.

Owns :class:`Master`: the state that every part of the master reads
(workers, listeners, generations, the target count, the stop mode,
counters), ``run()`` and one ``turn()`` of the loop in its fixed order, the
one ``selectors`` wait (signals, worker notices, the control socket, the
admin listener and their clients), signal dispatch by table (a
``handle_<signal>`` method each, as in gunicorn's arbiter), and stopping:
graceful (TERM, after ``drain_delay`` if set) or fast (INT, QUIT), then
the shutdown.

``Master`` puts together the mixins of the other modules; the loop calls
into each of them in the order the package docstring gives.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import time
from collections.abc import Callable
from typing import Any

from arbiter import logs, systemd
from arbiter.control import ControlServer
from arbiter.master.process import EXIT_OK, remove_pidfile
from arbiter.master.recycling import Recycling
from arbiter.master.refork import ForkRequest, Reforking
from arbiter.master.reload import PendingReload, ReloadTransaction
from arbiter.master.startup import Startup
from arbiter.master.status import StatusReport
from arbiter.master.supervisor import Generation, Supervisor, WorkerProcess
from arbiter.master.upgrade import Upgrade
from arbiter.master.watch import SourceWatcher
from arbiter.notices import NoticePipe
from arbiter.scoreboard import Counters, Scoreboard
from arbiter.sockets import Listener
from arbiter.utilization import Utilization

FAST_STOP_GRACE = 1.0  # INT/QUIT: how long workers get before SIGKILL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)  # acted on while stopping


class Master(Startup, ReloadTransaction, Upgrade, StatusReport, Recycling, Reforking,
             Supervisor):
    """The supervising process. ``run()`` returns the exit code."""

    def __init__(self, cfg: Any, reload_config: Callable[[], Any], log: logging.Logger) -> None:
        self.cfg = cfg
        self.reload_config = reload_config
        self.log = log
        self.pid = os.getpid()
        self.workers: dict[int, WorkerProcess] = {}
        self.listeners: dict[str, Listener] = {}
        self.scoreboard: Scoreboard | None = None
        self.current: Generation | None = None
        self.pending: PendingReload | None = None
        self.target = cfg.workers
        self.boot_failures = 0
        self.next_spawn_at = 0.0
        self.ever_ready = False
        self.stop_mode: str | None = None  # "graceful" | "fast"
        self.stop_deadline = 0.0
        self.reload_requested = False
        self.exit_code = EXIT_OK
        self.signal_r = self.signal_w = -1
        self.selector: selectors.BaseSelector | None = None
        self.notify = systemd.Notifier.from_environ(os.environ, log)
        self.announced_ready = False
        self.next_watchdog = 0.0
        # Socket activation: binds systemd handed us replace the config's (on reload too).
        self.activated_binds: list[str] = []
        self.launch_cwd = os.getcwd()
        self.upgrade_pid: int | None = None  # the new master started by USR2
        self.upgraded_from: int | None = None  # the old master that started us
        self.winched = False  # WINCH: workers stopped, master and sockets kept
        self.next_memory_check = 0.0
        self.worker_identity: tuple[int, int] | None = None  # (uid, gid) for `user`/`group`
        self.started_at = time.time()
        # Exact request counts of workers that are gone (live ones are read from the board).
        self.finished_counters = Counters.zero()
        self.finished_requests = 0
        self.restarts: dict[str, int] = dict.fromkeys(
            ("crash", "timeout", "max_requests", "memory", "reload", "scale_down", "winch",
             "refork"), 0)
        self.reloads = {"succeeded": 0, "failed": 0}
        self.reload_waiters: list[Callable[[dict[str, Any]], None]] = []
        self.control: ControlServer | None = None
        self.admin: Any = None  # arbiter.admin.AdminServer when admin_bind is set
        self.draining_until = 0.0  # TERM with drain_delay: /readyz 503 until then
        self.notices: NoticePipe | None = None  # workers -> master: ready, recycle, failed
        self.watcher: SourceWatcher | None = None  # --reload: the project's files
        self.utilization = Utilization()  # every worker's busy time, sampled each second
        # refork_after: the worker the next ones are forked from, the step of the list
        # reached, the workers asked of it and not seen yet (by slot), and whether Linux
        # re-parents them to us (PR_SET_CHILD_SUBREAPER).
        self.mold: WorkerProcess | None = None
        self.refork_stage = 0
        self.fork_requests: dict[int, ForkRequest] = {}
        self.subreaper = False
        self.refork_refused: Generation | None = None  # told once: its type can't refork

    # -- the loop --------------------------------------------------------------
    def run(self) -> int:
        try:
            while not self.turn():
                self.wait_for_events()
        finally:
            self.shutdown()
        return self.exit_code

    def turn(self) -> bool:
        """One turn of the loop: act on what happened; True once the master is done."""
        self.ping_watchdog()
        if self.admin is not None:
            self.admin.tick()  # close admin clients past their deadline
        if self.control is not None:
            self.control.tick()  # and control clients
        for sig in self.read_signals():
            self.handle_signal(sig)
        self.reap_workers()
        self.sample_utilization()
        if self.draining_until and not self.stop_mode \
                and time.monotonic() >= self.draining_until:
            self.begin_stop("graceful")
        if self.stop_mode:
            return self.stop_progress()
        if self.watcher is not None and (changed := self.watcher.changed()):
            self.log.info("--reload: %s changed; reloading", ", ".join(
                os.path.relpath(path, self.launch_cwd) for path in changed[:5])
                + (f" and {len(changed) - 5} more" if len(changed) > 5 else ""))
            self.reload_requested = True
        if self.reload_requested and self.pending is None:
            self.reload_requested = False
            self.begin_reload()
        self.check_boots()
        self.announce_first_ready()
        self.check_reload()
        self.kill_hung_workers()
        self.recycle_requested_workers()
        self.recycle_large_workers()
        self.manage_reforks()
        self.retire_replaced_workers()
        self.enforce_kill_deadlines()
        self.manage_workers()
        return False

    def wait_for_events(self) -> None:
        timeout = 1.0
        now = time.monotonic()
        if self.next_spawn_at > now:
            timeout = min(timeout, self.next_spawn_at - now)
        for worker in self.workers.values():
            if worker.kill_at is not None and not worker.killed:
                timeout = min(timeout, max(0.0, worker.kill_at - now))
        if self.stop_mode:
            timeout = min(timeout, 0.1)
        if self.next_watchdog:
            timeout = min(timeout, max(0.0, self.next_watchdog - now))
        if self.draining_until and not self.stop_mode:
            timeout = min(timeout, max(0.0, self.draining_until - now))
        assert self.selector is not None
        for key, mask in self.selector.select(max(timeout, 0.0)):
            if key.data is None:  # the signal wakeup fd: read at the start of the turn
                continue
            try:  # the notice pipe, the control socket, the admin listener, their clients
                key.data(mask)
            except Exception:  # noqa: BLE001 -- nothing a client sends may stop the master
                self.log.exception("error while serving %r; the master goes on", key.fileobj)
                self.drop_client(key)

    def drop_client(self, key: selectors.SelectorKey) -> None:
        """After an error serving a ctl or admin client: close that client, keep the rest."""
        servers = [self.control.sock if self.control else None,
                   self.admin.sock if self.admin else None,
                   self.notices.fileno() if self.notices else None]
        if key.fileobj in servers:
            return  # a listener (or the notice pipe): keep it
        assert self.selector is not None
        try:
            self.selector.unregister(key.fileobj)
        except (KeyError, ValueError):
            pass
        close = getattr(key.fileobj, "close", None)
        if close is not None:
            close()

    def read_signals(self) -> list[int]:
        try:
            data = os.read(self.signal_r, 4096)
        except BlockingIOError:
            return []
        return list(data)

    # -- signals ------------------------------------------------------------------
    def handle_signal(self, sig: int) -> None:
        """Log a signal and act on it by table: SIGHUP runs ``handle_hup``, and so on.

        While stopping, only TERM, INT and QUIT are acted on; a signal without
        a ``handle_<name>`` method is only logged."""
        if sig == signal.SIGCHLD:
            return  # reaping happens every turn of the loop
        name = signal.Signals(sig).name
        self.log.info("received %s", name)
        if self.stop_mode and sig not in STOP_SIGNALS:
            return
        handler = getattr(self, f"handle_{name[3:].lower()}", None)
        if handler is not None:
            handler()

    def handle_hup(self) -> None:
        """Reload; after WINCH, that starts workers again."""
        if self.winched:
            self.winched = False
            self.log.info("HUP after WINCH: starting workers again")
        self.reload_requested = True

    def handle_term(self) -> None:
        """Stop gracefully; with ``drain_delay``, after /readyz has said 503 that long."""
        delay = self.cfg.drain_delay
        if delay and not self.draining_until and not self.stop_mode:
            self.draining_until = time.monotonic() + delay
            self.log.info("draining: /readyz answers 503 for %g s while still serving, "
                          "then the graceful stop begins", delay)
            self.notify.status(f"draining for {delay:g} s")
        else:
            self.begin_stop("graceful")

    def handle_int(self) -> None:
        """Stop now."""
        self.begin_stop("fast")

    def handle_quit(self) -> None:
        """Stop now, as INT does."""
        self.begin_stop("fast")

    def handle_ttin(self) -> None:
        """One worker more."""
        self.target += 1
        self.log.info("scaling up to %d worker(s)", self.target)

    def handle_ttou(self) -> None:
        """One worker fewer, never fewer than one."""
        if self.target > 1:
            self.target -= 1
        self.log.info("scaling down to %d worker(s)", self.target)

    def handle_usr1(self) -> None:
        """Reopen the log files: the master's, then each worker's (USR1 to it)."""
        logs.reopen_log_files()
        self.signal_workers(signal.SIGUSR1)
        self.log.info("log files reopened")

    def handle_usr2(self) -> None:
        """Upgrade: start a new master on the same listeners (:mod:`arbiter.master.upgrade`)."""
        self.begin_upgrade()

    def handle_winch(self) -> None:
        """Stop every worker; keep the master and the sockets."""
        self.stop_all_workers()

    # -- stop ---------------------------------------------------------------------
    def begin_stop(self, mode: str) -> None:
        if self.stop_mode == "fast" or self.stop_mode == mode:
            return
        self.stop_mode = mode
        self.notify.stopping()
        now = time.monotonic()
        if mode == "graceful":
            grace = self.cfg.graceful_timeout
            sig = signal.SIGTERM
            self.log.info("stopping gracefully (up to %g s for in-flight requests)", grace)
        else:
            grace = FAST_STOP_GRACE
            sig = signal.SIGINT
            self.log.info("stopping now")
        self.stop_deadline = now + grace
        # Stop accepting: the master's copies of the listeners close now.
        self.close_listeners(list(self.listeners.values()))
        self.listeners = {}
        for worker in self.workers.values():
            worker.retiring = True
            worker.kill_at = min(worker.kill_at or self.stop_deadline, self.stop_deadline)
            try:
                os.kill(worker.pid, sig)
            except ProcessLookupError:
                pass

    def stop_progress(self) -> bool:
        """True when every worker is gone (those a mold was forking too)."""
        self.adopt_forks()
        self.enforce_kill_deadlines()
        return not self.workers and not self.fork_requests

    def shutdown(self) -> None:
        for worker in self.workers.values():
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.workers and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    break
                continue
            self.workers.pop(pid, None)
        self.close_listeners(list(self.listeners.values()))
        self.listeners = {}
        for answer in self.reload_waiters:
            answer({"ok": False, "outcome": "the master stopped"})
        self.reload_waiters = []
        if self.control is not None:
            self.control.close()
        if self.admin is not None:
            self.admin.close()
        if self.current is not None and self.current.hooks is not None:
            self.current.hooks.call("on_exit", self)
        if self.cfg.pidfile:
            remove_pidfile(self.cfg.pidfile, self.pid)
            remove_pidfile(self.cfg.pidfile + ".oldbin", self.pid)
        signal.set_wakeup_fd(-1)
        self.log.info("arbiter master (pid %d) exiting with code %d", self.pid, self.exit_code)
