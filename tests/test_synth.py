"""SynthTalk: determinism, audio-mouth coupling, splits, geometry."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dreamhead_lit.data.clip import ClipReader, read_dataset_info, read_index, validate_clip
from dreamhead_lit.data.landmarks import LandmarkTopology
from dreamhead_lit.data.synth import generate_clip, generate_dataset, main, plan_dataset, _layout_for

from conftest import tiny_synth_config


def test_generation_is_deterministic_by_seed(tmp_path):
    cfg = tiny_synth_config(tmp_path)
    plan = plan_dataset(cfg)[5]
    layout = _layout_for(cfg.num_landmarks)
    a, b = generate_clip(cfg, plan, layout), generate_clip(cfg, plan, layout)
    assert np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.landmarks, b.landmarks)
    assert np.array_equal(a.audio, b.audio)
    other = generate_clip(tiny_synth_config(tmp_path, seed=1), plan, layout)
    assert not np.array_equal(a.audio, other.audio)


def test_whole_dataset_is_identical_across_runs_and_worker_counts(tmp_path):
    one = generate_dataset(tiny_synth_config(tmp_path / "a", num_identities=2, test_identities=1, clips_per_identity=3),
                           progress=False)
    two = generate_dataset(tiny_synth_config(tmp_path / "b", num_identities=2, test_identities=1, clips_per_identity=3,
                                             workers=2), progress=False)
    assert one["clips"] == two["clips"] == 6
    for rec in read_index(tmp_path / "a"):
        ra, rb = ClipReader(tmp_path / "a", rec), ClipReader(tmp_path / "b", rec)
        assert np.array_equal(ra.frames(), rb.frames())
        assert np.array_equal(ra.audio(), rb.audio())


def _frame_energy_db(audio: np.ndarray, num_frames: int) -> np.ndarray:
    frames = audio[: num_frames * 640].reshape(num_frames, 640)
    return 10.0 * np.log10((frames**2).mean(1) + 1e-8)


def _frame_f1(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """Centroid of the 200-1100 Hz band per frame: tracks F1 in voiced frames."""
    frames = audio[: num_frames * 640].reshape(num_frames, 640) * np.hanning(640)
    spec = np.abs(np.fft.rfft(frames, n=2048, axis=1)) ** 2
    freqs = np.fft.rfftfreq(2048, 1 / 16000)
    band = (freqs > 200) & (freqs < 1100)
    return (spec[:, band] * freqs[band]).sum(1) / (spec[:, band].sum(1) + 1e-12)


def test_mouth_opening_follows_audio_energy_and_first_formant(tiny_synth):
    energy_corr, f1_corr = [], []
    for rec in read_index(tiny_synth):
        reader = ClipReader(tiny_synth, rec)
        lm = np.asarray(reader.landmarks68)
        opening = lm[:, 66, 1] - lm[:, 62, 1]  # inner lower lip minus inner upper lip
        audio = reader.audio()
        energy = _frame_energy_db(audio, rec.num_frames)
        energy_corr.append(np.corrcoef(opening, energy)[0, 1])
        voiced = energy > energy.max() - 25  # F1 is defined where the voice is on
        f1_corr.append(np.corrcoef(opening[voiced], _frame_f1(audio, rec.num_frames)[voiced])[0, 1])
    assert np.mean(energy_corr) > 0.5 and min(energy_corr) > 0.3, energy_corr
    assert np.mean(f1_corr) > 0.5, f1_corr


def test_splits_are_identity_disjoint_and_seen_split_uses_training_identities(tiny_synth):
    records = read_index(tiny_synth)
    ids = {s: {r.identity for r in records if r.split == s} for s in ("train", "val", "test", "test_seen")}
    assert ids["test"] and ids["train"]
    assert not ids["test"] & (ids["train"] | ids["val"] | ids["test_seen"])
    assert ids["test_seen"] <= ids["train"] and ids["val"] <= ids["train"]
    clip_ids = [r.id for r in records]
    assert len(clip_ids) == len(set(clip_ids))


def test_clips_are_valid_with_exact_geometry(tiny_synth):
    info = read_dataset_info(tiny_synth)
    topo = LandmarkTopology.from_json(info["landmark_topology"])
    assert topo.num_points == 100
    for rec in read_index(tiny_synth):
        meta = validate_clip(tiny_synth, rec, num_landmarks=100)
        reader = ClipReader(tiny_synth, rec, meta)
        lm, lm68 = np.asarray(reader.landmarks), np.asarray(reader.landmarks68)
        assert np.array_equal(topo.sparse(lm), lm68)  # the 68 dlib points are a subset of the dense set
        assert lm.min() > 0 and lm.max() < 64  # the face is inside the crop
        mouth_y = lm68[:, 48:68, 1].mean()
        eyes_y = lm68[:, 36:48, 1].mean()
        assert eyes_y < lm68[:, 30, 1].mean() < mouth_y  # eyes above nose tip above mouth
        assert rec.emotion in meta["id"] and f"level{rec.intensity}" in meta["id"]  # MEAD-style names


def test_emotions_change_pitch_and_brows(tmp_path):
    cfg = tiny_synth_config(tmp_path)
    layout = _layout_for(cfg.num_landmarks)
    base = plan_dataset(cfg)[0]
    from dataclasses import replace

    neutral = generate_clip(cfg, replace(base, emotion="neutral", intensity=1), layout)
    surprised = generate_clip(cfg, replace(base, emotion="surprised", intensity=3), layout)
    brow = lambda c: (c.landmarks68[:, 17:27, 1] - c.landmarks68[:, 36:48, 1].mean(1, keepdims=True)).mean()
    assert brow(surprised) < brow(neutral)  # brows raised (y grows downwards)
    assert surprised.extra_meta["voice"] == neutral.extra_meta["voice"]  # same identity's voice


def test_resume_keeps_valid_clips_and_regenerates_broken_ones(tmp_path):
    cfg = tiny_synth_config(tmp_path, num_identities=2, test_identities=1, clips_per_identity=3)
    generate_dataset(cfg, progress=False)
    first = read_index(tmp_path)[0]
    (tmp_path / "clips" / first.id / "landmarks.npy").unlink()
    summary = generate_dataset(cfg, progress=False)
    assert summary["generated"] == 1
    validate_clip(tmp_path, first)


def test_cli_refuses_other_settings_without_overwrite(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["--out", str(out), "num_identities=2", "test_identities=1", "clips_per_identity=3", "clip_seconds=1.0",
            "workers=1"]
    assert main(args) == 0
    assert "SynthTalk at" in capsys.readouterr().out
    assert main(args[:-1] + ["seed=5", "workers=1"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(args + ["num_identites=3"]) == 2  # misspelt key
    assert "num_identites" in capsys.readouterr().err
    assert json.loads((out / "dataset.json").read_text())["generator"]["seed"] == 0
