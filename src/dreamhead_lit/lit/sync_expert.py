"""Training the sync expert (:class:`~dreamhead_lit.models.sync_expert.ReducedSyncNet`) that scores LSE-C / LSE-D when
the official ``syncnet_v2.model`` is absent: ``python -m dreamhead_lit.train syncnet [data.root=...]``.

Training is contrastive with a symmetric **InfoNCE** loss (:func:`info_nce`; van den Oord et al. 2018, temperature
``loss.temperature``) over a batch of windows drawn ``loss.group`` at a time from one clip, at most ``loss.max_shift``
frames apart: for each 5-frame video window the aligned 0.2 s MFCC window is the positive; every other window's audio
is a negative -- the same clip shifted by ``loss.min_shift`` .. ``2 * max_shift`` frames (the hard ones: same voice,
same face; windows closer than ``min_shift`` overlap the positive and are masked out) and other clips (the easy ones).
Validation is the offset accuracy on held-out clips whose audio is shifted by known offsets (``eval_shifts``): the AV
offset the LSE procedure finds must be within one frame of the constructed one (chance: about 3 of the 31 searched
offsets); it picks ``best-*.ckpt``. When training ends, :func:`export_sync_expert` writes ``expert.pt`` from the best
checkpoint, the file :class:`~dreamhead_lit.metrics.scorers.TrainedSyncExpert` loads, and returns its figures.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from ..config import RunConfig
from ..data.scorer_data import HeldOutClips
from ..metrics.scorers import (
    DEFAULT_EVAL_SHIFTS,
    EXPERT_FILE,
    TrainedSyncExpert,
    near_chance,
    offset_accuracy,
    save_final,
)
from ..models.sync_expert import ReducedSyncNet, SyncCrop, check_crop
from .scorer_base import ScorerModule, ScorerOptimConfig, best_or_last

__all__ = ["SyncExpertConfig", "SyncExpertModule", "SyncLossConfig", "SyncNetConfig", "export_sync_expert", "info_nce"]


@dataclass
class SyncNetConfig:
    width: float = 0.25  # channel multiplier on the joonson SyncNet layout (1.0 = the official widths)
    embed_dim: int = 128  # official: 1024
    input_size: int = 64  # face crops are resized to this side (official: 224)
    crop: SyncCrop = "lower_half"  # lower_half (Wav2Lip's expert) | full


@dataclass
class SyncLossConfig:
    temperature: float = 0.1  # InfoNCE softmax temperature on cosine similarities
    group: int = 4  # windows of one clip in a batch, at most max_shift frames apart: each other's hard negatives
    min_shift: int = 3  # frames; closer windows of a clip overlap the positive too much to be negatives (masked)
    max_shift: int = 15  # the LSE offset search range
    windows_per_clip: int = 16  # training windows drawn per clip per epoch


@dataclass
class SyncExpertConfig(RunConfig):
    name: str | None = None  # default syncnet-<dataset folder name>
    eval_shifts: list[int] = field(default_factory=lambda: list(DEFAULT_EVAL_SHIFTS))  # constructed AV offsets, frames
    model: SyncNetConfig = field(default_factory=SyncNetConfig)
    loss: SyncLossConfig = field(default_factory=SyncLossConfig)
    optim: ScorerOptimConfig = field(default_factory=ScorerOptimConfig)


def info_nce(video: Tensor, audio: Tensor, clip: Tensor, position: Tensor, *, temperature: float,
             min_shift: int) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE of unit embeddings ``video``/``audio`` ``(N, D)``: row i's aligned audio is the positive,
    every other window's audio a negative (and the same for audio -> video), except windows of the same clip closer
    than ``min_shift`` frames, which overlap the positive and are masked out.

    Returns (loss, share of same-clip shifted pairs scored below the aligned pair: the offset-search skill).
    """
    sim = video @ audio.T  # (N, N) cosine similarities
    same = clip[:, None] == clip[None, :]
    near = same & ((position[:, None] - position[None, :]).abs() < min_shift)
    near.fill_diagonal_(False)
    logits = (sim / temperature).masked_fill(near, float("-inf"))
    target = torch.arange(len(video), device=video.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    with torch.no_grad():
        hard = same & ~near
        hard.fill_diagonal_(False)
        beats = (sim.diagonal()[:, None] > sim)[hard].float()
        skill = beats.mean() if beats.numel() else torch.tensor(float("nan"))
    return loss, skill


class SyncExpertModule(ScorerModule):
    """Trains :class:`ReducedSyncNet` with :func:`info_nce`; validates the offset accuracy on held-out clips."""

    def __init__(self, *, model: dict | None = None, loss: dict | None = None, optim: dict | None = None,
                 eval_shifts: list[int] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = SyncNetConfig(**(model or {}))
        check_crop(self.model_cfg.crop)
        self.loss_cfg = SyncLossConfig(**(loss or {}))
        self.optim_cfg = ScorerOptimConfig(**(optim or {}))
        self.eval_shifts = list(eval_shifts if eval_shifts is not None else DEFAULT_EVAL_SHIFTS)
        self.net = ReducedSyncNet(width=self.model_cfg.width, embed_dim=self.model_cfg.embed_dim)
        self._val: list[tuple[np.ndarray, np.ndarray]] = []

    @classmethod
    def from_datamodule(cls, dm: Any, *, net: dict, **sections: Any) -> SyncExpertModule:
        """From the config's sections (the registry passes ``model`` as ``net``); nothing to take from the data."""
        return cls(model=net, **sections)

    def expert(self, name: str = "training") -> TrainedSyncExpert:
        m = self.model_cfg
        return TrainedSyncExpert(self.net, name=name, input_size=m.input_size, crop=m.crop,
                                 device=self.device)  # type: ignore[arg-type]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        flat = {k: v.flatten(0, 1) for k, v in batch.items()}  # (B, G, ...) -> (B * G, ...)
        v = self.net.forward_lip(flat["video"])  # (N, D)
        a = self.net.forward_aud(flat["audio"])  # (N, D)
        loss, skill = info_nce(v, a, flat["clip"], flat["position"], temperature=self.loss_cfg.temperature,
                               min_shift=self.loss_cfg.min_shift)
        n = len(v)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/aligned_beats_shifted", skill, batch_size=n)
        return loss

    def validation_step(self, batch: tuple[np.ndarray, np.ndarray], batch_idx: int) -> None:
        self._val.append(batch)

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        acc = offset_accuracy(self.expert(), self._val, self.eval_shifts)
        self._val = []
        self.net.eval()  # SyncNetExpert switches to eval (it already is during validation)
        self.log("val/offset_acc", acc["offset_acc"])
        self.log("val/offset_exact", acc["offset_exact"])
        self.log("val/offset_mae", acc["offset_mae"])


def export_sync_expert(out: Path, trainer: L.Trainer, cfg: DictConfig) -> dict[str, Any]:
    """The registry's ``export`` hook: ``expert.pt`` from the best checkpoint, named by its offset accuracy on the test
    splits (held-out identities) when there are any, else on the val split; returns the figures."""
    dm = trainer.datamodule
    best = best_or_last(trainer, SyncExpertModule).eval()
    shifts = list(cfg.eval_shifts)
    val_acc = offset_accuracy(best.expert(), HeldOutClips(dm.val_readers).clips(), shifts)
    figures: dict[str, Any] = {f"val_{k}": v for k, v in val_acc.items()}
    test = dm.test_readers()
    held = val_acc
    if test:  # held-out identities: the honest figure, reported (and used to name the expert), never used to select
        held = offset_accuracy(best.expert(), HeldOutClips(test).clips(), shifts)
        figures.update({f"test_{k}": v for k, v in held.items()})
    figures.update({"eval_shifts": shifts, "steps": trainer.global_step,
                    "train_seconds": trainer.lightning_module.train_seconds()})
    m = cfg.model
    model = {"width": float(m.width), "embed_dim": int(m.embed_dim), "input_size": int(m.input_size), "crop": dm.crop}
    blob = {"model": model, "state_dict": best.net.state_dict(), "run": out.name, "dataset": str(dm.root),
            "offset_accuracy": held["offset_acc"], "figures": figures}
    save_final(out / EXPERT_FILE, blob)
    print(f"\n{out / EXPERT_FILE}\n  offset accuracy (within 1 frame of shifts {shifts}): "
          f"val {val_acc['offset_acc']:.1%}" + (f", test {held['offset_acc']:.1%}" if test else "")
          + f" ({held['trials']} trials; chance ~{3 / 31:.0%})")
    if near_chance(held["offset_acc"]):
        print("  warning: near chance, so LSE-C/D scored by this expert mean little; it needs more training clips "
              "(hours of speech, as HDTF has) or the official syncnet_v2.model", file=sys.stderr)
    return figures
