"""SynthTalk: the embedded default dataset, generated deterministically from a seed.

Why it exists: real talking-face datasets cannot be shipped, yet every stage, metric and ablation needs data whose
audio truly drives the mouth and whose ground truth is exact. Each utterance is one articulatory trajectory
(jaw opening, lip spread, lip rounding, lip closure for p/b/m) that drives both

- the audio: source-filter speech, a glottal harmonic source shaped by four formant resonators whose frequencies
  follow the articulation (F1 rises with jaw opening, F2 with spread, rounding lowers F2/F3), plus fricative and
  burst noise; and
- the landmarks: a parametric 68-point face (dlib order) whose mouth and jaw follow the same trajectory, extended
  to N dense points, with co-articulation (targets interpolated and smoothed), head-pose drift, blinks, and MEAD-style
  emotions (brows, mouth corners, pitch, energy).

Frames are rendered from the landmarks (anti-aliased by supersampling, identity-specific colours and shading).

    python -m dreamhead_lit.data.synth --out data/synthtalk --size demo [key=value ...]
"""
from __future__ import annotations

import argparse
import colorsys
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter1d
from scipy.signal import butter, sosfilt

from .clip import (
    EMOTIONS,
    FPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    ClipData,
    ClipError,
    ClipRecord,
    atomic_write_text,
    clip_dir,
    validate_clip,
    write_clip,
    write_index,
)
from .landmarks import (
    INNER_LIPS,
    LEFT_BROW,
    LEFT_EYE,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
    DenseLayout,
    build_dense_layout,
)

CONTROL_RATE = 200  # articulation samples per second (5 ms): fine enough for closures, coarse enough to be cheap
CTRL_PER_FRAME = CONTROL_RATE // FPS  # 8


@dataclass
class SynthConfig:
    """SynthTalk generator settings (`experiments/synth/*.yaml`)."""

    out: str = "data/synthtalk"
    seed: int = 0
    num_identities: int = 10
    test_identities: int = 3  # identity-disjoint test split ("test")
    clips_per_identity: int = 8
    val_clips_per_identity: int = 1  # held-out clips of training identities ("val")
    seen_test_clips_per_identity: int = 1  # held-out clips of training identities ("test_seen")
    clip_seconds: float = 4.0
    resolution: int = 64  # 64 / 128 / 256
    num_landmarks: int = 131  # >= 68; the first 68 are dlib-ordered
    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))
    neutral_fraction: float = 0.5  # share of neutral clips (MEAD has one neutral level, three per other emotion)
    supersample: int = 0  # anti-aliasing factor; 0 = automatic (4 up to 128 px, 2 above)
    frames_format: Literal["npy", "jpg"] = "npy"  # npy (small data) or jpg
    workers: int = 2


# ---------------------------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Identity:
    name: str
    face_w: float
    face_h: float
    jaw_w: float
    eye_dx: float
    eye_w: float
    eye_h: float
    brow_y: float
    nose_len: float
    mouth_w: float
    upper_lip: float
    lower_lip: float
    skin: tuple[float, float, float]
    lips: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    background: tuple[float, float, float]
    light: float  # light direction angle (radians)
    hair_volume: float
    f0: float  # mean voice pitch (Hz)
    vtl: float  # vocal-tract length factor: formants scale with 1/vtl


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def make_identity(seed: int, index: int) -> Identity:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0xFACE]))
    u = rng.uniform
    female = rng.random() < 0.5
    f0 = u(175, 240) if female else u(95, 140)
    skin = _hsv(u(0.03, 0.10), u(0.25, 0.6), u(0.45, 0.95))
    lips = _hsv(u(0.96, 1.02), u(0.45, 0.7), max(skin) * u(0.55, 0.8))
    hair_choices = [(0.07, 0.6, 0.15), (0.08, 0.7, 0.35), (0.11, 0.55, 0.75), (0.04, 0.75, 0.5), (0.0, 0.0, 0.08)]
    hair = _hsv(*hair_choices[rng.integers(len(hair_choices))])
    iris = _hsv(*[(0.08, 0.7, 0.35), (0.58, 0.6, 0.6), (0.3, 0.5, 0.45)][rng.integers(3)])
    return Identity(
        name=f"synth{index:03d}",
        face_w=u(0.9, 1.08),
        face_h=u(0.95, 1.1),
        jaw_w=u(0.8, 1.0),
        eye_dx=u(0.33, 0.42),
        eye_w=u(0.12, 0.16),
        eye_h=u(0.045, 0.065),
        brow_y=u(-0.56, -0.48),
        nose_len=u(0.9, 1.15),
        mouth_w=u(0.3, 0.4),
        upper_lip=u(0.045, 0.07),
        lower_lip=u(0.055, 0.09),
        skin=skin,
        lips=lips,
        hair=hair,
        iris=iris,
        background=_hsv(u(0, 1), u(0.1, 0.5), u(0.3, 0.9)),
        light=u(-math.pi, math.pi),
        hair_volume=u(0.9, 1.2),
        f0=f0,
        vtl=u(1.05, 1.2) if not female else u(0.88, 1.0),
    )


