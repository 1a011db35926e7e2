"""Raw talking-face video -> processed dataset (the format of ``clip.py``): CLI, parallel, resumable.

    python -m dreamhead_lit.data.preprocess --src RAW_DIR --dst OUT_DIR --layout hdtf|mead|plain \\
        [--size 256] [--workers N] [--landmarks dlib68|mediapipe] [--max-seconds S] [--splits FILE]

Per input video:

1. **Discover** by layout. ``hdtf``: ``<name>_<idx>.mp4`` anywhere under RAW_DIR, identity = the name before the last
   ``_<idx>`` (``WDA_KatieHill_000`` -> ``WDA_KatieHill``); HDTF crop files (``*_crop_wh.txt``, lines
   ``<name>_<idx>.mp4 x width y height`` in the video's pixels) are optional and only restrict face detection to that
   window. ``mead``: ``<actor>/video/front/<emotion>/level_<k>/<nnn>.mp4``, identity = actor, emotion and intensity
   from the folders, audio from the mp4's own track, else ``<actor>/audio/<emotion>/level_<k>/<nnn>.m4a``.
   ``plain``: every video under RAW_DIR (mp4, mov, mkv, avi, webm, m4v), identity = file stem, or the parent folder
   with ``--identity-from parent``. Clip id: the file stem (MEAD: ``<actor>_<emotion>_level<k>_<nnn>``; files in
   sub-folders of a plain layout: the relative path with ``/`` -> ``__``).
2. **Decode** with PyAV (``video.iter_frames``), resampled to 25 fps by frame timestamps (so variable frame rate is
   handled), audio to 16 kHz mono (channel mean). Audio longer than the video is cut; shorter trims the video.
3. **Detect** the face (dlib HOG, ``detectors.FaceDetector``) every ``--detect-every`` frames (default 5 = 0.2 s;
   boxes are linearly interpolated in between, where the head barely moves), keep the best detection (the highest
   score among those overlapping the previous face, else the highest score), reject faces smaller than
   ``--min-face`` px (80). **Gaps**: where two successive detections are more than ``--max-gap`` s apart (0.5 s,
   i.e. two missed detections in a row), the clip is split; the pieces of at least ``--min-seconds`` (2 s) become
   separate clips ``<id>_s<k>`` (k = 0, 1, ... in time order among the kept pieces), the rest is dropped; shorter
   gaps are interpolated over. A video with no usable piece is skipped.
4. **Crop**: the box track is cleaned and smoothed (``detectors.smooth_boxes``: median over 5 detections, Gaussian
   of 3 frames on the centre and 8 on the size), made square (``square_crop_box``: 1.6x the face box, centre 0.05
   box down) and cut out at ``--size`` (``crop_and_resize``, edge padding outside the image). The crop box of every
   frame (source pixels) goes into meta.json.
5. **Landmarks** on every frame of a 512 px working crop (the same box), scaled to ``--size``: dlib's 68 always
   (``landmarks68.npy``); the dense set is MediaPipe FaceMesh (478 points, ``--landmarks mediapipe``, needs
   ``make install-dense``; frames where the mesh is lost are interpolated, a piece losing it in more than half its
   frames is dropped) or the same 68 (``--landmarks dlib68``).
6. **Write** each clip atomically (``clip.write_clip``; jpg frames from 128 px up, npy below, or
   ``--frames-format``), then rebuild ``index.jsonl`` from the clips on disk, and write ``dataset.json`` and
   ``skipped.jsonl`` (one line per input that gave no clip: path, reason).

Splits are identity-disjoint and never change once written (``splits.py``): ``--splits FILE`` (JSON
``{identity: split}`` or lines ``identity split``) first; MEAD's customary held-out actors M003, M030, W024 are "test"
when present; an identity with clips in the dataset keeps its recorded split; a new identity's split comes from a
seeded hash of its name alone (about 80/10/10 train/val/test), so preprocessing a second ``--src`` into a dataset
adds to it without moving any clip between splits (the summary says what was added). At least one val identity from
two identities up and one test identity from three up (5 identities: 3/1/1), taken from new identities only. These
names match ``TalkingHeadDataModule``'s defaults (``test_seen`` simply stays empty). ``--seed`` applies to new
identities; ``--splits`` is the way to move an identity that has clips.

Resuming (``resume.py``): a second run with the same settings keeps every clip that passes ``validate_clip`` (NaN or
a truncated array counts as broken) and whose source file is unchanged (meta.json's ``source_stamp``: size, mtime,
hash of the first and last MiB); it redoes inputs whose clips are missing, broken or stale (an interrupted run
leaves only whole clips: ``write_clip`` renames a finished folder into place), and does not retry inputs recorded in
``skipped.jsonl`` unless they changed or ``--retry-skipped``. The index is rebuilt from the clips on disk at the end
of every run, also after Ctrl-C. Different output settings on an existing OUT_DIR are refused (``--overwrite`` starts
over). A run holds ``OUT_DIR/.preprocess.lock`` (flock) throughout: a second run on the same OUT_DIR stops at once
(exit 2) naming the first.

Parallelism and memory: ``--workers N`` runs N inputs at once in processes started with "spawn" (a worker that
dies on an input is replaced and that input skipped with the reason). A worker holds one input: the decoded frames
between the two passes while they fit in 512 MB (else the video is decoded twice), and the crops in memory up to
256 MB per clip (else in a memory-mapped file under OUT_DIR/.work).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from .clip import (
    FPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    ClipData,
    ClipError,
    ClipRecord,
    atomic_write_text,
    nonfinite_problem,
    read_index,
    validate_clip,
    write_index,
)
from .detectors import (
    Dlib68Landmarker,
    FaceBox,
    FaceDetector,
    MediaPipeDense,
    PadMode,
    crop_and_resize,
    mediapipe_available,
    mediapipe_topology,
    smooth_boxes,
    square_crop_box,
)
from .landmarks import LandmarkTopology, canonical_template68, topology_68
from .resume import (  # noqa: F401 - DiskClip and scan_clips are part of this module's interface
    DestinationBusy,
    DiskClip,
    destination_lock,
    plan_resume,
    read_skipped,
    scan_clips,
    source_stamp,
)
from .splits import SPLIT_SEED, assign_splits, read_split_file, recorded_splits  # noqa: F401 - re-exported

Layout = Literal["hdtf", "mead", "plain"]
LandmarkChoice = Literal["dlib68", "mediapipe"]
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
MEAD_TEST_ACTORS = ("M003", "M030", "W024")
MEMORY_FRAMES_MB = 256  # a clip's crops above this size are buffered in a memory-mapped file
# Settings that change what is written: dataset.json records them and a run with other values on the same dst is
# refused. The split settings are not among them: the index (rebuilt every run) is where splits live.
OUTPUT_SETTINGS = ("layout", "size", "landmarks", "frames_format", "identity_from", "max_seconds", "detect_every",
                   "detect_max_side", "upsample", "min_face", "crop_scale", "crop_shift", "pad", "smooth_median",
                   "smooth_sigma_centre", "smooth_sigma_size", "max_gap", "min_seconds", "landmark_size",
                   "jpeg_quality")


@dataclass
class PreprocessConfig:
    """Settings of one preprocessing run (the CLI flags)."""

    src: str  # raw videos
    dst: str  # processed dataset folder
    layout: Layout = "plain"
    size: int = 256  # output crop side in pixels
    workers: int = 1  # parallel processes (one input video each)
    landmarks: LandmarkChoice = "dlib68"  # dense set: the 68 themselves, or MediaPipe FaceMesh (478)
    frames_format: str | None = None  # "jpg" / "npy"; None: jpg from 128 px up, npy below
    identity_from: Literal["name", "parent"] = "name"  # plain layout: file stem or parent folder
    splits: str | None = None  # split file: JSON {identity: split} or lines "identity split"
    seed: int = SPLIT_SEED  # seeded identity split
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_seconds: float | None = None  # only the first seconds of every video (quick runs, tests)
    detect_every: int = 5  # detection every k frames (0.2 s at 25 fps), boxes interpolated in between
    detect_max_side: int = 640  # frames are downscaled to this longer side for detection
    upsample: int = 0  # dlib upsampling for detection (finds smaller faces, 4x cost per step)
    min_face: float = 80.0  # smallest face box side kept, source pixels
    crop_scale: float = 1.6  # crop side / face box side
    crop_shift: float = 0.05  # crop centre below the face box centre, in face box sides
    pad: PadMode = "edge"  # filling of crop parts outside the frame
    smooth_median: int = 5  # detections in the running median of the box track
    smooth_sigma_centre: float = 3.0  # frames, Gaussian on the box centre
    smooth_sigma_size: float = 8.0  # frames, Gaussian on the box size
    max_gap: float = 0.5  # seconds without a detection that split a clip
    min_seconds: float = 2.0  # shortest clip kept
    landmark_size: int = 512  # working crop side for the landmarkers (dlib reports whole pixels)
    jpeg_quality: int = 95
    frame_cache_mb: int = 512  # decoded frames kept from the detection pass for the crop pass (else decoded twice)
    name: str | None = None  # dataset name in dataset.json (default: the layout, or the dst folder for plain)
    overwrite: bool = False  # delete an existing dataset at dst first
    retry_skipped: bool = False  # retry inputs that an earlier run skipped

    def resolved_frames_format(self) -> str:
        fmt = self.frames_format or ("jpg" if self.size >= 128 else "npy")
        if fmt not in ("jpg", "npy"):
            raise ValueError(f"--frames-format must be jpg or npy, got {fmt!r}")
        return fmt

    def output_settings(self) -> dict:
        out = {k: getattr(self, k) for k in OUTPUT_SETTINGS}
        out["frames_format"] = self.resolved_frames_format()
        return out

    def check(self) -> None:
        if self.layout not in ("hdtf", "mead", "plain"):
            raise ValueError(f"--layout must be hdtf, mead or plain, got {self.layout!r}")
        if self.landmarks not in ("dlib68", "mediapipe"):
            raise ValueError(f"--landmarks must be dlib68 or mediapipe, got {self.landmarks!r}")
        if self.identity_from not in ("name", "parent"):
            raise ValueError(f"--identity-from must be name or parent, got {self.identity_from!r}")
        if self.size < 16 or self.detect_every < 1 or self.workers < 1:
            raise ValueError(f"need --size >= 16, --detect-every >= 1, --workers >= 1 (got {self.size}, "
                             f"{self.detect_every}, {self.workers})")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"--max-seconds must be positive, got {self.max_seconds}")
        self.resolved_frames_format()


# ---------------------------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SourceVideo:
    """One input video and what the layout says about it."""

    path: Path
    rel: str  # path relative to src (posix), the key of skipped.jsonl and meta.json's source_path
    clip_id: str
    identity: str
    emotion: str = "neutral"
    intensity: int = 0
    audio_path: Path | None = None  # audio file to use when the video has no audio track (MEAD)
    roi: tuple[float, float, float, float] | None = None  # detection window (HDTF crop file)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "clip"


def hdtf_identity(stem: str) -> str:
    """HDTF's speaker: the name before the last ``_<digits>`` (``WDA_KatieHill_000`` -> ``WDA_KatieHill``)."""
    m = re.match(r"^(.+)_\d+$", stem)
    return m.group(1) if m else stem


