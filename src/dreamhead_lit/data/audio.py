"""Audio handling shared by preprocessing, both training stages and generation.

Everything downstream of this module sees 16 kHz mono float32 audio and per-step feature tensors
aligned to 25-fps video: one video frame is exactly ``SAMPLE_RATE // VIDEO_FPS = 640`` samples, and
video frame ``i`` covers samples ``[i * 640, (i + 1) * 640)``.

Pieces:

* :func:`load_audio` / :func:`resample` / :func:`save_wav` -- file I/O through ``soundfile`` (wav,
  flac, ogg, mp3, any rate and channel count) and polyphase resampling with
  ``scipy.signal.resample_poly``. Failures raise :class:`AudioError` naming the file.
* :class:`AudioFeatureExtractor` -- the small interface every audio front end implements, with a
  name-keyed registry (:data:`FEATURE_EXTRACTORS`, :func:`register_feature_extractor`,
  :func:`build_feature_extractor`). :class:`LogMelExtractor` (``"logmel80"``) is the built-in one:
  80-bin log-mel at 100 steps/s (4 steps per video frame), computed with ``torch.stft``.
* :func:`features_for_frames` -- features for exactly ``num_frames`` video frames.
* :func:`frame_windows` -- per-frame context windows of feature steps, the conditioning a stage-1
  denoiser (and an audio-conditioned stage-2 one) sees for each frame; :func:`windows_for_frames` goes
  from samples to those windows, :func:`window_shape` gives their ``(K, D)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Protocol, TypeVar, runtime_checkable

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from .clip import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

__all__ = [
    "SAMPLE_RATE",
    "VIDEO_FPS",
    "SAMPLES_PER_FRAME",
    "AudioError",
    "load_audio",
    "resample",
    "save_wav",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "AudioFeatureExtractor",
    "LogMelExtractor",
    "FEATURE_EXTRACTORS",
    "register_feature_extractor",
    "build_feature_extractor",
    "features_for_frames",
    "frame_windows",
    "window_shape",
    "windows_for_frames",
]

# the processed-clip format fixes these (data/clip.py): every clip and every feature extractor works at 16 kHz mono,
# 25 fps, 640 samples a video frame
VIDEO_FPS = FPS


class AudioError(ValueError):
    """An audio file could not be used: missing, undecodable, empty or otherwise invalid.

    Attributes:
        path: the offending file.
        reason: what was wrong with it, in words (without the path).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# --------------------------------------------------------------------------------------------------
# File I/O and resampling
# --------------------------------------------------------------------------------------------------


