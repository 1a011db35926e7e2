"""Raw video -> processed dataset (dreamhead_lit.data.preprocess): real clips end to end, resuming, bad inputs, layouts.

The real clips are read from shared/data/real/video (never copied); every run uses only their first seconds
(--max-seconds) to keep the file fast. Bad inputs are made here with PyAV.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from dreamhead_lit.data.clip import ClipReader, read_dataset_info, read_index, validate_clip
from dreamhead_lit.data.detectors import FaceDetector, mediapipe_available
from dreamhead_lit.data.preprocess import (
    PreprocessConfig,
    assign_splits,
    discover,
    find_segments,
    format_summary,
    hdtf_identity,
    main,
    preprocess,
    read_hdtf_crops,
    read_split_file,
)
from dreamhead_lit.video import read_video, write_video

SECONDS = 2.2  # of every real clip: 55 frames, just above the 2 s minimum clip length
SIZE = 128  # jpg frames (>= 128)


def _cfg(src: Path, dst: Path, **kw) -> PreprocessConfig:
    return PreprocessConfig(src=str(src), dst=str(dst), layout=kw.pop("layout", "plain"), size=kw.pop("size", SIZE),
                            max_seconds=kw.pop("max_seconds", SECONDS), **kw)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file of a processed dataset (except caches the DataModule adds) -> its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "features" not in p.parts}


@pytest.fixture(scope="module")
def real_video() -> Path:
    from conftest import REAL_DATA  # module scope: the `real_data` fixture is per test

    if not (REAL_DATA / "video").is_dir():
        pytest.skip(f"real clips not present at {REAL_DATA}")
    return REAL_DATA / "video"


@pytest.fixture(scope="module")
def processed(real_video, tmp_path_factory) -> tuple[Path, dict]:
    """The five real clips preprocessed once (plain layout). Read-only for tests."""
    out = tmp_path_factory.mktemp("real") / "ds"
    summary = preprocess(_cfg(real_video, out), progress=False)
    return out, summary


@pytest.fixture(scope="module")
def edtalk(real_video) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, 256, 256, 3) and 16 kHz audio of the 256 px real clip, for building test inputs."""
    v = read_video(real_video / "EDTalk__mouth_source_av.mp4", target_fps=25)
    return v.frames, v.audio


# ---------------------------------------------------------------------------------------------------------------
# Real clips end to end
# ---------------------------------------------------------------------------------------------------------------


def test_real_clips_become_a_dataset_the_datamodule_loads(processed):
    from dreamhead_lit.data.datamodule import TalkingHeadDataModule

    out, summary = processed
    assert summary["clips"] == 5 and summary["skipped"] == [] and not summary["broken"]
    records = read_index(out)
    assert len(records) == 5 and all(r.num_frames == int(SECONDS * 25) for r in records)
    by_split = {}
    for r in records:
        by_split.setdefault(r.split, set()).add(r.identity)
    assert {k: len(v) for k, v in by_split.items()} == {"train": 3, "val": 1, "test": 1}  # identity-disjoint
    info = read_dataset_info(out)
    from dreamhead_lit.data.synth import neutral_template

    assert {"name", "source", "fps", "sample_rate", "resolution", "landmark_topology", "canonical_template68"} <= set(info)
    assert info["resolution"] == SIZE and info["landmark_topology"]["name"] == "dlib68" and info["fps"] == 25
    np.testing.assert_allclose(info["canonical_template68"], neutral_template(), atol=1e-5)
    for stage in ("a2l", "l2i"):
        dm = TalkingHeadDataModule(root=out, stage=stage, batch_size=2)  # default split names
        dm.prepare_data()
        dm.setup()
        assert not dm.skipped
        batch = next(iter(dm.train_dataloader()))
        next(iter(dm.val_dataloader()))
        assert len(dm.test_dataloader()) == 1  # "test"; "test_seen" has no clip and is left out
        if stage == "a2l":
            assert tuple(batch["landmarks"].shape) == (2, 32, 68, 2)
        else:
            assert tuple(batch["frame"].shape) == (2, 3, SIZE, SIZE)


def test_stage1_training_runs_a_few_steps_on_the_real_dataset(processed, tmp_path):
    """What `make train-stage1 DATA=<out>` runs: the stage-1 entry point on the preprocessed real clips."""
    import torch

    from dreamhead_lit.train import main as train_main

    out, _ = processed
    code = train_main(["stage1", "--size", "demo", f"data.root={out}", f"runs_root={tmp_path}", "data.window=16",
                       "data.batch_size=2", "model.dim=32", "model.depth=1", "model.heads=2",
                       "trainer.max_steps=3", "trainer.val_check_interval=3", "validation.max_batches=1",
                       "diffusion.sample_steps=2", "trainer.enable_progress_bar=false"])
    assert code == 0
    ckpt = torch.load(tmp_path / "stage1" / "demo" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)
    assert ckpt["global_step"] == 3 and ckpt["dreamhead"]["data"]["landmark_topology"]["name"] == "dlib68"


