"""SynthTalk's face geometry: identity + articulation + emotion -> 68 points (dlib order, face units) -> N dense
points -> crop pixels under a drifting head pose. ``neutral_template`` is the canonical 68-point template."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .landmarks import LEFT_BROW, LEFT_EYE, RIGHT_BROW, RIGHT_EYE, DenseLayout
from .synth_speaker import EMOTION_EFFECTS, Identity, make_identity


def face68(
    ident: Identity,
    *,
    jaw: np.ndarray,
    spread: np.ndarray,
    rounding: np.ndarray,
    closure: np.ndarray,
    blink: np.ndarray,
    emotion: str = "neutral",
    intensity: float = 0.0,
) -> np.ndarray:
    """(T, 68, 2) landmarks in canonical face units (x right, y down, jaw half-width ≈ 1, nose tip near the origin)."""
    t = len(jaw)
    brow_up, inner_up, frown, smile, asym, widen, lip_raise, *_ = (
        np.array(EMOTION_EFFECTS[emotion][:7]) * intensity
    ).tolist()
    p = np.zeros((t, 68, 2))
    o = (1.0 - closure) * (0.025 + 0.3 * jaw) * (1.0 + 0.2 * rounding)  # inner-lip gap
    drop = 0.22 * jaw * (1.0 - 0.4 * closure)  # chin drop
    # jaw 0-16: half an ellipse from ear to ear, narrower at the chin; the chin drops with the jaw
    phi = np.pi * np.arange(17) / 16.0
    jx = -ident.face_w * np.cos(phi) * (1.0 - (1.0 - ident.jaw_w) * np.sin(phi) ** 2)
    jy = -0.15 + (0.15 + 0.92 * ident.face_h) * np.sin(phi)
    p[:, 0:17, 0] = jx
    p[:, 0:17, 1] = jy + drop[:, None] * np.sin(phi) ** 2
    # brows: arches; emotion raises them, fear/sad raise the inner ends, anger pulls them down and inwards
    u = np.linspace(0.0, 1.0, 5)
    for side, idx in ((-1, RIGHT_BROW), (1, LEFT_BROW)):
        inner = u if side == -1 else u[::-1]  # 1 at the inner end
        x = side * (0.14 + 0.62 * (1.0 - inner)) * ident.face_w
        y = ident.brow_y - 0.07 * np.sin(np.pi * u) - brow_up - 0.06 * inner_up * inner + 0.06 * frown * inner
        x = x - side * 0.03 * frown * inner
        p[:, list(idx), 0] = x
        p[:, list(idx), 1] = y
    # nose
    nl = ident.nose_len
    p[:, 27:31, 0] = 0.0
    p[:, 27:31, 1] = [-0.36, -0.22 * nl, -0.08 * nl, 0.07 * nl]
    p[:, 31:36, 0] = np.array([-0.17, -0.09, 0.0, 0.09, 0.17]) * (0.9 + 0.2 * ident.face_w)
    p[:, 31:36, 1] = np.array([0.16, 0.19, 0.21, 0.19, 0.16]) * nl - 0.02 * lip_raise
    # eyes: 36 outer corner of the right eye, 39 inner; 42 inner of the left, 45 outer
    open_ = (1.0 + 0.6 * widen) * (1.0 - 0.92 * blink)  # (T,)
    # both eyes list their points left to right along the upper lid, then back along the lower lid, which is dlib's
    # order (36 = outer corner of the right eye, 42 = inner corner of the left eye)
    for cx, idx in ((-ident.eye_dx, RIGHT_EYE), (ident.eye_dx, LEFT_EYE)):
        w, h, cy = ident.eye_w, ident.eye_h, -0.3
        xs = np.array([-w, -w / 3, w / 3, w, w / 3, -w / 3]) + cx
        top = np.array([0.0, -h, -h, 0.0, 0.0, 0.0])
        bottom = np.array([0.0, 0.0, 0.0, 0.0, 0.8 * h, 0.8 * h])
        i = list(idx)
        p[:, i, 0] = xs
        p[:, i, 1] = cy + top[None, :] * open_[:, None] + bottom[None, :]
    # mouth
    my = 0.5
    hw = ident.mouth_w * (1.0 + 0.22 * spread - 0.28 * rounding + 0.05 * jaw) + 0.03 * smile
    ut = ident.upper_lip * (1.0 + 0.4 * rounding)
    lt = ident.lower_lip * (1.0 + 0.3 * rounding)
    top_y = my - 0.2 * o - 0.02 * lip_raise  # inner upper lip
    bot_y = my + 0.8 * o  # inner lower lip
    corner_l = my + 0.3 * o - 0.05 * smile
    corner_r = my + 0.3 * o - 0.05 * smile * (1.0 - 2.0 * asym)  # contempt lifts one corner only
    xo = np.array([-1.0, -0.6, -0.25, 0.0, 0.25, 0.6, 1.0, 0.6, 0.25, 0.0, -0.25, -0.6])
    outer_y = np.stack(
        [
            corner_l,
            top_y - 0.8 * ut,
            top_y - ut,
            top_y - 0.85 * ut,
            top_y - ut,
            top_y - 0.8 * ut,
            corner_r,
            bot_y + 0.8 * lt,
            bot_y + lt,
            bot_y + 1.05 * lt,
            bot_y + lt,
            bot_y + 0.8 * lt,
        ],
        -1,
    )
    p[:, 48:60, 0] = xo[None, :] * hw[:, None]
    p[:, 48:60, 1] = outer_y
    xi = np.array([-0.85, -0.35, 0.0, 0.35, 0.85, 0.35, 0.0, -0.35])
    inner_y = np.stack(
        [corner_l, top_y + 0.15 * o, top_y, top_y + 0.15 * o, corner_r, bot_y - 0.15 * o, bot_y, bot_y - 0.15 * o], -1
    )
    p[:, 60:68, 0] = xi[None, :] * hw[:, None]
    p[:, 60:68, 1] = inner_y
    return p.astype(np.float32)


def neutral_template(num_identities: int = 64, seed: int = 12345) -> np.ndarray:
    """The canonical 68-point template: the mean neutral face over many identities (face units)."""
    faces = []
    z = np.zeros(1)
    for i in range(num_identities):
        ident = make_identity(seed, i)
        faces.append(face68(ident, jaw=z + 0.04, spread=z, rounding=z, closure=z + 0.85, blink=z)[0])
    return np.mean(faces, 0).astype(np.float32)


def densify(points68: np.ndarray, layout: DenseLayout, *, rounding: np.ndarray) -> np.ndarray:
    """(T, 68, 2) -> (T, N, 2): fixed interpolation of the 68, plus lip curvature that depends on rounding."""
    dense = np.einsum("nk,tkd->tnd", layout.weights, points68)
    mids = np.flatnonzero(layout.contour_midpoint)
    if len(mids):
        a, b = layout.contour_pairs[mids, 0], layout.contour_pairs[mids, 1]
        seg = points68[:, b] - points68[:, a]  # (T, M, 2)
        normal = np.stack([seg[..., 1], -seg[..., 0]], -1)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
        centre = points68[:, 48:68].mean(1, keepdims=True)
        outward = np.sign(((dense[:, mids] - centre) * normal).sum(-1, keepdims=True))
        dense[:, mids] += outward * normal * (0.008 + 0.02 * rounding[:, None, None])
    return dense.astype(np.float32)


@dataclass
class Pose:
    angle: np.ndarray  # (T,) radians
    scale: np.ndarray  # (T,)
    shift: np.ndarray  # (T, 2) face units


def make_pose(rng: np.random.Generator, num_frames: int) -> Pose:
    def drift(sd: float) -> np.ndarray:
        return gaussian_filter1d(rng.standard_normal(num_frames + 40), 12.0, mode="nearest")[20:-20] * sd * 5.0

    return Pose(angle=drift(0.035), scale=1.0 + drift(0.02), shift=np.stack([drift(0.03), drift(0.025)], -1))


def to_image(points: np.ndarray, pose: Pose, resolution: int) -> np.ndarray:
    """Face units -> crop pixels: rotate/scale/shift by the head pose, then place the face in the frame."""
    cos, sin = np.cos(pose.angle)[:, None], np.sin(pose.angle)[:, None]
    x, y = points[..., 0], points[..., 1]
    xr = (cos * x - sin * y) * pose.scale[:, None] + pose.shift[:, None, 0]
    yr = (sin * x + cos * y) * pose.scale[:, None] + pose.shift[:, None, 1]
    unit = 0.34 * resolution
    return np.stack([0.5 * resolution + unit * xr, 0.47 * resolution + unit * yr], -1).astype(np.float32)
