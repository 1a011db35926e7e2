"""DAE-Talker† speech2latent: the Conformer, the pose predictor and projector, the latent cache, training through the
registry (on a fake latent cache of the tiny dataset: the autoencoder's real one needs a trained autoencoder)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamhead_lit import registry
from dreamhead_lit.baselines.daetalker.pose import affine_from_pose, pose_from_affine
from dreamhead_lit.baselines.daetalker.speech2latent import (
    Conformer, ConvModule, Speech2LatentDataModule, Speech2LatentModule, speech2latent_datamodule)
from dreamhead_lit.checkpoints import read_header
from dreamhead_lit.config import ConfigError, load_config
from dreamhead_lit.data.clip import ClipReader, read_index

from conftest import check_two_process_ddp_fit, train_on_one_batch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

PACKAGE = "dreamhead_lit.baselines.daetalker"
# the lines the package's __init__.py registers (given here, so these tests do not depend on it)
TINY_NET = {"dim": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_mult": 2, "conv_kernel": 5,
            "max_distance": 8, "dropout": 0.0, "pose_hidden": 16}
TINY = ["data.window=8", "data.batch_size=4", "data.windows_per_clip=2", "model.dim=32", "model.heads=2",
        "model.encoder_layers=1", "model.decoder_layers=1", "model.ff_mult=2", "model.conv_kernel=5",
        "model.max_distance=8", "model.pose_hidden=16", "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false"]
LATENT_DIM = 8


def write_fake_cache(root: Path, run: Path, *, dim: int = LATENT_DIM) -> Path:
    """A latent cache in the autoencoder's format for every clip of ``root``: a fixed random projection of each
    frame's landmarks in crop pixels, so the latents carry mouth shape (from the audio) and head pose, as an image
    autoencoder's do, and are learnable."""
    out = run / "latents"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    clips = {}
    proj = None
    for rec in read_index(root):
        pts = np.asarray(ClipReader(root, rec).landmarks, dtype=np.float32)  # (T, N, 2) pixels
        flat = (pts.reshape(len(pts), -1) - 32.0) / 16.0
        if proj is None:
            proj = rng.standard_normal((flat.shape[1], dim)) / np.sqrt(flat.shape[1])
        np.save(out / f"{rec.id}.npy", np.tanh(flat @ proj).astype(np.float32))
        clips[rec.id] = rec.num_frames
    (out / "index.json").write_text(json.dumps({"dim": dim, "clips": clips, "checkpoint": "fake.ckpt"}))
    return run


@pytest.fixture(scope="module")
def ae_run(tiny_synth, tmp_path_factory) -> Path:
    return write_fake_cache(tiny_synth, tmp_path_factory.mktemp("runs") / "daetalker_autoencoder" / "fake")


@pytest.fixture(scope="module")
def dm(tiny_synth, ae_run) -> Speech2LatentDataModule:
    dm = Speech2LatentDataModule(latents=ae_run / "latents", root=tiny_synth, window=8, batch_size=4)
    dm.prepare_data()
    dm.setup()
    return dm


def tiny_module(dm, **kwargs) -> Speech2LatentModule:
    return Speech2LatentModule.from_datamodule(dm, net={**TINY_NET, **kwargs.pop("net", {})}, **kwargs)


def test_pose_is_read_from_the_canonical_affine_and_round_trips(dm):
    train = dm.datasets["train"]
    to_image = train.canonical(train.readers[0], 0, 10)[1]
    pose = pose_from_affine(to_image, 64)
    assert pose.shape == (10, 4)
    np.testing.assert_allclose(affine_from_pose(pose, 64), to_image, rtol=1e-5, atol=1e-4)
    batch = next(iter(dm.val_dataloader()))
    assert batch["latents"].shape == (4, 8, LATENT_DIM) and batch["pose"].shape == (4, 8, 4)
    stats = dm.train_statistics()
    assert all(s > 0 for s in stats["pose_std"]) and len(stats["latent_mean"]) == LATENT_DIM


def test_conformer_shapes_and_conv_module_causality():
    torch.manual_seed(0)
    net = Conformer(16, 2, 2, conv_kernel=5, max_distance=4, dropout=0.0).eval()
    x = torch.randn(2, 13, 16)
    assert net(x).shape == (2, 13, 16)  # any length, beyond the clipped relative distance too
    # kernel 5: frame 6 reaches frames 6..10 (causal: each frame sees itself and the 4 before) or 4..8 (centred)
    for causal, changed in ((True, range(6, 11)), (False, range(4, 9))):
        conv = ConvModule(16, 5, 0.0, causal=causal).eval()
        with torch.no_grad():
            before = conv(x)
            y = x.clone()
            y[:, 6] += torch.randn(16)  # not a constant: the layer norm would remove it
            after = conv(y)
        diff = (after - before).abs().amax((0, 2))  # (T,)
        assert set(torch.nonzero(diff > 1e-4).flatten().tolist()) == set(changed), (causal, diff)
    with pytest.raises(ConfigError, match="odd kernel"):
        ConvModule(16, 4, 0.0, causal=False)


