"""SynthTalk's speech: phones -> co-articulated trajectories (jaw opening, lip spread, rounding, closure) at
``CONTROL_RATE`` -> source-filter audio driven by the same trajectories (the face geometry follows them too, so the
audio truly drives the mouth)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import butter, sosfilt

from .clip import FPS, SAMPLE_RATE
from .synth_speaker import Identity

CONTROL_RATE = 200  # articulation samples per second (5 ms): fine enough for closures, coarse enough to be cheap
CTRL_PER_FRAME = CONTROL_RATE // FPS  # 8

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
