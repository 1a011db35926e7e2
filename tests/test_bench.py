"""The benchmark runner on the tiny SynthTalk: files and columns, bounds, n/a for missing weights (and --strict),
resuming from the per-clip cache, the stage-2 upper bound rendering the true landmarks, and a 2-process run that
matches one process.

Networks the bench would load from pretrained files are replaced through ``Backends`` by small stand-ins, each
labelled as a test network in the table (their numbers only exercise the plumbing).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dreamhead_lit.bench import (
    PER_CLIP_COLUMNS,
    TABLE_COLUMNS,
    Backends,
    BenchConfig,
    BenchError,
    GroundTruthLandmarks,
    MethodConfig,
    StaticReferenceMethod,
    bench_context,
    load_bench_config,
    main,
    register_method,
    run_bench,
)
from dreamhead_lit.video import write_video

pytestmark = [pytest.mark.usefixtures("one_thread"),  # tiny tensors: see conftest.one_thread
              pytest.mark.filterwarnings("ignore:LPIPSMetric. RANDOM AlexNet trunk")]  # the labelled test stand-in

FID_LABEL = "TEST random conv features (not FID)"
SYNC_LABEL = "TEST colour/energy expert (not SyncNet)"
LANDMARKER_LABEL = "TEST landmarker: template, mouth from lower-face brightness"


# ---------------------------------------------------------------------------------------------------------------------
# Stand-ins for pretrained networks (tests only)


class _Features(nn.Module):
    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # the same weights in every process
        self.conv = nn.Conv2d(3, 6, 5, stride=4)

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


class _ColourExpert:
    """Video: mean colour of the lower half over 5 frames; audio: energy of the 0.2 s window at three gains."""

    name = SYNC_LABEL

    def embed(self, frames, audio):
        t = min(len(frames), len(audio) // 640) - 5
        low = frames[:, frames.shape[1] // 2 :].astype(np.float64) / 255
        v = np.array([low[i : i + 5].mean(axis=(0, 1, 2)) for i in range(t)])
        a = np.array([[np.abs(audio[i * 640 : (i + 5) * 640]).mean() * k for k in (1.0, 2.0, 3.0)] for i in range(t)])
        return torch.tensor(v, dtype=torch.float32), torch.tensor(a, dtype=torch.float32)


class _TemplateLandmarker:
    """A fixed 68-point template whose mouth opens with the brightness of the lower-face region: cheap, and it moves
    when the mouth area changes."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.template = rng.normal(scale=8.0, size=(68, 2)) + 32

    def __call__(self, frame):
        lower = frame[40:56, 20:44].mean() / 255.0
        points = self.template.copy()
        points[48:68, 1] = 44 + (points[48:68, 1] - 44) * (0.2 + 2 * lower)
        return points


class _ColourEmbedder:
    name = "TEST colour-histogram identity embedder"

    def embed(self, image):
        hist = np.concatenate([np.histogram(image[..., c], bins=8, range=(0, 255))[0] for c in range(3)])
        return hist.astype(np.float64) + 1.0, False


def backends(**changes) -> Backends:
    b = Backends(fid_features=(_Features(), FID_LABEL), lpips_random_backbone_for_tests=True,
                 sync_expert=_ColourExpert(), landmarker=(_TemplateLandmarker(), LANDMARKER_LABEL),
                 csim_embedder=_ColourEmbedder())
    for k, v in changes.items():
        setattr(b, k, v)
    return b


@register_method("test_counting_static")
class CountingStatic(StaticReferenceMethod):
    """static_reference that counts the videos it generates (in this process)."""

    calls = 0

    def generate(self, clip, out):
        type(self).calls += 1
        super().generate(clip, out)


# ---------------------------------------------------------------------------------------------------------------------
# Config and data


