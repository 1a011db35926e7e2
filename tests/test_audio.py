"""Tests for dreamhead_lit.data.audio: file loading, resampling, log-mel features and frame alignment."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dreamhead_lit.data import audio as A
from dreamhead_lit.data.audio import (
    FEATURE_EXTRACTORS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    AudioError,
    AudioFeatureExtractor,
    LogMelExtractor,
    build_feature_extractor,
    features_for_frames,
    frame_windows,
    hz_to_mel,
    load_audio,
    mel_filterbank,
    mel_to_hz,
    register_feature_extractor,
    resample,
    save_wav,
)

# Real clips are read in place (never copied); the environment variable lets another checkout point elsewhere.
REAL_AUDIO_DIR = Path(os.environ.get("DREAMHEAD_REAL_AUDIO_DIR", "/work/shared/data/real/audio"))


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


@pytest.fixture(scope="module")
def logmel() -> LogMelExtractor:
    return LogMelExtractor()


# --------------------------------------------------------------------------------------------------
# Loading and resampling
# --------------------------------------------------------------------------------------------------

_FORMATS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}


@pytest.mark.parametrize("ext", list(_FORMATS))
@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_load_any_format_and_rate_gives_16k_mono_with_same_pitch(tmp_path: Path, ext: str, sr: int) -> None:
    if _FORMATS[ext] not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {ext}")
    n_in = sr // 2  # 0.5 s
    tone = _sine(1000.0, sr, 0.5)
    stereo = np.stack([tone, 0.5 * tone], axis=1)  # (N, 2)
    path = tmp_path / f"tone_{sr}.{ext}"
    sf.write(str(path), stereo, sr)

    y = load_audio(path)

    assert y.dtype == np.float32 and y.ndim == 1
    expected = n_in * SAMPLE_RATE / sr
    ratio = max(1.0, SAMPLE_RATE / sr)
    assert abs(len(y) - expected) <= ratio + 1e-9, f"{ext}@{sr}: {len(y)} samples, expected {expected}"
    assert np.all(np.abs(y) <= 1.0)
    assert abs(_peak_hz(y, SAMPLE_RATE) - 1000.0) <= 2 * SAMPLE_RATE / len(y)  # within 2 FFT bins


def test_load_averages_channels(tmp_path: Path) -> None:
    tone = _sine(440.0, SAMPLE_RATE, 0.25, amp=0.5)
    path = tmp_path / "left_only.wav"
    sf.write(str(path), np.stack([tone, np.zeros_like(tone)], axis=1), SAMPLE_RATE, subtype="FLOAT")
    y = load_audio(path)
    # A one-sided recording keeps its content at half level, rather than vanishing (right channel) or
    # passing at full level (first channel only).
    np.testing.assert_allclose(y, 0.5 * tone, atol=1e-6)


def test_load_at_other_target_rate(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(str(path), _sine(300.0, 48000, 0.5), 48000)
    y = load_audio(path, sample_rate=24000)
    assert len(y) == 12000
    assert abs(_peak_hz(y, 24000) - 300.0) <= 4.0


def test_missing_file_raises_audio_error_with_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.wav"
    with pytest.raises(AudioError, match="not found") as info:
        load_audio(path)
    assert str(path) in str(info.value)
    assert info.value.path == path
    assert isinstance(info.value, ValueError)


def test_corrupt_file_raises_audio_error_with_decoder_reason(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEthis is not audio at all" * 4)
    with pytest.raises(AudioError, match="cannot decode") as info:
        load_audio(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None  # the soundfile error is kept, not hidden


def test_empty_file_raises_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros((0,), dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"empty \(0 samples\)") as info:
        load_audio(path)
    assert str(path) in str(info.value)


def test_directory_raises_audio_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)


def test_non_finite_samples_raise(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    x = _sine(200.0, SAMPLE_RATE, 0.1)
    x[10] = np.nan
    sf.write(str(path), x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(path)


def test_resample_uses_reduced_ratio_and_keeps_frequency() -> None:
    x = _sine(1500.0, 44100, 1.0)
    y = resample(x, 44100, 16000)
    assert y.dtype == np.float32 and len(y) == 16000
    assert abs(_peak_hz(y, 16000) - 1500.0) <= 2.0
    same = resample(x, 16000, 16000)
    np.testing.assert_array_equal(same, x)
    assert same is not x  # a copy, so callers may modify it
    with pytest.raises(ValueError, match="positive integer"):
        resample(x, 0, 16000)


def test_save_wav_writes_16bit_mono_and_clips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.wav"
    x = np.array([0.0, 0.5, -0.5, 1.7, -3.0], dtype=np.float32)
    save_wav(path, x)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (SAMPLE_RATE, 1, "PCM_16", "WAV")
    y = load_audio(path)
    np.testing.assert_allclose(y, [0.0, 0.5, -0.5, 1.0, -1.0], atol=1 / 16384)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.wav"]  # no temporary file left behind
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        save_wav(tmp_path / "stereo.wav", np.zeros((10, 2), dtype=np.float32))


# --------------------------------------------------------------------------------------------------
# Mel scale and filterbank
# --------------------------------------------------------------------------------------------------


def test_slaney_mel_scale_reference_points() -> None:
    # Values from librosa's documentation of hz_to_mel / mel_to_hz (htk=False).
    assert float(hz_to_mel(60.0)) == pytest.approx(0.9)
    assert float(mel_to_hz(3.0)) == pytest.approx(200.0)
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(6400.0)) == pytest.approx(42.0)  # 27 mel per factor 6.4 above 1 kHz
    f = np.array([0.0, 55.0, 999.0, 1000.0, 1001.0, 4000.0, 7600.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)


def _reference_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Straight-from-the-definition loop: unit-area triangles between consecutive mel-spaced points."""
    pts = [float(mel_to_hz(m)) for m in np.linspace(float(hz_to_mel(fmin)), float(hz_to_mel(fmax)), n_mels + 2)]
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, mid, hi = pts[m], pts[m + 1], pts[m + 2]
        height = 2.0 / (hi - lo)
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo < f <= mid:
                out[m, k] = height * (f - lo) / (mid - lo)
            elif mid < f < hi:
                out[m, k] = height * (hi - f) / (hi - mid)
    return out


