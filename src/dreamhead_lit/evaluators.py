"""Evaluators trained on the dataset itself, for data the pretrained ones cannot score.

    python -m dreamhead_lit.evaluators landmarker [--config evaluators/landmarker.yaml] [--if-needed] [key=value ...]
    python -m dreamhead_lit.evaluators syncnet    [--config evaluators/syncnet.yaml]    [--if-needed] [key=value ...]

**Trained landmarker** (LMD on rendered faces, where dlib's 68-point model does not apply): a small CNN that predicts
68 heat maps at a quarter of its input resolution and reads each point off its map with a soft-argmax (integral
regression, Sun et al., ECCV 2018: the expected position under the softmax of the map, so sub-pixel positions are
learnable). It is trained on the dataset's exact ``landmarks68.npy`` of the train split, with random shifts, scale,
small rotations, colour jitter, blur and noise (generated frames are softer than rendered ones), and validated on
**held-out identities** (the last ``val_identities`` identities of the train split, never trained on): the mean L2
error per point in pixels at the dataset resolution. :class:`TrainedLandmarker` has the
``Landmarker`` interface of :mod:`dreamhead_lit.metrics.lmd` (one RGB uint8 frame ``(H, W, 3)`` -> ``(68, 2)``);
any frame size is resized to the network's input and the points scaled back.

**Trained sync expert** (LSE-C / LSE-D when the official ``syncnet_v2.model`` is absent): :class:`ReducedSyncNet`, the
joonson SyncNet two-stream layout (audio: the same 13x20 MFCC input, conv/pool sequence and final 5x4 convolution;
video: a Conv3d with a 5x7x7 kernel consuming 5 frames, then 2-D convolutions) with every channel count multiplied
by ``model.width`` (0.25 by default) and the video tail ending in a global average pool instead of the 6x6
convolution, so it takes **small inputs**: the face crop at ``model.input_size`` (64 px = SynthTalk's native size;
upsampling 64 px faces to the official 224 px would cost 12x the compute for no information), of which the lower
half (``model.crop: lower_half``, Wav2Lip's expert input) is used. Embeddings are L2-normalised, so the LSE-D of this
expert is a distance between unit vectors, in [0, 2]. Training is contrastive with a symmetric **InfoNCE** loss
(van den Oord et al. 2018; temperature ``loss.temperature``) over a batch of windows drawn ``loss.group`` at a time
from one clip, at most ``loss.max_shift`` frames apart: for each 5-frame video window the aligned 0.2 s MFCC window
is the positive; every other window's audio is a negative -- the same clip shifted by ``loss.min_shift`` ..
``2 * max_shift`` frames (the hard ones: same voice, same face; windows closer than ``min_shift`` overlap the
positive and are masked out) and other clips (the easy ones). Windows are cut exactly as
:class:`~dreamhead_lit.metrics.sync.SyncNetExpert` cuts them at evaluation (frames ``i .. i+4`` with MFCC steps
``4i .. 4i+19``). :class:`TrainedSyncExpert` is a ``SyncNetExpert`` with that model and preprocessing, so
:class:`~dreamhead_lit.metrics.sync.SyncMetric` scores with it unchanged. Its offset accuracy is measured on held-out
clips whose audio is shifted by known offsets (``eval_shifts``): the AV offset the LSE procedure finds must be within
one frame of the constructed one (chance: about 3 of the 31 searched offsets).

Both write ``runs/evaluators/<kind>-<dataset>/`` (``name=`` overrides): the resolved config, TensorBoard logs,
Lightning checkpoints, the final ``landmarker.pt`` / ``expert.pt`` (weights + what the bench needs to use and name
them) and ``done.json`` with the figures. The bench finds them there by the dataset folder's name.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .checkpoints import SAFE_LOAD, load_module, safe_load
from .lit.guards import NonFiniteError, NonFiniteGuard
from .runs import DONE_FILE  # one completion marker for every kind of run
from .config import ConfigError, DataConfig, TrainerConfig, load_config, resolve_path, save_resolved_config, to_container
from .data.audio import SAMPLES_PER_FRAME
from .data.clip import ClipError, ClipReader, atomic_write_text, read_dataset_info, read_index, validate_clip
from .data.landmarks import MOUTH
from .metrics.sync import SyncNetExpert, sync_scores_from_embeddings
from .models.syncnet import (
    MFCC_STEPS_PER_FRAME,
    MFCC_WINDOW_STEPS,
    SYNCNET_WINDOW_FRAMES,
    _conv_bn_relu_2d,
    _conv_bn_relu_3d,
    syncnet_mfcc,
)

__all__ = [
    "EVALUATORS_DIR",
    "LANDMARKER_FILE",
    "EXPERT_FILE",
    "DONE_FILE",
    "LandmarkerNetConfig",
    "LandmarkerAugmentConfig",
    "LandmarkerConfig",
    "SyncNetConfig",
    "SyncLossConfig",
    "SyncExpertConfig",
    "EvalOptimConfig",
    "LandmarkNet",
    "LandmarkerModule",
    "TrainedLandmarker",
    "ReducedSyncNet",
    "SyncExpertModule",
    "TrainedSyncExpert",
    "DEFAULT_EVAL_SHIFTS",
    "LandmarkFrames",
    "SyncWindows",
    "HeldOutClips",
    "augment_batch",
    "point_errors",
    "info_nce",
    "sync_video_input",
    "shift_audio",
    "offset_accuracy",
    "evaluator_run_dir",
    "train_landmarker",
    "train_sync_expert",
    "main",
]

EVALUATORS_DIR = "evaluators"  # runs/<this>/<kind>-<dataset>/
LANDMARKER_FILE = "landmarker.pt"
EXPERT_FILE = "expert.pt"
SyncCrop = Literal["lower_half", "full"]
PAD_GUARD = 2.0  # constant coordinate appended to the trained expert's unit embeddings (TrainedSyncExpert.embed)
DEFAULT_EVAL_SHIFTS = (-10, -5, -2, 0, 2, 5, 10)  # constructed AV offsets (frames) the offset accuracy is measured on


# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class EvalOptimConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05  # cosine decay to lr x this at max_steps


@dataclass
class LandmarkerNetConfig:
    input_size: int = 64  # frames are resized to this side (64 = SynthTalk demo resolution, no resampling)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # at 1/2, 1/4, 1/8 of the input side
    blocks: int = 2  # residual blocks per level at 1/4 and 1/8


@dataclass
class LandmarkerAugmentConfig:
    """Random geometric and photometric changes applied to each training image (and its points)."""

    shift: float = 0.06  # max translation, fraction of the side
    scale: float = 0.08  # max relative zoom in or out
    aspect: float = 0.08  # max relative stretch of x against y (face shapes differ between identities)
    rotate_deg: float = 6.0  # max in-plane rotation
    brightness: float = 0.12  # max additive change in [0, 1] units
    contrast: float = 0.2  # max relative change around the image mean
    colour: float = 0.1  # max relative per-channel gain
    channel_shuffle: float = 0.0  # share of images whose RGB channels are permuted (skin/hair colours are identities')
    blur_prob: float = 0.3  # share of images blurred (generated frames are softer than rendered ones)
    blur_sigma: float = 1.2  # max Gaussian sigma in pixels at the input size
    noise: float = 0.02  # max Gaussian noise std


@dataclass
class LandmarkerConfig:
    name: str | None = None  # default landmarker-<dataset folder name>
    seed: int = 0
    runs_root: str = "runs"
    val_identities: int = 1  # identities of the train split held out for validation (the last ones, sorted)
    val_frame_stride: int = 5  # every k-th frame of the held-out clips is scored
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    data: DataConfig = field(default_factory=DataConfig)
    model: LandmarkerNetConfig = field(default_factory=LandmarkerNetConfig)
    augment: LandmarkerAugmentConfig = field(default_factory=LandmarkerAugmentConfig)
    optim: EvalOptimConfig = field(default_factory=EvalOptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


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
class SyncExpertConfig:
    name: str | None = None  # default syncnet-<dataset folder name>
    seed: int = 0
    runs_root: str = "runs"
    eval_shifts: list[int] = field(default_factory=lambda: list(DEFAULT_EVAL_SHIFTS))  # constructed AV offsets, frames
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    data: DataConfig = field(default_factory=DataConfig)
    model: SyncNetConfig = field(default_factory=SyncNetConfig)
    loss: SyncLossConfig = field(default_factory=SyncLossConfig)
    optim: EvalOptimConfig = field(default_factory=EvalOptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def evaluator_run_dir(kind: str, data_root: str | Path, *, runs_root: str | Path = "runs", name: str | None = None) -> Path:
    """``runs/evaluators/<kind>-<dataset folder name>`` (or ``.../<name>``): where training writes and the bench looks."""
    return resolve_path(runs_root) / EVALUATORS_DIR / (name or f"{kind}-{resolve_path(data_root).name}")


def _load_final(path: str | Path, filename: str, *, what: str, kind: str) -> tuple[Path, dict]:
    """(file, contents) of a finished evaluator run's ``filename``, from its run folder or the file itself.

    Raises:
        FileNotFoundError: no finished run there, with the command that trains one.
    """
    p = Path(path)
    file = p / filename if p.is_dir() or not p.suffix else p
    if not file.is_file():
        raise FileNotFoundError(f"no {what} at {file}: train one with `make train-{kind}` "
                                f"(python -m dreamhead_lit.evaluators {kind} data.root=<dataset>)")
    return file, safe_load(file, what=what)


def _cosine_schedule(opt: torch.optim.Optimizer, o: EvalOptimConfig, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / max(1, o.warmup_steps)
        progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _readers(root: Path, split: str) -> list[ClipReader]:
    """Valid clips of one split (invalid ones are skipped with the reason printed)."""
    readers = []
    for rec in read_index(root):
        if rec.split != split:
            continue
        try:
            meta = validate_clip(root, rec)
        except ClipError as err:
            print(f"skipping {err}", file=sys.stderr)
            continue
        readers.append(ClipReader(root, rec, meta))
    return readers


# ---------------------------------------------------------------------------------------------------------------------
# Landmarker: network, augmentation, LightningModule
# ---------------------------------------------------------------------------------------------------------------------


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class LandmarkNet(nn.Module):
    """Frames ``(B, 3, S, S)`` in [0, 1] -> 68 points ``(B, 68, 2)`` in input pixels (pixel centres at integers).

    Encoder to 1/8 of the side, decoder back to 1/4 with a skip connection, 68 heat maps at 1/4; each point is the
    soft-argmax of its map (integral regression).
    """

    num_points = 68

    def __init__(self, *, input_size: int = 64, channels: tuple[int, int, int] | list[int] = (16, 32, 64), blocks: int = 2) -> None:
        super().__init__()
        if input_size % 8:
            raise ValueError(f"landmarker input_size must be a multiple of 8, got {input_size}")
        c1, c2, c3 = channels
        self.input_size = input_size
        self.stem = nn.Sequential(_conv(3, c1, 2), _conv(c1, c1))  # 1/2
        self.down1 = nn.Sequential(_conv(c1, c2, 2), *[_ResBlock(c2) for _ in range(blocks)])  # 1/4
        self.down2 = nn.Sequential(_conv(c2, c3, 2), *[_ResBlock(c3) for _ in range(blocks)])  # 1/8
        self.fuse = nn.Sequential(_conv(c3 + c2, c2), _ResBlock(c2))  # 1/4
        self.head = nn.Conv2d(c2, self.num_points, 1)
        side = input_size // 4
        centres = (torch.arange(side, dtype=torch.float32) + 0.5) * 4 - 0.5  # cell centres in input pixels
        self.register_buffer("centres", centres, persistent=False)

    def heatmaps(self, x: Tensor) -> Tensor:
        x = (x - 0.5) / 0.25
        f1 = self.down1(self.stem(x))  # (B, c2, S/4, S/4)
        f2 = self.down2(f1)  # (B, c3, S/8, S/8)
        up = F.interpolate(f2, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(self.fuse(torch.cat([up, f1], dim=1)))  # (B, 68, S/4, S/4) logits

    def forward(self, x: Tensor) -> Tensor:
        logits = self.heatmaps(x)
        b, n, h, w = logits.shape
        prob = logits.flatten(2).softmax(-1).view(b, n, h, w)
        px = (prob.sum(2) * self.centres[:w]).sum(-1)  # (B, 68): expected x
        py = (prob.sum(3) * self.centres[:h]).sum(-1)
        return torch.stack([px, py], dim=-1)  # (B, 68, 2)


def _resize_points(points: Tensor | np.ndarray, src: tuple[int, int], dst: tuple[int, int]):
    """Pixel coordinates (centres at integers) from an image of ``src`` (H, W) to one of ``dst`` (H, W)."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    scale = points.new_tensor([sx, sy]) if isinstance(points, Tensor) else np.array([sx, sy])
    return (points + 0.5) * scale - 0.5