def resample(samples: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample ``samples`` along axis 0 from ``orig_sr`` to ``new_sr`` Hz.

    Uses ``scipy.signal.resample_poly`` with the ratio reduced by the gcd (44.1 kHz -> 16 kHz is
    up 160 / down 441), i.e. an exact rational polyphase resampler with a Kaiser-windowed
    anti-aliasing FIR, which is both faster and cleaner than FFT resampling for long clips.
    The output has ``ceil(len * new_sr / orig_sr)`` samples and dtype float32.
    """
    if int(orig_sr) != orig_sr or int(new_sr) != new_sr or orig_sr <= 0 or new_sr <= 0:
        raise ValueError(
            f"resample needs positive integer sample rates, got orig_sr={orig_sr!r}, new_sr={new_sr!r}"
        )
    orig_sr, new_sr = int(orig_sr), int(new_sr)
    x = np.asarray(samples, dtype=np.float32)
    if orig_sr == new_sr:
        return x.copy()
    g = math.gcd(orig_sr, new_sr)
    return resample_poly(x, up=new_sr // g, down=orig_sr // g, axis=0).astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike[str], *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as float32 mono at ``sample_rate`` Hz, values in [-1, 1].

    Any format libsndfile decodes works (wav, flac, ogg/vorbis, mp3, ...), at any rate and channel
    count: channels are averaged (not the first channel taken, so a one-sided stereo recording is
    not lost), then the signal is resampled with :func:`resample`. The result is clipped to [-1, 1]
    because polyphase filtering can overshoot slightly on full-scale signals and float files may
    exceed full scale.

    Raises:
        AudioError: the file is missing, is not a file, cannot be decoded, holds zero samples, or
            holds non-finite (NaN/inf) samples. The message names the path.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(p, "audio file not found; check the path (or re-run preprocessing for this clip)")
    if not p.is_file():
        raise AudioError(p, "not a regular file (is it a directory?); pass the path of an audio file")
    try:
        data, file_sr = sf.read(str(p), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(p, f"cannot decode: {exc}; is it a valid wav/flac/ogg/mp3 file?") from exc
    if data.shape[0] == 0:
        raise AudioError(p, "audio file is empty (0 samples)")
    mono = data.mean(axis=1)  # (N,)
    if not np.all(np.isfinite(mono)):
        raise AudioError(p, "audio contains non-finite samples (NaN or inf); re-export the file")
    mono = resample(mono, file_sr, sample_rate)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def save_wav(path: str | os.PathLike[str], samples: np.ndarray, *, sample_rate: int = SAMPLE_RATE) -> None:
    """Write ``samples`` (shape ``(N,)``, nominally in [-1, 1]) as a 16-bit PCM mono wav.

    Values are clipped to [-1, 1] first so out-of-range samples saturate instead of wrapping
    around in the integer conversion. Parent folders are created. The file is written under a
    temporary name in the same folder and renamed, so an interrupted write never leaves a
    truncated wav that later looks valid.
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"save_wav expects mono samples of shape (N,), got shape {x.shape} for {path}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"save_wav got non-finite samples (NaN or inf) for {path}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        sf.write(str(tmp), np.clip(x.astype(np.float32), -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------------
# Mel filterbank (Slaney mel scale and area normalisation, as librosa's default htk=False, norm="slaney")
# --------------------------------------------------------------------------------------------------

_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel in the linear region below 1 kHz
_SLANEY_MIN_LOG_HZ = 1000.0  # start of the log region
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # = 15 mel
_SLANEY_LOGSTEP = math.log(6.4) / 27.0  # 27 mel per factor 6.4 in frequency above 1 kHz


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """Slaney (Auditory Toolbox) mel scale: linear below 1 kHz, logarithmic above.

    Matches ``librosa.hz_to_mel(f, htk=False)``: 60 Hz -> 0.9 mel, 1000 Hz -> 15 mel.
    """
    f = np.asarray(freq, dtype=np.float64)
    lin = f / _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(f, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return np.where(f >= _SLANEY_MIN_LOG_HZ, log, lin)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel` (``librosa.mel_to_hz(m, htk=False)``: 3 mel -> 200 Hz)."""
    m = np.asarray(mel, dtype=np.float64)
    lin = m * _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (np.maximum(m, _SLANEY_MIN_LOG_MEL) - _SLANEY_MIN_LOG_MEL))
    return np.where(m >= _SLANEY_MIN_LOG_MEL, log, lin)


def mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filterbank of shape ``(n_mels, n_fft // 2 + 1)``, float32.

    Filter ``m`` rises linearly from centre frequency ``m - 1`` to ``m`` and falls to ``m + 1``,
    with the ``n_mels + 2`` edge/centre frequencies equally spaced on the Slaney mel scale between
    ``fmin`` and ``fmax``. Each triangle is scaled by ``2 / (f[m+1] - f[m-1])`` (Slaney area
    normalisation) so every filter has unit area in Hz: the mel spectrum is then a band-averaged
    spectral density, and a flat spectrum gives the same value in narrow low bands and wide high
    bands. This is the same matrix as ``librosa.filters.mel(..., htk=False, norm="slaney")``.
    """
    if not 0.0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            f"mel filterbank needs 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}, "
            f"sample_rate={sample_rate}"
        )
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # (K,)
    mel_freqs = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (M+2,)
    fdiff = np.diff(mel_freqs)  # (M+1,)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]  # (M+2, K)
    lower = -ramps[:-2] / fdiff[:-1, None]  # rising edge, (M, K)
    upper = ramps[2:] / fdiff[1:, None]  # falling edge, (M, K)
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    empty = np.flatnonzero(weights.max(axis=1) <= 0)
    if empty.size:
        raise ValueError(
            f"mel filters {empty.tolist()} cover no FFT bin (n_mels={n_mels} too many for n_fft={n_fft}, "
            f"fmin={fmin}, fmax={fmax}); use fewer mel bins, a larger n_fft, or a wider frequency range"
        )
    return weights.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Feature extractor interface and registry
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class AudioFeatureExtractor(Protocol):
    """What the data pipeline needs from an audio front end.

    An extractor maps 16 kHz mono float32 samples ``(N,)`` to a feature sequence ``(S, dim)``
    float32 whose step ``j`` describes samples around ``[j * hop, (j + 1) * hop)``, where
    ``hop = 640 // steps_per_frame``; :func:`features_for_frames` relies on that timing to align
    steps with video frames.

    Attributes:
        name: cache key for precomputed features; must change whenever the output would change.
        dim: feature size per step.
        steps_per_frame: feature steps per 25-fps video frame (an integer divisor of 640 samples).

    Adding a learned front end (wav2vec 2.0 / HuBERT from a local checkpoint): write a class with
    ``name`` (e.g. ``"hubert_large_l9"``, naming the checkpoint and layer so caches never mix),
    ``dim`` (768 or 1024), ``steps_per_frame = 2`` (these models emit 50 Hz features, one per
    20 ms = 320 samples), load the checkpoint from a path given as a constructor keyword in
    ``__init__`` (never download inside the data pipeline), and in ``__call__`` normalise the
    waveform as the checkpoint expects, run the model under ``torch.inference_mode()`` and return
    the chosen hidden layer as ``(S, dim)`` float32 on the CPU. Decorate it with
    ``@register_feature_extractor("hubert_large_l9")`` and select it by that name in the data
    config. The model's convolutional front end yields one or two steps fewer than
    ``len / 320``; :func:`features_for_frames` pads/trims that difference by edge replication.
    """

    name: str
    dim: int
    steps_per_frame: int

    def __call__(self, samples: np.ndarray) -> torch.Tensor: ...


FEATURE_EXTRACTORS: dict[str, type] = {}

_T = TypeVar("_T", bound=type)


def register_feature_extractor(name: str) -> Callable[[_T], _T]:
    """Class decorator registering an :class:`AudioFeatureExtractor` under ``name``.

    Registering a different class under a name already taken raises ``ValueError`` (a silent
    overwrite would make configs resolve to whichever module was imported last).
    """

    def decorator(cls: _T) -> _T:
        existing = FEATURE_EXTRACTORS.get(name)
        # Same module and qualname = the same class re-imported (importlib.reload), not a clash.
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"audio feature extractor name {name!r} is already registered to "
                f"{existing.__module__}.{existing.__qualname__}; choose another name"
            )
        FEATURE_EXTRACTORS[name] = cls
        return cls

    return decorator


def build_feature_extractor(name: str, **kwargs: object) -> AudioFeatureExtractor:
    """Instantiate the extractor registered under ``name`` with ``kwargs``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the registered names.
    """
    try:
        cls = FEATURE_EXTRACTORS[name]
    except KeyError:
        valid = ", ".join(sorted(FEATURE_EXTRACTORS)) or "(none registered)"
        raise ValueError(
            f"unknown audio feature extractor {name!r}; valid names: {valid}. "
            "Register new ones with @register_feature_extractor(name)."
        ) from None
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------------
# Log-mel
# --------------------------------------------------------------------------------------------------

# Fixed normalisation of the natural-log mel power (NOT per-clip statistics: loudness carries
# information, e.g. emphasis and emotion intensity). Mean and std over all bins and steps of four
# real 16 kHz speech clips at normal recording level (RMS 0.05-0.15 of full scale; measured values
# -8.47 and 4.43), so normalised speech is roughly zero-mean and unit-scale. For scale: a 0.1
# amplitude sine peaks near +2.1, 16-bit quantisation noise sits near -3.0 and digital silence at
# the floor, -3.2.
LOGMEL_MEAN = -8.5
LOGMEL_STD = 4.5
# Mel-power floor before the log, just below the 16-bit quantisation noise level (about 3e-10 in
# these units), so digital silence and dithered silence land close together instead of at -inf.
LOGMEL_POWER_FLOOR = 1e-10


@register_feature_extractor("logmel80")
class LogMelExtractor:
    """80-bin log-mel spectrogram at 100 steps/s, 4 steps per 25-fps video frame.

    Front end: ``torch.stft`` with n_fft 512, a 400-sample (25 ms) periodic Hann window, hop 160
    (10 ms); power spectrum ``|X|^2``; Slaney mel filterbank (:func:`mel_filterbank`, fmin 55 Hz
    to cut mains hum and DC, fmax 7600 Hz to stay clear of the 8 kHz Nyquist roll-off of
    resampled audio); natural log of the power clamped at :data:`LOGMEL_POWER_FLOOR`; then
    ``(log_mel - LOGMEL_MEAN) / LOGMEL_STD`` with fixed constants.

    Timing: step ``j`` is the window centred on sample ``160 * j + 80``, the middle of the 10 ms
    hop segment ``[160 j, 160 (j + 1))``, so the four steps of video frame ``i`` sit symmetrically
    inside its samples ``[640 i, 640 (i + 1))``. Samples outside the clip count as silence (zero
    padding). A clip of ``N`` samples gives ``ceil(N / 160)`` steps: 2.0 s -> 200 steps.
    """

    N_FFT = 512
    WIN_LENGTH = 400
    HOP_LENGTH = 160

    def __init__(self, *, n_mels: int = 80, fmin: float = 55.0, fmax: float = 7600.0) -> None:
        if SAMPLES_PER_FRAME % self.HOP_LENGTH:
            raise ValueError(f"hop {self.HOP_LENGTH} must divide the {SAMPLES_PER_FRAME} samples of a video frame")
        defaults = (n_mels, fmin, fmax) == (80, 55.0, 7600.0)
        # The cache key must change whenever the output does.
        self.name = "logmel80" if defaults else f"logmel{n_mels}_fmin{fmin:g}_fmax{fmax:g}"
        self.dim = int(n_mels)
        self.steps_per_frame = SAMPLES_PER_FRAME // self.HOP_LENGTH  # 4
        self.fmin, self.fmax = float(fmin), float(fmax)
        self._fbank = torch.from_numpy(
            mel_filterbank(sample_rate=SAMPLE_RATE, n_fft=self.N_FFT, n_mels=self.dim, fmin=self.fmin, fmax=self.fmax)
        )  # (M, K)
        self._window = torch.hann_window(self.WIN_LENGTH, periodic=True)  # (W,)

    def __repr__(self) -> str:
        return f"LogMelExtractor(name={self.name!r}, n_mels={self.dim}, fmin={self.fmin:g}, fmax={self.fmax:g})"

    def __call__(self, samples: np.ndarray) -> torch.Tensor:
        """Features ``(ceil(N / 160), n_mels)`` float32 for 16 kHz mono samples ``(N,)``."""
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        if x.ndim != 1 or x.numel() == 0:
            raise ValueError(
                f"LogMelExtractor expects non-empty 16 kHz mono samples of shape (N,), got {tuple(x.shape)}"
            )
        hop, n_fft = self.HOP_LENGTH, self.N_FFT
        num_steps = -(-x.numel() // hop)  # ceil
        # torch.stft centres the 400-sample window inside the 512-sample frame (offset 256), so a
        # left pad of 256 - hop/2 puts frame j's window centre on sample hop*j + hop/2.
        left = n_fft // 2 - hop // 2
        right = (num_steps - 1) * hop + n_fft - left - x.numel()
        x = torch.nn.functional.pad(x, (left, right))  # zero = silence outside the clip
        spec = torch.stft(
            x,
            n_fft=n_fft,
            hop_length=hop,
            win_length=self.WIN_LENGTH,
            window=self._window,
            center=False,
            return_complex=True,
        )  # (K, S)
        power = spec.real.square() + spec.imag.square()  # (K, S)
        mel = self._fbank @ power  # (M, S)
        log_mel = torch.log(mel.clamp_min(LOGMEL_POWER_FLOOR))
        return ((log_mel - LOGMEL_MEAN) / LOGMEL_STD).T.contiguous()  # (S, M)


# --------------------------------------------------------------------------------------------------
# Alignment to video frames
# --------------------------------------------------------------------------------------------------


def features_for_frames(
    samples: np.ndarray,
    num_frames: int,
    extractor: AudioFeatureExtractor,
) -> torch.Tensor:
    """Features aligned to ``num_frames`` video frames: ``(num_frames * steps_per_frame, dim)``.

    Video frame ``i`` covers samples ``[640 i, 640 (i + 1))`` and gets feature steps
    ``[i * steps_per_frame, (i + 1) * steps_per_frame)``. Audio and video lengths of real clips
    rarely match to the sample:

    * audio longer than the video: features are computed on the whole clip and the extra steps
      dropped, so the last frames still see the real audio after them as context;
    * audio shorter: the samples are padded with silence (zeros) to the video length before
      extraction, so the missing tail reads as silence rather than as a frozen copy of the
      last sound;
    * an extractor whose convolutional front end yields a step or two fewer/more than the
      nominal rate: the end is edge-replicated or trimmed to the exact count.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    spf = int(extractor.steps_per_frame)
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"features_for_frames expects mono samples of shape (N,), got shape {x.shape}")
    needed = num_frames * SAMPLES_PER_FRAME
    if x.shape[0] < needed:
        x = np.pad(x, (0, needed - x.shape[0]))
    feats = extractor(x)  # (S', D)
    target = num_frames * spf
    if feats.shape[0] >= target:
        return feats[:target]
    pad = feats[-1:].expand(target - feats.shape[0], -1)  # edge replicate
    return torch.cat([feats, pad], dim=0)


def frame_windows(
    features: torch.Tensor,
    *,
    num_frames: int,
    steps_per_frame: int,
    context: int,
) -> torch.Tensor:
    """Per-video-frame windows of feature steps, for conditioning a frame on nearby audio.

    Accepts unbatched ``(S, D)`` or batched ``(B, S, D)`` features with
    ``S == num_frames * steps_per_frame`` and returns ``(num_frames, W, D)`` or
    ``(B, num_frames, W, D)`` with ``W = (2 * context + 1) * steps_per_frame``. Window ``i`` is the
    steps of frames ``i - context .. i + context`` in order; frames before 0 / after the end are
    replaced by the first / last frame (edge replication), so the window of frame ``i`` always
    has its own steps in the centre block. Built with one gather, no loop over frames.
    """
    if context < 0:
        raise ValueError(f"context must be >= 0 frames, got {context}")
    if features.ndim not in (2, 3):
        raise ValueError(f"frame_windows expects features of shape (S, D) or (B, S, D), got {tuple(features.shape)}")
    steps = features.shape[-2]
    if steps != num_frames * steps_per_frame:
        raise ValueError(
            f"features have {steps} steps but num_frames={num_frames} x steps_per_frame={steps_per_frame} "
            f"= {num_frames * steps_per_frame}; align them first with features_for_frames"
        )
    dim = features.shape[-1]
    per_frame = features.reshape(*features.shape[:-2], num_frames, steps_per_frame, dim)  # (..., F, P, D)
    offsets = torch.arange(-context, context + 1, device=features.device)  # (2c+1,)
    idx = (torch.arange(num_frames, device=features.device)[:, None] + offsets[None, :]).clamp(0, num_frames - 1)
    windows = per_frame[..., idx, :, :]  # (..., F, 2c+1, P, D)
    return windows.reshape(*features.shape[:-2], num_frames, (2 * context + 1) * steps_per_frame, dim)


def window_shape(extractor: AudioFeatureExtractor, *, context: int) -> tuple[int, int]:
    """``(K, D)`` of one frame's window from :func:`frame_windows`: ``K = (2 * context + 1) * steps_per_frame``."""
    return (2 * context + 1) * int(extractor.steps_per_frame), int(extractor.dim)


def windows_for_frames(
    samples: np.ndarray,
    num_frames: int,
    extractor: AudioFeatureExtractor,
    *,
    context: int,
) -> torch.Tensor:
    """Per-frame windows ``(num_frames, K, D)`` of 16 kHz mono ``samples``: :func:`features_for_frames`, then
    :func:`frame_windows` (what the models see at generation time, for audio of any length)."""
    feats = features_for_frames(samples, num_frames, extractor)
    return frame_windows(feats, num_frames=num_frames, steps_per_frame=extractor.steps_per_frame, context=context)
