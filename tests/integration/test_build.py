"""Which build serves: the per-request modules compiled at install, or their Python
sources (``ARBITER_PURE_PYTHON=1``) -- both serve every worker type the same way."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from harness import ARBITER, asgi_twin

import arbiter

pytestmark = pytest.mark.timeout(60)

APP = """
def app(environ, start_response):
    body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

PACKAGE = Path(arbiter.__file__).parent
COMPILED = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.so"))


def version(env: dict[str, str] | None = None) -> str:
    out = subprocess.run([*ARBITER, "--version"], capture_output=True, text=True, timeout=30,
                         env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not COMPILED, reason="this install compiled nothing (no C compiler, or "
                                         "ARBITER_PURE_PYTHON was set when it was installed)")
def test_a_compiled_install_says_so_and_the_switch_runs_its_sources():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    assert version(env) == f"arbiter {arbiter.__version__} (compiled)"
    assert version({**env, "ARBITER_PURE_PYTHON": "1"}) == \
        f"arbiter {arbiter.__version__} (pure Python)"


@pytest.mark.parametrize("worker_type", ["preforked", "threaded", "pooled", "evented", "asgi"])
def test_the_pure_python_build_serves_and_says_which_it_is(make_server, worker_type):
    server = make_server()
    server.write_app(asgi_twin(APP, worker_type))
    server.write_config(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 1
        worker_type: {worker_type}
    """)
    server.start("-c", "server.yaml", env={"ARBITER_PURE_PYTHON": "1"})
    response = server.get("/hello?x=1")
    assert response.status == 200
    assert response.body == b"GET /hello"
    server.wait_log("(pure Python)")