def _resize_images(images: Tensor, size: int) -> Tensor:
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def augment_batch(images: Tensor, points: Tensor, cfg: LandmarkerAugmentConfig, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random similarity warp (points moved with the image), colour jitter, blur and noise.

    images ``(B, 3, S, S)`` in [0, 1], points ``(B, 68, 2)`` pixels -> the same shapes.
    """
    b, _, s, _ = images.shape
    dev = images.device

    def uniform(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator).to(dev) * 2 - 1  # [-1, 1)

    angle = uniform(b) * math.radians(cfg.rotate_deg)
    scale = 1 + uniform(b) * cfg.scale
    shift = uniform(b, 2) * cfg.shift * s  # pixels
    stretch = 1 + uniform(b) * cfg.aspect
    cos, sin = torch.cos(angle), torch.sin(angle)
    a = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2) * scale[:, None, None]  # (B, 2, 2)
    a = a @ torch.diag_embed(torch.stack([stretch.sqrt(), 1 / stretch.sqrt()], -1))  # anisotropic, area kept
    # forward map on pixel coordinates centred on the image centre c: p' = A (p - c) + c + t. In align_corners=False
    # normalised coordinates u = 2 (p - c) / S the same A applies and t becomes 2 t / S; affine_grid wants the inverse.
    a_inv = torch.linalg.inv(a)
    t_norm = shift * 2 / s
    theta = torch.cat([a_inv, -(a_inv @ t_norm[..., None])], dim=-1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    c = (s - 1) / 2
    new_points = torch.einsum("bij,bnj->bni", a, points - c) + c + shift[:, None, :]
    # photometric
    if cfg.channel_shuffle > 0:
        shuffle = (torch.rand(b, generator=generator) < cfg.channel_shuffle).tolist()
        perms = [torch.randperm(3, generator=generator) if s_ else torch.arange(3) for s_ in shuffle]
        warped = torch.stack([img[p] for img, p in zip(warped, perms)])
    mean = warped.mean(dim=(1, 2, 3), keepdim=True)
    x = (warped - mean) * (1 + uniform(b, 1, 1, 1) * cfg.contrast) + mean
    x = x * (1 + uniform(b, 3, 1, 1) * cfg.colour) + uniform(b, 1, 1, 1) * cfg.brightness
    if cfg.blur_prob > 0 and cfg.blur_sigma > 0:
        blur = (torch.rand(b, generator=generator) < cfg.blur_prob).to(dev)
        if blur.any():
            sigma = float(torch.rand((), generator=generator)) * cfg.blur_sigma + 0.3
            radius = max(1, int(math.ceil(2 * sigma)))
            k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=dev)
            k = torch.exp(-0.5 * (k / sigma) ** 2)
            k = k / k.sum()
            blurred = F.conv2d(F.pad(x[blur], (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
            blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
            x = x.clone()
            x[blur] = blurred
    if cfg.noise > 0:
        x = x + torch.randn(x.shape, generator=generator).to(dev) * (torch.rand(b, 1, 1, 1, generator=generator).to(dev) * cfg.noise)
    return x.clamp(0, 1), new_points


def point_errors(pred: Tensor, true: Tensor) -> tuple[Tensor, Tensor]:
    """Mean L2 error per point over all 68 and over the mouth (48-67), per image: ``(B,)`` each, in input units."""
    d = (pred - true).norm(dim=-1)  # (B, 68)
    return d.mean(-1), d[:, list(MOUTH)].mean(-1)


class LandmarkFrames(Dataset):
    """``(image (3, H, W) float [0, 1], landmarks68 (68, 2) float32 pixels)`` for frames of the given clips."""

    def __init__(self, readers: list[ClipReader], *, stride: int = 1) -> None:
        if not readers:
            raise ValueError("no clips to take landmarker frames from")
        self.readers = readers
        self.index = [(c, t) for c, r in enumerate(readers) for t in range(0, r.num_frames, stride)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        c, t = self.index[i]
        r = self.readers[c]
        image = torch.from_numpy(r.frame(t)).permute(2, 0, 1).float() / 255.0
        return {"image": image, "landmarks": torch.from_numpy(np.array(r.landmarks68[t], dtype=np.float32))}


class LandmarkerModule(L.LightningModule):
    """Trains :class:`LandmarkNet` on augmented frames; validation error in pixels at the dataset resolution."""

    def __init__(self, *, resolution: int, net: dict | None = None, augment: dict | None = None, optim: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net_cfg = LandmarkerNetConfig(**(net or {}))
        self.aug_cfg = LandmarkerAugmentConfig(**(augment or {}))
        self.optim_cfg = EvalOptimConfig(**(optim or {}))
        self.resolution = int(resolution)
        self.net = LandmarkNet(input_size=self.net_cfg.input_size, channels=list(self.net_cfg.channels), blocks=self.net_cfg.blocks)
        from torchmetrics import MeanMetric

        self.val_err = MeanMetric()
        self.val_err_mouth = MeanMetric()

    def predict_points(self, images: Tensor) -> Tensor:
        """images ``(B, 3, H, W)`` in [0, 1] -> ``(B, 68, 2)`` in the images' pixels."""
        h, w = images.shape[-2:]
        s = self.net.input_size
        return _resize_points(self.net(_resize_images(images, s)), (s, s), (h, w))

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        images, points = batch["image"], batch["landmarks"]
        s = self.net.input_size
        x = _resize_images(images, s)
        p = _resize_points(points, tuple(images.shape[-2:]), (s, s))
        x, p = augment_batch(x, p, self.aug_cfg)
        loss = (self.net(x) - p).abs().mean()  # L1 on coordinates (integral regression's loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images, points = batch["image"], batch["landmarks"]
        err, mouth = point_errors(self.predict_points(images), points)
        # pixels at the dataset resolution (frames are square)
        self.val_err.update(err * self.resolution / images.shape[-1])
        self.val_err_mouth.update(mouth * self.resolution / images.shape[-1])

    def on_validation_epoch_end(self) -> None:
        self.log("val/err_px", self.val_err.compute())
        self.log("val/err_mouth_px", self.val_err_mouth.compute())
        self.val_err.reset()
        self.val_err_mouth.reset()

    def configure_optimizers(self) -> dict:
        o = self.optim_cfg
        opt = torch.optim.AdamW(self.net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        total = max(1, int(self.trainer.max_steps)) if self.trainer and self.trainer.max_steps > 0 else 10_000
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _cosine_schedule(opt, o, total), "interval": "step"}}


