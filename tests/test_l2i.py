"""Stage 2: the L2I UNet and LightningModule: learning, conditioning contract, shared clip noise, latent mode, DDP."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dreamhead_lit.config import ConfigError, load_config
from dreamhead_lit.data.datamodule import TalkingHeadDataModule
from dreamhead_lit.lit.l2i import L2IDiffusion, Stage2Config
from dreamhead_lit.models.latent import MissingDependencyError, ModuleCodec, load_codec
from dreamhead_lit.models.unet import L2IUNet

from conftest import train_on_one_batch

TINY_NET = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [16],
            "head_channels": 8, "norm_groups": 4, "dropout": 0.0, "patch_size": 2}
TINY = ["data.batch_size=4", "data.frames_per_clip=2", "data.num_workers=0", "model.base_channels=8", "model.channel_mult=[1,2]",
        "model.num_res_blocks=1", "model.attention_resolutions=[16]", "model.head_channels=8", "model.norm_groups=4",
        "validation.max_batches=1", "diffusion.sample_steps=2", "validation.log_media=false",
        "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


@pytest.fixture(scope="module")
def dm(tiny_synth):
    dm = TalkingHeadDataModule(root=tiny_synth, stage="l2i", batch_size=4, frames_per_clip=2)
    dm.setup()
    return dm


def tiny_module(dm, *, net: dict | None = None, **kwargs) -> L2IDiffusion:
    return L2IDiffusion.from_datamodule(dm, net={**TINY_NET, **(net or {})}, **kwargs)


def nontrivial(module: L2IDiffusion) -> L2IDiffusion:
    """Give the zero-initialised output layer weights, so samples depend on the inputs (and sync the EMA copy that
    sampling uses)."""
    torch.nn.init.normal_(module.net.out_conv.weight, std=0.05)
    if module.ema is not None:
        module.ema.shadow_params["out_conv.weight"].copy_(module.net.out_conv.weight.detach())
    return module


def test_tiny_model_overfits_one_batch(dm, test_seed):
    torch.manual_seed(test_seed)
    module = tiny_module(dm, diffusion={"cond_drop_prob": 0.0, "guidance_scale": 1.0})
    batch = next(iter(dm.train_dataloader()))
    x0 = module.encode(batch["frame"])
    cond = {**module.batch_conditions(batch), "drop": torch.zeros(len(x0), dtype=torch.bool)}
    losses = train_on_one_batch(lambda: module.diffusion.training_losses(module.net, x0, extra_args=cond)["loss"],
                                module.net.parameters(), lr=3e-3, max_steps=400, factor=10)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 10, (losses[:10], losses[-10:])


@pytest.mark.parametrize(("mode", "use_reference", "channels"),
                         [("reference", True, 3 + 3 + 3 + 3), ("dubbing", True, 3 + 3 + 3 + 3 + 3 + 1),
                          ("reference", False, 3 + 3), ("dubbing", False, 3 + 3 + 3 + 1)])
def test_conditioning_channels_and_shapes(dm, mode, use_reference, channels):
    """The documented input channels: x_t + landmarks [+ ref + ref landmarks] [+ masked + mask]."""
    torch.manual_seed(0)
    module = nontrivial(tiny_module(dm, net={"mode": mode, "use_reference": use_reference, "patch_size": 1,
                                             "channel_mult": [1, 1, 1], "attention_resolutions": [16]}))
    net = module.net
    assert L2IUNet.input_channels(mode=mode, use_reference=use_reference) == channels
    assert net.input_conv.in_channels == channels
    batch = next(iter(dm.val_dataloader()))
    cond = module.batch_conditions(batch)
    assert list(cond) == list(net.conditions)
    b = len(batch["frame"])
    seen = {}

    def record(module, args, out):
        seen["x"] = args[0]

    net.input_conv.register_forward_hook(record)
    drop = torch.zeros(b, dtype=torch.bool)
    out = net(torch.randn(b, 3, 64, 64), torch.full((b,), 500), **cond, drop=drop)
    assert out.shape == (b, 3, 64, 64) and seen["x"].shape == (b, channels, 64, 64)
    # dropping the condition blanks exactly the target landmark image (channels 3..5) and nothing else
    seen.clear()
    net(torch.randn(b, 3, 64, 64), torch.full((b,), 500), **cond, drop=~drop)
    assert seen["x"][:, 3:6].abs().sum() == 0 and cond["landmarks"].abs().sum() > 0
    if use_reference:
        torch.testing.assert_close(seen["x"][:, 6:9], cond["ref"])
    # a condition the mode does not take, or a missing one, is an error that names it
    wrong = {**cond, "masked": batch["masked_frame"], "mask": batch["mask"]} if mode == "reference" else \
        {**cond, "mask": None}
    with pytest.raises(ValueError, match="mask"):
        net(torch.randn(b, 3, 64, 64), torch.full((b,), 500), **wrong)
    frames = module.sample_frames(cond, generator=torch.Generator().manual_seed(0), steps=1)
    assert frames.shape == (b, 3, 64, 64) and frames.abs().max() <= 1.0


def test_frames_of_one_clip_share_starting_noise(dm):
    torch.manual_seed(0)
    module = nontrivial(tiny_module(dm, diffusion={"sample_steps": 3}))
    batch = next(iter(dm.val_dataloader()))
    lm = batch["landmark_image"][:1].expand(5, -1, -1, -1)  # five frames with identical landmark images
    kw = {"ref": batch["ref_frame"][0], "ref_landmarks": batch["ref_landmark_image"][0]}
    frames = module.generate_frames(lm, noise_seed=3, batch_size=2, **kw)  # batches of 2, 2, 1
    assert frames.shape == (5, 3, 64, 64)
    for k in range(1, 5):
        torch.testing.assert_close(frames[k], frames[0], atol=1e-5, rtol=0)
    other_seed = module.generate_frames(lm[:1], noise_seed=4, **kw)
    assert (other_seed[0] - frames[0]).abs().max() > 1e-3
    # frames with different landmarks still differ (the noise is shared, the content is not)
    varied = module.generate_frames(batch["landmark_image"][:2], noise_seed=3, **kw)
    assert (varied[0] - varied[1]).abs().max() > 1e-3


class TinyAutoencoder(nn.Module):
    """A 4x-downsampling autoencoder with 4 latent channels, standing in for a pretrained VAE."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 4, stride=4)
        self.dec = nn.ConvTranspose2d(4, 3, 4, stride=4)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dec(z))


