"""Emotion accuracy: does a generated video show the clip's emotion, as a landmark emotion classifier reads it?

Per clip, the classifier (:class:`~dreamhead_lit.metrics.scorers.TrainedEmotionClassifier`, or anything with its
``predict``) reads the 68 landmarks a landmarker found on the generated frames; the clip scores 1 when the most probable
emotion is the clip's label (its ``emotion`` in ``index.jsonl``), else 0 -- also when no frame had a face. Two readings
of the ground truth over the same frames bound it: the classifier on the clip's ground-truth landmarks
(``emotion_acc_gt``: the classifier's own ceiling) and on the landmarker's points of the ground-truth frames
(``emotion_acc_gt_frames``: the most a method read through that landmarker can score; where the landmarker's error is
as large as the expressions' cues, this falls towards chance and the column cannot rank methods, see
:func:`near_chance`). Clips without one of MEAD's emotion labels count in none (``emotion_unlabelled``). Accuracies are
means over clips; chance is 1/8.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from ..data.clip import EMOTIONS
from ..models.emotion import emotion_label
from ._common import ReportMixin

__all__ = ["EmotionClassifier", "EmotionMetric", "near_chance", "predicted_emotion"]


class EmotionClassifier(Protocol):
    name: str

    def predict(self, landmarks68: np.ndarray) -> np.ndarray:
        """``(T, 68, 2)`` landmarks -> ``(len(EMOTIONS),)`` probabilities."""
        ...


def predicted_emotion(classifier: EmotionClassifier, landmarks68: np.ndarray) -> int | None:
    """The index of the most probable emotion on the frames that have landmarks; None when none has."""
    pts = np.asarray(landmarks68, dtype=np.float64)
    found = np.isfinite(pts).all(axis=(1, 2))
    if not found.any():
        return None
    return int(np.argmax(classifier.predict(pts[found])))


def near_chance(accuracy: float | None) -> bool:
    """Below twice chance (2/8): a reading of the ground truth this weak cannot tell methods apart."""
    return accuracy is not None and accuracy < 2 / len(EMOTIONS)


class EmotionMetric(ReportMixin, Metric):
    """Mean per-clip emotion accuracy; ``update(landmarks, emotion, truth=..., truth_read=...)`` per clip. DDP-safe
    sums.

    ``compute()`` returns the accuracy on the generated landmarks; :meth:`report` adds ``emotion_acc_gt`` (on the
    ground-truth landmarks), ``emotion_acc_gt_frames`` (on the landmarker's points of the ground-truth frames),
    ``emotion_clips`` and ``emotion_unlabelled``. :attr:`last_prediction` is the emotion read from the last clip's
    generated landmarks ("" when unlabelled or no face).
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    correct: Tensor
    correct_gt: Tensor
    correct_gt_frames: Tensor
    clips: Tensor
    unlabelled: Tensor
    correct_motion: Tensor
    clips_motion: Tensor

    def __init__(self, classifier: EmotionClassifier, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier
        self.last_prediction = ""
        for name in ("correct", "correct_gt", "correct_gt_frames", "clips", "unlabelled", "correct_motion",
                     "clips_motion"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, landmarks68: np.ndarray, emotion: str, *, truth: np.ndarray, truth_read: np.ndarray,
               motion: np.ndarray | None = None) -> None:
        """Add one clip: the landmarks found on its generated frames ``(T, 68, 2)`` (NaN rows where no face was found),
        its emotion label, and for the same frames its ground-truth landmarks (``truth``) and the landmarks the same
        landmarker found on the ground-truth frames (``truth_read``); ``motion``: the landmarks the method itself
        generated and rendered ``(T, 68, 2)`` pixels, when it makes landmarks (``emotion_acc_lm``: the motion model's
        emotion with no renderer and no landmarker in between)."""
        label = emotion_label(emotion)
        self.last_prediction = ""
        if label is None:
            self.unlabelled = self.unlabelled + 1
            return
        pred = predicted_emotion(self.classifier, landmarks68)
        self.last_prediction = EMOTIONS[pred] if pred is not None else ""
        self.correct = self.correct + int(pred == label)
        self.correct_gt = self.correct_gt + int(predicted_emotion(self.classifier, truth) == label)
        self.correct_gt_frames = self.correct_gt_frames + int(predicted_emotion(self.classifier, truth_read) == label)
        self.clips = self.clips + 1
        if motion is not None:
            self.correct_motion = self.correct_motion + int(predicted_emotion(self.classifier, motion) == label)
            self.clips_motion = self.clips_motion + 1

    def _accuracy(self, hits: Tensor) -> float:
        n = int(self.clips)
        if n == 0:
            raise ValueError(f"EmotionMetric: no clip with an emotion label was added ({int(self.unlabelled)} without)")
        return int(hits) / n

    def compute(self) -> Tensor:
        return torch.tensor(self._accuracy(self.correct), dtype=torch.float64)

    def _report_values(self) -> dict[str, float | int | str]:
        return {"emotion_acc": self._accuracy(self.correct), "emotion_acc_gt": self._accuracy(self.correct_gt),
                "emotion_acc_gt_frames": self._accuracy(self.correct_gt_frames),
                "emotion_acc_lm": (int(self.correct_motion) / int(self.clips_motion) if int(self.clips_motion)
                                   else float("nan")),
                "emotion_clips": int(self.clips), "emotion_unlabelled": int(self.unlabelled),
                "emotion_classifier": self.classifier.name}
