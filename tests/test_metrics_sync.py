"""SyncNet layout (official state-dict keys and shapes), the MFCC front end, and the LSE evaluation."""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from dreamhead_lit.metrics.sync import SyncMetric, SyncNetExpert, sync_scores_from_embeddings
from dreamhead_lit.models.syncnet import (
    SyncNetModel,
    load_syncnet,
    mel_filterbank_psf,
    mfcc,
    syncnet_mfcc,
)


def _official_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of joonson/syncnet_python's SyncNetModel.S state dict (1024-d embeddings)."""
    table: dict[str, tuple[int, ...]] = {}

    def conv(prefix, shape):
        table[f"{prefix}.weight"] = shape
        table[f"{prefix}.bias"] = (shape[0],)

    def bn(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            table[f"{prefix}.{name}"] = (c,)
        table[f"{prefix}.num_batches_tracked"] = ()

    # audio CNN: Sequential indices of conv / batch-norm layers
    for idx, shape in ((0, (64, 1, 3, 3)), (4, (192, 64, 3, 3)), (8, (384, 192, 3, 3)), (11, (256, 384, 3, 3)),
                       (14, (256, 256, 3, 3)), (18, (512, 256, 5, 4))):
        conv(f"netcnnaud.{idx}", shape)
        bn(f"netcnnaud.{idx + 1}", shape[0])
    for head in ("netfcaud", "netfclip"):
        conv(f"{head}.0", (512, 512))
        bn(f"{head}.1", 512)
        conv(f"{head}.3", (1024, 512))
    for idx, shape in ((0, (96, 3, 5, 7, 7)), (4, (256, 96, 1, 5, 5)), (8, (256, 256, 1, 3, 3)),
                       (11, (256, 256, 1, 3, 3)), (14, (256, 256, 1, 3, 3)), (18, (512, 256, 1, 6, 6))):
        conv(f"netcnnlip.{idx}", shape)
        bn(f"netcnnlip.{idx + 1}", shape[0])
    return table


@pytest.fixture(scope="module")
def syncnet() -> SyncNetModel:
    torch.manual_seed(0)
    return SyncNetModel().eval()


def test_state_dict_layout_is_the_official_one(syncnet):
    ours = {k: tuple(v.shape) for k, v in syncnet.state_dict().items()}
    assert ours == _official_layout()


def test_forward_gives_1024_d_embeddings_for_both_streams(syncnet):
    with torch.no_grad():
        a = syncnet.forward_aud(torch.randn(3, 1, 13, 20))
        v = syncnet.forward_lip(torch.randn(2, 3, 5, 224, 224))
    assert a.shape == (3, 1024) and v.shape == (2, 1024)
    with pytest.raises(ValueError, match=r"\(B, 1, 13, 20\)"):
        syncnet.forward_aud(torch.randn(1, 1, 13, 21))


def test_loads_an_old_format_state_dict_strictly(tmp_path, syncnet):
    # Files saved before PyTorch 0.4 carry no num_batches_tracked; BatchNorm's versioned loading fills them in.
    old = OrderedDict((k, v.clone()) for k, v in syncnet.state_dict().items() if not k.endswith("num_batches_tracked"))
    torch.save(old, tmp_path / "syncnet_v2.model")
    loaded = load_syncnet(tmp_path / "syncnet_v2.model")
    assert torch.equal(loaded.netcnnlip[0].weight, syncnet.netcnnlip[0].weight)
    assert not loaded.training
    bad = dict(old)
    bad["netcnnaud.0.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.model")
    with pytest.raises(ValueError, match="netcnnaud.0.extra"):
        load_syncnet(tmp_path / "bad.model")


# --- MFCC -------------------------------------------------------------------------------------------------------------


def test_mfcc_frame_count_and_syncnet_rate():
    for n in (100, 400, 401, 560, 16000):
        expected = 1 if n <= 400 else 1 + math.ceil((n - 400) / 160)
        assert mfcc(np.random.default_rng(n).normal(size=n)).shape == (expected, 13)
    # T video frames of 640 samples give 4T - 1 MFCC steps (4 per frame at 100 Hz)
    assert syncnet_mfcc(np.zeros(25 * 640, dtype=np.float32)).shape == (13, 99)


def test_mel_filterbank_construction():
    fb = mel_filterbank_psf()  # 26 filters, 512-point FFT, 16 kHz
    assert fb.shape == (26, 257)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731 - the HTK mel scale
    assert mel(1000.0) == pytest.approx(1000.0, abs=0.1)
    edges_hz = 700 * (10 ** (np.linspace(0, mel(8000.0), 28) / 2595) - 1)
    edges = np.floor(513 * edges_hz / 16000)
    for j in (0, 10, 25):
        assert fb[j, int(edges[j + 1])] == 1.0  # peak 1 at the centre bin
        assert fb[j, : int(edges[j])].sum() == 0 and fb[j, int(edges[j + 2]):].sum() == 0  # support between edges
    assert np.all(fb >= 0) and np.all(fb <= 1)


def test_pure_tone_lands_in_the_filter_centred_on_it():
    sr, f0 = 16000, 1000.0
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * f0 * t)
    fb = mel_filterbank_psf()
    centres_hz = np.array([np.argmax(row) for row in fb]) * sr / 512
    # log filterbank energies of the tone (no pre-emphasis, to keep the spectrum a single peak)
    frames = np.stack([x[i : i + 400] for i in range(0, len(x) - 400, 160)])
    energies = (np.abs(np.fft.rfft(frames, 512)) ** 2 / 512) @ fb.T
    assert np.argmax(energies.mean(0)) == np.argmin(np.abs(centres_hz - f0))


