"""The face track of a video, the same for preprocessing and for generation's reference videos.

:class:`FaceTracker` runs dlib's detector every ``detect_every`` frames and follows one face; :func:`track_pieces`
cuts the track where the face was lost for more than ``max_gap`` and, per piece, smooths the face boxes
(``detectors.smooth_boxes``) and makes the square crop boxes (``detectors.square_crop_box``); :class:`FaceCropper`
cuts each frame's crop and finds dlib's 68 landmarks on a larger working crop of the same box. The settings
(:class:`TrackSettings`) default to preprocessing's flags, so a reference video (``pipeline.reference_from_video``)
is tracked and cropped exactly as a dataset clip of the same video, and a portrait (:func:`still_piece`) is cropped
as one frame of it: preprocessing feeds the tracker frame by frame while it decodes (``preprocess_video``), a
reference is cropped from memory with :func:`crop_piece`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .clip import FPS
from .detectors import (
    Dlib68Landmarker,
    FaceBox,
    FaceDetector,
    PadMode,
    crop_and_resize,
    smooth_boxes,
    square_crop_box,
)

Window = tuple[float, float, float, float]  # (x0, y0, x1, y1) source pixels


@dataclass(frozen=True)
class TrackSettings:
    """How a face is followed through a video and cut out: preprocessing's flags (``PreprocessConfig`` extends this),
    and with these defaults the tracking of a reference video."""

    detect_every: int = 5  # detection every k frames (0.2 s at 25 fps), boxes interpolated in between
    detect_max_side: int = 640  # frames are downscaled to this longer side for detection
    upsample: int = 0  # dlib upsampling for detection (finds smaller faces, 4x cost per step)
    min_face: float = 80.0  # smallest face box side kept, source pixels
    max_gap: float = 0.5  # seconds without a detection that split the track
    smooth_median: int = 5  # detections in the running median of the box track
    smooth_sigma_centre: float = 3.0  # frames, Gaussian on the box centre
    smooth_sigma_size: float = 8.0  # frames, Gaussian on the box size
    crop_scale: float = 1.6  # crop side / face box side
    crop_shift: float = 0.05  # crop centre below the face box centre, in face box sides
    pad: PadMode = "edge"  # filling of crop parts outside the frame
    landmark_size: int = 512  # working crop side for the landmarker (dlib reports whole pixels)

    def detector(self) -> FaceDetector:
        return FaceDetector(upsample=self.upsample, max_side=self.detect_max_side, min_size=self.min_face)

    def crop_boxes(self, face_boxes: np.ndarray) -> np.ndarray:
        """Square crop boxes around face boxes (..., 4), source pixels."""
        return square_crop_box(face_boxes, scale=self.crop_scale, shift_down=self.crop_shift)


class FaceTracker:
    """Follows one face through a video's frames, fed in order with :meth:`update`.

    Every ``detect_every``-th frame is searched (within ``roi`` when given, e.g. an HDTF crop window); the face kept
    is the best detection overlapping the previous one (``FaceDetector.best``). ``boxes`` maps the frames where
    detection ran and found the face to that face.
    """

    def __init__(self, settings: TrackSettings = TrackSettings(), *, detector: FaceDetector | None = None,
                 roi: Window | None = None):
        self.settings = settings
        self.detector = detector if detector is not None else settings.detector()
        self.roi = roi
        self.boxes: dict[int, FaceBox] = {}
        self.rejected_small = 0  # faces found but smaller than min_face
        self._previous: FaceBox | None = None

    def update(self, t: int, frame: np.ndarray) -> None:
        """Frame ``t`` (RGB uint8) of the video; detection runs when ``t`` is a multiple of ``detect_every``."""
        if t % self.settings.detect_every:
            return
        previous, roi = self._previous, self.roi
        # Once the face is known, detect on an image where it is about 160 px (dlib's HOG window is 80 px, so it
        # may shrink to half before being missed): 2-4x faster than the fixed max_side on close-up video.
        side = None
        if previous is not None:
            searched = max(frame.shape[:2]) if roi is None else max(roi[2] - roi[0], roi[3] - roi[1])
            side = int(np.clip(searched * 160.0 / previous.size, 320, self.settings.detect_max_side))
        best = self.detector.best(frame, previous=previous, roi=roi, max_side=side)
        self.rejected_small += self.detector.last_rejected
        if best is not None:
            self.boxes[t] = self._previous = best


def find_segments(detected: np.ndarray, *, num_frames: int, step: int, max_gap: int, min_frames: int
                  ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Pieces of a clip with a face: (kept [(start, stop)], dropped [(start, stop)]), stop exclusive.

    ``detected`` holds the frames where detection found the face (detection runs every ``step`` frames). A piece
    runs from a detection to the last detection before a gap of more than ``max_gap`` frames; the final piece
    extends to the clip's end when its last detection was the clip's last detection attempt.
    """
    detected = np.asarray(sorted(int(t) for t in detected))
    if len(detected) == 0:
        return [], []
    last_attempt = ((num_frames - 1) // step) * step
    pieces = []
    start = prev = int(detected[0])
    for t in detected[1:]:
        if t - prev > max_gap:
            pieces.append((start, prev + 1))
            start = int(t)
        prev = int(t)
    pieces.append((start, num_frames if prev == last_attempt else prev + 1))
    kept = [p for p in pieces if p[1] - p[0] >= min_frames]
    dropped = [p for p in pieces if p[1] - p[0] < min_frames]
    return kept, dropped


@dataclass
class TrackPiece:
    """A stretch of frames [start, stop) with a face."""

    start: int
    stop: int
    face_boxes: np.ndarray  # (T, 4) smoothed face boxes, source pixels
    crop_boxes: np.ndarray  # (T, 4) square crop boxes, source pixels

    @property
    def num_frames(self) -> int:
        return self.stop - self.start


def track_pieces(boxes: dict[int, FaceBox], num_frames: int, settings: TrackSettings = TrackSettings(), *,
                 min_frames: int) -> tuple[list[TrackPiece], list[tuple[int, int]]]:
    """The face track of a video of ``num_frames`` frames, cut where the face was lost for more than ``max_gap``:
    the pieces of at least ``min_frames`` frames with their boxes, and the (start, stop) of the shorter ones.

    ``boxes`` are a :class:`FaceTracker`'s detections at frames below ``num_frames``.
    """
    kept, dropped = find_segments(np.array(sorted(boxes)), num_frames=num_frames, step=settings.detect_every,
                                  max_gap=int(np.floor(settings.max_gap * FPS + 1e-6)), min_frames=min_frames)
    pieces = []
    for a, b in kept:
        track = np.full((b - a, 4), np.nan)  # detections of this piece, NaN elsewhere
        for t, box in boxes.items():
            if a <= t < b:
                track[t - a] = box.as_array()
        faces = smooth_boxes(track, median=settings.smooth_median, sigma_centre=settings.smooth_sigma_centre,
                             sigma_size=settings.smooth_sigma_size)
        pieces.append(TrackPiece(a, b, faces, settings.crop_boxes(faces)))
    return pieces, dropped


def still_piece(face_box: np.ndarray, settings: TrackSettings = TrackSettings()) -> TrackPiece:
    """A one-frame piece around a face found in a still image (a portrait reference): no track to smooth."""
    faces = np.asarray(face_box, dtype=np.float64)[None, :4]
    return TrackPiece(0, 1, faces, settings.crop_boxes(faces))


class FaceCropper:
    """Cuts a tracked face out of its frames at ``size`` px, and finds dlib's 68 landmarks on a working crop of the
    same box at ``landmark_size`` px (dlib reports whole pixels: on a 512 px crop that is a tenth of a percent of the
    face), scaled back to the ``size`` crop."""

    def __init__(self, size: int, settings: TrackSettings = TrackSettings(), *,
                 landmarker: Dlib68Landmarker | None = None):
        self.size = size
        self.work = max(settings.landmark_size, size)
        self.pad = settings.pad
        self.landmarker = landmarker if landmarker is not None else Dlib68Landmarker()

    def cut(self, frame: np.ndarray, crop_box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the crop at ``size``, the working crop) of one frame: (size, size, 3) and (work, work, 3) uint8."""
        crop = crop_and_resize(frame, crop_box, self.size, pad=self.pad)
        if self.work == self.size:
            return crop, crop
        return crop, crop_and_resize(frame, crop_box, self.work, pad=self.pad, resample="bilinear")

    def landmarks68(self, work_crop: np.ndarray, face_box: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
        """dlib's 68 points (68, 2) of the face in ``face_box`` (source pixels), in pixels of the ``size`` crop."""
        scale = self.work / (crop_box[2] - crop_box[0])
        face = (face_box - np.r_[crop_box[:2], crop_box[:2]]) * scale  # face box in working-crop pixels
        return self.landmarker(work_crop, face) * (self.size / self.work)


def crop_piece(frames: Sequence[np.ndarray], piece: TrackPiece, cropper: FaceCropper) -> tuple[np.ndarray, np.ndarray]:
    """The crops (T, size, size, 3) uint8 and dlib 68 landmarks (T, 68, 2) float32 of a piece of frames in memory."""
    crops, points = [], []
    for i, frame in enumerate(frames[piece.start:piece.stop]):
        crop, work = cropper.cut(frame, piece.crop_boxes[i])
        crops.append(crop)
        points.append(cropper.landmarks68(work, piece.face_boxes[i], piece.crop_boxes[i]))
    return np.stack(crops), np.stack(points).astype(np.float32)
