"""FID: the Fréchet formula against pytorch-fid, streaming statistics against numpy, the official-weights loader."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dreamhead_lit.metrics.fid import (
    FIDMetric,
    fid_from_features,
    fid_inception,
    fid_statistics,
    fid_sums_update,
    frechet_distance,
)


class TinyFeatures(nn.Module):
    """A small fixed network standing in for Inception in tests: (B, 3, H, W) -> (B, 6)."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, stride=2)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


def _reference_fid(real: np.ndarray, fake: np.ndarray) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(
        calculate_frechet_distance(
            np.mean(real, axis=0), np.cov(real, rowvar=False), np.mean(fake, axis=0), np.cov(fake, rowvar=False)
        )
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_frechet_distance_matches_pytorch_fid():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 16))
    fake = rng.normal(loc=0.3, scale=1.4, size=(150, 16)) @ rng.normal(size=(16, 16)) * 0.3
    ours = frechet_distance(np.mean(real, 0), np.cov(real, rowvar=False), np.mean(fake, 0), np.cov(fake, rowvar=False))
    assert ours == pytest.approx(_reference_fid(real, fake), rel=1e-9, abs=1e-9)
    same = frechet_distance(np.mean(real, 0), np.cov(real, rowvar=False), np.mean(real, 0), np.cov(real, rowvar=False))
    assert abs(same) < 1e-6


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fid_from_features_matches_reference():
    rng = np.random.default_rng(1)
    real, fake = rng.gamma(2.0, size=(120, 8)), rng.gamma(2.5, size=(90, 8))
    got = fid_from_features(torch.from_numpy(real), torch.from_numpy(fake))
    assert got == pytest.approx(_reference_fid(real, fake), rel=1e-9)


def test_streaming_statistics_equal_numpy_over_uneven_batches():
    rng = np.random.default_rng(2)
    feats = rng.normal(loc=5.0, scale=2.0, size=(31, 5))  # a mean far from 0 tests the sum-of-squares cancellation
    total_s, total_ss, n = torch.zeros(5, dtype=torch.float64), torch.zeros(5, 5, dtype=torch.float64), 0
    for a, b in ((0, 1), (1, 8), (8, 11), (11, 31)):
        s, ss, k = fid_sums_update(torch.from_numpy(feats[a:b]).float())
        total_s, total_ss, n = total_s + s, total_ss + ss, n + k
    mu, sigma = fid_statistics(total_s, total_ss, n)
    feats32 = feats.astype(np.float32).astype(np.float64)  # the features went in as float32
    np.testing.assert_allclose(mu, np.mean(feats32, axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats32, rowvar=False), rtol=1e-9, atol=1e-10)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_metric_with_injected_extractor_matches_reference_on_stacked_features():
    net = TinyFeatures()
    g = torch.Generator().manual_seed(3)
    real = torch.randint(0, 256, (23, 3, 20, 20), generator=g, dtype=torch.uint8)
    fake = (real.float() * 0.7 + 40).clamp(0, 255).to(torch.uint8)
    metric = FIDMetric(feature_extractor=net, feature_extractor_name="tiny test net")
    metric.train()  # a LightningModule switching to training must not put the feature network in train mode
    assert not metric.feature_extractor.training
    for a, b in ((0, 5), (5, 6), (6, 23)):
        metric.update(real[a:b], real=True)
    for a, b in ((0, 11), (11, 23)):
        metric.update(fake[a:b], real=False)
    with torch.no_grad():
        fr = net(real.float() / 255).double().numpy()
        ff = net(fake.float() / 255).double().numpy()
    mu, sigma = metric.statistics(real=True)
    np.testing.assert_allclose(mu, fr.mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(fr, rowvar=False), rtol=1e-5, atol=1e-9)
    assert float(metric.compute()) == pytest.approx(_reference_fid(fr, ff), rel=1e-5)
    report = metric.report()
    assert report["fid_features"] == "tiny test net"
    assert (report["fid_real_images"], report["fid_fake_images"]) == (23, 23)


def test_num_features_follows_the_extractor_and_inputs_are_checked():
    probe_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    metric = FIDMetric(feature_extractor=probe_net, feature_extractor_name="probe")
    assert metric.num_features == 4 and metric.real_outer.shape == (4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric.update(torch.rand(2, 3, 8, 8) * 2 - 1, real=True)
    with pytest.raises(ValueError, match="3 channels"):
        metric.update(torch.rand(2, 1, 8, 8), real=True)
    with pytest.raises(ValueError, match="feature_extractor_name"):
        FIDMetric(feature_extractor=probe_net)
    metric.update(torch.rand(1, 3, 8, 8), real=True)
    metric.update(torch.rand(3, 3, 8, 8), real=False)
    with pytest.raises(ValueError, match="at least 2 images"):
        metric.compute()


def _fid_inception_architecture() -> nn.Module:
    """pytorch-fid's FID Inception layout (as its fid_inception_v3 builds it), randomly initialised."""
    from pytorch_fid import inception as pfi

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def test_official_loader_reads_the_resolved_file_without_download(tmp_path, monkeypatch):
    # A stand-in file with the official layout (the real one cannot be downloaded here).
    torch.manual_seed(0)
    state = _fid_inception_architecture().state_dict()
    monkeypatch.setenv("DREAMHEAD_WEIGHTS", str(tmp_path))
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty_hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    metric = FIDMetric()
    loaded = metric.feature_extractor.inception
    assert metric.num_features == 2048
    assert torch.equal(loaded.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    assert torch.equal(loaded.blocks[3][2].branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    assert "pt_inception-2015-12-05" in metric.feature_extractor_name
    with torch.no_grad():
        feats = fid_inception(weights_path=tmp_path / "pt_inception-2015-12-05-6726825d.pth")(torch.rand(2, 3, 64, 64))
    assert feats.shape == (2, 2048)