# ---------------------------------------------------------------------------------------------------------------
# Articulation: phones -> smoothed trajectories at CONTROL_RATE
# ---------------------------------------------------------------------------------------------------------------

# targets: jaw opening [0, 1], lip spread [-1, 1], lip rounding [0, 1], lip closure [0, 1]; NaN = not specified by
# the phone, inherited by interpolation from its neighbours (this is the co-articulation model).
NAN = float("nan")
VOWELS = {
    "a": (0.9, 0.25, 0.0, 0.0),
    "e": (0.5, 0.6, 0.0, 0.0),
    "i": (0.18, 0.95, 0.0, 0.0),
    "o": (0.55, -0.2, 0.75, 0.0),
    "u": (0.22, -0.4, 1.0, 0.0),
}
# name: (targets, voicing amplitude, noise kind, burst)
CONSONANTS = {
    "p": ((0.1, NAN, NAN, 1.0), 0.0, None, True),
    "b": ((0.1, NAN, NAN, 1.0), 0.15, None, True),
    "m": ((0.1, NAN, NAN, 1.0), 0.3, None, False),
    "f": ((0.12, NAN, 0.0, 0.7), 0.0, "f", False),
    "v": ((0.12, NAN, 0.0, 0.7), 0.3, "f", False),
    "s": ((0.1, 0.5, 0.0, 0.0), 0.0, "s", False),
    "z": ((0.1, 0.5, 0.0, 0.0), 0.3, "s", False),
    "sh": ((0.15, NAN, 0.6, 0.0), 0.0, "sh", False),
    "t": ((0.15, NAN, NAN, 0.0), 0.0, None, True),
    "d": ((0.15, NAN, NAN, 0.0), 0.2, None, True),
    "k": ((0.3, NAN, NAN, 0.0), 0.0, None, True),
    "n": ((0.18, NAN, NAN, 0.0), 0.35, None, False),
    "l": ((0.3, NAN, NAN, 0.0), 0.6, None, False),
    "w": ((0.15, -0.3, 0.9, 0.0), 0.6, None, False),
}
REST = (0.04, 0.0, 0.0, 0.85)  # mouth at rest: lips lightly together

# emotion -> (brow raise, inner-brow raise, frown, smile (corner lift), asymmetry, eye widen, upper-lip raise,
#             pitch factor, energy factor, jaw factor)
EMOTION_EFFECTS = {
    "neutral": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0),
    "angry": (-0.02, 0.0, 1.0, -0.1, 0.0, 0.15, 0.2, 1.06, 1.35, 1.1),
    "contempt": (0.0, 0.0, 0.2, 0.3, 1.0, 0.0, 0.1, 0.96, 0.95, 0.9),
    "disgusted": (-0.02, 0.0, 0.6, -0.2, 0.0, -0.2, 1.0, 0.95, 1.0, 0.95),
    "fear": (0.06, 0.8, 0.0, -0.2, 0.0, 0.5, 0.0, 1.18, 0.9, 0.9),
    "happy": (0.03, 0.0, 0.0, 1.0, 0.0, -0.1, 0.0, 1.12, 1.15, 1.05),
    "sad": (0.0, 1.0, 0.0, -0.7, 0.0, -0.25, 0.0, 0.9, 0.75, 0.8),
    "surprised": (0.1, 0.3, 0.0, 0.0, 0.0, 0.7, 0.0, 1.2, 1.1, 1.25),
}


