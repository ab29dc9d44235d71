"""The life of a worker process, shared by every worker type.

Owns what happens between ``fork()`` and exit: process title, signal handlers
(TERM graceful, INT/QUIT at once, USR1 reopen logs, USR2 dump every thread's
traceback for the master's hung-worker report), loading the app, announcing
"ready" through the scoreboard, the heartbeat, ``max_requests`` (+ jitter),
noticing that the master is gone, and the exit code the master reads. A
worker the master made the mold (``refork_after``, a type with
``can_refork``) leaves ``serve()`` at a quiet point when asked, forks the
next workers (:mod:`arbiter.workers.mold`) and serves again.

A worker type subclasses :class:`Worker` and implements only ``serve()``: how
it waits for connections and who runs the next piece of work (the asgi type
also ``make_handler()`` and ``start_app()``, its lifespan startup). HTTP and
WSGI go through :mod:`arbiter.http`, ASGI through :mod:`arbiter.asgi`; the
scoreboard row is written through the :class:`Worker` itself, which is the
``RequestObserver`` the HTTP core calls.

The app's kind decides with the config which type serves it
(:func:`arbiter.appload.serving_worker_type`): when ``worker_type`` is unset
and the app turns out to be ASGI, the booting worker becomes an asgi worker
(its class is switched before anything type-specific is built) and says so
in its ready notice, so the master reports the type that serves.
"""

from __future__ import annotations

import faulthandler
import gc
import logging
import os
import random
import signal
import ssl
import sys
import threading
import time
from typing import Any

from arbiter import logs, workers
from arbiter.appload import (
    AppKindError,
    AppLoadError,
    load_app,
    serving_worker_type,
    worker_type_chosen,
)
from arbiter.http import HTTPSettings, WSGIHandler
from arbiter.notices import FAILED, READY, RECYCLE, NoticePipe
from arbiter.scoreboard import DRAINING, IDLE, SlotWriter

try:  # imported here, in the master: a worker may have dropped privileges by the time it runs
    import ctypes
except ImportError:  # pragma: no cover
    ctypes = None  # type: ignore[assignment]

try:
    from setproctitle import setproctitle
except ImportError:  # pragma: no cover - a hard dependency, but never fatal
    def setproctitle(title: str) -> None:
        return None

# Exit codes a worker reports to the master.
EXIT_OK = 0
EXIT_APP_LOAD_FAILED = 3  # the app could not be imported/created at boot
EXIT_APP_KIND_MISMATCH = 4  # the app loaded, but the worker type cannot serve it (WSGI/ASGI)

# The signal the master sends before killing a hung worker: dump tracebacks.
TRACEBACK_SIGNAL = signal.SIGUSR2
PARENT_CHECK_INTERVAL = 0.5  # seconds between getppid() checks (PR_SET_PDEATHSIG is the main guard)


def http_settings(cfg: Any, worker_type: str, multithread: bool = False,
                  tls: bool = False) -> HTTPSettings:
    """The HTTP core's settings for this worker, derived once from the config;
    ``tls``: the listeners serve HTTPS (``wsgi.url_scheme`` is ``https``)."""
    from arbiter import __version__

    limits = cfg.limits
    unlimited = 1 << 30  # the config's 0 means "no limit", as in Gunicorn
    return HTTPSettings(
        parser=cfg.http_parser,
        limit_request_line=limits.request_line or unlimited,
        limit_header_fields=limits.header_fields or unlimited,
        limit_header_field_size=limits.header_field_size or unlimited,
        limit_body=limits.body,
        forwarded_allow_ips=tuple(cfg.forwarded_allow_ips),
        forwarded_headers=cfg.forwarded_headers,
        proxy_protocol=cfg.proxy_protocol or None,  # the config's false (off) is None here
        proxy_allow_ips=tuple(cfg.proxy_allow_ips),
        keepalive=float(cfg.keepalive),
        read_timeout=float(cfg.timeout) if cfg.timeout else 30.0,
        header_timeout=float(cfg.header_timeout),
        min_transfer_rate=float(cfg.min_transfer_rate),
        server_software=f"arbiter/{__version__}",
        multithread=multithread,
        multiprocess=True,
        url_scheme="https" if tls else "http",
        max_queue_time=float(cfg.max_queue_time),
    )


