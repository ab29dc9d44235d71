#!/usr/bin/env python3
"""Load shedding under overload: what a client sees with and without ``max_queue_time``.

Owns the overload benchmark of issue 12: an app that takes 20 ms per request,
``--workers`` preforked workers (capacity ``workers / 0.02`` requests per
second), and an open-loop load of ``--overload`` times that capacity -- each
request on a new connection, as many independent clients would send them,
each client giving up after ``--client-timeout`` seconds (it never retries).
Three measurements, one server at a time on 127.0.0.1:

* unloaded: one client, one request after another -- the p99 to hold the
  others against;
* arbiter without shedding, at the overload: the backlog grows, served requests
  wait longer and longer, clients time out;
* arbiter with ``max_queue_time``: a request that already waited longer is
  answered ``503`` at once; the served ones stay near the unloaded latency;
* (``--gunicorn VENV``) gunicorn sync with the same workers, the same overload.

Printed: offered and served req/s, p50/p99 of the served (2xx) requests, shed
(503), client time-outs, connection errors, and the server's CPU per answered
request. Usage::

    python scripts/shed_bench.py [--workers 2] [--overload 4] [--duration 10]
        [--max-queue-time 0.01] [--gunicorn /tmp/peers-venv]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

APP = """
import time
def app(environ, start_response):
    time.sleep(0.02)  # the work: 20 ms
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""
SERVICE_TIME = 0.02
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_serving(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(REQUEST)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not answer")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its children, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    except OSError:
        pass
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


async def one_request(port: int, timeout: float, results: dict) -> None:
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.read()  # Connection: close: to the end
        status = int(head[9:12])
        elapsed = time.monotonic() - started
        if status == 200:
            results["latencies"].append(elapsed)
        elif status == 503:
            results["shed"] += 1
        else:
            results["other"] += 1
    except TimeoutError:
        results["timeouts"] += 1  # the client gave up (it never retries)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        results["errors"] += 1
    finally:
        if writer is not None:
            writer.close()


async def open_loop(port: int, rate: float, duration: float, timeout: float) -> dict:
    """``rate`` new requests per second for ``duration`` seconds, not waiting for answers."""
    results = {"latencies": [], "shed": 0, "timeouts": 0, "errors": 0, "other": 0, "sent": 0}
    tasks = set()
    start = time.monotonic()
    interval = 1.0 / rate
    n = 0
    while True:
        due = start + n * interval
        now = time.monotonic()
        if due - start >= duration:
            break
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(one_request(port, timeout, results))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    results["sent"] = n
    if tasks:
        await asyncio.wait(tasks)
    return results


async def closed_loop(port: int, duration: float, timeout: float) -> dict:
    results = {"latencies": [], "shed": 0, "timeouts": 0, "errors": 0, "other": 0, "sent": 0}
    stop_at = time.monotonic() + duration
    while time.monotonic() < stop_at:
        results["sent"] += 1
        await one_request(port, timeout, results)
    return results


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_server(command: list[str], cwd: Path, port: int, load, env: dict | None = None
               ) -> tuple[dict, float]:
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=open(cwd / "server.log", "ab"),  # noqa: SIM115
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        wait_serving(port, proc)
        time.sleep(0.5)
        cpu_before = tree_cpu(proc.pid)
        results = asyncio.run(load())
        cpu = tree_cpu(proc.pid) - cpu_before
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return results, cpu


def arbiter_command(workdir: Path, port: int, workers: int, max_queue_time: float) -> list[str]:
    (workdir / "server.yaml").write_text(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{port}"]
        workers: {workers}
        worker_type: preforked
        backlog: 4096
        max_queue_time: {max_queue_time}
        graceful_timeout: 5
    """))
    return [sys.executable, "-m", "arbiter", "-c", "server.yaml"]


def report(name: str, results: dict, cpu: float, duration: float) -> str:
    served = results["latencies"]
    answered = len(served) + results["shed"] + results["other"]
    cpu_us = cpu / answered * 1e6 if answered else float("nan")
    return (f"| {name} | {results['sent'] / duration:,.0f} | {len(served) / duration:,.0f} | "
            f"{percentile(served, 0.5) * 1000:.1f} | {percentile(served, 0.99) * 1000:.1f} | "
            f"{results['shed']} | {results['timeouts']} | {results['errors']} | {cpu_us:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overload", type=float, default=4.0, help="x the capacity [4]")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load [10]")
    parser.add_argument("--client-timeout", type=float, default=1.0,
                        help="seconds a client waits before giving up [1]")
    parser.add_argument("--max-queue-time", type=float, default=0.01,
                        help="arbiter's max_queue_time with shedding [0.01]")
    parser.add_argument("--gunicorn", metavar="VENV", help="also gunicorn sync from this venv")
    args = parser.parse_args(argv)
    capacity = args.workers / SERVICE_TIME
    rate = capacity * args.overload
    with tempfile.TemporaryDirectory(prefix="shed-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "app.py").write_text(APP)
        rows = []
        port = free_port()
        results, cpu = run_server(arbiter_command(workdir, port, args.workers, 0), workdir,
                                  port, lambda: closed_loop(port, 3.0, args.client_timeout))
        unloaded = percentile(results["latencies"], 0.99)
        rows.append(report("arbiter, unloaded (1 client)", results, cpu, 3.0))
        for name, limit in (("arbiter, no shedding", 0.0),
                            (f"arbiter, max_queue_time {args.max_queue_time:g}",
                             args.max_queue_time)):
            port = free_port()
            results, cpu = run_server(
                arbiter_command(workdir, port, args.workers, limit), workdir, port,
                lambda port=port: open_loop(port, rate, args.duration, args.client_timeout))
            rows.append(report(name, results, cpu, args.duration))
            if limit:
                shed_p99 = percentile(results["latencies"], 0.99)
                shed_timeouts = results["timeouts"]
        if args.gunicorn:
            port = free_port()
            command = [str(Path(args.gunicorn) / "bin" / "gunicorn"), "-w", str(args.workers),
                       "-k", "sync", "--backlog", "4096", "-b", f"127.0.0.1:{port}", "app:app"]
            results, cpu = run_server(
                command, workdir, port,
                lambda: open_loop(port, rate, args.duration, args.client_timeout))
            rows.append(report(f"gunicorn sync -w {args.workers}", results, cpu, args.duration))
    print(f"\napp: 20 ms per request; {args.workers} preforked workers (capacity "
          f"{capacity:.0f} req/s); offered {rate:.0f} req/s ({args.overload:g}x), each on a new "
          f"connection; clients give up after {args.client_timeout:g} s and never retry; "
          f"{args.duration:g} s per run\n")
    print("| server | offered req/s | served req/s | p50 ms | p99 ms | shed 503 | client "
          "time-outs | errors | server CPU µs/answer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    verdict = shed_p99 <= 2 * unloaded and shed_timeouts == 0
    print(f"\nwith shedding: p99 {shed_p99 * 1000:.1f} ms vs unloaded {unloaded * 1000:.1f} ms "
          f"({shed_p99 / unloaded:.2f}x), {shed_timeouts} client time-outs: "
          f"{'PASS' if verdict else 'FAIL'} (target: within 2x, none)")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
