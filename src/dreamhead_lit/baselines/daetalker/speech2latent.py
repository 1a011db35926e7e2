"""DAE-Talker's speech2latent (BASELINES.md, DAE-Talker items 2 and 3): a Conformer from per-frame speech features to
the per-frame latents of the diffusion autoencoder, with pose modelling (a pose predictor with its own loss and a
pose projector that takes predicted or given pose).

Shape of the network (FastSpeech 2's variance adaptor, which DAE-Talker's pose modelling follows)::

    audio windows (B, T, K, A) -> frame embedding -> Conformer encoder -> h (B, T, C)
    h, first frame's pose -> pose predictor -> pose_hat (B, T, P)            (its own loss)
    h + projector(pose or pose_hat) -> Conformer decoder -> latents (B, T, D)

Substitutes (the † row's footnote): the framework's log-mel windows (the stage-1 cut, ±``audio_context`` frames per
video frame) for the paper's speech features; pose = the per-frame similarity of the canonical landmarks to the crop
(``pose.py``) for the paper's head pose; a clipped learned relative-position bias in self-attention for the
Conformer's Transformer-XL relative encoding; layer norm for batch norm in the convolution module (DDP-safe, small
batches).

Targets: the autoencoder run's latent cache, ``<run>/latents/<clip_id>.npy`` float32 ``(T, D)`` with
``<run>/latents/index.json`` ``{"dim": D, "clips": {clip_id: T}, "checkpoint": ...}`` (:class:`LatentCache`). Both
latents and poses are standardised with train-split statistics (checkpoints carry them).

Validation (mean absolute error, standardised units): ``val/latent_err`` (latents from audio with the *predicted*
pose, the generation default; it picks ``best-*.ckpt``) beside ``val/latent_err_true_pose`` (the clip's pose given)
and ``val/latent_err_clip_mean`` (each frame predicted as its clip's mean latent); ``val/pose_err`` beside
``val/pose_err_still`` (the first frame's pose held still).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ...config import ConfigError, DataConfig, RunConfig, resolve_path, to_container
from ...data.audio import build_feature_extractor, windows_for_frames
from ...data.clip import ClipReader, ClipRecord, read_index
from ...data.datamodule import DatasetContext, LandmarkWindowDataset, TalkingHeadDataModule
from ...lit.base import OptimConfig, log_mean_metrics, warmup_cosine
from .pose import POSE_DIM, PosePredictor, PoseProjector, Standardizer, landmark_pose, pose_from_affine

MODEL_NAME = "daetalker_speech2latent"
AUTOENCODER_MODEL = "daetalker_autoencoder"  # runs/<this>/<run>/latents/ holds the targets

# ---------------------------------------------------------------------------------------------------------------
# Conformer (Gulati et al. 2020), written here: no torchaudio
# ---------------------------------------------------------------------------------------------------------------


class FeedForward(nn.Module):
    """Pre-norm feed-forward with Swish; the block adds half of it (the Conformer's macaron halves)."""

    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(mult * dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class RelativeSelfAttention(nn.Module):
    """Pre-norm multi-head self-attention with a learned bias per head and relative distance, clipped to
    ±``max_distance`` frames (Shaw et al. 2018 / T5). It stands in for the Conformer's Transformer-XL relative
    encoding: the same property (attention depends on how far apart two frames are, not where they are), so a model
    trained on windows runs on whole clips."""

    def __init__(self, dim: int, heads: int, dropout: float, max_distance: int) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"model.dim={dim} is not divisible by model.heads={heads}")
        self.heads, self.max_distance, self.dropout = heads, max_distance, dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.rel_bias = nn.Embedding(2 * max_distance + 1, heads)
        nn.init.zeros_(self.rel_bias.weight)
        self.drop = nn.Dropout(dropout)

    def position_bias(self, t: int, device: torch.device) -> Tensor:
        pos = torch.arange(t, device=device)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.rel_bias(rel).permute(2, 0, 1)  # (H, T, T): key minus query distance

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B,H,T,c)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.position_bias(t, x.device)[None],
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, c)
        return self.drop(self.out(y.transpose(1, 2).reshape(b, t, c)))


