#!/usr/bin/env python3
"""A screenshot of the admin status page (``GET /``) under load, in headless Chromium.

This script owns the picture in the README (``docs/status-page.png``) and
the check that the page renders in a real browser: it starts arbiter
(``-w 6`` pooled workers by default, 2 threads each, on 127.0.0.1 ports it
picks, a config and app written to a temporary directory, ``admin_bind``
set), keeps them busy with client threads sending requests that take 0.2 to
2.5 s (some with a hostile path, ``/<script>…``, which the page must show
escaped), waits ``--warmup`` seconds so the utilization windows fill, and
runs::

    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
        --disable-background-networking --disable-component-update --disable-sync
        --user-data-dir=<new empty dir> --window-size=1400,900 --screenshot=FILE URL

(without the background-networking flags Chromium hangs on a closed network).
Then it checks the page the server gave over plain HTTP: a row per worker,
the hostile path escaped. Every process it started is stopped by its pid,
also on errors. Exit status 0 when the PNG was written, 1 when a check
failed, 2 when chromium is missing or the server would not start.

Usage::

    python scripts/status_page_screenshot.py [--out docs/status-page.png]
        [--workers 6] [--worker-type pooled] [--clients 8] [--warmup 15]
        [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

APP = """
import time
def app(environ, start_response):
    path = environ["PATH_INFO"]
    seconds = float(environ.get("QUERY_STRING", "").partition("=")[2] or 0)
    time.sleep(seconds)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [path.encode("latin-1")]
"""

# (path, seconds) the clients cycle through: a storefront's worth of slow endpoints.
REQUESTS = [("/api/orders", 0.6), ("/reports/monthly.csv", 2.5), ("/api/search", 0.3),
            ("/<script>alert('xss')</script>", 1.8), ("/checkout/confirm", 0.4),
            ("/api/users/42/avatar", 0.2), ("/static/app.js", 0.1), ("/api/cart", 0.5)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def stop(proc: subprocess.Popen) -> None:
    """TERM the process by its pid, KILL it after 10 s."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def load(port: int, offset: int, stopping: threading.Event) -> None:
    """One client: the REQUESTS in turn (from ``offset``) until told to stop."""
    i = offset
    while not stopping.is_set():
        path, seconds = REQUESTS[i % len(REQUESTS)]
        try:
            get(port, f"{path}?sleep={seconds}")
        except OSError:
            time.sleep(0.1)
        i += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "status-page.png"))
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--worker-type", default="pooled")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    if not os.access(args.chromium, os.X_OK):
        print(f"no chromium at {args.chromium} (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="arbiter-status-page-") as tmp:
        work = Path(tmp)
        port, admin_port = free_port(), free_port()
        (work / "shop.py").write_text(APP)
        (work / "arbiter.yaml").write_text(
            f"app: shop:app\nbind: ['127.0.0.1:{port}']\nworkers: {args.workers}\n"
            f"worker_type: {args.worker_type}\nthreads: 2\nadmin_bind: 127.0.0.1:{admin_port}\n"
            f"log:\n  error_log: {work / 'error.log'}\n")
        server = subprocess.Popen([sys.executable, "-m", "arbiter", "-c", "arbiter.yaml"],
                                  cwd=work, stdin=subprocess.DEVNULL)
        stopping = threading.Event()
        clients = [threading.Thread(target=load, args=(port, i, stopping), daemon=True)
                   for i in range(args.clients)]
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if get(admin_port, "/readyz", 1)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    print("arbiter did not become ready", file=sys.stderr)
                    return 2
                time.sleep(0.1)
            for client in clients:
                client.start()
            time.sleep(args.warmup)
            deadline = time.monotonic() + 10  # until a worker runs the hostile request
            while True:
                status, page = get(admin_port, "/")
                if "&lt;script&gt;" in page or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            checks = {
                "answers 200": status == 200,
                "a row per worker": page.count('<tr class="worker">') == args.workers,
                "the hostile path escaped": "<script>" not in page
                                            and "&lt;script&gt;" in page,
            }
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            profile = work / "chromium-profile"
            profile.mkdir()
            shot = subprocess.run(
                [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--hide-scrollbars", "--window-size=1400,900", f"--screenshot={out}",
                 f"http://127.0.0.1:{admin_port}/"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            checks["chromium wrote the PNG"] = shot.returncode == 0 and out.exists()
            for name, ok in checks.items():
                print(f"{'ok  ' if ok else 'FAIL'} {name}")
            if not checks["chromium wrote the PNG"]:
                print(shot.stderr[-2000:], file=sys.stderr)
            else:
                print(f"wrote {out}")
            return 0 if all(checks.values()) else 1
        finally:
            stopping.set()
            stop(server)
            for client in clients:
                if client.is_alive():
                    client.join(5)


if __name__ == "__main__":
    sys.exit(main())
