"""Test harness: start the real ``arbiter`` command and talk to it as a user would.

Every server a test starts runs in its own session (process group) and is
stopped by its pid when the test ends, pass or fail; helpers poll for
conditions instead of sleeping a fixed time.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ARBITER = [sys.executable, "-m", "arbiter"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> object:
    """Poll until condition() is truthy; return its value or fail with message."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http_request(port: int, path: str = "/", method: str = "GET", body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10.0,
                 host: str = "127.0.0.1") -> Response:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def preconnected_gets(port: int, path: str, count: int) -> list:
    """``count`` connections, all connected and their requests sent before any answer
    (a busy box cannot start the clients late), read concurrently."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
    try:
        for sock in socks:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())

        def read(sock: socket.socket) -> Response:
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                            resp.read())
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(read, socks))
    finally:
        for sock in socks:
            sock.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or timeout); return what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def status_of(raw: bytes) -> int:
    line = raw.split(b"\r\n", 1)[0]
    parts = line.split()
    assert len(parts) >= 2 and parts[0].startswith(b"HTTP/"), f"not an HTTP response: {raw[:200]!r}"
    return int(parts[1])


def asgi_twin(wsgi_source: str, worker_type: str = "asgi") -> str:
    """A test's WSGI app source, for ``worker_type``: unchanged for the WSGI types; for
    asgi, with ``asgi_bridge.py`` appended (each WSGI callable in it served as an ASGI
    app), so the shared behaviour tests run on the asgi worker too."""
    if worker_type != "asgi":
        return wsgi_source
    bridge = (Path(__file__).parent / "asgi_bridge.py").read_text()
    return textwrap.dedent(wsgi_source) + "\n\n" + bridge


class Server:
    """One ``arbiter`` master started by a test, in a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        self.config_path = workdir / "server.yaml"

    # -- set-up ------------------------------------------------------------------
    def write_app(self, source: str, name: str = "app.py") -> Path:
        path = self.workdir / name
        path.write_text(textwrap.dedent(source))
        return path

    def write_config(self, text: str) -> Path:
        self.config_path.write_text(textwrap.dedent(text))
        return self.config_path

    def start(self, *args: str, env: dict[str, str] | None = None, wait: bool = True,
              timeout: float = 15.0) -> Server:
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("ARBITER_") and k not in ("WEB_CONCURRENCY", "PORT")}
        full_env.update(env or {})
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([*ARBITER, *args], cwd=self.workdir, env=full_env,
                                     stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        if wait:
            self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout: float = 15.0, detached: bool = False) -> None:
        """Poll until the port answers; unless ``detached``, fail if the command exited."""
        def serving() -> bool:
            if not detached and self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"arbiter exited with {self.proc.returncode}:\n{self.stderr}")
            try:
                http_request(self.port, "/", timeout=2)
                return True
            except OSError:
                return False
        wait_for(serving, timeout, message=f"arbiter to serve on port {self.port}")

    # -- observation ---------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        return [p for p in children_of(self.pid) if pid_alive(p)]

    def wait_workers(self, count: int, timeout: float = 15.0) -> list[int]:
        """Wait until exactly ``count`` workers run and all of them have booted."""
        def settled() -> list[int] | None:
            pids = self.workers()
            return pids if len(pids) == count else None
        return wait_for(settled, timeout, message=f"{count} workers (have {self.workers()})")

    def wait_log(self, text: str, timeout: float = 15.0) -> str:
        wait_for(lambda: text in self.stderr, timeout, message=f"{text!r} in the error log")
        return self.stderr

    def get(self, path: str = "/", **kw: object) -> Response:
        return http_request(self.port, path, **kw)  # type: ignore[arg-type]

    # -- control ---------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Stop the master and everything in its process group, by pid."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._out.close()
        self._err.close()


# -- nginx in front ------------------------------------------------------------------
def nginx_binary() -> str:
    """The nginx program, or the test is skipped saying why."""
    import pytest

    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                      else None)
    if found is None:
        pytest.skip("nginx not installed: no nginx on PATH or at /usr/sbin/nginx "
                    "(Debian: apt-get install nginx-light)")
    return found


@contextmanager
def running_nginx(base: Path, conf: str, port: int,
                  ready: Callable[[], bool] | None = None) -> Iterator[subprocess.Popen]:
    """nginx in the foreground with ``conf`` (written to ``base``/nginx.conf), once it
    listens on 127.0.0.1:``port`` (and ``ready()``, when given); stopped by its pid, its
    workers with it, whatever happens."""
    binary = nginx_binary()
    (base / "nginx.conf").write_text(conf)
    with open(base / "stderr.log", "ab") as err:
        proc = subprocess.Popen([binary, "-p", str(base), "-c", str(base / "nginx.conf"),
                                 "-e", str(base / "error.log")], stdin=subprocess.DEVNULL,
                                stdout=err, stderr=err, start_new_session=True)
    try:
        def answering() -> bool:
            if proc.poll() is not None:
                logs = "".join(path.read_text() for path in (base / "stderr.log",
                                                             base / "error.log")
                               if path.exists())
                raise AssertionError(f"nginx exited with {proc.returncode}: {logs}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return ready() if ready is not None else True
        wait_for(answering, 10, message=f"nginx on 127.0.0.1:{port}")
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its workers, if the master was cut short
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
