"""Training entry point behind `make train-stage1` / `make train-stage2`: trains any registered model.

    python -m dreamhead_lit.train stage1 --size demo [key=value ...]
    python -m dreamhead_lit.train stage1 --size demo name=myrun ckpt_path=last      # resume an interrupted run
    python -m dreamhead_lit.train --list                                           # every registered model

It parses arguments and calls :func:`dreamhead_lit.training.fit`; the run directory ``runs/<model>/<name>/`` (see
:mod:`dreamhead_lit.runs`) receives the resolved config, TensorBoard logs and ``checkpoints/{last,best-*}.ckpt``.
"""
from __future__ import annotations

import argparse
import sys

from .checkpoints import CheckpointError
from .config import ConfigError, load_config, run_dir
from .data.clip import ClipError
from .lit.guards import NonFiniteError
from .registry import RegistryError, get, names
from .runs import DONE_FILE, finished_run_report
from .training import fit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dreamhead_lit.train", description=__doc__.splitlines()[0],
        epilog="ckpt_path= files are loaded as weights only (a file that would run code is refused); one outside runs/ "
               "starts a new run under runs_root. model.vae_checkpoint (stage 2's latent codec) is different: a "
               "TorchScript file is code and runs when loaded, so use only files you trust.")
    parser.add_argument("model", nargs="?", help=f"a registered model: {', '.join(names())}")
    parser.add_argument("--list", action="store_true", help="list the registered models and exit")
    parser.add_argument("--size", default="demo", help="experiments/<model>/<size>.yaml (demo or paper)")
    parser.add_argument("--config", help="experiment file instead of the model's <size> file")
    parser.add_argument("--if-needed", action="store_true",
                        help="skip a run that already finished (done.json); resume one that was interrupted")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=100 data=hdtf")
    args = parser.parse_intermixed_args(argv)
    if args.list:
        for name in names():
            print(f"{name:<12} {get(name).description}")
        return 0
    if not args.model:
        parser.error(f"name a model to train: {', '.join(names())}")
    try:
        spec = get(args.model)
        cfg = load_config(args.config or spec.config_file(args.size), args.overrides, schema=spec.schema_class())
        if args.if_needed:
            finished = finished_run_report(spec.group, cfg, spec.schema_class())
            if finished is not None:
                existing, warning = finished
                print(f"{spec.name} run {existing} is complete ({DONE_FILE}); not retraining", flush=True)
                if warning:
                    print(f"warning: {warning}", file=sys.stderr)
                return 0
            existing = run_dir(spec.group, cfg.name, runs_root=cfg.runs_root)
            if (existing / "checkpoints" / "last.ckpt").is_file() and not cfg.ckpt_path:
                print(f"resuming the interrupted {spec.name} run {existing}")
                cfg.ckpt_path = "last"
        fit(spec.name, cfg)
    except (ConfigError, ClipError, FileNotFoundError, CheckpointError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