class TrainedLandmarker:
    """A trained :class:`LandmarkNet` with the ``Landmarker`` interface of ``metrics/lmd.py``.

    ``landmarker(frame)`` maps one RGB uint8 frame ``(H, W, 3)`` to ``(68, 2)`` float64 pixels (never None: the network
    always answers; it is meant for face crops of the dataset it was trained on). :meth:`predict` does a whole clip in
    batches. ``name`` says which run and its validation error, for the table.
    """

    def __init__(self, net: LandmarkNet, *, name: str, val_err_px: float | None = None, resolution: int | None = None,
                 batch_size: int = 64) -> None:
        self.net = net.eval()
        self.name = name
        self.val_err_px = val_err_px
        self.resolution = resolution
        self.batch_size = int(batch_size)

    @classmethod
    def load(cls, path: str | Path) -> TrainedLandmarker:
        """From a run folder (``runs/evaluators/landmarker-<dataset>``) or its ``landmarker.pt``.

        Raises:
            FileNotFoundError: no finished run there, with the command that trains one.
        """
        file, blob = _load_final(path, LANDMARKER_FILE, what="trained landmarker", kind="landmarker")
        net = LandmarkNet(**blob["net"])
        net.load_state_dict(blob["state_dict"])
        err = blob.get("val_err_px")
        run = blob.get("run", file.parent.name)
        label = f"trained landmarker {run} (val err {err:.2f} px)" if err is not None else f"trained landmarker {run}"
        return cls(net, name=label, val_err_px=err, resolution=blob.get("resolution"))

    @torch.no_grad()
    def predict(self, frames: np.ndarray) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 RGB -> ``(T, 68, 2)`` float64 pixels."""
        arr = np.asarray(frames)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {arr.shape}")
        h, w = arr.shape[1:3]
        s = self.net.input_size
        out = []
        for start in range(0, len(arr), self.batch_size):
            x = torch.from_numpy(np.array(arr[start : start + self.batch_size])).permute(0, 3, 1, 2).float() / 255.0
            out.append(_resize_points(self.net(_resize_images(x, s)), (s, s), (h, w)))
        return torch.cat(out).double().numpy() if out else np.zeros((0, 68, 2))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        img = np.asarray(frame)
        if img.ndim != 3:
            raise ValueError(f"the landmarker takes one frame (H, W, 3), got shape {img.shape}")
        return self.predict(img[None])[0]


# ---------------------------------------------------------------------------------------------------------------------
# Sync expert: network, windows, LightningModule
# ---------------------------------------------------------------------------------------------------------------------


def _check_crop(crop: str) -> SyncCrop:
    if crop not in get_args(SyncCrop):
        raise ValueError(f"model.crop must be one of {get_args(SyncCrop)}, got {crop!r}")
    return crop  # type: ignore[return-value]


def sync_video_input(frames: np.ndarray, *, input_size: int, crop: SyncCrop) -> Tensor:
    """The expert's video input: face crops ``(T, H, W, 3)`` uint8 RGB -> ``(T, 3, h, w)`` float in [-1, 1].

    Resized to ``input_size`` (bilinear, anti-aliased; nothing happens at the native size) and, for
    ``crop="lower_half"``, cut to the lower half (rows ``input_size // 2`` onward). Training and evaluation both use it.
    """
    x = torch.from_numpy(np.array(frames, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 255.0  # a copy: frames may be read-only
    x = _resize_images(x, input_size)
    if crop == "lower_half":
        x = x[:, :, input_size // 2 :]
    return x * 2 - 1


def _audio_stream(width: float, embed_dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    c = [max(8, round(n * width)) for n in (64, 192, 384, 256, 256, 512)]
    cnn = nn.Sequential(  # the joonson audio CNN with widths scaled: (B, 1, 13, 20) -> (B, c5, 1, 1)
        *_conv_bn_relu_2d(1, c[0], (3, 3), (1, 1)),
        nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
        *_conv_bn_relu_2d(c[0], c[1], (3, 3), (1, 1)),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),  # 13x20 -> 11x9
        *_conv_bn_relu_2d(c[1], c[2], (3, 3), (1, 1)),
        *_conv_bn_relu_2d(c[2], c[3], (3, 3), (1, 1)),
        *_conv_bn_relu_2d(c[3], c[4], (3, 3), (1, 1)),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),  # -> 5x4
        nn.Conv2d(c[4], c[5], kernel_size=(5, 4), padding=0),  # -> 1x1
        nn.BatchNorm2d(c[5]),
        nn.ReLU(),
    )
    return cnn, _head(c[5], embed_dim)


def _video_stream(width: float, embed_dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    c = [max(8, round(n * width)) for n in (96, 256, 256, 256, 256, 512)]
    cnn = nn.Sequential(  # (B, 3, 5, h, w) -> (B, c5, 1, 1, 1); strides suit 32..224 px inputs
        *_conv_bn_relu_3d(3, c[0], (5, 7, 7), (1, 2, 2), (0, 3, 3)),  # the 5 frames are consumed here
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        *_conv_bn_relu_3d(c[0], c[1], (1, 5, 5), (1, 1, 1), (0, 2, 2)),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        *_conv_bn_relu_3d(c[1], c[2], (1, 3, 3), (1, 1, 1), (0, 1, 1)),
        *_conv_bn_relu_3d(c[2], c[3], (1, 3, 3), (1, 1, 1), (0, 1, 1)),
        *_conv_bn_relu_3d(c[3], c[4], (1, 3, 3), (1, 1, 1), (0, 1, 1)),
        *_conv_bn_relu_3d(c[4], c[5], (1, 3, 3), (1, 1, 1), (0, 1, 1)),
        nn.AdaptiveAvgPool3d(1),  # the official 6x6 convolution needs 224 px input; pooling takes any size
    )
    return cnn, _head(c[5], embed_dim)


def _head(cin: int, embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cin), nn.BatchNorm1d(cin), nn.ReLU(), nn.Linear(cin, embed_dim))


class ReducedSyncNet(nn.Module):
    """The joonson SyncNet layout at ``width`` x its channels, for small inputs; unit-length embeddings.

    ``forward_aud(mfcc (B, 1, 13, 20))`` and ``forward_lip(video (B, 3, 5, h, w))`` return ``(B, embed_dim)`` with
    L2 norm 1 (the interface :class:`~dreamhead_lit.metrics.sync.SyncNetExpert` calls).
    """

    def __init__(self, *, width: float = 0.25, embed_dim: int = 128) -> None:
        super().__init__()
        self.width, self.embed_dim = float(width), int(embed_dim)
        self.netcnnaud, self.netfcaud = _audio_stream(width, embed_dim)
        self.netcnnlip, self.netfclip = _video_stream(width, embed_dim)

    def forward_aud(self, mfcc: Tensor) -> Tensor:
        if mfcc.ndim != 4 or mfcc.shape[1:] != (1, 13, MFCC_WINDOW_STEPS):
            raise ValueError(f"audio input must be (B, 1, 13, 20) MFCC windows, got {tuple(mfcc.shape)}")
        return F.normalize(self.netfcaud(self.netcnnaud(mfcc).flatten(1)), dim=-1)

    def forward_lip(self, video: Tensor) -> Tensor:
        if video.ndim != 5 or video.shape[1:3] != (3, SYNCNET_WINDOW_FRAMES):
            raise ValueError(f"video input must be (B, 3, 5, h, w) frame windows, got {tuple(video.shape)}")
        return F.normalize(self.netfclip(self.netcnnlip(video).flatten(1)), dim=-1)

    def forward(self, video: Tensor, mfcc: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_lip(video), self.forward_aud(mfcc)


class TrainedSyncExpert(SyncNetExpert):
    """A :class:`SyncNetExpert` whose network is a :class:`ReducedSyncNet` with its own (small) video input.

    The windowing, the MFCC front end and the batching are the official evaluation's (inherited); only the frame
    preparation differs (:func:`sync_video_input` instead of 224 px BGR).
    """

    def __init__(self, model: ReducedSyncNet, *, name: str, input_size: int, crop: SyncCrop, batch_size: int = 64,
                 device: str | torch.device | None = None, offset_accuracy: float | None = None) -> None:
        super().__init__(model, name=name, batch_size=batch_size, device=device)  # type: ignore[arg-type]
        self.input_size = int(input_size)
        self.crop = _check_crop(crop)
        self.offset_accuracy = offset_accuracy

    def _video_tensor(self, frames: np.ndarray) -> Tensor:
        return sync_video_input(frames, input_size=self.input_size, crop=self.crop)

    def embed(self, frames: np.ndarray, audio: np.ndarray) -> tuple[Tensor, Tensor]:
        """The official windowing on unit embeddings, each with one constant coordinate ``PAD_GUARD`` appended.

        Distances between real windows are unchanged (the coordinate cancels: LSE-D stays in [0, 2]), but the zero
        vectors the LSE procedure pads with beyond the clip's ends are then ``sqrt(1 + PAD_GUARD^2)`` > 2 away from
        every window, so padding never matches better than real audio -- as with the official embeddings, whose norms
        are large. Without it a zero vector sits at distance 1 (cosine 0.5) from every unit embedding.
        """
        v, a = super().embed(frames, audio)
        guard = torch.full((len(v), 1), PAD_GUARD, dtype=v.dtype)
        return torch.cat([v, guard], dim=1), torch.cat([a, guard], dim=1)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> TrainedSyncExpert:
        """From a run folder (``runs/evaluators/syncnet-<dataset>``) or its ``expert.pt``.

        Raises:
            FileNotFoundError: no finished run there, with the command that trains one.
        """
        file, blob = _load_final(path, EXPERT_FILE, what="trained sync expert", kind="syncnet")
        model = ReducedSyncNet(width=blob["model"]["width"], embed_dim=blob["model"]["embed_dim"])
        model.load_state_dict(blob["state_dict"])
        acc = blob.get("offset_accuracy")
        run = blob.get("run", file.parent.name)
        m = blob["model"]
        label = (f"trained expert {run} (joonson SyncNet x{m['width']:g} width, {m['input_size']} px "
                 f"{m['crop'].replace('_', ' ')}, InfoNCE"
                 + (f"; offset acc {100 * acc:.0f}% on held-out clips" if acc is not None else "")
                 + ("; NEAR CHANCE: too little training data, its LSE figures mean little)" if _near_chance(acc) else ")"))
        return cls(model, name=label, input_size=m["input_size"], crop=m["crop"], device=device, offset_accuracy=acc)


def _near_chance(offset_accuracy: float | None) -> bool:
    """Below 0.3: an expert that answers offset 0 for every shift already scores 1/7 on the default shifts."""
    return offset_accuracy is not None and offset_accuracy < 0.3


def shift_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    """Audio moved by ``frames`` video frames, same length (zeros fill): ``+k`` = the audio comes ``k`` frames early,
    i.e. the video lags by ``k`` -- the AV offset :func:`~dreamhead_lit.metrics.sync.sync_scores_from_embeddings`
    reports as ``+k``."""
    n = abs(int(frames)) * SAMPLES_PER_FRAME
    out = np.zeros_like(audio)
    if n >= len(audio):
        return out
    if frames > 0:
        out[: len(audio) - n] = audio[n:]
    elif frames < 0:
        out[n:] = audio[: len(audio) - n]
    else:
        out[:] = audio
    return out


def offset_accuracy(expert: SyncNetExpert, clips: list[tuple[np.ndarray, np.ndarray]], shifts: list[int], *,
                    tolerance: int = 1) -> dict[str, float]:
    """How often the LSE procedure recovers a constructed AV offset: each clip's audio is shifted by each of
    ``shifts`` frames and the offset found (argmin over -15..15 of the mean embedding distance) compared with it.

    Returns ``offset_acc`` (within ``tolerance`` frames), ``offset_exact``, ``offset_mae`` (frames) and ``trials``.
    """
    hits = exact = 0
    errors = []
    for frames, audio in clips:
        for k in shifts:
            v, a = expert.embed(frames, shift_audio(audio, k))
            found = sync_scores_from_embeddings(v, a).offset
            errors.append(abs(found - k))
            hits += abs(found - k) <= tolerance
            exact += found == k
    n = max(1, len(errors))
    return {"offset_acc": hits / n, "offset_exact": exact / n, "offset_mae": float(np.mean(errors)) if errors else float("nan"),
            "trials": len(errors)}


class SyncWindows(Dataset):
    """Training windows in groups of ``loss.group`` from one clip, at most ``loss.max_shift`` frames apart (so each is
    a shifted -- hard -- negative for the others, within the offset range the LSE searches). An item holds
    ``video (G, 3, 5, h, w)``, the aligned MFCC windows ``audio (G, 1, 13, 20)`` and ``clip``/``position (G,)`` (to
    mask pairs that overlap)."""

    def __init__(self, readers: list[ClipReader], *, input_size: int, crop: SyncCrop, loss: SyncLossConfig) -> None:
        self.readers = [r for r in readers if r.num_frames >= SYNCNET_WINDOW_FRAMES + 2]
        if not self.readers:
            raise ValueError("no clips (of at least 7 frames) to train the sync expert on")
        self.input_size, self.crop, self.loss = input_size, crop, loss
        self._cache: dict[int, tuple[Tensor, Tensor, int]] = {}

    def __len__(self) -> int:
        return max(1, len(self.readers) * self.loss.windows_per_clip // self.loss.group)

    def clip(self, c: int) -> tuple[Tensor, Tensor, int]:
        """(video input (T, 3, h, w), MFCC (13, steps), window positions) of clip ``c``, prepared once. Positions are
        counted as the evaluation counts them: ``min(T, samples // 640) - 5``."""
        if c not in self._cache:
            r = self.readers[c]
            audio = r.audio()
            video = sync_video_input(np.array(r.frames()), input_size=self.input_size, crop=self.crop)
            n = min(len(video), len(audio) // SAMPLES_PER_FRAME) - SYNCNET_WINDOW_FRAMES
            self._cache[c] = (video, torch.from_numpy(syncnet_mfcc(audio)), n)
        return self._cache[c]

    def __getitem__(self, idx: int) -> dict[str, Tensor]:
        c = idx % len(self.readers)
        video, cc, n = self.clip(c)
        anchor = int(torch.randint(0, n, ()))
        lo, hi = max(0, anchor - self.loss.max_shift), min(n - 1, anchor + self.loss.max_shift)
        span = torch.arange(lo, hi + 1)
        g = self.loss.group
        pick = torch.randperm(len(span))[:g] if len(span) >= g else torch.randint(0, len(span), (g,))
        positions = span[pick]
        step = MFCC_STEPS_PER_FRAME  # windows cut as SyncNetExpert.embed cuts them: frames i..i+4, MFCC 4i..4i+19
        return {
            "video": torch.stack([video[i : i + SYNCNET_WINDOW_FRAMES].transpose(0, 1) for i in positions.tolist()]),
            "audio": torch.stack([cc[:, i * step : i * step + MFCC_WINDOW_STEPS] for i in positions.tolist()])[:, None],
            "clip": torch.full((g,), c),
            "position": positions,
        }


class HeldOutClips(Dataset):
    """Whole clips ``(frames (T, H, W, 3) uint8, audio (S,) float32)`` for the offset-accuracy validation."""

    def __init__(self, readers: list[ClipReader]) -> None:
        self.readers = readers

    def __len__(self) -> int:
        return len(self.readers)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.readers[i]
        return np.asarray(r.frames()), r.audio()


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


class SyncExpertModule(L.LightningModule):
    """Trains :class:`ReducedSyncNet` with :func:`info_nce`; validates the offset accuracy on held-out clips."""

    def __init__(self, *, model: dict | None = None, loss: dict | None = None, optim: dict | None = None,
                 eval_shifts: list[int] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = SyncNetConfig(**(model or {}))
        _check_crop(self.model_cfg.crop)
        self.loss_cfg = SyncLossConfig(**(loss or {}))
        self.optim_cfg = EvalOptimConfig(**(optim or {}))
        self.eval_shifts = list(eval_shifts if eval_shifts is not None else DEFAULT_EVAL_SHIFTS)
        self.net = ReducedSyncNet(width=self.model_cfg.width, embed_dim=self.model_cfg.embed_dim)
        self._val: list[tuple[np.ndarray, np.ndarray]] = []

    def expert(self, name: str = "training") -> TrainedSyncExpert:
        m = self.model_cfg
        return TrainedSyncExpert(self.net, name=name, input_size=m.input_size, crop=m.crop, device=self.device)  # type: ignore[arg-type]

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

    def configure_optimizers(self) -> dict:
        o = self.optim_cfg
        opt = torch.optim.AdamW(self.net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        total = max(1, int(self.trainer.max_steps)) if self.trainer and self.trainer.max_steps > 0 else 10_000
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _cosine_schedule(opt, o, total), "interval": "step"}}


def _whole_clips(batch: list) -> tuple[np.ndarray, np.ndarray]:
    return batch[0]


# ---------------------------------------------------------------------------------------------------------------------
# Training entry points
# ---------------------------------------------------------------------------------------------------------------------


def _trainer(cfg: DictConfig, out: Path, *, monitor: str, mode: str) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    t = to_container(cfg.trainer)
    extra = t.pop("extra", {}) or {}
    from .runs import LastCheckpoint

    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="best-step{step}", monitor=monitor, mode=mode,
                           save_top_k=1, auto_insert_metric_name=False)
    logger = TensorBoardLogger(save_dir=str(out.parent), name=out.name, version="", default_hp_metric=False)
    callbacks = [ckpt, LastCheckpoint(out / "checkpoints" / "last.ckpt"), NonFiniteGuard()]
    return L.Trainer(default_root_dir=str(out), logger=logger, callbacks=callbacks, **t, **extra)


def _prepare_run(kind: str, cfg: DictConfig, *, resume: bool) -> tuple[Path, str | None]:
    """The run folder (fresh unless resuming an interrupted run) and the checkpoint to resume from."""
    out = evaluator_run_dir(kind, cfg.data.root, runs_root=cfg.runs_root, name=cfg.name)
    last = out / "checkpoints" / "last.ckpt"
    if resume and last.is_file() and not (out / DONE_FILE).is_file():
        print(f"resuming the interrupted {kind} run {out}")
        return out, str(last)
    for stale in (out / DONE_FILE, out / LANDMARKER_FILE, out / EXPERT_FILE, out / "hparams.yaml",
                  *out.glob("events.out.tfevents.*")):
        stale.unlink(missing_ok=True)  # a retrained run is not done until it finishes again; old curves would mix in
    if (out / "checkpoints").is_dir():
        shutil.rmtree(out / "checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, out)
    return out, None


def _save_final(out: Path, filename: str, blob: dict, metrics: dict) -> None:
    tmp = out / f".{filename}.tmp"
    torch.save(blob, tmp)
    tmp.replace(out / filename)
    atomic_write_text(out / DONE_FILE, json.dumps(metrics, indent=2))


def _best_or_last(trainer: L.Trainer, module_cls: type[L.LightningModule]) -> L.LightningModule:
    cb = trainer.checkpoint_callback
    best = getattr(cb, "best_model_path", "") if cb is not None else ""
    if best and Path(best).is_file():
        return load_module(module_cls, best)
    return trainer.lightning_module.cpu()


def train_landmarker(cfg: DictConfig, *, resume: bool = False) -> Path:
    """Train the 68-point landmarker as configured (:class:`LandmarkerConfig`); returns the run folder."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    root = resolve_path(cfg.data.root)
    info = read_dataset_info(root)
    resolution = int(info["resolution"])
    train = _readers(root, cfg.data.train_split)
    identities = sorted({r.record.identity for r in train})
    k = int(cfg.val_identities)
    if not 0 < k < len(identities):
        raise ConfigError(f"val_identities={k}: the train split of {root} has {len(identities)} identities; hold out "
                          "at least 1 and keep at least 1 for training")
    held_out = set(identities[-k:])
    fit_readers = [r for r in train if r.record.identity not in held_out]
    val_readers = [r for r in train if r.record.identity in held_out]
    out, ckpt = _prepare_run("landmarker", cfg, resume=resume)
    bs, workers = int(cfg.data.batch_size), int(cfg.data.num_workers)
    train_loader = DataLoader(LandmarkFrames(fit_readers), batch_size=bs, shuffle=True, drop_last=True,
                              num_workers=workers, persistent_workers=workers > 0)
    val_loader = DataLoader(LandmarkFrames(val_readers, stride=cfg.val_frame_stride), batch_size=bs * 2, num_workers=0)
    module = LandmarkerModule(resolution=resolution, net=to_container(cfg.model), augment=to_container(cfg.augment),
                              optim=to_container(cfg.optim))
    trainer = _trainer(cfg, out, monitor="val/err_px", mode="min")
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt, **SAFE_LOAD)
    if trainer.interrupted:
        return out
    best = _best_or_last(trainer, LandmarkerModule).eval()
    landmarker = TrainedLandmarker(best.net, name="eval")
    val = _landmarker_error(landmarker, val_readers, stride=1)
    figures: dict[str, Any] = {f"val_{k}": v for k, v in val.items()}
    figures.update({"val_identities": sorted(held_out), "resolution": resolution, "steps": trainer.global_step,
                    "train_seconds": round(time.perf_counter() - start, 1)})
    test_readers = [r for s in cfg.data.test_splits for r in _readers(root, s)]
    if test_readers:  # for information: the frames the bench applies it to (their ground truth); not used to select
        figures.update({f"test_{k}": v for k, v in _landmarker_error(landmarker, test_readers, stride=5).items()})
    blob = {"net": {"input_size": best.net.input_size, "channels": list(cfg.model.channels), "blocks": int(cfg.model.blocks)},
            "state_dict": best.net.state_dict(), "run": out.name, "dataset": str(root), "resolution": resolution,
            "val_err_px": val["err_px"], "val_err_mouth_px": val["err_mouth_px"], "figures": figures}
    _save_final(out, LANDMARKER_FILE, blob, figures)
    print(f"\nlandmarker run: {out}\n  on held-out identities {sorted(held_out)} at {resolution} px: error "
          f"{val['err_px']:.3f} px per point (mouth {val['err_mouth_px']:.3f}); M-LMD against the truth "
          f"{val['lmd_mouth_px']:.3f} px, F-LMD {val['lmd_face_px']:.3f} px")
    if test_readers:
        print(f"  on the test splits' ground truth ({', '.join(cfg.data.test_splits)}): error {figures['test_err_px']:.3f} px "
              f"(mouth {figures['test_err_mouth_px']:.3f}); M-LMD {figures['test_lmd_mouth_px']:.3f} px")
    return out


def _landmarker_error(landmarker: TrainedLandmarker, readers: list[ClipReader], *, stride: int) -> dict[str, float]:
    """The landmarker against the true points over every ``stride``-th frame of the clips, in pixels:
    ``err_px`` / ``err_mouth_px``: mean L2 error per point (all 68 / mouth); ``lmd_mouth_px`` / ``lmd_face_px``: the
    M-LMD / F-LMD of its landmarks against the truth (each frame's points centred, as LMD measures): the floor this
    instrument adds to an LMD."""
    from .metrics.lmd import lmd_from_landmarks

    errs, mouths, lmds = [], [], []
    for r in readers:
        idx = np.arange(0, r.num_frames, stride)
        frames = np.stack([r.frame(int(t)) for t in idx])
        pred = landmarker.predict(frames)
        true = np.asarray(r.landmarks68, dtype=np.float64)[idx]
        e, m = point_errors(torch.from_numpy(pred), torch.from_numpy(true))
        errs.append(e)
        mouths.append(m)
        lmds.append(lmd_from_landmarks(pred, true, resolution=frames.shape[1]))
    return {"err_px": float(torch.cat(errs).mean()), "err_mouth_px": float(torch.cat(mouths).mean()),
            "lmd_mouth_px": float(np.mean([x.mouth for x in lmds])), "lmd_face_px": float(np.mean([x.face for x in lmds]))}


def train_sync_expert(cfg: DictConfig, *, resume: bool = False) -> Path:
    """Train the sync expert as configured (:class:`SyncExpertConfig`); returns the run folder."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    root = resolve_path(cfg.data.root)
    crop = _check_crop(cfg.model.crop)
    train = _readers(root, cfg.data.train_split)
    val = _readers(root, cfg.data.val_split)
    if not val:
        raise ConfigError(f"the sync expert validates on held-out clips: split {cfg.data.val_split!r} of {root} is empty")
    out, ckpt = _prepare_run("syncnet", cfg, resume=resume)
    workers = int(cfg.data.num_workers)
    windows = SyncWindows(train, input_size=cfg.model.input_size, crop=crop, loss=SyncLossConfig(**to_container(cfg.loss)))
    groups = max(1, int(cfg.data.batch_size) // int(cfg.loss.group))  # data.batch_size counts windows
    train_loader = DataLoader(windows, batch_size=groups, shuffle=True, drop_last=len(windows) >= groups,
                              num_workers=workers, persistent_workers=workers > 0)
    val_loader = DataLoader(HeldOutClips(val), batch_size=1, collate_fn=_whole_clips)
    module = SyncExpertModule(model=to_container(cfg.model), loss=to_container(cfg.loss), optim=to_container(cfg.optim),
                              eval_shifts=list(cfg.eval_shifts))
    trainer = _trainer(cfg, out, monitor="val/offset_acc", mode="max")
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt, **SAFE_LOAD)
    if trainer.interrupted:
        return out
    best = _best_or_last(trainer, SyncExpertModule).eval()
    val_acc = offset_accuracy(best.expert(), [HeldOutClips(val)[i] for i in range(len(val))], list(cfg.eval_shifts))
    figures: dict[str, Any] = {f"val_{k}": v for k, v in val_acc.items()}
    test = [r for s in cfg.data.test_splits for r in _readers(root, s)]
    held = val_acc
    if test:  # held-out identities: the honest figure, reported (and used to name the expert), never used to select
        held = offset_accuracy(best.expert(), [HeldOutClips(test)[i] for i in range(len(test))], list(cfg.eval_shifts))
        figures.update({f"test_{k}": v for k, v in held.items()})
    figures.update({"eval_shifts": list(cfg.eval_shifts), "steps": trainer.global_step,
                    "train_seconds": round(time.perf_counter() - start, 1)})
    m = cfg.model
    blob = {"model": {"width": float(m.width), "embed_dim": int(m.embed_dim), "input_size": int(m.input_size), "crop": crop},
            "state_dict": best.net.state_dict(), "run": out.name, "dataset": str(root),
            "offset_accuracy": held["offset_acc"], "figures": figures}
    _save_final(out, EXPERT_FILE, blob, figures)
    print(f"\nsync expert run: {out}\n  offset accuracy (within 1 frame of shifts {list(cfg.eval_shifts)}): "
          f"val {val_acc['offset_acc']:.1%}" + (f", test {held['offset_acc']:.1%}" if test else "")
          + f" ({held['trials']} trials; chance ~{3 / 31:.0%})")
    if _near_chance(held["offset_acc"]):
        print("  warning: near chance, so LSE-C/D scored by this expert mean little; it needs more training clips "
              "(hours of speech, as HDTF has) or the official syncnet_v2.model", file=sys.stderr)
    return out


KINDS = {"landmarker": (LandmarkerConfig, train_landmarker, LANDMARKER_FILE),
         "syncnet": (SyncExpertConfig, train_sync_expert, EXPERT_FILE)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamhead_lit.evaluators", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--config", help="experiment file (default: evaluators/<kind>.yaml)")
    parser.add_argument("--if-needed", action="store_true",
                        help="skip when the run is already finished; resume it when it was interrupted")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=data/synthtalk trainer.max_steps=500")
    args = parser.parse_intermixed_args(argv)
    schema, train_fn, final = KINDS[args.kind]
    try:
        cfg = load_config(args.config or f"evaluators/{args.kind}.yaml", args.overrides, schema=schema)
        out = evaluator_run_dir(args.kind, cfg.data.root, runs_root=cfg.runs_root, name=cfg.name)
        if args.if_needed and (out / DONE_FILE).is_file() and (out / final).is_file():
            print(f"{args.kind} run {out} is complete ({DONE_FILE}); not retraining")
            return 0
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        train_fn(cfg, resume=args.if_needed)
    except (ConfigError, ClipError, FileNotFoundError, ValueError, NonFiniteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
