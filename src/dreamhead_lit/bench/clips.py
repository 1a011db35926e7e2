"""The ground truth: the clips of the test splits a bench scores, read on first use."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..data.audio import SAMPLES_PER_FRAME
from ..data.clip import ClipReader, ClipRecord, read_dataset_info, read_index, validate_clip
from ..data.landmarks import LandmarkTopology
from .config import BenchError


class TestClip:
    """One ground-truth clip of a test split. Frames and audio are read on first use."""

    def __init__(self, root: Path, record: ClipRecord, meta: dict, *, topology: Any) -> None:
        self.root = root
        self.record = record
        self.reader = ClipReader(root, record, meta)
        self.topology = topology
        self._frames: np.ndarray | None = None
        self._audio: np.ndarray | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def split(self) -> str:
        return self.record.split

    @property
    def folder(self) -> Path:
        return self.reader.dir

    @property
    def fps(self) -> float:
        return float(self.record.fps)

    @property
    def frames(self) -> np.ndarray:
        """``(T, H, W, 3)`` uint8."""
        if self._frames is None:
            self._frames = np.array(self.reader.frames())
        return self._frames

    @property
    def audio(self) -> np.ndarray:
        """The clip's audio cut or zero-padded to exactly ``T`` frames of samples, so every method makes ``T`` frames."""
        if self._audio is None:
            a = self.reader.audio().astype(np.float32)
            n = self.record.num_frames * SAMPLES_PER_FRAME
            self._audio = a[:n] if len(a) >= n else np.concatenate([a, np.zeros(n - len(a), np.float32)])
        return self._audio

    @property
    def landmarks68(self) -> np.ndarray:
        """``(T, 68, 2)`` float64 ground-truth pixels."""
        return np.asarray(self.reader.landmarks68[: self.record.num_frames], dtype=np.float64)

    def release(self) -> None:
        self._frames = self._audio = None


def select_clips(root: Path, splits: list[str], max_clips: int | None,
                 max_frames: int | None = None, *, identities: list[str] | None = None) -> list[TestClip]:
    """The clips of ``splits`` (validated; sorted by split order then id) -- only those of ``identities`` when given --
    at most ``max_clips`` per split spread evenly over the split, each cut to its first ``max_frames`` frames."""
    info = read_dataset_info(root)
    topo = LandmarkTopology.from_json(info["landmark_topology"])
    records = read_index(root)
    clips: list[TestClip] = []
    present = [s for s in splits if any(r.split == s for r in records)]
    if not present:
        raise BenchError(f"none of the splits {splits} has clips in {root} (data.test_splits; the dataset has "
                         f"{sorted({r.split for r in records})})")
    of = ""
    if identities is not None:
        wanted = set(identities)
        there = sorted({r.identity for r in records if r.split in splits})
        records = [r for r in records if r.identity in wanted]
        present = [s for s in splits if any(r.split == s for r in records)]
        if not present:
            raise BenchError(f"no clip of identities {sorted(wanted)} in the splits {splits} of {root} (identities; "
                             f"those splits have {', '.join(there)})")
        absent = sorted(wanted - {r.identity for r in records if r.split in splits})
        if absent:
            print(f"note: identities {absent} have no clips in the splits {splits} of {root}", file=sys.stderr)
        of = f" of identities {sorted(wanted)}"
    for split in splits:
        recs = sorted((r for r in records if r.split == split), key=lambda r: r.id)
        if not recs:  # real data often has no seen-identity test split: score the splits that exist, say so
            print(f"note: split {split!r} has no clips{of} in {root}; scoring {present}", file=sys.stderr)
            continue
        if max_clips is not None and len(recs) > max_clips:
            recs = [recs[i] for i in np.linspace(0, len(recs) - 1, max_clips).round().astype(int)]
        for rec in recs:
            meta = validate_clip(root, rec)
            if max_frames is not None and rec.num_frames > max_frames:
                rec = dataclasses.replace(rec, num_frames=max_frames)  # TestClip reads num_frames frames and audio
            clips.append(TestClip(root, rec, meta, topology=topo))
    return clips
