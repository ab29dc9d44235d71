#!/usr/bin/env python3
"""The same server load on two builds of arbiter, interleaved: is a change faster?

Owns the old-against-new measurement of one change as a user would see it: the
real server (master, workers, sockets, wrk on 127.0.0.1), not the in-process
core benches. Those count the per-request Python well, but
they do not tell what a change does to a server under load -- two changes this
measured (answering each request inside its socket's read, and a Cython build of
the unchanged modules without C types for their classes) came out 15% and 30%
*faster* in ``scripts/asgi_core_bench.py`` and 15% slower and no faster here.

``--old REV`` is checked out into a temporary git worktree and run from it
(``PYTHONPATH``) with this checkout's interpreter; the new build is this
checkout. Each round runs old, new (and ``--uvicorn PYTHON`` when given: a
uvicorn with httptools + uvloop from that interpreter) one after the other, so
a machine whose speed drifts moves them alike; it prints each run and the
medians of req/s and server CPU µs per request (utime+stime of the process tree
over the load, so wrk's own CPU is not in it).

    python scripts/ab_commits.py --old HEAD~1 [--type asgi] [--workers 2]
        [--rounds 5] [--seconds 5] [--conns 50] [--uvicorn /tmp/peers-venv/bin/python]

Needs ``wrk`` on PATH. Every server is stopped by pid, the worktree removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import descendants, free_port, run_wrk, tree_cpu_ticks  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
TICKS = os.sysconf("SC_CLK_TCK")


def start(build: str, args: argparse.Namespace, port: int, old_tree: Path) -> subprocess.Popen:
    app = "bench_app:asgi_app" if args.type == "asgi" else "bench_app:app"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    if build == "uvicorn":
        cmd = [args.uvicorn, "-m", "uvicorn", "--workers", str(args.workers), "--host",
               "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
               "--http", "httptools", "--loop", "uvloop", app]
    else:
        cmd = [sys.executable, "-m", "arbiter", "-b", f"127.0.0.1:{port}", "-w",
               str(args.workers), "-k", args.type, "--log-level", "warning", app]
        # bench_app from this checkout's scripts/ either way; the old build's package first
        path = [str(old_tree)] if build == "old" else [str(REPO)]
        env["PYTHONPATH"] = os.pathsep.join([*path, str(SCRIPTS)])
    return subprocess.Popen(cmd, cwd=SCRIPTS, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def wait_answering(proc: subprocess.Popen, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                response.read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not answer within 30 s")


def stop(proc: subprocess.Popen) -> None:
    kids = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for kid in kids:
        try:
            os.kill(kid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def measure(build: str, args: argparse.Namespace, old_tree: Path) -> tuple[float, float]:
    """One run: (req/s, server CPU µs per request)."""
    port = free_port()
    proc = start(build, args, port, old_tree)
    try:
        wait_answering(proc, port)
        run_wrk("wrk", port, args.conns, 1, close=False)  # warm-up
        before = tree_cpu_ticks(proc.pid)
        result = run_wrk("wrk", port, args.conns, args.seconds, close=False)
        cpu = (tree_cpu_ticks(proc.pid) - before) / TICKS
    finally:
        stop(proc)
    if result.socket_errors or result.non2xx or not result.requests:
        raise RuntimeError(f"{build}: {result.socket_errors} socket errors, "
                           f"{result.non2xx} non-2xx of {result.requests} requests")
    return result.rps, cpu * 1e6 / result.requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="the git revision to hold against")
    parser.add_argument("--type", default="asgi", help="worker type (default asgi)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--uvicorn", help="a Python with uvicorn, httptools and uvloop")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("ab_commits: needs wrk on PATH (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if args.uvicorn and args.type != "asgi":
        print("ab_commits: --uvicorn serves the asgi app: only with --type asgi",
              file=sys.stderr)
        return 2
    builds = ["old", "new", *(["uvicorn"] if args.uvicorn else [])]
    runs: dict[str, list[tuple[float, float]]] = {build: [] for build in builds}
    with tempfile.TemporaryDirectory(prefix="arbiter-ab-") as scratch:
        old_tree = Path(scratch) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q",
                        str(old_tree), args.old], check=True)
        try:
            for round_number in range(1, args.rounds + 1):
                for build in builds:
                    rps, us = measure(build, args, old_tree)
                    runs[build].append((rps, us))
                    print(f"round {round_number}  {build:8} {rps:9,.0f} req/s  {us:6.1f} µs/req",
                          flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(old_tree)], check=False)
    print(f"\n{args.type}, {args.workers} workers, wrk -t1 -c{args.conns} -d{args.seconds}s, "
          f"medians of {args.rounds} (old = {args.old}, new = this checkout)")
    base_rps = statistics.median(r for r, _ in runs["old"])
    base_us = statistics.median(u for _, u in runs["old"])
    for build in builds:
        rps = statistics.median(r for r, _ in runs[build])
        us = statistics.median(u for _, u in runs[build])
        print(f"  {build:8} {rps:9,.0f} req/s ({rps / base_rps:5.2f}x)  "
              f"{us:6.1f} µs/req ({us / base_us:5.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
