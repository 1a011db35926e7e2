"""Landmark distance (LMD; Chen et al., ECCV 2018 "Lip movements generation at a glance", as the field uses it).

For a generated and a ground-truth video with 68 landmarks per frame (dlib / iBUG order):

* the evaluated point set -- the mouth points 48-67 for **M-LMD**, all 68 for **F-LMD** -- of each frame is centred
  on its own mean (this removes translation: a face drawn a few pixels to the side is not penalised);
* the frame's distance is the mean over points of the Euclidean (L2) distance between corresponding points;
* a video's LMD is the mean over its frames, and the reported LMD the mean over videos.

Units are stated in every result name:

* ``normalisation="pixels"``: pixels at the frames' ``resolution``, optionally rescaled to ``report_resolution``
  (``lmd_mouth_px@256`` is the distance in pixels of a 256x256 frame);
* ``normalisation="face_size"``: each frame's distance divided by the ground-truth inter-ocular distance (outer eye
  corners, points 36 and 45), so resolution and face scale cancel (``lmd_mouth_iod``).

**Jitter** (the temporal-smoothness figure reported beside LMD): the mean acceleration magnitude
``|x[t+1] - 2 x[t] + x[t-1]|`` of all 68 points (not centred: head motion is motion), in the LMD's unit per frame^2,
for the generated and for the ground-truth sequence; their ratio (``lmd_jitter_ratio``, 1 = as smooth as the ground
truth, above 1 = shakier) is what the tables show, because the natural amount of motion differs between datasets.

Frames without landmarks -- NaN rows in a landmark array, or frames where the landmarker found no face -- are
left out of their video's mean and counted (``lmd_missing_frames``); a video with no usable frame is counted
(``lmd_videos_without_landmarks``) and left out of the mean over videos. Nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from dreamhead_lit.data.landmarks import MOUTH
from dreamhead_lit.metrics._common import ReportMixin, uint8_frames
from dreamhead_lit.metrics.weights import DLIB_68, resolve_weights

__all__ = [
    "LMDNormalisation",
    "Landmarker",
    "LMDResult",
    "lmd_names",
    "lmd_per_frame",
    "landmark_jitter",
    "motion_spread",
    "MOTION_POINTS",
    "lmd_from_landmarks",
    "landmarks_from_frames",
    "lmd_from_frames",
    "DlibLandmarker",
    "dlib_landmarker",
    "LMDMetric",
]

LMDNormalisation = Literal["pixels", "face_size"]
# A landmarker maps one RGB uint8 frame (H, W, 3) to its 68 points (68, 2) in pixels, or None when it finds no face.
Landmarker = Callable[[np.ndarray], "np.ndarray | None"]
OUTER_EYE_CORNERS = (36, 45)
_MOUTH = list(MOUTH)


def _check_normalisation(normalisation: str) -> LMDNormalisation:
    if normalisation not in get_args(LMDNormalisation):
        raise ValueError(f"normalisation must be one of {get_args(LMDNormalisation)}, got {normalisation!r}")
    return normalisation  # type: ignore[return-value]


def lmd_names(*, normalisation: LMDNormalisation, report_resolution: int | None) -> tuple[str, str]:
    """The (mouth, face) result names, e.g. ``("lmd_mouth_px@256", "lmd_face_px@256")`` or ``(..._iod, ...)``."""
    if normalisation == "pixels":
        if report_resolution is None:
            raise ValueError("normalisation='pixels' needs the frame resolution (pixels), to state the unit")
        unit = f"px@{int(report_resolution)}"
    else:
        unit = "iod"
    return f"lmd_mouth_{unit}", f"lmd_face_{unit}"


def _as_landmarks(x: Any, *, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim != 3 or arr.shape[1:] != (68, 2):
        raise ValueError(f"{name}: expected landmarks (T, 68, 2), got shape {arr.shape}")
    return arr.astype(np.float64)


def landmark_jitter(seq: Tensor) -> Tensor:
    """Mean acceleration magnitude ``|x[t+1] - 2x[t] + x[t-1]|`` per point and frame: ``(..., T, N, 2) -> (...)``.

    Accelerations that involve a frame without landmarks (NaN) are left out; NaN when none is left (T < 3).
    """
    acc = seq[..., 2:, :, :] - 2 * seq[..., 1:-1, :, :] + seq[..., :-2, :, :]
    return torch.nanmean(acc.norm(dim=-1), dim=(-1, -2))


MOTION_POINTS = list(range(48))  # the 68-point set without the mouth (48-67): jaw, brows, nose, eyes


def motion_spread(samples: list[np.ndarray], points: list[int] = MOTION_POINTS) -> float:
    """How differently K samples of one clip move the head and eyes: at each frame, the standard deviation across the
    samples of each point's position (x and y), its root mean square over ``points`` (default: every point but the
    mouth's, so lip motion does not count), then the mean over frames; in the landmarks' pixels. ``samples``: K >= 2
    arrays ``(T, 68, 2)`` (NaN where a frame had no face: left out). 0 when every sample moves alike."""
    if len(samples) < 2:
        raise ValueError(f"motion_spread needs at least 2 samples, got {len(samples)}")
    t = min(len(s) for s in samples)
    x = np.stack([_as_landmarks(s[:t], name=f"sample {k}")[:, points] for k, s in enumerate(samples)])  # (K, T, P, 2)
    with np.errstate(invalid="ignore"):
        per_frame = np.sqrt(np.nanmean(np.nanvar(x, axis=0), axis=(1, 2)))  # (T,)
    per_frame = per_frame[np.isfinite(per_frame)]
    return float(per_frame.mean()) if len(per_frame) else float("nan")


def _frame_factor(target: np.ndarray, normalisation: LMDNormalisation, scale: float) -> np.ndarray:
    """Per-frame factor that turns pixel distances into the reported unit: ``scale`` or 1 / inter-ocular distance."""
    if normalisation == "pixels":
        return np.full(len(target), scale)
    iod = np.linalg.norm(target[:, OUTER_EYE_CORNERS[0]] - target[:, OUTER_EYE_CORNERS[1]], axis=-1)
    return 1.0 / np.where(iod > 0, iod, np.nan)  # a collapsed face has no size: treat the frame as missing


def lmd_per_frame(
    pred: np.ndarray | Tensor,
    target: np.ndarray | Tensor,
    *,
    normalisation: LMDNormalisation = "pixels",
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (mouth, face) distances ``(T,)`` each; NaN where either side has no landmarks.

    Args:
        pred, target: ``(T, 68, 2)`` landmarks in pixels (NaN rows for frames without landmarks).
        normalisation: ``"pixels"`` (times ``scale``) or ``"face_size"`` (divided by the target's inter-ocular
            distance).
        scale: factor applied to pixel distances (``report_resolution / resolution``).
    """
    _check_normalisation(normalisation)
    p, t = _as_landmarks(pred, name="pred"), _as_landmarks(target, name="target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target landmark sequences differ in length: {p.shape} vs {t.shape}")

    pt, tt = torch.from_numpy(p), torch.from_numpy(t)
    factor = _frame_factor(t, normalisation, scale)
    mouth, face = (centred_distance(pt, tt, idx).numpy() for idx in (_MOUTH, slice(None)))
    return mouth * factor, face * factor


