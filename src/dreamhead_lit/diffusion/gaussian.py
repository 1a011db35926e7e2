"""Gaussian diffusion for training: the loss, and the ``x0`` denoiser the samplers consume.

:class:`GaussianDiffusion` owns a :class:`NoiseSchedule` and a :class:`PredictionTarget`. It does not own the
network: ``training_losses(model, x0, extra_args=...)`` calls ``model(x_t, t, **extra_args)`` and ``denoiser(model)``
wraps it for the samplers, so one object serves the landmark network of stage 1 and the UNet of stage 2.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, get_args

import torch
from torch import Tensor, nn

from dreamhead_lit.diffusion.schedules import NoiseSchedule
from dreamhead_lit.diffusion.targets import PredictionTarget, output_to_x0_eps, target_from_x0_eps
from dreamhead_lit.diffusion.utils import DenoiseFn, randn

LossWeighting = Literal["none", "min_snr"]

ModelFn = Callable[..., Tensor]
"""``model(x_t, t, **extra_args) -> raw prediction`` in the target's parametrisation, shaped as ``x_t``."""


def clip_denoiser(denoise_fn: DenoiseFn, *, bound: float) -> DenoiseFn:
    """Wrap ``denoise_fn`` so its ``x0`` prediction is clamped to ``[-bound, bound]``.

    For pixel-space images in ``[-1, 1]`` (guided-diffusion's ``clip_denoised``). Apply it *outside*
    :func:`~dreamhead_lit.diffusion.guidance.classifier_free_guidance`: guidance extrapolates, and clamping the
    two branches first would change the guided direction.
    """
    if not bound > 0:
        raise ValueError(f"clip_denoiser: bound must be > 0, got {bound}")

    def clipped(x_t: Tensor, t: Tensor, **extra_args: Any) -> Tensor:
        return denoise_fn(x_t, t, **extra_args).clamp(-bound, bound)

    return clipped


