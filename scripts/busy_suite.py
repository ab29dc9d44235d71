"""Run the whole test suite on a box kept busy: the suite must pass wherever CI runs.

Starts one CPU burner per core (plain Python loops, normal priority), runs
``pytest`` (with any extra arguments) the given number of times in a row,
prints each run's outcome, duration and failures, then stops the burners by
pid. Exit status 0 only if every run passed.

    python scripts/busy_suite.py                 # 3 runs, one burner per core
    python scripts/busy_suite.py --runs 1 --burners 4 -- -x tests/integration
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time


def burn() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    x = 0
    while True:
        x = (x * 31 + 7) % 1000003


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burners)]
    for process in burners:
        process.start()
    outcomes = []
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p",
                                     "no:cacheprovider", *args.pytest_args],
                                    capture_output=True, text=True)
            elapsed = time.monotonic() - started
            summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
            failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.MULTILINE)
            outcomes.append(result.returncode == 0)
            print(f"run {run}: {'passed' if result.returncode == 0 else 'FAILED'} in "
                  f"{elapsed:.0f} s, load {os.getloadavg()[0]:.1f}: {summary}", flush=True)
            for name in failed:
                print(f"    {name}", flush=True)
            if result.returncode != 0:
                fd, log = tempfile.mkstemp(prefix=f"busy_suite_run{run}_", suffix=".log")
                with os.fdopen(fd, "w") as f:
                    f.write(result.stdout + result.stderr)
                print(f"    full output: {log}", flush=True)
    finally:
        for process in burners:
            process.terminate()
        for process in burners:
            process.join(5)
    return 0 if all(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
