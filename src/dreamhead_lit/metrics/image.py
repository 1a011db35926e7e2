"""SSIM and PSNR per frame against ground truth, averaged over frames -- on whole frames or on the mouth region.

Conventions:

* Images are ``(B, C, H, W)`` tensors, uint8 [0, 255] or float [0, 1]; uint8 is divided by 255, and both metrics
  run with ``data_range = 1.0`` on the [0, 1] values (the same numbers as uint8 with ``data_range = 255``).
* **SSIM** (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004, eq. 13): Gaussian window 11x11, sigma 1.5, K1 = 0.01,
  K2 = 0.03, population (biased) local variances. Local statistics are taken only where the whole window fits in
  the image (a "valid" filter), then the SSIM map is averaged over pixels and channels (RGB: per-channel SSIM,
  averaged). This equals ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=...)``, which filters the padded image and then crops
  the 5-pixel border the window cannot cover.
* **PSNR** per image: ``10 log10(data_range^2 / MSE)`` with the MSE over all pixels and channels of that image; the
  metric is the mean of the per-frame values (``inf`` for an exact copy, which then makes the mean ``inf``).
* **Mouth region** (``region="mouth"``): for each frame, the square box centred on the bounding box of the 20 mouth
  landmarks (points 48-67, pixel coordinates, pixel centres at integers -- the dlib convention) with side
  ``(1 + 2 * MOUTH_MARGIN) * max(width, height)`` (at least ``MOUTH_MIN_SIDE`` px), cut from *both* the generated
  and the ground-truth frame with ``torchvision.ops.roi_align`` (bilinear, averaged over each output cell, so
  shrinking is anti-aliased) and resized to ``MOUTH_CROP_SIZE`` x ``MOUTH_CROP_SIZE`` = 96x96. The box comes from
  the landmarks given (use the ground-truth frame's), so both crops cover the same pixels; parts of the box outside
  the frame read as zeros on both sides. A crop rather than a mask: a mask edge would cut through SSIM's 11x11
  windows and let the amount of background inside the mask move PSNR; a fixed-size crop weighs every frame the
  same whatever the face size.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import roi_align

from dreamhead_lit.data.landmarks import MOUTH
from dreamhead_lit.metrics._common import ReportMixin, check_same_shape, unit_float_images

__all__ = [
    "ImageRegion",
    "SSIM_WINDOW",
    "SSIM_SIGMA",
    "MOUTH_CROP_SIZE",
    "MOUTH_MARGIN",
    "mouth_boxes",
    "crop_mouth",
    "ssim_per_image",
    "psnr_per_image",
    "SSIMMetric",
    "PSNRMetric",
]

ImageRegion = Literal["frame", "mouth"]
SSIM_WINDOW = 11  # Wang et al. 2004: 11x11 circular-symmetric Gaussian weights
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 1.0  # images are compared as floats in [0, 1]
MOUTH_CROP_SIZE = 96  # side of the resized mouth crop (the lower-face size of Wav2Lip-style lip experts)
MOUTH_MARGIN = 0.25  # box side = (1 + 2 * margin) * the mouth points' larger extent
MOUTH_MIN_SIDE = 8.0  # pixels; keeps a degenerate (collapsed) landmark set from giving an empty box


def _gaussian_1d(size: int, sigma: float, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian filter over H and W, 'valid' (no padding): (..., H, W) -> (..., H - k + 1, W - k + 1).

    Written as k shifted multiply-adds per axis: exact in float64 and several times faster on CPU than a float64
    depthwise conv2d, which PyTorch runs on a slow generic path.
    """
    k = len(g)
    taps = [float(w) for w in g]
    w_out, h_out = x.shape[-1] - k + 1, x.shape[-2] - k + 1
    along_w = x[..., :w_out] * taps[0]
    for i in range(1, k):
        along_w.add_(x[..., i : i + w_out], alpha=taps[i])
    out = along_w[..., :h_out, :] * taps[0]
    for i in range(1, k):
        out.add_(along_w[..., i : i + h_out, :], alpha=taps[i])
    return out


def ssim_per_image(preds: Tensor, target: Tensor) -> Tensor:
    """SSIM of each image pair, ``(B,)`` float64: Wang et al. 2004 eq. 13, mean over pixels and channels.

    ``preds``/``target``: ``(B, C, H, W)`` uint8 or float [0, 1], H and W at least 11.
    """
    check_same_shape(preds, target)
    x = unit_float_images(preds, name="preds", dtype=torch.float64)
    y = unit_float_images(target, name="target", dtype=torch.float64)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(x.shape[-2:])}")
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA, dtype=x.dtype, device=x.device)
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2  # population (weighted) variances: use_sample_covariance=False
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def psnr_per_image(preds: Tensor, target: Tensor) -> Tensor:
    """PSNR of each image pair in dB, ``(B,)`` float64: ``10 log10(1 / MSE)`` on [0, 1] values (inf if equal)."""
    check_same_shape(preds, target)
    x = unit_float_images(preds, name="preds", dtype=torch.float64)
    y = unit_float_images(target, name="target", dtype=torch.float64)
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)


