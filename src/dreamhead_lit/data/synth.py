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

This module plans the dataset, assembles each clip and writes the dataset (resumable, in parallel); the parts are
``synth_speaker`` (identities, emotion effects), ``synth_speech`` (articulation, audio), ``synth_face`` (landmarks,
head pose, the canonical template) and ``synth_render`` (frames).

    python -m dreamhead_lit.data.synth --out data/synthtalk --size demo [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .clip import (
    EMOTIONS,
    FPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    ClipData,
    ClipError,
    ClipRecord,
    atomic_write_text,
    validate_clip,
    write_clip,
    write_index,
)
from .landmarks import DenseLayout, build_dense_layout
from .synth_face import densify, face68, make_pose, neutral_template, to_image
from .synth_render import FaceRenderer
from .synth_speaker import EMOTION_EFFECTS, make_identity
from .synth_speech import CTRL_PER_FRAME, make_articulation, synthesize_audio

# The generator's parts live in synth_speaker / synth_speech / synth_face / synth_render; these names stay importable
# from here, where the rest of the project and the tests have always found them.
__all__ = ["SynthConfig", "ClipPlan", "plan_dataset", "generate_clip", "generate_dataset", "dataset_info", "summarize",
           "format_summary", "main", "neutral_template", "make_identity", "make_articulation", "synthesize_audio"]


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
