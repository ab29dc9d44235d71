"""Starting the master, and its listeners.

Owns ``start()``: everything that can fail with a clean exit code, before
any worker exists. The import path, hooks, the workers' identity, the worker
type, TLS, the preloaded app; the listeners (taken over from the old master
on a USR2 upgrade, handed over by systemd socket activation, or bound), the
pidfile, daemon mode, the scoreboard, the signal wakeup fd, the worker
notice pipe, the control socket and the admin listener. Also what to listen
on (``binds``, on reload too) and how a listener is closed (a unix socket
file is unlinked only by its last owner).

A mixin of :class:`arbiter.master.loop.Master`; it registers
``read_notices`` (:mod:`arbiter.master.supervisor`) and ``handle_control``
(:mod:`arbiter.master.status`) with the loop's selector.
"""

from __future__ import annotations

import os
import selectors
import signal
from typing import Any

from arbiter import build, logs, systemd
from arbiter.appload import (
    AppKindError,
    AppLoadError,
    load_app,
    prepare_import_path,
    serving_worker_type,
    worker_type_chosen,
)
from arbiter.control import ControlServer, default_socket_path
from arbiter.hooks import HookError, load_hooks
from arbiter.master.process import (
    EXIT_APP,
    EXIT_BIND,
    EXIT_CONFIG,
    HANDLED_SIGNALS,
    StartupError,
    check_pidfile,
    hand_log_files_to,
    resolve_identity,
    write_pidfile,
)
from arbiter.master.supervisor import Generation
from arbiter.master.upgrade import (
    UPGRADE_ACTIVATED_ENV,
    UPGRADE_ADMIN_ENV,
    UPGRADE_FDS_ENV,
    UPGRADE_FROM_ENV,
)
from arbiter.notices import NoticePipe
from arbiter.scoreboard import Scoreboard
from arbiter.sockets import BindError, Listener, decode_inherited, open_listeners
from arbiter.tls import server_context
from arbiter.workers import worker_class

try:
    from setproctitle import setproctitle
except ImportError:  # pragma: no cover
    def setproctitle(title: str) -> None:
        return None


class Startup:
    """``start()``: listeners, pidfile, daemon mode, signals, ctl and admin, checked."""

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
            try:
                serving = serving_worker_type(cfg.app, app, cfg.worker_type,
                                              worker_type_chosen(cfg))
            except AppKindError as exc:
                raise StartupError(EXIT_CONFIG, str(exc)) from None
            if serving != cfg.worker_type:
                self.log.info("app %s is an ASGI app: serving it with asgi workers", cfg.app)
                cls = worker_class(serving)
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
        self.enable_reforking(cfg)
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
        kind = f"{cls.worker_type} worker(s)"
        if app is None and not worker_type_chosen(cfg):  # the workers tell once they load it
            kind = f"worker(s) ({cls.worker_type} for a WSGI app, asgi for an ASGI app)"
        self.log.info("arbiter master (pid %d) starting %d %s, app %s (%s)",
                      self.pid, self.target, kind, cfg.app, build())
        if cfg.reload:  # after daemonize: nothing of the watcher crosses that fork
            from arbiter.master.watch import SourceWatcher

            root = os.path.abspath(cfg.chdir or self.launch_cwd)
            config = [os.path.join(self.launch_cwd, cfg.source)] if cfg.source else []
            self.watcher = SourceWatcher([root], config, self.log)
            self.log.info("--reload (development): watching %s for changes to *.py%s (%s)",
                          root, " and the config file" if cfg.source else "",
                          self.watcher.how)

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

    def close_listeners(self, listeners: list[Listener]) -> None:
        # A unix socket file is unlinked by its last owner: never while a new
        # master (USR2) shares it, never when systemd made it (fd://).
        for lst in listeners:
            try:
                lst.close(unlink=lst.address.fd is None and self.upgrade_pid is None)
            except OSError:
                pass


def _queue_only(signum: int, frame: Any) -> None:
    """Signal handler: the wakeup fd already recorded the signal; the loop acts on it."""
