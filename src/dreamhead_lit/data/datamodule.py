"""Datasets and the LightningDataModule feeding both stages from any processed dataset.

Stage 1 (``stage="a2l"``) samples, with W = window, N = landmark count, K = (2·audio_context + 1)·steps_per_frame:

    audio          float32 (W, K, D)   audio features around each video frame (D = 80 for log-mel)
    landmarks      float32 (W, N, 2)   canonical (pose-free) landmarks, face units
    ref_landmarks  float32 (N, 2)      the speaker's canonical landmarks at another time (identity shape)
    to_image       float32 (W, 2, 3)   canonical -> crop pixels, per frame (for drawing and pixel-space metrics)
    emotion, intensity, identity, clip, start   int64 ()

Stage 2 (``stage="l2i"``) samples, H = W_img = the working resolution (``working_resolution``; the dataset's when
None). Frames and landmarks of a dataset at another resolution are resized here, so a model's size and the data's
resolution are independent (demo-size networks train at 64 px on 256 px HDTF crops):

    frame, ref_frame, masked_frame       float32 (3, H, H) in [-1, 1]
    landmark_image, ref_landmark_image   float32 (3, H, H) in [0, 1], one channel per face region
    mask                                 float32 (1, H, H), 1 over the lower face hidden in masked_frame
    landmarks                            float32 (N, 2) crop pixels of the target frame
    audio                                float32 (K, D) the target frame's audio window, as stage 1 sees that frame
                                         (what drives a ``model.condition=audio`` stage 2; it costs ~0.1 ms of a
                                         sample's ~1.5 ms, so every sample has it and no data flag is needed)
    emotion, identity, clip, index       int64 ()

Shapes are fixed for a given config, so batches can be compiled and DDP ranks stay in step. Invalid clips are
skipped at setup with one warning each and a count (``datamodule.skipped``); a clip that breaks later (a file
deleted mid-run) is replaced by the next sample with a warning, never a crash mid-epoch.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .audio import build_feature_extractor, features_for_frames, frame_windows, window_shape
from .clip import ClipError, ClipReader, ClipRecord, read_dataset_info, read_index, validate_clip
from .landmarks import LandmarkTopology, canonical_template68, canonicalize, lower_face_mask, rasterize_landmarks

log = logging.getLogger(__name__)
Stage = Literal["a2l", "l2i"]
LandmarkSet = Literal["dense", "68"]


@dataclass
class DatasetContext:
    """What every dataset object needs to know about the processed dataset."""

    root: Path
    topology: LandmarkTopology
    template68: np.ndarray  # (68, 2) canonical template, face units
    point_index: np.ndarray  # which dense points the model sees (all, or the 68)
    regions: torch.Tensor  # (N,) region channel of each of those points
    identities: dict[str, int]
    source_resolution: int  # the dataset's frames (dataset.json)
    resolution: int  # the working resolution samples are made at (stage 2: data.working_resolution; else the same)

    @property
    def scale(self) -> float:
        """Working pixels per dataset pixel (landmarks are scaled by it with the frames)."""
        return self.resolution / self.source_resolution if self.source_resolution else 1.0


def load_context(root: Path, landmark_set: LandmarkSet, records: list[ClipRecord]) -> DatasetContext:
    info = read_dataset_info(root)
    topo = LandmarkTopology.from_json(info["landmark_topology"])
    # a dataset.json written before templates were recorded has none: the canonical one
    template = np.asarray(info.get("canonical_template68") or canonical_template68(), dtype=np.float32)
    if landmark_set == "dense":
        index = np.arange(topo.num_points)
    elif landmark_set == "68":
        index = np.asarray(topo.index68)
    else:
        raise ValueError(f"landmark_set must be 'dense' or '68', got {landmark_set!r}")
    regions = torch.as_tensor(np.asarray(topo.regions)[index], dtype=torch.long)
    identities = {name: i for i, name in enumerate(sorted({r.identity for r in records}))}
    resolution = int(info.get("resolution", 0))
    return DatasetContext(root, topo, template, index, regions, identities, resolution, resolution)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., H, W, 3) -> (..., size, size, 3) with PIL's antialiased bilinear filter (a no-op at the same size).
    One function for training samples and generation references, so both see the same resampling."""
    from PIL import Image

    if frames.shape[-3] == size and frames.shape[-2] == size:
        return frames
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in flat])
    return out.reshape(*frames.shape[:-3], size, size, 3)