def fill_folder(root: Path, folder: Path, *, skip: str) -> None:
    """A folder method's outputs: each test clip's frames slightly darkened at 48 px (so the bench resizes them), one
    clip left out."""
    from dreamhead_lit.data.clip import ClipReader, read_index

    folder.mkdir(parents=True, exist_ok=True)
    for rec in read_index(root):
        if rec.split != "test" or rec.id == skip:
            continue
        r = ClipReader(root, rec)
        x = torch.from_numpy(np.array(r.frames())).permute(0, 3, 1, 2).float()
        small = torch.nn.functional.interpolate(x * 0.9, size=(48, 48), mode="bilinear", antialias=True)
        write_video(folder / f"{rec.id}.mp4", small.round().byte().permute(0, 2, 3, 1).numpy(), fps=25, audio=r.audio())


def split_clip_ids(root: Path) -> list[str]:
    from dreamhead_lit.data.clip import read_index

    return sorted(r.id for r in read_index(root) if r.split == "test")


def make_cfg(root: Path, tmp: Path, *, folder: Path | None = None, metrics=None, methods=None, **top) -> dict:
    m = methods if methods is not None else {
        "ground_truth": {"kind": "ground_truth", "label": "ground truth"},
        "static": {"kind": "test_counting_static", "label": "static frame"},
    }
    if folder is not None:
        m["external"] = {"kind": "folder", "folder": str(folder), "uses_source_video": False, "label": "external"}
    cfg = {"name": "t", "data": {"root": str(root), "test_splits": ["test"]}, "out_root": str(tmp / "results"),
           "runs_root": str(tmp / "runs"), "progress": False, "methods": m, "csim": {"frame_stride": 5},
           "metrics": metrics or ["ssim", "psnr", "ssim_mouth", "psnr_mouth", "lpips", "lmd", "sync", "csim", "fid"]}
    cfg.update(top)
    return cfg


