"""CSIM with the dlib face-recognition network on real portraits; the no-face fallback is counted."""
from __future__ import annotations

import numpy as np
import pytest

from dreamhead_lit.metrics.csim import CSIMMetric, DlibFaceEmbedder, csim_from_frames


def _portrait(real_data, name: str) -> np.ndarray:
    from PIL import Image

    path = real_data / "images" / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def embedder() -> DlibFaceEmbedder:
    return DlibFaceEmbedder()


def test_same_identity_scores_higher_than_another(real_data, embedder):
    a = _portrait(real_data, "SadTalker__happy.png")
    b = _portrait(real_data, "Real3DPortrait__Macron.png")
    same = csim_from_frames(a[None], a, embedder=embedder)
    other = csim_from_frames(b[None], a, embedder=embedder)
    assert same.mean == pytest.approx(1.0, abs=1e-6)
    assert other.mean < same.mean - 0.1  # dlib cosine: about 0.8 between different people here
    assert same.fallback_frames == 0 and not same.reference_fallback
    # a slightly shifted copy of the same face stays close to 1 and above the other identity
    shifted = np.roll(a, 4, axis=1)
    assert csim_from_frames(shifted[None], a, embedder=embedder).mean > other.mean


def test_frames_without_a_face_use_the_whole_frame_and_are_counted(real_data, embedder):
    a = _portrait(real_data, "SadTalker__happy.png")
    blank = np.full_like(a, 128)
    metric = CSIMMetric(embedder=embedder)
    metric.update(np.stack([a, blank, a]), a)
    report = metric.report()
    assert report["csim_frames"] == 3 and report["csim_fallback_frames"] == 1
    assert report["csim_fallback_references"] == 0
    assert report["csim"] < 1.0 and "dlib" in report["csim_network"]
    assert float(metric.compute()) == pytest.approx(report["csim"])


def test_inputs_are_checked(embedder):
    with pytest.raises(ValueError, match="reference must be one image"):
        csim_from_frames(np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 32, 32, 3), np.uint8), embedder=embedder)
    with pytest.raises(ValueError, match="RGB frames"):
        csim_from_frames(np.zeros((2, 32, 32), np.uint8), np.zeros((32, 32, 3), np.uint8), embedder=embedder)
