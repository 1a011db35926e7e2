"""The processed-clip format shared by real (HDTF/MEAD) and synthetic (SynthTalk) data.

A processed dataset is a folder::

    dataset.json                 name, landmark topology (dense set), resolution, fps, sample rate, source
    index.jsonl                  one line per clip: id, identity, split, num_frames, fps, emotion, intensity, source
    clips/<id>/frames.npy        uint8 (T, H, W, 3)          (or frames/000000.jpg ... for large data)
    clips/<id>/landmarks.npy     float32 (T, N, 2) crop pixels, the dense set
    clips/<id>/landmarks68.npy   float32 (T, 68, 2) crop pixels, dlib order (used by LMD)
    clips/<id>/audio.wav         16 kHz mono
    clips/<id>/meta.json         the index fields + crop box per frame, detector, resolution, fps, frames format

Writers build a clip in a hidden temporary folder and rename it into place, so an interrupted run never leaves a
half clip that looks whole. ``validate_clip`` checks a clip cheaply (memory-mapped headers, no frame decoding) and
raises ``ClipError`` naming the clip and what is wrong, including NaN/Inf in the landmarks or a float audio.wav.

Clip ids are plain names (``check_clip_id``): an id is joined to ``clips/`` to read a clip and to write its feature
cache, so ``../x`` or ``/x`` would reach outside the dataset. Every id read from index.jsonl or meta.json and every id
given to ``clip_dir`` is checked.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000  # every clip's audio, and every audio feature extractor, at 16 kHz mono
FPS = 25  # every processed clip's frame rate
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 samples = one video frame (one copy: data/audio.py imports these)
FramesFormat = Literal["npy", "jpg"]
EMOTIONS = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")  # MEAD's eight
# a clip id is one folder name: no separators, no leading dot (".", "..", hidden folders); room left for
# write_clip's temporary ".<id>.XXXXXXXX.tmp" within the usual 255-byte name limit
_CLIP_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


class ClipError(ValueError):
    """A processed clip that cannot be used, with the clip id and what is wrong."""

    def __init__(self, clip_id: str, problem: str):
        super().__init__(f"clip {clip_id!r}: {problem}")
        self.clip_id = clip_id
        self.problem = problem


def check_clip_id(clip_id: object, where: str) -> str:
    """``clip_id`` if it is a plain folder name ([A-Za-z0-9._-], not starting with '.', at most 200 characters),
    else ValueError naming the id and ``where`` it came from (a file, a file:line)."""
    if isinstance(clip_id, str) and _CLIP_ID.fullmatch(clip_id):
        return clip_id
    raise ValueError(f"{where}: clip id {clip_id!r} is not a plain name (letters, digits, '.', '_', '-', not "
                     "starting with '.', at most 200 characters); a clip id names a folder under clips/ and may not "
                     "point elsewhere. Fix or remove that entry")


@dataclass
class ClipRecord:
    """One line of index.jsonl."""

    id: str
    identity: str
    split: str
    num_frames: int
    fps: float = FPS
    emotion: str = "neutral"
    intensity: int = 0  # MEAD level 1-3; 0 when the dataset has none
    source: str = ""

    @classmethod
    def from_json(cls, data: dict, *, where: str = "index entry") -> "ClipRecord":
        """A record from a JSON object (an index line, a meta.json); ``where`` names it in errors."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = {"id", "identity", "split", "num_frames"} - known.keys()
        if missing:
            raise ValueError(f"{where}: entry {data!r} lacks {sorted(missing)}")
        check_clip_id(known["id"], where)
        return cls(**known)


@dataclass
class ClipData:
    """A clip in memory. frames (T, H, W, 3) uint8; landmarks (T, N, 2); landmarks68 (T, 68, 2); audio (S,) float32."""

    record: ClipRecord
    frames: np.ndarray
    landmarks: np.ndarray
    landmarks68: np.ndarray
    audio: np.ndarray
    crop_boxes: np.ndarray | None = None  # (T, 4) x0, y0, x1, y1 in source-video pixels
    detector: str = ""
    extra_meta: dict[str, Any] = field(default_factory=dict)
    extra_arrays: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# Atomic file helpers (also used for index.jsonl and dataset.json)