def test_filterbank_matches_reference_and_is_sane() -> None:
    fb = mel_filterbank(sample_rate=16000, n_fft=512, n_mels=80, fmin=55.0, fmax=7600.0)
    assert fb.shape == (80, 257) and fb.dtype == np.float32
    np.testing.assert_allclose(fb, _reference_filterbank(16000, 512, 80, 55.0, 7600.0), rtol=1e-5, atol=1e-8)

    df = 16000 / 512
    freqs = np.arange(257) * df
    assert np.all(fb >= 0)
    assert np.all(fb[:, (freqs < 55.0) | (freqs > 7600.0)] == 0)  # nothing outside [fmin, fmax]
    assert np.all((fb > 0).sum(axis=1) >= 2)  # no empty or single-bin filter
    assert np.all(np.diff(fb.argmax(axis=1)) >= 0)  # centres increase with the bin index
    wide = (fb > 0).sum(axis=1) >= 8
    assert wide.sum() >= 20  # the upper, log-spaced half of the bank
    # Slaney normalisation: each triangle has unit area in Hz (checked where it spans enough FFT bins
    # for the Riemann sum to be accurate).
    np.testing.assert_allclose(fb[wide].sum(axis=1) * df, 1.0, rtol=0.05)


def test_filterbank_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="fmax"):
        mel_filterbank(sample_rate=16000, n_fft=512, n_mels=80, fmin=0.0, fmax=9000.0)
    with pytest.raises(ValueError, match="cover no FFT bin"):
        mel_filterbank(sample_rate=16000, n_fft=64, n_mels=80, fmin=0.0, fmax=8000.0)


def test_pure_tone_peaks_in_mel_bin_with_closest_centre(logmel: LogMelExtractor) -> None:
    centres = mel_to_hz(np.linspace(hz_to_mel(55.0), hz_to_mel(7600.0), 82))[1:-1]  # (80,)
    for b in (5, 20, 40, 60, 78):
        feats = logmel(_sine(float(centres[b]), SAMPLE_RATE, 0.5, amp=0.3))  # (S, 80)
        assert int(feats.mean(dim=0).argmax()) == b, f"tone at centre of bin {b} ({centres[b]:.1f} Hz)"
    for f in (150.0, 440.0, 1234.0, 3000.0, 6500.0):
        feats = logmel(_sine(f, SAMPLE_RATE, 0.5, amp=0.3))
        closest = int(np.argmin(np.abs(centres - f)))
        # Between two centres the winner may be either neighbour by window leakage.
        assert abs(int(feats.mean(dim=0).argmax()) - closest) <= 1, f"tone {f} Hz"


# --------------------------------------------------------------------------------------------------
# Log-mel extractor
# --------------------------------------------------------------------------------------------------


