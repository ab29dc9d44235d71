"""The reload transaction (HUP, ``arbiter ctl reload``).

Owns the pending reload. The new config is read and validated; its worker
type, TLS context, listeners (new binds opened, the others kept), import
path, preloaded app and hooks are made ready; then a new generation of
workers starts with it. Only once every one of them has loaded the app is
the old generation retired and any listener the new config no longer binds
closed. Any failure rolls back (the new workers are killed, the listeners
the reload opened are closed, the old target, log settings and working
directory come back) and says why: to the log, to systemd, and to whoever
waits on ``ctl reload``.

A mixin of :class:`arbiter.master.loop.Master`: the loop begins a reload and
checks on it every turn; a new worker that fails to boot aborts it
(:mod:`arbiter.master.supervisor`, whose ``live_workers`` and
``stop_worker`` it uses). It also uses ``binds`` and ``close_listeners``
(:mod:`arbiter.master.startup`) and ``status_line``
(:mod:`arbiter.master.status`).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from arbiter import logs
from arbiter.appload import (
    AppKindError,
    AppLoadError,
    forget_project_modules,
    load_app,
    prepare_import_path,
    serving_worker_type,
    worker_type_chosen,
)
from arbiter.hooks import HookError, load_hooks
from arbiter.master.process import describe_log_target
from arbiter.master.supervisor import Generation
from arbiter.sockets import BindError, Listener, open_listeners
from arbiter.tls import server_context
from arbiter.workers import worker_class


@dataclass
class PendingReload:
    """A reload in progress: the candidate generation not yet proven."""

    generation: Generation
    started_at: float
    old_target: int
    opened: list[Listener] = field(default_factory=list)  # listeners new in this config


class ReloadTransaction:
    """Begin, commit or roll back a reload; answer whoever waits on it."""

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
            try:
                serving = serving_worker_type(new_cfg.app, app, new_cfg.worker_type,
                                              worker_type_chosen(new_cfg))
            except AppKindError as exc:
                self.forget_listeners(opened)
                self.reload_aborted(str(exc))
                return
            if serving != new_cfg.worker_type:
                cls = worker_class(serving)
        try:
            hooks = load_hooks(new_cfg.hooks, self.log)
        except HookError as exc:
            self.forget_listeners(opened)
            self.reload_aborted(str(exc))
            return
        self.apply_log_settings(new_cfg)
        self.enable_reforking(new_cfg)
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
        self.reset_reforks()  # the new generation comes from the master: the list starts over
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

    def forget_listeners(self, listeners: list[Listener]) -> None:
        """Close listeners a failed reload opened, and stop tracking them."""
        for lst in listeners:
            self.listeners.pop(lst.address.text, None)
        self.close_listeners(listeners)

    def apply_log_settings(self, cfg: Any) -> None:
        try:
            self.log = logs.setup_error_log(cfg.log.level, cfg.log.error_log, cfg.proc_name,
                                             json=cfg.log.json)
        except OSError as exc:
            self.log.error("cannot open the error log %s: %s", cfg.log.error_log, exc)

    def reload_finished(self, ok: bool, outcome: str) -> None:
        """Hook for whoever waits on a reload (``arbiter ctl reload``)."""
        waiters, self.reload_waiters = self.reload_waiters, []
        for answer in waiters:
            answer({"ok": ok, "outcome": outcome})
