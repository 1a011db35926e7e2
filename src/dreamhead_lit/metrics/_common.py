"""Shared by the metrics: input checks and conversions, and the synced `report()` every metric offers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

# A float image may overshoot [0, 1] by this much (resampling, decoding) before it is called out of range.
RANGE_TOLERANCE = 1e-3


def unit_float_images(images: Tensor, *, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B, C, H, W)`` uint8 [0, 255] or float [0, 1] -> ``dtype`` in [0, 1] (uint8 divided by 255).

    Raises:
        ValueError: wrong rank, or float values outside [0, 1] (e.g. [-1, 1] images passed by mistake).
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (B, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name}: expected shape (B, C, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.to(dtype) / 255.0
    if not images.is_floating_point():
        raise ValueError(f"{name}: expected uint8 or float images, got dtype {images.dtype}")
    if images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise ValueError(
                f"{name}: float images must be in [0, 1], got values in [{lo:.3f}, {hi:.3f}]; "
                "convert [-1, 1] images with (x + 1) / 2, or pass uint8"
            )
    return images.to(dtype).clamp(0.0, 1.0)


def check_same_shape(preds: Tensor, target: Tensor) -> None:
    if preds.shape != target.shape:
        raise ValueError(f"preds and target must have the same shape, got {tuple(preds.shape)} and {tuple(target.shape)}")


def uint8_frames(frames: Any, *, name: str) -> np.ndarray:
    """``(T, H, W, 3)`` (or one ``(H, W, 3)`` frame) RGB uint8 as a contiguous numpy array.

    Accepts numpy arrays or tensors; float input must be in [0, 1] and is scaled by 255 and rounded.
    """
    arr = frames.detach().cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(f"{name}: expected RGB frames (T, H, W, 3) or one frame (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{name}: expected uint8 or float [0, 1] frames, got dtype {arr.dtype}")
        if arr.size and (arr.min() < -RANGE_TOLERANCE or arr.max() > 1 + RANGE_TOLERANCE):
            raise ValueError(f"{name}: float frames must be in [0, 1], got [{arr.min():.3f}, {arr.max():.3f}]")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


class ReportMixin:
    """``report()``: the metric's values as a flat dict of Python scalars and labels, synced across ranks once.

    ``compute()`` returns tensors (so Lightning can log it); ``report()`` adds what a results table must state next to
    the numbers -- counts, the network that produced the features, fallbacks -- from the same synced state.
    Subclasses implement ``_report_values()`` reading the (already synced) states.
    """

    def _report_values(self) -> dict[str, float | int | str]:
        raise NotImplementedError

    def report(self) -> dict[str, float | int | str]:
        metric = self  # a torchmetrics Metric
        with metric.sync_context(  # type: ignore[attr-defined]
            dist_sync_fn=metric.dist_sync_fn,  # type: ignore[attr-defined]
            should_sync=metric._to_sync,  # type: ignore[attr-defined]
            should_unsync=metric._should_unsync,  # type: ignore[attr-defined]
        ):
            return self._report_values()
