"""DreamTalk's lip expert (BASELINES.md item 5): a window of lower-face motion and its audio -> sync probability.

The expert reads motion, not video: the lower-face coefficients of the PCA motion space (``motion.py``, fitted on the
train split exactly as the denoiser fits it: the same deterministic computation, so with the same component counts
the two bases are identical) over ``model.window`` consecutive frames, and those frames' audio windows. Variants
(``model.variant``):

- ``style``: also conditioned on the style code of a style reference clip, from the expert's *own* small style encoder
  (the class of ``networks.StyleEncoder``, never the denoiser's weights): DreamTalk's style-aware expert, which lets
  an emotional speaking style keep its own mouth shapes;
- ``unconditional``: no style input at all (the network has no style encoder and never reads the clip).

**Objective: binary.** A training sample is one motion window with two audio windows *of the same clip*: the aligned
one (label 1) and one shifted by at least ``negatives.min_shift`` frames inside the sample's frame group (label 0);
binary cross-entropy on the logit, ``P_sync = sigmoid(logit)``. Negatives from the same clip make the expert judge
timing, not speaker or content. Validation: ``val/sync_acc``, the share of aligned windows scored above 0.5 and of
shifted windows (the largest shift the group allows, so figures compare across evaluations) scored below.

This is a training loss for the denoiser, so it is never the bench's sync scorer (``models/sync_expert.py``, frames
+ audio, trained into ``runs/scorers/syncnet-*``): separate run, seed, architecture and input.
:func:`load_lip_expert` refuses a scorer's file and any checkpoint not headed ``dreamtalk_lip_expert``;
:func:`build_denoiser` attaches the loaded, frozen expert to a ``dreamtalk`` denoiser through its
``attach_lip_expert`` hook when the denoiser's config names one (``lip_expert.checkpoint``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ...checkpoints import CheckpointError
from ... import runs
from ...config import ConfigError, RunConfig
from ...lit.base import OptimConfig, warmup_cosine
from .data import DreamTalkDataConfig
from .motion import MotionBasis, MotionConfig
from .networks import StyleEncoder, _mlp

MODEL_NAME = "dreamtalk_lip_expert"
Variant = Literal["style", "unconditional"]


@dataclass
class LipExpertNetConfig:
    variant: Variant = "style"
    window: int = 5  # frames scored together (SyncNet's 5 frames, 0.2 s)
    dim: int = 64
    heads: int = 2
    style_layers: int = 1  # the expert's own style encoder (variant style only)
    dropout: float = 0.0


@dataclass
class NegativesConfig:
    min_shift: int = 3  # frames: closer shifts overlap the aligned audio windows (±audio_context frames)


@dataclass
class LipExpertConfig(RunConfig):
    data: DreamTalkDataConfig = field(default_factory=DreamTalkDataConfig)
    model: LipExpertNetConfig = field(default_factory=LipExpertNetConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class LipExpertRef:
    """The denoiser's ``lip_expert:`` section: which trained expert gives the sync loss, and its weight λ_sync."""

    checkpoint: str | None = None  # a dreamtalk_lip_expert .ckpt, its run folder or run name; None: no sync loss
    weight: float = 0.1  # λ_sync (the paper gives none)


