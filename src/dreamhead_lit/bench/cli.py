"""The command line, ``python -m dreamhead_lit.bench [--config ...] [--strict] [key=value ...]`` (``make bench``)."""
from __future__ import annotations

import argparse
import sys

from ..checkpoints import CheckpointError
from ..config import ConfigError
from ..data.clip import ClipError
from ..metrics import MissingWeightsError
from .config import BenchError, load_bench_config
from .run import run_bench


def main(argv: list[str] | None = None) -> int:
    from .. import bench  # --help opens with the package docstring's summary line

    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.bench", description=bench.__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench/demo.yaml", help="experiment file under experiments/ (or a path)")
    parser.add_argument("--strict", action="store_true", help="a metric or method that would be n/a is an error")
    parser.add_argument("--seeds", nargs="+", default=None, metavar="SEED",
                        help="bench once per sampling seed (every method's seed), then a mean ± std table "
                             "(<name>-seeds/table.md)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. max_clips=2 methods.dreamhead.steps=10")
    args = parser.parse_intermixed_args(argv)
    if args.seeds:  # "--seeds 0 1 2 key=value": the overrides after the seeds are overrides, not seeds
        seeds = [x for x in args.seeds if x.lstrip("-").isdigit()]
        args.overrides += [x for x in args.seeds if not x.lstrip("-").isdigit()]
        if not seeds:
            parser.error("--seeds needs at least one integer seed")
        args.seeds = [int(x) for x in seeds]
    try:
        cfg = load_bench_config(args.config, args.overrides)
        if args.strict:
            cfg.strict = True
        if args.seeds:
            from .seeds import run_seeds

            folder, text = run_seeds(cfg, args.seeds)
            print(text + f"\nwritten: {folder}/{{table.md, table.csv}}")
            return 0
        result = run_bench(cfg)
    except (ConfigError, BenchError, ClipError, MissingWeightsError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    errors = sum(s["errors"] for s in result.stats.values())
    if errors:
        print(f"error: {errors} video(s) failed (see per_clip.csv status)", file=sys.stderr)
        return 1
    return 0