def test_cepstrum_is_the_orthonormal_dct_ii_of_log_energies_with_lifter():
    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    c = mfcc(x, lifter=0, append_energy=False, preemphasis=0.0)
    # explicit DCT-II (orthonormal) of the log mel energies, computed independently here
    frames = np.stack([x[i : i + 400] for i in range(0, len(x) - 400 + 1, 160)])
    logfb = np.log((np.abs(np.fft.rfft(frames, 512)) ** 2 / 512) @ mel_filterbank_psf().T)  # (N, 26)
    n_filt = logfb.shape[1]
    k, n = np.arange(13)[:, None], np.arange(n_filt)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_filt)) * np.sqrt(2 / n_filt)
    basis[0] /= np.sqrt(2)
    np.testing.assert_allclose(c[: len(frames)], logfb @ basis.T, rtol=1e-10, atol=1e-10)
    # the sine lifter multiplies coefficient n by 1 + 11 sin(pi n / 22)
    lifted = mfcc(x, lifter=22, append_energy=False, preemphasis=0.0)
    np.testing.assert_allclose(lifted, c * (1 + 11 * np.sin(np.pi * np.arange(13) / 22)), rtol=1e-12)


def test_scaling_the_signal_only_moves_the_energy_coefficient():
    x = np.random.default_rng(1).normal(size=3200)
    a, b = mfcc(x), mfcc(5.0 * x)
    np.testing.assert_allclose(b[:, 1:], a[:, 1:], atol=1e-9)
    np.testing.assert_allclose(b[:, 0] - a[:, 0], 2 * np.log(5.0), atol=1e-9)  # log of energy: + 2 ln 5


# --- LSE ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lag", [-4, 0, 3, 15])
def test_constructed_offset_is_recovered(lag):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(80, 32, generator=g)
    audio = base[20:60]
    video = base[20 - lag : 60 - lag]  # video frame i shows what audio frame i - lag says: video lags by `lag`
    scores = sync_scores_from_embeddings(video, audio, vshift=15)
    assert scores.offset == lag
    assert scores.mdist.shape == (31,) and scores.lse_d == pytest.approx(float(scores.mdist.min()))
    assert scores.lse_c > 1.0


def test_lse_by_hand_on_a_tiny_example():
    # T = 3, D = 1, vshift = 1: audio padded with one zero each side -> [0, 1, 2, 4, 0]
    video = torch.tensor([[1.0], [2.0], [4.0]])
    audio = torch.tensor([[1.0], [2.0], [4.0]])
    # dist[i, j] = |v_i - a_pad[i + j] + 1e-6|
    # i=0: |1-0|, |1-1|, |1-2| = 1, 0, 1 ; i=1: |2-1|, 0, |2-4| = 1, 0, 2 ; i=2: |4-2|, 0, |4-0| = 2, 0, 4
    eps = 1e-6
    mdist = np.array([(1 + 1 + 2) / 3 + eps, eps, (1 + 2 + 4) / 3 - eps])
    scores = sync_scores_from_embeddings(video, audio, vshift=1)
    np.testing.assert_allclose(scores.mdist, mdist, atol=1e-6)
    assert scores.offset == 0
    assert scores.lse_d == pytest.approx(eps, abs=1e-6)
    assert scores.lse_c == pytest.approx(np.median(mdist) - mdist.min(), abs=1e-6)  # 4/3


class _WindowProbe(nn.Module):
    """Stand-in network that exposes which frames / MFCC steps each window holds."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward_lip(self, video):  # (B, 3, 5, 224, 224) -> the 5 frame values of the blue channel (BGR index 0)
        return video[:, 0, :, 0, 0]

    def forward_aud(self, mfcc):  # (B, 1, 13, 20) -> the window itself
        return mfcc.flatten(1)


def test_expert_windows_follow_the_official_alignment():
    T = 10
    frames = np.zeros((T, 32, 32, 3), dtype=np.uint8)
    frames[..., 2] = np.arange(T)[:, None, None] * 10  # blue channel = frame index * 10
    audio = np.random.default_rng(0).normal(scale=0.1, size=T * 640).astype(np.float32)
    expert = SyncNetExpert(_WindowProbe(), name="probe", batch_size=3)  # type: ignore[arg-type]
    v, a = expert.embed(frames, audio)
    assert len(v) == len(a) == T - 5  # the official loop stops 5 frames before the end
    expected_v = torch.tensor([[10.0 * (i + k) for k in range(5)] for i in range(T - 5)])
    torch.testing.assert_close(v, expected_v)  # RGB -> BGR, raw 0-255, window i = frames i..i+4
    cc = torch.from_numpy(syncnet_mfcc(audio))
    for i in range(T - 5):
        torch.testing.assert_close(a[i], cc[:, 4 * i : 4 * i + 20].flatten())
    with pytest.raises(ValueError, match="too short"):
        expert.embed(frames[:5], audio)


def test_sync_metric_with_a_module_expert_reports_its_name(syncnet):
    g = np.random.default_rng(0)
    frames = g.integers(0, 256, size=(8, 48, 48, 3), dtype=np.uint8)
    audio = g.normal(scale=0.1, size=8 * 640).astype(np.float32)
    with pytest.raises(ValueError, match="expert_name"):
        SyncMetric(syncnet)
    metric = SyncMetric(syncnet, expert_name="random-weights test expert")
    metric.update(frames, audio)
    metric.update(torch.from_numpy(frames[::-1].copy()), torch.from_numpy(audio))
    out = metric.compute()
    assert set(out) == {"lse_c", "lse_d"} and float(out["lse_d"]) > 0 and float(out["lse_c"]) >= 0
    report = metric.report()
    assert report["sync_expert"] == "random-weights test expert" and report["sync_videos"] == 2
