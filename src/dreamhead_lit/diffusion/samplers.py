"""Samplers: free functions with one signature, for any data layout ``(B, ...)``.

Every sampler takes ``denoise_fn(x_t, t, **extra_args) -> x0_hat`` (see :meth:`GaussianDiffusion.denoiser`), where
``t`` is a ``torch.long`` tensor ``(B,)`` of train-step indices, and walks ``steps`` timesteps of the training
schedule from the noisiest to the clean signal:

- ``ddpm``: ancestral sampling (Ho et al. 2020 eq. 6-7) with the posterior variance ``beta_tilde``. With
  ``steps < num_train_steps`` it uses the respaced process of Nichol & Dhariwal 2021 (Sec. 4): for the chosen
  subsequence the betas become ``1 - alpha_bar_t / alpha_bar_s``, which keeps every marginal ``q(x_t | x0)`` of the
  training schedule, so the same network samples with fewer steps.
- ``ddim``: Song et al. 2021 eq. 12, with ``eta`` scaling the noise (eq. 16); ``eta=0`` is deterministic and
  ``eta=1`` is exactly the (respaced) DDPM sampler above.
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): multistep second order in the data prediction with
  ``lambda = log(alpha / sigma)``; first order on the first step and on the last step into the clean signal.

Timesteps: ``"trailing"`` spacing by default (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps
are Flawed", Table 2): ``t_i = round(N - i * N / steps) - 1``, so the first step is always the last train step
``N - 1``, the noise level the pure-Gaussian start actually matches. ``"leading"`` (the original DDIM spacing,
``t_i = i * (N // steps)``) is available for comparison with published configs; it starts below ``N - 1``.

The final step maps into the clean signal (``alpha_bar = 1``), so every sampler returns its last ``x0`` prediction.
Runs are deterministic given a ``torch.Generator`` (or given the initial noise and, for stochastic samplers or
inpainting, a generator). The generator may live on the CPU while the model runs on a GPU: noise is drawn on the
generator's device and moved, so a seed gives the same starting noise on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, Sequence, get_args

import torch
from torch import Tensor
from tqdm.auto import tqdm

from dreamhead_lit.diffusion.schedules import NoiseSchedule
from dreamhead_lit.diffusion.utils import DenoiseFn, randn

SamplerName = Literal["ddpm", "ddim", "dpmpp_2m"]
Spacing = Literal["trailing", "leading"]
StepCallback = Callable[[dict[str, Any]], None]
"""Called after every step with ``{"i", "t", "t_next", "x", "x0_hat"}``; ``t_next == -1`` means the clean signal."""


@dataclass(frozen=True, eq=False)
class Inpaint:
    """Known values to keep while sampling (the replacement method, optionally with RePaint resampling).

    At every noise level the known part of ``x`` is overwritten by ``known_x0`` noised to that level with fresh
    noise, so the denoiser always sees a consistent ``x_t`` and fills in the rest to agree with it (the replacement
    method of Song et al. 2021, score SDE App. I.2, as used by RePaint, Lugmayr et al. 2022). The returned sample
    has exactly ``known_x0`` where ``mask`` is set. Stage 1 uses it to continue a landmark window from the previous
    window's overlap.

    Replacement alone conditions the unknown part only partially: the denoiser sees a *noisy* copy of the known
    values, and by the time the noise is low enough to carry the information the unknown part can no longer move
    far. (On a 2-D Gaussian with correlation 0.95, the unknown coordinate recovers roughly 55 % (DDIM/DPM-Solver++)
    to 75 % (DDPM) of its conditional mean shift.) ``resample = U > 1`` repeats each step ``U`` times, re-noising
    from the new level back to the current one in between (RePaint Alg. 1 with jump length 1), which lets the
    known information propagate, at ``U`` times the cost. On the same toy with 50 steps, U = 5 recovers about
    92 % of the conditional mean shift with the right spread (U = 10: about 96 %); treat ``U`` as a knob to ablate.

    Args:
        mask: ``True`` (or 1) where the value is known; broadcastable to the sample shape, e.g. ``(B, T, 1)``
            marking known frames.
        known_x0: the known clean values, broadcastable to the sample shape; ignored where ``mask`` is 0.
        resample: RePaint's number of resampling repeats ``U`` per step (1 = plain replacement).
    """

    mask: Tensor
    known_x0: Tensor
    resample: int = 1

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            if self.mask.dtype.is_complex or not bool(((self.mask == 0) | (self.mask == 1)).all()):
                raise ValueError(
                    "Inpaint.mask must be boolean or contain only 0 and 1 (1 = known); soft masks are not supported "
                    "by the replacement method"
                )
        if isinstance(self.resample, bool) or not isinstance(self.resample, int) or self.resample < 1:
            raise ValueError(f"Inpaint.resample must be an int >= 1 (RePaint's U), got {self.resample!r}")

    def resolve(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mask, known_x0)`` broadcast to ``x``'s shape, on its device, as ``bool`` and ``x.dtype``."""
        try:
            mask = torch.broadcast_to(self.mask.to(device=x.device, dtype=torch.bool), x.shape)
            known = torch.broadcast_to(self.known_x0.to(device=x.device, dtype=x.dtype), x.shape)
        except RuntimeError as err:
            raise ValueError(
                f"Inpaint: mask {tuple(self.mask.shape)} and known_x0 {tuple(self.known_x0.shape)} must broadcast to "
                f"the sample shape {tuple(x.shape)}"
            ) from err
        return mask, known


