"""The ablation harness on a registry recipe (DreamTalk†): its components name real config keys and bench settings,
a variant retrains exactly the parts it touches and those linked to them (each linked to the variant's run), and
``--method dreamtalk --drop lip_expert`` trains and tables the variant at tiny size."""
from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dreamhead_lit import registry
from dreamhead_lit.ablate import (
    FULL,
    AblationError,
    AblationSettings,
    bench_config,
    check_names,
    load_registry,
    main,
    method_ablation,
    plan_seed,
    variants,
)
from dreamhead_lit.baselines.dreamtalk.bench import DreamTalkMethod
from dreamhead_lit.bench.config import MethodConfig
from dreamhead_lit.bench.methods.base import BenchContext
from dreamhead_lit.config import load_config
from dreamhead_lit.training import fit

from test_dreamtalk_lip_expert import DENOISER_TINY, TINY as EXPERT_TINY
from test_dreamtalk_style_predictor import TINY as PREDICTOR_TINY
from test_l2i import TINY as TINY2

pytestmark = [pytest.mark.usefixtures("one_thread"),  # tiny tensors: see conftest.one_thread
              pytest.mark.filterwarnings("ignore:LPIPSMetric. RANDOM AlexNet trunk")]

REQUIRED = {"lip_expert", "lip_expert_unconditional", "style_guidance", "style_predictor"}
PREDICTOR = "dreamtalk_style_predictor"


def check_training_overrides(name: str, c, m) -> int:
    """Every training override of component ``c`` is a key of its part's demo config schema and takes the value it
    names; returns how many were checked."""
    checked = 0
    for part in m.parts:
        if not c.overrides(part):
            continue
        spec = registry.get(part)
        cfg = load_config(spec.config_file("demo"), c.overrides(part), schema=spec.schema_class())
        for item in c.overrides(part):
            key, value = item.split("=", 1)
            assert OmegaConf.select(cfg, key, default=KeyError) == yaml.safe_load(value), (name, item)
            checked += 1
    return checked


def test_components_name_real_config_keys_and_bench_settings(tmp_path, capsys):
    """Every training override is a key of its part's schema and takes the value it names; every bench setting is
    one the ``dreamtalk`` bench kind accepts."""
    components = load_registry(method="dreamtalk")
    assert REQUIRED <= set(components)
    m = method_ablation("dreamtalk")
    assert m.parts[:2] == ("dreamtalk_lip_expert", "dreamtalk") and m.linked("dreamtalk")
    checked = 0
    for name, c in components.items():
        assert c.description and c.method == "dreamtalk"
        checked += check_training_overrides(name, c, m)
        ctx = BenchContext(tmp_path, str(tmp_path), torch.device("cpu"), {})
        stage2 = SimpleNamespace(net=SimpleNamespace(condition="landmarks", mode="dubbing"), data_info={})
        for row in (c.bench, c.full_row):  # the kind refuses unknown options and style sources
            if row:
                mcfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(MethodConfig),
                                                           {"kind": "dreamtalk", **row}))
                DreamTalkMethod(name, mcfg, ctx, stage2=stage2, denoiser=object(), style_predictor=object())
                checked += 1
    assert checked >= 6
    assert components["lip_expert"].overrides("dreamtalk") == ["lip_expert.checkpoint=null"]

    assert main(["--list", "--method", "dreamtalk"]) == 0
    out = capsys.readouterr().out
    for name, c in components.items():
        assert name in out and c.description in out
    assert "[dreamtalk_lip_expert+dreamtalk+dreamtalk_style_predictor]" in out  # all downstream parts retrained, linked
    assert "needs dreamtalk_style_predictor" in out or PREDICTOR in m.parts


def _settings(root, tmp, **kw) -> AblationSettings:
    overrides = [f"data.root={root}", f"runs_root={tmp / 'runs'}", "trainer.max_steps=2",
                 "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
                 *(f"dreamtalk_lip_expert.{o}" for o in EXPERT_TINY),
                 *(f"dreamtalk.{o}" for o in DENOISER_TINY), "dreamtalk.diffusion.sample_steps=2",
                 *(f"dreamtalk_style_predictor.{o}" for o in PREDICTOR_TINY)]
    return AblationSettings(**{"drop": ["lip_expert"], "method": "dreamtalk", "overrides": overrides,
                               "out_root": str(tmp / "results"), **kw})


def _finish(plan, name: str) -> None:
    """A finished run of the planned config under another name (what ``make train-dreamtalk`` leaves)."""
    run = plan.run_dir.parent / name
    (run / "checkpoints").mkdir(parents=True)
    cfg = plan.cfg.copy()
    cfg.name = name
    OmegaConf.save(cfg, run / "config.yaml")
    (run / "done.json").write_text("{}")


