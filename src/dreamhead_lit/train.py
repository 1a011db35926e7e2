"""Training entry point behind `make train-stage1` / `make train-stage2`.

    python -m dreamhead_lit.train stage1 --size demo [key=value ...]
    python -m dreamhead_lit.train stage1 --size demo name=myrun ckpt_path=last      # resume an interrupted run

It only builds objects from the config and calls ``fit`` (lightning-hydra-template's split): the run directory
``runs/<stage>/<name>/`` receives the resolved config, TensorBoard logs and ``checkpoints/{last,best-*}.ckpt``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from .checkpoints import SAFE_LOAD, CheckpointError, read_header
from .config import ConfigError, RunConfig, load_config, resolve_path, run_dir, save_resolved_config, to_container
from .data.clip import ClipError, atomic_write_text
from .lit.guards import NonFiniteError, NonFiniteGuard

RUN_DIR_ENV = "DREAMHEAD_RUN_DIR"  # set by rank 0 so DDP worker processes use the same run directory
DONE_FILE = "done.json"  # written when a run reaches its max_steps; marks it reusable
# keys that name, locate or display a run rather than define it: two runs differing only here are the same experiment
NOT_THE_EXPERIMENT = ("name", "ckpt_path", "runs_root", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                      "trainer.log_every_n_steps")


@dataclass
class StageSpec:
    """What differs between the stages: config schema, data stage, LightningModule and the metric to monitor."""

    schema: type  # a RunConfig whose other sections are the module's from_datamodule arguments
    data_stage: str
    module: type[L.LightningModule]
    monitor: str  # the validation metric that picks best-*.ckpt
    mode: str  # "min" or "max" for that metric

    def build(self, cfg: DictConfig, dm: Any) -> L.LightningModule:
        """The module for ``cfg`` and a set-up DataModule: each section beyond the run's own is an argument of
        ``from_datamodule``, ``model`` under the name ``net``."""
        run = {f.name for f in fields(RunConfig)}
        sections = [f.name for f in fields(self.schema) if f.name not in run]
        return self.module.from_datamodule(
            dm, **{("net" if name == "model" else name): to_container(cfg[name]) for name in sections})


def stage_specs() -> dict[str, StageSpec]:
    from .lit.a2l import A2LDiffusion, Stage1Config
    from .lit.l2i import L2IDiffusion, Stage2Config

    return {"stage1": StageSpec(Stage1Config, "a2l", A2LDiffusion, "val/lmd_mouth", "min"),
            "stage2": StageSpec(Stage2Config, "l2i", L2IDiffusion, "val/ssim_mouth", "max")}


class LastCheckpoint(Callback):
    """``last.ckpt`` after every validation, at the end of training and on Ctrl-C (or a scheduler's SIGTERM turned
    into KeyboardInterrupt), so ``ckpt_path=last`` resumes and a finished run's last.ckpt is its final step.

    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` only copies a checkpoint it has just saved: when the last
    validation did not improve the monitored metric, last.ckpt stayed at an earlier step while done.json reported the
    final one.
    """

    def __init__(self, path: Path):
        self.path = path

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            trainer.save_checkpoint(self.path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.global_step > 0:
            trainer.save_checkpoint(self.path)
            if trainer.is_global_zero:
                print(f"\ninterrupted: saved {self.path} (resume with ckpt_path=last)", file=sys.stderr)


def choose_run_dir(stage: str, cfg: DictConfig) -> tuple[Path, str | None]:
    """The run directory and the checkpoint to resume from.

    ``ckpt_path=last`` resumes ``runs/<stage>/<name>``; a checkpoint inside a run under the runs root resumes that run.
    A checkpoint anywhere else (a downloaded file, say) starts a new run under the runs root from it: nothing is ever
    written beside the user's file. A new run whose name is taken by a run with checkpoints gets the next free
    ``<name>-<k>`` instead of overwriting it.
    """
    env = os.environ.get(RUN_DIR_ENV)
    base = run_dir(stage, cfg.name, runs_root=cfg.runs_root)
    if cfg.ckpt_path == "last":
        last = (Path(env) if env else base) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise ConfigError(f"ckpt_path=last: no checkpoint at {last}; train run {cfg.name!r} first or check name=")
        return last.parent.parent, str(last)
    resume = None
    if cfg.ckpt_path:
        ckpt = resolve_path(cfg.ckpt_path)
        if not ckpt.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint")
        _check_stage(ckpt, stage)
        if env:
            return Path(env), str(ckpt)
        if _inside_run(ckpt, resolve_path(cfg.runs_root) / stage):
            return ckpt.parent.parent, str(ckpt)
        resume = str(ckpt)
    if env:
        return Path(env), resume
    candidate, k = base, 0
    while (candidate / "checkpoints").is_dir() and any((candidate / "checkpoints").iterdir()):
        k += 1
        candidate = base.with_name(f"{cfg.name}-{k}")
    return candidate, resume


def _inside_run(ckpt: Path, stage_root: Path) -> bool:
    """Whether ``ckpt`` is ``<stage_root>/<name>/checkpoints/<file>`` (symbolic links resolved)."""
    ckpt, stage_root = ckpt.resolve(), stage_root.resolve()
    return ckpt.parent.name == "checkpoints" and ckpt.parent.parent.parent == stage_root


def _check_stage(ckpt: Path, stage: str) -> None:
    """A safe look at the checkpoint before anything is written: readable as data, and of this stage."""
    try:
        found = read_header(ckpt).get("stage")
    except CheckpointError as err:
        raise ConfigError(f"ckpt_path: {err}") from err
    if found and found != stage:
        raise ConfigError(f"ckpt_path={ckpt} is a {found} checkpoint; training {stage} needs a {stage} one")


def fit(stage: str, cfg: DictConfig, *, callbacks: list[Callback] = ()) -> Path:
    """Train a stage as configured; returns the run directory. ``callbacks`` are added to the standard ones.

    A run that fails before its first checkpoint leaves no run directory behind (one it did not create is kept).
    """
    spec = stage_specs()[stage]
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    out, resume = choose_run_dir(stage, cfg)
    inherited = RUN_DIR_ENV in os.environ  # a DDP worker inherits the run directory from rank 0
    created = not out.exists()
    os.environ[RUN_DIR_ENV] = str(out)
    try:
        _fit_in(out, resume, spec, stage, cfg, callbacks)
    except BaseException:
        if created and not inherited and not _has_checkpoints(out):
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if not inherited:
            os.environ.pop(RUN_DIR_ENV, None)
    return out


def _has_checkpoints(out: Path) -> bool:
    return (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("*.ckpt"))


def _fit_in(out: Path, resume: str | None, spec: StageSpec, stage: str, cfg: DictConfig,
            callbacks: list[Callback]) -> None:
    from .data.datamodule import TalkingHeadDataModule

    is_rank_zero = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    if is_rank_zero:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, out)
    dm = TalkingHeadDataModule(stage=spec.data_stage, **to_container(cfg.data))
    dm.prepare_data()
    dm.setup("fit")
    dm.require_splits(cfg.data.train_split, cfg.data.val_split)
    module = spec.build(cfg, dm)
    t = to_container(cfg.trainer)
    extra = t.pop("extra", {}) or {}
    ckpt_dir = out / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="best-step{step}", monitor=spec.monitor, mode=spec.mode, save_top_k=1,
                        auto_insert_metric_name=False),
        LearningRateMonitor(logging_interval="step"),
        LastCheckpoint(ckpt_dir / "last.ckpt"),
        NonFiniteGuard(),
        *callbacks,
    ]
    logger = TensorBoardLogger(save_dir=str(out.parent), name=out.name, version="", default_hp_metric=False)
    trainer = L.Trainer(default_root_dir=str(out), logger=logger, callbacks=callbacks, **t, **extra)
    trainer.fit(module, datamodule=dm, ckpt_path=resume, **SAFE_LOAD)
    if trainer.is_global_zero and not trainer.interrupted:
        metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        atomic_write_text(out / DONE_FILE, json.dumps({"steps": trainer.global_step, "metrics": metrics}, indent=2))
        print(f"\n{stage} run: {out}\n  checkpoints: {ckpt_dir}\n  steps: {trainer.global_step}")
        for k, v in sorted(metrics.items()):
            print(f"  {k}: {v}")


def comparable_config(cfg: DictConfig | dict, schema: type) -> dict:
    """The config as ``schema`` reads it (defaults filled in for keys added since it was saved), without the keys of
    :data:`NOT_THE_EXPERIMENT`: equal results mean the same experiment."""
    merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    out = OmegaConf.to_container(merged, resolve=True)
    for dotted in NOT_THE_EXPERIMENT:
        *parents, last = dotted.split(".")
        node = out
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def config_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config containers."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in config_differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _describe_differences(saved: dict, wanted: dict, keys: list[str]) -> str:
    def get(tree: Any, dotted: str) -> Any:
        for p in dotted.split("."):
            tree = tree.get(p) if isinstance(tree, dict) else None
        return tree

    return ", ".join(f"{k}: {get(saved, k)!r} there, {get(wanted, k)!r} now" for k in keys[:6])


def latest_checkpoint(stage: str, *, runs_root: str = "runs", name: str | None = None) -> Path:
    """``last.ckpt`` of the named run, or of the most recently trained run of the stage."""
    root = resolve_path(runs_root) / stage
    if name:
        path = root / name / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        return path
    found = sorted(root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no {stage} checkpoint under {root}: run `make train-{stage.replace('stage', 'stage')}`")
    return found[-1]


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
            existing = run_dir(args.stage, cfg.name, runs_root=cfg.runs_root)
            if (existing / DONE_FILE).is_file():
                print(f"{args.stage} run {existing} is complete ({DONE_FILE}); not retraining", flush=True)
                schema = specs[args.stage].schema
                saved, wanted = (comparable_config(c, schema) for c in (OmegaConf.load(existing / "config.yaml"), cfg))
                diff = config_differences(saved, wanted)
                if diff:  # a finished run is kept, but never silently taken for the current config
                    print(f"warning: it was trained with another config ({_describe_differences(saved, wanted, diff)});"
                          f" remove it or pass another name= to train the current one", file=sys.stderr)
                return 0
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
