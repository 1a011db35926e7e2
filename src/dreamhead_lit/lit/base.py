"""What both diffusion stages share: the diffusion set-up, EMA, guidance, optimiser and sampling.

A stage's LightningModule subclasses ``DiffusionLitModule``, builds its network as ``self.net``, and calls
``self.init_diffusion()``; it then gets the noise schedule, the training loss, EMA weights for sampling, classifier-free
guidance and a configured sampler — one implementation for landmark sequences and images alike. Its learning-rate
schedule (:func:`warmup_cosine`) also serves the trained scorers.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import lightning as L
import torch
from torch import Tensor

from ..diffusion import (
    EMA,
    GaussianDiffusion,
    Inpaint,
    LossWeighting,
    NoiseSchedule,
    SamplerName,
    ScheduleKind,
    classifier_free_guidance,
    clip_denoiser,
    sample,
)


@dataclass
class DiffusionConfig:
    """The diffusion process and how it is sampled (both stages)."""

    schedule: ScheduleKind = "linear"  # linear | cosine
    num_train_steps: int = 1000
    beta_start: float = 1e-4  # DreamTalk's linear schedule 1e-4 -> 0.02
    beta_end: float = 0.02
    # x0 lets stage 1 put velocity/acceleration losses on the prediction
    target: Literal["eps", "x0", "v"] = "x0"
    loss_weighting: LossWeighting = "none"  # none | min_snr
    sampler: SamplerName = "dpmpp_2m"  # DPM-Solver++ keeps the spread at 20 steps, DDIM narrows it
    sample_steps: int = 20
    guidance_scale: float = 1.5  # classifier-free guidance on the audio (stage 1) / target landmarks (stage 2)
    cond_drop_prob: float = 0.1  # condition dropout in training (DreamTalk: 0.1); 0 disables guidance training
    use_ema: bool = True
    ema_decay: float = 0.999
    ema_warmup: bool = True


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay to lr × this at max_steps


def warmup_cosine(opt: torch.optim.Optimizer, *, warmup_steps: int, min_lr_ratio: float,
                  trainer: L.Trainer | None) -> dict:
    """The ``lr_scheduler`` entry of ``configure_optimizers``, stepped every optimiser step: a linear warm-up over
    ``warmup_steps``, then a cosine decay to ``lr x min_lr_ratio`` at the trainer's ``max_steps`` (10,000 without one).
    Both stages and the trained scorers use it."""
    total = max(1, int(trainer.max_steps)) if trainer and trainer.max_steps > 0 else 10_000

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}


def log_mean_metrics(module: L.LightningModule, metrics: Any, prefix: str = "val") -> dict:
    """Log ``<prefix>/<name>`` for each MeanMetric of ``metrics`` (name -> metric, already synchronised across ranks)
    that saw data this epoch, reset them all, and return the values (for metrics derived from them). Shared by every
    LightningModule of the framework, diffusion or not."""
    values = {k: m.compute() for k, m in metrics.items() if m.update_count > 0}
    for k, v in values.items():
        module.log(f"{prefix}/{k}", v, sync_dist=False)
    for m in metrics.values():
        m.reset()
    return values


class DiffusionLitModule(L.LightningModule):
    """Base LightningModule for a denoiser ``self.net(x_t, t, **cond)``.

    Checkpoints carry ``checkpoint["dreamhead"] = {"stage": STAGE, "data": data_info}``: which stage wrote them (so a
    stage-2 checkpoint given where a stage-1 one is expected is a clear error) and the DataModule's ``describe()``
    (landmark topology, template, resolution), so generation needs only the checkpoint.
    """

    STAGE = ""  # "stage1" / "stage2", set by subclasses
    net: torch.nn.Module
    val_metrics: torch.nn.ModuleDict  # name -> MeanMetric, logged as val/<name> by log_validation_metrics
    data_info: dict | None = None

    def log_validation_metrics(self) -> dict:
        """Log ``val/<name>`` for each of ``self.val_metrics`` (MeanMetrics, already synchronised across ranks) that saw
        data this epoch, reset them, and return the values (for metrics derived from them)."""
        return log_mean_metrics(self, self.val_metrics)

    def on_save_checkpoint(self, checkpoint: dict) -> None:  # training adds the registry name (training.ModelHeader)
        checkpoint.setdefault("dreamhead", {}).update(stage=self.STAGE, data=self.data_info)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.data_info = checkpoint.get("dreamhead", {}).get("data")

    def __init__(self, *, diffusion: DiffusionConfig | dict, optim: OptimConfig | dict):
        super().__init__()
        self.diffusion_cfg = diffusion if isinstance(diffusion, DiffusionConfig) else DiffusionConfig(**diffusion)
        self.optim_cfg = optim if isinstance(optim, OptimConfig) else OptimConfig(**optim)
        if self.diffusion_cfg.guidance_scale != 1.0 and self.diffusion_cfg.cond_drop_prob <= 0:
            raise ValueError(
                f"diffusion.guidance_scale={self.diffusion_cfg.guidance_scale} needs an unconditional model: set "
                "diffusion.cond_drop_prob > 0 (e.g. 0.1), or guidance_scale=1.0 to sample without guidance"
            )

    def init_diffusion(self) -> None:
        d = self.diffusion_cfg
        self.schedule = NoiseSchedule(kind=d.schedule, num_train_steps=d.num_train_steps, beta_start=d.beta_start,
                                      beta_end=d.beta_end)
        self.diffusion = GaussianDiffusion(schedule=self.schedule, target=d.target, loss_weighting=d.loss_weighting)
        self.ema = EMA(self.net, decay=d.ema_decay, warmup=d.ema_warmup) if d.use_ema else None

    # -- training plumbing ---------------------------------------------------------------------------------------

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net)

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Sample with the EMA weights when EMA is on (the live weights otherwise).

        Re-entrant: a caller that samples many windows swaps once around them all; the inner swaps are then no-ops
        (each swap copies every weight twice, a tenth of stage 1's time on long audio at few steps)."""
        if self.ema is None or getattr(self, "_ema_swapped", False):
            yield
        else:
            with self.ema.swap_into(self.net):
                self._ema_swapped = True
                try:
                    yield
                finally:
                    self._ema_swapped = False

    def configure_optimizers(self) -> dict:
        o = self.optim_cfg
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            (no_decay if p.ndim < 2 or "null" in name or "emb" in name else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=tuple(o.betas),
        )
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, warmup_steps=o.warmup_steps,
                                                                min_lr_ratio=o.min_lr_ratio, trainer=self.trainer)}

    # -- sampling ------------------------------------------------------------------------------------------------

    def sample_x0(
        self,
        shape: tuple[int, ...],
        *,
        cond: dict[str, Tensor],
        uncond: dict[str, Tensor],
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        inpaint: Inpaint | None = None,
        clip_x0: float | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Draw samples of x0 with the configured (or given) sampler, steps and guidance, using EMA weights."""
        d = self.diffusion_cfg
        scale = d.guidance_scale if guidance_scale is None else guidance_scale
        with self.ema_weights(), torch.no_grad():
            guided = classifier_free_guidance(self.diffusion.denoiser(self.net), scale=scale, uncond_args=uncond)
            if clip_x0 is not None:  # clamp the guided prediction: clamping each branch first distorts the guidance
                guided = clip_denoiser(guided, bound=clip_x0)
            start = noise if noise is not None else shape
            return sample(sampler or d.sampler, guided, start, schedule=self.schedule, steps=steps or d.sample_steps,
                          extra_args=cond, generator=generator, inpaint=inpaint, progress=progress)
