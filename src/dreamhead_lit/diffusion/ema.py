"""Exponential moving average of a network's weights, for sampling and validation.

Register :class:`EMA` on a LightningModule (``self.ema = EMA(self.net, decay=0.999)``), call :meth:`EMA.update`
after each optimiser step (``on_train_batch_end``) and sample inside ``with self.ema.swap_into(self.net): ...``.

Floating-point parameters are averaged; buffers (BatchNorm running statistics, step counters) are copied from the
live model at each update, because averaging statistics that the live model already keeps as running averages
would smooth them twice.

How the averaged weights are held, and why:

- not as parameters, so the optimiser never sees them;
- not as buffers either: DDP (``broadcast_buffers=True``, its default and Lightning's) re-broadcasts every buffer of
  the wrapped module from rank 0 before each forward, which for an image UNet's EMA would be a full model-size copy
  per step;
- instead in plain tensors that ``.to()``/``.cuda()``/``.half()`` still move (:meth:`EMA._apply`) and that the
  module's ``state_dict`` carries through PyTorch's extra-state hook (``<prefix>_extra_state``), so an ordinary
  Lightning checkpoint saves and restores them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn


class EMA(nn.Module):
    """EMA shadow of ``model``: ``shadow <- d * shadow + (1 - d) * param`` at each :meth:`update`.

    Args:
        model: the network to track; the shadow starts as a copy of its current weights and buffers.
        decay: the EMA decay ``d`` (e.g. 0.999 or 0.9999).
        warmup: if true, use ``d_n = min(decay, (1 + n) / (10 + n))`` at the ``n``-th averaging update (from 0),
            so early, far-from-converged weights are forgotten quickly (TensorFlow's
            ``ExponentialMovingAverage(num_updates=...)``, used by latent-diffusion).
        update_every: average only on every ``update_every``-th call to :meth:`update` (the others are no-ops), to
            save time on large UNets.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.999, warmup: bool = False, update_every: int = 1) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must lie in [0, 1), got {decay}")
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"EMA: update_every must be an int >= 1, got {update_every!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.update_every = update_every
        self.shadow_params: dict[str, Tensor] = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.shadow_buffers: dict[str, Tensor] = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.num_updates = 0  # averaging updates applied so far (drives the warmup)
        self.num_calls = 0  # calls to update(), for update_every

    def extra_repr(self) -> str:
        return (
            f"decay={self.decay}, warmup={self.warmup}, update_every={self.update_every}, "
            f"params={len(self.shadow_params)}, buffers={len(self.shadow_buffers)}, num_updates={self.num_updates}"
        )

    def forward(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("EMA holds weights only; use ema.swap_into(model) or ema.copy_to(model) and call the model")

    # ---------------------------------------------------------------- device moves and checkpointing

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> EMA:
        # Module.to / cuda / half / float all funnel through _apply; move the shadow tensors with the module.
        super()._apply(fn, recurse)
        self.shadow_params = {n: fn(t) for n, t in self.shadow_params.items()}
        self.shadow_buffers = {n: fn(t) for n, t in self.shadow_buffers.items()}
        return self

    def get_extra_state(self) -> dict[str, Any]:
        """What ``state_dict()`` stores under ``<prefix>_extra_state``."""
        return {
            "shadow_params": self.shadow_params,
            "shadow_buffers": self.shadow_buffers,
            "num_updates": self.num_updates,
            "num_calls": self.num_calls,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore from ``get_extra_state``'s dict (called by ``load_state_dict``); tensors keep this EMA's device."""
        for field, own in (("shadow_params", self.shadow_params), ("shadow_buffers", self.shadow_buffers)):
            saved: dict[str, Tensor] = state[field]
            if set(saved) != set(own):
                missing, extra = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
                raise ValueError(
                    f"EMA checkpoint does not match the tracked model ({field}: missing {missing[:5]}, unexpected "
                    f"{extra[:5]}); load it into an EMA built from the same network architecture"
                )
            for name, tensor in saved.items():
                if tensor.shape != own[name].shape:
                    raise ValueError(
                        f"EMA checkpoint: {field} {name!r} has shape {tuple(tensor.shape)}, expected "
                        f"{tuple(own[name].shape)}"
                    )
                own[name].copy_(tensor)
        self.num_updates = int(state["num_updates"])
        self.num_calls = int(state["num_calls"])

    # ------------------------------------------------------------------------------ averaging

    def current_decay(self) -> float:
        """The decay the next averaging update will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def _live(self, model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
        if set(params) != set(self.shadow_params) or set(buffers) != set(self.shadow_buffers):
            missing = sorted((set(self.shadow_params) - set(params)) | (set(self.shadow_buffers) - set(buffers)))
            extra = sorted((set(params) - set(self.shadow_params)) | (set(buffers) - set(self.shadow_buffers)))
            raise ValueError(
                "EMA: the model does not match the one this EMA was built from "
                f"(missing: {missing[:5]}, unexpected: {extra[:5]}); pass the same network, not a wrapper of it"
            )
        return params, buffers

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimiser step)."""
        params, buffers = self._live(model)
        self.num_calls += 1
        if self.num_calls % self.update_every != 0:
            return
        decay = self.current_decay()
        for name, shadow in self.shadow_params.items():
            live = params[name].detach().to(device=shadow.device, dtype=shadow.dtype)
            if shadow.is_floating_point():
                shadow.lerp_(live, 1.0 - decay)  # shadow + (1 - d)(live - shadow)
            else:
                shadow.copy_(live)
        for name, shadow in self.shadow_buffers.items():
            shadow.copy_(buffers[name].detach())
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights and buffers with the EMA ones (permanently)."""
        params, buffers = self._live(model)
        for name, shadow in self.shadow_params.items():
            params[name].copy_(shadow)
        for name, shadow in self.shadow_buffers.items():
            buffers[name].copy_(shadow)

    @contextlib.contextmanager
    def swap_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model``; the live weights come back on exit, even on error."""
        params, buffers = self._live(model)
        with torch.no_grad():
            saved_params = {name: p.detach().clone() for name, p in params.items()}
            saved_buffers = {name: b.detach().clone() for name, b in buffers.items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(saved_params[name])
                for name, b in buffers.items():
                    b.copy_(saved_buffers[name])