class Sampler(Protocol):
    """The one signature shared by all samplers."""

    def __call__(
        self,
        denoise_fn: DenoiseFn,
        shape_or_noise: Sequence[int] | Tensor,
        *,
        schedule: NoiseSchedule,
        steps: int,
        extra_args: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        spacing: Spacing = "trailing",
        inpaint: Inpaint | None = None,
        callback: StepCallback | None = None,
        progress: bool = False,
    ) -> Tensor: ...


def make_timesteps(num_train_steps: int, steps: int, spacing: Spacing = "trailing") -> list[int]:
    """The ``steps`` train-step indices a sampler visits, noisiest first (strictly decreasing)."""
    if spacing not in get_args(Spacing):
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {get_args(Spacing)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_train_steps:
        raise ValueError(
            f"steps must be an int in [1, {num_train_steps}] (the schedule's num_train_steps), got {steps!r}"
        )
    if spacing == "trailing":
        # Lin et al. 2024 Table 2: round(arange(N, 0, -N/steps)) - 1; distinct because N/steps >= 1.
        stride = num_train_steps / steps
        return [int(round(num_train_steps - i * stride)) - 1 for i in range(steps)]
    stride_int = num_train_steps // steps
    return [i * stride_int for i in reversed(range(steps))]


class _Run:
    """State shared by every sampler loop: initial noise, timesteps, inpainting, callbacks."""

    def __init__(
        self,
        shape_or_noise: Sequence[int] | Tensor,
        *,
        schedule: NoiseSchedule,
        steps: int,
        spacing: Spacing,
        generator: torch.Generator | None,
        inpaint: Inpaint | None,
        extra_args: dict[str, Any] | None,
    ) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.generator = generator
        self.extra_args = {} if extra_args is None else dict(extra_args)
        if isinstance(shape_or_noise, Tensor):
            if not shape_or_noise.is_floating_point():
                raise TypeError(f"initial noise must be a floating tensor, got dtype {shape_or_noise.dtype}")
            x = shape_or_noise
        else:
            shape = tuple(int(s) for s in shape_or_noise)
            if len(shape) < 2:
                raise ValueError(f"sample shape must be (B, ...) with at least 2 axes, got {shape}")
            x = randn(shape, device=schedule.betas.device, dtype=torch.float32, generator=generator)
        self.timesteps = make_timesteps(schedule.num_train_steps, steps, spacing)
        abar = schedule.alphas_cumprod_f64
        # alpha_bar per visited step, then 1.0 for the clean signal the last step lands on.
        self.abars = [float(abar[t]) for t in self.timesteps] + [1.0]
        self.inpaint = None if inpaint is None else inpaint.resolve(x)
        self.resample = 1 if inpaint is None else inpaint.resample
        self.x = self.replace_known(x, 0)

    def denoise(self, denoise_fn: DenoiseFn, i: int, x: Tensor) -> Tensor:
        """Call the denoiser at ``timesteps[i]`` and check it returned an ``x0`` prediction shaped like ``x``."""
        x0_hat = denoise_fn(x, self.t_batch(i, x), **self.extra_args)
        if x0_hat.shape != x.shape:
            raise ValueError(
                f"denoise_fn returned shape {tuple(x0_hat.shape)} for input {tuple(x.shape)}; it must return an x0 "
                "prediction shaped like x_t (wrap raw models with GaussianDiffusion.denoiser)"
            )
        return x0_hat.to(x.dtype)

    def renoise(self, x_s: Tensor, i: int) -> Tensor:
        """Draw ``x_t ~ q(x_t | x_s)`` from level ``i + 1`` back up to level ``i`` (RePaint's resampling jump)."""
        ratio = self.abars[i] / self.abars[i + 1]  # alpha_bar_t / alpha_bar_s: forward process from s to t
        return math.sqrt(ratio) * x_s + math.sqrt(1.0 - ratio) * self.noise_like(x_s)

    def noise_like(self, x: Tensor) -> Tensor:
        return randn(x.shape, device=x.device, dtype=x.dtype, generator=self.generator)

    def t_batch(self, i: int, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), self.timesteps[i], device=x.device, dtype=torch.long)  # (B,)

    def replace_known(self, x: Tensor, level: int) -> Tensor:
        """Overwrite the known part of ``x`` with ``known_x0`` noised to ``self.abars[level]``."""
        if self.inpaint is None:
            return x
        mask, known = self.inpaint
        abar = self.abars[level]
        if abar == 1.0:
            return torch.where(mask, known, x)  # exact known values in the output
        noised = math.sqrt(abar) * known + math.sqrt(1.0 - abar) * self.noise_like(x)  # Ho et al. 2020 eq. 4
        return torch.where(mask, noised, x)

    def steps(self, progress: bool, desc: str) -> Any:
        return tqdm(range(len(self.timesteps)), disable=not progress, desc=desc, leave=False)

    def report(self, callback: StepCallback | None, i: int, x: Tensor, x0_hat: Tensor) -> None:
        if callback is not None:
            t_next = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1
            callback({"i": i, "t": self.timesteps[i], "t_next": t_next, "x": x, "x0_hat": x0_hat})


