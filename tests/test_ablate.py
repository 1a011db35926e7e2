"""The ablation harness: the registry, every registered ablation trains, the end-to-end table on tiny models with
run reuse, resumption and caching."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dreamhead_lit.ablate import (
    AblationError,
    AblationSettings,
    _shared_overrides,
    load_registry,
    main,
    plan_run,
    plan_seed,
    run_ablation,
    variants,
)
from dreamhead_lit.config import load_config
from dreamhead_lit import registry
from dreamhead_lit.training import fit

from test_a2l import TINY as TINY1
from test_bench import backends
from test_l2i import TINY as TINY2

pytestmark = [pytest.mark.usefixtures("one_thread"),  # tiny tensors: see conftest.one_thread
              pytest.mark.filterwarnings("ignore:LPIPSMetric. RANDOM AlexNet trunk")]

REQUIRED = {"temporal_smooth", "landmark_hierarchy", "reference_image", "dense_landmarks", "audio_context", "cfg", "ema"}
QUICK = ["trainer.val_check_interval=2", "optim.warmup_steps=0", "validation.max_batches=1", "validation.log_media=false",
         "trainer.enable_progress_bar=false", "diffusion.sample_steps=2"]


def test_list_and_unknown_names(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    registry = load_registry()
    assert REQUIRED <= set(registry)
    for name, component in registry.items():
        assert name in out and component.description in out
    assert main(["--drop", "temporal_smoothing"]) == 2
    err = capsys.readouterr().err
    assert "unknown ablation(s) 'temporal_smoothing'" in err and all(name in err for name in registry)


def _stage_overrides(stage: str) -> list[str]:
    return [*(TINY1 if stage == "stage1" else TINY2), *QUICK]


@pytest.mark.parametrize("name", sorted(load_registry()))
def test_every_registered_ablation_trains_a_step(name, tiny_synth, tmp_path):
    """Each registered ablation's overrides compose with its stages' configs and train (so none rots)."""
    component = load_registry()[name]
    for stage in ("stage1", "stage2"):
        if not component.overrides(stage):
            continue
        cfg = load_config(f"{stage}/demo.yaml", [f"data.root={tiny_synth}", f"runs_root={tmp_path}",
                                                 *_stage_overrides(stage), "trainer.max_steps=1",
                                                 *component.overrides(stage), f"name={name}"],
                          schema=registry.get(stage).schema_class())
        run = fit(stage, cfg)
        assert (run / "checkpoints" / "last.ckpt").is_file(), (name, stage)
        saved = load_config(run / "config.yaml", schema=registry.get(stage).schema_class())
        for item in component.overrides(stage):  # the run really is the variant
            key, value = item.split("=", 1)
            assert str(_get(saved, key)).lower() == value.lower(), (name, item)


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def _settings(root: Path, tmp: Path, **kw) -> AblationSettings:
    overrides = [f"data.root={root}", f"runs_root={tmp / 'runs'}", "trainer.max_steps=2", *QUICK,
                 *(f"stage1.{o}" for o in TINY1), *(f"stage2.{o}" for o in TINY2)]
    bench = [f"data.root={root}", f"runs_root={tmp / 'runs'}", "max_clips=1", "data.test_splits=[test]",
             "metrics=[ssim_mouth,lmd]", "progress=false", "tensorboard=false", "methods.dreamhead.steps=1"]
    return AblationSettings(**{"drop": ["temporal_smooth"], "overrides": overrides, "bench_overrides": bench,
                               "out_root": str(tmp / "results"), **kw})


def test_ablation_table_reuses_runs_and_resumes(tiny_synth, tmp_path):
    settings = _settings(tiny_synth, tmp_path)
    # a full-model stage-1 run trained earlier under another name, with the same config: reused, not retrained
    mine = load_config("stage1/demo.yaml", [*_shared_overrides(settings, 0, "stage1"), "name=mine"],
                       schema=registry.get("stage1").schema_class())
    fit("stage1", mine)
    logs: list[str] = []
    out = run_ablation(settings, backends=backends(), log=logs.append)
    text = "\n".join(logs)
    assert f"stage1: reusing finished run {tmp_path / 'runs' / 'stage1' / 'mine'}" in text
    assert "stage1: training" in text and "stage2: training" in text  # the variant's stage 1, the full stage 2
    assert out == tmp_path / "results" / "demo-temporal_smooth-s0"
    with open(out / "table.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"full", "temporal_smooth", "ground_truth", "static_reference"}
    assert rows["ground_truth"]["lm_lmd_mouth_mean"] == ""  # stage-1 landmark figures only for the models
    full, drop = rows["full"], rows["temporal_smooth"]
    for key in ("lm_lmd_mouth", "lm_jitter_ratio", "lmd_mouth", "jitter_ratio", "ssim_mouth"):  # landmarks, videos
        assert float(drop[f"{key}_delta"]) == pytest.approx(float(drop[f"{key}_mean"]) - float(full[f"{key}_mean"]))
        assert full[f"{key}_delta"] == ""  # the full model has no delta
    assert drop["lm_jitter_ratio_mean"] != full["lm_jitter_ratio_mean"]  # two different stage-1 runs were scored
    md = (out / "table.md").read_text()
    for text in ("| full model |", "| − temporal_smooth |", "M-LMD (lm) ↓", "Jitter (lm) →1", "SSIM-m ↑",
                 "model.temporal_units=false", "(reused)", "(trained)"):
        assert text in md, text
    blob = json.loads((out / "ablation.json").read_text())
    assert blob["settings"]["drop"] == ["temporal_smooth"] and "0" in {str(k) for k in blob["seeds"]}
    # the variant's stage 1 really differs from the full one
    variant = tmp_path / "runs" / "stage1" / "ablate-demo-temporal_smooth-s0"
    assert "temporal_units: false" in (variant / "config.yaml").read_text()

    # again: every run reused, the landmark scores and bench clips read from their caches
    logs.clear()
    run_ablation(settings, backends=backends(), log=logs.append)
    assert "training" not in "\n".join(logs) and "resuming" not in "\n".join(logs)

    # an interrupted variant run (checkpoint, no done.json) is resumed, not restarted or duplicated
    (variant / "done.json").unlink()
    cfg_overrides = _shared_overrides(settings, 0, "stage1")
    component = load_registry()["temporal_smooth"].overrides("stage1")
    plan = plan_run("stage1", "demo", variant.name, [*cfg_overrides, *component])
    assert (plan.state, plan.run_dir) == ("resume", variant)
    # a run of that name with another config is an error that says what differs, not an overwrite
    with pytest.raises(AblationError, match="loss.velocity_weight"):
        plan_run("stage1", "demo", variant.name, [*cfg_overrides, "model.temporal_units=false"])


def test_a_one_shot_variant_is_compared_with_the_full_model_benched_one_shot(tiny_synth, tmp_path):
    """landmark_hierarchy with a reference-mode stage 2 cannot follow the clip's pose: its deltas are taken against
    the full model benched one-shot, and it has no stage-1 landmark figures."""
    out = run_ablation(_settings(tiny_synth, tmp_path, drop=["landmark_hierarchy"]), backends=backends(),
                       log=lambda *_: None)
    with open(out / "table.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert {"full", "full_one_shot", "landmark_hierarchy"} <= set(rows)
    drop, base = rows["landmark_hierarchy"], rows["full_one_shot"]
    assert drop["baseline"] == "full_one_shot" and drop["lm_lmd_mouth_mean"] == ""
    assert float(drop["ssim_mouth_delta"]) == pytest.approx(float(drop["ssim_mouth_mean"]) - float(base["ssim_mouth_mean"]))
    md = (out / "table.md").read_text()
    assert "| full model (one-shot) |" in md and "model.condition=audio" in md
    bench_md = next(out.glob("*/seed0/table.md")).read_text()
    assert "pose frozen" in bench_md
    assert "condition: audio" in (tmp_path / "runs" / "stage2" / "ablate-demo-landmark_hierarchy-s0" / "config.yaml").read_text()


def test_if_needed_keeps_a_finished_run_but_says_when_its_config_differs(tiny_synth, tmp_path, capsys):
    from dreamhead_lit.train import main as train_main

    args = ["stage1", f"data.root={tiny_synth}", f"runs_root={tmp_path}", *TINY1, *QUICK, "name=x"]
    assert train_main([*args, "trainer.max_steps=1"]) == 0
    capsys.readouterr()
    assert train_main([*args, "trainer.max_steps=1", "trainer.enable_progress_bar=true", "--if-needed"]) == 0
    captured = capsys.readouterr()
    assert "not retraining" in captured.out and "warning" not in captured.err  # display settings: not the experiment
    assert train_main([*args, "trainer.max_steps=2", "--if-needed"]) == 0
    captured = capsys.readouterr()
    assert "not retraining" in captured.out
    assert "trainer.max_steps: 1 there, 2 now" in captured.err and "name=" in captured.err


def test_a_named_ablation_trains_its_own_runs_beside_default_named_ones_of_another_config(tiny_synth, tmp_path):
    """The error for a default-named run of another config advises --name: a named ablation must then plan runs of
    its own (nothing is trained here: planning only reads configs)."""
    from omegaconf import OmegaConf

    settings = _settings(tiny_synth, tmp_path)
    taken = tmp_path / "runs" / "stage1" / "ablate-demo-temporal_smooth-s0"  # the variant under another budget
    other = load_config("stage1/demo.yaml", [*_shared_overrides(settings, 0, "stage1"), "trainer.max_steps=1"],
                        schema=registry.get("stage1").schema_class())
    (taken / "checkpoints").mkdir(parents=True)
    OmegaConf.save(other, taken / "config.yaml")
    (taken / "checkpoints" / "last.ckpt").write_bytes(b"")
    vs = variants(settings, load_registry())
    with pytest.raises(AblationError, match="--name"):
        plan_seed(settings, vs, 0)
    named = _settings(tiny_synth, tmp_path, name="longer")
    plans = plan_seed(named, variants(named, load_registry()), 0)
    assert plans["temporal_smooth"]["stage1"].run_dir == tmp_path / "runs" / "stage1" / "ablate-longer-temporal_smooth-s0"
    assert plans["temporal_smooth"]["stage1"].state == "train"
    assert plans["full"]["stage1"].run_dir.name == "ablate-longer-full-s0"


def test_data_option_takes_a_config_group_or_a_dataset_folder(tmp_path):
    group = AblationSettings(drop=["cfg"], data="hdtf", seeds=[0, 1])
    assert group.data_overrides == ["data=hdtf"] and group.run_name == "demo-hdtf-cfg-s0-1"
    folder = AblationSettings(drop=["cfg", "ema"], data=str(tmp_path / "my_set"), size="paper")
    assert folder.data_overrides == [f"data.root={tmp_path / 'my_set'}"] and folder.run_name == "paper-my_set-cfg+ema-s0"
    assert AblationSettings(drop=["ema"]).data_overrides == []


def test_ctrl_c_during_training_says_how_to_continue(tiny_synth, tmp_path, monkeypatch, capsys):
    """Lightning ends the process with sys.exit(1) after a graceful Ctrl-C (last.ckpt saved): the harness turns that
    into its own message and exit code 130; the same command then resumes (see the resume test above)."""
    import dreamhead_lit.training as training

    def interrupted_fit(stage, cfg, **_):
        raise SystemExit(1)

    monkeypatch.setattr(training, "fit", interrupted_fit)
    s = _settings(tiny_synth, tmp_path)
    args = ["--drop", "temporal_smooth", "--out-root", s.out_root, *s.overrides, *(f"--bench={b}" for b in s.bench_overrides)]
    assert main(args) == 130
    assert "run the same command again to continue" in capsys.readouterr().err


def test_distillation_variant_distils_the_full_stage2_and_benches_the_student(tiny_synth, tmp_path):
    """The optional part: only the distillation variant trains a student, from the full model's stage-2 run (its
    teacher), and its row renders with the student in place of stage 2."""
    settings = _settings(tiny_synth, tmp_path, drop=["distillation"])
    settings.overrides = [*(o for o in settings.overrides if not o.startswith("diffusion.")),
                          "stage1.diffusion.sample_steps=2", "stage2.diffusion.sample_steps=2",
                          "stage2_distilled.teacher.steps=2", "stage2_distilled.data.batch_size=2",
                          "stage2_distilled.data.frames_per_clip=2", "stage2_distilled.data.num_workers=0"]
    logs: list[str] = []
    out = run_ablation(settings, backends=backends(), log=logs.append)
    text = "\n".join(logs)
    assert text.count("stage2: training") == 1 and text.count("stage2_distilled: training") == 1
    runs = tmp_path / "runs"
    student = runs / "stage2_distilled" / "ablate-demo-distillation-s0"
    full_stage2 = next(p for p in (runs / "stage2").iterdir() if (p / "done.json").is_file())
    assert f"run: {full_stage2.name}" in (student / "config.yaml").read_text()  # teacher.run: the full model's
    with open(out / "table.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert {"full", "distillation"} <= set(rows)
    assert "| DreamHead (distilled, 2 steps) |" in (out / "table.md").read_text()
    blob = json.loads(next(out.glob("*/seed0/results.json")).read_text())
    facts = {m["facts"]["distilled"] for m in blob["methods"].values() if "distilled" in m.get("facts", {})}
    assert facts == {True, False}