def centred_distance(pred: Tensor, true: Tensor, points: list[int] | slice) -> Tensor:
    """Per frame: the point subset of each side centred on its own mean, then the mean L2 per point.
    ``(..., N, 2)`` -> ``(...)``; NaN stays NaN. The one LMD kernel, for the bench and for stage 1's validation."""
    p, t = pred[..., points, :], true[..., points, :]
    p = p - p.mean(-2, keepdim=True)
    t = t - t.mean(-2, keepdim=True)
    return (p - t).norm(dim=-1).mean(-1)


def landmark_distance(pred: Tensor, true: Tensor, points: list[int]) -> Tensor:
    """LMD per sequence (PAPERS.md: M-LMD points 48-67, F-LMD all 68): (B, T, N, 2) pixels -> (B,), the mean over
    frames of :func:`centred_distance`."""
    return centred_distance(pred, true, points).mean(-1)


def jitter_pair(
    pred: np.ndarray | Tensor, target: np.ndarray | Tensor, *, normalisation: LMDNormalisation = "pixels",
    scale: float = 1.0,
) -> tuple[float, float]:
    """(generated, ground-truth) :func:`landmark_jitter` of one video ``(T, 68, 2)`` in the LMD's unit."""
    p, t = _as_landmarks(pred, name="pred"), _as_landmarks(target, name="target")
    factor = torch.from_numpy(_frame_factor(t, normalisation, scale))[:, None, None]
    return tuple(float(landmark_jitter(torch.from_numpy(x) * factor)) for x in (p, t))  # type: ignore[return-value]


