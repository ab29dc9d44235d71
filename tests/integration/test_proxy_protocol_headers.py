"""PROXY protocol v1 and v2 on every worker type, with real HAProxy-format headers.

A peer in ``proxy_allow_ips`` must start with the header; the app then sees
the client it names. A malformed or missing header closes the connection; a
peer outside the list speaks plain HTTP (and a PROXY line from it is a bad
request). The header comes before TLS, as an AWS NLB with TLS passthrough
sends it.
"""

from __future__ import annotations

import socket
import ssl
import struct
import textwrap

import pytest
from harness import asgi_twin, http_request, status_of

pytestmark = pytest.mark.timeout(60)

APP = """
def app(environ, start_response):
    body = f"{environ['REMOTE_ADDR']} {environ['REMOTE_PORT']} {environ['wsgi.url_scheme']}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
"""

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def v1(src: str, sport: int, dport: int = 8000) -> bytes:
    family, dst = ("TCP6", "::1") if ":" in src else ("TCP4", "127.0.0.1")
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2_inet(src: str, sport: int, dst: str = "127.0.0.1", dport: int = 8000,
            tlv: bytes = b"") -> bytes:
    addresses = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    payload = addresses + tlv
    return SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(payload)) + payload


def v2_local() -> bytes:
    return SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


def start(server, worker_type: str, extra: str = "") -> None:
    server.write_app(asgi_twin(APP, worker_type))
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        worker_type: {worker_type}
    """) + extra)
    server.start("-c", "server.yaml", wait=False)
    server.wait_workers(1)


def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return reply


def test_v1_and_v2_headers_name_the_client(server, worker_type):
    start(server, worker_type, "proxy_protocol: auto\n")
    assert exchange(server.port, v1("203.0.113.9", 56324) + REQUEST).endswith(
        b"\r\n\r\n203.0.113.9 56324 http")
    assert exchange(server.port, v1("2001:db8::7", 443) + REQUEST).endswith(
        b"\r\n\r\n2001:db8::7 443 http")
    tlv = bytes([0x04]) + struct.pack("!H", 3) + b"abc"  # a TLV (skipped)
    assert exchange(server.port, v2_inet("198.51.100.4", 40000, tlv=tlv) + REQUEST).endswith(
        b"\r\n\r\n198.51.100.4 40000 http")
    # LOCAL (the proxy's own health check): the real peer stays
    assert exchange(server.port, v2_local() + REQUEST).split(b"\r\n\r\n", 1)[1].startswith(
        b"127.0.0.1 ")
    # split across writes, byte by byte
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for byte in v1("192.0.2.1", 1234) + REQUEST:
            sock.sendall(bytes([byte]))
        assert sock.recv(65536).endswith(b"192.0.2.1 1234 http")


def test_a_missing_or_malformed_header_closes_the_connection(server, worker_type):
    start(server, worker_type, "proxy_protocol: v2\n")
    assert exchange(server.port, REQUEST) == b""  # no header at all
    assert exchange(server.port, v1("203.0.113.9", 1) + REQUEST) == b""  # v1 where v2 is due
    bad = SIGNATURE + bytes([0x31, 0x11]) + struct.pack("!H", 12) + b"\0" * 12  # version 3
    assert exchange(server.port, bad + REQUEST) == b""
    assert exchange(server.port, v2_inet("198.51.100.4", 4) + REQUEST).endswith(
        b"198.51.100.4 4 http")  # and the next good one is served


def test_peers_outside_proxy_allow_ips_speak_plain_http(server):
    start(server, "pooled", 'proxy_protocol: v1\nproxy_allow_ips: ["10.0.0.0/8"]\n')
    assert http_request(server.port, "/").text.startswith("127.0.0.1 ")
    assert status_of(exchange(server.port, v1("203.0.113.9", 1) + REQUEST)) == 400


@pytest.mark.parametrize("worker_type", ["preforked", "evented"])
def test_the_header_comes_before_tls(server, worker_type, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    start(server, worker_type, f"proxy_protocol: v2\nssl:\n  certfile: {tmp_path}/server.pem\n")
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(v2_inet("203.0.113.77", 5555))  # in the clear, then the ClientHello
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(REQUEST)
            reply = b""
            try:
                while chunk := tls.recv(65536):
                    reply += chunk
            except (ssl.SSLError, OSError):
                pass
    assert reply.endswith(b"\r\n\r\n203.0.113.77 5555 https"), reply[-200:]
