"""The master process: one thread, one loop, every decision about workers.

Owns: the listening sockets (opened once, kept across reloads), the scoreboard,
the workers (spawn, reap, respawn with crash-loop backoff, scale, kill the
hung), generations and the reload transaction, the pidfile, and the exit code.

The loop sleeps in one ``selectors`` wait on the signal wakeup fd
(``signal.set_wakeup_fd`` writes each signal's number as a byte), the worker
notice pipe (:mod:`arbiter.notices`: a worker is ready, wants a replacement,
or failed to boot), the control socket and the admin listener. Signal
handlers do nothing; each turn of the loop does its work first and then
waits (at most a second, less when a deadline is due), in a fixed order:

    signals -> reap -> (stopping?) -> reload progress -> boot checks
    -> hung workers -> recycles -> kill deadlines -> spawn / retire to the
    target count -> wait

so the first workers are forked before the master first waits, and a
worker's "ready" ends the wait at once: start, reload and scale-up never
wait for a tick.

A reload (HUP) is a transaction: the new config is validated, a new
generation of workers is started with it, and only when every one of them has
loaded the app (reported through the scoreboard) within ``boot_timeout`` is
the old generation retired. Any failure rolls back: the new workers are
stopped and the old generation keeps serving, under the old config.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from arbiter import logs, systemd
from arbiter.appload import (
    AppLoadError,
    asgi_not_supported_message,
    asgi_reason,
    forget_project_modules,
    load_app,
    prepare_import_path,
)
from arbiter.control import ControlServer, default_socket_path
from arbiter.hooks import HookError, Hooks, load_hooks
from arbiter.notices import FAILED, NoticePipe
from arbiter.scoreboard import (
    BOOTING,
    DURATION_BUCKETS,
    FREE,
    METHODS,
    STATE_NAMES,
    STATUS_CLASSES,
    Counters,
    Scoreboard,
)
from arbiter.sockets import (
    BindError,
    Listener,
    decode_inherited,
    encode_inherited,
    open_listeners,
)
from arbiter.tls import server_context
from arbiter.workers import worker_class
from arbiter.workers.base import EXIT_APP_LOAD_FAILED, EXIT_APP_NOT_WSGI, TRACEBACK_SIGNAL

try:
    from setproctitle import setproctitle
except ImportError:  # pragma: no cover
    def setproctitle(title: str) -> None:
        return None

# Master exit codes (CONTRACT §4).
EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_BIND = 2
EXIT_APP = 3

# USR2 upgrade: how the old master hands its listeners to the new one.
UPGRADE_FDS_ENV = "ARBITER_UPGRADE_FDS"
UPGRADE_FROM_ENV = "ARBITER_UPGRADE_FROM"
UPGRADE_ACTIVATED_ENV = "ARBITER_UPGRADE_ACTIVATED"
UPGRADE_ADMIN_ENV = "ARBITER_UPGRADE_ADMIN"  # "fd=bind" of the admin listener

# Why workers were replaced, as `ctl status` and the metrics count them.
RESTART_REASONS = {"timed out": "timeout", "max_worker_memory": "memory",
                   "max_requests": "max_requests",
                   "replaced by reload": "reload", "scaled down": "scale_down",
                   "WINCH": "winch", "reload rolled back": "reload"}

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
MEMORY_CHECK_INTERVAL = 5.0  # seconds between private-memory checks of the workers
TIMEOUT_KILL_GRACE = 1.0  # after the traceback dump, before SIGKILL
FAST_STOP_GRACE = 1.0  # INT/QUIT: how long workers get before SIGKILL

HANDLED_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                   signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2,
                   signal.SIGWINCH, signal.SIGCHLD)


class StartupError(Exception):
    """The master cannot start; ``code`` is the exit code, str() the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


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


@dataclass
class PendingReload:
    """A reload in progress: the candidate generation not yet proven."""

    generation: Generation
    started_at: float
    old_target: int
    opened: list[Listener] = field(default_factory=list)  # listeners new in this config


