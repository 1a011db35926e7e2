"""DreamTalk†: the motion basis, the frame-wise denoiser, guidance on the style, training through the registry."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dreamhead_lit import registry
from dreamhead_lit.baselines.dreamtalk.data import DreamTalkDataModule
from dreamhead_lit.baselines.dreamtalk.lit import DreamTalkDiffusion
from dreamhead_lit.baselines.dreamtalk.motion import MotionBasis
from dreamhead_lit.checkpoints import read_header
from dreamhead_lit.config import load_config
from dreamhead_lit.data.landmarks import LEFT_BROW, MOUTH, RIGHT_EYE
from dreamhead_lit.train import main

from conftest import train_on_one_batch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

TINY_NET = {"dim": 32, "heads": 2, "audio_layers": 1, "decoder_layers": 1, "style_layers": 1, "dropout": 0.0}
TINY = ["data.window=8", "data.batch_size=4", "data.style_frames=16", "data.windows_per_clip=2", "model.dim=32",
        "model.heads=2", "model.audio_layers=1", "model.decoder_layers=1", "model.style_layers=1",
        "validation.max_batches=1", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def dm(tiny_synth) -> DreamTalkDataModule:
    dm = DreamTalkDataModule(root=tiny_synth, window=8, batch_size=4, style_frames=16)
    dm.prepare_data()
    dm.setup()
    return dm


def tiny_module(dm, **kwargs) -> DreamTalkDiffusion:
    return DreamTalkDiffusion.from_datamodule(dm, net=TINY_NET, **kwargs)


def fitted_basis(dm, lower: int = 8, upper: int = 6) -> MotionBasis:
    lo, up = dm.face_parts()
    return MotionBasis(num_points=dm.num_landmarks, lower_points=lo, upper_points=up, lower_components=lower,
                       upper_components=upper).fit(dm.train_displacements())


def test_motion_basis_reconstructs_the_train_landmarks_and_keeps_the_mouth_in_the_lower_face(dm):
    basis = fitted_basis(dm)
    lower, upper = (set(p.points.tolist()) for p in basis.parts())
    assert set(MOUTH) <= lower and set(LEFT_BROW + RIGHT_EYE) <= upper  # SynthTalk: dense index k = dlib point k
    # the demo's 8 + 6 components reconstruct every train frame to within 0.002 face units per point on average
    # (0.04 px on SynthTalk's 64 px frames, where a face unit is about 20 px)
    for disp in dm.train_displacements():
        d = torch.from_numpy(disp)
        err = (basis.decode(basis.encode(d)) - d).norm(dim=-1).mean(-1)  # (T,)
        assert float(err.max()) < 2e-3
    # the mouth is linear in the lower-face coefficients and in nothing else
    coeffs = basis.encode(torch.from_numpy(next(dm.train_displacements())))
    moved = coeffs.clone()
    moved[:, basis.dims[0]:] += 1.0  # every upper-face coefficient
    torch.testing.assert_close(basis.decode(moved)[:, list(MOUTH)], basis.decode(coeffs)[:, list(MOUTH)], rtol=0,
                               atol=0)
    a, b = basis.decode(coeffs[:2] + 1.0) - basis.decode(coeffs[:2]), basis.decode(coeffs[:2] + 2.0)
    torch.testing.assert_close(b - basis.decode(coeffs[:2]), 2 * a, rtol=1e-4, atol=1e-6)
    # the fit is a deterministic computation: every DDP rank builds the same buffers, bit for bit
    again = fitted_basis(dm)
    assert all(torch.equal(x, y) for x, y in zip(basis.state_dict().values(), again.state_dict().values()))
    assert basis.summary()["lower"]["variance_explained"] > 0.999


def test_the_denoiser_has_no_path_across_frames(dm):
    torch.manual_seed(0)
    net = tiny_module(dm).net.eval()
    b, t, c = 2, 6, sum(tiny_module(dm).motion.dims)
    k, a = dm.audio_shape
    args = dict(audio=torch.randn(b, t, k, a), style=torch.randn(b, 32), drop=torch.zeros(b, dtype=torch.bool))
    x_t, steps = torch.randn(b, t, c), torch.tensor([10, 700])
    with torch.no_grad():
        before = net(x_t, steps, **args)
        x_t[:, 3] += 1.0  # one frame's noisy motion and audio window
        args["audio"][:, 3] += 1.0
        after = net(x_t, steps, **args)
    others = [i for i in range(t) if i != 3]
    assert torch.equal(before[:, others], after[:, others])  # exactly: no attention or convolution across frames
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_guidance_scale_zero_ignores_the_style_clip(dm):
    torch.manual_seed(0)
    module = tiny_module(dm, diffusion={"use_ema": False}).eval()
    batch = next(iter(dm.val_dataloader()))
    other = {**batch, "style_landmarks": batch["style_landmarks"].flip(0) + 0.05}  # other clips, other shapes
    run = lambda b, scale: module.sample_motion(b, guidance_scale=scale,  # noqa: E731
                                                generator=torch.Generator().manual_seed(3))
    assert torch.equal(run(batch, 0.0), run(other, 0.0))
    assert not torch.allclose(run(batch, 2.0), run(other, 2.0))  # with guidance the style clip matters
    # the null style ("none": no style reference) is the unconditional model whatever the scale; a given code is used
    none = module.sample_motion(batch, style="none", guidance_scale=2.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(none, run(batch, 0.0))
    with torch.no_grad():
        code = module.style_code(batch)
    given = module.sample_motion(batch, style=code, guidance_scale=2.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(given, run(batch, 2.0))


def test_denoiser_overfits_one_batch(dm, test_seed):
    torch.manual_seed(test_seed)
    module = tiny_module(dm, diffusion={"cond_drop_prob": 0.0, "guidance_scale": 1.0})
    batch = next(iter(dm.train_dataloader()))
    x0 = module.encode_motion(batch["landmarks"], batch["ref_landmarks"])
    no = torch.zeros(len(x0), dtype=torch.bool)

    def loss() -> torch.Tensor:
        cond = {"audio": batch["audio"], "style": module.style_code(batch), "drop": no}
        return module.diffusion.training_losses(module.net, x0, extra_args=cond)["loss"]

    losses = train_on_one_batch(loss, module.net.parameters(), lr=2e-3, max_steps=400, factor=10)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 10, (losses[:10], losses[-10:])


def test_the_lip_sync_hook_adds_the_weighted_expert_loss(dm):
    torch.manual_seed(0)
    module = tiny_module(dm, diffusion={"use_ema": False})
    batch = next(iter(dm.train_dataloader()))
    seen = {}

    def expert(disp, audio, style_disp, style_mask):  # P_sync from the heights: differentiable in the motion
        seen["shape"], seen["style"] = tuple(disp.shape), tuple(style_disp.shape)
        return torch.sigmoid(disp[..., 1].mean((1, 2)))

    module.log_dict = module.log = lambda *a, **k: None  # no trainer attached
    torch.manual_seed(1)
    plain = module.training_step(batch, 0)
    module.attach_lip_expert(expert, weight=0.5)
    torch.manual_seed(1)
    with_sync = module.training_step(batch, 0)
    assert seen["shape"] == (4, 8, dm.num_landmarks, 2) and seen["style"] == (4, 16, dm.num_landmarks, 2)
    assert float(with_sync.detach()) > float(plain.detach())  # -log P > 0 was added
    with_sync.backward()
    assert module.net.denoiser.lower.head[-1].weight.grad.abs().sum() > 0
    assert "_lip_expert" not in "".join(module.state_dict())  # never saved with the denoiser


def test_train_cli_writes_a_checkpoint_that_loads_with_its_motion_basis(dm, tiny_synth, tmp_path: Path):
    args = ["dreamtalk", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={tmp_path}", "name=tiny", *TINY,
            "trainer.max_steps=4", "trainer.val_check_interval=4", "threads=1"]
    assert main(args) == 0
    run = tmp_path / "dreamtalk" / "tiny"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert read_header(ckpt)["model"] == "dreamtalk" and (run / "done.json").is_file()
    assert "motion_basis" in (run / "done.json").read_text()
    model = registry.load_checkpoint(ckpt, expected="dreamtalk")
    assert isinstance(model, DreamTalkDiffusion) and not model.training
    basis = fitted_basis(dm)  # the checkpoint alone carries the basis fitted on the train split
    torch.testing.assert_close(model.motion.lower.components, basis.lower.components)
    torch.testing.assert_close(model.motion.upper.mean, basis.upper.mean)
    batch = next(iter(dm.val_dataloader()))
    figures = model.evaluate_batch(batch, generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v).all() for v in figures.values())
    assert float(figures["lmd_mouth_basis"].max()) < 0.05  # pixels at 64 px: the motion space loses nothing visible
    val = dm.datasets["val"]
    reader = val.readers[0]
    style = val.canonical(reader, 0, 16)[0]
    ref = dm.references[reader.record.identity]
    landmarks = model.generate(reader.audio(), ref_landmarks=ref, style_landmarks=style, num_frames=reader.num_frames)
    assert landmarks.shape == (reader.num_frames, dm.num_landmarks, 2) and torch.isfinite(landmarks).all()


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_both_sizes_build_and_take_a_training_step(tiny_synth, size):
    spec = registry.get("dreamtalk")
    cfg = load_config(f"dreamtalk/{size}.yaml", [f"data.root={tiny_synth}", "data.batch_size=1", "data.num_workers=0",
                                                 "data.window=16", "data.style_frames=16", "data.windows_per_clip=1"],
                      schema=spec.schema_class())
    dm = spec.make_datamodule(cfg)
    module = spec.build_module(cfg, dm)
    assert module.motion.dims == (cfg.motion.lower_components, cfg.motion.upper_components)
    module.log_dict = module.log = lambda *a, **k: None  # no trainer attached
    loss = module.training_step(next(iter(dm.train_dataloader())), 0)
    loss.backward()
    assert torch.isfinite(loss) and module.net.null_style.grad is not None


@pytest.mark.ddp
@pytest.mark.slow  # DreamTalk†'s part DDP fits: make test-slow (as DAE-Talker†'s and StyleTalker†'s)
def test_two_process_ddp_fit_writes_one_checkpoint_and_one_log(tiny_synth, tmp_path):
    from conftest import check_two_process_ddp_fit

    check_two_process_ddp_fit("dreamtalk", TINY, tiny_synth, tmp_path)
