"""A conditional normalizing flow of RealNVP affine couplings (Dinh et al. 2017), written here: the flow part of
StyleTalker's autoregressive prior (BASELINES.md, StyleTalker item 4). The paper models the multimodal audio-to-motion
mapping with a flow whose transforms are conditioned on the autoregressive context; what it leaves open (coupling
type, masks, depth) is chosen as RealNVP does.

Direction: :meth:`ConditionalFlow.forward` maps a motion latent ``z`` to the base variable ``eps`` (the normalizing
direction, used for the density); :meth:`ConditionalFlow.inverse` maps ``eps`` back (sampling). With a base Gaussian
``N(mu, sigma)`` given by the context net, ``log p(z | c) = log N(f(z; c); mu, sigma) + log|det df/dz|``.
Zero layers is the identity: the prior is then the base Gaussian alone (``model.prior: gaussian``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...config import ConfigError


class ConditionalAffineCoupling(nn.Module):
    """One RealNVP affine coupling conditioned on a context vector: the dims where ``mask`` is True pass unchanged;
    the others are scaled and shifted by an MLP of the passed dims and the context,
    ``y_b = x_b * exp(s(x_a, c)) + t(x_a, c)`` (RealNVP eq. 7), with log-det ``sum s``.

    The log-scale is bounded, ``s = bound * tanh(raw / bound)`` (a soft clamp: the identity near 0, never beyond
    ±bound), so one step can neither blow a sample up nor collapse it, which keeps training of a flow fed by a
    learning posterior stable. The MLP's last layer starts at zero: every coupling starts as the identity and the
    prior as its base Gaussian."""

    def __init__(self, dim: int, context_dim: int, mask: Tensor, *, hidden: int = 64, scale_bound: float = 2.0) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (dim,) or mask.all() or not mask.any():
            raise ConfigError(f"a coupling's mask must be a ({dim},) bool tensor with both passed and transformed "
                              f"dims, got {tuple(mask.shape)} with {int(mask.sum())} passed")
        if scale_bound <= 0:
            raise ConfigError(f"model.flow_scale_bound={scale_bound}: must be > 0")
        self.register_buffer("passed", torch.nonzero(mask).flatten(), persistent=False)
        self.register_buffer("moved", torch.nonzero(~mask).flatten(), persistent=False)
        self.scale_bound = float(scale_bound)
        n_moved = int((~mask).sum())
        self.net = nn.Sequential(nn.Linear(int(mask.sum()) + context_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2 * n_moved))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, x_passed: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        raw_s, t = self.net(torch.cat([x_passed, ctx], -1)).chunk(2, -1)
        return self.scale_bound * torch.tanh(raw_s / self.scale_bound), t

    def forward(self, x: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """``x (..., dim)``, ``ctx (..., context_dim)`` -> ``(y (..., dim), log|det dy/dx| (...))``."""
        s, t = self._scale_shift(x[..., self.passed], ctx)
        y = x.clone()
        y[..., self.moved] = x[..., self.moved] * torch.exp(s) + t
        return y, s.sum(-1)

    def inverse(self, y: Tensor, ctx: Tensor) -> Tensor:
        s, t = self._scale_shift(y[..., self.passed], ctx)  # the passed dims are the same on both sides
        x = y.clone()
        x[..., self.moved] = (y[..., self.moved] - t) * torch.exp(-s)
        return x


def coupling_masks(dim: int, layers: int) -> list[Tensor]:
    """Masks for ``layers`` couplings: pairs of complementary masks (each dim is transformed once in a pair),
    alternating between a half split (first half passes) and a parity split (even dims pass) from pair to pair, so
    every dim is conditioned on every other within two pairs (RealNVP alternates checkerboard and channel masks the
    same way). A fixed pattern rather than random permutations: nothing to store, the same flow in every process."""
    if dim < 2:
        raise ConfigError(f"a coupling flow needs at least 2 dims, got {dim} (model.z_dim)")
    idx = torch.arange(dim)
    masks = []
    for i in range(layers):
        base = idx < (dim + 1) // 2 if (i // 2) % 2 == 0 else idx % 2 == 0
        masks.append(base if i % 2 == 0 else ~base)
    return masks


class ConditionalFlow(nn.Module):
    """A stack of :class:`ConditionalAffineCoupling` over ``(..., dim)``, every coupling conditioned on the same
    context ``(..., context_dim)``. ``layers=0``: the identity (log-det 0)."""

    def __init__(self, dim: int, context_dim: int, layers: int, *, hidden: int = 64, scale_bound: float = 2.0) -> None:
        super().__init__()
        if layers < 0:
            raise ConfigError(f"model.flow_layers={layers}: must be >= 0")
        self.dim, self.context_dim = dim, context_dim
        self.couplings = nn.ModuleList([
            ConditionalAffineCoupling(dim, context_dim, m, hidden=hidden, scale_bound=scale_bound)
            for m in coupling_masks(dim, layers)])

    def forward(self, z: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """``z (..., dim)`` -> ``(eps (..., dim), log|det d eps / dz| (...))``."""
        logdet = z.new_zeros(z.shape[:-1])
        for c in self.couplings:
            z, ld = c(z, ctx)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, eps: Tensor, ctx: Tensor) -> Tensor:
        for c in reversed(self.couplings):
            eps = c.inverse(eps, ctx)
        return eps

    def log_prob(self, z: Tensor, ctx: Tensor, base_mean: Tensor, base_logstd: Tensor) -> Tensor:
        """``log p(z | ctx)`` ``(...)`` under the flow with the base ``N(base_mean, exp(base_logstd))`` (change of
        variables: the base density of ``f(z)`` plus the log-det)."""
        eps, logdet = self(z, ctx)
        return gaussian_log_prob(eps, base_mean, base_logstd) + logdet


def gaussian_log_prob(x: Tensor, mean: Tensor, logstd: Tensor) -> Tensor:
    """``log N(x; mean, exp(logstd)^2)`` summed over the last dim."""
    return (-0.5 * ((x - mean) * torch.exp(-logstd)) ** 2 - logstd - 0.5 * math.log(2 * math.pi)).sum(-1)


__all__ = ["ConditionalAffineCoupling", "ConditionalFlow", "coupling_masks", "gaussian_log_prob"]
