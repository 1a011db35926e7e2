"""Behaviour of dreamhead_lit.video: round trips, atomic writes, error reporting and frame-rate conversion."""

from __future__ import annotations

import math
import os
import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from dreamhead_lit.video import (
    VideoError,
    VideoWriter,
    iter_frames,
    probe_video,
    read_video,
    resample_frame_indices,
    write_video,
)

REAL_VIDEO_DIR = Path("/work/shared/data/real/video")
SR = 16000


def _smooth_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Smooth moving gradients (lossy H.264 reproduces these well): (T, H, W, 3) uint8."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(num_frames):
        r = 128 + 100 * np.sin(2 * np.pi * (xx / width + i / num_frames))
        g = 128 + 100 * np.cos(2 * np.pi * yy / height)
        b = np.full_like(xx, 60 + 2 * i)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def _sine(freq_hz: float, seconds: float, sample_rate: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _peak_hz(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * sample_rate / len(audio))


def _write_raw(path: Path, levels: list[int], pts: list[int], *, rate: int, fmt: str | None = None) -> None:
    """Write flat grey frames (grey level = `levels`) at explicit pts (in 1/rate units) with PyAV directly.

    Used to build inputs VideoWriter deliberately cannot produce: other rates, VFR gaps, mkv.
    """
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "10"})
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for level, p in zip(levels, pts):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), level, np.uint8), format="rgb24")
            frame.pts = p
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _grey_levels(frames: np.ndarray, step: int) -> np.ndarray:
    """Recover the source index encoded as grey level `step * index` in flat frames."""
    return np.round(frames.reshape(len(frames), -1).mean(axis=1) / step).astype(int)


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """50 frames 64x64 @ 25 fps with 2.0 s of a 440 Hz sine."""
    frames = _smooth_frames(50, 64, 64)
    audio = _sine(440.0, 2.0)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, frames, fps=25, audio=audio, sample_rate=SR, crf=18)
    return path, frames, audio


# --------------------------------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------------------------------


