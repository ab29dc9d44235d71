"""Fixtures for the integration suite: real ``arbiter`` processes on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Server  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def bytecode_cache_for_the_commands(tmp_path_factory) -> Iterator[None]:
    """Every ``arbiter`` (and other Python) command the tests start imports its modules
    from one bytecode cache of the session's, outside the source tree: with
    PYTHONDONTWRITEBYTECODE in the environment (as on the CI machine) each of the
    suite's ~1000 interpreter starts would otherwise compile arbiter, yaml, asyncio and
    the rest from source again (about 0.25 s of CPU a start). Only the children see it;
    what they run is the same code."""
    saved = {name: os.environ.get(name) for name in ("PYTHONDONTWRITEBYTECODE",
                                                      "PYTHONPYCACHEPREFIX")}
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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
