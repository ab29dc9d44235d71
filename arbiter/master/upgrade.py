"""The USR2 upgrade, and WINCH.

USR2 forks and execs a new master (the same command line, from the
directory this one was launched in) that inherits the listeners and the
admin listener through the environment (``ARBITER_UPGRADE_*``, read back in
:mod:`arbiter.master.startup`). Meanwhile the pidfile is ``PIDFILE.oldbin``
and this master keeps serving but goes silent towards systemd; if the new
master exits, this one takes the pidfile and the control socket back.
WINCH stops every worker gracefully and keeps the master and the sockets
(HUP starts workers again), so an old master can stand by while the new one
serves.

A mixin of :class:`arbiter.master.loop.Master`. The reaper
(:mod:`arbiter.master.supervisor`) hands the new master's exit to
``upgrade_exited``; WINCH uses ``abort_reload`` and ``stop_worker``.
"""

from __future__ import annotations

import os
import signal
import sys

from arbiter import systemd
from arbiter.master.process import (
    HANDLED_SIGNALS,
    StartupError,
    fork_with_signals_blocked,
    pid_alive,
    remove_pidfile,
    write_pidfile,
)
from arbiter.sockets import encode_inherited

# USR2 upgrade: how the old master hands its listeners to the new one.
UPGRADE_FDS_ENV = "ARBITER_UPGRADE_FDS"
UPGRADE_FROM_ENV = "ARBITER_UPGRADE_FROM"
UPGRADE_ACTIVATED_ENV = "ARBITER_UPGRADE_ACTIVATED"
UPGRADE_ADMIN_ENV = "ARBITER_UPGRADE_ADMIN"  # "fd=bind" of the admin listener


class Upgrade:
    """USR2: start a new master that takes the listeners over. WINCH: stop all workers."""

    def begin_upgrade(self) -> None:
        """USR2: exec a new master that inherits the listeners; we keep serving."""
        if self.upgrade_pid is not None:
            self.log.warning("USR2 ignored: the new master (pid %d) is still running",
                             self.upgrade_pid)
            return
        if self.upgraded_from and pid_alive(self.upgraded_from):
            self.log.warning("USR2 ignored: the old master (pid %d) is still running; "
                             "stop it first", self.upgraded_from)
            return
        pidfile = self.cfg.pidfile
        if pidfile:
            try:
                write_pidfile(pidfile + ".oldbin", self.pid)
            except StartupError as exc:
                self.log.error("USR2 aborted: %s", exc)
                return
            remove_pidfile(pidfile, self.pid)
        listeners = list(self.listeners.values())
        env = dict(os.environ)
        env[UPGRADE_FDS_ENV] = encode_inherited(listeners)
        env[UPGRADE_FROM_ENV] = str(self.pid)
        if self.activated_binds:
            env[UPGRADE_ACTIVATED_ENV] = "1"
        if self.admin is not None:
            self.admin.sock.set_inheritable(True)
            env[UPGRADE_ADMIN_ENV] = f"{self.admin.sock.fileno()}={self.admin.bind}"
        argv = [sys.executable, *sys.orig_argv[1:]]
        try:
            pid = fork_with_signals_blocked()
        except OSError as exc:
            self.log.error("USR2 aborted: cannot fork: %s", exc)
            if pidfile:
                os.replace(pidfile + ".oldbin", pidfile)
            return
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                for sig in HANDLED_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                os.chdir(self.launch_cwd)
                env = systemd.upgrade_environ(env, os.getpid())
                os.execve(sys.executable, argv, env)
            except BaseException as exc:
                try:
                    self.log.error("USR2: cannot exec the new master: %s", exc)
                finally:
                    os._exit(127)
        self.upgrade_pid = pid
        self.notify.hand_over()
        self.log.info("upgrade: new master started (pid %d) with %d listener(s); once it serves, "
                      "send WINCH then TERM to this master (pid %d) — or TERM the new one to "
                      "roll back", pid, len(listeners), self.pid)

    def upgrade_exited(self, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        pid, self.upgrade_pid = self.upgrade_pid, None
        pidfile = self.cfg.pidfile
        if pidfile:
            try:
                write_pidfile(pidfile, self.pid)
            except StartupError as exc:
                self.log.error("cannot restore the pidfile: %s", exc)
            remove_pidfile(pidfile + ".oldbin", self.pid)
        self.notify.reclaim("the new master exited; this one serves again")
        if self.control is not None:
            try:
                self.control.reclaim_path()
            except OSError as exc:
                self.log.error("cannot rebind the control socket: %s", exc)
        hint = " (workers were stopped by WINCH: send HUP to start them)" if self.winched else ""
        self.log.warning("upgrade: the new master (pid %s) exited with %s; this master (pid %d) "
                         "stays in charge%s", pid, code, self.pid, hint)

    def stop_all_workers(self) -> None:
        """WINCH: stop every worker gracefully; keep the master and the sockets."""
        self.winched = True
        if self.pending is not None:
            self.abort_reload("WINCH")
        for worker in list(self.workers.values()):
            if not worker.retiring:
                self.stop_worker(worker, signal.SIGTERM, "WINCH")
        self.log.info("WINCH: stopping all workers; the master keeps the sockets "
                      "(HUP starts workers again)")