def canonical_landmarks(ctx: DatasetContext, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canonical landmarks ``(T, N, 2)`` of the points ``ctx.point_index``, face units; ``to_image`` ``(T, 2, 3)``,
    the per-frame similarity canonical -> crop pixels fitted on the 68 stable points) of a clip's dense landmarks
    ``(T, P, 2)`` (crop pixels of ``ctx``'s dataset). Stage 1's samples and everything that must see a clip as they
    do (DAE-Talker†'s head pose, in training and on the bench) go through this one function."""
    dense = np.asarray(landmarks, dtype=np.float32)
    sparse = ctx.topology.sparse(dense) if dense.shape[1] != 68 else dense
    canon, to_image = canonicalize(dense, sparse, template68=ctx.template68)
    return canon[:, ctx.point_index], to_image


def cached_features(reader: ClipReader, extractor) -> np.ndarray:
    """Audio features of a clip, aligned to its frames: (T * steps_per_frame, D); cached beside the clip when writable."""
    path = reader.dir / "features" / f"{extractor.name}.npy"
    if path.is_file():
        try:
            feats = np.load(path, mmap_mode="r")
            if feats.shape[0] == reader.num_frames * extractor.steps_per_frame:
                return feats
        except (ValueError, OSError):
            pass  # a broken cache is recomputed below
    feats = features_for_frames(reader.audio(), reader.num_frames, extractor).numpy().astype(np.float32)
    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".feat", suffix=".npy", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, feats)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only dataset: features stay in memory
    return feats


def clip_windows(feats: np.ndarray, start: int, stop: int, *, num_frames: int, steps_per_frame: int,
                 context: int) -> torch.Tensor:
    """The audio windows (stop - start, K, D) of frames [start, stop) of a clip of ``num_frames`` frames, from its
    cached features (``cached_features``); only the steps the windows need are read."""
    k = steps_per_frame
    # features of the frames plus `context` frames on each side (edge-replicated at clip ends)
    lo, hi = max(0, start - context), min(num_frames, stop + context)
    chunk = torch.from_numpy(np.array(feats[lo * k : hi * k], dtype=np.float32))  # copy: the cache is read-only
    windows = frame_windows(chunk, num_frames=hi - lo, steps_per_frame=k, context=context)
    return windows[start - lo : stop - lo]


class _ClipDataset(Dataset):
    """Shared part of both stages: clip readers, robust item access, per-clip identity, audio features."""

    def __init__(self, ctx: DatasetContext, readers: list[ClipReader], *, train: bool, feature: str):
        if not readers:
            raise ValueError(f"no usable clips for this split in {ctx.root}")
        self.ctx = ctx
        self.readers = readers
        self.train = train
        self.extractor = build_feature_extractor(feature)
        self._feature_cache: dict[int, np.ndarray] = {}
        self.by_identity: dict[str, list[int]] = {}
        for i, r in enumerate(readers):
            self.by_identity.setdefault(r.record.identity, []).append(i)
        self.broken: set[str] = set()

    def _item(self, index: int) -> dict:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_feature_cache": {}}  # each worker process opens its own memory maps

    def _features(self, clip_index: int) -> np.ndarray:
        """The clip's audio features (``cached_features``), opened once per process: opening the memory map costs
        more than reading a frame's window from it."""
        feats = self._feature_cache.get(clip_index)
        if feats is None:
            feats = self._feature_cache[clip_index] = cached_features(self.readers[clip_index], self.extractor)
        return feats

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self)):
            j = (index + attempt) % len(self)
            try:
                return self._item(j)
            except (ClipError, OSError, ValueError) as err:
                clip = self._clip_of(j).record.id
                if clip not in self.broken:
                    self.broken.add(clip)
                    warnings.warn(f"skipping unreadable sample of clip {clip!r}: {err}", RuntimeWarning, stacklevel=2)
        raise RuntimeError(f"every sample of this split in {self.ctx.root} is unreadable")

    def _clip_of(self, index: int) -> ClipReader:
        raise NotImplementedError

    def _labels(self, reader: ClipReader) -> dict:
        from .clip import EMOTIONS

        rec = reader.record
        emotion = EMOTIONS.index(rec.emotion) if rec.emotion in EMOTIONS else 0
        return {
            "emotion": torch.tensor(emotion, dtype=torch.long),
            "intensity": torch.tensor(int(rec.intensity), dtype=torch.long),
            "identity": torch.tensor(self.ctx.identities.get(rec.identity, -1), dtype=torch.long),
        }

    def _other_clip(self, clip_index: int, rng: np.random.Generator | None) -> int:
        """Another clip of the same identity (the same clip when it is the identity's only one)."""
        same = self.by_identity[self.readers[clip_index].record.identity]
        others = [i for i in same if i != clip_index]
        if not others:
            return clip_index
        return others[rng.integers(len(others))] if rng is not None else others[0]

    def _rng(self) -> np.random.Generator | None:
        # training draws from torch's RNG (seeded per worker and rank by Lightning); evaluation is deterministic
        return np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item())) if self.train else None


