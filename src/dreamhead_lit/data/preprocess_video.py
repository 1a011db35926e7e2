"""Preprocessing of one input video (run in a worker process): audio, the face track, crops and landmarks of every
frame with a face, and its clips written atomically; bad input becomes a skip reason, never an exception. The steps
are described in ``preprocess.py``'s docstring (2-6)."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .clip import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, ClipData, ClipError, ClipRecord, nonfinite_problem, validate_clip
from .detectors import Dlib68Landmarker, FaceBox, FaceDetector, MediaPipeDense
from .resume import source_stamp
from .sources import SourceVideo
from .tracking import FaceCropper, FaceTracker, TrackPiece, track_pieces

if TYPE_CHECKING:  # the config class lives with the CLI, which imports this module
    from .preprocess import PreprocessConfig

MEMORY_FRAMES_MB = 256  # a clip's crops above this size are buffered in a memory-mapped file


def read_audio_track(path: Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """The first audio stream of a media file as mono float32 at ``sample_rate``; None when it has none.

    Same conventions as ``video.read_video``: channels averaged, PyAV's resampler, trimmed to the stream's declared
    duration (AAC pads its last frame), returned from the first decoded sample. Raises VideoError when the file
    cannot be read.
    """
    import av

    from ..video import VideoError

    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise VideoError(p, "file is missing or empty")
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            chunks = []
            for frame in container.decode(stream):
                chunks.extend(c.to_ndarray() for c in resampler.resample(frame))
            chunks.extend(c.to_ndarray() for c in resampler.resample(None))
            declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    except (av.FFmpegError, OSError) as err:
        raise VideoError(p, f"cannot decode the audio track ({err}); the file is truncated or corrupt") from err
    if not chunks:
        return np.zeros(0, np.float32)
    audio = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)  # (C, S) -> (S,)
    if declared is not None:
        audio = audio[: round(declared * sample_rate)]
    return np.ascontiguousarray(audio, dtype=np.float32)


@dataclass
class SourceResult:
    """What happened to one input (sent back from the worker)."""

    rel: str
    clips: list[tuple[str, int]] = field(default_factory=list)  # (clip id, frames) written
    skipped: str | None = None  # why no clip came out
    notes: list[str] = field(default_factory=list)  # handled problems (gaps, trimmed audio, dropped pieces)
    frames_decoded: int = 0
    times: dict[str, float] = field(default_factory=dict)  # seconds per stage


class _Models:
    """The detectors of one process, built once."""

    def __init__(self, cfg: PreprocessConfig):
        self.detector = cfg.track_settings().detector()
        self.landmarker = Dlib68Landmarker()


_MODELS: dict[tuple, _Models] = {}


def _models(cfg: PreprocessConfig) -> _Models:
    key = (cfg.upsample, cfg.detect_max_side, cfg.min_face)
    if key not in _MODELS:
        _MODELS[key] = _Models(cfg)
    return _MODELS[key]


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.times[stage] = self.times.get(stage, 0.0) + seconds


def _timed_frames(path: Path, timer: _Timer, limit: int | None):
    """iter_frames at 25 fps, its time counted as "decode"; stops after ``limit`` frames."""
    from ..video import iter_frames

    it = iter_frames(path, target_fps=FPS)
    n = 0
    try:
        while limit is None or n < limit:
            start = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                break
            finally:
                timer.add("decode", time.perf_counter() - start)
            n += 1
            yield frame
    finally:
        it.close()


def _fill_missing(points: list[np.ndarray | None], num_points: int) -> tuple[np.ndarray, int]:
    """(T, N, 2) from per-frame results with None gaps, linearly interpolated (held at the ends)."""
    t = len(points)
    ok = np.array([p is not None for p in points])
    out = np.zeros((t, num_points, 2), np.float32)
    if not ok.any():
        return out, t
    have = np.stack([p for p in points if p is not None])  # (K, N, 2)
    idx = np.flatnonzero(ok)
    flat = have.reshape(len(idx), -1)
    for j in range(flat.shape[1]):
        out.reshape(t, -1)[:, j] = np.interp(np.arange(t), idx, flat[:, j])
    return out, int((~ok).sum())


def _frame_buffer(shape: tuple[int, ...], workdir: Path, name: str) -> np.ndarray:
    """Room for a clip's crops: in memory up to MEMORY_FRAMES_MB, else a memory-mapped file in ``workdir`` (a 5-minute
    HDTF clip at 256 px is 1.5 GB)."""
    if int(np.prod(shape)) <= MEMORY_FRAMES_MB * 2**20:
        return np.empty(shape, np.uint8)
    workdir.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(workdir / f"{name}.{os.getpid()}.npy", mode="w+", dtype=np.uint8, shape=shape)


def process_source(item: SourceVideo, cfg: PreprocessConfig, split: str, *, dst: Path) -> SourceResult:
    """Turn one input video into zero or more clips written under ``dst``. Never raises for bad input: the
    reason is in ``SourceResult.skipped`` / ``notes``."""
    from ..video import VideoError

    result = SourceResult(item.rel)
    timer = _Timer()
    result.times = timer.times
    try:
        _process(item, cfg, split, dst, result, timer)
    except (VideoError, ClipError) as err:  # bad input, or a clip that would not validate
        result.skipped = f"unreadable: {err}"
    except Exception as err:  # noqa: BLE001 - one odd input must not stop a long run; the reason is reported
        result.skipped = f"failed: {type(err).__name__}: {err}"
    if result.skipped is not None:
        for cid, _ in result.clips:  # a half-done input leaves nothing behind; the next run redoes it whole
            shutil.rmtree(dst / "clips" / cid, ignore_errors=True)
        result.clips.clear()
    return result


@dataclass
class _Detections:
    """The detection pass over one video."""

    boxes: dict[int, FaceBox]  # frame -> the followed face, at the frames where detection ran and found it
    num_frames: int
    frame_size: tuple[int, int]  # (H, W) of the source
    rejected_small: int  # faces found but smaller than min_face
    cache: list[np.ndarray] | None  # the decoded frames when they fit in frame_cache_mb


@dataclass
class _Piece(TrackPiece):
    """A piece of the face track becoming one clip, with its crops and landmarks once the crop pass has run."""

    frames: np.ndarray | None = None  # (T, size, size, 3) uint8 crops
    landmarks68: np.ndarray | None = None  # (T, 68, 2) crop pixels
    dense: list[np.ndarray | None] = field(default_factory=list)  # MediaPipe per frame, None where it found no mesh


def _read_audio(item: SourceVideo, timer: _Timer) -> np.ndarray | None:
    """The input's audio: the video's own track, else the separate file the layout names (MEAD's m4a)."""
    start = time.perf_counter()
    audio = read_audio_track(item.path)
    if (audio is None or len(audio) == 0) and item.audio_path is not None and item.audio_path.is_file():
        audio = read_audio_track(item.audio_path)
    timer.add("decode", time.perf_counter() - start)
    return None if audio is None or len(audio) == 0 else audio


def _detect_pass(item: SourceVideo, cfg: PreprocessConfig, detector: FaceDetector, timer: _Timer) -> _Detections:
    """Decode the video at 25 fps and detect the face every ``detect_every`` frames."""
    from ..video import VideoError

    limit = None if cfg.max_seconds is None else int(round(cfg.max_seconds * FPS))
    tracker = FaceTracker(cfg.track_settings(), detector=detector, roi=item.roi)
    num_frames = 0
    frame_size = (0, 0)
    cache: list[np.ndarray] | None = []
    for t, frame in enumerate(_timed_frames(item.path, timer, limit)):
        num_frames += 1
        frame_size = frame.shape[:2]
        if cache is not None:
            cache.append(frame)
            if len(cache) * frame.nbytes > cfg.frame_cache_mb * 2**20:
                cache = None  # too long to keep: the crop pass decodes again
        start = time.perf_counter()
        tracker.update(t, frame)
        timer.add("detect", time.perf_counter() - start)
    if num_frames == 0:
        raise VideoError(item.path, "contains no video frame")
    return _Detections(tracker.boxes, num_frames, (int(frame_size[0]), int(frame_size[1])), tracker.rejected_small,
                       cache)


def _crop_pass(item: SourceVideo, cfg: PreprocessConfig, models: _Models, pieces: list[_Piece],
               cache: list[np.ndarray] | None, dst: Path, timer: _Timer) -> None:
    """Crops and landmarks of every frame inside ``pieces`` (filled in place)."""
    from ..video import VideoError

    size = cfg.size
    cropper = FaceCropper(size, cfg.track_settings(), landmarker=models.landmarker)
    for k, p in enumerate(pieces):
        p.frames = _frame_buffer((p.num_frames, size, size, 3), dst / ".work", f"{item.clip_id}_{k}")
        p.landmarks68 = np.zeros((p.num_frames, 68, 2), np.float32)
    end = pieces[-1].stop
    source = cache[:end] if cache is not None else _timed_frames(item.path, timer, end)
    mesh: MediaPipeDense | None = None
    k, seen = 0, 0
    try:
        for t, frame in enumerate(source):
            seen = t + 1
            while t >= pieces[k].stop:
                k += 1
            p = pieces[k]
            if t < p.start:
                continue
            i = t - p.start
            if i == 0 and cfg.landmarks == "mediapipe":
                if mesh is not None:
                    mesh.close()
                mesh = MediaPipeDense(static_image_mode=False, refine_landmarks=True)  # tracking restarts per piece
            start = time.perf_counter()
            p.frames[i], big = cropper.cut(frame, p.crop_boxes[i])  # the landmarkers see the larger working crop
            timer.add("crop", time.perf_counter() - start)
            start = time.perf_counter()
            p.landmarks68[i] = cropper.landmarks68(big, p.face_boxes[i], p.crop_boxes[i])
            if mesh is not None:
                pts = mesh(big)
                p.dense.append(None if pts is None else pts * (size / cropper.work))
            timer.add("landmarks", time.perf_counter() - start)
    finally:
        if mesh is not None:
            mesh.close()
    if seen < end:
        raise VideoError(item.path, f"the second decoding pass gave {seen} frames, the first at least {end}")


def _process(item: SourceVideo, cfg: PreprocessConfig, split: str, dst: Path, result: SourceResult,
             timer: _Timer) -> None:
    models = _models(cfg)
    stamp = source_stamp(item.path, item.audio_path)  # before decoding: a file replaced meanwhile is redone next run
    # audio first: it is cheap, and a video without sound is useless for audio-driven training
    audio = _read_audio(item, timer)
    if audio is None:
        where = f" and no {item.audio_path.name} beside it" if item.audio_path is not None else ""
        result.skipped = f"no audio track{where}"
        return
    problem = nonfinite_problem(audio, "the audio track", per_frame=SAMPLES_PER_FRAME)
    if problem:  # a 16-bit wav would hide NaN as silence or clipping
        result.skipped = f"non-finite audio in the source: {problem}"
        return

    det = _detect_pass(item, cfg, models.detector, timer)
    result.frames_decoded = num_frames = det.num_frames
    boxes = det.boxes
    # audio and video lengths: frames without audio are of no use, extra audio is cut
    audio_frames = int(round(len(audio) / SAMPLES_PER_FRAME))
    if audio_frames < num_frames:
        if audio_frames < 1:
            result.skipped = "audio track is shorter than one video frame"
            return
        result.notes.append(f"audio ends {(num_frames - audio_frames) / FPS:.2f} s before the video: video trimmed")
        num_frames = audio_frames
        boxes = {t: b for t, b in boxes.items() if t < num_frames}

    kept, dropped = track_pieces(boxes, num_frames, cfg.track_settings(),
                                 min_frames=int(np.ceil(cfg.min_seconds * FPS - 1e-6)))
    if not kept:
        if not boxes:
            small = f" ({det.rejected_small} smaller face(s) rejected)" if det.rejected_small else ""
            result.skipped = f"no face found (dlib HOG, faces of at least {cfg.min_face:g} px){small}"
        else:
            longest = max(b - a for a, b in dropped) / FPS
            result.skipped = (f"face lost too often: the longest stretch with a face is {longest:.2f} s, "
                              f"shorter than --min-seconds {cfg.min_seconds:g}")
        return
    covered = sum(p.num_frames for p in kept)
    if covered < num_frames:
        result.notes.append(f"face missing or lost in {(num_frames - covered) / FPS:.2f} s of {num_frames / FPS:.2f} s: "
                            f"kept {len(kept)} piece(s) of >= {cfg.min_seconds:g} s, dropped {len(dropped)}")

    pieces = [_Piece(p.start, p.stop, p.face_boxes, p.crop_boxes) for p in kept]
    _crop_pass(item, cfg, models, pieces, det.cache, dst, timer)
    det.cache = None

    final: list[tuple[_Piece, np.ndarray]] = []  # (piece, dense landmarks)
    for p in pieces:
        if cfg.landmarks != "mediapipe":
            final.append((p, p.landmarks68))
            continue
        points, missing = _fill_missing(p.dense, 478)
        where = f"frames {p.start}-{p.stop - 1}"
        if missing > p.num_frames / 2:
            result.notes.append(f"{where}: MediaPipe found no face mesh in {missing} of {p.num_frames} frames: dropped")
            continue
        if missing:
            result.notes.append(f"{where}: face mesh interpolated over {missing} frame(s)")
        final.append((p, points))
    if not final:
        result.skipped = "MediaPipe found no face mesh in the pieces with a face"
        return
    for p, points in final:  # checked before any piece is written: an input gives all its clips or none
        problem = nonfinite_problem(points, "dense landmarks") or nonfinite_problem(p.landmarks68, "landmarks68")
        if problem:
            result.skipped = f"non-finite landmarks from the detector: {problem} in frames {p.start}-{p.stop - 1}"
            return
    _write_pieces(item, cfg, final, audio, num_frames, det, stamp, split, dst, result, timer)


def _write_pieces(item: SourceVideo, cfg: PreprocessConfig, final: list[tuple[_Piece, np.ndarray]], audio: np.ndarray,
                  num_frames: int, det: _Detections, stamp: dict | None, split: str, dst: Path, result: SourceResult,
                  timer: _Timer) -> None:
    """Write the clips of one input (``<id>``, or ``<id>_s<k>`` when it was split), recording what they came from."""
    whole = len(final) == 1 and (final[0][0].start, final[0][0].stop) == (0, num_frames)
    for k, (p, points) in enumerate(final):
        cid = item.clip_id if whole else f"{item.clip_id}_s{k}"
        clip_audio = audio[p.start * SAMPLES_PER_FRAME: p.stop * SAMPLES_PER_FRAME]
        clip_audio = np.pad(clip_audio, (0, p.num_frames * SAMPLES_PER_FRAME - len(clip_audio)))
        record = ClipRecord(id=cid, identity=item.identity, split=split, num_frames=p.num_frames, fps=FPS,
                            emotion=item.emotion, intensity=item.intensity, source=cfg.layout)
        clip = ClipData(
            record=record,
            frames=p.frames,
            landmarks=points,
            landmarks68=p.landmarks68,
            audio=clip_audio,
            crop_boxes=p.crop_boxes,
            detector="dlib-hog+dlib68" + ("+mediapipe478" if cfg.landmarks == "mediapipe" else ""),
            extra_meta={
                "source_path": item.rel,
                "source_size": list(det.frame_size),
                # what the input was when read: a rerun redoes it when the file has changed since
                "source_stamp": stamp,
                # the k-th of `count` clips of this input, frames [start, stop) of its 25-fps timeline; a rerun
                # counts the input as done only when all `count` are there
                "segment": {"index": k, "count": len(final), "start_frame": p.start, "stop_frame": p.stop},
                "face_boxes": np.asarray(p.face_boxes).round(2).tolist(),
            },
        )
        start = time.perf_counter()
        write_clip_checked(dst, clip, frames_format=cfg.resolved_frames_format(), jpeg_quality=cfg.jpeg_quality)
        timer.add("write", time.perf_counter() - start)
        result.clips.append((cid, p.num_frames))
        if isinstance(p.frames, np.memmap):  # free the disk-backed crops now, not at the end of the run
            path = Path(p.frames.filename)
            p.frames = clip = None  # type: ignore[assignment]
            path.unlink(missing_ok=True)


def write_clip_checked(dst: Path, clip: ClipData, *, frames_format: str, jpeg_quality: int) -> None:
    """``clip.write_clip`` followed by ``validate_clip``, so a clip that would not load is reported now."""
    from .clip import write_clip

    write_clip(dst, clip, frames_format=frames_format, jpeg_quality=jpeg_quality)  # type: ignore[arg-type]
    validate_clip(dst, clip.record, num_landmarks=clip.landmarks.shape[1])


def process_job(job: tuple) -> SourceResult:
    """A worker's entry point: one ``(input, config, split, dst)`` job, see :func:`process_source`."""
    item, cfg, split, dst = job
    return process_source(item, cfg, split, dst=dst)
