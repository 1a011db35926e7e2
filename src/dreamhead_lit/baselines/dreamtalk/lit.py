"""DreamTalk's denoising network as a LightningModule on the shared diffusion core (``lit/base.py``, ``diffusion/``).

What it keeps of DreamTalk (BASELINES.md, items 1-4): diffusion over per-frame motion coefficients (``motion.py``,
the PCA stand-in for 3DMM expression) with the x0-prediction target; the frame-wise denoiser with separate upper- and
lower-face decoders and the style encoder trained with it (``networks.py``); classifier-free guidance that drops the
*style* (the style code is replaced by a learned null code with probability ``diffusion.cond_drop_prob``; the
guidance scale sets how strongly the style is expressed); DDIM with 10 steps at inference. EMA weights sample, as
for the stages.

The lip expert's sync loss (item 5, ``λ_sync · (−log P_sync)``) has its hook here (:meth:`attach_lip_expert`,
:meth:`lip_sync_loss`); the expert itself (``lip_expert.py``, named by the config's ``lip_expert:`` section) and the
style predictor (item 6) are separate models.

Validation: ``val/lmd_mouth`` (M-LMD, pixels at the dataset resolution, 68 points, each frame's set centred:
``metrics.lmd.landmark_distance``) of the landmarks sampled from audio + style clip, beside the same for the
speaker's reference held still (``*_static``) and for the true motion projected on the basis (``*_basis``: the floor
the motion space sets).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ...config import RunConfig
from ...data.audio import build_feature_extractor, windows_for_frames
from ...diffusion import SamplerName, drop_condition
from ...lit.a2l import to_pixels
from ...lit.base import DiffusionConfig, DiffusionLitModule, OptimConfig
from ...metrics.lmd import landmark_distance
from .data import DreamTalkDataConfig
from .lip_expert import LipExpertRef
from .motion import MotionBasis, MotionConfig
from .networks import DreamTalkNet

MOUTH_68, FACE_68 = list(range(48, 68)), list(range(68))


@dataclass
class DenoiserConfig:
    dim: int = 128  # d_model (the authors: 256)
    heads: int = 4
    audio_layers: int = 2  # transformer layers over a frame's audio window (the authors: 3)
    decoder_layers: int = 2  # per face part (the authors: 3)
    style_layers: int = 2  # style encoder (the authors: 3)
    ff_mult: int = 4
    dropout: float = 0.1
    token_steps: int = 2  # log-mel steps (100 Hz) per audio token: 50 tokens/s, the rate of wav2vec2


@dataclass
class DreamTalkDiffusionConfig(DiffusionConfig):
    sampler: SamplerName = "ddim"  # the paper: DDIM with 10 steps
    sample_steps: int = 10
    guidance_scale: float = 1.0  # on the style; the authors' inference default (CF_GUIDANCE.SCALE)
    cond_drop_prob: float = 0.1  # style replaced by the null code in training (CF_GUIDANCE.NULL_PROB)


@dataclass
class DreamTalkValidationConfig:
    max_batches: int = 2  # validation batches that are sampled (sampling is the costly part)
    seed: int = 1234  # fixed noise, so validation figures compare across evaluations


@dataclass
class DreamTalkConfig(RunConfig):
    data: DreamTalkDataConfig = field(default_factory=DreamTalkDataConfig)
    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    diffusion: DreamTalkDiffusionConfig = field(default_factory=DreamTalkDiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: DreamTalkValidationConfig = field(default_factory=DreamTalkValidationConfig)
    lip_expert: LipExpertRef = field(default_factory=LipExpertRef)  # attached by lip_expert.build_denoiser


class LipExpert(Protocol):
    """What :meth:`DreamTalkDiffusion.lip_sync_loss` calls: the predicted displacements from the speaker's reference
    of a group of consecutive frames ``(B, T, N, 2)``, their audio windows ``(B, T, K, A)``, and the style clip's
    displacements ``(B, S, N, 2)`` with its mask ``(B, S)`` -> ``P_sync`` (any shape, e.g. one per window). The
    expert gets the style *clip*, not the denoiser's style code: its style encoder is its own."""

    def __call__(self, disp: Tensor, audio: Tensor, style_disp: Tensor, style_mask: Tensor) -> Tensor: ...


