"""Discrete variance-preserving noise schedules shared by both stages.

The forward process is ``x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps`` (DDPM, Ho et al. 2020 eq. 4)
for integer train steps ``t = 0 .. num_train_steps - 1``; ``t = 0`` is already slightly noisy (``beta_0``), the
clean signal has no index. Throughout this package ``alpha_t = sqrt(alpha_bar_t)`` and
``sigma_t = sqrt(1 - alpha_bar_t)``.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from dreamhead_lit.diffusion.utils import extract

ScheduleKind = Literal["linear", "cosine"]


def _linear_betas(num_train_steps: int, beta_start: float, beta_end: float) -> Tensor:
    # DDPM (Ho et al. 2020, Sec. 4) and DreamTalk: betas evenly spaced from beta_start to beta_end.
    return torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)


def _cosine_betas(num_train_steps: int, s: float, max_beta: float) -> Tensor:
    # Nichol & Dhariwal 2021 eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2;
    # betas from consecutive ratios, clipped at max_beta to avoid the singularity near t = T (their Sec. 3.2).
    steps = torch.arange(num_train_steps + 1, dtype=torch.float64) / num_train_steps
    f = torch.cos((steps + s) / (1.0 + s) * math.pi / 2.0) ** 2
    alpha_bar = f / f[0]
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(min=0.0, max=max_beta)


class NoiseSchedule(nn.Module):
    """A discrete VP noise schedule: ``betas`` and ``alphas_cumprod`` over ``num_train_steps`` train steps.

    An ``nn.Module`` so that ``.to(device)`` moves its tables with the model that owns it. The tables are computed in
    float64 and stored as float32 buffers; they are non-persistent because they are a pure function of the
    constructor arguments (a checkpoint stays loadable, and the config stays the single source of truth).

    Args:
        kind: ``"linear"`` (DDPM / DreamTalk, betas ``beta_start -> beta_end``) or ``"cosine"``
            (Nichol & Dhariwal 2021, offset ``cosine_s``, betas clipped at ``max_beta``).
        num_train_steps: number of discrete diffusion steps the model is trained on.
        beta_start: first beta of the linear schedule (ignored for cosine).
        beta_end: last beta of the linear schedule (ignored for cosine).
        cosine_s: small offset that keeps beta_0 from being vanishingly small (cosine only).
        max_beta: upper clip for cosine betas.
    """

    betas: Tensor
    alphas_cumprod: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor

    def __init__(
        self,
        *,
        kind: ScheduleKind = "linear",
        num_train_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        cosine_s: float = 0.008,
        max_beta: float = 0.999,
    ) -> None:
        super().__init__()
        if kind not in get_args(ScheduleKind):
            raise ValueError(f"NoiseSchedule: unknown kind {kind!r}; choose one of {get_args(ScheduleKind)}")
        if isinstance(num_train_steps, bool) or not isinstance(num_train_steps, int) or num_train_steps < 2:
            raise ValueError(f"NoiseSchedule: num_train_steps must be an int >= 2, got {num_train_steps!r}")
        if kind == "linear" and not 0.0 < beta_start < beta_end < 1.0:
            raise ValueError(
                f"NoiseSchedule: linear schedule needs 0 < beta_start < beta_end < 1, got beta_start={beta_start}, "
                f"beta_end={beta_end}"
            )
        if kind == "cosine" and not cosine_s > 0.0:
            raise ValueError(f"NoiseSchedule: cosine_s must be > 0, got {cosine_s}")
        if not 0.0 < max_beta < 1.0:
            raise ValueError(f"NoiseSchedule: max_beta must lie in (0, 1), got {max_beta}")

        self.kind: ScheduleKind = kind
        self.num_train_steps = num_train_steps
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.cosine_s = cosine_s
        self.max_beta = max_beta

        if kind == "linear":
            betas = _linear_betas(num_train_steps, beta_start, beta_end)
        else:
            betas = _cosine_betas(num_train_steps, cosine_s, max_beta)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # alpha_bar_t = prod_{s<=t} (1 - beta_s)

        # float64 copy on the CPU for the samplers: they turn a handful of table entries into Python scalars per
        # step, and a float64 ratio alpha_bar_t / alpha_bar_s stays accurate near alpha_bar -> 0. A plain attribute,
        # so `.to(dtype)` on a parent module cannot round it.
        self.alphas_cumprod_f64: Tensor = alphas_cumprod.clone()

        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.register_buffer("sqrt_alphas_cumprod", alphas_cumprod.sqrt().float(), persistent=False)
        self.register_buffer(
            "sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt().float(), persistent=False
        )

    def extra_repr(self) -> str:
        if self.kind == "linear":
            return (
                f"kind=linear, num_train_steps={self.num_train_steps}, beta_start={self.beta_start}, "
                f"beta_end={self.beta_end}"
            )
        return f"kind=cosine, num_train_steps={self.num_train_steps}, s={self.cosine_s}, max_beta={self.max_beta}"

    def check_timesteps(self, t: Tensor) -> None:
        """Raise if ``t`` is not an integer ``(B,)`` tensor of valid train-step indices."""
        if t.ndim != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(
                f"timesteps must be an integer tensor of shape (B,), got dtype {t.dtype} and shape {tuple(t.shape)}"
            )
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_train_steps):
            raise ValueError(
                f"timesteps must lie in [0, {self.num_train_steps}), got min {int(t.min())}, max {int(t.max())}"
            )

    def alpha_sigma(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """``(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t))`` at ``t``, each ``(B, 1, ..., 1)`` with ``ndim`` axes."""
        return extract(self.sqrt_alphas_cumprod, t, ndim), extract(self.sqrt_one_minus_alphas_cumprod, t, ndim)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw ``x_t ~ q(x_t | x0)`` with the given noise (Ho et al. 2020 eq. 4). ``x0``, ``noise``: ``(B, ...)``."""
        if noise.shape != x0.shape:
            raise ValueError(f"q_sample: noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
        alpha, sigma = self.alpha_sigma(t, x0.ndim)  # (B, 1, ..., 1)
        return alpha.to(x0.dtype) * x0 + sigma.to(x0.dtype) * noise

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ``alpha_bar_t / (1 - alpha_bar_t)`` at ``t``, shape ``(B,)``."""
        abar = self.alphas_cumprod[t.to(device=self.alphas_cumprod.device, dtype=torch.long)]  # (B,)
        return abar / (1.0 - abar)
