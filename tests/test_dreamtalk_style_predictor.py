"""DreamTalk†'s diffusion style predictor: it learns a denoiser's style codes from audio and the portrait, refuses
what is not a dreamtalk denoiser trained on its data, samples reproducibly for the bench, and trains through the
registry (one process and two)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from dreamhead_lit import registry
from dreamhead_lit.baselines.dreamtalk.lit import DreamTalkDiffusion
from dreamhead_lit.baselines.dreamtalk.style_predictor import (
    DreamTalkStylePredictor,
    StylePredictorDataModule,
    load_denoiser,
    mean_distance_across_groups,
)
from dreamhead_lit.checkpoints import read_header
from dreamhead_lit.config import ConfigError, load_config
from dreamhead_lit.train import main

import test_dreamtalk_lip_expert
from conftest import train_on_one_batch
from test_dreamtalk import TINY as DENOISER_BASE
from test_dreamtalk import TINY_NET as DENOISER_NET

EXPERT_TINY, DENOISER_TINY = test_dreamtalk_lip_expert.TINY, test_dreamtalk_lip_expert.DENOISER_TINY
expert_ckpt = test_dreamtalk_lip_expert.expert_ckpt  # the lip-expert tests' trained expert: a checkpoint to refuse

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

NET = {"dim": 32, "heads": 2, "audio_layers": 1, "blocks": 2}
TINY = ["data.window=16", "data.batch_size=4", "data.style_frames=16", "data.windows_per_clip=2", "model.dim=32",
        "model.heads=2", "model.audio_layers=1", "model.blocks=2", "diffusion.sample_steps=5",
        "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "threads=1"]


@pytest.fixture(scope="module")
def denoiser_ckpt(tiny_synth, tmp_path_factory) -> Path:
    """A dreamtalk denoiser trained for two steps by the train CLI: runs/dreamtalk/tiny under its own runs root."""
    root = tmp_path_factory.mktemp("runs")
    args = ["dreamtalk", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={root}", "name=tiny",
            *DENOISER_BASE, "threads=1", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    assert main(args) == 0
    return root / "dreamtalk" / "tiny" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def dm(tiny_synth) -> StylePredictorDataModule:
    dm = StylePredictorDataModule(root=tiny_synth, window=16, batch_size=4, style_frames=16, windows_per_clip=1)
    dm.prepare_data()
    dm.setup()
    return dm


def tiny_predictor(dm, **kwargs) -> tuple[DreamTalkStylePredictor, DreamTalkDiffusion]:
    """A predictor for an untrained tiny denoiser (its random style encoder still gives every style clip its code)."""
    denoiser = DreamTalkDiffusion.from_datamodule(dm, net=DENOISER_NET)
    return DreamTalkStylePredictor.from_datamodule(dm, denoiser=denoiser, net=NET, **kwargs), denoiser


def test_predictor_overfits_one_batch(dm, test_seed):
    torch.manual_seed(test_seed)
    module, _ = tiny_predictor(dm, diffusion={"use_ema": False, "cond_drop_prob": 0.0})
    train = dm.datasets["train"]
    batch = default_collate([train[i] for i in range(len(train))])  # one sample of every train clip, drawn once
    target = module.target_code(batch)
    x0 = module.normalize_code(target)
    no = torch.zeros(len(x0), dtype=torch.bool)

    def loss() -> torch.Tensor:
        cond = module.conditions(batch["audio"], batch["portrait_landmarks"])
        return module.diffusion.training_losses(module.net, x0, extra_args={**cond, "drop": no})["loss"]

    train_on_one_batch(loss, module.net.parameters(), lr=3e-3, max_steps=150, factor=1e9)
    module.eval()
    sampled = module.sample_codes(batch["audio"], batch["portrait_landmarks"],
                                  generator=torch.Generator().manual_seed(test_seed))
    spread = mean_distance_across_groups(target, batch["style_clip"])
    dist = float((sampled - target).norm(dim=-1).mean() / spread)
    mean_dist = float((module.code_mean - target).norm(dim=-1).mean() / spread)
    # from pure noise, 50 DDIM steps land on each sample's own code: measured 0.01-0.02 over seeds and thread counts,
    # where the train codes' mean is 0.65-0.70 from them
    assert dist < 0.15 and mean_dist > 0.4, (dist, mean_dist)


def test_refuses_what_is_not_a_dreamtalk_denoiser_of_its_data(expert_ckpt, denoiser_ckpt, synth_copy, tiny_synth,
                                                              tmp_path):
    spec = registry.get("dreamtalk_style_predictor")

    def build(*overrides: str, root: Path = tiny_synth):
        cfg = load_config("dreamtalk_style_predictor/demo.yaml", [f"data.root={root}", f"runs_root={tmp_path}",
                                                                   *TINY, *overrides], schema=spec.schema_class())
        return spec.build_module(cfg, spec.make_datamodule(cfg))

    with pytest.raises(ConfigError, match="is a dreamtalk_lip_expert checkpoint, but a dreamtalk checkpoint"):
        build(f"denoiser.checkpoint={expert_ckpt}")
    with pytest.raises(ConfigError, match=r"denoiser.checkpoint='nothing': no dreamtalk checkpoint"):
        build("denoiser.checkpoint=nothing")
    with pytest.raises(ConfigError, match="denoiser.checkpoint is not set"):
        build("denoiser.checkpoint=null")
    with pytest.raises(ConfigError, match="landmark_set: 'dense' for the denoiser, '68' here"):
        build(f"denoiser.checkpoint={denoiser_ckpt}", "data.landmark_set=68")
    index = synth_copy / "index.jsonl"  # the same dataset less one train clip: another motion basis
    lines = index.read_text().splitlines()
    first_train = next(i for i, line in enumerate(lines) if json.loads(line)["split"] == "train")
    index.write_text("\n".join(lines[:first_train] + lines[first_train + 1:]) + "\n")
    with pytest.raises(ConfigError, match="motion basis is not the one this train split gives"):
        build(f"denoiser.checkpoint={denoiser_ckpt}", root=synth_copy)
    # through the CLI: a clear error, exit code 2, and no run folder left behind
    args = ["dreamtalk_style_predictor", f"data.root={tiny_synth}", f"runs_root={tmp_path}", *TINY,
            f"denoiser.checkpoint={expert_ckpt}"]
    assert main(args) == 2
    assert not (tmp_path / "dreamtalk_style_predictor" / "demo").exists()
    assert isinstance(build(f"denoiser.checkpoint={denoiser_ckpt}"), DreamTalkStylePredictor)  # its own data: built


def test_predict_style_gives_one_code_the_denoiser_accepts_and_is_reproducible(dm):
    torch.manual_seed(0)
    module, denoiser = tiny_predictor(dm, diffusion={"use_ema": False})
    torch.nn.init.normal_(module.net.out.weight, std=0.1)  # untrained, it gives the mean code whatever the noise
    module.eval()
    val = dm.datasets["val"]
    reader = val.readers[0]
    audio, portrait = reader.audio(), val.canonical(reader, 0, 1)[0][0]  # the clip's audio and first frame
    assert reader.num_frames > 2 * dm.hparams.window  # longer than a training stretch: summaries averaged
    code = module.predict_style(audio, portrait, seed=3)
    assert code.shape == (denoiser.net.style_encoder.dim,) and torch.isfinite(code).all()
    assert torch.equal(code, module.predict_style(audio, portrait, seed=3))
    assert not torch.allclose(code, module.predict_style(audio, portrait, seed=4))
    with pytest.raises(ValueError, match="portrait_landmarks"):
        module.predict_style(audio, portrait[:68])
    landmarks = denoiser.generate(audio, ref_landmarks=dm.references[reader.record.identity], style=code,
                                  num_frames=reader.num_frames)
    assert landmarks.shape == (reader.num_frames, dm.num_landmarks, 2) and torch.isfinite(landmarks).all()
    module.check_denoiser(denoiser)  # the denoiser whose codes it learned
    other = DreamTalkDiffusion.from_datamodule(dm, net=DENOISER_NET)
    with pytest.raises(ConfigError, match="learned the style codes of the denoiser"):
        module.check_denoiser(other)


def test_train_cli_writes_a_checkpoint_that_predicts_alone(denoiser_ckpt, tiny_synth, dm):
    runs = denoiser_ckpt.parents[3]
    args = ["dreamtalk_style_predictor", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={runs}", "name=tiny",
            "denoiser.checkpoint=tiny", *TINY, "trainer.max_steps=4", "trainer.val_check_interval=4"]
    assert main(args) == 0  # the denoiser named by its run name under runs/dreamtalk/
    run = runs / "dreamtalk_style_predictor" / "tiny"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert read_header(ckpt)["model"] == "dreamtalk_style_predictor"
    done = json.loads((run / "done.json").read_text())
    assert {"val/style_dist", "val/style_dist_mean", "val/style_dist_null"} <= set(done["metrics"])
    assert done["denoiser"]["checkpoint"] == "tiny"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert not any(k.startswith(("motion.", "net.style_encoder", "net.denoiser")) for k in saved)  # denoiser not saved
    model = registry.load_checkpoint(ckpt, expected="dreamtalk_style_predictor")
    assert isinstance(model, DreamTalkStylePredictor) and not model.training
    denoiser = load_denoiser("tiny", runs_root=runs)
    model.check_denoiser(denoiser)
    val = dm.datasets["val"]
    reader = val.readers[0]
    code = model.predict_style(reader.audio(), val.canonical(reader, 0, 1)[0][0])
    assert code.shape == (denoiser.net.style_encoder.dim,) and torch.isfinite(code).all()


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_both_sizes_build_and_take_a_training_step(denoiser_ckpt, tiny_synth, size):
    spec = registry.get("dreamtalk_style_predictor")
    cfg = load_config(f"dreamtalk_style_predictor/{size}.yaml",
                      [f"data.root={tiny_synth}", "data.batch_size=2", "data.num_workers=0", "data.window=16",
                       "data.style_frames=16", "data.windows_per_clip=1", f"denoiser.checkpoint={denoiser_ckpt}"],
                      schema=spec.schema_class())
    module = spec.build_module(cfg, spec.make_datamodule(cfg))
    assert module.net.out.in_features == cfg.model.dim
    module.log = lambda *a, **k: None  # no trainer attached
    loss = module.training_step(next(iter(spec.make_datamodule(cfg).train_dataloader())), 0)
    loss.backward()
    assert torch.isfinite(loss) and module.net.out.weight.grad.abs().sum() > 0
    assert np.isfinite(float(module.code_spread))


@pytest.mark.ddp
@pytest.mark.slow  # DreamTalk†'s part DDP fits: make test-slow (as DAE-Talker†'s and StyleTalker†'s)
def test_two_process_ddp_fit_writes_one_checkpoint_and_one_log(denoiser_ckpt, tiny_synth, tmp_path):
    from conftest import check_two_process_ddp_fit

    # the frozen denoiser lives outside the module tree: each rank loads it, DDP neither wraps nor syncs it
    check_two_process_ddp_fit("dreamtalk_style_predictor", [*TINY, f"denoiser.checkpoint={denoiser_ckpt}"],
                              tiny_synth, tmp_path)


def test_the_method_recipe_trains_the_parts_in_order_linked_and_skips_finished_ones(tiny_synth, tmp_path, capsys):
    part = lambda model, items: [f"{model}:{o}" for o in items]  # noqa: E731
    args = ["--method", "dreamtalk", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={tmp_path}", "name=r",
            *part("dreamtalk_lip_expert", [*EXPERT_TINY, "trainer.max_steps=2", "trainer.val_check_interval=2"]),
            *part("dreamtalk", [*DENOISER_TINY, "trainer.max_steps=2", "trainer.val_check_interval=2"]),
            *part("dreamtalk_style_predictor", [*TINY, "trainer.max_steps=2", "trainer.val_check_interval=2"])]
    assert main(args) == 0
    expert = tmp_path / "dreamtalk_lip_expert" / "r" / "checkpoints" / "last.ckpt"
    denoiser = torch.load(tmp_path / "dreamtalk" / "r" / "checkpoints" / "last.ckpt", weights_only=False)
    assert expert.is_file()
    assert denoiser["hyper_parameters"]["lip_expert"] == {"variant": "style", "checkpoint": "r", "weight": 0.1}
    capsys.readouterr()
    assert main(args) == 0  # everything finished: nothing is trained again
    out = capsys.readouterr().out
    assert (tmp_path / "dreamtalk_style_predictor" / "r" / "checkpoints" / "last.ckpt").is_file()
    assert out.count("is complete") == 3 and "[dreamtalk 3/3] dreamtalk_style_predictor (run r)" in out
    # the first part retrained (its run removed): the later, finished parts learned from the old one, and say so
    shutil.rmtree(tmp_path / "dreamtalk_lip_expert" / "r")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"warning: dreamtalk run {tmp_path / 'dreamtalk' / 'r'} is complete, but a part before it " \
           "(dreamtalk_lip_expert) was trained just now" in err and err.count("Remove it") == 2
