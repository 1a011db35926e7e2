"""Training a registered model as configured: the library function behind ``python -m dreamhead_lit.train`` and the
ablation harness (lightning-hydra-template's split: it only builds objects from the config and calls ``fit``)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from . import registry
from .checkpoints import SAFE_LOAD
from .config import ConfigError, load_config, save_resolved_config, to_container
from .data.clip import atomic_write_text
from .lit.guards import NonFiniteGuard
from .registry import ModelSpec
from .config import run_dir
from .runs import DONE_FILE, RUN_DIR_ENV, LastCheckpoint, choose_run_dir, finished_run_report, has_checkpoints


class ModelHeader(Callback):
    """Writes the registry name into every checkpoint (``checkpoint["dreamhead"]["model"]``), so any tool loads the
    file by the header it carries (:func:`dreamhead_lit.registry.load_checkpoint`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint.setdefault("dreamhead", {})["model"] = self.name


def fit(name: str, cfg: DictConfig, *, callbacks: list[Callback] = ()) -> Path:
    """Train the registered model ``name`` as configured; returns the run directory. ``callbacks`` are added to the
    standard ones.

    A run that fails before its first checkpoint leaves no run directory behind (one it did not create is kept).
    """
    spec = registry.get(name)
    cfg = spec.named(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    out, resume = choose_run_dir(name, cfg, group=spec.group)
    inherited = RUN_DIR_ENV in os.environ  # a DDP worker inherits the run directory from rank 0
    created = not out.exists()
    os.environ[RUN_DIR_ENV] = str(out)
    threads = torch.get_num_threads()  # restored afterwards: the caller (the demo, say) goes on with its own setting
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    try:
        _fit_in(out, resume, spec, cfg, callbacks)
    except BaseException:
        if created and not inherited and not has_checkpoints(out):
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
        if not inherited:
            os.environ.pop(RUN_DIR_ENV, None)
    return out


def fit_if_needed(name: str, cfg: DictConfig) -> Path:
    """``--if-needed``: the finished run ``cfg`` names is kept (with a warning when it was trained with another
    config), an interrupted one is resumed from its ``last.ckpt``, else the model is trained; returns the run."""
    spec = registry.get(name)
    cfg = spec.named(cfg)
    finished = finished_run_report(spec.group, cfg, spec.schema_class())
    if finished is not None:
        existing, warning = finished
        print(f"{spec.name} run {existing} is complete ({DONE_FILE}); not retraining", flush=True)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        return existing
    existing = run_dir(spec.group, cfg.name, runs_root=cfg.runs_root)
    if (existing / "checkpoints" / "last.ckpt").is_file() and not cfg.ckpt_path:
        print(f"resuming the interrupted {spec.name} run {existing}")
        cfg = cfg.copy()
        cfg.ckpt_path = "last"
    return fit(name, cfg)


def fit_method(method: str, size: str, overrides: list[str]) -> list[Path]:
    """Every part of ``method``'s recipe in order, each trained only if needed (a finished run is kept, an
    interrupted one resumed), under one run name (``name=``, default ``size``); returns the parts' run folders."""
    r = registry.recipe(method)
    split = [registry.split_part_override(o, r.models) for o in overrides]
    shared = [rest for part, rest in split if part is None]
    run = next((o.split("=", 1)[1] for o in reversed(shared) if o.startswith("name=")), size)
    done = []
    trained_now: list[str] = []  # parts this call trained (not kept)
    for i, model in enumerate(r.models, 1):
        spec = registry.get(model)
        own = [rest for part, rest in split if part == model]
        print(f"[{method} {i}/{len(r.models)}] {model} (run {run})", flush=True)
        cfg = load_config(spec.config_file(size), [*r.overrides(model, run), *shared, f"name={run}", *own],
                          schema=spec.schema_class())
        finished = finished_run_report(spec.group, spec.named(cfg), spec.schema_class())
        linked = any("{run}" in o for m, extra in r.parts if m == model for o in extra)
        if finished is not None and linked and trained_now:
            # its run learned from the run before it as it WAS: kept (never deleted here), but said loudly
            print(f"warning: {model} run {finished[0]} is complete, but a part before it ({trained_now[-1]}) was "
                  f"trained just now: it learned from the old one. Remove it (rm -r {finished[0]}) and run this again",
                  file=sys.stderr, flush=True)
        done.append(fit_if_needed(spec.name, cfg))
        if finished is None:
            trained_now.append(model)
    return done


def _is_global_zero() -> bool:
    """Whether this process is the job's rank 0, before the Trainer exists, as its launcher says: torchrun (``RANK``),
    srun (``SLURM_PROCID``) or Lightning's own launcher (``NODE_RANK``/``LOCAL_RANK``). Under torchrun and srun each
    node's first process has ``LOCAL_RANK=0`` and no ``NODE_RANK``: the local rank alone made every node a writer."""
    env = os.environ
    if int(env.get("WORLD_SIZE", 1)) > 1 and "RANK" in env:
        return int(env["RANK"]) == 0
    if int(env.get("SLURM_NTASKS", 1)) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]) == 0
    return int(env.get("NODE_RANK", 0)) == 0 and int(env.get("LOCAL_RANK", 0)) == 0


def _fit_in(out: Path, resume: str | None, spec: ModelSpec, cfg: DictConfig, callbacks: list[Callback]) -> None:
    if _is_global_zero():
        out.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, out)
    dm = spec.make_datamodule(cfg)
    module = spec.build_module(cfg, dm)
    t = to_container(cfg.trainer)
    extra = t.pop("extra", {}) or {}
    ckpt_dir = out / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="best-step{step}", monitor=spec.monitor, mode=spec.mode, save_top_k=1,
                        auto_insert_metric_name=False),
        LearningRateMonitor(logging_interval="step"),
        LastCheckpoint(ckpt_dir / "last.ckpt"),
        NonFiniteGuard(),
        ModelHeader(spec.name),
        *callbacks,
    ]
    logger = TensorBoardLogger(save_dir=str(out.parent), name=out.name, version="", default_hp_metric=False)
    trainer = L.Trainer(default_root_dir=str(out), logger=logger, callbacks=callbacks, **t, **extra)
    trainer.fit(module, datamodule=dm, ckpt_path=resume, **SAFE_LOAD)
    if trainer.global_step == 0 and not trainer.interrupted:  # nothing learned: never a "done" run without weights
        train = getattr(dm, "datasets", {}).get(getattr(getattr(dm, "hparams", None), "train_split", None))
        size = f"{len(train)} training samples" if train is not None else "the training samples"
        raise ConfigError(f"{spec.name}: training ran 0 steps ({size} over {trainer.world_size} process(es), "
                          f"data.batch_size={getattr(dm.hparams, 'batch_size', '?')}; incomplete batches are dropped): "
                          "lower data.batch_size, use fewer processes, or draw more samples per clip "
                          "(data.windows_per_clip / data.frames_per_clip)")
    if trainer.is_global_zero and not trainer.interrupted:
        metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        figures = spec.export_figures(out, trainer, cfg)
        done = {"steps": trainer.global_step, "metrics": metrics, **figures}
        atomic_write_text(out / DONE_FILE, json.dumps(done, indent=2))
        print(f"\n{spec.name} run: {out}\n  checkpoints: {ckpt_dir}\n  steps: {trainer.global_step}")
        for k, v in sorted(metrics.items()):
            print(f"  {k}: {v}")


__all__ = ["ModelHeader", "fit", "fit_if_needed"]