@dataclass(frozen=True)
class LMDResult:
    """LMD of one or more videos, with the counts that say how much of the input was measured."""

    mouth: float  # M-LMD, mean over videos of the per-video frame mean
    face: float  # F-LMD
    mouth_name: str  # e.g. "lmd_mouth_px@256"
    face_name: str
    videos: int  # videos that contributed
    frames: int  # frames that contributed
    missing_frames: int  # frames without landmarks on either side (left out)
    videos_without_landmarks: int = 0
    jitter: float = float("nan")  # generated sequence's landmark_jitter, in the LMD's unit per frame^2
    jitter_gt: float = float("nan")  # the ground truth's

    def as_dict(self) -> dict[str, float | int]:
        return {
            self.mouth_name: self.mouth,
            self.face_name: self.face,
            "lmd_jitter": self.jitter,
            "lmd_jitter_gt": self.jitter_gt,
            "lmd_videos": self.videos,
            "lmd_frames": self.frames,
            "lmd_missing_frames": self.missing_frames,
            "lmd_videos_without_landmarks": self.videos_without_landmarks,
        }


def _pixel_scale(normalisation: LMDNormalisation, resolution: int | None, report_resolution: int | None) -> tuple[float, int | None]:
    if normalisation == "face_size":
        return 1.0, None
    if resolution is None:
        raise ValueError("normalisation='pixels' needs resolution: the side (pixels) of the frames the landmarks are in")
    report = resolution if report_resolution is None else report_resolution
    return report / resolution, report


def lmd_from_landmarks(
    pred: np.ndarray | Tensor,
    target: np.ndarray | Tensor,
    *,
    normalisation: LMDNormalisation = "pixels",
    resolution: int | None = None,
    report_resolution: int | None = None,
) -> LMDResult:
    """LMD of one video from landmark sequences ``(T, 68, 2)`` (stage 1 output vs ground truth).

    Args:
        normalisation: ``"pixels"`` or ``"face_size"`` (see the module docstring).
        resolution: side in pixels of the frames the landmarks are measured in (needed for ``"pixels"``).
        report_resolution: report pixel distances at this resolution instead (scaled by
            ``report_resolution / resolution``), to compare methods that render at different sizes.
    """
    normalisation = _check_normalisation(normalisation)
    scale, report = _pixel_scale(normalisation, resolution, report_resolution)
    mouth_name, face_name = lmd_names(normalisation=normalisation, report_resolution=report)
    mouth, face = lmd_per_frame(pred, target, normalisation=normalisation, scale=scale)
    valid = np.isfinite(mouth) & np.isfinite(face)
    n = int(valid.sum())
    jitter, jitter_gt = jitter_pair(pred, target, normalisation=normalisation, scale=scale)
    return LMDResult(
        jitter=jitter,
        jitter_gt=jitter_gt,
        mouth=float(mouth[valid].mean()) if n else float("nan"),
        face=float(face[valid].mean()) if n else float("nan"),
        mouth_name=mouth_name,
        face_name=face_name,
        videos=1 if n else 0,
        frames=n,
        missing_frames=int(len(valid) - n),
        videos_without_landmarks=0 if n else 1,
    )


def landmarks_from_frames(frames: Any, *, landmarker: Landmarker) -> np.ndarray:
    """Run ``landmarker`` on every frame of ``(T, H, W, 3)``; ``(T, 68, 2)`` float64 with NaN rows where it failed."""
    clip = uint8_frames(frames, name="frames")
    clip = clip[None] if clip.ndim == 3 else clip
    out = np.full((len(clip), 68, 2), np.nan)
    for i, frame in enumerate(clip):
        pts = landmarker(frame)
        if pts is not None:
            pts = np.asarray(pts, dtype=np.float64)
            if pts.shape != (68, 2):
                raise ValueError(f"the landmarker returned shape {pts.shape} for frame {i}; it must return (68, 2) or None")
            out[i] = pts
    return out


def lmd_from_frames(
    pred_frames: Any,
    *,
    landmarker: Landmarker,
    target_frames: Any | None = None,
    target_landmarks: np.ndarray | Tensor | None = None,
    normalisation: LMDNormalisation = "pixels",
    resolution: int | None = None,
    report_resolution: int | None = None,
) -> LMDResult:
    """LMD of one video from generated frames ``(T, H, W, 3)`` uint8 RGB, as the field computes it.

    The ground truth is either frames (landmarked with the same ``landmarker``, the usual protocol) or exact
    landmarks ``(T, 68, 2)`` (e.g. SynthTalk's ``landmarks68.npy``). ``resolution`` defaults to the frame side
    (square frames). Frames where the landmarker finds no face are counted in ``missing_frames``.
    """
    if (target_frames is None) == (target_landmarks is None):
        raise ValueError("give exactly one of target_frames and target_landmarks")
    pred_lm = landmarks_from_frames(pred_frames, landmarker=landmarker)
    if target_frames is not None:
        target_lm = landmarks_from_frames(target_frames, landmarker=landmarker)
    else:
        target_lm = _as_landmarks(target_landmarks, name="target_landmarks")
    if resolution is None and normalisation == "pixels":
        h, w = uint8_frames(pred_frames, name="pred_frames").shape[-3:-1]
        if h != w:
            raise ValueError(f"frames are {h}x{w}, not square: pass resolution= to state the pixel unit")
        resolution = int(h)
    return lmd_from_landmarks(
        pred_lm, target_lm, normalisation=normalisation, resolution=resolution, report_resolution=report_resolution
    )