def error_log_fileno(log: logging.Logger) -> int:
    """The file descriptor the error log writes to (stderr when it is syslog)."""
    for handler in log.handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None:
            try:
                return stream.fileno()
            except (AttributeError, OSError, ValueError):
                continue
    return sys.stderr.fileno()


class Worker:
    """One worker process. Subclasses implement :meth:`serve`.

    Class attributes a worker type sets:

    * ``multithread``: requests run in several threads at once; the observer
      methods then track each thread's request and the scoreboard row shows
      the in-flight count and the oldest running request.
    * ``hung_policy``: what the master does with a request older than
      ``timeout``: ``"kill"`` (dump tracebacks, then SIGKILL: one request per
      process, or a reactor that a stuck app has frozen), ``"recycle"`` (dump
      tracebacks, then TERM: the other threads finish their requests within
      ``graceful_timeout`` while a replacement starts; a Python thread cannot
      be killed), or ``"self"`` (the worker kills its own hung children; the
      master only watches the worker's heartbeat).

    Utilization (the scoreboard's busy time) is the fraction of the worker's
    capacity in use: one request at a time for a single-threaded worker, and
    for a multithreaded one ``request_capacity()`` requests (pooled: its
    ``threads``; threaded: ``max_connections``), or, when that is None (asgi:
    no bound but the connections), any request in flight counts as busy.
    """

    worker_type = "base"
    multithread = False
    hung_policy = "kill"
    capacity_setting: str | None = None  # the setting that bounds requests at once (utilization)
    # serve() returns at a quiet point once fork_due is set, so this type can be a mold
    can_refork = False

    def __init__(self, *, cfg: Any, listeners: list, slot: SlotWriter, number: int,
                 generation: int, master_pid: int, app: Any = None,
                 log: logging.Logger, tls: ssl.SSLContext | None = None,
                 notices: NoticePipe | None = None) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.slot = slot
        self.number = number
        self.generation = generation
        self.master_pid = master_pid
        self.app = app
        self.log = log
        # The server-side TLS context every listener serves with (None: plain HTTP).
        # Blocking drivers pass it to serve_connection, which does the handshake.
        self.tls = tls
        self.alive = True
        self.parent_checked_at = 0.0  # when getppid() last said the master lives
        self.reopen_requested = False
        self.requests_served = 0
        self.recycle_asked = False
        self.notices = notices  # wakes the master: ready, recycle me, failed to boot
        self.max_requests = self.pick_max_requests()
        self.refork_generation = 0  # forks from warm workers between the master and us
        self.fork_due = False  # REFORK_SIGNAL: the master asks this mold for workers
        self.after_refork: Any = None  # the post_fork hook, for a worker a mold forks
        timeout = float(cfg.timeout)
        # Heartbeat often enough that an idle worker is never mistaken for a hung one.
        self.tick = min(1.0, timeout / 4) if timeout > 0 else 1.0
        self.wakeup_r, self.wakeup_w = os.pipe()
        self.handler: WSGIHandler | None = None
        # Opened here, in the fork, before a `user` switch could forbid it.
        self.access_log = logs.AccessLog(cfg.log.access_log, cfg.log.access_format,
                                         json=cfg.log.json, worker=number)
        # Multithreaded workers: the requests running now, by thread (start, method, path).
        self.requests_lock = threading.Lock()
        self.running: dict[object, tuple[float, str, str]] = {}
        # An event loop's call_soon (publish_once_a_turn): the in-flight fields are then
        # published once a turn of the loop, not at each change.
        self.publish_soon: Any = None
        self.publish_pending = False
        self.capacity = self.request_capacity()  # utilization's denominator (None: 1 or 0)

    def pick_max_requests(self) -> int:
        """This worker's ``max_requests`` with its jitter (0: never recycled)."""
        if not self.cfg.max_requests:
            return 0
        return self.cfg.max_requests + random.randint(0, self.cfg.max_requests_jitter)

    def set_title(self) -> None:
        setproctitle(f"arbiter: worker [{self.cfg.proc_name}] #{self.number}")

    # -- boot ----------------------------------------------------------------
    def run(self) -> int:
        """Boot, serve until told to stop, and return the process exit code."""
        self.slot.set_pid(os.getpid())
        self.set_title()
        self.install_signals()
        self.watch_master_death()
        if self.app is None:
            try:
                self.app = load_app(self.cfg.app)
            except AppLoadError as exc:
                self.log.error("worker #%d (pid %d) could not load the app: %s",
                               self.number, os.getpid(), exc)
                self.notify(FAILED, exc.summary)
                return EXIT_APP_LOAD_FAILED
        try:
            serving = serving_worker_type(self.cfg.app, self.app, self.worker_type,
                                          worker_type_chosen(self.cfg))
        except AppKindError as exc:
            self.log.error("worker #%d (pid %d): %s", self.number, os.getpid(), exc)
            self.notify(FAILED, str(exc))
            return EXIT_APP_KIND_MISMATCH
        if serving != self.worker_type:
            # worker_type unset and the app is ASGI: this process serves it as the asgi
            # worker type does (same constructor state; only the strategy differs), its
            # signal handlers the new class's methods.
            self.__class__ = workers.worker_class(serving)
            self.install_signals()
        workers.current_worker_type = self.worker_type
        self.handler = self.make_handler(
            http_settings(self.cfg, self.worker_type, self.multithread,
                          tls=self.tls is not None),
            self.access_log if self.access_log.enabled else None)
        failure = self.start_app()
        if failure is not None:
            self.log.error("worker #%d (pid %d) could not start the app: %s",
                           self.number, os.getpid(), failure)
            self.notify(FAILED, failure)
            return EXIT_APP_LOAD_FAILED
        # Everything alive now (what the master had, the app and its imports) lives as
        # long as the worker: the collector need not walk it again on the request path,
        # and pages shared with the master stay shared.
        gc.freeze()
        self.slot.heartbeat()
        self.slot.set_state(IDLE)  # the master counts this worker as ready from here
        self.notify(READY, self.worker_type)
        self.log.debug("worker #%d (pid %d) booted", self.number, os.getpid())
        try:
            self.serve()
            # A mold asked for workers left serve() at a quiet point: fork them, serve
            # again (the mold, and each child as the new worker it became).
            while self.alive and self.fork_due and self.can_refork:
                from arbiter.workers.mold import fork_requested_workers

                fork_requested_workers(self)
                self.serve()
        finally:
            self.slot.set_state(DRAINING)
            if self.access_log is not None:
                self.access_log.close()
        return EXIT_OK

    def reforked(self) -> None:
        """In a worker a mold forked, before it reports ready: what its type must start
        afresh rather than inherit (nothing, but for the asgi type)."""

    def make_handler(self, settings: HTTPSettings, access_log: Any) -> WSGIHandler:
        """The per-worker handler the HTTP core calls (the asgi type builds its own)."""
        return WSGIHandler(self.app, settings, self.log, access_log)

    def start_app(self) -> str | None:
        """Before the worker reports ready: start the app (the asgi type runs the ASGI
        lifespan startup). None when it is ready; else why not (a failed boot)."""
        return None

    def serve(self) -> None:
        raise NotImplementedError

    def notify(self, kind: str, text: str = "") -> None:
        """Wake the master with a notice (see :mod:`arbiter.notices`)."""
        if self.notices is not None:
            self.notices.send(kind, text)

    def ask_for_recycle(self) -> None:
        """``max_requests`` reached: ask the master to start a replacement, and serve on
        until it tells us to stop (TERM), so readiness never dips during a recycle."""
        if self.recycle_asked or not self.alive:
            return
        self.recycle_asked = True
        self.log.info("worker #%d (pid %d) served %d requests (max_requests): recycling once "
                      "its replacement is ready", self.number, os.getpid(), self.requests_served)
        self.slot.ask_for_recycle()
        self.notify(RECYCLE)

    # -- signals ---------------------------------------------------------------
    def install_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH,
                    signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master reloads; a worker ignores HUP
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.signal(signal.SIGURG, self.handle_urg)  # mold.REFORK_SIGNAL
        os.set_blocking(self.wakeup_w, False)
        os.set_blocking(self.wakeup_r, False)
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        faulthandler.register(TRACEBACK_SIGNAL, file=error_log_fileno(self.log),
                              all_threads=True, chain=False)
        # The master blocked signals across fork; from here on they are ours.
        signal.pthread_sigmask(signal.SIG_SETMASK, [])

    def handle_term(self, signum: int, frame: Any) -> None:
        self.alive = False

    def handle_quit(self, signum: int, frame: Any) -> None:
        self.alive = False
        raise SystemExit(EXIT_OK)

    def handle_usr1(self, signum: int, frame: Any) -> None:
        self.reopen_requested = True

    def handle_urg(self, signum: int, frame: Any) -> None:
        """The master asks this worker, the mold, to fork workers (``can_refork`` types)."""
        self.fork_due = self.can_refork

    def drain_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_r, 512):
                pass
        except BlockingIOError:
            pass

    def watch_master_death(self) -> None:
        """Ask Linux to send us TERM if the master dies (belt to the getppid braces)."""
        if not sys.platform.startswith("linux"):
            return
        if ctypes is None:
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
        if os.getppid() != self.master_pid:  # it died before prctl took effect
            self.alive = False

    # -- the loop's chores -----------------------------------------------------
    def between_requests(self) -> bool:
        """Heartbeat and housekeeping; False when the worker should stop."""
        self.slot.heartbeat()
        if self.reopen_requested:
            self.reopen_requested = False
            logs.reopen_log_files()
            faulthandler.register(TRACEBACK_SIGNAL, file=error_log_fileno(self.log),
                                  all_threads=True, chain=False)
        now = time.monotonic()
        if now >= self.parent_checked_at + PARENT_CHECK_INTERVAL:  # not once per connection
            self.parent_checked_at = now
            if os.getppid() != self.master_pid:
                self.log.warning("worker #%d (pid %d): master is gone, exiting",
                                 self.number, os.getpid())
                self.alive = False
        return self.alive

    def stopping(self) -> bool:
        """Connections end after their response in progress: the worker stops, or it is
        a mold about to fork (``fork_due``: only ``can_refork`` types ever set it)."""
        return not self.alive or self.fork_due

    # -- RequestObserver (called by the HTTP core) -------------------------------
    def heartbeat(self) -> None:
        self.slot.heartbeat()

    def requests_in_progress(self) -> str:
        """The request(s) this worker serves now, oldest first, for a stall report
        (called from the watchdog's thread)."""
        now = time.monotonic()
        if self.multithread:
            if not self.requests_lock.acquire(timeout=0.1):
                return ""
            try:
                running = sorted(self.running.values())
            finally:
                self.requests_lock.release()
        else:
            slot = self.slot
            running = [(slot.started, slot.method, slot.path or "")] if slot.in_flight else []
        shown = ", ".join(f"{method} {path} ({now - started:.2f} s)"
                          for started, method, path in running[:3])
        more = len(running) - 3
        return shown + (f" and {more} more" if more > 0 else "")

    def loop_watchdog(self) -> Any:
        """A :class:`~arbiter.io.event_loop.LoopWatchdog` for this worker's event loop
        (``reactor_block_warning``), not started; None when the setting is 0."""
        threshold = float(getattr(self.cfg, "reactor_block_warning", 0) or 0)
        if threshold <= 0:
            return None
        from arbiter.io.event_loop import LoopWatchdog  # asyncio: only loops need it

        return LoopWatchdog(threshold, self.log, f"worker #{self.number} (pid {os.getpid()})",
                            serving=self.requests_in_progress, counts=self.slot)

    def request_capacity(self) -> int | None:
        """Multithreaded workers: how many requests at once use the whole worker -- the
        setting named by ``capacity_setting`` (None: no such bound; busy means a request
        is in flight)."""
        name = self.capacity_setting
        return max(1, int(getattr(self.cfg, name))) if name else None

    def _show_running(self, now: float) -> None:
        """Multithreaded workers: publish the in-flight count, the oldest request -- the
        first one in ``running``, which keeps them in the order they started -- and the
        fraction of capacity in use from ``now`` (once a turn: see publish_once_a_turn)."""
        capacity = self.capacity
        running = len(self.running)
        rate = (running if running < capacity else capacity) / capacity if capacity \
            else 1.0 if running else 0.0
        if self.publish_soon is not None:
            self.slot.note_busy(now, rate)
            if not self.publish_pending:
                self.publish_pending = True
                self.publish_soon(self.publish_running)
        elif running:
            started, method, path = next(iter(self.running.values()))
            self.slot.show_running(now, rate, running, started, method, path)
        else:
            self.slot.show_running(now, rate, 0, 0.0, "", "")

    def publish_once_a_turn(self, call_soon: Any, watchdog: Any) -> None:
        """Requests start and finish on one event loop's thread only (asgi): the observer
        takes no lock, and the in-flight fields and busy time are written to the
        scoreboard once a turn of the loop (``call_soon``) rather than at each change --
        a turn serves many requests. Only with a loop watchdog, which publishes a loop
        blocked before its turn ends (``publish_running`` from its thread)."""
        self.publish_soon = call_soon
        watchdog.publish = self.publish_running
        self.publish_pending = False  # (a callback of a loop gone before a fork is lost)

    def publish_running(self) -> None:
        """The in-flight fields and the busy time as they are now (publish_once_a_turn);
        from the loop, or from the watchdog's thread while the loop is blocked."""
        lock = self.requests_lock
        lock.acquire()
        try:
            if not self.publish_pending:
                return  # published already
            self.publish_pending = False
            running = self.running
            if running:
                started, method, path = next(iter(running.values()))
                self.slot.publish_running(len(running), started, method, path)
            else:
                self.slot.publish_running(0, 0.0, "", "")
        finally:
            lock.release()

    def request_started(self, method: str, path: str, key: object = None) -> None:
        """A request begins. ``key`` names it for a multithreaded worker when another
        thread may finish it (pooled: the reactor starts, a pool thread finishes)."""
        if not self.multithread:
            self.slot.request_started(method, path)
            return
        key = threading.get_ident() if key is None else key
        if self.publish_soon is not None:  # one thread: no lock
            self._start_running(key, method, path)
            return
        # acquire/release rather than `with`: half the cost, three times a request
        lock = self.requests_lock
        lock.acquire()
        try:
            self._start_running(key, method, path)
        finally:
            lock.release()

    def _start_running(self, key: object, method: str, path: str) -> None:
        running = self.running
        if key in running:  # (never, but the order must stay the order they started)
            del running[key]
        now = time.monotonic()
        running[key] = (now, method, path)
        self._show_running(now)

    def request_queued(self, seconds: float, shed: bool) -> None:
        """How long a request waited before its app started (and if it was shed)."""
        if not self.multithread or self.publish_soon is not None:
            self.slot.record_queue(seconds, shed)
            return
        lock = self.requests_lock
        lock.acquire()
        try:
            self.slot.record_queue(seconds, shed)
        finally:
            lock.release()

    def request_finished(self, status: int, key: object = None,
                         duration: float | None = None) -> None:
        if not self.multithread:
            self.slot.request_finished(status, duration)
        elif self.publish_soon is not None:  # one thread: no lock
            self._finish_running(status, key, duration)
        else:
            lock = self.requests_lock
            lock.acquire()
            try:
                self._finish_running(status, key, duration)
            finally:
                lock.release()
        self.requests_served += 1
        if self.max_requests and self.requests_served >= self.max_requests:
            self.ask_for_recycle()

    def _finish_running(self, status: int, key: object, duration: float | None) -> None:
        started, method, _ = self.running.pop(
            threading.get_ident() if key is None else key, (0.0, "", ""))
        now = time.monotonic()
        if duration is None:
            duration = now - started if started else 0.0
        self.slot.count_request(status, method, duration)
        self._show_running(now)

