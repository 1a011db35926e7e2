"""Face detection, landmarks and crop geometry (dreamhead_lit.data.detectors) on real portraits and synthetic images."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dreamhead_lit.data import detectors as D
from dreamhead_lit.data.detectors import (
    MEDIAPIPE_INDEX68,
    Dlib68Landmarker,
    FaceBox,
    FaceDetector,
    MediaPipeDense,
    crop_and_resize,
    dlib_model_path,
    fit_index68,
    mediapipe_available,
    mediapipe_topology,
    smooth_boxes,
    square_crop_box,
)
from dreamhead_lit.data.landmarks import MOUTH, REGION_EYES, REGION_MOUTH, REGION_OUTLINE

needs_mediapipe = pytest.mark.skipif(not mediapipe_available(), reason="MediaPipe not installed (make install-dense)")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def landmarker() -> Dlib68Landmarker:
    return Dlib68Landmarker()


def _portrait(real_data, name: str = "SadTalker__people_0.png") -> np.ndarray:
    return np.asarray(Image.open(real_data / "images" / name).convert("RGB"))


# ---------------------------------------------------------------------------------------------------------------
# Models and detection
# ---------------------------------------------------------------------------------------------------------------


def test_dlib_model_path_finds_the_shape_predictor_and_names_missing_files():
    path = dlib_model_path("shape_predictor_68_face_landmarks.dat")
    assert path.is_file() and path.stat().st_size > 50_000_000
    with pytest.raises(FileNotFoundError, match="no_such_model.dat"):
        dlib_model_path("no_such_model.dat")


def test_detector_finds_one_face_per_real_portrait_in_source_pixels(real_data, detector, landmarker):
    for name in ("SadTalker__people_0.png", "Real3DPortrait__Macron.png", "SadTalker__happy.png"):
        img = _portrait(real_data, name)
        faces = detector.detect(img)
        assert len(faces) == 1, name
        box = faces[0]
        h, w = img.shape[:2]
        assert 0 <= box.x0 < box.x1 <= w + 1 and 0 <= box.y0 < box.y1 <= h + 1
        assert 0.15 * w < box.width < 0.9 * w
        # the 68 points of that box lie on the face: eyes above nose above mouth, all near the box
        pts = landmarker(img, box)
        assert pts.shape == (68, 2) and pts.dtype == np.float32
        assert pts[36:48, 1].mean() < pts[30, 1] < pts[list(MOUTH), 1].mean()
        assert np.all(pts[:, 0] > box.x0 - 0.2 * box.width) and np.all(pts[:, 0] < box.x1 + 0.2 * box.width)
        assert box.y0 - 0.3 * box.height < pts[:, 1].min() and pts[:, 1].max() < box.y1 + 0.3 * box.height


def test_detector_box_does_not_depend_on_the_downscaling(real_data, detector):
    img = _portrait(real_data, "Real3DPortrait__Macron.png")  # 512 px
    full = FaceDetector(max_side=512).detect(img)[0]
    small = detector.detect(img, max_side=256)[0]
    assert full.iou(small) > 0.7


def test_detector_rejects_noise_small_faces_and_faces_outside_the_roi(real_data, detector):
    rng = np.random.default_rng(0)
    assert detector.detect(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)) == []
    img = _portrait(real_data)
    face = detector.detect(img)[0]
    assert FaceDetector(min_size=face.size * 1.5).detect(img) == []
    h, w = img.shape[:2]
    assert detector.detect(img, roi=(0, 0, face.x0 - 1, h)) == []  # left of the face
    inside = detector.detect(img, roi=(face.x0 - 50, face.y0 - 50, face.x1 + 50, face.y1 + 50))
    assert len(inside) == 1 and inside[0].iou(face) > 0.6  # and reported in full-image pixels
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(img.astype(np.float32))


def test_best_prefers_the_face_overlapping_the_previous_one(real_data, detector):
    img = _portrait(real_data)
    face = detector.detect(img)[0]
    # two copies of the face side by side: the tracked one wins, whichever scores higher
    pair = np.concatenate([img, img[:, ::-1]], axis=1)
    faces = detector.detect(pair)
    assert len(faces) == 2
    right = FaceBox(face.x0 + img.shape[1], face.y0, face.x1 + img.shape[1], face.y1)
    left = FaceBox(img.shape[1] - face.x1, face.y0, img.shape[1] - face.x0, face.y1)
    for previous in (right, left):
        mirrored = FaceBox(2 * img.shape[1] - previous.x1, previous.y0, 2 * img.shape[1] - previous.x0, previous.y1)
        chosen = detector.best(pair, previous=previous)
        assert chosen.iou(previous) > 0.5 or chosen.iou(mirrored) > 0.5
        assert chosen.iou(previous) >= chosen.iou(mirrored)


# ---------------------------------------------------------------------------------------------------------------
# Box smoothing and crops
# ---------------------------------------------------------------------------------------------------------------


def test_smooth_boxes_fills_gaps_removes_outliers_and_keeps_a_still_face():
    t = 60
    boxes = np.full((t, 4), np.nan)
    boxes[::5] = [100, 100, 200, 200]
    boxes[30] = [300, 300, 420, 420]  # one wild detection
    out = smooth_boxes(boxes)
    assert out.shape == (t, 4) and np.isfinite(out).all()
    np.testing.assert_allclose(out, np.tile([100, 100, 200, 200], (t, 1)), atol=1e-6)
    # a moving face is followed (linear motion survives median + Gaussian away from the ends)
    moving = np.full((100, 4), np.nan)
    for i in range(0, 100, 5):
        moving[i] = [100 + i, 50, 200 + i, 150]
    out = smooth_boxes(moving)
    np.testing.assert_allclose(out[15:80, 0], 100 + np.arange(15, 80), atol=0.5)
    with pytest.raises(ValueError, match="at least one"):
        smooth_boxes(np.full((5, 4), np.nan))


def test_square_crop_box_scales_and_shifts_down():
    crop = square_crop_box(np.array([100.0, 100.0, 200.0, 200.0]), scale=1.6, shift_down=0.1)
    np.testing.assert_allclose(crop, [70, 80, 230, 240])
    many = square_crop_box(np.array([[0.0, 0, 10, 10], [0, 0, 20, 20]]))
    assert many.shape == (2, 4)
    np.testing.assert_allclose(many[:, 2] - many[:, 0], [16, 32])


def test_crop_and_resize_maps_coordinates_exactly():
    img = np.zeros((90, 120, 3), np.uint8)
    img[40, 70] = 255  # pixel centre at (70.5, 40.5)
    box = (50.0, 20.0, 90.0, 60.0)  # 40 px -> 80 px crop: scale 2
    out = crop_and_resize(img, box, 80, resample="bilinear")
    y, x = np.unravel_index(out[..., 0].astype(float).argmax(), out.shape[:2])
    assert abs((x + 0.5) - (70.5 - 50) * 2) <= 1.0 and abs((y + 0.5) - (40.5 - 20) * 2) <= 1.0
    # the whole image at its own size comes back unchanged
    rng = np.random.default_rng(1)
    pic = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(crop_and_resize(pic, (0, 0, 64, 64), 64), pic)


def test_crop_and_resize_pads_outside_the_image_by_edge_or_black():
    img = np.full((50, 50, 3), 200, np.uint8)
    box = (-50.0, -50.0, 50.0, 50.0)  # three quarters outside
    edge = crop_and_resize(img, box, 100, pad="edge")
    black = crop_and_resize(img, box, 100, pad="black")
    assert edge.shape == black.shape == (100, 100, 3)
    assert np.all(edge == 200)
    assert black[:40, :40].max() == 0 and np.all(black[60:, 60:] == 200)
    far = crop_and_resize(img, (500.0, 500.0, 540.0, 540.0), 16, pad="edge")  # wholly outside
    assert np.all(far == 200)
    with pytest.raises(ValueError, match="pad"):
        crop_and_resize(img, box, 10, pad="mirror")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# MediaPipe topology and landmarks
# ---------------------------------------------------------------------------------------------------------------


def test_mediapipe_topology_regions_contours_and_index68():
    topo = mediapipe_topology(478)
    assert topo.num_points == 478 and topo.name == "mediapipe478"
    regions = np.asarray(topo.regions)
    assert len(set(MEDIAPIPE_INDEX68)) == 68 and max(MEDIAPIPE_INDEX68) < 468
    # the sparse mouth / eye points land in the mouth / eye channels, jaw and nose in the outline channel
    assert np.all(regions[[MEDIAPIPE_INDEX68[i] for i in MOUTH]] == REGION_MOUTH)
    assert np.all(regions[[MEDIAPIPE_INDEX68[i] for i in range(36, 48)]] == REGION_EYES)
    assert np.all(regions[[MEDIAPIPE_INDEX68[i] for i in range(0, 17)]] == REGION_OUTLINE)
    assert np.all(regions[468:] == REGION_EYES)  # irises
    assert (regions == REGION_MOUTH).sum() == 40
    for name, idx in topo.contours.items():
        assert max(idx) < 478 and len(set(idx)) == len(idx), name
    assert "left_iris" not in mediapipe_topology(468).contours
    assert mediapipe_topology(468).index68 == topo.index68
    with pytest.raises(ValueError, match="468 or 478"):
        mediapipe_topology(100)
    # JSON round trip, as stored in dataset.json
    from dreamhead_lit.data.landmarks import LandmarkTopology

    assert LandmarkTopology.from_json(topo.to_json()) == topo


def test_fit_index68_recovers_a_known_correspondence():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(68, 2)) * 10
    base[36], base[45] = (-30, 0), (30, 0)
    frames = base + rng.normal(scale=0.3, size=(20, 68, 2))
    perm = rng.permutation(200)[:68]
    dense = rng.normal(size=(20, 200, 2)) * 100 + 500  # far-away distractors
    dense[:, perm] = frames + rng.normal(scale=0.3, size=frames.shape)
    index, dist = fit_index68(frames, dense)
    assert index == tuple(int(p) for p in perm)
    assert dist.max() < 0.05


def test_mediapipe_dense_names_the_install_target_when_missing(monkeypatch):
    monkeypatch.setattr(D, "mediapipe_available", lambda: False)
    with pytest.raises(ImportError, match="make install-dense"):
        MediaPipeDense()


@needs_mediapipe
def test_mediapipe_contours_match_the_installed_connection_sets():
    face_mesh = D._import_face_mesh()
    import sys

    assert "cv2" not in sys.modules or hasattr(sys.modules["cv2"], "__version__")  # no placeholder left behind
    sets = {
        "lips": face_mesh.FACEMESH_LIPS, "left_eye": face_mesh.FACEMESH_LEFT_EYE,
        "right_eye": face_mesh.FACEMESH_RIGHT_EYE, "left_brow": face_mesh.FACEMESH_LEFT_EYEBROW,
        "right_brow": face_mesh.FACEMESH_RIGHT_EYEBROW, "face_oval": face_mesh.FACEMESH_FACE_OVAL,
    }

    def edges(names):
        out = set()
        for name in names:
            idx, closed = D.MEDIAPIPE_CONTOURS[name]
            pairs = list(zip(idx, idx[1:])) + ([(idx[-1], idx[0])] if closed else [])
            out |= {frozenset(p) for p in pairs}
        return out

    as_set = lambda conn: {frozenset(e) for e in conn}  # noqa: E731
    assert edges(["outer_lips", "inner_lips"]) == as_set(sets["lips"])
    for name in ("left_eye", "right_eye", "face_oval"):
        assert edges([name]) == as_set(sets[name])
    for name in ("left_brow", "right_brow"):  # the brow loop closes the two MediaPipe brow lines at their ends
        assert as_set(sets[name]) <= edges([name])


@needs_mediapipe
def test_mediapipe_points_land_on_the_face_and_index68_matches_dlib(real_data, detector, landmarker):
    """The hard-coded dlib -> MediaPipe table, re-fitted on real frames, and its accuracy."""
    from dreamhead_lit.video import iter_frames

    pairs68, pairs_dense = [], []
    for path in sorted((real_data / "video").glob("*.mp4")):
        mesh = MediaPipeDense(static_image_mode=True)
        for t, frame in enumerate(iter_frames(path, target_fps=25)):
            if t >= 50:
                break
            if t % 10:
                continue
            face = detector.best(frame)
            crop = square_crop_box(face.as_array())
            big = crop_and_resize(frame, crop, 512, resample="bilinear")
            s = 512 / (crop[2] - crop[0])
            p68 = landmarker(big, (face.as_array() - np.r_[crop[:2], crop[:2]]) * s)
            dense = mesh(big)
            assert dense is not None and dense.shape == (478, 2)
            pairs68.append(p68)
            pairs_dense.append(dense)
        mesh.close()
    p68, dense = np.stack(pairs68), np.stack(pairs_dense)
    iod = np.linalg.norm(p68[:, 36] - p68[:, 45], axis=-1)
    err = np.linalg.norm(dense[:, list(MEDIAPIPE_INDEX68)] - p68, axis=-1) / iod[:, None]  # (F, 68)
    assert err.mean() < 0.06 and err[:, list(MOUTH)].mean() < 0.04
    fitted, _ = fit_index68(p68, dense, regions_dense=np.asarray(mediapipe_topology().regions))
    agree = sum(a == b for a, b in zip(fitted, MEDIAPIPE_INDEX68))
    assert agree >= 55, f"only {agree}/68 indices agree with a re-fit on {len(p68)} frames"
    fitted_err = np.linalg.norm(dense[:, list(fitted)] - p68, axis=-1) / iod[:, None]
    assert err.mean() < 1.15 * fitted_err.mean()
