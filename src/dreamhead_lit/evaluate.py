"""Evaluate a trained stage on a test split and write example videos.

    python -m dreamhead_lit.evaluate stage1 [--ckpt PATH | --run NAME] [--split test] [--videos 1] [key=value ...]
    python -m dreamhead_lit.evaluate stage2 [--ckpt PATH | --run NAME] [--split test] [--examples 8] [key=value ...]

What is measured: :mod:`dreamhead_lit.evaluation`.
"""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, resolve_path
from .data.clip import ClipError
from .evaluation import evaluate_stage1, evaluate_stage2


def main(argv: list[str] | None = None) -> int:
    from .runs import latest_checkpoint

    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["stage1", "stage2"])
    parser.add_argument("--ckpt", help="checkpoint (default: last.ckpt of the latest run of the stage)")
    parser.add_argument("--run", help="run name under runs/<stage>/")
    parser.add_argument("--runs-root", default="runs")
    parser.add_argument("--split", default="test")
    parser.add_argument("--videos", type=int, default=0, help="held-out clips to render as landmark animations")
    parser.add_argument("--examples", type=int, default=8, help="stage 2: frames shown in the example grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="output folder (default: <run>/eval)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    try:
        ckpt = resolve_path(args.ckpt) if args.ckpt else latest_checkpoint(args.stage, runs_root=args.runs_root,
                                                                           name=args.run)
        out_dir = resolve_path(args.out) if args.out else None
        if args.stage == "stage2":
            evaluate_stage2(ckpt, split=args.split, overrides=args.overrides, seed=args.seed, out_dir=out_dir,
                            examples=args.examples)
        else:
            evaluate_stage1(ckpt, split=args.split, overrides=args.overrides, videos=args.videos, seed=args.seed,
                            out_dir=out_dir)
    except (ConfigError, ClipError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
