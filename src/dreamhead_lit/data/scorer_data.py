"""What the dataset-trained scorers train and validate on: their datasets and DataModules.

- The landmarker (:class:`LandmarkerDataModule`) trains on frames of the train split with their exact
  ``landmarks68.npy`` (:class:`LandmarkFrames`) and validates on **held-out identities**: the last ``val_identities``
  identities of the train split (sorted), never trained on, every ``val_frame_stride``-th frame.
- The sync expert (:class:`SyncExpertDataModule`) trains on groups of windows of one clip (:class:`SyncWindows`), cut
  exactly as :class:`~dreamhead_lit.metrics.sync.SyncNetExpert` cuts them at evaluation (frames ``i .. i+4`` with MFCC
  steps ``4i .. 4i+19``), and validates on whole clips of the val split (:class:`HeldOutClips`).
- The emotion classifier (:class:`EmotionDataModule`) trains on random windows of the train split's ground-truth
  ``landmarks68`` with each clip's emotion label (:class:`EmotionWindows`) and validates per whole clip on the **val
  split** (:class:`EmotionClips`), not on held-out identities: an emotion has few clips per identity (demo SynthTalk's
  train split has one to seven clips of each emotion but neutral), so holding out an identity would take whole
  emotions out of training; the identity-disjoint figure is the test split's, reported when training ends.

``landmarker_datamodule(cfg)`` / ``sync_expert_datamodule(cfg)`` / ``emotion_datamodule(cfg)`` build them from a run
config, set up for fitting (the registry's ``datamodule`` hooks).
"""
from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..config import ConfigError, resolve_path
from ..models.emotion import emotion_input, emotion_label
from ..models.sync_expert import SyncCrop, check_crop, sync_video_input
from ..models.syncnet import MFCC_STEPS_PER_FRAME, MFCC_WINDOW_STEPS, SYNCNET_WINDOW_FRAMES, syncnet_mfcc
from .audio import SAMPLES_PER_FRAME
from .clip import ClipError, ClipReader, ClipRecord, read_dataset_info, read_index, validate_clip

__all__ = ["EmotionClips", "EmotionDataModule", "EmotionWindows", "HeldOutClips", "LandmarkFrames",
           "LandmarkerDataModule", "SyncExpertDataModule", "SyncWindows", "clip_readers", "emotion_datamodule",
           "emotion_problem", "labelled_readers", "landmarker_datamodule", "sync_expert_datamodule"]


def clip_readers(root: Path, split: str) -> list[ClipReader]:
    """Valid clips of one split (invalid ones are skipped with the reason printed)."""
    readers = []
    for rec in read_index(root):
        if rec.split != split:
            continue
        try:
            meta = validate_clip(root, rec)
        except ClipError as err:
            print(f"skipping {err}", file=sys.stderr)
            continue
        readers.append(ClipReader(root, rec, meta))
    return readers