class LandmarkWindowDataset(_ClipDataset):
    """Stage-1 samples: windows of audio features and canonical landmarks."""

    def __init__(self, ctx: DatasetContext, readers: list[ClipReader], *, window: int, feature: str, context: int,
                 train: bool, windows_per_clip: int = 1):
        super().__init__(ctx, readers, train=train, feature=feature)
        self.window = window
        self.context = context
        self.windows_per_clip = windows_per_clip
        if train:
            self.index = [(c, -1) for c in range(len(readers)) for _ in range(windows_per_clip)]
        else:  # every window of every clip, the last one aligned to the clip's end
            self.index = []
            for c, r in enumerate(readers):
                starts = list(range(0, r.num_frames - window + 1, window))
                if starts[-1] != r.num_frames - window:
                    starts.append(r.num_frames - window)
                self.index += [(c, s) for s in starts]

    def __len__(self) -> int:
        return len(self.index)

    def _clip_of(self, index: int) -> ClipReader:
        return self.readers[self.index[index][0]]

    def canonical(self, reader: ClipReader, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return canonical_landmarks(self.ctx, reader.landmarks[start:stop])

    def reference_landmarks(self, c: int, rng: np.random.Generator | None) -> tuple[int, np.ndarray]:
        """(clip index, canonical (N, 2)) of the reference for a window of clip ``c``: a frame of another clip of the
        same speaker (random in training, the first frame in evaluation). A subclass may choose another reference."""
        ref_c = self._other_clip(c, rng)
        ref_clip = self.readers[ref_c]
        ref_t = int(rng.integers(ref_clip.num_frames)) if rng is not None else 0
        return ref_c, self.canonical(ref_clip, ref_t, ref_t + 1)[0][0]

    def _item(self, index: int) -> dict:
        c, start = self.index[index]
        reader = self.readers[c]
        rng = self._rng()
        w = self.window
        if start < 0:
            start = int(rng.integers(0, reader.num_frames - w + 1))
        audio = clip_windows(self._features(c), start, start + w, num_frames=reader.num_frames,
                             steps_per_frame=self.extractor.steps_per_frame, context=self.context)  # (W, K, D)
        landmarks, to_image = self.canonical(reader, start, start + w)
        ref_c, ref = self.reference_landmarks(c, rng)
        return {
            "audio": audio.contiguous(),
            "landmarks": torch.from_numpy(landmarks),
            "ref_landmarks": torch.from_numpy(ref),
            "to_image": torch.from_numpy(to_image),
            **self._labels(reader),
            "clip": torch.tensor(c, dtype=torch.long),
            "ref_clip": torch.tensor(ref_c, dtype=torch.long),  # which clips a bad batch came from
            "start": torch.tensor(start, dtype=torch.long),
        }


class FrameDataset(_ClipDataset):
    """Stage-2 samples: a target frame, its landmark image and audio window, a reference of the same identity, the
    masked target."""

    def __init__(self, ctx: DatasetContext, readers: list[ClipReader], *, train: bool, frames_per_clip: int,
                 reference_min_gap: int, landmark_sigma: float, feature: str = "logmel80", context: int = 2):
        super().__init__(ctx, readers, train=train, feature=feature)
        self.context = context
        self.gap = reference_min_gap
        self.sigma = landmark_sigma * ctx.resolution / 64.0
        if train:
            self.index = [(c, -1) for c in range(len(readers)) for _ in range(frames_per_clip)]
        else:
            self.index = [
                (c, int(t))
                for c, r in enumerate(readers)
                for t in np.linspace(0, r.num_frames - 1, min(frames_per_clip, r.num_frames)).round().astype(int)
            ]

    def __len__(self) -> int:
        return len(self.index)

    def _clip_of(self, index: int) -> ClipReader:
        return self.readers[self.index[index][0]]

    @staticmethod
    def to_tensor(frame: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 127.5 - 1.0

    def _frame(self, reader: ClipReader, t: int) -> torch.Tensor:
        """(3, H, H) in [-1, 1] at the working resolution."""
        frame = reader.frame(t)
        if frame.shape[1] != self.ctx.source_resolution:
            raise ClipError(reader.record.id, f"frames are {frame.shape[1]} px, dataset.json says "
                                              f"{self.ctx.source_resolution}")
        return self.to_tensor(resize_frames(frame, self.ctx.resolution))

    def _points(self, reader: ClipReader, t: int) -> np.ndarray:
        """(N, 2) crop pixels at the working resolution."""
        return np.asarray(reader.landmarks[t], dtype=np.float32) * np.float32(self.ctx.scale)

    def landmark_image(self, points: np.ndarray) -> torch.Tensor:
        pts = torch.from_numpy(np.asarray(points, dtype=np.float32)[self.ctx.point_index])
        return rasterize_landmarks(pts, regions=self.ctx.regions, size=self.ctx.resolution, sigma=self.sigma)

    def _reference(self, c: int, t: int, rng: np.random.Generator | None) -> tuple[int, int]:
        """(clip index, frame) of the reference: a far frame of the same clip, else a frame of another clip."""
        reader = self.readers[c]
        far = [s for s in range(reader.num_frames) if abs(s - t) >= self.gap]
        if far:
            return c, int(far[rng.integers(len(far))] if rng is not None else far[len(far) // 2])
        other = self._other_clip(c, rng)
        return other, int(rng.integers(self.readers[other].num_frames)) if rng is not None else 0

    def _item(self, index: int) -> dict:
        c, t = self.index[index]
        reader = self.readers[c]
        rng = self._rng()
        if t < 0:
            t = int(rng.integers(reader.num_frames))
        frame = self._frame(reader, t)
        points = self._points(reader, t)
        ref_c, ref_t = self._reference(c, t, rng)
        ref_reader = self.readers[ref_c]
        ref_points = self._points(ref_reader, ref_t)
        sparse = torch.from_numpy(self.ctx.topology.sparse(points) if points.shape[0] != 68 else points)
        mask = lower_face_mask(sparse, size=self.ctx.resolution)
        return {
            "frame": frame,
            "landmark_image": self.landmark_image(points),
            "ref_frame": self._frame(ref_reader, ref_t),
            "ref_landmark_image": self.landmark_image(ref_points),
            "masked_frame": frame * (1.0 - mask),
            "mask": mask,
            "landmarks": torch.from_numpy(points[self.ctx.point_index]),
            "audio": clip_windows(self._features(c), t, t + 1, num_frames=reader.num_frames,
                                  steps_per_frame=self.extractor.steps_per_frame, context=self.context)[0],
            **self._labels(reader),
            "clip": torch.tensor(c, dtype=torch.long),
            "ref_clip": torch.tensor(ref_c, dtype=torch.long),
            "index": torch.tensor(t, dtype=torch.long),
        }


class TalkingHeadDataModule(L.LightningDataModule):
    """One DataModule for SynthTalk, HDTF-style and MEAD-style processed datasets, for either stage."""

    def __init__(
        self,
        *,
        root: str | Path,
        stage: Stage,
        train_split: str = "train",
        val_split: str = "val",
        test_splits: list[str] | tuple[str, ...] = ("test", "test_seen"),
        identities: list[str] | tuple[str, ...] | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        window: int = 32,
        audio_feature: str = "logmel80",
        audio_context: int = 2,
        landmark_set: LandmarkSet = "dense",
        windows_per_clip: int = 4,
        reference_min_gap: int = 12,
        landmark_sigma: float = 0.75,
        frames_per_clip: int = 16,
        working_resolution: int | None = None,
    ):
        super().__init__()
        if stage not in ("a2l", "l2i"):
            raise ValueError(f"stage must be 'a2l' (stage 1) or 'l2i' (stage 2), got {stage!r}")
        if landmark_set not in ("dense", "68"):
            raise ValueError(f"landmark_set must be 'dense' or '68', got {landmark_set!r}")
        self.save_hyperparameters()
        from ..config import resolve_path

        self.root = resolve_path(root)
        self.stage = stage
        self.skipped: dict[str, str] = {}  # clip id -> reason
        self.datasets: dict[str, _ClipDataset] = {}
        self.ctx: DatasetContext | None = None

    # -- Lightning hooks ------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Compute the audio-feature cache once (rank 0 only, before the other ranks read it); both stages' samples
        carry audio windows."""
        from tqdm.auto import tqdm

        extractor = build_feature_extractor(self.hparams.audio_feature)
        records = self._records()
        for rec in tqdm(records, desc=f"audio features ({extractor.name})", unit="clip", leave=False):
            try:
                validate_clip(self.root, rec)
                cached_features(ClipReader(self.root, rec), extractor)
            except (ClipError, OSError, ValueError):
                continue  # reported by setup()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        records = self._records()
        self.ctx = load_context(self.root, self.hparams.landmark_set, records)
        self._set_working_resolution()
        splits = [self.hparams.train_split, self.hparams.val_split, *self.hparams.test_splits]
        readers: dict[str, list[ClipReader]] = {s: [] for s in splits}
        min_frames = self.hparams.window if self.stage == "a2l" else 1
        for rec in records:
            if rec.split not in readers:
                continue
            try:
                meta = validate_clip(self.root, rec, num_landmarks=self.ctx.topology.num_points)
                if rec.num_frames < min_frames:
                    raise ClipError(rec.id, f"{rec.num_frames} frames is shorter than the window ({min_frames})")
            except ClipError as err:
                self.skipped[rec.id] = err.problem
                warnings.warn(f"skipping {err}", RuntimeWarning, stacklevel=2)
                continue
            readers[rec.split].append(ClipReader(self.root, rec, meta))
        if self.skipped:
            log.warning("skipped %d invalid clip(s) of %d in %s", len(self.skipped), len(records), self.root)
        for split, split_readers in readers.items():
            if split_readers:
                self.datasets[split] = self._make_dataset(split_readers, train=split == self.hparams.train_split)

    def _set_working_resolution(self) -> None:
        """Stage 2 works at ``working_resolution`` whatever the dataset's (frames and landmarks resized in the samples,
        said once); stage 1 never sees pixels, and its LMD stays in the dataset's pixels."""
        wanted, have = self.hparams.working_resolution, self.ctx.resolution
        if self.stage != "l2i" or not wanted or wanted == have:
            return
        self.ctx.resolution = int(wanted)
        how = ("downsampled" if wanted < have else
               "UPSAMPLED (the model works at more pixels than the data has; set data.working_resolution to the data's "
               f"own, {have}, with a UNet whose attention_resolutions fit it, to train at the data's resolution)")
        log.warning("%s: %d px frames are %s to the working resolution %d px (data.working_resolution)", self.root, have,
                    how, wanted)

    def _records(self) -> list[ClipRecord]:
        return self._index()

    def _index(self) -> list[ClipRecord]:
        """The dataset's clip records, of ``identities`` only when set (a ConfigError names the ones there are)."""
        records = read_index(self.root)
        wanted = self.hparams.identities
        if wanted is None:
            return records
        from ..config import ConfigError

        have = sorted({r.identity for r in records})
        unknown = sorted(set(wanted) - set(have))
        if unknown or not wanted:
            raise ConfigError(f"data.identities={list(wanted)}: {'no identity named' if unknown else 'empty list'} "
                              f"{', '.join(unknown)} in {self.root}; it has {', '.join(have)} (null: all of them)")
        return [r for r in records if r.identity in set(wanted)]

    def _make_dataset(self, readers: list[ClipReader], *, train: bool) -> _ClipDataset:
        h = self.hparams
        if self.stage == "a2l":
            return LandmarkWindowDataset(self.ctx, readers, window=h.window, feature=h.audio_feature,
                                         context=h.audio_context, train=train, windows_per_clip=h.windows_per_clip)
        return FrameDataset(self.ctx, readers, train=train, frames_per_clip=h.frames_per_clip,
                            reference_min_gap=h.reference_min_gap, landmark_sigma=h.landmark_sigma,
                            feature=h.audio_feature, context=h.audio_context)

    def _split(self, name: str) -> _ClipDataset:
        from ..config import ConfigError

        if name not in self.datasets:
            have = sorted(self.datasets)
            skipped = f"; {len(self.skipped)} invalid clip(s) skipped" if self.skipped else ""
            raise ConfigError(f"data.root={self.root}: split {name!r} has no usable clips (splits with clips: {have}"
                              f"{skipped}); preprocess more videos or set data.{self._split_key(name)}")
        return self.datasets[name]

    def require_splits(self, *names: str) -> None:
        """Fail now, with the split and the dataset named, if any of ``names`` has no usable clip."""
        for name in names:
            self._split(name)

    def _split_key(self, name: str) -> str:
        h = self.hparams
        return "train_split" if name == h.train_split else "val_split" if name == h.val_split else "test_splits"

    def _loader(self, dataset: Dataset, *, train: bool) -> DataLoader:
        h = self.hparams
        return DataLoader(
            dataset,
            batch_size=h.batch_size,
            shuffle=train,
            drop_last=train and len(dataset) >= h.batch_size,  # fixed batch shapes in training
            num_workers=h.num_workers,
            pin_memory=h.pin_memory,
            persistent_workers=h.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._split(self.hparams.train_split), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._split(self.hparams.val_split), train=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self._split(s), train=False) for s in self.hparams.test_splits if s in self.datasets]

    # -- conveniences for models and tools -----------------------------------------------------------------------

    def describe(self) -> dict:
        """What a trained model must remember about its data to be used on new inputs (saved in checkpoints):
        the landmark topology and subset it saw, the canonical template, resolution and landmark-image blur."""
        assert self.ctx is not None, "call setup() first"
        h = self.hparams
        return {
            "root": str(self.root),
            "landmark_topology": self.ctx.topology.to_json(),
            "landmark_set": h.landmark_set,
            "point_index": [int(i) for i in self.ctx.point_index],
            "canonical_template68": np.asarray(self.ctx.template68).round(6).tolist(),
            "resolution": self.ctx.resolution,
            "source_resolution": self.ctx.source_resolution,
            "landmark_sigma": float(h.landmark_sigma),
            "audio_feature": h.audio_feature,
            "audio_context": int(h.audio_context),
            "identities": None if h.identities is None else sorted(h.identities),  # one: person-specific
        }

    @property
    def num_landmarks(self) -> int:
        assert self.ctx is not None, "call setup() first"
        return len(self.ctx.point_index)

    @property
    def audio_shape(self) -> tuple[int, int]:
        """(K, D) of one frame's audio window."""
        return window_shape(build_feature_extractor(self.hparams.audio_feature), context=self.hparams.audio_context)