def check_pidfile(path: str, pid: int) -> None:
    """Refuse to start when the pidfile names another live process."""
    try:
        with open(path) as existing:
            other = int(existing.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        other = 0
    if other and other != pid:
        try:
            os.kill(other, 0)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise StartupError(EXIT_CONFIG, f"pidfile {path}: pid {other} is running") from None
        else:
            raise StartupError(EXIT_CONFIG, f"pidfile {path}: arbiter is already running "
                                            f"as pid {other}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.access(directory, os.W_OK):
        raise StartupError(EXIT_CONFIG, f"pidfile {path}: directory {directory} is not writable")


def write_pidfile(path: str, pid: int) -> None:
    """Write the pidfile atomically; refuse if another live master owns it."""
    check_pidfile(path, pid)
    tmp = f"{path}.{pid}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise StartupError(EXIT_CONFIG, f"pidfile {path}: {exc.strerror or exc}") from None


def remove_pidfile(path: str, pid: int) -> None:
    try:
        with open(path) as f:
            if int(f.read().strip() or 0) != pid:
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass


class Master:
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
            ("crash", "timeout", "max_requests", "memory", "reload", "scale_down", "winch"), 0)
        self.reloads = {"succeeded": 0, "failed": 0}
        self.reload_waiters: list[Callable[[dict[str, Any]], None]] = []
        self.control: ControlServer | None = None
        self.admin: Any = None  # arbiter.admin.AdminServer when admin_bind is set
        self.draining_until = 0.0  # TERM with drain_delay: /readyz 503 until then
        self.notices: NoticePipe | None = None  # workers -> master: ready, recycle, failed

    # -- start ---------------------------------------------------------------
    def start(self) -> None:
        """Everything that can fail with a clean exit code, before any worker exists."""
        cfg = self.cfg
        prepare_import_path(cfg.chdir, cfg.pythonpath)
        try:
            hooks = load_hooks(cfg.hooks, self.log)
        except HookError as exc:
            raise StartupError(EXIT_CONFIG, str(exc)) from None
        hooks.call("on_starting", self)
        try:
            self.worker_identity = resolve_identity(cfg.user, cfg.group)
        except ValueError as exc:
            raise StartupError(EXIT_CONFIG, str(exc)) from None
        if self.worker_identity:
            hand_log_files_to(self.worker_identity, cfg)
        try:
            cls = worker_class(cfg.worker_type)
        except ValueError as exc:
            raise StartupError(EXIT_CONFIG, str(exc)) from None
        try:
            tls = server_context(cfg.ssl)
        except ValueError as exc:
            raise StartupError(EXIT_CONFIG, str(exc)) from None
        app = None
        if cfg.preload_app:
            try:
                app = load_app(cfg.app)
            except AppLoadError as exc:
                raise StartupError(EXIT_APP, f"the app cannot be loaded: {exc}") from None
            asgi = asgi_reason(app)
            if asgi is not None:
                raise StartupError(EXIT_CONFIG, asgi_not_supported_message(cfg.app, asgi))
        inherited = decode_inherited(os.environ.pop(UPGRADE_FDS_ENV, ""))
        self.upgraded_from = int(os.environ.pop(UPGRADE_FROM_ENV, "0") or 0) or None
        try:
            activated = systemd.listen_fds(os.environ)
        except ValueError as exc:
            raise StartupError(EXIT_CONFIG, f"socket activation: {exc}") from None
        self.activated_binds = systemd.activated_bind_addresses(activated)
        if os.environ.pop(UPGRADE_ACTIVATED_ENV, ""):
            self.activated_binds = list(inherited)  # the old master's systemd sockets
        skipped = [a for a in activated if not a.listening]
        for sock in skipped:
            self.log.warning("socket activation: fd %d (%s) is not a listening stream socket; "
                             "ignored", sock.fd, sock.name)
        if self.activated_binds:
            self.log.info("socket activation: serving on %s (the config's bind is ignored)",
                          ", ".join(self.activated_binds))
        try:
            listeners = open_listeners(self.binds(cfg), cfg.backlog, cfg.reuse_port,
                                       inherited=inherited)
        except BindError as exc:
            raise StartupError(EXIT_BIND, str(exc)) from None
        self.listeners = {lst.address.text: lst for lst in listeners}
        for text, fd in inherited.items():
            if text not in self.listeners:  # the new config no longer binds it
                os.close(fd)
        if self.upgraded_from:
            self.log.info("upgrade: took over %d listener(s) from the old master (pid %d)",
                          len(inherited), self.upgraded_from)
        try:
            if cfg.pidfile:
                check_pidfile(cfg.pidfile, self.pid)
            if cfg.daemon:
                self.daemonize()
            if cfg.pidfile:
                write_pidfile(cfg.pidfile, self.pid)
        except StartupError:
            self.close_listeners(list(self.listeners.values()))
            raise
        self.current = Generation(1, cfg, listeners, cls, app, tls, hooks)
        self.scoreboard = Scoreboard()
        setproctitle(f"arbiter: master [{cfg.proc_name}]")
        self.install_signals()
        self.notices = NoticePipe()
        assert self.selector is not None
        self.selector.register(self.notices.fileno(), selectors.EVENT_READ, self.read_notices)
        control_path = cfg.control_socket or default_socket_path(cfg.pidfile)
        if control_path:
            try:
                self.control = ControlServer(control_path, self.handle_control, self.log,
                                             take_over=bool(self.upgraded_from))
            except OSError as exc:
                self.close_listeners(list(self.listeners.values()))
                message = (f"control_socket {control_path}: {exc.strerror}" if exc.strerror
                           else str(exc))  # ControlServer's own errors name the path
                raise StartupError(EXIT_CONFIG, message) from None
            assert self.selector is not None
            self.control.register(self.selector)
            self.log.info("control socket on %s", control_path)
        inherited_admin = decode_inherited(os.environ.pop(UPGRADE_ADMIN_ENV, ""))
        if not cfg.admin_bind:
            for fd in inherited_admin.values():
                os.close(fd)
        if cfg.admin_bind:
            from arbiter.admin import AdminServer

            for text, fd in inherited_admin.items():
                if text != cfg.admin_bind:  # the new config moved it: let it go
                    os.close(fd)
            try:
                self.admin = AdminServer(cfg.admin_bind, self, self.log,
                                         inherited_fd=inherited_admin.get(cfg.admin_bind))
            except OSError as exc:
                self.close_listeners(list(self.listeners.values()))
                if self.control is not None:
                    self.control.close()
                raise StartupError(EXIT_BIND, f"cannot bind admin_bind {cfg.admin_bind}: "
                                              f"{exc.strerror or exc}") from None
            assert self.selector is not None
            self.admin.register(self.selector)
            self.log.info("admin endpoints (/metrics /livez /readyz /status) on %s",
                          cfg.admin_bind)
        for lst in listeners:
            self.log.info("listening on %s", lst.name)
        self.log.info("arbiter master (pid %d) starting %d %s worker(s), app %s",
                      self.pid, self.target, cfg.worker_type, cfg.app)

    def daemonize(self) -> None:
        """--daemon: detach from the terminal (python-daemon), keeping listeners and logs.

        Called once everything that can fail at start has been checked, so those
        errors still reach the terminal with a non-zero exit; the process that
        started us exits 0 once we are detached.
        """
        import daemon  # python-daemon: double fork, setsid, fd closing done right

        if self.cfg.log.error_log == "-":
            self.log.warning("daemon mode: the error log is stderr, which is detached; "
                             "set log.error_log to a file or syslog to keep it")
        preserve = [lst.fileno for lst in self.listeners.values()]
        preserve += logs.open_fds(self.log)
        context = daemon.DaemonContext(
            working_directory=os.getcwd(), umask=self.cfg.umask, files_preserve=preserve,
            signal_map={}, detach_process=True, prevent_core=False)
        try:
            context.open()
        except Exception as exc:
            raise StartupError(EXIT_CONFIG, f"cannot detach (daemon mode): {exc}") from None
        self.pid = os.getpid()

    def binds(self, cfg: Any) -> list[str]:
        """What to listen on: the sockets systemd passed, else the config's bind."""
        return self.activated_binds or list(cfg.bind)

    def install_signals(self) -> None:
        self.signal_r, self.signal_w = os.pipe()
        os.set_blocking(self.signal_r, False)
        os.set_blocking(self.signal_w, False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.signal_r, selectors.EVENT_READ)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, _queue_only)
        signal.set_wakeup_fd(self.signal_w, warn_on_full_buffer=False)

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
        if self.draining_until and not self.stop_mode \
                and time.monotonic() >= self.draining_until:
            self.begin_stop("graceful")
        if self.stop_mode:
            return self.stop_progress()
        if self.reload_requested and self.pending is None:
            self.reload_requested = False
            self.begin_reload()
        self.check_boots()
        self.announce_first_ready()
        self.check_reload()
        self.kill_hung_workers()
        self.recycle_requested_workers()
        self.recycle_large_workers()
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

    def read_notices(self, mask: int) -> None:
        """Workers' notices: keep a boot failure's reason; the turn does the rest."""
        assert self.notices is not None
        for notice in self.notices.read():
            worker = self.workers.get(notice.pid)
            if worker is not None and notice.kind == FAILED:
                worker.failure = notice.text

    def read_signals(self) -> list[int]:
        try:
            data = os.read(self.signal_r, 4096)
        except BlockingIOError:
            return []
        return list(data)

    def handle_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return  # reaping happens every turn of the loop
        name = signal.Signals(sig).name
        self.log.info("received %s", name)
        if sig == signal.SIGTERM:
            delay = self.cfg.drain_delay
            if delay and not self.draining_until and not self.stop_mode:
                self.draining_until = time.monotonic() + delay
                self.log.info("draining: /readyz answers 503 for %g s while still serving, "
                              "then the graceful stop begins", delay)
                self.notify.status(f"draining for {delay:g} s")
            else:
                self.begin_stop("graceful")
        elif sig in (signal.SIGINT, signal.SIGQUIT):
            self.begin_stop("fast")
        elif self.stop_mode:
            return
        elif sig == signal.SIGHUP:
            if self.winched:
                self.winched = False
                self.log.info("HUP after WINCH: starting workers again")
            self.reload_requested = True
        elif sig == signal.SIGTTIN:
            self.target += 1
            self.log.info("scaling up to %d worker(s)", self.target)
        elif sig == signal.SIGTTOU:
            if self.target > 1:
                self.target -= 1
            self.log.info("scaling down to %d worker(s)", self.target)
        elif sig == signal.SIGUSR1:
            logs.reopen_log_files()
            self.signal_workers(signal.SIGUSR1)
            self.log.info("log files reopened")
        elif sig == signal.SIGUSR2:
            self.begin_upgrade()
        elif sig == signal.SIGWINCH:
            self.stop_all_workers()

    # -- workers ---------------------------------------------------------------
    def spawn_worker(self, gen: Generation) -> None:
        assert self.scoreboard is not None
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
        sys.stdout.flush()
        sys.stderr.flush()
        # Block signals across fork so the child never runs the master's handlers:
        # the worker unblocks them once its own handlers are installed.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            self.scoreboard.release(slot)
            self.log.error("cannot fork a worker: %s; trying again in 1 s", exc)
            self.next_spawn_at = time.monotonic() + 1.0
            return
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
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
            if worker is None:
                continue
            assert self.scoreboard is not None
            if not worker.ready:
                # It may have announced itself just before dying.
                worker.ready = self.scoreboard.read(worker.slot).state not in (BOOTING, FREE)
                self.ever_ready = self.ever_ready or worker.ready
            self.finished_counters.add(self.scoreboard.counters(worker.slot))
            self.finished_requests += self.scoreboard.read(worker.slot).requests
            self.scoreboard.release(worker.slot)
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
        if worker.failure and code == EXIT_APP_NOT_WSGI:
            why += f": {worker.failure}"
        elif worker.failure:
            why += f": {worker.failure} (traceback in the error log, "
            why += f"{describe_log_target(worker.generation.cfg.log.error_log)})"
        if self.pending and worker.generation is self.pending.generation:
            self.abort_reload(why)
            return
        self.mark_ready_workers()  # a sibling may have booted since the last turn
        if code in (EXIT_APP_LOAD_FAILED, EXIT_APP_NOT_WSGI) and not self.ever_ready:
            if code == EXIT_APP_NOT_WSGI:
                self.log.error("%s; exiting", worker.failure or "the app is not a WSGI app")
                self.exit_code = EXIT_CONFIG
            else:
                self.log.error("the app cannot be loaded at first start (see the traceback "
                               "above); exiting")
                self.exit_code = EXIT_APP
            self.begin_stop("fast")
            return
        self.note_boot_failure(f"{label} failed to boot ({how}"
                               + (f": {worker.failure})" if worker.failure else ")"))

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
            if self.scoreboard.read(worker.slot).state not in (BOOTING, FREE):
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

    def kill_hung_workers(self) -> None:
        """Report and replace workers stuck longer than ``timeout``.

        A silent worker (no heartbeat) is killed after its traceback is dumped.
        A multithreaded worker whose oldest request is too old, while its own
        loop still beats, is recycled: traceback, then TERM so its other
        requests finish within ``graceful_timeout`` while a replacement starts.
        """
        assert self.scoreboard is not None
        now = time.monotonic()
        for worker in list(self.workers.values()):
            timeout = worker.generation.cfg.timeout
            if not timeout or not worker.ready or worker.kill_at is not None \
                    or worker.reason == "timed out":  # reported already
                continue
            policy = getattr(worker.generation.worker_cls, "hung_policy", "kill")
            # struct.pack_into zero-fills a field before writing it, so a row read
            # while its worker writes can show a heartbeat of 0: only a verdict that
            # holds on a second read counts.
            verdict = None
            for _ in range(2):
                row = self.scoreboard.read(worker.slot)
                verdict = hung_verdict(row, now, timeout, policy)
                if verdict is None:
                    break
            if verdict is None:
                continue
            what, recycle = verdict
            oldest = now - row.request_started if row.in_flight else 0.0
            running = ""
            if row.in_flight:
                running = (f" while running {row.method} {row.path} for "
                           f"{oldest:.1f} s")
            action = ("then it is recycled (other requests may finish)" if recycle
                      else "then it is killed")
            self.log.error("worker #%d (pid %d) timed out: %s (timeout %g s)%s; "
                           "its traceback follows, %s",
                           worker.number, worker.pid, what, timeout, running, action)
            try:
                os.kill(worker.pid, TRACEBACK_SIGNAL)
            except ProcessLookupError:
                continue
            worker.reason = "timed out"
            if recycle:  # its other threads still serve: stop it once a replacement is ready
                worker.retiring = True
                worker.awaiting_replacement = True
            else:
                worker.retiring = True
                worker.kill_at = now + TIMEOUT_KILL_GRACE

    def recycle_requested_workers(self) -> None:
        """max_requests: a worker that asked to be replaced keeps serving while its
        replacement boots, and is told to stop once that one is ready."""
        assert self.scoreboard is not None
        for worker in self.workers.values():
            if worker.retiring or not worker.ready or not self.scoreboard.wants_recycle(
                    worker.slot):
                continue
            self.log.info("worker #%d (pid %d) reached max_requests: starting its replacement",
                          worker.number, worker.pid)
            worker.retiring = True
            worker.reason = "max_requests"
            worker.awaiting_replacement = True

    def recycle_large_workers(self) -> None:
        """max_worker_memory: recycle a worker whose private memory (USS) grew too large.

        The replacement starts first; the old worker is told to stop (TERM,
        in-flight requests finish) once the replacement is ready.
        """
        now = time.monotonic()
        if now < self.next_memory_check:
            return
        self.next_memory_check = now + MEMORY_CHECK_INTERVAL
        for worker in list(self.workers.values()):
            limit_mib = worker.generation.cfg.max_worker_memory
            if not limit_mib or not worker.ready or worker.retiring:
                continue
            uss = private_memory(worker.pid)
            if uss is None or uss <= limit_mib * 1024 * 1024:
                continue
            self.log.warning("worker #%d (pid %d) uses %.1f MiB of private memory "
                             "(max_worker_memory %g MiB): recycling it once a replacement "
                             "is ready", worker.number, worker.pid, uss / 1048576, limit_mib)
            worker.retiring = True
            worker.reason = "max_worker_memory"
            worker.awaiting_replacement = True

    def retire_replaced_workers(self) -> None:
        for worker in list(self.workers.values()):
            if not worker.awaiting_replacement:
                continue
            gen = worker.generation
            ready = sum(1 for w in self.live_workers(gen) if w.ready)
            if ready >= self.target or gen is not self.current:
                worker.awaiting_replacement = False
                self.stop_worker(worker, signal.SIGTERM, worker.reason)

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
            missing = self.target - len(live)
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

    # -- reload -------------------------------------------------------------------
    def begin_reload(self) -> None:
        assert self.current is not None
        self.notify.reloading("reloading")
        if self.current.hooks is not None:
            self.current.hooks.call("on_reload", self)
        try:
            new_cfg = self.reload_config()
        except Exception as exc:  # ConfigError, or anything reading the file
            self.reload_aborted(str(exc))
            return
        try:
            cls = worker_class(new_cfg.worker_type)
            tls = server_context(new_cfg.ssl)
        except ValueError as exc:
            self.reload_aborted(str(exc))
            return
        try:
            listeners = open_listeners(self.binds(new_cfg), new_cfg.backlog,
                                       new_cfg.reuse_port, existing=self.listeners)
        except BindError as exc:
            self.reload_aborted(str(exc))
            return
        opened = [lst for lst in listeners if lst.address.text not in self.listeners]
        for lst in opened:
            self.listeners[lst.address.text] = lst
        app = None
        try:
            prepare_import_path(new_cfg.chdir, new_cfg.pythonpath)
        except OSError as exc:
            self.forget_listeners(opened)
            self.reload_aborted(f"chdir: cannot change into {new_cfg.chdir!r}: "
                                f"{exc.strerror or exc}")
            return
        if new_cfg.preload_app:
            forget_project_modules([os.getcwd(), *new_cfg.pythonpath])
            try:
                app = load_app(new_cfg.app)
            except AppLoadError as exc:
                self.forget_listeners(opened)
                self.log.error("reload: the app cannot be loaded: %s", exc)
                self.reload_aborted(f"the app cannot be loaded: {exc.summary} (traceback in the "
                                    f"error log, {describe_log_target(self.cfg.log.error_log)})")
                return
            asgi = asgi_reason(app)
            if asgi is not None:
                self.forget_listeners(opened)
                self.reload_aborted(asgi_not_supported_message(new_cfg.app, asgi))
                return
        try:
            hooks = load_hooks(new_cfg.hooks, self.log)
        except HookError as exc:
            self.forget_listeners(opened)
            self.reload_aborted(str(exc))
            return
        self.apply_log_settings(new_cfg)
        old_target = self.target
        if new_cfg.workers != self.current.cfg.workers:
            self.target = new_cfg.workers
        gen = Generation(self.current.number + 1, new_cfg, listeners, cls, app, tls, hooks)
        self.pending = PendingReload(gen, time.monotonic(), old_target, opened)
        self.boot_failures = 0
        self.next_spawn_at = 0.0
        self.log.info("reloading: starting generation %d (%d %s worker(s))", gen.number,
                      self.target, new_cfg.worker_type)

    def reload_aborted(self, why: str) -> None:
        self.log.error("reload aborted, keeping the running config: %s", why)
        self.reloads["failed"] += 1
        self.reload_finished(False, why)
        self.notify.ready(self.status_line())

    def check_reload(self) -> None:
        """Commit the pending reload once every new worker is ready."""
        if self.pending is None:
            return
        gen = self.pending.generation
        ready = [w for w in self.live_workers(gen) if w.ready]
        if len(ready) < self.target:
            return
        old = self.current
        assert old is not None
        self.current = gen
        self.cfg = gen.cfg
        self.pending = None
        for worker in self.workers.values():
            if worker.generation is old and not worker.retiring:
                self.stop_worker(worker, signal.SIGTERM, "replaced by reload")
        keep = {lst.address.text for lst in gen.listeners}
        gone = [lst for text, lst in self.listeners.items() if text not in keep]
        for lst in gone:
            del self.listeners[lst.address.text]
        self.close_listeners(gone)
        self.log.info("reload complete: generation %d serving", gen.number)
        self.reloads["succeeded"] += 1
        self.reload_finished(True, f"generation {gen.number} serving")
        self.notify.ready(self.status_line())

    def abort_reload(self, why: str) -> None:
        assert self.pending is not None and self.current is not None
        gen = self.pending.generation
        for worker in list(self.workers.values()):
            if worker.generation is gen and not worker.retiring:
                self.stop_worker(worker, signal.SIGKILL, "reload rolled back", grace=0)
        self.forget_listeners(self.pending.opened)
        self.target = self.pending.old_target
        self.pending = None
        self.apply_log_settings(self.current.cfg)
        try:
            prepare_import_path(self.current.cfg.chdir, self.current.cfg.pythonpath)
        except OSError as exc:
            self.log.error("reload rollback: cannot change back into %r: %s",
                           self.current.cfg.chdir, exc.strerror or exc)
        self.log.error("reload rolled back, generation %d keeps serving: %s",
                       self.current.number, why)
        self.reloads["failed"] += 1
        self.reload_finished(False, f"rolled back: {why}")
        self.notify.ready(self.status_line())

    def apply_log_settings(self, cfg: Any) -> None:
        try:
            self.log = logs.setup_error_log(cfg.log.level, cfg.log.error_log, cfg.proc_name,
                                             json=cfg.log.json)
        except OSError as exc:
            self.log.error("cannot open the error log %s: %s", cfg.log.error_log, exc)

    # -- upgrade (USR2) and WINCH ------------------------------------------------------
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
        sys.stdout.flush()
        sys.stderr.flush()
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
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
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
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
    def reload_finished(self, ok: bool, outcome: str) -> None:
        """Hook for whoever waits on a reload (``arbiter ctl reload``)."""
        waiters, self.reload_waiters = self.reload_waiters, []
        for answer in waiters:
            answer({"ok": ok, "outcome": outcome})

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
                "in_flight": row.in_flight, "current": current,
                "rss": memory[0], "uss": memory[1],
                "last_heartbeat": round(now - row.heartbeat, 3),
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
                "config": cfg.source, "worker_type": cfg.worker_type, "app": cfg.app,
                "listeners": [lst.name for lst in self.listeners.values()],
                "generation": self.current.number, "target_workers": self.target,
                "reloading": self.pending is not None, "stopping": self.stop_mode,
                "draining": bool(self.draining_until) and not self.stop_mode,
                "crash_loop_failures": self.boot_failures,
                "next_spawn_in": round(max(0.0, self.next_spawn_at - now), 3),
                "ready": self.serving_ready(),
            },
            "workers": workers,
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
            },
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

    def count_restart(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    # -- systemd ------------------------------------------------------------------
    def status_line(self) -> str:
        gen = self.current
        if gen is None:
            return "starting"
        ready = sum(1 for w in self.live_workers(gen) if w.ready)
        text = (f"generation {gen.number}: {ready}/{self.target} {gen.cfg.worker_type} "
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
            self.log.info("ready: %d %s worker(s) serving", ready, self.current.cfg.worker_type)
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
        """True when every worker is gone."""
        self.enforce_kill_deadlines()
        return not self.workers

    def forget_listeners(self, listeners: list[Listener]) -> None:
        """Close listeners a failed reload opened, and stop tracking them."""
        for lst in listeners:
            self.listeners.pop(lst.address.text, None)
        self.close_listeners(listeners)

    def close_listeners(self, listeners: list[Listener]) -> None:
        # A unix socket file is unlinked by its last owner: never while a new
        # master (USR2) shares it, never when systemd made it (fd://).
        for lst in listeners:
            try:
                lst.close(unlink=lst.address.fd is None and self.upgrade_pid is None)
            except OSError:
                pass

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


def describe_log_target(error_log: str) -> str:
    """Where the error log goes, in words: for "see the traceback in ..." messages."""
    if error_log == "-":
        return "stderr"
    if error_log == "syslog":
        return "syslog"
    return os.path.abspath(error_log)


def resolve_identity(user: str | int | None, group: str | int | None) -> tuple[int, int] | None:
    """(uid, gid) the workers run as, from the ``user``/``group`` settings; None to keep ours.

    A user without a group takes the user's primary group. Switching needs root.
    """
    import grp
    import pwd

    if user is None and group is None:
        return None
    uid, gid = os.getuid(), os.getgid()
    if user is not None:
        try:
            entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
        except KeyError:
            raise ValueError(f"user: no such user {user!r}") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if group is not None:
        try:
            gid = (grp.getgrgid(group) if isinstance(group, int) else grp.getgrnam(group)).gr_gid
        except KeyError:
            raise ValueError(f"group: no such group {group!r}") from None
    if os.geteuid() != 0 and (uid, gid) != (os.getuid(), os.getgid()):
        raise ValueError(f"user/group: switching to uid {uid}, gid {gid} needs root "
                         f"(running as uid {os.getuid()})")
    return uid, gid


def hand_log_files_to(identity: tuple[int, int], cfg: Any) -> None:
    """Log files stay usable after the workers drop privileges (USR1 reopens them)."""
    for path in (cfg.log.error_log, cfg.log.access_log):
        if not path or path in ("-", "syslog"):
            continue
        try:
            with open(path, "a"):
                pass
            os.chown(path, *identity)
        except OSError:
            continue


def drop_privileges(uid: int, gid: int) -> None:
    """In a worker, after the fork: become ``uid``/``gid`` for good."""
    if (os.getuid(), os.getgid()) == (uid, gid):
        return
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)


def hung_verdict(row: Any, now: float, timeout: float, policy: str
                 ) -> tuple[str, bool] | None:
    """Why a worker counts as hung, and whether to recycle (not kill) it; None if it isn't."""
    silent = now - row.heartbeat
    oldest = now - row.request_started if row.in_flight else 0.0
    if silent > timeout:
        return f"silent for {silent:.1f} s", False
    if policy == "recycle" and oldest > timeout:
        return f"a request has run for {oldest:.1f} s", True
    return None


def process_memory(pid: int) -> tuple[int | None, int | None]:
    """(RSS, USS) in bytes of a process, from /proc; None where unknown."""
    rss = None
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    return rss, private_memory(pid)


def private_memory(pid: int) -> int | None:
    """A process's unique set size in bytes (private pages: not shared with the master
    or other workers), from /proc/PID/smaps_rollup; None where Linux can't tell."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            text = f.read()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith((b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:")):
            total += int(line.split()[1]) * 1024
    return total


def pid_alive(pid: int) -> bool:
    """Is ``pid`` a live process? A zombie (exited, not yet reaped) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no procfs: trust kill()


def _queue_only(signum: int, frame: Any) -> None:
    """Signal handler: the wakeup fd already recorded the signal; the loop acts on it."""
