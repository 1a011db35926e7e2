"""MP4 reading and writing with audio, through PyAV.

One implementation serves every place that touches video files: the dataset preview, the landmark
animation of stage 1, the generation CLI (audio -> talking-head mp4) and the benchmark, which reads
generated and ground-truth clips. Keeping a single reader matters for the benchmark: frames and audio
of both sides must go through the same decoding, colour conversion and resampling, otherwise metric
differences partly measure the I/O code.

Conventions:
    * frames are RGB ``uint8`` arrays, ``(H, W, 3)`` for one frame and ``(T, H, W, 3)`` for a clip;
    * audio is mono ``float32`` in [-1, 1], shape ``(S,)``, 16 kHz unless told otherwise;
    * every failure to read or write a file is a :class:`VideoError` naming the file and the reason,
      with the underlying PyAV/FFmpeg error chained as ``__cause__``.
"""

from __future__ import annotations

import math
import os
import secrets
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, get_args

import av
import numpy as np

__all__ = [
    "VideoError",
    "VideoWriter",
    "write_video",
    "VideoData",
    "VideoInfo",
    "read_video",
    "iter_frames",
    "probe_video",
    "resample_frame_indices",
    "X264Preset",
]

PathLike = str | os.PathLike[str]

# libx264 speed/compression presets; anything else is rejected at construction, not deep inside FFmpeg.
X264Preset = Literal[
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
]
_X264_PRESETS: tuple[str, ...] = get_args(X264Preset)

NumFramesSource = Literal["container", "packets"]

_T = TypeVar("_T")


class VideoError(ValueError):
    """A video file could not be read or written.

    Attributes:
        path: the file the operation was about (the final target path for writes).
        reason: what went wrong and, where possible, what to do about it.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Custom __init__ arguments: without this the error cannot cross a DataLoader worker boundary.
        return (type(self), (self.path, self.reason))


# --------------------------------------------------------------------------------------------------------------------
# Small helpers shared by the writer and the readers
# --------------------------------------------------------------------------------------------------------------------


def _as_rate(value: float | int | Fraction, *, name: str) -> Fraction:
    """Validate a frame rate and return it as an exact fraction (container time bases are rational)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    # 29.97 -> 2997/100, 30000/1001 stays exact; a bounded denominator keeps the codec time base sane.
    return Fraction(value).limit_denominator(100_000)


