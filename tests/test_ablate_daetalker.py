"""The ablation harness on DAE-Talker†'s recipe: its components name real config keys and bench settings the
``daetalker`` kind accepts, and a variant retrains exactly the parts it touches and those linked to them (the
speech2latent of a retrained autoencoder learns that autoencoder's latents). No training: the plans and bench rows."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

from dreamhead_lit.ablate import FULL, AblationSettings, bench_config, load_registry, main, method_ablation, plan_seed, \
    variants
from dreamhead_lit.baselines.daetalker.bench import DAETalkerMethod
from dreamhead_lit.bench.config import MethodConfig
from dreamhead_lit.bench.methods.base import BenchContext

from test_ablate_dreamtalk import check_training_overrides
from test_daetalker_bench import DIM, FakeSpeech2Latent

REQUIRED = {"pose_modelling", "shared_noise", "reference_latent", "latent_adagn"}
AE, S2L = "daetalker_autoencoder", "daetalker_speech2latent"


def test_components_name_real_config_keys_and_bench_settings(tmp_path, capsys):
    components = load_registry(method="daetalker")
    assert REQUIRED <= set(components)
    m = method_ablation("daetalker")
    assert m.parts == (AE, S2L) and m.linked(S2L) and m.kind == "daetalker"
    checked = 0
    for name, c in components.items():
        assert c.description and c.method == "daetalker"
        checked += check_training_overrides(name, c, m)
        ctx = BenchContext(tmp_path, str(tmp_path), torch.device("cpu"), {})
        autoencoder = SimpleNamespace(latent_dim=DIM, hparams={}, data_info={})  # what the kind reads at construction
        for row in (c.bench, c.full_row):  # the kind refuses unknown options and pose sources
            if row:
                mcfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(MethodConfig),
                                                           {"kind": "daetalker", **row}))
                DAETalkerMethod(name, mcfg, ctx, speech2latent=FakeSpeech2Latent(tmp_path), autoencoder=autoencoder)
                checked += 1
    assert checked == 5  # three training overrides, two bench rows
    assert main(["--list", "--method", "daetalker"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in components)
    assert f"[{AE}+{S2L}]" in out  # the autoencoder's component retrains the linked speech2latent too


def test_a_variant_retrains_its_parts_and_the_linked_ones(tmp_path):
    settings = AblationSettings(drop=["pose_modelling", "shared_noise", "latent_adagn"], method="daetalker",
                                seeds=[0], overrides=[f"runs_root={tmp_path / 'runs'}"],
                                out_root=str(tmp_path / "results"))
    m = method_ablation("daetalker")
    vs = variants(settings, load_registry(method=m), m)
    plans = plan_seed(settings, vs, 0, m)
    full, pose, noise, adagn = (plans[k] for k in (FULL, "pose_modelling", "shared_noise", "latent_adagn"))
    name = "ablate-daetalker-demo-{}-s0".format
    assert full[S2L].cfg.autoencoder.run == name("full")
    # pose modelling: the full model's autoencoder, its own speech2latent
    assert pose[AE] is full[AE] and pose[S2L].name == name("pose_modelling")
    assert pose[S2L].cfg.model.pose_modelling is False and pose[S2L].cfg.autoencoder.run == name("full")
    # shared noise: nothing retrained
    assert all(noise[p] is full[p] for p in m.parts)
    # the additive latent: both parts, speech2latent on the variant's latents
    assert adagn[AE].cfg.model.latent_conditioning == "add" and adagn[S2L].cfg.autoencoder.run == name("latent_adagn")
    rows = bench_config(settings, vs, plans, 0, tmp_path / "out", m).methods
    assert rows["shared_noise"].options.shared_noise is False and rows[FULL].options.shared_noise is True
    assert rows["pose_modelling"].checkpoints == {AE: name("full"), S2L: name("pose_modelling")}
    # pose modelling's like-for-like row: the full model with its predicted pose (neither is given the clip's)
    assert rows[vs[1].baseline].options.pose_source == "predicted" and vs[1].name == "pose_modelling"
