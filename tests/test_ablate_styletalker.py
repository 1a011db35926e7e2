"""The ablation harness on StyleTalker†'s recipe: its components (the flow prior, the sync discriminator) name real
config keys and bench settings the ``styletalker`` kind accepts, and a variant retrains only the motion model, on
the full model's autoencoder (and, for the prior, its discriminator). No training: the plans and bench rows."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from dreamhead_lit.ablate import FULL, AblationSettings, bench_config, load_registry, main, method_ablation, plan_seed, \
    variants
from dreamhead_lit.baselines.styletalker.bench import StyleTalkerMethod
from dreamhead_lit.bench.config import MethodConfig
from dreamhead_lit.bench.methods.base import BenchContext

from test_ablate_dreamtalk import check_training_overrides
from test_styletalker_bench import FakeAutoencoder, FakeMotion

REQUIRED = {"flow_prior", "sync_discriminator"}
AE, SYNC, MOTION = "styletalker_autoencoder", "styletalker_sync", "styletalker"


def test_components_name_real_config_keys_and_bench_settings(tmp_path, capsys):
    components = load_registry(method="styletalker")
    assert REQUIRED <= set(components)
    m = method_ablation("styletalker")
    assert m.parts == (AE, SYNC, MOTION) and m.linked(MOTION) and m.kind == "styletalker"
    checked = 0
    for name, c in components.items():
        assert c.description and c.method == "styletalker"
        checked += check_training_overrides(name, c, m)
        ctx = BenchContext(tmp_path, str(tmp_path), torch.device("cpu"), {})
        for row in (c.bench, c.full_row):  # the kind refuses unknown options
            if row:
                mcfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(MethodConfig),
                                                           {"kind": "styletalker", **row}))
                StyleTalkerMethod(name, mcfg, ctx, motion=FakeMotion(tmp_path), autoencoder=FakeAutoencoder(tmp_path))
                checked += 1
    assert checked == 3  # two training overrides, one bench row
    assert main(["--list", "--method", "styletalker"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in components)


def test_a_variant_retrains_only_the_motion_model(tmp_path):
    settings = AblationSettings(drop=["flow_prior", "sync_discriminator"], method="styletalker", seeds=[0],
                                overrides=[f"runs_root={tmp_path / 'runs'}"], out_root=str(tmp_path / "results"))
    m = method_ablation("styletalker")
    vs = variants(settings, load_registry(method=m), m)
    plans = plan_seed(settings, vs, 0, m)
    full, flow, sync = (plans[k] for k in (FULL, "flow_prior", "sync_discriminator"))
    name = "ablate-styletalker-demo-{}-s0".format
    for variant in (flow, sync):  # the full model's autoencoder and discriminator, the variant's motion model
        assert variant[AE] is full[AE] and variant[SYNC] is full[SYNC]
        assert variant[MOTION].cfg.autoencoder.run == name("full")
    assert flow[MOTION].cfg.model.prior == "gaussian" and flow[MOTION].cfg.sync_discriminator.run == name("full")
    assert sync[MOTION].cfg.sync_discriminator.run is None and sync[MOTION].cfg.model.prior == "flow"
    rows = bench_config(settings, vs, plans, 0, tmp_path / "out", m).methods
    assert rows["flow_prior"].options.samples == 3 and rows["flow_prior"].checkpoints[MOTION] == name("flow_prior")
    assert rows[FULL].options.samples == 3  # the full row samples three videos too (the bench config's method)
    # the sync discriminator only trained the motion model (its run records it): the bench row names what it loads
    assert set(rows["sync_discriminator"].checkpoints) == {AE, MOTION}
