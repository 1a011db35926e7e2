"""StyleTalker†'s motion model (``baselines/styletalker/motion.py``, ``lit.py``): the data with both code caches, the
training objective (reconstruction, KL to the flow prior, the sync loss through a frozen decoder), generation in both
modes, checkpoints without the frozen networks, training through the registry.

The frame autoencoder and the sync discriminator are other parts (trained runs): here the caches are written by a
tiny fixed image encoder through the DAE cache writer, and the decoder and discriminator are tiny injected stand-ins
with the parts' interfaces."""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from dreamhead_lit import registry
from dreamhead_lit.baselines.daetalker.latents import write_latent_cache
from dreamhead_lit.baselines.styletalker.lit import StyleTalker, StyleTalkerDataModule, styletalker_datamodule
from dreamhead_lit.checkpoints import load_module, read_header
from dreamhead_lit.config import ConfigError, load_config
from dreamhead_lit.data.clip import ClipReader, read_index

from conftest import check_two_process_ddp_fit

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

CODE_DIM = 16
TINY_NET = {"hidden": 32, "audio_hidden": 16, "z_dim": 4, "lip_kernel": 3, "flow_layers": 2, "flow_hidden": 16}
TINY = ["data.window=8", "data.batch_size=4", "data.windows_per_clip=2", "model.hidden=32", "model.audio_hidden=16",
        "model.z_dim=4", "model.lip_kernel=3", "model.flow_layers=2", "model.flow_hidden=16",
        "sync_discriminator.run=null", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]