def read_hdtf_crops(src: Path) -> dict[str, tuple[float, float, float, float]]:
    """HDTF ``*_crop_wh.txt`` files under src: ``{video file name: (x0, y0, x1, y1)}``.

    HDTF's format is ``<name>_<idx>.mp4 x width y height`` (ffmpeg ``crop=width:height:x:y``)."""
    crops = {}
    for path in sorted(src.rglob("*_crop_wh.txt")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            try:
                x, w, y, h = (float(v) for v in parts[1:5])
            except ValueError as err:
                raise ValueError(f"{path}:{n}: expected `<name>.mp4 x width y height`, got {line!r}") from err
            crops[parts[0]] = (x, y, x + w, y + h)
    return crops


def discover(src: Path, layout: Layout, *, identity_from: str = "name") -> list[SourceVideo]:
    """The input videos of ``src`` for ``layout``, sorted by clip id. Raises ValueError on clashing clip ids."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src} is not a folder")
    items: list[SourceVideo] = []
    if layout == "mead":
        for path in sorted(src.rglob("*.mp4")):
            parts = path.relative_to(src).parts
            # <actor>/video/front/<emotion>/level_<k>/<nnn>.mp4, src may be the MEAD root or one actor's folder
            if len(parts) < 5 or parts[-5:-3] != ("video", "front") or not parts[-2].startswith("level_"):
                continue
            actor_dir = path.parents[4]
            actor = actor_dir.name
            emotion, level = parts[-3], parts[-2]
            intensity = int(level.split("_", 1)[1]) if level.split("_", 1)[1].isdigit() else 0
            audio = actor_dir / "audio" / emotion / level / f"{path.stem}.m4a"
            items.append(SourceVideo(path, path.relative_to(src).as_posix(),
                                     _safe_id(f"{actor}_{emotion}_level{intensity}_{path.stem}"), actor,
                                     emotion=emotion, intensity=intensity, audio_path=audio))
    else:
        crops = read_hdtf_crops(src) if layout == "hdtf" else {}
        suffixes = (".mp4",) if layout == "hdtf" else VIDEO_SUFFIXES
        for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in suffixes and p.is_file()):
            rel = path.relative_to(src)
            if any(part.startswith(".") for part in rel.parts):
                continue  # hidden files, e.g. half-written downloads
            stem_id = "__".join(rel.with_suffix("").parts)
            if layout == "hdtf":
                identity = hdtf_identity(path.stem)
            else:
                identity = path.parent.name if identity_from == "parent" and rel.parent.parts else path.stem
            items.append(SourceVideo(path, rel.as_posix(), _safe_id(stem_id), identity, roi=crops.get(path.name)))
    ids: dict[str, str] = {}
    for item in items:
        if item.clip_id in ids:
            raise ValueError(f"inputs {ids[item.clip_id]} and {item.rel} both map to clip id {item.clip_id!r}; "
                             "rename one of them")
        ids[item.clip_id] = item.rel
    return sorted(items, key=lambda s: s.clip_id)


# ---------------------------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# One video
# ---------------------------------------------------------------------------------------------------------------


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
        self.detector = FaceDetector(upsample=cfg.upsample, max_side=cfg.detect_max_side, min_size=cfg.min_face)
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


def find_segments(detected: np.ndarray, *, num_frames: int, step: int, max_gap: int, min_frames: int
                  ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Pieces of a clip with a face: (kept [(start, stop)], dropped [(start, stop)]), stop exclusive.

    ``detected`` holds the frames where detection found the face (detection runs every ``step`` frames). A piece
    runs from a detection to the last detection before a gap of more than ``max_gap`` frames; the final piece
    extends to the clip's end when its last detection was the clip's last detection attempt.
    """
    detected = np.asarray(sorted(int(t) for t in detected))
    if len(detected) == 0:
        return [], []
    last_attempt = ((num_frames - 1) // step) * step
    pieces = []
    start = prev = int(detected[0])
    for t in detected[1:]:
        if t - prev > max_gap:
            pieces.append((start, prev + 1))
            start = int(t)
        prev = int(t)
    pieces.append((start, num_frames if prev == last_attempt else prev + 1))
    kept = [p for p in pieces if p[1] - p[0] >= min_frames]
    dropped = [p for p in pieces if p[1] - p[0] < min_frames]
    return kept, dropped


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
class _Piece:
    """A stretch of frames [start, stop) with a face, becoming one clip."""

    start: int
    stop: int
    face_boxes: np.ndarray  # (T, 4) smoothed face boxes, source pixels
    crop_boxes: np.ndarray  # (T, 4) square crop boxes, source pixels
    frames: np.ndarray | None = None  # (T, size, size, 3) uint8 crops
    landmarks68: np.ndarray | None = None  # (T, 68, 2) crop pixels
    dense: list[np.ndarray | None] = field(default_factory=list)  # MediaPipe per frame, None where it found no mesh

    @property
    def num_frames(self) -> int:
        return self.stop - self.start


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
    boxes: dict[int, FaceBox] = {}
    rejected_small = 0
    previous: FaceBox | None = None
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
        if t % cfg.detect_every:
            continue
        start = time.perf_counter()
        # Once the face is known, detect on an image where it is about 160 px (dlib's HOG window is 80 px, so it
        # may shrink to half before being missed): 2-4x faster than the fixed max_side on close-up video.
        side = None
        if previous is not None:
            searched = max(frame_size) if item.roi is None else max(item.roi[2] - item.roi[0], item.roi[3] - item.roi[1])
            side = int(np.clip(searched * 160.0 / previous.size, 320, cfg.detect_max_side))
        best = detector.best(frame, previous=previous, roi=item.roi, max_side=side)
        rejected_small += detector.last_rejected
        timer.add("detect", time.perf_counter() - start)
        if best is not None:
            boxes[t] = previous = best
    if num_frames == 0:
        raise VideoError(item.path, "contains no video frame")
    return _Detections(boxes, num_frames, (int(frame_size[0]), int(frame_size[1])), rejected_small, cache)


def _crop_pass(item: SourceVideo, cfg: PreprocessConfig, models: _Models, pieces: list[_Piece],
               cache: list[np.ndarray] | None, dst: Path, timer: _Timer) -> None:
    """Crops and landmarks of every frame inside ``pieces`` (filled in place)."""
    from ..video import VideoError

    size, work = cfg.size, max(cfg.landmark_size, cfg.size)
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
            crop = p.crop_boxes[i]
            start = time.perf_counter()
            p.frames[i] = crop_and_resize(frame, crop, size, pad=cfg.pad)
            # the landmarkers see a larger crop: dlib reports whole pixels
            big = crop_and_resize(frame, crop, work, pad=cfg.pad, resample="bilinear") if work != size else p.frames[i]
            timer.add("crop", time.perf_counter() - start)
            start = time.perf_counter()
            scale = work / (crop[2] - crop[0])
            face = (p.face_boxes[i] - np.r_[crop[:2], crop[:2]]) * scale  # face box in working-crop pixels
            p.landmarks68[i] = models.landmarker(big, face) * (size / work)
            if mesh is not None:
                pts = mesh(big)
                p.dense.append(None if pts is None else pts * (size / work))
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

    kept, dropped = find_segments(np.array(sorted(boxes)), num_frames=num_frames, step=cfg.detect_every,
                                  max_gap=int(np.floor(cfg.max_gap * FPS + 1e-6)),
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
    covered = sum(b - a for a, b in kept)
    if covered < num_frames:
        result.notes.append(f"face missing or lost in {(num_frames - covered) / FPS:.2f} s of {num_frames / FPS:.2f} s: "
                            f"kept {len(kept)} piece(s) of >= {cfg.min_seconds:g} s, dropped {len(dropped)}")

    pieces = []
    for a, b in kept:
        track = np.full((b - a, 4), np.nan)  # detections of this piece, NaN elsewhere
        for t, box in boxes.items():
            if a <= t < b:
                track[t - a] = box.as_array()
        faces = smooth_boxes(track, median=cfg.smooth_median, sigma_centre=cfg.smooth_sigma_centre,
                             sigma_size=cfg.smooth_sigma_size)
        pieces.append(_Piece(a, b, faces, square_crop_box(faces, scale=cfg.crop_scale, shift_down=cfg.crop_shift)))
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


# ---------------------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------------------


def dataset_topology(cfg: PreprocessConfig) -> LandmarkTopology:
    return mediapipe_topology(478) if cfg.landmarks == "mediapipe" else topology_68()


def dataset_info(cfg: PreprocessConfig, dst: Path) -> dict:
    """dataset.json: the keys ``synth.dataset_info`` writes, plus the preprocessing settings."""
    return {
        "name": cfg.name or (cfg.layout if cfg.layout != "plain" else dst.name),
        "source": cfg.layout,
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "resolution": cfg.size,
        "landmark_topology": dataset_topology(cfg).to_json(),
        # canonicalisation is a similarity fit onto this template, so canonical landmarks are in its face units
        "canonical_template68": canonical_template68().round(6).tolist(),
        "preprocess": cfg.output_settings(),
    }


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker(job: tuple) -> SourceResult:
    item, cfg, split, dst = job
    return process_source(item, cfg, split, dst=dst)


def preprocess(cfg: PreprocessConfig, *, progress: bool = True,
               on_result: Callable[[SourceResult], None] | None = None) -> dict:
    """Run preprocessing (or finish an earlier run). Returns the summary (see :func:`format_summary`).

    ``on_result`` is called in the main process after each input is done (a hook for progress reporting; an
    exception raised from it stops the run like Ctrl-C: what was written is indexed, then it propagates).
    """
    from ..config import resolve_path

    cfg.check()
    if cfg.landmarks == "mediapipe" and not mediapipe_available():
        from .detectors import INSTALL_DENSE_HINT

        raise ImportError(INSTALL_DENSE_HINT)
    src, dst = resolve_path(cfg.src), resolve_path(cfg.dst)
    # every argument is checked before anything is created: a bad one leaves no empty dataset behind
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"--dst {dst} is a file, not a dataset folder; choose a folder (new or existing dataset)")
    items = discover(src, cfg.layout, identity_from=cfg.identity_from)
    if not items:
        raise ValueError(f"no videos found under {src} ({_LAYOUT_HINTS[cfg.layout]}); nothing was written")
    fixed = read_split_file(Path(cfg.splits)) if cfg.splits else None
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--dst {dst}: cannot create it ({err.strerror or err})") from err
    with destination_lock(dst):  # one run per destination, for the whole run
        return _preprocess_locked(cfg, src, dst, items, fixed, progress=progress, on_result=on_result)


_LAYOUT_HINTS = {
    "hdtf": "--layout hdtf looks for <name>_<idx>.mp4 files",
    "mead": "--layout mead looks for <actor>/video/front/<emotion>/level_<k>/<nnn>.mp4",
    "plain": f"--layout plain looks for {', '.join(VIDEO_SUFFIXES)} files, hidden ones left out",
}


def _prepare_destination(cfg: PreprocessConfig, dst: Path) -> None:
    """Refuse other settings on an existing dataset (or start over with --overwrite); write dataset.json; clear what
    a killed run left (crops, half-written clip folders)."""
    info = dataset_info(cfg, dst)
    info_path = dst / "dataset.json"
    if info_path.is_file() and not cfg.overwrite:
        old = json.loads(info_path.read_text())
        if old.get("preprocess") != info["preprocess"]:
            what = "other preprocessing settings" if "preprocess" in old else f"another dataset ({old.get('name')})"
            changed = sorted(k for k in info["preprocess"] if (old.get("preprocess") or {}).get(k) != info["preprocess"][k])
            raise ValueError(f"{dst} holds {what} (differs in: {', '.join(changed)}); pass --overwrite to start over "
                             "or choose another --dst")
    if cfg.overwrite:
        for name in ("clips", ".work"):
            shutil.rmtree(dst / name, ignore_errors=True)
        for name in ("index.jsonl", "skipped.jsonl", "dataset.json"):
            (dst / name).unlink(missing_ok=True)
    atomic_write_text(info_path, json.dumps(info))
    shutil.rmtree(dst / ".work", ignore_errors=True)  # crops of an interrupted run
    if (dst / "clips").is_dir():  # half-written clip folders of a killed run (write_clip's temporary names)
        for d in (dst / "clips").glob(".*.tmp"):
            shutil.rmtree(d, ignore_errors=True)


def _recorded(dst: Path, on_disk: list[DiskClip]) -> dict[str, str]:
    """The split recorded for each identity with clips: index.jsonl (where --splits changes land), else the clips'
    meta.json (clips written after the last index, by a killed run)."""
    indexed = read_index(dst) if (dst / "index.jsonl").is_file() else []
    ids = {r.id for r in indexed}
    pairs = [(r.identity, r.split) for r in indexed]
    pairs += [(c.record.identity, c.record.split) for c in on_disk if c.record.id not in ids]
    return recorded_splits(pairs)


def _preprocess_locked(cfg: PreprocessConfig, src: Path, dst: Path, items: list[SourceVideo],
                       fixed: dict[str, str] | None, *, progress: bool, on_result) -> dict:
    _prepare_destination(cfg, dst)
    num_points = dataset_topology(cfg).num_points
    on_disk, broken = scan_clips(dst, num_landmarks=num_points)
    # an identity's split comes from its name or from what is recorded, never from the others present: adding
    # videos (another --src) must not move a clip between splits (splits.py)
    recorded = _recorded(dst, on_disk)
    identities = {i.identity for i in items} | {c.record.identity for c in on_disk}
    splits = assign_splits(identities, seed=cfg.seed, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                           fixed=fixed, held_out_test=MEAD_TEST_ACTORS if cfg.layout == "mead" else (),
                           recorded=recorded)
    plan = plan_resume(items, on_disk, broken, read_skipped(dst), retry_skipped=cfg.retry_skipped)
    for cid in plan.remove:
        shutil.rmtree(dst / "clips" / cid, ignore_errors=True)
    removed = set(plan.remove)
    before = {"clips": sum(c.record.id not in removed for c in on_disk), "recorded": recorded, "changed": plan.changed,
              "unstamped": plan.unstamped}

    results: list[SourceResult] = []
    start = time.perf_counter()
    interrupted = False
    try:
        _run_jobs(plan.todo, cfg, splits, dst, results, progress=progress, on_result=on_result)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        summary = _finish(cfg, dst, items, results, plan.carried, splits, num_points, plan.done, before,
                          seconds=time.perf_counter() - start, interrupted=interrupted)
    return summary


def _run_jobs(todo: list[SourceVideo], cfg: PreprocessConfig, splits: dict[str, str], dst: Path,
              results: list[SourceResult], *, progress: bool, on_result) -> None:
    from tqdm.auto import tqdm

    jobs = [(item, cfg, splits[item.identity], dst) for item in todo]
    bar = tqdm(total=len(jobs), desc="preprocess", unit="video", disable=not progress)
    frames = 0

    def handle(res: SourceResult) -> None:
        nonlocal frames
        results.append(res)
        frames += sum(n for _, n in res.clips)
        bar.set_postfix(frames=frames, skipped=sum(r.skipped is not None for r in results))
        bar.update()
        if on_result is not None:
            on_result(res)

    try:
        if cfg.workers > 1 and len(jobs) > 1:
            _run_parallel(jobs, min(cfg.workers, len(jobs)), handle)
        else:
            for job in jobs:
                handle(_worker(job))
    finally:
        bar.close()


def _crashed(job: tuple, err: BaseException) -> SourceResult:
    return SourceResult(job[0].rel, skipped=f"failed: the worker process died on this input ({err}); a native "
                                            "library (FFmpeg, dlib, MediaPipe) crashed or the process ran out of memory")


def _run_parallel(jobs: list[tuple], workers: int, handle: Callable[[SourceResult], None], *,
                  fn: Callable[[tuple], SourceResult] | None = None) -> None:
    """Run ``fn(job)`` (default: process one input) in ``workers`` processes, at most ``workers`` in flight.

    Workers are started with "spawn": a forked child of a process that has run MediaPipe can corrupt its heap
    (seen here: glibc "malloc(): unaligned tcache chunk" in the child and a hung pool). A worker that dies (a native
    crash on a malformed file, the OOM killer) breaks the pool; the inputs that were in flight are then rerun one at
    a time in a fresh process, so the one that kills a worker is skipped with that reason and the run goes on.
    Workers ignore Ctrl-C; the main process stops them and then indexes what was written.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    fn = fn or _worker
    ctx = mp.get_context("spawn")
    queue = list(reversed(jobs))  # pop() takes them in order
    suspects: list[tuple] = []
    while queue or suspects:
        if suspects:  # alone in a fresh process: a second death is this input's
            job = suspects.pop(0)
            with ProcessPoolExecutor(1, mp_context=ctx, initializer=_ignore_sigint) as ex:
                try:
                    res = ex.submit(fn, job).result()
                except BrokenProcessPool as err:
                    res = _crashed(job, err)
            handle(res)
            continue
        ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint)
        running: dict = {}
        try:
            while queue or running:
                while queue and len(running) < workers:
                    job = queue.pop()
                    running[ex.submit(fn, job)] = job
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = running.pop(fut)
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        suspects.append(job)
                        continue
                    handle(res)
                if suspects:  # the pool is broken: every job still running died with it
                    suspects.extend(running.values())
                    running.clear()
                    break
        except BaseException:
            _stop_workers(ex)
            raise
        ex.shutdown(wait=True)


def _stop_workers(ex) -> None:
    """Cancel what has not started and end the worker processes now (Ctrl-C, or an error in the main process)."""
    ex.shutdown(wait=False, cancel_futures=True)
    terminate = getattr(ex, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        proc.terminate()


def _finish(cfg: PreprocessConfig, dst: Path, items: list[SourceVideo], results: list[SourceResult],
            carried: list[dict], splits: dict[str, str], num_points: int, already_done: int, before: dict, *,
            seconds: float, interrupted: bool) -> dict:
    """Rebuild index.jsonl from the clips on disk, write skipped.jsonl, and summarise (``before``: what the
    dataset held when the run started, see ``_preprocess_locked``)."""
    on_disk, broken = scan_clips(dst, num_landmarks=num_points)
    records = []
    for c in on_disk:
        rec = c.record
        rec.split = splits.get(rec.identity, rec.split)
        records.append(rec)
    write_index(dst, records)
    by_rel = {i.rel: i for i in items}
    skipped = list(carried)
    for res in results:
        if res.skipped is not None:
            item = by_rel[res.rel]
            skipped.append({"path": res.rel, "reason": res.skipped,
                            "stamp": source_stamp(item.path, item.audio_path)})
    skipped.sort(key=lambda e: e["path"])
    atomic_write_text(dst / "skipped.jsonl", "".join(json.dumps(e) + "\n" for e in skipped))
    shutil.rmtree(dst / ".work", ignore_errors=True)
    times: dict[str, float] = {}
    for res in results:
        for k, v in res.times.items():
            times[k] = times.get(k, 0.0) + v
    splits_summary: dict[str, dict] = {}
    for r in records:
        s = splits_summary.setdefault(r.split, {"clips": 0, "frames": 0, "identities": set()})
        s["clips"] += 1
        s["frames"] += r.num_frames
        s["identities"].add(r.identity)
    new_frames = sum(n for res in results for _, n in res.clips)
    return {
        "src": str(cfg.src),
        "dst": str(dst),
        "inputs": len(items),
        "processed_now": len(results),
        "already_done": already_done,
        "skipped_earlier": len(carried),
        "clips_written": sum(len(res.clips) for res in results),
        "frames_written": new_frames,
        "hours_written": new_frames / FPS / 3600.0,
        "clips": len(records),
        "frames": sum(r.num_frames for r in records),
        "hours": sum(r.num_frames for r in records) / FPS / 3600.0,
        "identities": len({r.identity for r in records}),
        "splits": {k: {**v, "identities": len(v["identities"])} for k, v in sorted(splits_summary.items())},
        "skipped": [{"path": e["path"], "reason": e["reason"]} for e in skipped],
        "notes": {res.rel: res.notes for res in results if res.notes},
        "broken": broken,
        "merge": _merge_summary(before, records, results, splits),
        "changed": before["changed"],
        "unstamped": before["unstamped"],
        "frames_decoded": sum(res.frames_decoded for res in results),
        "stage_seconds": times,
        "seconds": seconds,
        "interrupted": interrupted,
    }


def _merge_summary(before: dict, records: list[ClipRecord], results: list[SourceResult],
                   splits: dict[str, str]) -> dict:
    """What this run added to the clips that were there, and which recorded splits --splits changed."""
    recorded = before["recorded"]
    identity = {r.id: r.identity for r in records}
    added = [cid for res in results for cid, _ in res.clips if cid in identity]
    new = sorted({identity[c] for c in added} - set(recorded))
    on_disk = set(identity.values())
    moved = {i: [old, splits[i]] for i, old in sorted(recorded.items()) if i in on_disk and splits.get(i, old) != old}
    return {"existing_clips": before["clips"], "clips_added": len(added), "new_identities": new,
            "clips_of_new_identities": sum(identity[c] in new for c in added), "moved": moved}


def _n(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _merge_lines(s: dict) -> list[str]:
    m, lines = s["merge"], []
    if m["existing_clips"] and m["clips_added"]:
        new, k = len(m["new_identities"]), m["clips_of_new_identities"]
        what = _n(m["clips_added"], "clip")
        if new:
            ids = _n(new, "new identity", "new identities")
            what += f" of {ids}" if k == m["clips_added"] else f" ({k} of them of {ids})"
        keep = "existing clips keep their splits" + (", except as --splits moves them" if m["moved"] else "")
        lines.append(f"  added {what} to an existing dataset of {_n(m['existing_clips'], 'clip')}; {keep}")
    if m["moved"]:
        moves = ", ".join(f"{i} {a} -> {b}" for i, (a, b) in m["moved"].items())
        lines.append(f"  --splits moved {_n(len(m['moved']), 'identity', 'identities')} with clips: {moves}")
    if s["changed"]:
        lines.append(f"  {_n(len(s['changed']), 'input')} changed since their clips were written, redone (old clips "
                     f"replaced): {', '.join(s['changed'])}")
    if s["unstamped"]:
        lines.append(f"  note: {_n(s['unstamped'], 'clip')} kept without a source stamp (written by an older version): "
                     "a replaced video is not noticed for them; --overwrite redoes everything")
    return lines


def format_summary(summary: dict) -> str:
    s = summary
    lines = [
        f"{'INTERRUPTED: ' if s['interrupted'] else ''}preprocessed {s['src']} -> {s['dst']}",
        f"  inputs: {s['inputs']} found, {s['processed_now']} processed now, {s['already_done']} already done, "
        f"{s['skipped_earlier']} skipped by an earlier run (--retry-skipped retries them)",
        f"  written now: {s['clips_written']} clips, {s['frames_written']} frames ({s['hours_written']:.4f} h) "
        f"in {s['seconds']:.1f} s",
        f"  dataset: {s['clips']} clips, {s['identities']} identities, {s['frames']} frames ({s['hours']:.4f} h)",
    ]
    for name, sp in s["splits"].items():
        lines.append(f"    {name:<10} {sp['clips']:>5} clips {sp['identities']:>4} identities {sp['frames']:>8} frames")
    lines += _merge_lines(s)
    if s["stage_seconds"]:
        n = max(1, s["frames_decoded"])
        stages = ", ".join(f"{k} {v:.1f} s ({n / v:.0f} frames/s)" if v > 0 else f"{k} 0 s"
                           for k, v in sorted(s["stage_seconds"].items()))
        lines.append(f"  time per stage over {s['frames_decoded']} decoded frames: {stages}")
    if s["skipped"]:
        lines.append(f"  skipped {len(s['skipped'])} input(s) (listed in skipped.jsonl):")
        lines += [f"    {e['path']}: {e['reason']}" for e in s["skipped"]]
    if s["notes"]:
        lines.append("  handled:")
        lines += [f"    {rel}: {note}" for rel, notes in sorted(s["notes"].items()) for note in notes]
    if s["broken"]:
        lines.append(f"  {len(s['broken'])} broken clip folder(s) left out of the index:")
        lines += [f"    {cid}: {why}" for cid, why in sorted(s["broken"].items())]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = PreprocessConfig(src="", dst="")
    p = argparse.ArgumentParser(prog="python -m dreamhead_lit.data.preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="folder of raw videos")
    p.add_argument("--dst", required=True, help="output dataset folder")
    p.add_argument("--layout", choices=("hdtf", "mead", "plain"), default=d.layout)
    p.add_argument("--size", type=int, default=d.size, help="crop side in pixels (default %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="parallel processes (default %(default)s)")
    p.add_argument("--landmarks", choices=("dlib68", "mediapipe"), default=d.landmarks,
                   help="dense landmark set (mediapipe needs `make install-dense`)")
    p.add_argument("--frames-format", choices=("jpg", "npy"), default=None,
                   help="default: jpg from 128 px up, npy below")
    p.add_argument("--identity-from", choices=("name", "parent"), default=d.identity_from,
                   help="plain layout: identity from the file stem or the parent folder")
    p.add_argument("--splits", help="split file: JSON {identity: split} or lines `identity split`")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the split of identities new to the dataset (recorded splits never move)")
    p.add_argument("--max-seconds", type=float, default=None, help="use only the first seconds of each video")
    p.add_argument("--detect-every", type=int, default=d.detect_every, help="frames between face detections")
    p.add_argument("--min-face", type=float, default=d.min_face, help="smallest face box side kept (source px)")
    p.add_argument("--upsample", type=int, default=d.upsample, help="dlib detector upsampling (small faces)")
    p.add_argument("--crop-scale", type=float, default=d.crop_scale, help="crop side / face box side")
    p.add_argument("--pad", choices=("edge", "black"), default=d.pad, help="filling outside the frame")
    p.add_argument("--max-gap", type=float, default=d.max_gap, help="seconds without a face that split a clip")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds, help="shortest clip kept")
    p.add_argument("--name", help="dataset name in dataset.json")
    p.add_argument("--overwrite", action="store_true", help="delete an existing dataset at --dst first")
    p.add_argument("--retry-skipped", action="store_true", help="retry inputs an earlier run skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    keys = set(PreprocessConfig.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in keys}
    return PreprocessConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    try:
        summary = preprocess(cfg, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\ninterrupted: the clips written so far are indexed; run the same command again to finish",
              file=sys.stderr)
        return 130
    except (ValueError, ImportError, FileNotFoundError, DestinationBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
