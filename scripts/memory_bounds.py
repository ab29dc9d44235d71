"""Worker memory while clients misbehave: RSS from /proc, before, at the peak, after.

The three cases of issue 9's table, on one worker of each type named:

* ``uploads``: N clients each declare a 30 MB body, send 29 MB, then stall;
* ``stream``: an app yields 500 x 1 MiB to a client that reads nothing;
* ``file``: a 50 MB ``wsgi.file_wrapper`` response, read at full speed.

    python scripts/memory_bounds.py                      # evented, all three cases
    python scripts/memory_bounds.py --types evented,pooled --clients 100

Talks only to 127.0.0.1; the server is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

MIB = 1024 * 1024
APP = """
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * (1024 * 1024) for _ in range(500))
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open("big.bin", "rb"))
    if path == "/upload":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(len(data)).encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def rss(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
        return data


def case_uploads(port: int, worker: int, clients: int) -> float:
    socks, peak = [], rss(worker)
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % (30 * MIB))
        socks.append(sock)
    chunk = b"u" * MIB
    for _ in range(29):
        for sock in socks:
            sock.sendall(chunk)
        peak = max(peak, rss(worker))
    time.sleep(0.5)
    peak = max(peak, rss(worker))
    for sock in socks:
        sock.close()
    return peak


def case_stream(port: int, worker: int) -> float:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    peak = rss(worker)
    for _ in range(30):
        time.sleep(0.1)
        peak = max(peak, rss(worker))
    sock.close()
    return peak


def case_file(port: int, worker: int) -> float:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    peak, got = rss(worker), 0
    while chunk := sock.recv(1 << 20):
        got += len(chunk)
        if got % (4 * MIB) < (1 << 20):
            peak = max(peak, rss(worker))
    sock.close()
    assert got > 50 * MIB, got
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", default="evented")
    parser.add_argument("--cases", default="uploads,stream,file")
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "app.py"), "w") as f:
            f.write(textwrap.dedent(APP))
        with open(os.path.join(work, "big.bin"), "wb") as f:
            f.write(b"z" * (50 * MIB))
        for worker_type in args.types.split(","):
            for case in args.cases.split(","):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                proc = subprocess.Popen([sys.executable, "-m", "arbiter", "-b",
                                         f"127.0.0.1:{port}", "-w", "1", "-k", worker_type,
                                         "--timeout", "120", "app:app"], cwd=work,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
                try:
                    deadline = time.monotonic() + 20
                    while True:
                        try:
                            get(port, "/")
                            break
                        except OSError:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.05)
                    (worker,) = children(proc.pid)
                    before = rss(worker)
                    if case == "uploads":
                        peak = case_uploads(port, worker, args.clients)
                    elif case == "stream":
                        peak = case_stream(port, worker)
                    else:
                        peak = case_file(port, worker)
                    time.sleep(3)
                    get(port, "/")
                    after = rss(worker)
                finally:
                    proc.send_signal(signal.SIGINT)
                    proc.wait(20)
                print(f"{worker_type:<10} {case:<8} RSS before {before:6.1f} MiB  peak "
                      f"{peak:7.1f} MiB (+{peak - before:6.1f})  after {after:6.1f} MiB",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
