"""StyleTalker's mouth mask: the motion encoder sees each frame with its mouth hidden, so the motion latent it learns
(head pose, blinks) cannot carry the lips, which the audio branch alone must explain (Min et al., Sec. 3.3).

The box is the same size in every frame, ``box`` = (width, height) as fractions of the frame, centred on that frame's
mouth centre (the mean of points 48-67 of the 68-point set) and shifted, never shrunk, where it would leave the frame.
A fixed size on purpose: a box fitted to the lips would reveal, by its own shape, how open the mouth is.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ...data.landmarks import MOUTH

DEFAULT_BOX = (0.40, 0.28)  # (width, height), fractions of the frame side


def mouth_centres(landmarks68: Tensor | np.ndarray) -> Tensor:
    """``(T, 2)`` float32 mouth centres (x, y pixels) of ``(T, 68, 2)`` landmarks: the mean of points 48-67."""
    lm = landmarks68 if isinstance(landmarks68, Tensor) else torch.from_numpy(np.array(landmarks68, dtype=np.float32))
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"mouth_centres: expected (T, 68, 2) landmarks, got {tuple(lm.shape)}")
    return lm[:, list(MOUTH)].float().mean(1)


def box_pixels(size: tuple[int, int], box: Sequence[float] = DEFAULT_BOX) -> tuple[int, int]:
    """(width, height) in pixels of the box ``box`` (fractions) in frames of ``size`` = (H, W); at least 1 pixel."""
    if len(box) != 2 or not all(0.0 < float(b) <= 1.0 for b in box):
        raise ValueError(f"mouth mask box must be (width, height) fractions of the frame in (0, 1], got {list(box)}")
    h, w = size
    return max(1, round(float(box[0]) * w)), max(1, round(float(box[1]) * h))


def mouth_boxes(mouth_centres: Tensor, size: tuple[int, int], box: Sequence[float] = DEFAULT_BOX) -> Tensor:
    """``(T, 4)`` long boxes ``(x0, y0, x1, y1)`` (pixel indices, ``x1``/``y1`` exclusive) of the mask in frames of
    ``size`` = (H, W) around ``mouth_centres`` ``(T, 2)`` (x, y; pixel centres at integers). Every box has the same
    width and height: one crossing an edge is moved inside the frame."""
    c = torch.as_tensor(mouth_centres, dtype=torch.float32)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"mouth_boxes: expected (T, 2) mouth centres, got {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise ValueError("mouth_boxes: mouth centres contain NaN/inf (a frame without landmarks?)")
    bw, bh = box_pixels(size, box)
    h, w = size
    x0 = torch.round(c[:, 0] - (bw - 1) / 2).long().clamp(0, w - bw)
    y0 = torch.round(c[:, 1] - (bh - 1) / 2).long().clamp(0, h - bh)
    return torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)


def mouth_mask(mouth_centres: Tensor, size: tuple[int, int], box: Sequence[float] = DEFAULT_BOX) -> Tensor:
    """``(T, 1, H, W)`` bool, True inside each frame's mouth box."""
    boxes = mouth_boxes(mouth_centres, size, box)
    h, w = size
    xs, ys = torch.arange(w), torch.arange(h)
    inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])  # (T, W)
    inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])  # (T, H)
    return (inside_y[:, :, None] & inside_x[:, None, :])[:, None]


def mask_mouth(frames: Tensor, mouth_centres: Tensor, *, box: Sequence[float] = DEFAULT_BOX) -> Tensor:
    """Frames ``(T, 3, H, W)`` in [-1, 1] with each frame's mouth box filled with 0 (mid grey), around
    ``mouth_centres`` ``(T, 2)`` pixels of those frames."""
    if frames.ndim != 4 or len(mouth_centres) != len(frames):
        raise ValueError(f"mask_mouth: expected frames (T, 3, H, W) and (T, 2) mouth centres, got "
                         f"{tuple(frames.shape)} and {tuple(torch.as_tensor(mouth_centres).shape)}")
    mask = mouth_mask(mouth_centres, tuple(frames.shape[-2:]), box).to(frames.device)
    return torch.where(mask, torch.zeros((), dtype=frames.dtype, device=frames.device), frames)


__all__ = ["DEFAULT_BOX", "box_pixels", "mask_mouth", "mouth_boxes", "mouth_centres", "mouth_mask"]
