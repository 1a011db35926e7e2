"""Training entry point behind `make train-stage1` / `make train-stage2` / `make train-landmarker` /
`make train-syncnet` / `make train-emotion`: trains any registered model.

    python -m dreamhead_lit.train stage1 --size demo [key=value ...]
    python -m dreamhead_lit.train syncnet --if-needed data.root=data/mine           # a dataset's own sync expert
    python -m dreamhead_lit.train stage1 --size demo name=myrun ckpt_path=last      # resume an interrupted run
    python -m dreamhead_lit.train --method dreamtalk --size demo                    # every part of a method, in order
    python -m dreamhead_lit.train --list                                            # every registered model

It parses arguments and calls :func:`dreamhead_lit.training.fit`; the run directory ``runs/<model>/<name>/`` (see
:mod:`dreamhead_lit.runs`) receives the resolved config, TensorBoard logs and ``checkpoints/{last,best-*}.ckpt``.
"""
from __future__ import annotations

import argparse
import sys

from .checkpoints import CheckpointError
from .config import ConfigError, load_config
from .data.clip import ClipError
from .lit.guards import NonFiniteError
from .registry import RegistryError, get, names, recipe, recipes
from .training import fit, fit_if_needed, fit_method


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dreamhead_lit.train", description=__doc__.splitlines()[0],
        epilog="ckpt_path= files are loaded as weights only (a file that would run code is refused); one outside runs/ "
               "starts a new run under runs_root. model.vae_checkpoint (stage 2's latent codec) is different: a "
               "TorchScript file is code and runs when loaded, so use only files you trust.")
    parser.add_argument("model", nargs="?", help=f"a registered model: {', '.join(names())}")
    parser.add_argument("--method", help=f"train every missing part of a method in order ({', '.join(recipes())}); "
                        "overrides apply to every part, MODEL:key=value to one (dreamtalk:trainer.max_steps=10); "
                        "finished parts are kept, interrupted ones resumed")
    parser.add_argument("--list", action="store_true", help="list the registered models and exit")
    parser.add_argument("--size", default="demo",
                        help="experiments/<model>/<size>.yaml (demo or paper; the scorers have one config)")
    parser.add_argument("--config", help="experiment file instead of the model's <size> file")
    parser.add_argument("--if-needed", action="store_true",
                        help="skip a run that already finished (done.json); resume one that was interrupted")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=100 data=hdtf")
    args = parser.parse_intermixed_args(argv)
    if args.list:
        for name in names():
            print(f"{name:<12} {get(name).description}")
        for name in recipes():
            print(f"--method {name:<12} {recipe(name).description}: {' -> '.join(recipe(name).models)}")
        return 0
    if args.method:
        if args.model and "=" not in args.model:
            parser.error("give a model or --method, not both")
        overrides = [args.model, *args.overrides] if args.model else args.overrides  # the first override, parsed as
        return _run(lambda: fit_method(args.method, args.size, overrides))  # the positional model
    if not args.model:
        parser.error(f"name a model to train: {', '.join(names())}")
    def one() -> None:
        spec = get(args.model)
        cfg = load_config(args.config or spec.config_file(args.size), args.overrides, schema=spec.schema_class())
        (fit_if_needed if args.if_needed else fit)(spec.name, cfg)

    return _run(one)


def _run(work) -> int:
    """The CLI's errors: a message and exit code 2 (1 for a diverged run), no traceback."""
    try:
        work()
    except (ConfigError, ClipError, FileNotFoundError, CheckpointError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
