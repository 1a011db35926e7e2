"""The real-data loop as a user runs it, on the shared real clips: preprocess at 256 px -> both stages a few steps at
demo size -> the dataset's own sync expert -> bench, every row scored on every test clip; and the paper's dense
(MediaPipe) landmark path trained and generated end to end. Skipped where ../shared/data/real is absent."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import soundfile as sf

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore")]

# a few steps of each part: the loop's plumbing, not its quality
STAGE1 = ["trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.enable_progress_bar=false",
          "validation.max_batches=1", "diffusion.sample_steps=2", "validation.log_media=false"]
STAGE2 = ["trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.enable_progress_bar=false",
          "validation.max_batches=1", "diffusion.sample_steps=2", "validation.media_samples=1", "data.batch_size=4",
          "data.num_workers=0"]


def _preprocess(src: Path, dst: Path, *extra: str) -> None:
    from dreamhead_lit.data.preprocess import main

    assert main(["--src", str(src), "--dst", str(dst), "--layout", "plain", "--size", "256", "--quiet",
                 "--max-seconds", "4", *extra]) == 0


def _train(stage: str, root: Path, runs: Path, extra: list[str]) -> Path:
    from dreamhead_lit.train import main

    assert main([stage, f"data.root={root}", f"runs_root={runs}", "name=real", *extra]) == 0
    return runs / stage / "real" / "checkpoints" / "last.ckpt"


def _baseline_rows_off() -> list[str]:
    """``methods.<name>.enabled=false`` for every row of bench/demo.yaml a baseline package provides, and the extra
    DreamHead rows (the 20-step teacher, the distilled stage 2: tests/test_distill.py covers them)."""
    from dreamhead_lit.bench import load_bench_config

    core = {"ground_truth", "static_reference", "stage2_gt_landmarks", "dreamhead", "audio_to_image", "folder"}
    cfg = load_bench_config("bench/demo.yaml")
    extra = {"dreamhead_teacher_steps", "dreamhead_distilled"}
    return [f"methods.{name}.enabled=false" for name, m in cfg.methods.items() if m.kind not in core or name in extra]


BASELINES_OFF = _baseline_rows_off()


def test_preprocess_train_bench_scores_every_row_on_every_test_clip(real_data, tmp_path):
    from dreamhead_lit.bench import main as bench_main
    from dreamhead_lit.train import main as train_main

    data, runs, out = tmp_path / "real", tmp_path / "runs", tmp_path / "bench"
    _preprocess(real_data / "video", data)
    info = json.loads((data / "dataset.json").read_text())
    assert info["resolution"] == 256 and info["landmark_topology"]["num_points"] == 68
    _train("stage1", data, runs, STAGE1)
    ckpt2 = _train("stage2", data, runs, STAGE2)
    from dreamhead_lit.checkpoints import read_header

    assert read_header(ckpt2)["data"]["resolution"] == 64  # demo size at its working resolution on 256 px data
    assert train_main(["syncnet", f"data.root={data}", f"runs_root={runs}", "trainer.max_steps=5",
                       "trainer.val_check_interval=5", "trainer.enable_progress_bar=false"]) == 0
    code = bench_main(["--config", "bench/demo.yaml", f"data.root={data}", f"runs_root={runs}", f"out_root={out}",
                       "max_frames=20", "progress=false", "tensorboard=false", "csim.frame_stride=10",
                       *(f"methods.{m}.{k}=real" for m in ("dreamhead", "stage2_gt_landmarks") for k in ("stage2",)),
                       "methods.dreamhead.stage1=real", "methods.dreamhead.steps=2",
                       "methods.stage2_gt_landmarks.steps=2",
                       *BASELINES_OFF])  # the baselines are not trained here: their own tests cover them
    assert code == 0
    result = out / data.name / "demo"
    rows = list(csv.DictReader((result / "per_clip.csv").open()))
    test_clips = {json.loads(line)["id"] for line in (data / "index.jsonl").read_text().splitlines()
                  if json.loads(line)["split"] == "test"}
    methods = {"ground_truth", "static_reference", "stage2_gt_landmarks", "dreamhead"}
    assert {(r["method"], r["clip"]) for r in rows} == {(m, c) for m in methods for c in test_clips}
    assert all(r["status"] == "ok" for r in rows), rows
    assert all(r["lse_c"] not in ("", "n/a") for r in rows)  # scored by the dataset's trained expert
    table = (result / "table.md").read_text()
    assert "trained expert syncnet-real" in table and f"{len(test_clips)}/{len(test_clips)}" in table
    assert "0/" not in table.split("\n\n")[1]


def test_mediapipe_dense_data_trains_and_generates_with_478_points(real_data, tmp_path):
    """The paper's setting: dense MediaPipe landmarks through both stages and generation from a real portrait."""
    from dreamhead_lit.checkpoints import read_header
    from dreamhead_lit.data.detectors import mediapipe_available

    if not mediapipe_available():
        pytest.skip("MediaPipe not installed (make install-dense)")
    from dreamhead_lit.generate import main as generate_main
    from dreamhead_lit.video import probe_video

    data, runs = tmp_path / "dense", tmp_path / "runs"
    videos = tmp_path / "videos"
    videos.mkdir()
    for v in sorted((real_data / "video").glob("video-retalking__face_*.mp4")):  # three identities: train, val, test
        (videos / v.name).symlink_to(v)
    _preprocess(videos, data, "--landmarks", "mediapipe")
    assert json.loads((data / "dataset.json").read_text())["landmark_topology"]["num_points"] >= 468
    ckpt1 = _train("stage1", data, runs, [*STAGE1, "data.window=16"])
    ckpt2 = _train("stage2", data, runs, STAGE2)
    for ckpt in (ckpt1, ckpt2):
        assert read_header(ckpt)["data"]["landmark_topology"]["name"].startswith("mediapipe")
    audio = tmp_path / "speech.wav"
    samples, rate = sf.read(sorted((real_data / "audio").glob("*.wav"))[0])
    sf.write(audio, samples[: int(0.6 * rate)], rate)
    out = tmp_path / "dense.mp4"
    portrait = sorted((real_data / "images").glob("*.png"))[0]
    assert generate_main(["--audio", str(audio), "--ref", str(portrait), "--out", str(out), "--stage1", str(ckpt1),
                          "--stage2", str(ckpt2), "--steps", "2"]) == 0
    info = probe_video(out)
    assert info.width == 64 and abs(info.num_frames - 15) <= 1 and info.has_audio