def test_landmarks_land_on_the_face_and_the_crop_holds_the_detected_face(processed, real_video):
    from dreamhead_lit.video import iter_frames

    out, _ = processed
    detector = FaceDetector()
    for rec in read_index(out):
        reader = ClipReader(out, rec)
        meta = reader.meta
        assert meta["frames_format"] == "jpg" and meta["detector"].startswith("dlib-hog")
        crops = np.asarray(meta["crop_boxes"])
        faces = np.asarray(meta["face_boxes"])
        assert crops.shape == faces.shape == (rec.num_frames, 4)
        lm = np.asarray(reader.landmarks68)  # (T, 68, 2) crop pixels
        mouth = lm[:, 48:68]
        # the mouth in the lower half of the crop in every frame (its centre: a head tilted back lifts the upper
        # lip to just above the middle), inside the crop, below the eyes; the eyes in the upper half
        assert np.all(mouth[..., 1].mean(1) > SIZE / 2) and np.all(mouth[..., 1] < SIZE)
        assert np.all(mouth[..., 1] > 0.42 * SIZE) and np.all((mouth[..., 0] > 0) & (mouth[..., 0] < SIZE))
        assert np.all(lm[:, 36:48, 1].mean(1) < SIZE / 2)
        assert np.all(lm[:, 36:48, 1].max(1) < mouth[..., 1].min(1))
        # the face detected independently on the source frame lies inside that frame's crop box
        source = next(iter_frames(real_video / meta["source_path"], target_fps=25))
        face = detector.best(source)
        x0, y0, x1, y1 = crops[0]
        tol = 0.02 * (x1 - x0)
        assert x0 - tol <= face.x0 and face.x1 <= x1 + tol and y0 - tol <= face.y0 and face.y1 <= y1 + tol, rec.id
        # and the landmarks drawn on the crop frame cover the face found in that crop
        frame = reader.frame(0)
        crop_face = FaceDetector(min_size=20).best(frame)
        assert crop_face is not None, rec.id
        bx0, by0 = lm[0].min(0)
        bx1, by1 = lm[0].max(0)
        cx, cy = (crop_face.x0 + crop_face.x1) / 2, (crop_face.y0 + crop_face.y1) / 2
        assert bx0 < cx < bx1 and by0 < cy < by1, rec.id


def test_audio_matches_the_source_and_frames_are_25_fps(processed, real_video):
    out, _ = processed
    rec = next(r for r in read_index(out) if r.id == "video-retalking__face_4")  # 30 fps, 44.1 kHz stereo source
    reader = ClipReader(out, rec)
    audio = reader.audio()
    assert len(audio) == rec.num_frames * 640
    source = read_video(real_video / "video-retalking__face_4.mp4", target_fps=25)
    ref = source.audio[: len(audio)]
    assert np.corrcoef(audio, ref)[0, 1] > 0.99  # 16-bit wav of the same samples


# ---------------------------------------------------------------------------------------------------------------
# Resuming
# ---------------------------------------------------------------------------------------------------------------


def test_an_interrupted_run_is_indexed_and_a_rerun_finishes_it_identically(processed, real_video, tmp_path):
    fresh, _ = processed
    out = tmp_path / "ds"
    seen = []

    def stop_after_first(result):
        seen.append(result)
        if result.clips:
            raise KeyboardInterrupt  # as Ctrl-C would, right after the first clip is written

    with pytest.raises(KeyboardInterrupt):
        preprocess(_cfg(real_video, out), progress=False, on_result=stop_after_first)
    first = read_index(out)  # nothing already written is lost: the index was rebuilt on the way out
    assert [r.id for r in first] == [seen[0].clips[0][0]]
    validate_clip(out, first[0])

    summary = preprocess(_cfg(real_video, out), progress=False)
    assert summary["already_done"] == 1 and summary["processed_now"] == 4
    assert _tree(out) == _tree(fresh)

    # a finished dataset is left alone; a damaged clip is redone, and only that one
    again = preprocess(_cfg(real_video, out), progress=False)
    assert again["processed_now"] == 0 and again["already_done"] == 5
    victim = first[0].id
    (out / "clips" / victim / "landmarks68.npy").write_bytes(b"\x93NUMPY garbage")
    repaired = preprocess(_cfg(real_video, out), progress=False)
    assert repaired["processed_now"] == 1 and repaired["clips_written"] == 1
    assert _tree(out) == _tree(fresh)


def test_decoding_twice_and_disk_buffers_give_the_same_clip(processed, real_video, tmp_path, monkeypatch):
    """Long videos: frames not cached between the two passes, crops buffered on disk; the output does not change."""
    import dreamhead_lit.data.preprocess_video as V

    fresh, _ = processed
    monkeypatch.setattr(V, "MEMORY_FRAMES_MB", 0)
    src = tmp_path / "one"
    src.mkdir()
    name = "video-retalking__face_2"  # a "train" identity in the five-clip run, and alone here
    os.symlink(real_video / f"{name}.mp4", src / f"{name}.mp4")
    out = tmp_path / "ds"
    summary = preprocess(_cfg(src, out, frame_cache_mb=0), progress=False)
    assert summary["clips"] == 1 and not (out / ".work").exists()
    assert _tree(out / "clips" / name) == _tree(fresh / "clips" / name)