class LipExpertNet(nn.Module):
    """``mouth (B, W, L)`` lower-face coefficients, ``audio (B, W, K, A)``, optional ``style (B, D)`` -> logit (B,)."""

    def __init__(self, *, lower_dim: int, coeff_dim: int, audio_steps: int, audio_dim: int, variant: Variant = "style",
                 window: int = 5, dim: int = 64, heads: int = 2, style_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if variant not in ("style", "unconditional"):
            raise ConfigError(f"model.variant={variant!r}: style or unconditional ('none' is a denoiser without one)")
        self.variant, self.window = variant, window
        self.mouth = _mlp([window * lower_dim, dim, dim])
        self.audio_frame = nn.Sequential(nn.LayerNorm(audio_steps * audio_dim), nn.Linear(audio_steps * audio_dim, dim))
        self.audio = _mlp([window * dim, dim, dim])
        # unconditional: no style encoder exists, so the style clip cannot influence the score
        self.style_encoder = StyleEncoder(coeff_dim=coeff_dim, dim=dim, heads=heads, layers=style_layers, ff_mult=2,
                                          dropout=dropout) if variant == "style" else None
        self.head = _mlp([(4 if variant == "style" else 3) * dim, dim, 1])

    def style_code(self, coeffs: Tensor, mask: Tensor) -> Tensor | None:
        return None if self.style_encoder is None else self.style_encoder(coeffs, mask)

    def forward(self, mouth: Tensor, audio: Tensor, style: Tensor | None = None) -> Tensor:
        m = self.mouth(mouth.flatten(1))
        a = self.audio(self.audio_frame(audio.flatten(2)).flatten(1))
        parts = [m, a, m * a] + ([style] if self.style_encoder is not None else [])
        return self.head(torch.cat(parts, -1)).squeeze(-1)


class LipExpertModule(L.LightningModule):
    """Trains :class:`LipExpertNet` (binary: aligned vs shifted audio of the same clip); when frozen and attached to
    the denoiser, ``module(disp, audio, style_disp, style_mask)`` is the ``LipExpert`` the hook calls."""

    def __init__(self, *, num_points: int, lower_points: list[int], upper_points: list[int], audio_steps: int,
                 audio_dim: int, net: dict | None = None, motion: dict | None = None, negatives: dict | None = None,
                 optim: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        m = MotionConfig(**(motion or {}))
        self.motion = MotionBasis(num_points=num_points, lower_points=lower_points, upper_points=upper_points,
                                  lower_components=m.lower_components, upper_components=m.upper_components)
        self.net = LipExpertNet(lower_dim=m.lower_components, coeff_dim=self.motion.dim, audio_steps=audio_steps,
                                audio_dim=audio_dim, **(net or {}))
        self.neg_cfg, self.optim_cfg = NegativesConfig(**(negatives or {})), OptimConfig(**(optim or {}))
        self.val_acc = MeanMetric()

    @classmethod
    def from_datamodule(cls, dm, **kwargs: Any) -> LipExpertModule:
        """Shapes from the DataModule, the motion basis fitted on its train split as the denoiser fits it."""
        lower, upper = dm.face_parts()
        k, a = dm.audio_shape
        module = cls(num_points=dm.num_landmarks, lower_points=lower, upper_points=upper, audio_steps=k, audio_dim=a,
                     **kwargs)
        room = dm.hparams.window - module.net.window
        if room < module.neg_cfg.min_shift:
            raise ConfigError(f"data.window={dm.hparams.window} leaves shifts up to {room} frames for a model.window="
                              f"{module.net.window} expert; negatives.min_shift={module.neg_cfg.min_shift} needs more")
        module.motion.fit(dm.train_displacements())
        return module

    # -- scoring -------------------------------------------------------------------------------------------------

    def _style(self, style_disp: Tensor, style_mask: Tensor) -> Tensor | None:
        if self.net.style_encoder is None:  # unconditional: the clip is never read
            return None
        return self.net.style_code(self.motion.encode(style_disp), style_mask)

    def forward(self, disp: Tensor, audio: Tensor, style_disp: Tensor, style_mask: Tensor) -> Tensor:
        """``P_sync (B, n)`` of every ``window``-frame window of displacements ``(B, T, N, 2)`` (from the speaker's
        reference) with the aligned audio ``(B, T, K, A)``; style clip displacements ``(B, S, N, 2)`` and mask."""
        b, w = disp.shape[0], self.net.window
        lower = self.motion.lower.encode(disp)  # (B, T, L)
        mouth = lower.unfold(1, w, 1).transpose(-1, -2)  # (B, n, W, L)
        audio_w = audio.unfold(1, w, 1).permute(0, 1, 4, 2, 3)  # (B, n, W, K, A)
        n = mouth.shape[1]
        style = self._style(style_disp, style_mask)
        style = None if style is None else style.repeat_interleave(n, 0)
        return self.net(mouth.flatten(0, 1), audio_w.flatten(0, 1), style).sigmoid().unflatten(0, (b, n))

    # -- training ------------------------------------------------------------------------------------------------

    def _starts(self, b: int, t: int, *, train: bool) -> tuple[Tensor, Tensor]:
        """(aligned, shifted) window starts per sample: shifted at least ``min_shift`` frames from aligned."""
        room, lo = t - self.net.window, self.neg_cfg.min_shift
        if not train:  # fixed: the first window against the last
            return torch.zeros(b, dtype=torch.long), torch.full((b,), room, dtype=torch.long)
        pos, neg = [], []
        for _ in range(b):
            s = int(torch.randint(room + 1, ()))
            choices = [x for x in range(room + 1) if abs(x - s) >= lo]
            pos.append(s)
            neg.append(choices[int(torch.randint(len(choices), ()))])
        return torch.tensor(pos), torch.tensor(neg)

    def logits(self, batch: dict, *, train: bool) -> tuple[Tensor, Tensor]:
        """(aligned, shifted) logits ``(B,)`` of a batch's groups (see the module doc)."""
        lower = self.motion.lower.encode(batch["landmarks"] - batch["ref_landmarks"][:, None])  # (B, T, L)
        b, t = lower.shape[:2]
        pos, neg = (s.to(lower.device) for s in self._starts(b, t, train=train))
        frames = torch.arange(self.net.window, device=lower.device)
        rows = torch.arange(b, device=lower.device)[:, None]
        mouth = lower[rows, pos[:, None] + frames]
        style = self._style(batch["style_landmarks"] - batch["style_ref_landmarks"][:, None], batch["style_mask"])
        audio = batch["audio"]
        return (self.net(mouth, audio[rows, pos[:, None] + frames], style),
                self.net(mouth, audio[rows, neg[:, None] + frames], style))

    def loss(self, batch: dict, *, train: bool = True) -> tuple[Tensor, Tensor]:
        """(binary cross-entropy, accuracy) over the batch's aligned and shifted windows."""
        pos, neg = self.logits(batch, train=train)
        logits = torch.cat([pos, neg])
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        return (F.binary_cross_entropy_with_logits(logits, labels),
                ((logits > 0).float() == labels).float().mean())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, acc = self.loss(batch)
        b = batch["audio"].shape[0]
        self.log_dict({"train/loss": loss, "train/sync_acc": acc}, batch_size=b)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=b)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, acc = self.loss(batch, train=False)
        self.val_acc.update(acc, weight=batch["audio"].shape[0])

    def on_validation_epoch_end(self) -> None:
        self.log("val/sync_acc", self.val_acc.compute(), prog_bar=True)
        self.val_acc.reset()

    def configure_optimizers(self) -> dict:
        o = self.optim_cfg
        opt = torch.optim.AdamW(self.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, warmup_steps=o.warmup_steps,
                                                                min_lr_ratio=o.min_lr_ratio, trainer=self._trainer)}