class ConvModule(nn.Module):
    """The Conformer's convolution module: layer norm, pointwise conv to 2C with GLU, depthwise conv over time,
    normalisation, Swish, pointwise conv. ``causal``: the depthwise conv sees frames ``t - kernel + 1 .. t`` (left
    padding only); otherwise ``t - kernel // 2 .. t + kernel // 2`` (centred, the paper's). The norm after the
    depthwise conv is a layer norm (per frame: keeps causality, and needs no batch statistics across DDP ranks)."""

    def __init__(self, dim: int, kernel: int, dropout: float, causal: bool = False) -> None:
        super().__init__()
        if kernel < 1 or (not causal and kernel % 2 == 0):
            raise ConfigError(f"model.conv_kernel={kernel}: a centred (non-causal) depthwise conv needs an odd kernel")
        self.kernel, self.causal = kernel, causal
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.conv_norm = nn.LayerNorm(dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = F.glu(self.pointwise_in(self.norm(x).transpose(1, 2)), dim=1)  # (B, C, T)
        pad = (self.kernel - 1, 0) if self.causal else (self.kernel // 2, self.kernel // 2)
        y = self.depthwise(F.pad(y, pad))  # (B, C, T)
        y = F.silu(self.conv_norm(y.transpose(1, 2))).transpose(1, 2)
        return self.drop(self.pointwise_out(y).transpose(1, 2))  # (B, T, C)


class ConformerBlock(nn.Module):
    """x + ½FF(x), + MHSA, + Conv, + ½FF, then layer norm (Gulati et al. 2020, eq. 1)."""

    def __init__(self, dim: int, heads: int, *, ff_mult: int = 4, conv_kernel: int = 15, dropout: float = 0.1,
                 max_distance: int = 64, causal_conv: bool = False) -> None:
        super().__init__()
        self.ff1 = FeedForward(dim, ff_mult, dropout)
        self.attn = RelativeSelfAttention(dim, heads, dropout, max_distance)
        self.conv = ConvModule(dim, conv_kernel, dropout, causal_conv)
        self.ff2 = FeedForward(dim, ff_mult, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x)
        x = x + self.conv(x)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class Conformer(nn.Module):
    """A stack of :class:`ConformerBlock` over ``(B, T, C)``."""

    def __init__(self, dim: int, heads: int, layers: int, **block: Any) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ConformerBlock(dim, heads, **block) for _ in range(layers)])

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


# ---------------------------------------------------------------------------------------------------------------
# speech2latent
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Speech2LatentNetConfig:
    dim: int = 256  # Conformer width
    heads: int = 4
    encoder_layers: int = 4  # before the pose projector
    decoder_layers: int = 2  # after it
    ff_mult: int = 4
    conv_kernel: int = 15  # frames of the depthwise conv (0.6 s at 25 fps)
    causal_conv: bool = False  # the Conformer's centred conv; True: only past frames (attention still sees all)
    max_distance: int = 64  # relative positions clipped beyond ±this many frames
    dropout: float = 0.1
    pose_hidden: int = 128  # pose predictor's conv width
    pose_kernel: int = 3
    pose_modelling: bool = True  # False: no pose predictor and projector (the ablation): latents from audio alone
    # "none": the paper's person-specific model (audio alone); "first_frame": the multi-speaker adaptation, conditioned
    # on the latent of the clip's first frame (who is speaking, and where: the bench's one-shot input)
    reference: Literal["none", "first_frame"] = "none"


