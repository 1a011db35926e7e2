"""The emotion classifier's network (the bench's ``emotion`` column) and its input.

:class:`EmotionNet` is a small temporal classifier over a sequence of 68-point landmarks: a per-frame linear map of the
136 coordinates, residual 1-D convolutions over time (dilated: four layers of kernel 5 see 61 frames, 2.4 s), then mean and standard
deviation pooled over time (an emotion is mostly a held expression, partly how much the face moves) and a linear layer
to one logit per emotion of MEAD's eight (:data:`dreamhead_lit.data.clip.EMOTIONS`). Pooling takes any length: it
trains on windows and scores whole clips.

:func:`emotion_input` prepares its input; it sits beside the network, as ``sync_video_input`` sits beside the sync
expert, because training (:mod:`dreamhead_lit.data.scorer_data`) and scoring
(:class:`dreamhead_lit.metrics.scorers.TrainedEmotionClassifier`) must prepare landmarks identically. Each frame is
mapped into the canonical pose of :func:`dreamhead_lit.data.landmarks.canonicalize` (a similarity fitted on the points
speech does not move), so head pose, position and face size -- which differ between datasets, crops and generated
videos, and say nothing about emotion -- cannot carry the label; the template is subtracted, leaving the face's shape
and expression in face units. What a similarity cannot remove (out-of-plane rotation, identity face shape) stays.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..data.clip import EMOTIONS
from ..data.landmarks import canonical_template68, canonicalize

__all__ = ["EmotionNet", "emotion_input", "emotion_label"]


def emotion_label(emotion: str) -> int | None:
    """The class index of an index entry's ``emotion`` (its position in ``EMOTIONS``); None for any other value
    ("unknown", "", a dataset's own names), which no score can be checked against."""
    return EMOTIONS.index(emotion) if emotion in EMOTIONS else None


def emotion_input(landmarks68: np.ndarray) -> Tensor:
    """The classifier's input: ``(T, 68, 2)`` landmarks in any pixel frame -> ``(T, 68, 2)`` float32 canonical
    displacements from the template (face units), the same for any similarity transform of the input.

    Raises:
        ValueError: not ``(T, 68, 2)``, or non-finite points (drop the frames a landmarker missed first).
    """
    pts = np.asarray(landmarks68, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[1:] != (68, 2):
        raise ValueError(f"emotion input must be (T, 68, 2) landmarks, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("emotion input has non-finite landmarks; drop the frames without a face first")
    template = canonical_template68()
    canonical, _ = canonicalize(pts, pts, template68=template)
    return torch.from_numpy(canonical - template)


class _TemporalBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
            nn.BatchNorm1d(channels), nn.GELU(), nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class EmotionNet(nn.Module):
    """Canonical landmark displacements ``(B, T, 68, 2)`` -> emotion logits ``(B, num_emotions)``.

    The input is standardised per coordinate by a BatchNorm without affine parameters (its running statistics come from
    the training data: displacements are hundredths of a face unit), so no dataset-specific scale is hard-coded.
    """

    num_points = 68

    def __init__(self, *, channels: int = 64, layers: int = 4, kernel: int = 5, dropout: float = 0.1,
                 num_emotions: int = len(EMOTIONS)) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"emotion kernel must be odd (centred in time), got {kernel}")
        coords = 2 * self.num_points
        self.channels, self.layers, self.kernel, self.num_emotions = channels, layers, kernel, num_emotions
        self.norm = nn.BatchNorm1d(coords, affine=False)
        self.inp = nn.Conv1d(coords, channels, 1)
        self.blocks = nn.Sequential(*[_TemporalBlock(channels, kernel, 2**i, dropout) for i in range(layers)])
        self.head = nn.Linear(2 * channels, num_emotions)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[2:] != (self.num_points, 2):
            raise ValueError(f"emotion net input must be (B, T, 68, 2), got {tuple(x.shape)}")
        h = self.blocks(self.inp(self.norm(x.flatten(2).transpose(1, 2))))  # (B, C, T)
        std = (h.var(dim=-1, unbiased=False) + 1e-6).sqrt()  # biased: a 1-frame clip gives 0, not NaN
        return self.head(torch.cat([h.mean(dim=-1), std], dim=-1))  # (B, num_emotions)
