#!/usr/bin/env python3
"""What a reload and a recycle cost: HUP-to-"reload complete" time, and req/s in a recycle storm.

This script owns two measurements of arbiter's worker replacement, for each
worker type (default all five), ``-w 4`` workers, ``scripts/hello.py`` as the
app, every server on 127.0.0.1 from a generated YAML config (error log in a
file, ``admin_bind`` for ``/status``):

(a) reload time: SIGHUP is sent to the master and the error log is polled
    (every ~2 ms, from the offset it had before the signal) until the
    master's ``reload complete: generation N serving`` line
    (``arbiter/master/reload.py``) appears; that wall time, over ``--runs``
    HUPs (default 5) with the server idle, then ``--runs`` more under a light
    paced load (``wrk -t1 -c4`` whose Lua ``delay()`` waits 10 ms before each
    request). Median and max; before each HUP ``/status`` is polled until the
    previous generation has gone. A ``reload aborted`` or ``rolled back``
    line is a failure. What wrk counted during the loaded HUPs (socket
    errors, non-2xx) is reported: a reload must drop nothing.

(b) recycle storm: a second server, identical but with ``max_requests: 500``
    (``max_requests_jitter: 0`` unless ``--jitter``: every worker recycles
    after the same count), beside the first one (no ``max_requests``, the
    steady state). ``wrk -t1 -c50 -dDs`` keep-alive runs against each,
    alternately (which goes first flips every run), ``--runs`` times, each
    server polled until settled before its run; req/s steady and storm
    (medians), the ratio storm/steady, the recycles (``/status``
    ``restarts.max_requests``, read once the server has settled after the
    run) and what wrk counted as socket errors and
    non-2xx (a recycle must drop nothing).

Prints markdown tables (``--json``: one JSON object instead). Exit status 0
when no reload failed and wrk saw no error and no non-2xx in (a) under load
and in the storm, 1 otherwise, 2 when a server or wrk failed to run. Every
process started (servers, wrk) is stopped by pid -- TERM, KILL after a
timeout, descendants too -- also on errors, Ctrl-C and SIGTERM. The server
and wrk helpers are ``scripts/balance.py``'s (which uses ``scripts/bench.py``).

Usage::

    python scripts/reload_cost.py [--types forked,preforked,threaded,pooled,evented]
        [--workers 4] [--runs 5] [--duration 5] [--max-requests 500] [--jitter 0]
        [--parts a,b] [--light-connections 4] [--light-delay-ms 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import balance  # noqa: E402  (scripts/balance.py: arbiter from a config, /status, wrk)
import bench  # noqa: E402  (scripts/bench.py: process helpers)

COMPLETE = "reload complete"
FAILED = ("reload aborted", "reload rolled back")
RELOAD_TIMEOUT = 60.0  # boot_timeout (30 s) and then some


def log(msg: str) -> None:
    bench.log(msg)


# --------------------------------------------------------------------------- (a) reload time


def hup_and_time(arb: balance.Arbiter, workers: int) -> tuple[float, float]:
    """SIGHUP the master; seconds until "reload complete" is in the error log, and until the
    old generation is gone (``/status`` settled on the new one)."""
    before = balance.wait_settled(arb, workers)
    generation = before["master"]["generation"]
    offset = arb.error_log.stat().st_size
    pending = b""
    t0 = time.monotonic()
    os.kill(arb.pid, signal.SIGHUP)
    complete = None
    with open(arb.error_log, "rb") as f:
        f.seek(offset)
        while complete is None:
            now = time.monotonic()
            chunk = f.read()
            if chunk:
                pending += chunk
                lines, _, pending = pending.rpartition(b"\n")
                for line in lines.decode(errors="replace").splitlines():
                    if COMPLETE in line:
                        complete = now - t0
                        break
                    if any(word in line for word in FAILED):
                        raise RuntimeError(f"{arb.server.label}: {line.strip()}")
                continue
            if arb.server.proc.poll() is not None:
                raise RuntimeError(f"{arb.server.label} exited during a reload:\n"
                                   f"{bench.tail(arb.error_log)}")
            if now - t0 > RELOAD_TIMEOUT:
                raise RuntimeError(f"{arb.server.label}: no {COMPLETE!r} within "
                                   f"{RELOAD_TIMEOUT:.0f}s:\n{bench.tail(arb.error_log)}")
            time.sleep(0.002)
    after = balance.wait_settled(arb, workers, timeout=RELOAD_TIMEOUT)
    if after["master"]["generation"] <= generation:
        raise RuntimeError(f"{arb.server.label}: generation {after['master']['generation']} "
                           f"after the HUP, was {generation}")
    return complete, time.monotonic() - t0


def wait_flowing(arb: balance.Arbiter, wrk: balance.Wrk, timeout: float = 10.0) -> None:
    """Poll ``/status`` until requests are being served (the load is on)."""
    start = balance.status(arb)["requests"]["total"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not wrk.running():
            raise RuntimeError("wrk ended before the load started")
        if balance.status(arb)["requests"]["total"] > start + 10:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{arb.server.label}: no requests served within {timeout:.0f}s of wrk")


@dataclass
class ReloadResult:
    worker_type: str
    idle: list[float] = field(default_factory=list)  # HUP -> "reload complete", s
    idle_settled: list[float] = field(default_factory=list)  # HUP -> old generation gone, s
    loaded: list[float] = field(default_factory=list)
    loaded_settled: list[float] = field(default_factory=list)
    load_rps: float = float("nan")
    load_requests: int = 0
    load_socket_errors: int = 0
    load_non2xx: int = 0


def measure_reloads(arb: balance.Arbiter, worker_type: str, args: argparse.Namespace,
                    wrk_bin: str, delay_script: Path) -> ReloadResult:
    res = ReloadResult(worker_type)
    for i in range(args.runs):
        done, gone = hup_and_time(arb, args.workers)
        res.idle.append(done)
        res.idle_settled.append(gone)
        log(f"  {worker_type} idle HUP {i + 1}: reload complete in {done * 1000:.0f} ms, "
            f"old generation gone in {gone * 1000:.0f} ms")
    # far longer than the HUPs take: interrupted (SIGINT, wrk prints its totals) once they're done
    wrk = balance.Wrk(wrk_bin, arb.port, args.light_connections,
                      args.runs * RELOAD_TIMEOUT + 60, script=delay_script)
    wait_flowing(arb, wrk)
    for i in range(args.runs):
        done, gone = hup_and_time(arb, args.workers)
        res.loaded.append(done)
        res.loaded_settled.append(gone)
        log(f"  {worker_type} loaded HUP {i + 1}: reload complete in {done * 1000:.0f} ms, "
            f"old generation gone in {gone * 1000:.0f} ms")
    load = wrk.interrupt()
    res.load_rps, res.load_requests = load.rps, load.requests
    res.load_socket_errors, res.load_non2xx = load.socket_errors, load.non2xx
    log(f"  {worker_type} light load during the HUPs: {load.requests} requests "
        f"({load.rps:.0f} req/s), socket errors {load.socket_errors}, non-2xx {load.non2xx}")
    return res


# --------------------------------------------------------------------------- (b) recycle storm


@dataclass
class StormSample:
    worker_type: str
    run: int
    role: str  # "steady" | "storm"
    rps: float
    requests: int
    socket_errors: int
    timeouts: int
    non2xx: int
    recycles: int  # restarts.max_requests during the run


def measure_storm_once(arb: balance.Arbiter, worker_type: str, run: int, role: str,
                       args: argparse.Namespace, wrk_bin: str) -> StormSample:
    before = balance.wait_settled(arb, args.workers, timeout=RELOAD_TIMEOUT)
    load = balance.Wrk(wrk_bin, arb.port, 50, args.duration).finish()
    # a recycled worker is counted once it has exited: wait for the ones still draining
    after = balance.wait_settled(arb, args.workers, timeout=RELOAD_TIMEOUT)
    recycles = after["restarts"]["max_requests"] - before["restarts"]["max_requests"]
    sample = StormSample(worker_type, run, role, load.rps, load.requests, load.socket_errors,
                         load.timeouts, load.non2xx, recycles)
    log(f"  {worker_type} {role} run {run + 1}: {load.rps:.0f} req/s, recycles {recycles}, "
        f"socket errors {load.socket_errors}, non-2xx {load.non2xx}")
    return sample


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}" if seconds == seconds else "-"


def reload_table(rows: list[ReloadResult], args: argparse.Namespace) -> str:
    lines = [
        f"(a) SIGHUP -> \"{COMPLETE}\" in the error log, {args.workers} workers, "
        f"{args.runs} HUPs each, ms (in brackets: until the old generation is gone)",
        "",
        "| type | idle median | idle max | light load median | light load max "
        "| light load req/s | errors / non-2xx under load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.worker_type} | {_ms(median(r.idle))} ({_ms(median(r.idle_settled))}) "
            f"| {_ms(max(r.idle))} ({_ms(max(r.idle_settled))}) "
            f"| {_ms(median(r.loaded))} ({_ms(median(r.loaded_settled))}) "
            f"| {_ms(max(r.loaded))} ({_ms(max(r.loaded_settled))}) "
            f"| {r.load_rps:.0f} | {r.load_socket_errors} / {r.load_non2xx} |")
    return "\n".join(lines)


def storm_rows(samples: list[StormSample]) -> list[dict]:
    rows = []
    for worker_type in dict.fromkeys(s.worker_type for s in samples):
        mine = [s for s in samples if s.worker_type == worker_type]
        steady = [s for s in mine if s.role == "steady"]
        storm = [s for s in mine if s.role == "storm"]
        rps_steady, rps_storm = median([s.rps for s in steady]), median([s.rps for s in storm])
        rows.append({
            "type": worker_type, "runs": len(storm),
            "rps_steady": rps_steady, "rps_storm": rps_storm,
            "ratio": rps_storm / rps_steady if rps_steady else float("nan"),
            "recycles": sum(s.recycles for s in storm),
            "storm_requests": sum(s.requests for s in storm),
            "storm_socket_errors": sum(s.socket_errors for s in storm),
            "storm_timeouts": sum(s.timeouts for s in storm),
            "storm_non2xx": sum(s.non2xx for s in storm),
            "steady_socket_errors": sum(s.socket_errors for s in steady),
            "steady_non2xx": sum(s.non2xx for s in steady),
        })
    return rows


def storm_table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"(b) recycle storm: max_requests {args.max_requests}, jitter {args.jitter}, "
        f"{args.workers} workers, wrk -t1 -c50 -d{round(args.duration)}s keep-alive, "
        f"{args.runs} alternating runs, medians",
        "",
        "| type | req/s steady | req/s storm | storm/steady | recycles (all runs) "
        "| storm non-2xx | storm socket errors | steady non-2xx / errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['type']} | {r['rps_steady']:.0f} | {r['rps_storm']:.0f} | {r['ratio']:.2f} "
            f"| {r['recycles']} | {r['storm_non2xx']} | {r['storm_socket_errors']} "
            f"| {r['steady_non2xx']} / {r['steady_socket_errors']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--types", default=",".join(balance.WORKER_TYPES),
                   help="comma-separated worker types (default: %(default)s)")
    p.add_argument("--workers", type=int, default=4, help="workers per server (default 4)")
    p.add_argument("--runs", type=int, default=5,
                   help="HUPs idle and under load, and storm/steady run pairs (default 5)")
    p.add_argument("--duration", type=float, default=5, help="seconds per storm/steady wrk run")
    p.add_argument("--max-requests", type=int, default=500, help="the storm's max_requests")
    p.add_argument("--jitter", type=int, default=0, help="the storm's max_requests_jitter")
    p.add_argument("--light-connections", type=int, default=4,
                   help="wrk connections of the light load during HUPs (default 4)")
    p.add_argument("--light-delay-ms", type=int, default=10,
                   help="wrk Lua delay() before each light-load request (default 10)")
    p.add_argument("--parts", default="a,b", help="a = reload time, b = recycle storm")
    p.add_argument("--json", action="store_true", help="print one JSON object, not the tables")
    args = p.parse_args(argv)
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    for t in args.types:
        if t not in balance.WORKER_TYPES:
            p.error(f"unknown worker type {t!r} (one of {', '.join(balance.WORKER_TYPES)})")
    args.parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    if not args.parts or args.parts - {"a", "b"}:
        p.error("--parts: a, b or a,b")
    if args.workers < 1 or args.runs < 1 or args.max_requests < 1:
        p.error("--workers, --runs and --max-requests must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk_bin = balance.find_wrk()
    if wrk_bin is None:
        return 2
    bench.install_signal_handlers()
    logdir = Path(tempfile.mkdtemp(prefix="arbiter-reload-cost-"))
    log(f"server configs and logs in {logdir}")
    delay_script = logdir / "delay.lua"
    delay_script.write_text(f"function delay()\n  return {args.light_delay_ms}\nend\n")
    reloads: list[ReloadResult] = []
    storms: list[StormSample] = []
    try:
        for worker_type in args.types:
            steady = balance.start_arbiter(worker_type, args.workers, logdir, tag="-steady")
            storm = None
            if "b" in args.parts:
                storm = balance.start_arbiter(
                    worker_type, args.workers, logdir, tag="-storm",
                    extra={"max_requests": args.max_requests,
                           "max_requests_jitter": args.jitter})
            balance.wait_settled(steady, args.workers)
            if storm is not None:
                balance.wait_settled(storm, args.workers)
            if "a" in args.parts:
                reloads.append(measure_reloads(steady, worker_type, args, wrk_bin,
                                               delay_script))
            if storm is not None:
                for run in range(args.runs):
                    order = [("steady", steady), ("storm", storm)]
                    if run % 2:
                        order.reverse()
                    for role, arb in order:
                        storms.append(measure_storm_once(arb, worker_type, run, role, args,
                                                         wrk_bin))
                balance.stop_arbiter(storm)
            balance.stop_arbiter(steady)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except RuntimeError as exc:
        log(f"failed: {exc}")
        return 2
    finally:
        balance.stop_everything()
    rows = storm_rows(storms)
    if args.json:
        data = {"command": "python scripts/reload_cost.py " + " ".join(sys.argv[1:]),
                "cpus": os.cpu_count(), "workers": args.workers, "runs": args.runs,
                "max_requests": args.max_requests, "jitter": args.jitter,
                "reloads": [asdict(r) | {"idle_median": median(r.idle),
                                         "loaded_median": median(r.loaded)}
                            for r in reloads],
                "storm": rows, "storm_samples": [asdict(s) for s in storms]}
        print(json.dumps(bench.jsonable(data), indent=2, allow_nan=False))
    else:
        if reloads:
            print(reload_table(reloads, args))
            print()
        if rows:
            print(storm_table(rows, args))
            print()
        print(f"- {os.cpu_count()} CPU(s) on this machine, shared by wrk and the servers.")
    dropped = any(r.load_socket_errors or r.load_non2xx for r in reloads) or any(
        r["storm_socket_errors"] or r["storm_non2xx"] for r in rows)
    return 1 if dropped else 0


if __name__ == "__main__":
    raise SystemExit(main())