@lru_cache(maxsize=4)
def _dlib_68_models(predictor_path: str) -> tuple[Any, Any]:
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path)


class DlibLandmarker:
    """dlib HOG face detector + ``shape_predictor_68_face_landmarks.dat``; the largest face's 68 points, or None.

    Picklable (the dlib objects are built lazily in each process), so it can go to DDP workers.

    Args:
        predictor_path: the 68-point model; resolved (it ships with face_recognition_models) when None.
        upsample_num_times: dlib detector upsampling; 0 suits faces of 80 px and more (a 256 px face crop),
            1 finds faces down to about 40 px at 4x the cost.
    """

    def __init__(self, *, predictor_path: str | Path | None = None, upsample_num_times: int = 0) -> None:
        if predictor_path is None:
            predictor_path = resolve_weights(DLIB_68.filename, purpose="LMD (dlib 68 landmarks)", url_hint=DLIB_68.url)
        self.predictor_path = str(predictor_path)
        self.upsample_num_times = int(upsample_num_times)

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        img = uint8_frames(frame, name="frame")
        if img.ndim != 3:
            raise ValueError(f"the landmarker takes one frame (H, W, 3), got shape {img.shape}")
        detector, predictor = _dlib_68_models(self.predictor_path)
        faces = list(detector(img, self.upsample_num_times))
        if not faces:
            return None
        face = max(faces, key=lambda r: r.width() * r.height())
        shape = predictor(img, face)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # (68, 2)


def dlib_landmarker(*, upsample_num_times: int = 0) -> DlibLandmarker:
    """The field's LMD landmarker: dlib HOG detector + 68-point shape predictor, largest face per frame."""
    return DlibLandmarker(upsample_num_times=upsample_num_times)