def test_other_settings_on_an_existing_dataset_are_refused(processed, real_video, tmp_path, capsys):
    fresh, _ = processed
    out = tmp_path / "ds"
    (out / "clips").mkdir(parents=True)
    (out / "dataset.json").write_text((fresh / "dataset.json").read_text())
    with pytest.raises(ValueError, match="size"):
        preprocess(_cfg(real_video, out, size=64), progress=False)
    code = main(["--src", str(real_video), "--dst", str(out), "--size", "64", "--quiet"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_killing_the_process_after_the_first_clip_loses_nothing(processed, real_video, tmp_path):
    """A real Ctrl-C (SIGINT) to the CLI in a subprocess: exit code 130, the written clip indexed, rerun identical."""
    fresh, _ = processed
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "dreamhead_lit.data.preprocess", "--src", str(real_video), "--dst", str(out),
           "--size", str(SIZE), "--max-seconds", str(SECONDS), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "clips").is_dir() and any(not d.name.startswith(".") for d in (out / "clips").iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    written = read_index(out)
    assert 1 <= len(written) < 5
    preprocess(_cfg(real_video, out), progress=False)
    assert _tree(out) == _tree(fresh)


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------


def _noise(t: int, h: int = 256, w: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _write_vfr_odd(path: Path, frames: np.ndarray, audio: np.ndarray) -> None:
    """An mkv with odd frame size and variable frame rate (alternating 50 ms / 25 ms frames), with AAC audio."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "18"})
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        vs.time_base = Fraction(1, 1000)
        aus = c.add_stream("aac", rate=16000)
        aus.layout = "mono"
        t = 0.0
        for i, frame in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            f.pts, f.time_base = int(round(t * 1000)), Fraction(1, 1000)
            c.mux(vs.encode(f))
            t += (0.05, 0.025)[i % 2]
        c.mux(vs.encode(None))
        af = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        rs = av.AudioResampler(format="fltp", layout="mono", rate=16000, frame_size=1024)
        for chunk in rs.resample(af) + rs.resample(None):
            c.mux(aus.encode(chunk))
        c.mux(aus.encode(None))


def test_bad_inputs_are_skipped_or_handled_with_their_reason(edtalk, tmp_path, capsys):
    frames, audio = edtalk
    src = tmp_path / "raw"
    src.mkdir()
    spf = 640  # audio samples per video frame
    n = 55  # 2.2 s
    write_video(src / "good.mp4", frames[:n], audio=audio[: n * spf])
    data = (src / "good.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (src / "empty.mp4").write_bytes(b"")
    (src / "notavideo.mp4").write_text("this is not a video\n")
    write_video(src / "silent.mp4", frames[:n])  # no audio track
    write_video(src / "noface.mp4", _noise(n, seed=1), audio=audio[: n * spf])
    # face 2.4 s, noise 1 s, face 2.4 s: split into two clips; face 1.2 s, noise 0.2 s, face 1.2 s: interpolated
    gappy = np.concatenate([frames[:60], _noise(25, seed=2), frames[60:120]])
    write_video(src / "gappy.mp4", gappy, audio=audio[: len(gappy) * spf])
    short_gap = np.concatenate([frames[:30], _noise(5, seed=3), frames[30:60]])
    write_video(src / "shortgap.mp4", short_gap, audio=audio[: len(short_gap) * spf])
    _write_vfr_odd(src / "vfr_odd.mkv", frames[:75, 2:253, 1:256], audio[: 3 * 16000])  # 251 x 255 px
    # a face shorter than the minimum clip length
    write_video(src / "tooshort.mp4", np.concatenate([frames[:30], _noise(30, seed=4)]), audio=audio[: 60 * spf])

    out = tmp_path / "ds"
    code = main(["--src", str(src), "--dst", str(out), "--size", "64", "--workers", "2", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    reasons = {e["path"]: e["reason"] for e in skipped}
    assert set(reasons) == {"truncated.mp4", "empty.mp4", "notavideo.mp4", "silent.mp4", "noface.mp4", "tooshort.mp4"}
    assert reasons["truncated.mp4"].startswith("unreadable")
    assert reasons["empty.mp4"].startswith("unreadable") and "empty" in reasons["empty.mp4"]
    assert reasons["notavideo.mp4"].startswith("unreadable")
    assert reasons["silent.mp4"].startswith("no audio track")
    assert reasons["noface.mp4"].startswith("no face found")
    assert reasons["tooshort.mp4"].startswith("face lost")
    for path, reason in reasons.items():
        assert f"{path}: {reason}" in printed  # the summary lists every skip with its reason

    records = {r.id: r for r in read_index(out)}
    assert set(records) == {"good", "gappy_s0", "gappy_s1", "shortgap", "vfr_odd"}
    for rec in records.values():
        validate_clip(out, rec)
        assert rec.num_frames >= 50
    assert records["shortgap"].num_frames == len(short_gap)  # the 0.2 s without a face is interpolated over
    # the two face pieces of gappy.mp4: about 2.4 s each, the first starting at 0, the second after the noise
    seg0 = ClipReader(out, records["gappy_s0"]).meta["segment"]
    seg1 = ClipReader(out, records["gappy_s1"]).meta["segment"]
    assert seg0["start_frame"] == 0 and 55 <= seg0["stop_frame"] <= 61
    assert 85 <= seg1["start_frame"] <= 90 and seg1["stop_frame"] == len(gappy) and seg1["count"] == 2
    assert "gappy.mp4" in printed and "kept 2 piece(s)" in printed
    # variable frame rate resampled by timestamps (75 frames over ~2.8 s -> 25 fps), odd size cropped fine
    odd = ClipReader(out, records["vfr_odd"])
    assert 68 <= odd.num_frames <= 72 and odd.meta["source_size"] == [251, 255]
    assert odd.frames().shape == (odd.num_frames, 64, 64, 3)

    # a rerun does not retry the skipped inputs (unchanged files) unless asked
    again = preprocess(PreprocessConfig(src=str(src), dst=str(out), size=64), progress=False)
    assert again["processed_now"] == 0 and again["skipped_earlier"] == 6 and len(again["skipped"]) == 6
    retried = preprocess(PreprocessConfig(src=str(src), dst=str(out), size=64, retry_skipped=True), progress=False)
    assert retried["processed_now"] == 6 and retried["clips"] == 5


def _die_on_crash_inputs(job: tuple):
    """Stands in for the per-input worker: dies like a native crash (SIGKILL) on inputs named crash*."""
    from dreamhead_lit.data.preprocess import SourceResult

    if job[0].rel.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    return SourceResult(job[0].rel, clips=[(job[0].clip_id, 10)])


@pytest.mark.slow
def test_a_worker_that_dies_skips_only_its_input_and_the_run_goes_on(tmp_path):
    from dreamhead_lit.data.preprocess import SourceVideo, _run_parallel

    names = ["a", "b", "crash1", "c", "d", "e"]
    jobs = [(SourceVideo(tmp_path / n, n, n, n), None, "train", tmp_path) for n in names]
    results = []
    _run_parallel(jobs, 2, results.append, fn=_die_on_crash_inputs)
    assert sorted(r.rel for r in results) == sorted(names)  # each input exactly once
    by = {r.rel: r for r in results}
    assert by["crash1"].skipped.startswith("failed: the worker process died") and not by["crash1"].clips
    assert all(by[n].skipped is None and by[n].clips for n in names if n != "crash1")


# ---------------------------------------------------------------------------------------------------------------
# Layouts, splits, segments
# ---------------------------------------------------------------------------------------------------------------


def _write_m4a(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="ipod") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        f = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")
        f.sample_rate, f.pts = 16000, 0
        rs = av.AudioResampler(format="fltp", layout="mono", rate=16000, frame_size=1024)
        for chunk in rs.resample(f) + rs.resample(None):
            c.mux(s.encode(chunk))
        c.mux(s.encode(None))


def test_mead_layout_labels_splits_and_separate_audio(edtalk, tmp_path):
    frames, audio = edtalk
    n = 55
    src = tmp_path / "MEAD"
    # M003 (a held-out test actor): video without sound, audio in the m4a beside it
    silent = src / "M003" / "video" / "front" / "happy" / "level_2" / "001.mp4"
    silent.parent.mkdir(parents=True)
    write_video(silent, frames[:n])
    _write_m4a(src / "M003" / "audio" / "happy" / "level_2" / "001.m4a", audio[: n * 640])
    # W009: the mp4's own track
    own = src / "W009" / "video" / "front" / "neutral" / "level_1" / "001.mp4"
    own.parent.mkdir(parents=True)
    write_video(own, frames[60 : 60 + n], audio=audio[60 * 640 : (60 + n) * 640])
    (src / "W009" / "video" / "left_30" / "neutral" / "level_1").mkdir(parents=True)  # other views are ignored
    write_video(src / "W009" / "video" / "left_30" / "neutral" / "level_1" / "001.mp4", frames[:5])

    items = discover(src, "mead")
    assert [(i.clip_id, i.identity, i.emotion, i.intensity) for i in items] == [
        ("M003_happy_level2_001", "M003", "happy", 2), ("W009_neutral_level1_001", "W009", "neutral", 1)]
    out = tmp_path / "mead"
    summary = preprocess(PreprocessConfig(src=str(src), dst=str(out), layout="mead", size=64), progress=False)
    assert summary["skipped"] == []
    recs = {r.id: r for r in read_index(out)}
    assert recs["M003_happy_level2_001"].split == "test" and recs["M003_happy_level2_001"].emotion == "happy"
    assert recs["M003_happy_level2_001"].intensity == 2 and recs["W009_neutral_level1_001"].split == "train"
    got = ClipReader(out, recs["M003_happy_level2_001"]).audio()
    assert np.corrcoef(got, audio[: len(got)])[0, 1] > 0.99
    # MEAD's labels reach stage 1: its samples carry the clip's emotion and intensity
    from dreamhead_lit.data.clip import EMOTIONS
    from dreamhead_lit.data.datamodule import TalkingHeadDataModule

    dm = TalkingHeadDataModule(root=out, stage="a2l", batch_size=1, window=16, test_splits=["test"])
    dm.setup()
    sample = dm.datasets["test"][0]
    assert int(sample["emotion"]) == EMOTIONS.index("happy") and int(sample["intensity"]) == 2
    # a split file given later only rewrites the index: nothing is processed again
    (tmp_path / "splits.txt").write_text("W009 val\n")
    again = preprocess(PreprocessConfig(src=str(src), dst=str(out), layout="mead", size=64,
                                        splits=str(tmp_path / "splits.txt")), progress=False)
    assert again["processed_now"] == 0
    assert {r.id: r.split for r in read_index(out)} == {"M003_happy_level2_001": "test", "W009_neutral_level1_001": "val"}
    assert "--splits moved 1 identity with clips: W009 train -> val" in format_summary(again)
    # and the moved split is now the recorded one: a rerun without the file keeps it
    preprocess(PreprocessConfig(src=str(src), dst=str(out), layout="mead", size=64), progress=False)
    assert {r.id: r.split for r in read_index(out)} == {"M003_happy_level2_001": "test", "W009_neutral_level1_001": "val"}


def test_hdtf_identities_crop_files_and_plain_identity_from_parent(tmp_path):
    assert hdtf_identity("WDA_KatieHill_000") == "WDA_KatieHill" and hdtf_identity("RD_Radio11_12") == "RD_Radio11"
    assert hdtf_identity("nodigits") == "nodigits"
    src = tmp_path / "hdtf"
    src.mkdir()
    for name in ("WDA_KatieHill_000.mp4", "WDA_KatieHill_001.mp4", "RD_Radio11_0.mp4"):
        (src / name).write_bytes(b"x")
    (src / "WDA_crop_wh.txt").write_text("WDA_KatieHill_000.mp4 608 726 10 700\n")
    assert read_hdtf_crops(src) == {"WDA_KatieHill_000.mp4": (608.0, 10.0, 1334.0, 710.0)}
    items = discover(src, "hdtf")
    assert [(i.clip_id, i.identity) for i in items] == [
        ("RD_Radio11_0", "RD_Radio11"), ("WDA_KatieHill_000", "WDA_KatieHill"), ("WDA_KatieHill_001", "WDA_KatieHill")]
    assert items[1].roi == (608.0, 10.0, 1334.0, 710.0) and items[2].roi is None

    plain = tmp_path / "plain"
    for person in ("alice", "bob"):
        (plain / person).mkdir(parents=True)
        for k in range(2):
            (plain / person / f"take{k}.mov").write_bytes(b"x")
    (plain / ".hidden.mp4").write_bytes(b"x")
    (plain / "notes.txt").write_text("")
    by_parent = discover(plain, "plain", identity_from="parent")
    assert [(i.clip_id, i.identity) for i in by_parent] == [
        ("alice__take0", "alice"), ("alice__take1", "alice"), ("bob__take0", "bob"), ("bob__take1", "bob")]
    assert {i.identity for i in discover(plain, "plain")} == {"take0", "take1"}


def test_assign_splits_is_identity_disjoint_seeded_and_honours_fixed_and_mead_test_actors(tmp_path):
    five = [f"id{k}" for k in range(5)]
    s = assign_splits(five)
    assert sorted(s.values()) == ["test", "train", "train", "train", "val"]
    assert assign_splits(list(reversed(five))) == s  # order of discovery does not matter
    assert assign_splits(five, seed=1) != s or assign_splits(five, seed=2) != s
    # each identity's split is its own seeded draw, the same among 20 identities as among 1000: about 80/10/10
    twenty = assign_splits([f"p{k}" for k in range(20)])
    thousand = assign_splits([f"p{k}" for k in range(1000)])
    assert all(thousand[i] == split for i, split in twenty.items())
    assert 70 <= list(thousand.values()).count("test") <= 130 and 70 <= list(thousand.values()).count("val") <= 130
    assert assign_splits(["a"]) == {"a": "train"} and sorted(assign_splits(["a", "b"]).values()) == ["train", "val"]
    mead = assign_splits(["M003", "M030", "W024", "M005", "W009", "W011"], held_out_test=("M003", "M030", "W024"))
    assert {k for k, v in mead.items() if v == "test"} == {"M003", "M030", "W024"}
    assert set(mead[k] for k in ("M005", "W009", "W011")) == {"train", "val"}
    fixed = assign_splits(five, fixed={"id0": "test", "id1": "test"})
    assert fixed["id0"] == fixed["id1"] == "test"
    (tmp_path / "s.json").write_text(json.dumps({"a": "train", "b": "test"}))
    (tmp_path / "s.txt").write_text("# identity split\na train\nb test  # held out\n")
    assert read_split_file(tmp_path / "s.json") == read_split_file(tmp_path / "s.txt") == {"a": "train", "b": "test"}
    (tmp_path / "bad.txt").write_text("a b c\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        read_split_file(tmp_path / "bad.txt")


def test_find_segments_splits_at_long_gaps_and_drops_short_pieces():
    # detections every 5 frames over 200 frames; a hole from 60 to 100 (two and more missed detections)
    det = [t for t in range(0, 200, 5) if not 60 < t < 100]
    kept, dropped = find_segments(np.array(det), num_frames=200, step=5, max_gap=12, min_frames=50)
    assert kept == [(0, 61), (100, 200)] and dropped == []
    # one missed detection (10 frames apart) is bridged
    det = [t for t in range(0, 200, 5) if t != 100]
    assert find_segments(np.array(det), num_frames=200, step=5, max_gap=12, min_frames=50)[0] == [(0, 200)]
    # a 30-frame piece is dropped; the last piece ends at its last detection when detection failed after it
    det = [0, 5, 10, 15, 20, 25, 100, 105, 110, 115, 120, 125, 130, 135, 140, 145, 150, 155]
    kept, dropped = find_segments(np.array(det), num_frames=200, step=5, max_gap=12, min_frames=50)
    assert kept == [(100, 156)] and dropped == [(0, 26)]
    assert find_segments(np.array([], int), num_frames=10, step=5, max_gap=12, min_frames=5) == ([], [])


@pytest.mark.skipif(not mediapipe_available(), reason="MediaPipe not installed (make install-dense)")
def test_mediapipe_landmarks_make_a_478_point_dataset(real_video, tmp_path):
    from dreamhead_lit.data.datamodule import TalkingHeadDataModule

    src = tmp_path / "one"
    src.mkdir()
    os.symlink(real_video / "SadTalker__WDA_KatieHill_000.mp4", src / "katie.mp4")  # a link, not a copy
    out = tmp_path / "ds"
    summary = preprocess(_cfg(src, out, landmarks="mediapipe", size=64), progress=False)
    assert summary["clips"] == 1, summary
    info = read_dataset_info(out)
    assert info["landmark_topology"]["name"] == "mediapipe478"
    reader = ClipReader(out, read_index(out)[0])
    dense, sparse = np.asarray(reader.landmarks), np.asarray(reader.landmarks68)
    assert dense.shape == (reader.num_frames, 478, 2) and sparse.shape == (reader.num_frames, 68, 2)
    from dreamhead_lit.data.landmarks import LandmarkTopology

    topo = LandmarkTopology.from_json(info["landmark_topology"])
    iod = np.linalg.norm(sparse[:, 36] - sparse[:, 45], axis=-1)
    err = np.linalg.norm(topo.sparse(dense) - sparse, axis=-1) / iod[:, None]
    assert err.mean() < 0.08  # MediaPipe and dlib agree on where the face is
    dm = TalkingHeadDataModule(root=out, stage="a2l", batch_size=1, train_split="train", val_split="train")
    dm.setup()
    assert tuple(dm.datasets["train"][0]["landmarks"].shape) == (32, 478, 2)


# ---------------------------------------------------------------------------------------------------------------
# Hardening: non-finite data, resume on validity and source content, stable splits, the lock, bad arguments
# ---------------------------------------------------------------------------------------------------------------


def _one_video(tmp_path: Path, edtalk, name: str = "a.mp4", start: int = 0, n: int = 55) -> Path:
    """A folder with one 2.2 s talking-face video cut from the real 256 px clip (written here, not a copy)."""
    frames, audio = edtalk
    src = tmp_path / "raw"
    src.mkdir(exist_ok=True)
    write_video(src / name, frames[start:start + n], audio=audio[start * 640:(start + n) * 640])
    return src


def test_nonfinite_landmarks_or_audio_are_never_written_and_the_input_is_skipped_with_the_reason(
        edtalk, tmp_path, monkeypatch):
    import dreamhead_lit.data.preprocess_video as V
    from dreamhead_lit.data.detectors import Dlib68Landmarker

    src = _one_video(tmp_path, edtalk)
    real_call = Dlib68Landmarker.__call__
    calls = []

    def nan_on_frame_7(self, rgb, box):
        calls.append(1)
        pts = real_call(self, rgb, box)
        return pts * np.nan if len(calls) == 8 else pts

    monkeypatch.setattr(Dlib68Landmarker, "__call__", nan_on_frame_7)
    out = tmp_path / "ds_lm"
    summary = preprocess(_cfg(src, out, size=64), progress=False)
    monkeypatch.setattr(Dlib68Landmarker, "__call__", real_call)
    assert summary["clips"] == 0 and not list(out.glob("clips/*"))
    (entry,) = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert entry["path"] == "a.mp4"
    assert entry["reason"].startswith("non-finite landmarks from the detector: dense landmarks has 136 non-finite "
                                      "values (first at frame 7)")

    real_read = V.read_audio_track

    def nan_audio(path, **kw):
        audio = real_read(path, **kw)
        audio[3 * 640 + 5] = np.nan
        return audio

    monkeypatch.setattr(V, "read_audio_track", nan_audio)
    out = tmp_path / "ds_audio"
    summary = preprocess(_cfg(src, out, size=64), progress=False)
    assert summary["clips"] == 0 and not list(out.glob("clips/*"))
    assert summary["skipped"] == [{"path": "a.mp4", "reason": "non-finite audio in the source: the audio track has 1 "
                                                             "non-finite samples (first at frame 3)"}]


def test_a_rerun_redoes_clips_damaged_after_they_were_written_nan_or_truncated(processed, real_video, tmp_path):
    import shutil

    fresh, _ = processed
    out = tmp_path / "ds"
    shutil.copytree(fresh, out)
    first, second = sorted(r.id for r in read_index(out))[:2]
    lm = np.load(out / "clips" / first / "landmarks.npy")
    lm[10, 3] = np.nan  # the header and length stay right: only the values are wrong
    np.save(out / "clips" / first / "landmarks.npy", lm)
    wav = (out / "clips" / second / "audio.wav").read_bytes()
    (out / "clips" / second / "audio.wav").write_bytes(wav[: len(wav) * 2 // 3])
    summary = preprocess(_cfg(real_video, out), progress=False)
    assert summary["processed_now"] == 2 and summary["already_done"] == 3 and summary["clips_written"] == 2
    assert _tree(out) == _tree(fresh)


def test_a_replaced_source_is_redone_a_touched_one_is_not_and_unstamped_clips_are_kept_with_one_note(
        edtalk, tmp_path, capsys):
    src = _one_video(tmp_path, edtalk)
    out = tmp_path / "ds"
    preprocess(_cfg(src, out, size=64), progress=False)
    meta_path = out / "clips" / "a" / "meta.json"
    stamp = json.loads(meta_path.read_text())["source_stamp"]
    assert stamp["size"] == (src / "a.mp4").stat().st_size and len(stamp["sha256_ends"]) == 64
    old_frames = np.load(out / "clips" / "a" / "frames.npy")

    later = (src / "a.mp4").stat().st_mtime_ns + 10**9
    os.utime(src / "a.mp4", ns=(later, later))  # touched (or copied): same content
    again = preprocess(_cfg(src, out, size=64), progress=False)
    assert again["processed_now"] == 0 and again["already_done"] == 1 and again["changed"] == []

    _one_video(tmp_path, edtalk, start=60)  # another recording under the same name
    replaced = preprocess(_cfg(src, out, size=64), progress=False)
    assert replaced["processed_now"] == 1 and replaced["changed"] == ["a.mp4"] and replaced["clips"] == 1
    assert not np.array_equal(np.load(out / "clips" / "a" / "frames.npy"), old_frames)
    assert json.loads(meta_path.read_text())["source_stamp"]["sha256_ends"] != stamp["sha256_ends"]
    assert "1 input changed since their clips were written, redone" in format_summary(replaced)

    meta = json.loads(meta_path.read_text())
    del meta["source_stamp"]  # as written before stamps existed
    meta_path.write_text(json.dumps(meta))
    capsys.readouterr()
    code = main(["--src", str(src), "--dst", str(out), "--size", "64", "--max-seconds", str(SECONDS), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "0 processed now, 1 already done" in printed
    assert printed.count("without a source stamp") == 1 and "1 clip kept without a source stamp" in printed


def test_a_second_src_adds_identities_without_moving_any_clip_between_splits(real_video, tmp_path, capsys):
    """Before: the identities were re-ranked together, and face_1 moved from test to train."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for name in ("video-retalking__face_1", "video-retalking__face_2", "video-retalking__face_4"):
        os.symlink(real_video / f"{name}.mp4", first / f"{name}.mp4")
    for name in ("EDTalk__mouth_source_av", "SadTalker__WDA_KatieHill_000"):
        os.symlink(real_video / f"{name}.mp4", second / f"{name}.mp4")
    out = tmp_path / "ds"
    preprocess(_cfg(first, out, size=64), progress=False)
    before = {r.id: r.split for r in read_index(out)}
    assert sorted(before.values()) == ["test", "train", "val"]  # three identities: one of each
    capsys.readouterr()
    code = main(["--src", str(second), "--dst", str(out), "--size", "64", "--max-seconds", str(SECONDS), "--quiet"])
    printed = capsys.readouterr().out
    after = {r.id: r.split for r in read_index(out)}
    assert code == 0 and len(after) == 5
    assert {k: after[k] for k in before} == before
    for rec in read_index(out):
        assert json.loads((out / "clips" / rec.id / "meta.json").read_text())["split"] == rec.split
    assert ("added 2 clips of 2 new identities to an existing dataset of 3 clips; existing clips keep their splits"
            in printed)


def test_splits_of_identities_with_clips_never_move_and_guarantees_come_from_new_identities():
    old = assign_splits(["a", "b", "c"])
    grown = assign_splits(["a", "b", "c", "d", "e", "f"], recorded=old)
    assert {k: grown[k] for k in old} == old
    # new identities get their own draw, whatever else is in the dataset
    alone = assign_splits([f"n{k}" for k in range(40)])
    mixed = assign_splits([f"n{k}" for k in range(40)], recorded={f"r{k}": "train" for k in range(7)} | {"t": "test"})
    assert mixed == {**alone, **{f"r{k}": "train" for k in range(7)}, "t": "test"}
    # a dataset lacking a test and a val identity takes them from the new ones, never from those with clips
    recorded = {"a": "train", "b": "train", "c": "train"}
    grown = assign_splits(["d", "e"], recorded=recorded)
    assert {k: grown[k] for k in recorded} == recorded and sorted(grown[k] for k in "de") == ["test", "val"]
    # --splits still wins over a recorded split
    assert assign_splits(["a"], recorded={"a": "train"}, fixed={"a": "val"}) == {"a": "val"}
    # tiny datasets: identity-disjoint, a train identity always, val from 2 and test from 3 identities up
    for n in range(1, 9):
        for seed in range(20):
            got = assign_splits([f"x{seed}_{k}" for k in range(n)], seed=seed)
            names = set(got.values())
            assert "train" in names and ("val" in names) == (n >= 2) and ("test" in names) == (n >= 3), (n, seed, got)


def _hold_lock(dst: Path) -> subprocess.Popen:
    """Another process holding the destination lock until killed."""
    code = ("import sys, time; from pathlib import Path; from dreamhead_lit.data.resume import destination_lock\n"
            "with destination_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(dst)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_a_locked_destination_stops_at_once_naming_the_first(tmp_path, capsys):
    import socket

    src = tmp_path / "raw"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"not a video")  # a run gets as far as the lock, then skips this input
    out = tmp_path / "ds"
    out.mkdir()
    holder = _hold_lock(out)
    try:
        start = time.perf_counter()
        code = main(["--src", str(src), "--dst", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and time.perf_counter() - start < 10
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"pid {holder.pid} on host {socket.gethostname()}, started " in err and "another run" in err
        assert sorted(p.name for p in out.iterdir()) == [".preprocess.lock"]  # the second run did nothing
    finally:
        holder.kill()  # a crash: the kernel drops the lock
        holder.wait()
    assert main(["--src", str(src), "--dst", str(out), "--quiet"]) == 0
    assert not (out / ".preprocess.lock").exists()  # released and removed on the way out


def test_the_lock_is_held_for_the_whole_run_and_released_after_an_interruption(tmp_path):
    from dreamhead_lit.data.resume import DestinationBusy, destination_lock

    src = tmp_path / "raw"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"not a video")
    out = tmp_path / "ds"
    held = []

    def probe(result):
        try:
            with destination_lock(out):
                held.append(False)
        except DestinationBusy:
            held.append(True)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess(PreprocessConfig(src=str(src), dst=str(out)), progress=False, on_result=probe)
    assert held == [True] and not (out / ".preprocess.lock").exists()
    with destination_lock(out):  # free again
        pass


@pytest.mark.parametrize("case", ["dst_is_file", "dst_under_file", "empty_src", "no_videos", "missing_splits",
                                  "splits_is_folder"])
def test_bad_arguments_give_one_line_exit_2_and_leave_nothing_behind(tmp_path, capsys, case):
    src = tmp_path / "raw"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"x")
    dst = tmp_path / "ds"
    extra = []
    expected = {"dst_is_file": "is a file, not a dataset folder", "dst_under_file": "cannot create it",
                "empty_src": f"no videos found under {src}", "no_videos": f"no videos found under {src}",
                "missing_splits": "nope.txt", "splits_is_folder": "cannot read it"}[case]
    if case == "dst_is_file":
        dst.write_text("my notes\n")
    elif case == "dst_under_file":
        (tmp_path / "file").write_text("")
        dst = tmp_path / "file" / "ds"
    elif case in ("empty_src", "no_videos"):
        (src / "a.mp4").unlink()
        if case == "no_videos":
            (src / "notes.txt").write_text("")
            (src / ".hidden.mp4").write_bytes(b"x")
    elif case == "missing_splits":
        extra = ["--splits", str(tmp_path / "nope.txt")]
    else:
        extra = ["--splits", str(tmp_path)]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(["--src", str(src), "--dst", str(dst), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created
    if case == "dst_is_file":
        assert dst.read_text() == "my notes\n"
