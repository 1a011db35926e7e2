"""DAE-Talker's head pose, read from the dataset's landmarks, and the pose predictor and projector of speech2latent.

The paper's pose is a head pose per frame; here it is the per-frame similarity that maps the canonical (pose-free)
landmarks back into the crop (``canonical()``'s ``to_image``, fitted on the stable 68 points), written as
``(angle, log scale, x, y)``: in-plane rotation (radians), log of the pixels per face unit, translation in units of
the crop size. A model sees it standardised with the train split's mean and standard deviation
(:class:`Standardizer`), so a pose of zeros is the train split's mean pose.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from ...data.datamodule import DatasetContext

POSE_NAMES = ("angle", "log_scale", "x", "y")
POSE_DIM = len(POSE_NAMES)


def pose_from_affine(to_image: np.ndarray, resolution: int) -> np.ndarray:
    """``(T, 2, 3)`` similarities canonical -> crop pixels ``[[a, -b, tx], [b, a, ty]]`` -> ``(T, 4)`` float32 pose
    ``(angle, log scale, tx / resolution, ty / resolution)``."""
    m = np.asarray(to_image, dtype=np.float64)
    a, b = m[:, 0, 0], m[:, 1, 0]
    angle = np.arctan2(b, a)
    log_scale = 0.5 * np.log(np.maximum(a * a + b * b, 1e-12))
    res = float(resolution or 1)
    return np.stack([angle, log_scale, m[:, 0, 2] / res, m[:, 1, 2] / res], axis=-1).astype(np.float32)


def landmark_pose(ctx: DatasetContext, landmarks: np.ndarray) -> np.ndarray:
    """``(T, 4)`` float32 raw head pose of a clip's dense landmarks ``(T, P, 2)`` (crop pixels of ``ctx``'s dataset):
    the canonical -> crop similarity of ``data.datamodule.canonical_landmarks`` (stage 1's samples'), as a pose. The
    one path from landmarks to pose: speech2latent's training statistics and the bench's pose control both use it."""
    from ...data.datamodule import canonical_landmarks

    return pose_from_affine(canonical_landmarks(ctx, landmarks)[1], ctx.source_resolution)


def affine_from_pose(pose: np.ndarray, resolution: int) -> np.ndarray:
    """The inverse of :func:`pose_from_affine`: ``(T, 4)`` -> ``(T, 2, 3)`` canonical -> crop pixels."""
    p = np.asarray(pose, dtype=np.float64)
    s = np.exp(p[:, 1])
    a, b = s * np.cos(p[:, 0]), s * np.sin(p[:, 0])
    res = float(resolution or 1)
    out = np.zeros((len(p), 2, 3))
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = a, -b, p[:, 2] * res
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = b, a, p[:, 3] * res
    return out.astype(np.float32)


class Standardizer(nn.Module):
    """Standardises values (poses, latents) with fixed train-split statistics per channel, kept as buffers so
    checkpoints carry them."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).clamp_min(1e-6))

    def encode(self, pose: Tensor) -> Tensor:
        return (pose - self.mean) / self.std

    def decode(self, pose: Tensor) -> Tensor:
        return pose * self.std + self.mean


class PosePredictor(nn.Module):
    """FastSpeech 2's variance predictor, as DAE-Talker's pose predictor: two 1-D convolutions with ReLU, layer norm
    and dropout over the encoder's frames ``(B, T, C)``, then a linear head to the standardised pose ``(B, T, P)``.
    The context is the first frame's pose ``(B, P)``, embedded and added to every frame before the convolutions (the
    audio says how the head moves, not where it starts)."""

    def __init__(self, *, dim: int, pose_dim: int = POSE_DIM, hidden: int = 128, kernel: int = 3,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.context = nn.Linear(pose_dim, dim)
        self.convs = nn.ModuleList([nn.Conv1d(dim, hidden, kernel, padding=kernel // 2),
                                    nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2)])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden), nn.LayerNorm(hidden)])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, pose_dim)

    def forward(self, h: Tensor, first_pose: Tensor) -> Tensor:
        x = h + self.context(first_pose)[:, None]  # (B, T, C)
        for conv, norm in zip(self.convs, self.norms):
            x = self.drop(norm(torch.relu(conv(x.transpose(1, 2)).transpose(1, 2))))  # (B, T, hidden)
        return self.head(x)  # (B, T, P)


class PoseProjector(nn.Module):
    """FastSpeech 2's variance embedding, as DAE-Talker's pose projector: the standardised pose ``(B, T, P)`` mapped
    to the model width and added to the encoder's frames. No bias, so the train split's mean pose (zeros) adds
    nothing: the pose moves the latents away from those of the average head position, never the other way round."""

    def __init__(self, *, dim: int, pose_dim: int = POSE_DIM, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(pose_dim, hidden, bias=False), nn.Tanh(), nn.Linear(hidden, dim, bias=False))

    def forward(self, h: Tensor, pose: Tensor) -> Tensor:
        return h + self.net(pose)  # (B, T, C); tanh(0) = 0: a zero pose leaves h as it is


__all__ = ["POSE_DIM", "POSE_NAMES", "PosePredictor", "PoseProjector", "Standardizer", "affine_from_pose",
           "landmark_pose", "pose_from_affine"]