def _positive_int(value: Any, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _to_numpy(x: Any, *, what: str) -> np.ndarray:
    """Return ``x`` as a NumPy array; torch tensors are detached and moved to the CPU."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch here
        return x.detach().cpu().numpy()
    raise TypeError(f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _as_frame_batch(frames: Any) -> np.ndarray:
    """Validate RGB uint8 frames and return them as ``(T, H, W, 3)``."""
    arr = _to_numpy(frames, what="frames")
    if arr.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 RGB in [0, 255], got dtype {arr.dtype}; convert floats in [0, 1] with "
            "(x.clip(0, 1) * 255).round().astype(np.uint8) (torch: .clamp(0, 1).mul(255).round().to(torch.uint8))"
        )
    if arr.ndim == 3:
        arr = arr[None]  # (1, H, W, 3)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(
            f"frames must be channel-last RGB of shape (H, W, 3) or (T, H, W, 3), got {tuple(arr.shape)}; "
            "a (T, 3, H, W) tensor needs .permute(0, 2, 3, 1) first"
        )
    return arr


def _as_mono_audio(audio: Any) -> np.ndarray:
    """Validate a mono waveform and return it as contiguous float32 ``(S,)``."""
    arr = _to_numpy(audio, what="audio")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)  # (1, S) or (S, 1) -> (S,)
    if arr.ndim != 1:
        raise ValueError(f"audio must be mono with shape (S,), got {tuple(arr.shape)}; downmix with .mean(axis=0)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError("audio is empty; pass audio=None to write a silent video")
    if not np.all(np.isfinite(arr)):
        raise ValueError("audio contains NaN or inf samples")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Pad ``(T, H, W, 3)`` frames to even H and W by replicating the last row/column (yuv420p needs even sizes)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h == 0 and pad_w == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _reserve_temp_path(target: Path) -> str:
    """Create an empty hidden file ``.<name>.<random>.tmp.mp4`` beside ``target`` and return its path.

    O_EXCL makes concurrent writers to the same target never share a temporary file; mode 0o666 (minus
    the umask) gives the finished video the same permissions as any newly created file.
    """
    for _ in range(100):
        candidate = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp.mp4"
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return str(candidate)
    raise VideoError(target, f"could not create a temporary file in {target.parent}")


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


class VideoWriter:
    """Atomic H.264 + AAC mp4 writer; use it as a context manager.

    Frames are encoded with ``libx264`` in ``yuv420p`` as they are written; the audio track (if any) is
    encoded in full and muxed at :meth:`close` (the mp4 muxer orders packets by time, so writing all
    audio last is fine).

    Atomicity: everything is written to a hidden temporary file beside the target
    (``.<name>.<random>.tmp.mp4`` in the same directory, so the final rename stays on one filesystem)
    and renamed onto ``path`` only when :meth:`close` succeeds. If the ``with`` block raises, or
    :meth:`abort` is called, or closing fails, the temporary file is deleted and nothing is created at
    ``path`` (an existing file there is left untouched). Callers can therefore treat "``path`` exists"
    as "the video is complete".

    Odd sizes: yuv420p stores chroma at half resolution, so H.264 needs an even width and height. An odd
    ``width``/``height`` is padded by one pixel on the right/bottom by edge replication (the last
    column/row repeated); the file then has the even size and readers return it. Crop with
    ``frames[:, :height, :width]`` to get the original size back.

    Args:
        path: target ``.mp4`` file. Missing parent directories are created.
        fps: frame rate of the video stream (exact rationals such as ``Fraction(30000, 1001)`` are kept).
        width: frame width in pixels, as passed to :meth:`write`.
        height: frame height in pixels, as passed to :meth:`write`.
        audio: optional mono float32 waveform ``(S,)`` in [-1, 1] (NumPy or torch); the whole track is
            written even if it is longer or shorter than the video. Samples outside [-1, 1] are clipped.
        sample_rate: sample rate of ``audio`` in Hz; it must be one AAC supports (8000 ... 96000, e.g. 16000).
        crf: x264 constant rate factor, 0 (lossless luma) to 51; 18 is visually near-lossless.
        preset: x264 speed/compression trade-off.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        fps: float | int | Fraction = 25,
        width: int,
        height: int,
        audio: Any | None = None,
        sample_rate: int = 16000,
        crf: int = 18,
        preset: X264Preset = "medium",
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise VideoError(
                self.path, f"VideoWriter writes MP4 (H.264 + AAC); name the file *.mp4, not {self.path.suffix!r}"
            )
        self.fps = _as_rate(fps, name="fps")
        self.width = _positive_int(width, name="width")
        self.height = _positive_int(height, name="height")
        self.sample_rate = _positive_int(sample_rate, name="sample_rate")
        # Checked now, not when the encoder opens at close() after the whole video has been generated.
        aac_rates = av.Codec("aac", "w").audio_rates or ()
        if audio is not None and aac_rates and self.sample_rate not in aac_rates:
            raise ValueError(
                f"AAC cannot encode sample_rate={self.sample_rate} Hz; use one of {sorted(aac_rates)} "
                "(resample the waveform first, e.g. to 16000)"
            )
        if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an int in [0, 51], got {crf!r}")
        if preset not in _X264_PRESETS:
            raise ValueError(f"preset must be one of {_X264_PRESETS}, got {preset!r}")
        # Clip rather than let the AAC encoder wrap or distort out-of-range floats.
        self._audio = None if audio is None else np.clip(_as_mono_audio(audio), -1.0, 1.0)
        # Encoded (even) size; see the class docstring on odd sizes.
        self.encoded_width = self.width + self.width % 2
        self.encoded_height = self.height + self.height % 2

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _reserve_temp_path(self.path)
        except OSError as e:
            raise VideoError(self.path, f"cannot create a file in {self.path.parent}: {e}") from e
        self._tmp_path = tmp
        # Removes the temporary file if the writer is garbage-collected without close()/abort().
        self._finalizer = weakref.finalize(self, _remove_quietly, tmp)
        self._frames_written = 0
        self._closed = False
        try:
            self._container = av.open(tmp, mode="w", format="mp4")
            self._video_stream = self._container.add_stream(
                "libx264", rate=self.fps, options={"crf": str(int(crf)), "preset": preset}
            )
            self._video_stream.width = self.encoded_width
            self._video_stream.height = self.encoded_height
            self._video_stream.pix_fmt = "yuv420p"
            self._audio_stream = None
            if self._audio is not None:
                self._audio_stream = self._container.add_stream("aac", rate=self.sample_rate)
                self._audio_stream.layout = "mono"
        except (av.FFmpegError, OSError, ValueError) as e:
            self.abort()
            raise VideoError(self.path, f"cannot set up the H.264/AAC encoder: {e}") from e

    @property
    def frames_written(self) -> int:
        """Number of frames encoded so far."""
        return self._frames_written

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`abort` has run."""
        return self._closed

    def write(self, frames: Any) -> None:
        """Encode one frame ``(H, W, 3)`` or a batch ``(T, H, W, 3)`` of RGB uint8 frames (NumPy or torch)."""
        if self._closed:
            raise VideoError(self.path, "write() after close()/abort(); open a new VideoWriter")
        batch = _as_frame_batch(frames)  # (T, H, W, 3)
        if batch.shape[1:3] != (self.height, self.width):
            raise ValueError(
                f"frame size (H={batch.shape[1]}, W={batch.shape[2]}) does not match the writer's "
                f"(H={self.height}, W={self.width}) for {self.path}"
            )
        batch = _pad_to_even(batch)  # (T, H', W', 3), H' and W' even
        try:
            for frame in batch:
                av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                av_frame.pts = self._frames_written  # codec time base is 1/fps: pts counts frames
                self._container.mux(self._video_stream.encode(av_frame))
                self._frames_written += 1
        except av.FFmpegError as e:
            raise VideoError(self.path, f"H.264 encoding failed at frame {self._frames_written}: {e}") from e

    def _encode_audio(self) -> None:
        assert self._audio is not None and self._audio_stream is not None
        codec = self._audio_stream.codec_context
        frame = av.AudioFrame.from_ndarray(self._audio[None, :], format="flt", layout="mono")  # packed (1, S)
        frame.sample_rate = self.sample_rate
        frame.pts = 0
        frame.time_base = Fraction(1, self.sample_rate)
        # AAC takes fixed-size planar frames (1024 samples); the resampler re-chunks and converts the format.
        resampler = av.AudioResampler(
            format=codec.format.name if codec.format is not None else "fltp",
            layout="mono",
            rate=self.sample_rate,
            frame_size=codec.frame_size or 1024,
        )
        for chunk in resampler.resample(frame) + resampler.resample(None):
            self._container.mux(self._audio_stream.encode(chunk))
        self._container.mux(self._audio_stream.encode(None))  # flush the encoder

    def close(self) -> None:
        """Flush the encoders, mux the audio and move the finished file onto ``path``.

        Raises:
            VideoError: if no frame was written or encoding/muxing failed; nothing is left at ``path``
                or in the temporary location in that case.
        """
        if self._closed:
            return
        try:
            if self._frames_written == 0:
                raise VideoError(self.path, "no frames were written; an mp4 needs at least one frame")
            self._container.mux(self._video_stream.encode(None))  # flush delayed (B-)frames
            if self._audio is not None:
                self._encode_audio()
            self._container.close()
            os.replace(self._tmp_path, self.path)
        except VideoError:
            self.abort()
            raise
        except (av.FFmpegError, OSError, ValueError) as e:
            self.abort()
            raise VideoError(self.path, f"finishing the mp4 failed: {e}") from e
        self._closed = True
        self._finalizer.detach()

    def abort(self) -> None:
        """Discard everything written so far: close the encoder and delete the temporary file.

        A no-op after a successful :meth:`close` (the finished file is never deleted).
        """
        if self._closed:
            return
        self._closed = True
        container = getattr(self, "_container", None)
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - the file is being discarded; a failing trailer write is irrelevant
                pass
        _remove_quietly(self._tmp_path)
        self._finalizer.detach()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: PathLike,
    frames: Any,
    *,
    fps: float | int | Fraction = 25,
    audio: Any | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: X264Preset = "medium",
) -> Path:
    """Write a whole clip ``(T, H, W, 3)`` RGB uint8 (NumPy or torch) with optional mono audio to an mp4.

    Same guarantees as :class:`VideoWriter` (atomic, odd sizes padded). Returns the written path.
    """
    batch = _as_frame_batch(frames)  # (T, H, W, 3)
    if batch.shape[0] == 0:
        raise VideoError(path, "frames is empty (T=0); an mp4 needs at least one frame")
    with VideoWriter(
        path,
        fps=fps,
        width=batch.shape[2],
        height=batch.shape[1],
        audio=audio,
        sample_rate=sample_rate,
        crf=crf,
        preset=preset,
    ) as writer:
        writer.write(batch)
    return Path(path)


# --------------------------------------------------------------------------------------------------------------------
# Frame-rate conversion
# --------------------------------------------------------------------------------------------------------------------


def _select_nearest(
    timed_items: Iterable[tuple[Fraction, Fraction | None, _T]],
    *,
    dst_fps: Fraction,
) -> Iterator[_T]:
    """Resample a timestamped stream to a constant rate by nearest-timestamp selection (streaming).

    ``timed_items`` yields ``(timestamp_s, duration_s_or_None, item)`` in presentation order. Output
    frame ``k`` has time ``k / dst_fps`` (measured from the first input timestamp) and takes the input
    whose timestamp is nearest; on an exact tie the earlier input wins, so the result is deterministic.
    Outputs are produced while ``k / dst_fps`` lies before the end of the input, i.e. the last timestamp
    plus the last frame's duration (its own duration if known, else the last inter-frame interval).
    Inputs whose timestamp does not increase (duplicates) are dropped.

    Only the previous input is held, so long videos are never fully in memory.
    """
    step = 1 / dst_fps
    k = 0
    t0: Fraction | None = None
    prev_t: Fraction | None = None
    prev_item: _T | None = None
    last_duration: Fraction | None = None
    for t_abs, duration, item in timed_items:
        if t0 is None:
            t0 = t_abs
        t = t_abs - t0
        if prev_t is not None:
            if t <= prev_t:
                continue
            last_duration = t - prev_t
            while k * step <= t:  # every output time in (prev_t, t] is decided now
                tau = k * step
                yield prev_item if tau - prev_t <= t - tau else item  # type: ignore[misc]
                k += 1
        prev_t, prev_item = t, item
        if duration is not None and duration > 0:
            last_duration = duration  # the frame's own duration beats the last interval (VFR tail)
    if prev_t is None:
        return
    end = prev_t + (last_duration if last_duration is not None else step)
    while k * step < end:
        yield prev_item  # type: ignore[misc]
        k += 1


def resample_frame_indices(src_fps: float | Fraction, dst_fps: float | Fraction, num_src_frames: int) -> np.ndarray:
    """Source frame index for every output frame when converting a constant-rate clip to ``dst_fps``.

    Nearest-timestamp selection (source frame ``i`` at ``i / src_fps``, output ``k`` at ``k / dst_fps``,
    ties to the earlier frame); frames are dropped when slowing the rate and repeated when raising it.
    The output covers the source duration ``num_src_frames / src_fps``, so it has
    ``ceil(num_src_frames * dst_fps / src_fps)`` frames. This is the same rule that
    ``read_video(..., target_fps=...)`` applies to the real frame timestamps.

    Example: 30 -> 25 fps over 6 frames gives ``[0, 1, 2, 4, 5]``.

    Returns:
        int64 array ``(K,)`` of indices into the source frames.
    """
    src = _as_rate(src_fps, name="src_fps")
    dst = _as_rate(dst_fps, name="dst_fps")
    if isinstance(num_src_frames, bool) or not isinstance(num_src_frames, (int, np.integer)) or num_src_frames < 0:
        raise ValueError(f"num_src_frames must be a non-negative int, got {num_src_frames!r}")
    timed = ((Fraction(i) / src, 1 / src, i) for i in range(int(num_src_frames)))
    return np.fromiter(_select_nearest(timed, dst_fps=dst), dtype=np.int64)


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VideoData:
    """A decoded clip.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        fps: frame rate of ``frames`` (the stream's average rate, or ``target_fps`` when resampled).
        audio: ``(S,)`` float32 mono at ``sample_rate``, or None if not requested or the file has none.
        sample_rate: sample rate of ``audio`` in Hz.
    """

    frames: np.ndarray
    fps: float
    audio: np.ndarray | None
    sample_rate: int

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        """Video duration implied by the frame count and rate."""
        return self.num_frames / self.fps


@dataclass(frozen=True)
class VideoInfo:
    """Container-level facts about a video, obtained without decoding any frame.

    Because nothing is decoded, a file cut short after a front index (``+faststart`` mp4) still probes
    with its declared frame count; :func:`read_video` / :func:`iter_frames` detect that truncation.

    Attributes:
        path: the probed file.
        num_frames: number of video frames. Taken from the container header when it records one
            (mp4/mov do); otherwise the video packets are counted by demuxing (no decoding), which
            equals the decoded count for intact files. ``num_frames_source`` says which.
        num_frames_source: ``"container"`` or ``"packets"``.
        fps: average frame rate (frames / duration); for variable-rate video it is the mean rate.
        width: coded frame width in pixels.
        height: coded frame height in pixels.
        duration_s: video stream duration in seconds (falls back to the container duration, then to
            ``num_frames / fps``).
        has_audio: whether the file has an audio stream.
        audio_duration_s: duration of the first audio stream in seconds, None without audio.
        audio_sample_rate: native sample rate of that stream in Hz, None without audio.
    """

    path: Path
    num_frames: int
    num_frames_source: NumFramesSource
    fps: float
    width: int
    height: int
    duration_s: float
    has_audio: bool
    audio_duration_s: float | None
    audio_sample_rate: int | None


def _open_input(path: PathLike) -> av.container.InputContainer:
    """Open ``path`` for reading, turning every failure into a VideoError that names the file."""
    p = Path(path)
    if not p.exists():
        raise VideoError(p, "file does not exist")
    if not p.is_file():
        raise VideoError(p, "is not a regular file")
    if p.stat().st_size == 0:
        raise VideoError(p, "file is empty (0 bytes), probably left by an interrupted write; regenerate it")
    try:
        container = av.open(str(p), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(
            p, f"cannot open as a video container ({e}); the file is truncated, corrupt or not a video"
        ) from e
    if not container.streams.video:
        container.close()
        raise VideoError(p, "has no video stream (audio-only or not a video file)")
    return container


def _stream_rate(stream: Any) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    return None


def _stream_duration_s(stream: Any) -> float | None:
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _decode(
    container: av.container.InputContainer,
    path: Path,
    *,
    audio_chunks: list[np.ndarray] | None,
    audio_sample_rate: int,
) -> Iterator[tuple[Fraction, Fraction | None, np.ndarray]]:
    """Decode the first video stream, yielding ``(time_s, duration_s, frame (H, W, 3) uint8)``.

    If ``audio_chunks`` is a list and the file has audio, the first audio stream is decoded in the same
    demuxing pass and appended to it as float32 ``(C, n)`` chunks at ``audio_sample_rate``.
    Raises VideoError when decoding fails or yields fewer frames than the container declares (truncation).
    """
    video = container.streams.video[0]
    video.thread_type = "AUTO"  # frame-parallel decoding; output order is unchanged
    time_base = video.time_base or Fraction(1, 90_000)
    rate = _stream_rate(video)
    streams: list[Any] = [video]
    resampler = None
    if audio_chunks is not None and container.streams.audio:
        streams.append(container.streams.audio[0])
        # Keep the source layout here and average the channels afterwards: swresample's own stereo->mono
        # matrix sums (L+R)/sqrt(2), which is 3 dB louder than mono sources and can exceed 1.0.
        resampler = av.AudioResampler(format="fltp", rate=audio_sample_rate)
    num_decoded = 0
    try:
        for packet in container.demux(*streams):
            for frame in packet.decode():
                if packet.stream.type == "audio":
                    assert resampler is not None and audio_chunks is not None
                    audio_chunks.extend(chunk.to_ndarray() for chunk in resampler.resample(frame))
                    continue
                if frame.pts is not None:
                    t = Fraction(frame.pts) * time_base
                elif rate is not None:  # raw streams without timestamps: assume constant rate
                    t = Fraction(num_decoded) / rate
                else:  # neither timestamps nor a rate (never seen in mp4): assume the project's 25 fps
                    t = Fraction(num_decoded, 25)
                duration = getattr(frame, "duration", None)
                dur = Fraction(duration) * time_base if duration else None
                image = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                num_decoded += 1
                yield t, dur, image
        if resampler is not None:
            audio_chunks.extend(chunk.to_ndarray() for chunk in resampler.resample(None))  # type: ignore[union-attr]
    except av.FFmpegError as e:
        raise VideoError(path, f"decoding failed after {num_decoded} video frames ({e}); the file is corrupt") from e
    declared = video.frames or 0
    if num_decoded == 0:
        raise VideoError(path, "contains no decodable video frame")
    if declared > 0 and num_decoded < declared:
        raise VideoError(
            path, f"decoded only {num_decoded} of the {declared} frames the container declares; the file is truncated"
        )


def _assemble_audio(chunks: list[np.ndarray], *, stream: Any, sample_rate: int) -> np.ndarray:
    """Join decoded ``(C, n)`` chunks into mono ``(S,)`` float32, trimmed to the declared stream length."""
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    audio = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)  # (C, S) -> (S,)
    # AAC pads its last frame to 1024 samples; the container's duration is the true length.
    declared_s = _stream_duration_s(stream)
    if declared_s is not None:
        audio = audio[: round(declared_s * sample_rate)]
    return np.ascontiguousarray(audio, dtype=np.float32)


def read_video(
    path: PathLike,
    *,
    with_audio: bool = True,
    audio_sample_rate: int = 16000,
    target_fps: float | Fraction | None = None,
) -> VideoData:
    """Decode a whole video (frames and, optionally, audio) in one demuxing pass.

    Args:
        path: video file (any container/codec FFmpeg reads; mp4 in this project).
        with_audio: decode the first audio stream; ``audio`` is None when False or when the file has none.
        audio_sample_rate: audio is downmixed to mono (channel mean) and resampled to this rate by
            PyAV's ``AudioResampler``.
        target_fps: if given, convert to this constant rate by nearest-timestamp selection using each
            frame's presentation time (``pts * time_base``), so variable-frame-rate input (dropped or
            duplicated frames) lands on the right output frames. Only selected frames are kept in memory.

    Audio is returned from its first decoded sample; a start offset between the audio and video streams
    (rare, tens of ms) is not compensated.

    Raises:
        VideoError: the file is missing, empty, truncated, corrupt, or has no video stream.
    """
    audio_sample_rate = _positive_int(audio_sample_rate, name="audio_sample_rate")
    dst = None if target_fps is None else _as_rate(target_fps, name="target_fps")
    p = Path(path)
    audio_chunks: list[np.ndarray] | None = [] if with_audio else None
    with _open_input(p) as container:
        rate = _stream_rate(container.streams.video[0])
        decoded = _decode(container, p, audio_chunks=audio_chunks, audio_sample_rate=audio_sample_rate)
        if dst is None:
            frames = [image for _, _, image in decoded]
            if rate is None:
                raise VideoError(p, "the video stream has no frame rate; pass target_fps to resample by timestamps")
            fps = float(rate)
        else:
            frames = list(_select_nearest(decoded, dst_fps=dst))
            fps = float(dst)
        audio = None
        if audio_chunks is not None and container.streams.audio:
            audio = _assemble_audio(audio_chunks, stream=container.streams.audio[0], sample_rate=audio_sample_rate)
    return VideoData(frames=np.stack(frames), fps=fps, audio=audio, sample_rate=audio_sample_rate)


def iter_frames(path: PathLike, *, target_fps: float | Fraction | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time as ``(H, W, 3)`` uint8 RGB, without holding the clip.

    ``target_fps`` resamples by frame timestamps exactly as in :func:`read_video`. The file is opened
    when iteration starts and closed when it ends or the generator is closed. Errors are VideoError,
    raised when they are met (a truncated file fails at open or at its end).
    """
    dst = None if target_fps is None else _as_rate(target_fps, name="target_fps")
    p = Path(path)
    with _open_input(p) as container:
        decoded = _decode(container, p, audio_chunks=None, audio_sample_rate=16000)
        if dst is None:
            for _, _, image in decoded:
                yield image
        else:
            yield from _select_nearest(decoded, dst_fps=dst)


def probe_video(path: PathLike) -> VideoInfo:
    """Read stream metadata (frame count, rate, size, durations, audio presence) without decoding frames.

    Raises:
        VideoError: the file is missing, empty, unreadable, or has no video stream.
    """
    p = Path(path)
    with _open_input(p) as container:
        video = container.streams.video[0]
        rate = _stream_rate(video)
        num_frames = int(video.frames or 0)
        source: NumFramesSource = "container"
        if num_frames <= 0:
            source = "packets"
            try:
                num_frames = sum(1 for packet in container.demux(video) if packet.size > 0)
            except av.FFmpegError as e:
                raise VideoError(p, f"demuxing failed while counting frames ({e}); the file is corrupt") from e
        if num_frames <= 0:
            raise VideoError(p, "the video stream contains no frames")
        if rate is None:
            raise VideoError(p, "the video stream has no frame rate")
        duration_s = _stream_duration_s(video)
        if duration_s is None and container.duration:
            duration_s = container.duration / av.time_base
        if duration_s is None:
            duration_s = num_frames / float(rate)
        audio_duration_s = audio_sample_rate = None
        if container.streams.audio:
            audio = container.streams.audio[0]
            audio_sample_rate = audio.codec_context.sample_rate or None
            audio_duration_s = _stream_duration_s(audio)
            if audio_duration_s is None and container.duration:
                audio_duration_s = container.duration / av.time_base
        return VideoInfo(
            path=p,
            num_frames=num_frames,
            num_frames_source=source,
            fps=float(rate),
            width=int(video.codec_context.width),
            height=int(video.codec_context.height),
            duration_s=float(duration_s),
            has_audio=bool(container.streams.audio),
            audio_duration_s=audio_duration_s,
            audio_sample_rate=audio_sample_rate,
        )