def _check_eta(eta: float, sampler: str) -> None:
    if eta != 0.0:
        raise ValueError(
            f"eta={eta} only applies to the 'ddim' sampler; {sampler!r} has fixed stochasticity "
            "(ddpm is ddim with eta=1, dpmpp_2m is deterministic). Set eta=0 or use sampler='ddim'."
        )


StepFn = Callable[[int, Tensor, Tensor | None], tuple[Tensor, Tensor]]
"""``step(i, x_t, x0_prev) -> (x_s, x0_hat)``: one update from ``timesteps[i]`` to the next level."""


def _drive(run: _Run, step: StepFn, *, callback: StepCallback | None, progress: bool, desc: str) -> Tensor:
    """The loop every sampler shares: steps, known-value replacement, RePaint resampling, callbacks."""
    x = run.x
    x0_prev: Tensor | None = None
    for i in run.steps(progress, desc):
        # The last step lands on the clean signal, which cannot be re-noised: it runs once.
        repeats = run.resample if run.abars[i + 1] < 1.0 else 1
        for repeat in range(repeats):
            # A re-noised state is a fresh draw, so a multistep history from the previous level no longer matches
            # it: repeats restart at first order.
            x_s, x0_hat = step(i, x, x0_prev if repeat == 0 else None)
            x_s = run.replace_known(x_s, i + 1)
            # RePaint: go back up to level i and redo the step, except after the last repeat.
            x = run.renoise(x_s, i) if repeat + 1 < repeats else x_s
        x0_prev = x0_hat
        run.report(callback, i, x, x0_hat)
    return x


