"""StyleTalker†'s frame autoencoder: learning, reconstruction vs the mean frame, a differentiable decoder, the
fixed-size mouth mask, the two code caches, the LPIPS-missing path, DDP."""
from __future__ import annotations

import json
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from dreamhead_lit import registry
from dreamhead_lit.baselines.daetalker.latents import read_latent_cache
from dreamhead_lit.baselines.styletalker import masking
from dreamhead_lit.baselines.styletalker.autoencoder import (
    MOTION_LATENTS_DIR,
    FrameAEConfig,
    FrameAutoencoder,
    differentiable_ssim,
    export_codes,
)
from dreamhead_lit.config import ConfigError, load_config
from dreamhead_lit.data.landmarks import MOUTH
from dreamhead_lit.lit.l2i import to_unit
from dreamhead_lit.metrics.image import ssim_per_image

from conftest import train_on_one_batch
from test_daetalker_autoencoder import distinct_frames
from test_l2i import dm  # noqa: F401  (stage 2's module-scoped DataModule fixture, shared)

TINY_NET = {"latent_dim": 16, "patch_size": 2, "channels": [8, 16, 16], "norm_groups": 4}
TINY = ["data.batch_size=4", "data.frames_per_clip=2", "data.num_workers=0", "model.latent_dim=16",
        "model.channels=[8,16,16]", "model.norm_groups=4", "validation.log_media=false",
        "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def tiny_module(dm, **kwargs) -> FrameAutoencoder:
    return FrameAutoencoder.from_datamodule(dm, net=dict(TINY_NET), **kwargs)


def val_frames(dm, count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames (count, 3, 64, 64), landmarks (count, P, 2)): frames of the validation split, evenly spread."""
    ds = dm.datasets["val"]
    items = [ds[i] for i in np.linspace(0, len(ds) - 1, count).round().astype(int)]
    return torch.stack([x["frame"] for x in items]), torch.stack([x["landmarks"] for x in items])


def test_one_batch_overfit(dm, test_seed):
    """L1 + SSIM on one batch of frames of different speakers falls by a large factor (~8x in 300 steps)."""
    torch.manual_seed(test_seed)
    module = tiny_module(dm)
    frames = distinct_frames(dm, 4)
    losses = train_on_one_batch(lambda: module.losses(frames)[0]["loss"], module.parameters(), lr=3e-3,
                                max_steps=300, factor=6)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 5, (losses[:10], losses[-10:])


def test_short_fit_reconstructs_unseen_frames_better_than_the_mean_frame(dm, test_seed):
    """After a short fit on training frames, held-out validation frames come back with well under half the error of
    the train split's mean frame (the module's ``mean_frame``, set from the DataModule): codes carry their frame.
    (Ratio ~0.25-0.3 after 120 steps, over seeds; also under OMP_NUM_THREADS=1.)"""
    torch.manual_seed(test_seed)
    module = tiny_module(dm)
    assert module.mean_frame.abs().sum() > 0  # set from the train split
    train = dm.datasets["train"]
    pool = torch.stack([train._frame(r, int(t)) for r in train.readers
                        for t in np.linspace(0, r.num_frames - 1, 6).round()])  # (6 per clip, 3, 64, 64)
    gen = torch.Generator().manual_seed(test_seed)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(120):
        loss = module.losses(pool[torch.randint(len(pool), (8,), generator=gen)])[0]["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    frames, _ = val_frames(dm)
    recon = module.reconstruct(frames)
    assert recon.shape == frames.shape and recon.dtype == torch.float32 and recon.abs().max() <= 1.0
    mse = ((recon - frames) ** 2).mean().item()
    mean_mse = ((module.mean_frame[None] - frames) ** 2).mean().item()
    assert mse < 0.5 * mean_mse, (mse, mean_mse)


def test_loss_ssim_is_the_metrics_ssim(dm):
    """The loss's float32 convolution SSIM gives the metric's (float64, exact) values, with gradients."""
    true = to_unit(distinct_frames(dm, 4))
    for pred in (true.flip(0), (true + 0.1 * torch.randn_like(true)).clamp(0, 1), torch.rand_like(true)):
        pred = pred.clone().requires_grad_(True)
        ours = differentiable_ssim(pred, true)
        torch.testing.assert_close(ours.double(), ssim_per_image(pred.detach(), true), atol=2e-5, rtol=0)
        ours.sum().backward()
        assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_decode_is_differentiable_and_batched_like_the_codes(dm):
    module = tiny_module(dm).requires_grad_(False)  # frozen, as the motion model holds it
    codes = torch.randn(2, 3, 16, requires_grad=True)
    frames = module.decode(codes)
    assert frames.shape == (2, 3, 3, 64, 64) and frames.abs().max() <= 1.0
    frames[..., 40:, :].sum().backward()  # a loss on the lower half reaches the codes
    assert codes.grad is not None and codes.grad.abs().sum() > 0
    torch.testing.assert_close(module.decode(codes[1, 2].detach()), frames[1, 2].detach())
    with pytest.raises(ValueError, match="codes"):
        module.decode(torch.randn(2, 5))


def test_mouth_mask_has_one_size_and_covers_the_mouth(dm):
    module = tiny_module(dm)
    reader = dm.datasets["train"].readers[0]
    frames = torch.stack([dm.datasets["train"].to_tensor(f) for f in reader.frames().copy()])  # (T, 3, 64, 64)
    landmarks = torch.from_numpy(np.asarray(reader.landmarks, dtype=np.float32))  # (T, P, 2), dense set
    masked = module.mask_mouth(frames, landmarks)
    lm68 = module.landmarks68(landmarks)
    box = masking.mouth_mask(masking.mouth_centres(lm68), (64, 64), module.net_cfg.mouth_mask)[:, 0]  # (T, H, W)
    bw, bh = masking.box_pixels((64, 64), module.net_cfg.mouth_mask)
    assert (bw, bh) == (26, 18)
    assert box.sum((1, 2)).tolist() == [bw * bh] * len(frames)  # the same size in every frame
    # every mouth landmark (pixel centres at integers) lies inside its frame's box, which is blank; the rest is kept
    mouth = lm68[:, list(MOUTH)].round().long()  # (T, 20, 2)
    t = torch.arange(len(frames))[:, None].expand(-1, len(MOUTH))
    assert box[t, mouth[..., 1], mouth[..., 0]].all()
    assert (masked.permute(1, 0, 2, 3)[:, box] == 0).all()
    torch.testing.assert_close(masked.permute(1, 0, 2, 3)[:, ~box], frames.permute(1, 0, 2, 3)[:, ~box])
    # the box's shape says nothing about the mouth: a centre near an edge moves the box, never shrinks it
    edge = masking.mouth_boxes(torch.tensor([[1.0, 62.0], [32.0, 32.0]]), (64, 64))
    assert (edge[:, 2:] - edge[:, :2]).tolist() == [[bw, bh]] * 2 and edge[0].tolist() == [0, 64 - bh, bw, 64]


def test_export_writes_both_caches_as_encode_clip_gives_them(dm, tmp_path):
    torch.manual_seed(0)
    module = tiny_module(dm)
    trainer = SimpleNamespace(lightning_module=module, datamodule=dm)
    figures = export_codes(tmp_path, trainer, None)
    readers = [r for ds in dm.datasets.values() for r in ds.readers]
    assert figures == {"latents": {"dir": "latents", "dim": 16, "clips": 16},
                       "motion_latents": {"dir": MOTION_LATENTS_DIR, "dim": 16, "clips": 16}}
    index, codes = read_latent_cache(tmp_path)
    m_index, motion = read_latent_cache(tmp_path / MOTION_LATENTS_DIR, model="styletalker_autoencoder")
    for idx in (index, m_index):
        assert idx["dim"] == 16 and idx["checkpoint"] == "last.ckpt"
        assert idx["clips"] == {r.record.id: r.num_frames for r in readers}
    for reader in readers[:3]:
        full, masked = codes[reader.record.id], motion[reader.record.id]
        assert full.dtype == np.float32 and full.shape == masked.shape == (reader.num_frames, 16)
        np.testing.assert_array_equal(full, module.encode_clip(reader.frames()).numpy())
        np.testing.assert_array_equal(masked, module.encode_clip(reader.frames(), landmarks=reader.landmarks).numpy())
        assert np.abs(full - masked).max() > 1e-4  # the mask changed the input
    # the masked codes are the codes of the masked frames (uint8 path == float path; dense landmarks == 68)
    reader = readers[0]
    frames = torch.stack([dm.datasets["train"].to_tensor(f) for f in reader.frames().copy()])
    lm68 = reader.landmarks[:, list(dm.ctx.topology.index68)]
    by_hand = module.encode_frames(masking.mask_mouth(frames, masking.mouth_centres(lm68)))
    np.testing.assert_allclose(motion[reader.record.id], by_hand.numpy(), atol=1e-6, rtol=0)


def test_missing_lpips_weights_train_without_the_term_and_say_so(dm, tmp_path, monkeypatch):
    import dreamhead_lit.metrics.weights as weights

    monkeypatch.setattr(weights, "weights_dirs", lambda: [(tmp_path, "empty test folder")])
    module = tiny_module(dm, loss={"lpips_weight": 0.5})
    trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.warns(UserWarning, match=r"LPIPS.*SKIPPED.*alexnet-owt-7be5be79\.pth"):
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2 and module.perceptual_loss is None and not module._lpips
    assert any((p.detach() != b).any() for p, b in zip(module.parameters(), before))  # it trained
    assert set(module.losses(distinct_frames(dm, 2))[0]) == {"l1", "ssim", "loss"}
    header = {}
    module.on_save_checkpoint(header)
    assert header["dreamhead"]["perceptual_loss"] is None and header["dreamhead"]["stage"] == "styletalker_autoencoder"


def test_bad_sizes_are_config_errors(dm):
    with pytest.raises(ConfigError, match="model.channels"):
        FrameAutoencoder.from_datamodule(dm, net={**TINY_NET, "channels": [8] * 7})
    with pytest.raises(ConfigError, match="mouth_mask"):
        FrameAutoencoder.from_datamodule(dm, net={**TINY_NET, "mouth_mask": [0.4, 1.5]})


def test_registered_and_configs_load():
    spec = registry.get("styletalker_autoencoder")
    assert spec.module_class() is FrameAutoencoder and spec.export is not None
    demo = load_config("styletalker_autoencoder/demo.yaml", schema=FrameAEConfig)
    paper = load_config("styletalker_autoencoder/paper.yaml", schema=FrameAEConfig)
    assert (demo.model.latent_dim, paper.model.latent_dim) == (128, 512)
    assert demo.data.working_resolution == 64 and paper.data.working_resolution == 256
    assert paper.trainer.strategy == "ddp" and paper.loss.lpips_weight > 0 and demo.loss.lpips_weight == 0
    for cfg in (demo, paper):  # both build at their resolution, 4x4 innermost maps
        module = FrameAutoencoder(resolution=cfg.data.working_resolution, index68=list(range(68)), num_points=68,
                                  net=dict(cfg.model))
        assert module.decoder.side == 4 and module.latent_dim == cfg.model.latent_dim


@pytest.mark.ddp
@pytest.mark.slow  # the fast suite is near its 15 min budget; make test-slow runs it
def test_two_process_ddp_fit_writes_one_checkpoint_and_both_caches(tiny_synth, tmp_path):
    from conftest import check_two_process_ddp_fit
    from dreamhead_lit.data.clip import ClipReader, read_index

    check_two_process_ddp_fit("styletalker_autoencoder", TINY, tiny_synth, tmp_path)
    run = tmp_path / "styletalker_autoencoder" / "demo"
    done = json.loads((run / "done.json").read_text())
    assert done["latents"]["clips"] == done["motion_latents"]["clips"] == 16
    loaded = registry.load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert isinstance(loaded, FrameAutoencoder)
    index, codes = read_latent_cache(run)
    _, motion = read_latent_cache(run / MOTION_LATENTS_DIR)
    assert index["dim"] == 16 and len(index["clips"]) == 16
    record = next(r for r in read_index(tiny_synth) if r.id in index["clips"])  # caches = what the checkpoint gives
    reader = ClipReader(tiny_synth, record)
    np.testing.assert_allclose(loaded.encode_clip(reader.frames()).numpy(), codes[record.id], atol=1e-5, rtol=0)
    np.testing.assert_allclose(loaded.encode_clip(reader.frames(), landmarks=reader.landmarks).numpy(),
                               motion[record.id], atol=1e-5, rtol=0)
