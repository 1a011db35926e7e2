"""SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV workshops 2016), laid out as
joonson/syncnet_python's ``SyncNetModel.S`` so that the official ``syncnet_v2.model`` loads with ``strict=True``.

Two streams map 0.2 s of audio and of video to 1024-d embeddings that are close when they are in sync:

* audio: an MFCC "image" ``(B, 1, 13, 20)`` -- 13 coefficients x 20 steps at 100 Hz (:func:`syncnet_mfcc`);
* video: 5 consecutive RGB frames ``(B, 3, 5, 224, 224)``; the first layer is a Conv3d with a 5x7x7 kernel that
  consumes the whole time axis. The official model was trained on face crops in **BGR** order with raw 0-255
  values (OpenCV images, no normalisation); :class:`~dreamhead_lit.metrics.sync.SyncNetExpert` prepares them so.

The state-dict layout (``netcnnaud.*``, ``netfcaud.*``, ``netcnnlip.*``, ``netfclip.*``, with the ``nn.Sequential``
indices of the original, ReLU and pooling layers included) is part of the contract: a framework-trained expert with
this class is interchangeable with the official weights.

The MFCC front end reimplements ``python_speech_features.mfcc`` with its defaults (25 ms windows every 10 ms, no
window function, pre-emphasis 0.97, 26 mel filters over 0-8 kHz on a 512-point FFT, log, DCT-II orthonormal,
13 coefficients, sine lifter 22, c0 replaced by the log frame energy) in numpy/scipy, so that package is not needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import scipy.fft
from torch import Tensor, nn

__all__ = [
    "SYNCNET_EMBED_DIM",
    "SYNCNET_FRAME_SIZE",
    "SYNCNET_WINDOW_FRAMES",
    "MFCC_STEPS_PER_FRAME",
    "MFCC_WINDOW_STEPS",
    "SyncNetModel",
    "load_syncnet",
    "mfcc",
    "mel_filterbank_psf",
    "syncnet_mfcc",
]

SYNCNET_EMBED_DIM = 1024
SYNCNET_FRAME_SIZE = 224  # face crops are resized to 224x224
SYNCNET_WINDOW_FRAMES = 5  # video frames per embedding (0.2 s at 25 fps)
MFCC_STEPS_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
MFCC_WINDOW_STEPS = 20  # MFCC steps per embedding (0.2 s)
MFCC_NUM_COEFFS = 13


def _conv_bn_relu_2d(cin: int, cout: int, kernel: tuple[int, int], padding: tuple[int, int]) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=kernel, stride=1, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv_bn_relu_3d(
    cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int], padding: tuple[int, int, int]
) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel_size=kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


def _embedding_head(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNetModel(nn.Module):
    """The two-stream SyncNet. ``forward_aud(mfcc)`` and ``forward_lip(video)`` return ``(B, embed_dim)``.

    Args:
        embed_dim: embedding size (1024 for the official weights).
    """

    def __init__(self, *, embed_dim: int = SYNCNET_EMBED_DIM) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        # Audio: (B, 1, 13, 20) -> (B, 512, 1, 1). Sequential indices match the official layout (pooling and ReLU
        # layers hold no weights but occupy indices).
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu_2d(1, 64, (3, 3), (1, 1)),  # 0-2
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),  # 3 (an identity in the original)
            *_conv_bn_relu_2d(64, 192, (3, 3), (1, 1)),  # 4-6
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),  # 7: 13x20 -> 11x9
            *_conv_bn_relu_2d(192, 384, (3, 3), (1, 1)),  # 8-10
            *_conv_bn_relu_2d(384, 256, (3, 3), (1, 1)),  # 11-13
            *_conv_bn_relu_2d(256, 256, (3, 3), (1, 1)),  # 14-16
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),  # 17: 11x9 -> 5x4
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=0),  # 18: -> 1x1
            nn.BatchNorm2d(512),  # 19
            nn.ReLU(),  # 20
        )
        self.netfcaud = _embedding_head(embed_dim)
        self.netfclip = _embedding_head(embed_dim)
        # Video: (B, 3, 5, 224, 224) -> (B, 512, 1, 1, 1).
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu_3d(3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)),  # 0-2: -> 96 x 1 x 109 x 109
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 3: -> 54
            *_conv_bn_relu_3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),  # 4-6: -> 26
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7: -> 13
            *_conv_bn_relu_3d(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),  # 8-10
            *_conv_bn_relu_3d(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),  # 11-13
            *_conv_bn_relu_3d(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),  # 14-16
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),  # 17: -> 6
            *_conv_bn_relu_3d(256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),  # 18-20: -> 1
        )

    def forward_aud(self, mfcc: Tensor) -> Tensor:
        """``(B, 1, 13, 20)`` MFCC windows -> ``(B, embed_dim)``."""
        if mfcc.ndim != 4 or mfcc.shape[1:] != (1, MFCC_NUM_COEFFS, MFCC_WINDOW_STEPS):
            raise ValueError(f"audio input must be (B, 1, 13, 20) MFCC windows, got {tuple(mfcc.shape)}")
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))  # (B, 512) -> (B, D)

    def forward_lip(self, video: Tensor) -> Tensor:
        """``(B, 3, 5, 224, 224)`` frame windows -> ``(B, embed_dim)``."""
        if video.ndim != 5 or video.shape[1:3] != (3, SYNCNET_WINDOW_FRAMES) or video.shape[-2:] != (224, 224):
            raise ValueError(f"video input must be (B, 3, 5, 224, 224) frame windows, got {tuple(video.shape)}")
        return self.netfclip(self.netcnnlip(video).flatten(1))  # (B, 512) -> (B, D)

    def forward(self, video: Tensor, mfcc: Tensor) -> tuple[Tensor, Tensor]:
        """Both embeddings: ``(forward_lip(video), forward_aud(mfcc))``."""
        return self.forward_lip(video), self.forward_aud(mfcc)


def load_syncnet(path: str | Path) -> SyncNetModel:
    """A :class:`SyncNetModel` in eval mode with the state dict at ``path`` loaded strictly.

    Works for the official ``syncnet_v2.model`` (a plain state dict whose keys are those of this class; a file from
    before PyTorch 0.4 has no ``num_batches_tracked`` entries, which BatchNorm's versioned loading fills in) and for
    a framework-trained expert saved as ``model.state_dict()``.

    Raises:
        ValueError: the file is not such a state dict, with the missing/unexpected keys.
    """
    p = Path(path)
    from ..checkpoints import safe_load

    state = safe_load(p, what="SyncNet state dict")  # CheckpointError (a ValueError) names the file
    if not isinstance(state, dict):
        raise ValueError(f"{p}: expected a state dict (name -> tensor), got {type(state).__name__}")
    model = SyncNetModel()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{p} does not match the joonson SyncNet layout: {exc}") from exc
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------------
# MFCC front end (python_speech_features.mfcc with its defaults)


def _hz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank_psf(
    *, num_filters: int = 26, nfft: int = 512, sample_rate: int = 16000, low_hz: float = 0.0, high_hz: float | None = None
) -> np.ndarray:
    """Triangular mel filters ``(num_filters, nfft // 2 + 1)``, python_speech_features' construction.

    Edges are ``num_filters + 2`` points equally spaced on the HTK mel scale (2595 log10(1 + f/700)), snapped
    *down* to FFT bins ``floor((nfft + 1) f / sr)``; filter j rises linearly from edge j (weight 0) to edge j+1
    (weight 1) and falls to edge j+2 (exclusive). Unnormalised (peak 1).
    """
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    if not 0 <= low_hz < high_hz <= sample_rate / 2:
        raise ValueError(f"need 0 <= low_hz < high_hz <= sample_rate/2, got {low_hz}, {high_hz} at {sample_rate} Hz")
    mels = np.linspace(_hz_to_mel_htk(low_hz), _hz_to_mel_htk(high_hz), num_filters + 2)
    edges = np.floor((nfft + 1) * _mel_to_hz_htk(mels) / sample_rate)  # (num_filters + 2,) FFT bins
    bins = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]  # (1, K)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (F, 1) each
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((bins >= lo) & (bins < mid), (bins - lo) / (mid - lo), 0.0)
        falling = np.where((bins >= mid) & (bins < hi), (hi - bins) / (hi - mid), 0.0)
    return rising + falling


def _frames(signal: np.ndarray, frame_len: int, frame_step: int) -> np.ndarray:
    """Overlapping frames ``(N, frame_len)``; the tail is zero-padded so the last frame holds the last sample."""
    n = len(signal)
    num = 1 if n <= frame_len else 1 + math.ceil((n - frame_len) / frame_step)
    padded = np.concatenate([signal, np.zeros((num - 1) * frame_step + frame_len - n)])
    idx = np.arange(frame_len)[None, :] + frame_step * np.arange(num)[:, None]
    return padded[idx]


def mfcc(
    signal: np.ndarray,
    *,
    sample_rate: int = 16000,
    win_length_s: float = 0.025,
    hop_length_s: float = 0.01,
    num_coeffs: int = MFCC_NUM_COEFFS,
    num_filters: int = 26,
    nfft: int | None = None,
    low_hz: float = 0.0,
    high_hz: float | None = None,
    preemphasis: float = 0.97,
    lifter: int = 22,
    append_energy: bool = True,
) -> np.ndarray:
    """MFCCs ``(num_frames, num_coeffs)`` float64, equivalent to ``python_speech_features.mfcc`` (same defaults).

    Steps: pre-emphasis ``y[n] = x[n] - a x[n-1]`` (``y[0] = x[0]``); frames of ``round(win * sr)`` samples every
    ``round(hop * sr)`` (rectangular window, zero-padded tail, ``1 + ceil((N - L) / S)`` frames); power spectrum
    ``|rfft(frame, nfft)|^2 / nfft`` (nfft: the smallest power of two >= the frame length); mel filterbank energies
    (:func:`mel_filterbank_psf`; zeros replaced by machine epsilon) -> log -> DCT-II with orthonormal scaling, first
    ``num_coeffs``; sine lifter ``1 + (L/2) sin(pi n / L)``; then coefficient 0 replaced by the log of the frame's
    total power-spectrum energy.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"mfcc expects a non-empty 1-D signal, got shape {x.shape}")
    frame_len = int(math.floor(win_length_s * sample_rate + 0.5))  # round half up, as python_speech_features
    frame_step = int(math.floor(hop_length_s * sample_rate + 0.5))
    if nfft is None:
        nfft = 1 << max(0, math.ceil(math.log2(frame_len)))
    emphasised = np.append(x[0], x[1:] - preemphasis * x[:-1])
    frames = _frames(emphasised, frame_len, frame_step)  # (N, L)
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft  # (N, nfft/2 + 1)
    eps = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    fb = mel_filterbank_psf(num_filters=num_filters, nfft=nfft, sample_rate=sample_rate, low_hz=low_hz, high_hz=high_hz)
    feat = power @ fb.T  # (N, F)
    feat = np.where(feat == 0, eps, feat)
    cep = scipy.fft.dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :num_coeffs]
    if lifter > 0:
        n = np.arange(cep.shape[1])
        cep = cep * (1 + (lifter / 2.0) * np.sin(np.pi * n / lifter))
    if append_energy:
        cep[:, 0] = np.log(energy)
    return cep


def syncnet_mfcc(audio: np.ndarray, *, sample_rate: int = 16000) -> np.ndarray:
    """SyncNet's audio input: ``(13, num_steps)`` float32 MFCCs at 100 Hz of mono audio in [-1, 1].

    The official pipeline reads 16-bit PCM with ``scipy.io.wavfile`` (integer sample values), so the audio is first
    quantised to int16 values; the scale matters for c0 (the log energy) only.
    """
    if sample_rate != 16000:
        raise ValueError(f"SyncNet works on 16 kHz audio, got {sample_rate} Hz; resample first (data.audio.resample)")
    x = np.asarray(audio, dtype=np.float64)
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767)
    return mfcc(pcm, sample_rate=sample_rate).T.astype(np.float32)  # (13, T)