class LandmarkFrames(Dataset):
    """``(image (3, H, W) float [0, 1], landmarks68 (68, 2) float32 pixels)`` for frames of the given clips."""

    def __init__(self, readers: list[ClipReader], *, stride: int = 1) -> None:
        if not readers:
            raise ValueError("no clips to take landmarker frames from")
        self.readers = readers
        self.index = [(c, t) for c, r in enumerate(readers) for t in range(0, r.num_frames, stride)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        c, t = self.index[i]
        r = self.readers[c]
        image = torch.from_numpy(r.frame(t)).permute(2, 0, 1).float() / 255.0
        return {"image": image, "landmarks": torch.from_numpy(np.array(r.landmarks68[t], dtype=np.float32))}


class SyncWindows(Dataset):
    """Training windows in groups of ``group`` from one clip, at most ``max_shift`` frames apart (so each is a shifted
    -- hard -- negative for the others, within the offset range the LSE searches); ``windows_per_clip`` windows per
    clip make an epoch. An item holds ``video (G, 3, 5, h, w)``, the aligned MFCC windows ``audio (G, 1, 13, 20)`` and
    ``clip``/``position (G,)`` (to mask pairs that overlap)."""

    def __init__(self, readers: list[ClipReader], *, input_size: int, crop: SyncCrop, group: int = 4,
                 max_shift: int = 15, windows_per_clip: int = 16) -> None:
        self.readers = [r for r in readers if r.num_frames >= SYNCNET_WINDOW_FRAMES + 2]
        if not self.readers:
            raise ValueError("no clips (of at least 7 frames) to train the sync expert on")
        self.input_size, self.crop = input_size, crop
        self.group, self.max_shift, self.windows_per_clip = group, max_shift, windows_per_clip
        self._cache: dict[int, tuple[Tensor, Tensor, int]] = {}

    def __len__(self) -> int:
        return max(1, len(self.readers) * self.windows_per_clip // self.group)

    def clip(self, c: int) -> tuple[Tensor, Tensor, int]:
        """(video input (T, 3, h, w), MFCC (13, steps), window positions) of clip ``c``, prepared once. Positions are
        counted as the evaluation counts them: ``min(T, samples // 640) - 5``."""
        if c not in self._cache:
            r = self.readers[c]
            audio = r.audio()
            video = sync_video_input(np.array(r.frames()), input_size=self.input_size, crop=self.crop)
            n = min(len(video), len(audio) // SAMPLES_PER_FRAME) - SYNCNET_WINDOW_FRAMES
            self._cache[c] = (video, torch.from_numpy(syncnet_mfcc(audio)), n)
        return self._cache[c]

    def __getitem__(self, idx: int) -> dict[str, Tensor]:
        c = idx % len(self.readers)
        video, cc, n = self.clip(c)
        anchor = int(torch.randint(0, n, ()))
        lo, hi = max(0, anchor - self.max_shift), min(n - 1, anchor + self.max_shift)
        span = torch.arange(lo, hi + 1)
        g = self.group
        pick = torch.randperm(len(span))[:g] if len(span) >= g else torch.randint(0, len(span), (g,))
        positions = span[pick]
        step = MFCC_STEPS_PER_FRAME  # windows cut as SyncNetExpert.embed cuts them: frames i..i+4, MFCC 4i..4i+19
        return {
            "video": torch.stack([video[i : i + SYNCNET_WINDOW_FRAMES].transpose(0, 1) for i in positions.tolist()]),
            "audio": torch.stack([cc[:, i * step : i * step + MFCC_WINDOW_STEPS] for i in positions.tolist()])[:, None],
            "clip": torch.full((g,), c),
            "position": positions,
        }


class HeldOutClips(Dataset):
    """Whole clips ``(frames (T, H, W, 3) uint8, audio (S,) float32)`` for the offset-accuracy validation."""

    def __init__(self, readers: list[ClipReader]) -> None:
        self.readers = readers

    def __len__(self) -> int:
        return len(self.readers)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        r = self.readers[i]
        return np.asarray(r.frames()), r.audio()

    def clips(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self[i] for i in range(len(self))]


def emotion_problem(records: list[ClipRecord], where: str) -> str | None:
    """Why ``records`` cannot train or test an emotion score -- fewer than two of MEAD's emotions among their labels --
    or None. ``where`` names them ("the train split of data/mine")."""
    found = sorted({r.emotion for r in records if emotion_label(r.emotion) is not None})
    if len(found) >= 2:
        return None
    what = (f"a single emotion ({found[0]!r}) on all its {len(records)} clips" if found
            else f"no clip labelled with one of MEAD's emotions ({len(records)} clips)")
    return (f"{where} has {what}: an emotion score needs clips of at least two emotions (plain videos and HDTF carry "
            "no emotion label, so every clip of theirs is 'neutral'; MEAD has eight)")


class EmotionClips(Dataset):
    """Whole clips ``(landmarks (T, 68, 2), label)`` of labelled readers: the ground-truth ``landmarks68`` as the
    classifier takes them (:func:`~dreamhead_lit.models.emotion.emotion_input`, prepared once per clip) and the index
    of the clip's emotion."""

    def __init__(self, readers: list[ClipReader]) -> None:
        self.readers = readers
        self._cache: dict[int, tuple[Tensor, int]] = {}

    def __len__(self) -> int:
        return len(self.readers)

    def __getitem__(self, c: int) -> tuple[Tensor, int]:
        if c not in self._cache:
            r = self.readers[c]
            label = emotion_label(r.record.emotion)
            if label is None:
                raise ValueError(f"clip {r.record.id!r}: emotion {r.record.emotion!r} is not one of MEAD's")
            self._cache[c] = (emotion_input(np.asarray(r.landmarks68[: r.num_frames])), label)
        return self._cache[c]


class EmotionWindows(EmotionClips):
    """Training windows: ``windows_per_clip`` random windows of ``window`` frames from each clip an epoch, as
    ``{"landmarks": (window, 68, 2), "label": ()}``. Clips shorter than a window are left out."""

    def __init__(self, readers: list[ClipReader], *, window: int, windows_per_clip: int) -> None:
        super().__init__([r for r in readers if r.num_frames >= window])
        if not self.readers:
            raise ConfigError(f"no clip of at least {window} frames to train the emotion classifier on "
                              "(override window=N with a shorter one)")
        self.window, self.windows_per_clip = int(window), int(windows_per_clip)

    def __len__(self) -> int:
        return len(self.readers) * self.windows_per_clip

    def __getitem__(self, idx: int) -> dict[str, Tensor]:  # type: ignore[override]
        x, label = super().__getitem__(idx % len(self.readers))
        start = int(torch.randint(0, len(x) - self.window + 1, ()))
        return {"landmarks": x[start : start + self.window], "label": torch.tensor(label)}


def labelled_readers(readers: list[ClipReader], where: str) -> list[ClipReader]:
    """The readers whose emotion is one of MEAD's (the others are skipped, with a note naming how many)."""
    keep = [r for r in readers if emotion_label(r.record.emotion) is not None]
    if len(keep) < len(readers):
        print(f"note: {len(readers) - len(keep)} clip(s) of {where} have no MEAD emotion label; left out of the "
              "emotion classifier's data", file=sys.stderr)
    return keep


def _whole_clips(batch: list) -> tuple[np.ndarray, np.ndarray]:
    return batch[0]  # batch_size=1: one clip, unstacked (clips differ in length)


class _ScorerData(L.LightningDataModule):
    """A processed dataset's splits, read once (Lightning calls ``setup`` again inside ``fit``)."""

    def __init__(self, *, root: str | Path, train_split: str = "train", val_split: str = "val",
                 test_splits: list[str] | tuple[str, ...] = ("test", "test_seen"), batch_size: int = 32,
                 num_workers: int = 0) -> None:
        super().__init__()
        self.root = resolve_path(root)
        self.train_split, self.val_split, self.test_splits = train_split, val_split, list(test_splits)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self._ready = False

    def setup(self, stage: str | None = None) -> None:
        if not self._ready:
            self._read()
            self._ready = True

    def _read(self) -> None:
        raise NotImplementedError

    def test_readers(self) -> list[ClipReader]:
        """The test splits' clips (reported for information, never used to select a checkpoint)."""
        return [r for s in self.test_splits for r in clip_readers(self.root, s)]


class LandmarkerDataModule(_ScorerData):
    """Frames of the train split's identities but the last ``val_identities`` (shuffled, whole batches) for training;
    every ``val_frame_stride``-th frame of those held-out identities for validation."""

    def __init__(self, *, val_identities: int = 1, val_frame_stride: int = 5, **data) -> None:
        super().__init__(**data)
        self.val_identities, self.val_frame_stride = int(val_identities), int(val_frame_stride)

    def _read(self) -> None:
        self.resolution = int(read_dataset_info(self.root)["resolution"])
        train = clip_readers(self.root, self.train_split)
        identities = sorted({r.record.identity for r in train})
        k = self.val_identities
        if not 0 < k < len(identities):
            raise ConfigError(f"val_identities={k}: the train split of {self.root} has {len(identities)} identities; "
                              "hold out at least 1 and keep at least 1 for training")
        self.held_out = sorted(identities[-k:])
        self.fit_readers = [r for r in train if r.record.identity not in self.held_out]
        self.val_readers = [r for r in train if r.record.identity in self.held_out]

    def train_dataloader(self) -> DataLoader:
        workers = self.num_workers
        return DataLoader(LandmarkFrames(self.fit_readers), batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=workers, persistent_workers=workers > 0)

    def val_dataloader(self) -> DataLoader:
        frames = LandmarkFrames(self.val_readers, stride=self.val_frame_stride)
        return DataLoader(frames, batch_size=self.batch_size * 2, num_workers=0)


class SyncExpertDataModule(_ScorerData):
    """:class:`SyncWindows` of the train split, ``batch_size // group`` groups a batch (``batch_size`` counts windows);
    whole clips of the val split, one at a time, for the offset accuracy."""

    def __init__(self, *, input_size: int, crop: str, group: int, max_shift: int, windows_per_clip: int,
                 **data) -> None:
        super().__init__(**data)
        self.crop = check_crop(crop)
        self.input_size = int(input_size)
        self.group, self.max_shift, self.windows_per_clip = int(group), int(max_shift), int(windows_per_clip)

    def _read(self) -> None:
        self.train_readers = clip_readers(self.root, self.train_split)
        self.val_readers = clip_readers(self.root, self.val_split)
        if not self.val_readers:
            raise ConfigError(f"the sync expert validates on held-out clips: split {self.val_split!r} of {self.root} "
                              "is empty")
        self.windows = SyncWindows(self.train_readers, input_size=self.input_size, crop=self.crop, group=self.group,
                                   max_shift=self.max_shift, windows_per_clip=self.windows_per_clip)

    def train_dataloader(self) -> DataLoader:
        groups, workers = max(1, self.batch_size // self.group), self.num_workers
        return DataLoader(self.windows, batch_size=groups, shuffle=True, drop_last=len(self.windows) >= groups,
                          num_workers=workers, persistent_workers=workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(HeldOutClips(self.val_readers), batch_size=1, collate_fn=_whole_clips)


class EmotionDataModule(_ScorerData):
    """:class:`EmotionWindows` of the train split's labelled clips; whole labelled clips of the val split, one at a
    time, for the per-clip accuracy.

    Raises (at setup):
        ConfigError: the train split has fewer than two emotions (:func:`emotion_problem`), or the val split is empty.
    """

    def __init__(self, *, window: int, windows_per_clip: int, **data) -> None:
        super().__init__(**data)
        self.window, self.windows_per_clip = int(window), int(windows_per_clip)

    def _read(self) -> None:
        train = clip_readers(self.root, self.train_split)
        problem = emotion_problem([r.record for r in train], f"the train split of {self.root}")
        if problem:
            raise ConfigError(problem)
        self.train_readers = labelled_readers(train, f"the train split of {self.root}")
        self.val_readers = labelled_readers(clip_readers(self.root, self.val_split), f"the val split of {self.root}")
        if not self.val_readers:
            raise ConfigError(f"the emotion classifier validates on held-out clips: split {self.val_split!r} of "
                              f"{self.root} has no labelled clip")
        self.windows = EmotionWindows(self.train_readers, window=self.window, windows_per_clip=self.windows_per_clip)

    def train_dataloader(self) -> DataLoader:
        workers = self.num_workers
        return DataLoader(self.windows, batch_size=self.batch_size, shuffle=True,
                          drop_last=len(self.windows) >= self.batch_size, num_workers=workers,
                          persistent_workers=workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(EmotionClips(self.val_readers), batch_size=1)  # whole clips differ in length


def _data_args(cfg: DictConfig) -> dict:
    d = cfg.data
    return {"root": d.root, "train_split": d.train_split, "val_split": d.val_split, "test_splits": list(d.test_splits),
            "batch_size": d.batch_size, "num_workers": d.num_workers}


def landmarker_datamodule(cfg: DictConfig) -> LandmarkerDataModule:
    """The landmarker's DataModule as a run config (``LandmarkerConfig``) asks, set up for fitting."""
    dm = LandmarkerDataModule(**_data_args(cfg), val_identities=cfg.val_identities,
                              val_frame_stride=cfg.val_frame_stride)
    dm.setup("fit")
    return dm


def sync_expert_datamodule(cfg: DictConfig) -> SyncExpertDataModule:
    """The sync expert's DataModule as a run config (``SyncExpertConfig``) asks, set up for fitting."""
    m, loss = cfg.model, cfg.loss
    dm = SyncExpertDataModule(**_data_args(cfg), input_size=m.input_size, crop=m.crop, group=loss.group,
                              max_shift=loss.max_shift, windows_per_clip=loss.windows_per_clip)
    dm.setup("fit")
    return dm


def emotion_datamodule(cfg: DictConfig) -> EmotionDataModule:
    """The emotion classifier's DataModule as a run config (``EmotionConfig``) asks, set up for fitting."""
    dm = EmotionDataModule(**_data_args(cfg), window=cfg.window, windows_per_clip=cfg.windows_per_clip)
    dm.setup("fit")
    return dm
