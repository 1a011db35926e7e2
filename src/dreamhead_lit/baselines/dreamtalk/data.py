"""DreamTalk's training samples, built on the stage-1 dataset (:class:`LandmarkWindowDataset`) and DataModule.

A sample is a group of ``window`` consecutive frames of one clip: the frame-wise denoiser treats them as independent
frames (they share only a diffusion timestep and a style clip, as DreamTalk's 64-frame training sequences do), and
a later lip expert can score their mouth motion as a sequence. With W = window, S = style_frames, N landmarks:

    audio                float32 (W, K, D)   each frame's audio window, as stage 1 cuts it
    landmarks            float32 (W, N, 2)   canonical landmarks of the frames (the motion target)
    ref_landmarks        float32 (N, 2)      the speaker's neutral reference (see below)
    to_image             float32 (W, 2, 3)   canonical -> crop pixels (for pixel-space LMD)
    style_landmarks      float32 (S, N, 2)   canonical landmarks of the style reference clip, zero-padded
    style_ref_landmarks  float32 (N, 2)      the style clip speaker's neutral reference
    style_mask           bool    (S,)        True on the style clip's real frames
    style_same_clip      bool    ()          the style window came from the target's own clip (see below)
    emotion, intensity, identity, clip, style_clip, start   int64 ()

**Reference ("neutral") landmarks**: DreamTalk's expression is absolute (a 3DMM separates it from identity) and its
denoiser never sees the portrait, so a displacement from an arbitrary frame would put that frame's expression into
every target as an offset the model cannot know. Each identity therefore has one fixed reference: the *medoid* frame
(closest to the per-point median) of its neutral-emotion clips (all its clips when it has none), taken from the train
split for identities that have train clips and from the split's own clips otherwise. It is a real frame, as the
portrait given at generation is.

**Style clip in training**: a window of ``style_frames`` frames of *another clip of the same identity and emotion*
(DreamTalk learns a speaking style that is the speaker's and the emotion's, not the clip's); when the identity has no
other clip of that emotion (most MEAD-like combinations on a small dataset) a window of the target's own clip, placed
so it does not overlap the target frames where the clip is long enough; ``style_same_clip`` marks those samples.
Evaluation takes the first such clip and its first window, so validation figures compare across runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from ...config import ConfigError, DataConfig, to_container
from ...data.clip import ClipReader
from ...data.datamodule import DatasetContext, LandmarkWindowDataset, TalkingHeadDataModule
from ...data.landmarks import canonical_template68
from .motion import NOSE_TIP_68, face_parts


@dataclass
class DreamTalkDataConfig(DataConfig):
    """The stage-1 data options (``window`` = frames of a training group) plus the style reference clip's."""

    style_frames: int = 64  # frames of the style reference clip (DreamTalk: up to 256)
    reference_max_frames: int = 2000  # frames read per identity to choose its neutral reference (evenly spaced)


def medoid_frame(frames: np.ndarray) -> np.ndarray:
    """The frame (N, 2) of ``frames`` (F, N, 2) closest (mean point distance) to their per-point median."""
    median = np.median(frames, axis=0)
    return frames[np.linalg.norm(frames - median, axis=-1).mean(-1).argmin()]


