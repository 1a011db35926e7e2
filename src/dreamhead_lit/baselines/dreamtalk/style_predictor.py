"""DreamTalk's diffusion style predictor (BASELINES.md item 6): the style code from audio and the portrait alone, so
the denoiser can speak in a style without a style reference clip.

**What is predicted.** The style code ``(D,)`` (D = the denoiser's ``model.dim``) that a trained, frozen ``dreamtalk``
denoiser's style encoder gives a style clip (``DreamTalkDiffusion.style_code`` under its EMA weights). Each training
sample's target is the code of its style clip: another clip of the same identity and emotion, or a window of its own
clip (``data.py``), so the predictor learns the speaker's and the emotion's style, not one clip's motion.

**Conditions.** (a) The audio of a stretch of the target clip: each frame's audio window, cut exactly as the denoiser
cuts it, encoded by a small transformer over the stretch's frames and attention-pooled (the class of
``networks.StyleEncoder``, its own weights). (b) The portrait: the canonical landmarks ``(N, 2)`` of *one* frame of
the target clip (a random frame in training, the clip's first frame in validation and at generation, which is what
the bench gives: the test clip's first frame); they carry the identity's face shape and whatever expression that
frame shows. The paper conditions on the portrait *image*; this framework's DreamTalk† works on landmarks, so the
portrait's landmarks stand in for it, as the PCA landmark motion stands in for 3DMM expression.

**Diffusion.** On the shared core (``lit/base.py``), as the denoiser: x0 target, linear betas, EMA weights sample,
classifier-free guidance that drops both conditions together (to learned null vectors). The code is diffused after
centring on the train codes' mean and dividing by one scale (their root mean variance), so the target has unit
variance on average and the L2 geometry of the codes is kept. The network is an MLP of adaLN-modulated residual
blocks over the noisy code, conditioned on the step, the audio summary and the portrait.

**Data must match the denoiser's.** The targets are codes of the denoiser's encoder on motion in the denoiser's PCA
basis, so the predictor refuses (ConfigError) a denoiser whose data differs from its own: landmark set, topology,
audio features, face parts, or a motion basis that the predictor's train split does not reproduce (it is refitted
here, in the same pass that gathers the code and portrait statistics).

**Validation.** ``val/style_dist``: the mean L2 between sampled and target codes divided by the mean L2 between
target codes of *different* style clips (so 1 means "no better than a random other clip's style"); the same for the
train codes' mean (``val/style_dist_mean``, the best constant guess) and for the denoiser's null code
(``val/style_dist_null``, DreamTalk's "no style" variant).

For the bench: :meth:`DreamTalkStylePredictor.predict_style` gives a code that
``DreamTalkDiffusion.generate(audio, ref_landmarks=..., style=code)`` accepts; :meth:`check_denoiser` refuses a
denoiser other than the one whose codes the predictor learned.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import CatMetric, MeanMetric

from ...checkpoints import CheckpointError
from ...config import ConfigError, RunConfig, to_container
from ...data.audio import build_feature_extractor, windows_for_frames
from ...data.clip import SAMPLES_PER_FRAME
from ...diffusion import SamplerName, drop_condition
from ...lit.base import DiffusionConfig, DiffusionLitModule, OptimConfig
from ...models.layers import TimestepEmbedding
from .data import DreamTalkDataConfig, DreamTalkDataModule, StyleClipDataset, dreamtalk_datamodule
from ...runs import run_checkpoint
from .motion import MotionBasis
from .networks import StyleEncoder, _mlp

MODEL_NAME = "dreamtalk_style_predictor"
DENOISER = "dreamtalk"


# -- config ---------------------------------------------------------------------------------------------------------


@dataclass
class DenoiserRef:
    """The ``denoiser:`` section: the trained ``dreamtalk`` run whose style codes are the targets."""

    checkpoint: str | None = None  # a run name under runs/dreamtalk/, a run folder or a .ckpt; required


@dataclass
class StylePredictorNetConfig:
    dim: int = 128  # width of the audio encoder, the portrait MLP and the residual blocks
    heads: int = 4
    audio_layers: int = 2  # transformer layers over the stretch's frames
    blocks: int = 4  # adaLN residual MLP blocks over the noisy code
    ff_mult: int = 4
    dropout: float = 0.0


@dataclass
class StylePredictorDiffusionConfig(DiffusionConfig):
    sampler: SamplerName = "ddim"
    sample_steps: int = 50  # one (D,) vector per clip: 50 steps cost nothing beside the denoiser's sampling
    guidance_scale: float = 1.0
    cond_drop_prob: float = 0.1  # audio and portrait dropped together, so guidance can be tried at the bench


@dataclass
class StylePredictorValidationConfig:
    seed: int = 1234  # fixed noise, so validation figures compare across evaluations


@dataclass
class StylePredictorConfig(RunConfig):
    data: DreamTalkDataConfig = field(default_factory=DreamTalkDataConfig)
    denoiser: DenoiserRef = field(default_factory=DenoiserRef)
    model: StylePredictorNetConfig = field(default_factory=StylePredictorNetConfig)
    diffusion: StylePredictorDiffusionConfig = field(default_factory=StylePredictorDiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: StylePredictorValidationConfig = field(default_factory=StylePredictorValidationConfig)


# -- data -----------------------------------------------------------------------------------------------------------


class PortraitStyleDataset(StyleClipDataset):
    """DreamTalk samples (``data.StyleClipDataset``) plus the portrait: ``portrait_landmarks`` float32 (N, 2), the
    canonical landmarks of one frame of the target clip (random in training, frame 0 in evaluation, as the bench
    gives), and ``portrait_frame`` int64 () which frame it is."""

    def _item(self, index: int) -> dict:
        item = super()._item(index)
        reader = self.readers[int(item["clip"])]
        rng = self._rng()
        t = int(rng.integers(reader.num_frames)) if rng is not None else 0
        portrait = self.canonical(reader, t, t + 1)[0][0]
        return {**item, "portrait_landmarks": torch.from_numpy(portrait),
                "portrait_frame": torch.tensor(t, dtype=torch.long)}


class StylePredictorDataModule(DreamTalkDataModule):
    """The DreamTalk DataModule serving :class:`PortraitStyleDataset` samples."""

    dataset_class = PortraitStyleDataset


def style_predictor_datamodule(cfg: DictConfig) -> StylePredictorDataModule:
    """The registry's ``datamodule`` hook."""
    return dreamtalk_datamodule(cfg, cls=StylePredictorDataModule)