@torch.no_grad()
def sample_ddim(
    denoise_fn: DenoiseFn,
    shape_or_noise: Sequence[int] | Tensor,
    *,
    schedule: NoiseSchedule,
    steps: int,
    extra_args: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    spacing: Spacing = "trailing",
    inpaint: Inpaint | None = None,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> Tensor:
    """DDIM (Song et al. 2021 eq. 12); ``eta`` in ``[0, 1]`` interpolates deterministic DDIM and DDPM (eq. 16)."""
    if not eta >= 0.0:
        raise ValueError(f"sample_ddim: eta must be >= 0, got {eta}")
    run = _Run(
        shape_or_noise, schedule=schedule, steps=steps, spacing=spacing, generator=generator, inpaint=inpaint,
        extra_args=extra_args,
    )

    def step(i: int, x: Tensor, x0_prev: Tensor | None) -> tuple[Tensor, Tensor]:
        abar_t, abar_s = run.abars[i], run.abars[i + 1]
        x0_hat = run.denoise(denoise_fn, i, x)
        eps_hat = (x - math.sqrt(abar_t) * x0_hat) / math.sqrt(1.0 - abar_t)
        # Song et al. 2021 eq. 16: sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s).
        sigma = eta * math.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))
        # eq. 12: x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z.
        x_s = math.sqrt(abar_s) * x0_hat + math.sqrt(max(1.0 - abar_s - sigma**2, 0.0)) * eps_hat
        if sigma > 0.0:
            x_s = x_s + sigma * run.noise_like(x_s)
        return x_s, x0_hat

    return _drive(run, step, callback=callback, progress=progress, desc="ddim")


