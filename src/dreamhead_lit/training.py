"""Training a stage as configured: the library function behind ``python -m dreamhead_lit.train`` and the ablation
harness (lightning-hydra-template's split: it only builds objects from the config and calls ``fit``)."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from .checkpoints import SAFE_LOAD
from .config import RunConfig, save_resolved_config, to_container
from .data.clip import atomic_write_text
from .lit.guards import NonFiniteGuard
from .runs import DONE_FILE, RUN_DIR_ENV, LastCheckpoint, choose_run_dir, has_checkpoints


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
        if created and not inherited and not has_checkpoints(out):
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if not inherited:
            os.environ.pop(RUN_DIR_ENV, None)
    return out


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


__all__ = ["StageSpec", "fit", "stage_specs"]
