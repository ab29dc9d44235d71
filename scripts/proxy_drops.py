"""Requests dropped behind nginx with upstream keep-alive while workers are replaced.

nginx never retries a POST: when a kept-alive upstream connection that nginx
reuses is closed by a draining worker while nginx sends on it, the client
gets a 502. This puts nginx (its own config and prefix in a temp dir,
``upstream { keepalive 16; }``, ``proxy_http_version 1.1``) in front of each
server on 127.0.0.1, runs ``wrk`` POSTing through it, and meanwhile either
sends HUPs to the master (``--mode hup``) or lets ``max_requests`` recycle
the workers (``--mode recycle``); it counts what wrk saw as errors and
non-2xx answers, and the 502s in nginx's access log.

    python scripts/proxy_drops.py                       # every arbiter type (asgi too), HUP and recycle
    python scripts/proxy_drops.py --types pooled --mode hup --gunicorn
    python scripts/proxy_drops.py --app flask --mode hup --seconds 60 --hup-every 2

Needs ``nginx`` and ``wrk`` on PATH (Debian: nginx-light, wrk); gunicorn from
the same interpreter for ``--gunicorn``. Every process is stopped by pid.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

FLASK_APP = """
from flask import Flask, request
app = Flask(__name__)

@app.post("/")
def index():
    return f"ok {len(request.get_data())}\\n"
"""

APP = """
def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok %d\\n" % len(body)]


async def asgi_app(scope, receive, send):  # the same, for the asgi type
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok %d\\n" % size})
"""

POST_LUA = """
wrk.method = "POST"
wrk.body = string.rep("x", 512)
wrk.headers["Content-Type"] = "text/plain"
"""

NGINX = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log combined;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def run_one(name: str, command: list[str], mode: str, seconds: float, work: str,
            hup_every: float = 0.0) -> dict:
    upstream, port = free_port(), free_port()
    command = [arg.replace("{upstream}", str(upstream)) for arg in command]
    server = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(work, f"{name}.log"), "w"),
                              start_new_session=True)
    nginx_dir = tempfile.mkdtemp(dir=work)
    with open(os.path.join(nginx_dir, "nginx.conf"), "w") as f:
        f.write(NGINX.format(dir=nginx_dir, upstream=upstream, port=port))
    nginx = subprocess.Popen(["nginx", "-p", nginx_dir, "-c", "nginx.conf"],
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(upstream)
        wait_port(port)
        time.sleep(1.0)  # let the workers boot
        wrk = subprocess.Popen(["wrk", "-t1", "-c16", f"-d{seconds:g}s", "-s",
                                os.path.join(work, "post.lua"), f"http://127.0.0.1:{port}/"],
                               stdout=subprocess.PIPE, text=True)
        if mode == "hup":
            every = hup_every or seconds / 4
            for _ in range(max(1, int(seconds / every) - 1) if hup_every else 3):
                time.sleep(every)
                os.kill(server.pid, signal.SIGHUP)
        out, _ = wrk.communicate(timeout=seconds + 60)
    finally:
        stop(nginx)
        stop(server)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    with open(os.path.join(nginx_dir, "access.log")) as f:
        bad_gateway = sum(1 for line in f if '" 502 ' in line)
    return {"name": name, "mode": mode, "requests": requests, "non2xx": non2xx,
            "errors": errors, "502": bad_gateway}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", default="preforked,forked,threaded,pooled,evented,asgi")
    parser.add_argument("--mode", default="hup,recycle")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--gunicorn", action="store_true", help="gunicorn gthread beside")
    parser.add_argument("--app", choices=("plain", "flask"), default="plain")
    parser.add_argument("--hup-every", type=float, default=0.0,
                        help="seconds between HUPs (default: 3 HUPs in the run)")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    rows = []
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "app.py"), "w") as f:
            f.write(textwrap.dedent(FLASK_APP if args.app == "flask" else APP))
        with open(os.path.join(work, "post.lua"), "w") as f:
            f.write(POST_LUA)
        for mode in args.mode.split(","):
            extra = ["--max-requests", "300"] if mode == "recycle" else []
            servers = {f"arbiter {t}": [sys.executable, "-m", "arbiter", "-b",
                                        "127.0.0.1:{upstream}", "-w", "2", "-k", t,
                                        "--graceful-timeout", "10", *extra,
                                        "app:asgi_app" if t == "asgi" else "app:app"]
                       for t in args.types.split(",")}
            if args.gunicorn:
                servers["gunicorn gthread"] = [sys.executable, "-m", "gunicorn", "-b",
                                               "127.0.0.1:{upstream}", "-w", "2", "-k",
                                               "gthread", "--threads", "4", *extra, "app:app"]
            for name, command in servers.items():
                row = run_one(name, command, mode, args.seconds, work, args.hup_every)
                rows.append(row)
                print(f"{row['name']:<20} {row['mode']:<8} requests {row['requests']:>7}  "
                      f"502 {row['502']:>5}  non-2xx {row['non2xx']:>5}  "
                      f"socket errors {row['errors']:>4}", flush=True)
    return 0 if all(r["502"] == 0 and r["non2xx"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
