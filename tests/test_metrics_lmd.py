"""LMD on constructed landmarks (known values), its units and missing-frame accounting; the dlib landmarker."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamhead_lit.data.landmarks import MOUTH
from dreamhead_lit.data.synth import neutral_template
from dreamhead_lit.metrics.lmd import (
    LMDMetric,
    dlib_landmarker,
    landmark_jitter,
    lmd_from_frames,
    lmd_from_landmarks,
)


def _face(frames: int = 4, size: float = 100.0, centre=(128.0, 128.0)) -> np.ndarray:
    t = neutral_template().astype(np.float64)
    t = (t - t.mean(0)) / np.ptp(t[:, 0]) * size + np.asarray(centre)
    return np.repeat(t[None], frames, 0)


def _open_mouth(face: np.ndarray, d: float) -> np.ndarray:
    """Move the first 10 mouth points by +d and the other 10 by -d in x: the mouth mean does not move,
    so every mouth point is exactly d away after centring (M-LMD = d, F-LMD = 20 d / 68)."""
    out = face.copy()
    out[:, list(MOUTH[:10]), 0] += d
    out[:, list(MOUTH[10:]), 0] -= d
    return out


def test_known_displacement_gives_known_value():
    target = _face()
    res = lmd_from_landmarks(_open_mouth(target, 3.0), target, resolution=256)
    assert res.mouth == pytest.approx(3.0)
    assert res.face == pytest.approx(3.0 * 20 / 68)
    assert (res.mouth_name, res.face_name) == ("lmd_mouth_px@256", "lmd_face_px@256")
    assert res.frames == 4 and res.missing_frames == 0


def test_centring_removes_translation():
    target = _face()
    shifted = target + np.array([5.0, -7.0])
    res = lmd_from_landmarks(shifted, target, resolution=256)
    assert res.mouth == pytest.approx(0.0, abs=1e-12) and res.face == pytest.approx(0.0, abs=1e-12)
    # translation on top of a mouth change does not change the value either
    res2 = lmd_from_landmarks(_open_mouth(target, 2.0) + np.array([3.0, 1.0]), target, resolution=256)
    assert res2.mouth == pytest.approx(2.0)


def test_units_pixels_rescaled_and_face_size():
    target = _face(size=50.0, centre=(64.0, 64.0))  # landmarks of a 128 px frame
    pred = _open_mouth(target, 1.5)
    at_256 = lmd_from_landmarks(pred, target, resolution=128, report_resolution=256)
    assert at_256.mouth == pytest.approx(3.0) and at_256.mouth_name == "lmd_mouth_px@256"
    iod = np.linalg.norm(target[0, 36] - target[0, 45])
    by_face = lmd_from_landmarks(pred, target, normalisation="face_size")
    assert by_face.mouth == pytest.approx(1.5 / iod) and by_face.mouth_name == "lmd_mouth_iod"
    with pytest.raises(ValueError, match="resolution"):
        lmd_from_landmarks(pred, target)
    with pytest.raises(ValueError, match="normalisation"):
        lmd_from_landmarks(pred, target, normalisation="mm", resolution=128)


def _shaking(frames: int, amplitude: float) -> np.ndarray:
    """A face whose every point alternates +a / -a in x: acceleration magnitude 4a at every interior frame."""
    face = _face(frames)
    face[:, :, 0] += amplitude * (-1.0) ** np.arange(frames)[:, None]
    return face


def test_jitter_on_constructed_sequences():
    # constant velocity has no acceleration; the alternating shake has |x+ - 2x + x-| = 4a
    drift = _face(6) + np.arange(6)[:, None, None] * np.array([1.5, 0.0])
    assert float(landmark_jitter(torch.from_numpy(drift))) == pytest.approx(0.0, abs=1e-12)
    res = lmd_from_landmarks(_shaking(6, 0.5), drift, resolution=128, report_resolution=256)
    assert res.jitter == pytest.approx(4 * 0.5 * 2)  # reported at 256 px: twice the 128 px pixels
    assert res.jitter_gt == pytest.approx(0.0, abs=1e-12)
    # a missing frame removes the three accelerations it takes part in, not the video
    shaky = _shaking(8, 1.0)
    shaky[4] = np.nan
    assert lmd_from_landmarks(shaky, _face(8), resolution=64).jitter == pytest.approx(4.0)
    assert np.isnan(lmd_from_landmarks(_face(2), _face(2), resolution=64).jitter)  # fewer than 3 frames


def test_metric_reports_jitter_ratio_over_videos():
    m = LMDMetric(resolution=64)
    m.update(_shaking(10, 1.0), _shaking(10, 0.5))  # jitter 4 vs 2
    m.update(_shaking(10, 2.0), _shaking(10, 0.5))  # jitter 8 vs 2
    m.update(_face(2), _face(2))  # too short for an acceleration: LMD counts it, jitter does not
    rep = m.report()
    assert rep["lmd_jitter"] == pytest.approx(6.0) and rep["lmd_jitter_gt"] == pytest.approx(2.0)
    assert rep["lmd_jitter_ratio"] == pytest.approx(3.0)
    assert rep["lmd_videos"] == 3


def test_metric_averages_frames_then_videos_and_counts_missing_frames():
    metric = LMDMetric(resolution=256)
    a_target = _face(frames=2)
    a_pred = np.concatenate([_open_mouth(a_target[:1], 1.0), _open_mouth(a_target[1:], 3.0)])  # video mean 2
    b_target = _face(frames=5)
    b_pred = _open_mouth(b_target, 6.0)
    b_pred[4] = np.nan  # a frame without landmarks: left out, counted
    metric.update(a_pred, a_target)
    metric.update(torch.from_numpy(b_pred), torch.from_numpy(b_target))
    out = metric.compute()
    assert float(out["lmd_mouth_px@256"]) == pytest.approx((2.0 + 6.0) / 2)  # not the frame-weighted 5.0
    report = metric.report()
    assert report["lmd_frames"] == 6 and report["lmd_missing_frames"] == 1 and report["lmd_videos"] == 2
    # a video without any landmarks is reported, not averaged in
    metric.update(np.full((3, 68, 2), np.nan), b_target[:3])
    report = metric.report()
    assert report["lmd_videos_without_landmarks"] == 1 and report["lmd_missing_frames"] == 4
    assert report["lmd_mouth_px@256"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="resolution"):
        LMDMetric()


def test_frame_based_lmd_counts_frames_without_a_face():
    target = _face(frames=4)
    pred = _open_mouth(target, 2.0)
    frames = np.zeros((4, 256, 256, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(4)  # each frame carries its index for the stub landmarker

    def stub_landmarker(frame):
        i = int(frame[0, 0, 0])
        return None if i == 2 else pred[i]

    res = lmd_from_frames(frames, landmarker=stub_landmarker, target_landmarks=target)
    assert res.missing_frames == 1 and res.frames == 3
    assert res.mouth == pytest.approx(2.0) and res.mouth_name == "lmd_mouth_px@256"
    metric = LMDMetric(resolution=256, landmarker=stub_landmarker)
    metric.update(frames, target)
    report = metric.report()
    jitter = {k: report.pop(k) for k in ("lmd_jitter", "lmd_jitter_gt", "lmd_jitter_ratio")}
    assert report == pytest.approx(
        {"lmd_mouth_px@256": 2.0, "lmd_face_px@256": 2.0 * 20 / 68, "lmd_videos": 1, "lmd_frames": 3,
         "lmd_missing_frames": 1, "lmd_videos_without_landmarks": 0}
    )
    assert all(np.isnan(v) for v in jitter.values())  # frame 2 missing: no 3 consecutive frames among 4
    with pytest.raises(ValueError, match="landmarker"):
        LMDMetric(resolution=256).update(frames, target)
    # frames measured at 256 px, reported at 128 px: half the pixels
    half = LMDMetric(resolution=128, landmarker=stub_landmarker)
    half.update(frames, target)
    assert half.report()["lmd_mouth_px@128"] == pytest.approx(1.0)
    # landmarks at another scale are rescaled when their resolution is stated
    scaled = LMDMetric(resolution=256)
    scaled.update(pred / 2, target / 2, source_resolution=128)
    assert scaled.report()["lmd_mouth_px@256"] == pytest.approx(2.0)


def _read_rgb(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_dlib_landmarker_on_a_real_portrait(real_data):
    import dlib

    path = real_data / "images" / "SadTalker__happy.png"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    img = _read_rgb(path)
    pts = dlib_landmarker()(img)
    assert pts is not None and pts.shape == (68, 2)
    face = max(dlib.get_frontal_face_detector()(img, 0), key=lambda r: r.area())
    mouth = pts[list(MOUTH)]
    mid_y = (face.top() + face.bottom()) / 2
    assert np.all(mouth[:, 1] > mid_y) and np.all(mouth[:, 1] < face.bottom() + 0.15 * face.height())
    assert np.all((mouth[:, 0] > face.left()) & (mouth[:, 0] < face.right()))
    # the eyes are above the mouth, the jaw spans the face width
    assert pts[36:48, 1].max() < mouth[:, 1].min()
    assert np.ptp(pts[0:17, 0]) > 0.6 * face.width()
    # no face: None, not a guess
    assert dlib_landmarker()(np.zeros((128, 128, 3), dtype=np.uint8)) is None
    # the same frame against itself: zero LMD through the frame path
    res = lmd_from_frames(img[None], landmarker=dlib_landmarker(), target_frames=img[None])
    assert res.mouth == pytest.approx(0.0) and res.mouth_name == f"lmd_mouth_px@{img.shape[0]}"