@torch.no_grad()
def sample_ddpm(
    denoise_fn: DenoiseFn,
    shape_or_noise: Sequence[int] | Tensor,
    *,
    schedule: NoiseSchedule,
    steps: int,
    extra_args: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    spacing: Spacing = "trailing",
    inpaint: Inpaint | None = None,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> Tensor:
    """Ancestral DDPM sampling; respaced (Nichol & Dhariwal 2021) when ``steps < num_train_steps``."""
    _check_eta(eta, "ddpm")
    run = _Run(
        shape_or_noise, schedule=schedule, steps=steps, spacing=spacing, generator=generator, inpaint=inpaint,
        extra_args=extra_args,
    )

    def step(i: int, x: Tensor, x0_prev: Tensor | None) -> tuple[Tensor, Tensor]:
        abar_t, abar_s = run.abars[i], run.abars[i + 1]
        x0_hat = run.denoise(denoise_fn, i, x)
        alpha_ts = abar_t / abar_s  # respaced alpha (Nichol & Dhariwal 2021 Sec. 4); = 1 - beta_t at full steps
        beta_ts = 1.0 - alpha_ts
        # Posterior q(x_s | x_t, x0): Ho et al. 2020 eq. 7 with the respaced beta.
        coef_x0 = math.sqrt(abar_s) * beta_ts / (1.0 - abar_t)
        coef_xt = math.sqrt(alpha_ts) * (1.0 - abar_s) / (1.0 - abar_t)
        var = beta_ts * (1.0 - abar_s) / (1.0 - abar_t)
        x_s = coef_x0 * x0_hat + coef_xt * x
        if var > 0.0:
            x_s = x_s + math.sqrt(var) * run.noise_like(x_s)
        return x_s, x0_hat

    return _drive(run, step, callback=callback, progress=progress, desc="ddpm")


@torch.no_grad()
def sample_dpmpp_2m(
    denoise_fn: DenoiseFn,
    shape_or_noise: Sequence[int] | Tensor,
    *,
    schedule: NoiseSchedule,
    steps: int,
    extra_args: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    spacing: Spacing = "trailing",
    inpaint: Inpaint | None = None,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): deterministic, second-order multistep in data prediction."""
    _check_eta(eta, "dpmpp_2m")
    run = _Run(
        shape_or_noise, schedule=schedule, steps=steps, spacing=spacing, generator=generator, inpaint=inpaint,
        extra_args=extra_args,
    )

    def lam(abar: float) -> float:
        return 0.5 * math.log(abar / (1.0 - abar))  # lambda = log(alpha / sigma)

    def step(i: int, x: Tensor, x0_prev: Tensor | None) -> tuple[Tensor, Tensor]:
        abar_t, abar_s = run.abars[i], run.abars[i + 1]
        x0_hat = run.denoise(denoise_fn, i, x)
        if abar_s == 1.0:
            # Into the clean signal lambda -> inf: the first-order update reduces to x = x0_hat (lower-order final
            # step, as in Lu et al.'s and k-diffusion's implementations).
            return x0_hat, x0_hat
        h = lam(abar_s) - lam(abar_t)
        if x0_prev is None:
            d = x0_hat  # first step: DPM-Solver++(1), i.e. DDIM
        else:
            r = (lam(abar_t) - lam(run.abars[i - 1])) / h  # r_i = h_{i-1} / h_i
            d = (1.0 + 1.0 / (2.0 * r)) * x0_hat - (1.0 / (2.0 * r)) * x0_prev  # Alg. 2, D_i
        # Alg. 2: x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D_i.
        sigma_ratio = math.sqrt((1.0 - abar_s) / (1.0 - abar_t))
        x_s = sigma_ratio * x - math.sqrt(abar_s) * math.expm1(-h) * d
        return x_s, x0_hat

    return _drive(run, step, callback=callback, progress=progress, desc="dpmpp_2m")


SAMPLERS: dict[str, Sampler] = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpmpp_2m": sample_dpmpp_2m}


def sample(
    name: SamplerName,
    denoise_fn: DenoiseFn,
    shape_or_noise: Sequence[int] | Tensor,
    *,
    schedule: NoiseSchedule,
    steps: int,
    extra_args: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    spacing: Spacing = "trailing",
    inpaint: Inpaint | None = None,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> Tensor:
    """Run the sampler called ``name`` (``"ddpm"``, ``"ddim"`` or ``"dpmpp_2m"``); see the module docstring.

    Args:
        name: which sampler.
        denoise_fn: ``denoise_fn(x_t, t, **extra_args) -> x0_hat`` with ``t`` a long tensor ``(B,)``.
        shape_or_noise: the sample shape ``(B, ...)`` (noise drawn with ``generator`` on the schedule's device) or
            the starting noise itself (frames of one clip can share it).
        schedule: the training noise schedule.
        steps: number of denoiser calls, ``1 .. num_train_steps``.
        extra_args: conditioning passed to ``denoise_fn`` unchanged.
        generator: RNG for the starting noise, the stochastic steps and the inpainting noise.
        eta: DDIM noise scale (``ddim`` only; other samplers require 0).
        spacing: ``"trailing"`` (default) or ``"leading"`` timestep spacing.
        inpaint: known values to keep, see :class:`Inpaint`.
        callback: called after every step with ``{"i", "t", "t_next", "x", "x0_hat"}``.
        progress: show a tqdm bar.

    Returns:
        The sample, shape and dtype of the starting noise.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")
    return SAMPLERS[name](
        denoise_fn,
        shape_or_noise,
        schedule=schedule,
        steps=steps,
        extra_args=extra_args,
        generator=generator,
        eta=eta,
        spacing=spacing,
        inpaint=inpaint,
        callback=callback,
        progress=progress,
    )
