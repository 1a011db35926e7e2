"""SynthTalk's speakers: a seeded identity (face shape, colours, voice) and how each MEAD emotion changes a face
and a voice (``EMOTION_EFFECTS``, read by the face geometry and by the clip generator for pitch, energy and jaw)."""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np


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