# ---------------------------------------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file in the same folder: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_index(root: Path, records: Iterable[ClipRecord]) -> None:
    lines = [json.dumps(asdict(r)) for r in sorted(records, key=lambda r: r.id)]
    atomic_write_text(Path(root) / "index.jsonl", "\n".join(lines) + ("\n" if lines else ""))


def read_index(root: Path) -> list[ClipRecord]:
    path = Path(root) / "index.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {root} is not a processed dataset. Generate SynthTalk with "
            "`python -m dreamhead_lit.data.synth --out data/synthtalk` or preprocess raw videos with "
            "`python -m dreamhead_lit.data.preprocess`."
        )
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(ClipRecord.from_json(json.loads(line), where=f"{path}:{n}"))
        except (json.JSONDecodeError, TypeError, AttributeError) as err:  # AttributeError: a line that is not an object
            raise ValueError(f"{path}:{n}: bad index line ({err})") from err
    return records


def read_dataset_info(root: Path) -> dict:
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: every processed dataset has a dataset.json (see README, data format)")
    return json.loads(path.read_text())


def clip_dir(root: Path, clip_id: str) -> Path:
    """``root/clips/<id>``; ValueError when the id is not a plain name (it would lead outside ``root/clips``)."""
    return Path(root) / "clips" / check_clip_id(clip_id, f"dataset {root}")


# ---------------------------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------------------------