def test_a_variant_retrains_its_parts_and_the_linked_ones_and_reuses_the_others(tmp_path):
    settings = _settings(tmp_path / "data", tmp_path, seeds=[1],
                         drop=["lip_expert", "lip_expert_unconditional", "style_guidance"])
    m = method_ablation("dreamtalk")
    components = load_registry(method=m)
    vs = variants(settings, components, m)
    plans = plan_seed(settings, vs, 1, m)
    full, none, unc, guid = (plans[k] for k in (FULL, "lip_expert", "lip_expert_unconditional", "style_guidance"))
    name = "ablate-dreamtalk-demo-{}-s1".format
    assert [(p.name, p.state) for p in full.values()] == [(name("full"), "train")] * 3
    assert full["dreamtalk"].cfg.lip_expert.checkpoint == name("full")  # linked to the full model's expert run
    assert (full["dreamtalk_lip_expert"].cfg.seed, full["dreamtalk"].cfg.seed) == (17 + 1, 0 + 1)  # configured + k
    # lip_expert: the full model's expert, its own denoiser without one
    assert none["dreamtalk_lip_expert"] is full["dreamtalk_lip_expert"]
    assert none["dreamtalk"].name == name("lip_expert") and none["dreamtalk"].cfg.lip_expert.checkpoint is None
    # the unconditional expert: its own expert, and a denoiser linked to that one, not to the full model's
    assert unc["dreamtalk_lip_expert"].name == name("lip_expert_unconditional")
    assert unc["dreamtalk_lip_expert"].cfg.model.variant == "unconditional"
    assert unc["dreamtalk"].cfg.lip_expert.checkpoint == name("lip_expert_unconditional")
    # style guidance changes the bench row only: every run is the full model's
    assert all(guid[p] is full[p] for p in m.parts)

    # a finished expert of the same config under another name is reused, and the denoisers link to it
    _finish(full["dreamtalk_lip_expert"], "mine")
    plans = plan_seed(settings, vs, 1, m)
    assert (plans[FULL]["dreamtalk_lip_expert"].name, plans[FULL]["dreamtalk_lip_expert"].state) == ("mine", "reused")
    assert plans[FULL]["dreamtalk"].cfg.lip_expert.checkpoint == "mine"
    assert plans["lip_expert_unconditional"]["dreamtalk"].cfg.lip_expert.checkpoint == name("lip_expert_unconditional")

    # the bench rows: the full row and the variants' rows carry their runs; style guidance has its like-for-like row
    cfg = bench_config(settings, vs, plans, 1, tmp_path / "out", m)
    rows = cfg.methods
    assert set(rows) >= {"ground_truth", "static_reference", FULL, "lip_expert", "style_guidance", "full_style_guidance"}
    assert {k: r.kind for k, r in rows.items() if k.startswith(("full", "lip", "style"))} == dict.fromkeys(
        [FULL, "lip_expert", "lip_expert_unconditional", "style_guidance", "full_style_guidance"], "dreamtalk")
    assert rows["lip_expert"].checkpoints == {"dreamtalk_lip_expert": "mine", "dreamtalk": name("lip_expert"),
                                              PREDICTOR: name("lip_expert")}
    assert rows[FULL].stage2 == "demo"  # rendered by DreamHead's stage-2 run of the size, as the bench's rows
    assert rows["style_guidance"].options.guidance_scale == 1.0 and rows["full_style_guidance"].options.guidance_scale == 3.0
    assert rows["full_style_guidance"].checkpoints == rows[FULL].checkpoints
    assert [v.baseline for v in vs[1:]] == [FULL, FULL, "full_style_guidance"]


def test_a_third_linked_part_follows_the_variant_and_unlocks_the_style_predictor_component(tmp_path):
    """With the style predictor in the recipe, a denoiser variant retrains the predictor linked to the variant's
    denoiser, and the style_predictor component compares the null style with the predicted one through the full
    model's predictor."""
    assert registry.recipe("dreamtalk").models[-1] == PREDICTOR
    settings = _settings(tmp_path / "data", tmp_path, drop=["lip_expert", "style_guidance", "style_predictor"])
    m = method_ablation("dreamtalk")
    components = load_registry(method=m)
    check_names(settings.drop, components, m)  # the predictor is a part now: no error
    vs = variants(settings, components, m)
    plans = plan_seed(settings, vs, 0, m)
    full, none = plans[FULL], plans["lip_expert"]
    assert full[PREDICTOR].cfg.denoiser.checkpoint == full["dreamtalk"].name
    assert none[PREDICTOR].name == "ablate-dreamtalk-demo-lip_expert-s0"  # downstream of a retrained part
    assert none[PREDICTOR].cfg.denoiser.checkpoint == none["dreamtalk"].name != full["dreamtalk"].name
    assert plans["style_predictor"] == full
    rows = bench_config(settings, vs, plans, 0, tmp_path / "out", m).methods
    assert rows["style_predictor"].options.style_source == "none"
    assert rows["full_style_predictor"].options.style_source == "predicted"
    assert rows["full_style_predictor"].checkpoints[PREDICTOR] == full[PREDICTOR].name
    assert rows["full_style_predictor"].label == "full model (predicted style)"