@dataclass
class Speech2LatentLossConfig:
    latent: Literal["l1", "l2"] = "l1"  # on standardised latents
    pose: Literal["l1", "l2"] = "l2"  # on standardised poses (FastSpeech 2's variance predictors: MSE)
    pose_weight: float = 0.1  # the pose predictor's loss weight


@dataclass
class AutoencoderRef:
    """The ``autoencoder:`` section: the diffusion-autoencoder run whose cached latents are the targets."""

    run: str | None = None  # a run name under runs/daetalker_autoencoder/, or a run folder (holding latents/)


@dataclass
class Speech2LatentConfig(RunConfig):
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderRef = field(default_factory=AutoencoderRef)
    model: Speech2LatentNetConfig = field(default_factory=Speech2LatentNetConfig)
    loss: Speech2LatentLossConfig = field(default_factory=Speech2LatentLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


class Speech2LatentNet(nn.Module):
    """Audio windows ``(B, T, K, A)`` + the first frame's standardised pose ``(B, P)`` (+ a given standardised pose
    ``(B, T, P)``) (+ the reference frame's standardised latent ``(B, D)``, multi-speaker) -> standardised latents
    ``(B, T, D)`` and the predicted standardised pose ``(B, T, P)`` (None without pose modelling)."""

    def __init__(self, *, audio_steps: int, audio_dim: int, latent_dim: int, pose_dim: int = POSE_DIM, dim: int = 256,
                 heads: int = 4, encoder_layers: int = 4, decoder_layers: int = 2, ff_mult: int = 4,
                 conv_kernel: int = 15, causal_conv: bool = False, max_distance: int = 64, dropout: float = 0.1,
                 pose_hidden: int = 128, pose_kernel: int = 3, pose_modelling: bool = True,
                 reference: str = "none") -> None:
        super().__init__()
        if reference not in ("none", "first_frame"):
            raise ConfigError(f"model.reference={reference!r}: 'none' (person-specific) or 'first_frame' (multi-speaker)")
        self.pose_modelling, self.reference = pose_modelling, reference
        block = dict(ff_mult=ff_mult, conv_kernel=conv_kernel, dropout=dropout, max_distance=max_distance,
                     causal_conv=causal_conv)
        self.frame_in = nn.Sequential(nn.LayerNorm(audio_steps * audio_dim), nn.Linear(audio_steps * audio_dim, dim))
        self.encoder = Conformer(dim, heads, encoder_layers, **block)
        if pose_modelling:
            self.pose_predictor = PosePredictor(dim=dim, pose_dim=pose_dim, hidden=pose_hidden, kernel=pose_kernel,
                                                dropout=dropout)
            self.pose_projector = PoseProjector(dim=dim, pose_dim=pose_dim)
        # the reference latent, embedded and added to every frame before the encoder (as the pose predictor's
        # first-frame context): the audio says how the mouth moves, the reference whose mouth and face it is
        self.reference_in = nn.Linear(latent_dim, dim) if reference == "first_frame" else None
        self.decoder = Conformer(dim, heads, decoder_layers, **block)
        self.head = nn.Linear(dim, latent_dim)

    def forward(self, audio: Tensor, first_pose: Tensor, pose: Tensor | None = None,
                reference: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x = self.frame_in(audio.flatten(2))  # (B, T, C)
        if self.reference_in is not None:
            if reference is None:
                raise ValueError("this multi-speaker model (model.reference=first_frame) needs the reference latent")
            x = x + self.reference_in(reference)[:, None]
        h = self.encoder(x)
        if not self.pose_modelling:
            return self.head(self.decoder(h)), None
        pose_hat = self.pose_predictor(h, first_pose)  # (B, T, P)
        # given pose (training: the true one, teacher forcing; generation: a clip's) or else the predicted one
        h = self.pose_projector(h, pose_hat if pose is None else pose)
        return self.head(self.decoder(h)), pose_hat  # (B, T, D), (B, T, P)


# ---------------------------------------------------------------------------------------------------------------
# Data: the autoencoder's latent cache and windows of (audio, latents, pose)
# ---------------------------------------------------------------------------------------------------------------


def autoencoder_run_dir(run: str | None, runs_root: str | Path = "runs", *, model: str = AUTOENCODER_MODEL) -> Path:
    """``autoencoder.run``: a run folder, or a run name under ``runs/<model>/`` (any autoencoder whose run writes a
    latent cache: DAE-Talker's, StyleTalker's)."""
    if not run:
        raise ConfigError(f"autoencoder.run is not set: name the {model} run whose cached latents are the "
                          f"targets (a run name under runs/{model}/, or a run folder)")
    path = resolve_path(run)
    if not path.is_dir() and "/" not in run:
        path = resolve_path(runs_root) / model / run
    if not path.is_dir():
        raise ConfigError(f"autoencoder.run={run!r}: no run folder at {path}; train the autoencoder first "
                          f"(python -m dreamhead_lit.train {model}), which writes latents/ when it ends")
    return path


class LatentCache:
    """The latent cache of a diffusion-autoencoder run: ``<dir>/index.json`` ``{"dim": D, "clips": {clip_id: T},
    "checkpoint": ...}`` and ``<dir>/<clip_id>.npy`` float32 ``(T, D)``, opened as memory maps."""

    def __init__(self, directory: str | Path, *, model: str = AUTOENCODER_MODEL) -> None:
        self.dir = Path(directory)
        index = self.dir / "index.json"
        if not index.is_file():
            raise ConfigError(f"no latent cache at {self.dir} (no index.json): the {model} run writes "
                              f"{self.dir.name}/ when its training ends; train it to the end, or name another run")
        try:
            info = json.loads(index.read_text())
            self.dim = int(info["dim"])
            self.clips = {str(k): int(v) for k, v in info["clips"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"{index}: not a latent cache index ({{'dim': D, 'clips': {{clip_id: frames}}}}): "
                              f"{err}") from err
        self.checkpoint = info.get("checkpoint")
        self._open: dict[str, np.ndarray] = {}

    def describe(self) -> dict:
        return {"latents": str(self.dir), "dim": self.dim, "checkpoint": self.checkpoint}

    def check(self, records: list[ClipRecord], *, required_splits: set[str],
              dataset: list[ClipRecord] | None = None) -> list[ClipRecord]:
        """The records that have latents. Refuses (ConfigError) a cache that does not match the dataset: a clip it
        lists that the dataset lacks, a frame count that differs, a clip of ``required_splits`` it lacks; clips of
        other splits without latents are dropped with one warning. ``dataset``: every record of the dataset when
        ``records`` is a subset of it (``data.identities``), so a cache of the whole dataset is not foreign."""
        have = {r.id: r for r in (records if dataset is None else dataset)}
        foreign = sorted(set(self.clips) - set(have))
        wrong = [f"{r.id} ({self.clips[r.id]} latents, {r.num_frames} frames)" for r in have.values()
                 if r.id in self.clips and self.clips[r.id] != r.num_frames]
        missing = sorted(r.id for r in records if r.split in required_splits and r.id not in self.clips)
        problems = []
        if foreign:
            problems.append(f"{len(foreign)} clip(s) not in the dataset ({', '.join(foreign[:5])})")
        if wrong:
            problems.append(f"{len(wrong)} clip(s) with another frame count: {', '.join(wrong[:5])}")
        if missing:
            problems.append(f"no latents for {len(missing)} clip(s) of splits {sorted(required_splits)} "
                            f"({', '.join(missing[:5])})")
        if problems:
            raise ConfigError(f"the latent cache {self.dir} does not match this dataset: {'; '.join(problems)}. It was "
                              "written for another dataset or another version of it: re-encode the clips with the "
                              "autoencoder on this data.root, or point data.root / autoencoder.run at the matching pair")
        dropped = [r.id for r in records if r.id not in self.clips]
        if dropped:
            warnings.warn(f"{self.dir}: no latents for {len(dropped)} clip(s) of other splits ({', '.join(dropped[:5])}"
                          "); left out", RuntimeWarning, stacklevel=2)
        return [r for r in records if r.id in self.clips]

    def __getitem__(self, clip_id: str) -> np.ndarray:
        """``(T, D)`` float32 of a clip, opened once; a file of the wrong shape or type is refused."""
        arr = self._open.get(clip_id)
        if arr is None:
            path = self.dir / f"{clip_id}.npy"
            if not path.is_file():
                raise ConfigError(f"{path} is missing, though {self.dir / 'index.json'} lists clip {clip_id!r}")
            arr = np.load(path, mmap_mode="r")
            want = (self.clips[clip_id], self.dim)
            if arr.shape != want or arr.dtype != np.float32:
                raise ConfigError(f"{path}: {arr.dtype} {arr.shape}, the index says float32 {want}")
            self._open[clip_id] = arr
        return arr

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}  # each worker process opens its own memory maps


class LatentWindowDataset(LandmarkWindowDataset):
    """Stage-1 windows (:class:`LandmarkWindowDataset`) with the autoencoder's latents and the head pose:

        audio              float32 (W, K, A)   each frame's audio window, as stage 1 cuts it
        latents            float32 (W, D)      the frames' cached autoencoder latents (the target)
        pose               float32 (W, P)      raw head pose of the frames (``pose.pose_from_affine``)
        clip_mean_latents  float32 (D,)        the mean latent of the whole clip (a validation baseline)
        reference_latents  float32 (D,)        the latent of the clip's first frame (the multi-speaker reference)
        plus the stage-1 keys (landmarks, to_image, clip, start, ...)
    """

    def __init__(self, ctx: DatasetContext, readers: list[ClipReader], *, cache: LatentCache, **windows) -> None:
        super().__init__(ctx, readers, **windows)
        self.cache = cache
        for r in readers:  # open (and check) every clip's file now, not as a skipped sample mid-epoch
            cache[r.record.id]

    def clip_pose(self, c: int) -> np.ndarray:
        reader = self.readers[c]
        return landmark_pose(self.ctx, reader.landmarks[:reader.num_frames])  # as the bench's pose control reads it

    def _item(self, index: int) -> dict:
        item = super()._item(index)
        c, start = int(item["clip"]), int(item["start"])
        latents = self.cache[self.readers[c].record.id]
        return {**item,
                "latents": torch.from_numpy(np.array(latents[start:start + self.window], dtype=np.float32)),
                "pose": torch.from_numpy(pose_from_affine(item["to_image"].numpy(), self.ctx.source_resolution)),
                "clip_mean_latents": torch.from_numpy(np.asarray(latents, dtype=np.float32).mean(0)),
                "reference_latents": torch.from_numpy(np.array(latents[0], dtype=np.float32))}


class Speech2LatentDataModule(TalkingHeadDataModule):
    """:class:`TalkingHeadDataModule` (stage-1 windows) serving :class:`LatentWindowDataset` samples; the latent
    cache must cover the train and val splits' clips with their frame counts."""

    def __init__(self, *, latents: str | Path, **data) -> None:
        super().__init__(stage="a2l", **data)
        self.cache = LatentCache(latents)

    def _records(self) -> list[ClipRecord]:
        h = self.hparams
        return self.cache.check(self._index(), required_splits={h.train_split, h.val_split},
                                dataset=read_index(self.root))

    def _make_dataset(self, readers: list[ClipReader], *, train: bool) -> LatentWindowDataset:
        h = self.hparams
        return LatentWindowDataset(self.ctx, readers, cache=self.cache, window=h.window, feature=h.audio_feature,
                                   context=h.audio_context, train=train, windows_per_clip=h.windows_per_clip)

    def train_statistics(self) -> dict[str, list[float]]:
        """Per-channel mean and std of the train split's latents and poses (every frame): the standardisation."""
        train = self._split(self.hparams.train_split)
        lat = np.concatenate([np.asarray(self.cache[r.record.id], dtype=np.float64) for r in train.readers])
        pose = np.concatenate([train.clip_pose(c).astype(np.float64) for c in range(len(train.readers))])
        return {"latent_mean": lat.mean(0).tolist(), "latent_std": lat.std(0).tolist(),
                "pose_mean": pose.mean(0).tolist(), "pose_std": pose.std(0).tolist()}


def speech2latent_datamodule(cfg: DictConfig) -> Speech2LatentDataModule:
    """The registry's ``datamodule`` hook: ``data`` with the latents of the ``autoencoder.run``, set up for fitting."""
    run = autoencoder_run_dir(cfg.autoencoder.run, cfg.runs_root)
    dm = Speech2LatentDataModule(latents=str(run / "latents"), **to_container(cfg.data))  # str: saved in checkpoints
    dm.prepare_data()
    dm.setup("fit")
    dm.require_splits(cfg.data.train_split, cfg.data.val_split)
    return dm


# ---------------------------------------------------------------------------------------------------------------
# LightningModule
# ---------------------------------------------------------------------------------------------------------------

VAL_METRICS = ("latent_err", "latent_err_true_pose", "latent_err_clip_mean", "latent_err_reference", "pose_err",
               "pose_err_still", "loss")


def _err(kind: str, a: Tensor, b: Tensor) -> Tensor:
    return F.l1_loss(a, b) if kind == "l1" else F.mse_loss(a, b)


class Speech2LatentModule(L.LightningModule):
    """DAE-Talker's speech2latent: audio -> autoencoder latents, with a pose predictor and a pose projector."""

    STAGE = MODEL_NAME

    def __init__(self, *, audio_steps: int, audio_dim: int, latent_dim: int, latent_mean: list[float],
                 latent_std: list[float], pose_mean: list[float], pose_std: list[float], resolution: int,
                 audio_feature: str = "logmel80", audio_context: int = 2, autoencoder: dict | None = None,
                 net: dict | None = None, loss: dict | None = None, optim: dict | None = None) -> None:
        super().__init__()
        # ``autoencoder``: the latent cache this model was trained on (its dir, dim and the autoencoder checkpoint):
        # the decoder that turns these latents into frames must be that checkpoint's
        self.save_hyperparameters()
        self.loss_cfg = Speech2LatentLossConfig(**(loss or {}))
        self.optim_cfg = OptimConfig(**(optim or {}))
        self.net = Speech2LatentNet(audio_steps=audio_steps, audio_dim=audio_dim, latent_dim=latent_dim,
                                    pose_dim=len(pose_mean), **(net or {}))
        self.latent_norm = Standardizer(latent_mean, latent_std)
        self.pose_norm = Standardizer(pose_mean, pose_std)
        self.val_metrics = nn.ModuleDict({k: MeanMetric() for k in VAL_METRICS})
        self.data_info: dict | None = None

    @classmethod
    def from_datamodule(cls, dm: Speech2LatentDataModule, **kwargs: Any) -> Speech2LatentModule:
        k, a = dm.audio_shape
        module = cls(audio_steps=k, audio_dim=a, latent_dim=dm.cache.dim, **dm.train_statistics(),
                     resolution=dm.ctx.source_resolution, audio_feature=dm.hparams.audio_feature,
                     audio_context=dm.hparams.audio_context, autoencoder=dm.cache.describe(), **kwargs)
        module.data_info = dm.describe()
        speakers = {r.record.identity for r in dm._split(dm.hparams.train_split).readers}
        if module.reference == "none" and len(speakers) > 1:
            warnings.warn(f"speech2latent without a reference (model.reference=none, the paper's person-specific model) "
                          f"on {len(speakers)} identities: audio alone cannot say whose face to make. Train on one "
                          "(data.identities=[<id>]) or set model.reference=first_frame (the multi-speaker adaptation)",
                          RuntimeWarning, stacklevel=2)
        return module

    @property
    def pose_modelling(self) -> bool:
        return self.net.pose_modelling

    @property
    def reference(self) -> str:
        """"none" (person-specific: audio alone) or "first_frame" (multi-speaker: the first frame's latent too)."""
        return self.net.reference

    def _reference(self, batch: dict) -> Tensor | None:
        return self.latent_norm.encode(batch["reference_latents"]) if self.reference != "none" else None

    # -- training ------------------------------------------------------------------------------------------------

    def losses(self, batch: dict) -> dict[str, Tensor]:
        z = self.latent_norm.encode(batch["latents"])  # (B, T, D)
        p = self.pose_norm.encode(batch["pose"])  # (B, T, P)
        ref = self._reference(batch)
        if not self.pose_modelling:
            latent = _err(self.loss_cfg.latent, self.net(batch["audio"], p[:, 0], reference=ref)[0], z)
            return {"loss": latent, "latent": latent}
        # Teacher forcing: the projector gets the TRUE pose while the predictor learns beside it (FastSpeech 2's
        # variance adaptor, which DAE-Talker follows). The latents of a frame depend on where the head is; with the
        # predicted pose in the projector early in training, the decoder would learn to undo the predictor's errors
        # (pose ambiguity: audio does not determine head motion) and would not learn to follow a given pose, which is
        # what pose control at generation needs. The predictor's error then only matters when no pose is given.
        z_hat, p_hat = self.net(batch["audio"], p[:, 0], pose=p, reference=ref)
        latent = _err(self.loss_cfg.latent, z_hat, z)
        pose = _err(self.loss_cfg.pose, p_hat, p)
        return {"loss": latent + self.loss_cfg.pose_weight * pose, "latent": latent, "pose": pose}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.losses(batch)
        b = batch["audio"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in out.items()}, batch_size=b)
        self.log("loss", out["loss"], prog_bar=True, logger=False, batch_size=b)
        return out["loss"]

    def configure_optimizers(self) -> dict:
        o = self.optim_cfg
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            (no_decay if p.ndim < 2 or "rel_bias" in name else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas))
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, warmup_steps=o.warmup_steps,
                                                                min_lr_ratio=o.min_lr_ratio, trainer=self.trainer)}

    # -- validation ----------------------------------------------------------------------------------------------

    def evaluate_batch(self, batch: dict) -> dict[str, Tensor]:
        """Mean absolute errors (standardised units) of a batch: latents with predicted / true pose, beside two
        baselines, the clip's mean latent and the first frame's latent held still; pose predicted / the first frame's
        held still."""
        z = self.latent_norm.encode(batch["latents"])
        p = self.pose_norm.encode(batch["pose"])
        ref = self._reference(batch)
        z_pred, p_hat = self.net(batch["audio"], p[:, 0], reference=ref)
        clip_mean = self.latent_norm.encode(batch["clip_mean_latents"])[:, None].expand_as(z)
        first = self.latent_norm.encode(batch["reference_latents"])[:, None].expand_as(z)
        mae = lambda x, y: (x - y).abs().mean()  # noqa: E731
        out = {"latent_err": mae(z_pred, z), "latent_err_clip_mean": mae(clip_mean, z),
               "latent_err_reference": mae(first, z)}
        if self.pose_modelling:
            z_true_pose, _ = self.net(batch["audio"], p[:, 0], pose=p, reference=ref)
            out.update(latent_err_true_pose=mae(z_true_pose, z), pose_err=mae(p_hat, p),
                       pose_err_still=mae(p[:, :1].expand_as(p), p))
        return out

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        b = batch["audio"].shape[0]
        self.val_metrics["loss"].update(self.losses(batch)["loss"], weight=b)
        for k, v in self.evaluate_batch(batch).items():
            self.val_metrics[k].update(v, weight=b)

    def on_validation_epoch_end(self) -> None:
        values = log_mean_metrics(self, self.val_metrics)
        if "latent_err" in values:
            self.log("val/latent_err_vs_clip_mean", values["latent_err"] / values["latent_err_clip_mean"].clamp_min(1e-8))

    # -- generation ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, audio: np.ndarray, *, num_frames: int | None = None, pose: np.ndarray | None = None,
                 first_pose: np.ndarray | None = None,
                 reference_latent: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Latents ``(F, D)`` and the pose used ``(F, P)`` (float32, raw pose units: ``pose.pose_from_affine``; None
        for a model without pose modelling, which takes no pose) for 16 kHz mono ``audio``. ``pose``: a given pose
        ``(F, P)`` (e.g. a clip's), put into the projector as is (pose control); None: the predicted pose, from the
        audio and ``first_pose`` ``(P,)`` (default: ``pose[0]`` when a pose is given, else the train split's mean
        pose). ``reference_latent`` ``(D,)``: the autoencoder latent of the reference frame (the clip's first frame),
        required by a multi-speaker model (``reference == "first_frame"``) and ignored by a person-specific one.
        ``num_frames``: default ``len(pose)``, else the audio's length at 25 fps."""
        hp = self.hparams
        ref = None
        if self.reference != "none":
            if reference_latent is None:
                raise ValueError("this multi-speaker speech2latent (model.reference=first_frame) needs reference_latent, "
                                 "the autoencoder latent of the clip's first frame")
            ref = self.latent_norm.encode(torch.as_tensor(np.array(reference_latent, np.float32),
                                                          device=self.device).reshape(1, -1))
        if num_frames is None:
            num_frames = len(pose) if pose is not None else max(1, int(math.ceil(len(audio) / 640)))
        given = None
        if pose is not None:
            pose = np.asarray(pose, dtype=np.float32)
            if pose.shape != (num_frames, len(hp.pose_mean)):
                raise ValueError(f"pose has shape {pose.shape}; (num_frames, {len(hp.pose_mean)}) = "
                                 f"({num_frames}, {len(hp.pose_mean)}) is needed")
            given = self.pose_norm.encode(torch.as_tensor(pose, device=self.device))[None]  # (1, F, P)
        if first_pose is None and pose is not None:
            first_pose = pose[0]
        first = (torch.zeros(1, len(hp.pose_mean), device=self.device) if first_pose is None else
                 self.pose_norm.encode(torch.as_tensor(np.asarray(first_pose, np.float32), device=self.device)[None]))
        windows = windows_for_frames(np.asarray(audio, dtype=np.float32), num_frames,
                                     build_feature_extractor(hp.audio_feature), context=hp.audio_context)
        z, p_hat = self.net(windows.to(self.device)[None], first, pose=given, reference=ref)
        latents = self.latent_norm.decode(z)[0].cpu().numpy().astype(np.float32)
        if not self.pose_modelling:
            return latents, None
        used = given if given is not None else p_hat
        return latents, self.pose_norm.decode(used)[0].cpu().numpy().astype(np.float32)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:  # training adds the registry name (training.ModelHeader)
        checkpoint.setdefault("dreamhead", {}).update(stage=self.STAGE, data=self.data_info)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.data_info = checkpoint.get("dreamhead", {}).get("data")


__all__ = ["AutoencoderRef", "Conformer", "ConformerBlock", "ConvModule", "LatentCache", "LatentWindowDataset",
           "RelativeSelfAttention", "Speech2LatentConfig", "Speech2LatentDataModule", "Speech2LatentLossConfig",
           "Speech2LatentModule", "Speech2LatentNet", "Speech2LatentNetConfig", "autoencoder_run_dir",
           "speech2latent_datamodule"]