def _mouth_points(landmarks: Tensor | np.ndarray) -> Tensor:
    lm = torch.as_tensor(np.asarray(landmarks) if not isinstance(landmarks, Tensor) else landmarks)
    if lm.ndim != 3 or lm.shape[-1] != 2 or lm.shape[1] not in (68, len(MOUTH)):
        raise ValueError(
            f"mouth landmarks must be (B, 68, 2) or (B, {len(MOUTH)}, 2) pixel coordinates, got {tuple(lm.shape)}"
        )
    lm = lm[:, list(MOUTH)] if lm.shape[1] == 68 else lm
    if not torch.isfinite(lm).all():
        raise ValueError("mouth landmarks contain NaN/inf (a frame without detection?); drop those frames first")
    return lm.to(torch.float64)


def mouth_boxes(landmarks: Tensor | np.ndarray, *, margin: float = MOUTH_MARGIN) -> Tensor:
    """Square mouth boxes ``(B, 4)`` as ``(x0, y0, x1, y1)`` pixel coordinates (see the module docstring)."""
    pts = _mouth_points(landmarks)  # (B, 20, 2)
    lo, hi = pts.min(dim=1).values, pts.max(dim=1).values  # (B, 2)
    centre = (lo + hi) / 2
    side = ((hi - lo).max(dim=1).values * (1 + 2 * margin)).clamp(min=MOUTH_MIN_SIDE)  # (B,)
    half = side[:, None] / 2
    return torch.cat([centre - half, centre + half], dim=1)


def crop_mouth(
    images: Tensor, landmarks: Tensor | np.ndarray, *, size: int = MOUTH_CROP_SIZE, margin: float = MOUTH_MARGIN
) -> Tensor:
    """Mouth crops ``(B, C, size, size)`` float [0, 1] of images ``(B, C, H, W)`` (uint8 or float [0, 1])."""
    x = unit_float_images(images, name="images")
    boxes = mouth_boxes(landmarks, margin=margin)
    if boxes.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {boxes.shape[0]} landmark sets; give one per image")
    # roi_align(aligned=True) samples continuous coordinate c at pixel-index position c - 0.5; landmarks put pixel
    # centres at integers, hence the +0.5.
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float64)[:, None], boxes + 0.5], dim=1)
    return roi_align(x, rois.to(x), output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def _region_pair(
    preds: Tensor, target: Tensor, *, region: ImageRegion, mouth_landmarks: Tensor | np.ndarray | None
) -> tuple[Tensor, Tensor]:
    check_same_shape(preds, target)
    if region == "frame":
        return preds, target
    if mouth_landmarks is None:
        raise ValueError("region='mouth' needs mouth_landmarks: (B, 68, 2) pixel landmarks of the ground-truth frames")
    return crop_mouth(preds, mouth_landmarks), crop_mouth(target, mouth_landmarks)


def _check_region(region: str) -> ImageRegion:
    if region not in get_args(ImageRegion):
        raise ValueError(f"region must be one of {get_args(ImageRegion)}, got {region!r}")
    return region  # type: ignore[return-value]


class _PerFrameMean(ReportMixin, Metric):
    """Mean over frames of a per-frame score; state: sum (float64) and count."""

    is_differentiable = False
    full_state_update = False
    _name = ""

    total: Tensor
    count: Tensor

    def __init__(self, *, region: ImageRegion = "frame", **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.region = _check_region(region)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @staticmethod
    def _per_image(preds: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor, mouth_landmarks: Tensor | np.ndarray | None = None) -> None:
        """Add frame pairs ``(B, C, H, W)``; ``mouth_landmarks`` ``(B, 68, 2)`` (ground truth) for ``region='mouth'``."""
        p, t = _region_pair(preds, target, region=self.region, mouth_landmarks=mouth_landmarks)
        scores = self._per_image(p, t)
        self.total = self.total + scores.sum().to(self.total)
        self.count = self.count + scores.numel()

    def _mean(self) -> float:
        n = int(self.count)
        if n == 0:
            raise ValueError(f"{type(self).__name__}: no frames were added; call update() first")
        return float(self.total) / n

    def compute(self) -> Tensor:
        return torch.tensor(self._mean(), dtype=torch.float64)

    @property
    def name(self) -> str:
        """``ssim``/``psnr`` for whole frames, ``ssim_mouth``/``psnr_mouth`` for the mouth region."""
        return self._name if self.region == "frame" else f"{self._name}_mouth"

    def _report_values(self) -> dict[str, float | int | str]:
        return {self.name: self._mean(), f"{self.name}_frames": int(self.count)}


class SSIMMetric(_PerFrameMean):
    """Mean per-frame SSIM (:func:`ssim_per_image`) over whole frames or mouth crops (``region``)."""

    higher_is_better = True
    _name = "ssim"

    @staticmethod
    def _per_image(preds: Tensor, target: Tensor) -> Tensor:
        return ssim_per_image(preds, target)


class PSNRMetric(_PerFrameMean):
    """Mean per-frame PSNR in dB (:func:`psnr_per_image`) over whole frames or mouth crops (``region``)."""

    higher_is_better = True
    _name = "psnr"

    @staticmethod
    def _per_image(preds: Tensor, target: Tensor) -> Tensor:
        return psnr_per_image(preds, target)