def write_clip(root: Path, clip: ClipData, *, frames_format: FramesFormat = "npy", jpeg_quality: int = 95) -> Path:
    """Write a clip atomically into ``root/clips/<id>``, replacing an older copy. Returns the clip folder."""
    rec = clip.record
    t = rec.num_frames
    for name, arr in (("frames", clip.frames), ("landmarks", clip.landmarks), ("landmarks68", clip.landmarks68)):
        if len(arr) != t:
            raise ClipError(rec.id, f"refusing to write: {name} has {len(arr)} frames, record says {t}")
    for name, arr, per_frame in (("landmarks", clip.landmarks, 1), ("landmarks68", clip.landmarks68, 1),
                                 ("audio", clip.audio, SAMPLES_PER_FRAME)):
        problem = nonfinite_problem(arr, name, per_frame=per_frame)
        if problem:  # NaN would pass through the 16-bit wav unnoticed and poison training
            raise ClipError(rec.id, f"refusing to write: {problem}")
    final = clip_dir(root, rec.id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{rec.id}.", suffix=".tmp", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if frames_format == "npy":
            np.save(tmp / "frames.npy", np.ascontiguousarray(clip.frames, dtype=np.uint8))
        elif frames_format == "jpg":
            from PIL import Image

            (tmp / "frames").mkdir()
            for i, frame in enumerate(clip.frames):
                Image.fromarray(frame).save(tmp / "frames" / f"{i:06d}.jpg", quality=jpeg_quality)
        else:
            raise ValueError(f"frames_format must be 'npy' or 'jpg', got {frames_format!r}")
        np.save(tmp / "landmarks.npy", clip.landmarks.astype(np.float32))
        np.save(tmp / "landmarks68.npy", clip.landmarks68.astype(np.float32))
        sf.write(tmp / "audio.wav", np.clip(clip.audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        for name, arr in clip.extra_arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        h, w = clip.frames.shape[1:3]
        meta = {
            **asdict(rec),
            "resolution": [int(h), int(w)],
            "frames_format": frames_format,
            "num_landmarks": int(clip.landmarks.shape[1]),
            "sample_rate": SAMPLE_RATE,
            "audio_samples": int(len(clip.audio)),
            "detector": clip.detector,
            "crop_boxes": None if clip.crop_boxes is None else np.asarray(clip.crop_boxes).round(2).tolist(),
            **clip.extra_meta,
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# ---------------------------------------------------------------------------------------------------------------
# Validation and reading
# ---------------------------------------------------------------------------------------------------------------


def nonfinite_problem(arr: np.ndarray, name: str, *, per_frame: int = 1, chunk: int = 1 << 22) -> str | None:
    """None when every value of ``arr`` is finite, else e.g. "landmarks.npy has 12 non-finite values (first at frame
    3)". The first axis is time, ``per_frame`` entries of it per video frame (640 for 16 kHz audio). Scanned in chunks,
    so a memory map is read once and never held whole."""
    arr = np.asarray(arr)  # a memory map stays one (no copy)
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return None  # integer data is always finite
    row = max(1, arr.size // max(1, len(arr)))
    step = max(1, chunk // row)
    count, first = 0, None
    for start in range(0, len(arr), step):
        bad = ~np.isfinite(np.asarray(arr[start:start + step]))
        n = int(bad.sum())
        if n and first is None:
            first = start + int(np.argmax(bad.reshape(len(bad), -1).any(axis=1)))
        count += n
    if not count:
        return None
    what = "samples" if per_frame > 1 else "values"
    return f"{name} has {count} non-finite {what} (first at frame {first // per_frame})"


def _npy_shape(path: Path, clip_id: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an .npy file, checking that the data is all there (truncation shows as a short file)."""
    if not path.is_file():
        raise ClipError(clip_id, f"missing file {path.name} (expected at {path})")
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        raise ClipError(clip_id, f"{path.name} is unreadable or truncated ({err})") from err
    return arr.shape, arr.dtype


def validate_clip(root: Path, record: ClipRecord, *, num_landmarks: int | None = None) -> dict:
    """Check a clip's files against its index record without decoding frames; returns its meta. Raises ClipError."""
    cid = record.id
    d = clip_dir(root, cid)
    if not d.is_dir():
        raise ClipError(cid, f"clip folder {d} is missing")
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise ClipError(cid, f"missing file meta.json (expected at {meta_path})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ClipError(cid, f"meta.json is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ClipError(cid, f"{meta_path} holds {type(meta).__name__}, expected a JSON object")
    if "id" in meta and meta["id"] != cid:  # a renamed or copied folder: the index and the clip disagree
        raise ClipError(cid, f"{meta_path} names clip id {meta['id']!r}, but the clip's folder and record are {cid!r}")
    t = record.num_frames
    if t <= 0:
        raise ClipError(cid, f"index says num_frames={t}")
    lm_shape, lm_dtype = _npy_shape(d / "landmarks.npy", cid)
    if len(lm_shape) != 3 or lm_shape[2] != 2:
        raise ClipError(cid, f"landmarks.npy has shape {lm_shape}, expected (T, N, 2)")
    if num_landmarks is not None and lm_shape[1] != num_landmarks:
        raise ClipError(cid, f"landmarks.npy has {lm_shape[1]} points, the dataset's set has {num_landmarks}")
    lm68_shape, _ = _npy_shape(d / "landmarks68.npy", cid)
    if lm68_shape[1:] != (68, 2):
        raise ClipError(cid, f"landmarks68.npy has shape {lm68_shape}, expected (T, 68, 2)")
    fmt = meta.get("frames_format", "npy")
    if fmt == "npy":
        fr_shape, fr_dtype = _npy_shape(d / "frames.npy", cid)
        if len(fr_shape) != 4 or fr_shape[3] != 3 or fr_dtype != np.uint8:
            raise ClipError(cid, f"frames.npy is {fr_dtype} {fr_shape}, expected uint8 (T, H, W, 3)")
        n_frames = fr_shape[0]
    elif fmt == "jpg":
        n_frames = len(list((d / "frames").glob("*.jpg"))) if (d / "frames").is_dir() else 0
    else:
        raise ClipError(cid, f"meta.json names unknown frames_format {fmt!r}")
    lengths = {"frames": n_frames, "landmarks": lm_shape[0], "landmarks68": lm68_shape[0]}
    if any(n != t for n in lengths.values()):
        detail = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise ClipError(cid, f"inconsistent lengths: index says {t} frames but {detail}")
    for name in ("landmarks.npy", "landmarks68.npy"):  # small next to the frames: read whole
        problem = nonfinite_problem(np.load(d / name, mmap_mode="r"), name)
        if problem:
            raise ClipError(cid, problem)
    audio_path = d / "audio.wav"
    if not audio_path.is_file():
        raise ClipError(cid, f"missing file audio.wav (expected at {audio_path})")
    try:
        info = sf.info(str(audio_path))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ClipError(cid, f"audio.wav is unreadable ({err})") from err
    if info.samplerate != SAMPLE_RATE:
        raise ClipError(cid, f"audio.wav is {info.samplerate} Hz, expected {SAMPLE_RATE} Hz (re-run preprocessing)")
    if info.channels != 1:
        raise ClipError(cid, f"audio.wav has {info.channels} channels, expected mono")
    fps = float(record.fps)
    expected = t * SAMPLE_RATE / fps
    if abs(info.frames - expected) > SAMPLE_RATE / fps:  # one video frame of slack for rounding at the ends
        raise ClipError(
            cid, f"audio is {info.frames / SAMPLE_RATE:.3f} s but {t} frames at {fps:g} fps last {t / fps:.3f} s"
        )
    if info.subtype in ("FLOAT", "DOUBLE"):  # only float files can hold NaN/Inf: PCM is never read here
        try:
            samples, _ = sf.read(str(audio_path), dtype="float64" if info.subtype == "DOUBLE" else "float32")
        except (RuntimeError, sf.LibsndfileError) as err:
            raise ClipError(cid, f"audio.wav is unreadable ({err})") from err
        problem = nonfinite_problem(samples, "audio.wav", per_frame=round(SAMPLE_RATE / fps))
        if problem:
            raise ClipError(cid, problem)
    return meta


class ClipReader:
    """Random access to one processed clip; hides whether frames are an .npy array or JPEG files.

    Arrays are memory-mapped, so reading one frame of a long clip costs one frame.
    """

    def __init__(self, root: Path, record: ClipRecord, meta: dict | None = None):
        self.root = Path(root)
        self.record = record
        self.dir = clip_dir(root, record.id)
        self.meta = meta if meta is not None else json.loads((self.dir / "meta.json").read_text())
        self._frames: np.ndarray | None = None
        self._landmarks: np.ndarray | None = None
        self._landmarks68: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return self.record.num_frames

    def _load(self, name: str) -> np.ndarray:
        try:
            return np.load(self.dir / f"{name}.npy", mmap_mode="r")
        except (ValueError, OSError) as err:
            raise ClipError(self.record.id, f"cannot read {name}.npy ({err})") from err

    @property
    def landmarks(self) -> np.ndarray:
        if self._landmarks is None:
            self._landmarks = self._load("landmarks")
        return self._landmarks

    @property
    def landmarks68(self) -> np.ndarray:
        if self._landmarks68 is None:
            self._landmarks68 = self._load("landmarks68")
        return self._landmarks68

    def frame(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8."""
        if self.meta.get("frames_format", "npy") == "jpg":
            from PIL import Image

            with Image.open(self.dir / "frames" / f"{index:06d}.jpg") as img:
                return np.array(img.convert("RGB"))  # writable, like the .npy path
        if self._frames is None:
            self._frames = self._load("frames")
        return np.array(self._frames[index])  # a writable copy of one frame, not a view of the memory map

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.num_frames if stop is None else stop
        if self.meta.get("frames_format", "npy") == "npy":
            if self._frames is None:
                self._frames = self._load("frames")
            return np.asarray(self._frames[start:stop])
        return np.stack([self.frame(i) for i in range(start, stop)])

    def audio(self) -> np.ndarray:
        samples, sr = sf.read(self.dir / "audio.wav", dtype="float32", always_2d=False)
        if sr != SAMPLE_RATE:
            raise ClipError(self.record.id, f"audio.wav is {sr} Hz, expected {SAMPLE_RATE}")
        return samples

    def array(self, name: str) -> np.ndarray:
        """An extra per-clip array such as ``articulation`` or a cached audio feature ``features/logmel80``."""
        return self._load(name)


def load_clip(root: Path, record: ClipRecord) -> ClipData:
    """Read a whole clip into memory (validating it first)."""
    meta = validate_clip(root, record)
    reader = ClipReader(root, record, meta)
    return ClipData(
        record=record,
        frames=reader.frames(),
        landmarks=np.asarray(reader.landmarks),
        landmarks68=np.asarray(reader.landmarks68),
        audio=reader.audio(),
        crop_boxes=None if meta.get("crop_boxes") is None else np.asarray(meta["crop_boxes"], dtype=np.float32),
        detector=meta.get("detector", ""),
    )
