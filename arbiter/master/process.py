"""Process helpers of the master: how it ends, and what it asks of the OS.

Owns the master's exit codes and ``StartupError``; the signals it handles
(blocked across every fork it makes); the pidfile (checked, written
atomically, removed only by its owner); the workers' identity (``user`` and
``group`` resolved at start, log files handed to it, privileges dropped
after the fork); a process's memory (RSS, USS) and liveness, read from
``/proc``; the verdict on a worker's scoreboard row past ``timeout``; and
where the error log goes, in words; forking with the collector frozen, and
becoming the subreaper of the workers' descendants. Plain functions: no
``Master`` here.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Any

# Master exit codes (CONTRACT §4).
EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_BIND = 2
EXIT_APP = 3

# What the master handles: queued through the wakeup fd, blocked across every fork.
HANDLED_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                   signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2,
                   signal.SIGWINCH, signal.SIGCHLD)


class StartupError(Exception):
    """The master cannot start; ``code`` is the exit code, str() the message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


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


def fork_with_signals_blocked() -> int:
    """``fork()`` with the master's signals blocked across it, so the child never runs
    the master's handlers (it unblocks them itself once its own are set); the parent
    has them unblocked again. Raises OSError (signals unblocked) when fork fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    # The child starts with everything the master holds frozen: its collector never
    # walks (and so never writes to) the pages it shares with the master. The master
    # unfreezes its own copy: what a reload drops must still be collectable here.
    gc.freeze()
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        raise
    if pid:
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
    return pid


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def become_subreaper() -> bool:
    """Ask Linux to re-parent our orphaned descendants to us (``refork_after``: a
    worker forked by a worker is then the master's child). False where it can't."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


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
    # A start of 0 with a request in flight is a row read while its worker wrote it
    # (it went idle between the two stores): no request has run since boot.
    oldest = now - row.request_started if row.in_flight and row.request_started > 0 else 0.0
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