def test_latent_mode_trains_a_step_and_samples_the_right_shape(dm, tmp_path):
    torch.manual_seed(0)
    codec = ModuleCodec(TinyAutoencoder(), scale_factor=0.5)
    module = tiny_module(dm, net={"mode": "dubbing", "attention_resolutions": [8], "patch_size": 1}, codec=codec)
    assert module.latent and (module.x_channels, module.x_size) == (4, 16)
    assert module.net.input_conv.in_channels == L2IUNet.input_channels(mode="dubbing", use_reference=True,
                                                                       image_channels=4)
    batch = next(iter(dm.train_dataloader()))
    codec_before = {k: v.clone() for k, v in codec.state_dict().items()}
    opt = torch.optim.Adam(module.net.parameters(), lr=1e-3)
    loss = module.training_step(batch, 0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in codec.parameters())  # the codec is frozen
    for k, v in codec.state_dict().items():
        assert torch.equal(v, codec_before[k])
    nontrivial(module)
    frames = module.generate_frames(batch["landmark_image"][:3], ref=batch["ref_frame"][0],
                                    ref_landmarks=batch["ref_landmark_image"][0], masked=batch["masked_frame"][:3],
                                    mask=batch["mask"][:3], steps=2)
    assert frames.shape == (3, 3, 64, 64) and frames.abs().max() <= 1.0
    # a TorchScript codec loads from model.vae_checkpoint; checkpoints leave the frozen codec out
    path = tmp_path / "ae.pt"
    torch.jit.save(torch.jit.script(TinyAutoencoder()), str(path))
    scripted = tiny_module(dm, net={"attention_resolutions": [8], "patch_size": 1, "vae_checkpoint": str(path),
                                    "vae_scale_factor": 0.5})
    assert scripted.x_channels == 4 and scripted.net.resolution == 16
    ckpt = {"state_dict": scripted.state_dict()}
    scripted.on_save_checkpoint(ckpt)
    assert not any(k.startswith("codec.") for k in ckpt["state_dict"])
    scripted.on_load_checkpoint(ckpt)
    scripted.load_state_dict(ckpt["state_dict"])


def test_codec_errors_name_the_problem(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    try:
        import diffusers  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="diffusers"):
            load_codec(tmp_path / "vae")
    with pytest.raises(FileNotFoundError, match="vae_checkpoint"):
        load_codec(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="TorchScript"):
        load_codec(tmp_path / "junk.pt")


def test_validation_scores_model_and_copy_reference_baseline(dm):
    torch.manual_seed(0)
    module = nontrivial(tiny_module(dm, diffusion={"sample_steps": 2}))
    batch = next(iter(dm.val_dataloader()))
    values = module.evaluate_batch(batch, generator=torch.Generator().manual_seed(0))
    for k in ("ssim", "psnr", "ssim_mouth", "psnr_mouth"):
        assert values[k].shape == (4,) and values[f"{k}_ref"].shape == (4,)
    # the baseline's scores are those of the reference frame itself; a perfect generator would score SSIM 1
    from dreamhead_lit.lit.l2i import frame_scores

    lm68 = batch["landmarks"][:, module.index68]
    torch.testing.assert_close(values["ssim_mouth_ref"], frame_scores(batch["ref_frame"], batch["frame"],
                                                                      lm68)["ssim_mouth"])
    perfect = frame_scores(batch["frame"], batch["frame"], lm68)
    torch.testing.assert_close(perfect["ssim"], torch.ones(4, dtype=torch.float64))


def test_demo_and_paper_configs_load(tmp_path):
    demo = load_config("stage2/demo.yaml", schema=Stage2Config)
    paper = load_config("stage2/paper.yaml", schema=Stage2Config)
    assert demo.model.mode == "reference" and paper.trainer.strategy == "ddp"
    assert paper.trainer.precision == "bf16-mixed"


@pytest.mark.ddp
def test_two_process_ddp_fit_writes_one_checkpoint_and_one_log(tiny_synth, tmp_path):
    from conftest import check_two_process_ddp_fit

    check_two_process_ddp_fit("stage2", TINY, tiny_synth, tmp_path)


def test_evaluate_stage2_cli_writes_figures_and_grid(tiny_synth, tmp_path):
    from dreamhead_lit.evaluate import main as evaluate_main
    from dreamhead_lit.training import fit

    cfg = load_config("stage2/demo.yaml", [f"data.root={tiny_synth}", f"runs_root={tmp_path}", *TINY,
                                           "trainer.max_steps=2", "trainer.val_check_interval=2"],
                      schema=Stage2Config)
    run = fit("stage2", cfg)
    assert evaluate_main(["stage2", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--split", "test",
                          "--examples", "2"]) == 0
    import json

    result = json.loads((run / "eval" / "stage2_test.json").read_text())
    assert set(result["metrics"]) >= {"ssim", "psnr", "ssim_mouth", "psnr_mouth", "ssim_ref", "ssim_mouth_ref"}
    assert result["frames"] > 0 and (run / "eval" / "stage2_test_examples.png").is_file()
