"""arbiter started the way systemd starts it: passed sockets and sd_notify messages."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from harness import http_request, wait_for

pytestmark = pytest.mark.timeout(60)

APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"activated"]
"""


class NotifyListener:
    """The datagram socket systemd would listen on (NOTIFY_SOCKET)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def collect(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def wait(self, text: str, timeout: float = 15) -> list[str]:
        wait_for(lambda: any(text in m for m in self.collect()), timeout,
                 message=f"{text!r} on NOTIFY_SOCKET (got {self.messages})")
        return self.messages


@pytest.mark.parametrize("worker_type", ["preforked", "evented"])
def test_socket_activation_and_notify_messages(tmp_path, worker_type):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "server.yaml").write_text(
        f"app: app:app\nworkers: 2\nworker_type: {worker_type}\nbind: ['127.0.0.1:1']\n")
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(64)
    port = tcp.getsockname()[1]
    unix_path = str(tmp_path / "activated.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    unix.listen(64)
    notify = NotifyListener(str(tmp_path / "notify.sock"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARBITER_", "LISTEN_"))}
    env.update(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), LISTEN_FDS="2",
               LISTEN_FDNAMES="http:local")
    tcp_fd, unix_fd = tcp.fileno(), unix.fileno()

    def as_systemd_does() -> None:  # in the child, before exec: fds 3 and 4
        os.dup2(tcp_fd, 3)
        os.dup2(unix_fd, 4)

    # LISTEN_PID must be the pid of the process that reads it: the shell's, kept by exec.
    command = ('LISTEN_PID=$$ exec "$0" -m arbiter -c server.yaml')
    err = open(tmp_path / "stderr.log", "wb")
    proc = subprocess.Popen(["/bin/sh", "-c", command, sys.executable], cwd=tmp_path, env=env,
                            pass_fds=(3, 4), preexec_fn=as_systemd_does, stderr=err,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    tcp.close()
    unix.close()
    try:
        notify.wait("READY=1")
        assert http_request(port, "/").text == "activated"
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(unix_path)
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
        os.kill(proc.pid, signal.SIGHUP)
        messages = notify.wait("RELOADING=1")
        reloading = next(m for m in messages if "RELOADING=1" in m)
        assert "MONOTONIC_USEC=" in reloading
        wait_for(lambda: sum("READY=1" in m for m in notify.collect()) >= 2,
                 message="READY=1 again after the reload")
        assert http_request(port, "/").text == "activated"  # still the activated socket
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        notify.wait("STOPPING=1")
        assert os.path.exists(unix_path)  # an activated unix socket is never unlinked
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        err.close()
        notify.sock.close()
