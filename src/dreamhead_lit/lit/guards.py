"""Training guards: stop at the first non-finite loss or gradient, before it reaches the weights.

Without it one clip with NaN landmarks turned every weight into NaN at step 1, the run went on to write ``done.json``
and all-NaN checkpoints, and generation later wrote black videos. The check runs in ``on_before_optimizer_step``, so
the step that would write NaN into the weights never happens, and no checkpoint after the last good one is written.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or gradient; the message names the step and the clips of the batch."""


class NonFiniteGuard(Callback):
    """Raise :class:`NonFiniteError` at the first non-finite loss or gradient, naming the step and the batch's clips.

    Under DDP the decision is shared (any rank), so every rank stops at the same step rather than one waiting for the
    others forever; gradients are already averaged across ranks by then, so NaN on one rank is NaN on all.
    fp16 with a gradient scaler is left to the scaler (it skips steps with inf gradients by design); the loss is
    still checked.
    """

    def __init__(self) -> None:
        self._batch: Any = None
        self._bad_loss: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch, self._bad_loss = batch, None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach().float().cpu())
        if not math.isfinite(value):
            self._bad_loss = value

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        bad_grads = [] if str(trainer.precision).startswith("16") else _non_finite_grads(pl_module)
        local = self._bad_loss is not None or bool(bad_grads)
        if not trainer.strategy.reduce_boolean_decision(local, all=False):
            return
        what = []
        if self._bad_loss is not None:
            what.append(f"loss {self._bad_loss}")
        if bad_grads:
            more = f" and {len(bad_grads) - 3} more" if len(bad_grads) > 3 else ""
            what.append(f"non-finite gradients in {', '.join(bad_grads[:3])}{more}")
        if not what:
            what.append("a non-finite loss or gradient on another process")
        clips = batch_clip_ids(trainer, self._batch)
        raise NonFiniteError(
            f"training stopped at step {trainer.global_step}: {'; '.join(what)}. "
            f"The batch held clip(s) {', '.join(clips) if clips else '(unknown)'}: check their arrays for NaN/Inf, "
            "or lower optim.lr. No weights were updated with it, and the run is not marked complete.")


def _non_finite_grads(module: torch.nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]


def batch_clip_ids(trainer: L.Trainer, batch: Any) -> list[str]:
    """The ids of the clips a training batch came from (its ``clip`` and ``ref_clip`` indices into the train dataset:
    the target windows and the references drawn for them), sorted."""
    if not isinstance(batch, dict):
        return []
    dm = getattr(trainer, "datamodule", None)
    dataset = getattr(dm, "datasets", {}).get(getattr(getattr(dm, "hparams", None), "train_split", "train"))
    readers = getattr(dataset, "readers", None)
    if readers is None:
        return []
    indices = [int(i) for key in ("clip", "ref_clip") if key in batch for i in batch[key].reshape(-1).tolist()]
    return sorted({readers[i].record.id for i in indices})


__all__ = ["NonFiniteError", "NonFiniteGuard", "batch_clip_ids"]