# -- the denoiser's side ------------------------------------------------------------------------------------------


def load_lip_expert(ref: str, *, runs_root: str | Path = "runs") -> LipExpertModule:
    """The frozen lip expert named by ``ref``; a ConfigError for the bench's sync scorer (a loss network must never
    be the network that scores the bench) and for any checkpoint not headed ``dreamtalk_lip_expert``."""
    from ... import registry
    from ...metrics.scorers import refuse_scorer

    # checked before and after resolving, so a scorer's run folder is refused for what it is, not for lacking a .ckpt
    refuse_scorer(ref, runs_root, what="lip_expert.checkpoint", model=MODEL_NAME)
    path = runs.run_checkpoint(ref, runs_root, model=MODEL_NAME, key="lip_expert.checkpoint")
    refuse_scorer(path, runs_root, what="lip_expert.checkpoint", model=MODEL_NAME, given=ref)
    try:
        expert = registry.load_checkpoint(path, expected=MODEL_NAME)
    except CheckpointError as err:
        raise ConfigError(f"lip_expert.checkpoint={ref!r}: {err}") from err
    return expert.eval().requires_grad_(False)


def build_denoiser(spec, cfg: DictConfig, dm) -> L.LightningModule:
    """The registry's ``build`` for ``dreamtalk``: the denoiser as usual, with the frozen lip expert of its
    ``lip_expert:`` section attached (none: no sync loss, DreamTalk's ``none`` variant)."""
    module = replace(spec, build=None).build_module(cfg, dm)
    ref = LipExpertRef(**dict(cfg.get("lip_expert") or {}))
    module.hparams["lip_expert"] = {"variant": "none"}  # saved with the run: the bench's rows say which expert
    if ref.checkpoint:
        expert = load_lip_expert(ref.checkpoint, runs_root=cfg.runs_root)
        module.attach_lip_expert(expert, weight=ref.weight)
        module.hparams["lip_expert"] = {"variant": expert.net.variant, "checkpoint": str(ref.checkpoint),
                                        "weight": float(ref.weight)}
        mine, theirs = module.motion.lower.components, expert.motion.lower.components
        same = mine.shape == theirs.shape and torch.allclose(mine, theirs, atol=1e-5)
        # a different basis still works (the hook passes displacements), but the expert then sees a projection
        print(f"dreamtalk: sync loss from lip expert {ref.checkpoint} (λ_sync={ref.weight}, lower-face basis "
              f"{'the same as' if same else 'DIFFERENT from'} the denoiser's)", flush=True)
    return module


__all__ = ["LipExpertConfig", "LipExpertModule", "LipExpertNet", "LipExpertNetConfig", "LipExpertRef",
           "NegativesConfig", "build_denoiser", "load_lip_expert"]