def structured(cfg: dict):
    base = OmegaConf.structured(BenchConfig)
    OmegaConf.set_struct(base.methods, False)
    return OmegaConf.merge(base, cfg)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path) as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def first_run(tiny_synth, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    clips = split_clip_ids(tiny_synth)
    fill_folder(tiny_synth, tmp / "external", skip=clips[-1])
    cfg = make_cfg(tiny_synth, tmp, folder=tmp / "external")
    CountingStatic.calls = 0
    result = run_bench(structured(cfg), backends=backends())
    return tmp, cfg, result, clips


# ---------------------------------------------------------------------------------------------------------------------
# Tests


def test_files_columns_and_bounds(first_run):
    tmp, cfg, result, clips = first_run
    out = tmp / "results" / Path(cfg["data"]["root"]).name / "t"
    assert result.out_dir == out
    for name in ("table.md", "table.csv", "results.json", "per_clip.csv", "config.yaml"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    header, table = read_csv(out / "table.csv")
    assert header == list(TABLE_COLUMNS)
    header, per_clip = read_csv(out / "per_clip.csv")
    assert header == list(PER_CLIP_COLUMNS)
    rows = {r["method"]: r for r in table}
    gt, static, ext = rows["ground_truth"], rows["static"], rows["external"]
    # the bounds: the re-encoded clip beats the frozen first frame where speech shows
    assert float(gt["ssim_mouth"]) > float(static["ssim_mouth"]) + 0.05
    assert float(gt["psnr_mouth"]) > float(static["psnr_mouth"])
    assert float(gt["ssim"]) > 0.9 and float(gt["lmd_mouth"]) < float(static["lmd_mouth"])
    assert float(gt["fid"]) < float(static["fid"])
    # jitter relative to the ground truth's: a frozen frame does not move, the re-encoded clip moves as the truth
    assert float(static["jitter_ratio"]) < 0.05 and 0.7 < float(gt["jitter_ratio"]) < 1.3
    assert gt["lmd_unit"] == "px@64" and gt["clips"] == str(len(clips)) and gt["uses_source_video"] == "True"
    assert static["uses_source_video"] == "False"
    # folder: one clip missing, the others read and resized from 48 px
    assert ext["clips"] == str(len(clips) - 1) and ext["clips_expected"] == str(len(clips))
    assert ext["status"].startswith("1 clip(s) not scored")
    ext_rows = {r["clip"]: r for r in per_clip if r["method"] == "external"}
    assert ext_rows[clips[-1]]["status"].startswith("missing")
    assert ext_rows[clips[0]]["status"] == "ok" and ext_rows[clips[0]]["resized_from"] == "48x48"
    assert len(per_clip) == 3 * len(clips)
    # the table names what scored it
    md = (out / "table.md").read_text()
    for text in (FID_LABEL, SYNC_LABEL, LANDMARKER_LABEL, "RANDOM AlexNet trunk", "pixels at 64 px", "M-LMD ↓", "Jitter →1"):
        assert text in md, text
    assert "no (one-shot)" in md  # the external method was declared one-shot
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["sync"] == SYNC_LABEL and results["lmd_unit"] == "px@64"
    assert set(results["methods"]) == {"ground_truth", "static", "external"}
    # table values aggregate the clips as the metrics define them: SSIM over all frames
    frames = np.array([float(r["frames"]) for r in per_clip if r["method"] == "static"])
    ssim = np.array([float(r["ssim"]) for r in per_clip if r["method"] == "static"])
    assert float(static["ssim"]) == pytest.approx((frames * ssim).sum() / frames.sum(), rel=1e-5)


def test_resume_skips_cached_clips(first_run):
    tmp, cfg, result, clips = first_run
    assert result.stats["static"]["computed"] == len(clips) and CountingStatic.calls == len(clips)
    before = (tmp / "results" / Path(cfg["data"]["root"]).name / "t" / "table.csv").read_text()
    CountingStatic.calls = 0
    again = run_bench(structured(cfg), backends=backends())
    assert CountingStatic.calls == 0
    assert {m: s["computed"] for m, s in again.stats.items()} == {"ground_truth": 0, "static": 0, "external": 0}
    assert again.stats["static"]["cached"] == len(clips)
    assert again.table == result.table and again.per_clip == result.per_clip
    assert (result.out_dir / "table.csv").read_text() == before
    # one clip's cached result removed: only that clip is scored again (its video is still cached)
    (result.out_dir / "cache" / "static" / f"{clips[0]}.json").unlink()
    third = run_bench(structured(cfg), backends=backends())
    assert third.stats["static"]["computed"] == 1 and third.stats["static"]["cached"] == len(clips) - 1
    assert CountingStatic.calls == 0
    assert third.table == result.table
    # a metric setting changes: every clip is scored again
    fourth = run_bench(structured({**cfg, "csim": {"frame_stride": 7}}), backends=backends())
    assert fourth.stats["static"]["computed"] == len(clips) and CountingStatic.calls == 0


def test_missing_weights_are_na_with_the_file_name_and_an_error_under_strict(tiny_synth, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DREAMHEAD_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    cfg = make_cfg(tiny_synth, tmp_path, metrics=["ssim", "lpips", "sync", "fid"],
                   methods={"static": {"kind": "static_reference"}}, max_clips=1)
    cfg["methods"]["dreamhead"] = {"kind": "dreamhead"}  # no checkpoints under runs_root: skipped, with the reason
    path = tmp_path / "bench.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    assert main(["--config", str(path)]) == 0
    out = tmp_path / "results" / tiny_synth.name / "t"
    md = (out / "table.md").read_text()
    for name in ("pt_inception-2015-12-05-6726825d.pth", "alexnet-owt-7be5be79.pth", "syncnet_v2.model",
                 "make train-syncnet", str(tmp_path / "no-weights")):
        assert name in md, name
    _, table = read_csv(out / "table.csv")
    row = {r["method"]: r for r in table}
    assert row["static"]["fid"] == "n/a" and row["static"]["lpips"] == "n/a" and row["static"]["lse_c"] == "n/a"
    assert row["static"]["ssim"] not in ("", "n/a")
    assert row["dreamhead"]["status"].startswith("skipped: no stage1 checkpoint")
    results = json.loads((out / "results.json").read_text())
    assert "pt_inception-2015-12-05-6726825d.pth" in results["not_available"]["fid"]
    # --strict: an error naming the files, nothing scored
    capsys.readouterr()
    assert main(["--config", str(path), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "strict" in err and "alexnet-owt-7be5be79.pth" in err and "syncnet_v2.model" in err
    with pytest.raises(BenchError, match="pt_inception"):
        run_bench(structured({**cfg, "strict": True}))


def test_config_files_load_and_name_their_methods():
    demo = load_bench_config("bench/demo.yaml", ["max_clips=2"])
    assert set(demo.methods) == {"ground_truth", "static_reference", "stage2_gt_landmarks", "dreamhead",
                                 "dreamhead_teacher_steps", "dreamhead_distilled", "dreamtalk", "daetalker", "daetalker_reconstruction", "styletalker", "styletalker_clip_motion",
                                 "styletalker_reconstruction"}
    from dreamhead_lit import registry
    from dreamhead_lit.bench.methods import METHOD_KINDS

    registry.discover()  # every kind a shipped config names is registered by importing the packages
    for cfg in (demo, load_bench_config("bench/paper.yaml"), load_bench_config("bench/daetalker.yaml"),
                load_bench_config("bench/dreamtalk.yaml")):
        assert {m.kind for m in cfg.methods.values()} <= set(METHOD_KINDS)
    assert demo.methods.styletalker.options.samples == 3
    assert demo.methods.daetalker.options.pose_source == "clip"
    assert demo.methods.dreamtalk.options.style_source == "other_identity_same_emotion"
    assert demo.methods.dreamhead.protocol == "dubbing" and demo.max_clips == 2
    assert demo.methods.dreamhead_distilled.checkpoints == {"stage2_distilled": "demo"}
    paper = load_bench_config("bench/paper.yaml", ["data=mead"])
    assert paper.data.root == "data/mead" and paper.methods.dreamtalk_official.uses_source_video is True
    assert paper.methods.dreamtalk.kind == "dreamtalk" and paper.methods.dreamtalk_official.kind == "folder"
    with pytest.raises(Exception, match="methods.dreamhead.nope"):
        load_bench_config("bench/demo.yaml", ["methods.dreamhead.nope=1"])


def test_stage2_bound_renders_the_true_landmarks_and_dreamhead_runs(tiny_synth, tmp_path):
    """Both stage methods through pipeline.generate with tiny untrained modules (labelled injected): the stage-2 bound
    must hand stage 2 exactly the rasterised ground-truth landmarks."""
    from dreamhead_lit.bench import DreamHeadMethod, Stage2GTLandmarksMethod, TestClip, select_clips
    from dreamhead_lit.data.datamodule import TalkingHeadDataModule
    from dreamhead_lit.data.landmarks import rasterize_landmarks
    from dreamhead_lit.lit.a2l import A2LDiffusion
    from dreamhead_lit.lit.l2i import L2IDiffusion

    torch.manual_seed(0)
    dm2 = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4, frames_per_clip=2)
    dm2.setup()
    net2 = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [16],
            "head_channels": 8, "norm_groups": 4, "dropout": 0.0, "patch_size": 2, "mode": "dubbing"}
    l2i = L2IDiffusion.from_datamodule(dm2, net=net2).eval()
    dm1 = TalkingHeadDataModule(root=tiny_synth, stage="a2l", batch_size=4, window=16)
    dm1.prepare_data()
    dm1.setup()
    a2l = A2LDiffusion.from_datamodule(dm1, net={"dim": 32, "depth": 1, "heads": 2, "dropout": 0.0}).eval()
    seen: list[torch.Tensor] = []  # per video: the landmark images stage 2 was given
    original = l2i.frame_batches

    def recording(batches, **kw):
        def recorded():
            taken = []
            for batch in batches:
                taken.append(batch["targets"].clone())
                yield batch
            seen.append(torch.cat(taken))
        return original(recorded(), **kw)

    l2i.frame_batches = recording
    emotions: list = []
    a2l_generate = a2l.generate

    def recording_a2l(audio, **kw):
        emotions.append(kw.get("emotion"))
        return a2l_generate(audio, **kw)

    a2l.generate = recording_a2l
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim", "ssim_mouth"], max_clips=1, methods={}))
    ctx = bench_context(cfg)
    mcfg = MethodConfig(kind="stage2_gt_landmarks", steps=1, batch_size=64)
    bound = Stage2GTLandmarksMethod("bound", mcfg, ctx, stage2=l2i)
    dh = DreamHeadMethod("dreamhead", MethodConfig(kind="dreamhead", steps=1, batch_size=64), ctx, stage1=a2l, stage2=l2i)
    result = run_bench(cfg, methods={"bound": bound, "dreamhead": dh})
    assert [r["status"] for r in result.per_clip] == ["ok", "ok"]
    clip: TestClip = select_clips(tiny_synth, ["test"], 1)[0]
    for name in ("bound", "dreamhead"):  # the 68 points each drew, beside its video (the Emotion (lm) column's input)
        drawn = np.load(result.out_dir / "videos" / name / f"{clip.id}.landmarks68.npy")
        assert drawn.shape == (clip.record.num_frames, 68, 2)
    np.testing.assert_allclose(np.load(result.out_dir / "videos" / "bound" / f"{clip.id}.landmarks68.npy"),
                               clip.landmarks68, atol=1e-3)  # the bound draws the truth
    info = l2i.data_info
    idx = np.asarray(info["point_index"])
    regions = torch.as_tensor(np.asarray(dm2.ctx.topology.regions)[idx])
    true = torch.from_numpy(np.asarray(clip.reader.landmarks, dtype=np.float32)[:, idx])
    expected = rasterize_landmarks(true, regions=regions, size=64, sigma=float(info["landmark_sigma"]))
    torch.testing.assert_close(seen[0], expected, atol=2e-3, rtol=0)  # the bound's call came first
    from dreamhead_lit.data.clip import EMOTIONS

    assert emotions == [EMOTIONS.index(clip.record.emotion)]  # stage 1 was given the clip's emotion label
    # the stand-in's canonical landmarks map back onto the true pixels
    stand_in = GroundTruthLandmarks(clip, info)
    assert stand_in.generate(None, num_frames=clip.record.num_frames).shape == (clip.record.num_frames, len(idx), 2)
    md = result.markdown
    assert "dubbing (the paper's protocol)" in md and "stage 2 (mode=dubbing)" in md
    assert {r["method"]: r["protocol"] for r in result.table} == {"bound": "stage-2 bound", "dreamhead": "dubbing"}


# ---------------------------------------------------------------------------------------------------------------------
# Two processes


def _ddp_worker(rank: int, init_file: str, cfg: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        run_bench(structured(cfg), backends=backends())
        dist.barrier()  # leave together: tearing gloo down while the other rank still talks to it can abort
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_processes_give_the_single_process_rows_and_table(tiny_synth, tmp_path):
    import torch.multiprocessing as mp

    clips = split_clip_ids(tiny_synth)
    fill_folder(tiny_synth, tmp_path / "external", skip=clips[1])
    metrics = ["ssim", "psnr", "ssim_mouth", "psnr_mouth", "lmd", "sync", "fid"]  # LPIPS and CSIM: covered above
    one = make_cfg(tiny_synth, tmp_path / "one", folder=tmp_path / "external", metrics=metrics,
                   data={"root": str(tiny_synth), "test_splits": ["test", "test_seen"]})
    two = {**one, "out_root": str(tmp_path / "two" / "results")}
    single = run_bench(structured(one), backends=backends())
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), two), nprocs=2, join=True)
    out1, out2 = single.out_dir, tmp_path / "two" / "results" / tiny_synth.name / "t"
    assert (out2 / "per_clip.csv").read_text() == (out1 / "per_clip.csv").read_text()
    _, rows = read_csv(out2 / "per_clip.csv")
    keys = [(r["method"], r["clip"]) for r in rows]
    all_clips = {c for m, c in keys}
    assert len(keys) == len(set(keys)) == 3 * len(all_clips) and len(all_clips) > len(clips)  # none lost or doubled
    _, t1 = read_csv(out1 / "table.csv")
    _, t2 = read_csv(out2 / "table.csv")
    assert len(t1) == len(t2) == 3
    for a, b in zip(t1, t2):
        for col in TABLE_COLUMNS:
            if col == "fid":  # reduced across processes: the same sums, added in another order
                assert float(b[col]) == pytest.approx(float(a[col]), rel=1e-6, abs=1e-9)
            else:
                assert b[col] == a[col], col
    r2 = json.loads((out2 / "results.json").read_text())
    assert r2["world_size"] == 2
    no_video = len(all_clips) - (len(clips) - 1)  # the folder holds the test split's clips but one
    assert sum(s["computed"] for s in r2["stats"].values()) == 3 * len(all_clips) - no_video


def test_demo_sanity_lines_read_the_table():
    from dreamhead_lit.demo import sanity_checks

    rows = {"ground_truth": {"ssim_mouth": "0.98", "lse_c": "0.75", "lmd_mouth": "0.1"},
            "dreamhead": {"ssim_mouth": "0.86", "lse_c": "0.54", "lmd_mouth": "0.6"},
            "static_reference": {"ssim_mouth": "0.82", "lse_c": "n/a", "lmd_mouth": "1.1"}}
    lines = sanity_checks(rows)
    assert lines[0].startswith("ok ") and "mouth SSIM" in lines[0]
    assert lines[1].startswith("NOT") and "nan" in lines[1]  # a missing figure is never a pass
    assert lines[2].startswith("ok ") and "M-LMD 0.600 < static frame 1.100" in lines[2]
    assert len(lines) == 3  # no distilled rows: no line about them
    rows.update(dreamhead_teacher_steps={"ssim_mouth": "0.86", "lse_c": "0.60"},
                dreamhead_distilled={"ssim_mouth": "0.85", "lse_c": "0.55"})
    distilled = sanity_checks(rows)[3:]
    assert distilled[0].startswith("ok ") and "0.850 within 2 % of the 20-step teacher 0.860" in distilled[0]
    assert distilled[1].startswith("NOT") and "LSE-C" in distilled[1]


def test_a_model_of_another_landmark_set_is_the_rows_reason_not_an_error_per_clip(tiny_synth, tmp_path):
    """Real data with dlib's 68 points and a model trained on SynthTalk's dense set: refused before any clip, naming
    both sets (it used to fail on every clip with ``IndexError: index 68 is out of bounds``)."""
    from dreamhead_lit.bench import DreamHeadMethod, MethodUnavailable
    from dreamhead_lit.data.datamodule import TalkingHeadDataModule
    from dreamhead_lit.data.landmarks import topology_68
    from dreamhead_lit.lit.a2l import A2LDiffusion
    from dreamhead_lit.lit.l2i import L2IDiffusion

    dm2 = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4, frames_per_clip=2)
    dm2.setup()
    net2 = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [16],
            "head_channels": 8, "norm_groups": 4, "dropout": 0.0, "patch_size": 2}
    l2i = L2IDiffusion.from_datamodule(dm2, net=net2).eval()
    dm1 = TalkingHeadDataModule(root=tiny_synth, stage="a2l", batch_size=4, window=16)
    dm1.setup()
    a2l = A2LDiffusion.from_datamodule(dm1, net={"dim": 32, "depth": 1, "heads": 2, "dropout": 0.0}).eval()
    cfg = structured(make_cfg(tiny_synth, tmp_path, metrics=["ssim"], max_clips=1, methods={}))
    ctx = bench_context(cfg)
    ctx.dataset_info = {**ctx.dataset_info, "landmark_topology": topology_68().to_json()}
    with pytest.raises(MethodUnavailable, match="trained on 100-point SynthTalk dense landmarks.*dlib's 68 points"):
        DreamHeadMethod("dreamhead", MethodConfig(kind="dreamhead", steps=1), ctx, stage1=a2l, stage2=l2i)
    DreamHeadMethod("dreamhead", MethodConfig(kind="dreamhead", steps=1), bench_context(cfg), stage1=a2l, stage2=l2i)