class LMDMetric(ReportMixin, Metric):
    """M-LMD and F-LMD over videos (one video per ``update``), DDP-safe.

    Args:
        normalisation: ``"pixels"`` or ``"face_size"``.
        resolution: with ``"pixels"``, the frame side the results are stated at (``lmd_mouth_px@<resolution>``).
            Frames input is measured at its own side and rescaled to it; landmarks input is taken to be at
            ``resolution`` unless ``update(..., source_resolution=...)`` says otherwise.
        landmarker: needed when ``update`` gets frames; e.g. :func:`dlib_landmarker`.

    ``update(preds, target)``: each side is landmarks ``(T, 68, 2)`` (NaN rows = missing) or frames
    ``(T, H, W, 3)`` uint8 RGB (square). ``compute()`` returns ``{mouth_name: M-LMD, face_name: F-LMD}``;
    :meth:`report` adds the frame, missing-frame and video counts.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    mouth_sum: Tensor
    face_sum: Tensor
    jitter_sum: Tensor
    jitter_gt_sum: Tensor
    jitter_videos: Tensor
    videos: Tensor
    frames: Tensor
    missing_frames: Tensor
    videos_without_landmarks: Tensor

    def __init__(
        self,
        *,
        normalisation: LMDNormalisation = "pixels",
        resolution: int | None = None,
        landmarker: Landmarker | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.normalisation = _check_normalisation(normalisation)
        if normalisation == "pixels" and resolution is None:
            raise ValueError(
                "LMDMetric(normalisation='pixels') needs resolution: the frame side every video is reported at "
                "(e.g. 256 gives lmd_mouth_px@256)"
            )
        self.resolution = resolution
        self.landmarker = landmarker
        for name in ("mouth_sum", "face_sum", "jitter_sum", "jitter_gt_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("videos", "frames", "missing_frames", "videos_without_landmarks", "jitter_videos"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def names(self) -> tuple[str, str]:
        """The (mouth, face) result names, e.g. ``("lmd_mouth_px@256", "lmd_face_px@256")``."""
        return lmd_names(normalisation=self.normalisation, report_resolution=self.resolution)

    def _landmarks(self, x: Any, *, name: str) -> tuple[np.ndarray, int | None]:
        """(landmarks (T, 68, 2), the frame side they were measured at, or None for landmarks input)."""
        arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
        if arr.ndim == 3 and arr.shape[1:] == (68, 2):
            return arr.astype(np.float64), None
        if arr.ndim == 4 and arr.shape[-1] == 3:
            if self.landmarker is None:
                raise ValueError(f"{name} are frames {arr.shape}: construct LMDMetric with a landmarker to use frames")
            h, w = arr.shape[1:3]
            if h != w:
                raise ValueError(f"{name} frames are {h}x{w}; LMD in pixels needs square frames (face crops)")
            return landmarks_from_frames(arr, landmarker=self.landmarker), int(h)
        raise ValueError(f"{name}: expected landmarks (T, 68, 2) or frames (T, H, W, 3), got shape {arr.shape}")

    def update(self, preds: Any, target: Any, *, source_resolution: int | None = None) -> None:
        """Add one video: generated and ground-truth landmarks ``(T, 68, 2)`` or frames ``(T, H, W, 3)``.

        ``source_resolution``: frame side the landmark inputs are measured at (default: ``resolution``). Both sides
        must be at the same scale; frames are measured at their own side.
        """
        pred_lm, pred_side = self._landmarks(preds, name="preds")
        target_lm, target_side = self._landmarks(target, name="target")
        frame_sides = {side for side in (pred_side, target_side) if side is not None}
        if source_resolution is not None and frame_sides - {source_resolution}:
            raise ValueError(f"source_resolution={source_resolution} but the frames are {sorted(frame_sides)} px")
        if len(frame_sides) > 1:
            raise ValueError(f"preds and target frames differ in size {sorted(frame_sides)}; resize them to one scale")
        if frame_sides:
            measured_at = frame_sides.pop()  # a landmark side, if any, must be in the frames' pixels
        else:
            measured_at = source_resolution if source_resolution is not None else self.resolution
        res = lmd_from_landmarks(
            pred_lm,
            target_lm,
            normalisation=self.normalisation,
            resolution=measured_at,
            report_resolution=self.resolution,
        )
        if res.videos:
            self.mouth_sum = self.mouth_sum + res.mouth
            self.face_sum = self.face_sum + res.face
        if np.isfinite(res.jitter) and np.isfinite(res.jitter_gt):  # needs 3 consecutive frames with landmarks
            self.jitter_sum = self.jitter_sum + res.jitter
            self.jitter_gt_sum = self.jitter_gt_sum + res.jitter_gt
            self.jitter_videos = self.jitter_videos + 1
        self.videos = self.videos + res.videos
        self.frames = self.frames + res.frames
        self.missing_frames = self.missing_frames + res.missing_frames
        self.videos_without_landmarks = self.videos_without_landmarks + res.videos_without_landmarks

    def _means(self) -> tuple[float, float]:
        n = int(self.videos)
        if n == 0:
            raise ValueError(
                f"LMDMetric: no video with landmarks was added ({int(self.videos_without_landmarks)} without any "
                f"detected face, {int(self.missing_frames)} frames missing)"
            )
        return float(self.mouth_sum) / n, float(self.face_sum) / n

    def compute(self) -> dict[str, Tensor]:
        mouth, face = self._means()
        mouth_name, face_name = self.names
        return {mouth_name: torch.tensor(mouth, dtype=torch.float64), face_name: torch.tensor(face, dtype=torch.float64)}

    def _report_values(self) -> dict[str, float | int | str]:
        mouth, face = self._means()
        mouth_name, face_name = self.names
        return {
            mouth_name: mouth,
            face_name: face,
            **self._jitter_values(),
            "lmd_videos": int(self.videos),
            "lmd_frames": int(self.frames),
            "lmd_missing_frames": int(self.missing_frames),
            "lmd_videos_without_landmarks": int(self.videos_without_landmarks),
        }

    def _jitter_values(self) -> dict[str, float]:
        """Mean jitter over videos of both sides and their ratio (NaN when no video had 3 consecutive frames)."""
        n = int(self.jitter_videos)
        if n == 0:
            return {"lmd_jitter": float("nan"), "lmd_jitter_gt": float("nan"), "lmd_jitter_ratio": float("nan")}
        gen, gt = float(self.jitter_sum) / n, float(self.jitter_gt_sum) / n
        return {"lmd_jitter": gen, "lmd_jitter_gt": gt, "lmd_jitter_ratio": gen / gt if gt > 0 else float("nan")}
