"""Proxy headers and wsgi.errors as the app and the operator see them, through the real
``arbiter`` (every worker type for the spoof) and, when it is installed, a real nginx."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ALL_WORKER_TYPES
from harness import children_of, free_port, http_request, pid_alive, running_nginx, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=ALL_WORKER_TYPES)
def worker_type(request) -> str:
    """The WSGI types: what a WSGI app's environ says (the asgi scope: test_worker_asgi)."""
    return request.param

APP = """
import json

KEYS = ("REMOTE_ADDR", "wsgi.url_scheme", "SCRIPT_NAME", "PATH_INFO", "HTTP_FORWARDED",
        "HTTP_X_FORWARDED_FOR")

def app(environ, start_response):
    if environ["QUERY_STRING"] == "errors":
        environ["wsgi.errors"].write("WARNING in app: hello\\n")
    body = json.dumps({k: environ.get(k) for k in KEYS}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

SPOOF = {"Forwarded": "for=6.6.6.6;proto=https", "X-Forwarded-For": "203.0.113.7",
         "X-Forwarded-Proto": "http"}


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def unix_get(path: str, target: str = "/", headers: dict[str, str] | None = None) -> dict:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read())
        return json.loads(resp.read())
    finally:
        conn.close()


def seen(server, target: str = "/", **headers: str) -> dict:
    """What the app saw (over TCP from 127.0.0.1), as JSON."""
    resp = server.get(target, headers=headers)
    assert resp.status == 200, (resp.status, resp.text)
    return json.loads(resp.body)


def start(server, config: str, *, wait: bool = True) -> None:
    server.write_app(APP)
    server.write_config(f"app: app:app\nworkers: 1\n{textwrap.dedent(config)}")
    server.start("-c", "server.yaml", wait=wait)


def wait_unix_serving(server, path: str, timeout: float = 15.0) -> None:
    def serving() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"arbiter exited with {server.proc.returncode}:\n{server.stderr}")
        try:
            unix_get(path)
            return True
        except OSError:
            return False
    wait_for(serving, timeout, message=f"arbiter to serve on {path}")


# -- every worker type -------------------------------------------------------------------------
def test_trusted_proxy_headers(server, worker_type: str) -> None:
    """The measured spoof, garbage, the chain and SCRIPT_NAME, from a trusted proxy."""
    start(server, f"""
        worker_type: {worker_type}
        bind: ["127.0.0.1:{server.port}"]
        forwarded_allow_ips: ["127.0.0.1", "10.0.0.0/8"]
    """)
    env = seen(server, **SPOOF)  # a client's Forwarded, passed on by nginx, + nginx's own
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["wsgi.url_scheme"] == "http"
    assert env["HTTP_FORWARDED"] == "for=6.6.6.6;proto=https"  # there, but not believed
    env = seen(server, **{"X-Forwarded-For": "<script>x</script>", "X-Forwarded-Proto": "js"})
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    env = seen(server, **{"X-Forwarded-For": "198.51.100.1, 10.1.2.3"})
    assert env["REMOTE_ADDR"] == "198.51.100.1"  # 10.1.2.3 is a proxy of ours: skipped
    env = seen(server, **{"X-Forwarded-For": "6.6.6.6, [2001:db8::7]:443, 10.1.2.3",
                          "X-Forwarded-Proto": "https"})
    assert env["REMOTE_ADDR"] == "2001:db8::7" and env["wsgi.url_scheme"] == "https"
    env = seen(server, "/prefix/x/y", SCRIPT_NAME="/prefix/")
    assert env["SCRIPT_NAME"] == "/prefix" and env["PATH_INFO"] == "/x/y"


def test_forwarded_mode(server) -> None:
    start(server, f"""
        bind: ["127.0.0.1:{server.port}"]
        forwarded_allow_ips: ["127.0.0.1", "10.0.0.0/8"]
        forwarded_headers: forwarded
    """)
    env = seen(server, Forwarded='for=198.51.100.1;proto=https, for="10.1.2.3:8080";proto=http')
    assert env["REMOTE_ADDR"] == "198.51.100.1" and env["wsgi.url_scheme"] == "https"
    env = seen(server, Forwarded='for="[2001:db8::1]:4711";note="a, for=6.6.6.6"')
    assert env["REMOTE_ADDR"] == "2001:db8::1"  # a quoted comma is no hop
    env = seen(server, Forwarded="for=6.6.6.6, for=_hidden;proto=https")
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    env = seen(server, **{"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6"


def test_unix_socket_peer_is_trusted_tcp_peer_is_not(server) -> None:
    """One server, one header set: from the unix socket it is believed; from 127.0.0.1,
    not listed in forwarded_allow_ips, nothing is applied."""
    sock = str(server.workdir / "app.sock")
    start(server, f"""
        bind: ["127.0.0.1:{server.port}", "unix:{sock}"]
        forwarded_allow_ips: ["10.0.0.0/8"]
    """)
    headers = {**SPOOF, "SCRIPT_NAME": "/prefix"}
    env = unix_get(sock, "/prefix/x", headers)
    assert env["REMOTE_ADDR"] == "203.0.113.7" and env["wsgi.url_scheme"] == "http"
    assert env["SCRIPT_NAME"] == "/prefix" and env["PATH_INFO"] == "/x"
    env = seen(server, "/prefix/x", **headers)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/prefix/x"
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"


# -- wsgi.errors -------------------------------------------------------------------------------
def test_wsgi_errors_line_as_the_app_wrote_it(server, worker_type: str) -> None:
    check_wsgi_errors(server, worker_type, json_mode=False)


def test_wsgi_errors_json_line(server) -> None:
    check_wsgi_errors(server, "pooled", json_mode=True)


def check_wsgi_errors(server, worker_type: str, json_mode: bool) -> None:
    """log.level critical: the app's line is written all the same."""
    start(server, f"""
        worker_type: {worker_type}
        bind: ["127.0.0.1:{server.port}"]
        log: {{level: critical, json: {"true" if json_mode else "false"}}}
    """)
    assert server.get("/?errors").status == 200
    if not json_mode:
        server.wait_log("WARNING in app: hello")
        lines = server.stderr.splitlines()
        assert "WARNING in app: hello" in lines, lines  # exactly: nothing of ours on top
        assert not any("[ERROR]" in line for line in lines), lines
        return

    def app_line() -> dict | None:
        for line in server.stderr.splitlines():
            doc = json.loads(line)
            if doc.get("logger") == "wsgi.errors":
                return doc
        return None

    doc = wait_for(app_line, message="the wsgi.errors line in the JSON error log")
    assert doc["message"] == "WARNING in app: hello"
    assert "level" not in doc
    assert doc["worker"] == 1 and doc["pid"] in server.workers()
    assert {"timestamp", "pid", "worker", "logger", "message"} == set(doc)


