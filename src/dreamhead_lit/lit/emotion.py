"""Training the emotion classifier (:class:`~dreamhead_lit.models.emotion.EmotionNet`) that scores the bench's emotion
accuracy: ``python -m dreamhead_lit.train emotion [data.root=...]``.

It is trained with cross-entropy on random windows of the train split's ground-truth ``landmarks68`` in canonical pose,
labelled with their clip's emotion, with Gaussian noise on the coordinates (``augment.noise``: the bench feeds it a
landmarker's points, which jitter), and validated per whole clip on the val split
(:class:`~dreamhead_lit.data.scorer_data.EmotionDataModule`): ``val/acc``, the share of clips whose most probable
emotion is their label, picks ``best-*.ckpt``. When training ends, :func:`export_emotion` writes ``emotion.pt`` from
the best checkpoint, the file :class:`~dreamhead_lit.metrics.scorers.TrainedEmotionClassifier` loads, with its accuracy
on the held-out clips' ground truth (val split, and the test splits for information): the upper bound of the bench's
column, which feeds it a landmarker's points on generated frames instead.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from torchmetrics import MeanMetric

from ..config import RunConfig
from ..data.clip import EMOTIONS, ClipReader
from ..data.scorer_data import labelled_readers
from ..metrics.scorers import EMOTION_FILE, TrainedEmotionClassifier, save_final
from ..models.emotion import EmotionNet, emotion_label
from .scorer_base import ScorerModule, ScorerOptimConfig, best_or_last

__all__ = ["EmotionAugmentConfig", "EmotionConfig", "EmotionModule", "EmotionNetConfig", "clip_accuracy",
           "export_emotion"]


@dataclass
class EmotionNetConfig:
    channels: int = 32  # width of the temporal convolutions
    layers: int = 4  # residual blocks, dilations 1, 2, 4, 8 (kernel 5: 61 frames seen)
    kernel: int = 5  # odd: centred in time
    dropout: float = 0.3  # few identities to learn from: a small, regularised network generalises better


@dataclass
class EmotionAugmentConfig:
    noise: float = 0.01  # std of Gaussian noise on canonical coordinates, face units (~0.2 px at 64 px): landmarker jitter


@dataclass
class EmotionConfig(RunConfig):
    name: str | None = None  # default emotion-<dataset folder name>
    window: int = 32  # training window, frames (1.3 s at 25 fps); validation and the bench score whole clips
    windows_per_clip: int = 16  # training windows drawn per clip per epoch
    model: EmotionNetConfig = field(default_factory=EmotionNetConfig)
    augment: EmotionAugmentConfig = field(default_factory=EmotionAugmentConfig)
    optim: ScorerOptimConfig = field(default_factory=ScorerOptimConfig)


class EmotionModule(ScorerModule):
    """Trains :class:`EmotionNet` with cross-entropy on noisy windows; validation accuracy per whole clip."""

    def __init__(self, *, net: dict | None = None, augment: dict | None = None, optim: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net_cfg = EmotionNetConfig(**(net or {}))
        self.aug_cfg = EmotionAugmentConfig(**(augment or {}))
        self.optim_cfg = ScorerOptimConfig(**(optim or {}))
        n = self.net_cfg
        self.net = EmotionNet(channels=n.channels, layers=n.layers, kernel=n.kernel, dropout=n.dropout)
        self.val_acc = MeanMetric()
        self.val_nll = MeanMetric()

    @classmethod
    def from_datamodule(cls, dm: Any, **sections: Any) -> EmotionModule:
        """From the config's sections; nothing to take from the data (the classes are always MEAD's eight)."""
        return cls(**sections)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x, label = batch["landmarks"], batch["label"]  # (B, W, 68, 2), (B,)
        x = x + self.aug_cfg.noise * torch.randn_like(x)
        logits = self.net(x)
        loss = F.cross_entropy(logits, label)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        self.log("train/acc", (logits.argmax(-1) == label).float().mean(), batch_size=len(x))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, label = batch  # one whole clip: (1, T, 68, 2), (1,)
        logits = self.net(x)
        self.val_acc.update((logits.argmax(-1) == label).float())
        self.val_nll.update(F.cross_entropy(logits, label))

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc.compute())
        self.log("val/nll", self.val_nll.compute())
        self.val_acc.reset()
        self.val_nll.reset()


def clip_accuracy(classifier: TrainedEmotionClassifier, readers: list[ClipReader]) -> dict[str, Any]:
    """The classifier on each labelled clip's ground-truth ``landmarks68``: ``acc`` (share of clips whose most
    probable emotion is the label), ``clips``, and ``majority`` (the share of the most common label: what always
    answering it scores, a fairer floor than chance 1/8 when half the clips are neutral)."""
    labels = [emotion_label(r.record.emotion) for r in readers]
    hits = [int(np.argmax(classifier.predict(np.asarray(r.landmarks68[: r.num_frames])))) == y
            for r, y in zip(readers, labels)]
    common = Counter(labels).most_common(1)
    return {"acc": float(np.mean(hits)) if hits else float("nan"), "clips": len(hits),
            "majority": common[0][1] / len(labels) if common else float("nan")}


def export_emotion(out: Path, trainer: L.Trainer, cfg: DictConfig) -> dict[str, Any]:
    """The registry's ``export`` hook: ``emotion.pt`` from the best checkpoint, with its accuracy on the val split's
    ground truth and, for information, on the test splits' (unseen identities; never used to select); returns those
    figures for ``done.json``."""
    dm = trainer.datamodule
    best = best_or_last(trainer, EmotionModule).eval()
    classifier = TrainedEmotionClassifier(best.net, name="eval")
    val = clip_accuracy(classifier, dm.val_readers)
    figures: dict[str, Any] = {f"val_{k}": v for k, v in val.items()}
    test = labelled_readers(dm.test_readers(), f"the test splits of {dm.root}")
    if test:
        figures.update({f"test_{k}": v for k, v in clip_accuracy(classifier, test).items()})
    figures.update({"chance": 1 / len(EMOTIONS), "steps": trainer.global_step,
                    "train_clips": dict(Counter(r.record.emotion for r in dm.train_readers)),
                    "train_seconds": trainer.lightning_module.train_seconds()})
    m = cfg.model
    net = {"channels": int(m.channels), "layers": int(m.layers), "kernel": int(m.kernel), "dropout": float(m.dropout)}
    blob = {"net": net, "state_dict": best.net.state_dict(), "run": out.name, "dataset": str(dm.root),
            "emotions": list(EMOTIONS), "val_acc": val["acc"], "test_acc": figures.get("test_acc"),
            "figures": figures}
    save_final(out / EMOTION_FILE, blob)
    print(f"\n{out / EMOTION_FILE}\n  accuracy on the ground-truth landmarks of held-out clips: val split "
          f"{val['acc']:.1%} of {val['clips']}" + (f", test splits {figures['test_acc']:.1%} of {figures['test_clips']} "
                                                   f"(most common label {figures['test_majority']:.0%})" if test else "")
          + f"; chance {1 / len(EMOTIONS):.1%}")
    return figures