def test_logmel_has_4_steps_per_video_frame(logmel: LogMelExtractor) -> None:
    assert (logmel.name, logmel.dim, logmel.steps_per_frame) == ("logmel80", 80, 4)
    assert isinstance(logmel, AudioFeatureExtractor)
    x = _sine(300.0, SAMPLE_RATE, 2.0)
    feats = logmel(x)
    assert feats.shape == (200, 80) and feats.dtype == torch.float32
    aligned = features_for_frames(x, 50, logmel)
    assert aligned.shape == (50 * 4, 80)
    torch.testing.assert_close(aligned, feats)
    assert logmel(x[:-1]).shape[0] == 200 and logmel(np.concatenate([x, x[:1]])).shape[0] == 201


def test_logmel_steps_sit_inside_their_video_frame(logmel: LogMelExtractor) -> None:
    # A noise burst filling exactly video frame 10 must be loudest in that frame's steps 40..43; only
    # the neighbouring steps 39 and 44 see its edges through their 25 ms windows, and nothing beyond.
    x = np.zeros(SAMPLE_RATE, dtype=np.float32)
    k = 10
    burst = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLES_PER_FRAME).astype(np.float32)
    x[k * SAMPLES_PER_FRAME : (k + 1) * SAMPLES_PER_FRAME] = burst
    energy = logmel(x).mean(dim=1)  # (S,)
    silence = energy[0].item()
    assert set(torch.topk(energy, 4).indices.tolist()) == {40, 41, 42, 43}
    assert energy[39] > silence + 1.0 and energy[44] > silence + 1.0
    torch.testing.assert_close(energy[:39], torch.full((39,), silence))
    torch.testing.assert_close(energy[45:], torch.full((len(energy) - 45,), silence))


def test_logmel_normalisation_is_fixed_not_per_clip(logmel: LogMelExtractor) -> None:
    x = _sine(500.0, SAMPLE_RATE, 0.5, amp=0.05)
    quiet, loud = logmel(x), logmel(10 * x)  # (S, 80)
    peak_bin = int(quiet.mean(dim=0).argmax())
    # 20 dB louder = power x100 = +ln(100) in the tone's bin; a per-clip normalisation would erase it.
    shift = (loud - quiet)[:, peak_bin].mean().item() * A.LOGMEL_STD
    assert shift == pytest.approx(math.log(100.0), abs=0.05)
    silence = logmel(np.zeros(1600, dtype=np.float32))
    expected = (math.log(A.LOGMEL_POWER_FLOOR) - A.LOGMEL_MEAN) / A.LOGMEL_STD
    torch.testing.assert_close(silence, torch.full_like(silence, expected))
    assert torch.isfinite(silence).all()


