"""Serve scripts/bench_app.py with meinheld or bjoern, for scripts/bench.py.

This module owns how the two single-process C servers are started; both have
no command line of their own.  Usage (from the peers' venv)::

    python scripts/peer_run.py meinheld|bjoern PORT

It listens on 127.0.0.1:PORT only.  meinheld gets keep-alive turned on
(``set_keepalive(10)``: its default, 0, closes every connection) and its
access log off; bjoern keeps connections alive by default.
"""

from __future__ import annotations

import sys

from bench_app import app


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("meinheld", "bjoern") or not argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    server, port = argv[0], int(argv[1])
    if server == "meinheld":
        import meinheld.server as meinheld

        meinheld.set_access_logger(None)
        meinheld.set_keepalive(10)
        meinheld.listen(("127.0.0.1", port))
        meinheld.run(app)
    else:
        import bjoern

        bjoern.run(app, "127.0.0.1", port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