def test_probe_reports_what_was_written(av_clip: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, _, _ = av_clip
    info = probe_video(path)
    assert abs(info.num_frames - 50) <= 1
    assert info.num_frames_source == "container"
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (64, 64)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert info.has_audio
    assert info.audio_sample_rate == SR
    assert info.audio_duration_s == pytest.approx(2.0, abs=0.05)


def test_read_back_frames_and_audio(av_clip: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, frames, audio = av_clip
    data = read_video(path)
    assert data.frames.dtype == np.uint8 and data.frames.shape == frames.shape
    assert data.fps == pytest.approx(25.0)
    assert np.abs(data.frames.astype(np.int16) - frames.astype(np.int16)).mean() < 8
    assert data.audio is not None and data.audio.dtype == np.float32 and data.audio.ndim == 1
    assert data.sample_rate == SR
    # The AAC tail padding is trimmed: the track is as long as what was written.
    assert abs(len(data.audio) - len(audio)) <= 0.05 * SR
    assert _peak_hz(data.audio, SR) == pytest.approx(440.0, abs=10)


def test_audio_is_resampled_to_the_requested_rate(av_clip: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, _, _ = av_clip
    data = read_video(path, audio_sample_rate=8000)
    assert data.sample_rate == 8000
    assert data.audio is not None and abs(len(data.audio) - 16000) <= 0.05 * 8000
    assert _peak_hz(data.audio, 8000) == pytest.approx(440.0, abs=10)


def test_iter_frames_yields_the_same_frames_as_read_video(av_clip: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, _, _ = av_clip
    streamed = list(iter_frames(path))
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in streamed)
    np.testing.assert_array_equal(np.stack(streamed), read_video(path, with_audio=False).frames)


def test_torch_tensors_are_accepted(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    frames = _smooth_frames(10, 32, 32)
    path = tmp_path / "torch.mp4"
    write_video(path, torch.from_numpy(frames), audio=torch.from_numpy(_sine(440.0, 0.4)))
    data = read_video(path)
    assert data.frames.shape == (10, 32, 32, 3)
    assert np.abs(data.frames.astype(np.int16) - frames.astype(np.int16)).mean() < 8
    assert data.audio is not None and _peak_hz(data.audio, SR) == pytest.approx(440.0, abs=10)


def test_odd_size_is_padded_by_edge_replication(tmp_path: Path) -> None:
    height, width = 65, 63
    frames = _smooth_frames(8, height, width)
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=25, width=width, height=height) as writer:
        for frame in frames:
            writer.write(frame)
    info = probe_video(path)
    assert (info.width, info.height) == (64, 66)
    decoded = read_video(path).frames.astype(np.int16)  # (T, 66, 64, 3)
    assert np.abs(decoded[:, :height, :width] - frames.astype(np.int16)).mean() < 8
    # The padding repeats the last column/row rather than adding a black border.
    assert np.abs(decoded[:, :height, width] - frames[:, :, -1].astype(np.int16)).mean() < 8
    assert np.abs(decoded[:, height, :width] - frames[:, -1, :].astype(np.int16)).mean() < 8


def test_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    write_video(path, _smooth_frames(5, 32, 32))
    data = read_video(path)
    assert data.audio is None and data.frames.shape[0] == 5
    info = probe_video(path)
    assert not info.has_audio and info.audio_duration_s is None
    assert read_video(path, with_audio=False).audio is None


# --------------------------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------------------------


def test_exception_inside_with_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="model crashed"):
        with VideoWriter(path, fps=25, width=32, height=32, audio=_sine(440.0, 1.0)) as writer:
            writer.write(_smooth_frames(5, 32, 32))
            assert list(tmp_path.iterdir()) != []  # the temporary file exists while writing ...
            assert not path.exists()  # ... but nothing at the target path yet
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_abort_removes_the_temporary_file_and_keeps_an_existing_target(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous result")
    writer = VideoWriter(path, fps=25, width=32, height=32)
    writer.write(_smooth_frames(3, 32, 32))
    writer.abort()
    assert path.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    with pytest.raises(VideoError, match="after close"):
        writer.write(_smooth_frames(1, 32, 32))


def test_successful_close_replaces_target_with_normal_permissions(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "out.mp4"
    write_video(path, _smooth_frames(3, 32, 32))
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.mp4"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_closing_without_frames_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    with pytest.raises(VideoError, match="no frames"):
        with VideoWriter(path, fps=25, width=32, height=32):
            pass
    assert list(tmp_path.iterdir()) == []


def test_bad_writer_arguments_fail_early_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="preset"):
        VideoWriter(tmp_path / "a.mp4", width=32, height=32, preset="turbo")  # type: ignore[arg-type]
    with pytest.raises(VideoError, match=r"\*\.mp4"):
        VideoWriter(tmp_path / "a.avi", width=32, height=32)
    with pytest.raises(ValueError, match="AAC cannot encode"):
        VideoWriter(tmp_path / "a.mp4", width=32, height=32, audio=np.zeros(100, np.float32), sample_rate=12345)
    with pytest.raises(ValueError, match="mono"):
        VideoWriter(tmp_path / "a.mp4", width=32, height=32, audio=np.zeros((2, 100), np.float32))
    writer = VideoWriter(tmp_path / "a.mp4", width=32, height=32)
    with pytest.raises(ValueError, match="uint8"):
        writer.write(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"permute"):
        writer.write(np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        writer.write(np.zeros((16, 32, 3), np.uint8))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------------------------
# Unreadable inputs
# --------------------------------------------------------------------------------------------------------------------


def _make_truncated(tmp_path: Path, av_clip: tuple[Path, np.ndarray, np.ndarray]) -> Path:
    data = av_clip[0].read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    return path


def _make_empty(tmp_path: Path, av_clip: tuple[Path, np.ndarray, np.ndarray]) -> Path:
    path = tmp_path / "empty.mp4"
    path.touch()
    return path


def _make_text(tmp_path: Path, av_clip: tuple[Path, np.ndarray, np.ndarray]) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    return path


def _make_audio_only(tmp_path: Path, av_clip: tuple[Path, np.ndarray, np.ndarray]) -> Path:
    path = tmp_path / "speech.m4a"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=SR)
        frame = av.AudioFrame.from_ndarray(_sine(440.0, 0.5)[None, :], format="flt", layout="mono")
        frame.sample_rate = SR
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=SR, frame_size=1024)
        for chunk in resampler.resample(frame) + resampler.resample(None):
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_make_truncated, "truncated"),
        (_make_empty, "empty"),
        (_make_text, "not a video"),
        (_make_audio_only, "no video stream"),
        (lambda tmp_path, clip: tmp_path / "missing.mp4", "does not exist"),
    ],
    ids=["truncated", "empty", "text", "audio-only", "missing"],
)
def test_unreadable_files_raise_video_error_naming_the_file(
    tmp_path: Path, av_clip: tuple[Path, np.ndarray, np.ndarray], make, reason: str
) -> None:
    path = make(tmp_path, av_clip)
    for call in (read_video, probe_video, lambda p: list(iter_frames(p))):
        with pytest.raises(VideoError, match=reason) as excinfo:
            call(path)
        assert str(path) in str(excinfo.value)
        assert excinfo.value.path == path
        if reason in ("truncated", "not a video"):
            assert isinstance(excinfo.value.__cause__, av.FFmpegError)  # the FFmpeg cause is kept