class TinyEncoder:
    """A fixed image encoder with the autoencoder's ``encode_clip``: each frame pooled to 8 x 8, projected to
    ``CODE_DIM`` and squashed; ``masked``: the frame's lower half blacked out first (the mouth-masked codes)."""

    latent_dim = CODE_DIM

    def __init__(self, masked: bool) -> None:
        self.masked = masked
        self.proj = torch.randn(3 * 8 * 8, CODE_DIM, generator=torch.Generator().manual_seed(0)) / 8.0

    def encode_clip(self, frames: np.ndarray, batch_size: int = 64) -> Tensor:
        x = torch.from_numpy(np.asarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, H, W)
        if self.masked:
            x[:, :, x.shape[2] // 2:] = 0.0
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return torch.tanh(4.0 * (pooled - pooled.mean()) @ self.proj)


class TinyAutoencoder(nn.Module):
    """The autoencoder's ``decode``: raw codes ``(..., D)`` -> frames ``(..., 3, 8, 8)`` in [-1, 1], differentiable."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(CODE_DIM, 3 * 8 * 8)

    def decode(self, codes: Tensor) -> Tensor:
        return torch.tanh(self.lin(codes)).unflatten(-1, (3, 8, 8))


class TinyDiscriminator(nn.Module):
    """The sync discriminator's interface: ``window`` and ``sync_logprob(audio (B, W, K, A), lower faces (B, W, 3, h,
    w))``: the log-sigmoid of an audio-face product."""

    window = 3

    def __init__(self, audio_numel: int) -> None:
        super().__init__()
        self.audio = nn.Linear(audio_numel, 8)
        self.face = nn.Linear(3 * 4 * 8, 8)

    def sync_logprob(self, audio: Tensor, lower_faces: Tensor) -> Tensor:
        assert audio.shape[1] == lower_faces.shape[1] == self.window and lower_faces.shape[2:] == (3, 4, 8)
        score = (self.audio(audio.flatten(2)) * self.face(lower_faces.flatten(2))).sum(-1).mean(-1)  # (B,)
        return torch.nn.functional.logsigmoid(score)


@pytest.fixture(scope="module")
def ae_run(tiny_synth, tmp_path_factory) -> Path:
    """A fake styletalker_autoencoder run: ``latents/`` and ``motion_latents/`` in the DAE cache format."""
    run = tmp_path_factory.mktemp("runs") / "styletalker_autoencoder" / "fake"
    readers = [ClipReader(tiny_synth, rec) for rec in read_index(tiny_synth)]
    write_latent_cache(TinyEncoder(masked=False), readers, run / "latents", checkpoint="fake.ckpt")
    write_latent_cache(TinyEncoder(masked=True), readers, run / "motion_latents", checkpoint="fake.ckpt")
    return run


@pytest.fixture(scope="module")
def dm(tiny_synth, ae_run) -> StyleTalkerDataModule:
    dm = StyleTalkerDataModule(latents=ae_run / "latents", motion_latents=ae_run / "motion_latents",
                               root=str(tiny_synth), window=8, batch_size=4)  # str: the hparams a checkpoint keeps
    dm.prepare_data()
    dm.setup()
    return dm


def tiny_module(dm, *, sync: bool = True, **kwargs) -> StyleTalker:
    net = {**TINY_NET, **kwargs.pop("net", {})}
    if not sync:
        return StyleTalker.from_datamodule(dm, net=net, **kwargs)
    k, a = dm.audio_shape
    return StyleTalker.from_datamodule(dm, net=net, autoencoder_module=TinyAutoencoder(),
                                       discriminator=TinyDiscriminator(k * a), **kwargs)


def overfit(module: StyleTalker, batch: dict, seed: int, *, max_steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Adam on one batch's whole objective (every term the module has) until the reconstruction term is a tenth of
    its start (or ``max_steps``); returns the objective's and the reconstruction's values per step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.net.parameters(), lr=3e-3)
    losses, recon = [], []
    for _ in range(max_steps):
        out = module.losses(batch, generator=gen)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
        recon.append(out["recon"].item())
        if np.mean(recon[-10:]) < np.mean(recon[:10]) / 10:
            break
    return np.array(losses), np.array(recon)


def test_samples_carry_both_codes_and_the_first_frames_as_reference(dm):
    batch = next(iter(dm.val_dataloader()))
    assert batch["latents"].shape == batch["motion_latents"].shape == (4, 8, CODE_DIM)
    assert batch["reference_motion_latents"].shape == (4, CODE_DIM)
    reader = dm.datasets["val"].readers[int(batch["clip"][0])]
    start = int(batch["start"][0])
    masked = dm.motion_cache[reader.record.id]
    np.testing.assert_array_equal(batch["motion_latents"][0].numpy(), masked[start:start + 8])
    np.testing.assert_array_equal(batch["reference_motion_latents"][0].numpy(), masked[0])
    np.testing.assert_array_equal(batch["reference_latents"][0].numpy(), dm.cache[reader.record.id][0])
    assert not torch.equal(batch["latents"], batch["motion_latents"])  # the mask changed the codes
    stats = dm.train_statistics()
    assert set(stats) == {"code_mean", "code_std", "motion_mean", "motion_std"} and min(stats["motion_std"]) > 0


def test_caches_of_different_checkpoints_are_refused(tiny_synth, ae_run, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(ae_run / "motion_latents", other)
    index = json.loads((other / "index.json").read_text())
    (other / "index.json").write_text(json.dumps({**index, "checkpoint": "older.ckpt"}))
    with pytest.raises(ConfigError, match="same autoencoder"):
        StyleTalkerDataModule(latents=ae_run / "latents", motion_latents=other, root=tiny_synth)
    with pytest.raises(ConfigError, match="styletalker_autoencoder"):
        StyleTalkerDataModule(latents=ae_run / "latents", motion_latents=tmp_path / "nowhere", root=tiny_synth)


def test_the_whole_model_overfits_one_batch(dm, test_seed):
    torch.manual_seed(test_seed)
    module = tiny_module(dm)
    batch = next(iter(dm.train_dataloader()))
    assert set(module.losses(batch)) == {"loss", "recon", "kl", "sync"}
    losses, recon = overfit(module, batch, test_seed)
    # the reconstruction falls tenfold with the KL and the sync loss on; the objective falls less, as the tiny
    # stand-in discriminator's term stays near its floor (~0.5-1 nats, a random network cannot be satisfied)
    assert recon[-10:].mean() < recon[:10].mean() / 10, (recon[:10], recon[-10:])
    assert losses[-10:].mean() < losses[:10].mean() / 1.5, (losses[:10], losses[-10:])
    with torch.no_grad():
        figures = module.evaluate_batch(batch)
    assert figures["latent_err_clip_motion"] < figures["latent_err_reference"] / 2  # beyond "hold w_ref still"


def test_the_sync_loss_reaches_the_lip_branch_and_is_absent_without_a_discriminator(dm):
    torch.manual_seed(0)
    module = tiny_module(dm)
    assert module.has_sync_loss and module.hparams.sync_discriminator["window"] == 3
    batch = next(iter(dm.train_dataloader()))
    # a trained lip head: at its zero start no gradient passes its last layer back into the branch
    with torch.no_grad():
        for p in module.net.lip.head[-1].parameters():
            p.normal_(0, 0.3)
    out = module.losses(batch, generator=torch.Generator().manual_seed(0))
    lip = [p for p in module.net.lip.parameters()]
    grads = torch.autograd.grad(out["sync"], lip, allow_unused=True, retain_graph=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # every lip parameter, from the sync term alone
    out["loss"].backward()
    frozen = [*module._sync["autoencoder"].parameters(), *module._sync["discriminator"].parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)

    plain = tiny_module(dm, sync=False)
    assert not plain.has_sync_loss and plain.hparams.sync_discriminator == {"run": None}
    assert set(plain.losses(batch)) == {"loss", "recon", "kl"}
    weightless = tiny_module(dm, loss={"sync_weight": 0.0})
    assert "sync" not in weightless.losses(batch)


def test_a_sync_window_longer_than_the_training_window_is_refused(dm):
    disc = TinyDiscriminator(int(np.prod(dm.audio_shape)))
    disc.window = 9  # data.window is 8
    with pytest.raises(ConfigError, match="data.window=8"):
        StyleTalker.from_datamodule(dm, net=TINY_NET, autoencoder_module=TinyAutoencoder(), discriminator=disc)


def test_generate_samples_motion_from_the_seed_and_takes_a_clips_motion_as_given(dm):
    torch.manual_seed(0)
    module = tiny_module(dm, sync=False).eval()
    with torch.no_grad():  # an untrained motion decoder starts at zero: give it a say
        for p in module.net.motion.net[-1].parameters():
            p.normal_(0, 0.3)
    reader = dm.datasets["val"].readers[0]
    codes, masked = dm.cache[reader.record.id], dm.motion_cache[reader.record.id]
    kw = dict(reference_code=codes[0], reference_motion_code=masked[0])
    a = module.generate(reader.audio(), seed=0, **kw)
    assert a.shape == (reader.num_frames, CODE_DIM) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, module.generate(reader.audio(), seed=0, **kw))
    assert np.abs(a - module.generate(reader.audio(), seed=1, **kw)).max() > 1e-3
    assert np.abs(a - module.generate(reader.audio(), seed=0, temperature=0.0, **kw)).max() > 1e-3
    from_clip = module.generate(reader.audio(), motion_codes=masked, seed=0, **kw)
    np.testing.assert_array_equal(from_clip, module.generate(reader.audio(), motion_codes=masked, seed=5, **kw))
    assert np.abs(from_clip - a).max() > 1e-3
    # the motion is the clip's: moved masked codes move the output
    moved = module.generate(reader.audio(), motion_codes=np.roll(masked, 7, axis=0), **kw)
    assert np.abs(moved - from_clip).max() > 1e-3
    assert module.generate(reader.audio(), num_frames=10, **kw).shape == (10, CODE_DIM)
    with pytest.raises(ValueError, match="motion_codes has shape"):
        module.generate(reader.audio(), motion_codes=masked[:10], num_frames=20, **kw)
    with pytest.raises(ValueError, match="reference_code has shape"):
        module.generate(reader.audio(), reference_code=codes[0, :3])


def test_the_gaussian_prior_builds_and_trains(dm, test_seed):
    torch.manual_seed(test_seed)
    module = tiny_module(dm, net={"prior": "gaussian"})
    assert module.prior_kind == "gaussian" and len(module.net.prior.flow.couplings) == 0
    flow = tiny_module(dm, sync=False)
    assert len(flow.net.prior.flow.couplings) == TINY_NET["flow_layers"]
    batch = next(iter(dm.train_dataloader()))
    losses, recon = overfit(module, batch, test_seed)
    assert recon[-10:].mean() < recon[:10].mean() / 10, (recon[:10], recon[-10:])
    assert losses[-10:].mean() < losses[:10].mean() / 1.5, (losses[:10], losses[-10:])
    reader = dm.datasets["val"].readers[0]
    out = module.eval().generate(reader.audio(), reference_code=dm.cache[reader.record.id][0])
    assert out.shape == (reader.num_frames, CODE_DIM)
    with pytest.raises(ConfigError, match="model.prior"):
        tiny_module(dm, sync=False, net={"prior": "mixture"})
    with pytest.raises(ConfigError, match="flow_layers"):
        tiny_module(dm, sync=False, net={"flow_layers": 0})


def test_the_checkpoint_holds_neither_the_autoencoder_nor_the_discriminator(dm, tmp_path):
    torch.manual_seed(0)
    module = tiny_module(dm)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "st.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain data: no paths or objects pickled
    own = set(module.state_dict())
    assert set(ckpt["state_dict"]) == own
    assert {k.split(".")[0] for k in own} == {"net", "code_norm", "motion_norm"}
    frozen = [p for m in module._sync.values() for p in m.parameters()]
    assert not any(v.shape == p.shape and torch.equal(v, p) for v in ckpt["state_dict"].values() for p in frozen)
    hp = ckpt["hyper_parameters"]
    assert hp["autoencoder"]["checkpoint"] == "fake.ckpt" and hp["autoencoder"]["dim"] == CODE_DIM
    assert hp["sync_discriminator"]["window"] == 3
    loaded = load_module(StyleTalker, path).eval()  # the project's safe load; no autoencoder needed to generate
    assert not loaded.has_sync_loss
    reader = dm.datasets["val"].readers[0]
    kw = dict(reference_code=dm.cache[reader.record.id][0], seed=3)
    np.testing.assert_allclose(loaded.generate(reader.audio(), **kw), module.eval().generate(reader.audio(), **kw),
                               rtol=1e-5, atol=1e-5)


def test_validation_figures(dm):
    torch.manual_seed(0)
    module = tiny_module(dm, sync=False).eval()
    with torch.no_grad():
        for p in module.net.motion.net[-1].parameters():
            p.normal_(0, 0.3)
    batch = next(iter(dm.val_dataloader()))
    a, b = module.evaluate_batch(batch), module.evaluate_batch(batch)
    assert set(a) == {"latent_err", "latent_err_clip_motion", "latent_err_reference", "kl", "motion_spread"}
    assert all(torch.equal(a[k], b[k]) for k in a)  # fixed seeds
    assert a["motion_spread"] > 1e-3 and torch.isfinite(a["kl"])
    with torch.no_grad():  # no motion decoder output: no spread, and the clip's motion changes nothing
        module.net.motion.net[-1].weight.zero_()
        module.net.motion.net[-1].bias.zero_()
    still = module.evaluate_batch(batch)
    assert still["motion_spread"] == 0 and still["latent_err"] == still["latent_err_clip_motion"]


def test_train_cli_writes_a_checkpoint_that_generates(dm, tiny_synth, ae_run, tmp_path):
    from dreamhead_lit.train import main

    args = ["styletalker", "--size", "demo", f"data.root={tiny_synth}", f"runs_root={tmp_path}", "name=tiny",
            f"autoencoder.run={ae_run}", *TINY, "trainer.max_steps=4", "trainer.val_check_interval=4", "threads=1"]
    assert main(args) == 0
    run = tmp_path / "styletalker" / "tiny"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert read_header(ckpt)["model"] == "styletalker"
    done = json.loads((run / "done.json").read_text())
    assert {f"val/{k}" for k in ("latent_err", "latent_err_clip_motion", "latent_err_reference", "kl",
                                 "motion_spread")} <= set(done["metrics"])
    model = registry.load_checkpoint(ckpt, expected="styletalker")
    assert isinstance(model, StyleTalker) and not model.training and not model.has_sync_loss
    assert model.hparams.sync_discriminator == {"run": None}  # the ablation, recorded
    assert model.hparams.autoencoder["run"] == str(ae_run) and model.prior_kind == "flow"
    torch.testing.assert_close(model.code_norm.mean, torch.tensor(dm.train_statistics()["code_mean"]))
    reader = dm.datasets["val"].readers[0]
    codes = model.generate(reader.audio(), reference_code=dm.cache[reader.record.id][0],
                           reference_motion_code=dm.motion_cache[reader.record.id][0],
                           motion_codes=dm.motion_cache[reader.record.id])
    assert codes.shape == (reader.num_frames, CODE_DIM) and np.isfinite(codes).all()


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_both_sizes_build_and_take_a_training_step(tiny_synth, ae_run, size):
    spec = registry.get("styletalker")
    cfg = load_config(f"styletalker/{size}.yaml",
                      [f"data.root={tiny_synth}", f"autoencoder.run={ae_run}", "sync_discriminator.run=null",
                       "data.batch_size=2", "data.num_workers=0", "data.window=16", "data.windows_per_clip=1"],
                      schema=spec.schema_class())
    dm = styletalker_datamodule(cfg)
    module = spec.build_module(cfg, dm)
    assert module.net.z_dim == cfg.model.z_dim and len(module.net.prior.flow.couplings) == cfg.model.flow_layers
    loss = module.losses(next(iter(dm.train_dataloader())))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and module.net.lip.head[-1].weight.grad is not None


@pytest.mark.ddp
@pytest.mark.slow  # the fast suite is near its budget; make test-slow runs it
def test_two_process_ddp_fit_writes_one_checkpoint_and_one_log(tiny_synth, ae_run, tmp_path):
    check_two_process_ddp_fit("styletalker", [f"autoencoder.run={ae_run}", *TINY], tiny_synth, tmp_path / "runs")
