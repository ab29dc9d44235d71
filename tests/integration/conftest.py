"""Fixtures for the integration suite: real ``arbiter`` processes on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Server  # noqa: E402


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """make_server() -> Server in its own directory; every one is stopped by pid at the end."""
    servers: list[Server] = []

    def make(name: str = "srv") -> Server:
        workdir = tmp_path / f"{name}{len(servers)}"
        workdir.mkdir()
        server = Server(workdir)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


ALL_WORKER_TYPES = ("preforked", "forked", "threaded", "pooled", "evented")  # the WSGI ones
SHARED_BEHAVIOUR_TYPES = (*ALL_WORKER_TYPES, "asgi")


@pytest.fixture(params=SHARED_BEHAVIOUR_TYPES)
def worker_type(request) -> str:
    """Parametrises a test over every worker type, asgi included: the test writes its
    WSGI app through ``harness.asgi_twin(source, worker_type)``."""
    return request.param


@pytest.fixture(scope="module")
def make_module_server(tmp_path_factory) -> Iterator:
    """Like make_server, but the servers live for the whole test module."""
    servers: list[Server] = []

    def make(name: str = "srv") -> Server:
        server = Server(tmp_path_factory.mktemp(name))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