@dataclass
class Articulation:
    """Per-control-step tracks of one utterance (length C = seconds * CONTROL_RATE)."""

    jaw: np.ndarray
    spread: np.ndarray
    rounding: np.ndarray
    closure: np.ndarray
    voicing: np.ndarray  # voiced source amplitude
    noise: dict[str, np.ndarray]  # fricative / burst noise amplitude per kind
    blink: np.ndarray  # eyelid closure [0, 1]
    pitch: np.ndarray  # f0 multiplier (intonation)


def _interp_nans(track: np.ndarray, default: float) -> np.ndarray:
    ok = ~np.isnan(track)
    if not ok.any():
        return np.full_like(track, default)
    idx = np.arange(len(track))
    return np.interp(idx, idx[ok], track[ok])


def make_articulation(rng: np.random.Generator, *, seconds: float, jaw_factor: float) -> Articulation:
    """Random syllable sequence -> co-articulated trajectories (Gaussian-smoothed interpolated targets)."""
    c = int(round(seconds * CONTROL_RATE))
    targets = np.full((c, 4), np.nan)
    voicing = np.zeros(c)
    noise = {k: np.zeros(c) for k in ("s", "sh", "f", "burst")}

    def span(seconds_: float) -> int:
        return max(1, int(round(seconds_ * CONTROL_RATE)))

    pos = span(rng.uniform(0.15, 0.35))
    targets[:pos] = REST
    end = c - span(rng.uniform(0.15, 0.3))
    consonant_names = list(CONSONANTS)
    vowel_names = list(VOWELS)
    while pos < end:
        if rng.random() < 0.12 and pos > span(0.5):  # a pause between words
            n = span(rng.uniform(0.12, 0.35))
            targets[pos : pos + n] = REST
            pos += n
            continue
        if rng.random() < 0.8:  # onset consonant
            name = consonant_names[rng.integers(len(consonant_names))]
            tgt, voiced, kind, burst = CONSONANTS[name]
            n = span(rng.uniform(0.05, 0.1))
            targets[pos : pos + n] = tgt
            voicing[pos : pos + n] = voiced
            if kind:
                noise[kind][pos : pos + n] = 1.0
            if burst:  # release burst right after the closure
                noise["burst"][pos + n : pos + n + span(0.015)] = 1.0
            pos += n
        name = vowel_names[rng.integers(len(vowel_names))]
        n = span(rng.uniform(0.12, 0.26))
        jaw, spread, rnd, clo = VOWELS[name]
        targets[pos : pos + n] = (min(1.0, jaw * jaw_factor * rng.uniform(0.85, 1.1)), spread, rnd, clo)
        voicing[pos : pos + n] = 1.0
        pos += n
    targets[end:] = REST
    voicing[end:] = 0.0
    for v in noise.values():
        v[end:] = 0.0
    targets, voicing = targets[:c], voicing[:c]
    defaults = (REST[0], 0.0, 0.0, 0.0)
    smooth = (6.0, 6.0, 6.0, 2.5)  # control steps (5 ms): jaw and lips move slowly, closures are quick
    tracks = [gaussian_filter1d(_interp_nans(targets[:, k], defaults[k]), smooth[k], mode="nearest") for k in range(4)]
    # blinks: a Poisson process (≈ 17 per minute), each ≈ 150 ms
    blink = np.zeros(c)
    t = rng.exponential(3.5) * CONTROL_RATE
    while t < c:
        i = int(t)
        blink[i : i + span(0.12)] = 1.0
        t += (0.5 + rng.exponential(3.0)) * CONTROL_RATE
    pitch = 1.0 + 0.06 * gaussian_filter1d(rng.standard_normal(c), 40.0, mode="nearest") * 8.0
    pitch *= np.linspace(1.04, 0.94, c)  # declination over the utterance
    return Articulation(
        jaw=np.clip(tracks[0], 0.0, 1.0),
        spread=np.clip(tracks[1], -1.0, 1.0),
        rounding=np.clip(tracks[2], 0.0, 1.0),
        closure=np.clip(tracks[3], 0.0, 1.0),
        voicing=gaussian_filter1d(voicing, 2.0, mode="nearest"),
        noise={k: gaussian_filter1d(v, 1.5, mode="nearest") for k, v in noise.items()},
        blink=gaussian_filter1d(blink, 2.0, mode="nearest").clip(0.0, 1.0),
        pitch=pitch,
    )