# -- network --------------------------------------------------------------------------------------------------------


class _AdaLNBlock(nn.Module):
    """A residual MLP block whose normalised input is shifted and scaled, and whose output is gated, by the
    conditioning vector (adaLN, as in DiT)."""

    def __init__(self, dim: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.modulation = nn.Linear(dim, 3 * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ff_mult * dim, dim))

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, -1)  # (B, D) each
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class StylePredictorNet(nn.Module):
    """The style predictor's denoiser: ``x_t (B, C)``, ``t (B,)``, the encoded audio ``(B, dim)`` and portrait
    ``(B, dim)``, ``drop (B,)`` -> ``(B, C)`` (C = the style code's size). The encoders run once per sample, outside
    the sampling loop: :meth:`encode_audio`, :meth:`encode_portrait`."""

    def __init__(self, *, code_dim: int, audio_steps: int, audio_dim: int, num_points: int, dim: int = 128,
                 heads: int = 4, audio_layers: int = 2, blocks: int = 4, ff_mult: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.audio_norm = nn.LayerNorm(audio_steps * audio_dim)  # log-mel bins differ in scale
        # a frame's flattened window is its token: transformer over the stretch's frames, attention pooling
        self.audio_encoder = StyleEncoder(coeff_dim=audio_steps * audio_dim, dim=dim, heads=heads, layers=audio_layers,
                                          ff_mult=ff_mult, dropout=dropout)
        self.portrait_encoder = _mlp([2 * num_points, dim, dim])
        self.null_audio = nn.Parameter(torch.zeros(dim))  # classifier-free guidance: both conditions dropped together
        self.null_portrait = nn.Parameter(torch.zeros(dim))
        self.time = TimestepEmbedding(dim)
        self.cond = _mlp([2 * dim, dim, dim])
        self.inp = nn.Linear(code_dim, dim)
        self.blocks = nn.ModuleList(_AdaLNBlock(dim, ff_mult, dropout) for _ in range(blocks))
        self.out_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, code_dim)
        nn.init.zeros_(self.out.weight)  # the first prediction is the train codes' mean (the normalised code's 0)
        nn.init.zeros_(self.out.bias)

    def encode_audio(self, audio: Tensor, mask: Tensor | None = None) -> Tensor:
        """Each frame's audio window ``(B, T, K, A)`` (+ ``mask (B, T)``) -> summary ``(B, dim)``."""
        return self.audio_encoder(self.audio_norm(audio.flatten(2)), mask)

    def encode_portrait(self, portrait: Tensor) -> Tensor:
        """Normalised portrait landmarks ``(B, N, 2)`` -> ``(B, dim)``."""
        return self.portrait_encoder(portrait.flatten(1))

    def forward(self, x_t: Tensor, t: Tensor, *, audio_code: Tensor, portrait_code: Tensor, drop: Tensor) -> Tensor:
        audio_code = torch.where(drop[:, None], self.null_audio.expand_as(audio_code), audio_code)  # (B, dim)
        portrait_code = torch.where(drop[:, None], self.null_portrait.expand_as(portrait_code), portrait_code)
        c = F.silu(self.cond(torch.cat([audio_code, portrait_code], -1)) + self.time(t))  # (B, dim)
        h = self.inp(x_t)  # (B, dim)
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.out_norm(h))  # (B, C)