# -- nginx ---------------------------------------------------------------------------------------
NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
master_process on;
pid {base}/nginx.pid;
error_log {base}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    upstream defaults {{ server unix:{base}/defaults.sock; keepalive 4; }}
    upstream only_proxies {{ server unix:{base}/only-proxies.sock; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        location /defaults/ {{ proxy_pass http://defaults; }}
        location /only-proxies/ {{ proxy_pass http://only_proxies; }}
        location /mounted/ {{  # a proxy_set_header here replaces the inherited ones
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header SCRIPT_NAME /mounted;
            proxy_pass http://only_proxies;
        }}
    }}
}}
"""


@pytest.fixture
def nginx_dir() -> Iterator[Path]:
    """A directory nginx's workers (nobody, when we are root) can traverse: the sockets and
    nginx's own files live here (pytest's tmp dirs are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="arbiter-nginx-"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def nginx(nginx_dir: Path) -> Iterator:
    """start(port) runs nginx in the foreground as a test process; stopped by pid at the end."""
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as running:
        def start(port: int) -> subprocess.Popen:
            user = "user nobody nogroup;" if os.geteuid() == 0 else ""
            conf = NGINX_CONF.format(user=user, base=nginx_dir, port=port)
            procs.append(running.enter_context(running_nginx(nginx_dir, conf, port)))
            return procs[-1]
        yield start
    for proc in procs:
        assert not pid_alive(proc.pid)


def test_behind_nginx_on_a_unix_socket(make_server, nginx, nginx_dir: Path) -> None:
    """nginx (workers as nobody when we are root) -> arbiter on a unix socket with the
    default mode, as the README's "Behind a proxy (nginx)" section sets it up."""
    defaults = make_server("defaults")  # forwarded_allow_ips left at 127.0.0.1, ::1
    start(defaults, f'bind: ["unix:{nginx_dir}/defaults.sock"]\n', wait=False)
    only = make_server("only")  # lists no address: the unix-socket peer (nginx) is trusted
    start(only, f'bind: ["unix:{nginx_dir}/only-proxies.sock"]\nforwarded_allow_ips: []\n',
          wait=False)
    wait_unix_serving(defaults, f"{nginx_dir}/defaults.sock")
    wait_unix_serving(only, f"{nginx_dir}/only-proxies.sock")
    assert (nginx_dir / "defaults.sock").stat().st_mode & 0o777 == 0o666
    port = free_port()
    master = nginx(port)
    if os.geteuid() == 0:  # the case the 0666 default is for: nginx's workers are another user
        def worker_is_nobody() -> bool:
            for pid in children_of(master.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                if "\nUid:\t65534\t" in status:  # after the worker's setuid()
                    return True
            return False
        wait_for(worker_is_nobody, message="nginx's worker running as nobody")

    def via_nginx(path: str, **headers: str) -> dict:
        resp = http_request(port, path, headers=headers)
        assert resp.status == 200, (resp.status, resp.text)
        return json.loads(resp.body)

    for prefix in ("/defaults/", "/only-proxies/"):
        env = via_nginx(prefix)
        assert env["REMOTE_ADDR"] == "127.0.0.1"  # nginx's client
        assert env["wsgi.url_scheme"] == "http" and env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
        env = via_nginx(prefix, Forwarded="for=6.6.6.6;proto=https")
        assert env["HTTP_FORWARDED"] == "for=6.6.6.6;proto=https"  # nginx passed it on...
        assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"  # ignored
        env = via_nginx(prefix, **{"X-Forwarded-For": "<script>x</script>"})
        assert env["REMOTE_ADDR"] == "127.0.0.1"

    # A client-sent X-Forwarded-For: nginx appends its client, "6.6.6.6, 127.0.0.1".
    # With the default list, 127.0.0.1 counts as a proxy, so a client connecting from
    # 127.0.0.1 can't be told from one and its claim is believed (documented).
    env = via_nginx("/defaults/", **{"X-Forwarded-For": "6.6.6.6"})
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.1"
    assert env["REMOTE_ADDR"] == "6.6.6.6"
    # Listing only the proxies (none: nginx is the unix-socket peer) gives the real client.
    env = via_nginx("/only-proxies/", **{"X-Forwarded-For": "6.6.6.6"})
    assert env["REMOTE_ADDR"] == "127.0.0.1"

    env = via_nginx("/mounted/x/y", **{"X-Forwarded-For": "6.6.6.6"})
    assert env["SCRIPT_NAME"] == "/mounted" and env["PATH_INFO"] == "/x/y"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    env = via_nginx("/only-proxies/z", SCRIPT_NAME="/only-proxies")  # nginx drops a client's
    assert env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/only-proxies/z"