def lip_opening(art: Articulation) -> np.ndarray:
    """Inner-lip gap in face units (the quantity the audio's F1 and energy follow)."""
    return (1.0 - art.closure) * (0.025 + 0.3 * art.jaw) * (1.0 + 0.2 * art.rounding)


# ---------------------------------------------------------------------------------------------------------------
# Audio: source-filter synthesis driven by the articulation
# ---------------------------------------------------------------------------------------------------------------


def formants(art: Articulation, vtl: float) -> np.ndarray:
    """(C, 4) formant frequencies in Hz. F1 rises with jaw opening; F2 with spread, falls with rounding."""
    f1 = (260.0 + 620.0 * art.jaw) * (1.0 - 0.12 * art.rounding) * (1.0 - 0.6 * art.closure)
    f2 = 1250.0 + 800.0 * art.spread - 450.0 * art.rounding + 150.0 * art.jaw
    f3 = 2550.0 + 250.0 * art.spread - 300.0 * art.rounding
    f4 = np.full_like(f1, 3600.0)
    return np.stack([f1, f2, f3, f4], -1) / vtl


BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])


def synthesize_audio(
    art: Articulation, identity: Identity, *, seconds: float, pitch_factor: float, energy: float, rng: np.random.Generator
) -> np.ndarray:
    """Harmonic source (1/k spectral tilt) through a cascade of 4 resonators, + shaped noise. Returns float32 samples."""
    n = int(round(seconds * SAMPLE_RATE))
    c = len(art.jaw)
    t_ctrl = (np.arange(c) + 0.5) / CONTROL_RATE
    t = np.arange(n) / SAMPLE_RATE
    f0_ctrl = identity.f0 * pitch_factor * art.pitch
    f0 = np.interp(t, t_ctrl, f0_ctrl) * (1.0 + 0.004 * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1)))
    phase = 2.0 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    fmt = formants(art, identity.vtl)  # (C, 4)
    nyquist_guard = 7600.0
    amp_voiced = art.voicing * (0.35 + 0.65 * art.jaw) * (1.0 - 0.8 * art.closure)
    audio = np.zeros(n)
    k_max = int(nyquist_guard // max(f0_ctrl.min(), 50.0))
    for k in range(1, k_max + 1):
        f = k * f0_ctrl  # (C,)
        # cascade resonator magnitude, each normalised to unit gain at DC: F^2 / sqrt((F^2 - f^2)^2 + (B f)^2)
        gain = np.prod(fmt**2 / np.sqrt((fmt**2 - f[:, None] ** 2) ** 2 + (BANDWIDTHS * f[:, None]) ** 2), axis=1)
        a = amp_voiced * gain / k * (f < nyquist_guard)
        if not a.any():
            continue
        audio += np.interp(t, t_ctrl, a) * np.sin(k * phase)
    white = rng.standard_normal(n)
    bands = {"s": (3800, 7500, 0.5), "sh": (2000, 5000, 0.45), "f": (1000, 7000, 0.18), "burst": (400, 6000, 0.8)}
    for kind, (lo, hi, level) in bands.items():
        env = art.noise[kind]
        if env.max() <= 0:
            continue
        sos = butter(4, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        audio += level * np.interp(t, t_ctrl, env) * sosfilt(sos, white)
    audio += 1e-3 * white  # recording noise floor
    peak = np.abs(audio).max()
    audio = audio / max(peak, 1e-6) * 0.5 * energy
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Face geometry: identity + articulation + emotion -> 68 points (face units) -> dense -> image pixels
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


class FaceRenderer:
    """Anti-aliased rendering of a face from its dense landmarks (supersampled polygon masks composited in numpy)."""

    def __init__(self, ident: Identity, layout: DenseLayout, resolution: int, supersample: int):
        self.ident = ident
        self.topo = layout.topology
        self.r = resolution
        self.ss = supersample
        yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) + 0.5
        self.grid = np.stack([xx, yy], -1) / resolution
        top = np.array(ident.background) * 1.1
        bottom = np.array(ident.background) * 0.75
        ramp = np.linspace(0.0, 1.0, resolution)[:, None, None]
        self.background = np.clip(top * (1 - ramp) + bottom * ramp, 0, 1) * np.ones((resolution, resolution, 3))

    def _mask(self, polygons: list[np.ndarray], *, width: float = 0.0, closed: bool = True) -> np.ndarray:
        size = self.r * self.ss
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        for poly in polygons:
            pts = [tuple(pt) for pt in (poly * self.ss).tolist()]
            if closed:
                draw.polygon(pts, fill=255)
            else:
                draw.line(pts, fill=255, width=max(1, int(round(width * self.ss))), joint="curve")
        if self.ss > 1:
            img = img.reduce(self.ss)  # box filter in C: the anti-aliasing step
        return np.asarray(img, dtype=np.float32)[..., None] / 255.0

    def contour(self, points: np.ndarray, name: str) -> np.ndarray:
        return points[list(self.topo.contours[name])]

    def render(self, points: np.ndarray, *, scale: float, centre: np.ndarray) -> np.ndarray:
        """points (N, 2) crop pixels of one frame -> (H, W, 3) uint8."""
        ident, r = self.ident, self.r
        unit = 0.34 * r * scale  # face unit in pixels for this frame
        jaw = self.contour(points, "jaw")
        # forehead: an arc over the top from the right ear back to the left ear
        left, right = jaw[0], jaw[-1]
        mid = (left + right) / 2
        ang = np.linspace(0.0, np.pi, 15)
        up = np.array([right[1] - left[1], left[0] - right[0]])
        up = up / (np.linalg.norm(up) + 1e-9)
        half = (right - left) / 2
        forehead = mid + np.cos(ang)[:, None] * half + np.sin(ang)[:, None] * up * 0.95 * unit
        face_poly = np.concatenate([jaw, forehead[1:-1]])
        hair_poly = mid + np.cos(np.linspace(0, 2 * np.pi, 30))[:, None] * half * 1.12 * ident.hair_volume
        hair_poly = hair_poly + np.sin(np.linspace(0, 2 * np.pi, 30))[:, None] * up * unit * 1.15 * ident.hair_volume
        hair_poly = hair_poly - up * 0.15 * unit
        neck = np.array([jaw[4], jaw[-5], jaw[-5] + [0, r], jaw[4] + [0, r]])
        # light: linear gradient across the face + darker rim
        d = self.grid - centre / r
        light_dir = np.array([np.cos(ident.light), np.sin(ident.light)])
        rim = np.clip(np.linalg.norm(d, axis=-1) / (1.2 * unit / r), 0, 1) ** 4
        shade = (1.0 + 0.35 * (d @ light_dir) / (unit / r) * 0.5 - 0.35 * rim)[..., None]
        skin = np.array(ident.skin)
        img = self.background.copy()

        def comp(mask: np.ndarray, colour: np.ndarray) -> None:
            nonlocal img
            img = img * (1 - mask) + mask * colour

        comp(self._mask([hair_poly]), np.array(ident.hair))
        comp(self._mask([neck]), skin * 0.78)
        comp(self._mask([face_poly]), np.clip(skin * shade, 0, 1))
        brow_w = 0.06 * unit
        comp(self._mask([self.contour(points, "right_brow"), self.contour(points, "left_brow")], width=brow_w,
                        closed=False), np.array(ident.hair) * 0.8)
        for eye in ("right_eye", "left_eye"):
            poly = self.contour(points, eye)
            white = self._mask([poly])
            centre_eye = poly.mean(0)
            rad = 0.055 * unit
            circle = centre_eye + rad * np.stack([np.cos(ang * 2), np.sin(ang * 2)], -1)
            iris = self._mask([circle]) * white
            comp(white, np.array([0.93, 0.93, 0.9]))
            comp(iris, np.array(ident.iris))
            comp(iris * self._mask([centre_eye + 0.45 * (circle - centre_eye)]), np.array([0.05, 0.05, 0.05]))
        nose = np.concatenate([self.contour(points, "nose_bottom")])
        comp(self._mask([nose], width=0.035 * unit, closed=False) * 0.6, skin * 0.55)
        comp(self._mask([self.contour(points, "nose_bridge")], width=0.03 * unit, closed=False) * 0.25, skin * 0.6)
        outer = self.contour(points, "outer_lips")
        inner = self.contour(points, "inner_lips")
        comp(self._mask([outer]), np.array(ident.lips))
        mouth = self._mask([inner])
        comp(mouth, np.array([0.25, 0.05, 0.07]))
        # upper teeth: a band under the inner upper lip, visible only inside the open mouth
        n_in = len(inner)
        upper = inner[: n_in // 2 + 1]
        teeth = np.concatenate([upper, upper[::-1] + [0, 0.09 * unit]])
        comp(self._mask([teeth]) * mouth, np.array([0.95, 0.95, 0.92]))
        return (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Clips and the dataset
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ClipPlan:
    index: int
    identity_index: int
    clip_index: int
    split: str
    emotion: str
    intensity: int

    @property
    def clip_id(self) -> str:
        level = f"level{self.intensity}"
        return f"synth{self.identity_index:03d}_{self.emotion}_{level}_{self.clip_index:03d}"


def plan_dataset(cfg: SynthConfig) -> list[ClipPlan]:
    """Which clips exist, their splits and emotions; identity-disjoint "test", seen-identity "val"/"test_seen"."""
    if cfg.test_identities >= cfg.num_identities:
        raise ValueError(
            f"test_identities ({cfg.test_identities}) must be smaller than num_identities ({cfg.num_identities})"
        )
    held = cfg.val_clips_per_identity + cfg.seen_test_clips_per_identity
    if held >= cfg.clips_per_identity:
        raise ValueError(f"clips_per_identity ({cfg.clips_per_identity}) leaves no training clip after {held} held out")
    unknown = set(cfg.emotions) - set(EMOTIONS)
    if unknown or not cfg.emotions:
        raise ValueError(f"emotions {sorted(unknown) or '[]'} are not MEAD emotions {list(EMOTIONS)}")
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x5EED]))
    order = rng.permutation(cfg.num_identities)
    test_ids = set(order[: cfg.test_identities].tolist())
    others = [e for e in cfg.emotions if e != "neutral"]
    plans = []
    for ident in range(cfg.num_identities):
        for k in range(cfg.clips_per_identity):
            if ident in test_ids:
                split = "test"
            elif k < cfg.val_clips_per_identity:
                split = "val"
            elif k < held:
                split = "test_seen"
            else:
                split = "train"
            if not others or ("neutral" in cfg.emotions and rng.random() < cfg.neutral_fraction):
                emotion, level = "neutral", 1
            else:
                emotion, level = others[rng.integers(len(others))], int(rng.integers(1, 4))
            plans.append(ClipPlan(len(plans), ident, k, split, emotion, level))
    return plans