class StyleClipDataset(LandmarkWindowDataset):
    """Stage-1 windows (``LandmarkWindowDataset``) with each identity's neutral reference and a style clip."""

    def __init__(self, ctx: DatasetContext, readers: list[ClipReader], *, references: dict[str, np.ndarray],
                 style_frames: int, **windows) -> None:
        super().__init__(ctx, readers, **windows)
        self.references = references  # identity -> canonical (N, 2); shared by the DataModule's splits
        self.style_frames = style_frames
        self.by_style: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(readers):
            self.by_style.setdefault((r.record.identity, r.record.emotion), []).append(i)

    def add_references(self, max_frames: int) -> None:
        """Choose the neutral reference of each identity of this split that has none yet (see the module doc)."""
        for identity, clips in self.by_identity.items():
            if identity in self.references:
                continue
            neutral = [c for c in clips if self.readers[c].record.emotion == "neutral"] or clips
            total = sum(self.readers[c].num_frames for c in neutral)
            stride = max(1, -(-total // max_frames))
            frames = np.concatenate([self.canonical(self.readers[c], 0, self.readers[c].num_frames)[0][::stride]
                                     for c in neutral])
            self.references[identity] = medoid_frame(frames)

    def reference_landmarks(self, c: int, rng: np.random.Generator | None) -> tuple[int, np.ndarray]:
        return -1, self.references[self.readers[c].record.identity]  # -1: not a clip of this split

    def clip_displacements(self, c: int) -> np.ndarray:
        """(T, N, 2) canonical landmarks of clip ``c`` minus its speaker's reference: the motion of every frame."""
        reader = self.readers[c]
        return self.canonical(reader, 0, reader.num_frames)[0] - self.references[reader.record.identity]

    def _style_window(self, c: int, target: tuple[int, int], rng: np.random.Generator | None) -> dict:
        rec = self.readers[c].record
        others = [i for i in self.by_style[(rec.identity, rec.emotion)] if i != c]
        style_c = (others[rng.integers(len(others))] if rng is not None else others[0]) if others else c
        reader = self.readers[style_c]
        n, s = reader.num_frames, self.style_frames
        starts = list(range(max(1, n - s + 1)))
        if style_c == c:  # keep the target frames out of the style window when the clip is long enough
            starts = [t for t in starts if t + s <= target[0] or t >= target[1]] or starts
        start = int(starts[rng.integers(len(starts))] if rng is not None else starts[0])
        landmarks = np.zeros((s, self.ctx.point_index.size, 2), dtype=np.float32)
        got = self.canonical(reader, start, min(n, start + s))[0]
        landmarks[: len(got)] = got
        return {
            "style_landmarks": torch.from_numpy(landmarks),
            "style_ref_landmarks": torch.from_numpy(self.references[rec.identity]),
            "style_mask": torch.arange(s) < len(got),
            "style_same_clip": torch.tensor(style_c == c),
            "style_clip": torch.tensor(style_c, dtype=torch.long),
        }

    def _item(self, index: int) -> dict:
        item = super()._item(index)
        c, start = int(item["clip"]), int(item["start"])
        return {**item, **self._style_window(c, (start, start + self.window), self._rng())}


class DreamTalkDataModule(TalkingHeadDataModule):
    """:class:`TalkingHeadDataModule` (stage-1 windows) serving :class:`StyleClipDataset` samples, and the train
    split's motion for fitting the motion basis."""

    dataset_class: type[StyleClipDataset] = StyleClipDataset  # a subclass may serve richer samples (style predictor)

    def __init__(self, *, style_frames: int = 64, reference_max_frames: int = 2000, **data) -> None:
        super().__init__(stage="a2l", **data)
        if style_frames < 1 or reference_max_frames < 1:
            raise ConfigError(f"data.style_frames={style_frames} and data.reference_max_frames={reference_max_frames}:"
                              " both must be at least 1")
        self.style_frames = int(style_frames)
        self.reference_max_frames = int(reference_max_frames)
        self.references: dict[str, np.ndarray] = {}

    def _make_dataset(self, readers: list[ClipReader], *, train: bool) -> StyleClipDataset:
        # setup() makes the train split first, so identities with train clips take their reference from them
        h = self.hparams
        dataset = self.dataset_class(self.ctx, readers, references=self.references, style_frames=self.style_frames,
                                     window=h.window, feature=h.audio_feature, context=h.audio_context, train=train,
                                     windows_per_clip=h.windows_per_clip)
        dataset.add_references(self.reference_max_frames)
        return dataset

    def train_displacements(self):
        """Every train clip's motion (T, N, 2), in the index's order (what the motion basis is fitted on)."""
        train = self._split(self.hparams.train_split)
        return (train.clip_displacements(c) for c in range(len(train.readers)))

    def face_parts(self) -> tuple[list[int], list[int]]:
        """(lower, upper) indices of the model's points (``motion.face_parts``) from the train identities' mean
        neutral shape; the nose tip is dlib point 33 of the dataset's topology."""
        train = self._split(self.hparams.train_split)
        mean = np.mean([self.references[i] for i in train.by_identity], axis=0)  # (N, 2)
        point_index = list(self.ctx.point_index)
        nose = self.ctx.topology.index68[NOSE_TIP_68]
        nose_y = mean[point_index.index(nose), 1] if nose in point_index else canonical_template68()[NOSE_TIP_68, 1]
        return face_parts(mean, self.ctx.regions.numpy(), float(nose_y))


def dreamtalk_datamodule(cfg: DictConfig, *, cls: type[DreamTalkDataModule] = DreamTalkDataModule
                         ) -> DreamTalkDataModule:
    """The registry's ``datamodule`` hook: the run config's ``data`` section, set up for fitting (``cls``: a
    subclass serving richer samples)."""
    dm = cls(**to_container(cfg.data))
    dm.prepare_data()
    dm.setup("fit")
    dm.require_splits(cfg.data.train_split, cfg.data.val_split)
    return dm


__all__ = ["DreamTalkDataConfig", "DreamTalkDataModule", "StyleClipDataset", "dreamtalk_datamodule", "medoid_frame"]