def test_the_projector_follows_the_given_pose(dm):
    torch.manual_seed(0)
    module = tiny_module(dm).eval()
    batch = next(iter(dm.val_dataloader()))
    net, audio = module.net, batch["audio"]
    p = module.pose_norm.encode(batch["pose"])
    with torch.no_grad():
        z_given, _ = net(audio, p[:, 0], pose=p)
        z_moved, _ = net(audio, p[:, 0], pose=p + torch.tensor([0.0, 0.0, 1.0, 0.0]))  # the head shifted sideways
        # the mean pose (zeros, standardised) adds nothing: the decoder sees the encoder's frames as they are
        z_mean, _ = net(audio, p[:, 0], pose=torch.zeros_like(p))
        z_bypass = net.head(net.decoder(net.encoder(net.frame_in(audio.flatten(2)))))
        # a given pose is used as is: the pose predictor has no say in the latents
        for q in net.pose_predictor.parameters():
            q.add_(1.0)
        z_given_again, _ = net(audio, p[:, 0], pose=p)
    assert not torch.allclose(z_given, z_moved, atol=1e-4)
    torch.testing.assert_close(z_mean, z_bypass, rtol=0, atol=0)
    torch.testing.assert_close(z_given, z_given_again, rtol=0, atol=0)
    # generation: the pose returned is the given pose, and the latents follow it
    reader = dm.datasets["val"].readers[0]
    pose = dm.datasets["val"].clip_pose(0)
    latents, used = module.generate(reader.audio(), pose=pose)
    assert latents.shape == (reader.num_frames, LATENT_DIM)
    np.testing.assert_allclose(used, pose, rtol=1e-5, atol=1e-5)
    latents_moved, _ = module.generate(reader.audio(), pose=pose + np.float32([0.0, 0.0, 0.05, 0.0]))
    assert np.abs(latents_moved - latents).max() > 1e-4


def test_speech2latent_overfits_one_batch(dm, test_seed):
    torch.manual_seed(test_seed)
    module = tiny_module(dm)
    batch = next(iter(dm.train_dataloader()))
    losses = train_on_one_batch(lambda: module.losses(batch)["loss"], module.net.parameters(), lr=3e-3, max_steps=300,
                                factor=10)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 10, (losses[:10], losses[-10:])
    with torch.no_grad():
        figures = module.evaluate_batch(batch)
    assert figures["latent_err_true_pose"] < figures["latent_err_clip_mean"]  # it learnt more than the clip's mean


def test_the_multi_speaker_variant_is_conditioned_on_the_first_frames_latent(dm):
    torch.manual_seed(0)
    module = tiny_module(dm, net={"reference": "first_frame"}).eval()
    batch = next(iter(dm.val_dataloader()))
    reader = dm.datasets["val"].readers[0]
    np.testing.assert_array_equal(batch["reference_latents"][0].numpy(), dm.cache[reader.record.id][0])
    with torch.no_grad():
        assert torch.isfinite(module.losses(batch)["loss"])
        figures = module.evaluate_batch(batch)
    assert {"latent_err_reference", "latent_err_clip_mean", "latent_err_true_pose"} <= set(figures)
    first = dm.cache[reader.record.id][0]
    with pytest.raises(ValueError, match="reference_latent"):
        module.generate(reader.audio())
    a, _ = module.generate(reader.audio(), reference_latent=first)
    b, _ = module.generate(reader.audio(), reference_latent=first + 1.0)  # another speaker's first frame
    assert np.abs(a - b).max() > 1e-4
    with pytest.raises(ConfigError, match="model.reference"):
        tiny_module(dm, net={"reference": "last_frame"})


def test_without_pose_modelling_the_latents_come_from_audio_alone(dm):
    torch.manual_seed(0)
    module = tiny_module(dm, net={"pose_modelling": False}).eval()
    assert not hasattr(module.net, "pose_predictor") and not hasattr(module.net, "pose_projector")
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        assert set(module.losses(batch)) == {"loss", "latent"}
        assert "pose_err" not in module.evaluate_batch(batch)
    reader = dm.datasets["val"].readers[0]
    latents, pose = module.generate(reader.audio(), pose=dm.datasets["val"].clip_pose(0))
    assert pose is None and latents.shape == (reader.num_frames, LATENT_DIM)
    still, _ = module.generate(reader.audio())  # a given pose changes nothing: there is no projector
    np.testing.assert_array_equal(latents, still)


