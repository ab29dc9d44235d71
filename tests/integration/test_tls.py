"""TLS on every listener, for every worker type, with certificates the test makes (trustme)."""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
from conftest import ALL_WORKER_TYPES
from harness import Server, wait_for

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(60)

APP = """
def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    elif path == "/big":
        body = b"x" * (3 * 1024 * 1024)
    else:
        body = f"{environ['wsgi.url_scheme']} {environ['REMOTE_PORT']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


class Certs:
    """A CA, a server certificate for localhost and 127.0.0.1, and a client certificate."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        client = ca.issue_cert("client@example.com")
        self.ca = directory / "ca.pem"
        self.cert = directory / "server-cert.pem"
        self.key = directory / "server-key.pem"
        self.client_both = directory / "client.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        with open(self.cert, "wb") as out:
            for pem in server.cert_chain_pems:
                out.write(pem.bytes())
        server.private_key_pem.write_to_path(str(self.key))
        client.private_key_and_cert_chain_pem.write_to_path(str(self.client_both))

    def client_context(self, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            context.load_cert_chain(str(self.client_both))
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def https_connection(port: int, context: ssl.SSLContext,
                     timeout: float = 10.0) -> http.client.HTTPSConnection:
    """An HTTPS connection to 127.0.0.1 that checks the certificate for "localhost"."""
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=timeout)
    conn._create_connection = (  # type: ignore[attr-defined]
        lambda address, *a, **kw: socket.create_connection(("127.0.0.1", port), *a, **kw))
    return conn


def https_get(port: int, context: ssl.SSLContext, path: str = "/",
              timeout: float = 10.0) -> tuple[int, bytes]:
    conn = https_connection(port, context, timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_tls_server(server: Server, certs: Certs, worker_type: str, extra: str = "") -> Server:
    server.write_app(APP)
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        worker_type: {worker_type}
        header_timeout: 1
        ssl:
          certfile: {certs.cert}
          keyfile: {certs.key}
          {extra}
    """)
    server.start("-c", "server.yaml", wait=False)
    context = certs.client_context(with_cert=True)

    def serving() -> bool:
        if server.proc is not None and server.proc.poll() is not None:
            raise AssertionError(f"arbiter exited with {server.proc.returncode}:\n"
                                 f"{server.stderr}")
        try:
            return https_get(server.port, context, timeout=2)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    wait_for(serving, 15, message=f"arbiter to serve HTTPS on port {server.port}")
    return server


@pytest.fixture(scope="module", params=ALL_WORKER_TYPES)
def tls_server(request, make_module_server, certs) -> Server:
    return start_tls_server(make_module_server(f"tls-{request.param}"), certs, request.param)


@pytest.fixture(scope="module", params=ALL_WORKER_TYPES)
def mtls_server(request, make_module_server, certs) -> Server:
    return start_tls_server(make_module_server(f"mtls-{request.param}"), certs, request.param,
                            extra=f"ca_certs: {certs.ca}")


def test_https_request_and_url_scheme(tls_server, certs):
    status, body = https_get(tls_server.port, certs.client_context())
    assert status == 200
    assert body.split()[0] == b"https"


def test_keep_alive_over_tls_and_large_bodies(tls_server, certs):
    context = certs.client_context()
    conn = https_connection(tls_server.port, context)
    try:
        ports = []
        for _ in range(2):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            scheme, port = response.read().split()
            assert scheme == b"https"
            ports.append(port)
        assert ports[0] == ports[1]  # one connection, two requests
        payload = bytes(range(256)) * 1024  # 256 KiB up...
        conn.request("POST", "/echo", body=payload)
        response = conn.getresponse()
        assert response.status == 200 and response.read() == payload
        conn.request("GET", "/big")  # ... and 3 MiB down, on the same connection
        response = conn.getresponse()
        assert response.status == 200 and len(response.read()) == 3 * 1024 * 1024
    finally:
        conn.close()


def test_silent_client_does_not_block_others(tls_server, certs):
    """A client that connects and never starts the handshake is cut at header_timeout
    (1 s) at the latest; with one worker, the next TLS client is still served."""
    silent = socket.create_connection(("127.0.0.1", tls_server.port))
    half = socket.create_connection(("127.0.0.1", tls_server.port))
    try:
        half.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
        time.sleep(0.2)
        started = time.monotonic()
        status, body = https_get(tls_server.port, certs.client_context())
        assert status == 200 and body.startswith(b"https")
        assert time.monotonic() - started < 5  # preforked: two stalled clients, 1 s each
        silent.settimeout(6)
        assert silent.recv(1) == b""  # the server gave up on it
    finally:
        silent.close()
        half.close()


def test_plain_http_to_tls_port_fails_cleanly(tls_server, certs):
    pids = tls_server.workers()
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=6) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert not answer.startswith(b"HTTP/")  # a TLS alert or nothing, never plain HTTP
    status, _ = https_get(tls_server.port, certs.client_context())
    assert status == 200
    assert tls_server.workers() == pids  # nothing crashed
    assert "Traceback" not in tls_server.stderr


def test_client_certificate_required(mtls_server, certs):
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        https_get(mtls_server.port, certs.client_context(with_cert=False), timeout=5)
    status, body = https_get(mtls_server.port, certs.client_context(with_cert=True))
    assert status == 200 and body.startswith(b"https")
    assert "Traceback" not in mtls_server.stderr


def test_bad_certfile_exits_1(server, certs):
    server.write_app(APP)
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        ssl:
          certfile: {server.workdir}/missing.pem
    """)
    server.start("-c", "server.yaml", wait=False)
    assert server.wait_exit(15) == 1
    assert "ssl.certfile" in server.stderr
    assert f"{server.workdir}/missing.pem" in server.stderr


def test_reload_with_bad_certfile_keeps_serving(server, certs):
    start_tls_server(server, certs, "preforked")
    config = server.config_path.read_text()
    server.config_path.write_text(config.replace(str(certs.key), str(certs.ca)))
    server.signal(signal.SIGHUP)
    log = server.wait_log("reload aborted")
    assert "ssl.keyfile" in log.split("reload aborted", 1)[1]
    assert https_get(server.port, certs.client_context())[0] == 200
