"""The run store: where runs live and what a run folder holds, for every tool that trains, reuses or loads runs.

    runs/<stage>/<name>/config.yaml               the resolved config
    runs/<stage>/<name>/checkpoints/last.ckpt     the latest state (resume; generation's default)
    runs/<stage>/<name>/checkpoints/best-*.ckpt   the best by the stage's validation metric
    runs/<stage>/<name>/done.json                 written when the run reached max_steps: it is complete
    runs/<stage>/<name>/events.out.tfevents.*     TensorBoard

Entry points (train, generate, evaluate, bench, ablate) and the scorers' training share these rules; none of them
keeps its own copy.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from .checkpoints import CheckpointError, header_model, read_header
from .config import ConfigError, resolve_path, run_dir

RUN_DIR_ENV = "DREAMHEAD_RUN_DIR"  # set by rank 0 so DDP worker processes use the same run directory
DONE_FILE = "done.json"  # written when a run reaches its max_steps; marks it reusable
# keys that name, locate or display a run rather than define it: two runs differing only here are the same experiment
NOT_THE_EXPERIMENT = ("name", "ckpt_path", "runs_root", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                      "trainer.log_every_n_steps")


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


def choose_run_dir(model: str, cfg: DictConfig, *, group: str | None = None) -> tuple[Path, str | None]:
    """The run directory of a run of ``model`` (under ``runs/<group>/``, the model's name by default) and the
    checkpoint to resume from.

    ``ckpt_path=last`` resumes ``runs/<group>/<name>``; a checkpoint inside a run under the runs root resumes that run.
    A checkpoint anywhere else (a downloaded file, say) starts a new run under the runs root from it: nothing is ever
    written beside the user's file. A new run whose name is taken by a run with checkpoints gets the next free
    ``<name>-<k>`` instead of overwriting it.
    """
    env = os.environ.get(RUN_DIR_ENV)
    group = group or model
    base = run_dir(group, cfg.name, runs_root=cfg.runs_root)
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
        check_checkpoint_model(ckpt, model)
        if env:
            return Path(env), str(ckpt)
        if _inside_run(ckpt, resolve_path(cfg.runs_root) / group):
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


def check_checkpoint_model(ckpt: Path, model: str) -> None:
    """A safe look at the checkpoint before anything is written: readable as data, and of this model."""
    try:
        found = header_model(read_header(ckpt))
    except CheckpointError as err:
        raise ConfigError(f"ckpt_path: {err}") from err
    if found and found != model:
        raise ConfigError(f"ckpt_path={ckpt} is a {found} checkpoint; training {model} needs a {model} one")


def has_checkpoints(out: Path) -> bool:
    """Whether a run folder holds any checkpoint (a run that has trained at all)."""
    return (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("*.ckpt"))


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


def describe_differences(saved: dict, wanted: dict, keys: list[str]) -> str:
    """``key: A there, B now`` for the first six differing keys."""
    def get(tree: Any, dotted: str) -> Any:
        for p in dotted.split("."):
            tree = tree.get(p) if isinstance(tree, dict) else None
        return tree

    return ", ".join(f"{k}: {get(saved, k)!r} there, {get(wanted, k)!r} now" for k in keys[:6])


def run_checkpoint(ref: str, runs_root: str | Path, *, model: str, key: str, best: bool = True,
                   remedy: str = "") -> Path:
    """A checkpoint file, a run folder (its best checkpoint when ``best`` and there is one, else ``last.ckpt``) or a
    run name under ``runs/<model>/``: how a model's config names another model it loads (a DreamTalk† part its lip
    expert, StyleTalker†'s parts their autoencoder, a distilled stage 2 its teacher). ``key``: the config key that
    gave ``ref``, named in the error, with ``remedy`` after it."""
    path = resolve_path(ref)
    if not path.exists() and "/" not in ref and not ref.endswith((".ckpt", ".pt")):
        path = resolve_path(runs_root) / model / ref
    if path.is_dir():
        found = sorted((path / "checkpoints").glob("best-*.ckpt")) if best else []
        path = found[-1] if found else path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"{key}={ref!r}: no {model} checkpoint at {path}{f': {remedy}' if remedy else ''}")
    return path


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
        make = "make distill-stage2" if stage == "stage2_distilled" else f"make train-{stage}"
        raise FileNotFoundError(f"no {stage} checkpoint under {root}: run `{make}`")
    return found[-1]


def finished_run_report(group: str, cfg: DictConfig, schema: type) -> tuple[Path, str | None] | None:
    """For ``--if-needed``: ``(run, warning)`` when the run ``cfg`` names under ``runs/<group>/`` is complete
    (``warning`` when it was trained with another config: it is kept, but never silently taken for the current one),
    else None."""
    existing = run_dir(group, cfg.name, runs_root=cfg.runs_root)
    if not (existing / DONE_FILE).is_file():
        return None
    saved, wanted = (comparable_config(c, schema) for c in (OmegaConf.load(existing / "config.yaml"), cfg))
    diff = config_differences(saved, wanted)
    warning = (f"it was trained with another config ({describe_differences(saved, wanted, diff)}); remove it or pass "
               "another name= to train the current one") if diff else None
    return existing, warning


__all__ = ["DONE_FILE", "NOT_THE_EXPERIMENT", "RUN_DIR_ENV", "LastCheckpoint", "check_checkpoint_model",
           "choose_run_dir", "comparable_config", "config_differences", "describe_differences", "finished_run_report",
           "has_checkpoints", "latest_checkpoint"]
