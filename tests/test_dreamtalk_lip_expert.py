"""DreamTalk†'s lip expert: it learns sync, trains through the registry, gives the denoiser a frozen sync loss, is never
the bench's sync scorer, and its unconditional variant ignores the style clip."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamhead_lit import registry
from dreamhead_lit.baselines.dreamtalk.lip_expert import LipExpertModule, load_lip_expert
from dreamhead_lit.checkpoints import read_header
from dreamhead_lit.config import ConfigError, load_config
from dreamhead_lit.train import main

from conftest import train_on_one_batch
from test_dreamtalk import TINY as DENOISER_BASE
from test_dreamtalk import dm  # noqa: F401  (the denoiser tests' DataModule fixture, shared)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

TINY_NET = {"dim": 16, "heads": 2, "style_layers": 1, "window": 3}
TINY = ["data.window=8", "data.batch_size=4", "data.style_frames=16", "data.windows_per_clip=2", "model.dim=16",
        "model.window=3", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "threads=1"]
DENOISER_TINY = [*DENOISER_BASE, "threads=1"]


@pytest.fixture(scope="module")
def expert_ckpt(tiny_synth, tmp_path_factory) -> Path:
    """A lip expert trained for a few steps by the train CLI (shared by the tests that need a checkpoint)."""
    root = tmp_path_factory.mktemp("runs")
    args = ["dreamtalk_lip_expert", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={root}", "name=tiny",
            *TINY, "trainer.max_steps=3", "trainer.val_check_interval=3"]
    assert main(args) == 0
    return root / "dreamtalk_lip_expert" / "tiny" / "checkpoints" / "last.ckpt"


def test_lip_expert_overfits_one_batch(dm, test_seed):
    torch.manual_seed(test_seed)
    module = LipExpertModule.from_datamodule(dm, net=TINY_NET)
    batch = next(iter(dm.train_dataloader()))
    state = torch.get_rng_state()

    def loss() -> torch.Tensor:
        torch.set_rng_state(state)  # the same aligned and shifted windows every step: one batch
        return module.loss(batch)[0]

    losses = train_on_one_batch(loss, module.net.parameters(), lr=3e-3, max_steps=300, factor=10)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 10, (losses[:10], losses[-10:])
    torch.set_rng_state(state)
    assert float(module.loss(batch)[1]) == 1.0  # every aligned and shifted window of the batch told apart


def test_train_cli_writes_a_loadable_checkpoint(expert_ckpt):
    assert read_header(expert_ckpt)["model"] == "dreamtalk_lip_expert"
    assert (expert_ckpt.parent.parent / "done.json").is_file()
    model = registry.load_checkpoint(expert_ckpt, expected="dreamtalk_lip_expert")
    assert isinstance(model, LipExpertModule) and not model.training
    assert model.net.variant == "style" and model.motion.lower.explained[-1] > 0.99  # the basis came with it


def test_denoiser_trains_a_step_with_the_frozen_expert(expert_ckpt, tiny_synth, tmp_path):
    before = {k: v.clone() for k, v in load_lip_expert(str(expert_ckpt)).state_dict().items()}
    spec = registry.get("dreamtalk")
    cfg = load_config("dreamtalk/demo.yaml", [f"data.root={tiny_synth}", f"runs_root={tmp_path}", *DENOISER_TINY,
                                              f"lip_expert.checkpoint={expert_ckpt}", "lip_expert.weight=0.5"],
                      schema=spec.schema_class())
    dm = spec.make_datamodule(cfg)
    module = spec.build_module(cfg, dm)
    expert = module._lip_expert["expert"]
    assert isinstance(expert, LipExpertModule) and module._lip_expert["weight"] == 0.5
    logs = {}
    module.log_dict = lambda d, **k: logs.update(d)  # no trainer attached
    module.log = lambda *a, **k: None
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    loss = module.training_step(next(iter(dm.train_dataloader())), 0)
    loss.backward()
    opt.step()
    sync = logs["train/sync"].detach()
    assert torch.isfinite(sync) and float(sync) > 0
    assert module.net.denoiser.lower.head[-1].weight.grad.abs().sum() > 0  # the sync loss reaches the denoiser
    assert all(p.grad is None and not p.requires_grad for p in expert.parameters())
    assert all(torch.equal(v, before[k]) for k, v in expert.state_dict().items())  # frozen: unchanged by the step
    assert not any("lip" in k or k.startswith("net.mouth") for k in module.state_dict())  # not in its checkpoint
    # and through the CLI: the denoiser's run trains with it and its checkpoint holds only the denoiser
    args = ["dreamtalk", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={tmp_path}", "name=sync",
            *DENOISER_TINY, "trainer.max_steps=2", "trainer.val_check_interval=2", f"lip_expert.checkpoint={expert_ckpt}"]
    assert main(args) == 0
    saved = torch.load(tmp_path / "dreamtalk" / "sync" / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any("mouth" in k or "audio_frame" in k or "lip" in k for k in saved["state_dict"])


def test_the_bench_sync_scorer_is_refused_as_a_lip_expert(expert_ckpt, tmp_path):
    scorer_run = tmp_path / "scorers" / "syncnet-synthtalk"
    scorer_run.mkdir(parents=True)
    shutil.copy(expert_ckpt, scorer_run / "expert.pt")  # even a file that would load is refused by where it lies
    for ref in (scorer_run / "expert.pt", scorer_run):
        with pytest.raises(ConfigError, match="bench's sync scorer"):
            load_lip_expert(str(ref), runs_root=tmp_path)
    other = tmp_path / "elsewhere" / "expert.pt"  # the scorer's file name anywhere
    other.parent.mkdir()
    shutil.copy(expert_ckpt, other)
    with pytest.raises(ConfigError, match="bench's sync scorer"):
        load_lip_expert(str(other), runs_root=tmp_path)
    ckpt = torch.load(expert_ckpt, weights_only=False)  # a checkpoint of another model (header)
    ckpt["dreamhead"]["model"] = "syncnet"
    torch.save(ckpt, tmp_path / "renamed.ckpt")
    with pytest.raises(ConfigError, match="dreamtalk_lip_expert"):
        load_lip_expert(str(tmp_path / "renamed.ckpt"), runs_root=tmp_path)
    assert isinstance(load_lip_expert(str(expert_ckpt)), LipExpertModule)  # the expert's own run loads,
    runs_root = expert_ckpt.parents[3]  # also by its run folder or its run name under runs/dreamtalk_lip_expert/
    for ref in (str(expert_ckpt.parents[1]), "tiny"):
        assert isinstance(load_lip_expert(ref, runs_root=runs_root), LipExpertModule)


def test_unconditional_variant_ignores_the_style_exactly(dm):
    torch.manual_seed(0)
    module = LipExpertModule.from_datamodule(dm, net={**TINY_NET, "variant": "unconditional"}).eval()
    assert module.net.style_encoder is None
    batch = next(iter(dm.val_dataloader()))
    disp = batch["landmarks"] - batch["ref_landmarks"][:, None]
    style = batch["style_landmarks"] - batch["style_ref_landmarks"][:, None]
    mask = batch["style_mask"]
    with torch.no_grad():
        a = module(disp, batch["audio"], style, mask)
        b = module(disp, batch["audio"], style.flip(0) * 3 + 0.1, mask.flip(0))
    assert torch.equal(a, b) and a.shape == (4, 8 - 3 + 1)
    styled = LipExpertModule.from_datamodule(dm, net=TINY_NET).eval()  # the style variant does read it
    with torch.no_grad():
        assert not torch.equal(styled(disp, batch["audio"], style, mask),
                               styled(disp, batch["audio"], style.flip(0) * 3 + 0.1, mask.flip(0)))


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_both_sizes_build_and_take_a_training_step(tiny_synth, size):
    spec = registry.get("dreamtalk_lip_expert")
    cfg = load_config(f"dreamtalk_lip_expert/{size}.yaml", [f"data.root={tiny_synth}", "data.batch_size=2",
                                                            "data.num_workers=0", "data.windows_per_clip=1"],
                      schema=spec.schema_class())
    dm = spec.make_datamodule(cfg)
    module = spec.build_module(cfg, dm)
    assert module.net.variant == cfg.model.variant and module.motion.dims[0] == cfg.motion.lower_components
    module.log_dict = module.log = lambda *a, **k: None  # no trainer attached
    loss = module.training_step(next(iter(dm.train_dataloader())), 0)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.ddp
@pytest.mark.slow  # DreamTalk†'s part DDP fits: make test-slow (as DAE-Talker†'s and StyleTalker†'s)
def test_two_process_ddp_fit_of_the_expert_and_of_the_denoiser_with_it(tiny_synth, expert_ckpt, tmp_path):
    from conftest import check_two_process_ddp_fit

    check_two_process_ddp_fit("dreamtalk_lip_expert", TINY, tiny_synth, tmp_path)
    # the frozen expert lives outside the denoiser's module tree: DDP neither wraps nor syncs it, each rank loads it
    check_two_process_ddp_fit("dreamtalk", [*DENOISER_TINY, f"lip_expert.checkpoint={expert_ckpt}"], tiny_synth,
                              tmp_path)

