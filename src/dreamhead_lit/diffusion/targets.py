"""Prediction targets (eps / x0 / v) and the conversions between them.

With ``alpha = sqrt(alpha_bar_t)``, ``sigma = sqrt(1 - alpha_bar_t)`` and ``x_t = alpha * x0 + sigma * eps``:

- ``EPS``: the network predicts the noise (Ho et al. 2020 eq. 14);
- ``X0``: the network predicts the clean sample (DreamTalk's choice);
- ``V``: the network predicts ``v = alpha * eps - sigma * x0`` (Salimans & Ho 2022, Sec. 4 / App. D).

Every conversion here is exact algebra, so ``x0 -> target -> x0`` round-trips up to float error.
"""

from __future__ import annotations

from enum import Enum

from torch import Tensor

from dreamhead_lit.diffusion.schedules import NoiseSchedule


class PredictionTarget(str, Enum):
    """What the network's raw output means. A ``str`` enum so configs can say ``target: v``."""

    EPS = "eps"
    X0 = "x0"
    V = "v"

    @classmethod
    def parse(cls, value: PredictionTarget | str) -> PredictionTarget:
        """Accept an enum member or its string value; raise with the valid choices otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(
                f"unknown prediction target {value!r}; choose one of {[m.value for m in cls]}"
            ) from None


def output_to_x0_eps(
    model_output: Tensor, *, x_t: Tensor, alpha: Tensor, sigma: Tensor, target: PredictionTarget
) -> tuple[Tensor, Tensor]:
    """Convert a raw network output to ``(x0_hat, eps_hat)`` given ``alpha``/``sigma`` broadcastable to ``x_t``."""
    if target is PredictionTarget.EPS:
        eps = model_output
        x0 = (x_t - sigma * eps) / alpha  # invert eq. 4 of Ho et al. 2020
    elif target is PredictionTarget.X0:
        x0 = model_output
        eps = (x_t - alpha * x0) / sigma
    elif target is PredictionTarget.V:
        # Salimans & Ho 2022: with alpha^2 + sigma^2 = 1, x0 = alpha x_t - sigma v and eps = sigma x_t + alpha v.
        v = model_output
        x0 = alpha * x_t - sigma * v
        eps = sigma * x_t + alpha * v
    else:  # pragma: no cover - the enum is closed
        raise ValueError(f"unhandled prediction target {target!r}")
    return x0, eps


def target_from_x0_eps(*, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor, target: PredictionTarget) -> Tensor:
    """The regression target for a network trained in ``target``'s parametrisation."""
    if target is PredictionTarget.EPS:
        return noise
    if target is PredictionTarget.X0:
        return x0
    if target is PredictionTarget.V:
        return alpha * noise - sigma * x0  # v-prediction, Salimans & Ho 2022 Sec. 4
    raise ValueError(f"unhandled prediction target {target!r}")  # pragma: no cover


def predict_x0_eps(
    model_output: Tensor,
    *,
    x_t: Tensor,
    t: Tensor,
    schedule: NoiseSchedule,
    target: PredictionTarget | str,
) -> tuple[Tensor, Tensor]:
    """``(x0_hat, eps_hat)`` from a raw network output at integer timesteps ``t`` ``(B,)``; shapes as ``x_t``."""
    alpha, sigma = schedule.alpha_sigma(t, x_t.ndim)  # (B, 1, ..., 1)
    return output_to_x0_eps(
        model_output,
        x_t=x_t,
        alpha=alpha.to(x_t.dtype),
        sigma=sigma.to(x_t.dtype),
        target=PredictionTarget.parse(target),
    )


def training_target(
    *, x0: Tensor, noise: Tensor, t: Tensor, schedule: NoiseSchedule, target: PredictionTarget | str
) -> Tensor:
    """What the network should output for ``x_t = q_sample(x0, t, noise)``; shape as ``x0``."""
    alpha, sigma = schedule.alpha_sigma(t, x0.ndim)  # (B, 1, ..., 1)
    return target_from_x0_eps(
        x0=x0, noise=noise, alpha=alpha.to(x0.dtype), sigma=sigma.to(x0.dtype), target=PredictionTarget.parse(target)
    )
