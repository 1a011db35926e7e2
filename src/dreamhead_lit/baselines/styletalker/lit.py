"""StyleTalker's motion model (Min et al., arXiv 2208.10922; BASELINES.md, StyleTalker items 3-5) as the
``styletalker`` LightningModule: the lip branch, the conditional sequential VAE and its autoregressive flow prior
(``motion.py``, ``flow.py``), trained on the frame autoencoder's cached codes.

Data: windows of each frame's audio, its code ``w_t`` (``<autoencoder run>/latents/``), the code of the frame with
its mouth masked ``m_t`` (``<run>/motion_latents/``) and the clip's first frame's two codes (the reference); both
caches standardised with train-split statistics (checkpoints carry them).

Loss (per window of T frames; the paper's ELBO plus its sync loss):
    L1(w_hat, w)                                   reconstruction, standardised codes, motion from the posterior
  + loss.kl_weight * E_q[log q(z) - log p(z)]      one-sample Monte Carlo (the flow prior has no closed-form KL),
                                                   summed over z's dims, mean over frames; optional linear warm-up
  + loss.sync_weight * -log P_sync                 the frozen sync discriminator on W consecutive frames' lower
                                                   faces, decoded by the frozen autoencoder (raw codes)

Neither frozen network is saved with this model (their runs are recorded in ``hparams``): the autoencoder is
needed for the sync loss only (and by whoever decodes the generated codes), the discriminator for training only;
``sync_discriminator.run: null`` trains without a sync loss (the ablation), and without loading the decoder.

Validation (mean absolute error of standardised codes): ``val/latent_err`` (motion sampled from the prior, a fixed
seed: the audio-driven mode; it picks ``best-*.ckpt``), ``val/latent_err_clip_motion`` (motion from the clip,
posterior mean: the video-driven mode), ``val/latent_err_reference`` (``w_ref`` held still), ``val/kl``, ``val/loss``
and ``val/motion_spread`` (the std over 3 prior samples of ``Δw_motion``, standardised units, averaged: a cheap
diversity figure in code space; the bench measures pose spread on video).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ...config import ConfigError, RunConfig, to_container
from ...data.audio import build_feature_extractor, windows_for_frames
from ...data.clip import ClipReader, ClipRecord, read_index
from ...data.datamodule import DatasetContext
from ...lit.base import OptimConfig, log_mean_metrics, warmup_cosine
from ..daetalker.pose import Standardizer
from ..daetalker.speech2latent import LatentCache, LatentWindowDataset, Speech2LatentDataModule, autoencoder_run_dir
from .motion import StyleTalkerNet, sample_prior

MODEL_NAME = "styletalker"
AUTOENCODER_MODEL = "styletalker_autoencoder"
SYNC_MODEL = "styletalker_sync"
LATENTS_DIR, MOTION_LATENTS_DIR = "latents", "motion_latents"
VAL_SEED = 0  # the validation's prior samples and KL noise: the same every validation, so the figures compare
SPREAD_SAMPLES = 3  # prior samples per window for val/motion_spread

# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class AutoencoderRunRef:
    """The ``autoencoder:`` section: the frame-autoencoder run whose caches are the data (and whose decoder the sync
    loss goes through)."""

    run: str | None = None  # a run name under runs/styletalker_autoencoder/, or a run folder (with latents/ and
    #                         motion_latents/)


@dataclass
class SyncDiscriminatorRef:
    """The ``sync_discriminator:`` section."""

    run: str | None = None  # a styletalker_sync run name (under runs/styletalker_sync/), folder or checkpoint; null:
    #                         no sync loss (the ablation "no sync discriminator")


@dataclass
class StyleTalkerNetConfig:
    hidden: int = 256  # width of the lip branch, the posterior / prior GRUs and the motion decoder
    audio_hidden: int = 128  # the VAE's per-frame audio feature (shared by posterior and prior)
    z_dim: int = 16  # motion latent per frame: pose and blinks need few dims; small keeps the lips out of it
    lip_kernel: int = 5  # frames of the lip branch's centred temporal conv (0.2 s: coarticulation)
    prior: Literal["flow", "gaussian"] = "flow"  # gaussian: the same context net, no couplings (the ablation)
    flow_layers: int = 4  # affine couplings: two pairs, so each dim is conditioned on all others
    flow_hidden: int = 128  # each coupling's MLP width
    flow_scale_bound: float = 2.0  # |log-scale| of one coupling stays below this (soft tanh bound)


@dataclass
class StyleTalkerLossConfig:
    # KL of the sequential VAE, summed over z's dims per frame, against the L1 averaged over D code channels: with
    # D = 128 this is beta = kl_weight * D = 0.13 against a unit-scale Laplace likelihood (KL small enough that the
    # posterior keeps the motion the audio cannot give, large enough to keep the prior's samples on the posterior's)
    kl_weight: float = 1.0e-3
    kl_warmup_steps: int = 0  # linear ramp of the KL weight from 0 (0: none)
    sync_weight: float = 0.1  # the paper's weight is not reported; skipped without sync_discriminator.run
    sync_windows: int = 1  # W-frame windows per training sample for the sync loss (random starts)


@dataclass
class StyleTalkerConfig(RunConfig):
    autoencoder: AutoencoderRunRef = field(default_factory=AutoencoderRunRef)
    sync_discriminator: SyncDiscriminatorRef = field(default_factory=SyncDiscriminatorRef)
    model: StyleTalkerNetConfig = field(default_factory=StyleTalkerNetConfig)
    loss: StyleTalkerLossConfig = field(default_factory=StyleTalkerLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


class FrameDecoder(Protocol):
    """What the sync loss needs of the frame autoencoder (part 1): raw codes ``(..., D)`` -> frames ``(..., 3, H,
    W)`` in [-1, 1], differentiable in the codes."""

    def decode(self, codes: Tensor) -> Tensor: ...


class SyncScorer(Protocol):
    """What the sync loss needs of the sync discriminator (part 2)."""

    window: int

    def sync_logprob(self, audio: Tensor, lower_faces: Tensor) -> Tensor: ...


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


class StyleTalkerWindowDataset(LatentWindowDataset):
    """:class:`LatentWindowDataset` windows (``audio (W, K, A)``, ``latents (W, D)``, ``reference_latents (D,)`` = the
    clip's first frame, ...) with the mouth-masked codes: ``motion_latents (W, D)`` and ``reference_motion_latents
    (D,)`` (the first frame's)."""

    def __init__(self, ctx: DatasetContext, readers: list[ClipReader], *, cache: LatentCache,
                 motion_cache: LatentCache, **windows) -> None:
        super().__init__(ctx, readers, cache=cache, **windows)
        self.motion_cache = motion_cache
        for r in readers:  # open and check every clip's file now
            motion_cache[r.record.id]

    def _item(self, index: int) -> dict:
        item = super()._item(index)
        start = int(item["start"])
        masked = self.motion_cache[self.readers[int(item["clip"])].record.id]
        return {**item,
                "motion_latents": torch.from_numpy(np.array(masked[start:start + self.window], dtype=np.float32)),
                "reference_motion_latents": torch.from_numpy(np.array(masked[0], dtype=np.float32))}


class StyleTalkerDataModule(Speech2LatentDataModule):
    """Windows of :class:`StyleTalkerWindowDataset` from an autoencoder run's two caches. ``runs_root``: where the
    runs the model names (its sync discriminator) are found."""

    def __init__(self, *, latents: str | Path, motion_latents: str | Path, runs_root: str = "runs", **data) -> None:
        latents, motion_latents = str(latents), str(motion_latents)  # plain strings in the checkpoints' hparams
        codes = LatentCache(latents, model=AUTOENCODER_MODEL)  # checked first: the error names the right model
        masked = LatentCache(motion_latents, model=AUTOENCODER_MODEL)
        super().__init__(latents=latents, **data)
        self.cache, self.motion_cache, self.runs_root = codes, masked, runs_root
        if masked.dim != codes.dim or masked.checkpoint != codes.checkpoint:
            raise ConfigError(f"{masked.dir} (dim {masked.dim}, checkpoint {masked.checkpoint}) and {codes.dir} (dim "
                              f"{codes.dim}, checkpoint {codes.checkpoint}) are not from the same autoencoder "
                              "checkpoint: export both caches from one run")

    def _records(self) -> list[ClipRecord]:
        h = self.hparams
        records = super()._records()
        return self.motion_cache.check(records, required_splits={h.train_split, h.val_split},
                                       dataset=read_index(self.root))

    def _make_dataset(self, readers: list[ClipReader], *, train: bool) -> StyleTalkerWindowDataset:
        h = self.hparams
        return StyleTalkerWindowDataset(self.ctx, readers, cache=self.cache, motion_cache=self.motion_cache,
                                        window=h.window, feature=h.audio_feature, context=h.audio_context, train=train,
                                        windows_per_clip=h.windows_per_clip)

    def train_statistics(self) -> dict[str, list[float]]:
        """Per-channel mean and std of the train split's codes and masked codes (every frame): the standardisation."""
        readers = self._split(self.hparams.train_split).readers
        out = {}
        for name, cache in (("code", self.cache), ("motion", self.motion_cache)):
            x = np.concatenate([np.asarray(cache[r.record.id], dtype=np.float64) for r in readers])
            out[f"{name}_mean"], out[f"{name}_std"] = x.mean(0).tolist(), x.std(0).tolist()
        return out


def styletalker_datamodule(cfg: DictConfig) -> StyleTalkerDataModule:
    """The registry's ``datamodule`` hook: ``data`` with the caches of ``autoencoder.run``, set up for fitting."""
    run = autoencoder_run_dir(cfg.autoencoder.run, cfg.runs_root, model=AUTOENCODER_MODEL)
    dm = StyleTalkerDataModule(latents=str(run / LATENTS_DIR), motion_latents=str(run / MOTION_LATENTS_DIR),
                               runs_root=str(cfg.runs_root), **to_container(cfg.data))
    dm.prepare_data()
    dm.setup("fit")
    dm.require_splits(cfg.data.train_split, cfg.data.val_split)
    return dm


def load_autoencoder(cache: LatentCache) -> nn.Module:
    """The frozen frame autoencoder (eval, no gradients to its weights) that wrote ``cache``: the checkpoint its
    index names, under the run folder's ``checkpoints/`` (``sync_discriminator.load_autoencoder``, shared)."""
    from .sync_discriminator import load_autoencoder as load_run

    return load_run(cache.dir.parent)


# ---------------------------------------------------------------------------------------------------------------
# LightningModule
# ---------------------------------------------------------------------------------------------------------------

VAL_METRICS = ("latent_err", "latent_err_clip_motion", "latent_err_reference", "kl", "motion_spread", "loss")


def _noise(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise: from ``generator`` on the CPU (the same numbers on any device), else torch's global."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator).to(like)


class StyleTalker(L.LightningModule):
    """StyleTalker's motion model on the frame autoencoder's codes: ``w_t = w_ref + lip(audio_t, w_ref) +
    motion(z_t, w_ref)`` with the sequential VAE's motion latent z and its autoregressive flow prior."""

    STAGE = MODEL_NAME

    def __init__(self, *, audio_steps: int, audio_dim: int, latent_dim: int, code_mean: list[float],
                 code_std: list[float], motion_mean: list[float], motion_std: list[float],
                 audio_feature: str = "logmel80", audio_context: int = 2, autoencoder: dict | None = None,
                 sync_discriminator: dict | None = None, net: dict | None = None, loss: dict | None = None,
                 optim: dict | None = None) -> None:
        super().__init__()
        # ``autoencoder``: the run and checkpoint whose codes these are (its decoder turns generated codes into
        # frames); ``sync_discriminator``: the run that gave the sync loss (run null: none). Records, not weights.
        self.save_hyperparameters()
        self.net_cfg = StyleTalkerNetConfig(**(net or {}))
        self.loss_cfg = StyleTalkerLossConfig(**(loss or {}))
        self.optim_cfg = OptimConfig(**(optim or {}))
        for key in ("kl_weight", "sync_weight"):
            if getattr(self.loss_cfg, key) < 0:
                raise ConfigError(f"loss.{key}={getattr(self.loss_cfg, key)}: must be >= 0")
        if self.loss_cfg.sync_windows < 1:
            raise ConfigError(f"loss.sync_windows={self.loss_cfg.sync_windows}: must be >= 1")
        self.net = StyleTalkerNet(audio_steps=audio_steps, audio_dim=audio_dim, latent_dim=latent_dim,
                                  **asdict(self.net_cfg))
        self.code_norm = Standardizer(code_mean, code_std)
        self.motion_norm = Standardizer(motion_mean, motion_std)
        self.val_metrics = nn.ModuleDict({k: MeanMetric() for k in VAL_METRICS})
        self.data_info: dict | None = None
        # the frozen decoder and discriminator of the sync loss: a plain dict, outside the module tree, so neither is
        # saved in this model's checkpoints nor trained nor wrapped by DDP (moved to the batch's device on use)
        self._sync: dict[str, Any] = {}

    @classmethod
    def from_datamodule(cls, dm: StyleTalkerDataModule, *, autoencoder: dict | None = None,
                        sync_discriminator: dict | None = None, autoencoder_module: FrameDecoder | None = None,
                        discriminator: SyncScorer | None = None, **kwargs: Any) -> StyleTalker:
        """Build for ``dm`` (set up). ``sync_discriminator.run`` set: the discriminator is loaded
        (``sync_discriminator.load_sync_discriminator``) with the autoencoder that wrote the caches, and the sync
        loss attached. ``autoencoder_module`` / ``discriminator``: objects to use instead of loading them (tests)."""
        ae_ref = AutoencoderRunRef(**(autoencoder or {}))
        sd_ref = SyncDiscriminatorRef(**(sync_discriminator or {}))
        k, a = dm.audio_shape
        record = {"run": ae_ref.run, "dir": str(dm.cache.dir.parent), **dm.cache.describe(),
                  "motion_latents": str(dm.motion_cache.dir)}
        module = cls(audio_steps=k, audio_dim=a, latent_dim=dm.cache.dim, **dm.train_statistics(),
                     audio_feature=dm.hparams.audio_feature, audio_context=dm.hparams.audio_context,
                     autoencoder=record, sync_discriminator={"run": sd_ref.run}, **kwargs)
        module.data_info = dm.describe()
        if discriminator is None and sd_ref.run:
            from .sync_discriminator import load_sync_discriminator

            discriminator = load_sync_discriminator(sd_ref.run, runs_root=dm.runs_root)
        if discriminator is not None:
            if int(discriminator.window) > dm.hparams.window:
                raise ConfigError(f"data.window={dm.hparams.window} is shorter than the sync discriminator's window "
                                  f"({discriminator.window} frames): the sync loss needs that many consecutive frames")
            module.attach_sync(autoencoder_module if autoencoder_module is not None else load_autoencoder(dm.cache),
                               discriminator)
        return module

    @property
    def latent_dim(self) -> int:
        return int(self.hparams.latent_dim)

    @property
    def prior_kind(self) -> str:
        return self.net.prior.kind

    # -- the sync loss -------------------------------------------------------------------------------------------

    def attach_sync(self, autoencoder: FrameDecoder, discriminator: SyncScorer) -> None:
        """Add ``loss.sync_weight · (−log P_sync)`` of ``discriminator`` on frames decoded by ``autoencoder`` (both
        frozen here: eval mode, no gradients to their weights; gradients still flow through them to the codes)."""
        hp = self.hparams
        info = getattr(discriminator, "hparams", None) or {}
        for key in ("audio_feature", "audio_context"):
            if key in info and info[key] != hp[key]:
                raise ConfigError(f"the sync discriminator was trained on {key}={info[key]!r}, this model's data has "
                                  f"{hp[key]!r}: set data.{key} to match")
        for m in (autoencoder, discriminator):
            if isinstance(m, nn.Module):
                m.eval().requires_grad_(False)
        self._sync = {"autoencoder": autoencoder, "discriminator": discriminator}
        self.hparams["sync_discriminator"] = {**(hp.get("sync_discriminator") or {"run": None}),
                                              "window": int(discriminator.window),
                                              "weight": float(self.loss_cfg.sync_weight)}

    @property
    def has_sync_loss(self) -> bool:
        return bool(self._sync)

    @staticmethod
    def lower_face(frames: Tensor, discriminator: Any = None) -> Tensor:
        """The discriminator's crop of frames ``(..., 3, H, W)``: its own ``lower_half`` (resized to the size it was
        trained on, then the lower rows) when it has one, else the lower half of the rows."""
        crop = getattr(discriminator, "lower_half", None)
        if callable(crop):
            return crop(frames)
        return frames[..., frames.shape[-2] // 2:, :]

    def sync_loss(self, codes: Tensor, audio: Tensor, *, generator: torch.Generator | None = None) -> Tensor | None:
        """``−log P_sync`` (mean) of ``loss.sync_windows`` windows of W consecutive frames per sample (random starts)
        of standardised ``codes (B, T, D)`` with their ``audio (B, T, K, A)``; None without a discriminator."""
        if not self._sync:
            return None
        ae, disc = self._sync["autoencoder"], self._sync["discriminator"]
        for m in (ae, disc):
            if isinstance(m, nn.Module):  # outside the module tree: Lightning does not move them
                m.to(codes.device)
        b, t, d = codes.shape
        w, n = int(disc.window), self.loss_cfg.sync_windows
        if t < w:
            raise ValueError(f"windows of {t} frames are shorter than the sync discriminator's {w}")
        starts = torch.randint(0, t - w + 1, (b, n), generator=generator).to(codes.device)
        frames_idx = starts[..., None] + torch.arange(w, device=codes.device)  # (B, n, W)
        rows = torch.arange(b, device=codes.device)[:, None, None]
        raw = self.code_norm.decode(codes[rows, frames_idx])  # (B, n, W, D), the autoencoder's units
        faces = ae.decode(raw.reshape(-1, d))  # (B n W, 3, H, W)
        lower = self.lower_face(faces.reshape(b * n, w, *faces.shape[1:]), disc)
        logp = disc.sync_logprob(audio[rows, frames_idx].flatten(0, 1), lower)  # (B n,)
        return -logp.mean()

    # -- training ------------------------------------------------------------------------------------------------

    def _inputs(self, batch: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Standardised codes ``w (B, T, D)``, ``w_ref (B, D)``, masked ``m (B, T, D)``, ``m_ref (B, D)``."""
        return (self.code_norm.encode(batch["latents"]), self.code_norm.encode(batch["reference_latents"]),
                self.motion_norm.encode(batch["motion_latents"]),
                self.motion_norm.encode(batch["reference_motion_latents"]))

    def kl_weight(self) -> float:
        warm = self.loss_cfg.kl_warmup_steps
        ramp = 1.0 if warm <= 0 else min(1.0, self.global_step / warm)  # global_step: 0 outside a trainer
        return self.loss_cfg.kl_weight * ramp

    def losses(self, batch: dict, *, generator: torch.Generator | None = None,
               kl_weight: float | None = None) -> dict[str, Tensor]:
        """The training objective of a batch and its terms (``sync`` only with a discriminator attached)."""
        w, ref, m, m_ref = self._inputs(batch)
        audio = batch["audio"]
        feat = self.net.audio(audio)  # (B, T, A')
        mu, logstd = self.net.posterior(m, m_ref, feat)  # (B, T, Z) each
        z = mu + torch.exp(logstd) * _noise(tuple(mu.shape), generator, mu)  # reparameterised
        codes = self.net.decode(audio, ref, z)["codes"]
        recon = F.l1_loss(codes, w)
        kl = self.net.kl(z, mu, logstd, feat).mean()
        beta = self.kl_weight() if kl_weight is None else kl_weight
        out = {"recon": recon, "kl": kl, "loss": recon + beta * kl}
        if self.loss_cfg.sync_weight > 0:
            sync = self.sync_loss(codes, audio, generator=generator)
            if sync is not None:
                out["sync"] = sync
                out["loss"] = out["loss"] + self.loss_cfg.sync_weight * sync
        return out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.losses(batch)
        b = batch["audio"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in out.items()}, batch_size=b)
        self.log("train/kl_weight", self.kl_weight(), batch_size=b)
        self.log("loss", out["loss"], prog_bar=True, logger=False, batch_size=b)
        return out["loss"]

    def configure_optimizers(self) -> dict:
        o = self.optim_cfg
        decay, no_decay = [], []
        for p in self.net.parameters():
            (no_decay if p.ndim < 2 else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas))
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, warmup_steps=o.warmup_steps,
                                                                min_lr_ratio=o.min_lr_ratio, trainer=self.trainer)}

    # -- sampling ------------------------------------------------------------------------------------------------

    def sample_codes(self, audio: Tensor, ref: Tensor, *, generator: torch.Generator | None = None,
                     temperature: float = 1.0, masked: Tensor | None = None,
                     masked_ref: Tensor | None = None) -> dict[str, Tensor]:
        """Standardised codes ``(B, T, D)`` (and ``lip``, ``motion``, ``z``) for audio windows ``(B, T, K, A)`` and
        ``w_ref (B, D)``: motion sampled from the prior (``generator``, ``temperature``), or, with ``masked (B, T, D)``
        and ``masked_ref (B, D)``, the posterior mean of a clip's motion (no randomness)."""
        feat = self.net.audio(audio)
        if masked is not None:
            z, _ = self.net.posterior(masked, masked_ref, feat)
        else:
            noise = _noise((*feat.shape[:2], self.net.z_dim), generator, feat)
            z = sample_prior(self.net.prior, feat, noise, temperature=temperature)
        return {**self.net.decode(audio, ref, z), "z": z}

    @torch.no_grad()
    def generate(self, audio: np.ndarray, *, reference_code: np.ndarray,
                 reference_motion_code: np.ndarray | None = None, num_frames: int | None = None,
                 motion_codes: np.ndarray | None = None, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
        """Raw autoencoder codes ``(F, D)`` float32 for 16 kHz mono ``audio``, every frame an edit of
        ``reference_code (D,)`` (the reference frame's code).

        ``motion_codes (F, D)``: the mouth-masked codes of a driving clip, whose motion (the posterior mean of
        ``motion_codes - reference_motion_code``) is used: the video-driven mode, ``seed`` plays no part;
        ``reference_motion_code (D,)`` is the masked code the motion is measured from (the reference frame's in
        training; default ``motion_codes[0]``). None: motion sampled from the prior with a ``torch.Generator`` seeded
        with ``seed``, noise scaled by ``temperature`` (the audio-driven mode; ``reference_motion_code`` unused).
        ``num_frames``: default ``len(motion_codes)``, else the audio's length at 25 fps."""
        hp, d = self.hparams, self.latent_dim

        def as_codes(x: np.ndarray, shape: tuple[int, ...], name: str) -> Tensor:
            x = np.asarray(x, dtype=np.float32)
            if x.shape != shape:
                raise ValueError(f"{name} has shape {x.shape}; {shape} is needed (codes of the autoencoder run "
                                 f"{hp.autoencoder and hp.autoencoder.get('dir')})")
            return torch.as_tensor(x, device=self.device)

        if num_frames is None:
            num_frames = len(motion_codes) if motion_codes is not None else max(1, int(math.ceil(len(audio) / 640)))
        if temperature < 0:
            raise ValueError(f"temperature={temperature}: must be >= 0")
        ref = self.code_norm.encode(as_codes(reference_code, (d,), "reference_code"))[None]  # (1, D)
        masked = masked_ref = None
        if motion_codes is not None:
            motion = as_codes(motion_codes, (num_frames, d), "motion_codes")
            first = motion[0] if reference_motion_code is None else as_codes(reference_motion_code, (d,),
                                                                             "reference_motion_code")
            masked, masked_ref = self.motion_norm.encode(motion)[None], self.motion_norm.encode(first)[None]
        windows = windows_for_frames(np.asarray(audio, dtype=np.float32), num_frames,
                                     build_feature_extractor(hp.audio_feature), context=hp.audio_context)
        was_training = self.training
        self.eval()
        try:
            out = self.sample_codes(windows.to(self.device)[None], ref, generator=torch.Generator().manual_seed(seed),
                                    temperature=temperature, masked=masked, masked_ref=masked_ref)
        finally:
            self.train(was_training)
        return self.code_norm.decode(out["codes"])[0].float().cpu().numpy().astype(np.float32)

    # -- validation ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate_batch(self, batch: dict, *, seed: int = VAL_SEED) -> dict[str, Tensor]:
        """The validation figures of a batch (standardised units), all drawn from generators seeded from ``seed``."""
        w, ref, m, m_ref = self._inputs(batch)
        audio = batch["audio"]
        mae = lambda x, y: (x - y).abs().mean()  # noqa: E731
        gen = lambda i: torch.Generator().manual_seed(seed * 1009 + i)  # noqa: E731
        sampled = self.sample_codes(audio, ref, generator=gen(0))
        clip = self.sample_codes(audio, ref, masked=m, masked_ref=m_ref)
        feat = self.net.audio(audio)
        mu, logstd = self.net.posterior(m, m_ref, feat)
        z = mu + torch.exp(logstd) * _noise(tuple(mu.shape), gen(1), mu)
        spread = torch.stack([sampled["motion"]] + [self.sample_codes(audio, ref, generator=gen(2 + i))["motion"]
                                                    for i in range(SPREAD_SAMPLES - 1)])  # (S, B, T, D)
        return {"latent_err": mae(sampled["codes"], w), "latent_err_clip_motion": mae(clip["codes"], w),
                "latent_err_reference": mae(ref[:, None].expand_as(w), w),
                "kl": self.net.kl(z, mu, logstd, feat).mean(), "motion_spread": spread.std(0).mean()}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        b = batch["audio"].shape[0]
        seed = VAL_SEED + batch_idx
        loss = self.losses(batch, generator=torch.Generator().manual_seed(seed), kl_weight=self.loss_cfg.kl_weight)
        self.val_metrics["loss"].update(loss["loss"], weight=b)
        for k, v in self.evaluate_batch(batch, seed=seed).items():
            self.val_metrics[k].update(v, weight=b)

    def on_validation_epoch_end(self) -> None:
        log_mean_metrics(self, self.val_metrics)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:  # training adds the registry name (training.ModelHeader)
        checkpoint.setdefault("dreamhead", {}).update(stage=self.STAGE, data=self.data_info)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.data_info = checkpoint.get("dreamhead", {}).get("data")


__all__ = ["AutoencoderRunRef", "StyleTalker", "StyleTalkerConfig", "StyleTalkerDataModule", "StyleTalkerLossConfig",
           "StyleTalkerNetConfig", "StyleTalkerWindowDataset", "SyncDiscriminatorRef", "load_autoencoder",
           "styletalker_datamodule"]
