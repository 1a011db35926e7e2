"""CSIM: identity preservation as the cosine similarity of face-recognition embeddings.

Each generated frame is compared with the reference (source) image: ``cos(e(frame), e(reference))`` with ``e`` the
128-d dlib ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``, aligned with the 5-point
``shape_predictor_5_face_landmarks.dat``; both ship with ``face_recognition_models``), averaged over frames and then
over all frames of all videos (each frame counts once). Higher is better; 1 is the same identity embedding.

When dlib's HOG detector finds no face in a frame (or in the reference), the whole frame is used as the face box --
generated frames are aligned face crops, so that box still holds the face -- and the frame is counted in
``csim_fallback_frames`` (``csim_fallback_references`` for references) so a table shows how often it happened.

Note: published CSIM numbers use various identity networks (ArcFace in many papers); values from the dlib network
are comparable with each other, not with numbers from another network. Results name the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from dreamhead_lit.metrics._common import ReportMixin, uint8_frames
from dreamhead_lit.metrics.weights import DLIB_5, DLIB_FACE_RECOGNITION, resolve_weights

__all__ = ["IDENTITY_NETWORK", "DlibFaceEmbedder", "CSIMResult", "csim_from_frames", "CSIMMetric"]

IDENTITY_NETWORK = "dlib_face_recognition_resnet_model_v1 (128-d)"


@lru_cache(maxsize=4)
def _dlib_recognition_models(shape5_path: str, recognition_path: str) -> tuple[Any, Any, Any]:
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(shape5_path), dlib.face_recognition_model_v1(recognition_path)


class DlibFaceEmbedder:
    """128-d dlib face descriptors of the largest face in an RGB uint8 image (whole image when none is found).

    Picklable: the dlib models are built lazily in each process.

    Args:
        upsample_num_times: detector upsampling (0 suits faces of 80 px and more).
        num_jitters: dlib's descriptor jittering (1 = none, the usual setting; more is slower and smoother).
    """

    def __init__(self, *, upsample_num_times: int = 0, num_jitters: int = 1) -> None:
        self.shape5_path = str(resolve_weights(DLIB_5.filename, purpose="CSIM (dlib 5-point aligner)", url_hint=DLIB_5.url))
        self.recognition_path = str(
            resolve_weights(DLIB_FACE_RECOGNITION.filename, purpose="CSIM (dlib face recognition)", url_hint=DLIB_FACE_RECOGNITION.url)
        )
        self.upsample_num_times = int(upsample_num_times)
        self.num_jitters = int(num_jitters)

    def embed(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """``(descriptor (128,) float64, used_whole_image_fallback)`` for one ``(H, W, 3)`` image."""
        import dlib

        img = uint8_frames(image, name="image")
        if img.ndim != 3:
            raise ValueError(f"embed takes one image (H, W, 3), got shape {img.shape}")
        detector, shape5, recognizer = _dlib_recognition_models(self.shape5_path, self.recognition_path)
        faces = list(detector(img, self.upsample_num_times))
        fallback = not faces
        if fallback:
            box = dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
        else:
            box = max(faces, key=lambda r: r.width() * r.height())
        shape = shape5(img, box)
        return np.asarray(recognizer.compute_face_descriptor(img, shape, self.num_jitters), dtype=np.float64), fallback


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows of ``a`` (N, D) with ``b`` (D,)."""
    return (a @ b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b) + 1e-12)


@dataclass(frozen=True)
class CSIMResult:
    mean: float  # mean cosine similarity over frames
    per_frame: np.ndarray  # (T,)
    fallback_frames: int  # frames where no face was detected (whole frame used)
    reference_fallback: bool  # the reference had no detected face


def csim_from_frames(frames: Any, reference: Any, *, embedder: DlibFaceEmbedder) -> CSIMResult:
    """CSIM of one clip: frames ``(T, H, W, 3)`` against the reference image ``(H', W', 3)`` (uint8 RGB)."""
    clip = uint8_frames(frames, name="frames")
    clip = clip[None] if clip.ndim == 3 else clip
    ref = uint8_frames(reference, name="reference")
    if ref.ndim != 3:
        raise ValueError(f"reference must be one image (H, W, 3), got shape {ref.shape}")
    ref_emb, ref_fallback = embedder.embed(ref)
    embs, fallbacks = zip(*(embedder.embed(f) for f in clip))
    sims = _cosine(np.stack(embs), ref_emb)
    return CSIMResult(float(sims.mean()), sims, int(sum(fallbacks)), bool(ref_fallback))


class CSIMMetric(ReportMixin, Metric):
    """Mean CSIM over all generated frames; ``update(frames, reference)`` per clip. DDP-safe sums.

    Args:
        embedder: a :class:`DlibFaceEmbedder` (default one built here).

    ``compute()`` returns the mean cosine similarity; :meth:`report` adds ``csim_frames``, ``csim_fallback_frames``,
    ``csim_fallback_references`` and ``csim_network``.
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    sim_sum: Tensor
    frames: Tensor
    fallback_frames: Tensor
    fallback_references: Tensor

    def __init__(self, *, embedder: DlibFaceEmbedder | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embedder = embedder if embedder is not None else DlibFaceEmbedder()
        self.add_state("sim_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("frames", "fallback_frames", "fallback_references"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, frames: Any, reference: Any) -> None:
        """Add one clip ``(T, H, W, 3)`` (or one frame) and its reference image ``(H, W, 3)``, uint8 RGB."""
        res = csim_from_frames(frames, reference, embedder=self.embedder)
        self.sim_sum = self.sim_sum + float(res.per_frame.sum())
        self.frames = self.frames + len(res.per_frame)
        self.fallback_frames = self.fallback_frames + res.fallback_frames
        self.fallback_references = self.fallback_references + int(res.reference_fallback)

    def _mean(self) -> float:
        n = int(self.frames)
        if n == 0:
            raise ValueError("CSIMMetric: no frames were added; call update(frames, reference) first")
        return float(self.sim_sum) / n

    def compute(self) -> Tensor:
        return torch.tensor(self._mean(), dtype=torch.float64)

    def _report_values(self) -> dict[str, float | int | str]:
        return {
            "csim": self._mean(),
            "csim_frames": int(self.frames),
            "csim_fallback_frames": int(self.fallback_frames),
            "csim_fallback_references": int(self.fallback_references),
            "csim_network": IDENTITY_NETWORK,
        }
