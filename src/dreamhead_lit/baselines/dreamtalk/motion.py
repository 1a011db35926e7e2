"""DreamTalk's motion space here: a PCA basis of canonical landmark displacements, standing in for the 64-d 3DMM
expression the paper diffuses (BASELINES.md, "PCA motion basis for 3DMM").

A frame's motion is its canonical (pose-free) landmarks minus its speaker's reference landmarks, as stage 1 defines
displacements; the reference is a neutral frame of the speaker (``data.neutral_references``), so the motion is the
expression, as a 3DMM's expression parameters are. The face is cut in two parts, each with its own basis, because
DreamTalk decodes the upper and the lower face separately:

- **lower face**: every point of the mouth region (dlib 48-67 and the dense points on the lip contours) and every
  point whose mean neutral height lies below the nose tip (dlib point 33): the jaw from dlib points 2-14 (their
  canonical heights are 0.27-0.94 face units, the nose tip's 0.21), the chin and the dense points between them;
- **upper face**: the rest: brows, eyes, nose, the jaw's upper ends (dlib 0, 1, 15, 16), which the canonical pose
  fit holds still.

Each point belongs to exactly one part and its displacement is ``mean + coefficients @ components`` of that part
(orthonormal components), so the mouth points are linear in the lower-face coefficients and in nothing else.

The basis is fitted once, on every frame of the train split, in float64 from sums accumulated clip by clip in the
index's order, with each component's sign fixed (largest entry positive): a deterministic computation, so every DDP
rank builds the same basis (and DDP broadcasts rank 0's buffers when it wraps the module anyway). It lives in buffers
of the LightningModule, so a checkpoint alone reconstructs the motion.

Coefficients are divided by one scale per part (the root mean eigenvalue of its kept components): the diffusion
target has unit variance on average in each part, and within a part the loss stays proportional to the landmark MSE
(one scale for all its components, not a whitening that would inflate the noise-level components).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from ...data.landmarks import REGION_MOUTH

NOSE_TIP_68 = 33  # dlib point whose canonical height separates the lower face from the upper face
PARTS = ("lower", "upper")  # the order of the coefficients: lower face first


@dataclass
class MotionConfig:
    """How many principal components each part keeps (the fit reports the variance they explain)."""

    lower_components: int = 12  # mouth and jaw: speech moves them along a handful of articulatory directions
    upper_components: int = 8  # brows, eyes, blinks: emotion and blinking


def face_parts(mean_shape: np.ndarray, regions: np.ndarray, nose_tip_y: float) -> tuple[list[int], list[int]]:
    """(lower, upper) point indices of a landmark set: mouth-region points and points below ``nose_tip_y`` (mean
    canonical height; y grows downwards) are the lower face, the rest the upper face."""
    mean_shape, regions = np.asarray(mean_shape), np.asarray(regions)
    lower = (regions == REGION_MOUTH) | (mean_shape[:, 1] > nose_tip_y)
    return np.flatnonzero(lower).tolist(), np.flatnonzero(~lower).tolist()


class _Moments:
    """Sum, sum of outer products and count of one part's flattened displacements, in float64."""

    def __init__(self, dim: int) -> None:
        self.total = np.zeros(dim)
        self.outer = np.zeros((dim, dim))
        self.count = 0

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        self.total += x.sum(0)
        self.outer += x.T @ x
        self.count += len(x)

    def pca(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(mean (D,), components (k, D), eigenvalues (k,), total variance) of the accumulated data."""
        if self.count < 2:
            raise ValueError(f"the motion basis needs at least 2 frames, got {self.count}")
        mean = self.total / self.count
        cov = self.outer / self.count - np.outer(mean, mean)
        values, vectors = np.linalg.eigh((cov + cov.T) / 2)  # ascending
        values, vectors = values[::-1][:k].clip(min=0.0), vectors[:, ::-1][:, :k].T  # (k,), (k, D)
        # eigh's signs are arbitrary: fix them so the fit is the same wherever it runs
        signs = np.sign(vectors[np.arange(len(vectors)), np.abs(vectors).argmax(1)])
        return mean, vectors * signs[:, None], values, float(np.trace(cov))


class PartBasis(nn.Module):
    """One face part: its point indices and PCA basis (buffers, so checkpoints carry them)."""

    points: Tensor
    mean: Tensor
    components: Tensor
    scale: Tensor
    explained: Tensor

    def __init__(self, points: list[int], num_components: int) -> None:
        super().__init__()
        dim = 2 * len(points)
        if not 0 < num_components <= dim:
            raise ValueError(f"a face part of {len(points)} points has 1..{dim} components, got {num_components}")
        self.register_buffer("points", torch.as_tensor(points, dtype=torch.long))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(num_components, dim))  # orthonormal rows
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("explained", torch.zeros(num_components))  # cumulative share of the part's variance

    @property
    def num_components(self) -> int:
        return self.components.shape[0]

    def set_fit(self, moments: _Moments) -> None:
        mean, components, values, total = moments.pca(self.num_components)
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(mean))
            self.components.copy_(torch.from_numpy(components))
            self.scale.fill_(float(np.sqrt(max(values.mean(), 1e-12))))
            self.explained.copy_(torch.from_numpy(np.cumsum(values) / max(total, 1e-12)))

    def encode(self, disp: Tensor) -> Tensor:
        """(..., N, 2) displacements of the whole face -> (..., k) scaled coefficients of this part."""
        x = disp[..., self.points, :].flatten(-2) - self.mean  # (..., 2 * n)
        return x @ self.components.T / self.scale

    def decode(self, coeffs: Tensor) -> Tensor:
        """(..., k) -> (..., n, 2) displacements of this part's points."""
        return (self.mean + (coeffs * self.scale) @ self.components).unflatten(-1, (-1, 2))


class MotionBasis(nn.Module):
    """Landmark displacements (..., N, 2) <-> motion coefficients (..., C), C = lower + upper components."""

    def __init__(self, *, num_points: int, lower_points: list[int], upper_points: list[int], lower_components: int,
                 upper_components: int) -> None:
        super().__init__()
        if sorted([*lower_points, *upper_points]) != list(range(num_points)):
            raise ValueError(f"the lower and upper face must split the {num_points} points, each point in one part")
        self.num_points = num_points
        self.lower = PartBasis(lower_points, lower_components)
        self.upper = PartBasis(upper_points, upper_components)

    @property
    def dims(self) -> tuple[int, int]:
        """(lower, upper) numbers of coefficients; the lower face's come first."""
        return self.lower.num_components, self.upper.num_components

    @property
    def dim(self) -> int:
        return sum(self.dims)

    def parts(self) -> tuple[PartBasis, PartBasis]:
        return self.lower, self.upper

    def fit(self, displacements: Iterable[np.ndarray]) -> MotionBasis:
        """Fit both parts on ``displacements`` (arrays (T, N, 2), e.g. one per train clip); returns ``self``."""
        moments = [_Moments(2 * len(part.points)) for part in self.parts()]
        for disp in displacements:
            for part, m in zip(self.parts(), moments):
                m.add(np.asarray(disp)[:, part.points.numpy()].reshape(len(disp), -1))
        for part, m in zip(self.parts(), moments):
            part.set_fit(m)
        return self

    def encode(self, disp: Tensor) -> Tensor:
        """(..., N, 2) displacements -> (..., C) coefficients, [lower | upper]."""
        return torch.cat([part.encode(disp) for part in self.parts()], -1)

    def decode(self, coeffs: Tensor) -> Tensor:
        """(..., C) coefficients -> (..., N, 2) displacements."""
        lower, upper = coeffs.split(self.dims, -1)
        out = coeffs.new_zeros(*coeffs.shape[:-1], self.num_points, 2)
        out[..., self.lower.points, :] = self.lower.decode(lower)
        out[..., self.upper.points, :] = self.upper.decode(upper)
        return out

    def summary(self) -> dict:
        """Points, components and the share of each part's variance they explain (for logs and ``done.json``)."""
        return {name: {"points": len(part.points), "components": part.num_components,
                       "variance_explained": round(float(part.explained[-1]), 5)}
                for name, part in zip(PARTS, self.parts())}


__all__ = ["MotionBasis", "MotionConfig", "NOSE_TIP_68", "PARTS", "PartBasis", "face_parts"]
