"""LPIPS against the lpips package itself; the AlexNet trunk loader; the random-trunk guard."""
from __future__ import annotations

import warnings

import pytest
import torch

from dreamhead_lit.metrics.lpips import RANDOM_BACKBONE_LABEL, LPIPSMetric, build_lpips_net, lpips_per_image
from dreamhead_lit.metrics.weights import MissingWeightsError


def _pairs(n=5, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)
    return a, b


def test_matches_lpips_package_with_the_same_random_trunk():
    import lpips

    a, b = _pairs()
    torch.manual_seed(123)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    with torch.no_grad():
        expected = reference(a, b).flatten()
    torch.manual_seed(123)
    metric = LPIPSMetric(allow_random_backbone_for_tests=True).train()  # dropout must stay off
    assert not metric.net.training
    torch.testing.assert_close(lpips_per_image(metric.net, a, b), expected)
    metric.update(a[:2], b[:2])
    metric.update(a[2:], b[2:])
    with pytest.warns(UserWarning, match="not LPIPS"):
        value = float(metric.compute())
    assert value == pytest.approx(float(expected.mean()), rel=1e-6)
    with pytest.warns(UserWarning, match="not LPIPS"):
        report = metric.report()
    # a random trunk never reports under the name "lpips"
    assert "lpips" not in report and report["lpips_random_backbone"] == pytest.approx(value)
    assert report["lpips_backbone"] == RANDOM_BACKBONE_LABEL and report["lpips_images"] == 5


def test_identical_images_have_zero_distance_and_inputs_are_checked():
    torch.manual_seed(0)
    net = build_lpips_net(allow_random_backbone_for_tests=True)
    a, _ = _pairs(n=2)
    assert torch.allclose(lpips_per_image(net, a, a), torch.zeros(2), atol=1e-7)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        lpips_per_image(net, (a + 1) * 127.5, a)
    with pytest.raises(ValueError, match="float images"):
        lpips_per_image(net, ((a + 1) * 127.5).to(torch.uint8), a)
    with pytest.raises(ValueError, match="same shape"):
        lpips_per_image(net, a[:1], a)


def test_without_alexnet_file_the_metric_is_not_built(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMHEAD_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        LPIPSMetric()


def test_alexnet_trunk_is_loaded_from_the_resolved_file(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(1)
    alex_state = torchvision.models.alexnet(weights=None).state_dict()
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(alex_state, hub / "checkpoints" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("DREAMHEAD_WEIGHTS", str(tmp_path / "own"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    metric = LPIPSMetric()
    trunk = metric.net.net
    for lpips_name, tv_name in (("slice1.0", "features.0"), ("slice2.3", "features.3"), ("slice5.10", "features.10")):
        assert torch.equal(trunk.state_dict()[f"{lpips_name}.weight"], alex_state[f"{tv_name}.weight"])
    a, b = _pairs(n=2)
    metric.update(a, b)
    report = metric.report()
    assert report["lpips"] > 0 and "alexnet-owt-7be5be79" in report["lpips_backbone"]
    # a file that is not torchvision's AlexNet is refused with the missing key
    torch.save({"features.0.weight": alex_state["features.0.weight"]}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not torchvision's AlexNet"):
        LPIPSMetric(weights_path=tmp_path / "bad.pth")
