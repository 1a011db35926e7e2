"""Training the 68-point landmarker (:class:`~dreamhead_lit.models.landmarker.LandmarkNet`) that scores LMD on
rendered faces: ``python -m dreamhead_lit.train landmarker [data.root=...]``.

It is trained on the dataset's exact ``landmarks68.npy`` of the train split, with random shifts, scale, small
rotations, colour jitter, blur and noise (:func:`augment_batch`: generated frames are softer than rendered ones), and
validated on **held-out identities** (:class:`~dreamhead_lit.data.scorer_data.LandmarkerDataModule`): the mean L2
error per point in pixels at the dataset resolution, which picks ``best-*.ckpt``. When training ends,
:func:`export_landmarker` writes ``landmarker.pt`` from the best checkpoint, the file
:class:`~dreamhead_lit.metrics.scorers.TrainedLandmarker` loads, and returns its figures for ``done.json``.
"""
from __future__ import annotations

import math
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
from ..data.clip import ClipReader
from ..data.landmarks import MOUTH
from ..metrics.lmd import lmd_from_landmarks
from ..metrics.scorers import LANDMARKER_FILE, TrainedLandmarker, save_final
from ..models.landmarker import LandmarkNet, resize_points
from ..models.layers import resize_images
from .scorer_base import ScorerModule, ScorerOptimConfig, best_or_last

__all__ = ["LandmarkerAugmentConfig", "LandmarkerConfig", "LandmarkerModule", "LandmarkerNetConfig", "augment_batch",
           "export_landmarker", "point_errors"]


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
class LandmarkerConfig(RunConfig):
    name: str | None = None  # default landmarker-<dataset folder name>
    val_identities: int = 1  # identities of the train split held out for validation (the last ones, sorted)
    val_frame_stride: int = 5  # every k-th frame of the held-out clips is scored
    model: LandmarkerNetConfig = field(default_factory=LandmarkerNetConfig)
    augment: LandmarkerAugmentConfig = field(default_factory=LandmarkerAugmentConfig)
    optim: ScorerOptimConfig = field(default_factory=ScorerOptimConfig)


def augment_batch(images: Tensor, points: Tensor, cfg: LandmarkerAugmentConfig,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
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
            blurred = F.conv2d(F.pad(x[blur], (radius, radius, 0, 0), mode="replicate"),
                               k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)  # along x
            blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="replicate"),
                               k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)  # along y
            x = x.clone()
            x[blur] = blurred
    if cfg.noise > 0:
        noise = torch.randn(x.shape, generator=generator).to(dev)  # drawn before the std: the RNG order is kept
        x = x + noise * (torch.rand(b, 1, 1, 1, generator=generator).to(dev) * cfg.noise)
    return x.clamp(0, 1), new_points


def point_errors(pred: Tensor, true: Tensor) -> tuple[Tensor, Tensor]:
    """Mean L2 error per point over all 68 and over the mouth (48-67), per image: ``(B,)`` each, in input units."""
    d = (pred - true).norm(dim=-1)  # (B, 68)
    return d.mean(-1), d[:, list(MOUTH)].mean(-1)


class LandmarkerModule(ScorerModule):
    """Trains :class:`LandmarkNet` on augmented frames; validation error in pixels at the dataset resolution."""

    def __init__(self, *, resolution: int, net: dict | None = None, augment: dict | None = None,
                 optim: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net_cfg = LandmarkerNetConfig(**(net or {}))
        self.aug_cfg = LandmarkerAugmentConfig(**(augment or {}))
        self.optim_cfg = ScorerOptimConfig(**(optim or {}))
        self.resolution = int(resolution)
        n = self.net_cfg
        self.net = LandmarkNet(input_size=n.input_size, channels=list(n.channels), blocks=n.blocks)
        self.val_err = MeanMetric()
        self.val_err_mouth = MeanMetric()

    @classmethod
    def from_datamodule(cls, dm: Any, **sections: Any) -> LandmarkerModule:
        """At the resolution of the dataset the DataModule reads (the validation error's pixels)."""
        return cls(resolution=dm.resolution, **sections)

    def predict_points(self, images: Tensor) -> Tensor:
        """images ``(B, 3, H, W)`` in [0, 1] -> ``(B, 68, 2)`` in the images' pixels."""
        h, w = images.shape[-2:]
        s = self.net.input_size
        return resize_points(self.net(resize_images(images, s)), (s, s), (h, w))

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        images, points = batch["image"], batch["landmarks"]
        s = self.net.input_size
        x = resize_images(images, s)
        p = resize_points(points, tuple(images.shape[-2:]), (s, s))
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


def export_landmarker(out: Path, trainer: L.Trainer, cfg: DictConfig) -> dict[str, Any]:
    """The registry's ``export`` hook: ``landmarker.pt`` from the best checkpoint, with its errors on the held-out
    identities (every frame) and, for information, on the test splits' ground truth; returns those figures."""
    dm = trainer.datamodule
    best = best_or_last(trainer, LandmarkerModule).eval()
    landmarker = TrainedLandmarker(best.net, name="eval")
    val = landmarker_error(landmarker, dm.val_readers, stride=1)
    figures: dict[str, Any] = {f"val_{k}": v for k, v in val.items()}
    figures.update({"val_identities": dm.held_out, "resolution": dm.resolution, "steps": trainer.global_step,
                    "train_seconds": trainer.lightning_module.train_seconds()})
    test_readers = dm.test_readers()
    if test_readers:  # for information: the frames the bench applies it to (their ground truth); not used to select
        figures.update({f"test_{k}": v for k, v in landmarker_error(landmarker, test_readers, stride=5).items()})
    net = {"input_size": best.net.input_size, "channels": list(cfg.model.channels), "blocks": int(cfg.model.blocks)}
    blob = {"net": net, "state_dict": best.net.state_dict(), "run": out.name, "dataset": str(dm.root),
            "resolution": dm.resolution, "val_err_px": val["err_px"], "val_err_mouth_px": val["err_mouth_px"],
            "figures": figures}
    save_final(out / LANDMARKER_FILE, blob)
    print(f"\n{out / LANDMARKER_FILE}\n  on held-out identities {dm.held_out} at {dm.resolution} px: error "
          f"{val['err_px']:.3f} px per point (mouth {val['err_mouth_px']:.3f}); M-LMD against the truth "
          f"{val['lmd_mouth_px']:.3f} px, F-LMD {val['lmd_face_px']:.3f} px")
    if test_readers:
        print(f"  on the test splits' ground truth ({', '.join(dm.test_splits)}): error "
              f"{figures['test_err_px']:.3f} px (mouth {figures['test_err_mouth_px']:.3f}); "
              f"M-LMD {figures['test_lmd_mouth_px']:.3f} px")
    return figures


def landmarker_error(landmarker: TrainedLandmarker, readers: list[ClipReader], *, stride: int) -> dict[str, float]:
    """The landmarker against the true points over every ``stride``-th frame of the clips, in pixels:
    ``err_px`` / ``err_mouth_px``: mean L2 error per point (all 68 / mouth); ``lmd_mouth_px`` / ``lmd_face_px``: the
    M-LMD / F-LMD of its landmarks against the truth (each frame's points centred, as LMD measures): the floor this
    instrument adds to an LMD."""
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
            "lmd_mouth_px": float(np.mean([x.mouth for x in lmds])),
            "lmd_face_px": float(np.mean([x.face for x in lmds]))}