def test_a_component_or_recipe_needing_an_unregistered_part_says_so(monkeypatch):
    two = registry.recipe("dreamtalk").parts[:2]
    monkeypatch.setitem(registry._RECIPES, "dreamtalk", registry.Recipe("dreamtalk", two))
    m = method_ablation("dreamtalk")
    with pytest.raises(AblationError, match="style_predictor.*needs dreamtalk_style_predictor.*drop 'style_predictor'"):
        check_names(["style_predictor"], load_registry(method=m), m)
    # the recipe names the predictor before it is registered: one message, before anything is planned
    monkeypatch.delitem(registry._REGISTRY, PREDICTOR, raising=False)
    monkeypatch.setitem(registry._RECIPES, "dreamtalk", registry.Recipe(
        "dreamtalk", (*two, (PREDICTOR, ("denoiser.checkpoint={run}",)))))
    with pytest.raises(AblationError, match=f"{PREDICTOR} are not registered models"):
        method_ablation("dreamtalk")


def test_end_to_end_drop_lip_expert_trains_and_tables_the_variant(tiny_synth, tmp_path, capsys):
    # DreamHead's stage 2 renders every DreamTalk† row (here a tiny one of 2 steps)
    stage2 = load_config("stage2/demo.yaml", [f"data.root={tiny_synth}", f"runs_root={tmp_path / 'runs'}", *TINY2,
                                              "trainer.max_steps=2", "trainer.val_check_interval=2", "name=r2"],
                         schema=registry.get("stage2").schema_class())
    fit("stage2", stage2)
    s = _settings(tiny_synth, tmp_path)
    row = "methods.dreamtalk."
    bench = [f"data.root={tiny_synth}", f"runs_root={tmp_path / 'runs'}", "max_clips=1", "max_frames=12",
             "data.test_splits=[test]", "metrics=[ssim,ssim_mouth]", "progress=false", "tensorboard=false",
             f"{row}stage2=r2", f"{row}steps=1", f"{row}options.motion_steps=2", f"{row}options.style_frames=16",
             f"{row}options.style_source=same_clip"]  # the tiny set lacks another identity for some emotions
    capsys.readouterr()
    assert main(["--method", "dreamtalk", "--drop", "lip_expert", "--out-root", s.out_root, *s.overrides,
                 *(f"--bench={b}" for b in bench)]) == 0
    log = capsys.readouterr().out
    assert log.count("dreamtalk_lip_expert: training") == 1 and log.count("dreamtalk: training") == 2
    assert log.count("dreamtalk_style_predictor: training") == 2  # downstream of each denoiser
    out = tmp_path / "results" / "dreamtalk-demo-lip_expert-s0"
    with open(out / "table.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"full", "lip_expert", "ground_truth", "static_reference"}
    full, drop = rows["full"], rows["lip_expert"]
    assert drop["baseline"] == "full" and full["ssim_mouth_delta"] == ""
    assert float(drop["ssim_mouth_delta"]) == pytest.approx(float(drop["ssim_mouth_mean"]) - float(full["ssim_mouth_mean"]))
    md = (out / "table.md").read_text()
    for text in ("| full model |", "| − lip_expert |", "dreamtalk: lip_expert.checkpoint=null", "(trained)",
                 "scored by the bench method `dreamtalk`", "not used: dreamtalk has lip_expert.checkpoint=null"):
        assert text in md, text
    denoiser = torch.load(tmp_path / "runs" / "dreamtalk" / "ablate-dreamtalk-demo-lip_expert-s0" / "checkpoints" /
                          "last.ckpt", weights_only=False)
    assert denoiser["hyper_parameters"]["lip_expert"] == {"variant": "none"}  # trained without the sync loss
    notes = next(out.glob("*/seed0/table.md")).read_text()  # each row's note says which expert its denoiser had
    assert "- full: DreamTalk†" in notes and "lip expert style" in notes
    assert "- lip_expert: DreamTalk†" in notes and "lip expert none" in notes