def generate_clip(cfg: SynthConfig, plan: ClipPlan, layout: DenseLayout) -> ClipData:
    """One clip, fully determined by (seed, identity, clip index)."""
    ident = make_identity(cfg.seed, plan.identity_index)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, plan.identity_index, plan.clip_index, 0xC11F]))
    effects = EMOTION_EFFECTS[plan.emotion]
    level = plan.intensity / 3.0 if plan.emotion != "neutral" else 0.0
    pitch_f, energy_f, jaw_f = (1.0 + (e - 1.0) * level for e in effects[7:10])
    num_frames = int(round(cfg.clip_seconds * FPS))
    seconds = num_frames / FPS
    art = make_articulation(rng, seconds=seconds, jaw_factor=jaw_f)
    audio = synthesize_audio(art, ident, seconds=seconds, pitch_factor=pitch_f, energy=energy_f, rng=rng)
    # sample the articulation at each video frame's centre
    idx = (np.arange(num_frames) * CTRL_PER_FRAME + CTRL_PER_FRAME // 2).clip(0, len(art.jaw) - 1)
    tracks = {k: getattr(art, k)[idx] for k in ("jaw", "spread", "rounding", "closure", "blink")}
    pts68 = face68(ident, **tracks, emotion=plan.emotion, intensity=level)
    dense = densify(pts68, layout, rounding=tracks["rounding"])
    pose = make_pose(rng, num_frames)
    r = cfg.resolution
    dense_px = to_image(dense, pose, r)
    ss = cfg.supersample or (4 if r <= 128 else 2)
    renderer = FaceRenderer(ident, layout, r, ss)
    centres = to_image(np.zeros((num_frames, 1, 2), np.float32), pose, r)[:, 0]
    frames = np.stack(
        [renderer.render(dense_px[i], scale=float(pose.scale[i]), centre=centres[i]) for i in range(num_frames)]
    )
    articulation = np.stack([tracks["jaw"], tracks["spread"], tracks["rounding"], tracks["closure"]], -1)
    record = ClipRecord(
        id=plan.clip_id,
        identity=ident.name,
        split=plan.split,
        num_frames=num_frames,
        fps=FPS,
        emotion=plan.emotion,
        intensity=plan.intensity,
        source="synthtalk",
    )
    return ClipData(
        record=record,
        frames=frames,
        landmarks=dense_px,
        landmarks68=dense_px[:, :68].copy(),
        audio=audio[: num_frames * SAMPLES_PER_FRAME],
        crop_boxes=np.tile(np.array([0, 0, r, r], np.float32), (num_frames, 1)),
        detector="synthtalk-exact",
        extra_meta={"voice": {"f0": ident.f0, "vtl": ident.vtl}},
        extra_arrays={
            "articulation": articulation.astype(np.float32),  # (T, 4) jaw, spread, rounding, closure
            "pose": np.concatenate([pose.angle[:, None], pose.scale[:, None], pose.shift], -1).astype(np.float32),
        },
    )


def _worker(args: tuple) -> tuple[str, str]:
    cfg, plan, out = args
    layout = _layout_for(cfg.num_landmarks)
    clip = generate_clip(cfg, plan, layout)
    write_clip(out, clip, frames_format=cfg.frames_format)
    return plan.clip_id, plan.split


_LAYOUTS: dict[int, DenseLayout] = {}


def _layout_for(num_points: int) -> DenseLayout:
    if num_points not in _LAYOUTS:
        _LAYOUTS[num_points] = build_dense_layout(num_points, template68=neutral_template())
    return _LAYOUTS[num_points]


def dataset_info(cfg: SynthConfig) -> dict:
    layout = _layout_for(cfg.num_landmarks)
    return {
        "name": "synthtalk",
        "source": "synthtalk",
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "resolution": cfg.resolution,
        "landmark_topology": layout.topology.to_json(),
        "canonical_template68": neutral_template().round(6).tolist(),
        "generator": {k: v for k, v in asdict(cfg).items() if k not in ("out", "workers")},
    }


def generate_dataset(cfg: SynthConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Generate (or finish generating) SynthTalk into ``cfg.out``. Returns a summary dict.

    Resumable: clips already written and valid are kept; a folder generated with other settings is refused unless
    ``overwrite``.
    """
    from ..config import resolve_path

    out = resolve_path(cfg.out)
    info = dataset_info(cfg)
    info_path = out / "dataset.json"
    if info_path.is_file() and not overwrite:
        old = json.loads(info_path.read_text())
        if old.get("generator") != info["generator"]:
            raise ValueError(
                f"{out} holds SynthTalk generated with other settings; pass --overwrite or choose another --out"
            )
    if overwrite and (out / "clips").is_dir():
        import shutil

        shutil.rmtree(out / "clips")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(info_path, json.dumps(info))
    plans = plan_dataset(cfg)
    todo = []
    for plan in plans:
        rec = ClipRecord(plan.clip_id, f"synth{plan.identity_index:03d}", plan.split, int(round(cfg.clip_seconds * FPS)))
        try:
            validate_clip(out, rec, num_landmarks=cfg.num_landmarks)
        except ClipError:
            todo.append(plan)
    start = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="SynthTalk clips", unit="clip", disable=not progress)
    jobs = [(cfg, plan, out) for plan in todo]
    if cfg.workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(cfg.workers) as pool:
            for _ in pool.imap_unordered(_worker, jobs):
                bar.update()
    else:
        for job in jobs:
            _worker(job)
            bar.update()
    bar.close()
    records = [
        ClipRecord(
            id=p.clip_id,
            identity=f"synth{p.identity_index:03d}",
            split=p.split,
            num_frames=int(round(cfg.clip_seconds * FPS)),
            fps=FPS,
            emotion=p.emotion,
            intensity=p.intensity,
            source="synthtalk",
        )
        for p in plans
    ]
    write_index(out, records)
    return summarize(out, records, seconds=time.perf_counter() - start, generated=len(todo))


def summarize(out: Path, records: list[ClipRecord], *, seconds: float = 0.0, generated: int = 0) -> dict:
    splits: dict[str, dict] = {}
    for r in records:
        s = splits.setdefault(r.split, {"clips": 0, "frames": 0, "identities": set()})
        s["clips"] += 1
        s["frames"] += r.num_frames
        s["identities"].add(r.identity)
    emotions: dict[str, int] = {}
    for r in records:
        emotions[r.emotion] = emotions.get(r.emotion, 0) + 1
    return {
        "out": str(out),
        "clips": len(records),
        "generated": generated,
        "frames": sum(r.num_frames for r in records),
        "hours": sum(r.num_frames for r in records) / FPS / 3600.0,
        "identities": len({r.identity for r in records}),
        "splits": {k: {**v, "identities": len(v["identities"])} for k, v in sorted(splits.items())},
        "emotions": dict(sorted(emotions.items())),
        "seconds": seconds,
    }


def format_summary(summary: dict) -> str:
    lines = [
        f"SynthTalk at {summary['out']}: {summary['clips']} clips ({summary['generated']} generated now in "
        f"{summary['seconds']:.1f} s), {summary['identities']} identities, {summary['frames']} frames "
        f"({summary['hours'] * 60:.1f} min)",
    ]
    for name, s in summary["splits"].items():
        lines.append(f"  {name:<10} {s['clips']:>4} clips  {s['identities']:>3} identities  {s['frames']:>6} frames")
    lines.append("  emotions: " + ", ".join(f"{k} {v}" for k, v in summary["emotions"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..config import ConfigError, load_config, resolve_path

    parser = argparse.ArgumentParser(
        prog="python -m dreamhead_lit.data.synth", description="Generate the SynthTalk embedded dataset."
    )
    parser.add_argument("--out", help="output folder (default: the config's `out`, data/synthtalk)")
    parser.add_argument("--size", default="demo", help="experiments/synth/<size>.yaml (demo or paper)")
    parser.add_argument("--workers", type=int, help="parallel processes")
    parser.add_argument("--overwrite", action="store_true", help="regenerate everything")
    parser.add_argument("--preview", action="store_true", help="write preview.png (frames with landmarks)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. num_identities=4")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out={args.out}")
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    try:
        cfg_node = load_config(f"synth/{args.size}.yaml", overrides, schema=SynthConfig)
        from omegaconf import OmegaConf

        cfg = SynthConfig(**OmegaConf.to_container(cfg_node))
        summary = generate_dataset(cfg, overwrite=args.overwrite)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    if args.preview:
        from .preview import write_preview

        path = write_preview(resolve_path(cfg.out))
        print(f"preview: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
