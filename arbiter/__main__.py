"""`python -m arbiter`: the same entry point as the `arbiter` console script."""

from arbiter.cli import main

raise SystemExit(main())
