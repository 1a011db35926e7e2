"""``python -m dreamhead_lit.bench``: the bench's command line (:func:`dreamhead_lit.bench.main`)."""
from . import main

if __name__ == "__main__":
    raise SystemExit(main())
