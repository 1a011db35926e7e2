"""What the trained scorers' LightningModules share (:mod:`.landmarker`, :mod:`.sync_expert`): the optimiser set-up
(AdamW on ``self.net`` with the stages' warm-up + cosine schedule), the training time their run reports, and the
module their final file is written from (the best checkpoint's)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import lightning as L
import torch

from ..checkpoints import load_module
from .base import warmup_cosine

__all__ = ["ScorerModule", "ScorerOptimConfig", "best_or_last"]


@dataclass
class ScorerOptimConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05  # cosine decay to lr x this at max_steps


class ScorerModule(L.LightningModule):
    """Base of a scorer's LightningModule: a network ``self.net`` trained with AdamW under ``self.optim_cfg``."""

    net: torch.nn.Module
    optim_cfg: ScorerOptimConfig
    fit_started: float | None = None  # time.perf_counter() when fitting began: done.json's train_seconds

    def on_fit_start(self) -> None:
        self.fit_started = time.perf_counter()

    def train_seconds(self) -> float:
        return round(time.perf_counter() - self.fit_started, 1) if self.fit_started is not None else float("nan")

    def configure_optimizers(self) -> dict:
        o = self.optim_cfg
        opt = torch.optim.AdamW(self.net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, warmup_steps=o.warmup_steps,
                                                                min_lr_ratio=o.min_lr_ratio, trainer=self.trainer)}


M = TypeVar("M", bound=L.LightningModule)


def best_or_last(trainer: L.Trainer, module_cls: type[M]) -> M:
    """The module of the run's best checkpoint (by the registry entry's ``monitor``), else the one just trained."""
    cb = trainer.checkpoint_callback
    best = getattr(cb, "best_model_path", "") if cb is not None else ""
    if best and Path(best).is_file():
        return load_module(module_cls, best)
    return trainer.lightning_module.cpu()
