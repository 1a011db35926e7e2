"""Classifier-free guidance (Ho & Salimans 2022) for the ``x0`` denoisers the samplers consume.

Guidance is applied to the ``x0`` prediction: ``x0_guided = x0_uncond + scale * (x0_cond - x0_uncond)``. This is
*exactly* Ho & Salimans' eq. 6 on ``eps`` (with ``scale = 1 + w``): at a fixed ``(x_t, t)`` the map
``x0 -> eps = (x_t - alpha x0) / sigma`` is affine and the guidance weights ``(1 - scale) + scale`` sum to one, so
guiding either quantity gives the same update. Working on ``x0`` keeps one denoiser interface for all samplers and
all prediction targets. Clip pixel predictions *after* guidance (:func:`~dreamhead_lit.diffusion.clip_denoiser`),
not inside the guided branches.

At training time, :func:`drop_condition` picks the rows whose condition is dropped (DreamTalk uses p = 0.1); each
module nulls its condition its own way (zeros or a learned null embedding), e.g. with :func:`mask_condition`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dreamhead_lit.diffusion.utils import DenoiseFn, append_dims

_STATIC_TYPES = (bool, int, float, str, type(None))


def _batch_pair(cond: Any, uncond: Any, batch: int) -> tuple[bool, Any]:
    """Whether one conditioning value pair can share a forward pass, and the merged value if so."""
    if isinstance(cond, Tensor) and isinstance(uncond, Tensor):
        if (
            cond.ndim >= 1
            and uncond.ndim == cond.ndim
            and cond.shape[0] == batch
            and uncond.shape[0] in (1, batch)
            and cond.shape[1:] == uncond.shape[1:]
            and cond.dtype == uncond.dtype
            and cond.device == uncond.device
        ):
            return True, torch.cat([cond, uncond.expand_as(cond)], dim=0)  # (2B, ...)
        return False, None
    if isinstance(cond, Tensor) or isinstance(uncond, Tensor):
        return False, None
    if cond is uncond or (isinstance(cond, _STATIC_TYPES) and type(cond) is type(uncond) and cond == uncond):
        return True, cond  # a flag shared by both passes
    return False, None


class ClassifierFreeGuidance:
    """A guided ``denoise_fn(x_t, t, **cond_args) -> x0_hat``; see :func:`classifier_free_guidance`."""

    def __init__(
        self, denoise_fn: DenoiseFn, *, scale: float, uncond_args: dict[str, Any], batched: bool = True
    ) -> None:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 0.0):
            raise ValueError(f"classifier_free_guidance: scale must be a finite number >= 0, got {scale!r}")
        if not isinstance(uncond_args, dict):
            raise TypeError(f"classifier_free_guidance: uncond_args must be a dict, got {type(uncond_args).__name__}")
        self.denoise_fn = denoise_fn
        self.scale = float(scale)
        self.uncond_args = uncond_args
        self.batched = batched

    def __repr__(self) -> str:
        keys = sorted(self.uncond_args)
        return f"ClassifierFreeGuidance(scale={self.scale}, uncond_keys={keys}, batched={self.batched})"

    def _batched_args(
        self, cond_args: dict[str, Any], uncond_full: dict[str, Any], batch: int
    ) -> dict[str, Any] | None:
        if not self.batched or set(cond_args) != set(uncond_full):
            return None
        merged: dict[str, Any] = {}
        for key, cond in cond_args.items():
            ok, value = _batch_pair(cond, uncond_full[key], batch)
            if not ok:
                return None
            merged[key] = value
        return merged

    def __call__(self, x_t: Tensor, t: Tensor, **cond_args: Any) -> Tensor:
        if self.scale == 1.0:
            return self.denoise_fn(x_t, t, **cond_args)  # exactly the conditional prediction, one pass
        # The unconditional pass keeps every argument not overridden (e.g. reference landmarks) and replaces the
        # dropped conditions with their null values.
        uncond_full = {**cond_args, **self.uncond_args}
        if self.scale == 0.0:
            return self.denoise_fn(x_t, t, **uncond_full)
        batch = x_t.shape[0]
        merged = self._batched_args(cond_args, uncond_full, batch)
        if merged is not None:
            both = self.denoise_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), **merged)  # (2B, ...)
            cond, uncond = both[:batch], both[batch:]
        else:
            cond = self.denoise_fn(x_t, t, **cond_args)
            uncond = self.denoise_fn(x_t, t, **uncond_full)
        return uncond + self.scale * (cond - uncond)  # Ho & Salimans 2022 eq. 6 with scale = 1 + w


def classifier_free_guidance(
    denoise_fn: DenoiseFn, *, scale: float, uncond_args: dict[str, Any], batched: bool = True
) -> ClassifierFreeGuidance:
    """Wrap ``denoise_fn`` so it returns ``uncond + scale * (cond - uncond)`` on the ``x0`` prediction.

    Args:
        denoise_fn: the conditional ``x0`` denoiser, ``denoise_fn(x_t, t, **extra_args)``.
        scale: guidance scale (``1 + w`` in Ho & Salimans' notation). ``1.0`` returns the conditional prediction
            exactly with a single forward pass; ``0.0`` the unconditional one; ``> 1`` extrapolates.
        uncond_args: the conditioning for the unconditional pass, merged over the sampler's ``extra_args``:
            name only what is dropped, e.g. ``{"audio": zeros}`` or ``{"drop_cond": True}``.
        batched: run the conditional and unconditional passes as one forward call on a ``2B`` batch when every
            argument allows it (tensors with batch ``B`` on both sides, or ``1`` on the unconditional side, and
            identical non-tensor values); otherwise two calls are made.
    """
    return ClassifierFreeGuidance(denoise_fn, scale=scale, uncond_args=uncond_args, batched=batched)


def drop_condition(cond: Tensor, p: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Bool mask ``(B,)``: ``True`` for the rows whose condition is dropped this step (probability ``p`` each).

    Drawn on the generator's device (CPU by default) and moved to ``cond``'s device, so a seed gives the same rows
    on any device.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop_condition: p must lie in [0, 1], got {p}")
    if cond.ndim < 1:
        raise ValueError("drop_condition: cond must have a batch axis")
    batch = cond.shape[0]
    device = generator.device if generator is not None else cond.device
    return (torch.rand(batch, generator=generator, device=device) < p).to(cond.device)  # (B,)


def mask_condition(cond: Tensor, drop: Tensor, *, null: Tensor | None = None) -> Tensor:
    """Replace the dropped rows of ``cond`` ``(B, ...)`` by ``null`` (broadcastable to one row) or zeros."""
    if drop.shape != cond.shape[:1]:
        raise ValueError(f"mask_condition: drop mask shape {tuple(drop.shape)} must be (B,) = ({cond.shape[0]},)")
    replacement = torch.zeros_like(cond) if null is None else null.to(cond.dtype).expand_as(cond)
    return torch.where(append_dims(drop.to(cond.device), cond.ndim), replacement, cond)
