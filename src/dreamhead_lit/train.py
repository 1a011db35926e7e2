"""Training entry point behind `make train-stage1` / `make train-stage2`.

    python -m dreamhead_lit.train stage1 --size demo [key=value ...]
    python -m dreamhead_lit.train stage1 --size demo name=myrun ckpt_path=last      # resume an interrupted run

It parses arguments and calls :func:`dreamhead_lit.training.fit`; the run directory ``runs/<stage>/<name>/`` (see
:mod:`dreamhead_lit.runs`) receives the resolved config, TensorBoard logs and ``checkpoints/{last,best-*}.ckpt``.
"""
from __future__ import annotations

import argparse
import sys

from .checkpoints import CheckpointError
from .config import ConfigError, load_config, run_dir
from .data.clip import ClipError
from .lit.guards import NonFiniteError
from .runs import DONE_FILE, finished_run_report
from .training import fit, stage_specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dreamhead_lit.train", description=__doc__.splitlines()[0],
        epilog="ckpt_path= files are loaded as weights only (a file that would run code is refused); one outside runs/ "
               "starts a new run under runs_root. model.vae_checkpoint (stage 2's latent codec) is different: a "
               "TorchScript file is code and runs when loaded, so use only files you trust.")
    parser.add_argument("stage", choices=["stage1", "stage2"])
    parser.add_argument("--size", default="demo", help="experiments/<stage>/<size>.yaml (demo or paper)")
    parser.add_argument("--if-needed", action="store_true",
                        help="skip a run that already finished (done.json); resume one that was interrupted")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_steps=100 data=hdtf")
    args = parser.parse_intermixed_args(argv)
    specs = stage_specs()
    try:
        cfg = load_config(f"{args.stage}/{args.size}.yaml", args.overrides, schema=specs[args.stage].schema)
        if args.if_needed:
            finished = finished_run_report(args.stage, cfg, specs[args.stage].schema)
            if finished is not None:
                existing, warning = finished
                print(f"{args.stage} run {existing} is complete ({DONE_FILE}); not retraining", flush=True)
                if warning:
                    print(f"warning: {warning}", file=sys.stderr)
                return 0
            existing = run_dir(args.stage, cfg.name, runs_root=cfg.runs_root)
            if (existing / "checkpoints" / "last.ckpt").is_file() and not cfg.ckpt_path:
                print(f"resuming the interrupted {args.stage} run {existing}")
                cfg.ckpt_path = "last"
        fit(args.stage, cfg)
    except (ConfigError, ClipError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