def test_the_person_specific_protocol_keeps_one_identitys_clips_in_every_split(tiny_synth, ae_run):
    records = read_index(tiny_synth)
    person = sorted({r.identity for r in records if r.split == "train"})[0]
    dm = Speech2LatentDataModule(latents=ae_run / "latents", root=tiny_synth, window=8, identities=[person])
    dm.setup()
    assert dm.datasets and all(r.record.identity == person for ds in dm.datasets.values() for r in ds.readers)
    want = {r.split for r in records if r.identity == person}
    assert set(dm.datasets) == want and "train" in want
    assert dm.describe()["identities"] == [person]
    with pytest.raises(ConfigError, match="no identity named nobody"):
        Speech2LatentDataModule(latents=ae_run / "latents", root=tiny_synth, identities=["nobody"]).setup()


def test_a_cache_that_does_not_match_the_dataset_is_refused(tiny_synth, ae_run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ae_run, bad)
    index = json.loads((bad / "latents" / "index.json").read_text())
    clip = next(r.id for r in read_index(tiny_synth) if r.split == "train")
    index["clips"][clip] += 3
    (bad / "latents" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match=f"another frame count: {clip} "):
        Speech2LatentDataModule(latents=bad / "latents", root=tiny_synth).setup()
    del index["clips"][clip]  # a train clip without latents
    (bad / "latents" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match=f"no latents for 1 clip.*{clip}"):
        Speech2LatentDataModule(latents=bad / "latents", root=tiny_synth).setup()
    with pytest.raises(ConfigError, match="no latent cache"):
        Speech2LatentDataModule(latents=tmp_path / "nowhere", root=tiny_synth)


def test_train_cli_writes_a_checkpoint_that_generates(dm, tiny_synth, ae_run, tmp_path):
    from dreamhead_lit.train import main

    args = ["daetalker_speech2latent", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={tmp_path}",
            "name=tiny", f"autoencoder.run={ae_run}", *TINY, "trainer.max_steps=4", "trainer.val_check_interval=4",
            "threads=1"]
    assert main(args) == 0
    ckpt = tmp_path / "daetalker_speech2latent" / "tiny" / "checkpoints" / "last.ckpt"
    assert read_header(ckpt)["model"] == "daetalker_speech2latent"
    model = registry.load_checkpoint(ckpt, expected="daetalker_speech2latent")
    assert isinstance(model, Speech2LatentModule) and not model.training
    assert model.hparams.autoencoder["checkpoint"] == "fake.ckpt"  # which decoder these latents are for
    torch.testing.assert_close(model.latent_norm.mean, torch.tensor(dm.train_statistics()["latent_mean"]))
    reader = dm.datasets["val"].readers[0]
    assert model.reference == "first_frame"  # the demo's multi-speaker adaptation: the first frame's latent too
    latents, pose = model.generate(reader.audio(), first_pose=dm.datasets["val"].clip_pose(0)[0],
                                   reference_latent=dm.cache[reader.record.id][0])
    assert latents.shape == (reader.num_frames, LATENT_DIM) and pose.shape == (reader.num_frames, 4)
    assert np.isfinite(latents).all() and np.isfinite(pose).all()


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_both_sizes_build_and_take_a_training_step(tiny_synth, ae_run, size):
    spec = registry.get("daetalker_speech2latent")
    cfg = load_config(f"daetalker_speech2latent/{size}.yaml",
                      [f"data.root={tiny_synth}", f"autoencoder.run={ae_run}", "data.batch_size=2",
                       "data.num_workers=0", "data.window=16", "data.windows_per_clip=1"], schema=spec.schema_class())
    dm = speech2latent_datamodule(cfg)
    module = spec.build_module(cfg, dm)
    assert module.net.head.out_features == LATENT_DIM and len(module.net.encoder.blocks) == cfg.model.encoder_layers
    loss = module.losses(next(iter(dm.train_dataloader())))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and module.net.pose_predictor.head.weight.grad is not None


@pytest.mark.ddp
@pytest.mark.slow  # the fast suite is near its 15 min budget; make test-slow runs it
def test_two_process_ddp_fit_writes_one_checkpoint_and_one_log(tiny_synth, ae_run, tmp_path):
    check_two_process_ddp_fit("daetalker_speech2latent", [f"autoencoder.run={ae_run}", *TINY], tiny_synth,
                              tmp_path / "runs")