def test_logmel_rejects_bad_input(logmel: LogMelExtractor) -> None:
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        logmel(np.zeros((100, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        logmel(np.zeros(0, dtype=np.float32))


def test_non_default_logmel_gets_its_own_cache_key() -> None:
    ext = LogMelExtractor(n_mels=40, fmin=0.0, fmax=8000.0)
    assert ext.dim == 40 and ext.name != "logmel80"
    assert ext(np.zeros(640, dtype=np.float32)).shape == (4, 40)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_build_known_and_unknown_extractors() -> None:
    ext = build_feature_extractor("logmel80")
    assert isinstance(ext, LogMelExtractor)
    with pytest.raises(ValueError, match="unknown audio feature extractor 'wav2vec9'") as info:
        build_feature_extractor("wav2vec9")
    assert "logmel80" in str(info.value)


class _HalfRateStub:
    """A 50 Hz extractor (2 steps per frame) that, like wav2vec2's conv front end, comes out one step short."""

    name = "stub50hz"
    dim = 3
    steps_per_frame = 2

    def __call__(self, samples: np.ndarray) -> torch.Tensor:
        n = max(1, len(samples) // 320 - 1)
        return torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)  # (S, 3), row j == j


def test_register_new_extractor_and_refuse_name_clash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(A, "FEATURE_EXTRACTORS", dict(FEATURE_EXTRACTORS))
    register_feature_extractor("stub50hz")(_HalfRateStub)
    assert isinstance(A.build_feature_extractor("stub50hz"), _HalfRateStub)
    register_feature_extractor("stub50hz")(_HalfRateStub)  # same class again (module reload) is fine
    with pytest.raises(ValueError, match="already registered"):
        register_feature_extractor("logmel80")(_HalfRateStub)
    assert A.FEATURE_EXTRACTORS["logmel80"] is LogMelExtractor


# --------------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------------


def test_features_for_frames_pads_short_audio_with_silence(logmel: LogMelExtractor) -> None:
    x = _sine(700.0, SAMPLE_RATE, 1.0)  # 25 frames of audio, 50 frames of video
    feats = features_for_frames(x, 50, logmel)
    assert feats.shape == (200, 80)
    silence = logmel(np.zeros(640, dtype=np.float32))[0]
    torch.testing.assert_close(feats[110:], silence.expand(90, -1))  # tail reads as silence
    assert (feats[:100].mean(dim=1) > silence.mean() + 1.0).all()  # head is the tone


def test_features_for_frames_trims_long_audio_keeping_context(logmel: LogMelExtractor) -> None:
    x = _sine(700.0, SAMPLE_RATE, 3.0)
    feats = features_for_frames(x, 50, logmel)
    torch.testing.assert_close(feats, logmel(x)[:200])


def test_features_for_frames_edge_replicates_short_extractor_output() -> None:
    feats = features_for_frames(np.zeros(10 * SAMPLES_PER_FRAME, dtype=np.float32), 10, _HalfRateStub())
    assert feats.shape == (20, 3)
    assert feats[:, 0].tolist() == list(range(19)) + [18]
    with pytest.raises(ValueError, match="num_frames"):
        features_for_frames(np.zeros(640, dtype=np.float32), 0, _HalfRateStub())


def _coded_features(num_frames: int, spf: int, dim: int) -> torch.Tensor:
    # Step value = 100 * frame + step-within-frame, identical across dims, so every row names its origin.
    frame = torch.arange(num_frames).repeat_interleave(spf)
    step = torch.arange(spf).repeat(num_frames)
    return (100 * frame + step).float()[:, None].repeat(1, dim)  # (F * spf, dim)


@pytest.mark.parametrize("context", [0, 1, 3])
def test_frame_windows_content_and_edge_replication(context: int) -> None:
    num_frames, spf, dim = 7, 4, 5
    feats = _coded_features(num_frames, spf, dim)
    win = frame_windows(feats, num_frames=num_frames, steps_per_frame=spf, context=context)
    assert win.shape == (num_frames, (2 * context + 1) * spf, dim)
    for i in range(num_frames):
        blocks = win[i, :, 0].reshape(2 * context + 1, spf)
        for j, offset in enumerate(range(-context, context + 1)):
            src = min(max(i + offset, 0), num_frames - 1)  # edge replication at both ends
            assert blocks[j].tolist() == [100.0 * src + s for s in range(spf)], (i, offset)
        torch.testing.assert_close(blocks[context], feats[i * spf : (i + 1) * spf, 0])  # own steps in the centre


def test_frame_windows_batched_equals_per_item() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 6 * 4, 8, generator=g)  # (B, S, D)
    win = frame_windows(feats, num_frames=6, steps_per_frame=4, context=2)
    assert win.shape == (3, 6, 20, 8)
    for b in range(3):
        torch.testing.assert_close(win[b], frame_windows(feats[b], num_frames=6, steps_per_frame=4, context=2))


def test_frame_windows_rejects_misaligned_features() -> None:
    with pytest.raises(ValueError, match="features_for_frames"):
        frame_windows(torch.zeros(201, 80), num_frames=50, steps_per_frame=4, context=1)
    with pytest.raises(ValueError, match="context"):
        frame_windows(torch.zeros(200, 80), num_frames=50, steps_per_frame=4, context=-1)


# --------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------


def _real_files() -> list[Path]:
    if not REAL_AUDIO_DIR.is_dir():
        return []
    return sorted(p for p in REAL_AUDIO_DIR.iterdir() if p.is_file() and not p.name.startswith("."))


@pytest.mark.skipif(not _real_files(), reason=f"no real audio under {REAL_AUDIO_DIR}")
@pytest.mark.parametrize("path", _real_files(), ids=lambda p: p.name)
def test_real_audio_loads_to_normalised_features(path: Path, logmel: LogMelExtractor) -> None:
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) > 0
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    info = sf.info(str(path))
    assert abs(len(y) - info.frames * SAMPLE_RATE / info.samplerate) <= max(1.0, SAMPLE_RATE / info.samplerate)
    num_frames = len(y) // SAMPLES_PER_FRAME
    feats = features_for_frames(y, num_frames, logmel)
    assert feats.shape == (num_frames * 4, 80) and torch.isfinite(feats).all()
    # The fixed constants make speech at a normal level roughly zero-mean, unit-scale.
    assert abs(feats.mean().item()) < 1.0
    assert 0.5 < feats.std().item() < 1.5