class GaussianDiffusion(nn.Module):
    """Training loss and sampler-facing denoiser for a discrete VP diffusion.

    Args:
        schedule: the noise schedule (a submodule, so it follows the owner's device).
        target: the network's parametrisation: ``"eps"``, ``"x0"`` or ``"v"``.
        loss_weighting: ``"none"`` is the plain MSE on the target (Ho et al. 2020 eq. 14 for eps);
            ``"min_snr"`` is Min-SNR-gamma (Hang et al. 2023): each sample is weighted so that the loss equals an
            x0-space MSE weighted by ``min(SNR_t, gamma)``, which balances the timesteps' conflicting gradients.
        min_snr_gamma: the clip ``gamma`` (5 in Hang et al.).
    """

    def __init__(
        self,
        *,
        schedule: NoiseSchedule,
        target: PredictionTarget | str,
        loss_weighting: LossWeighting = "none",
        min_snr_gamma: float = 5.0,
    ) -> None:
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"GaussianDiffusion: schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        if loss_weighting not in get_args(LossWeighting):
            raise ValueError(
                f"GaussianDiffusion: unknown loss_weighting {loss_weighting!r}; choose one of {get_args(LossWeighting)}"
            )
        if not min_snr_gamma > 0:
            raise ValueError(f"GaussianDiffusion: min_snr_gamma must be > 0, got {min_snr_gamma}")
        self.schedule = schedule
        self.target = PredictionTarget.parse(target)
        self.loss_weighting: LossWeighting = loss_weighting
        self.min_snr_gamma = float(min_snr_gamma)

    def extra_repr(self) -> str:
        return f"target={self.target.value}, loss_weighting={self.loss_weighting}, min_snr_gamma={self.min_snr_gamma}"

    @property
    def num_train_steps(self) -> int:
        return self.schedule.num_train_steps

    def sample_timesteps(
        self, batch_size: int, *, device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        """Train steps drawn uniformly from ``[0, num_train_steps)``, shape ``(B,)`` (Ho et al. 2020 Alg. 1)."""
        if generator is None:
            return torch.randint(0, self.num_train_steps, (batch_size,), device=device)
        # drawn on the generator's device (a CPU generator may seed a GPU run), then moved
        t = torch.randint(0, self.num_train_steps, (batch_size,), device=generator.device, generator=generator)
        return t.to(device)

    def loss_weights(self, t: Tensor) -> Tensor:
        """Per-sample weights ``(B,)`` on the target-space MSE for the configured weighting."""
        if self.loss_weighting == "none":
            return torch.ones(t.shape, dtype=torch.float32, device=t.device)
        snr = self.schedule.snr(t).to(t.device)  # (B,)
        clipped = snr.clamp(max=self.min_snr_gamma)
        # Hang et al. 2023, Sec. 3.4: an eps-MSE is an x0-MSE times SNR and a v-MSE an x0-MSE times (SNR + 1),
        # so dividing by those factors turns every parametrisation into x0-MSE weighted by min(SNR, gamma).
        if self.target is PredictionTarget.EPS:
            return clipped / snr
        if self.target is PredictionTarget.V:
            return clipped / (snr + 1.0)
        return clipped

    def training_losses(
        self,
        model: ModelFn,
        x0: Tensor,
        *,
        extra_args: dict[str, Any] | None = None,
        noise: Tensor | None = None,
        t: Tensor | None = None,
        loss_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Noise ``x0``, run the model, and return the diffusion loss with what auxiliary losses need.

        Args:
            model: ``model(x_t, t, **extra_args)`` returning the raw prediction in ``self.target``'s parametrisation.
            x0: clean data ``(B, ...)``: ``(B, T, C)`` landmark windows or ``(B, C, H, W)`` frames.
            extra_args: conditioning passed to the model unchanged.
            noise: the Gaussian noise; drawn (with ``generator``) when omitted.
            t: integer train steps ``(B,)``; drawn uniformly from ``[0, num_train_steps)`` when omitted.
            loss_mask: optional weights broadcastable to ``x0`` (1 = counted, 0 = ignored, e.g. padded frames);
                each sample's loss is the masked mean over its non-batch axes.
            generator: RNG for ``t`` and ``noise`` when they are drawn here.

        Returns:
            ``loss`` (scalar, batch mean), ``loss_per_sample`` ``(B,)`` (weighted), ``x0_hat`` (shape of ``x0``, with
            gradient, for velocity/acceleration terms), ``t`` ``(B,)``, ``x_t`` and ``noise``.
        """
        extra_args = {} if extra_args is None else extra_args
        batch = x0.shape[0]
        if t is None:
            t = self.sample_timesteps(batch, device=x0.device, generator=generator)
        else:
            self.schedule.check_timesteps(t)
            if t.shape[0] != batch:
                raise ValueError(f"training_losses: t has {t.shape[0]} entries but x0 has batch size {batch}")
        if noise is None:
            noise = randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        elif noise.shape != x0.shape:
            raise ValueError(f"training_losses: noise shape {tuple(noise.shape)} differs from x0 {tuple(x0.shape)}")

        alpha, sigma = self.schedule.alpha_sigma(t, x0.ndim)  # (B, 1, ..., 1)
        alpha, sigma = alpha.to(x0.dtype), sigma.to(x0.dtype)
        x_t = alpha * x0 + sigma * noise  # Ho et al. 2020 eq. 4
        output = model(x_t, t, **extra_args)
        if output.shape != x0.shape:
            raise ValueError(
                f"training_losses: model output shape {tuple(output.shape)} differs from x0 shape {tuple(x0.shape)}; "
                f"the model must return a prediction of {self.target.value!r} shaped like its input"
            )
        target = target_from_x0_eps(x0=x0, noise=noise, alpha=alpha, sigma=sigma, target=self.target)
        x0_hat, _ = output_to_x0_eps(output, x_t=x_t, alpha=alpha, sigma=sigma, target=self.target)

        sq_err = (output.float() - target.float()) ** 2  # (B, ...)
        reduce_dims = tuple(range(1, x0.ndim))
        if loss_mask is None:
            mse = sq_err.mean(dim=reduce_dims)  # (B,)
        else:
            mask = torch.broadcast_to(loss_mask.to(sq_err), sq_err.shape)
            mse = (sq_err * mask).sum(dim=reduce_dims) / mask.sum(dim=reduce_dims).clamp(min=1.0)  # (B,)
        loss_per_sample = mse * self.loss_weights(t).to(mse)  # (B,)
        return {
            "loss": loss_per_sample.mean(),
            "loss_per_sample": loss_per_sample,
            "x0_hat": x0_hat,
            "t": t,
            "x_t": x_t,
            "noise": noise,
        }

    def model_x0(self, model: ModelFn, x_t: Tensor, t: Tensor, **extra_args: Any) -> Tensor:
        """Run the model and convert its output to an ``x0`` prediction, shape as ``x_t``."""
        output = model(x_t, t, **extra_args)
        alpha, sigma = self.schedule.alpha_sigma(t, x_t.ndim)  # (B, 1, ..., 1)
        x0_hat, _ = output_to_x0_eps(
            output, x_t=x_t, alpha=alpha.to(x_t.dtype), sigma=sigma.to(x_t.dtype), target=self.target
        )
        return x0_hat

    def denoiser(self, model: ModelFn, *, clip_x0: float | None = None) -> DenoiseFn:
        """The ``denoise_fn(x_t, t, **extra_args) -> x0_hat`` the samplers call.

        ``clip_x0`` clamps the prediction to ``[-clip_x0, clip_x0]`` (pixel images in ``[-1, 1]``); leave it ``None``
        for landmark displacements, which have no fixed range. When using classifier-free guidance, build the
        unclipped denoiser, wrap it in the guidance, then clip with :func:`clip_denoiser`.
        """

        def denoise(x_t: Tensor, t: Tensor, **extra_args: Any) -> Tensor:
            return self.model_x0(model, x_t, t, **extra_args)

        if clip_x0 is None:
            return denoise
        return clip_denoiser(denoise, bound=clip_x0)


__all__ = ["GaussianDiffusion", "LossWeighting", "ModelFn", "clip_denoiser"]
