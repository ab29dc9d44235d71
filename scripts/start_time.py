"""Launch to first 200: how long from typing the command to the first answered request.

Starts each server N times (interleaved, so a busy moment hurts both alike) on
127.0.0.1 with a small Flask app (a plain WSGI app when Flask is not
installed), 2 workers, polls ``GET /`` every 2 ms from the moment of launch,
and stops the server by pid after the first 200. Prints the median per server
and the ratio to gunicorn's.

    python scripts/start_time.py            # arbiter and gunicorn, 5 runs each
    python scripts/start_time.py --runs 9 --types preforked,pooled

gunicorn must be importable from the same interpreter (``pip install gunicorn
flask``); without it only arbiter is measured.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

FLASK_APP = """
from flask import Flask
app = Flask(__name__)

@app.get("/")
def index():
    return "hello"
"""

PLAIN_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_200(command: list[str], port: int, cwd: str, limit: float = 20.0) -> float:
    """Seconds from launch to the first 200 on ``port``; the server is stopped after."""
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.monotonic() - started < limit:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"{command[2:]} exited with {proc.returncode}")
            time.sleep(0.002)
        raise RuntimeError(f"{command[2:]}: no 200 within {limit} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--types", default="preforked",
                        help="arbiter worker types, comma-separated")
    args = parser.parse_args()
    has_flask = importlib.util.find_spec("flask") is not None
    has_gunicorn = importlib.util.find_spec("gunicorn") is not None
    with tempfile.TemporaryDirectory() as cwd:
        with open(os.path.join(cwd, "app.py"), "w") as f:
            f.write(textwrap.dedent(FLASK_APP if has_flask else PLAIN_APP))
        servers: dict[str, list[str]] = {}
        for worker_type in args.types.split(","):
            servers[f"arbiter {worker_type}"] = [sys.executable, "-m", "arbiter", "-w", "2",
                                                 "-k", worker_type, "app:app"]
        if has_gunicorn:
            servers["gunicorn sync"] = [sys.executable, "-m", "gunicorn", "-w", "2", "app:app"]
        times: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.runs):
            for name, command in servers.items():
                port = free_port()
                bind = ["-b", f"127.0.0.1:{port}"]
                times[name].append(first_200(command[:3] + bind + command[3:], port, cwd))
    print(f"app: {'Flask' if has_flask else 'plain WSGI'}, 2 workers, {args.runs} runs, "
          f"load average {os.getloadavg()[0]:.2f}")
    base = statistics.median(times["gunicorn sync"]) if has_gunicorn else None
    for name, values in times.items():
        median = statistics.median(values)
        ratio = f"  {median / base:.2f}x gunicorn" if base else ""
        print(f"{name:<20} median {median * 1000:7.1f} ms  "
              f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}){ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
