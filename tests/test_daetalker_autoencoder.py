"""DAE-Talker†'s diffusion autoencoder: learning, reconstruction, shared decoding noise, the latent cache, DDP."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dreamhead_lit import registry
from dreamhead_lit.baselines.daetalker.latents import read_latent_cache, write_latent_cache
from dreamhead_lit.baselines.daetalker.lit import DAEConfig, DAETalkerAutoencoder
from dreamhead_lit.config import load_config
from dreamhead_lit.models.unet import L2IUNet

from conftest import train_on_one_batch
from test_l2i import dm  # noqa: F401  (stage 2's module-scoped DataModule fixture, shared)

TINY_NET = {"latent_dim": 16, "encoder_channels": [8, 16, 16, 16], "encoder_groups": 4, "base_channels": 8,
            "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [16], "head_channels": 8,
            "norm_groups": 4, "dropout": 0.0, "patch_size": 2}
TINY = ["data.batch_size=4", "data.frames_per_clip=2", "data.num_workers=0", "model.latent_dim=16",
        "model.encoder_channels=[8,16,16,16]", "model.encoder_groups=4", "model.base_channels=8",
        "model.channel_mult=[1,2]", "model.num_res_blocks=1", "model.attention_resolutions=[16]",
        "model.head_channels=8", "model.norm_groups=4", "validation.max_batches=1", "diffusion.sample_steps=2",
        "validation.log_media=false", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]
NO_GUIDANCE = {"cond_drop_prob": 0.0, "guidance_scale": 1.0, "sampler": "ddim"}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def tiny_module(dm, **diffusion) -> DAETalkerAutoencoder:
    return DAETalkerAutoencoder.from_datamodule(dm, net=dict(TINY_NET), diffusion={**NO_GUIDANCE, **diffusion})


def nontrivial(module: DAETalkerAutoencoder) -> DAETalkerAutoencoder:
    """Give the zero-initialised layers (output conv, residual branches' last convs) weights, so samples depend on the
    noise and the latent, and sync the EMA copy that sampling and encoding use."""
    for name, p in module.net.decoder.named_parameters():
        if name.endswith("weight") and p.ndim == 4 and not p.detach().abs().sum():
            torch.nn.init.normal_(p, std=0.05)
    if module.ema is not None:
        for name, p in module.net.named_parameters():
            module.ema.shadow_params[name].copy_(p.detach())
    return module


def distinct_frames(dm, count: int = 4) -> torch.Tensor:
    """(count, 3, 64, 64): one frame each of ``count`` training clips, different identities first."""
    ds = dm.datasets["train"]
    clips = [cs[i] for i in range(max(map(len, ds.by_identity.values()))) for cs in ds.by_identity.values()
             if i < len(cs)][:count]
    return torch.stack([ds._frame(ds.readers[c], 10) for c in clips])


def test_latent_condition_is_an_addition_to_the_unet(dm):
    """Stage 2's layouts gain no parameters (their checkpoints load as before); the latent's shape is checked."""
    landmarks = L2IUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
                        head_channels=8, norm_groups=4, patch_size=2)
    assert not any("latent" in k for k in landmarks.state_dict())
    net = tiny_module(dm).net.decoder
    assert net.conditions == ("latent",) and net.input_conv.in_channels == 3 * 4  # x_t only (2x2 patches)
    with pytest.raises(ValueError, match="latent"):
        net(torch.randn(2, 3, 64, 64), torch.full((2,), 10), latent=torch.randn(2, 5))
    with pytest.raises(ValueError, match="latent_dim"):
        L2IUNet(use_reference=False, condition="latent")


def test_encoder_is_trained_by_the_diffusion_loss(dm):
    """End to end: the decoder's loss reaches the encoder (once the zero-initialised output conv and residual branches
    that read the latent have moved off zero, i.e. from the third step: ADM's identity-at-init)."""
    module = tiny_module(dm)
    frames = distinct_frames(dm, 2)
    opt = torch.optim.Adam(module.net.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        module.loss(frames).backward()
        opt.step()
    grad = module.net.encoder.out.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_overfit_few_frames_then_reconstruction_beats_the_mean_frame(dm, test_seed):
    """One-batch overfit of encoder + decoder on frames of different speakers: the diffusion loss falls, and
    encode -> decode (DDIM, 10 steps) gives each frame back better, by a margin, than the frames' mean does: the
    latent carries the frame, not just "a face". (Also run under OMP_NUM_THREADS=1: ratio ~0.3.)"""
    torch.manual_seed(test_seed)
    module = tiny_module(dm, target="x0", use_ema=False)
    frames = distinct_frames(dm, 4)
    losses = train_on_one_batch(lambda: module.loss(frames), module.net.parameters(), lr=3e-3, max_steps=200,
                                factor=1e9)
    assert np.mean(losses[-20:]) < np.mean(losses[:10]) / 3, (losses[:10], losses[-20:])
    module.eval()
    recon = module.reconstruct(frames, steps=10, noise_seed=1)
    mse = ((recon - frames) ** 2).mean().item()
    mean_mse = ((frames.mean(0, keepdim=True) - frames) ** 2).mean().item()
    assert mse < 0.5 * mean_mse, (mse, mean_mse)


def test_shared_noise_gives_identical_frames_fresh_noise_flickers(dm):
    torch.manual_seed(0)
    module = nontrivial(tiny_module(dm, sample_steps=3))
    z = module.encode_frames(distinct_frames(dm, 2))  # (2, D)
    same = z[:1].expand(5, -1)  # five frames with the same latent
    shared = module.decode(same, noise_seed=3, batch_size=2)  # batches of 2, 2, 1
    fresh = module.decode(same, noise_seed=3, shared_noise=False, batch_size=2)
    assert shared.shape == fresh.shape == (5, 3, 64, 64) and shared.abs().max() <= 1.0
    flicker = lambda x: (x[1:] - x[:-1]).abs().mean().item()  # noqa: E731
    for k in range(1, 5):
        torch.testing.assert_close(shared[k], shared[0], atol=1e-5, rtol=0)
    assert flicker(fresh) > 1e-3 and flicker(shared) < flicker(fresh) / 100
    # the same seed gives the same frames whatever the batching; another seed, another frame; another latent too
    torch.testing.assert_close(module.decode(same[:1], noise_seed=3), shared[:1], atol=1e-5, rtol=0)
    assert (module.decode(same[:1], noise_seed=4) - shared[:1]).abs().max() > 1e-3
    varied = module.decode(z, noise_seed=3)
    assert (varied[0] - varied[1]).abs().max() > 1e-3


def test_latent_cache_has_every_clip_with_ema_latents(dm, tmp_path):
    torch.manual_seed(0)
    module = tiny_module(dm)
    with torch.no_grad():  # live weights away from the EMA copy: the cache must hold the EMA encoder's latents
        module.net.encoder.out.weight.add_(1.0)
    readers = [r for ds in dm.datasets.values() for r in ds.readers]
    index = write_latent_cache(module, readers, tmp_path / "latents", checkpoint="last.ckpt")
    on_disk, latents = read_latent_cache(tmp_path)
    assert on_disk == index == json.loads((tmp_path / "latents" / "index.json").read_text())
    assert index["dim"] == 16 and index["checkpoint"] == "last.ckpt"
    assert index["clips"] == {r.record.id: r.num_frames for r in readers} and len(index["clips"]) == 16
    reader = readers[0]
    z = latents[reader.record.id]
    assert z.dtype == np.float32 and z.shape == (reader.num_frames, 16)
    again = module.encode_clip(reader.frames())  # deterministic
    np.testing.assert_array_equal(np.asarray(z), again.numpy())
    first = torch.from_numpy(reader.frames(0, 1).copy()).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        assert (module.net.encoder(first) - torch.from_numpy(np.asarray(z[:1]))).abs().max() > 1e-2


def test_registered_and_configs_load():
    spec = registry.get("daetalker_autoencoder")
    assert spec.module_class() is DAETalkerAutoencoder and spec.export is not None
    demo = load_config("daetalker_autoencoder/demo.yaml", schema=DAEConfig)
    paper = load_config("daetalker_autoencoder/paper.yaml", schema=DAEConfig)
    assert (demo.model.latent_dim, paper.model.latent_dim) == (128, 512)
    assert demo.diffusion.sampler == paper.diffusion.sampler == "ddim" and paper.trainer.strategy == "ddp"


@pytest.mark.ddp
@pytest.mark.slow  # the fast suite is near its 15 min budget; make test-slow runs it
def test_two_process_ddp_fit_writes_one_checkpoint_and_the_latent_cache(tiny_synth, tmp_path):
    from conftest import check_two_process_ddp_fit

    check_two_process_ddp_fit("daetalker_autoencoder", TINY, tiny_synth, tmp_path)
    index, latents = read_latent_cache(tmp_path / "daetalker_autoencoder" / "demo")
    assert index["dim"] == 16 and len(index["clips"]) == 16 and index["checkpoint"] == "last.ckpt"
    assert all(z.shape == (index["clips"][c], 16) for c, z in latents.items())
    done = json.loads((tmp_path / "daetalker_autoencoder" / "demo" / "done.json").read_text())
    assert done["latents"]["clips"] == 16
    # the cache is what the checkpoint it names gives, loaded by its header
    from dreamhead_lit.data.clip import ClipReader, read_index

    loaded = registry.load_checkpoint(tmp_path / "daetalker_autoencoder" / "demo" / "checkpoints" / index["checkpoint"])
    assert isinstance(loaded, DAETalkerAutoencoder)
    record = next(r for r in read_index(tiny_synth) if r.id in index["clips"])
    z = loaded.encode_clip(ClipReader(tiny_synth, record).frames())
    np.testing.assert_allclose(z.numpy(), latents[record.id], atol=1e-5, rtol=0)
