"""``python -m dreamhead_lit.bench``: runs :func:`dreamhead_lit.bench.cli.main`."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
