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

    signals -> reap -> utilization sample -> (stopping?) -> reload progress -> boot checks
    -> hung workers -> recycles -> reforks -> kill deadlines -> spawn / retire to the
    target count -> wait

so the first workers are forked before the master first waits, and a
worker's "ready" ends the wait at once: start, reload and scale-up never
wait for a tick.

A reload (HUP) is a transaction: the new config is validated, a new
generation of workers is started with it, and only when every one of them has
loaded the app (reported through the scoreboard) within ``boot_timeout`` is
the old generation retired. Any failure rolls back: the new workers are
stopped and the old generation keeps serving, under the old config.

The parts, each a module of this package. ``Master`` puts their mixins
together; imports run one way (the loop imports the parts; they import
``process`` and the records in ``supervisor``), and where a part calls a
method of another through ``self`` its docstring names it:

    loop        Master: the state, run() and turn(), the wait, signal
                dispatch (handle_<signal>), stop and shutdown
    startup     start(): listeners, pidfile, daemon mode, signals, ctl, admin
    supervisor  the workers' life: spawn, reap, respawn with backoff, boot
                checks, stop one, scale to the target
    recycling   hung workers, max_requests, max_worker_memory
    refork      refork_after: the mold, workers forked from it, the old replaced
    reload      the reload transaction
    upgrade     the USR2 upgrade, and WINCH
    status      the snapshot (utilization included), readiness, systemd status,
                the ctl commands
    process     exit codes, pidfile, privileges, memory, liveness (no Master)
"""

from arbiter.master.loop import FAST_STOP_GRACE, Master
from arbiter.master.process import (
    EXIT_APP,
    EXIT_BIND,
    EXIT_CONFIG,
    EXIT_OK,
    HANDLED_SIGNALS,
    StartupError,
    check_pidfile,
    describe_log_target,
    drop_privileges,
    hand_log_files_to,
    hung_verdict,
    pid_alive,
    private_memory,
    process_memory,
    remove_pidfile,
    resolve_identity,
    write_pidfile,
)
from arbiter.master.recycling import MEMORY_CHECK_INTERVAL, TIMEOUT_KILL_GRACE
from arbiter.master.reload import PendingReload
from arbiter.master.supervisor import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    RESTART_REASONS,
    Generation,
    WorkerProcess,
)
from arbiter.master.upgrade import (
    UPGRADE_ACTIVATED_ENV,
    UPGRADE_ADMIN_ENV,
    UPGRADE_FDS_ENV,
    UPGRADE_FROM_ENV,
)

__all__ = [
    "BACKOFF_FIRST", "BACKOFF_MAX", "EXIT_APP", "EXIT_BIND", "EXIT_CONFIG", "EXIT_OK",
    "FAST_STOP_GRACE", "HANDLED_SIGNALS", "MEMORY_CHECK_INTERVAL", "RESTART_REASONS",
    "TIMEOUT_KILL_GRACE", "UPGRADE_ACTIVATED_ENV", "UPGRADE_ADMIN_ENV", "UPGRADE_FDS_ENV",
    "UPGRADE_FROM_ENV", "Generation", "Master", "PendingReload", "StartupError",
    "WorkerProcess", "check_pidfile", "describe_log_target", "drop_privileges",
    "hand_log_files_to", "hung_verdict", "pid_alive", "private_memory", "process_memory",
    "remove_pidfile", "resolve_identity", "write_pidfile",
]