# -- helpers --------------------------------------------------------------------------------------------------------


def mean_distance_across_groups(codes: Tensor, groups: Tensor, *, max_items: int = 4096) -> Tensor:
    """Mean L2 distance between codes ``(M, D)`` of different groups ``(M,)`` (pairs within a group are left out);
    NaN with fewer than two groups. More than ``max_items`` codes: an evenly spaced subset."""
    if len(codes) > max_items:
        keep = torch.linspace(0, len(codes) - 1, max_items).round().long()
        codes, groups = codes[keep], groups[keep]
    other = groups[:, None] != groups[None, :]
    if not other.any():
        return torch.tensor(float("nan"), device=codes.device)
    return torch.cdist(codes.double(), codes.double())[other].mean().float()


def stretch_starts(num_frames: int, length: int) -> list[int]:
    """Starts of the stretches of ``length`` frames that cover ``num_frames`` frames (the last one aligned to the
    end, as validation windows are cut); one stretch when the audio is no longer than that."""
    if num_frames <= length:
        return [0]
    starts = list(range(0, num_frames - length + 1, length))
    return starts if starts[-1] == num_frames - length else [*starts, num_frames - length]


def style_fingerprint(denoiser) -> str:
    """A short hash of what makes a denoiser's style codes: its motion basis, its style encoder and null code (the
    weights it samples with). A predictor is only valid with the denoiser whose codes it learned."""
    digest = hashlib.sha256()
    with denoiser.ema_weights():
        tensors = {**{f"motion.{k}": v for k, v in denoiser.motion.state_dict().items()},
                   **{f"style.{k}": v for k, v in denoiser.net.style_encoder.state_dict().items()},
                   "null_style": denoiser.net.null_style}
        for name in sorted(tensors):
            digest.update(name.encode())
            digest.update(tensors[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def same_basis(a: MotionBasis, b: MotionBasis, *, atol: float = 1e-4) -> bool:
    """Whether two motion bases map displacements to the same coefficients (to ``atol``): the same points, means,
    scales and spanned subspaces (projectors, so a near-degenerate pair of components may swap)."""
    for pa, pb in zip(a.parts(), b.parts()):
        if pa.components.shape != pb.components.shape or not torch.equal(pa.points, pb.points):
            return False
        proj_a, proj_b = pa.components.T @ pa.components, pb.components.T @ pb.components
        if not (torch.allclose(pa.mean, pb.mean, atol=atol) and torch.allclose(proj_a, proj_b, atol=atol)
                and torch.allclose(pa.scale, pb.scale, rtol=1e-3, atol=0)):
            return False
    return True


def data_differences(denoiser, dm: DreamTalkDataModule) -> list[str]:
    """What differs between the denoiser's data (its checkpoint's ``data_info`` and motion basis points) and the
    DataModule's: landmark set and topology, audio features, number of points, face parts. Empty: the same."""
    info, mine = denoiser.data_info or {}, dm.describe()
    out = [f"{key}: {info[key]!r} for the denoiser, {mine[key]!r} here"
           for key in ("landmark_set", "audio_feature", "audio_context") if key in info and info[key] != mine[key]]
    out += [f"{key} differs" for key in ("landmark_topology", "point_index") if key in info and info[key] != mine[key]]
    if denoiser.motion.num_points != dm.num_landmarks:
        out.append(f"{denoiser.motion.num_points} landmarks for the denoiser, {dm.num_landmarks} here")
    elif [p.points.tolist() for p in denoiser.motion.parts()] != list(dm.face_parts()):
        out.append("the lower/upper face split differs")
    return out


# -- the LightningModule --------------------------------------------------------------------------------------------


class DreamTalkStylePredictor(DiffusionLitModule):
    """Audio + portrait landmarks -> a ``dreamtalk`` denoiser's style code, by conditional diffusion (x0 target).

    The frozen denoiser that gives the training targets is attached with :meth:`attach_denoiser` and lives outside
    the module tree (never trained, never in this model's checkpoints); generation needs only this checkpoint.
    """

    STAGE = MODEL_NAME

    def __init__(self, *, code_dim: int, num_points: int, audio_steps: int, audio_dim: int, audio_frames: int,
                 audio_feature: str = "logmel80", audio_context: int = 2, denoiser: dict | None = None,
                 net: dict | None = None, diffusion: dict | None = None, optim: dict | None = None,
                 validation: dict | None = None) -> None:
        super().__init__(diffusion=StylePredictorDiffusionConfig(**(diffusion or {})), optim=optim or {})
        # ``denoiser``: which denoiser's codes were learned ({"checkpoint", "style_fingerprint", "style_frames"})
        self.save_hyperparameters()
        self.val_cfg = StylePredictorValidationConfig(**(validation or {}))
        self.net = StylePredictorNet(code_dim=code_dim, audio_steps=audio_steps, audio_dim=audio_dim,
                                     num_points=num_points, **(net or {}))
        self.init_diffusion()
        # fitted on the train split (fit_statistics) and saved with the checkpoint
        self.register_buffer("code_mean", torch.zeros(code_dim))
        self.register_buffer("code_scale", torch.ones(()))
        self.register_buffer("code_spread", torch.full((), float("nan")))  # mean L2 between train clips' codes
        self.register_buffer("portrait_mean", torch.zeros(num_points, 2))
        self.register_buffer("portrait_scale", torch.ones(()))
        self._denoiser: dict[str, Any] = {}
        self.val_metrics = nn.ModuleDict({k: MeanMetric() for k in ("style_l2", "style_l2_mean", "style_l2_null",
                                                                     "loss")})
        self.val_targets, self.val_groups = CatMetric(), CatMetric()  # for the spread of the targets
        self._warned_spread = False

    @classmethod
    def from_datamodule(cls, dm: DreamTalkDataModule, *, denoiser, checkpoint: str | None = None,
                        **kwargs: Any) -> DreamTalkStylePredictor:
        """Build for the frozen ``denoiser`` (a ``DreamTalkDiffusion``; ``checkpoint``: where it came from, recorded)
        with the DataModule's shapes (``dm.setup()`` first); refuses data that is not the denoiser's, and fits the
        code and portrait statistics on the train split."""
        problems = data_differences(denoiser, dm)
        if problems:
            raise ConfigError(_mismatch(checkpoint, denoiser, dm, "; ".join(problems)))
        k, a = dm.audio_shape
        module = cls(code_dim=denoiser.net.style_encoder.dim, num_points=dm.num_landmarks, audio_steps=k, audio_dim=a,
                     audio_frames=dm.hparams.window, audio_feature=dm.hparams.audio_feature,
                     audio_context=dm.hparams.audio_context,
                     denoiser={"checkpoint": checkpoint, "style_fingerprint": style_fingerprint(denoiser),
                               "style_frames": dm.style_frames}, **kwargs)
        module.attach_denoiser(denoiser)
        module.fit_statistics(dm, checkpoint=checkpoint)
        module.data_info = dm.describe()
        return module

    # -- the frozen denoiser -------------------------------------------------------------------------------------

    def attach_denoiser(self, denoiser) -> None:
        """Give the training targets from ``denoiser``'s style encoder, under its EMA weights (copied into it once)
        with gradients off."""
        if getattr(denoiser, "ema", None) is not None:
            denoiser.ema.copy_to(denoiser.net)
        self._denoiser = {"model": denoiser.eval().requires_grad_(False)}

    def _frozen_denoiser(self):
        if not self._denoiser:
            raise RuntimeError("no denoiser attached: training and validation need the dreamtalk denoiser whose codes "
                               "are the targets (DreamTalkStylePredictor.from_datamodule / attach_denoiser)")
        return self._denoiser["model"].to(self.device)  # outside the module tree: Lightning does not move it

    def check_denoiser(self, denoiser) -> None:
        """ConfigError unless ``denoiser`` is the one whose codes this predictor learned (same motion basis, style
        encoder and null code): a code means nothing to another denoiser's decoders."""
        want = (self.hparams.denoiser or {}).get("style_fingerprint")
        have = style_fingerprint(denoiser)
        if want is not None and have != want:
            raise ConfigError(f"this style predictor learned the style codes of the denoiser "
                              f"{self.hparams.denoiser.get('checkpoint')!r} (style fingerprint {want}); the given "
                              f"denoiser's is {have}: use that denoiser, or train a predictor for this one "
                              f"(python -m dreamhead_lit.train {MODEL_NAME} denoiser.checkpoint=...)")

    @torch.no_grad()
    def target_code(self, batch: dict) -> Tensor:
        """The style code ``(B, D)`` of the batch's style clips under the frozen denoiser."""
        return self._frozen_denoiser().style_code(batch)

    # -- statistics ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def fit_statistics(self, dm: DreamTalkDataModule, *, checkpoint: str | None = None) -> None:
        """One pass over the train clips: the codes of every clip's consecutive ``style_frames`` windows (their mean,
        scale and spread), every frame's canonical landmarks (the portrait's normalisation), and a refit of the
        denoiser's motion basis; a ConfigError when that basis is not the denoiser's (other data)."""
        den = self._frozen_denoiser()
        train = dm.datasets[dm.hparams.train_split]
        s = dm.style_frames
        codes, groups = [], []
        frame_sum, frame_sq, frames = np.zeros((dm.num_landmarks, 2)), np.zeros((dm.num_landmarks, 2)), 0

        def displacements():  # consumed by the basis refit; the statistics are gathered on the way
            nonlocal frame_sum, frame_sq, frames
            for c, reader in enumerate(train.readers):
                disp = train.clip_displacements(c)  # (T, N, 2)
                canon = (disp + dm.references[reader.record.identity]).astype(np.float64)
                frame_sum, frame_sq = frame_sum + canon.sum(0), frame_sq + (canon ** 2).sum(0)
                frames += len(canon)
                clip_codes = self._window_codes(den, disp, s)
                codes.append(clip_codes)
                groups.append(torch.full((len(clip_codes),), c))
                yield disp

        lower, upper = den.motion.parts()
        refit = MotionBasis(num_points=den.motion.num_points, lower_points=lower.points.tolist(),
                            upper_points=upper.points.tolist(), lower_components=lower.num_components,
                            upper_components=upper.num_components).fit(displacements())
        if not same_basis(refit.to(self.device), den.motion):
            raise ConfigError(_mismatch(checkpoint, den, dm, "its motion basis is not the one this train split "
                                                           "gives (another dataset, split or set of clips)"))
        all_codes, all_groups = torch.cat(codes), torch.cat(groups)
        mean = frame_sum / frames
        self.code_mean.copy_(all_codes.mean(0))
        self.code_scale.fill_(float(all_codes.var(0, unbiased=False).mean().clamp_min(1e-12).sqrt()))
        self.code_spread.copy_(mean_distance_across_groups(all_codes, all_groups))
        self.portrait_mean.copy_(torch.from_numpy(mean))
        self.portrait_scale.fill_(float(np.sqrt(max((frame_sq / frames - mean ** 2).mean(), 1e-12))))
        print(f"{MODEL_NAME}: {len(all_codes)} train style windows ({s} frames) of {len(train.readers)} clips: code "
              f"scale {float(self.code_scale):.4g}, mean L2 between clips {float(self.code_spread):.4g}", flush=True)

    def _window_codes(self, den, disp: np.ndarray, s: int) -> Tensor:
        """Codes ``(n, D)`` of a clip's consecutive windows of ``s`` frames (one zero-padded window if shorter)."""
        t = len(disp)
        starts = stretch_starts(t, s)
        windows = np.zeros((len(starts), s, *disp.shape[1:]), dtype=np.float32)
        mask = torch.zeros(len(starts), s, dtype=torch.bool)
        for i, start in enumerate(starts):
            got = disp[start:start + s]
            windows[i, :len(got)], mask[i, :len(got)] = got, True
        coeffs = den.motion.encode(torch.from_numpy(windows).to(self.device))  # (n, s, C)
        return den.net.encode_style(coeffs, mask.to(self.device)).cpu()

    def normalize_code(self, code: Tensor) -> Tensor:
        return (code - self.code_mean) / self.code_scale

    def denormalize_code(self, x: Tensor) -> Tensor:
        return self.code_mean + x * self.code_scale

    def normalize_portrait(self, portrait: Tensor) -> Tensor:
        return (portrait - self.portrait_mean) / self.portrait_scale

    # -- conditions and sampling ---------------------------------------------------------------------------------

    def encode_audio(self, audio: Tensor) -> Tensor:
        """Frames' audio windows ``(B, T, K, A)`` -> ``(B, dim)`` with the current weights. Audio longer than the
        training stretch (``audio_frames``) is cut into stretches of that length whose summaries are averaged: each
        summary is then of the kind seen in training, and the average uses all of the audio."""
        b, t = audio.shape[:2]
        starts = stretch_starts(t, self.hparams.audio_frames)
        if len(starts) == 1:
            return self.net.encode_audio(audio)
        w = self.hparams.audio_frames
        stretches = torch.stack([audio[:, s:s + w] for s in starts], 1)  # (B, n, W, K, A)
        return self.net.encode_audio(stretches.flatten(0, 1)).unflatten(0, (b, len(starts))).mean(1)

    def conditions(self, audio: Tensor, portrait: Tensor) -> dict[str, Tensor]:
        """The network's conditioning: the encoded audio and the encoded, normalised portrait ``(B, N, 2)``."""
        return {"audio_code": self.encode_audio(audio),
                "portrait_code": self.net.encode_portrait(self.normalize_portrait(portrait))}

    @torch.no_grad()
    def sample_codes(self, audio: Tensor, portrait: Tensor, *, generator: torch.Generator | None = None,
                     **kwargs: Any) -> Tensor:
        """Style codes ``(B, D)`` for audio windows ``(B, T, K, A)`` and portrait landmarks ``(B, N, 2)``, with the
        configured sampler, steps and guidance (or ``sampler=``, ``steps=``, ``guidance_scale=``), EMA weights."""
        b = audio.shape[0]
        no = torch.zeros(b, dtype=torch.bool, device=audio.device)
        with self.ema_weights():
            cond = {**self.conditions(audio, portrait), "drop": no}
            x = self.sample_x0((b, self.hparams.code_dim), cond=cond, uncond={"drop": ~no}, generator=generator,
                               **kwargs)
        return self.denormalize_code(x)

    @torch.no_grad()
    def predict_style(self, audio: np.ndarray, portrait_landmarks: np.ndarray, *, seed: int = 0,
                      **kwargs: Any) -> Tensor:
        """The style code ``(D,)`` (on this module's device) for 16 kHz mono ``audio`` of any length and the
        portrait's canonical landmarks ``(N, 2)`` (the clip's first frame at the bench), sampled with the EMA weights
        and the configured sampler and steps (or ``sampler=``, ``steps=``, ``guidance_scale=``); the same ``seed``
        gives the same code. Give it to ``DreamTalkDiffusion.generate(audio, ref_landmarks=..., style=code)``."""
        hp = self.hparams
        portrait = np.asarray(portrait_landmarks, dtype=np.float32)
        if portrait.shape != (hp.num_points, 2):
            raise ValueError(f"portrait_landmarks: expected canonical landmarks of shape ({hp.num_points}, 2), got "
                             f"{portrait.shape}")
        audio = np.asarray(audio, dtype=np.float32)
        num_frames = max(1, math.ceil(len(audio) / SAMPLES_PER_FRAME))
        windows = windows_for_frames(audio, num_frames, build_feature_extractor(hp.audio_feature),
                                     context=hp.audio_context).to(self.device)  # (F, K, A)
        code = self.sample_codes(windows[None], torch.from_numpy(portrait).to(self.device)[None],
                                 generator=torch.Generator().manual_seed(seed), **kwargs)
        return code[0]

    # -- training ------------------------------------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0 = self.normalize_code(self.target_code(batch))  # (B, D)
        cond = self.conditions(batch["audio"], batch["portrait_landmarks"])
        drop = drop_condition(x0, self.diffusion_cfg.cond_drop_prob)  # classifier-free guidance: both conditions
        loss = self.diffusion.training_losses(self.net, x0, extra_args={**cond, "drop": drop})["loss"]
        b = x0.shape[0]
        self.log("train/loss", loss, batch_size=b)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=b)
        return loss

    # -- validation ----------------------------------------------------------------------------------------------

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        target = self.target_code(batch)  # (B, D)
        b = target.shape[0]
        gen = torch.Generator(device="cpu").manual_seed(self.val_cfg.seed + batch_idx)
        no = torch.zeros(b, dtype=torch.bool, device=target.device)
        with self.ema_weights(), torch.no_grad():
            cond = {**self.conditions(batch["audio"], batch["portrait_landmarks"]), "drop": no}
            loss = self.diffusion.training_losses(self.net, self.normalize_code(target), extra_args=cond,
                                                  generator=gen)["loss"]
        self.val_metrics["loss"].update(loss, weight=b)
        sampled = self.sample_codes(batch["audio"], batch["portrait_landmarks"], generator=gen)
        null = self._frozen_denoiser().net.null_style
        for name, code in (("style_l2", sampled), ("style_l2_mean", self.code_mean), ("style_l2_null", null)):
            self.val_metrics[name].update((code - target).norm(dim=-1))
        self.val_targets.update(target)
        self.val_groups.update(batch["style_clip"].float())

    def on_validation_epoch_end(self) -> None:
        values = self.log_validation_metrics()
        if self.val_targets.update_count == 0:
            return
        spread = mean_distance_across_groups(self.val_targets.compute(), self.val_groups.compute())
        self.val_targets.reset()
        self.val_groups.reset()
        if not torch.isfinite(spread):  # a single style clip in the validation split: the train codes' spread
            if not self._warned_spread:
                warnings.warn(f"{MODEL_NAME}: the validation split has one style clip; val/style_dist divides by "
                              "the train codes' spread instead", RuntimeWarning, stacklevel=2)
                self._warned_spread = True
            spread = self.code_spread
        spread = spread.to(self.device).clamp_min(1e-8)
        self.log("val/style_spread", spread)
        for name, suffix in (("style_l2", ""), ("style_l2_mean", "_mean"), ("style_l2_null", "_null")):
            if name in values:
                self.log(f"val/style_dist{suffix}", values[name] / spread, prog_bar=not suffix)


def _mismatch(checkpoint: str | None, denoiser, dm: DreamTalkDataModule, what: str) -> str:
    trained_on = (denoiser.data_info or {}).get("root", "unknown data")
    return (f"denoiser.checkpoint={checkpoint!r} was trained on other data than data.root={dm.root} ({what}); "
            f"the style predictor's targets are that denoiser's codes of motion in its basis, so train it on the "
            f"denoiser's data ({trained_on}, the same landmark set and audio features)")


# -- the registry's hooks -------------------------------------------------------------------------------------------


def load_denoiser(ref: str, *, runs_root: str | Path = "runs"):
    """The ``dreamtalk`` denoiser named by ``ref`` (run name under ``runs/dreamtalk/``, run folder or .ckpt); a
    ConfigError naming ``ref`` for anything else (a lip expert, a style predictor, a missing run)."""
    from ... import registry

    try:
        path = run_checkpoint(ref, runs_root, model=DENOISER, key="denoiser.checkpoint")
    except ConfigError as err:
        raise ConfigError(f"{err} (train that denoiser first: python -m dreamhead_lit.train {DENOISER} --size "
                          "demo|paper, or name another run)") from err
    try:
        return registry.load_checkpoint(path, expected=DENOISER)
    except CheckpointError as err:
        raise ConfigError(f"denoiser.checkpoint={ref!r}: {err} (the style predictor learns a dreamtalk "
                          f"denoiser's style codes: python -m dreamhead_lit.train {DENOISER})") from err


def build_style_predictor(spec, cfg: DictConfig, dm: DreamTalkDataModule) -> DreamTalkStylePredictor:
    """The registry's ``build``: the frozen denoiser of the ``denoiser:`` section, then the predictor for it."""
    ref = DenoiserRef(**dict(cfg.get("denoiser") or {}))
    if not ref.checkpoint:
        raise ConfigError(f"denoiser.checkpoint is not set: the {MODEL_NAME} learns the style codes of a trained "
                          f"{DENOISER} run (a run name under {cfg.runs_root}/{DENOISER}/, a run folder or a .ckpt)")
    denoiser = load_denoiser(ref.checkpoint, runs_root=cfg.runs_root)
    sections = {("net" if k == "model" else k): to_container(cfg[k])
                for k in ("model", "diffusion", "optim", "validation")}
    return DreamTalkStylePredictor.from_datamodule(dm, denoiser=denoiser, checkpoint=str(ref.checkpoint), **sections)


def predictor_figures(out: Path, trainer: L.Trainer, cfg: Any) -> dict:
    """The registry's ``export``: which denoiser's codes were learned, for ``done.json``."""
    return {"denoiser": dict(trainer.lightning_module.hparams.denoiser or {})}


__all__ = ["DenoiserRef", "DreamTalkStylePredictor", "PortraitStyleDataset", "StylePredictorConfig",
           "StylePredictorDataModule", "StylePredictorDiffusionConfig", "StylePredictorNet",
           "StylePredictorNetConfig", "StylePredictorValidationConfig", "build_style_predictor", "load_denoiser",
           "mean_distance_across_groups", "predictor_figures", "same_basis", "stretch_starts",
           "style_fingerprint", "style_predictor_datamodule"]
