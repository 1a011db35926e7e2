"""StyleTalker†'s conditional normalizing flow (``baselines/styletalker/flow.py``): invertibility, the log-determinant
against a numerical Jacobian, the masks, and that the prior it serves is a normalised density."""
from __future__ import annotations

import math

import pytest
import torch

from dreamhead_lit.baselines.styletalker.flow import (ConditionalAffineCoupling, ConditionalFlow, coupling_masks,
                                                      gaussian_log_prob)
from dreamhead_lit.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def random_flow(dim: int, context_dim: int, layers: int, seed: int = 0, scale: float = 0.5) -> ConditionalFlow:
    """A float64 flow with every weight random (the zero-initialised last layers would make it the identity)."""
    torch.manual_seed(seed)
    flow = ConditionalFlow(dim, context_dim, layers, hidden=16, scale_bound=2.0).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return flow


@pytest.mark.parametrize("dim", [2, 5, 8])
def test_the_flow_inverts_to_within_1e_4(dim):
    flow = random_flow(dim, 3, layers=6)
    z = torch.randn(4, 7, dim, dtype=torch.float64) * 2
    ctx = torch.randn(4, 7, 3, dtype=torch.float64)
    eps, logdet = flow(z, ctx)
    assert eps.shape == z.shape and logdet.shape == (4, 7)
    assert (eps - z).abs().max() > 0.1  # a real transform, not the identity
    assert (flow.inverse(eps, ctx) - z).abs().max() < 1e-4
    assert (flow(flow.inverse(z, ctx), ctx)[0] - z).abs().max() < 1e-4


def test_the_log_determinant_is_that_of_the_numerical_jacobian():
    flow = random_flow(4, 2, layers=4)
    ctx = torch.randn(2, dtype=torch.float64)
    for seed in range(3):
        z = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        jac = torch.autograd.functional.jacobian(lambda x: flow(x, ctx)[0], z)  # (4, 4)
        _, logdet = flow(z, ctx)
        torch.testing.assert_close(logdet, torch.linalg.slogdet(jac)[1], rtol=0, atol=1e-8)
        assert abs(logdet.item()) > 1e-2  # the volume does change


def test_masks_alternate_and_every_dim_is_transformed():
    masks = coupling_masks(5, 4)
    assert all(m.any() and not m.all() for m in masks)
    assert torch.equal(masks[1], ~masks[0]) and torch.equal(masks[3], ~masks[2])
    assert not torch.equal(masks[0], masks[2])  # half split, then parity
    with pytest.raises(ConfigError, match="at least 2 dims"):
        coupling_masks(1, 2)
    with pytest.raises(ConfigError, match="mask"):
        ConditionalAffineCoupling(4, 2, torch.ones(4, dtype=torch.bool))


def test_a_new_flow_is_the_identity_and_zero_layers_is_the_base_gaussian():
    z, ctx = torch.randn(3, 6), torch.randn(3, 4)
    for layers in (0, 4):
        flow = ConditionalFlow(6, 4, layers)
        eps, logdet = flow(z, ctx)
        torch.testing.assert_close(eps, z)
        torch.testing.assert_close(logdet, torch.zeros(3))
    mu, logstd = torch.randn(3, 6), torch.randn(3, 6) * 0.3
    expected = torch.distributions.Normal(mu, logstd.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(ConditionalFlow(6, 4, 0).log_prob(z, ctx, mu, logstd), expected)
    torch.testing.assert_close(gaussian_log_prob(z, mu, logstd), expected)


def test_the_log_scale_is_bounded():
    torch.manual_seed(0)
    coupling = ConditionalAffineCoupling(4, 1, torch.tensor([True, True, False, False]), hidden=8, scale_bound=0.5)
    with torch.no_grad():
        for p in coupling.parameters():
            p.copy_(torch.randn_like(p) * 10)
    _, logdet = coupling(torch.randn(100, 4) * 10, torch.randn(100, 1))
    assert logdet.abs().max() <= 2 * 0.5 + 1e-6  # two transformed dims, |s| <= 0.5 each


def test_the_flow_density_integrates_to_one():
    """A 2-d conditional flow density on a grid: the change of variables keeps it normalised."""
    flow = random_flow(2, 1, layers=4, seed=1, scale=0.3)  # mild enough that the mass stays on the grid
    ticks = torch.linspace(-8, 8, 401)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    z = torch.stack([gx, gy], -1).reshape(-1, 2).double()
    ctx = torch.full((len(z), 1), 0.3, dtype=torch.float64)
    with torch.no_grad():
        p = flow.log_prob(z, ctx, torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)).exp()
    cell = (ticks[1] - ticks[0]).item() ** 2
    assert math.isclose(p.sum().item() * cell, 1.0, abs_tol=0.02)