class DreamTalkDiffusion(DiffusionLitModule):
    """Audio + style clip -> per-frame motion coefficients, by conditional diffusion (x0 target)."""

    STAGE = "dreamtalk"

    def __init__(self, *, num_points: int, lower_points: list[int], upper_points: list[int], audio_steps: int,
                 audio_dim: int, index68: list[int], resolution: int, audio_feature: str = "logmel80",
                 audio_context: int = 2, net: dict | None = None, motion: dict | None = None,
                 diffusion: dict | None = None, optim: dict | None = None, validation: dict | None = None,
                 lip_expert: dict | None = None) -> None:
        super().__init__(diffusion=DreamTalkDiffusionConfig(**(diffusion or {})), optim=optim or {})
        # ``lip_expert``: what gave the sync loss in training ({"variant": style | unconditional | none, "checkpoint",
        # "weight"}), recorded by lip_expert.build_denoiser for the bench's rows; None: not recorded (older runs)
        self.save_hyperparameters()
        self.motion_cfg = MotionConfig(**(motion or {}))
        self.val_cfg = DreamTalkValidationConfig(**(validation or {}))
        self.index68, self.resolution = list(index68), resolution
        self.motion = MotionBasis(num_points=num_points, lower_points=lower_points, upper_points=upper_points,
                                  lower_components=self.motion_cfg.lower_components,
                                  upper_components=self.motion_cfg.upper_components)
        lower, upper = self.motion.dims
        self.net = DreamTalkNet(lower_dim=lower, upper_dim=upper, audio_steps=audio_steps, audio_dim=audio_dim,
                                **(net or {}))
        self.init_diffusion()
        # the frozen lip expert lives outside the module tree: never trained, never in this model's checkpoints
        self._lip_expert: dict[str, Any] = {}
        self.val_metrics = nn.ModuleDict({k: MeanMetric() for k in (
            "lmd_mouth", "lmd_face", "lmd_mouth_static", "lmd_face_static", "lmd_mouth_basis", "loss")})

    @classmethod
    def from_datamodule(cls, dm, *, motion: dict | None = None, **kwargs: Any) -> DreamTalkDiffusion:
        """Build with the DataModule's shapes and fit the motion basis on its train split (``dm.setup()`` first)."""
        lower, upper = dm.face_parts()
        k, a = dm.audio_shape
        index68 = list(range(68)) if dm.hparams.landmark_set == "68" else list(dm.ctx.topology.index68)
        module = cls(num_points=dm.num_landmarks, lower_points=lower, upper_points=upper, audio_steps=k, audio_dim=a,
                     index68=index68, resolution=dm.ctx.resolution, audio_feature=dm.hparams.audio_feature,
                     audio_context=dm.hparams.audio_context, motion=motion, **kwargs)
        module.motion.fit(dm.train_displacements())
        module.data_info = dm.describe()
        print(f"dreamtalk motion basis (train split): {module.motion.summary()}", flush=True)
        return module

    # -- motion <-> landmarks ------------------------------------------------------------------------------------

    def encode_motion(self, landmarks: Tensor, ref: Tensor) -> Tensor:
        """Canonical landmarks ``(B, T, N, 2)`` and the speaker's reference ``(B, N, 2)`` -> ``(B, T, C)``."""
        return self.motion.encode(landmarks - ref[:, None])

    def decode_motion(self, coeffs: Tensor, ref: Tensor) -> Tensor:
        """``(B, T, C)`` -> canonical landmarks ``(B, T, N, 2)``."""
        return ref[:, None] + self.motion.decode(coeffs)

    def style_code(self, batch: dict) -> Tensor:
        """The style code ``(B, D)`` of the batch's style clips."""
        coeffs = self.encode_motion(batch["style_landmarks"], batch["style_ref_landmarks"])  # (B, S, C)
        return self.net.encode_style(coeffs, batch["style_mask"])

    # -- training ------------------------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0 = self.encode_motion(batch["landmarks"], batch["ref_landmarks"])  # (B, T, C)
        style = self.style_code(batch)
        drop = drop_condition(style, self.diffusion_cfg.cond_drop_prob)  # classifier-free guidance on the style
        out = self.diffusion.training_losses(self.net, x0, extra_args={"audio": batch["audio"], "style": style,
                                                                        "drop": drop})
        loss, logs = out["loss"], {"train/diffusion": out["loss"]}
        sync = self.lip_sync_loss(out["x0_hat"], batch)
        if sync is not None:  # DreamTalk: λ_denoise · L_denoise + λ_sync · (−log P_sync)
            loss = loss + self._lip_expert["weight"] * sync
            logs["train/sync"] = sync
        logs["train/loss"] = loss
        b = x0.shape[0]
        self.log_dict(logs, batch_size=b)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=b)
        return loss

    def attach_lip_expert(self, expert: LipExpert, *, weight: float) -> None:
        """Add ``weight · (−log P_sync)`` of a frozen lip expert to the training loss (DreamTalk's style-aware lip
        expert; the paper gives no λ_sync). The expert is put in eval mode with gradients off and is not saved with
        this model: the run that trains the denoiser names the expert's checkpoint in its config."""
        if isinstance(expert, nn.Module):
            expert.eval().requires_grad_(False)
        self._lip_expert = {"expert": expert, "weight": float(weight)}

    def lip_sync_loss(self, x0_hat: Tensor, batch: dict) -> Tensor | None:
        """``−log P_sync`` (mean) of the predicted motion under the attached lip expert; ``None`` without one.
        Gradients reach the denoiser through ``x0_hat``; the expert reads motion as displacements, so it may carry
        its own basis (fitted the same way, it is the same one)."""
        if not self._lip_expert:
            return None
        expert = self._lip_expert["expert"]
        if isinstance(expert, nn.Module):  # outside the module tree: Lightning does not move it
            expert.to(x0_hat.device)
        style_disp = batch["style_landmarks"] - batch["style_ref_landmarks"][:, None]
        p = expert(self.motion.decode(x0_hat), batch["audio"], style_disp, batch["style_mask"])
        return -p.clamp_min(1e-6).log().mean()

    # -- sampling ------------------------------------------------------------------------------------------------

    def sample_motion(self, batch: dict, *, style: Tensor | None = None, generator: torch.Generator | None = None,
                      **kwargs: Any) -> Tensor:
        """Sample coefficients ``(B, T, C)`` for a batch (``audio``, and the style clip unless ``style`` is given),
        with the configured sampler, steps and guidance (or ``sampler=``, ``steps=``, ``guidance_scale=``,
        ``noise=``), using the EMA weights. ``style``: a style code ``(B, D)`` (e.g. from the style predictor), or
        the string ``"none"`` for the null style (no style reference: guidance then has nothing to amplify)."""
        b, t = batch["audio"].shape[:2]
        no = torch.zeros(b, dtype=torch.bool, device=batch["audio"].device)
        if isinstance(style, str):
            if style != "none":
                raise ValueError(f"style={style!r}: a style code tensor, 'none' or None (the batch's style clip)")
            style, drop = self.net.null_style.detach().expand(b, -1), ~no
        else:
            drop = no
            if style is None:
                with self.ema_weights(), torch.no_grad():
                    style = self.style_code(batch)
        return self.sample_x0((b, t, self.motion.dim), cond={"audio": batch["audio"], "style": style, "drop": drop},
                              uncond={"drop": ~no}, generator=generator, **kwargs)

    def audio_windows(self, audio: np.ndarray, num_frames: int | None = None) -> Tensor:
        """Each frame's audio window ``(F, K, A)`` of 16 kHz mono ``audio``, cut as in training."""
        hp = self.hparams
        total = num_frames or max(1, int(np.ceil(len(audio) / 640)))
        return windows_for_frames(np.asarray(audio, dtype=np.float32), total, build_feature_extractor(hp.audio_feature),
                                  context=hp.audio_context).to(self.device)

    @torch.no_grad()
    def generate(self, audio: np.ndarray, *, ref_landmarks: np.ndarray, style_landmarks: np.ndarray | None = None,
                 style_ref_landmarks: np.ndarray | None = None, style: Tensor | str | None = None,
                 num_frames: int | None = None, seed: int = 0, **kwargs: Any) -> Tensor:
        """Canonical landmarks ``(F, N, 2)`` for 16 kHz mono ``audio`` of any length, in one pass (the denoiser is
        frame-wise): ``ref_landmarks (N, 2)`` the speaker's neutral reference; the style from ``style_landmarks
        (S, N, 2)``, a style clip's canonical landmarks with ``style_ref_landmarks`` its speaker's reference (default:
        the same), or from ``style``: a code ``(D,)`` / ``(1, D)`` (the style predictor's) or ``"none"``."""
        if (style is None) == (style_landmarks is None):
            raise ValueError("give exactly one of style_landmarks (a style clip) and style (a code or 'none')")
        as_tensor = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=self.device)[None]  # noqa: E731
        ref = as_tensor(ref_landmarks)
        batch = {"audio": self.audio_windows(audio, num_frames)[None]}
        if style_landmarks is not None:
            clip = as_tensor(style_landmarks)
            batch.update(style_landmarks=clip,
                         style_ref_landmarks=ref if style_ref_landmarks is None else as_tensor(style_ref_landmarks),
                         style_mask=torch.ones(clip.shape[:2], dtype=torch.bool, device=self.device))
        elif isinstance(style, Tensor):
            style = style.to(self.device, torch.float32).reshape(1, -1)
        coeffs = self.sample_motion(batch, style=style, generator=torch.Generator().manual_seed(seed), **kwargs)
        return self.decode_motion(coeffs, ref)[0]

    # -- validation ----------------------------------------------------------------------------------------------

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x0 = self.encode_motion(batch["landmarks"], batch["ref_landmarks"])
        gen = torch.Generator(device="cpu").manual_seed(self.val_cfg.seed + batch_idx)
        no = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
        with self.ema_weights():
            cond = {"audio": batch["audio"], "style": self.style_code(batch), "drop": no}
            loss = self.diffusion.training_losses(self.net, x0, extra_args=cond, generator=gen)["loss"]
        self.val_metrics["loss"].update(loss)
        if batch_idx >= self.val_cfg.max_batches:
            return
        for k, v in self.evaluate_batch(batch, generator=gen).items():
            self.val_metrics[k].update(v)

    def evaluate_batch(self, batch: dict, *, generator: torch.Generator | None = None, **kwargs: Any) -> dict:
        """Per-group LMD (pixels at the dataset resolution, 68 points) of the sampled landmarks, of the reference held
        still and of the true motion projected on the basis."""
        ref, true = batch["ref_landmarks"], batch["landmarks"]
        candidates = {"": self.decode_motion(self.sample_motion(batch, generator=generator, **kwargs), ref),
                      "_static": ref[:, None].expand_as(true),
                      "_basis": self.decode_motion(self.encode_motion(true, ref), ref)}
        to_px = lambda x: to_pixels(x, batch["to_image"])[..., self.index68, :]  # noqa: E731  (B, T, 68, 2)
        true_px = to_px(true)
        out = {}
        for suffix, landmarks in candidates.items():
            pred_px = to_px(landmarks)
            out[f"lmd_mouth{suffix}"] = landmark_distance(pred_px, true_px, MOUTH_68)
            if suffix != "_basis":
                out[f"lmd_face{suffix}"] = landmark_distance(pred_px, true_px, FACE_68)
        return out

    def on_validation_epoch_end(self) -> None:
        values = self.log_validation_metrics()
        if "lmd_mouth" in values:
            self.log("val/lmd_mouth_vs_static", values["lmd_mouth"] / values["lmd_mouth_static"].clamp_min(1e-8))


def motion_figures(out: Path, trainer: L.Trainer, cfg: Any) -> dict:
    """The registry's ``export`` hook: the motion basis's size and explained variance, for ``done.json``."""
    return {"motion_basis": trainer.lightning_module.motion.summary()}


__all__ = ["DenoiserConfig", "DreamTalkConfig", "DreamTalkDiffusion", "DreamTalkDiffusionConfig",
           "DreamTalkValidationConfig", "LipExpert", "motion_figures"]
