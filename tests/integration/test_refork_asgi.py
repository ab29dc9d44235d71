"""Reforking (``refork_after``) of asgi workers, as an operator and their clients see it.

Two asgi workers serving an ASGI app with a lifespan; after 50 requests a
warm worker becomes the mold and the other is replaced by a worker forked
from it, while a closed-loop client that never retries sees no failure.
What is particular to the coroutine type: each worker the mold forks runs
the app's lifespan startup itself (its ``scope["state"]`` is its own, not
the mold's), and a WebSocket open on the mold when it forks (TTIN asks it
for one more worker) goes on talking to the mold -- the fork waits for no
request in flight but does not cut a conversation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
from pathlib import Path

import pytest
from harness import children_of, pid_alive, wait_for
from test_refork import ClosedLoop, settled

websockets = pytest.importorskip("websockets")
from websockets.sync.client import connect  # noqa: E402

pytestmark = pytest.mark.timeout(90)

APP = """
import gc, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started_in"] = os.getpid()
                with open("startups.log", "a") as log:
                    log.write(f"{os.getpid()}\\n")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send",
                        "text": f"{os.getpid()} {message.get('text')}"})
    else:
        if scope["path"] == "/state":
            body = b"%d %d" % (os.getpid(), scope["state"]["started_in"])
        else:
            body = b"%d %d %d" % (os.getpid(), os.getppid(), gc.get_freeze_count())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
"""


def server_side_inode(port: int, client_port: int) -> str:
    """The socket inode of the server's end of the TCP connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == client_port:
            return fields[9]
    raise AssertionError(f"no connection from port {client_port} to {port}")


def sockets_of(pid: int) -> set[str]:
    """The socket inodes a process holds open."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(target[8:-1])
    return held


def test_asgi_workers_are_reforked_with_a_lifespan_of_their_own_and_websockets_kept(server):
    server.write_app(APP)
    server.write_config(textwrap.dedent(f"""
        app: app:app
        bind: ["127.0.0.1:{server.port}"]
        workers: 2
        worker_type: asgi
        control_socket: arbiter.ctl
        graceful_timeout: 10
        refork_after: [50]
    """))
    server.start("-c", "server.yaml")
    master = server.pid
    first = set(server.wait_workers(2))
    load = ClosedLoop(server.port, 3)
    sockets = contextlib.ExitStack()
    try:
        snap = settled(server, lambda s: sum(w["refork_generation"] == 1
                                             for w in s["workers"]) == 1, count=2)
        [mold] = [w["pid"] for w in snap["workers"] if w["mold"]]
        assert mold in first

        # a WebSocket on the mold (new connections go to either worker: keep one there)
        def on_the_mold():
            ws = sockets.enter_context(connect(f"ws://127.0.0.1:{server.port}/ws",
                                               open_timeout=10))
            ws.send("hello")
            return ws if int(ws.recv(timeout=10).split()[0]) == mold else None
        talking = wait_for(on_the_mold, 30, interval=0, message="a WebSocket on the mold")
        inode = server_side_inode(server.port, talking.socket.getsockname()[1])
        assert inode in sockets_of(mold)

        # one more worker (TTIN): the mold forks it with the WebSocket open
        before = {w["pid"] for w in snap["workers"]}
        server.signal(signal.SIGTTIN)
        snap = settled(server, lambda s: True, count=3)
        [added] = [w for w in snap["workers"] if w["pid"] not in before]
        assert added["refork_generation"] == 1 and added["pid"] in children_of(master)
        assert inode not in sockets_of(added["pid"])  # the mold's connection, not its copy
        for n in range(3):
            talking.send(f"still {n}")
            assert talking.recv(timeout=10) == f"{mold} still {n}"
    finally:
        answered, failures = load.stop()
        sockets.close()
    assert failures == [], failures[:5]
    assert answered >= 50
    assert "forked from worker #" in server.stderr

    # every worker the mold forked ran the lifespan startup itself: its state is its own
    workers = {w["pid"] for w in snap["workers"]}
    startups = {int(line) for line in (server.workdir / "startups.log").read_text().split()}
    assert workers <= startups, (workers, startups)
    seen = {}
    for _ in range(40):
        pid, started_in = (int(x) for x in server.get("/state").text.split())
        seen[pid] = started_in
    assert seen and all(pid == started_in for pid, started_in in seen.items()), seen

    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    assert not any(pid_alive(pid) for pid in workers)