def test_truncation_after_a_front_index_is_detected_when_decoding(tmp_path: Path) -> None:
    # With the index (moov) at the front, half a file still opens; the missing frames must not pass silently.
    full = tmp_path / "faststart.mp4"
    with av.open(str(full), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated") as excinfo:
        read_video(cut)
    assert str(cut) in str(excinfo.value)


def test_video_error_survives_pickling() -> None:
    # DataLoader workers pickle exceptions back to the main process.
    err = pickle.loads(pickle.dumps(VideoError("/data/x.mp4", "file is empty")))
    assert isinstance(err, VideoError) and err.path == Path("/data/x.mp4") and err.reason == "file is empty"
    assert isinstance(err, ValueError)


# --------------------------------------------------------------------------------------------------------------------
# Frame-rate conversion
# --------------------------------------------------------------------------------------------------------------------


def _nearest_reference(src_times: list[Fraction], dst_fps: Fraction, end_s: Fraction) -> np.ndarray:
    """Brute-force nearest-timestamp selection (ties -> earlier), the behaviour resampling must match.

    Exact fractions: with floats, true ties (e.g. 0.2 s between frames at 4/30 s and 8/30 s) go either way.
    """
    num_out = math.ceil(end_s * dst_fps)  # outputs whose time k / dst_fps lies before the end
    out = []
    for k in range(num_out):
        tau = Fraction(k) / dst_fps
        distances = [abs(t - tau) for t in src_times]
        out.append(distances.index(min(distances)))  # first minimum = earlier frame on ties
    return np.array(out, dtype=np.int64)


def test_resample_frame_indices_drops_and_repeats_by_nearest_timestamp() -> None:
    np.testing.assert_array_equal(resample_frame_indices(30, 25, 6), [0, 1, 2, 4, 5])
    np.testing.assert_array_equal(resample_frame_indices(25, 50, 3), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(resample_frame_indices(25, 25, 7), np.arange(7))
    assert resample_frame_indices(30, 25, 0).shape == (0,)
    for src, dst, n in [(30, 25, 91), (29.97, 25, 100), (Fraction(30000, 1001), 25, 77), (24, 25, 50), (60, 25, 33)]:
        got = resample_frame_indices(src, dst, n)
        src_rate = Fraction(src).limit_denominator(100_000)
        expected = _nearest_reference([i / src_rate for i in range(n)], Fraction(dst), n / src_rate)
        np.testing.assert_array_equal(got, expected, err_msg=f"{src} -> {dst} fps, {n} frames")
    with pytest.raises(ValueError, match="src_fps"):
        resample_frame_indices(0, 25, 10)


def test_target_fps_converts_30fps_input(tmp_path: Path) -> None:
    path = tmp_path / "30fps.mp4"
    _write_raw(path, levels=[4 * i for i in range(60)], pts=list(range(60)), rate=30)  # 2.0 s
    data = read_video(path, target_fps=25)
    assert data.fps == 25.0
    assert abs(len(data.frames) - 2.0 * 25) <= 1
    np.testing.assert_array_equal(_grey_levels(data.frames, 4), resample_frame_indices(30, 25, 60))
    assert len(list(iter_frames(path, target_fps=25))) == len(data.frames)


def test_target_fps_follows_timestamps_of_variable_rate_input(tmp_path: Path) -> None:
    # A 30 fps clip with frames 5-7 dropped: counting frames would shift every later frame by 3.
    kept = [i for i in range(30) if i not in (5, 6, 7)]
    path = tmp_path / "vfr.mp4"
    _write_raw(path, levels=[4 * i for i in kept], pts=kept, rate=30)
    data = read_video(path, target_fps=25)
    expected = np.array(kept)[_nearest_reference([Fraction(i, 30) for i in kept], Fraction(25), Fraction(1))]
    assert len(data.frames) == 25
    np.testing.assert_array_equal(_grey_levels(data.frames, 4), expected)


def test_probe_counts_packets_when_the_container_has_no_frame_count(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    _write_raw(path, levels=[10] * 20, pts=list(range(20)), rate=25, fmt="matroska")
    info = probe_video(path)
    assert info.num_frames == 20 and info.num_frames_source == "packets"
    assert info.duration_s == pytest.approx(0.8, abs=0.05)


# --------------------------------------------------------------------------------------------------------------------
# Real clips (read-only, skipped when the shared data set is absent)
# --------------------------------------------------------------------------------------------------------------------

_REAL_CLIPS = sorted(REAL_VIDEO_DIR.glob("*.mp4")) if REAL_VIDEO_DIR.is_dir() else []


@pytest.mark.skipif(not _REAL_CLIPS, reason=f"no real clips under {REAL_VIDEO_DIR}")
@pytest.mark.parametrize("path", _REAL_CLIPS, ids=[p.stem for p in _REAL_CLIPS])
def test_real_clip_reads_with_audio_matching_video_length(path: Path) -> None:
    info = probe_video(path)
    assert info.num_frames > 0 and info.has_audio
    data = read_video(path)
    assert data.frames.shape == (info.num_frames, info.height, info.width, 3)
    assert data.audio is not None and data.sample_rate == SR
    assert len(data.audio) / SR == pytest.approx(info.duration_s, abs=0.1)
    assert np.abs(data.audio).max() <= 1.0 + 1e-3  # channel mean, not swresample's +3 dB sum
